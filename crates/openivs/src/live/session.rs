//! The record of one stream session: created when a publish is accepted, updated as the stream
//! goes (events, the ingest configuration read from the stream), ended when the publisher
//! leaves. Every update is written to the store before the session moves on, so GetStreamSession
//! and ListStreamSessions describe it while it is live and after a restart.

use std::sync::Arc;

use openivs_model::resources::{
    AudioConfiguration, Channel, FailoverSlateConfiguration, IngestConfiguration, IngestConfigurations,
    RecordingConfiguration, StreamEvent, StreamSession, VideoConfiguration,
};
use openivs_model::{IvsError, timestamp};
use time::OffsetDateTime;

use crate::ingest::Refusal;
use crate::store::{ApplyError, Change, Check, Store, StreamSessionRecord, Write};

/// How often the end of a session is written again while the store refuses writes (a full disk).
const END_RETRY: std::time::Duration = std::time::Duration::from_secs(1);

/// IVS keeps the newest 500 events of a session.
const MAX_EVENTS: usize = 500;

pub const STATE_CHANGE: &str = "IVS Stream State Change";
pub const HEALTH_CHANGE: &str = "IVS Stream Health Change";
pub const LIMIT_BREACH: &str = "IVS Limit Breach";

/// A new stream id in IVS's format: `st-` and 23 letters and digits.
pub fn new_stream_id() -> String {
    format!("st-{}", crate::api::random_alphanumeric(23))
}

pub struct SessionRecorder {
    store: Arc<dyn Store>,
    session: StreamSession,
    channel_arn: String,
    has_error_event: bool,
    ended: bool,
}

impl SessionRecorder {
    /// Opens a session, recording "Session Created", in one store change that also requires the
    /// channel to be unchanged since the publish was authorised (`channel_version`) and nobody
    /// else to be publishing to it. That change is what makes the channel live in the store, so
    /// a concurrent UpdateChannel or DeleteChannel either lands first (and this publish is
    /// refused) or is refused itself.
    pub async fn create(
        store: Arc<dyn Store>,
        stream_id: String,
        channel: Channel,
        channel_version: i64,
        recording_configuration: Option<RecordingConfiguration>,
        failover_slate_configuration: Option<FailoverSlateConfiguration>,
        now: OffsetDateTime,
    ) -> Result<SessionRecorder, Refusal> {
        let channel_arn = channel.arn.clone();
        let mut recorder = SessionRecorder {
            store,
            session: StreamSession {
                stream_id,
                start_time: timestamp::format(now),
                end_time: None,
                channel,
                ingest_configuration: None,
                ingest_configurations: None,
                recording_configuration,
                truncated_events: Vec::new(),
                failover_slate_configuration,
            },
            channel_arn: channel_arn.clone(),
            has_error_event: false,
            ended: false,
        };
        recorder.push_event("Session Created", STATE_CHANGE, None, now);
        let record = recorder.record().map_err(|_| Refusal::Unavailable)?;
        let change = Change::new()
            .require(
                Check::Version { arn: channel_arn.clone(), version: channel_version },
                IvsError::conflict("the channel changed"),
            )
            .require(Check::NotLive { channel_arn: channel_arn.clone() }, IvsError::conflict("already live"))
            .write(Write::PutStreamSession(record));
        match recorder.store.apply(change).await {
            Ok(()) => Ok(recorder),
            // Updated or deleted since the key was checked: the encoder retries, and is judged
            // again against the channel as it now is.
            Err(ApplyError::Stale) => Err(Refusal::ChannelChanged),
            Err(ApplyError::Rejected(_)) => Err(Refusal::AlreadyLive),
            Err(ApplyError::Backend(error)) => {
                tracing::error!("ingest: cannot record a stream session for {channel_arn}: {error}");
                Err(Refusal::Unavailable)
            }
        }
    }

    pub fn stream_id(&self) -> &str {
        &self.session.stream_id
    }

    fn push_event(&mut self, name: &str, event_type: &str, code: Option<&str>, at: OffsetDateTime) {
        self.session.truncated_events.insert(
            0,
            StreamEvent {
                name: name.to_owned(),
                event_type: event_type.to_owned(),
                event_time: timestamp::format(at),
                code: code.map(str::to_owned),
            },
        );
        self.session.truncated_events.truncate(MAX_EVENTS);
    }

    /// Records an event (newest first) and persists the session.
    pub async fn event(
        &mut self,
        name: &str,
        event_type: &str,
        code: Option<&str>,
        at: OffsetDateTime,
    ) -> Result<(), IvsError> {
        self.push_event(name, event_type, code, at);
        self.persist().await
    }

    /// Records a limit breach (an error event) without persisting yet.
    pub fn breach(&mut self, limit_name: &str, at: OffsetDateTime) {
        self.has_error_event = true;
        self.push_event(limit_name, LIMIT_BREACH, None, at);
    }

    /// The stream's configuration as read from it; persisted.
    pub async fn set_ingest_configuration(
        &mut self,
        video: Option<VideoConfiguration>,
        audio: Option<AudioConfiguration>,
    ) -> Result<(), IvsError> {
        // The deprecated `ingestConfiguration` carries avcProfile/avcLevel; the list form leaves them "".
        let listed_video =
            video.clone().map(|v| VideoConfiguration { avc_profile: String::new(), avc_level: String::new(), ..v });
        self.session.ingest_configurations = Some(IngestConfigurations {
            video_configurations: listed_video.into_iter().collect(),
            audio_configurations: audio.clone().into_iter().collect(),
        });
        self.session.ingest_configuration = Some(IngestConfiguration { video, audio });
        self.persist().await
    }

    /// Ends the session: "Stream End" (when media had started), "Session Ended" with the reason
    /// code when it ended on an error, and the end time.
    pub async fn end(
        &mut self,
        stream_started: bool,
        error_code: Option<&str>,
        at: OffsetDateTime,
    ) -> Result<(), IvsError> {
        if self.ended {
            return Ok(());
        }
        if stream_started {
            self.push_event("Stream End", STATE_CHANGE, None, at);
        }
        if error_code.is_some() {
            self.has_error_event = true;
        }
        self.push_event("Session Ended", STATE_CHANGE, error_code, at);
        self.session.end_time = Some(timestamp::format(at));
        self.ended = true;
        self.persist().await
    }

    /// Ends the session ([`SessionRecorder::end`]); while the store refuses the write (a full
    /// disk), it is written again every second in the background until it is stored, because an
    /// open session keeps the channel live in the store (no update, delete or new publish).
    pub async fn end_in_background(&mut self, stream_started: bool, error_code: Option<&str>, at: OffsetDateTime) {
        let Err(error) = self.end(stream_started, error_code, at).await else { return };
        tracing::error!("ingest: cannot record the end of stream {} (retrying): {error}", self.session.stream_id);
        let Ok(record) = self.record() else { return };
        let store = self.store.clone();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(END_RETRY).await;
                // (Until the process exits: a store that is shut down refuses every write.)
                if store.put_stream_session(&record).await.is_ok() {
                    tracing::info!("ingest: recorded the end of stream {}", record.stream_id);
                    return;
                }
            }
        });
    }

    fn record(&self) -> Result<StreamSessionRecord, IvsError> {
        Ok(StreamSessionRecord {
            seq: 0,
            stream_id: self.session.stream_id.clone(),
            channel_arn: self.channel_arn.clone(),
            ended: self.ended,
            has_error_event: self.has_error_event,
            body: serde_json::to_string(&self.session).map_err(|e| IvsError::internal(e.to_string()))?,
        })
    }

    async fn persist(&self) -> Result<(), IvsError> {
        self.store.put_stream_session(&self.record()?).await
    }
}

/// Ends the sessions a previous run left open (it stopped while they were live): their publishers
/// are gone, so they ended no later than the restart.
pub async fn end_orphaned_sessions(store: &Arc<dyn Store>, now: OffsetDateTime) -> Result<usize, IvsError> {
    let open = store.open_stream_sessions().await?;
    for mut record in open.iter().cloned() {
        let Ok(mut session) = serde_json::from_str::<StreamSession>(&record.body) else { continue };
        let started = session.truncated_events.iter().any(|e| e.name == "Stream Start");
        let mut recorder = SessionRecorder {
            store: store.clone(),
            channel_arn: record.channel_arn.clone(),
            has_error_event: record.has_error_event,
            ended: false,
            session: {
                session.end_time = None;
                session
            },
        };
        recorder.end(started, Some("ServerRestart"), now).await?;
        record.ended = true;
    }
    Ok(open.len())
}

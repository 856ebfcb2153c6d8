//! The record of one stream session: created when a publish is accepted, updated as the stream
//! goes (events, the ingest configuration read from the stream), ended when the publisher
//! leaves. Every update is written to the store before the session moves on, so GetStreamSession
//! and ListStreamSessions describe it while it is live and after a restart. The session's events
//! that IVS also sends to EventBridge go into the store's outbox in the same write.

use std::sync::{Arc, Mutex};

use openivs_model::resources::{
    AudioConfiguration, Channel, IngestConfiguration, IngestConfigurations, StreamEvent, StreamSession,
    VideoConfiguration,
};
use openivs_model::{IvsError, timestamp};
use time::OffsetDateTime;

use super::hub::SlateShowing;
use crate::api::Endpoints;
use crate::events::{Breach, ChannelEvent, LIMIT_BREACH, STREAM_STATE_CHANGE};
use crate::ingest::{Authorized, Refusal};
use crate::store::{
    ApplyError, Change, Check, FromRecord, OutboxEvent, Record, Store, StreamLease, StreamSessionRecord, Write,
};

/// How often the end of a session is written again while the store refuses writes (a full disk).
const END_RETRY: std::time::Duration = std::time::Duration::from_secs(1);

/// IVS keeps the newest 500 events of a session.
const MAX_EVENTS: usize = 500;

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
    /// The failover slate's start is recorded and its end not yet.
    slate_on_air: bool,
    /// EventBridge events of session events not yet stored: they go with the next write.
    pending_events: Vec<OutboxEvent>,
    /// The stream registry's lease this node holds on the stream: every write of the session
    /// requires it, so a node that lost it (fenced) no longer writes a session that another
    /// node has ended.
    lease: Option<StreamLease>,
    /// A write found the lease taken: the session is another node's to end.
    fenced: bool,
}

/// Why a fenced node's session writes are refused.
const FENCED: &str = "This node no longer holds the stream's lease";

impl SessionRecorder {
    /// Opens a session, recording "Session Created", in one store change that requires nobody
    /// else to be publishing to the channel and describes the channel as it is stored when the
    /// change applies. That change is what makes the channel live in the store, so a concurrent
    /// UpdateChannel either lands first (and the session shows it) or is refused, and a
    /// concurrent DeleteChannel either lands first (and this publish is refused) or is refused.
    /// The publish is judged again against the channel as stored: plain RTMP needs
    /// `insecureIngest`, and the configurations it was authorised with must still be the
    /// channel's (else [`Refusal::ChannelChanged`]: authorise again). The same change takes the
    /// stream registry's lease for `node`, which no other node may hold.
    pub async fn create(
        store: Arc<dyn Store>,
        stream_id: String,
        authorized: Authorized,
        endpoints: Endpoints,
        secure: bool,
        node: &crate::cluster::Node,
        now: OffsetDateTime,
    ) -> Result<SessionRecorder, Refusal> {
        let channel_arn = authorized.channel.arn.clone();
        let created = outbox_event(
            &channel_arn,
            &authorized.channel.name,
            &stream_id,
            "Session Created",
            STREAM_STATE_CHANGE,
            None,
            now,
        );
        let lease = StreamLease {
            channel_arn: channel_arn.clone(),
            node_id: node.node_id.clone(),
            origin_url: node.origin_url.clone(),
            stream_id: stream_id.clone(),
            epoch: 0,
        };
        let opened: Arc<Mutex<Option<Result<StreamSession, Refusal>>>> = Arc::default();
        let outcome = opened.clone();
        let build = FromRecord::new(move |record: Record| {
            let mut channel: Channel = record.decode()?;
            crate::api::Resource::present(&mut channel, &endpoints);
            let refusal = if !secure && !channel.insecure_ingest {
                Some(Refusal::InsecureIngestNotAllowed)
            } else if channel.recording_configuration_arn != authorized.channel.recording_configuration_arn
                || channel.failover_slate_configuration_arn != authorized.channel.failover_slate_configuration_arn
            {
                Some(Refusal::ChannelChanged)
            } else {
                None
            };
            if let Some(refusal) = refusal {
                *outcome.lock().expect("session outcome lock") = Some(Err(refusal));
                return Err(IvsError::conflict("publish refused"));
            }
            let mut session = StreamSession {
                stream_id: stream_id.clone(),
                start_time: timestamp::format(now),
                end_time: None,
                channel,
                ingest_configuration: None,
                ingest_configurations: None,
                recording_configuration: authorized.recording_configuration.clone(),
                truncated_events: Vec::new(),
                failover_slate_configuration: authorized.failover_slate_configuration.clone(),
            };
            push_event(&mut session, "Session Created", STREAM_STATE_CHANGE, None, now);
            let stored = session_record(&session, &record.arn, false, false)?;
            *outcome.lock().expect("session outcome lock") = Some(Ok(session));
            Ok(stored)
        });
        let change = Change::new()
            .require(Check::NotLive { channel_arn: channel_arn.clone() }, IvsError::conflict("already live"))
            .require(Check::LeaseFree { channel_arn: channel_arn.clone() }, IvsError::conflict("live on another node"))
            .write(Write::OpenStreamSession { channel_arn: channel_arn.clone(), build })
            .write(Write::TakeLease { lease, lease_ms: crate::cluster::registry::LEASE_MS })
            .write(Write::AppendEvents(created.into_iter().collect()));
        let applied = store.apply(change).await;
        let built = opened.lock().expect("session outcome lock").take();
        match (applied, built) {
            (Ok(()), Some(Ok(session))) => {
                let mut recorder = SessionRecorder {
                    store,
                    session,
                    channel_arn,
                    has_error_event: false,
                    ended: false,
                    slate_on_air: false,
                    pending_events: Vec::new(),
                    lease: None,
                    fenced: false,
                };
                // (The lease is this node's for its whole term: nobody can take it meanwhile.)
                match recorder.store.stream_holder(&recorder.channel_arn).await {
                    Ok(Some(lease))
                        if lease.node_id == node.node_id && lease.stream_id == recorder.session.stream_id =>
                    {
                        recorder.lease = Some(lease);
                        Ok(recorder)
                    }
                    other => {
                        if let Err(error) = other {
                            tracing::error!("ingest: cannot read the lease of {}: {error}", recorder.channel_arn);
                        }
                        recorder.end_in_background(false, None, OffsetDateTime::now_utc()).await;
                        Err(Refusal::Unavailable)
                    }
                }
            }
            (Err(ApplyError::Rejected(_)), Some(Err(refusal))) => Err(refusal),
            // Deleted since the key was checked: judged again (the key is gone with it).
            (Err(ApplyError::Rejected(error)), _) if error.kind == openivs_model::ErrorKind::ResourceNotFound => {
                Err(Refusal::ChannelChanged)
            }
            (Err(ApplyError::Rejected(_) | ApplyError::Stale), _) => Err(Refusal::AlreadyLive),
            (Err(ApplyError::Backend(error)), _) => {
                tracing::error!("ingest: cannot record a stream session for {channel_arn}: {error}");
                Err(Refusal::Unavailable)
            }
            (Ok(()), _) => Err(Refusal::Unavailable),
        }
    }

    /// The stream registry's lease this node holds on the stream.
    pub fn lease(&self) -> Option<&StreamLease> {
        self.lease.as_ref()
    }

    /// The channel as the session describes it: as stored when the stream went live.
    pub fn channel(&self) -> &Channel {
        &self.session.channel
    }

    pub fn stream_id(&self) -> &str {
        &self.session.stream_id
    }

    /// The recording configuration the stream went live with.
    pub fn recording_configuration(&self) -> Option<&openivs_model::resources::RecordingConfiguration> {
        self.session.recording_configuration.as_ref()
    }

    /// The failover slate configuration the stream went live with.
    pub fn failover_slate(&self) -> Option<&openivs_model::resources::FailoverSlateConfiguration> {
        self.session.failover_slate_configuration.as_ref()
    }

    fn push_event(&mut self, name: &str, event_type: &str, code: Option<&str>, at: OffsetDateTime) {
        push_event(&mut self.session, name, event_type, code, at);
        let session = &self.session;
        self.pending_events.extend(outbox_event(
            &self.channel_arn,
            &session.channel.name,
            &session.stream_id,
            name,
            event_type,
            code,
            at,
        ));
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

    /// Records the failover slate going on (`Some`, with when) or off the air, once per change.
    pub async fn note_slate(&mut self, showing: Option<SlateShowing>) {
        let event = match (showing, self.slate_on_air) {
            (Some(showing), false) => ("Failover Slate Start", showing.since_wall),
            (None, true) => ("Failover Slate End", OffsetDateTime::now_utc()),
            _ => return,
        };
        self.slate_on_air = showing.is_some();
        if let Err(error) = self.event(event.0, STREAM_STATE_CHANGE, None, event.1).await {
            tracing::warn!("ingest: cannot record {}: {error}", event.0);
        }
    }

    /// Records a "Stream Failure" (an error event; its EventBridge detail carries `reason`)
    /// without persisting yet.
    pub fn stream_failure(&mut self, reason: &str, at: OffsetDateTime) {
        self.has_error_event = true;
        push_event(&mut self.session, "Stream Failure", STREAM_STATE_CHANGE, None, at);
        let session = &self.session;
        let mut detail =
            crate::events::stream_detail("Stream Failure", &session.channel.name, &session.stream_id, None);
        detail["reason"] = serde_json::json!(reason);
        let event = ChannelEvent { detail_type: STREAM_STATE_CHANGE, channel_arn: &self.channel_arn, detail, time: at };
        self.pending_events.push(event.to_outbox());
    }

    /// Records a limit breach (an error event) without persisting yet.
    pub fn breach(&mut self, breach: Breach, at: OffsetDateTime) {
        self.has_error_event = true;
        push_event(&mut self.session, breach.limit_name, LIMIT_BREACH, None, at);
        let detail = breach.detail(&self.session.channel.name, &self.session.stream_id);
        let event = ChannelEvent { detail_type: LIMIT_BREACH, channel_arn: &self.channel_arn, detail, time: at };
        self.pending_events.push(event.to_outbox());
    }

    /// The stream's configuration as read from it; persisted.
    pub async fn set_ingest_configuration(
        &mut self,
        videos: Vec<VideoConfiguration>,
        audio: Option<AudioConfiguration>,
    ) -> Result<(), IvsError> {
        // The deprecated `ingestConfiguration` carries avcProfile/avcLevel of the first track; the
        // list form has every track and leaves them "".
        let listed_videos = videos
            .iter()
            .map(|v| VideoConfiguration { avc_profile: String::new(), avc_level: String::new(), ..v.clone() })
            .collect();
        self.session.ingest_configurations = Some(IngestConfigurations {
            video_configurations: listed_videos,
            audio_configurations: audio.clone().into_iter().collect(),
        });
        self.session.ingest_configuration = Some(IngestConfiguration { video: videos.into_iter().next(), audio });
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
        self.close(stream_started, error_code, at);
        self.persist().await
    }

    /// The end of the session, in memory.
    fn close(&mut self, stream_started: bool, error_code: Option<&str>, at: OffsetDateTime) {
        if stream_started {
            self.push_event("Stream End", STREAM_STATE_CHANGE, None, at);
        }
        if error_code.is_some() {
            self.has_error_event = true;
        }
        self.push_event("Session Ended", STREAM_STATE_CHANGE, error_code, at);
        self.session.end_time = Some(timestamp::format(at));
        self.ended = true;
    }

    /// Ends the session ([`SessionRecorder::end`]); while the store refuses the write (a full
    /// disk), it is written again every second in the background until it is stored, because an
    /// open session keeps the channel live in the store (no update, delete or new publish).
    pub async fn end_in_background(&mut self, stream_started: bool, error_code: Option<&str>, at: OffsetDateTime) {
        let Err(error) = self.end(stream_started, error_code, at).await else { return };
        if self.fenced {
            return;
        }
        tracing::error!("ingest: cannot record the end of stream {} (retrying): {error}", self.session.stream_id);
        let Ok(change) = self.change() else { return };
        let store = self.store.clone();
        let stream_id = self.session.stream_id.clone();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(END_RETRY).await;
                // (Until the process exits: a store that is shut down refuses every write.)
                match store.apply(change.clone()).await {
                    Ok(()) => tracing::info!("ingest: recorded the end of stream {stream_id}"),
                    Err(ApplyError::Rejected(_)) => tracing::warn!("ingest: stream {stream_id} was ended elsewhere"),
                    Err(_) => continue,
                }
                return;
            }
        });
    }

    fn record(&self) -> Result<StreamSessionRecord, IvsError> {
        session_record(&self.session, &self.channel_arn, self.ended, self.has_error_event)
    }

    /// The write of the session as it is now, with its pending EventBridge events, guarded by
    /// the lease; an ended session gives the lease up in the same change.
    fn change(&self) -> Result<Change, IvsError> {
        let mut change = Change::new();
        if let Some(lease) = &self.lease {
            let held = Check::LeaseHeld {
                channel_arn: lease.channel_arn.clone(),
                node_id: lease.node_id.clone(),
                epoch: lease.epoch,
            };
            change = change.require(held, IvsError::conflict(FENCED));
        }
        change = change
            .write(Write::PutStreamSession(self.record()?))
            .write(Write::AppendEvents(self.pending_events.clone()));
        if let (Some(lease), true) = (&self.lease, self.ended) {
            change = change.write(Write::ReleaseLease {
                channel_arn: lease.channel_arn.clone(),
                node_id: lease.node_id.clone(),
                epoch: lease.epoch,
            });
        }
        Ok(change)
    }

    /// Writes the session and, in the same transaction, its pending EventBridge events. Once
    /// a write found the lease taken (the node was fenced), nothing more is written: the node
    /// that took the stream over ended the session.
    async fn persist(&mut self) -> Result<(), IvsError> {
        if self.fenced {
            return if self.ended { Ok(()) } else { Err(IvsError::conflict(FENCED)) };
        }
        match self.store.apply(self.change()?).await {
            Ok(()) => {
                self.pending_events.clear();
                Ok(())
            }
            Err(ApplyError::Rejected(error)) if self.lease.is_some() => {
                tracing::warn!("ingest: stream {} is fenced: {}", self.session.stream_id, error.message);
                self.fenced = true;
                if self.ended { Ok(()) } else { Err(error) }
            }
            Err(error) => Err(error.into()),
        }
    }
}

/// A session as the store keeps it.
fn session_record(
    session: &StreamSession,
    channel_arn: &str,
    ended: bool,
    has_error_event: bool,
) -> Result<StreamSessionRecord, IvsError> {
    Ok(StreamSessionRecord {
        seq: 0,
        stream_id: session.stream_id.clone(),
        channel_arn: channel_arn.to_owned(),
        ended,
        has_error_event,
        body: serde_json::to_string(session).map_err(|e| IvsError::internal(e.to_string()))?,
    })
}

/// The EventBridge event IVS sends for a session event, if it sends one (the failover slate's
/// and the transcoder's events are in the session only).
fn outbox_event(
    channel_arn: &str,
    channel_name: &str,
    stream_id: &str,
    name: &str,
    event_type: &str,
    code: Option<&str>,
    at: OffsetDateTime,
) -> Option<OutboxEvent> {
    // (The transcoder's events are openivs's own: IVS sends none like them.)
    if name.starts_with("Failover Slate") || name.starts_with("Transcode") {
        return None;
    }
    let detail = crate::events::stream_detail(name, channel_name, stream_id, code);
    Some(ChannelEvent { detail_type: event_type, channel_arn, detail, time: at }.to_outbox())
}

/// Adds an event to a session, newest first, keeping the newest [`MAX_EVENTS`].
fn push_event(session: &mut StreamSession, name: &str, event_type: &str, code: Option<&str>, at: OffsetDateTime) {
    session.truncated_events.insert(
        0,
        StreamEvent {
            name: name.to_owned(),
            event_type: event_type.to_owned(),
            event_time: timestamp::format(at),
            code: code.map(str::to_owned),
        },
    );
    session.truncated_events.truncate(MAX_EVENTS);
}

/// Ends a session whose ingest is gone (this node restarted, or the node that held it stopped
/// renewing its lease): "Stream End" if its media had started, "Session Ended" with `code`. One
/// change, which requires the session to be still open and `guard` (the lease free, or still
/// this node's from before a restart) and fences the lease, so a holder that wakes up can no
/// longer write to the session. False when the change was refused (someone else ended it, or
/// the stream is held again).
pub async fn end_orphan(
    store: &Arc<dyn Store>,
    record: &StreamSessionRecord,
    guard: Check,
    code: &str,
    now: OffsetDateTime,
) -> Result<bool, IvsError> {
    let Ok(mut session) = serde_json::from_str::<StreamSession>(&record.body) else { return Ok(false) };
    let started = session.truncated_events.iter().any(|e| e.name == "Stream Start");
    session.end_time = None;
    let mut recorder = SessionRecorder {
        store: store.clone(),
        channel_arn: record.channel_arn.clone(),
        has_error_event: record.has_error_event,
        ended: false,
        slate_on_air: false,
        pending_events: Vec::new(),
        session,
        lease: None,
        fenced: false,
    };
    recorder.close(started, Some(code), now);
    let change = recorder
        .change()?
        .require(Check::SessionOpen { stream_id: record.stream_id.clone() }, IvsError::conflict("ended"))
        .require(guard, IvsError::conflict("held"))
        .write(Write::FenceLease { channel_arn: record.channel_arn.clone() });
    match store.apply(change).await {
        Ok(()) => Ok(true),
        Err(ApplyError::Rejected(_)) => Ok(false),
        Err(error) => Err(error.into()),
    }
}

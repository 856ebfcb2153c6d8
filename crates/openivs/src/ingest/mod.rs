//! Ingest: the RTMP and RTMPS listeners, and what decides whether a publish may go live.
//!
//! Both listeners run the same session code ([`rtmp`]); RTMPS wraps the socket in TLS first
//! ([`tls`]). A broadcaster publishes to application `app` with the stream key as the stream name
//! (`rtmps://{ingestEndpoint}/app/{streamKey}`), as with IVS. A key is authorised when it belongs
//! to a channel; plain RTMP only when that channel has `insecureIngest`; one publisher per
//! channel. Connections are capped, and every phase before going live has a deadline, so idle or
//! half-open connections cannot pile up.

pub mod client_configuration;
pub mod multitrack;
pub mod publish;
pub mod rtmp;
pub mod srt;
pub mod tls;

use std::sync::Arc;
use std::time::Duration;

use openivs_model::IvsError;
use openivs_model::resources::{
    AdConfiguration, Channel, FailoverSlateConfiguration, RecordingConfiguration, StreamKey,
};
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, watch};
use tokio_rustls::TlsAcceptor;

use crate::api::Endpoints;
use crate::api::stream_keys::stream_key_index;
use crate::live::LiveRegistry;
use crate::live::session::SessionRecorder;
use crate::store::Store;

/// How often a publish is judged again when its channel keeps changing under it.
const OPEN_ATTEMPTS: usize = 5;

pub struct IngestContext {
    pub store: Arc<dyn Store>,
    pub live: Arc<LiveRegistry>,
    pub playback: Arc<crate::playback::Playback>,
    pub transcoding: Arc<crate::transcode::Transcoding>,
    pub buckets: Arc<crate::recording::buckets::Buckets>,
    /// Recordings waiting out their reconnect window.
    pub recordings: Arc<crate::recording::recorder::Parking>,
    /// Finishes the recordings of streams whose node died (when a publish ends their sessions).
    pub recovery: Arc<crate::recording::recovery::Recovery>,
    pub endpoints: Endpoints,
    pub limits: crate::settings::Limits,
    /// Checks the authentication values GetClientConfiguration answered.
    pub client_configurations: Arc<client_configuration::ClientConfigurations>,
    /// This node, which takes the stream registry's lease of each stream it ingests.
    pub node: crate::cluster::Node,
}

/// What a publish needs once its key is accepted: the channel and what it refers to.
pub struct Authorized {
    pub channel: Channel,
    pub recording_configuration: Option<RecordingConfiguration>,
    pub failover_slate_configuration: Option<FailoverSlateConfiguration>,
}

/// Why a publish was refused; the RTMP session tells the broadcaster in an onStatus error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    UnknownStreamKey,
    InsecureIngestNotAllowed,
    AlreadyLive,
    /// The channel was updated or deleted while the publish was being set up.
    ChannelChanged,
    Unavailable,
}

impl Refusal {
    /// The onStatus code and description the broadcaster sees.
    pub fn status(self) -> (&'static str, &'static str) {
        match self {
            Refusal::UnknownStreamKey => ("NetStream.Publish.BadName", "Invalid stream key"),
            Refusal::InsecureIngestNotAllowed => {
                ("NetStream.Publish.Rejected", "This channel accepts RTMPS only (its insecureIngest is false)")
            }
            Refusal::AlreadyLive => {
                ("NetStream.Publish.BadName", "The channel is already live: one publisher per channel")
            }
            Refusal::ChannelChanged => ("NetStream.Publish.Failed", "The channel changed while publishing; try again"),
            Refusal::Unavailable => ("NetStream.Publish.Failed", "The service is unavailable; try again"),
        }
    }
}

impl IngestContext {
    /// Finds the channel a stream key belongs to and checks it may be published to this way.
    pub async fn authorize(&self, stream_key: &str, secure: bool) -> Result<Authorized, Refusal> {
        let fetch = |e| {
            tracing::error!("ingest: store error while authorising a publish: {e}");
            Refusal::Unavailable
        };
        let mut channel = channel_of_stream_key(self.store.as_ref(), stream_key)
            .await
            .map_err(fetch)?
            .ok_or(Refusal::UnknownStreamKey)?;
        crate::api::Resource::present(&mut channel, &self.endpoints);
        if !secure && !channel.insecure_ingest {
            return Err(Refusal::InsecureIngestNotAllowed);
        }
        let recording_configuration = self.referenced(&channel.recording_configuration_arn).await.map_err(fetch)?;
        let failover_slate_configuration =
            self.referenced(&channel.failover_slate_configuration_arn).await.map_err(fetch)?;
        Ok(Authorized { channel, recording_configuration, failover_slate_configuration })
    }

    /// Opens the stream session of a publish that `authorized` let through: records the session
    /// in a store change that decides, against concurrent writers, whether it goes live (see
    /// [`SessionRecorder::create`]). When the channel's configurations changed in between, the
    /// key is authorised again. The session describes the channel as it went live.
    pub async fn open_session(
        &self,
        authorized: Authorized,
        stream_key: &str,
        secure: bool,
        stream_id: &str,
        now: time::OffsetDateTime,
    ) -> Result<SessionRecorder, Refusal> {
        let channel_arn = authorized.channel.arn.clone();
        let mut first = Some(authorized);
        let mut lost_sessions_ended = false;
        for _ in 0..OPEN_ATTEMPTS {
            let authorized = match first.take() {
                Some(authorized) => authorized,
                None => self.authorize(stream_key, secure).await?,
            };
            let opened = SessionRecorder::create(
                self.store.clone(),
                stream_id.to_owned(),
                authorized,
                self.endpoints.clone(),
                secure,
                &self.node,
                now,
            )
            .await;
            match opened {
                Err(Refusal::ChannelChanged) => {
                    tracing::debug!("ingest: the channel changed while a publish opened; judging it again");
                }
                // The channel may be live only in a session its dead node left open (its lease
                // expired): that session ends, and the publish goes live.
                Err(Refusal::AlreadyLive) if !lost_sessions_ended => {
                    lost_sessions_ended = true;
                    let ended = crate::cluster::registry::end_lost_sessions(
                        &self.store,
                        &self.live,
                        &self.recovery,
                        Some(&channel_arn),
                    )
                    .await
                    .unwrap_or_else(|error| {
                        tracing::warn!("ingest: cannot look at the sessions of {channel_arn}: {error}");
                        0
                    });
                    if ended == 0 {
                        return Err(Refusal::AlreadyLive);
                    }
                }
                other => return other,
            }
        }
        Err(Refusal::ChannelChanged)
    }

    /// The post-roll ad break of the channel's ad configuration, if it enables one.
    pub async fn post_roll(&self, channel: &Channel) -> Option<Duration> {
        match self.referenced::<AdConfiguration>(&channel.ad_configuration_arn).await {
            Ok(Some(ads)) if ads.post_roll_configuration.enabled => {
                Some(Duration::from_secs(ads.post_roll_configuration.duration_seconds.max(0) as u64))
            }
            Ok(_) => None,
            Err(error) => {
                tracing::warn!("ingest: cannot read the ad configuration of {}: {error}", channel.arn);
                None
            }
        }
    }

    async fn referenced<T: serde::de::DeserializeOwned>(&self, arn: &str) -> Result<Option<T>, IvsError> {
        if arn.is_empty() {
            return Ok(None);
        }
        match self.store.get(arn).await? {
            Some(record) => Ok(Some(record.decode()?)),
            None => Ok(None),
        }
    }
}

/// The channel a stream key (its value) belongs to, if any.
pub async fn channel_of_stream_key(store: &dyn Store, stream_key: &str) -> Result<Option<Channel>, IvsError> {
    let Some(key_record) = store.get_by_unique_key(&stream_key_index(stream_key)).await? else {
        return Ok(None);
    };
    let key: StreamKey = key_record.decode()?;
    if key.value != stream_key {
        return Ok(None);
    }
    match store.get(&key.channel_arn).await? {
        Some(record) => Ok(Some(record.decode()?)),
        None => Ok(None),
    }
}

/// Accepts connections until `shutdown` turns true; each runs an RTMP session (in TLS when
/// `tls` is given).
pub async fn run_listener(
    listener: TcpListener,
    tls: Option<TlsAcceptor>,
    context: Arc<IngestContext>,
    mut shutdown: watch::Receiver<bool>,
) {
    let slots = Arc::new(Semaphore::new(context.limits.ingest_max_connections));
    let secure = tls.is_some();
    let tls_handshake_timeout = crate::settings::Limits::seconds(context.limits.ingest_tls_handshake_timeout);
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = shutdown.wait_for(|stop| *stop) => break,
        };
        let (socket, peer) = match accepted {
            Ok(pair) => pair,
            Err(error) => {
                // Out of file descriptors and the like: back off instead of spinning.
                tracing::warn!("ingest: accept failed: {error}");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            tracing::warn!("ingest: connection limit reached; closing a connection from {peer}");
            continue;
        };
        let _ = socket.set_nodelay(true);
        let context = context.clone();
        let tls = tls.clone();
        tokio::spawn(async move {
            let _slot = slot;
            match tls {
                Some(acceptor) => match tokio::time::timeout(tls_handshake_timeout, acceptor.accept(socket)).await {
                    Ok(Ok(stream)) => rtmp::serve(stream, secure, peer, context).await,
                    Ok(Err(error)) => tracing::debug!("ingest: TLS handshake with {peer} failed: {error}"),
                    Err(_) => tracing::debug!("ingest: TLS handshake with {peer} timed out"),
                },
                None => rtmp::serve(socket, secure, peer, context).await,
            }
        });
    }
}

//! Playback: the HLS origin. One packager per live channel ([`packager`]) keeps the channel's
//! playlist window in memory; the HTTP handlers ([`http`]) serve the multivariant playlist at the
//! channel's `playbackUrl`, and media playlists, segments and parts under per-viewer-session URLs
//! (`/playback/{session}/…`), as IVS does. Sessions count as viewers while they fetch.

pub mod http;
pub mod packager;

use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use packager::{ChannelPlayback, Container};

use crate::live::LiveStream;

/// How long an ended stream's playlist stays (with `EXT-X-ENDLIST`) before the channel's
/// playback answers 404, and within which a new stream continues it after a discontinuity.
pub const LINGER: Duration = Duration::from_secs(20);
/// A viewer session counts in `viewerCount` while it fetched within this.
const VIEWER_ACTIVE: Duration = Duration::from_secs(60);
/// A viewer session is forgotten after this long without a request.
const SESSION_IDLE: Duration = Duration::from_secs(600);
/// At most this many viewer sessions are held; past it new viewers get 429, as IVS answers when
/// the concurrent-viewer quota is reached (and memory stays bounded whatever clients do).
const MAX_SESSIONS: usize = 100_000;

#[derive(Debug, Clone)]
pub struct ViewerSession {
    pub channel_arn: String,
    /// The channel's latency mode was LOW when the session opened (low-latency HLS).
    pub low_latency: bool,
    pub last_seen: Instant,
}

#[derive(Default)]
pub struct Playback {
    channels: RwLock<HashMap<String, Arc<ChannelPlayback>>>,
    sessions: Mutex<HashMap<String, ViewerSession>>,
}

impl Playback {
    pub fn new() -> Playback {
        Playback::default()
    }

    /// Starts packaging a stream that just went live, in the channel's container format. A new
    /// stream continues the channel's lingering playlist (after a discontinuity) when the format
    /// is the same, and replaces it otherwise.
    pub fn start_stream(self: &Arc<Self>, stream: &LiveStream, container: Container) {
        let channel = {
            let mut channels = self.channels.write().expect("playback lock");
            let entry =
                channels.entry(stream.channel_arn.clone()).or_insert_with(|| Arc::new(ChannelPlayback::new(container)));
            if entry.container != container {
                *entry = Arc::new(ChannelPlayback::new(container));
            }
            entry.clone()
        };
        let subscription = stream.hub.subscribe();
        let ended = stream.hub.ended();
        let this = self.clone();
        let channel_arn = stream.channel_arn.clone();
        let stream_id = stream.stream_id.clone();
        tokio::spawn(async move {
            packager::run(channel.clone(), subscription, stream_id, ended).await;
            // Keep the ended playlist for a while, unless a new stream took over the channel.
            tokio::time::sleep(LINGER).await;
            let mut channels = this.channels.write().expect("playback lock");
            if channels
                .get(&channel_arn)
                .is_some_and(|c| Arc::ptr_eq(c, &channel) && c.state.read().expect("playlist lock").ended)
            {
                channels.remove(&channel_arn);
            }
        });
    }

    pub fn channel(&self, channel_arn: &str) -> Option<Arc<ChannelPlayback>> {
        self.channels.read().expect("playback lock").get(channel_arn).cloned()
    }

    /// Opens a viewer session for a channel; its id goes into the URLs the viewer fetches.
    /// `None` when the server holds as many sessions as it allows.
    pub fn open_session(&self, channel_arn: &str, low_latency: bool) -> Option<String> {
        let id = crate::api::random_alphanumeric(24);
        let mut sessions = self.sessions.lock().expect("sessions lock");
        let now = Instant::now();
        if sessions.len() >= MAX_SESSIONS {
            sessions.retain(|_, s| now.duration_since(s.last_seen) < SESSION_IDLE);
            if sessions.len() >= MAX_SESSIONS {
                return None;
            }
        }
        sessions.insert(id.clone(), ViewerSession { channel_arn: channel_arn.to_owned(), low_latency, last_seen: now });
        Some(id)
    }

    /// A session, marking it active; `None` for an unknown or expired session.
    pub fn touch_session(&self, id: &str) -> Option<ViewerSession> {
        let mut sessions = self.sessions.lock().expect("sessions lock");
        let session = sessions.get_mut(id)?;
        session.last_seen = Instant::now();
        Some(session.clone())
    }

    /// Viewer sessions of a channel active in the last minute.
    pub fn viewer_count(&self, channel_arn: &str) -> i64 {
        let now = Instant::now();
        self.sessions
            .lock()
            .expect("sessions lock")
            .values()
            .filter(|s| s.channel_arn == channel_arn && now.duration_since(s.last_seen) < VIEWER_ACTIVE)
            .count() as i64
    }
}

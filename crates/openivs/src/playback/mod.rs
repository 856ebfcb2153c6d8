//! Playback: the HLS origin. One packager per live channel ([`packager`]) keeps the channel's
//! playlist window in memory; the HTTP handlers ([`http`]) serve the multivariant playlist at the
//! channel's `playbackUrl`, and media playlists, segments and parts under per-viewer-session URLs
//! (`/playback/{session}/…`), as IVS does. Sessions ([`viewers`]) count as viewers while they
//! fetch. Who may open a session, and on what terms (private channels' tokens, restriction
//! policies), is decided by [`access`].

pub mod access;
pub mod ad_breaks;
pub mod http;
pub mod packager;
pub mod viewers;

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use access::Access;
use packager::{ChannelPlayback, Packaging};
use viewers::ViewerSessions;

use crate::live::LiveStream;
use crate::settings::Limits;

/// How long an ended stream's playlist stays (with `EXT-X-ENDLIST`) before the channel's
/// playback answers 404, and within which a new stream continues it after a discontinuity.
pub const LINGER: Duration = Duration::from_secs(20);

pub struct Playback {
    channels: RwLock<HashMap<String, Arc<ChannelPlayback>>>,
    pub viewers: ViewerSessions,
    pub access: Access,
    limits: Limits,
}

impl Playback {
    pub fn new(limits: Limits, access: Access) -> Playback {
        Playback { channels: RwLock::default(), viewers: ViewerSessions::new(limits), access, limits }
    }

    /// Starts packaging a stream that just went live, as the channel's container format and
    /// latency mode say. A new stream continues the channel's lingering playlist (after a
    /// discontinuity) when the packaging is the same, and replaces it otherwise.
    pub fn start_stream(self: &Arc<Self>, stream: &LiveStream, packaging: Packaging) {
        let channel = {
            let mut channels = self.channels.write().expect("playback lock");
            let entry =
                channels.entry(stream.channel_arn.clone()).or_insert_with(|| Arc::new(ChannelPlayback::new(packaging)));
            if entry.packaging != packaging {
                *entry = Arc::new(ChannelPlayback::new(packaging));
            }
            entry.clone()
        };
        let subscription = stream.hub.subscribe();
        let ended = stream.hub.ended();
        let this = self.clone();
        let channel_arn = stream.channel_arn.clone();
        let stream_id = stream.stream_id.clone();
        let limits = self.limits;
        tokio::spawn(async move {
            packager::run(channel.clone(), subscription, stream_id, ended, limits).await;
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
}

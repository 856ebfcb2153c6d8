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
use packager::{ChannelPlayback, Follow, Packaging};
use viewers::ViewerSessions;

use crate::live::LiveStream;
use crate::live::hub::Hub;
use crate::settings::Limits;

/// How long an ended stream's playlists stay (with `EXT-X-ENDLIST`) for the viewers who were
/// watching, before they answer 404.
pub const LINGER: Duration = Duration::from_secs(20);

pub struct Playback {
    /// Per channel, its media playlists, oldest first: the live stream's, and ended ones that
    /// linger. A playlist holds one stream (with its failover slate and the publisher's
    /// comebacks during it): one served with `EXT-X-ENDLIST` never grows again (RFC 8216
    /// 6.2.1), so a later stream gets playlists of its own, named by its stream id.
    channels: RwLock<HashMap<String, Vec<Arc<ChannelPlayback>>>>,
    pub viewers: ViewerSessions,
    pub access: Access,
    limits: Limits,
}

impl Playback {
    /// `session_key` signs viewer session ids: the nodes of a cluster share it (it is kept in
    /// the database), so a session opened on one node plays on every node.
    pub fn new(limits: Limits, access: Access, session_key: [u8; 32]) -> Playback {
        let viewers = ViewerSessions::with_key(limits, session_key);
        Playback { channels: RwLock::default(), viewers, access, limits }
    }

    /// Starts packaging a stream that just went live, as the channel's container format and
    /// latency mode say, into playlists of its own. `source_listed`: the multivariant playlist
    /// offers the source rendition (not on ADVANCED channels once their renditions play).
    pub fn start_stream(self: &Arc<Self>, stream: &LiveStream, packaging: Packaging, source_listed: bool) {
        let mut channel = ChannelPlayback::new(packaging, stream.stream_id.as_str().into());
        channel.source_listed = source_listed;
        let channel = Arc::new(channel);
        self.channels
            .write()
            .expect("playback lock")
            .entry(stream.channel_arn.clone())
            .or_default()
            .push(channel.clone());
        let subscription = stream.hub.subscribe();
        let ended = stream.hub.ended();
        let this = self.clone();
        let channel_arn = stream.channel_arn.clone();
        let stream_id = stream.stream_id.clone();
        let limits = self.limits;
        tokio::spawn(async move {
            packager::run(channel.clone(), subscription, stream_id, ended, limits, None).await;
            // The ended playlists stay a while for the viewers who were watching.
            tokio::time::sleep(LINGER).await;
            let mut channels = this.channels.write().expect("playback lock");
            if let Some(playlists) = channels.get_mut(&channel_arn) {
                playlists.retain(|p| !Arc::ptr_eq(p, &channel));
                if playlists.is_empty() {
                    channels.remove(&channel_arn);
                }
            }
        });
    }

    /// Starts packaging a stream's transcoded renditions (best first), each from its own hub,
    /// with the timed metadata and ad breaks of the stream's; their playlists follow the
    /// source's cuts and are served beside it.
    pub fn start_renditions(
        &self,
        stream: &LiveStream,
        source: &Arc<ChannelPlayback>,
        renditions: Vec<(String, bool, Arc<Hub>)>,
    ) {
        for (name, audio_only, hub) in renditions {
            let id = format!("{}_{name}", source.id);
            let mut playback = ChannelPlayback::new(source.packaging, id.as_str().into());
            playback.rendition = Some(name);
            let playback = Arc::new(playback);
            source.renditions.write().expect("renditions lock").push(playback.clone());
            let subscription = hub.subscribe_with(&stream.hub);
            let follow = Follow { cuts: source.cuts.clone(), audio_only };
            tokio::spawn(packager::run(playback, subscription, id, hub.ended(), self.limits, Some(follow)));
        }
    }

    /// The channel's newest playlists (those of its live stream, while it is live).
    pub fn channel(&self, channel_arn: &str) -> Option<Arc<ChannelPlayback>> {
        self.channels.read().expect("playback lock").get(channel_arn).and_then(|p| p.last().cloned())
    }

    /// The playlists a media file of the channel belongs to: its name is their id followed by
    /// `.` or `-` (a rendition's id is its stream's followed by `_`).
    pub fn playlists_of_file(&self, channel_arn: &str, file: &str) -> Option<Arc<ChannelPlayback>> {
        let named = |p: &ChannelPlayback| {
            file.strip_prefix(&*p.id).is_some_and(|rest| rest.starts_with('.') || rest.starts_with('-'))
        };
        let channels = self.channels.read().expect("playback lock");
        for stream in channels.get(channel_arn)?.iter().rev() {
            if named(stream) {
                return Some(stream.clone());
            }
            if let Some(rendition) = stream.renditions.read().expect("renditions lock").iter().find(|r| named(r)) {
                return Some(rendition.clone());
            }
        }
        None
    }
}

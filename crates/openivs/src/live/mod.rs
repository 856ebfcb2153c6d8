//! The registry of live channels: which channels are broadcasting right now, and their
//! streams. Only the ingest side (a later milestone: RTMP/RTMPS) adds streams here; the API reads
//! it to answer GetStream, ListStreams, StopStream, PutMetadata and InsertAdBreak, and to refuse
//! deleting or updating a live channel. Until ingest lands, no channel is ever live, and those
//! operations answer `ChannelNotBroadcasting` exactly as IVS does for an offline channel.

use std::collections::HashMap;
use std::sync::RwLock;

use time::OffsetDateTime;

/// A live stream, as GetStream describes it.
#[derive(Debug, Clone, PartialEq)]
pub struct LiveStream {
    pub channel_arn: String,
    pub account: String,
    pub region: String,
    pub stream_id: String,
    pub playback_url: String,
    pub start_time: OffsetDateTime,
    pub health: &'static str,
    pub viewer_count: i64,
}

#[derive(Default)]
pub struct LiveRegistry {
    streams: RwLock<HashMap<String, LiveStream>>,
}

impl LiveRegistry {
    pub fn new() -> LiveRegistry {
        LiveRegistry::default()
    }

    pub fn is_live(&self, channel_arn: &str) -> bool {
        self.streams.read().expect("live registry lock").contains_key(channel_arn)
    }

    pub fn stream(&self, channel_arn: &str) -> Option<LiveStream> {
        self.streams.read().expect("live registry lock").get(channel_arn).cloned()
    }

    /// The live streams of an account and region, oldest first.
    pub fn streams_of(&self, account: &str, region: &str) -> Vec<LiveStream> {
        let mut streams: Vec<LiveStream> = self
            .streams
            .read()
            .expect("live registry lock")
            .values()
            .filter(|s| s.account == account && s.region == region)
            .cloned()
            .collect();
        streams.sort_by(|a, b| (a.start_time, &a.stream_id).cmp(&(b.start_time, &b.stream_id)));
        streams
    }
}

impl LiveRegistry {
    /// Ends a channel's stream (StopStream); false if it was not live.
    pub fn stop(&self, channel_arn: &str) -> bool {
        self.streams.write().expect("live registry lock").remove(channel_arn).is_some()
    }

    /// Hands timed metadata (PutMetadata) to a live stream. Delivery into the media arrives with
    /// the packager; until then no stream is ever live, so nothing reaches here.
    pub fn put_metadata(&self, channel_arn: &str, _metadata: &str) -> bool {
        self.is_live(channel_arn)
    }
}

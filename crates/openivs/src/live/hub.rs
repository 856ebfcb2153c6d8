//! The stream hub of one live channel: ingest publishes timestamped access units into it;
//! consumers (HLS packagers, recorder, thumbnailer, metadata) subscribe at their own pace.
//!
//! Publishing never waits for a consumer: frames go into a bounded broadcast ring, and a
//! consumer that falls more than the ring behind loses the frames it missed (it is told how many
//! and should resume at the next keyframe). Consumers subscribe when the stream starts (the
//! packagers run for every live stream), so the hub keeps no GOP for late joiners: a consumer
//! that joins later starts at the next keyframe. Memory per stream is bounded by the ring (which
//! holds frames only while a subscriber has not read them) and the codec configurations.

use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use tokio::sync::{broadcast, watch};

/// Frames in the ring: about 8 s of a 30 fps stream with audio.
const RING_FRAMES: usize = 512;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TrackKind {
    Video,
    Audio,
}

/// One access unit as received: AVC in length-prefixed NAL units, AAC raw.
#[derive(Debug, Clone)]
pub struct MediaFrame {
    pub kind: TrackKind,
    /// Decode timestamp, ms since the stream's first frame's timeline origin (RTMP timestamps).
    pub dts_ms: i64,
    /// Presentation timestamp in ms (dts + composition time).
    pub pts_ms: i64,
    pub keyframe: bool,
    pub data: Bytes,
    /// When it reached the server (for latency accounting and EXT-X-PROGRAM-DATE-TIME).
    pub arrival: Instant,
    pub arrival_wall: time::OffsetDateTime,
}

/// The codec configuration of a track, as received (avcC; AudioSpecificConfig).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrackConfig {
    pub codec: String,
    pub config: Bytes,
    pub width: u32,
    pub height: u32,
    pub sample_rate: u32,
    pub channels: u8,
}

/// Timed metadata, to be carried in the stream at the position it arrived.
#[derive(Debug, Clone)]
pub struct TimedMetadata {
    pub text: String,
    pub source: MetadataSource,
    pub arrival: Instant,
    pub arrival_wall: time::OffsetDateTime,
}

/// Where timed metadata came from: players tell them apart by the ID3 frame's owner.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MetadataSource {
    /// PutMetadata.
    Api,
    /// The broadcaster, in the RTMP stream (`onTextData`, `onCuePoint`).
    InBand,
}

/// An ad break that InsertAdBreak scheduled. Packagers mark it from the first segment that
/// starts at or after `start_at` (the next segment when `None`: "now"), since a splice point
/// must be a keyframe, and end it on the first segment that starts `duration` after that.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdBreak {
    pub id: String,
    pub start_at: Option<time::OffsetDateTime>,
    pub duration: std::time::Duration,
    /// When InsertAdBreak was answered (a break "now" is judged as starting then).
    pub requested_at: time::OffsetDateTime,
}

impl AdBreak {
    fn span(&self) -> (time::OffsetDateTime, time::OffsetDateTime) {
        let start = self.start_at.unwrap_or(self.requested_at);
        (start, start + self.duration)
    }
}

/// The stream's ad breaks, and the post-roll break of its ad configuration.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AdSchedule {
    pub breaks: Vec<AdBreak>,
    pub post_roll: Option<std::time::Duration>,
}

/// Ad breaks one stream takes at most.
pub const MAX_AD_BREAKS: usize = 1000;

/// Why an ad break was not scheduled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AdBreakRefusal {
    /// The stream already had a break with this id.
    DuplicateId,
    /// It would overlap a break scheduled or in progress.
    Overlaps,
    /// [`MAX_AD_BREAKS`] reached.
    TooMany,
}

pub struct Hub {
    frames: broadcast::Sender<Arc<MediaFrame>>,
    metadata: broadcast::Sender<Arc<TimedMetadata>>,
    ads: watch::Sender<AdSchedule>,
    video: watch::Sender<Option<Arc<TrackConfig>>>,
    audio: watch::Sender<Option<Arc<TrackConfig>>>,
    ended: watch::Sender<bool>,
}

/// A consumer's view of the hub.
pub struct Subscription {
    pub frames: broadcast::Receiver<Arc<MediaFrame>>,
    pub metadata: broadcast::Receiver<Arc<TimedMetadata>>,
    pub ads: watch::Receiver<AdSchedule>,
    pub video: watch::Receiver<Option<Arc<TrackConfig>>>,
    pub audio: watch::Receiver<Option<Arc<TrackConfig>>>,
}

impl Default for Hub {
    fn default() -> Self {
        Hub::new()
    }
}

impl Hub {
    pub fn new() -> Hub {
        let (frames, _) = broadcast::channel(RING_FRAMES);
        let (metadata, _) = broadcast::channel(64);
        Hub {
            frames,
            metadata,
            ads: watch::Sender::new(AdSchedule::default()),
            video: watch::Sender::new(None),
            audio: watch::Sender::new(None),
            ended: watch::Sender::new(false),
        }
    }

    pub fn set_config(&self, kind: TrackKind, config: TrackConfig) {
        let sender = match kind {
            TrackKind::Video => &self.video,
            TrackKind::Audio => &self.audio,
        };
        sender.send_replace(Some(Arc::new(config)));
    }

    /// Publishes a frame to every subscriber; never waits.
    pub fn publish(&self, frame: MediaFrame) {
        // An error only means nobody is subscribed.
        let _ = self.frames.send(Arc::new(frame));
    }

    /// Hands timed metadata to every subscriber; never waits.
    pub fn put_metadata(&self, metadata: TimedMetadata) {
        let _ = self.metadata.send(Arc::new(metadata));
    }

    /// Schedules an ad break, unless its id was used in this stream already or it overlaps
    /// another break.
    pub fn schedule_ad_break(&self, ad_break: AdBreak) -> Result<(), AdBreakRefusal> {
        let mut outcome = Ok(());
        self.ads.send_if_modified(|schedule| {
            let (start, end) = ad_break.span();
            outcome = if schedule.breaks.iter().any(|b| b.id == ad_break.id) {
                Err(AdBreakRefusal::DuplicateId)
            } else if schedule.breaks.iter().any(|b| {
                let (other_start, other_end) = b.span();
                start < other_end && other_start < end
            }) {
                Err(AdBreakRefusal::Overlaps)
            } else if schedule.breaks.len() >= MAX_AD_BREAKS {
                Err(AdBreakRefusal::TooMany)
            } else {
                Ok(())
            };
            if outcome.is_ok() {
                schedule.breaks.push(ad_break.clone());
            }
            outcome.is_ok()
        });
        outcome
    }

    /// The post-roll break the stream ends with (its ad configuration's `postRollConfiguration`).
    pub fn set_post_roll(&self, duration: Option<std::time::Duration>) {
        self.ads.send_modify(|schedule| schedule.post_roll = duration);
    }

    pub fn subscribe(&self) -> Subscription {
        Subscription {
            frames: self.frames.subscribe(),
            metadata: self.metadata.subscribe(),
            ads: self.ads.subscribe(),
            video: self.video.subscribe(),
            audio: self.audio.subscribe(),
        }
    }

    /// The stream is over: consumers finish what they have and stop.
    pub fn end(&self) {
        self.ended.send_replace(true);
    }

    pub fn ended(&self) -> watch::Receiver<bool> {
        self.ended.subscribe()
    }

    pub fn subscriber_count(&self) -> usize {
        self.frames.receiver_count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(dts_ms: i64, keyframe: bool, size: usize) -> MediaFrame {
        MediaFrame {
            kind: TrackKind::Video,
            dts_ms,
            pts_ms: dts_ms,
            keyframe,
            data: Bytes::from(vec![0u8; size]),
            arrival: Instant::now(),
            arrival_wall: time::OffsetDateTime::now_utc(),
        }
    }

    #[test]
    fn a_stuck_subscriber_never_blocks_publishing_and_stays_bounded() {
        // Nobody subscribed: publishing keeps nothing.
        let idle = Hub::new();
        idle.publish(frame(0, true, 100));
        assert_eq!(idle.subscriber_count(), 0);
        let hub = Hub::new();
        let mut stuck = hub.subscribe();
        let mut live = hub.subscribe();
        for i in 0..(RING_FRAMES as i64 * 4) {
            hub.publish(frame(i * 33, i % 60 == 0, 100));
            assert_eq!(live.frames.try_recv().unwrap().dts_ms, i * 33);
        }
        // The stuck one learns it lagged, then continues from what the ring still holds.
        match stuck.frames.try_recv() {
            Err(broadcast::error::TryRecvError::Lagged(missed)) => assert!(missed > 0),
            other => panic!("{other:?}"),
        }
        assert!(stuck.frames.try_recv().is_ok());
    }

    #[test]
    fn ad_breaks_may_not_overlap_or_reuse_an_id() {
        let hub = Hub::new();
        let now = time::OffsetDateTime::now_utc();
        let ad_break = |id: &str, start_in: Option<i64>, seconds: u64| AdBreak {
            id: id.to_owned(),
            start_at: start_in.map(|s| now + time::Duration::seconds(s)),
            duration: std::time::Duration::from_secs(seconds),
            requested_at: now,
        };
        assert_eq!(hub.schedule_ad_break(ad_break("aaaaaaaaaaaa", None, 30)), Ok(()));
        assert_eq!(hub.schedule_ad_break(ad_break("aaaaaaaaaaaa", Some(100), 30)), Err(AdBreakRefusal::DuplicateId));
        assert_eq!(hub.schedule_ad_break(ad_break("bbbbbbbbbbbb", Some(29), 30)), Err(AdBreakRefusal::Overlaps));
        assert_eq!(hub.schedule_ad_break(ad_break("bbbbbbbbbbbb", Some(30), 30)), Ok(()));
        assert_eq!(hub.subscribe().ads.borrow().breaks.len(), 2);
    }
}

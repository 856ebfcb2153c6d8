//! The stream hub of one live channel: ingest publishes timestamped access units into it;
//! consumers (HLS packagers, recorder, thumbnailer, metadata) subscribe at their own pace.
//!
//! Publishing never waits for a consumer: frames go into a bounded broadcast ring, and a
//! consumer that falls more than the ring behind loses the frames it missed (it is told how many
//! and should resume at the next keyframe). Consumers subscribe when the stream starts (the
//! packagers run for every live stream), so the hub keeps no GOP for late joiners: a consumer
//! that joins later starts at the next keyframe. Memory per stream is bounded by the ring (which
//! holds frames only while a subscriber has not read them) and the codec configurations.
//!
//! The hub is one continuous stream whoever feeds it: the publisher, a publisher that came back
//! (a new connection of the same stream session), or the failover slate ([`super::slate`])
//! while the publisher is away. It gates the feeds (the slate holds the stream for at least its
//! minimum display; a publisher takes over only at a keyframe) and rebases each new feed's
//! timestamps onto the stream's timeline at the wall-clock time it joins, marking its first
//! frame as a discontinuity, so consumers see time only move forward.

use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use openivs_media::video::{VideoCoding, VideoRecord};
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
    /// The first frame of a new feed (the slate, or the publisher after it or after a
    /// reconnection): what follows may have other parameters and does not continue the picture.
    pub discontinuity: bool,
}

/// The failover slate of a channel with a failover slate configuration.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SlateSettings {
    /// Ingest interruption after which the slate starts.
    pub activation: std::time::Duration,
    pub min_display: std::time::Duration,
    pub max_display: std::time::Duration,
}

/// The slate is on the air: since when.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SlateShowing {
    pub since: Instant,
    pub since_wall: time::OffsetDateTime,
}

/// The slate's first frame follows the last frame sent by about one frame.
const SLATE_GAP_MS: i64 = 33;

/// Who feeds the stream, and how its timestamps map onto the stream's timeline.
#[derive(Debug, Default)]
struct Feed {
    /// While the slate plays: when it started (the publisher's frames wait out the minimum).
    slate: Option<(Instant, std::time::Duration)>,
    /// The publisher's frames are held back until its next keyframe, which starts a new feed
    /// (after the slate, or after a reconnection).
    publisher_rejoins: bool,
    /// Added to the publisher's timestamps.
    offset_ms: i64,
    /// The last frame sent: its decode time on the stream's timeline, and when.
    last_sent: Option<(i64, Instant)>,
    /// When the publisher's last frame arrived (the slate starts after enough silence).
    publisher_last: Option<Instant>,
    /// The next frame sent starts a new feed.
    discontinuity: bool,
    /// Configurations the publisher sent while held back, applied when it takes over.
    pending_configs: Vec<(TrackKind, TrackConfig)>,
}

impl Feed {
    /// The stream's decode time for a frame joining now: the last one's, advanced by the wall
    /// time since (dates keep following the clock across a gap).
    fn joining_dts(&self, now: Instant) -> i64 {
        match self.last_sent {
            Some((dts, at)) => dts + (now.saturating_duration_since(at).as_millis() as i64).max(1),
            None => 0,
        }
    }
}

/// The codec configuration of a track, as received (avcC; AudioSpecificConfig).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrackConfig {
    /// A video track's coding (H.264 for audio tracks, where it means nothing).
    pub coding: VideoCoding,
    pub codec: String,
    pub config: Bytes,
    pub width: u32,
    pub height: u32,
    pub sample_rate: u32,
    pub channels: u8,
}

impl TrackConfig {
    /// A video track: its decoder configuration record (`config`: avcC or hvcC), parsed.
    pub fn video(record: &VideoRecord, config: Bytes) -> TrackConfig {
        TrackConfig {
            coding: record.coding,
            codec: record.codec.clone(),
            config,
            width: record.width,
            height: record.height,
            sample_rate: 0,
            channels: 0,
        }
    }

    /// An AAC track: its AudioSpecificConfig (`config`), parsed.
    pub fn audio(asc: &openivs_media::aac::AudioSpecificConfig, config: Bytes) -> TrackConfig {
        TrackConfig {
            coding: VideoCoding::Avc,
            codec: asc.codec_string(),
            config,
            width: 0,
            height: 0,
            sample_rate: asc.sample_rate,
            channels: asc.channels,
        }
    }
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
    feed: std::sync::Mutex<Feed>,
    /// The slate settings of the stream (none: the stream ends when the publisher leaves).
    failover: watch::Sender<Option<SlateSettings>>,
    /// `Some` while the slate is on the air.
    slate: watch::Sender<Option<SlateShowing>>,
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
            feed: std::sync::Mutex::default(),
            failover: watch::Sender::new(None),
            slate: watch::Sender::new(None),
            metadata,
            ads: watch::Sender::new(AdSchedule::default()),
            video: watch::Sender::new(None),
            audio: watch::Sender::new(None),
            ended: watch::Sender::new(false),
        }
    }

    /// The publisher's codec configuration; while its frames are held back (the slate plays),
    /// it takes effect when the publisher takes over.
    pub fn set_config(&self, kind: TrackKind, config: TrackConfig) {
        let mut feed = self.feed.lock().expect("feed lock");
        if feed.slate.is_some() || feed.publisher_rejoins {
            feed.pending_configs.retain(|(k, _)| *k != kind);
            feed.pending_configs.push((kind, config));
            return;
        }
        drop(feed);
        self.apply_config(kind, config);
    }

    fn apply_config(&self, kind: TrackKind, config: TrackConfig) {
        let sender = match kind {
            TrackKind::Video => &self.video,
            TrackKind::Audio => &self.audio,
        };
        sender.send_replace(Some(Arc::new(config)));
    }

    /// Publishes one of the publisher's frames to every subscriber; never waits. Held back
    /// (dropped) while the slate must still show, and after the slate or a reconnection until a
    /// keyframe, which then continues the stream's timeline after a discontinuity.
    pub fn publish(&self, mut frame: MediaFrame) {
        let mut feed = self.feed.lock().expect("feed lock");
        feed.publisher_last = Some(frame.arrival);
        if let Some((since, min_display)) = feed.slate
            && frame.arrival.saturating_duration_since(since) < min_display
        {
            return;
        }
        if feed.slate.is_some() || feed.publisher_rejoins {
            if !(frame.kind == TrackKind::Video && frame.keyframe) {
                return;
            }
            feed.offset_ms = feed.joining_dts(frame.arrival) - frame.dts_ms;
            feed.discontinuity = feed.last_sent.is_some();
            feed.publisher_rejoins = false;
            if feed.slate.take().is_some() {
                self.slate.send_replace(None);
            }
            for (kind, config) in std::mem::take(&mut feed.pending_configs) {
                self.apply_config(kind, config);
            }
        }
        frame.dts_ms += feed.offset_ms;
        frame.pts_ms += feed.offset_ms;
        self.send(&mut feed, frame);
    }

    fn send(&self, feed: &mut Feed, mut frame: MediaFrame) {
        frame.discontinuity = std::mem::take(&mut feed.discontinuity);
        if feed.last_sent.is_none_or(|(dts, _)| frame.dts_ms >= dts) {
            feed.last_sent = Some((frame.dts_ms, frame.arrival));
        }
        // An error only means nobody is subscribed.
        let _ = self.frames.send(Arc::new(frame));
    }

    /// A publisher reconnected to this stream (its session): its timestamps start anew, so its
    /// frames join at its first keyframe, after a discontinuity.
    pub fn publisher_rejoins(&self) {
        self.feed.lock().expect("feed lock").publisher_rejoins = true;
    }

    /// When the publisher's last frame arrived.
    pub fn publisher_last_frame(&self) -> Option<Instant> {
        self.feed.lock().expect("feed lock").publisher_last
    }

    pub fn set_failover(&self, settings: Option<SlateSettings>) {
        self.failover.send_replace(settings);
    }

    pub fn failover(&self) -> Option<SlateSettings> {
        *self.failover.borrow()
    }

    /// Puts the slate on the air (unless it is already, or a publisher's frames arrived
    /// within `quiet_for`). The slate continues the timeline right after the last frame sent:
    /// the decode time of its first frame, and when that last frame was sent (the slate catches
    /// up from there at once, so players get it as soon as it is on the air).
    pub fn begin_slate(
        &self,
        quiet_for: std::time::Duration,
        min_display: std::time::Duration,
    ) -> Option<(i64, Instant)> {
        let now = Instant::now();
        let mut feed = self.feed.lock().expect("feed lock");
        let quiet = feed.publisher_last.is_none_or(|last| now.saturating_duration_since(last) >= quiet_for);
        if feed.slate.is_some() || !quiet {
            return None;
        }
        feed.slate = Some((now, min_display));
        feed.discontinuity = true;
        let start = match feed.last_sent {
            Some((dts, at)) => (dts + SLATE_GAP_MS, at),
            None => (0, now),
        };
        self.slate.send_replace(Some(SlateShowing { since: now, since_wall: time::OffsetDateTime::now_utc() }));
        Some(start)
    }

    /// Publishes a frame of the slate; false once the slate is off the air (the publisher took
    /// over), when the slate should stop.
    pub fn publish_slate(&self, frame: MediaFrame) -> bool {
        let mut feed = self.feed.lock().expect("feed lock");
        if feed.slate.is_none() {
            return false;
        }
        self.send(&mut feed, frame);
        true
    }

    /// Takes the slate off the air without a publisher (its maximum display is over).
    pub fn end_slate(&self) {
        let mut feed = self.feed.lock().expect("feed lock");
        if feed.slate.take().is_some() {
            feed.publisher_rejoins = true;
            self.slate.send_replace(None);
        }
    }

    /// `Some` while the slate is on the air.
    pub fn slate_showing(&self) -> watch::Receiver<Option<SlateShowing>> {
        self.slate.subscribe()
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

    /// A rendition's view: this hub's frames and codec configurations, with the timed metadata
    /// and ad breaks of `stream`'s hub (a transcoded rendition carries its stream's).
    pub fn subscribe_with(&self, stream: &Hub) -> Subscription {
        let own = self.subscribe();
        let of_stream = stream.subscribe();
        Subscription {
            frames: own.frames,
            video: own.video,
            audio: own.audio,
            metadata: of_stream.metadata,
            ads: of_stream.ads,
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
            discontinuity: false,
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
    fn the_slate_holds_the_stream_and_a_publisher_rejoins_at_a_keyframe_on_the_same_timeline() {
        let hub = Hub::new();
        let mut viewer = hub.subscribe();
        hub.publish(frame(5000, true, 10));
        assert_eq!(viewer.frames.try_recv().unwrap().dts_ms, 5000);
        let min_display = std::time::Duration::from_millis(200);
        // Not after a frame just now; then on the air, joining after the last frame.
        assert_eq!(hub.begin_slate(std::time::Duration::from_secs(3), min_display), None);
        let (start, _) = hub.begin_slate(std::time::Duration::ZERO, min_display).unwrap();
        assert_eq!(start, 5033);
        assert!(hub.slate_showing().borrow().is_some());
        assert!(hub.publish_slate(frame(start, true, 10)));
        let first = viewer.frames.try_recv().unwrap();
        assert!(first.discontinuity && first.dts_ms == start);
        // The publisher comes back (a new connection: its timestamps start at 0): held back
        // during the minimum display, then taken at its keyframe.
        hub.publisher_rejoins();
        hub.publish(frame(0, true, 10));
        assert!(viewer.frames.try_recv().is_err());
        std::thread::sleep(min_display);
        hub.publish(frame(33, false, 10));
        assert!(viewer.frames.try_recv().is_err(), "not a keyframe");
        hub.publish(frame(66, true, 10));
        let rejoined = viewer.frames.try_recv().unwrap();
        assert!(rejoined.discontinuity && rejoined.dts_ms > start, "{rejoined:?}");
        assert!(hub.slate_showing().borrow().is_none());
        assert!(!hub.publish_slate(frame(start + 1000, true, 10)));
        hub.publish(frame(99, false, 10));
        let next = viewer.frames.try_recv().unwrap();
        assert!(!next.discontinuity && next.dts_ms == rejoined.dts_ms + 33);
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

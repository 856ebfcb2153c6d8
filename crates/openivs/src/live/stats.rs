//! Measurements of one incoming stream: what health GetStream reports, and the bitrates and
//! frame rate GetStreamSession reports.
//!
//! Health follows IVS's three values: `UNKNOWN` before any media arrived; `STARVING` when media
//! stopped progressing (the media clock did not advance for 3 s: frames with frozen timestamps
//! are no progress) or arrives far below the stream's own recent rate (the last 2 s bring less
//! than 30% of the average of the 20 s before them); `HEALTHY` otherwise. Every update is O(1).

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use super::hub::TrackKind;

const STALL: Duration = Duration::from_secs(3);
const RECENT_SECONDS: u64 = 2;
const BASELINE_SECONDS: u64 = 20;
const STARVING_RATIO: f64 = 0.3;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Health {
    Unknown,
    Healthy,
    Starving,
}

impl Health {
    pub fn wire_name(self) -> &'static str {
        match self {
            Health::Unknown => "UNKNOWN",
            Health::Healthy => "HEALTHY",
            Health::Starving => "STARVING",
        }
    }
}

#[derive(Debug, Default, Clone)]
struct Track {
    bytes: u64,
    frames: u64,
    first_dts: Option<i64>,
    last_dts: i64,
}

impl Track {
    fn add(&mut self, bytes: usize, dts_ms: i64) {
        self.bytes += bytes as u64;
        self.frames += 1;
        self.first_dts.get_or_insert(dts_ms);
        self.last_dts = self.last_dts.max(dts_ms);
    }
    fn span_seconds(&self) -> f64 {
        self.first_dts.map_or(0.0, |first| (self.last_dts - first) as f64 / 1000.0)
    }
    /// Bits per second over the media timeline.
    fn bitrate(&self) -> i64 {
        let span = self.span_seconds();
        if span <= 0.0 { 0 } else { (self.bytes as f64 * 8.0 / span) as i64 }
    }
}

/// The arrival-time window over which the ingest bitrate is judged.
const RATE_WINDOW: Duration = Duration::from_secs(5);
/// Media time in the window is trusted up to this many times the arrival time it took: a
/// publisher catching up after a stall sends more media than wall-clock time (that is its own
/// rate, not an overrun), but timestamps that race ahead must not hide bytes.
const MEDIA_TIME_TRUST: f64 = 2.0;

#[derive(Debug)]
pub struct IngestStats {
    origin: Instant,
    /// When the media clock last advanced (frames with frozen timestamps are not progress).
    last_media: Option<Instant>,
    /// The furthest decode timestamp seen: the stream's media clock, never going back.
    media_clock: Option<i64>,
    /// (arrival, media clock then, bytes) of every message of the last [`RATE_WINDOW`], and
    /// the bytes they add up to.
    rate_window: VecDeque<(Instant, i64, usize)>,
    rate_window_bytes: usize,
    /// Bytes received per wall-clock second (index since `origin`), the last few dozen seconds.
    per_second: VecDeque<(u64, u64)>,
    video: Track,
    audio: Track,
    /// The last video keyframe's decode time, and the interval before it (ms).
    last_keyframe_dts: Option<i64>,
    keyframe_interval_ms: Option<i64>,
}

impl IngestStats {
    pub fn new(now: Instant) -> IngestStats {
        IngestStats {
            origin: now,
            last_media: None,
            media_clock: None,
            rate_window: VecDeque::new(),
            rate_window_bytes: 0,
            per_second: VecDeque::new(),
            video: Track::default(),
            audio: Track::default(),
            last_keyframe_dts: None,
            keyframe_interval_ms: None,
        }
    }

    /// A video keyframe at decode time `dts_ms` (the keyframe interval IVS reports).
    pub fn on_keyframe(&mut self, dts_ms: i64) {
        if let Some(last) = self.last_keyframe_dts.filter(|last| dts_ms > *last) {
            self.keyframe_interval_ms = Some(dts_ms - last);
        }
        self.last_keyframe_dts = Some(dts_ms);
    }

    /// Seconds between the last two keyframes (0 until there were two).
    pub fn keyframe_interval_seconds(&self) -> f64 {
        self.keyframe_interval_ms.map_or(0.0, |ms| ms as f64 / 1000.0)
    }

    /// Counts a message of `bytes` received from the publisher, whatever it carries: the
    /// bitrate limit is judged on everything sent. O(1) per message (amortised).
    pub fn on_received(&mut self, now: Instant, bytes: usize) {
        let second = now.duration_since(self.origin).as_secs();
        match self.per_second.back_mut() {
            Some((s, total)) if *s == second => *total += bytes as u64,
            _ => self.per_second.push_back((second, bytes as u64)),
        }
        while self.per_second.front().is_some_and(|(s, _)| *s + BASELINE_SECONDS + RECENT_SECONDS + 2 < second) {
            self.per_second.pop_front();
        }
        self.rate_window.push_back((now, self.media_clock.unwrap_or(0), bytes));
        self.rate_window_bytes += bytes;
        while let Some(&(arrival, _, old_bytes)) = self.rate_window.front() {
            if now.duration_since(arrival) <= RATE_WINDOW {
                break;
            }
            self.rate_window.pop_front();
            self.rate_window_bytes -= old_bytes;
        }
    }

    /// A media frame (already counted by [`IngestStats::on_received`]). O(1).
    pub fn on_media(&mut self, now: Instant, kind: TrackKind, bytes: usize, dts_ms: i64) {
        if self.media_clock.is_none_or(|clock| dts_ms > clock) {
            self.media_clock = Some(dts_ms);
            self.last_media = Some(now);
        }
        match kind {
            TrackKind::Video => self.video.add(bytes, dts_ms),
            TrackKind::Audio => self.audio.add(bytes, dts_ms),
        }
    }

    /// Bits per second received over the last few seconds, every byte counted. The time they
    /// cover is the media time they carry, trusted between the arrival time they took and
    /// [`MEDIA_TIME_TRUST`] times it: a burst after a stall is judged at the stream's own rate,
    /// while frozen or racing timestamps cannot make bytes disappear. 0 until a second passed.
    pub fn media_bitrate(&self) -> f64 {
        let (Some(first), Some(last)) = (self.rate_window.front(), self.rate_window.back()) else {
            return 0.0;
        };
        let arrival_ms = last.0.duration_since(first.0).as_secs_f64() * 1000.0;
        if arrival_ms < 1000.0 {
            return 0.0;
        }
        let media_ms = (last.1 - first.1) as f64;
        let span_ms = media_ms.clamp(arrival_ms, arrival_ms * MEDIA_TIME_TRUST);
        self.rate_window_bytes as f64 * 8.0 * 1000.0 / span_ms
    }

    pub fn has_media(&self) -> bool {
        self.last_media.is_some()
    }

    /// Time since the media clock last advanced (since the stream began, when it never has).
    pub fn idle(&self, now: Instant) -> Duration {
        now.duration_since(self.last_media.unwrap_or(self.origin))
    }

    fn bytes_between(&self, from_second: u64, to_second: u64) -> u64 {
        self.per_second.iter().filter(|(s, _)| *s >= from_second && *s < to_second).map(|(_, b)| b).sum()
    }

    pub fn health(&self, now: Instant) -> Health {
        let Some(last) = self.last_media else { return Health::Unknown };
        if now.duration_since(last) >= STALL {
            return Health::Starving;
        }
        let current = now.duration_since(self.origin).as_secs();
        if current >= RECENT_SECONDS + BASELINE_SECONDS {
            let recent = self.bytes_between(current - RECENT_SECONDS, current) as f64 / RECENT_SECONDS as f64;
            let start = current - RECENT_SECONDS - BASELINE_SECONDS;
            let baseline = self.bytes_between(start, current - RECENT_SECONDS) as f64 / BASELINE_SECONDS as f64;
            if baseline > 0.0 && recent < STARVING_RATIO * baseline {
                return Health::Starving;
            }
        }
        Health::Healthy
    }

    pub fn video_bitrate(&self) -> i64 {
        self.video.bitrate()
    }

    pub fn audio_bitrate(&self) -> i64 {
        self.audio.bitrate()
    }

    /// Frames per second over the media timeline.
    pub fn video_framerate(&self) -> f64 {
        let span = self.video.span_seconds();
        if span <= 0.0 || self.video.frames < 2 { 0.0 } else { (self.video.frames - 1) as f64 / span }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn health_follows_the_stream() {
        let start = Instant::now();
        let mut stats = IngestStats::new(start);
        assert_eq!(stats.health(start), Health::Unknown);
        // 30 s at 30 fps, 10 kB per frame.
        for i in 0..900u64 {
            let now = start + Duration::from_millis(i * 1000 / 30);
            stats.on_received(now, 10_000);
            stats.on_media(now, TrackKind::Video, 10_000, (i * 1000 / 30) as i64);
        }
        let end = start + Duration::from_secs(30);
        assert_eq!(stats.health(end), Health::Healthy);
        assert!((stats.video_framerate() - 30.0).abs() < 0.2, "{}", stats.video_framerate());
        assert!((stats.video_bitrate() - 2_400_000).abs() < 20_000, "{}", stats.video_bitrate());
        assert!((stats.media_bitrate() - 2_400_000.0).abs() < 50_000.0, "{}", stats.media_bitrate());
        // It stalls.
        assert_eq!(stats.health(end + Duration::from_secs(4)), Health::Starving);
        // It trickles at a tenth of its rate.
        let mut stats_trickle = stats;
        for i in 0..90u64 {
            let now = end + Duration::from_millis(i * 1000 / 30);
            stats_trickle.on_received(now, 1_000);
            stats_trickle.on_media(now, TrackKind::Video, 1_000, 30_000 + (i * 1000 / 30) as i64);
        }
        assert_eq!(stats_trickle.health(end + Duration::from_millis(3000)), Health::Starving);
    }

    #[test]
    fn every_byte_counts_whatever_the_timestamps() {
        let start = Instant::now();
        // 10 s at 30 fps, 10 kB per frame (2.4 Mbit/s), with frozen timestamps.
        let mut frozen = IngestStats::new(start);
        for i in 0..300u64 {
            let now = start + Duration::from_millis(i * 1000 / 30);
            frozen.on_received(now, 10_000);
            frozen.on_media(now, TrackKind::Video, 10_000, 0);
        }
        let end = start + Duration::from_secs(10);
        assert!((frozen.media_bitrate() - 2_400_000.0).abs() < 100_000.0, "{}", frozen.media_bitrate());
        // No progress on the media clock: starving, then idle.
        assert_eq!(frozen.health(end), Health::Starving);
        assert!(frozen.idle(end) >= Duration::from_secs(9));
        // Timestamps racing ahead (an hour per frame) hide at most half the bytes.
        let mut racing = IngestStats::new(start);
        for i in 0..300u64 {
            let now = start + Duration::from_millis(i * 1000 / 30);
            racing.on_received(now, 10_000);
            racing.on_media(now, TrackKind::Video, 10_000, (i * 3_600_000) as i64);
        }
        assert!(racing.media_bitrate() >= 1_150_000.0, "{}", racing.media_bitrate());
        // A burst after a stall (3 s of media arriving in 0.3 s) is judged at the stream's rate.
        let mut burst = IngestStats::new(start);
        let mut dts = 0i64;
        for i in 0..240u64 {
            let now = start + Duration::from_millis(i * 1000 / 30);
            burst.on_received(now, 10_000);
            burst.on_media(now, TrackKind::Video, 10_000, dts);
            dts += 33;
        }
        let resumed = start + Duration::from_secs(11);
        for i in 0..90u64 {
            let now = resumed + Duration::from_millis(i * 3);
            burst.on_received(now, 10_000);
            burst.on_media(now, TrackKind::Video, 10_000, dts);
            dts += 33;
        }
        assert!(burst.media_bitrate() < 2_400_000.0 * 1.25, "{}", burst.media_bitrate());
    }
}

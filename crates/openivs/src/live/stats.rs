//! Measurements of one incoming stream: what health GetStream reports, and the bitrates and
//! frame rate GetStreamSession reports.
//!
//! Health follows IVS's three values: `UNKNOWN` before any media arrived; `STARVING` when media
//! stopped arriving (nothing for 3 s) or arrives far below the stream's own recent rate (the last
//! 2 s bring less than 30% of the average of the 20 s before them); `HEALTHY` otherwise.

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

/// The media-time window over which the ingest bitrate is judged.
const MEDIA_WINDOW_MS: i64 = 5000;

#[derive(Debug)]
pub struct IngestStats {
    origin: Instant,
    last_media: Option<Instant>,
    /// (dts, bytes) of the frames of the last [`MEDIA_WINDOW_MS`] of media time.
    media_window: VecDeque<(i64, usize)>,
    /// Bytes received per wall-clock second (index since `origin`), the last few dozen seconds.
    per_second: VecDeque<(u64, u64)>,
    video: Track,
    audio: Track,
}

impl IngestStats {
    pub fn new(now: Instant) -> IngestStats {
        IngestStats {
            origin: now,
            last_media: None,
            media_window: VecDeque::new(),
            per_second: VecDeque::new(),
            video: Track::default(),
            audio: Track::default(),
        }
    }

    pub fn on_media(&mut self, now: Instant, kind: TrackKind, bytes: usize, dts_ms: i64) {
        self.last_media = Some(now);
        let second = now.duration_since(self.origin).as_secs();
        match self.per_second.back_mut() {
            Some((s, total)) if *s == second => *total += bytes as u64,
            _ => self.per_second.push_back((second, bytes as u64)),
        }
        while self.per_second.front().is_some_and(|(s, _)| *s + BASELINE_SECONDS + RECENT_SECONDS + 2 < second) {
            self.per_second.pop_front();
        }
        match kind {
            TrackKind::Video => self.video.add(bytes, dts_ms),
            TrackKind::Audio => self.audio.add(bytes, dts_ms),
        }
        self.media_window.push_back((dts_ms, bytes));
        let newest = self.media_window.iter().map(|(dts, _)| *dts).max().unwrap_or(dts_ms);
        while self.media_window.front().is_some_and(|(dts, _)| newest - dts > MEDIA_WINDOW_MS) {
            self.media_window.pop_front();
        }
    }

    /// Bits per second over the last few seconds of *media time*: what the encoder sends, not
    /// how the network delivered it (a publisher catching up after a stall sends a burst, at
    /// the stream's own rate in media time).
    pub fn media_bitrate(&self) -> f64 {
        let (Some(first), Some(last)) =
            (self.media_window.iter().map(|(d, _)| *d).min(), self.media_window.iter().map(|(d, _)| *d).max())
        else {
            return 0.0;
        };
        if last - first < 1000 {
            return 0.0;
        }
        let bytes: usize = self.media_window.iter().map(|(_, b)| b).sum();
        bytes as f64 * 8.0 * 1000.0 / (last - first) as f64
    }

    pub fn has_media(&self) -> bool {
        self.last_media.is_some()
    }

    /// Time since the last media arrived (since the stream began, when none has).
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
            stats_trickle.on_media(now, TrackKind::Video, 1_000, 30_000 + (i * 1000 / 30) as i64);
        }
        assert_eq!(stats_trickle.health(end + Duration::from_millis(3000)), Health::Starving);
    }
}

//! What comes out of the transcoder: one MPEG-TS carrying every encoded rendition, demuxed
//! into one hub per rendition (its own codec configurations and frames), from which that
//! rendition's packager works as the source's works from the stream's hub. Each frame carries
//! the source's timestamps (the transcoder keeps them) and the arrival of the source frame it
//! was made of, which is how far the transcoder is behind is measured.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use openivs_media::ts_demux::{self, AccessUnit, AccessUnits, TsDemuxer};
use openivs_media::video::{VideoCoding, VideoRecord};

use super::ffmpeg::Outputs;
use super::input::Arrivals;
use crate::live::hub::{Hub, MediaFrame, TrackConfig, TrackKind};

const TIMESTAMP_WRAP: u64 = 1 << 33;

/// The renditions' hubs, fed from the transcoder's output.
pub struct RenditionFeeds {
    demuxer: TsDemuxer,
    outputs: Outputs,
    hubs: HashMap<String, Arc<Hub>>,
    arrivals: Arc<Arrivals>,
    access_units: AccessUnits,
    /// How far behind the source the newest video frame came out.
    pub lag: Duration,
    /// Video frames that came out (until one has, `lag` says nothing).
    pub video_frames: u64,
}

impl RenditionFeeds {
    pub fn new(outputs: Outputs, hubs: HashMap<String, Arc<Hub>>, arrivals: Arc<Arrivals>) -> RenditionFeeds {
        RenditionFeeds {
            demuxer: TsDemuxer::new(),
            outputs,
            hubs,
            arrivals,
            access_units: AccessUnits::new(),
            lag: Duration::ZERO,
            video_frames: 0,
        }
    }

    /// Takes the transcoder's output as it comes.
    pub fn push(&mut self, bytes: &[u8]) {
        self.demuxer.push(bytes);
        while let Some(pes) = self.demuxer.next_pes() {
            self.on_pes(pes);
        }
    }

    /// The source's media time (ms) of a 90 kHz timestamp, which wraps every 26.5 hours in
    /// MPEG-TS while the source's does not: the value nearest the source's newest frame.
    fn media_ms(&self, ticks: u64) -> i64 {
        let reference = self.arrivals.newest_pts().map(|ms| ms.max(0) as u64 * 90);
        let nearest = ts_demux::unwrap_timestamp(reference, ticks % TIMESTAMP_WRAP);
        (nearest as f64 / 90.0).round() as i64
    }

    fn on_pes(&mut self, pes: ts_demux::Pes) {
        let Some((name, _)) = self.outputs.of_pid(pes.pid) else { return };
        let Some(hub) = self.hubs.get(name).cloned() else { return };
        let Some(pts) = pes.pts else { return };
        let (arrival, arrival_wall) =
            self.arrivals.of(self.media_ms(pts)).unwrap_or_else(|| (Instant::now(), time::OffsetDateTime::now_utc()));
        let frame = |kind, dts_ms, pts_ms, keyframe, data: Vec<u8>| MediaFrame {
            kind,
            dts_ms,
            pts_ms,
            keyframe,
            data: Bytes::from(data),
            arrival,
            arrival_wall,
            discontinuity: false,
        };
        for unit in self.access_units.of(&pes) {
            match unit {
                AccessUnit::VideoConfiguration { record } => {
                    let Ok(parsed) = VideoRecord::parse(VideoCoding::Avc, &record) else { continue };
                    hub.set_config(TrackKind::Video, TrackConfig::video(&parsed, record.into()));
                }
                AccessUnit::Video { pts, dts, keyframe, sample } => {
                    self.lag = arrival.elapsed();
                    self.video_frames += 1;
                    let (pts_ms, dts_ms) = (self.media_ms(pts), self.media_ms(dts));
                    hub.publish(frame(TrackKind::Video, dts_ms, pts_ms, keyframe, sample));
                }
                AccessUnit::AudioConfiguration(config) => hub.set_config(
                    TrackKind::Audio,
                    TrackConfig::audio(&config, Bytes::copy_from_slice(&config.to_bytes())),
                ),
                AccessUnit::Audio { pts, frame: raw } => {
                    let pts_ms = self.media_ms(pts);
                    hub.publish(frame(TrackKind::Audio, pts_ms, pts_ms, true, raw));
                }
            }
        }
    }
}

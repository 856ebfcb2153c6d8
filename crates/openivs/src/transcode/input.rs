//! What the transcoder is fed: the source hub's frames as an FLV stream (sequence headers
//! whenever a configuration changes, then the frames with their own timestamps, which the
//! transcoder keeps), and a log of when each source frame arrived, so the renditions' frames
//! carry the arrival of the source frame they were made of.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use openivs_media::flv;

use crate::live::hub::{MediaFrame, TrackConfig, TrackKind};

/// Source frames remembered for [`Arrivals::of`]: 20 s of 60 fps video.
const ARRIVALS_KEPT: usize = 1200;

/// When source video frames arrived, by presentation time.
#[derive(Default)]
pub struct Arrivals {
    frames: Mutex<VecDeque<(i64, Instant, time::OffsetDateTime)>>,
}

impl Arrivals {
    fn note(&self, frame: &MediaFrame) {
        let mut frames = self.frames.lock().expect("arrivals lock");
        if frames.len() >= ARRIVALS_KEPT {
            frames.pop_front();
        }
        frames.push_back((frame.pts_ms, frame.arrival, frame.arrival_wall));
    }

    /// The presentation time of the newest source frame fed.
    pub fn newest_pts(&self) -> Option<i64> {
        self.frames.lock().expect("arrivals lock").back().map(|(pts, ..)| *pts)
    }

    /// When the source frame at (or just before) `pts_ms` arrived.
    pub fn of(&self, pts_ms: i64) -> Option<(Instant, time::OffsetDateTime)> {
        let frames = self.frames.lock().expect("arrivals lock");
        // (Frames come in decode order, so presentation times are nearly sorted: look back a little.)
        frames
            .iter()
            .rev()
            .filter(|(pts, ..)| *pts <= pts_ms + 1)
            .take(8)
            .max_by_key(|(pts, ..)| *pts)
            .map(|(_, arrival, wall)| (*arrival, *wall))
    }
}

/// Turns source frames into FLV bytes.
pub struct FlvInput {
    video: Option<Arc<TrackConfig>>,
    audio: Option<Arc<TrackConfig>>,
    header_written: bool,
    /// Frames go in from a keyframe on (what comes before cannot be decoded).
    started: bool,
    pub arrivals: Arc<Arrivals>,
}

impl FlvInput {
    pub fn new(arrivals: Arc<Arrivals>) -> FlvInput {
        FlvInput { video: None, audio: None, header_written: false, started: false, arrivals }
    }

    /// Starts again at the next keyframe (after frames were dropped, or for a new process).
    pub fn restart(&mut self, new_process: bool) {
        self.started = false;
        if new_process {
            self.header_written = false;
            self.video = None;
            self.audio = None;
        }
    }

    /// The bytes that carry `frame` (with the sequence headers of configurations that changed);
    /// empty while waiting for a keyframe.
    pub fn frame(
        &mut self,
        frame: &MediaFrame,
        video: Option<&Arc<TrackConfig>>,
        audio: Option<&Arc<TrackConfig>>,
        out: &mut Vec<u8>,
    ) {
        if !self.started {
            if !(frame.kind == TrackKind::Video && frame.keyframe && video.is_some()) {
                return;
            }
            self.started = true;
        }
        if !self.header_written {
            out.extend_from_slice(&flv::file_header());
            self.header_written = true;
        }
        let timestamp = frame.dts_ms.clamp(0, i64::from(u32::MAX)) as u32;
        if let Some(config) = video
            && self.video.as_ref().is_none_or(|current| !Arc::ptr_eq(current, config))
        {
            flv::write_tag(flv::TAG_VIDEO, timestamp, &flv::avc_body(None, &config.config), out);
            self.video = Some(config.clone());
        }
        if let Some(config) = audio
            && self.audio.as_ref().is_none_or(|current| !Arc::ptr_eq(current, config))
        {
            flv::write_tag(flv::TAG_AUDIO, timestamp, &flv::aac_body(true, &config.config), out);
            self.audio = Some(config.clone());
        }
        match frame.kind {
            TrackKind::Video => {
                let cts = (frame.pts_ms - frame.dts_ms) as i32;
                flv::write_tag(
                    flv::TAG_VIDEO,
                    timestamp,
                    &flv::avc_body(Some((frame.keyframe, cts)), &frame.data),
                    out,
                );
                self.arrivals.note(frame);
            }
            TrackKind::Audio if self.audio.is_some() => {
                flv::write_tag(flv::TAG_AUDIO, timestamp, &flv::aac_body(false, &frame.data), out);
            }
            TrackKind::Audio => {}
        }
    }
}

//! What comes out of the transcoder: one MPEG-TS carrying every encoded rendition, demuxed
//! into one hub per rendition (its own codec configurations and frames), from which that
//! rendition's packager works as the source's works from the stream's hub. Each frame carries
//! the source's timestamps (the transcoder keeps them) and the arrival of the source frame it
//! was made of, which is how far the transcoder is behind is measured.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use openivs_media::aac::AudioSpecificConfig;
use openivs_media::h264::{DecoderConfiguration, SequenceParameterSet};
use openivs_media::ts_demux::{self, TsDemuxer};

use super::ffmpeg::{Outputs, Track};
use super::input::Arrivals;
use crate::live::hub::{Hub, MediaFrame, TrackConfig, TrackKind};

const TIMESTAMP_WRAP: u64 = 1 << 33;

/// The renditions' hubs, fed from the transcoder's output.
pub struct RenditionFeeds {
    demuxer: TsDemuxer,
    outputs: Outputs,
    hubs: HashMap<String, Arc<Hub>>,
    arrivals: Arc<Arrivals>,
    parameter_sets: HashMap<u16, (Vec<u8>, Vec<u8>)>,
    audio_configs: HashMap<u16, AudioSpecificConfig>,
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
            parameter_sets: HashMap::new(),
            audio_configs: HashMap::new(),
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
        let Some((name, track)) = self.outputs.of_pid(pes.pid).cloned() else { return };
        let Some(hub) = self.hubs.get(&name).cloned() else { return };
        let Some(pts) = pes.pts else { return };
        let pts_ms = self.media_ms(pts);
        let dts_ms = pes.dts.map_or(pts_ms, |dts| self.media_ms(dts));
        let (arrival, arrival_wall) =
            self.arrivals.of(pts_ms).unwrap_or_else(|| (Instant::now(), time::OffsetDateTime::now_utc()));
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
        match track {
            Track::Video => {
                let picture = ts_demux::picture(&pes.data);
                if let (Some(sps), Some(pps)) = (picture.sps, picture.pps)
                    && self.parameter_sets.get(&pes.pid) != Some(&(sps.clone(), pps.clone()))
                {
                    let Ok(parsed) = SequenceParameterSet::parse(&sps) else { return };
                    let record = DecoderConfiguration::record(&sps, &pps);
                    let Ok(avcc) = DecoderConfiguration::parse(&record) else { return };
                    hub.set_config(
                        TrackKind::Video,
                        TrackConfig {
                            codec: avcc.codec_string(),
                            config: record.into(),
                            width: parsed.width,
                            height: parsed.height,
                            sample_rate: 0,
                            channels: 0,
                        },
                    );
                    self.parameter_sets.insert(pes.pid, (sps, pps));
                }
                if picture.sample.is_empty() || !self.parameter_sets.contains_key(&pes.pid) {
                    return;
                }
                self.lag = arrival.elapsed();
                self.video_frames += 1;
                hub.publish(frame(TrackKind::Video, dts_ms, pts_ms, picture.keyframe, picture.sample));
            }
            Track::Audio => {
                let Ok(frames) = ts_demux::adts_frames(&pes.data) else { return };
                for (index, (config, raw)) in frames.into_iter().enumerate() {
                    if self.audio_configs.get(&pes.pid) != Some(&config) {
                        hub.set_config(
                            TrackKind::Audio,
                            TrackConfig {
                                codec: config.codec_string(),
                                config: Bytes::copy_from_slice(&config.to_bytes()),
                                width: 0,
                                height: 0,
                                sample_rate: config.sample_rate,
                                channels: config.channels,
                            },
                        );
                        self.audio_configs.insert(pes.pid, config.clone());
                    }
                    // Frames after the first of a PES follow it by 1024 samples each.
                    let offset = (index as u64 * 1024 * 1000 / u64::from(config.sample_rate.max(1))) as i64;
                    hub.publish(frame(TrackKind::Audio, pts_ms + offset, pts_ms + offset, true, raw.to_vec()));
                }
            }
        }
    }
}

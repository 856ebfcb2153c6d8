//! Multitrack video (Enhanced RTMP v2): the broadcaster encodes every rendition itself (OBS
//! Studio's Enhanced Broadcasting) and sends them as tracks of one publish. Track 0 is the
//! stream's own (the source, in the stream's hub); each further track gets a hub of its own and
//! becomes a rendition of the multivariant playlist, packaged on the source's cuts as a
//! transcoded rendition is (the guide requires the tracks' keyframes aligned). The stream's audio
//! goes into every track's hub.
//!
//! The channel's `multitrackInputConfiguration` rules: multitrack on a channel without it is
//! refused (`MultitrackInputNotAllowed`), a track larger than its `maximumResolution` too
//! (`InvalidMultitrackInputVideoTrackMediaProperties`); `REQUIRE` refuses a single-track publish
//! (decided in `publish`, at the first picture). A multitrack publish must use the authentication
//! GetClientConfiguration answered ([`Answered`]), and send the tracks it was answered, in order:
//! `GetClientConfigurationStreamKeyRequired`, `InvalidGetClientConfigurationStreamKey`,
//! `InvalidMultitrackInputTrackCount` and `InvalidMultitrackInputVideoTrackMediaProperties`
//! otherwise (sizes and codecs are compared; frame rates are not, being measured only later).
//!
//! Tracks after the first may be H.264 or HEVC (packaged in fMP4 as `hvc1`; multitrack channels
//! are fMP4 only); track 0 is H.264 (see `rtmp::on_video`).

use std::collections::BTreeMap;
use std::sync::Arc;

use bytes::Bytes;
use openivs_media::video::{VideoCoding, VideoRecord};
use openivs_model::resources::{MultitrackInputConfiguration, VideoConfiguration};

use super::client_configuration::Answered;
use super::publish::{EndCode, video_configuration};
use crate::live::hub::{Hub, MediaFrame, TrackConfig, TrackKind};

/// Tracks a publish may send (IVS's guide: up to 5 video tracks).
pub const MAX_TRACKS: usize = 5;

struct Track {
    name: String,
    hub: Arc<Hub>,
    record: VideoRecord,
    /// Bytes and media time received, for the track's measured bitrate and frame rate.
    bytes: u64,
    frames: u64,
    first_dts: Option<i64>,
    last_dts: i64,
}

/// The tracks after the first of a multitrack publish.
pub struct Tracks {
    configuration: MultitrackInputConfiguration,
    tracks: BTreeMap<u8, Track>,
    /// What the publish's stream name says about GetClientConfiguration.
    answered: Answered,
}

/// The largest picture (long edge, short edge) a channel's `maximumResolution` takes: SD 480p,
/// HD 720p, FULL_HD (the default) 1080p.
pub fn maximum_resolution(configuration: &MultitrackInputConfiguration) -> (u32, u32) {
    match configuration.maximum_resolution.as_deref() {
        Some("SD") => (854, 480),
        Some("HD") => (1280, 720),
        _ => (1920, 1080),
    }
}

/// A new track's rendition, for the playback to package: its name and hub.
pub struct NewRendition {
    pub name: String,
    pub hub: Arc<Hub>,
}

impl Tracks {
    pub fn new(configuration: MultitrackInputConfiguration) -> Tracks {
        Tracks { configuration, tracks: BTreeMap::new(), answered: Answered::Plain }
    }

    pub fn set_answered(&mut self, answered: Answered) {
        self.answered = answered;
    }

    /// Whether the publish's authentication is a forged or foreign GetClientConfiguration answer.
    pub fn answered_invalid(&self) -> bool {
        self.answered == Answered::Invalid
    }

    /// Checks the publish's tracks (track 0 is `first`, width × height, H.264) against the answer
    /// its authentication carries; a multitrack publish needs one.
    pub fn check_answered(&self, first: (u32, u32)) -> Result<(), EndCode> {
        let answered = match &self.answered {
            Answered::Plain if self.is_multitrack() => return Err(Some("GetClientConfigurationStreamKeyRequired")),
            Answered::Plain => return Ok(()),
            Answered::Invalid => return Err(Some("InvalidGetClientConfigurationStreamKey")),
            Answered::Tracks(answered) => answered,
        };
        if answered.len() != 1 + self.tracks.len() {
            return Err(Some("InvalidMultitrackInputTrackCount"));
        }
        let first = (first.0, first.1, VideoCoding::Avc);
        let sent = std::iter::once(first)
            .chain(self.tracks.values().map(|t| (t.record.width, t.record.height, t.record.coding)));
        if !sent
            .zip(answered)
            .all(|((width, height, coding), a)| (width, height, coding) == (a.width, a.height, a.coding))
        {
            return Err(Some("InvalidMultitrackInputVideoTrackMediaProperties"));
        }
        Ok(())
    }

    /// Whether the publish sent more than one track.
    pub fn is_multitrack(&self) -> bool {
        !self.tracks.is_empty()
    }

    /// Whether the channel takes multitrack video at all.
    pub fn accepts_multitrack(&self) -> bool {
        self.configuration.enabled
    }

    /// Whether the channel refuses single-track publishes.
    pub fn required(&self) -> bool {
        self.configuration.enabled && self.configuration.policy.as_deref() == Some("REQUIRE")
    }

    /// Whether a picture of this size is within the channel's `maximumResolution` (SD 480p,
    /// HD 720p, FULL_HD 1080p; the short edge and the long edge both count).
    pub fn within_maximum_resolution(&self, width: u32, height: u32) -> bool {
        let (long, short) = maximum_resolution(&self.configuration);
        width.max(height) <= long && width.min(height) <= short
    }

    /// A track's decoder configuration (avcC or hvcC, parsed). `Some`: a new rendition to package.
    pub fn configuration(
        &mut self,
        track: u8,
        config: &[u8],
        record: VideoRecord,
        audio: Option<TrackConfig>,
        frame_rate: f64,
    ) -> Result<Option<NewRendition>, EndCode> {
        if !self.configuration.enabled {
            return Err(Some("MultitrackInputNotAllowed"));
        }
        if !self.within_maximum_resolution(record.width, record.height) {
            return Err(Some("InvalidMultitrackInputVideoTrackMediaProperties"));
        }
        let video = TrackConfig::video(&record, Bytes::copy_from_slice(config));
        if let Some(known) = self.tracks.get_mut(&track) {
            known.hub.set_config(TrackKind::Video, video);
            known.record = record;
            return Ok(None);
        }
        if self.tracks.len() + 1 >= MAX_TRACKS {
            return Err(Some("InvalidMultitrackInputTrackCount"));
        }
        let hub = Arc::new(Hub::new());
        hub.set_config(TrackKind::Video, video);
        if let Some(audio) = audio {
            hub.set_config(TrackKind::Audio, audio);
        }
        let name = self.unique_name(format!("{}p{}", record.height, frame_rate.round() as u32));
        let known =
            Track { name: name.clone(), hub: hub.clone(), record, bytes: 0, frames: 0, first_dts: None, last_dts: 0 };
        self.tracks.insert(track, known);
        Ok(Some(NewRendition { name, hub }))
    }

    /// A rendition name not yet taken by the publish (two tracks of one size stay apart).
    fn unique_name(&self, name: String) -> String {
        let taken = |candidate: &str| self.tracks.values().any(|t| t.name == candidate);
        if !taken(&name) {
            return name;
        }
        (2..).map(|n| format!("{name}-{n}")).find(|candidate| !taken(candidate)).expect("a free name")
    }

    /// The tracks' renditions: (name, width, height, hub), in track order.
    pub fn renditions(&self) -> Vec<(String, u32, u32, Arc<Hub>)> {
        self.tracks.values().map(|t| (t.name.clone(), t.record.width, t.record.height, t.hub.clone())).collect()
    }

    /// Whether the track's configuration arrived (its frames can be decoded).
    pub fn has(&self, track: u8) -> bool {
        self.tracks.contains_key(&track)
    }

    /// A video frame of a track.
    pub fn frame(&mut self, track: u8, frame: MediaFrame) {
        let Some(known) = self.tracks.get_mut(&track) else { return };
        known.bytes += frame.data.len() as u64;
        known.frames += 1;
        known.first_dts.get_or_insert(frame.dts_ms);
        known.last_dts = frame.dts_ms;
        known.hub.publish(frame);
    }

    /// The stream's audio goes with every track.
    pub fn audio(&self, frame: &MediaFrame) {
        for track in self.tracks.values() {
            track.hub.publish(frame.clone());
        }
    }

    pub fn audio_configuration(&self, audio: &TrackConfig) {
        for track in self.tracks.values() {
            track.hub.set_config(TrackKind::Audio, audio.clone());
        }
    }

    /// The tracks' ingest configurations (GetStreamSession), `Track1` onwards.
    pub fn video_configurations(&self, encoder: &str) -> Vec<VideoConfiguration> {
        self.tracks
            .iter()
            .map(|(id, track)| {
                let seconds = (track.last_dts - track.first_dts.unwrap_or(track.last_dts)) as f64 / 1000.0;
                let (bitrate, frame_rate) = if seconds > 0.0 {
                    ((track.bytes as f64 * 8.0 / seconds) as i64, ((track.frames - 1) as f64 / seconds).round() as i64)
                } else {
                    (0, 0)
                };
                video_configuration(&track.record, encoder, bitrate, frame_rate, *id)
            })
            .collect()
    }

    /// The stream ended: so do the tracks' renditions.
    pub fn end(&self) {
        for track in self.tracks.values() {
            track.hub.end();
        }
    }
}

//! The HLS packager of one channel: subscribed to the channel's hub, it cuts the stream into
//! segments at keyframes (at the first keyframe after [`Packaging::segment_target`]: 0.9 s on
//! LOW latency channels, 1.9 s on NORMAL ones) and each segment into parts of at most a part
//! target (for low-latency HLS: 0.2 s unless configured, see [`part_target_for`]), muxes them
//! into MPEG-TS or fragmented MP4 (the channel's `containerFormat`), and keeps a window of them
//! in memory, from which the playback handlers answer. Every new part, segment or end bumps a
//! watch value, which blocking playlist reloads wait on.
//!
//! A part closes with the picture that fills it (when the next, a frame interval later, would
//! not fit), not when that next picture arrives, so it is in the playlist a frame interval
//! sooner. The audio that follows opens the next part, which a picture joins; but when that
//! picture is the keyframe of a new segment, the audio moves on with it into the new segment
//! (no segment ends in a sliver of audio), so while the next picture may start a segment the
//! playlist names no preload hint (the part it would name might never come) and a reader of the
//! segment as it is cut (a prefetch segment) is not given that audio yet: the bytes it reads are
//! the segment's own.
//!
//! What a publisher sends cannot make the window grow without bound: a segment that reaches
//! `playback_max_segment_duration` (of media time, or of arrival time when timestamps do not
//! advance) or `playback_max_segment_bytes` without a keyframe is cut anyway, a part is cut at
//! `playback_max_part_bytes`, and completed segments leave the playlist once it lists more than
//! [`WINDOW`] of media (or [`MAX_WINDOW_SEGMENTS`]), and memory once they have been out of it as
//! long again, or sooner past `playback_max_window_bytes`.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use bytes::Bytes;
use openivs_media::aac::AudioSpecificConfig;
use openivs_media::fmp4::{self, AAC_FRAME_SAMPLES, InitTracks, InitVideo, Sample, TrackRun};
use openivs_media::hls::AdSignals;
use openivs_media::id3;
use openivs_media::ts::{Tracks, TsMuxer, adts_header, annex_b_pieces};
use openivs_media::video::VideoRecord;
use openivs_model::timestamp;
use tokio::sync::{broadcast, watch};

use super::ad_breaks::AdMarker;
use crate::live::hub::{MediaFrame, MetadataSource, Subscription, TimedMetadata, TrackConfig, TrackKind};

/// Segments of LOW latency channels are cut at the first keyframe after this much media: short
/// segments keep players that fetch whole (prefetch) segments, as the IVS player does, close to
/// live when the broadcaster sends a keyframe every second (IVS's advice for low latency).
pub const SEGMENT_TARGET_LOW: Duration = Duration::from_millis(900);
/// Segments of NORMAL latency channels: about 2 s with IVS's recommended 2 s keyframe interval.
pub const SEGMENT_TARGET_NORMAL: Duration = Duration::from_millis(1900);
/// The longest `PART-TARGET`, in ms: a stream's part target before its frame rate is known,
/// and the most any stream gets.
const PART_TARGET_MAX_MS: i64 = 201;
/// Parts are cut this much short of the part duration configured
/// (`--playback-part-duration-ms`), so that a part of whole frames whose millisecond timestamps
/// step unevenly (33 and 34 ms at 30 fps) still counts as full.
const PART_SLACK_MS: i64 = 5;

/// The `PART-TARGET` (ms) of a stream whose frames (the pacing track's: video, or audio in an
/// audio-only rendition) follow each other by `frame_ms`, when parts are to last
/// `part_duration_ms` (100 to 200, the operator's choice): a part holds the fewest whole
/// frames lasting at least that (less [`PART_SLACK_MS`]), and its target is those frames plus
/// 1 ms for each and 1 ms to spare, never past [`PART_TARGET_MAX_MS`]. With 200 ms (the
/// default) parts hold 0.2 s at 25, 30, 50 and 60 fps, so segments of whole seconds split into
/// equal parts; with 100 ms they hold three frames at 30 fps (PART-TARGET 0.103 s). Every part
/// but a segment's last holds the same number of frames, so a hinted part lasts about the
/// target, as players that assume so (Shaka) need; a segment's short last part is never hinted
/// (it closes with the picture before the keyframe, see `OpenSegment::part_may_move`). Shorter
/// parts keep low-latency players closer to live (hls.js holds back PART-HOLD-BACK, three part
/// targets, behind the playlist's edge and does not catch up for time lost while it starts, and
/// a frame waits for its part to close before any player can fetch it) and leave them less
/// buffer against a stall (BENCHMARKS.md).
fn part_target_for(frame_ms: i64, part_duration_ms: u64) -> i64 {
    let frame_ms = frame_ms.clamp(1, PART_TARGET_MAX_MS);
    let fill_ms = (part_duration_ms as i64).clamp(1, PART_TARGET_MAX_MS) - PART_SLACK_MS;
    let frames = (fill_ms + frame_ms - 1) / frame_ms;
    (frames * (frame_ms + 1) + 1).min(PART_TARGET_MAX_MS)
}
/// Media the playlist lists: enough for players' hold-back and for delta updates (CAN-SKIP-UNTIL
/// is 6 target durations).
pub const WINDOW: Duration = Duration::from_secs(16);
/// Segments the playlist lists at most, however short they are.
pub const MAX_WINDOW_SEGMENTS: usize = 64;
/// Frames the bandwidth estimate looks back over at most (10 s of 120 fps video with audio).
const MAX_BANDWIDTH_FRAMES: usize = 2048;
/// 90 kHz timestamps start here, so PCR and DTS never go below zero.
const TIMESTAMP_OFFSET_MS: i64 = 1000;

/// How a channel's streams are packaged: from its `containerFormat` and `latencyMode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Packaging {
    pub container: Container,
    pub segment_target: Duration,
}

impl Packaging {
    /// LOW latency mode (its segments are cut at the LOW target).
    pub fn is_low_latency(&self) -> bool {
        self.segment_target == SEGMENT_TARGET_LOW
    }

    pub fn of_channel(container_format: &str, latency_mode: &str) -> Packaging {
        let segment_target = if latency_mode == "NORMAL" { SEGMENT_TARGET_NORMAL } else { SEGMENT_TARGET_LOW };
        Packaging { container: Container::of_channel(container_format), segment_target }
    }
}

/// The channel's `containerFormat`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Container {
    Ts,
    Fmp4,
}

impl Container {
    pub fn of_channel(container_format: &str) -> Container {
        if container_format == "FRAGMENTED_MP4" { Container::Fmp4 } else { Container::Ts }
    }
    /// The file extension of segments and parts.
    pub fn extension(self) -> &'static str {
        match self {
            Container::Ts => "ts",
            Container::Fmp4 => "m4s",
        }
    }
    pub fn media_type(self) -> &'static str {
        match self {
            Container::Ts => "video/mp2t",
            Container::Fmp4 => "video/mp4",
        }
    }
}

#[derive(Debug, Clone)]
pub struct StoredPart {
    pub duration: f64,
    pub data: Bytes,
    pub independent: bool,
}

#[derive(Debug, Clone)]
pub struct StoredSegment {
    pub sequence: u64,
    pub duration: f64,
    pub program_date_time: String,
    pub discontinuity: bool,
    /// The segment is its parts, back to back: stored once, served without copying.
    pub parts: Vec<StoredPart>,
    /// The stream the segment belongs to (segment URLs name it, so they are never reused).
    pub stream_id: Arc<str>,
    /// Ad-break signals at its start.
    pub ad: AdSignals,
}

/// The segment being cut.
#[derive(Debug)]
pub struct OpenSegment {
    pub sequence: u64,
    pub start_dts: i64,
    pub program_date_time: String,
    pub discontinuity: bool,
    pub parts: Vec<StoredPart>,
    pub stream_id: Arc<str>,
    pub ad: AdSignals,
    part_start_dts: i64,
    part_data: Vec<u8>,
    part_independent: bool,
    /// When the segment's first frame arrived, and the media bytes in it and in its open part.
    opened_at: Instant,
    bytes: usize,
    part_bytes: usize,
    /// The open part holds a picture already (the first one carries the parameter sets).
    part_has_video: bool,
    /// The open part holds timed metadata.
    part_has_metadata: bool,
    /// The last part closed with its last picture and the next picture may be the keyframe of
    /// a new segment, which would take the open part (audio so far) with it. Until a picture
    /// settles it, the playlist names no preload hint (which part comes next is not known) and
    /// a prefetch reader is not given the open part's bytes (they may end up in the next
    /// segment instead).
    pub part_may_move: bool,
}

impl OpenSegment {
    /// Whether a keyframe arriving now is the first picture of its part: the part is empty, or
    /// holds only the audio that followed the last part's last picture (which the keyframe
    /// joins). In an audio-only rendition such audio is a part of its own.
    fn keyframe_leads_part(&self, audio_only: bool) -> bool {
        self.part_bytes == 0 || !(audio_only || self.part_has_video)
    }
}

/// The open part's audio, taken out of a segment that a keyframe ends before any picture joined
/// that part: it plays with the keyframe's segment.
struct CarriedAudio {
    /// MPEG-TS: the part's bytes so far (its tables, then the audio); empty for fMP4, whose
    /// frames wait in the writer until the part closes.
    ts_data: Vec<u8>,
    fmp4_frames: Vec<Arc<MediaFrame>>,
    fmp4_emsgs: Vec<u8>,
    bytes: usize,
    has_metadata: bool,
}

/// What the playback handlers read.
#[derive(Debug, Default)]
pub struct PlaylistState {
    /// The completed segments the playlist lists, oldest first.
    pub segments: VecDeque<StoredSegment>,
    /// Segments that have left the playlist but are still served: RFC 8216 6.2.2 keeps a
    /// segment available for its duration plus that of the longest playlist that listed it
    /// (players probe old segments, and a playlist fetched just before the window moved still
    /// names them).
    retired: VecDeque<StoredSegment>,
    pub open: Option<OpenSegment>,
    pub next_sequence: u64,
    /// Discontinuities that have left the window (`EXT-X-DISCONTINUITY-SEQUENCE`).
    pub discontinuity_sequence: u64,
    pub ended: bool,
    pub ended_at: Option<Instant>,
    pub codecs: String,
    pub resolution: Option<(u32, u32)>,
    pub frame_rate: Option<f64>,
    /// `BANDWIDTH` (the peak segment bit rate) and `AVERAGE-BANDWIDTH`, bits per second.
    pub bandwidth: u64,
    pub average_bandwidth: u64,
    /// The next segment starts a new stream session.
    pending_discontinuity: bool,
    /// fMP4 initialisation segments of the streams in the window, by stream id.
    pub inits: Vec<(Arc<str>, Bytes)>,
    /// The post-roll ad break marked after the last segment when the stream ended.
    pub post_roll: AdSignals,
    /// `PART-TARGET` in ms, fixed by the first frame interval packaged (a playlist's part
    /// target never changes, whatever later streams do).
    part_target_ms: Option<i64>,
}

impl StoredSegment {
    /// The segment's bytes, as its parts' buffers (no copy).
    pub fn pieces(&self) -> Vec<Bytes> {
        self.parts.iter().map(|p| p.data.clone()).collect()
    }

    pub fn size(&self) -> usize {
        self.parts.iter().map(|p| p.data.len()).sum()
    }
}

impl PlaylistState {
    /// `PART-TARGET` in ms: no part lasts longer.
    pub fn part_target_ms(&self) -> i64 {
        self.part_target_ms.unwrap_or(PART_TARGET_MAX_MS)
    }

    /// The newest complete segment's sequence number, if any.
    pub fn last_complete(&self) -> Option<u64> {
        self.segments.back().map(|s| s.sequence)
    }

    /// Completed segment `sequence` of `stream_id`, listed or retired.
    pub fn segment(&self, stream_id: &str, sequence: u64) -> Option<&StoredSegment> {
        let matches = |s: &&StoredSegment| s.sequence == sequence && &*s.stream_id == stream_id;
        self.segments.iter().rev().find(matches).or_else(|| self.retired.iter().find(matches))
    }

    /// Whether segment `sequence` (and, with `part`, that part of it) is available.
    pub fn has(&self, sequence: u64, part: Option<usize>) -> bool {
        if self.segments.iter().any(|s| s.sequence == sequence) {
            return true;
        }
        match (part, &self.open) {
            (Some(part), Some(open)) => open.sequence == sequence && part < open.parts.len(),
            _ => false,
        }
    }

    /// `EXT-X-TARGETDURATION`: every segment's duration, rounded to the nearest second, fits
    /// under it (RFC 8216 4.3.3.1).
    pub fn target_duration(&self) -> u64 {
        let longest = self.segments.iter().map(|s| s.duration).fold(0.0, f64::max);
        (longest.round() as u64).max(1)
    }
}

/// Where a reader of a segment in progress has got to: the part it is in, and how many of that
/// part's bytes it has had (a part's bytes only ever grow while it is open, and are kept as they
/// are when it closes).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SegmentCursor {
    pub part: usize,
    pub offset: usize,
}

/// What a segment in progress has for a reader beyond its cursor.
#[derive(Debug)]
pub enum SegmentProgress {
    /// New bytes (possibly none yet), and whether the segment is now complete.
    Bytes { pieces: Vec<Bytes>, complete: bool },
    /// The segment has not begun yet (it is the one after the segment being cut).
    NotBegun,
    /// The segment will never (or no longer) be available: the stream ended first, another
    /// stream took the channel, or it left the window.
    Gone,
}

impl PlaylistState {
    /// The bytes of segment `sequence` of `stream_id` past `cursor`, which moves past them. The
    /// bytes read this way, end to end, are the segment's bytes.
    pub fn read_segment(&self, stream_id: &str, sequence: u64, cursor: &mut SegmentCursor) -> SegmentProgress {
        let mut take = |parts: &[StoredPart], open_part: Option<&[u8]>| {
            let mut pieces = Vec::new();
            while let Some(part) = parts.get(cursor.part) {
                if cursor.offset < part.data.len() {
                    pieces.push(part.data.slice(cursor.offset..));
                }
                cursor.part += 1;
                cursor.offset = 0;
            }
            if let Some(open_part) = open_part
                && cursor.offset < open_part.len()
            {
                pieces.push(Bytes::copy_from_slice(&open_part[cursor.offset..]));
                cursor.offset = open_part.len();
            }
            pieces
        };
        if let Some(segment) = self.segment(stream_id, sequence) {
            return SegmentProgress::Bytes { pieces: take(&segment.parts, None), complete: true };
        }
        match &self.open {
            Some(open) if &*open.stream_id == stream_id && !self.ended => {
                if open.sequence == sequence {
                    let open_part = (!open.part_may_move).then_some(open.part_data.as_slice());
                    SegmentProgress::Bytes { pieces: take(&open.parts, open_part), complete: false }
                } else if open.sequence + 1 == sequence {
                    SegmentProgress::NotBegun
                } else {
                    SegmentProgress::Gone
                }
            }
            _ => SegmentProgress::Gone,
        }
    }
}

/// Where a segment of the source rendition starts. The transcoded renditions cut theirs at the
/// same media times, with the same sequence numbers, dates and discontinuities, so a player can
/// switch renditions at any segment without a gap (their keyframes were forced on the
/// source's).
#[derive(Debug, Clone, PartialEq)]
pub struct Cut {
    /// The presentation time of the segment's first picture.
    pub pts_ms: i64,
    pub sequence: u64,
    pub date: time::OffsetDateTime,
    pub discontinuity: bool,
    /// Discontinuities before this segment in the stream (`EXT-X-DISCONTINUITY-SEQUENCE` of a
    /// playlist starting here).
    pub discontinuities_before: u64,
}

/// Cuts remembered: a minute of 0.9 s segments (renditions run a few seconds behind at most).
const CUTS_KEPT: usize = 64;

/// The newest segment starts of a rendition.
#[derive(Debug, Default)]
pub struct Cuts(std::sync::Mutex<VecDeque<Cut>>);

impl Cuts {
    fn push(&self, cut: Cut) {
        let mut cuts = self.0.lock().expect("cuts lock");
        if cuts.len() >= CUTS_KEPT {
            cuts.pop_front();
        }
        cuts.push_back(cut);
    }

    /// The newest cut at or before `pts_ms` numbered after `after`.
    pub fn at_or_before(&self, pts_ms: i64, after: Option<u64>) -> Option<Cut> {
        let cuts = self.0.lock().expect("cuts lock");
        cuts.iter().rev().find(|c| c.pts_ms <= pts_ms && after.is_none_or(|a| c.sequence > a)).cloned()
    }
}

/// A transcoded rendition's packager follows the source's cuts.
#[derive(Clone)]
pub struct Follow {
    pub cuts: Arc<Cuts>,
    /// The rendition has no video: segments start at the audio frame that reaches a cut.
    pub audio_only: bool,
}

/// How far (ms) a rendition's picture may be from the source's at a cut: the frame-rate filter
/// moves pictures onto its own grid (half a frame at 30 fps).
const CUT_TOLERANCE_MS: i64 = 20;

/// The playback state of one stream of a channel, shared by its packager and the playback
/// handlers.
pub struct ChannelPlayback {
    /// The playlists' id (the stream's id, and `_{rendition}` for a transcoded rendition):
    /// media files are named after it.
    pub id: Arc<str>,
    pub packaging: Packaging,
    /// A transcoded rendition's name (`480p30`, `audio_only`); `None` for the source.
    pub rendition: Option<String>,
    /// The source's: its transcoded renditions, best first, as they start.
    pub renditions: RwLock<Vec<Arc<ChannelPlayback>>>,
    /// The source's: whether the multivariant playlist lists the source itself (not on
    /// ADVANCED channels, once their renditions play).
    pub source_listed: bool,
    /// The source's: false while the transcoder is behind real time or down, when new
    /// multivariant playlists leave the renditions out.
    pub renditions_listed: std::sync::atomic::AtomicBool,
    /// The source's: how many transcoded renditions are coming (`usize::MAX` until the
    /// transcoder knows its ladder; 0: none).
    pub renditions_expected: std::sync::atomic::AtomicUsize,
    /// Where this playlist's segments started (the source's are followed by the renditions).
    pub cuts: Arc<Cuts>,
    pub state: RwLock<PlaylistState>,
    /// Bumped on every change (new part, segment, end); blocking reloads wait on it.
    pub changed: watch::Sender<u64>,
    /// Bumped on every frame packaged as well: readers of segments in progress wait on it.
    pub appended: watch::Sender<u64>,
    /// The media playlists as last rendered, for the `changed` version they show.
    pub rendered: Mutex<RenderedPlaylists>,
}

/// Media playlists as rendered for one version of a [`ChannelPlayback`]'s `changed`: every
/// viewer reloads the same playlist, which changes only when `changed` is bumped, so it is
/// rendered once per version and form rather than once per request (at a thousand viewers,
/// thousands of times a second). A form is a slot: low-latency or not, delta update or not.
#[derive(Default)]
pub struct RenderedPlaylists {
    version: u64,
    bodies: [Option<Bytes>; 4],
}

impl RenderedPlaylists {
    pub fn get(&self, version: u64, form: usize) -> Option<Bytes> {
        (self.version == version).then(|| self.bodies[form].clone()).flatten()
    }

    /// Keeps `body`, rendered from a state read after `version` was: the state it shows is at
    /// least that version's (newer, when the packager changed it in between; the next bump
    /// replaces it), never older.
    pub fn keep(&mut self, version: u64, form: usize, body: Bytes) {
        if version > self.version {
            *self = RenderedPlaylists { version, bodies: Default::default() };
        }
        if version == self.version {
            self.bodies[form] = Some(body);
        }
    }
}

impl ChannelPlayback {
    pub fn new(packaging: Packaging, id: Arc<str>) -> ChannelPlayback {
        ChannelPlayback {
            id,
            packaging,
            rendition: None,
            renditions: RwLock::default(),
            source_listed: true,
            renditions_listed: std::sync::atomic::AtomicBool::new(true),
            renditions_expected: std::sync::atomic::AtomicUsize::new(0),
            cuts: Arc::default(),
            state: RwLock::new(PlaylistState::default()),
            changed: watch::Sender::new(0),
            appended: watch::Sender::new(0),
            rendered: Mutex::default(),
        }
    }

    /// The short side of the rendition's picture (`None`: no picture yet, or audio only).
    pub fn short_side(&self) -> Option<u32> {
        self.state.read().expect("playlist lock").resolution.map(|(width, height)| width.min(height))
    }

    /// The source's: its transcoded renditions are known and each has a segment to play (or
    /// there will be none).
    pub fn renditions_ready(&self) -> bool {
        let expected = self.renditions_expected.load(std::sync::atomic::Ordering::SeqCst);
        let renditions = self.renditions.read().expect("renditions lock");
        expected == 0
            || !self.renditions_listed.load(std::sync::atomic::Ordering::SeqCst)
            || (renditions.len() >= expected
                && renditions.iter().all(|r| !r.state.read().expect("playlist lock").segments.is_empty()))
    }

    /// The source's: the renditions a new multivariant playlist offers, best first: the source
    /// (unless the channel type keeps it for itself and renditions play), then every transcoded
    /// rendition that has a segment, while the transcoder keeps up.
    pub fn offered(self: &Arc<Self>) -> Vec<Arc<ChannelPlayback>> {
        let mut offered = Vec::new();
        if self.renditions_listed.load(std::sync::atomic::Ordering::SeqCst) {
            for rendition in self.renditions.read().expect("renditions lock").iter() {
                let state = rendition.state.read().expect("playlist lock");
                if !state.segments.is_empty() && !state.ended {
                    offered.push(rendition.clone());
                }
            }
        }
        if self.source_listed || offered.is_empty() {
            offered.insert(0, self.clone());
        }
        offered
    }

    fn notify(&self) {
        self.changed.send_modify(|version| *version += 1);
        self.appended.send_modify(|version| *version += 1);
    }
}

/// How parts are written.
enum Writer {
    /// MPEG-TS: frames are muxed as they arrive, into the open part's bytes.
    Ts(TsMuxer),
    /// fMP4: frames wait for the end of their part, which becomes one fragment (after the
    /// part's `emsg` boxes of timed metadata).
    Fmp4 { frames: Vec<Arc<MediaFrame>>, fragment_sequence: u32, audio_time: Option<u64>, emsgs: Vec<u8> },
}

/// Muxing state of one packager run.
struct Packager {
    playback: Arc<ChannelPlayback>,
    /// The name of the feed being packaged (in segment and init names): the stream id, then,
    /// after each discontinuity (the failover slate, a publisher's comeback), `{stream id}.{n}`,
    /// since each feed has its own initialisation section.
    stream_id: Arc<str>,
    base_stream_id: Arc<str>,
    feeds: u32,
    writer: Writer,
    video: Option<(VideoRecord, Arc<TrackConfig>)>,
    audio: Option<AudioSpecificConfig>,
    audio_config: Option<Arc<TrackConfig>>,
    waiting_for_keyframe: bool,
    /// Every frame of the last 10 s of media: (decode time, bytes, is video).
    bytes_in_window: VecDeque<(i64, usize, bool)>,
    /// A part or segment was completed since the last notification.
    completed: bool,
    /// The last video frame's decode time, and the interval before it (the expected duration of
    /// the next one).
    last_video_dts: Option<i64>,
    video_frame_ms: i64,
    /// The stream's first frame: its decode time and the wall clock when it arrived.
    clock_anchor: Option<(i64, time::OffsetDateTime)>,
    /// The last frame packaged: its presentation time and when it arrived (timed metadata is
    /// placed at the media time of its arrival).
    last_frame: Option<(i64, Instant)>,
    /// Timed metadata that arrived before the first segment opened.
    early_metadata: Vec<Arc<TimedMetadata>>,
    /// Ids of the `emsg` boxes written (unique within the stream).
    emsg_id: u32,
    /// Where ad breaks start and end.
    ads: AdMarker,
    limits: crate::settings::Limits,
    /// A transcoded rendition's: the source's cuts, and the one the next segment starts at.
    follow: Option<Follow>,
    next_cut: Option<Cut>,
    /// Discontinuities so far (the source's, for its cuts).
    discontinuities: u64,
}

/// An ID3 tag holding only Apple's transport-stream timestamp (`PRIV`
/// `com.apple.streaming.transportStreamTimestamp`) of media time `pts_ms`, written where a player
/// may start (independent parts live; keyframe intervals in recordings). Players skip it as a
/// cue, but it makes hls.js create its metadata text track as soon as it starts playing:
/// Chromium empties a new track's cues once, just after it is created, so without it the
/// payloads of the first fragment with metadata that a viewer loads were lost.
pub fn timestamp_tag(pts_ms: i64) -> Vec<u8> {
    let timestamp = (ticks(pts_ms) & 0x1_ffff_ffff).to_be_bytes();
    id3::tag(&[id3::private(id3::APPLE_TIMESTAMP_OWNER, &timestamp)])
}

/// The ID3 tag of timed metadata: one `TXXX` frame, UTF-8, whose description names the source
/// as the IVS player's cues name their owner.
pub fn metadata_tag(metadata: &TimedMetadata) -> Vec<u8> {
    let owner = match metadata.source {
        MetadataSource::Api => METADATA_OWNER,
        MetadataSource::InBand => INBAND_METADATA_OWNER,
    };
    id3::tag(&[id3::txxx(owner, &metadata.text)])
}

/// The owners IVS gives timed metadata (PutMetadata, and in-band from the broadcaster).
pub const METADATA_OWNER: &str = "metadata.live-video.net";
pub const INBAND_METADATA_OWNER: &str = "inband.metadata.live-video.net";

/// Metadata arriving this long after the last frame is still placed at that frame's time plus
/// the wait, up to this much (a stalled stream does not push metadata far ahead).
const METADATA_LEAD_MS: i64 = 1000;

/// A stream time in ms as a 90 kHz MPEG timestamp (offset so it never goes below zero).
pub(crate) fn ticks(ms: i64) -> u64 {
    ((ms + TIMESTAMP_OFFSET_MS).max(0) as u64) * 90
}

/// Writes one frame into MPEG-TS: video as Annex B (with its parameter sets first when asked),
/// audio in ADTS. False when the track's configuration is not known yet (the frame is skipped).
pub(crate) fn write_ts_frame(
    muxer: &mut TsMuxer,
    frame: &MediaFrame,
    video: Option<&VideoRecord>,
    audio: Option<&AudioSpecificConfig>,
    with_parameter_sets: bool,
    out: &mut Vec<u8>,
) -> bool {
    match frame.kind {
        TrackKind::Video => {
            let Some(record) = video else { return false };
            let mut annex_b = Vec::with_capacity(16);
            annex_b_pieces(&frame.data, record, with_parameter_sets, &mut annex_b);
            muxer.write_video(ticks(frame.pts_ms), ticks(frame.dts_ms), frame.keyframe, &annex_b, out);
        }
        TrackKind::Audio => {
            let Some(asc) = audio else { return false };
            let adts = adts_header(asc, frame.data.len());
            muxer.write_audio(ticks(frame.pts_ms), &[&adts, &frame.data], out);
        }
    }
    true
}

impl Packager {
    fn new(
        playback: Arc<ChannelPlayback>,
        stream_id: Arc<str>,
        ads: AdMarker,
        limits: crate::settings::Limits,
        follow: Option<Follow>,
    ) -> Packager {
        Packager {
            writer: match playback.packaging.container {
                // The timed-metadata stream is declared from the start, as IVS's streams do.
                Container::Ts => {
                    let video = !follow.as_ref().is_some_and(|f| f.audio_only);
                    Writer::Ts(TsMuxer::new(Tracks { video, audio: true, metadata: true }))
                }
                Container::Fmp4 => {
                    Writer::Fmp4 { frames: Vec::new(), fragment_sequence: 0, audio_time: None, emsgs: Vec::new() }
                }
            },
            playback,
            stream_id: stream_id.clone(),
            base_stream_id: stream_id,
            feeds: 0,
            video: None,
            audio: None,
            audio_config: None,
            waiting_for_keyframe: true,
            bytes_in_window: VecDeque::new(),
            completed: false,
            last_video_dts: None,
            video_frame_ms: 0,
            clock_anchor: None,
            last_frame: None,
            early_metadata: Vec::new(),
            emsg_id: 0,
            ads,
            limits,
            follow,
            next_cut: None,
            discontinuities: 0,
        }
    }

    fn refresh_configs(&mut self, subscription: &Subscription) {
        if let Some(config) = subscription.video.borrow().clone()
            && self.video.as_ref().is_none_or(|(_, current)| !Arc::ptr_eq(current, &config))
            && let Ok(record) = VideoRecord::parse(config.coding, &config.config)
        {
            if let Writer::Ts(muxer) = &mut self.writer {
                muxer.set_video_coding(record.coding);
            }
            self.video = Some((record, config));
        }
        if let Some(config) = subscription.audio.borrow().clone()
            && let Ok(asc) = AudioSpecificConfig::parse(&config.config)
        {
            self.audio = Some(asc);
            self.audio_config = Some(config);
        }
    }

    /// A new feed starts with `frame` (the failover slate, or the publisher after it): the
    /// segment in progress ends where the last frame did, and the next follows a discontinuity.
    fn splice(&mut self) {
        let playback = self.playback.clone();
        let mut state = playback.state.write().expect("playlist lock");
        if let Some(end) = self.last_frame_end(&state) {
            self.close_segment(&mut state, end);
        }
        state.pending_discontinuity = true;
        drop(state);
        self.feeds += 1;
        self.stream_id = format!("{}.{}", self.base_stream_id, self.feeds).into();
        self.last_video_dts = None;
        self.waiting_for_keyframe = true;
        if let Writer::Fmp4 { audio_time, .. } = &mut self.writer {
            *audio_time = None;
        }
        self.completed = true;
    }

    /// Where the open segment ends if no frame follows: one frame after the last one.
    fn last_frame_end(&self, state: &PlaylistState) -> Option<i64> {
        let open = state.open.as_ref()?;
        // (A part that closed with its last picture, nothing after it: the segment ends there.)
        if open.part_bytes == 0 && !open.parts.is_empty() {
            return Some(open.part_start_dts);
        }
        let last = self.bytes_in_window.back()?.0;
        Some(last.max(open.part_start_dts) + self.video_frame_ms.clamp(1, state.part_target_ms()))
    }

    fn on_frame(&mut self, frame: &Arc<MediaFrame>) {
        if frame.discontinuity {
            self.splice();
        }
        let audio_only = self.follow.as_ref().is_some_and(|f| f.audio_only);
        // The frames that pace parts (video; audio in an audio-only rendition), and those a
        // segment may start with (keyframes; any audio frame there).
        let is_video = if audio_only { frame.kind == TrackKind::Audio } else { frame.kind == TrackKind::Video };
        let keyframe = is_video && (frame.keyframe || audio_only);
        let playback = self.playback.clone();
        let mut state = playback.state.write().expect("playlist lock");
        let followed_cut = match &self.follow {
            Some(follow) if keyframe => self.cut_due(follow, &state, frame),
            _ => None,
        };
        if self.waiting_for_keyframe {
            if !keyframe || (self.follow.is_some() && followed_cut.is_none()) {
                return;
            }
            self.waiting_for_keyframe = false;
        }
        if is_video {
            if let Some(last) = self.last_video_dts
                && frame.dts_ms > last
            {
                self.video_frame_ms = (frame.dts_ms - last).min(PART_TARGET_MAX_MS);
                if state.part_target_ms.is_none() {
                    state.part_target_ms =
                        Some(part_target_for(self.video_frame_ms, self.limits.playback_part_duration_ms));
                }
            }
            self.last_video_dts = Some(frame.dts_ms);
        }
        let part_target_ms = state.part_target_ms();
        let cut_segment = match (state.open.as_ref(), &self.follow) {
            (None, None) => keyframe,
            (Some(open), None) => {
                (keyframe && frame.dts_ms - open.start_dts >= self.playback.packaging.segment_target.as_millis() as i64)
                    || self.segment_overgrown(open, frame)
            }
            (None, Some(_)) => followed_cut.is_some(),
            (Some(open), Some(_)) => followed_cut.is_some() || self.segment_overgrown(open, frame),
        };
        self.next_cut = followed_cut;
        if cut_segment {
            let carried = state.open.as_mut().and_then(|open| self.take_audio_only_part(open, audio_only));
            self.close_segment(&mut state, frame.dts_ms);
            self.open_segment(&mut state, frame, carried);
        } else if let Some(mut open) = state.open.take() {
            // A keyframe is the first picture of its part, so every part that holds one can be
            // marked INDEPENDENT (and played from) as a whole: it closes the part before it,
            // unless that part holds no picture yet (only the audio that followed the last
            // part's last picture), which the keyframe then joins.
            // (Every audio frame can start an audio-only part: parts there are all independent.)
            if (keyframe && !audio_only && open.part_has_video)
                || (is_video && frame.dts_ms + self.video_frame_ms - open.part_start_dts > part_target_ms)
                || open.part_bytes >= self.limits.playback_max_part_bytes
            {
                self.close_part(&mut open, frame.dts_ms, false);
            }
            if keyframe && open.keyframe_leads_part(audio_only) {
                open.part_independent = true;
            }
            state.open = Some(open);
        }
        let Some(open) = state.open.as_mut() else { return };
        if keyframe && open.keyframe_leads_part(audio_only) {
            self.write_timestamp_tag(open, frame.pts_ms);
        }
        open.bytes += frame.data.len();
        open.part_bytes += frame.data.len();
        match &mut self.writer {
            Writer::Fmp4 { frames, .. } => {
                frames.push(frame.clone());
                open.part_has_video |= frame.kind == TrackKind::Video;
            }
            Writer::Ts(muxer) => {
                // Parameter sets lead every keyframe and every part's first picture: players
                // such as Shaka transmux each part alone and need them in it.
                let with_parameter_sets = frame.keyframe || !open.part_has_video;
                let video = self.video.as_ref().map(|(record, _)| record);
                let written =
                    write_ts_frame(muxer, frame, video, self.audio.as_ref(), with_parameter_sets, &mut open.part_data);
                if !written {
                    return;
                }
                open.part_has_video |= frame.kind == TrackKind::Video;
            }
        }
        self.last_frame = Some((frame.pts_ms, frame.arrival));
        if !self.early_metadata.is_empty() {
            for metadata in std::mem::take(&mut self.early_metadata) {
                self.write_metadata(open, &metadata);
            }
        }
        // Bandwidth: bytes over the last 10 s of media (and no more frames than 10 s hold at
        // high frame rates, whatever the timestamps do).
        self.bytes_in_window.push_back((frame.dts_ms, frame.data.len(), frame.kind == TrackKind::Video));
        while self.bytes_in_window.len() > MAX_BANDWIDTH_FRAMES
            || self.bytes_in_window.front().is_some_and(|(dts, ..)| frame.dts_ms - dts > 10_000)
        {
            self.bytes_in_window.pop_front();
        }
        if is_video {
            open.part_may_move = false;
            if self.part_full_after(open, frame.dts_ms, part_target_ms) {
                self.close_part(open, frame.dts_ms + self.video_frame_ms, false);
                open.part_may_move = self.next_may_start_segment(open, frame.dts_ms);
            }
        }
    }

    /// Whether the open part is complete with the picture at `dts_ms`: the next one (a frame
    /// interval later) would take it past the part target.
    fn part_full_after(&self, open: &OpenSegment, dts_ms: i64, part_target_ms: i64) -> bool {
        let frame_ms = self.video_frame_ms;
        frame_ms > 0 && dts_ms + 2 * frame_ms - open.part_start_dts > part_target_ms
    }

    /// Whether the picture after the one at `dts_ms` may be a keyframe that starts a new segment
    /// (a follower's cuts come within [`CUT_TOLERANCE_MS`] of the source's).
    fn next_may_start_segment(&self, open: &OpenSegment, dts_ms: i64) -> bool {
        let segment_target = self.playback.packaging.segment_target.as_millis() as i64;
        dts_ms + 2 * self.video_frame_ms + CUT_TOLERANCE_MS - open.start_dts >= segment_target
    }

    /// The open part, when it holds only the audio that followed the last part's last picture
    /// (a stream with pictures), taken out of its segment.
    fn take_audio_only_part(&mut self, open: &mut OpenSegment, audio_only: bool) -> Option<CarriedAudio> {
        if audio_only || open.part_has_video || open.part_bytes == 0 || open.parts.is_empty() {
            return None;
        }
        let (fmp4_frames, fmp4_emsgs) = match &mut self.writer {
            Writer::Fmp4 { frames, emsgs, .. } => (std::mem::take(frames), std::mem::take(emsgs)),
            Writer::Ts(_) => (Vec::new(), Vec::new()),
        };
        open.bytes -= open.part_bytes;
        Some(CarriedAudio {
            ts_data: std::mem::take(&mut open.part_data),
            fmp4_frames,
            fmp4_emsgs,
            bytes: std::mem::take(&mut open.part_bytes),
            has_metadata: std::mem::take(&mut open.part_has_metadata),
        })
    }

    /// A follower's segment starts at `frame` (a keyframe, or an audio frame of an audio-only
    /// rendition) when the source cut a segment there: the cut, numbered after every segment
    /// this rendition has. Its first segment must start at the cut itself, not within it.
    fn cut_due(&self, follow: &Follow, state: &PlaylistState, frame: &MediaFrame) -> Option<Cut> {
        let numbered = state.open.as_ref().map(|o| o.sequence).or(state.last_complete());
        let cut = follow.cuts.at_or_before(frame.pts_ms + CUT_TOLERANCE_MS, numbered)?;
        let first = numbered.is_none() || self.waiting_for_keyframe;
        (!first || frame.pts_ms - cut.pts_ms <= CUT_TOLERANCE_MS + self.video_frame_ms.max(25)).then_some(cut)
    }

    /// Timed metadata into the part being built, at the media time it arrived.
    fn on_metadata(&mut self, metadata: Arc<TimedMetadata>) {
        let playback = self.playback.clone();
        let mut state = playback.state.write().expect("playlist lock");
        match state.open.as_mut() {
            Some(open) if self.last_frame.is_some() => self.write_metadata(open, &metadata),
            // Before the first keyframe: it goes in with the first frame.
            _ => self.early_metadata.push(metadata),
        }
    }

    fn write_metadata(&mut self, open: &mut OpenSegment, metadata: &TimedMetadata) {
        let pts_ms = match self.last_frame {
            Some((pts, arrived)) => {
                let waited = metadata.arrival.saturating_duration_since(arrived).as_millis() as i64;
                pts + waited.min(METADATA_LEAD_MS)
            }
            None => open.part_start_dts,
        };
        let tag = metadata_tag(metadata);
        self.write_tag(open, pts_ms, &tag);
        // In fMP4 a second time, under the scheme the IVS player reads (each player ignores
        // the scheme it does not know). Version 0 counts from an earliest presentation time,
        // which the IVS player takes (as measured, cue order being the evidence) from the whole
        // segment it streams on LOW channels (prefetch) and from the fragment on NORMAL ones.
        if matches!(self.writer, Writer::Fmp4 { .. }) {
            let base = if self.playback.packaging.is_low_latency() { open.start_dts } else { open.part_start_dts };
            let delta = ((pts_ms - base).max(0) * 90) as u32;
            let emsg =
                fmp4::emsg_id3_v0(fmp4::TWITCH_ID3_SCHEME, fmp4::VIDEO_TIMESCALE, delta, self.next_emsg_id(), &tag);
            if let Writer::Fmp4 { emsgs, .. } = &mut self.writer {
                emsgs.extend(emsg);
            }
        }
        open.part_has_metadata = true;
    }

    /// A [`timestamp_tag`] at the start of every independent part.
    fn write_timestamp_tag(&mut self, open: &mut OpenSegment, pts_ms: i64) {
        self.write_tag(open, pts_ms, &timestamp_tag(pts_ms));
    }

    /// An ID3 tag into the part being built at `pts_ms`: on the TS timed-metadata stream, or in
    /// an `emsg` under the standard scheme (hls.js, Shaka, video.js) before the fMP4 fragment.
    fn write_tag(&mut self, open: &mut OpenSegment, pts_ms: i64, tag: &[u8]) {
        let emsg_id = self.next_emsg_id();
        match &mut self.writer {
            Writer::Ts(muxer) => muxer.write_metadata(ticks(pts_ms), tag, &mut open.part_data),
            Writer::Fmp4 { emsgs, .. } => {
                emsgs.extend(fmp4::emsg_id3(fmp4::ID3_SCHEME, fmp4::VIDEO_TIMESCALE, ticks(pts_ms), emsg_id, tag));
            }
        }
    }

    /// A new `emsg` id, unique within the stream.
    fn next_emsg_id(&mut self) -> u32 {
        self.emsg_id = self.emsg_id.wrapping_add(1);
        self.emsg_id
    }

    /// `EXT-X-PROGRAM-DATE-TIME` of a segment starting with `frame`: the arrival time of the
    /// stream's first frame, advanced by media time. Dates that run with the media (not with each
    /// frame's arrival, which jitters) keep the segments' dates and durations consistent, which
    /// players that place segments by date (Shaka) need to keep their timeline steady.
    fn program_date_time(&mut self, frame: &MediaFrame) -> time::OffsetDateTime {
        let (anchor_dts, anchor_wall) = *self.clock_anchor.get_or_insert((frame.dts_ms, frame.arrival_wall));
        anchor_wall + time::Duration::milliseconds(frame.dts_ms - anchor_dts)
    }

    /// The date of media time `dts_ms` on the same clock (once the stream has a frame).
    fn date_at(&self, dts_ms: i64) -> Option<time::OffsetDateTime> {
        self.clock_anchor
            .map(|(anchor_dts, anchor_wall)| anchor_wall + time::Duration::milliseconds(dts_ms - anchor_dts))
    }

    /// The open segment is past a bound that a keyframe should have ended it by: it is cut
    /// before `frame` (which then starts a segment that is not independent).
    fn segment_overgrown(&self, open: &OpenSegment, frame: &MediaFrame) -> bool {
        let max_duration = Duration::from_secs(self.limits.playback_max_segment_duration);
        frame.dts_ms - open.start_dts >= max_duration.as_millis() as i64
            || frame.arrival.duration_since(open.opened_at) >= max_duration
            || open.bytes >= self.limits.playback_max_segment_bytes
    }

    /// Ends the open part at `end_dts` (a part boundary, or the segment's end).
    fn close_part(&mut self, open: &mut OpenSegment, end_dts: i64, segment_end: bool) {
        if let Writer::Fmp4 { frames, fragment_sequence, audio_time, emsgs } = &mut self.writer
            && (!frames.is_empty() || !emsgs.is_empty())
        {
            let mut data = std::mem::take(emsgs);
            if !frames.is_empty() {
                *fragment_sequence += 1;
                data.extend(fmp4_fragment(frames, *fragment_sequence, audio_time, self.audio.as_ref(), end_dts));
            }
            open.part_data = data;
            frames.clear();
        }
        // Nothing of the media in it yet (a TS part already holds its PAT and PMT); timed
        // metadata alone makes a part only at the end of the stream (else it waits for media).
        if open.part_bytes == 0 && !(segment_end && open.part_has_metadata) {
            return;
        }
        let duration = (end_dts - open.part_start_dts).max(1) as f64 / 1000.0;
        let mut data = std::mem::take(&mut open.part_data);
        // The window holds parts for 16 s: not the spare room a growing buffer doubled into (up
        // to half of it; the allocator gives the tail back in place).
        data.shrink_to_fit();
        open.parts.push(StoredPart { duration, data: data.into(), independent: open.part_independent });
        open.part_start_dts = end_dts;
        open.part_independent = false;
        open.part_bytes = 0;
        open.part_has_video = false;
        open.part_has_metadata = false;
        // Every TS part starts with the tables, so a player can demux it on its own. (An fMP4
        // part's bytes are made whole when it closes, above: it needs no buffer before.)
        if !segment_end && let Writer::Ts(muxer) = &mut self.writer {
            open.part_data = Vec::with_capacity(32 * 1024);
            muxer.write_tables(&mut open.part_data);
        }
        self.completed = true;
    }

    fn open_segment(&mut self, state: &mut PlaylistState, frame: &MediaFrame, carried: Option<CarriedAudio>) {
        let followed = self.next_cut.take();
        let (sequence, discontinuity) = match &followed {
            Some(cut) => {
                if state.segments.is_empty() && state.open.is_none() {
                    state.discontinuity_sequence = cut.discontinuities_before;
                }
                // A segment cut at the source's discontinuity carries its tag (and its number).
                state.pending_discontinuity = false;
                (cut.sequence, cut.discontinuity)
            }
            None => (state.next_sequence, std::mem::take(&mut state.pending_discontinuity)),
        };
        state.next_sequence = sequence + 1;
        let (carried_bytes, carried_metadata) = carried.as_ref().map_or((0, false), |c| (c.bytes, c.has_metadata));
        let part_data = match (&mut self.writer, carried) {
            // (Carried TS bytes start with the tables already.)
            (Writer::Ts(_), Some(carried)) => carried.ts_data,
            (Writer::Ts(muxer), None) => {
                let mut tables = Vec::with_capacity(64 * 1024);
                muxer.write_tables(&mut tables);
                tables
            }
            // (fMP4 frames wait in the writer; the part's bytes are made when it closes.)
            (Writer::Fmp4 { frames, emsgs, .. }, Some(carried)) => {
                frames.extend(carried.fmp4_frames);
                emsgs.extend_from_slice(&carried.fmp4_emsgs);
                Vec::new()
            }
            (Writer::Fmp4 { .. }, None) => Vec::new(),
        };
        if matches!(self.writer, Writer::Fmp4 { .. }) && !state.inits.iter().any(|(id, _)| *id == self.stream_id) {
            let video = self.video.as_ref().map(|(record, config)| InitVideo {
                coding: record.coding,
                record: &config.config,
                width: config.width,
                height: config.height,
            });
            let audio_config = self.audio_config.clone();
            let audio = match (&audio_config, &self.audio) {
                (Some(config), Some(asc)) => Some((&config.config[..], asc.clone())),
                _ => None,
            };
            let init = fmp4::init_segment(&InitTracks { video, audio });
            state.inits.push((self.stream_id.clone(), init.into()));
            // Sections stay while a segment served needs them.
            let PlaylistState { inits, segments, retired, .. } = &mut *state;
            inits.retain(|(id, _)| {
                *id == self.stream_id || segments.iter().chain(retired.iter()).any(|s| s.stream_id == *id)
            });
        }
        let date = match &followed {
            // The source's date for the same media time (so the renditions' dates agree).
            Some(cut) => {
                self.clock_anchor.get_or_insert((frame.dts_ms, cut.date));
                cut.date
            }
            None => self.program_date_time(frame),
        };
        if self.follow.is_none() {
            self.playback.cuts.push(Cut {
                pts_ms: frame.pts_ms,
                sequence,
                date,
                discontinuity,
                discontinuities_before: self.discontinuities,
            });
        }
        self.discontinuities += u64::from(discontinuity);
        let ad = self.ads.at_segment_start(frame.dts_ms, ticks(frame.pts_ms), date);
        // A new open segment changes the low-latency playlist (its preload hint) even when no
        // part or segment closed before it (the stream's first): readers are told.
        self.completed = true;
        state.open = Some(OpenSegment {
            sequence,
            start_dts: frame.dts_ms,
            program_date_time: timestamp::format(date),
            discontinuity,
            parts: Vec::new(),
            stream_id: self.stream_id.clone(),
            ad,
            part_start_dts: frame.dts_ms,
            part_data,
            part_independent: frame.kind == TrackKind::Video && frame.keyframe,
            opened_at: frame.arrival,
            bytes: carried_bytes,
            part_bytes: carried_bytes,
            part_has_video: false,
            part_has_metadata: carried_metadata,
            part_may_move: false,
        });
        if let Some((_, config)) = &self.video {
            state.codecs = match &self.audio {
                Some(asc) => format!("{},{}", config.codec, asc.codec_string()),
                None => config.codec.clone(),
            };
            state.resolution = Some((config.width, config.height));
        } else if let Some(asc) = &self.audio {
            state.codecs = asc.codec_string();
        }
    }

    /// Completes the open segment at `end_dts` and moves it into the window.
    fn close_segment(&mut self, state: &mut PlaylistState, end_dts: i64) {
        let Some(mut open) = state.open.take() else { return };
        self.close_part(&mut open, end_dts, true);
        let duration = (end_dts - open.start_dts).max(1) as f64 / 1000.0;
        state.segments.push_back(StoredSegment {
            sequence: open.sequence,
            duration,
            program_date_time: open.program_date_time,
            discontinuity: open.discontinuity,
            parts: open.parts,
            stream_id: open.stream_id,
            ad: open.ad,
        });
        // Memory holds the listed window and the retired segments; past the byte limit, retired
        // segments go first.
        let limit = self.limits.playback_max_window_bytes;
        let mut listed: f64 = state.segments.iter().map(|s| s.duration).sum();
        let mut listed_bytes: usize = state.segments.iter().map(StoredSegment::size).sum();
        while let Some(oldest) = state.segments.front()
            && state.segments.len() > 1
            && (listed - oldest.duration >= WINDOW.as_secs_f64()
                || state.segments.len() > MAX_WINDOW_SEGMENTS
                || listed_bytes > limit)
        {
            let Some(retired) = state.segments.pop_front() else { break };
            listed -= retired.duration;
            listed_bytes -= retired.size();
            if retired.discontinuity {
                state.discontinuity_sequence += 1;
            }
            state.retired.push_back(retired);
        }
        // Retired segments stay as long as the playlist's span again (RFC 8216 6.2.2).
        let mut retired: f64 = state.retired.iter().map(|s| s.duration).sum();
        let mut kept_bytes = listed_bytes + state.retired.iter().map(StoredSegment::size).sum::<usize>();
        while let Some(oldest) = state.retired.front()
            && (retired - oldest.duration >= WINDOW.as_secs_f64()
                || state.retired.len() > MAX_WINDOW_SEGMENTS
                || kept_bytes > limit)
        {
            retired -= oldest.duration;
            kept_bytes -= oldest.size();
            state.retired.pop_front();
        }
        let window_ms =
            self.bytes_in_window.back().map_or(0, |b| b.0) - self.bytes_in_window.front().map_or(0, |f| f.0);
        if window_ms > 0 {
            let bytes: usize = self.bytes_in_window.iter().map(|(_, b, _)| b).sum();
            // Transport overhead (TS headers, PES, ADTS) on top of the media.
            state.average_bandwidth = (bytes as f64 * 8.0 * 1000.0 / window_ms as f64 * 1.1) as u64;
        }
        // The frame rate, from the media's own timestamps (arrival times jitter under load).
        let video: Vec<i64> = self.bytes_in_window.iter().filter(|(.., video)| *video).map(|(dts, ..)| *dts).collect();
        if let (Some(first), Some(last)) = (video.first(), video.last())
            && last - first >= 1000
        {
            state.frame_rate = Some((video.len() - 1) as f64 * 1000.0 / (last - first) as f64);
        }
        // BANDWIDTH is the peak segment bit rate (RFC 8216 4.3.4.2), of the segments listed (a
        // segment of less than half a second is too short to say).
        let peak = state
            .segments
            .iter()
            .filter(|s| s.duration >= 0.5)
            .map(|s| (s.size() as f64 * 8.0 / s.duration) as u64)
            .max()
            .unwrap_or(0);
        state.bandwidth = peak.max(state.average_bandwidth);
    }
}

/// One fMP4 fragment of the frames of a part. Video sample durations run to the next frame
/// (the last to `end_dts`); audio runs on its own clock of 1024 samples per AAC frame.
fn fmp4_fragment(
    frames: &[Arc<MediaFrame>],
    sequence: u32,
    audio_time: &mut Option<u64>,
    audio: Option<&AudioSpecificConfig>,
    end_dts: i64,
) -> Vec<u8> {
    let video: Vec<&Arc<MediaFrame>> = frames.iter().filter(|f| f.kind == TrackKind::Video).collect();
    let mut video_samples = Vec::with_capacity(video.len());
    for (index, frame) in video.iter().enumerate() {
        let next_dts = video.get(index + 1).map_or(end_dts.max(frame.dts_ms + 1), |next| next.dts_ms);
        video_samples.push(Sample {
            duration: ((next_dts - frame.dts_ms).max(1) * 90) as u32,
            composition_offset: ((frame.pts_ms - frame.dts_ms) * 90) as i32,
            keyframe: frame.keyframe,
            data: &frame.data,
        });
    }
    let mut runs = Vec::new();
    if let Some(first) = video.first() {
        runs.push(TrackRun { track: fmp4::VIDEO_TRACK, base_decode_time: ticks(first.dts_ms), samples: video_samples });
    }
    if let Some(asc) = audio {
        let audio_frames: Vec<&Arc<MediaFrame>> = frames.iter().filter(|f| f.kind == TrackKind::Audio).collect();
        if let Some(first) = audio_frames.first() {
            let start = *audio_time.get_or_insert_with(|| {
                ((first.dts_ms + TIMESTAMP_OFFSET_MS).max(0) as u64) * u64::from(asc.sample_rate) / 1000
            });
            let samples = audio_frames
                .iter()
                .map(|frame| Sample {
                    duration: AAC_FRAME_SAMPLES,
                    composition_offset: 0,
                    keyframe: true,
                    data: &frame.data,
                })
                .collect::<Vec<_>>();
            *audio_time = Some(start + samples.len() as u64 * u64::from(AAC_FRAME_SAMPLES));
            runs.push(TrackRun { track: fmp4::AUDIO_TRACK, base_decode_time: start, samples });
        }
    }
    fmp4::fragment(sequence, &runs)
}

/// Runs for the life of one stream: packages what the hub receives until the stream ends, then
/// closes the playlist (`EXT-X-ENDLIST`).
pub async fn run(
    playback: Arc<ChannelPlayback>,
    mut subscription: Subscription,
    stream_id: String,
    mut ended: watch::Receiver<bool>,
    limits: crate::settings::Limits,
    follow: Option<Follow>,
) {
    let mut packager =
        Packager::new(playback.clone(), stream_id.into(), AdMarker::new(subscription.ads.clone()), limits, follow);
    loop {
        tokio::select! {
            received = subscription.frames.recv() => match received {
                Ok(frame) => {
                    packager.refresh_configs(&subscription);
                    packager.on_frame(&frame);
                    if std::mem::take(&mut packager.completed) {
                        playback.notify();
                    } else {
                        playback.appended.send_modify(|version| *version += 1);
                    }
                }
                // Too slow for the ring: resume at the next keyframe.
                Err(broadcast::error::RecvError::Lagged(missed)) => {
                    tracing::warn!("packager fell behind by {missed} frames; resuming at the next keyframe");
                    packager.waiting_for_keyframe = true;
                }
                Err(broadcast::error::RecvError::Closed) => break,
            },
            received = subscription.metadata.recv() => match received {
                Ok(metadata) => packager.on_metadata(metadata),
                Err(broadcast::error::RecvError::Lagged(missed)) => {
                    tracing::warn!("packager lost {missed} timed metadata messages");
                }
                Err(broadcast::error::RecvError::Closed) => break,
            },
            _ = ended.wait_for(|ended| *ended) => break,
        }
    }
    // Metadata answered before the end is in the stream, even if the end was seen first.
    while let Ok(metadata) = subscription.metadata.try_recv() {
        packager.on_metadata(metadata);
    }
    let mut state = playback.state.write().expect("playlist lock");
    // The last segment ends one frame after the last frame that arrived.
    if let Some(end) = packager.last_frame_end(&state) {
        packager.close_segment(&mut state, end);
        if let Some(date) = packager.date_at(end) {
            state.post_roll = packager.ads.at_stream_end(ticks(end), date);
        }
    }
    state.ended = true;
    state.ended_at = Some(Instant::now());
    drop(state);
    playback.notify();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_rendered_playlist_is_served_only_for_its_version_and_form() {
        let mut rendered = RenderedPlaylists::default();
        rendered.keep(3, 1, Bytes::from_static(b"v3 low"));
        assert_eq!(rendered.get(3, 1).as_deref(), Some(&b"v3 low"[..]));
        assert_eq!(rendered.get(3, 0), None, "another form is rendered on its own");
        assert_eq!(rendered.get(4, 1), None, "a newer version is never answered from an older body");
        // A reader that read version 2 before the state must not replace version 3's bodies.
        rendered.keep(2, 0, Bytes::from_static(b"v2"));
        assert_eq!(rendered.get(2, 0), None);
        assert_eq!(rendered.get(3, 1).as_deref(), Some(&b"v3 low"[..]));
        rendered.keep(5, 0, Bytes::from_static(b"v5"));
        assert_eq!(rendered.get(3, 1), None, "a new version drops the old bodies");
        assert_eq!(rendered.get(5, 0).as_deref(), Some(&b"v5"[..]));
    }

    // avcC written by libx264 for 1280x720 High@3.1 (as in openivs-media's h264 tests).
    const AVCC_720P: [u8; 47] = [
        0x01, 0x64, 0x00, 0x1f, 0xff, 0xe1, 0x00, 0x1a, 0x67, 0x64, 0x00, 0x1f, 0xac, 0xd9, 0x40, 0x50, 0x05, 0xbb,
        0x01, 0x10, 0x00, 0x00, 0x03, 0x00, 0x10, 0x00, 0x00, 0x03, 0x03, 0xc0, 0xf1, 0x83, 0x19, 0x60, 0x01, 0x00,
        0x06, 0x68, 0xeb, 0xe3, 0xcb, 0x22, 0xc0, 0xfd, 0xf8, 0xf8, 0x00,
    ];

    fn frame(kind: TrackKind, dts_ms: i64, keyframe: bool) -> Arc<MediaFrame> {
        // (A length-prefixed NAL unit, or a raw AAC frame: the packager does not decode them.)
        let data: &'static [u8] = match (kind, keyframe) {
            (TrackKind::Video, true) => &[0, 0, 0, 4, 0x65, 0x88, 0x84, 0x00],
            (TrackKind::Video, false) => &[0, 0, 0, 4, 0x41, 0x9a, 0x02, 0x04],
            (TrackKind::Audio, _) => &[0x21, 0x10, 0x04, 0x60, 0x8c, 0x1c],
        };
        Arc::new(MediaFrame {
            kind,
            dts_ms,
            pts_ms: dts_ms,
            keyframe,
            data: Bytes::from_static(data),
            arrival: Instant::now(),
            arrival_wall: time::OffsetDateTime::now_utc(),
            discontinuity: false,
        })
    }

    /// 30 fps video with a keyframe every second and 44.1 kHz AAC, interleaved by decode time
    /// as an RTMP publisher sends them, for `seconds`.
    fn stream(seconds: i64) -> Vec<Arc<MediaFrame>> {
        let (mut frames, mut video, mut audio) = (Vec::new(), 0, 0);
        loop {
            let (video_dts, audio_dts) = (video * 1000 / 30, audio * 1024 * 1000 / 44100);
            if video_dts.min(audio_dts) >= seconds * 1000 {
                return frames;
            }
            if audio_dts < video_dts {
                frames.push(frame(TrackKind::Audio, audio_dts, false));
                audio += 1;
            } else {
                frames.push(frame(TrackKind::Video, video_dts, video % 30 == 0));
                video += 1;
            }
        }
    }

    /// A packager of a LOW MPEG-TS channel that knows its tracks' configurations.
    fn low_latency_ts_packager(part_duration_ms: u64) -> Packager {
        let playback = Arc::new(ChannelPlayback::new(Packaging::of_channel("TS", "LOW"), "channel".into()));
        let ads = AdMarker::new(watch::channel(Default::default()).1);
        let limits = crate::settings::Limits { playback_part_duration_ms: part_duration_ms, ..Default::default() };
        let mut packager = Packager::new(playback, "stream".into(), ads, limits, None);
        let record = VideoRecord::parse(openivs_media::video::VideoCoding::Avc, &AVCC_720P).unwrap();
        let config = Arc::new(TrackConfig::video(&record, Bytes::from_static(&AVCC_720P)));
        if let Writer::Ts(muxer) = &mut packager.writer {
            muxer.set_video_coding(record.coding);
        }
        packager.video = Some((record, config));
        packager.audio = Some(AudioSpecificConfig::parse(&[0x12, 0x10]).unwrap());
        packager
    }

    /// PES packets that start in `data`, per PID (one per frame).
    fn frames_in(data: &[u8], pid: u16) -> usize {
        data.chunks(188)
            .filter(|packet| packet[1] & 0x40 != 0 && (u16::from(packet[1] & 0x1f) << 8 | u16::from(packet[2])) == pid)
            .count()
    }

    #[test]
    fn parts_hold_whole_frames_of_about_the_configured_duration() {
        // (frame interval in ms as millisecond timestamps show it, part target in ms)
        let tenths = [
            (33, 103), // 30 fps: three frames
            (34, 106),
            (40, 124), // 25 fps: three frames (a 1 s segment: eight parts and one frame)
            (16, 103), // 60 fps: six frames
            (17, 109),
            (20, 106),  // 50 fps: five frames
            (41, 127),  // 24 fps: three frames
            (21, 111),  // AAC at 48 kHz (audio-only renditions): five frames
            (100, 102), // 10 fps: one frame
            (500, PART_TARGET_MAX_MS),
            (1, 191), // (odd timestamps: still at most the longest target)
        ];
        for (frame_ms, target) in tenths {
            assert_eq!(part_target_for(frame_ms, 100), target, "frames of {frame_ms} ms, parts of 100 ms");
        }
        // The default: the target capped at 201 ms, so parts of 0.2 s at 30, 25, 50 and 60 fps
        // (six, five, ten and twelve frames) and of four frames (0.167 s) at 24; frames that
        // fill less than 201 ms with the fewest whole frames past 195 ms get just that.
        let fifths =
            [(33, 201), (34, 201), (40, 201), (41, 201), (16, 201), (17, 201), (20, 201), (65, 199), (500, 201)];
        for (frame_ms, target) in fifths {
            assert_eq!(part_target_for(frame_ms, 200), target, "frames of {frame_ms} ms, parts of 200 ms");
        }
    }

    #[test]
    fn a_part_closes_at_its_last_picture_and_every_hinted_part_comes() {
        // (part duration configured, parts of a 1 s segment at 30 fps, the picture that fills
        // the first part, the part target in ms: whole frames of 33-34 ms, 1 ms spare per frame
        // and 1 more, at most 201)
        parts_close_at_their_last_picture(200, 5, 166, 201);
        parts_close_at_their_last_picture(100, 10, 66, 103);
    }

    fn parts_close_at_their_last_picture(
        part_duration_ms: u64,
        parts_per_second: usize,
        fills_first: i64,
        target: i64,
    ) {
        let part_seconds = part_duration_ms as f64 / 1000.0;
        let mut packager = low_latency_ts_packager(part_duration_ms);
        let frames = stream(4);
        // The part each playlist would hint at (the open one) after each frame.
        let mut hinted = Vec::new();
        // What a prefetch reader of each segment (from the moment it is listed) has read.
        let mut prefetched: std::collections::BTreeMap<u64, (SegmentCursor, Vec<u8>)> = Default::default();
        for (index, frame) in frames.iter().enumerate() {
            packager.on_frame(frame);
            let state = packager.playback.state.read().unwrap();
            let open = state.open.as_ref().unwrap();
            if !open.part_may_move {
                hinted.push((open.sequence, open.parts.len()));
            }
            prefetched.entry(open.sequence).or_default();
            prefetched.entry(open.sequence + 1).or_default();
            for (sequence, (cursor, bytes)) in prefetched.iter_mut() {
                if let SegmentProgress::Bytes { pieces, .. } = state.read_segment(&open.stream_id, *sequence, cursor) {
                    pieces.iter().for_each(|piece| bytes.extend_from_slice(piece));
                }
            }
            // A segment's last part too closes with its last picture (at 966 ms), the hint
            // withheld until the next picture tells which part comes next.
            if frame.kind == TrackKind::Video && frame.dts_ms == 966 {
                assert_eq!(open.parts.len(), parts_per_second, "the last part did not close at its last picture");
                assert!(open.part_may_move);
            }
            // The picture that fills the first part closes it, not the one after it.
            if frame.kind == TrackKind::Video && frame.dts_ms == fills_first {
                assert_eq!(open.parts.len(), 1, "the part did not close at its last picture (frame {index})");
                assert!((open.parts[0].duration - part_seconds).abs() < 0.002, "{}", open.parts[0].duration);
            }
        }
        let state = packager.playback.state.read().unwrap();
        assert!(state.segments.len() >= 3, "{} segments", state.segments.len());
        let open = state.open.as_ref().unwrap();
        for (sequence, part) in hinted {
            let came = state.segments.iter().any(|s| s.sequence == sequence && part < s.parts.len())
                || (open.sequence == sequence && part <= open.parts.len());
            assert!(came, "part {sequence}.{part} was hinted at but never came");
        }
        let (video_pid, audio_pid) = (openivs_media::ts::VIDEO_PID, openivs_media::ts::AUDIO_PID);
        assert_eq!(state.part_target_ms(), target);
        let part_target = state.part_target_ms() as f64 / 1000.0;
        for segment in &state.segments {
            // A segment read while it was cut has the same bytes as the segment (the audio
            // carried into the next segment was never handed out with this one).
            let whole: Vec<u8> = segment.parts.iter().flat_map(|p| p.data.to_vec()).collect();
            let read = &prefetched[&segment.sequence].1;
            assert!(
                *read == whole,
                "segment {}: prefetched {} bytes, is {}",
                segment.sequence,
                read.len(),
                whole.len()
            );
            let total: f64 = segment.parts.iter().map(|p| p.duration).sum();
            assert!((total - segment.duration).abs() < 0.002, "parts {total} s, segment {} s", segment.duration);
            assert_eq!(
                segment.parts.len(),
                parts_per_second,
                "segment {}: 1 s in parts of {part_seconds} s",
                segment.sequence
            );
            assert!(segment.parts[0].independent, "segment {} does not start independent", segment.sequence);
            for part in &segment.parts {
                // No sliver of audio: every part holds pictures and about a part target.
                assert!(
                    (part_seconds - 0.005..=part_target).contains(&part.duration),
                    "segment {}: a part of {} s",
                    segment.sequence,
                    part.duration
                );
                assert!(frames_in(&part.data, video_pid) > 0, "segment {}: a part without pictures", segment.sequence);
            }
        }
        // Every frame is in exactly one part.
        let parts = state.segments.iter().flat_map(|s| s.parts.iter()).chain(open.parts.iter());
        let mut data: Vec<u8> = parts.flat_map(|p| p.data.to_vec()).collect();
        data.extend_from_slice(&open.part_data);
        let fed = |kind| frames.iter().filter(|f| f.kind == kind).count();
        assert_eq!(frames_in(&data, video_pid), fed(TrackKind::Video));
        assert_eq!(frames_in(&data, audio_pid), fed(TrackKind::Audio));
    }
}

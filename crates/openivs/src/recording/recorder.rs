//! One recording: a consumer of a live stream's hub that writes the stream to its recording
//! configuration's bucket as IVS does, under
//! `ivs/v1/{account}/{channelId}/{yyyy}/{m}/{d}/{h}/{min}/{recordingId}/` (UTC, not zero-padded):
//! `events/recording-started.json` and `recording-ended.json`; `media/hls/master.m3u8` and
//! `byte-range-multivariant.m3u8`; per rendition (the source, named `{height}p{fps}` as IVS names
//! renditions) `playlist.m3u8` (an EVENT playlist while recording, a VOD one with
//! `#EXT-X-ENDLIST` at the end), `byte-range-variant.m3u8` (one range per keyframe interval) and
//! MPEG-TS segments `0.ts`, `1.ts`, … cut at the first keyframe after [`SEGMENT_TARGET_MS`].
//! Timed metadata stays in the segments (the ID3 stream, as live). The slate and a publisher's
//! comeback follow an `#EXT-X-DISCONTINUITY`.
//!
//! Objects are written as they complete; the recorder only reads the hub, so ingest and live
//! playback never wait for it.

use std::fmt::Write as _;
use std::sync::Arc;

use openivs_media::aac::AudioSpecificConfig;
use openivs_media::ts::{Tracks, TsMuxer};
use openivs_media::video::{VideoCoding, VideoRecord};
use serde_json::json;
use time::OffsetDateTime;
use tokio::sync::broadcast;

use super::buckets::Buckets;
use super::journals::Journals;
use super::renditions::{Destination, Recorded, RecordingRenditions};
use crate::events::{ChannelEvent, Outbox, RECORDING_STATE_CHANGE, seconds_utc};
use crate::live::hub::{MediaFrame, Subscription, TrackKind};
use crate::playback::packager::{metadata_tag, ticks, timestamp_tag, write_ts_frame};

/// Recorded segments are cut at the first keyframe after this much media (IVS's are about 10 s).
pub const SEGMENT_TARGET_MS: i64 = 10_000;
/// Video the frame rate is measured over before the rendition is named.
const FRAME_RATE_WINDOW_MS: i64 = 1000;

/// Where a stream is recorded, and what its files say about it.
#[derive(Debug, Clone)]
pub struct Recording {
    pub bucket: String,
    pub account: String,
    pub channel_arn: String,
    pub channel_id: String,
    pub channel_name: String,
    /// The stream being recorded.
    pub stream_id: String,
    /// `None`: the configuration's thumbnails are DISABLED.
    pub thumbnails: Option<ThumbnailSettings>,
    /// `recordingReconnectWindowSeconds`: a stream of the channel that starts within this time
    /// after the end of this one, with the same encoding, continues this recording.
    pub reconnect_window: std::time::Duration,
}

/// IVS merges at most this many streams into one recording.
const MAX_MERGED_STREAMS: u32 = 20;

/// Recordings waiting out their reconnect window, by channel; and the count of recordings
/// running, so a clean shutdown can finish them all.
#[derive(Default)]
pub struct Parking {
    parked: std::sync::Mutex<std::collections::HashMap<String, (u64, Box<Writer>)>>,
    next_id: std::sync::atomic::AtomicU64,
    running: std::sync::atomic::AtomicUsize,
    /// The server is stopping: recordings finish instead of waiting for a comeback.
    closing: std::sync::atomic::AtomicBool,
    /// Where recordings in progress keep their journal (none: they keep none).
    journals: Option<Arc<Journals>>,
    /// Where "IVS Recording State Change" events go (none: nowhere).
    outbox: Option<Outbox>,
}

/// Counts a running recording for as long as it lives: made when the recording is decided,
/// so a recording whose task is dropped before it first runs is uncounted all the same.
struct Running(Arc<Parking>);

impl Running {
    fn start(parking: Arc<Parking>) -> Self {
        parking.running.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        Running(parking)
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.0.running.fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
    }
}

impl Parking {
    /// Recordings keeping their journals in `journals` and raising their events in `outbox`.
    pub fn new(journals: Arc<Journals>, outbox: Outbox) -> Parking {
        Parking { journals: Some(journals), outbox: Some(outbox), ..Parking::default() }
    }

    /// Clean shutdown: the recordings waiting for a comeback end now, and those still running
    /// (their streams are ending) are waited for, at most `limit`, so every recording gets its
    /// final playlists and `recording-ended.json`.
    pub async fn finish_all(&self, limit: std::time::Duration) {
        let parked: Vec<Box<Writer>> = {
            let mut parked = self.parked.lock().expect("parking lock");
            self.closing.store(true, std::sync::atomic::Ordering::SeqCst);
            parked.drain().map(|(_, (_, writer))| writer).collect()
        };
        for writer in parked {
            writer.finish_parked().await;
        }
        let deadline = tokio::time::Instant::now() + limit;
        while self.running.load(std::sync::atomic::Ordering::SeqCst) > 0 && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    }

    /// Holds a recording whose stream ended, and finishes it when `window` passes unless a new
    /// stream of its channel took it first.
    /// Gives the recording back when the server is stopping (it is to be finished now).
    fn park(
        self: &Arc<Self>,
        channel_arn: &str,
        writer: Box<Writer>,
        window: std::time::Duration,
    ) -> Result<(), Box<Writer>> {
        let id = self.next_id.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let replaced = {
            let mut parked = self.parked.lock().expect("parking lock");
            // (Checked under the lock that finish_all drains under, so none is left behind.)
            if self.closing.load(std::sync::atomic::Ordering::SeqCst) {
                return Err(writer);
            }
            parked.insert(channel_arn.to_owned(), (id, writer))
        };
        let this = self.clone();
        let channel_arn = channel_arn.to_owned();
        tokio::spawn(async move {
            if let Some((_, earlier)) = replaced {
                earlier.finish_parked().await;
            }
            tokio::time::sleep(window).await;
            let expired = {
                let mut parked = this.parked.lock().expect("parking lock");
                match parked.get(&channel_arn) {
                    Some((parked_id, _)) if *parked_id == id => parked.remove(&channel_arn),
                    _ => None,
                }
            };
            if let Some((_, writer)) = expired {
                let prefix = writer.prefix.clone();
                if writer.finish_parked().await {
                    tracing::info!("recording: {prefix} ended after its reconnect window");
                }
            }
        });
        Ok(())
    }

    fn take(&self, channel_arn: &str) -> Option<Box<Writer>> {
        self.parked.lock().expect("parking lock").remove(channel_arn).map(|(_, writer)| writer)
    }
}

/// What the thumbnail configuration asks for.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct ThumbnailSettings {
    pub interval_ms: i64,
    /// Lines (none: the source's).
    pub height: Option<u32>,
    /// `media/thumbnails/thumb{n}.jpg`, one per interval.
    pub sequential: bool,
    /// `media/latest_thumbnail/thumb.jpg`, overwritten.
    pub latest: bool,
}

impl ThumbnailSettings {
    pub fn of(configuration: &openivs_model::resources::ThumbnailConfiguration) -> Option<ThumbnailSettings> {
        (configuration.recording_mode != "DISABLED").then(|| ThumbnailSettings {
            interval_ms: configuration.target_interval_seconds.max(1) * 1000,
            height: super::thumbnails::target_height(configuration.resolution.as_deref()),
            sequential: configuration.storage.iter().any(|s| s == "SEQUENTIAL"),
            latest: configuration.storage.iter().any(|s| s == "LATEST"),
        })
    }
}

/// A completed segment: its duration, date, whether a discontinuity precedes it, and its
/// keyframe intervals as byte ranges (offset, length, duration).
pub(super) struct Segment {
    pub(super) duration_ms: i64,
    pub(super) date: OffsetDateTime,
    pub(super) discontinuity: bool,
    pub(super) ranges: Vec<(usize, usize, i64)>,
}

/// What a recording in progress needs to be finished after a crash, kept in the store from its
/// start to its end ([`super::journals`], [`super::recovery`]).
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub(super) struct Journal {
    pub(super) bucket: String,
    pub(super) prefix: String,
    pub(super) account: String,
    pub(super) channel_arn: String,
    pub(super) channel_id: String,
    pub(super) rendition: String,
    pub(super) width: u32,
    pub(super) height: u32,
    pub(super) codecs: String,
    pub(super) started_at: String,
    pub(super) thumbnails: Option<ThumbnailSettings>,
    // (Absent from journals of earlier versions.)
    #[serde(default)]
    pub(super) channel_name: String,
    #[serde(default)]
    pub(super) stream_ids: Vec<String>,
    /// Set while the recording waits out its reconnect window: when the window ends (Unix ms).
    /// A journal still parked well after that is a recording whose node died waiting.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) parked_until_ms: Option<i64>,
}

/// The segment being written.
struct OpenSegment {
    start_dts: i64,
    date: OffsetDateTime,
    discontinuity: bool,
    bytes: Vec<u8>,
    /// Where each keyframe interval starts: byte offset and decode time.
    range_starts: Vec<(usize, i64)>,
}

pub(super) struct Writer {
    buckets: Arc<Buckets>,
    recording: Recording,
    prefix: String,
    started_at: OffsetDateTime,
    muxer: TsMuxer,
    video: Option<VideoRecord>,
    audio: Option<AudioSpecificConfig>,
    codecs: String,
    size: (u32, u32),
    /// `{height}p{fps}`, once the frame rate is measured.
    rendition: Option<String>,
    /// Video frames seen before the rendition is named (decode times).
    early_video: Vec<i64>,
    /// Frames held until then.
    held: Vec<Arc<MediaFrame>>,
    open: Option<OpenSegment>,
    segments: Vec<Segment>,
    /// The next segment follows a discontinuity.
    discontinuity: bool,
    /// A segment could not be stored: the next one stored follows a discontinuity.
    lost_segment: bool,
    last_dts: Option<i64>,
    last_pts: Option<i64>,
    frame_ms: i64,
    bytes_written: u64,
    failed: Option<String>,
    /// `recording-started.json` could not be written: there is no recording, only a Recording
    /// Start Failure event, and nothing more is written.
    start_failed: bool,
    /// Keyframes (Annex B, with SPS and PPS) to make thumbnails of.
    pending_thumbnails: Vec<Vec<u8>>,
    last_thumbnail_dts: Option<i64>,
    thumbnails_written: usize,
    /// Streams recorded here (more than one when publishers came back within the window).
    streams: u32,
    /// Where this recording's journal is kept, and the recording's id.
    journal: Option<(Arc<Journals>, String)>,
    /// The journal as last written (what claiming it checks).
    journal_body: Option<String>,
    /// While waiting out the reconnect window: when it ends.
    parked_until: Option<OffsetDateTime>,
    /// The ids of the streams recorded here, first to last.
    stream_ids: Vec<String>,
    outbox: Option<Outbox>,
    /// What the recording's writers share (the renditions selected and recorded).
    renditions: Arc<RecordingRenditions>,
    /// The primary writer (the stream's hub: event files, thumbnails, multivariant playlists),
    /// or a transcoded rendition's.
    primary: bool,
    /// Whether this writer's rendition is selected (decided once it is named).
    records_media: bool,
}

/// The key prefix of a recording that starts at `at` (UTC, not zero-padded, as IVS writes it).
pub fn key_prefix(account: &str, channel_id: &str, at: OffsetDateTime, recording_id: &str) -> String {
    let at = at.to_offset(time::UtcOffset::UTC);
    format!(
        "ivs/v1/{account}/{channel_id}/{}/{}/{}/{}/{}/{recording_id}",
        at.year(),
        u8::from(at.month()),
        at.day(),
        at.hour(),
        at.minute()
    )
}

impl Writer {
    fn new(
        buckets: Arc<Buckets>,
        recording: Recording,
        prefix: String,
        started_at: OffsetDateTime,
        journal: Option<(Arc<Journals>, String)>,
        outbox: Option<Outbox>,
        renditions: Arc<RecordingRenditions>,
    ) -> Writer {
        Writer {
            stream_ids: vec![recording.stream_id.clone()],
            outbox,
            renditions,
            primary: true,
            records_media: true,
            buckets,
            recording,
            prefix,
            started_at,
            muxer: TsMuxer::new(Tracks { video: true, audio: true, metadata: true }),
            video: None,
            audio: None,
            codecs: String::new(),
            size: (0, 0),
            rendition: None,
            early_video: Vec::new(),
            held: Vec::new(),
            open: None,
            segments: Vec::new(),
            discontinuity: false,
            lost_segment: false,
            last_dts: None,
            last_pts: None,
            frame_ms: 33,
            bytes_written: 0,
            failed: None,
            start_failed: false,
            pending_thumbnails: Vec::new(),
            last_thumbnail_dts: None,
            thumbnails_written: 0,
            streams: 1,
            journal,
            journal_body: None,
            parked_until: None,
        }
    }

    /// Writes an object of this recording; whether it was (a failure fails the recording).
    async fn put(&mut self, key: &str, bytes: &[u8]) -> bool {
        self.put_object(key, bytes).await.is_ok()
    }

    async fn put_object(&mut self, key: &str, bytes: &[u8]) -> std::io::Result<()> {
        if self.start_failed {
            return Err(std::io::Error::other("the recording did not start"));
        }
        let full = format!("{}/{key}", self.prefix);
        match self.buckets.put(&self.recording.bucket, &full, bytes).await {
            Err(error) => {
                if self.failed.is_none() {
                    tracing::error!("recording: cannot write {full} to bucket {}: {error}", self.recording.bucket);
                    self.failed = Some(format!("cannot write to the bucket: {error}"));
                }
                Err(error)
            }
            Ok(()) => {
                self.bytes_written += bytes.len() as u64;
                Ok(())
            }
        }
    }

    fn refresh_configs(&mut self, subscription: &Subscription) {
        if let Some(config) = subscription.video.borrow().clone()
            && let Ok(record) = VideoRecord::parse(config.coding, &config.config)
        {
            self.size = (config.width, config.height);
            self.codecs = record.codec.clone();
            self.muxer.set_video_coding(record.coding);
            self.video = Some(record);
        }
        if let Some(config) = subscription.audio.borrow().clone()
            && let Ok(asc) = AudioSpecificConfig::parse(&config.config)
        {
            self.audio = Some(asc);
        }
    }

    /// Takes a frame, storing the segments it completes.
    async fn take(&mut self, frame: Arc<MediaFrame>) {
        for (segment, bytes) in self.on_frame(frame) {
            self.store(segment, bytes).await;
        }
    }

    /// Takes the frames still in the ring (the stream ended: they are part of it).
    async fn drain(&mut self, subscription: &mut Subscription) {
        while let Ok(frame) = subscription.frames.try_recv() {
            self.take(frame).await;
        }
    }

    /// Takes a frame; the segments it completed (bytes and description).
    fn on_frame(&mut self, frame: Arc<MediaFrame>) -> Vec<(Segment, Vec<u8>)> {
        if self.rendition.is_some() {
            return self.write(&frame).into_iter().collect();
        }
        // The rendition is named after the frame rate: measured over the first second first.
        if frame.kind == TrackKind::Video {
            self.early_video.push(frame.dts_ms);
        }
        self.held.push(frame);
        let span = self.early_video.last().zip(self.early_video.first()).map_or(0, |(last, first)| last - first);
        if span < FRAME_RATE_WINDOW_MS && self.held.len() < 4096 {
            return Vec::new();
        }
        let fps = (self.early_video.len().saturating_sub(1) as f64 * 1000.0 / span.max(1) as f64).round();
        self.name_rendition(format!("{}p{}", self.size.0.min(self.size.1), fps.max(1.0) as u32));
        std::mem::take(&mut self.held).iter().filter_map(|held| self.write(held)).collect()
    }

    /// Muxes a frame; the segment it completed, if it starts a new one.
    fn write(&mut self, frame: &MediaFrame) -> Option<(Segment, Vec<u8>)> {
        if frame.discontinuity {
            self.discontinuity = true;
        }
        let keyframe = frame.kind == TrackKind::Video && frame.keyframe;
        let mut completed = None;
        if keyframe {
            let own_rule =
                |open: &OpenSegment| self.discontinuity || frame.dts_ms - open.start_dts >= SEGMENT_TARGET_MS;
            let cut = match (&self.open, self.primary) {
                (None, _) => true,
                (Some(open), true) => own_rule(open),
                // A rendition cuts where the source did (their keyframes are the same pictures).
                (Some(open), false) => self.renditions.is_cut(frame.pts_ms).unwrap_or_else(|| own_rule(open)),
            };
            if cut {
                if self.primary {
                    self.renditions.note_cut(frame.pts_ms);
                }
                let end = if self.discontinuity { self.last_end() } else { Some(frame.dts_ms) };
                completed = end.and_then(|end| self.close_segment(end));
                self.open = Some(OpenSegment {
                    start_dts: frame.dts_ms,
                    date: frame.arrival_wall,
                    discontinuity: std::mem::take(&mut self.discontinuity),
                    bytes: Vec::with_capacity(1 << 20),
                    range_starts: Vec::new(),
                });
            }
        }
        // (Thumbnails are decoded with an H.264 decoder: the source, track 0, is always H.264.)
        if keyframe
            && let (Some(settings), Some(record)) = (&self.recording.thumbnails, &self.video)
            && record.coding == VideoCoding::Avc
        {
            let due = self.last_thumbnail_dts.is_none_or(|last| frame.dts_ms - last >= settings.interval_ms);
            if due {
                self.last_thumbnail_dts = Some(frame.dts_ms);
                self.pending_thumbnails.push(openivs_media::ts::to_annex_b(&frame.data, record, true));
            }
        }
        let open = self.open.as_mut()?;
        if keyframe {
            // Each keyframe interval starts with the tables, so a byte range plays on its own,
            // and a timestamp tag, so a player starting there meets the metadata stream at once.
            open.range_starts.push((open.bytes.len(), frame.dts_ms));
            self.muxer.write_tables(&mut open.bytes);
            self.muxer.write_metadata(ticks(frame.pts_ms), &timestamp_tag(frame.pts_ms), &mut open.bytes);
        }
        if write_ts_frame(&mut self.muxer, frame, self.video.as_ref(), self.audio.as_ref(), keyframe, &mut open.bytes) {
            if frame.kind == TrackKind::Video {
                if let Some(last) = self.last_dts.filter(|last| frame.dts_ms > *last) {
                    self.frame_ms = frame.dts_ms - last;
                }
                self.last_dts = Some(frame.dts_ms);
            }
            self.last_pts = Some(frame.pts_ms);
        }
        completed
    }

    /// Where the open segment ends if nothing follows: one frame after the last one.
    fn last_end(&self) -> Option<i64> {
        let open = self.open.as_ref()?;
        Some(self.last_dts.unwrap_or(open.start_dts).max(open.start_dts) + self.frame_ms.clamp(1, 1000))
    }

    /// Ends the open segment at `end_dts`.
    fn close_segment(&mut self, end_dts: i64) -> Option<(Segment, Vec<u8>)> {
        let open = self.open.take()?;
        let mut ranges = Vec::with_capacity(open.range_starts.len());
        for (index, (offset, dts)) in open.range_starts.iter().enumerate() {
            let (next_offset, next_dts) =
                open.range_starts.get(index + 1).copied().unwrap_or((open.bytes.len(), end_dts));
            ranges.push((*offset, next_offset - offset, (next_dts - dts).max(1)));
        }
        let segment = Segment {
            duration_ms: (end_dts - open.start_dts).max(1),
            date: open.date,
            discontinuity: open.discontinuity,
            ranges,
        };
        Some((segment, open.bytes))
    }

    fn metadata(&mut self, metadata: &crate::live::hub::TimedMetadata) {
        let (Some(open), Some(pts)) = (self.open.as_mut(), self.last_pts) else { return };
        self.muxer.write_metadata(ticks(pts), &metadata_tag(metadata), &mut open.bytes);
    }

    fn rendition(&self) -> &str {
        self.rendition.as_deref().unwrap_or("source")
    }

    /// Names the (source) rendition, and decides whether its media is recorded.
    fn name_rendition(&mut self, name: String) {
        self.records_media = self.renditions.selects(true, self.size.0.min(self.size.1));
        self.rendition = Some(name);
    }

    /// The recording's duration: its longest rendition's (the source's, when recorded).
    fn duration_ms(&self) -> i64 {
        let own: i64 = self.segments.iter().map(|s| s.duration_ms).sum();
        self.renditions.recorded().iter().map(|r| r.duration_ms).chain([own]).max().unwrap_or(own)
    }

    /// What this writer has recorded, for the multivariant playlists.
    fn recorded(&self) -> Recorded {
        let duration_ms: i64 = self.segments.iter().map(|s| s.duration_ms).sum();
        Recorded {
            duration_ms,
            name: self.rendition().to_owned(),
            width: self.size.0,
            height: self.size.1,
            codecs: self.codecs_string(),
            bandwidth: (self.bytes_written as f64 * 8.0 * 1000.0 / duration_ms.max(1) as f64) as u64,
        }
    }

    /// Makes and stores the thumbnails of the keyframes that were due (decoding on a blocking
    /// thread).
    async fn store_thumbnails(&mut self) {
        let Some(settings) = self.recording.thumbnails.clone() else { return };
        for picture in std::mem::take(&mut self.pending_thumbnails) {
            let made =
                tokio::task::spawn_blocking(move || super::thumbnails::thumbnail(&picture, settings.height)).await;
            let jpeg = match made {
                Ok(Ok((jpeg, _, _))) => jpeg,
                Ok(Err(error)) => {
                    tracing::warn!("recording: no thumbnail of a keyframe: {error}");
                    continue;
                }
                Err(error) => {
                    tracing::warn!("recording: thumbnail task failed: {error}");
                    continue;
                }
            };
            if settings.sequential {
                let key = format!("media/thumbnails/thumb{}.jpg", self.thumbnails_written);
                self.put(&key, &jpeg).await;
            }
            if settings.latest {
                self.put("media/latest_thumbnail/thumb.jpg", &jpeg).await;
            }
            self.thumbnails_written += 1;
        }
    }

    /// Stores a completed segment and the EVENT playlist that now lists it.
    async fn store(&mut self, segment: Segment, bytes: Vec<u8>) {
        if !self.records_media {
            return;
        }
        let key = format!("media/hls/{}/{}.ts", self.rendition(), self.segments.len());
        if !self.put(&key, &bytes).await {
            // Lost to the store: the playlists go on without it, after a discontinuity.
            self.lost_segment = true;
            return;
        }
        let mut segment = segment;
        segment.discontinuity |= std::mem::take(&mut self.lost_segment);
        self.segments.push(segment);
        self.renditions.note(self.recorded());
        let playlist = self.playlist(false);
        let key = format!("media/hls/{}/playlist.m3u8", self.rendition());
        self.put(&key, playlist.as_bytes()).await;
        let byte_ranges = self.byte_range_playlist(false);
        let key = format!("media/hls/{}/byte-range-variant.m3u8", self.rendition());
        self.put(&key, byte_ranges.as_bytes()).await;
    }

    /// `playlist.m3u8`: EVENT while recording, VOD with `#EXT-X-ENDLIST` when `done`.
    fn playlist(&self, done: bool) -> String {
        let target = self.segments.iter().map(|s| s.duration_ms).max().unwrap_or(1000);
        let mut out = format!(
            "#EXTM3U\n#EXT-X-VERSION:3\n#EXT-X-TARGETDURATION:{}\n#EXT-X-MEDIA-SEQUENCE:0\n#EXT-X-PLAYLIST-TYPE:{}\n",
            (target as f64 / 1000.0).round().max(1.0) as u64,
            if done { "VOD" } else { "EVENT" }
        );
        for (index, segment) in self.segments.iter().enumerate() {
            if segment.discontinuity {
                out.push_str("#EXT-X-DISCONTINUITY\n");
            }
            let _ = write!(
                out,
                "#EXT-X-PROGRAM-DATE-TIME:{}\n#EXTINF:{:.3},\n{index}.ts\n",
                openivs_model::timestamp::format(segment.date),
                segment.duration_ms as f64 / 1000.0
            );
        }
        if done {
            out.push_str("#EXT-X-ENDLIST\n");
        }
        out
    }

    /// `byte-range-variant.m3u8`: one entry per keyframe interval, as byte ranges of the
    /// segments; EVENT while recording, VOD with `#EXT-X-ENDLIST` when `done`.
    fn byte_range_playlist(&self, done: bool) -> String {
        let target = self.segments.iter().flat_map(|s| s.ranges.iter().map(|r| r.2)).max().unwrap_or(1000);
        let mut out = format!(
            "#EXTM3U\n#EXT-X-VERSION:4\n#EXT-X-TARGETDURATION:{}\n#EXT-X-MEDIA-SEQUENCE:0\n#EXT-X-PLAYLIST-TYPE:{}\n",
            (target as f64 / 1000.0).round().max(1.0) as u64,
            if done { "VOD" } else { "EVENT" }
        );
        for (index, segment) in self.segments.iter().enumerate() {
            if segment.discontinuity {
                out.push_str("#EXT-X-DISCONTINUITY\n");
            }
            for (offset, length, duration) in &segment.ranges {
                let _ = write!(
                    out,
                    "#EXTINF:{:.3},\n#EXT-X-BYTERANGE:{length}@{offset}\n{index}.ts\n",
                    *duration as f64 / 1000.0
                );
            }
        }
        if done {
            out.push_str("#EXT-X-ENDLIST\n");
        }
        out
    }

    /// `master.m3u8` or `byte-range-multivariant.m3u8`, pointing at `playlist` of every
    /// rendition recorded, best first.
    fn multivariant(&self, playlist: &str) -> String {
        let mut out = format!(
            "#EXTM3U\n\
             #EXT-X-SESSION-DATA:DATA-ID=\"net.live-video.content.id\",VALUE=\"{}\"\n\
             #EXT-X-SESSION-DATA:DATA-ID=\"net.live-video.customer.id\",VALUE=\"{}\"\n",
            self.recording.channel_id, self.recording.account,
        );
        for (index, rendition) in self.renditions.recorded().iter().enumerate() {
            let name = &rendition.name;
            let short = name.split('p').next().unwrap_or(name);
            let default = if index == 0 { "YES" } else { "NO" };
            let _ = write!(
                out,
                "#EXT-X-MEDIA:TYPE=VIDEO,GROUP-ID=\"{name}\",NAME=\"{short}p\",AUTOSELECT=YES,DEFAULT={default}\n\
                 #EXT-X-STREAM-INF:PROGRAM-ID=1,BANDWIDTH={},CODECS=\"{}\",RESOLUTION={}x{},VIDEO=\"{name}\"\n\
                 {name}/{playlist}\n",
                rendition.bandwidth, rendition.codecs, rendition.width, rendition.height,
            );
        }
        out
    }

    fn codecs_string(&self) -> String {
        match &self.audio {
            Some(asc) => format!("{},{}", self.codecs, asc.codec_string()),
            None => self.codecs.clone(),
        }
    }

    /// The renditions the recording holds (or will): the source's when selected, and the
    /// selected transcoded renditions, best first.
    fn planned_renditions(&self) -> Vec<(String, u32, u32)> {
        let mut planned: Vec<(String, u32, u32)> = Vec::new();
        if self.records_media {
            planned.push((self.rendition().to_owned(), self.size.0, self.size.1));
        }
        planned.extend(self.renditions.selected_ladder());
        planned
    }

    /// The body of `recording-started.json`, `recording-ended.json` or `recording-failed.json`.
    fn event_file(&self, ended_at: Option<OffsetDateTime>) -> serde_json::Value {
        let status = match (ended_at, &self.failed) {
            (None, _) => "RECORDING_STARTED",
            (Some(_), None) => "RECORDING_ENDED",
            (Some(_), Some(_)) => "RECORDING_ENDED_WITH_FAILURE",
        };
        let mut hls = json!({
            "path": "media/hls",
            "playlist": "master.m3u8",
            "byte_range_playlist": "byte-range-multivariant.m3u8",
            "renditions": self.planned_renditions().iter().map(|(path, width, height)| json!({
                "path": path,
                "playlist": "playlist.m3u8",
                "byte_range_playlist": "byte-range-variant.m3u8",
                "resolution_width": width,
                "resolution_height": height,
            })).collect::<Vec<_>>(),
        });
        let mut file = json!({
            "version": "v1",
            "channel_arn": self.recording.channel_arn,
            "recording_started_at": seconds_utc(self.started_at),
            "recording_status": status,
            "recording_status_message": self.failed.clone().unwrap_or_default(),
        });
        if let Some(ended_at) = ended_at {
            hls["duration_ms"] = json!(self.duration_ms());
            file["recording_ended_at"] = json!(seconds_utc(ended_at));
        }
        file["media"] = json!({ "hls": hls });
        if let Some(settings) = &self.recording.thumbnails {
            let (width, height) = super::thumbnails::scaled_size(self.size, settings.height);
            if settings.sequential {
                file["media"]["thumbnails"] =
                    json!({ "path": "media/thumbnails", "resolution_width": width, "resolution_height": height });
            }
            if settings.latest {
                file["media"]["latest_thumbnail"] = json!({
                    "path": "media/latest_thumbnail/thumb.jpg",
                    "resolution_width": width,
                    "resolution_height": height,
                });
            }
        }
        file
    }

    /// The stream ended: the last segment, the final playlists and `recording-ended.json`.
    /// Stores what the stream left: held frames, the open segment, due thumbnails, and the EVENT
    /// playlist up to there.
    async fn close_open(&mut self) {
        if self.rendition.is_none() && !self.held.is_empty() {
            self.name_rendition(format!("{}p30", self.size.0.min(self.size.1)));
            let held = std::mem::take(&mut self.held);
            for frame in held {
                if let Some((segment, bytes)) = self.write(&frame) {
                    self.store(segment, bytes).await;
                }
            }
        }
        if let Some((segment, bytes)) = self.last_end().and_then(|end| self.close_segment(end)) {
            self.store(segment, bytes).await;
        }
        self.store_thumbnails().await;
    }

    /// Whether a new stream (described by `fresh`, which has seen its first frame) continues
    /// this recording: the same bucket, picture size and codecs (IVS also compares the frame
    /// rate and bitrate; openivs does not).
    fn continues_with(&self, fresh: &Writer) -> bool {
        // (Recordings of transcoded renditions are not merged: each stream has its own.)
        !self.renditions.has_writers()
            && !fresh.renditions.has_writers()
            && self.recording.bucket == fresh.recording.bucket
            && self.size == fresh.size
            && self.codecs_string() == fresh.codecs_string()
    }

    /// Continues with a new stream: its timeline starts anew after a discontinuity.
    fn resume_with(&mut self, subscription: &Subscription) {
        self.refresh_configs(subscription);
        self.discontinuity = true;
        self.last_dts = None;
        self.last_pts = None;
        self.last_thumbnail_dts = None;
        self.streams += 1;
    }

    /// The recording is over: the final playlists and `recording-ended.json`.
    async fn finish(&mut self) {
        if self.start_failed {
            tracing::info!("recording: {} never started; nothing to finish", self.prefix);
            return;
        }
        self.close_open().await;
        if !self.segments.is_empty() {
            let rendition = self.rendition().to_owned();
            let playlist = self.playlist(true);
            self.put(&format!("media/hls/{rendition}/playlist.m3u8"), playlist.as_bytes()).await;
            let byte_ranges = self.byte_range_playlist(true);
            self.put(&format!("media/hls/{rendition}/byte-range-variant.m3u8"), byte_ranges.as_bytes()).await;
            self.renditions.note(self.recorded());
        }
        if !self.primary {
            return;
        }
        // The renditions' writers finish their last segments first.
        self.renditions.writers_finished().await;
        if self.renditions.recorded().is_empty() {
            tracing::info!("recording: no media recorded; {} holds its events (and thumbnails)", self.prefix);
        } else {
            let master = self.multivariant("playlist.m3u8");
            self.put("media/hls/master.m3u8", master.as_bytes()).await;
            let multivariant = self.multivariant("byte-range-variant.m3u8");
            self.put("media/hls/byte-range-multivariant.m3u8", multivariant.as_bytes()).await;
        }
        let ended_at = OffsetDateTime::now_utc();
        let name = if self.failed.is_some() { "recording-failed.json" } else { "recording-ended.json" };
        let body = self.event_file(Some(ended_at)).to_string();
        self.put(&format!("events/{name}"), body.as_bytes()).await;
        if let Some((journals, recording_id)) = self.journal.take() {
            journals.forget(&recording_id).await;
        }
        match self.failed.is_some() {
            false => self.raise("Recording End", "", ended_at).await,
            true => self.raise("Recording End Failure", "InternalServerException", ended_at).await,
        }
    }

    /// Raises an "IVS Recording State Change" event.
    async fn raise(&self, status: &str, reason: &str, at: OffsetDateTime) {
        let Some(outbox) = &self.outbox else { return };
        let ended = status.starts_with("Recording End");
        let mut detail = json!({
            "channel_name": self.recording.channel_name,
            "stream_id": self.stream_ids.last().cloned().unwrap_or_default(),
            "recording_status": status,
            "recording_status_reason": reason,
            "recording_s3_bucket_name": self.recording.bucket,
            // (IVS leaves the prefix empty when a recording could not start.)
            "recording_s3_key_prefix": if status == "Recording Start Failure" { "" } else { self.prefix.as_str() },
            "recording_duration_ms": if ended { self.duration_ms() } else { 0 },
            "recording_session_id": self.prefix.rsplit('/').next().unwrap_or_default(),
        });
        if ended {
            detail["recording_session_stream_ids"] = json!(self.stream_ids);
        }
        let channel_arn = &self.recording.channel_arn;
        outbox.emit(ChannelEvent { detail_type: RECORDING_STATE_CHANGE, channel_arn, detail, time: at }).await;
    }

    /// Writes `recording-started.json` and the journal.
    async fn start(&mut self) {
        let body = self.event_file(None).to_string();
        if let Err(error) = self.put_object("events/recording-started.json", body.as_bytes()).await {
            // A bucket that is gone is the user's to fix; anything else is ours.
            let reason = match error.kind() {
                std::io::ErrorKind::NotFound => "ValidationException",
                _ => "InternalServerException",
            };
            self.raise("Recording Start Failure", reason, self.started_at).await;
            self.start_failed = true;
            return;
        }
        self.raise("Recording Start", "", self.started_at).await;
        self.write_journal().await;
    }

    /// Writes (or rewrites, as streams join the recording) the journal that lets a crash be
    /// recovered from.
    async fn write_journal(&mut self) {
        let Some((journals, recording_id)) = self.journal.clone() else { return };
        let journal = self.journal_now();
        match journals.keep(&recording_id, &journal).await {
            Ok(body) => self.journal_body = Some(body),
            Err(error) => {
                tracing::warn!("recording: cannot keep the journal of {recording_id}: {error}");
                self.journal = None;
            }
        }
    }

    /// Ends the wait for a comeback: takes the journal back from "parked" unless another node
    /// claimed it meanwhile (this node was taken for dead), in which case that node finishes the
    /// recording and this one must not (false).
    async fn unpark(&mut self) -> bool {
        self.parked_until = None;
        let (Some((journals, recording_id)), Some(body)) = (self.journal.clone(), self.journal_body.clone()) else {
            return true;
        };
        match journals.claim(&recording_id, journals.node_id(), &body, &self.journal_now()).await {
            Ok(Some(body)) => {
                self.journal_body = Some(body);
                true
            }
            Ok(None) => false,
            Err(error) => {
                // (Better finished twice than never: its events carry the same recording.)
                tracing::warn!("recording: cannot claim the journal of {recording_id}: {error}");
                true
            }
        }
    }

    /// Finishes a recording that waited for a comeback, unless another node claimed it (then
    /// that node finishes it); whether this node did.
    async fn finish_parked(mut self: Box<Self>) -> bool {
        if !self.unpark().await {
            tracing::info!("recording: {} is finished by another node", self.prefix);
            return false;
        }
        self.finish().await;
        true
    }

    fn journal_now(&self) -> Journal {
        Journal {
            bucket: self.recording.bucket.clone(),
            prefix: self.prefix.clone(),
            account: self.recording.account.clone(),
            channel_arn: self.recording.channel_arn.clone(),
            channel_id: self.recording.channel_id.clone(),
            rendition: self.rendition().to_owned(),
            width: self.size.0,
            height: self.size.1,
            codecs: self.codecs_string(),
            started_at: openivs_model::timestamp::format(self.started_at),
            thumbnails: self.recording.thumbnails.clone(),
            channel_name: self.recording.channel_name.clone(),
            stream_ids: self.stream_ids.clone(),
            parked_until_ms: self.parked_until.map(|at| (at.unix_timestamp_nanos() / 1_000_000) as i64),
        }
    }

    /// A recording a crash interrupted, as its journal and stored playlists describe it, to be
    /// finished.
    pub(super) fn recovered(
        buckets: Arc<Buckets>,
        journal: Journal,
        kept: (Arc<Journals>, String),
        segments: Vec<Segment>,
        bytes_written: u64,
        outbox: Option<Outbox>,
    ) -> Writer {
        let started_at = OffsetDateTime::parse(&journal.started_at, &time::format_description::well_known::Rfc3339)
            .unwrap_or_else(|_| OffsetDateTime::now_utc());
        let recording = Recording {
            bucket: journal.bucket,
            account: journal.account,
            channel_arn: journal.channel_arn,
            channel_id: journal.channel_id,
            channel_name: journal.channel_name,
            stream_id: journal.stream_ids.first().cloned().unwrap_or_default(),
            thumbnails: journal.thumbnails,
            reconnect_window: std::time::Duration::ZERO,
        };
        // (A crash leaves the transcoded renditions' playlists as they were: the recording is
        // finished with its source.)
        let renditions = RecordingRenditions::new(Default::default(), true);
        let mut writer = Writer::new(buckets, recording, journal.prefix, started_at, Some(kept), outbox, renditions);
        writer.stream_ids = journal.stream_ids;
        writer.codecs = journal.codecs;
        writer.size = (journal.width, journal.height);
        writer.rendition = Some(journal.rendition);
        writer.segments = segments;
        writer.bytes_written = bytes_written;
        writer.renditions.note(writer.recorded());
        writer
    }

    pub(super) async fn finish_recovered(mut self) -> String {
        self.finish().await;
        self.prefix
    }
}

/// The stream's next frame, writing the timed metadata that comes first; `None` once the stream
/// ended.
async fn next_frame(
    writer: &mut Writer,
    subscription: &mut Subscription,
    ended: &mut tokio::sync::watch::Receiver<bool>,
) -> Option<Arc<MediaFrame>> {
    loop {
        tokio::select! {
            received = subscription.frames.recv() => match received {
                Ok(frame) => return Some(frame),
                Err(broadcast::error::RecvError::Lagged(missed)) => {
                    tracing::warn!("recording: {} fell behind the stream by {missed} frames", writer.rendition());
                }
                Err(broadcast::error::RecvError::Closed) => return None,
            },
            received = subscription.metadata.recv() => {
                if let Ok(metadata) = received {
                    writer.metadata(&metadata);
                }
            }
            // (Mapped to `()`: the watch's guard must not live across the other branches' awaits.)
            () = async { let _ = ended.wait_for(|ended| *ended).await; } => return None,
        }
    }
}

/// Records the stream `subscription` follows until it ends (the future to spawn).
///
/// Where it records is decided here, before the future first runs: the renditions' writers,
/// spawned at the stream's first picture, find it set however late the runtime gets to this
/// recording's task (they used to race it, and a rendition lost to the race was not recorded).
pub fn run(
    buckets: Arc<Buckets>,
    parking: Arc<Parking>,
    recording: Recording,
    renditions: Arc<RecordingRenditions>,
    subscription: Subscription,
    ended: tokio::sync::watch::Receiver<bool>,
) -> impl std::future::Future<Output = ()> + Send {
    let running = Running::start(parking.clone());
    let started_at = OffsetDateTime::now_utc();
    let recording_id = crate::api::random_alphanumeric(12);
    let prefix = key_prefix(&recording.account, &recording.channel_id, started_at, &recording_id);
    tracing::info!("recording: {} to s3://{}/{prefix}", recording.channel_arn, recording.bucket);
    renditions.set_destination(Destination {
        buckets: buckets.clone(),
        recording: recording.clone(),
        prefix: prefix.clone(),
    });
    record(buckets, parking, recording, renditions, subscription, ended, (running, started_at, recording_id, prefix))
}

async fn record(
    buckets: Arc<Buckets>,
    parking: Arc<Parking>,
    recording: Recording,
    renditions: Arc<RecordingRenditions>,
    mut subscription: Subscription,
    mut ended: tokio::sync::watch::Receiver<bool>,
    (_running, started_at, recording_id, prefix): (Running, OffsetDateTime, String, String),
) {
    let journal = parking.journals.clone().map(|journals| (journals, recording_id.clone()));
    let writer = Writer::new(buckets, recording, prefix, started_at, journal, parking.outbox.clone(), renditions);
    let mut writer = Box::new(writer);
    let mut parked = parking.take(&writer.recording.channel_arn);
    let mut started_written = false;
    while let Some(frame) = next_frame(&mut writer, &mut subscription, &mut ended).await {
        writer.refresh_configs(&subscription);
        // The stream before this one waits in its reconnect window: with the same
        // encoding, this stream continues its recording.
        if let Some(mut earlier) = parked.take() {
            if earlier.continues_with(&writer) {
                earlier.resume_with(&subscription);
                earlier.stream_ids.push(writer.recording.stream_id.clone());
                earlier.parked_until = None;
                earlier.write_journal().await;
                writer = earlier;
                started_written = true;
                tracing::info!("recording: {} continues (reconnect window)", writer.prefix);
            } else {
                tokio::spawn(async move { earlier.finish_parked().await });
            }
        }
        writer.take(frame).await;
        writer.store_thumbnails().await;
        if !started_written && writer.rendition.is_some() {
            started_written = true;
            writer.start().await;
        }
    }
    // Frames still in the ring are part of the stream.
    writer.drain(&mut subscription).await;
    if !started_written {
        writer.start().await;
    }
    if let Some(earlier) = parked.take() {
        // This stream sent nothing: the earlier recording ends as it would have.
        earlier.finish_parked().await;
    }
    let window = writer.recording.reconnect_window;
    if !window.is_zero() && writer.streams < MAX_MERGED_STREAMS {
        writer.close_open().await;
        if !writer.segments.is_empty() {
            let channel_arn = writer.recording.channel_arn.clone();
            tracing::info!("recording: {} waits {window:?} for the publisher to come back", writer.prefix);
            // (Journaled, so that if this node dies waiting, another finishes the recording.)
            writer.parked_until = Some(OffsetDateTime::now_utc() + window);
            writer.write_journal().await;
            match parking.park(&channel_arn, writer, window) {
                Ok(()) => return,
                Err(back) => writer = back,
            }
        }
    }
    writer.finish().await;
    tracing::info!("recording: {} ended ({} segments)", writer.prefix, writer.segments.len());
}

/// Records a transcoded rendition of a stream (its hub) into the recording of the stream, until
/// the rendition ends: `media/hls/{name}/` beside the source's.
pub async fn run_rendition(
    renditions: Arc<RecordingRenditions>,
    name: String,
    mut subscription: Subscription,
    mut ended: tokio::sync::watch::Receiver<bool>,
) {
    let Some(destination) = renditions.destination().cloned() else { return };
    let _running = renditions.writer_started();
    // (Thumbnails are the primary's.)
    let recording = Recording { thumbnails: None, ..destination.recording };
    let started_at = OffsetDateTime::now_utc();
    let mut writer =
        Writer::new(destination.buckets, recording, destination.prefix, started_at, None, None, renditions);
    writer.primary = false;
    writer.rendition = Some(name);
    while let Some(frame) = next_frame(&mut writer, &mut subscription, &mut ended).await {
        writer.refresh_configs(&subscription);
        writer.take(frame).await;
    }
    writer.drain(&mut subscription).await;
    writer.finish().await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_destination_is_known_before_the_recording_task_runs() {
        let root = std::env::temp_dir().join(format!("openivs-recorder-test-{}", std::process::id()));
        let buckets = Arc::new(Buckets::local(root.clone()));
        let hub = crate::live::hub::Hub::new();
        let recording = Recording {
            bucket: "bucket".into(),
            account: "123456789012".into(),
            channel_arn: "arn:aws:ivs:us-west-2:123456789012:channel/abcdABCDefgh".into(),
            channel_id: "abcdABCDefgh".into(),
            channel_name: String::new(),
            stream_id: "st-1".into(),
            thumbnails: None,
            reconnect_window: std::time::Duration::ZERO,
        };
        let renditions = RecordingRenditions::new(Default::default(), true);
        let parking = Arc::new(Parking::default());
        let recording_task =
            run(buckets.clone(), parking.clone(), recording.clone(), renditions.clone(), hub.subscribe(), hub.ended());
        // Not yet polled: a rendition writer starting now must still find where to write.
        let destination = renditions.destination().expect("set before the task runs");
        assert!(destination.prefix.starts_with("ivs/v1/123456789012/abcdABCDefgh/"), "{}", destination.prefix);
        assert_eq!(parking.running.load(std::sync::atomic::Ordering::SeqCst), 1);
        hub.end();
        recording_task.await;
        assert_eq!(parking.running.load(std::sync::atomic::Ordering::SeqCst), 0);
        // A recording whose task is dropped before it ever runs is not left counted (a clean
        // shutdown would wait for it in vain).
        let recording_task = run(buckets, parking.clone(), recording, renditions, hub.subscribe(), hub.ended());
        assert_eq!(parking.running.load(std::sync::atomic::Ordering::SeqCst), 1);
        drop(recording_task);
        assert_eq!(parking.running.load(std::sync::atomic::Ordering::SeqCst), 0);
        let _ = std::fs::remove_dir_all(root);
    }
}

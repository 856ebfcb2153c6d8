//! A live publish, whatever protocol brings it (RTMP, RTMPS, SRT): it goes on the air (a new
//! stream session, or a publisher coming back to a stream its failover slate holds), takes the
//! stream's codec configurations, frames and in-band metadata into the channel's hub, is
//! checked every second against the channel type's limits and the media timeout, and at its end
//! records the session's end and frees the channel. The protocol's session owns the connection
//! and turns what arrives into these calls; everything a stream does downstream (playback,
//! recording, transcoding, events) is the same whichever protocol it came by.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use openivs_media::aac::AudioSpecificConfig;
use openivs_media::video::{VideoCoding, VideoRecord};
use openivs_model::resources::{AudioConfiguration, VideoConfiguration};
use time::OffsetDateTime;

use super::multitrack::Tracks;
use super::{Authorized, IngestContext, Refusal};
use crate::events::{Breach, STREAM_HEALTH_CHANGE, STREAM_STATE_CHANGE};
use crate::live::LiveStream;
use crate::live::hub::{MediaFrame, MetadataSource, SlateSettings, TimedMetadata, TrackConfig, TrackKind};
use crate::live::session::{SessionRecorder, new_stream_id};
use crate::live::stats::Health;

pub const MAX_STREAM_DURATION: Duration = Duration::from_secs(48 * 3600);
/// The ingest configuration is first recorded after this much media, then refreshed.
const INGEST_CONFIGURATION_FIRST: Duration = Duration::from_secs(4);
const INGEST_CONFIGURATION_REFRESH: Duration = Duration::from_secs(10);
/// The bitrate limit is judged once this much media arrived, over the last 5 s of media time,
/// with this tolerance (encoders overshoot).
const BITRATE_WINDOW_SECONDS: u64 = 5;
const BITRATE_TOLERANCE: f64 = 1.25;
/// In-band timed metadata larger than PutMetadata allows is dropped.
const MAX_INBAND_METADATA_BYTES: usize = 1024;

/// Why a session ended, as recorded in its "Session Ended" event (`None`: a normal end).
pub type EndCode = Option<&'static str>;
/// How a stream ended: an error for the log (the connection failed), and the end code.
pub type Outcome = (Result<(), String>, EndCode);

/// Limits of a channel type (IVS: BASIC up to 1080p at 1.5 Mbit/s (≤480p) or 3.5 Mbit/s;
/// STANDARD and ADVANCED up to 1080p60 at 8.5 Mbit/s).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct IngestLimits {
    pub max_pixels: u64,
    pub max_edge: u32,
    pub max_framerate: f64,
    low_resolution_bitrate: f64,
    bitrate: f64,
}

impl IngestLimits {
    pub fn for_channel_type(channel_type: &str) -> IngestLimits {
        match channel_type {
            "BASIC" => IngestLimits {
                max_pixels: 1920 * 1080,
                max_edge: 1920,
                max_framerate: 60.0,
                low_resolution_bitrate: 1_500_000.0,
                bitrate: 3_500_000.0,
            },
            _ => IngestLimits {
                max_pixels: 1920 * 1080,
                max_edge: 1920,
                max_framerate: 60.0,
                low_resolution_bitrate: 8_500_000.0,
                bitrate: 8_500_000.0,
            },
        }
    }

    /// The bitrate allowed for a picture of this height.
    pub fn max_bitrate(&self, height: u32) -> f64 {
        if height <= 480 { self.low_resolution_bitrate } else { self.bitrate }
    }
}

/// A stream on the air, whatever brings it: the protocol's session hands it configurations,
/// frames and metadata, calls [`Publish::check`] every second, and [`Publish::end`] at the end.
pub struct Publish {
    stream: LiveStream,
    recorder: SessionRecorder,
    limits: IngestLimits,
    /// The server's own bounds (media timeout, largest decoder configuration).
    bounds: crate::settings::Limits,
    video: Option<VideoRecord>,
    audio: Option<AudioSpecificConfig>,
    encoder_name: String,
    started_at: Instant,
    first_media_at: Option<Instant>,
    ingest_recorded_at: Option<Instant>,
    starving: bool,
    /// The stream ended because the publisher went away (the connection closed or failed, or
    /// media stopped): what a failover slate covers.
    dropped: bool,
    /// The frame rate `onMetaData` announced (the transcoder's ladder depends on it).
    announced_framerate: Option<f64>,
    /// The server's transcoding, and the playback the renditions join.
    transcoding: Arc<crate::transcode::Transcoding>,
    playback: Arc<crate::playback::Playback>,
    /// Multitrack video: the tracks after the first.
    tracks: Tracks,
    /// Whether the stream's renditions were decided (transcoded, multitrack, or none).
    renditions_decided: bool,
}

/// How long a publisher that came back waits for the stream's session to be handed over.
const HANDOVER_WITHIN: Duration = Duration::from_secs(5);
/// How often the task waiting for a comeback looks at the slate.
const COMEBACK_CHECK: Duration = Duration::from_millis(250);

/// Holds a dropped stream while its failover slate plays: records the slate's start and end,
/// and hands the session to a publisher that comes back (`None`), or returns it once the slate
/// has shown for its maximum, or never went on the air, or on StopStream (the stream then ends).
async fn await_comeback(live: &LiveStream, mut recorder: SessionRecorder) -> Option<SessionRecorder> {
    let Some(settings) = live.hub.failover() else { return Some(recorder) };
    live.await_comeback();
    let mut showing = live.hub.slate_showing();
    let dropped_at = Instant::now();
    let mut on_air_since: Option<Instant> = None;
    let mut check = tokio::time::interval(COMEBACK_CHECK);
    loop {
        tokio::select! {
            to = live.comeback() => {
                // If the new connection is gone already, the stream ends here.
                return to.send(recorder).err();
            }
            _ = live.stop.notified() => break,
            _ = check.tick() => {
                let slate = *showing.borrow_and_update();
                recorder.note_slate(slate).await;
                if let Some(on_air) = slate {
                    on_air_since.get_or_insert(on_air.since);
                }
                let over = match (slate, on_air_since) {
                    (Some(_), Some(since)) => since.elapsed() >= settings.max_display + COMEBACK_CHECK,
                    // Off the air again (its maximum is over).
                    (None, Some(_)) => true,
                    // Never on it (no picture to show yet).
                    (_, None) => dropped_at.elapsed() >= settings.activation + Duration::from_secs(2),
                };
                if over {
                    break;
                }
            }
        }
    }
    if live.give_up_comeback() {
        return Some(recorder);
    }
    // A publisher took over at the last moment.
    live.comeback().await.send(recorder).err()
}

/// Puts a publish whose key `authorized` let through on the air. A publisher coming back while
/// its channel's failover slate holds the stream takes the stream (and its session) over;
/// anyone else opens a new session. `Err`: refused, with no session left open.
pub async fn begin(
    authorized: Authorized,
    stream_key: &str,
    secure: bool,
    peer: SocketAddr,
    context: &IngestContext,
) -> Result<Publish, Refusal> {
    let now = OffsetDateTime::now_utc();
    let comeback = context.live.take_over(&authorized.channel.arn);
    let (live, recorder, comes_back) = match comeback {
        Some((live, session)) => {
            let Ok(Ok(recorder)) = tokio::time::timeout(HANDOVER_WITHIN, session).await else {
                return Err(Refusal::Unavailable);
            };
            live.hub.publisher_rejoins();
            // A new connection: its rates are measured afresh.
            *live.stats.lock().expect("stats lock") = crate::live::stats::IngestStats::new(Instant::now());
            (live, recorder, true)
        }
        None => {
            let (live, recorder) = go_live(authorized, stream_key, secure, context, now).await?;
            (live, recorder, false)
        }
    };
    let channel = recorder.channel().clone();
    if comes_back {
        tracing::info!("ingest: {} is back (stream {}, from {peer})", live.channel_arn, live.stream_id);
    } else {
        tracing::info!("ingest: {} is live (stream {}, from {peer})", live.channel_arn, live.stream_id);
    }
    Ok(Publish {
        stream: live,
        recorder,
        limits: IngestLimits::for_channel_type(&channel.channel_type),
        bounds: context.limits,
        video: None,
        audio: None,
        encoder_name: String::new(),
        started_at: Instant::now(),
        // A comeback continues the stream: no second "Stream Start".
        first_media_at: comes_back.then(Instant::now),
        ingest_recorded_at: None,
        starving: false,
        dropped: false,
        announced_framerate: None,
        transcoding: context.transcoding.clone(),
        playback: context.playback.clone(),
        tracks: Tracks::new(channel.multitrack_input_configuration.clone()),
        renditions_decided: false,
    })
}

/// Opens a new stream session and puts the stream on the air: registry, failover slate,
/// post-roll, packaging.
async fn go_live(
    authorized: Authorized,
    stream_key: &str,
    secure: bool,
    context: &IngestContext,
    now: OffsetDateTime,
) -> Result<(LiveStream, SessionRecorder), Refusal> {
    let mut recorder = context.open_session(authorized, stream_key, secure, &new_stream_id(), now).await?;
    let channel = recorder.channel().clone();
    let arn = openivs_model::Arn::parse(&channel.arn);
    let live = arn.map(|arn| LiveStream::new(&channel.arn, &arn.account, &arn.region, recorder.stream_id(), now));
    let Some(live) = live.filter(|live| context.live.try_start(live.clone())) else {
        // Neither can happen (stored ARNs are valid; the store holds the one open session),
        // but the session opened must be closed all the same.
        recorder.end_in_background(false, None, OffsetDateTime::now_utc()).await;
        return Err(Refusal::Unavailable);
    };
    if let Some(lease) = recorder.lease() {
        let keep = crate::cluster::registry::keep_lease(
            context.store.clone(),
            context.live.clone(),
            live.clone(),
            lease.clone(),
        );
        tokio::spawn(keep);
    }
    live.hub.set_post_roll(context.post_roll(&channel).await);
    if let Some(slate) = recorder.failover_slate() {
        let seconds = |s: i64| Duration::from_secs(s.max(0) as u64);
        let settings = SlateSettings {
            activation: seconds(slate.activation_threshold_seconds),
            min_display: seconds(slate.min_slate_display_seconds),
            max_display: seconds(slate.max_slate_display_seconds),
        };
        live.hub.set_failover(Some(settings));
        tokio::spawn(crate::live::slate::run(live.hub.clone(), settings));
    }
    // Recording too, so it has the stream from its first frame.
    let recording = recorder.recording_configuration().filter(|config| config.state == "ACTIVE");
    if let (Some(config), Some(arn)) = (recording, openivs_model::Arn::parse(&channel.arn)) {
        let target = crate::recording::recorder::Recording {
            bucket: config.destination_configuration.s3.as_ref().map(|s3| s3.bucket_name.clone()).unwrap_or_default(),
            account: arn.account.clone(),
            channel_arn: channel.arn.clone(),
            channel_id: arn.id.clone(),
            channel_name: channel.name.clone(),
            stream_id: recorder.stream_id().to_owned(),
            thumbnails: crate::recording::recorder::ThumbnailSettings::of(&config.thumbnail_configuration),
            reconnect_window: Duration::from_secs(config.recording_reconnect_window_seconds.max(0) as u64),
        };
        let renditions = crate::recording::renditions::RecordingRenditions::new(
            config.rendition_configuration.clone(),
            !channel.channel_type.starts_with("ADVANCED"),
        );
        let _ = live.recording.set(renditions.clone());
        tokio::spawn(crate::recording::recorder::run(
            context.buckets.clone(),
            context.recordings.clone(),
            target,
            renditions,
            live.hub.subscribe(),
            live.hub.ended(),
        ));
    }
    // Packaging starts with the stream, so a viewer who sees it live can play it.
    // ADVANCED channels never offer the source itself (once their renditions play).
    let source_listed = !channel.channel_type.starts_with("ADVANCED");
    context.playback.start_stream(
        &live,
        crate::playback::packager::Packaging::of_channel(&channel.container_format, &channel.latency_mode),
        source_listed,
    );
    if context.transcoding.available()
        && channel.channel_type != "BASIC"
        && let Some(source) = context.playback.channel(&channel.arn)
    {
        // Renditions are coming once the picture is known: new viewers wait for them.
        source.renditions_expected.store(usize::MAX, std::sync::atomic::Ordering::SeqCst);
    }
    Ok((live, recorder))
}

impl Publish {
    /// Notified when the stream is to stop (StopStream).
    /// What the stream name said about GetClientConfiguration (RTMP; SRT has no multitrack).
    pub fn set_answered(&mut self, answered: super::client_configuration::Answered) {
        self.tracks.set_answered(answered);
    }

    pub fn stop(&self) -> Arc<tokio::sync::Notify> {
        self.stream.stop.clone()
    }

    /// Bytes arrived from the publisher (what the ingest bitrate counts).
    pub fn received(&self, bytes: usize) {
        self.stream.stats.lock().expect("stats lock").on_received(Instant::now(), bytes);
    }

    /// The publisher went away (the connection closed or failed, or media stopped): what a
    /// failover slate covers.
    pub fn dropped(&mut self) {
        self.dropped = true;
    }

    pub fn has_video_configuration(&self) -> bool {
        self.video.is_some()
    }

    pub fn has_audio_configuration(&self) -> bool {
        self.audio.is_some()
    }

    /// The encoder's name, as the publisher states it (RTMP's onMetaData).
    pub fn set_encoder(&mut self, name: &str) {
        self.encoder_name = name.chars().take(128).collect();
    }

    /// The frame rate the publisher announces (the transcoder's ladder depends on it).
    pub fn announce_framerate(&mut self, rate: f64) {
        if (1.0..=240.0).contains(&rate) {
            self.announced_framerate = Some(rate);
        }
    }

    /// A decoder configuration record (H.264's avcC, HEVC's hvcC), parsed and checked against
    /// the channel type's limits (a breach is recorded).
    fn picture(&mut self, coding: VideoCoding, config: &[u8]) -> Result<VideoRecord, EndCode> {
        // The configuration rides in front of every keyframe the packager writes.
        if config.len() > self.bounds.ingest_max_decoder_configuration {
            return Err(Some("InvalidVideoConfiguration"));
        }
        let record = VideoRecord::parse(coding, config).map_err(|_| Some("InvalidVideoConfiguration"))?;
        let limits = self.limits;
        let pixels = u64::from(record.width) * u64::from(record.height);
        let edge = u64::from(record.width.max(record.height));
        if pixels > limits.max_pixels || edge > u64::from(limits.max_edge) {
            // IVS names the limit in total pixels, or in pixels per edge when only that one is passed.
            let breach = if pixels > limits.max_pixels {
                Breach {
                    limit_name: "Ingest Resolution",
                    limit_value: limits.max_pixels,
                    exceeded_by: pixels - limits.max_pixels,
                    limit_unit: "total pixels",
                }
            } else {
                Breach {
                    limit_name: "Ingest Resolution",
                    limit_value: u64::from(limits.max_edge),
                    exceeded_by: edge - u64::from(limits.max_edge),
                    limit_unit: "pixels per edge",
                }
            };
            self.recorder.breach(breach, OffsetDateTime::now_utc());
            return Err(Some("IngestResolutionExceeded"));
        }
        Ok(record)
    }

    /// The stream's (track 0's) picture configuration: checked, then the hub takes it. The
    /// stream's renditions are decided here (transcoding admitted), or, on a channel that takes
    /// multitrack video, at the first picture, once every track has announced itself.
    /// The stream's picture is H.264 (IVS's single-track ingest; thumbnails are decoded from it).
    pub fn video_configuration(&mut self, config: &[u8]) -> Result<(), EndCode> {
        if self.tracks.answered_invalid() {
            return Err(Some("InvalidGetClientConfigurationStreamKey"));
        }
        let record = self.picture(VideoCoding::Avc, config)?;
        self.stream.hub.set_config(TrackKind::Video, TrackConfig::video(&record, Bytes::copy_from_slice(config)));
        self.video = Some(record);
        if !self.tracks.accepts_multitrack() || self.first_media_at.is_some() {
            self.decide_renditions()?;
        }
        Ok(())
    }

    /// Once: the stream's renditions. A multitrack publish brings its own (no transcoding); a
    /// channel that requires multitrack refuses a single track; otherwise the channel type's
    /// ladder is admitted against the transcoding capacity.
    fn decide_renditions(&mut self) -> Result<(), EndCode> {
        let Some(record) = &self.video else { return Ok(()) };
        if self.renditions_decided {
            return Ok(());
        }
        self.renditions_decided = true;
        let (width, height) = (record.width, record.height);
        self.tracks.check_answered((width, height))?;
        if self.tracks.is_multitrack() && !self.tracks.within_maximum_resolution(width, height) {
            return Err(Some("InvalidMultitrackInputVideoTrackMediaProperties"));
        }
        if !self.tracks.is_multitrack() && self.tracks.required() {
            return Err(Some("MultitrackInputRequired"));
        }
        let multitrack = self.tracks.is_multitrack();
        start_transcoding(self, width, height, multitrack)
    }

    /// A further track's picture configuration (multitrack video, H.264 or HEVC): a new track
    /// becomes a rendition of the stream's playlists.
    pub fn track_configuration(&mut self, track: u8, coding: VideoCoding, config: &[u8]) -> Result<(), EndCode> {
        if !self.tracks.accepts_multitrack() {
            return Err(Some("MultitrackInputNotAllowed"));
        }
        if self.renditions_decided && !self.tracks.has(track) {
            // Tracks announce themselves before media flows; one that comes later is refused.
            return Err(Some("InvalidMultitrackInputTrackCount"));
        }
        let record = self.picture(coding, config)?;
        let audio = self.audio.as_ref().map(|asc| TrackConfig::audio(asc, Bytes::copy_from_slice(&asc.to_bytes())));
        let frame_rate = self.announced_framerate.unwrap_or(30.0);
        let Some(rendition) = self.tracks.configuration(track, config, record, audio, frame_rate)? else {
            return Ok(());
        };
        let source = self.playback.channel(&self.stream.channel_arn).filter(|p| *p.id == *self.stream.stream_id);
        if let Some(source) = source {
            tracing::info!("ingest: {} track {track} is rendition {}", self.stream.channel_arn, rendition.name);
            self.playback.start_renditions(&self.stream, &source, vec![(rendition.name, false, rendition.hub)]);
        }
        Ok(())
    }

    /// A further track's video frame.
    pub fn track_frame(&mut self, track: u8, dts_ms: i64, pts_ms: i64, keyframe: bool, data: Bytes) {
        let now = Instant::now();
        self.tracks.frame(
            track,
            MediaFrame {
                kind: TrackKind::Video,
                dts_ms,
                pts_ms,
                keyframe,
                data,
                arrival: now,
                arrival_wall: OffsetDateTime::now_utc(),
                discontinuity: false,
            },
        );
    }

    /// Whether the channel takes multitrack video.
    pub fn accepts_multitrack(&self) -> bool {
        self.tracks.accepts_multitrack()
    }

    /// Whether a further track's frames can be decoded (its configuration came).
    pub fn has_track(&self, track: u8) -> bool {
        self.tracks.has(track)
    }

    /// An AAC AudioSpecificConfig.
    pub fn audio_configuration(&mut self, config: &[u8]) -> Result<(), EndCode> {
        if config.len() > self.bounds.ingest_max_decoder_configuration {
            return Err(Some("InvalidAudioConfiguration"));
        }
        let asc = AudioSpecificConfig::parse(config).map_err(|_| Some("InvalidAudioConfiguration"))?;
        let audio = TrackConfig::audio(&asc, Bytes::copy_from_slice(config));
        self.tracks.audio_configuration(&audio);
        self.stream.hub.set_config(TrackKind::Audio, audio);
        self.audio = Some(asc);
        Ok(())
    }

    /// Periodic checks: media timeout, maximum duration, bitrate and frame-rate limits, health
    /// events, and the ingest configuration record.
    pub async fn check(&mut self) -> Option<Outcome> {
        let now = Instant::now();
        let wall = OffsetDateTime::now_utc();
        let (idle, health, media_bitrate, framerate) = {
            let stats = self.stream.stats.lock().expect("stats lock");
            (stats.idle(now), stats.health(now), stats.media_bitrate(), stats.video_framerate())
        };
        if idle >= crate::settings::Limits::seconds(self.bounds.ingest_media_timeout) {
            self.dropped = true;
            return Some((Ok(()), Some("IngestTimeout")));
        }
        let slate = *self.stream.hub.slate_showing().borrow();
        self.recorder.note_slate(slate).await;
        for notice in self.stream.take_transcode_notices() {
            let _ = self.recorder.event(notice.name, STREAM_STATE_CHANGE, notice.code, wall).await;
        }
        if now.duration_since(self.started_at) >= MAX_STREAM_DURATION {
            return Some((Ok(()), Some("MaximumDurationReached")));
        }
        if let Some(first) = self.first_media_at
            && now.duration_since(first) >= Duration::from_secs(BITRATE_WINDOW_SECONDS + 1)
        {
            let height = self.video.as_ref().map_or(0, |record| record.height);
            let max_bitrate = self.limits.max_bitrate(height);
            if media_bitrate > max_bitrate * BITRATE_TOLERANCE {
                let breach = Breach {
                    limit_name: "Ingest Bitrate",
                    limit_value: max_bitrate as u64,
                    exceeded_by: (media_bitrate - max_bitrate) as u64,
                    limit_unit: "bits per second",
                };
                self.recorder.breach(breach, wall);
                return Some((Ok(()), Some("IngestBitrateExceeded")));
            }
            if framerate > self.limits.max_framerate * 1.1 {
                let breach = Breach {
                    limit_name: "Ingest Framerate",
                    limit_value: self.limits.max_framerate as u64,
                    exceeded_by: (framerate - self.limits.max_framerate).ceil() as u64,
                    limit_unit: "frames per second",
                };
                self.recorder.breach(breach, wall);
                return Some((Ok(()), Some("IngestFramerateExceeded")));
            }
        }
        let starving = health == Health::Starving;
        if starving != self.starving {
            self.starving = starving;
            let name = if starving { "Starvation Start" } else { "Starvation End" };
            let _ = self.recorder.event(name, STREAM_HEALTH_CHANGE, None, wall).await;
        }
        let due = match (self.first_media_at, self.ingest_recorded_at) {
            (Some(first), None) => now.duration_since(first) >= INGEST_CONFIGURATION_FIRST,
            (Some(_), Some(last)) => now.duration_since(last) >= INGEST_CONFIGURATION_REFRESH,
            _ => false,
        };
        if due {
            self.ingest_recorded_at = Some(now);
            let _ = self.record_ingest_configuration().await;
        }
        None
    }

    pub async fn record_ingest_configuration(&mut self) -> Result<(), openivs_model::IvsError> {
        if self.video.is_none() && self.audio.is_none() {
            return Ok(());
        }
        let (video_bitrate, audio_bitrate, framerate) = {
            let stats = self.stream.stats.lock().expect("stats lock");
            (stats.video_bitrate(), stats.audio_bitrate(), stats.video_framerate())
        };
        let video = self
            .video
            .as_ref()
            .map(|record| video_configuration(record, &self.encoder_name, video_bitrate, framerate.round() as i64, 0));
        let audio = self.audio.as_ref().map(|asc| AudioConfiguration {
            codec: asc.codec_string(),
            target_bitrate: audio_bitrate,
            sample_rate: i64::from(asc.sample_rate),
            channels: i64::from(asc.channels),
            track: "Track0".into(),
        });
        let videos = video.into_iter().chain(self.tracks.video_configurations(&self.encoder_name)).collect();
        self.recorder.set_ingest_configuration(videos, audio).await
    }

    /// One frame of media, timed in the publisher's milliseconds. `Err`: the stream is refused
    /// (its renditions, decided by the first picture at the latest, cannot be).
    pub async fn frame(
        &mut self,
        kind: TrackKind,
        dts_ms: i64,
        pts_ms: i64,
        keyframe: bool,
        data: Bytes,
    ) -> Result<(), EndCode> {
        let now = Instant::now();
        let wall = OffsetDateTime::now_utc();
        // (Tracks announce themselves before the first picture; audio may come earlier.)
        if !self.renditions_decided && kind == TrackKind::Video {
            self.decide_renditions()?;
        }
        {
            let mut stats = self.stream.stats.lock().expect("stats lock");
            stats.on_media(now, kind, data.len(), dts_ms);
            if keyframe && kind == TrackKind::Video {
                stats.on_keyframe(dts_ms);
            }
        }
        if self.first_media_at.is_none() {
            self.first_media_at = Some(now);
            let _ = self.recorder.event("Stream Start", STREAM_STATE_CHANGE, None, wall).await;
        }
        let frame =
            MediaFrame { kind, dts_ms, pts_ms, keyframe, data, arrival: now, arrival_wall: wall, discontinuity: false };
        if kind == TrackKind::Audio {
            self.tracks.audio(&frame);
        }
        self.stream.hub.publish(frame);
        Ok(())
    }

    /// Timed metadata from the broadcaster, within PutMetadata's limits (1 KB, 5 per second per
    /// channel); beyond them it is dropped, as a call would be refused.
    pub fn put_inband_metadata(&self, text: String) {
        let now = Instant::now();
        if text.is_empty() || text.len() > MAX_INBAND_METADATA_BYTES || !self.stream.admit_metadata(now) {
            tracing::debug!("in-band timed metadata dropped ({} bytes, or over 5 per second)", text.len());
            return;
        }
        self.stream.hub.put_metadata(TimedMetadata {
            text,
            source: MetadataSource::InBand,
            arrival: now,
            arrival_wall: time::OffsetDateTime::now_utc(),
        });
    }

    /// The stream is over (`outcome`): its last ingest configuration is recorded; if the
    /// publisher dropped and a failover slate holds the stream, the session waits for a
    /// publisher to come back (who continues it); otherwise the session ends and the channel
    /// is free again. Returns the outcome's result (for the connection's log).
    pub async fn end(mut self, outcome: Outcome, context: &IngestContext) -> Result<(), String> {
        let (result, code) = outcome;
        let _ = self.record_ingest_configuration().await;
        let stream_started = self.first_media_at.is_some();
        let live = self.stream.clone();
        let mut recorder = self.recorder;
        if self.dropped && live.hub.failover().is_some() {
            // The failover slate holds the stream: the publisher may come back and continue it.
            tracing::info!("ingest: {} dropped; its failover slate holds the stream", live.channel_arn);
            match await_comeback(&live, recorder).await {
                Some(session) => recorder = session,
                None => return result,
            }
        }
        self.tracks.end();
        live.hub.end();
        // The stream is over: record it, then free the channel.
        recorder.note_slate(None).await;
        recorder.end_in_background(stream_started, code, OffsetDateTime::now_utc()).await;
        context.live.finish(&live);
        tracing::info!(
            "ingest: {} is offline (stream {}{})",
            live.channel_arn,
            live.stream_id,
            code.map(|c| format!(", {c}")).unwrap_or_default()
        );
        result
    }
}

/// What GetStreamSession reports of a video track (`Track{track}`) from its configuration and
/// what was measured of it.
/// (IVS's deprecated `avcProfile` and `avcLevel` repeat `profile` and `level`.)
pub fn video_configuration(
    record: &VideoRecord,
    encoder: &str,
    bitrate: i64,
    frame_rate: i64,
    track: u8,
) -> VideoConfiguration {
    VideoConfiguration {
        avc_profile: record.profile.clone(),
        avc_level: record.level.clone(),
        codec: record.codec.clone(),
        encoder: encoder.to_owned(),
        target_bitrate: bitrate,
        target_framerate: frame_rate,
        video_height: i64::from(record.height),
        video_width: i64::from(record.width),
        level: record.level.clone(),
        track: format!("Track{track}"),
        profile: record.profile.clone(),
    }
}

/// When the stream's renditions are decided: its ladder (by channel type, picture and
/// announced frame rate), admitted against the transcoding capacity and started. Over capacity,
/// the stream is refused before any media flows, as IVS refuses it ("Stream Failure").
fn start_transcoding(state: &mut Publish, width: u32, height: u32, multitrack: bool) -> Result<(), EndCode> {
    if state.stream.transcoding.swap(true, std::sync::atomic::Ordering::SeqCst) {
        return Ok(());
    }
    let channel = state.recorder.channel();
    let (channel_type, preset) = (channel.channel_type.clone(), channel.preset.clone());
    let frame_rate = state.announced_framerate.unwrap_or(30.0);
    let input = crate::transcode::ladder::Input { width, height, frame_rate };
    let source = state.playback.channel(&state.stream.channel_arn).filter(|p| *p.id == *state.stream.stream_id);
    let no_renditions = || {
        if let Some(source) = &source {
            source.renditions_expected.store(0, std::sync::atomic::Ordering::SeqCst);
        }
    };
    if multitrack {
        // The broadcaster's tracks are the renditions: nothing to transcode, nothing to wait for;
        // the recording selects among them (they all announced themselves before the first picture).
        no_renditions();
        let tracks = state.tracks.renditions();
        if let Some(recording) = state.stream.recording.get() {
            recording
                .set_ladder(tracks.iter().map(|(name, width, height, _)| (name.clone(), *width, *height)).collect());
        }
        let videos = tracks.iter().map(|(name, width, height, hub)| (name.as_str(), *width, *height, hub));
        crate::recording::record_renditions(&state.stream, videos);
        return Ok(());
    }
    let plan = state.transcoding.plan(&channel_type, &preset, input);
    if let Some(recording) = state.stream.recording.get() {
        // What the recording may select among: the encoded video renditions.
        let ladder = match &plan {
            Ok(Some(plan)) => plan
                .ladder
                .iter()
                .filter_map(|r| match r.video {
                    Some(crate::transcode::ladder::Video::Encoded { width, height, .. }) => {
                        Some((r.name.clone(), width, height))
                    }
                    _ => None,
                })
                .collect(),
            _ => Vec::new(),
        };
        recording.set_ladder(ladder);
    }
    match plan {
        Ok(Some(plan)) => {
            let Some(source) = source.clone() else {
                no_renditions();
                return Ok(());
            };
            tracing::info!(
                "transcode: {} ({width}x{height} at {frame_rate} fps) into {}",
                state.stream.channel_arn,
                plan.ladder.iter().map(|r| r.name.as_str()).collect::<Vec<_>>().join(", ")
            );
            tokio::spawn(crate::transcode::run(
                state.transcoding.clone(),
                plan,
                state.stream.clone(),
                state.playback.clone(),
                source,
            ));
            Ok(())
        }
        Ok(None) => {
            no_renditions();
            if channel_type != "BASIC"
                && let Some(why) = &state.transcoding.unavailable
            {
                tracing::info!("transcode: {} serves its source only: {why}", state.stream.channel_arn);
                state.stream.note_transcoding(crate::transcode::Notice {
                    name: "Transcode Failure",
                    code: Some("TranscoderUnavailable"),
                });
            }
            Ok(())
        }
        Err(crate::transcode::OverCapacity) => {
            no_renditions();
            tracing::warn!(
                "ingest: {} refused: transcoding capacity ({} of {} units in use)",
                state.stream.channel_arn,
                state.transcoding.in_use(),
                state.bounds.transcode_capacity
            );
            state.recorder.stream_failure(crate::transcode::CAPACITY_EXCEEDED, OffsetDateTime::now_utc());
            Err(None)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_by_channel_type() {
        let basic = IngestLimits::for_channel_type("BASIC");
        assert_eq!(basic.max_bitrate(480), 1_500_000.0);
        assert_eq!(basic.max_bitrate(720), 3_500_000.0);
        assert_eq!(IngestLimits::for_channel_type("STANDARD").max_bitrate(1080), 8_500_000.0);
    }
}

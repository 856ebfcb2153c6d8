//! One RTMP(S) connection, from handshake to disconnect.
//!
//! Setup (handshake, `connect`, `createStream`, `publish`) must finish within the setup timeout
//! (`ingest_setup_timeout`), with messages no larger than `ingest_max_setup_message`: before the
//! key is checked, a peer can make the server hold little. `publish` is authorised by the stream
//! key ([`IngestContext::authorize`]); a refusal is sent as an onStatus error and the connection
//! closed, with no stream session created. Once live, media goes to the channel's hub and
//! measurements; the session is recorded ([`SessionRecorder`]). The stream ends when the
//! publisher leaves, on StopStream, after `ingest_media_timeout` without media progress, after
//! [`MAX_STREAM_DURATION`], or when it breaks the channel type's ingest limits.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use openivs_media::aac::AudioSpecificConfig;
use openivs_media::amf0::{self, Value};
use openivs_media::flv::{self, AudioPacket, VideoCodec, VideoPacket};
use openivs_media::h264::{DecoderConfiguration, SequenceParameterSet};
use openivs_media::rtmp::chunk::{ChunkDecoder, ChunkEncoder, Limits};
use openivs_media::rtmp::handshake::{self, C0_C1_LEN, C2_LEN};
use openivs_media::rtmp::{Message, message_type};
use openivs_model::resources::{AudioConfiguration, VideoConfiguration};
use time::OffsetDateTime;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use super::{Authorized, IngestContext, Refusal};
use crate::events::{Breach, STREAM_HEALTH_CHANGE, STREAM_STATE_CHANGE};
use crate::live::LiveStream;
use crate::live::hub::{MediaFrame, MetadataSource, SlateSettings, TimedMetadata, TrackConfig, TrackKind};
use crate::live::session::{SessionRecorder, new_stream_id};
use crate::live::stats::Health;

pub const MAX_STREAM_DURATION: Duration = Duration::from_secs(48 * 3600);
const OUR_CHUNK_SIZE: usize = 4096;
const WINDOW_ACK_SIZE: u32 = 2_500_000;
/// Bytes read per call; the buffer grows only while a chunk larger than this is arriving.
const READ_BUFFER: usize = 16 * 1024;
/// The application name IVS ingest uses.
const APPLICATION: &str = "app";
/// The ingest configuration is first recorded after this much media, then refreshed.
const INGEST_CONFIGURATION_FIRST: Duration = Duration::from_secs(4);
const INGEST_CONFIGURATION_REFRESH: Duration = Duration::from_secs(10);
/// The bitrate limit is judged once this much media arrived, over the last 5 s of media time,
/// with this tolerance (encoders overshoot).
const BITRATE_WINDOW_SECONDS: u64 = 5;
const BITRATE_TOLERANCE: f64 = 1.25;

/// Why a session ended, as recorded in its "Session Ended" event (`None`: a normal end).
type EndCode = Option<&'static str>;

pub async fn serve<S: AsyncRead + AsyncWrite + Unpin + Send>(
    io: S,
    secure: bool,
    peer: SocketAddr,
    context: Arc<IngestContext>,
) {
    let mut connection = Connection::new(io, &context.limits);
    match connection.run(secure, peer, &context).await {
        Ok(()) => tracing::debug!("ingest: connection from {peer} closed"),
        Err(reason) => tracing::debug!("ingest: connection from {peer} closed: {reason}"),
    }
}

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

struct Connection<S> {
    io: S,
    buffer: BytesMut,
    decoder: ChunkDecoder,
    encoder: ChunkEncoder,
    received: u64,
    acknowledged: u64,
    peer_window: u32,
}

/// The state of a connection that is live.
struct Publishing {
    stream: LiveStream,
    recorder: SessionRecorder,
    limits: IngestLimits,
    /// The server's own bounds (media timeout, largest decoder configuration).
    bounds: crate::settings::Limits,
    video: Option<(DecoderConfiguration, SequenceParameterSet)>,
    audio: Option<AudioSpecificConfig>,
    encoder_name: String,
    started_at: Instant,
    first_media_at: Option<Instant>,
    ingest_recorded_at: Option<Instant>,
    starving: bool,
    timeline: Timeline,
    /// The stream ended because the publisher went away (the connection closed or failed, or
    /// media stopped): what a failover slate covers.
    dropped: bool,
    /// The frame rate `onMetaData` announced (the transcoder's ladder depends on it).
    announced_framerate: Option<f64>,
    /// The server's transcoding, and the playback the renditions join.
    transcoding: Arc<crate::transcode::Transcoding>,
    playback: Arc<crate::playback::Playback>,
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

/// Extends 32-bit RTMP timestamps (which wrap after 49.7 days) to a monotonic i64.
#[derive(Default)]
struct Timeline {
    last: Option<u32>,
    wraps: i64,
}

impl Timeline {
    fn extend(&mut self, timestamp: u32) -> i64 {
        if let Some(last) = self.last
            && timestamp < last
            && last - timestamp > 0x8000_0000
        {
            self.wraps += 1;
        }
        self.last = Some(timestamp);
        self.wraps * (1i64 << 32) + i64::from(timestamp)
    }
}

fn command(name: &str, transaction: f64, values: Vec<Value>) -> Bytes {
    let mut all = vec![Value::string(name), Value::Number(transaction)];
    all.extend(values);
    amf0::encode_all(&all).into()
}

fn status(level: &str, code: &str, description: &str) -> Bytes {
    command(
        "onStatus",
        0.0,
        vec![
            Value::Null,
            Value::object([
                ("level", Value::string(level)),
                ("code", Value::string(code)),
                ("description", Value::string(description)),
            ]),
        ],
    )
}

impl<S: AsyncRead + AsyncWrite + Unpin + Send> Connection<S> {
    fn new(io: S, limits: &crate::settings::Limits) -> Self {
        let setup_limits = Limits {
            max_message_len: limits.ingest_max_setup_message,
            max_partial_bytes: 2 * limits.ingest_max_setup_message,
            max_chunk_streams: 8,
        };
        Connection {
            io,
            buffer: BytesMut::with_capacity(READ_BUFFER),
            decoder: ChunkDecoder::new(setup_limits),
            encoder: ChunkEncoder::new(128),
            received: 0,
            acknowledged: 0,
            peer_window: WINDOW_ACK_SIZE,
        }
    }

    async fn send(&mut self, messages: &[Message]) -> Result<(), String> {
        let mut out = Vec::new();
        for message in messages {
            self.encoder.encode(message, &mut out);
            if message.type_id == message_type::SET_CHUNK_SIZE {
                self.encoder.set_chunk_size(OUR_CHUNK_SIZE);
            }
        }
        self.io.write_all(&out).await.map_err(|e| format!("write failed: {e}"))?;
        self.io.flush().await.map_err(|e| format!("write failed: {e}"))
    }

    /// Reads more bytes; acknowledges them as the peer's window asks. `Ok(false)` at end of stream.
    async fn fill(&mut self) -> Result<bool, String> {
        if self.buffer.capacity() - self.buffer.len() < READ_BUFFER / 2 {
            self.buffer.reserve(READ_BUFFER);
        }
        let read = self.io.read_buf(&mut self.buffer).await.map_err(|e| format!("read failed: {e}"))?;
        if read == 0 {
            return Ok(false);
        }
        self.received += read as u64;
        if self.received - self.acknowledged >= u64::from(self.peer_window) {
            self.acknowledged = self.received;
            self.send(&[Message::control(message_type::ACKNOWLEDGEMENT, self.received as u32)]).await?;
        }
        Ok(true)
    }

    async fn handshake(&mut self) -> Result<(), String> {
        let mut c0_c1 = vec![0u8; C0_C1_LEN];
        self.io.read_exact(&mut c0_c1).await.map_err(|e| format!("handshake: {e}"))?;
        let random: [u8; 32] = rand::random();
        let response = handshake::server_response(&c0_c1, 0, &random).map_err(|e| e.to_string())?;
        self.io.write_all(&response).await.map_err(|e| format!("handshake: {e}"))?;
        let mut c2 = vec![0u8; C2_LEN];
        self.io.read_exact(&mut c2).await.map_err(|e| format!("handshake: {e}"))?;
        Ok(())
    }

    async fn run(&mut self, secure: bool, peer: SocketAddr, context: &IngestContext) -> Result<(), String> {
        let setup_timeout = crate::settings::Limits::seconds(context.limits.ingest_setup_timeout);
        let setup = tokio::time::timeout(setup_timeout, self.setup(secure, context)).await;
        let (authorized, stream_key, stream_name_id) = match setup {
            Err(_) => return Err("setup timed out".into()),
            Ok(result) => match result? {
                Some(ready) => ready,
                None => return Ok(()),
            },
        };
        self.publish(authorized, &stream_key, secure, stream_name_id, peer, context).await
    }

    /// Handshake and commands up to an accepted `publish`. `None`: the peer left or was refused.
    async fn setup(
        &mut self,
        secure: bool,
        context: &IngestContext,
    ) -> Result<Option<(Authorized, String, u32)>, String> {
        self.handshake().await?;
        loop {
            while let Some(message) = self.decoder.decode(&mut self.buffer).map_err(|e| e.to_string())? {
                match message.type_id {
                    message_type::WINDOW_ACK_SIZE => self.note_window(&message),
                    message_type::COMMAND_AMF0 | message_type::COMMAND_AMF3 => {
                        let payload = amf_payload(&message);
                        let values = amf0::decode_all_bounded(payload, context.limits.ingest_max_amf0_values)
                            .map_err(|e| e.to_string())?;
                        if let Some(done) = self.setup_command(&values, &message, secure, context).await? {
                            return Ok(done);
                        }
                    }
                    _ => {}
                }
            }
            if !self.fill().await? {
                return Ok(None);
            }
        }
    }

    fn note_window(&mut self, message: &Message) {
        if let Some(bytes) = message.payload.get(..4) {
            let window = u32::from_be_bytes(bytes.try_into().expect("4 bytes"));
            self.peer_window = window.max(4096);
        }
    }

    /// Answers one setup command. `Some(Some(..))`: publish accepted; `Some(None)`: refused.
    async fn setup_command(
        &mut self,
        values: &[Value],
        message: &Message,
        secure: bool,
        context: &IngestContext,
    ) -> Result<Option<Option<(Authorized, String, u32)>>, String> {
        let name = values.first().and_then(Value::as_str).unwrap_or("");
        let transaction = values.get(1).and_then(Value::as_f64).unwrap_or(0.0);
        match name {
            "connect" => {
                let app = values.get(2).and_then(|o| o.get("app")).and_then(Value::as_str).unwrap_or("");
                let app = app.trim_end_matches('/');
                if app != APPLICATION {
                    let info = Value::object([
                        ("level", Value::string("error")),
                        ("code", Value::string("NetConnection.Connect.Rejected")),
                        ("description", Value::string("Unknown application: publish to /app/{streamKey}")),
                    ]);
                    self.send(&[Message::new(
                        3,
                        message_type::COMMAND_AMF0,
                        0,
                        0,
                        command("_error", transaction, vec![Value::Null, info]),
                    )])
                    .await?;
                    return Ok(Some(None));
                }
                let properties =
                    Value::object([("fmsVer", Value::string("FMS/3,0,1,123")), ("capabilities", Value::Number(31.0))]);
                let info = Value::object([
                    ("level", Value::string("status")),
                    ("code", Value::string("NetConnection.Connect.Success")),
                    ("description", Value::string("Connection succeeded.")),
                    ("objectEncoding", Value::Number(0.0)),
                ]);
                let mut peer_bandwidth = WINDOW_ACK_SIZE.to_be_bytes().to_vec();
                peer_bandwidth.push(2);
                self.send(&[
                    Message::control(message_type::WINDOW_ACK_SIZE, WINDOW_ACK_SIZE),
                    Message::new(2, message_type::SET_PEER_BANDWIDTH, 0, 0, peer_bandwidth),
                    Message::control(message_type::SET_CHUNK_SIZE, OUR_CHUNK_SIZE as u32),
                    Message::new(
                        3,
                        message_type::COMMAND_AMF0,
                        0,
                        0,
                        command("_result", transaction, vec![properties, info]),
                    ),
                ])
                .await?;
            }
            "releaseStream" | "FCPublish" => {
                self.send(&[Message::new(
                    3,
                    message_type::COMMAND_AMF0,
                    0,
                    0,
                    command("_result", transaction, vec![Value::Null, Value::Undefined]),
                )])
                .await?;
            }
            "createStream" => {
                self.send(&[Message::new(
                    3,
                    message_type::COMMAND_AMF0,
                    0,
                    0,
                    command("_result", transaction, vec![Value::Null, Value::Number(1.0)]),
                )])
                .await?;
            }
            "publish" => {
                let stream_name = values.get(3).and_then(Value::as_str).unwrap_or("");
                // Broadcast tools may append "?query" to the key.
                let stream_key = stream_name.split('?').next().unwrap_or("");
                let stream_id = message.stream_id.max(1);
                // A key that names no channel is refused here; the rest is decided when the
                // session opens (IngestContext::open_session).
                return match context.authorize(stream_key, secure).await {
                    Ok(authorized) => Ok(Some(Some((authorized, stream_key.to_owned(), stream_id)))),
                    Err(refusal) => {
                        self.refuse(refusal, stream_id).await?;
                        Ok(Some(None))
                    }
                };
            }
            _ => {}
        }
        Ok(None)
    }

    async fn refuse(&mut self, refusal: Refusal, stream_id: u32) -> Result<(), String> {
        tracing::info!("ingest: publish refused: {refusal:?}");
        let (code, description) = refusal.status();
        self.send(&[Message::new(5, message_type::COMMAND_AMF0, stream_id, 0, status("error", code, description))])
            .await
    }

    async fn publish(
        &mut self,
        authorized: Authorized,
        stream_key: &str,
        secure: bool,
        stream_id: u32,
        peer: SocketAddr,
        context: &IngestContext,
    ) -> Result<(), String> {
        let now = OffsetDateTime::now_utc();
        // A publisher coming back while its channel's failover slate holds the stream takes the
        // stream (and its session) over; anyone else opens a new session.
        let comeback = context.live.take_over(&authorized.channel.arn);
        let (live, recorder, comes_back) = match comeback {
            Some((live, session)) => {
                let Ok(Ok(recorder)) = tokio::time::timeout(HANDOVER_WITHIN, session).await else {
                    return self.refuse(Refusal::Unavailable, stream_id).await;
                };
                live.hub.publisher_rejoins();
                // A new connection: its rates are measured afresh.
                *live.stats.lock().expect("stats lock") = crate::live::stats::IngestStats::new(Instant::now());
                (live, recorder, true)
            }
            None => match self.go_live(authorized, stream_key, secure, context, now).await {
                Ok((live, recorder)) => (live, recorder, false),
                Err(refusal) => return self.refuse(refusal, stream_id).await,
            },
        };
        let channel = recorder.channel().clone();
        let limits = IngestLimits::for_channel_type(&channel.channel_type);
        if comes_back {
            tracing::info!("ingest: {} is back (stream {}, from {peer})", live.channel_arn, live.stream_id);
        } else {
            tracing::info!("ingest: {} is live (stream {}, from {peer})", live.channel_arn, live.stream_id);
        }
        // The publisher is known now: frames may be as large as a keyframe gets.
        self.decoder.set_limits(Limits {
            max_message_len: context.limits.ingest_max_message,
            max_partial_bytes: 2 * context.limits.ingest_max_message,
            ..Limits::default()
        });
        let mut stream_begin = vec![0, 0];
        stream_begin.extend_from_slice(&stream_id.to_be_bytes());
        self.send(&[
            Message::new(2, message_type::USER_CONTROL, 0, 0, stream_begin),
            Message::new(
                5,
                message_type::COMMAND_AMF0,
                stream_id,
                0,
                status("status", "NetStream.Publish.Start", "Publishing."),
            ),
        ])
        .await?;
        let mut state = Publishing {
            stream: live.clone(),
            recorder,
            limits,
            bounds: context.limits,
            video: None,
            audio: None,
            encoder_name: String::new(),
            started_at: Instant::now(),
            // A comeback continues the stream: no second "Stream Start".
            first_media_at: comes_back.then(Instant::now),
            ingest_recorded_at: None,
            starving: false,
            timeline: Timeline::default(),
            dropped: false,
            announced_framerate: None,
            transcoding: context.transcoding.clone(),
            playback: context.playback.clone(),
        };
        let (result, code) = self.stream(&mut state).await;
        let _ = self.record_ingest_configuration(&mut state).await;
        let stream_started = state.first_media_at.is_some();
        let mut recorder = state.recorder;
        if state.dropped && live.hub.failover().is_some() {
            // The failover slate holds the stream: the publisher may come back and continue it.
            tracing::info!("ingest: {} dropped; its failover slate holds the stream", live.channel_arn);
            match await_comeback(&live, recorder).await {
                Some(session) => recorder = session,
                None => return result,
            }
        }
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

    /// Opens a new stream session and puts the stream on the air: registry, failover slate,
    /// post-roll, packaging.
    async fn go_live(
        &mut self,
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
                bucket: config
                    .destination_configuration
                    .s3
                    .as_ref()
                    .map(|s3| s3.bucket_name.clone())
                    .unwrap_or_default(),
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

    /// Receives media until the stream ends; returns how it ended.
    async fn stream(&mut self, state: &mut Publishing) -> (Result<(), String>, EndCode) {
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        let stop = state.stream.stop.clone();
        loop {
            // Everything already buffered first.
            loop {
                match self.decoder.decode(&mut self.buffer) {
                    Ok(Some(message)) => match self.on_message(state, message).await {
                        Ok(None) => {}
                        Ok(Some(end)) => return end,
                        Err(code) => return (Err(format!("stream refused: {}", code.unwrap_or("error"))), code),
                    },
                    Ok(None) => break,
                    Err(error) => return (Err(error.to_string()), Some("InvalidStream")),
                }
            }
            tokio::select! {
                filled = self.fill() => match filled {
                    Ok(true) => {}
                    Ok(false) => {
                        state.dropped = true;
                        return (Ok(()), None);
                    }
                    Err(error) => {
                        state.dropped = true;
                        return (Err(error), None);
                    }
                },
                _ = stop.notified() => return (Ok(()), None),
                _ = tick.tick() => {
                    if let Some(end) = self.check(state).await {
                        return end;
                    }
                }
            }
        }
    }

    /// Periodic checks: media timeout, maximum duration, bitrate and frame-rate limits, health
    /// events, and the ingest configuration record.
    async fn check(&mut self, state: &mut Publishing) -> Option<(Result<(), String>, EndCode)> {
        let now = Instant::now();
        let wall = OffsetDateTime::now_utc();
        let (idle, health, media_bitrate, framerate) = {
            let stats = state.stream.stats.lock().expect("stats lock");
            (stats.idle(now), stats.health(now), stats.media_bitrate(), stats.video_framerate())
        };
        if idle >= crate::settings::Limits::seconds(state.bounds.ingest_media_timeout) {
            state.dropped = true;
            return Some((Ok(()), Some("IngestTimeout")));
        }
        let slate = *state.stream.hub.slate_showing().borrow();
        state.recorder.note_slate(slate).await;
        for notice in state.stream.take_transcode_notices() {
            let _ = state.recorder.event(notice.name, STREAM_STATE_CHANGE, notice.code, wall).await;
        }
        if now.duration_since(state.started_at) >= MAX_STREAM_DURATION {
            return Some((Ok(()), Some("MaximumDurationReached")));
        }
        if let Some(first) = state.first_media_at
            && now.duration_since(first) >= Duration::from_secs(BITRATE_WINDOW_SECONDS + 1)
        {
            let height = state.video.as_ref().map_or(0, |(_, sps)| sps.height);
            let max_bitrate = state.limits.max_bitrate(height);
            if media_bitrate > max_bitrate * BITRATE_TOLERANCE {
                let breach = Breach {
                    limit_name: "Ingest Bitrate",
                    limit_value: max_bitrate as u64,
                    exceeded_by: (media_bitrate - max_bitrate) as u64,
                    limit_unit: "bits per second",
                };
                state.recorder.breach(breach, wall);
                return Some((Ok(()), Some("IngestBitrateExceeded")));
            }
            if framerate > state.limits.max_framerate * 1.1 {
                let breach = Breach {
                    limit_name: "Ingest Framerate",
                    limit_value: state.limits.max_framerate as u64,
                    exceeded_by: (framerate - state.limits.max_framerate).ceil() as u64,
                    limit_unit: "frames per second",
                };
                state.recorder.breach(breach, wall);
                return Some((Ok(()), Some("IngestFramerateExceeded")));
            }
        }
        let starving = health == Health::Starving;
        if starving != state.starving {
            state.starving = starving;
            let name = if starving { "Starvation Start" } else { "Starvation End" };
            let _ = state.recorder.event(name, STREAM_HEALTH_CHANGE, None, wall).await;
        }
        let due = match (state.first_media_at, state.ingest_recorded_at) {
            (Some(first), None) => now.duration_since(first) >= INGEST_CONFIGURATION_FIRST,
            (Some(_), Some(last)) => now.duration_since(last) >= INGEST_CONFIGURATION_REFRESH,
            _ => false,
        };
        if due {
            state.ingest_recorded_at = Some(now);
            let _ = self.record_ingest_configuration(state).await;
        }
        None
    }

    async fn record_ingest_configuration(&mut self, state: &mut Publishing) -> Result<(), openivs_model::IvsError> {
        if state.video.is_none() && state.audio.is_none() {
            return Ok(());
        }
        let (video_bitrate, audio_bitrate, framerate) = {
            let stats = state.stream.stats.lock().expect("stats lock");
            (stats.video_bitrate(), stats.audio_bitrate(), stats.video_framerate())
        };
        let video = state.video.as_ref().map(|(config, sps)| VideoConfiguration {
            avc_profile: sps.profile_name().into(),
            avc_level: sps.level_name(),
            codec: config.codec_string(),
            encoder: state.encoder_name.clone(),
            target_bitrate: video_bitrate,
            target_framerate: framerate.round() as i64,
            video_height: i64::from(sps.height),
            video_width: i64::from(sps.width),
            level: sps.level_name(),
            track: "Track0".into(),
            profile: sps.profile_name().into(),
        });
        let audio = state.audio.as_ref().map(|asc| AudioConfiguration {
            codec: asc.codec_string(),
            target_bitrate: audio_bitrate,
            sample_rate: i64::from(asc.sample_rate),
            channels: i64::from(asc.channels),
            track: "Track0".into(),
        });
        state.recorder.set_ingest_configuration(video, audio).await
    }

    /// One message while live. `Ok(Some(end))` ends the stream normally (unpublish);
    /// `Err(code)` ends it on a refusal (limits, codecs).
    async fn on_message(
        &mut self,
        state: &mut Publishing,
        message: Message,
    ) -> Result<Option<(Result<(), String>, EndCode)>, EndCode> {
        state.stream.stats.lock().expect("stats lock").on_received(Instant::now(), message.payload.len());
        match message.type_id {
            message_type::VIDEO => self.on_video(state, &message).await,
            message_type::AUDIO => self.on_audio(state, &message).await,
            message_type::DATA_AMF0 | message_type::DATA_AMF3 => {
                if let Ok(values) = amf0::decode_all_bounded(amf_payload(&message), state.bounds.ingest_max_amf0_values)
                {
                    on_data(state, &values);
                }
                Ok(None)
            }
            message_type::COMMAND_AMF0 | message_type::COMMAND_AMF3 => {
                let values = amf0::decode_all_bounded(amf_payload(&message), state.bounds.ingest_max_amf0_values)
                    .unwrap_or_default();
                match values.first().and_then(Value::as_str) {
                    Some("FCUnpublish" | "deleteStream" | "closeStream") => Ok(Some((Ok(()), None))),
                    _ => Ok(None),
                }
            }
            message_type::WINDOW_ACK_SIZE => {
                self.note_window(&message);
                Ok(None)
            }
            _ => Ok(None),
        }
    }

    async fn on_video(
        &mut self,
        state: &mut Publishing,
        message: &Message,
    ) -> Result<Option<(Result<(), String>, EndCode)>, EndCode> {
        let packet = flv::parse_video(&message.payload).map_err(|_| Some("InvalidVideoCodec"))?;
        match packet {
            VideoPacket::SequenceHeader { codec: VideoCodec::Avc, config } => {
                // The configuration rides in front of every keyframe the packager writes.
                if config.len() > state.bounds.ingest_max_decoder_configuration {
                    return Err(Some("InvalidVideoConfiguration"));
                }
                let avcc = DecoderConfiguration::parse(config).map_err(|_| Some("InvalidVideoConfiguration"))?;
                let sps = avcc
                    .sps
                    .first()
                    .and_then(|nal| SequenceParameterSet::parse(nal).ok())
                    .ok_or(Some("InvalidVideoConfiguration"))?;
                let limits = state.limits;
                let pixels = u64::from(sps.width) * u64::from(sps.height);
                let edge = u64::from(sps.width.max(sps.height));
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
                    state.recorder.breach(breach, OffsetDateTime::now_utc());
                    return Err(Some("IngestResolutionExceeded"));
                }
                start_transcoding(state, sps.width, sps.height)?;
                state.stream.hub.set_config(
                    TrackKind::Video,
                    TrackConfig {
                        codec: avcc.codec_string(),
                        config: Bytes::copy_from_slice(config),
                        width: sps.width,
                        height: sps.height,
                        sample_rate: 0,
                        channels: 0,
                    },
                );
                state.video = Some((avcc, sps));
            }
            VideoPacket::SequenceHeader { .. } => return Err(Some("InvalidVideoCodec")),
            VideoPacket::Frame { codec: VideoCodec::Avc, keyframe, composition_time, data } => {
                if state.video.is_none() {
                    // Frames before the configuration cannot be decoded; drop them.
                    return Ok(None);
                }
                let dts = state.timeline.extend(message.timestamp);
                let data = message.payload.slice_ref(data);
                self.media(state, TrackKind::Video, dts, dts + i64::from(composition_time), keyframe, data).await;
            }
            VideoPacket::Frame { .. } => return Err(Some("InvalidVideoCodec")),
            VideoPacket::EndOfSequence | VideoPacket::Ignored => {}
        }
        Ok(None)
    }

    async fn on_audio(
        &mut self,
        state: &mut Publishing,
        message: &Message,
    ) -> Result<Option<(Result<(), String>, EndCode)>, EndCode> {
        match flv::parse_audio(&message.payload) {
            Ok(AudioPacket::AacSequenceHeader(config)) => {
                if config.len() > state.bounds.ingest_max_decoder_configuration {
                    return Err(Some("InvalidAudioConfiguration"));
                }
                let asc = AudioSpecificConfig::parse(config).map_err(|_| Some("InvalidAudioConfiguration"))?;
                state.stream.hub.set_config(
                    TrackKind::Audio,
                    TrackConfig {
                        codec: asc.codec_string(),
                        config: Bytes::copy_from_slice(config),
                        width: 0,
                        height: 0,
                        sample_rate: asc.sample_rate,
                        channels: asc.channels,
                    },
                );
                state.audio = Some(asc);
            }
            Ok(AudioPacket::AacFrame(data)) if state.audio.is_some() => {
                let dts = state.timeline.extend(message.timestamp);
                let data = message.payload.slice_ref(data);
                self.media(state, TrackKind::Audio, dts, dts, false, data).await;
            }
            // Audio other than AAC is not part of what IVS ingests: ignored.
            Ok(_) => {}
            Err(_) => return Err(Some("InvalidAudioCodec")),
        }
        Ok(None)
    }

    async fn media(
        &mut self,
        state: &mut Publishing,
        kind: TrackKind,
        dts_ms: i64,
        pts_ms: i64,
        keyframe: bool,
        data: Bytes,
    ) {
        let now = Instant::now();
        let wall = OffsetDateTime::now_utc();
        state.stream.stats.lock().expect("stats lock").on_media(now, kind, data.len(), dts_ms);
        if state.first_media_at.is_none() {
            state.first_media_at = Some(now);
            let _ = state.recorder.event("Stream Start", STREAM_STATE_CHANGE, None, wall).await;
        }
        state.stream.hub.publish(MediaFrame {
            kind,
            dts_ms,
            pts_ms,
            keyframe,
            data,
            arrival: now,
            arrival_wall: wall,
            discontinuity: false,
        });
    }
}

/// The AMF0 values of a command or data message (AMF3 variants start with one format byte).
fn amf_payload(message: &Message) -> &[u8] {
    match message.type_id {
        message_type::COMMAND_AMF3 | message_type::DATA_AMF3 => message.payload.get(1..).unwrap_or(&[]),
        _ => &message.payload,
    }
}

/// Data messages: `@setDataFrame onMetaData {…}` or `onMetaData {…}` (the encoder's name), and
/// timed metadata from the broadcaster, `onTextData {text: …}` or `onCuePoint {…}` (either may
/// come after `@setDataFrame`).
/// At the stream's first picture configuration: its ladder (by channel type, picture and
/// announced frame rate), admitted against the transcoding capacity and started. Over capacity,
/// the stream is refused before any media flows, as IVS refuses it ("Stream Failure").
fn start_transcoding(state: &mut Publishing, width: u32, height: u32) -> Result<(), EndCode> {
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

fn on_data(state: &mut Publishing, values: &[Value]) {
    let values = match values.first().and_then(Value::as_str) {
        Some("@setDataFrame") => &values[1..],
        _ => values,
    };
    match values.first().and_then(Value::as_str) {
        Some("onMetaData") => {
            if let Some(encoder) = values.get(1).and_then(|m| m.get("encoder")).and_then(Value::as_str) {
                state.encoder_name = encoder.chars().take(128).collect();
            }
            if let Some(Value::Number(rate)) = values.get(1).and_then(|m| m.get("framerate"))
                && (1.0..=240.0).contains(rate)
            {
                state.announced_framerate = Some(*rate);
            }
        }
        Some(kind @ ("onTextData" | "onCuePoint")) => {
            let Some(body) = values.get(1) else { return };
            let text = match (kind, body.get("text").and_then(Value::as_str)) {
                ("onTextData", Some(text)) => text.to_owned(),
                _ => amf_to_json(body).to_string(),
            };
            put_inband_metadata(state, text);
        }
        _ => {}
    }
}

/// Timed metadata from the broadcaster, within PutMetadata's limits (1 KB, 5 per second per
/// channel); beyond them it is dropped, as a call would be refused.
fn put_inband_metadata(state: &Publishing, text: String) {
    let now = Instant::now();
    if text.is_empty() || text.len() > MAX_INBAND_METADATA_BYTES || !state.stream.admit_metadata(now) {
        tracing::debug!("in-band timed metadata dropped ({} bytes, or over 5 per second)", text.len());
        return;
    }
    state.stream.hub.put_metadata(TimedMetadata {
        text,
        source: MetadataSource::InBand,
        arrival: now,
        arrival_wall: time::OffsetDateTime::now_utc(),
    });
}

const MAX_INBAND_METADATA_BYTES: usize = 1024;

/// An AMF0 value as JSON (cue points' names and parameters).
fn amf_to_json(value: &Value) -> serde_json::Value {
    match value {
        Value::Number(n) => serde_json::Number::from_f64(*n).map_or(serde_json::Value::Null, serde_json::Value::Number),
        Value::Boolean(b) => serde_json::Value::Bool(*b),
        Value::String(s) => serde_json::Value::String(s.clone()),
        Value::Object(properties) => {
            serde_json::Value::Object(properties.iter().map(|(k, v)| (k.clone(), amf_to_json(v))).collect())
        }
        Value::StrictArray(items) => serde_json::Value::Array(items.iter().map(amf_to_json).collect()),
        Value::Date(ms) => serde_json::Number::from_f64(*ms).map_or(serde_json::Value::Null, serde_json::Value::Number),
        Value::Null | Value::Undefined => serde_json::Value::Null,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timeline_survives_the_32_bit_wrap() {
        let mut timeline = Timeline::default();
        assert_eq!(timeline.extend(u32::MAX - 10), i64::from(u32::MAX - 10));
        assert_eq!(timeline.extend(5), (1i64 << 32) + 5);
        // Small steps back (B-frames, interleaving) are not wraps.
        assert_eq!(timeline.extend(3), (1i64 << 32) + 3);
    }

    #[test]
    fn limits_by_channel_type() {
        let basic = IngestLimits::for_channel_type("BASIC");
        assert_eq!(basic.max_bitrate(480), 1_500_000.0);
        assert_eq!(basic.max_bitrate(720), 3_500_000.0);
        assert_eq!(IngestLimits::for_channel_type("STANDARD").max_bitrate(1080), 8_500_000.0);
    }
}

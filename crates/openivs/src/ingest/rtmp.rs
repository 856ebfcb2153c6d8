//! One RTMP(S) connection, from handshake to disconnect.
//!
//! Setup (handshake, `connect`, `createStream`, `publish`) must finish within the setup timeout
//! (`ingest_setup_timeout`), with messages no larger than `ingest_max_setup_message`: before the
//! key is checked, a peer can make the server hold little. `publish` is authorised by the stream
//! key ([`IngestContext::authorize`]); a refusal is sent as an onStatus error and the connection
//! closed, with no stream session created. Once live, FLV video and audio and AMF data become
//! [`Publish`] calls (configurations, frames, the encoder's name, in-band metadata); it decides
//! the rest, including when the stream ends (StopStream, media timeout, limits). The stream also
//! ends when the publisher unpublishes or leaves.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use openivs_media::amf0::{self, Value};
use openivs_media::flv::{self, AudioPacket, VideoCodec, VideoPacket};
use openivs_media::rtmp::chunk::{ChunkDecoder, ChunkEncoder, Limits};
use openivs_media::rtmp::handshake::{self, C0_C1_LEN, C2_LEN};
use openivs_media::rtmp::{Message, message_type};
use openivs_media::video::VideoCoding;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use super::client_configuration::Answered;
use super::publish::{self, EndCode, Outcome, Publish};
use super::{Authorized, IngestContext, Refusal};
use crate::live::hub::TrackKind;

const OUR_CHUNK_SIZE: usize = 4096;
const WINDOW_ACK_SIZE: u32 = 2_500_000;

/// A publish the setup accepted: its channel, its stream key (without the stream name's query),
/// what the query says about GetClientConfiguration, and the RTMP message stream it uses.
struct Accepted {
    authorized: Authorized,
    stream_key: String,
    answered: Answered,
    stream_id: u32,
}
/// Bytes read per call; the buffer grows only while a chunk larger than this is arriving.
const READ_BUFFER: usize = 16 * 1024;
/// The application name IVS ingest uses.
const APPLICATION: &str = "app";
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

struct Connection<S> {
    io: S,
    buffer: BytesMut,
    decoder: ChunkDecoder,
    encoder: ChunkEncoder,
    received: u64,
    acknowledged: u64,
    peer_window: u32,
    /// The most AMF0 values one message may hold.
    max_amf0_values: usize,
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
            max_amf0_values: limits.ingest_max_amf0_values,
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
        let accepted = match setup {
            Err(_) => return Err("setup timed out".into()),
            Ok(result) => match result? {
                Some(ready) => ready,
                None => return Ok(()),
            },
        };
        self.publish(accepted, secure, peer, context).await
    }

    /// Handshake and commands up to an accepted `publish`. `None`: the peer left or was refused.
    async fn setup(&mut self, secure: bool, context: &IngestContext) -> Result<Option<Accepted>, String> {
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
    ) -> Result<Option<Option<Accepted>>, String> {
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
                // Broadcast tools may append "?query" to the key; GetClientConfiguration's
                // answered authentication is the key with a signed query.
                let (stream_key, query) = match stream_name.split_once('?') {
                    Some((key, query)) => (key, Some(query)),
                    None => (stream_name, None),
                };
                let stream_id = message.stream_id.max(1);
                // A key that names no channel is refused here; the rest is decided when the
                // session opens (IngestContext::open_session).
                return match context.authorize(stream_key, secure).await {
                    Ok(authorized) => {
                        let answered = context.client_configurations.verify(stream_key, query);
                        Ok(Some(Some(Accepted { authorized, stream_key: stream_key.to_owned(), answered, stream_id })))
                    }
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

    /// Puts the publish on the air and receives its media until it ends.
    async fn publish(
        &mut self,
        accepted: Accepted,
        secure: bool,
        peer: SocketAddr,
        context: &IngestContext,
    ) -> Result<(), String> {
        let Accepted { authorized, stream_key, answered, stream_id } = accepted;
        let mut publish = match publish::begin(authorized, &stream_key, secure, peer, context).await {
            Ok(publish) => publish,
            Err(refusal) => return self.refuse(refusal, stream_id).await,
        };
        publish.set_answered(answered);
        // The publisher is known now: frames may be as large as a keyframe gets.
        self.decoder.set_limits(Limits {
            max_message_len: context.limits.ingest_max_message,
            max_partial_bytes: 2 * context.limits.ingest_max_message,
            ..Limits::default()
        });
        let mut stream_begin = vec![0, 0];
        stream_begin.extend_from_slice(&stream_id.to_be_bytes());
        let started = self
            .send(&[
                Message::new(2, message_type::USER_CONTROL, 0, 0, stream_begin),
                Message::new(
                    5,
                    message_type::COMMAND_AMF0,
                    stream_id,
                    0,
                    status("status", "NetStream.Publish.Start", "Publishing."),
                ),
            ])
            .await;
        let outcome = match started {
            Ok(()) => self.stream(&mut publish).await,
            Err(error) => {
                publish.dropped();
                (Err(error), None)
            }
        };
        publish.end(outcome, context).await
    }

    /// Receives media until the stream ends; returns how it ended.
    async fn stream(&mut self, publish: &mut Publish) -> Outcome {
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        let stop = publish.stop();
        let mut timeline = Timeline::default();
        loop {
            // Everything already buffered first.
            loop {
                match self.decoder.decode(&mut self.buffer) {
                    Ok(Some(message)) => match self.on_message(publish, &mut timeline, message).await {
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
                        publish.dropped();
                        return (Ok(()), None);
                    }
                    Err(error) => {
                        publish.dropped();
                        return (Err(error), None);
                    }
                },
                _ = stop.notified() => return (Ok(()), None),
                _ = tick.tick() => {
                    if let Some(end) = publish.check().await {
                        return end;
                    }
                }
            }
        }
    }

    /// One message while live. `Ok(Some(end))` ends the stream normally (unpublish);
    /// `Err(code)` ends it on a refusal (limits, codecs).
    async fn on_message(
        &mut self,
        publish: &mut Publish,
        timeline: &mut Timeline,
        message: Message,
    ) -> Result<Option<Outcome>, EndCode> {
        publish.received(message.payload.len());
        let max_values = self.max_amf0_values;
        match message.type_id {
            message_type::VIDEO => on_video(publish, timeline, &message).await.map(|()| None),
            message_type::AUDIO => on_audio(publish, timeline, &message).await.map(|()| None),
            message_type::DATA_AMF0 | message_type::DATA_AMF3 => {
                if let Ok(values) = amf0::decode_all_bounded(amf_payload(&message), max_values) {
                    on_data(publish, &values);
                }
                Ok(None)
            }
            message_type::COMMAND_AMF0 | message_type::COMMAND_AMF3 => {
                let values = amf0::decode_all_bounded(amf_payload(&message), max_values).unwrap_or_default();
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
}

async fn on_video(publish: &mut Publish, timeline: &mut Timeline, message: &Message) -> Result<(), EndCode> {
    let tracks = flv::parse_video_tracks(&message.payload).map_err(|_| Some("InvalidVideoCodec"))?;
    let mut dts = None;
    for (track, packet) in tracks {
        match packet {
            VideoPacket::SequenceHeader { codec: VideoCodec::Avc, config } if track == 0 => {
                publish.video_configuration(config)?
            }
            // Multitrack: a further track is H.264 or HEVC (IVS takes HEVC on multitrack channels,
            // which are fMP4 only).
            VideoPacket::SequenceHeader { codec: VideoCodec::Avc, config } if track != 0 => {
                publish.track_configuration(track, VideoCoding::Avc, config)?
            }
            VideoPacket::SequenceHeader { codec: VideoCodec::Hevc, config } if track != 0 => {
                publish.track_configuration(track, VideoCoding::Hevc, config)?
            }
            // Track 0 is H.264: every viewer's player can play it, thumbnails are decoded from it,
            // and GetClientConfiguration answers it so.
            VideoPacket::SequenceHeader { .. } if track != 0 || publish.accepts_multitrack() => {
                return Err(Some("InvalidMultitrackInputVideoTrackMediaProperties"));
            }
            VideoPacket::SequenceHeader { .. } => return Err(Some("InvalidVideoCodec")),
            VideoPacket::Frame {
                codec: codec @ (VideoCodec::Avc | VideoCodec::Hevc),
                keyframe,
                composition_time,
                data,
            } if track != 0 || codec == VideoCodec::Avc => {
                let decodable = if track == 0 { publish.has_video_configuration() } else { publish.has_track(track) };
                if !decodable {
                    // Frames before their configuration cannot be decoded; drop them.
                    continue;
                }
                let dts = *dts.get_or_insert_with(|| timeline.extend(message.timestamp));
                let (pts, data) = (dts + i64::from(composition_time), message.payload.slice_ref(data));
                if track == 0 {
                    publish.frame(TrackKind::Video, dts, pts, keyframe, data).await?;
                } else {
                    publish.track_frame(track, dts, pts, keyframe, data);
                }
            }
            VideoPacket::Frame { .. } => return Err(Some("InvalidVideoCodec")),
            VideoPacket::EndOfSequence | VideoPacket::Ignored => {}
        }
    }
    Ok(())
}

async fn on_audio(publish: &mut Publish, timeline: &mut Timeline, message: &Message) -> Result<(), EndCode> {
    match flv::parse_audio(&message.payload) {
        Ok(AudioPacket::AacSequenceHeader(config)) => publish.audio_configuration(config)?,
        Ok(AudioPacket::AacFrame(data)) if publish.has_audio_configuration() => {
            let dts = timeline.extend(message.timestamp);
            let data = message.payload.slice_ref(data);
            publish.frame(TrackKind::Audio, dts, dts, false, data).await?;
        }
        // Audio other than AAC is not part of what IVS ingests: ignored.
        Ok(_) => {}
        Err(_) => return Err(Some("InvalidAudioCodec")),
    }
    Ok(())
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
fn on_data(publish: &mut Publish, values: &[Value]) {
    let values = match values.first().and_then(Value::as_str) {
        Some("@setDataFrame") => &values[1..],
        _ => values,
    };
    match values.first().and_then(Value::as_str) {
        Some("onMetaData") => {
            if let Some(encoder) = values.get(1).and_then(|m| m.get("encoder")).and_then(Value::as_str) {
                publish.set_encoder(encoder);
            }
            if let Some(Value::Number(rate)) = values.get(1).and_then(|m| m.get("framerate")) {
                publish.announce_framerate(*rate);
            }
        }
        Some(kind @ ("onTextData" | "onCuePoint")) => {
            let Some(body) = values.get(1) else { return };
            let text = match (kind, body.get("text").and_then(Value::as_str)) {
                ("onTextData", Some(text)) => text.to_owned(),
                _ => amf_to_json(body).to_string(),
            };
            publish.put_inband_metadata(text);
        }
        _ => {}
    }
}

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
}

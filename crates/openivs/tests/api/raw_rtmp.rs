//! A publisher that speaks RTMP itself (with the project's own chunk encoder and AMF0 writer):
//! for what no encoder sends (hostile publishers), for what ffmpeg cannot send (`onCuePoint`),
//! and for many cheap publishes at once (a channel is live from its publish, before any media).

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::time::{Duration, Instant};

use openivs_media::amf0::{self, Value};
use openivs_media::rtmp::chunk::ChunkEncoder;
use openivs_media::rtmp::{Message, message_type};

use crate::harness::Server;

/// A publisher that speaks RTMP itself, to send what no encoder would.
pub(crate) struct RawPublisher {
    stream: TcpStream,
    encoder: ChunkEncoder,
}

impl RawPublisher {
    /// Connects to the plain RTMP listener and completes the handshake.
    pub(crate) fn connect(server: &Server) -> RawPublisher {
        RawPublisher::connect_to(&server.rtmp_address)
    }

    /// Connects to a plain RTMP listener at `address` (`host:port`) and completes the handshake.
    pub(crate) fn connect_to(address: &str) -> RawPublisher {
        let mut stream = crate::ingest::connect_to(address);
        crate::ingest::handshake(&mut stream);
        RawPublisher { stream, encoder: ChunkEncoder::new(128) }
    }

    pub(crate) fn send(&mut self, message: Message) -> std::io::Result<()> {
        let mut wire = Vec::new();
        self.encoder.encode(&message, &mut wire);
        if message.type_id == message_type::SET_CHUNK_SIZE {
            self.encoder.set_chunk_size(1 << 20);
        }
        self.stream.write_all(&wire)
    }

    pub(crate) fn command(&mut self, values: &[Value], stream_id: u32) -> std::io::Result<()> {
        self.send(Message::new(3, message_type::COMMAND_AMF0, stream_id, 0, amf0::encode_all(values)))
    }

    /// Publishes with `key` and waits for `NetStream.Publish.Start`.
    pub(crate) fn publish(server: &Server, key: &str) -> RawPublisher {
        RawPublisher::publish_to(&server.rtmp_address, key)
    }

    /// Publishes with `key` to the plain RTMP listener at `address` (`host:port`).
    pub(crate) fn publish_to(address: &str, key: &str) -> RawPublisher {
        let mut publisher = RawPublisher::connect_to(address);
        publisher.send(Message::control(message_type::SET_CHUNK_SIZE, 1 << 20)).unwrap();
        let app = Value::object([("app", Value::string("app")), ("type", Value::string("nonprivate"))]);
        publisher.command(&[Value::string("connect"), Value::Number(1.0), app], 0).unwrap();
        publisher.command(&[Value::string("createStream"), Value::Number(2.0), Value::Null], 0).unwrap();
        let publish =
            [Value::string("publish"), Value::Number(3.0), Value::Null, Value::string(key), Value::string("live")];
        publisher.command(&publish, 1).unwrap();
        let mut received = Vec::new();
        let mut buffer = [0u8; 4096];
        while !received.windows(23).any(|w| w == b"NetStream.Publish.Start") {
            let n = publisher.stream.read(&mut buffer).expect("the server answers publish");
            assert!(n > 0, "the server closed the connection instead of accepting the publish");
            received.extend_from_slice(&buffer[..n]);
        }
        publisher
    }

    pub(crate) fn video(&mut self, timestamp: u32, body: Vec<u8>) -> std::io::Result<()> {
        self.send(Message::new(6, message_type::VIDEO, 1, timestamp, body))
    }

    pub(crate) fn sequence_header(&mut self, avcc: &[u8]) -> std::io::Result<()> {
        let mut body = vec![0x17, 0, 0, 0, 0];
        body.extend_from_slice(avcc);
        self.video(0, body)
    }

    /// A frame of `size` bytes: one length-prefixed NAL unit of filler.
    pub(crate) fn frame(&mut self, timestamp: u32, keyframe: bool, size: usize) -> std::io::Result<()> {
        let mut body = vec![if keyframe { 0x17 } else { 0x27 }, 1, 0, 0, 0];
        body.extend_from_slice(&(size as u32).to_be_bytes());
        body.push(if keyframe { 0x65 } else { 0x41 });
        body.resize(body.len() + size - 1, 0x5a);
        self.video(timestamp, body)
    }

    /// True once the server closed the connection.
    pub(crate) fn closed_within(&mut self, limit: Duration) -> bool {
        self.stream.set_read_timeout(Some(limit)).unwrap();
        let started = Instant::now();
        let mut buffer = [0u8; 16 * 1024];
        while let Ok(n) = self.stream.read(&mut buffer) {
            if n == 0 {
                break;
            }
        }
        started.elapsed() < limit
    }

    /// Sends an FLV tag as the RTMP message it stands for.
    pub(crate) fn tag(&mut self, tag: &FlvTag) -> std::io::Result<()> {
        let chunk_stream = if tag.tag_type == message_type::VIDEO { 6 } else { 4 };
        self.send(Message::new(chunk_stream, tag.tag_type, 1, tag.timestamp, tag.body.clone()))
    }

    /// A data message (`onCuePoint`, `onTextData`, …) at `timestamp`.
    pub(crate) fn data(&mut self, timestamp: u32, values: &[Value]) -> std::io::Result<()> {
        self.send(Message::new(4, message_type::DATA_AMF0, 1, timestamp, amf0::encode_all(values)))
    }
}

/// One tag of an FLV file: its type (8 audio, 9 video, 18 data), timestamp (ms) and body.
pub(crate) struct FlvTag {
    pub(crate) tag_type: u8,
    pub(crate) timestamp: u32,
    pub(crate) body: Vec<u8>,
}

/// The tags of an FLV file, in order.
pub(crate) fn flv_tags(path: &Path) -> Vec<FlvTag> {
    let flv = std::fs::read(path).unwrap();
    let mut tags = Vec::new();
    let mut offset = 13;
    while offset + 11 <= flv.len() {
        let size = u32::from_be_bytes([0, flv[offset + 1], flv[offset + 2], flv[offset + 3]]) as usize;
        let timestamp = u32::from_be_bytes([flv[offset + 7], flv[offset + 4], flv[offset + 5], flv[offset + 6]]);
        let Some(body) = flv.get(offset + 11..offset + 11 + size) else { break };
        tags.push(FlvTag { tag_type: flv[offset], timestamp, body: body.to_vec() });
        offset += 11 + size + 4;
    }
    tags
}

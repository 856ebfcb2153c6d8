//! The RTMP chunk stream: messages are cut into chunks of at most the peer's chunk size and
//! interleaved by chunk stream id. [`ChunkDecoder`] reassembles messages from received bytes;
//! [`ChunkEncoder`] cuts outgoing messages into chunks.
//!
//! The decoder bounds what a peer can make it hold: a message may be at most
//! [`Limits::max_message_len`] bytes, all partially received messages together may hold at most
//! [`Limits::max_partial_bytes`] of memory (their buffers' capacity, so room reserved ahead of
//! the bytes counts too), and at most [`Limits::max_chunk_streams`] chunk streams may be in use.
//! The limits can be changed between messages ([`ChunkDecoder::set_limits`]): a server keeps
//! them small until it knows who is sending.

use std::collections::HashMap;

use bytes::{Buf, BytesMut};

use super::{Message, message_type};
use crate::{ParseError, Result};

#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_message_len: usize,
    pub max_partial_bytes: usize,
    pub max_chunk_streams: usize,
}

impl Default for Limits {
    fn default() -> Self {
        // A keyframe of an 8.5 Mbit/s 1080p60 stream is well under 4 MiB.
        Limits { max_message_len: 8 << 20, max_partial_bytes: 16 << 20, max_chunk_streams: 64 }
    }
}

/// At most this much is reserved for a message before its bytes arrive.
const PREALLOCATE_LIMIT: usize = 256 << 10;

/// The spec's largest chunk size (2^31 − 1); anything at least as large as a message works alike.
const MAX_CHUNK_SIZE: u32 = 0x7fff_ffff;

#[derive(Debug, Default)]
struct ChunkStream {
    timestamp: u32,
    delta: u32,
    length: usize,
    type_id: u8,
    stream_id: u32,
    extended: bool,
    started: bool,
    partial: Vec<u8>,
}

pub struct ChunkDecoder {
    chunk_size: usize,
    streams: HashMap<u32, ChunkStream>,
    partial_bytes: usize,
    limits: Limits,
}

fn be24(b: &[u8]) -> u32 {
    (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2])
}

impl ChunkDecoder {
    pub fn new(limits: Limits) -> ChunkDecoder {
        ChunkDecoder { chunk_size: 128, streams: HashMap::new(), partial_bytes: 0, limits }
    }

    pub fn chunk_size(&self) -> usize {
        self.chunk_size
    }

    /// New limits for the messages that follow (ones partly received are judged by them too).
    pub fn set_limits(&mut self, limits: Limits) {
        self.limits = limits;
    }

    /// The next complete message, consuming the chunks it took from `buffer`; `None` when more
    /// bytes are needed (a partial chunk stays in `buffer`). Set Chunk Size and Abort messages
    /// take effect here and are returned too.
    pub fn decode(&mut self, buffer: &mut BytesMut) -> Result<Option<Message>> {
        loop {
            let Some(message) = self.decode_chunk(buffer)? else {
                return Ok(None);
            };
            if let Some(message) = message {
                self.apply_control(&message)?;
                return Ok(Some(message));
            }
        }
    }

    fn apply_control(&mut self, message: &Message) -> Result<()> {
        match message.type_id {
            message_type::SET_CHUNK_SIZE => {
                let payload = message.payload.get(..4).ok_or_else(|| ParseError::new("RTMP: short Set Chunk Size"))?;
                let size = u32::from_be_bytes(payload.try_into().expect("4 bytes")) & MAX_CHUNK_SIZE;
                if size == 0 {
                    return Err(ParseError::new("RTMP: chunk size 0"));
                }
                self.chunk_size = size as usize;
            }
            message_type::ABORT => {
                if let Some(payload) = message.payload.get(..4) {
                    let csid = u32::from_be_bytes(payload.try_into().expect("4 bytes"));
                    if let Some(stream) = self.streams.get_mut(&csid) {
                        self.partial_bytes -= stream.partial.capacity();
                        stream.partial = Vec::new();
                    }
                }
            }
            _ => {}
        }
        Ok(())
    }

    /// One chunk: `Ok(None)` = need more bytes; `Ok(Some(None))` = chunk consumed, message not
    /// complete yet; `Ok(Some(Some(m)))` = a message completed.
    fn decode_chunk(&mut self, buffer: &mut BytesMut) -> Result<Option<Option<Message>>> {
        let Some(&first) = buffer.first() else { return Ok(None) };
        let format = first >> 6;
        let (csid, basic_len) = match first & 0x3f {
            0 => match buffer.get(1) {
                Some(&b) => (64 + u32::from(b), 2),
                None => return Ok(None),
            },
            1 => match buffer.get(1..3) {
                Some(b) => (64 + u32::from(b[0]) + 256 * u32::from(b[1]), 3),
                None => return Ok(None),
            },
            id => (u32::from(id), 1),
        };
        if !self.streams.contains_key(&csid) && self.streams.len() >= self.limits.max_chunk_streams {
            return Err(ParseError::new("RTMP: too many chunk streams"));
        }
        let header_len = [11, 7, 3, 0][format as usize];
        let Some(header) = buffer.get(basic_len..basic_len + header_len) else { return Ok(None) };
        let header: [u8; 11] = {
            let mut fixed = [0u8; 11];
            fixed[..header_len].copy_from_slice(header);
            fixed
        };
        let stream = self.streams.entry(csid).or_default();
        if format != 0 && !stream.started {
            return Err(ParseError::new(format!("RTMP: chunk stream {csid} starts without a full header")));
        }
        // A type 3 chunk on a stream with a partial message continues that message.
        let already = stream.partial.len();
        if already > 0 && format != 3 {
            return Err(ParseError::new(format!("RTMP: new message on chunk stream {csid} before the last one ended")));
        }
        let timestamp_field = if format < 3 { be24(&header[..3]) } else { 0 };
        let extended = if format < 3 { timestamp_field == 0xff_ffff } else { stream.extended };
        let mut offset = basic_len + header_len;
        let mut extended_value = None;
        if extended {
            let Some(ext) = buffer.get(offset..offset + 4) else { return Ok(None) };
            extended_value = Some(u32::from_be_bytes(ext.try_into().expect("4 bytes")));
            offset += 4;
        }
        let (length, type_id) = match format {
            0 | 1 => (be24(&header[3..6]) as usize, header[6]),
            _ => (stream.length, stream.type_id),
        };
        if length > self.limits.max_message_len {
            return Err(ParseError::new(format!("RTMP: message of {length} bytes exceeds the limit")));
        }
        let chunk_len = (length - already).min(self.chunk_size);
        let Some(payload) = buffer.get(offset..offset + chunk_len) else {
            // Wait for the whole chunk, unless it could never fit the limits.
            if buffer.len() > self.limits.max_message_len + 32 {
                return Err(ParseError::new("RTMP: chunk larger than the buffer limit"));
            }
            return Ok(None);
        };
        // The chunk is complete: commit the header state.
        if already == 0 {
            let field = extended_value.unwrap_or(timestamp_field);
            match format {
                0 => {
                    stream.timestamp = field;
                    stream.delta = 0;
                    stream.stream_id = u32::from_le_bytes(header[7..11].try_into().expect("4 bytes"));
                }
                1 | 2 => {
                    stream.delta = field;
                    stream.timestamp = stream.timestamp.wrapping_add(field);
                }
                _ => stream.timestamp = stream.timestamp.wrapping_add(stream.delta),
            }
            stream.length = length;
            stream.type_id = type_id;
            if format < 3 {
                stream.extended = extended;
            }
        }
        stream.started = true;
        let capacity_before = stream.partial.capacity();
        // Room for the whole message up front (within reason), not doubling chunk by chunk.
        let wanted = if already == 0 { length.min(PREALLOCATE_LIMIT).max(chunk_len) } else { chunk_len };
        if self.partial_bytes - capacity_before + (already + wanted).max(capacity_before)
            > self.limits.max_partial_bytes
        {
            return Err(ParseError::new("RTMP: too much partially received data"));
        }
        stream.partial.reserve_exact(wanted);
        stream.partial.extend_from_slice(payload);
        self.partial_bytes = self.partial_bytes - capacity_before + stream.partial.capacity();
        buffer.advance(offset + chunk_len);
        if stream.partial.len() < stream.length {
            return Ok(Some(None));
        }
        let payload = std::mem::take(&mut stream.partial);
        self.partial_bytes -= payload.capacity();
        Ok(Some(Some(Message {
            chunk_stream_id: csid,
            timestamp: stream.timestamp,
            type_id: stream.type_id,
            stream_id: stream.stream_id,
            payload: payload.into(),
        })))
    }
}

/// Cuts messages into chunks: a full (type 0) header, then type 3 continuation chunks.
pub struct ChunkEncoder {
    chunk_size: usize,
}

impl ChunkEncoder {
    pub fn new(chunk_size: usize) -> ChunkEncoder {
        ChunkEncoder { chunk_size: chunk_size.max(1) }
    }

    pub fn set_chunk_size(&mut self, chunk_size: usize) {
        self.chunk_size = chunk_size.max(1);
    }

    pub fn encode(&self, message: &Message, out: &mut Vec<u8>) {
        let csid = message.chunk_stream_id.clamp(2, 63) as u8;
        let extended = message.timestamp >= 0xff_ffff;
        let timestamp_field = if extended { 0xff_ffff } else { message.timestamp };
        out.push(csid);
        out.extend_from_slice(&timestamp_field.to_be_bytes()[1..]);
        out.extend_from_slice(&(message.payload.len() as u32).to_be_bytes()[1..]);
        out.push(message.type_id);
        out.extend_from_slice(&message.stream_id.to_le_bytes());
        if extended {
            out.extend_from_slice(&message.timestamp.to_be_bytes());
        }
        for (index, piece) in message.payload.chunks(self.chunk_size).enumerate() {
            if index > 0 {
                out.push(0xc0 | csid);
                if extended {
                    out.extend_from_slice(&message.timestamp.to_be_bytes());
                }
            }
            out.extend_from_slice(piece);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round_trip(messages: &[Message], chunk_size: usize) -> Vec<Message> {
        let encoder = ChunkEncoder::new(chunk_size);
        let mut wire = Vec::new();
        for message in messages {
            encoder.encode(message, &mut wire);
        }
        let mut decoder = ChunkDecoder::new(Limits::default());
        decoder.chunk_size = chunk_size;
        // Feed byte by byte: partial chunks must wait, not fail.
        let mut buffer = BytesMut::new();
        let mut out = Vec::new();
        for byte in wire {
            buffer.extend_from_slice(&[byte]);
            while let Some(message) = decoder.decode(&mut buffer).unwrap() {
                out.push(message);
            }
        }
        out
    }

    #[test]
    fn messages_survive_chunking() {
        let messages = vec![
            Message::new(3, message_type::COMMAND_AMF0, 0, 0, vec![7u8; 300]),
            Message::new(6, message_type::VIDEO, 1, 40, vec![9u8; 1000]),
            Message::new(4, message_type::AUDIO, 1, 0x0100_0000, vec![1u8; 10]),
        ];
        assert_eq!(round_trip(&messages, 128), messages);
        assert_eq!(round_trip(&messages, 4096), messages);
    }

    #[test]
    fn compressed_headers_carry_deltas() {
        // fmt 0 at t=1000, then fmt 2 (delta 40), then fmt 3 (same delta) on chunk stream 4.
        let mut wire = vec![0x04, 0x00, 0x03, 0xe8, 0x00, 0x00, 0x01, 0x08, 0x01, 0, 0, 0, 0xaa];
        wire.extend_from_slice(&[0x84, 0x00, 0x00, 0x28, 0xbb]);
        wire.extend_from_slice(&[0xc4, 0xcc]);
        let mut decoder = ChunkDecoder::new(Limits::default());
        let mut buffer = BytesMut::from(&wire[..]);
        let stamps: Vec<u32> =
            std::iter::from_fn(|| decoder.decode(&mut buffer).unwrap()).map(|m| m.timestamp).collect();
        assert_eq!(stamps, [1000, 1040, 1080]);
    }

    #[test]
    fn set_chunk_size_applies_to_what_follows() {
        let encoder = ChunkEncoder::new(128);
        let mut wire = Vec::new();
        encoder.encode(&Message::control(message_type::SET_CHUNK_SIZE, 4096), &mut wire);
        ChunkEncoder::new(4096).encode(&Message::new(6, message_type::VIDEO, 1, 0, vec![5u8; 3000]), &mut wire);
        let mut decoder = ChunkDecoder::new(Limits::default());
        let mut buffer = BytesMut::from(&wire[..]);
        assert_eq!(decoder.decode(&mut buffer).unwrap().unwrap().type_id, message_type::SET_CHUNK_SIZE);
        assert_eq!(decoder.decode(&mut buffer).unwrap().unwrap().payload.len(), 3000);
    }

    #[test]
    fn hostile_streams_are_refused() {
        // A message longer than the limit.
        let mut decoder = ChunkDecoder::new(Limits { max_message_len: 1000, ..Limits::default() });
        let mut buffer = BytesMut::from(&[0x04, 0, 0, 0, 0xff, 0xff, 0xff, 0x09, 1, 0, 0, 0][..]);
        assert!(decoder.decode(&mut buffer).is_err());
        // A compressed header on a fresh chunk stream.
        let mut decoder = ChunkDecoder::new(Limits::default());
        assert!(decoder.decode(&mut BytesMut::from(&[0xc5, 1, 2, 3][..])).is_err());
        // Too many chunk streams.
        let mut decoder = ChunkDecoder::new(Limits { max_chunk_streams: 2, ..Limits::default() });
        let mut buffer = BytesMut::new();
        for csid in 3..6u8 {
            buffer.extend_from_slice(&[csid, 0, 0, 0, 0, 0, 2, 0x09, 1, 0, 0, 0, 7, 7]);
        }
        assert!(decoder.decode(&mut buffer).unwrap().is_some());
        assert!(decoder.decode(&mut buffer).unwrap().is_some());
        assert!(decoder.decode(&mut buffer).is_err());
        // Messages announced large on many chunk streams: the room reserved for them counts.
        let limits = Limits { max_message_len: 60_000, max_partial_bytes: 100_000, max_chunk_streams: 64 };
        let mut decoder = ChunkDecoder::new(limits);
        let mut buffer = BytesMut::new();
        for csid in 3..13u8 {
            buffer.extend_from_slice(&[csid, 0, 0, 0, 0, 0xea, 0x60, 0x09, 1, 0, 0, 0]);
            buffer.extend_from_slice(&[0u8; 128]);
        }
        assert!(decoder.decode(&mut buffer).is_err(), "ten 60 kB messages were given room beyond 100 kB");
        // Chunk size 0.
        let mut decoder = ChunkDecoder::new(Limits::default());
        let mut wire = Vec::new();
        ChunkEncoder::new(128).encode(&Message::control(message_type::SET_CHUNK_SIZE, 0), &mut wire);
        assert!(decoder.decode(&mut BytesMut::from(&wire[..])).is_err());
    }
}

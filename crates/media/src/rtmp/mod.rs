//! RTMP, sans-I/O: the handshake ([`handshake`]), the chunk stream ([`chunk`]) and the
//! messages it carries. The ingest server drives these with bytes from a socket.

pub mod chunk;
pub mod handshake;

use bytes::Bytes;

/// RTMP message type ids.
pub mod message_type {
    pub const SET_CHUNK_SIZE: u8 = 1;
    pub const ABORT: u8 = 2;
    pub const ACKNOWLEDGEMENT: u8 = 3;
    pub const USER_CONTROL: u8 = 4;
    pub const WINDOW_ACK_SIZE: u8 = 5;
    pub const SET_PEER_BANDWIDTH: u8 = 6;
    pub const AUDIO: u8 = 8;
    pub const VIDEO: u8 = 9;
    pub const DATA_AMF3: u8 = 15;
    pub const COMMAND_AMF3: u8 = 17;
    pub const DATA_AMF0: u8 = 18;
    pub const COMMAND_AMF0: u8 = 20;
    pub const AGGREGATE: u8 = 22;
}

/// One complete RTMP message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    pub chunk_stream_id: u32,
    /// Milliseconds (32-bit, wrapping).
    pub timestamp: u32,
    pub type_id: u8,
    pub stream_id: u32,
    pub payload: Bytes,
}

impl Message {
    pub fn new(
        chunk_stream_id: u32,
        type_id: u8,
        stream_id: u32,
        timestamp: u32,
        payload: impl Into<Bytes>,
    ) -> Message {
        Message { chunk_stream_id, timestamp, type_id, stream_id, payload: payload.into() }
    }

    /// A protocol control message whose payload is one 32-bit number (chunk size, window, ack).
    pub fn control(type_id: u8, value: u32) -> Message {
        Message::new(2, type_id, 0, 0, value.to_be_bytes().to_vec())
    }
}

//! Codec and container code for openivs, kept apart from the servers: pure functions and
//! sans-I/O state machines over bytes, with no sockets and no clocks, so that every parser of
//! network input can be unit-tested and fuzzed on its own.
//!
//! - [`rtmp`]: the RTMP handshake, the chunk stream (decoder and encoder) and message types;
//! - [`amf0`]: Action Message Format 0, the encoding of RTMP commands and metadata;
//! - [`flv`]: FLV audio/video tag bodies as RTMP carries them (legacy and Enhanced RTMP);
//! - [`h264`]: AVC decoder configuration records and SPS parsing (codec string, size);
//! - [`h265`]: HEVC decoder configuration records and SPS parsing (multitrack HEVC tracks);
//! - [`video`]: either record reduced to what packaging and reporting need;
//! - [`aac`]: AAC AudioSpecificConfig;
//! - [`id3`]: ID3v2.4 tags, the form of timed metadata in HLS;
//! - [`scte35`]: SCTE-35 splice_insert sections, the ad-break cues of HLS playlists;
//! - [`ts`] and [`ts_demux`]: MPEG-TS muxing (HLS segments) and demuxing (a transcoder's output).

pub mod aac;
pub mod amf0;
pub mod bits;
pub mod flv;
pub mod fmp4;
pub mod h264;
pub mod h265;
pub mod hls;
pub mod id3;
pub mod rtmp;
pub mod scte35;
pub mod ts;
pub mod ts_demux;
pub mod video;

/// Why some bytes could not be parsed. Parsers never panic on bad input; they return this.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseError(pub String);

impl ParseError {
    pub fn new(message: impl Into<String>) -> Self {
        ParseError(message.into())
    }
}

impl std::fmt::Display for ParseError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ParseError {}

pub type Result<T> = std::result::Result<T, ParseError>;

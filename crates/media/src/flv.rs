//! FLV audio and video tag bodies, as RTMP audio (type 8) and video (type 9) messages carry
//! them: legacy AVC/AAC, and Enhanced RTMP's extended video header (FourCC `avc1`, `hvc1`, …),
//! with v2's multitrack video (several tracks in one message, or one track per message with its
//! track id: what OBS's Enhanced Broadcasting and FFmpeg 7.1+ send).
//! Also the writing side of an FLV file (header and tags), which is how a stream is handed to
//! a transcoder's stdin.

use crate::{ParseError, Result};

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VideoPacket<'a> {
    /// The codec configuration (an `avcC` record for AVC).
    SequenceHeader {
        codec: VideoCodec,
        config: &'a [u8],
    },
    /// One access unit: length-prefixed NAL units; `composition_time` = pts − dts in ms.
    Frame {
        codec: VideoCodec,
        keyframe: bool,
        composition_time: i32,
        data: &'a [u8],
    },
    EndOfSequence,
    /// Video information/command frames and packet types we do not use.
    Ignored,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VideoCodec {
    Avc,
    Hevc,
    Av1,
    Other(u32),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AudioPacket<'a> {
    /// AAC AudioSpecificConfig.
    AacSequenceHeader(&'a [u8]),
    AacFrame(&'a [u8]),
    /// Another sound format (MP3, …): carried but not decoded.
    Other {
        sound_format: u8,
    },
}

fn si24(bytes: &[u8]) -> i32 {
    let value = (i32::from(bytes[0]) << 16) | (i32::from(bytes[1]) << 8) | i32::from(bytes[2]);
    (value << 8) >> 8
}

pub fn parse_video(body: &[u8]) -> Result<VideoPacket<'_>> {
    let first = *body.first().ok_or_else(|| ParseError::new("FLV video: empty tag"))?;
    let frame_type = (first >> 4) & 0x07;
    if frame_type == 5 {
        return Ok(VideoPacket::Ignored);
    }
    let keyframe = frame_type == 1;
    if first & 0x80 != 0 {
        // Enhanced RTMP: IsExHeader | FrameType(3) | PacketType(4), then a FourCC.
        let packet_type = first & 0x0f;
        let fourcc = body.get(1..5).ok_or_else(|| ParseError::new("FLV video: truncated FourCC"))?;
        if packet_type == PACKET_MULTITRACK {
            // (Read with parse_video_tracks.)
            return Ok(VideoPacket::Ignored);
        }
        return ex_packet(packet_type, codec_of(fourcc), keyframe, &body[5..]);
    }
    let codec_id = first & 0x0f;
    if codec_id != 7 {
        return Err(ParseError::new(format!("FLV video: codec id {codec_id} is not supported (send H.264)")));
    }
    let header = body.get(1..5).ok_or_else(|| ParseError::new("FLV video: truncated AVC header"))?;
    let data = &body[5..];
    Ok(match header[0] {
        0 => VideoPacket::SequenceHeader { codec: VideoCodec::Avc, config: data },
        1 => VideoPacket::Frame { codec: VideoCodec::Avc, keyframe, composition_time: si24(&header[1..4]), data },
        2 => VideoPacket::EndOfSequence,
        _ => VideoPacket::Ignored,
    })
}

/// Enhanced RTMP video packet types.
const PACKET_SEQUENCE_START: u8 = 0;
const PACKET_CODED_FRAMES: u8 = 1;
const PACKET_SEQUENCE_END: u8 = 2;
const PACKET_CODED_FRAMES_X: u8 = 3;
const PACKET_MULTITRACK: u8 = 6;
/// Enhanced RTMP multitrack types (the third, ManyTracks = 1, has one FourCC and sized tracks).
const ONE_TRACK: u8 = 0;
const MANY_TRACKS_MANY_CODECS: u8 = 2;

fn codec_of(fourcc: &[u8]) -> VideoCodec {
    match fourcc {
        b"avc1" => VideoCodec::Avc,
        b"hvc1" => VideoCodec::Hevc,
        b"av01" => VideoCodec::Av1,
        other => VideoCodec::Other(u32::from_be_bytes(other.try_into().expect("4 bytes"))),
    }
}

/// One Enhanced RTMP packet's payload for `packet_type`.
fn ex_packet(packet_type: u8, codec: VideoCodec, keyframe: bool, payload: &[u8]) -> Result<VideoPacket<'_>> {
    Ok(match packet_type {
        PACKET_SEQUENCE_START => VideoPacket::SequenceHeader { codec, config: payload },
        PACKET_CODED_FRAMES => {
            let cts = payload.get(..3).ok_or_else(|| ParseError::new("FLV video: truncated composition time"))?;
            VideoPacket::Frame { codec, keyframe, composition_time: si24(cts), data: &payload[3..] }
        }
        PACKET_SEQUENCE_END => VideoPacket::EndOfSequence,
        PACKET_CODED_FRAMES_X => VideoPacket::Frame { codec, keyframe, composition_time: 0, data: payload },
        _ => VideoPacket::Ignored,
    })
}

/// A video tag's packets with their track ids: a multitrack message's every track, otherwise the
/// one packet of [`parse_video`] as track 0.
pub fn parse_video_tracks(body: &[u8]) -> Result<Vec<(u8, VideoPacket<'_>)>> {
    let first = *body.first().ok_or_else(|| ParseError::new("FLV video: empty tag"))?;
    if first & 0x80 == 0 || first & 0x0f != PACKET_MULTITRACK || (first >> 4) & 0x07 == 5 {
        return Ok(vec![(0, parse_video(body)?)]);
    }
    let keyframe = (first >> 4) & 0x07 == 1;
    let truncated = || ParseError::new("FLV video: truncated multitrack packet");
    let kind = *body.get(1).ok_or_else(truncated)?;
    let (multitrack_type, packet_type) = (kind >> 4, kind & 0x0f);
    if packet_type == PACKET_MULTITRACK || multitrack_type > MANY_TRACKS_MANY_CODECS {
        return Err(ParseError::new("FLV video: malformed multitrack header"));
    }
    let mut rest = &body[2..];
    let mut fourcc = None;
    if multitrack_type != MANY_TRACKS_MANY_CODECS {
        fourcc = Some(rest.get(..4).ok_or_else(truncated)?);
        rest = &rest[4..];
    }
    let mut tracks = Vec::new();
    while !rest.is_empty() {
        let codec = match fourcc {
            Some(fourcc) => codec_of(fourcc),
            None => {
                let own = rest.get(..4).ok_or_else(truncated)?;
                rest = &rest[4..];
                codec_of(own)
            }
        };
        let track_id = *rest.first().ok_or_else(truncated)?;
        rest = &rest[1..];
        let payload = if multitrack_type == ONE_TRACK {
            std::mem::take(&mut rest)
        } else {
            let size = rest.get(..3).ok_or_else(truncated)?;
            let size = (usize::from(size[0]) << 16) | (usize::from(size[1]) << 8) | usize::from(size[2]);
            let payload = rest.get(3..3 + size).ok_or_else(truncated)?;
            rest = &rest[3 + size..];
            payload
        };
        tracks.push((track_id, ex_packet(packet_type, codec, keyframe, payload)?));
        if multitrack_type == ONE_TRACK {
            break;
        }
    }
    Ok(tracks)
}

pub fn parse_audio(body: &[u8]) -> Result<AudioPacket<'_>> {
    let first = *body.first().ok_or_else(|| ParseError::new("FLV audio: empty tag"))?;
    let sound_format = first >> 4;
    if sound_format != 10 {
        return Ok(AudioPacket::Other { sound_format });
    }
    match body.get(1) {
        Some(0) => Ok(AudioPacket::AacSequenceHeader(&body[2..])),
        Some(1) => Ok(AudioPacket::AacFrame(&body[2..])),
        Some(other) => Err(ParseError::new(format!("FLV audio: unknown AAC packet type {other}"))),
        None => Err(ParseError::new("FLV audio: truncated AAC header")),
    }
}

/// FLV tag types.
pub const TAG_AUDIO: u8 = 8;
pub const TAG_VIDEO: u8 = 9;

/// The FLV file header (version 1, audio and video flagged) and the first PreviousTagSize.
pub fn file_header() -> [u8; 13] {
    [b'F', b'L', b'V', 1, 0x05, 0, 0, 0, 9, 0, 0, 0, 0]
}

/// One FLV tag with its body, and the PreviousTagSize after it. Timestamps are in ms; FLV keeps
/// 32 bits of them (the lower 24 first, then the upper 8), so they wrap after 49 days.
pub fn write_tag(tag_type: u8, timestamp_ms: u32, body: &[u8], out: &mut Vec<u8>) {
    let size = body.len() as u32;
    let ts = timestamp_ms.to_be_bytes();
    out.extend_from_slice(&[tag_type, (size >> 16) as u8, (size >> 8) as u8, size as u8]);
    out.extend_from_slice(&[ts[1], ts[2], ts[3], ts[0], 0, 0, 0]);
    out.extend_from_slice(body);
    out.extend_from_slice(&(size + 11).to_be_bytes());
}

/// A tag of an FLV file: its type, timestamp (ms) and body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileTag<'a> {
    pub tag_type: u8,
    pub timestamp_ms: u32,
    pub body: &'a [u8],
}

/// The tags of an FLV file, in order (what [`file_header`] and [`write_tag`] write).
pub fn read_file(bytes: &[u8]) -> Result<Vec<FileTag<'_>>> {
    if bytes.len() < 9 || &bytes[..3] != b"FLV" {
        return Err(ParseError::new("FLV file: no FLV header"));
    }
    let header_len = u32::from_be_bytes([bytes[5], bytes[6], bytes[7], bytes[8]]) as usize;
    // The header, then the first PreviousTagSize.
    let mut rest = bytes.get(header_len + 4..).ok_or_else(|| ParseError::new("FLV file: truncated header"))?;
    let mut tags = Vec::new();
    while !rest.is_empty() {
        let head = rest.get(..11).ok_or_else(|| ParseError::new("FLV file: truncated tag"))?;
        let size = u32::from_be_bytes([0, head[1], head[2], head[3]]) as usize;
        let timestamp_ms = u32::from_be_bytes([head[7], head[4], head[5], head[6]]);
        let body = rest.get(11..11 + size).ok_or_else(|| ParseError::new("FLV file: truncated tag body"))?;
        tags.push(FileTag { tag_type: head[0] & 0x1f, timestamp_ms, body });
        rest = rest.get(11 + size + 4..).unwrap_or(&[]);
    }
    Ok(tags)
}

/// The body of an AVC video tag: the sequence header (`avcC`) when `frame` is `None`, else a
/// frame of length-prefixed NAL units with its composition time (pts − dts, ms).
pub fn avc_body(frame: Option<(bool, i32)>, payload: &[u8]) -> Vec<u8> {
    let (first, packet_type, cts) = match frame {
        None => (0x17, 0, 0),
        Some((keyframe, cts)) => (if keyframe { 0x17 } else { 0x27 }, 1, cts),
    };
    let cts = cts.clamp(-(1 << 23), (1 << 23) - 1).to_be_bytes();
    let mut body = Vec::with_capacity(payload.len() + 5);
    body.extend_from_slice(&[first, packet_type, cts[1], cts[2], cts[3]]);
    body.extend_from_slice(payload);
    body
}

/// The body of an AAC audio tag: the AudioSpecificConfig when `sequence_header`, else a raw
/// frame. (The rate and size bits of the first byte are fixed for AAC: readers take the config.)
pub fn aac_body(sequence_header: bool, payload: &[u8]) -> Vec<u8> {
    let mut body = Vec::with_capacity(payload.len() + 2);
    body.extend_from_slice(&[0xaf, if sequence_header { 0 } else { 1 }]);
    body.extend_from_slice(payload);
    body
}

#[cfg(test)]
mod tests {

    #[test]
    fn a_written_file_reads_back() {
        let mut file = file_header().to_vec();
        write_tag(TAG_VIDEO, 0, &avc_body(None, &[1, 2]), &mut file);
        write_tag(TAG_AUDIO, 0x0100_0021, &aac_body(false, &[3]), &mut file);
        let tags = read_file(&file).unwrap();
        assert_eq!(tags.len(), 2);
        assert_eq!((tags[0].tag_type, tags[0].timestamp_ms), (TAG_VIDEO, 0));
        assert_eq!((tags[1].tag_type, tags[1].timestamp_ms, tags[1].body), (TAG_AUDIO, 0x0100_0021, &[0xaf, 1, 3][..]));
        assert!(read_file(&file[..file.len() - 6]).is_err());
        assert!(read_file(b"FL").is_err());
    }
    use super::*;

    #[test]
    fn multitrack_packets_give_every_track() {
        // FFmpeg 9's FLV muxer, a second video track: one track per message (OneTrack),
        // SequenceStart, FourCC avc1, track 1, then the avcC record.
        let one = [&[0x96, 0x00][..], b"avc1", &[0x01, 0x01, 0x42, 0xc0, 0x1e]].concat();
        let tracks = parse_video_tracks(&one).unwrap();
        assert_eq!(
            tracks,
            [(1, VideoPacket::SequenceHeader { codec: VideoCodec::Avc, config: &[0x01, 0x42, 0xc0, 0x1e] })]
        );
        // ManyTracks of coded frames (keyframe), each sized.
        let many = [&[0x96, 0x11][..], b"avc1", &[0, 0, 0, 5, 0, 0, 0, 9, 9], &[2, 0, 0, 4, 0, 0, 0, 7]].concat();
        let tracks = parse_video_tracks(&many).unwrap();
        assert_eq!(
            tracks,
            [
                (0, VideoPacket::Frame { codec: VideoCodec::Avc, keyframe: true, composition_time: 0, data: &[9, 9] }),
                (2, VideoPacket::Frame { codec: VideoCodec::Avc, keyframe: true, composition_time: 0, data: &[7] }),
            ]
        );
        // ManyTracksManyCodecs: a FourCC per track (CodedFramesX).
        let codecs = [&[0xa6, 0x23][..], b"hvc1", &[0, 0, 0, 1, 5], b"avc1", &[1, 0, 0, 1, 6]].concat();
        let tracks = parse_video_tracks(&codecs).unwrap();
        assert_eq!(
            tracks[0],
            (0, VideoPacket::Frame { codec: VideoCodec::Hevc, keyframe: false, composition_time: 0, data: &[5] })
        );
        assert_eq!(tracks[1].0, 1);
        // A legacy tag is track 0; a size past the end is refused, not read.
        assert_eq!(parse_video_tracks(&[0x17, 2, 0, 0, 0]).unwrap(), [(0, VideoPacket::EndOfSequence)]);
        let lying = [&[0x96, 0x11][..], b"avc1", &[0, 0xff, 0xff, 0xff, 1]].concat();
        assert!(parse_video_tracks(&lying).is_err());
        assert!(parse_video_tracks(&[0x96, 0x66]).is_err());
    }

    #[test]
    fn written_tags_parse_back() {
        let mut out = file_header().to_vec();
        write_tag(TAG_VIDEO, 0x0102_0304, &avc_body(Some((true, -2)), &[0, 0, 0, 1, 0x65]), &mut out);
        assert_eq!(&out[13..24], &[9, 0, 0, 10, 0x02, 0x03, 0x04, 0x01, 0, 0, 0]);
        assert_eq!(
            parse_video(&out[24..34]).unwrap(),
            VideoPacket::Frame {
                codec: VideoCodec::Avc,
                keyframe: true,
                composition_time: -2,
                data: &[0, 0, 0, 1, 0x65]
            }
        );
        assert_eq!(&out[34..], &21u32.to_be_bytes());
        assert_eq!(parse_audio(&aac_body(true, &[0x11, 0x90])).unwrap(), AudioPacket::AacSequenceHeader(&[0x11, 0x90]));
        assert_eq!(
            parse_video(&avc_body(None, &[1])).unwrap(),
            VideoPacket::SequenceHeader { codec: VideoCodec::Avc, config: &[1] }
        );
    }

    #[test]
    fn legacy_avc_and_aac() {
        assert_eq!(
            parse_video(&[0x17, 0, 0, 0, 0, 1, 2]).unwrap(),
            VideoPacket::SequenceHeader { codec: VideoCodec::Avc, config: &[1, 2] }
        );
        assert_eq!(
            parse_video(&[0x27, 1, 0xff, 0xff, 0xfe, 9]).unwrap(),
            VideoPacket::Frame { codec: VideoCodec::Avc, keyframe: false, composition_time: -2, data: &[9] }
        );
        assert_eq!(parse_audio(&[0xaf, 0, 0x11, 0x90]).unwrap(), AudioPacket::AacSequenceHeader(&[0x11, 0x90]));
        assert_eq!(parse_audio(&[0xaf, 1, 7]).unwrap(), AudioPacket::AacFrame(&[7]));
        assert_eq!(parse_audio(&[0x2f]).unwrap(), AudioPacket::Other { sound_format: 2 });
    }

    #[test]
    fn enhanced_rtmp() {
        let mut body = vec![0x90];
        body.extend_from_slice(b"hvc1");
        body.push(42);
        assert_eq!(parse_video(&body).unwrap(), VideoPacket::SequenceHeader { codec: VideoCodec::Hevc, config: &[42] });
    }

    #[test]
    fn truncated_or_unsupported() {
        assert!(parse_video(&[]).is_err());
        assert!(parse_video(&[0x17, 1]).is_err());
        assert!(parse_video(&[0x12, 0, 0, 0, 0]).is_err());
        assert!(parse_video(&[0x90, b'a']).is_err());
        assert!(parse_audio(&[]).is_err());
        assert!(parse_audio(&[0xaf]).is_err());
    }
}

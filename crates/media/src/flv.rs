//! FLV audio and video tag bodies, as RTMP audio (type 8) and video (type 9) messages carry
//! them: legacy AVC/AAC, and Enhanced RTMP's extended video header (FourCC `avc1`, `hvc1`, …).

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
        let codec = match fourcc {
            b"avc1" => VideoCodec::Avc,
            b"hvc1" => VideoCodec::Hevc,
            b"av01" => VideoCodec::Av1,
            other => VideoCodec::Other(u32::from_be_bytes(other.try_into().expect("4 bytes"))),
        };
        let rest = &body[5..];
        return Ok(match packet_type {
            0 => VideoPacket::SequenceHeader { codec, config: rest },
            1 => {
                let cts = rest.get(..3).ok_or_else(|| ParseError::new("FLV video: truncated composition time"))?;
                VideoPacket::Frame { codec, keyframe, composition_time: si24(cts), data: &rest[3..] }
            }
            2 => VideoPacket::EndOfSequence,
            3 => VideoPacket::Frame { codec, keyframe, composition_time: 0, data: rest },
            _ => VideoPacket::Ignored,
        });
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

#[cfg(test)]
mod tests {
    use super::*;

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

//! H.264/AVC: the decoder configuration record (`avcC`, what RTMP's AVC sequence header
//! carries) and the sequence parameter set, for what IVS reports about a stream: the codec string
//! (`avc1.PPCCLL`), profile, level, width and height.

use crate::bits::BitReader;
use crate::{ParseError, Result};

/// An AVCDecoderConfigurationRecord (ISO/IEC 14496-15).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecoderConfiguration {
    pub profile_indication: u8,
    pub profile_compatibility: u8,
    pub level_indication: u8,
    /// Bytes of the length prefix of each NAL unit in samples (1, 2 or 4).
    pub nal_length_size: u8,
    pub sps: Vec<Vec<u8>>,
    pub pps: Vec<Vec<u8>>,
}

impl DecoderConfiguration {
    pub fn parse(bytes: &[u8]) -> Result<DecoderConfiguration> {
        let truncated = || ParseError::new("avcC: truncated");
        if bytes.len() < 7 {
            return Err(truncated());
        }
        if bytes[0] != 1 {
            return Err(ParseError::new(format!("avcC: unknown configuration version {}", bytes[0])));
        }
        let nal_length_size = (bytes[4] & 0x03) + 1;
        if nal_length_size == 3 {
            return Err(ParseError::new("avcC: NAL length size 3 is not allowed"));
        }
        let mut rest = &bytes[5..];
        let read_sets = |count: usize, rest: &mut &[u8]| -> Result<Vec<Vec<u8>>> {
            let mut sets = Vec::with_capacity(count);
            for _ in 0..count {
                if rest.len() < 2 {
                    return Err(truncated());
                }
                let len = u16::from_be_bytes([rest[0], rest[1]]) as usize;
                let set = rest.get(2..2 + len).ok_or_else(truncated)?;
                sets.push(set.to_vec());
                *rest = &rest[2 + len..];
            }
            Ok(sets)
        };
        let sps_count = (rest[0] & 0x1f) as usize;
        rest = &rest[1..];
        let sps = read_sets(sps_count, &mut rest)?;
        let pps_count = *rest.first().ok_or_else(truncated)? as usize;
        rest = &rest[1..];
        let pps = read_sets(pps_count, &mut rest)?;
        Ok(DecoderConfiguration {
            profile_indication: bytes[1],
            profile_compatibility: bytes[2],
            level_indication: bytes[3],
            nal_length_size,
            sps,
            pps,
        })
    }

    /// The record of one SPS and one PPS, with 4-byte NAL lengths (what an Annex B stream's
    /// parameter sets become for FLV and MP4).
    pub fn record(sps: &[u8], pps: &[u8]) -> Vec<u8> {
        let profile = |i: usize| sps.get(i).copied().unwrap_or(0);
        let mut record = vec![1, profile(1), profile(2), profile(3), 0xff, 0xe1];
        record.extend_from_slice(&(sps.len() as u16).to_be_bytes());
        record.extend_from_slice(sps);
        record.push(1);
        record.extend_from_slice(&(pps.len() as u16).to_be_bytes());
        record.extend_from_slice(pps);
        record
    }

    /// The RFC 6381 codec string, e.g. `avc1.64001F`.
    pub fn codec_string(&self) -> String {
        format!("avc1.{:02X}{:02X}{:02X}", self.profile_indication, self.profile_compatibility, self.level_indication)
    }
}

/// What the sequence parameter set says about the picture.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SequenceParameterSet {
    pub profile_idc: u8,
    pub constraint_flags: u8,
    pub level_idc: u8,
    pub width: u32,
    pub height: u32,
}

/// Removes emulation-prevention bytes (00 00 03 → 00 00).
pub(crate) fn unescape(nal: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(nal.len());
    let mut zeros = 0;
    for &byte in nal {
        if zeros >= 2 && byte == 3 {
            zeros = 0;
            continue;
        }
        zeros = if byte == 0 { zeros + 1 } else { 0 };
        out.push(byte);
    }
    out
}

fn skip_scaling_list(reader: &mut BitReader<'_>, size: usize) -> Result<()> {
    let (mut last, mut next) = (8i32, 8i32);
    for _ in 0..size {
        if next != 0 {
            let delta = reader.signed_exp_golomb()?;
            next = (last + delta + 256).rem_euclid(256);
        }
        if next != 0 {
            last = next;
        }
    }
    Ok(())
}

impl SequenceParameterSet {
    /// Parses an SPS NAL unit (with its one-byte NAL header).
    pub fn parse(nal: &[u8]) -> Result<SequenceParameterSet> {
        if nal.first().map(|h| h & 0x1f) != Some(7) {
            return Err(ParseError::new("SPS: not a sequence parameter set NAL unit"));
        }
        let rbsp = unescape(&nal[1..]);
        let mut r = BitReader::new(&rbsp);
        let profile_idc = r.bits(8)? as u8;
        let constraint_flags = r.bits(8)? as u8;
        let level_idc = r.bits(8)? as u8;
        r.unsigned_exp_golomb()?; // seq_parameter_set_id
        let mut chroma_format_idc = 1;
        if matches!(profile_idc, 100 | 110 | 122 | 244 | 44 | 83 | 86 | 118 | 128 | 138 | 139 | 134 | 135) {
            chroma_format_idc = r.unsigned_exp_golomb()?;
            if chroma_format_idc == 3 {
                r.flag()?; // separate_colour_plane_flag
            }
            r.unsigned_exp_golomb()?; // bit_depth_luma_minus8
            r.unsigned_exp_golomb()?; // bit_depth_chroma_minus8
            r.flag()?; // qpprime_y_zero_transform_bypass_flag
            if r.flag()? {
                let lists = if chroma_format_idc == 3 { 12 } else { 8 };
                for i in 0..lists {
                    if r.flag()? {
                        skip_scaling_list(&mut r, if i < 6 { 16 } else { 64 })?;
                    }
                }
            }
        }
        r.unsigned_exp_golomb()?; // log2_max_frame_num_minus4
        match r.unsigned_exp_golomb()? {
            0 => {
                r.unsigned_exp_golomb()?; // log2_max_pic_order_cnt_lsb_minus4
            }
            1 => {
                r.flag()?;
                r.signed_exp_golomb()?;
                r.signed_exp_golomb()?;
                let cycle = r.unsigned_exp_golomb()?;
                if cycle > 255 {
                    return Err(ParseError::new("SPS: num_ref_frames_in_pic_order_cnt_cycle out of range"));
                }
                for _ in 0..cycle {
                    r.signed_exp_golomb()?;
                }
            }
            _ => {}
        }
        r.unsigned_exp_golomb()?; // max_num_ref_frames
        r.flag()?; // gaps_in_frame_num_value_allowed_flag
        let width_in_mbs = u64::from(r.unsigned_exp_golomb()?) + 1;
        let height_in_map_units = u64::from(r.unsigned_exp_golomb()?) + 1;
        let frame_mbs_only = r.flag()?;
        if !frame_mbs_only {
            r.flag()?; // mb_adaptive_frame_field_flag
        }
        r.flag()?; // direct_8x8_inference_flag
        let (mut crop_left, mut crop_right, mut crop_top, mut crop_bottom) = (0u64, 0u64, 0u64, 0u64);
        if r.flag()? {
            crop_left = u64::from(r.unsigned_exp_golomb()?);
            crop_right = u64::from(r.unsigned_exp_golomb()?);
            crop_top = u64::from(r.unsigned_exp_golomb()?);
            crop_bottom = u64::from(r.unsigned_exp_golomb()?);
        }
        let field_factor = if frame_mbs_only { 1 } else { 2 };
        let (crop_unit_x, crop_unit_y) = match chroma_format_idc {
            0 => (1, field_factor),
            1 => (2, 2 * field_factor),
            2 => (2, field_factor),
            _ => (1, field_factor),
        };
        let full_width = width_in_mbs * 16;
        let full_height = height_in_map_units * 16 * field_factor;
        let width = full_width.saturating_sub((crop_left + crop_right) * crop_unit_x);
        let height = full_height.saturating_sub((crop_top + crop_bottom) * crop_unit_y);
        if width == 0 || height == 0 || width > 16384 || height > 16384 {
            return Err(ParseError::new(format!("SPS: implausible picture size {width}x{height}")));
        }
        Ok(SequenceParameterSet {
            profile_idc,
            constraint_flags,
            level_idc,
            width: width as u32,
            height: height as u32,
        })
    }

    /// The profile's name as IVS reports it (`Baseline`, `Main`, `High`, …).
    pub fn profile_name(&self) -> &'static str {
        match self.profile_idc {
            66 if self.constraint_flags & 0x40 != 0 => "ConstrainedBaseline",
            66 => "Baseline",
            77 => "Main",
            88 => "Extended",
            100 => "High",
            110 => "High10",
            122 => "High422",
            244 => "High444",
            _ => "Unknown",
        }
    }

    /// The level as `major.minor` (`3.1`; level 1b as `1b`).
    pub fn level_name(&self) -> String {
        if self.level_idc == 11 && self.constraint_flags & 0x10 != 0 && matches!(self.profile_idc, 66 | 77 | 88) {
            return "1b".into();
        }
        format!("{}.{}", self.level_idc / 10, self.level_idc % 10)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // avcC written by libx264 for 1280x720 High@3.1 (ffmpeg -f lavfi -i testsrc2=size=1280x720 -c:v libx264 -f flv).
    const AVCC_720P: [u8; 47] = [
        0x01, 0x64, 0x00, 0x1f, 0xff, 0xe1, 0x00, 0x1a, 0x67, 0x64, 0x00, 0x1f, 0xac, 0xd9, 0x40, 0x50, 0x05, 0xbb,
        0x01, 0x10, 0x00, 0x00, 0x03, 0x00, 0x10, 0x00, 0x00, 0x03, 0x03, 0xc0, 0xf1, 0x83, 0x19, 0x60, 0x01, 0x00,
        0x06, 0x68, 0xeb, 0xe3, 0xcb, 0x22, 0xc0, 0xfd, 0xf8, 0xf8, 0x00,
    ];

    #[test]
    fn a_record_of_its_sets_is_the_same_record() {
        let config = DecoderConfiguration::parse(&AVCC_720P).unwrap();
        let record = DecoderConfiguration::record(&config.sps[0], &config.pps[0]);
        // (libx264 adds the High profile's chroma and bit-depth fields, which are optional.)
        assert_eq!(record[..], AVCC_720P[..AVCC_720P.len() - 4]);
    }

    #[test]
    fn parses_a_real_configuration() {
        let config = DecoderConfiguration::parse(&AVCC_720P).unwrap();
        assert_eq!(config.codec_string(), "avc1.64001F");
        assert_eq!(config.nal_length_size, 4);
        let sps = SequenceParameterSet::parse(&config.sps[0]).unwrap();
        assert_eq!((sps.width, sps.height), (1280, 720));
        assert_eq!(sps.profile_name(), "High");
        assert_eq!(sps.level_name(), "3.1");
    }

    #[test]
    fn refuses_garbage() {
        assert!(DecoderConfiguration::parse(&[]).is_err());
        assert!(DecoderConfiguration::parse(&[1, 0x64, 0, 0x1f, 0xff, 0xe1, 0x00, 0xff]).is_err());
        assert!(SequenceParameterSet::parse(&[0x67]).is_err());
        assert!(SequenceParameterSet::parse(&[0x68, 1, 2, 3]).is_err());
        assert_eq!(unescape(&[0, 0, 3, 1, 0, 0, 3]), vec![0, 0, 1, 0, 0]);
    }
}

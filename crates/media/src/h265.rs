//! H.265/HEVC: the decoder configuration record (`hvcC`, what an Enhanced RTMP `hvc1`
//! sequence start carries) and the sequence parameter set, for what a multitrack HEVC track
//! needs: the codec string (`hvc1.1.6.L93.90`), profile, level, width and height, and the record
//! itself for the fMP4 sample entry. Samples stay length-prefixed as the record says.

use crate::bits::BitReader;
use crate::h264::unescape;
use crate::{ParseError, Result};

/// NAL unit types of the parameter sets.
pub const NAL_VPS: u8 = 32;
pub const NAL_SPS: u8 = 33;
pub const NAL_PPS: u8 = 34;

/// An HEVCDecoderConfigurationRecord (ISO/IEC 14496-15 §8.3.3), the fields a codec string and
/// the parameter sets need.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecoderConfiguration {
    pub profile_space: u8,
    pub tier: bool,
    pub profile_idc: u8,
    pub profile_compatibility: u32,
    /// The 48 bits of progressive/interlaced/… and constraint flags, as six bytes.
    pub constraint_flags: [u8; 6],
    pub level_idc: u8,
    /// Bytes of the length prefix of each NAL unit in samples (1, 2 or 4).
    pub nal_length_size: u8,
    /// The parameter-set arrays: (NAL unit type, units).
    pub arrays: Vec<(u8, Vec<Vec<u8>>)>,
}

impl DecoderConfiguration {
    pub fn parse(bytes: &[u8]) -> Result<DecoderConfiguration> {
        let truncated = || ParseError::new("hvcC: truncated");
        if bytes.len() < 23 {
            return Err(truncated());
        }
        if bytes[0] != 1 {
            return Err(ParseError::new(format!("hvcC: unknown configuration version {}", bytes[0])));
        }
        let nal_length_size = (bytes[21] & 0x03) + 1;
        if nal_length_size == 3 {
            return Err(ParseError::new("hvcC: NAL length size 3 is not allowed"));
        }
        let array_count = bytes[22] as usize;
        let mut rest = &bytes[23..];
        let mut arrays = Vec::with_capacity(array_count.min(8));
        for _ in 0..array_count {
            let header = rest.get(..3).ok_or_else(truncated)?;
            let nal_type = header[0] & 0x3f;
            let count = u16::from_be_bytes([header[1], header[2]]) as usize;
            rest = &rest[3..];
            let mut units = Vec::with_capacity(count.min(16));
            for _ in 0..count {
                let len = rest.get(..2).map(|l| u16::from_be_bytes([l[0], l[1]]) as usize).ok_or_else(truncated)?;
                units.push(rest.get(2..2 + len).ok_or_else(truncated)?.to_vec());
                rest = &rest[2 + len..];
            }
            arrays.push((nal_type, units));
        }
        Ok(DecoderConfiguration {
            profile_space: bytes[1] >> 6,
            tier: bytes[1] & 0x20 != 0,
            profile_idc: bytes[1] & 0x1f,
            profile_compatibility: u32::from_be_bytes([bytes[2], bytes[3], bytes[4], bytes[5]]),
            constraint_flags: bytes[6..12].try_into().expect("6 bytes"),
            level_idc: bytes[12],
            nal_length_size,
            arrays,
        })
    }

    /// The record's units of one NAL unit type.
    pub fn units(&self, nal_type: u8) -> impl Iterator<Item = &[u8]> {
        self.arrays.iter().filter(move |(t, _)| *t == nal_type).flat_map(|(_, units)| units.iter().map(Vec::as_slice))
    }

    /// The first sequence parameter set, parsed.
    pub fn sequence_parameter_set(&self) -> Result<SequenceParameterSet> {
        let sps = self.units(NAL_SPS).next().ok_or_else(|| ParseError::new("hvcC: no sequence parameter set"))?;
        SequenceParameterSet::parse(sps)
    }

    /// The codec string of ISO/IEC 14496-15 Annex E (what HLS's CODECS lists), e.g.
    /// `hvc1.1.6.L93.90`: profile space and profile, the compatibility flags bit-reversed in hex,
    /// tier and level, then the constraint bytes without trailing zero bytes.
    pub fn codec_string(&self) -> String {
        let space = ["", "A", "B", "C"][usize::from(self.profile_space & 3)];
        let tier = if self.tier { 'H' } else { 'L' };
        let mut out = format!(
            "hvc1.{space}{}.{:X}.{tier}{}",
            self.profile_idc,
            self.profile_compatibility.reverse_bits(),
            self.level_idc
        );
        let used = self.constraint_flags.iter().rposition(|&b| b != 0).map_or(0, |last| last + 1);
        for byte in &self.constraint_flags[..used] {
            out.push_str(&format!(".{byte:X}"));
        }
        out
    }

    /// The profile's name as IVS reports it (`Main`, `Main10`, …).
    pub fn profile_name(&self) -> &'static str {
        match self.profile_idc {
            1 => "Main",
            2 => "Main10",
            3 => "MainStillPicture",
            4 => "RExt",
            _ => "Unknown",
        }
    }

    /// The level as `major.minor` (`level_idc` is 30 × the level: 93 is 3.1).
    pub fn level_name(&self) -> String {
        let tenths = u32::from(self.level_idc) / 3;
        format!("{}.{}", tenths / 10, tenths % 10)
    }
}

/// What the sequence parameter set says about the picture.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SequenceParameterSet {
    pub width: u32,
    pub height: u32,
}

impl SequenceParameterSet {
    /// Parses an SPS NAL unit (with its two-byte NAL header), up to the conformance window.
    pub fn parse(nal: &[u8]) -> Result<SequenceParameterSet> {
        if nal.len() < 3 || (nal[0] >> 1) & 0x3f != NAL_SPS {
            return Err(ParseError::new("SPS: not an HEVC sequence parameter set NAL unit"));
        }
        let rbsp = unescape(&nal[2..]);
        let mut r = BitReader::new(&rbsp);
        r.bits(4)?; // sps_video_parameter_set_id
        let sub_layers = r.bits(3)?; // sps_max_sub_layers_minus1
        r.flag()?; // sps_temporal_id_nesting_flag
        // profile_tier_level: the general profile (88 bits) and level (8 bits), then each sub-layer's.
        r.bits(32)?;
        r.bits(32)?;
        r.bits(24)?;
        r.bits(8)?;
        let mut present = Vec::with_capacity(sub_layers as usize);
        for _ in 0..sub_layers {
            present.push((r.flag()?, r.flag()?));
        }
        if sub_layers > 0 {
            for _ in sub_layers..8 {
                r.bits(2)?;
            }
        }
        for (profile_present, level_present) in present {
            if profile_present {
                r.bits(32)?;
                r.bits(32)?;
                r.bits(24)?;
            }
            if level_present {
                r.bits(8)?;
            }
        }
        r.unsigned_exp_golomb()?; // sps_seq_parameter_set_id
        let chroma_format_idc = r.unsigned_exp_golomb()?;
        let separate_planes = chroma_format_idc == 3 && r.flag()?;
        let width = u64::from(r.unsigned_exp_golomb()?);
        let height = u64::from(r.unsigned_exp_golomb()?);
        let (mut crop_x, mut crop_y) = (0u64, 0u64);
        if r.flag()? {
            crop_x = u64::from(r.unsigned_exp_golomb()?) + u64::from(r.unsigned_exp_golomb()?);
            crop_y = u64::from(r.unsigned_exp_golomb()?) + u64::from(r.unsigned_exp_golomb()?);
        }
        let (unit_x, unit_y) = match (chroma_format_idc, separate_planes) {
            (1, _) => (2, 2),
            (2, _) => (2, 1),
            _ => (1, 1),
        };
        let width = width.saturating_sub(crop_x * unit_x);
        let height = height.saturating_sub(crop_y * unit_y);
        if width == 0 || height == 0 || width > 16384 || height > 16384 {
            return Err(ParseError::new(format!("SPS: implausible picture size {width}x{height}")));
        }
        Ok(SequenceParameterSet { width: width as u32, height: height as u32 })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The hvcC libx265 wrote for 1280x720 Main@3.1 (`ffmpeg -f lavfi -i testsrc2=size=1280x720
    /// -c:v libx265 -tag:v hvc1 out.mp4`), with its VPS, SPS and PPS arrays (its SEI array left out).
    fn hvcc_720p() -> Vec<u8> {
        let hex = concat!(
            "0101600000009000000000005df000fcfdf8f800000f03",
            "a00001001840010c01ffff01600000030090000003000003005d959809",
            "a10001002b42010101600000030090000003000003005da00280802d165959a4932bc05a020000030002000003003c10",
            "a2000100074401c172b46240",
        );
        (0..hex.len()).step_by(2).map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap()).collect()
    }

    #[test]
    fn parses_a_real_configuration() {
        let config = DecoderConfiguration::parse(&hvcc_720p()).unwrap();
        assert_eq!(config.codec_string(), "hvc1.1.6.L93.90");
        assert_eq!(config.nal_length_size, 4);
        assert_eq!(config.units(NAL_VPS).count(), 1);
        assert_eq!(config.units(NAL_PPS).count(), 1);
        assert_eq!((config.profile_name(), config.level_name().as_str()), ("Main", "3.1"));
        let sps = config.sequence_parameter_set().unwrap();
        assert_eq!((sps.width, sps.height), (1280, 720));
    }

    #[test]
    fn codec_strings_of_other_profiles() {
        let mut config = DecoderConfiguration::parse(&hvcc_720p()).unwrap();
        (config.profile_idc, config.profile_compatibility, config.tier, config.level_idc) = (2, 0x2000_0000, true, 150);
        config.constraint_flags = [0xb0, 0, 0, 0, 0, 0];
        assert_eq!(config.codec_string(), "hvc1.2.4.H150.B0");
        config.constraint_flags = [0; 6];
        assert_eq!(config.codec_string(), "hvc1.2.4.H150");
        assert_eq!(config.level_name(), "5.0");
    }

    #[test]
    fn refuses_garbage() {
        assert!(DecoderConfiguration::parse(&[]).is_err());
        let mut lying = hvcc_720p();
        lying.truncate(40);
        assert!(DecoderConfiguration::parse(&lying).is_err());
        assert!(SequenceParameterSet::parse(&[0x42, 0x01]).is_err());
        assert!(SequenceParameterSet::parse(&[0x40, 0x01, 0xff, 0xff]).is_err());
        assert!(SequenceParameterSet::parse(&[0x42, 0x01, 0x01]).is_err());
    }
}

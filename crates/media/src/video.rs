//! A video track's decoder configuration record, whatever its codec (H.264's `avcC`, HEVC's
//! `hvcC`), reduced to what packaging and reporting need: the coding, the NAL length size and
//! parameter sets (for Annex B), the codec string and the picture's profile, level and size.

use crate::{ParseError, Result, h264, h265};

/// A video track's coding.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VideoCoding {
    Avc,
    Hevc,
}

/// A parsed decoder configuration record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VideoRecord {
    pub coding: VideoCoding,
    /// Bytes of the length prefix of each NAL unit in samples (1, 2 or 4).
    pub nal_length_size: u8,
    /// The parameter sets in decoding order (VPS, SPS, PPS; or SPS, PPS).
    pub parameter_sets: Vec<Vec<u8>>,
    /// The RFC 6381 codec string (`avc1.64001F`, `hvc1.1.6.L93.90`).
    pub codec: String,
    /// Profile and level as IVS reports them (`High`, `3.1`).
    pub profile: String,
    pub level: String,
    pub width: u32,
    pub height: u32,
}

impl VideoRecord {
    /// Parses `record` as `coding`'s configuration record, with its first SPS.
    pub fn parse(coding: VideoCoding, record: &[u8]) -> Result<VideoRecord> {
        match coding {
            VideoCoding::Avc => {
                let avcc = h264::DecoderConfiguration::parse(record)?;
                let sps = avcc.sps.first().ok_or_else(|| ParseError::new("avcC: no sequence parameter set"))?;
                let sps = h264::SequenceParameterSet::parse(sps)?;
                Ok(VideoRecord {
                    coding,
                    nal_length_size: avcc.nal_length_size,
                    codec: avcc.codec_string(),
                    parameter_sets: avcc.sps.iter().chain(&avcc.pps).cloned().collect(),
                    profile: sps.profile_name().into(),
                    level: sps.level_name(),
                    width: sps.width,
                    height: sps.height,
                })
            }
            VideoCoding::Hevc => {
                let hvcc = h265::DecoderConfiguration::parse(record)?;
                let sps = hvcc.sequence_parameter_set()?;
                let sets = [h265::NAL_VPS, h265::NAL_SPS, h265::NAL_PPS];
                Ok(VideoRecord {
                    coding,
                    nal_length_size: hvcc.nal_length_size,
                    codec: hvcc.codec_string(),
                    parameter_sets: sets.iter().flat_map(|&t| hvcc.units(t).map(<[u8]>::to_vec)).collect(),
                    profile: hvcc.profile_name().into(),
                    level: hvcc.level_name(),
                    width: sps.width,
                    height: sps.height,
                })
            }
        }
    }

    /// The NAL unit type of a NAL unit of this coding.
    pub fn nal_type(&self, nal: &[u8]) -> Option<u8> {
        let header = *nal.first()?;
        Some(match self.coding {
            VideoCoding::Avc => header & 0x1f,
            VideoCoding::Hevc => (header >> 1) & 0x3f,
        })
    }

    /// Whether a NAL unit is an access unit delimiter or a parameter set (what Annex B output
    /// writes itself).
    pub fn is_delimiter(&self, nal_type: u8) -> bool {
        match self.coding {
            VideoCoding::Avc => nal_type == 9,
            VideoCoding::Hevc => nal_type == 35,
        }
    }

    pub fn is_parameter_set(&self, nal_type: u8) -> bool {
        match self.coding {
            VideoCoding::Avc => matches!(nal_type, 7 | 8),
            VideoCoding::Hevc => matches!(nal_type, h265::NAL_VPS | h265::NAL_SPS | h265::NAL_PPS),
        }
    }

    /// An access unit delimiter NAL unit (any picture type).
    pub fn delimiter(&self) -> &'static [u8] {
        match self.coding {
            VideoCoding::Avc => &[0x09, 0xf0],
            VideoCoding::Hevc => &[0x46, 0x01, 0x50],
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_a_record_of_the_other_coding() {
        // An avcC is not an hvcC (too short), and an hvcC's SPS is not H.264's.
        let avcc = [1, 0x64, 0, 0x1f, 0xff, 0xe0, 0];
        assert!(VideoRecord::parse(VideoCoding::Hevc, &avcc).is_err());
        assert!(VideoRecord::parse(VideoCoding::Avc, &avcc).is_err(), "no SPS");
    }
}

//! AAC AudioSpecificConfig (ISO/IEC 14496-3), as RTMP's AAC sequence header carries it.

use crate::bits::BitReader;
use crate::{ParseError, Result};

const SAMPLE_RATES: [u32; 13] =
    [96000, 88200, 64000, 48000, 44100, 32000, 24000, 22050, 16000, 12000, 11025, 8000, 7350];

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AudioSpecificConfig {
    /// Audio object type: 2 = AAC-LC, 5 = HE-AAC (SBR), 29 = HE-AACv2.
    pub object_type: u8,
    pub sample_rate: u32,
    pub channels: u8,
}

impl AudioSpecificConfig {
    pub fn parse(bytes: &[u8]) -> Result<AudioSpecificConfig> {
        let mut r = BitReader::new(bytes);
        let mut object_type = r.bits(5)? as u8;
        if object_type == 31 {
            object_type = 32 + r.bits(6)? as u8;
        }
        let index = r.bits(4)? as usize;
        let sample_rate = if index == 15 {
            r.bits(24)?
        } else {
            *SAMPLE_RATES.get(index).ok_or_else(|| ParseError::new("AAC: reserved sampling frequency index"))?
        };
        let channels = r.bits(4)? as u8;
        if sample_rate == 0 {
            return Err(ParseError::new("AAC: sample rate 0"));
        }
        Ok(AudioSpecificConfig { object_type, sample_rate, channels })
    }

    /// The RFC 6381 codec string, e.g. `mp4a.40.2`.
    pub fn codec_string(&self) -> String {
        format!("mp4a.40.{}", self.object_type)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lc_48k_stereo() {
        let config = AudioSpecificConfig::parse(&[0x11, 0x90]).unwrap();
        assert_eq!(config, AudioSpecificConfig { object_type: 2, sample_rate: 48000, channels: 2 });
        assert_eq!(config.codec_string(), "mp4a.40.2");
        assert_eq!(AudioSpecificConfig::parse(&[0x12, 0x10]).unwrap().sample_rate, 44100);
        assert!(AudioSpecificConfig::parse(&[0x17]).is_err());
        assert!(AudioSpecificConfig::parse(&[]).is_err());
    }
}

//! AAC AudioSpecificConfig (ISO/IEC 14496-3), as RTMP's AAC sequence header carries it.

use crate::bits::BitReader;
use crate::{ParseError, Result};

/// The sampling frequencies of `samplingFrequencyIndex` 0–12 (also ADTS's).
pub const SAMPLE_RATES: [u32; 13] =
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

    /// The two-byte AudioSpecificConfig (object types below 31, a listed sample rate).
    pub fn to_bytes(&self) -> [u8; 2] {
        let index = SAMPLE_RATES.iter().position(|r| *r == self.sample_rate).unwrap_or(4) as u16;
        let bits = (u16::from(self.object_type.min(30)) << 11) | (index << 7) | (u16::from(self.channels & 0x0f) << 3);
        bits.to_be_bytes()
    }

    /// The RFC 6381 codec string, e.g. `mp4a.40.2`.
    pub fn codec_string(&self) -> String {
        format!("mp4a.40.{}", self.object_type)
    }
}

/// Syntactic elements of a raw data block (ISO/IEC 14496-3, 4.5.2.1).
const ID_SCE: u32 = 0;
const ID_CPE: u32 = 1;
const ID_LFE: u32 = 3;
const ID_END: u32 = 7;

/// Writes bits most significant first.
#[derive(Default)]
struct BitWriter {
    bytes: Vec<u8>,
    bits: usize,
}

impl BitWriter {
    fn put(&mut self, value: u32, count: usize) {
        for i in (0..count).rev() {
            if self.bits.is_multiple_of(8) {
                self.bytes.push(0);
            }
            if (value >> i) & 1 == 1 {
                let last = self.bytes.len() - 1;
                self.bytes[last] |= 0x80 >> (self.bits % 8);
            }
            self.bits += 1;
        }
    }
}

/// An `individual_channel_stream` with no spectral data: one long window, no scale factor band
/// coded (`max_sfb` 0), no pulse, TNS or gain control data. It decodes to silence.
fn silent_channel_stream(out: &mut BitWriter) {
    out.put(100, 8); // global_gain (no band uses it)
    out.put(0, 1); // ics_reserved_bit
    out.put(0, 2); // window_sequence: ONLY_LONG_SEQUENCE
    out.put(0, 1); // window_shape
    out.put(0, 6); // max_sfb
    out.put(0, 1); // predictor_data_present
    out.put(0, 3); // pulse, tns, gain control data present: none
}

/// One raw AAC-LC frame (1024 samples) of silence for a channel configuration (1 to 7, as in
/// the AudioSpecificConfig), built from the syntax rather than encoded, so no encoder is needed:
/// the failover slate's sound. `None` for configurations that name no channel layout (0, 8+).
pub fn silent_frame(channel_configuration: u8) -> Option<Vec<u8>> {
    // The elements of each configuration (ISO/IEC 14496-3, table 1.19).
    let elements: &[u32] = match channel_configuration {
        1 => &[ID_SCE],
        2 => &[ID_CPE],
        3 => &[ID_SCE, ID_CPE],
        4 => &[ID_SCE, ID_CPE, ID_SCE],
        5 => &[ID_SCE, ID_CPE, ID_CPE],
        6 => &[ID_SCE, ID_CPE, ID_CPE, ID_LFE],
        7 => &[ID_SCE, ID_CPE, ID_CPE, ID_CPE, ID_LFE],
        _ => return None,
    };
    let mut out = BitWriter::default();
    let mut tags = [0u32; 4];
    for &element in elements {
        out.put(element, 3);
        out.put(tags[element as usize], 4); // element_instance_tag, counted per element type
        tags[element as usize] += 1;
        if element == ID_CPE {
            out.put(0, 1); // common_window: each channel has its own ics_info
            silent_channel_stream(&mut out);
        }
        silent_channel_stream(&mut out);
    }
    out.put(ID_END, 3);
    Some(out.bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lc_48k_stereo() {
        let config = AudioSpecificConfig::parse(&[0x11, 0x90]).unwrap();
        assert_eq!(config, AudioSpecificConfig { object_type: 2, sample_rate: 48000, channels: 2 });
        assert_eq!(config.codec_string(), "mp4a.40.2");
        assert_eq!(config.to_bytes(), [0x11, 0x90]);
        assert_eq!(AudioSpecificConfig::parse(&[0x12, 0x10]).unwrap().sample_rate, 44100);
        assert!(AudioSpecificConfig::parse(&[0x17]).is_err());
        assert!(AudioSpecificConfig::parse(&[]).is_err());
    }

    #[test]
    fn silent_frames_follow_the_element_syntax() {
        // SCE (3+4 bits), channel stream (22 bits), END (3 bits): 32 bits.
        assert_eq!(silent_frame(1).unwrap().len(), 4);
        // CPE (3+4+1 bits), two channel streams (44 bits), END: 55 bits, padded to 7 bytes.
        let stereo = silent_frame(2).unwrap();
        assert_eq!(stereo.len(), 7);
        assert_eq!(stereo[0] >> 5, ID_CPE as u8);
        assert!(silent_frame(0).is_none() && silent_frame(8).is_none());
        assert!(silent_frame(6).is_some());
    }
}

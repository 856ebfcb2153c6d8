//! A big-endian bit reader with Exp-Golomb codes, for H.264 parameter sets.

use crate::{ParseError, Result};

pub struct BitReader<'a> {
    bytes: &'a [u8],
    position: usize,
}

impl<'a> BitReader<'a> {
    pub fn new(bytes: &'a [u8]) -> Self {
        BitReader { bytes, position: 0 }
    }

    pub fn bit(&mut self) -> Result<u32> {
        let byte = *self.bytes.get(self.position / 8).ok_or_else(|| ParseError::new("bitstream: truncated"))?;
        let bit = (byte >> (7 - self.position % 8)) & 1;
        self.position += 1;
        Ok(u32::from(bit))
    }

    pub fn bits(&mut self, count: u32) -> Result<u32> {
        let mut value = 0u32;
        for _ in 0..count.min(32) {
            value = (value << 1) | self.bit()?;
        }
        Ok(value)
    }

    pub fn flag(&mut self) -> Result<bool> {
        Ok(self.bit()? == 1)
    }

    /// ue(v)
    pub fn unsigned_exp_golomb(&mut self) -> Result<u32> {
        let mut leading_zeros = 0;
        while self.bit()? == 0 {
            leading_zeros += 1;
            if leading_zeros > 31 {
                return Err(ParseError::new("bitstream: Exp-Golomb code too long"));
            }
        }
        let rest = self.bits(leading_zeros)?;
        Ok(((1u64 << leading_zeros) - 1 + u64::from(rest)).min(u64::from(u32::MAX)) as u32)
    }

    /// se(v)
    pub fn signed_exp_golomb(&mut self) -> Result<i32> {
        let code = self.unsigned_exp_golomb()?;
        let magnitude = code.div_ceil(2) as i32;
        Ok(if code % 2 == 1 { magnitude } else { -magnitude })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exp_golomb() {
        // 1 | 010 | 011 | 00100 | 00101 → ue: 0, 1, 2, 3, 4
        let mut reader = BitReader::new(&[0b1010_0110, 0b0100_0010, 0b1000_0000]);
        let values: Vec<u32> = (0..5).map(|_| reader.unsigned_exp_golomb().unwrap()).collect();
        assert_eq!(values, [0, 1, 2, 3, 4]);
        let mut reader = BitReader::new(&[0b0100_1100]);
        assert_eq!((reader.signed_exp_golomb().unwrap(), reader.signed_exp_golomb().unwrap()), (1, -1));
        assert!(BitReader::new(&[0, 0, 0, 0, 0]).unsigned_exp_golomb().is_err());
    }
}

//! The RTMP handshake, server side. C0+C1 (1 + 1536 bytes) arrive; the server answers S0+S1+S2;
//! C2 (1536 bytes) follows and is not checked. This is the "simple" handshake, which ffmpeg,
//! OBS (librtmp) and the IVS broadcast SDKs accept from a server when publishing.

use crate::{ParseError, Result};

pub const C0_C1_LEN: usize = 1 + 1536;
pub const C2_LEN: usize = 1536;
const RTMP_VERSION: u8 = 3;

/// The server's answer (S0+S1+S2) to a client's C0+C1. `random` fills S1's random part.
pub fn server_response(c0_c1: &[u8], server_time: u32, random: &[u8]) -> Result<Vec<u8>> {
    if c0_c1.len() != C0_C1_LEN {
        return Err(ParseError::new("RTMP handshake: C0+C1 must be 1537 bytes"));
    }
    if c0_c1[0] != RTMP_VERSION {
        return Err(ParseError::new(format!("RTMP handshake: version {} is not supported (3 is)", c0_c1[0])));
    }
    let c1 = &c0_c1[1..];
    let mut out = Vec::with_capacity(1 + 2 * 1536);
    out.push(RTMP_VERSION);
    // S1: time, four zero bytes, random.
    out.extend_from_slice(&server_time.to_be_bytes());
    out.extend_from_slice(&[0; 4]);
    out.extend((0..1528).map(|i| random.get(i % random.len().max(1)).copied().unwrap_or(0)));
    // S2: echo of C1 (its time, then the time it was read, then its random bytes).
    out.extend_from_slice(&c1[0..4]);
    out.extend_from_slice(&server_time.to_be_bytes());
    out.extend_from_slice(&c1[8..]);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_with_s0_s1_s2() {
        let mut c0_c1 = vec![3];
        c0_c1.extend((0..1536).map(|i| i as u8));
        let response = server_response(&c0_c1, 7, &[0xaa]).unwrap();
        assert_eq!(response.len(), 1 + 2 * 1536);
        assert_eq!(response[0], 3);
        assert_eq!(&response[1..5], &7u32.to_be_bytes());
        assert_eq!(&response[1537..1541], &c0_c1[1..5]);
        assert_eq!(&response[1545..], &c0_c1[9..]);
    }

    #[test]
    fn refuses_other_versions_and_sizes() {
        assert!(server_response(&[6; C0_C1_LEN], 0, &[1]).is_err());
        assert!(server_response(&[3; 10], 0, &[1]).is_err());
    }
}

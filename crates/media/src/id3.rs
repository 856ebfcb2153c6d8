//! ID3v2.4 tags, the form timed metadata takes in HLS: in MPEG-TS on the timed-metadata
//! elementary stream, in fragmented MP4 inside an `emsg` box (scheme
//! `https://aomedia.org/emsg/ID3`, see [`crate::fmp4::emsg_id3`]). Only what openivs writes:
//! text frames with a user-defined description (`TXXX`) and private frames (`PRIV`).

/// Sizes in ID3v2.4 headers are "syncsafe": 7 bits per byte, 28 bits in all.
const MAX_SYNCSAFE: usize = (1 << 28) - 1;

fn syncsafe(size: usize) -> [u8; 4] {
    let size = size.min(MAX_SYNCSAFE) as u32;
    [(size >> 21) as u8 & 0x7f, (size >> 14) as u8 & 0x7f, (size >> 7) as u8 & 0x7f, size as u8 & 0x7f]
}

fn frame(id: &[u8; 4], body: &[u8]) -> Vec<u8> {
    let mut frame = Vec::with_capacity(10 + body.len());
    frame.extend_from_slice(id);
    frame.extend_from_slice(&syncsafe(body.len()));
    frame.extend_from_slice(&[0, 0]);
    frame.extend_from_slice(body);
    frame
}

/// A `TXXX` frame (user-defined text, UTF-8): its description and value.
pub fn txxx(description: &str, value: &str) -> Vec<u8> {
    let mut body = Vec::with_capacity(2 + description.len() + value.len());
    body.push(3); // UTF-8
    body.extend_from_slice(description.as_bytes());
    body.push(0);
    body.extend_from_slice(value.as_bytes());
    frame(b"TXXX", &body)
}

/// The owner of Apple's `PRIV` frame giving a transport-stream timestamp (8 bytes, the 33-bit
/// 90 kHz time), which players take as timing, not as a cue.
pub const APPLE_TIMESTAMP_OWNER: &str = "com.apple.streaming.transportStreamTimestamp";

/// A `PRIV` frame: its owner identifier and private data.
pub fn private(owner: &str, data: &[u8]) -> Vec<u8> {
    let mut body = Vec::with_capacity(owner.len() + 1 + data.len());
    body.extend_from_slice(owner.as_bytes());
    body.push(0);
    body.extend_from_slice(data);
    frame(b"PRIV", &body)
}

/// A complete tag of the given frames.
pub fn tag(frames: &[Vec<u8>]) -> Vec<u8> {
    let size: usize = frames.iter().map(Vec::len).sum();
    let mut tag = Vec::with_capacity(10 + size);
    tag.extend_from_slice(b"ID3");
    tag.extend_from_slice(&[4, 0, 0]);
    tag.extend_from_slice(&syncsafe(size));
    for frame in frames {
        tag.extend_from_slice(frame);
    }
    tag
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tag_with_a_text_frame() {
        let tag = tag(&[txxx("", "{\"quiz\":1}")]);
        assert_eq!(&tag[..6], b"ID3\x04\x00\x00");
        // 10 bytes of frame header + encoding + empty description's terminator + 10 bytes.
        assert_eq!(&tag[6..10], &[0, 0, 0, 22]);
        assert_eq!(&tag[10..14], b"TXXX");
        assert_eq!(&tag[14..18], &[0, 0, 0, 12]);
        assert_eq!(tag[20], 3);
        assert_eq!(&tag[22..], b"{\"quiz\":1}");
    }

    #[test]
    fn sizes_are_syncsafe() {
        assert_eq!(syncsafe(0x7f), [0, 0, 0, 0x7f]);
        assert_eq!(syncsafe(0x80), [0, 0, 1, 0]);
        assert_eq!(syncsafe(1024), [0, 0, 8, 0]);
        let frame = private("metadata.live-video.net", &[0xff; 200]);
        // 23 bytes of owner, its terminator and 200 bytes: 224 = 1 × 128 + 96.
        assert_eq!(&frame[4..8], &[0, 0, 1, 96]);
    }
}

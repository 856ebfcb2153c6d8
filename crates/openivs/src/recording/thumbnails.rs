//! Recording thumbnails: a keyframe of the stream decoded in-process (openh264, built from its
//! bundled source: no system library, no encoder), scaled to the thumbnail configuration's
//! resolution with the source's aspect ratio (never enlarged), and encoded as a JPEG.
//!
//! Decoding takes 10–20 ms for a 720p keyframe: callers run it on a blocking thread.

use jpeg_encoder::{ColorType, Encoder};
use openh264::decoder::Decoder;
use openh264::formats::YUVSource;

/// JPEG quality of thumbnails.
const QUALITY: u8 = 80;

/// The height a thumbnail configuration's `resolution` asks for (`None`: the source's).
pub fn target_height(resolution: Option<&str>) -> Option<u32> {
    match resolution? {
        "LOWEST_RESOLUTION" => Some(160),
        "SD" => Some(480),
        "HD" => Some(720),
        "FULL_HD" => Some(1080),
        _ => None,
    }
}

/// The size a picture of `source` takes at `height` lines (not more than the source's), with
/// the source's aspect ratio and even sides.
pub fn scaled_size(source: (u32, u32), height: Option<u32>) -> (u32, u32) {
    let (width, source_height) = source;
    let height = height.unwrap_or(source_height).min(source_height).max(2);
    let scaled_width = (u64::from(width) * u64::from(height) / u64::from(source_height.max(1))) as u32;
    ((scaled_width.max(2) + 1) & !1, (height + 1) & !1)
}

/// A JPEG of the keyframe `annex_b` (SPS and PPS included): its bytes and size.
pub fn thumbnail(annex_b: &[u8], height: Option<u32>) -> Result<(Vec<u8>, u32, u32), String> {
    let mut decoder = Decoder::new().map_err(|e| format!("H.264 decoder: {e}"))?;
    let picture = decoder
        .decode(annex_b)
        .map_err(|e| format!("cannot decode the keyframe: {e}"))?
        .ok_or("the keyframe gave no picture")?;
    let (width, source_height) = picture.dimensions();
    let mut rgb = vec![0u8; width * source_height * 3];
    picture.write_rgb8(&mut rgb);
    let (target_width, target_height) = scaled_size((width as u32, source_height as u32), height);
    let scaled = scale(&rgb, (width, source_height), (target_width as usize, target_height as usize));
    let mut jpeg = Vec::with_capacity(64 * 1024);
    Encoder::new(&mut jpeg, QUALITY)
        .encode(&scaled, target_width as u16, target_height as u16, ColorType::Rgb)
        .map_err(|e| format!("JPEG: {e}"))?;
    Ok((jpeg, target_width, target_height))
}

/// Resizes an RGB picture by averaging the source pixels each target pixel covers.
fn scale(rgb: &[u8], from: (usize, usize), to: (usize, usize)) -> Vec<u8> {
    if from == to {
        return rgb.to_vec();
    }
    let mut out = Vec::with_capacity(to.0 * to.1 * 3);
    for y in 0..to.1 {
        let (y0, y1) = (y * from.1 / to.1, ((y + 1) * from.1 / to.1).max(y * from.1 / to.1 + 1).min(from.1));
        for x in 0..to.0 {
            let (x0, x1) = (x * from.0 / to.0, ((x + 1) * from.0 / to.0).max(x * from.0 / to.0 + 1).min(from.0));
            let mut sum = [0u32; 3];
            for row in y0..y1 {
                for column in x0..x1 {
                    let at = (row * from.0 + column) * 3;
                    for (channel, total) in sum.iter_mut().enumerate() {
                        *total += u32::from(rgb[at + channel]);
                    }
                }
            }
            let count = ((y1 - y0) * (x1 - x0)) as u32;
            out.extend(sum.iter().map(|total| (total / count.max(1)) as u8));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_keep_the_aspect_ratio_and_never_grow() {
        assert_eq!(scaled_size((1280, 720), target_height(Some("SD"))), (854, 480));
        assert_eq!(scaled_size((1280, 720), target_height(Some("FULL_HD"))), (1280, 720));
        assert_eq!(scaled_size((1280, 720), target_height(Some("LOWEST_RESOLUTION"))), (284, 160));
        assert_eq!(scaled_size((1280, 720), None), (1280, 720));
    }

    #[test]
    fn scaling_averages() {
        let rgb = [0, 0, 0, 255, 255, 255, 0, 0, 0, 255, 255, 255];
        assert_eq!(scale(&rgb, (2, 2), (1, 1)), vec![127, 127, 127]);
    }
}

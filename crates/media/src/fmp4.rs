//! Fragmented MP4 (CMAF) for HLS: the initialisation segment (`ftyp` + `moov` describing one
//! H.264 or HEVC track and one AAC track) and media fragments (`moof` + `mdat`), one per part. H.264
//! samples stay length-prefixed as in the `avcC` record; AAC samples are raw frames. Timed
//! metadata rides in `emsg` boxes placed before a fragment's `moof`.

use crate::aac::AudioSpecificConfig;
use crate::video::VideoCoding;

pub const VIDEO_TRACK: u32 = 1;
pub const AUDIO_TRACK: u32 = 2;
pub const VIDEO_TIMESCALE: u32 = 90_000;
/// Samples per AAC-LC frame.
pub const AAC_FRAME_SAMPLES: u32 = 1024;

fn boxed(kind: &[u8; 4], content: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(8 + content.len());
    out.extend_from_slice(&((8 + content.len()) as u32).to_be_bytes());
    out.extend_from_slice(kind);
    out.extend_from_slice(content);
    out
}

fn full_box(kind: &[u8; 4], version: u8, flags: u32, content: &[u8]) -> Vec<u8> {
    let mut body = vec![version, (flags >> 16) as u8, (flags >> 8) as u8, flags as u8];
    body.extend_from_slice(content);
    boxed(kind, &body)
}

fn concat(parts: &[Vec<u8>]) -> Vec<u8> {
    parts.concat()
}

const MATRIX: [u32; 9] = [0x0001_0000, 0, 0, 0, 0x0001_0000, 0, 0, 0, 0x4000_0000];

fn matrix() -> Vec<u8> {
    MATRIX.iter().flat_map(|v| v.to_be_bytes()).collect()
}

/// The scheme of an `emsg` carrying an ID3 tag (AOM's "Carriage of ID3 Timed Metadata in CMAF"),
/// which hls.js, Shaka and video.js read.
pub const ID3_SCHEME: &str = "https://aomedia.org/emsg/ID3";
/// The scheme the Amazon IVS Player (Twitch's player core) reads ID3 `emsg` boxes under.
pub const TWITCH_ID3_SCHEME: &str = "urn:twitch:id3";

/// An `emsg` box of version 0 (the presentation time is a delta from the fragment's earliest
/// presentation time) carrying one ID3 tag under `scheme`.
pub fn emsg_id3_v0(scheme: &str, timescale: u32, presentation_time_delta: u32, id: u32, id3: &[u8]) -> Vec<u8> {
    let mut content = Vec::with_capacity(16 + scheme.len() + 2 + id3.len());
    content.extend_from_slice(scheme.as_bytes());
    content.push(0);
    content.push(0); // value: empty
    content.extend_from_slice(&timescale.to_be_bytes());
    content.extend_from_slice(&presentation_time_delta.to_be_bytes());
    content.extend_from_slice(&u32::MAX.to_be_bytes()); // event_duration: unknown
    content.extend_from_slice(&id.to_be_bytes());
    content.extend_from_slice(id3);
    full_box(b"emsg", 0, 0, &content)
}

/// An `emsg` box (version 1: the presentation time is on the media timeline, in `timescale`
/// units) carrying one ID3 tag under `scheme`.
pub fn emsg_id3(scheme: &str, timescale: u32, presentation_time: u64, id: u32, id3: &[u8]) -> Vec<u8> {
    let mut content = Vec::with_capacity(24 + scheme.len() + 2 + id3.len());
    content.extend_from_slice(&timescale.to_be_bytes());
    content.extend_from_slice(&presentation_time.to_be_bytes());
    content.extend_from_slice(&u32::MAX.to_be_bytes()); // event_duration: unknown
    content.extend_from_slice(&id.to_be_bytes());
    content.extend_from_slice(scheme.as_bytes());
    content.push(0);
    content.push(0); // value: empty
    content.extend_from_slice(id3);
    full_box(b"emsg", 1, 0, &content)
}

/// The video track of an init segment: its coding, decoder configuration record and picture size.
#[derive(Debug, Clone)]
pub struct InitVideo<'a> {
    pub coding: VideoCoding,
    pub record: &'a [u8],
    pub width: u32,
    pub height: u32,
}

/// What the init segment describes.
#[derive(Debug, Clone)]
pub struct InitTracks<'a> {
    pub video: Option<InitVideo<'a>>,
    /// The AudioSpecificConfig bytes and what they say.
    pub audio: Option<(&'a [u8], AudioSpecificConfig)>,
}

fn tkhd(track: u32, audio: bool, width: u32, height: u32) -> Vec<u8> {
    let mut c = Vec::new();
    c.extend_from_slice(&[0; 8]); // creation, modification
    c.extend_from_slice(&track.to_be_bytes());
    c.extend_from_slice(&[0; 4]); // reserved
    c.extend_from_slice(&[0; 4]); // duration
    c.extend_from_slice(&[0; 8]); // reserved
    c.extend_from_slice(&[0; 4]); // layer, alternate group
    c.extend_from_slice(&(if audio { 0x0100u16 } else { 0 }).to_be_bytes());
    c.extend_from_slice(&[0; 2]);
    c.extend_from_slice(&matrix());
    c.extend_from_slice(&(width << 16).to_be_bytes());
    c.extend_from_slice(&(height << 16).to_be_bytes());
    full_box(b"tkhd", 0, 0x3, &c)
}

fn mdhd(timescale: u32) -> Vec<u8> {
    let mut c = vec![0; 8];
    c.extend_from_slice(&timescale.to_be_bytes());
    c.extend_from_slice(&[0; 4]);
    c.extend_from_slice(&0x55c4u16.to_be_bytes()); // "und"
    c.extend_from_slice(&[0; 2]);
    full_box(b"mdhd", 0, 0, &c)
}

fn hdlr(handler: &[u8; 4], name: &str) -> Vec<u8> {
    let mut c = vec![0; 4];
    c.extend_from_slice(handler);
    c.extend_from_slice(&[0; 12]);
    c.extend_from_slice(name.as_bytes());
    c.push(0);
    full_box(b"hdlr", 0, 0, &c)
}

fn dinf() -> Vec<u8> {
    let url = full_box(b"url ", 0, 1, &[]);
    let mut dref = 1u32.to_be_bytes().to_vec();
    dref.extend_from_slice(&url);
    boxed(b"dinf", &full_box(b"dref", 0, 0, &dref))
}

fn empty_tables() -> Vec<u8> {
    concat(&[
        full_box(b"stts", 0, 0, &[0; 4]),
        full_box(b"stsc", 0, 0, &[0; 4]),
        full_box(b"stsz", 0, 0, &[0; 8]),
        full_box(b"stco", 0, 0, &[0; 4]),
    ])
}

/// The visual sample entry of `video`: `avc1` holding `avcC`, or `hvc1` holding `hvcC` (the
/// sample entry Apple's players require for HEVC).
fn visual_sample_entry(video: &InitVideo<'_>) -> Vec<u8> {
    let (width, height) = (video.width, video.height);
    let mut c = vec![0; 6];
    c.extend_from_slice(&1u16.to_be_bytes());
    c.extend_from_slice(&[0; 16]);
    c.extend_from_slice(&(width as u16).to_be_bytes());
    c.extend_from_slice(&(height as u16).to_be_bytes());
    c.extend_from_slice(&0x0048_0000u32.to_be_bytes());
    c.extend_from_slice(&0x0048_0000u32.to_be_bytes());
    c.extend_from_slice(&[0; 4]);
    c.extend_from_slice(&1u16.to_be_bytes());
    c.extend_from_slice(&[0; 32]);
    c.extend_from_slice(&0x0018u16.to_be_bytes());
    c.extend_from_slice(&(-1i16).to_be_bytes());
    match video.coding {
        VideoCoding::Avc => boxed(b"avc1", &[c, boxed(b"avcC", video.record)].concat()),
        VideoCoding::Hevc => boxed(b"hvc1", &[c, boxed(b"hvcC", video.record)].concat()),
    }
}

fn descriptor(tag: u8, content: &[u8]) -> Vec<u8> {
    let mut out = vec![tag];
    // Sizes in the 4-byte expandable form players all accept.
    let len = content.len() as u32;
    out.extend_from_slice(&[
        0x80 | ((len >> 21) & 0x7f) as u8,
        0x80 | ((len >> 14) & 0x7f) as u8,
        0x80 | ((len >> 7) & 0x7f) as u8,
        (len & 0x7f) as u8,
    ]);
    out.extend_from_slice(content);
    out
}

fn mp4a(asc_bytes: &[u8], asc: &AudioSpecificConfig) -> Vec<u8> {
    let mut decoder_config = vec![0x40, 0x15, 0, 0, 0];
    decoder_config.extend_from_slice(&[0; 8]); // max and average bitrate: unknown
    decoder_config.extend_from_slice(&descriptor(0x05, asc_bytes));
    let mut es = vec![0, 0, 0];
    es.extend_from_slice(&descriptor(0x04, &decoder_config));
    es.extend_from_slice(&descriptor(0x06, &[0x02]));
    let esds = full_box(b"esds", 0, 0, &descriptor(0x03, &es));
    let mut c = vec![0; 6];
    c.extend_from_slice(&1u16.to_be_bytes());
    c.extend_from_slice(&[0; 8]);
    c.extend_from_slice(&u16::from(asc.channels.max(1)).to_be_bytes());
    c.extend_from_slice(&16u16.to_be_bytes());
    c.extend_from_slice(&[0; 4]);
    c.extend_from_slice(&((asc.sample_rate.min(65535)) << 16).to_be_bytes());
    c.extend_from_slice(&esds);
    boxed(b"mp4a", &c)
}

fn trak(
    track: u32,
    timescale: u32,
    handler: &[u8; 4],
    name: &str,
    media_header: Vec<u8>,
    entry: Vec<u8>,
    size: (u32, u32),
) -> Vec<u8> {
    let mut stsd = 1u32.to_be_bytes().to_vec();
    stsd.extend_from_slice(&entry);
    let stbl = boxed(b"stbl", &concat(&[full_box(b"stsd", 0, 0, &stsd), empty_tables()]));
    let minf = boxed(b"minf", &concat(&[media_header, dinf(), stbl]));
    let mdia = boxed(b"mdia", &concat(&[mdhd(timescale), hdlr(handler, name), minf]));
    boxed(b"trak", &concat(&[tkhd(track, handler == b"soun", size.0, size.1), mdia]))
}

fn trex(track: u32) -> Vec<u8> {
    let mut c = track.to_be_bytes().to_vec();
    c.extend_from_slice(&1u32.to_be_bytes());
    c.extend_from_slice(&[0; 12]);
    full_box(b"trex", 0, 0, &c)
}

/// The initialisation segment (`EXT-X-MAP`).
pub fn init_segment(tracks: &InitTracks<'_>) -> Vec<u8> {
    let ftyp = boxed(b"ftyp", b"iso6\0\0\0\0iso6cmfcisommp41");
    let mut mvhd = vec![0; 8];
    mvhd.extend_from_slice(&1000u32.to_be_bytes());
    mvhd.extend_from_slice(&[0; 4]);
    mvhd.extend_from_slice(&0x0001_0000u32.to_be_bytes());
    mvhd.extend_from_slice(&0x0100u16.to_be_bytes());
    mvhd.extend_from_slice(&[0; 10]);
    mvhd.extend_from_slice(&matrix());
    mvhd.extend_from_slice(&[0; 24]);
    mvhd.extend_from_slice(&3u32.to_be_bytes());
    let mut moov = vec![full_box(b"mvhd", 0, 0, &mvhd)];
    let mut mvex = Vec::new();
    if let Some(video) = &tracks.video {
        let vmhd = full_box(b"vmhd", 0, 1, &[0; 8]);
        let size = (video.width, video.height);
        moov.push(trak(VIDEO_TRACK, VIDEO_TIMESCALE, b"vide", "VideoHandler", vmhd, visual_sample_entry(video), size));
        mvex.push(trex(VIDEO_TRACK));
    }
    if let Some((bytes, asc)) = &tracks.audio {
        let smhd = full_box(b"smhd", 0, 0, &[0; 4]);
        moov.push(trak(AUDIO_TRACK, asc.sample_rate, b"soun", "SoundHandler", smhd, mp4a(bytes, asc), (0, 0)));
        mvex.push(trex(AUDIO_TRACK));
    }
    moov.push(boxed(b"mvex", &concat(&mvex)));
    concat(&[ftyp, boxed(b"moov", &concat(&moov))])
}

/// One sample of a fragment.
#[derive(Debug, Clone)]
pub struct Sample<'a> {
    pub duration: u32,
    pub composition_offset: i32,
    pub keyframe: bool,
    pub data: &'a [u8],
}

/// One track's run in a fragment: its decode time at the start, and its samples.
#[derive(Debug, Clone)]
pub struct TrackRun<'a> {
    pub track: u32,
    pub base_decode_time: u64,
    pub samples: Vec<Sample<'a>>,
}

/// A media fragment (`moof` + `mdat`) holding the runs, in order.
pub fn fragment(sequence: u32, runs: &[TrackRun<'_>]) -> Vec<u8> {
    let runs: Vec<&TrackRun<'_>> = runs.iter().filter(|r| !r.samples.is_empty()).collect();
    // First pass with zero offsets to learn the moof's size; the offsets do not change it.
    let build_moof = |offsets: &[u32]| {
        let mut trafs = Vec::new();
        for (run, offset) in runs.iter().zip(offsets) {
            let tfhd = full_box(b"tfhd", 0, 0x02_0000, &run.track.to_be_bytes());
            let tfdt = full_box(b"tfdt", 1, 0, &run.base_decode_time.to_be_bytes());
            let video = run.track == VIDEO_TRACK;
            let flags = if video { 0x0001 | 0x0100 | 0x0200 | 0x0400 | 0x0800 } else { 0x0001 | 0x0100 | 0x0200 };
            let mut trun = (run.samples.len() as u32).to_be_bytes().to_vec();
            trun.extend_from_slice(&offset.to_be_bytes());
            for sample in &run.samples {
                trun.extend_from_slice(&sample.duration.to_be_bytes());
                trun.extend_from_slice(&(sample.data.len() as u32).to_be_bytes());
                if video {
                    let sample_flags: u32 = if sample.keyframe { 0x0200_0000 } else { 0x0101_0000 };
                    trun.extend_from_slice(&sample_flags.to_be_bytes());
                    trun.extend_from_slice(&sample.composition_offset.to_be_bytes());
                }
            }
            let trun = full_box(b"trun", 1, flags, &trun);
            trafs.push(boxed(b"traf", &concat(&[tfhd, tfdt, trun])));
        }
        let mfhd = full_box(b"mfhd", 0, 0, &sequence.to_be_bytes());
        let mut moof = vec![mfhd];
        moof.extend(trafs);
        boxed(b"moof", &concat(&moof))
    };
    let moof_len = build_moof(&vec![0; runs.len()]).len() as u32;
    let mut offsets = Vec::with_capacity(runs.len());
    let mut position = moof_len + 8;
    for run in &runs {
        offsets.push(position);
        position += run.samples.iter().map(|s| s.data.len() as u32).sum::<u32>();
    }
    let moof = build_moof(&offsets);
    let mdat_len: usize = runs.iter().flat_map(|r| r.samples.iter()).map(|s| s.data.len()).sum();
    let mut out = Vec::with_capacity(moof.len() + 8 + mdat_len);
    out.extend_from_slice(&moof);
    out.extend_from_slice(&((8 + mdat_len) as u32).to_be_bytes());
    out.extend_from_slice(b"mdat");
    for run in &runs {
        for sample in &run.samples {
            out.extend_from_slice(sample.data);
        }
    }
    out
}

#[cfg(test)]
mod tests {

    #[test]
    fn emsg_carries_an_id3_tag_on_the_media_timeline() {
        let emsg = emsg_id3(ID3_SCHEME, VIDEO_TIMESCALE, 0x1_0000_0000, 7, b"ID3tag");
        assert_eq!(u32::from_be_bytes(emsg[0..4].try_into().unwrap()) as usize, emsg.len());
        assert_eq!(&emsg[4..8], b"emsg");
        assert_eq!(emsg[8], 1, "version 1");
        assert_eq!(u32::from_be_bytes(emsg[12..16].try_into().unwrap()), VIDEO_TIMESCALE);
        assert_eq!(u64::from_be_bytes(emsg[16..24].try_into().unwrap()), 0x1_0000_0000);
        assert_eq!(u32::from_be_bytes(emsg[28..32].try_into().unwrap()), 7);
        let scheme_end = 32 + ID3_SCHEME.len();
        assert_eq!(&emsg[32..scheme_end], ID3_SCHEME.as_bytes());
        assert_eq!(&emsg[scheme_end..scheme_end + 2], &[0, 0]);
        assert_eq!(&emsg[scheme_end + 2..], b"ID3tag");
    }

    use super::*;

    /// Walks top-level boxes: (type, size).
    fn boxes(bytes: &[u8]) -> Vec<(String, usize)> {
        let mut out = Vec::new();
        let mut rest = bytes;
        while rest.len() >= 8 {
            let size = u32::from_be_bytes(rest[..4].try_into().unwrap()) as usize;
            out.push((String::from_utf8_lossy(&rest[4..8]).into_owned(), size));
            rest = &rest[size..];
        }
        assert!(rest.is_empty(), "box sizes do not add up");
        out
    }

    #[test]
    fn init_segment_structure() {
        let asc = AudioSpecificConfig { object_type: 2, sample_rate: 48000, channels: 2 };
        let record = [1, 0x64, 0, 0x1f, 0xff, 0xe0, 0];
        let init = init_segment(&InitTracks {
            video: Some(InitVideo { coding: VideoCoding::Avc, record: &record, width: 1280, height: 720 }),
            audio: Some((&[0x11, 0x90], asc)),
        });
        let top: Vec<String> = boxes(&init).into_iter().map(|(t, _)| t).collect();
        assert_eq!(top, ["ftyp", "moov"]);
        let text = String::from_utf8_lossy(&init);
        for kind in ["mvhd", "trak", "tkhd", "mdhd", "hdlr", "avc1", "avcC", "mp4a", "esds", "mvex", "trex"] {
            assert!(text.contains(kind), "{kind}");
        }
    }

    #[test]
    fn fragment_offsets_point_into_mdat() {
        let video = [1u8, 2, 3, 4, 5];
        let audio = [9u8, 9];
        let runs = [
            TrackRun {
                track: VIDEO_TRACK,
                base_decode_time: 90_000,
                samples: vec![Sample { duration: 3000, composition_offset: 0, keyframe: true, data: &video }],
            },
            TrackRun {
                track: AUDIO_TRACK,
                base_decode_time: 48_000,
                samples: vec![Sample { duration: 1024, composition_offset: 0, keyframe: true, data: &audio }],
            },
        ];
        let bytes = fragment(7, &runs);
        let top = boxes(&bytes);
        assert_eq!(top.iter().map(|(t, _)| t.as_str()).collect::<Vec<_>>(), ["moof", "mdat"]);
        let moof_len = top[0].1;
        // The video trun's data offset is the first byte of mdat's payload.
        let trun_at = bytes.windows(4).position(|w| w == b"trun").unwrap();
        let offset = u32::from_be_bytes(bytes[trun_at + 12..trun_at + 16].try_into().unwrap()) as usize;
        assert_eq!(offset, moof_len + 8);
        assert_eq!(&bytes[offset..offset + 5], &video);
        assert_eq!(&bytes[offset + 5..], &audio);
    }
}

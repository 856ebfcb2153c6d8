//! MPEG-2 Transport Stream muxing for HLS segments: PAT and PMT, PES packets with PTS/DTS,
//! PCR on the video PID, continuity counters per PID, stuffing through the adaptation field, and a
//! timed-metadata PID (ID3, stream type 0x15) for PutMetadata. Video is H.264 (or HEVC, a
//! multitrack rendition's, in recordings) in Annex B with an access unit delimiter (and the
//! parameter sets before each keyframe); audio is AAC in ADTS.

use crate::aac::AudioSpecificConfig;
use crate::video::{VideoCoding, VideoRecord};

pub const PACKET_LEN: usize = 188;
pub const PMT_PID: u16 = 0x1000;
pub const VIDEO_PID: u16 = 0x100;
pub const AUDIO_PID: u16 = 0x101;
pub const METADATA_PID: u16 = 0x102;

/// MPEG-2 CRC-32 (polynomial 0x04C11DB7, no reflection), for PSI and SCTE-35 sections.
pub fn crc32_mpeg2(bytes: &[u8]) -> u32 {
    let mut crc = 0xffff_ffffu32;
    for &byte in bytes {
        crc ^= u32::from(byte) << 24;
        for _ in 0..8 {
            crc = if crc & 0x8000_0000 != 0 { (crc << 1) ^ 0x04c1_1db7 } else { crc << 1 };
        }
    }
    crc
}

/// Which elementary streams a transport stream carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tracks {
    pub video: bool,
    pub audio: bool,
    pub metadata: bool,
}

pub struct TsMuxer {
    tracks: Tracks,
    video_coding: VideoCoding,
    continuity: [u8; 5],
}

fn counter_index(pid: u16) -> usize {
    match pid {
        0 => 0,
        PMT_PID => 1,
        VIDEO_PID => 2,
        AUDIO_PID => 3,
        _ => 4,
    }
}

/// A timestamp in the 5-byte PES encoding (33 bits, markers), with the 4-bit prefix.
fn pes_timestamp(prefix: u8, ticks: u64) -> [u8; 5] {
    let t = ticks & 0x1_ffff_ffff;
    [
        (prefix << 4) | (((t >> 30) as u8 & 0x07) << 1) | 1,
        (t >> 22) as u8,
        (((t >> 15) as u8 & 0x7f) << 1) | 1,
        (t >> 7) as u8,
        ((t as u8 & 0x7f) << 1) | 1,
    ]
}

impl TsMuxer {
    pub fn new(tracks: Tracks) -> TsMuxer {
        TsMuxer { tracks, video_coding: VideoCoding::Avc, continuity: [0; 5] }
    }

    /// The video stream's coding (H.264 unless set), declared in the next tables written.
    pub fn set_video_coding(&mut self, coding: VideoCoding) {
        self.video_coding = coding;
    }

    fn next_counter(&mut self, pid: u16) -> u8 {
        let slot = &mut self.continuity[counter_index(pid)];
        let value = *slot;
        *slot = (*slot + 1) & 0x0f;
        value
    }

    /// One PSI section in its own packet (PAT and PMT fit in one).
    fn write_section(&mut self, pid: u16, section: &[u8], out: &mut Vec<u8>) {
        let counter = self.next_counter(pid);
        let start = out.len();
        out.extend_from_slice(&[0x47, 0x40 | (pid >> 8) as u8, pid as u8, 0x10 | counter, 0x00]);
        out.extend_from_slice(section);
        out.resize(start + PACKET_LEN, 0xff);
    }

    /// PAT and PMT: at the start of every segment, so each segment stands alone.
    pub fn write_tables(&mut self, out: &mut Vec<u8>) {
        let mut pat = vec![0x00, 0xb0, 0x0d, 0x00, 0x01, 0xc1, 0x00, 0x00, 0x00, 0x01];
        pat.extend_from_slice(&[0xe0 | (PMT_PID >> 8) as u8, PMT_PID as u8]);
        pat.extend_from_slice(&crc32_mpeg2(&pat).to_be_bytes());
        self.write_section(0, &pat, out);

        let pcr_pid = if self.tracks.video { VIDEO_PID } else { AUDIO_PID };
        let mut program_info = Vec::new();
        if self.tracks.metadata {
            // metadata_pointer_descriptor: ID3 metadata in this program.
            program_info.extend_from_slice(&[
                0x25, 0x0f, 0xff, 0xff, b'I', b'D', b'3', b' ', 0xff, b'I', b'D', b'3', b' ', 0x00, 0x1f, 0x00, 0x01,
            ]);
        }
        let mut streams = Vec::new();
        if self.tracks.video {
            let stream_type = match self.video_coding {
                VideoCoding::Avc => 0x1b,
                VideoCoding::Hevc => 0x24,
            };
            streams.extend_from_slice(&[stream_type, 0xe0 | (VIDEO_PID >> 8) as u8, VIDEO_PID as u8, 0xf0, 0x00]);
        }
        if self.tracks.audio {
            streams.extend_from_slice(&[0x0f, 0xe0 | (AUDIO_PID >> 8) as u8, AUDIO_PID as u8, 0xf0, 0x00]);
        }
        if self.tracks.metadata {
            // metadata_descriptor: format ID3, service 0xff.
            let descriptor = [0x26, 0x0d, 0xff, 0xff, b'I', b'D', b'3', b' ', 0xff, b'I', b'D', b'3', b' ', 0xff, 0x0f];
            streams.extend_from_slice(&[
                0x15,
                0xe0 | (METADATA_PID >> 8) as u8,
                METADATA_PID as u8,
                0xf0,
                descriptor.len() as u8,
            ]);
            streams.extend_from_slice(&descriptor);
        }
        let section_length = 9 + program_info.len() + streams.len() + 4;
        let mut pmt =
            vec![0x02, 0xb0 | (section_length >> 8) as u8, section_length as u8, 0x00, 0x01, 0xc1, 0x00, 0x00];
        pmt.extend_from_slice(&[0xe0 | (pcr_pid >> 8) as u8, pcr_pid as u8]);
        pmt.extend_from_slice(&[0xf0 | (program_info.len() >> 8) as u8, program_info.len() as u8]);
        pmt.extend_from_slice(&program_info);
        pmt.extend_from_slice(&streams);
        pmt.extend_from_slice(&crc32_mpeg2(&pmt).to_be_bytes());
        self.write_section(PMT_PID, &pmt, out);
    }

    /// Cuts one PES packet into TS packets: its header, then its payload given as the pieces it
    /// is made of (an access unit's start codes and NAL units, an ADTS header and its frame), so
    /// the payload is copied once, into the packets, and never assembled first. The first
    /// packet carries PCR (= DTS) when `pcr` is set and the random-access indicator when
    /// `random_access` is.
    fn write_pes(
        &mut self,
        pid: u16,
        header: &[u8],
        payload: &[&[u8]],
        pcr: Option<u64>,
        random_access: bool,
        out: &mut Vec<u8>,
    ) {
        let mut rest = Pieces { pieces: payload, index: 0, offset: 0 };
        let mut header = header;
        let mut remaining = header.len() + payload.iter().map(|piece| piece.len()).sum::<usize>();
        let mut first = true;
        out.reserve(remaining.div_ceil(PACKET_LEN - 4) * PACKET_LEN + PACKET_LEN);
        while remaining > 0 {
            let counter = self.next_counter(pid);
            // The adaptation field's content (after its length byte); at most a packet's room.
            let mut adaptation = [0xffu8; PACKET_LEN - 5];
            let mut adaptation_len = 0;
            if first && (pcr.is_some() || random_access) {
                adaptation[0] = if random_access { 0x40 } else { 0x00 };
                adaptation_len = 1;
                if let Some(ticks) = pcr {
                    adaptation[0] |= 0x10;
                    let base = ticks & 0x1_ffff_ffff;
                    adaptation[1..7].copy_from_slice(&[
                        (base >> 25) as u8,
                        (base >> 17) as u8,
                        (base >> 9) as u8,
                        (base >> 1) as u8,
                        ((base as u8 & 1) << 7) | 0x7e,
                        0x00,
                    ]);
                    adaptation_len = 7;
                }
            }
            // Header 4 bytes; an adaptation field takes its length byte plus its content.
            let room = PACKET_LEN - 4 - if adaptation_len == 0 { 0 } else { 1 + adaptation_len };
            let take = remaining.min(room);
            let mut has_adaptation = adaptation_len > 0;
            let needed = room - take;
            if needed > 0 {
                // The last packet is filled up through the adaptation field (stuffing 0xff).
                if has_adaptation {
                    adaptation_len += needed;
                } else if needed >= 2 {
                    adaptation[0] = 0x00;
                    adaptation_len = needed - 1;
                }
                // needed == 1 without a field: an empty field (its length byte alone) fills it.
                has_adaptation = true;
            }
            let start = out.len();
            let pusi = if first { 0x40 } else { 0x00 };
            let control = if has_adaptation { 0x30 } else { 0x10 };
            out.extend_from_slice(&[0x47, pusi | (pid >> 8) as u8, pid as u8, control | counter]);
            if has_adaptation {
                out.push(adaptation_len as u8);
                out.extend_from_slice(&adaptation[..adaptation_len]);
            }
            let from_header = take.min(header.len());
            out.extend_from_slice(&header[..from_header]);
            header = &header[from_header..];
            rest.copy_into(take - from_header, out);
            debug_assert_eq!(out.len() - start, PACKET_LEN);
            remaining -= take;
            first = false;
        }
    }

    /// A PES header (at most 19 bytes) in `header`; returns its length.
    fn pes_header(header: &mut [u8; 19], stream_id: u8, pts: u64, dts: Option<u64>, payload_len: usize) -> usize {
        let header_data_len = if dts.is_some() { 10 } else { 5 };
        let packet_len = 3 + header_data_len + payload_len;
        // Video PES may exceed 65535 bytes: length 0 means "unbounded" there.
        let length_field = if packet_len > 0xffff { 0 } else { packet_len as u16 };
        let [high, low] = length_field.to_be_bytes();
        header[..9].copy_from_slice(&[
            0x00,
            0x00,
            0x01,
            stream_id,
            high,
            low,
            0x80,
            if dts.is_some() { 0xc0 } else { 0x80 },
            header_data_len as u8,
        ]);
        match dts {
            Some(dts) => {
                header[9..14].copy_from_slice(&pes_timestamp(0x3, pts));
                header[14..19].copy_from_slice(&pes_timestamp(0x1, dts));
            }
            None => header[9..14].copy_from_slice(&pes_timestamp(0x2, pts)),
        }
        9 + header_data_len
    }

    /// Writes one PES packet of `stream_id` on `pid` with the payload's pieces.
    fn write_pes_packet(
        &mut self,
        (pid, stream_id): (u16, u8),
        (pts, dts): (u64, Option<u64>),
        payload: &[&[u8]],
        (pcr, random_access): (Option<u64>, bool),
        out: &mut Vec<u8>,
    ) {
        let mut header = [0u8; 19];
        let payload_len = payload.iter().map(|piece| piece.len()).sum();
        let header_len = Self::pes_header(&mut header, stream_id, pts, dts, payload_len);
        self.write_pes(pid, &header[..header_len], payload, pcr, random_access, out);
    }

    /// One video access unit in Annex B, as the pieces it is made of (see [`annex_b_pieces`]),
    /// timestamps in 90 kHz ticks.
    pub fn write_video(&mut self, pts: u64, dts: u64, keyframe: bool, annex_b: &[&[u8]], out: &mut Vec<u8>) {
        self.write_pes_packet(
            (VIDEO_PID, 0xe0),
            (pts, (pts != dts).then_some(dts)),
            annex_b,
            (Some(dts), keyframe),
            out,
        );
    }

    /// AAC frames framed as ADTS (the header and the frame may be separate pieces), timestamp
    /// in 90 kHz ticks. Without video, the audio PID carries the PCR.
    pub fn write_audio(&mut self, pts: u64, adts: &[&[u8]], out: &mut Vec<u8>) {
        let pcr = (!self.tracks.video).then_some(pts);
        self.write_pes_packet((AUDIO_PID, 0xc0), (pts, None), adts, (pcr, !self.tracks.video), out);
    }

    /// An ID3 tag as timed metadata (private stream 1, stream type 0x15).
    pub fn write_metadata(&mut self, pts: u64, id3: &[u8], out: &mut Vec<u8>) {
        self.write_pes_packet((METADATA_PID, 0xbd), (pts, None), &[id3], (None, false), out);
    }
}

/// A PES payload's pieces, read in order across their boundaries.
struct Pieces<'a> {
    pieces: &'a [&'a [u8]],
    index: usize,
    offset: usize,
}

impl Pieces<'_> {
    /// Appends the next `len` bytes to `out` (the caller never asks for more than are left).
    fn copy_into(&mut self, mut len: usize, out: &mut Vec<u8>) {
        while len > 0 {
            let piece = &self.pieces[self.index][self.offset..];
            let take = piece.len().min(len);
            out.extend_from_slice(&piece[..take]);
            len -= take;
            self.offset += take;
            if self.offset == self.pieces[self.index].len() {
                self.index += 1;
                self.offset = 0;
            }
        }
    }
}

/// A length-prefixed sample of `record`'s coding as the pieces of its Annex B form, borrowed
/// from the sample and the record (nothing copied): an access unit delimiter first, the
/// record's parameter sets when `with_parameter_sets` (keyframes, so every segment can start
/// decoding, and the first picture of every low-latency part, so players that transmux each
/// part alone find them there), then the sample's NAL units, each after a start code.
pub fn annex_b_pieces<'a>(
    sample: &'a [u8],
    record: &'a VideoRecord,
    with_parameter_sets: bool,
    pieces: &mut Vec<&'a [u8]>,
) {
    const START: &[u8] = &[0, 0, 0, 1];
    pieces.push(START);
    pieces.push(record.delimiter());
    if with_parameter_sets {
        for set in &record.parameter_sets {
            pieces.push(START);
            pieces.push(set);
        }
    }
    let size = usize::from(record.nal_length_size.clamp(1, 4));
    let mut rest = sample;
    while rest.len() >= size {
        let len = rest[..size].iter().fold(0usize, |n, b| (n << 8) | usize::from(*b));
        let Some(nal) = rest.get(size..size + len) else { break };
        // Encoders' own delimiters and parameter sets are replaced by ours.
        let replaced = record
            .nal_type(nal)
            .is_some_and(|t| record.is_delimiter(t) || (with_parameter_sets && record.is_parameter_set(t)));
        if !replaced {
            pieces.push(START);
            pieces.push(nal);
        }
        rest = &rest[size + len..];
    }
}

/// [`annex_b_pieces`] joined into one buffer (for a decoder that wants the access unit whole).
pub fn to_annex_b(sample: &[u8], record: &VideoRecord, with_parameter_sets: bool) -> Vec<u8> {
    let mut pieces = Vec::new();
    annex_b_pieces(sample, record, with_parameter_sets, &mut pieces);
    pieces.concat()
}

/// An ADTS header for one raw AAC frame.
pub fn adts_header(config: &AudioSpecificConfig, payload_len: usize) -> [u8; 7] {
    let index = crate::aac::SAMPLE_RATES.iter().position(|r| *r == config.sample_rate).unwrap_or(4) as u8;
    let profile = config.object_type.saturating_sub(1).min(3);
    let frame_len = payload_len + 7;
    let channels = config.channels & 0x07;
    [
        0xff,
        0xf1,
        (profile << 6) | (index << 2) | (channels >> 2),
        ((channels & 0x03) << 6) | ((frame_len >> 11) as u8 & 0x03),
        (frame_len >> 3) as u8,
        ((frame_len as u8 & 0x07) << 5) | 0x1f,
        0xfc,
    ]
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    fn packets(bytes: &[u8]) -> Vec<&[u8]> {
        assert_eq!(bytes.len() % PACKET_LEN, 0);
        bytes.chunks(PACKET_LEN).collect()
    }

    #[test]
    fn crc_of_a_known_pat() {
        // The PAT every ffmpeg-made TS file starts with (program 1 → PMT PID 0x1000).
        let pat = [0x00, 0xb0, 0x0d, 0x00, 0x01, 0xc1, 0x00, 0x00, 0x00, 0x01, 0xf0, 0x00];
        assert_eq!(crc32_mpeg2(&pat), 0x2ab1_04b2);
    }

    #[test]
    fn packets_are_188_bytes_with_counters_in_order() {
        let mut muxer = TsMuxer::new(Tracks { video: true, audio: true, metadata: true });
        let mut out = Vec::new();
        muxer.write_tables(&mut out);
        for i in 0..20u64 {
            let frame = vec![0x65u8; 1000 + i as usize * 37];
            muxer.write_video(i * 3000 + 6000, i * 3000, i == 0, &[&frame], &mut out);
            muxer.write_audio(i * 1920, &[&[0xffu8; 200]], &mut out);
        }
        muxer.write_metadata(0, b"ID3", &mut out);
        let mut last: std::collections::HashMap<u16, u8> = Default::default();
        for packet in packets(&out) {
            assert_eq!(packet[0], 0x47);
            let pid = (u16::from(packet[1] & 0x1f) << 8) | u16::from(packet[2]);
            let counter = packet[3] & 0x0f;
            if let Some(previous) = last.insert(pid, counter) {
                assert_eq!(counter, (previous + 1) & 0x0f, "pid {pid:#x}");
            }
        }
    }

    #[test]
    fn every_payload_size_fills_packets_exactly() {
        for size in 0..400 {
            let mut muxer = TsMuxer::new(Tracks { video: true, audio: true, metadata: false });
            let mut out = Vec::new();
            muxer.write_audio(0, &[&vec![1u8; size]], &mut out);
            muxer.write_video(0, 0, true, &[&vec![2u8; size]], &mut out);
            assert_eq!(out.len() % PACKET_LEN, 0, "size {size}");
        }
    }

    /// The packets' payloads (after any adaptation field), joined.
    fn payload_of(bytes: &[u8]) -> Vec<u8> {
        let mut payload = Vec::new();
        for packet in packets(bytes) {
            let start = if packet[3] & 0x20 != 0 { 5 + usize::from(packet[4]) } else { 4 };
            payload.extend_from_slice(&packet[start..]);
        }
        payload
    }

    #[test]
    fn a_payload_in_pieces_is_written_as_if_it_were_one() {
        let data: Vec<u8> = (0..2000u32).map(|i| (i * 7 + 3) as u8).collect();
        for size in [0usize, 1, 2, 3, 160, 170, 176, 177, 178, 183, 184, 185, 400, 1999] {
            for cut in [0, 1, size / 3, size / 2, size.saturating_sub(1), size] {
                let (head, tail) = data[..size].split_at(cut.min(size));
                let mut whole = Vec::new();
                TsMuxer::new(Tracks { video: true, audio: true, metadata: false }).write_video(
                    9000,
                    6000,
                    true,
                    &[&data[..size]],
                    &mut whole,
                );
                let mut split = Vec::new();
                TsMuxer::new(Tracks { video: true, audio: true, metadata: false }).write_video(
                    9000,
                    6000,
                    true,
                    &[head, &[], tail],
                    &mut split,
                );
                assert_eq!(whole, split, "size {size}, cut at {cut}");
                // The PES header (19 bytes with DTS) and then the data, in order.
                assert_eq!(&payload_of(&split)[19..], &data[..size], "size {size}");
                let mut audio = Vec::new();
                TsMuxer::new(Tracks { video: false, audio: true, metadata: false }).write_audio(
                    9000,
                    &[head, tail],
                    &mut audio,
                );
                assert_eq!(&payload_of(&audio)[14..], &data[..size], "audio size {size}");
            }
        }
    }

    /// A record of `coding` with these parameter sets and 4-byte NAL lengths.
    pub(crate) fn record(coding: VideoCoding, parameter_sets: &[&[u8]]) -> VideoRecord {
        VideoRecord {
            coding,
            nal_length_size: 4,
            parameter_sets: parameter_sets.iter().map(|set| set.to_vec()).collect(),
            codec: String::new(),
            profile: String::new(),
            level: String::new(),
            width: 16,
            height: 16,
        }
    }

    #[test]
    fn annex_b_conversion() {
        let avc = record(VideoCoding::Avc, &[&[0x67, 9], &[0x68, 8]]);
        let sample = [0, 0, 0, 2, 0x09, 0x10, 0, 0, 0, 3, 0x65, 1, 2];
        let out = to_annex_b(&sample, &avc, true);
        assert_eq!(out, [0, 0, 0, 1, 0x09, 0xf0, 0, 0, 0, 1, 0x67, 9, 0, 0, 0, 1, 0x68, 8, 0, 0, 0, 1, 0x65, 1, 2]);
        // Truncated input stops cleanly.
        assert_eq!(to_annex_b(&[0, 0, 0, 9, 1], &avc, false), [0, 0, 0, 1, 0x09, 0xf0]);
        // HEVC: its own delimiter (type 35) and parameter sets (types 32-34) are replaced.
        let hevc = record(VideoCoding::Hevc, &[&[0x40, 1], &[0x42, 1], &[0x44, 1]]);
        let sample = [0, 0, 0, 3, 0x46, 0x01, 0x10, 0, 0, 0, 2, 0x42, 1, 0, 0, 0, 3, 0x26, 1, 7];
        let out = to_annex_b(&sample, &hevc, true);
        let expected = [
            &[0, 0, 0, 1, 0x46, 0x01, 0x50][..],
            &[0, 0, 0, 1, 0x40, 1, 0, 0, 0, 1, 0x42, 1, 0, 0, 0, 1, 0x44, 1],
            &[0, 0, 0, 1, 0x26, 1, 7],
        ]
        .concat();
        assert_eq!(out, expected);
    }

    #[test]
    fn hevc_streams_are_declared_as_such() {
        let mut muxer = TsMuxer::new(Tracks { video: true, audio: false, metadata: false });
        muxer.set_video_coding(VideoCoding::Hevc);
        let mut out = Vec::new();
        muxer.write_tables(&mut out);
        let pmt = &out[PACKET_LEN..];
        // The PMT's first stream entry (after the 5-byte header, 12 bytes of section header).
        assert_eq!(pmt[5 + 12], 0x24);
    }

    #[test]
    fn adts_for_lc_48k_stereo() {
        let config = AudioSpecificConfig { object_type: 2, sample_rate: 48000, channels: 2 };
        let header = adts_header(&config, 100);
        assert_eq!(header[..2], [0xff, 0xf1]);
        let frame_len =
            ((usize::from(header[3]) & 3) << 11) | (usize::from(header[4]) << 3) | (usize::from(header[5]) >> 5);
        assert_eq!(frame_len, 107);
        assert_eq!((header[2] >> 2) & 0x0f, 3);
    }
}

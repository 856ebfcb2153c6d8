//! MPEG-2 Transport Stream demuxing, sans I/O: bytes go in as they arrive (any split), and out
//! come the elementary streams' PES packets with their 90 kHz timestamps, then access units:
//! H.264 pictures as length-prefixed samples with the parameter sets that precede them, AAC
//! frames from ADTS. A transcoder's output and SRT ingest both arrive this way.
//!
//! Bad input never panics or grows memory without bound: a lost sync byte is searched for
//! again, a PES larger than [`MAX_PES_BYTES`] is dropped, and PIDs the PMT does not declare are
//! ignored.

use std::collections::{HashMap, VecDeque};

use crate::aac::AudioSpecificConfig;
use crate::ts::PACKET_LEN;
use crate::{ParseError, Result};

/// Elementary stream types (ISO/IEC 13818-1 table 2-34) the demuxer turns into access units.
pub const STREAM_TYPE_AAC_ADTS: u8 = 0x0f;
pub const STREAM_TYPE_H264: u8 = 0x1b;
pub const STREAM_TYPE_METADATA: u8 = 0x15;

/// A PES larger than this is dropped (a 4K keyframe is a few MB).
pub const MAX_PES_BYTES: usize = 16 << 20;

const TIMESTAMP_WRAP: u64 = 1 << 33;

/// One PES packet of an elementary stream. Timestamps are 90 kHz and unwrapped: they keep
/// counting past the 33-bit wrap of the stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pes {
    pub pid: u16,
    pub stream_type: u8,
    pub pts: Option<u64>,
    pub dts: Option<u64>,
    pub data: Vec<u8>,
}

#[derive(Debug, Default)]
struct Stream {
    stream_type: u8,
    /// The PES being gathered (header included), and its declared length when it has one.
    buffer: Vec<u8>,
    declared_len: Option<usize>,
    gathering: bool,
}

#[derive(Debug, Default)]
pub struct TsDemuxer {
    /// Bytes of a packet not yet complete.
    partial: Vec<u8>,
    pmt_pids: Vec<u16>,
    streams: HashMap<u16, Stream>,
    ready: VecDeque<Pes>,
    /// The last unwrapped timestamp, which the next ones (of every stream: they share the
    /// program's clock) are unwrapped against.
    last_timestamp: Option<u64>,
    /// Packets skipped because they did not start with the sync byte or were malformed.
    pub errors: u64,
}

/// The value of 33-bit `raw` (90 kHz) nearest `last`, counting wraps.
pub fn unwrap_timestamp(last: Option<u64>, raw: u64) -> u64 {
    let Some(last) = last else { return raw };
    let base = last - last % TIMESTAMP_WRAP;
    [base.checked_sub(TIMESTAMP_WRAP), Some(base), Some(base + TIMESTAMP_WRAP)]
        .into_iter()
        .flatten()
        .map(|b| b + raw)
        .min_by_key(|candidate| candidate.abs_diff(last))
        .unwrap_or(raw)
}

fn read_timestamp(bytes: &[u8]) -> u64 {
    (u64::from(bytes[0] >> 1 & 0x07) << 30)
        | (u64::from(bytes[1]) << 22)
        | (u64::from(bytes[2] >> 1) << 15)
        | (u64::from(bytes[3]) << 7)
        | u64::from(bytes[4] >> 1)
}

impl TsDemuxer {
    pub fn new() -> TsDemuxer {
        TsDemuxer::default()
    }

    /// The elementary streams the PMT declared: (PID, stream type).
    pub fn streams(&self) -> Vec<(u16, u8)> {
        let mut streams: Vec<(u16, u8)> = self.streams.iter().map(|(pid, s)| (*pid, s.stream_type)).collect();
        streams.sort_unstable();
        streams
    }

    /// Takes in bytes as they arrive.
    pub fn push(&mut self, mut bytes: &[u8]) {
        if !self.partial.is_empty() {
            let wanted = PACKET_LEN - self.partial.len();
            let taken = wanted.min(bytes.len());
            self.partial.extend_from_slice(&bytes[..taken]);
            bytes = &bytes[taken..];
            if self.partial.len() < PACKET_LEN {
                return;
            }
            let packet = std::mem::take(&mut self.partial);
            self.packet(&packet);
        }
        while !bytes.is_empty() {
            if bytes[0] != 0x47 {
                // Lost sync: on to the next sync byte.
                self.errors += 1;
                let skip = bytes.iter().position(|b| *b == 0x47).unwrap_or(bytes.len());
                bytes = &bytes[skip..];
                continue;
            }
            if bytes.len() < PACKET_LEN {
                self.partial.extend_from_slice(bytes);
                return;
            }
            let (packet, rest) = bytes.split_at(PACKET_LEN);
            self.packet(packet);
            bytes = rest;
        }
    }

    /// The next complete PES packet, if any.
    pub fn next_pes(&mut self) -> Option<Pes> {
        self.ready.pop_front()
    }

    /// The input is over: PES packets still being gathered are complete.
    pub fn flush(&mut self) {
        let pids: Vec<u16> = self.streams.keys().copied().collect();
        for pid in pids {
            self.finish_pes(pid);
        }
    }

    fn packet(&mut self, packet: &[u8]) {
        let pid = (u16::from(packet[1] & 0x1f) << 8) | u16::from(packet[2]);
        let unit_start = packet[1] & 0x40 != 0;
        let adaptation = (packet[3] >> 4) & 0x03;
        let mut payload = &packet[4..];
        if adaptation & 0x02 != 0 {
            let len = usize::from(payload[0]);
            if len + 1 > payload.len() {
                self.errors += 1;
                return;
            }
            payload = &payload[1 + len..];
        }
        if adaptation & 0x01 == 0 {
            return;
        }
        if pid == 0 {
            if unit_start {
                self.pat(payload);
            }
        } else if self.pmt_pids.contains(&pid) {
            if unit_start {
                self.pmt(payload);
            }
        } else if self.streams.contains_key(&pid) {
            self.pes_payload(pid, unit_start, payload);
        }
    }

    /// A PSI section's bytes after the pointer field, up to its CRC.
    fn section(payload: &[u8]) -> Option<&[u8]> {
        let pointer = usize::from(*payload.first()?);
        let section = payload.get(1 + pointer..)?;
        let len = usize::from(u16::from_be_bytes([*section.get(1)?, *section.get(2)?]) & 0x0fff);
        // (Header 3 bytes; the last 4 are the CRC.)
        section.get(..3 + len)?.get(..(3 + len).checked_sub(4)?)
    }

    fn pat(&mut self, payload: &[u8]) {
        let Some(section) = Self::section(payload) else {
            self.errors += 1;
            return;
        };
        let Some(programs) = section.get(8..) else { return };
        self.pmt_pids = programs
            .chunks_exact(4)
            .filter(|p| u16::from_be_bytes([p[0], p[1]]) != 0)
            .map(|p| u16::from_be_bytes([p[2] & 0x1f, p[3]]))
            .collect();
    }

    fn pmt(&mut self, payload: &[u8]) {
        let Some(section) = Self::section(payload) else {
            self.errors += 1;
            return;
        };
        let Some(info_len) = section.get(10..12).map(|b| usize::from(u16::from_be_bytes([b[0], b[1]]) & 0x0fff)) else {
            return;
        };
        let mut rest = section.get(12 + info_len..).unwrap_or_default();
        while rest.len() >= 5 {
            let stream_type = rest[0];
            let pid = (u16::from(rest[1] & 0x1f) << 8) | u16::from(rest[2]);
            let es_info_len = usize::from(u16::from_be_bytes([rest[3], rest[4]]) & 0x0fff);
            let stream = self.streams.entry(pid).or_default();
            stream.stream_type = stream_type;
            rest = rest.get(5 + es_info_len..).unwrap_or_default();
        }
    }

    fn pes_payload(&mut self, pid: u16, unit_start: bool, payload: &[u8]) {
        if unit_start {
            self.finish_pes(pid);
        }
        let Some(stream) = self.streams.get_mut(&pid) else { return };
        if unit_start {
            stream.gathering = true;
            stream.declared_len = payload
                .get(4..6)
                .map(|b| usize::from(u16::from_be_bytes([b[0], b[1]])))
                .filter(|len| *len > 0)
                .map(|len| len + 6);
        }
        if !stream.gathering {
            return;
        }
        if stream.buffer.len() + payload.len() > MAX_PES_BYTES {
            stream.buffer.clear();
            stream.gathering = false;
            self.errors += 1;
            return;
        }
        stream.buffer.extend_from_slice(payload);
        if stream.declared_len.is_some_and(|len| stream.buffer.len() >= len) {
            self.finish_pes(pid);
        }
    }

    /// The PES gathered on `pid` is complete.
    fn finish_pes(&mut self, pid: u16) {
        let Some(stream) = self.streams.get_mut(&pid) else { return };
        if !stream.gathering {
            return;
        }
        stream.gathering = false;
        let mut buffer = std::mem::take(&mut stream.buffer);
        if let Some(len) = stream.declared_len {
            buffer.truncate(len);
        }
        match parse_pes(&buffer) {
            Some((pts, dts, start)) => {
                let pts = pts.map(|raw| unwrap_timestamp(self.last_timestamp, raw));
                let dts = dts.map(|raw| unwrap_timestamp(self.last_timestamp, raw));
                if let Some(t) = dts.or(pts) {
                    self.last_timestamp = Some(t);
                }
                buffer.drain(..start);
                self.ready.push_back(Pes { pid, stream_type: stream.stream_type, pts, dts, data: buffer });
            }
            None => self.errors += 1,
        }
    }
}

/// A PES header: its PTS and DTS (raw 33-bit), and where the payload starts.
fn parse_pes(pes: &[u8]) -> Option<(Option<u64>, Option<u64>, usize)> {
    if pes.get(..3)? != [0, 0, 1] {
        return None;
    }
    let stream_id = *pes.get(3)?;
    // Streams without the optional header (padding, private 2, ECM, …).
    if matches!(stream_id, 0xbc | 0xbe | 0xbf | 0xf0 | 0xf1 | 0xf2 | 0xf8 | 0xff) {
        return Some((None, None, 6));
    }
    let flags = *pes.get(7)? >> 6;
    let header_len = usize::from(*pes.get(8)?);
    let start = 9 + header_len;
    if pes.len() < start {
        return None;
    }
    let pts = (flags & 0x02 != 0 && header_len >= 5).then(|| read_timestamp(&pes[9..14]));
    let dts = (flags == 0x03 && header_len >= 10).then(|| read_timestamp(&pes[14..19])).or(pts);
    Some((pts, dts, start))
}

/// The NAL units of Annex B bytes (split on 00 00 01 and 00 00 00 01 start codes).
pub fn annex_b_units(bytes: &[u8]) -> impl Iterator<Item = &[u8]> {
    let mut starts = Vec::new();
    let mut i = 0;
    while i + 2 < bytes.len() {
        if bytes[i] == 0 && bytes[i + 1] == 0 && bytes[i + 2] == 1 {
            starts.push(i + 3);
            i += 3;
        } else {
            i += 1;
        }
    }
    let ends: Vec<usize> = starts.iter().skip(1).map(|s| s - 3).chain(std::iter::once(bytes.len())).collect();
    starts.into_iter().zip(ends).map(move |(start, end)| {
        // A four-byte start code leaves a zero at the end of the previous unit.
        let mut end = end;
        while end > start && bytes[end - 1] == 0 {
            end -= 1;
        }
        &bytes[start..end]
    })
}

/// One H.264 picture from a PES: the sample (4-byte length prefixes; delimiters and
/// parameter sets left out) and the SPS and PPS that came with it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Picture {
    pub keyframe: bool,
    pub sample: Vec<u8>,
    pub sps: Option<Vec<u8>>,
    pub pps: Option<Vec<u8>>,
}

pub fn picture(annex_b: &[u8]) -> Picture {
    let mut picture = Picture::default();
    for nal in annex_b_units(annex_b).filter(|n| !n.is_empty()) {
        match nal[0] & 0x1f {
            7 => picture.sps = Some(nal.to_vec()),
            8 => picture.pps = Some(nal.to_vec()),
            9 => {}
            nal_type => {
                picture.keyframe |= nal_type == 5;
                picture.sample.extend_from_slice(&(nal.len() as u32).to_be_bytes());
                picture.sample.extend_from_slice(nal);
            }
        }
    }
    picture
}

/// The raw AAC frames of ADTS bytes, each with the configuration its header states.
pub fn adts_frames(mut bytes: &[u8]) -> Result<Vec<(AudioSpecificConfig, &[u8])>> {
    let mut frames = Vec::new();
    while !bytes.is_empty() {
        let header = bytes.get(..7).ok_or_else(|| ParseError::new("ADTS: truncated header"))?;
        if header[0] != 0xff || header[1] & 0xf0 != 0xf0 {
            return Err(ParseError::new("ADTS: no sync word"));
        }
        let header_len = if header[1] & 0x01 == 0 { 9 } else { 7 };
        let object_type = (header[2] >> 6) + 1;
        let sample_rate = *crate::aac::SAMPLE_RATES
            .get(usize::from((header[2] >> 2) & 0x0f))
            .ok_or_else(|| ParseError::new("ADTS: reserved sampling frequency index"))?;
        let channels = ((header[2] & 0x01) << 2) | (header[3] >> 6);
        let frame_len =
            (usize::from(header[3] & 0x03) << 11) | (usize::from(header[4]) << 3) | usize::from(header[5] >> 5);
        if frame_len < header_len || frame_len > bytes.len() {
            return Err(ParseError::new("ADTS: bad frame length"));
        }
        frames.push((AudioSpecificConfig { object_type, sample_rate, channels }, &bytes[header_len..frame_len]));
        bytes = &bytes[frame_len..];
    }
    Ok(frames)
}

/// What an elementary stream's PES packets carry, in decoding order: a codec configuration
/// whenever it first appears or changes, then frames. Timestamps are the PES's 90 kHz ones.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AccessUnit {
    /// An H.264 decoder configuration record (avcC) built from in-band SPS and PPS.
    VideoConfiguration {
        record: Vec<u8>,
    },
    /// One H.264 picture as length-prefixed NAL units (parameter sets left out).
    Video {
        pts: u64,
        dts: u64,
        keyframe: bool,
        sample: Vec<u8>,
    },
    AudioConfiguration(AudioSpecificConfig),
    /// One raw AAC frame.
    Audio {
        pts: u64,
        frame: Vec<u8>,
    },
}

/// Turns PES packets into [`AccessUnit`]s, remembering each stream's configuration so that it
/// is given again only when it changes. Pictures before the first SPS and PPS cannot be
/// decoded and are left out; PES packets without a PTS or with broken ADTS are skipped.
#[derive(Debug, Default)]
pub struct AccessUnits {
    parameter_sets: HashMap<u16, (Vec<u8>, Vec<u8>)>,
    audio_configurations: HashMap<u16, AudioSpecificConfig>,
}

impl AccessUnits {
    pub fn new() -> AccessUnits {
        AccessUnits::default()
    }

    /// The access units of one PES of an H.264 or ADTS AAC stream (others give none).
    pub fn of(&mut self, pes: &Pes) -> Vec<AccessUnit> {
        let Some(pts) = pes.pts else { return Vec::new() };
        let mut units = Vec::new();
        match pes.stream_type {
            STREAM_TYPE_H264 => {
                let picture = picture(&pes.data);
                if let (Some(sps), Some(pps)) = (picture.sps, picture.pps)
                    && self.parameter_sets.get(&pes.pid).is_none_or(|known| known != &(sps.clone(), pps.clone()))
                {
                    let record = crate::h264::DecoderConfiguration::record(&sps, &pps);
                    if crate::h264::DecoderConfiguration::parse(&record).is_err() {
                        return units;
                    }
                    units.push(AccessUnit::VideoConfiguration { record });
                    self.parameter_sets.insert(pes.pid, (sps, pps));
                }
                if !picture.sample.is_empty() && self.parameter_sets.contains_key(&pes.pid) {
                    let dts = pes.dts.unwrap_or(pts);
                    units.push(AccessUnit::Video { pts, dts, keyframe: picture.keyframe, sample: picture.sample });
                }
            }
            STREAM_TYPE_AAC_ADTS => {
                let Ok(frames) = adts_frames(&pes.data) else { return units };
                for (index, (configuration, frame)) in frames.into_iter().enumerate() {
                    if self.audio_configurations.get(&pes.pid) != Some(&configuration) {
                        units.push(AccessUnit::AudioConfiguration(configuration.clone()));
                        self.audio_configurations.insert(pes.pid, configuration.clone());
                    }
                    // Frames after the first of a PES follow it by 1024 samples each.
                    let offset = index as u64 * 1024 * 90_000 / u64::from(configuration.sample_rate.max(1));
                    units.push(AccessUnit::Audio { pts: pts + offset, frame: frame.to_vec() });
                }
            }
            _ => {}
        }
        units
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ts::{AUDIO_PID, Tracks, TsMuxer, VIDEO_PID, adts_header, to_annex_b};
    use crate::video::VideoCoding;

    fn muxed() -> Vec<u8> {
        let mut muxer = TsMuxer::new(Tracks { video: true, audio: true, metadata: false });
        let mut out = Vec::new();
        muxer.write_tables(&mut out);
        let sps = vec![0x67, 0x42, 0xc0, 0x1e];
        let pps = vec![0x68, 0xce, 0x3c, 0x80];
        let idr: Vec<u8> = [&[0, 0, 0, 5][..], &[0x65, 1, 2, 3, 0x80]].concat();
        let annex_b = to_annex_b(&idr, &crate::ts::tests::record(VideoCoding::Avc, &[&sps, &pps]), true);
        // Near the 33-bit wrap, then past it.
        muxer.write_video(TIMESTAMP_WRAP - 3000, TIMESTAMP_WRAP - 6000, true, &[&annex_b], &mut out);
        let config = AudioSpecificConfig { object_type: 2, sample_rate: 48000, channels: 2 };
        let raw = vec![0x21; 300];
        let mut adts = adts_header(&config, raw.len()).to_vec();
        adts.extend_from_slice(&raw);
        muxer.write_audio(TIMESTAMP_WRAP + 900, &[&adts], &mut out);
        let plain = crate::ts::tests::record(VideoCoding::Avc, &[]);
        let big = to_annex_b(&[&[0, 0, 4, 1][..], &[0x41; 1025]].concat(), &plain, false);
        muxer.write_video(TIMESTAMP_WRAP + 3000, TIMESTAMP_WRAP, false, &[&big], &mut out);
        out
    }

    #[test]
    fn what_our_muxer_writes_comes_back_in_any_split() {
        for split in [1, 7, 188, 1000] {
            let mut demuxer = TsDemuxer::new();
            for chunk in muxed().chunks(split) {
                demuxer.push(chunk);
            }
            demuxer.flush();
            assert_eq!(demuxer.streams(), [(VIDEO_PID, STREAM_TYPE_H264), (AUDIO_PID, STREAM_TYPE_AAC_ADTS)]);
            let mut all = Vec::new();
            while let Some(pes) = demuxer.next_pes() {
                all.push(pes);
            }
            assert_eq!(all.len(), 3, "split {split}");
            // In the order written (a PES with a length is complete without waiting for the next).
            all.swap(0, 1);
            assert_eq!((all[0].pid, all[0].pts), (AUDIO_PID, Some(TIMESTAMP_WRAP + 900)));
            let frames = adts_frames(&all[0].data).unwrap();
            assert_eq!(frames.len(), 1);
            assert_eq!(frames[0].0, AudioSpecificConfig { object_type: 2, sample_rate: 48000, channels: 2 });
            assert_eq!(frames[0].1, &[0x21; 300][..]);
            assert_eq!(
                (all[1].pid, all[1].pts, all[1].dts),
                (VIDEO_PID, Some(TIMESTAMP_WRAP - 3000), Some(TIMESTAMP_WRAP - 6000))
            );
            let first = picture(&all[1].data);
            assert!(first.keyframe);
            assert_eq!(first.sps.as_deref(), Some(&[0x67, 0x42, 0xc0, 0x1e][..]));
            assert_eq!(first.sample, [0, 0, 0, 5, 0x65, 1, 2, 3, 0x80]);
            // Unwrapped past 2^33.
            assert_eq!((all[2].pts, all[2].dts), (Some(TIMESTAMP_WRAP + 3000), Some(TIMESTAMP_WRAP)));
            let second = picture(&all[2].data);
            assert!(!second.keyframe && second.sps.is_none());
            assert_eq!(second.sample.len(), 4 + 1025);
            assert_eq!(demuxer.errors, 0);
        }
    }

    #[test]
    fn access_units_give_each_configuration_once_before_its_frames() {
        let mut demuxer = TsDemuxer::new();
        demuxer.push(&muxed());
        demuxer.push(&muxed());
        demuxer.flush();
        let mut access_units = AccessUnits::new();
        let units: Vec<AccessUnit> =
            std::iter::from_fn(|| demuxer.next_pes()).flat_map(|pes| access_units.of(&pes)).collect();
        let kinds: Vec<&str> = units
            .iter()
            .map(|unit| match unit {
                AccessUnit::VideoConfiguration { .. } => "video configuration",
                AccessUnit::Video { .. } => "video",
                AccessUnit::AudioConfiguration(_) => "audio configuration",
                AccessUnit::Audio { .. } => "audio",
            })
            .collect();
        assert_eq!(
            kinds,
            ["video configuration", "video", "audio configuration", "audio", "video", "video", "audio", "video"]
        );
        let AccessUnit::VideoConfiguration { record } = &units[0] else { unreachable!() };
        assert_eq!(
            *record,
            crate::h264::DecoderConfiguration::record(&[0x67, 0x42, 0xc0, 0x1e], &[0x68, 0xce, 0x3c, 0x80])
        );
        assert!(matches!(&units[1], AccessUnit::Video { keyframe: true, pts, dts, .. }
            if *pts == TIMESTAMP_WRAP - 3000 && *dts == TIMESTAMP_WRAP - 6000));
    }

    #[test]
    fn garbage_is_skipped_and_bounded() {
        let mut demuxer = TsDemuxer::new();
        demuxer.push(&[0x12, 0x34, 0x56]);
        demuxer.push(&muxed());
        demuxer.flush();
        assert!(demuxer.errors >= 1);
        assert_eq!(std::iter::from_fn(|| demuxer.next_pes()).count(), 3);
        assert!(adts_frames(&[0xff, 0xf1, 0x50, 0x80, 0xff, 0xff]).is_err());
        assert!(adts_frames(&[0xff, 0xf1, 0x50, 0x80, 0x00, 0x1f, 0xfc]).is_err());
    }

    #[test]
    fn timestamps_unwrap_both_ways() {
        assert_eq!(unwrap_timestamp(None, 5), 5);
        assert_eq!(unwrap_timestamp(Some(TIMESTAMP_WRAP - 10), 5), TIMESTAMP_WRAP + 5);
        assert_eq!(unwrap_timestamp(Some(TIMESTAMP_WRAP + 5), TIMESTAMP_WRAP - 10), TIMESTAMP_WRAP - 10);
        assert_eq!(unwrap_timestamp(Some(100), 90), 90);
    }
}

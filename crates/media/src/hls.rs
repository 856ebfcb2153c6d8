//! HLS playlists (RFC 8216, and the Low-Latency HLS additions of RFC 8216bis): the multivariant
//! playlist, and media playlists with segments, partial segments, preload hints, server control,
//! skipped segments (delta updates) and program date-times. Rendering only: the packager decides
//! what the playlist holds.

use std::fmt::Write;

/// One variant of a multivariant playlist.
#[derive(Debug, Clone)]
pub struct Variant {
    pub uri: String,
    pub bandwidth: u64,
    pub average_bandwidth: Option<u64>,
    pub codecs: String,
    pub resolution: Option<(u32, u32)>,
    pub frame_rate: Option<f64>,
    /// The rendition's name (`720p60`, `audio_only`): `IVS-NAME` and `STABLE-VARIANT-ID`, as
    /// IVS's playlists name their variants.
    pub name: Option<String>,
}

pub fn multivariant(variants: &[Variant]) -> String {
    let mut out = String::from("#EXTM3U\n#EXT-X-INDEPENDENT-SEGMENTS\n");
    for variant in variants {
        let _ = write!(out, "#EXT-X-STREAM-INF:BANDWIDTH={}", variant.bandwidth);
        if let Some(average) = variant.average_bandwidth {
            let _ = write!(out, ",AVERAGE-BANDWIDTH={average}");
        }
        let _ = write!(out, ",CODECS=\"{}\"", variant.codecs);
        if let Some((width, height)) = variant.resolution {
            let _ = write!(out, ",RESOLUTION={width}x{height}");
        }
        if let Some(rate) = variant.frame_rate {
            let _ = write!(out, ",FRAME-RATE={rate:.3}");
        }
        if let Some(name) = &variant.name {
            let _ = write!(out, ",IVS-NAME=\"{name}\",STABLE-VARIANT-ID=\"{name}\"");
        }
        let _ = write!(out, "\n{}\n", variant.uri);
    }
    out
}

#[derive(Debug, Clone)]
pub struct Part {
    pub duration: f64,
    pub uri: String,
    pub independent: bool,
}

/// An `EXT-X-DATERANGE` of an ad break (RFC 8216 4.4.5.1.1, SCTE-35 mapping): at its start,
/// `PLANNED-DURATION` and `SCTE35-OUT`; at its end, the same ID and START-DATE again with
/// `END-DATE`, `DURATION` and `SCTE35-IN`.
#[derive(Debug, Clone, PartialEq)]
pub struct DateRange {
    pub id: String,
    pub start_date: String,
    pub end_date: Option<String>,
    pub duration: Option<f64>,
    pub planned_duration: Option<f64>,
    /// `splice_info_section`s in hex (`0x…`).
    pub scte35_out: Option<String>,
    pub scte35_in: Option<String>,
}

/// The cue tags that ad-insertion services and many players read besides the date ranges.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Cue {
    /// `#EXT-X-CUE-OUT:DURATION=`: the break starts with this segment.
    Out { duration: f64 },
    /// `#EXT-X-CUE-OUT-CONT:ElapsedTime=,Duration=`: this segment is inside the break.
    OutCont { elapsed: f64, duration: f64 },
    /// `#EXT-X-CUE-IN`: the program returns with this segment.
    In,
}

/// The ad signals written before a segment (or at the end of the playlist: a post-roll).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct AdSignals {
    pub date_ranges: Vec<DateRange>,
    pub cue: Option<Cue>,
}

impl AdSignals {
    pub fn is_empty(&self) -> bool {
        self.date_ranges.is_empty() && self.cue.is_none()
    }

    fn write(&self, out: &mut String) {
        for range in &self.date_ranges {
            let _ = write!(out, "#EXT-X-DATERANGE:ID=\"{}\",START-DATE=\"{}\"", range.id, range.start_date);
            if let Some(end) = &range.end_date {
                let _ = write!(out, ",END-DATE=\"{end}\"");
            }
            if let Some(duration) = range.duration {
                let _ = write!(out, ",DURATION={duration:.3}");
            }
            if let Some(planned) = range.planned_duration {
                let _ = write!(out, ",PLANNED-DURATION={planned:.3}");
            }
            if let Some(hex) = &range.scte35_out {
                let _ = write!(out, ",SCTE35-OUT={hex}");
            }
            if let Some(hex) = &range.scte35_in {
                let _ = write!(out, ",SCTE35-IN={hex}");
            }
            out.push('\n');
        }
        match self.cue {
            Some(Cue::Out { duration }) => {
                let _ = writeln!(out, "#EXT-X-CUE-OUT:DURATION={duration:.3}");
            }
            Some(Cue::OutCont { elapsed, duration }) => {
                let _ = writeln!(out, "#EXT-X-CUE-OUT-CONT:ElapsedTime={elapsed:.3},Duration={duration:.3}");
            }
            Some(Cue::In) => out.push_str("#EXT-X-CUE-IN\n"),
            None => {}
        }
    }
}

#[derive(Debug, Clone)]
pub struct Segment {
    pub sequence: u64,
    pub duration: f64,
    pub uri: String,
    /// RFC 3339 date-time of the segment's first frame (`EXT-X-PROGRAM-DATE-TIME`).
    pub program_date_time: String,
    pub discontinuity: bool,
    /// The initialisation section (`EXT-X-MAP`) the segment needs (fMP4).
    pub map_uri: Option<String>,
    /// Partial segments (listed for the newest segments only).
    pub parts: Vec<Part>,
    /// Ad-break signals at the segment's start.
    pub ad: AdSignals,
}

/// Low-Latency HLS settings of a media playlist.
#[derive(Debug, Clone)]
pub struct LowLatency {
    pub part_target: f64,
    pub part_hold_back: f64,
    pub can_skip_until: f64,
    /// Parts of the segment in progress, the initialisation section they need, and whether
    /// that segment follows a discontinuity.
    pub pending_parts: Vec<Part>,
    pub pending_map_uri: Option<String>,
    pub pending_discontinuity: bool,
    /// Ad-break signals at the start of the segment in progress.
    pub pending_ad: AdSignals,
    /// `EXT-X-PRELOAD-HINT` for the next part.
    pub preload_hint: Option<String>,
    /// `EXT-X-PREFETCH` segments (LHLS, as the Amazon IVS Player reads them): the segment in
    /// progress and the next, whose URLs stream the segments while they are written.
    pub prefetch: Vec<String>,
}

#[derive(Debug, Clone)]
pub struct MediaPlaylist {
    pub target_duration: u64,
    pub media_sequence: u64,
    pub discontinuity_sequence: u64,
    pub segments: Vec<Segment>,
    pub low_latency: Option<LowLatency>,
    pub ended: bool,
    /// How many of the oldest segments to replace with `EXT-X-SKIP` (delta update).
    pub skip_segments: usize,
    /// Ad-break signals after the last segment (a post-roll break at the end of the stream).
    pub trailing_ad: AdSignals,
}

fn write_part(out: &mut String, part: &Part) {
    let _ = write!(out, "#EXT-X-PART:DURATION={:.5},URI=\"{}\"", part.duration, part.uri);
    if part.independent {
        out.push_str(",INDEPENDENT=YES");
    }
    out.push('\n');
}

impl MediaPlaylist {
    pub fn render(&self) -> String {
        let mut out = String::with_capacity(256 + self.segments.len() * 96);
        let version = if self.skip_segments > 0 {
            9
        } else if self.low_latency.is_some() || self.segments.iter().any(|s| s.map_uri.is_some()) {
            6
        } else {
            3
        };
        let _ = write!(out, "#EXTM3U\n#EXT-X-VERSION:{version}\n#EXT-X-TARGETDURATION:{}\n", self.target_duration);
        if let Some(ll) = &self.low_latency {
            let _ = writeln!(
                out,
                "#EXT-X-SERVER-CONTROL:CAN-BLOCK-RELOAD=YES,PART-HOLD-BACK={:.3},CAN-SKIP-UNTIL={:.1}",
                ll.part_hold_back, ll.can_skip_until
            );
            let _ = writeln!(out, "#EXT-X-PART-INF:PART-TARGET={:.5}", ll.part_target);
        }
        let _ = writeln!(out, "#EXT-X-MEDIA-SEQUENCE:{}", self.media_sequence);
        if self.discontinuity_sequence > 0 {
            let _ = writeln!(out, "#EXT-X-DISCONTINUITY-SEQUENCE:{}", self.discontinuity_sequence);
        }
        let skip = self.skip_segments.min(self.segments.len());
        if skip > 0 {
            let _ = writeln!(out, "#EXT-X-SKIP:SKIPPED-SEGMENTS={skip}");
        }
        // EXT-X-MAP applies to the segments after it: repeated wherever it changes.
        let mut current_map: Option<String> = None;
        let mut write_map = |out: &mut String, map: Option<&str>| {
            if let Some(map) = map
                && current_map.as_deref() != Some(map)
            {
                let _ = writeln!(out, "#EXT-X-MAP:URI=\"{map}\"");
                current_map = Some(map.to_owned());
            }
        };
        for segment in &self.segments[skip..] {
            if segment.discontinuity {
                out.push_str("#EXT-X-DISCONTINUITY\n");
            }
            write_map(&mut out, segment.map_uri.as_deref());
            let _ = writeln!(out, "#EXT-X-PROGRAM-DATE-TIME:{}", segment.program_date_time);
            segment.ad.write(&mut out);
            if self.low_latency.is_some() {
                for part in &segment.parts {
                    write_part(&mut out, part);
                }
            }
            let _ = write!(out, "#EXTINF:{:.5},\n{}\n", segment.duration, segment.uri);
        }
        if let Some(ll) = &self.low_latency {
            // The segment in progress: its discontinuity and map precede its parts and its
            // prefetch line alike.
            let pending = !ll.pending_parts.is_empty() || !ll.prefetch.is_empty();
            if pending && ll.pending_discontinuity {
                out.push_str("#EXT-X-DISCONTINUITY\n");
            }
            if pending {
                write_map(&mut out, ll.pending_map_uri.as_deref());
                ll.pending_ad.write(&mut out);
            }
            for part in &ll.pending_parts {
                write_part(&mut out, part);
            }
            if let Some(hint) = &ll.preload_hint {
                let _ = writeln!(out, "#EXT-X-PRELOAD-HINT:TYPE=PART,URI=\"{hint}\"");
            }
            for uri in &ll.prefetch {
                let _ = writeln!(out, "#EXT-X-PREFETCH:{uri}");
            }
        }
        self.trailing_ad.write(&mut out);
        if self.ended {
            out.push_str("#EXT-X-ENDLIST\n");
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn segment(sequence: u64, parts: usize) -> Segment {
        Segment {
            sequence,
            duration: 2.0,
            uri: format!("seg{sequence}.ts"),
            program_date_time: "2026-01-01T00:00:00.000Z".into(),
            discontinuity: sequence == 3,
            map_uri: (sequence == 7).then(|| "init.mp4".to_string()),
            parts: (0..parts)
                .map(|i| Part { duration: 0.33333, uri: format!("part{sequence}.{i}.ts"), independent: i == 0 })
                .collect(),
            ad: AdSignals::default(),
        }
    }

    #[test]
    fn low_latency_playlist() {
        let playlist = MediaPlaylist {
            target_duration: 2,
            media_sequence: 1,
            discontinuity_sequence: 0,
            segments: vec![segment(1, 0), segment(2, 6), segment(3, 6)],
            low_latency: Some(LowLatency {
                part_target: 0.33334,
                part_hold_back: 1.0,
                can_skip_until: 12.0,
                pending_parts: vec![Part { duration: 0.33, uri: "part4.0.ts".into(), independent: true }],
                pending_map_uri: None,
                pending_discontinuity: false,
                pending_ad: AdSignals::default(),
                preload_hint: Some("part4.1.ts".into()),
                prefetch: vec!["seg4.ts".into(), "seg5.ts".into()],
            }),
            ended: false,
            skip_segments: 1,
            trailing_ad: AdSignals::default(),
        };
        let text = playlist.render();
        assert!(text.starts_with("#EXTM3U\n#EXT-X-VERSION:9\n#EXT-X-TARGETDURATION:2\n"));
        assert!(text.contains("#EXT-X-SERVER-CONTROL:CAN-BLOCK-RELOAD=YES,PART-HOLD-BACK=1.000,CAN-SKIP-UNTIL=12.0\n"));
        assert!(text.contains("#EXT-X-SKIP:SKIPPED-SEGMENTS=1\n"));
        assert!(!text.contains("seg1.ts"));
        assert!(text.contains("#EXT-X-DISCONTINUITY\n#EXT-X-PROGRAM-DATE-TIME"));
        assert!(text.contains("#EXT-X-PART:DURATION=0.33333,URI=\"part2.0.ts\",INDEPENDENT=YES\n"));
        assert!(text.ends_with(
            "#EXT-X-PART:DURATION=0.33000,URI=\"part4.0.ts\",INDEPENDENT=YES\n#EXT-X-PRELOAD-HINT:TYPE=PART,URI=\"part4.1.ts\"\n\
             #EXT-X-PREFETCH:seg4.ts\n#EXT-X-PREFETCH:seg5.ts\n"
        ));
    }

    #[test]
    fn ended_regular_playlist() {
        let playlist = MediaPlaylist {
            target_duration: 2,
            media_sequence: 7,
            discontinuity_sequence: 1,
            segments: vec![segment(7, 6)],
            low_latency: None,
            ended: true,
            skip_segments: 0,
            trailing_ad: AdSignals::default(),
        };
        let text = playlist.render();
        assert!(text.contains("#EXT-X-VERSION:6\n"));
        assert!(
            text.contains("#EXT-X-DISCONTINUITY-SEQUENCE:1\n#EXT-X-MAP:URI=\"init.mp4\"\n#EXT-X-PROGRAM-DATE-TIME"),
            "{text}"
        );
        assert!(!text.contains("EXT-X-PART"));
        assert!(text.ends_with("#EXTINF:2.00000,\nseg7.ts\n#EXT-X-ENDLIST\n"));
    }

    #[test]
    fn ad_breaks_are_date_ranges_and_cues_before_their_segments() {
        let start = DateRange {
            id: "abcdefABCDEF".into(),
            start_date: "2026-01-01T00:00:02.000Z".into(),
            end_date: None,
            duration: None,
            planned_duration: Some(4.0),
            scte35_out: Some("0xFC30".into()),
            scte35_in: None,
        };
        let end = DateRange {
            end_date: Some("2026-01-01T00:00:06.000Z".into()),
            duration: Some(4.0),
            planned_duration: None,
            scte35_out: None,
            scte35_in: Some("0xFC31".into()),
            ..start.clone()
        };
        let mut segments: Vec<Segment> = (1..=4).map(|sequence| segment(sequence, 0)).collect();
        segments[1].ad = AdSignals { date_ranges: vec![start], cue: Some(Cue::Out { duration: 4.0 }) };
        segments[2].ad = AdSignals { date_ranges: vec![], cue: Some(Cue::OutCont { elapsed: 2.0, duration: 4.0 }) };
        segments[3].ad = AdSignals { date_ranges: vec![end], cue: Some(Cue::In) };
        let playlist = MediaPlaylist {
            target_duration: 2,
            media_sequence: 1,
            discontinuity_sequence: 0,
            segments,
            low_latency: None,
            ended: true,
            skip_segments: 0,
            trailing_ad: AdSignals { date_ranges: vec![], cue: Some(Cue::Out { duration: 15.0 }) },
        };
        let text = playlist.render();
        assert!(text.contains(
            "#EXT-X-PROGRAM-DATE-TIME:2026-01-01T00:00:00.000Z\n\
             #EXT-X-DATERANGE:ID=\"abcdefABCDEF\",START-DATE=\"2026-01-01T00:00:02.000Z\",PLANNED-DURATION=4.000,SCTE35-OUT=0xFC30\n\
             #EXT-X-CUE-OUT:DURATION=4.000\n#EXTINF:2.00000,\nseg2.ts\n"
        ));
        assert!(text.contains("#EXT-X-CUE-OUT-CONT:ElapsedTime=2.000,Duration=4.000\n#EXTINF:2.00000,\nseg3.ts\n"));
        assert!(text.contains(
            "END-DATE=\"2026-01-01T00:00:06.000Z\",DURATION=4.000,SCTE35-IN=0xFC31\n#EXT-X-CUE-IN\n#EXTINF:2.00000,\nseg4.ts\n"
        ));
        assert!(text.ends_with("seg4.ts\n#EXT-X-CUE-OUT:DURATION=15.000\n#EXT-X-ENDLIST\n"));
    }

    #[test]
    fn multivariant_lists_the_variant() {
        let text = multivariant(&[Variant {
            uri: "/p/x/media.m3u8".into(),
            bandwidth: 2_800_000,
            codecs: "avc1.64001F,mp4a.40.2".into(),
            resolution: Some((1280, 720)),
            frame_rate: Some(30.0),
            average_bandwidth: None,
            name: None,
        }]);
        assert_eq!(
            text,
            "#EXTM3U\n#EXT-X-INDEPENDENT-SEGMENTS\n#EXT-X-STREAM-INF:BANDWIDTH=2800000,CODECS=\"avc1.64001F,mp4a.40.2\",RESOLUTION=1280x720,FRAME-RATE=30.000\n/p/x/media.m3u8\n"
        );
    }
}

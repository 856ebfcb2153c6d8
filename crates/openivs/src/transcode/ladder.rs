//! The rendition ladders IVS makes of a stream, by channel type and preset, for the picture a
//! broadcaster sends (the user guide's "Channel Types" tables, condensed in
//! `ivs-data-plane.md` §2.2). Pure: what to make, not how; the transcoder and the packager
//! follow it, and rendition names (`720p30`) are what recordings and `aws:maximum-resolution`
//! select.
//!
//! Where IVS's tables are silent, the choices are: a rung is made only below the input's short
//! side (never upscaled; a STANDARD source at a rung's height is that rung); a rung's frame rate
//! is the input's, capped at 30 (60 for the 720p rung of a ≥ 50 fps input), so a 25 fps input
//! gives `480p25`; sizes keep the input's aspect ratio with even widths (IVS's 16:9 sizes,
//! 852×480 and 284×160, come out of that rule).

/// The channel types that carry a ladder.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ChannelType {
    Basic,
    Standard,
    AdvancedSd,
    AdvancedHd,
}

impl ChannelType {
    /// From the API's `type` (`STANDARD` when unknown: IVS's default).
    pub fn parse(value: &str) -> ChannelType {
        match value {
            "BASIC" => ChannelType::Basic,
            "ADVANCED_SD" => ChannelType::AdvancedSd,
            "ADVANCED_HD" => ChannelType::AdvancedHd,
            _ => ChannelType::Standard,
        }
    }
}

/// ADVANCED channels' `preset`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Preset {
    HigherBandwidth,
    ConstrainedBandwidth,
}

impl Preset {
    /// From the API's `preset` (`HIGHER_BANDWIDTH_DELIVERY` when empty: IVS's default).
    pub fn parse(value: &str) -> Preset {
        match value {
            "CONSTRAINED_BANDWIDTH_DELIVERY" => Preset::ConstrainedBandwidth,
            _ => Preset::HigherBandwidth,
        }
    }
}

/// The picture a broadcaster sends.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Input {
    pub width: u32,
    pub height: u32,
    pub frame_rate: f64,
}

impl Input {
    fn short_side(&self) -> u32 {
        self.width.min(self.height)
    }
}

/// A rendition's video.
#[derive(Clone, Debug, PartialEq)]
pub enum Video {
    /// The broadcaster's video, passed through.
    Source,
    /// Encoded anew at this size, frame rate and bitrate (bits per second).
    Encoded { width: u32, height: u32, frame_rate: u32, bitrate: u32 },
}

/// A rendition's audio.
#[derive(Clone, Debug, PartialEq)]
pub enum Audio {
    /// The broadcaster's audio, passed through.
    Source,
    /// AAC encoded anew at this bitrate (bits per second).
    Encoded { bitrate: u32 },
}

#[derive(Clone, Debug, PartialEq)]
pub struct Rendition {
    /// `{height}p{fps}` as IVS names renditions (`720p30`), or [`AUDIO_ONLY`].
    pub name: String,
    /// `None`: the audio-only rendition.
    pub video: Option<Video>,
    pub audio: Audio,
}

/// The name of ADVANCED channels' audio-only rendition.
pub const AUDIO_ONLY: &str = "audio_only";

/// One rung of a table: its height, bitrates at 30 and at 60 fps, and its audio.
struct Rung {
    height: u32,
    bitrate_30: u32,
    bitrate_60: u32,
    audio: Audio,
}

const fn rung(height: u32, bitrate_30: u32, bitrate_60: u32, audio: Audio) -> Rung {
    Rung { height, bitrate_30, bitrate_60, audio }
}

/// STANDARD: audio is re-encoded only for the renditions of 360 lines and fewer.
const STANDARD: [Rung; 4] = [
    rung(720, 2_400_000, 3_400_000, Audio::Source),
    rung(480, 1_400_000, 1_400_000, Audio::Source),
    rung(360, 630_000, 630_000, Audio::Encoded { bitrate: 64_000 }),
    rung(160, 230_000, 230_000, Audio::Encoded { bitrate: 48_000 }),
];

const ADVANCED_HIGHER: [Rung; 4] = [
    rung(720, 2_300_000, 3_000_000, Audio::Encoded { bitrate: 128_000 }),
    rung(480, 1_300_000, 1_300_000, Audio::Encoded { bitrate: 128_000 }),
    rung(360, 700_000, 700_000, Audio::Encoded { bitrate: 64_000 }),
    rung(160, 270_000, 270_000, Audio::Encoded { bitrate: 48_000 }),
];

const ADVANCED_CONSTRAINED: [Rung; 4] = [
    rung(720, 1_900_000, 2_200_000, Audio::Encoded { bitrate: 128_000 }),
    rung(480, 800_000, 800_000, Audio::Encoded { bitrate: 128_000 }),
    rung(360, 400_000, 400_000, Audio::Encoded { bitrate: 64_000 }),
    rung(160, 220_000, 220_000, Audio::Encoded { bitrate: 48_000 }),
];

const AUDIO_ONLY_BITRATE: u32 = 64_000;

/// The renditions IVS makes for `input` on a channel of `channel_type` (and `preset`, for
/// ADVANCED channels), best first.
pub fn ladder(channel_type: ChannelType, preset: Preset, input: Input) -> Vec<Rendition> {
    let source_fps = input.frame_rate.round().max(1.0) as u32;
    let source = Rendition {
        name: format!("{}p{source_fps}", input.short_side()),
        video: Some(Video::Source),
        audio: Audio::Source,
    };
    let (table, top_height, passthrough): (&[Rung], u32, bool) = match (channel_type, preset) {
        (ChannelType::Basic, _) => return vec![source],
        (ChannelType::Standard, _) => (&STANDARD, 720, true),
        (ChannelType::AdvancedHd, Preset::HigherBandwidth) => (&ADVANCED_HIGHER, 720, false),
        (ChannelType::AdvancedHd, Preset::ConstrainedBandwidth) => (&ADVANCED_CONSTRAINED, 720, false),
        (ChannelType::AdvancedSd, Preset::HigherBandwidth) => (&ADVANCED_HIGHER, 480, false),
        (ChannelType::AdvancedSd, Preset::ConstrainedBandwidth) => (&ADVANCED_CONSTRAINED, 480, false),
    };
    let mut renditions = Vec::new();
    if passthrough {
        renditions.push(source);
    }
    for rung in table.iter().filter(|rung| rung.height <= top_height) {
        // Never upscaled; the source already is the rung of its own height when it passes.
        let below_source =
            if passthrough { rung.height < input.short_side() } else { rung.height <= input.short_side() };
        if !below_source {
            continue;
        }
        let sixty = rung.height == 720 && input.frame_rate >= 50.0;
        let frame_rate = if sixty { source_fps.min(60) } else { source_fps.min(30) };
        let (width, height) = scaled(input, rung.height);
        renditions.push(Rendition {
            name: format!("{}p{frame_rate}", rung.height),
            video: Some(Video::Encoded {
                width,
                height,
                frame_rate,
                bitrate: if sixty { rung.bitrate_60 } else { rung.bitrate_30 },
            }),
            audio: rung.audio.clone(),
        });
    }
    if !passthrough {
        if renditions.is_empty() {
            // An input below every rung: ADVANCED still never passes the source through, so it
            // is encoded at its own size at the smallest rung's bitrate.
            let smallest = &table[table.len() - 1];
            let (width, height) = scaled(input, input.short_side());
            let frame_rate = source_fps.min(30);
            renditions.push(Rendition {
                name: format!("{}p{frame_rate}", input.short_side()),
                video: Some(Video::Encoded { width, height, frame_rate, bitrate: smallest.bitrate_30 }),
                audio: smallest.audio.clone(),
            });
        }
        renditions.push(Rendition {
            name: AUDIO_ONLY.to_owned(),
            video: None,
            audio: Audio::Encoded { bitrate: AUDIO_ONLY_BITRATE },
        });
    }
    renditions
}

/// The size of a rung `short_side` lines high (or wide, for a portrait input) with the input's
/// aspect ratio, both sides even.
fn scaled(input: Input, short_side: u32) -> (u32, u32) {
    let (long, short) = (input.width.max(input.height) as f64, input.short_side().max(1) as f64);
    let long_side = ((long * short_side as f64 / short / 2.0).floor() as u32 * 2).max(2);
    if input.width >= input.height { (long_side, short_side) } else { (short_side, long_side) }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(renditions: &[Rendition]) -> Vec<&str> {
        renditions.iter().map(|r| r.name.as_str()).collect()
    }

    const P720_30: Input = Input { width: 1280, height: 720, frame_rate: 30.0 };
    const P1080_60: Input = Input { width: 1920, height: 1080, frame_rate: 60.0 };
    const P1080_30: Input = Input { width: 1920, height: 1080, frame_rate: 29.97 };

    #[test]
    fn standard_passes_the_source_and_adds_the_rungs_below_it() {
        let ladder = ladder(ChannelType::Standard, Preset::HigherBandwidth, P720_30);
        assert_eq!(names(&ladder), ["720p30", "480p30", "360p30", "160p30"]);
        assert_eq!(ladder[0].video, Some(Video::Source));
        assert_eq!(
            ladder[1].video,
            Some(Video::Encoded { width: 852, height: 480, frame_rate: 30, bitrate: 1_400_000 })
        );
        assert_eq!(ladder[1].audio, Audio::Source);
        assert_eq!(ladder[2].video, Some(Video::Encoded { width: 640, height: 360, frame_rate: 30, bitrate: 630_000 }));
        assert_eq!(ladder[2].audio, Audio::Encoded { bitrate: 64_000 });
        assert_eq!(ladder[3].video, Some(Video::Encoded { width: 284, height: 160, frame_rate: 30, bitrate: 230_000 }));
        assert_eq!(ladder[3].audio, Audio::Encoded { bitrate: 48_000 });
    }

    #[test]
    fn standard_1080p_gets_a_720p_rung_at_the_input_rate() {
        let sixty = ladder(ChannelType::Standard, Preset::HigherBandwidth, P1080_60);
        assert_eq!(names(&sixty), ["1080p60", "720p60", "480p30", "360p30", "160p30"]);
        assert_eq!(
            sixty[1].video,
            Some(Video::Encoded { width: 1280, height: 720, frame_rate: 60, bitrate: 3_400_000 })
        );
        let thirty = ladder(ChannelType::Standard, Preset::HigherBandwidth, P1080_30);
        assert_eq!(names(&thirty), ["1080p30", "720p30", "480p30", "360p30", "160p30"]);
        assert_eq!(
            thirty[1].video,
            Some(Video::Encoded { width: 1280, height: 720, frame_rate: 30, bitrate: 2_400_000 })
        );
    }

    #[test]
    fn basic_is_the_source_alone() {
        let ladder = ladder(ChannelType::Basic, Preset::HigherBandwidth, P1080_60);
        assert_eq!(names(&ladder), ["1080p60"]);
    }

    #[test]
    fn advanced_never_passes_the_source_and_adds_audio_only() {
        let hd = ladder(ChannelType::AdvancedHd, Preset::HigherBandwidth, P1080_60);
        assert_eq!(names(&hd), ["720p60", "480p30", "360p30", "160p30", AUDIO_ONLY]);
        assert_eq!(hd[0].video, Some(Video::Encoded { width: 1280, height: 720, frame_rate: 60, bitrate: 3_000_000 }));
        assert_eq!(hd[0].audio, Audio::Encoded { bitrate: 128_000 });
        assert_eq!(
            hd[4],
            Rendition { name: AUDIO_ONLY.into(), video: None, audio: Audio::Encoded { bitrate: 64_000 } }
        );
        let constrained = ladder(ChannelType::AdvancedHd, Preset::ConstrainedBandwidth, P720_30);
        assert_eq!(names(&constrained), ["720p30", "480p30", "360p30", "160p30", AUDIO_ONLY]);
        assert_eq!(
            constrained[0].video,
            Some(Video::Encoded { width: 1280, height: 720, frame_rate: 30, bitrate: 1_900_000 })
        );
        let sd = ladder(ChannelType::AdvancedSd, Preset::HigherBandwidth, P1080_30);
        assert_eq!(names(&sd), ["480p30", "360p30", "160p30", AUDIO_ONLY]);
        let sd = ladder(ChannelType::AdvancedSd, Preset::ConstrainedBandwidth, P720_30);
        assert_eq!(sd[0].video, Some(Video::Encoded { width: 852, height: 480, frame_rate: 30, bitrate: 800_000 }));
    }

    #[test]
    fn small_portrait_and_odd_inputs() {
        // Never upscaled.
        let small = Input { width: 640, height: 360, frame_rate: 30.0 };
        assert_eq!(names(&ladder(ChannelType::Standard, Preset::HigherBandwidth, small)), ["360p30", "160p30"]);
        assert_eq!(
            names(&ladder(ChannelType::AdvancedHd, Preset::HigherBandwidth, small)),
            ["360p30", "160p30", AUDIO_ONLY]
        );
        let tiny = Input { width: 256, height: 144, frame_rate: 30.0 };
        let advanced = ladder(ChannelType::AdvancedSd, Preset::HigherBandwidth, tiny);
        assert_eq!(names(&advanced), ["144p30", AUDIO_ONLY]);
        // Portrait: the short side names the rung.
        let portrait = Input { width: 720, height: 1280, frame_rate: 30.0 };
        let ladder_portrait = ladder(ChannelType::Standard, Preset::HigherBandwidth, portrait);
        assert_eq!(names(&ladder_portrait), ["720p30", "480p30", "360p30", "160p30"]);
        assert_eq!(
            ladder_portrait[1].video,
            Some(Video::Encoded { width: 480, height: 852, frame_rate: 30, bitrate: 1_400_000 })
        );
        // 25 fps stays 25.
        let pal = Input { width: 1280, height: 720, frame_rate: 25.0 };
        assert_eq!(names(&ladder(ChannelType::Standard, Preset::HigherBandwidth, pal))[1], "480p25");
    }
}

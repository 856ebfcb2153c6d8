//! The ffmpeg command that makes a ladder's encoded renditions, as the research measured it
//! (`transcoding-and-scale.md` §1.4 and A.3): FLV in on stdin, one MPEG-TS with every encoded
//! rendition out on stdout, keyframes forced on the source's (`-force_key_frames source
//! -forced-idr 1 -g 600 -sc_threshold 0`) with the source's timestamps kept (`-fps_mode
//! passthrough -copyts`, and the input's time base in the encoder), so every rendition's
//! segments can start on the same media times as the source's. Debian's ffmpeg runs as a child process ([`Ffmpeg`]): no GPL code in the
//! server, and a decoder crash stays out of it.
//!
//! The output's streams come in `-map` order (every video, then every audio); the muxer numbers
//! their PIDs from 0x100 in that order, which is how [`Outputs`] tells the demuxer which
//! rendition a PID belongs to.

use std::path::PathBuf;
use std::process::Stdio;

use super::Transcoder;
use super::ladder::{Audio, Rendition, Video};

/// What an output stream of the transcoder carries.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Track {
    Video,
    Audio,
}

/// The transcoder's output streams in order: (rendition name, track). Stream `n` has PID
/// `0x100 + n`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Outputs(pub Vec<(String, Track)>);

impl Outputs {
    /// The rendition and track of the stream on `pid`.
    pub fn of_pid(&self, pid: u16) -> Option<&(String, Track)> {
        self.0.get(usize::from(pid.checked_sub(0x100)?))
    }
}

/// The arguments (after the program name) that make `ladder`'s encoded renditions of an input
/// of `input_frame_rate`, and what comes out; `None` when the ladder encodes nothing (BASIC).
pub fn command(ladder: &[Rendition], input_frame_rate: f64) -> Option<(Vec<String>, Outputs)> {
    // (The source rendition is ours to package as it is.)
    let encoded: Vec<&Rendition> = ladder.iter().filter(|r| r.video != Some(Video::Source)).collect();
    if encoded.is_empty() {
        return None;
    }
    let videos: Vec<(&Rendition, u32, u32, u32, u32)> = encoded
        .iter()
        .filter_map(|r| match r.video {
            Some(Video::Encoded { width, height, frame_rate, bitrate }) => {
                Some((*r, width, height, frame_rate, bitrate))
            }
            _ => None,
        })
        .collect();
    let mut args: Vec<String> = ["-nostdin", "-hide_banner", "-loglevel", "error", "-f", "flv", "-i", "pipe:0"]
        .into_iter()
        .chain(["-fps_mode", "passthrough", "-copyts"])
        .map(str::to_owned)
        .collect();
    let mut outputs = Vec::new();
    if !videos.is_empty() {
        let labels: Vec<String> = (0..videos.len()).map(|i| format!("[s{i}]")).collect();
        let mut graph = format!("[0:v]split={}{}", videos.len(), labels.concat());
        for (i, (_, width, height, frame_rate, _)) in videos.iter().enumerate() {
            // Frames are dropped only to halve a faster input: otherwise every source frame
            // (and its timestamp, and its keyframe flag) passes as it is.
            let fps = if input_frame_rate > f64::from(*frame_rate) + 1.0 {
                format!("fps={frame_rate},")
            } else {
                String::new()
            };
            graph.push_str(&format!(";[s{i}]{fps}scale={width}:{height}[v{i}]"));
        }
        args.extend(["-filter_complex".to_owned(), graph]);
        for (i, (rendition, ..)) in videos.iter().enumerate() {
            args.extend(["-map".to_owned(), format!("[v{i}]")]);
            outputs.push((rendition.name.clone(), Track::Video));
        }
        args.extend(
            ["-c:v", "libx264", "-preset", "veryfast", "-tune", "zerolatency", "-pix_fmt", "yuv420p"]
                .into_iter()
                .chain(["-force_key_frames", "source", "-forced-idr", "1", "-g", "600", "-sc_threshold", "0"])
                // The input's time base (FLV's milliseconds), not 1/frame rate: every picture
                // keeps its source timestamp exactly.
                .chain(["-enc_time_base:v", "-1"])
                .map(str::to_owned),
        );
        for (i, (_, _, height, _, bitrate)) in videos.iter().enumerate() {
            let kbps = bitrate / 1000;
            // Baseline for the smallest pictures, as phones on slow links decode them.
            let profile = if *height <= 160 { "baseline" } else { "main" };
            args.extend([
                format!("-profile:v:{i}"),
                profile.to_owned(),
                format!("-b:v:{i}"),
                format!("{kbps}k"),
                format!("-maxrate:v:{i}"),
                format!("{kbps}k"),
                format!("-bufsize:v:{i}"),
                format!("{}k", kbps * 2),
            ]);
        }
    }
    for (i, rendition) in encoded.iter().enumerate() {
        args.extend(["-map".to_owned(), "0:a?".to_owned()]);
        match rendition.audio {
            Audio::Source => args.extend([format!("-c:a:{i}"), "copy".to_owned()]),
            Audio::Encoded { bitrate } => args.extend([
                format!("-c:a:{i}"),
                "aac".to_owned(),
                format!("-b:a:{i}"),
                format!("{}k", bitrate / 1000),
            ]),
        }
        outputs.push((rendition.name.clone(), Track::Audio));
    }
    // No muxing delay: packets leave as they are made (`-flush_packets 1` was measured to add
    // CPU and take no latency off).
    args.extend(["-f", "mpegts", "-muxdelay", "0", "-muxpreload", "0", "pipe:1"].into_iter().map(str::to_owned));
    Some((args, Outputs(outputs)))
}

/// Debian's ffmpeg (or the one `--ffmpeg` names), one child process per run.
pub struct Ffmpeg {
    pub program: PathBuf,
}

impl Ffmpeg {
    /// `ffmpeg -version`'s first line, or why it cannot run.
    pub async fn version(&self) -> Result<String, String> {
        let output = tokio::process::Command::new(&self.program)
            .arg("-version")
            .stdin(Stdio::null())
            .output()
            .await
            .map_err(|e| format!("{}: {e}", self.program.display()))?;
        let text = String::from_utf8_lossy(&output.stdout);
        match text.lines().next() {
            Some(line) if output.status.success() => Ok(line.to_owned()),
            _ => Err(format!("{} -version failed ({})", self.program.display(), output.status)),
        }
    }
}

impl Transcoder for Ffmpeg {
    fn start(&self, ladder: &[Rendition], input_frame_rate: f64) -> std::io::Result<super::Process> {
        let Some((args, outputs)) = command(ladder, input_frame_rate) else {
            return Err(std::io::Error::other("the ladder encodes nothing"));
        };
        let mut child = tokio::process::Command::new(&self.program)
            .args(&args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()?;
        let (Some(stdin), Some(stdout), Some(stderr)) = (child.stdin.take(), child.stdout.take(), child.stderr.take())
        else {
            return Err(std::io::Error::other("ffmpeg's pipes were not made"));
        };
        Ok(super::Process {
            input: Box::new(stdin),
            output: Box::new(stdout),
            diagnostics: Box::new(stderr),
            outputs,
            child,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::super::ladder::{ChannelType, Input, Preset, ladder};
    use super::*;

    const P720_30: Input = Input { width: 1280, height: 720, frame_rate: 30.0 };

    #[test]
    fn standard_720p_is_the_researched_command() {
        let (args, outputs) = command(&ladder(ChannelType::Standard, Preset::HigherBandwidth, P720_30), 30.0).unwrap();
        let line = args.join(" ");
        assert!(
            line.starts_with("-nostdin -hide_banner -loglevel error -f flv -i pipe:0 -fps_mode passthrough -copyts")
        );
        assert!(
            line.contains("[0:v]split=3[s0][s1][s2];[s0]scale=852:480[v0];[s1]scale=640:360[v1];[s2]scale=284:160[v2]")
        );
        assert!(
            line.contains("-force_key_frames source -forced-idr 1 -g 600 -sc_threshold 0 -enc_time_base:v -1"),
            "{line}"
        );
        assert!(line.contains("-profile:v:0 main -b:v:0 1400k -maxrate:v:0 1400k -bufsize:v:0 2800k"), "{line}");
        assert!(line.contains("-profile:v:2 baseline -b:v:2 230k"), "{line}");
        assert!(line.contains("-c:a:0 copy -map 0:a? -c:a:1 aac -b:a:1 64k -map 0:a? -c:a:2 aac -b:a:2 48k"), "{line}");
        assert!(line.ends_with("-f mpegts -muxdelay 0 -muxpreload 0 pipe:1"));
        let names: Vec<(&str, &Track)> = outputs.0.iter().map(|(n, t)| (n.as_str(), t)).collect();
        assert_eq!(
            names,
            [
                ("480p30", &Track::Video),
                ("360p30", &Track::Video),
                ("160p30", &Track::Video),
                ("480p30", &Track::Audio),
                ("360p30", &Track::Audio),
                ("160p30", &Track::Audio)
            ]
        );
        assert_eq!(outputs.of_pid(0x101), Some(&("360p30".to_owned(), Track::Video)));
        assert_eq!(outputs.of_pid(0x105), Some(&("160p30".to_owned(), Track::Audio)));
        assert_eq!(outputs.of_pid(0x106), None);
        assert_eq!(outputs.of_pid(0x20), None);
    }

    #[test]
    fn a_faster_input_is_halved_for_the_30_fps_rungs_only() {
        let input = Input { width: 1920, height: 1080, frame_rate: 60.0 };
        let (args, _) = command(&ladder(ChannelType::Standard, Preset::HigherBandwidth, input), 60.0).unwrap();
        let line = args.join(" ");
        assert!(line.contains("[s0]scale=1280:720[v0];[s1]fps=30,scale=852:480[v1]"), "{line}");
    }

    #[test]
    fn advanced_has_an_audio_only_stream_and_basic_no_command() {
        let (args, outputs) =
            command(&ladder(ChannelType::AdvancedSd, Preset::HigherBandwidth, P720_30), 30.0).unwrap();
        assert_eq!(outputs.0.len(), 3 + 4);
        assert_eq!(outputs.0.last().unwrap(), &("audio_only".to_owned(), Track::Audio));
        assert!(args.join(" ").contains("-c:a:3 aac -b:a:3 64k"));
        assert_eq!(command(&ladder(ChannelType::Basic, Preset::HigherBandwidth, P720_30), 30.0), None);
    }
}

//! The broadcaster of the ingest tests: ffmpeg publishing a generated test pattern (lavfi
//! `testsrc2` + `sine`, encoded once with libx264 + AAC, then sent in real time with `-c copy`).
//! Shared by the API suite and the cluster tests.
//!
//! ffmpeg must be installed (`.ci/run` installs it); the tests fail, not skip, without it.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// A test pattern, encoded once per test run.
pub(crate) struct Pattern {
    size: &'static str,
    rate: u32,
    video_bitrate: &'static str,
    seconds: u32,
    /// Frames from one keyframe to the next.
    keyframe_interval: u32,
    /// Constant bitrate, padded with filler data (a simple picture compresses far below its
    /// bitrate otherwise).
    filler: bool,
}

const PATTERN_720P: Pattern =
    Pattern { size: "1280x720", rate: 30, video_bitrate: "2500k", seconds: 10, keyframe_interval: 60, filler: false };
/// A keyframe every half second: low-latency segments (cut after 0.9 s) hold two.
const PATTERN_720P_SHORT_GOP: Pattern =
    Pattern { size: "1280x720", rate: 30, video_bitrate: "2500k", seconds: 10, keyframe_interval: 15, filler: false };
pub(crate) const PATTERN_720P_6M: Pattern =
    Pattern { size: "1280x720", rate: 30, video_bitrate: "6000k", seconds: 10, keyframe_interval: 60, filler: false };
/// A keyframe every 20 s at 7.6 Mbit/s (under IVS's 8.5 Mbit/s): a recorded segment (cut at
/// the first keyframe after 10 s) of about 19 MB.
const PATTERN_LARGE_SEGMENTS: Pattern =
    Pattern { size: "640x360", rate: 30, video_bitrate: "7600k", seconds: 30, keyframe_interval: 600, filler: true };
const PATTERN_1080P: Pattern =
    Pattern { size: "1920x1080", rate: 30, video_bitrate: "4500k", seconds: 10, keyframe_interval: 60, filler: false };
pub(crate) const PATTERN_1440P: Pattern =
    Pattern { size: "2560x1440", rate: 10, video_bitrate: "3000k", seconds: 2, keyframe_interval: 20, filler: false };

pub(crate) fn encode(pattern: &Pattern) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("openivs-test-media-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(format!(
        "pattern-{}-{}-{}-g{}{}.flv",
        pattern.size,
        pattern.rate,
        pattern.video_bitrate,
        pattern.keyframe_interval,
        if pattern.filler { "-cbr" } else { "" }
    ));
    let status = Command::new("ffmpeg")
        .args(["-hide_banner", "-loglevel", "error", "-y"])
        .args(["-f", "lavfi", "-i", &format!("testsrc2=size={}:rate={}", pattern.size, pattern.rate)])
        .args(["-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000"])
        .args(["-t", &pattern.seconds.to_string()])
        .args(["-c:v", "libx264", "-preset", "veryfast", "-pix_fmt", "yuv420p"])
        .args(["-g", &pattern.keyframe_interval.to_string(), "-keyint_min", &pattern.keyframe_interval.to_string()])
        .args(["-b:v", pattern.video_bitrate, "-maxrate", pattern.video_bitrate, "-bufsize", pattern.video_bitrate])
        .args(if pattern.filler { &["-x264-params", "nal-hrd=cbr"][..] } else { &[] })
        .args(["-c:a", "aac", "-b:a", "128k", "-ac", "2", "-f", "flv"])
        .arg(&path)
        .status()
        .expect("ffmpeg must be installed to run the ingest tests");
    assert!(status.success(), "ffmpeg could not encode the test pattern");
    path
}

pub(crate) fn pattern_720p() -> &'static Path {
    static PATH: OnceLock<PathBuf> = OnceLock::new();
    PATH.get_or_init(|| encode(&PATTERN_720P))
}

pub(crate) fn pattern_1080p() -> &'static Path {
    static PATH: OnceLock<PathBuf> = OnceLock::new();
    PATH.get_or_init(|| encode(&PATTERN_1080P))
}

/// A picture of constant 7.6 Mbit/s with a keyframe every 20 s: recorded segments of ~19 MB.
pub(crate) fn pattern_large_segments() -> &'static Path {
    static PATH: OnceLock<PathBuf> = OnceLock::new();
    PATH.get_or_init(|| encode(&PATTERN_LARGE_SEGMENTS))
}

/// The 720p pattern with a keyframe every half second (two in each low-latency segment).
pub(crate) fn pattern_720p_short_gop() -> &'static Path {
    static PATH: OnceLock<PathBuf> = OnceLock::new();
    PATH.get_or_init(|| encode(&PATTERN_720P_SHORT_GOP))
}

/// An ffmpeg process publishing a file in real time, in a loop; killed on drop.
pub(crate) struct Publisher {
    child: Child,
}

impl Publisher {
    /// Ends the publish the way a broadcaster's crash does: the connection just closes.
    pub(crate) fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    pub(crate) fn start(url: &str, media: &Path) -> Publisher {
        Publisher::start_as(url, media, "flv")
    }

    /// Publishes over SRT (`srt://…`): the same media in MPEG-TS.
    pub(crate) fn start_srt(url: &str, media: &Path) -> Publisher {
        Publisher::start_as(url, media, "mpegts")
    }

    fn start_as(url: &str, media: &Path, format: &str) -> Publisher {
        let child = Command::new("ffmpeg")
            .args(["-hide_banner", "-loglevel", "error", "-nostdin", "-re", "-stream_loop", "-1", "-i"])
            .arg(media)
            .args(["-c", "copy", "-f", format, url])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("ffmpeg must be installed to run the ingest tests");
        Publisher { child }
    }

    /// Waits for ffmpeg to exit; its status and what it printed, or `None` if still running.
    pub(crate) fn exited_within(&mut self, limit: Duration) -> Option<(ExitStatus, String)> {
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            if let Some(status) = self.child.try_wait().unwrap() {
                let mut stderr = String::new();
                if let Some(mut pipe) = self.child.stderr.take() {
                    let _ = pipe.read_to_string(&mut stderr);
                }
                return Some((status, stderr));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        None
    }
}

impl Drop for Publisher {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

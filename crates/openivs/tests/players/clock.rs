//! A live broadcaster whose picture tells the time: ffmpeg encodes a test pattern in real time
//! and draws, along the top edge, [`CLOCK_BITS`] boxes of [`CLOCK_BOX`] pixels, box k white when
//! bit k of floor(unix time in ms / 10) is set (the time the frame was made, from ffmpeg's
//! `RTCTIME`). `tests/browser/play.mjs` reads them back from the video playing in the page.

use std::process::{Child, Command, Stdio};

/// Bits of the clock: floor(ms / 10) modulo 2^20 wraps every 2.9 hours.
pub const CLOCK_BITS: u32 = 20;
/// Size of one box, in pixels of the 640×360 picture.
pub const CLOCK_BOX: u32 = 24;
/// Frames per second of the broadcast.
pub const FRAME_RATE: u32 = 30;

/// The ffmpeg filter graph that stamps each frame with the clock, then gives the frames regular
/// timestamps again (the stamp needs absolute time as the frame's timestamp, the stream must not
/// carry it).
/// The boxes are `CLOCK_BOX` pixels of a 640-pixel-wide picture, scaled with the picture.
fn clock_filter(width: u32) -> String {
    let size = CLOCK_BOX * width / 640;
    let mut filter = format!(
        "settb=AVTB,setpts=RTCTIME/(TB*1000000),drawbox=x=0:y=0:w={}:h={size}:color=black:t=fill",
        CLOCK_BITS * size
    );
    for bit in 0..CLOCK_BITS {
        filter.push_str(&format!(
            ",drawbox=x={}:y=0:w={size}:h={size}:color=white:t=fill:enable='mod(floor(t*100/pow(2\\,{bit}))\\,2)'",
            bit * size
        ));
    }
    filter.push_str(&format!(",setpts=N/({FRAME_RATE}*TB)"));
    filter
}

/// An ffmpeg process publishing the clock to `url` (RTMP or RTMPS) until dropped.
pub struct ClockPublisher {
    child: Child,
}

impl ClockPublisher {
    /// `keyframe_interval`: frames from one keyframe to the next (30 = 1 s, IVS's advice for
    /// the lowest latency). x264 runs with `-tune zerolatency`, as a low-latency encoder does, so
    /// the latency measured is the server's and the player's, not the encoder's look-ahead.
    pub fn start(url: &str, keyframe_interval: u32) -> ClockPublisher {
        ClockPublisher::start_sized(url, keyframe_interval, (640, 360), "1000k")
    }

    /// The same at another size and video bitrate.
    pub fn start_sized(
        url: &str,
        keyframe_interval: u32,
        (width, height): (u32, u32),
        bitrate: &str,
    ) -> ClockPublisher {
        let child = Command::new("ffmpeg")
            .args(["-hide_banner", "-loglevel", "error", "-nostdin"])
            .args(["-re", "-f", "lavfi", "-i", &format!("testsrc2=size={width}x{height}:rate={FRAME_RATE}")])
            .args(["-re", "-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000"])
            .args(["-vf", &clock_filter(width)])
            .args(["-c:v", "libx264", "-preset", "ultrafast", "-tune", "zerolatency", "-pix_fmt", "yuv420p"])
            .args(["-g", &keyframe_interval.to_string(), "-keyint_min", &keyframe_interval.to_string()])
            .args(["-b:v", bitrate, "-maxrate", bitrate, "-bufsize", bitrate])
            .args(["-c:a", "aac", "-b:a", "96k", "-ac", "2", "-f", "flv", url])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("ffmpeg must be installed to run the player tests");
        ClockPublisher { child }
    }
}

impl Drop for ClockPublisher {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

//! Multitrack video over Enhanced RTMP with a real broadcaster: FFmpeg 9 (a static build from
//! PyPI's imageio-ffmpeg, installed by `scripts/test`; Debian's ffmpeg predates multitrack FLV)
//! publishes several H.264 tracks in one RTMPS publish, as OBS Studio's Enhanced Broadcasting
//! does. On a channel whose `multitrackInputConfiguration` is enabled every track is a rendition
//! of the multivariant playlist and an ingest configuration of the session; the channel's policy
//! and maximum resolution refuse what IVS refuses, with IVS's codes.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use aws_sdk_ivs::types::{
    ChannelType, ContainerFormat, MultitrackInputConfiguration, MultitrackMaximumResolution, MultitrackPolicy,
};

use crate::harness::{Server, raw_request, rtmps_url};
use crate::ingest::{Publisher, pattern_720p, wait_live};
use crate::playback::path_of;

/// FFmpeg 9's binary (imageio-ffmpeg's).
fn ffmpeg9() -> &'static str {
    static PATH: OnceLock<String> = OnceLock::new();
    PATH.get_or_init(|| {
        let output = Command::new("python3")
            .args(["-c", "import imageio_ffmpeg; print(imageio_ffmpeg.get_ffmpeg_exe())"])
            .output()
            .expect("python3 runs");
        let path = String::from_utf8_lossy(&output.stdout).trim().to_owned();
        assert!(
            output.status.success() && Path::new(&path).exists(),
            "FFmpeg 9 is needed for the multitrack tests: pip install imageio-ffmpeg (scripts/test installs it \
             into .venv); {}",
            String::from_utf8_lossy(&output.stderr)
        );
        path
    })
}

/// A 10 s multitrack FLV (1280x720, 640x360, 256x144 at 30 fps, keyframes every 2 s on every
/// track, AAC), encoded once.
fn multitrack_pattern() -> &'static Path {
    static PATH: OnceLock<PathBuf> = OnceLock::new();
    PATH.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("openivs-test-media-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("multitrack-720-360-144.flv");
        let status = Command::new(ffmpeg9())
            .args(["-hide_banner", "-loglevel", "error", "-y"])
            .args([
                "-f",
                "lavfi",
                "-i",
                "testsrc2=size=1280x720:rate=30",
                "-f",
                "lavfi",
                "-i",
                "sine=sample_rate=48000",
            ])
            .args(["-t", "10", "-filter_complex", "[0:v]split=3[a][b][c];[b]scale=640:360[b2];[c]scale=256:144[c2]"])
            .args(["-map", "[a]", "-map", "[b2]", "-map", "[c2]", "-map", "1:a"])
            .args(["-c:v", "libx264", "-preset", "veryfast", "-pix_fmt", "yuv420p", "-g", "60", "-keyint_min", "60"])
            .args(["-sc_threshold", "0", "-b:v:0", "1500k", "-b:v:1", "500k", "-b:v:2", "150k"])
            .args(["-c:a", "aac", "-b:a", "96k", "-f", "flv"])
            .arg(&path)
            .status()
            .expect("FFmpeg 9 runs");
        assert!(status.success(), "FFmpeg 9 could not encode the multitrack pattern");
        path
    })
}

/// FFmpeg 9 publishing the multitrack pattern in a loop; killed on drop.
struct MultitrackPublisher {
    child: Child,
}

impl MultitrackPublisher {
    /// Publishes to `url` over RTMPS, trusting the server's certificate (FFmpeg 9 verifies it).
    fn start(server: &Server, url: &str) -> MultitrackPublisher {
        let child = Command::new(ffmpeg9())
            .args(["-hide_banner", "-loglevel", "error", "-nostdin", "-re", "-stream_loop", "-1", "-i"])
            .arg(multitrack_pattern())
            .args(["-map", "0", "-c", "copy", "-ca_file"])
            .arg(server.data_dir.join("rtmps-certificate.pem"))
            .args(["-f", "flv", url])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("FFmpeg 9 runs");
        MultitrackPublisher { child }
    }

    fn exited_within(&mut self, limit: Duration) -> bool {
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            if self.child.try_wait().unwrap().is_some() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        false
    }
}

impl Drop for MultitrackPublisher {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A STANDARD fMP4 channel with `multitrack` (None: multitrack left off); its ARN, RTMPS URL
/// and playback URL.
async fn channel(
    server: &Server,
    multitrack: Option<(MultitrackPolicy, MultitrackMaximumResolution)>,
) -> (String, String, String) {
    let mut builder = server
        .client()
        .create_channel()
        .r#type(ChannelType::StandardChannelType)
        .container_format(ContainerFormat::FragmentedMp4);
    if let Some((policy, maximum_resolution)) = multitrack {
        builder = builder.multitrack_input_configuration(
            MultitrackInputConfiguration::builder()
                .enabled(true)
                .policy(policy)
                .maximum_resolution(maximum_resolution)
                .build(),
        );
    }
    let out = builder.send().await.unwrap();
    let channel = out.channel().unwrap();
    (channel.arn().unwrap().to_owned(), rtmps_url(&out), channel.playback_url().unwrap().to_owned())
}

/// The code of the channel's (only) session's "Session Ended" event, once it has one.
async fn end_code(server: &Server, arn: &str) -> Option<String> {
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        if let Ok(out) = server.client().get_stream_session().channel_arn(arn).send().await
            && let Some(ended) =
                out.stream_session().unwrap().truncated_events().iter().find(|e| e.name() == Some("Session Ended"))
        {
            return ended.code().map(str::to_owned);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    panic!("{arn}: no session ended within 20 s; log:\n{}", server.log_text());
}

#[tokio::test]
async fn every_track_is_a_rendition() {
    let server = Server::start();
    let client = server.client();
    let (arn, rtmps, playback_url) =
        channel(&server, Some((MultitrackPolicy::Allow, MultitrackMaximumResolution::FullHd))).await;
    let _publisher = MultitrackPublisher::start(&server, &rtmps);
    wait_live(&server, &arn, Duration::from_secs(20)).await;

    // The multivariant playlist lists the three tracks, best first, each with its own measured
    // bandwidth, resolution and codec.
    let deadline = Instant::now() + Duration::from_secs(15);
    let variants = loop {
        let multivariant = raw_request(&server, "GET", &path_of(&playback_url), &[], "");
        let variants: Vec<(String, String)> = multivariant
            .body
            .lines()
            .zip(multivariant.body.lines().skip(1))
            .filter(|(tag, _)| tag.starts_with("#EXT-X-STREAM-INF:"))
            .map(|(tag, uri)| (tag.to_owned(), uri.to_owned()))
            .collect();
        if variants.len() >= 3 || Instant::now() > deadline {
            break variants;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    let resolutions: Vec<&str> = variants
        .iter()
        .map(|(tag, _)| tag.split("RESOLUTION=").nth(1).unwrap_or("").split(',').next().unwrap())
        .collect();
    assert_eq!(resolutions, ["1280x720", "640x360", "256x144"], "{variants:?}");
    let bandwidths: Vec<u64> = variants
        .iter()
        .map(|(tag, _)| tag.split("BANDWIDTH=").nth(1).unwrap().split(',').next().unwrap().parse().unwrap())
        .collect();
    assert!(bandwidths[0] > bandwidths[1] && bandwidths[1] > bandwidths[2], "measured per track: {bandwidths:?}");
    assert!(variants.iter().all(|(tag, _)| tag.contains("CODECS=\"avc1.") && tag.contains("mp4a.40.2")));
    // Each rendition plays its own track's picture.
    for ((_, uri), resolution) in variants.iter().zip(&resolutions) {
        let output = Command::new("ffprobe")
            .args(["-v", "error", "-select_streams", "v:0", "-show_entries", "stream=width,height", "-of", "csv=p=0"])
            .arg(format!("{}{uri}", server.endpoint))
            .output()
            .expect("ffprobe must be installed");
        let probed = String::from_utf8_lossy(&output.stdout).lines().next().unwrap_or("").replace(',', "x");
        assert_eq!(&probed, resolution, "{uri}");
    }

    // The session describes every track.
    tokio::time::sleep(Duration::from_secs(4)).await;
    let session = client.get_stream_session().channel_arn(&arn).send().await.unwrap();
    let session = session.stream_session().unwrap();
    let videos = session.ingest_configurations().unwrap().video_configurations();
    let tracks: Vec<(&str, i64, i64)> =
        videos.iter().map(|v| (v.track().unwrap(), v.video_width(), v.video_height())).collect();
    assert_eq!(tracks, [("Track0", 1280, 720), ("Track1", 640, 360), ("Track2", 256, 144)]);
    assert!(videos.iter().all(|v| (v.target_framerate() - 30).abs() <= 1 && v.target_bitrate() > 50_000), "{videos:?}");
    assert_eq!(session.ingest_configuration().unwrap().video().unwrap().track(), Some("Track0"));
}

#[tokio::test]
async fn the_channel_policy_and_maximum_resolution_refuse_as_ivs_does() {
    let server = Server::start();
    // Multitrack on a channel that does not take it.
    let (off, rtmps, _) = channel(&server, None).await;
    let mut publisher = MultitrackPublisher::start(&server, &rtmps);
    assert!(publisher.exited_within(Duration::from_secs(20)), "a multitrack publish to a channel without it");
    assert_eq!(end_code(&server, &off).await.as_deref(), Some("MultitrackInputNotAllowed"));

    // A single track where multitrack is required.
    let (required, rtmps, _) =
        channel(&server, Some((MultitrackPolicy::Require, MultitrackMaximumResolution::FullHd))).await;
    let mut single = Publisher::start(&rtmps, pattern_720p());
    assert!(single.exited_within(Duration::from_secs(20)).is_some(), "a single track where multitrack is required");
    assert_eq!(end_code(&server, &required).await.as_deref(), Some("MultitrackInputRequired"));

    // A track above the channel's maximum resolution: 720p where SD (480p) is the most.
    let (capped, rtmps, _) = channel(&server, Some((MultitrackPolicy::Allow, MultitrackMaximumResolution::Sd))).await;
    let mut publisher = MultitrackPublisher::start(&server, &rtmps);
    assert!(publisher.exited_within(Duration::from_secs(20)), "a track above the maximum resolution");
    assert_eq!(end_code(&server, &capped).await.as_deref(), Some("InvalidMultitrackInputVideoTrackMediaProperties"));
    // Within HD, the same publish goes live.
    let (within, rtmps, _) = channel(&server, Some((MultitrackPolicy::Require, MultitrackMaximumResolution::Hd))).await;
    let _publisher = MultitrackPublisher::start(&server, &rtmps);
    wait_live(&server, &within, Duration::from_secs(20)).await;

    // ALLOW takes a single track too, as any stream.
    let (allowed, rtmps, _) = channel(&server, Some((MultitrackPolicy::Allow, MultitrackMaximumResolution::Hd))).await;
    let _single = Publisher::start(&rtmps, pattern_720p());
    wait_live(&server, &allowed, Duration::from_secs(20)).await;
}

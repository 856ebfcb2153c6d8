//! A multitrack broadcaster as OBS's Enhanced Broadcasting is one: it asks GetClientConfiguration
//! which tracks to encode, encodes exactly those (FFmpeg 9, a static build from PyPI's
//! imageio-ffmpeg, installed by `scripts/test`; Debian's ffmpeg predates multitrack FLV) and
//! publishes them with the answered authentication. Shared by the API and the players tests.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use crate::harness::{RawResponse, Server, raw_request};

/// FFmpeg 9's binary (imageio-ffmpeg's).
pub fn ffmpeg9() -> &'static str {
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

/// A video track's codec in a pattern.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Codec {
    H264,
    Hevc,
}

/// A 10 s multitrack FLV of `tracks` (width, height, kbit/s) at 30 fps, each in its codec,
/// keyframes every 2 s on every track (HEVC with libx265: closed GOPs, no B-frames, keyframes on
/// the same pictures as the H.264 tracks'), AAC; encoded once per set of tracks.
pub fn multitrack_pattern(tracks: &[(u32, u32, u32)], codecs: &[Codec]) -> PathBuf {
    type Encoded = HashMap<(Vec<(u32, u32, u32)>, Vec<Codec>), PathBuf>;
    static PATHS: OnceLock<Mutex<Encoded>> = OnceLock::new();
    let mut paths = PATHS.get_or_init(Mutex::default).lock().unwrap();
    let key = (tracks.to_vec(), codecs.to_vec());
    if let Some(path) = paths.get(&key) {
        return path.clone();
    }
    let dir = std::env::temp_dir().join(format!("openivs-test-media-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let name: Vec<String> = tracks
        .iter()
        .zip(codecs)
        .map(|((w, h, _), codec)| format!("{w}x{h}{}", if *codec == Codec::Hevc { "h" } else { "" }))
        .collect();
    let path = dir.join(format!("multitrack-{}.flv", name.join("-")));
    let (first_width, first_height, _) = tracks[0];
    let splits: String = (0..tracks.len()).map(|i| format!("[s{i}]")).collect();
    let mut filter = format!("[0:v]split={}{splits}", tracks.len());
    let mut command = Command::new(ffmpeg9());
    command.args(["-hide_banner", "-loglevel", "error", "-y"]).args([
        "-f",
        "lavfi",
        "-i",
        &format!("testsrc2=size={first_width}x{first_height}:rate=30"),
        "-f",
        "lavfi",
        "-i",
        "sine=sample_rate=48000",
    ]);
    for (i, (width, height, _)) in tracks.iter().enumerate() {
        filter.push_str(&format!(";[s{i}]scale={width}:{height}[v{i}]"));
    }
    command.args(["-t", "10", "-filter_complex", &filter]);
    for i in 0..tracks.len() {
        command.args(["-map", &format!("[v{i}]")]);
    }
    command.args(["-map", "1:a"]);
    command.args(["-preset", "veryfast", "-pix_fmt", "yuv420p", "-g", "60", "-keyint_min", "60"]);
    command.args(["-sc_threshold", "0", "-bf", "0"]);
    command.args(["-x265-params", "open-gop=0:scenecut=0:bframes=0:log-level=error"]);
    for (i, ((_, _, kbps), codec)) in tracks.iter().zip(codecs).enumerate() {
        let encoder = match codec {
            Codec::H264 => "libx264",
            Codec::Hevc => "libx265",
        };
        command.args([format!("-c:v:{i}"), encoder.to_owned(), format!("-b:v:{i}"), format!("{kbps}k")]);
    }
    let status = command.args(["-c:a", "aac", "-b:a", "96k", "-f", "flv"]).arg(&path).status().expect("FFmpeg 9 runs");
    assert!(status.success(), "FFmpeg 9 could not encode the multitrack pattern {name:?}");
    paths.insert(key, path.clone());
    path
}

/// Tracks of a pattern that matches no answer: 720p, 360p and 144p.
pub const UNANSWERED_TRACKS: [(u32, u32, u32); 3] = [(1280, 720, 1500), (640, 360, 500), (256, 144, 150)];

/// GetClientConfiguration as a broadcaster without a GPU asks it: `authentication` and
/// `preferences`.
pub fn get_client_configuration(server: &Server, authentication: &str, preferences: serde_json::Value) -> RawResponse {
    ask_client_configuration(server, authentication, preferences, &["h264"], &[])
}

/// GetClientConfiguration as a broadcaster with an NVIDIA GPU that can encode H.264 and HEVC
/// asks it (OBS's names: `h265`, PCI vendor id 0x10de).
pub fn get_client_configuration_with_hevc(
    server: &Server,
    authentication: &str,
    preferences: serde_json::Value,
) -> RawResponse {
    let gpu = serde_json::json!({ "model": "NVIDIA GeForce RTX 4070", "vendor_id": 0x10de, "device_id": 0x2786 });
    ask_client_configuration(server, authentication, preferences, &["h264", "h265"], &[gpu])
}

fn ask_client_configuration(
    server: &Server,
    authentication: &str,
    preferences: serde_json::Value,
    supported_codecs: &[&str],
    gpus: &[serde_json::Value],
) -> RawResponse {
    let request = serde_json::json!({
        "authentication": authentication,
        "schema_version": "2025-01-25",
        "service": "IVS",
        "client": { "name": "openivs-test", "version": "1", "supported_codecs": supported_codecs },
        "capabilities": {
            "cpu": { "logical_cores": 2, "physical_cores": 2 }, "memory": { "total": 1, "free": 1 }, "gpu": gpus,
        },
        "preferences": preferences,
    });
    let headers = [("content-type".to_owned(), "application/json".to_owned())];
    raw_request(server, "POST", "/api/v3/GetClientConfiguration", &headers, &request.to_string())
}

/// The answer's tracks (width, height, kbit/s) and the RTMPS URL to publish them to.
pub fn answered(answer: &serde_json::Value) -> (Vec<(u32, u32, u32)>, String) {
    let tracks = answer["encoder_configurations"]
        .as_array()
        .expect("encoder_configurations")
        .iter()
        .map(|e| {
            let number = |v: &serde_json::Value| v.as_u64().unwrap() as u32;
            (number(&e["width"]), number(&e["height"]), number(&e["settings"]["bitrate"]))
        })
        .collect();
    let endpoint = &answer["ingest_endpoints"][0];
    assert_eq!(endpoint["protocol"], "RTMPS", "{answer}");
    let url = endpoint["url_template"]
        .as_str()
        .unwrap()
        .replace("{stream_key}", endpoint["authentication"].as_str().unwrap());
    (tracks, url)
}

/// Asks GetClientConfiguration for `preferences` on the channel of `stream_key`; the answered
/// tracks and the URL to publish them to.
pub fn configured(server: &Server, stream_key: &str, preferences: serde_json::Value) -> (Vec<(u32, u32, u32)>, String) {
    let response = get_client_configuration(server, stream_key, preferences);
    assert_eq!(response.status, 200, "{}", response.body);
    answered(&serde_json::from_str(&response.body).unwrap())
}

/// FFmpeg 9 publishing the multitrack pattern in a loop; killed on drop.
pub struct MultitrackPublisher {
    child: Child,
}

impl MultitrackPublisher {
    /// Publishes `tracks` to `url` over RTMPS, trusting the server's certificate (FFmpeg 9
    /// verifies it).
    pub fn start(server: &Server, url: &str, tracks: &[(u32, u32, u32)]) -> MultitrackPublisher {
        MultitrackPublisher::start_coded(server, url, tracks, &vec![Codec::H264; tracks.len()])
    }

    /// [`MultitrackPublisher::start`] with each track in its codec.
    pub fn start_coded(
        server: &Server,
        url: &str,
        tracks: &[(u32, u32, u32)],
        codecs: &[Codec],
    ) -> MultitrackPublisher {
        let child = Command::new(ffmpeg9())
            .args(["-hide_banner", "-loglevel", "error", "-nostdin", "-re", "-stream_loop", "-1", "-i"])
            .arg(multitrack_pattern(tracks, codecs))
            .args(["-map", "0", "-c", "copy", "-ca_file"])
            .arg(server.data_dir.join("rtmps-certificate.pem"))
            .args(["-f", "flv", url])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("FFmpeg 9 runs");
        MultitrackPublisher { child }
    }

    pub fn exited_within(&mut self, limit: Duration) -> bool {
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

/// A broadcaster at 1280x720, 30 fps, that can encode three tracks.
pub fn three_tracks_of_720p() -> serde_json::Value {
    serde_json::json!({
        "width": 1280, "height": 720, "canvas_width": 1280, "canvas_height": 720,
        "framerate": { "numerator": 30, "denominator": 1 }, "maximum_video_tracks": 3, "vod_track_audio": false,
    })
}

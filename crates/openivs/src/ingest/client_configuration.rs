//! Automatic stream configuration: IVS's Multitrack Video Integration API, `POST
//! /api/v3/GetClientConfiguration` on the HTTP listener. Broadcast software that implements
//! IVS's guide (OBS Studio's Enhanced Broadcasting) calls it with the channel's stream key before
//! every multitrack publish and encodes exactly the tracks it is answered with.
//!
//! The request is authenticated by the stream key in its `authentication` member (no SigV4, as
//! with IVS). The answer names the video tracks (sizes, frame rates, bitrates, 2 s keyframes, no
//! B-frames), the audio track, and the ingest endpoints with an `authentication` value to publish
//! with instead of the plain key: `{streamKey}?clientConfiguration={token}`, where the token
//! carries the answer's id and track sizes under an HMAC (key kept in the store, so answers
//! survive restarts and hold on every node). A publish checks its tracks against it
//! ([`Answered`]); the refusals are IVS's session-end codes.
//!
//! The ladder (an openivs choice; IVS's algorithm is not published): the top track at the
//! client's output size and frame rate within the channel's `maximumResolution`, then the
//! standard rungs below it (720, 480, 360, 160 lines, at most 30 fps), as many as
//! `maximum_video_tracks` asks (3 when it does not say; at most [`MAX_TRACKS`]), dropping the
//! lowest while the total exceeds `maximum_aggregate_bitrate` (or the reference's
//! `maximum_streaming_bandwidth`), read as kbit/s. A channel without multitrack is answered one
//! track. Encoders: `jim_nvenc` (the value the reference documents) when the client lists an
//! NVIDIA GPU, otherwise `obs_x264`. HEVC (`jim_hevc_nvenc`, the reference's other value) only
//! when the server is started with `--multitrack-hevc` and the client lists an NVIDIA GPU and
//! `h265` among its `supported_codecs`, and then for the tracks after the first: track 0 stays
//! H.264, so every viewer's player (and the thumbnail decoder) can play the stream.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, Mac};
use openivs_model::IvsError;
use openivs_model::resources::Channel;
use serde::Deserialize;
use serde_json::{Value, json};
use sha2::Sha256;
use subtle::ConstantTimeEq;

use openivs_media::video::VideoCoding;

use super::multitrack::{MAX_TRACKS, maximum_resolution};
use crate::api::Endpoints;
use crate::store::Store;

/// Where the HTTP listener answers.
pub const PATH: &str = "/api/v3/GetClientConfiguration";
/// The schema versions taken: the reference's, and the one OBS 31+ sends (adds `canvases`).
const SCHEMA_VERSIONS: [&str; 2] = ["2024-06-04", "2025-01-25"];
/// The query parameter of the answered authentication that carries the token.
const TOKEN_PARAMETER: &str = "clientConfiguration";
const MAC_LEN: usize = 16;
/// Tracks answered when the client does not say how many it can encode.
const DEFAULT_TRACKS: usize = 3;
/// Keyframe interval answered (IVS's recommendation).
const KEYFRAME_SECONDS: u32 = 2;
/// Rungs below the top track: lines, kbit/s at 30 fps.
const RUNGS: [(u32, u32); 5] = [(1080, 6000), (720, 3000), (480, 1500), (360, 800), (160, 250)];

/// Signs and checks the authentication values GetClientConfiguration answers.
pub struct ClientConfigurations {
    key: Vec<u8>,
    /// Whether HEVC tracks are answered to clients that can encode them (`--multitrack-hevc`).
    hevc: bool,
}

/// A video track of an answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AnsweredTrack {
    pub width: u32,
    pub height: u32,
    pub coding: VideoCoding,
}

/// What the stream name of a publish says about GetClientConfiguration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answered {
    /// The plain stream key: fine for a single track, refused for multitrack
    /// (`GetClientConfigurationStreamKeyRequired`).
    Plain,
    /// An answer's authentication: the tracks it named, in order (track 0 first).
    Tracks(Vec<AnsweredTrack>),
    /// A token that is not one this server answered for this key
    /// (`InvalidGetClientConfigurationStreamKey`).
    Invalid,
}

/// A refused request: HTTP status and the text shown to the broadcaster.
#[derive(Debug)]
pub struct Refused {
    pub status: u16,
    pub message: String,
}

fn refused(status: u16, message: impl Into<String>) -> Refused {
    Refused { status, message: message.into() }
}

impl Refused {
    /// The body: the API's own `status` member, which broadcast software shows to the user.
    pub fn body(&self) -> Value {
        json!({ "status": { "result": "error", "html_en_us": html_escape(&self.message) } })
    }
}

fn html_escape(text: &str) -> String {
    text.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;")
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct Request {
    authentication: Option<String>,
    schema_version: Option<String>,
    service: Option<String>,
    client: Client,
    capabilities: Capabilities,
    preferences: Preferences,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct Client {
    /// What the client can encode: `h264`, `h265`, `av1` (OBS's names).
    supported_codecs: Vec<String>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct Capabilities {
    gpu: Vec<Gpu>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct Gpu {
    vendor_id: Option<u64>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct Preferences {
    width: Option<u32>,
    height: Option<u32>,
    canvas_width: Option<u32>,
    canvas_height: Option<u32>,
    framerate: Option<Framerate>,
    maximum_video_tracks: Option<u32>,
    maximum_aggregate_bitrate: Option<u64>,
    maximum_streaming_bandwidth: Option<u64>,
}

#[derive(Deserialize, Clone, Copy)]
struct Framerate {
    numerator: u32,
    denominator: u32,
}

/// One video track to answer.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Track {
    width: u32,
    height: u32,
    fps: (u32, u32),
    kbps: u32,
    coding: VideoCoding,
}

impl ClientConfigurations {
    pub async fn load(store: &dyn Store, hevc: bool) -> Result<ClientConfigurations, IvsError> {
        let key = store.init_setting("client_configuration_key", &hex::encode(rand::random::<[u8; 32]>())).await?;
        Ok(ClientConfigurations { key: key.into_bytes(), hevc })
    }

    fn mac(&self, stream_key: &str, payload: &[u8]) -> [u8; MAC_LEN] {
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.key).expect("HMAC takes keys of any length");
        mac.update(stream_key.as_bytes());
        mac.update(&[0]);
        mac.update(payload);
        mac.finalize().into_bytes()[..MAC_LEN].try_into().expect("sha256 is longer than the mac")
    }

    /// The authentication value of an answer: the key, and the answer's id and tracks signed
    /// (each as `{width}x{height}`, HEVC ones with an `h` after).
    fn authentication(&self, stream_key: &str, config_id: &str, tracks: &[Track]) -> String {
        let sizes: Vec<String> = tracks
            .iter()
            .map(|t| format!("{}x{}{}", t.width, t.height, if t.coding == VideoCoding::Hevc { "h" } else { "" }))
            .collect();
        let mut token = format!("{config_id}~{}", sizes.join(",")).into_bytes();
        let mac = self.mac(stream_key, &token);
        token.extend_from_slice(&mac);
        format!("{stream_key}?{TOKEN_PARAMETER}={}", URL_SAFE_NO_PAD.encode(token))
    }

    /// What the query of a publish's stream name (after `?`) says about the answer it uses.
    pub fn verify(&self, stream_key: &str, query: Option<&str>) -> Answered {
        let token = query.into_iter().flat_map(|q| q.split('&')).find_map(|pair| {
            let (name, value) = pair.split_once('=')?;
            (name == TOKEN_PARAMETER).then_some(value)
        });
        let Some(token) = token else { return Answered::Plain };
        let Ok(bytes) = URL_SAFE_NO_PAD.decode(token) else { return Answered::Invalid };
        if bytes.len() <= MAC_LEN {
            return Answered::Invalid;
        }
        let (payload, mac) = bytes.split_at(bytes.len() - MAC_LEN);
        if !bool::from(self.mac(stream_key, payload).ct_eq(mac)) {
            return Answered::Invalid;
        }
        let tracks = std::str::from_utf8(payload).ok().and_then(|text| {
            let (_, sizes) = text.split_once('~')?;
            sizes
                .split(',')
                .map(|size| {
                    let (width, height) = size.split_once('x')?;
                    let (height, coding) = match height.strip_suffix('h') {
                        Some(height) => (height, VideoCoding::Hevc),
                        None => (height, VideoCoding::Avc),
                    };
                    Some(AnsweredTrack { width: width.parse().ok()?, height: height.parse().ok()?, coding })
                })
                .collect::<Option<Vec<_>>>()
        });
        tracks.map_or(Answered::Invalid, Answered::Tracks)
    }

    /// Answers a request body.
    pub async fn answer(&self, store: &dyn Store, endpoints: &Endpoints, body: &[u8]) -> Result<Value, Refused> {
        let request: Request = serde_json::from_slice(body)
            .map_err(|e| refused(400, format!("The request is not valid GetClientConfiguration JSON: {e}")))?;
        let schema_version = request.schema_version.as_deref().unwrap_or(SCHEMA_VERSIONS[0]);
        if !SCHEMA_VERSIONS.contains(&schema_version) {
            return Err(refused(
                400,
                format!("schema_version {schema_version:?} is not supported: use one of {SCHEMA_VERSIONS:?}"),
            ));
        }
        if request.service.as_deref().is_some_and(|s| s != "IVS") {
            return Err(refused(400, "service must be IVS"));
        }
        let stream_key = request.authentication.as_deref().unwrap_or("");
        // (A stream name's query, e.g. an earlier answer's authentication, is not the key.)
        let stream_key = stream_key.split('?').next().unwrap_or("");
        if stream_key.is_empty() {
            return Err(refused(401, "authentication (the channel's stream key) is required"));
        }
        let channel = super::channel_of_stream_key(store, stream_key)
            .await
            .map_err(|e| {
                tracing::error!("client configuration: store error: {e}");
                refused(503, "The service is unavailable; try again")
            })?
            .ok_or_else(|| refused(403, "Invalid stream key"))?;
        let mut tracks = ladder(&channel, &request);
        let nvidia = request.capabilities.gpu.iter().any(|gpu| gpu.vendor_id == Some(0x10de));
        let encodes_hevc = request.client.supported_codecs.iter().any(|c| c == "h265" || c == "hevc");
        if self.hevc && nvidia && encodes_hevc {
            for track in tracks.iter_mut().skip(1) {
                track.coding = VideoCoding::Hevc;
            }
        }
        let config_id = crate::api::random_uuid();
        let authentication = self.authentication(stream_key, &config_id, &tracks);
        let encoder_configurations: Vec<Value> = tracks
            .iter()
            .map(|track| {
                let (encoder, profile) = match track.coding {
                    VideoCoding::Hevc => ("jim_hevc_nvenc", "main"),
                    VideoCoding::Avc if nvidia => ("jim_nvenc", "high"),
                    VideoCoding::Avc => ("obs_x264", "high"),
                };
                json!({
                    "type": encoder,
                    "width": track.width,
                    "height": track.height,
                    "framerate": { "numerator": track.fps.0, "denominator": track.fps.1 },
                    "gpu_scale_type": "OBS_SCALE_BICUBIC",
                    "bitrate_interpolation_points": [track.kbps / 2, track.kbps * 3 / 4, track.kbps],
                    "settings": {
                        "rate_control": "CBR",
                        "bitrate": track.kbps,
                        "keyint_sec": KEYFRAME_SECONDS,
                        "bf": 0,
                        "profile": profile,
                        "preset2": "p5",
                        "lookahead": false,
                        "psycho_aq": false,
                    },
                })
            })
            .collect();
        let host = endpoints.host_port(endpoints.rtmps_port, 443);
        let mut ingest_endpoints = vec![json!({
            "protocol": "RTMPS",
            "url_template": format!("rtmps://{host}/app/{{stream_key}}"),
            "authentication": authentication,
        })];
        if channel.insecure_ingest {
            let host = endpoints.host_port(endpoints.rtmp_port, 1935);
            ingest_endpoints.push(json!({
                "protocol": "RTMP",
                "url_template": format!("rtmp://{host}/app/{{stream_key}}"),
                "authentication": authentication,
            }));
        }
        Ok(json!({
            "meta": { "service": "IVS", "schema_version": schema_version, "config_id": config_id },
            "status": { "result": "success" },
            "encoder_configurations": encoder_configurations,
            "audio_configurations": {
                "live": [{ "codec": "ffmpeg_aac", "track_id": 0, "channels": 2, "settings": { "bitrate": 160 } }],
            },
            "ingest_endpoints": ingest_endpoints,
        }))
    }
}

/// The tracks to encode for `channel` and what the client asked (see the module comment).
fn ladder(channel: &Channel, request: &Request) -> Vec<Track> {
    let preferences = &request.preferences;
    let (canvas_width, canvas_height) = match (preferences.width, preferences.height) {
        (Some(w), Some(h)) if w > 0 && h > 0 => (w, h),
        _ => match (preferences.canvas_width, preferences.canvas_height) {
            (Some(w), Some(h)) if w > 0 && h > 0 => (w, h),
            _ => (1920, 1080),
        },
    };
    let fps = preferences
        .framerate
        .filter(|f| f.numerator > 0 && f.denominator > 0 && f.numerator / f.denominator <= 60)
        .map_or((30, 1), |f| (f.numerator, f.denominator));
    let (_, max_lines) = maximum_resolution(&channel.multitrack_input_configuration);
    let landscape = canvas_width >= canvas_height;
    let (long, short) = if landscape { (canvas_width, canvas_height) } else { (canvas_height, canvas_width) };
    let even = |x: f64| ((x / 2.0).round() as u32 * 2).max(2);
    let sized = |lines: u32| {
        let lines = lines.min(short);
        let along = even(f64::from(lines) * f64::from(long) / f64::from(short));
        if landscape { (along, even(f64::from(lines))) } else { (even(f64::from(lines)), along) }
    };
    let high_fps = fps.0 > 30 * fps.1;
    let kbps_of = |lines: u32, high: bool| {
        let base = RUNGS.iter().find(|(l, _)| *l <= lines).map_or(RUNGS[RUNGS.len() - 1].1, |(_, k)| *k);
        if high { base * 3 / 2 } else { base }
    };
    let top_lines = short.min(max_lines);
    let (width, height) = sized(top_lines);
    let coding = VideoCoding::Avc;
    let mut tracks = vec![Track { width, height, fps, kbps: kbps_of(top_lines, high_fps), coding }];
    let wanted = if channel.multitrack_input_configuration.enabled {
        preferences.maximum_video_tracks.map_or(DEFAULT_TRACKS, |n| n as usize).clamp(1, MAX_TRACKS)
    } else {
        1
    };
    let lower_fps = if high_fps { (30, 1) } else { fps };
    for (lines, _) in RUNGS.iter().filter(|(lines, _)| *lines < top_lines) {
        if tracks.len() >= wanted {
            break;
        }
        let (width, height) = sized(*lines);
        tracks.push(Track { width, height, fps: lower_fps, kbps: kbps_of(*lines, false), coding });
    }
    let budget = preferences.maximum_aggregate_bitrate.or(preferences.maximum_streaming_bandwidth);
    if let Some(budget) = budget.filter(|b| *b > 0) {
        while tracks.len() > 1 && tracks.iter().map(|t| u64::from(t.kbps)).sum::<u64>() > budget {
            tracks.pop();
        }
    }
    tracks
}

#[cfg(test)]
mod tests {
    use super::*;

    fn channel(maximum_resolution: &str, enabled: bool) -> Channel {
        let mut channel: Channel = serde_json::from_value(json!({
            "arn": "arn:aws:ivs:us-west-2:123456789012:channel/abc", "name": "", "latencyMode": "LOW",
            "type": "STANDARD", "recordingConfigurationArn": "", "ingestEndpoint": "", "playbackUrl": "",
            "authorized": false, "tags": {}, "insecureIngest": false, "preset": "",
            "srt": {"endpoint": "", "passphrase": ""}, "playbackRestrictionPolicyArn": "",
            "multitrackInputConfiguration": {}, "containerFormat": "FRAGMENTED_MP4", "adConfigurationArn": "",
            "failoverSlateConfigurationArn": "",
        }))
        .unwrap();
        channel.multitrack_input_configuration.enabled = enabled;
        channel.multitrack_input_configuration.maximum_resolution = Some(maximum_resolution.to_owned());
        channel
    }

    fn request(preferences: Value) -> Request {
        serde_json::from_value(json!({ "preferences": preferences })).unwrap()
    }

    fn sizes(tracks: &[Track]) -> Vec<(u32, u32)> {
        tracks.iter().map(|t| (t.width, t.height)).collect()
    }

    #[test]
    fn the_ladder_follows_the_client_and_the_channel() {
        let wide = request(json!({"width": 1920, "height": 1080, "framerate": {"numerator": 60, "denominator": 1}}));
        let tracks = ladder(&channel("FULL_HD", true), &wide);
        assert_eq!(sizes(&tracks), [(1920, 1080), (1280, 720), (854, 480)]);
        assert_eq!((tracks[0].fps, tracks[1].fps), ((60, 1), (30, 1)));
        assert_eq!(sizes(&ladder(&channel("HD", true), &wide)), [(1280, 720), (854, 480), (640, 360)]);
        assert_eq!(sizes(&ladder(&channel("FULL_HD", false), &wide)), [(1920, 1080)]);
        let five = request(json!({"width": 1280, "height": 720, "maximum_video_tracks": 9}));
        assert_eq!(sizes(&ladder(&channel("FULL_HD", true), &five)), [(1280, 720), (854, 480), (640, 360), (284, 160)]);
        let tight = request(json!({"width": 1280, "height": 720, "maximum_aggregate_bitrate": 4600}));
        assert_eq!(sizes(&ladder(&channel("FULL_HD", true), &tight)), [(1280, 720), (854, 480)]);
        let portrait = request(json!({"width": 720, "height": 1280, "maximum_video_tracks": 2}));
        assert_eq!(sizes(&ladder(&channel("FULL_HD", true), &portrait)), [(720, 1280), (480, 854)]);
    }

    #[test]
    fn answered_authentication_is_bound_to_its_key_and_tracks() {
        let configurations = ClientConfigurations { key: b"k".to_vec(), hevc: false };
        let track = Track { width: 1280, height: 720, fps: (30, 1), kbps: 3000, coding: VideoCoding::Avc };
        let tracks = [track, Track { width: 854, height: 480, coding: VideoCoding::Hevc, ..track }];
        let answered = configurations.authentication("sk_key", "id", &tracks);
        let (key, query) = answered.split_once('?').unwrap();
        assert_eq!(key, "sk_key");
        assert_eq!(
            configurations.verify("sk_key", Some(query)),
            Answered::Tracks(vec![
                AnsweredTrack { width: 1280, height: 720, coding: VideoCoding::Avc },
                AnsweredTrack { width: 854, height: 480, coding: VideoCoding::Hevc },
            ])
        );
        assert_eq!(configurations.verify("sk_other", Some(query)), Answered::Invalid);
        let mut tampered = query.to_owned().into_bytes();
        let last = tampered.len() - 1;
        tampered[last] = if tampered[last] == b'A' { b'B' } else { b'A' };
        assert_eq!(configurations.verify("sk_key", Some(std::str::from_utf8(&tampered).unwrap())), Answered::Invalid);
        assert_eq!(configurations.verify("sk_key", Some("clientConfiguration=%%%")), Answered::Invalid);
        assert_eq!(configurations.verify("sk_key", None), Answered::Plain);
        assert_eq!(configurations.verify("sk_key", Some("other=1")), Answered::Plain);
    }
}

//! Adaptive bitrate with real clients: for every channel type and preset, a live 720p30 and a
//! 1080p30 stream (ffmpeg publishing) is transcoded into IVS's ladder by the server's ffmpeg;
//! the multivariant playlist lists the expected renditions, ffprobe reads each rendition's
//! size, frame rate and codec, and every rendition's segment of a given sequence number holds
//! the same pictures as the source's (same count, IDRs at the same timestamps). Admission
//! control refuses a publish past `--transcode-capacity` with IVS's Stream Failure; a killed
//! transcoder comes back; without ffmpeg the server serves the source alone and says so.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use aws_sdk_ivs::types::{ChannelLatencyMode, ChannelType, ContainerFormat, TranscodePreset};

use crate::harness::{RawResponse, Server, raw_request, rtmps_url};
use crate::ingest::{Publisher, live_stream_id, pattern_720p, pattern_1080p, wait_live};
use crate::playback::path_of;

/// Held by each test here for its whole run: the test binary runs tests in parallel, and
/// several transcoded streams at once would take this 2-core machine past what it transcodes in
/// real time (where frames are dropped, as they should be, and alignment checks would fail).
static ONE_TRANSCODING_TEST: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn get(server: &Server, path: &str) -> RawResponse {
    raw_request(server, "GET", path, &[], "")
}

/// One `#EXT-X-STREAM-INF` of a multivariant playlist.
#[derive(Debug, Clone)]
struct Variant {
    name: String,
    attributes: String,
    uri: String,
}

impl Variant {
    fn attribute(&self, name: &str) -> Option<String> {
        let rest = self.attributes.split(&format!("{name}=")).nth(1)?;
        let value = if let Some(quoted) = rest.strip_prefix('"') {
            quoted.split('"').next()?
        } else {
            rest.split(',').next()?
        };
        Some(value.to_owned())
    }
}

fn variants(multivariant: &str) -> Vec<Variant> {
    let mut variants = Vec::new();
    let mut lines = multivariant.lines();
    while let Some(line) = lines.next() {
        if let Some(attributes) = line.strip_prefix("#EXT-X-STREAM-INF:") {
            let uri = lines.next().expect("a URI after EXT-X-STREAM-INF").to_owned();
            let variant = Variant { name: String::new(), attributes: attributes.to_owned(), uri };
            let name = variant.attribute("IVS-NAME").expect("every variant is named");
            variants.push(Variant { name, ..variant });
        }
    }
    variants
}

/// A media playlist's complete segments: sequence → URI; and its init section, if any.
fn segments(playlist: &str) -> (BTreeMap<u64, String>, Option<String>) {
    let mut sequence = 0;
    let mut found = BTreeMap::new();
    let mut init = None;
    let mut lines = playlist.lines();
    while let Some(line) = lines.next() {
        if let Some(first) = line.strip_prefix("#EXT-X-MEDIA-SEQUENCE:") {
            sequence = first.parse().unwrap();
        } else if let Some(map) = line.strip_prefix("#EXT-X-MAP:URI=\"") {
            init = Some(map.split('"').next().unwrap().to_owned());
        } else if line.starts_with("#EXTINF:") {
            found.insert(sequence, lines.next().unwrap().to_owned());
            sequence += 1;
        }
    }
    (found, init)
}

/// What ffprobe reads in one segment.
#[derive(Debug, PartialEq)]
struct Probe {
    video: Option<(String, u32, u32)>,
    audio_codec: Option<String>,
    /// Video packets: (pts, keyframe).
    pictures: Vec<(i64, bool)>,
}

fn probe(file: &Path) -> Probe {
    let run = |args: &[&str]| {
        let output = Command::new("ffprobe").args(["-v", "error"]).args(args).arg(file).output().expect("ffprobe");
        assert!(output.status.success(), "ffprobe {args:?}: {}", String::from_utf8_lossy(&output.stderr));
        String::from_utf8_lossy(&output.stdout).into_owned()
    };
    let streams = run(&["-show_entries", "stream=codec_type,codec_name,width,height", "-of", "csv=p=0"]);
    let mut video = None;
    let mut audio_codec = None;
    for line in streams.lines() {
        let fields: Vec<&str> = line.split(',').collect();
        match fields.as_slice() {
            [codec, "video", width, height, ..] => {
                video = Some((codec.to_string(), width.parse().unwrap(), height.parse().unwrap()));
            }
            [codec, "audio", ..] => audio_codec = Some(codec.to_string()),
            _ => {}
        }
    }
    let packets = run(&["-select_streams", "v:0", "-show_entries", "packet=pts,flags", "-of", "csv=p=0"]);
    let pictures = packets
        .lines()
        .filter_map(|line| {
            let (pts, flags) = line.split_once(',')?;
            Some((pts.parse().ok()?, flags.starts_with('K')))
        })
        .collect();
    Probe { video, audio_codec, pictures }
}

/// Downloads segment `sequence` of a media playlist (after its init section, for fMP4).
fn fetch_segment(server: &Server, media: &str, uri: &str, init: &Option<String>, into: &Path) {
    let base = media.rsplit_once('/').unwrap().0;
    let mut bytes = Vec::new();
    for part in init.iter().chain(std::iter::once(&uri.to_owned())) {
        let response = raw_request_bytes(server, &format!("{base}/{part}"));
        bytes.extend(response);
    }
    std::fs::write(into, bytes).unwrap();
}

fn raw_request_bytes(server: &Server, path: &str) -> Vec<u8> {
    let output = Command::new("curl")
        .args(["-sf", &format!("{}{path}", server.endpoint)])
        .output()
        .expect("curl must be installed to run the transcoding tests");
    assert!(output.status.success(), "GET {path} failed");
    output.stdout
}

struct Case {
    channel_type: ChannelType,
    preset: Option<TranscodePreset>,
    /// The container and latency of its 720p and of its 1080p stream.
    modes: [(ContainerFormat, ChannelLatencyMode); 2],
    renditions_720p: &'static [&'static str],
    renditions_1080p: &'static [&'static str],
}

const ADVANCED_HD: &[&str] = &["720p30", "480p30", "360p30", "160p30", "audio_only"];
const ADVANCED_SD: &[&str] = &["480p30", "360p30", "160p30", "audio_only"];

fn cases() -> Vec<Case> {
    use ChannelLatencyMode::{LowLatency as Low, NormalLatency as Normal};
    use ContainerFormat::{FragmentedMp4 as Fmp4, Ts};
    vec![
        Case {
            channel_type: ChannelType::StandardChannelType,
            preset: None,
            modes: [(Ts, Low), (Fmp4, Low)],
            renditions_720p: &["720p30", "480p30", "360p30", "160p30"],
            renditions_1080p: &["1080p30", "720p30", "480p30", "360p30", "160p30"],
        },
        Case {
            channel_type: ChannelType::AdvancedHdChannelType,
            preset: Some(TranscodePreset::HigherBandwidthTranscodePreset),
            modes: [(Fmp4, Normal), (Ts, Normal)],
            renditions_720p: ADVANCED_HD,
            renditions_1080p: ADVANCED_HD,
        },
        Case {
            channel_type: ChannelType::AdvancedHdChannelType,
            preset: Some(TranscodePreset::ConstrainedBandwidthTranscodePreset),
            modes: [(Ts, Low), (Fmp4, Normal)],
            renditions_720p: ADVANCED_HD,
            renditions_1080p: ADVANCED_HD,
        },
        Case {
            channel_type: ChannelType::AdvancedSdChannelType,
            preset: Some(TranscodePreset::HigherBandwidthTranscodePreset),
            modes: [(Fmp4, Low), (Ts, Normal)],
            renditions_720p: ADVANCED_SD,
            renditions_1080p: ADVANCED_SD,
        },
        Case {
            channel_type: ChannelType::AdvancedSdChannelType,
            preset: Some(TranscodePreset::ConstrainedBandwidthTranscodePreset),
            modes: [(Ts, Normal), (Fmp4, Low)],
            renditions_720p: ADVANCED_SD,
            renditions_1080p: ADVANCED_SD,
        },
        Case {
            channel_type: ChannelType::BasicChannelType,
            preset: None,
            modes: [(Ts, Low), (Fmp4, Normal)],
            renditions_720p: &["720p30"],
            renditions_1080p: &["1080p30"],
        },
    ]
}

/// The size IVS gives a rendition name of a 16:9 input.
fn size_of(name: &str) -> (u32, u32) {
    match name {
        "1080p30" => (1920, 1080),
        "720p30" => (1280, 720),
        "480p30" => (852, 480),
        "360p30" => (640, 360),
        "160p30" => (284, 160),
        other => panic!("no size for {other}"),
    }
}

/// Publishes `media` to a new channel of the case and checks its ladder end to end.
async fn check_ladder(server: &Server, case: &Case, mode: usize, media: &Path, expected: &[&str]) {
    let (container, latency) = case.modes[mode].clone();
    let label = format!("{:?}/{:?} {container:?} {latency:?} {}", case.channel_type, case.preset, media.display());
    let mut create = server
        .client()
        .create_channel()
        .r#type(case.channel_type.clone())
        .container_format(container)
        .latency_mode(latency);
    if let Some(preset) = &case.preset {
        create = create.preset(preset.clone());
    }
    let out = create.send().await.unwrap();
    let channel = out.channel().unwrap();
    let arn = channel.arn().unwrap().to_owned();
    let _publisher = Publisher::start(&rtmps_url(&out), media);
    wait_live(server, &arn, Duration::from_secs(20)).await;

    // The multivariant playlist offers the ladder once every rendition plays (it waits for them).
    let playback = path_of(channel.playback_url().unwrap());
    let deadline = Instant::now() + Duration::from_secs(20);
    let offered = loop {
        let response = get(server, &playback);
        assert_eq!(response.status, 200, "{label}: {}", response.body);
        let offered = variants(&response.body);
        if offered.len() >= expected.len() || Instant::now() > deadline {
            break offered;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let names: Vec<&str> = offered.iter().map(|v| v.name.as_str()).collect();
    assert_eq!(names, expected, "{label}: the ladder offered");
    let mut video_bandwidths = Vec::new();
    for variant in &offered {
        let codecs = variant.attribute("CODECS").unwrap();
        assert!(variant.attribute("AVERAGE-BANDWIDTH").is_some(), "{label}: {variant:?}");
        assert_eq!(variant.attribute("STABLE-VARIANT-ID").as_deref(), Some(variant.name.as_str()));
        if variant.name == "audio_only" {
            assert_eq!(codecs, "mp4a.40.2", "{label}: {variant:?}");
            assert!(variant.attribute("RESOLUTION").is_none(), "{label}: {variant:?}");
        } else {
            let (width, height) = size_of(&variant.name);
            assert_eq!(variant.attribute("RESOLUTION"), Some(format!("{width}x{height}")), "{label}: {variant:?}");
            assert_eq!(variant.attribute("FRAME-RATE").as_deref(), Some("30.000"), "{label}: {variant:?}");
            assert!(codecs.starts_with("avc1.") && codecs.ends_with(",mp4a.40.2"), "{label}: {variant:?}");
            video_bandwidths.push(variant.attribute("BANDWIDTH").unwrap().parse::<u64>().unwrap());
        }
    }
    assert!(video_bandwidths.windows(2).all(|w| w[0] > w[1]), "{label}: best first {video_bandwidths:?}");

    // Segments of the same sequence number, from the source and every rendition: the source's
    // media playlist is the stream's own (on ADVANCED channels it is not offered, but it is
    // what every rendition is cut by).
    let stream_id = live_stream_id(server, &arn).await;
    let source_media = format!("{}/{stream_id}.m3u8", offered[0].uri.rsplit_once('/').unwrap().0);
    let mut medias: Vec<(String, String)> = vec![("source".to_owned(), source_media)];
    medias.extend(offered.iter().map(|v| (v.name.clone(), v.uri.clone())));
    let deadline = Instant::now() + Duration::from_secs(30);
    let (common, listed) = loop {
        let listed: Vec<(BTreeMap<u64, String>, Option<String>)> =
            medias.iter().map(|(_, media)| segments(&get(server, media).body)).collect();
        let mut common: Vec<u64> = listed[0].0.keys().copied().collect();
        common.retain(|sequence| listed.iter().all(|(segments, _)| segments.contains_key(sequence)));
        if common.len() >= 3 || Instant::now() > deadline {
            break (common, listed);
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    };
    assert!(common.len() >= 3, "{label}: three segments in every rendition: {common:?}");
    let dir = server.data_dir.join("probe");
    std::fs::create_dir_all(&dir).unwrap();
    for sequence in &common[common.len() - 3..] {
        let mut source_pictures = None;
        for ((name, media), (segments, init)) in medias.iter().zip(&listed) {
            let file = dir.join(format!("{name}-{sequence}.seg"));
            fetch_segment(server, media, &segments[sequence], init, &file);
            let probe = probe(&file);
            assert_eq!(probe.audio_codec.as_deref(), Some("aac"), "{label} {name} #{sequence}: {probe:?}");
            if name == "audio_only" {
                assert!(probe.video.is_none() && probe.pictures.is_empty(), "{label}: audio only: {probe:?}");
                continue;
            }
            let (codec, width, height) = probe.video.clone().expect("a picture");
            assert_eq!(codec, "h264", "{label} {name}");
            if name != "source" {
                assert_eq!((width, height), size_of(name), "{label} {name}");
            }
            let keyframes: Vec<i64> = probe.pictures.iter().filter(|(_, k)| *k).map(|(pts, _)| *pts).collect();
            assert!(!keyframes.is_empty() && probe.pictures[0].1, "{label} {name} #{sequence} starts on an IDR");
            match &source_pictures {
                None => source_pictures = Some((probe.pictures.len(), keyframes)),
                Some((count, source_keyframes)) => {
                    assert_eq!(&keyframes, source_keyframes, "{label} {name} #{sequence}: IDRs on the source's");
                    assert_eq!(probe.pictures.len(), *count, "{label} {name} #{sequence}: as many pictures");
                }
            }
        }
    }
}

#[tokio::test]
async fn every_channel_type_and_preset_gets_its_ladder_aligned_on_the_source() {
    let _alone = ONE_TRANSCODING_TEST.lock().await;
    let server = Server::with_args(&["--ffmpeg", "ffmpeg"]);
    let (p720, p1080) = (pattern_720p(), pattern_1080p());
    for case in cases() {
        // One stream at a time: two ladders at once (up to 4.1 units) would hold this 2-core
        // machine at its limit, where a transcoder falls behind and drops frames (as it should).
        check_ladder(&server, &case, 0, p720, case.renditions_720p).await;
        check_ladder(&server, &case, 1, p1080, case.renditions_1080p).await;
    }
}

/// The ffmpeg processes the server runs (its children).
fn transcoders(server: &Server) -> Vec<u32> {
    let parent = server.pid().to_string();
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|entry| {
            let pid: u32 = entry.ok()?.file_name().to_str()?.parse().ok()?;
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
            // pid (comm) state ppid …
            let (comm, rest) = stat.split_once(") ")?;
            let ppid = rest.split(' ').nth(1)?;
            (comm.ends_with("(ffmpeg") && ppid == parent).then_some(pid)
        })
        .collect()
}

async fn session_events(server: &Server, arn: &str, stream_id: Option<&str>) -> Vec<(String, Option<String>)> {
    let mut request = server.client().get_stream_session().channel_arn(arn);
    if let Some(id) = stream_id {
        request = request.stream_id(id);
    }
    let out = request.send().await.unwrap();
    out.stream_session()
        .unwrap()
        .truncated_events()
        .iter()
        .map(|e| (e.name().unwrap_or("").to_owned(), e.code().map(str::to_owned)))
        .collect()
}

/// Waits (at most 5 s) until the channel's live session has event `name` (with `code`, if given).
async fn wait_for_session_event(server: &Server, arn: &str, name: &str, code: Option<&str>) {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let events = session_events(server, arn, None).await;
        if events.iter().any(|(n, c)| n == name && (code.is_none() || c.as_deref() == code)) {
            return;
        }
        assert!(Instant::now() < deadline, "no {name} {code:?} in the session's events: {events:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The newest segment of a media playlist, by sequence number.
fn newest_segment(server: &Server, media: &str) -> Option<u64> {
    segments(&get(server, media).body).0.keys().last().copied()
}

#[tokio::test]
async fn capacity_is_enforced_and_a_killed_transcoder_comes_back() {
    let _alone = ONE_TRANSCODING_TEST.lock().await;
    // (One node: capacity is a node's own.)
    let server = Server::single_node(&["--ffmpeg", "ffmpeg", "--transcode-capacity", "1.5"]);
    let client = server.client();
    let create = |channel_type: ChannelType| client.create_channel().r#type(channel_type).send();
    let first = create(ChannelType::StandardChannelType).await.unwrap();
    let first_arn = first.channel().unwrap().arn().unwrap().to_owned();
    let _first_publisher = Publisher::start(&rtmps_url(&first), pattern_720p());
    wait_live(&server, &first_arn, Duration::from_secs(20)).await;
    let playback = path_of(first.channel().unwrap().playback_url().unwrap());
    let offered = variants(&get(&server, &playback).body);
    assert_eq!(offered.len(), 4, "{offered:?}");

    // A second 720p STANDARD stream would need 2 units of 1.5: refused, as IVS refuses it.
    let second = create(ChannelType::StandardChannelType).await.unwrap();
    let second_arn = second.channel().unwrap().arn().unwrap().to_owned();
    let mut refused = Publisher::start(&rtmps_url(&second), pattern_720p());
    let (status, _) = refused.exited_within(Duration::from_secs(15)).expect("the refused publisher is disconnected");
    assert!(!status.success());
    let sessions = client.list_stream_sessions().channel_arn(&second_arn).send().await.unwrap();
    let refused_id = sessions.stream_sessions()[0].stream_id().unwrap().to_owned();
    let events = session_events(&server, &second_arn, Some(&refused_id)).await;
    let names: Vec<&str> = events.iter().map(|(n, _)| n.as_str()).collect();
    assert!(names.contains(&"Stream Failure"), "{events:?}");
    assert!(!names.contains(&"Stream Start"), "no half-started stream: {events:?}");
    assert!(client.get_stream().channel_arn(&second_arn).send().await.is_err(), "the channel is not live");
    assert!(server.log_text().contains("transcoding capacity"), "the log says why");
    // BASIC channels transcode nothing, so capacity does not hold them back.
    let basic = create(ChannelType::BasicChannelType).await.unwrap();
    let basic_arn = basic.channel().unwrap().arn().unwrap().to_owned();
    let _basic_publisher = Publisher::start(&rtmps_url(&basic), pattern_720p());
    wait_live(&server, &basic_arn, Duration::from_secs(20)).await;

    // Killing the transcoder: it is restarted, the restart is in the session's events, and the
    // renditions' playlists grow again.
    let rendition = offered[1].uri.clone();
    let pids = transcoders(&server);
    assert_eq!(pids.len(), 1, "one transcoder per transcoded stream: {pids:?}");
    let before = newest_segment(&server, &rendition).expect("segments");
    assert!(Command::new("kill").args(["-9", &pids[0].to_string()]).status().unwrap().success());
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let restarted = transcoders(&server).iter().any(|pid| *pid != pids[0]);
        let grown = newest_segment(&server, &rendition).is_some_and(|newest| newest >= before + 3);
        if restarted && grown {
            break;
        }
        assert!(Instant::now() < deadline, "the renditions did not come back: {}", get(&server, &rendition).body);
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    wait_for_session_event(&server, &first_arn, "Transcode Restart", Some("TranscoderExited")).await;
}

#[tokio::test]
async fn without_ffmpeg_transcoded_channels_serve_their_source() {
    let _alone = ONE_TRANSCODING_TEST.lock().await;
    let server = Server::with_args(&["--ffmpeg", "/nonexistent/ffmpeg"]);
    assert!(server.log_text().contains("no ffmpeg"), "the server says so at start-up");
    let out = server.client().create_channel().send().await.unwrap();
    let arn = out.channel().unwrap().arn().unwrap().to_owned();
    let _publisher = Publisher::start(&rtmps_url(&out), pattern_720p());
    wait_live(&server, &arn, Duration::from_secs(20)).await;
    let offered = variants(&get(&server, &path_of(out.channel().unwrap().playback_url().unwrap())).body);
    let names: Vec<&str> = offered.iter().map(|v| v.name.as_str()).collect();
    assert_eq!(names, ["720p30"]);
    // The session says why the renditions are missing.
    wait_for_session_event(&server, &arn, "Transcode Failure", Some("TranscoderUnavailable")).await;
}

#[tokio::test]
async fn maximum_resolution_tokens_leave_the_renditions_above_their_cap_out() {
    let _alone = ONE_TRANSCODING_TEST.lock().await;
    let server = Server::with_args(&["--ffmpeg", "ffmpeg"]);
    let client = server.client();
    let keys =
        server.data_dir.with_file_name(format!("{}-keys", server.data_dir.file_name().unwrap().to_string_lossy()));
    let (signing_key, public) = crate::tokens::key_pair(&keys, "abr");
    client.import_playback_key_pair().public_key_material(&public).send().await.unwrap();
    let out = client.create_channel().authorized(true).send().await.unwrap();
    let channel = out.channel().unwrap();
    let arn = channel.arn().unwrap().to_owned();
    let _publisher = Publisher::start(&rtmps_url(&out), pattern_720p());
    wait_live(&server, &arn, Duration::from_secs(20)).await;
    let playback = path_of(channel.playback_url().unwrap());
    let token = |maximum: Option<&str>| {
        let mut claims = serde_json::json!({ "aws:channel-arn": arn, "exp": crate::tokens::now() + 300 });
        if let Some(maximum) = maximum {
            claims["aws:maximum-resolution"] = serde_json::json!(maximum);
        }
        crate::tokens::token(&signing_key, &claims)
    };
    let offered = |maximum: Option<&str>| {
        let response = get(&server, &format!("{playback}?token={}", token(maximum)));
        assert_eq!(response.status, 200, "{maximum:?}: {}", response.body);
        variants(&response.body)
    };
    let names = |variants: &[Variant]| variants.iter().map(|v| v.name.clone()).collect::<Vec<_>>();
    assert_eq!(names(&offered(None)), ["720p30", "480p30", "360p30", "160p30"]);
    assert_eq!(names(&offered(Some("HD"))), ["720p30", "480p30", "360p30", "160p30"]);
    let sd = offered(Some("SD"));
    assert_eq!(names(&sd), ["480p30", "360p30", "160p30"], "SD: 480 lines at most");
    // The session cannot reach the renditions its token leaves out.
    let source = format!("{}/{}.m3u8", sd[0].uri.rsplit_once('/').unwrap().0, live_stream_id(&server, &arn).await);
    let refused = get(&server, &source);
    assert_eq!(refused.status, 403, "{}", refused.body);
    assert!(refused.body.contains("resolution_not_allowed"), "{}", refused.body);
    assert_eq!(get(&server, &sd[0].uri).status, 200);
}

/// The renditions of a recording in the bucket: (folder, playlist lines of `master.m3u8`).
fn recorded_renditions(prefix: &Path) -> (Vec<String>, String) {
    let hls = prefix.join("media/hls");
    let mut folders: Vec<String> = std::fs::read_dir(&hls)
        .map(|entries| {
            entries
                .flatten()
                .filter(|e| e.path().is_dir())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    folders.sort();
    (folders, std::fs::read_to_string(hls.join("master.m3u8")).unwrap_or_default())
}

#[tokio::test]
async fn recordings_hold_the_renditions_their_configuration_selects() {
    let _alone = ONE_TRANSCODING_TEST.lock().await;
    use aws_sdk_ivs::types::{RecordingMode, RenditionConfiguration, RenditionConfigurationRendition as Class};
    use aws_sdk_ivs::types::{RenditionConfigurationRenditionSelection as Selection, ThumbnailConfiguration};
    let server = Server::with_args(&["--ffmpeg", "ffmpeg"]);
    let client = server.client();
    let configuration = |selection: Selection, classes: &[Class]| {
        let renditions = RenditionConfiguration::builder()
            .rendition_selection(selection)
            .set_renditions((!classes.is_empty()).then(|| classes.to_vec()))
            .build();
        client
            .create_recording_configuration()
            .destination_configuration(crate::harness::destination("my-bucket"))
            .thumbnail_configuration(ThumbnailConfiguration::builder().recording_mode(RecordingMode::Disabled).build())
            .rendition_configuration(renditions)
            .send()
    };
    let all = configuration(Selection::All, &[]).await.unwrap();
    let custom = configuration(Selection::Custom, &[Class::Hd, Class::LowestResolution]).await.unwrap();
    let none = configuration(Selection::None, &[]).await.unwrap();
    let mut channels = Vec::new();
    for (config, channel_type) in [
        (&all, ChannelType::StandardChannelType),
        (&custom, ChannelType::StandardChannelType),
        (&none, ChannelType::AdvancedSdChannelType),
    ] {
        let arn = config.recording_configuration().unwrap().arn();
        let out = client.create_channel().r#type(channel_type).recording_configuration_arn(arn).send().await.unwrap();
        let channel_arn = out.channel().unwrap().arn().unwrap().to_owned();
        let publisher = Publisher::start(&rtmps_url(&out), pattern_720p());
        channels.push((channel_arn, publisher));
    }
    for (arn, _) in &channels {
        wait_live(&server, arn, Duration::from_secs(20)).await;
    }
    tokio::time::sleep(Duration::from_secs(12)).await;
    let mut prefixes = Vec::new();
    for (arn, publisher) in &mut channels {
        publisher.kill();
        let channel_dir = server
            .data_dir
            .join("buckets/my-bucket/ivs/v1")
            .join(crate::harness::ACCOUNT)
            .join(arn.rsplit('/').next().unwrap());
        prefixes.push(crate::recording::ended_recording(&channel_dir).await);
    }

    // ALL: the source and every rendition, best first, each playing as long as the source.
    let (folders, master) = recorded_renditions(&prefixes[0]);
    assert_eq!(folders, ["160p30", "360p30", "480p30", "720p30"]);
    let listed: Vec<&str> = master.lines().filter(|l| !l.starts_with('#')).collect();
    assert_eq!(
        listed,
        ["720p30/playlist.m3u8", "480p30/playlist.m3u8", "360p30/playlist.m3u8", "160p30/playlist.m3u8"]
    );
    assert!(master.contains("RESOLUTION=852x480"), "{master}");
    let ended = crate::recording::json(&prefixes[0].join("events/recording-ended.json"));
    let renditions = ended["media"]["hls"]["renditions"].as_array().unwrap();
    let paths: Vec<&str> = renditions.iter().map(|r| r["path"].as_str().unwrap()).collect();
    assert_eq!(paths, ["720p30", "480p30", "360p30", "160p30"], "{ended}");
    assert_eq!(
        (renditions[3]["resolution_width"].as_u64(), renditions[3]["resolution_height"].as_u64()),
        (Some(284), Some(160))
    );
    let source_seconds = crate::recording::ffprobe_duration(&prefixes[0].join("media/hls/720p30/playlist.m3u8"));
    assert!(source_seconds > 8.0, "{source_seconds}");
    for folder in ["480p30", "360p30", "160p30"] {
        let seconds =
            crate::recording::ffprobe_duration(&prefixes[0].join(format!("media/hls/{folder}/playlist.m3u8")));
        assert!(
            (seconds - source_seconds).abs() < 3.0,
            "{folder}: {seconds} s against the source's {source_seconds} s"
        );
    }
    // CUSTOM HD + LOWEST_RESOLUTION: the 720p source and the 160p rendition.
    let (folders, master) = recorded_renditions(&prefixes[1]);
    assert_eq!(folders, ["160p30", "720p30"]);
    assert_eq!(master.lines().filter(|l| !l.starts_with('#')).count(), 2, "{master}");
    // NONE: the events only.
    let (folders, master) = recorded_renditions(&prefixes[2]);
    assert!(folders.is_empty() && master.is_empty(), "{folders:?}");
    assert!(prefixes[2].join("events/recording-started.json").exists());
}

#[tokio::test]
async fn a_transcoder_behind_real_time_is_left_out_of_new_playlists() {
    let _alone = ONE_TRANSCODING_TEST.lock().await;
    // An ffmpeg that reads its input at half speed: it falls further behind every second.
    let dir = std::env::temp_dir().join(format!("openivs-slow-ffmpeg-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let slow = dir.join("ffmpeg");
    std::fs::write(&slow, "#!/bin/sh\nexec ffmpeg -readrate 0.5 \"$@\"\n").unwrap();
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::set_permissions(&slow, std::fs::Permissions::from_mode(0o755)).unwrap();
    let server = Server::with_args(&["--ffmpeg", slow.to_str().unwrap()]);
    let out = server.client().create_channel().send().await.unwrap();
    let arn = out.channel().unwrap().arn().unwrap().to_owned();
    let playback = path_of(out.channel().unwrap().playback_url().unwrap());
    let _publisher = Publisher::start(&rtmps_url(&out), pattern_720p());
    wait_live(&server, &arn, Duration::from_secs(20)).await;
    // The source keeps playing; the renditions leave new multivariant playlists, and the session
    // says why.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let events = session_events(&server, &arn, None).await;
        let offered = variants(&get(&server, &playback).body);
        let names: Vec<&str> = offered.iter().map(|v| v.name.as_str()).collect();
        if names == ["720p30"] && events.iter().any(|(n, _)| n == "Transcode Behind") {
            break;
        }
        assert!(Instant::now() < deadline, "the renditions stayed offered: {names:?} {events:?}");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let source = variants(&get(&server, &playback).body).remove(0).uri;
    let before = newest_segment(&server, &source).unwrap();
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(newest_segment(&server, &source).unwrap() > before, "the source never waits for the transcoder");
    let _ = std::fs::remove_dir_all(&dir);
}

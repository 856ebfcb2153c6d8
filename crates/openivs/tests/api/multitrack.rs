//! Multitrack video over Enhanced RTMP with a real broadcaster: FFmpeg 9 (a static build from
//! PyPI's imageio-ffmpeg, installed by `scripts/test`; Debian's ffmpeg predates multitrack FLV)
//! publishes several H.264 tracks in one RTMPS publish, as OBS Studio's Enhanced Broadcasting
//! does. On a channel whose `multitrackInputConfiguration` is enabled every track is a rendition
//! of the multivariant playlist and an ingest configuration of the session; the channel's policy
//! and maximum resolution refuse what IVS refuses, with IVS's codes.
//!
//! The broadcaster first asks GetClientConfiguration (`POST /api/v3/GetClientConfiguration`, the
//! stream key as authentication) which tracks to encode, encodes exactly those, and publishes
//! with the answered authentication, as OBS does; a publish that does otherwise is refused with
//! IVS's GetClientConfiguration codes. A server started with `--multitrack-hevc` answers HEVC
//! tracks after the first to a broadcaster that can encode them (libx265 stands in for NVENC),
//! and packages them as `hvc1` renditions.

use std::process::Command;
use std::time::{Duration, Instant};

use aws_sdk_ivs::types::{
    ChannelType, ContainerFormat, MultitrackInputConfiguration, MultitrackMaximumResolution, MultitrackPolicy,
};

use crate::harness::{ACCOUNT, RawResponse, Server, raw_request, rtmps_url, wait_offline};
use crate::ingest::{Publisher, pattern_720p, wait_live};
use crate::multitrack_broadcaster::{
    Codec, MultitrackPublisher, UNANSWERED_TRACKS, answered, configured, get_client_configuration,
    get_client_configuration_with_hevc, three_tracks_of_720p,
};
use crate::playback::path_of;
use crate::recording::{configuration_without_thumbnails, ended_recording};

/// A STANDARD fMP4 channel with `multitrack` (None: multitrack left off).
struct TestChannel {
    arn: String,
    /// The plain stream key's RTMPS URL.
    rtmps: String,
    stream_key: String,
    playback_url: String,
}

async fn channel(server: &Server, multitrack: Option<(MultitrackPolicy, MultitrackMaximumResolution)>) -> TestChannel {
    recorded_channel(server, multitrack, None).await
}

/// [`channel`], recorded with the recording configuration `recording` (if any).
async fn recorded_channel(
    server: &Server,
    multitrack: Option<(MultitrackPolicy, MultitrackMaximumResolution)>,
    recording: Option<&str>,
) -> TestChannel {
    let mut builder = server
        .client()
        .create_channel()
        .r#type(ChannelType::StandardChannelType)
        .container_format(ContainerFormat::FragmentedMp4)
        .set_recording_configuration_arn(recording.map(str::to_owned));
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
    TestChannel {
        arn: channel.arn().unwrap().to_owned(),
        rtmps: rtmps_url(&out),
        stream_key: out.stream_key().unwrap().value().unwrap().to_owned(),
        playback_url: channel.playback_url().unwrap().to_owned(),
    }
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
async fn get_client_configuration_answers_as_the_integration_api() {
    let server = Server::start();
    let multitrack = channel(&server, Some((MultitrackPolicy::Allow, MultitrackMaximumResolution::FullHd))).await;
    let response = get_client_configuration(&server, &multitrack.stream_key, three_tracks_of_720p());
    assert_eq!(response.status, 200, "{}", response.body);
    assert!(response.header("content-type").is_some_and(|t| t.starts_with("application/json")));
    let answer: serde_json::Value = serde_json::from_str(&response.body).unwrap();
    assert_eq!(answer["meta"]["service"], "IVS");
    assert_eq!(answer["meta"]["schema_version"], "2025-01-25");
    assert!(answer["meta"]["config_id"].as_str().is_some_and(|id| !id.is_empty()));
    let (tracks, url) = answered(&answer);
    assert_eq!(tracks, [(1280, 720, 3000), (854, 480, 1500), (640, 360, 800)]);
    for encoder in answer["encoder_configurations"].as_array().unwrap() {
        assert_eq!(encoder["framerate"], serde_json::json!({ "numerator": 30, "denominator": 1 }));
        assert_eq!(encoder["settings"]["keyint_sec"], 2);
        assert_eq!(encoder["settings"]["bf"], 0);
        let points = encoder["bitrate_interpolation_points"].as_array().unwrap();
        assert_eq!(points.last(), Some(&encoder["settings"]["bitrate"]));
    }
    assert_eq!(answer["audio_configurations"]["live"][0]["channels"], 2);
    // The answered authentication is the key with a signed answer; the URL is the channel's RTMPS
    // ingest endpoint.
    let plain = multitrack.rtmps.rsplit_once('/').unwrap().0;
    assert!(url.starts_with(&format!("{plain}/{}?", multitrack.stream_key)), "{url} vs {plain}");
    // The reference's schema version too; the channel's maximum resolution caps the top track.
    let capped = channel(&server, Some((MultitrackPolicy::Allow, MultitrackMaximumResolution::Sd))).await;
    let mut request = three_tracks_of_720p();
    request["maximum_video_tracks"] = 2.into();
    let response = get_client_configuration(&server, &capped.stream_key, request);
    let answer: serde_json::Value = serde_json::from_str(&response.body).unwrap();
    assert_eq!(answered(&answer).0, [(854, 480, 1500), (640, 360, 800)]);

    // Refusals: a JSON status a broadcaster can show.
    let refusal = |response: RawResponse, status: u16| {
        assert_eq!(response.status, status, "{}", response.body);
        let body: serde_json::Value = serde_json::from_str(&response.body).unwrap();
        assert_eq!(body["status"]["result"], "error", "{body}");
        assert!(body["status"]["html_en_us"].as_str().is_some_and(|m| !m.is_empty()));
    };
    refusal(get_client_configuration(&server, "sk_us-west-2_nope", three_tracks_of_720p()), 403);
    refusal(get_client_configuration(&server, "", three_tracks_of_720p()), 401);
    let headers = [("content-type".to_owned(), "application/json".to_owned())];
    refusal(raw_request(&server, "POST", "/api/v3/GetClientConfiguration", &headers, "{not json"), 400);
    let future = serde_json::json!({ "authentication": multitrack.stream_key, "schema_version": "2099-01-01" });
    refusal(raw_request(&server, "POST", "/api/v3/GetClientConfiguration", &headers, &future.to_string()), 400);
    // The body is bounded as every request's is (--http-max-request-body, 64 KiB by default).
    let oversized =
        format!("{{\"authentication\": \"{}\", \"pad\": \"{}\"}}", multitrack.stream_key, "x".repeat(70_000));
    refusal(raw_request(&server, "POST", "/api/v3/GetClientConfiguration", &headers, &oversized), 400);
    // No SigV4 on it, and no IVS operation at other methods.
    assert_eq!(raw_request(&server, "GET", "/api/v3/GetClientConfiguration", &[], "").status, 405);

    // A broadcaster that could encode HEVC is answered H.264 unless the server says otherwise
    // (--multitrack-hevc): every viewer's browser can play every track.
    let response = get_client_configuration_with_hevc(&server, &multitrack.stream_key, three_tracks_of_720p());
    let answer: serde_json::Value = serde_json::from_str(&response.body).unwrap();
    assert_eq!(encoder_types(&answer), ["jim_nvenc", "jim_nvenc", "jim_nvenc"]);
}

fn encoder_types(answer: &serde_json::Value) -> Vec<&str> {
    answer["encoder_configurations"].as_array().unwrap().iter().map(|e| e["type"].as_str().unwrap()).collect()
}

/// The multivariant playlist's variants (tag, URI) once it lists `count` of them (at most 15 s).
async fn variants(server: &Server, playback_url: &str, count: usize) -> Vec<(String, String)> {
    // (A track is listed once it has a segment: the broadcaster's encoder of three tracks may
    // run late on a loaded machine, as in CI with the whole suite running.)
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let multivariant = raw_request(server, "GET", &path_of(playback_url), &[], "");
        let variants: Vec<(String, String)> = multivariant
            .body
            .lines()
            .zip(multivariant.body.lines().skip(1))
            .filter(|(tag, _)| tag.starts_with("#EXT-X-STREAM-INF:"))
            .map(|(tag, uri)| (tag.to_owned(), uri.to_owned()))
            .collect();
        if variants.len() >= count || Instant::now() > deadline {
            return variants;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// What ffprobe finds in a media playlist's first video stream: `codec,width,height`.
fn probe(server: &Server, uri: &str) -> String {
    let output = Command::new("ffprobe")
        .args(["-v", "error", "-select_streams", "v:0", "-show_entries", "stream=codec_name,width,height"])
        .args(["-of", "csv=p=0"])
        .arg(format!("{}{uri}", server.endpoint))
        .output()
        .expect("ffprobe must be installed");
    String::from_utf8_lossy(&output.stdout).lines().next().unwrap_or("").to_owned()
}

#[tokio::test]
async fn hevc_tracks_are_answered_and_played_where_the_server_takes_them() {
    let server = Server::with_args(&["--multitrack-hevc", "true"]);
    let recording = configuration_without_thumbnails(&server, "bucket", 0).await;
    let allow = Some((MultitrackPolicy::Allow, MultitrackMaximumResolution::FullHd));
    let multitrack = recorded_channel(&server, allow, Some(&recording)).await;
    let response = get_client_configuration_with_hevc(&server, &multitrack.stream_key, three_tracks_of_720p());
    assert_eq!(response.status, 200, "{}", response.body);
    let answer: serde_json::Value = serde_json::from_str(&response.body).unwrap();
    // Track 0 stays H.264 (the picture every player can play); the tracks after it are HEVC.
    assert_eq!(encoder_types(&answer), ["jim_nvenc", "jim_hevc_nvenc", "jim_hevc_nvenc"]);
    assert_eq!(answer["encoder_configurations"][1]["settings"]["profile"], "main");
    let (tracks, url) = answered(&answer);
    let codecs = [Codec::H264, Codec::Hevc, Codec::Hevc];

    // Sent as answered: three renditions, HEVC ones as hvc1 in fMP4.
    let publisher = MultitrackPublisher::start_coded(&server, &url, &tracks, &codecs);
    wait_live(&server, &multitrack.arn, Duration::from_secs(20)).await;
    let variants = variants(&server, &multitrack.playback_url, 3).await;
    let codec_lists: Vec<&str> =
        variants.iter().map(|(tag, _)| tag.split("CODECS=\"").nth(1).unwrap().split('"').next().unwrap()).collect();
    assert_eq!(codec_lists.len(), 3, "{variants:?}");
    assert!(codec_lists[0].starts_with("avc1."), "{codec_lists:?}");
    assert!(codec_lists[1..].iter().all(|c| c.starts_with("hvc1.1.") && c.ends_with(",mp4a.40.2")), "{codec_lists:?}");
    let probed: Vec<String> = variants.iter().map(|(_, uri)| probe(&server, uri)).collect();
    assert_eq!(probed, ["h264,1280,720", "hevc,854,480", "hevc,640,360"]);
    // The initialisation section of an HEVC rendition holds an hvc1 sample entry with its hvcC.
    let media = raw_request(&server, "GET", &variants[1].1, &[], "").body;
    let init_uri = media.split("#EXT-X-MAP:URI=\"").nth(1).unwrap().split('"').next().unwrap().to_owned();
    let base = variants[1].1.rsplit_once('/').unwrap().0;
    let init_path = if init_uri.starts_with('/') { init_uri } else { format!("{base}/{init_uri}") };
    let init = raw_request(&server, "GET", &init_path, &[], "");
    assert_eq!(init.status, 200, "{init_path}");
    let has = |kind: &[u8]| init.body_bytes.windows(4).any(|w| w == kind);
    assert!(has(b"hvc1") && has(b"hvcC"), "{init_path}");

    // The session reports each track's codec and profile.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let session = server.client().get_stream_session().channel_arn(&multitrack.arn).send().await.unwrap();
    let videos = session.stream_session().unwrap().ingest_configurations().unwrap().video_configurations().to_vec();
    let described: Vec<(&str, &str, &str)> =
        videos.iter().map(|v| (v.track().unwrap(), &v.codec().unwrap()[..5], v.profile().unwrap())).collect();
    assert_eq!(described, [("Track0", "avc1.", "High"), ("Track1", "hvc1.", "Main"), ("Track2", "hvc1.", "Main")]);

    // The recording holds every track, the HEVC ones as HEVC (in MPEG-TS, as recordings are).
    drop(publisher);
    wait_offline(&server, &multitrack.arn, Duration::from_secs(10)).await;
    let channel_id = multitrack.arn.rsplit('/').next().unwrap();
    let prefix = ended_recording(&server.data_dir.join("buckets/bucket/ivs/v1").join(ACCOUNT).join(channel_id)).await;
    let recorded: Vec<String> = ["720p30", "480p30", "360p30"]
        .iter()
        .map(|rendition| {
            let playlist = prefix.join("media/hls").join(rendition).join("playlist.m3u8");
            let output = Command::new("ffprobe")
                .args(["-v", "error", "-select_streams", "v:0", "-show_entries", "stream=codec_name,width,height"])
                .args(["-of", "csv=p=0"])
                .arg(&playlist)
                .output()
                .expect("ffprobe must be installed");
            String::from_utf8_lossy(&output.stdout).lines().next().unwrap_or("").to_owned()
        })
        .collect();
    let files: Vec<_> = crate::harness::walkdir(&prefix.join("media/hls"));
    assert_eq!(recorded, ["h264,1280,720", "hevc,854,480", "hevc,640,360"], "{files:?}");

    // A codec other than answered, and HEVC as track 0, are refused as IVS refuses tracks that
    // are not what the answer said.
    let h264_only = channel(&server, Some((MultitrackPolicy::Allow, MultitrackMaximumResolution::FullHd))).await;
    let (tracks, url) = configured(&server, &h264_only.stream_key, three_tracks_of_720p());
    let mut publisher = MultitrackPublisher::start_coded(&server, &url, &tracks, &codecs);
    assert!(publisher.exited_within(Duration::from_secs(20)), "HEVC where H.264 was answered");
    assert_eq!(
        end_code(&server, &h264_only.arn).await.as_deref(),
        Some("InvalidMultitrackInputVideoTrackMediaProperties")
    );
    let hevc_first = channel(&server, Some((MultitrackPolicy::Allow, MultitrackMaximumResolution::FullHd))).await;
    let response = get_client_configuration_with_hevc(&server, &hevc_first.stream_key, three_tracks_of_720p());
    let (tracks, url) = answered(&serde_json::from_str(&response.body).unwrap());
    let mut publisher =
        MultitrackPublisher::start_coded(&server, &url, &tracks, &[Codec::Hevc, Codec::Hevc, Codec::Hevc]);
    assert!(publisher.exited_within(Duration::from_secs(20)), "HEVC as track 0");
    assert_eq!(
        end_code(&server, &hevc_first.arn).await.as_deref(),
        Some("InvalidMultitrackInputVideoTrackMediaProperties")
    );
}

#[tokio::test]
async fn every_track_is_a_rendition() {
    let server = Server::start();
    let client = server.client();
    let multitrack = channel(&server, Some((MultitrackPolicy::Allow, MultitrackMaximumResolution::FullHd))).await;
    let (tracks, url) = configured(&server, &multitrack.stream_key, three_tracks_of_720p());
    let _publisher = MultitrackPublisher::start(&server, &url, &tracks);
    let (arn, playback_url) = (&multitrack.arn, &multitrack.playback_url);
    wait_live(&server, arn, Duration::from_secs(20)).await;

    // The multivariant playlist lists the three tracks, best first, each with its own measured
    // bandwidth, resolution and codec.
    let variants = variants(&server, playback_url, 3).await;
    let resolutions: Vec<&str> = variants
        .iter()
        .map(|(tag, _)| tag.split("RESOLUTION=").nth(1).unwrap_or("").split(',').next().unwrap())
        .collect();
    assert_eq!(resolutions, ["1280x720", "854x480", "640x360"], "{variants:?}");
    let bandwidths: Vec<u64> = variants
        .iter()
        .map(|(tag, _)| tag.split("BANDWIDTH=").nth(1).unwrap().split(',').next().unwrap().parse().unwrap())
        .collect();
    assert!(bandwidths[0] > bandwidths[1] && bandwidths[1] > bandwidths[2], "measured per track: {bandwidths:?}");
    assert!(variants.iter().all(|(tag, _)| tag.contains("CODECS=\"avc1.") && tag.contains("mp4a.40.2")));
    // Each rendition plays its own track's picture.
    for ((_, uri), resolution) in variants.iter().zip(&resolutions) {
        assert_eq!(probe(&server, uri), format!("h264,{}", resolution.replace('x', ",")), "{uri}");
    }

    // The session describes every track.
    tokio::time::sleep(Duration::from_secs(4)).await;
    let session = client.get_stream_session().channel_arn(arn).send().await.unwrap();
    let session = session.stream_session().unwrap();
    let videos = session.ingest_configurations().unwrap().video_configurations();
    let tracks: Vec<(&str, i64, i64)> =
        videos.iter().map(|v| (v.track().unwrap(), v.video_width(), v.video_height())).collect();
    assert_eq!(tracks, [("Track0", 1280, 720), ("Track1", 854, 480), ("Track2", 640, 360)]);
    assert!(videos.iter().all(|v| (v.target_framerate() - 30).abs() <= 1 && v.target_bitrate() > 50_000), "{videos:?}");
    assert_eq!(session.ingest_configuration().unwrap().video().unwrap().track(), Some("Track0"));
}

/// Publishes `tracks` to `url` and expects the publish refused with `code`.
async fn refused(server: &Server, arn: &str, url: &str, tracks: &[(u32, u32, u32)], code: &str) {
    let mut publisher = MultitrackPublisher::start(server, url, tracks);
    assert!(publisher.exited_within(Duration::from_secs(20)), "{code}: the publish was not refused");
    assert_eq!(end_code(server, arn).await.as_deref(), Some(code));
}

#[tokio::test]
async fn the_channel_policy_and_maximum_resolution_refuse_as_ivs_does() {
    let server = Server::start();
    let allow = Some((MultitrackPolicy::Allow, MultitrackMaximumResolution::FullHd));
    // Multitrack on a channel that does not take it.
    let off = channel(&server, None).await;
    refused(&server, &off.arn, &off.rtmps, &UNANSWERED_TRACKS, "MultitrackInputNotAllowed").await;

    // A single track where multitrack is required.
    let required = channel(&server, Some((MultitrackPolicy::Require, MultitrackMaximumResolution::FullHd))).await;
    let mut single = Publisher::start(&required.rtmps, pattern_720p());
    assert!(single.exited_within(Duration::from_secs(20)).is_some(), "a single track where multitrack is required");
    assert_eq!(end_code(&server, &required.arn).await.as_deref(), Some("MultitrackInputRequired"));

    // Multitrack with the plain stream key, not GetClientConfiguration's answer.
    let plain = channel(&server, allow.clone()).await;
    refused(&server, &plain.arn, &plain.rtmps, &UNANSWERED_TRACKS, "GetClientConfigurationStreamKeyRequired").await;

    // An answer altered, or answered for another channel's key.
    let tampered = channel(&server, allow.clone()).await;
    let (tracks, url) = configured(&server, &tampered.stream_key, three_tracks_of_720p());
    let forged = match url.strip_suffix('A') {
        Some(rest) => format!("{rest}B"),
        None => format!("{}A", &url[..url.len() - 1]),
    };
    refused(&server, &tampered.arn, &forged, &tracks, "InvalidGetClientConfigurationStreamKey").await;
    let foreign = channel(&server, allow.clone()).await;
    let (_, their_url) = configured(&server, &plain.stream_key, three_tracks_of_720p());
    let query = their_url.split_once('?').unwrap().1;
    let url = format!("{}?{query}", foreign.rtmps);
    refused(&server, &foreign.arn, &url, &tracks, "InvalidGetClientConfigurationStreamKey").await;

    // More tracks than answered, and tracks other than answered.
    let counted = channel(&server, allow.clone()).await;
    let mut two = three_tracks_of_720p();
    two["maximum_video_tracks"] = 2.into();
    let (answered_two, url) = configured(&server, &counted.stream_key, two);
    assert_eq!(answered_two.len(), 2);
    refused(&server, &counted.arn, &url, &tracks, "InvalidMultitrackInputTrackCount").await;
    let other = channel(&server, allow.clone()).await;
    let (_, url) = configured(&server, &other.stream_key, three_tracks_of_720p());
    refused(&server, &other.arn, &url, &UNANSWERED_TRACKS, "InvalidMultitrackInputVideoTrackMediaProperties").await;

    // A track above the channel's maximum resolution: 720p where SD (480p) is the most, sent
    // with an answer (for 480p) all the same.
    let capped = channel(&server, Some((MultitrackPolicy::Allow, MultitrackMaximumResolution::Sd))).await;
    let (_, url) = configured(&server, &capped.stream_key, three_tracks_of_720p());
    refused(&server, &capped.arn, &url, &tracks, "InvalidMultitrackInputVideoTrackMediaProperties").await;
    // Within HD, the answered publish goes live.
    let within = channel(&server, Some((MultitrackPolicy::Require, MultitrackMaximumResolution::Hd))).await;
    let (answered_tracks, url) = configured(&server, &within.stream_key, three_tracks_of_720p());
    assert_eq!(answered_tracks, tracks);
    let _publisher = MultitrackPublisher::start(&server, &url, &answered_tracks);
    wait_live(&server, &within.arn, Duration::from_secs(20)).await;

    // ALLOW takes a single track too, as any stream, with the plain key.
    let allowed = channel(&server, Some((MultitrackPolicy::Allow, MultitrackMaximumResolution::Hd))).await;
    let _single = Publisher::start(&allowed.rtmps, pattern_720p());
    wait_live(&server, &allowed.arn, Duration::from_secs(20)).await;
}

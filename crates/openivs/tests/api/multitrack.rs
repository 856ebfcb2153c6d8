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
//! IVS's GetClientConfiguration codes.

use std::process::Command;
use std::time::{Duration, Instant};

use aws_sdk_ivs::types::{
    ChannelType, ContainerFormat, MultitrackInputConfiguration, MultitrackMaximumResolution, MultitrackPolicy,
};

use crate::harness::{RawResponse, Server, raw_request, rtmps_url};
use crate::ingest::{Publisher, pattern_720p, wait_live};
use crate::multitrack_broadcaster::{
    MultitrackPublisher, UNANSWERED_TRACKS, answered, configured, get_client_configuration, three_tracks_of_720p,
};
use crate::playback::path_of;

/// A STANDARD fMP4 channel with `multitrack` (None: multitrack left off).
struct TestChannel {
    arn: String,
    /// The plain stream key's RTMPS URL.
    rtmps: String,
    stream_key: String,
    playback_url: String,
}

async fn channel(server: &Server, multitrack: Option<(MultitrackPolicy, MultitrackMaximumResolution)>) -> TestChannel {
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
    let deadline = Instant::now() + Duration::from_secs(15);
    let variants = loop {
        let multivariant = raw_request(&server, "GET", &path_of(playback_url), &[], "");
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
    assert_eq!(resolutions, ["1280x720", "854x480", "640x360"], "{variants:?}");
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

//! Adaptive bitrate as a viewer meets it: web players in headless Chromium play a STANDARD
//! channel's ladder (a 720p30 clock broadcaster, transcoded by the server's ffmpeg) on a fast
//! link, then the page's network is throttled (Chrome DevTools Protocol) to room for the 160p
//! rendition only. hls.js starts on the top rendition and decides to switch down within 10 s,
//! the lower rendition's first part or segment crosses the slow link within 3 s of that decision
//! (the server's share: its playlist and media are there at once), and playback does not stand
//! still longer than one segment on NORMAL channels (2 s keyframe interval, a viewer three
//! segments behind) or, on a LOW channel broadcast as IVS advises for low latency (a keyframe
//! every second), longer than one segment plus the time the top rendition's media that hls.js
//! still took after the throttle needs to cross the slow link (see below). Shaka Player,
//! video.js and the Amazon IVS Player, each with its own start-up logic, play above 160p on the
//! fast link and switch down within 15 s once throttled, with no fatal error.
//!
//! A multitrack channel's renditions are the broadcaster's own tracks (OBS's Enhanced
//! Broadcasting: asked of GetClientConfiguration, encoded by FFmpeg 9): hls.js starts on the top
//! track and switches down within 10 s of a throttle that leaves room for the lowest track only,
//! with no stall longer than two segments, or, when hls.js probes the top track again and waits
//! for that segment over the slow link, longer than that segment's transfer plus one segment.
//!
//! Why LOW with 1 s keyframes: hls.js (1.7) that falls behind by a part loads the rest of that
//! segment's parts as one chain, and its ABR samples the bandwidth only once the whole segment
//! is buffered. With 2 s segments (six parts) on a link slowed to a fifth, that is 8–9 s before
//! it reacts, with the ~1 s buffer of a LOW channel long gone (stalls of 2–5 s measured). With
//! 1 s segments it decides within 2–4 s or at once, depending on where in a segment the link
//! slows. hls.js watches a part's transfer (its abandon rule) only for the first part of such a
//! chain: when that part is slow but the viewer's buffer (hls.js sits 0.6–1.4 s behind the
//! edge) outlasts it, the parts after it, already listed by then, come as one unwatched chain at
//! ~1 s each over the slow link, and the buffer runs dry. Measured (8 runs here, 1 in CI): a
//! switch within 0.3 s and no stall when the link slows while hls.js waits at the edge for a
//! part (5 runs); otherwise the decision 4.4–4.5 s after the throttle, once the segment's last
//! 720p part is in, and stalls of 2.3–4.2 s, partly after the switch (hls.js, its estimate still that of
//! the fast link, picked 360p, which 600 kbit/s cannot carry either). None of that is the
//! server's: on a LOW channel the stall may last as long as the 720p media hls.js received after
//! the throttle takes over the slow link (the rest of one segment, as measured), plus one
//! segment.

use std::time::Duration;

use aws_sdk_ivs::types::{ChannelLatencyMode, ContainerFormat};

use crate::clock::ClockPublisher;
use crate::harness::{Server, rtmps_url, wait_live};
use crate::web_players::{play_with, wait_for_segments};

/// Seconds between the broadcaster's keyframes, so the length of a segment.
const SEGMENT_SECONDS: u32 = 2;
/// A fast link to begin with, 10 Mbit/s (and players told so: they otherwise start from a guess of
/// a few hundred kbit/s), then, 8 s after the picture starts moving, 600 kbit/s: room for the
/// 160p rendition, not for the 720p source.
const ENV: [(&str, &str); 4] = [
    ("PLAY_HLS_CONFIG", r#"{"abrEwmaDefaultEstimate": 10000000}"#),
    ("PLAY_SHAKA_CONFIG", r#"{"abr": {"defaultBandwidthEstimate": 10000000}}"#),
    // (VHS also caps renditions by the size of the player, a 300×150 element here.)
    ("PLAY_VHS_CONFIG", r#"{"bandwidth": 10000000, "limitRenditionByPlayerDimensions": false}"#),
    ("PLAY_THROTTLE", r#"{"fast_kbps": 10000, "after_ms": 8000, "kbps": 600}"#),
];

/// The throttled link's rate, kbit/s (so bits per millisecond), from `ENV`'s PLAY_THROTTLE.
fn slow_kbps() -> u64 {
    let throttle = ENV.iter().find(|(name, _)| *name == "PLAY_THROTTLE").unwrap().1;
    serde_json::from_str::<serde_json::Value>(throttle).unwrap()["kbps"].as_u64().unwrap()
}

/// Plays the channel with `player` for `seconds` (after its start); its result.
async fn watch(player: &'static str, playback_url: &str, seconds: u32) -> serde_json::Value {
    let url = playback_url.to_owned();
    tokio::task::spawn_blocking(move || play_with(player, seconds, &[&url], &ENV)).await.unwrap().remove(0)
}

/// (epoch ms, height) of each rendition switch a player reported.
fn levels(result: &serde_json::Value) -> Vec<(u64, u64)> {
    levels_of(&result["levels"])
}

fn levels_of(list: &serde_json::Value) -> Vec<(u64, u64)> {
    list.as_array().unwrap().iter().map(|l| (l[0].as_u64().unwrap(), l[1].as_u64().unwrap_or(0))).collect()
}

/// A live STANDARD channel of `latency` and `container` whose broadcaster sends a keyframe every
/// `keyframe_seconds` (so segments that long); its playback URL and the broadcaster.
async fn live_standard_channel(
    server: &Server,
    latency: ChannelLatencyMode,
    container: ContainerFormat,
    keyframe_seconds: u32,
) -> (String, ClockPublisher) {
    let out = server.client().create_channel().latency_mode(latency).container_format(container).send().await.unwrap();
    let channel = out.channel().unwrap();
    let arn = channel.arn().unwrap().to_owned();
    let publisher = ClockPublisher::start_sized(&rtmps_url(&out), 30 * keyframe_seconds, (1280, 720), "2500k");
    wait_live(server, &arn, Duration::from_secs(20)).await;
    (channel.playback_url().unwrap().to_owned(), publisher)
}

#[tokio::test]
async fn hls_js_switches_down_when_the_network_slows() {
    let _alone = crate::ONE_AT_A_TIME.lock().await;
    let server = Server::with_args(&["--ffmpeg", "ffmpeg"]);
    for (latency, container, keyframe_seconds) in [
        (ChannelLatencyMode::NormalLatency, ContainerFormat::Ts, SEGMENT_SECONDS),
        (ChannelLatencyMode::NormalLatency, ContainerFormat::FragmentedMp4, SEGMENT_SECONDS),
        (ChannelLatencyMode::LowLatency, ContainerFormat::FragmentedMp4, 1),
    ] {
        let label = format!("hls.js {container:?}/{latency:?}");
        let (playback_url, _publisher) =
            live_standard_channel(&server, latency.clone(), container, keyframe_seconds).await;
        if latency == ChannelLatencyMode::NormalLatency {
            // (A viewer who joins a NORMAL stream that has been live a while starts three
            // segments behind, with that much buffer; the first viewer of a new stream has one.)
            wait_for_segments(&server, &playback_url, 3).await;
        }
        let result = watch("hls.js", &playback_url, 25).await;
        assert_eq!(result["fatal"], serde_json::json!([]), "{label}: {result}");
        let heights: Vec<u64> = result["level_heights"].as_array().unwrap().iter().filter_map(|h| h.as_u64()).collect();
        assert_eq!(heights, [160, 360, 480, 720], "{label}: hls.js sees the ladder (audio_only aside)");
        let levels = levels(&result);
        assert_eq!(levels[0].1, 720, "{label}: starts on the top rendition: {levels:?}");
        let throttled_at = result["throttled_at"].as_u64().expect("the network was throttled");
        // hls.js switches down when its ABR decides to (LEVEL_SWITCHING): within 10 s. The new
        // rendition then plays once its playlist and first part have crossed the slow link
        // (LEVEL_SWITCHED), which must happen too, within the watch.
        let decisions = levels_of(&result["level_decisions"]);
        let decided = decisions.iter().find(|(at, height)| *at >= throttled_at && *height < 720).unwrap_or_else(|| {
            panic!("{label}: no decision to switch down after the throttle: {decisions:?}, levels {levels:?}")
        });
        let after_ms = decided.0 - throttled_at;
        let down = levels
            .iter()
            .find(|(at, height)| *at >= throttled_at && *height < 720)
            .unwrap_or_else(|| panic!("{label}: no switch down after the throttle: {levels:?}"));
        let switched_ms = down.0 - throttled_at;
        let stall = result["longest_time_stall_ms"].as_u64().unwrap();
        let report = format!(
            "{label}: levels {levels:?}, decided to switch down {after_ms} ms after the throttle (at {throttled_at}), \
             switched after {switched_ms} ms, stalls {}, decisions {decisions:?}, parts and segments {}",
            result["time_stalls"], result["fragments"]
        );
        println!("{report}");
        assert!(after_ms <= 10_000, "{report}");
        // The first part or segment of a lower rendition to arrive after the decision.
        let top =
            result["level_heights"].as_array().unwrap().iter().position(|h| h.as_u64() == Some(720)).unwrap() as u64;
        let lower_arrived = result["fragments"]
            .as_array()
            .unwrap()
            .iter()
            .map(|f| (f[0].as_u64().unwrap(), f[1].as_u64().unwrap()))
            .find(|(at, level)| *at >= decided.0 && *level < top)
            .unwrap_or_else(|| panic!("no part of a lower rendition arrived after the decision: {report}"));
        assert!(lower_arrived.0 - decided.0 <= 3_000, "the lower rendition came slowly: {report}");
        let segment_ms = u64::from(keyframe_seconds) * 1000;
        if latency == ChannelLatencyMode::LowLatency {
            // Each stall may last as long as the slow link took to carry what hls.js received
            // from the throttle to the stall's end: the parts (the top rendition's, and those of
            // any rendition it tried on the way down that the link cannot carry either: it may
            // step to 360p before 160p) and the playlists (one per part), and a segment more.
            let stalls = result["time_stalls"]
                .as_array()
                .unwrap()
                .iter()
                .map(|s| (s[0].as_u64().unwrap(), s[1].as_u64().unwrap()));
            for (started, stood_ms) in stalls {
                let carried = |at: u64| (throttled_at..=started + stood_ms).contains(&at);
                let part_bytes: u64 = result["fragments"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .filter(|f| carried(f[0].as_u64().unwrap()))
                    .map(|f| f[4].as_u64().unwrap())
                    .sum();
                let playlist_bytes: u64 = result["responses"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .filter(|r| r[2].as_str().is_some_and(|name| name.ends_with(".m3u8")))
                    .filter(|r| carried(r[0].as_u64().unwrap_or(0)))
                    .filter_map(|r| r[4].as_u64())
                    .sum();
                let allowed = (part_bytes + playlist_bytes) * 8 / slow_kbps() + segment_ms;
                assert!(stood_ms <= allowed, "playback stood still {stood_ms} ms (allowed {allowed}): {report}");
            }
        } else {
            assert!(stall <= segment_ms, "playback stood still {stall} ms (allowed {segment_ms}): {report}");
        }
    }
}

#[tokio::test]
async fn shaka_video_js_and_the_ivs_player_switch_renditions_too() {
    let _alone = crate::ONE_AT_A_TIME.lock().await;
    let server = Server::with_args(&["--ffmpeg", "ffmpeg"]);
    for (player, container) in [
        ("shaka", ContainerFormat::FragmentedMp4),
        ("videojs", ContainerFormat::FragmentedMp4),
        ("ivs", ContainerFormat::Ts),
    ] {
        let label = format!("{player} {container:?}");
        let (playback_url, _publisher) =
            live_standard_channel(&server, ChannelLatencyMode::LowLatency, container, SEGMENT_SECONDS).await;
        // (Shaka 4 fails to load a low-latency fMP4 playlist of one segment, ours or not: every
        // player here starts once the playlists hold a few.)
        tokio::time::sleep(Duration::from_secs(8)).await;
        let result = watch(player, &playback_url, 30).await;
        assert_eq!(result["fatal"], serde_json::json!([]), "{label}: {result}");
        let levels = levels(&result);
        let throttled_at = result["throttled_at"].as_u64().expect("the network was throttled");
        let before = levels.iter().rev().find(|(at, _)| *at < throttled_at).map(|(_, h)| *h).unwrap_or(0);
        assert!(before > 160, "{label}: plays above 160p on the fast link: {levels:?}");
        let down = levels.iter().find(|(at, height)| *at >= throttled_at && *height < before);
        let (at, _) = down.unwrap_or_else(|| panic!("{label}: no switch down after the throttle: {levels:?}"));
        let after_ms = at - throttled_at;
        // (The IVS player's ABR on its low-latency stream is the slowest to react: 12–13 s.)
        assert!(after_ms <= 15_000, "{label}: switched down {after_ms} ms after the throttle: {levels:?}");
        println!(
            "{label}: levels {levels:?}, switched down {after_ms} ms after the throttle, longest stall {} ms",
            result["longest_time_stall_ms"]
        );
    }
}

#[tokio::test]
async fn hls_js_switches_between_multitrack_renditions() {
    use aws_sdk_ivs::types::{
        ChannelType, MultitrackInputConfiguration, MultitrackMaximumResolution, MultitrackPolicy,
    };

    use crate::multitrack_broadcaster::{MultitrackPublisher, configured, three_tracks_of_720p};
    let _alone = crate::ONE_AT_A_TIME.lock().await;
    let server = Server::start();
    let out = server
        .client()
        .create_channel()
        .r#type(ChannelType::StandardChannelType)
        .latency_mode(ChannelLatencyMode::NormalLatency)
        .container_format(ContainerFormat::FragmentedMp4)
        .multitrack_input_configuration(
            MultitrackInputConfiguration::builder()
                .enabled(true)
                .policy(MultitrackPolicy::Require)
                .maximum_resolution(MultitrackMaximumResolution::FullHd)
                .build(),
        )
        .send()
        .await
        .unwrap();
    let channel = out.channel().unwrap();
    let stream_key = out.stream_key().unwrap().value().unwrap();
    let (tracks, url) = configured(&server, stream_key, three_tracks_of_720p());
    let _publisher = MultitrackPublisher::start(&server, &url, &tracks);
    wait_live(&server, channel.arn().unwrap(), Duration::from_secs(20)).await;
    let playback_url = channel.playback_url().unwrap().to_owned();
    wait_for_segments(&server, &playback_url, 3).await;
    // The throttle leaves room for the lowest track (as measured, audio included) and little more.
    let path = format!("/{}", playback_url.split_once("://").unwrap().1.split_once('/').unwrap().1);
    // (A track is listed once it has a segment: on a busy machine the last encoder's first
    // segment may come a little after the source's third.)
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let (multivariant, mut bandwidths) = loop {
        let multivariant = crate::harness::raw_request(&server, "GET", &path, &[], "").body;
        let bandwidths: Vec<u64> = multivariant
            .lines()
            .filter(|l| l.starts_with("#EXT-X-STREAM-INF:"))
            .map(|l| l.split("BANDWIDTH=").nth(1).unwrap().split(',').next().unwrap().parse().unwrap())
            .collect();
        if bandwidths.len() >= 3 || std::time::Instant::now() > deadline {
            break (multivariant, bandwidths);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    bandwidths.sort_unstable();
    assert_eq!(bandwidths.len(), 3, "{multivariant}");
    let kbps = bandwidths[0] * 6 / 5 / 1000;
    let throttle = format!(r#"{{"fast_kbps": 10000, "after_ms": 8000, "kbps": {kbps}}}"#);
    let hls_config = ENV[0];
    let result = tokio::task::spawn_blocking(move || {
        play_with("hls.js", 25, &[&playback_url], &[hls_config, ("PLAY_THROTTLE", &throttle)]).remove(0)
    })
    .await
    .unwrap();
    assert_eq!(result["fatal"], serde_json::json!([]), "{result}");
    let heights: Vec<u64> = result["level_heights"].as_array().unwrap().iter().filter_map(|h| h.as_u64()).collect();
    assert_eq!(heights, [360, 480, 720], "hls.js sees the three tracks");
    let levels = levels(&result);
    assert_eq!(levels[0].1, 720, "starts on the top track: {levels:?}");
    let throttled_at = result["throttled_at"].as_u64().expect("the network was throttled");
    let decisions = levels_of(&result["level_decisions"]);
    let report = format!(
        "throttled to {kbps} kbit/s at {throttled_at}: levels {levels:?}, decisions {decisions:?}, stalls {}",
        result["time_stalls"]
    );
    println!("hls.js multitrack: {report}");
    let decided = decisions.iter().find(|(at, height)| *at >= throttled_at && *height < 720);
    assert!(decided.is_some_and(|(at, _)| at - throttled_at <= 10_000), "no switch down within 10 s: {report}");
    assert!(levels.iter().any(|(at, height)| *at >= throttled_at && *height < 720), "never played lower: {report}");
    // hls.js probes the top track again a few seconds after switching down, 3.5 Mbit/s over a
    // link of 1.2. When it abandons that fetch the picture stands still 1.7-1.9 s (measured);
    // when it does not, it waits for the whole top-track segment to cross the slow link (5.5 s
    // measured on a busy CI machine), the player's choice. So: up to two segments, or after such
    // a probe, the time one top-track segment takes over the slow link plus one segment; and
    // the probe must end with hls.js deciding down again.
    let first_down = decided.unwrap().0;
    let probe = decisions.iter().find(|(at, height)| *at > first_down && *height == 720);
    let segment_ms = u64::from(SEGMENT_SECONDS) * 1000;
    let allowed_ms = match probe {
        None => 2 * segment_ms,
        Some(&(probed_at, _)) => {
            assert!(
                decisions.iter().any(|(at, height)| *at > probed_at && *height < 720),
                "hls.js stayed on the top track after probing it: {report}"
            );
            bandwidths[2] * segment_ms / (kbps * 1000) + segment_ms
        }
    };
    let stall = result["longest_time_stall_ms"].as_u64().unwrap();
    assert!(stall <= allowed_ms, "playback stood still {stall} ms (allowed {allowed_ms} ms): {report}");
}

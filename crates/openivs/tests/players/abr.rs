//! Adaptive bitrate as a viewer meets it: hls.js in headless Chromium plays a STANDARD channel's
//! ladder (a 720p30 clock broadcaster, transcoded by the server's ffmpeg), starts on the top
//! rendition on a fast link, and switches down within 10 s once the page's network is throttled
//! (Chrome DevTools Protocol), with no fatal error and no stall longer than one segment.

use std::time::Duration;

use aws_sdk_ivs::types::{ChannelLatencyMode, ContainerFormat};

use crate::clock::ClockPublisher;
use crate::harness::{Server, rtmps_url, wait_live};
use crate::web_players::play_with;

/// Seconds between the broadcaster's keyframes, so the length of a segment.
const SEGMENT_SECONDS: u32 = 2;

async fn switches_down(container: ContainerFormat) {
    let server = Server::with_args(&["--ffmpeg", "ffmpeg"]);
    let out = server
        .client()
        .create_channel()
        .latency_mode(ChannelLatencyMode::LowLatency)
        .container_format(container.clone())
        .send()
        .await
        .unwrap();
    let channel = out.channel().unwrap();
    let arn = channel.arn().unwrap().to_owned();
    let _publisher = ClockPublisher::start_sized(&rtmps_url(&out), 30 * SEGMENT_SECONDS, (1280, 720), "2500k");
    wait_live(&server, &arn, Duration::from_secs(20)).await;
    let playback_url = channel.playback_url().unwrap().to_owned();
    // A fast link to begin with (hls.js otherwise starts from a 500 kbit/s guess), then 600
    // kbit/s from 12 s after the page opens: room for the 160p rendition, not for the 720p source.
    let env = [
        ("PLAY_HLS_CONFIG", r#"{"abrEwmaDefaultEstimate": 20000000}"#),
        ("PLAY_THROTTLE", r#"{"after_ms": 12000, "kbps": 600}"#),
    ];
    let result =
        tokio::task::spawn_blocking(move || play_with("hls.js", 25, &[&playback_url], &env)).await.unwrap().remove(0);
    let label = format!("{container:?}");
    assert_eq!(result["fatal"], serde_json::json!([]), "{label}: {result}");
    let heights: Vec<u64> = result["level_heights"].as_array().unwrap().iter().filter_map(|h| h.as_u64()).collect();
    assert_eq!(heights, [160, 360, 480, 720], "{label}: hls.js sees the ladder (audio_only aside)");
    let levels = result["levels"].as_array().unwrap();
    assert_eq!(levels[0][1], 720, "{label}: starts on the top rendition: {levels:?}");
    let throttled_at = result["throttled_at"].as_u64().expect("the network was throttled");
    let down = levels
        .iter()
        .find(|l| l[0].as_u64().unwrap() >= throttled_at && l[1].as_u64().unwrap() < 720)
        .unwrap_or_else(|| panic!("{label}: no switch down after the throttle: {levels:?}"));
    let after_ms = down[0].as_u64().unwrap() - throttled_at;
    assert!(after_ms <= 10_000, "{label}: switched down {after_ms} ms after the throttle: {levels:?}");
    let stall = result["longest_time_stall_ms"].as_u64().unwrap();
    assert!(
        stall <= u64::from(SEGMENT_SECONDS) * 1000,
        "{label}: playback stood still {stall} ms (stalls {}); levels {levels:?}",
        result["time_stalls"]
    );
    println!(
        "{label}: levels {}, switched down {after_ms} ms after the throttle, longest stall {stall} ms",
        result["levels"]
    );
}

#[tokio::test]
async fn hls_js_switches_down_when_the_network_slows() {
    let _alone = crate::ONE_AT_A_TIME.lock().await;
    switches_down(ContainerFormat::Ts).await;
    switches_down(ContainerFormat::FragmentedMp4).await;
}

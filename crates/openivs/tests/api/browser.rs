//! Real web players in a real browser (Debian's headless Chromium, driven by playwright-core):
//! hls.js, Shaka Player and video.js (VHS) each play every combination of container format and
//! latency mode for 20 s with `currentTime` advancing and no fatal error (hls.js also sees
//! `EXT-X-PROGRAM-DATE-TIME`); the latency each player sees and its longest stall are reported
//! (`-- --nocapture`). video.js on MPEG-TS low-latency channels is known to fail (issue 8): its
//! result there is reported, not asserted, until that is fixed.
//!
//! Needs Node.js, `/usr/bin/chromium` and `tests/browser/node_modules` (scripts/test installs
//! them, .ci/run installs Chromium); fails, not skips, without them.

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use aws_sdk_ivs::types::{ChannelLatencyMode, ContainerFormat};

use crate::harness::Server;
use crate::ingest::{Publisher, pattern_720p, wait_live};

const SECONDS: u32 = 20;

/// Runs play.mjs: `player` plays every URL for [`SECONDS`] in headless Chromium.
fn play(player: &str, urls: &[&str]) -> Vec<serde_json::Value> {
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/browser/play.mjs");
    let output = Command::new("node")
        .arg(&script)
        .arg(player)
        .arg(SECONDS.to_string())
        .args(urls)
        .output()
        .expect("Node.js must be installed to run the browser test");
    assert!(
        output.status.success(),
        "the browser run failed (is Chromium at /usr/bin/chromium and tests/browser/node_modules installed?): {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let results: Vec<serde_json::Value> = serde_json::from_slice(&output.stdout).expect("play.mjs prints JSON");
    assert_eq!(results.len(), urls.len());
    results
}

#[tokio::test]
async fn web_players_play_every_container_and_latency_mode() {
    let server = Server::start();
    let client = server.client();
    let mut publishers = Vec::new();
    let mut cases = Vec::new();
    for container in [ContainerFormat::Ts, ContainerFormat::FragmentedMp4] {
        for latency in [ChannelLatencyMode::LowLatency, ChannelLatencyMode::NormalLatency] {
            let out = client
                .create_channel()
                .container_format(container.clone())
                .latency_mode(latency.clone())
                .send()
                .await
                .unwrap();
            let channel = out.channel().unwrap();
            let url = format!(
                "rtmps://{}/app/{}",
                channel.ingest_endpoint().unwrap(),
                out.stream_key().unwrap().value().unwrap()
            );
            publishers.push(Publisher::start(&url, pattern_720p()));
            cases.push((
                channel.arn().unwrap().to_owned(),
                channel.playback_url().unwrap().to_owned(),
                container.clone(),
                latency,
            ));
        }
    }
    for (arn, ..) in &cases {
        wait_live(&server, arn, Duration::from_secs(20)).await;
    }
    let urls: Vec<&str> = cases.iter().map(|(_, url, ..)| url.as_str()).collect();
    for player in ["hls.js", "shaka", "videojs"] {
        let results = play(player, &urls);
        for (result, (_, url, container, latency)) in results.iter().zip(&cases) {
            let label = format!("{player} {container:?}/{latency:?} {url}");
            let stall = result["longest_stall_ms"].as_f64().unwrap_or(0.0);
            let mut latencies: Vec<f64> =
                result["latencies_ms"].as_array().unwrap().iter().filter_map(|v| v.as_f64()).collect();
            latencies.sort_by(f64::total_cmp);
            let median = latencies.get(latencies.len() / 2).map_or("-".to_owned(), |m| format!("{m:.0} ms"));
            // Latency and stalls are reported, not asserted: timing on a shared 2-core machine
            // is a measurement (BENCHMARKS.md), not a pass/fail criterion.
            println!("{label}: latency median {median}, longest stall {stall:.0} ms, fatal {}", result["fatal"]);
            let known_failure =
                player == "videojs" && *container == ContainerFormat::Ts && *latency == ChannelLatencyMode::LowLatency;
            if known_failure {
                continue;
            }
            assert_eq!(result["supported"], true, "{label}: MSE unsupported");
            assert_eq!(result["mse_h264_aac"], true, "{label}: H.264/AAC unsupported in this Chromium");
            assert_eq!(result["fatal"], serde_json::json!([]), "{label}");
            let start = result["start_time"].as_f64().unwrap_or(0.0);
            let end = result["end_time"].as_f64().unwrap_or(0.0);
            assert!(start > 0.0, "{label}: playback never started: {result}");
            assert!(end - start >= f64::from(SECONDS) * 0.75, "{label}: currentTime went from {start} to {end}");
            if player == "hls.js" {
                assert!(!latencies.is_empty(), "{label}: no EXT-X-PROGRAM-DATE-TIME seen by hls.js");
            }
        }
    }
    drop(publishers);
}

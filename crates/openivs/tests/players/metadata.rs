//! Timed metadata as players raise it: hls.js (cues on its metadata text track) and the Amazon
//! IVS Player (`TEXT_METADATA_CUE`) receive every PutMetadata payload, in order and intact
//! (JSON, UTF-8 beyond ASCII, a full kilobyte), with IVS's owner, in MPEG-TS and fMP4 and both
//! latency modes. The delay from PutMetadata's answer to the cue becoming active is printed next
//! to the player's latency read from the picture: a cue should come when its picture does.
//!
//! Known: the IVS player on fMP4 channels now and then raises two cues sent 0.3 s apart in
//! swapped order (it reads them from `emsg` version 0 under `urn:twitch:id3`, whose time base it
//! applies in a way we could not pin down); there every payload must arrive intact, and the order
//! is printed, not asserted. (For
//! hls.js a cue counts once it is on its metadata track: hls.js jumps forward to its live
//! position after starting on NORMAL channels, and a cue it jumps over never becomes active.)

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use aws_sdk_ivs::types::ContainerFormat;

use crate::harness::Server;
use crate::web_players::{Case, live_channels, percentiles, play, wait_for_segments};

/// Seconds each player is watched for once its picture moves (NORMAL channels run ~7 s behind).
const SECONDS: u32 = 16;

fn epoch_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_millis() as i64
}

fn payloads() -> Vec<String> {
    let mut payloads = vec![
        r#"{"question":"Which colour?","answers":["red","blue"],"id":1}"#.to_owned(),
        "grüße 👋 — ünïcødé ✓".to_owned(),
        format!("{{\"pad\":\"{}\"}}", "x".repeat(1024 - 10)),
    ];
    payloads.extend((0..5).map(|i| format!("{{\"cue\":{i}}}")));
    payloads
}

/// Plays the cases with `player` for `seconds` while PutMetadata sends `payloads` to every
/// channel, `spacing` apart, once each page's session has started. Returns the results and each
/// payload's answer time per case.
async fn play_with_metadata(
    server: &Server,
    player: &str,
    cases: &[Case],
    seconds: u32,
    payloads: &[String],
    spacing: Duration,
) -> (Vec<serde_json::Value>, Vec<Vec<i64>>) {
    let client = server.client();
    let viewers =
        async |arn: &str| client.get_stream().channel_arn(arn).send().await.unwrap().stream().unwrap().viewer_count();
    let mut before = Vec::new();
    for case in cases {
        before.push(viewers(&case.arn).await);
    }
    let urls: Vec<String> = cases.iter().map(|c| c.url.clone()).collect();
    let player_name = player.to_owned();
    let browser =
        std::thread::spawn(move || play(&player_name, seconds, &urls.iter().map(String::as_str).collect::<Vec<_>>()));
    // Each page holds a session once it fetches media: from then on what is sent is ahead of it.
    let deadline = std::time::Instant::now() + Duration::from_secs(40);
    for (case, before) in cases.iter().zip(before) {
        while viewers(&case.arn).await <= before {
            assert!(std::time::Instant::now() < deadline, "{player} never started {}", case.label);
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    // A player's first seconds: it buffers, then seeks to its live position, and a cue it seeks
    // over never fires. Metadata starts once the pages play (they start within about 1.5 s of
    // their first request).
    tokio::time::sleep(Duration::from_secs(4)).await;
    let mut answered = vec![Vec::new(); cases.len()];
    for payload in payloads {
        for (case, times) in cases.iter().zip(answered.iter_mut()) {
            client.put_metadata().channel_arn(&case.arn).metadata(payload).send().await.unwrap();
            times.push(epoch_ms());
        }
        tokio::time::sleep(spacing).await;
    }
    (browser.join().unwrap(), answered)
}

#[tokio::test]
async fn players_raise_every_payload_as_a_cue() {
    let _alone = crate::ONE_AT_A_TIME.lock().await;
    let server = Server::start();
    let expected = payloads();
    let mut failures = Vec::new();
    for container in [ContainerFormat::Ts, ContainerFormat::FragmentedMp4] {
        let (_publishers, cases) = live_channels(&server, &container).await;
        // Players that join a stream in its first seconds, when the playlist is short, jump to
        // their live position once it grows and drop the cues they had; viewers join streams
        // that run. Wait until each playlist lists 5 segments.
        for case in &cases {
            wait_for_segments(&server, &case.url, 5).await;
        }
        for player in ["hls.js", "ivs"] {
            let (results, answered) =
                play_with_metadata(&server, player, &cases, SECONDS, &expected, Duration::from_millis(300)).await;
            for ((case, result), answered) in cases.iter().zip(&results).zip(&answered) {
                let cues = result["metadata"].as_array().unwrap();
                let texts: Vec<&str> = cues.iter().map(|c| c["text"].as_str().unwrap_or("")).collect();
                let short: Vec<String> = texts.iter().map(|t| t.chars().take(24).collect()).collect();
                if texts != expected {
                    // The IVS player on fMP4 now and then raises two cues 0.3 s apart in swapped
                    // order (see the module comment): every payload must still arrive, intact.
                    let mut sorted = texts.clone();
                    sorted.sort_unstable();
                    let mut wanted: Vec<&str> = expected.iter().map(String::as_str).collect();
                    wanted.sort_unstable();
                    if player == "ivs" && case.container == ContainerFormat::FragmentedMp4 && sorted == wanted {
                        println!("known: {player} {} raised the cues out of order: {short:?}", case.label);
                    } else {
                        failures.push(format!("{player} {}: cues {short:?}", case.label));
                    }
                }
                for cue in cues {
                    if cue["owner"] != "metadata.live-video.net" {
                        failures.push(format!("{player} {}: owner of {cue}", case.label));
                    }
                }
                // When each cue became active (hls.js records cues it seeks over without a time).
                let mut delays: Vec<i64> =
                    cues.iter().zip(answered).filter_map(|(cue, at)| Some(cue["at"].as_i64()? - at)).collect();
                delays.sort_unstable();
                if delays.is_empty() {
                    continue;
                }
                let picture = percentiles(result, "picture_latencies_ms").map_or(f64::NAN, |(p50, _)| p50);
                println!(
                    "{player} {}: cue {} ms (p50) after PutMetadata's answer, {} ms at most; picture latency {picture:.0} ms",
                    case.label,
                    delays[delays.len() / 2],
                    delays[delays.len() - 1]
                );
            }
        }
    }
    assert!(failures.is_empty(), "every payload, in order, intact, with IVS's owner:\n{}", failures.join("\n"));
}

/// From PutMetadata's answer to the cue becoming active in hls.js, 50 calls per channel (LOW and
/// NORMAL, MPEG-TS), next to the player's latency read from the picture: the figures of
/// BENCHMARKS.md. Ignored (run by hand): `cargo test -p openivs --test players -- --ignored
/// --nocapture metadata_latency`.
#[tokio::test]
#[ignore]
async fn metadata_latency() {
    let _alone = crate::ONE_AT_A_TIME.lock().await;
    let server = Server::start();
    let (_publishers, cases) = live_channels(&server, &ContainerFormat::Ts).await;
    for case in &cases {
        wait_for_segments(&server, &case.url, 5).await;
    }
    let payloads: Vec<String> = (0..50).map(|i| format!("{{\"n\":{i}}}")).collect();
    // 5 calls a second per channel is IVS's limit: stay just under it.
    let (results, answered) =
        play_with_metadata(&server, "hls.js", &cases, 30, &payloads, Duration::from_millis(210)).await;
    println!("| channel | cues | p50 ms | p95 ms | picture latency p50 ms | p95 beyond the picture |");
    println!("|---|---|---|---|---|---|");
    for ((case, result), answered) in cases.iter().zip(&results).zip(&answered) {
        let cues = result["metadata"].as_array().unwrap();
        let mut delays: Vec<i64> =
            cues.iter().zip(answered).filter_map(|(cue, at)| Some(cue["at"].as_i64()? - at)).collect();
        delays.sort_unstable();
        assert!(!delays.is_empty(), "{}: no cue fired: {result}", case.label);
        let at = |q: f64| delays[((delays.len() - 1) as f64 * q).round() as usize];
        let picture = percentiles(result, "picture_latencies_ms").map_or(f64::NAN, |(p50, _)| p50);
        println!(
            "| hls.js {} | {}/{} | {} | {} | {picture:.0} | {:.0} ms |",
            case.label,
            delays.len(),
            payloads.len(),
            at(0.5),
            at(0.95),
            at(0.95) as f64 - picture
        );
    }
}

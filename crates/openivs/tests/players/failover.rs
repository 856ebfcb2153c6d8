//! A failover slate as a viewer meets it, with hls.js in headless Chromium: the broadcaster is
//! killed and comes back 5 s later; the player keeps playing through the slate and the comeback,
//! with no fatal error and its `currentTime` always advancing, and ends up on the broadcaster's
//! picture again.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use aws_sdk_ivs::types::ChannelLatencyMode;

use crate::clock::ClockPublisher;
use crate::harness::rtmps_url;
use crate::harness::{Server, wait_live};
use crate::web_players::play;

/// Longest the player's time may stand still.
const STALL_LIMIT_MS: u64 = 1000;

#[tokio::test]
async fn hls_js_plays_through_the_slate_and_the_comeback() {
    let _alone = crate::ONE_AT_A_TIME.lock().await;
    let server = Server::start();
    let client = server.client();
    let slate = client.create_failover_slate_configuration().send().await.unwrap();
    let slate_arn = slate.failover_slate_configuration().unwrap().arn();
    // A viewer whose buffer outlasts the 3 s before the slate starts: hls.js plays NORMAL
    // channels 3 target durations (6 s) behind, once the playlist is that long (a player that
    // starts with the stream starts at its first segment, closer to live). One closer to live
    // than the activation threshold waits for the slate (README, Failover slates).
    let out = client
        .create_channel()
        .latency_mode(ChannelLatencyMode::NormalLatency)
        .failover_slate_configuration_arn(slate_arn)
        .send()
        .await
        .unwrap();
    let channel = out.channel().unwrap();
    let arn = channel.arn().unwrap().to_owned();
    let url = rtmps_url(&out);
    let publisher = ClockPublisher::start(&url, 30);
    wait_live(&server, &arn, Duration::from_secs(20)).await;
    tokio::time::sleep(Duration::from_secs(10)).await;
    let playback_url = channel.playback_url().unwrap().to_owned();
    let player = std::thread::spawn(move || play("hls.js", 30, &[&playback_url]));

    // Once the page plays (and has settled), the broadcaster drops; it is back 5 s later.
    let deadline = Instant::now() + Duration::from_secs(40);
    loop {
        let stream = client.get_stream().channel_arn(&arn).send().await.unwrap();
        if stream.stream().unwrap().viewer_count() >= 1 {
            break;
        }
        assert!(Instant::now() < deadline, "the page never started playing");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    tokio::time::sleep(Duration::from_secs(8)).await;
    drop(publisher);
    let dropped_at = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_millis() as u64;
    tokio::time::sleep(Duration::from_secs(5)).await;
    let _back = ClockPublisher::start(&url, 30);
    let back_at = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_millis() as u64;

    let results = tokio::task::spawn_blocking(move || player.join().unwrap()).await.unwrap();
    let result = &results[0];
    println!(
        "hls.js through the slate: fatal {}, longest time stall {} ms (stalls {}; dropped at {dropped_at}, back at {back_at}), picture stall {} ms, played {:.1} s",
        result["fatal"],
        result["time_stalls"],
        result["longest_time_stall_ms"],
        result["longest_stall_ms"],
        result["end_time"].as_f64().unwrap_or(0.0) - result["start_time"].as_f64().unwrap_or(0.0)
    );
    assert_eq!(result["fatal"].as_array().map(Vec::len), Some(0), "{result}");
    let stall = result["longest_time_stall_ms"].as_u64().unwrap();
    assert!(stall < STALL_LIMIT_MS, "currentTime stood still for {stall} ms: {result}");
    let played = result["end_time"].as_f64().unwrap() - result["start_time"].as_f64().unwrap();
    assert!(played > 25.0, "played {played} s of 30: {result}");
    // The broadcaster's picture (its clock) moves again after the comeback.
    let last_advance = result["last_advance_at"].as_u64().unwrap();
    assert!(last_advance > back_at + 2000, "the picture froze for good at the drop: {result}");
}

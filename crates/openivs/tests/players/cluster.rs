//! A cluster as a viewer meets it: three nodes on one PostgreSQL, ffmpeg publishing a LOW
//! channel to node a, and hls.js in Chromium playing it through a, b and c at once (b and c pull
//! it from a). Every page plays with its picture moving and no fatal error, and the latency read
//! from the picture through b and c is printed beside a's (the server's share of the pull is
//! asserted loosely here; the cluster benchmark measures it).

use std::time::Duration;

use aws_sdk_ivs::types::ChannelLatencyMode;

use crate::clock::ClockPublisher;
use crate::harness::wait_live;
use crate::postgres::Postgres;
use crate::web_players::{percentiles, play};

#[tokio::test]
async fn hls_js_plays_a_stream_through_nodes_that_do_not_ingest_it() {
    let _alone = crate::ONE_AT_A_TIME.lock().await;
    let postgres = Postgres::start();
    let (a, b, c) = (postgres.node("a"), postgres.node("b"), postgres.node("c"));
    let created = a.client().create_channel().latency_mode(ChannelLatencyMode::LowLatency).send().await.unwrap();
    let channel = created.channel().unwrap();
    let arn = channel.arn().unwrap().to_owned();
    let playback_url = channel.playback_url().unwrap().to_owned();
    let key = created.stream_key().unwrap().value().unwrap();
    let _publisher = ClockPublisher::start(&format!("rtmps://{}/app/{key}", a.rtmps_address), 30);
    wait_live(&a, &arn, Duration::from_secs(20)).await;
    // The same playback URL, through each node (the nodes listen on ports of their own here;
    // behind a load balancer they share one host name).
    let a_host = format!("127.0.0.1:{}", a.port);
    assert!(playback_url.contains(&a_host), "{playback_url}");
    let urls: Vec<String> =
        [&a, &b, &c].iter().map(|node| playback_url.replace(&a_host, &format!("127.0.0.1:{}", node.port))).collect();
    let results = play("hls.js", 12, &urls.iter().map(String::as_str).collect::<Vec<_>>());

    let mut medians = Vec::new();
    for (name, result) in ["a", "b", "c"].iter().zip(&results) {
        assert_eq!(result["fatal"], serde_json::json!([]), "through {name}: {result}");
        let advanced = result["picture_seconds"].as_f64().unwrap_or(0.0);
        assert!(advanced >= 9.0, "through {name}, the picture did not keep moving: {result}");
        let (median, p95) = percentiles(result, "picture_latencies_ms")
            .unwrap_or_else(|| panic!("through {name}: no clock read from the picture: {result}"));
        println!("through {name}: latency {:.2} s (p95 {:.2} s)", median / 1000.0, p95 / 1000.0);
        medians.push(median);
    }
    for (name, median) in ["b", "c"].iter().zip(&medians[1..]) {
        assert!(*median <= medians[0] + 1_500.0, "through {name}, {median} ms behind; through a {} ms", medians[0]);
    }
}

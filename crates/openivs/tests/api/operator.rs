//! What an operator relies on: `/metrics` read by the Prometheus project's own parser (PyPI
//! `prometheus-client`, OpenMetrics) as a stream starts, is watched and ends; `/healthz` and
//! `/readyz`; SIGTERM draining (not ready, API writes and new publishes refused, live streams
//! given time to end) and its time limit.

use std::collections::HashMap;
use std::io::Write;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::harness::{Server, raw_request, raw_request_at, rtmps_url, wait_live, wait_offline};
use crate::ingest::{Publisher, pattern_720p};
use crate::playback::path_of;

/// One sample of a scrape: its name, labels and value.
#[derive(Debug, Clone)]
pub(crate) struct Sample {
    name: String,
    labels: HashMap<String, String>,
    value: f64,
}

/// `/metrics` as the Prometheus client library's OpenMetrics parser reads it (which refuses
/// text that does not follow the format).
fn scrape_with(server: &Server, headers: &[(String, String)]) -> Vec<Sample> {
    parse_metrics(raw_request(server, "GET", "/metrics", headers, ""))
}

/// The metrics of every node (one, outside the API suite's cluster run): each process counts
/// what it did.
pub(crate) fn scrape_every_node(server: &Server) -> Vec<Vec<Sample>> {
    let nodes = server.node_http_addresses();
    nodes.iter().map(|node| parse_metrics(raw_request_at(node, "GET", "/metrics", &[], ""))).collect()
}

/// The sum over nodes of [`value`].
pub(crate) fn total(nodes: &[Vec<Sample>], name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    nodes.iter().filter_map(|samples| value(samples, name, labels)).reduce(|a, b| a + b)
}

fn parse_metrics(response: crate::harness::RawResponse) -> Vec<Sample> {
    assert_eq!(response.status, 200, "{}", response.body);
    assert!(response.header("content-type").is_some_and(|t| t.starts_with("application/openmetrics-text")));
    let script = "import sys, json\n\
        from prometheus_client.openmetrics.parser import text_string_to_metric_families as parse\n\
        print(json.dumps([[s.name, s.labels, s.value] for f in parse(sys.stdin.read()) for s in f.samples]))";
    let mut parser = Command::new("python3")
        .args(["-c", script])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("python3 runs");
    parser.stdin.take().unwrap().write_all(response.body.as_bytes()).unwrap();
    let output = parser.wait_with_output().unwrap();
    assert!(
        output.status.success(),
        "the OpenMetrics parser refuses /metrics (pip install prometheus-client; scripts/test installs it): {}\n{}",
        String::from_utf8_lossy(&output.stderr),
        response.body
    );
    let parsed: Vec<(String, HashMap<String, String>, f64)> = serde_json::from_slice(&output.stdout).unwrap();
    parsed.into_iter().map(|(name, labels, value)| Sample { name, labels, value }).collect()
}

pub(crate) fn scrape(server: &Server) -> Vec<Sample> {
    scrape_with(server, &[])
}

/// The value of the sample named `name` whose labels include `labels`.
pub(crate) fn value(samples: &[Sample], name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    samples
        .iter()
        .find(|s| s.name == name && labels.iter().all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v)))
        .map(|s| s.value)
}

/// Scrapes until `ready` holds (at most `limit`); the last scrape.
async fn scrape_until(server: &Server, limit: Duration, ready: impl Fn(&[Sample]) -> bool) -> Vec<Sample> {
    let deadline = Instant::now() + limit;
    loop {
        let samples = scrape(server);
        if ready(&samples) {
            return samples;
        }
        assert!(Instant::now() < deadline, "the metrics never got there: {samples:#?}");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

#[tokio::test]
async fn metrics_follow_a_stream_from_start_to_end() {
    // (One node: the metrics are a process's own.)
    let server = Server::single_node(&[]);
    let out = server.client().create_channel().name("metered").send().await.unwrap();
    let channel = out.channel().unwrap();
    let arn = channel.arn().unwrap().to_owned();
    let playback_url = channel.playback_url().unwrap().to_owned();
    let of_channel = [("channel_arn", arn.as_str())];

    // Before the stream: the API request is counted and timed; no stream, no channel series.
    let idle = scrape(&server);
    let created = [("operation", "CreateChannel"), ("status", "200")];
    assert!(value(&idle, "openivs_api_requests_total", &created).is_some_and(|n| n >= 1.0), "{idle:#?}");
    let timed = [("operation", "CreateChannel")];
    assert!(value(&idle, "openivs_api_request_duration_seconds_count", &timed).is_some_and(|n| n >= 1.0));
    assert!(value(&idle, "openivs_store_operation_duration_seconds_count", &[("operation", "apply")]).is_some());
    for health in ["HEALTHY", "STARVING", "UNKNOWN"] {
        assert_eq!(value(&idle, "openivs_live_streams", &[("health", health)]), Some(0.0), "{health}");
    }
    assert!(!idle.iter().any(|s| s.labels.contains_key("channel_arn")), "no live channel yet");
    assert_eq!(value(&idle, "openivs_transcode_capacity_units", &[]), Some(4.0));

    // Live, and watched: IVS's CloudWatch series for the channel.
    let mut publisher = Publisher::start(&rtmps_url(&out), pattern_720p());
    wait_live(&server, &arn, Duration::from_secs(20)).await;
    let multivariant = raw_request(&server, "GET", &path_of(&playback_url), &[], "");
    assert_eq!(multivariant.status, 200);
    let media = multivariant.body.lines().find(|l| l.starts_with('/')).expect("a variant").to_owned();
    // (A viewer session counts once it fetched media: its media playlist, before each scrape.)
    let watch = || {
        let playlist = raw_request(&server, "GET", &media, &[], "");
        assert_eq!(playlist.status, 200, "{media}: {}", playlist.body);
    };
    watch();
    let live = scrape_until(&server, Duration::from_secs(20), |samples| {
        watch();
        value(samples, "openivs_channel_keyframe_interval_seconds", &of_channel).is_some_and(|s| s > 0.0)
            && value(samples, "openivs_live_streams", &[("health", "HEALTHY")]) == Some(1.0)
    })
    .await;
    let views = value(&live, "openivs_channel_concurrent_views", &of_channel).unwrap();
    assert_eq!(views, 1.0, "one viewer session");
    let video = value(&live, "openivs_channel_ingest_video_bitrate_bits_per_second", &of_channel).unwrap();
    assert!((1_500_000.0..4_000_000.0).contains(&video), "2.5 Mbit/s sent: {video}");
    let audio = value(&live, "openivs_channel_ingest_audio_bitrate_bits_per_second", &of_channel).unwrap();
    assert!((60_000.0..250_000.0).contains(&audio), "128 kbit/s sent: {audio}");
    let framerate = value(&live, "openivs_channel_ingest_framerate", &of_channel).unwrap();
    assert!((framerate - 30.0).abs() < 1.5, "{framerate}");
    let keyframes = value(&live, "openivs_channel_keyframe_interval_seconds", &of_channel).unwrap();
    assert!((keyframes - 2.0).abs() < 0.1, "a keyframe every 60 frames: {keyframes}");
    let playback = |kind: &str| value(&live, "openivs_playback_requests_total", &[("kind", kind), ("status", "200")]);
    assert_eq!(playback("multivariant"), Some(1.0));
    assert!(playback("playlist").is_some_and(|n| n >= 1.0));
    assert!(value(&live, "openivs_playback_sent_bytes_total", &[]).is_some_and(|b| b > 0.0));

    // Ended: the channel's series are gone.
    publisher.kill();
    wait_offline(&server, &arn, Duration::from_secs(10)).await;
    let ended = scrape(&server);
    assert!(!ended.iter().any(|s| s.labels.contains_key("channel_arn")), "{ended:#?}");
    assert_eq!(value(&ended, "openivs_live_streams", &[("health", "HEALTHY")]), Some(0.0));
}

#[tokio::test]
async fn metrics_can_be_protected_or_turned_off() {
    let protected = Server::with_args(&["--metrics-token", "scrape-secret"]);
    let refused = raw_request(&protected, "GET", "/metrics", &[], "");
    assert_eq!(refused.status, 401);
    let wrong = [("authorization".to_owned(), "Bearer nope".to_owned())];
    assert_eq!(raw_request(&protected, "GET", "/metrics", &wrong, "").status, 401);
    let bearer = [("authorization".to_owned(), "Bearer scrape-secret".to_owned())];
    assert!(!scrape_with(&protected, &bearer).is_empty());
    assert!(!protected.log_text().contains("scrape-secret"), "the token is not logged");

    let off = Server::with_args(&["--metrics", "false"]);
    assert_eq!(raw_request(&off, "GET", "/metrics", &[], "").status, 404);
}

#[tokio::test]
async fn sigterm_drains_then_exits() {
    // (One node: its own readiness and drain.)
    let mut server = Server::single_node(&["--drain-timeout", "20"]);
    assert_eq!(raw_request(&server, "GET", "/healthz", &[], "").status, 200);
    let ready = raw_request(&server, "GET", "/readyz", &[], "");
    assert_eq!((ready.status, ready.body.trim()), (200, "ready"));
    let client = server.client();
    let out = client.create_channel().send().await.unwrap();
    let arn = out.channel().unwrap().arn().unwrap().to_owned();
    let mut publisher = Publisher::start(&rtmps_url(&out), pattern_720p());
    wait_live(&server, &arn, Duration::from_secs(20)).await;

    server.signal("TERM");
    // Draining: not ready, still healthy; reads and the live stream go on; writes are refused.
    let deadline = Instant::now() + Duration::from_secs(5);
    while raw_request(&server, "GET", "/readyz", &[], "").status != 503 {
        assert!(Instant::now() < deadline, "readyz still ready after SIGTERM");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(raw_request(&server, "GET", "/readyz", &[], "").body.trim(), "draining");
    assert_eq!(raw_request(&server, "GET", "/healthz", &[], "").status, 200);
    client.get_channel().arn(&arn).send().await.unwrap();
    client.get_stream().channel_arn(&arn).send().await.expect("the stream is still live");
    let (code, status) = crate::harness::error_of(client.create_channel().send().await);
    assert_eq!((code.as_str(), status), ("ServiceUnavailable", 503));
    // No new publisher is taken (the ingest listeners are closed).
    let rtmps: std::net::SocketAddr = server.rtmps_address.parse().unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    while std::net::TcpStream::connect_timeout(&rtmps, Duration::from_secs(1)).is_ok() {
        assert!(Instant::now() < deadline, "the RTMPS listener still accepts while draining");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(server.exited_within(Duration::from_secs(1)).is_none(), "a live stream holds the drain");

    // The publisher stops: the server finishes at once, cleanly.
    publisher.kill();
    let status = server.exited_within(Duration::from_secs(15)).expect("the server exits once its streams end");
    assert!(status.success(), "{status:?}");
}

#[tokio::test]
async fn the_drain_has_a_time_limit() {
    // (One node: in the cluster run the load balancer may send the broadcaster to a node other
    // than the one signalled, which then has nothing to drain.)
    let mut server = Server::single_node(&["--drain-timeout", "2"]);
    let out = server.client().create_channel().send().await.unwrap();
    let arn = out.channel().unwrap().arn().unwrap().to_owned();
    let _publisher = Publisher::start(&rtmps_url(&out), pattern_720p());
    wait_live(&server, &arn, Duration::from_secs(20)).await;
    let signalled = Instant::now();
    server.signal("TERM");
    let status = server.exited_within(Duration::from_secs(15)).expect("the server exits after the drain limit");
    assert!(status.success(), "{status:?}");
    let took = signalled.elapsed();
    assert!(took >= Duration::from_secs(2), "stopped before the drain limit: {took:?}");
    assert!(took < Duration::from_secs(10), "{took:?}");
}

#[tokio::test]
async fn logs_can_be_json_lines_with_one_line_per_request() {
    use aws_sdk_ivs::operation::RequestId;
    let server = Server::with_args(&["--log-format", "json"]);
    let out = server.client().create_channel().send().await.unwrap();
    let request_id = out.request_id().expect("x-amzn-RequestId").to_owned();
    let stream_key = out.stream_key().unwrap().value().unwrap().to_owned();
    let deadline = Instant::now() + Duration::from_secs(5);
    let logged = loop {
        let log = server.log_text();
        let lines: Vec<serde_json::Value> = log
            .lines()
            .map(|line| serde_json::from_str(line).unwrap_or_else(|_| panic!("not a JSON line: {line}")))
            .collect();
        let requests: Vec<serde_json::Value> =
            lines.into_iter().filter(|l| l["fields"]["request_id"] == request_id.as_str()).collect();
        if !requests.is_empty() || Instant::now() > deadline {
            assert!(!log.contains(&stream_key), "a stream key in the log");
            break requests;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(logged.len(), 1, "one line per request: {logged:?}");
    let fields = &logged[0]["fields"];
    assert_eq!((fields["operation"].as_str(), fields["status"].as_u64()), (Some("CreateChannel"), Some(200)));
    assert!(fields["elapsed_us"].as_u64().is_some(), "{fields}");
    assert_eq!(logged[0]["level"], "INFO");
}

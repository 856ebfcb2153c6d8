//! hls.js in Chromium plays a LOW channel over HTTPS with HTTP/2 (`--http-tls`, the server's own
//! certificate, which the page trusts), as Apple's low-latency HLS guidance expects: every
//! request to the server went over `h2`. The channel is made with the AWS CLI trusting the same
//! certificate (`--ca-bundle`). Then the web console, over the same listener, opens and plays
//! that channel: its signed API calls go over HTTP/2 too.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use crate::clock::ClockPublisher;
use crate::harness::Server;
use crate::web_players::play;

/// `aws ivs …` against the server, trusting `ca`; its JSON output.
fn aws(server: &Server, ca: &Path, args: &[&str]) -> serde_json::Value {
    let output = Command::new("aws")
        .arg("ivs")
        .args(args)
        .args(["--endpoint-url", &server.endpoint, "--output", "json", "--ca-bundle"])
        .arg(ca)
        .env("AWS_ACCESS_KEY_ID", "test")
        .env("AWS_SECRET_ACCESS_KEY", "test")
        .env("AWS_DEFAULT_REGION", "us-west-2")
        .env("AWS_CONFIG_FILE", "/dev/null")
        .env("AWS_SHARED_CREDENTIALS_FILE", "/dev/null")
        .output()
        .expect("the AWS CLI must be installed (scripts/test installs it into .venv)");
    assert!(output.status.success(), "aws ivs {args:?}: {}", String::from_utf8_lossy(&output.stderr));
    serde_json::from_slice(&output.stdout).unwrap()
}

#[tokio::test]
async fn hls_js_plays_over_https_and_http2() {
    let _alone = crate::ONE_AT_A_TIME.lock().await;
    let server = Server::with_args(&["--http-tls", "true"]);
    let ca = server.data_dir.join("rtmps-certificate.pem");
    let created = aws(&server, &ca, &["create-channel", "--latency-mode", "LOW", "--name", "over-https"]);
    let channel = &created["channel"];
    let arn = channel["arn"].as_str().unwrap().to_owned();
    let playback_url = channel["playbackUrl"].as_str().unwrap().to_owned();
    assert!(playback_url.starts_with("https://"), "{playback_url}");
    let ingest = channel["ingestEndpoint"].as_str().unwrap();
    let key = created["streamKey"]["value"].as_str().unwrap();
    let _publisher = ClockPublisher::start(&format!("rtmps://{ingest}/app/{key}"), 30);
    let deadline = Instant::now() + Duration::from_secs(20);
    while aws(&server, &ca, &["list-streams"])["streams"].as_array().is_none_or(|s| s.is_empty()) {
        assert!(Instant::now() < deadline, "{arn} never went live");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let result = play("hls.js", 10, &[&playback_url]).remove(0);
    assert_eq!(result["fatal"], serde_json::json!([]), "{result}");
    let advanced = result["picture_seconds"].as_f64().unwrap_or(0.0);
    assert!(advanced >= 9.0, "the picture did not keep moving: {result}");
    assert_eq!(result["protocols"], serde_json::json!(["h2"]), "every request over HTTP/2");

    // The console over the same HTTPS listener: Chromium speaks HTTP/2 to it, so every API call
    // the page signs (with `host`) reaches the server with `:authority` and no `host` header
    // (refused as unsigned before the server read the authority).
    let link = crate::console::channel_page(&server, &arn);
    let report = crate::console::drive(&server, &["demo", &link, "over-https"]);
    assert!(report["preview"]["played"].as_f64().unwrap() > 3.5, "{report}");
    assert_eq!(report["accessibility"]["over-https"], serde_json::json!([]), "{report}");
}

//! Private channels as a browser sees them, with hls.js in headless Chromium: revoking a viewer
//! cuts off its playing session within 2 s while a session with a higher version plays on, and a
//! token's origin rule lets a page from an allowed origin play (the CORS header naming it) and
//! refuses a page from another origin.

use std::path::PathBuf;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::{Value, json};

use crate::clock::ClockPublisher;
use crate::harness::rtmps_url;
use crate::harness::{Server, wait_live};
use crate::tokens::{key_pair, now, token};
use crate::web_players::play;

/// How long revocation may take to cut a session off.
const REVOCATION_LIMIT_MS: u64 = 2000;

fn epoch_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_millis() as u64
}

fn responses(result: &Value) -> Vec<(u64, u64, String)> {
    result["responses"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| (r[0].as_u64().unwrap(), r[1].as_u64().unwrap(), r[2].as_str().unwrap().to_owned()))
        .collect()
}

/// A private LOW channel broadcasting the clock, and a key to sign its tokens with.
async fn private_channel(server: &Server) -> (String, String, ClockPublisher, PathBuf) {
    let client = server.client();
    let keys = std::env::temp_dir().join(format!("openivs-players-keys-{}", std::process::id()));
    let (private_key, public_key) = key_pair(&keys, "viewer-tokens");
    client.import_playback_key_pair().public_key_material(&public_key).send().await.unwrap();
    let out = client.create_channel().authorized(true).send().await.unwrap();
    let channel = out.channel().unwrap();
    let arn = channel.arn().unwrap().to_owned();
    let url = rtmps_url(&out);
    let publisher = ClockPublisher::start(&url, 30);
    wait_live(server, &arn, Duration::from_secs(20)).await;
    (arn, channel.playback_url().unwrap().to_owned(), publisher, private_key)
}

#[tokio::test]
async fn revocation_and_origins_in_the_browser() {
    let _alone = crate::ONE_AT_A_TIME.lock().await;
    let server = Server::start();
    let (arn, playback_url, _publisher, private_key) = private_channel(&server).await;
    let viewer_token = |version: i64| {
        token(
            &private_key,
            &json!({ "aws:channel-arn": arn, "exp": now() + 300, "aws:viewer-id": "alice", "aws:viewer-session-version": version }),
        )
    };
    let revoked_url = format!("{playback_url}?token={}", viewer_token(1));
    let kept_url = format!("{playback_url}?token={}", viewer_token(2));

    // Both sessions play; once both are held (fetching media) and have played a while, the
    // viewer's version 1 is revoked.
    let player = std::thread::spawn(move || play("hls.js", 16, &[&revoked_url, &kept_url]));
    let client = server.client();
    let deadline = std::time::Instant::now() + Duration::from_secs(40);
    loop {
        let stream = client.get_stream().channel_arn(&arn).send().await.unwrap();
        if stream.stream().unwrap().viewer_count() >= 2 {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "the two pages never started playing");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    tokio::time::sleep(Duration::from_secs(6)).await;
    client
        .start_viewer_session_revocation()
        .channel_arn(&arn)
        .viewer_id("alice")
        .viewer_session_versions_less_than_or_equal_to(1)
        .send()
        .await
        .unwrap();
    let revoked_at = epoch_ms();
    let results = player.join().unwrap();
    let (revoked, kept) = (&results[0], &results[1]);
    let revoked_responses = responses(revoked);
    assert!(
        revoked_responses.iter().any(|(at, status, _)| *at < revoked_at && *status == 200),
        "the revoked session played before: {revoked_responses:?}"
    );
    let late: Vec<_> = revoked_responses.iter().filter(|(at, _, _)| *at > revoked_at + REVOCATION_LIMIT_MS).collect();
    assert!(late.iter().all(|(_, status, _)| *status == 403), "after revocation only 403s: {late:?}");
    assert!(revoked_responses.iter().any(|(_, status, _)| *status == 403), "the revoked session met a 403");
    let kept_responses = responses(kept);
    assert!(
        kept_responses.iter().any(|(at, status, _)| *at > revoked_at + REVOCATION_LIMIT_MS && *status == 200),
        "the newer session kept loading: {kept_responses:?}"
    );
    assert!(kept["fatal"].as_array().unwrap().is_empty(), "{kept}");
    assert!(kept["last_advance_at"].as_u64().unwrap() > revoked_at + 3000, "the newer session kept playing: {kept}");
    assert!(kept["longest_stall_ms"].as_u64().unwrap() < 1000, "{kept}");
    println!(
        "revocation: revoked session's last 200 {} ms after the revocation, its picture stopped {} ms after",
        revoked_responses.iter().filter(|r| r.1 == 200).map(|r| r.0 as i64 - revoked_at as i64).max().unwrap_or(0),
        revoked["last_advance_at"].as_u64().unwrap_or(0) as i64 - revoked_at as i64,
    );

    // Origins: strict and lax tokens from an allowed page play, with the CORS header naming the
    // page; any token from another page is refused.
    let origin_token = |strict: bool| {
        token(
            &private_key,
            &json!({
                "aws:channel-arn": arn,
                "exp": now() + 300,
                "aws:access-control-allow-origin": "http://allowed.example",
                "aws:strict-origin-enforcement": strict,
            }),
        )
    };
    let page = |origin: &str, strict: bool| {
        json!({ "url": format!("{playback_url}?token={}", origin_token(strict)), "origin": origin }).to_string()
    };
    let targets = [
        page("http://allowed.example", true),
        page("http://allowed.example", false),
        page("http://refused.example", true),
    ];
    let results = play("hls.js", 8, &targets.iter().map(String::as_str).collect::<Vec<_>>());
    for allowed in &results[..2] {
        assert!(allowed["fatal"].as_array().unwrap().is_empty(), "{allowed}");
        assert!(allowed["picture_seconds"].as_f64().unwrap() > 6.0, "an allowed page plays: {allowed}");
        assert!(responses(allowed).iter().all(|(_, status, _)| *status == 200), "{allowed}");
        // The CORS header the browser saw names the page, on every answer of the session.
        let allow_origins: Vec<&str> =
            allowed["responses"].as_array().unwrap().iter().map(|r| r[3].as_str().unwrap_or("")).collect();
        assert!(allow_origins.iter().all(|o| *o == "http://allowed.example"), "{allow_origins:?}");
    }
    let refused = &results[2];
    assert!(!refused["fatal"].as_array().unwrap().is_empty(), "a refused page fails: {refused}");
    assert_eq!(refused["picture_seconds"].as_f64().unwrap(), 0.0, "{refused}");
    let refused_responses = responses(refused);
    assert!(
        !refused_responses.is_empty() && refused_responses.iter().all(|(_, status, _)| *status == 403),
        "{refused}"
    );
}

//! Viewer-session revocation across nodes: a viewer of a private channel plays through node b
//! (the stream is ingested on a); StartViewerSessionRevocation sent to node c cuts that viewer
//! off on b within 2 s, and another viewer's session plays on.

use std::time::{Duration, Instant};

use serde_json::json;

use crate::harness::{raw_request, wait_live};
use crate::media::{Publisher, pattern_720p};
use crate::postgres::Postgres;
use crate::tokens::{key_pair, now, token};

#[tokio::test]
async fn a_revocation_on_one_node_cuts_the_viewer_off_on_another() {
    let postgres = Postgres::start();
    let (a, b, c) = (postgres.node("a"), postgres.node("b"), postgres.node("c"));
    let keys = std::env::temp_dir().join(format!("openivs-cluster-keys-{}", std::process::id()));
    let (private_key, public_key) = key_pair(&keys, "revocation");
    a.client().import_playback_key_pair().public_key_material(&public_key).send().await.unwrap();
    let out = a.client().create_channel().authorized(true).send().await.unwrap();
    let arn = out.channel().unwrap().arn().unwrap().to_owned();
    let key = out.stream_key().unwrap().value().unwrap().to_owned();
    let _publisher = Publisher::start(&format!("rtmps://{}/app/{key}", a.rtmps_address), pattern_720p());
    wait_live(&a, &arn, Duration::from_secs(15)).await;
    let playback_url = out.channel().unwrap().playback_url().unwrap();
    let multivariant_path = format!("/{}", playback_url.split_once("://").unwrap().1.split_once('/').unwrap().1);

    // Two viewers (alice, bob) open sessions through b and fetch their media playlists there.
    let session_of = |viewer: &str| {
        let claims = json!({ "aws:channel-arn": arn, "exp": now() + 300, "aws:viewer-id": viewer, "aws:viewer-session-version": 1 });
        let path = format!("{multivariant_path}?token={}", token(&private_key, &claims));
        let answer = raw_request(&b, "GET", &path, &[], "");
        assert_eq!(answer.status, 200, "{}", answer.body);
        answer.body.lines().find(|l| l.starts_with("/playback/")).expect("a variant").to_owned()
    };
    let (alice, bob) = (session_of("alice"), session_of("bob"));
    for media in [&alice, &bob] {
        assert_eq!(raw_request(&b, "GET", media, &[], "").status, 200);
    }

    // Revoked through c: b refuses alice from then on (within 2 s), and bob plays on.
    let revocation = c.client().start_viewer_session_revocation().channel_arn(&arn).viewer_id("alice");
    revocation.viewer_session_versions_less_than_or_equal_to(1).send().await.unwrap();
    let revoked_at = Instant::now();
    loop {
        let answer = raw_request(&b, "GET", &alice, &[], "");
        if answer.status == 403 {
            assert!(answer.body.contains("revoked") || answer.body.contains("Revoked"), "{}", answer.body);
            break;
        }
        assert_eq!(answer.status, 200, "{}", answer.body);
        assert!(revoked_at.elapsed() < Duration::from_secs(2), "b still serves alice 2 s after the revocation on c");
        std::thread::sleep(Duration::from_millis(100));
    }
    println!("alice cut off on b {:?} after the revocation on c", revoked_at.elapsed());
    assert_eq!(raw_request(&b, "GET", &bob, &[], "").status, 200, "bob plays on");
}

//! The web console (`/console/`) driven in headless Chromium by `tests/browser/console.mjs`
//! through a user's whole path, and the demo channel playing in it. The script fails at the
//! first step that does not happen; here the server's side is checked too. Screenshots of every
//! page at a desktop's and a phone's width are kept in `target/tmp/console-screenshots/` (the
//! README's come from there), and each page passes axe-core's WCAG 2 A/AA rules.

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use crate::harness::{Server, TEST_BUCKETS, destination, wait_live};

fn screenshots() -> PathBuf {
    PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("console-screenshots")
}

/// The console's page of the channel `arn` (the link the server's banner prints for the demo).
pub fn channel_page(server: &Server, arn: &str) -> String {
    format!("{}/console/#/channel/{}", server.endpoint, arn.replace(':', "%3A").replace('/', "%2F"))
}

/// Runs console.mjs; its JSON report, or a panic with the report and the server's log.
pub fn drive(server: &Server, args: &[&str]) -> serde_json::Value {
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/browser/console.mjs");
    // (A failure's screenshot of an earlier run would mislead.)
    let _ = std::fs::remove_file(screenshots().join(format!("failure-{}.png", args[0])));
    let output = Command::new("node")
        .arg(&script)
        .arg(args[0])
        .arg(&server.endpoint)
        .arg(screenshots())
        .args(&args[1..])
        .output()
        .expect("Node.js must be installed to run the console tests");
    let report: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap_or_else(|_| {
        panic!(
            "console.mjs printed no report: {}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        )
    });
    assert!(
        output.status.success(),
        "the console's path failed: {}\nreport: {report:#}\nserver log (tail): {}",
        report["error"],
        server.log_text().lines().rev().take(40).collect::<Vec<_>>().join("\n")
    );
    report
}

#[tokio::test]
async fn a_user_manages_and_watches_a_channel_in_the_console() {
    let _alone = crate::ONE_AT_A_TIME.lock().await;
    let server = Server::start();
    // What the user picks in the create form's Recording list.
    server
        .client()
        .create_recording_configuration()
        .name("console-recordings")
        .destination_configuration(destination(TEST_BUCKETS[0]))
        .send()
        .await
        .unwrap();
    let report = drive(&server, &["path"]);
    println!("{report:#}");

    // Every page photographed at both widths, and accessible.
    for name in ["sign-in", "channels-empty", "channel-live", "channel-ended", "channels", "channel-private"] {
        for width in ["desktop", "phone"] {
            let file = screenshots().join(format!("{name}-{width}.png"));
            assert!(std::fs::metadata(&file).map(|m| m.len() > 5_000).unwrap_or(false), "{file:?}");
        }
        assert_eq!(report["accessibility"][name], serde_json::json!([]), "{name}");
    }
    // The preview played the 640x360 picture ffmpeg published, with its latency shown, and the
    // graphs showed what the server measured (ffmpeg sends 800 kbit/s of video at 30 fps).
    assert_eq!(report["preview"]["width"], 640);
    assert!(report["preview"]["latency"].as_str().unwrap().starts_with("Latency: "));
    let kbps = report["bitrate"]["last"].as_f64().unwrap();
    assert!((300.0..2_000.0).contains(&kbps), "{kbps} kbps");
    let fps = report["framerate"]["last"].as_f64().unwrap();
    assert!((25.0..35.0).contains(&fps), "{fps} fps");
    assert_eq!(report["viewers"]["last"], 1.0, "the console's own preview is a viewer");
    let events: Vec<&str> = report["events"].as_array().unwrap().iter().map(|e| e.as_str().unwrap()).collect();
    for name in ["Session Created", "Stream Start", "Stream End", "Session Ended"] {
        assert!(events.iter().any(|e| e.ends_with(name)), "{name} in {events:?}");
    }
    // The session's recording was listed as complete, with its thumbnail, and played.
    assert!(report["recording"].as_str().unwrap().contains("complete"), "{}", report["recording"]);
    assert!(report["recordingThumbnail"].as_u64().unwrap() > 0, "no thumbnail shown");
    // The private channel played with the token the page minted, signed by the key pair it
    // generated and imported.
    assert_eq!(report["privatePreview"]["width"], 640);
    assert!(report["tokenUrl"].as_str().unwrap().contains("?token=ey"));

    // What the page did, seen through the API: both channels deleted, the key pair imported.
    let client = server.client();
    assert!(client.list_channels().send().await.unwrap().channels().is_empty());
    let key_pairs = client.list_playback_key_pairs().send().await.unwrap();
    assert_eq!(key_pairs.key_pairs().len(), 1);
    assert!(key_pairs.key_pairs()[0].name().unwrap().starts_with("console-"));
    // Two sessions were published with their stream keys; neither key reached the log.
    let log = server.log_text();
    assert!(!log.contains("sk_us-west-2_"), "a stream key in the log");
}

#[tokio::test]
async fn the_demo_plays_in_the_console_from_the_banner_link() {
    let _alone = crate::ONE_AT_A_TIME.lock().await;
    let server = Server::with_args(&["--demo"]);
    let listed = server.client().list_channels().filter_by_name("demo").send().await.unwrap();
    let arn = listed.channels()[0].arn().unwrap().to_owned();
    wait_live(&server, &arn, Duration::from_secs(10)).await;
    // The banner names the console, and the demo channel's page in it.
    let log = server.banner_text();
    assert!(log.contains(&format!("Console:      {}/console/", server.endpoint)), "{log}");
    let link = channel_page(&server, &arn);
    assert!(log.contains(&link), "{link} in {log}");
    let report = drive(&server, &["demo", &link]);
    println!("{report:#}");
    assert!(report["preview"]["played"].as_f64().unwrap() > 3.5);
    assert_eq!(report["accessibility"]["demo"], serde_json::json!([]));
}

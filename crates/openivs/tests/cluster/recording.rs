//! Recordings in a cluster: the nodes record to one S3-compatible store (moto's), and when the
//! ingest node dies (`kill -9`) mid-recording, the node that ends its stream (`IngestNodeLost`)
//! also finishes its recording from what reached the store: VOD playlists with
//! `#EXT-X-ENDLIST`, `recording-ended.json` and the Recording End event, without the dead node
//! ever coming back; so does another node when the dead node was waiting out a recording's
//! reconnect window.

use std::time::{Duration, Instant};

use aws_sdk_ivs::types::{RecordingMode, ThumbnailConfiguration};

use crate::harness::{ACCOUNT, Server, destination, wait_live, wait_offline};
use crate::media::{Publisher, pattern_720p};
use crate::moto::Moto;
use crate::postgres::Postgres;

/// A node of the cluster on `postgres` whose recordings go to moto's S3.
fn recording_node(postgres: &Postgres, node_id: &str, moto: &Moto) -> Server {
    let s3 = ["--recording-store", "s3", "--s3-endpoint", &moto.endpoint];
    postgres.node_with(node_id, &[&s3[..], &["--s3-access-key-id", "test", "--s3-secret-access-key", "test"]].concat())
}

/// A channel recorded to `bucket` through `node` (no thumbnails), with this reconnect window:
/// its ARN, id and stream key.
async fn recorded_channel(node: &Server, bucket: &str, reconnect_window: i32) -> (String, String, String) {
    let configuration = node
        .client()
        .create_recording_configuration()
        .destination_configuration(destination(bucket))
        .thumbnail_configuration(ThumbnailConfiguration::builder().recording_mode(RecordingMode::Disabled).build())
        .recording_reconnect_window_seconds(reconnect_window)
        .send()
        .await
        .unwrap();
    let configuration_arn = configuration.recording_configuration().unwrap().arn().to_owned();
    let channel = node.client().create_channel().recording_configuration_arn(&configuration_arn).send().await.unwrap();
    let arn = channel.channel().unwrap().arn().unwrap().to_owned();
    let channel_id = arn.rsplit('/').next().unwrap().to_owned();
    (arn, channel_id, channel.stream_key().unwrap().value().unwrap().to_owned())
}

/// Waits (at most `limit`) for the channel's recording to end in `bucket`, downloads it into
/// `node`'s folder and checks it is finished: `recording-ended.json` with at least the first
/// segment, VOD playlists with `#EXT-X-ENDLIST`, the master playlist.
fn assert_finished(moto: &Moto, bucket: &str, channel_id: &str, node: &Server, limit: Duration) {
    let channel_prefix = format!("ivs/v1/{ACCOUNT}/{channel_id}/");
    let ended_key = moto.wait_for_key(bucket, &channel_prefix, "/events/recording-ended.json", limit);
    let prefix = ended_key.trim_end_matches("/events/recording-ended.json").to_owned();
    let into = node.data_dir.join("downloaded");
    moto.download(bucket, &into);
    let folder = into.join(&prefix);
    let ended: serde_json::Value =
        serde_json::from_slice(&std::fs::read(folder.join("events/recording-ended.json")).unwrap()).unwrap();
    assert_eq!(ended["recording_status"], "RECORDING_ENDED", "{ended}");
    let duration_ms = ended["media"]["hls"]["duration_ms"].as_f64().unwrap();
    assert!(duration_ms >= 9_000.0, "the segment that reached the store: {ended}");
    let playlist = std::fs::read_to_string(folder.join("media/hls/720p30/playlist.m3u8")).unwrap();
    assert!(playlist.contains("#EXT-X-PLAYLIST-TYPE:VOD\n") && playlist.ends_with("#EXT-X-ENDLIST\n"), "{playlist}");
    assert!(playlist.lines().any(|l| l == "0.ts"), "{playlist}");
    assert!(folder.join("media/hls/master.m3u8").exists(), "the master playlist was written");
}

#[tokio::test]
async fn a_dead_nodes_recording_is_finished_by_the_node_that_ends_its_stream() {
    let postgres = Postgres::start();
    let moto = Moto::start();
    moto.cli(&["s3api", "create-bucket", "--bucket", "cluster-recordings"]);
    let (mut a, b) = (recording_node(&postgres, "a", &moto), recording_node(&postgres, "b", &moto));
    let (arn, channel_id, key) = recorded_channel(&a, "cluster-recordings", 0).await;

    let _publisher = Publisher::start(&format!("rtmps://{}/app/{key}", a.rtmps_address), pattern_720p());
    wait_live(&a, &arn, Duration::from_secs(15)).await;
    let channel_prefix = format!("ivs/v1/{ACCOUNT}/{channel_id}/");
    // The first segment (10 s) reaches the store, then a dies in the middle of the second.
    moto.wait_for_key("cluster-recordings", &channel_prefix, "/720p30/0.ts", Duration::from_secs(30));
    tokio::time::sleep(Duration::from_secs(2)).await;
    a.kill();

    // b ends the stream once a's lease is gone (10 s, then its sweep) and finishes the recording.
    assert_finished(&moto, "cluster-recordings", &channel_id, &b, Duration::from_secs(40));
    let log = b.log_text();
    assert!(log.contains("interrupted by its node's stop"), "b finished the recording: {log}");

    // The session b ended says why.
    let session = b.client().get_stream_session().channel_arn(&arn).send().await.unwrap();
    let events: Vec<(&str, &str)> = session
        .stream_session()
        .unwrap()
        .truncated_events()
        .iter()
        .map(|e| (e.name().unwrap_or_default(), e.code().unwrap_or_default()))
        .collect();
    assert!(events.contains(&("Session Ended", "IngestNodeLost")), "{events:?}");
}

/// The stream ended and its recording waits out a reconnect window on a, which dies waiting:
/// once the window is long over (10 s), another node finishes the recording, and only one does.
#[tokio::test]
async fn a_recording_waiting_for_a_comeback_on_a_dead_node_is_finished_by_another() {
    let postgres = Postgres::start();
    let moto = Moto::start();
    moto.cli(&["s3api", "create-bucket", "--bucket", "parked-recordings"]);
    let mut a = recording_node(&postgres, "a", &moto);
    let (b, c) = (recording_node(&postgres, "b", &moto), recording_node(&postgres, "c", &moto));
    let (arn, channel_id, key) = recorded_channel(&a, "parked-recordings", 20).await;

    let publisher = Publisher::start(&format!("rtmps://{}/app/{key}", a.rtmps_address), pattern_720p());
    wait_live(&a, &arn, Duration::from_secs(15)).await;
    let channel_prefix = format!("ivs/v1/{ACCOUNT}/{channel_id}/");
    moto.wait_for_key("parked-recordings", &channel_prefix, "/720p30/0.ts", Duration::from_secs(30));
    drop(publisher);
    wait_offline(&a, &arn, Duration::from_secs(15)).await;
    let deadline = Instant::now() + Duration::from_secs(15);
    while !a.log_text().contains("for the publisher to come back") {
        assert!(Instant::now() < deadline, "the recording waits for a comeback: {}", a.log_text());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let parked_at = Instant::now();
    a.kill();
    assert!(
        moto.keys("parked-recordings", &channel_prefix).iter().all(|k| !k.ends_with("/events/recording-ended.json")),
        "nothing ended the recording before the window"
    );

    // The window (20 s) and the grace (10 s) pass; b or c finishes it (they look every 5 s).
    assert_finished(&moto, "parked-recordings", &channel_id, &b, Duration::from_secs(60));
    assert!(parked_at.elapsed() >= Duration::from_secs(20), "not before the window ended");
    let finished_by = |node: &Server| node.log_text().contains("which is gone: finished it here");
    assert!(finished_by(&b) ^ finished_by(&c), "one node finished it: b {}, c {}", finished_by(&b), finished_by(&c));
    tokio::time::sleep(Duration::from_secs(6)).await;
    assert!(finished_by(&b) ^ finished_by(&c), "and only one");
    let ended = moto.keys("parked-recordings", &channel_prefix);
    assert_eq!(ended.iter().filter(|k| k.ends_with("/events/recording-ended.json")).count(), 1, "{ended:?}");
}

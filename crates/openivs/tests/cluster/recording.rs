//! Recordings in a cluster: the nodes record to one S3-compatible store (moto's), and when the
//! ingest node dies (`kill -9`) mid-recording, the node that ends its stream (`IngestNodeLost`)
//! also finishes its recording from what reached the store: VOD playlists with
//! `#EXT-X-ENDLIST`, `recording-ended.json` and the Recording End event, without the dead node
//! ever coming back.

use std::time::Duration;

use aws_sdk_ivs::types::{RecordingMode, ThumbnailConfiguration};

use crate::harness::{ACCOUNT, Server, destination, wait_live};
use crate::media::{Publisher, pattern_720p};
use crate::moto::Moto;
use crate::postgres::Postgres;

/// A node of the cluster on `postgres` whose recordings go to moto's S3.
fn recording_node(postgres: &Postgres, node_id: &str, moto: &Moto) -> Server {
    let s3 = ["--recording-store", "s3", "--s3-endpoint", &moto.endpoint];
    postgres.node_with(node_id, &[&s3[..], &["--s3-access-key-id", "test", "--s3-secret-access-key", "test"]].concat())
}

#[tokio::test]
async fn a_dead_nodes_recording_is_finished_by_the_node_that_ends_its_stream() {
    let postgres = Postgres::start();
    let moto = Moto::start();
    moto.cli(&["s3api", "create-bucket", "--bucket", "cluster-recordings"]);
    let (mut a, b) = (recording_node(&postgres, "a", &moto), recording_node(&postgres, "b", &moto));
    let configuration = a
        .client()
        .create_recording_configuration()
        .destination_configuration(destination("cluster-recordings"))
        .thumbnail_configuration(ThumbnailConfiguration::builder().recording_mode(RecordingMode::Disabled).build())
        .send()
        .await
        .unwrap();
    let configuration_arn = configuration.recording_configuration().unwrap().arn().to_owned();
    let channel = a.client().create_channel().recording_configuration_arn(&configuration_arn).send().await.unwrap();
    let arn = channel.channel().unwrap().arn().unwrap().to_owned();
    let channel_id = arn.rsplit('/').next().unwrap().to_owned();
    let key = channel.stream_key().unwrap().value().unwrap().to_owned();

    let _publisher = Publisher::start(&format!("rtmps://{}/app/{key}", a.rtmps_address), pattern_720p());
    wait_live(&a, &arn, Duration::from_secs(15)).await;
    let channel_prefix = format!("ivs/v1/{ACCOUNT}/{channel_id}/");
    // The first segment (10 s) reaches the store, then a dies in the middle of the second.
    moto.wait_for_key("cluster-recordings", &channel_prefix, "/720p30/0.ts", Duration::from_secs(30));
    tokio::time::sleep(Duration::from_secs(2)).await;
    a.kill();

    // b ends the stream once a's lease is gone (10 s, then its sweep) and finishes the recording.
    let ended_key = moto.wait_for_key(
        "cluster-recordings",
        &channel_prefix,
        "/events/recording-ended.json",
        Duration::from_secs(40),
    );
    let prefix = ended_key.trim_end_matches("/events/recording-ended.json").to_owned();
    let into = b.data_dir.join("downloaded");
    moto.download("cluster-recordings", &into);
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

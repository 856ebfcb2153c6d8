//! Recording to an S3-compatible store: moto's S3 (`moto_server`, from PyPI) on 127.0.0.1,
//! reached through a relay the test can cut, so the store goes away mid-stream as a real one
//! does (moto keeps its objects in memory, so it is the network, not moto, that goes down). The
//! objects are read back with the AWS CLI and checked like a local recording: nothing is lost to
//! an outage or to a `kill -9` while the store is down.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use aws_sdk_ivs::types::RecordingConfigurationState;

use serde_json::Value;

use crate::events::{Receiver, SECRET, names};
use crate::harness::{ACCOUNT, Server, destination, wait_live, wait_offline, walkdir};
use crate::ingest::{Publisher, pattern_720p, pattern_large_segments};
use crate::moto::Moto;
use crate::recording::{configuration_without_thumbnails, json, plays_for, recorded_channel};

/// A TCP relay to `target` that can be cut: while cut, its connections are closed and new ones
/// are closed as soon as they are accepted, as a store that is down behaves for its clients.
struct Relay {
    endpoint: String,
    open: Arc<AtomicBool>,
    connections: Arc<Mutex<Vec<TcpStream>>>,
}

impl Relay {
    fn to(target: &str) -> Relay {
        let target = target.trim_start_matches("http://").to_owned();
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let endpoint = format!("http://{}", listener.local_addr().unwrap());
        let open = Arc::new(AtomicBool::new(true));
        let connections = Arc::new(Mutex::new(Vec::new()));
        let (accept_open, accept_connections) = (open.clone(), connections.clone());
        std::thread::spawn(move || {
            for client in listener.incoming().flatten() {
                if !accept_open.load(Ordering::SeqCst) {
                    let _ = client.shutdown(Shutdown::Both);
                    continue;
                }
                let Ok(server) = TcpStream::connect(&target) else { continue };
                let mut held = accept_connections.lock().unwrap();
                held.push(client.try_clone().unwrap());
                held.push(server.try_clone().unwrap());
                for (mut from, mut to) in [(client.try_clone().unwrap(), server.try_clone().unwrap()), (server, client)]
                {
                    std::thread::spawn(move || {
                        let mut buffer = [0u8; 65536];
                        while let Ok(n) = from.read(&mut buffer) {
                            if n == 0 || to.write_all(&buffer[..n]).is_err() {
                                break;
                            }
                        }
                        let _ = to.shutdown(Shutdown::Write);
                    });
                }
            }
        });
        Relay { endpoint, open, connections }
    }

    fn cut(&self) {
        self.open.store(false, Ordering::SeqCst);
        for connection in self.connections.lock().unwrap().drain(..) {
            let _ = connection.shutdown(Shutdown::Both);
        }
    }

    fn restore(&self) {
        self.open.store(true, Ordering::SeqCst);
    }
}

/// An openivs whose recordings go to S3 at `endpoint`.
fn server_recording_to(endpoint: &str) -> Server {
    server_recording_with(endpoint, &[])
}

/// An openivs whose recordings go to S3 at `endpoint`, with more arguments.
fn server_recording_with(endpoint: &str, more: &[&str]) -> Server {
    let mut args = vec![
        "--recording-store",
        "s3",
        "--s3-endpoint",
        endpoint,
        "--s3-access-key-id",
        "test",
        "--s3-secret-access-key",
    ];
    args.push("test");
    args.extend_from_slice(more);
    Server::with_args(&args)
}

/// Waits (at most `limit`) until `bucket` holds a `recording-ended.json` under `channel`'s
/// prefix; the recording's prefix.
fn ended_in_s3(moto: &Moto, bucket: &str, channel_id: &str, limit: Duration) -> String {
    let prefix = format!("ivs/v1/{ACCOUNT}/{channel_id}/");
    let key = moto.wait_for_key(bucket, &prefix, "/events/recording-ended.json", limit);
    key.trim_end_matches("/events/recording-ended.json").to_owned()
}

/// The recording's files, downloaded: its folder.
fn downloaded(moto: &Moto, bucket: &str, server: &Server, prefix: &str) -> PathBuf {
    let into = server.data_dir.join("downloaded");
    moto.download(bucket, &into);
    into.join(prefix)
}

/// Segments listed by the recording's playlist, with no gap in their numbering.
fn assert_segments_contiguous(media: &Path) {
    let playlist = std::fs::read_to_string(media.join("720p30/playlist.m3u8")).unwrap();
    assert!(playlist.contains("#EXT-X-PLAYLIST-TYPE:VOD\n") && playlist.ends_with("#EXT-X-ENDLIST\n"), "{playlist}");
    let listed: Vec<&str> = playlist.lines().filter(|l| l.ends_with(".ts")).collect();
    let expected: Vec<String> = (0..listed.len()).map(|n| format!("{n}.ts")).collect();
    assert_eq!(listed, expected, "{playlist}");
    assert!(!playlist.contains("#EXT-X-DISCONTINUITY"), "no segment was lost: {playlist}");
    for segment in listed {
        assert!(media.join("720p30").join(segment).exists(), "{segment} reached S3");
    }
}

/// A live stream recorded to S3 while the store is unreachable for 20 s in its middle: every
/// segment reaches S3 once it is back, and the recording is complete and plays for the stream's
/// duration. A bucket that does not exist fails its configuration.
#[tokio::test]
async fn a_stream_is_recorded_to_s3_through_a_store_outage() {
    let moto = Moto::start();
    moto.cli(&["s3api", "create-bucket", "--bucket", "recordings"]);
    let relay = Relay::to(&moto.endpoint);
    let server = server_recording_to(&relay.endpoint);
    let client = server.client();
    let absent = client
        .create_recording_configuration()
        .destination_configuration(destination("absent-bucket"))
        .send()
        .await
        .unwrap();
    assert_eq!(absent.recording_configuration().unwrap().state(), &RecordingConfigurationState::CreateFailed);
    let config = configuration_without_thumbnails(&server, "recordings", 0).await;
    let (arn, url) = recorded_channel(&server, &config).await;
    let channel_id = arn.rsplit('/').next().unwrap().to_owned();

    let mut publisher = Publisher::start(&url, pattern_720p());
    wait_live(&server, &arn, Duration::from_secs(15)).await;
    let live_from = Instant::now();
    tokio::time::sleep(Duration::from_secs(4)).await;
    relay.cut();
    tokio::time::sleep(Duration::from_secs(20)).await;
    relay.restore();
    tokio::time::sleep(Duration::from_secs(4)).await;
    publisher.kill();
    let live_for = live_from.elapsed().as_secs_f64();
    wait_offline(&server, &arn, Duration::from_secs(10)).await;

    let prefix = ended_in_s3(&moto, "recordings", &channel_id, Duration::from_secs(30));
    let folder = downloaded(&moto, "recordings", &server, &prefix);
    let ended = json(&folder.join("events/recording-ended.json"));
    assert_eq!(ended["recording_status"], "RECORDING_ENDED", "{ended}");
    assert_eq!(json(&folder.join("events/recording-started.json"))["recording_status"], "RECORDING_STARTED");
    let duration_ms = ended["media"]["hls"]["duration_ms"].as_f64().unwrap();
    assert!((duration_ms / 1000.0 - live_for).abs() < 2.5, "recorded {duration_ms} ms of a {live_for:.1} s stream");
    let media = folder.join("media/hls");
    assert_segments_contiguous(&media);
    plays_for(&media, duration_ms);
    // The outage was seen, and outlasted.
    let log = server.log_text();
    assert!(log.contains("cannot upload") && log.contains("the store answers again"), "{log}");
    // Nothing waits in the spool.
    let spool = spooled_files(&server);
    assert!(spool.is_empty(), "{spool:?}");
}

/// A segment over 16 MiB goes up as an S3 multipart upload (moto's ETag then ends in `-{parts}`)
/// and arrives whole.
#[tokio::test(flavor = "multi_thread")]
async fn a_large_segment_is_uploaded_in_parts() {
    let moto = Moto::start();
    moto.cli(&["s3api", "create-bucket", "--bucket", "large"]);
    let server = server_recording_to(&moto.endpoint);
    let config = configuration_without_thumbnails(&server, "large", 0).await;
    let (arn, url) = recorded_channel(&server, &config).await;
    let channel_id = arn.rsplit('/').next().unwrap().to_owned();
    let mut publisher = Publisher::start(&url, pattern_large_segments());
    wait_live(&server, &arn, Duration::from_secs(15)).await;
    // The first segment ends at the second keyframe, 20 s in.
    tokio::time::sleep(Duration::from_secs(22)).await;
    publisher.kill();
    wait_offline(&server, &arn, Duration::from_secs(15)).await;

    let prefix = ended_in_s3(&moto, "large", &channel_id, Duration::from_secs(30));
    let key = format!("{prefix}/media/hls/360p30/0.ts");
    let head = moto.cli(&["s3api", "head-object", "--bucket", "large", "--key", &key]);
    let head: Value = serde_json::from_slice(&head.stdout).unwrap();
    let size = head["ContentLength"].as_u64().unwrap();
    assert!(size >= 16 << 20, "a segment of {size} bytes");
    let etag = head["ETag"].as_str().unwrap();
    assert!(etag.trim_matches('"').ends_with(&format!("-{}", size.div_ceil(8 << 20))), "a multipart ETag: {etag}");
    let folder = downloaded(&moto, "large", &server, &prefix);
    assert_eq!(std::fs::metadata(folder.join("media/hls/360p30/0.ts")).unwrap().len(), size);
    let ended = json(&folder.join("events/recording-ended.json"));
    plays_for(&folder.join("media/hls"), ended["media"]["hls"]["duration_ms"].as_f64().unwrap());
}

/// The store stays down past `--recording-store-outage-limit`: the recording stops storing
/// media and ends failed, never crashing anything: the webhook gets a Recording End Failure, and
/// `recording-failed.json` reaches S3 once the store is back.
#[tokio::test(flavor = "multi_thread")]
async fn a_store_down_past_the_outage_limit_fails_the_recording() {
    let moto = Moto::start();
    moto.cli(&["s3api", "create-bucket", "--bucket", "failing"]);
    let relay = Relay::to(&moto.endpoint);
    let receiver = Receiver::start();
    let hook = ["--event-webhook", receiver.url.as_str(), "--event-webhook-secret", SECRET];
    let server =
        server_recording_with(&relay.endpoint, &[&["--recording-store-outage-limit", "2"][..], &hook].concat());
    let config = configuration_without_thumbnails(&server, "failing", 0).await;
    let (arn, url) = recorded_channel(&server, &config).await;
    let channel_id = arn.rsplit('/').next().unwrap().to_owned();
    relay.cut();

    // `recording-started.json` waits in the spool, its upload failing; the first segment, 10 s
    // on, comes after the limit and is refused.
    let mut publisher = Publisher::start(&url, pattern_720p());
    wait_live(&server, &arn, Duration::from_secs(15)).await;
    let deadline = Instant::now() + Duration::from_secs(30);
    while !server.log_text().contains("refused every write") {
        assert!(Instant::now() < deadline, "a segment was refused: {}", server.log_text());
        std::thread::sleep(Duration::from_millis(250));
    }
    publisher.kill();
    wait_offline(&server, &arn, Duration::from_secs(15)).await;
    let ended = |events: &[(String, Value)]| names(events).iter().any(|n| n == "Recording End Failure");
    receiver.wait_for(&arn, Duration::from_secs(15), ended);
    let events = receiver.details_for(&arn);
    let (_, failure) = events.iter().find(|(_, d)| d["recording_status"] == "Recording End Failure").unwrap();
    assert_eq!(failure["recording_status_reason"], "InternalServerException", "{failure}");
    assert!(!names(&events).iter().any(|n| n == "Recording End"), "{:?}", names(&events));
    assert_eq!(server.client().get_channel().arn(&arn).send().await.unwrap().channel().unwrap().arn(), Some(&*arn));

    relay.restore();
    let channel_prefix = format!("ivs/v1/{ACCOUNT}/{channel_id}/");
    let failed_key =
        moto.wait_for_key("failing", &channel_prefix, "/events/recording-failed.json", Duration::from_secs(30));
    let prefix = failed_key.trim_end_matches("/events/recording-failed.json");
    assert_eq!(failure["recording_s3_key_prefix"], prefix, "{failure}");
    let folder = downloaded(&moto, "failing", &server, prefix);
    let file = json(&folder.join("events/recording-failed.json"));
    assert_eq!(file["recording_status"], "RECORDING_ENDED_WITH_FAILURE", "{file}");
    let message = file["recording_status_message"].as_str().unwrap();
    assert!(message.contains("refused every write"), "{message}");
    assert!(!folder.join("events/recording-ended.json").exists());
    assert_eq!(json(&folder.join("events/recording-started.json"))["recording_status"], "RECORDING_STARTED");
}

/// The store is down, and openivs is killed (`kill -9`) mid-stream: the segments in the spool
/// survive the restart, reach S3 when it is back, and the interrupted recording is finished there.
#[tokio::test]
async fn a_crash_while_the_store_is_down_loses_nothing_spooled() {
    let moto = Moto::start();
    moto.cli(&["s3api", "create-bucket", "--bucket", "spooled"]);
    let relay = Relay::to(&moto.endpoint);
    let mut server = server_recording_to(&relay.endpoint);
    let config = configuration_without_thumbnails(&server, "spooled", 0).await;
    let (arn, url) = recorded_channel(&server, &config).await;
    let channel_id = arn.rsplit('/').next().unwrap().to_owned();
    let publisher = Publisher::start(&url, pattern_720p());
    wait_live(&server, &arn, Duration::from_secs(15)).await;
    relay.cut();
    // The first segment (10 s) and a little of the second, all in the spool.
    let deadline = Instant::now() + Duration::from_secs(25);
    while !spooled_files(&server)
        .iter()
        .any(|p| std::fs::read(p).is_ok_and(|bytes| bytes.windows(10).any(|w| w == b"720p30/0.t")))
    {
        assert!(Instant::now() < deadline, "the first segment is spooled");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(moto.keys("spooled", "ivs/").is_empty(), "nothing reached S3 while it was cut off");
    drop(publisher);
    server.crash_and_restart();
    tokio::time::sleep(Duration::from_secs(2)).await;
    relay.restore();

    let prefix = ended_in_s3(&moto, "spooled", &channel_id, Duration::from_secs(30));
    let folder = downloaded(&moto, "spooled", &server, &prefix);
    let ended = json(&folder.join("events/recording-ended.json"));
    assert_eq!(ended["recording_status"], "RECORDING_ENDED", "{ended}");
    let duration_ms = ended["media"]["hls"]["duration_ms"].as_f64().unwrap();
    assert!(duration_ms >= 9000.0, "the spooled segments: {duration_ms} ms");
    let media = folder.join("media/hls");
    assert_segments_contiguous(&media);
    plays_for(&media, duration_ms);
    wait_offline(&server, &arn, Duration::from_secs(10)).await;
}

/// The files waiting in the recording spool of every node (one outside the cluster run, where
/// the load balancer may have sent the broadcaster to any).
fn spooled_files(server: &Server) -> Vec<PathBuf> {
    server.node_data_dirs().iter().flat_map(|dir| walkdir(&dir.join("recording-spool"))).collect()
}

//! IVS events delivered to the targets a user configures: a webhook receiver in the test (every
//! event, in order, HMAC-signed, including those raised while it was down and across a `kill -9`
//! of openivs), moto's EventBridge (PutEvents, routed by a rule to an SQS queue read with the
//! AWS CLI), and the Server-Sent Events stream read by curl signing with `--aws-sigv4`.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hmac::{Hmac, Mac};
use serde_json::Value;
use sha2::Sha256;

use crate::harness::{ACCOUNT, REGION, Server, raw_request, wait_live, wait_offline};
use aws_sdk_ivs::types::ChannelType;

use crate::ingest::{Publisher, create_channel, pattern_720p};
use crate::moto::Moto;
use crate::recording::{configuration_without_thumbnails, recorded_channel};

pub(crate) use crate::webhook_receiver::{Receiver, SECRET, names};

fn position(names: &[String], name: &str, from: usize) -> Option<usize> {
    names.iter().skip(from).position(|n| n == name).map(|p| p + from)
}

#[tokio::test(flavor = "multi_thread")]
async fn events_reach_a_webhook_in_order_and_signed_through_its_outage_and_a_crash() {
    let receiver = Receiver::start();
    let mut server = Server::with_args(&["--event-webhook", &receiver.url, "--event-webhook-secret", SECRET]);
    let configuration = configuration_without_thumbnails(&server, "bucket", 0).await;
    let (arn, url) = recorded_channel(&server, &configuration).await;
    let channel_name = server
        .client()
        .get_channel()
        .arn(&arn)
        .send()
        .await
        .unwrap()
        .channel()
        .unwrap()
        .name()
        .unwrap_or_default()
        .to_owned();

    // A stream, while the receiver takes everything.
    let mut publisher = Publisher::start(&url, pattern_720p());
    wait_live(&server, &arn, Duration::from_secs(15)).await;
    let first_stream = server.client().get_stream().channel_arn(&arn).send().await.unwrap();
    let first_stream_id = first_stream.stream().unwrap().stream_id().unwrap().to_owned();
    tokio::time::sleep(Duration::from_secs(3)).await;
    publisher.kill();
    wait_offline(&server, &arn, Duration::from_secs(15)).await;
    receiver.wait_for(&arn, Duration::from_secs(20), |events| {
        let names = names(events);
        names.contains(&"Session Ended".to_owned()) && names.contains(&"Recording End".to_owned())
    });
    let events = receiver.details_for(&arn);
    let first = names(&events);
    let created = position(&first, "Session Created", 0).unwrap();
    let started = position(&first, "Stream Start", created).expect("Stream Start after Session Created");
    position(&first, "Session Ended", started).expect("Session Ended after Stream Start");
    let recording_start = position(&first, "Recording Start", 0).unwrap();
    position(&first, "Recording End", recording_start).expect("Recording End after Recording Start");
    for (detail_type, detail) in &events {
        if detail_type == "IVS Recording State Change" {
            assert_eq!(detail["recording_s3_bucket_name"], "bucket");
            let prefix = detail["recording_s3_key_prefix"].as_str().unwrap();
            assert!(prefix.starts_with(&format!("ivs/v1/{ACCOUNT}/{}/", arn.rsplit('/').next().unwrap())), "{prefix}");
            assert_eq!(detail["recording_session_id"].as_str().unwrap(), prefix.rsplit('/').next().unwrap());
            if detail["recording_status"] == "Recording End" {
                assert!(detail["recording_duration_ms"].as_i64().unwrap() >= 2000, "{detail}");
                assert_eq!(detail["recording_session_stream_ids"], serde_json::json!([first_stream_id]));
            }
        } else {
            assert_eq!(detail["stream_id"], first_stream_id.as_str(), "{detail}");
            assert_eq!(detail["channel_name"], channel_name.as_str(), "{detail}");
        }
    }

    // Every request: the envelope, signed over the timestamp and the body, recent.
    {
        let received = receiver.received.lock().unwrap();
        for delivery in received.iter() {
            let envelope = delivery.envelope();
            assert_eq!(envelope["version"], "0");
            assert_eq!(envelope["source"], "aws.ivs");
            assert_eq!(envelope["account"], ACCOUNT);
            assert_eq!(envelope["region"], REGION);
            assert_eq!(envelope["id"].as_str().unwrap().len(), 36);
            assert!(envelope["time"].as_str().unwrap().ends_with('Z'));
            let mut mac = Hmac::<Sha256>::new_from_slice(SECRET.as_bytes()).unwrap();
            mac.update(format!("{}.{}", delivery.timestamp, delivery.body).as_bytes());
            let expected = format!("v1={}", hex::encode(mac.finalize().into_bytes()));
            assert_eq!(delivery.signature, expected, "signature of {}", delivery.body);
            let sent_at: i64 = delivery.timestamp.parse().unwrap();
            assert!((time::OffsetDateTime::now_utc().unix_timestamp() - sent_at).abs() < 300);
        }
    }

    // The metrics count what was delivered and the recording's objects written (by whichever
    // nodes did it, in a cluster).
    let delivered = receiver.received.lock().unwrap().len() as f64;
    let samples = crate::operator::scrape_every_node(&server);
    let counted = crate::operator::total(&samples, "openivs_event_deliveries_total", &[("outcome", "delivered")]);
    assert!(counted.is_some_and(|n| n >= delivered), "{counted:?} of {delivered} deliveries");
    let uploads = crate::operator::total(&samples, "openivs_recording_uploads_total", &[("outcome", "uploaded")]);
    assert!(uploads.is_some_and(|n| n >= 4.0), "segments, playlists and event files: {uploads:?}");

    // The receiver goes down; a second stream is cut by a kill -9 of openivs; openivs comes back,
    // then the receiver: the events raised meanwhile (the stream's, and its end at the restart)
    // arrive, after the first stream's.
    receiver.down.store(true, Ordering::SeqCst);
    let before_outage = receiver.received.lock().unwrap().len();
    let mut publisher = Publisher::start(&url, pattern_720p());
    wait_live(&server, &arn, Duration::from_secs(15)).await;
    let second_stream = server.client().get_stream().channel_arn(&arn).send().await.unwrap();
    let second_stream_id = second_stream.stream().unwrap().stream_id().unwrap().to_owned();
    tokio::time::sleep(Duration::from_secs(3)).await;
    server.crash_and_restart();
    publisher.kill();
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(receiver.received.lock().unwrap().len(), before_outage, "nothing is taken while down");
    receiver.down.store(false, Ordering::SeqCst);
    receiver.wait_for(&arn, Duration::from_secs(30), |events| {
        let ended = events
            .iter()
            .any(|(_, d)| d["event_name"] == "Session Ended" && d["stream_id"] == second_stream_id.as_str());
        let recorded = events.iter().filter(|(_, d)| d["recording_status"] == "Recording End").count() >= 2;
        ended && recorded
    });
    let events = receiver.details_for(&arn);
    let second: Vec<&(String, Value)> =
        events.iter().filter(|(_, d)| d["stream_id"] == second_stream_id.as_str()).collect();
    let second_names: Vec<String> = second
        .iter()
        .map(|(_, d)| d["event_name"].as_str().unwrap_or(d["recording_status"].as_str().unwrap_or_default()).to_owned())
        .collect();
    let created = position(&second_names, "Session Created", 0).unwrap();
    let started = position(&second_names, "Stream Start", created).unwrap();
    let ended = position(&second_names, "Session Ended", started).unwrap();
    assert_eq!(second[ended].1["code"], "ServerRestart", "{:?}", second[ended]);
    // In order: nothing of the second stream before the end of the first.
    let all = names(&events);
    let first_end = position(&all, "Session Ended", 0).unwrap();
    let second_created = events.iter().position(|(_, d)| d["stream_id"] == second_stream_id.as_str()).unwrap();
    assert!(first_end < second_created, "{all:?}");
}

/// A bucket removed after its recording configuration was made: the stream goes live and plays,
/// and its recording is one Recording Start Failure event (an empty key prefix, as IVS sends it)
/// and nothing more; the bucket's folder is not made again.
#[tokio::test(flavor = "multi_thread")]
async fn a_recording_that_cannot_start_is_a_start_failure_event() {
    let receiver = Receiver::start();
    let server = Server::with_args(&["--event-webhook", &receiver.url, "--event-webhook-secret", SECRET]);
    let configuration = configuration_without_thumbnails(&server, "cli-bucket", 0).await;
    let (arn, url) = recorded_channel(&server, &configuration).await;
    let bucket_folder = server.data_dir.join("buckets/cli-bucket");
    std::fs::remove_dir_all(&bucket_folder).unwrap();

    let mut publisher = Publisher::start(&url, pattern_720p());
    wait_live(&server, &arn, Duration::from_secs(15)).await;
    let has = |events: &[(String, Value)], name: &str| names(events).iter().any(|n| n == name);
    receiver.wait_for(&arn, Duration::from_secs(15), |events| has(events, "Recording Start Failure"));
    publisher.kill();
    wait_offline(&server, &arn, Duration::from_secs(15)).await;
    receiver.wait_for(&arn, Duration::from_secs(15), |events| has(events, "Session Ended"));
    // (Whatever the recording would still raise, it raises as the stream ends.)
    tokio::time::sleep(Duration::from_secs(1)).await;

    let events = receiver.details_for(&arn);
    let (_, failure) = events.iter().find(|(_, d)| d["recording_status"] == "Recording Start Failure").unwrap();
    assert_eq!(failure["recording_s3_key_prefix"], "", "{failure}");
    assert_eq!(failure["recording_status_reason"], "ValidationException", "{failure}");
    assert_eq!(failure["recording_s3_bucket_name"], "cli-bucket", "{failure}");
    assert!(!failure["stream_id"].as_str().unwrap().is_empty(), "{failure}");
    for name in ["Recording Start", "Recording End", "Recording End Failure"] {
        assert!(!has(&events, name), "no {name}: {:?}", names(&events));
    }
    assert!(!bucket_folder.exists(), "a removed bucket is not made again");
}

/// The AWS CLI's view of moto's SQS queue: the bodies received within `limit` until `enough`.
fn receive_until(moto: &Moto, queue_url: &str, limit: Duration, enough: impl Fn(&[Value]) -> bool) -> Vec<Value> {
    let deadline = Instant::now() + limit;
    let mut bodies = Vec::new();
    while !enough(&bodies) {
        assert!(Instant::now() < deadline, "moto's queue got: {bodies:#?}");
        let output = moto.cli(&["sqs", "receive-message", "--queue-url", queue_url, "--max-number-of-messages", "10"]);
        if !output.stdout.is_empty() {
            let answer: Value = serde_json::from_slice(&output.stdout).unwrap();
            for message in answer["Messages"].as_array().cloned().unwrap_or_default() {
                bodies.push(serde_json::from_str(message["Body"].as_str().unwrap()).unwrap());
                let handle = message["ReceiptHandle"].as_str().unwrap();
                moto.cli(&["sqs", "delete-message", "--queue-url", queue_url, "--receipt-handle", handle]);
            }
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    bodies
}

/// curl reading the event stream (signing with `--aws-sigv4`), its lines collected.
struct EventStream {
    child: std::process::Child,
    lines: Arc<Mutex<Vec<String>>>,
}

impl EventStream {
    fn open(server: &Server, extra: &[&str], max_seconds: u32) -> EventStream {
        let mut child = Command::new("curl")
            .args(["-sN", "--max-time", &max_seconds.to_string(), "--aws-sigv4", &format!("aws:amz:{REGION}:ivs")])
            .args(["--user", "test:test"])
            .args(extra)
            .arg(format!("http://127.0.0.1:{}/_openivs/events", server.port))
            .stdout(Stdio::piped())
            .spawn()
            .expect("curl must be installed: scripts/test installs it");
        let stdout = child.stdout.take().unwrap();
        let lines = Arc::new(Mutex::new(Vec::new()));
        let collected = lines.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                collected.lock().unwrap().push(line);
            }
        });
        EventStream { child, lines }
    }

    /// The stream's messages so far: (id, event, data).
    fn messages(&self) -> Vec<(i64, String, Value)> {
        let lines = self.lines.lock().unwrap();
        let mut messages = Vec::new();
        let (mut id, mut event) = (None, None);
        for line in lines.iter() {
            if let Some(text) = line.strip_prefix("id: ") {
                id = text.parse().ok();
            } else if let Some(text) = line.strip_prefix("event: ") {
                event = Some(text.to_owned());
            } else if let Some(text) = line.strip_prefix("data: ") {
                messages.push((id.take().unwrap(), event.take().unwrap(), serde_json::from_str(text).unwrap()));
            }
        }
        messages
    }

    fn wait_for(&self, limit: Duration, predicate: impl Fn(&[(i64, String, Value)]) -> bool) {
        let deadline = Instant::now() + limit;
        while !predicate(&self.messages()) {
            assert!(Instant::now() < deadline, "the event stream said: {:#?}", self.lines.lock().unwrap());
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for EventStream {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn stream_event_names(messages: &[(i64, String, Value)], arn: &str) -> Vec<String> {
    messages
        .iter()
        .filter(|(_, _, envelope)| envelope["resources"][0] == arn)
        .filter_map(|(_, _, envelope)| envelope["detail"]["event_name"].as_str().map(str::to_owned))
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn events_are_put_on_an_eventbridge_bus_and_streamed_to_developers() {
    // moto's EventBridge, with a rule sending IVS's events to an SQS queue.
    let moto = Moto::start();
    let queue =
        moto.cli(&["sqs", "create-queue", "--queue-name", "ivs-events", "--query", "QueueUrl", "--output", "text"]);
    let queue_url = String::from_utf8(queue.stdout).unwrap().trim().to_owned();
    let queue_arn = moto.cli(&[
        "sqs",
        "get-queue-attributes",
        "--queue-url",
        &queue_url,
        "--attribute-names",
        "QueueArn",
        "--query",
        "Attributes.QueueArn",
        "--output",
        "text",
    ]);
    let queue_arn = String::from_utf8(queue_arn.stdout).unwrap().trim().to_owned();
    moto.cli(&["events", "put-rule", "--name", "ivs", "--event-pattern", r#"{"source":["aws.ivs"]}"#]);
    moto.cli(&["events", "put-targets", "--rule", "ivs", "--targets", &format!("Id=queue,Arn={queue_arn}")]);
    let server = Server::with_args(&[
        "--eventbridge-endpoint",
        &moto.endpoint,
        "--eventbridge-region",
        "us-east-1",
        "--eventbridge-access-key-id",
        "test",
        "--eventbridge-secret-access-key",
        "test",
    ]);

    // The event stream wants a signature, as the API does.
    let unsigned = raw_request(&server, "GET", "/_openivs/events", &[], "");
    assert_eq!(unsigned.status, 403, "{}", unsigned.body);
    assert!(unsigned.header("x-amzn-ErrorType").is_some());
    let live_stream = EventStream::open(&server, &[], 60);
    // (The opening comment says the stream is open before anything is raised.)
    let deadline = Instant::now() + Duration::from_secs(10);
    while live_stream.lines.lock().unwrap().is_empty() {
        assert!(Instant::now() < deadline, "the event stream did not open");
        std::thread::sleep(Duration::from_millis(50));
    }

    let channel = create_channel(&server, ChannelType::BasicChannelType, true).await;
    let mut publisher = Publisher::start(&channel.rtmp_url(&server), pattern_720p());
    wait_live(&server, &channel.arn, Duration::from_secs(15)).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    publisher.kill();
    wait_offline(&server, &channel.arn, Duration::from_secs(15)).await;

    let bodies = receive_until(&moto, &queue_url, Duration::from_secs(30), |bodies| {
        bodies.iter().any(|b| b["detail"]["event_name"] == "Session Ended")
    });
    let put: Vec<&str> = bodies.iter().filter_map(|b| b["detail"]["event_name"].as_str()).collect();
    for name in ["Session Created", "Stream Start", "Session Ended"] {
        assert!(put.contains(&name), "{put:?}");
    }
    for body in &bodies {
        assert_eq!(body["source"], "aws.ivs");
        assert_eq!(body["resources"], serde_json::json!([channel.arn]));
        assert_eq!(body["detail"]["stream_id"].as_str().unwrap().len(), 26);
    }

    live_stream.wait_for(Duration::from_secs(15), |messages| {
        stream_event_names(messages, &channel.arn).contains(&"Session Ended".to_owned())
    });
    let messages = live_stream.messages();
    let names = stream_event_names(&messages, &channel.arn);
    assert_eq!(names.first().map(String::as_str), Some("Session Created"), "{names:?}");
    assert!(names.contains(&"Stream Start".to_owned()), "{names:?}");
    assert!(messages.windows(2).all(|pair| pair[0].0 < pair[1].0), "ids increase");
    for (_, event, envelope) in &messages {
        assert_eq!(event, envelope["detail-type"].as_str().unwrap());
        assert_eq!(envelope["account"], ACCOUNT);
    }

    // Resuming after an id gives what followed it.
    let first_id = messages[0].0;
    let resumed = EventStream::open(&server, &["-H", &format!("Last-Event-ID: {first_id}")], 3);
    resumed.wait_for(Duration::from_secs(10), |resumed_messages| resumed_messages.len() + 1 >= messages.len());
    assert_eq!(resumed.messages().first().map(|m| m.0), Some(messages[1].0));
}

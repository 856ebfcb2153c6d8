//! Taking a node out of a cluster: SIGTERM drains it. It stops being ready (the load balancer
//! sends no one new to it), refuses API writes with 503 and takes no new publishes, while the
//! stream it ingests goes on and the other nodes still reach it (PutMetadata through another
//! node). Once its broadcaster stops, it exits at once; the stream's lease went with the
//! session, so the broadcaster's next publish goes live on another node without waiting out the
//! lease.

use std::time::{Duration, Instant};

use crate::harness::{error_of, raw_request, wait_live};
use crate::media::{Publisher, pattern_720p};
use crate::postgres::Postgres;

/// Well within the stream registry's lease (10 s): a drained node's channel need not wait it out.
const NEXT_PUBLISH_WITHIN: Duration = Duration::from_secs(6);

#[tokio::test]
async fn a_draining_node_finishes_its_stream_and_hands_the_channel_on() {
    let postgres = Postgres::start();
    let mut a = postgres.node_with("a", &["--drain-timeout", "30"]);
    let b = postgres.node("b");
    let out = a.client().create_channel().send().await.unwrap();
    let arn = out.channel().unwrap().arn().unwrap().to_owned();
    let key = out.stream_key().unwrap().value().unwrap().to_owned();
    let mut on_a = Publisher::start(&format!("rtmps://{}/app/{key}", a.rtmps_address), pattern_720p());
    wait_live(&a, &arn, Duration::from_secs(15)).await;

    a.signal("TERM");
    let deadline = Instant::now() + Duration::from_secs(5);
    while raw_request(&a, "GET", "/readyz", &[], "").status != 503 {
        assert!(Instant::now() < deadline, "a is still ready after SIGTERM");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (code, status) = error_of(a.client().create_channel().send().await);
    assert_eq!((code.as_str(), status), ("ServiceUnavailable", 503));
    // b still answers for the stream a drains, and a still takes what acts on it.
    b.client().get_stream().channel_arn(&arn).send().await.expect("the stream is live while a drains");
    b.client().put_metadata().channel_arn(&arn).metadata("still here").send().await.expect("PutMetadata through b");
    assert!(a.exited_within(Duration::from_secs(1)).is_none(), "a live stream holds the drain");

    // The broadcaster stops: a exits cleanly, and its next publish (through b) goes live at once.
    on_a.kill();
    let status = a.exited_within(Duration::from_secs(15)).expect("a exits once its stream ends");
    assert!(status.success(), "{status:?}");
    let started = Instant::now();
    let _on_b = Publisher::start(&format!("rtmps://{}/app/{key}", b.rtmps_address), pattern_720p());
    wait_live(&b, &arn, NEXT_PUBLISH_WITHIN).await;
    println!("live on b {:?} after a drained", started.elapsed());
    let listed = b.client().list_stream_sessions().channel_arn(&arn).send().await.unwrap();
    assert_eq!(listed.stream_sessions().len(), 2);
    let first = listed.stream_sessions()[1].stream_id().unwrap();
    let session = b.client().get_stream_session().channel_arn(&arn).stream_id(first).send().await.unwrap();
    let codes: Vec<&str> = session
        .stream_session()
        .unwrap()
        .truncated_events()
        .iter()
        .filter(|e| e.name() == Some("Session Ended"))
        .map(|e| e.code().unwrap_or_default())
        .collect();
    assert!(!codes.contains(&"IngestNodeLost"), "a's stream ended as a drained stream does: {codes:?}");
}

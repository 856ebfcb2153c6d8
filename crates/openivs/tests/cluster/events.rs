//! Events in a cluster: the nodes share one outbox, and each event reaches a webhook once
//! (one node at a time delivers to a target), whichever node raised it; when the delivering node
//! dies, another takes the delivery over from the stored cursor and nothing is lost.

use std::time::Duration;

use crate::harness::{Server, wait_live, wait_offline};
use crate::media::{Publisher, pattern_720p};
use crate::postgres::Postgres;
use crate::webhook_receiver::{Receiver, SECRET, names};

const ONE_STREAM: [&str; 4] = ["Session Created", "Stream Start", "Stream End", "Session Ended"];

/// A node delivering events to `receiver`.
fn delivering_node(postgres: &Postgres, node_id: &str, receiver: &Receiver) -> Server {
    let url = postgres.url.clone();
    Server::with_args(&[
        "--database-url",
        &url,
        "--node-id",
        node_id,
        "--event-webhook",
        &receiver.url,
        "--event-webhook-secret",
        SECRET,
    ])
}

/// Publishes to `server` until the channel is live there, then stops: one stream's events.
async fn one_stream(server: &Server, arn: &str, key: &str) {
    let mut publisher = Publisher::start(&format!("rtmps://{}/app/{key}", server.rtmps_address), pattern_720p());
    wait_live(server, arn, Duration::from_secs(15)).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    publisher.kill();
    wait_offline(server, arn, Duration::from_secs(15)).await;
}

#[tokio::test]
async fn every_event_reaches_a_webhook_once_and_survives_the_delivering_node() {
    let postgres = Postgres::start();
    let receiver = Receiver::start();
    let (a, b) = (delivering_node(&postgres, "a", &receiver), delivering_node(&postgres, "b", &receiver));
    let out = a.client().create_channel().send().await.unwrap();
    let arn = out.channel().unwrap().arn().unwrap().to_owned();
    let key = out.stream_key().unwrap().value().unwrap().to_owned();

    // A stream on b: its events once each, though both nodes deliver to the webhook.
    one_stream(&b, &arn, &key).await;
    receiver.wait_for(&arn, Duration::from_secs(15), |events| names(events).len() >= ONE_STREAM.len());
    // (Long enough for a second delivery, were there one.)
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert_eq!(names(&receiver.details_for(&arn)), ONE_STREAM);

    // The node that delivered them (its own counter says so) dies: the next stream's events,
    // raised on the other node, still arrive, once.
    let delivered = |node: &Server| {
        let metrics = crate::harness::raw_request(node, "GET", "/metrics", &[], "").body;
        metrics.lines().any(|l| l.starts_with("openivs_event_deliveries_total{outcome=\"delivered\"}"))
    };
    let (a_delivered, b_delivered) = (delivered(&a), delivered(&b));
    assert!(a_delivered != b_delivered, "one node delivered: a {a_delivered}, b {b_delivered}");
    let (mut leader, survivor) = if a_delivered { (a, b) } else { (b, a) };
    leader.kill();
    one_stream(&survivor, &arn, &key).await;
    let both: Vec<&str> = ONE_STREAM.iter().chain(ONE_STREAM.iter()).copied().collect();
    receiver.wait_for(&arn, Duration::from_secs(20), |events| names(events).len() >= both.len());
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert_eq!(names(&receiver.details_for(&arn)), both);
}

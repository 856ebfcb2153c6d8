//! The stream registry across nodes: a channel is live on one node at a time (a second publish
//! on another node is refused, as IVS refuses a second publisher), a dead node's channel can go
//! live elsewhere within the lease (10 s), its session then ends with `IngestNodeLost`, and a
//! node that was paused past its lease is fenced when it wakes: it stops its ingest and does not
//! write over the session another node ended.

use std::time::{Duration, Instant};

use aws_sdk_ivs::types::StreamSession;

use crate::harness::{Server, wait_live};
use crate::media::{Publisher, pattern_720p};
use crate::postgres::Postgres;

/// How long after a node stops renewing its lease another node may take its channel (the
/// lease, 10 s) and then some for a publish to go through.
const TAKEOVER_WITHIN: Duration = Duration::from_secs(16);

/// A channel created through `server`: its ARN and stream key.
async fn channel(server: &Server) -> (String, String) {
    let out = server.client().create_channel().send().await.unwrap();
    let arn = out.channel().unwrap().arn().unwrap().to_owned();
    (arn, out.stream_key().unwrap().value().unwrap().to_owned())
}

fn rtmps_url(server: &Server, key: &str) -> String {
    format!("rtmps://{}/app/{key}", server.rtmps_address)
}

/// The channel's sessions as `server` lists them, newest first, each as GetStreamSession says.
async fn sessions(server: &Server, arn: &str) -> Vec<StreamSession> {
    let listed = server.client().list_stream_sessions().channel_arn(arn).send().await.unwrap();
    let mut sessions = Vec::new();
    for summary in listed.stream_sessions() {
        let id = summary.stream_id().unwrap();
        let got = server.client().get_stream_session().channel_arn(arn).stream_id(id).send().await.unwrap();
        sessions.push(got.stream_session().unwrap().clone());
    }
    sessions
}

/// The code of the session's "Session Ended" event, if it has ended.
fn end_code(session: &StreamSession) -> Option<String> {
    session.end_time()?;
    let ended = session.truncated_events().iter().find(|e| e.name() == Some("Session Ended"))?;
    Some(ended.code().unwrap_or_default().to_owned())
}

/// Publishes to `server` again and again (each refused publish exits) until the channel is live
/// there; how long that took.
async fn publish_until_live(server: &Server, arn: &str, key: &str, limit: Duration) -> (Publisher, Duration) {
    let started = Instant::now();
    loop {
        let mut publisher = Publisher::start(&rtmps_url(server, key), pattern_720p());
        let deadline = Instant::now() + Duration::from_secs(3);
        while Instant::now() < deadline {
            if server.client().get_stream().channel_arn(arn).send().await.is_ok() {
                return (publisher, started.elapsed());
            }
            if publisher.exited_within(Duration::from_millis(100)).is_some() {
                break;
            }
        }
        assert!(started.elapsed() < limit, "{arn} did not go live within {limit:?}; log:\n{}", server.log_text());
        publisher.kill();
    }
}

#[tokio::test]
async fn a_channel_lives_on_one_node_and_moves_when_that_node_dies() {
    let postgres = Postgres::start();
    let (mut a, b) = (postgres.node("a"), postgres.node("b"));
    let (arn, key) = channel(&a).await;
    let _on_a = Publisher::start(&rtmps_url(&a, &key), pattern_720p());
    wait_live(&a, &arn, Duration::from_secs(15)).await;

    // A second broadcaster on b is refused while a holds the stream.
    let mut second = Publisher::start(&rtmps_url(&b, &key), pattern_720p());
    let refused = second.exited_within(Duration::from_secs(10));
    assert!(refused.as_ref().is_some_and(|(status, _)| !status.success()), "{refused:?}");
    assert_eq!(sessions(&b, &arn).await.len(), 1, "the refused publish opened no session");

    // a dies: within the lease, the broadcaster's retries go live on b.
    a.kill();
    let (_on_b, took) = publish_until_live(&b, &arn, &key, TAKEOVER_WITHIN).await;
    println!("live on b {took:?} after a died");
    let sessions = sessions(&b, &arn).await;
    assert_eq!(sessions.len(), 2, "{sessions:?}");
    assert_eq!(end_code(&sessions[0]), None, "the new stream is live: {:?}", sessions[0]);
    assert_eq!(end_code(&sessions[1]).as_deref(), Some("IngestNodeLost"), "{:?}", sessions[1]);
    let events: Vec<&str> = sessions[1].truncated_events().iter().filter_map(|e| e.name()).collect();
    assert_eq!(events[..2], ["Session Ended", "Stream End"], "{events:?}");
}

#[tokio::test]
async fn a_node_paused_past_its_lease_is_fenced_when_it_wakes() {
    let postgres = Postgres::start();
    let (a, b) = (postgres.node("a"), postgres.node("b"));
    let (arn, key) = channel(&a).await;
    let mut on_a = Publisher::start(&rtmps_url(&a, &key), pattern_720p());
    wait_live(&a, &arn, Duration::from_secs(15)).await;

    // a stands still (a long GC pause, a frozen VM): b ends its session once the lease expires,
    // and the channel goes live on b.
    a.signal("STOP");
    let paused = Instant::now();
    let result = async {
        let deadline = Instant::now() + TAKEOVER_WITHIN + Duration::from_secs(5);
        while end_code(&sessions(&b, &arn).await[0]).is_none() {
            assert!(Instant::now() < deadline, "b never ended a's session");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        println!("b ended a's session {:?} after a paused", paused.elapsed());
        publish_until_live(&b, &arn, &key, Duration::from_secs(10)).await
    }
    .await;
    a.signal("CONT");
    let (_on_b, _) = result;

    // a wakes up fenced: its ingest stops (GetStream through a then answers with b's stream),
    // and the session b ended stays ended.
    let b_stream = sessions(&b, &arn).await[0].stream_id().unwrap().to_owned();
    let deadline = Instant::now() + Duration::from_secs(6);
    loop {
        let answer = a.client().get_stream().channel_arn(&arn).send().await;
        let stream_id = answer.ok().and_then(|out| out.stream().and_then(|s| s.stream_id().map(str::to_owned)));
        if stream_id.as_deref() == Some(b_stream.as_str()) {
            break;
        }
        assert!(Instant::now() < deadline, "a still answers for its own stream ({stream_id:?})");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let gone = on_a.exited_within(Duration::from_secs(6));
    assert!(gone.is_some(), "a still takes the broadcaster's stream");
    tokio::time::sleep(Duration::from_secs(3)).await;
    let sessions = sessions(&b, &arn).await;
    assert_eq!(sessions.len(), 2, "{sessions:?}");
    assert_eq!(end_code(&sessions[0]), None, "b's stream is live: {:?}", sessions[0]);
    assert_eq!(end_code(&sessions[1]).as_deref(), Some("IngestNodeLost"), "{:?}", sessions[1]);
    assert!(b.client().get_stream().channel_arn(&arn).send().await.is_ok(), "live on b");
}

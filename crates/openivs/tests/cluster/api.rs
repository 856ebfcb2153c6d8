//! The API of a live stream answers the same on every node: GetStream, ListStreams, PutMetadata,
//! InsertAdBreak and StopStream sent to a node that does not ingest the stream are run by the
//! node that does (an internal call signed with the cluster secret), errors included; the
//! internal endpoint refuses anything not signed with that secret.

use std::time::Duration;

use aws_sdk_ivs::error::ProvideErrorMetadata;

use crate::harness::{raw_request, wait_live, wait_offline};
use crate::media::{Publisher, pattern_720p};
use crate::postgres::Postgres;

#[tokio::test]
async fn every_node_answers_for_a_stream_another_node_ingests() {
    let postgres = Postgres::start();
    let (a, b) = (postgres.node("a"), postgres.node("b"));
    let out = a.client().create_channel().send().await.unwrap();
    let arn = out.channel().unwrap().arn().unwrap().to_owned();
    let key = out.stream_key().unwrap().value().unwrap().to_owned();
    let mut publisher = Publisher::start(&format!("rtmps://{}/app/{key}", a.rtmps_address), pattern_720p());
    wait_live(&a, &arn, Duration::from_secs(15)).await;

    // GetStream and ListStreams: the same stream through either node.
    let on_a = a.client().get_stream().channel_arn(&arn).send().await.unwrap();
    let on_b = b.client().get_stream().channel_arn(&arn).send().await.unwrap();
    let (stream_a, stream_b) = (on_a.stream().unwrap(), on_b.stream().unwrap());
    assert_eq!(stream_a.stream_id(), stream_b.stream_id());
    assert_eq!(stream_a.start_time(), stream_b.start_time());
    assert_eq!(stream_b.state().map(|s| s.as_str()), Some("LIVE"));
    let listed = b.client().list_streams().send().await.unwrap();
    let ids: Vec<&str> = listed.streams().iter().filter_map(|s| s.stream_id()).collect();
    assert_eq!(ids, [stream_a.stream_id().unwrap()], "b lists a's stream");
    assert_eq!(a.client().list_streams().send().await.unwrap().streams().len(), 1, "once");

    // PutMetadata through b reaches the stream; an error a gives comes back as it was.
    b.client().put_metadata().channel_arn(&arn).metadata("from b").send().await.unwrap();
    let refused = b.client().insert_ad_break().channel_arn(&arn).duration_seconds(10).send().await.unwrap_err();
    assert_eq!(refused.code(), Some("ConflictException"), "the channel has no ad configuration: {refused:?}");
    let other = b.client().create_channel().send().await.unwrap();
    let offline = b.client().get_stream().channel_arn(other.channel().unwrap().arn().unwrap()).send().await;
    assert_eq!(offline.unwrap_err().code(), Some("ChannelNotBroadcasting"));

    // The internal endpoint: nothing without the cluster's signature.
    let call = r#"{"account":"123456789012","region":"us-west-2","operation":"StopStream","input":{}}"#;
    for headers in [vec![], vec![("x-openivs-cluster-auth".to_owned(), "1:00".to_owned())]] {
        let forged = raw_request(&b, "POST", "/_openivs/cluster/api", &headers, call);
        assert_eq!(forged.status, 403, "{}", forged.body);
    }

    // StopStream through b ends the stream on a.
    b.client().stop_stream().channel_arn(&arn).send().await.unwrap();
    wait_offline(&a, &arn, Duration::from_secs(5)).await;
    assert!(publisher.exited_within(Duration::from_secs(5)).is_some(), "the broadcaster was disconnected");
    let ended = b.client().get_stream_session().channel_arn(&arn).send().await.unwrap();
    assert!(ended.stream_session().unwrap().end_time().is_some());
}

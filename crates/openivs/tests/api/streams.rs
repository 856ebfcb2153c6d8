//! The live-only operations on offline channels, and stream listings with nothing live.

use aws_sdk_ivs::types::{StreamFilters, StreamHealth};

use crate::assert_error;
use crate::harness::{ACCOUNT, REGION, Server};

#[tokio::test]
async fn offline_channels_are_not_broadcasting() {
    let server = Server::start();
    let client = server.client();
    let arn = client.create_channel().send().await.unwrap().channel().unwrap().arn().unwrap().to_owned();
    assert_error!(client.get_stream().channel_arn(&arn).send(), "ChannelNotBroadcasting", 404);
    assert_error!(client.stop_stream().channel_arn(&arn).send(), "ChannelNotBroadcasting", 404);
    assert_error!(client.put_metadata().channel_arn(&arn).metadata("hello").send(), "ChannelNotBroadcasting", 404);
    assert_error!(
        client.insert_ad_break().channel_arn(&arn).duration_seconds(30).send(),
        "ChannelNotBroadcasting",
        404
    );

    let missing = format!("arn:aws:ivs:{REGION}:{ACCOUNT}:channel/EEEEEEEEEEEE");
    assert_error!(client.get_stream().channel_arn(&missing).send(), "ResourceNotFoundException", 404);
    assert_error!(client.stop_stream().channel_arn(&missing).send(), "ResourceNotFoundException", 404);
    assert_error!(client.put_metadata().channel_arn(&missing).metadata("x").send(), "ResourceNotFoundException", 404);
    assert_error!(
        client.insert_ad_break().channel_arn(&missing).duration_seconds(30).send(),
        "ResourceNotFoundException",
        404
    );
}

#[tokio::test]
async fn live_operation_validation() {
    let server = Server::start();
    let client = server.client();
    let arn = client.create_channel().send().await.unwrap().channel().unwrap().arn().unwrap().to_owned();
    assert_error!(
        client.put_metadata().channel_arn(&arn).metadata("x".repeat(1025)).send(),
        "ValidationException",
        400
    );
    assert_error!(client.put_metadata().channel_arn(&arn).send(), "ValidationException", 400);
    assert_error!(client.insert_ad_break().channel_arn(&arn).duration_seconds(301).send(), "ValidationException", 400);
    assert_error!(
        client.insert_ad_break().channel_arn(&arn).duration_seconds(30).ad_break_id("short").send(),
        "ValidationException",
        400
    );
    assert_error!(
        client.get_stream_session().channel_arn(&arn).stream_id("st-tooshort").send(),
        "ValidationException",
        400
    );
}

#[tokio::test]
async fn stream_listings_without_live_streams() {
    let server = Server::start();
    let client = server.client();
    let arn = client.create_channel().send().await.unwrap().channel().unwrap().arn().unwrap().to_owned();
    let streams = client.list_streams().send().await.unwrap();
    assert!(streams.streams().is_empty());
    assert!(streams.next_token().is_none());
    let healthy = client
        .list_streams()
        .filter_by(StreamFilters::builder().health(StreamHealth::StreamHealthy).build())
        .send()
        .await
        .unwrap();
    assert!(healthy.streams().is_empty());
    let sessions = client.list_stream_sessions().channel_arn(&arn).send().await.unwrap();
    assert!(sessions.stream_sessions().is_empty());
    assert_error!(client.get_stream_session().channel_arn(&arn).send(), "ResourceNotFoundException", 404);
    assert_error!(
        client.get_stream_session().channel_arn(&arn).stream_id("st-1A2b3c4D5e6F78ghij9Klmn").send(),
        "ResourceNotFoundException",
        404
    );
    let missing = format!("arn:aws:ivs:{REGION}:{ACCOUNT}:channel/FFFFFFFFFFFF");
    assert_error!(client.list_stream_sessions().channel_arn(&missing).send(), "ResourceNotFoundException", 404);
    assert_error!(client.list_streams().max_results(101).send(), "ValidationException", 400);
}

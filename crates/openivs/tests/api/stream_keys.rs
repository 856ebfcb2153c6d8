//! CreateStreamKey, GetStreamKey, BatchGetStreamKey, DeleteStreamKey, ListStreamKeys.

use crate::assert_error;
use crate::harness::{ACCOUNT, REGION, Server};

#[tokio::test]
async fn one_stream_key_per_channel() {
    let server = Server::start();
    let client = server.client();
    let created = client.create_channel().send().await.unwrap();
    let channel_arn = created.channel().unwrap().arn().unwrap();
    let first = created.stream_key().unwrap().clone();

    assert_error!(client.create_stream_key().channel_arn(channel_arn).send(), "ServiceQuotaExceededException", 402);

    let fetched = client.get_stream_key().arn(first.arn().unwrap()).send().await.unwrap();
    assert_eq!(fetched.stream_key(), Some(&first));

    // Rotation: delete, then create a new one with a new value.
    client.delete_stream_key().arn(first.arn().unwrap()).send().await.unwrap();
    assert_error!(client.get_stream_key().arn(first.arn().unwrap()).send(), "ResourceNotFoundException", 404);
    assert_error!(client.delete_stream_key().arn(first.arn().unwrap()).send(), "ResourceNotFoundException", 404);
    let rotated = client.create_stream_key().channel_arn(channel_arn).tags("k", "v").send().await.unwrap();
    let rotated = rotated.stream_key().unwrap();
    assert_ne!(rotated.value(), first.value());
    assert_eq!(rotated.channel_arn(), Some(channel_arn));
    assert_eq!(rotated.tags().unwrap().get("k").map(String::as_str), Some("v"));
}

#[tokio::test]
async fn stream_key_errors() {
    let server = Server::start();
    let client = server.client();
    let missing_channel = format!("arn:aws:ivs:{REGION}:{ACCOUNT}:channel/CCCCCCCCCCCC");
    assert_error!(client.create_stream_key().channel_arn(&missing_channel).send(), "ResourceNotFoundException", 404);
    assert_error!(client.list_stream_keys().channel_arn(&missing_channel).send(), "ResourceNotFoundException", 404);
    assert_error!(client.create_stream_key().send(), "ValidationException", 400);
    assert_error!(client.get_stream_key().arn("arn:aws:ivs:us-west-2:1:channel/x").send(), "ValidationException", 400);
    let channel = client.create_channel().send().await.unwrap();
    let arn = channel.channel().unwrap().arn().unwrap();
    assert_error!(client.list_stream_keys().channel_arn(arn).max_results(51).send(), "ValidationException", 400);
    assert_error!(
        client.create_stream_key().channel_arn(&missing_channel).tags("aws:reserved", "x").send(),
        "ValidationException",
        400
    );
}

#[tokio::test]
async fn list_and_batch_get_stream_keys() {
    let server = Server::start();
    let client = server.client();
    let created = client.create_channel().send().await.unwrap();
    let channel_arn = created.channel().unwrap().arn().unwrap();
    let key = created.stream_key().unwrap();
    let listed = client.list_stream_keys().channel_arn(channel_arn).send().await.unwrap();
    assert_eq!(listed.stream_keys().len(), 1);
    assert_eq!(listed.stream_keys()[0].arn(), key.arn());
    assert_eq!(listed.stream_keys()[0].channel_arn(), Some(channel_arn));
    assert!(listed.next_token().is_none());

    let missing = format!("arn:aws:ivs:{REGION}:{ACCOUNT}:stream-key/DDDDDDDDDDDD");
    let batch = client.batch_get_stream_key().arns(key.arn().unwrap()).arns(&missing).send().await.unwrap();
    assert_eq!(batch.stream_keys().len(), 1);
    assert_eq!(batch.stream_keys()[0].value(), key.value());
    assert_eq!(batch.errors().len(), 1);
    assert_eq!(batch.errors()[0].code(), Some("ResourceNotFoundException"));
}

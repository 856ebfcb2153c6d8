//! StartViewerSessionRevocation and BatchStartViewerSessionRevocation.

use aws_sdk_ivs::types::BatchStartViewerSessionRevocationViewerSession;

use crate::assert_error;
use crate::harness::{ACCOUNT, REGION, Server};

#[tokio::test]
async fn revocations() {
    let server = Server::start();
    let client = server.client();
    let arn = client.create_channel().send().await.unwrap().channel().unwrap().arn().unwrap().to_owned();
    client
        .start_viewer_session_revocation()
        .channel_arn(&arn)
        .viewer_id("viewer-1")
        .viewer_session_versions_less_than_or_equal_to(3)
        .send()
        .await
        .unwrap();
    let missing = format!("arn:aws:ivs:{REGION}:{ACCOUNT}:channel/GGGGGGGGGGGG");
    assert_error!(
        client.start_viewer_session_revocation().channel_arn(&missing).viewer_id("v").send(),
        "ResourceNotFoundException",
        404
    );
    assert_error!(
        client.start_viewer_session_revocation().channel_arn(&arn).viewer_id("v".repeat(41)).send(),
        "ValidationException",
        400
    );
    assert_error!(
        client
            .start_viewer_session_revocation()
            .channel_arn(&arn)
            .viewer_id("v")
            .viewer_session_versions_less_than_or_equal_to(-1)
            .send(),
        "ValidationException",
        400
    );

    let item = |channel: &str, viewer: &str| {
        BatchStartViewerSessionRevocationViewerSession::builder()
            .channel_arn(channel)
            .viewer_id(viewer)
            .build()
            .unwrap()
    };
    let out = client
        .batch_start_viewer_session_revocation()
        .viewer_sessions(item(&arn, "a"))
        .viewer_sessions(item(&missing, "b"))
        .send()
        .await
        .unwrap();
    assert_eq!(out.errors().len(), 1);
    assert_eq!(out.errors()[0].channel_arn(), missing);
    assert_eq!(out.errors()[0].viewer_id(), "b");
    assert_eq!(out.errors()[0].code(), Some("ResourceNotFoundException"));
    let too_many: Vec<_> = (0..21).map(|i| item(&arn, &format!("v{i}"))).collect();
    assert_error!(
        client.batch_start_viewer_session_revocation().set_viewer_sessions(Some(too_many)).send(),
        "ValidationException",
        400
    );
}

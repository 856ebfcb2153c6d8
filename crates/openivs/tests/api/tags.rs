//! TagResource, UntagResource, ListTagsForResource on every resource type, through
//! `/tags/{resourceArn}` with the ARN percent-encoded in one path segment.

use crate::assert_error;
use crate::harness::{ACCOUNT, P384_PUBLIC_KEYS, REGION, Server};

#[tokio::test]
async fn tags_on_every_resource_type() {
    let server = Server::start();
    let client = server.client();
    let channel = client.create_channel().send().await.unwrap();
    let destination = crate::harness::destination("bucket");
    let arns = vec![
        channel.channel().unwrap().arn().unwrap().to_owned(),
        channel.stream_key().unwrap().arn().unwrap().to_owned(),
        client
            .import_playback_key_pair()
            .public_key_material(P384_PUBLIC_KEYS[0])
            .send()
            .await
            .unwrap()
            .key_pair()
            .unwrap()
            .arn()
            .unwrap()
            .to_owned(),
        client
            .create_recording_configuration()
            .destination_configuration(destination)
            .send()
            .await
            .unwrap()
            .recording_configuration()
            .unwrap()
            .arn()
            .to_owned(),
        client
            .create_playback_restriction_policy()
            .send()
            .await
            .unwrap()
            .playback_restriction_policy()
            .unwrap()
            .arn()
            .to_owned(),
        client
            .create_ad_configuration()
            .media_tailor_playback_configurations(
                aws_sdk_ivs::types::MediaTailorPlaybackConfiguration::builder().build(),
            )
            .send()
            .await
            .unwrap()
            .ad_configuration()
            .unwrap()
            .arn()
            .to_owned(),
        client
            .create_failover_slate_configuration()
            .send()
            .await
            .unwrap()
            .failover_slate_configuration()
            .unwrap()
            .arn()
            .to_owned(),
    ];
    for arn in &arns {
        client
            .tag_resource()
            .resource_arn(arn)
            .tags("a", "1")
            .tags("b", "2")
            .tags("Key with spaces", "välue")
            .send()
            .await
            .unwrap();
        client.tag_resource().resource_arn(arn).tags("a", "one").send().await.unwrap();
        let tags = client.list_tags_for_resource().resource_arn(arn).send().await.unwrap();
        let tags = tags.tags();
        assert_eq!(tags.len(), 3, "{arn}: {tags:?}");
        assert_eq!(tags.get("a").map(String::as_str), Some("one"));
        client
            .untag_resource()
            .resource_arn(arn)
            .tag_keys("b")
            .tag_keys("Key with spaces")
            .tag_keys("absent")
            .send()
            .await
            .unwrap();
        let tags = client.list_tags_for_resource().resource_arn(arn).send().await.unwrap();
        assert_eq!(tags.tags().keys().collect::<Vec<_>>(), vec!["a"], "{arn}");
    }
    // Tags show on the resource itself.
    let fetched = client.get_channel().arn(&arns[0]).send().await.unwrap();
    assert_eq!(fetched.channel().unwrap().tags().unwrap().get("a").map(String::as_str), Some("one"));
}

#[tokio::test]
async fn tag_limits_and_errors() {
    let server = Server::start();
    let client = server.client();
    let arn = client.create_channel().send().await.unwrap().channel().unwrap().arn().unwrap().to_owned();
    assert_error!(client.tag_resource().resource_arn(&arn).tags("aws:owner", "x").send(), "ValidationException", 400);
    assert_error!(
        client.tag_resource().resource_arn(&arn).tags("k", "v".repeat(257)).send(),
        "ValidationException",
        400
    );
    assert_error!(client.tag_resource().resource_arn(&arn).tags("bad#key", "v").send(), "ValidationException", 400);
    assert_error!(client.untag_resource().resource_arn(&arn).tag_keys("aws:owner").send(), "ValidationException", 400);
    let mut request = client.tag_resource().resource_arn(&arn);
    for i in 0..40 {
        request = request.tags(format!("k{i}"), "v");
    }
    request.send().await.unwrap();
    let mut request = client.tag_resource().resource_arn(&arn);
    for i in 40..51 {
        request = request.tags(format!("k{i}"), "v");
    }
    // 40 + 11 = 51 > 50.
    assert_error!(request.send(), "ValidationException", 400);
    assert_eq!(client.list_tags_for_resource().resource_arn(&arn).send().await.unwrap().tags().len(), 40);

    let missing = format!("arn:aws:ivs:{REGION}:{ACCOUNT}:channel/HHHHHHHHHHHH");
    assert_error!(client.list_tags_for_resource().resource_arn(&missing).send(), "ResourceNotFoundException", 404);
    assert_error!(client.tag_resource().resource_arn(&missing).tags("a", "b").send(), "ResourceNotFoundException", 404);
    assert_error!(
        client.untag_resource().resource_arn(&missing).tag_keys("a").send(),
        "ResourceNotFoundException",
        404
    );
    let other_account = format!("arn:aws:ivs:{REGION}:999999999999:channel/HHHHHHHHHHHH");
    assert_error!(
        client.list_tags_for_resource().resource_arn(&other_account).send(),
        "ResourceNotFoundException",
        404
    );
    assert_error!(
        client.list_tags_for_resource().resource_arn("arn:aws:s3:::bucket").send(),
        "ValidationException",
        400
    );
}

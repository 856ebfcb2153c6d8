//! Durability: every resource survives a restart.

use crate::harness::{P384_PUBLIC_KEYS, Server, destination};

#[tokio::test]
async fn a_restart_keeps_every_resource() {
    let mut server = Server::start();
    let client = server.client();
    let recording = client
        .create_recording_configuration()
        .destination_configuration(destination("bucket"))
        .send()
        .await
        .unwrap()
        .recording_configuration()
        .unwrap()
        .clone();
    let created = client
        .create_channel()
        .name("durable")
        .recording_configuration_arn(recording.arn())
        .tags("k", "v")
        .send()
        .await
        .unwrap();
    let channel = created.channel().unwrap().clone();
    let stream_key = created.stream_key().unwrap().clone();
    let key_pair = client
        .import_playback_key_pair()
        .public_key_material(P384_PUBLIC_KEYS[0])
        .send()
        .await
        .unwrap()
        .key_pair()
        .unwrap()
        .clone();
    let policy = client
        .create_playback_restriction_policy()
        .name("pol")
        .send()
        .await
        .unwrap()
        .playback_restriction_policy()
        .unwrap()
        .clone();
    let ad = client
        .create_ad_configuration()
        .media_tailor_playback_configurations(aws_sdk_ivs::types::MediaTailorPlaybackConfiguration::builder().build())
        .send()
        .await
        .unwrap()
        .ad_configuration()
        .unwrap()
        .clone();
    let slate = client
        .create_failover_slate_configuration()
        .send()
        .await
        .unwrap()
        .failover_slate_configuration()
        .unwrap()
        .clone();
    client.tag_resource().resource_arn(policy.arn()).tags("t", "1").send().await.unwrap();
    let page = client.list_channels().max_results(1).send().await.unwrap();
    assert!(page.next_token().is_none());
    client.create_channel().name("second").send().await.unwrap();
    let token = client.list_channels().max_results(1).send().await.unwrap().next_token().unwrap().to_owned();

    server.restart();
    let client = server.client();
    let after = client.get_channel().arn(channel.arn().unwrap()).send().await.unwrap();
    let after = after.channel().unwrap();
    assert_eq!(after.name(), Some("durable"));
    assert_eq!(after.recording_configuration_arn(), Some(recording.arn()));
    assert_eq!(after.tags(), channel.tags());
    assert_eq!(after.srt().unwrap().passphrase(), channel.srt().unwrap().passphrase());
    // URLs follow the server's current address (the test server's listeners take any free port).
    assert_eq!(after.srt().unwrap().endpoint(), Some(server.srt_address.as_str()));
    assert!(after.playback_url().unwrap().contains(&format!(":{}/", server.port)));
    assert_eq!(
        client.get_stream_key().arn(stream_key.arn().unwrap()).send().await.unwrap().stream_key(),
        Some(&stream_key)
    );
    assert_eq!(
        client.get_playback_key_pair().arn(key_pair.arn().unwrap()).send().await.unwrap().key_pair(),
        Some(&key_pair)
    );
    assert_eq!(
        client.get_recording_configuration().arn(recording.arn()).send().await.unwrap().recording_configuration(),
        Some(&recording)
    );
    let policy_after = client.get_playback_restriction_policy().arn(policy.arn()).send().await.unwrap();
    assert_eq!(
        policy_after.playback_restriction_policy().unwrap().tags().unwrap().get("t").map(String::as_str),
        Some("1")
    );
    assert_eq!(client.get_ad_configuration().arn(ad.arn()).send().await.unwrap().ad_configuration(), Some(&ad));
    assert_eq!(
        client.get_failover_slate_configuration().arn(slate.arn()).send().await.unwrap().failover_slate_configuration(),
        Some(&slate)
    );
    // Pagination tokens stay valid across the restart.
    let next = client.list_channels().max_results(1).next_token(token).send().await.unwrap();
    assert_eq!(next.channels()[0].name(), Some("second"));
}

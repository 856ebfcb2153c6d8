//! Recording configurations, playback restriction policies, ad configurations and failover
//! slate configurations: the resources channels refer to.

use aws_sdk_ivs::types::{
    DestinationConfiguration, MediaTailorPlaybackConfiguration, PostRollConfiguration, RecordingConfigurationState,
    RecordingMode, RenditionConfiguration, RenditionConfigurationRendition, RenditionConfigurationRenditionSelection,
    ThumbnailConfiguration, ThumbnailConfigurationResolution, ThumbnailConfigurationStorage,
};

use crate::assert_error;
use crate::harness::{ACCOUNT, REGION, Server, destination};

#[tokio::test]
async fn recording_configurations() {
    let server = Server::start();
    let client = server.client();
    let created = client
        .create_recording_configuration()
        .name("rec")
        .destination_configuration(destination("my-bucket"))
        .send()
        .await
        .unwrap();
    let config = created.recording_configuration().unwrap();
    assert!(config.arn().starts_with(&format!("arn:aws:ivs:{REGION}:{ACCOUNT}:recording-configuration/")));
    assert_eq!(config.state(), &RecordingConfigurationState::Active);
    assert_eq!(config.recording_reconnect_window_seconds(), 0);
    let thumbnails = config.thumbnail_configuration().unwrap();
    assert_eq!(thumbnails.recording_mode(), Some(&RecordingMode::Interval));
    assert_eq!(thumbnails.target_interval_seconds(), Some(60));
    assert_eq!(thumbnails.storage(), &[ThumbnailConfigurationStorage::Sequential]);
    assert!(thumbnails.resolution().is_none());
    let renditions = config.rendition_configuration().unwrap();
    assert_eq!(renditions.rendition_selection(), Some(&RenditionConfigurationRenditionSelection::All));

    let custom = client
        .create_recording_configuration()
        .destination_configuration(destination("other.bucket"))
        .recording_reconnect_window_seconds(60)
        .thumbnail_configuration(
            ThumbnailConfiguration::builder()
                .recording_mode(RecordingMode::Interval)
                .target_interval_seconds(10)
                .resolution(ThumbnailConfigurationResolution::Hd)
                .storage(ThumbnailConfigurationStorage::Sequential)
                .storage(ThumbnailConfigurationStorage::Latest)
                .build(),
        )
        .rendition_configuration(
            RenditionConfiguration::builder()
                .rendition_selection(RenditionConfigurationRenditionSelection::Custom)
                .renditions(RenditionConfigurationRendition::Hd)
                .build(),
        )
        .send()
        .await
        .unwrap();
    let custom = custom.recording_configuration().unwrap();
    assert_eq!(custom.recording_reconnect_window_seconds(), 60);
    assert_eq!(custom.thumbnail_configuration().unwrap().storage().len(), 2);
    assert_eq!(custom.rendition_configuration().unwrap().renditions(), &[RenditionConfigurationRendition::Hd]);

    let fetched = client.get_recording_configuration().arn(config.arn()).send().await.unwrap();
    assert_eq!(fetched.recording_configuration(), Some(config));
    let listed = client.list_recording_configurations().send().await.unwrap();
    assert_eq!(listed.recording_configurations().len(), 2);
    assert_eq!(
        listed.recording_configurations()[0].destination_configuration().unwrap().s3().unwrap().bucket_name(),
        "my-bucket"
    );

    assert_error!(
        client.create_recording_configuration().destination_configuration(destination("UPPER")).send(),
        "ValidationException",
        400
    );
    assert_error!(
        client.create_recording_configuration().destination_configuration(destination("ab")).send(),
        "ValidationException",
        400
    );
    assert_error!(
        client
            .create_recording_configuration()
            .destination_configuration(DestinationConfiguration::builder().build())
            .send(),
        "ValidationException",
        400
    );
    assert_error!(
        client
            .create_recording_configuration()
            .destination_configuration(destination("bucket"))
            .recording_reconnect_window_seconds(301)
            .send(),
        "ValidationException",
        400
    );
    assert_error!(
        client
            .create_recording_configuration()
            .destination_configuration(destination("bucket"))
            .rendition_configuration(
                RenditionConfiguration::builder()
                    .rendition_selection(RenditionConfigurationRenditionSelection::Custom)
                    .build()
            )
            .send(),
        "ValidationException",
        400
    );

    // In use by a channel → ConflictException; free → 204.
    client.create_channel().recording_configuration_arn(config.arn()).send().await.unwrap();
    assert_error!(client.delete_recording_configuration().arn(config.arn()).send(), "ConflictException", 409);
    client.delete_recording_configuration().arn(custom.arn()).send().await.unwrap();
    assert_error!(client.get_recording_configuration().arn(custom.arn()).send(), "ResourceNotFoundException", 404);
}

#[tokio::test]
async fn recording_configuration_quota() {
    let server = Server::with_args(&["--quota-recording-configurations", "1"]);
    let client = server.client();
    client.create_recording_configuration().destination_configuration(destination("bucket")).send().await.unwrap();
    assert_error!(
        client.create_recording_configuration().destination_configuration(destination("bucket")).send(),
        "ServiceQuotaExceededException",
        402
    );
}

#[tokio::test]
async fn playback_restriction_policies() {
    let server = Server::start();
    let client = server.client();
    let created = client.create_playback_restriction_policy().name("p1").send().await.unwrap();
    let policy = created.playback_restriction_policy().unwrap();
    assert!(policy.allowed_countries().is_empty());
    assert!(policy.allowed_origins().is_empty());
    assert_eq!(policy.enable_strict_origin_enforcement(), Some(false));
    let arn = policy.arn();

    let updated = client
        .update_playback_restriction_policy()
        .arn(arn)
        .allowed_countries("US")
        .allowed_countries("MX")
        .allowed_origins("https://example.com")
        .enable_strict_origin_enforcement(true)
        .send()
        .await
        .unwrap();
    let updated = updated.playback_restriction_policy().unwrap();
    assert_eq!(updated.allowed_countries(), &["US".to_string(), "MX".to_string()]);
    assert_eq!(updated.name(), Some("p1"));
    assert_eq!(
        client.get_playback_restriction_policy().arn(arn).send().await.unwrap().playback_restriction_policy(),
        Some(updated)
    );

    assert_error!(
        client.create_playback_restriction_policy().allowed_countries("USA").send(),
        "ValidationException",
        400
    );
    client.create_playback_restriction_policy().name("p2").send().await.unwrap();
    // The model documents a default page size of 1 for this listing.
    let first = client.list_playback_restriction_policies().send().await.unwrap();
    assert_eq!(first.playback_restriction_policies().len(), 1);
    let second =
        client.list_playback_restriction_policies().next_token(first.next_token().unwrap()).send().await.unwrap();
    assert_eq!(second.playback_restriction_policies()[0].name(), Some("p2"));
    assert!(second.next_token().is_none());

    client.delete_playback_restriction_policy().arn(arn).send().await.unwrap();
    assert_error!(client.get_playback_restriction_policy().arn(arn).send(), "ResourceNotFoundException", 404);
    assert_error!(
        client.update_playback_restriction_policy().arn(arn).name("x").send(),
        "ResourceNotFoundException",
        404
    );
}

#[tokio::test]
async fn ad_configurations() {
    let server = Server::start();
    let client = server.client();
    let playback = |name: &str| {
        MediaTailorPlaybackConfiguration::builder()
            .playback_configuration_arn(format!("arn:aws:mediatailor:{REGION}:{ACCOUNT}:playbackConfiguration/{name}"))
            .build()
    };
    let created = client
        .create_ad_configuration()
        .name("ads")
        .media_tailor_playback_configurations(playback("one"))
        .send()
        .await
        .unwrap();
    let config = created.ad_configuration().unwrap();
    assert!(config.arn().starts_with(&format!("arn:aws:ivs:{REGION}:{ACCOUNT}:ad-configuration/")));
    let post_roll = config.post_roll_configuration().unwrap();
    assert_eq!((post_roll.enabled(), post_roll.duration_seconds()), (false, 15));

    let updated = client
        .update_ad_configuration()
        .arn(config.arn())
        .post_roll_configuration(PostRollConfiguration::builder().enabled(true).duration_seconds(30).build().unwrap())
        .media_tailor_playback_configurations(playback("one"))
        .media_tailor_playback_configurations(playback("two"))
        .send()
        .await
        .unwrap();
    let updated = updated.ad_configuration().unwrap();
    assert_eq!(updated.media_tailor_playback_configurations().len(), 2);
    assert_eq!(updated.post_roll_configuration().unwrap().duration_seconds(), 30);
    assert_eq!(updated.name(), Some("ads"));
    assert_eq!(client.get_ad_configuration().arn(config.arn()).send().await.unwrap().ad_configuration(), Some(updated));
    assert_eq!(client.list_ad_configurations().send().await.unwrap().ad_configurations().len(), 1);

    assert_error!(client.create_ad_configuration().send(), "ValidationException", 400);
    let four = (0..4).map(|i| playback(&format!("p{i}"))).collect::<Vec<_>>();
    assert_error!(
        client.create_ad_configuration().set_media_tailor_playback_configurations(Some(four)).send(),
        "ValidationException",
        400
    );

    let channel = client.create_channel().ad_configuration_arn(config.arn()).send().await.unwrap();
    assert_eq!(channel.channel().unwrap().ad_configuration_arn(), Some(config.arn()));
    assert_error!(client.delete_ad_configuration().arn(config.arn()).send(), "ConflictException", 409);
    client.delete_channel().arn(channel.channel().unwrap().arn().unwrap()).send().await.unwrap();
    client.delete_ad_configuration().arn(config.arn()).send().await.unwrap();
    assert_error!(client.get_ad_configuration().arn(config.arn()).send(), "ResourceNotFoundException", 404);
}

#[tokio::test]
async fn failover_slate_configurations() {
    let server = Server::start();
    let client = server.client();
    let created = client.create_failover_slate_configuration().name("slate").send().await.unwrap();
    let config = created.failover_slate_configuration().unwrap();
    assert!(config.arn().starts_with(&format!("arn:aws:ivs:{REGION}:{ACCOUNT}:failover-slate-configuration/")));
    assert_eq!(config.activation_threshold_seconds(), Some(3));
    assert_eq!(config.min_slate_display_seconds(), Some(3));
    assert_eq!(config.max_slate_display_seconds(), Some(60));
    assert_eq!(config.state().as_str(), "CREATED");

    let updated = client
        .update_failover_slate_configuration()
        .arn(config.arn())
        .activation_threshold_seconds(5)
        .max_slate_display_seconds(180)
        .send()
        .await
        .unwrap();
    let updated = updated.failover_slate_configuration().unwrap();
    assert_eq!(updated.activation_threshold_seconds(), Some(5));
    assert_eq!(updated.min_slate_display_seconds(), Some(3));
    assert_eq!(updated.max_slate_display_seconds(), Some(180));
    assert_eq!(
        client
            .get_failover_slate_configuration()
            .arn(config.arn())
            .send()
            .await
            .unwrap()
            .failover_slate_configuration(),
        Some(updated)
    );
    assert_eq!(
        client.list_failover_slate_configurations().send().await.unwrap().failover_slate_configurations().len(),
        1
    );

    assert_error!(
        client.create_failover_slate_configuration().activation_threshold_seconds(6).send(),
        "ValidationException",
        400
    );
    assert_error!(
        client.create_failover_slate_configuration().max_slate_display_seconds(59).send(),
        "ValidationException",
        400
    );

    let channel = client.create_channel().failover_slate_configuration_arn(config.arn()).send().await.unwrap();
    assert_error!(client.delete_failover_slate_configuration().arn(config.arn()).send(), "ConflictException", 409);
    let filtered =
        client.list_channels().filter_by_failover_slate_configuration_arn(config.arn()).send().await.unwrap();
    assert_eq!(filtered.channels().len(), 1);
    client.delete_channel().arn(channel.channel().unwrap().arn().unwrap()).send().await.unwrap();
    client.delete_failover_slate_configuration().arn(config.arn()).send().await.unwrap();
    assert_error!(client.get_failover_slate_configuration().arn(config.arn()).send(), "ResourceNotFoundException", 404);
}

//! CreateChannel, GetChannel, BatchGetChannel, UpdateChannel, DeleteChannel, ListChannels.

use aws_sdk_ivs::types::{
    ChannelLatencyMode, ChannelType, ContainerFormat, MultitrackInputConfiguration, MultitrackMaximumResolution,
    MultitrackPolicy, TranscodePreset,
};

use crate::assert_error;
use crate::harness::{ACCOUNT, REGION, Server};

fn is_id(id: &str) -> bool {
    id.len() == 12 && id.bytes().all(|b| b.is_ascii_alphanumeric())
}

#[tokio::test]
async fn create_channel_applies_ivs_defaults_and_makes_a_stream_key() {
    let server = Server::start();
    let out = server.client().create_channel().send().await.unwrap();
    let channel = out.channel().unwrap();
    let arn = channel.arn().unwrap();
    let id = arn.strip_prefix(&format!("arn:aws:ivs:{REGION}:{ACCOUNT}:channel/")).unwrap();
    assert!(is_id(id), "{arn}");
    assert_eq!(channel.name(), Some(""));
    assert_eq!(channel.latency_mode(), Some(&ChannelLatencyMode::LowLatency));
    assert_eq!(channel.r#type(), Some(&ChannelType::StandardChannelType));
    assert!(!channel.authorized());
    assert!(!channel.insecure_ingest());
    assert_eq!(channel.preset().map(|p| p.as_str()), Some(""));
    assert_eq!(channel.container_format(), Some(&ContainerFormat::Ts));
    assert_eq!(channel.recording_configuration_arn(), Some(""));
    assert_eq!(channel.playback_restriction_policy_arn(), Some(""));
    assert_eq!(channel.ad_configuration_arn(), Some(""));
    assert_eq!(channel.failover_slate_configuration_arn(), Some(""));
    assert!(channel.tags().unwrap().is_empty());
    let multitrack = channel.multitrack_input_configuration().unwrap();
    assert!(!multitrack.enabled());
    assert_eq!(multitrack.policy(), Some(&MultitrackPolicy::Allow));
    assert_eq!(multitrack.maximum_resolution(), Some(&MultitrackMaximumResolution::FullHd));
    assert_eq!(
        channel.playback_url().unwrap(),
        format!("http://127.0.0.1:{}/api/video/v1/{REGION}.{ACCOUNT}.channel.{id}.m3u8", server.port)
    );
    assert!(channel.ingest_endpoint().unwrap().starts_with("127.0.0.1:"));
    let srt = channel.srt().unwrap();
    assert!(srt.endpoint().unwrap().starts_with("127.0.0.1:"));
    assert!(srt.passphrase().unwrap().len() >= 10);

    let key = out.stream_key().unwrap();
    assert_eq!(key.channel_arn(), Some(arn));
    let key_id = key.arn().unwrap().strip_prefix(&format!("arn:aws:ivs:{REGION}:{ACCOUNT}:stream-key/")).unwrap();
    assert!(is_id(key_id));
    let value = key.value().unwrap();
    let secret = value.strip_prefix(&format!("sk_{REGION}_{key_id}_")).unwrap();
    assert!(secret.len() >= 24 && secret.bytes().all(|b| b.is_ascii_alphanumeric()), "{value}");
    // The stream key never reaches the log.
    assert!(!server.log_text().contains(secret));
}

#[tokio::test]
async fn create_get_update_delete_round_trip() {
    let server = Server::start();
    let client = server.client();
    let created = client
        .create_channel()
        .name("show-1")
        .latency_mode(ChannelLatencyMode::NormalLatency)
        .r#type(ChannelType::AdvancedHdChannelType)
        .authorized(true)
        .insecure_ingest(true)
        .container_format(ContainerFormat::FragmentedMp4)
        .tags("team", "video")
        .send()
        .await
        .unwrap();
    let channel = created.channel().unwrap().clone();
    assert_eq!(channel.preset(), Some(&TranscodePreset::HigherBandwidthTranscodePreset));
    let arn = channel.arn().unwrap();

    let fetched = client.get_channel().arn(arn).send().await.unwrap();
    assert_eq!(fetched.channel(), Some(&channel));

    // Omitted members stay; a non-ADVANCED type drops the preset.
    let updated =
        client.update_channel().arn(arn).r#type(ChannelType::BasicChannelType).name("show-2").send().await.unwrap();
    let updated = updated.channel().unwrap();
    assert_eq!(updated.name(), Some("show-2"));
    assert_eq!(updated.r#type(), Some(&ChannelType::BasicChannelType));
    assert_eq!(updated.preset().map(|p| p.as_str()), Some(""));
    assert_eq!(updated.latency_mode(), Some(&ChannelLatencyMode::NormalLatency));
    assert!(updated.authorized());
    assert_eq!(updated.tags().unwrap().get("team").map(String::as_str), Some("video"));
    assert_eq!(updated.playback_url(), channel.playback_url());

    // A preset on a non-ADVANCED channel is refused.
    assert_error!(
        client.update_channel().arn(arn).preset(TranscodePreset::ConstrainedBandwidthTranscodePreset).send(),
        "ValidationException",
        400
    );

    client.delete_channel().arn(arn).send().await.unwrap();
    assert_error!(client.get_channel().arn(arn).send(), "ResourceNotFoundException", 404);
    assert_error!(client.delete_channel().arn(arn).send(), "ResourceNotFoundException", 404);
    assert_error!(client.update_channel().arn(arn).name("x").send(), "ResourceNotFoundException", 404);
    // DeleteChannel deleted the channel's stream key too.
    let key_arn = created.stream_key().unwrap().arn().unwrap();
    assert_error!(client.get_stream_key().arn(key_arn).send(), "ResourceNotFoundException", 404);
}

#[tokio::test]
async fn delete_channel_answers_204_with_an_empty_body() {
    let server = Server::start();
    let arn = server.client().create_channel().send().await.unwrap().channel().unwrap().arn().unwrap().to_owned();
    let body = format!(r#"{{"arn":"{arn}"}}"#);
    let headers = crate::harness::sigv4_headers(
        &server,
        "POST",
        "/DeleteChannel",
        &body,
        "test",
        "test",
        std::time::SystemTime::now(),
    );
    let response = crate::harness::raw_request(&server, "POST", "/DeleteChannel", &headers, &body);
    assert_eq!(response.status, 204);
    assert_eq!(response.body, "");
    assert!(response.header("x-amzn-RequestId").is_some());
}

#[tokio::test]
async fn multitrack_rules() {
    let server = Server::start();
    let client = server.client();
    let multitrack = |enabled| {
        MultitrackInputConfiguration::builder()
            .enabled(enabled)
            .policy(MultitrackPolicy::Require)
            .maximum_resolution(MultitrackMaximumResolution::Hd)
            .build()
    };
    // Enabled multitrack needs FRAGMENTED_MP4 …
    assert_error!(
        client.create_channel().multitrack_input_configuration(multitrack(true)).send(),
        "ValidationException",
        400
    );
    // … and a STANDARD channel.
    assert_error!(
        client
            .create_channel()
            .r#type(ChannelType::BasicChannelType)
            .container_format(ContainerFormat::FragmentedMp4)
            .multitrack_input_configuration(multitrack(true))
            .send(),
        "ValidationException",
        400
    );
    let channel = client
        .create_channel()
        .container_format(ContainerFormat::FragmentedMp4)
        .multitrack_input_configuration(multitrack(true))
        .send()
        .await
        .unwrap();
    let config = channel.channel().unwrap().multitrack_input_configuration().unwrap();
    assert!(config.enabled());
    assert_eq!(config.policy(), Some(&MultitrackPolicy::Require));
    assert_eq!(config.maximum_resolution(), Some(&MultitrackMaximumResolution::Hd));
}

#[tokio::test]
async fn validation_names_the_field() {
    let server = Server::start();
    let client = server.client();
    for call in [
        client.create_channel().name("has space").send().await,
        client.create_channel().name("x".repeat(129)).send().await,
        client.create_channel().latency_mode(ChannelLatencyMode::from("FAST")).send().await,
        client.create_channel().recording_configuration_arn("arn:aws:ivs:us-west-2:1:channel/abc").send().await,
    ] {
        let error = call.unwrap_err();
        let service = error.as_service_error().unwrap();
        assert!(service.is_validation_exception(), "{service:?}");
        let message = aws_sdk_ivs::error::ProvideErrorMetadata::message(service).unwrap_or_default().to_owned();
        assert!(
            message.contains("'name'")
                || message.contains("'latencyMode'")
                || message.contains("'recordingConfigurationArn'"),
            "{message}"
        );
    }
    assert_error!(client.get_channel().arn("not-an-arn").send(), "ValidationException", 400);
    assert_error!(client.list_channels().max_results(0).send(), "ValidationException", 400);
    assert_error!(client.list_channels().max_results(101).send(), "ValidationException", 400);
    assert_error!(client.batch_get_channel().send(), "ValidationException", 400);
}

#[tokio::test]
async fn list_channels_pages_in_a_stable_order() {
    let server = Server::start();
    let client = server.client();
    let mut created = Vec::new();
    for i in 0..5 {
        let out = client.create_channel().name(format!("c{i}")).send().await.unwrap();
        created.push(out.channel().unwrap().arn().unwrap().to_owned());
    }
    let mut seen = Vec::new();
    let mut token: Option<String> = None;
    let mut pages = 0;
    loop {
        let page = client.list_channels().max_results(2).set_next_token(token.clone()).send().await.unwrap();
        pages += 1;
        seen.extend(page.channels().iter().map(|c| c.arn().unwrap().to_owned()));
        match page.next_token() {
            Some(next) => token = Some(next.to_owned()),
            None => break,
        }
    }
    assert_eq!(pages, 3);
    assert_eq!(seen, created);
    // The SDK's paginator walks the same pages.
    let pages: Vec<_> = client.list_channels().max_results(2).into_paginator().send().collect::<Vec<_>>().await;
    assert_eq!(pages.len(), 3);
    assert_eq!(pages.iter().map(|p| p.as_ref().unwrap().channels().len()).sum::<usize>(), 5);
    // Without maxResults, one page of up to 100 and no token.
    let page = client.list_channels().send().await.unwrap();
    assert_eq!(page.channels().len(), 5);
    assert!(page.next_token().is_none());
    // A summary carries the summary members only.
    let summary = &page.channels()[0];
    assert_eq!(summary.name(), Some("c0"));
    assert_eq!(summary.latency_mode(), Some(&ChannelLatencyMode::LowLatency));

    // Forged or foreign tokens are refused.
    let token = client.list_channels().max_results(1).send().await.unwrap().next_token().unwrap().to_owned();
    let mut forged = token.clone().into_bytes();
    forged[5] = if forged[5] == b'a' { b'b' } else { b'a' };
    assert_error!(
        client.list_channels().next_token(String::from_utf8(forged).unwrap()).send(),
        "ValidationException",
        400
    );
    assert_error!(client.list_channels().filter_by_name("c1").next_token(&token).send(), "ValidationException", 400);
    assert_error!(client.list_recording_configurations().next_token(&token).send(), "ValidationException", 400);
}

#[tokio::test]
async fn list_channels_filters() {
    let server = Server::start();
    let client = server.client();
    let recording = client
        .create_recording_configuration()
        .destination_configuration(crate::harness::destination("bucket-1"))
        .send()
        .await
        .unwrap();
    let recording_arn = recording.recording_configuration().unwrap().arn().to_owned();
    client.create_channel().name("alpha").send().await.unwrap();
    client.create_channel().name("beta").recording_configuration_arn(&recording_arn).send().await.unwrap();
    client.create_channel().name("alpha").send().await.unwrap();

    let by_name = client.list_channels().filter_by_name("alpha").send().await.unwrap();
    assert_eq!(by_name.channels().len(), 2);
    let by_recording =
        client.list_channels().filter_by_recording_configuration_arn(&recording_arn).send().await.unwrap();
    assert_eq!(by_recording.channels().len(), 1);
    assert_eq!(by_recording.channels()[0].name(), Some("beta"));
    assert_error!(
        client.list_channels().filter_by_name("alpha").filter_by_recording_configuration_arn(&recording_arn).send(),
        "ConflictException",
        409
    );
}

#[tokio::test]
async fn references_must_exist_and_pin_what_they_name() {
    let server = Server::start();
    let client = server.client();
    let missing = format!("arn:aws:ivs:{REGION}:{ACCOUNT}:recording-configuration/AAAAAAAAAAAA");
    assert_error!(
        client.create_channel().recording_configuration_arn(&missing).send(),
        "ResourceNotFoundException",
        404
    );
    let policy = client.create_playback_restriction_policy().send().await.unwrap();
    let policy_arn = policy.playback_restriction_policy().unwrap().arn().to_owned();
    let channel = client.create_channel().playback_restriction_policy_arn(&policy_arn).send().await.unwrap();
    let channel_arn = channel.channel().unwrap().arn().unwrap();
    assert_error!(client.delete_playback_restriction_policy().arn(&policy_arn).send(), "ConflictException", 409);
    // Detaching with "" releases it.
    client.update_channel().arn(channel_arn).playback_restriction_policy_arn("").send().await.unwrap();
    client.delete_playback_restriction_policy().arn(&policy_arn).send().await.unwrap();
    assert_error!(
        client.update_channel().arn(channel_arn).playback_restriction_policy_arn(&policy_arn).send(),
        "ResourceNotFoundException",
        404
    );
}

#[tokio::test]
async fn batch_get_channel_reports_unknown_arns() {
    let server = Server::start();
    let client = server.client();
    let arn = client.create_channel().send().await.unwrap().channel().unwrap().arn().unwrap().to_owned();
    let missing = format!("arn:aws:ivs:{REGION}:{ACCOUNT}:channel/BBBBBBBBBBBB");
    let out = client.batch_get_channel().arns(&arn).arns(&missing).send().await.unwrap();
    assert_eq!(out.channels().len(), 1);
    assert_eq!(out.channels()[0].arn(), Some(arn.as_str()));
    assert_eq!(out.errors().len(), 1);
    assert_eq!(out.errors()[0].arn(), Some(missing.as_str()));
    assert_eq!(out.errors()[0].code(), Some("ResourceNotFoundException"));
    let too_many: Vec<String> = (0..51).map(|i| format!("arn:aws:ivs:{REGION}:{ACCOUNT}:channel/c{i}")).collect();
    assert_error!(client.batch_get_channel().set_arns(Some(too_many)).send(), "ValidationException", 400);
}

#[tokio::test]
async fn channel_quota_answers_402() {
    let server = Server::with_args(&["--quota-channels", "2"]);
    let client = server.client();
    client.create_channel().send().await.unwrap();
    client.create_channel().send().await.unwrap();
    assert_error!(client.create_channel().send(), "ServiceQuotaExceededException", 402);
}

#[tokio::test]
async fn resources_are_scoped_to_region_and_account() {
    let server = Server::with_args(&[
        "--credential",
        "AKIDONE:secret-one:111111111111",
        "--credential",
        "AKIDTWO:secret-two:222222222222",
    ]);
    let one = server.client_for(REGION, "AKIDONE", "secret-one");
    let two = server.client_for(REGION, "AKIDTWO", "secret-two");
    let one_elsewhere = server.client_for("eu-west-1", "AKIDONE", "secret-one");
    let channel = one.create_channel().send().await.unwrap();
    let arn = channel.channel().unwrap().arn().unwrap();
    assert!(arn.starts_with("arn:aws:ivs:us-west-2:111111111111:channel/"));
    assert_error!(two.get_channel().arn(arn).send(), "ResourceNotFoundException", 404);
    assert_error!(one_elsewhere.get_channel().arn(arn).send(), "ResourceNotFoundException", 404);
    assert!(two.list_channels().send().await.unwrap().channels().is_empty());
    let eu = one_elsewhere.create_channel().send().await.unwrap();
    assert!(eu.channel().unwrap().arn().unwrap().starts_with("arn:aws:ivs:eu-west-1:111111111111:channel/"));
    assert!(eu.channel().unwrap().playback_url().unwrap().contains("/eu-west-1.111111111111.channel."));
    // The development pair is off once credentials are configured.
    assert_error!(server.client().list_channels().send(), "UnrecognizedClientException", 403);
}

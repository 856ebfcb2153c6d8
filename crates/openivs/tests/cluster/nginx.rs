//! The cluster behind the nginx configuration the repository ships
//! (`deploy/nginx/openivs-cluster.conf`), as an operator runs it: three nodes on one PostgreSQL
//! and nginx in front with the shipped file's blocks, only its node addresses and listening
//! ports changed to this machine's. Through nginx's one address: the AWS SDK's calls (tags
//! included: SigV4 signs a path nginx must pass on as it came), what they made read back from
//! every node directly; a broadcaster's RTMPS (TLS through to a node); a second publisher
//! refused; PutMetadata and GetStream from whichever node answers; playback, each request
//! reaching whichever node nginx picks.
//!
//! Needs nginx with its stream module and curl; fails, not skips, without them.

use std::process::Command;
use std::time::{Duration, Instant};

use aws_sdk_ivs::types::ChannelLatencyMode;

use crate::harness::{REGION, client_at};
use crate::load_balancer::Nginx;
use crate::media::{Publisher, pattern_720p, pattern_720p_short_gop};
use crate::postgres::Postgres;

/// GET `url` with curl: the status and body.
fn curl(url: &str) -> (u16, Vec<u8>) {
    let output = Command::new("curl")
        .args(["-s", "--max-time", "10", "-o", "-", "-w", "%{stderr}%{http_code}", url])
        .output()
        .expect("curl must be installed (scripts/test installs it)");
    let status = String::from_utf8_lossy(&output.stderr).trim().parse().unwrap_or(0);
    (status, output.stdout)
}

#[tokio::test]
async fn three_nodes_behind_the_shipped_nginx_configuration_act_as_one_service() {
    let postgres = Postgres::start();
    let nodes = [postgres.node("a"), postgres.node("b"), postgres.node("c")];
    let nginx = Nginx::start(&nodes.iter().collect::<Vec<_>>());
    let balancer = format!("http://127.0.0.1:{}", nginx.ports.http);
    let client = client_at(&balancer, REGION, "test", "test");

    // Channels made, tagged and read through nginx, however it spreads the calls.
    let mut channels = Vec::new();
    for index in 0..6 {
        let created = client
            .create_channel()
            .name(format!("behind-nginx-{index}"))
            .latency_mode(ChannelLatencyMode::LowLatency)
            .tags("team", "video")
            .send()
            .await
            .unwrap();
        let arn = created.channel().unwrap().arn().unwrap().to_owned();
        channels.push((arn, created.stream_key().unwrap().value().unwrap().to_owned()));
    }
    for (arn, _) in &channels {
        assert_eq!(client.get_channel().arn(arn).send().await.unwrap().channel().unwrap().arn(), Some(arn.as_str()));
        client.tag_resource().resource_arn(arn).tags("stage", "test").send().await.unwrap();
        let tags = client.list_tags_for_resource().resource_arn(arn).send().await.unwrap();
        let tags = tags.tags();
        let tag = |name: &str| tags.get(name).map(String::as_str);
        assert_eq!((tag("team"), tag("stage")), (Some("video"), Some("test")), "{tags:?}");
    }
    let listed = client.list_channels().send().await.unwrap();
    for (arn, _) in &channels {
        assert!(listed.channels().iter().any(|c| c.arn() == Some(arn.as_str())), "{arn} listed through nginx");
    }
    // Every node answers for what was made through nginx (wherever nginx sent each call: its
    // least_conn sends one client's calls, one after the other, to the same node).
    let answered: Vec<usize> = nodes.iter().map(|n| n.log_text().matches("GetChannel").count()).collect();
    println!("GetChannel calls through nginx answered by each node: {answered:?}");
    assert_eq!(answered.iter().sum::<usize>(), channels.len(), "each call reached one node once");
    for node in &nodes {
        for (arn, _) in &channels {
            let tags = node.client().list_tags_for_resource().resource_arn(arn).send().await.unwrap();
            assert_eq!(tags.tags().get("stage").map(String::as_str), Some("test"));
        }
    }

    // A broadcaster through nginx's RTMPS (TLS passed through to a node): live, as every call
    // through nginx says; a second one, wherever nginx sends it, refused.
    let (arn, key) = channels[0].clone();
    let rtmps = format!("rtmps://127.0.0.1:{}/app/{key}", nginx.ports.rtmps);
    let _publisher = Publisher::start(&rtmps, pattern_720p_short_gop());
    let deadline = Instant::now() + Duration::from_secs(20);
    while client.get_stream().channel_arn(&arn).send().await.is_err() {
        assert!(Instant::now() < deadline, "live through nginx within 20 s");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let mut second = Publisher::start(&rtmps, pattern_720p());
    let refused = second.exited_within(Duration::from_secs(10));
    assert!(refused.as_ref().is_some_and(|(status, _)| !status.success()), "{refused:?}");
    for _ in 0..3 {
        client.get_stream().channel_arn(&arn).send().await.unwrap();
        client.put_metadata().channel_arn(&arn).metadata("through nginx").send().await.unwrap();
    }

    // Playback through nginx: the multivariant playlist, the media playlist and a part, each
    // from whichever node nginx picks.
    let playback_url =
        client.get_channel().arn(&arn).send().await.unwrap().channel().unwrap().playback_url().unwrap().to_owned();
    let path = playback_url.split_once("://").unwrap().1.split_once('/').unwrap().1;
    let (status, multivariant) = curl(&format!("{balancer}/{path}"));
    let multivariant = String::from_utf8(multivariant).unwrap();
    assert_eq!(status, 200, "{multivariant}");
    let media = multivariant.lines().find(|l| l.starts_with("/playback/")).expect("a variant").to_owned();
    let directory = media.rsplit_once('/').unwrap().0.to_owned();
    let deadline = Instant::now() + Duration::from_secs(20);
    let playlist = loop {
        let (status, body) = curl(&format!("{balancer}{media}"));
        let playlist = String::from_utf8(body).unwrap();
        assert_eq!(status, 200, "{playlist}");
        if playlist.contains("#EXT-X-PART:") && playlist.contains("#EXTINF") {
            break playlist;
        }
        assert!(Instant::now() < deadline, "parts and segments through nginx: {playlist}");
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    let part = playlist
        .lines()
        .find_map(|l| l.strip_prefix("#EXT-X-PART:").and_then(|p| p.split("URI=\"").nth(1)?.split('"').next()))
        .expect("a part");
    let part_url =
        if part.starts_with('/') { format!("{balancer}{part}") } else { format!("{balancer}{directory}/{part}") };
    for _ in 0..3 {
        let (status, bytes) = curl(&part_url);
        assert_eq!(status, 200, "{part_url}");
        assert!(bytes.len() > 1000, "a part of {} bytes", bytes.len());
    }
}

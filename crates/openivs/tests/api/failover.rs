//! Failover slates: on a channel with a failover slate configuration, a publisher that drops
//! leaves the stream live, its playlists growing with the slate (the last picture, frozen, and
//! silence, decodable on their own) after a discontinuity; a publisher that comes back continues
//! the same playlists and the same stream session after another; StopStream ends it. Without a
//! slate configuration the stream ends as before.

use std::process::Command;
use std::time::{Duration, Instant};

use aws_sdk_ivs::types::{ChannelLatencyMode, ContainerFormat, StreamHealth};

use crate::harness::{RawResponse, Server, create_channel_with, raw_request, wait_live, wait_offline};
use crate::ingest::{Publisher, pattern_720p};
use crate::playback::path_of;

fn get(server: &Server, path: &str) -> RawResponse {
    raw_request(server, "GET", path, &[], "")
}

struct SlateChannel {
    arn: String,
    url: String,
    playback_url: String,
}

async fn channel(
    server: &Server,
    slate_arn: &str,
    latency: ChannelLatencyMode,
    container: ContainerFormat,
) -> SlateChannel {
    let (out, url) =
        create_channel_with(server, latency, container, |b| b.failover_slate_configuration_arn(slate_arn)).await;
    let channel = out.channel().unwrap();
    SlateChannel {
        arn: channel.arn().unwrap().to_owned(),
        url,
        playback_url: channel.playback_url().unwrap().to_owned(),
    }
}

/// The media URIs of a playlist, each with whether a discontinuity precedes it; and the URI of
/// its initialisation section before each (fMP4).
fn listed(playlist: &str) -> Vec<(String, bool, Option<String>)> {
    let mut out = Vec::new();
    let mut discontinuity = false;
    let mut map = None;
    for line in playlist.lines() {
        if line == "#EXT-X-DISCONTINUITY" {
            discontinuity = true;
        } else if let Some(uri) = line.strip_prefix("#EXT-X-MAP:URI=\"") {
            map = Some(uri.trim_end_matches('"').to_owned());
        } else if !line.starts_with('#') && !line.is_empty() {
            out.push((line.to_owned(), std::mem::take(&mut discontinuity), map.clone()));
        }
    }
    out
}

/// Polls the media playlist until `done` holds for its segments (at most `limit`).
async fn until(server: &Server, media: &str, limit: Duration, what: &str, done: impl Fn(&str) -> bool) -> String {
    let deadline = Instant::now() + limit;
    loop {
        let playlist = get(server, media);
        assert_eq!(playlist.status, 200, "{what}: {}", playlist.body);
        if done(&playlist.body) {
            return playlist.body;
        }
        assert!(Instant::now() < deadline, "{what} within {limit:?}:\n{}", playlist.body);
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// A segment decodes on its own (with its initialisation section) into 1280×720 H.264 and AAC,
/// without a decoder error.
fn decodes(server: &Server, media: &str, segment: &str, map: Option<&str>, scratch: &std::path::Path) {
    let base = media.rsplit_once('/').unwrap().0;
    let mut bytes = Vec::new();
    if let Some(map) = map {
        bytes.extend(get(server, &format!("{base}/{map}")).body_bytes);
    }
    let file = get(server, &format!("{base}/{segment}"));
    assert_eq!(file.status, 200, "{segment}");
    bytes.extend(file.body_bytes);
    std::fs::write(scratch, &bytes).unwrap();
    let probe = Command::new("ffprobe")
        .args(["-v", "error", "-show_entries", "stream=codec_name,width,height", "-of", "csv=p=0"])
        .arg(scratch)
        .output()
        .expect("ffprobe must be installed");
    let streams = String::from_utf8_lossy(&probe.stdout);
    assert!(streams.contains("h264,1280,720") && streams.contains("aac"), "{segment}: {streams}");
    let decode = Command::new("ffmpeg")
        .args(["-v", "error", "-nostdin", "-i"])
        .arg(scratch)
        .args(["-f", "null", "-"])
        .output()
        .expect("ffmpeg must be installed");
    assert!(
        decode.status.success() && decode.stderr.is_empty(),
        "{segment}: {}",
        String::from_utf8_lossy(&decode.stderr)
    );
}

async fn slate_and_comeback(server: &Server, slate_arn: &str, latency: ChannelLatencyMode, container: ContainerFormat) {
    let client = server.client();
    let channel = channel(server, slate_arn, latency.clone(), container.clone()).await;
    let mut publisher = Publisher::start(&channel.url, pattern_720p());
    wait_live(server, &channel.arn, Duration::from_secs(15)).await;
    let stream_id = client
        .get_stream()
        .channel_arn(&channel.arn)
        .send()
        .await
        .unwrap()
        .stream()
        .unwrap()
        .stream_id()
        .unwrap()
        .to_owned();
    let multivariant = get(server, &path_of(&channel.playback_url));
    let media = multivariant.body.lines().find(|l| l.starts_with('/')).expect("a variant").to_owned();
    until(server, &media, Duration::from_secs(10), "two segments", |p| listed(p).len() >= 2).await;

    // The publisher drops: after the activation threshold (3 s), the slate.
    publisher.kill();
    let dropped_at = Instant::now();
    let on_slate = until(server, &media, Duration::from_secs(10), "slate segments", |p| {
        listed(p).iter().skip_while(|(_, discontinuity, _)| !discontinuity).count() >= 2
    })
    .await;
    assert!(!on_slate.contains("#EXT-X-ENDLIST"));
    let stream = client.get_stream().channel_arn(&channel.arn).send().await.unwrap();
    let stream = stream.stream().unwrap();
    assert_eq!(stream.stream_id(), Some(stream_id.as_str()), "the same stream, live");
    assert_eq!(stream.health(), Some(&StreamHealth::Starving));
    let slate_segments: Vec<_> = listed(&on_slate).into_iter().skip_while(|(_, d, _)| !d).collect();
    assert!(slate_segments[0].0.starts_with(&format!("{stream_id}.1-")), "{on_slate}");
    let scratch = server.data_dir.with_extension(format!("slate-{latency:?}"));
    decodes(server, &media, &slate_segments[0].0, slate_segments[0].2.as_deref(), &scratch);

    // Back after 5 s: the same playlists continue after a second discontinuity, once the slate
    // has shown for its minimum (3 s).
    let wait = Duration::from_secs(5).saturating_sub(dropped_at.elapsed());
    tokio::time::sleep(wait).await;
    let _back = Publisher::start(&channel.url, pattern_720p());
    let back = until(server, &media, Duration::from_secs(15), "the publisher's segments again", |p| {
        listed(p).iter().any(|(uri, _, _)| uri.starts_with(&format!("{stream_id}.2-")))
    })
    .await;
    let rejoined: Vec<_> =
        listed(&back).into_iter().filter(|(uri, _, _)| uri.starts_with(&format!("{stream_id}.2-"))).collect();
    assert!(rejoined[0].1, "a discontinuity before the comeback: {back}");
    decodes(server, &media, &rejoined[0].0, rejoined[0].2.as_deref(), &scratch);
    let stream = client.get_stream().channel_arn(&channel.arn).send().await.unwrap();
    assert_eq!(stream.stream().unwrap().stream_id(), Some(stream_id.as_str()));

    // One session: Stream Start once, the slate's start and end recorded.
    let session = client.get_stream_session().channel_arn(&channel.arn).send().await.unwrap();
    let session = session.stream_session().unwrap();
    assert_eq!(session.stream_id(), Some(stream_id.as_str()));
    let names: Vec<&str> = session.truncated_events().iter().filter_map(|e| e.name()).collect();
    assert_eq!(names.iter().filter(|n| **n == "Stream Start").count(), 1, "{names:?}");
    let start = names.iter().position(|n| *n == "Failover Slate Start").expect("slate start recorded");
    let end = names.iter().position(|n| *n == "Failover Slate End").expect("slate end recorded");
    assert!(end < start, "newest first: {names:?}");

    // StopStream ends it for good.
    client.stop_stream().channel_arn(&channel.arn).send().await.unwrap();
    wait_offline(server, &channel.arn, Duration::from_secs(5)).await;
    until(server, &media, Duration::from_secs(5), "the end", |p| p.ends_with("#EXT-X-ENDLIST\n")).await;
    let session = client.get_stream_session().channel_arn(&channel.arn).send().await.unwrap();
    assert!(session.stream_session().unwrap().end_time().is_some());
}

#[tokio::test]
async fn a_failover_slate_holds_the_stream_until_the_publisher_comes_back() {
    let server = Server::start();
    let slate = server.client().create_failover_slate_configuration().send().await.unwrap();
    let slate_arn = slate.failover_slate_configuration().unwrap().arn().to_owned();
    let normal_ts = slate_and_comeback(&server, &slate_arn, ChannelLatencyMode::NormalLatency, ContainerFormat::Ts);
    let low_fmp4 =
        slate_and_comeback(&server, &slate_arn, ChannelLatencyMode::LowLatency, ContainerFormat::FragmentedMp4);
    tokio::join!(normal_ts, low_fmp4);

    // Without a slate configuration the stream ends when the publisher drops.
    let plain = channel(&server, "", ChannelLatencyMode::LowLatency, ContainerFormat::Ts).await;
    let mut publisher = Publisher::start(&plain.url, pattern_720p());
    wait_live(&server, &plain.arn, Duration::from_secs(15)).await;
    let multivariant = get(&server, &path_of(&plain.playback_url));
    let media = multivariant.body.lines().find(|l| l.starts_with('/')).expect("a variant").to_owned();
    publisher.kill();
    wait_offline(&server, &plain.arn, Duration::from_secs(5)).await;
    let ended = until(&server, &media, Duration::from_secs(5), "the end", |p| p.ends_with("#EXT-X-ENDLIST\n")).await;
    assert!(!ended.contains("#EXT-X-DISCONTINUITY"), "{ended}");
}

/// The slate shows for `maxSlateDisplaySeconds` at most (60 s, the smallest IVS allows); then
/// the stream ends as it would have without one.
#[tokio::test]
async fn the_slate_ends_the_stream_after_its_maximum() {
    let server = Server::start();
    let client = server.client();
    let slate = client.create_failover_slate_configuration().max_slate_display_seconds(60).send().await.unwrap();
    let slate_arn = slate.failover_slate_configuration().unwrap().arn().to_owned();
    let channel = channel(&server, &slate_arn, ChannelLatencyMode::NormalLatency, ContainerFormat::Ts).await;
    let mut publisher = Publisher::start(&channel.url, pattern_720p());
    wait_live(&server, &channel.arn, Duration::from_secs(15)).await;
    let multivariant = get(&server, &path_of(&channel.playback_url));
    let media = multivariant.body.lines().find(|l| l.starts_with('/')).expect("a variant").to_owned();
    until(&server, &media, Duration::from_secs(10), "a segment", |p| !listed(p).is_empty()).await;
    publisher.kill();
    let dropped_at = Instant::now();
    // Live through the slate: 3 s before it starts, then 60 s of it.
    while dropped_at.elapsed() < Duration::from_secs(60) {
        let stream = client.get_stream().channel_arn(&channel.arn).send().await;
        assert!(stream.is_ok(), "live {:?} after the drop: {stream:?}", dropped_at.elapsed());
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
    wait_offline(&server, &channel.arn, Duration::from_secs(10)).await;
    let ended_after = dropped_at.elapsed();
    assert!(ended_after >= Duration::from_secs(62), "ended {ended_after:?} after the drop");
    let ended = until(&server, &media, Duration::from_secs(5), "the end", |p| p.ends_with("#EXT-X-ENDLIST\n")).await;
    // The playlist ends on the slate (its segments are the stream's second feed).
    assert!(listed(&ended).last().is_some_and(|(uri, _, _)| uri.contains(".1-")), "{ended}");
    let session = client.get_stream_session().channel_arn(&channel.arn).send().await.unwrap();
    let session = session.stream_session().unwrap();
    assert!(session.end_time().is_some());
    let names: Vec<&str> = session.truncated_events().iter().filter_map(|e| e.name()).collect();
    assert_eq!(
        names[..4],
        ["Session Ended", "Stream End", "Failover Slate End", "Failover Slate Start"],
        "newest first: {names:?}"
    );
}

//! Timed metadata in the stream: every PutMetadata payload answered 204 is in the HLS the viewer
//! receives, as an ID3v2.4 tag (`TXXX`, owner `metadata.live-video.net`), in order and intact: in
//! MPEG-TS on the timed-metadata stream (ffprobe sees it), in fragmented MP4 as `emsg` boxes, in
//! both latency modes; and IVS's limits.

use std::time::{Duration, Instant};

use aws_sdk_ivs::types::{ChannelLatencyMode, ChannelType, ContainerFormat};
use openivs_media::amf0::Value;

use crate::assert_error;
use crate::harness::rtmps_url;
use crate::harness::{RawResponse, Server, raw_request};
use crate::ingest::{Publisher, create_channel, pattern_720p, wait_live};
use crate::playback::path_of;
use crate::raw_rtmp::{RawPublisher, flv_tags};

fn get(server: &Server, path: &str) -> RawResponse {
    raw_request(server, "GET", path, &[], "")
}

/// The `TXXX` frames of the ID3 tags in `bytes`: (description, value), in order.
pub(crate) fn id3_texts(bytes: &[u8]) -> Vec<(String, String)> {
    let mut texts = Vec::new();
    let mut at = 0;
    while let Some(offset) = bytes[at..].windows(5).position(|w| w == b"ID3\x04\x00") {
        let tag = at + offset;
        let Some(header) = bytes.get(tag..tag + 10) else { break };
        let size = header[6..10].iter().fold(0usize, |size, b| (size << 7) | usize::from(*b & 0x7f));
        let Some(frames) = bytes.get(tag + 10..tag + 10 + size) else { break };
        let mut frame = 0;
        while frame + 10 <= frames.len() {
            let frame_size = frames[frame + 4..frame + 8].iter().fold(0usize, |s, b| (s << 7) | usize::from(*b & 0x7f));
            let Some(body) = frames.get(frame + 10..frame + 10 + frame_size) else { break };
            if &frames[frame..frame + 4] == b"TXXX" && body.first() == Some(&3) {
                let (description, value) = body[1..].split_at(body[1..].iter().position(|b| *b == 0).unwrap());
                texts.push((
                    String::from_utf8(description.to_vec()).unwrap(),
                    String::from_utf8(value[1..].to_vec()).unwrap(),
                ));
            }
            frame += 10 + frame_size;
        }
        at = tag + 10 + size;
    }
    texts
}

/// The timed-metadata stream (PID 0x102) of MPEG-TS bytes: its PES payloads, concatenated.
fn ts_metadata(bytes: &[u8]) -> Vec<u8> {
    let mut pes = Vec::new();
    let mut payloads = Vec::new();
    for packet in bytes.chunks_exact(188).filter(|p| p[0] == 0x47) {
        let pid = (u16::from(packet[1] & 0x1f) << 8) | u16::from(packet[2]);
        if pid != 0x102 {
            continue;
        }
        let start = packet[1] & 0x40 != 0;
        let mut offset = 4;
        if packet[3] & 0x20 != 0 {
            offset += 1 + usize::from(packet[4]);
        }
        if start && !pes.is_empty() {
            payloads.push(std::mem::take(&mut pes));
        }
        pes.extend_from_slice(&packet[offset.min(188)..]);
    }
    payloads.push(pes);
    // Each PES: 00 00 01 BD, length, two flag bytes, header length, header; then the ID3 tag.
    payloads
        .iter()
        .filter(|p| p.len() > 9 && p[..3] == [0, 0, 1])
        .flat_map(|p| p[9 + usize::from(p[8])..].to_vec())
        .collect()
}

/// The `TXXX` texts of the timed-metadata stream of MPEG-TS bytes (recorded segments).
pub(crate) fn recorded_metadata(bytes: &[u8]) -> Vec<(String, String)> {
    id3_texts(&ts_metadata(bytes))
}

/// The ID3 tags of the `emsg` boxes with `scheme` in fragmented MP4 bytes, concatenated.
fn emsg_id3(bytes: &[u8], scheme: &str) -> Vec<u8> {
    let mut tags = Vec::new();
    let mut at = 0;
    while let Some(offset) = bytes[at..].windows(4).position(|w| w == b"emsg") {
        let start = at + offset - 4;
        let size = u32::from_be_bytes(bytes[start..start + 4].try_into().unwrap()) as usize;
        let body = &bytes[start + 8..start + size];
        // Version 1: version+flags, timescale, presentation time (64 bits), duration, id (24
        // bytes), then the strings and the data. Version 0: version+flags, the strings, then
        // timescale, presentation time delta, duration, id (16 bytes) and the data.
        let strings = if body[0] == 1 { &body[24..] } else { &body[4..] };
        let scheme_end = strings.iter().position(|b| *b == 0).unwrap();
        let value_end = scheme_end + 1 + strings[scheme_end + 1..].iter().position(|b| *b == 0).unwrap();
        let data = if body[0] == 1 { &strings[value_end + 1..] } else { &strings[value_end + 17..] };
        if &strings[..scheme_end] == scheme.as_bytes() {
            tags.extend_from_slice(data);
        }
        at = start + size;
    }
    tags
}

/// Every byte of the stream a viewer session can fetch now: the init section (fMP4) and each
/// listed segment, in order.
fn stream_bytes(server: &Server, media: &str) -> Vec<u8> {
    let playlist = get(server, media);
    assert_eq!(playlist.status, 200, "{media}: {}", playlist.body);
    let base = media.rsplit_once('/').unwrap().0;
    let mut bytes = Vec::new();
    for line in playlist.body.lines() {
        let uri = if let Some(map) = line.strip_prefix("#EXT-X-MAP:URI=\"") {
            map.split('"').next().unwrap()
        } else if !line.starts_with('#') && !line.is_empty() {
            line
        } else {
            continue;
        };
        let file = get(server, &format!("{base}/{uri}"));
        assert_eq!(file.status, 200, "{uri}");
        bytes.extend_from_slice(&file.body_bytes);
    }
    bytes
}

async fn check_metadata(server: &Server, latency: ChannelLatencyMode, container: ContainerFormat) {
    let client = server.client();
    let out =
        client.create_channel().latency_mode(latency.clone()).container_format(container.clone()).send().await.unwrap();
    let channel = out.channel().unwrap();
    let arn = channel.arn().unwrap().to_owned();
    let url = rtmps_url(&out);
    let _publisher = Publisher::start(&url, pattern_720p());
    wait_live(server, &arn, Duration::from_secs(15)).await;
    let multivariant = get(server, &path_of(channel.playback_url().unwrap()));
    let media = multivariant.body.lines().find(|l| l.starts_with('/')).expect("a variant").to_owned();

    // Payloads as applications send them: JSON, UTF-8 beyond ASCII, the full kilobyte.
    let mut payloads = vec![
        r#"{"question":"Which?","answers":["a","b"]}"#.to_owned(),
        "grüße 👋 — ünïcødé".to_owned(),
        format!("{{\"pad\":\"{}\"}}", "x".repeat(1024 - 10)),
    ];
    payloads.extend((0..4).map(|i| format!("cue {i}")));
    assert_eq!(payloads[2].len(), 1024);
    for payload in &payloads {
        client.put_metadata().channel_arn(&arn).metadata(payload).send().await.unwrap();
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    // In the stream once the segments holding them are complete (two more segments at most).
    let deadline = Instant::now() + Duration::from_secs(15);
    let found = loop {
        let bytes = stream_bytes(server, &media);
        let texts = if container == ContainerFormat::Ts {
            id3_texts(&ts_metadata(&bytes))
        } else {
            // Each tag twice: under AOM's scheme (hls.js …) and Twitch's (the IVS player).
            let standard = id3_texts(&emsg_id3(&bytes, "https://aomedia.org/emsg/ID3"));
            assert_eq!(standard, id3_texts(&emsg_id3(&bytes, "urn:twitch:id3")));
            standard
        };
        if texts.len() >= payloads.len() || Instant::now() > deadline {
            break texts;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    let expected: Vec<(String, String)> =
        payloads.iter().map(|p| ("metadata.live-video.net".to_owned(), p.clone())).collect();
    assert_eq!(found, expected, "{latency:?} {container:?}: every payload, in order, intact");
}

#[tokio::test]
async fn put_metadata_reaches_the_stream_in_every_container_and_latency_mode() {
    let server = Server::start();
    for container in [ContainerFormat::Ts, ContainerFormat::FragmentedMp4] {
        for latency in [ChannelLatencyMode::LowLatency, ChannelLatencyMode::NormalLatency] {
            check_metadata(&server, latency, container.clone()).await;
        }
    }
}

/// A new channel with IVS's defaults (TS, LOW): its ARN, RTMPS URL and playback URL.
async fn default_channel(server: &Server) -> (String, String, String) {
    let out = server.client().create_channel().send().await.unwrap();
    let channel = out.channel().unwrap();
    let url = rtmps_url(&out);
    (channel.arn().unwrap().to_owned(), url, channel.playback_url().unwrap().to_owned())
}

#[tokio::test]
async fn ffprobe_sees_the_timed_metadata_stream_and_limits_hold() {
    let server = Server::start();
    let client = server.client();
    let (arn, url, playback_url) = default_channel(&server).await;
    let _publisher = Publisher::start(&url, pattern_720p());
    wait_live(&server, &arn, Duration::from_secs(15)).await;
    let playback_url = format!("{}{}", server.endpoint, path_of(&playback_url));
    let probe = std::process::Command::new("ffprobe")
        .args(["-v", "error", "-show_entries", "stream=codec_type,codec_name", "-of", "csv=p=0", &playback_url])
        .output()
        .expect("ffprobe must be installed");
    let streams = String::from_utf8_lossy(&probe.stdout).to_string();
    assert!(streams.contains("timed_id3"), "ffprobe sees the ID3 stream: {streams}");

    // Five calls a second per channel; the sixth in the same second is throttled.
    let started = Instant::now();
    for i in 0..5 {
        client.put_metadata().channel_arn(&arn).metadata(format!("burst {i}")).send().await.unwrap();
    }
    if started.elapsed() < Duration::from_millis(900) {
        assert_error!(
            client.put_metadata().channel_arn(&arn).metadata("one too many").send(),
            "ThrottlingException",
            429
        );
    }
    tokio::time::sleep(Duration::from_millis(1100)).await;
    client.put_metadata().channel_arn(&arn).metadata("after a second").send().await.unwrap();
}

/// The broadcaster's own timed text (ffmpeg writes a subtitle stream into FLV as `onTextData`
/// data messages) reaches the stream with IVS's in-band owner.
#[tokio::test]
async fn in_band_text_from_the_broadcaster_reaches_the_stream() {
    let server = Server::start();
    let (arn, url, playback_url) = default_channel(&server).await;
    let subtitles = server.data_dir.with_extension("srt");
    std::fs::write(
        &subtitles,
        "1\n00:00:01,000 --> 00:00:02,000\nfirst line\n\n2\n00:00:02,500 --> 00:00:03,000\nsecond, ünïcødé\n\n",
    )
    .unwrap();
    let mut ffmpeg = std::process::Command::new("ffmpeg")
        .args(["-hide_banner", "-loglevel", "error", "-nostdin", "-re", "-i"])
        .arg(pattern_720p())
        .arg("-i")
        .arg(&subtitles)
        .args(["-map", "0:v", "-map", "0:a", "-map", "1:s", "-c:v", "copy", "-c:a", "copy", "-c:s", "text"])
        .args(["-f", "flv", &url])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("ffmpeg must be installed");
    wait_live(&server, &arn, Duration::from_secs(15)).await;
    let multivariant = get(&server, &path_of(&playback_url));
    let media = multivariant.body.lines().find(|l| l.starts_with('/')).expect("a variant").to_owned();
    let expected = vec![
        ("inband.metadata.live-video.net".to_owned(), "first line".to_owned()),
        ("inband.metadata.live-video.net".to_owned(), "second, ünïcødé".to_owned()),
    ];
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let found = id3_texts(&ts_metadata(&stream_bytes(&server, &media)));
        if found == expected {
            break;
        }
        assert!(Instant::now() < deadline, "the broadcaster's text in the stream: {found:?}");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let _ = ffmpeg.kill();
    let _ = ffmpeg.wait();
}

/// IVS's account rate: 155 PutMetadata calls a second across an account's channels, with 5 per
/// channel, so 32 channels are live (raw RTMP publishes: a channel is live from its publish).
/// In the cluster run the channels are spread over the nodes, which count the account's calls
/// together.
#[tokio::test]
async fn put_metadata_is_limited_per_account() {
    let server = Server::start();
    let nodes = server.node_rtmp_addresses();
    let mut publishers = Vec::new();
    let mut arns = Vec::new();
    for index in 0..32 {
        let channel = create_channel(&server, ChannelType::BasicChannelType, true).await;
        publishers.push(RawPublisher::publish_to(&nodes[index % nodes.len()], &channel.key));
        arns.push(channel.arn);
    }
    for arn in &arns {
        wait_live(&server, arn, Duration::from_secs(5)).await;
    }
    let client = server.client();
    // 5 calls on each of 31 channels: 155, all within the account's second …
    let started = Instant::now();
    let mut calls = tokio::task::JoinSet::new();
    for arn in &arns[..31] {
        for i in 0..5 {
            let request = client.put_metadata().channel_arn(arn).metadata(format!("call {i}"));
            calls.spawn(async move { request.send().await });
        }
    }
    while let Some(call) = calls.join_next().await {
        call.unwrap().expect("155 calls a second are within the account's rate");
    }
    // … so the next one, on a channel that made none, is throttled for the account.
    if started.elapsed() < Duration::from_millis(900) {
        let refused = client.put_metadata().channel_arn(&arns[31]).metadata("one too many").send().await;
        let error = refused.expect_err("the 156th call in a second is throttled");
        let service_error = error.into_service_error();
        assert!(service_error.is_throttling_exception(), "{service_error:?}");
        assert!(service_error.to_string().contains("account"), "{service_error}");
    } else {
        println!("155 calls took {:?}: the throttled call is not checked in this run", started.elapsed());
    }
    tokio::time::sleep(Duration::from_millis(1100)).await;
    client.put_metadata().channel_arn(&arns[31]).metadata("a second later").send().await.unwrap();
    drop(publishers);
}

/// A broadcaster's `onCuePoint` (which ffmpeg cannot send) reaches the stream as JSON with the
/// in-band owner, at its place in the media.
#[tokio::test]
async fn a_broadcasters_cue_point_reaches_the_stream_as_json() {
    let server = Server::start();
    let channel = create_channel(&server, ChannelType::StandardChannelType, true).await;
    let mut publisher = RawPublisher::publish(&server, &channel.key);
    let tags = flv_tags(pattern_720p());
    let (before, after): (Vec<_>, Vec<_>) = tags.iter().partition(|tag| tag.timestamp < 5000);
    for tag in &before {
        publisher.tag(tag).unwrap();
    }
    wait_live(&server, &channel.arn, Duration::from_secs(5)).await;
    let playback_url = server.client().get_channel().arn(&channel.arn).send().await.unwrap();
    let playback_url = playback_url.channel().unwrap().playback_url().unwrap().to_owned();
    let multivariant = get(&server, &path_of(&playback_url));
    let media = multivariant.body.lines().find(|l| l.starts_with('/')).expect("a variant").to_owned();
    let cue = Value::object([
        ("name", Value::string("product-card")),
        ("time", Value::Number(5.0)),
        ("type", Value::string("event")),
        ("parameters", Value::object([("sku", Value::string("A-1"))])),
    ]);
    publisher.data(5000, &[Value::string("onCuePoint"), cue]).unwrap();
    for tag in &after {
        publisher.tag(tag).unwrap();
    }
    // The broadcaster leaves: the stream ends and every segment is complete.
    drop(publisher);
    let deadline = Instant::now() + Duration::from_secs(10);
    while !get(&server, &media).body.contains("#EXT-X-ENDLIST") {
        assert!(Instant::now() < deadline, "the stream ends");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let found = id3_texts(&ts_metadata(&stream_bytes(&server, &media)));
    assert_eq!(found.len(), 1, "{found:?}");
    assert_eq!(found[0].0, "inband.metadata.live-video.net");
    let json: serde_json::Value = serde_json::from_str(&found[0].1).unwrap();
    assert_eq!(
        json,
        serde_json::json!({"name": "product-card", "time": 5.0, "type": "event", "parameters": {"sku": "A-1"}})
    );
}

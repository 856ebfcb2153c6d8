//! `openivs serve --demo`: live video in the first minute, with nothing else installed. A
//! channel named `demo` (BASIC, LOW latency, in the account of the first credential, region
//! us-west-2; made once and found again by its name after a restart) and a publisher inside the
//! process that loops a 4 s clip embedded in the binary (`assets/demo-clip.flv`, H.264/AAC, made
//! by `tools/make-demo-clip.sh`) into it in real time, through the same publish path as RTMP
//! and SRT, so the channel behaves as any live channel (playback, sessions, StopStream: the
//! demo goes live again a few seconds later).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use openivs_media::flv::{self, AudioPacket, FileTag, VideoPacket};
use serde_json::{Value, json};
use tokio::sync::watch;
use tokio::time::Instant;

use crate::api::Api;
use crate::auth::Caller;
use crate::ingest::IngestContext;
use crate::ingest::publish::{self, Outcome, Publish};
use crate::live::hub::TrackKind;

/// The clip the demo loops.
static CLIP: &[u8] = include_bytes!("../assets/demo-clip.flv");
pub const REGION: &str = "us-west-2";
pub const CHANNEL_NAME: &str = "demo";
/// How long the demo waits before going live again after its stream ended (StopStream).
const COMEBACK: Duration = Duration::from_secs(3);

/// The demo channel: its ARN and playback URL.
pub struct DemoChannel {
    pub arn: String,
    pub playback_url: String,
}

fn text(value: &Value, member: &str) -> String {
    value[member].as_str().unwrap_or_default().to_owned()
}

/// Finds the `demo` channel of `account`, or makes it; its ARN, playback URL and stream key.
async fn channel(api: &Api, account: &str) -> Result<(DemoChannel, String), String> {
    let caller = Caller { account: account.to_owned(), region: REGION.to_owned() };
    let failed = |e: openivs_model::IvsError| format!("demo channel: {e}");
    let listed = api.handle("ListChannels", &caller, json!({ "filterByName": CHANNEL_NAME })).await.map_err(failed)?;
    let existing = listed["channels"].as_array().and_then(|c| c.first()).map(|c| text(c, "arn"));
    let (channel, stream_key) = match existing {
        Some(arn) => {
            let channel =
                api.handle("GetChannel", &caller, json!({ "arn": arn })).await.map_err(failed)?["channel"].clone();
            let keys = api.handle("ListStreamKeys", &caller, json!({ "channelArn": arn })).await.map_err(failed)?;
            let key_arn = keys["streamKeys"].as_array().and_then(|k| k.first()).map(|k| text(k, "arn"));
            let key = match key_arn {
                Some(key_arn) => {
                    api.handle("GetStreamKey", &caller, json!({ "arn": key_arn })).await.map_err(failed)?
                }
                None => api.handle("CreateStreamKey", &caller, json!({ "channelArn": arn })).await.map_err(failed)?,
            };
            (channel, text(&key["streamKey"], "value"))
        }
        None => {
            let input = json!({ "name": CHANNEL_NAME, "type": "BASIC", "latencyMode": "LOW" });
            let created = api.handle("CreateChannel", &caller, input).await.map_err(failed)?;
            (created["channel"].clone(), text(&created["streamKey"], "value"))
        }
    };
    Ok((DemoChannel { arn: text(&channel, "arn"), playback_url: text(&channel, "playbackUrl") }, stream_key))
}

/// Starts the demo: the channel, and its publisher until `stopping` turns true.
pub async fn start(
    api: &Api,
    account: &str,
    context: Arc<IngestContext>,
    stopping: watch::Receiver<bool>,
) -> Result<DemoChannel, String> {
    let tags = flv::read_file(CLIP).map_err(|e| format!("the demo clip: {e}"))?;
    let (channel, stream_key) = channel(api, account).await?;
    tokio::spawn(publish_forever(context, stream_key, tags, stopping));
    Ok(channel)
}

async fn publish_forever(
    context: Arc<IngestContext>,
    stream_key: String,
    tags: Vec<FileTag<'static>>,
    mut stopping: watch::Receiver<bool>,
) {
    let peer = SocketAddr::from(([127, 0, 0, 1], 0));
    while !*stopping.borrow() {
        let begun = match context.authorize(&stream_key, true).await {
            Ok(authorized) => publish::begin(authorized, &stream_key, true, peer, &context).await,
            Err(refusal) => Err(refusal),
        };
        match begun {
            Ok(mut publish) => {
                let outcome = tokio::select! {
                    outcome = loop_clip(&mut publish, &tags) => outcome,
                    _ = stopping.wait_for(|stop| *stop) => (Ok(()), None),
                };
                if let Err(reason) = publish.end(outcome, &context).await {
                    tracing::debug!("demo: the stream ended: {reason}");
                }
            }
            // (Another publisher on the demo channel, or the store unavailable: try again later.)
            Err(refusal) => tracing::debug!("demo: publish refused: {refusal:?}"),
        }
        tokio::select! {
            () = tokio::time::sleep(COMEBACK) => {}
            _ = stopping.wait_for(|stop| *stop) => {}
        }
    }
}

/// Plays the clip's tags into `publish` in real time, again and again, until the stream is
/// stopped. Each round starts one 30 fps frame after the last tag of the round before.
async fn loop_clip(publish: &mut Publish, tags: &[FileTag<'static>]) -> Outcome {
    let clip_ms = tags.last().map_or(0, |t| t.timestamp_ms) + 1000 / 30;
    publish.set_encoder("openivs demo");
    publish.announce_framerate(30.0);
    let stop = publish.stop();
    let started = Instant::now();
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    let mut configured = false;
    for round in 0u64.. {
        let offset = round * u64::from(clip_ms);
        for tag in tags {
            let at = offset + u64::from(tag.timestamp_ms);
            loop {
                tokio::select! {
                    () = tokio::time::sleep_until(started + Duration::from_millis(at)) => break,
                    _ = stop.notified() => return (Ok(()), None),
                    _ = tick.tick() => {
                        if let Some(end) = publish.check().await {
                            return end;
                        }
                    }
                }
            }
            publish.received(tag.body.len() + 11);
            let dts = at as i64;
            let sent = match tag.tag_type {
                flv::TAG_VIDEO => match flv::parse_video(tag.body) {
                    Ok(VideoPacket::SequenceHeader { config, .. }) if !configured => {
                        configured = true;
                        publish.video_configuration(config)
                    }
                    Ok(VideoPacket::Frame { keyframe, composition_time, data, .. }) => {
                        let pts = dts + i64::from(composition_time);
                        publish.frame(TrackKind::Video, dts, pts, keyframe, Bytes::from_static(data)).await
                    }
                    _ => Ok(()),
                },
                flv::TAG_AUDIO => match flv::parse_audio(tag.body) {
                    Ok(AudioPacket::AacSequenceHeader(config)) if round == 0 => publish.audio_configuration(config),
                    Ok(AudioPacket::AacFrame(data)) => {
                        publish.frame(TrackKind::Audio, dts, dts, false, Bytes::from_static(data)).await
                    }
                    _ => Ok(()),
                },
                _ => Ok(()),
            };
            if let Err(code) = sent {
                return (Err(format!("the demo stream was refused: {}", code.unwrap_or("error"))), code);
            }
        }
    }
    (Ok(()), None)
}

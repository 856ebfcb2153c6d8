//! The failover slate of one live stream whose channel has a failover slate configuration: when
//! the publisher's media stops for `activationThresholdSeconds` (it dropped, or stalls), the
//! slate feeds the hub instead, so the live playlists keep growing and viewers keep watching:
//! the stream's last keyframe, repeated with new timestamps (three pictures a second: each one a
//! keyframe, so no encoder is needed and any part can be played on its own), and silent AAC in
//! the stream's audio configuration. It stays on the air until a publisher takes over (the hub
//! holds the publisher back for `minSlateDisplaySeconds`) or for `maxSlateDisplaySeconds`, after
//! which the ingest side ends the stream.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use openivs_media::aac;
use openivs_media::fmp4::AAC_FRAME_SAMPLES;
use tokio::sync::broadcast;

use super::hub::{Hub, MediaFrame, SlateSettings, TrackKind};

/// Interval of the slate's pictures (and how often it publishes).
const PICTURE_INTERVAL_MS: i64 = 333;
/// How often the publisher's silence is checked.
const CHECK_EVERY: Duration = Duration::from_millis(100);

/// Watches the stream and plays the slate whenever the publisher is quiet; returns when the
/// stream ends.
pub async fn run(hub: Arc<Hub>, settings: SlateSettings) {
    let mut subscription = hub.subscribe();
    let mut ended = hub.ended();
    let mut last_keyframe: Option<Arc<MediaFrame>> = None;
    let mut check = tokio::time::interval(CHECK_EVERY);
    loop {
        let begun = tokio::select! {
            received = subscription.frames.recv() => match received {
                Ok(frame) if frame.kind == TrackKind::Video && frame.keyframe => {
                    last_keyframe = Some(frame);
                    None
                }
                Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => None,
                Err(broadcast::error::RecvError::Closed) => return,
            },
            // Nothing to show before the stream's first picture.
            _ = check.tick() => last_keyframe.clone().and_then(|picture| {
                hub.begin_slate(settings.activation, settings.min_display).map(|start| (picture, start))
            }),
            _ = ended.wait_for(|ended| *ended) => return,
        };
        let Some((picture, (start_dts, start_at))) = begun else { continue };
        tracing::info!("failover slate on the air");
        let outcome = tokio::select! {
            outcome = play(&hub, &picture, start_dts, start_at, settings.max_display) => outcome,
            _ = ended.wait_for(|ended| *ended) => return,
        };
        tracing::info!("failover slate off the air");
        // Shown for its maximum: the stream ends (the ingest side ends it), no second slate.
        if outcome == Played::ToTheMaximum {
            return;
        }
    }
}

/// How the slate left the air.
#[derive(Debug, PartialEq, Eq)]
enum Played {
    PublisherTookOver,
    ToTheMaximum,
}

/// Publishes the slate from `start_dts`, which stands for the instant `start_at` (just after the
/// last frame): at once up to now, then in real time, until a publisher takes over or
/// `max_display` has passed.
async fn play(hub: &Hub, picture: &MediaFrame, start_dts: i64, start_at: Instant, max_display: Duration) -> Played {
    let audio = hub.subscribe().audio.borrow().clone();
    // Silent frames in the stream's audio configuration (none if it has no audio).
    let silence = audio.as_ref().and_then(|config| {
        let channels = openivs_media::aac::AudioSpecificConfig::parse(&config.config).ok()?.channels;
        Some((Bytes::from(aac::silent_frame(channels)?), config.sample_rate.max(1)))
    });
    let on_air = Instant::now();
    let mut pictures = 0i64;
    let mut audio_frames = 0i64;
    let mut tick = tokio::time::interval(Duration::from_millis(PICTURE_INTERVAL_MS as u64));
    loop {
        tick.tick().await;
        if on_air.elapsed() >= max_display {
            hub.end_slate();
            return Played::ToTheMaximum;
        }
        // Everything due by now: pictures, and audio up to the same media time.
        let due_ms = start_at.elapsed().as_millis() as i64;
        while pictures * PICTURE_INTERVAL_MS <= due_ms {
            let dts = start_dts + pictures * PICTURE_INTERVAL_MS;
            let frame = slate_frame(TrackKind::Video, dts, true, picture.data.clone());
            if !hub.publish_slate(frame) {
                return Played::PublisherTookOver;
            }
            pictures += 1;
            if let Some((silent, sample_rate)) = &silence {
                let audio_end = pictures * PICTURE_INTERVAL_MS;
                while audio_frames * i64::from(AAC_FRAME_SAMPLES) * 1000 / i64::from(*sample_rate) < audio_end {
                    let offset = audio_frames * i64::from(AAC_FRAME_SAMPLES) * 1000 / i64::from(*sample_rate);
                    if !hub.publish_slate(slate_frame(TrackKind::Audio, start_dts + offset, false, silent.clone())) {
                        return Played::PublisherTookOver;
                    }
                    audio_frames += 1;
                }
            }
        }
    }
}

fn slate_frame(kind: TrackKind, dts_ms: i64, keyframe: bool, data: Bytes) -> MediaFrame {
    MediaFrame {
        kind,
        dts_ms,
        pts_ms: dts_ms,
        keyframe,
        data,
        arrival: Instant::now(),
        arrival_wall: time::OffsetDateTime::now_utc(),
        discontinuity: false,
    }
}

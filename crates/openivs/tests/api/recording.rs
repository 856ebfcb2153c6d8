//! Recording to a local bucket (a folder of the buckets directory) in IVS's layout: a live ffmpeg
//! stream into a channel with a recording configuration; every object of the layout, the fields
//! of the JSON files, and the recorded HLS read end to end by ffprobe and ffmpeg with the live
//! stream's duration and its timed metadata.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use aws_sdk_ivs::types::{
    RecordingConfigurationState, RecordingMode, ThumbnailConfiguration, ThumbnailConfigurationResolution,
    ThumbnailConfigurationStorage,
};
use serde_json::Value;

use crate::events::{Receiver, SECRET};
use crate::harness::rtmps_url;
use crate::harness::{ACCOUNT, Server, destination, wait_live, wait_offline, walkdir};
use crate::ingest::{Publisher, live_stream_id, pattern_720p};

pub(crate) fn json(path: &Path) -> Value {
    serde_json::from_slice(&std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))).unwrap()
}

pub(crate) fn ffprobe_duration(path: &Path) -> f64 {
    let output = Command::new("ffprobe")
        .args(["-v", "error", "-show_entries", "format=duration", "-of", "csv=p=0"])
        .arg(path)
        .output()
        .expect("ffprobe must be installed");
    let text = String::from_utf8_lossy(&output.stdout);
    text.trim()
        .parse()
        .unwrap_or_else(|_| panic!("ffprobe {}: {text} {}", path.display(), String::from_utf8_lossy(&output.stderr)))
}

#[tokio::test]
async fn a_stream_is_recorded_to_its_bucket_in_the_ivs_layout() {
    let server = Server::start();
    let client = server.client();
    // A bucket that does not exist fails the configuration, as IVS reports it.
    let failed = client
        .create_recording_configuration()
        .destination_configuration(destination("no-such-bucket"))
        .send()
        .await
        .unwrap();
    assert_eq!(failed.recording_configuration().unwrap().state(), &RecordingConfigurationState::CreateFailed);
    let failed_arn = failed.recording_configuration().unwrap().arn();
    crate::assert_error!(
        client.create_channel().recording_configuration_arn(failed_arn).send(),
        "ValidationException",
        400
    );
    // Thumbnails every 2 s at SD, numbered and latest; and a configuration without thumbnails.
    let thumbnails = ThumbnailConfiguration::builder()
        .recording_mode(RecordingMode::Interval)
        .target_interval_seconds(2)
        .resolution(ThumbnailConfigurationResolution::Sd)
        .storage(ThumbnailConfigurationStorage::Sequential)
        .storage(ThumbnailConfigurationStorage::Latest)
        .build();
    let created = client
        .create_recording_configuration()
        .destination_configuration(destination("bucket"))
        .thumbnail_configuration(thumbnails)
        .send()
        .await
        .unwrap();
    let config = created.recording_configuration().unwrap();
    assert_eq!(config.state(), &RecordingConfigurationState::Active);
    let without = configuration_without_thumbnails(&server, "bucket-1", 0).await;
    let (arn, url) = recorded_channel(&server, config.arn()).await;
    let (plain_arn, plain_url) = recorded_channel(&server, &without).await;
    let channel_id = arn.rsplit('/').next().unwrap().to_owned();

    let mut publisher = Publisher::start(&url, pattern_720p());
    let mut plain_publisher = Publisher::start(&plain_url, pattern_720p());
    wait_live(&server, &arn, Duration::from_secs(15)).await;
    wait_live(&server, &plain_arn, Duration::from_secs(15)).await;
    let live_from = Instant::now();
    let started = time::OffsetDateTime::now_utc();
    tokio::time::sleep(Duration::from_secs(4)).await;
    let payloads = ["{\"quiz\":1}", "second cue"];
    for payload in payloads {
        client.put_metadata().channel_arn(&arn).metadata(payload).send().await.unwrap();
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
    tokio::time::sleep(Duration::from_secs(6)).await;
    publisher.kill();
    plain_publisher.kill();
    let live_for = live_from.elapsed().as_secs_f64();
    wait_offline(&server, &arn, Duration::from_secs(10)).await;

    // ivs/v1/{account}/{channel}/{yyyy}/{m}/{d}/{h}/{min}/{recording id}, not zero-padded.
    let channel_dir = server.data_dir.join("buckets/bucket/ivs/v1").join(ACCOUNT).join(&channel_id);
    let prefix = ended_recording(&channel_dir).await;
    let relative: Vec<String> = prefix
        .strip_prefix(&channel_dir)
        .unwrap()
        .components()
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .collect();
    assert_eq!(relative.len(), 6, "{relative:?}");
    let expected_date = [
        started.year().to_string(),
        u8::from(started.month()).to_string(),
        started.day().to_string(),
        started.hour().to_string(),
    ];
    assert_eq!(relative[..4], expected_date);
    assert!(relative[5].len() == 12 && relative[5].chars().all(|c| c.is_ascii_alphanumeric()), "{relative:?}");

    let started_file = json(&prefix.join("events/recording-started.json"));
    assert_eq!(started_file["version"], "v1");
    assert_eq!(started_file["channel_arn"], arn.as_str());
    assert_eq!(started_file["recording_status"], "RECORDING_STARTED");
    assert!(started_file.get("recording_ended_at").is_none());
    let ended = json(&prefix.join("events/recording-ended.json"));
    assert_eq!(ended["recording_status"], "RECORDING_ENDED");
    assert_eq!(ended["recording_status_message"], "");
    for field in ["recording_started_at", "recording_ended_at"] {
        let at = ended[field].as_str().unwrap();
        assert!(at.len() == 20 && at.ends_with('Z'), "{field}: {at}");
    }
    let hls = &ended["media"]["hls"];
    assert_eq!(hls["path"], "media/hls");
    assert_eq!(hls["playlist"], "master.m3u8");
    assert_eq!(hls["byte_range_playlist"], "byte-range-multivariant.m3u8");
    let rendition = &hls["renditions"][0];
    assert_eq!(rendition["path"], "720p30");
    assert_eq!(
        (rendition["resolution_width"].as_u64(), rendition["resolution_height"].as_u64()),
        (Some(1280), Some(720))
    );
    let duration_ms = hls["duration_ms"].as_u64().unwrap() as f64;
    assert!((duration_ms / 1000.0 - live_for).abs() < 2.5, "recorded {duration_ms} ms of a {live_for:.1} s stream");

    let media = prefix.join("media/hls");
    let master = std::fs::read_to_string(media.join("master.m3u8")).unwrap();
    assert!(
        master.contains(&format!("#EXT-X-SESSION-DATA:DATA-ID=\"net.live-video.content.id\",VALUE=\"{channel_id}\""))
    );
    assert!(master.contains("RESOLUTION=1280x720,VIDEO=\"720p30\"\n720p30/playlist.m3u8\n"), "{master}");
    let playlist = std::fs::read_to_string(media.join("720p30/playlist.m3u8")).unwrap();
    assert!(playlist.contains("#EXT-X-PLAYLIST-TYPE:VOD\n") && playlist.ends_with("#EXT-X-ENDLIST\n"), "{playlist}");
    let byte_ranges = std::fs::read_to_string(media.join("720p30/byte-range-variant.m3u8")).unwrap();
    assert!(byte_ranges.contains("#EXT-X-BYTERANGE:"), "{byte_ranges}");

    // Thumbnails: JPEG pictures at 854×480 (SD, the source's aspect), one per 2 s of stream.
    let thumbnail_files: Vec<PathBuf> =
        (0..).map(|n| prefix.join(format!("media/thumbnails/thumb{n}.jpg"))).take_while(|p| p.exists()).collect();
    let expected_count = (duration_ms / 2000.0).ceil() as usize;
    assert!(
        thumbnail_files.len().abs_diff(expected_count) <= 1,
        "{} thumbnails for {duration_ms} ms",
        thumbnail_files.len()
    );
    for file in thumbnail_files.iter().chain([&prefix.join("media/latest_thumbnail/thumb.jpg")]) {
        let probe = Command::new("ffprobe")
            .args(["-v", "error", "-show_entries", "stream=codec_name,width,height", "-of", "csv=p=0"])
            .arg(file)
            .output()
            .unwrap();
        assert_eq!(String::from_utf8_lossy(&probe.stdout).trim(), "mjpeg,854,480", "{}", file.display());
    }
    assert_eq!(ended["media"]["thumbnails"]["path"], "media/thumbnails");
    assert_eq!(ended["media"]["thumbnails"]["resolution_height"], 480);
    assert_eq!(ended["media"]["latest_thumbnail"]["path"], "media/latest_thumbnail/thumb.jpg");
    // DISABLED writes none.
    let plain_id = plain_arn.rsplit('/').next().unwrap().to_owned();
    let plain_prefix =
        ended_recording(&server.data_dir.join("buckets/bucket-1/ivs/v1").join(ACCOUNT).join(plain_id)).await;
    assert!(!plain_prefix.join("media/thumbnails").exists() && !plain_prefix.join("media/latest_thumbnail").exists());
    assert!(json(&plain_prefix.join("events/recording-ended.json"))["media"].get("thumbnails").is_none());

    // Both forms play from start to end with the stream's duration.
    plays_for(&media, duration_ms);
    let decode = Command::new("ffmpeg")
        .args(["-v", "error", "-nostdin", "-allowed_extensions", "ALL", "-i"])
        .arg(media.join("master.m3u8"))
        .args(["-f", "null", "-"])
        .output()
        .expect("ffmpeg must be installed");
    assert!(decode.status.success(), "{}", String::from_utf8_lossy(&decode.stderr));

    // The timed metadata is in the recorded segments.
    let mut segments = Vec::new();
    for line in playlist.lines().filter(|l| l.ends_with(".ts")) {
        segments.extend(std::fs::read(media.join("720p30").join(line)).unwrap());
    }
    let texts = crate::metadata::recorded_metadata(&segments);
    let expected: Vec<(String, String)> =
        payloads.iter().map(|p| ("metadata.live-video.net".to_owned(), p.to_string())).collect();
    assert_eq!(texts, expected);
}

/// A recording configuration to `bucket` without thumbnails, with a reconnect window: its ARN.
pub(crate) async fn configuration_without_thumbnails(server: &Server, bucket: &str, reconnect_window: i32) -> String {
    let created = server
        .client()
        .create_recording_configuration()
        .destination_configuration(destination(bucket))
        .recording_reconnect_window_seconds(reconnect_window)
        .thumbnail_configuration(ThumbnailConfiguration::builder().recording_mode(RecordingMode::Disabled).build())
        .send()
        .await
        .unwrap();
    created.recording_configuration().unwrap().arn().to_owned()
}

/// A channel recorded with `configuration`: its ARN and RTMPS URL.
pub(crate) async fn recorded_channel(server: &Server, configuration: &str) -> (String, String) {
    let out = server.client().create_channel().recording_configuration_arn(configuration).send().await.unwrap();
    let channel = out.channel().unwrap();
    let url = rtmps_url(&out);
    (channel.arn().unwrap().to_owned(), url)
}

/// The prefix of the channel's recording, once `recording-ended.json` is written (at most 10 s).
pub(crate) async fn ended_recording(channel_dir: &Path) -> PathBuf {
    ended_recordings(channel_dir, 1, Duration::from_secs(10)).await.remove(0)
}

/// The prefixes of the channel's recordings once `count` have ended (at most `limit`).
async fn ended_recordings(channel_dir: &Path, count: usize, limit: Duration) -> Vec<PathBuf> {
    let deadline = Instant::now() + limit;
    loop {
        let ended: Vec<PathBuf> = walkdir(channel_dir)
            .into_iter()
            .filter(|p| p.ends_with("events/recording-ended.json"))
            .map(|p| p.parent().unwrap().parent().unwrap().to_owned())
            .collect();
        if ended.len() >= count {
            return ended;
        }
        assert!(Instant::now() < deadline, "{count} recording(s) ended within {limit:?} in {}", channel_dir.display());
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// With a reconnect window, a publisher that comes back within it continues the same recording
/// (one prefix, a discontinuity, "ended" only once the window has passed); one that comes back
/// after the window starts a new recording.
#[tokio::test]
async fn the_reconnect_window_merges_streams_into_one_recording() {
    let server = Server::start();
    let config = configuration_without_thumbnails(&server, "my-bucket", 8).await;
    let (arn, url) = recorded_channel(&server, &config).await;
    let channel_id = arn.rsplit('/').next().unwrap().to_owned();
    let channel_dir = server.data_dir.join("buckets/my-bucket/ivs/v1").join(ACCOUNT).join(channel_id);
    let publish_for = |seconds: u64| {
        let url = url.clone();
        let server = &server;
        let arn = arn.clone();
        async move {
            let mut publisher = Publisher::start(&url, pattern_720p());
            wait_live(server, &arn, Duration::from_secs(15)).await;
            tokio::time::sleep(Duration::from_secs(seconds)).await;
            publisher.kill();
            wait_offline(server, &arn, Duration::from_secs(10)).await;
        }
    };
    publish_for(4).await;
    publish_for(4).await;
    let started = |dir: &Path| walkdir(dir).into_iter().filter(|p| p.ends_with("recording-started.json")).count();
    assert_eq!(started(&channel_dir), 1, "the second stream continues the first recording");
    assert!(!walkdir(&channel_dir).iter().any(|p| p.ends_with("recording-ended.json")), "ended only after the window");
    let prefix = ended_recordings(&channel_dir, 1, Duration::from_secs(15)).await.remove(0);
    let playlist = std::fs::read_to_string(prefix.join("media/hls/720p30/playlist.m3u8")).unwrap();
    assert_eq!(playlist.matches("#EXT-X-DISCONTINUITY\n").count(), 1, "{playlist}");
    let duration_ms =
        json(&prefix.join("events/recording-ended.json"))["media"]["hls"]["duration_ms"].as_f64().unwrap();
    assert!((6000.0..12000.0).contains(&duration_ms), "two streams of about 4 s: {duration_ms} ms");
    let duration = ffprobe_duration(&prefix.join("media/hls/master.m3u8"));
    assert!((duration - duration_ms / 1000.0).abs() < 0.5, "{duration} s, files say {duration_ms} ms");

    // After the window: a recording of its own. It waits for a comeback, but a clean shutdown
    // (SIGTERM) ends it at once, with its final files.
    publish_for(3).await;
    assert_eq!(started(&channel_dir), 2);
    let mut server = server;
    server.stop();
    let ended = ended_recordings(&channel_dir, 2, Duration::ZERO).await;
    assert_eq!(ended.len(), 2);
}

/// `kill -9` of openivs mid-recording: the next start finishes the recording from what reached
/// the bucket (VOD playlists, master playlists, `recording-ended.json`), and it plays. The
/// recording had merged two streams (reconnect window): its Recording End event, raised after
/// the restart, names both.
#[tokio::test(flavor = "multi_thread")]
async fn a_recording_interrupted_by_a_crash_is_finished_at_the_next_start() {
    let receiver = Receiver::start();
    let mut server = Server::with_args(&["--event-webhook", &receiver.url, "--event-webhook-secret", SECRET]);
    let config = configuration_without_thumbnails(&server, "other.bucket", 30).await;
    let (arn, url) = recorded_channel(&server, &config).await;
    let channel_id = arn.rsplit('/').next().unwrap().to_owned();
    let channel_dir = server.data_dir.join("buckets/other.bucket/ivs/v1").join(ACCOUNT).join(channel_id);
    let mut first = Publisher::start(&url, pattern_720p());
    wait_live(&server, &arn, Duration::from_secs(15)).await;
    let first_stream_id = live_stream_id(&server, &arn).await;
    // Past the first segment (10 s), then the publisher drops and comes back within the window.
    let deadline = Instant::now() + Duration::from_secs(20);
    while !walkdir(&channel_dir).iter().any(|p| p.ends_with("720p30/0.ts")) {
        assert!(Instant::now() < deadline, "the first segment is written");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    first.kill();
    wait_offline(&server, &arn, Duration::from_secs(15)).await;
    let _second = Publisher::start(&url, pattern_720p());
    wait_live(&server, &arn, Duration::from_secs(15)).await;
    let second_stream_id = live_stream_id(&server, &arn).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(!walkdir(&channel_dir).iter().any(|p| p.ends_with("recording-ended.json")));
    server.crash_and_restart();

    let prefix = ended_recording(&channel_dir).await;
    let ended = json(&prefix.join("events/recording-ended.json"));
    assert_eq!(ended["recording_status"], "RECORDING_ENDED");
    let duration_ms = ended["media"]["hls"]["duration_ms"].as_f64().unwrap();
    assert!(duration_ms >= 9000.0, "the segments that were written: {duration_ms} ms");
    let media = prefix.join("media/hls");
    let playlist = std::fs::read_to_string(media.join("720p30/playlist.m3u8")).unwrap();
    assert!(playlist.contains("#EXT-X-PLAYLIST-TYPE:VOD\n") && playlist.ends_with("#EXT-X-ENDLIST\n"), "{playlist}");
    plays_for(&media, duration_ms);
    let recording_ended =
        |events: &[(String, Value)]| events.iter().any(|(_, d)| d["recording_status"] == "Recording End");
    receiver.wait_for(&arn, Duration::from_secs(15), recording_ended);
    let events = receiver.details_for(&arn);
    let (_, end) = events.iter().find(|(_, d)| d["recording_status"] == "Recording End").unwrap();
    assert_eq!(end["recording_session_stream_ids"], serde_json::json!([first_stream_id, second_stream_id]), "{end}");
    assert_eq!(
        end["recording_s3_key_prefix"],
        prefix.strip_prefix(server.data_dir.join("buckets/other.bucket")).unwrap().to_str().unwrap(),
        "{end}"
    );
}

/// The recording's master and byte-range playlists each play for `duration_ms` (ffprobe).
pub(crate) fn plays_for(media: &Path, duration_ms: f64) {
    for playlist in ["master.m3u8", "byte-range-multivariant.m3u8"] {
        let duration = ffprobe_duration(&media.join(playlist));
        assert!((duration - duration_ms / 1000.0).abs() < 0.5, "{playlist}: {duration} s, files say {duration_ms} ms");
    }
}

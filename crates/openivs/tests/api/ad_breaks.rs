//! Ad breaks in the stream: InsertAdBreak on a live channel with an ad configuration marks the
//! break in the media playlists (`EXT-X-DATERANGE` with SCTE-35 `splice_insert` cues, decoded
//! here by an independent parser, and `EXT-X-CUE-OUT`/`-CONT`/`-IN`) at segment boundaries, for a
//! break "now" and one targeted ahead, in both containers and latency modes; the ad
//! configuration's post-roll is marked before `EXT-X-ENDLIST`; and IVS's errors.

use std::collections::BTreeMap;
use std::process::Command;
use std::time::{Duration, Instant};

use aws_sdk_ivs::primitives::DateTime;
use aws_sdk_ivs::types::{
    ChannelLatencyMode, ContainerFormat, MediaTailorPlaybackConfiguration, PostRollConfiguration,
};
use serde_json::Value;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::assert_error;
use crate::harness::wait_live;
use crate::harness::{ACCOUNT, REGION, RawResponse, Server, create_channel_with, raw_request};
use crate::ingest::{Publisher, pattern_720p};
use crate::playback::path_of;

const SCTE35_PY: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/api/scte35.py");

fn get(server: &Server, path: &str) -> RawResponse {
    raw_request(server, "GET", path, &[], "")
}

/// The cues, decoded by threefive: one JSON object each.
fn decode_cues(hex: &[&str]) -> Vec<Value> {
    let output = Command::new("python3")
        .arg(SCTE35_PY)
        .args(hex)
        .output()
        .expect("python3 with threefive (tests-requirements.txt) must be installed");
    assert!(output.status.success(), "scte35.py: {}", String::from_utf8_lossy(&output.stderr));
    String::from_utf8(output.stdout).unwrap().lines().map(|line| serde_json::from_str(line).unwrap()).collect()
}

/// A completed segment as a playlist lists it: its URI, date and the ad tags before it.
#[derive(Debug, Clone)]
struct Listed {
    uri: String,
    date: OffsetDateTime,
    tags: Vec<String>,
}

impl Listed {
    fn tag(&self, prefix: &str) -> Option<&str> {
        self.tags.iter().find(|t| t.starts_with(prefix)).map(String::as_str)
    }
}

/// Adds the completed segments of `playlist` to `seen`, by media sequence number.
fn collect_segments(playlist: &str, seen: &mut BTreeMap<u64, Listed>) {
    let mut date = None;
    let mut tags = Vec::new();
    for line in playlist.lines() {
        if let Some(text) = line.strip_prefix("#EXT-X-PROGRAM-DATE-TIME:") {
            date = Some(OffsetDateTime::parse(text, &Rfc3339).unwrap());
            tags.clear();
        } else if line.starts_with("#EXT-X-DATERANGE") || line.starts_with("#EXT-X-CUE") {
            tags.push(line.to_owned());
        } else if !line.starts_with('#') && !line.is_empty() {
            let msn: u64 = line.rsplit_once('-').unwrap().1.split('.').next().unwrap().parse().unwrap();
            seen.insert(
                msn,
                Listed { uri: line.to_owned(), date: date.take().unwrap(), tags: std::mem::take(&mut tags) },
            );
        }
    }
}

/// The value of attribute `name` in a tag's attribute list.
fn attribute<'a>(tag: &'a str, name: &str) -> Option<&'a str> {
    let list = tag.split_once(':')?.1;
    let start = list.find(&format!("{name}="))? + name.len() + 1;
    let rest = &list[start..];
    if let Some(quoted) = rest.strip_prefix('"') {
        return quoted.split('"').next();
    }
    rest.split(',').next()
}

/// The break `id` as the segments carry it: the segment it starts on and the one the program
/// returns on; checks the cues on and between them.
fn check_break(segments: &BTreeMap<u64, Listed>, id: &str, duration: f64) -> (Listed, Listed) {
    let marks_start =
        |s: &&Listed| s.tags.iter().any(|t| attribute(t, "ID") == Some(id) && attribute(t, "SCTE35-OUT").is_some());
    let (&out_msn, out) = segments.iter().find(|(_, s)| marks_start(s)).unwrap_or_else(|| panic!("{id} starts"));
    assert_eq!(out.tag("#EXT-X-CUE-OUT:"), Some(format!("#EXT-X-CUE-OUT:DURATION={duration:.3}").as_str()));
    let start_range = out.tag("#EXT-X-DATERANGE").unwrap();
    assert_eq!(attribute(start_range, "PLANNED-DURATION"), Some(format!("{duration:.3}").as_str()));
    let mut returned = None;
    for (_, segment) in segments.range(out_msn + 1..) {
        if segment.tag("#EXT-X-CUE-IN").is_some() {
            returned = Some(segment.clone());
            break;
        }
        let cont = segment.tag("#EXT-X-CUE-OUT-CONT:").unwrap_or_else(|| panic!("inside {id}: {segment:?}"));
        let elapsed: f64 = attribute(cont, "ElapsedTime").unwrap().parse().unwrap();
        let in_break = (segment.date - out.date).as_seconds_f64();
        assert!((elapsed - in_break).abs() < 0.01, "{cont} at {in_break}");
        assert!(elapsed < duration);
    }
    let back = returned.unwrap_or_else(|| panic!("{id} ends"));
    let end_range = back.tag("#EXT-X-DATERANGE").unwrap();
    assert_eq!(attribute(end_range, "ID"), Some(id));
    // The same ID repeats its START-DATE (RFC 8216 4.4.5.1) and adds END-DATE and DURATION.
    assert_eq!(attribute(end_range, "START-DATE"), attribute(start_range, "START-DATE"));
    let lasted = (back.date - out.date).as_seconds_f64();
    assert!(lasted >= duration - 0.05 && lasted < duration + 2.5, "{id} lasted {lasted} s");
    assert!((attribute(end_range, "DURATION").unwrap().parse::<f64>().unwrap() - lasted).abs() < 0.01);

    let cues =
        decode_cues(&[attribute(start_range, "SCTE35-OUT").unwrap(), attribute(end_range, "SCTE35-IN").unwrap()]);
    for cue in &cues {
        assert_eq!(cue["decoded"], true, "{cue}");
        assert_eq!(cue["command"], "Splice Insert");
    }
    assert_eq!(cues[0]["out_of_network"], true);
    assert_eq!(cues[0]["duration"].as_f64(), Some(duration));
    assert_eq!(cues[0]["auto_return"], true);
    assert_eq!(cues[1]["out_of_network"], false);
    assert_eq!(cues[0]["event_id"], cues[1]["event_id"]);
    let (out_pts, in_pts) = (cues[0]["pts_time"].as_f64().unwrap(), cues[1]["pts_time"].as_f64().unwrap());
    assert!((in_pts - out_pts - lasted).abs() < 0.05, "splice points {out_pts}..{in_pts}, dates {lasted} s apart");
    (out.clone(), back)
}

/// The first video PTS of an MPEG-TS segment, as ffprobe reads it, in seconds.
fn video_start(server: &Server, url: &str) -> f64 {
    let output = Command::new("ffprobe")
        .args(["-v", "error", "-select_streams", "v:0", "-show_entries", "stream=start_time", "-of", "csv=p=0"])
        .arg(format!("{}{url}", server.endpoint))
        .output()
        .expect("ffprobe must be installed");
    let text = String::from_utf8_lossy(&output.stdout);
    text.split_whitespace()
        .next()
        .unwrap_or_default()
        .parse()
        .unwrap_or_else(|_| panic!("ffprobe of {url}: {text} {}", String::from_utf8_lossy(&output.stderr)))
}

struct LiveChannel {
    arn: String,
    media: String,
    publisher: Publisher,
}

async fn live_channel(
    server: &Server,
    ad_configuration_arn: &str,
    latency: ChannelLatencyMode,
    container: ContainerFormat,
) -> LiveChannel {
    let (out, url) =
        create_channel_with(server, latency, container, |b| b.ad_configuration_arn(ad_configuration_arn)).await;
    let channel = out.channel().unwrap();
    let publisher = Publisher::start(&url, pattern_720p());
    let arn = channel.arn().unwrap().to_owned();
    wait_live(server, &arn, Duration::from_secs(15)).await;
    let multivariant = get(server, &path_of(channel.playback_url().unwrap()));
    let media = multivariant.body.lines().find(|l| l.starts_with('/')).expect("a variant").to_owned();
    LiveChannel { arn, media, publisher }
}

async fn ad_configuration(server: &Server, post_roll: Option<i32>) -> String {
    let playback = MediaTailorPlaybackConfiguration::builder()
        .playback_configuration_arn(format!("arn:aws:mediatailor:{REGION}:{ACCOUNT}:playbackConfiguration/ads"))
        .build();
    let mut create = server.client().create_ad_configuration().media_tailor_playback_configurations(playback);
    if let Some(seconds) = post_roll {
        create = create.post_roll_configuration(
            PostRollConfiguration::builder().enabled(true).duration_seconds(seconds).build().unwrap(),
        );
    }
    create.send().await.unwrap().ad_configuration().unwrap().arn().to_owned()
}

/// Collects the channel's segments until `done` holds for them (at most `limit`).
async fn segments_until(
    server: &Server,
    channel: &LiveChannel,
    seen: &mut BTreeMap<u64, Listed>,
    limit: Duration,
    done: impl Fn(&BTreeMap<u64, Listed>) -> bool,
) {
    let deadline = Instant::now() + limit;
    loop {
        let playlist = get(server, &channel.media);
        assert_eq!(playlist.status, 200);
        collect_segments(&playlist.body, seen);
        if done(seen) {
            return;
        }
        assert!(Instant::now() < deadline, "waited {limit:?} for the markers: {seen:#?}");
        tokio::time::sleep(Duration::from_millis(400)).await;
    }
}

fn returned(segments: &BTreeMap<u64, Listed>, id: &str) -> bool {
    let started = segments.values().position(|s| s.tags.iter().any(|t| attribute(t, "ID") == Some(id)));
    started.is_some_and(|at| segments.values().skip(at + 1).any(|s| s.tag("#EXT-X-CUE-IN").is_some()))
}

/// The media playlist once the stream has ended (`EXT-X-ENDLIST`).
async fn ended_playlist(server: &Server, channel: &mut LiveChannel) -> String {
    channel.publisher.kill();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let playlist = get(server, &channel.media);
        if playlist.body.contains("#EXT-X-ENDLIST") {
            return playlist.body;
        }
        assert!(Instant::now() < deadline, "the stream ends: {}", playlist.body);
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test]
async fn ad_breaks_are_marked_at_segment_boundaries_with_valid_scte35() {
    let server = Server::start();
    let client = server.client();
    let with_post_roll = ad_configuration(&server, Some(15)).await;
    let plain = ad_configuration(&server, None).await;
    let mut ts_low = live_channel(&server, &with_post_roll, ChannelLatencyMode::LowLatency, ContainerFormat::Ts).await;
    let mut fmp4_normal =
        live_channel(&server, &plain, ChannelLatencyMode::NormalLatency, ContainerFormat::FragmentedMp4).await;
    let no_ads = live_channel(&server, "", ChannelLatencyMode::LowLatency, ContainerFormat::Ts).await;

    // IVS's errors: no ad configuration, a start in the past, a reused id, an overlap.
    assert_error!(
        client.insert_ad_break().channel_arn(&no_ads.arn).duration_seconds(5).send(),
        "ConflictException",
        409
    );
    let past = DateTime::from_secs(OffsetDateTime::now_utc().unix_timestamp() - 60);
    assert_error!(
        client.insert_ad_break().channel_arn(&ts_low.arn).duration_seconds(5).target_start_at(past).send(),
        "ValidationException",
        400
    );
    let now_break = client.insert_ad_break().channel_arn(&ts_low.arn).duration_seconds(4).send().await.unwrap();
    let now_id = now_break.ad_break_id().unwrap().to_owned();
    assert!(now_id.len() == 12 && now_id.chars().all(|c| c.is_ascii_alphanumeric()), "{now_id}");
    let answered_at = OffsetDateTime::now_utc();
    let in_seconds =
        |seconds: i64| DateTime::from_millis((answered_at.unix_timestamp_nanos() / 1_000_000) as i64 + seconds * 1000);
    assert_error!(
        client
            .insert_ad_break()
            .channel_arn(&ts_low.arn)
            .duration_seconds(4)
            .ad_break_id(&now_id)
            .target_start_at(in_seconds(100))
            .send(),
        "ConflictException",
        409
    );
    assert_error!(
        client.insert_ad_break().channel_arn(&ts_low.arn).duration_seconds(5).target_start_at(in_seconds(2)).send(),
        "ConflictException",
        409
    );
    let targeted = client
        .insert_ad_break()
        .channel_arn(&ts_low.arn)
        .duration_seconds(3)
        .ad_break_id("targeted1234")
        .target_start_at(in_seconds(10))
        .send()
        .await
        .unwrap();
    assert_eq!(targeted.ad_break_id(), Some("targeted1234"));
    let target = OffsetDateTime::from_unix_timestamp(targeted.target_start_at().unwrap().secs()).unwrap()
        + time::Duration::nanoseconds(targeted.target_start_at().unwrap().subsec_nanos().into());
    let fmp4_id = "fragmented01";
    client
        .insert_ad_break()
        .channel_arn(&fmp4_normal.arn)
        .duration_seconds(3)
        .ad_break_id(fmp4_id)
        .send()
        .await
        .unwrap();

    let mut ts_segments = BTreeMap::new();
    segments_until(&server, &ts_low, &mut ts_segments, Duration::from_secs(30), |seen| {
        returned(seen, &now_id) && returned(seen, "targeted1234")
    })
    .await;
    let (now_out, now_in) = check_break(&ts_segments, &now_id, 4.0);
    // "Now" is the next segment, within one segment (2 s) of the answer.
    assert!((now_out.date - answered_at).as_seconds_f64() < 2.5, "{:?} after {answered_at}", now_out.date);
    let (targeted_out, _) = check_break(&ts_segments, "targeted1234", 3.0);
    let lead = (targeted_out.date - target).as_seconds_f64();
    assert!((-0.05..2.5).contains(&lead), "the targeted break starts on the first segment from its time: {lead} s");
    // The cues' splice points are the segments' first pictures.
    let base = ts_low.media.rsplit_once('/').unwrap().0;
    let cues = decode_cues(&[
        attribute(now_out.tag("#EXT-X-DATERANGE").unwrap(), "SCTE35-OUT").unwrap(),
        attribute(now_in.tag("#EXT-X-DATERANGE").unwrap(), "SCTE35-IN").unwrap(),
    ]);
    for (cue, segment) in cues.iter().zip([&now_out, &now_in]) {
        let pts = video_start(&server, &format!("{base}/{}", segment.uri));
        assert!((cue["pts_time"].as_f64().unwrap() - pts).abs() < 0.002, "{cue} vs {pts} of {}", segment.uri);
    }

    let mut fmp4_segments = BTreeMap::new();
    segments_until(&server, &fmp4_normal, &mut fmp4_segments, Duration::from_secs(20), |seen| returned(seen, fmp4_id))
        .await;
    check_break(&fmp4_segments, fmp4_id, 3.0);

    // The post-roll of the ad configuration, after the last segment; none without one.
    let ended = ended_playlist(&server, &mut ts_low).await;
    let tail: Vec<&str> = ended.lines().rev().take(3).collect();
    assert_eq!(tail[0], "#EXT-X-ENDLIST");
    assert_eq!(tail[1], "#EXT-X-CUE-OUT:DURATION=15.000");
    assert_eq!(attribute(tail[2], "PLANNED-DURATION"), Some("15.000"), "{ended}");
    let post_roll = decode_cues(&[attribute(tail[2], "SCTE35-OUT").unwrap()]);
    assert_eq!(post_roll[0]["decoded"], true);
    assert_eq!(post_roll[0]["duration"].as_f64(), Some(15.0));
    let ended = ended_playlist(&server, &mut fmp4_normal).await;
    assert!(ended.lines().rev().nth(1).is_some_and(|line| !line.starts_with('#')), "{ended}");
    drop(no_ads);
}

//! HLS playback of live channels, read by real players' tools (ffprobe, ffmpeg) and by an LL-HLS
//! client that follows the playlist as players do: the playbackUrl's multivariant playlist, media
//! playlists in both latency modes, blocking reload, parts and preload hints, delta updates, HTTP
//! behaviour (content types, caching, CORS, ranges), viewer counting and the end of a stream.

use std::process::Command;
use std::time::{Duration, Instant};

use aws_sdk_ivs::types::{ChannelLatencyMode, ChannelType, ContainerFormat};

use crate::harness::rtmps_url;
use crate::harness::{RawResponse, Server, raw_request};
use crate::ingest::{Publisher, pattern_720p, pattern_720p_short_gop, wait_live, wait_offline};

fn get(server: &Server, path_and_query: &str) -> RawResponse {
    raw_request(server, "GET", path_and_query, &[], "")
}

pub(crate) fn path_of(url: &str) -> String {
    let without_scheme = url.split_once("://").map_or(url, |(_, rest)| rest);
    without_scheme.split_once('/').map(|(_, path)| format!("/{path}")).unwrap_or_default()
}

/// Creates a channel, publishes the test pattern to it, and waits until it is live.
async fn live_channel(
    server: &Server,
    latency: ChannelLatencyMode,
    container: ContainerFormat,
) -> (String, String, Publisher) {
    live_channel_with(server, latency, container, pattern_720p()).await
}

async fn live_channel_with(
    server: &Server,
    latency: ChannelLatencyMode,
    container: ContainerFormat,
    media: &std::path::Path,
) -> (String, String, Publisher) {
    let out = server.client().create_channel().latency_mode(latency).container_format(container).send().await.unwrap();
    let channel = out.channel().unwrap();
    let arn = channel.arn().unwrap().to_owned();
    let url = rtmps_url(&out);
    let publisher = Publisher::start(&url, media);
    wait_live(server, &arn, Duration::from_secs(15)).await;
    (arn, channel.playback_url().unwrap().to_owned(), publisher)
}

/// The media playlist path of a new viewer session.
fn open_session(server: &Server, playback_url: &str) -> String {
    let multivariant = get(server, &path_of(playback_url));
    assert_eq!(multivariant.status, 200, "{}", multivariant.body);
    multivariant.body.lines().find(|l| l.starts_with('/')).expect("a variant URI").to_owned()
}

fn base_of(media_path: &str) -> &str {
    media_path.rsplit_once('/').map(|(base, _)| base).unwrap()
}

/// The playlist's segments (sequence, URI) and the open segment's parts.
struct Parsed {
    media_sequence: u64,
    segments: Vec<String>,
    parts: Vec<(f64, String)>,
    preload_hint: Option<String>,
    part_target: Option<f64>,
}

fn parse(playlist: &str) -> Parsed {
    let mut parsed =
        Parsed { media_sequence: 0, segments: Vec::new(), parts: Vec::new(), preload_hint: None, part_target: None };
    let mut lines = playlist.lines().peekable();
    while let Some(line) = lines.next() {
        if let Some(sequence) = line.strip_prefix("#EXT-X-MEDIA-SEQUENCE:") {
            parsed.media_sequence = sequence.parse().unwrap();
        } else if line.starts_with("#EXTINF:") {
            parsed.segments.push(lines.next().unwrap().to_owned());
        } else if let Some(part) = line.strip_prefix("#EXT-X-PART:") {
            let duration = part.split("DURATION=").nth(1).unwrap().split(',').next().unwrap().parse().unwrap();
            let uri = part.split("URI=\"").nth(1).unwrap().split('"').next().unwrap().to_owned();
            parsed.parts.push((duration, uri));
        } else if let Some(hint) = line.strip_prefix("#EXT-X-PRELOAD-HINT:") {
            parsed.preload_hint = Some(hint.split("URI=\"").nth(1).unwrap().split('"').next().unwrap().to_owned());
        } else if let Some(target) = line.strip_prefix("#EXT-X-PART-INF:PART-TARGET=") {
            parsed.part_target = Some(target.parse().unwrap());
        }
    }
    parsed
}

/// The media playlist once it hints at the next part: the hint is withheld for about a frame
/// interval before each keyframe, while the open part may still move into the next segment.
async fn playlist_with_hint(server: &Server, media: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(3);
    loop {
        let playlist = get(server, media).body;
        if playlist.contains("#EXT-X-PRELOAD-HINT:") || Instant::now() > deadline {
            return playlist;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// The status of a blocking reload asking for the part `parts` past the open segment's last.
fn part_ahead_status(server: &Server, media: &str, parts: usize) -> u16 {
    let now = parse(&get(server, media).body);
    let open = now.media_sequence + now.segments.len() as u64;
    let open_parts = now.parts.iter().filter(|(_, uri)| uri.contains(&format!("-{open}."))).count();
    get(server, &format!("{media}?_HLS_msn={open}&_HLS_part={}", open_parts + parts)).status
}

fn ffprobe_streams(url: &str) -> String {
    let output = Command::new("ffprobe")
        .args(["-v", "error", "-show_entries", "stream=codec_name,width,height", "-of", "compact", url])
        .output()
        .expect("ffprobe must be installed to run the playback tests");
    assert!(output.status.success(), "ffprobe failed: {}", String::from_utf8_lossy(&output.stderr));
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// Decodes `seconds` of the live stream with ffmpeg, which must report no error.
fn decode(url: &str, seconds: u32) -> String {
    let output = Command::new("ffmpeg")
        .args(["-hide_banner", "-v", "error", "-i", url, "-t", &seconds.to_string(), "-f", "null", "-"])
        .output()
        .expect("ffmpeg must be installed to run the playback tests");
    let errors = String::from_utf8_lossy(&output.stderr).into_owned();
    assert!(output.status.success(), "ffmpeg failed to decode: {errors}");
    // `-v error`: anything printed is a decoding error.
    assert!(errors.trim().is_empty(), "ffmpeg reported errors while decoding {url}: {errors}");
    errors
}

/// Every MPEG-TS part can be read on its own (players such as Shaka's transmuxer, or VHS
/// starting mid-segment, demux each part alone): each starts with PAT and PMT, its first picture
/// carries SPS and PPS, and each part marked INDEPENDENT starts with a keyframe and decodes by
/// itself. A keyframe in the middle of a segment starts a part.
#[tokio::test]
async fn low_latency_ts_parts_decode_on_their_own() {
    let server = Server::start();
    let (_arn, playback_url, _publisher) =
        live_channel_with(&server, ChannelLatencyMode::LowLatency, ContainerFormat::Ts, pattern_720p_short_gop()).await;
    let media = open_session(&server, &playback_url);
    let base = base_of(&media).to_owned();
    tokio::time::sleep(Duration::from_secs(6)).await;
    let playlist = get(&server, &media).body;
    let dir = std::env::temp_dir().join(format!("openivs-parts-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let mut independent_mid_segment = 0;
    let mut checked = 0;
    for line in playlist.lines().filter_map(|l| l.strip_prefix("#EXT-X-PART:")) {
        let uri = line.split("URI=\"").nth(1).unwrap().split('"').next().unwrap();
        let independent = line.contains("INDEPENDENT=YES");
        let part = get(&server, &format!("{base}/{uri}"));
        assert_eq!(part.status, 200);
        // Sync byte, then PID 0 (the PAT) with payload_unit_start.
        assert_eq!(&part.body_bytes[..3], &[0x47, 0x40, 0x00], "{uri} does not start with a PAT");
        let file = dir.join(uri);
        std::fs::write(&file, &part.body_bytes).unwrap();
        let path = file.to_str().unwrap();
        let streams = ffprobe_streams(path);
        assert!(streams.contains("codec_name=h264"), "{uri} has no PMT naming its video: {streams}");
        // Every part's first picture carries SPS and PPS (players that transmux a part alone).
        assert!(streams.contains("width=1280|height=720"), "{uri} has no SPS: {streams}");
        if independent {
            decode(path, 1);
            if !uri.ends_with(".0.ts") {
                independent_mid_segment += 1;
            }
        }
        checked += 1;
    }
    assert!(checked >= 6, "too few parts listed: {playlist}");
    assert!(independent_mid_segment > 0, "no mid-segment keyframe started a part: {playlist}");
    std::fs::remove_dir_all(dir).ok();
}

#[tokio::test]
async fn low_latency_hls_in_mpeg_ts() {
    let server = Server::start();
    let (arn, playback_url, _publisher) =
        live_channel(&server, ChannelLatencyMode::LowLatency, ContainerFormat::Ts).await;

    let multivariant = get(&server, &path_of(&playback_url));
    assert_eq!(multivariant.status, 200);
    assert_eq!(multivariant.header("content-type"), Some("application/vnd.apple.mpegurl"));
    assert_eq!(multivariant.header("access-control-allow-origin"), Some("*"));
    let variant = multivariant.body.lines().find(|l| l.starts_with("#EXT-X-STREAM-INF:")).unwrap();
    assert!(variant.contains("CODECS=\"avc1.64001F,mp4a.40.2\""), "{variant}");
    assert!(variant.contains("RESOLUTION=1280x720"), "{variant}");
    assert!(variant.contains("FRAME-RATE=30.000") || variant.contains("FRAME-RATE=29.9"), "{variant}");
    let bandwidth: u64 = variant.split("BANDWIDTH=").nth(1).unwrap().split(',').next().unwrap().parse().unwrap();
    assert!((2_000_000..6_000_000).contains(&bandwidth), "{variant}");

    let media = open_session(&server, &playback_url);
    let base = base_of(&media).to_owned();
    // Wait for a few segments.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let playlist = get(&server, &media);
    assert_eq!(playlist.status, 200);
    assert_eq!(playlist.header("cache-control"), Some("no-cache"));
    let text = &playlist_with_hint(&server, &media).await;
    assert!(text.contains("#EXT-X-SERVER-CONTROL:CAN-BLOCK-RELOAD=YES,PART-HOLD-BACK="), "{text}");
    assert!(text.contains("#EXT-X-PROGRAM-DATE-TIME:"));
    let parsed = parse(text);
    let part_target = parsed.part_target.expect("EXT-X-PART-INF");
    // Parts of 0.2 s unless configured: three part targets of hold-back.
    assert_eq!(part_target, 0.201, "{text}");
    assert!(text.contains("PART-HOLD-BACK=0.603"), "{text}");
    assert!(parsed.parts.iter().all(|(d, _)| *d <= part_target), "{text}");
    assert!(parsed.parts.iter().any(|(_, uri)| uri.ends_with(".0.ts")));
    assert!(!parsed.segments.is_empty());
    let hint = parsed.preload_hint.clone().expect("EXT-X-PRELOAD-HINT");

    // The hinted part is held until it exists, then served.
    let started = Instant::now();
    let part = get(&server, &format!("{base}/{hint}"));
    assert_eq!(part.status, 200);
    assert!(started.elapsed() < Duration::from_secs(3));
    assert_eq!(part.header("content-type"), Some("video/mp2t"));
    assert_eq!(part.body_bytes.first(), Some(&0x47));

    // Blocking reload: ask for the next segment's first part; the answer contains it.
    let now = parse(&get(&server, &media).body);
    let next = now.media_sequence + now.segments.len() as u64;
    let blocked = get(&server, &format!("{media}?_HLS_msn={next}&_HLS_part=0"));
    assert_eq!(blocked.status, 200);
    assert!(blocked.body.contains(&format!("-{next}.0.ts\"")), "{}", blocked.body);
    // Far in the future: 400 at once; _HLS_part alone: 400.
    let started = Instant::now();
    assert_eq!(get(&server, &format!("{media}?_HLS_msn={}", next + 50)).status, 400);
    assert!(started.elapsed() < Duration::from_secs(1));
    assert_eq!(get(&server, &format!("{media}?_HLS_part=1")).status, 400);
    // RFC 8216bis 6.2.5.2: a part is too far ahead past the Advance Part Limit, three seconds
    // of parts (14 of 0.201 s), not before: four parts ahead is held, then answered.
    assert_eq!(part_ahead_status(&server, &media, 4), 200);
    assert_eq!(part_ahead_status(&server, &media, 14), 200);
    // (Unless the segment closed between the two requests: a closed segment answers any part.)
    assert!((0..5).any(|_| part_ahead_status(&server, &media, 15) == 400), "15 parts ahead was held");

    // Segments: immutable, with byte ranges.
    let segment_uri = parse(&get(&server, &media).body).segments[0].clone();
    let segment = get(&server, &format!("{base}/{segment_uri}"));
    assert_eq!(segment.status, 200);
    assert!(segment.header("cache-control").unwrap().contains("immutable"));
    let range =
        raw_request(&server, "GET", &format!("{base}/{segment_uri}"), &[("range".into(), "bytes=0-187".into())], "");
    assert_eq!(range.status, 206);
    assert!(range.header("content-range").unwrap().starts_with("bytes 0-187/"));

    // Players' tools read and decode it.
    let streams = ffprobe_streams(&playback_url);
    assert!(streams.contains("codec_name=h264|width=1280|height=720"), "{streams}");
    assert!(streams.contains("codec_name=aac"), "{streams}");
    decode(&playback_url, 3);

    // Viewers are counted.
    let stream = server.client().get_stream().channel_arn(&arn).send().await.unwrap();
    assert!(stream.stream().unwrap().viewer_count() >= 1);

    // Delta updates once the window is long enough (more than CAN-SKIP-UNTIL = 12 s).
    tokio::time::sleep(Duration::from_secs(10)).await;
    let delta = get(&server, &format!("{media}?_HLS_skip=YES"));
    assert!(delta.body.contains("#EXT-X-SKIP:SKIPPED-SEGMENTS="), "{}", delta.body);
    assert!(delta.body.contains("#EXT-X-VERSION:9"));

    // The end of the stream: ENDLIST for sessions, 404 for new viewers.
    server.client().stop_stream().channel_arn(&arn).send().await.unwrap();
    wait_offline(&server, &arn, Duration::from_secs(10)).await;
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut ended = get(&server, &media);
    while !ended.body.contains("#EXT-X-ENDLIST") && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(200)).await;
        ended = get(&server, &media);
    }
    assert!(ended.body.contains("#EXT-X-ENDLIST"), "{}", ended.body);
    assert_eq!(get(&server, &path_of(&playback_url)).status, 404);
}

/// A NORMAL-latency channel: regular live HLS, without any low-latency tags.
async fn check_normal_latency(container: ContainerFormat) -> String {
    let server = Server::start();
    let (_, playback_url, _publisher) = live_channel(&server, ChannelLatencyMode::NormalLatency, container).await;
    let media = open_session(&server, &playback_url);
    tokio::time::sleep(Duration::from_secs(5)).await;
    let playlist = get(&server, &media).body;
    assert!(playlist.contains("#EXTINF:"), "{playlist}");
    assert!(!playlist.contains("#EXT-X-PART"), "{playlist}");
    assert!(!playlist.contains("#EXT-X-SERVER-CONTROL"), "{playlist}");
    assert!(!playlist.contains("#EXT-X-PRELOAD-HINT"), "{playlist}");
    let streams = ffprobe_streams(&playback_url);
    assert!(streams.contains("codec_name=h264|width=1280|height=720"), "{streams}");
    decode(&playback_url, 3);
    playlist
}

#[tokio::test]
async fn normal_latency_hls_in_mpeg_ts() {
    let playlist = check_normal_latency(ContainerFormat::Ts).await;
    assert!(playlist.contains(".ts\n") && !playlist.contains("#EXT-X-MAP"), "{playlist}");
}

#[tokio::test]
async fn normal_latency_hls_in_fragmented_mp4() {
    let playlist = check_normal_latency(ContainerFormat::FragmentedMp4).await;
    assert!(playlist.contains(".m4s\n") && playlist.contains("#EXT-X-MAP:URI="), "{playlist}");
}

/// `--playback-part-duration-ms 100`: parts of three frames at 30 fps (PART-TARGET about 0.1 s),
/// three targets of hold-back, and an Advance Part Limit of three seconds of those parts.
#[tokio::test]
async fn low_latency_parts_of_a_configured_duration() {
    let server = Server::with_args(&["--playback-part-duration-ms", "100"]);
    let (_arn, playback_url, _publisher) =
        live_channel(&server, ChannelLatencyMode::LowLatency, ContainerFormat::Ts).await;
    let media = open_session(&server, &playback_url);
    let base = base_of(&media).to_owned();
    // Until a segment that started after the first frame interval was known is complete.
    let deadline = Instant::now() + Duration::from_secs(10);
    let (text, parsed) = loop {
        let text = playlist_with_hint(&server, &media).await;
        let parsed = parse(&text);
        if parsed.segments.len() >= 3 || Instant::now() > deadline {
            break (text, parsed);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    // (Three frames and 1 ms each and to spare: the first frame interval, which fixes the
    // target, is 33 or 34 ms as millisecond timestamps show it.)
    let part_target_ms = (parsed.part_target.expect("EXT-X-PART-INF") * 1000.0).round() as usize;
    assert!([103, 106].contains(&part_target_ms), "{text}");
    assert!(text.contains(&format!("PART-HOLD-BACK={:.3}", (3 * part_target_ms) as f64 / 1000.0)), "{text}");
    // A complete segment's parts: each three frames (0.1 s), but its last, which closes with
    // the picture before the next keyframe.
    let complete = parsed.media_sequence + parsed.segments.len() as u64 - 1;
    let durations: Vec<f64> = parsed
        .parts
        .iter()
        .filter(|(_, uri)| uri.contains(&format!("-{complete}.")))
        .map(|(duration, _)| *duration)
        .collect();
    assert!(durations.len() >= 8, "segment {complete} in {} parts: {text}", durations.len());
    let (last, whole) = durations.split_last().unwrap();
    let part_target = part_target_ms as f64 / 1000.0;
    assert!(whole.iter().all(|d| (0.099..=part_target).contains(d)), "{durations:?}");
    assert!(*last > 0.0 && *last <= part_target, "{durations:?}");
    // A hinted part is served when it exists.
    let hint = parsed.preload_hint.clone().expect("EXT-X-PRELOAD-HINT");
    assert_eq!(get(&server, &format!("{base}/{hint}")).status, 200);
    // The Advance Part Limit follows the part target: three seconds of parts (29 or 28).
    let limit = 3000 / part_target_ms;
    assert_eq!(part_ahead_status(&server, &media, limit), 200);
    assert!((0..5).any(|_| part_ahead_status(&server, &media, limit + 1) == 400), "{} parts ahead was held", limit + 1);
}

#[tokio::test]
async fn low_latency_hls_in_fragmented_mp4() {
    let server = Server::start();
    let (_, playback_url, _publisher) =
        live_channel(&server, ChannelLatencyMode::LowLatency, ContainerFormat::FragmentedMp4).await;
    let media = open_session(&server, &playback_url);
    let base = base_of(&media).to_owned();
    tokio::time::sleep(Duration::from_secs(4)).await;
    let playlist = playlist_with_hint(&server, &media).await;
    let map = playlist.split("#EXT-X-MAP:URI=\"").nth(1).expect("EXT-X-MAP").split('"').next().unwrap().to_owned();
    let init = raw_request(&server, "GET", &format!("{base}/{map}"), &[], "");
    assert_eq!(init.status, 200);
    assert_eq!(init.header("content-type"), Some("video/mp4"));
    assert_eq!(&init.body_bytes[4..8], b"ftyp");
    let parsed = parse(&playlist);
    assert!(parsed.parts.iter().all(|(_, uri)| uri.ends_with(".m4s")), "{playlist}");
    let hint = parsed.preload_hint.expect("EXT-X-PRELOAD-HINT");
    let part = get(&server, &format!("{base}/{hint}"));
    assert_eq!(part.status, 200);
    // A fragment: timed metadata (`emsg`, at independent parts the timestamp tag) then moof.
    let mut at = 0;
    while &part.body_bytes[at + 4..at + 8] == b"emsg" {
        at += u32::from_be_bytes(part.body_bytes[at..at + 4].try_into().unwrap()) as usize;
    }
    assert_eq!(&part.body_bytes[at + 4..at + 8], b"moof");
    let next = parsed.media_sequence + parsed.segments.len() as u64;
    let blocked = get(&server, &format!("{media}?_HLS_msn={next}&_HLS_part=0"));
    assert!(blocked.body.contains(&format!("-{next}.0.m4s\"")), "{}", blocked.body);
    let streams = ffprobe_streams(&playback_url);
    assert!(streams.contains("codec_name=h264|width=1280|height=720"), "{streams}");
    assert!(streams.contains("codec_name=aac"), "{streams}");
    decode(&playback_url, 3);
}

#[tokio::test]
async fn offline_channels_and_unknown_sessions_are_404() {
    let server = Server::start();
    let out = server.client().create_channel().r#type(ChannelType::BasicChannelType).send().await.unwrap();
    let playback_url = out.channel().unwrap().playback_url().unwrap().to_owned();
    let response = get(&server, &path_of(&playback_url));
    assert_eq!(response.status, 404);
    assert_eq!(get(&server, "/api/video/v1/not-a-channel.m3u8").status, 404);
    assert_eq!(get(&server, "/playback/nosuchsession/us-west-2.123456789012.channel.abc/media.m3u8").status, 404);
}

/// A playlist served with `EXT-X-ENDLIST` never grows again: a stream that starts after the end
/// has media playlists of its own, reached through the playback URL.
#[tokio::test]
async fn a_new_stream_gets_new_playlists_and_the_ended_ones_stay_ended() {
    let server = Server::start();
    let out = server.client().create_channel().send().await.unwrap();
    let channel = out.channel().unwrap();
    let arn = channel.arn().unwrap().to_owned();
    let playback_url = channel.playback_url().unwrap().to_owned();
    let url = rtmps_url(&out);
    let first_media;
    {
        let _first = Publisher::start(&url, pattern_720p());
        wait_live(&server, &arn, Duration::from_secs(15)).await;
        first_media = open_session(&server, &playback_url);
        tokio::time::sleep(Duration::from_secs(3)).await;
    }
    wait_offline(&server, &arn, Duration::from_secs(10)).await;
    let ended = get(&server, &first_media);
    assert!(ended.body.ends_with("#EXT-X-ENDLIST\n"), "{}", ended.body);
    let _second = Publisher::start(&url, pattern_720p());
    wait_live(&server, &arn, Duration::from_secs(15)).await;
    tokio::time::sleep(Duration::from_secs(4)).await;
    let still_ended = get(&server, &first_media);
    assert_eq!(still_ended.status, 200);
    assert_eq!(still_ended.body, ended.body, "an ended playlist never changes");
    let second_media = open_session(&server, &playback_url);
    assert_ne!(second_media.rsplit('/').next(), first_media.rsplit('/').next());
    let playlist = get(&server, &second_media);
    assert_eq!(playlist.status, 200);
    assert!(!playlist.body.contains("#EXT-X-DISCONTINUITY"), "{}", playlist.body);
    assert!(!playlist.body.contains("#EXT-X-ENDLIST"));
}

/// GETs `path` and times it: when the response head arrived, when the body ended, and the body
/// (chunked transfer decoded).
fn timed_get(server: &Server, path: &str) -> (u16, String, Duration, Duration, Vec<u8>) {
    use std::io::{Read, Write};
    let started = Instant::now();
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", server.port)).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(15))).unwrap();
    write!(stream, "GET {path} HTTP/1.1\r\nhost: 127.0.0.1\r\nconnection: close\r\n\r\n").unwrap();
    let mut received = Vec::new();
    let mut buffer = [0u8; 16384];
    let mut head_at = None;
    loop {
        let n = stream.read(&mut buffer).unwrap();
        if n == 0 {
            break;
        }
        received.extend_from_slice(&buffer[..n]);
        if head_at.is_none() && received.windows(4).any(|w| w == b"\r\n\r\n") {
            head_at = Some(started.elapsed());
        }
    }
    let ended_at = started.elapsed();
    let head_end = received.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
    let head = String::from_utf8_lossy(&received[..head_end]).into_owned();
    let status = head.split_whitespace().nth(1).unwrap().parse().unwrap();
    let mut body = received[head_end..].to_vec();
    if head.to_ascii_lowercase().contains("transfer-encoding: chunked") {
        body = crate::harness::decode_chunked(&body);
    }
    (status, head, head_at.unwrap_or(ended_at), ended_at, body)
}

/// The sequence number in a segment URI (`{stream}-{msn}.ts`).
fn sequence_of(uri: &str) -> u64 {
    uri.rsplit_once('-').unwrap().1.split('.').next().unwrap().parse().unwrap()
}

/// The Amazon IVS Player's low-latency path (LHLS prefetch segments, beside Apple's parts): a LOW
/// channel's playlist names the segment being cut and the next with `#EXT-X-PREFETCH`; such a
/// segment answers at once and streams its bytes while they are packaged, ending when it is
/// complete, and those bytes are the segment's. NORMAL channels list none. Segments stay
/// served for a while after they leave the playlist (RFC 8216 6.2.2).
#[tokio::test]
async fn prefetch_segments_stream_while_they_are_written() {
    let server = Server::start();
    let (_arn, playback_url, _publisher) =
        live_channel(&server, ChannelLatencyMode::LowLatency, ContainerFormat::Ts).await;
    let media = open_session(&server, &playback_url);
    let base = base_of(&media).to_owned();
    let playlist = get(&server, &media).body;
    let listed = parse(&playlist).segments;
    let first_listed = listed[0].clone();
    let last_complete = sequence_of(listed.last().unwrap());
    let prefetch: Vec<&str> = playlist.lines().filter_map(|l| l.strip_prefix("#EXT-X-PREFETCH:")).collect();
    assert_eq!(prefetch.len(), 2, "{playlist}");
    assert_eq!(sequence_of(prefetch[0]), last_complete + 1, "{playlist}");
    assert_eq!(sequence_of(prefetch[1]), last_complete + 2, "{playlist}");
    // After the parts and the preload hint: players that know the one ignore the other.
    assert!(playlist.trim_end().ends_with(prefetch[1]), "{playlist}");

    // The next segment has not begun: its response starts at once and lasts as long as the
    // segment takes to be written (2 s with this pattern's keyframe interval).
    let (status, head, head_at, ended_at, body) = timed_get(&server, &format!("{base}/{}", prefetch[1]));
    assert_eq!(status, 200, "{head}");
    assert!(head.to_ascii_lowercase().contains("transfer-encoding: chunked"), "{head}");
    assert!(head.to_ascii_lowercase().contains("content-type: video/mp2t"), "{head}");
    assert!(head_at < Duration::from_millis(500), "the head took {head_at:?}");
    assert!(ended_at > head_at + Duration::from_millis(1000), "head at {head_at:?}, end at {ended_at:?}");
    // The same URI, now complete, answers the same bytes with a length.
    let complete = get(&server, &format!("{base}/{}", prefetch[1]));
    assert_eq!(complete.status, 200);
    assert!(complete.header("content-length").is_some());
    assert_eq!(complete.body_bytes, body, "the streamed bytes are not the segment's");
    let file = std::env::temp_dir().join(format!("openivs-prefetch-{}.ts", std::process::id()));
    std::fs::write(&file, &body).unwrap();
    let streams = ffprobe_streams(file.to_str().unwrap());
    assert!(streams.contains("codec_name=h264") && streams.contains("codec_name=aac"), "{streams}");
    decode(file.to_str().unwrap(), 2);
    std::fs::remove_file(&file).ok();

    // Far beyond the segment being cut: nothing to stream.
    assert_eq!(
        get(
            &server,
            &format!(
                "{base}/{}",
                prefetch[1].replace(&format!("-{}.", last_complete + 2), &format!("-{}.", last_complete + 9))
            )
        )
        .status,
        404
    );

    // A segment that left the playlist is still served for as long again.
    let deadline = Instant::now() + Duration::from_secs(40);
    loop {
        let now_listed = parse(&get(&server, &media).body).segments;
        if !now_listed.contains(&first_listed) {
            break;
        }
        assert!(Instant::now() < deadline, "{first_listed} never left the playlist");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert_eq!(get(&server, &format!("{base}/{first_listed}")).status, 200, "{first_listed} is gone already");

    // NORMAL channels: no prefetch.
    let (_arn, normal_url, _normal_publisher) =
        live_channel(&server, ChannelLatencyMode::NormalLatency, ContainerFormat::Ts).await;
    let normal_media = open_session(&server, &normal_url);
    let normal = get(&server, &normal_media).body;
    assert!(!normal.contains("#EXT-X-PREFETCH"), "{normal}");
}

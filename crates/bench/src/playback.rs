//! `openivs-bench playback`: ingest-to-playable latency. For each video frame, the time from its
//! arrival at the server until an HLS client that follows the playlist as players do has fetched
//! it: openivs LOW (an LL-HLS client: blocking reload for the next part, then the part), openivs
//! NORMAL and nginx-rtmp's HLS (a regular client: reload every half target duration, fetch each
//! new segment). One publisher per case, `ffmpeg -re -c copy` of the same pre-encoded file.
//!
//! A frame's arrival is taken as the publisher's start plus the frame's media time (the file is
//! sent in real time), the same clock for every server; ffmpeg's start-up (~0.1 s) is in it.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use crate::http_client::{Connection, SignedClient, get};
use crate::ingest::{input_file, publisher, start_nginx};
use crate::{TempDir, wait_for_port};

const FPS: f64 = 30.0;

pub struct PlaybackArgs {
    pub seconds: Duration,
    pub out_dir: std::path::PathBuf,
}

/// A segment of a parsed playlist: sequence, duration, URI, and its parts (duration, URI).
type SegmentEntry = (u64, f64, String, Vec<(f64, String)>);

/// A media playlist, as much as the followers need.
#[derive(Debug, Default)]
struct Playlist {
    media_sequence: u64,
    /// (sequence, duration, uri, parts (duration, uri))
    segments: Vec<SegmentEntry>,
    /// Parts of the segment in progress.
    pending: Vec<(f64, String)>,
    target: f64,
}

fn parse(text: &str) -> Playlist {
    let mut playlist = Playlist { target: 2.0, ..Default::default() };
    let mut parts = Vec::new();
    let mut lines = text.lines();
    let mut sequence = None;
    while let Some(line) = lines.next() {
        if let Some(v) = line.strip_prefix("#EXT-X-MEDIA-SEQUENCE:") {
            playlist.media_sequence = v.trim().parse().unwrap_or(0);
            sequence = Some(playlist.media_sequence);
        } else if let Some(v) = line.strip_prefix("#EXT-X-TARGETDURATION:") {
            playlist.target = v.trim().parse().unwrap_or(2.0);
        } else if let Some(part) = line.strip_prefix("#EXT-X-PART:") {
            let duration = part
                .split("DURATION=")
                .nth(1)
                .and_then(|d| d.split(',').next())
                .and_then(|d| d.parse().ok())
                .unwrap_or(0.0);
            let uri = part.split("URI=\"").nth(1).and_then(|u| u.split('"').next()).unwrap_or("").to_owned();
            parts.push((duration, uri));
        } else if let Some(v) = line.strip_prefix("#EXTINF:") {
            let duration: f64 = v.split(',').next().and_then(|d| d.parse().ok()).unwrap_or(0.0);
            let uri = lines.next().unwrap_or("").to_owned();
            let s = sequence.unwrap_or(0);
            playlist.segments.push((s, duration, uri, std::mem::take(&mut parts)));
            sequence = Some(s + 1);
        }
    }
    playlist.pending = parts;
    playlist
}

/// Latencies (ms) of the frames of a piece of media [start, start + duration) fetched at `at`.
fn frame_latencies(t0: Instant, at: Instant, start: f64, duration: f64, into: &mut Vec<f64>) {
    let frames = (duration * FPS).round().max(1.0) as usize;
    for i in 0..frames {
        let arrival = t0 + Duration::from_secs_f64(start + i as f64 / FPS);
        into.push(at.saturating_duration_since(arrival).as_secs_f64() * 1000.0);
    }
}

fn dir_of(path: &str) -> &str {
    path.rsplit_once('/').map_or("", |(dir, _)| dir)
}

/// A regular HLS client: reload every half target duration, fetch each new segment once.
async fn follow_segments(port: u16, media: &str, t0: Instant, until: Instant) -> Vec<f64> {
    let mut connection = Connection::new(port);
    let mut durations: BTreeMap<u64, f64> = BTreeMap::new();
    let mut fetched: Option<u64> = None;
    let mut latencies = Vec::new();
    while Instant::now() < until {
        let Ok((200, body)) = get(&mut connection, media).await else {
            tokio::time::sleep(Duration::from_millis(200)).await;
            continue;
        };
        let playlist = parse(&String::from_utf8_lossy(&body));
        for (sequence, duration, uri, _) in &playlist.segments {
            durations.insert(*sequence, *duration);
            if fetched.is_some_and(|f| *sequence <= f) {
                continue;
            }
            // Players start at the live edge; frames before the first segment seen are not counted.
            let path = if uri.starts_with('/') { uri.clone() } else { format!("{}/{uri}", dir_of(media)) };
            if get(&mut connection, &path).await.is_ok_and(|(status, _)| status == 200) {
                let start: f64 = durations.range(..sequence).map(|(_, d)| d).sum();
                if durations.contains_key(&0) {
                    frame_latencies(t0, Instant::now(), start, *duration, &mut latencies);
                }
            }
            fetched = Some(*sequence);
        }
        tokio::time::sleep(Duration::from_secs_f64(playlist.target / 2.0)).await;
    }
    latencies
}

/// An LL-HLS client: blocking reload for the next part, then fetch that part. Returns the
/// frames' latencies (ms) and how many parts it fetched.
pub(crate) async fn follow_parts(port: u16, media: &str, t0: Instant, until: Instant) -> (Vec<f64>, usize) {
    let mut connection = Connection::new(port);
    let mut latencies = Vec::new();
    let mut parts_fetched = 0;
    // Where we are: the next (segment, part) to fetch.
    let mut next: Option<(u64, usize)> = None;
    let mut durations: BTreeMap<u64, f64> = BTreeMap::new();
    while Instant::now() < until {
        let path = match next {
            Some((sequence, part)) => format!("{media}?_HLS_msn={sequence}&_HLS_part={part}"),
            None => media.to_owned(),
        };
        let Ok((200, body)) = get(&mut connection, &path).await else {
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        };
        let playlist = parse(&String::from_utf8_lossy(&body));
        for (sequence, duration, ..) in &playlist.segments {
            durations.insert(*sequence, *duration);
        }
        let open_sequence = playlist.segments.last().map_or(playlist.media_sequence, |s| s.0 + 1);
        let (want_sequence, want_part) = next.unwrap_or((open_sequence, playlist.pending.len()));
        // The part we asked for: in a completed segment, or among the pending parts.
        let parts = if want_sequence == open_sequence {
            Some(&playlist.pending)
        } else {
            playlist.segments.iter().find(|s| s.0 == want_sequence).map(|s| &s.3)
        };
        let Some(parts) = parts else {
            next = None;
            continue;
        };
        if next.is_none() {
            next = Some((want_sequence, want_part));
            continue;
        }
        if want_part >= parts.len() {
            // The segment ended before this part: move to the next segment.
            next = Some((want_sequence + 1, 0));
            continue;
        }
        let (duration, uri) = &parts[want_part];
        if get(&mut connection, &format!("{}/{uri}", dir_of(media))).await.is_ok_and(|(status, _)| status == 200) {
            let segment_start: f64 = durations.range(..want_sequence).map(|(_, d)| d).sum();
            let part_start: f64 = parts[..want_part].iter().map(|(d, _)| d).sum();
            frame_latencies(t0, Instant::now(), segment_start + part_start, *duration, &mut latencies);
            parts_fetched += 1;
        }
        next = Some((want_sequence, want_part + 1));
    }
    (latencies, parts_fetched)
}

pub(crate) fn percentile(sorted: &[f64], p: f64) -> f64 {
    sorted.get(((sorted.len() as f64 * p) as usize).min(sorted.len().saturating_sub(1))).copied().unwrap_or(f64::NAN)
}

pub async fn run(args: PlaybackArgs) -> Result<(), String> {
    let input = input_file(&args.out_dir)?;
    let openivs = crate::start_openivs().await?;
    let rtmp_port = openivs.rtmp_port.ok_or("no RTMP port")?;
    let client = SignedClient::new();
    let mut connection = Connection::new(openivs.port);
    let mut channels = Vec::new();
    for latency in ["LOW", "NORMAL"] {
        let body = format!(r#"{{"insecureIngest":true,"latencyMode":"{latency}"}}"#);
        let (status, out) = client.call(&mut connection, "CreateChannel", &body).await?;
        if status != 200 {
            return Err(format!("CreateChannel answered {status}"));
        }
        let json: serde_json::Value = serde_json::from_slice(&out).map_err(|e| e.to_string())?;
        channels.push((
            latency,
            json["streamKey"]["value"].as_str().unwrap_or("").to_owned(),
            json["channel"]["playbackUrl"].as_str().unwrap_or("").to_owned(),
        ));
    }
    let nginx_dir = TempDir(std::env::temp_dir().join(format!("openivs-bench-nginx-hls-{}", std::process::id())));
    let (nginx, nginx_rtmp, nginx_http) = start_nginx(&nginx_dir.0, None)?;
    wait_for_port(nginx_rtmp).await?;
    wait_for_port(nginx_http).await?;

    println!(
        "# Ingest-to-playable latency per video frame, one 720p30 stream (1 s GOP), {} s per case, 127.0.0.1",
        args.seconds.as_secs()
    );
    println!();
    println!("| server | client | frames | p50 ms | p95 ms | p50 vs nginx-rtmp |");
    println!("|---|---|---|---|---|---|");
    // nginx-rtmp first: its figures are the reference.
    let t0 = Instant::now();
    let mut child = publisher(&format!("rtmp://127.0.0.1:{nginx_rtmp}/hls/latency"), &input)?;
    let until = t0 + args.seconds;
    // Wait for nginx to write the first playlist.
    let mut nginx_latencies = follow_segments(nginx_http, "/hls/latency.m3u8", t0, until).await;
    let _ = child.kill();
    let _ = child.wait();
    nginx_latencies.sort_by(f64::total_cmp);
    let nginx_p50 = percentile(&nginx_latencies, 0.5);
    println!(
        "| nginx-rtmp HLS (hls_fragment 1s) | reload every ½ target | {} | {:.0} | {:.0} |  |",
        nginx_latencies.len(),
        nginx_p50,
        percentile(&nginx_latencies, 0.95)
    );
    for (latency, key, playback_url) in &channels {
        let t0 = Instant::now();
        let mut child = publisher(&format!("rtmp://127.0.0.1:{rtmp_port}/app/{key}"), &input)?;
        let playback_path = crate::playback_path(playback_url);
        // The multivariant playlist answers once the stream is live and has a segment.
        let mut media = None;
        let mut http = Connection::new(openivs.port);
        while media.is_none() && t0.elapsed() < Duration::from_secs(15) {
            if let Ok((200, body)) = get(&mut http, &playback_path).await {
                media = String::from_utf8_lossy(&body).lines().find(|l| l.starts_with('/')).map(str::to_owned);
            } else {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
        let media = media.ok_or("openivs never served the multivariant playlist")?;
        let until = t0 + args.seconds;
        let (client_name, mut latencies) = if *latency == "LOW" {
            ("LL-HLS: blocking reload, parts", follow_parts(openivs.port, &media, t0, until).await.0)
        } else {
            ("reload every ½ target", follow_segments(openivs.port, &media, t0, until).await)
        };
        let _ = child.kill();
        let _ = child.wait();
        latencies.sort_by(f64::total_cmp);
        let p50 = percentile(&latencies, 0.5);
        println!(
            "| openivs {latency} | {client_name} | {} | {:.0} | {:.0} | {:.2}× |",
            latencies.len(),
            p50,
            percentile(&latencies, 0.95),
            p50 / nginx_p50
        );
    }
    drop(nginx);
    Ok(())
}

//! `openivs-bench soak`: openivs under the whole load at once, for a long time (not in CI).
//!
//! One release openivs, recording every channel to a folder bucket and sending its events to a
//! webhook receiver in this process, takes N publishers (the `ingest` benchmark's 720p30 ~3
//! Mbit/s input, `ffmpeg -re -c copy`, one channel each), M HLS viewers spread over the channels
//! (each reloads its media playlist every 0.5 s and fetches every new segment, as `fanout`'s
//! clients do) and a steady rate of signed API calls of ten kinds (reads, PutMetadata, a
//! CreateChannel/DeleteChannel pair). Every sampling period it records the server's CPU and RSS,
//! the API's latency and the viewers' throughput; at the end it stops the publishers and checks
//! that every recording ended and every event arrived.
//!
//! What counts as a failure (the run's verdict lists each): an API answer other than 2xx or a
//! call that got no answer; a publisher that exited; a channel with more than one stream session
//! (it was disconnected and came back); a viewer stall longer than one segment (a viewer that
//! would have played everything it fetched and then waited more than a segment's duration: the
//! player's buffer is modelled as the media fetched less the time played since the first
//! segment); a viewer request that failed; RSS in the last sample more than 5 % above RSS at half
//! time; a recording without `recording-ended.json`, or whose final playlists lack
//! `#EXT-X-ENDLIST`, mark a gap (`#EXT-X-DISCONTINUITY`), name a segment that never reached the
//! bucket, or hold less media than its publisher sent (less 15 s for ffmpeg's start and the
//! last keyframe interval); a channel missing one of its four events.
//!
//! Fifty 3 Mbit/s recordings fill about 67 GB in an hour. With `--keep-recorded-minutes M` the
//! soak deletes recorded segments once they are M minutes old, as a bucket's lifecycle rule
//! would, and remembers each one it deleted, so the end's check still proves every segment was
//! written; the server records as it always does.
//!
//! The run writes `soak.svg` (CPU, RSS and API latency over time) and `soak.csv` beside the
//! benchmark's input file.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::http_client::{Connection, SignedClient, get};
use crate::ingest::{input_file, process_tree, publisher, sample_cpu_ticks, sample_rss_kib};
use crate::playback::percentile;
use crate::recording::{BUCKET, Receiver, files_ending, recorded_channels};

pub struct SoakArgs {
    pub duration: Duration,
    pub publishers: usize,
    pub viewers: usize,
    /// Signed API calls per second.
    pub api_rate: f64,
    /// Recorded segments older than this are deleted while the soak runs (None: all kept).
    pub keep_recorded: Option<Duration>,
    pub out_dir: PathBuf,
}

/// The events every channel's one stream raises, in the order they come.
const EVENTS: [&str; 4] = ["Stream Start", "Recording Start", "Stream End", "Recording End"];

/// Workers sharing the API rate (each on its own keep-alive connection).
const API_WORKERS: usize = 16;

#[derive(Default)]
struct Counters {
    api_calls: AtomicU64,
    api_errors: AtomicU64,
    viewer_requests: AtomicU64,
    viewer_bytes: AtomicU64,
    viewer_errors: AtomicU64,
    viewer_stalls: AtomicU64,
    /// The longest stall seen, in ms.
    longest_stall_ms: AtomicU64,
    /// API latencies (ms) since the last sample.
    api_latencies: Mutex<Vec<f64>>,
    first_api_error: Mutex<Option<String>>,
}

/// One sampling period's figures.
struct Point {
    at_s: f64,
    cpu_percent: f64,
    rss_mib: f64,
    api_per_s: f64,
    api_p50_ms: f64,
    api_p99_ms: f64,
    viewer_mbit_s: f64,
    stalls: u64,
    publishers_alive: usize,
}

pub async fn run(args: SoakArgs) -> Result<(), String> {
    let input = input_file(&args.out_dir)?;
    enough_disk_for_the_recordings(&input, &args)?;
    let receiver = Receiver::start().await?;
    let openivs =
        crate::start_openivs_with(&["--event-webhook", &receiver.url, "--event-webhook-secret", "bench-secret"])
            .await?;
    let buckets = openivs.data_dir.as_ref().ok_or("openivs has a data folder")?.0.join("buckets");
    std::fs::create_dir_all(buckets.join(BUCKET)).map_err(|e| e.to_string())?;
    let client = Arc::new(SignedClient::new());
    let channels = recorded_channels(&client, openivs.port, args.publishers).await?;
    let rtmp_port = openivs.rtmp_port.ok_or("openivs has no RTMP port")?;
    let publishing_since = Instant::now();
    let mut publishers = channels
        .iter()
        .map(|(_, key)| publisher(&format!("rtmp://127.0.0.1:{rtmp_port}/app/{key}"), &input))
        .collect::<Result<Vec<_>, _>>()?;
    let arns: Arc<Vec<String>> = Arc::new(channels.iter().map(|(arn, _)| arn.clone()).collect());
    let mut media_paths = Vec::new();
    let mut recording_configuration = None;
    for arn in arns.iter() {
        let channel = channel_of(&client, openivs.port, arn).await?;
        let playback_url = channel["playbackUrl"].as_str().ok_or("no playbackUrl")?;
        media_paths.push(crate::cluster::media_path(openivs.port, &crate::playback_path(playback_url)).await?);
        // (Every channel records with the same configuration.)
        if recording_configuration.is_none() {
            let arn = channel["recordingConfigurationArn"].as_str().ok_or("no recording configuration")?;
            recording_configuration = Some(arn.to_owned());
        }
    }
    let recording_configuration = recording_configuration.ok_or("no channels")?;

    println!(
        "# Soak: {} publishers (720p30 ~3 Mbit/s, recorded to a folder, events to a webhook), {} HLS viewers, {} signed API calls/s, for {} s, 127.0.0.1, {} CPUs",
        args.publishers,
        args.viewers,
        args.api_rate,
        args.duration.as_secs(),
        crate::num_cpus()
    );
    let counters = Arc::new(Counters::default());
    let running = Arc::new(AtomicBool::new(true));
    let mut tasks = Vec::new();
    for viewer in 0..args.viewers {
        let media = media_paths[viewer % media_paths.len()].clone();
        let (counters, running, port) = (counters.clone(), running.clone(), openivs.port);
        // Viewers arrive over the first ten seconds.
        let delay = Duration::from_millis((viewer as u64 * 10_000) / args.viewers.max(1) as u64);
        tasks.push(tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            view(port, media, running, counters).await;
        }));
    }
    for worker in 0..API_WORKERS {
        let calls = ApiCalls {
            client: client.clone(),
            arns: arns.clone(),
            recording_configuration: recording_configuration.clone(),
            worker,
        };
        let interval = Duration::from_secs_f64(API_WORKERS as f64 / args.api_rate.max(0.1));
        let (counters, running, port) = (counters.clone(), running.clone(), openivs.port);
        tasks.push(tokio::spawn(async move { calls.run(port, interval, running, counters).await }));
    }
    let pruned = Arc::new(Mutex::new(HashSet::new()));
    if let Some(keep) = args.keep_recorded {
        let (bucket, pruned, running) = (buckets.join(BUCKET), pruned.clone(), running.clone());
        tasks.push(tokio::spawn(async move {
            while running.load(Ordering::Relaxed) {
                let (bucket, pruned) = (bucket.clone(), pruned.clone());
                let _ = tokio::task::spawn_blocking(move || prune_segments(&bucket, keep, &pruned)).await;
                tokio::time::sleep(Duration::from_secs(10)).await;
            }
        }));
    }

    let period = Duration::from_secs_f64((args.duration.as_secs_f64() / 120.0).clamp(2.0, 30.0));
    let started = Instant::now();
    let root = openivs.child.id();
    let mut points = Vec::new();
    let mut ticks = sample_cpu_ticks(&process_tree(root));
    let mut bytes = 0;
    let mut last = Instant::now();
    while started.elapsed() < args.duration {
        tokio::time::sleep(period.min(args.duration.saturating_sub(started.elapsed())).max(Duration::from_millis(100)))
            .await;
        let pids = process_tree(root);
        let (now_ticks, now_bytes) = (sample_cpu_ticks(&pids), counters.viewer_bytes.load(Ordering::Relaxed));
        let seconds = last.elapsed().as_secs_f64();
        last = Instant::now();
        let mut latencies = std::mem::take(&mut *counters.api_latencies.lock().expect("latencies lock"));
        latencies.sort_by(f64::total_cmp);
        let quantile = |p: f64| if latencies.is_empty() { 0.0 } else { percentile(&latencies, p) };
        let publishers_alive = alive(&mut publishers);
        let point = Point {
            at_s: started.elapsed().as_secs_f64(),
            cpu_percent: (now_ticks - ticks) as f64 / crate::ingest::clock_ticks_per_second() / seconds * 100.0,
            rss_mib: sample_rss_kib(&pids) as f64 / 1024.0,
            api_per_s: latencies.len() as f64 / seconds,
            api_p50_ms: quantile(0.5),
            api_p99_ms: quantile(0.99),
            viewer_mbit_s: (now_bytes - bytes) as f64 * 8.0 / 1e6 / seconds,
            stalls: counters.viewer_stalls.load(Ordering::Relaxed),
            publishers_alive,
        };
        eprintln!(
            "soak {:>6.0} s: CPU {:>5.1} %, RSS {:>6.1} MiB, API {:>5.1}/s p99 {:>6.1} ms, viewers {:>6.1} Mbit/s, stalls {}, publishers {}/{}",
            point.at_s,
            point.cpu_percent,
            point.rss_mib,
            point.api_per_s,
            point.api_p99_ms,
            point.viewer_mbit_s,
            point.stalls,
            point.publishers_alive,
            args.publishers
        );
        (ticks, bytes) = (now_ticks, now_bytes);
        points.push(point);
    }
    running.store(false, Ordering::SeqCst);
    for task in tasks {
        let _ = tokio::time::timeout(Duration::from_secs(15), task).await;
    }
    // One stream session per channel: a publisher that was disconnected and came back made two.
    let mut reconnected = 0;
    let mut api = Connection::new(openivs.port);
    for arn in arns.iter() {
        let (_, body) = client.call(&mut api, "ListStreamSessions", &format!(r#"{{"channelArn":"{arn}"}}"#)).await?;
        let json: serde_json::Value = serde_json::from_slice(&body).map_err(|e| e.to_string())?;
        if json["streamSessions"].as_array().map_or(0, Vec::len) != 1 {
            reconnected += 1;
        }
    }
    let publishers_alive = alive(&mut publishers);
    for publisher in &mut publishers {
        let _ = publisher.kill();
        let _ = publisher.wait();
    }
    let published_s = publishing_since.elapsed().as_secs_f64();
    // Every recording ends and every event arrives, within a minute of the streams ending.
    let deadline = Instant::now() + Duration::from_secs(60);
    let (mut ended, mut missing_events) = (Vec::new(), usize::MAX);
    while Instant::now() < deadline {
        ended = files_ending(&buckets.join(BUCKET), &["events/recording-ended.json"]);
        missing_events =
            arns.iter().map(|arn| EVENTS.iter().filter(|name| receiver.count(arn, name) == 0).count()).sum::<usize>();
        if ended.len() >= arns.len() && missing_events == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }

    let pruned = std::mem::take(&mut *pruned.lock().expect("pruned lock"));
    // (A recording's prefix holds `events/recording-ended.json`.)
    let prefixes: Vec<&Path> = ended.iter().filter_map(|file| file.parent()?.parent()).collect();
    let recordings = check_recordings(&buckets.join(BUCKET), &prefixes, &pruned, published_s - 15.0);
    write_outputs(&args.out_dir, &points)?;
    let half = &points[points.len() / 2..];
    let rss_growth = match (half.first(), points.last()) {
        (Some(middle), Some(end)) => end.rss_mib / middle.rss_mib.max(1.0) - 1.0,
        _ => 0.0,
    };
    let mut all: Vec<f64> = points.iter().map(|p| p.api_p99_ms).collect();
    all.sort_by(f64::total_cmp);
    let cpu: Vec<f64> = points.iter().map(|p| p.cpu_percent).collect();
    let mean = |values: &[f64]| values.iter().sum::<f64>() / values.len().max(1) as f64;
    let api_errors = counters.api_errors.load(Ordering::Relaxed);
    let stalls = counters.viewer_stalls.load(Ordering::Relaxed);
    let viewer_errors = counters.viewer_errors.load(Ordering::Relaxed);
    let checks = [
        (
            "API calls answered 2xx",
            api_errors == 0,
            format!("{api_errors} errors of {}", counters.api_calls.load(Ordering::Relaxed)),
        ),
        (
            "publishers alive at the end",
            publishers_alive == args.publishers,
            format!("{publishers_alive}/{}", args.publishers),
        ),
        ("one stream session per channel", reconnected == 0, format!("{reconnected} channels reconnected")),
        (
            "viewer stalls longer than one segment",
            stalls == 0,
            format!("{stalls} (longest {} ms)", counters.longest_stall_ms.load(Ordering::Relaxed)),
        ),
        (
            "viewer requests answered",
            viewer_errors == 0,
            format!("{viewer_errors} failed of {}", counters.viewer_requests.load(Ordering::Relaxed)),
        ),
        ("RSS growth over the second half ≤ 5 %", rss_growth <= 0.05, format!("{:+.1} %", rss_growth * 100.0)),
        ("recordings ended", ended.len() >= arns.len(), format!("{}/{}", ended.len(), arns.len())),
        (
            "recordings complete (ENDLIST, no gap, every segment stored, all the media)",
            recordings.incomplete.is_empty() && recordings.complete >= arns.len(),
            format!(
                "{}/{}; shortest {:.0} s of {:.0} s published; {} segments stored, {} of them deleted after {} min",
                recordings.complete,
                arns.len(),
                recordings.shortest_s,
                published_s,
                recordings.segments,
                pruned.len(),
                args.keep_recorded.map_or("-".to_owned(), |keep| format!("{:.0}", keep.as_secs_f64() / 60.0)),
            ),
        ),
        ("events delivered (4 per channel)", missing_events == 0, format!("{missing_events} missing")),
    ];
    println!();
    println!("| check | verdict | figure |");
    println!("|---|---|---|");
    for (check, ok, figure) in &checks {
        println!("| {check} | {} | {figure} |", if *ok { "pass" } else { "FAIL" });
    }
    for problem in recordings.incomplete.iter().take(10) {
        println!("Incomplete recording: {problem}");
    }
    if let Some(error) = counters.first_api_error.lock().expect("error lock").as_ref() {
        println!();
        println!("First API error: {error}");
    }
    println!();
    println!("| over the run | mean | max |");
    println!("|---|---|---|");
    let max = |values: &[f64]| values.iter().copied().fold(0.0, f64::max);
    let rss: Vec<f64> = points.iter().map(|p| p.rss_mib).collect();
    let rate: Vec<f64> = points.iter().map(|p| p.api_per_s).collect();
    let mbits: Vec<f64> = points.iter().map(|p| p.viewer_mbit_s).collect();
    println!("| server CPU % of one core | {:.1} | {:.1} |", mean(&cpu), max(&cpu));
    println!("| server RSS MiB | {:.1} | {:.1} |", mean(&rss), max(&rss));
    println!("| API calls/s | {:.1} | {:.1} |", mean(&rate), max(&rate));
    println!("| API p99 ms (per period) | {:.1} | {:.1} |", percentile(&all, 0.5), max(&all));
    println!("| viewers' Mbit/s | {:.0} | {:.0} |", mean(&mbits), max(&mbits));
    println!();
    println!("Graphs: {}/soak.svg; samples: {}/soak.csv", args.out_dir.display(), args.out_dir.display());
    if checks.iter().all(|(_, ok, _)| *ok) { Ok(()) } else { Err("the soak failed a check (above)".into()) }
}

/// Publishers still running.
fn alive(publishers: &mut [std::process::Child]) -> usize {
    publishers.iter_mut().map(|p| p.try_wait()).filter(|status| matches!(status, Ok(None))).count()
}

/// The channel, as GetChannel answers it.
async fn channel_of(client: &SignedClient, port: u16, arn: &str) -> Result<serde_json::Value, String> {
    let mut api = Connection::new(port);
    let (_, body) = client.call(&mut api, "GetChannel", &format!(r#"{{"arn":"{arn}"}}"#)).await?;
    let mut json: serde_json::Value = serde_json::from_slice(&body).map_err(|e| e.to_string())?;
    Ok(json["channel"].take())
}

/// One viewer: reload every 0.5 s, fetch each new segment, and model the player's buffer.
async fn view(port: u16, media: String, running: Arc<AtomicBool>, counters: Arc<Counters>) {
    let mut connection = Connection::new(port);
    let base = media.rsplit_once('/').map_or(String::new(), |(dir, _)| dir.to_owned());
    let mut last: Option<String> = None;
    // Playing since, and the media fetched since then (seconds).
    let mut playing: Option<(Instant, f64)> = None;
    while running.load(Ordering::Relaxed) {
        let fetched = get(&mut connection, &media).await;
        counters.viewer_requests.fetch_add(1, Ordering::Relaxed);
        let Ok((200, body)) = fetched else {
            counters.viewer_errors.fetch_add(1, Ordering::Relaxed);
            tokio::time::sleep(Duration::from_millis(500)).await;
            continue;
        };
        counters.viewer_bytes.fetch_add(body.len() as u64, Ordering::Relaxed);
        let segments = crate::fanout::segments_of(&String::from_utf8_lossy(&body));
        let start = match &last {
            Some(uri) => segments.iter().position(|(s, _)| s == uri).map_or(0, |i| i + 1),
            None => segments.len().saturating_sub(1),
        };
        let longest = segments.iter().map(|(_, d)| *d).fold(0.0, f64::max);
        for (uri, duration) in &segments[start.min(segments.len())..] {
            counters.viewer_requests.fetch_add(1, Ordering::Relaxed);
            match get(&mut connection, &format!("{base}/{uri}")).await {
                Ok((200, segment)) => {
                    counters.viewer_bytes.fetch_add(segment.len() as u64, Ordering::Relaxed);
                    let (_, buffered) = playing.get_or_insert((Instant::now(), 0.0));
                    *buffered += duration;
                }
                _ => {
                    counters.viewer_errors.fetch_add(1, Ordering::Relaxed);
                }
            }
            last = Some(uri.clone());
        }
        if let Some((since, buffered)) = playing {
            let waited = since.elapsed().as_secs_f64() - buffered;
            if longest > 0.0 && waited > longest {
                // The player ran dry more than a segment ago: a stall; it starts again from here.
                counters.viewer_stalls.fetch_add(1, Ordering::Relaxed);
                counters.longest_stall_ms.fetch_max((waited * 1000.0) as u64, Ordering::Relaxed);
                playing = None;
            }
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// One API worker's calls: ten kinds in turn, on its own connection.
struct ApiCalls {
    client: Arc<SignedClient>,
    arns: Arc<Vec<String>>,
    recording_configuration: String,
    worker: usize,
}

impl ApiCalls {
    async fn run(&self, port: u16, interval: Duration, running: Arc<AtomicBool>, counters: Arc<Counters>) {
        let mut connection = Connection::new(port);
        let mut ticker = tokio::time::interval(interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut turn = self.worker;
        while running.load(Ordering::Relaxed) {
            ticker.tick().await;
            turn += 1;
            let arn = &self.arns[(turn / 10 + self.worker) % self.arns.len()];
            let (operation, body) = match turn % 10 {
                0 => ("GetChannel", format!(r#"{{"arn":"{arn}"}}"#)),
                1 => ("ListChannels", "{}".to_owned()),
                2 => ("GetStream", format!(r#"{{"channelArn":"{arn}"}}"#)),
                3 => ("ListStreams", "{}".to_owned()),
                4 => ("ListStreamKeys", format!(r#"{{"channelArn":"{arn}"}}"#)),
                5 => ("GetStreamSession", format!(r#"{{"channelArn":"{arn}"}}"#)),
                6 => ("PutMetadata", format!(r#"{{"channelArn":"{arn}","metadata":"soak {turn}"}}"#)),
                7 => ("GetRecordingConfiguration", format!(r#"{{"arn":"{}"}}"#, self.recording_configuration)),
                8 => ("ListStreamSessions", format!(r#"{{"channelArn":"{arn}"}}"#)),
                _ => ("CreateChannel", r#"{"name":"soak-scratch"}"#.to_owned()),
            };
            let Some(answer) = self.call(&mut connection, operation, &body, &counters).await else { continue };
            if operation == "CreateChannel"
                && let Some(scratch) = serde_json::from_slice::<serde_json::Value>(&answer)
                    .ok()
                    .and_then(|json| json["channel"]["arn"].as_str().map(str::to_owned))
            {
                self.call(&mut connection, "DeleteChannel", &format!(r#"{{"arn":"{scratch}"}}"#), &counters).await;
            }
        }
    }

    /// One call, counted and timed; its body when it answered 2xx.
    async fn call(
        &self,
        connection: &mut Connection,
        operation: &str,
        body: &str,
        counters: &Counters,
    ) -> Option<Vec<u8>> {
        let asked = Instant::now();
        let answer = self.client.call(connection, operation, body).await;
        let millis = asked.elapsed().as_secs_f64() * 1000.0;
        counters.api_calls.fetch_add(1, Ordering::Relaxed);
        counters.api_latencies.lock().expect("latencies lock").push(millis);
        match answer {
            Ok((status, answer)) if (200..300).contains(&status) => Some(answer),
            outcome => {
                counters.api_errors.fetch_add(1, Ordering::Relaxed);
                let mut first = counters.first_api_error.lock().expect("error lock");
                if first.is_none() {
                    *first = Some(match outcome {
                        Ok((status, answer)) => format!("{operation}: {status} {}", String::from_utf8_lossy(&answer)),
                        Err(error) => format!("{operation}: {error}"),
                    });
                }
                None
            }
        }
    }
}

/// Seconds of media in the benchmark's input file (`ingest::input_file`).
const INPUT_SECONDS: u64 = 10;

/// Every publisher is recorded for the whole run, into the system's temporary folder: at the
/// input's rate that is about 67 GB for 50 streams over an hour, more than many disks have
/// free. A run that would fill the disk is refused before it starts (a full disk ended the
/// first hour-long run after 41 minutes); with `--keep-recorded-minutes` only the kept minutes
/// count.
fn enough_disk_for_the_recordings(input: &Path, args: &SoakArgs) -> Result<(), String> {
    let bytes_per_second = std::fs::metadata(input).map_err(|e| e.to_string())?.len() / INPUT_SECONDS;
    // Pruned, the bucket holds the kept minutes and what arrives before the next pass.
    let held = args.keep_recorded.map_or(args.duration, |keep| args.duration.min(keep + Duration::from_secs(60)));
    let needed = bytes_per_second * args.publishers as u64 * held.as_secs();
    let folder = std::env::temp_dir();
    let output = std::process::Command::new("df")
        .args(["--output=avail", "-B1"])
        .arg(&folder)
        .output()
        .map_err(|e| format!("df: {e}"))?;
    let free: u64 = String::from_utf8_lossy(&output.stdout)
        .lines()
        .nth(1)
        .and_then(|line| line.trim().parse().ok())
        .ok_or("df did not say how much space is free")?;
    // A tenth spare for playlists, thumbnails and what else the machine writes meanwhile.
    if needed + needed / 10 > free {
        return Err(format!(
            "the recordings need about {:.1} GB and {} has {:.1} GB free: run fewer streams or minutes, or pass --keep-recorded-minutes",
            needed as f64 / 1e9,
            folder.display(),
            free as f64 / 1e9
        ));
    }
    Ok(())
}

/// Deletes the recorded media segments (`media/hls/{rendition}/{n}.ts`) last written more than
/// `keep` ago, remembering each path.
fn prune_segments(root: &Path, keep: Duration, pruned: &Mutex<HashSet<PathBuf>>) {
    let Ok(entries) = std::fs::read_dir(root) else { return };
    for entry in entries.flatten() {
        let path = entry.path();
        let Ok(metadata) = entry.metadata() else { continue };
        if metadata.is_dir() {
            prune_segments(&path, keep, pruned);
        } else if path.extension().is_some_and(|extension| extension == "ts")
            && metadata.modified().ok().and_then(|at| at.elapsed().ok()).is_some_and(|age| age > keep)
            && std::fs::remove_file(&path).is_ok()
        {
            pruned.lock().expect("pruned lock").insert(path);
        }
    }
}

/// What the recordings in a bucket hold, as their final playlists say.
struct Recordings {
    /// Recordings that ended with complete playlists and every segment stored.
    complete: usize,
    /// Recorded media segments named by the playlists (stored or pruned).
    segments: usize,
    /// The least media (seconds) in any rendition of an ended recording.
    shortest_s: f64,
    /// What is wrong with each recording that is not complete.
    incomplete: Vec<String>,
}

/// Every ended recording (its prefix, under `root`): each rendition's final `playlist.m3u8`
/// ends with `#EXT-X-ENDLIST`, marks no gap, names only segments that were stored (present, or
/// deleted by `prune_segments`) and holds at least `least_s` of media.
fn check_recordings(root: &Path, ended: &[&Path], pruned: &HashSet<PathBuf>, least_s: f64) -> Recordings {
    let mut recordings = Recordings { complete: 0, segments: 0, shortest_s: f64::MAX, incomplete: Vec::new() };
    for prefix in ended {
        let hls = prefix.join("media/hls");
        let renditions: Vec<PathBuf> = std::fs::read_dir(&hls)
            .map(|entries| entries.flatten().map(|e| e.path()).filter(|p| p.is_dir()).collect())
            .unwrap_or_default();
        let mut problems = Vec::new();
        if renditions.is_empty() {
            problems.push("no rendition".to_owned());
        }
        for rendition in &renditions {
            let playlist = std::fs::read_to_string(rendition.join("playlist.m3u8")).unwrap_or_default();
            let (mut seconds, mut missing) = (0.0, 0);
            for line in playlist.lines() {
                if let Some(duration) = line.strip_prefix("#EXTINF:") {
                    seconds += duration.trim_end_matches(',').parse::<f64>().unwrap_or(0.0);
                } else if !line.is_empty() && !line.starts_with('#') {
                    recordings.segments += 1;
                    let segment = rendition.join(line);
                    if !segment.exists() && !pruned.contains(&segment) {
                        missing += 1;
                    }
                }
            }
            recordings.shortest_s = recordings.shortest_s.min(seconds);
            let name = rendition.strip_prefix(root).unwrap_or(rendition).display();
            if !playlist.contains("#EXT-X-ENDLIST") {
                problems.push(format!("{name}: no #EXT-X-ENDLIST"));
            }
            if playlist.contains("#EXT-X-DISCONTINUITY") {
                problems.push(format!("{name}: a gap (#EXT-X-DISCONTINUITY)"));
            }
            if missing > 0 {
                problems.push(format!("{name}: {missing} segments never stored"));
            }
            if seconds < least_s {
                problems.push(format!("{name}: {seconds:.0} s of media, published {least_s:.0} s or more"));
            }
        }
        if problems.is_empty() {
            recordings.complete += 1;
        } else {
            recordings.incomplete.push(problems.join("; "));
        }
    }
    if recordings.shortest_s == f64::MAX {
        recordings.shortest_s = 0.0;
    }
    recordings
}

/// `soak.csv` (every sample) and `soak.svg` (three panels over time: CPU, RSS, API latency).
fn write_outputs(out_dir: &Path, points: &[Point]) -> Result<(), String> {
    let mut csv = String::from(
        "seconds,cpu_percent,rss_mib,api_calls_per_s,api_p50_ms,api_p99_ms,viewer_mbit_s,stalls,publishers_alive\n",
    );
    for p in points {
        csv.push_str(&format!(
            "{:.1},{:.2},{:.2},{:.1},{:.2},{:.2},{:.1},{},{}\n",
            p.at_s,
            p.cpu_percent,
            p.rss_mib,
            p.api_per_s,
            p.api_p50_ms,
            p.api_p99_ms,
            p.viewer_mbit_s,
            p.stalls,
            p.publishers_alive
        ));
    }
    std::fs::write(out_dir.join("soak.csv"), csv).map_err(|e| e.to_string())?;
    let panels: [Panel; 3] = [
        ("server CPU, % of one core", vec![("CPU", points.iter().map(|p| p.cpu_percent).collect())]),
        ("server RSS, MiB", vec![("RSS", points.iter().map(|p| p.rss_mib).collect())]),
        (
            "API latency per period, ms",
            vec![
                ("p50", points.iter().map(|p| p.api_p50_ms).collect()),
                ("p99", points.iter().map(|p| p.api_p99_ms).collect()),
            ],
        ),
    ];
    let times: Vec<f64> = points.iter().map(|p| p.at_s).collect();
    std::fs::write(out_dir.join("soak.svg"), svg(&times, &panels)).map_err(|e| e.to_string())
}

/// A chart's title and its named series (one value per sample).
type Panel<'a> = (&'a str, Vec<(&'a str, Vec<f64>)>);

/// Line charts stacked vertically, one panel per entry, sharing the time axis.
fn svg(times: &[f64], panels: &[Panel]) -> String {
    const WIDTH: f64 = 800.0;
    const PANEL: f64 = 180.0;
    const LEFT: f64 = 60.0;
    const COLOURS: [&str; 2] = ["#1f6feb", "#d1242f"];
    let height = PANEL * panels.len() as f64 + 30.0;
    let end = times.last().copied().unwrap_or(1.0).max(1.0);
    let mut out = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{WIDTH}\" height=\"{height}\" font-family=\"sans-serif\" font-size=\"12\">\n<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n"
    );
    for (index, (title, series)) in panels.iter().enumerate() {
        let top = PANEL * index as f64 + 20.0;
        let plot = PANEL - 50.0;
        let highest = series.iter().flat_map(|(_, values)| values.iter().copied()).fold(0.0, f64::max).max(1e-9) * 1.1;
        out.push_str(&format!("<text x=\"{LEFT}\" y=\"{top}\" font-weight=\"bold\">{title}</text>\n"));
        let (x0, y0, x1, y1) = (LEFT, top + 10.0, WIDTH - 20.0, top + 10.0 + plot);
        out.push_str(&format!(
            "<rect x=\"{x0}\" y=\"{y0}\" width=\"{}\" height=\"{plot}\" fill=\"none\" stroke=\"#999\"/>\n",
            x1 - x0
        ));
        out.push_str(&format!(
            "<text x=\"{}\" y=\"{}\" text-anchor=\"end\">{highest:.1}</text>\n",
            x0 - 4.0,
            y0 + 10.0
        ));
        out.push_str(&format!("<text x=\"{}\" y=\"{y1}\" text-anchor=\"end\">0</text>\n", x0 - 4.0));
        out.push_str(&format!("<text x=\"{x1}\" y=\"{}\" text-anchor=\"end\">{end:.0} s</text>\n", y1 + 14.0));
        for (at, (name, values)) in series.iter().enumerate() {
            let colour = COLOURS[at % COLOURS.len()];
            let points: Vec<String> = times
                .iter()
                .zip(values)
                .map(|(t, v)| format!("{:.1},{:.1}", x0 + (x1 - x0) * t / end, y1 - plot * v / highest))
                .collect();
            out.push_str(&format!(
                "<polyline fill=\"none\" stroke=\"{colour}\" stroke-width=\"1.5\" points=\"{}\"/>\n",
                points.join(" ")
            ));
            out.push_str(&format!(
                "<text x=\"{}\" y=\"{}\" fill=\"{colour}\">{name}</text>\n",
                x1 - 60.0 * (at + 1) as f64,
                y0 + 14.0
            ));
        }
    }
    out.push_str("</svg>\n");
    out
}

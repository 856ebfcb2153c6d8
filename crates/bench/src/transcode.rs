//! `openivs-bench transcode`: what adaptive bitrate costs, side by side with its floor.
//!
//! Part 1, cost: N concurrent 720p30 ~3 Mbit/s RTMP publishers (the `ingest` benchmark's input)
//! to STANDARD channels, each transcoded into 480p30/360p30/160p30: the CPU of openivs and its
//! ffmpeg children, against N bare `ffmpeg` processes making the same ladder from the same file
//! in real time (`-re`) with the very arguments openivs gives its children (the floor: what the
//! encoding itself costs, with no server around it). The ratio is openivs ÷ floor.
//!
//! Part 2, density: how many STANDARD 720p30 channels this machine transcodes in real time (the
//! capacity check lifted): with N live, each channel's 160p rendition must grow by at least
//! 95 % of the wall-clock time over the window, and keep being offered.
//!
//! Part 3, added latency: on one LOW channel, blocking playlist requests (`_HLS_msn`, part 0)
//! on the source and on the 480p30 rendition for the same segments: the time between the two
//! answers is how much later a viewer of the rendition gets the same picture.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use openivs::transcode::ladder::{ChannelType, Input, Preset, ladder};

use crate::http_client::{Connection, SignedClient, get};
use crate::ingest::{clock_ticks_per_second, input_file, measure, openivs_channels, sample_cpu_ticks};

/// The density search stops here (or at the first count not held).
const MOST_CHANNELS: usize = 8;

pub struct TranscodeArgs {
    pub streams: Vec<usize>,
    pub warmup: Duration,
    pub measure: Duration,
    pub samples: usize,
    pub out_dir: std::path::PathBuf,
}

pub async fn run(args: TranscodeArgs) -> Result<(), String> {
    let input = input_file(&args.out_dir)?;
    let openivs = crate::start_openivs_with(&["--ffmpeg", "ffmpeg", "--transcode-capacity", "1000"]).await?;
    let rtmp_port = openivs.rtmp_port.ok_or("openivs has no RTMP port")?;
    let client = SignedClient::new();
    // (Enough channels for the density search too.)
    let most = args.streams.iter().copied().max().unwrap_or(1).max(MOST_CHANNELS);
    let channels = openivs_channels(&client, openivs.port, most, r#"{"insecureIngest":true}"#).await?;
    println!(
        "# Transcoding: 720p30 ~3 Mbit/s RTMP inputs, STANDARD ladder (source + 480p30 1.4 Mbit/s, 360p30 0.63, 160p30 0.23), {} s warm-up, {} s measured, 127.0.0.1, {} CPUs",
        args.warmup.as_secs(),
        args.measure.as_secs(),
        crate::num_cpus()
    );
    println!();
    println!(
        "| channels | openivs + its ffmpeg, CPU % of one core | per channel | bare ffmpeg ladder (floor), CPU % | per channel | openivs / floor |"
    );
    println!("|---|---|---|---|---|---|");
    for &count in &args.streams {
        let urls: Vec<String> =
            channels[..count].iter().map(|(_, key)| format!("rtmp://127.0.0.1:{rtmp_port}/app/{key}")).collect();
        let served = measure(&[openivs.child.id()], &urls, &input, args.warmup, args.measure).await?;
        let floor = bare_ladders(&input, count, args.warmup, args.measure).await?;
        let served = served[0].cpu_percent;
        println!(
            "| {count} | {served:.1} | {:.1} | {floor:.1} | {:.1} | {:.2}× |",
            served / count as f64,
            floor / count as f64,
            served / floor.max(0.01)
        );
    }

    println!();
    println!("# Real time: N STANDARD 720p30 channels transcoded at once (capacity check lifted)");
    println!();
    println!("| channels | slowest rendition's media / wall time | renditions offered | held |");
    println!("|---|---|---|---|");
    for count in 1..=MOST_CHANNELS {
        let (slowest, offered) = real_time(&openivs, &channels[..count], &input, args.warmup, args.measure).await?;
        let held = slowest >= 0.95 && offered;
        println!(
            "| {count} | {slowest:.3} | {} | {} |",
            if offered { "all" } else { "not all" },
            if held { "yes" } else { "no" }
        );
        if !held {
            break;
        }
    }

    println!();
    let added = added_latency(&openivs, &channels[0], &input, args.samples).await?;
    let percentile = |p: f64| added[((added.len() - 1) as f64 * p).round() as usize];
    println!("# Added latency of the 480p30 rendition over the source (LOW channel, part 0 of each segment)");
    println!();
    println!("| samples | p50 ms | p95 ms | max ms |");
    println!("|---|---|---|---|");
    println!("| {} | {:.0} | {:.0} | {:.0} |", added.len(), percentile(0.5), percentile(0.95), added[added.len() - 1]);
    Ok(())
}

/// N bare ffmpeg processes making the STANDARD 720p30 ladder of `input` in real time; their CPU.
async fn bare_ladders(input: &Path, count: usize, warmup: Duration, window: Duration) -> Result<f64, String> {
    let ladder =
        ladder(ChannelType::Standard, Preset::HigherBandwidth, Input { width: 1280, height: 720, frame_rate: 30.0 });
    let (args, _) = openivs::transcode::ffmpeg::command(&ladder, 30.0).ok_or("a ladder")?;
    // The same arguments, reading the file in real time instead of the pipe, into nothing.
    let input_at = args.iter().position(|a| a == "pipe:0").ok_or("an input")?;
    let mut children = Vec::new();
    for _ in 0..count {
        let mut command = Command::new("ffmpeg");
        command.args(&args[..input_at - 3]);
        command.args(["-re", "-stream_loop", "-1", "-f", "flv", "-i"]).arg(input);
        command.args(&args[input_at + 1..args.len() - 1]).arg("-y").arg("/dev/null");
        children.push(Killed(
            command
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .map_err(|e| e.to_string())?,
        ));
    }
    tokio::time::sleep(warmup).await;
    let pids: Vec<u32> = children.iter().map(|c| c.0.id()).collect();
    let before = sample_cpu_ticks(&pids);
    let started = Instant::now();
    tokio::time::sleep(window).await;
    let cpu =
        (sample_cpu_ticks(&pids) - before) as f64 / clock_ticks_per_second() / started.elapsed().as_secs_f64() * 100.0;
    drop(children);
    tokio::time::sleep(Duration::from_secs(2)).await;
    Ok(cpu)
}

struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The multivariant playlist's rendition URIs of a live channel, by name.
async fn renditions(port: u16, channel_arn: &str) -> Result<Vec<(String, String)>, String> {
    let id = channel_arn.rsplit('/').next().ok_or("an ARN")?;
    let path = format!("/api/video/v1/us-west-2.123456789012.channel.{id}.m3u8");
    let (status, body) = get(&mut Connection::new(port), &path).await?;
    if status != 200 {
        return Err(format!("multivariant playlist: {status}"));
    }
    let text = String::from_utf8_lossy(&body).into_owned();
    let mut found = Vec::new();
    let mut lines = text.lines();
    while let Some(line) = lines.next() {
        if let Some(rest) = line.split("IVS-NAME=\"").nth(1) {
            let name = rest.split('"').next().unwrap_or_default().to_owned();
            found.push((name, lines.next().unwrap_or_default().to_owned()));
        }
    }
    Ok(found)
}

/// Seconds of media a media playlist lists, by segment sequence: (newest sequence, its total).
async fn listed_media(port: u16, media: &str) -> Result<Vec<(u64, f64)>, String> {
    let (_, body) = get(&mut Connection::new(port), media).await?;
    let text = String::from_utf8_lossy(&body).into_owned();
    let mut sequence = 0;
    let mut segments = Vec::new();
    for line in text.lines() {
        if let Some(first) = line.strip_prefix("#EXT-X-MEDIA-SEQUENCE:") {
            sequence = first.parse().unwrap_or(0);
        } else if let Some(duration) = line.strip_prefix("#EXTINF:") {
            segments.push((sequence, duration.trim_end_matches(',').parse().unwrap_or(0.0)));
            sequence += 1;
        }
    }
    Ok(segments)
}

/// With `channels` live: the slowest channel's 160p media added over the window ÷ the window,
/// and whether every channel still offered its renditions at the end.
async fn real_time(
    openivs: &crate::Peer,
    channels: &[(String, String)],
    input: &Path,
    warmup: Duration,
    window: Duration,
) -> Result<(f64, bool), String> {
    let rtmp_port = openivs.rtmp_port.ok_or("an RTMP port")?;
    let urls: Vec<String> = channels.iter().map(|(_, key)| format!("rtmp://127.0.0.1:{rtmp_port}/app/{key}")).collect();
    let publishers = crate::ingest::publish(&urls, input)?;
    tokio::time::sleep(warmup).await;
    let mut smallest = Vec::new();
    for (arn, _) in channels {
        let offered = renditions(openivs.port, arn).await?;
        match offered.iter().find(|(name, _)| name == "160p30") {
            Some((_, uri)) => smallest.push(uri.clone()),
            // Its transcoder is behind real time already: its renditions are left out.
            None => {
                drop(publishers);
                tokio::time::sleep(Duration::from_secs(4)).await;
                return Ok((0.0, false));
            }
        }
    }
    // Media each playlist adds, followed every 2 s (the playlist lists 16 s at most).
    let mut newest = Vec::new();
    for media in &smallest {
        newest.push(listed_media(openivs.port, media).await?.last().map_or(0, |(s, _)| *s));
    }
    let mut added = vec![0.0; smallest.len()];
    let started = Instant::now();
    while started.elapsed() < window {
        tokio::time::sleep(Duration::from_secs(2)).await;
        for ((media, newest), added) in smallest.iter().zip(newest.iter_mut()).zip(added.iter_mut()) {
            for (sequence, duration) in listed_media(openivs.port, media).await? {
                if sequence > *newest {
                    *added += duration;
                    *newest = sequence;
                }
            }
        }
    }
    let elapsed = started.elapsed().as_secs_f64();
    // (The first segment counted began before the window and the one open at its end is not
    // counted: the two roughly cancel.)
    let slowest = added.iter().map(|a| a / elapsed).fold(f64::MAX, f64::min);
    let mut offered = true;
    for (arn, _) in channels {
        offered &= renditions(openivs.port, arn).await?.len() == 4;
    }
    drop(publishers);
    tokio::time::sleep(Duration::from_secs(4)).await;
    Ok((slowest, offered))
}

/// On one LOW channel: for `samples` segments, how much later part 0 of the 480p30 rendition's
/// segment becomes available than the source's (blocking playlist reloads), in ms, sorted.
async fn added_latency(
    openivs: &crate::Peer,
    channel: &(String, String),
    input: &Path,
    samples: usize,
) -> Result<Vec<f64>, String> {
    let rtmp_port = openivs.rtmp_port.ok_or("an RTMP port")?;
    let _publishers = crate::ingest::publish(&[format!("rtmp://127.0.0.1:{rtmp_port}/app/{}", channel.1)], input)?;
    tokio::time::sleep(Duration::from_secs(8)).await;
    let offered = renditions(openivs.port, &channel.0).await?;
    let source = offered.first().map(|(_, uri)| uri.clone()).ok_or("a source rendition")?;
    let rendition = offered.iter().find(|(name, _)| name == "480p30").map(|(_, uri)| uri.clone()).ok_or("480p30")?;
    let mut next = listed_media(openivs.port, &source).await?.last().map_or(0, |(s, _)| *s) + 2;
    let mut added = Vec::new();
    while added.len() < samples {
        let port = openivs.port;
        let blocking = |media: &str| format!("{media}?_HLS_msn={next}&_HLS_part=0");
        let (source_path, rendition_path) = (blocking(&source), blocking(&rendition));
        let source_ready = tokio::spawn(async move {
            let answered = get(&mut Connection::new(port), &source_path).await.map(|(status, _)| status);
            (answered, Instant::now())
        });
        let rendition_ready = tokio::spawn(async move {
            let answered = get(&mut Connection::new(port), &rendition_path).await.map(|(status, _)| status);
            (answered, Instant::now())
        });
        let ((source_status, source_at), (rendition_status, rendition_at)) =
            (source_ready.await.map_err(|e| e.to_string())?, rendition_ready.await.map_err(|e| e.to_string())?);
        if source_status == Ok(200) && rendition_status == Ok(200) {
            added.push(rendition_at.saturating_duration_since(source_at).as_secs_f64() * 1000.0);
        }
        next += 1;
    }
    added.sort_by(f64::total_cmp);
    Ok(added)
}

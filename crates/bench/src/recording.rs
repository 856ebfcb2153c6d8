//! `openivs-bench recording`: what recording costs the server, and how soon events arrive.
//!
//! Part 1, cost: N concurrent 720p30 ~3 Mbit/s RTMP publishers (the `ingest` benchmark's input,
//! `ffmpeg -re -c copy`), measured on openivs three ways: channels with no recording
//! configuration, recording to a local bucket (a folder), and recording to S3 (moto_server on
//! 127.0.0.1, through openivs's on-disk spool); next to nginx-rtmp live only and with
//! `record all` (one FLV file per stream), the recording a user of nginx-rtmp would turn on.
//! Recording configurations take IVS's defaults (thumbnails every 60 s). moto's CPU is shown
//! apart: it is the store, not the server. Each case checks that segments reached the bucket.
//!
//! Part 2, events: openivs delivers its events to a webhook receiver in this process. With the
//! N streams live, StopStream is called on each channel in turn, and the time from the request
//! (and from its answer) to the receipt of that channel's "Stream End" is taken; rounds repeat
//! until there are enough samples. There is no peer: the figures stand alone.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};

use crate::http_client::{Connection, SignedClient, request};
use crate::ingest::{Sample, input_file, measure, openivs_channels, publish, start_nginx, times};
use crate::{TempDir, wait_for_port};

pub struct RecordingArgs {
    pub streams: usize,
    pub warmup: Duration,
    pub measure: Duration,
    pub moto: String,
    /// Event latencies to collect, at least.
    pub samples: usize,
    pub out_dir: PathBuf,
}

pub(crate) const BUCKET: &str = "bench";

pub async fn run(args: RecordingArgs) -> Result<(), String> {
    let input = input_file(&args.out_dir)?;
    let receiver = Receiver::start().await?;
    let moto = crate::start_moto(&args.moto).await?;
    let (status, body) = request(&mut Connection::new(moto.port), "PUT", &format!("/{BUCKET}")).await?;
    if status != 200 {
        return Err(format!("moto did not make the bucket: {status} {}", String::from_utf8_lossy(&body)));
    }
    let local =
        crate::start_openivs_with(&["--event-webhook", &receiver.url, "--event-webhook-secret", "bench-secret"])
            .await?;
    let s3_endpoint = format!("http://127.0.0.1:{}", moto.port);
    let s3 = crate::start_openivs_with(&[
        "--recording-store",
        "s3",
        "--s3-endpoint",
        &s3_endpoint,
        "--s3-access-key-id",
        "test",
        "--s3-secret-access-key",
        "test",
    ])
    .await?;
    let local_buckets = local.data_dir.as_ref().ok_or("openivs has a data folder")?.0.join("buckets");
    std::fs::create_dir_all(local_buckets.join(BUCKET)).map_err(|e| e.to_string())?;

    let client = SignedClient::new();
    let plain = openivs_channels(&client, local.port, args.streams, r#"{"insecureIngest":true}"#).await?;
    let recorded_local = recorded_channels(&client, local.port, args.streams).await?;
    let recorded_s3 = recorded_channels(&client, s3.port, args.streams).await?;
    let nginx_dir = TempDir(std::env::temp_dir().join(format!("openivs-bench-nginx-{}", std::process::id())));
    let (nginx, nginx_port, _) = start_nginx(&nginx_dir.0, None)?;
    wait_for_port(nginx_port).await?;
    let nginx_root = nginx.child.id();

    let count = args.streams;
    println!(
        "# Recording: {count} concurrent 720p30 ~3 Mbit/s RTMP publishers, {} s warm-up, {} s measured, 127.0.0.1, {} CPUs",
        args.warmup.as_secs(),
        args.measure.as_secs(),
        crate::num_cpus()
    );
    println!();
    println!(
        "| server | recording | CPU % of one core | CPU % per stream | RSS max MiB | RSS per stream MiB | store CPU % | segments stored | publishers alive | CPU / not recording | RSS / not recording |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|");
    let nginx_urls = |app: &str| (0..count).map(|i| format!("rtmp://127.0.0.1:{nginx_port}/{app}/rec{i}")).collect();
    let nginx_recordings = nginx_dir.0.join("rec");
    let case = |server, recording, roots, urls, store| Case { server, recording, roots, urls, store };
    let cases = [
        case("nginx-rtmp", "off", vec![nginx_root], nginx_urls("app"), Store::None),
        case("nginx-rtmp", "record all (FLV)", vec![nginx_root], nginx_urls("rec"), Store::Folder(&nginx_recordings)),
        case("openivs", "off", vec![local.child.id()], rtmp_urls(&local, &plain)?, Store::None),
        case(
            "openivs",
            "to a folder",
            vec![local.child.id()],
            rtmp_urls(&local, &recorded_local)?,
            Store::Folder(&local_buckets),
        ),
        case(
            "openivs",
            "to S3 (moto)",
            vec![s3.child.id(), moto.child.id()],
            rtmp_urls(&s3, &recorded_s3)?,
            Store::Moto(moto.port),
        ),
    ];
    let mut baseline: Option<Sample> = None;
    for Case { server, recording, roots, urls, store } in cases {
        let samples = measure(&roots, &urls, &input, args.warmup, args.measure).await?;
        let sample = &samples[0];
        let store_cpu = samples.get(1).map_or(String::new(), |moto| format!("{:.1}", moto.cpu_percent));
        let stored = store.segments().await;
        let ratios = match (&baseline, recording) {
            (Some(off), recording) if recording != "off" => format!(
                "{} | {}",
                times(sample.cpu_percent, off.cpu_percent),
                times(sample.rss_max_kib as f64, off.rss_max_kib.max(1) as f64)
            ),
            _ => " | ".to_owned(),
        };
        println!(
            "| {server} | {recording} | {:.1} | {:.2} | {:.1} | {:.2} | {store_cpu} | {} | {}/{count} | {ratios} |",
            sample.cpu_percent,
            sample.cpu_percent / count as f64,
            sample.rss_max_mib(),
            sample.rss_per_stream_mib(count),
            stored.map_or("-".to_owned(), |n| n.to_string()),
            sample.publishers_alive,
        );
        if recording == "off" {
            baseline = samples.into_iter().next();
        }
    }
    let _ = std::process::Command::new("kill").args(["-QUIT", &nginx_root.to_string()]).status();

    println!();
    let latencies = event_latencies(&client, &local, &plain, &input, &receiver, args.samples).await?;
    println!("# Event delivery: StopStream on one of {count} live channels → its \"Stream End\" at a webhook");
    println!();
    println!("| measured from | samples | p50 ms | p95 ms | max ms |");
    println!("|---|---|---|---|---|");
    for (from, mut values) in [
        ("StopStream's request", latencies.iter().map(|l| l.0).collect::<Vec<f64>>()),
        ("StopStream's answer", latencies.iter().map(|l| l.1).collect()),
    ] {
        values.sort_by(f64::total_cmp);
        let at = |p: f64| values[((values.len() as f64 * p) as usize).min(values.len() - 1)];
        println!("| {from} | {} | {:.1} | {:.1} | {:.1} |", values.len(), at(0.5), at(0.95), at(1.0));
    }
    Ok(())
}

/// One row of the cost table: a server, its recording setting, the processes measured (the
/// server first, then its store), the publishers' URLs and where their recordings go.
struct Case<'a> {
    server: &'static str,
    recording: &'static str,
    roots: Vec<u32>,
    urls: Vec<String>,
    store: Store<'a>,
}

/// Where a case's recordings go, to count what reached it.
enum Store<'a> {
    None,
    Folder(&'a Path),
    Moto(u16),
}

impl Store<'_> {
    /// The recorded media files (segments, or nginx's FLV files) in the store.
    async fn segments(&self) -> Option<usize> {
        match self {
            Store::None => None,
            Store::Folder(root) => Some(files_ending(root, &[".ts", ".flv"]).len()),
            Store::Moto(port) => {
                // Up to 1,000 keys: more than a benchmark run makes.
                let listing = request(&mut Connection::new(*port), "GET", &format!("/{BUCKET}?list-type=2")).await;
                listing.ok().map(|(_, body)| String::from_utf8_lossy(&body).matches(".ts</Key>").count())
            }
        }
    }
}

/// The files under `root` (at any depth) whose paths end with one of `endings`.
pub(crate) fn files_ending(root: &Path, endings: &[&str]) -> Vec<PathBuf> {
    let mut found = Vec::new();
    collect_files_ending(root, endings, &mut found);
    found
}

fn collect_files_ending(root: &Path, endings: &[&str], found: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(root) else { return };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            collect_files_ending(&path, endings, found);
        } else if endings.iter().any(|ending| path.to_string_lossy().ends_with(ending)) {
            found.push(path);
        }
    }
}

/// `count` channels on `port`, each recorded by one recording configuration (IVS's defaults).
pub(crate) async fn recorded_channels(
    client: &SignedClient,
    port: u16,
    count: usize,
) -> Result<Vec<(String, String)>, String> {
    let mut connection = Connection::new(port);
    let body = format!(r#"{{"destinationConfiguration":{{"s3":{{"bucketName":"{BUCKET}"}}}}}}"#);
    let (status, answer) = client.call(&mut connection, "CreateRecordingConfiguration", &body).await?;
    let json: serde_json::Value = serde_json::from_slice(&answer).map_err(|e| e.to_string())?;
    let configuration = &json["recordingConfiguration"];
    if status != 200 || configuration["state"] != "ACTIVE" {
        return Err(format!("CreateRecordingConfiguration answered {status}: {json}"));
    }
    let arn = configuration["arn"].as_str().ok_or("no configuration ARN")?;
    let channel = format!(r#"{{"insecureIngest":true,"recordingConfigurationArn":"{arn}"}}"#);
    openivs_channels(client, port, count, &channel).await
}

fn rtmp_urls(openivs: &crate::Peer, channels: &[(String, String)]) -> Result<Vec<String>, String> {
    let port = openivs.rtmp_port.ok_or("openivs has no RTMP port")?;
    Ok(channels.iter().map(|(_, key)| format!("rtmp://127.0.0.1:{port}/app/{key}")).collect())
}

/// (from the request, from the answer) in milliseconds, one per StopStream.
async fn event_latencies(
    client: &SignedClient,
    openivs: &crate::Peer,
    channels: &[(String, String)],
    input: &Path,
    receiver: &Receiver,
    samples: usize,
) -> Result<Vec<(f64, f64)>, String> {
    let mut connection = Connection::new(openivs.port);
    let mut latencies = Vec::new();
    while latencies.len() < samples {
        let round = Instant::now();
        let publishers = publish(&rtmp_urls(openivs, channels)?, input)?;
        for (arn, _) in channels {
            receiver.wait(arn, "Stream Start", round, Duration::from_secs(30)).await?;
        }
        // Let every stream settle into its steady state before stopping them.
        tokio::time::sleep(Duration::from_secs(2)).await;
        for (arn, _) in channels {
            let asked = Instant::now();
            let (status, body) =
                client.call(&mut connection, "StopStream", &format!(r#"{{"channelArn":"{arn}"}}"#)).await?;
            let answered = Instant::now();
            if status != 200 {
                return Err(format!("StopStream answered {status}: {}", String::from_utf8_lossy(&body)));
            }
            let received = receiver.wait(arn, "Stream End", asked, Duration::from_secs(10)).await?;
            let millis = |from: Instant| {
                if received >= from {
                    received.duration_since(from).as_secs_f64() * 1000.0
                } else {
                    -(from.duration_since(received).as_secs_f64() * 1000.0)
                }
            };
            latencies.push((millis(asked), millis(answered)));
        }
        drop(publishers);
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    Ok(latencies)
}

/// A webhook endpoint in this process: when each event arrived, by channel and event name.
pub(crate) struct Receiver {
    pub(crate) url: String,
    received: Arc<Mutex<Vec<(String, String, Instant)>>>,
}

impl Receiver {
    pub(crate) async fn start() -> Result<Receiver, String> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.map_err(|e| e.to_string())?;
        let url = format!("http://{}/events", listener.local_addr().map_err(|e| e.to_string())?);
        let received = Arc::new(Mutex::new(Vec::new()));
        let log = received.clone();
        tokio::spawn(async move {
            while let Ok((connection, _)) = listener.accept().await {
                tokio::spawn(serve(connection, log.clone()));
            }
        });
        Ok(Receiver { url, received })
    }

    /// How many `event_name` events for channel `arn` arrived.
    pub(crate) fn count(&self, arn: &str, event_name: &str) -> usize {
        let received = self.received.lock().expect("receiver lock");
        received.iter().filter(|(channel, name, _)| channel == arn && name == event_name).count()
    }

    /// When `event_name` for channel `arn` arrived after `after` (waiting at most `limit`).
    async fn wait(&self, arn: &str, event_name: &str, after: Instant, limit: Duration) -> Result<Instant, String> {
        let deadline = Instant::now() + limit;
        loop {
            let found = self
                .received
                .lock()
                .expect("receiver lock")
                .iter()
                .find(|(channel, name, at)| channel == arn && name == event_name && *at >= after)
                .map(|(_, _, at)| *at);
            if let Some(at) = found {
                return Ok(at);
            }
            if Instant::now() > deadline {
                return Err(format!("no \"{event_name}\" for {arn} within {limit:?}"));
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }
}

/// One webhook connection: requests read one after another (keep-alive), each answered 200.
async fn serve(connection: tokio::net::TcpStream, log: Arc<Mutex<Vec<(String, String, Instant)>>>) {
    let mut reader = BufReader::new(connection);
    loop {
        let mut content_length = 0usize;
        let mut line = String::new();
        loop {
            line.clear();
            if reader.read_line(&mut line).await.unwrap_or(0) == 0 {
                return;
            }
            let header = line.trim_end();
            if header.is_empty() {
                break;
            }
            if let Some((name, value)) = header.split_once(':')
                && name.eq_ignore_ascii_case("content-length")
            {
                content_length = value.trim().parse().unwrap_or(0);
            }
        }
        let mut body = vec![0; content_length];
        if reader.read_exact(&mut body).await.is_err() {
            return;
        }
        let arrived = Instant::now();
        if let Ok(envelope) = serde_json::from_slice::<serde_json::Value>(&body) {
            let channel = envelope["resources"][0].as_str().unwrap_or_default().to_owned();
            // (Stream state changes name themselves in `event_name`, recording state changes in
            // `recording_status`, as IVS's do.)
            let detail = &envelope["detail"];
            let name = detail["event_name"].as_str().or(detail["recording_status"].as_str()).unwrap_or_default();
            let name = name.to_owned();
            log.lock().expect("receiver lock").push((channel, name, arrived));
        }
        if reader.get_mut().write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n").await.is_err() {
            return;
        }
    }
}

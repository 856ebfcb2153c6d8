//! Side-by-side benchmarks of openivs against the peers users would otherwise run.
//!
//! `openivs-bench control-plane` starts the release `openivs` binary (next to this one) and
//! `moto_server` (PyPI `moto[server]`), both on 127.0.0.1, and drives them with the same client:
//! SigV4-signed requests over keep-alive HTTP/1.1 connections, 1, 16 and 64 at a time. It prints
//! requests per second and p50/p99 latency for signed GetChannel on both servers, and for
//! CreateChannel+DeleteChannel pairs, with the openivs/moto ratio, and GetChannel against the HTTP
//! floor (`floor`: a bare axum handler with a fixed body). A benchmark, not a test: it
//! asserts nothing, it measures.
//!
//! The other benchmarks (`ingest`, `playback`, `fanout`, `access`, `recording`, `transcode`,
//! `srt`, `cluster`, and the long `soak`) are described in their modules.

mod access;
mod cluster;
mod fanout;
mod floor;
mod h2_client;
mod http_client;
mod ingest;
mod playback;
mod recording;
mod soak;
mod srt;
mod transcode;

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use http_client::{Connection, SignedClient};

const CONCURRENCY: [usize; 3] = [1, 16, 64];

struct Args {
    seconds: f64,
    moto: String,
    /// `--streams`, when given (each benchmark has its own default).
    streams: Option<Vec<usize>>,
    /// `--clients`, when given (each benchmark has its own default).
    clients: Option<Vec<usize>>,
    warmup: f64,
    /// `--samples`: event latencies to collect (`recording`).
    samples: usize,
    /// `--database-url`: a PostgreSQL server, without a database (`cluster`).
    database_url: Option<String>,
    /// `--minutes`: how long the soak runs.
    minutes: f64,
    /// `--rate`: signed API calls per second (`soak`).
    rate: f64,
    /// `--keep-recorded-minutes`: the soak deletes recorded segments older than this (`soak`).
    keep_recorded_minutes: Option<f64>,
    /// `--http 2`: the fan-out's clients speak HTTP/2 over TLS (`fanout`; default 1.1).
    http2: bool,
}

fn parse_args() -> Result<(String, Args), String> {
    let mut args = std::env::args().skip(1);
    let command = args.next().unwrap_or_default();
    let mut parsed = Args {
        seconds: 5.0,
        moto: "moto_server".into(),
        streams: None,
        clients: None,
        warmup: 10.0,
        samples: 50,
        database_url: None,
        minutes: 60.0,
        rate: 200.0,
        keep_recorded_minutes: None,
        http2: false,
    };
    while let Some(flag) = args.next() {
        let value = args.next().ok_or(format!("{flag} needs a value"))?;
        match flag.as_str() {
            "--seconds" => parsed.seconds = value.parse().map_err(|_| "--seconds takes a number")?,
            "--moto" => parsed.moto = value,
            "--streams" => {
                parsed.streams = Some(
                    value
                        .split(',')
                        .map(|n| n.trim().parse().map_err(|_| "--streams takes numbers like 1,10,50"))
                        .collect::<Result<_, _>>()?,
                )
            }
            "--clients" => {
                parsed.clients = Some(
                    value
                        .split(',')
                        .map(|n| n.trim().parse().map_err(|_| "--clients takes numbers like 100,1000"))
                        .collect::<Result<_, _>>()?,
                )
            }
            "--warmup" => parsed.warmup = value.parse().map_err(|_| "--warmup takes a number")?,
            "--samples" => parsed.samples = value.parse().map_err(|_| "--samples takes a number")?,
            "--database-url" => parsed.database_url = Some(value),
            "--minutes" => parsed.minutes = value.parse().map_err(|_| "--minutes takes a number")?,
            "--rate" => parsed.rate = value.parse().map_err(|_| "--rate takes a number")?,
            "--keep-recorded-minutes" => {
                parsed.keep_recorded_minutes =
                    Some(value.parse().map_err(|_| "--keep-recorded-minutes takes a number")?)
            }
            "--http" => {
                parsed.http2 = match value.as_str() {
                    "2" => true,
                    "1.1" => false,
                    _ => return Err("--http takes 1.1 or 2".into()),
                }
            }
            other => return Err(format!("unknown flag {other}")),
        }
    }
    Ok((command, parsed))
}

fn main() {
    if std::env::args().nth(1).as_deref() == Some("floor-server") {
        // (The control-plane benchmark's own child: `floor-server PORT`.)
        let port = std::env::args().nth(2).and_then(|p| p.parse().ok()).unwrap_or(0);
        if let Err(message) = floor::serve(port) {
            eprintln!("openivs-bench floor-server: {message}");
            std::process::exit(1);
        }
        return;
    }
    let (command, args) = match parse_args() {
        Ok(parsed) => parsed,
        Err(message) => {
            eprintln!("openivs-bench: {message}");
            std::process::exit(2);
        }
    };
    let out_dir = PathBuf::from("bench/out");
    let outcome = match command.as_str() {
        "control-plane" => run_async(control_plane(args)),
        "ingest" => run_async(ingest::run(ingest::IngestArgs {
            streams: args.streams.clone().unwrap_or_else(|| vec![1, 10, 50]),
            warmup: Duration::from_secs_f64(args.warmup),
            measure: Duration::from_secs_f64(args.seconds.max(5.0)),
            out_dir,
        })),
        "playback" => run_async(playback::run(playback::PlaybackArgs {
            seconds: Duration::from_secs_f64(args.seconds.max(10.0)),
            out_dir,
        })),
        "access" => run_async(access::run(access::AccessArgs {
            seconds: args.seconds,
            clients: args.clients.as_ref().and_then(|c| c.first().copied()).unwrap_or(16),
            out_dir,
        })),
        "recording" => run_async(recording::run(recording::RecordingArgs {
            // (One count: the first of `--streams`, 10 unless given.)
            streams: args.streams.as_ref().and_then(|s| s.first().copied()).unwrap_or(10),
            warmup: Duration::from_secs_f64(args.warmup),
            measure: Duration::from_secs_f64(args.seconds.max(5.0)),
            moto: args.moto.clone(),
            samples: args.samples,
            out_dir,
        })),
        "transcode" => run_async(transcode::run(transcode::TranscodeArgs {
            streams: args.streams.clone().unwrap_or_else(|| vec![1, 4]),
            warmup: Duration::from_secs_f64(args.warmup),
            measure: Duration::from_secs_f64(args.seconds.max(5.0)),
            samples: args.samples,
            out_dir,
        })),
        "srt" => run_async(srt::run(srt::SrtArgs {
            streams: args.streams.clone().unwrap_or_else(|| vec![1, 10]),
            warmup: Duration::from_secs_f64(args.warmup),
            measure: Duration::from_secs_f64(args.seconds.max(5.0)),
            out_dir,
        })),
        "fanout" => run_async(fanout::run(fanout::FanoutArgs {
            clients: args.clients.clone().unwrap_or_else(|| vec![100, 1000]),
            warmup: Duration::from_secs_f64(args.warmup),
            measure: Duration::from_secs_f64(args.seconds.max(5.0)),
            out_dir,
            http2: args.http2,
        })),
        "cluster" => match args.database_url.clone() {
            None => Err("cluster needs --database-url postgres://user@host:port (a PostgreSQL server)".into()),
            Some(database_url) => run_async(cluster::run(cluster::ClusterArgs {
                database_url,
                viewers: args.clients.as_ref().and_then(|c| c.first().copied()).unwrap_or(1000),
                seconds: Duration::from_secs_f64(args.seconds.max(15.0)),
                warmup: Duration::from_secs_f64(args.warmup.min(args.seconds.max(15.0) - 5.0)),
                api_seconds: 5.0,
                out_dir,
            })),
        },
        "soak" => run_async(soak::run(soak::SoakArgs {
            duration: Duration::from_secs_f64(args.minutes.max(0.5) * 60.0),
            publishers: args.streams.as_ref().and_then(|s| s.first().copied()).unwrap_or(50),
            viewers: args.clients.as_ref().and_then(|c| c.first().copied()).unwrap_or(1000),
            api_rate: args.rate,
            keep_recorded: args.keep_recorded_minutes.map(|minutes| Duration::from_secs_f64(minutes.max(1.0) * 60.0)),
            out_dir,
        })),
        _ => {
            eprintln!("usage: openivs-bench control-plane [--seconds N] [--moto PATH-TO-moto_server]");
            eprintln!("       openivs-bench ingest [--streams 1,10,50] [--warmup S] [--seconds S]");
            eprintln!("       openivs-bench srt [--streams 1,10] [--warmup S] [--seconds S]");
            eprintln!("       openivs-bench playback [--seconds S]");
            eprintln!("       openivs-bench fanout [--clients 100,1000] [--warmup S] [--seconds S] [--http 1.1|2]");
            eprintln!("       openivs-bench access [--clients 16] [--seconds S]");
            eprintln!(
                "       openivs-bench recording [--streams 10] [--warmup S] [--seconds S] [--samples 50] [--moto PATH]"
            );
            eprintln!("       openivs-bench transcode [--streams 1,4] [--warmup S] [--seconds S] [--samples 50]");
            eprintln!(
                "       openivs-bench cluster --database-url postgres://USER@HOST:PORT [--clients 1000] [--warmup S] [--seconds S]"
            );
            eprintln!(
                "       openivs-bench soak [--minutes 60] [--streams 50] [--clients 1000] [--rate 200] [--keep-recorded-minutes M]"
            );
            std::process::exit(2);
        }
    };
    if let Err(message) = outcome {
        eprintln!("openivs-bench: {message}");
        std::process::exit(1);
    }
}

/// Runs one benchmark on a fresh runtime.
fn run_async(benchmark: impl std::future::Future<Output = Result<(), String>>) -> Result<(), String> {
    tokio::runtime::Runtime::new().map_err(|e| format!("cannot start the runtime: {e}"))?.block_on(benchmark)
}

/// A server process under test, killed on drop.
struct Peer {
    name: &'static str,
    child: Child,
    port: u16,
    rtmp_port: Option<u16>,
    rtmps_port: Option<u16>,
    data_dir: Option<TempDir>,
}

impl Drop for Peer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

struct TempDir(PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn unix_seconds() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs() as i64)
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).expect("a free port")
}

async fn wait_for_port(port: u16) -> Result<(), String> {
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        if tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_ok() {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Err(format!("nothing listens on 127.0.0.1:{port} after 30 s"))
}

/// The path of a playback URL (what follows its host), or "" when it has none.
fn playback_path(url: &str) -> String {
    url.split_once("://").and_then(|(_, rest)| rest.split_once('/')).map(|(_, p)| format!("/{p}")).unwrap_or_default()
}

async fn start_openivs() -> Result<Peer, String> {
    start_openivs_with(&[]).await
}

/// The release `openivs`, with `extra` arguments after the benchmarks' own.
async fn start_openivs_with(extra: &[&str]) -> Result<Peer, String> {
    let binary = std::env::current_exe().map_err(|e| e.to_string())?.with_file_name("openivs");
    if !binary.exists() {
        return Err(format!("{} not found: build it first (cargo build --release -p openivs)", binary.display()));
    }
    let (port, rtmp_port, rtmps_port) = (free_port(), free_port(), free_port());
    let data_dir = std::env::temp_dir().join(format!("openivs-bench-{}-{port}", std::process::id()));
    let _ = std::fs::remove_dir_all(&data_dir);
    let child = Command::new(&binary)
        .args(["serve", "--http-addr", &format!("127.0.0.1:{port}"), "--data-dir"])
        .arg(&data_dir)
        .args(["--rtmp-addr", &format!("127.0.0.1:{rtmp_port}"), "--rtmps-addr", &format!("127.0.0.1:{rtmps_port}")])
        .args(if extra.contains(&"--srt-addr") { &[][..] } else { &["--srt-addr", "127.0.0.1:0"][..] })
        .args(["--log", "warn", "--quota-channels", "1000000"])
        // Every benchmark client comes from 127.0.0.1: lift the per-address caps that are there
        // to keep one real client from taking everything.
        .args(["--http-max-connections-per-address", "100000", "--playback-max-viewer-sessions-per-address", "100000"])
        // Transcoding only in the benchmark that measures it: elsewhere STANDARD channels would
        // each run an ffmpeg (and the peers transcode nothing).
        .args(if extra.contains(&"--ffmpeg") { &[][..] } else { &["--ffmpeg", "none"][..] })
        .args(extra)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("cannot start {}: {e}", binary.display()))?;
    let peer = Peer {
        name: "openivs",
        child,
        port,
        rtmp_port: Some(rtmp_port),
        rtmps_port: Some(rtmps_port),
        data_dir: Some(TempDir(data_dir)),
    };
    wait_for_port(port).await?;
    Ok(peer)
}

async fn start_moto(program: &str) -> Result<Peer, String> {
    let port = free_port();
    let child = Command::new(program)
        .args(["-H", "127.0.0.1", "-p", &port.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("cannot start {program} (pip install 'moto[server]'): {e}"))?;
    let peer = Peer { name: "moto", child, port, rtmp_port: None, rtmps_port: None, data_dir: None };
    wait_for_port(port).await?;
    Ok(peer)
}

/// Throughput and latency of one case.
struct Figures {
    requests: usize,
    errors: usize,
    per_second: f64,
    p50_ms: f64,
    p99_ms: f64,
}

/// Runs `concurrency` clients for `seconds`, each doing `step` in a loop on its own connection
/// (client i to `ports[i % ports.len()]`); `step` returns how many requests it made and whether
/// they all succeeded.
async fn measure<F, Fut>(concurrency: usize, seconds: f64, ports: &[u16], step: F) -> Figures
where
    F: Fn(Connection) -> Fut + Send + Sync + Clone + 'static,
    Fut: std::future::Future<Output = (Connection, usize, bool)> + Send,
{
    let deadline = Instant::now() + Duration::from_secs_f64(seconds);
    let started = Instant::now();
    let mut tasks = Vec::new();
    for client in 0..concurrency {
        let step = step.clone();
        let port = ports[client % ports.len()];
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            let mut requests = 0;
            let mut errors = 0;
            let mut connection = Connection::new(port);
            while Instant::now() < deadline {
                let began = Instant::now();
                let (returned, made, ok) = step(connection).await;
                connection = returned;
                latencies.push(began.elapsed());
                requests += made;
                if !ok {
                    errors += 1;
                }
            }
            (latencies, requests, errors)
        }));
    }
    let mut latencies = Vec::new();
    let (mut requests, mut errors) = (0, 0);
    for task in tasks {
        let (l, r, e) = task.await.expect("client task");
        latencies.extend(l);
        requests += r;
        errors += e;
    }
    let elapsed = started.elapsed().as_secs_f64();
    latencies.sort();
    let percentile = |p: f64| {
        latencies
            .get(((latencies.len() as f64 * p) as usize).min(latencies.len().saturating_sub(1)))
            .map_or(0.0, |d| d.as_secs_f64() * 1000.0)
    };
    Figures {
        requests,
        errors,
        per_second: latencies.len() as f64 / elapsed,
        p50_ms: percentile(0.50),
        p99_ms: percentile(0.99),
    }
}

async fn create_channel(client: &SignedClient, connection: &mut Connection) -> Result<String, String> {
    let (status, body) = client.call(connection, "CreateChannel", "{}").await?;
    if status != 200 {
        return Err(format!("CreateChannel answered {status}: {}", String::from_utf8_lossy(&body)));
    }
    let json: serde_json::Value = serde_json::from_slice(&body).map_err(|e| e.to_string())?;
    json["channel"]["arn"].as_str().map(str::to_owned).ok_or("no channel ARN".into())
}

async fn control_plane(args: Args) -> Result<(), String> {
    let openivs = start_openivs().await?;
    let moto = start_moto(&args.moto).await?;
    let peers = [&openivs, &moto];
    println!("# Control plane: openivs vs moto_server, {} s per case, 127.0.0.1, {} CPUs", args.seconds, num_cpus());
    println!();
    println!("| operation | clients | server | requests/s | p50 ms | p99 ms | errors | openivs/this server (req/s) |");
    println!("|---|---|---|---|---|---|---|---|");
    let client = Arc::new(SignedClient::new());
    // GetChannel's floor: what a bare axum handler answers with a fixed body on this machine.
    let floor = floor::start().await?;
    let mut channel_arns = Vec::new();
    for peer in peers {
        let mut connection = Connection::new(peer.port);
        channel_arns.push(create_channel(&client, &mut connection).await.map_err(|e| format!("{}: {e}", peer.name))?);
    }
    for concurrency in CONCURRENCY {
        let mut rates = Vec::new();
        for (peer, arn) in peers.iter().zip(&channel_arns) {
            let figures = get_channel_figures(&client, &[peer.port], arn, concurrency, args.seconds).await;
            rates.push(figures.per_second);
            print_row("GetChannel", concurrency, peer.name, &figures, (rates.len() == 2).then(|| rates[0] / rates[1]));
        }
        let figures = get_channel_figures(&client, &[floor.port], &channel_arns[0], concurrency, args.seconds).await;
        print_row(
            "GetChannel",
            concurrency,
            "axum floor (fixed body, no checks)",
            &figures,
            Some(rates[0] / figures.per_second),
        );
    }
    for concurrency in CONCURRENCY {
        let mut rates = Vec::new();
        for peer in peers {
            let figures = create_delete_figures(&client, &[peer.port], concurrency, args.seconds).await;
            rates.push(figures.per_second);
            print_row(
                "CreateChannel+DeleteChannel pair",
                concurrency,
                peer.name,
                &figures,
                (rates.len() == 2).then(|| rates[0] / rates[1]),
            );
        }
    }
    Ok(())
}

/// Signed GetChannel of `arn` in a loop by `concurrency` clients spread over `ports`.
async fn get_channel_figures(
    client: &Arc<SignedClient>,
    ports: &[u16],
    arn: &str,
    concurrency: usize,
    seconds: f64,
) -> Figures {
    let body = Arc::new(format!(r#"{{"arn":"{arn}"}}"#));
    let client = client.clone();
    measure(concurrency, seconds, ports, move |mut connection| {
        let client = client.clone();
        let body = body.clone();
        async move {
            let ok = matches!(client.call(&mut connection, "GetChannel", &body).await, Ok((200, _)));
            (connection, 1, ok)
        }
    })
    .await
}

/// CreateChannel+DeleteChannel pairs in a loop by `concurrency` clients spread over `ports`.
async fn create_delete_figures(client: &Arc<SignedClient>, ports: &[u16], concurrency: usize, seconds: f64) -> Figures {
    let client = client.clone();
    measure(concurrency, seconds, ports, move |mut connection| {
        let client = client.clone();
        async move {
            let Ok(arn) = create_channel(&client, &mut connection).await else { return (connection, 1, false) };
            let deleted = client.call(&mut connection, "DeleteChannel", &format!(r#"{{"arn":"{arn}"}}"#)).await;
            // IVS answers 204; moto answers 200. Either is a completed delete.
            (connection, 2, matches!(deleted, Ok((200..=299, _))))
        }
    })
    .await
}

fn print_row(operation: &str, concurrency: usize, server: &str, figures: &Figures, ratio: Option<f64>) {
    let ratio = ratio.map_or(String::new(), |r| format!("{r:.2}×"));
    println!(
        "| {operation} | {concurrency} | {server} | {:.0} | {:.2} | {:.2} | {} | {ratio} |",
        figures.per_second, figures.p50_ms, figures.p99_ms, figures.errors
    );
    let _ = figures.requests;
}

fn num_cpus() -> usize {
    std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1)
}

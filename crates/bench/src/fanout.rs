//! `openivs-bench fanout`: one live 720p stream served to N concurrent HLS clients (each
//! reloads its media playlist every half target duration and fetches every new segment, as
//! players do), openivs against nginx serving nginx-rtmp's HLS output of the same stream.
//! Reported over the measuring window: requests per second, Mbit/s delivered, server CPU (% of
//! one core) and RSS. With `--http 2` the clients speak HTTP/2 over TLS (one connection each,
//! as a browser keeps one per origin) to openivs's HTTPS listener and to nginx with `ssl http2`,
//! both on openivs's self-signed certificate.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::h2_client::{H2Client, H2Connection};
use crate::http_client::{Connection, SignedClient, get};
use crate::ingest::{input_file, process_tree, publisher, sample_cpu_ticks, sample_rss_kib, start_nginx};
use crate::{TempDir, wait_for_port};

pub struct FanoutArgs {
    pub clients: Vec<usize>,
    pub warmup: Duration,
    pub measure: Duration,
    pub out_dir: std::path::PathBuf,
    /// The clients speak HTTP/2 over TLS instead of HTTP/1.1 in the clear.
    pub http2: bool,
}

/// One viewer's connection, in the version the run measures.
enum ViewerConnection {
    Http1(Connection),
    Http2(H2Connection),
}

impl ViewerConnection {
    fn new(port: u16, tls: Option<&H2Client>) -> ViewerConnection {
        match tls {
            None => ViewerConnection::Http1(Connection::new(port)),
            Some(client) => ViewerConnection::Http2(H2Connection::new(client, port)),
        }
    }

    async fn get(&mut self, path: &str) -> Result<(u16, Vec<u8>), String> {
        match self {
            ViewerConnection::Http1(connection) => get(connection, path).await,
            ViewerConnection::Http2(connection) => connection.get(path).await,
        }
    }
}

#[derive(Default)]
struct Counters {
    requests: AtomicU64,
    bytes: AtomicU64,
    errors: AtomicU64,
}

/// A media playlist's segments: (URI, duration in seconds).
pub(crate) fn segments_of(playlist: &str) -> Vec<(String, f64)> {
    let mut out = Vec::new();
    let mut lines = playlist.lines();
    while let Some(line) = lines.next() {
        if let Some(info) = line.strip_prefix("#EXTINF:")
            && let Some(uri) = lines.find(|l| !l.starts_with('#'))
        {
            let duration = info.split(',').next().and_then(|d| d.trim().parse().ok()).unwrap_or(0.0);
            out.push((uri.to_owned(), duration));
        }
    }
    out
}

/// One client: reload, fetch what is new, until `until`.
async fn client(mut connection: ViewerConnection, media: String, until: Instant, counters: Arc<Counters>) {
    let base = media.rsplit_once('/').map_or(String::new(), |(dir, _)| dir.to_owned());
    let mut last: Option<String> = None;
    while Instant::now() < until {
        match connection.get(&media).await {
            Ok((200, body)) => {
                counters.requests.fetch_add(1, Ordering::Relaxed);
                counters.bytes.fetch_add(body.len() as u64, Ordering::Relaxed);
                let segments = segments_of(&String::from_utf8_lossy(&body));
                // Start at the live edge; then fetch each segment after the last one fetched.
                let start = match &last {
                    Some(uri) => segments.iter().position(|(s, _)| s == uri).map_or(0, |i| i + 1),
                    None => segments.len().saturating_sub(1),
                };
                for (uri, _) in &segments[start.min(segments.len())..] {
                    match connection.get(&format!("{base}/{uri}")).await {
                        Ok((200, segment)) => {
                            counters.requests.fetch_add(1, Ordering::Relaxed);
                            counters.bytes.fetch_add(segment.len() as u64, Ordering::Relaxed);
                        }
                        _ => {
                            counters.errors.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                    last = Some(uri.clone());
                }
            }
            _ => {
                counters.errors.fetch_add(1, Ordering::Relaxed);
            }
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

struct Figures {
    requests_per_second: f64,
    megabits_per_second: f64,
    cpu_percent: f64,
    rss_max_mib: f64,
    errors: u64,
}

async fn measure(
    (port, tls): (u16, Option<&H2Client>),
    media: &str,
    root: u32,
    clients: usize,
    args: &FanoutArgs,
) -> Figures {
    let counters = Arc::new(Counters::default());
    let until = Instant::now() + args.warmup + args.measure;
    let mut tasks = Vec::new();
    for i in 0..clients {
        let counters = counters.clone();
        let media = media.to_owned();
        let connection = ViewerConnection::new(port, tls);
        // Stagger the clients over the first second, as viewers arrive.
        let delay = Duration::from_millis((i as u64 * 1000) / clients.max(1) as u64);
        tasks.push(tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            client(connection, media, until, counters).await;
        }));
    }
    tokio::time::sleep(args.warmup).await;
    let pids = process_tree(root);
    let ticks_before = sample_cpu_ticks(&pids);
    let (requests_before, bytes_before) =
        (counters.requests.load(Ordering::Relaxed), counters.bytes.load(Ordering::Relaxed));
    let started = Instant::now();
    let mut rss_max = 0;
    while started.elapsed() < args.measure {
        rss_max = rss_max.max(sample_rss_kib(&pids));
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    let seconds = started.elapsed().as_secs_f64();
    let ticks = sample_cpu_ticks(&pids) - ticks_before;
    let requests = counters.requests.load(Ordering::Relaxed) - requests_before;
    let bytes = counters.bytes.load(Ordering::Relaxed) - bytes_before;
    for task in tasks {
        let _ = task.await;
    }
    Figures {
        requests_per_second: requests as f64 / seconds,
        megabits_per_second: bytes as f64 * 8.0 / seconds / 1e6,
        cpu_percent: ticks as f64 / crate::ingest::clock_ticks_per_second() / seconds * 100.0,
        rss_max_mib: rss_max as f64 / 1024.0,
        errors: counters.errors.load(Ordering::Relaxed),
    }
}

pub async fn run(args: FanoutArgs) -> Result<(), String> {
    let input = input_file(&args.out_dir)?;
    let openivs = if args.http2 {
        crate::start_openivs_with(&["--http-tls", "true"]).await?
    } else {
        crate::start_openivs().await?
    };
    let rtmp_port = openivs.rtmp_port.ok_or("no RTMP port")?;
    // Over HTTP/2 both servers present the certificate openivs generated for itself.
    let certificate = openivs.data_dir.as_ref().map(|dir| openivs::ingest::tls::generated_paths(&dir.0));
    let tls = match (&certificate, args.http2) {
        (Some((certificate, _)), true) => {
            // (Written while the server starts, which may be after its port opens.)
            let written_by = Instant::now() + Duration::from_secs(10);
            while !certificate.exists() && Instant::now() < written_by {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Some(H2Client::trusting(certificate)?)
        }
        _ => None,
    };
    let channel = r#"{"insecureIngest":true,"latencyMode":"NORMAL"}"#;
    let (status, out) = match &tls {
        None => SignedClient::new().call(&mut Connection::new(openivs.port), "CreateChannel", channel).await?,
        Some(client) => {
            let mut api = H2Connection::new(client, openivs.port);
            let mut headers = SignedClient::new().signature(&api.authority(), "/CreateChannel", channel);
            headers.push(("content-type".into(), "application/json".into()));
            api.post("/CreateChannel", &headers, channel).await?
        }
    };
    if status != 200 {
        return Err(format!("CreateChannel answered {status}: {}", String::from_utf8_lossy(&out)));
    }
    let json: serde_json::Value = serde_json::from_slice(&out).map_err(|e| e.to_string())?;
    let key = json["streamKey"]["value"].as_str().unwrap_or("").to_owned();
    let playback_url = json["channel"]["playbackUrl"].as_str().unwrap_or("").to_owned();
    let nginx_dir = TempDir(std::env::temp_dir().join(format!("openivs-bench-nginx-fanout-{}", std::process::id())));
    let nginx_https = certificate.as_ref().filter(|_| args.http2).map(|(cert, key)| (cert.as_path(), key.as_path()));
    let (nginx, nginx_rtmp, nginx_http) = start_nginx(&nginx_dir.0, nginx_https)?;
    wait_for_port(nginx_rtmp).await?;
    let mut publishers = vec![
        publisher(&format!("rtmp://127.0.0.1:{rtmp_port}/app/{key}"), &input)?,
        publisher(&format!("rtmp://127.0.0.1:{nginx_rtmp}/hls/fanout"), &input)?,
    ];
    tokio::time::sleep(Duration::from_secs(6)).await;
    // One viewer session for openivs's clients (sessions are per viewer in real life; opening a
    // thousand adds nothing to what is measured here).
    let playback_path = crate::playback_path(&playback_url);
    let (_, body) = ViewerConnection::new(openivs.port, tls.as_ref()).get(&playback_path).await?;
    let media =
        String::from_utf8_lossy(&body).lines().find(|l| l.starts_with('/')).map(str::to_owned).ok_or("no variant")?;

    println!(
        "# Fan-out: one 720p30 ~3 Mbit/s stream to N HLS clients over {} (reload every 0.5 s, fetch each new segment), {} s measured, 127.0.0.1, {} CPUs",
        if args.http2 { "HTTP/2 and TLS" } else { "HTTP/1.1" },
        args.measure.as_secs(),
        crate::num_cpus()
    );
    println!();
    println!(
        "| clients | server | requests/s | Mbit/s delivered | server CPU % of one core | RSS max MiB | errors | openivs/nginx Mbit/s | openivs/nginx CPU |"
    );
    println!("|---|---|---|---|---|---|---|---|---|");
    for &clients in &args.clients {
        let nginx_figures =
            measure((nginx_http, tls.as_ref()), "/hls/fanout.m3u8", nginx.child.id(), clients, &args).await;
        let openivs_figures = measure((openivs.port, tls.as_ref()), &media, openivs.child.id(), clients, &args).await;
        for (name, f, ratio) in [
            ("nginx (nginx-rtmp HLS files)", &nginx_figures, None),
            ("openivs", &openivs_figures, Some(&nginx_figures)),
        ] {
            let ratios = ratio.map_or(" | ".to_owned(), |n| {
                format!(
                    "{:.2}× | {:.2}×",
                    f.megabits_per_second / n.megabits_per_second.max(0.001),
                    f.cpu_percent / n.cpu_percent.max(0.01)
                )
            });
            println!(
                "| {clients} | {name} | {:.0} | {:.0} | {:.1} | {:.1} | {} | {ratios} |",
                f.requests_per_second, f.megabits_per_second, f.cpu_percent, f.rss_max_mib, f.errors
            );
        }
    }
    for publisher in &mut publishers {
        let _ = publisher.kill();
        let _ = publisher.wait();
    }
    drop(nginx);
    Ok(())
}

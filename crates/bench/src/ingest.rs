//! `openivs-bench ingest`: server CPU and memory while receiving N concurrent 720p30 ~3 Mbit/s
//! RTMP publishers, openivs against nginx-rtmp (Debian `libnginx-mod-rtmp`), both on 127.0.0.1.
//!
//! One pre-encoded file is sent by every publisher with `ffmpeg -re -stream_loop -1 -c copy`, so
//! the encoder does not dominate the machine. Each case: start N publishers, wait for them to
//! settle, then measure the server's CPU time (from /proc, as % of one core) and resident memory
//! (sampled every second) over the measuring window. Both servers receive plain RTMP (nginx-rtmp
//! has no RTMPS); openivs's RTMPS figures are reported on their own rows. openivs packages every
//! live stream into HLS (in memory): its CPU is compared with nginx-rtmp's both without HLS and
//! writing HLS (1 s fragments, to disk), and its memory per stream with the media its playback
//! window must hold (the floor when segments are served from memory).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::http_client::{Connection, SignedClient};
use crate::{Peer, TempDir, free_port, wait_for_port};

pub struct IngestArgs {
    pub streams: Vec<usize>,
    pub warmup: Duration,
    pub measure: Duration,
    pub out_dir: PathBuf,
}

/// Encodes the benchmark's input once: 10 s of 720p30 test pattern at ~3 Mbit/s with AAC.
pub(crate) fn input_file(out_dir: &Path) -> Result<PathBuf, String> {
    std::fs::create_dir_all(out_dir).map_err(|e| e.to_string())?;
    let path = out_dir.join("bench-720p30-3mbps.flv");
    if path.exists() {
        return Ok(path);
    }
    let status = Command::new("ffmpeg")
        .args(["-hide_banner", "-loglevel", "error", "-y", "-f", "lavfi", "-i", "testsrc2=size=1280x720:rate=30"])
        .args(["-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000", "-t", "10"])
        .args(["-c:v", "libx264", "-preset", "veryfast", "-g", "30", "-keyint_min", "30", "-sc_threshold", "0"])
        .args(["-b:v", "2800k", "-maxrate", "2800k", "-bufsize", "5600k", "-pix_fmt", "yuv420p"])
        .args(["-c:a", "aac", "-b:a", "128k", "-ar", "48000", "-f", "flv"])
        .arg(&path)
        .status()
        .map_err(|e| format!("ffmpeg is needed (apt-get install ffmpeg): {e}"))?;
    if !status.success() {
        return Err("ffmpeg could not encode the benchmark input".into());
    }
    Ok(path)
}

pub(crate) fn clock_ticks_per_second() -> f64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
        .unwrap_or(100.0)
}

/// CPU ticks of a set of processes.
pub(crate) fn sample_cpu_ticks(pids: &[u32]) -> u64 {
    pids.iter().map(|p| cpu_ticks(*p)).sum()
}

/// Resident memory of a set of processes.
pub(crate) fn sample_rss_kib(pids: &[u32]) -> u64 {
    pids.iter().map(|p| rss_kib(*p)).sum()
}

/// utime + stime of a process, in clock ticks.
fn cpu_ticks(pid: u32) -> u64 {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else { return 0 };
    let fields: Vec<&str> =
        stat.rsplit_once(')').map(|(_, rest)| rest.split_whitespace().collect()).unwrap_or_default();
    fields.get(11).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0)
        + fields.get(12).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0)
}

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines().find(|l| l.starts_with("VmRSS:")).and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

/// The processes whose CPU and memory count for a server (nginx: master and workers; openivs:
/// itself and its transcoders), as they are now: its children, whichever of its threads
/// started them.
pub(crate) fn process_tree(root: u32) -> Vec<u32> {
    let mut pids = vec![root];
    let Ok(threads) = std::fs::read_dir(format!("/proc/{root}/task")) else { return pids };
    for thread in threads.flatten() {
        if let Ok(children) = std::fs::read_to_string(thread.path().join("children")) {
            pids.extend(children.split_whitespace().filter_map(|p| p.parse::<u32>().ok()));
        }
    }
    pids
}

pub(crate) struct Publishers(Vec<Child>);

impl Drop for Publishers {
    fn drop(&mut self) {
        for child in &mut self.0 {
            let _ = child.kill();
        }
        for child in &mut self.0 {
            let _ = child.wait();
        }
    }
}

/// One `ffmpeg -re -stream_loop -1 -c copy` publisher of `input` to `url`: FLV over RTMP(S),
/// MPEG-TS over SRT.
pub(crate) fn publisher(url: &str, input: &Path) -> Result<Child, String> {
    let format = if url.starts_with("srt://") { "mpegts" } else { "flv" };
    Command::new("ffmpeg")
        .args(["-hide_banner", "-loglevel", "error", "-nostdin", "-re", "-stream_loop", "-1", "-i"])
        .arg(input)
        .args(["-c", "copy", "-f", format, url])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("cannot start ffmpeg (apt-get install ffmpeg): {e}"))
}

pub(crate) fn publish(urls: &[String], input: &Path) -> Result<Publishers, String> {
    urls.iter().map(|url| publisher(url, input)).collect::<Result<Vec<_>, _>>().map(Publishers)
}

pub struct Sample {
    pub cpu_percent: f64,
    pub rss_max_kib: u64,
    pub rss_idle_kib: u64,
    pub publishers_alive: usize,
}

impl Sample {
    pub fn rss_max_mib(&self) -> f64 {
        self.rss_max_kib as f64 / 1024.0
    }

    /// What `streams` streams added to the resident set, per stream.
    pub fn rss_per_stream_mib(&self, streams: usize) -> f64 {
        self.rss_max_kib.saturating_sub(self.rss_idle_kib) as f64 / 1024.0 / streams.max(1) as f64
    }
}

/// Starts a publisher per URL, waits `warmup`, then measures each of `roots` (a server and its
/// children) over `window`: one sample per root, in order.
pub(crate) async fn measure(
    roots: &[u32],
    urls: &[String],
    input: &Path,
    warmup: Duration,
    window: Duration,
) -> Result<Vec<Sample>, String> {
    let trees: Vec<Vec<u32>> = roots.iter().map(|root| process_tree(*root)).collect();
    let rss_idle: Vec<u64> = trees.iter().map(|pids| sample_rss_kib(pids)).collect();
    let mut publishers = publish(urls, input)?;
    tokio::time::sleep(warmup).await;
    let trees: Vec<Vec<u32>> = roots.iter().map(|root| process_tree(*root)).collect();
    let ticks_before: Vec<u64> = trees.iter().map(|pids| sample_cpu_ticks(pids)).collect();
    let started = Instant::now();
    let mut rss_max = vec![0; roots.len()];
    while started.elapsed() < window {
        for (max, pids) in rss_max.iter_mut().zip(&trees) {
            *max = (*max).max(sample_rss_kib(pids));
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    let seconds = started.elapsed().as_secs_f64();
    let publishers_alive =
        publishers.0.iter_mut().map(|c| c.try_wait()).filter(|status| matches!(status, Ok(None))).count();
    let samples = trees
        .iter()
        .enumerate()
        .map(|(at, pids)| Sample {
            cpu_percent: (sample_cpu_ticks(pids) - ticks_before[at]) as f64 / clock_ticks_per_second() / seconds
                * 100.0,
            rss_max_kib: rss_max[at],
            rss_idle_kib: rss_idle[at],
            publishers_alive,
        })
        .collect();
    drop(publishers);
    // Let the server notice the publishers left before the next case.
    tokio::time::sleep(Duration::from_secs(2)).await;
    Ok(samples)
}

/// nginx with the RTMP module: application `app` (live only), `hls` (live, writing HLS with
/// 1 s fragments and a 6 s playlist, as in the research peer setup) and `rec` (live, recording
/// every stream to an FLV file), and an HTTP server for the HLS files: in the clear, or with
/// `https` (certificate and key, PEM) over TLS with HTTP/2 and HTTP/1.1 by ALPN. Returns the
/// process, the RTMP port and the HTTP port.
pub(crate) fn start_nginx(work: &Path, https: Option<(&Path, &Path)>) -> Result<(Peer, u16, u16), String> {
    let module = Path::new("/usr/lib/nginx/modules/ngx_rtmp_module.so");
    if !module.exists() {
        return Err("nginx-rtmp is needed: apt-get install nginx-light libnginx-mod-rtmp".into());
    }
    let (port, http_port) = (free_port(), free_port());
    for sub in ["logs", "hls", "rec"] {
        std::fs::create_dir_all(work.join(sub)).map_err(|e| e.to_string())?;
    }
    // Started as root, nginx's worker runs as `nobody`: it must be able to write its files.
    for sub in ["hls", "rec"] {
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::set_permissions(work.join(sub), std::fs::Permissions::from_mode(0o777)).map_err(|e| e.to_string())?;
    }
    let dir = work.display();
    let listen = match https {
        None => format!("listen 127.0.0.1:{http_port};"),
        Some((certificate, key)) => format!(
            "listen 127.0.0.1:{http_port} ssl http2; ssl_certificate {}; ssl_certificate_key {};",
            certificate.display(),
            key.display()
        ),
    };
    // Room for the fan-out benchmark's thousands of clients (nginx's default is 1024).
    let config = format!(
        "load_module {module};\nworker_processes 1;\ndaemon off;\npid {dir}/nginx.pid;\nerror_log {dir}/logs/error.log warn;\n\
         worker_rlimit_nofile 20000;\nevents {{ worker_connections 16384; }}\n\
         rtmp {{ server {{ listen 127.0.0.1:{port}; chunk_size 4096; application app {{ live on; record off; }} \
         application hls {{ live on; record off; hls on; hls_path {dir}/hls; hls_fragment 1s; hls_playlist_length 6s; }} \
         application rec {{ live on; record all; record_path {dir}/rec; record_unique on; }} }} }}\n\
         http {{ access_log off; client_body_temp_path {dir}/body; proxy_temp_path {dir}/proxy; fastcgi_temp_path {dir}/fcgi; \
         uwsgi_temp_path {dir}/uwsgi; scgi_temp_path {dir}/scgi; \
         server {{ {listen} location /hls/ {{ types {{ application/vnd.apple.mpegurl m3u8; video/mp2t ts; }} \
         root {dir}; add_header Cache-Control no-cache; }} }} }}\n",
        module = module.display(),
    );
    let config_path = work.join("nginx.conf");
    std::fs::write(&config_path, config).map_err(|e| e.to_string())?;
    let child = Command::new("nginx")
        .args(["-c"])
        .arg(&config_path)
        .args(["-p"])
        .arg(work)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("cannot start nginx: {e}"))?;
    Ok((
        Peer { name: "nginx-rtmp", child, port, rtmp_port: Some(port), rtmps_port: None, data_dir: None },
        port,
        http_port,
    ))
}

/// `count` channels made with CreateChannel `body` (JSON): their ARNs and stream keys.
pub(crate) async fn openivs_channels(
    client: &SignedClient,
    port: u16,
    count: usize,
    body: &str,
) -> Result<Vec<(String, String)>, String> {
    let mut connection = Connection::new(port);
    let mut channels = Vec::new();
    for _ in 0..count {
        let (status, answer) = client.call(&mut connection, "CreateChannel", body).await?;
        if status != 200 {
            return Err(format!("CreateChannel answered {status}: {}", String::from_utf8_lossy(&answer)));
        }
        let json: serde_json::Value = serde_json::from_slice(&answer).map_err(|e| e.to_string())?;
        let arn = json["channel"]["arn"].as_str().ok_or("no channel ARN")?.to_owned();
        channels.push((arn, json["streamKey"]["value"].as_str().ok_or("no stream key")?.to_owned()));
    }
    Ok(channels)
}

/// The media a stream's playback window must hold, in bytes: RFC 8216 6.2.2 keeps a segment
/// available for as long again as the playlist that listed it, so the listed window and as much
/// again of retired segments, at the input's own rate (the file's bytes over its 10 s).
fn window_floor_bytes(input: &Path) -> Result<f64, String> {
    let bytes = std::fs::metadata(input).map_err(|e| e.to_string())?.len() as f64;
    Ok(bytes / 10.0 * 2.0 * openivs::playback::packager::WINDOW.as_secs_f64())
}

pub async fn run(args: IngestArgs) -> Result<(), String> {
    let input = input_file(&args.out_dir)?;
    let floor_mib = window_floor_bytes(&input)? / 1024.0 / 1024.0;
    let nginx_dir = TempDir(std::env::temp_dir().join(format!("openivs-bench-nginx-{}", std::process::id())));
    let (nginx, nginx_port, _) = start_nginx(&nginx_dir.0, None)?;
    wait_for_port(nginx_port).await?;
    let nginx_root = nginx.child.id();

    println!(
        "# Ingest: N concurrent 720p30 ~3 Mbit/s RTMP publishers (ffmpeg -re -c copy), {} s warm-up, {} s measured, 127.0.0.1, {} CPUs",
        args.warmup.as_secs(),
        args.measure.as_secs(),
        crate::num_cpus()
    );
    println!(
        "# Each openivs case runs on a fresh openivs. Window floor: the media a stream's playback window holds \
         ({} s listed + as long again retired, RFC 8216 6.2.2) = {floor_mib:.2} MiB per stream; full {} s after a stream starts.",
        openivs::playback::packager::WINDOW.as_secs(),
        2 * openivs::playback::packager::WINDOW.as_secs()
    );
    println!();
    println!(
        "| publishers | server | CPU % of one core | CPU % per stream | RSS max MiB | RSS idle MiB | RSS per stream MiB | RSS per stream / window floor | publishers alive | openivs/nginx CPU | openivs/nginx+HLS CPU |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|");
    for &count in &args.streams {
        let nginx_urls = |application: &str| -> Vec<String> {
            (0..count).map(|i| format!("rtmp://127.0.0.1:{nginx_port}/{application}/bench{count}x{i}")).collect()
        };
        let plain = measure(&[nginx_root], &nginx_urls("app"), &input, args.warmup, args.measure).await?.remove(0);
        print_row(count, "nginx-rtmp", &plain, None, None);
        let hls = measure(&[nginx_root], &nginx_urls("hls"), &input, args.warmup, args.measure).await?.remove(0);
        print_row(count, "nginx-rtmp + HLS", &hls, None, None);
        for secure in [false, true] {
            // A fresh server per case: streams that just ended linger (their playlists stay a
            // while for their viewers) and would blur the next case's memory.
            let openivs = crate::start_openivs().await?;
            let body = r#"{"insecureIngest":true}"#;
            let channels = openivs_channels(&SignedClient::new(), openivs.port, count, body).await?;
            let (scheme, port) = if secure {
                ("rtmps", openivs.rtmps_port.ok_or("openivs has no RTMPS port")?)
            } else {
                ("rtmp", openivs.rtmp_port.ok_or("openivs has no RTMP port")?)
            };
            let urls: Vec<String> =
                channels.iter().map(|(_, key)| format!("{scheme}://127.0.0.1:{port}/app/{key}")).collect();
            let sample = measure(&[openivs.child.id()], &urls, &input, args.warmup, args.measure).await?.remove(0);
            let name = if secure { "openivs (RTMPS)" } else { "openivs (RTMP)" };
            // openivs always packages HLS: both nginx-rtmp figures are its references.
            print_row(count, name, &sample, Some((&plain, &hls)), Some(floor_mib));
        }
    }
    let _ = Command::new("kill").args(["-QUIT", &nginx_root.to_string()]).status();
    Ok(())
}

/// `value` as a multiple of `reference`, e.g. "0.62×".
pub(crate) fn times(value: f64, reference: f64) -> String {
    format!("{:.2}×", value / reference.max(0.01))
}

fn print_row(count: usize, name: &str, sample: &Sample, peers: Option<(&Sample, &Sample)>, floor_mib: Option<f64>) {
    let per_stream_rss = sample.rss_per_stream_mib(count);
    let against_floor = floor_mib.map(|floor| format!("{:.2}×", per_stream_rss / floor)).unwrap_or_default();
    let ratios = match peers {
        Some((plain, hls)) => {
            format!("{} | {}", times(sample.cpu_percent, plain.cpu_percent), times(sample.cpu_percent, hls.cpu_percent))
        }
        None => " | ".to_owned(),
    };
    let (cpu, alive) = (sample.cpu_percent, sample.publishers_alive);
    let idle_mib = sample.rss_idle_kib as f64 / 1024.0;
    println!(
        "| {count} | {name} | {cpu:.2} | {:.3} | {:.1} | {idle_mib:.1} | {per_stream_rss:.2} | {against_floor} | {alive}/{count} | {ratios} |",
        cpu / count as f64,
        sample.rss_max_mib(),
    );
}

//! `openivs-bench srt`: server CPU and memory per SRT publisher, against the same stream sent
//! over RTMP to openivs, and against `srt-live-transmit` (Debian `srt-tools`, libsrt's own relay:
//! SRT reception, decryption and retransmission with nothing downstream), all on 127.0.0.1.
//!
//! Every publisher sends the ingest benchmark's input (720p30 ~3 Mbit/s) with `ffmpeg -re
//! -stream_loop -1 -c copy`: FLV over RTMP, MPEG-TS over SRT, encrypted with the channel's
//! passphrase (AES-128, ffmpeg's default key length) in both SRT cases. openivs also demuxes the
//! MPEG-TS and packages every stream into HLS; `srt-live-transmit` (one process per stream, as it
//! takes one caller) writes what it receives to /dev/null. MediaMTX, the other SRT server one
//! would compare with, is not installable from the registries this project may use.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::free_port;
use crate::http_client::{Connection, SignedClient};
use crate::ingest::{Sample, input_file, measure};

pub struct SrtArgs {
    pub streams: Vec<usize>,
    pub warmup: Duration,
    pub measure: Duration,
    pub out_dir: PathBuf,
}

/// A channel made for the benchmark: its stream key and SRT passphrase.
struct SrtChannel {
    stream_key: String,
    passphrase: String,
}

async fn channels(port: u16, count: usize) -> Result<Vec<SrtChannel>, String> {
    let client = SignedClient::new();
    let mut connection = Connection::new(port);
    let mut channels = Vec::new();
    for _ in 0..count {
        let (status, answer) = client.call(&mut connection, "CreateChannel", r#"{"insecureIngest":true}"#).await?;
        if status != 200 {
            return Err(format!("CreateChannel answered {status}: {}", String::from_utf8_lossy(&answer)));
        }
        let json: serde_json::Value = serde_json::from_slice(&answer).map_err(|e| e.to_string())?;
        channels.push(SrtChannel {
            stream_key: json["streamKey"]["value"].as_str().ok_or("no stream key")?.to_owned(),
            passphrase: json["channel"]["srt"]["passphrase"].as_str().ok_or("no SRT passphrase")?.to_owned(),
        });
    }
    Ok(channels)
}

/// `srt-live-transmit` listeners, one per stream, killed on drop.
struct Relays(Vec<Child>);

impl Drop for Relays {
    fn drop(&mut self) {
        for child in &mut self.0 {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn relay(port: u16, passphrase: &str) -> Result<Child, String> {
    Command::new("srt-live-transmit")
        .args(["-q", &format!("srt://127.0.0.1:{port}?mode=listener&passphrase={passphrase}"), "file://con"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("srt-live-transmit is needed (apt-get install srt-tools): {e}"))
}

/// The CPU and memory of several processes as one.
fn summed(samples: Vec<Sample>) -> Sample {
    let publishers_alive = samples.first().map_or(0, |s| s.publishers_alive);
    Sample {
        cpu_percent: samples.iter().map(|s| s.cpu_percent).sum(),
        rss_max_kib: samples.iter().map(|s| s.rss_max_kib).sum(),
        rss_idle_kib: samples.iter().map(|s| s.rss_idle_kib).sum(),
        publishers_alive,
    }
}

pub async fn run(args: SrtArgs) -> Result<(), String> {
    let input = input_file(&args.out_dir)?;
    let most = args.streams.iter().copied().max().unwrap_or(1);
    let srt_port = free_port();
    let openivs = crate::start_openivs_with(&["--srt-addr", &format!("127.0.0.1:{srt_port}")]).await?;
    let rtmp_port = openivs.rtmp_port.ok_or("openivs has no RTMP port")?;
    let made = channels(openivs.port, most).await?;
    println!(
        "# SRT ingest: N concurrent 720p30 ~3 Mbit/s publishers (ffmpeg -re -c copy), {} s warm-up, {} s measured, \
         127.0.0.1, {} CPUs",
        args.warmup.as_secs(),
        args.measure.as_secs(),
        crate::num_cpus()
    );
    println!();
    println!(
        "| publishers | server | CPU % of one core | CPU % per stream | RSS max MiB | publishers alive | \
         CPU vs openivs RTMP | CPU vs srt-live-transmit |"
    );
    println!("|---|---|---|---|---|---|---|---|");
    for &count in &args.streams {
        let channels = &made[..count];
        let rtmp: Vec<String> =
            channels.iter().map(|c| format!("rtmp://127.0.0.1:{rtmp_port}/app/{}", c.stream_key)).collect();
        let srt: Vec<String> = channels
            .iter()
            .map(|c| format!("srt://127.0.0.1:{srt_port}?streamid={}&passphrase={}", c.stream_key, c.passphrase))
            .collect();
        let root = openivs.child.id();
        let over_rtmp = measure(&[root], &rtmp, &input, args.warmup, args.measure).await?.remove(0);
        let over_srt = measure(&[root], &srt, &input, args.warmup, args.measure).await?.remove(0);
        let ports: Vec<u16> = (0..count).map(|_| free_port()).collect();
        let passphrase = &channels[0].passphrase;
        let relays = Relays(ports.iter().map(|port| relay(*port, passphrase)).collect::<Result<_, _>>()?);
        let relay_urls: Vec<String> =
            ports.iter().map(|port| format!("srt://127.0.0.1:{port}?passphrase={passphrase}")).collect();
        // (A UDP listener cannot be probed by connecting; give the relays a moment.)
        tokio::time::sleep(Duration::from_millis(500)).await;
        let pids: Vec<u32> = relays.0.iter().map(Child::id).collect();
        let relayed = summed(measure(&pids, &relay_urls, &input, args.warmup, args.measure).await?);
        drop(relays);
        for (name, sample) in
            [("openivs (RTMP)", &over_rtmp), ("openivs (SRT)", &over_srt), ("srt-live-transmit", &relayed)]
        {
            let ratio = |base: &Sample| format!("{:.2}×", sample.cpu_percent / base.cpu_percent.max(0.01));
            println!(
                "| {count} | {name} | {:.2} | {:.3} | {:.1} | {}/{count} | {} | {} |",
                sample.cpu_percent,
                sample.cpu_percent / count as f64,
                sample.rss_max_kib as f64 / 1024.0,
                sample.publishers_alive,
                ratio(&over_rtmp),
                ratio(&relayed),
            );
        }
    }
    Ok(())
}

//! `openivs-bench cluster`: three openivs nodes (A, B, C) on one PostgreSQL, as the README's
//! "Running a cluster" runs them. Playback: one LOW 720p30 stream ingested on A, and N LL-HLS
//! viewers (blocking reload for the next part, then the part: [`follow_parts`]) first all on A,
//! then spread over B and C, which pull the stream from A. For each, the viewers' ingest-to-
//! playable latency (p50/p95), how many fetches A answered per part per pulling node (B and C
//! coalesce their viewers' identical requests: the aim is 1), and each node's CPU and RSS. Then
//! the control plane: signed GetChannel and CreateChannel+DeleteChannel through the cluster
//! (clients spread over the three nodes, on PostgreSQL) next to one node on its SQLite file.
//!
//! Viewers, publisher and nodes share this machine, as in the other benchmarks: the two playback
//! rows carry the same load, so their difference is what pulling through another node costs.

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::http_client::{Connection, SignedClient, get};
use crate::ingest::{clock_ticks_per_second, input_file, process_tree, publisher, sample_cpu_ticks, sample_rss_kib};
use crate::playback::{follow_parts, percentile};
use crate::{Peer, print_row};

pub struct ClusterArgs {
    /// A PostgreSQL server's URL without a database: the nodes get a fresh database there.
    pub database_url: String,
    pub viewers: usize,
    /// Length of each playback phase.
    pub seconds: Duration,
    /// Of those, the first ones are not counted in CPU and RSS (viewers arriving).
    pub warmup: Duration,
    /// Length of each control-plane case.
    pub api_seconds: f64,
    pub out_dir: std::path::PathBuf,
}

/// What one playback phase measured.
struct Phase {
    latencies: Vec<f64>,
    /// Fetches A answered for the other nodes per part per pulling node (None: no pulls).
    fetches_per_part: Option<f64>,
    /// Per node: CPU (% of one core) and RSS max (MiB).
    cpu_percent: Vec<f64>,
    rss_mib: Vec<f64>,
}

/// A counter of a node's `/metrics` (0 when absent).
async fn counter(port: u16, sample: &str) -> f64 {
    let Ok((200, body)) = get(&mut Connection::new(port), "/metrics").await else { return 0.0 };
    String::from_utf8_lossy(&body)
        .lines()
        .find_map(|line| line.strip_prefix(sample).and_then(|rest| rest.trim().parse().ok()))
        .unwrap_or(0.0)
}

const ORIGIN_PARTS: &str = "openivs_cluster_origin_requests_total{kind=\"part\"}";

/// The media playlist's path a viewer gets from the multivariant playlist at `port`, once the
/// stream plays there.
pub(crate) async fn media_path(port: u16, playback_path: &str) -> Result<String, String> {
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut http = Connection::new(port);
    while Instant::now() < deadline {
        if let Ok((200, body)) = get(&mut http, playback_path).await
            && let Some(media) = String::from_utf8_lossy(&body).lines().find(|l| l.starts_with('/'))
        {
            return Ok(media.to_owned());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Err(format!("the node on port {port} never served the multivariant playlist"))
}

/// Publishes a new stream to A, puts the viewers on `viewer_ports` (viewer i on
/// `viewer_ports[i % len]`) and measures.
async fn playback_phase(
    nodes: &[Peer],
    viewer_ports: &[u16],
    stream_key: &str,
    playback_path: &str,
    args: &ClusterArgs,
) -> Result<Phase, String> {
    let input = input_file(&args.out_dir)?;
    let origin = &nodes[0];
    let t0 = Instant::now();
    let rtmp_port = origin.rtmp_port.ok_or("no RTMP port")?;
    let mut broadcaster = publisher(&format!("rtmp://127.0.0.1:{rtmp_port}/app/{stream_key}"), &input)?;
    let mut media = Vec::new();
    for &port in viewer_ports {
        media.push(media_path(port, playback_path).await?);
    }
    let origin_parts_before = counter(origin.port, ORIGIN_PARTS).await;
    let until = t0 + args.seconds;
    let mut viewers = Vec::new();
    for viewer in 0..args.viewers {
        let (port, media) = (viewer_ports[viewer % viewer_ports.len()], media[viewer % viewer_ports.len()].clone());
        // Viewers arrive over the first second.
        let delay = Duration::from_millis((viewer as u64 * 1000) / args.viewers.max(1) as u64);
        viewers.push(tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            (port, follow_parts(port, &media, t0, until).await)
        }));
    }
    tokio::time::sleep((t0 + args.warmup).saturating_duration_since(Instant::now())).await;
    let trees: Vec<Vec<u32>> = nodes.iter().map(|node| process_tree(node.child.id())).collect();
    let ticks_before: Vec<u64> = trees.iter().map(|pids| sample_cpu_ticks(pids)).collect();
    let measuring_from = Instant::now();
    let mut rss_max = vec![0u64; nodes.len()];
    while Instant::now() < until {
        for (max, pids) in rss_max.iter_mut().zip(&trees) {
            *max = (*max).max(sample_rss_kib(pids));
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    let seconds = measuring_from.elapsed().as_secs_f64();
    let cpu_percent = trees
        .iter()
        .zip(&ticks_before)
        .map(|(pids, before)| (sample_cpu_ticks(pids) - before) as f64 / clock_ticks_per_second() / seconds * 100.0)
        .collect();
    let mut latencies = Vec::new();
    // The parts each node served: as many as its most complete viewer fetched.
    let mut parts_by_port = std::collections::HashMap::new();
    for viewer in viewers {
        let (port, (frames, parts)) = viewer.await.map_err(|e| e.to_string())?;
        latencies.extend(frames);
        let most = parts_by_port.entry(port).or_insert(0usize);
        *most = (*most).max(parts);
    }
    let origin_parts = counter(origin.port, ORIGIN_PARTS).await - origin_parts_before;
    let _ = broadcaster.kill();
    let _ = broadcaster.wait();
    let pulled: usize = parts_by_port.iter().filter(|(port, _)| **port != origin.port).map(|(_, parts)| parts).sum();
    latencies.sort_by(f64::total_cmp);
    Ok(Phase {
        latencies,
        fetches_per_part: (pulled > 0).then(|| origin_parts / pulled as f64),
        cpu_percent,
        rss_mib: rss_max.iter().map(|kib| *kib as f64 / 1024.0).collect(),
    })
}

/// Waits until the channel's stream has ended (GetStream answers 404), so it can go live again.
async fn wait_offline(client: &SignedClient, port: u16, channel_arn: &str) -> Result<(), String> {
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut api = Connection::new(port);
    let body = format!(r#"{{"channelArn":"{channel_arn}"}}"#);
    while Instant::now() < deadline {
        if let Ok((404, _)) = client.call(&mut api, "GetStream", &body).await {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    Err("the stream did not end within 30 s of its publisher's".into())
}

pub async fn run(args: ClusterArgs) -> Result<(), String> {
    let database = format!("{}/openivs_bench_{}", args.database_url.trim_end_matches('/'), std::process::id());
    let mut nodes = Vec::new();
    for node_id in ["a", "b", "c"] {
        nodes.push(crate::start_openivs_with(&["--database-url", &database, "--node-id", node_id]).await?);
    }
    let client = Arc::new(SignedClient::new());
    let mut api = Connection::new(nodes[0].port);
    let (status, out) =
        client.call(&mut api, "CreateChannel", r#"{"insecureIngest":true,"latencyMode":"LOW"}"#).await?;
    if status != 200 {
        return Err(format!("CreateChannel answered {status}: {}", String::from_utf8_lossy(&out)));
    }
    let created: serde_json::Value = serde_json::from_slice(&out).map_err(|e| e.to_string())?;
    let channel_arn = created["channel"]["arn"].as_str().unwrap_or("").to_owned();
    let stream_key = created["streamKey"]["value"].as_str().unwrap_or("").to_owned();
    let playback_url = created["channel"]["playbackUrl"].as_str().unwrap_or("");
    let playback_path = crate::playback_path(playback_url);
    if playback_path.is_empty() {
        return Err("no playback URL".into());
    }

    println!(
        "# Cluster playback: one LOW 720p30 stream ingested on node A, {} LL-HLS viewers (blocking reload, every part), {} s per row ({} s counted for CPU/RSS), 3 nodes on PostgreSQL, 127.0.0.1, {} CPUs",
        args.viewers,
        args.seconds.as_secs(),
        (args.seconds - args.warmup).as_secs(),
        crate::num_cpus()
    );
    println!();
    println!(
        "| viewers on | frames | p50 ms | p95 ms | p95 − p95 on A ms | fetches from A per part per node | CPU % A / B / C | RSS MiB A / B / C |"
    );
    println!("|---|---|---|---|---|---|---|---|");
    let on_a = playback_phase(&nodes, &[nodes[0].port], &stream_key, &playback_path, &args).await?;
    wait_offline(&client, nodes[0].port, &channel_arn).await?;
    let on_b_and_c =
        playback_phase(&nodes, &[nodes[1].port, nodes[2].port], &stream_key, &playback_path, &args).await?;
    let p95_on_a = percentile(&on_a.latencies, 0.95);
    for (name, phase) in [("A (ingest node)", &on_a), ("B and C (pulling from A)", &on_b_and_c)] {
        let joined = |values: &[f64], precision: usize| {
            values.iter().map(|v| format!("{v:.precision$}")).collect::<Vec<_>>().join(" / ")
        };
        let p95 = percentile(&phase.latencies, 0.95);
        println!(
            "| {name} | {} | {:.0} | {p95:.0} | {:+.0} | {} | {} | {} |",
            phase.latencies.len(),
            percentile(&phase.latencies, 0.5),
            p95 - p95_on_a,
            phase.fetches_per_part.map_or("none".to_owned(), |f| format!("{f:.2}")),
            joined(&phase.cpu_percent, 0),
            joined(&phase.rss_mib, 0),
        );
    }

    // The control plane: the cluster (clients spread over its nodes) next to one SQLite node.
    let single = crate::start_openivs().await?;
    let cluster_ports: Vec<u16> = nodes.iter().map(|node| node.port).collect();
    let single_arn = crate::create_channel(&client, &mut Connection::new(single.port)).await?;
    println!();
    println!(
        "# Control plane: 3 nodes on PostgreSQL (clients spread over the nodes) vs one node on SQLite, {} s per case",
        args.api_seconds
    );
    println!();
    println!("| operation | clients | server | requests/s | p50 ms | p99 ms | errors | cluster/SQLite (req/s) |");
    println!("|---|---|---|---|---|---|---|---|");
    for concurrency in [16, 64] {
        let on_sqlite =
            crate::get_channel_figures(&client, &[single.port], &single_arn, concurrency, args.api_seconds).await;
        let on_cluster =
            crate::get_channel_figures(&client, &cluster_ports, &channel_arn, concurrency, args.api_seconds).await;
        print_row("GetChannel", concurrency, "one node, SQLite", &on_sqlite, None);
        let ratio = on_cluster.per_second / on_sqlite.per_second;
        print_row("GetChannel", concurrency, "3 nodes, PostgreSQL", &on_cluster, Some(ratio));
    }
    for concurrency in [16, 64] {
        let on_sqlite = crate::create_delete_figures(&client, &[single.port], concurrency, args.api_seconds).await;
        let on_cluster = crate::create_delete_figures(&client, &cluster_ports, concurrency, args.api_seconds).await;
        let operation = "CreateChannel+DeleteChannel pair";
        print_row(operation, concurrency, "one node, SQLite", &on_sqlite, None);
        let ratio = on_cluster.per_second / on_sqlite.per_second;
        print_row(operation, concurrency, "3 nodes, PostgreSQL", &on_cluster, Some(ratio));
    }
    Ok(())
}

//! `openivs-bench access`: what a private channel's playback token costs. Multivariant playlist
//! requests (each opens a viewer session) per second and their latency, 16 clients on keep-alive
//! connections, on a public channel and on a private channel whose account has three imported
//! key pairs: tokens signed by the key imported last (steady state: one signing key; the server
//! tries the key that verified last first), tokens rotating over the three keys (a key rotation in
//! progress), and forged tokens for the channel (every key is tried and fails: the most a request
//! can cost, answered 403). Both channels are live (a publisher each, `ffmpeg -re -c copy`).
//!
//! Tokens are signed before measuring and reused in turn: the server caches no verification, so a
//! reused token costs what a new one does.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use openivs::playback_keys::PlaybackKey;
use serde_json::json;

use crate::http_client::{Connection, SignedClient, get};
use crate::ingest::{input_file, publisher};
use crate::measure;

pub struct AccessArgs {
    pub seconds: f64,
    pub clients: usize,
    pub out_dir: std::path::PathBuf,
}

const TOKENS_PER_CASE: usize = 300;

async fn call(
    client: &SignedClient,
    connection: &mut Connection,
    operation: &str,
    body: &str,
) -> Result<serde_json::Value, String> {
    let (status, out) = client.call(connection, operation, body).await?;
    if status != 200 {
        return Err(format!("{operation} answered {status}: {}", String::from_utf8_lossy(&out)));
    }
    serde_json::from_slice(&out).map_err(|e| e.to_string())
}

pub async fn run(args: AccessArgs) -> Result<(), String> {
    let input = input_file(&args.out_dir)?;
    let openivs = crate::start_openivs().await?;
    let rtmp_port = openivs.rtmp_port.ok_or("no RTMP port")?;
    let client = SignedClient::new();
    let mut connection = Connection::new(openivs.port);
    let keys: Vec<PlaybackKey> = (0..3).map(|_| PlaybackKey::generate()).collect();
    for key in &keys {
        let body = json!({ "publicKeyMaterial": key.public_pem()? }).to_string();
        call(&client, &mut connection, "ImportPlaybackKeyPair", &body).await?;
    }
    let mut channels = Vec::new();
    let mut publishers = Vec::new();
    for authorized in [false, true] {
        let body = json!({ "insecureIngest": true, "authorized": authorized }).to_string();
        let out = call(&client, &mut connection, "CreateChannel", &body).await?;
        let key = out["streamKey"]["value"].as_str().unwrap_or("").to_owned();
        publishers.push(publisher(&format!("rtmp://127.0.0.1:{rtmp_port}/app/{key}"), &input)?);
        channels.push((
            out["channel"]["arn"].as_str().unwrap_or("").to_owned(),
            crate::playback_path(out["channel"]["playbackUrl"].as_str().unwrap_or("")),
        ));
    }
    let (private_arn, private_path) = channels[1].clone();
    let public_path = channels[0].1.clone();
    // Every token different (its own expiry), as every viewer's is.
    let expiry = crate::unix_seconds() + 3600;
    let claims = |i: usize| json!({ "aws:channel-arn": private_arn, "exp": expiry + i as i64 });
    let steady: Vec<String> = (0..TOKENS_PER_CASE).map(|i| keys[2].sign(&claims(i))).collect();
    let rotating: Vec<String> = (0..TOKENS_PER_CASE).map(|i| keys[i % 3].sign(&claims(i))).collect();
    // A token for the channel carrying another token's signature: no key verifies it.
    let forged: Vec<String> = steady
        .iter()
        .zip(steady.iter().skip(1))
        .map(|(a, b)| {
            let (signed, _) = a.rsplit_once('.').unwrap_or((a, ""));
            let (_, signature) = b.rsplit_once('.').unwrap_or((b, ""));
            format!("{signed}.{signature}")
        })
        .collect();

    // Both channels must answer before measuring (the first segment takes a moment).
    let probe = format!("{private_path}?token={}", steady[0]);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    for path in [&public_path, &probe] {
        while !matches!(get(&mut connection, path).await, Ok((200, _))) {
            if std::time::Instant::now() > deadline {
                return Err(format!("{path} never answered 200"));
            }
            tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        }
    }

    println!(
        "# Opening viewer sessions: multivariant playlist requests, {} clients, {} s per case, 127.0.0.1",
        args.clients, args.seconds
    );
    println!();
    println!("| channel | token | requests/s | p50 ms | p99 ms | cost per session vs public |");
    println!("|---|---|---|---|---|---|");
    let cases: [(&str, &str, Vec<String>, u16); 4] = [
        ("public", "none", vec![public_path.clone()], 200),
        ("private, 3 key pairs", "signed by the key imported last (steady state)", paths(&private_path, &steady), 200),
        ("private, 3 key pairs", "signed by each key in turn", paths(&private_path, &rotating), 200),
        ("private, 3 key pairs", "forged (all 3 keys tried, 403)", paths(&private_path, &forged), 403),
    ];
    let mut public_rate = None;
    for (channel, token, paths, expected) in cases {
        let paths = Arc::new(paths);
        let next = Arc::new(AtomicUsize::new(0));
        let figures = measure(args.clients, args.seconds, &[openivs.port], move |mut connection| {
            let paths = paths.clone();
            let next = next.clone();
            async move {
                let path = &paths[next.fetch_add(1, Ordering::Relaxed) % paths.len()];
                let ok = matches!(get(&mut connection, path).await, Ok((status, _)) if status == expected);
                (connection, 1, ok)
            }
        })
        .await;
        let relative = match public_rate {
            None => {
                public_rate = Some(figures.per_second);
                String::new()
            }
            Some(rate) => format!("{:.2}×", rate / figures.per_second),
        };
        println!(
            "| {channel} | {token} | {:.0} | {:.2} | {:.2} | {relative} |{}",
            figures.per_second,
            figures.p50_ms,
            figures.p99_ms,
            if figures.errors > 0 { format!(" ({} unexpected answers)", figures.errors) } else { String::new() }
        );
    }
    for mut child in publishers {
        let _ = child.kill();
        let _ = child.wait();
    }
    Ok(())
}

fn paths(playback_path: &str, tokens: &[String]) -> Vec<String> {
    tokens.iter().map(|token| format!("{playback_path}?token={token}")).collect()
}

//! Start-up and shutdown: open the store, bind the listeners (HTTP; RTMP, RTMPS and SRT
//! ingest), serve until a signal, then stop live streams and close the store. SIGTERM drains
//! first (what a load balancer or Kubernetes expects): not ready, no new publishes, no API
//! writes, until the live streams have ended or `--drain-timeout` has passed. SIGINT (Ctrl-C),
//! or a second signal, stops at once.

use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::api::{Api, Endpoints};
use crate::auth::Authenticator;
use crate::http::{AppState, router};
use crate::ingest::{IngestContext, run_listener, tls};
use crate::live::LiveRegistry;
use crate::playback::Playback;
use crate::playback::access::Access;
use crate::settings::Settings;
use crate::store::Store;
use crate::store::postgres::PostgresStore;
use crate::store::sqlite::SqliteStore;

/// Binds SRT ingest on libsrt; without libsrt the server runs on, SRT off, and says why.
fn bind_srt(settings: &Settings) -> Result<Option<crate::ingest::srt::SrtListener>, String> {
    if settings.libsrt.as_deref() == Some("none") {
        return Ok(None);
    }
    let libsrt = match crate::ingest::srt::libsrt::Libsrt::load(settings.libsrt.as_deref()) {
        Ok(libsrt) => Arc::new(libsrt),
        Err(why) => {
            tracing::warn!(
                "SRT ingest is off: {why}. Install libsrt (Debian: apt-get install libsrt1.5-gnutls) or pass --libsrt PATH"
            );
            return Ok(None);
        }
    };
    let latency = Duration::from_millis(settings.limits.srt_latency_ms);
    crate::ingest::srt::bind(libsrt, settings.srt_addr, latency)
        .map(Some)
        .map_err(|e| format!("cannot listen for SRT on {}: {e}", settings.srt_addr))
}

async fn bind(address: std::net::SocketAddr, what: &str) -> Result<TcpListener, String> {
    TcpListener::bind(address).await.map_err(|e| format!("cannot listen for {what} on {address}: {e}"))
}

pub async fn serve(settings: Settings) -> Result<(), String> {
    if settings.dev_credentials {
        tracing::warn!(
            "no credentials configured: accepting the local-development access key 'test' (account 123456789012)"
        );
    }
    let backend: Arc<dyn Store> = match &settings.database_url {
        Some(url) => {
            let store = PostgresStore::open(url).await?;
            tracing::info!("resources are kept in PostgreSQL at {}", crate::store::postgres::redacted(url));
            Arc::new(store)
        }
        None => Arc::new(SqliteStore::open(&settings.sqlite_path()).await?),
    };
    let store: Arc<dyn Store> = Arc::new(crate::store::metered::Metered::new(backend.clone()));
    // Before anything raises an event (the sessions ended below), so new targets get those too.
    let deliveries = crate::events::delivery::start(store.clone(), settings.event_targets.clone()).await?;
    let outbox = crate::events::Outbox::new(store.clone());
    let http = bind(settings.http_addr, "HTTP").await?;
    let rtmp = bind(settings.rtmp_addr, "RTMP").await?;
    let rtmps = bind(settings.rtmps_addr, "RTMPS").await?;
    let srt = bind_srt(&settings)?;
    let (tls, https) = tls::acceptors(&settings)?;
    let http_addr = http.local_addr().map_err(|e| e.to_string())?;
    let rtmp_addr = rtmp.local_addr().map_err(|e| e.to_string())?;
    let rtmps_addr = rtmps.local_addr().map_err(|e| e.to_string())?;
    let endpoints = Endpoints {
        public_host: settings.public_host.clone(),
        https: settings.http_tls,
        http_port: http_addr.port(),
        rtmps_port: rtmps_addr.port(),
        rtmp_port: rtmp_addr.port(),
        // (Without SRT, the port it would have.)
        srt_port: srt.as_ref().map_or(settings.srt_addr.port(), |srt| srt.addr.port()),
    };
    let node = crate::cluster::Node::new(
        settings.node_id.clone(),
        settings.origin_url.clone(),
        http_addr,
        settings.http_tls,
        &settings.data_dir,
    )?;
    let ended = crate::cluster::registry::end_own_orphans(&store, &node, time::OffsetDateTime::now_utc())
        .await
        .map_err(|e| e.to_string())?;
    if ended > 0 {
        tracing::info!("ended {ended} stream session(s) left open by the previous run");
    }
    let live = Arc::new(LiveRegistry::new());
    let mut access = Access::new(settings.geoip_database.as_deref(), settings.trusted_proxies.clone())?;
    if settings.database_url.is_some() {
        // (PostgreSQL: other nodes may share it.)
        access = access.sharing_the_store();
    }
    let session_key = store
        .init_setting("viewer_session_key", &hex::encode(rand::random::<[u8; 32]>()))
        .await
        .ok()
        .and_then(|key| hex::decode(key).ok())
        .and_then(|key| <[u8; 32]>::try_from(key).ok())
        .ok_or("cannot read the viewer session key from the store")?;
    let playback = Arc::new(Playback::new(settings.limits, access, session_key));
    tokio::spawn(crate::cluster::revocations::follow(store.clone(), playback.clone()));
    let buckets = Arc::new(match &settings.s3 {
        None => crate::recording::buckets::Buckets::local(settings.buckets_dir.clone()),
        Some(s3) => crate::recording::buckets::Buckets::s3(
            s3.clone(),
            settings.data_dir.join("recording-spool"),
            settings.limits.recording_spool_max_bytes,
            Duration::from_secs(settings.limits.recording_store_outage_limit),
        )
        .map_err(|e| format!("cannot open the recording spool: {e}"))?,
    });
    tracing::info!("recordings go to {}", buckets.describe());
    let journals = Arc::new(crate::recording::journals::Journals::new(store.clone(), node.node_id.clone()));
    journals.import_files(&settings.data_dir.join("recordings-in-progress")).await;
    let recovery =
        Arc::new(crate::recording::recovery::Recovery::new(journals.clone(), buckets.clone(), outbox.clone()));
    let interrupted = recovery.interrupted_here().await;
    // In the background: an S3 store that is down must not keep the server from starting.
    let own_recovery = recovery.clone();
    tokio::spawn(async move {
        let recovered = own_recovery.finish_interrupted(interrupted).await;
        if recovered > 0 {
            tracing::info!("finished {recovered} recording(s) interrupted by the last stop");
        }
    });
    tokio::spawn(crate::cluster::registry::sweep(store.clone(), live.clone(), recovery.clone()));
    tokio::spawn(recovery.clone().follow_parked_elsewhere());
    let api = Api::new(
        store.clone(),
        live.clone(),
        playback.clone(),
        buckets.clone(),
        endpoints.clone(),
        &settings,
        node.clone(),
    )
    .await
    .map_err(|e| e.to_string())?;
    if !playback.access.has_geoip() {
        playback.access.warn_if_countries_unenforced(store.as_ref()).await;
    }
    let (closing, closing_seen) = watch::channel(false);
    let (draining, draining_seen) = watch::channel(false);
    let client_configurations = api.client_configurations.clone();
    let transcoding =
        crate::transcode::Transcoding::with_ffmpeg(&settings.ffmpeg, settings.limits.transcode_capacity).await;
    let metrics = settings.metrics.then(|| crate::http::operator::MetricsEndpoint {
        registry: crate::metrics::registry(crate::metrics::LiveState {
            live: live.clone(),
            playback: playback.clone(),
            transcoding: transcoding.clone(),
            buckets: buckets.clone(),
        }),
        token: settings.metrics_token.clone(),
    });
    let auth = Authenticator::new(&settings.credentials);
    let state = Arc::new(AppState::new(api, auth, settings.limits, closing_seen, draining_seen, metrics));
    let recordings = Arc::new(crate::recording::recorder::Parking::new(journals, outbox));
    let ingest = Arc::new(IngestContext {
        store: store.clone(),
        live: live.clone(),
        playback,
        transcoding,
        buckets: buckets.clone(),
        recordings: recordings.clone(),
        recovery,
        endpoints,
        limits: settings.limits,
        client_configurations,
        node,
    });
    let (stop_ingest, ingest_stopped) = watch::channel(false);
    let rtmp_task = tokio::spawn(run_listener(rtmp, None, ingest.clone(), ingest_stopped.clone()));
    let srt_addr = srt.as_ref().map(|srt| srt.addr);
    if let Some(srt) = srt {
        crate::ingest::srt::listen(srt, ingest.clone(), ingest_stopped.clone())?;
    }
    let demo = if settings.demo {
        let account = settings.credentials.first().map_or(crate::settings::DEV_ACCOUNT_ID, |c| &c.account_id);
        Some(crate::demo::start(&state.api, account, ingest.clone(), ingest_stopped.clone()).await?)
    } else {
        None
    };
    let rtmps_task = tokio::spawn(run_listener(rtmps, Some(tls), ingest, ingest_stopped));
    tracing::info!("openivs RTMPS ingest listening on rtmps://{rtmps_addr}/app/");
    tracing::info!("openivs RTMP ingest listening on rtmp://{rtmp_addr}/app/ (channels with insecureIngest only)");
    if let Some(addr) = srt_addr {
        tracing::info!(
            "openivs SRT ingest listening on srt://{addr}?streamid={{streamKey}}&passphrase={{srt.passphrase}}"
        );
    }
    let (scheme, protocols) = if settings.http_tls { ("https", "HTTP/2 and HTTP/1.1") } else { ("http", "HTTP/1.1") };
    tracing::info!(
        "openivs API listening on {scheme}://{http_addr} (data in {}; {protocols})",
        settings.data_dir.display()
    );
    print_banner(&settings, &format!("{scheme}://{http_addr}"), demo.as_ref());
    let drain_limit = Duration::from_secs(settings.limits.drain_timeout);
    let draining_live = live.clone();
    let stopping = async {
        let mut signals = Signals::new();
        if signals.next().await == Signal::Terminate {
            tracing::info!(
                "draining: no new publishes or API writes; waiting up to {drain_limit:?} for live streams to end"
            );
            let _ = draining.send(true);
            let _ = stop_ingest.send(true);
            tokio::select! {
                () = streams_ended(&draining_live, drain_limit) => {}
                _ = signals.next() => tracing::info!("draining cut short by a second signal"),
            }
        }
        tracing::info!("shutting down");
        let _ = closing.send(true);
    };
    crate::http::listener::serve(http, router(state), settings.limits, https, stopping).await;
    // Stop accepting publishers, end the live streams, give their sessions a moment to record
    // it, and close the recordings (those waiting for a comeback too).
    let _ = stop_ingest.send(true);
    let _ = tokio::join!(rtmp_task, rtmps_task);
    live.stop_all();
    live.wait_finished(Duration::from_secs(3)).await;
    recordings.finish_all(Duration::from_secs(5)).await;
    buckets.flush(Duration::from_secs(5)).await;
    // The events of the streams and recordings that just ended, to targets that take them now.
    deliveries.finish(Duration::from_secs(3)).await;
    backend.close().await;
    tracing::info!("openivs stopped");
    Ok(())
}

/// What a person who just started the server needs, on standard output (as MinIO prints it):
/// the console's address, the endpoint, the credentials to use (the access key id only, unless it is the public
/// local-development pair), and the demo channel's playback URL.
fn print_banner(settings: &Settings, endpoint: &str, demo: Option<&crate::demo::DemoChannel>) {
    let mut lines = vec![
        format!("Console:      {endpoint}/console/  (sign in with the credentials below)"),
        format!("API:          {endpoint}  (AWS CLI: aws ivs … --endpoint-url {endpoint})"),
    ];
    if settings.dev_credentials {
        lines.push(format!(
            "Credentials:  AWS_ACCESS_KEY_ID={} AWS_SECRET_ACCESS_KEY={} (local development; any region)",
            crate::settings::DEV_ACCESS_KEY_ID,
            crate::settings::DEV_SECRET_ACCESS_KEY
        ));
    } else {
        let keys: Vec<&str> = settings.credentials.iter().map(|c| c.access_key_id.as_str()).collect();
        lines.push(format!("Credentials:  access key id {} (the secret as configured)", keys.join(", ")));
    }
    lines.push(format!("Metrics:      {endpoint}/metrics   Health: {endpoint}/healthz, {endpoint}/readyz"));
    if let Some(demo) = demo {
        let in_console = demo.arn.replace(':', "%3A").replace('/', "%2F");
        lines.push(format!("Demo channel: {} is live; watch it in the console:", demo.arn));
        lines.push(format!("              {endpoint}/console/#/channel/{in_console}"));
        lines.push(format!("              or with any HLS player: {}", demo.playback_url));
    }
    println!("\n{}\n", lines.join("\n"));
}

/// Waits until no stream is live (checked every 100 ms), at most `limit`.
async fn streams_ended(live: &LiveRegistry, limit: Duration) {
    let deadline = tokio::time::Instant::now() + limit;
    while !live.all().is_empty() && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[derive(Debug, PartialEq, Eq)]
enum Signal {
    Interrupt,
    Terminate,
}

/// SIGINT and SIGTERM as they come.
struct Signals {
    #[cfg(unix)]
    terminate: tokio::signal::unix::Signal,
}

impl Signals {
    fn new() -> Signals {
        Signals {
            #[cfg(unix)]
            terminate: tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
                .expect("SIGTERM handler installs"),
        }
    }

    async fn next(&mut self) -> Signal {
        #[cfg(unix)]
        {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => Signal::Interrupt,
                _ = self.terminate.recv() => Signal::Terminate,
            }
        }
        #[cfg(not(unix))]
        {
            let _ = tokio::signal::ctrl_c().await;
            Signal::Interrupt
        }
    }
}

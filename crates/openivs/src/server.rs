//! Start-up and shutdown: open the store, bind the listeners, serve until SIGINT/SIGTERM.

use std::sync::Arc;

use crate::api::{Api, Endpoints};
use crate::auth::Authenticator;
use crate::http::{AppState, router};
use crate::live::LiveRegistry;
use crate::settings::Settings;
use crate::store::Store;
use crate::store::sqlite::SqliteStore;

/// SRT ingest's conventional port (IVS: `srt://{srt.endpoint}:9000`); the listener is a later
/// milestone, the port is what `srt.endpoint` already advertises.
const SRT_PORT: u16 = 9000;

pub async fn serve(settings: Settings) -> Result<(), String> {
    if settings.dev_credentials {
        tracing::warn!(
            "no credentials configured: accepting the local-development access key 'test' (account 123456789012)"
        );
    }
    let store = Arc::new(SqliteStore::open(&settings.sqlite_path()).await?);
    let listener = tokio::net::TcpListener::bind(settings.http_addr)
        .await
        .map_err(|e| format!("cannot listen on {}: {e}", settings.http_addr))?;
    let http_addr = listener.local_addr().map_err(|e| e.to_string())?;
    let endpoints = Endpoints {
        public_host: settings.public_host.clone(),
        http_port: http_addr.port(),
        rtmps_port: settings.rtmps_addr.port(),
        srt_port: SRT_PORT,
    };
    let live = Arc::new(LiveRegistry::new());
    let api =
        Api::new(store.clone() as Arc<dyn Store>, live, settings.quotas, endpoints).await.map_err(|e| e.to_string())?;
    let state = Arc::new(AppState { api, auth: Authenticator::new(&settings.credentials) });
    tracing::info!("openivs API listening on http://{http_addr} (data in {})", settings.data_dir.display());
    axum::serve(listener, router(state)).with_graceful_shutdown(shutdown_signal()).await.map_err(|e| e.to_string())?;
    store.close().await;
    tracing::info!("openivs stopped");
    Ok(())
}

async fn shutdown_signal() {
    let interrupt = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("SIGTERM handler installs");
        tokio::select! {
            _ = interrupt => {}
            _ = terminate.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = interrupt.await;
    tracing::info!("shutting down");
}

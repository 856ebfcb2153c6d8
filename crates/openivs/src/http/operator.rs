//! What an operator's tools call on the HTTP listener, beside the IVS API: `/healthz` (the
//! process answers), `/readyz` (ready for traffic: the store answers and the server is not
//! draining), and `/metrics` (Prometheus, see [`crate::metrics`]; off, or behind a bearer token,
//! by settings). Draining (SIGTERM) is decided in `server.rs`; here it turns readiness off and
//! refuses API writes ([`refuses_while_draining`]).

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::Response;
use subtle::ConstantTimeEq;

use super::AppState;

/// How long `/readyz` waits for the store before calling it unreachable.
const STORE_CHECK_LIMIT: Duration = Duration::from_secs(2);

/// The metrics endpoint's registry and who may read it.
pub struct MetricsEndpoint {
    pub registry: prometheus_client::registry::Registry,
    /// A bearer token the scraper must send (`--metrics-token`), if any.
    pub token: Option<String>,
}

fn plain(status: StatusCode, text: &str) -> Response {
    let mut response = Response::new(Body::from(format!("{text}\n")));
    *response.status_mut() = status;
    response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain; charset=utf-8"));
    response.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

pub async fn healthz() -> Response {
    plain(StatusCode::OK, "ok")
}

pub async fn readyz(State(state): State<Arc<AppState>>) -> Response {
    if *state.draining.borrow() {
        return plain(StatusCode::SERVICE_UNAVAILABLE, "draining");
    }
    // A read that touches the database (the listeners are bound before anything is served).
    match tokio::time::timeout(STORE_CHECK_LIMIT, state.api.store.setting("pagination_token_key")).await {
        Ok(Ok(_)) => plain(StatusCode::OK, "ready"),
        Ok(Err(error)) => {
            tracing::warn!("readyz: the store fails: {error}");
            plain(StatusCode::SERVICE_UNAVAILABLE, "store unavailable")
        }
        Err(_) => plain(StatusCode::SERVICE_UNAVAILABLE, "store unavailable"),
    }
}

pub async fn metrics(State(state): State<Arc<AppState>>, headers: HeaderMap) -> Response {
    let Some(endpoint) = &state.metrics else {
        return plain(StatusCode::NOT_FOUND, "metrics are off (--metrics false)");
    };
    if let Some(token) = &endpoint.token {
        let sent = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .unwrap_or("");
        if !bool::from(sent.as_bytes().ct_eq(token.as_bytes())) {
            let mut response = plain(StatusCode::UNAUTHORIZED, "a bearer token is required (--metrics-token)");
            response.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            return response;
        }
    }
    let mut response = Response::new(Body::from(crate::metrics::render(&endpoint.registry)));
    response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static(crate::metrics::CONTENT_TYPE));
    response.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

/// Whether an operation is refused while the server drains: those that change stored resources
/// (a load balancer's retry reaches a node that is not stopping). Reads, and operations on the
/// streams still live here (PutMetadata, StopStream, InsertAdBreak), go on.
pub fn refuses_while_draining(operation: &str) -> bool {
    let reads = ["Get", "List", "BatchGet"];
    let live = ["PutMetadata", "StopStream", "InsertAdBreak"];
    !reads.iter().any(|prefix| operation.starts_with(prefix)) && !live.contains(&operation)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn draining_refuses_writes_only() {
        for write in ["CreateChannel", "DeleteChannel", "UpdateChannel", "TagResource", "ImportPlaybackKeyPair"] {
            assert!(refuses_while_draining(write), "{write}");
        }
        for read in ["GetChannel", "ListChannels", "BatchGetChannel", "PutMetadata", "StopStream", "GetStream"] {
            assert!(!refuses_while_draining(read), "{read}");
        }
    }
}

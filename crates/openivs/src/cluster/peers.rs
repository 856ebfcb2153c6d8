//! Calls between the nodes of a cluster. The API operations that act on a live stream
//! (GetStream, StopStream, PutMetadata, InsertAdBreak) are answered by the node that ingests it:
//! a node that receives one for a stream another node holds passes it on ([`Peers::call`]) to
//! that node's internal endpoint ([`API_PATH`]), on behalf of the caller it authenticated, and
//! returns the answer as it came. ListStreams gathers every node's streams the same way.
//!
//! Internal requests carry an HMAC-SHA256 of their time, path and body under the cluster secret
//! (`--cluster-secret`, or one made by the first node and kept in the shared database, so nodes
//! that share a database share it with nothing to configure). Without it the internal endpoint
//! answers 403 and does nothing.

use std::time::Duration;

use hmac::{Hmac, Mac};
use openivs_model::{ErrorKind, IvsError};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use super::Node;
use crate::auth::Caller;
use crate::store::Store;

/// The internal endpoint other nodes call with an operation to run here.
pub const API_PATH: &str = "/_openivs/cluster/api";
/// `{unix ms}:{hex HMAC}` of an internal request.
pub const AUTH_HEADER: &str = "x-openivs-cluster-auth";
/// How far a request's time may be from this node's clock (nodes' clocks differ a little).
const CLOCK_SKEW_MS: i64 = 30_000;
/// How long a call to another node may take (a blocking stop waits up to 5 s for the end).
const CALL_TIMEOUT: Duration = Duration::from_secs(10);

/// The operations another node may ask this one to run, for a stream it ingests (the last one
/// is internal: this node's own live streams, for a ListStreams answered elsewhere).
pub const FORWARDED: [&str; 5] = ["GetStream", "StopStream", "PutMetadata", "InsertAdBreak", LOCAL_STREAMS];
pub const LOCAL_STREAMS: &str = "ListLocalStreams";

pub struct Peers {
    pub node: Node,
    secret: Vec<u8>,
    client: reqwest::Client,
}

impl Peers {
    /// This node's side of the cluster: `secret` as configured, or the database's.
    pub async fn new(store: &dyn Store, node: Node, secret: Option<String>) -> Result<Peers, IvsError> {
        let secret = match secret.filter(|s| !s.is_empty()) {
            Some(secret) => secret,
            None => store.init_setting("cluster_secret", &hex::encode(rand::random::<[u8; 32]>())).await?,
        };
        let client = reqwest::Client::builder()
            .timeout(CALL_TIMEOUT)
            .pool_idle_timeout(Duration::from_secs(60))
            .build()
            .map_err(|e| IvsError::internal(format!("cannot make the cluster's HTTP client: {e}")))?;
        Ok(Peers { node, secret: secret.into_bytes(), client })
    }

    fn signature(&self, at_ms: i64, path: &str, body: &[u8]) -> String {
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.secret).expect("HMAC takes keys of any length");
        mac.update(format!("{at_ms}\n{path}\n{}", hex::encode(Sha256::digest(body))).as_bytes());
        hex::encode(mac.finalize().into_bytes())
    }

    /// The `AUTH_HEADER` value of an internal request for `path` (with its query) and `body`.
    pub fn authorization(&self, path: &str, body: &[u8]) -> String {
        let at_ms = now_ms();
        format!("{at_ms}:{}", self.signature(at_ms, path, body))
    }

    /// Whether an internal request with these `headers`, for `path` (with its query) and `body`,
    /// was signed by a node of this cluster just now.
    pub fn verify_request(&self, headers: &axum::http::HeaderMap, path: &str, body: &[u8]) -> bool {
        self.verify(headers.get(AUTH_HEADER).and_then(|v| v.to_str().ok()), path, body, now_ms())
    }

    /// Whether an internal request's `AUTH_HEADER` is this cluster's, for this path and body,
    /// and recent.
    pub fn verify(&self, header: Option<&str>, path: &str, body: &[u8], now_ms: i64) -> bool {
        let Some((at, signature)) = header.and_then(|h| h.split_once(':')) else { return false };
        let Ok(at_ms) = at.parse::<i64>() else { return false };
        if (now_ms - at_ms).abs() > CLOCK_SKEW_MS {
            return false;
        }
        let expected = self.signature(at_ms, path, body);
        subtle::ConstantTimeEq::ct_eq(expected.as_bytes(), signature.as_bytes()).into()
    }

    /// Runs `operation` with `input` on the node at `origin_url` for `caller`; its answer.
    pub async fn call(
        &self,
        origin_url: &str,
        caller: &Caller,
        operation: &str,
        input: &Value,
    ) -> Result<Value, IvsError> {
        let body = json!({
            "account": caller.account,
            "region": caller.region,
            "operation": operation,
            "input": input,
        })
        .to_string();
        let unreachable = |e: String| {
            tracing::warn!("cluster: cannot reach {origin_url} for {operation}: {e}");
            IvsError::internal("The node that holds this stream did not answer; try again")
        };
        let response = self
            .client
            .post(format!("{origin_url}{API_PATH}"))
            .header("content-type", "application/json")
            .header(AUTH_HEADER, self.authorization(API_PATH, body.as_bytes()))
            .body(body)
            .send()
            .await
            .map_err(|e| unreachable(e.to_string()))?;
        if !response.status().is_success() {
            return Err(unreachable(format!("HTTP {}", response.status())));
        }
        let bytes = response.bytes().await.map_err(|e| unreachable(e.to_string()))?;
        let answer: Value = serde_json::from_slice(&bytes).map_err(|e| unreachable(e.to_string()))?;
        match (answer.get("output"), answer.get("error")) {
            (Some(output), _) => Ok(output.clone()),
            (None, Some(error)) => {
                let kind =
                    error["type"].as_str().and_then(ErrorKind::from_wire_name).unwrap_or(ErrorKind::InternalServer);
                Err(IvsError::new(kind, error["message"].as_str().unwrap_or_default()))
            }
            (None, None) => Err(unreachable("an answer without output or error".into())),
        }
    }
}

/// This node's clock, in Unix milliseconds.
fn now_ms() -> i64 {
    (time::OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000) as i64
}

/// An internal request as the endpoint reads it.
#[derive(serde::Deserialize)]
pub struct InternalCall {
    pub account: String,
    pub region: String,
    pub operation: String,
    pub input: Value,
}

/// The endpoint's answer to an internal call.
pub fn answer(result: Result<Value, IvsError>) -> Value {
    match result {
        Ok(output) => json!({ "output": output }),
        Err(error) => json!({ "error": { "type": error.kind.wire_name(), "message": error.message } }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peers(secret: &str) -> Peers {
        Peers {
            node: Node { node_id: "a".into(), origin_url: "http://127.0.0.1:1".into() },
            secret: secret.as_bytes().to_vec(),
            client: reqwest::Client::new(),
        }
    }

    #[test]
    fn only_this_clusters_recent_signatures_of_the_same_request_pass() {
        let (ours, theirs) = (peers("s1"), peers("s2"));
        let now = 1_800_000_000_000;
        let header = format!("{now}:{}", ours.signature(now, API_PATH, b"{}"));
        assert!(ours.verify(Some(&header), API_PATH, b"{}", now + 1000));
        assert!(!theirs.verify(Some(&header), API_PATH, b"{}", now), "another secret");
        assert!(!ours.verify(Some(&header), API_PATH, b"{\"x\":1}", now), "another body");
        assert!(!ours.verify(Some(&header), "/other", b"{}", now), "another path");
        assert!(!ours.verify(Some(&header), API_PATH, b"{}", now + CLOCK_SKEW_MS + 1), "too old");
        assert!(!ours.verify(None, API_PATH, b"{}", now));
        assert!(!ours.verify(Some("garbage"), API_PATH, b"{}", now));
    }
}

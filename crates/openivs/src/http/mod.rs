//! The HTTP listener: routes each request to an IVS operation and runs the control-plane
//! pipeline: request id → route → SigV4 headers check → bounded body → SigV4 → JSON → model
//! validation → operation → response. The mapping of an [`IvsError`] to the wire (status,
//! `x-amzn-ErrorType`, body) is here and only here. HLS playback shares this listener
//! (`/api/video/v1/…`, `/playback/…`), and so does the web console ([`crate::console`]);
//! [`listener`] holds the connection-level bounds;
//! [`operator`] answers health, readiness and metrics.

pub mod listener;
pub mod operator;

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Instant;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::response::Response;
use openivs_model::IvsError;
use openivs_model::service::{Location, model};
use serde_json::{Value, json};
use time::OffsetDateTime;

use crate::api::Api;
use crate::auth::sigv4::RequestParts;
use crate::auth::{Authenticator, Caller};
use listener::ClientAddress;

pub struct AppState {
    pub api: Api,
    pub auth: Authenticator,
    pub limits: crate::settings::Limits,
    /// Turns true when the server begins to stop: endless responses (event streams) end.
    pub closing: tokio::sync::watch::Receiver<bool>,
    /// Turns true while the server drains (SIGTERM): not ready, API writes refused.
    pub draining: tokio::sync::watch::Receiver<bool>,
    /// `/metrics`, unless off.
    pub metrics: Option<operator::MetricsEndpoint>,
    /// Bytes of request bodies being received, over all connections (`http_request_body_memory`);
    /// a request holds its share (its Content-Length) while its body arrives and is handled.
    body_memory: tokio::sync::Semaphore,
    /// The same bytes by client address: one address may hold at most an eighth of the budget,
    /// so a client that stalls bodies cannot throttle everyone else.
    body_memory_by_address: std::sync::Mutex<HashMap<IpAddr, usize>>,
}

/// An address's share of the body memory, given back on drop.
struct AddressBodyShare<'a> {
    held: &'a std::sync::Mutex<HashMap<IpAddr, usize>>,
    address: IpAddr,
    bytes: usize,
}

impl Drop for AddressBodyShare<'_> {
    fn drop(&mut self) {
        let mut held = self.held.lock().expect("body memory lock");
        if let Some(bytes) = held.get_mut(&self.address) {
            *bytes -= self.bytes;
            if *bytes == 0 {
                held.remove(&self.address);
            }
        }
    }
}

/// What a request holds of the body memory while it is handled.
pub struct BodyMemory<'a> {
    _total: tokio::sync::SemaphorePermit<'a>,
    _address: AddressBodyShare<'a>,
}

impl AppState {
    pub fn new(
        api: Api,
        auth: Authenticator,
        limits: crate::settings::Limits,
        closing: tokio::sync::watch::Receiver<bool>,
        draining: tokio::sync::watch::Receiver<bool>,
        metrics: Option<operator::MetricsEndpoint>,
    ) -> AppState {
        let body_memory = tokio::sync::Semaphore::new(limits.http_request_body_memory.min(u32::MAX as usize));
        AppState {
            api,
            auth,
            limits,
            closing,
            draining,
            metrics,
            body_memory,
            body_memory_by_address: Default::default(),
        }
    }

    /// Reserves `bytes` for `address`, within its eighth of the body memory.
    fn reserve_for_address(&self, address: IpAddr, bytes: usize) -> Option<AddressBodyShare<'_>> {
        let cap = (self.limits.http_request_body_memory / 8).max(self.limits.http_max_request_body);
        let mut held = self.body_memory_by_address.lock().expect("body memory lock");
        let current = held.entry(address).or_insert(0);
        if *current + bytes > cap {
            return None;
        }
        *current += bytes;
        Some(AddressBodyShare { held: &self.body_memory_by_address, address, bytes })
    }

    /// The request's body, read within its limits: at most `http_max_request_body` bytes
    /// (checked against Content-Length before anything is read), arriving within
    /// `http_body_timeout`, and only while the memory of all bodies in flight allows. The
    /// permit it returns holds that memory until the request is answered. The rest of a body
    /// refused for its size is read and dropped after the answer ([`REFUSED_BODY_DRAIN`]).
    async fn read_body(
        &self,
        headers: &axum::http::HeaderMap,
        address: IpAddr,
        mut body: Body,
    ) -> Result<(Bytes, BodyMemory<'_>), IvsError> {
        let max = self.limits.http_max_request_body;
        let too_large = || IvsError::validation(format!("Request body must be at most {max} bytes"));
        // One deadline for waiting on the shared memory and for the bytes to arrive.
        let deadline = tokio::time::Instant::now() + crate::settings::Limits::seconds(self.limits.http_body_timeout);
        let declared = match declared_length(headers) {
            Some(Ok(length)) if length > max => {
                self.discard_body(headers, body);
                return Err(too_large());
            }
            Some(Ok(length)) => length,
            Some(Err(())) => return Err(IvsError::validation("Content-Length is not a number")),
            // Chunked: it may be as large as allowed.
            None => max,
        };
        let share = declared.clamp(1, self.limits.http_request_body_memory.max(1));
        let throttled = || IvsError::throttling("The server is receiving too many request bodies; retry");
        let for_address = self.reserve_for_address(address, share).ok_or_else(throttled)?;
        let total =
            tokio::time::timeout_at(deadline, self.body_memory.acquire_many(u32::try_from(share).unwrap_or(u32::MAX)))
                .await
                .ok()
                .and_then(Result::ok)
                .ok_or_else(throttled)?;
        let late = || {
            IvsError::validation(format!("The request body did not arrive within {} s", self.limits.http_body_timeout))
        };
        let unreadable = || IvsError::validation("The request body could not be read");
        let mut pieces: Vec<Bytes> = Vec::new();
        let mut length = 0;
        loop {
            let piece = match tokio::time::timeout_at(deadline, next_data(&mut body)).await {
                Err(_) => return Err(late()),
                Ok(None) => break,
                Ok(Some(piece)) => piece.map_err(|_| unreadable())?,
            };
            length += piece.len();
            if length > declared {
                self.discard_body(headers, body);
                return Err(too_large());
            }
            pieces.push(piece);
        }
        // One piece (the usual case) is kept as it came; more are joined.
        let body = match pieces.len() {
            1 => pieces.pop().unwrap_or_default(),
            _ => Bytes::from(pieces.concat()),
        };
        Ok((body, BodyMemory { _total: total, _address: for_address }))
    }

    /// Reads what is left of a refused request's body and drops it, in the background so that
    /// the answer goes out at once: within [`REFUSED_BODY_DRAIN`] bytes and `http_body_timeout`,
    /// after which the body is dropped and the connection closed.
    fn discard_body(&self, headers: &axum::http::HeaderMap, body: Body) {
        use axum::body::HttpBody;
        let declared_beyond_drain =
            declared_length(headers).is_some_and(|length| !length.is_ok_and(|l| l <= REFUSED_BODY_DRAIN));
        if body.is_end_stream() || declared_beyond_drain {
            return;
        }
        let timeout = crate::settings::Limits::seconds(self.limits.http_body_timeout);
        tokio::spawn(async move {
            let mut body = body;
            let drain = async {
                let mut left = REFUSED_BODY_DRAIN;
                while let Some(Ok(piece)) = next_data(&mut body).await {
                    let Some(still_left) = left.checked_sub(piece.len()) else { return };
                    left = still_left;
                }
            };
            let _ = tokio::time::timeout(timeout, drain).await;
        });
    }
}

/// How much of a refused request's body is read and dropped after the answer (as nginx's
/// lingering close does). Closing the connection with bytes still unread makes the kernel reset
/// it, which can destroy the answer before the client has read it, and a client still sending
/// (nginx in front of a cluster, passing a body on) fails on the reset: nginx then answers 502
/// instead of the node's 400. nginx's own limit in the shipped load balancer configuration is
/// 2 MiB, so any body it passes on is read to its end.
const REFUSED_BODY_DRAIN: usize = 2 << 20;

/// The Content-Length header: none, a number, or not a number.
fn declared_length(headers: &axum::http::HeaderMap) -> Option<Result<usize, ()>> {
    let value = headers.get(header::CONTENT_LENGTH)?;
    Some(value.to_str().ok().and_then(|v| v.trim().parse().ok()).ok_or(()))
}

/// The body's next piece of data (trailers are skipped), or None at its end.
async fn next_data(body: &mut Body) -> Option<Result<Bytes, axum::Error>> {
    use axum::body::HttpBody;
    loop {
        let frame = std::future::poll_fn(|cx| std::pin::Pin::new(&mut *body).poll_frame(cx)).await?;
        match frame {
            Ok(frame) => match frame.into_data() {
                Ok(data) => return Some(Ok(data)),
                Err(_trailers) => continue,
            },
            Err(error) => return Some(Err(error)),
        }
    }
}

pub fn router(state: Arc<AppState>) -> Router {
    use axum::routing::{get, post};
    Router::new()
        .route("/api/video/v1/{name}", get(crate::playback::http::multivariant))
        .route("/playback/{session}/{channel}/{file}", get(crate::playback::http::media))
        .route(crate::events::sse::PATH, get(crate::events::sse::stream))
        .route(crate::ingest::client_configuration::PATH, post(client_configuration))
        .route(crate::cluster::peers::API_PATH, post(cluster_api))
        .route(
            &format!("{}/{{name}}", crate::cluster::pull::MULTIVARIANT_PATH),
            get(crate::playback::http::cluster_multivariant),
        )
        .route(
            &format!("{}/{{channel}}/{{file}}", crate::cluster::pull::MEDIA_PATH),
            get(crate::playback::http::cluster_media),
        )
        .route("/healthz", get(operator::healthz))
        .route("/readyz", get(operator::readyz))
        .route("/metrics", get(operator::metrics))
        .route("/console", get(crate::console::redirect))
        .route("/console/", get(crate::console::page))
        .route("/console/config.json", get(crate::console::config))
        .route("/console/{file}", get(crate::console::asset))
        .route(crate::console::LIVE_CHANNELS_PATH, get(crate::console::live_channels))
        .route(crate::console::recordings::PATH, get(crate::console::recordings::list))
        .route(
            &format!("{}/{{bucket}}/{{*key}}", crate::console::recordings::PATH),
            get(crate::console::recordings::object),
        )
        .fallback(control_plane)
        .with_state(state)
}

/// An IVS operation a request addresses, with the `{resourceArn}` label of tag routes (raw).
fn route<'a>(method: &Method, path: &'a str) -> Option<(&'static str, Option<&'a str>)> {
    if let Some(label) = path.strip_prefix("/tags/") {
        if label.is_empty() || label.contains('/') {
            return None;
        }
        let operation = match *method {
            Method::GET => "ListTagsForResource",
            Method::POST => "TagResource",
            Method::DELETE => "UntagResource",
            _ => return None,
        };
        return Some((operation, Some(label)));
    }
    let name = path.strip_prefix('/')?;
    let operation = model().operation(name)?;
    // The model lives for the whole program, so its operation names are already `'static`.
    (operation.method == method.as_str() && operation.request_uri == path).then_some((operation.name.as_str(), None))
}

fn percent_decode(text: &str, plus_is_space: bool) -> Option<String> {
    let text = if plus_is_space { text.replace('+', " ") } else { text.to_owned() };
    percent_encoding::percent_decode_str(&text).decode_utf8().ok().map(|s| s.into_owned())
}

/// The first value of query parameter `name`, decoded (the `GET`s served beside the API).
pub(crate) fn query_value(query: Option<&str>, name: &str) -> Option<String> {
    query?
        .split('&')
        .filter_map(|pair| pair.split_once('='))
        .find(|(key, _)| percent_decode(key, true).as_deref() == Some(name))
        .and_then(|(_, value)| percent_decode(value, true))
}

/// The operation's input: the JSON body, plus the URI label and query parameters bound to
/// their members as the model says.
pub(crate) fn gather_input(
    operation: &str,
    label: Option<&str>,
    query: Option<&str>,
    body: &Bytes,
) -> Result<Value, IvsError> {
    let mut input = if body.iter().all(u8::is_ascii_whitespace) {
        json!({})
    } else {
        serde_json::from_slice::<Value>(body)
            .map_err(|e| IvsError::validation(format!("Request body is not valid JSON: {e}")))?
    };
    let Some(object) = input.as_object_mut() else {
        return Err(IvsError::validation("Request body must be a JSON object"));
    };
    let input_shape = model().operation(operation).and_then(|op| op.input_shape.clone()).unwrap_or_default();
    if let Some(label) = label {
        let arn = percent_decode(label, false).ok_or_else(|| IvsError::validation("resourceArn is not valid UTF-8"))?;
        object.insert("resourceArn".into(), Value::String(arn));
    }
    for member in model().members_at(&input_shape, Location::QueryString) {
        let values: Vec<Value> = query
            .unwrap_or("")
            .split('&')
            .filter_map(|pair| pair.split_once('=').or(Some((pair, ""))))
            .filter(|(key, _)| percent_decode(key, true).as_deref() == Some(member))
            .map(|(_, value)| percent_decode(value, true).map(Value::String))
            .collect::<Option<_>>()
            .ok_or_else(|| IvsError::validation(format!("{member} is not valid UTF-8")))?;
        if !values.is_empty() {
            object.insert(member.to_owned(), Value::Array(values));
        }
    }
    Ok(input)
}

async fn control_plane(State(state): State<Arc<AppState>>, request: Request) -> Response {
    let started = Instant::now();
    let request_id = crate::api::random_uuid();
    let (parts, body) = request.into_parts();
    let path = parts.uri.path().to_owned();
    let Some((operation, label)) = route(&parts.method, &path) else {
        state.discard_body(&parts.headers, body);
        let response = error_response(
            &request_id,
            "UnknownOperationException",
            404,
            &format!("No IVS operation at {} {}", parts.method, shorten(&path)),
        );
        tracing::info!(%request_id, method = %parts.method, status = 404, "unknown route");
        crate::metrics::global().api_request("unknown", 404, started.elapsed());
        return response;
    };
    let result = async {
        let mut signed = RequestParts {
            method: parts.method.as_str(),
            raw_path: &path,
            raw_query: parts.uri.query(),
            headers: crate::auth::signed_headers(&parts),
            body: &[],
        };
        // Who is asking, as far as the headers tell, before any of the body is buffered.
        if let Err(refused) = state.auth.precheck(&signed, OffsetDateTime::now_utc()) {
            state.discard_body(&parts.headers, body);
            return Err(refused);
        }
        let address = parts.extensions.get::<ClientAddress>().map_or(IpAddr::from([0, 0, 0, 0]), |a| a.0);
        let (body, _body_memory) = state.read_body(&parts.headers, address, body).await?;
        signed.body = &body;
        let caller = state.auth.authenticate(&signed, OffsetDateTime::now_utc())?;
        let input = gather_input(operation, label, parts.uri.query(), &body)?;
        model().validate_input(operation, &input)?;
        if *state.draining.borrow() && operator::refuses_while_draining(operation) {
            return Err(IvsError::new(
                openivs_model::ErrorKind::ServiceUnavailable,
                "The server is shutting down and takes no changes; retry (another node will answer)",
            ));
        }
        state.api.handle(operation, &caller, input).await
    }
    .await;
    let response = match result {
        Ok(output) => success_response(&request_id, operation, output),
        Err(error) => {
            if error.kind.http_status() >= 500 {
                tracing::error!(%request_id, operation, error = %error, "request failed");
            }
            error_response(&request_id, error.kind.wire_name(), error.kind.http_status(), &error.message)
        }
    };
    let (status, took) = (response.status().as_u16(), started.elapsed());
    crate::metrics::global().api_request(operation, status, took);
    tracing::info!(%request_id, operation, status, elapsed_us = took.as_micros() as u64, "request");
    response
}

/// GetClientConfiguration (automatic stream configuration for multitrack broadcasters): outside
/// the SigV4 pipeline, as with IVS; the stream key in the body authenticates it.
async fn client_configuration(State(state): State<Arc<AppState>>, request: Request) -> Response {
    let started = Instant::now();
    let request_id = crate::api::random_uuid();
    let (parts, body) = request.into_parts();
    let address = parts.extensions.get::<ClientAddress>().map_or(IpAddr::from([0, 0, 0, 0]), |a| a.0);
    let (status, answer) = match state.read_body(&parts.headers, address, body).await {
        Ok((body, _body_memory)) => {
            let api = &state.api;
            match api.client_configurations.answer(api.store.as_ref(), &api.endpoints, &body).await {
                Ok(answer) => (200, answer),
                Err(refused) => (refused.status, refused.body()),
            }
        }
        Err(error) => {
            let refused = crate::ingest::client_configuration::Refused {
                status: error.kind.http_status(),
                message: error.message,
            };
            (refused.status, refused.body())
        }
    };
    let took = started.elapsed();
    crate::metrics::global().api_request("GetClientConfiguration", status, took);
    tracing::info!(%request_id, operation = "GetClientConfiguration", status, elapsed_us = took.as_micros() as u64, "request");
    let mut response = base_response(&request_id, status, Body::from(answer.to_string()));
    response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}

/// An operation another node of the cluster asks this one to run, for a stream this node
/// ingests ([`crate::cluster::peers`]): 403 unless signed with the cluster secret.
async fn cluster_api(State(state): State<Arc<AppState>>, request: Request) -> Response {
    use crate::cluster::peers::{FORWARDED, InternalCall, answer};
    let request_id = crate::api::random_uuid();
    let (parts, body) = request.into_parts();
    let address = parts.extensions.get::<ClientAddress>().map_or(IpAddr::from([0, 0, 0, 0]), |a| a.0);
    let respond = |status: u16, body: serde_json::Value| {
        let mut response = base_response(&request_id, status, Body::from(body.to_string()));
        response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
        response
    };
    let (body, _body_memory) = match state.read_body(&parts.headers, address, body).await {
        Ok(read) => read,
        Err(error) => return respond(error.kind.http_status(), serde_json::json!({ "message": error.message })),
    };
    if !state.api.peers.verify_request(&parts.headers, parts.uri.path(), &body) {
        tracing::warn!(%request_id, %address, "cluster: refused an internal request without the cluster's signature");
        return respond(403, serde_json::json!({ "message": "Not signed with this cluster's secret" }));
    }
    let Ok(call) = serde_json::from_slice::<InternalCall>(&body) else {
        return respond(400, serde_json::json!({ "message": "Not an internal call" }));
    };
    if !FORWARDED.contains(&call.operation.as_str()) {
        return respond(400, serde_json::json!({ "message": "Not an operation nodes pass on" }));
    }
    let caller = Caller { account: call.account, region: call.region };
    let result = state.api.handle_here(&call.operation, &caller, call.input).await;
    tracing::info!(%request_id, operation = call.operation, ok = result.is_ok(), "cluster request");
    respond(200, answer(result))
}

fn shorten(text: &str) -> String {
    text.chars().take(128).collect()
}

fn base_response(request_id: &str, status: u16, body: Body) -> Response {
    let mut response = Response::new(body);
    *response.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let headers = response.headers_mut();
    if let Ok(value) = HeaderValue::from_str(request_id) {
        headers.insert("x-amzn-RequestId", value);
    }
    response
}

fn success_response(request_id: &str, operation: &str, output: Value) -> Response {
    let status = model().operation(operation).map_or(200, |op| op.success_status);
    if status == 204 || output.is_null() {
        return base_response(request_id, 204, Body::empty());
    }
    let mut response = base_response(request_id, status, Body::from(output.to_string()));
    response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}

/// The wire form of an error raised outside the control-plane pipeline (the event stream).
pub(crate) fn error_of(error: &IvsError) -> Response {
    error_response(&crate::api::random_uuid(), error.kind.wire_name(), error.kind.http_status(), &error.message)
}

/// The one place an error becomes bytes: the status of its kind, `x-amzn-ErrorType`, and a body
/// with `__type`, `message` (read by botocore and aws-sdk-rust) and `exceptionMessage` (the
/// model's member).
fn error_response(request_id: &str, wire_name: &str, status: u16, message: &str) -> Response {
    let body = json!({ "__type": wire_name, "message": message, "exceptionMessage": message });
    let mut response = base_response(request_id, status, Body::from(body.to_string()));
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    if let Ok(value) = HeaderValue::from_str(wire_name) {
        headers.insert("x-amzn-ErrorType", value);
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes() {
        assert_eq!(route(&Method::POST, "/CreateChannel"), Some(("CreateChannel", None)));
        assert_eq!(route(&Method::GET, "/CreateChannel"), None);
        assert_eq!(route(&Method::POST, "/Nope"), None);
        assert_eq!(route(&Method::GET, "/tags/arn%3Ax"), Some(("ListTagsForResource", Some("arn%3Ax"))));
        assert_eq!(route(&Method::DELETE, "/tags/arn%3Ax"), Some(("UntagResource", Some("arn%3Ax"))));
        assert_eq!(route(&Method::PUT, "/tags/arn%3Ax"), None);
        assert_eq!(route(&Method::GET, "/tags/a/b"), None);
    }

    #[test]
    fn binds_label_and_repeated_query() {
        let input = gather_input(
            "UntagResource",
            Some("arn%3Aaws%3Aivs%3Aus-west-2%3A123456789012%3Achannel%2Fabc"),
            Some("tagKeys=a&tagKeys=b%20c&other=x"),
            &Bytes::new(),
        )
        .unwrap();
        assert_eq!(
            input,
            json!({"resourceArn": "arn:aws:ivs:us-west-2:123456789012:channel/abc", "tagKeys": ["a", "b c"]})
        );
        assert!(gather_input("GetChannel", None, None, &Bytes::from_static(b"[1]")).is_err());
        assert!(gather_input("GetChannel", None, None, &Bytes::from_static(b"{")).is_err());
    }

    #[test]
    fn request_ids_look_like_uuids() {
        let id = crate::api::random_uuid();
        assert_eq!(id.len(), 36);
        assert_eq!(id.matches('-').count(), 4);
    }
}

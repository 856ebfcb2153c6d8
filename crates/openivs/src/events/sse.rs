//! `GET /_openivs/events`: the outbox as a Server-Sent Events stream, for developers watching a
//! server locally (`curl -N --aws-sigv4 aws:amz:us-west-2:ivs --user test:test …`).
//!
//! The request is signed with SigV4 like any API call (service `ivs`), and the stream carries
//! the events of the signer's account and region. Each event is `id: {seq}`,
//! `event: {detail-type}` and `data: {envelope}`; a client that reconnects with `Last-Event-ID`
//! (or `?after={seq}`) resumes after that event, for as long as the outbox keeps it (24 hours).
//! Without either, the stream starts with the next event. A comment line every 15 s keeps
//! proxies from closing an idle stream.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{HeaderValue, header};
use axum::response::Response;
use openivs_model::IvsError;

use crate::auth::Caller;
use crate::http::AppState;
use crate::store::Store;

pub const PATH: &str = "/_openivs/events";
const KEEPALIVE: Duration = Duration::from_secs(15);

/// Answers the stream, or the API's error (in IVS's wire format) when the request is not signed
/// by a known credential.
pub async fn stream(State(state): State<Arc<AppState>>, request: Request) -> Response {
    let (parts, _body) = request.into_parts();
    let caller = match state.auth.authenticate_head(&parts) {
        Ok(caller) => caller,
        Err(error) => return crate::http::error_of(&error),
    };
    let store = state.api.store.clone();
    let resume = parts
        .headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
        .or_else(|| crate::http::query_value(parts.uri.query(), "after"));
    let after = match resume {
        Some(text) => match text.trim().parse::<i64>() {
            Ok(seq) => seq,
            Err(_) => return crate::http::error_of(&IvsError::validation("Last-Event-ID must be an event's id")),
        },
        None => match store.last_event_seq().await {
            Ok(seq) => seq,
            Err(error) => return crate::http::error_of(&error),
        },
    };
    let feed = Feed { store, caller, after, ready: VecDeque::new(), opened: false, closing: state.closing.clone() };
    let body = futures_util::stream::unfold(feed, |mut feed| async move {
        let chunk = feed.next().await?;
        Some((Ok::<Bytes, std::convert::Infallible>(chunk), feed))
    });
    let mut response = Response::new(Body::from_stream(body));
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/event-stream"));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

/// The stream's position in the outbox and the events read but not yet sent.
struct Feed {
    store: Arc<dyn Store>,
    caller: Caller,
    after: i64,
    ready: VecDeque<Bytes>,
    /// The opening comment was sent.
    opened: bool,
    closing: tokio::sync::watch::Receiver<bool>,
}

impl Feed {
    /// The next chunk: an event, or a keep-alive comment; `None` ends the stream (the server
    /// is stopping, or the store fails).
    async fn next(&mut self) -> Option<Bytes> {
        // (The first chunk is a comment, so the client sees the stream open at once.)
        if !self.opened {
            self.opened = true;
            return Some(Bytes::from_static(b": openivs events\n\n"));
        }
        let signal = self.store.event_signal();
        while self.ready.is_empty() {
            if *self.closing.borrow() {
                return None;
            }
            let appended = signal.notified();
            tokio::pin!(appended);
            appended.as_mut().enable();
            let events = self.store.events_after(self.after, super::delivery::BATCH).await.ok()?;
            if let Some(last) = events.last() {
                self.after = last.seq;
            }
            for event in events {
                if event.account == self.caller.account && event.region == self.caller.region {
                    self.ready.push_back(Bytes::from(sse_message(event.seq, &event.body)));
                }
            }
            if self.ready.is_empty() {
                tokio::select! {
                    () = &mut appended => {}
                    () = tokio::time::sleep(KEEPALIVE) => return Some(Bytes::from_static(b": keepalive\n\n")),
                    _ = self.closing.changed() => return None,
                }
            }
        }
        self.ready.pop_front()
    }
}

/// An event as an SSE message. (The envelope is one line of JSON, so one `data:` line.)
fn sse_message(seq: i64, body: &str) -> String {
    let detail_type = serde_json::from_str::<serde_json::Value>(body)
        .ok()
        .and_then(|envelope| envelope["detail-type"].as_str().map(str::to_owned))
        .unwrap_or_default();
    format!("id: {seq}\nevent: {detail_type}\ndata: {body}\n\n")
}

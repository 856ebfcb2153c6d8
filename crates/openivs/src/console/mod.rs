//! The web console at `/console/`: a page served from the binary (its files are embedded here;
//! nothing is fetched from elsewhere at run time) that manages channels through the IVS API
//! itself. The page signs every call with SigV4 in the browser, with the credentials the user
//! typed in, kept in the tab's `sessionStorage`: the server sets no cookie, so there is no
//! session to steal and no cross-site request to forge, and the console can do exactly what the
//! same credentials can do with the AWS CLI.
//!
//! Beside the files, two small answers: `config.json` (unsigned: what the sign-in form and the
//! ingest instructions need to know about this server, nothing secret) and
//! `GET /_openivs/live-channels` (signed like the API): the live figures IVS publishes to
//! CloudWatch, per live channel of the caller's account and region, which the console graphs.

pub mod recordings;

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Path, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::Response;
use serde_json::json;

use crate::http::AppState;

pub const LIVE_CHANNELS_PATH: &str = "/_openivs/live-channels";

/// The vendored hls.js (its LICENSE beside it), at the version the browser tests pin.
const HLS_JS: &str = "hls-1.7.4.min.js";

/// The console's files: name, content type, bytes.
const FILES: &[(&str, &str, &[u8])] = &[
    ("index.html", "text/html; charset=utf-8", include_bytes!("../../assets/console/index.html")),
    ("console.js", "text/javascript; charset=utf-8", include_bytes!("../../assets/console/console.js")),
    ("sigv4.js", "text/javascript; charset=utf-8", include_bytes!("../../assets/console/sigv4.js")),
    ("console.css", "text/css; charset=utf-8", include_bytes!("../../assets/console/console.css")),
    ("icon.svg", "image/svg+xml", include_bytes!("../../assets/console/icon.svg")),
    (HLS_JS, "text/javascript; charset=utf-8", include_bytes!("../../assets/console/vendor/hls-1.7.4.min.js")),
    ("hls.js-LICENSE", "text/plain; charset=utf-8", include_bytes!("../../assets/console/vendor/hls.js-LICENSE")),
];

/// What the page may load and reach: its own files, the API on its origin, and the channels'
/// playback URLs (on this server, whichever scheme it speaks). hls.js runs its transmuxer in a
/// worker made from a `blob:` URL and feeds the video element through a `blob:` media source.
const CONTENT_SECURITY_POLICY: &str = "default-src 'self'; connect-src 'self' http: https:; \
     media-src 'self' blob: data:; worker-src 'self' blob:; img-src 'self' data: blob:; style-src 'self'; \
     script-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'";

/// `/console` → `/console/` (the page's files are named relative to it).
pub async fn redirect() -> Response {
    let mut response = Response::new(Body::empty());
    *response.status_mut() = StatusCode::PERMANENT_REDIRECT;
    response.headers_mut().insert(header::LOCATION, HeaderValue::from_static("/console/"));
    response
}

pub async fn page() -> Response {
    file("index.html")
}

pub async fn asset(Path(name): Path<String>) -> Response {
    file(&name)
}

fn file(name: &str) -> Response {
    let Some((_, content_type, bytes)) = FILES.iter().find(|(file, _, _)| *file == name) else {
        let mut response = Response::new(Body::from("no such file in the console\n"));
        *response.status_mut() = StatusCode::NOT_FOUND;
        return response;
    };
    let mut response = Response::new(Body::from(*bytes));
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    // Revalidated each time: a newer binary's console must not meet an older cached script.
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    headers.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(CONTENT_SECURITY_POLICY));
    headers.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    headers.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    response
}

/// What the page needs to know about this server before anyone signs in.
pub async fn config(State(state): State<Arc<AppState>>) -> Response {
    let body = json!({
        // The public local-development pair, when it is what this server accepts (the start-up
        // banner prints it too); otherwise the user types credentials in.
        "devCredentials": state.auth.accepts_dev_credentials(),
        "defaultRegion": "us-west-2",
        // (The RTMPS server is the channel's ingestEndpoint; plain RTMP is on its own port.)
        "rtmpPort": state.api.endpoints.rtmp_port,
    });
    json_response(StatusCode::OK, &body)
}

fn json_response(status: StatusCode, body: &serde_json::Value) -> Response {
    let mut response = Response::new(Body::from(body.to_string()));
    *response.status_mut() = status;
    response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

/// The live figures of the caller's live channels, as IVS names them in CloudWatch, measured now.
pub async fn live_channels(State(state): State<Arc<AppState>>, request: Request) -> Response {
    let (head, _body) = request.into_parts();
    let caller = match state.auth.authenticate_head(&head) {
        Ok(caller) => caller,
        Err(error) => return crate::http::error_of(&error),
    };
    let now = std::time::Instant::now();
    let channels: Vec<serde_json::Value> = state
        .api
        .live
        .streams_of(&caller.account, &caller.region)
        .iter()
        .map(|stream| {
            let stats = stream.stats.lock().expect("stats lock");
            json!({
                "channelArn": stream.channel_arn,
                "streamId": stream.stream_id,
                "health": stats.health(now).wire_name(),
                "ConcurrentViews": state.api.playback.viewers.viewer_count(&stream.channel_arn),
                "IngestVideoBitrate": stats.video_bitrate(),
                "IngestAudioBitrate": stats.audio_bitrate(),
                "IngestFramerate": stats.video_framerate(),
                "KeyframeInterval": stats.keyframe_interval_seconds(),
            })
        })
        .collect();
    json_response(StatusCode::OK, &json!({ "channels": channels }))
}

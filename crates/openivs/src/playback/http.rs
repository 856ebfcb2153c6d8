//! The HLS origin's HTTP handlers.
//!
//! - `GET /api/video/v1/{region}.{account}.channel.{id}.m3u8` (the channel's `playbackUrl`): the
//!   multivariant playlist, whose variant carries BANDWIDTH, CODECS, RESOLUTION and FRAME-RATE
//!   of the real stream and points into a new viewer session; 404 while the channel is offline.
//!   A private channel's needs `?token=`, and a restriction policy may refuse the viewer: both
//!   are decided by [`super::access`], and a refusal answers 403 with a JSON body
//!   `{"error_code": …, "message": …}` (and nothing of the stream).
//! - `GET /playback/{session}/{channel}/{stream}.m3u8`: the media playlist of one stream (a
//!   stream that starts after it ended has playlists of its own); for LOW latency channels
//!   low-latency HLS with parts, blocking reload (`_HLS_msn`, `_HLS_part`), delta updates
//!   (`_HLS_skip=YES`) and a preload hint.
//! - `GET /playback/{session}/{channel}/{stream}-{msn}.ts` and `…-{msn}.{part}.ts`: segments and
//!   parts, from memory, cacheable and immutable, with byte ranges. A request for the hinted
//!   next part waits until it exists.
//! - Prefetch segments, the low-latency form of the Amazon IVS Player (Twitch's LHLS): LOW
//!   channels' media playlists also name the segment being cut and the one after it with
//!   `#EXT-X-PREFETCH`. Requested, such a segment answers at once and streams its bytes as
//!   they are packaged (chunked transfer), ending when the segment is complete; its URL is the
//!   segment's own, so the bytes are the same whichever way they are fetched.

use std::sync::Arc;
use std::time::Duration;

use axum::Extension;
use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::Response;
use bytes::Bytes;
use openivs_media::hls::{self, LowLatency, MediaPlaylist, Part, Segment, Variant};
use openivs_model::resources::Channel;
use serde::Deserialize;

use super::access::{Denial, Visitor};
use super::packager::{ChannelPlayback, Container, PlaylistState, SegmentCursor, SegmentProgress};
use super::viewers::Refused;
use crate::cluster::pull::{Growing, MEDIA_PATH, MULTIVARIANT_PATH, Pull, Pulled, VIEWER_ADDRESS_HEADER};
use crate::http::AppState;
use crate::http::listener::ClientAddress;

const PLAYLIST_TYPE: &str = "application/vnd.apple.mpegurl";
/// Segments of hold-back a delta update keeps (CAN-SKIP-UNTIL = 6 target durations).
const SKIP_TARGET_DURATIONS: f64 = 6.0;
/// Prefetch segments listed: the one being cut and the next (as IVS and Twitch list them).
const PREFETCH_SEGMENTS: u64 = 2;

fn response(status: StatusCode, content_type: &str, cache: &str, body: impl Into<Body>) -> Response {
    let mut response = Response::new(body.into());
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_str(content_type).unwrap_or(HeaderValue::from_static("text/plain")),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_str(cache).unwrap_or(HeaderValue::from_static("no-cache")));
    headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, HeaderValue::from_static("*"));
    response
}

fn not_found(what: &str) -> Response {
    response(StatusCode::NOT_FOUND, "text/plain", "no-cache", format!("{what}\n"))
}

/// IVS's answer when the concurrent-viewer quota is reached.
fn too_many_viewers() -> Response {
    response(StatusCode::TOO_MANY_REQUESTS, "text/plain", "no-cache", "Too many viewers\n")
}

/// A refusal of the access rules: 403 (500 when the store failed), with a JSON body the player
/// or application can read. CORS allows any origin here, so a refused page learns why.
pub fn denied(denial: &Denial) -> Response {
    let status = match denial {
        Denial::Failed(_) => StatusCode::INTERNAL_SERVER_ERROR,
        _ => StatusCode::FORBIDDEN,
    };
    let body = serde_json::json!({ "error_code": denial.code(), "message": denial.message() });
    response(status, "application/json", "no-cache", body.to_string())
}

/// Puts the session's `Access-Control-Allow-Origin` on a response (`*` is already there).
fn allow_origin(mut response: Response, origin: Option<String>) -> Response {
    if let Some(value) = origin.and_then(|o| HeaderValue::from_str(&o).ok()) {
        response.headers_mut().insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, value);
        response.headers_mut().insert(header::VARY, HeaderValue::from_static("Origin"));
    }
    response
}

fn origin_of(headers: &HeaderMap) -> Option<&str> {
    headers.get(header::ORIGIN).and_then(|o| o.to_str().ok())
}

fn bad_request(what: &str) -> Response {
    response(StatusCode::BAD_REQUEST, "text/plain", "no-cache", format!("{what}\n"))
}

/// `us-west-2.123456789012.channel.abcdABCDefgh.m3u8` → the channel's ARN.
fn channel_arn_of(name: &str) -> Option<String> {
    let stem = name.strip_suffix(".m3u8")?;
    let parts: Vec<&str> = stem.split('.').collect();
    let [region, account, "channel", id] = parts[..] else { return None };
    let arn = format!("arn:aws:ivs:{region}:{account}:channel/{id}");
    openivs_model::Arn::parse(&arn).map(|_| arn)
}

/// Waits (at most `limit`) until `ready` holds for the channel's playlist state.
async fn wait_until(playback: &ChannelPlayback, limit: Duration, ready: impl Fn(&PlaylistState) -> bool) -> bool {
    let mut changes = playback.changed.subscribe();
    let waited = tokio::time::timeout(limit, async {
        loop {
            if ready(&playback.state.read().expect("playlist lock")) {
                return;
            }
            if changes.changed().await.is_err() {
                return;
            }
        }
    })
    .await;
    waited.is_ok() && ready(&playback.state.read().expect("playlist lock"))
}

#[derive(Debug, Default, Deserialize)]
pub struct MultivariantQuery {
    token: Option<String>,
}

/// Counts a playback response in the metrics: its kind, status and size (when it is known: a
/// prefetch segment streamed while written counts its status only).
fn counted(kind: &'static str, response: Response) -> Response {
    use axum::body::HttpBody;
    let bytes = response.body().size_hint().exact().unwrap_or(0) as usize;
    crate::metrics::global().playback_request(kind, response.status().as_u16(), bytes);
    response
}

/// What a media file name asks for, as the metrics count it (names [`parse_media_name`] does
/// not know count as segments).
fn kind_of(file: &str) -> &'static str {
    if file.ends_with(".m3u8") {
        return "playlist";
    }
    if file.ends_with("-init.mp4") {
        return "init";
    }
    let parsed = [Container::Ts, Container::Fmp4].into_iter().find_map(|c| parse_media_name(file, c));
    match parsed {
        Some((_, _, Some(_))) => "part",
        _ => "segment",
    }
}

pub async fn multivariant(
    state: State<Arc<AppState>>,
    name: Path<String>,
    query: Query<MultivariantQuery>,
    address: Extension<ClientAddress>,
    headers: HeaderMap,
) -> Response {
    counted("multivariant", multivariant_response(state, name, query, address, headers).await)
}

async fn multivariant_response(
    State(state): State<Arc<AppState>>,
    Path(name): Path<String>,
    Query(query): Query<MultivariantQuery>,
    Extension(ClientAddress(peer)): Extension<ClientAddress>,
    headers: HeaderMap,
) -> Response {
    let Some(arn) = channel_arn_of(&name) else { return not_found("No such channel") };
    let Ok(Some(record)) = state.api.store.get(&arn).await else { return not_found("No such channel") };
    let Ok(channel) = record.decode::<Channel>() else { return not_found("No such channel") };
    let playback = state.api.playback.channel(&arn).filter(|_| state.api.live.is_live(&arn));
    if playback.is_none()
        && let Some(holder) = state.api.origin_pull.remote_holder(state.api.store.as_ref(), &arn).await
    {
        // Another node ingests the stream: it admits the viewer and opens the session (whose
        // id every node accepts), as it would for a viewer of its own.
        let address = state.api.playback.access.viewer_address(peer, &headers);
        let mut path = format!("{MULTIVARIANT_PATH}/{name}");
        if let Some(token) = &query.token {
            let token = percent_encoding::utf8_percent_encode(token, percent_encoding::NON_ALPHANUMERIC);
            path.push_str(&format!("?token={token}"));
        }
        let mut passed = vec![(VIEWER_ADDRESS_HEADER, address.to_string())];
        if let Some(origin) = origin_of(&headers) {
            passed.push(("origin", origin.to_owned()));
        }
        return match state.api.origin_pull.pull_alone(&holder.origin_url, &path, &passed).await {
            Ok(pulled) => relay(&pulled, &headers, false),
            Err(error) => origin_unreachable(&holder.origin_url, &error),
        };
    }
    if let Some(playback) = &playback {
        // A stream that just started has no complete segment yet (so no measured bandwidth and
        // size, and nothing to play), nor its transcoded renditions: give it the moment it takes.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        wait_until(playback, Duration::from_secs(5), |s| !s.segments.is_empty()).await;
        while !playback.renditions_ready() && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    let offered = playback.as_ref().map(|p| p.offered()).unwrap_or_default();
    let lowest_height = offered.iter().filter_map(|r| r.short_side()).min();
    let origin = origin_of(&headers);
    let access = &state.api.playback.access;
    let address = access.viewer_address(peer, &headers);
    // The door comes before "offline": a viewer without the right to watch learns nothing.
    let visitor = Visitor { channel: &channel, token: query.token.as_deref(), origin, address, lowest_height };
    let admission = match access.admit(state.api.store.as_ref(), &visitor).await {
        Ok(admission) => admission,
        Err(denial) => return denied(&denial),
    };
    if playback.is_none() {
        return not_found("The channel is not broadcasting");
    }
    if !state.api.playback.viewers.would_admit(&arn, address) {
        return too_many_viewers();
    }
    if let Some((uuid, expires_at)) = &admission.single_use
        && let Err(denial) = access.use_single_use(state.api.store.as_ref(), uuid, *expires_at).await
    {
        return denied(&denial);
    }
    // The session is a signed token: nothing is held until it fetches media.
    let session = state.api.playback.viewers.issue(&arn, channel.latency_mode == "LOW", &admission.rules);
    let source_frame_rate = state.api.live.stream(&arn).map(|s| s.stats.lock().expect("stats lock").video_framerate());
    let stem = name.trim_end_matches(".m3u8");
    let variants: Vec<Variant> = offered
        .iter()
        .filter(|r| admission.rules.allows_height(r.short_side()))
        .map(|rendition| {
            let playlist = rendition.state.read().expect("playlist lock");
            let frame_rate = match &rendition.rendition {
                Some(name) => name.split_once('p').and_then(|(_, fps)| fps.parse::<f64>().ok()),
                None => playlist.frame_rate.or(source_frame_rate).map(nominal_frame_rate),
            };
            let name = rendition.rendition.clone().or_else(|| {
                let (width, height) = playlist.resolution?;
                Some(format!("{}p{}", width.min(height), frame_rate?.round()))
            });
            Variant {
                uri: format!("/playback/{session}/{stem}/{}.m3u8", rendition.id),
                bandwidth: playlist.bandwidth.max(1),
                average_bandwidth: Some(playlist.average_bandwidth.max(1)),
                codecs: playlist.codecs.clone(),
                resolution: playlist.resolution,
                frame_rate: frame_rate.filter(|r| *r > 0.0),
                name,
            }
        })
        .collect();
    let body = hls::multivariant(&variants);
    let response = response(StatusCode::OK, PLAYLIST_TYPE, "no-cache", body);
    allow_origin(response, admission.rules.allow_origin_header(origin))
}

/// A measured frame rate as the nominal rate it is within 0.5 % of (29.994 → 30, 29.97 stays).
fn nominal_frame_rate(measured: f64) -> f64 {
    const NOMINAL: [f64; 10] = [23.976, 24.0, 25.0, 29.97, 30.0, 48.0, 50.0, 59.94, 60.0, 120.0];
    NOMINAL
        .into_iter()
        .filter(|rate| (measured - rate).abs() <= rate * 0.005)
        .min_by(|a, b| (measured - a).abs().total_cmp(&(measured - b).abs()))
        .unwrap_or(measured)
}

#[derive(Debug, Default, Deserialize)]
pub struct PlaylistQuery {
    #[serde(rename = "_HLS_msn")]
    msn: Option<String>,
    #[serde(rename = "_HLS_part")]
    part: Option<String>,
    #[serde(rename = "_HLS_skip")]
    skip: Option<String>,
}

pub async fn media(
    state: State<Arc<AppState>>,
    Path((session, channel, file)): Path<(String, String, String)>,
    query: Query<PlaylistQuery>,
    address: Extension<ClientAddress>,
    headers: HeaderMap,
) -> Response {
    let kind = kind_of(&file);
    counted(kind, media_of_session(state, (session, channel, file), query, address, headers).await)
}

async fn media_of_session(
    State(state): State<Arc<AppState>>,
    (session, channel, file): (String, String, String),
    Query(query): Query<PlaylistQuery>,
    Extension(ClientAddress(peer)): Extension<ClientAddress>,
    headers: HeaderMap,
) -> Response {
    let Some(channel_arn) = channel_arn_of(&format!("{channel}.m3u8")) else {
        return not_found("No such playback session");
    };
    let address = state.api.playback.access.viewer_address(peer, &headers);
    let viewer = match state.api.playback.viewers.touch(&session, &channel_arn, address) {
        Ok(viewer) => viewer,
        Err(Refused::Unknown) => return not_found("No such playback session"),
        Err(Refused::TooMany) => return too_many_viewers(),
        Err(Refused::Revoked) => return denied(&Denial::SessionRevoked),
    };
    let origin = origin_of(&headers);
    if !viewer.rules.allows_request_from(origin) {
        return denied(&Denial::OriginNotAllowed);
    }
    let response = if state.api.playback.playlists_of_file(&viewer.channel_arn, &file).is_none()
        && let Some(holder) = state.api.origin_pull.serving_node(state.api.store.as_ref(), &channel_arn).await
    {
        pulled_media(&state, &holder.origin_url, &channel, &file, &viewer, &query, &headers).await
    } else {
        media_response(&state, &viewer.channel_arn, viewer.low_latency, &viewer.rules, &file, &query, &headers).await
    };
    allow_origin(response, viewer.rules.allow_origin_header(origin))
}

/// A media playlist or file of a stream another node ingests, pulled from that node: files
/// (which never change) shared and kept, playlists shared by identical requests in flight.
async fn pulled_media(
    state: &AppState,
    origin_url: &str,
    channel: &str,
    file: &str,
    viewer: &super::viewers::ViewerSession,
    query: &PlaylistQuery,
    headers: &HeaderMap,
) -> Response {
    let mut path = format!("{MEDIA_PATH}/{channel}/{file}?ll={}", u8::from(viewer.low_latency));
    if let Some(max_height) = viewer.rules.max_height {
        path.push_str(&format!("&mh={max_height}"));
    }
    let immutable = !file.ends_with(".m3u8");
    if !immutable {
        // (The playlists a node pulls carry its viewers of the channel: viewerCount counts them.)
        let viewers = state.api.playback.viewers.held_here(&viewer.channel_arn);
        let node_id =
            percent_encoding::utf8_percent_encode(&state.api.peers.node.node_id, percent_encoding::NON_ALPHANUMERIC);
        path.push_str(&format!("&node={node_id}&viewers={viewers}"));
        for (name, value) in [("_HLS_msn", &query.msn), ("_HLS_part", &query.part), ("_HLS_skip", &query.skip)] {
            if let Some(value) = value {
                let value = percent_encoding::utf8_percent_encode(value, percent_encoding::NON_ALPHANUMERIC);
                path.push_str(&format!("&{name}={value}"));
            }
        }
    }
    match state.api.origin_pull.pull(origin_url, &path, immutable).await {
        Ok(Pull::Whole(pulled)) => relay(&pulled, headers, immutable),
        Ok(Pull::Growing(growing)) => relay_growing(growing),
        Err(error) => origin_unreachable(origin_url, &error),
    }
}

/// A segment the ingesting node is still writing, passed on as its bytes arrive.
fn relay_growing(growing: Growing) -> Response {
    let body = Body::from_stream(growing.response.bytes_stream());
    let relayed = response(StatusCode::OK, &growing.content_type, "no-cache", body);
    with_allowed_origin(relayed, growing.allow_origin.as_deref())
}

/// What the node that ingests the stream answered, passed on (a file's bytes as this node
/// serves its own: with byte ranges).
fn relay(pulled: &Pulled, headers: &HeaderMap, immutable: bool) -> Response {
    let relayed = if immutable && pulled.status == 200 {
        serve_bytes(vec![pulled.body.clone()], &pulled.content_type, headers)
    } else {
        let status = StatusCode::from_u16(pulled.status).unwrap_or(StatusCode::BAD_GATEWAY);
        response(status, &pulled.content_type, &pulled.cache_control, pulled.body.clone())
    };
    with_allowed_origin(relayed, pulled.allow_origin.as_deref())
}

/// The origin node's `Access-Control-Allow-Origin`, passed on.
fn with_allowed_origin(mut relayed: Response, allow_origin: Option<&str>) -> Response {
    if let Some(allowed) = allow_origin.and_then(|v| HeaderValue::from_str(v).ok()) {
        relayed.headers_mut().insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, allowed);
    }
    relayed
}

fn origin_unreachable(origin_url: &str, error: &str) -> Response {
    tracing::warn!("playback: cannot pull from {origin_url}: {error}");
    response(StatusCode::BAD_GATEWAY, "text/plain", "no-cache", "The node that ingests this stream did not answer\n")
}

/// Whether a request to an internal playback endpoint is signed with the cluster secret.
fn from_a_node(state: &AppState, uri: &axum::http::Uri, headers: &HeaderMap) -> bool {
    let path = uri.path_and_query().map_or(uri.path(), |p| p.as_str());
    state.api.peers.verify_request(headers, path, b"")
}

fn not_from_a_node() -> Response {
    response(StatusCode::FORBIDDEN, "text/plain", "no-cache", "Not signed with this cluster's secret\n")
}

/// The multivariant playlist for a viewer another node serves (`MULTIVARIANT_PATH/{name}`):
/// decided here, for the viewer's address as that node saw it.
pub async fn cluster_multivariant(
    state: State<Arc<AppState>>,
    name: Path<String>,
    query: Query<MultivariantQuery>,
    uri: axum::http::Uri,
    headers: HeaderMap,
) -> Response {
    if !from_a_node(&state, &uri, &headers) {
        return not_from_a_node();
    }
    let address = headers.get(VIEWER_ADDRESS_HEADER).and_then(|v| v.to_str().ok()).and_then(|v| v.parse().ok());
    let Some(address) = address else { return bad_request("No viewer address") };
    crate::metrics::global().cluster_origin_request("multivariant");
    multivariant_response(state, name, query, Extension(ClientAddress(address)), headers).await
}

/// What another node asks of a media playlist or file of a stream this node ingests
/// (`MEDIA_PATH/{channel}/{file}`), for a session it checked: `ll` its latency mode, `mh` its
/// largest picture.
#[derive(Deserialize)]
pub struct ClusterMediaQuery {
    ll: Option<String>,
    mh: Option<String>,
    /// The asking node and its viewers of the channel (with playlist requests).
    node: Option<String>,
    viewers: Option<String>,
    #[serde(flatten)]
    playlist: PlaylistQuery,
}

pub async fn cluster_media(
    State(state): State<Arc<AppState>>,
    Path((channel, file)): Path<(String, String)>,
    Query(query): Query<ClusterMediaQuery>,
    uri: axum::http::Uri,
    headers: HeaderMap,
) -> Response {
    if !from_a_node(&state, &uri, &headers) {
        return not_from_a_node();
    }
    let Some(channel_arn) = channel_arn_of(&format!("{channel}.m3u8")) else { return not_found("No such channel") };
    crate::metrics::global().cluster_origin_request(kind_of(&file));
    let rules = super::access::SessionRules {
        max_height: query.mh.as_deref().and_then(|h| h.parse().ok()),
        ..Default::default()
    };
    let low_latency = query.ll.as_deref() == Some("1");
    if let (Some(node_id), Some(viewers)) = (&query.node, query.viewers.as_deref().and_then(|v| v.parse().ok())) {
        state.api.playback.viewers.report_elsewhere(&channel_arn, node_id, viewers);
    }
    media_response(&state, &channel_arn, low_latency, &rules, &file, &query.playlist, &HeaderMap::new()).await
}

/// A session's media playlist, init section, segment or part.
async fn media_response(
    state: &AppState,
    channel_arn: &str,
    low_latency: bool,
    rules: &super::access::SessionRules,
    file: &str,
    query: &PlaylistQuery,
    headers: &HeaderMap,
) -> Response {
    let Some(playback) = state.api.playback.playlists_of_file(channel_arn, file) else {
        return not_found("The channel is not broadcasting");
    };
    if !rules.allows_height(playback.short_side()) {
        let height = playback.short_side().unwrap_or_default();
        let maximum = format!("{}p", rules.max_height.unwrap_or_default());
        return denied(&Denial::ResolutionNotAllowed { height, maximum });
    }
    if file.strip_suffix(".m3u8") == Some(&*playback.id) {
        return media_playlist(&playback, low_latency, query).await;
    }
    if let Some(stream_id) = file.strip_suffix("-init.mp4") {
        let state = playback.state.read().expect("playlist lock");
        let init = state.inits.iter().find(|(id, _)| &**id == stream_id).map(|(_, init)| init.clone());
        drop(state);
        return match init {
            Some(init) => serve_bytes(vec![init], "video/mp4", headers),
            None => not_found("No such file"),
        };
    }
    match parse_media_name(file, playback.packaging.container) {
        Some((stream_id, sequence, part)) => media_file(&playback, &stream_id, sequence, part, headers).await,
        None => not_found("No such file"),
    }
}

/// `{stream}-{msn}.{ext}` or `{stream}-{msn}.{part}.{ext}` (`ts` or `m4s`).
fn parse_media_name(file: &str, container: Container) -> Option<(String, u64, Option<usize>)> {
    let stem = file.strip_suffix(container.extension())?.strip_suffix('.')?;
    let (stream_id, numbers) = stem.rsplit_once('-')?;
    let (sequence, part) = match numbers.split_once('.') {
        Some((sequence, part)) => (sequence.parse().ok()?, Some(part.parse().ok()?)),
        None => (numbers.parse().ok()?, None),
    };
    Some((stream_id.to_owned(), sequence, part))
}

async fn media_playlist(playback: &ChannelPlayback, low_latency: bool, query: &PlaylistQuery) -> Response {
    let msn = match query.msn.as_deref().map(str::parse::<u64>) {
        None => None,
        Some(Ok(msn)) => Some(msn),
        Some(Err(_)) => return bad_request("_HLS_msn must be a number"),
    };
    let part = match query.part.as_deref().map(str::parse::<usize>) {
        None => None,
        Some(Ok(part)) => Some(part),
        Some(Err(_)) => return bad_request("_HLS_part must be a number"),
    };
    if part.is_some() && msn.is_none() {
        return bad_request("_HLS_part needs _HLS_msn");
    }
    if let (Some(msn), true) = (msn, low_latency) {
        let (next, open_parts, target, part_target_ms) = {
            let s = playback.state.read().expect("playlist lock");
            let next = s.open.as_ref().map_or(s.next_sequence, |o| o.sequence);
            (next, s.open.as_ref().map_or(0, |o| o.parts.len()), s.target_duration(), s.part_target_ms())
        };
        // Far in the future: refused at once rather than held (RFC 8216bis 6.2.5.2; its Advance
        // Part Limit is three seconds of parts when parts are shorter than a second).
        let advance_part_limit = (3000 / part_target_ms.max(1)) as usize;
        let too_far = msn > next + 1 || (msn == next && part.unwrap_or(0) > open_parts + advance_part_limit);
        if too_far {
            return bad_request("The requested segment or part is too far in the future");
        }
        let waiting = std::time::Instant::now();
        let ready = wait_until(playback, Duration::from_secs(3 * target.max(1)), |s| s.ended || s.has(msn, part)).await;
        crate::metrics::global().blocking_reload_wait.observe(waiting.elapsed().as_secs_f64());
        if !ready {
            return response(StatusCode::SERVICE_UNAVAILABLE, "text/plain", "no-cache", "Not available yet; retry\n");
        }
    }
    let skip_requested = low_latency && query.skip.as_deref() == Some("YES");
    let form = usize::from(low_latency) * 2 + usize::from(skip_requested);
    // The version is read before the state, so a body kept under it never shows an older state.
    let version = *playback.changed.borrow();
    let cached = playback.rendered.lock().expect("rendered playlists lock").get(version, form);
    let body = match cached {
        Some(body) => body,
        None => {
            let state = playback.state.read().expect("playlist lock");
            let body = Bytes::from(render(&state, playback.packaging.container, low_latency, skip_requested));
            drop(state);
            playback.rendered.lock().expect("rendered playlists lock").keep(version, form, body.clone());
            body
        }
    };
    response(StatusCode::OK, PLAYLIST_TYPE, "no-cache", body)
}

fn segment_uri(stream_id: &str, sequence: u64, container: Container) -> String {
    format!("{stream_id}-{sequence}.{}", container.extension())
}

fn part_uri(stream_id: &str, sequence: u64, part: usize, container: Container) -> String {
    format!("{stream_id}-{sequence}.{part}.{}", container.extension())
}

/// fMP4 segments need their stream's initialisation section.
fn map_uri(stream_id: &str, container: Container) -> Option<String> {
    (container == Container::Fmp4).then(|| format!("{stream_id}-init.mp4"))
}

/// Completed segments whose parts the playlist lists (RFC 8216bis: parts may be dropped from
/// the playlist once they are more than three target durations from the live edge).
const SEGMENTS_LISTING_PARTS: usize = 3;

fn render(state: &PlaylistState, container: Container, low_latency: bool, skip_requested: bool) -> String {
    let target = state.target_duration();
    let list_parts_from = state.segments.len().saturating_sub(SEGMENTS_LISTING_PARTS);
    let segments: Vec<Segment> = state
        .segments
        .iter()
        .enumerate()
        .map(|(index, s)| Segment {
            sequence: s.sequence,
            duration: s.duration,
            uri: segment_uri(&s.stream_id, s.sequence, container),
            program_date_time: s.program_date_time.clone(),
            discontinuity: s.discontinuity,
            map_uri: map_uri(&s.stream_id, container),
            parts: s
                .parts
                .iter()
                .take(if index >= list_parts_from { usize::MAX } else { 0 })
                .enumerate()
                .map(|(i, p)| Part {
                    duration: p.duration,
                    uri: part_uri(&s.stream_id, s.sequence, i, container),
                    independent: p.independent,
                })
                .collect(),
            ad: s.ad.clone(),
        })
        .collect();
    let can_skip_until = SKIP_TARGET_DURATIONS * target as f64;
    let skip_segments = if skip_requested {
        // Skip the oldest segments that lie wholly before CAN-SKIP-UNTIL from the end.
        let mut remaining: f64 = segments.iter().map(|s| s.duration).sum();
        let mut skip = 0;
        for segment in &segments {
            if remaining - segment.duration < can_skip_until {
                break;
            }
            remaining -= segment.duration;
            skip += 1;
        }
        skip
    } else {
        0
    };
    let low_latency = low_latency.then(|| {
        let (pending_parts, preload_hint) = match &state.open {
            Some(open) if !state.ended => (
                open.parts
                    .iter()
                    .enumerate()
                    .map(|(i, p)| Part {
                        duration: p.duration,
                        uri: part_uri(&open.stream_id, open.sequence, i, container),
                        independent: p.independent,
                    })
                    .collect(),
                (!open.part_may_move).then(|| part_uri(&open.stream_id, open.sequence, open.parts.len(), container)),
            ),
            _ => (Vec::new(), None),
        };
        let pending_map_uri = state.open.as_ref().and_then(|open| map_uri(&open.stream_id, container));
        let pending_discontinuity = state.open.as_ref().is_some_and(|open| open.discontinuity);
        let pending_ad = state.open.as_ref().filter(|_| !state.ended).map(|open| open.ad.clone()).unwrap_or_default();
        // The segment being cut and the next one, for players that fetch segments as they are
        // written (the IVS player) rather than part by part.
        let prefetch = match &state.open {
            Some(open) if !state.ended => (open.sequence..open.sequence + PREFETCH_SEGMENTS)
                .map(|sequence| segment_uri(&open.stream_id, sequence, container))
                .collect(),
            _ => Vec::new(),
        };
        // PART-HOLD-BACK: three part targets (whole milliseconds, so exact).
        let part_target_ms = state.part_target_ms();
        LowLatency {
            part_target: part_target_ms as f64 / 1000.0,
            part_hold_back: (3 * part_target_ms) as f64 / 1000.0,
            can_skip_until,
            pending_parts,
            pending_map_uri,
            pending_discontinuity,
            pending_ad,
            preload_hint,
            prefetch,
        }
    });
    MediaPlaylist {
        target_duration: target,
        media_sequence: state.segments.front().map_or(state.next_sequence, |s| s.sequence),
        discontinuity_sequence: state.discontinuity_sequence,
        segments,
        low_latency,
        ended: state.ended,
        skip_segments,
        trailing_ad: state.post_roll.clone(),
    }
    .render()
}

/// A segment or part's bytes (as buffers, not copied), if the window holds them.
fn find(state: &PlaylistState, stream_id: &str, sequence: u64, part: Option<usize>) -> Option<Vec<Bytes>> {
    if let Some(segment) = state.segment(stream_id, sequence) {
        return match part {
            None => Some(segment.pieces()),
            Some(index) => segment.parts.get(index).map(|p| vec![p.data.clone()]),
        };
    }
    let open = state.open.as_ref().filter(|o| o.sequence == sequence && &*o.stream_id == stream_id)?;
    open.parts.get(part?).map(|p| vec![p.data.clone()])
}

async fn media_file(
    playback: &Arc<ChannelPlayback>,
    stream_id: &str,
    sequence: u64,
    part: Option<usize>,
    headers: &HeaderMap,
) -> Response {
    let found = find(&playback.state.read().expect("playlist lock"), stream_id, sequence, part);
    let data = match found {
        Some(data) => data,
        None if part.is_none() => return prefetch_segment(playback, stream_id, sequence),
        None => {
            // The hinted next part (or the first of the next segment): wait for it.
            let hinted = {
                let s = playback.state.read().expect("playlist lock");
                match (&s.open, part) {
                    (Some(open), Some(index)) if !s.ended && &*open.stream_id == stream_id => {
                        (open.sequence == sequence && index == open.parts.len())
                            || (open.sequence + 1 == sequence && index == 0)
                    }
                    _ => false,
                }
            };
            if !hinted {
                return not_found("No such segment");
            }
            // (A part of a segment that was cut before it began never comes: answered at once.)
            let limit = Duration::from_secs(3);
            let gone = |s: &PlaylistState| {
                s.open.as_ref().is_none_or(|open| &*open.stream_id != stream_id || open.sequence > sequence)
            };
            wait_until(playback, limit, |s| s.ended || gone(s) || find(s, stream_id, sequence, part).is_some()).await;
            match find(&playback.state.read().expect("playlist lock"), stream_id, sequence, part) {
                Some(data) => data,
                None => return not_found("No such segment"),
            }
        }
    };
    serve_bytes(data, playback.packaging.container.media_type(), headers)
}

/// A segment still being cut, or the next one: answered at once, its bytes streamed as they are
/// packaged until it is complete (chunked transfer, no Content-Length). 404 if the window has no
/// such segment coming; a stream that ends first aborts the response, so a client never takes a
/// cut-short segment for a whole one.
fn prefetch_segment(playback: &Arc<ChannelPlayback>, stream_id: &str, sequence: u64) -> Response {
    // Subscribed before the first read, so no change between the two goes unnoticed.
    let appended = playback.appended.subscribe();
    let mut cursor = SegmentCursor::default();
    let first = playback.state.read().expect("playlist lock").read_segment(stream_id, sequence, &mut cursor);
    let first = match first {
        SegmentProgress::Gone => return not_found("No such segment"),
        SegmentProgress::NotBegun => None,
        SegmentProgress::Bytes { pieces, complete } => Some((pieces, complete)),
    };
    struct Reader {
        playback: Arc<ChannelPlayback>,
        appended: tokio::sync::watch::Receiver<u64>,
        stream_id: String,
        sequence: u64,
        cursor: SegmentCursor,
        /// Bytes read but not yet sent, and whether the segment was complete after them.
        ready: Option<(Vec<Bytes>, bool)>,
        done: bool,
    }
    let reader = Reader {
        appended,
        playback: playback.clone(),
        stream_id: stream_id.to_owned(),
        sequence,
        cursor,
        ready: first,
        done: false,
    };
    // No new byte for this long means the stream stopped without ending: give up.
    let idle_limit = Duration::from_secs(3 * playback.state.read().expect("playlist lock").target_duration().max(1));
    let chunks = futures_util::stream::unfold(reader, move |mut reader| async move {
        loop {
            if reader.done {
                return None;
            }
            if let Some((pieces, complete)) = reader.ready.take() {
                reader.done = complete;
                if !pieces.is_empty() {
                    let chunk: Bytes = if pieces.len() == 1 { pieces[0].clone() } else { pieces.concat().into() };
                    return Some((Ok(chunk), reader));
                }
                continue;
            }
            if tokio::time::timeout(idle_limit, reader.appended.changed()).await.is_err() {
                return Some((
                    Err(std::io::Error::other("the segment stopped growing")),
                    Reader { done: true, ..reader },
                ));
            }
            let progress = reader.playback.state.read().expect("playlist lock").read_segment(
                &reader.stream_id,
                reader.sequence,
                &mut reader.cursor,
            );
            match progress {
                SegmentProgress::Bytes { pieces, complete } => reader.ready = Some((pieces, complete)),
                SegmentProgress::NotBegun => {}
                SegmentProgress::Gone => {
                    return Some((
                        Err(std::io::Error::other("the stream ended first")),
                        Reader { done: true, ..reader },
                    ));
                }
            }
        }
    });
    response(StatusCode::OK, playback.packaging.container.media_type(), "no-cache", Body::from_stream(chunks))
}

/// Serves immutable media (a list of buffers, streamed without copying), honouring a single
/// `Range: bytes=…` request.
fn serve_bytes(pieces: Vec<Bytes>, content_type: &str, headers: &HeaderMap) -> Response {
    const CACHE: &str = "public, max-age=31536000, immutable";
    let total: usize = pieces.iter().map(Bytes::len).sum();
    let body = |pieces: Vec<Bytes>| {
        Body::from_stream(futures_util::stream::iter(pieces.into_iter().map(Ok::<Bytes, std::convert::Infallible>)))
    };
    let with_length = |mut response: Response, length: usize| {
        if let Ok(value) = HeaderValue::from_str(&length.to_string()) {
            response.headers_mut().insert(header::CONTENT_LENGTH, value);
        }
        response.headers_mut().insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
        response
    };
    let Some(range) = headers.get(header::RANGE).and_then(|v| v.to_str().ok()) else {
        return with_length(response(StatusCode::OK, content_type, CACHE, body(pieces)), total);
    };
    let Some((start, end)) = parse_range(range, total) else {
        let mut refused = response(StatusCode::RANGE_NOT_SATISFIABLE, "text/plain", "no-cache", "Invalid range\n");
        if let Ok(value) = HeaderValue::from_str(&format!("bytes */{total}")) {
            refused.headers_mut().insert(header::CONTENT_RANGE, value);
        }
        return refused;
    };
    // The requested bytes, as slices of the buffers they fall in.
    let mut slices = Vec::new();
    let mut offset = 0;
    for piece in pieces {
        let (piece_start, piece_end) = (offset, offset + piece.len());
        offset = piece_end;
        if piece_end <= start || piece_start > end {
            continue;
        }
        let from = start.saturating_sub(piece_start);
        let to = (end + 1).min(piece_end) - piece_start;
        slices.push(piece.slice(from..to));
    }
    let mut partial =
        with_length(response(StatusCode::PARTIAL_CONTENT, content_type, CACHE, body(slices)), end - start + 1);
    if let Ok(value) = HeaderValue::from_str(&format!("bytes {start}-{end}/{total}")) {
        partial.headers_mut().insert(header::CONTENT_RANGE, value);
    }
    partial
}

/// `bytes=a-b`, `bytes=a-`, `bytes=-n` → an inclusive range within `total`.
fn parse_range(range: &str, total: usize) -> Option<(usize, usize)> {
    let spec = range.strip_prefix("bytes=")?;
    if spec.contains(',') || total == 0 {
        return None;
    }
    let (first, last) = spec.split_once('-')?;
    let (start, end) = match (first.trim(), last.trim()) {
        ("", suffix) => {
            let n: usize = suffix.parse().ok()?;
            (total.checked_sub(n.min(total))?, total - 1)
        }
        (start, "") => (start.parse().ok()?, total - 1),
        (start, end) => (start.parse().ok()?, end.parse::<usize>().ok()?.min(total - 1)),
    };
    (start <= end && start < total).then_some((start, end))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn measured_frame_rates_are_named_by_their_nominal_rate() {
        assert_eq!(nominal_frame_rate(29.994), 30.0);
        assert_eq!(nominal_frame_rate(29.968), 29.97);
        assert_eq!(nominal_frame_rate(59.7), 59.94);
        assert_eq!(nominal_frame_rate(17.5), 17.5);
    }

    #[test]
    fn names() {
        assert_eq!(
            channel_arn_of("us-west-2.123456789012.channel.abcdABCDefgh.m3u8").as_deref(),
            Some("arn:aws:ivs:us-west-2:123456789012:channel/abcdABCDefgh")
        );
        assert_eq!(channel_arn_of("us-west-2.123456789012.stage.abc.m3u8"), None);
        assert_eq!(channel_arn_of("x.m3u8"), None);
        assert_eq!(parse_media_name("st-abc-12.ts", Container::Ts), Some(("st-abc".into(), 12, None)));
        assert_eq!(parse_media_name("st-abc-12.3.ts", Container::Ts), Some(("st-abc".into(), 12, Some(3))));
        assert_eq!(parse_media_name("st-abc-12.3.m4s", Container::Fmp4), Some(("st-abc".into(), 12, Some(3))));
        assert_eq!(parse_media_name("st-abc-12.m4s", Container::Ts), None);
        assert_eq!(parse_media_name("st-abc-x.ts", Container::Ts), None);
        // What the metrics count each as (a comeback's feed `st-abc.1` included).
        let kinds = ["st-abc.m3u8", "st-abc-init.mp4", "st-abc-12.3.m4s", "st-abc.1-12.3.ts", "st-abc.1-12.ts", "x"];
        assert_eq!(kinds.map(kind_of), ["playlist", "init", "part", "part", "segment", "segment"]);
    }

    #[test]
    fn ranges() {
        assert_eq!(parse_range("bytes=0-9", 100), Some((0, 9)));
        assert_eq!(parse_range("bytes=90-", 100), Some((90, 99)));
        assert_eq!(parse_range("bytes=-10", 100), Some((90, 99)));
        assert_eq!(parse_range("bytes=50-500", 100), Some((50, 99)));
        assert_eq!(parse_range("bytes=100-", 100), None);
        assert_eq!(parse_range("bytes=5-1", 100), None);
        assert_eq!(parse_range("items=0-1", 100), None);
    }
}

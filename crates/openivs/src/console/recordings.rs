//! The console's view of recordings: `GET /_openivs/recordings?channelArn=…` lists a channel's
//! newest recordings, and `GET /_openivs/recordings/{bucket}/{key}` serves their objects
//! (playlists, segments, thumbnails), both signed with SigV4 like the API.
//!
//! A recording is found where IVS writes it: under `ivs/v1/{account}/{channel id}/{year}/{month}/
//! {day}/{hour}/{minute}/{recording id}/` of the bucket of any of the caller's recording
//! configurations (a channel may have changed configuration since). Its
//! `events/recording-started.json` and `recording-ended.json` say what it holds. A caller reads
//! only keys under its own account's `ivs/v1/{account}/`.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Path, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::Response;
use openivs_model::arn::{Arn, ResourceType};
use openivs_model::{ErrorKind, IvsError};
use serde_json::{Value, json};

use crate::http::AppState;
use crate::store::ListQuery;

pub const PATH: &str = "/_openivs/recordings";

/// At most this many recordings are listed, newest first.
const LISTED: usize = 20;

pub async fn list(State(state): State<Arc<AppState>>, request: Request) -> Response {
    let (head, _body) = request.into_parts();
    let caller = match state.auth.authenticate_head(&head) {
        Ok(caller) => caller,
        Err(error) => return crate::http::error_of(&error),
    };
    let channel_arn = crate::http::query_value(head.uri.query(), "channelArn").unwrap_or_default();
    let channel = match Arn::parse(&channel_arn) {
        Some(arn)
            if arn.resource_type == ResourceType::Channel
                && arn.account == caller.account
                && arn.region == caller.region =>
        {
            arn
        }
        _ => return crate::http::error_of(&IvsError::validation("channelArn must name one of your channels")),
    };
    let query = ListQuery {
        resource_type: Some(ResourceType::RecordingConfiguration),
        account: caller.account.clone(),
        region: caller.region.clone(),
        parent_arn: None,
        name: None,
        referencing: None,
        after_seq: 0,
        limit: 1000,
    };
    let configurations = match state.api.store.list(&query).await {
        Ok(records) => records,
        Err(error) => return crate::http::error_of(&error),
    };
    let mut buckets: Vec<String> = configurations
        .iter()
        .filter_map(|record| serde_json::from_str::<Value>(&record.body).ok())
        .filter_map(|body| body["destinationConfiguration"]["s3"]["bucketName"].as_str().map(str::to_owned))
        .collect();
    buckets.sort();
    buckets.dedup();
    let root = format!("ivs/v1/{}/{}", channel.account, channel.id);
    let mut recordings = Vec::new();
    for bucket in &buckets {
        for prefix in newest_recordings(&state, bucket, &root).await {
            let started = json_object(&state, bucket, &format!("{prefix}/events/recording-started.json")).await;
            let ended = json_object(&state, bucket, &format!("{prefix}/events/recording-ended.json")).await;
            recordings.push(json!({ "bucket": bucket, "prefix": prefix, "started": started, "ended": ended }));
        }
    }
    // Newest first over every bucket (the prefix holds the start time, to the minute).
    recordings.sort_by_key(|recording| {
        std::cmp::Reverse(recording["started"]["recording_started_at"].as_str().unwrap_or("").to_owned())
    });
    recordings.truncate(LISTED);
    super::json_response(StatusCode::OK, &json!({ "recordings": recordings }))
}

/// An object of `bucket` read as JSON; `None` when it is missing or unreadable (a recording
/// still in progress has no `recording-ended.json`).
async fn json_object(state: &AppState, bucket: &str, key: &str) -> Option<Value> {
    let bytes = state.api.buckets.get(bucket, key).await.ok().flatten()?;
    serde_json::from_slice(&bytes).ok()
}

/// The key prefixes of the newest recordings under `root` (`ivs/v1/{account}/{channel id}`):
/// the date levels are walked newest first until enough are found.
async fn newest_recordings(state: &AppState, bucket: &str, root: &str) -> Vec<String> {
    let mut found = Vec::new();
    // (Depth-first over year/month/day/hour/minute, each level's numbers in descending order.)
    let mut pending = vec![(root.to_owned(), 0)];
    while let Some((prefix, depth)) = pending.pop() {
        if found.len() >= LISTED {
            break;
        }
        let Ok(mut children) = state.api.buckets.list_children(bucket, &prefix).await else {
            continue;
        };
        if depth == 5 {
            children.sort();
            found.extend(children.into_iter().map(|id| format!("{prefix}/{id}")));
            continue;
        }
        let mut numbers: Vec<u32> = children.iter().filter_map(|name| name.parse().ok()).collect();
        numbers.sort_unstable();
        // Pushed oldest first, so the newest is popped first.
        pending.extend(numbers.into_iter().map(|n| (format!("{prefix}/{n}"), depth + 1)));
    }
    found
}

/// An object of a recording, when its key lies under the caller's account.
pub async fn object(
    State(state): State<Arc<AppState>>,
    Path((bucket, key)): Path<(String, String)>,
    request: Request,
) -> Response {
    let (head, _body) = request.into_parts();
    let caller = match state.auth.authenticate_head(&head) {
        Ok(caller) => caller,
        Err(error) => return crate::http::error_of(&error),
    };
    if !key.starts_with(&format!("ivs/v1/{}/", caller.account)) {
        return crate::http::error_of(&IvsError::new(
            ErrorKind::AccessDenied,
            "Recordings of other accounts cannot be read",
        ));
    }
    match state.api.buckets.get(&bucket, &key).await {
        Ok(Some(bytes)) => {
            let mut response = Response::new(Body::from(bytes));
            let content_type = match key.rsplit('.').next() {
                Some("m3u8") => "application/vnd.apple.mpegurl",
                Some("ts") => "video/mp2t",
                Some("mp4" | "m4s") => "video/mp4",
                Some("jpg") => "image/jpeg",
                Some("json") => "application/json",
                _ => "application/octet-stream",
            };
            response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
            response.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
            response
        }
        Ok(None) => crate::http::error_of(&IvsError::not_found(format!("No object {key} in bucket {bucket}"))),
        Err(error) => crate::http::error_of(&IvsError::validation(format!("Cannot read {key}: {error}"))),
    }
}

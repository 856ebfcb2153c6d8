//! Live streams and their sessions: GetStream, ListStreams, StopStream, GetStreamSession,
//! ListStreamSessions, PutMetadata, InsertAdBreak. Each first resolves the channel
//! (`ResourceNotFoundException`); the live-only ones then need a live stream and answer
//! `ChannelNotBroadcasting` without one, as in IVS.

use std::time::Instant;

use openivs_model::requests::{
    ChannelArnInput, GetStreamSessionInput, InsertAdBreakInput, ListByChannelInput, ListStreamsInput, PutMetadataInput,
};
use openivs_model::resources::{Channel, StreamSession, StreamSessionSummary};
use openivs_model::{ErrorKind, IvsError, timestamp};
use serde_json::{Value, json};
use time::OffsetDateTime;

use super::pagination::Listing;
use super::{Api, input_error_if, output, page_output, random_alphanumeric};
use crate::auth::Caller;
use crate::live::hub::{AdBreak, AdBreakRefusal, MAX_AD_BREAKS, MetadataSource, TimedMetadata};
use crate::live::{LiveStream, METADATA_PER_ACCOUNT};

/// PutMetadata's payload limit (IVS: 1 KB).
const MAX_METADATA_BYTES: usize = 1024;

fn not_broadcasting(channel_arn: &str) -> IvsError {
    IvsError::new(ErrorKind::ChannelNotBroadcasting, format!("The channel {channel_arn} is not broadcasting"))
}

/// The caller's channel and its live stream, or the error IVS gives for each way that fails.
async fn live_stream(api: &Api, caller: &Caller, channel_arn: &str) -> Result<(Channel, LiveStream), IvsError> {
    let (_, channel) = api.load::<Channel>(caller, channel_arn).await?;
    let stream = api.live.stream(channel_arn).ok_or_else(|| not_broadcasting(channel_arn))?;
    Ok((channel, stream))
}

pub(super) async fn get(api: &Api, caller: &Caller, request: ChannelArnInput) -> Result<Value, IvsError> {
    let (channel, stream) = live_stream(api, caller, &request.channel_arn).await?;
    Ok(json!({ "stream": {
        "channelArn": stream.channel_arn,
        "streamId": stream.stream_id,
        "playbackUrl": channel.playback_url,
        "startTime": timestamp::format(stream.start_time),
        "state": "LIVE",
        "health": stream.health().wire_name(),
        "viewerCount": api.playback.viewers.viewer_count(&stream.channel_arn),
    }}))
}

/// This node's live streams of the caller's account and region as ListStreams lists them, each
/// with `startMicros` (its start time in µs: the order and the page cursor).
fn local_streams(api: &Api, caller: &Caller) -> Vec<Value> {
    api.live
        .streams_of(&caller.account, &caller.region)
        .iter()
        .map(|s| {
            json!({
                "channelArn": s.channel_arn,
                "streamId": s.stream_id,
                "state": "LIVE",
                "health": s.health().wire_name(),
                "viewerCount": api.playback.viewers.viewer_count(&s.channel_arn),
                "startTime": timestamp::format(s.start_time),
                "startMicros": (s.start_time.unix_timestamp_nanos() / 1000) as i64,
            })
        })
        .collect()
}

/// This node's streams, for another node's ListStreams ([`crate::cluster::peers::LOCAL_STREAMS`]).
pub(super) async fn list_local(api: &Api, caller: &Caller) -> Result<Value, IvsError> {
    Ok(json!({ "streams": local_streams(api, caller) }))
}

/// The live streams of every node of the cluster, oldest first; the page cursor is the start
/// time (µs) of the last stream returned. (A node that does not answer is left out.)
pub(super) async fn list(api: &Api, caller: &Caller, request: ListStreamsInput) -> Result<Value, IvsError> {
    let health = request.filter_by.and_then(|f| f.health);
    let now = OffsetDateTime::now_utc();
    let listing = Listing::new("ListStreams", &caller.account, &caller.region, &[health.as_deref().unwrap_or("")]);
    let after = api.tokens.cursor(request.paging.next_token.as_deref(), &listing, now)?;
    let page_size = request.paging.max_results.unwrap_or(100).clamp(1, 100) as usize;
    let mut streams = local_streams(api, caller);
    let mut others: Vec<String> = api
        .store
        .stream_holders()
        .await?
        .into_iter()
        .filter(|h| h.node_id != api.peers.node.node_id)
        .filter(|h| {
            openivs_model::Arn::parse(&h.channel_arn)
                .is_some_and(|arn| arn.account == caller.account && arn.region == caller.region)
        })
        .map(|h| h.origin_url)
        .collect();
    others.sort();
    others.dedup();
    for origin in others {
        match api.peers.call(&origin, caller, crate::cluster::peers::LOCAL_STREAMS, &json!({})).await {
            Ok(answer) => streams.extend(answer["streams"].as_array().cloned().unwrap_or_default()),
            Err(error) => tracing::warn!("ListStreams: leaving out the streams of {origin}: {}", error.message),
        }
    }
    let start_micros = |s: &Value| s["startMicros"].as_i64().unwrap_or_default();
    streams.retain(|s| health.as_deref().is_none_or(|wanted| s["health"] == wanted) && start_micros(s) > after);
    streams.sort_by(|a, b| (start_micros(a), a["streamId"].as_str()).cmp(&(start_micros(b), b["streamId"].as_str())));
    let next_token = (streams.len() > page_size).then(|| {
        streams.truncate(page_size);
        api.tokens.issue(&listing, start_micros(&streams[page_size - 1]), now)
    });
    for stream in &mut streams {
        if let Some(fields) = stream.as_object_mut() {
            fields.remove("startMicros");
        }
    }
    Ok(page_output("streams", streams, next_token))
}

/// Disconnects the publisher; the channel is offline when this returns.
/// How long StopStream waits for the stream's end to be recorded.
const STOP_RECORDED_WITHIN: std::time::Duration = std::time::Duration::from_secs(5);

pub(super) async fn stop(api: &Api, caller: &Caller, request: ChannelArnInput) -> Result<Value, IvsError> {
    live_stream(api, caller, &request.channel_arn).await?;
    let Some(stopped) = api.live.stop(&request.channel_arn) else {
        return Err(not_broadcasting(&request.channel_arn));
    };
    // Answer once the session's end is recorded, so the channel can be updated or deleted
    // right away (the ingest task records it as soon as it sees the stop).
    stopped.wait_finished(STOP_RECORDED_WITHIN).await;
    Ok(json!({}))
}

pub(super) async fn get_session(api: &Api, caller: &Caller, request: GetStreamSessionInput) -> Result<Value, IvsError> {
    api.load::<Channel>(caller, &request.channel_arn).await?;
    let record = api.store.stream_session(&request.channel_arn, request.stream_id.as_deref()).await?;
    let Some(record) = record else {
        return Err(IvsError::not_found(match request.stream_id {
            Some(stream_id) => {
                format!("The stream session {stream_id} was not found on channel {}", request.channel_arn)
            }
            None => format!("The channel {} has no stream sessions", request.channel_arn),
        }));
    };
    let session: Value = serde_json::from_str(&record.body).map_err(|e| IvsError::internal(e.to_string()))?;
    Ok(json!({ "streamSession": session }))
}

/// Newest first; the cursor is the seq of the last session returned.
pub(super) async fn list_sessions(api: &Api, caller: &Caller, request: ListByChannelInput) -> Result<Value, IvsError> {
    api.load::<Channel>(caller, &request.channel_arn).await?;
    let now = OffsetDateTime::now_utc();
    let listing = Listing::new("ListStreamSessions", &caller.account, &caller.region, &[&request.channel_arn]);
    let cursor = api.tokens.cursor(request.paging.next_token.as_deref(), &listing, now)?;
    let before = if cursor == 0 { i64::MAX } else { cursor };
    let page_size = request.paging.max_results.unwrap_or(100).clamp(1, 100) as u32;
    let mut records = api.store.list_stream_sessions(&request.channel_arn, before, page_size + 1).await?;
    let next_token = (records.len() > page_size as usize).then(|| {
        records.truncate(page_size as usize);
        api.tokens.issue(&listing, records[page_size as usize - 1].seq, now)
    });
    let mut summaries = Vec::with_capacity(records.len());
    for record in &records {
        let session: StreamSession =
            serde_json::from_str(&record.body).map_err(|e| IvsError::internal(e.to_string()))?;
        summaries.push(output(StreamSessionSummary {
            stream_id: session.stream_id,
            start_time: session.start_time,
            end_time: session.end_time,
            has_error_event: record.has_error_event,
        })?);
    }
    Ok(page_output("streamSessions", summaries, next_token))
}

pub(super) async fn put_metadata(api: &Api, caller: &Caller, request: PutMetadataInput) -> Result<Value, IvsError> {
    input_error_if(request.metadata.len() > MAX_METADATA_BYTES, "metadata must be at most 1 KB (1024 bytes of UTF-8)")?;
    let (_, stream) = live_stream(api, caller, &request.channel_arn).await?;
    let now = Instant::now();
    if !stream.admit_metadata(now) {
        return Err(IvsError::new(ErrorKind::Throttling, "PutMetadata is limited to 5 calls per second per channel"));
    }
    // (Nodes sharing a store count the account's calls there, whichever node each reached.)
    let account_key = format!("PutMetadata {} {}", caller.account, caller.region);
    let admitted = match api.store.admit_shared_call(&account_key, METADATA_PER_ACCOUNT as u32).await? {
        Some(admitted) => admitted,
        None => api.live.admit_account_metadata(&account_key, now),
    };
    if !admitted {
        return Err(IvsError::new(ErrorKind::Throttling, "PutMetadata is limited to 155 calls per second per account"));
    }
    stream.hub.put_metadata(TimedMetadata {
        text: request.metadata,
        source: MetadataSource::Api,
        arrival: now,
        arrival_wall: OffsetDateTime::now_utc(),
    });
    Ok(Value::Null)
}

/// How far in the past a `targetStartAt` may lie and still mean "now" (clocks differ a little).
const AD_BREAK_START_TOLERANCE: time::Duration = time::Duration::seconds(1);

/// Schedules an ad break on the live stream; the packagers mark it in the media playlists
/// ([`crate::playback::ad_breaks`]).
pub(super) async fn insert_ad_break(
    api: &Api,
    caller: &Caller,
    request: InsertAdBreakInput,
) -> Result<Value, IvsError> {
    let (channel, stream) = live_stream(api, caller, &request.channel_arn).await?;
    if channel.ad_configuration_arn.is_empty() {
        return Err(IvsError::conflict("The channel has no ad configuration (adConfigurationArn)"));
    }
    let now = OffsetDateTime::now_utc();
    let start_at = match &request.target_start_at {
        Some(value) => {
            let at =
                timestamp::parse(value).ok_or_else(|| IvsError::validation("targetStartAt must be a timestamp"))?;
            input_error_if(at < now - AD_BREAK_START_TOLERANCE, "targetStartAt must not be in the past")?;
            Some(at)
        }
        None => None,
    };
    let ad_break_id = request.ad_break_id.unwrap_or_else(|| random_alphanumeric(12));
    let scheduled = stream.hub.schedule_ad_break(AdBreak {
        id: ad_break_id.clone(),
        start_at,
        duration: std::time::Duration::from_secs(request.duration_seconds.max(0) as u64),
        requested_at: now,
    });
    match scheduled {
        Ok(()) => {}
        Err(AdBreakRefusal::DuplicateId) => {
            return Err(IvsError::conflict(format!(
                "An ad break with id {ad_break_id} was already inserted in this stream"
            )));
        }
        Err(AdBreakRefusal::Overlaps) => {
            return Err(IvsError::conflict("The ad break overlaps another ad break of this stream"));
        }
        Err(AdBreakRefusal::TooMany) => {
            return Err(IvsError::conflict(format!("A stream takes at most {MAX_AD_BREAKS} ad breaks")));
        }
    }
    Ok(json!({ "adBreakId": ad_break_id, "targetStartAt": timestamp::format(start_at.unwrap_or(now)) }))
}

//! Live streams: GetStream, ListStreams, StopStream, GetStreamSession, ListStreamSessions,
//! PutMetadata, InsertAdBreak. Each first resolves the channel (`ResourceNotFoundException`), then
//! asks the live registry; an offline channel answers `ChannelNotBroadcasting`, as in IVS.
//! Stream sessions are recorded by ingest (a later milestone); until then a channel has none.

use openivs_model::requests::{
    ChannelArnInput, GetStreamSessionInput, InsertAdBreakInput, ListByChannelInput, ListStreamsInput, PutMetadataInput,
};
use openivs_model::resources::Channel;
use openivs_model::{ErrorKind, IvsError, timestamp};
use serde_json::{Value, json};
use time::OffsetDateTime;

use super::pagination::Listing;
use super::{Api, input_error_if, page_output, random_alphanumeric};
use crate::auth::Caller;
use crate::live::LiveStream;

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

fn stream_output(stream: &LiveStream) -> Value {
    json!({
        "channelArn": stream.channel_arn,
        "streamId": stream.stream_id,
        "playbackUrl": stream.playback_url,
        "startTime": timestamp::format(stream.start_time),
        "state": "LIVE",
        "health": stream.health,
        "viewerCount": stream.viewer_count,
    })
}

pub(super) async fn get(api: &Api, caller: &Caller, request: ChannelArnInput) -> Result<Value, IvsError> {
    let (_, stream) = live_stream(api, caller, &request.channel_arn).await?;
    Ok(json!({ "stream": stream_output(&stream) }))
}

/// Live streams are in memory, oldest first; the page cursor is the start time (µs) of the last
/// stream returned.
pub(super) async fn list(api: &Api, caller: &Caller, request: ListStreamsInput) -> Result<Value, IvsError> {
    let health = request.filter_by.and_then(|f| f.health);
    let now = OffsetDateTime::now_utc();
    let listing = Listing::new("ListStreams", &caller.account, &caller.region, &[health.as_deref().unwrap_or("")]);
    let after = api.tokens.cursor(request.paging.next_token.as_deref(), &listing, now)?;
    let page_size = request.paging.max_results.unwrap_or(100).clamp(1, 100) as usize;
    let start_micros = |s: &LiveStream| (s.start_time.unix_timestamp_nanos() / 1000) as i64;
    let mut streams: Vec<LiveStream> = api
        .live
        .streams_of(&caller.account, &caller.region)
        .into_iter()
        .filter(|s| health.as_deref().is_none_or(|h| s.health == h) && start_micros(s) > after)
        .collect();
    let next_token = (streams.len() > page_size).then(|| {
        streams.truncate(page_size);
        api.tokens.issue(&listing, start_micros(&streams[page_size - 1]), now)
    });
    let summaries = streams
        .iter()
        .map(|s| {
            json!({
                "channelArn": s.channel_arn,
                "streamId": s.stream_id,
                "state": "LIVE",
                "health": s.health,
                "viewerCount": s.viewer_count,
                "startTime": timestamp::format(s.start_time),
            })
        })
        .collect();
    Ok(page_output("streams", summaries, next_token))
}

pub(super) async fn stop(api: &Api, caller: &Caller, request: ChannelArnInput) -> Result<Value, IvsError> {
    live_stream(api, caller, &request.channel_arn).await?;
    if !api.live.stop(&request.channel_arn) {
        return Err(not_broadcasting(&request.channel_arn));
    }
    Ok(json!({}))
}

pub(super) async fn get_session(api: &Api, caller: &Caller, request: GetStreamSessionInput) -> Result<Value, IvsError> {
    api.load::<Channel>(caller, &request.channel_arn).await?;
    Err(IvsError::not_found(match request.stream_id {
        Some(stream_id) => format!("The stream session {stream_id} was not found on channel {}", request.channel_arn),
        None => format!("The channel {} has no stream sessions", request.channel_arn),
    }))
}

pub(super) async fn list_sessions(api: &Api, caller: &Caller, request: ListByChannelInput) -> Result<Value, IvsError> {
    api.load::<Channel>(caller, &request.channel_arn).await?;
    let listing = Listing::new("ListStreamSessions", &caller.account, &caller.region, &[&request.channel_arn]);
    api.tokens.cursor(request.paging.next_token.as_deref(), &listing, OffsetDateTime::now_utc())?;
    Ok(page_output("streamSessions", Vec::new(), None))
}

pub(super) async fn put_metadata(api: &Api, caller: &Caller, request: PutMetadataInput) -> Result<Value, IvsError> {
    input_error_if(request.metadata.len() > MAX_METADATA_BYTES, "metadata must be at most 1 KB (1024 bytes of UTF-8)")?;
    live_stream(api, caller, &request.channel_arn).await?;
    api.live.put_metadata(&request.channel_arn, &request.metadata);
    Ok(Value::Null)
}

pub(super) async fn insert_ad_break(
    api: &Api,
    caller: &Caller,
    request: InsertAdBreakInput,
) -> Result<Value, IvsError> {
    let (channel, _) = live_stream(api, caller, &request.channel_arn).await?;
    if channel.ad_configuration_arn.is_empty() {
        return Err(IvsError::conflict("The channel has no ad configuration (adConfigurationArn)"));
    }
    let target_start_at = match &request.target_start_at {
        Some(value) => {
            timestamp::parse(value).ok_or_else(|| IvsError::validation("targetStartAt must be a timestamp"))?
        }
        None => OffsetDateTime::now_utc(),
    };
    let ad_break_id = request.ad_break_id.unwrap_or_else(|| random_alphanumeric(12));
    Ok(json!({ "adBreakId": ad_break_id, "targetStartAt": timestamp::format(target_start_at) }))
}

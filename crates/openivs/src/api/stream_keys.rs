//! Stream keys: CreateStreamKey (one per channel), GetStreamKey, BatchGetStreamKey,
//! DeleteStreamKey, ListStreamKeys. A key's value is `sk_{region}_{id}_{secret}` as in IVS; the
//! store indexes it by its SHA-256, so ingest can find a key without the value being an index.

use openivs_model::requests::{ArnInput, ArnsInput, CreateStreamKeyInput, ListByChannelInput};
use openivs_model::resources::{StreamKey, Tags};
use openivs_model::{Arn, IvsError, ResourceType};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use super::{Api, Resource, new_id, not_found, output, owned_arn, random_alphanumeric, record_of};
use crate::auth::Caller;
use crate::store::{Change, Check, ListQuery, Write};

impl Resource for StreamKey {
    const TYPE: ResourceType = ResourceType::StreamKey;
    fn arn(&self) -> &str {
        &self.arn
    }
    fn tags(&self) -> &Tags {
        &self.tags
    }
    fn parent(&self) -> Option<String> {
        Some(self.channel_arn.clone())
    }
    fn unique_key(&self) -> Option<String> {
        Some(stream_key_index(&self.value))
    }
}

/// How the store indexes a stream-key value (ingest looks keys up by it).
pub fn stream_key_index(value: &str) -> String {
    format!("stream-key:{}", hex::encode(Sha256::digest(value.as_bytes())))
}

pub(super) fn new_stream_key(caller: &Caller, channel_arn: &str, tags: Tags) -> StreamKey {
    let id = new_id();
    StreamKey {
        arn: Arn::new(&caller.region, &caller.account, ResourceType::StreamKey, &id).to_string(),
        value: format!("sk_{}_{}_{}", caller.region, id, random_alphanumeric(30)),
        channel_arn: channel_arn.to_owned(),
        tags,
    }
}

pub(super) async fn create(api: &Api, caller: &Caller, request: CreateStreamKeyInput) -> Result<Value, IvsError> {
    let channel_arn = request.channel_arn;
    let (exists, missing) = api.must_exist(caller, &channel_arn, ResourceType::Channel)?;
    let tags = request.tags.unwrap_or_default();
    super::check_tag_keys(tags.keys())?;
    let stream_key = new_stream_key(caller, &channel_arn, tags);
    let change = Change::new()
        .require(exists, missing)
        .require(
            Check::NoChild { parent_arn: channel_arn.clone(), resource_type: ResourceType::StreamKey },
            IvsError::quota(
                "The channel already has a stream key, and the limit is 1 stream key per channel: delete it first (DeleteStreamKey)",
            ),
        )
        .write(Write::Put(record_of(&stream_key)?));
    api.store.apply(change).await?;
    Ok(json!({ "streamKey": output(&stream_key)? }))
}

pub(super) async fn get(api: &Api, caller: &Caller, request: ArnInput) -> Result<Value, IvsError> {
    api.get_output::<StreamKey>(caller, &request.arn, "streamKey").await
}

pub(super) async fn batch_get(api: &Api, caller: &Caller, request: ArnsInput) -> Result<Value, IvsError> {
    let (stream_keys, errors) = api.batch_get::<StreamKey>(caller, &request.arns).await?;
    Ok(json!({ "streamKeys": stream_keys, "errors": errors }))
}

/// Deleting a key does not end a stream it started (as in IVS): StopStream does.
pub(super) async fn delete(api: &Api, caller: &Caller, request: ArnInput) -> Result<Value, IvsError> {
    let arn = request.arn;
    owned_arn(caller, &arn, Some(ResourceType::StreamKey))?;
    let change = Change::new()
        .require(Check::Exists { arn: arn.clone() }, not_found("stream key", &arn))
        .write(Write::Delete { arn });
    api.store.apply(change).await?;
    Ok(Value::Null)
}

pub(super) async fn list(api: &Api, caller: &Caller, request: ListByChannelInput) -> Result<Value, IvsError> {
    api.load::<openivs_model::resources::Channel>(caller, &request.channel_arn).await?;
    let query = ListQuery { parent_arn: Some(request.channel_arn.clone()), ..Default::default() };
    let filters = [request.channel_arn.as_str()];
    api.list_output("ListStreamKeys", caller, query, &filters, &request.paging, 1, "streamKeys", StreamKey::summary)
        .await
}

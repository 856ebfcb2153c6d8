//! Tags of any resource: TagResource, UntagResource, ListTagsForResource
//! (`/tags/{resourceArn}`). At most 50 per resource; keys beginning with `aws:` are AWS's.

use openivs_model::IvsError;
use openivs_model::requests::{ResourceArnInput, TagResourceInput, UntagResourceInput};
use openivs_model::resources::Tags;
use serde_json::{Value, json};

use super::{Api, UPDATE_ATTEMPTS, check_tag_keys, not_found, owned_arn};
use crate::auth::Caller;
use crate::store::{ApplyError, Change, Check, Record, Write};

const MAX_TAGS: usize = 50;

async fn load(api: &Api, caller: &Caller, arn: &str) -> Result<(Record, Value), IvsError> {
    owned_arn(caller, arn, None)?;
    let record = api.store.get(arn).await?.ok_or_else(|| not_found("resource", arn))?;
    let body: Value = record.decode()?;
    Ok((record, body))
}

fn tags_of(body: &Value) -> Tags {
    serde_json::from_value(body.get("tags").cloned().unwrap_or(json!({}))).unwrap_or_default()
}

/// Rewrites a resource's tags (whatever its type), retrying on concurrent writes.
async fn retag(api: &Api, caller: &Caller, arn: &str, edit: impl Fn(&mut Tags)) -> Result<(), IvsError> {
    for _ in 0..UPDATE_ATTEMPTS {
        let (record, mut body) = load(api, caller, arn).await?;
        let mut tags = tags_of(&body);
        edit(&mut tags);
        if tags.len() > MAX_TAGS {
            return Err(IvsError::validation(format!("A resource can have at most {MAX_TAGS} tags")));
        }
        body["tags"] = json!(tags);
        let version = record.version;
        let change = Change::new()
            .require(Check::Version { arn: arn.to_owned(), version }, IvsError::conflict("concurrent update"))
            .write(Write::Put(record.with_body(&body)));
        match api.store.apply(change).await {
            Ok(()) => return Ok(()),
            Err(ApplyError::Stale) => continue,
            Err(other) => return Err(other.into()),
        }
    }
    Err(ApplyError::Stale.into())
}

pub(super) async fn tag(api: &Api, caller: &Caller, request: TagResourceInput) -> Result<Value, IvsError> {
    check_tag_keys(request.tags.keys())?;
    retag(api, caller, &request.resource_arn, |tags| tags.extend(request.tags.clone())).await?;
    Ok(json!({}))
}

pub(super) async fn untag(api: &Api, caller: &Caller, request: UntagResourceInput) -> Result<Value, IvsError> {
    check_tag_keys(&request.tag_keys)?;
    retag(api, caller, &request.resource_arn, |tags| {
        for key in &request.tag_keys {
            tags.remove(key);
        }
    })
    .await?;
    Ok(json!({}))
}

pub(super) async fn list(api: &Api, caller: &Caller, request: ResourceArnInput) -> Result<Value, IvsError> {
    let (_, body) = load(api, caller, &request.resource_arn).await?;
    Ok(json!({ "tags": tags_of(&body) }))
}

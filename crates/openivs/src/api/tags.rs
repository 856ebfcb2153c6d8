//! Tags of any resource: TagResource, UntagResource, ListTagsForResource
//! (`/tags/{resourceArn}`). At most 50 per resource; keys beginning with `aws:` are AWS's.

use openivs_model::IvsError;
use openivs_model::requests::{ResourceArnInput, TagResourceInput, UntagResourceInput};
use openivs_model::resources::Tags;
use serde_json::{Value, json};

use super::{Api, check_tag_keys, not_found, owned_arn};
use crate::auth::Caller;
use crate::store::{Change, Check, Edit, Record, Write};

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

/// Rewrites a resource's tags (whatever its type) inside the store's change, so concurrent tag
/// edits of one resource apply one after the other and all succeed.
async fn retag(
    api: &Api,
    caller: &Caller,
    arn: &str,
    edit_tags: impl Fn(&mut Tags) + Send + Sync + 'static,
) -> Result<(), IvsError> {
    owned_arn(caller, arn, None)?;
    let edit = Edit::new(move |record: Record| {
        let mut body: Value = record.decode()?;
        let mut tags = tags_of(&body);
        edit_tags(&mut tags);
        if tags.len() > MAX_TAGS {
            return Err(IvsError::validation(format!("A resource can have at most {MAX_TAGS} tags")));
        }
        body["tags"] = json!(tags);
        Ok(record.with_body(&body))
    });
    let change = Change::new()
        .require(Check::Exists { arn: arn.to_owned() }, not_found("resource", arn))
        .write(Write::Modify { arn: arn.to_owned(), edit });
    Ok(api.store.apply(change).await?)
}

pub(super) async fn tag(api: &Api, caller: &Caller, request: TagResourceInput) -> Result<Value, IvsError> {
    check_tag_keys(request.tags.keys())?;
    let new_tags = request.tags;
    retag(api, caller, &request.resource_arn, move |tags| tags.extend(new_tags.clone())).await?;
    Ok(json!({}))
}

pub(super) async fn untag(api: &Api, caller: &Caller, request: UntagResourceInput) -> Result<Value, IvsError> {
    check_tag_keys(&request.tag_keys)?;
    let removed = request.tag_keys;
    retag(api, caller, &request.resource_arn, move |tags| {
        for key in &removed {
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

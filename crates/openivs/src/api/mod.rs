//! The IVS operations: IVS's rules over the [`Store`] and the [`LiveRegistry`].
//!
//! One file per resource family; this module holds what they share: the [`Api`] value every
//! handler receives, [`Api::handle`] (the operation name → handler table), and the common moves
//! (load a resource the caller owns, create under a quota, delete unless referenced, update
//! inside the store's change, list a page). Inputs reach the handlers already validated against the
//! service model (see `openivs_model::service`), so handlers only apply IVS's semantics.

mod ad_configurations;
mod channels;
mod failover_slates;
pub mod pagination;
mod playback_key_pairs;
mod playback_restriction_policies;
mod recording_configurations;
pub(crate) mod stream_keys;
mod streams;
mod tags;
mod viewer_sessions;

use std::sync::Arc;

use openivs_model::resources::Tags;
use openivs_model::{Arn, IvsError, ResourceType};
use rand::Rng;
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;
use time::OffsetDateTime;

use crate::auth::Caller;
use crate::live::LiveRegistry;
use crate::settings::Quotas;
use crate::store::{Change, Check, Edit, ListQuery, Record, Store, Write};
use pagination::{Listing, PageTokens};

/// Where this server can be reached, for the URLs the API returns.
#[derive(Debug, Clone)]
pub struct Endpoints {
    pub public_host: String,
    /// Whether the HTTP listener speaks TLS (`https://` URLs).
    pub https: bool,
    pub http_port: u16,
    pub rtmps_port: u16,
    /// Plain RTMP (channels with `insecureIngest`).
    pub rtmp_port: u16,
    pub srt_port: u16,
}

impl Endpoints {
    pub(crate) fn host_port(&self, port: u16, default_port: u16) -> String {
        let host =
            if self.public_host.contains(':') { format!("[{}]", self.public_host) } else { self.public_host.clone() };
        if port == default_port { host } else { format!("{host}:{port}") }
    }

    /// `http://host[:port]` or `https://host[:port]` of the HTTP listener.
    pub(crate) fn http_origin(&self) -> String {
        let (scheme, default_port) = if self.https { ("https", 443) } else { ("http", 80) };
        format!("{scheme}://{}", self.host_port(self.http_port, default_port))
    }
}

pub struct Api {
    pub store: Arc<dyn Store>,
    pub live: Arc<LiveRegistry>,
    pub playback: Arc<crate::playback::Playback>,
    pub buckets: Arc<crate::recording::buckets::Buckets>,
    pub quotas: Quotas,
    pub endpoints: Endpoints,
    tokens: PageTokens,
    /// GetClientConfiguration's answers (served beside the API, authenticated by stream key).
    pub client_configurations: Arc<crate::ingest::client_configuration::ClientConfigurations>,
    /// The other nodes of a cluster: operations on a stream another node ingests go there.
    pub peers: Arc<crate::cluster::peers::Peers>,
    /// Playback of streams other nodes ingest, pulled from them.
    pub origin_pull: crate::cluster::pull::OriginPull,
}

/// A resource as stored: the model type plus what the store indexes about it.
pub(crate) trait Resource: Serialize + DeserializeOwned {
    const TYPE: ResourceType;
    fn arn(&self) -> &str;
    fn tags(&self) -> &Tags;
    fn name(&self) -> &str {
        ""
    }
    /// ARNs this resource refers to (deleting those is refused while it does).
    fn references(&self) -> Vec<String> {
        Vec::new()
    }
    fn parent(&self) -> Option<String> {
        None
    }
    fn unique_key(&self) -> Option<String> {
        None
    }
    /// Fills in what depends on where this server runs (a channel's URLs), so a changed
    /// `--public-host` or port shows in every answer, old resources included.
    fn present(&mut self, _endpoints: &Endpoints) {}
}

/// Implements [`Resource`] for a resource that only has an ARN, a name and tags.
macro_rules! named_resource {
    ($resource:ty, $resource_type:expr) => {
        impl super::Resource for $resource {
            const TYPE: openivs_model::ResourceType = $resource_type;
            fn arn(&self) -> &str {
                &self.arn
            }
            fn tags(&self) -> &openivs_model::resources::Tags {
                &self.tags
            }
            fn name(&self) -> &str {
                &self.name
            }
        }
    };
}
pub(crate) use named_resource;

/// Reads an operation's (validated) input into its typed form.
pub(crate) fn input<T: DeserializeOwned>(value: Value) -> Result<T, IvsError> {
    serde_json::from_value(value).map_err(|e| IvsError::validation(format!("Invalid request: {e}")))
}

pub(crate) fn output(value: impl Serialize) -> Result<Value, IvsError> {
    serde_json::to_value(value).map_err(|e| IvsError::internal(e.to_string()))
}

/// A new 12-character resource id, like IVS's (`abcdABCDefgh`).
pub(crate) fn new_id() -> String {
    random_alphanumeric(12)
}

/// A random (version 4) UUID: request ids and event ids.
pub fn random_uuid() -> String {
    let b: [u8; 16] = rand::random();
    format!(
        "{:08x}-{:04x}-4{:03x}-{:04x}-{:012x}",
        u32::from_be_bytes([b[0], b[1], b[2], b[3]]),
        u16::from_be_bytes([b[4], b[5]]),
        u16::from_be_bytes([b[6], b[7]]) & 0x0fff,
        (u16::from_be_bytes([b[8], b[9]]) & 0x3fff) | 0x8000,
        u64::from_be_bytes([0, 0, b[10], b[11], b[12], b[13], b[14], b[15]])
    )
}

pub fn random_alphanumeric(length: usize) -> String {
    rand::rng().sample_iter(rand::distr::Alphanumeric).take(length).map(char::from).collect()
}

/// Resolves an ARN the caller names to one it owns. ARNs of other accounts or regions, and
/// malformed ones, name nothing the caller can see: `ResourceNotFoundException`.
pub(crate) fn owned_arn(caller: &Caller, arn: &str, expected: Option<ResourceType>) -> Result<Arn, IvsError> {
    match Arn::parse(arn) {
        Some(parsed)
            if parsed.account == caller.account
                && parsed.region == caller.region
                && expected.is_none_or(|t| t == parsed.resource_type) =>
        {
            Ok(parsed)
        }
        _ => Err(not_found(expected.map_or("resource", ResourceType::display_name), arn)),
    }
}

pub(crate) fn not_found(what: &str, arn: &str) -> IvsError {
    IvsError::not_found(format!("The {what} {arn} was not found"))
}

/// Tags a user may set: `aws:` is reserved for AWS.
pub(crate) fn check_tag_keys<'a>(keys: impl IntoIterator<Item = &'a String>) -> Result<(), IvsError> {
    for key in keys {
        if key.to_ascii_lowercase().starts_with("aws:") {
            return Err(IvsError::validation(format!("Tag keys starting with 'aws:' are reserved: {key}")));
        }
    }
    Ok(())
}

pub(crate) fn record_of<R: Resource>(resource: &R) -> Result<Record, IvsError> {
    let arn = Arn::parse(resource.arn()).ok_or_else(|| IvsError::internal("resource without a valid ARN"))?;
    let mut record = Record::new(R::TYPE, &arn.account, &arn.region, resource.arn(), resource);
    record.name = resource.name().to_owned();
    record.references = resource.references();
    record.parent_arn = resource.parent();
    record.unique_key = resource.unique_key();
    Ok(record)
}

impl Api {
    /// The API of this node (`node`, in a cluster), as `settings` configure it (quotas,
    /// multitrack HEVC, the cluster secret).
    pub async fn new(
        store: Arc<dyn Store>,
        live: Arc<LiveRegistry>,
        playback: Arc<crate::playback::Playback>,
        buckets: Arc<crate::recording::buckets::Buckets>,
        endpoints: Endpoints,
        settings: &crate::settings::Settings,
        node: crate::cluster::Node,
    ) -> Result<Api, IvsError> {
        let key = store.init_setting("pagination_token_key", &hex::encode(rand::random::<[u8; 32]>())).await?;
        let client_configurations = Arc::new(
            crate::ingest::client_configuration::ClientConfigurations::load(store.as_ref(), settings.multitrack_hevc)
                .await?,
        );
        let quotas = settings.quotas;
        let peers =
            Arc::new(crate::cluster::peers::Peers::new(store.as_ref(), node, settings.cluster_secret.clone()).await?);
        Ok(Api {
            store,
            live,
            playback,
            buckets,
            quotas,
            endpoints,
            tokens: PageTokens::new(key.into_bytes()),
            client_configurations,
            origin_pull: crate::cluster::pull::OriginPull::new(peers.clone(), &settings.limits),
            peers,
        })
    }

    /// Runs one operation. Returns the response body (`Value::Null` for operations without
    /// output, which the HTTP layer answers with 204). An operation on a live stream that
    /// another node of the cluster ingests is run there ([`crate::cluster::peers`]).
    pub async fn handle(&self, operation: &str, caller: &Caller, body: Value) -> Result<Value, IvsError> {
        if operation != crate::cluster::peers::LOCAL_STREAMS
            && crate::cluster::peers::FORWARDED.contains(&operation)
            && let Some(channel_arn) = body.get("channelArn").and_then(Value::as_str)
            && !self.live.is_live(channel_arn)
            && let Some(holder) = self.store.stream_holder(channel_arn).await?
            && holder.node_id != self.peers.node.node_id
        {
            return self.peers.call(&holder.origin_url, caller, operation, &body).await;
        }
        self.handle_here(operation, caller, body).await
    }

    /// Runs one operation on this node (what another node asked of it, or [`Api::handle`]).
    pub async fn handle_here(&self, operation: &str, caller: &Caller, body: Value) -> Result<Value, IvsError> {
        match operation {
            crate::cluster::peers::LOCAL_STREAMS => streams::list_local(self, caller).await,
            "CreateChannel" => channels::create(self, caller, input(body)?).await,
            "GetChannel" => channels::get(self, caller, input(body)?).await,
            "BatchGetChannel" => channels::batch_get(self, caller, input(body)?).await,
            "UpdateChannel" => channels::update(self, caller, input(body)?).await,
            "DeleteChannel" => channels::delete(self, caller, input(body)?).await,
            "ListChannels" => channels::list(self, caller, input(body)?).await,
            "CreateStreamKey" => stream_keys::create(self, caller, input(body)?).await,
            "GetStreamKey" => stream_keys::get(self, caller, input(body)?).await,
            "BatchGetStreamKey" => stream_keys::batch_get(self, caller, input(body)?).await,
            "DeleteStreamKey" => stream_keys::delete(self, caller, input(body)?).await,
            "ListStreamKeys" => stream_keys::list(self, caller, input(body)?).await,
            "ImportPlaybackKeyPair" => playback_key_pairs::import(self, caller, input(body)?).await,
            "GetPlaybackKeyPair" => playback_key_pairs::get(self, caller, input(body)?).await,
            "DeletePlaybackKeyPair" => playback_key_pairs::delete(self, caller, input(body)?).await,
            "ListPlaybackKeyPairs" => playback_key_pairs::list(self, caller, input(body)?).await,
            "CreateRecordingConfiguration" => recording_configurations::create(self, caller, input(body)?).await,
            "GetRecordingConfiguration" => recording_configurations::get(self, caller, input(body)?).await,
            "DeleteRecordingConfiguration" => recording_configurations::delete(self, caller, input(body)?).await,
            "ListRecordingConfigurations" => recording_configurations::list(self, caller, input(body)?).await,
            "CreatePlaybackRestrictionPolicy" => {
                playback_restriction_policies::create(self, caller, input(body)?).await
            }
            "GetPlaybackRestrictionPolicy" => playback_restriction_policies::get(self, caller, input(body)?).await,
            "UpdatePlaybackRestrictionPolicy" => {
                playback_restriction_policies::update(self, caller, input(body)?).await
            }
            "DeletePlaybackRestrictionPolicy" => {
                playback_restriction_policies::delete(self, caller, input(body)?).await
            }
            "ListPlaybackRestrictionPolicies" => playback_restriction_policies::list(self, caller, input(body)?).await,
            "CreateAdConfiguration" => ad_configurations::create(self, caller, input(body)?).await,
            "GetAdConfiguration" => ad_configurations::get(self, caller, input(body)?).await,
            "UpdateAdConfiguration" => ad_configurations::update(self, caller, input(body)?).await,
            "DeleteAdConfiguration" => ad_configurations::delete(self, caller, input(body)?).await,
            "ListAdConfigurations" => ad_configurations::list(self, caller, input(body)?).await,
            "CreateFailoverSlateConfiguration" => failover_slates::create(self, caller, input(body)?).await,
            "GetFailoverSlateConfiguration" => failover_slates::get(self, caller, input(body)?).await,
            "UpdateFailoverSlateConfiguration" => failover_slates::update(self, caller, input(body)?).await,
            "DeleteFailoverSlateConfiguration" => failover_slates::delete(self, caller, input(body)?).await,
            "ListFailoverSlateConfigurations" => failover_slates::list(self, caller, input(body)?).await,
            "GetStream" => streams::get(self, caller, input(body)?).await,
            "ListStreams" => streams::list(self, caller, input(body)?).await,
            "StopStream" => streams::stop(self, caller, input(body)?).await,
            "GetStreamSession" => streams::get_session(self, caller, input(body)?).await,
            "ListStreamSessions" => streams::list_sessions(self, caller, input(body)?).await,
            "PutMetadata" => streams::put_metadata(self, caller, input(body)?).await,
            "InsertAdBreak" => streams::insert_ad_break(self, caller, input(body)?).await,
            "StartViewerSessionRevocation" => viewer_sessions::start(self, caller, input(body)?).await,
            "BatchStartViewerSessionRevocation" => viewer_sessions::batch_start(self, caller, input(body)?).await,
            "TagResource" => tags::tag(self, caller, input(body)?).await,
            "UntagResource" => tags::untag(self, caller, input(body)?).await,
            "ListTagsForResource" => tags::list(self, caller, input(body)?).await,
            other => Err(IvsError::validation(format!("Unknown operation {other}"))),
        }
    }

    /// Loads a resource the caller owns, or answers `ResourceNotFoundException`.
    pub(crate) async fn load<R: Resource>(&self, caller: &Caller, arn: &str) -> Result<(Record, R), IvsError> {
        owned_arn(caller, arn, Some(R::TYPE))?;
        let record = self.store.get(arn).await?.ok_or_else(|| not_found(R::TYPE.display_name(), arn))?;
        let mut resource: R = record.decode()?;
        resource.present(&self.endpoints);
        Ok((record, resource))
    }

    /// BatchGetChannel and BatchGetStreamKey: the resources found, and a `BatchError` for each
    /// ARN that names nothing the caller owns. Each distinct ARN is reported once.
    pub(crate) async fn batch_get<R: Resource>(
        &self,
        caller: &Caller,
        arns: &[String],
    ) -> Result<(Vec<Value>, Vec<Value>), IvsError> {
        let mut found = Vec::new();
        let mut errors = Vec::new();
        let mut seen = std::collections::HashSet::new();
        for arn in arns.iter().filter(|arn| seen.insert(arn.as_str())) {
            match self.load::<R>(caller, arn).await {
                Ok((_, resource)) => found.push(output(&resource)?),
                Err(error) if error.kind == openivs_model::ErrorKind::ResourceNotFound => {
                    errors.push(serde_json::json!({
                        "arn": arn,
                        "code": error.kind.wire_name(),
                        "message": error.message,
                    }))
                }
                Err(error) => return Err(error),
            }
        }
        Ok((found, errors))
    }

    /// The condition "this ARN (named in a request) refers to an existing resource of the
    /// caller": checked inside the change, so a concurrent delete cannot slip in between.
    pub(crate) fn must_exist(
        &self,
        caller: &Caller,
        arn: &str,
        resource_type: ResourceType,
    ) -> Result<(Check, IvsError), IvsError> {
        owned_arn(caller, arn, Some(resource_type))?;
        Ok((Check::Exists { arn: arn.to_owned() }, not_found(resource_type.display_name(), arn)))
    }

    fn quota_check(&self, caller: &Caller, resource_type: ResourceType, limit: u32) -> (Check, IvsError) {
        let check =
            Check::CountBelow { resource_type, account: caller.account.clone(), region: caller.region.clone(), limit };
        let error = IvsError::quota(format!(
            "Request would exceed the quota of {limit} {}s per account and region",
            resource_type.display_name()
        ));
        (check, error)
    }

    /// Stores a new resource, under its type's quota.
    pub(crate) async fn create<R: Resource>(&self, caller: &Caller, resource: &R, quota: u32) -> Result<(), IvsError> {
        check_tag_keys(resource.tags().keys())?;
        let (check, error) = self.quota_check(caller, R::TYPE, quota);
        let change = Change::new().require(check, error).write(Write::Put(record_of(resource)?));
        Ok(self.store.apply(change).await?)
    }

    /// Deletes a resource; refused with `ConflictException` while a channel refers to it.
    pub(crate) async fn delete_unreferenced(
        &self,
        caller: &Caller,
        arn: &str,
        resource_type: ResourceType,
    ) -> Result<(), IvsError> {
        owned_arn(caller, arn, Some(resource_type))?;
        let name = resource_type.display_name();
        let change = Change::new()
            .require(Check::Exists { arn: arn.to_owned() }, not_found(name, arn))
            .require(
                Check::Unreferenced { arn: arn.to_owned() },
                IvsError::conflict(format!("The {name} {arn} is in use by a channel; detach it first")),
            )
            .write(Write::Delete { arn: arn.to_owned() });
        Ok(self.store.apply(change).await?)
    }

    /// Read-modify-write of one resource, done by the store inside the change
    /// ([`Write::Modify`]): concurrent updates of one resource apply one after the other instead
    /// of conflicting. `modify` gets the stored resource and returns the new one; `conditions`
    /// are checked in the same change.
    pub(crate) async fn update<R: Resource + Send + 'static>(
        &self,
        caller: &Caller,
        arn: &str,
        conditions: Vec<(Check, IvsError)>,
        modify: impl Fn(R) -> Result<R, IvsError> + Send + Sync + 'static,
    ) -> Result<R, IvsError> {
        owned_arn(caller, arn, Some(R::TYPE))?;
        let result = Arc::new(std::sync::Mutex::new(None));
        let written = result.clone();
        let edit = Edit::new(move |record: Record| {
            let updated = modify(record.decode()?)?;
            check_tag_keys(updated.tags().keys())?;
            let new_record = record_of(&updated)?;
            *written.lock().expect("update result lock") = Some(updated);
            Ok(new_record)
        });
        let mut change =
            Change::new().require(Check::Exists { arn: arn.to_owned() }, not_found(R::TYPE.display_name(), arn));
        for (check, error) in conditions {
            change = change.require(check, error);
        }
        self.store.apply(change.write(Write::Modify { arn: arn.to_owned(), edit })).await?;
        let mut updated = result
            .lock()
            .expect("update result lock")
            .take()
            .ok_or_else(|| IvsError::internal("the update was applied without its result"))?;
        updated.present(&self.endpoints);
        Ok(updated)
    }

    /// A Get* answer: `{ "<key>": <resource> }`.
    pub(crate) async fn get_output<R: Resource>(
        &self,
        caller: &Caller,
        arn: &str,
        key: &str,
    ) -> Result<Value, IvsError> {
        let (_, resource) = self.load::<R>(caller, arn).await?;
        Ok(wrap(key, output(&resource)?))
    }

    /// A List* answer: one page of summaries under `key`, in creation order, and `nextToken`
    /// unless it is the last page. `filters` are the listing's filter values, which bind the
    /// token to them.
    #[allow(clippy::too_many_arguments)]
    pub(crate) async fn list_output<R: Resource, S: Serialize>(
        &self,
        operation: &str,
        caller: &Caller,
        query: ListQuery,
        filters: &[&str],
        paging: &openivs_model::requests::Paging,
        default_page: i64,
        key: &str,
        summary: impl Fn(&R) -> S,
    ) -> Result<Value, IvsError> {
        let now = OffsetDateTime::now_utc();
        let listing = Listing::new(operation, &caller.account, &caller.region, filters);
        let after_seq = self.tokens.cursor(paging.next_token.as_deref(), &listing, now)?;
        let page_size = paging.max_results.unwrap_or(default_page).clamp(1, 100) as u32;
        let query = ListQuery {
            resource_type: Some(R::TYPE),
            account: caller.account.clone(),
            region: caller.region.clone(),
            after_seq,
            limit: page_size + 1,
            ..query
        };
        let mut records = self.store.list(&query).await?;
        let next_token = if records.len() > page_size as usize {
            records.truncate(page_size as usize);
            records.last().map(|last| self.tokens.issue(&listing, last.seq, now))
        } else {
            None
        };
        let items = records.iter().map(Record::decode).collect::<Result<Vec<R>, _>>()?;
        Ok(page_output(key, to_values(items.iter().map(summary))?, next_token))
    }
}

/// A `ValidationException` with `message` when `condition` holds.
pub(crate) fn input_error_if(condition: bool, message: &str) -> Result<(), IvsError> {
    if condition { Err(IvsError::validation(message)) } else { Ok(()) }
}

/// The default page size of listings documented as "min(quota, 100)".
pub(crate) fn quota_page(quota: u32) -> i64 {
    i64::from(quota.clamp(1, 100))
}

/// `{ "<key>": value }`.
pub(crate) fn wrap(key: &str, value: Value) -> Value {
    let mut out = serde_json::Map::new();
    out.insert(key.to_owned(), value);
    Value::Object(out)
}

/// Builds `{ "<key>": [...], "nextToken": ... }`, omitting `nextToken` on the last page.
pub(crate) fn page_output(key: &str, items: Vec<Value>, next_token: Option<String>) -> Value {
    let mut out = serde_json::Map::new();
    out.insert(key.to_owned(), Value::Array(items));
    if let Some(token) = next_token {
        out.insert("nextToken".to_owned(), Value::String(token));
    }
    Value::Object(out)
}

pub(crate) fn to_values<T: Serialize>(items: impl IntoIterator<Item = T>) -> Result<Vec<Value>, IvsError> {
    items.into_iter().map(output).collect()
}

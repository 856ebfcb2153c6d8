//! Playback restriction policies: Create, Get, Update, Delete (refused while a channel uses it),
//! List. Empty `allowedCountries`/`allowedOrigins` mean "all" (IVS's defaults).

use openivs_model::requests::{
    ArnInput, CreatePlaybackRestrictionPolicyInput, Paging, PlaybackRestrictionPolicySettings,
    UpdatePlaybackRestrictionPolicyInput,
};
use openivs_model::resources::PlaybackRestrictionPolicy;
use openivs_model::{Arn, IvsError, ResourceType};
use serde_json::{Value, json};

use super::{Api, new_id, output};
use crate::auth::Caller;
use crate::store::ListQuery;

super::named_resource!(PlaybackRestrictionPolicy, ResourceType::PlaybackRestrictionPolicy);

fn apply_settings(policy: &mut PlaybackRestrictionPolicy, settings: PlaybackRestrictionPolicySettings) {
    if let Some(countries) = settings.allowed_countries {
        policy.allowed_countries = countries;
    }
    if let Some(origins) = settings.allowed_origins {
        policy.allowed_origins = origins;
    }
    if let Some(strict) = settings.enable_strict_origin_enforcement {
        policy.enable_strict_origin_enforcement = strict;
    }
    if let Some(name) = settings.name {
        policy.name = name;
    }
}

pub(super) async fn create(
    api: &Api,
    caller: &Caller,
    request: CreatePlaybackRestrictionPolicyInput,
) -> Result<Value, IvsError> {
    let mut policy = PlaybackRestrictionPolicy {
        arn: Arn::new(&caller.region, &caller.account, ResourceType::PlaybackRestrictionPolicy, &new_id()).to_string(),
        allowed_countries: Vec::new(),
        allowed_origins: Vec::new(),
        enable_strict_origin_enforcement: false,
        name: String::new(),
        tags: request.tags.unwrap_or_default(),
    };
    apply_settings(&mut policy, request.settings);
    api.create(caller, &policy, api.quotas.playback_restriction_policies).await?;
    api.playback.access.warn_if_country_list_unenforced(&policy.arn, &policy.allowed_countries);
    Ok(json!({ "playbackRestrictionPolicy": output(&policy)? }))
}

pub(super) async fn get(api: &Api, caller: &Caller, request: ArnInput) -> Result<Value, IvsError> {
    api.get_output::<PlaybackRestrictionPolicy>(caller, &request.arn, "playbackRestrictionPolicy").await
}

pub(super) async fn update(
    api: &Api,
    caller: &Caller,
    request: UpdatePlaybackRestrictionPolicyInput,
) -> Result<Value, IvsError> {
    let settings = request.settings;
    let policy = api
        .update::<PlaybackRestrictionPolicy>(caller, &request.arn, Vec::new(), move |mut policy| {
            apply_settings(&mut policy, settings.clone());
            Ok(policy)
        })
        .await?;
    api.playback.access.warn_if_country_list_unenforced(&policy.arn, &policy.allowed_countries);
    Ok(json!({ "playbackRestrictionPolicy": output(&policy)? }))
}

/// Warns when a channel is given a policy whose countries cannot be enforced (no GeoIP database).
pub(super) async fn warn_if_attached_countries_unenforced(api: &Api, policy_arn: &str) {
    if policy_arn.is_empty() || api.playback.access.has_geoip() {
        return;
    }
    if let Ok(Some(record)) = api.store.get(policy_arn).await
        && let Ok(policy) = record.decode::<PlaybackRestrictionPolicy>()
    {
        api.playback.access.warn_if_country_list_unenforced(&policy.arn, &policy.allowed_countries);
    }
}

pub(super) async fn delete(api: &Api, caller: &Caller, request: ArnInput) -> Result<Value, IvsError> {
    api.delete_unreferenced(caller, &request.arn, ResourceType::PlaybackRestrictionPolicy).await?;
    Ok(Value::Null)
}

/// The model documents this listing's default page size as 1.
pub(super) async fn list(api: &Api, caller: &Caller, request: Paging) -> Result<Value, IvsError> {
    api.list_output(
        "ListPlaybackRestrictionPolicies",
        caller,
        ListQuery::default(),
        &[],
        &request,
        1,
        "playbackRestrictionPolicies",
        PlaybackRestrictionPolicy::clone,
    )
    .await
}

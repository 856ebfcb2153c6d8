//! Ad configurations (server-side ad insertion through MediaTailor): Create, Get, Update,
//! Delete (refused while a channel uses it), List. openivs stores them and lets channels refer to
//! them; it does not call MediaTailor.

use openivs_model::requests::{
    AdConfigurationSettings, ArnInput, CreateAdConfigurationInput, Paging, UpdateAdConfigurationInput,
};
use openivs_model::resources::{AdConfiguration, PostRollConfiguration};
use openivs_model::{Arn, IvsError, ResourceType};
use serde_json::{Value, json};

use super::{Api, new_id, output, quota_page};
use crate::auth::Caller;
use crate::store::ListQuery;

super::named_resource!(AdConfiguration, ResourceType::AdConfiguration);

fn apply_settings(configuration: &mut AdConfiguration, settings: AdConfigurationSettings) {
    if let Some(name) = settings.name {
        configuration.name = name;
    }
    if let Some(playback_configurations) = settings.media_tailor_playback_configurations {
        configuration.media_tailor_playback_configurations = playback_configurations;
    }
    if let Some(post_roll) = settings.post_roll_configuration {
        configuration.post_roll_configuration = post_roll;
    }
}

pub(super) async fn create(api: &Api, caller: &Caller, request: CreateAdConfigurationInput) -> Result<Value, IvsError> {
    let mut configuration = AdConfiguration {
        arn: Arn::new(&caller.region, &caller.account, ResourceType::AdConfiguration, &new_id()).to_string(),
        name: String::new(),
        media_tailor_playback_configurations: Vec::new(),
        post_roll_configuration: PostRollConfiguration::default(),
        tags: request.tags.unwrap_or_default(),
    };
    apply_settings(&mut configuration, request.settings);
    api.create(caller, &configuration, api.quotas.ad_configurations).await?;
    Ok(json!({ "adConfiguration": output(&configuration)? }))
}

pub(super) async fn get(api: &Api, caller: &Caller, request: ArnInput) -> Result<Value, IvsError> {
    api.get_output::<AdConfiguration>(caller, &request.arn, "adConfiguration").await
}

pub(super) async fn update(api: &Api, caller: &Caller, request: UpdateAdConfigurationInput) -> Result<Value, IvsError> {
    let settings = request.settings;
    let configuration = api
        .update::<AdConfiguration>(caller, &request.arn, Vec::new(), move |mut configuration| {
            apply_settings(&mut configuration, settings.clone());
            Ok(configuration)
        })
        .await?;
    Ok(json!({ "adConfiguration": output(&configuration)? }))
}

pub(super) async fn delete(api: &Api, caller: &Caller, request: ArnInput) -> Result<Value, IvsError> {
    api.delete_unreferenced(caller, &request.arn, ResourceType::AdConfiguration).await?;
    Ok(Value::Null)
}

pub(super) async fn list(api: &Api, caller: &Caller, request: Paging) -> Result<Value, IvsError> {
    let default_page = quota_page(api.quotas.ad_configurations);
    api.list_output(
        "ListAdConfigurations",
        caller,
        ListQuery::default(),
        &[],
        &request,
        default_page,
        "adConfigurations",
        AdConfiguration::clone,
    )
    .await
}

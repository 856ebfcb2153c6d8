//! Failover slate configurations: Create, Get, Update, Delete (refused while a channel uses
//! it), List. Stored and referable by channels; `CREATED` as soon as they exist.

use openivs_model::requests::{
    ArnInput, CreateFailoverSlateConfigurationInput, FailoverSlateSettings, Paging,
    UpdateFailoverSlateConfigurationInput,
};
use openivs_model::resources::FailoverSlateConfiguration;
use openivs_model::{Arn, IvsError, ResourceType};
use serde_json::{Value, json};

use super::{Api, new_id, output, quota_page};
use crate::auth::Caller;
use crate::store::ListQuery;

super::named_resource!(FailoverSlateConfiguration, ResourceType::FailoverSlateConfiguration);

fn apply_settings(configuration: &mut FailoverSlateConfiguration, settings: FailoverSlateSettings) {
    if let Some(name) = settings.name {
        configuration.name = name;
    }
    if let Some(seconds) = settings.activation_threshold_seconds {
        configuration.activation_threshold_seconds = seconds;
    }
    if let Some(seconds) = settings.min_slate_display_seconds {
        configuration.min_slate_display_seconds = seconds;
    }
    if let Some(seconds) = settings.max_slate_display_seconds {
        configuration.max_slate_display_seconds = seconds;
    }
}

pub(super) async fn create(
    api: &Api,
    caller: &Caller,
    request: CreateFailoverSlateConfigurationInput,
) -> Result<Value, IvsError> {
    let mut configuration = FailoverSlateConfiguration {
        arn: Arn::new(&caller.region, &caller.account, ResourceType::FailoverSlateConfiguration, &new_id()).to_string(),
        name: String::new(),
        activation_threshold_seconds: 3,
        min_slate_display_seconds: 3,
        max_slate_display_seconds: 60,
        state: "CREATED".into(),
        tags: request.tags.unwrap_or_default(),
    };
    apply_settings(&mut configuration, request.settings);
    api.create(caller, &configuration, api.quotas.failover_slate_configurations).await?;
    Ok(json!({ "failoverSlateConfiguration": output(&configuration)? }))
}

pub(super) async fn get(api: &Api, caller: &Caller, request: ArnInput) -> Result<Value, IvsError> {
    api.get_output::<FailoverSlateConfiguration>(caller, &request.arn, "failoverSlateConfiguration").await
}

pub(super) async fn update(
    api: &Api,
    caller: &Caller,
    request: UpdateFailoverSlateConfigurationInput,
) -> Result<Value, IvsError> {
    let settings = request.settings;
    let configuration = api
        .update::<FailoverSlateConfiguration>(caller, &request.arn, Vec::new(), move |mut configuration| {
            apply_settings(&mut configuration, settings.clone());
            Ok(configuration)
        })
        .await?;
    Ok(json!({ "failoverSlateConfiguration": output(&configuration)? }))
}

pub(super) async fn delete(api: &Api, caller: &Caller, request: ArnInput) -> Result<Value, IvsError> {
    api.delete_unreferenced(caller, &request.arn, ResourceType::FailoverSlateConfiguration).await?;
    Ok(Value::Null)
}

pub(super) async fn list(api: &Api, caller: &Caller, request: Paging) -> Result<Value, IvsError> {
    let default_page = quota_page(api.quotas.failover_slate_configurations);
    api.list_output(
        "ListFailoverSlateConfigurations",
        caller,
        ListQuery::default(),
        &[],
        &request,
        default_page,
        "failoverSlateConfigurations",
        FailoverSlateConfiguration::clone,
    )
    .await
}

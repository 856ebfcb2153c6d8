//! Recording configurations: Create, Get, Delete (refused while a channel uses it), List.
//! A configuration is `ACTIVE` when its bucket exists and takes writes, `CREATE_FAILED`
//! otherwise, as IVS reports it once it has checked the bucket.

use openivs_model::requests::{ArnInput, CreateRecordingConfigurationInput, Paging};
use openivs_model::resources::{RecordingConfiguration, RenditionConfiguration, ThumbnailConfiguration};
use openivs_model::{Arn, IvsError, ResourceType};
use serde_json::{Value, json};

use super::{Api, input_error_if, new_id, output, quota_page};
use crate::auth::Caller;
use crate::store::ListQuery;

super::named_resource!(RecordingConfiguration, ResourceType::RecordingConfiguration);

pub(super) async fn create(
    api: &Api,
    caller: &Caller,
    request: CreateRecordingConfigurationInput,
) -> Result<Value, IvsError> {
    input_error_if(
        request.destination_configuration.s3.is_none(),
        "destinationConfiguration must name a destination: s3.bucketName",
    )?;
    let mut thumbnails = ThumbnailConfiguration::default();
    if let Some(requested) = request.thumbnail_configuration {
        thumbnails.recording_mode = requested.recording_mode.unwrap_or(thumbnails.recording_mode);
        thumbnails.target_interval_seconds =
            requested.target_interval_seconds.unwrap_or(thumbnails.target_interval_seconds);
        thumbnails.resolution = requested.resolution;
        if let Some(storage) = requested.storage.filter(|s| !s.is_empty()) {
            let mut storage = storage;
            storage.dedup();
            thumbnails.storage = storage;
        }
    }
    let mut renditions = RenditionConfiguration::default();
    if let Some(requested) = request.rendition_configuration {
        renditions.rendition_selection = requested.rendition_selection.unwrap_or(renditions.rendition_selection);
        renditions.renditions = requested.renditions.unwrap_or_default();
        input_error_if(
            renditions.rendition_selection == "CUSTOM" && renditions.renditions.is_empty(),
            "renditionConfiguration.renditions must list at least one rendition when renditionSelection is CUSTOM",
        )?;
    }
    let bucket = request.destination_configuration.s3.as_ref().map(|s3| s3.bucket_name.clone()).unwrap_or_default();
    let state = match api.buckets.check(&bucket).await {
        Ok(()) => "ACTIVE",
        Err(reason) => {
            tracing::warn!("recording configuration CREATE_FAILED: {reason}");
            "CREATE_FAILED"
        }
    };
    let configuration = RecordingConfiguration {
        arn: Arn::new(&caller.region, &caller.account, ResourceType::RecordingConfiguration, &new_id()).to_string(),
        name: request.name.unwrap_or_default(),
        destination_configuration: request.destination_configuration,
        state: state.into(),
        tags: request.tags.unwrap_or_default(),
        thumbnail_configuration: thumbnails,
        recording_reconnect_window_seconds: request.recording_reconnect_window_seconds.unwrap_or(0),
        rendition_configuration: renditions,
    };
    api.create(caller, &configuration, api.quotas.recording_configurations).await?;
    Ok(json!({ "recordingConfiguration": output(&configuration)? }))
}

pub(super) async fn get(api: &Api, caller: &Caller, request: ArnInput) -> Result<Value, IvsError> {
    api.get_output::<RecordingConfiguration>(caller, &request.arn, "recordingConfiguration").await
}

pub(super) async fn delete(api: &Api, caller: &Caller, request: ArnInput) -> Result<Value, IvsError> {
    api.delete_unreferenced(caller, &request.arn, ResourceType::RecordingConfiguration).await?;
    Ok(Value::Null)
}

pub(super) async fn list(api: &Api, caller: &Caller, request: Paging) -> Result<Value, IvsError> {
    let default_page = quota_page(api.quotas.recording_configurations);
    api.list_output(
        "ListRecordingConfigurations",
        caller,
        ListQuery::default(),
        &[],
        &request,
        default_page,
        "recordingConfigurations",
        RecordingConfiguration::summary,
    )
    .await
}

//! Typed operation inputs. They are read only after the input passed
//! [`crate::service::ServiceModel::validate_input`], so every constraint of the model already holds
//! and these types only carry the values (optional members stay `Option`, so "omitted" and
//! "set" can be told apart, as Update* operations need).

use serde::Deserialize;

use crate::resources::{MediaTailorPlaybackConfiguration, MultitrackInputConfiguration, PostRollConfiguration, Tags};

/// Inputs that name one resource by `arn` (Get*, Delete*, …).
#[derive(Debug, Deserialize)]
pub struct ArnInput {
    pub arn: String,
}

/// Inputs that name one channel by `channelArn` (GetStream, StopStream, …).
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ChannelArnInput {
    pub channel_arn: String,
}

/// The paging members every List* operation has.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Paging {
    pub next_token: Option<String>,
    pub max_results: Option<i64>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ArnsInput {
    pub arns: Vec<String>,
}

#[derive(Debug, Default, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ChannelSettings {
    pub name: Option<String>,
    pub latency_mode: Option<String>,
    #[serde(rename = "type")]
    pub channel_type: Option<String>,
    pub authorized: Option<bool>,
    pub recording_configuration_arn: Option<String>,
    pub insecure_ingest: Option<bool>,
    pub preset: Option<String>,
    pub playback_restriction_policy_arn: Option<String>,
    pub multitrack_input_configuration: Option<MultitrackInputConfiguration>,
    pub container_format: Option<String>,
    pub ad_configuration_arn: Option<String>,
    pub failover_slate_configuration_arn: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CreateChannelInput {
    #[serde(flatten)]
    pub settings: ChannelSettings,
    pub tags: Option<Tags>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct UpdateChannelInput {
    pub arn: String,
    #[serde(flatten)]
    pub settings: ChannelSettings,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ListChannelsInput {
    pub filter_by_name: Option<String>,
    pub filter_by_recording_configuration_arn: Option<String>,
    pub filter_by_playback_restriction_policy_arn: Option<String>,
    pub filter_by_ad_configuration_arn: Option<String>,
    pub filter_by_failover_slate_configuration_arn: Option<String>,
    #[serde(flatten)]
    pub paging: Paging,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CreateStreamKeyInput {
    pub channel_arn: String,
    pub tags: Option<Tags>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ListByChannelInput {
    pub channel_arn: String,
    #[serde(flatten)]
    pub paging: Paging,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ImportPlaybackKeyPairInput {
    pub public_key_material: String,
    pub name: Option<String>,
    pub tags: Option<Tags>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ThumbnailConfigurationInput {
    pub recording_mode: Option<String>,
    pub target_interval_seconds: Option<i64>,
    pub resolution: Option<String>,
    pub storage: Option<Vec<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RenditionConfigurationInput {
    pub rendition_selection: Option<String>,
    pub renditions: Option<Vec<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CreateRecordingConfigurationInput {
    pub name: Option<String>,
    pub destination_configuration: crate::resources::DestinationConfiguration,
    pub tags: Option<Tags>,
    pub thumbnail_configuration: Option<ThumbnailConfigurationInput>,
    pub recording_reconnect_window_seconds: Option<i64>,
    pub rendition_configuration: Option<RenditionConfigurationInput>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PlaybackRestrictionPolicySettings {
    pub allowed_countries: Option<Vec<String>>,
    pub allowed_origins: Option<Vec<String>>,
    pub enable_strict_origin_enforcement: Option<bool>,
    pub name: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CreatePlaybackRestrictionPolicyInput {
    #[serde(flatten)]
    pub settings: PlaybackRestrictionPolicySettings,
    pub tags: Option<Tags>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct UpdatePlaybackRestrictionPolicyInput {
    pub arn: String,
    #[serde(flatten)]
    pub settings: PlaybackRestrictionPolicySettings,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AdConfigurationSettings {
    pub name: Option<String>,
    pub media_tailor_playback_configurations: Option<Vec<MediaTailorPlaybackConfiguration>>,
    pub post_roll_configuration: Option<PostRollConfiguration>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CreateAdConfigurationInput {
    #[serde(flatten)]
    pub settings: AdConfigurationSettings,
    pub tags: Option<Tags>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct UpdateAdConfigurationInput {
    pub arn: String,
    #[serde(flatten)]
    pub settings: AdConfigurationSettings,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FailoverSlateSettings {
    pub name: Option<String>,
    pub activation_threshold_seconds: Option<i64>,
    pub min_slate_display_seconds: Option<i64>,
    pub max_slate_display_seconds: Option<i64>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CreateFailoverSlateConfigurationInput {
    #[serde(flatten)]
    pub settings: FailoverSlateSettings,
    pub tags: Option<Tags>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct UpdateFailoverSlateConfigurationInput {
    pub arn: String,
    #[serde(flatten)]
    pub settings: FailoverSlateSettings,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ViewerSessionRevocation {
    pub channel_arn: String,
    pub viewer_id: String,
    pub viewer_session_versions_less_than_or_equal_to: Option<i64>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BatchStartViewerSessionRevocationInput {
    pub viewer_sessions: Vec<ViewerSessionRevocation>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StreamFilters {
    pub health: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ListStreamsInput {
    pub filter_by: Option<StreamFilters>,
    #[serde(flatten)]
    pub paging: Paging,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct GetStreamSessionInput {
    pub channel_arn: String,
    pub stream_id: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PutMetadataInput {
    pub channel_arn: String,
    pub metadata: String,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct InsertAdBreakInput {
    pub channel_arn: String,
    pub duration_seconds: i64,
    pub ad_break_id: Option<String>,
    pub target_start_at: Option<serde_json::Value>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TagResourceInput {
    pub resource_arn: String,
    pub tags: Tags,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct UntagResourceInput {
    pub resource_arn: String,
    pub tag_keys: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ResourceArnInput {
    pub resource_arn: String,
}

//! The IVS resources as the API returns them, with the model's member names verbatim.
//! The store keeps each resource as this JSON, so a stored resource *is* its wire form.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

pub type Tags = BTreeMap<String, String>;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Srt {
    pub endpoint: String,
    pub passphrase: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MultitrackInputConfiguration {
    #[serde(default)]
    pub enabled: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub maximum_resolution: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Channel {
    pub arn: String,
    pub name: String,
    pub latency_mode: String,
    #[serde(rename = "type")]
    pub channel_type: String,
    pub recording_configuration_arn: String,
    pub ingest_endpoint: String,
    pub playback_url: String,
    pub authorized: bool,
    pub tags: Tags,
    pub insecure_ingest: bool,
    pub preset: String,
    pub srt: Srt,
    pub playback_restriction_policy_arn: String,
    pub multitrack_input_configuration: MultitrackInputConfiguration,
    pub container_format: String,
    pub ad_configuration_arn: String,
    pub failover_slate_configuration_arn: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ChannelSummary {
    pub arn: String,
    pub name: String,
    pub latency_mode: String,
    pub authorized: bool,
    pub recording_configuration_arn: String,
    pub tags: Tags,
    pub insecure_ingest: bool,
    #[serde(rename = "type")]
    pub channel_type: String,
    pub preset: String,
    pub playback_restriction_policy_arn: String,
    pub ad_configuration_arn: String,
    pub failover_slate_configuration_arn: String,
}

impl Channel {
    pub fn summary(&self) -> ChannelSummary {
        ChannelSummary {
            arn: self.arn.clone(),
            name: self.name.clone(),
            latency_mode: self.latency_mode.clone(),
            authorized: self.authorized,
            recording_configuration_arn: self.recording_configuration_arn.clone(),
            tags: self.tags.clone(),
            insecure_ingest: self.insecure_ingest,
            channel_type: self.channel_type.clone(),
            preset: self.preset.clone(),
            playback_restriction_policy_arn: self.playback_restriction_policy_arn.clone(),
            ad_configuration_arn: self.ad_configuration_arn.clone(),
            failover_slate_configuration_arn: self.failover_slate_configuration_arn.clone(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StreamKey {
    pub arn: String,
    pub value: String,
    pub channel_arn: String,
    pub tags: Tags,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StreamKeySummary {
    pub arn: String,
    pub channel_arn: String,
    pub tags: Tags,
}

impl StreamKey {
    pub fn summary(&self) -> StreamKeySummary {
        StreamKeySummary { arn: self.arn.clone(), channel_arn: self.channel_arn.clone(), tags: self.tags.clone() }
    }
}

/// A playback key pair. The public key is kept (tokens are verified with it) but never returned.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PlaybackKeyPair {
    pub arn: String,
    pub name: String,
    pub fingerprint: String,
    pub tags: Tags,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub public_key_pem: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PlaybackKeyPairSummary {
    pub arn: String,
    pub name: String,
    pub tags: Tags,
}

impl PlaybackKeyPair {
    /// The key pair as GetPlaybackKeyPair and ImportPlaybackKeyPair return it (no key material).
    pub fn public_view(&self) -> PlaybackKeyPair {
        PlaybackKeyPair { public_key_pem: None, ..self.clone() }
    }
    pub fn summary(&self) -> PlaybackKeyPairSummary {
        PlaybackKeyPairSummary { arn: self.arn.clone(), name: self.name.clone(), tags: self.tags.clone() }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct S3DestinationConfiguration {
    pub bucket_name: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DestinationConfiguration {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub s3: Option<S3DestinationConfiguration>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ThumbnailConfiguration {
    pub recording_mode: String,
    pub target_interval_seconds: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resolution: Option<String>,
    pub storage: Vec<String>,
}

impl Default for ThumbnailConfiguration {
    fn default() -> Self {
        ThumbnailConfiguration {
            recording_mode: "INTERVAL".into(),
            target_interval_seconds: 60,
            resolution: None,
            storage: vec!["SEQUENTIAL".into()],
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RenditionConfiguration {
    pub rendition_selection: String,
    pub renditions: Vec<String>,
}

impl Default for RenditionConfiguration {
    fn default() -> Self {
        RenditionConfiguration { rendition_selection: "ALL".into(), renditions: Vec::new() }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RecordingConfiguration {
    pub arn: String,
    pub name: String,
    pub destination_configuration: DestinationConfiguration,
    pub state: String,
    pub tags: Tags,
    pub thumbnail_configuration: ThumbnailConfiguration,
    pub recording_reconnect_window_seconds: i64,
    pub rendition_configuration: RenditionConfiguration,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RecordingConfigurationSummary {
    pub arn: String,
    pub name: String,
    pub destination_configuration: DestinationConfiguration,
    pub state: String,
    pub tags: Tags,
}

impl RecordingConfiguration {
    pub fn summary(&self) -> RecordingConfigurationSummary {
        RecordingConfigurationSummary {
            arn: self.arn.clone(),
            name: self.name.clone(),
            destination_configuration: self.destination_configuration.clone(),
            state: self.state.clone(),
            tags: self.tags.clone(),
        }
    }
}

/// A playback restriction policy; its summary has the same members.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PlaybackRestrictionPolicy {
    pub arn: String,
    pub allowed_countries: Vec<String>,
    pub allowed_origins: Vec<String>,
    pub enable_strict_origin_enforcement: bool,
    pub name: String,
    pub tags: Tags,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MediaTailorPlaybackConfiguration {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub playback_configuration_arn: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PostRollConfiguration {
    pub duration_seconds: i64,
    pub enabled: bool,
}

impl Default for PostRollConfiguration {
    fn default() -> Self {
        PostRollConfiguration { duration_seconds: 15, enabled: false }
    }
}

/// An ad configuration; its summary has the same members.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AdConfiguration {
    pub arn: String,
    pub name: String,
    pub media_tailor_playback_configurations: Vec<MediaTailorPlaybackConfiguration>,
    pub post_roll_configuration: PostRollConfiguration,
    pub tags: Tags,
}

/// A failover slate configuration; its summary has the same members.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FailoverSlateConfiguration {
    pub arn: String,
    pub name: String,
    pub activation_threshold_seconds: i64,
    pub min_slate_display_seconds: i64,
    pub max_slate_display_seconds: i64,
    pub state: String,
    pub tags: Tags,
}

/// A stream session: one publish, from connect to disconnect, as GetStreamSession returns it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StreamSession {
    pub stream_id: String,
    pub start_time: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub end_time: Option<String>,
    pub channel: Channel,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ingest_configuration: Option<IngestConfiguration>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ingest_configurations: Option<IngestConfigurations>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recording_configuration: Option<RecordingConfiguration>,
    /// Newest first, at most 500.
    pub truncated_events: Vec<StreamEvent>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failover_slate_configuration: Option<FailoverSlateConfiguration>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StreamSessionSummary {
    pub stream_id: String,
    pub start_time: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub end_time: Option<String>,
    pub has_error_event: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StreamEvent {
    pub name: String,
    #[serde(rename = "type")]
    pub event_type: String,
    pub event_time: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct VideoConfiguration {
    pub avc_profile: String,
    pub avc_level: String,
    pub codec: String,
    pub encoder: String,
    pub target_bitrate: i64,
    pub target_framerate: i64,
    pub video_height: i64,
    pub video_width: i64,
    pub level: String,
    pub track: String,
    pub profile: String,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AudioConfiguration {
    pub codec: String,
    pub target_bitrate: i64,
    pub sample_rate: i64,
    pub channels: i64,
    pub track: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct IngestConfiguration {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub video: Option<VideoConfiguration>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub audio: Option<AudioConfiguration>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct IngestConfigurations {
    pub video_configurations: Vec<VideoConfiguration>,
    pub audio_configurations: Vec<AudioConfiguration>,
}

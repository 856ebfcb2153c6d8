//! Channels: CreateChannel (which also creates the channel's stream key), GetChannel,
//! BatchGetChannel, UpdateChannel, DeleteChannel (which deletes its stream keys), ListChannels.

use openivs_model::requests::{
    ArnInput, ArnsInput, ChannelSettings, CreateChannelInput, ListChannelsInput, UpdateChannelInput,
};
use openivs_model::resources::{Channel, MultitrackInputConfiguration, Srt, StreamKey, Tags};
use openivs_model::{Arn, IvsError, ResourceType};
use serde_json::{Value, json};

use super::stream_keys::new_stream_key;
use super::{
    Api, Endpoints, Resource, input_error_if, new_id, not_found, output, owned_arn, random_alphanumeric, record_of,
};
use crate::auth::Caller;
use crate::store::{Change, Check, ListQuery, Write};

impl Resource for Channel {
    const TYPE: ResourceType = ResourceType::Channel;
    fn arn(&self) -> &str {
        &self.arn
    }
    fn tags(&self) -> &Tags {
        &self.tags
    }
    fn name(&self) -> &str {
        &self.name
    }
    fn present(&mut self, endpoints: &Endpoints) {
        let Some(arn) = Arn::parse(&self.arn) else {
            return;
        };
        self.ingest_endpoint = endpoints.host_port(endpoints.rtmps_port, 443);
        self.playback_url =
            format!("{}/api/video/v1/{}.{}.channel.{}.m3u8", endpoints.http_origin(), arn.region, arn.account, arn.id);
        self.srt.endpoint = endpoints.host_port(endpoints.srt_port, 0);
    }
    fn references(&self) -> Vec<String> {
        [
            &self.recording_configuration_arn,
            &self.playback_restriction_policy_arn,
            &self.ad_configuration_arn,
            &self.failover_slate_configuration_arn,
        ]
        .into_iter()
        .filter(|arn| !arn.is_empty())
        .cloned()
        .collect()
    }
}

const ADVANCED_TYPES: [&str; 2] = ["ADVANCED_SD", "ADVANCED_HD"];
const DEFAULT_ADVANCED_PRESET: &str = "HIGHER_BANDWIDTH_DELIVERY";

/// The channel's reference members and the resource type each must name.
fn reference_fields(channel: &Channel) -> [(&String, ResourceType); 4] {
    [
        (&channel.recording_configuration_arn, ResourceType::RecordingConfiguration),
        (&channel.playback_restriction_policy_arn, ResourceType::PlaybackRestrictionPolicy),
        (&channel.ad_configuration_arn, ResourceType::AdConfiguration),
        (&channel.failover_slate_configuration_arn, ResourceType::FailoverSlateConfiguration),
    ]
}

/// Applies the members a Create/UpdateChannel request set, then IVS's cross-member rules.
fn apply_settings(channel: &mut Channel, settings: ChannelSettings) -> Result<(), IvsError> {
    let preset_requested = settings.preset.as_ref().is_some_and(|p| !p.is_empty());
    let ChannelSettings {
        name,
        latency_mode,
        channel_type,
        authorized,
        recording_configuration_arn,
        insecure_ingest,
        preset,
        playback_restriction_policy_arn,
        multitrack_input_configuration,
        container_format,
        ad_configuration_arn,
        failover_slate_configuration_arn,
    } = settings;
    let multitrack_requested = multitrack_input_configuration.clone();
    let container_requested = container_format.is_some();
    macro_rules! set {
        ($($field:ident <- $value:expr),* $(,)?) => { $( if let Some(v) = $value { channel.$field = v; } )* };
    }
    set!(
        name <- name,
        latency_mode <- latency_mode,
        channel_type <- channel_type,
        authorized <- authorized,
        recording_configuration_arn <- recording_configuration_arn,
        insecure_ingest <- insecure_ingest,
        preset <- preset,
        playback_restriction_policy_arn <- playback_restriction_policy_arn,
        container_format <- container_format,
        ad_configuration_arn <- ad_configuration_arn,
        failover_slate_configuration_arn <- failover_slate_configuration_arn,
    );
    if let Some(multitrack) = multitrack_input_configuration {
        channel.multitrack_input_configuration = with_multitrack_defaults(multitrack);
    }

    // Presets exist only for the ADVANCED types, which default to HIGHER_BANDWIDTH_DELIVERY.
    let advanced = ADVANCED_TYPES.contains(&channel.channel_type.as_str());
    if advanced && channel.preset.is_empty() {
        channel.preset = DEFAULT_ADVANCED_PRESET.into();
    } else if !advanced && !channel.preset.is_empty() {
        input_error_if(preset_requested, "preset is selectable only for ADVANCED_HD and ADVANCED_SD channel types")?;
        channel.preset.clear();
    }

    // Multitrack input: STANDARD channels only, with policy and maximumResolution, in fMP4.
    if channel.multitrack_input_configuration.enabled {
        input_error_if(
            channel.channel_type != "STANDARD",
            "multitrackInputConfiguration can be enabled only for channels of type STANDARD",
        )?;
        if let Some(requested) = &multitrack_requested {
            input_error_if(
                requested.enabled && (requested.policy.is_none() || requested.maximum_resolution.is_none()),
                "multitrackInputConfiguration.policy and maximumResolution are required when multitrack input is enabled",
            )?;
            input_error_if(
                requested.enabled && !container_requested && channel.container_format != "FRAGMENTED_MP4",
                "containerFormat is required, and must be FRAGMENTED_MP4, when multitrack input is enabled",
            )?;
        }
        input_error_if(
            channel.container_format != "FRAGMENTED_MP4",
            "containerFormat must be FRAGMENTED_MP4 when multitrack input is enabled",
        )?;
    }
    Ok(())
}

/// IVS reports a channel's multitrack configuration in full, with ALLOW/FULL_HD when unset.
fn with_multitrack_defaults(multitrack: MultitrackInputConfiguration) -> MultitrackInputConfiguration {
    MultitrackInputConfiguration {
        enabled: multitrack.enabled,
        policy: Some(multitrack.policy.unwrap_or_else(|| "ALLOW".into())),
        maximum_resolution: Some(multitrack.maximum_resolution.unwrap_or_else(|| "FULL_HD".into())),
    }
}

/// Conditions that the channel's references name existing resources of the caller.
fn reference_conditions(api: &Api, caller: &Caller, channel: &Channel) -> Result<Vec<(Check, IvsError)>, IvsError> {
    reference_fields(channel)
        .into_iter()
        .filter(|(arn, _)| !arn.is_empty())
        .map(|(arn, resource_type)| api.must_exist(caller, arn, resource_type))
        .collect()
}

fn new_channel(api: &Api, caller: &Caller, tags: Tags) -> Channel {
    let arn = Arn::new(&caller.region, &caller.account, ResourceType::Channel, &new_id());
    let mut channel = Channel {
        arn: arn.to_string(),
        name: String::new(),
        latency_mode: "LOW".into(),
        channel_type: "STANDARD".into(),
        recording_configuration_arn: String::new(),
        ingest_endpoint: String::new(),
        playback_url: String::new(),
        authorized: false,
        tags,
        insecure_ingest: false,
        preset: String::new(),
        srt: Srt { endpoint: String::new(), passphrase: random_alphanumeric(64) },
        playback_restriction_policy_arn: String::new(),
        multitrack_input_configuration: with_multitrack_defaults(MultitrackInputConfiguration {
            enabled: false,
            policy: None,
            maximum_resolution: None,
        }),
        container_format: "TS".into(),
        ad_configuration_arn: String::new(),
        failover_slate_configuration_arn: String::new(),
    };
    channel.present(&api.endpoints);
    channel
}

/// A channel records only through an ACTIVE recording configuration (one whose bucket was
/// there): naming a CREATE_FAILED one is refused. A configuration's state never changes after
/// it is created, so checking it before the change is as good as in it (its existence is
/// checked in the change).
async fn check_recording_configuration_active(api: &Api, caller: &Caller, channel: &Channel) -> Result<(), IvsError> {
    if channel.recording_configuration_arn.is_empty() {
        return Ok(());
    }
    let (_, configuration) = api
        .load::<openivs_model::resources::RecordingConfiguration>(caller, &channel.recording_configuration_arn)
        .await?;
    input_error_if(
        configuration.state != "ACTIVE",
        "The recording configuration is not ACTIVE (its bucket did not exist or could not be written)",
    )
}

pub(super) async fn create(api: &Api, caller: &Caller, request: CreateChannelInput) -> Result<Value, IvsError> {
    let mut channel = new_channel(api, caller, request.tags.unwrap_or_default());
    apply_settings(&mut channel, request.settings)?;
    check_recording_configuration_active(api, caller, &channel).await?;
    super::check_tag_keys(channel.tags.keys())?;
    let stream_key: StreamKey = new_stream_key(caller, &channel.arn, Tags::new());
    let (quota_check, quota_error) = api.quota_check(caller, ResourceType::Channel, api.quotas.channels);
    let mut change = Change::new().require(quota_check, quota_error);
    for (check, error) in reference_conditions(api, caller, &channel)? {
        change = change.require(check, error);
    }
    change = change.write(Write::Put(record_of(&channel)?)).write(Write::Put(record_of(&stream_key)?));
    api.store.apply(change).await?;
    if !channel.authorized {
        super::playback_restriction_policies::warn_if_attached_countries_unenforced(
            api,
            &channel.playback_restriction_policy_arn,
        )
        .await;
    }
    Ok(json!({ "channel": output(&channel)?, "streamKey": output(&stream_key)? }))
}

pub(super) async fn get(api: &Api, caller: &Caller, request: ArnInput) -> Result<Value, IvsError> {
    api.get_output::<Channel>(caller, &request.arn, "channel").await
}

pub(super) async fn batch_get(api: &Api, caller: &Caller, request: ArnsInput) -> Result<Value, IvsError> {
    let (channels, errors) = api.batch_get::<Channel>(caller, &request.arns).await?;
    Ok(json!({ "channels": channels, "errors": errors }))
}

/// The condition "nobody is publishing to this channel", decided by the store in the same
/// change as the update or delete (a publish opens its stream session through the store too).
fn not_live(arn: &str, refusal: &str) -> (Check, IvsError) {
    (Check::NotLive { channel_arn: arn.to_owned() }, IvsError::conflict(refusal))
}

pub(super) async fn update(api: &Api, caller: &Caller, request: UpdateChannelInput) -> Result<Value, IvsError> {
    let arn = request.arn.clone();
    // A first look at the result, for the references it will name (they are checked in the change).
    let (_, mut preview) = api.load::<Channel>(caller, &arn).await?;
    apply_settings(&mut preview, request.settings.clone())?;
    check_recording_configuration_active(api, caller, &preview).await?;
    let mut conditions = reference_conditions(api, caller, &preview)?;
    conditions.push(not_live(&arn, "Live channels cannot be updated: stop the stream (StopStream) first"));
    let settings = request.settings;
    let channel = api
        .update::<Channel>(caller, &arn, conditions, move |mut channel| {
            apply_settings(&mut channel, settings.clone())?;
            Ok(channel)
        })
        .await?;
    if !channel.authorized {
        super::playback_restriction_policies::warn_if_attached_countries_unenforced(
            api,
            &channel.playback_restriction_policy_arn,
        )
        .await;
    }
    Ok(json!({ "channel": output(&channel)? }))
}

pub(super) async fn delete(api: &Api, caller: &Caller, request: ArnInput) -> Result<Value, IvsError> {
    let arn = request.arn;
    owned_arn(caller, &arn, Some(ResourceType::Channel))?;
    let (live_check, live_error) =
        not_live(&arn, "The channel is live: stop the stream (StopStream) before deleting the channel");
    let change = Change::new()
        .require(Check::Exists { arn: arn.clone() }, not_found("channel", &arn))
        .require(live_check, live_error)
        .write(Write::DeleteChildren { parent_arn: arn.clone() })
        .write(Write::Delete { arn });
    api.store.apply(change).await?;
    Ok(Value::Null)
}

pub(super) async fn list(api: &Api, caller: &Caller, request: ListChannelsInput) -> Result<Value, IvsError> {
    let non_empty = |filter: &Option<String>| filter.clone().filter(|f| !f.is_empty());
    let name = non_empty(&request.filter_by_name);
    let references: Vec<String> = [
        &request.filter_by_recording_configuration_arn,
        &request.filter_by_playback_restriction_policy_arn,
        &request.filter_by_ad_configuration_arn,
        &request.filter_by_failover_slate_configuration_arn,
    ]
    .into_iter()
    .filter_map(non_empty)
    .collect();
    if usize::from(name.is_some()) + references.len() > 1 {
        return Err(IvsError::conflict("ListChannels filters are mutually exclusive: use at most one filterBy member"));
    }
    let referencing = references.into_iter().next();
    let filters = [name.clone().unwrap_or_default(), referencing.clone().unwrap_or_default()];
    let filters = [filters[0].as_str(), filters[1].as_str()];
    let query = ListQuery { name, referencing, ..Default::default() };
    api.list_output("ListChannels", caller, query, &filters, &request.paging, 100, "channels", Channel::summary).await
}

//! ARNs of IVS resources: `arn:aws:ivs:{region}:{account}:{type}/{id}`.

use std::fmt;

/// The resource types of the IVS API, named as in their ARNs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ResourceType {
    Channel,
    StreamKey,
    PlaybackKeyPair,
    RecordingConfiguration,
    PlaybackRestrictionPolicy,
    AdConfiguration,
    FailoverSlateConfiguration,
}

impl ResourceType {
    pub const ALL: [ResourceType; 7] = [
        ResourceType::Channel,
        ResourceType::StreamKey,
        ResourceType::PlaybackKeyPair,
        ResourceType::RecordingConfiguration,
        ResourceType::PlaybackRestrictionPolicy,
        ResourceType::AdConfiguration,
        ResourceType::FailoverSlateConfiguration,
    ];

    /// The resource-type segment of the ARN.
    pub fn arn_segment(self) -> &'static str {
        match self {
            ResourceType::Channel => "channel",
            ResourceType::StreamKey => "stream-key",
            ResourceType::PlaybackKeyPair => "playback-key",
            ResourceType::RecordingConfiguration => "recording-configuration",
            ResourceType::PlaybackRestrictionPolicy => "playback-restriction-policy",
            ResourceType::AdConfiguration => "ad-configuration",
            ResourceType::FailoverSlateConfiguration => "failover-slate-configuration",
        }
    }

    pub fn from_arn_segment(segment: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|t| t.arn_segment() == segment)
    }

    /// How error messages name the resource.
    pub fn display_name(self) -> &'static str {
        match self {
            ResourceType::Channel => "channel",
            ResourceType::StreamKey => "stream key",
            ResourceType::PlaybackKeyPair => "playback key pair",
            ResourceType::RecordingConfiguration => "recording configuration",
            ResourceType::PlaybackRestrictionPolicy => "playback restriction policy",
            ResourceType::AdConfiguration => "ad configuration",
            ResourceType::FailoverSlateConfiguration => "failover slate configuration",
        }
    }
}

/// A parsed IVS ARN.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Arn {
    pub region: String,
    pub account: String,
    pub resource_type: ResourceType,
    pub id: String,
}

impl Arn {
    pub fn new(region: &str, account: &str, resource_type: ResourceType, id: &str) -> Self {
        Arn { region: region.to_owned(), account: account.to_owned(), resource_type, id: id.to_owned() }
    }

    /// Parses `arn:aws:ivs:{region}:{account}:{type}/{id}`; `None` for anything else.
    pub fn parse(text: &str) -> Option<Arn> {
        let rest = text.strip_prefix("arn:aws:ivs:")?;
        let mut parts = rest.splitn(3, ':');
        let region = parts.next()?;
        let account = parts.next()?;
        let (segment, id) = parts.next()?.split_once('/')?;
        let resource_type = ResourceType::from_arn_segment(segment)?;
        let region_ok =
            !region.is_empty() && region.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
        let account_ok = !account.is_empty() && account.bytes().all(|b| b.is_ascii_digit());
        let id_ok = !id.is_empty() && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-');
        (region_ok && account_ok && id_ok).then(|| Arn::new(region, account, resource_type, id))
    }
}

impl fmt::Display for Arn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "arn:aws:ivs:{}:{}:{}/{}", self.region, self.account, self.resource_type.arn_segment(), self.id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_every_type() {
        for t in ResourceType::ALL {
            let arn = Arn::new("us-west-2", "123456789012", t, "abcdABCDefgh");
            assert_eq!(Arn::parse(&arn.to_string()), Some(arn));
        }
    }

    #[test]
    fn rejects_malformed() {
        for bad in [
            "",
            "arn:aws:ivs:us-west-2:123456789012:channel/",
            "arn:aws:ivs:us-west-2:12a:channel/abc",
            "arn:aws:ivs:US:1:channel/abc",
            "arn:aws:ivs:us-west-2:1:stage/abc",
            "arn:aws:s3:us-west-2:1:channel/abc",
            "arn:aws:ivs:us-west-2:1:channel/ab/c",
        ] {
            assert_eq!(Arn::parse(bad), None, "{bad}");
        }
    }
}

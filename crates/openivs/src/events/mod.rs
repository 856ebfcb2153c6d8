//! IVS events, as IVS sends them to Amazon EventBridge: what happened to a stream (state,
//! health, limit breaches) and to its recording, each in EventBridge's envelope.
//!
//! Events are never sent from where they happen. Whoever changes state puts the events that
//! describe the change into the store's outbox in the same transaction as the change
//! ([`crate::store::Write::AppendEvents`]), so an event exists exactly when its change does and
//! survives a crash with it. From the outbox, [`delivery`] hands them to every configured target
//! (webhooks, an EventBridge-compatible `PutEvents` endpoint) in commit order, at least once, and
//! [`sse`] streams them to developers watching locally.

pub mod delivery;
pub mod sse;

use std::sync::Arc;

use openivs_model::Arn;
use serde_json::{Value, json};
use time::OffsetDateTime;

use crate::store::{Change, OutboxEvent, Store, Write};

pub const STREAM_STATE_CHANGE: &str = "IVS Stream State Change";
pub const STREAM_HEALTH_CHANGE: &str = "IVS Stream Health Change";
pub const LIMIT_BREACH: &str = "IVS Limit Breach";
pub const RECORDING_STATE_CHANGE: &str = "IVS Recording State Change";

/// An event about one channel, ready for the outbox.
pub struct ChannelEvent<'a> {
    pub detail_type: &'a str,
    pub channel_arn: &'a str,
    pub detail: Value,
    pub time: OffsetDateTime,
}

impl ChannelEvent<'_> {
    /// The event in EventBridge's envelope. Account and region are the channel's (from its ARN).
    pub fn to_outbox(&self) -> OutboxEvent {
        let (region, account) = match Arn::parse(self.channel_arn) {
            Some(arn) => (arn.region, arn.account),
            None => (String::new(), String::new()),
        };
        let body = json!({
            "version": "0",
            "id": crate::api::random_uuid(),
            "detail-type": self.detail_type,
            "source": "aws.ivs",
            "account": account,
            "time": seconds_utc(self.time),
            "region": region,
            "resources": [self.channel_arn],
            "detail": self.detail,
        });
        OutboxEvent { account, region, body: body.to_string(), created_at: self.time.unix_timestamp() }
    }
}

/// RFC 3339 in UTC, to the second: the time format of EventBridge events and of IVS's recording files.
pub(crate) fn seconds_utc(at: OffsetDateTime) -> String {
    let at = at.to_offset(time::UtcOffset::UTC);
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}Z",
        at.year(),
        u8::from(at.month()),
        at.day(),
        at.hour(),
        at.minute(),
        at.second()
    )
}

/// The detail of an "IVS Stream State Change" or "IVS Stream Health Change" event.
pub fn stream_detail(event_name: &str, channel_name: &str, stream_id: &str, code: Option<&str>) -> Value {
    let mut detail = json!({ "event_name": event_name, "channel_name": channel_name, "stream_id": stream_id });
    if let Some(code) = code {
        detail["code"] = json!(code);
    }
    detail
}

/// A limit a stream went past ("IVS Limit Breach").
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Breach {
    /// IVS's name of the limit ("Ingest Bitrate", "Ingest Resolution", …).
    pub limit_name: &'static str,
    pub limit_value: u64,
    pub exceeded_by: u64,
    /// "bits per second", "total pixels", "pixels per edge", …
    pub limit_unit: &'static str,
}

impl Breach {
    pub fn detail(&self, channel_name: &str, stream_id: &str) -> Value {
        json!({
            "limit_name": self.limit_name,
            "limit_value": self.limit_value,
            "exceeded_by": self.exceeded_by,
            "limit_unit": self.limit_unit,
            "channel_name": channel_name,
            "stream_id": stream_id,
        })
    }
}

/// Puts events into the outbox on their own, for happenings that change no other state in the
/// store (a recording starting or ending: its state is in the bucket).
#[derive(Clone)]
pub struct Outbox {
    store: Arc<dyn Store>,
}

impl std::fmt::Debug for Outbox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Outbox")
    }
}

/// How often an event the store refused is offered again before it is given up (logged).
const EMIT_ATTEMPTS: u32 = 5;

impl Outbox {
    pub fn new(store: Arc<dyn Store>) -> Outbox {
        Outbox { store }
    }

    /// Appends the event, retrying briefly while the store refuses writes (a full disk).
    pub async fn emit(&self, event: ChannelEvent<'_>) {
        let outbox_event = event.to_outbox();
        for attempt in 1..=EMIT_ATTEMPTS {
            let change = Change::new().write(Write::AppendEvents(vec![outbox_event.clone()]));
            match self.store.apply(change).await {
                Ok(()) => return,
                Err(error) if attempt == EMIT_ATTEMPTS => {
                    tracing::error!("events: cannot store a {} event: {error:?}", event.detail_type);
                }
                Err(_) => tokio::time::sleep(std::time::Duration::from_millis(200 * u64::from(attempt))).await,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn envelope_has_eventbridge_fields() {
        let event = ChannelEvent {
            detail_type: STREAM_STATE_CHANGE,
            channel_arn: "arn:aws:ivs:us-west-2:123456789012:channel/AbCdEfGhIjKl",
            detail: stream_detail("Stream Start", "show", "st-1", None),
            time: OffsetDateTime::from_unix_timestamp(1_718_067_840).unwrap(),
        };
        let outbox = event.to_outbox();
        assert_eq!((outbox.account.as_str(), outbox.region.as_str()), ("123456789012", "us-west-2"));
        let body: Value = serde_json::from_str(&outbox.body).unwrap();
        assert_eq!(body["version"], "0");
        assert_eq!(body["source"], "aws.ivs");
        assert_eq!(body["time"], "2024-06-11T01:04:00Z");
        assert_eq!(body["detail-type"], STREAM_STATE_CHANGE);
        assert_eq!(body["resources"], json!(["arn:aws:ivs:us-west-2:123456789012:channel/AbCdEfGhIjKl"]));
        assert_eq!(body["detail"], json!({"event_name": "Stream Start", "channel_name": "show", "stream_id": "st-1"}));
        assert_eq!(body["id"].as_str().unwrap().len(), 36);
    }
}

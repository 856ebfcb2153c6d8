//! Delivery of the outbox to the event targets of the settings: HTTP webhooks (one signed POST
//! per event) and an EventBridge-compatible `PutEvents` endpoint (SigV4, up to 10 events per
//! call).
//!
//! Each target has a cursor in the store: the seq of the last event it acknowledged. Its loop
//! sends the events after the cursor in seq order, one request at a time, and moves the cursor
//! only past what the target acknowledged; anything else is sent again after a back-off (0.5 s
//! doubling to 30 s). So every event reaches every target at least once and in commit order,
//! through target outages and restarts (a crash between an acknowledgement and the cursor write
//! sends that event again: receivers deduplicate on the envelope's `id`). A target met for the
//! first time starts at the end of the outbox: it gets the events raised from then on.
//!
//! Nodes that share a database share the outbox: one node at a time delivers to each target
//! (the role `Store::try_lead` grants; the others try again every few seconds), and takes over
//! from the stored cursor when the node that delivered dies.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::time::Duration;

use hmac::{Hmac, Mac};
use serde_json::{Value, json};
use sha2::Sha256;
use tokio::sync::watch;

use crate::store::{Change, Store, StoredEvent, Write};

/// Events read from the outbox at a time (by deliveries and event streams).
pub(super) const BATCH: u32 = 100;
/// EventBridge takes at most 10 entries per PutEvents call.
const PUT_EVENTS_ENTRIES: usize = 10;
const FIRST_BACKOFF: Duration = Duration::from_millis(500);
const MAX_BACKOFF: Duration = Duration::from_secs(30);
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// Delivered events are kept this long (for SSE clients resuming with `Last-Event-ID`).
const RETENTION: Duration = Duration::from_secs(24 * 3600);
const PRUNE_EVERY: Duration = Duration::from_secs(600);
/// How often a node that does not deliver to a target tries to take the role over, and how
/// often the node that does checks it still has it.
const LEAD_CHECK: Duration = Duration::from_secs(3);

/// Where events go.
#[derive(Clone, PartialEq, Eq)]
pub enum Target {
    /// POSTs each event's envelope to `url`, with `X-Openivs-Timestamp` and
    /// `X-Openivs-Signature: v1=hex(HMAC-SHA256(secret, "{timestamp}.{body}"))`.
    Webhook {
        url: String,
        secret: String,
    },
    EventBridge(EventBridgeTarget),
}

/// An EventBridge-compatible endpoint (AWS EventBridge, LocalStack, moto …).
#[derive(Clone, PartialEq, Eq)]
pub struct EventBridgeTarget {
    /// e.g. `https://events.us-west-2.amazonaws.com`.
    pub endpoint: String,
    pub region: String,
    pub bus: String,
    /// The `Source` of the entries: `aws.ivs` (rules written for IVS match), which AWS itself
    /// refuses from callers (`aws.` sources are AWS's own): set another against real AWS.
    pub source: String,
    pub access_key_id: String,
    pub secret_access_key: String,
}

impl std::fmt::Debug for Target {
    /// Never shows secrets.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.label())
    }
}

impl Target {
    /// The target's name: its cursor's key in the store.
    pub fn name(&self) -> String {
        match self {
            Target::Webhook { url, .. } => format!("webhook {url}"),
            Target::EventBridge(target) => format!("eventbridge {} bus {}", target.endpoint, target.bus),
        }
    }

    /// The target as logs name it: a webhook URL's path and query may hold a token (as Slack's
    /// do), so only its scheme and host are shown.
    pub fn label(&self) -> String {
        match self {
            Target::Webhook { url, .. } => match reqwest::Url::parse(url) {
                Ok(parsed) => format!("webhook {}://{}/…", parsed.scheme(), parsed.host_str().unwrap_or_default()),
                Err(_) => "webhook (unparsable URL)".to_owned(),
            },
            Target::EventBridge(_) => self.name(),
        }
    }
}

/// The running deliveries.
pub struct Deliveries {
    store: Arc<dyn Store>,
    /// Per target, the seq of the last event it acknowledged, and whether this node delivers
    /// to it.
    delivered: Vec<(Arc<AtomicI64>, Arc<AtomicBool>)>,
    stop: watch::Sender<bool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

/// Starts a delivery loop per target (giving new targets a cursor at the end of the outbox),
/// and the pruning of delivered events.
pub async fn start(store: Arc<dyn Store>, targets: Vec<Target>) -> Result<Deliveries, String> {
    let client = reqwest::Client::builder()
        .timeout(REQUEST_TIMEOUT)
        .build()
        .map_err(|e| format!("cannot make the HTTP client of event delivery: {e}"))?;
    let (stop, stopped) = watch::channel(false);
    let mut deliveries = Deliveries { store: store.clone(), delivered: Vec::new(), stop, tasks: Vec::new() };
    let mut names = Vec::new();
    for target in targets {
        let (name, label) = (target.name(), target.label());
        let cursor = match store.event_cursor(&name).await.map_err(|e| e.to_string())? {
            Some(cursor) => cursor,
            None => {
                let end = store.last_event_seq().await.map_err(|e| e.to_string())?;
                let change = Change::new().write(Write::SetEventCursor { target: name.clone(), seq: end });
                store.apply(change).await.map_err(|e| format!("cannot record the cursor of {label}: {e:?}"))?;
                end
            }
        };
        tracing::info!("events: delivering to {label} from event {}", cursor + 1);
        let delivered = Arc::new(AtomicI64::new(cursor));
        let leading = Arc::new(AtomicBool::new(false));
        deliveries.delivered.push((delivered.clone(), leading.clone()));
        let run =
            Run { store: store.clone(), client: client.clone(), target, name: name.clone(), label, delivered, leading };
        deliveries.tasks.push(tokio::spawn(run.run(stopped.clone())));
        names.push(name);
    }
    deliveries.tasks.push(tokio::spawn(prune(store, names, stopped)));
    Ok(deliveries)
}

impl Deliveries {
    /// Waits, at most `limit`, until every target has acknowledged every event, then stops the
    /// loops. (What is left is delivered after the next start.)
    pub async fn finish(self, limit: Duration) {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            let last = self.store.last_event_seq().await.unwrap_or(0);
            let behind = self
                .delivered
                .iter()
                .any(|(delivered, leading)| leading.load(Ordering::SeqCst) && delivered.load(Ordering::SeqCst) < last);
            if !behind || tokio::time::Instant::now() >= deadline {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let _ = self.stop.send(true);
        for task in self.tasks {
            let _ = task.await;
        }
    }
}

/// One target's delivery loop.
struct Run {
    store: Arc<dyn Store>,
    client: reqwest::Client,
    target: Target,
    /// The cursor's key.
    name: String,
    /// The target in logs.
    label: String,
    delivered: Arc<AtomicI64>,
    /// This node delivers to the target (it holds the role).
    leading: Arc<AtomicBool>,
}

/// How a delivery attempt ended.
enum Outcome {
    /// The target took the events up to this seq (all of them, or the first ones).
    Acknowledged(i64),
    /// Nothing was taken: try again after a back-off.
    Failed(String),
}

impl Run {
    /// Delivers while this node holds the target's role; otherwise waits to take it over.
    async fn run(self, mut stopped: watch::Receiver<bool>) {
        let role = format!("event delivery to {}", self.name);
        while !*stopped.borrow() {
            match self.store.try_lead(&role).await {
                Ok(Some(leadership)) => {
                    // (From where the node that delivered before left off.)
                    if let Ok(Some(cursor)) = self.store.event_cursor(&self.name).await {
                        self.delivered.fetch_max(cursor, Ordering::SeqCst);
                    }
                    self.leading.store(true, Ordering::SeqCst);
                    self.deliver(stopped.clone(), leadership).await;
                    self.leading.store(false, Ordering::SeqCst);
                }
                Ok(None) => {}
                Err(error) => tracing::warn!("events: cannot take up delivery to {}: {error}", self.label),
            }
            tokio::select! {
                () = tokio::time::sleep(LEAD_CHECK) => {}
                _ = stopped.changed() => {}
            }
        }
    }

    /// Delivers until stopped or until the role is lost.
    async fn deliver(&self, mut stopped: watch::Receiver<bool>, mut leadership: Box<dyn crate::store::Leadership>) {
        let mut checked = tokio::time::Instant::now();
        let signal = self.store.event_signal();
        let mut backoff = FIRST_BACKOFF;
        let mut failures = 0u32;
        while !*stopped.borrow() {
            if checked.elapsed() >= LEAD_CHECK {
                checked = tokio::time::Instant::now();
                if !leadership.still_leading().await {
                    tracing::warn!("events: lost the delivery to {}; another node takes it over", self.label);
                    return;
                }
            }
            // Registered before reading, so a commit between the read and the wait is not missed.
            let appended = signal.notified();
            tokio::pin!(appended);
            appended.as_mut().enable();
            let after = self.delivered.load(Ordering::SeqCst);
            let events = match self.store.events_after(after, BATCH).await {
                Ok(events) => events,
                Err(error) => {
                    tracing::warn!("events: cannot read the outbox: {error}");
                    Vec::new()
                }
            };
            if events.is_empty() {
                tokio::select! {
                    () = &mut appended => {}
                    _ = stopped.changed() => {}
                    // (A safety net: the signal covers every append of this process.)
                    () = tokio::time::sleep(Duration::from_secs(5)) => {}
                }
                continue;
            }
            let mut rest = events.as_slice();
            while !rest.is_empty() && !*stopped.borrow() {
                let outcome = match &self.target {
                    Target::Webhook { url, secret } => self.post_webhook(url, secret, &rest[0]).await,
                    Target::EventBridge(target) => {
                        self.put_events(target, &rest[..rest.len().min(PUT_EVENTS_ENTRIES)]).await
                    }
                };
                match outcome {
                    Outcome::Acknowledged(seq) => {
                        if failures > 0 {
                            tracing::info!("events: {} takes events again", self.label);
                        }
                        failures = 0;
                        backoff = FIRST_BACKOFF;
                        self.acknowledge(seq).await;
                        let taken = rest.iter().take_while(|e| e.seq <= seq).count();
                        crate::metrics::global().event_deliveries_inc("delivered", taken);
                        rest = &rest[taken..];
                    }
                    Outcome::Failed(reason) => {
                        crate::metrics::global().event_deliveries_inc("retried", 1);
                        // (The first failure and then one in ten, so an outage does not flood the log.)
                        if failures.is_multiple_of(10) {
                            tracing::warn!(
                                "events: {} did not take event {}: {reason}; retrying in {backoff:?}",
                                self.label,
                                rest[0].seq
                            );
                        }
                        failures += 1;
                        tokio::select! {
                            () = tokio::time::sleep(backoff) => {}
                            _ = stopped.changed() => {}
                        }
                        backoff = (backoff * 2).min(MAX_BACKOFF);
                    }
                }
            }
        }
    }

    /// Moves the cursor (in memory at once; in the store, so a restart resumes after it).
    async fn acknowledge(&self, seq: i64) {
        self.delivered.store(seq, Ordering::SeqCst);
        let change = Change::new().write(Write::SetEventCursor { target: self.name.clone(), seq });
        if let Err(error) = self.store.apply(change).await {
            // Only costs a duplicate delivery after a restart.
            tracing::warn!("events: cannot record the cursor of {}: {error:?}", self.label);
        }
    }

    async fn post_webhook(&self, url: &str, secret: &str, event: &StoredEvent) -> Outcome {
        let timestamp = time::OffsetDateTime::now_utc().unix_timestamp().to_string();
        let signature = webhook_signature(secret, &timestamp, &event.body);
        let sent = self
            .client
            .post(url)
            .header("content-type", "application/json")
            .header("x-openivs-timestamp", &timestamp)
            .header("x-openivs-signature", format!("v1={signature}"))
            .header("x-openivs-event-seq", event.seq.to_string())
            .body(event.body.clone())
            .send()
            .await;
        match sent {
            Ok(response) if response.status().is_success() => Outcome::Acknowledged(event.seq),
            Ok(response) => Outcome::Failed(format!("HTTP {}", response.status())),
            // (Without the URL, which may hold a token: the target's label names it.)
            Err(error) => Outcome::Failed(error_chain(&error.without_url())),
        }
    }

    /// One PutEvents call with `events`. Entries the endpoint refuses for good (a malformed
    /// entry, a source it does not allow) are logged and skipped; on a refusal that may pass
    /// (throttling, an internal error) the call's later entries are sent again.
    async fn put_events(&self, target: &EventBridgeTarget, events: &[StoredEvent]) -> Outcome {
        let entries: Vec<Value> = events.iter().map(|event| put_events_entry(target, &event.body)).collect();
        let body = json!({ "Entries": entries }).to_string();
        let Ok(url) = reqwest::Url::parse(&target.endpoint) else {
            return Outcome::Failed(format!("{} is not a URL", target.endpoint));
        };
        let host = match (url.host_str(), url.port()) {
            (Some(host), Some(port)) => format!("{host}:{port}"),
            (Some(host), None) => host.to_owned(),
            (None, _) => return Outcome::Failed(format!("{} has no host", target.endpoint)),
        };
        let unsigned = crate::auth::sigv4::RequestParts {
            method: "POST",
            raw_path: "/",
            raw_query: None,
            headers: vec![
                ("host", host.as_bytes()),
                ("content-type", b"application/x-amz-json-1.1"),
                ("x-amz-target", b"AWSEvents.PutEvents"),
            ],
            body: body.as_bytes(),
        };
        let signature = crate::auth::sigv4::sign(
            &unsigned,
            &target.access_key_id,
            &target.secret_access_key,
            &target.region,
            "events",
            time::OffsetDateTime::now_utc(),
        );
        let mut request = self
            .client
            .post(url)
            .header("host", &host)
            .header("content-type", "application/x-amz-json-1.1")
            .header("x-amz-target", "AWSEvents.PutEvents");
        for (name, value) in signature {
            request = request.header(name, value);
        }
        let response = match request.body(body).send().await {
            Ok(response) => response,
            Err(error) => return Outcome::Failed(error_chain(&error)),
        };
        let status = response.status();
        let answer: Value = match response.bytes().await {
            Ok(bytes) => serde_json::from_slice(&bytes).unwrap_or(Value::Null),
            Err(error) => return Outcome::Failed(error_chain(&error)),
        };
        if !status.is_success() {
            return Outcome::Failed(format!("HTTP {status}: {answer}"));
        }
        let results = answer["Entries"].as_array().cloned().unwrap_or_default();
        let mut acknowledged = events[0].seq - 1;
        for (index, event) in events.iter().enumerate() {
            let result = results.get(index).cloned().unwrap_or(Value::Null);
            match result["ErrorCode"].as_str() {
                None => {}
                Some(code) if matches!(code, "ThrottlingException" | "InternalException" | "InternalFailure") => {
                    return if acknowledged >= events[0].seq {
                        Outcome::Acknowledged(acknowledged)
                    } else {
                        Outcome::Failed(format!("{code}: {}", result["ErrorMessage"]))
                    };
                }
                Some(code) => tracing::error!(
                    "events: {} refused event {} for good ({code}: {}); skipped{}",
                    self.label,
                    event.seq,
                    result["ErrorMessage"],
                    if code == "NotAuthorizedForSourceException" {
                        " (AWS refuses the source aws.ivs from callers: set --eventbridge-source)"
                    } else {
                        ""
                    }
                ),
            }
            acknowledged = event.seq;
        }
        Outcome::Acknowledged(acknowledged)
    }
}

/// The PutEvents entry of an event's envelope.
fn put_events_entry(target: &EventBridgeTarget, envelope: &str) -> Value {
    let envelope: Value = serde_json::from_str(envelope).unwrap_or(Value::Null);
    let time = time::OffsetDateTime::parse(
        envelope["time"].as_str().unwrap_or_default(),
        &time::format_description::well_known::Rfc3339,
    )
    .map_or_else(|_| time::OffsetDateTime::now_utc().unix_timestamp(), |t| t.unix_timestamp());
    json!({
        "Time": time,
        "Source": target.source,
        "Resources": envelope["resources"],
        "DetailType": envelope["detail-type"],
        "Detail": envelope["detail"].to_string(),
        "EventBusName": target.bus,
    })
}

/// The signature of a webhook request: hex HMAC-SHA256 of `"{timestamp}.{body}"` under the
/// target's secret (as Stripe signs its webhooks).
pub fn webhook_signature(secret: &str, timestamp: &str, body: &str) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("HMAC takes keys of any length");
    mac.update(timestamp.as_bytes());
    mac.update(b".");
    mac.update(body.as_bytes());
    hex::encode(mac.finalize().into_bytes())
}

/// An error with its causes (reqwest's own message is only the outermost one).
fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// Deletes events every target has acknowledged once they are older than [`RETENTION`].
async fn prune(store: Arc<dyn Store>, targets: Vec<String>, mut stopped: watch::Receiver<bool>) {
    loop {
        tokio::select! {
            () = tokio::time::sleep(PRUNE_EVERY) => {}
            _ = stopped.changed() => return,
        }
        let mut up_to = match store.last_event_seq().await {
            Ok(seq) => seq,
            Err(_) => continue,
        };
        for target in &targets {
            if let Ok(Some(cursor)) = store.event_cursor(target).await {
                up_to = up_to.min(cursor);
            }
        }
        let before = time::OffsetDateTime::now_utc().unix_timestamp() - RETENTION.as_secs() as i64;
        let change = Change::new().write(Write::PruneEvents { up_to_seq: up_to, created_before: before });
        if let Err(error) = store.apply(change).await {
            tracing::warn!("events: cannot prune the outbox: {error:?}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn logs_name_a_webhook_by_its_host_only() {
        let target =
            Target::Webhook { url: "https://hooks.example.com/services/T0/B0/token?key=k".into(), secret: "s".into() };
        assert_eq!(target.label(), "webhook https://hooks.example.com/…");
        assert_eq!(format!("{target:?}"), "webhook https://hooks.example.com/…");
        assert_eq!(target.name(), "webhook https://hooks.example.com/services/T0/B0/token?key=k");
    }

    #[test]
    fn webhook_signature_is_hmac_of_timestamp_and_body() {
        // echo -n '1700000000.{"a":1}' | openssl dgst -sha256 -hmac secret
        assert_eq!(
            webhook_signature("secret", "1700000000", r#"{"a":1}"#),
            "49f24e537407743fa4a0242bb63b94b9a47ee99cbbe071ccd8a22550ae411686"
        );
    }

    #[test]
    fn put_events_entry_carries_the_envelope() {
        let target = EventBridgeTarget {
            endpoint: "http://127.0.0.1:1".into(),
            region: "us-west-2".into(),
            bus: "default".into(),
            source: "aws.ivs".into(),
            access_key_id: "a".into(),
            secret_access_key: "b".into(),
        };
        let envelope = json!({
            "time": "2024-06-11T01:04:00Z",
            "resources": ["arn:x"],
            "detail-type": "IVS Stream State Change",
            "detail": {"event_name": "Stream Start"},
        });
        let entry = put_events_entry(&target, &envelope.to_string());
        assert_eq!(entry["Time"], 1_718_067_840);
        assert_eq!(entry["Source"], "aws.ivs");
        assert_eq!(entry["Resources"], json!(["arn:x"]));
        assert_eq!(entry["DetailType"], "IVS Stream State Change");
        assert_eq!(entry["Detail"], r#"{"event_name":"Stream Start"}"#);
        assert_eq!(entry["EventBusName"], "default");
    }
}

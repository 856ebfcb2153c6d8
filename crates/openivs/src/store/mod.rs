//! The store: where every resource lives, durably.
//!
//! [`Store`] is the interface; [`sqlite::SqliteStore`] the embedded backend, and
//! [`postgres::PostgresStore`] the shared one for several nodes (`--database-url`). The interface is deliberately
//! small and backend-neutral:
//! - resources are [`Record`]s: an ARN, the owning account and region, a creation sequence number
//!   (the stable order of every listing), a version (for optimistic concurrency), the few
//!   attributes listings filter on, and the resource's JSON exactly as the API returns it;
//! - every mutation is one [`Change`]: a list of [`Condition`]s and a list of [`Write`]s, applied
//!   atomically: all conditions hold and all writes land, or nothing happens. This is how IVS's
//!   rules that span resources (one stream key per channel, no deleting a referenced
//!   configuration, quotas, unique key fingerprints) stay true under concurrent requests, on one
//!   node or many.
//!
//! A successful `apply` is on disk before it returns; a failed one changed nothing, and the store
//! stays usable for the next.

pub mod conformance;
pub mod files;
pub mod metered;
pub mod postgres;
mod record_cache;
mod sql;
pub mod sqlite;

use std::sync::Arc;

use async_trait::async_trait;
use openivs_model::{IvsError, ResourceType};
use serde::Serialize;
use serde::de::DeserializeOwned;

/// One stored resource.
#[derive(Debug, Clone, PartialEq)]
pub struct Record {
    pub arn: String,
    pub resource_type: ResourceType,
    pub account: String,
    pub region: String,
    /// Creation order, assigned by the store on first insert; listings are ordered by it.
    pub seq: i64,
    /// Bumped by the store on every write; `Condition::Version` checks it.
    pub version: i64,
    /// The resource this one belongs to (a stream key's channel).
    pub parent_arn: Option<String>,
    /// The resource's name (ListChannels filters on it).
    pub name: String,
    /// A value unique across the store (a playback key's account/region/fingerprint; a stream
    /// key's value).
    pub unique_key: Option<String>,
    /// ARNs this resource refers to (a channel's recording configuration, policy, …).
    pub references: Vec<String>,
    /// The resource as JSON, exactly as the API returns it.
    pub body: String,
}

impl Record {
    /// A new record (not yet stored) for a resource.
    pub fn new(resource_type: ResourceType, account: &str, region: &str, arn: &str, body: &impl Serialize) -> Record {
        Record {
            arn: arn.to_owned(),
            resource_type,
            account: account.to_owned(),
            region: region.to_owned(),
            seq: 0,
            version: 0,
            parent_arn: None,
            name: String::new(),
            unique_key: None,
            references: Vec::new(),
            body: serde_json::to_string(body).expect("resources serialize"),
        }
    }

    pub fn decode<T: DeserializeOwned>(&self) -> Result<T, IvsError> {
        serde_json::from_str(&self.body)
            .map_err(|e| IvsError::internal(format!("stored resource {} is unreadable: {e}", self.arn)))
    }

    /// Replaces the body (keeping seq and version, so the write can be conditioned on them).
    pub fn with_body(mut self, body: &impl Serialize) -> Record {
        self.body = serde_json::to_string(body).expect("resources serialize");
        self
    }
}

impl Write {
    /// Whether the write changes a resource (a record) rather than sessions, leases, events…
    pub fn touches_resources(&self) -> bool {
        matches!(self, Write::Put(_) | Write::Delete { .. } | Write::DeleteChildren { .. } | Write::Modify { .. })
    }
}

/// A precondition of a [`Change`]. When it does not hold, the change is refused with `error`.
#[derive(Debug, Clone)]
pub struct Condition {
    pub check: Check,
    pub error: IvsError,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Check {
    /// A resource with this ARN exists.
    Exists { arn: String },
    /// The resource still has this version (nobody wrote it since it was read).
    Version { arn: String, version: i64 },
    /// No resource refers to this ARN.
    Unreferenced { arn: String },
    /// The parent has no child of this type.
    NoChild { parent_arn: String, resource_type: ResourceType },
    /// Fewer than `limit` resources of this type exist in the account and region.
    CountBelow { resource_type: ResourceType, account: String, region: String, limit: u32 },
    /// No resource holds this unique key.
    UniqueKeyFree { unique_key: String },
    /// The channel has no stream session that has not ended: nobody is publishing to it. A
    /// publish opens its session in a change of its own, so a channel update or delete and a
    /// publish that start together are ordered by the store: one of them is refused.
    NotLive { channel_arn: String },
    /// No node holds an unexpired lease on the channel's live stream (the stream registry).
    LeaseFree { channel_arn: String },
    /// This node still holds the channel's lease with this epoch (expired or not: nobody has
    /// taken it over). A node whose renewal fails this check was fenced and must stop its ingest.
    LeaseHeld { channel_arn: String, node_id: String, epoch: i64 },
    /// This stream session exists and has not ended.
    SessionOpen { stream_id: String },
    /// No unexpired use of this single-use playback token (`aws:single-use-uuid`) is recorded.
    SingleUseFree { uuid: String, now: i64 },
    /// The recording journal is still this one (this node, this body): nobody rewrote or
    /// finished it since it was read. Who finishes a recording claims its journal so.
    JournalUnchanged { recording_id: String, node_id: String, body: String },
}

#[derive(Debug, Clone, PartialEq)]
pub enum Write {
    /// Inserts the record, or replaces the record with the same ARN (keeping its seq).
    Put(Record),
    Delete {
        arn: String,
    },
    /// Deletes every child of the parent.
    DeleteChildren {
        parent_arn: String,
    },
    /// Rewrites a resource from its stored state, inside the change: concurrent edits of one
    /// resource are applied one after the other, each to the result of the one before, so none
    /// is lost and none has to be retried. A missing resource refuses the change
    /// (`ResourceNotFoundException`); an error from the edit refuses it with that error.
    Modify {
        arn: String,
        edit: Edit,
    },
    /// Inserts or replaces a stream session (by stream id).
    PutStreamSession(StreamSessionRecord),
    /// Inserts a new stream session built from its channel as stored when the change applies, so
    /// the session describes the channel exactly as it was when it went live. A missing channel
    /// refuses the change (`ResourceNotFoundException`), as does an error from `build`.
    OpenStreamSession {
        channel_arn: String,
        build: FromRecord<StreamSessionRecord>,
    },
    /// Records a viewer-session revocation; a later one raises the version, never lowers it
    /// (unless the earlier one expired). Expired revocations are dropped.
    RevokeViewer {
        revocation: ViewerRevocation,
        now: i64,
    },
    /// Records the use of a single-use playback token until it expires (Unix seconds); expired
    /// uses are dropped.
    UseSingleUse {
        uuid: String,
        expires_at: i64,
        now: i64,
    },
    /// Sets a server setting unless it is set already.
    InitSetting {
        key: String,
        value: String,
    },
    /// Takes the channel's lease for `lease_ms` from the database's clock now, with an epoch one
    /// above the last holder's (1 for the first); condition it on [`Check::LeaseFree`].
    TakeLease {
        lease: StreamLease,
        lease_ms: i64,
    },
    /// Extends a lease to `lease_ms` from now (not one released since); condition it on
    /// [`Check::LeaseHeld`].
    RenewLease {
        channel_arn: String,
        node_id: String,
        epoch: i64,
        lease_ms: i64,
    },
    /// Fences whoever held the channel's lease, whatever its epoch: the lease expires and its
    /// epoch grows, so the old holder's renewals and guarded writes are refused from now on
    /// (a node ending a session whose ingest node stopped renewing).
    FenceLease {
        channel_arn: String,
    },
    /// Gives a lease up (nothing happens if another holder has taken it since).
    ReleaseLease {
        channel_arn: String,
        node_id: String,
        epoch: i64,
    },
    /// Appends events to the outbox (in the same transaction as the change they describe).
    AppendEvents(Vec<OutboxEvent>),
    /// Records that a target has delivered every event up to `seq`.
    SetEventCursor {
        target: String,
        seq: i64,
    },
    /// Deletes the outbox events up to `up_to_seq` created before `created_before` (Unix seconds).
    PruneEvents {
        up_to_seq: i64,
        created_before: i64,
    },
    /// Keeps (or replaces) the journal of a recording in progress.
    PutRecordingJournal(RecordingJournal),
    /// Forgets a recording's journal (it was finished); nothing happens if it is gone already.
    DeleteRecordingJournal {
        recording_id: String,
    },
}

/// An event for the outbox: an EventBridge envelope (JSON) and the account and region it belongs to.
#[derive(Debug, Clone, PartialEq)]
pub struct OutboxEvent {
    pub account: String,
    pub region: String,
    pub body: String,
    /// Unix seconds.
    pub created_at: i64,
}

/// An event as the outbox keeps it: in commit order.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredEvent {
    pub seq: i64,
    pub account: String,
    pub region: String,
    pub body: String,
}

/// A computation over a resource as it is stored when a change is applied, inside the change:
/// the stored record in, what to write out (or an error that refuses the change).
pub struct FromRecord<T>(pub Arc<dyn Fn(Record) -> Result<T, IvsError> + Send + Sync>);

/// The edit of a [`Write::Modify`]: the stored record in, the record to store out.
pub type Edit = FromRecord<Record>;

impl<T> FromRecord<T> {
    pub fn new(compute: impl Fn(Record) -> Result<T, IvsError> + Send + Sync + 'static) -> FromRecord<T> {
        FromRecord(Arc::new(compute))
    }
}

impl<T> Clone for FromRecord<T> {
    fn clone(&self) -> Self {
        FromRecord(self.0.clone())
    }
}

impl<T> std::fmt::Debug for FromRecord<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("FromRecord(..)")
    }
}

impl<T> PartialEq for FromRecord<T> {
    fn eq(&self, other: &FromRecord<T>) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
}

#[derive(Debug, Clone, Default)]
pub struct Change {
    pub conditions: Vec<Condition>,
    pub writes: Vec<Write>,
}

impl Change {
    pub fn new() -> Change {
        Change::default()
    }
    pub fn require(mut self, check: Check, error: IvsError) -> Change {
        self.conditions.push(Condition { check, error });
        self
    }
    pub fn write(mut self, write: Write) -> Change {
        self.writes.push(write);
        self
    }

    /// Takes the channel's stream lease for `lease_ms`, unless another node holds a live one.
    pub fn take_stream_lease(lease: StreamLease, lease_ms: i64) -> Change {
        let channel_arn = lease.channel_arn.clone();
        Change::new()
            .require(
                Check::LeaseFree { channel_arn },
                IvsError::conflict("Another node holds this channel's live stream"),
            )
            .write(Write::TakeLease { lease, lease_ms })
    }

    /// Renews a lease this node holds; refused when another node has taken it (fenced).
    pub fn renew_stream_lease(channel_arn: &str, node_id: &str, epoch: i64, lease_ms: i64) -> Change {
        let (channel_arn, node_id) = (channel_arn.to_owned(), node_id.to_owned());
        Change::new()
            .require(
                Check::LeaseHeld { channel_arn: channel_arn.clone(), node_id: node_id.clone(), epoch },
                IvsError::conflict("The channel's live stream was taken over by another node"),
            )
            .write(Write::RenewLease { channel_arn, node_id, epoch, lease_ms })
    }

    /// Gives a lease up (a no-op when another node has taken it since).
    pub fn release_stream_lease(channel_arn: &str, node_id: &str, epoch: i64) -> Change {
        let write = Write::ReleaseLease { channel_arn: channel_arn.to_owned(), node_id: node_id.to_owned(), epoch };
        Change::new().write(write)
    }
}

/// Why a change was not applied.
#[derive(Debug)]
pub enum ApplyError {
    /// A condition did not hold; its error is the answer to the request.
    Rejected(IvsError),
    /// A `Check::Version` failed: the caller should read again and retry.
    Stale,
    Backend(String),
}

impl From<ApplyError> for IvsError {
    fn from(error: ApplyError) -> IvsError {
        match error {
            ApplyError::Rejected(e) => e,
            ApplyError::Stale => IvsError::conflict("The resource was modified concurrently; retry the request"),
            ApplyError::Backend(message) => IvsError::internal(message),
        }
    }
}

/// Which records a listing returns, in `seq` order.
#[derive(Debug, Clone, Default)]
pub struct ListQuery {
    pub resource_type: Option<ResourceType>,
    pub account: String,
    pub region: String,
    pub parent_arn: Option<String>,
    pub name: Option<String>,
    /// Only records that refer to this ARN.
    pub referencing: Option<String>,
    /// Only records with a greater seq (the page cursor).
    pub after_seq: i64,
    pub limit: u32,
}

/// A viewer-session revocation (StartViewerSessionRevocation), kept for the playback path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ViewerRevocation {
    pub channel_arn: String,
    pub viewer_id: String,
    pub max_version: i64,
    /// Unix seconds after which no token it matches can open a session any more.
    pub expires_at: i64,
}

/// A role this process holds among those sharing the store ([`Store::try_lead`]); given up
/// when dropped, or when the process dies.
#[async_trait]
pub trait Leadership: Send + Sync {
    /// Whether the role is still this process's (false once the database lost track of it).
    async fn still_leading(&mut self) -> bool;
}

/// The leadership of the only process a store has.
pub fn sole_leadership() -> Box<dyn Leadership> {
    Box::new(Sole)
}

struct Sole;

#[async_trait]
impl Leadership for Sole {
    async fn still_leading(&mut self) -> bool {
        true
    }
}

/// Who holds a channel's live stream: the node ingesting it, where other nodes fetch its
/// playback from, and the epoch of its lease (the stream registry).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamLease {
    pub channel_arn: String,
    pub node_id: String,
    pub origin_url: String,
    pub stream_id: String,
    /// Set by the store when the lease is taken (ignored in [`Write::TakeLease`]).
    pub epoch: i64,
}

/// The journal of a recording in progress: what finishes the recording if its node dies
/// ([`crate::recording::recovery`]), under the node that writes the recording.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordingJournal {
    pub recording_id: String,
    pub node_id: String,
    pub channel_arn: String,
    /// JSON.
    pub body: String,
}

/// A stored stream session (its JSON is the StreamSession the API returns).
#[derive(Debug, Clone, PartialEq)]
pub struct StreamSessionRecord {
    /// Order of creation; listings run newest first.
    pub seq: i64,
    pub stream_id: String,
    pub channel_arn: String,
    pub ended: bool,
    pub has_error_event: bool,
    pub body: String,
}

#[async_trait]
pub trait Store: Send + Sync + 'static {
    async fn get(&self, arn: &str) -> Result<Option<Record>, IvsError>;
    /// The record holding a unique key (a stream key by its value's index, …).
    async fn get_by_unique_key(&self, unique_key: &str) -> Result<Option<Record>, IvsError>;
    async fn list(&self, query: &ListQuery) -> Result<Vec<Record>, IvsError>;
    async fn apply(&self, change: Change) -> Result<(), ApplyError>;
    /// The highest revoked version of a viewer's sessions, if a revocation is in force at `now`.
    async fn viewer_revocation(&self, channel_arn: &str, viewer_id: &str, now: i64) -> Result<Option<i64>, IvsError>;
    /// Every revocation in force at `now` (what each node of a cluster follows).
    async fn viewer_revocations(&self, now: i64) -> Result<Vec<ViewerRevocation>, IvsError>;
    /// Every resource of a type, in all accounts and regions (start-up checks).
    async fn list_type(&self, resource_type: ResourceType) -> Result<Vec<Record>, IvsError>;
    /// A channel's session with this id, or its latest session when `stream_id` is `None`.
    async fn stream_session(
        &self,
        channel_arn: &str,
        stream_id: Option<&str>,
    ) -> Result<Option<StreamSessionRecord>, IvsError>;
    /// A channel's sessions, newest first, with a seq below `before_seq` (`i64::MAX`: from the newest).
    async fn list_stream_sessions(
        &self,
        channel_arn: &str,
        before_seq: i64,
        limit: u32,
    ) -> Result<Vec<StreamSessionRecord>, IvsError>;
    /// Sessions not marked ended (left by a server that stopped while they were live).
    async fn open_stream_sessions(&self) -> Result<Vec<StreamSessionRecord>, IvsError>;
    /// A value kept in the store across restarts (e.g. the key that signs pagination tokens).
    async fn setting(&self, key: &str) -> Result<Option<String>, IvsError>;
    /// Sets the value unless one is already there; returns the value in force.
    async fn init_setting(&self, key: &str, value: &str) -> Result<String, IvsError>;
    /// Outbox events with a seq above `after_seq`, oldest first (at most `limit`).
    async fn events_after(&self, after_seq: i64, limit: u32) -> Result<Vec<StoredEvent>, IvsError>;
    /// The seq of the newest outbox event (0 when there is none).
    async fn last_event_seq(&self) -> Result<i64, IvsError>;
    /// How far a target has delivered, if it has a cursor.
    async fn event_cursor(&self, target: &str) -> Result<Option<i64>, IvsError>;
    /// Notified (`notify_waiters`) after every commit that appended events.
    fn event_signal(&self) -> Arc<tokio::sync::Notify>;
    /// Who holds the channel's live stream under an unexpired lease, if anyone.
    async fn stream_holder(&self, channel_arn: &str) -> Result<Option<StreamLease>, IvsError>;
    /// Who held the channel's latest stream, live or ended (the node that still serves its
    /// playlists to the end).
    async fn last_stream_holder(&self, channel_arn: &str) -> Result<Option<StreamLease>, IvsError>;
    /// Every unexpired lease: the live streams of the whole cluster and who holds each.
    async fn stream_holders(&self) -> Result<Vec<StreamLease>, IvsError>;
    /// The journals of the recordings in progress on every node (`channel_arn`: of that
    /// channel only).
    async fn recording_journals(&self, channel_arn: Option<&str>) -> Result<Vec<RecordingJournal>, IvsError>;
    /// Makes this process the one that does `role` among all the processes sharing the store,
    /// for as long as the returned [`Leadership`] lives (`None`: another process holds it). A
    /// store only one process opens (SQLite) grants it at once.
    async fn try_lead(&self, role: &str) -> Result<Option<Box<dyn Leadership>>, IvsError> {
        let _ = role;
        Ok(Some(sole_leadership()))
    }
    /// Counts a call of `key` (an account's PutMetadata calls, …) for every process sharing the
    /// store, unless `limit` calls of it are counted in the last second: whether it was
    /// counted. `None` from a store only one process opens (SQLite): that process counts alone.
    async fn admit_shared_call(&self, key: &str, limit: u32) -> Result<Option<bool>, IvsError>;
    /// Finishes what is under way and lets go of the database (a clean shutdown).
    async fn close(&self) {}
}

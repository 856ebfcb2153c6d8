//! The stream registry: which node ingests each live channel. Going live takes the channel's
//! lease in the same store change that opens its session (refused while another node holds a
//! live one, as IVS refuses a second publisher); the ingest node renews it every
//! [`RENEW_EVERY`] and gives it up in the change that ends the session. A node that finds its
//! renewal refused was fenced (it paused past its lease and another node ended or took the
//! stream): it stops the ingest at once and writes nothing more to the session.
//!
//! A node that dies leaves its sessions open under a lease that expires within [`LEASE_MS`]:
//! any node ends such a session (the sweep, every [`SWEEP_EVERY`], or a new publish of the
//! channel), and a node that restarts under the same name ends its own at once. The node that
//! ends a dead node's session also finishes the recording of its stream, when the recordings go
//! to a shared S3 store.

use std::sync::Arc;
use std::time::Duration;

use openivs_model::IvsError;
use time::OffsetDateTime;

use super::Node;
use crate::live::session::end_orphan;
use crate::live::{LiveRegistry, LiveStream};
use crate::recording::recovery::Recovery;
use crate::store::{ApplyError, Change, Check, Store, StreamLease, StreamSessionRecord};

/// How long a lease lives without renewal: how soon a dead node's channels can go live again.
pub const LEASE_MS: i64 = 10_000;
/// How often the ingest node renews its leases (five chances before one expires).
pub const RENEW_EVERY: Duration = Duration::from_secs(2);
/// How often every node looks for sessions whose ingest node is gone.
pub const SWEEP_EVERY: Duration = Duration::from_secs(5);

/// The end code of a session whose node restarted while it was live.
const RESTART: &str = "ServerRestart";
/// The end code of a session whose node stopped renewing its lease (it died or lost the
/// database), as another node records it.
const NODE_LOST: &str = "IngestNodeLost";

/// Renews `lease` every [`RENEW_EVERY`] while `stream` lives on this node. When the renewal is
/// refused, the node was fenced: the stream leaves the live registry and its ingest stops.
/// (A store that cannot be reached is tried again; the lease still fences others meanwhile,
/// and this node is fenced only if another node takes the stream.)
pub async fn keep_lease(store: Arc<dyn Store>, live: Arc<LiveRegistry>, stream: LiveStream, lease: StreamLease) {
    let mut finished = stream.finished();
    let mut renew = tokio::time::interval(RENEW_EVERY);
    renew.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    renew.tick().await;
    loop {
        tokio::select! {
            _ = finished.wait_for(|done| *done) => return,
            _ = renew.tick() => {}
        }
        let change = Change::renew_stream_lease(&lease.channel_arn, &lease.node_id, lease.epoch, LEASE_MS);
        match store.apply(change).await {
            Ok(()) => {}
            Err(ApplyError::Rejected(_)) => {
                tracing::warn!(
                    "cluster: {} (stream {}) was taken over: this node lost its lease; stopping its ingest",
                    stream.channel_arn,
                    stream.stream_id
                );
                live.fence(&stream);
                return;
            }
            Err(error) => tracing::warn!("cluster: cannot renew the lease of {}: {error:?}", stream.channel_arn),
        }
    }
}

/// At start-up: ends the sessions this node left open (they are under its own name, or under
/// no live lease) before it restarted, and frees the leases still under its name (a node that
/// starts streams nothing). Sessions that another node holds are left to it.
pub async fn end_own_orphans(store: &Arc<dyn Store>, node: &Node, now: OffsetDateTime) -> Result<usize, IvsError> {
    let mut ended = 0;
    for record in store.open_stream_sessions().await? {
        let guard = match store.stream_holder(&record.channel_arn).await? {
            None => Check::LeaseFree { channel_arn: record.channel_arn.clone() },
            Some(holder) if holder.node_id == node.node_id => {
                Check::LeaseHeld { channel_arn: holder.channel_arn, node_id: holder.node_id, epoch: holder.epoch }
            }
            Some(_) => continue,
        };
        if end_orphan(store, &record, guard, RESTART, now).await? {
            ended += 1;
        }
    }
    for holder in store.stream_holders().await? {
        if holder.node_id == node.node_id {
            let release = Change::release_stream_lease(&holder.channel_arn, &holder.node_id, holder.epoch);
            store.apply(release).await?;
        }
    }
    Ok(ended)
}

/// Ends the open sessions of channels nobody holds a live lease on and this node does not
/// stream (`channel_arn`: of that channel only); how many. Their recordings are finished in the
/// background ([`Recovery::finish_lost_stream`]).
pub async fn end_lost_sessions(
    store: &Arc<dyn Store>,
    live: &LiveRegistry,
    recovery: &Arc<Recovery>,
    channel_arn: Option<&str>,
) -> Result<usize, IvsError> {
    let open: Vec<StreamSessionRecord> = store
        .open_stream_sessions()
        .await?
        .into_iter()
        .filter(|record| channel_arn.is_none_or(|arn| record.channel_arn == arn))
        .collect();
    let mut ended = 0;
    for record in open {
        if live.is_live(&record.channel_arn) || store.stream_holder(&record.channel_arn).await?.is_some() {
            continue;
        }
        let guard = Check::LeaseFree { channel_arn: record.channel_arn.clone() };
        if end_orphan(store, &record, guard, NODE_LOST, OffsetDateTime::now_utc()).await? {
            tracing::info!("cluster: ended stream {} of {}: its node is gone", record.stream_id, record.channel_arn);
            ended += 1;
            let recovery = recovery.clone();
            tokio::spawn(async move { recovery.finish_lost_stream(&record.channel_arn, &record.stream_id).await });
        }
    }
    Ok(ended)
}

/// Every [`SWEEP_EVERY`], ends the sessions whose ingest node is gone ([`end_lost_sessions`]).
pub async fn sweep(store: Arc<dyn Store>, live: Arc<LiveRegistry>, recovery: Arc<Recovery>) {
    let mut every = tokio::time::interval(SWEEP_EVERY);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        every.tick().await;
        if let Err(error) = end_lost_sessions(&store, &live, &recovery, None).await {
            tracing::warn!("cluster: cannot look for streams whose node is gone: {error}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::sqlite::SqliteStore;

    #[tokio::test]
    async fn a_node_that_starts_frees_the_leases_left_under_its_name() {
        let dir = std::env::temp_dir().join(format!("openivs-registry-restart-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let store: Arc<dyn Store> = Arc::new(SqliteStore::open(&dir.join("db.sqlite3")).await.unwrap());
        let lease = |channel_arn: &str, node_id: &str| StreamLease {
            channel_arn: channel_arn.into(),
            node_id: node_id.into(),
            origin_url: format!("http://{node_id}.internal"),
            stream_id: format!("st-{node_id}"),
            epoch: 0,
        };
        // A lease with no open session under node a (a renewal outlived its stream), and node b's.
        store.apply(Change::take_stream_lease(lease("arn:mine", "a"), 60_000)).await.unwrap();
        store.apply(Change::take_stream_lease(lease("arn:theirs", "b"), 60_000)).await.unwrap();
        let node = Node { node_id: "a".into(), origin_url: "http://a.internal".into() };
        assert_eq!(end_own_orphans(&store, &node, OffsetDateTime::now_utc()).await.unwrap(), 0);
        assert_eq!(store.stream_holder("arn:mine").await.unwrap(), None);
        assert_eq!(store.stream_holder("arn:theirs").await.unwrap().map(|h| h.node_id), Some("b".to_owned()));
        store.close().await;
        let _ = std::fs::remove_dir_all(dir);
    }
}

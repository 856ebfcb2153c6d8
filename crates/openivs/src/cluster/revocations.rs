//! Viewer-session revocations across nodes: StartViewerSessionRevocation is answered by
//! whichever node receives it, which stores the revocation and cuts its own viewers off at once;
//! every node reads the revocations in force from the store every [`FOLLOW_EVERY`] and cuts its
//! viewers that one matches off too (a session opened on one node may be playing on any other).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use crate::playback::Playback;
use crate::store::Store;

/// How often a node reads the revocations: a revocation reaches every node within about this.
pub const FOLLOW_EVERY: Duration = Duration::from_secs(1);

/// Applies every stored revocation this node has not applied yet (or raised since).
pub async fn follow(store: Arc<dyn Store>, playback: Arc<Playback>) {
    let mut applied: HashMap<(String, String), i64> = HashMap::new();
    let mut every = tokio::time::interval(FOLLOW_EVERY);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        every.tick().await;
        let now = crate::playback::access::unix_now();
        let revocations = match store.viewer_revocations(now).await {
            Ok(revocations) => revocations,
            Err(error) => {
                tracing::warn!("playback: cannot read the viewer-session revocations: {error}");
                continue;
            }
        };
        let mut in_force = HashMap::with_capacity(revocations.len());
        for revocation in revocations {
            let key = (revocation.channel_arn, revocation.viewer_id);
            if applied.get(&key).is_none_or(|version| *version < revocation.max_version) {
                playback.viewers.revoke(&key.0, &key.1, revocation.max_version);
            }
            in_force.insert(key, revocation.max_version);
        }
        // (Expired ones are dropped: the playback path keeps its own memory of them.)
        applied = in_force;
    }
}

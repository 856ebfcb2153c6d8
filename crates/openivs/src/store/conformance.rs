//! What every [`Store`] backend must do, as executable checks: the SQLite store's unit tests and
//! the API suite's store test (on whichever backend the suite runs: SQLite, then PostgreSQL) call
//! these with a fresh store, so both backends are held to one definition of atomic, conditional
//! and concurrent changes. They panic on a violation.

use std::sync::Arc;

use openivs_model::{IvsError, ResourceType};

use super::{ApplyError, Change, Check, Edit, ListQuery, Record, Store, StreamLease, StreamSessionRecord, Write};

fn record(arn: &str) -> Record {
    Record::new(ResourceType::Channel, "123456789012", "us-west-2", arn, &serde_json::json!({"arn": arn}))
}

pub async fn changes_are_atomic_and_conditional(store: Arc<dyn Store>) {
    let mut channel = record("arn:c1");
    channel.references = vec!["arn:rc".into()];
    store.apply(Change::new().write(Write::Put(channel))).await.unwrap();
    let stored = store.get("arn:c1").await.unwrap().unwrap();
    assert_eq!(stored.version, 1);
    assert_eq!(stored.references, vec!["arn:rc".to_string()]);

    // A failing condition leaves nothing written.
    let refused = Change::new()
        .require(Check::Unreferenced { arn: "arn:rc".into() }, IvsError::conflict("in use"))
        .write(Write::Put(record("arn:c2")));
    match store.apply(refused).await {
        Err(ApplyError::Rejected(e)) => assert_eq!(e.message, "in use"),
        other => panic!("{other:?}"),
    }
    assert!(store.get("arn:c2").await.unwrap().is_none());

    // Versions detect concurrent writers.
    let stale = Change::new()
        .require(Check::Version { arn: "arn:c1".into(), version: 0 }, IvsError::conflict("x"))
        .write(Write::Put(stored.clone()));
    assert!(matches!(store.apply(stale).await, Err(ApplyError::Stale)));
    store.apply(Change::new().write(Write::Put(stored.clone()))).await.unwrap();
    let again = store.get("arn:c1").await.unwrap().unwrap();
    assert_eq!((again.version, again.seq), (2, stored.seq));

    let quota = Change::new()
        .require(
            Check::CountBelow {
                resource_type: ResourceType::Channel,
                account: "123456789012".into(),
                region: "us-west-2".into(),
                limit: 1,
            },
            IvsError::quota("full"),
        )
        .write(Write::Put(record("arn:c3")));
    assert!(matches!(store.apply(quota).await, Err(ApplyError::Rejected(_))));
}

pub async fn concurrent_changes_each_succeed_or_fail_alone(store: Arc<dyn Store>) {
    let mut tasks = Vec::new();
    for i in 0..50 {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            let change = Change::new()
                .require(
                    Check::CountBelow {
                        resource_type: ResourceType::Channel,
                        account: "123456789012".into(),
                        region: "us-west-2".into(),
                        limit: 10,
                    },
                    IvsError::quota("full"),
                )
                .write(Write::Put(record(&format!("arn:g{i}"))));
            store.apply(change).await
        }));
    }
    let mut applied = 0;
    for task in tasks {
        match task.await.unwrap() {
            Ok(()) => applied += 1,
            Err(ApplyError::Rejected(e)) => assert_eq!(e.message, "full"),
            Err(other) => panic!("{other:?}"),
        }
    }
    assert_eq!(applied, 10);
    let query =
        ListQuery { account: "123456789012".into(), region: "us-west-2".into(), limit: 100, ..Default::default() };
    assert_eq!(store.list(&query).await.unwrap().len(), 10);
}

pub async fn a_broken_constraint_refuses_only_its_change(store: Arc<dyn Store>) {
    let mut first = record("arn:u1");
    first.unique_key = Some("k".into());
    store.apply(Change::new().write(Write::Put(first))).await.unwrap();
    let mut twin = record("arn:u2");
    twin.unique_key = Some("k".into());
    let (refused, fine) = tokio::join!(
        store.apply(Change::new().write(Write::Put(twin))),
        store.apply(Change::new().write(Write::Put(record("arn:u3"))))
    );
    assert!(matches!(refused, Err(ApplyError::Rejected(_))), "{refused:?}");
    fine.unwrap();
    assert!(store.get("arn:u2").await.unwrap().is_none());
    assert!(store.get("arn:u3").await.unwrap().is_some());
}

pub async fn concurrent_modifications_all_land(store: Arc<dyn Store>) {
    store.apply(Change::new().write(Write::Put(record("arn:m")))).await.unwrap();
    let mut tasks = Vec::new();
    for i in 0..40 {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            let edit = Edit::new(move |record: Record| {
                let mut body: serde_json::Value = record.decode()?;
                body[format!("k{i}")] = serde_json::json!(i);
                Ok(record.with_body(&body))
            });
            store.apply(Change::new().write(Write::Modify { arn: "arn:m".into(), edit })).await
        }));
    }
    for task in tasks {
        task.await.unwrap().unwrap();
    }
    let body: serde_json::Value = store.get("arn:m").await.unwrap().unwrap().decode().unwrap();
    assert_eq!(body.as_object().unwrap().len(), 41, "every edit applied to the one before: {body}");
    let missing = Write::Modify { arn: "arn:none".into(), edit: Edit::new(Ok) };
    assert!(matches!(store.apply(Change::new().write(missing)).await, Err(ApplyError::Rejected(_))));

    // A channel with an open stream session is live; once the session ends it is not.
    let session = |ended| StreamSessionRecord {
        seq: 0,
        stream_id: "st-1".into(),
        channel_arn: "arn:m".into(),
        ended,
        has_error_event: false,
        body: "{}".into(),
    };
    let not_live = || Change::new().require(Check::NotLive { channel_arn: "arn:m".into() }, IvsError::conflict("live"));
    let open = |stream_id: &str| {
        Change::new().require(Check::SessionOpen { stream_id: stream_id.into() }, IvsError::conflict("ended"))
    };
    assert!(matches!(store.apply(open("st-1")).await, Err(ApplyError::Rejected(_))), "no such session");
    store.apply(Change::new().write(Write::PutStreamSession(session(false)))).await.unwrap();
    assert!(matches!(store.apply(not_live()).await, Err(ApplyError::Rejected(_))));
    store.apply(open("st-1")).await.unwrap();
    store.apply(Change::new().write(Write::PutStreamSession(session(true)))).await.unwrap();
    store.apply(not_live()).await.unwrap();
    assert!(matches!(store.apply(open("st-1")).await, Err(ApplyError::Rejected(_))), "ended");
}

/// The stream registry: one holder per channel while its lease lives, a new epoch for each new
/// holder, and a holder that lost its lease fenced (its renewal refused, its release a no-op).
pub async fn the_stream_registry_leases_and_fences(store: Arc<dyn Store>) {
    let lease = |node: &str| StreamLease {
        channel_arn: "arn:live".into(),
        node_id: node.into(),
        origin_url: format!("http://{node}.internal"),
        stream_id: format!("st-{node}"),
        epoch: 0,
    };
    assert_eq!(store.stream_holder("arn:live").await.unwrap(), None);
    store.apply(Change::take_stream_lease(lease("a"), 600)).await.unwrap();
    let held = store.stream_holder("arn:live").await.unwrap().expect("a holds it");
    assert_eq!(held, StreamLease { epoch: 1, ..lease("a") });
    // A second node is refused while the lease lives; the holder renews it.
    assert!(matches!(store.apply(Change::take_stream_lease(lease("b"), 600)).await, Err(ApplyError::Rejected(_))));
    store.apply(Change::renew_stream_lease("arn:live", "a", 1, 600)).await.unwrap();
    // Once it expires (a's node stopped renewing), b takes it with the next epoch.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while store.stream_holder("arn:live").await.unwrap().is_some() {
        assert!(std::time::Instant::now() < deadline, "the lease never expired");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    store.apply(Change::take_stream_lease(lease("b"), 60_000)).await.unwrap();
    assert_eq!(store.stream_holder("arn:live").await.unwrap().map(|h| (h.node_id, h.epoch)), Some(("b".into(), 2)));
    // a wakes up: fenced.
    assert!(matches!(
        store.apply(Change::renew_stream_lease("arn:live", "a", 1, 600)).await,
        Err(ApplyError::Rejected(_))
    ));
    store.apply(Change::release_stream_lease("arn:live", "a", 1)).await.unwrap();
    assert_eq!(store.stream_holder("arn:live").await.unwrap().map(|h| h.epoch), Some(2));
    store.apply(Change::release_stream_lease("arn:live", "b", 2)).await.unwrap();
    assert_eq!(store.stream_holder("arn:live").await.unwrap(), None);
    // A renewal that was under way as b's stream ended does not take the channel back.
    store.apply(Change::renew_stream_lease("arn:live", "b", 2, 60_000)).await.unwrap();
    assert_eq!(store.stream_holder("arn:live").await.unwrap(), None);
    // The node that held the ended stream is still known (it serves the stream's playlists to the end).
    let last = store.last_stream_holder("arn:live").await.unwrap();
    assert_eq!(last.map(|h| (h.node_id, h.stream_id)), Some(("b".into(), "st-b".into())));
    assert_eq!(store.last_stream_holder("arn:never-live").await.unwrap(), None);
    // Leases of other channels are their own.
    store
        .apply(Change::take_stream_lease(StreamLease { channel_arn: "arn:other".into(), ..lease("a") }, 60_000))
        .await
        .unwrap();
    store.apply(Change::take_stream_lease(lease("c"), 600)).await.unwrap();
    assert_eq!(store.stream_holder("arn:live").await.unwrap().map(|h| h.epoch), Some(3));
    let mut held: Vec<(String, String)> =
        store.stream_holders().await.unwrap().into_iter().map(|h| (h.channel_arn, h.node_id)).collect();
    held.sort();
    assert_eq!(held, [("arn:live".to_owned(), "c".to_owned()), ("arn:other".to_owned(), "a".to_owned())]);
    // Fencing a live lease: it is free at once, c is fenced, and the next holder's epoch is 5.
    store.apply(Change::new().write(Write::FenceLease { channel_arn: "arn:live".into() })).await.unwrap();
    assert_eq!(store.stream_holder("arn:live").await.unwrap(), None);
    assert!(matches!(
        store.apply(Change::renew_stream_lease("arn:live", "c", 3, 600)).await,
        Err(ApplyError::Rejected(_))
    ));
    store.apply(Change::take_stream_lease(lease("a"), 600)).await.unwrap();
    assert_eq!(store.stream_holder("arn:live").await.unwrap().map(|h| h.epoch), Some(5));
}

/// Viewer-session revocations: a later one raises the version, never lowers it; they are listed
/// (what every node follows) while in force, and no longer once expired.
pub async fn revocations_in_force_are_listed(store: Arc<dyn Store>) {
    let revoke = |viewer: &str, max_version: i64, expires_at: i64| Write::RevokeViewer {
        revocation: super::ViewerRevocation {
            channel_arn: "arn:c".into(),
            viewer_id: viewer.into(),
            max_version,
            expires_at,
        },
        now: 1_000,
    };
    store.apply(Change::new().write(revoke("v1", 5, 2_000))).await.unwrap();
    store.apply(Change::new().write(revoke("v1", 3, 2_000))).await.unwrap();
    store.apply(Change::new().write(revoke("v2", 1, 1_500))).await.unwrap();
    let mut listed: Vec<(String, i64)> =
        store.viewer_revocations(1_200).await.unwrap().into_iter().map(|r| (r.viewer_id, r.max_version)).collect();
    listed.sort();
    assert_eq!(listed, [("v1".to_owned(), 5), ("v2".to_owned(), 1)]);
    let later: Vec<String> = store.viewer_revocations(1_600).await.unwrap().into_iter().map(|r| r.viewer_id).collect();
    assert_eq!(later, ["v1"]);
    assert_eq!(store.viewer_revocation("arn:c", "v1", 1_600).await.unwrap(), Some(5));
}

/// Recording journals: kept (a rewrite replaces), listed on every node, by channel, and gone
/// once deleted (a second delete changes nothing).
pub async fn recording_journals_are_kept_until_deleted(store: Arc<dyn Store>) {
    let journal = |id: &str, node: &str, channel: &str, body: &str| super::RecordingJournal {
        recording_id: id.into(),
        node_id: node.into(),
        channel_arn: channel.into(),
        body: body.into(),
    };
    let put = |j: super::RecordingJournal| Change::new().write(Write::PutRecordingJournal(j));
    store.apply(put(journal("r1", "a", "arn:c1", "{}"))).await.unwrap();
    store.apply(put(journal("r2", "b", "arn:c2", "{}"))).await.unwrap();
    store.apply(put(journal("r1", "a", "arn:c1", r#"{"stream_ids":["s1","s2"]}"#))).await.unwrap();
    let all = store.recording_journals(None).await.unwrap();
    assert_eq!(
        all,
        [journal("r1", "a", "arn:c1", r#"{"stream_ids":["s1","s2"]}"#), journal("r2", "b", "arn:c2", "{}")]
    );
    assert_eq!(store.recording_journals(Some("arn:c2")).await.unwrap(), [journal("r2", "b", "arn:c2", "{}")]);
    // Claiming: a write conditional on the journal as read; the second claim of the same read fails.
    let claim = |node: &str| {
        let unchanged = Check::JournalUnchanged { recording_id: "r2".into(), node_id: "b".into(), body: "{}".into() };
        Change::new().require(unchanged, IvsError::conflict("claimed")).write(Write::PutRecordingJournal(journal(
            "r2",
            node,
            "arn:c2",
            r#"{"claimed":true}"#,
        )))
    };
    store.apply(claim("c")).await.unwrap();
    assert!(matches!(store.apply(claim("a")).await, Err(ApplyError::Rejected(_))));
    assert_eq!(store.recording_journals(Some("arn:c2")).await.unwrap()[0].node_id, "c");
    store.apply(put(journal("r2", "b", "arn:c2", "{}"))).await.unwrap();
    for _ in 0..2 {
        let delete = Write::DeleteRecordingJournal { recording_id: "r1".into() };
        store.apply(Change::new().write(delete)).await.unwrap();
    }
    assert_eq!(store.recording_journals(None).await.unwrap(), [journal("r2", "b", "arn:c2", "{}")]);
}

/// Shared call counts: of 40 calls at once under a limit of 25 a second, 25 are counted (none
/// slips past the limit, none is lost); another key counts apart; a second later the key is
/// admitted again. A store only one process opens answers `None` (its process counts alone).
pub async fn shared_calls_are_limited_per_second(store: Arc<dyn Store>) {
    let Some(first) = store.admit_shared_call("k", 25).await.unwrap() else {
        assert_eq!(store.admit_shared_call("k", 25).await.unwrap(), None);
        return;
    };
    assert!(first);
    let started = std::time::Instant::now();
    let calls: Vec<_> = (0..39)
        .map(|_| {
            let store = store.clone();
            tokio::spawn(async move { store.admit_shared_call("k", 25).await.unwrap() })
        })
        .collect();
    let mut counted = 1;
    for call in calls {
        counted += usize::from(call.await.unwrap() == Some(true));
    }
    if started.elapsed() < std::time::Duration::from_millis(800) {
        assert_eq!(counted, 25);
    }
    assert_eq!(store.admit_shared_call("other", 25).await.unwrap(), Some(true));
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    assert_eq!(store.admit_shared_call("k", 25).await.unwrap(), Some(true));
}

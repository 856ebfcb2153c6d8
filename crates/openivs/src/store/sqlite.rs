//! The embedded store: one SQLite file in WAL mode with `synchronous=FULL`, so a change is on
//! disk when `apply` returns. Writes go through a single connection (SQLite allows one writer
//! at a time anyway, and this makes every `Change` serializable without busy retries); reads use
//! a small pool of read-only connections that WAL lets run alongside.
//!
//! Group commit: the changes that arrive while a commit is under way are applied together in the
//! next transaction, each inside its own savepoint (so one change's failed condition undoes only
//! that change; a change alone needs none: its transaction is rolled back instead), and share
//! one fsync. Every caller still learns its own outcome only after the
//! commit that holds its change is durable.
//!
//! Every write, stream sessions and settings included, goes through that one commit loop, which
//! owns the writer connection and drives its transactions with explicit `BEGIN IMMEDIATE` /
//! `COMMIT`. When anything in a transaction fails at the storage level (a full disk, an I/O
//! error), SQLite may or may not have rolled the transaction back already; rather than guess,
//! the loop rolls back, answers every change of the group with a backend error, and drops the
//! connection, so the next group starts on a fresh one that is certainly outside any
//! transaction. A change is acknowledged only after its `COMMIT` returned success.

use std::path::Path;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use openivs_model::{IvsError, ResourceType};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteConnection, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteRow,
    SqliteSynchronous,
};
use sqlx::{AssertSqlSafe, ConnectOptions, Connection, Row};
use tokio::sync::{mpsc, oneshot};

use super::sql::execute;
use super::{
    ApplyError, Change, Check, ListQuery, Record, RecordingJournal, Store, StoredEvent, StreamLease,
    StreamSessionRecord, ViewerRevocation, Write,
};

/// Schema migrations, applied in order once each (recorded in `schema_migrations`).
const MIGRATIONS: &[(i64, &str)] = &[
    (1, include_str!("migrations/sqlite/0001_resources.sql")),
    (2, include_str!("migrations/sqlite/0002_stream_sessions.sql")),
    (3, include_str!("migrations/sqlite/0003_playback_access.sql")),
    (4, include_str!("migrations/sqlite/0004_events.sql")),
    (5, include_str!("migrations/sqlite/0005_live_streams.sql")),
    (6, include_str!("migrations/sqlite/0006_recording_journals.sql")),
];

pub struct SqliteStore {
    reader: SqlitePool,
    /// Resources read lately (the commit loop empties it around changes to resources).
    cache: Arc<super::record_cache::RecordCache>,
    commits: mpsc::Sender<Pending>,
    /// Closed (dropped) by `close`, which ends the commit loop; the loop's handle is awaited there.
    commit_loop: tokio::sync::Mutex<Option<tokio::task::JoinHandle<()>>>,
    /// Notified after each commit that appended outbox events.
    event_signal: Arc<tokio::sync::Notify>,
}

/// At most this many changes share one transaction.
const MAX_GROUP: usize = 256;

impl SqliteStore {
    /// Opens (creating if needed) the database file and brings its schema up to date.
    pub async fn open(path: &Path) -> Result<SqliteStore, String> {
        if let Some(dir) = path.parent() {
            super::files::create_private_dir(dir)?;
        }
        // The database holds stream keys and the key that signs page tokens: owner only. SQLite
        // gives its -wal and -shm files the database file's permissions.
        super::files::create_private_file(path)?;
        let options = SqliteConnectOptions::from_str("sqlite:")
            .map_err(|e| e.to_string())?
            .filename(path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full)
            .busy_timeout(Duration::from_secs(10));
        let mut writer = Writer { options: options.clone(), connection: None };
        let connection = writer.connection().await.map_err(|e| format!("cannot open {}: {e}", path.display()))?;
        apply_migrations(connection, MIGRATIONS).await?;
        let reader = SqlitePoolOptions::new()
            .max_connections(4)
            .connect_with(options.read_only(true))
            .await
            .map_err(|e| format!("cannot open {}: {e}", path.display()))?;
        let (commits, queue) = mpsc::channel(4 * MAX_GROUP);
        let event_signal = Arc::new(tokio::sync::Notify::new());
        let cache = Arc::new(super::record_cache::RecordCache::default());
        let commit_loop = tokio::spawn(commit_loop(writer, queue, event_signal.clone(), cache.clone()));
        Ok(SqliteStore {
            reader,
            cache,
            commits,
            commit_loop: tokio::sync::Mutex::new(Some(commit_loop)),
            event_signal,
        })
    }

    /// A resource by ARN: from the cache, else read from the file (and kept).
    async fn read_by_arn(&self, arn: &str) -> Result<Option<Record>, IvsError> {
        if let Some(record) = self.cache.get(arn) {
            return Ok(Some(record));
        }
        let generation = self.cache.generation();
        let record = read_record(&self.reader, "arn", arn).await?;
        if let Some(record) = &record {
            self.cache.fill(generation, record);
        }
        Ok(record)
    }

    /// One process opens a SQLite store: every role is its own.
    pub async fn lead(&self, _role: &str) -> Result<Option<Box<dyn super::Leadership>>, IvsError> {
        Ok(Some(super::sole_leadership()))
    }

    /// One process opens the file: it counts its calls itself.
    pub async fn count_shared_call(&self, _key: &str, _limit: u32) -> Result<Option<bool>, IvsError> {
        Ok(None)
    }

    /// Closes the readers and lets the commit loop finish what is queued, then close the writer.
    pub async fn shut_down(&self) {
        self.reader.close().await;
        let (closing, closed) = oneshot::channel();
        // A change with nothing in it, marked as the last: the loop stops after answering it.
        let _ = self.commits.send(Pending { change: Change::new(), reply: closing, last: true }).await;
        let _ = closed.await;
        if let Some(handle) = self.commit_loop.lock().await.take() {
            let _ = handle.await;
        }
    }
}

/// The one connection that writes. It is opened on demand and dropped after any storage error,
/// because SQLite may have ended the transaction on its own and the connection's state is then
/// not worth trusting.
struct Writer {
    options: SqliteConnectOptions,
    connection: Option<SqliteConnection>,
}

impl Writer {
    async fn connection(&mut self) -> Result<&mut SqliteConnection, sqlx::Error> {
        if self.connection.is_none() {
            self.connection = Some(self.options.connect().await?);
        }
        Ok(self.connection.as_mut().expect("just opened"))
    }

    async fn discard(&mut self) {
        if let Some(connection) = self.connection.take() {
            let _ = connection.close().await;
        }
    }
}

// (The database's clock in Unix milliseconds: SQLite 3.42 or later, as bundled.)
super::sql::relational_store!(
    SqliteStore,
    reader,
    SqliteConnection,
    SqliteRow,
    SqlitePool,
    "CAST(unixepoch('subsec') * 1000 AS INTEGER)"
);

/// A change waiting for the commit loop, and where to send its outcome.
struct Pending {
    change: Change,
    reply: oneshot::Sender<Result<(), ApplyError>>,
    /// Sent by `close`: the loop stops once this is answered.
    last: bool,
}

/// Applies queued changes, as many as are waiting (up to [`MAX_GROUP`]) per transaction.
async fn commit_loop(
    mut writer: Writer,
    mut queue: mpsc::Receiver<Pending>,
    event_signal: Arc<tokio::sync::Notify>,
    cache: Arc<super::record_cache::RecordCache>,
) {
    while let Some(first) = queue.recv().await {
        let mut group = vec![first];
        while group.len() < MAX_GROUP && !group.last().is_some_and(|p| p.last) {
            match queue.try_recv() {
                Ok(pending) => group.push(pending),
                Err(_) => break,
            }
        }
        // (Around the whole group: reads that overlap it neither fill the cache nor find old
        // records in it.)
        let touches_resources = group.iter().any(|pending| pending.change.writes.iter().any(Write::touches_resources));
        if touches_resources {
            cache.invalidate();
        }
        let outcomes = commit_group(&mut writer, group.iter().map(|pending| &pending.change)).await;
        if touches_resources {
            cache.invalidate();
        }
        let appended_events = group.iter().zip(&outcomes).any(|(pending, outcome)| {
            outcome.is_ok() && pending.change.writes.iter().any(|w| matches!(w, Write::AppendEvents(_)))
        });
        if appended_events {
            event_signal.notify_waiters();
        }
        let stop = group.iter().any(|pending| pending.last);
        for (pending, outcome) in group.into_iter().zip(outcomes) {
            let _ = pending.reply.send(outcome);
        }
        if stop {
            break;
        }
    }
    writer.discard().await;
}

/// One transaction for a group of changes; each change succeeds or fails on its own (a
/// condition that does not hold), and none is reported successful unless the commit succeeded.
/// A storage error anywhere fails the whole group and discards the connection.
async fn commit_group<'a>(
    writer: &mut Writer,
    changes: impl ExactSizeIterator<Item = &'a Change>,
) -> Vec<Result<(), ApplyError>> {
    let count = changes.len();
    let outcome = async {
        let connection = writer.connection().await.map_err(store_error)?;
        sqlx::query("BEGIN IMMEDIATE").execute(&mut *connection).await.map_err(store_error)?;
        let mut outcomes = Vec::with_capacity(count);
        if count == 1 {
            // A change alone needs no savepoint: the transaction is undone with it if it fails.
            for change in changes {
                outcomes.push(check_and_write(connection, change).await);
            }
            match &outcomes[0] {
                Err(ApplyError::Backend(message)) => return Err(ApplyError::Backend(message.clone())),
                Err(_) => {
                    sqlx::query("ROLLBACK").execute(&mut *connection).await.map_err(store_error)?;
                    return Ok(outcomes);
                }
                Ok(()) => {}
            }
        } else {
            for change in changes {
                match apply_in_savepoint(connection, change).await {
                    Err(ApplyError::Backend(message)) => return Err(ApplyError::Backend(message)),
                    outcome => outcomes.push(outcome),
                }
            }
        }
        sqlx::query("COMMIT").execute(&mut *connection).await.map_err(store_error)?;
        Ok(outcomes)
    }
    .await;
    match outcome {
        Ok(outcomes) => outcomes,
        Err(error) => {
            tracing::error!("store: a write failed, nothing of it was committed: {}", backend_message(&error));
            if let Some(connection) = writer.connection.as_mut() {
                let _ = sqlx::query("ROLLBACK").execute(&mut *connection).await;
            }
            writer.discard().await;
            (0..count).map(|_| Err(ApplyError::Backend(backend_message(&error)))).collect()
        }
    }
}

fn backend_message(error: &ApplyError) -> String {
    match error {
        ApplyError::Backend(message) => message.clone(),
        other => format!("{other:?}"),
    }
}

/// One change of a group, inside a savepoint of its own, released after it (savepoints left
/// open nest, and SQLite then journals every page a later change writes once per savepoint:
/// measured slower than the `RELEASE` it saves).
async fn apply_in_savepoint(tx: &mut SqliteConnection, change: &Change) -> Result<(), ApplyError> {
    if change.conditions.is_empty() && change.writes.is_empty() {
        return Ok(());
    }
    sqlx::query("SAVEPOINT change").execute(&mut *tx).await.map_err(store_error)?;
    let outcome = check_and_write(tx, change).await;
    match outcome {
        Err(ApplyError::Backend(message)) => return Err(ApplyError::Backend(message)),
        Ok(()) => {}
        Err(_) => {
            sqlx::query("ROLLBACK TO SAVEPOINT change").execute(&mut *tx).await.map_err(store_error)?;
        }
    }
    sqlx::query("RELEASE SAVEPOINT change").execute(&mut *tx).await.map_err(store_error)?;
    outcome
}

impl SqliteStore {
    async fn commit(&self, change: Change) -> Result<(), ApplyError> {
        let (reply, outcome) = oneshot::channel();
        let stopped = || ApplyError::Backend("the store is shut down".into());
        self.commits.send(Pending { change, reply, last: false }).await.map_err(|_| stopped())?;
        outcome.await.map_err(|_| stopped())?
    }

    async fn newest_event_seq(&self) -> Result<i64, IvsError> {
        // (AUTOINCREMENT keeps the highest seq ever used, even once those rows are pruned.)
        let from_sequence: Option<i64> = sqlx::query_scalar("SELECT seq FROM sqlite_sequence WHERE name = 'events'")
            .fetch_optional(&self.reader)
            .await
            .map_err(backend)?;
        Ok(from_sequence.unwrap_or(0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn temp_store(name: &str) -> (SqliteStore, std::path::PathBuf) {
        let dir = std::env::temp_dir().join(format!("openivs-store-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        (SqliteStore::open(&dir.join("db.sqlite3")).await.unwrap(), dir)
    }

    fn record(arn: &str) -> Record {
        Record::new(ResourceType::Channel, "123456789012", "us-west-2", arn, &serde_json::json!({"arn": arn}))
    }

    #[tokio::test]
    async fn changes_are_atomic_and_conditional() {
        let (store, dir) = temp_store("changes_are_").await;
        let store = std::sync::Arc::new(store);
        super::super::conformance::changes_are_atomic_and_conditional(store.clone()).await;
        store.close().await;
        std::fs::remove_dir_all(dir).ok();
    }

    #[tokio::test]
    async fn revocations_in_force_are_listed() {
        let (store, dir) = temp_store("revocations").await;
        let store = std::sync::Arc::new(store);
        super::super::conformance::revocations_in_force_are_listed(store.clone()).await;
        store.close().await;
        std::fs::remove_dir_all(dir).ok();
    }

    #[tokio::test]
    async fn recording_journals_are_kept_until_deleted() {
        let (store, dir) = temp_store("journals").await;
        let store = std::sync::Arc::new(store);
        super::super::conformance::recording_journals_are_kept_until_deleted(store.clone()).await;
        store.close().await;
        std::fs::remove_dir_all(dir).ok();
    }

    #[tokio::test]
    async fn shared_calls_are_counted_by_the_process_alone() {
        let (store, dir) = temp_store("calls").await;
        let store = std::sync::Arc::new(store);
        super::super::conformance::shared_calls_are_limited_per_second(store.clone()).await;
        store.close().await;
        std::fs::remove_dir_all(dir).ok();
    }

    #[tokio::test]
    async fn the_stream_registry_leases_and_fences() {
        let (store, dir) = temp_store("registry").await;
        let store = std::sync::Arc::new(store);
        super::super::conformance::the_stream_registry_leases_and_fences(store.clone()).await;
        store.close().await;
        std::fs::remove_dir_all(dir).ok();
    }

    #[tokio::test]
    async fn survives_reopen_and_lists_in_order() {
        let (store, dir) = temp_store("reopen").await;
        for i in 0..5 {
            store.apply(Change::new().write(Write::Put(record(&format!("arn:c{i}"))))).await.unwrap();
        }
        let key = store.init_setting("k", "v1").await.unwrap();
        assert_eq!(store.init_setting("k", "v2").await.unwrap(), key);
        store.close().await;
        let store = SqliteStore::open(&dir.join("db.sqlite3")).await.unwrap();
        let query = ListQuery {
            resource_type: Some(ResourceType::Channel),
            account: "123456789012".into(),
            region: "us-west-2".into(),
            limit: 3,
            ..Default::default()
        };
        let page = store.list(&query).await.unwrap();
        assert_eq!(page.iter().map(|r| r.arn.as_str()).collect::<Vec<_>>(), ["arn:c0", "arn:c1", "arn:c2"]);
        let next = store.list(&ListQuery { after_seq: page[2].seq, ..query }).await.unwrap();
        assert_eq!(next.len(), 2);
        assert_eq!(store.setting("k").await.unwrap().as_deref(), Some("v1"));
        store.close().await;
        std::fs::remove_dir_all(dir).ok();
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_changes_each_succeed_or_fail_alone() {
        let (store, dir) = temp_store("concurrent_c").await;
        let store = std::sync::Arc::new(store);
        super::super::conformance::concurrent_changes_each_succeed_or_fail_alone(store.clone()).await;
        store.close().await;
        std::fs::remove_dir_all(dir).ok();
    }

    #[tokio::test]
    async fn a_broken_constraint_refuses_only_its_change() {
        let (store, dir) = temp_store("a_broken_con").await;
        let store = std::sync::Arc::new(store);
        super::super::conformance::a_broken_constraint_refuses_only_its_change(store.clone()).await;
        store.close().await;
        std::fs::remove_dir_all(dir).ok();
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_modifications_all_land() {
        let (store, dir) = temp_store("concurrent_m").await;
        let store = std::sync::Arc::new(store);
        super::super::conformance::concurrent_modifications_all_land(store.clone()).await;
        store.close().await;
        std::fs::remove_dir_all(dir).ok();
    }
}

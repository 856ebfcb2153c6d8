//! The embedded store: one SQLite file in WAL mode with `synchronous=FULL`, so a change is on
//! disk when `apply` returns. Writes go through a single connection (SQLite allows one writer
//! at a time anyway, and this makes every `Change` serializable without busy retries); reads use
//! a small pool of read-only connections that WAL lets run alongside.
//!
//! Group commit: the changes that arrive while a commit is under way are applied together in the
//! next transaction, each inside its own savepoint (so one change's failed condition undoes only
//! that change), and share one fsync. Every caller still learns its own outcome only after the
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

use super::{ApplyError, Change, Check, ListQuery, Record, Store, StoredEvent, StreamSessionRecord, Write};

/// Schema migrations, applied in order once each (recorded in `schema_migrations`).
const MIGRATIONS: &[(i64, &str)] = &[
    (1, include_str!("migrations/sqlite/0001_resources.sql")),
    (2, include_str!("migrations/sqlite/0002_stream_sessions.sql")),
    (3, include_str!("migrations/sqlite/0003_playback_access.sql")),
    (4, include_str!("migrations/sqlite/0004_events.sql")),
];

pub struct SqliteStore {
    reader: SqlitePool,
    commits: mpsc::Sender<Pending>,
    /// Closed (dropped) by `close`, which ends the commit loop; the loop's handle is awaited there.
    commit_loop: tokio::sync::Mutex<Option<tokio::task::JoinHandle<()>>>,
    /// Notified after each commit that appended outbox events.
    event_signal: Arc<tokio::sync::Notify>,
}

/// At most this many changes share one transaction.
const MAX_GROUP: usize = 256;

fn backend(error: sqlx::Error) -> IvsError {
    IvsError::internal(format!("store error: {error}"))
}

fn resource_type_name(t: ResourceType) -> &'static str {
    t.arn_segment()
}

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
        migrate(connection).await?;
        let reader = SqlitePoolOptions::new()
            .max_connections(4)
            .connect_with(options.read_only(true))
            .await
            .map_err(|e| format!("cannot open {}: {e}", path.display()))?;
        let (commits, queue) = mpsc::channel(4 * MAX_GROUP);
        let event_signal = Arc::new(tokio::sync::Notify::new());
        let commit_loop = tokio::spawn(commit_loop(writer, queue, event_signal.clone()));
        Ok(SqliteStore { reader, commits, commit_loop: tokio::sync::Mutex::new(Some(commit_loop)), event_signal })
    }

    /// Closes the readers and lets the commit loop finish what is queued, then close the writer.
    pub async fn close(&self) {
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

async fn migrate(connection: &mut SqliteConnection) -> Result<(), String> {
    let fail = |e: sqlx::Error| format!("schema migration failed: {e}");
    sqlx::query("CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY)")
        .execute(&mut *connection)
        .await
        .map_err(fail)?;
    for (version, sql) in MIGRATIONS {
        let mut tx = connection.begin().await.map_err(fail)?;
        let done: Option<i64> = sqlx::query_scalar("SELECT version FROM schema_migrations WHERE version = ?")
            .bind(version)
            .fetch_optional(&mut *tx)
            .await
            .map_err(fail)?;
        if done.is_none() {
            sqlx::raw_sql(AssertSqlSafe(*sql)).execute(&mut *tx).await.map_err(fail)?;
            sqlx::query("INSERT INTO schema_migrations (version) VALUES (?)")
                .bind(version)
                .execute(&mut *tx)
                .await
                .map_err(fail)?;
        }
        tx.commit().await.map_err(fail)?;
    }
    Ok(())
}

const RECORD_COLUMNS: &str = "seq, arn, resource_type, account, region, version, parent_arn, name, unique_key, body, \
     (SELECT group_concat(to_arn, ' ') FROM resource_references WHERE from_arn = resources.arn) AS refs";

fn record_from_row(row: &SqliteRow) -> Result<Record, IvsError> {
    let type_name: String = row.try_get("resource_type").map_err(backend)?;
    let resource_type = ResourceType::from_arn_segment(&type_name)
        .ok_or_else(|| IvsError::internal(format!("unknown stored resource type {type_name}")))?;
    let refs: Option<String> = row.try_get("refs").map_err(backend)?;
    Ok(Record {
        seq: row.try_get("seq").map_err(backend)?,
        arn: row.try_get("arn").map_err(backend)?,
        resource_type,
        account: row.try_get("account").map_err(backend)?,
        region: row.try_get("region").map_err(backend)?,
        version: row.try_get("version").map_err(backend)?,
        parent_arn: row.try_get("parent_arn").map_err(backend)?,
        name: row.try_get("name").map_err(backend)?,
        unique_key: row.try_get("unique_key").map_err(backend)?,
        references: refs.map(|r| r.split(' ').map(str::to_owned).collect()).unwrap_or_default(),
        body: row.try_get("body").map_err(backend)?,
    })
}

fn session_from_row(row: &SqliteRow) -> Result<StreamSessionRecord, IvsError> {
    Ok(StreamSessionRecord {
        seq: row.try_get("seq").map_err(backend)?,
        stream_id: row.try_get("stream_id").map_err(backend)?,
        channel_arn: row.try_get("channel_arn").map_err(backend)?,
        ended: row.try_get("ended").map_err(backend)?,
        has_error_event: row.try_get("has_error_event").map_err(backend)?,
        body: row.try_get("body").map_err(backend)?,
    })
}

/// Evaluates one condition inside the write transaction.
async fn holds(tx: &mut SqliteConnection, check: &Check) -> Result<bool, sqlx::Error> {
    let found: Option<i64> = match check {
        Check::Exists { arn } => {
            sqlx::query_scalar("SELECT 1 FROM resources WHERE arn = ?").bind(arn).fetch_optional(&mut *tx).await?
        }
        Check::Version { arn, version } => {
            let current: Option<i64> = sqlx::query_scalar("SELECT version FROM resources WHERE arn = ?")
                .bind(arn)
                .fetch_optional(&mut *tx)
                .await?;
            return Ok(current == Some(*version));
        }
        Check::Unreferenced { arn } => {
            let referenced: Option<i64> =
                sqlx::query_scalar("SELECT 1 FROM resource_references WHERE to_arn = ? LIMIT 1")
                    .bind(arn)
                    .fetch_optional(&mut *tx)
                    .await?;
            return Ok(referenced.is_none());
        }
        Check::NoChild { parent_arn, resource_type } => {
            let child: Option<i64> =
                sqlx::query_scalar("SELECT 1 FROM resources WHERE parent_arn = ? AND resource_type = ? LIMIT 1")
                    .bind(parent_arn)
                    .bind(resource_type_name(*resource_type))
                    .fetch_optional(&mut *tx)
                    .await?;
            return Ok(child.is_none());
        }
        Check::CountBelow { resource_type, account, region, limit } => {
            let count: i64 = sqlx::query_scalar(
                "SELECT COUNT(*) FROM resources WHERE account = ? AND region = ? AND resource_type = ?",
            )
            .bind(account)
            .bind(region)
            .bind(resource_type_name(*resource_type))
            .fetch_one(&mut *tx)
            .await?;
            return Ok(count < i64::from(*limit));
        }
        Check::UniqueKeyFree { unique_key } => {
            let taken: Option<i64> = sqlx::query_scalar("SELECT 1 FROM resources WHERE unique_key = ?")
                .bind(unique_key)
                .fetch_optional(&mut *tx)
                .await?;
            return Ok(taken.is_none());
        }
        Check::SingleUseFree { uuid, now } => {
            let used: Option<i64> =
                sqlx::query_scalar("SELECT 1 FROM single_use_tokens WHERE uuid = ? AND expires_at >= ?")
                    .bind(uuid)
                    .bind(now)
                    .fetch_optional(&mut *tx)
                    .await?;
            return Ok(used.is_none());
        }
        Check::NotLive { channel_arn } => {
            let open: Option<i64> =
                sqlx::query_scalar("SELECT 1 FROM stream_sessions WHERE channel_arn = ? AND ended = 0 LIMIT 1")
                    .bind(channel_arn)
                    .fetch_optional(&mut *tx)
                    .await?;
            return Ok(open.is_none());
        }
    };
    Ok(found.is_some())
}

async fn put_record(tx: &mut SqliteConnection, record: &Record) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO resources (arn, resource_type, account, region, version, parent_arn, name, unique_key, body) \
         VALUES (?, ?, ?, ?, 1, ?, ?, ?, ?) \
         ON CONFLICT (arn) DO UPDATE SET version = version + 1, parent_arn = excluded.parent_arn, \
         name = excluded.name, unique_key = excluded.unique_key, body = excluded.body",
    )
    .bind(&record.arn)
    .bind(resource_type_name(record.resource_type))
    .bind(&record.account)
    .bind(&record.region)
    .bind(&record.parent_arn)
    .bind(&record.name)
    .bind(&record.unique_key)
    .bind(&record.body)
    .execute(&mut *tx)
    .await?;
    sqlx::query("DELETE FROM resource_references WHERE from_arn = ?").bind(&record.arn).execute(&mut *tx).await?;
    for target in &record.references {
        sqlx::query("INSERT OR IGNORE INTO resource_references (from_arn, to_arn) VALUES (?, ?)")
            .bind(&record.arn)
            .bind(target)
            .execute(&mut *tx)
            .await?;
    }
    Ok(())
}

/// A resource as stored, inside the transaction; a missing one refuses the change.
async fn stored_record(tx: &mut SqliteConnection, arn: &str) -> Result<Record, ApplyError> {
    let sql = format!("SELECT {RECORD_COLUMNS} FROM resources WHERE arn = ?");
    let row = sqlx::query(AssertSqlSafe(sql)).bind(arn).fetch_optional(&mut *tx).await.map_err(store_error)?;
    let Some(row) = row else {
        return Err(ApplyError::Rejected(IvsError::not_found(format!("The resource {arn} was not found"))));
    };
    record_from_row(&row).map_err(|e| ApplyError::Backend(e.message))
}

async fn put_stream_session(tx: &mut SqliteConnection, session: &StreamSessionRecord) -> Result<(), ApplyError> {
    sqlx::query(
        "INSERT INTO stream_sessions (stream_id, channel_arn, ended, has_error_event, body) VALUES (?, ?, ?, ?, ?) \
         ON CONFLICT (stream_id) DO UPDATE SET ended = excluded.ended, \
         has_error_event = excluded.has_error_event, body = excluded.body",
    )
    .bind(&session.stream_id)
    .bind(&session.channel_arn)
    .bind(session.ended)
    .bind(session.has_error_event)
    .bind(&session.body)
    .execute(&mut *tx)
    .await
    .map_err(store_error)?;
    Ok(())
}

async fn perform(tx: &mut SqliteConnection, write: &Write) -> Result<(), ApplyError> {
    match write {
        Write::Put(record) => put_record(tx, record).await.map_err(store_error)?,
        Write::Modify { arn, edit } => {
            let updated = (edit.0)(stored_record(tx, arn).await?).map_err(ApplyError::Rejected)?;
            put_record(tx, &updated).await.map_err(store_error)?;
        }
        Write::OpenStreamSession { channel_arn, build } => {
            let session = (build.0)(stored_record(tx, channel_arn).await?).map_err(ApplyError::Rejected)?;
            put_stream_session(tx, &session).await?;
        }
        Write::Delete { arn } => {
            sqlx::query("DELETE FROM resource_references WHERE from_arn = ?")
                .bind(arn)
                .execute(&mut *tx)
                .await
                .map_err(store_error)?;
            sqlx::query("DELETE FROM resources WHERE arn = ?")
                .bind(arn)
                .execute(&mut *tx)
                .await
                .map_err(store_error)?;
        }
        Write::DeleteChildren { parent_arn } => {
            sqlx::query(
                "DELETE FROM resource_references WHERE from_arn IN (SELECT arn FROM resources WHERE parent_arn = ?)",
            )
            .bind(parent_arn)
            .execute(&mut *tx)
            .await
            .map_err(store_error)?;
            sqlx::query("DELETE FROM resources WHERE parent_arn = ?")
                .bind(parent_arn)
                .execute(&mut *tx)
                .await
                .map_err(store_error)?;
        }
        Write::PutStreamSession(session) => put_stream_session(tx, session).await?,
        Write::RevokeViewer { revocation, now } => {
            // An expired revocation is replaced; a live one is raised, never lowered.
            sqlx::query(
                "INSERT INTO viewer_revocations (channel_arn, viewer_id, max_version, expires_at) VALUES (?, ?, ?, ?) \
                 ON CONFLICT (channel_arn, viewer_id) DO UPDATE SET \
                 max_version = CASE WHEN expires_at < ?5 THEN excluded.max_version \
                                    ELSE MAX(max_version, excluded.max_version) END, \
                 expires_at = MAX(expires_at, excluded.expires_at)",
            )
            .bind(&revocation.channel_arn)
            .bind(&revocation.viewer_id)
            .bind(revocation.max_version)
            .bind(revocation.expires_at)
            .bind(now)
            .execute(&mut *tx)
            .await
            .map_err(store_error)?;
            sqlx::query("DELETE FROM viewer_revocations WHERE expires_at < ?")
                .bind(now)
                .execute(&mut *tx)
                .await
                .map_err(store_error)?;
        }
        Write::UseSingleUse { uuid, expires_at, now } => {
            sqlx::query("DELETE FROM single_use_tokens WHERE expires_at < ?")
                .bind(now)
                .execute(&mut *tx)
                .await
                .map_err(store_error)?;
            sqlx::query("INSERT OR REPLACE INTO single_use_tokens (uuid, expires_at) VALUES (?, ?)")
                .bind(uuid)
                .bind(expires_at)
                .execute(&mut *tx)
                .await
                .map_err(store_error)?;
        }
        Write::InitSetting { key, value } => {
            sqlx::query("INSERT OR IGNORE INTO settings (key, value) VALUES (?, ?)")
                .bind(key)
                .bind(value)
                .execute(&mut *tx)
                .await
                .map_err(store_error)?;
        }
        Write::AppendEvents(events) => {
            for event in events {
                sqlx::query("INSERT INTO events (account, region, body, created_at) VALUES (?, ?, ?, ?)")
                    .bind(&event.account)
                    .bind(&event.region)
                    .bind(&event.body)
                    .bind(event.created_at)
                    .execute(&mut *tx)
                    .await
                    .map_err(store_error)?;
            }
        }
        Write::PruneEvents { up_to_seq, created_before } => {
            sqlx::query("DELETE FROM events WHERE seq <= ? AND created_at < ?")
                .bind(up_to_seq)
                .bind(created_before)
                .execute(&mut *tx)
                .await
                .map_err(store_error)?;
        }
        Write::SetEventCursor { target, seq } => {
            sqlx::query(
                "INSERT INTO event_cursors (target, seq) VALUES (?, ?) \
                 ON CONFLICT (target) DO UPDATE SET seq = MAX(seq, excluded.seq)",
            )
            .bind(target)
            .bind(seq)
            .execute(&mut *tx)
            .await
            .map_err(store_error)?;
        }
    }
    Ok(())
}

/// A change waiting for the commit loop, and where to send its outcome.
struct Pending {
    change: Change,
    reply: oneshot::Sender<Result<(), ApplyError>>,
    /// Sent by `close`: the loop stops once this is answered.
    last: bool,
}

/// Applies queued changes, as many as are waiting (up to [`MAX_GROUP`]) per transaction.
async fn commit_loop(mut writer: Writer, mut queue: mpsc::Receiver<Pending>, event_signal: Arc<tokio::sync::Notify>) {
    while let Some(first) = queue.recv().await {
        let mut group = vec![first];
        while group.len() < MAX_GROUP && !group.last().is_some_and(|p| p.last) {
            match queue.try_recv() {
                Ok(pending) => group.push(pending),
                Err(_) => break,
            }
        }
        let outcomes = commit_group(&mut writer, group.iter().map(|pending| &pending.change)).await;
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
        for change in changes {
            match apply_in_savepoint(connection, change).await {
                Err(ApplyError::Backend(message)) => return Err(ApplyError::Backend(message)),
                outcome => outcomes.push(outcome),
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

/// A statement's failure: a constraint the change breaks refuses that change alone (SQLite
/// undoes just the statement); anything else is a storage failure, which fails the group.
fn store_error(error: sqlx::Error) -> ApplyError {
    use sqlx::error::ErrorKind;
    if let sqlx::Error::Database(database) = &error
        && matches!(
            database.kind(),
            ErrorKind::UniqueViolation
                | ErrorKind::ForeignKeyViolation
                | ErrorKind::NotNullViolation
                | ErrorKind::CheckViolation
        )
    {
        return ApplyError::Rejected(IvsError::internal(format!("the store refused the change: {error}")));
    }
    ApplyError::Backend(format!("store error: {error}"))
}

async fn apply_in_savepoint(tx: &mut SqliteConnection, change: &Change) -> Result<(), ApplyError> {
    if change.conditions.is_empty() && change.writes.is_empty() {
        return Ok(());
    }
    sqlx::query("SAVEPOINT change").execute(&mut *tx).await.map_err(store_error)?;
    let outcome = apply_change(tx, change).await;
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

async fn apply_change(tx: &mut SqliteConnection, change: &Change) -> Result<(), ApplyError> {
    for condition in &change.conditions {
        if !holds(tx, &condition.check).await.map_err(store_error)? {
            return Err(match condition.check {
                Check::Version { .. } => ApplyError::Stale,
                _ => ApplyError::Rejected(condition.error.clone()),
            });
        }
    }
    for write in &change.writes {
        perform(tx, write).await?;
    }
    Ok(())
}

#[async_trait]
impl Store for SqliteStore {
    async fn get(&self, arn: &str) -> Result<Option<Record>, IvsError> {
        let sql = format!("SELECT {RECORD_COLUMNS} FROM resources WHERE arn = ?");
        let row = sqlx::query(AssertSqlSafe(sql)).bind(arn).fetch_optional(&self.reader).await.map_err(backend)?;
        row.as_ref().map(record_from_row).transpose()
    }

    async fn get_by_unique_key(&self, unique_key: &str) -> Result<Option<Record>, IvsError> {
        let sql = format!("SELECT {RECORD_COLUMNS} FROM resources WHERE unique_key = ?");
        let row =
            sqlx::query(AssertSqlSafe(sql)).bind(unique_key).fetch_optional(&self.reader).await.map_err(backend)?;
        row.as_ref().map(record_from_row).transpose()
    }

    async fn stream_session(
        &self,
        channel_arn: &str,
        stream_id: Option<&str>,
    ) -> Result<Option<StreamSessionRecord>, IvsError> {
        let row = match stream_id {
            Some(id) => {
                sqlx::query(
                    "SELECT seq, stream_id, channel_arn, ended, has_error_event, body FROM stream_sessions \
                     WHERE channel_arn = ? AND stream_id = ?",
                )
                .bind(channel_arn)
                .bind(id)
                .fetch_optional(&self.reader)
                .await
            }
            None => {
                sqlx::query(
                    "SELECT seq, stream_id, channel_arn, ended, has_error_event, body FROM stream_sessions \
                     WHERE channel_arn = ? ORDER BY seq DESC LIMIT 1",
                )
                .bind(channel_arn)
                .fetch_optional(&self.reader)
                .await
            }
        }
        .map_err(backend)?;
        row.as_ref().map(session_from_row).transpose()
    }

    async fn list_stream_sessions(
        &self,
        channel_arn: &str,
        before_seq: i64,
        limit: u32,
    ) -> Result<Vec<StreamSessionRecord>, IvsError> {
        let rows = sqlx::query(
            "SELECT seq, stream_id, channel_arn, ended, has_error_event, body FROM stream_sessions \
             WHERE channel_arn = ? AND seq < ? ORDER BY seq DESC LIMIT ?",
        )
        .bind(channel_arn)
        .bind(before_seq)
        .bind(i64::from(limit))
        .fetch_all(&self.reader)
        .await
        .map_err(backend)?;
        rows.iter().map(session_from_row).collect()
    }

    async fn open_stream_sessions(&self) -> Result<Vec<StreamSessionRecord>, IvsError> {
        let rows = sqlx::query(
            "SELECT seq, stream_id, channel_arn, ended, has_error_event, body FROM stream_sessions WHERE ended = 0",
        )
        .fetch_all(&self.reader)
        .await
        .map_err(backend)?;
        rows.iter().map(session_from_row).collect()
    }

    async fn list(&self, query: &ListQuery) -> Result<Vec<Record>, IvsError> {
        let mut sql = format!("SELECT {RECORD_COLUMNS} FROM resources WHERE account = ? AND region = ? AND seq > ?");
        if query.resource_type.is_some() {
            sql.push_str(" AND resource_type = ?");
        }
        if query.parent_arn.is_some() {
            sql.push_str(" AND parent_arn = ?");
        }
        if query.name.is_some() {
            sql.push_str(" AND name = ?");
        }
        if query.referencing.is_some() {
            sql.push_str(" AND arn IN (SELECT from_arn FROM resource_references WHERE to_arn = ?)");
        }
        sql.push_str(" ORDER BY seq LIMIT ?");
        let mut statement =
            sqlx::query(AssertSqlSafe(sql)).bind(&query.account).bind(&query.region).bind(query.after_seq);
        if let Some(t) = query.resource_type {
            statement = statement.bind(resource_type_name(t));
        }
        if let Some(parent) = &query.parent_arn {
            statement = statement.bind(parent);
        }
        if let Some(name) = &query.name {
            statement = statement.bind(name);
        }
        if let Some(target) = &query.referencing {
            statement = statement.bind(target);
        }
        let rows = statement.bind(i64::from(query.limit)).fetch_all(&self.reader).await.map_err(backend)?;
        rows.iter().map(record_from_row).collect()
    }

    async fn apply(&self, change: Change) -> Result<(), ApplyError> {
        let (reply, outcome) = oneshot::channel();
        let stopped = || ApplyError::Backend("the store is shut down".into());
        self.commits.send(Pending { change, reply, last: false }).await.map_err(|_| stopped())?;
        outcome.await.map_err(|_| stopped())?
    }

    async fn viewer_revocation(&self, channel_arn: &str, viewer_id: &str, now: i64) -> Result<Option<i64>, IvsError> {
        sqlx::query_scalar(
            "SELECT max_version FROM viewer_revocations WHERE channel_arn = ? AND viewer_id = ? AND expires_at >= ?",
        )
        .bind(channel_arn)
        .bind(viewer_id)
        .bind(now)
        .fetch_optional(&self.reader)
        .await
        .map_err(backend)
    }

    async fn list_type(&self, resource_type: ResourceType) -> Result<Vec<Record>, IvsError> {
        let sql = format!("SELECT {RECORD_COLUMNS} FROM resources WHERE resource_type = ? ORDER BY seq");
        let rows = sqlx::query(AssertSqlSafe(sql))
            .bind(resource_type_name(resource_type))
            .fetch_all(&self.reader)
            .await
            .map_err(backend)?;
        rows.iter().map(record_from_row).collect()
    }

    async fn setting(&self, key: &str) -> Result<Option<String>, IvsError> {
        sqlx::query_scalar("SELECT value FROM settings WHERE key = ?")
            .bind(key)
            .fetch_optional(&self.reader)
            .await
            .map_err(backend)
    }

    async fn init_setting(&self, key: &str, value: &str) -> Result<String, IvsError> {
        let write = Write::InitSetting { key: key.to_owned(), value: value.to_owned() };
        self.apply(Change::new().write(write)).await?;
        self.setting(key).await?.ok_or_else(|| IvsError::internal(format!("setting {key} was not stored")))
    }

    async fn events_after(&self, after_seq: i64, limit: u32) -> Result<Vec<StoredEvent>, IvsError> {
        let rows = sqlx::query("SELECT seq, account, region, body FROM events WHERE seq > ? ORDER BY seq LIMIT ?")
            .bind(after_seq)
            .bind(i64::from(limit))
            .fetch_all(&self.reader)
            .await
            .map_err(backend)?;
        rows.iter()
            .map(|row| {
                Ok(StoredEvent {
                    seq: row.try_get("seq").map_err(backend)?,
                    account: row.try_get("account").map_err(backend)?,
                    region: row.try_get("region").map_err(backend)?,
                    body: row.try_get("body").map_err(backend)?,
                })
            })
            .collect()
    }

    async fn last_event_seq(&self) -> Result<i64, IvsError> {
        // (AUTOINCREMENT keeps the highest seq ever used, even once those rows are pruned.)
        let from_sequence: Option<i64> = sqlx::query_scalar("SELECT seq FROM sqlite_sequence WHERE name = 'events'")
            .fetch_optional(&self.reader)
            .await
            .map_err(backend)?;
        Ok(from_sequence.unwrap_or(0))
    }

    async fn event_cursor(&self, target: &str) -> Result<Option<i64>, IvsError> {
        sqlx::query_scalar("SELECT seq FROM event_cursors WHERE target = ?")
            .bind(target)
            .fetch_optional(&self.reader)
            .await
            .map_err(backend)
    }

    fn event_signal(&self) -> Arc<tokio::sync::Notify> {
        self.event_signal.clone()
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
        let (store, dir) = temp_store("atomic").await;
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
        let (store, dir) = temp_store("group").await;
        let store = std::sync::Arc::new(store);
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
        store.close().await;
        std::fs::remove_dir_all(dir).ok();
    }

    #[tokio::test]
    async fn a_broken_constraint_refuses_only_its_change() {
        let (store, dir) = temp_store("constraint").await;
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
        store.close().await;
        std::fs::remove_dir_all(dir).ok();
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_modifications_all_land() {
        let (store, dir) = temp_store("modify").await;
        let store = std::sync::Arc::new(store);
        store.apply(Change::new().write(Write::Put(record("arn:m")))).await.unwrap();
        let mut tasks = Vec::new();
        for i in 0..40 {
            let store = store.clone();
            tasks.push(tokio::spawn(async move {
                let edit = super::super::Edit::new(move |record: Record| {
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
        let missing = Write::Modify { arn: "arn:none".into(), edit: super::super::Edit::new(Ok) };
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
        let not_live =
            || Change::new().require(Check::NotLive { channel_arn: "arn:m".into() }, IvsError::conflict("live"));
        store.apply(Change::new().write(Write::PutStreamSession(session(false)))).await.unwrap();
        assert!(matches!(store.apply(not_live()).await, Err(ApplyError::Rejected(_))));
        store.apply(Change::new().write(Write::PutStreamSession(session(true)))).await.unwrap();
        store.apply(not_live()).await.unwrap();
        store.close().await;
        std::fs::remove_dir_all(dir).ok();
    }
}

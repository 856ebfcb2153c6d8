//! The shared store: PostgreSQL (`--database-url postgres://…`), for several openivs nodes that
//! must agree on every resource. It answers exactly as the embedded SQLite store does (the API
//! test suite runs against both).
//!
//! Each `Change` is one transaction that first takes a transaction-scoped advisory lock
//! ([`WRITE_LOCK`]) shared by every node: changes are applied one at a time across the cluster,
//! as the SQLite store's single writer applies them in one process. That keeps every condition
//! (quotas, unique keys, references, "not live") exact under concurrency without serialization
//! retries, and makes the outbox's seqs follow commit order, which event delivery relies on
//! (it moves a cursor past seqs). Reads take no lock and see committed data.
//!
//! Migrations run at start-up under a session advisory lock, so nodes starting together apply
//! each once. A node's event deliverer hears other nodes' events through `LISTEN/NOTIFY`.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use openivs_model::{IvsError, ResourceType};
use sqlx::migrate::MigrateDatabase;
use sqlx::postgres::{PgConnection, PgPool, PgPoolOptions, PgRow};
use sqlx::{AssertSqlSafe, Connection, Postgres, Row};

use super::sql::execute;
use super::{
    ApplyError, Change, Check, ListQuery, Record, RecordingJournal, Store, StoredEvent, StreamLease,
    StreamSessionRecord, ViewerRevocation, Write,
};

/// Schema migrations, applied in order once each (recorded in `schema_migrations`).
const MIGRATIONS: &[(i64, &str)] = &[
    (1, include_str!("migrations/postgres/0001_schema.sql")),
    (2, include_str!("migrations/postgres/0002_live_streams.sql")),
    (3, include_str!("migrations/postgres/0003_recording_journals.sql")),
    (4, include_str!("migrations/postgres/0004_call_counts.sql")),
];

/// The advisory lock every change takes (`pg_advisory_xact_lock`): "openivs" in ASCII.
const WRITE_LOCK: i64 = 0x006f_7065_6e69_7673;
/// The advisory lock migrations take, so nodes starting together migrate once.
const MIGRATION_LOCK: i64 = WRITE_LOCK + 1;
/// The class of the advisory locks of roles ([`PostgresStore::lead`]): "oi".
const ROLE_LOCKS: i32 = 0x6f69;
/// The class of the advisory locks of call counts ([`PostgresStore::count_shared_call`]): "oc".
const CALL_COUNT_LOCKS: i32 = 0x6f63;
/// The notification channel of outbox appends.
const EVENTS_CHANNEL: &str = "openivs_events";

/// A role held by a session advisory lock on `connection`.
struct PgLeadership {
    connection: PgConnection,
}

#[async_trait]
impl super::Leadership for PgLeadership {
    async fn still_leading(&mut self) -> bool {
        sqlx::query("SELECT 1").execute(&mut self.connection).await.is_ok()
    }
}

pub struct PostgresStore {
    pool: PgPool,
    event_signal: Arc<tokio::sync::Notify>,
    listener: tokio::task::JoinHandle<()>,
}

/// `postgres://user:secret@host/db` → `postgres://user@host/db`, for messages and logs.
pub fn redacted(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut parsed) => {
            let _ = parsed.set_password(None);
            parsed.to_string()
        }
        Err(_) => "<a database URL that does not parse>".to_owned(),
    }
}

impl PostgresStore {
    /// Connects (creating the database if it does not exist) and brings the schema up to date.
    pub async fn open(url: &str) -> Result<PostgresStore, String> {
        let shown = redacted(url);
        if !Postgres::database_exists(url).await.map_err(|e| format!("cannot reach {shown}: {e}"))? {
            // (Two nodes may race to create it: the loser finds it made.)
            if let Err(error) = Postgres::create_database(url).await
                && !Postgres::database_exists(url).await.unwrap_or(false)
            {
                return Err(format!("cannot create the database {shown}: {error}"));
            }
        }
        let pool = PgPoolOptions::new()
            .max_connections(16)
            .acquire_timeout(Duration::from_secs(10))
            .connect(url)
            .await
            .map_err(|e| format!("cannot connect to {shown}: {e}"))?;
        migrate(&pool).await?;
        let event_signal = Arc::new(tokio::sync::Notify::new());
        let listener = tokio::spawn(listen_for_events(pool.clone(), event_signal.clone()));
        Ok(PostgresStore { pool, event_signal, listener })
    }
}

/// Wakes this node's event readers when any node appends events.
async fn listen_for_events(pool: PgPool, signal: Arc<tokio::sync::Notify>) {
    loop {
        let mut listener = match sqlx::postgres::PgListener::connect_with(&pool).await {
            Ok(listener) => listener,
            Err(error) => {
                tracing::warn!("store: cannot listen for other nodes' events: {error}");
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        if let Err(error) = listener.listen(EVENTS_CHANNEL).await {
            tracing::warn!("store: cannot listen for other nodes' events: {error}");
            tokio::time::sleep(Duration::from_secs(1)).await;
            continue;
        }
        loop {
            match listener.recv().await {
                Ok(_) => signal.notify_waiters(),
                Err(error) => {
                    tracing::warn!("store: the events listener lost its connection: {error}");
                    // (Something may have been appended meanwhile.)
                    signal.notify_waiters();
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    break;
                }
            }
        }
    }
}

async fn migrate(pool: &PgPool) -> Result<(), String> {
    let fail = |e: sqlx::Error| format!("schema migration failed: {e}");
    let mut connection = pool.acquire().await.map_err(fail)?;
    sqlx::query("SELECT pg_advisory_lock($1)").bind(MIGRATION_LOCK).execute(&mut *connection).await.map_err(fail)?;
    let outcome = apply_migrations(&mut connection, MIGRATIONS).await;
    let _ = sqlx::query("SELECT pg_advisory_unlock($1)").bind(MIGRATION_LOCK).execute(&mut *connection).await;
    outcome
}

// (The database's clock in Unix milliseconds, so the nodes' own clocks do not matter to leases.)
super::sql::relational_store!(
    PostgresStore,
    pool,
    PgConnection,
    PgRow,
    PgPool,
    "CAST(EXTRACT(EPOCH FROM clock_timestamp()) * 1000 AS BIGINT)"
);

impl PostgresStore {
    async fn commit(&self, change: Change) -> Result<(), ApplyError> {
        if change.conditions.is_empty() && change.writes.is_empty() {
            return Ok(());
        }
        let appends_events = change.writes.iter().any(|w| matches!(w, Write::AppendEvents(_)));
        let mut tx = self.pool.begin().await.map_err(store_error)?;
        let outcome = async {
            // One change at a time across every node (see the module's comment).
            execute!(tx, "SELECT pg_advisory_xact_lock($1)", WRITE_LOCK)?;
            check_and_write(&mut tx, &change).await?;
            if appends_events {
                // Heard by the other nodes' listeners when (and only if) the change commits.
                execute!(tx, AssertSqlSafe(format!("NOTIFY {EVENTS_CHANNEL}")))?;
            }
            Ok(())
        }
        .await;
        match outcome {
            Ok(()) => {
                tx.commit().await.map_err(store_error)?;
                if appends_events {
                    self.event_signal.notify_waiters();
                }
                Ok(())
            }
            Err(error) => {
                let _ = tx.rollback().await;
                if let ApplyError::Backend(message) = &error {
                    tracing::error!("store: a write failed, nothing of it was committed: {message}");
                }
                Err(error)
            }
        }
    }

    async fn read_by_arn(&self, arn: &str) -> Result<Option<Record>, IvsError> {
        read_record(&self.pool, "arn", arn).await
    }

    async fn newest_event_seq(&self) -> Result<i64, IvsError> {
        // (The identity's sequence keeps the highest seq ever handed out, even once pruned.)
        let last: Option<i64> = sqlx::query_scalar("SELECT last_value FROM events_seq_seq WHERE is_called")
            .fetch_optional(&self.pool)
            .await
            .map_err(backend)?;
        Ok(last.unwrap_or(0))
    }

    /// A session advisory lock named after `role`, on a connection of its own that holds it
    /// (PostgreSQL lets it go when the connection closes: when the guard is dropped, or the
    /// process dies).
    async fn lead(&self, role: &str) -> Result<Option<Box<dyn super::Leadership>>, IvsError> {
        use sha2::Digest;
        let digest = sha2::Sha256::digest(role.as_bytes());
        let key = i32::from_be_bytes(digest[..4].try_into().expect("4 bytes"));
        let mut connection = self.pool.acquire().await.map_err(backend)?.detach();
        // (The two-key form: a space apart from the single-key locks of changes and migrations.)
        let held: bool = sqlx::query_scalar("SELECT pg_try_advisory_lock($1, $2)")
            .bind(ROLE_LOCKS)
            .bind(key)
            .fetch_one(&mut connection)
            .await
            .map_err(backend)?;
        if !held {
            let _ = connection.close().await;
            return Ok(None);
        }
        Ok(Some(Box::new(PgLeadership { connection })))
    }

    /// Counts the call in tenths of a second by the database's clock, unless the ten tenths up to
    /// now hold `limit` calls: a sliding second, shared by every node. The calls of one key take
    /// turns (a transaction's advisory lock), so none slips past the limit at a tenth's edge.
    async fn count_shared_call(&self, key: &str, limit: u32) -> Result<Option<bool>, IvsError> {
        let mut tx = self.pool.begin().await.map_err(backend)?;
        sqlx::query("SELECT pg_advisory_xact_lock($1, hashtext($2))")
            .bind(CALL_COUNT_LOCKS)
            .bind(key)
            .execute(&mut *tx)
            .await
            .map_err(backend)?;
        let counted = sqlx::query(
            "WITH now AS (SELECT CAST(FLOOR(EXTRACT(EPOCH FROM clock_timestamp()) * 10) AS BIGINT) AS tenth) \
             INSERT INTO call_counts (key, tenth, calls) SELECT $1, now.tenth, 1 FROM now \
             WHERE (SELECT COALESCE(SUM(calls), 0) FROM call_counts WHERE key = $1 AND tenth > now.tenth - 10) < $2 \
             ON CONFLICT (key, tenth) DO UPDATE SET calls = call_counts.calls + 1 RETURNING calls",
        )
        .bind(key)
        .bind(i64::from(limit))
        .fetch_optional(&mut *tx)
        .await
        .map_err(backend)?
        .is_some();
        // Now and then (one call in 256), every key's counts of the past go.
        if rand::random::<u8>() == 0 {
            sqlx::query(
                "DELETE FROM call_counts \
                 WHERE tenth < CAST(FLOOR(EXTRACT(EPOCH FROM clock_timestamp()) * 10) AS BIGINT) - 100",
            )
            .execute(&mut *tx)
            .await
            .map_err(backend)?;
        }
        tx.commit().await.map_err(backend)?;
        Ok(Some(counted))
    }

    async fn shut_down(&self) {
        self.listener.abort();
        self.pool.close().await;
    }
}

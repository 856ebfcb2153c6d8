//! The SQL both relational stores run, written once: how records and sessions are read from
//! rows, how each [`Check`](super::Check) is evaluated and each [`Write`](super::Write) performed
//! inside a transaction, and the reads outside one. The statements are portable between SQLite
//! (3.35 or later: upserts, `string_agg`; the bundled one is newer) and PostgreSQL: `$n`
//! placeholders (which sqlx's SQLite driver binds by number), `ON CONFLICT`, `CASE` rather than
//! `MAX(a, b)`/`GREATEST`. [`relational_store!`] expands it for a backend's connection, row and
//! pool types; what differs (transactions, locking, the outbox's last seq, the clock) stays in
//! `sqlite.rs` and `postgres.rs`.

/// Runs a statement with binds, mapping its failure to an [`ApplyError`](super::ApplyError).
macro_rules! execute {
    ($tx:expr, $sql:expr $(, $bind:expr)* $(,)?) => {
        sqlx::query($sql)$(.bind($bind))*.execute(&mut *$tx).await.map_err(store_error)
    };
}
pub(crate) use execute;

macro_rules! relational_store {
    // The backend `$Store` reads through its pool field `$pool` and supplies, as inherent
    // methods, what differs: `commit(change)`, `read_by_arn(arn)`, `newest_event_seq()`,
    // `lead(role)`, `count_shared_call(key, limit)` and `shut_down()`; it has an `event_signal`
    // field.
    // `$now_ms` is the SQL of the database's clock in Unix milliseconds (stream leases).
    ($Store:ty, $pool:ident, $Connection:ty, $Row:ty, $Pool:ty, $now_ms:literal) => {
        #[async_trait]
        impl Store for $Store {
            async fn get(&self, arn: &str) -> Result<Option<Record>, IvsError> {
                self.read_by_arn(arn).await
            }

            async fn get_by_unique_key(&self, unique_key: &str) -> Result<Option<Record>, IvsError> {
                read_record(&self.$pool, "unique_key", unique_key).await
            }

            async fn stream_session(
                &self,
                channel_arn: &str,
                stream_id: Option<&str>,
            ) -> Result<Option<StreamSessionRecord>, IvsError> {
                read_stream_session(&self.$pool, channel_arn, stream_id).await
            }

            async fn list_stream_sessions(
                &self,
                channel_arn: &str,
                before_seq: i64,
                limit: u32,
            ) -> Result<Vec<StreamSessionRecord>, IvsError> {
                read_stream_sessions(&self.$pool, channel_arn, before_seq, limit).await
            }

            async fn open_stream_sessions(&self) -> Result<Vec<StreamSessionRecord>, IvsError> {
                read_open_stream_sessions(&self.$pool).await
            }

            async fn list(&self, query: &ListQuery) -> Result<Vec<Record>, IvsError> {
                read_records(&self.$pool, query).await
            }

            async fn apply(&self, change: Change) -> Result<(), ApplyError> {
                self.commit(change).await
            }

            async fn viewer_revocation(
                &self,
                channel_arn: &str,
                viewer_id: &str,
                now: i64,
            ) -> Result<Option<i64>, IvsError> {
                read_viewer_revocation(&self.$pool, channel_arn, viewer_id, now).await
            }

            async fn viewer_revocations(&self, now: i64) -> Result<Vec<ViewerRevocation>, IvsError> {
                let rows = sqlx::query(
                    "SELECT channel_arn, viewer_id, max_version, expires_at FROM viewer_revocations \
                     WHERE expires_at >= $1",
                )
                .bind(now)
                .fetch_all(&self.$pool)
                .await
                .map_err(backend)?;
                rows.iter()
                    .map(|row| {
                        Ok(ViewerRevocation {
                            channel_arn: row.try_get("channel_arn").map_err(backend)?,
                            viewer_id: row.try_get("viewer_id").map_err(backend)?,
                            max_version: row.try_get("max_version").map_err(backend)?,
                            expires_at: row.try_get("expires_at").map_err(backend)?,
                        })
                    })
                    .collect()
            }

            async fn list_type(&self, resource_type: ResourceType) -> Result<Vec<Record>, IvsError> {
                read_records_of_type(&self.$pool, resource_type).await
            }

            async fn setting(&self, key: &str) -> Result<Option<String>, IvsError> {
                read_setting(&self.$pool, key).await
            }

            async fn init_setting(&self, key: &str, value: &str) -> Result<String, IvsError> {
                let write = Write::InitSetting { key: key.to_owned(), value: value.to_owned() };
                self.apply(Change::new().write(write)).await?;
                self.setting(key).await?.ok_or_else(|| IvsError::internal(format!("setting {key} was not stored")))
            }

            async fn events_after(&self, after_seq: i64, limit: u32) -> Result<Vec<StoredEvent>, IvsError> {
                read_events_after(&self.$pool, after_seq, limit).await
            }

            async fn last_event_seq(&self) -> Result<i64, IvsError> {
                self.newest_event_seq().await
            }

            async fn event_cursor(&self, target: &str) -> Result<Option<i64>, IvsError> {
                read_event_cursor(&self.$pool, target).await
            }

            async fn stream_holder(&self, channel_arn: &str) -> Result<Option<StreamLease>, IvsError> {
                let row = sqlx::query(concat!(
                    "SELECT channel_arn, node_id, origin_url, stream_id, epoch FROM live_streams \
                     WHERE channel_arn = $1 AND lease_until >= ",
                    $now_ms
                ))
                .bind(channel_arn)
                .fetch_optional(&self.$pool)
                .await
                .map_err(backend)?;
                row.as_ref().map(lease_from_row).transpose()
            }

            async fn last_stream_holder(&self, channel_arn: &str) -> Result<Option<StreamLease>, IvsError> {
                let row = sqlx::query(
                    "SELECT channel_arn, node_id, origin_url, stream_id, epoch FROM live_streams WHERE channel_arn = $1",
                )
                .bind(channel_arn)
                .fetch_optional(&self.$pool)
                .await
                .map_err(backend)?;
                row.as_ref().map(lease_from_row).transpose()
            }

            async fn stream_holders(&self) -> Result<Vec<StreamLease>, IvsError> {
                let rows = sqlx::query(concat!(
                    "SELECT channel_arn, node_id, origin_url, stream_id, epoch FROM live_streams WHERE lease_until >= ",
                    $now_ms
                ))
                .fetch_all(&self.$pool)
                .await
                .map_err(backend)?;
                rows.iter().map(lease_from_row).collect()
            }

            async fn recording_journals(&self, channel_arn: Option<&str>) -> Result<Vec<RecordingJournal>, IvsError> {
                let rows = sqlx::query(
                    "SELECT recording_id, node_id, channel_arn, body FROM recording_journals \
                     WHERE $1 IS NULL OR channel_arn = $1 ORDER BY recording_id",
                )
                .bind(channel_arn)
                .fetch_all(&self.$pool)
                .await
                .map_err(backend)?;
                rows.iter()
                    .map(|row| {
                        Ok(RecordingJournal {
                            recording_id: row.try_get("recording_id").map_err(backend)?,
                            node_id: row.try_get("node_id").map_err(backend)?,
                            channel_arn: row.try_get("channel_arn").map_err(backend)?,
                            body: row.try_get("body").map_err(backend)?,
                        })
                    })
                    .collect()
            }

            fn event_signal(&self) -> Arc<tokio::sync::Notify> {
                self.event_signal.clone()
            }

            async fn try_lead(&self, role: &str) -> Result<Option<Box<dyn super::Leadership>>, IvsError> {
                self.lead(role).await
            }

            async fn admit_shared_call(&self, key: &str, limit: u32) -> Result<Option<bool>, IvsError> {
                self.count_shared_call(key, limit).await
            }

            async fn close(&self) {
                self.shut_down().await
            }
        }

        /// Applies the migrations not yet recorded in `schema_migrations`, each in a transaction
        /// of its own, in order.
        async fn apply_migrations(connection: &mut $Connection, migrations: &[(i64, &str)]) -> Result<(), String> {
            let fail = |e: sqlx::Error| format!("schema migration failed: {e}");
            sqlx::query("CREATE TABLE IF NOT EXISTS schema_migrations (version BIGINT PRIMARY KEY)")
                .execute(&mut *connection)
                .await
                .map_err(fail)?;
            for (version, sql) in migrations {
                let mut tx = connection.begin().await.map_err(fail)?;
                let done: Option<i64> =
                    sqlx::query_scalar("SELECT version FROM schema_migrations WHERE version = $1")
                        .bind(version)
                        .fetch_optional(&mut *tx)
                        .await
                        .map_err(fail)?;
                if done.is_none() {
                    sqlx::raw_sql(AssertSqlSafe(*sql)).execute(&mut *tx).await.map_err(fail)?;
                    sqlx::query("INSERT INTO schema_migrations (version) VALUES ($1)")
                        .bind(version)
                        .execute(&mut *tx)
                        .await
                        .map_err(fail)?;
                }
                tx.commit().await.map_err(fail)?;
            }
            Ok(())
        }

        fn backend(error: sqlx::Error) -> IvsError {
            IvsError::internal(format!("store error: {error}"))
        }

        fn resource_type_name(t: ResourceType) -> &'static str {
            t.arn_segment()
        }

        const RECORD_COLUMNS: &str = "seq, arn, resource_type, account, region, version, parent_arn, name, unique_key, body, \
             (SELECT string_agg(to_arn, ' ') FROM resource_references WHERE from_arn = resources.arn) AS refs";
        const SESSION_COLUMNS: &str = "seq, stream_id, channel_arn, ended, has_error_event, body";

        fn record_from_row(row: &$Row) -> Result<Record, IvsError> {
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

        fn session_from_row(row: &$Row) -> Result<StreamSessionRecord, IvsError> {
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
        async fn holds(tx: &mut $Connection, check: &Check) -> Result<bool, sqlx::Error> {
            let found: Option<i32> = match check {
                Check::Exists { arn } => {
                    sqlx::query_scalar("SELECT 1 FROM resources WHERE arn = $1").bind(arn).fetch_optional(&mut *tx).await?
                }
                Check::Version { arn, version } => {
                    let current: Option<i64> = sqlx::query_scalar("SELECT version FROM resources WHERE arn = $1")
                        .bind(arn)
                        .fetch_optional(&mut *tx)
                        .await?;
                    return Ok(current == Some(*version));
                }
                Check::Unreferenced { arn } => {
                    let referenced: Option<i32> =
                        sqlx::query_scalar("SELECT 1 FROM resource_references WHERE to_arn = $1 LIMIT 1")
                            .bind(arn)
                            .fetch_optional(&mut *tx)
                            .await?;
                    return Ok(referenced.is_none());
                }
                Check::NoChild { parent_arn, resource_type } => {
                    let child: Option<i32> =
                        sqlx::query_scalar("SELECT 1 FROM resources WHERE parent_arn = $1 AND resource_type = $2 LIMIT 1")
                            .bind(parent_arn)
                            .bind(resource_type_name(*resource_type))
                            .fetch_optional(&mut *tx)
                            .await?;
                    return Ok(child.is_none());
                }
                Check::CountBelow { resource_type, account, region, limit } => {
                    let count: i64 = sqlx::query_scalar(
                        "SELECT COUNT(*) FROM resources WHERE account = $1 AND region = $2 AND resource_type = $3",
                    )
                    .bind(account)
                    .bind(region)
                    .bind(resource_type_name(*resource_type))
                    .fetch_one(&mut *tx)
                    .await?;
                    return Ok(count < i64::from(*limit));
                }
                Check::UniqueKeyFree { unique_key } => {
                    let taken: Option<i32> = sqlx::query_scalar("SELECT 1 FROM resources WHERE unique_key = $1")
                        .bind(unique_key)
                        .fetch_optional(&mut *tx)
                        .await?;
                    return Ok(taken.is_none());
                }
                Check::SingleUseFree { uuid, now } => {
                    let used: Option<i32> =
                        sqlx::query_scalar("SELECT 1 FROM single_use_tokens WHERE uuid = $1 AND expires_at >= $2")
                            .bind(uuid)
                            .bind(now)
                            .fetch_optional(&mut *tx)
                            .await?;
                    return Ok(used.is_none());
                }
                Check::LeaseFree { channel_arn } => {
                    let held: Option<i32> = sqlx::query_scalar(concat!(
                        "SELECT 1 FROM live_streams WHERE channel_arn = $1 AND lease_until >= ",
                        $now_ms
                    ))
                    .bind(channel_arn)
                    .fetch_optional(&mut *tx)
                    .await?;
                    return Ok(held.is_none());
                }
                Check::LeaseHeld { channel_arn, node_id, epoch } => {
                    sqlx::query_scalar(
                        "SELECT 1 FROM live_streams WHERE channel_arn = $1 AND node_id = $2 AND epoch = $3",
                    )
                    .bind(channel_arn)
                    .bind(node_id)
                    .bind(epoch)
                    .fetch_optional(&mut *tx)
                    .await?
                }
                Check::JournalUnchanged { recording_id, node_id, body } => {
                    sqlx::query_scalar(
                        "SELECT 1 FROM recording_journals WHERE recording_id = $1 AND node_id = $2 AND body = $3",
                    )
                    .bind(recording_id)
                    .bind(node_id)
                    .bind(body)
                    .fetch_optional(&mut *tx)
                    .await?
                }
                Check::SessionOpen { stream_id } => {
                    sqlx::query_scalar("SELECT 1 FROM stream_sessions WHERE stream_id = $1 AND NOT ended")
                        .bind(stream_id)
                        .fetch_optional(&mut *tx)
                        .await?
                }
                Check::NotLive { channel_arn } => {
                    let open: Option<i32> =
                        sqlx::query_scalar("SELECT 1 FROM stream_sessions WHERE channel_arn = $1 AND NOT ended LIMIT 1")
                            .bind(channel_arn)
                            .fetch_optional(&mut *tx)
                            .await?;
                    return Ok(open.is_none());
                }
            };
            Ok(found.is_some())
        }

        async fn put_record(tx: &mut $Connection, record: &Record) -> Result<(), sqlx::Error> {
            let version: i64 = sqlx::query_scalar(
                "INSERT INTO resources (arn, resource_type, account, region, version, parent_arn, name, unique_key, body) \
                 VALUES ($1, $2, $3, $4, 1, $5, $6, $7, $8) \
                 ON CONFLICT (arn) DO UPDATE SET version = resources.version + 1, parent_arn = excluded.parent_arn, \
                 name = excluded.name, unique_key = excluded.unique_key, body = excluded.body \
                 RETURNING version",
            )
            .bind(&record.arn)
            .bind(resource_type_name(record.resource_type))
            .bind(&record.account)
            .bind(&record.region)
            .bind(&record.parent_arn)
            .bind(&record.name)
            .bind(&record.unique_key)
            .bind(&record.body)
            .fetch_one(&mut *tx)
            .await?;
            // (A new record, version 1, has no references to replace: one statement fewer on
            // every create, each a round trip to the database.)
            if version > 1 {
                sqlx::query("DELETE FROM resource_references WHERE from_arn = $1")
                    .bind(&record.arn)
                    .execute(&mut *tx)
                    .await?;
            }
            for target in &record.references {
                sqlx::query("INSERT INTO resource_references (from_arn, to_arn) VALUES ($1, $2) ON CONFLICT DO NOTHING")
                    .bind(&record.arn)
                    .bind(target)
                    .execute(&mut *tx)
                    .await?;
            }
            Ok(())
        }

        /// A resource as stored, inside the transaction; a missing one refuses the change.
        async fn stored_record(tx: &mut $Connection, arn: &str) -> Result<Record, ApplyError> {
            let sql = format!("SELECT {RECORD_COLUMNS} FROM resources WHERE arn = $1");
            let row = sqlx::query(AssertSqlSafe(sql)).bind(arn).fetch_optional(&mut *tx).await.map_err(store_error)?;
            let Some(row) = row else {
                return Err(ApplyError::Rejected(IvsError::not_found(format!("The resource {arn} was not found"))));
            };
            record_from_row(&row).map_err(|e| ApplyError::Backend(e.message))
        }

        async fn put_stream_session(tx: &mut $Connection, session: &StreamSessionRecord) -> Result<(), ApplyError> {
            sqlx::query(
                "INSERT INTO stream_sessions (stream_id, channel_arn, ended, has_error_event, body) \
                 VALUES ($1, $2, $3, $4, $5) \
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

        async fn perform(tx: &mut $Connection, write: &Write) -> Result<(), ApplyError> {
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
                    execute!(tx, "DELETE FROM resource_references WHERE from_arn = $1", arn)?;
                    execute!(tx, "DELETE FROM resources WHERE arn = $1", arn)?;
                }
                Write::DeleteChildren { parent_arn } => {
                    execute!(
                        tx,
                        "DELETE FROM resource_references WHERE from_arn IN (SELECT arn FROM resources WHERE parent_arn = $1)",
                        parent_arn
                    )?;
                    execute!(tx, "DELETE FROM resources WHERE parent_arn = $1", parent_arn)?;
                }
                Write::PutStreamSession(session) => put_stream_session(tx, session).await?,
                Write::RevokeViewer { revocation, now } => {
                    // An expired revocation is replaced; a live one is raised, never lowered.
                    execute!(
                        tx,
                        "INSERT INTO viewer_revocations (channel_arn, viewer_id, max_version, expires_at) \
                         VALUES ($1, $2, $3, $4) \
                         ON CONFLICT (channel_arn, viewer_id) DO UPDATE SET \
                         max_version = CASE WHEN viewer_revocations.expires_at < $5 \
                                              OR excluded.max_version > viewer_revocations.max_version \
                                            THEN excluded.max_version ELSE viewer_revocations.max_version END, \
                         expires_at = CASE WHEN excluded.expires_at > viewer_revocations.expires_at \
                                           THEN excluded.expires_at ELSE viewer_revocations.expires_at END",
                        &revocation.channel_arn,
                        &revocation.viewer_id,
                        revocation.max_version,
                        revocation.expires_at,
                        now,
                    )?;
                    execute!(tx, "DELETE FROM viewer_revocations WHERE expires_at < $1", now)?;
                }
                Write::UseSingleUse { uuid, expires_at, now } => {
                    execute!(tx, "DELETE FROM single_use_tokens WHERE expires_at < $1", now)?;
                    execute!(
                        tx,
                        "INSERT INTO single_use_tokens (uuid, expires_at) VALUES ($1, $2) \
                         ON CONFLICT (uuid) DO UPDATE SET expires_at = excluded.expires_at",
                        uuid,
                        expires_at,
                    )?;
                }
                Write::InitSetting { key, value } => {
                    execute!(tx, "INSERT INTO settings (key, value) VALUES ($1, $2) ON CONFLICT DO NOTHING", key, value)?;
                }
                Write::AppendEvents(events) => {
                    for event in events {
                        execute!(
                            tx,
                            "INSERT INTO events (account, region, body, created_at) VALUES ($1, $2, $3, $4)",
                            &event.account,
                            &event.region,
                            &event.body,
                            event.created_at,
                        )?;
                    }
                }
                Write::PutRecordingJournal(journal) => {
                    execute!(
                        tx,
                        "INSERT INTO recording_journals (recording_id, node_id, channel_arn, body) \
                         VALUES ($1, $2, $3, $4) ON CONFLICT (recording_id) DO UPDATE SET \
                         node_id = excluded.node_id, channel_arn = excluded.channel_arn, body = excluded.body",
                        &journal.recording_id,
                        &journal.node_id,
                        &journal.channel_arn,
                        &journal.body,
                    )?;
                }
                Write::DeleteRecordingJournal { recording_id } => {
                    execute!(tx, "DELETE FROM recording_journals WHERE recording_id = $1", recording_id)?;
                }
                Write::PruneEvents { up_to_seq, created_before } => {
                    execute!(tx, "DELETE FROM events WHERE seq <= $1 AND created_at < $2", up_to_seq, created_before)?;
                }
                Write::TakeLease { lease, lease_ms } => {
                    // (A new holder: the epoch grows past every earlier holder's.)
                    execute!(
                        tx,
                        concat!(
                            "INSERT INTO live_streams (channel_arn, node_id, origin_url, stream_id, epoch, lease_until) \
                             VALUES ($1, $2, $3, $4, 1, ",
                            $now_ms,
                            " + $5) ON CONFLICT (channel_arn) DO UPDATE SET node_id = excluded.node_id, \
                             origin_url = excluded.origin_url, stream_id = excluded.stream_id, \
                             epoch = live_streams.epoch + 1, lease_until = excluded.lease_until"
                        ),
                        &lease.channel_arn,
                        &lease.node_id,
                        &lease.origin_url,
                        &lease.stream_id,
                        lease_ms,
                    )?;
                }
                Write::RenewLease { channel_arn, node_id, epoch, lease_ms } => {
                    // (Not a released lease: a renewal that was under way as the stream ended
                    // must not hold the channel for another lease's time.)
                    execute!(
                        tx,
                        concat!(
                            "UPDATE live_streams SET lease_until = ",
                            $now_ms,
                            " + $4 WHERE channel_arn = $1 AND node_id = $2 AND epoch = $3 AND lease_until > 0"
                        ),
                        channel_arn,
                        node_id,
                        epoch,
                        lease_ms,
                    )?;
                }
                Write::FenceLease { channel_arn } => {
                    execute!(
                        tx,
                        "UPDATE live_streams SET lease_until = 0, epoch = epoch + 1 WHERE channel_arn = $1",
                        channel_arn,
                    )?;
                }
                Write::ReleaseLease { channel_arn, node_id, epoch } => {
                    execute!(
                        tx,
                        // (Expired, not deleted: the next holder's epoch still grows past this one.)
                        "UPDATE live_streams SET lease_until = 0 WHERE channel_arn = $1 AND node_id = $2 AND epoch = $3",
                        channel_arn,
                        node_id,
                        epoch,
                    )?;
                }
                Write::SetEventCursor { target, seq } => {
                    execute!(
                        tx,
                        "INSERT INTO event_cursors (target, seq) VALUES ($1, $2) \
                         ON CONFLICT (target) DO UPDATE SET \
                         seq = CASE WHEN excluded.seq > event_cursors.seq THEN excluded.seq ELSE event_cursors.seq END",
                        target,
                        seq,
                    )?;
                }
            }
            Ok(())
        }

        /// A statement's failure: a constraint the change breaks refuses the change; anything else is a
        /// storage failure.
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

        async fn check_and_write(tx: &mut $Connection, change: &Change) -> Result<(), ApplyError> {
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

        // Reads outside any transaction, on the backend's pool.

        async fn read_record(pool: &$Pool, column: &str, value: &str) -> Result<Option<Record>, IvsError> {
            let sql = format!("SELECT {RECORD_COLUMNS} FROM resources WHERE {column} = $1");
            let row = sqlx::query(AssertSqlSafe(sql)).bind(value).fetch_optional(pool).await.map_err(backend)?;
            row.as_ref().map(record_from_row).transpose()
        }

        async fn read_stream_session(
            pool: &$Pool,
            channel_arn: &str,
            stream_id: Option<&str>,
        ) -> Result<Option<StreamSessionRecord>, IvsError> {
            let row = match stream_id {
                Some(id) => {
                    let sql = format!(
                        "SELECT {SESSION_COLUMNS} FROM stream_sessions WHERE channel_arn = $1 AND stream_id = $2"
                    );
                    sqlx::query(AssertSqlSafe(sql)).bind(channel_arn).bind(id).fetch_optional(pool).await
                }
                None => {
                    let sql = format!(
                        "SELECT {SESSION_COLUMNS} FROM stream_sessions WHERE channel_arn = $1 ORDER BY seq DESC LIMIT 1"
                    );
                    sqlx::query(AssertSqlSafe(sql)).bind(channel_arn).fetch_optional(pool).await
                }
            }
            .map_err(backend)?;
            row.as_ref().map(session_from_row).transpose()
        }

        async fn read_stream_sessions(
            pool: &$Pool,
            channel_arn: &str,
            before_seq: i64,
            limit: u32,
        ) -> Result<Vec<StreamSessionRecord>, IvsError> {
            let sql = format!(
                "SELECT {SESSION_COLUMNS} FROM stream_sessions WHERE channel_arn = $1 AND seq < $2 \
                 ORDER BY seq DESC LIMIT $3"
            );
            let rows = sqlx::query(AssertSqlSafe(sql))
                .bind(channel_arn)
                .bind(before_seq)
                .bind(i64::from(limit))
                .fetch_all(pool)
                .await
                .map_err(backend)?;
            rows.iter().map(session_from_row).collect()
        }

        async fn read_open_stream_sessions(pool: &$Pool) -> Result<Vec<StreamSessionRecord>, IvsError> {
            let sql = format!("SELECT {SESSION_COLUMNS} FROM stream_sessions WHERE NOT ended");
            let rows = sqlx::query(AssertSqlSafe(sql)).fetch_all(pool).await.map_err(backend)?;
            rows.iter().map(session_from_row).collect()
        }

        async fn read_records(pool: &$Pool, query: &ListQuery) -> Result<Vec<Record>, IvsError> {
            let mut sql =
                format!("SELECT {RECORD_COLUMNS} FROM resources WHERE account = $1 AND region = $2 AND seq > $3");
            let mut binds = 3;
            let mut filter = |condition: &str| {
                binds += 1;
                sql.push_str(&condition.replace('?', &format!("${binds}")));
            };
            if query.resource_type.is_some() {
                filter(" AND resource_type = ?");
            }
            if query.parent_arn.is_some() {
                filter(" AND parent_arn = ?");
            }
            if query.name.is_some() {
                filter(" AND name = ?");
            }
            if query.referencing.is_some() {
                filter(" AND arn IN (SELECT from_arn FROM resource_references WHERE to_arn = ?)");
            }
            filter(" ORDER BY seq LIMIT ?");
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
            let rows = statement.bind(i64::from(query.limit)).fetch_all(pool).await.map_err(backend)?;
            rows.iter().map(record_from_row).collect()
        }

        async fn read_records_of_type(pool: &$Pool, resource_type: ResourceType) -> Result<Vec<Record>, IvsError> {
            let sql = format!("SELECT {RECORD_COLUMNS} FROM resources WHERE resource_type = $1 ORDER BY seq");
            let rows = sqlx::query(AssertSqlSafe(sql))
                .bind(resource_type_name(resource_type))
                .fetch_all(pool)
                .await
                .map_err(backend)?;
            rows.iter().map(record_from_row).collect()
        }

        async fn read_viewer_revocation(
            pool: &$Pool,
            channel_arn: &str,
            viewer_id: &str,
            now: i64,
        ) -> Result<Option<i64>, IvsError> {
            sqlx::query_scalar(
                "SELECT max_version FROM viewer_revocations \
                 WHERE channel_arn = $1 AND viewer_id = $2 AND expires_at >= $3",
            )
            .bind(channel_arn)
            .bind(viewer_id)
            .bind(now)
            .fetch_optional(pool)
            .await
            .map_err(backend)
        }

        fn lease_from_row(row: &$Row) -> Result<StreamLease, IvsError> {
            Ok(StreamLease {
                channel_arn: row.try_get("channel_arn").map_err(backend)?,
                node_id: row.try_get("node_id").map_err(backend)?,
                origin_url: row.try_get("origin_url").map_err(backend)?,
                stream_id: row.try_get("stream_id").map_err(backend)?,
                epoch: row.try_get("epoch").map_err(backend)?,
            })
        }

        async fn read_setting(pool: &$Pool, key: &str) -> Result<Option<String>, IvsError> {
            sqlx::query_scalar("SELECT value FROM settings WHERE key = $1")
                .bind(key)
                .fetch_optional(pool)
                .await
                .map_err(backend)
        }

        async fn read_events_after(pool: &$Pool, after_seq: i64, limit: u32) -> Result<Vec<StoredEvent>, IvsError> {
            let rows =
                sqlx::query("SELECT seq, account, region, body FROM events WHERE seq > $1 ORDER BY seq LIMIT $2")
                    .bind(after_seq)
                    .bind(i64::from(limit))
                    .fetch_all(pool)
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

        async fn read_event_cursor(pool: &$Pool, target: &str) -> Result<Option<i64>, IvsError> {
            sqlx::query_scalar("SELECT seq FROM event_cursors WHERE target = $1")
                .bind(target)
                .fetch_optional(pool)
                .await
                .map_err(backend)
        }
    };
}
pub(crate) use relational_store;

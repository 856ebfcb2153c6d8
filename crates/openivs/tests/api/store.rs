//! The store's contract (`openivs::store::conformance`) on the backend this run of the suite
//! uses: PostgreSQL when `OPENIVS_TEST_DATABASE_URL` is set (scripts/test's second run), else the
//! embedded SQLite store. Each check gets a fresh database.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use openivs::store::Store;
use openivs::store::conformance;

static NEXT: AtomicUsize = AtomicUsize::new(0);

async fn fresh_store() -> Arc<dyn Store> {
    let name = format!("openivs_store_{}_{}", std::process::id(), NEXT.fetch_add(1, Ordering::SeqCst));
    match std::env::var("OPENIVS_TEST_DATABASE_URL") {
        Ok(base) => Arc::new(
            openivs::store::postgres::PostgresStore::open(&format!("{}/{name}", base.trim_end_matches('/')))
                .await
                .unwrap(),
        ),
        Err(_) => {
            let dir = std::env::temp_dir().join(name);
            let _ = std::fs::remove_dir_all(&dir);
            Arc::new(openivs::store::sqlite::SqliteStore::open(&dir.join("db.sqlite3")).await.unwrap())
        }
    }
}

#[tokio::test]
async fn changes_are_atomic_and_conditional() {
    let store = fresh_store().await;
    conformance::changes_are_atomic_and_conditional(store.clone()).await;
    store.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_changes_each_succeed_or_fail_alone() {
    let store = fresh_store().await;
    conformance::concurrent_changes_each_succeed_or_fail_alone(store.clone()).await;
    store.close().await;
}

#[tokio::test]
async fn a_broken_constraint_refuses_only_its_change() {
    let store = fresh_store().await;
    conformance::a_broken_constraint_refuses_only_its_change(store.clone()).await;
    store.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_modifications_all_land() {
    let store = fresh_store().await;
    conformance::concurrent_modifications_all_land(store.clone()).await;
    store.close().await;
}

#[tokio::test]
async fn the_stream_registry_leases_and_fences() {
    let store = fresh_store().await;
    conformance::the_stream_registry_leases_and_fences(store.clone()).await;
    store.close().await;
}

#[tokio::test]
async fn revocations_in_force_are_listed() {
    let store = fresh_store().await;
    conformance::revocations_in_force_are_listed(store.clone()).await;
    store.close().await;
}

#[tokio::test]
async fn recording_journals_are_kept_until_deleted() {
    let store = fresh_store().await;
    conformance::recording_journals_are_kept_until_deleted(store.clone()).await;
    store.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shared_calls_are_limited_per_second() {
    let store = fresh_store().await;
    conformance::shared_calls_are_limited_per_second(store.clone()).await;
    store.close().await;
}

//! A [`Store`] that times every operation of the store it wraps into the metrics'
//! `openivs_store_operation_duration_seconds{operation}`, whatever the backend.

use std::future::Future;
use std::sync::Arc;
use std::time::Instant;

use async_trait::async_trait;
use openivs_model::IvsError;

use super::{
    ApplyError, Change, ListQuery, Record, RecordingJournal, ResourceType, Store, StoredEvent, StreamLease,
    StreamSessionRecord, ViewerRevocation,
};

pub struct Metered {
    inner: Arc<dyn Store>,
}

impl Metered {
    pub fn new(inner: Arc<dyn Store>) -> Metered {
        Metered { inner }
    }
}

async fn timed<T>(operation: &'static str, work: impl Future<Output = T>) -> T {
    let started = Instant::now();
    let result = work.await;
    crate::metrics::global().store_operation(operation, started.elapsed());
    result
}

#[async_trait]
impl Store for Metered {
    async fn get(&self, arn: &str) -> Result<Option<Record>, IvsError> {
        timed("get", self.inner.get(arn)).await
    }
    async fn get_by_unique_key(&self, unique_key: &str) -> Result<Option<Record>, IvsError> {
        timed("get_by_unique_key", self.inner.get_by_unique_key(unique_key)).await
    }
    async fn list(&self, query: &ListQuery) -> Result<Vec<Record>, IvsError> {
        timed("list", self.inner.list(query)).await
    }
    async fn apply(&self, change: Change) -> Result<(), ApplyError> {
        timed("apply", self.inner.apply(change)).await
    }
    async fn viewer_revocation(&self, channel_arn: &str, viewer_id: &str, now: i64) -> Result<Option<i64>, IvsError> {
        timed("viewer_revocation", self.inner.viewer_revocation(channel_arn, viewer_id, now)).await
    }
    async fn viewer_revocations(&self, now: i64) -> Result<Vec<ViewerRevocation>, IvsError> {
        timed("viewer_revocations", self.inner.viewer_revocations(now)).await
    }
    async fn list_type(&self, resource_type: ResourceType) -> Result<Vec<Record>, IvsError> {
        timed("list_type", self.inner.list_type(resource_type)).await
    }
    async fn stream_session(
        &self,
        channel_arn: &str,
        stream_id: Option<&str>,
    ) -> Result<Option<StreamSessionRecord>, IvsError> {
        timed("stream_session", self.inner.stream_session(channel_arn, stream_id)).await
    }
    async fn list_stream_sessions(
        &self,
        channel_arn: &str,
        before_seq: i64,
        limit: u32,
    ) -> Result<Vec<StreamSessionRecord>, IvsError> {
        timed("list_stream_sessions", self.inner.list_stream_sessions(channel_arn, before_seq, limit)).await
    }
    async fn open_stream_sessions(&self) -> Result<Vec<StreamSessionRecord>, IvsError> {
        timed("open_stream_sessions", self.inner.open_stream_sessions()).await
    }
    async fn setting(&self, key: &str) -> Result<Option<String>, IvsError> {
        timed("setting", self.inner.setting(key)).await
    }
    async fn init_setting(&self, key: &str, value: &str) -> Result<String, IvsError> {
        timed("init_setting", self.inner.init_setting(key, value)).await
    }
    async fn events_after(&self, after_seq: i64, limit: u32) -> Result<Vec<StoredEvent>, IvsError> {
        timed("events_after", self.inner.events_after(after_seq, limit)).await
    }
    async fn last_event_seq(&self) -> Result<i64, IvsError> {
        timed("last_event_seq", self.inner.last_event_seq()).await
    }
    async fn event_cursor(&self, target: &str) -> Result<Option<i64>, IvsError> {
        timed("event_cursor", self.inner.event_cursor(target)).await
    }
    fn event_signal(&self) -> Arc<tokio::sync::Notify> {
        self.inner.event_signal()
    }
    async fn stream_holder(&self, channel_arn: &str) -> Result<Option<StreamLease>, IvsError> {
        timed("stream_holder", self.inner.stream_holder(channel_arn)).await
    }
    async fn last_stream_holder(&self, channel_arn: &str) -> Result<Option<StreamLease>, IvsError> {
        timed("last_stream_holder", self.inner.last_stream_holder(channel_arn)).await
    }
    async fn stream_holders(&self) -> Result<Vec<StreamLease>, IvsError> {
        timed("stream_holders", self.inner.stream_holders()).await
    }
    async fn recording_journals(&self, channel_arn: Option<&str>) -> Result<Vec<RecordingJournal>, IvsError> {
        timed("recording_journals", self.inner.recording_journals(channel_arn)).await
    }
    async fn admit_shared_call(&self, key: &str, limit: u32) -> Result<Option<bool>, IvsError> {
        timed("admit_shared_call", self.inner.admit_shared_call(key, limit)).await
    }
    async fn try_lead(&self, role: &str) -> Result<Option<Box<dyn super::Leadership>>, IvsError> {
        self.inner.try_lead(role).await
    }
    async fn close(&self) {
        self.inner.close().await
    }
}

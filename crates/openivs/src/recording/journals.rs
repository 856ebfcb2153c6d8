//! Journals of recordings in progress, kept in the store from a recording's start to its end
//! under the node that writes it: what [`super::recovery`] needs to finish a recording that its
//! node's crash interrupted. In the store rather than in the node's own folder, so that in a
//! cluster the node that ends a dead node's stream can finish that stream's recording too.
//! (Earlier versions kept them as files of `{data-dir}/recordings-in-progress`; those are moved
//! into the store at start-up.)

use std::path::Path;
use std::sync::Arc;

use super::recorder::Journal;
use crate::store::{ApplyError, Change, Check, RecordingJournal, Store, Write};

pub struct Journals {
    store: Arc<dyn Store>,
    node_id: String,
}

impl Journals {
    /// The journals of the recordings `node_id` (this node) writes.
    pub fn new(store: Arc<dyn Store>, node_id: String) -> Journals {
        Journals { store, node_id }
    }

    pub(super) fn node_id(&self) -> &str {
        &self.node_id
    }

    /// Keeps (or rewrites) the journal of `recording_id`; the body kept.
    pub(super) async fn keep(&self, recording_id: &str, journal: &Journal) -> Result<String, String> {
        let row = self.row(recording_id, journal)?;
        let body = row.body.clone();
        self.store.apply(Change::new().write(Write::PutRecordingJournal(row))).await.map_err(|e| format!("{e:?}"))?;
        Ok(body)
    }

    /// Makes the journal of `recording_id`, as `node_id` kept it with `body`, this node's and
    /// `journal` (what finishes the recording claims it so): the body kept, or `None` when the
    /// journal changed meanwhile (another node claimed it, or finished the recording).
    pub(super) async fn claim(
        &self,
        recording_id: &str,
        node_id: &str,
        body: &str,
        journal: &Journal,
    ) -> Result<Option<String>, String> {
        let row = self.row(recording_id, journal)?;
        let claimed = row.body.clone();
        let unchanged =
            Check::JournalUnchanged { recording_id: recording_id.into(), node_id: node_id.into(), body: body.into() };
        let change = Change::new()
            .require(unchanged, openivs_model::IvsError::conflict("the journal changed"))
            .write(Write::PutRecordingJournal(row));
        match self.store.apply(change).await {
            Ok(()) => Ok(Some(claimed)),
            Err(ApplyError::Rejected(_)) => Ok(None),
            Err(error) => Err(format!("{error:?}")),
        }
    }

    fn row(&self, recording_id: &str, journal: &Journal) -> Result<RecordingJournal, String> {
        Ok(RecordingJournal {
            recording_id: recording_id.to_owned(),
            node_id: self.node_id.clone(),
            channel_arn: journal.channel_arn.clone(),
            body: serde_json::to_string(journal).map_err(|e| e.to_string())?,
        })
    }

    /// Forgets the journal of a recording that was finished.
    pub(super) async fn forget(&self, recording_id: &str) {
        let delete = Write::DeleteRecordingJournal { recording_id: recording_id.to_owned() };
        if let Err(error) = self.store.apply(Change::new().write(delete)).await {
            tracing::warn!("recording: cannot forget the journal of {recording_id}: {error:?}");
        }
    }

    /// This node's journals: the recordings its last stop interrupted (read before ingest
    /// starts, so no recording of this run is among them).
    pub(super) async fn own(&self) -> Vec<(RecordingJournal, Journal)> {
        self.read(None).await.into_iter().filter(|(row, _)| row.node_id == self.node_id).collect()
    }

    /// The journals, on any node, of the recordings that hold the stream `stream_id` of
    /// `channel_arn`.
    pub(super) async fn of_stream(&self, channel_arn: &str, stream_id: &str) -> Vec<(RecordingJournal, Journal)> {
        self.read(Some(channel_arn))
            .await
            .into_iter()
            .filter(|(_, journal)| journal.stream_ids.iter().any(|id| id == stream_id))
            .collect()
    }

    /// Journals of other nodes' recordings whose reconnect window ended before `before_ms`
    /// (Unix ms) and that still wait: their node died waiting.
    pub(super) async fn parked_elsewhere_until(&self, before_ms: i64) -> Vec<(RecordingJournal, Journal)> {
        self.read(None)
            .await
            .into_iter()
            .filter(|(row, journal)| {
                row.node_id != self.node_id && journal.parked_until_ms.is_some_and(|until| until < before_ms)
            })
            .collect()
    }

    async fn read(&self, channel_arn: Option<&str>) -> Vec<(RecordingJournal, Journal)> {
        let rows = match self.store.recording_journals(channel_arn).await {
            Ok(rows) => rows,
            Err(error) => {
                tracing::warn!("recording: cannot read the journals of recordings in progress: {error}");
                return Vec::new();
            }
        };
        let mut journals = Vec::new();
        for row in rows {
            match serde_json::from_str::<Journal>(&row.body) {
                Ok(journal) => journals.push((row, journal)),
                Err(_) => {
                    tracing::warn!("recording: unreadable journal of {} removed", row.recording_id);
                    self.forget(&row.recording_id).await;
                }
            }
        }
        journals
    }

    /// Moves the journal files an earlier version left in `dir` into the store (as this node's),
    /// and removes the folder.
    pub async fn import_files(&self, dir: &Path) {
        let Ok(entries) = std::fs::read_dir(dir) else { return };
        for path in entries.filter_map(|entry| Some(entry.ok()?.path())) {
            let recording_id = path.file_stem().and_then(|s| s.to_str()).unwrap_or_default().to_owned();
            let read = std::fs::read(&path).ok().and_then(|bytes| serde_json::from_slice::<Journal>(&bytes).ok());
            match read {
                Some(journal) if !recording_id.is_empty() => {
                    if let Err(error) = self.keep(&recording_id, &journal).await {
                        tracing::warn!("recording: cannot move the journal {} into the store: {error}", path.display());
                        continue;
                    }
                }
                _ => tracing::warn!("recording: unreadable journal {} removed", path.display()),
            }
            let _ = std::fs::remove_file(&path);
        }
        let _ = std::fs::remove_dir(dir);
    }
}

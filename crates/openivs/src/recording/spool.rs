//! The spool between recordings and an S3-compatible store: every object a recording writes is
//! first a file of `{data-dir}/recording-spool/` (written, synced and renamed into place, so it
//! survives a crash), then uploaded by one task in the order it was written, retried with
//! back-off while the store fails, and removed once the store has it. Ingest and live playback
//! never wait for the store: a recording only waits for its local file.
//!
//! Order matters: `recording-ended.json` must not reach the store before the segments it
//! describes, so one uploader takes the entries in order. An entry that a later entry of the same
//! key replaces (playlists are rewritten with each segment) is dropped unsent. The spool is
//! bounded: past `max_bytes`, media objects are refused (the recording then fails, as IVS's does
//! when it cannot write) while the small JSON and playlist objects that close a recording still go
//! in, so a recording can always say how it ended.

use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use object_store::ObjectStoreExt as _;

use super::buckets::S3Stores;

/// Objects this large are uploaded in parts (S3's multipart upload) of [`PART_BYTES`].
const MULTIPART_FROM_BYTES: usize = 16 << 20;
const PART_BYTES: usize = 8 << 20;
/// Objects this small always fit in the spool (the playlists and JSON files that end a recording).
const ALWAYS_ACCEPTED_BYTES: usize = 256 << 10;

/// One spooled object: its file, and where it goes.
#[derive(Debug, Clone)]
struct Entry {
    sequence: u64,
    bucket: String,
    key: String,
    bytes: usize,
}

/// The header line of a spool file (the object's bytes follow it).
#[derive(serde::Serialize, serde::Deserialize)]
struct Header {
    bucket: String,
    key: String,
}

#[derive(Default)]
struct Queue {
    entries: VecDeque<Entry>,
    next_sequence: u64,
    bytes: usize,
    /// Since when the store has been failing every upload (none while it works).
    failing_since: Option<Instant>,
    last_error: String,
}

pub struct Spool {
    dir: PathBuf,
    max_bytes: usize,
    /// A store failing this long refuses media like a full spool does.
    outage_limit: Duration,
    queue: Mutex<Queue>,
    wake: tokio::sync::Notify,
    /// Uploads are waited for to be empty on a clean shutdown.
    drained: tokio::sync::Notify,
}

impl Spool {
    /// The spool in `dir`, with the entries a previous run left there queued again in order.
    pub fn open(dir: PathBuf, max_bytes: usize, outage_limit: Duration) -> std::io::Result<Spool> {
        std::fs::create_dir_all(&dir)?;
        let mut entries = Vec::new();
        for item in std::fs::read_dir(&dir)? {
            let path = item?.path();
            let Some(name) = path.file_name().and_then(|n| n.to_str()) else { continue };
            if name.ends_with(".partial") {
                // Never renamed into place: the recording never counted on it.
                let _ = std::fs::remove_file(&path);
                continue;
            }
            let Some(sequence) = name.strip_suffix(".object").and_then(|n| n.parse::<u64>().ok()) else { continue };
            match read_header(&path) {
                Ok((header, bytes)) => {
                    entries.push(Entry { sequence, bucket: header.bucket, key: header.key, bytes });
                }
                Err(error) => {
                    tracing::warn!("recording spool: unreadable {} removed: {error}", path.display());
                    let _ = std::fs::remove_file(&path);
                }
            }
        }
        entries.sort_by_key(|entry| entry.sequence);
        if !entries.is_empty() {
            tracing::info!("recording spool: {} objects left by the last run are uploaded again", entries.len());
        }
        let queue = Queue {
            next_sequence: entries.last().map_or(0, |entry| entry.sequence + 1),
            bytes: entries.iter().map(|entry| entry.bytes).sum(),
            entries: entries.into(),
            ..Queue::default()
        };
        Ok(Spool {
            dir,
            max_bytes,
            outage_limit,
            queue: Mutex::new(queue),
            wake: tokio::sync::Notify::new(),
            drained: tokio::sync::Notify::new(),
        })
    }

    fn path_of(&self, sequence: u64) -> PathBuf {
        self.dir.join(format!("{sequence:020}.object"))
    }

    /// Puts an object into the spool; it is in the store's queue, safe on disk, when this
    /// returns. Media (objects that are not small) are refused when the spool is full or the
    /// store has been down past the outage limit.
    pub async fn put(&self, bucket: &str, key: &str, body: &[u8]) -> std::io::Result<()> {
        let sequence = {
            let mut queue = self.queue.lock().expect("spool lock");
            if body.len() > ALWAYS_ACCEPTED_BYTES {
                if queue.bytes + body.len() > self.max_bytes {
                    return Err(std::io::Error::other(format!(
                        "the recording spool is full ({} bytes wait for the store: {})",
                        queue.bytes, queue.last_error
                    )));
                }
                if queue.failing_since.is_some_and(|since| since.elapsed() > self.outage_limit) {
                    return Err(std::io::Error::other(format!(
                        "the store has refused every write for more than {} s: {}",
                        self.outage_limit.as_secs(),
                        queue.last_error
                    )));
                }
            }
            queue.next_sequence += 1;
            queue.next_sequence - 1
        };
        let header = serde_json::to_vec(&Header { bucket: bucket.to_owned(), key: key.to_owned() })?;
        let path = self.path_of(sequence);
        let temporary = path.with_extension("partial");
        {
            use tokio::io::AsyncWriteExt as _;
            let mut file = tokio::fs::File::create(&temporary).await?;
            file.write_all(&header).await?;
            file.write_all(b"\n").await?;
            file.write_all(body).await?;
            file.sync_all().await?;
        }
        tokio::fs::rename(&temporary, &path).await?;
        {
            let mut queue = self.queue.lock().expect("spool lock");
            // Entries are queued in sequence order even when two puts race.
            let at = queue.entries.partition_point(|entry| entry.sequence < sequence);
            let entry = Entry { sequence, bucket: bucket.to_owned(), key: key.to_owned(), bytes: body.len() };
            queue.entries.insert(at, entry);
            queue.bytes += body.len();
        }
        self.wake.notify_one();
        Ok(())
    }

    /// The newest spooled version of an object, if one waits here.
    pub async fn get(&self, bucket: &str, key: &str) -> Option<Vec<u8>> {
        let sequence = self.newest(bucket, key)?.sequence;
        let bytes = tokio::fs::read(self.path_of(sequence)).await.ok()?;
        let start = bytes.iter().position(|&b| b == b'\n')? + 1;
        Some(bytes[start..].to_vec())
    }

    /// The size of the newest spooled version of an object.
    pub fn size(&self, bucket: &str, key: &str) -> Option<u64> {
        self.newest(bucket, key).map(|entry| entry.bytes as u64)
    }

    fn newest(&self, bucket: &str, key: &str) -> Option<Entry> {
        let queue = self.queue.lock().expect("spool lock");
        queue.entries.iter().rev().find(|entry| entry.bucket == bucket && entry.key == key).cloned()
    }

    /// How long the store has been failing every upload (zero while it works).
    pub fn outage(&self) -> Duration {
        self.queue.lock().expect("spool lock").failing_since.map_or(Duration::ZERO, |since| since.elapsed())
    }

    /// Bytes waiting for the store.
    pub fn waiting_bytes(&self) -> usize {
        self.queue.lock().expect("spool lock").bytes
    }

    /// Waits, at most `limit`, until everything spooled reached the store.
    pub async fn drain(&self, limit: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            let drained = self.drained.notified();
            if self.queue.lock().expect("spool lock").entries.is_empty() {
                return true;
            }
            if tokio::time::timeout_at(deadline, drained).await.is_err() {
                return false;
            }
        }
    }

    /// Uploads the spool to `stores`, for as long as the server runs.
    pub async fn upload(&self, stores: &S3Stores) {
        let mut backoff = Duration::from_millis(250);
        loop {
            let next = {
                let queue = self.queue.lock().expect("spool lock");
                queue.entries.front().cloned().map(|entry| {
                    // A later version of the same object makes this one moot.
                    let replaced = queue.entries.iter().skip(1).any(|e| e.bucket == entry.bucket && e.key == entry.key);
                    (entry, replaced)
                })
            };
            let Some((entry, replaced)) = next else {
                self.drained.notify_waiters();
                let woken = self.wake.notified();
                if self.queue.lock().expect("spool lock").entries.is_empty() {
                    woken.await;
                }
                continue;
            };
            let path = self.path_of(entry.sequence);
            let result = if replaced { Ok(()) } else { self.send(stores, &entry, &path).await };
            match result {
                Ok(()) => {
                    crate::metrics::global().recording_upload("uploaded");
                    let _ = tokio::fs::remove_file(&path).await;
                    let mut queue = self.queue.lock().expect("spool lock");
                    if queue.failing_since.take().is_some() {
                        tracing::info!("recording spool: the store answers again");
                    }
                    if let Some(at) = queue.entries.iter().position(|e| e.sequence == entry.sequence) {
                        queue.entries.remove(at);
                        queue.bytes -= entry.bytes;
                    }
                    backoff = Duration::from_millis(250);
                }
                Err(error) => {
                    crate::metrics::global().recording_upload("retried");
                    {
                        let mut queue = self.queue.lock().expect("spool lock");
                        if queue.failing_since.is_none() {
                            tracing::warn!(
                                "recording spool: cannot upload s3://{}/{}: {error}; retrying",
                                entry.bucket,
                                entry.key
                            );
                            queue.failing_since = Some(Instant::now());
                        }
                        queue.last_error = error;
                    }
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                }
            }
        }
    }

    async fn send(&self, stores: &S3Stores, entry: &Entry, path: &std::path::Path) -> Result<(), String> {
        let bytes = tokio::fs::read(path).await.map_err(|e| format!("spool file {}: {e}", path.display()))?;
        let start = bytes.iter().position(|&b| b == b'\n').map_or(0, |at| at + 1);
        let body = bytes::Bytes::from(bytes).slice(start..);
        let store = stores.store(&entry.bucket).map_err(|e| e.to_string())?;
        let location = object_store::path::Path::from(entry.key.as_str());
        if body.len() < MULTIPART_FROM_BYTES {
            store.put(&location, body.into()).await.map_err(|e| e.to_string())?;
        } else {
            let upload = store.put_multipart(&location).await.map_err(|e| e.to_string())?;
            let mut writer = object_store::WriteMultipart::new_with_chunk_size(upload, PART_BYTES);
            writer.put(body);
            writer.finish().await.map_err(|e| e.to_string())?;
        }
        Ok(())
    }
}

fn read_header(path: &std::path::Path) -> std::io::Result<(Header, usize)> {
    use std::io::BufRead as _;
    let file = std::fs::File::open(path)?;
    let length = file.metadata()?.len() as usize;
    let mut line = Vec::new();
    std::io::BufReader::new(file).read_until(b'\n', &mut line)?;
    let header = serde_json::from_slice(line.strip_suffix(b"\n").unwrap_or(&line)).map_err(std::io::Error::other)?;
    Ok((header, length - line.len()))
}

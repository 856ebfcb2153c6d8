//! Where recordings go: the buckets named by recording configurations' `bucketName`, in the
//! object store the settings choose.
//!
//! - **Local** (the default): a bucket is a folder of the buckets directory (`--buckets-dir`, by
//!   default `buckets` in the data directory); it exists when its folder does, and objects are
//!   files under it, their keys being relative paths. Objects are written whole or not at all (a
//!   temporary file, then a rename), so a reader never sees half an object.
//! - **S3** (`--recording-store s3`): a bucket of an S3-compatible service (AWS S3, MinIO, Ceph,
//!   moto …), reached through `object_store`. Objects go through the [`Spool`], so a store that is
//!   slow or down never holds up a recording, and nothing is lost while it is.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use object_store::ObjectStore as _;
use object_store::ObjectStoreExt as _;

use super::spool::Spool;

/// How to reach an S3-compatible service.
#[derive(Clone)]
pub struct S3Settings {
    /// `None`: AWS S3 itself (the region's endpoint).
    pub endpoint: Option<String>,
    pub region: String,
    /// `None`: from the environment (`AWS_ACCESS_KEY_ID`, …), as the AWS tools find them.
    pub access_key_id: Option<String>,
    pub secret_access_key: Option<String>,
    /// `https://endpoint/bucket/key` rather than `https://bucket.endpoint/key`.
    pub path_style: bool,
}

impl std::fmt::Debug for S3Settings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("S3Settings")
            .field("endpoint", &self.endpoint)
            .field("region", &self.region)
            .field("access_key_id", &self.access_key_id)
            .field("secret_access_key", &self.secret_access_key.as_ref().map(|_| "<redacted>"))
            .field("path_style", &self.path_style)
            .finish()
    }
}

/// A client per bucket of one S3-compatible service, made on first use.
pub struct S3Stores {
    settings: S3Settings,
    stores: Mutex<HashMap<String, Arc<object_store::aws::AmazonS3>>>,
}

impl S3Stores {
    pub fn new(settings: S3Settings) -> S3Stores {
        S3Stores { settings, stores: Mutex::new(HashMap::new()) }
    }

    pub fn store(&self, bucket: &str) -> object_store::Result<Arc<object_store::aws::AmazonS3>> {
        let mut stores = self.stores.lock().expect("s3 stores lock");
        if let Some(store) = stores.get(bucket) {
            return Ok(store.clone());
        }
        let settings = &self.settings;
        let mut builder = object_store::aws::AmazonS3Builder::from_env()
            .with_bucket_name(bucket)
            .with_region(&settings.region)
            .with_virtual_hosted_style_request(!settings.path_style)
            // The spool retries with its own back-off; a request gives up quickly so the spool
            // knows the store is down.
            .with_retry(object_store::RetryConfig {
                max_retries: 1,
                retry_timeout: Duration::from_secs(10),
                backoff: object_store::BackoffConfig::default(),
            })
            .with_client_options(
                object_store::ClientOptions::new()
                    .with_connect_timeout(Duration::from_secs(5))
                    .with_timeout(Duration::from_secs(120)),
            );
        if let Some(endpoint) = &settings.endpoint {
            builder = builder.with_endpoint(endpoint).with_allow_http(endpoint.starts_with("http://"));
        }
        if let Some(key) = &settings.access_key_id {
            builder = builder.with_access_key_id(key);
        }
        if let Some(secret) = &settings.secret_access_key {
            builder = builder.with_secret_access_key(secret);
        }
        let store = Arc::new(builder.build()?);
        stores.insert(bucket.to_owned(), store.clone());
        Ok(store)
    }
}

enum Backend {
    Local(PathBuf),
    S3 { stores: Arc<S3Stores>, spool: Arc<Spool> },
}

pub struct Buckets {
    backend: Backend,
}

impl Buckets {
    pub fn local(root: PathBuf) -> Buckets {
        Buckets { backend: Backend::Local(root) }
    }

    /// Buckets of an S3-compatible service, written through the spool in `spool_dir`; starts
    /// the spool's uploader.
    pub fn s3(
        settings: S3Settings,
        spool_dir: PathBuf,
        spool_max_bytes: usize,
        outage_limit: Duration,
    ) -> std::io::Result<Buckets> {
        let stores = Arc::new(S3Stores::new(settings));
        let spool = Arc::new(Spool::open(spool_dir, spool_max_bytes, outage_limit)?);
        let (uploader_stores, uploader_spool) = (stores.clone(), spool.clone());
        tokio::spawn(async move { uploader_spool.upload(&uploader_stores).await });
        Ok(Buckets { backend: Backend::S3 { stores, spool } })
    }

    /// Where objects go, for the log.
    pub fn describe(&self) -> String {
        match &self.backend {
            Backend::Local(root) => format!("folders of {}", root.display()),
            Backend::S3 { stores, .. } => match &stores.settings.endpoint {
                Some(endpoint) => format!("S3 at {endpoint}"),
                None => format!("AWS S3 in {}", stores.settings.region),
            },
        }
    }

    /// Whether every node of a cluster reaches these buckets (an S3 store; folders are this
    /// machine's own).
    pub fn is_shared(&self) -> bool {
        matches!(self.backend, Backend::S3 { .. })
    }

    /// Whether a bucket name can be one (S3's rules keep out `/`; a leading dot is refused
    /// too, so no name reaches outside the local root).
    fn checked_name(bucket: &str) -> Result<(), String> {
        if bucket.is_empty() || bucket.starts_with('.') || bucket.contains(['/', '\\']) {
            return Err(format!("{bucket:?} cannot be a bucket"));
        }
        Ok(())
    }

    fn checked_key(key: &str) -> std::io::Result<()> {
        if key.split('/').any(|part| part.is_empty() || part == "." || part == "..") {
            return Err(std::io::Error::other(format!("{key:?} cannot be an object key")));
        }
        Ok(())
    }

    /// Whether `bucket` exists and takes writes (CreateRecordingConfiguration's check): a probe
    /// object is written and removed.
    pub async fn check(&self, bucket: &str) -> Result<(), String> {
        Self::checked_name(bucket)?;
        let probe = format!(".openivs-probe-{}", crate::api::random_alphanumeric(8));
        match &self.backend {
            Backend::Local(root) => {
                let folder = root.join(bucket);
                if !tokio::fs::metadata(&folder).await.is_ok_and(|m| m.is_dir()) {
                    return Err(format!("bucket {bucket} does not exist (no folder {})", folder.display()));
                }
                let probe = folder.join(probe);
                tokio::fs::write(&probe, b"").await.map_err(|e| format!("bucket {bucket} cannot be written: {e}"))?;
                let _ = tokio::fs::remove_file(&probe).await;
                Ok(())
            }
            Backend::S3 { stores, .. } => {
                let store = stores.store(bucket).map_err(|e| e.to_string())?;
                let location = object_store::path::Path::from(probe.as_str());
                store
                    .put(&location, bytes::Bytes::new().into())
                    .await
                    .map_err(|e| format!("bucket {bucket} cannot be written: {e}"))?;
                let _ = store.delete(&location).await;
                Ok(())
            }
        }
    }

    /// Writes object `key` of `bucket`: done when it is in the bucket (local) or safe in the
    /// spool (S3).
    pub async fn put(&self, bucket: &str, key: &str, bytes: &[u8]) -> std::io::Result<()> {
        Self::checked_name(bucket).map_err(std::io::Error::other)?;
        Self::checked_key(key)?;
        match &self.backend {
            Backend::Local(root) => {
                // A bucket is its folder: one that was removed is gone, not made again.
                let folder = root.join(bucket);
                if !tokio::fs::metadata(&folder).await.is_ok_and(|m| m.is_dir()) {
                    let message = format!("bucket {bucket} does not exist (no folder {})", folder.display());
                    return Err(std::io::Error::new(std::io::ErrorKind::NotFound, message));
                }
                let path = folder.join(key);
                let parent = path.parent().unwrap_or(Path::new("."));
                tokio::fs::create_dir_all(parent).await?;
                let written = write_synced(&path, bytes).await;
                crate::metrics::global().recording_upload(if written.is_ok() { "uploaded" } else { "failed" });
                written
            }
            Backend::S3 { spool, .. } => spool.put(bucket, key, bytes).await,
        }
    }

    /// Object `key` of `bucket` (its newest version, spooled or stored), or `None`.
    pub async fn get(&self, bucket: &str, key: &str) -> std::io::Result<Option<Vec<u8>>> {
        Self::checked_name(bucket).map_err(std::io::Error::other)?;
        Self::checked_key(key)?;
        match &self.backend {
            Backend::Local(root) => match tokio::fs::read(root.join(bucket).join(key)).await {
                Ok(bytes) => Ok(Some(bytes)),
                Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(None),
                Err(error) => Err(error),
            },
            Backend::S3 { stores, spool } => {
                if let Some(bytes) = spool.get(bucket, key).await {
                    return Ok(Some(bytes));
                }
                let store = stores.store(bucket).map_err(std::io::Error::other)?;
                match store.get(&object_store::path::Path::from(key)).await {
                    Ok(found) => Ok(Some(found.bytes().await.map_err(std::io::Error::other)?.to_vec())),
                    Err(object_store::Error::NotFound { .. }) => Ok(None),
                    Err(error) => Err(std::io::Error::other(error)),
                }
            }
        }
    }

    /// The names one level below `prefix` (a key prefix ending before a `/`) in `bucket`, as
    /// S3 lists common prefixes: the console walks a channel's recordings with it. Objects
    /// still in the spool are not listed (they are once they reach the store).
    pub async fn list_children(&self, bucket: &str, prefix: &str) -> std::io::Result<Vec<String>> {
        Self::checked_name(bucket).map_err(std::io::Error::other)?;
        Self::checked_key(prefix)?;
        match &self.backend {
            Backend::Local(root) => {
                let mut names = Vec::new();
                let mut entries = match tokio::fs::read_dir(root.join(bucket).join(prefix)).await {
                    Ok(entries) => entries,
                    Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(names),
                    Err(error) => return Err(error),
                };
                while let Some(entry) = entries.next_entry().await? {
                    if entry.file_type().await?.is_dir() {
                        names.extend(entry.file_name().to_str().map(str::to_owned));
                    }
                }
                Ok(names)
            }
            Backend::S3 { stores, .. } => {
                let store = stores.store(bucket).map_err(std::io::Error::other)?;
                let listed = store
                    .list_with_delimiter(Some(&object_store::path::Path::from(prefix)))
                    .await
                    .map_err(std::io::Error::other)?;
                Ok(listed.common_prefixes.iter().filter_map(|path| path.filename().map(str::to_owned)).collect())
            }
        }
    }

    /// The size of object `key` of `bucket` (0 when there is none).
    pub async fn size(&self, bucket: &str, key: &str) -> u64 {
        if Self::checked_name(bucket).is_err() {
            return 0;
        }
        match &self.backend {
            Backend::Local(root) => tokio::fs::metadata(root.join(bucket).join(key)).await.map_or(0, |m| m.len()),
            Backend::S3 { stores, spool } => match spool.size(bucket, key) {
                Some(size) => size,
                None => match stores.store(bucket) {
                    Ok(store) => store.head(&object_store::path::Path::from(key)).await.map_or(0, |meta| meta.size),
                    Err(_) => 0,
                },
            },
        }
    }

    /// Bytes waiting in the spool for the S3 store (zero for local folders).
    pub fn spool_bytes(&self) -> usize {
        match &self.backend {
            Backend::Local(_) => 0,
            Backend::S3 { spool, .. } => spool.waiting_bytes(),
        }
    }

    /// How long the store has been refusing every write (always zero for local folders).
    pub fn outage(&self) -> Duration {
        match &self.backend {
            Backend::Local(_) => Duration::ZERO,
            Backend::S3 { spool, .. } => spool.outage(),
        }
    }

    /// Waits, at most `limit`, for spooled objects to reach the store (a clean shutdown).
    pub async fn flush(&self, limit: Duration) {
        if let Backend::S3 { spool, .. } = &self.backend
            && !spool.drain(limit).await
        {
            tracing::warn!(
                "recording spool: {} bytes still wait for the store; they are uploaded at the next start",
                spool.waiting_bytes()
            );
        }
    }
}

/// Writes `path` whole or not at all, on disk before this returns: a temporary file beside it,
/// synced, then renamed into place (a power cut leaves the old file or the new one).
pub(crate) async fn write_synced(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use tokio::io::AsyncWriteExt as _;
    let parent = path.parent().unwrap_or(Path::new("."));
    let temporary = parent.join(format!(".{}.partial", crate::api::random_alphanumeric(8)));
    let mut file = tokio::fs::File::create(&temporary).await?;
    file.write_all(bytes).await?;
    file.sync_all().await?;
    drop(file);
    tokio::fs::rename(&temporary, path).await
}

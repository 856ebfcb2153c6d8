//! Where recordings go: the buckets named by recording configurations' `bucketName`. Today a
//! bucket is a folder of the buckets directory (`--buckets-dir`, by default `buckets` in the data
//! directory): it exists when its folder does, and objects are files under it, their keys being
//! relative paths. Objects are written whole or not at all (a temporary file, then a rename), so
//! a reader never sees half an object.

use std::path::{Path, PathBuf};

pub struct Buckets {
    root: PathBuf,
}

impl Buckets {
    pub fn local(root: PathBuf) -> Buckets {
        Buckets { root }
    }

    /// The folder of `bucket`, if the name can be one (S3's rules already keep out `/`; a
    /// leading dot is refused too, so no name reaches outside the root).
    fn folder(&self, bucket: &str) -> Result<PathBuf, String> {
        if bucket.is_empty() || bucket.starts_with('.') || bucket.contains(['/', '\\']) {
            return Err(format!("{bucket:?} cannot be a bucket"));
        }
        Ok(self.root.join(bucket))
    }

    /// Whether `bucket` exists and takes writes (CreateRecordingConfiguration's check): a probe
    /// object is written and removed.
    pub async fn check(&self, bucket: &str) -> Result<(), String> {
        let folder = self.folder(bucket)?;
        if !tokio::fs::metadata(&folder).await.is_ok_and(|m| m.is_dir()) {
            return Err(format!("bucket {bucket} does not exist (no folder {})", folder.display()));
        }
        let probe = folder.join(format!(".openivs-probe-{}", crate::api::random_alphanumeric(8)));
        tokio::fs::write(&probe, b"").await.map_err(|e| format!("bucket {bucket} cannot be written: {e}"))?;
        let _ = tokio::fs::remove_file(&probe).await;
        Ok(())
    }

    /// Writes object `key` of `bucket` (creating the folders its key names).
    pub async fn put(&self, bucket: &str, key: &str, bytes: &[u8]) -> std::io::Result<()> {
        let folder = self.folder(bucket).map_err(std::io::Error::other)?;
        if key.split('/').any(|part| part.is_empty() || part == "." || part == "..") {
            return Err(std::io::Error::other(format!("{key:?} cannot be an object key")));
        }
        let path = folder.join(key);
        let parent = path.parent().unwrap_or(Path::new("."));
        tokio::fs::create_dir_all(parent).await?;
        let temporary = parent.join(format!(".{}.partial", crate::api::random_alphanumeric(8)));
        tokio::fs::write(&temporary, bytes).await?;
        tokio::fs::rename(&temporary, &path).await
    }

    /// The file of object `key` of `bucket` (an empty path if the bucket name cannot be one).
    pub fn path_of(&self, bucket: &str, key: &str) -> PathBuf {
        self.folder(bucket).map(|folder| folder.join(key)).unwrap_or_default()
    }

    /// Object `key` of `bucket`, or `None` when there is no such object.
    pub async fn get(&self, bucket: &str, key: &str) -> std::io::Result<Option<Vec<u8>>> {
        let folder = self.folder(bucket).map_err(std::io::Error::other)?;
        match tokio::fs::read(folder.join(key)).await {
            Ok(bytes) => Ok(Some(bytes)),
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(error) => Err(error),
        }
    }
}

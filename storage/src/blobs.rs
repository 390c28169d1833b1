//! Image bytes, kept out of the Raft log: a content-addressed blob store. A blob is named by the
//! SHA-256 of its bytes, sealed at rest like every other value (the digest is the associated
//! data, so a blob cannot be swapped for another), and verified against its name whenever it is
//! read. The Raft entry of a report carries only digests, sizes and content types.
//!
//! Where the bytes live is a [`BlobBackend`]: by default files in the node's data directory
//! ([`FileBlobs`], one fsync'd file per blob); an operator may plug in a shared object store
//! (the node's S3 backend), in which case one copy serves every node.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::SystemTime;

use sha2::{Digest, Sha256};

use crate::db::Store;
use crate::error::StoreError;

/// Where blobs are kept. Implementations must make `put` durable before returning.
#[async_trait::async_trait]
pub trait BlobBackend: Send + Sync + 'static {
    /// Stores `sealed` under `digest`, durably (fsync'd or acknowledged by the object store).
    async fn put(&self, digest: &str, sealed: Vec<u8>) -> Result<(), StoreError>;
    async fn get(&self, digest: &str) -> Result<Option<Vec<u8>>, StoreError>;
    async fn contains(&self, digest: &str) -> Result<bool, StoreError>;
    /// Deletes the blob; deleting a missing blob is not an error.
    async fn delete(&self, digest: &str) -> Result<(), StoreError>;
    /// Every blob with the time it was written (garbage collection spares recent ones).
    async fn list(&self) -> Result<Vec<(String, SystemTime)>, StoreError>;
    /// One copy shared by every node (an object store): nothing to replicate or repair.
    fn shared(&self) -> bool {
        false
    }
    fn describe(&self) -> String;
}

/// The SHA-256 of `bytes`, lowercase hex: a blob's name.
pub fn digest_of(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

pub use dermagate_domain::is_digest;

fn aad(digest: &str) -> Vec<u8> {
    [b"blob\0".as_slice(), digest.as_bytes()].concat()
}

/// Sealing, verification and the backend together. Blobs on a node's own disk are sealed with
/// the node's data keys; blobs in a shared store with a key derived from the replicated cluster
/// secret, so that every node can open what any node wrote.
pub struct BlobStore {
    backend: Arc<dyn BlobBackend>,
    store: Arc<Store>,
    shared_sealer: std::sync::OnceLock<crate::seal::Sealer>,
}

impl BlobStore {
    pub fn new(store: Arc<Store>, backend: Arc<dyn BlobBackend>) -> BlobStore {
        BlobStore { backend, store, shared_sealer: std::sync::OnceLock::new() }
    }

    fn seal(&self, digest: &str, bytes: &[u8]) -> Result<Vec<u8>, StoreError> {
        Ok(match self.shared_sealer()? {
            Some(sealer) => sealer.seal(&aad(digest), bytes),
            None => self.store.sealer().seal(&aad(digest), bytes),
        })
    }

    fn open(&self, digest: &str, sealed: &[u8]) -> Result<Vec<u8>, StoreError> {
        match self.shared_sealer()? {
            Some(sealer) => sealer.open(&aad(digest), sealed),
            None => self.store.sealer().open(&aad(digest), sealed),
        }
    }

    /// The cluster-wide sealer of a shared backend (`None` for a node-local one).
    fn shared_sealer(&self) -> Result<Option<&crate::seal::Sealer>, StoreError> {
        if !self.backend.shared() {
            return Ok(None);
        }
        if let Some(s) = self.shared_sealer.get() {
            return Ok(Some(s));
        }
        let secret = dermagate_domain::reads::cluster_secret(self.store.as_ref())?
            .ok_or_else(|| StoreError::Keyring("the cluster secret is not replicated yet".into()))?;
        Ok(Some(
            self.shared_sealer.get_or_init(|| crate::seal::Sealer::derived(&secret, "dermagate shared blob key v1")),
        ))
    }

    pub fn backend(&self) -> &dyn BlobBackend {
        self.backend.as_ref()
    }

    pub fn shared(&self) -> bool {
        self.backend.shared()
    }

    /// Stores `bytes` under `digest` after checking that it is their digest.
    pub async fn put(&self, digest: &str, bytes: &[u8]) -> Result<(), StoreError> {
        verify(digest, bytes)?;
        let sealed = self.seal(digest, bytes)?;
        self.backend.put(digest, sealed).await?;
        metrics::counter!("dermagate_blob_writes_total").increment(1);
        Ok(())
    }

    /// The blob's bytes, opened and verified; `None` when this node does not hold it.
    pub async fn get(&self, digest: &str) -> Result<Option<Vec<u8>>, StoreError> {
        if !is_digest(digest) {
            return Err(StoreError::Corrupt(format!("{digest:?} is not a blob digest")));
        }
        let Some(sealed) = self.backend.get(digest).await? else { return Ok(None) };
        let bytes = self.open(digest, &sealed)?;
        verify(digest, &bytes)?;
        Ok(Some(bytes))
    }

    pub async fn contains(&self, digest: &str) -> Result<bool, StoreError> {
        self.backend.contains(digest).await
    }

    pub async fn delete(&self, digest: &str) -> Result<(), StoreError> {
        self.backend.delete(digest).await
    }

    pub async fn list(&self) -> Result<Vec<(String, SystemTime)>, StoreError> {
        self.backend.list().await
    }
}

/// Refuses bytes that do not hash to `digest` (a damaged copy or a lying peer).
pub fn verify(digest: &str, bytes: &[u8]) -> Result<(), StoreError> {
    let actual = digest_of(bytes);
    if actual != digest {
        return Err(StoreError::Corrupt(format!("blob {digest} holds bytes whose digest is {actual}")));
    }
    Ok(())
}

/// Blobs as files under `<data_dir>/blobs/<first two hex digits>/<digest>`, owner-only. A file is
/// written under a temporary name, fsync'd, renamed and its directory fsync'd, so a blob is
/// either wholly there or not at all.
pub struct FileBlobs {
    root: PathBuf,
}

impl FileBlobs {
    pub fn new(data_dir: &Path) -> Result<FileBlobs, StoreError> {
        let root = data_dir.join("blobs");
        create_private_dir(&root)?;
        Ok(FileBlobs { root })
    }

    fn path(&self, digest: &str) -> Result<PathBuf, StoreError> {
        if !is_digest(digest) {
            return Err(StoreError::Corrupt(format!("{digest:?} is not a blob digest")));
        }
        Ok(self.root.join(&digest[..2]).join(digest))
    }
}

fn create_private_dir(dir: &Path) -> Result<(), StoreError> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new().recursive(true).mode(0o700).create(dir)?;
    Ok(())
}

fn write_durably(path: &Path, bytes: &[u8]) -> Result<(), StoreError> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let dir = path.parent().ok_or_else(|| StoreError::Corrupt("blob path without a directory".into()))?;
    create_private_dir(dir)?;
    let tmp = dir.join(format!(
        ".{}.tmp-{}",
        path.file_name().and_then(|n| n.to_str()).unwrap_or("blob"),
        rand::random::<u32>()
    ));
    let result = (|| {
        let mut f = std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)?;
        std::fs::File::open(dir)?.sync_all()
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    Ok(result?)
}

#[async_trait::async_trait]
impl BlobBackend for FileBlobs {
    async fn put(&self, digest: &str, sealed: Vec<u8>) -> Result<(), StoreError> {
        let path = self.path(digest)?;
        tokio::task::spawn_blocking(move || write_durably(&path, &sealed)).await?
    }

    async fn get(&self, digest: &str) -> Result<Option<Vec<u8>>, StoreError> {
        let path = self.path(digest)?;
        tokio::task::spawn_blocking(move || match std::fs::read(&path) {
            Ok(bytes) => Ok(Some(bytes)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e.into()),
        })
        .await?
    }

    async fn contains(&self, digest: &str) -> Result<bool, StoreError> {
        Ok(self.path(digest)?.is_file())
    }

    async fn delete(&self, digest: &str) -> Result<(), StoreError> {
        let path = self.path(digest)?;
        tokio::task::spawn_blocking(move || match std::fs::remove_file(&path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(e.into()),
        })
        .await?
    }

    async fn list(&self) -> Result<Vec<(String, SystemTime)>, StoreError> {
        let root = self.root.clone();
        tokio::task::spawn_blocking(move || {
            let mut out = Vec::new();
            for shard in std::fs::read_dir(&root)? {
                let shard = shard?;
                if !shard.file_type()?.is_dir() {
                    continue;
                }
                for file in std::fs::read_dir(shard.path())? {
                    let file = file?;
                    let name = file.file_name().to_string_lossy().to_string();
                    if is_digest(&name) {
                        out.push((name, file.metadata()?.modified()?));
                    }
                }
            }
            Ok(out)
        })
        .await?
    }

    fn describe(&self) -> String {
        format!("files in {}", self.root.display())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::seal::Kek;

    async fn blob_store(dir: &Path) -> BlobStore {
        let kek = Kek::from_hex(&Kek::generate_hex()).unwrap();
        let store = Store::open(dir, &kek).unwrap();
        BlobStore::new(store, Arc::new(FileBlobs::new(dir).unwrap()))
    }

    #[tokio::test]
    async fn a_blob_round_trips_sealed_and_verified() {
        let dir = tempfile::tempdir().unwrap();
        let blobs = blob_store(dir.path()).await;
        let bytes = b"ZZ-BLOB-MARKER image bytes".repeat(100);
        let digest = digest_of(&bytes);
        blobs.put(&digest, &bytes).await.unwrap();
        assert_eq!(blobs.get(&digest).await.unwrap().unwrap(), bytes);
        assert!(blobs.contains(&digest).await.unwrap());
        // Sealed at rest: the marker is nowhere in the file.
        let on_disk = std::fs::read(dir.path().join("blobs").join(&digest[..2]).join(&digest)).unwrap();
        assert!(!on_disk.windows(15).any(|w| w == b"ZZ-BLOB-MARKER "));
        assert_eq!(blobs.list().await.unwrap().len(), 1);
        blobs.delete(&digest).await.unwrap();
        assert!(blobs.get(&digest).await.unwrap().is_none());
        blobs.delete(&digest).await.unwrap();
    }

    #[tokio::test]
    async fn bytes_that_do_not_match_their_name_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let blobs = blob_store(dir.path()).await;
        let wrong = digest_of(b"something else");
        assert!(blobs.put(&wrong, b"these bytes").await.is_err());
        assert!(blobs.get("../../etc/passwd").await.is_err(), "only digests reach a path");
        // A blob swapped on disk for another sealed blob fails to open (the digest is the AAD).
        let (a, b) = (b"first".to_vec(), b"second".to_vec());
        let (da, db) = (digest_of(&a), digest_of(&b));
        blobs.put(&da, &a).await.unwrap();
        blobs.put(&db, &b).await.unwrap();
        let root = dir.path().join("blobs");
        std::fs::copy(root.join(&db[..2]).join(&db), root.join(&da[..2]).join(&da)).unwrap();
        assert!(blobs.get(&da).await.is_err());
    }
}

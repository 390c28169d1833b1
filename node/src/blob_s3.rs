//! The S3 blob backend (`storage.blobs.backend = "s3"`): image blobs in an S3-compatible bucket
//! shared by every node, through `object_store`. One durable write serves every node, so the
//! quorum store and the repair between nodes are skipped; blobs are sealed with a key derived
//! from the replicated cluster secret, so the bucket holds no plaintext image.

use std::sync::Arc;
use std::time::SystemTime;

use anyhow::Context;
use async_trait::async_trait;
use dermagate_storage::{BlobBackend, StoreError};
use futures::TryStreamExt;
use object_store::aws::{AmazonS3, AmazonS3Builder};
use object_store::path::Path as ObjectPath;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};

use crate::config::S3Config;

pub struct S3Blobs {
    store: Arc<AmazonS3>,
    prefix: String,
    describe: String,
}

impl S3Blobs {
    pub fn new(c: &S3Config) -> anyhow::Result<S3Blobs> {
        let read = |p: &std::path::Path| -> anyhow::Result<String> {
            Ok(std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))?.trim().to_string())
        };
        let mut b = AmazonS3Builder::new()
            .with_bucket_name(&c.bucket)
            .with_region(&c.region)
            .with_access_key_id(read(&c.access_key_id_file)?)
            .with_secret_access_key(read(&c.secret_access_key_file)?)
            .with_allow_http(c.allow_http);
        if let Some(endpoint) = &c.endpoint {
            // S3-compatible stores (MinIO, Ceph, ...) are addressed by path, not virtual host.
            b = b.with_endpoint(endpoint).with_virtual_hosted_style_request(false);
        }
        let store = b.build().context("configuring the S3 blob store")?;
        Ok(S3Blobs {
            store: Arc::new(store),
            prefix: c.prefix.trim_matches('/').to_string(),
            describe: format!("s3 bucket {} ({})", c.bucket, c.endpoint.as_deref().unwrap_or("AWS")),
        })
    }

    fn path(&self, digest: &str) -> ObjectPath {
        if self.prefix.is_empty() {
            ObjectPath::from(digest)
        } else {
            ObjectPath::from(format!("{}/{digest}", self.prefix))
        }
    }
}

fn io(e: object_store::Error) -> StoreError {
    StoreError::Io(std::io::Error::other(e.to_string()))
}

#[async_trait]
impl BlobBackend for S3Blobs {
    async fn put(&self, digest: &str, sealed: Vec<u8>) -> Result<(), StoreError> {
        // S3 acknowledges a PUT once the object is durably stored.
        self.store.put(&self.path(digest), PutPayload::from(sealed)).await.map_err(io)?;
        Ok(())
    }

    async fn get(&self, digest: &str) -> Result<Option<Vec<u8>>, StoreError> {
        match self.store.get(&self.path(digest)).await {
            Ok(r) => Ok(Some(r.bytes().await.map_err(io)?.to_vec())),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(io(e)),
        }
    }

    async fn contains(&self, digest: &str) -> Result<bool, StoreError> {
        match self.store.head(&self.path(digest)).await {
            Ok(_) => Ok(true),
            Err(object_store::Error::NotFound { .. }) => Ok(false),
            Err(e) => Err(io(e)),
        }
    }

    async fn delete(&self, digest: &str) -> Result<(), StoreError> {
        match self.store.delete(&self.path(digest)).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(io(e)),
        }
    }

    async fn list(&self) -> Result<Vec<(String, SystemTime)>, StoreError> {
        let prefix = (!self.prefix.is_empty()).then(|| ObjectPath::from(self.prefix.as_str()));
        let metas: Vec<_> = self.store.list(prefix.as_ref()).try_collect().await.map_err(io)?;
        Ok(metas
            .into_iter()
            .filter_map(|m| {
                let name = m.location.filename()?.to_string();
                dermagate_storage::blobs::is_digest(&name).then(|| (name, SystemTime::from(m.last_modified)))
            })
            .collect())
    }

    fn shared(&self) -> bool {
        true
    }

    fn describe(&self) -> String {
        self.describe.clone()
    }
}

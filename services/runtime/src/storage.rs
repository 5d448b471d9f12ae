//! The storage root: a local folder or an S3-compatible bucket, both behind `object_store`.

use std::sync::Arc;

use object_store::aws::AmazonS3Builder;
use object_store::local::LocalFileSystem;
use object_store::prefix::PrefixStore;
use object_store::ObjectStore;

use crate::config::StorageConfig;

#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error("storage.root {root:?}: {source}")]
    Open {
        root: String,
        source: object_store::Error,
    },
    #[error("storage.root {root:?}: cannot create the folder: {source}")]
    CreateDir {
        root: String,
        source: std::io::Error,
    },
    #[error("storage.root {root:?}: {reason}")]
    Url { root: String, reason: String },
}

/// An opened storage root. Paths given to `store` are relative to the root.
#[derive(Clone, Debug)]
pub struct Storage {
    pub store: Arc<dyn ObjectStore>,
    /// The root as configured, for messages and for printing query examples.
    pub root: String,
    /// The local folder, when the root is local.
    pub local: Option<std::path::PathBuf>,
    /// The root as a URL ending in `/`, and a store that takes that URL's paths: what a
    /// Delta table under the root needs, since its log names files by URL.
    pub by_url: (Arc<dyn ObjectStore>, url::Url),
}

impl Storage {
    /// The URL of `dir` under the root, and the store its URL paths are read from.
    pub fn url_of(&self, dir: &str) -> Result<(Arc<dyn ObjectStore>, url::Url), StorageError> {
        let (store, base) = &self.by_url;
        let url = base
            .join(&format!("{}/", dir.trim_matches('/')))
            .map_err(|e| StorageError::Url {
                root: self.root.clone(),
                reason: e.to_string(),
            })?;
        Ok((store.clone(), url))
    }
}

impl Storage {
    pub fn open(cfg: &StorageConfig) -> Result<Self, StorageError> {
        let root = cfg.root.clone();
        if root.contains("://") && !root.starts_with("file://") {
            let url = url_parse(&root)?;
            if url.scheme() != "s3" {
                return Err(StorageError::Url {
                    root,
                    reason: "only local paths and s3:// URLs are supported".into(),
                });
            }
            // from_env reads the usual AWS_* variables; storage.options override them.
            let mut builder = AmazonS3Builder::from_env().with_url(root.as_str());
            for (k, v) in &cfg.options {
                let key = k.parse().map_err(|source| StorageError::Open {
                    root: root.clone(),
                    source,
                })?;
                builder = builder.with_config(key, v);
            }
            let store = builder.build().map_err(|source| StorageError::Open {
                root: root.clone(),
                source,
            })?;
            let prefix = url.path().trim_matches('/');
            let bucket: Arc<dyn ObjectStore> = Arc::new(store);
            let store: Arc<dyn ObjectStore> = if prefix.is_empty() {
                bucket.clone()
            } else {
                Arc::new(PrefixStore::new(bucket.clone(), prefix))
            };
            let mut base = url.clone();
            if !base.path().ends_with('/') {
                base.set_path(&format!("{}/", base.path()));
            }
            return Ok(Storage {
                store,
                root,
                local: None,
                by_url: (bucket, base),
            });
        }
        let path = std::path::PathBuf::from(root.trim_start_matches("file://"));
        std::fs::create_dir_all(&path).map_err(|source| StorageError::CreateDir {
            root: root.clone(),
            source,
        })?;
        let abs = std::fs::canonicalize(&path).map_err(|source| StorageError::CreateDir {
            root: root.clone(),
            source,
        })?;
        let store = LocalFileSystem::new_with_prefix(&abs)
            .map_err(|source| StorageError::Open {
                root: root.clone(),
                source,
            })?
            .with_fsync(cfg.fsync);
        let base = url::Url::from_directory_path(&abs).map_err(|()| StorageError::Url {
            root: root.clone(),
            reason: format!("{} is not an absolute path", abs.display()),
        })?;
        let by_path: Arc<dyn ObjectStore> = Arc::new(LocalFileSystem::new().with_fsync(cfg.fsync));
        Ok(Storage {
            store: Arc::new(store),
            root,
            local: Some(abs),
            by_url: (by_path, base),
        })
    }
}

fn url_parse(root: &str) -> Result<url::Url, StorageError> {
    url::Url::parse(root).map_err(|e| StorageError::Url {
        root: root.to_owned(),
        reason: e.to_string(),
    })
}

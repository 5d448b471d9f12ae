//! A startup check that the object store honours create-if-absent puts.
//!
//! Every commit sohoa makes is a put that must fail when the object already exists: that is
//! what stops two writers that both believe they own a partition from both committing.
//! Some S3-compatible stores accept the `If-None-Match: *` header and overwrite anyway. On
//! such a store the fencing would be lost without a sound, so a writer refuses to start.

use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload};

#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    #[error(
        "storage.root: the object store overwrote {path} on a create-if-absent put. Commits \
         rely on such puts failing to fence two writers of one partition, so sohoa will not \
         write here. Use a store with conditional writes (S3, MinIO, a local folder; for \
         other S3-compatible stores, check that they honour If-None-Match)"
    )]
    Ignored { path: String },
    #[error("storage.root: probing conditional puts at {path}: {source}")]
    Store {
        path: String,
        source: object_store::Error,
    },
}

/// Creates `dir/<unique name>` twice, expecting the second create to fail, then deletes it.
pub async fn check_conditional_put(store: &dyn ObjectStore, dir: &Path) -> Result<(), ProbeError> {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    let path = dir
        .clone()
        .join(format!("conditional-put-{}-{nanos}", std::process::id()));
    let create = || PutOptions {
        mode: PutMode::Create,
        ..Default::default()
    };
    let store_err = |source| ProbeError::Store {
        path: path.to_string(),
        source,
    };
    store
        .put_opts(&path, PutPayload::from_static(b"first"), create())
        .await
        .map_err(store_err)?;
    let second = store
        .put_opts(&path, PutPayload::from_static(b"second"), create())
        .await;
    // Best effort: a probe object left behind is harmless, and the verdict matters more.
    let _ = store.delete(&path).await;
    match second {
        Err(object_store::Error::AlreadyExists { .. }) => Ok(()),
        Ok(_) => Err(ProbeError::Ignored {
            path: path.to_string(),
        }),
        Err(e) => Err(store_err(e)),
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use async_trait::async_trait;
    use futures::stream::BoxStream;
    use object_store::memory::InMemory;
    use object_store::{
        CopyOptions, GetOptions, GetResult, ListResult, MultipartUpload, ObjectMeta,
        PutMultipartOptions, PutResult,
    };

    use super::*;

    /// A fake: no store reachable here ignores conditional puts, so this one turns every
    /// create into an overwrite, as such stores do.
    #[derive(Debug)]
    struct Careless(InMemory);

    impl std::fmt::Display for Careless {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            write!(f, "Careless({})", self.0)
        }
    }

    #[async_trait]
    impl ObjectStore for Careless {
        async fn put_opts(
            &self,
            location: &Path,
            payload: PutPayload,
            mut opts: PutOptions,
        ) -> object_store::Result<PutResult> {
            opts.mode = PutMode::Overwrite;
            self.0.put_opts(location, payload, opts).await
        }
        async fn put_multipart_opts(
            &self,
            location: &Path,
            opts: PutMultipartOptions,
        ) -> object_store::Result<Box<dyn MultipartUpload>> {
            self.0.put_multipart_opts(location, opts).await
        }
        async fn get_opts(
            &self,
            location: &Path,
            options: GetOptions,
        ) -> object_store::Result<GetResult> {
            self.0.get_opts(location, options).await
        }
        fn delete_stream(
            &self,
            locations: BoxStream<'static, object_store::Result<Path>>,
        ) -> BoxStream<'static, object_store::Result<Path>> {
            self.0.delete_stream(locations)
        }
        fn list(
            &self,
            prefix: Option<&Path>,
        ) -> BoxStream<'static, object_store::Result<ObjectMeta>> {
            self.0.list(prefix)
        }
        async fn list_with_delimiter(
            &self,
            prefix: Option<&Path>,
        ) -> object_store::Result<ListResult> {
            self.0.list_with_delimiter(prefix).await
        }
        async fn copy_opts(
            &self,
            from: &Path,
            to: &Path,
            options: CopyOptions,
        ) -> object_store::Result<()> {
            self.0.copy_opts(from, to, options).await
        }
    }

    #[tokio::test]
    async fn a_store_that_honours_creates_passes_and_keeps_nothing() {
        let store = Arc::new(InMemory::new());
        let dir = Path::from("_sohoa/probes");
        check_conditional_put(store.as_ref(), &dir).await.unwrap();
        let left: Vec<_> = futures::TryStreamExt::try_collect::<Vec<_>>(store.list(Some(&dir)))
            .await
            .unwrap();
        assert!(left.is_empty(), "{left:?}");
    }

    #[tokio::test]
    async fn a_store_that_overwrites_on_create_is_refused_with_the_reason() {
        let store = Careless(InMemory::new());
        let e = check_conditional_put(&store, &Path::from("_sohoa/probes"))
            .await
            .unwrap_err();
        assert!(matches!(e, ProbeError::Ignored { .. }), "{e}");
        let msg = e.to_string();
        assert!(
            msg.contains("storage.root") && msg.contains("If-None-Match"),
            "{msg}"
        );
    }

    #[tokio::test]
    async fn a_local_folder_passes() {
        let dir = tempfile::tempdir().unwrap();
        let store = object_store::local::LocalFileSystem::new_with_prefix(dir.path()).unwrap();
        check_conditional_put(&store, &Path::from("_sohoa/probes"))
            .await
            .unwrap();
    }
}

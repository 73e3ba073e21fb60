//! The layer sink: the one way bytes become a stored layer object (invariant 1). Every writer —
//! a mount's syncs, `import`, `merge` and gc's images — writes its layer through it:
//!
//! 1. [`LayerSink::begin`]: a temporary file in the data directory's `tmp/`, written through a
//!    [`LayerWriter`] (extents, then the footer index and trailer);
//! 2. [`LayerSink::store`]: the file is handed to the object store, which makes it durable (the
//!    local store fsyncs it and links it into place; S3 uploads it) — nothing here fsyncs twice;
//! 3. the result is a [`LayerRow`] for the one catalog transaction that references the object,
//!    which the caller makes (an object whose transaction never happens is an orphan gc removes).

use super::{layer_key, now_millis, WritebackFile};
use crate::catalog::LayerRow;
use crate::error::{Error, Result};
use crate::layer::{LayerIndex, LayerKind, LayerWriter};
use crate::store::DynStore;
use crate::tmpfiles::TempFile;
use std::io::BufWriter;
use std::path::PathBuf;

/// A layer object stored and ready to be registered.
pub struct StoredLayer {
    pub row: LayerRow,
    pub index: LayerIndex,
}

/// Writes layer objects into the store.
pub struct LayerSink {
    store: DynStore,
    tmp_dir: PathBuf,
}

/// A layer being written: its temporary file (named by this process and locked, so a killed
/// command's leftovers are swept: `crate::tmpfiles`) and writer. Dropping it removes the file.
pub struct SinkFile {
    id: String,
    temp: TempFile,
    writer: Option<LayerWriter<BufWriter<WritebackFile>>>,
}

impl SinkFile {
    /// The layer's writer: `begin_file`, `add_extent`, … in file and offset order.
    pub fn writer(&mut self) -> &mut LayerWriter<BufWriter<WritebackFile>> {
        // Present until `LayerSink::store` consumes the file.
        self.writer
            .as_mut()
            .expect("a SinkFile's writer is present until stored")
    }
}

impl LayerSink {
    pub fn new(store: DynStore, tmp_dir: PathBuf) -> LayerSink {
        LayerSink { store, tmp_dir }
    }

    /// Starts a layer of `kind` with id `id` (from the writer's session:
    /// `SessionHandle::layer_id`) in a new temporary file.
    pub fn begin(&self, kind: LayerKind, id: String) -> Result<SinkFile> {
        let (temp, f) = TempFile::create(&self.tmp_dir, "layer-", ".tmp")?;
        let writer = LayerWriter::new(
            BufWriter::with_capacity(1 << 20, WritebackFile::new(f)),
            kind,
        );
        Ok(SinkFile {
            id,
            temp,
            writer: Some(writer),
        })
    }

    /// Finishes the layer and stores it; `repo_id` owns it in the catalog.
    pub async fn store(&self, mut file: SinkFile, repo_id: i64) -> Result<StoredLayer> {
        let writer = file
            .writer
            .take()
            .ok_or_else(|| Error::Invalid("layer already stored".into()))?;
        let kind = writer.kind();
        let path = file.temp.path().to_path_buf();
        let at = path.clone();
        let (index, len) = tokio::task::spawn_blocking(move || -> Result<(LayerIndex, u64)> {
            let (buffered, index, len) = writer.finish()?;
            // Flushed into the page cache; the store makes it durable.
            buffered
                .into_inner()
                .map_err(|e| Error::file(&at, e.into_error()))?;
            Ok((index, len))
        })
        .await
        .map_err(|e| Error::Invalid(format!("writing a layer failed: {e}")))??;
        let key = layer_key(&file.id);
        self.store.put_file(&key, &path).await?;
        let SinkFile { id, temp, .. } = file;
        // Handed over to the store (moved into it, or copied and removed).
        temp.keep();
        let now = now_millis();
        Ok(StoredLayer {
            row: LayerRow {
                id,
                repo_id,
                commit_id: None,
                seq: 0,
                kind,
                object_key: key,
                size_bytes: len as i64,
                min_time: now,
                max_time: now,
                created_at: now,
            },
            index,
        })
    }

    /// Writes a whole layer with `fill` on a blocking thread, then stores it.
    pub async fn write<F>(
        &self,
        repo_id: i64,
        kind: LayerKind,
        id: String,
        fill: F,
    ) -> Result<StoredLayer>
    where
        F: FnOnce(&mut LayerWriter<BufWriter<WritebackFile>>) -> Result<()> + Send + 'static,
    {
        let mut file = self.begin(kind, id)?;
        let file = tokio::task::spawn_blocking(move || -> Result<SinkFile> {
            fill(file.writer())?;
            Ok(file)
        })
        .await
        .map_err(|e| Error::Invalid(format!("writing a layer failed: {e}")))??;
        self.store(file, repo_id).await
    }
}

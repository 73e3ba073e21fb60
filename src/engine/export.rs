//! `export`: write every file of a commit into a directory, byte-identical to what a mount of the
//! commit shows. Each file is written to a temporary name, synced, then renamed into place, so an
//! interrupted export never leaves a half-written file under the real name.

use super::view::{verify_run, BulkChunk, ReadView};
use crate::error::{Error, Result};
use crate::store::local::MappedObject;
use crate::tmpfiles::TempFile;
use indicatif::ProgressBar;
use std::collections::HashMap;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Where one file went.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ExportedFile {
    pub name: String,
    pub path: PathBuf,
    pub size: u64,
}

/// Writes the files of `view` into `dir` (created if missing). Existing files are refused unless
/// `force` is set; the check happens before anything is written.
pub async fn export(
    view: &ReadView,
    dir: &Path,
    force: bool,
    progress: &ProgressBar,
) -> Result<Vec<ExportedFile>> {
    if dir.exists() && !dir.is_dir() {
        return Err(Error::Invalid(format!(
            "{}: not a directory",
            dir.display()
        )));
    }
    std::fs::create_dir_all(dir).map_err(|e| Error::file(dir, e))?;
    // Half-written files of exports that were killed (never those of running ones).
    crate::tmpfiles::sweep(dir, |n| n.starts_with('.') && n.contains(EXPORT_TEMP));
    if !force {
        if let Some(f) = view.files.keys().map(|n| dir.join(n)).find(|p| p.exists()) {
            return Err(Error::TargetExists(f.display().to_string()));
        }
    }
    progress.set_length(view.logical_size());
    let mut out = Vec::new();
    for file in view.files.values() {
        let target = dir.join(&file.path);
        // Removed by the guard if this fails or the command is interrupted.
        let (guard, f) = TempFile::create(dir, &format!(".{}{EXPORT_TEMP}", file.path), "")?;
        write_file(view, file, f, guard.path(), progress).await?;
        std::fs::rename(guard.path(), &target).map_err(|e| Error::file(&target, e))?;
        guard.keep();
        out.push(ExportedFile {
            name: file.path.clone(),
            path: target,
            size: file.size,
        });
    }
    if let Ok(d) = std::fs::File::open(dir) {
        let _ = d.sync_all();
    }
    Ok(out)
}

/// Marks the temporary name of a file being exported: `.NAME.quackfs-export-PID-ID`.
const EXPORT_TEMP: &str = ".quackfs-export-";

async fn write_file(
    view: &ReadView,
    file: &super::view::FileView,
    f: std::fs::File,
    tmp: &Path,
    progress: &ProgressBar,
) -> Result<()> {
    // Holes stay holes: only covered ranges are written.
    f.set_len(file.size).map_err(|e| Error::file(tmp, e))?;
    let f = Arc::new(f);
    // On the local store, runs are written straight from the mapped layer object (checked first),
    // one copy like `cp`; elsewhere they are fetched into a buffer. Fetching and checking the
    // next chunk overlaps writing the previous one.
    let local = view.store().as_local();
    let mut maps: HashMap<u32, Arc<MappedObject>> = HashMap::new();
    let mut spare = Vec::new();
    let mut writing: Option<tokio::task::JoinHandle<std::io::Result<Option<Vec<u8>>>>> = None;
    let (mut covered, mut kicked) = (0u64, 0u64);
    for chunk in view.bulk_chunks(file, 0, file.size) {
        // Layers kept in the catalog (`inline/…`) are not files of the local store.
        let mappable = match &chunk {
            BulkChunk::Run { layer, .. } => local.filter(|_| {
                view.layer_key(*layer)
                    .is_ok_and(|k| !k.starts_with(crate::catalog::INLINE_PREFIX))
            }),
            _ => None,
        };
        let data = match (&chunk, mappable) {
            (
                BulkChunk::Run {
                    layer,
                    obj_off,
                    len,
                    parts,
                },
                Some(local),
            ) => {
                let key = view.layer_key(*layer)?;
                let map = match maps.get(layer) {
                    Some(m) => m.clone(),
                    None => {
                        let m = Arc::new(local.map(key)?);
                        maps.insert(*layer, m.clone());
                        m
                    }
                };
                let from = usize::try_from(*obj_off).unwrap_or(usize::MAX);
                let run = from
                    .checked_add(*len as usize)
                    .and_then(|end| map.bytes().get(from..end))
                    .ok_or_else(|| {
                        Error::Corrupt(format!("layer object {key}: shorter than its index says"))
                    })?;
                verify_run(key, *obj_off, parts, run)?;
                Data::Mapped(map, from)
            }
            _ => Data::Buf(view.fetch_chunk(&chunk, std::mem::take(&mut spare)).await?),
        };
        if let Some(w) = writing.take() {
            spare = join_write(w, tmp).await?.unwrap_or_default();
        }
        let (f2, placements) = (f.clone(), chunk.placements());
        let kick = covered + chunk.byte_len() - kicked >= WRITEBACK_EVERY;
        writing = Some(tokio::task::spawn_blocking(move || {
            let bytes = data.bytes();
            for (off, from, len) in placements {
                f2.write_all_at(&bytes[from..from + len], off)?;
            }
            if kick {
                super::start_writeback(&f2, 0, 0);
            }
            Ok(data.into_buf())
        }));
        covered += chunk.byte_len();
        if kick {
            kicked = covered;
        }
        progress.inc(chunk.byte_len());
    }
    if let Some(w) = writing.take() {
        join_write(w, tmp).await?;
    }
    progress.inc(file.size.saturating_sub(covered));
    f.sync_all().map_err(|e| Error::file(tmp, e))?;
    Ok(())
}

/// The bytes of one chunk on their way to the writer.
enum Data {
    Buf(Vec<u8>),
    /// A mapped layer object and where the chunk starts in it.
    Mapped(Arc<MappedObject>, usize),
}

impl Data {
    fn bytes(&self) -> &[u8] {
        match self {
            Data::Buf(b) => b,
            Data::Mapped(m, from) => &m.bytes()[*from..],
        }
    }

    /// The buffer back, for reuse.
    fn into_buf(self) -> Option<Vec<u8>> {
        match self {
            Data::Buf(b) => Some(b),
            Data::Mapped(..) => None,
        }
    }
}

/// Bytes written between two requests to start writeback (so the final fsync is short).
const WRITEBACK_EVERY: u64 = 16 * 1024 * 1024;

async fn join_write(
    w: tokio::task::JoinHandle<std::io::Result<Option<Vec<u8>>>>,
    tmp: &Path,
) -> Result<Option<Vec<u8>>> {
    match w.await {
        Ok(r) => r.map_err(|e| Error::file(tmp, e)),
        Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
        Err(e) => Err(Error::file(
            tmp,
            std::io::Error::other(format!("writer task cancelled: {e}")),
        )),
    }
}

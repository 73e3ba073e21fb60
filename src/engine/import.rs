//! `import`: commit local files onto a branch, storing only the byte ranges that differ from the
//! branch head (compared page by page), so re-importing a large database after a small change
//! stores kilobytes.

use super::{new_file_id, new_id, now_millis, Engine};
use crate::catalog::{CommitKind, CommitRequest, FileRow, NewCommit, Repo};
use crate::error::{Error, Result};
use crate::layer::LayerKind;
use crate::names::validate_file_name;
use indicatif::ProgressBar;
use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};

/// Granularity of change detection: a page that differs is stored whole.
pub const PAGE: usize = 4096;
/// How much of a file is compared at a time.
const CHUNK: usize = 1024 * 1024;

/// What an import did to one file.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ImportedFile {
    pub name: String,
    pub size: u64,
    pub changed_bytes: u64,
    pub changed_ranges: u64,
}

/// The result of an import.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ImportOutcome {
    /// The new commit, or None if every file was identical to the branch head.
    pub commit: Option<crate::catalog::Commit>,
    pub files: Vec<ImportedFile>,
    /// WAL files of the branch head that belonged to an imported database file and are gone in
    /// the new commit (DuckDB would replay them onto a database they were not written for).
    pub removed: Vec<String>,
    pub stored_bytes: u64,
}

/// A database file imported without its WAL must not have one beside it: the WAL holds committed
/// transactions the file does not (import it too, or checkpoint first).
fn check_local_wals(inputs: &[(String, PathBuf, u64)]) -> Result<()> {
    for (name, path, _) in inputs {
        for suffix in super::duckdb_file::WAL_SUFFIXES {
            let wal_name = format!("{name}{suffix}");
            if inputs.iter().any(|(n, _, _)| *n == wal_name) {
                continue;
            }
            let mut wal = path.as_os_str().to_owned();
            wal.push(suffix);
            let wal = PathBuf::from(wal);
            if std::fs::metadata(&wal).is_ok_and(|m| m.len() > 0) {
                return Err(Error::Invalid(format!(
                    "{} holds transactions that are not in {} yet: import both (`quackfs import {} {}`), or checkpoint the database first (`duckdb {} -c CHECKPOINT`)",
                    wal.display(),
                    path.display(),
                    path.display(),
                    wal.display(),
                    path.display()
                )));
            }
        }
    }
    Ok(())
}

/// Checks the files to import as [`Engine::import`] does before it reads anything: each is a
/// regular file with a valid, unique name, and no database among them leaves a WAL behind.
pub fn check_import(paths: &[PathBuf]) -> Result<()> {
    check_local_wals(&check_inputs(paths)?)
}

/// Checks the files to import and returns (name, path, size) for each.
fn check_inputs(paths: &[PathBuf]) -> Result<Vec<(String, PathBuf, u64)>> {
    if paths.is_empty() {
        return Err(Error::Invalid("no files to import".into()));
    }
    let mut seen = BTreeMap::new();
    for p in paths {
        let meta = std::fs::metadata(p).map_err(|e| Error::file(p, e))?;
        if !meta.is_file() {
            return Err(Error::Invalid(format!(
                "{}: not a regular file",
                p.display()
            )));
        }
        let name = p
            .file_name()
            .and_then(|n| n.to_str())
            .ok_or_else(|| {
                Error::Invalid(format!("{}: the file name is not valid UTF-8", p.display()))
            })?
            .to_string();
        validate_file_name(&name)?;
        if seen.insert(name.clone(), (p.clone(), meta.len())).is_some() {
            return Err(Error::Usage {
                message: format!("two files to import are both called {name:?}"),
                hint: "files are stored by their base name: import them into different \
                       databases or branches, or rename one"
                    .into(),
            });
        }
    }
    Ok(seen.into_iter().map(|(n, (p, s))| (n, p, s)).collect())
}

/// How many bytes [`prefetch`] asks the kernel to read ahead, in all.
const PREFETCH: u64 = 64 * 1024 * 1024;

/// Asks the kernel to start reading the first bytes to import (the first [`PREFETCH`] bytes, in
/// the order the import reads its files: by base name), on a thread of its own, and returns at
/// once. A command calls it before it opens the catalog, so the disk reads while the catalog
/// opens (on a cold page cache, tens of milliseconds of a large import); the import's own
/// sequential reading takes over from there. Best effort: a file that cannot be opened is left
/// to the import's own checks.
pub fn prefetch(paths: &[PathBuf]) {
    let mut paths = paths.to_vec();
    paths.sort_by(|a, b| a.file_name().cmp(&b.file_name()));
    let _ = std::thread::Builder::new()
        .name("import-prefetch".into())
        .spawn(move || {
            let mut budget = PREFETCH;
            for p in paths {
                // Only regular files: opening a FIFO or a device can block or have effects.
                let Some(len) = std::fs::metadata(&p)
                    .ok()
                    .filter(|m| m.is_file() && m.len() > 0)
                    .map(|m| m.len())
                else {
                    continue;
                };
                if let Ok(f) = std::fs::File::open(&p) {
                    // (Not empty: a length of 0 would mean "to the end of the file".)
                    advise(&f, 0, budget.min(len), libc::POSIX_FADV_WILLNEED);
                }
                budget = budget.saturating_sub(len);
                if budget == 0 {
                    return;
                }
            }
        });
}

/// `posix_fadvise` on `[off, off+len)` of `f` (a hint: errors are ignored).
fn advise(f: &std::fs::File, off: u64, len: u64, advice: libc::c_int) {
    use std::os::fd::AsRawFd;
    // SAFETY: a valid open fd; posix_fadvise only gives the kernel a hint about the file.
    unsafe {
        libc::posix_fadvise(f.as_raw_fd(), off as i64, len as i64, advice);
    }
}

/// Reads as much as possible into `buf` (short only at end of file).
fn read_full(f: &mut std::fs::File, buf: &mut [u8], path: &Path) -> Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match f.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(Error::file(path, e)),
        }
    }
    Ok(n)
}

/// Reads a file chunk by chunk on its own thread, one chunk ahead of the consumer, so reading the
/// source overlaps comparing and writing the layer. Buffers go back through [`ReadAhead::recycle`].
struct ReadAhead {
    chunks: tokio::sync::mpsc::Receiver<Result<Vec<u8>>>,
    spare: std::sync::mpsc::Sender<Vec<u8>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl ReadAhead {
    fn start(mut src: std::fs::File, path: PathBuf) -> ReadAhead {
        // Read front to back: the kernel reads further ahead.
        advise(&src, 0, 0, libc::POSIX_FADV_SEQUENTIAL);
        let (tx, chunks) = tokio::sync::mpsc::channel(2);
        let (spare, spares) = std::sync::mpsc::channel::<Vec<u8>>();
        let thread = std::thread::spawn(move || loop {
            let mut buf = spares.try_recv().unwrap_or_default();
            buf.resize(CHUNK, 0);
            let msg = read_full(&mut src, &mut buf, &path).map(|n| {
                buf.truncate(n);
                buf
            });
            let last = !matches!(&msg, Ok(b) if !b.is_empty());
            if tx.blocking_send(msg).is_err() || last {
                return;
            }
        });
        ReadAhead {
            chunks,
            spare,
            thread: Some(thread),
        }
    }

    /// The next chunk; empty at end of file.
    async fn next(&mut self) -> Result<Vec<u8>> {
        self.chunks.recv().await.unwrap_or_else(|| Ok(Vec::new()))
    }

    fn recycle(&self, buf: Vec<u8>) {
        let _ = self.spare.send(buf);
    }
}

impl Drop for ReadAhead {
    fn drop(&mut self) {
        // Closing the channel stops the thread at its next send.
        self.chunks.close();
        while self.chunks.try_recv().is_ok() {}
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// How an import is recorded (the default: an `import` commit on the branch's head).
#[derive(Debug, Clone, Default)]
pub struct ImportAs {
    /// The commit's kind [default: import].
    pub kind: Option<CommitKind>,
    /// Refuse unless the branch still points here.
    pub expected_head: Option<String>,
    /// The commit's second parent.
    pub merge_parent: Option<String>,
    /// Files the commit no longer has, each with its WALs (`apply` of a source that removed a
    /// database). With these, `paths` may be empty.
    pub remove: Vec<String>,
}

impl Engine {
    /// Imports `paths` (each stored under its base name) onto `branch` as one commit.
    pub async fn import(
        &self,
        repo: &Repo,
        branch: &str,
        paths: &[PathBuf],
        message: Option<&str>,
        progress: &ProgressBar,
    ) -> Result<ImportOutcome> {
        self.import_as(repo, branch, paths, message, progress, &ImportAs::default())
            .await
    }

    /// [`import`](Self::import), recorded as `how` says (a merge commit of `apply`).
    pub async fn import_as(
        &self,
        repo: &Repo,
        branch: &str,
        paths: &[PathBuf],
        message: Option<&str>,
        progress: &ProgressBar,
        how: &ImportAs,
    ) -> Result<ImportOutcome> {
        // (A merge may bring no file: a database removed on both sides.)
        let inputs = if paths.is_empty() && (!how.remove.is_empty() || how.merge_parent.is_some()) {
            Vec::new()
        } else {
            check_inputs(paths)?
        };
        check_local_wals(&inputs)?;
        let head = self.branch_head(repo, branch).await?;
        if let Some(expected) = &how.expected_head {
            if *expected != head.id {
                return Err(Error::Conflict(format!(
                    "branch {branch:?} moved meanwhile (it no longer points at {})",
                    super::short(expected)
                )));
            }
        }
        // Fail before reading anything if the branch has a writer or uncommitted changes (the
        // commit's own transaction checks again).
        self.unless_dead_writer(repo.id, || self.catalog.check_branch_free(repo.id, branch))
            .await?;
        let view = self.view(&head).await?;

        // The layer is this import's session's until the commit names it (gc leaves it alone).
        let session = self.open_session(repo.id, "import").await?;
        let r = self
            .import_in(
                &session, repo, branch, &inputs, &head, &view, message, progress, how,
            )
            .await;
        session.close().await;
        r
    }

    #[allow(clippy::too_many_arguments)]
    async fn import_in(
        &self,
        session: &super::session::SessionHandle,
        repo: &Repo,
        branch: &str,
        inputs: &[(String, PathBuf, u64)],
        head: &crate::catalog::Commit,
        view: &super::view::ReadView,
        message: Option<&str>,
        progress: &ProgressBar,
        how: &ImportAs,
    ) -> Result<ImportOutcome> {
        let mut files: BTreeMap<String, FileRow> = self
            .catalog
            .commit_files(&head.id)
            .await?
            .into_iter()
            .map(|f| (f.path.clone(), f))
            .collect();
        let mut out = self.sink().begin(LayerKind::Delta, session.layer_id())?;
        let writer = out.writer();

        progress.set_length(inputs.iter().map(|(_, _, s)| *s).sum());
        let mut report = Vec::new();
        let mut any_change = false;
        let mut old_buf = vec![0u8; CHUNK];
        let zeros = vec![0u8; CHUNK];
        let mut scratch = Vec::new();
        for (name, path, _) in inputs {
            let src = std::fs::File::open(path).map_err(|e| Error::file(path, e))?;
            let size = src.metadata().map_err(|e| Error::file(path, e))?.len();
            let mut reader = ReadAhead::start(src, path.clone());
            let old = view.file(name);
            let file_id = old.map(|f| f.file_id).unwrap_or_else(new_file_id);
            let old_size = old.map(|f| f.size);
            let truncate_to = old_size.filter(|&s| size < s).map(|_| size);
            let mut begun = false;
            let (mut changed_bytes, mut changed_ranges) = (0u64, 0u64);
            let mut off = 0u64;
            loop {
                let new_buf = reader.next().await?;
                let n = new_buf.len();
                if n == 0 {
                    break;
                }
                if off + n as u64 > size {
                    // /proc and /sys files report size 0 (or a guess) and then have content.
                    return Err(Error::Invalid(format!(
                        "{}: it holds more than the {size} bytes its size says: it grew while it was imported, or it is not a regular file of fixed size (like the files under /proc)",
                        path.display()
                    )));
                }
                let old_buf: &[u8] = match old {
                    Some(f) => {
                        view.read_bulk(f, off, &mut old_buf[..n], &mut scratch)
                            .await?;
                        &old_buf[..n]
                    }
                    // A new file is compared with zeros: pages of zeros stay holes.
                    None => &zeros[..n],
                };
                // Runs of differing pages become extents.
                let mut page = 0;
                while page < n {
                    let end = (page + PAGE).min(n);
                    if new_buf[page..end] == old_buf[page..end] {
                        page = end;
                        continue;
                    }
                    let run_start = page;
                    let mut run_end = end;
                    while run_end < n {
                        let e = (run_end + PAGE).min(n);
                        if new_buf[run_end..e] == old_buf[run_end..e] {
                            break;
                        }
                        run_end = e;
                    }
                    if !begun {
                        writer.begin_file(file_id, truncate_to, size)?;
                        begun = true;
                    }
                    writer.add_extent(off + run_start as u64, &new_buf[run_start..run_end])?;
                    changed_bytes += (run_end - run_start) as u64;
                    changed_ranges += 1;
                    page = run_end;
                }
                off += n as u64;
                progress.inc(n as u64);
                reader.recycle(new_buf);
            }
            if off != size {
                return Err(Error::Invalid(format!(
                    "{}: the file changed size while it was imported",
                    path.display()
                )));
            }
            if !begun && old_size != Some(size) {
                writer.begin_file(file_id, truncate_to, size)?;
                begun = true;
            }
            any_change |= begun;
            files.insert(
                name.clone(),
                FileRow {
                    path: name.clone(),
                    file_id: file_id as i64,
                    size: size as i64,
                },
            );
            report.push(ImportedFile {
                name: name.clone(),
                size,
                changed_bytes,
                changed_ranges,
            });
        }
        // The head's WALs of an imported database file belong to the database it replaces.
        let mut removed = Vec::new();
        for (name, _, _) in inputs {
            for suffix in super::duckdb_file::WAL_SUFFIXES {
                let wal = format!("{name}{suffix}");
                if !inputs.iter().any(|(n, _, _)| *n == wal) && files.remove(&wal).is_some() {
                    removed.push(wal);
                }
            }
        }
        // Nothing written: no layer (a commit that only removes files).
        let wrote = any_change;
        for name in &how.remove {
            let wals = super::duckdb_file::WAL_SUFFIXES
                .iter()
                .map(|suffix| format!("{name}{suffix}"));
            for n in std::iter::once(name.clone()).chain(wals) {
                if files.remove(&n).is_some() {
                    removed.push(n);
                }
            }
        }
        any_change |= !removed.is_empty();
        if !any_change {
            return Ok(ImportOutcome {
                commit: None,
                files: report,
                removed,
                stored_bytes: 0,
            });
        }
        // Invariant 1: the object is stored before the catalog references it.
        let (layers, object_len) = if wrote {
            let stored = self.sink().store(out, repo.id).await?;
            let len = stored.row.size_bytes as u64;
            (vec![stored.row], len)
        } else {
            (Vec::new(), 0)
        };
        let now = now_millis();
        let message = message.map(str::to_string).unwrap_or_else(|| {
            let names: Vec<&str> = inputs.iter().map(|(n, _, _)| n.as_str()).collect();
            format!("import {}", names.join(", "))
        });
        let req = CommitRequest {
            repo_id: repo.id,
            branch: branch.to_string(),
            expected_head: head.id.clone(),
            commit: NewCommit {
                id: new_id(),
                kind: how.kind.unwrap_or(CommitKind::Import),
                message: message.clone(),
                author: self.author.clone(),
                time: now,
                merge_parent: how.merge_parent.clone(),
            },
            files: files.into_values().collect(),
            layers,
            reason: format!(
                "{}: {message}",
                how.kind.unwrap_or(CommitKind::Import).as_str()
            ),
        };
        let commit = self
            .unless_dead_writer(repo.id, || self.catalog.make_commit(req.clone()))
            .await?;
        Ok(ImportOutcome {
            commit: Some(commit),
            files: report,
            removed,
            stored_bytes: object_len,
        })
    }
}

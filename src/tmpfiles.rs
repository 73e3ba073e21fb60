//! Temporary files that say whose they are: `{prefix}{pid}-{id}{suffix}`, created exclusively and
//! locked (`flock`) by their owner. A command removes its own when it fails or is interrupted
//! (the [`TempFile`] guard), and [`sweep`] removes the leftovers of processes that were killed:
//! a file (or a directory named the same way) whose owner no longer runs and whose lock is free.
//! The file of a process that still runs is never touched. Files named by earlier versions (no
//! pid) go once a day old.

use crate::error::{Error, Result};
use std::fs::File;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

/// Leftovers named by earlier versions (no owner in the name) older than this are removed.
pub const LEGACY_AGE: Duration = Duration::from_secs(24 * 3600);

/// Writes `contents` to `path` so that a reader sees the old file or the whole new one, never a
/// part: into `PATH.tmp` first, then renamed over `path`.
pub fn write_whole(path: &Path, contents: impl AsRef<[u8]>) -> std::io::Result<()> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    std::fs::write(&tmp, contents)?;
    std::fs::rename(&tmp, path)
}

/// A temporary file removed when dropped, unless [`keep`](TempFile::keep) says it was handed
/// over (moved into the store, renamed into place).
#[derive(Debug)]
pub struct TempFile {
    path: Option<PathBuf>,
}

impl TempFile {
    /// Creates `dir/{prefix}{pid}-{random id}{suffix}` (never an existing file) and locks it for
    /// as long as the returned file is open.
    pub fn create(dir: &Path, prefix: &str, suffix: &str) -> Result<(TempFile, File)> {
        let name = format!(
            "{prefix}{}-{}{suffix}",
            std::process::id(),
            crate::engine::new_id()
        );
        let path = dir.join(name);
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&path)
            .map_err(|e| Error::file(&path, e))?;
        // SAFETY: flock on a file descriptor we own; failure only weakens the sweep's check.
        unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
        Ok((TempFile { path: Some(path) }, file))
    }

    pub fn path(&self) -> &Path {
        self.path.as_deref().unwrap_or(Path::new(""))
    }

    /// The file is no longer this guard's to remove.
    pub fn keep(mut self) {
        self.path = None;
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        if let Some(p) = self.path.take() {
            let _ = std::fs::remove_file(p);
        }
    }
}

/// Who made a temporary file: `Some(Some(pid))` for `…-{pid}-{32 hex}{suffix}`, `Some(None)` for
/// an earlier version's `…-{32 hex}{suffix}`, `None` for a name that is not a temporary file.
pub fn owner(name: &str) -> Option<Option<i32>> {
    let (rest, last) = name.rsplit_once('-')?;
    let id = last.get(..32)?;
    let suffix = &last[32..];
    if !id.bytes().all(|b| b.is_ascii_hexdigit()) || !(suffix.is_empty() || suffix.starts_with('.'))
    {
        return None;
    }
    let pid = rest
        .rsplit_once('-')
        .map(|(_, p)| p)
        .filter(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()))
        .and_then(|p| p.parse::<i32>().ok());
    Some(pid)
}

/// Whether `path` may go: its owner no longer runs (or, named by an earlier version, it is older
/// than [`LEGACY_AGE`]), and nobody holds its lock.
pub fn is_leftover(path: &Path, owner: Option<i32>) -> bool {
    match owner {
        Some(pid) if crate::process::is_running(pid) => return false,
        Some(_) => {}
        None => {
            let old = std::fs::metadata(path)
                .and_then(|m| m.modified())
                .ok()
                .and_then(|t| SystemTime::now().duration_since(t).ok())
                .is_some_and(|age| age >= LEGACY_AGE);
            if !old {
                return false;
            }
        }
    }
    let Ok(f) = File::open(path) else {
        return false;
    };
    // SAFETY: flock on a file descriptor we own; the lock goes when `f` is closed.
    unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) == 0 }
}

/// Removes the leftover temporary files in `dir` whose names `ours` accepts (see the module
/// documentation), and directories named the same way (`apply`'s working copies) with all they
/// hold; returns how many. Errors are ignored: this is housekeeping.
pub fn sweep(dir: &Path, ours: impl Fn(&str) -> bool) -> usize {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    let mut removed = 0;
    for e in entries.flatten() {
        let name = e.file_name();
        let Some(name) = name.to_str() else { continue };
        let Ok(kind) = e.file_type() else { continue };
        if !ours(name) || !(kind.is_file() || kind.is_dir()) {
            continue;
        }
        let Some(who) = owner(name) else { continue };
        let path = e.path();
        let removed_it = || {
            if kind.is_dir() {
                std::fs::remove_dir_all(&path).is_ok()
            } else {
                std::fs::remove_file(&path).is_ok()
            }
        };
        if is_leftover(&path, who) && removed_it() {
            tracing::info!(
                "removed {}, left by a process that was killed",
                path.display()
            );
            removed += 1;
        }
    }
    removed
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "0123456789abcdef0123456789abcdef";

    /// A reader polling a file that `write_whole` keeps rewriting (as `mount --daemon` polls
    /// its mount process's ready file) finds it missing or whole, never empty or cut short.
    #[test]
    fn a_file_written_whole_is_never_read_in_part() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ready");
        let whole = vec![b'x'; 256 * 1024];
        let writer = {
            let (path, whole) = (path.clone(), whole.clone());
            std::thread::spawn(move || {
                for _ in 0..300 {
                    write_whole(&path, &whole).unwrap();
                }
            })
        };
        let mut reads = 0;
        while !writer.is_finished() {
            match std::fs::read(&path) {
                Ok(got) => {
                    assert!(got == whole, "read {} of {} bytes", got.len(), whole.len());
                    reads += 1;
                }
                Err(e) => assert_eq!(e.kind(), std::io::ErrorKind::NotFound),
            }
        }
        writer.join().unwrap();
        assert!(reads > 0, "the reader never saw the file");
    }

    #[test]
    fn owners_from_names() {
        assert_eq!(owner(&format!("import-42-{ID}.tmp")), Some(Some(42)));
        assert_eq!(
            owner(&format!(".a-b.duckdb.quackfs-export-7-{ID}")),
            Some(Some(7))
        );
        assert_eq!(owner(&format!("import-{ID}.layer")), Some(None));
        assert_eq!(owner(&format!(".x.quackfs-export-{ID}")), Some(None));
        assert_eq!(owner(&format!("segment-{ID}.tmp")), Some(None));
        assert_eq!(owner("notes.txt"), None);
        assert_eq!(owner(&format!("x-{ID}junk")), None);
        assert_eq!(owner("x-0123"), None);
    }

    #[test]
    fn sweeps_only_dead_owners() {
        let dir = tempfile::tempdir().unwrap();
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let dead = child.id();
        child.wait().unwrap();
        let dead_file = dir.path().join(format!("import-{dead}-{ID}.tmp"));
        std::fs::write(&dead_file, b"x").unwrap();
        let (mine, _f) = TempFile::create(dir.path(), "import-", ".tmp").unwrap();
        let legacy = dir.path().join(format!("import-{ID}.layer"));
        std::fs::write(&legacy, b"x").unwrap();
        // A working directory (apply's) of a dead process goes with what it holds; that of a
        // running one stays.
        let dead_dir = dir.path().join(format!("apply-{dead}-{ID}"));
        std::fs::create_dir_all(dead_dir.join("sub")).unwrap();
        std::fs::write(dead_dir.join("sub/db.duckdb"), b"x").unwrap();
        let live_dir = dir
            .path()
            .join(format!("apply-{}-{ID}", std::process::id()));
        std::fs::create_dir(&live_dir).unwrap();
        assert_eq!(sweep(dir.path(), |_| true), 2);
        assert!(!dead_file.exists());
        assert!(!dead_dir.exists());
        assert!(live_dir.exists());
        assert!(mine.path().exists(), "a running process's file stays");
        assert!(legacy.exists(), "a young file of an earlier version stays");
        let p = mine.path().to_path_buf();
        drop(mine);
        assert!(!p.exists(), "the guard removes its file");
    }
}

//! A commit served read-only at a private directory by this process, through the same
//! filesystem a `quackfs mount --read-only` runs, so that DuckDB reads a version in place
//! (`diff --rows`, `apply`, `bisect`): nothing is exported, only the blocks DuckDB reads are
//! fetched. The mount holds a reader session (gc keeps its layers) and is unmounted when the
//! snapshot is closed or dropped, also when the command is interrupted.
//!
//! A command killed outright (SIGKILL, the OOM killer) cannot unmount: its snapshots stay in
//! the mount table, dead (`ENOTCONN`), with their directories. The next command that mounts a
//! snapshot in the same temporary directory clears them first ([`sweep`]): each directory is
//! named `quackfs-snapshot-{pid}-{id}` after the process that made it.

use crate::catalog::{Commit, Repo};
use crate::engine::session::ReadSession;
use crate::engine::{short, Engine};
use crate::error::{Error, Result};
use crate::fs::{MountConfig, QuackFs};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// The start of the name of a snapshot's directory in the temporary directory.
const PREFIX: &str = "quackfs-snapshot-";

/// Clears what snapshots of killed processes left in `tmp`: their mounts are detached and their
/// directories removed. The snapshots of a process that still runs are never touched. (A
/// directory named by an earlier version, without a pid: its dead mounts are detached, and it
/// goes once nothing of it is mounted and it is a day old.) Errors are logged and skipped: this is
/// housekeeping.
pub fn sweep(tmp: &Path) {
    let Ok(entries) = std::fs::read_dir(tmp) else {
        return;
    };
    let mounts = crate::mountinfo::entries();
    for e in entries.flatten() {
        let name = e.file_name();
        let Some(name) = name.to_str().filter(|n| n.starts_with(PREFIX)) else {
            continue;
        };
        let Some(owner) = crate::tmpfiles::owner(name) else {
            continue;
        };
        if owner.is_some_and(crate::process::is_running) {
            continue;
        }
        let Ok(root) = crate::mountinfo::resolve(&e.path()) else {
            continue;
        };
        let mut mounted = false;
        for m in mounts.iter().filter(|m| m.mount_point.starts_with(&root)) {
            let dir = &m.mount_point;
            // The owner is gone, so nobody serves it (a dead mount's root may still answer stat
            // from the kernel's attribute cache: only unnamed owners are asked that way).
            if owner.is_none() && !crate::mountinfo::is_dead(dir) {
                mounted = true;
                continue;
            }
            match crate::mountinfo::lazy_unmount(dir) {
                Ok(()) => tracing::info!(
                    "detached {}, left by a process that was killed",
                    dir.display()
                ),
                // Another command sweeping at the same moment detached it first.
                Err(_) if crate::mountinfo::at(dir).is_none() => {}
                Err(err) => {
                    tracing::warn!(
                        "a snapshot mount left at {} cannot be detached: {err}",
                        dir.display()
                    );
                    mounted = true;
                }
            }
        }
        if !mounted && crate::tmpfiles::is_leftover(&root, owner) {
            match std::fs::remove_dir_all(&root) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(err) => tracing::warn!("removing {} failed: {err}", root.display()),
            }
        }
    }
}

/// One commit mounted read-only at a temporary directory.
pub struct Snapshot {
    /// The temporary directory holding the mount point.
    root: PathBuf,
    dir: PathBuf,
    commit: Commit,
    unmounter: Option<fuser::SessionUnmounter>,
    done: Option<tokio::sync::oneshot::Receiver<std::io::Result<()>>>,
    reader: Option<ReadSession>,
    fs: Arc<QuackFs>,
}

impl Snapshot {
    /// Mounts `commit` of `repo` read-only under a new directory in `tmp`.
    pub async fn mount(
        engine: Arc<Engine>,
        repo: &Repo,
        commit: &Commit,
        tmp: &Path,
    ) -> Result<Snapshot> {
        static SWEPT: std::sync::Once = std::sync::Once::new();
        SWEPT.call_once(|| sweep(tmp));
        let root = tmp.join(format!(
            "{PREFIX}{}-{}",
            std::process::id(),
            crate::engine::new_id()
        ));
        let dir = root.join(short(&commit.id));
        std::fs::create_dir_all(&dir).map_err(|e| Error::file(&dir, e))?;
        let holder = crate::process::holder_string(&dir);
        let (reader, view) = match ReadSession::open(engine.clone(), repo, commit, &holder).await {
            Ok(v) => v,
            Err(e) => {
                let _ = std::fs::remove_dir_all(&root);
                return Err(e);
            }
        };
        let cfg = MountConfig {
            session: None,
            autocommit: false,
            scratch: root.join("scratch"),
            dirty_limit: crate::fs::DEFAULT_DIRTY_LIMIT,
            follow: false,
        };
        let failed =
            |what: String| Error::Invalid(format!("cannot mount {}: {what}", dir.display()));
        let fs = match QuackFs::new(engine, view, cfg) {
            Ok(fs) => Arc::new(fs),
            Err(e) => {
                reader.release().await;
                let _ = std::fs::remove_dir_all(&root);
                return Err(failed(std::io::Error::from_raw_os_error(e.0).to_string()));
            }
        };
        let fsname = format!("quackfs:{}@{}", repo.name, short(&commit.id));
        let served = match super::serve(fs.clone(), &dir, true, &fsname).await {
            Ok(s) => s,
            Err(e) => {
                reader.release().await;
                fs.remove_scratch();
                let _ = std::fs::remove_dir_all(&root);
                return Err(failed(e));
            }
        };
        let snap = Snapshot {
            root,
            dir,
            commit: commit.clone(),
            unmounter: Some(served.unmounter),
            done: Some(served.done),
            reader: Some(reader),
            fs,
        };
        Ok(snap)
    }

    /// The path of `file` (a name in the commit) inside the mount.
    pub fn path(&self, file: &str) -> PathBuf {
        self.dir.join(file)
    }

    pub fn commit(&self) -> &Commit {
        &self.commit
    }

    /// Unmounts, ends the reader session and removes the temporary directory.
    pub async fn close(mut self) {
        self.unmount();
        if let Some(r) = self.reader.take() {
            r.release().await;
        }
    }

    fn unmount(&mut self) {
        if let Some(mut u) = self.unmounter.take() {
            if u.unmount().is_err() {
                // Busy (a DuckDB process still has it open, e.g. on Ctrl-C): detach it.
                if let Err(e) = crate::mountinfo::lazy_unmount(&self.dir) {
                    tracing::warn!("detaching {} failed: {e}", self.dir.display());
                }
            }
        }
        // Wait (briefly) for the session thread to end; this may run inside the runtime, where
        // a blocking receive is not allowed.
        if let Some(mut done) = self.done.take() {
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
            while matches!(
                done.try_recv(),
                Err(tokio::sync::oneshot::error::TryRecvError::Empty)
            ) && std::time::Instant::now() < deadline
            {
                std::thread::sleep(std::time::Duration::from_millis(5));
            }
        }
        self.fs.remove_scratch();
        let _ = std::fs::remove_dir_all(&self.root);
    }
}

impl Drop for Snapshot {
    fn drop(&mut self) {
        // Dropped without close (an error or an interrupt): unmount now; the reader session
        // expires on its own once its heartbeat stops.
        self.unmount();
    }
}

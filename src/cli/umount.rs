use super::mount::{outcome_file, runfile};
use super::Ctx;
use quackfs::error::{Error, Result};
use quackfs::mountinfo;
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// Flush, release the branch and unmount a quackfs mount; waits until the mount process is done.
///
/// Only quackfs mounts are unmounted (any other filesystem is refused). DIR may be given as
/// `DIR/`, with `.` and `..`, or through a symlink.
#[derive(Debug, clap::Args)]
pub struct UmountArgs {
    /// The mount point
    pub dir: PathBuf,
}

/// The quackfs mount point `dir` names, resolved; anything else is refused.
fn quackfs_mount_point(dir: &std::path::Path) -> Result<PathBuf> {
    let resolved = mountinfo::resolve(dir).map_err(|e| Error::file(dir, e))?;
    let Some(entry) = mountinfo::at(&resolved) else {
        return Err(Error::Invalid(format!(
            "{} is not a mount point",
            resolved.display()
        )));
    };
    if entry.quackfs().is_none() {
        return Err(Error::Invalid(format!(
            "{} is not a quackfs mount (its filesystem is {}, from {}); quackfs umount only unmounts quackfs mounts",
            resolved.display(),
            entry.fstype,
            if entry.source.is_empty() { "?" } else { &entry.source }
        )));
    }
    Ok(resolved)
}

pub async fn run(ctx: &Ctx, a: UmountArgs) -> Result<()> {
    let dir = quackfs_mount_point(&a.dir)?;
    let run = runfile(&ctx.cfg.run_dir(), &dir);
    let pid: Option<i32> = std::fs::read_to_string(&run)
        .ok()
        .and_then(|s| s.trim().parse().ok());
    let outcome = outcome_file(&run);
    if let Err(e) = quackfs::mountinfo::unmount(&dir, false) {
        if e.raw_os_error() == Some(libc::EBUSY) {
            return Err(Error::Refused(format!(
                "{} is busy: a program still has files open there (close it, e.g. quit duckdb, and retry)",
                dir.display()
            )));
        }
        return Err(Error::Invalid(format!(
            "cannot unmount {}: {e}",
            dir.display()
        )));
    }
    // Wait for the mount process to flush and release the branch.
    if let Some(pid) = pid {
        let deadline = Instant::now() + Duration::from_secs(300);
        while quackfs::process::is_running(pid) {
            if Instant::now() > deadline {
                return Err(Error::Invalid(format!(
                    "unmounted, but mount process {pid} is still flushing after 300 s"
                )));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    // The mount's final sync: a lost write is never a success.
    if pid.is_some() {
        let text = std::fs::read_to_string(&outcome).unwrap_or_default();
        let _ = std::fs::remove_file(&outcome);
        match text.trim() {
            "ok" => {}
            t if t.starts_with("error: ") => {
                return Err(Error::LostWrites(t["error: ".len()..].to_string()))
            }
            // No outcome, or one cut short (a full disk): nothing says the sync succeeded.
            _ => {
                return Err(Error::LostWrites(format!(
                    "the mount process of {} ended without reporting the outcome of its final sync (killed, or its disk is full); writes DuckDB had not synced may be lost",
                    dir.display()
                )))
            }
        }
    }
    ctx.note(format!("unmounted {}", dir.display()));
    Ok(())
}

use super::mount::{is_mount_point, runfile};
use super::Ctx;
use quackfs::error::{Error, Result};
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// Flush, release the branch and unmount a quackfs mount; waits until the mount process is done.
#[derive(Debug, clap::Args)]
pub struct UmountArgs {
    /// The mount point
    pub dir: PathBuf,
}

pub async fn run(ctx: &Ctx, a: UmountArgs) -> Result<()> {
    let dir = std::path::absolute(&a.dir).map_err(|e| Error::file(&a.dir, e))?;
    if !is_mount_point(&dir) {
        return Err(Error::Invalid(format!(
            "{} is not a mount point",
            dir.display()
        )));
    }
    let pid: Option<i32> = std::fs::read_to_string(runfile(&ctx.cfg.data_dir, &dir))
        .ok()
        .and_then(|s| s.trim().parse().ok());
    let c = std::ffi::CString::new(dir.as_os_str().as_encoded_bytes())
        .map_err(|_| Error::Invalid("mount point path contains a NUL byte".into()))?;
    // SAFETY: valid NUL-terminated path.
    if unsafe { libc::umount2(c.as_ptr(), 0) } != 0 {
        let err = std::io::Error::last_os_error();
        if err.raw_os_error() == Some(libc::EBUSY) {
            return Err(Error::Refused(format!(
                "{} is busy: a program still has files open there (close it, e.g. quit duckdb, and retry)",
                dir.display()
            )));
        }
        // Not root: let fusermount3 do it.
        let st = std::process::Command::new("fusermount3")
            .arg("-u")
            .arg(&dir)
            .status();
        if !matches!(st, Ok(s) if s.success()) {
            return Err(Error::Invalid(format!(
                "cannot unmount {}: {err}",
                dir.display()
            )));
        }
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
    ctx.note(format!("unmounted {}", dir.display()));
    Ok(())
}

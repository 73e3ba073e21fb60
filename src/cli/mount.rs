use super::Ctx;
use quackfs::catalog::CatalogError;
use quackfs::engine::view::ReadView;
use quackfs::engine::{now_millis, short};
use quackfs::error::{Error, Result};
use quackfs::fs::{MountConfig, QuackFs};
use quackfs::fuse::FuseAdapter;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

/// A writer renews its lease this often.
const HEARTBEAT: Duration = Duration::from_secs(2);
/// A lease whose heartbeat is older than this may be taken over.
const LEASE_STALE_MS: i64 = 10_000;

/// Serve a revision through FUSE so that DuckDB (or anything) works on DIR/*.duckdb.
///
/// A branch mounts writable (one writer per branch); a tag, a commit id, REV~N or REV@{TIME}
/// mounts read-only. Runs in the foreground until Ctrl-C, SIGTERM or `quackfs umount DIR`;
/// with --daemon it returns once the mount is ready.
#[derive(Debug, clap::Args)]
pub struct MountArgs {
    /// What to serve: [DB@]REV, e.g. analytics, analytics@exp, analytics@v1, main~3
    #[arg(value_name = "REV")]
    pub rev: String,
    /// Empty directory to mount on
    pub dir: PathBuf,
    /// Serve a branch read-only
    #[arg(long)]
    pub read_only: bool,
    /// Return once the mount is ready and keep serving in the background
    #[arg(long)]
    pub daemon: bool,
    /// Make a `checkpoint` commit whenever DuckDB completes a checkpoint
    #[arg(long, value_enum, default_value = "checkpoint")]
    pub autocommit: Autocommit,
    /// Where the branch pointed at this time (same as REV@{TIME}; read-only)
    #[arg(long, value_name = "TIME")]
    pub at: Option<String>,
    /// Memory for cached layer data, e.g. 512MiB
    #[arg(long, value_name = "SIZE", value_parser = super::parse_size)]
    pub cache_size: Option<String>,
    /// (internal) file to report readiness to, used by --daemon
    #[arg(long, hide = true)]
    pub ready_file: Option<PathBuf>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Autocommit {
    Checkpoint,
    Off,
}

/// Where a running mount records its pid, so `umount` can wait for it to finish.
pub fn runfile(data_dir: &Path, dir: &Path) -> PathBuf {
    let key: String = dir
        .to_string_lossy()
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect();
    data_dir.join("run").join(format!("mount{key}.pid"))
}

/// Whether `dir` is a mount point, from /proc/self/mountinfo.
pub fn is_mount_point(dir: &Path) -> bool {
    let Ok(info) = std::fs::read_to_string("/proc/self/mountinfo") else {
        return false;
    };
    let want = dir.to_string_lossy().replace(' ', "\\040");
    info.lines()
        .any(|l| l.split(' ').nth(4) == Some(want.as_str()))
}

fn check_mount_point(dir: &Path) -> Result<PathBuf> {
    let meta = match std::fs::metadata(dir) {
        Ok(m) => m,
        Err(e) if e.raw_os_error() == Some(libc::ENOTCONN) => {
            // A mount whose process died (kill -9): clear it away.
            let abs = std::path::absolute(dir).map_err(|e| Error::file(dir, e))?;
            lazy_unmount(&abs);
            tracing::warn!("cleared a dead mount at {}", abs.display());
            std::fs::metadata(dir).map_err(|e| Error::file(dir, e))?
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(Error::Invalid(format!(
                "mount point {} does not exist (create it with mkdir -p)",
                dir.display()
            )))
        }
        Err(e) => return Err(Error::file(dir, e)),
    };
    if !meta.is_dir() {
        return Err(Error::Invalid(format!(
            "mount point {} is not a directory",
            dir.display()
        )));
    }
    let dir = std::fs::canonicalize(dir).map_err(|e| Error::file(dir, e))?;
    if is_mount_point(&dir) {
        return Err(Error::Invalid(format!(
            "{} is already a mount point (unmount it first: quackfs umount {})",
            dir.display(),
            dir.display()
        )));
    }
    if std::fs::read_dir(&dir)
        .map_err(|e| Error::file(&dir, e))?
        .next()
        .is_some()
    {
        return Err(Error::Invalid(format!(
            "mount point {} is not empty",
            dir.display()
        )));
    }
    Ok(dir)
}

/// Detaches a mount even if it is busy or its server is gone.
pub fn lazy_unmount(dir: &Path) {
    if let Ok(c) = std::ffi::CString::new(dir.as_os_str().as_encoded_bytes()) {
        // SAFETY: valid NUL-terminated path.
        unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) };
    }
}

fn holder_string(dir: &Path) -> String {
    let host = hostname::get()
        .ok()
        .and_then(|h| h.into_string().ok())
        .unwrap_or_else(|| "localhost".into());
    format!(
        "host={host} pid={} dir={}",
        std::process::id(),
        dir.display()
    )
}

/// True if the holder string names a process on this host that no longer runs.
fn holder_is_dead(holder: &str) -> bool {
    let host = hostname::get()
        .ok()
        .and_then(|h| h.into_string().ok())
        .unwrap_or_else(|| "localhost".into());
    let field = |k: &str| {
        holder
            .split(' ')
            .find_map(|f| f.strip_prefix(k))
            .map(str::to_string)
    };
    let (Some(h), Some(pid)) = (
        field("host="),
        field("pid=").and_then(|p| p.parse::<i32>().ok()),
    ) else {
        return false;
    };
    h == host && !quackfs::process::is_running(pid)
}

pub async fn run(ctx: &Ctx, a: MountArgs) -> Result<()> {
    if a.daemon {
        return daemonize(ctx, &a).await;
    }
    let result = serve(ctx, &a).await;
    if let (Err(e), Some(ready)) = (&result, &a.ready_file) {
        let _ = std::fs::write(ready, format!("error: {}", super::one_line(e)));
    }
    result
}

async fn serve(ctx: &Ctx, a: &MountArgs) -> Result<()> {
    let dir = check_mount_point(&a.dir)?;
    // Watch for Ctrl-C and SIGTERM before mounting, so a signal that arrives as soon as the mount
    // appears still unmounts cleanly.
    let mut sigterm = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .map_err(|e| Error::Invalid(format!("cannot watch signals: {e}")))?;
    let mut sigint = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt())
        .map_err(|e| Error::Invalid(format!("cannot watch signals: {e}")))?;
    let engine = Arc::new(ctx.engine().await?);
    let spec = ctx.parse_spec(&a.rev, a.at.as_deref())?;
    let current = ctx.current_repo()?;
    let r = engine.resolve_spec(&spec, current.as_deref()).await?;
    for n in &r.notes {
        ctx.note(format!("note: {n}"));
    }
    let writer = r.branch.clone().filter(|_| !a.read_only);
    let holder = holder_string(&dir);
    let mut lease = None;
    let view = match &writer {
        Some(branch) => {
            let l = match engine.catalog.acquire_lease(r.repo.id, branch, &holder, now_millis(), LEASE_STALE_MS).await {
                Err(CatalogError::LeaseHeld { holder: h, .. }) if holder_is_dead(&h) => {
                    engine.catalog.acquire_lease(r.repo.id, branch, &holder, now_millis(), 0).await?
                }
                Err(CatalogError::LeaseHeld { holder: h, age_secs, .. }) => {
                    return Err(Error::Refused(format!(
                        "branch {branch} of {} is already mounted writable by {h} (heartbeat {age_secs}s ago); mount it with --read-only, or another branch",
                        r.repo.name
                    )))
                }
                other => other?,
            };
            lease = Some(l.generation);
            let head = engine.branch_head(&r.repo, branch).await?;
            let pending = engine.catalog.pending(r.repo.id, branch).await?;
            ReadView::open_with(&engine.catalog, engine.layers.clone(), head, pending).await
        }
        None => engine.view(&r.commit).await,
    };
    let release = |engine: Arc<quackfs::engine::Engine>| {
        release_lease(engine, r.repo.id, writer.clone(), lease)
    };
    let view = match view {
        Ok(v) => v,
        Err(e) => {
            release(engine.clone()).await;
            return Err(e);
        }
    };
    let commit_id = view.commit.id.clone();
    // A reader pins its commit so gc keeps what it reads (the pin's heartbeat proves it is alive).
    let pin = if writer.is_none() {
        let id = quackfs::engine::new_id();
        if let Err(e) = engine
            .catalog
            .add_pin(&id, r.repo.id, &commit_id, &holder, now_millis())
            .await
        {
            return Err(e.into());
        }
        Some(id)
    } else {
        None
    };
    let cfg = MountConfig {
        writer: writer.clone().zip(lease),
        autocommit: a.autocommit == Autocommit::Checkpoint,
        scratch: ctx
            .cfg
            .data_dir
            .join("scratch")
            .join(quackfs::engine::new_id()),
    };
    let fs = match QuackFs::new(engine.clone(), r.repo.clone(), view, cfg) {
        Ok(fs) => Arc::new(fs),
        Err(e) => {
            release(engine.clone()).await;
            return Err(Error::Invalid(format!(
                "cannot prepare the mount (errno {})",
                e.0
            )));
        }
    };
    let fsname = format!(
        "quackfs:{}@{}",
        r.repo.name,
        writer
            .clone()
            .unwrap_or_else(|| short(&commit_id).to_string())
    );
    let adapter = FuseAdapter::new(fs.clone(), tokio::runtime::Handle::current());
    let config = quackfs::fuse::config(writer.is_none(), &fsname);
    let mount_dir = dir.clone();
    let session =
        tokio::task::spawn_blocking(move || fuser::Session::new(adapter, &mount_dir, &config))
            .await;
    let mut session = match session {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => {
            release(engine.clone()).await;
            fs.remove_scratch();
            return Err(Error::Invalid(format!(
                "cannot mount {}: {e}",
                dir.display()
            )));
        }
        Err(e) => {
            release(engine.clone()).await;
            return Err(Error::Invalid(format!(
                "cannot mount {}: {e}",
                dir.display()
            )));
        }
    };
    let mut unmounter = session.unmount_callable();
    let (done_tx, mut done_rx) = tokio::sync::oneshot::channel();
    std::thread::Builder::new()
        .name("fuse-session".into())
        .spawn(move || {
            let _ = done_tx.send(session.run());
        })
        .map_err(|e| Error::Invalid(format!("cannot start the FUSE session: {e}")))?;

    let runfile = runfile(&ctx.cfg.data_dir, &dir);
    if let Some(parent) = runfile.parent() {
        let _ = std::fs::create_dir_all(parent);
    }
    let _ = std::fs::write(&runfile, std::process::id().to_string());
    let heartbeat = {
        let engine = engine.clone();
        let fs = fs.clone();
        let repo_id = r.repo.id;
        let lease = writer.clone().zip(lease);
        let pin = pin.clone();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(HEARTBEAT).await;
                if let Some(pin) = &pin {
                    if let Err(e) = engine.catalog.heartbeat_pin(pin, now_millis()).await {
                        tracing::warn!("pin heartbeat failed: {e}");
                    }
                }
                let Some((branch, generation)) = &lease else {
                    continue;
                };
                match engine
                    .catalog
                    .heartbeat(repo_id, branch, *generation, now_millis())
                    .await
                {
                    Ok(()) => {}
                    Err(CatalogError::Fenced(_)) => {
                        fs.fence();
                        break;
                    }
                    Err(e) => tracing::warn!("lease heartbeat failed: {e}"),
                }
            }
        })
    };
    let what = match &writer {
        Some(b) => format!("{}@{b} (writable)", r.repo.name),
        None => format!("{}@{} (read-only)", r.repo.name, short(&commit_id)),
    };
    ctx.note(format!(
        "mounted {what} at {}; stop with Ctrl-C or `quackfs umount {}`",
        dir.display(),
        dir.display()
    ));
    if let Some(ready) = &a.ready_file {
        let _ = std::fs::write(ready, "ok");
    }

    let ended_by_itself = tokio::select! {
        _ = sigint.recv() => false,
        _ = sigterm.recv() => false,
        _ = &mut done_rx => true,
    };
    if !ended_by_itself {
        ctx.note(format!("unmounting {}", dir.display()));
        if let Err(e) = unmounter.unmount() {
            tracing::warn!("unmount failed ({e}); detaching lazily");
            lazy_unmount(&dir);
        }
        let _ = done_rx.await;
    }
    // Everything written is in memory here; make it durable before letting the branch go.
    let flushed = fs.sync_all().await;
    heartbeat.abort();
    release(engine.clone()).await;
    if let Some(pin) = &pin {
        if let Err(e) = engine.catalog.remove_pin(pin).await {
            tracing::warn!("removing the pin failed: {e}");
        }
    }
    fs.remove_scratch();
    let _ = std::fs::remove_file(&runfile);
    match flushed {
        Ok(()) => {
            ctx.note(format!("unmounted {}", dir.display()));
            Ok(())
        }
        Err(e) => Err(Error::Invalid(format!(
            "unmounted {}, but syncing the last writes failed (errno {}); they are lost",
            dir.display(),
            e.0
        ))),
    }
}

/// Gives up the writer lease (if any).
async fn release_lease(
    engine: Arc<quackfs::engine::Engine>,
    repo_id: i64,
    writer: Option<String>,
    lease: Option<i64>,
) {
    if let (Some(b), Some(g)) = (writer, lease) {
        if let Err(e) = engine.catalog.release_lease(repo_id, &b, g).await {
            tracing::warn!("releasing the lease failed: {e}");
        }
    }
}

/// Starts the mount in a background process and waits until it is ready.
async fn daemonize(ctx: &Ctx, a: &MountArgs) -> Result<()> {
    let dir = check_mount_point(&a.dir)?;
    let exe = std::env::current_exe().map_err(|e| Error::file("quackfs", e))?;
    let logs = ctx.cfg.data_dir.join("logs");
    std::fs::create_dir_all(&logs).map_err(|e| Error::file(&logs, e))?;
    let log_path = logs.join(format!("mount-{}.log", quackfs::engine::new_id()));
    let log = std::fs::File::create(&log_path).map_err(|e| Error::file(&log_path, e))?;
    let ready = ctx
        .cfg
        .data_dir
        .join("run")
        .join(format!("ready-{}", quackfs::engine::new_id()));
    if let Some(p) = ready.parent() {
        std::fs::create_dir_all(p).map_err(|e| Error::file(p, e))?;
    }
    // Re-run this command without --daemon, in its own session, with the same configuration.
    let mut args: Vec<std::ffi::OsString> = Vec::new();
    let g = &ctx.cfg;
    args.extend(["--data-dir".into(), g.data_dir.clone().into_os_string()]);

    if let Some(repo) = ctx.current_repo()? {
        args.extend(["--repo".into(), repo.into()]);
    }
    args.extend([
        "mount".into(),
        a.rev.clone().into(),
        dir.clone().into_os_string(),
    ]);
    if a.read_only {
        args.push("--read-only".into());
    }
    if a.autocommit == Autocommit::Off {
        args.extend(["--autocommit".into(), "off".into()]);
    }
    if let Some(at) = &a.at {
        args.extend(["--at".into(), at.into()]);
    }
    args.extend(["--ready-file".into(), ready.clone().into_os_string()]);
    let mut cmd = std::process::Command::new(exe);
    // Catalog and store go through the environment: a password in a URL must not be visible in
    // the process list.
    cmd.env("QUACKFS_CATALOG", &g.catalog_url)
        .env("QUACKFS_STORE", &g.store_url);
    cmd.args(&args)
        .stdin(std::process::Stdio::null())
        .stdout(log.try_clone().map_err(|e| Error::file(&log_path, e))?)
        .stderr(log);
    use std::os::unix::process::CommandExt;
    cmd.process_group(0);
    let mut child = cmd
        .spawn()
        .map_err(|e| Error::Invalid(format!("cannot start the mount process: {e}")))?;
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    loop {
        if let Ok(text) = std::fs::read_to_string(&ready) {
            let _ = std::fs::remove_file(&ready);
            if text == "ok" {
                ctx.note(format!(
                    "mounted at {} (pid {}, log {})",
                    dir.display(),
                    child.id(),
                    log_path.display()
                ));
                return Ok(());
            }
            let _ = child.wait();
            return Err(Error::Invalid(
                text.trim_start_matches("error: ").to_string(),
            ));
        }
        if let Ok(Some(status)) = child.try_wait() {
            let tail = std::fs::read_to_string(&log_path).unwrap_or_default();
            let last = tail
                .lines()
                .rev()
                .find(|l| l.starts_with("error:"))
                .unwrap_or("")
                .to_string();
            return Err(Error::Invalid(format!(
                "the mount process exited ({status}) before the mount was ready: {}",
                last.trim_start_matches("error: ")
            )));
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            return Err(Error::Invalid(format!(
                "the mount was not ready after 120 s (log: {})",
                log_path.display()
            )));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

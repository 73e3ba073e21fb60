use super::Ctx;
use quackfs::engine::session::{BranchSession, ReadSession};
use quackfs::engine::short;
use quackfs::engine::view::ViewChain;
use quackfs::error::{Error, Result};
use quackfs::fs::{MountConfig, QuackFs, DEFAULT_DIRTY_LIMIT};
use quackfs::mountinfo::lazy_unmount;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

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
    /// Memory for extents read from the object store (checksummed, immutable), e.g. 512MiB
    /// [default: 256MiB]
    #[arg(long, value_name = "SIZE", value_parser = super::parse_bytes)]
    pub cache_size: Option<u64>,
    /// Local disk for extents read from a remote store (S3), shared by the mounts of this data
    /// directory and kept across remounts; 0 turns it off [default: 2GiB for S3, none for the
    /// local store]
    #[arg(long, value_name = "SIZE", value_parser = super::parse_bytes)]
    pub disk_cache: Option<u64>,
    /// Most written-but-unsynced bytes held in memory; past it writes wait for a flush
    /// (backpressure, e.g. while the object store is down); at least 1MiB [default: 256MiB]
    #[arg(long, value_name = "SIZE", value_parser = parse_dirty_limit)]
    pub dirty_limit: Option<u64>,
    /// Read-only, following the branch REV: when it moves to a new commit, opens from then on see
    /// that commit (within --follow-interval plus the time to read its layer footers); a file
    /// handle already open keeps reading the commit it opened, whole
    #[arg(long, conflicts_with = "at")]
    pub follow: bool,
    /// How often a --follow mount asks the catalog where the branch points; at least 10ms
    #[arg(long, value_name = "DURATION", default_value = "250ms", value_parser = parse_follow_interval, requires = "follow")]
    pub follow_interval: Duration,
    /// Serve metrics in the Prometheus text format at http://ADDR/metrics (e.g. 127.0.0.1:9187
    /// or localhost:9187);
    /// docs/operations.md lists them. `quackfs status --json` shows the same figures
    #[arg(long, value_name = "ADDR", value_parser = parse_metrics_addr)]
    pub metrics: Option<std::net::SocketAddr>,
    /// (internal) file to report readiness to, used by --daemon
    #[arg(long, hide = true)]
    pub ready_file: Option<PathBuf>,
}

/// The shortest `--follow-interval`: the follower asks the catalog this often (at 0 it asked
/// without pause, a core busy and the catalog server hammered).
const MIN_FOLLOW_INTERVAL: Duration = Duration::from_millis(10);

fn parse_follow_interval(text: &str) -> std::result::Result<Duration, String> {
    let d = humantime::parse_duration(text).map_err(|e| format!("{e} (examples: 250ms, 2s)"))?;
    if d < MIN_FOLLOW_INTERVAL {
        return Err(format!(
            "at least {MIN_FOLLOW_INTERVAL:?}: the follower asks the catalog this often"
        ));
    }
    Ok(d)
}

/// Argument parser for `mount --metrics`: HOST:PORT, the host an IP address or a name such as
/// `localhost` (its first IPv4 address, else its first address).
fn parse_metrics_addr(text: &str) -> std::result::Result<std::net::SocketAddr, String> {
    use std::net::ToSocketAddrs;
    if let Ok(addr) = text.parse() {
        return Ok(addr);
    }
    let hint = "expected HOST:PORT, e.g. 127.0.0.1:9187 or localhost:9187";
    let addrs: Vec<std::net::SocketAddr> = text
        .to_socket_addrs()
        .map_err(|e| format!("{hint} ({e})"))?
        .collect();
    addrs
        .iter()
        .find(|a| a.is_ipv4())
        .or(addrs.first())
        .copied()
        .ok_or_else(|| format!("{hint} ({text} names no address)"))
}

/// Argument parser for `mount --dirty-limit`: a size, at least one write (1MiB).
fn parse_dirty_limit(text: &str) -> std::result::Result<u64, String> {
    let bytes = super::parse_bytes(text)?;
    if bytes < quackfs::fs::MIN_DIRTY_LIMIT {
        return Err(format!(
            "at least {} (the largest single write): writes wait while this much is unsynced",
            super::output::size(quackfs::fs::MIN_DIRTY_LIMIT as i64)
        ));
    }
    Ok(bytes)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Autocommit {
    Checkpoint,
    Off,
}

/// Where a running mount records its pid, so `umount` can wait for it to finish (`run_dir`:
/// `Config::run_dir`).
pub fn runfile(run_dir: &Path, dir: &Path) -> PathBuf {
    let key: String = dir
        .to_string_lossy()
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect();
    run_dir.join(format!("mount{key}.pid"))
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

/// Refuses a mount point (canonical) inside a directory the mount writes to (or holding one):
/// the mount's own files would then go through the mount, and a request would wait on the
/// process that is to answer it, for ever (not even `kill -9` ends it).
fn check_not_own(dir: &Path, cfg: &quackfs::config::Config) -> Result<()> {
    for (what, own) in cfg.working_dirs() {
        let own = std::fs::canonicalize(&own)
            .or_else(|_| std::path::absolute(&own))
            .unwrap_or(own);
        if dir.starts_with(&own) || own.starts_with(dir) {
            return Err(Error::Invalid(format!(
                "mount point {} {} {what} {}, which the mount itself writes to (it would wait \
                 on itself); mount somewhere else",
                dir.display(),
                if dir == own {
                    "is"
                } else if dir.starts_with(&own) {
                    "is inside"
                } else {
                    "is a parent of"
                },
                own.display()
            )));
        }
    }
    Ok(())
}

fn check_mount_point(dir: &Path, cfg: &quackfs::config::Config) -> Result<PathBuf> {
    let meta = match std::fs::metadata(dir) {
        Ok(m) => m,
        Err(e) if e.raw_os_error() == Some(libc::ENOTCONN) => {
            // A mount whose process died (kill -9): clear it away.
            let abs = std::path::absolute(dir).map_err(|e| Error::file(dir, e))?;
            lazy_unmount(&abs).map_err(|e| {
                Error::Invalid(format!(
                    "{} is a dead mount (its process is gone) and cannot be cleared: {e}",
                    abs.display()
                ))
            })?;
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
    check_not_own(&dir, cfg)?;
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

pub async fn run(ctx: &Ctx, a: MountArgs) -> Result<()> {
    if a.daemon {
        return daemonize(ctx, &a).await;
    }
    let result = serve(ctx, &a).await;
    if let (Err(e), Some(ready)) = (&result, &a.ready_file) {
        let _ = quackfs::tmpfiles::write_whole(ready, format!("error: {}", super::one_line(e)));
    }
    result
}

async fn serve(ctx: &Ctx, a: &MountArgs) -> Result<()> {
    let dir = check_mount_point(&a.dir, &ctx.cfg)?;
    // A metrics address that cannot be served fails the mount before anything is held.
    let metrics_listener = match a.metrics {
        Some(addr) => Some(
            tokio::net::TcpListener::bind(addr)
                .await
                .map_err(|e| Error::Invalid(format!("cannot serve metrics at {addr}: {e}")))?,
        ),
        None => None,
    };
    // Watch for Ctrl-C and SIGTERM before mounting, so a signal that arrives as soon as the mount
    // appears still unmounts cleanly.
    let mut sigterm = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .map_err(|e| Error::Invalid(format!("cannot watch signals: {e}")))?;
    let mut sigint = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt())
        .map_err(|e| Error::Invalid(format!("cannot watch signals: {e}")))?;
    let mut engine = ctx.engine().await?;
    if let Some(bytes) = a.disk_cache {
        let dir = ctx.cfg.cache_dir();
        let disk = if bytes == 0 {
            None
        } else {
            let d = quackfs::engine::disk_cache::DiskCache::open(dir.clone(), bytes)
                .map_err(|e| Error::file(&dir, e))?;
            Some(Arc::new(d))
        };
        engine.set_disk_cache(disk);
    }
    if let Some(bytes) = a.cache_size {
        engine.set_extent_cache(bytes);
    }
    // The cache may hold more than this mount's bound (left by a mount with a larger one).
    if let Some(d) = engine.disk_cache().cloned() {
        tokio::task::spawn_blocking(move || d.trim());
    }
    let engine = Arc::new(engine);
    let spec = ctx.parse_spec(&a.rev, a.at.as_deref())?;
    let current = ctx.current_repo()?;
    let r = engine.resolve_spec(&spec, current.as_deref()).await?;
    for n in &r.notes {
        ctx.note(format!("note: {n}"));
    }
    let followed = match (&r.branch, a.follow) {
        (Some(b), true) => Some(b.clone()),
        (None, true) => {
            return Err(Error::Usage {
                message: format!("--follow follows a branch; {} is not one", a.rev),
                hint: "name a branch (`quackfs branch` lists them), or mount the revision without --follow".into(),
            })
        }
        _ => None,
    };
    let writer = r.branch.clone().filter(|_| !a.read_only && !a.follow);
    let mut holder = quackfs::process::holder_string(&dir);
    if let Some(b) = &followed {
        holder = format!("{holder} follows={b}");
    }
    let scratch = ctx.cfg.scratch_dir().join(quackfs::engine::new_id());
    let mut cfg = MountConfig {
        session: None,
        autocommit: a.autocommit == Autocommit::Checkpoint,
        scratch,
        dirty_limit: a.dirty_limit.unwrap_or(DEFAULT_DIRTY_LIMIT),
        follow: followed.is_some(),
    };
    // What the mount holds in the catalog: a writable branch's session, or a reader's pin.
    let mut first_chain = None;
    let (held, view, head_view) = match &writer {
        Some(branch) => {
            let o =
                BranchSession::open(engine.clone(), r.repo.clone(), branch, holder.clone()).await?;
            cfg.session = Some(o.session.clone());
            (Held::Branch(o.session), o.view, o.head_view)
        }
        // A follower keeps the chain of the view it serves, to build its next views on.
        None if followed.is_some() => {
            let (rs, (view, chain)) =
                ReadSession::open_chain(engine.clone(), &r.repo, &r.commit, &holder).await?;
            first_chain = Some(chain);
            (Held::Reader(rs), view, None)
        }
        None => {
            let (rs, view) = ReadSession::open(engine.clone(), &r.repo, &r.commit, &holder).await?;
            (Held::Reader(rs), view, None)
        }
    };
    let commit_id = view.commit.id.clone();
    let fs = match QuackFs::new(engine.clone(), view, cfg) {
        Ok(fs) => Arc::new(fs),
        Err(e) => {
            held.release().await;
            return Err(Error::Invalid(format!(
                "cannot prepare the mount ({})",
                std::io::Error::from_raw_os_error(e.0)
            )));
        }
    };
    if let Err(e) = fs.load_checkpoint_state(head_view.as_ref()).await {
        held.release().await;
        fs.remove_scratch();
        return Err(Error::Invalid(format!(
            "cannot read the DuckDB headers of the served files ({}); see the log above",
            std::io::Error::from_raw_os_error(e.0)
        )));
    }
    let fsname = format!(
        "quackfs:{}@{}",
        r.repo.name,
        writer
            .clone()
            .or_else(|| followed.clone())
            .unwrap_or_else(|| short(&commit_id).to_string())
    );
    let served = quackfs::fuse::serve(fs.clone(), &dir, writer.is_none(), &fsname).await;
    let (mut unmounter, mut done_rx) = match served {
        Ok(s) => (s.unmounter, s.done),
        Err(e) => {
            held.release().await;
            fs.remove_scratch();
            return Err(Error::Invalid(format!(
                "cannot mount {}: {e}",
                dir.display()
            )));
        }
    };

    // A follower moves to the branch's new commits in the background.
    let (held, follower) = match (held, &followed) {
        (Held::Reader(first), Some(branch)) => {
            let sessions = Arc::new(tokio::sync::Mutex::new(vec![(0, first)]));
            let f = Follower {
                engine: engine.clone(),
                repo: r.repo.clone(),
                branch: branch.clone(),
                fs: fs.clone(),
                holder: holder.clone(),
                serving: commit_id.clone(),
                interval: a.follow_interval,
                sessions: sessions.clone(),
                chain: first_chain,
            };
            (Held::Follower(sessions), Some(f))
        }
        (held, _) => (held, None),
    };
    let following = async move {
        match follower {
            Some(f) => f.run().await,
            None => std::future::pending().await,
        }
    };
    tokio::pin!(following);
    let runfile = runfile(&ctx.cfg.run_dir(), &dir);
    if let Some(parent) = runfile.parent() {
        let _ = std::fs::create_dir_all(parent);
    }
    // Room for the outcome of the final sync, taken now: it can be written even on a full disk.
    let _ = std::fs::write(outcome_file(&runfile), outcome_record("running"));
    let _ = std::fs::write(&runfile, std::process::id().to_string());
    // What DuckDB reads first when it opens a database, fetched now (remote stores).
    let warming = {
        let fs = fs.clone();
        tokio::spawn(async move { fs.warm_open().await })
    };
    let reporter = tokio::spawn(report_metrics(
        fs.clone(),
        engine.clone(),
        r.repo.id,
        writer.clone(),
        metrics_file(&runfile),
        metrics_listener,
    ));
    let what = match &writer {
        Some(b) => format!("{}@{b} (writable)", r.repo.name),
        None => match &followed {
            Some(b) => format!(
                "{}@{b} read-only, following it from {} (every {:?})",
                r.repo.name,
                short(&commit_id),
                a.follow_interval
            ),
            None => format!("{}@{} (read-only)", r.repo.name, short(&commit_id)),
        },
    };
    ctx.note(format!(
        "mounted {what} at {}; stop with Ctrl-C or `quackfs umount {}`",
        dir.display(),
        dir.display()
    ));
    if writer.is_none() {
        // DuckDB opens a file for writing unless told otherwise, and a read-only mount
        // refuses that with "Read-only file system".
        ctx.note(format!(
            "hint: open its databases read-only: `duckdb -readonly {}/FILE`, or duckdb.connect(FILE, read_only=True) in Python",
            dir.display()
        ));
    }
    if let Some(ready) = &a.ready_file {
        // Whole or not at all: `daemonize` polls for it, and a file caught empty would read as
        // a failed mount.
        let _ = quackfs::tmpfiles::write_whole(ready, "ok");
    }

    let ended_by_itself = tokio::select! {
        _ = sigint.recv() => false,
        _ = sigterm.recv() => false,
        _ = &mut done_rx => true,
        _ = &mut following => true,
    };
    if !ended_by_itself {
        ctx.note(format!("unmounting {}", dir.display()));
        if let Err(e) = unmounter.unmount() {
            tracing::warn!("unmount failed ({e}); detaching lazily");
            if let Err(e) = lazy_unmount(&dir) {
                tracing::warn!("detaching {} failed too: {e}", dir.display());
            }
        }
        let _ = done_rx.await;
    }
    // Everything written is in memory here; make it durable before letting the branch go.
    let flushed = fs.sync_all().await;
    held.release().await;
    fs.remove_scratch();
    let result = match flushed {
        Ok(()) => Ok(()),
        Err(e) => Err(Error::Invalid(format!(
            "unmounted {}, but syncing the last writes failed ({}); they are lost",
            dir.display(),
            std::io::Error::from_raw_os_error(e.0)
        ))),
    };
    // `quackfs umount` reports this outcome once the process is gone.
    let outcome = match &result {
        Ok(()) => "ok".to_string(),
        Err(e) => format!("error: {}", super::one_line(e)),
    };
    if let Err(e) = overwrite(&outcome_file(&runfile), &outcome_record(&outcome)) {
        tracing::warn!("cannot record the outcome for `quackfs umount`: {e}");
    }
    reporter.abort();
    warming.abort();
    let _ = std::fs::remove_file(metrics_file(&runfile));
    let _ = std::fs::remove_file(&runfile);
    if result.is_ok() {
        ctx.note(format!("unmounted {}", dir.display()));
    }
    result
}

/// What a mount holds in the catalog while it runs.
enum Held {
    Branch(Arc<BranchSession>),
    Reader(ReadSession),
    Follower(FollowSessions),
}

impl Held {
    async fn release(self) {
        match self {
            Held::Branch(s) => s.release().await,
            Held::Reader(r) => r.release().await,
            Held::Follower(sessions) => {
                for (_, rs) in std::mem::take(&mut *sessions.lock().await) {
                    rs.release().await;
                }
            }
        }
    }
}

/// A `--follow` mount's watcher: polls where the branch points and moves the mount to each new
/// commit (a generation). The view of the new commit is built on the chain of the one served
/// ([`ViewChain::advance`]: the layers of the commits in between, not the whole history), and
/// the session that holds the served view registers what it adds and pins the new commit. When
/// that cannot be (the branch was moved elsewhere, a merge lies in between, the chain grew
/// past a fresh build, gc took a layer), the view is built whole under a new session: an
/// epoch. An epoch's session keeps its layers from gc until no inode of its generations is
/// named or open any more.
struct Follower {
    engine: Arc<quackfs::engine::Engine>,
    repo: quackfs::catalog::Repo,
    branch: String,
    fs: Arc<QuackFs>,
    holder: String,
    serving: String,
    interval: Duration,
    sessions: FollowSessions,
    /// The chain of the view served.
    chain: Option<ViewChain>,
}

/// What keeps a follower from moving (its branch deleted, a commit it cannot open yet), logged
/// once when it starts or changes and once when it ends, not at every poll (4 times a second).
#[derive(Default)]
struct Problem(Option<String>);

impl Problem {
    fn note(&mut self, message: String) {
        if self.0.as_deref() != Some(message.as_str()) {
            tracing::warn!("{message} (retrying; logged again only when this changes)");
            self.0 = Some(message);
        }
    }

    fn clear(&mut self, branch: &str) {
        if self.0.take().is_some() {
            tracing::info!("following {branch}: resolved; following again");
        }
    }
}

/// The reader sessions of a follower's epochs, each with the first generation it holds (it
/// holds those up to the next epoch's first); released when the mount ends.
type FollowSessions = Arc<tokio::sync::Mutex<Vec<(u64, ReadSession)>>>;

impl Follower {
    /// Runs until the mount ends (the future is dropped).
    async fn run(mut self) {
        let mut gen = 0u64;
        let branch = self.branch.clone();
        // PostgreSQL announces branch moves (LISTEN/NOTIFY): wake at once; poll as well.
        let mut moves = self.engine.catalog.ref_changes().await;
        let ours = format!("{}:{branch}", self.repo.id);
        let mut problem = Problem::default();
        loop {
            match moves.as_mut() {
                Some(rx) => {
                    let announced = async {
                        loop {
                            match rx.recv().await {
                                Ok(p) if p == ours => return true,
                                Ok(_) => {}
                                Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {
                                    return true
                                }
                                Err(tokio::sync::broadcast::error::RecvError::Closed) => {
                                    return false
                                }
                            }
                        }
                    };
                    tokio::select! {
                        _ = tokio::time::sleep(self.interval) => {}
                        open = announced => if !open { moves = None },
                    }
                }
                None => tokio::time::sleep(self.interval).await,
            }
            match self.engine.branch_head(&self.repo, &branch).await {
                Ok(head) if head.id != self.serving => {
                    let started = std::time::Instant::now();
                    match self.view_of(&head, gen + 1).await {
                        Ok((view, how)) => {
                            gen += 1;
                            let changed = self.fs.follow(&view, gen);
                            // What opening a changed database reads, fetched now (remote
                            // stores; the mount's end aborts it with the runtime).
                            let fs = self.fs.clone();
                            let names = changed.clone();
                            tokio::spawn(async move { fs.warm_changed(&names).await });
                            tracing::info!(
                                "following {branch}: now serving {} ({} file(s) changed; view {how} in {:.1?})",
                                short(&head.id),
                                changed.len(),
                                started.elapsed()
                            );
                            self.serving = head.id.clone();
                            problem.clear(&branch);
                        }
                        Err(e) => problem.note(format!(
                            "following {branch}: cannot open {} yet: {e}",
                            short(&head.id)
                        )),
                    }
                }
                Ok(_) => problem.clear(&branch),
                Err(e) => problem.note(format!("following {branch}: {e}")),
            }
            // Epochs no file of the mount belongs to any more let their layers go.
            let live = self.fs.live_generations();
            tracing::debug!("following {branch}: generations in use {live:?} (serving {gen})");
            let done: Vec<ReadSession> = {
                let mut sessions = self.sessions.lock().await;
                let firsts: Vec<u64> = sessions.iter().map(|(g, _)| *g).collect();
                let in_use = |i: usize| {
                    let ends = firsts.get(i + 1).copied();
                    ends.is_none() || live.iter().any(|g| *g >= firsts[i] && Some(*g) < ends)
                };
                let (keep, done): (Vec<_>, Vec<_>) = std::mem::take(&mut *sessions)
                    .into_iter()
                    .enumerate()
                    .partition(|(i, _)| in_use(*i));
                *sessions = keep.into_iter().map(|(_, s)| s).collect();
                done.into_iter().map(|(_, (_, rs))| rs).collect()
            };
            for rs in done {
                rs.release().await;
            }
        }
    }

    /// The view of `head`, served as generation `gen`: built on the chain served if it can be
    /// (and held by its epoch's session), else whole in a new epoch. With how it was built.
    async fn view_of(
        &mut self,
        head: &quackfs::catalog::Commit,
        gen: u64,
    ) -> Result<(quackfs::engine::view::ReadView, &'static str)> {
        if let Some(chain) = self.chain.as_ref().filter(|c| !c.grown()) {
            if let Some((view, next)) = self.engine.advance_view(chain, head).await? {
                let added = &next.layers()[chain.layers().len()..];
                let sessions = self.sessions.lock().await;
                if let Some((_, rs)) = sessions.last() {
                    match rs.move_to(head, added).await {
                        Ok(()) => {
                            drop(sessions);
                            self.chain = Some(next);
                            return Ok((view, "built on the one served"));
                        }
                        // (gc took a layer the view reads: build it whole.)
                        Err(e) => tracing::info!(
                            "following {}: building the view of {} whole: {e}",
                            self.branch,
                            short(&head.id)
                        ),
                    }
                }
            }
        }
        let (rs, (view, chain)) =
            ReadSession::open_chain(self.engine.clone(), &self.repo, head, &self.holder).await?;
        self.sessions.lock().await.push((gen, rs));
        self.chain = Some(chain);
        Ok((view, "built whole"))
    }
}

/// Where a running mount keeps its metrics snapshot (JSON, rewritten every second) for
/// `quackfs status --json`, next to its run file.
pub fn metrics_file(runfile: &Path) -> PathBuf {
    runfile.with_extension("metrics.json")
}

/// The figures last written by the mount at `dir` (its pid file in `run_dir`), if it is running
/// (it rewrites them every second and removes them when it ends).
pub fn metrics_of(run_dir: &Path, dir: &str) -> Option<serde_json::Value> {
    let file = metrics_file(&runfile(run_dir, Path::new(dir)));
    metrics_since(&file, std::time::UNIX_EPOCH)
}

/// The figures in `file` if they were written at `since` or later.
fn metrics_since(file: &Path, since: SystemTime) -> Option<serde_json::Value> {
    let written = std::fs::metadata(file).and_then(|m| m.modified()).ok()?;
    if written < since {
        return None;
    }
    let bytes = std::fs::read(file).ok()?;
    serde_json::from_slice(&bytes).ok()
}

/// The figures of the mount at `dir` written after `since`, waiting for its next report (at most
/// a few seconds); None if the mount does not report.
pub async fn fresh_metrics(
    run_dir: &Path,
    dir: &str,
    since: SystemTime,
) -> Option<serde_json::Value> {
    let file = metrics_file(&runfile(run_dir, Path::new(dir)));
    for _ in 0..30 {
        if let Some(m) = metrics_since(&file, since) {
            return Some(m);
        }
        if !file.exists() {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    None
}

/// The mount's figures now, with the branch's pending layers from the catalog.
async fn metrics_now(
    fs: &QuackFs,
    engine: &quackfs::engine::Engine,
    repo_id: i64,
    branch: Option<&str>,
) -> quackfs::metrics::Snapshot {
    let (layers, bytes) = match branch {
        Some(b) => match engine.catalog.pending(repo_id, b).await {
            Ok(Some(p)) => (
                p.layers.len() as u64,
                p.layers.iter().map(|l| l.size_bytes.max(0) as u64).sum(),
            ),
            Ok(None) => (0, 0),
            Err(e) => {
                quackfs::metrics::count_catalog_error(&e);
                (0, 0)
            }
        },
        None => (0, 0),
    };
    fs.metrics(layers, bytes)
}

/// Writes the metrics snapshot every second and, with --metrics, answers scrapes.
async fn report_metrics(
    fs: Arc<QuackFs>,
    engine: Arc<quackfs::engine::Engine>,
    repo_id: i64,
    branch: Option<String>,
    file: PathBuf,
    listener: Option<tokio::net::TcpListener>,
) {
    if let Some(listener) = listener {
        let (fs, engine, branch) = (fs.clone(), engine.clone(), branch.clone());
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let (fs, engine, branch) = (fs.clone(), engine.clone(), branch.clone());
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |req| {
                        let (fs, engine, branch) = (fs.clone(), engine.clone(), branch.clone());
                        async move { scrape(req, &fs, &engine, repo_id, branch.as_deref()).await }
                    });
                    let io = hyper_util::rt::TokioIo::new(stream);
                    if let Err(e) = hyper::server::conn::http1::Builder::new()
                        .serve_connection(io, service)
                        .await
                    {
                        tracing::debug!("metrics connection: {e}");
                    }
                });
            }
        });
    }
    loop {
        let snap = metrics_now(&fs, &engine, repo_id, branch.as_deref()).await;
        if let Ok(json) = serde_json::to_vec(&snap) {
            let _ = quackfs::tmpfiles::write_whole(&file, json);
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// One HTTP request to the metrics address.
async fn scrape(
    req: hyper::Request<hyper::body::Incoming>,
    fs: &QuackFs,
    engine: &quackfs::engine::Engine,
    repo_id: i64,
    branch: Option<&str>,
) -> std::result::Result<
    hyper::Response<http_body_util::Full<bytes::Bytes>>,
    std::convert::Infallible,
> {
    let full = |status: u16, ctype: &str, body: String| {
        let mut resp = hyper::Response::new(http_body_util::Full::new(bytes::Bytes::from(body)));
        *resp.status_mut() = hyper::StatusCode::from_u16(status).unwrap_or(hyper::StatusCode::OK);
        if let Ok(v) = hyper::header::HeaderValue::from_str(ctype) {
            resp.headers_mut().insert(hyper::header::CONTENT_TYPE, v);
        }
        resp
    };
    if req.uri().path() != "/metrics" {
        return Ok(full(404, "text/plain", "quackfs serves /metrics\n".into()));
    }
    let snap = metrics_now(fs, engine, repo_id, branch).await;
    Ok(full(
        200,
        "application/openmetrics-text; version=1.0.0; charset=utf-8",
        quackfs::metrics::prometheus_text(&snap),
    ))
}

/// Where a mount process leaves the outcome of its final sync ("ok" or "error: …") for
/// `quackfs umount`, next to its run file.
pub fn outcome_file(runfile: &Path) -> PathBuf {
    runfile.with_extension("outcome")
}

/// Size of the outcome record: written at mount time, overwritten in place at the end.
const OUTCOME_LEN: usize = 4096;

/// `text` padded with spaces to the record size (cut to it if longer).
fn outcome_record(text: &str) -> Vec<u8> {
    let mut b: Vec<u8> = text.bytes().take(OUTCOME_LEN).collect();
    b.resize(OUTCOME_LEN, b' ');
    b
}

/// Overwrites the start of an existing file without allocating (works on a full disk).
fn overwrite(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let mut f = std::fs::OpenOptions::new().write(true).open(path)?;
    f.write_all(bytes)?;
    f.sync_data()
}

/// Starts the mount in a background process and waits until it is ready.
async fn daemonize(ctx: &Ctx, a: &MountArgs) -> Result<()> {
    let dir = check_mount_point(&a.dir, &ctx.cfg)?;
    let exe = std::env::current_exe().map_err(|e| Error::file("quackfs", e))?;
    let logs = ctx.cfg.logs_dir();
    std::fs::create_dir_all(&logs).map_err(|e| Error::file(&logs, e))?;
    let log_path = logs.join(format!("mount-{}.log", quackfs::engine::new_id()));
    let log = std::fs::File::create(&log_path).map_err(|e| Error::file(&log_path, e))?;
    let ready = ctx
        .cfg
        .run_dir()
        .join(format!("ready-{}", quackfs::engine::new_id()));
    if let Some(p) = ready.parent() {
        std::fs::create_dir_all(p).map_err(|e| Error::file(p, e))?;
    }
    // Re-run this command without --daemon, in its own session, with the same configuration.
    let mut args: Vec<std::ffi::OsString> = Vec::new();
    let g = &ctx.cfg;
    args.extend(["--data-dir".into(), g.data_dir.clone().into_os_string()]);
    // The log level too: its log file is where `-v` shows.
    for _ in 0..ctx.verbose {
        args.push("-v".into());
    }
    if ctx.quiet {
        args.push("-q".into());
    }

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
    if a.follow {
        args.push("--follow".into());
        args.extend([
            "--follow-interval".into(),
            format!("{}ms", a.follow_interval.as_millis()).into(),
        ]);
    }
    if a.autocommit == Autocommit::Off {
        args.extend(["--autocommit".into(), "off".into()]);
    }
    if let Some(at) = &a.at {
        args.extend(["--at".into(), at.into()]);
    }
    if let Some(n) = a.cache_size {
        args.extend(["--cache-size".into(), n.to_string().into()]);
    }
    if let Some(n) = a.dirty_limit {
        args.extend(["--dirty-limit".into(), n.to_string().into()]);
    }
    if let Some(n) = a.disk_cache {
        args.extend(["--disk-cache".into(), n.to_string().into()]);
    }
    if let Some(addr) = a.metrics {
        args.extend(["--metrics".into(), addr.to_string().into()]);
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

//! The engine: resolves revisions, builds read views, and turns new bytes into layers and commits.
//!
//! Upload order (invariant 1): a layer object is fully stored before the catalog transaction that
//! references it; if that transaction never happens the object is an orphan that `gc` removes.

pub mod binding;
pub mod disk_cache;
pub mod duckdb_file;
pub mod export;
pub mod extent_map;
pub mod history;
pub mod import;
pub mod inline;
pub mod layers;
pub mod maintenance;
pub mod session;
pub mod sink;
pub mod view;

use crate::catalog::{self, Commit, CommitKind, DynCatalog, NewCommit, RefKind, Repo};
use crate::config::Config;
use crate::error::{Error, Result};
use crate::refspec::{Rev, RevSpec, Suffix};
use crate::store::{self, DynStore};
use crate::tmpfiles::TempFile;
use chrono::{DateTime, Utc};
use layers::LayerCache;
use std::path::PathBuf;
use std::sync::Arc;
use view::ReadView;

/// Bytes of verified extents kept in memory by the layer cache (`mount --cache-size`).
pub const EXTENT_CACHE_BYTES: u64 = 256 * 1024 * 1024;

/// The object key of a layer.
pub fn layer_key(layer_id: &str) -> String {
    format!("{}{layer_id}", crate::catalog::LAYERS_PREFIX)
}

/// A fresh random id: 32 lowercase hex digits.
pub fn new_id() -> String {
    uuid::Uuid::new_v4().simple().to_string()
}

/// A fresh file identity (positive, fits the catalog's BIGINT).
pub fn new_file_id() -> u64 {
    uuid::Uuid::new_v4().as_u64_pair().0 & (i64::MAX as u64)
}

/// Current time in catalog milliseconds.
pub fn now_millis() -> i64 {
    Utc::now().timestamp_millis()
}

/// Formats catalog milliseconds as an RFC 3339 UTC time.
pub fn fmt_time(ms: i64) -> String {
    DateTime::<Utc>::from_timestamp_millis(ms)
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
        .unwrap_or_else(|| ms.to_string())
}

/// The first 12 hex digits of a commit id.
pub fn short(id: &str) -> &str {
    &id[..id.len().min(12)]
}

/// Opens the object store named by `url`: `file://PATH` or `s3://BUCKET[/PREFIX]` (endpoint,
/// region and credentials from the environment; see [`store::s3`]). Contacts nothing yet.
pub async fn open_store(url: &str) -> Result<DynStore> {
    if let Some(path) = url.strip_prefix("file://") {
        // `file://` alone would be the current directory; a relative path depends on where the
        // command runs. Neither is a store anyone meant.
        if !path.starts_with('/') {
            return Err(Error::Config(format!(
                "invalid object store URL {url:?}: file:// needs an absolute path (file:///var/lib/quackfs/objects)"
            )));
        }
        Ok(Arc::new(store::local::LocalStore::open(PathBuf::from(
            path,
        ))?))
    } else if url.starts_with("s3://") {
        let s3 = store::s3::S3Store::open(url)
            .await
            .map_err(|e| Error::Config(format!("object store {url}: {e}")))?;
        Ok(Arc::new(s3))
    } else {
        Err(Error::Config(format!(
            "invalid object store URL {url:?}: expected file://PATH or s3://BUCKET[/PREFIX]"
        )))
    }
}

/// A revision resolved to a commit.
#[derive(Debug, Clone)]
pub struct Resolved {
    pub repo: Repo,
    pub commit: Commit,
    /// Set when the revision is exactly a branch name (so it can be written to).
    pub branch: Option<String>,
    /// Remarks for the user (e.g. a time in the future).
    pub notes: Vec<String>,
}

/// The engine: a catalog, an object store and caches.
pub struct Engine {
    pub catalog: DynCatalog,
    pub store: DynStore,
    pub layers: Arc<LayerCache>,
    pub tmp_dir: PathBuf,
    pub author: String,
    /// The store as readers see it also holds layers kept in the catalog (see [`inline`]).
    pub inline: Arc<inline::InlineStore>,
    sink: sink::LayerSink,
    disk: Option<Arc<disk_cache::DiskCache>>,
    extent_bytes: u64,
    /// What the engine knows about the store belonging to the catalog (gc deletes unreferenced
    /// objects only when it can prove they are the catalog's own).
    pub ownership: Ownership,
}

/// How an engine's store is known to belong to its catalog.
#[derive(Debug, Clone)]
pub enum Ownership {
    /// The caller vouches for it ([`Engine::new`]: tests and library users with their own
    /// backends): every unreferenced object is the catalog's.
    Trusted,
    /// Checked with the store's marker ([`binding::bind`]).
    Bound(binding::Binding),
    /// Not checked (read-only commands): gc deletes no unreferenced object.
    Unchecked,
}

/// What a command will do with the backends, which decides what [`Engine::open`] checks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Reads only: the catalog must exist; the store is not contacted.
    Read,
    /// Writes or deletes objects: the catalog must exist and be bound to the store.
    Write,
    /// `init`: creates the catalog if needed and binds it to an empty store.
    Create,
}

impl Engine {
    /// Opens the backends named by the configuration. Only [`Access::Create`] creates a catalog;
    /// [`Access::Write`] and `Create` check (or make) the catalog's binding to its store.
    pub async fn open(cfg: &Config, access: Access) -> Result<Engine> {
        std::fs::create_dir_all(&cfg.data_dir).map_err(|e| Error::file(&cfg.data_dir, e))?;
        let tmp_dir = cfg.tmp_dir();
        std::fs::create_dir_all(&tmp_dir).map_err(|e| Error::file(&tmp_dir, e))?;
        // Layers half-written by commands that were killed (never those of running ones).
        crate::tmpfiles::sweep(&tmp_dir, |_| true);
        let store = open_store(&cfg.store_url).await?;
        if access == Access::Create {
            if let Some(path) = cfg.catalog_url.strip_prefix("sqlite://") {
                if catalog::sqlite_missing(path).is_some() {
                    // A new catalog file: make sure the store can be bound before creating it.
                    binding::check_store_for_new_catalog(&store).await?;
                }
            }
        }
        let catalog = catalog::open_with(&cfg.catalog_url, access == Access::Create).await?;
        let ownership = match access {
            Access::Read => {
                if catalog.binding().await?.is_blank() {
                    return Err(binding::not_initialized(&catalog));
                }
                Ownership::Unchecked
            }
            Access::Write => {
                Ownership::Bound(binding::bind(&catalog, &store, binding::Purpose::Write).await?)
            }
            Access::Create => {
                Ownership::Bound(binding::bind(&catalog, &store, binding::Purpose::Create).await?)
            }
        };
        let mut engine = Engine::new(catalog, store, tmp_dir, cfg.author.clone());
        engine.ownership = ownership;
        // Extents read from a remote store are kept on local disk too (shared by the processes
        // of this data directory, surviving remounts); a local store needs no second copy.
        let disk = disk_cache::configured_bytes(engine.store.as_local().is_some());
        if disk > 0 {
            match disk_cache::DiskCache::open(cfg.cache_dir(), disk) {
                Ok(d) => engine.set_disk_cache(Some(Arc::new(d))),
                Err(e) => tracing::warn!("no disk cache: {e}"),
            }
        }
        Ok(engine)
    }

    /// An engine over given backends; the caller vouches that the store belongs to the catalog
    /// ([`Ownership::Trusted`]).
    pub fn new(catalog: DynCatalog, store: DynStore, tmp_dir: PathBuf, author: String) -> Engine {
        // Traffic and errors of the object store itself (not of layers kept in the catalog).
        let store = crate::metrics::MeteredStore::wrap(store);
        let inline = Arc::new(inline::InlineStore::new(catalog.clone(), store));
        let store: DynStore = inline.clone();
        let layers = Arc::new(LayerCache::new(store.clone(), EXTENT_CACHE_BYTES));
        let sink = sink::LayerSink::new(store.clone(), tmp_dir.clone());
        Engine {
            catalog,
            store,
            layers,
            tmp_dir,
            author,
            inline,
            sink,
            disk: None,
            extent_bytes: EXTENT_CACHE_BYTES,
            ownership: Ownership::Trusted,
        }
    }

    /// Bounds the in-memory cache of extents read from the store to `bytes` (before any view is
    /// opened: views share the cache they were opened with).
    pub fn set_extent_cache(&mut self, bytes: u64) {
        self.extent_bytes = bytes;
        self.layers = Arc::new(LayerCache::with_disk(
            self.store.clone(),
            bytes,
            self.disk.clone(),
        ));
    }

    /// Puts an on-disk cache under the in-memory one (before any view is opened).
    pub fn set_disk_cache(&mut self, disk: Option<Arc<disk_cache::DiskCache>>) {
        self.disk = disk;
        self.set_extent_cache(self.extent_bytes);
    }

    /// The on-disk extent cache, if there is one.
    pub fn disk_cache(&self) -> Option<&Arc<disk_cache::DiskCache>> {
        self.disk.as_ref()
    }

    /// Records a session of this process (`kind`: import, merge, gc; repo 0: all databases)
    /// for the layers it writes or reads while it runs (see [`session::SessionHandle`]).
    pub async fn open_session(&self, repo_id: i64, kind: &str) -> Result<session::SessionHandle> {
        let holder = crate::process::holder_string(std::path::Path::new("-"));
        session::SessionHandle::open(self.catalog.clone(), repo_id, kind, &holder, None).await
    }

    /// The one writer of layer objects (mount syncs, import, merge, images).
    pub fn sink(&self) -> &sink::LayerSink {
        &self.sink
    }

    /// Creates a database with branch `main` at an empty root commit.
    pub async fn init(&self, name: &str) -> Result<(Repo, Commit)> {
        crate::names::validate_name("database", name)?;
        let root = NewCommit {
            id: new_id(),
            kind: CommitKind::Init,
            message: "init".into(),
            author: self.author.clone(),
            time: now_millis(),
            merge_parent: None,
        };
        self.catalog
            .create_repo(name, root)
            .await
            .map_err(|e| match e {
                catalog::CatalogError::Exists { .. } => Error::RepoExists(name.to_string()),
                other => other.into(),
            })
    }

    /// The database called `name`.
    pub async fn repo(&self, name: &str) -> Result<Repo> {
        crate::names::validate_name("database", name)?;
        self.catalog
            .repo(name)
            .await?
            .ok_or_else(|| Error::NoSuchRepo(name.to_string()))
    }

    /// The commit a branch points at.
    pub async fn branch_head(&self, repo: &Repo, branch: &str) -> Result<Commit> {
        let r = self.catalog.get_ref(repo.id, branch).await?;
        match r {
            Some(r) if r.kind == RefKind::Branch => self.commit(&r.commit_id).await,
            Some(_) => Err(Error::Refused(format!(
                "{branch:?} is a tag, not a branch; tags never move"
            ))),
            None => Err(Error::NoSuchRef {
                kind: "branch",
                name: branch.into(),
                repo: repo.name.clone(),
            }),
        }
    }

    /// A commit by full id.
    pub async fn commit(&self, id: &str) -> Result<Commit> {
        self.catalog.commit(id).await?.ok_or_else(|| {
            Error::Corrupt(format!(
                "the catalog references commit {id}, which does not exist"
            ))
        })
    }

    /// Refuses a commit gc expired: its bytes may be gone, so nothing reads it or builds on it
    /// (a branch, tag, reset or clone onto it would serve zeros).
    pub fn check_readable(&self, commit: &Commit) -> Result<()> {
        match commit.expired_at {
            Some(at) => Err(Error::expired(&commit.id, at)),
            None => Ok(()),
        }
    }

    /// The read view of a commit.
    pub async fn view(&self, commit: &Commit) -> Result<ReadView> {
        self.check_readable(commit)?;
        ReadView::open(&self.catalog, self.layers.clone(), commit.clone()).await
    }

    /// The read view of a commit and the chain it was built from (see [`view::ViewChain`]).
    pub async fn view_chain(&self, commit: &Commit) -> Result<(ReadView, view::ViewChain)> {
        self.check_readable(commit)?;
        ReadView::open_chain(&self.catalog, self.layers.clone(), commit.clone()).await
    }

    /// The read view of `commit` built on `chain` ([`view::ViewChain::advance`]); `None`
    /// when it has to be built whole.
    pub async fn advance_view(
        &self,
        chain: &view::ViewChain,
        commit: &Commit,
    ) -> Result<Option<(ReadView, view::ViewChain)>> {
        self.check_readable(commit)?;
        chain
            .advance(&self.catalog, self.layers.clone(), commit.clone())
            .await
    }

    /// Resolves `rev` in `repo`.
    pub async fn resolve(&self, repo: &Repo, rev: &Rev) -> Result<Resolved> {
        let unknown = || Error::UnknownRevision {
            rev: rev.to_string(),
            repo: repo.name.clone(),
        };
        let mut notes = Vec::new();
        let mut branch = None;
        let mut commit = match self.catalog.get_ref(repo.id, &rev.base).await? {
            Some(r) => {
                if r.kind == RefKind::Branch {
                    branch = Some(r.name.clone());
                }
                if crate::names::looks_like_commit_id(&r.name) {
                    // The ref wins (see docs/revisions.md); say which commit it hides.
                    let prefix = r.name.to_ascii_lowercase();
                    let hidden = self.catalog.commits_by_prefix(repo.id, &prefix, 2).await?;
                    if let Some(c) = hidden.iter().find(|c| c.id != r.commit_id) {
                        notes.push(format!(
                            "{:?} is a {}; commit {} also starts with {} (give more digits to name the commit)",
                            r.name,
                            r.kind.as_str(),
                            short(&c.id),
                            r.name
                        ));
                    }
                }
                self.commit(&r.commit_id).await?
            }
            None => {
                let hex = rev.base.len() >= 4 && rev.base.chars().all(|c| c.is_ascii_hexdigit());
                if !hex {
                    return Err(unknown());
                }
                let prefix = rev.base.to_ascii_lowercase();
                let found = self.catalog.commits_by_prefix(repo.id, &prefix, 10).await?;
                match found.len() {
                    0 => return Err(unknown()),
                    1 => found.into_iter().next().ok_or_else(unknown)?,
                    _ => {
                        let mut candidates: Vec<&str> =
                            found.iter().map(|c| short(&c.id)).collect();
                        if found.len() == 10 {
                            candidates.push("…");
                        }
                        return Err(Error::AmbiguousRevision {
                            rev: rev.base.clone(),
                            candidates: candidates.join(", "),
                        });
                    }
                }
            }
        };
        let mut applied = rev.base.clone();
        for s in &rev.suffixes {
            match s {
                Suffix::At(t) => {
                    let Some(b) = branch.take() else {
                        return Err(Error::Usage {
                            message: format!(
                                "{applied}@{{{}}}: only a branch has a history of where it pointed; {applied} is not a branch",
                                t.text
                            ),
                            hint: "put @{TIME} (or --at) on a branch: `main@{2 hours ago}`; `quackfs reflog BRANCH` lists its moves".into(),
                        });
                    };
                    commit = self.branch_at(repo, &b, t.at, &t.text, &mut notes).await?;
                }
                Suffix::Parent(n) => {
                    branch = None;
                    let chain = self.catalog.ancestors(&commit.id, *n as i64 + 1).await?;
                    if chain.len() <= *n as usize {
                        return Err(Error::NoSuchAncestor(format!(
                            "{applied}~{n}: {applied} has only {} commit(s) before it",
                            chain.len().saturating_sub(1)
                        )));
                    }
                    commit = chain.into_iter().last().ok_or_else(unknown)?;
                }
                Suffix::Nth(0) => branch = None,
                Suffix::Nth(n) => {
                    branch = None;
                    let parent = match n {
                        1 => commit.parent_id.clone(),
                        2 => commit.merge_parent_id.clone(),
                        _ => None,
                    };
                    let Some(parent) = parent else {
                        let has = match (&commit.parent_id, &commit.merge_parent_id) {
                            (None, _) => "no parent (it is the first commit)",
                            (Some(_), None) => "one parent",
                            (Some(_), Some(_)) => "two parents",
                        };
                        return Err(Error::NoSuchAncestor(format!(
                            "{applied}^{n}: {applied} has {has}"
                        )));
                    };
                    commit = self.catalog.commit(&parent).await?.ok_or_else(unknown)?;
                }
            }
            applied = match s {
                Suffix::At(t) => format!("{applied}@{{{}}}", t.text),
                Suffix::Parent(n) => format!("{applied}~{n}"),
                Suffix::Nth(n) => format!("{applied}^{n}"),
            };
        }
        Ok(Resolved {
            repo: repo.clone(),
            commit,
            branch,
            notes,
        })
    }

    /// Where `branch` pointed at `at` (reflog semantics).
    async fn branch_at(
        &self,
        repo: &Repo,
        branch: &str,
        at: DateTime<Utc>,
        text: &str,
        notes: &mut Vec<String>,
    ) -> Result<Commit> {
        let at_ms = at.timestamp_millis();
        let log = self.catalog.reflog(repo.id, branch).await?;
        let Some(entry) = log.iter().find(|e| e.at <= at_ms) else {
            let created = log
                .last()
                .map(|e| fmt_time(e.at))
                .unwrap_or_else(|| "never".into());
            return Err(Error::TimeOutOfRange(format!(
                "branch {branch:?} did not exist at {} ({text}): it was created at {created}",
                fmt_time(at_ms)
            )));
        };
        let Some(id) = &entry.new_commit else {
            return Err(Error::TimeOutOfRange(format!(
                "branch {branch:?} had been deleted at {} ({text})",
                fmt_time(at_ms)
            )));
        };
        if at_ms > now_millis() {
            notes.push(format!(
                "{text} is in the future; using the head of {branch}"
            ));
        }
        self.commit(id).await
    }

    /// Resolves a `[REPO@]REV` given on the command line (order: docs/revisions.md). Without `@`,
    /// a name that is a database (and not a revision of the current one) means that database's
    /// `main`, with a note saying so.
    pub async fn resolve_spec(&self, spec: &RevSpec, current: Option<&str>) -> Result<Resolved> {
        if let Some(name) = &spec.repo {
            let repo = self.repo(name).await?;
            return self.resolve(&repo, &spec.rev).await;
        }
        let Some(cur) = current else {
            return self
                .database_main(spec, None)
                .await?
                .ok_or(Error::NoRepoSelected);
        };
        let repo = self.repo(cur).await?;
        let unknown = match self.resolve(&repo, &spec.rev).await {
            Err(e @ Error::UnknownRevision { .. }) => e,
            other => return other,
        };
        // Unknown for its base name, not for a suffix (as `main~999` is): a database of that
        // name may be meant.
        let base = Rev {
            base: spec.rev.base.clone(),
            suffixes: vec![],
        };
        if !spec.rev.suffixes.is_empty() && self.resolve(&repo, &base).await.is_ok() {
            return Err(unknown);
        }
        self.database_main(spec, current).await?.ok_or(unknown)
    }

    /// The `main` of the database named like `spec`'s base, with the same suffixes (`shop~1`,
    /// `mount shop DIR --at TIME`), noting that it is used when it is not the current database;
    /// None if there is no such database.
    async fn database_main(
        &self,
        spec: &RevSpec,
        current: Option<&str>,
    ) -> Result<Option<Resolved>> {
        let Some(repo) = self.catalog.repo(&spec.rev.base).await? else {
            return Ok(None);
        };
        let main = Rev {
            base: "main".into(),
            suffixes: spec.rev.suffixes.clone(),
        };
        let mut r = self.resolve(&repo, &main).await?;
        if let Some(cur) = current.filter(|c| *c != repo.name) {
            // Never silently: the user may have meant a branch that is gone.
            r.notes.push(format!(
                "{:?} is not a revision of database {cur:?}; using database {:?} (its branch main)",
                spec.rev.base, repo.name
            ));
        }
        Ok(Some(r))
    }

    /// Runs `op`, a catalog change that moves or deletes a branch (the catalog checks the
    /// single-writer rule in the same transaction). If it is refused because a writable mount of
    /// this machine holds the branch but its process is dead (`kill -9`, a crash), that lease is
    /// broken (which fences it) and `op` runs again; a live holder, or one on another host whose
    /// heartbeat is fresh, keeps the refusal.
    pub async fn unless_dead_writer<T, F, Fut>(&self, repo_id: i64, op: F) -> Result<T>
    where
        F: Fn() -> Fut,
        Fut: std::future::Future<Output = Result<T, catalog::CatalogError>>,
    {
        // Each round breaks one dead lease (drop checks every branch of the database).
        for _ in 0..16 {
            match op().await {
                Err(catalog::CatalogError::LeaseHeld {
                    branch,
                    holder,
                    generation,
                    ..
                }) if crate::process::holder_is_dead(&holder) => {
                    tracing::info!("breaking the lease of {branch:?} held by dead {holder}");
                    self.catalog
                        .break_lease(repo_id, &branch, generation)
                        .await?;
                }
                other => return Ok(other?),
            }
        }
        Ok(op().await?)
    }

    /// A new temporary file in the scratch directory, `{what}-{pid}-{id}.tmp`: removed when the
    /// guard is dropped (a failed or interrupted command), swept by the next command if its
    /// process was killed (see [`crate::tmpfiles`]).
    pub fn temp_file(&self, what: &str) -> Result<(TempFile, std::fs::File)> {
        TempFile::create(&self.tmp_dir, &format!("{what}-"), ".tmp")
    }
}

/// A file being written sequentially that starts write-back every few MiB, so the final fsync
/// has little left to do (the disk works while we keep producing bytes).
pub struct WritebackFile {
    file: std::fs::File,
    written: u64,
    flushed: u64,
}

/// Bytes between two write-back kicks.
const WRITEBACK_EVERY: u64 = 16 * 1024 * 1024;

impl WritebackFile {
    pub fn new(file: std::fs::File) -> WritebackFile {
        WritebackFile {
            file,
            written: 0,
            flushed: 0,
        }
    }

    /// The file, for the final sync.
    pub fn into_inner(self) -> std::fs::File {
        self.file
    }
}

/// Asks the kernel to start writing `[off, off+len)` of `file` to disk, without waiting.
pub fn start_writeback(file: &std::fs::File, off: u64, len: u64) {
    use std::os::fd::AsRawFd;
    // SAFETY: a valid open fd; SYNC_FILE_RANGE_WRITE only initiates write-out.
    unsafe {
        libc::sync_file_range(
            file.as_raw_fd(),
            off as i64,
            len as i64,
            libc::SYNC_FILE_RANGE_WRITE,
        );
    }
}

impl std::io::Write for WritebackFile {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.file.write(buf)?;
        self.written += n as u64;
        if self.written - self.flushed >= WRITEBACK_EVERY {
            start_writeback(&self.file, self.flushed, self.written - self.flushed);
            self.flushed = self.written;
        }
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.file.flush()
    }
}

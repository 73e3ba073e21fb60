//! The catalog: the only mutable state of quackfs (databases, commits, refs, reflog, layers).
//!
//! One trait, two implementations sharing their SQL: SQLite (the embedded default) and
//! PostgreSQL (production). Every state change that must be atomic is one trait method, done in one
//! transaction by the implementation, so callers cannot leave the catalog half-updated.

mod sql;
/// A behaviour suite every catalog implementation must pass (used by unit and integration tests).
pub mod testsuite;

pub use sql::{PgCatalog, SqliteCatalog};

use crate::layer::LayerKind;
use async_trait::async_trait;
use serde::Serialize;
use std::sync::Arc;

/// Milliseconds since the Unix epoch, UTC.
pub type Millis = i64;

/// A writer lease whose heartbeat (by the catalog server's clock) is older than this is stale: a
/// mount may take the branch over, and a command may move it (fencing the old holder).
pub const LEASE_STALE_MS: i64 = 10_000;

/// Errors of the catalog.
#[derive(Debug, thiserror::Error)]
pub enum CatalogError {
    #[error("{what} {name:?} not found")]
    NotFound { what: &'static str, name: String },
    #[error("{what} {name:?} already exists")]
    Exists { what: &'static str, name: String },
    #[error("{0}")]
    Conflict(String),
    /// The database's error, worded by [`db_message`]. Not a `source`: the message already says
    /// what it does, and sqlx's own wording of it would follow on the same line.
    #[error("catalog {url}: {}", db_message(error))]
    Db { url: String, error: sqlx::Error },
    /// Connecting failed for the whole connect timeout (`QUACKFS_CONNECT_TIMEOUT`); `error` is
    /// what the last attempt met (the pool itself only says that it timed out).
    #[error(
        "catalog {url}: cannot connect (tried for {waited:?}): {}",
        db_message(error)
    )]
    Unreachable {
        url: String,
        waited: std::time::Duration,
        error: sqlx::Error,
    },
    /// An error of the SQLite catalog's sync connection (`SqliteCatalog::register_sync_impl`,
    /// which runs on rusqlite, not sqlx).
    #[error("catalog {url}: {error}")]
    Sqlite { url: String, error: rusqlite::Error },
    #[error("catalog {url}: migration failed: {source}")]
    Migrate {
        url: String,
        #[source]
        source: sqlx::migrate::MigrateError,
    },
    #[error("catalog {url}: corrupt row: {why}")]
    BadRow { url: String, why: String },
    #[error(
        "invalid catalog URL {0:?}: expected sqlite://PATH or postgres://USER:PASS@HOST:PORT/DB"
    )]
    BadUrl(String),
    #[error("branch {branch:?} is mounted writable by {holder} (last heartbeat {age_secs}s ago)")]
    LeaseHeld {
        branch: String,
        holder: String,
        age_secs: i64,
        /// The lease's fencing generation (to break it if its holder is known to be dead).
        generation: i64,
    },
    #[error("branch {branch:?} has synced changes that are not committed")]
    PendingChanges { branch: String },
    #[error("this writer no longer holds branch {0:?}: another mount took it over (fenced)")]
    Fenced(String),
    #[error("nothing to commit")]
    NothingPending,
    /// The catalog does not exist and this command does not create one (only `init` does).
    #[error("catalog {url} does not exist: {why}")]
    Missing { url: String, why: String },
    /// The commit was expired by gc: nothing may be built on it any more ([`expired_message`]).
    #[error("{0}")]
    Expired(String),
    #[error("{0}")]
    Refused(String),
}

/// What the database said, for a person: the server's own message, without sqlx's "error returned
/// from database: " prefix or the line of the PostgreSQL source file that raised it (" at line
/// 948"); an I/O error in the operating system's words (`Connection refused (os error 111)`);
/// any other error as sqlx words it.
fn db_message(e: &sqlx::Error) -> String {
    match e {
        sqlx::Error::Database(db) => db.message().to_string(),
        sqlx::Error::Io(io) => io.to_string(),
        e => e.to_string(),
    }
}

impl CatalogError {
    /// The catalog's disk (or quota) is full: SQLite's `SQLITE_FULL`, PostgreSQL's `disk_full`
    /// (53100), or an I/O error ENOSPC/EDQUOT. Reported as ENOSPC through a mount, with its own
    /// hint, not as "is the server up".
    pub fn is_no_space(&self) -> bool {
        let source = match self {
            CatalogError::Db { error, .. } => error,
            CatalogError::Sqlite { error, .. } => {
                return matches!(error, rusqlite::Error::SqliteFailure(e, _) if e.code == rusqlite::ErrorCode::DiskFull);
            }
            _ => return false,
        };
        match source {
            sqlx::Error::Database(db) => {
                let code = db.code().unwrap_or_default();
                let sqlite = db.try_downcast_ref::<sqlx::sqlite::SqliteError>().is_some();
                // SQLite reports extended result codes: the primary code is the low byte.
                let sqlite_full = sqlite && code.parse::<i64>().is_ok_and(|c| c & 0xff == 13);
                sqlite_full || (!sqlite && code == "53100")
            }
            sqlx::Error::Io(e) => matches!(e.raw_os_error(), Some(libc::ENOSPC | libc::EDQUOT)),
            _ => false,
        }
    }
}

/// A database (repository).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Repo {
    pub id: i64,
    pub name: String,
    pub created_at: Millis,
}

/// Why a commit was made.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum CommitKind {
    Init,
    Manual,
    Checkpoint,
    Import,
    Merge,
    Clone,
}

impl CommitKind {
    pub fn as_str(self) -> &'static str {
        match self {
            CommitKind::Init => "init",
            CommitKind::Manual => "manual",
            CommitKind::Checkpoint => "checkpoint",
            CommitKind::Import => "import",
            CommitKind::Merge => "merge",
            CommitKind::Clone => "clone",
        }
    }

    pub fn parse(s: &str) -> Option<CommitKind> {
        Some(match s {
            "init" => CommitKind::Init,
            "manual" => CommitKind::Manual,
            "checkpoint" => CommitKind::Checkpoint,
            "import" => CommitKind::Import,
            "merge" => CommitKind::Merge,
            "clone" => CommitKind::Clone,
            _ => return None,
        })
    }
}

/// One commit of a database.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Commit {
    pub id: String,
    pub repo_id: i64,
    pub parent_id: Option<String>,
    /// Number of ancestors (the root commit has depth 0).
    pub depth: i64,
    pub kind: CommitKind,
    pub message: String,
    pub author: String,
    pub created_at: Millis,
    /// Bytes of the layer objects this commit added.
    pub bytes_added: i64,
    /// Sum of the sizes of its files.
    pub logical_size: i64,
    /// When gc expired it (its bytes may be gone).
    pub expired_at: Option<Millis>,
    /// The second parent of a commit made by `apply` (the source head it brought in).
    pub merge_parent_id: Option<String>,
}

/// One file of a commit.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FileRow {
    pub path: String,
    /// Identity of the file's contents across renames (extents in layers are keyed by it).
    pub file_id: i64,
    pub size: i64,
}

/// One layer object registered in the catalog.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LayerRow {
    pub id: String,
    pub repo_id: i64,
    pub commit_id: Option<String>,
    /// Order of the layer within its commit (later layers win).
    pub seq: i64,
    pub kind: LayerKind,
    pub object_key: String,
    pub size_bytes: i64,
    /// Time range of the writes the layer holds.
    pub min_time: Millis,
    pub max_time: Millis,
    pub created_at: Millis,
}

/// Branch or tag.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum RefKind {
    Branch,
    Tag,
}

impl RefKind {
    pub fn as_str(self) -> &'static str {
        match self {
            RefKind::Branch => "branch",
            RefKind::Tag => "tag",
        }
    }
}

/// A branch or a tag.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RefRow {
    pub repo_id: i64,
    pub name: String,
    pub kind: RefKind,
    pub commit_id: String,
    pub created_at: Millis,
    pub updated_at: Millis,
}

/// One move of a branch.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ReflogEntry {
    pub id: i64,
    pub branch: String,
    pub old_commit: Option<String>,
    pub new_commit: Option<String>,
    pub at: Millis,
    pub reason: String,
}

/// The fields of a commit chosen by the caller.
#[derive(Debug, Clone)]
pub struct NewCommit {
    pub id: String,
    pub kind: CommitKind,
    pub message: String,
    pub author: String,
    /// Wall-clock time; the catalog raises it to keep commit times monotonic along the branch.
    pub time: Millis,
    /// The second parent (a merge by rows): the head of the source it brought in.
    pub merge_parent: Option<String>,
}

/// Everything a new commit on a branch consists of, applied in one transaction.
#[derive(Debug, Clone)]
pub struct CommitRequest {
    pub repo_id: i64,
    pub branch: String,
    /// The head the caller built on; if the branch moved meanwhile the commit is refused.
    pub expected_head: String,
    pub commit: NewCommit,
    /// The complete file list of the new commit.
    pub files: Vec<FileRow>,
    /// New layers owned by the commit (objects already stored).
    pub layers: Vec<LayerRow>,
    /// Reflog reason, e.g. "commit: load May".
    pub reason: String,
}

/// A writable mount's hold on a branch.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Lease {
    pub repo_id: i64,
    pub branch: String,
    /// Fencing generation: increases every time the lease changes hands.
    pub generation: i64,
    pub holder: String,
    pub acquired_at: Millis,
    pub heartbeat_at: Millis,
}

/// What was synced on a branch since its last commit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pending {
    /// The complete durable file table of the branch.
    pub files: Vec<FileRow>,
    /// Layers registered by syncs, in order.
    pub layers: Vec<LayerRow>,
    pub synced_at: Millis,
}

/// Syncs of a writable mount, registered together (group commit): their new layers, in order,
/// and the branch's durable file table after all of them.
#[derive(Debug, Clone)]
pub struct SyncRequest {
    pub repo_id: i64,
    pub branch: String,
    /// The writer's fencing generation; the sync is refused if the lease moved on.
    pub generation: i64,
    /// The new layers (stored, or inline); their `seq` is assigned by the catalog in this order.
    pub layers: Vec<SyncLayer>,
    pub files: Vec<FileRow>,
    pub now: Millis,
    /// The writer's session, which registers the new layers as ones it reads.
    pub session_id: Option<String>,
}

/// One new layer of a sync.
#[derive(Debug, Clone)]
pub struct SyncLayer {
    pub row: LayerRow,
    /// The catalog's copy of the whole layer object (`engine::inline::pack`: compressed when
    /// that pays), kept in the catalog (its key is `inline/ID`) instead of the object store:
    /// small syncs cost no store round trip.
    pub inline: Option<Vec<u8>>,
}

/// Key prefix of layer objects kept in the catalog (see [`SyncLayer::inline`]).
pub const INLINE_PREFIX: &str = "inline/";
/// The prefix of the keys of layer objects in the store (`layers/ID`).
pub const LAYERS_PREFIX: &str = "layers/";

/// A layer as gc sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GcLayer {
    pub row: LayerRow,
    /// Set while the layer is a pending segment of a branch.
    pub branch: Option<String>,
    pub superseded_at: Option<Millis>,
    pub doomed_at: Option<Millis>,
}

/// A read-only mount's pin on the commit it serves (its session, seen from that commit).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Pin {
    pub id: String,
    pub repo_id: i64,
    pub commit_id: String,
    pub holder: String,
    pub created_at: Millis,
    pub heartbeat_at: Millis,
}

/// Everything gc decides from, across all databases (layers are shared by clones).
#[derive(Debug, Clone, Default)]
pub struct GcSnapshot {
    pub commits: Vec<Commit>,
    pub layers: Vec<GcLayer>,
    pub refs: Vec<RefRow>,
    pub reflog: Vec<(i64, ReflogEntry)>,
    /// The sessions of read-only mounts, as pins of their commits.
    pub pins: Vec<Pin>,
    pub leases: Vec<Lease>,
    /// The catalog server's clock when the snapshot was read (heartbeats are in its time).
    pub server_now: Millis,
    pub sessions: Vec<Session>,
    /// (session id, layer id) of every layer a session registered.
    pub session_layers: Vec<(String, String)>,
}

/// A process that reads or writes layers while it runs (kind `writer`, `reader`, `import`,
/// `merge`): gc keeps the layers it registered while it is alive, and the unregistered objects
/// whose layer ids start with its id (its uploads in flight).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Session {
    pub id: String,
    pub repo_id: i64,
    pub kind: String,
    pub holder: String,
    pub created_at: Millis,
    pub heartbeat_at: Millis,
    /// The commit a read-only mount serves (its pin).
    pub commit_id: Option<String>,
}

/// This catalog's identity and whether it is bound to an object store (see
/// `engine::binding`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BindingState {
    /// The catalog's identity, once it has one (written at `init`, or when a catalog made by an
    /// earlier version is first used to write).
    pub catalog_id: Option<String>,
    /// The store's marker names this catalog.
    pub bound: bool,
    /// The store it was bound to, as described then (for messages).
    pub store: Option<String>,
    /// Any database was ever created (deleted ones count).
    pub has_repos: bool,
    /// Any layer is registered.
    pub has_layers: bool,
}

impl BindingState {
    /// A catalog that was never initialized: no identity and nothing in it.
    pub fn is_blank(&self) -> bool {
        self.catalog_id.is_none() && !self.has_repos && !self.has_layers
    }
}

/// Counters shown by `repos` and `status`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct RepoStats {
    pub branches: i64,
    pub tags: i64,
    pub commits: i64,
    /// Bytes of the layer objects owned by this database's commits.
    pub stored_bytes: i64,
    /// Of those, bytes of layer objects kept in the catalog (not in the object store).
    pub inline_bytes: i64,
}

/// The catalog interface.
#[async_trait]
pub trait Catalog: Send + Sync + 'static {
    /// Where the catalog lives, password masked.
    fn describe(&self) -> String;

    /// Notifications of ref moves ('REPO_ID:NAME') where the backend has them (PostgreSQL
    /// LISTEN/NOTIFY); None: poll.
    async fn ref_changes(&self) -> Option<tokio::sync::broadcast::Receiver<String>> {
        None
    }

    /// The catalog's identity and binding state.
    async fn binding(&self) -> Result<BindingState, CatalogError>;
    /// Records `id` as the catalog's identity (and `store` as its store) unless it already has
    /// one; returns the identity it has now. Concurrent callers all get the same one.
    async fn claim_id(&self, id: &str, store: &str) -> Result<String, CatalogError>;
    /// Records that the store's marker names this catalog.
    async fn confirm_bound(&self) -> Result<(), CatalogError>;

    /// Creates a database with an empty root commit and branch `main` pointing at it.
    async fn create_repo(
        &self,
        name: &str,
        root: NewCommit,
    ) -> Result<(Repo, Commit), CatalogError>;
    async fn repo(&self, name: &str) -> Result<Option<Repo>, CatalogError>;
    async fn repo_by_id(&self, id: i64) -> Result<Option<Repo>, CatalogError>;
    async fn repos(&self) -> Result<Vec<Repo>, CatalogError>;
    async fn repo_stats(&self, repo_id: i64) -> Result<RepoStats, CatalogError>;

    async fn refs(&self, repo_id: i64) -> Result<Vec<RefRow>, CatalogError>;
    async fn get_ref(&self, repo_id: i64, name: &str) -> Result<Option<RefRow>, CatalogError>;
    /// Creates a branch or tag (one namespace); records a reflog entry for a branch.
    async fn create_ref(
        &self,
        repo_id: i64,
        name: &str,
        kind: RefKind,
        commit_id: &str,
        reason: &str,
        now: Millis,
    ) -> Result<RefRow, CatalogError>;
    /// Deletes a branch or tag of that kind; records a reflog entry for a branch. A branch is
    /// refused while a writable mount holds it or it has synced-but-uncommitted changes
    /// (`LeaseHeld`, `PendingChanges`), checked in the same transaction.
    async fn delete_ref(
        &self,
        repo_id: i64,
        name: &str,
        kind: RefKind,
        now: Millis,
    ) -> Result<(), CatalogError>;

    async fn commit(&self, id: &str) -> Result<Option<Commit>, CatalogError>;
    /// Commits of the database whose id starts with `prefix` (at most `limit`).
    async fn commits_by_prefix(
        &self,
        repo_id: i64,
        prefix: &str,
        limit: i64,
    ) -> Result<Vec<Commit>, CatalogError>;
    /// The first-parent chain starting at `id`, newest first, at most `limit` commits.
    async fn ancestors(&self, id: &str, limit: i64) -> Result<Vec<Commit>, CatalogError>;
    async fn commit_files(&self, id: &str) -> Result<Vec<FileRow>, CatalogError>;
    /// Layers of every commit of the first-parent chain from `id`, oldest commit first and in
    /// `seq` order within a commit.
    async fn chain_layers(&self, id: &str) -> Result<Vec<LayerRow>, CatalogError>;
    /// The layers [`chain_layers`](Self::chain_layers) of `id` has beyond those of `ancestor`,
    /// the commit `steps` first parents below it: the layers of the `steps` commits above
    /// `ancestor`, in the same order. `None` if the commit there is not `ancestor` (or the
    /// chain does not reach that far). Costs what those commits hold, not the whole history.
    async fn chain_layers_since(
        &self,
        id: &str,
        ancestor: &str,
        steps: i64,
    ) -> Result<Option<Vec<LayerRow>>, CatalogError>;
    /// Layers owned by one commit, in `seq` order.
    async fn commit_layers(&self, id: &str) -> Result<Vec<LayerRow>, CatalogError>;

    /// Records a commit on a branch (compare-and-swap of the branch head), for commands other than
    /// the branch's writer (import): refused while a writable mount holds the branch or it has
    /// synced-but-uncommitted changes (`LeaseHeld`, `PendingChanges`), checked in the same
    /// transaction. A stale lease is released (fenced) by it.
    async fn make_commit(&self, req: CommitRequest) -> Result<Commit, CatalogError>;

    /// Moves of a branch, newest first.
    async fn reflog(&self, repo_id: i64, branch: &str) -> Result<Vec<ReflogEntry>, CatalogError>;

    /// Takes the writer lease of a branch; refused while another holder's heartbeat is younger
    /// than `stale_ms` (the catalog server's clock). Taking over a stale lease increases the
    /// generation (fencing the old one).
    async fn acquire_lease(
        &self,
        repo_id: i64,
        branch: &str,
        holder: &str,
        stale_ms: i64,
    ) -> Result<Lease, CatalogError>;
    /// Renews the lease (server clock); `Fenced` if it changed hands.
    async fn heartbeat(
        &self,
        repo_id: i64,
        branch: &str,
        generation: i64,
    ) -> Result<(), CatalogError>;
    /// Whether a command could move `branch` now (the check `make_commit` and `move_branch` make
    /// in their transaction): to fail early, before expensive work.
    async fn check_branch_free(&self, repo_id: i64, branch: &str) -> Result<(), CatalogError>;
    /// Releases the lease of generation `generation` on behalf of a holder known to be dead
    /// (fencing it); false if it changed hands or was released already.
    async fn break_lease(
        &self,
        repo_id: i64,
        branch: &str,
        generation: i64,
    ) -> Result<bool, CatalogError>;
    /// Gives the lease up (no-op if it already changed hands).
    async fn release_lease(
        &self,
        repo_id: i64,
        branch: &str,
        generation: i64,
    ) -> Result<(), CatalogError>;
    /// Leases not released, of every branch of the database.
    async fn leases(&self, repo_id: i64) -> Result<Vec<Lease>, CatalogError>;

    /// Registers a sync (fenced by the lease generation); returns the layer with its `seq`.
    async fn register_sync(&self, req: SyncRequest) -> Result<Vec<LayerRow>, CatalogError>;
    /// Registers a sync as [`register_sync`](Catalog::register_sync) and seals the branch's
    /// pending state (with the sync) into `commit` as
    /// [`commit_pending`](Catalog::commit_pending) does, in one transaction: the namespace change
    /// of a mount that completes a DuckDB checkpoint and its checkpoint commit. Nothing of
    /// either happens if either fails.
    async fn register_and_commit(
        &self,
        req: SyncRequest,
        commit: NewCommit,
    ) -> Result<(Vec<LayerRow>, Commit), CatalogError>;
    /// Replaces consecutive pending segments `old` of a branch by one layer (`req.layers[0]`,
    /// already stored) taking the first one's place, fenced by the writer's generation; the old
    /// ones are superseded (the writer still reads them). `Conflict` if one of them is no longer
    /// pending (a commit adopted it meanwhile).
    async fn replace_pending(
        &self,
        req: SyncRequest,
        old: &[String],
    ) -> Result<LayerRow, CatalogError>;
    /// The bytes of a layer object kept in the catalog, if it still is (else it was moved into
    /// the store as `layers/ID`).
    async fn inline_object(&self, id: &str) -> Result<Option<Vec<u8>>, CatalogError>;
    /// Layer objects still kept in the catalog whose layer is live (neither superseded by a
    /// compaction nor marked by gc: those go with their rows), created before `before`, oldest
    /// first, at most `limit`: (id, repo id, bytes).
    async fn inline_objects(
        &self,
        before: Millis,
        limit: i64,
    ) -> Result<Vec<(String, i64, Vec<u8>)>, CatalogError>;
    /// After the objects were stored as `layers/ID`: their layers name them and the catalog's
    /// copies go, all in one transaction.
    async fn spilled(&self, ids: &[String]) -> Result<(), CatalogError>;
    /// The synced-but-uncommitted state of a branch, if any.
    async fn pending(&self, repo_id: i64, branch: &str) -> Result<Option<Pending>, CatalogError>;
    /// Creates database `name` whose `main` starts at a `clone` commit on top of `source` (any
    /// database's commit), with the same files and no layers of its own: zero copy.
    async fn create_clone(
        &self,
        name: &str,
        source: &Commit,
        root: NewCommit,
    ) -> Result<(Repo, Commit), CatalogError>;
    /// Moves a branch to `target` (reset), refused while a writable mount holds it or while it
    /// has synced-but-uncommitted changes (same rule as `make_commit`), and, with `expected`,
    /// unless the branch still points there (compare-and-swap: a fast-forward).
    async fn move_branch(
        &self,
        repo_id: i64,
        branch: &str,
        expected: Option<&str>,
        target: &str,
        reason: &str,
        now: Millis,
    ) -> Result<(), CatalogError>;
    /// Deletes a database: its branches, tags, reflog and pending state go and its name is freed.
    /// Commits and layers stay (clones may build on them) until gc finds nothing needs them.
    /// Refused while a writable mount holds one of its branches (a fresh lease); stale leases are
    /// released, pending changes go with the database.
    async fn delete_repo(&self, repo_id: i64, now: Millis) -> Result<(), CatalogError>;
    /// Reads everything gc needs (all databases).
    async fn gc_snapshot(&self) -> Result<GcSnapshot, CatalogError>;
    /// Adds a layer to an existing commit after its others (merge's image layers).
    async fn add_layer(&self, commit_id: &str, layer: LayerRow) -> Result<LayerRow, CatalogError>;
    /// Replaces layers of one commit by one merged layer taking the first one's place; the old
    /// ones are marked superseded (readers that started before keep them).
    async fn replace_layers(
        &self,
        commit_id: &str,
        old: &[String],
        new: LayerRow,
        now: Millis,
    ) -> Result<(), CatalogError>;
    /// Marks layers doomed at `at`, or clears the mark with None.
    async fn set_doomed(&self, ids: &[String], at: Option<Millis>) -> Result<(), CatalogError>;
    /// Forgets doomed layers before their objects are deleted; returns those it forgot (a layer
    /// whose doom mark a session's registration cleared meanwhile stays).
    async fn delete_layers(&self, ids: &[String]) -> Result<Vec<String>, CatalogError>;
    /// Starts a session (a mount, an import, a merge): see [`Session`]. A read-only mount's
    /// session names the commit it serves (which gc then keeps readable: a pin).
    async fn open_session(
        &self,
        id: &str,
        repo_id: i64,
        kind: &str,
        holder: &str,
        commit_id: Option<&str>,
    ) -> Result<(), CatalogError>;
    /// Renews a session (server clock).
    async fn heartbeat_session(&self, id: &str) -> Result<(), CatalogError>;
    /// Ends a session and forgets the layers it registered.
    async fn close_session(&self, id: &str) -> Result<(), CatalogError>;
    /// Registers layers a session reads (clearing their doom marks), in one transaction;
    /// `Conflict` if one of them no longer exists (gc removed it: resolve again).
    async fn register_session_layers(
        &self,
        session_id: &str,
        layer_ids: &[String],
    ) -> Result<(), CatalogError>;
    /// A reader session moving on to `commit_id` (a follower): registers `layer_ids` like
    /// [`register_session_layers`](Self::register_session_layers) and makes the session pin
    /// `commit_id`, in one transaction.
    async fn move_session(
        &self,
        session_id: &str,
        commit_id: &str,
        layer_ids: &[String],
    ) -> Result<(), CatalogError>;
    /// Marks commits expired.
    async fn expire_commits(&self, ids: &[String], now: Millis) -> Result<(), CatalogError>;
    /// The pins of a database's commits (read-only mounts), oldest first.
    async fn pins(&self, repo_id: i64) -> Result<Vec<Pin>, CatalogError>;

    /// Seals the pending state of a branch into a commit on top of its head, in one transaction.
    /// `NothingPending` if nothing was synced since the last commit and `allow_empty` is false.
    async fn commit_pending(
        &self,
        repo_id: i64,
        branch: &str,
        commit: NewCommit,
        allow_empty: bool,
    ) -> Result<Commit, CatalogError>;
}

/// A shared catalog handle.
pub type DynCatalog = Arc<dyn Catalog>;

/// Opens the catalog named by `url` (`sqlite://PATH` or `postgres://…`), creating it if needed and
/// applying migrations.
pub async fn open(url: &str) -> Result<DynCatalog, CatalogError> {
    open_with(url, true).await
}

/// Opens the catalog named by `url`. With `create` false a catalog that does not exist yet (a
/// missing or empty SQLite file, a PostgreSQL database without the quackfs schema) is
/// [`CatalogError::Missing`] and nothing is created; an existing one is migrated.
pub async fn open_with(url: &str, create: bool) -> Result<DynCatalog, CatalogError> {
    if let Some(path) = url.strip_prefix("sqlite://") {
        if path.is_empty() {
            return Err(CatalogError::BadUrl(url.to_string()));
        }
        if !create {
            if let Some(why) = sqlite_missing(path) {
                return Err(CatalogError::Missing {
                    url: url.to_string(),
                    why,
                });
            }
        }
        Ok(Arc::new(SqliteCatalog::open(path).await?))
    } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        Ok(Arc::new(PgCatalog::open_with(url, create).await?))
    } else {
        Err(CatalogError::BadUrl(mask_url(url)))
    }
}

/// Why the SQLite catalog at `path` does not exist yet, if it does not.
pub fn sqlite_missing(path: &str) -> Option<String> {
    match std::fs::metadata(path) {
        Ok(m) if m.len() == 0 => Some("the file is empty".into()),
        Ok(_) => None,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Some("no such file".into()),
        // Anything else (permissions, …) is reported by opening it.
        Err(_) => None,
    }
}

/// Why commit `id`, expired by gc at `at`, cannot be read or built on.
pub fn expired_message(id: &str, at: Millis) -> String {
    format!(
        "commit {} expired: gc removed what it needed at {} (it was outside the retention window)",
        crate::engine::short(id),
        crate::engine::fmt_time(at)
    )
}

/// Replaces the password of a URL with `***` so it can be printed.
pub fn mask_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    let (authority, tail) = match rest.find('/') {
        Some(i) => rest.split_at(i),
        None => (rest, ""),
    };
    match authority.rsplit_once('@') {
        Some((userinfo, host)) => {
            let user = userinfo.split(':').next().unwrap_or("");
            if userinfo.contains(':') {
                format!("{scheme}://{user}:***@{host}{tail}")
            } else {
                format!("{scheme}://{user}@{host}{tail}")
            }
        }
        None => url.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masks_passwords() {
        assert_eq!(
            mask_url("postgres://bob:s3cret@db:5432/q?sslmode=require"),
            "postgres://bob:***@db:5432/q?sslmode=require"
        );
        assert_eq!(mask_url("postgres://bob@db/q"), "postgres://bob@db/q");
        assert_eq!(mask_url("sqlite:///tmp/x.sqlite"), "sqlite:///tmp/x.sqlite");
        assert_eq!(mask_url("postgres://u:p@ss@h/db"), "postgres://u:***@h/db");
    }
}

#[cfg(test)]
mod sqlite_suite {
    #[tokio::test]
    async fn sqlite_passes_the_catalog_suite() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("catalog.sqlite");
        let cat = super::open(&format!("sqlite://{}", path.display()))
            .await
            .unwrap();
        super::testsuite::run(cat.clone(), "aaaa").await;
        super::testsuite::syncs_and_checkpoint_commits(cat.clone(), "dddd").await;
        super::testsuite::concurrent_commits(cat.clone(), "bbbb").await;
        super::testsuite::layer_updates_in_any_order(cat.clone(), "eeee").await;
        super::testsuite::session_layers(cat.clone(), "ffff").await;
        super::testsuite::follower_moves(cat, "gggg").await;
    }

    /// A sync meets another writer (a command in another process) holding SQLite's write lock:
    /// it waits for it, blocking its own thread only (the runtime's other tasks go on), and
    /// then registers; it is never refused with "database is locked".
    #[tokio::test(flavor = "multi_thread", worker_threads = 1)]
    async fn sqlite_sync_waits_for_another_writer() {
        use super::*;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("catalog.sqlite");
        let cat = open(&format!("sqlite://{}", path.display())).await.unwrap();
        let (repo, _) = cat
            .create_repo("waits", testsuite::commit("root", 1_000))
            .await
            .unwrap();
        let lease = cat
            .acquire_lease(repo.id, "main", "test", 60_000)
            .await
            .unwrap();
        let other = rusqlite::Connection::open(&path).unwrap();
        other.execute_batch("BEGIN IMMEDIATE").unwrap();
        let held = std::time::Duration::from_millis(1500);
        let release = std::thread::spawn(move || {
            std::thread::sleep(held);
            other.execute_batch("COMMIT").unwrap();
        });
        let ticks = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let ticker = tokio::spawn({
            let ticks = ticks.clone();
            async move {
                loop {
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    ticks.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                }
            }
        });
        let id = "waits-s0";
        let started = std::time::Instant::now();
        // (On the runtime's one worker thread, as a mount's syncs run: the test's own body
        // runs on a thread of its own.)
        let sync = cat.clone();
        let synced = tokio::spawn(async move {
            sync.register_sync(SyncRequest {
                repo_id: repo.id,
                branch: "main".into(),
                generation: lease.generation,
                layers: vec![SyncLayer {
                    row: LayerRow {
                        object_key: format!("{INLINE_PREFIX}{id}"),
                        ..testsuite::layer(id, 0, repo.id)
                    },
                    inline: Some(b"abc".to_vec()),
                }],
                files: vec![],
                now: 2_000,
                session_id: None,
            })
            .await
        })
        .await
        .unwrap();
        let waited = started.elapsed();
        let ticked = ticks.load(std::sync::atomic::Ordering::SeqCst);
        ticker.abort();
        release.join().unwrap();
        let layers = synced.unwrap();
        assert_eq!(layers.len(), 1);
        assert!(
            waited >= held - std::time::Duration::from_millis(100),
            "{waited:?}"
        );
        assert!(
            ticked >= 10,
            "the runtime stood still while the sync waited: {ticked} ticks"
        );
        assert_eq!(
            cat.inline_object(id).await.unwrap().as_deref(),
            Some(&b"abc"[..])
        );
    }

    #[tokio::test]
    async fn sqlite_binding_and_missing_files() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.sqlite");
        let url = format!("sqlite://{}", path.display());
        assert!(matches!(
            super::open_with(&url, false).await,
            Err(super::CatalogError::Missing { .. })
        ));
        assert!(!path.exists(), "a missing catalog is not created");
        std::fs::write(&path, b"").unwrap();
        assert!(matches!(
            super::open_with(&url, false).await,
            Err(super::CatalogError::Missing { .. })
        ));
        let cat = super::open_with(&url, true).await.unwrap();
        super::testsuite::binding(cat).await;
        super::open_with(&url, false).await.unwrap();
    }

    #[tokio::test]
    async fn sqlite_reopens_with_data() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("c.sqlite").display());
        let cat = super::open(&url).await.unwrap();
        super::testsuite::run(cat, "cccc").await;
        let cat = super::open(&url).await.unwrap();
        assert!(cat.repo("suite-cccc").await.unwrap().is_some());
    }
}

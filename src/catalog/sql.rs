//! SQL implementations of [`Catalog`] for SQLite and PostgreSQL.
//!
//! Both backends run the same SQL text (`$N` placeholders, `RETURNING`, `WITH RECURSIVE` and
//! `ON CONFLICT` work in both), so one macro body implements the trait for each pool type; only
//! connecting, migrating and opening a write transaction differ.

use super::*;
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};
use sqlx::{Connection, Row};
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

const COMMIT_COLS: &str =
    "id, repo_id, parent_id, depth, kind, message, author, created_at, bytes_added, logical_size, expired_at, merge_parent_id";
const LAYER_COLS: &str =
    "id, repo_id, commit_id, seq, kind, object_key, size_bytes, min_time, max_time, created_at";

fn layer_kind_str(k: LayerKind) -> &'static str {
    match k {
        LayerKind::Delta => "delta",
        LayerKind::Image => "image",
    }
}

/// How long connecting keeps retrying before it gives up: `QUACKFS_CONNECT_TIMEOUT` (e.g. `5s`),
/// default 30 seconds.
fn connect_timeout() -> Duration {
    crate::tuning::duration("QUACKFS_CONNECT_TIMEOUT")
        .ok()
        .flatten()
        .unwrap_or(Duration::from_secs(30))
}

/// The SQLite catalog (embedded default).
pub struct SqliteCatalog {
    pool: SqlitePool,
    /// One connection for write transactions: SQLite has one writer at a time anyway, and a
    /// connection keeps its page cache only while no other connection wrote since its last
    /// transaction, so writes that follow each other (every sync of a mount) find their pages
    /// in memory instead of reading them again.
    writer: SqlitePool,
    /// The connection of the sync path (see [`register_sync_impl`](Self::register_sync_impl)),
    /// opened on first use; the catalog's file is `path`.
    sync_conn: std::sync::Mutex<Option<rusqlite::Connection>>,
    /// Taken by every write transaction of this catalog, on `writer` or `sync_conn`, before it
    /// begins (see [`WriteTx`]).
    write_gate: Arc<tokio::sync::Mutex<()>>,
    path: String,
    url: String,
}

/// The PostgreSQL catalog.
pub struct PgCatalog {
    pool: PgPool,
    url: String,
    /// Ref moves announced by the `refs_notify` trigger ('REPO_ID:NAME'), once someone listens.
    ref_changes: tokio::sync::OnceCell<tokio::sync::broadcast::Sender<String>>,
    /// When a call last found its connection lost: every pooled connection released before
    /// then is pinged before it is used again (it may have died with the same server).
    lost: std::sync::Arc<LossClock>,
    /// The connection of the commit path (see [`PgCatalog::commit_call`]), and when it was
    /// last used.
    commit_conn: tokio::sync::Mutex<Option<(sqlx::PgConnection, std::time::Instant)>>,
}

impl SqliteCatalog {
    /// SQLite has no notifications: followers poll.
    async fn ref_changes_impl(&self) -> Option<tokio::sync::broadcast::Receiver<String>> {
        None
    }

    /// The hot path of every DuckDB commit on a mount: `BEGIN IMMEDIATE`, the statements of
    /// [`sync_batch`](Self::sync_batch) (each fenced by the lease generation: a fenced sync
    /// writes nothing), its closing query of the branch's next sequence number, `COMMIT`, run
    /// on the calling thread on a connection of its own (rusqlite, prepared statements kept),
    /// not handed to sqlx's worker thread: per sync that saves ~10 thread switches and a
    /// quarter of the mount's CPU (docs/architecture.md). PostgreSQL makes the same steps in
    /// one call of `quackfs_register_sync` (migrations/postgres/0009_one_trip_sync.sql).
    async fn register_sync_impl(&self, req: SyncRequest) -> Result<Vec<LayerRow>, CatalogError> {
        let branch = req.branch.clone();
        let (mut batch, layers) = Self::sync_batch(req);
        batch.in_transaction();
        let _gate = self.write_gate.lock().await;
        let next = blocking(|| self.on_sync_conn(|conn| batch.run_sync(conn)))?;
        number_synced(next, layers, &branch)
    }

    /// Runs `f` on the connection of the sync path, opening it first if needed. A failed `f`
    /// leaves no transaction open: it is rolled back, or the connection closed if that fails.
    fn on_sync_conn<T>(
        &self,
        f: impl FnOnce(&rusqlite::Connection) -> rusqlite::Result<T>,
    ) -> Result<T, CatalogError> {
        let mut held = self
            .sync_conn
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let conn: &rusqlite::Connection = match &mut *held {
            Some(conn) => conn,
            slot @ None => slot.insert(self.open_sync_conn().map_err(|e| self.sqlite(e))?),
        };
        let out = f(conn);
        if out.is_err() && !conn.is_autocommit() {
            if let Err(e) = conn.execute_batch("ROLLBACK") {
                tracing::warn!("rolling back a failed catalog write: {e}; closing its connection");
                *held = None;
            }
        }
        out.map_err(|e| self.sqlite(e))
    }

    /// The sync path's connection, set as sqlx sets its own (`open`): WAL (the file's
    /// already), `synchronous=FULL`, foreign keys, a 30 s busy timeout.
    fn open_sync_conn(&self) -> rusqlite::Result<rusqlite::Connection> {
        let conn = rusqlite::Connection::open(&self.path)?;
        conn.execute_batch("PRAGMA synchronous = FULL; PRAGMA foreign_keys = ON;")?;
        conn.busy_timeout(Duration::from_secs(30))?;
        // A sync of L layers and F files has its own statement texts (placeholders are numbered
        // across the batch): room for the shapes group commits make.
        conn.set_prepared_statement_cache_capacity(64);
        Ok(conn)
    }

    fn sqlite(&self, error: rusqlite::Error) -> CatalogError {
        CatalogError::Sqlite {
            url: self.url.clone(),
            error,
        }
    }

    /// A sync and the checkpoint commit it completes in one write transaction (see
    /// [`Catalog::register_and_commit`]): the statements of both, one commit.
    async fn register_and_commit_impl(
        &self,
        req: SyncRequest,
        commit: NewCommit,
    ) -> Result<(Vec<LayerRow>, Commit), CatalogError> {
        let (repo_id, branch) = (req.repo_id, req.branch.clone());
        let mut tx = self.begin_write().await.map_err(|e| self.db(e))?;
        let (batch, layers) = Self::sync_batch(req);
        let rows = batch.fetch(&mut tx).await.map_err(|e| self.db(e))?;
        let layers = self.synced(rows, layers, &branch)?;
        let c = self
            .commit_pending_in(&mut tx, repo_id, &branch, commit, false)
            .await?;
        tx.commit().await.map_err(|e| self.db(e))?;
        Ok((layers, c))
    }

    /// The statements of a sync: the branch's next sequence number moved past the new layers
    /// (their `seq` follow from it), the layers and inline objects, the complete pending file
    /// table, each only while the writer holds the lease (`Batch::fenced`), then a query of the
    /// next sequence number (no row: fenced, nothing written). With the layers to number.
    fn sync_batch(req: SyncRequest) -> (Batch, Vec<LayerRow>) {
        let n = req.layers.len() as i64;
        let mut batch = Batch::fenced(req.repo_id, &req.branch, req.now, req.generation);
        batch.advance_seq(n);
        // (The writer's session holds these layers by their id prefix: no registration row.)
        let mut layers = Vec::with_capacity(req.layers.len());
        for (i, SyncLayer { row: mut l, inline }) in req.layers.into_iter().enumerate() {
            l.commit_id = None;
            if let Some(bytes) = inline {
                batch.inline_object(&l.id, bytes);
            }
            batch.pending_layer(&l, Some(i as i64 - n));
            layers.push(l);
        }
        batch.pending_files(&req.files);
        batch.next_seq();
        (batch, layers)
    }

    /// Numbers the layers of a sync from the rows of its batch (see [`number_synced`]).
    fn synced(
        &self,
        rows: Vec<sqlx::sqlite::SqliteRow>,
        layers: Vec<LayerRow>,
        branch: &str,
    ) -> Result<Vec<LayerRow>, CatalogError> {
        let next = rows
            .last()
            .map(|row| row.try_get::<i64, _>("next_seq"))
            .transpose()
            .map_err(|e| self.db(e))?;
        number_synced(next, layers, branch)
    }

    /// A checkpoint or `quackfs commit`, in four hand-offs as [`register_sync_impl`]
    /// (Self::register_sync_impl): the write transaction, one query of what the commit needs,
    /// one batch of the writes and the commit. PostgreSQL makes the same steps in one call of
    /// `quackfs_commit_pending` (migrations/postgres/0009_one_trip_sync.sql).
    async fn commit_pending_impl(
        &self,
        repo_id: i64,
        branch: &str,
        commit: NewCommit,
        allow_empty: bool,
    ) -> Result<Commit, CatalogError> {
        let mut tx = self.begin_write().await.map_err(|e| self.db(e))?;
        let c = self
            .commit_pending_in(&mut tx, repo_id, branch, commit, allow_empty)
            .await?;
        tx.commit().await.map_err(|e| self.db(e))?;
        Ok(c)
    }

    async fn commit_pending_in(
        &self,
        tx: &mut WriteTx,
        repo_id: i64,
        branch: &str,
        commit: NewCommit,
        allow_empty: bool,
    ) -> Result<Commit, CatalogError> {
        let row = sqlx::query(
            "SELECT r.commit_id AS head, c.id AS parent, c.depth, c.created_at, \
             EXISTS (SELECT 1 FROM pending WHERE repo_id = $1 AND branch = $2) AS pending, \
             (SELECT COALESCE(SUM(size_bytes), 0) FROM layers \
              WHERE repo_id = $1 AND branch = $2 AND commit_id IS NULL AND superseded_at IS NULL) AS bytes_added, \
             (SELECT COALESCE(SUM(size), 0) FROM pending_files WHERE repo_id = $1 AND branch = $2) AS pending_size, \
             (SELECT COALESCE(SUM(size), 0) FROM commit_files WHERE commit_id = r.commit_id) AS head_size \
             FROM refs r LEFT JOIN commits c ON c.id = r.commit_id \
             WHERE r.repo_id = $1 AND r.name = $2 AND r.kind = 'branch'",
        )
        .bind(repo_id)
        .bind(branch)
        .fetch_optional(&mut **tx)
        .await
        .map_err(|e| self.db(e))?;
        let Some(row) = row else {
            return Err(CatalogError::NotFound {
                what: "branch",
                name: branch.to_string(),
            });
        };
        let get = |name: &str| row.try_get::<i64, _>(name).map_err(|e| self.db(e));
        let head: String = row.try_get("head").map_err(|e| self.db(e))?;
        if row
            .try_get::<Option<String>, _>("parent")
            .map_err(|e| self.db(e))?
            .is_none()
        {
            return Err(CatalogError::NotFound {
                what: "commit",
                name: head,
            });
        }
        let pending = get("pending")? != 0;
        if !pending && !allow_empty {
            return Err(CatalogError::NothingPending);
        }
        let c = Commit {
            id: commit.id,
            repo_id,
            parent_id: Some(head.clone()),
            depth: get("depth")? + 1,
            kind: commit.kind,
            message: commit.message,
            author: commit.author,
            // Commit times are monotonic along a branch even if the clock steps back.
            created_at: commit.time.max(get("created_at")? + 1),
            bytes_added: get("bytes_added")?,
            logical_size: if pending {
                get("pending_size")?
            } else {
                get("head_size")?
            },
            expired_at: None,
            merge_parent_id: commit.merge_parent,
        };
        // The write transaction read the head: nobody can move it before this commits.
        let mut batch = Batch::new(repo_id, branch, c.created_at);
        batch.seal(&c, pending, &format!("{}: {}", c.kind.as_str(), c.message));
        batch.execute(tx).await.map_err(|e| self.db(e))?;
        Ok(c)
    }

    /// Opens (creating if needed) the SQLite catalog at `path` and applies migrations.
    pub async fn open(path: &str) -> Result<Self, CatalogError> {
        let url = format!("sqlite://{path}");
        let db = |error| CatalogError::Db {
            url: url.clone(),
            error,
        };
        if let Some(parent) = std::path::Path::new(path).parent() {
            if !parent.as_os_str().is_empty() {
                std::fs::create_dir_all(parent).map_err(|e| db(sqlx::Error::Io(e)))?;
            }
        }
        let opts = SqliteConnectOptions::new()
            .filename(path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full)
            .busy_timeout(Duration::from_secs(30))
            .foreign_keys(true);
        // A connection still inside a transaction when it is released or acquired is closed,
        // not reused: after SQLITE_FULL (disk full) SQLite rolls the transaction back itself, the
        // ROLLBACK sqlx sends then fails, and sqlx keeps counting the connection as inside a
        // transaction, so every later BEGIN on it would fail.
        // (No ping before each acquire: the file cannot hang up, and a ping is one more
        // hand-off to the connection's worker thread on every catalog call.)
        let pool_of = |n| {
            SqlitePoolOptions::new()
                .max_connections(n)
                .test_before_acquire(false)
                .before_acquire(|c, _| Box::pin(async move { Ok(!c.is_in_transaction()) }))
                .after_release(|c, _| Box::pin(async move { Ok(!c.is_in_transaction()) }))
        };
        let pool = pool_of(4).connect_with(opts.clone()).await.map_err(db)?;
        // The migrations commit with synchronous=NORMAL: a new catalog's schema is ten
        // transactions (one per migration), and with FULL each one waits for its fsyncs. In
        // WAL mode NORMAL cannot corrupt the file; a power cut can only lose the last
        // migrations, which the next open applies again (each one is recorded in the
        // transaction that applies it). The first write with FULL, by this process or
        // another, syncs the WAL and them with it, so nothing durable ever rests on a
        // migration that is not.
        let mut conn = pool.acquire().await.map_err(db)?;
        sqlx::query("PRAGMA synchronous = NORMAL")
            .execute(&mut *conn)
            .await
            .map_err(db)?;
        let migrated = sqlx::migrate!("migrations/sqlite").run(&mut *conn).await;
        // Back to FULL before the connection serves anything else (or closed, if that fails).
        if let Err(e) = sqlx::query("PRAGMA synchronous = FULL")
            .execute(&mut *conn)
            .await
        {
            conn.detach();
            return Err(db(e));
        }
        drop(conn);
        migrated.map_err(|source| CatalogError::Migrate {
            url: url.clone(),
            source,
        })?;
        // (Opened after the migrations, which may create the file's schema.)
        let writer = pool_of(1).connect_with(opts).await.map_err(db)?;
        Ok(SqliteCatalog {
            pool,
            writer,
            sync_conn: std::sync::Mutex::new(None),
            write_gate: Arc::new(tokio::sync::Mutex::new(())),
            path: path.to_string(),
            url,
        })
    }

    /// SQLite connections are not lost to a server going away.
    fn saw_error(&self, _: &sqlx::Error) {}

    /// A write statement on its own (autocommit, such as a heartbeat), on the writer
    /// connection through the write gate (see [`WriteTx`]).
    async fn write_one(
        &self,
        q: sqlx::query::Query<'_, sqlx::Sqlite, sqlx::sqlite::SqliteArguments>,
    ) -> Result<sqlx::sqlite::SqliteQueryResult, sqlx::Error> {
        let _gate = self.write_gate.lock().await;
        q.execute(&self.writer).await
    }

    async fn begin_write(&self) -> Result<WriteTx, sqlx::Error> {
        let gate = self.write_gate.clone().lock_owned().await;
        // IMMEDIATE takes the write lock up front, so a read-then-write transaction never fails
        // half-way with SQLITE_BUSY when another process writes.
        let tx = self.writer.begin_with("BEGIN IMMEDIATE").await?;
        Ok(WriteTx { tx, _gate: gate })
    }
}

/// A write transaction of the SQLite catalog, begun by [`SqliteCatalog::begin_write`]: a
/// transaction of its writer connection that holds the catalog's write gate until it ends.
/// SQLite has one writer at a time; the sync path's connection and the writer connection queue
/// at the gate instead of meeting on SQLite's lock, where the loser's busy handler sleeps 1 ms,
/// then 2, then 5 before it looks again: a DuckDB commit on a mount waited that long behind a
/// compaction's or a heartbeat's transaction of well under a millisecond. (Other processes
/// still meet on SQLite's lock.) Derefs to the connection, as a `sqlx::Transaction` does.
struct WriteTx {
    // (Fields drop in order: the transaction before the gate.)
    tx: sqlx::Transaction<'static, sqlx::Sqlite>,
    _gate: tokio::sync::OwnedMutexGuard<()>,
}

impl WriteTx {
    async fn commit(self) -> Result<(), sqlx::Error> {
        self.tx.commit().await
    }

    async fn rollback(self) -> Result<(), sqlx::Error> {
        self.tx.rollback().await
    }
}

impl std::ops::Deref for WriteTx {
    type Target = sqlx::SqliteConnection;
    fn deref(&self) -> &sqlx::SqliteConnection {
        &self.tx
    }
}

impl std::ops::DerefMut for WriteTx {
    fn deref_mut(&mut self) -> &mut sqlx::SqliteConnection {
        &mut self.tx
    }
}

/// Statements of one SQLite write transaction sent as one query (one hand-off to the
/// connection's worker thread instead of one per statement; the sync path runs them on its own
/// connection, [`Batch::run_sync`]). sqlx binds `$N` by its number
/// across all the statements of a query: `$1` is the repository, `$2` the branch, `$3` the time
/// and, in a fenced batch, `$4` the writer's lease generation. A batch of very many values
/// becomes several queries (SQLite allows 32,766 in one).
struct Batch {
    done: Vec<(String, Vec<Value>)>,
    sql: String,
    args: Vec<Value>,
    next: usize,
    common: (i64, String, Millis, Option<i64>),
    /// Whether the batch opens and closes its own transaction (`in_transaction`).
    own_transaction: bool,
}

/// A value bound to a placeholder of a [`Batch`].
enum Value {
    Int(i64),
    Text(String),
    Blob(Vec<u8>),
    Null,
}

impl From<i64> for Value {
    fn from(v: i64) -> Self {
        Value::Int(v)
    }
}

impl From<String> for Value {
    fn from(v: String) -> Self {
        Value::Text(v)
    }
}

impl From<&str> for Value {
    fn from(v: &str) -> Self {
        Value::Text(v.to_string())
    }
}

impl From<Vec<u8>> for Value {
    fn from(v: Vec<u8>) -> Self {
        Value::Blob(v)
    }
}

impl From<Option<String>> for Value {
    fn from(v: Option<String>) -> Self {
        v.map_or(Value::Null, Value::Text)
    }
}

/// The condition of every statement of a fenced batch: the writer still holds the lease.
macro_rules! lease_held {
    () => {
        "EXISTS (SELECT 1 FROM leases WHERE repo_id = $1 AND branch = $2 AND generation = $4 AND released = 0)"
    };
}

/// Numbers the layers of a sync from the branch's next sequence number after it (its batch's
/// closing query); none: the writer was fenced and nothing was written.
fn number_synced(
    next: Option<i64>,
    mut layers: Vec<LayerRow>,
    branch: &str,
) -> Result<Vec<LayerRow>, CatalogError> {
    let Some(next) = next else {
        return Err(CatalogError::Fenced(branch.to_string()));
    };
    let first = next - layers.len() as i64;
    for (i, l) in layers.iter_mut().enumerate() {
        l.seq = first + i as i64;
    }
    Ok(layers)
}

/// Runs `f`, which blocks its thread (a catalog write on SQLite), on the calling task's thread:
/// on a multi-threaded runtime the thread's other tasks move to another thread first.
fn blocking<T>(f: impl FnOnce() -> T) -> T {
    match tokio::runtime::Handle::try_current().map(|h| h.runtime_flavor()) {
        Ok(tokio::runtime::RuntimeFlavor::MultiThread) => tokio::task::block_in_place(f),
        _ => f(),
    }
}

impl Batch {
    const MAX_VALUES: usize = 10_000;

    fn new(repo_id: i64, branch: &str, now: Millis) -> Self {
        Self::with(repo_id, branch, now, None)
    }

    /// A batch whose statements write only while the writer of lease `generation` holds the
    /// branch: fenced, it writes nothing (and its closing query, if any, returns no row).
    fn fenced(repo_id: i64, branch: &str, now: Millis, generation: i64) -> Self {
        Self::with(repo_id, branch, now, Some(generation))
    }

    fn with(repo_id: i64, branch: &str, now: Millis, generation: Option<i64>) -> Self {
        let mut b = Batch {
            done: Vec::new(),
            sql: String::new(),
            args: Vec::new(),
            next: 1,
            common: (repo_id, branch.to_string(), now, generation),
            own_transaction: false,
        };
        b.start();
        b
    }

    /// Binds `$1`..`$4` of a new query.
    fn start(&mut self) {
        let (repo_id, branch, now, generation) = self.common.clone();
        self.arg(repo_id);
        self.arg(branch);
        self.arg(now);
        if let Some(generation) = generation {
            self.arg(generation);
        }
    }

    /// ` WHERE` the condition of a fenced batch, or nothing.
    fn guard(&self) -> &'static str {
        match self.common.3 {
            Some(_) => concat!(" WHERE ", lease_held!()),
            None => "",
        }
    }

    /// ` AND` the condition of a fenced batch, or nothing.
    fn and_guard(&self) -> &'static str {
        match self.common.3 {
            Some(_) => concat!(" AND ", lease_held!()),
            None => "",
        }
    }

    /// Called before each statement: a full query is set aside and a new one started.
    fn statement(&mut self) {
        if self.next > Self::MAX_VALUES {
            let sql = std::mem::take(&mut self.sql);
            let args = std::mem::take(&mut self.args);
            self.done.push((sql, args));
            self.next = 1;
            self.start();
        }
    }

    /// Adds a value; returns its placeholder.
    fn arg(&mut self, v: impl Into<Value>) -> String {
        self.args.push(v.into());
        let p = format!("${}", self.next);
        self.next += 1;
        p
    }

    /// Makes the batch its own write transaction: `BEGIN IMMEDIATE` first, `COMMIT` last (on
    /// failure the caller rolls back).
    fn in_transaction(&mut self) {
        self.own_transaction = true;
    }

    /// Moves the branch's next sequence number `n` on (creating its pending row), the first
    /// statement of a sync.
    fn advance_seq(&mut self, n: i64) {
        self.statement();
        let n = self.arg(n);
        self.sql.push_str(&format!(
            "INSERT INTO pending (repo_id, branch, next_seq, synced_at) \
             SELECT $1, $2, {n}, $3{guard} \
             ON CONFLICT (repo_id, branch) DO UPDATE SET next_seq = next_seq + {n}, synced_at = $3;\n",
            guard = if self.guard().is_empty() { " WHERE true" } else { self.guard() },
        ));
    }

    /// The closing query of a sync: the branch's next sequence number (no row when fenced).
    fn next_seq(&mut self) {
        self.statement();
        self.sql.push_str(&format!(
            "SELECT next_seq FROM pending WHERE repo_id = $1 AND branch = $2{};\n",
            self.and_guard()
        ));
    }

    fn inline_object(&mut self, id: &str, bytes: Vec<u8>) {
        self.statement();
        let (id, bytes) = (self.arg(id.to_string()), self.arg(bytes));
        self.sql.push_str(&format!(
            "INSERT INTO inline_objects (id, repo_id, bytes, created_at) SELECT {id}, $1, {bytes}, $3{};\n",
            self.guard()
        ));
    }

    /// A pending layer of the branch; with `seq_from_next`, its `seq` is the branch's next
    /// sequence number plus that (a sync numbers its layers after `advance_seq`).
    fn pending_layer(&mut self, l: &LayerRow, seq_from_next: Option<i64>) {
        self.statement();
        let seq = match seq_from_next {
            Some(d) => format!(
                "(SELECT next_seq FROM pending WHERE repo_id = $1 AND branch = $2) + {}",
                self.arg(d)
            ),
            None => self.arg(l.seq),
        };
        let v = [
            self.arg(l.id.clone()),
            seq,
            self.arg(layer_kind_str(l.kind)),
            self.arg(l.object_key.clone()),
            self.arg(l.size_bytes),
            self.arg(l.min_time),
            self.arg(l.max_time),
            self.arg(l.created_at),
        ]
        .join(", ");
        self.sql.push_str(&format!(
            "INSERT INTO layers (id, seq, kind, object_key, size_bytes, min_time, max_time, created_at, repo_id, commit_id, branch) \
             SELECT {v}, $1, NULL, $2{};\n",
            self.guard()
        ));
    }

    /// The branch's complete pending file table.
    fn pending_files(&mut self, files: &[FileRow]) {
        self.statement();
        self.sql.push_str(&format!(
            "DELETE FROM pending_files WHERE repo_id = $1 AND branch = $2{};\n",
            self.and_guard()
        ));
        for f in files {
            self.statement();
            let v = [
                self.arg(f.path.clone()),
                self.arg(f.file_id),
                self.arg(f.size),
            ]
            .join(", ");
            self.sql.push_str(&format!(
                "INSERT INTO pending_files (repo_id, branch, path, file_id, size) SELECT $1, $2, {v}{};\n",
                self.guard()
            ));
        }
    }
    /// Commit `c` on top of its parent, the branch's head: adopts the pending layers and file
    /// table (`pending`; else the head's files are kept), moves the branch, logs the move.
    fn seal(&mut self, c: &Commit, pending: bool, reason: &str) {
        self.statement();
        let parent = c.parent_id.clone().unwrap_or_default();
        let v = [
            self.arg(c.id.clone()),
            self.arg(parent),
            self.arg(c.depth),
            self.arg(c.kind.as_str()),
            self.arg(c.message.clone()),
            self.arg(c.author.clone()),
            self.arg(c.bytes_added),
            self.arg(c.logical_size),
            self.arg(c.merge_parent_id.clone()),
            self.arg(reason.to_string()),
        ];
        let [id, parent, depth, kind, message, author, bytes, size, merge, reason] = &v;
        let files = if pending {
            "SELECT {id}, path, file_id, size FROM pending_files WHERE repo_id = $1 AND branch = $2"
        } else {
            "SELECT {id}, path, file_id, size FROM commit_files WHERE commit_id = {parent}"
        }
        .replace("{id}", id)
        .replace("{parent}", parent);
        self.sql.push_str(&format!(
            "UPDATE refs SET commit_id = {id}, updated_at = $3 \
             WHERE repo_id = $1 AND name = $2 AND kind = 'branch' AND commit_id = {parent};\n\
             INSERT INTO commits (id, repo_id, parent_id, depth, kind, message, author, created_at, bytes_added, logical_size, merge_parent_id) \
             VALUES ({id}, $1, {parent}, {depth}, {kind}, {message}, {author}, $3, {bytes}, {size}, {merge});\n\
             INSERT INTO commit_files (commit_id, path, file_id, size) {files};\n\
             UPDATE layers SET commit_id = {id}, branch = NULL WHERE repo_id = $1 AND branch = $2 AND commit_id IS NULL;\n\
             DELETE FROM pending_files WHERE repo_id = $1 AND branch = $2;\n\
             DELETE FROM pending WHERE repo_id = $1 AND branch = $2;\n\
             INSERT INTO reflog (repo_id, branch, old_commit, new_commit, at, reason) VALUES ($1, $2, {parent}, {id}, $3, {reason});\n"
        ));
    }

    /// The batch's queries with their values, in order (with `BEGIN IMMEDIATE` and `COMMIT`
    /// around them when it is its own transaction).
    fn queries(mut self) -> Vec<(String, Vec<Value>)> {
        self.done.push((self.sql, self.args));
        if self.own_transaction {
            if let Some(first) = self.done.first_mut() {
                first.0.insert_str(0, "BEGIN IMMEDIATE;\n");
            }
            if let Some(last) = self.done.last_mut() {
                last.0.push_str("COMMIT;\n");
            }
        }
        self.done.retain(|(sql, _)| !sql.is_empty());
        self.done
    }

    /// Runs the batch; the rows its queries return, in order.
    async fn fetch(
        self,
        conn: &mut sqlx::SqliteConnection,
    ) -> Result<Vec<sqlx::sqlite::SqliteRow>, sqlx::Error> {
        use sqlx::Arguments;
        let mut rows = Vec::new();
        for (sql, values) in self.queries() {
            let mut args = sqlx::sqlite::SqliteArguments::default();
            for v in values {
                match v {
                    Value::Int(i) => args.add(i),
                    Value::Text(s) => args.add(s),
                    Value::Blob(b) => args.add(b),
                    Value::Null => args.add(Option::<i64>::None),
                }
                .map_err(sqlx::Error::Encode)?;
            }
            rows.extend(
                sqlx::query_with(sqlx::AssertSqlSafe(sql), args)
                    .fetch_all(&mut *conn)
                    .await?,
            );
        }
        Ok(rows)
    }

    /// Runs the batch on the sync path's connection
    /// ([`SqliteCatalog::register_sync_impl`]); the first column of the last row its queries
    /// return, if any. Each statement is prepared once (rusqlite's cache) and bound by its
    /// placeholders' numbers; statements are split at `;` + newline, which ends every statement
    /// a batch writes and occurs in no SQL text of one (values are bound, never spliced in).
    fn run_sync(self, conn: &rusqlite::Connection) -> rusqlite::Result<Option<i64>> {
        let mut last = None;
        for (sql, values) in self.queries() {
            for one in sql.split_inclusive(";\n") {
                let mut stmt = conn.prepare_cached(one)?;
                for i in 1..=stmt.parameter_count() {
                    let v = stmt
                        .parameter_name(i)
                        .and_then(|n| n.strip_prefix('$'))
                        .and_then(|n| n.parse::<usize>().ok())
                        .and_then(|n| values.get(n.wrapping_sub(1)))
                        .ok_or(rusqlite::Error::InvalidParameterCount(i, values.len()))?;
                    match v {
                        Value::Int(x) => stmt.raw_bind_parameter(i, x)?,
                        Value::Text(x) => stmt.raw_bind_parameter(i, x)?,
                        Value::Blob(x) => stmt.raw_bind_parameter(i, x)?,
                        Value::Null => stmt.raw_bind_parameter(i, rusqlite::types::Null)?,
                    }
                }
                let mut rows = stmt.raw_query();
                while let Some(row) = rows.next()? {
                    last = Some(row.get::<_, i64>(0)?);
                }
                drop(rows);
            }
        }
        Ok(last)
    }

    async fn execute(self, tx: &mut WriteTx) -> Result<(), sqlx::Error> {
        self.fetch(tx).await.map(drop)
    }
}

/// A PostgreSQL connection idle for longer than this is pinged before it is used.
const PING_IDLE: Duration = Duration::from_secs(1);
/// How many more times a call runs when the connection it was given turned out to be lost
/// before the call reached the server (see [`PgCatalog::retried`]).
const LOST_RETRIES: usize = 2;
/// How many more times a one-statement call runs when the server rolled it back to break a
/// deadlock or a serialization conflict (see [`PgCatalog::retried`]).
const ROLLED_BACK_RETRIES: u32 = 5;

/// The last moment (on a clock of this process) a PostgreSQL call found its connection lost.
#[derive(Default)]
struct LossClock {
    /// Microseconds since [`LossClock::now`]'s origin; 0 = never.
    last: std::sync::atomic::AtomicU64,
}

impl LossClock {
    fn now() -> u64 {
        static ORIGIN: std::sync::OnceLock<std::time::Instant> = std::sync::OnceLock::new();
        let us = ORIGIN
            .get_or_init(std::time::Instant::now)
            .elapsed()
            .as_micros();
        u64::try_from(us).unwrap_or(u64::MAX).max(1)
    }

    fn saw_loss(&self) {
        self.last
            .fetch_max(Self::now(), std::sync::atomic::Ordering::Relaxed);
    }

    /// Whether a connection idle for `idle_for` was put back before the last loss seen.
    fn released_before_loss(&self, idle_for: Duration) -> bool {
        let last = self.last.load(std::sync::atomic::Ordering::Relaxed);
        let idle = u64::try_from(idle_for.as_micros()).unwrap_or(u64::MAX);
        last != 0 && Self::now().saturating_sub(idle) <= last
    }
}

/// The connection is gone: an I/O error, or the server reported a connection exception
/// (SQLSTATE class 08) or that it ended the session (57P…: shutdown, restart, idle timeout).
fn connection_lost(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::Io(_) => true,
        sqlx::Error::Database(d) => d
            .code()
            .is_some_and(|c| c.starts_with("08") || c.starts_with("57P")),
        _ => false,
    }
}

/// The server rolled the statement's transaction back to let another one on (SQLSTATE 40001
/// serialization failure, 40P01 deadlock detected): nothing of it happened, and PostgreSQL's
/// advice is to run it again.
fn rolled_back(e: &sqlx::Error) -> bool {
    matches!(e, sqlx::Error::Database(d) if d.code().is_some_and(|c| c == "40001" || c == "40P01"))
}

/// The server had ended the session of the connection before the call reached it (SQLSTATE
/// 57P…, e.g. 57P01 when it was shut down or restarted while the connection sat in the pool):
/// the server never ran the call, so running it again on another connection is safe.
fn session_ended_before_call(e: &sqlx::Error) -> bool {
    matches!(e, sqlx::Error::Database(d) if d.code().is_some_and(|c| c.starts_with("57P")))
}

/// How long the one connection attempt of [`why_unreachable`] may take.
const PROBE_TIMEOUT: Duration = Duration::from_secs(5);

/// Connecting kept failing until the connect timeout, and the pool only says that it timed out:
/// one more attempt (briefly) tells why, e.g. `Connection refused` or a name that does not
/// resolve.
async fn why_unreachable(url: String, opts: &PgConnectOptions) -> CatalogError {
    let error =
        match tokio::time::timeout(PROBE_TIMEOUT, sqlx::PgConnection::connect_with(opts)).await {
            Ok(Err(e)) => e,
            // It answers now (or still not within the probe's time): the pool's word stands.
            Ok(Ok(_)) | Err(_) => sqlx::Error::PoolTimedOut,
        };
    CatalogError::Unreachable {
        url,
        waited: connect_timeout(),
        error,
    }
}

impl PgCatalog {
    /// Connects to PostgreSQL and applies migrations (sqlx serialises them with an advisory lock).
    pub async fn open(url: &str) -> Result<Self, CatalogError> {
        Self::open_with(url, true).await
    }

    /// Like [`open`](Self::open); with `create` false a database without the quackfs schema is
    /// [`CatalogError::Missing`] and is left untouched.
    pub async fn open_with(url: &str, create: bool) -> Result<Self, CatalogError> {
        let masked = mask_url(url);
        let opts =
            PgConnectOptions::from_str(url).map_err(|_| CatalogError::BadUrl(masked.clone()))?;
        // A connection idle for a while is pinged before it is handed out (the server may have
        // restarted or dropped it: a failed ping takes another), one used just now is not: the
        // ping is a round trip, which every sync of a mount would pay on top of its own.
        // A call that finds its connection lost (the server restarted) makes every connection
        // put back before then pinged too, however briefly it sat in the pool.
        let lost = std::sync::Arc::new(LossClock::default());
        let seen = lost.clone();
        let pool = PgPoolOptions::new()
            .max_connections(8)
            .test_before_acquire(false)
            .before_acquire(move |c, meta| {
                let stale = meta.idle_for > PING_IDLE || seen.released_before_loss(meta.idle_for);
                Box::pin(async move {
                    if c.is_in_transaction() {
                        return Ok(false);
                    }
                    if stale {
                        sqlx::Connection::ping(c).await?;
                    }
                    Ok(true)
                })
            })
            .after_release(|c, _| Box::pin(async move { Ok(!c.is_in_transaction()) }))
            .acquire_timeout(connect_timeout())
            .connect_with(opts.clone())
            .await;
        let pool = match pool {
            Ok(pool) => pool,
            Err(sqlx::Error::PoolTimedOut) => return Err(why_unreachable(masked, &opts).await),
            Err(error) => {
                return Err(CatalogError::Db {
                    url: masked.clone(),
                    error,
                })
            }
        };
        if !create {
            let present: bool = sqlx::query_scalar("SELECT to_regclass('repos') IS NOT NULL")
                .fetch_one(&pool)
                .await
                .map_err(|error| CatalogError::Db {
                    url: masked.clone(),
                    error,
                })?;
            if !present {
                return Err(CatalogError::Missing {
                    url: masked,
                    why: "the database holds no quackfs catalog".into(),
                });
            }
        }
        sqlx::migrate!("migrations/postgres")
            .run(&pool)
            .await
            .map_err(|source| CatalogError::Migrate {
                url: masked.clone(),
                source,
            })?;
        Ok(PgCatalog {
            pool,
            url: masked,
            ref_changes: tokio::sync::OnceCell::new(),
            lost,
            commit_conn: tokio::sync::Mutex::new(None),
        })
    }

    /// Ref moves, from a LISTEN connection started on first use (it reconnects by itself).
    async fn ref_changes_impl(&self) -> Option<tokio::sync::broadcast::Receiver<String>> {
        let tx = self
            .ref_changes
            .get_or_try_init(|| async {
                let mut listener = sqlx::postgres::PgListener::connect_with(&self.pool).await?;
                listener.listen("quackfs_refs").await?;
                let (tx, _) = tokio::sync::broadcast::channel(256);
                let sender = tx.clone();
                tokio::spawn(async move {
                    loop {
                        match listener.recv().await {
                            Ok(n) => {
                                // Nobody listening any more: stop.
                                if sender.send(n.payload().to_string()).is_err()
                                    && sender.receiver_count() == 0
                                {
                                    return;
                                }
                            }
                            Err(e) => {
                                tracing::warn!("listening for branch moves: {e}");
                                tokio::time::sleep(std::time::Duration::from_secs(1)).await;
                            }
                        }
                    }
                });
                Ok::<_, sqlx::Error>(tx)
            })
            .await;
        match tx {
            Ok(tx) => Some(tx.subscribe()),
            Err(e) => {
                tracing::warn!("no notifications of branch moves (polling instead): {e}");
                None
            }
        }
    }

    /// A write statement on its own (autocommit), on a pooled connection.
    async fn write_one(
        &self,
        q: sqlx::query::Query<'_, sqlx::Postgres, sqlx::postgres::PgArguments>,
    ) -> Result<sqlx::postgres::PgQueryResult, sqlx::Error> {
        q.execute(&self.pool).await
    }

    /// BEGIN has no effect of its own, so one that failed on a lost connection is retried on
    /// another whatever the error said.
    async fn begin_write(&self) -> Result<sqlx::Transaction<'static, sqlx::Postgres>, sqlx::Error> {
        self.retried(connection_lost, || self.pool.begin()).await
    }

    /// Runs `call`, a single statement in a transaction of its own, and again (at most
    /// [`LOST_RETRIES`] more times) while it fails on a lost connection in a way `safe` says the
    /// server did not run it. Every loss is noted first, so the next call is given a pinged or a
    /// new connection, not another one that died with the same server. A call the server rolled
    /// back to break a deadlock or a serialization conflict runs again too (at most
    /// [`ROLLED_BACK_RETRIES`] more times, after a short, growing pause): a mount's sync that
    /// failed there would fail DuckDB's fsync.
    async fn retried<T, F, Fut>(
        &self,
        safe: fn(&sqlx::Error) -> bool,
        mut call: F,
    ) -> Result<T, sqlx::Error>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<T, sqlx::Error>>,
    {
        let mut left = LOST_RETRIES;
        let mut conflicts = 0;
        loop {
            match call().await {
                Err(e) if rolled_back(&e) && conflicts < ROLLED_BACK_RETRIES => {
                    conflicts += 1;
                    tracing::info!(
                        "catalog call rolled back by the server ({e}): running it again"
                    );
                    tokio::time::sleep(Duration::from_millis(5 << conflicts)).await;
                }
                Err(e) if connection_lost(&e) => {
                    self.lost.saw_loss();
                    if left == 0 || !safe(&e) {
                        return Err(e);
                    }
                    left -= 1;
                    tracing::info!("catalog connection lost ({e}): trying another");
                }
                r => return r,
            }
        }
    }

    /// Runs `q`, a call of the commit path (a mount's syncs and commits, made one at a time in
    /// the registration order), on the one connection kept for it: taken from the pool once and
    /// detached. sqlx pings a pooled connection each time it goes back into the pool, a round
    /// trip that would run beside every sync (on 2 cores, with DuckDB waiting), and keep the
    /// connection from the next one until it is answered. Like a pooled one, it is pinged before
    /// a call when it sat idle for a while or a loss was seen since; one found lost (or left
    /// behind by a call that did not finish) is dropped, and the next call takes a new one.
    async fn commit_call(&self, q: PgQuery<'_>) -> Result<sqlx::postgres::PgRow, sqlx::Error> {
        let mut held = self.commit_conn.lock().await;
        let kept = match held.take() {
            Some((mut c, used)) => {
                let idle = used.elapsed();
                let stale = idle > PING_IDLE || self.lost.released_before_loss(idle);
                let unusable = c.is_in_transaction() || (stale && c.ping().await.is_err());
                (!unusable).then_some(c)
            }
            None => None,
        };
        let mut conn = match kept {
            Some(c) => c,
            None => self.pool.acquire().await?.detach(),
        };
        let r = q.fetch_one(&mut conn).await;
        if !matches!(&r, Err(e) if connection_lost(e)) {
            *held = Some((conn, std::time::Instant::now()));
        }
        r
    }

    /// Notes a lost connection (see [`LossClock`]).
    fn saw_error(&self, e: &sqlx::Error) {
        if connection_lost(e) {
            self.lost.saw_loss();
        }
    }

    /// One round trip: `quackfs_register_sync` (migrations/postgres/0009_one_trip_sync.sql) makes
    /// the steps of [`SqliteCatalog`]'s statements on the server.
    async fn register_sync_impl(&self, req: SyncRequest) -> Result<Vec<LayerRow>, CatalogError> {
        let (args, mut layers) = PgSyncArgs::new(req);
        let row = self
            .retried(session_ended_before_call, || {
                self.commit_call(args.bind(sqlx::query(
                    "SELECT quackfs_register_sync($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15) AS seq",
                )))
            })
            .await
            .map_err(|e| self.call_error(e, &args.branch))?;
        let seq: i64 = row.try_get("seq").map_err(|e| self.db(e))?;
        PgSyncArgs::number(&mut layers, seq);
        Ok(layers)
    }

    /// One round trip: `quackfs_commit_pending` (migrations/postgres/0009_one_trip_sync.sql).
    async fn commit_pending_impl(
        &self,
        repo_id: i64,
        branch: &str,
        commit: NewCommit,
        allow_empty: bool,
    ) -> Result<Commit, CatalogError> {
        let reason = format!("{}: {}", commit.kind.as_str(), commit.message);
        let row = self
            .retried(session_ended_before_call, || {
                let q = sqlx::query(
                    "SELECT o_parent, o_depth, o_created_at, o_bytes_added, o_logical_size \
                     FROM quackfs_commit_pending($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
                )
                .bind(repo_id)
                .bind(branch);
                self.commit_call(bind_commit(q, &commit).bind(allow_empty).bind(&reason))
            })
            .await
            .map_err(|e| self.call_error(e, branch))?;
        self.sealed(&row, repo_id, commit)
    }

    /// One round trip: `quackfs_register_and_commit` (migrations/postgres/0010_sync_and_commit.sql)
    /// runs both functions in one transaction.
    async fn register_and_commit_impl(
        &self,
        req: SyncRequest,
        commit: NewCommit,
    ) -> Result<(Vec<LayerRow>, Commit), CatalogError> {
        let repo_id = req.repo_id;
        let (args, mut layers) = PgSyncArgs::new(req);
        let reason = format!("{}: {}", commit.kind.as_str(), commit.message);
        let row = self
            .retried(session_ended_before_call, || {
                let q = args.bind(sqlx::query(
                    "SELECT o_seq, o_parent, o_depth, o_created_at, o_bytes_added, o_logical_size \
                     FROM quackfs_register_and_commit($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, \
                     $11, $12, $13, $14, $15, $16, $17, $18, $19, $20, $21, $22)",
                ));
                self.commit_call(bind_commit(q, &commit).bind(&reason))
            })
            .await
            .map_err(|e| self.call_error(e, &args.branch))?;
        let seq: i64 = row.try_get("o_seq").map_err(|e| self.db(e))?;
        PgSyncArgs::number(&mut layers, seq);
        Ok((layers, self.sealed(&row, repo_id, commit)?))
    }

    /// The commit the server sealed, from the OUT columns of `quackfs_commit_pending`.
    fn sealed(
        &self,
        row: &sqlx::postgres::PgRow,
        repo_id: i64,
        commit: NewCommit,
    ) -> Result<Commit, CatalogError> {
        let g = || -> Result<Commit, sqlx::Error> {
            Ok(Commit {
                id: commit.id.clone(),
                repo_id,
                parent_id: Some(row.try_get("o_parent")?),
                depth: row.try_get("o_depth")?,
                kind: commit.kind,
                message: commit.message.clone(),
                author: commit.author.clone(),
                created_at: row.try_get("o_created_at")?,
                bytes_added: row.try_get("o_bytes_added")?,
                logical_size: row.try_get("o_logical_size")?,
                expired_at: None,
                merge_parent_id: commit.merge_parent.clone(),
            })
        };
        g().map_err(|e| self.db(e))
    }

    /// The error of a call of one of the functions of 0009_one_trip_sync.sql: its SQLSTATEs of
    /// class QF are the catalog's own errors.
    fn call_error(&self, e: sqlx::Error, branch: &str) -> CatalogError {
        let (code, message) = match &e {
            sqlx::Error::Database(d) => (d.code().map(|c| c.into_owned()), d.message().to_string()),
            _ => (None, String::new()),
        };
        match code.as_deref() {
            Some("QF001") => CatalogError::Fenced(branch.to_string()),
            Some("QF002") => CatalogError::NotFound {
                what: "branch",
                name: branch.to_string(),
            },
            Some("QF003") => CatalogError::NothingPending,
            Some("QF004") => CatalogError::Conflict(format!(
                "branch {branch:?} moved while the commit was being made"
            )),
            Some("QF005") => self.bad(message),
            _ => self.db(e),
        }
    }
}

type PgQuery<'q> = sqlx::query::Query<'q, sqlx::Postgres, sqlx::postgres::PgArguments>;

/// Binds a new commit as the functions of 0009/0010 take it: id, kind, message, author, time,
/// merge parent.
fn bind_commit<'q>(q: PgQuery<'q>, commit: &'q NewCommit) -> PgQuery<'q> {
    q.bind(&commit.id)
        .bind(commit.kind.as_str())
        .bind(&commit.message)
        .bind(&commit.author)
        .bind(commit.time)
        .bind(&commit.merge_parent)
}

/// The parameters `$1`..`$15` of `quackfs_register_sync` (and of `quackfs_register_and_commit`):
/// a sync's layers and file table as arrays.
struct PgSyncArgs {
    repo_id: i64,
    branch: String,
    generation: i64,
    now: Millis,
    ids: Vec<String>,
    kinds: Vec<&'static str>,
    keys: Vec<String>,
    sizes: Vec<i64>,
    min_times: Vec<Millis>,
    max_times: Vec<Millis>,
    created: Vec<Millis>,
    inline: Vec<Option<Vec<u8>>>,
    paths: Vec<String>,
    file_ids: Vec<i64>,
    file_sizes: Vec<i64>,
}

impl PgSyncArgs {
    /// The arguments, and the layers to number once the server gave the first seq.
    fn new(req: SyncRequest) -> (PgSyncArgs, Vec<LayerRow>) {
        let n = req.layers.len();
        let mut a = PgSyncArgs {
            repo_id: req.repo_id,
            branch: req.branch,
            generation: req.generation,
            now: req.now,
            ids: Vec::with_capacity(n),
            kinds: Vec::with_capacity(n),
            keys: Vec::with_capacity(n),
            sizes: Vec::with_capacity(n),
            min_times: Vec::with_capacity(n),
            max_times: Vec::with_capacity(n),
            created: Vec::with_capacity(n),
            inline: Vec::with_capacity(n),
            paths: req.files.iter().map(|f| f.path.clone()).collect(),
            file_ids: req.files.iter().map(|f| f.file_id).collect(),
            file_sizes: req.files.iter().map(|f| f.size).collect(),
        };
        let mut layers = Vec::with_capacity(n);
        for SyncLayer { row, inline } in req.layers {
            a.ids.push(row.id.clone());
            a.kinds.push(layer_kind_str(row.kind));
            a.keys.push(row.object_key.clone());
            a.sizes.push(row.size_bytes);
            a.min_times.push(row.min_time);
            a.max_times.push(row.max_time);
            a.created.push(row.created_at);
            a.inline.push(inline);
            layers.push(row);
        }
        (a, layers)
    }

    fn bind<'q>(&'q self, q: PgQuery<'q>) -> PgQuery<'q> {
        q.bind(self.repo_id)
            .bind(&self.branch)
            .bind(self.generation)
            .bind(self.now)
            .bind(&self.ids)
            .bind(&self.kinds)
            .bind(&self.keys)
            .bind(&self.sizes)
            .bind(&self.min_times)
            .bind(&self.max_times)
            .bind(&self.created)
            .bind(&self.inline)
            .bind(&self.paths)
            .bind(&self.file_ids)
            .bind(&self.file_sizes)
    }

    /// Layers registered from `seq` on, in order.
    fn number(layers: &mut [LayerRow], seq: i64) {
        for (i, l) in layers.iter_mut().enumerate() {
            l.seq = seq + i as i64;
            l.commit_id = None;
        }
    }
}

/// `$first, $first+1, …`: `n` numbered parameters, for an `IN (…)` list.
fn placeholders(first: usize, n: usize) -> String {
    (first..first + n)
        .map(|i| format!("${i}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// `q` with `ids` bound, in order, as its next parameters (the values of a [`placeholders`]
/// list).
fn bind_ids<'q, DB>(
    q: sqlx::query::Query<'q, DB, <DB as sqlx::Database>::Arguments>,
    ids: &[&String],
) -> sqlx::query::Query<'q, DB, <DB as sqlx::Database>::Arguments>
where
    DB: sqlx::Database,
    for<'a> &'a str: sqlx::Encode<'a, DB> + sqlx::Type<DB>,
{
    ids.iter().fold(q, |q, id| q.bind(id.as_str()))
}

/// `ids` in the one order in which every call that changes several layer rows changes them (a
/// mount's spill, merge, compaction, gc, a session registering what it reads; a commit adopting
/// pending layers locks them with `ORDER BY id` first, migrations/postgres/0012): two such calls
/// never each hold a row the other waits for (PostgreSQL row locks; such a deadlock aborts one
/// of them).
fn lock_order(ids: &[String]) -> Vec<&String> {
    let mut v: Vec<&String> = ids.iter().collect();
    v.sort();
    v
}

macro_rules! impl_catalog {
    ($ty:ty, $row:ty, $db:ty, $tx:ty, $lock:literal, $now:literal, $repeatable:literal) => {
        impl $ty {
            fn db(&self, error: sqlx::Error) -> CatalogError {
                self.saw_error(&error);
                CatalogError::Db { url: self.url.clone(), error }
            }

            fn bad(&self, why: String) -> CatalogError {
                CatalogError::BadRow { url: self.url.clone(), why }
            }

            fn commit_row(&self, r: &$row) -> Result<Commit, CatalogError> {
                let g = || -> Result<Commit, sqlx::Error> {
                    let kind: String = r.try_get("kind")?;
                    Ok(Commit {
                        id: r.try_get("id")?,
                        repo_id: r.try_get("repo_id")?,
                        parent_id: r.try_get("parent_id")?,
                        depth: r.try_get("depth")?,
                        kind: CommitKind::parse(&kind).unwrap_or(CommitKind::Manual),
                        message: r.try_get("message")?,
                        author: r.try_get("author")?,
                        created_at: r.try_get("created_at")?,
                        bytes_added: r.try_get("bytes_added")?,
                        logical_size: r.try_get("logical_size")?,
                        expired_at: r.try_get("expired_at")?,
                        merge_parent_id: r.try_get("merge_parent_id")?,
                    })
                };
                g().map_err(|e| self.db(e))
            }

            fn layer_row(&self, r: &$row) -> Result<LayerRow, CatalogError> {
                let kind: String = r.try_get("kind").map_err(|e| self.db(e))?;
                let kind = match kind.as_str() {
                    "delta" => LayerKind::Delta,
                    "image" => LayerKind::Image,
                    other => return Err(self.bad(format!("unknown layer kind {other:?}"))),
                };
                let g = || -> Result<LayerRow, sqlx::Error> {
                    Ok(LayerRow {
                        id: r.try_get("id")?,
                        repo_id: r.try_get("repo_id")?,
                        commit_id: r.try_get("commit_id")?,
                        seq: r.try_get("seq")?,
                        kind,
                        object_key: r.try_get("object_key")?,
                        size_bytes: r.try_get("size_bytes")?,
                        min_time: r.try_get("min_time")?,
                        max_time: r.try_get("max_time")?,
                        created_at: r.try_get("created_at")?,
                    })
                };
                g().map_err(|e| self.db(e))
            }

            fn ref_row(&self, r: &$row) -> Result<RefRow, CatalogError> {
                let kind: String = r.try_get("kind").map_err(|e| self.db(e))?;
                let kind = match kind.as_str() {
                    "branch" => RefKind::Branch,
                    "tag" => RefKind::Tag,
                    other => return Err(self.bad(format!("unknown ref kind {other:?}"))),
                };
                let g = || -> Result<RefRow, sqlx::Error> {
                    Ok(RefRow {
                        repo_id: r.try_get("repo_id")?,
                        name: r.try_get("name")?,
                        kind,
                        commit_id: r.try_get("commit_id")?,
                        created_at: r.try_get("created_at")?,
                        updated_at: r.try_get("updated_at")?,
                    })
                };
                g().map_err(|e| self.db(e))
            }

            async fn commit_in(&self, tx: &mut $tx, id: &str) -> Result<Option<Commit>, CatalogError> {
                let sql = format!("SELECT {COMMIT_COLS} FROM commits WHERE id = $1");
                let row = sqlx::query(sqlx::AssertSqlSafe(sql))
                    .bind(id)
                    .fetch_optional(&mut **tx)
                    .await
                    .map_err(|e| self.db(e))?;
                row.map(|r| self.commit_row(&r)).transpose()
            }

            /// Locks the branch row (PostgreSQL; SQLite holds the database write lock) and returns
            /// the commit it points at.
            async fn lock_branch(&self, tx: &mut $tx, repo_id: i64, branch: &str) -> Result<String, CatalogError> {
                let sql = concat!("SELECT commit_id FROM refs WHERE repo_id = $1 AND name = $2 AND kind = 'branch'", $lock);
                let row = sqlx::query(sql)
                    .bind(repo_id)
                    .bind(branch)
                    .fetch_optional(&mut **tx)
                    .await
                    .map_err(|e| self.db(e))?;
                let Some(row) = row else {
                    return Err(CatalogError::NotFound { what: "branch", name: branch.to_string() });
                };
                row.try_get("commit_id").map_err(|e| self.db(e))
            }

            /// Locks the layer rows `ids` (at most a thousand, in [`lock_order`]) in id order
            /// (PostgreSQL; SQLite holds the database write lock) and returns those that exist.
            async fn lock_layers(&self, tx: &mut $tx, ids: &[&String]) -> Result<std::collections::HashSet<String>, CatalogError> {
                let list = placeholders(1, ids.len());
                let sql = format!(concat!("SELECT id FROM layers WHERE id IN ({}) ORDER BY id", $lock), list);
                let q = bind_ids(sqlx::query(sqlx::AssertSqlSafe(sql)), ids);
                let rows = q.fetch_all(&mut **tx).await.map_err(|e| self.db(e))?;
                rows.iter().map(|r| r.try_get::<String, _>("id")).collect::<Result<_, _>>().map_err(|e| self.db(e))
            }

            /// Registers layers a session reads, inside `tx` (see
            /// [`Catalog::register_session_layers`]). Three statements per thousand layers,
            /// where there were two per layer: a mount of a long history registers every layer
            /// it reads. In id order, as every call that changes several layer rows.
            async fn register_layers_in(&self, tx: &mut $tx, session_id: &str, layer_ids: &[String]) -> Result<(), CatalogError> {
                let mut ids = lock_order(layer_ids);
                ids.dedup();
                for chunk in ids.chunks(1_000) {
                    let list = placeholders(1, chunk.len());
                    // The layers must still exist (locked, so gc cannot take them now); a doom
                    // mark goes (gc deletes only doomed rows).
                    let found = self.lock_layers(&mut *tx, chunk).await?;
                    if found.len() != chunk.len() {
                        let gone = chunk.iter().find(|id| !found.contains(id.as_str())).map_or("?", |id| id.as_str());
                        return Err(CatalogError::Conflict(format!(
                            "layer {gone} was removed by gc while it was being resolved"
                        )));
                    }
                    let sql = format!("UPDATE layers SET doomed_at = NULL WHERE id IN ({list}) AND doomed_at IS NOT NULL");
                    bind_ids(sqlx::query(sqlx::AssertSqlSafe(sql)), chunk).execute(&mut **tx).await.map_err(|e| self.db(e))?;
                    let values = (0..chunk.len()).map(|i| format!("($1, ${})", i + 2)).collect::<Vec<_>>().join(", ");
                    let sql = format!("INSERT INTO session_layers (session_id, layer_id) VALUES {values} ON CONFLICT DO NOTHING");
                    let q = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(session_id);
                    bind_ids(q, chunk).execute(&mut **tx).await.map_err(|e| self.db(e))?;
                }
                Ok(())
            }

            /// Whether a session registered layer `id`, checked after locking the layer's row
            /// (PostgreSQL: a registration racing with this transaction either committed before
            /// the lock was granted, and this later statement sees it, or runs after and finds
            /// the doom mark to clear, or the row gone).
            async fn registered_by_session(&self, tx: &mut $tx, id: &str) -> Result<bool, CatalogError> {
                sqlx::query(concat!("SELECT id FROM layers WHERE id = $1", $lock))
                    .bind(id)
                    .fetch_optional(&mut **tx)
                    .await
                    .map_err(|e| self.db(e))?;
                let r = sqlx::query(
                    "SELECT 1 AS x FROM session_layers WHERE layer_id = $1 \
                     UNION ALL SELECT 1 AS x FROM sessions WHERE id = $2 LIMIT 1",
                )
                .bind(id)
                .bind(id.get(..16).unwrap_or(id))
                .fetch_optional(&mut **tx)
                .await
                .map_err(|e| self.db(e))?;
                Ok(r.is_some())
            }

            /// Checks the writer's fencing generation inside a transaction.
            async fn check_fence(&self, tx: &mut $tx, repo_id: i64, branch: &str, generation: i64) -> Result<(), CatalogError> {
                let row = sqlx::query("SELECT generation, released FROM leases WHERE repo_id = $1 AND branch = $2")
                    .bind(repo_id)
                    .bind(branch)
                    .fetch_optional(&mut **tx)
                    .await
                    .map_err(|e| self.db(e))?;
                let ok = match row {
                    Some(r) => {
                        let g: i64 = r.try_get("generation").map_err(|e| self.db(e))?;
                        let released: i64 = r.try_get("released").map_err(|e| self.db(e))?;
                        g == generation && released == 0
                    }
                    None => false,
                };
                if ok { Ok(()) } else { Err(CatalogError::Fenced(branch.to_string())) }
            }

            /// The catalog server's clock, in milliseconds since the epoch: lease and pin freshness
            /// is judged by it, never by each host's own clock.
            async fn server_now(&self, tx: &mut $tx) -> Result<Millis, CatalogError> {
                let row = sqlx::query(concat!("SELECT ", $now, " AS now"))
                    .fetch_one(&mut **tx)
                    .await
                    .map_err(|e| self.db(e))?;
                row.try_get("now").map_err(|e| self.db(e))
            }

            /// The single-writer rule for a command (not the branch's writer) about to move or
            /// delete `branch`, checked inside its transaction: refused while a writable mount's
            /// lease is fresh, or while the branch has synced-but-uncommitted changes. A lease
            /// whose heartbeat went stale is released here, in the same transaction, which fences
            /// its holder should it wake up.
            async fn guard_branch(&self, tx: &mut $tx, repo_id: i64, branch: &str) -> Result<(), CatalogError> {
                let now = self.server_now(tx).await?;
                let lease = sqlx::query("SELECT generation, holder, heartbeat_at FROM leases WHERE repo_id = $1 AND branch = $2 AND released = 0")
                    .bind(repo_id)
                    .bind(branch)
                    .fetch_optional(&mut **tx)
                    .await
                    .map_err(|e| self.db(e))?;
                if let Some(l) = lease {
                    let generation: i64 = l.try_get("generation").map_err(|e| self.db(e))?;
                    let holder: String = l.try_get("holder").map_err(|e| self.db(e))?;
                    let hb: i64 = l.try_get("heartbeat_at").map_err(|e| self.db(e))?;
                    if now - hb < LEASE_STALE_MS {
                        return Err(CatalogError::LeaseHeld {
                            branch: branch.to_string(),
                            holder,
                            age_secs: (now - hb).max(0) / 1000,
                            generation,
                        });
                    }
                    sqlx::query("UPDATE leases SET released = 1 WHERE repo_id = $1 AND branch = $2 AND generation = $3")
                        .bind(repo_id)
                        .bind(branch)
                        .bind(generation)
                        .execute(&mut **tx)
                        .await
                        .map_err(|e| self.db(e))?;
                }
                let pending = sqlx::query("SELECT synced_at FROM pending WHERE repo_id = $1 AND branch = $2")
                    .bind(repo_id)
                    .bind(branch)
                    .fetch_optional(&mut **tx)
                    .await
                    .map_err(|e| self.db(e))?;
                if pending.is_some() {
                    return Err(CatalogError::PendingChanges { branch: branch.to_string() });
                }
                Ok(())
            }

            /// Inserts a commit on top of `parent`, its files and layers (or adopts the branch's
            /// pending layers), moves the branch by compare-and-swap and logs the move.
            #[allow(clippy::too_many_arguments)]
            async fn write_commit(
                &self,
                tx: &mut $tx,
                repo_id: i64,
                branch: &str,
                parent: &Commit,
                new: &NewCommit,
                files: &[FileRow],
                layers: &[LayerRow],
                adopt_pending: bool,
                reason: &str,
            ) -> Result<Commit, CatalogError> {
                // Commit times are monotonic along a branch even if the clock steps back.
                let created_at = new.time.max(parent.created_at + 1);
                // Compare-and-swap of the branch head: refused if someone else moved it.
                let moved = sqlx::query(
                    "UPDATE refs SET commit_id = $1, updated_at = $2 WHERE repo_id = $3 AND name = $4 AND kind = 'branch' AND commit_id = $5",
                )
                .bind(&new.id)
                .bind(created_at)
                .bind(repo_id)
                .bind(branch)
                .bind(&parent.id)
                .execute(&mut **tx)
                .await
                .map_err(|e| self.db(e))?;
                if moved.rows_affected() != 1 {
                    return Err(CatalogError::Conflict(format!(
                        "branch {branch:?} moved while the commit was being made (it no longer points at {})",
                        &parent.id[..parent.id.len().min(12)]
                    )));
                }
                let mut bytes_added: i64 = layers.iter().map(|l| l.size_bytes).sum();
                if adopt_pending {
                    let r = sqlx::query(
                        "SELECT CAST(COALESCE(SUM(size_bytes), 0) AS BIGINT) AS b FROM layers WHERE repo_id = $1 AND branch = $2 AND commit_id IS NULL AND superseded_at IS NULL",
                    )
                    .bind(repo_id)
                    .bind(branch)
                    .fetch_one(&mut **tx)
                    .await
                    .map_err(|e| self.db(e))?;
                    bytes_added += r.try_get::<i64, _>("b").map_err(|e| self.db(e))?;
                }
                let commit = Commit {
                    id: new.id.clone(),
                    repo_id,
                    parent_id: Some(parent.id.clone()),
                    depth: parent.depth + 1,
                    kind: new.kind,
                    message: new.message.clone(),
                    author: new.author.clone(),
                    created_at,
                    bytes_added,
                    logical_size: files.iter().map(|f| f.size).sum(),
                    expired_at: None,
                    merge_parent_id: new.merge_parent.clone(),
                };
                sqlx::query(
                    "INSERT INTO commits (id, repo_id, parent_id, depth, kind, message, author, created_at, bytes_added, logical_size, merge_parent_id) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
                )
                .bind(&commit.id)
                .bind(commit.repo_id)
                .bind(&commit.parent_id)
                .bind(commit.depth)
                .bind(commit.kind.as_str())
                .bind(&commit.message)
                .bind(&commit.author)
                .bind(commit.created_at)
                .bind(commit.bytes_added)
                .bind(commit.logical_size)
                .bind(&commit.merge_parent_id)
                .execute(&mut **tx)
                .await
                .map_err(|e| self.db(e))?;
                for f in files {
                    sqlx::query("INSERT INTO commit_files (commit_id, path, file_id, size) VALUES ($1, $2, $3, $4)")
                        .bind(&commit.id)
                        .bind(&f.path)
                        .bind(f.file_id)
                        .bind(f.size)
                        .execute(&mut **tx)
                        .await
                        .map_err(|e| self.db(e))?;
                }
                if adopt_pending {
                    // The adopted rows locked in id order first, the order of every other call
                    // that changes several layers (`lock_order`); the UPDATE alone would lock
                    // them in scan order.
                    sqlx::query(concat!(
                        "SELECT id FROM layers WHERE repo_id = $1 AND branch = $2 AND commit_id IS NULL ORDER BY id",
                        $lock
                    ))
                    .bind(repo_id)
                    .bind(branch)
                    .fetch_all(&mut **tx)
                    .await
                    .map_err(|e| self.db(e))?;
                    sqlx::query("UPDATE layers SET commit_id = $1, branch = NULL WHERE repo_id = $2 AND branch = $3 AND commit_id IS NULL")
                        .bind(&commit.id)
                        .bind(repo_id)
                        .bind(branch)
                        .execute(&mut **tx)
                        .await
                        .map_err(|e| self.db(e))?;
                    sqlx::query("DELETE FROM pending_files WHERE repo_id = $1 AND branch = $2")
                        .bind(repo_id)
                        .bind(branch)
                        .execute(&mut **tx)
                        .await
                        .map_err(|e| self.db(e))?;
                    sqlx::query("DELETE FROM pending WHERE repo_id = $1 AND branch = $2")
                        .bind(repo_id)
                        .bind(branch)
                        .execute(&mut **tx)
                        .await
                        .map_err(|e| self.db(e))?;
                }
                for l in layers {
                    self.insert_layer(tx, repo_id, Some(&commit.id), None, l).await?;
                }
                sqlx::query(
                    "INSERT INTO reflog (repo_id, branch, old_commit, new_commit, at, reason) VALUES ($1, $2, $3, $4, $5, $6)",
                )
                .bind(repo_id)
                .bind(branch)
                .bind(&parent.id)
                .bind(&commit.id)
                .bind(created_at)
                .bind(reason)
                .execute(&mut **tx)
                .await
                .map_err(|e| self.db(e))?;
                Ok(commit)
            }

            async fn insert_layer(
                &self,
                tx: &mut $tx,
                repo_id: i64,
                commit_id: Option<&str>,
                branch: Option<&str>,
                l: &LayerRow,
            ) -> Result<(), CatalogError> {
                sqlx::query(
                    "INSERT INTO layers (id, repo_id, commit_id, branch, seq, kind, object_key, size_bytes, min_time, max_time, created_at) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
                )
                .bind(&l.id)
                .bind(repo_id)
                .bind(commit_id)
                .bind(branch)
                .bind(l.seq)
                .bind(layer_kind_str(l.kind))
                .bind(&l.object_key)
                .bind(l.size_bytes)
                .bind(l.min_time)
                .bind(l.max_time)
                .bind(l.created_at)
                .execute(&mut **tx)
                .await
                .map_err(|e| self.db(e))?;
                Ok(())
            }

            fn lease_row(&self, r: &$row) -> Result<Lease, CatalogError> {
                let g = || -> Result<Lease, sqlx::Error> {
                    Ok(Lease {
                        repo_id: r.try_get("repo_id")?,
                        branch: r.try_get("branch")?,
                        generation: r.try_get("generation")?,
                        holder: r.try_get("holder")?,
                        acquired_at: r.try_get("acquired_at")?,
                        heartbeat_at: r.try_get("heartbeat_at")?,
                    })
                };
                g().map_err(|e| self.db(e))
            }

            fn pin_row(&self, r: &$row) -> Result<Pin, CatalogError> {
                let g = || -> Result<Pin, sqlx::Error> {
                    Ok(Pin {
                        id: r.try_get("id")?,
                        repo_id: r.try_get("repo_id")?,
                        commit_id: r.try_get("commit_id")?,
                        holder: r.try_get("holder")?,
                        created_at: r.try_get("created_at")?,
                        heartbeat_at: r.try_get("heartbeat_at")?,
                    })
                };
                g().map_err(|e| self.db(e))
            }

            fn file_row(&self, r: &$row) -> Result<FileRow, CatalogError> {
                let g = || -> Result<FileRow, sqlx::Error> {
                    Ok(FileRow { path: r.try_get("path")?, file_id: r.try_get("file_id")?, size: r.try_get("size")? })
                };
                g().map_err(|e| self.db(e))
            }

            fn repo_row(&self, r: &$row) -> Result<Repo, CatalogError> {
                let g = || -> Result<Repo, sqlx::Error> {
                    Ok(Repo {
                        id: r.try_get("id")?,
                        name: r.try_get("name")?,
                        created_at: r.try_get("created_at")?,
                    })
                };
                g().map_err(|e| self.db(e))
            }
        }

        #[async_trait]
        impl Catalog for $ty {
            async fn ref_changes(&self) -> Option<tokio::sync::broadcast::Receiver<String>> {
                self.ref_changes_impl().await
            }

            fn describe(&self) -> String {
                self.url.clone()
            }

            async fn binding(&self) -> Result<BindingState, CatalogError> {
                let rows = sqlx::query("SELECT key, value FROM catalog_meta")
                    .fetch_all(&self.pool)
                    .await
                    .map_err(|e| self.db(e))?;
                let mut st = BindingState::default();
                for r in &rows {
                    let key: String = r.try_get("key").map_err(|e| self.db(e))?;
                    let value: String = r.try_get("value").map_err(|e| self.db(e))?;
                    match key.as_str() {
                        "catalog_id" => st.catalog_id = Some(value),
                        "store_bound" => st.bound = value == "1",
                        "store" => st.store = Some(value),
                        _ => {}
                    }
                }
                let r = sqlx::query(
                    "SELECT (SELECT COUNT(*) FROM (SELECT 1 FROM repos LIMIT 1) r) AS repos, \
                            (SELECT COUNT(*) FROM (SELECT 1 FROM layers LIMIT 1) l) AS layers",
                )
                .fetch_one(&self.pool)
                .await
                .map_err(|e| self.db(e))?;
                st.has_repos = r.try_get::<i64, _>("repos").map_err(|e| self.db(e))? > 0;
                st.has_layers = r.try_get::<i64, _>("layers").map_err(|e| self.db(e))? > 0;
                Ok(st)
            }

            async fn claim_id(&self, id: &str, store: &str) -> Result<String, CatalogError> {
                let mut tx = self.begin_write().await.map_err(|e| self.db(e))?;
                for (key, value) in [("catalog_id", id), ("store", store), ("store_bound", "0")] {
                    sqlx::query("INSERT INTO catalog_meta (key, value) VALUES ($1, $2) ON CONFLICT (key) DO NOTHING")
                        .bind(key)
                        .bind(value)
                        .execute(&mut *tx)
                        .await
                        .map_err(|e| self.db(e))?;
                }
                let have: String = sqlx::query_scalar("SELECT value FROM catalog_meta WHERE key = 'catalog_id'")
                    .fetch_one(&mut *tx)
                    .await
                    .map_err(|e| self.db(e))?;
                tx.commit().await.map_err(|e| self.db(e))?;
                Ok(have)
            }

            async fn confirm_bound(&self) -> Result<(), CatalogError> {
                let q = sqlx::query("UPDATE catalog_meta SET value = '1' WHERE key = 'store_bound'");
                self.write_one(q).await.map_err(|e| self.db(e))?;
                Ok(())
            }

            async fn create_repo(&self, name: &str, root: NewCommit) -> Result<(Repo, Commit), CatalogError> {
                let mut tx = self.begin_write().await.map_err(|e| self.db(e))?;
                let exists = sqlx::query("SELECT id FROM repos WHERE name = $1")
                    .bind(name)
                    .fetch_optional(&mut *tx)
                    .await
                    .map_err(|e| self.db(e))?;
                if exists.is_some() {
                    return Err(CatalogError::Exists { what: "database", name: name.to_string() });
                }
                let row = sqlx::query("INSERT INTO repos (name, created_at) VALUES ($1, $2) RETURNING id, name, created_at")
                    .bind(name)
                    .bind(root.time)
                    .fetch_one(&mut *tx)
                    .await
                    .map_err(|e| self.db(e))?;
                let repo = self.repo_row(&row)?;
                let commit = Commit {
                    id: root.id.clone(),
                    repo_id: repo.id,
                    parent_id: None,
                    depth: 0,
                    kind: root.kind,
                    message: root.message.clone(),
                    author: root.author.clone(),
                    created_at: root.time,
                    bytes_added: 0,
                    logical_size: 0,
                    expired_at: None,
                    merge_parent_id: None,
                };
                sqlx::query(
                    "INSERT INTO commits (id, repo_id, parent_id, depth, kind, message, author, created_at, bytes_added, logical_size) \
                     VALUES ($1, $2, NULL, 0, $3, $4, $5, $6, 0, 0)",
                )
                .bind(&commit.id)
                .bind(repo.id)
                .bind(commit.kind.as_str())
                .bind(&commit.message)
                .bind(&commit.author)
                .bind(commit.created_at)
                .execute(&mut *tx)
                .await
                .map_err(|e| self.db(e))?;
                sqlx::query(
                    "INSERT INTO refs (repo_id, name, kind, commit_id, created_at, updated_at) VALUES ($1, 'main', 'branch', $2, $3, $3)",
                )
                .bind(repo.id)
                .bind(&commit.id)
                .bind(root.time)
                .execute(&mut *tx)
                .await
                .map_err(|e| self.db(e))?;
                sqlx::query(
                    "INSERT INTO reflog (repo_id, branch, old_commit, new_commit, at, reason) VALUES ($1, 'main', NULL, $2, $3, 'init')",
                )
                .bind(repo.id)
                .bind(&commit.id)
                .bind(root.time)
                .execute(&mut *tx)
                .await
                .map_err(|e| self.db(e))?;
                tx.commit().await.map_err(|e| self.db(e))?;
                Ok((repo, commit))
            }

            async fn repo(&self, name: &str) -> Result<Option<Repo>, CatalogError> {
                let row = sqlx::query("SELECT id, name, created_at FROM repos WHERE name = $1")
                    .bind(name)
                    .fetch_optional(&self.pool)
                    .await
                    .map_err(|e| self.db(e))?;
                row.map(|r| self.repo_row(&r)).transpose()
            }

            async fn repo_by_id(&self, id: i64) -> Result<Option<Repo>, CatalogError> {
                let row = sqlx::query("SELECT id, name, created_at FROM repos WHERE id = $1")
                    .bind(id)
                    .fetch_optional(&self.pool)
                    .await
                    .map_err(|e| self.db(e))?;
                row.map(|r| self.repo_row(&r)).transpose()
            }

            async fn repos(&self) -> Result<Vec<Repo>, CatalogError> {
                let rows = sqlx::query("SELECT id, name, created_at FROM repos WHERE name NOT LIKE '.%' ORDER BY name")
                    .fetch_all(&self.pool)
                    .await
                    .map_err(|e| self.db(e))?;
                rows.iter().map(|r| self.repo_row(r)).collect()
            }

            async fn repo_stats(&self, repo_id: i64) -> Result<RepoStats, CatalogError> {
                let r = sqlx::query(
                    "SELECT \
                       (SELECT COUNT(*) FROM refs WHERE repo_id = $1 AND kind = 'branch') AS branches, \
                       (SELECT COUNT(*) FROM refs WHERE repo_id = $1 AND kind = 'tag') AS tags, \
                       (SELECT COUNT(*) FROM commits WHERE repo_id = $1) AS commits, \
                       (SELECT CAST(COALESCE(SUM(size_bytes), 0) AS BIGINT) FROM layers WHERE repo_id = $1) AS stored, \
                       (SELECT CAST(COALESCE(SUM(length(bytes)), 0) AS BIGINT) FROM inline_objects WHERE repo_id = $1) AS inline",
                )
                .bind(repo_id)
                .fetch_one(&self.pool)
                .await
                .map_err(|e| self.db(e))?;
                let g = || -> Result<RepoStats, sqlx::Error> {
                    Ok(RepoStats {
                        branches: r.try_get("branches")?,
                        tags: r.try_get("tags")?,
                        commits: r.try_get("commits")?,
                        stored_bytes: r.try_get::<i64, _>("stored")?,
                        inline_bytes: r.try_get::<i64, _>("inline")?,
                    })
                };
                g().map_err(|e| self.db(e))
            }

            async fn refs(&self, repo_id: i64) -> Result<Vec<RefRow>, CatalogError> {
                let rows = sqlx::query(
                    "SELECT repo_id, name, kind, commit_id, created_at, updated_at FROM refs WHERE repo_id = $1 ORDER BY kind, name",
                )
                .bind(repo_id)
                .fetch_all(&self.pool)
                .await
                .map_err(|e| self.db(e))?;
                rows.iter().map(|r| self.ref_row(r)).collect()
            }

            async fn get_ref(&self, repo_id: i64, name: &str) -> Result<Option<RefRow>, CatalogError> {
                let row = sqlx::query(
                    "SELECT repo_id, name, kind, commit_id, created_at, updated_at FROM refs WHERE repo_id = $1 AND name = $2",
                )
                .bind(repo_id)
                .bind(name)
                .fetch_optional(&self.pool)
                .await
                .map_err(|e| self.db(e))?;
                row.map(|r| self.ref_row(&r)).transpose()
            }

            async fn create_ref(
                &self,
                repo_id: i64,
                name: &str,
                kind: RefKind,
                commit_id: &str,
                reason: &str,
                now: Millis,
            ) -> Result<RefRow, CatalogError> {
                let mut tx = self.begin_write().await.map_err(|e| self.db(e))?;
                let existing = sqlx::query("SELECT kind FROM refs WHERE repo_id = $1 AND name = $2")
                    .bind(repo_id)
                    .bind(name)
                    .fetch_optional(&mut *tx)
                    .await
                    .map_err(|e| self.db(e))?;
                if let Some(row) = existing {
                    let k: String = row.try_get("kind").map_err(|e| self.db(e))?;
                    let what = if k == "tag" { "tag" } else { "branch" };
                    return Err(CatalogError::Exists { what, name: name.to_string() });
                }
                match self.commit_in(&mut tx, commit_id).await? {
                    None => return Err(CatalogError::NotFound { what: "commit", name: commit_id.to_string() }),
                    Some(Commit { expired_at: Some(at), .. }) => return Err(CatalogError::Expired(expired_message(commit_id, at))),
                    Some(_) => {}
                }
                sqlx::query(
                    "INSERT INTO refs (repo_id, name, kind, commit_id, created_at, updated_at) VALUES ($1, $2, $3, $4, $5, $5)",
                )
                .bind(repo_id)
                .bind(name)
                .bind(kind.as_str())
                .bind(commit_id)
                .bind(now)
                .execute(&mut *tx)
                .await
                .map_err(|e| self.db(e))?;
                if kind == RefKind::Branch {
                    sqlx::query(
                        "INSERT INTO reflog (repo_id, branch, old_commit, new_commit, at, reason) VALUES ($1, $2, NULL, $3, $4, $5)",
                    )
                    .bind(repo_id)
                    .bind(name)
                    .bind(commit_id)
                    .bind(now)
                    .bind(reason)
                    .execute(&mut *tx)
                    .await
                    .map_err(|e| self.db(e))?;
                }
                tx.commit().await.map_err(|e| self.db(e))?;
                Ok(RefRow {
                    repo_id,
                    name: name.to_string(),
                    kind,
                    commit_id: commit_id.to_string(),
                    created_at: now,
                    updated_at: now,
                })
            }

            async fn delete_ref(&self, repo_id: i64, name: &str, kind: RefKind, now: Millis) -> Result<(), CatalogError> {
                let mut tx = self.begin_write().await.map_err(|e| self.db(e))?;
                if kind == RefKind::Branch {
                    self.lock_branch(&mut tx, repo_id, name).await?;
                    self.guard_branch(&mut tx, repo_id, name).await?;
                }
                let row = sqlx::query("DELETE FROM refs WHERE repo_id = $1 AND name = $2 AND kind = $3 RETURNING commit_id")
                    .bind(repo_id)
                    .bind(name)
                    .bind(kind.as_str())
                    .fetch_optional(&mut *tx)
                    .await
                    .map_err(|e| self.db(e))?;
                let Some(row) = row else {
                    return Err(CatalogError::NotFound { what: kind.as_str(), name: name.to_string() });
                };
                if kind == RefKind::Branch {
                    let old: String = row.try_get("commit_id").map_err(|e| self.db(e))?;
                    sqlx::query(
                        "INSERT INTO reflog (repo_id, branch, old_commit, new_commit, at, reason) VALUES ($1, $2, $3, NULL, $4, 'branch deleted')",
                    )
                    .bind(repo_id)
                    .bind(name)
                    .bind(old)
                    .bind(now)
                    .execute(&mut *tx)
                    .await
                    .map_err(|e| self.db(e))?;
                }
                tx.commit().await.map_err(|e| self.db(e))?;
                Ok(())
            }

            async fn commit(&self, id: &str) -> Result<Option<Commit>, CatalogError> {
                let sql = format!("SELECT {COMMIT_COLS} FROM commits WHERE id = $1");
                let row = sqlx::query(sqlx::AssertSqlSafe(sql))
                    .bind(id)
                    .fetch_optional(&self.pool)
                    .await
                    .map_err(|e| self.db(e))?;
                row.map(|r| self.commit_row(&r)).transpose()
            }

            async fn commits_by_prefix(&self, repo_id: i64, prefix: &str, limit: i64) -> Result<Vec<Commit>, CatalogError> {
                // Prefixes are validated hex by the caller, so LIKE metacharacters cannot occur.
                let sql = format!(
                    "SELECT {COMMIT_COLS} FROM commits WHERE repo_id = $1 AND id LIKE $2 ORDER BY id LIMIT $3"
                );
                let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
                    .bind(repo_id)
                    .bind(format!("{prefix}%"))
                    .bind(limit)
                    .fetch_all(&self.pool)
                    .await
                    .map_err(|e| self.db(e))?;
                rows.iter().map(|r| self.commit_row(r)).collect()
            }

            async fn ancestors(&self, id: &str, limit: i64) -> Result<Vec<Commit>, CatalogError> {
                if limit <= 0 {
                    return Ok(Vec::new());
                }
                let sql = format!(
                    "WITH RECURSIVE chain(cid, n) AS ( \
                        SELECT id, 0 FROM commits WHERE id = $1 \
                        UNION ALL \
                        SELECT c.parent_id, chain.n + 1 FROM commits c JOIN chain ON c.id = chain.cid \
                        WHERE c.parent_id IS NOT NULL AND chain.n + 1 < $2 \
                     ) SELECT {COMMIT_COLS} FROM commits JOIN chain ON commits.id = chain.cid ORDER BY chain.n"
                );
                let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
                    .bind(id)
                    .bind(limit)
                    .fetch_all(&self.pool)
                    .await
                    .map_err(|e| self.db(e))?;
                rows.iter().map(|r| self.commit_row(r)).collect()
            }

            async fn commit_files(&self, id: &str) -> Result<Vec<FileRow>, CatalogError> {
                let rows = sqlx::query("SELECT path, file_id, size FROM commit_files WHERE commit_id = $1 ORDER BY path")
                    .bind(id)
                    .fetch_all(&self.pool)
                    .await
                    .map_err(|e| self.db(e))?;
                rows.iter()
                    .map(|r| self.file_row(r))
                    .collect()
            }

            async fn chain_layers(&self, id: &str) -> Result<Vec<LayerRow>, CatalogError> {
                let sql = format!(
                    "WITH RECURSIVE chain(cid, n) AS ( \
                        SELECT id, 0 FROM commits WHERE id = $1 \
                        UNION ALL \
                        SELECT c.parent_id, chain.n + 1 FROM commits c JOIN chain ON c.id = chain.cid \
                        WHERE c.parent_id IS NOT NULL \
                     ) SELECT {LAYER_COLS} FROM layers JOIN chain ON layers.commit_id = chain.cid \
                     WHERE layers.superseded_at IS NULL ORDER BY chain.n DESC, layers.seq ASC"
                );
                let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
                    .bind(id)
                    .fetch_all(&self.pool)
                    .await
                    .map_err(|e| self.db(e))?;
                rows.iter().map(|r| self.layer_row(r)).collect()
            }

            async fn chain_layers_since(&self, id: &str, ancestor: &str, steps: i64) -> Result<Option<Vec<LayerRow>>, CatalogError> {
                if steps < 1 {
                    return Ok(None);
                }
                // The chain from `id`, `steps` parents down and no further; one statement, so
                // the layers are one snapshot (a merge supersedes and adds at once).
                let sql = format!(
                    "WITH RECURSIVE chain(cid, n) AS ( \
                        SELECT id, 0 FROM commits WHERE id = $1 \
                        UNION ALL \
                        SELECT c.parent_id, chain.n + 1 FROM commits c JOIN chain ON c.id = chain.cid \
                        WHERE c.parent_id IS NOT NULL AND chain.n < $2 \
                     ) SELECT {LAYER_COLS}, (SELECT cid FROM chain WHERE n = $2) AS base \
                     FROM layers JOIN chain ON layers.commit_id = chain.cid \
                     WHERE chain.n < $2 AND layers.superseded_at IS NULL \
                     ORDER BY chain.n DESC, layers.seq ASC"
                );
                let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
                    .bind(id)
                    .bind(steps)
                    .fetch_all(&self.pool)
                    .await
                    .map_err(|e| self.db(e))?;
                // No layers above the ancestor: whether it is one, from the chain itself.
                let base: Option<String> = match rows.first() {
                    Some(r) => r.try_get("base").map_err(|e| self.db(e))?,
                    None => {
                        let chain = self.ancestors(id, steps + 1).await?;
                        usize::try_from(steps).ok().and_then(|s| chain.into_iter().nth(s)).map(|c| c.id)
                    }
                };
                if base.as_deref() != Some(ancestor) {
                    return Ok(None);
                }
                rows.iter().map(|r| self.layer_row(r)).collect::<Result<_, _>>().map(Some)
            }

            async fn commit_layers(&self, id: &str) -> Result<Vec<LayerRow>, CatalogError> {
                let sql = format!("SELECT {LAYER_COLS} FROM layers WHERE commit_id = $1 AND superseded_at IS NULL ORDER BY seq");
                let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
                    .bind(id)
                    .fetch_all(&self.pool)
                    .await
                    .map_err(|e| self.db(e))?;
                rows.iter().map(|r| self.layer_row(r)).collect()
            }

            async fn make_commit(&self, req: CommitRequest) -> Result<Commit, CatalogError> {
                let mut tx = self.begin_write().await.map_err(|e| self.db(e))?;
                let parent = self.commit_in(&mut tx, &req.expected_head).await?;
                let Some(parent) = parent else {
                    return Err(CatalogError::NotFound { what: "commit", name: req.expected_head.clone() });
                };
                self.guard_branch(&mut tx, req.repo_id, &req.branch).await?;
                let commit = self
                    .write_commit(&mut tx, req.repo_id, &req.branch, &parent, &req.commit, &req.files, &req.layers, false, &req.reason)
                    .await?;
                tx.commit().await.map_err(|e| self.db(e))?;
                Ok(commit)
            }

            async fn reflog(&self, repo_id: i64, branch: &str) -> Result<Vec<ReflogEntry>, CatalogError> {
                let rows = sqlx::query(
                    "SELECT id, branch, old_commit, new_commit, at, reason FROM reflog WHERE repo_id = $1 AND branch = $2 ORDER BY at DESC, id DESC",
                )
                .bind(repo_id)
                .bind(branch)
                .fetch_all(&self.pool)
                .await
                .map_err(|e| self.db(e))?;
                rows.iter()
                    .map(|r| {
                        Ok(ReflogEntry {
                            id: r.try_get("id")?,
                            branch: r.try_get("branch")?,
                            old_commit: r.try_get("old_commit")?,
                            new_commit: r.try_get("new_commit")?,
                            at: r.try_get("at")?,
                            reason: r.try_get("reason")?,
                        })
                    })
                    .collect::<Result<_, sqlx::Error>>()
                    .map_err(|e| self.db(e))
            }

            async fn acquire_lease(
                &self,
                repo_id: i64,
                branch: &str,
                holder: &str,
                stale_ms: i64,
            ) -> Result<Lease, CatalogError> {
                let mut tx = self.begin_write().await.map_err(|e| self.db(e))?;
                self.lock_branch(&mut tx, repo_id, branch).await?;
                let now = self.server_now(&mut tx).await?;
                let row = sqlx::query("SELECT generation, holder, heartbeat_at, released FROM leases WHERE repo_id = $1 AND branch = $2")
                    .bind(repo_id)
                    .bind(branch)
                    .fetch_optional(&mut *tx)
                    .await
                    .map_err(|e| self.db(e))?;
                let generation = match row {
                    Some(r) => {
                        let g: i64 = r.try_get("generation").map_err(|e| self.db(e))?;
                        let old_holder: String = r.try_get("holder").map_err(|e| self.db(e))?;
                        let hb: i64 = r.try_get("heartbeat_at").map_err(|e| self.db(e))?;
                        let released: i64 = r.try_get("released").map_err(|e| self.db(e))?;
                        if released == 0 && now - hb < stale_ms {
                            return Err(CatalogError::LeaseHeld {
                                branch: branch.to_string(),
                                holder: old_holder,
                                age_secs: (now - hb).max(0) / 1000,
                                generation: g,
                            });
                        }
                        sqlx::query(
                            "UPDATE leases SET generation = $1, holder = $2, acquired_at = $3, heartbeat_at = $3, released = 0 WHERE repo_id = $4 AND branch = $5",
                        )
                        .bind(g + 1)
                        .bind(holder)
                        .bind(now)
                        .bind(repo_id)
                        .bind(branch)
                        .execute(&mut *tx)
                        .await
                        .map_err(|e| self.db(e))?;
                        g + 1
                    }
                    None => {
                        sqlx::query(
                            "INSERT INTO leases (repo_id, branch, generation, holder, acquired_at, heartbeat_at, released) VALUES ($1, $2, 1, $3, $4, $4, 0)",
                        )
                        .bind(repo_id)
                        .bind(branch)
                        .bind(holder)
                        .bind(now)
                        .execute(&mut *tx)
                        .await
                        .map_err(|e| self.db(e))?;
                        1
                    }
                };
                tx.commit().await.map_err(|e| self.db(e))?;
                Ok(Lease {
                    repo_id,
                    branch: branch.to_string(),
                    generation,
                    holder: holder.to_string(),
                    acquired_at: now,
                    heartbeat_at: now,
                })
            }

            async fn heartbeat(&self, repo_id: i64, branch: &str, generation: i64) -> Result<(), CatalogError> {
                let q = sqlx::query(concat!(
                    "UPDATE leases SET heartbeat_at = ", $now, " WHERE repo_id = $1 AND branch = $2 AND generation = $3 AND released = 0",
                ))
                .bind(repo_id)
                .bind(branch)
                .bind(generation);
                let r = self.write_one(q).await.map_err(|e| self.db(e))?;
                if r.rows_affected() == 1 { Ok(()) } else { Err(CatalogError::Fenced(branch.to_string())) }
            }

            async fn release_lease(&self, repo_id: i64, branch: &str, generation: i64) -> Result<(), CatalogError> {
                let q = sqlx::query("UPDATE leases SET released = 1 WHERE repo_id = $1 AND branch = $2 AND generation = $3")
                    .bind(repo_id)
                    .bind(branch)
                    .bind(generation);
                self.write_one(q).await.map_err(|e| self.db(e))?;
                Ok(())
            }

            async fn check_branch_free(&self, repo_id: i64, branch: &str) -> Result<(), CatalogError> {
                let mut tx = self.begin_write().await.map_err(|e| self.db(e))?;
                self.lock_branch(&mut tx, repo_id, branch).await?;
                // Only a look: whatever guard_branch would release stays as it is (rollback).
                let r = self.guard_branch(&mut tx, repo_id, branch).await;
                tx.rollback().await.map_err(|e| self.db(e))?;
                r
            }

            async fn break_lease(&self, repo_id: i64, branch: &str, generation: i64) -> Result<bool, CatalogError> {
                let q = sqlx::query("UPDATE leases SET released = 1 WHERE repo_id = $1 AND branch = $2 AND generation = $3 AND released = 0")
                    .bind(repo_id)
                    .bind(branch)
                    .bind(generation);
                let r = self.write_one(q).await.map_err(|e| self.db(e))?;
                Ok(r.rows_affected() == 1)
            }

            async fn leases(&self, repo_id: i64) -> Result<Vec<Lease>, CatalogError> {
                let rows = sqlx::query(
                    "SELECT repo_id, branch, generation, holder, acquired_at, heartbeat_at FROM leases WHERE repo_id = $1 AND released = 0 ORDER BY branch",
                )
                .bind(repo_id)
                .fetch_all(&self.pool)
                .await
                .map_err(|e| self.db(e))?;
                rows.iter().map(|r| self.lease_row(r)).collect()
            }

            async fn register_sync(&self, req: SyncRequest) -> Result<Vec<LayerRow>, CatalogError> {
                self.register_sync_impl(req).await
            }

            async fn register_and_commit(&self, req: SyncRequest, commit: NewCommit) -> Result<(Vec<LayerRow>, Commit), CatalogError> {
                self.register_and_commit_impl(req, commit).await
            }

            async fn replace_pending(&self, req: SyncRequest, old: &[String]) -> Result<LayerRow, CatalogError> {
                let mut tx = self.begin_write().await.map_err(|e| self.db(e))?;
                self.lock_branch(&mut tx, req.repo_id, &req.branch).await?;
                self.check_fence(&mut tx, req.repo_id, &req.branch, req.generation).await?;
                // Still pending segments of this branch (a commit may have adopted them), all
                // superseded in one statement per thousand.
                let mut first = i64::MAX;
                for ids in lock_order(old).chunks(1_000) {
                    // Locked in id order first: the UPDATE alone locks them in the order its
                    // plan reads them (by branch and seq, say).
                    self.lock_layers(&mut tx, ids).await?;
                    let list = placeholders(4, ids.len());
                    let sql = format!(
                        "UPDATE layers SET superseded_at = $1 WHERE repo_id = $2 AND branch = $3 \
                         AND commit_id IS NULL AND superseded_at IS NULL AND id IN ({list}) RETURNING seq"
                    );
                    let q = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(req.now).bind(req.repo_id).bind(&req.branch);
                    let rows = bind_ids(q, ids).fetch_all(&mut *tx).await.map_err(|e| self.db(e))?;
                    if rows.len() != ids.len() {
                        return Err(CatalogError::Conflict(format!(
                            "{} of {} pending layers were committed or replaced meanwhile",
                            ids.len() - rows.len(),
                            ids.len()
                        )));
                    }
                    for r in rows {
                        first = first.min(r.try_get::<i64, _>("seq").map_err(|e| self.db(e))?);
                    }
                }
                let Some(SyncLayer { row: mut new, inline }) = req.layers.into_iter().next() else {
                    return Err(CatalogError::Conflict("no replacement layer".into()));
                };
                new.seq = first;
                new.commit_id = None;
                if let Some(bytes) = inline {
                    sqlx::query("INSERT INTO inline_objects (id, repo_id, bytes, created_at) VALUES ($1, $2, $3, $4)")
                        .bind(&new.id)
                        .bind(req.repo_id)
                        .bind(bytes)
                        .bind(req.now)
                        .execute(&mut *tx)
                        .await
                        .map_err(|e| self.db(e))?;
                }
                self.insert_layer(&mut tx, req.repo_id, None, Some(&req.branch), &new).await?;
                tx.commit().await.map_err(|e| self.db(e))?;
                Ok(new)
            }

            async fn inline_object(&self, id: &str) -> Result<Option<Vec<u8>>, CatalogError> {
                let row = sqlx::query("SELECT bytes FROM inline_objects WHERE id = $1")
                    .bind(id)
                    .fetch_optional(&self.pool)
                    .await
                    .map_err(|e| self.db(e))?;
                row.map(|r| r.try_get::<Vec<u8>, _>("bytes")).transpose().map_err(|e| self.db(e))
            }

            async fn inline_objects(&self, before: Millis, limit: i64) -> Result<Vec<(String, i64, Vec<u8>)>, CatalogError> {
                let rows = sqlx::query(
                    "SELECT o.id, o.repo_id, o.bytes FROM layers l JOIN inline_objects o ON o.id = l.id \
                     WHERE l.object_key LIKE 'inline/%' AND l.superseded_at IS NULL AND l.doomed_at IS NULL \
                     AND l.created_at < $1 ORDER BY l.created_at LIMIT $2",
                )
                    .bind(before)
                    .bind(limit)
                    .fetch_all(&self.pool)
                    .await
                    .map_err(|e| self.db(e))?;
                rows.iter()
                    .map(|r| Ok((r.try_get("id")?, r.try_get("repo_id")?, r.try_get("bytes")?)))
                    .collect::<Result<Vec<_>, sqlx::Error>>()
                    .map_err(|e| self.db(e))
            }

            async fn spilled(&self, ids: &[String]) -> Result<(), CatalogError> {
                let mut tx = self.begin_write().await.map_err(|e| self.db(e))?;
                for id in lock_order(ids) {
                    sqlx::query("UPDATE layers SET object_key = $1 WHERE id = $2")
                        .bind(format!("{LAYERS_PREFIX}{id}"))
                        .bind(id)
                        .execute(&mut *tx)
                        .await
                        .map_err(|e| self.db(e))?;
                    sqlx::query("DELETE FROM inline_objects WHERE id = $1")
                        .bind(id)
                        .execute(&mut *tx)
                        .await
                        .map_err(|e| self.db(e))?;
                }
                tx.commit().await.map_err(|e| self.db(e))?;
                Ok(())
            }

            async fn pending(&self, repo_id: i64, branch: &str) -> Result<Option<Pending>, CatalogError> {
                let row = sqlx::query("SELECT synced_at FROM pending WHERE repo_id = $1 AND branch = $2")
                    .bind(repo_id)
                    .bind(branch)
                    .fetch_optional(&self.pool)
                    .await
                    .map_err(|e| self.db(e))?;
                let Some(row) = row else { return Ok(None) };
                let synced_at: i64 = row.try_get("synced_at").map_err(|e| self.db(e))?;
                let rows = sqlx::query("SELECT path, file_id, size FROM pending_files WHERE repo_id = $1 AND branch = $2 ORDER BY path")
                    .bind(repo_id)
                    .bind(branch)
                    .fetch_all(&self.pool)
                    .await
                    .map_err(|e| self.db(e))?;
                let files = rows
                    .iter()
                    .map(|r| self.file_row(r))
                    .collect::<Result<Vec<_>, _>>()?;
                let sql = format!("SELECT {LAYER_COLS} FROM layers WHERE repo_id = $1 AND branch = $2 AND commit_id IS NULL AND superseded_at IS NULL ORDER BY seq");
                let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
                    .bind(repo_id)
                    .bind(branch)
                    .fetch_all(&self.pool)
                    .await
                    .map_err(|e| self.db(e))?;
                let layers = rows.iter().map(|r| self.layer_row(r)).collect::<Result<Vec<_>, _>>()?;
                Ok(Some(Pending { files, layers, synced_at }))
            }

            async fn create_clone(&self, name: &str, source: &Commit, root: NewCommit) -> Result<(Repo, Commit), CatalogError> {
                let mut tx = self.begin_write().await.map_err(|e| self.db(e))?;
                if let Some(Commit { expired_at: Some(at), .. }) = self.commit_in(&mut tx, &source.id).await? {
                    return Err(CatalogError::Expired(expired_message(&source.id, at)));
                }
                let exists = sqlx::query("SELECT id FROM repos WHERE name = $1")
                    .bind(name)
                    .fetch_optional(&mut *tx)
                    .await
                    .map_err(|e| self.db(e))?;
                if exists.is_some() {
                    return Err(CatalogError::Exists { what: "database", name: name.to_string() });
                }
                let row = sqlx::query("INSERT INTO repos (name, created_at) VALUES ($1, $2) RETURNING id, name, created_at")
                    .bind(name)
                    .bind(root.time)
                    .fetch_one(&mut *tx)
                    .await
                    .map_err(|e| self.db(e))?;
                let repo = self.repo_row(&row)?;
                let created_at = root.time.max(source.created_at + 1);
                let commit = Commit {
                    id: root.id.clone(),
                    repo_id: repo.id,
                    parent_id: Some(source.id.clone()),
                    depth: source.depth + 1,
                    kind: root.kind,
                    message: root.message.clone(),
                    author: root.author.clone(),
                    created_at,
                    bytes_added: 0,
                    logical_size: source.logical_size,
                    expired_at: None,
                    merge_parent_id: None,
                };
                sqlx::query(
                    "INSERT INTO commits (id, repo_id, parent_id, depth, kind, message, author, created_at, bytes_added, logical_size) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, 0, $9)",
                )
                .bind(&commit.id)
                .bind(repo.id)
                .bind(&source.id)
                .bind(commit.depth)
                .bind(commit.kind.as_str())
                .bind(&commit.message)
                .bind(&commit.author)
                .bind(created_at)
                .bind(commit.logical_size)
                .execute(&mut *tx)
                .await
                .map_err(|e| self.db(e))?;
                sqlx::query(
                    "INSERT INTO commit_files (commit_id, path, file_id, size) SELECT $1, path, file_id, size FROM commit_files WHERE commit_id = $2",
                )
                .bind(&commit.id)
                .bind(&source.id)
                .execute(&mut *tx)
                .await
                .map_err(|e| self.db(e))?;
                sqlx::query(
                    "INSERT INTO refs (repo_id, name, kind, commit_id, created_at, updated_at) VALUES ($1, 'main', 'branch', $2, $3, $3)",
                )
                .bind(repo.id)
                .bind(&commit.id)
                .bind(created_at)
                .execute(&mut *tx)
                .await
                .map_err(|e| self.db(e))?;
                sqlx::query(
                    "INSERT INTO reflog (repo_id, branch, old_commit, new_commit, at, reason) VALUES ($1, 'main', NULL, $2, $3, $4)",
                )
                .bind(repo.id)
                .bind(&commit.id)
                .bind(created_at)
                .bind(format!("clone of {}", &source.id[..source.id.len().min(12)]))
                .execute(&mut *tx)
                .await
                .map_err(|e| self.db(e))?;
                tx.commit().await.map_err(|e| self.db(e))?;
                Ok((repo, commit))
            }

            async fn move_branch(&self, repo_id: i64, branch: &str, expected: Option<&str>, target: &str, reason: &str, now: Millis) -> Result<(), CatalogError> {
                let mut tx = self.begin_write().await.map_err(|e| self.db(e))?;
                let head = self.lock_branch(&mut tx, repo_id, branch).await?;
                if let Some(expected) = expected {
                    if head != expected {
                        return Err(CatalogError::Conflict(format!(
                            "branch {branch:?} moved meanwhile (it no longer points at {})",
                            &expected[..expected.len().min(12)]
                        )));
                    }
                }
                self.guard_branch(&mut tx, repo_id, branch).await?;
                match self.commit_in(&mut tx, target).await? {
                    None => return Err(CatalogError::NotFound { what: "commit", name: target.to_string() }),
                    Some(Commit { expired_at: Some(at), .. }) => return Err(CatalogError::Expired(expired_message(target, at))),
                    Some(_) => {}
                }
                sqlx::query("UPDATE refs SET commit_id = $1, updated_at = $2 WHERE repo_id = $3 AND name = $4 AND kind = 'branch'")
                    .bind(target)
                    .bind(now)
                    .bind(repo_id)
                    .bind(branch)
                    .execute(&mut *tx)
                    .await
                    .map_err(|e| self.db(e))?;
                sqlx::query(
                    "INSERT INTO reflog (repo_id, branch, old_commit, new_commit, at, reason) VALUES ($1, $2, $3, $4, $5, $6)",
                )
                .bind(repo_id)
                .bind(branch)
                .bind(&head)
                .bind(target)
                .bind(now)
                .bind(reason)
                .execute(&mut *tx)
                .await
                .map_err(|e| self.db(e))?;
                tx.commit().await.map_err(|e| self.db(e))?;
                Ok(())
            }

            async fn delete_repo(&self, repo_id: i64, now: Millis) -> Result<(), CatalogError> {
                let mut tx = self.begin_write().await.map_err(|e| self.db(e))?;
                let branches = sqlx::query("SELECT name FROM refs WHERE repo_id = $1 AND kind = 'branch' ORDER BY name")
                    .bind(repo_id)
                    .fetch_all(&mut *tx)
                    .await
                    .map_err(|e| self.db(e))?;
                for b in &branches {
                    let name: String = b.try_get("name").map_err(|e| self.db(e))?;
                    // Synced-but-uncommitted changes go with the database (the user said --yes).
                    match self.guard_branch(&mut tx, repo_id, &name).await {
                        Ok(()) | Err(CatalogError::PendingChanges { .. }) => {}
                        Err(e) => return Err(e),
                    }
                }
                for sql in [
                    "DELETE FROM refs WHERE repo_id = $1",
                    "DELETE FROM reflog WHERE repo_id = $1",
                    "DELETE FROM pending WHERE repo_id = $1",
                    "DELETE FROM pending_files WHERE repo_id = $1",
                    "DELETE FROM leases WHERE repo_id = $1",
                ] {
                    sqlx::query(sql).bind(repo_id).execute(&mut *tx).await.map_err(|e| self.db(e))?;
                }
                // The row stays (commits refer to it) under a name no user can choose.
                sqlx::query("UPDATE repos SET name = $1 WHERE id = $2")
                    .bind(format!(".deleted-{repo_id}-{now}"))
                    .bind(repo_id)
                    .execute(&mut *tx)
                    .await
                    .map_err(|e| self.db(e))?;
                tx.commit().await.map_err(|e| self.db(e))?;
                Ok(())
            }

            async fn gc_snapshot(&self) -> Result<GcSnapshot, CatalogError> {
                // One snapshot of everything (PostgreSQL: REPEATABLE READ; SQLite: a read
                // transaction sees one state of the database in WAL mode).
                let mut tx = self.pool.begin().await.map_err(|e| self.db(e))?;
                if $repeatable {
                    sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
                        .execute(&mut *tx)
                        .await
                        .map_err(|e| self.db(e))?;
                }
                let sql = format!("SELECT {COMMIT_COLS} FROM commits");
                let rows = sqlx::query(sqlx::AssertSqlSafe(sql)).fetch_all(&mut *tx).await.map_err(|e| self.db(e))?;
                let commits = rows.iter().map(|r| self.commit_row(r)).collect::<Result<Vec<_>, _>>()?;
                let sql = format!("SELECT {LAYER_COLS}, branch, superseded_at, doomed_at FROM layers");
                let rows = sqlx::query(sqlx::AssertSqlSafe(sql)).fetch_all(&mut *tx).await.map_err(|e| self.db(e))?;
                let mut layers = Vec::with_capacity(rows.len());
                for r in &rows {
                    layers.push(GcLayer {
                        row: self.layer_row(r)?,
                        branch: r.try_get("branch").map_err(|e| self.db(e))?,
                        superseded_at: r.try_get("superseded_at").map_err(|e| self.db(e))?,
                        doomed_at: r.try_get("doomed_at").map_err(|e| self.db(e))?,
                    });
                }
                let rows = sqlx::query("SELECT repo_id, name, kind, commit_id, created_at, updated_at FROM refs")
                    .fetch_all(&mut *tx)
                    .await
                    .map_err(|e| self.db(e))?;
                let refs = rows.iter().map(|r| self.ref_row(r)).collect::<Result<Vec<_>, _>>()?;
                let rows = sqlx::query("SELECT id, repo_id, branch, old_commit, new_commit, at, reason FROM reflog")
                    .fetch_all(&mut *tx)
                    .await
                    .map_err(|e| self.db(e))?;
                let reflog = rows
                    .iter()
                    .map(|r| {
                        Ok((
                            r.try_get("repo_id")?,
                            ReflogEntry {
                                id: r.try_get("id")?,
                                branch: r.try_get("branch")?,
                                old_commit: r.try_get("old_commit")?,
                                new_commit: r.try_get("new_commit")?,
                                at: r.try_get("at")?,
                                reason: r.try_get("reason")?,
                            },
                        ))
                    })
                    .collect::<Result<Vec<_>, sqlx::Error>>()
                    .map_err(|e| self.db(e))?;
                let rows = sqlx::query("SELECT id, repo_id, commit_id, holder, created_at, heartbeat_at FROM sessions WHERE commit_id IS NOT NULL")
                    .fetch_all(&mut *tx)
                    .await
                    .map_err(|e| self.db(e))?;
                let pins = rows.iter().map(|r| self.pin_row(r)).collect::<Result<Vec<_>, _>>()?;
                let rows = sqlx::query(
                    "SELECT repo_id, branch, generation, holder, acquired_at, heartbeat_at FROM leases WHERE released = 0",
                )
                .fetch_all(&mut *tx)
                .await
                .map_err(|e| self.db(e))?;
                let leases = rows
                    .iter()
                    .map(|r| self.lease_row(r))
                    .collect::<Result<Vec<_>, _>>()?;
                let row = sqlx::query(concat!("SELECT ", $now, " AS now"))
                    .fetch_one(&mut *tx)
                    .await
                    .map_err(|e| self.db(e))?;
                let server_now: i64 = row.try_get("now").map_err(|e| self.db(e))?;
                let rows = sqlx::query("SELECT id, repo_id, kind, holder, created_at, heartbeat_at, commit_id FROM sessions")
                    .fetch_all(&mut *tx)
                    .await
                    .map_err(|e| self.db(e))?;
                let sessions = rows
                    .iter()
                    .map(|r| {
                        Ok(Session {
                            id: r.try_get("id")?,
                            repo_id: r.try_get("repo_id")?,
                            kind: r.try_get("kind")?,
                            holder: r.try_get("holder")?,
                            created_at: r.try_get("created_at")?,
                            heartbeat_at: r.try_get("heartbeat_at")?,
                            commit_id: r.try_get("commit_id")?,
                        })
                    })
                    .collect::<Result<Vec<_>, sqlx::Error>>()
                    .map_err(|e| self.db(e))?;
                let rows = sqlx::query("SELECT session_id, layer_id FROM session_layers")
                    .fetch_all(&mut *tx)
                    .await
                    .map_err(|e| self.db(e))?;
                let session_layers = rows
                    .iter()
                    .map(|r| Ok((r.try_get("session_id")?, r.try_get("layer_id")?)))
                    .collect::<Result<Vec<_>, sqlx::Error>>()
                    .map_err(|e| self.db(e))?;
                tx.commit().await.map_err(|e| self.db(e))?;
                Ok(GcSnapshot { commits, layers, refs, reflog, pins, leases, server_now, sessions, session_layers })
            }

            async fn add_layer(&self, commit_id: &str, mut layer: LayerRow) -> Result<LayerRow, CatalogError> {
                let mut tx = self.begin_write().await.map_err(|e| self.db(e))?;
                let Some(c) = self.commit_in(&mut tx, commit_id).await? else {
                    return Err(CatalogError::NotFound { what: "commit", name: commit_id.to_string() });
                };
                let r = sqlx::query("SELECT CAST(COALESCE(MAX(seq), -1) AS BIGINT) AS m FROM layers WHERE commit_id = $1")
                    .bind(commit_id)
                    .fetch_one(&mut *tx)
                    .await
                    .map_err(|e| self.db(e))?;
                let max: i64 = r.try_get("m").map_err(|e| self.db(e))?;
                layer.seq = max + 1;
                layer.commit_id = Some(commit_id.to_string());
                self.insert_layer(&mut tx, c.repo_id, Some(commit_id), None, &layer).await?;
                tx.commit().await.map_err(|e| self.db(e))?;
                Ok(layer)
            }

            async fn replace_layers(&self, commit_id: &str, old: &[String], mut new: LayerRow, now: Millis) -> Result<(), CatalogError> {
                let mut tx = self.begin_write().await.map_err(|e| self.db(e))?;
                let Some(c) = self.commit_in(&mut tx, commit_id).await? else {
                    return Err(CatalogError::NotFound { what: "commit", name: commit_id.to_string() });
                };
                let mut first = i64::MAX;
                for id in lock_order(old) {
                    let r = sqlx::query(
                        "UPDATE layers SET superseded_at = $1 WHERE id = $2 AND commit_id = $3 AND superseded_at IS NULL RETURNING seq",
                    )
                    .bind(now)
                    .bind(id)
                    .bind(commit_id)
                    .fetch_optional(&mut *tx)
                    .await
                    .map_err(|e| self.db(e))?;
                    let Some(r) = r else {
                        return Err(CatalogError::Conflict(format!("layer {id} changed while it was being merged")));
                    };
                    first = first.min(r.try_get::<i64, _>("seq").map_err(|e| self.db(e))?);
                }
                new.seq = first;
                new.commit_id = Some(commit_id.to_string());
                self.insert_layer(&mut tx, c.repo_id, Some(commit_id), None, &new).await?;
                tx.commit().await.map_err(|e| self.db(e))?;
                Ok(())
            }

            async fn set_doomed(&self, ids: &[String], at: Option<Millis>) -> Result<(), CatalogError> {
                let mut tx = self.begin_write().await.map_err(|e| self.db(e))?;
                for id in lock_order(ids) {
                    if at.is_some() && self.registered_by_session(&mut tx, id).await? {
                        // A session registered it after gc's snapshot: it stays live.
                        continue;
                    }
                    sqlx::query("UPDATE layers SET doomed_at = $1 WHERE id = $2")
                        .bind(at)
                        .bind(id)
                        .execute(&mut *tx)
                        .await
                        .map_err(|e| self.db(e))?;
                }
                tx.commit().await.map_err(|e| self.db(e))?;
                Ok(())
            }

            async fn delete_layers(&self, ids: &[String]) -> Result<Vec<String>, CatalogError> {
                let mut tx = self.begin_write().await.map_err(|e| self.db(e))?;
                let mut gone = Vec::new();
                for id in lock_order(ids) {
                    // A layer a session registered since it was doomed lost its mark: it stays.
                    if self.registered_by_session(&mut tx, id).await? {
                        continue;
                    }
                    let r = sqlx::query("DELETE FROM layers WHERE id = $1 AND doomed_at IS NOT NULL")
                        .bind(id)
                        .execute(&mut *tx)
                        .await
                        .map_err(|e| self.db(e))?;
                    if r.rows_affected() == 1 {
                        sqlx::query("DELETE FROM inline_objects WHERE id = $1")
                            .bind(id)
                            .execute(&mut *tx)
                            .await
                            .map_err(|e| self.db(e))?;
                        gone.push(id.clone());
                    }
                }
                tx.commit().await.map_err(|e| self.db(e))?;
                Ok(gone)
            }

            async fn open_session(&self, id: &str, repo_id: i64, kind: &str, holder: &str, commit_id: Option<&str>) -> Result<(), CatalogError> {
                let q = sqlx::query(concat!("INSERT INTO sessions (id, repo_id, kind, holder, created_at, heartbeat_at, commit_id) VALUES ($1, $2, $3, $4, ", $now, ", ", $now, ", $5)"))
                    .bind(id)
                    .bind(repo_id)
                    .bind(kind)
                    .bind(holder)
                    .bind(commit_id);
                self.write_one(q).await.map_err(|e| self.db(e))?;
                Ok(())
            }

            async fn heartbeat_session(&self, id: &str) -> Result<(), CatalogError> {
                let q = sqlx::query(concat!("UPDATE sessions SET heartbeat_at = ", $now, " WHERE id = $1"))
                    .bind(id);
                self.write_one(q).await.map_err(|e| self.db(e))?;
                Ok(())
            }

            async fn close_session(&self, id: &str) -> Result<(), CatalogError> {
                let mut tx = self.begin_write().await.map_err(|e| self.db(e))?;
                for sql in ["DELETE FROM session_layers WHERE session_id = $1", "DELETE FROM sessions WHERE id = $1"] {
                    sqlx::query(sql).bind(id).execute(&mut *tx).await.map_err(|e| self.db(e))?;
                }
                tx.commit().await.map_err(|e| self.db(e))?;
                Ok(())
            }

            async fn register_session_layers(&self, session_id: &str, layer_ids: &[String]) -> Result<(), CatalogError> {
                let mut tx = self.begin_write().await.map_err(|e| self.db(e))?;
                self.register_layers_in(&mut tx, session_id, layer_ids).await?;
                tx.commit().await.map_err(|e| self.db(e))?;
                Ok(())
            }

            async fn move_session(&self, session_id: &str, commit_id: &str, layer_ids: &[String]) -> Result<(), CatalogError> {
                let mut tx = self.begin_write().await.map_err(|e| self.db(e))?;
                // The layer rows first, then the session's: the order of every other call that
                // touches both.
                self.register_layers_in(&mut tx, session_id, layer_ids).await?;
                sqlx::query("UPDATE sessions SET commit_id = $1 WHERE id = $2")
                    .bind(commit_id)
                    .bind(session_id)
                    .execute(&mut *tx)
                    .await
                    .map_err(|e| self.db(e))?;
                tx.commit().await.map_err(|e| self.db(e))?;
                Ok(())
            }

            async fn expire_commits(&self, ids: &[String], now: Millis) -> Result<(), CatalogError> {
                let mut tx = self.begin_write().await.map_err(|e| self.db(e))?;
                for id in ids {
                    // A ref created since gc read its snapshot keeps the commit readable.
                    sqlx::query("UPDATE commits SET expired_at = $1 WHERE id = $2 AND expired_at IS NULL AND NOT EXISTS (SELECT 1 FROM refs WHERE refs.commit_id = commits.id)")
                        .bind(now)
                        .bind(id)
                        .execute(&mut *tx)
                        .await
                        .map_err(|e| self.db(e))?;
                }
                tx.commit().await.map_err(|e| self.db(e))?;
                Ok(())
            }

            async fn pins(&self, repo_id: i64) -> Result<Vec<Pin>, CatalogError> {
                let rows = sqlx::query(
                    "SELECT id, repo_id, commit_id, holder, created_at, heartbeat_at FROM sessions WHERE repo_id = $1 AND commit_id IS NOT NULL ORDER BY created_at, id",
                )
                .bind(repo_id)
                .fetch_all(&self.pool)
                .await
                .map_err(|e| self.db(e))?;
                rows.iter().map(|r| self.pin_row(r)).collect()
            }

            async fn commit_pending(
                &self,
                repo_id: i64,
                branch: &str,
                commit: NewCommit,
                allow_empty: bool,
            ) -> Result<Commit, CatalogError> {
                self.commit_pending_impl(repo_id, branch, commit, allow_empty).await
            }
        }
    };
}

impl_catalog!(
    SqliteCatalog,
    sqlx::sqlite::SqliteRow,
    sqlx::Sqlite,
    WriteTx,
    "",
    "CAST((julianday('now') - 2440587.5) * 86400000.0 AS BIGINT)",
    false
);
impl_catalog!(
    PgCatalog,
    sqlx::postgres::PgRow,
    sqlx::Postgres,
    sqlx::Transaction<'static, sqlx::Postgres>,
    " FOR UPDATE",
    "CAST(EXTRACT(EPOCH FROM clock_timestamp()) * 1000 AS BIGINT)",
    true
);

#[cfg(test)]
mod tests {
    use super::*;

    /// The migrations commit with synchronous=NORMAL; every connection the catalog then serves
    /// commits with FULL.
    #[tokio::test]
    async fn a_new_sqlite_catalog_serves_only_full_synchronous_connections() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("catalog.sqlite");
        let cat = SqliteCatalog::open(path.to_str().unwrap()).await.unwrap();
        // All the pool's connections at once, so the one that ran the migrations is among them.
        let mut conns = Vec::new();
        for _ in 0..4 {
            conns.push(cat.pool.acquire().await.unwrap());
        }
        conns.push(cat.writer.acquire().await.unwrap());
        for c in &mut conns {
            let (mode,): (i64,) = sqlx::query_as("PRAGMA synchronous")
                .fetch_one(&mut **c)
                .await
                .unwrap();
            assert_eq!(mode, 2, "synchronous=FULL is 2");
        }
        let (applied,): (i64,) = sqlx::query_as("SELECT count(*) FROM _sqlx_migrations")
            .fetch_one(&mut *conns[0])
            .await
            .unwrap();
        assert_eq!(
            applied as usize,
            sqlx::migrate!("migrations/sqlite").iter().count()
        );
    }
}

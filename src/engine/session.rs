//! Sessions: the one owner of what a mount holds in the catalog.
//!
//! A [`BranchSession`] is a writable branch: it takes the branch's writer lease (a dead holder on
//! this machine is taken over, a stale one anywhere), renews it from a heartbeat task (freshness
//! judged by the catalog server's clock), notices when it was fenced (another writer took the
//! branch over), orders the registration of syncs and namespace changes, stores layers through
//! the engine's [`LayerSink`](super::sink::LayerSink), makes checkpoint commits, and at the end
//! gives the lease back. The filesystem (`crate::fs::QuackFs`) keeps names, inodes, handles and
//! each file's contents, and asks the session for everything that reaches the catalog.
//!
//! A [`ReadSession`] is a read-only mount: it pins the commit it serves so gc keeps it readable,
//! renewed by the same kind of heartbeat, removed when the mount ends.
//!
//! The write path, one straight line (docs/architecture.md): FUSE `write` → `QuackFs::write`
//! (memory) → `QuackFs::fsync` (the file's sync lock, a snapshot of its dirty ranges) →
//! `BranchSession::store_segment` (a delta layer through the sink, no lock held) →
//! `BranchSession::lock_registration` + `BranchSession::register` (one catalog transaction
//! fenced by the lease generation) → the memory pieces settle onto the stored layer.

use super::inline::inline_max;
use super::view::{ReadView, ViewChain, ViewLayer};
use super::{new_id, now_millis, short, Engine};
use crate::catalog::{
    CatalogError, Commit, CommitKind, DynCatalog, FileRow, LayerRow, NewCommit, Repo, SyncLayer,
    SyncRequest, LEASE_STALE_MS,
};
use crate::engine::extent_map::{ExtentMap, Source};
use crate::error::{Error, Result};
use crate::layer::{LayerIndex, LayerKind, LayerWriter};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// A session renews what it holds this often.
pub const HEARTBEAT: Duration = Duration::from_secs(2);
/// A writable mount moves the small layers it kept in the catalog into the store after this long.
const INLINE_SPILL_AFTER_MS: i64 = 4_000;

/// The catalog's record of a process that reads or writes layers while it runs (see
/// `catalog::Session`): renewed every [`HEARTBEAT`], it keeps the layers it registered, and its
/// uploads in flight (layer ids that start with its id), from gc. Close it at the end; if the
/// process dies, its heartbeat stops and gc lets go after a while.
pub struct SessionHandle {
    catalog: DynCatalog,
    id: String,
    heartbeat: tokio::task::JoinHandle<()>,
}

/// Hex digits of a session id (the first half of the layer ids of its uploads).
const SESSION_ID_LEN: usize = 16;

impl SessionHandle {
    /// Records a session of `kind` (`writer`, `reader`, `import`, `merge`) for `repo_id`.
    pub async fn open(
        catalog: DynCatalog,
        repo_id: i64,
        kind: &str,
        holder: &str,
        commit_id: Option<&str>,
    ) -> Result<SessionHandle> {
        let id = new_id()[..SESSION_ID_LEN].to_string();
        catalog
            .open_session(&id, repo_id, kind, holder, commit_id)
            .await?;
        let heartbeat = {
            let catalog = catalog.clone();
            let id = id.clone();
            tokio::spawn(async move {
                loop {
                    tokio::time::sleep(HEARTBEAT).await;
                    if let Err(e) = catalog.heartbeat_session(&id).await {
                        tracing::warn!("session heartbeat failed: {e}");
                    }
                }
            })
        };
        Ok(SessionHandle {
            catalog,
            id,
            heartbeat,
        })
    }

    pub fn id(&self) -> &str {
        &self.id
    }

    /// A new layer id owned by this session: gc never takes the object of an upload in flight
    /// for an orphan while the session lives.
    pub fn layer_id(&self) -> String {
        format!("{}{}", self.id, &new_id()[SESSION_ID_LEN..])
    }

    /// Registers every layer `view` reads. `Conflict` if gc removed one since the view was
    /// resolved: resolve it again.
    pub async fn register_view(&self, view: &ReadView) -> Result<()> {
        self.catalog
            .register_session_layers(&self.id, &layer_ids(&view.layers))
            .await
            .map_err(Error::from)
    }

    /// A reader moving on to commit `commit_id`: registers `layers` (those of its new view the
    /// session does not hold yet) and pins the commit, in one catalog transaction. `Conflict`
    /// if gc removed one of them.
    pub async fn move_to(&self, commit_id: &str, layers: &[ViewLayer]) -> Result<()> {
        self.catalog
            .move_session(&self.id, commit_id, &layer_ids(layers))
            .await
            .map_err(Error::from)
    }

    /// Ends the session.
    pub async fn close(&self) {
        self.heartbeat.abort();
        if let Err(e) = self.catalog.close_session(&self.id).await {
            tracing::warn!("closing the session failed: {e}");
        }
    }
}

impl Drop for SessionHandle {
    fn drop(&mut self) {
        self.heartbeat.abort();
    }
}

fn layer_ids(layers: &[ViewLayer]) -> Vec<String> {
    layers.iter().map(|l| l.row.id.clone()).collect()
}

/// Resolves a view with `resolve` (`view_of` finds the view in what it returns) and registers
/// its layers with `session`, again if gc removed a layer in between (a few times, then the
/// error).
pub async fn resolve_registered<T, F, Fut>(
    session: &SessionHandle,
    resolve: F,
    view_of: fn(&T) -> &ReadView,
) -> Result<T>
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = Result<T>>,
{
    let mut tries = 0;
    loop {
        let resolved = resolve().await?;
        match session.register_view(view_of(&resolved)).await {
            Ok(()) => return Ok(resolved),
            Err(Error::Catalog(CatalogError::Conflict(why))) if tries < 5 => {
                tracing::info!("resolving again: {why}");
                tries += 1;
            }
            Err(e) => return Err(e),
        }
    }
}

/// A sync's layer, written and ready to be registered: kept in the catalog or stored.
pub struct Segment {
    pub layer: SyncLayer,
    pub index: LayerIndex,
}

/// What a layer's contents are written through: the sink's file-backed writer or an in-memory
/// one (for layers kept in the catalog).
trait LayerSinkWriter {
    fn begin(&mut self, file_id: u64, truncate_to: Option<u64>, size: u64) -> Result<()>;
    fn extent(&mut self, off: u64, bytes: &[u8]) -> Result<()>;
}

impl<W: std::io::Write> LayerSinkWriter for LayerWriter<W> {
    fn begin(&mut self, file_id: u64, truncate_to: Option<u64>, size: u64) -> Result<()> {
        Ok(self.begin_file(file_id, truncate_to, size)?)
    }

    fn extent(&mut self, off: u64, bytes: &[u8]) -> Result<()> {
        Ok(self.add_extent(off, bytes)?)
    }
}

/// What opening a writable branch gives the filesystem.
pub struct OpenedBranch {
    pub session: Arc<BranchSession>,
    /// The branch head plus everything synced since (what a crash left).
    pub view: ReadView,
    /// The head alone, when something was synced since it (to know which checkpoints are in a
    /// commit already); None when `view` is the head.
    pub head_view: Option<ReadView>,
}

/// A writable branch held by this process.
pub struct BranchSession {
    engine: Arc<Engine>,
    repo: Repo,
    branch: String,
    generation: i64,
    holder: String,
    fenced: AtomicBool,
    /// Orders registrations: held for the catalog transaction of one registration (and a
    /// checkpoint commit right after it), never while a layer is uploaded.
    registration: tokio::sync::Mutex<()>,
    heartbeat: Mutex<Option<tokio::task::JoinHandle<()>>>,
    /// The layers this writer reads and uploads are registered under it.
    session: SessionHandle,
    /// Pending layers registered since the last compaction started, and whether one runs.
    since_compaction: std::sync::atomic::AtomicUsize,
    compacting: AtomicBool,
}

/// Pending segments of one size class merged together (size-tiered compaction).
pub const COMPACT_FAN_IN: usize = 32;

/// The compaction fan-in in effect: `QUACKFS_COMPACT_FAN_IN` (0 turns compaction off), else
/// [`COMPACT_FAN_IN`].
fn compact_fan_in() -> usize {
    crate::tuning::count("QUACKFS_COMPACT_FAN_IN").unwrap_or(COMPACT_FAN_IN)
}
/// Most segments merged at once.
const COMPACT_MAX: usize = 64;

/// The size class of a layer: 0 up to 64 KiB, then one class per factor of 16.
fn size_class(bytes: i64) -> u32 {
    let mut class = 0;
    let mut limit: i64 = 64 << 10;
    while bytes > limit && class < 16 {
        limit = limit.saturating_mul(16);
        class += 1;
    }
    class
}

/// The pending layers (in order) a compaction merges: in the newest run of at least `fan_in`
/// consecutive delta layers of one size class, its oldest [`COMPACT_MAX`]. Every run is looked
/// at, not only the newest: when syncs come faster than compactions, a run outgrows what one
/// compaction takes, and once a bigger layer lands above it, it is no longer the newest run.
/// Taking a long run from its old end leaves the merged layer where the run begins, so the rest
/// of the run stays in one piece and the next compaction takes it, merged layer first, until
/// that layer moves up a size class. Nothing is left behind, whatever the pace of the syncs.
fn compaction_run(layers: &[LayerRow], fan_in: usize) -> &[LayerRow] {
    let delta_class = |l: &LayerRow| (l.kind == LayerKind::Delta).then(|| size_class(l.size_bytes));
    layers
        .chunk_by(|a, b| delta_class(a).is_some() && delta_class(a) == delta_class(b))
        .rev()
        .find(|run| delta_class(&run[0]).is_some() && run.len() >= fan_in.max(2))
        .map_or(&[], |run| &run[..run.len().min(COMPACT_MAX)])
}

impl BranchSession {
    /// Takes the writer lease of `branch` and reads its durable state. Refused while another
    /// mount holds it (fresh heartbeat, or a live process of this machine).
    pub async fn open(
        engine: Arc<Engine>,
        repo: Repo,
        branch: &str,
        holder: String,
    ) -> Result<OpenedBranch> {
        let cat = &engine.catalog;
        let lease = match cat
            .acquire_lease(repo.id, branch, &holder, LEASE_STALE_MS)
            .await
        {
            Err(CatalogError::LeaseHeld { holder: h, .. }) if crate::process::holder_is_dead(&h) => {
                tracing::info!("taking branch {branch} over from dead {h}");
                cat.acquire_lease(repo.id, branch, &holder, 0).await?
            }
            Err(CatalogError::LeaseHeld {
                holder: h,
                age_secs,
                ..
            }) => {
                return Err(Error::Refused(format!(
                    "branch {branch} of {} is already mounted writable by {h} (heartbeat {age_secs}s ago); mount it with --read-only, or another branch",
                    repo.name
                )))
            }
            other => other?,
        };
        let handle = match SessionHandle::open(cat.clone(), repo.id, "writer", &holder, None).await
        {
            Ok(h) => h,
            Err(e) => {
                let _ = cat.release_lease(repo.id, branch, lease.generation).await;
                return Err(e);
            }
        };
        let session = Arc::new(BranchSession {
            engine: engine.clone(),
            repo: repo.clone(),
            branch: branch.to_string(),
            generation: lease.generation,
            holder,
            fenced: AtomicBool::new(false),
            registration: tokio::sync::Mutex::new(()),
            heartbeat: Mutex::new(None),
            session: handle,
            since_compaction: std::sync::atomic::AtomicUsize::new(0),
            compacting: AtomicBool::new(false),
        });
        let state = async {
            let head = engine.branch_head(&repo, branch).await?;
            let head_view = async {
                match cat.pending(repo.id, branch).await? {
                    Some(_) => Ok(Some(engine.view(&head).await?)),
                    None => Ok::<_, Error>(None),
                }
            }
            .await?;
            let view = resolve_registered(
                &session.session,
                || async {
                    let pending = cat.pending(repo.id, branch).await?;
                    ReadView::open_with(cat, engine.layers.clone(), head.clone(), pending).await
                },
                |v| v,
            )
            .await?;
            Ok::<_, Error>((view, head_view))
        }
        .await;
        match state {
            Ok((view, head_view)) => {
                session.start_heartbeat();
                Ok(OpenedBranch {
                    session,
                    view,
                    head_view,
                })
            }
            Err(e) => {
                session.release().await;
                Err(e)
            }
        }
    }

    pub fn engine(&self) -> &Arc<Engine> {
        &self.engine
    }

    pub fn repo(&self) -> &Repo {
        &self.repo
    }

    pub fn branch(&self) -> &str {
        &self.branch
    }

    pub fn holder(&self) -> &str {
        &self.holder
    }

    /// Renews the lease every [`HEARTBEAT`]; stops (and fences the session) once it changed
    /// hands. On the way, moves layers this branch kept in the catalog into the store once they
    /// are a few seconds old.
    fn start_heartbeat(self: &Arc<Self>) {
        let me = Arc::downgrade(self);
        let task = tokio::spawn(async move {
            loop {
                tokio::time::sleep(HEARTBEAT).await;
                let Some(s) = me.upgrade() else { return };
                let before = now_millis() - super::inline::spill_after_ms(INLINE_SPILL_AFTER_MS);
                if let Err(e) =
                    super::inline::spill(&s.engine.catalog, &s.engine.store, before, 1024).await
                {
                    tracing::warn!("moving small layers into the store failed (retried): {e}");
                }
                match s
                    .engine
                    .catalog
                    .heartbeat(s.repo.id, &s.branch, s.generation)
                    .await
                {
                    Ok(()) => crate::metrics::add(&crate::metrics::GLOBAL.lease_heartbeats, 1),
                    Err(CatalogError::Fenced(_)) => {
                        s.fence();
                        return;
                    }
                    Err(e) => {
                        crate::metrics::add(&crate::metrics::GLOBAL.lease_heartbeat_failures, 1);
                        crate::metrics::count_catalog_error(&e);
                        tracing::warn!("lease heartbeat failed: {e}");
                    }
                }
            }
        });
        *self.heartbeat.lock().unwrap_or_else(|p| p.into_inner()) = Some(task);
    }

    /// Marks this writer as fenced: every later write and sync fails.
    pub fn fence(&self) {
        if !self.fenced.swap(true, Ordering::SeqCst) {
            crate::metrics::add(&crate::metrics::GLOBAL.fence_events, 1);
            tracing::error!("the writer lease was taken over: refusing all further writes");
        }
    }

    pub fn is_fenced(&self) -> bool {
        self.fenced.load(Ordering::SeqCst)
    }

    /// The registration order: hold it across building a registration's file table and
    /// registering it, so registrations reach the catalog in the order their changes were made.
    pub async fn lock_registration(&self) -> tokio::sync::MutexGuard<'_, ()> {
        self.registration.lock().await
    }

    /// Writes one file's dirty ranges as a delta layer (no lock held: a WAL sync never waits
    /// behind another file's upload): a small one stays in memory to be kept in the catalog by
    /// its registration (no store round trip), a larger one is stored through the sink. Not
    /// registered yet.
    pub async fn store_segment(
        &self,
        file_id: u64,
        size: u64,
        dirty: &ExtentMap,
        truncate_to: Option<u64>,
    ) -> Result<Segment> {
        let fill = {
            let dirty = dirty.clone();
            move |w: &mut dyn LayerSinkWriter| -> Result<()> {
                w.begin(file_id, truncate_to, size)?;
                for (off, piece) in dirty.iter() {
                    if let Source::Mem { buf, .. } = &piece.src {
                        w.extent(off, &buf[..piece.len as usize])?;
                    }
                }
                Ok(())
            }
        };
        let id = self.session.layer_id();
        let max = inline_max(self.engine.store.as_local().is_some());
        if dirty.covered_bytes() as usize <= max {
            let mut w = LayerWriter::new(Vec::new(), LayerKind::Delta);
            fill(&mut w)?;
            let (bytes, index, len) = w.finish()?;
            let (key, inline) = if bytes.len() <= max {
                // The catalog gets it compressed when that pays (done here, outside the
                // registration order); this process reads its own from memory (an entry that
                // its registration then fails to name is never asked for).
                let stored = super::inline::pack(&bytes);
                let bytes = bytes::Bytes::from(bytes);
                let stored = stored.unwrap_or_else(|| bytes.to_vec());
                self.engine.inline.prime(&id, bytes);
                (super::inline::inline_key(&id), Some(stored))
            } else {
                // Its footer made it a little too large: store it as it is.
                let key = super::layer_key(&id);
                self.engine
                    .store
                    .put(&key, bytes::Bytes::from(bytes))
                    .await?;
                (key, None)
            };
            let now = now_millis();
            let row = LayerRow {
                id,
                repo_id: self.repo.id,
                commit_id: None,
                seq: 0,
                kind: LayerKind::Delta,
                object_key: key,
                size_bytes: len as i64,
                min_time: now,
                max_time: now,
                created_at: now,
            };
            return Ok(Segment {
                layer: SyncLayer { row, inline },
                index,
            });
        }
        let stored = self
            .engine
            .sink()
            .write(self.repo.id, LayerKind::Delta, id, move |w| fill(w))
            .await?;
        Ok(Segment {
            layer: SyncLayer {
                row: stored.row,
                inline: None,
            },
            index: stored.index,
        })
    }

    /// Registers syncs (their new layers, in order) and the branch's complete durable file table
    /// after them, in one catalog transaction fenced by the lease generation: concurrent syncs
    /// share it (group commit). Call it holding [`lock_registration`](Self::lock_registration).
    /// Returns the layers with their sequence numbers.
    pub async fn register(
        &self,
        _order: &tokio::sync::MutexGuard<'_, ()>,
        layers: Vec<SyncLayer>,
        files: Vec<FileRow>,
    ) -> Result<Vec<LayerRow>> {
        let req = self.sync_request(layers, files)?;
        let result = self.engine.catalog.register_sync(req).await;
        self.registered(result)
    }

    /// [`register`](Self::register) and [`checkpoint_commit`](Self::checkpoint_commit) in one
    /// catalog transaction: a namespace change that completes a checkpoint and the commit of it.
    pub async fn register_and_commit(
        &self,
        _order: &tokio::sync::MutexGuard<'_, ()>,
        layers: Vec<SyncLayer>,
        files: Vec<FileRow>,
        message: String,
    ) -> Result<(Vec<LayerRow>, Commit)> {
        let req = self.sync_request(layers, files)?;
        let commit = self.new_commit(CommitKind::Checkpoint, message);
        let result = self.engine.catalog.register_and_commit(req, commit).await;
        let (layers, c) = self.registered(result)?;
        tracing::info!("checkpoint commit {}", short(&c.id));
        Ok((layers, c))
    }

    /// The catalog request of a registration (fenced by this writer's generation).
    fn sync_request(&self, layers: Vec<SyncLayer>, files: Vec<FileRow>) -> Result<SyncRequest> {
        if self.is_fenced() {
            return Err(Error::Catalog(CatalogError::Fenced(self.branch.clone())));
        }
        Ok(SyncRequest {
            repo_id: self.repo.id,
            branch: self.branch.clone(),
            generation: self.generation,
            layers,
            files,
            now: now_millis(),
            session_id: Some(self.session.id().to_string()),
        })
    }

    /// After a registration: a fenced writer stays fenced.
    fn registered<T>(&self, result: std::result::Result<T, CatalogError>) -> Result<T> {
        match result {
            Ok(t) => Ok(t),
            Err(e @ CatalogError::Fenced(_)) => {
                self.fence();
                Err(e.into())
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Counts newly registered pending layers, and compacts them in the background once enough
    /// accumulated (see [`compact_pending`](Self::compact_pending)).
    pub fn registered_layers(self: &Arc<Self>, n: usize) {
        self.since_compaction.fetch_add(n, Ordering::SeqCst);
        self.maybe_compact();
    }

    /// Starts a compaction task unless one runs or fewer than the fan-in layers were registered
    /// since the last one started. The task merges until nothing is left to merge, then looks
    /// again: layers registered while it finished found it running and started nothing, and
    /// with no sync after them (the end of a burst) they would wait for the next one. A failed
    /// compaction waits for the fan-in's worth of new layers before it is tried again.
    fn maybe_compact(self: &Arc<Self>) {
        let fan_in = compact_fan_in();
        if fan_in == 0
            || self.since_compaction.load(Ordering::SeqCst) < fan_in
            || self.compacting.swap(true, Ordering::SeqCst)
        {
            return;
        }
        self.since_compaction.store(0, Ordering::SeqCst);
        let me = self.clone();
        tokio::spawn(async move {
            let settled = loop {
                match me.compact_pending(fan_in).await {
                    Ok(true) => continue,
                    Ok(false) => break true,
                    Err(e) => {
                        tracing::warn!("compacting the pending layers failed (retried later): {e}");
                        break false;
                    }
                }
            };
            me.compacting.store(false, Ordering::SeqCst);
            if settled {
                me.maybe_compact();
            }
        });
    }

    /// Merges a run of at least `fan_in` consecutive pending segments of one size class
    /// ([`compaction_run`]) into one layer (size-tiered, as an LSM tree compacts, as Neon compacts
    /// its L0 deltas): whatever DuckDB's fsync pattern, a mount of the branch (or of the commit
    /// that adopts them) reads through few layers. Runs beside syncs; the catalog swaps the layers
    /// only if they are all still pending (else a commit adopted them: nothing changes). This mount
    /// keeps reading the old layers (it registered them). True if it merged something.
    pub async fn compact_pending(&self, fan_in: usize) -> Result<bool> {
        let Some(pending) = self
            .engine
            .catalog
            .pending(self.repo.id, &self.branch)
            .await?
        else {
            return Ok(false);
        };
        let run = compaction_run(&pending.layers, fan_in).to_vec();
        if run.is_empty() {
            return Ok(false);
        }
        let count = run.len();
        let (new, old) = self
            .engine
            .fold_layers(&self.session, self.repo.id, run)
            .await?;
        let req = SyncRequest {
            repo_id: self.repo.id,
            branch: self.branch.clone(),
            generation: self.generation,
            layers: vec![SyncLayer {
                row: new,
                inline: None,
            }],
            files: Vec::new(),
            now: now_millis(),
            session_id: Some(self.session.id().to_string()),
        };
        match self.engine.catalog.replace_pending(req, &old).await {
            Ok(l) => {
                tracing::info!(
                    "compacted {count} pending layers into {} ({} bytes)",
                    l.id,
                    l.size_bytes
                );
                Ok(true)
            }
            Err(CatalogError::Conflict(why)) => {
                tracing::info!("compaction skipped: {why}");
                Ok(false)
            }
            Err(e @ CatalogError::Fenced(_)) => {
                self.fence();
                Err(e.into())
            }
            Err(e) => Err(e.into()),
        }
    }

    fn new_commit(&self, kind: CommitKind, message: String) -> NewCommit {
        NewCommit {
            id: new_id(),
            kind,
            message,
            author: self.engine.author.clone(),
            time: now_millis(),
            merge_parent: None,
        }
    }

    /// Seals everything registered into a `checkpoint` commit (held registration order: the
    /// commit is exactly the state the last registration left). None if nothing was pending
    /// (someone else sealed it already).
    pub async fn checkpoint_commit(
        &self,
        _order: &tokio::sync::MutexGuard<'_, ()>,
        message: String,
    ) -> Result<Option<Commit>> {
        let commit = self.new_commit(CommitKind::Checkpoint, message);
        match self
            .engine
            .catalog
            .commit_pending(self.repo.id, &self.branch, commit, false)
            .await
        {
            Ok(c) => {
                tracing::info!("checkpoint commit {}", short(&c.id));
                Ok(Some(c))
            }
            Err(CatalogError::NothingPending) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// Stops the heartbeat and gives the lease back (a no-op if it changed hands). Call it after
    /// the final sync.
    pub async fn release(&self) {
        if let Some(t) = self
            .heartbeat
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
        {
            t.abort();
        }
        if let Err(e) = self
            .engine
            .catalog
            .release_lease(self.repo.id, &self.branch, self.generation)
            .await
        {
            tracing::warn!("releasing the lease failed: {e}");
        }
        self.session.close().await;
    }
}

/// A read-only mount's hold on the commit it serves: its session names the commit (gc keeps it
/// readable: a pin) and registers exactly the layers its view resolved (also those a merge
/// replaced since); renewed by the session's heartbeat, removed when the mount ends.
pub struct ReadSession {
    session: SessionHandle,
}

impl ReadSession {
    /// Opens a reader's session on `commit`, its view, and registers the view's layers.
    pub async fn open(
        engine: Arc<Engine>,
        repo: &Repo,
        commit: &Commit,
        holder: &str,
    ) -> Result<(ReadSession, ReadView)> {
        Self::open_resolved(&engine, repo, commit, holder, || engine.view(commit), |v| v).await
    }

    /// [`open`](Self::open) for a follower: with the chain it builds its later views from.
    pub async fn open_chain(
        engine: Arc<Engine>,
        repo: &Repo,
        commit: &Commit,
        holder: &str,
    ) -> Result<(ReadSession, (ReadView, ViewChain))> {
        let resolve = || engine.view_chain(commit);
        Self::open_resolved(&engine, repo, commit, holder, resolve, |(v, _)| v).await
    }

    async fn open_resolved<T, F, Fut>(
        engine: &Engine,
        repo: &Repo,
        commit: &Commit,
        holder: &str,
        resolve: F,
        view_of: fn(&T) -> &ReadView,
    ) -> Result<(ReadSession, T)>
    where
        F: Fn() -> Fut,
        Fut: std::future::Future<Output = Result<T>>,
    {
        let session = SessionHandle::open(
            engine.catalog.clone(),
            repo.id,
            "reader",
            holder,
            Some(&commit.id),
        )
        .await?;
        match resolve_registered(&session, resolve, view_of).await {
            Ok(resolved) => Ok((ReadSession { session }, resolved)),
            Err(e) => {
                session.close().await;
                Err(e)
            }
        }
    }

    /// Moves the session on to the commit of a view built on one it holds: registers `added`
    /// (the layers the new view reads beyond those) and pins the new commit. `Conflict` if gc
    /// removed one of them.
    pub async fn move_to(&self, commit: &Commit, added: &[ViewLayer]) -> Result<()> {
        self.session.move_to(&commit.id, added).await
    }

    /// Ends the session (and so the pin).
    pub async fn release(self) {
        self.session.close().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Pending delta layers of these sizes, in order (seq = position).
    fn layers(sizes: &[i64]) -> Vec<LayerRow> {
        sizes
            .iter()
            .enumerate()
            .map(|(i, &size)| LayerRow {
                id: format!("l{i}"),
                repo_id: 1,
                commit_id: None,
                seq: i as i64,
                kind: LayerKind::Delta,
                object_key: format!("inline/l{i}"),
                size_bytes: size,
                min_time: 0,
                max_time: 0,
                created_at: 0,
            })
            .collect()
    }

    fn seqs(run: &[LayerRow]) -> Vec<i64> {
        run.iter().map(|l| l.seq).collect()
    }

    #[test]
    fn a_short_newest_run_is_merged_whole() {
        let mut sizes = vec![1 << 20];
        sizes.extend([241; 40]);
        let all = layers(&sizes);
        assert_eq!(seqs(compaction_run(&all, 32)), (1..41).collect::<Vec<_>>());
        assert!(
            compaction_run(&all[..32], 32).is_empty(),
            "31 small ones: not yet"
        );
    }

    #[test]
    fn a_long_run_is_taken_from_its_old_end() {
        let all = layers(&[241; 200]);
        assert_eq!(
            seqs(compaction_run(&all, 32)),
            (0..COMPACT_MAX as i64).collect::<Vec<_>>()
        );
    }

    /// Syncs outran compaction: 300 small layers, then a bigger one and 10 small ones above
    /// them. The newest run is too short; the one below the bigger layer is merged, not left.
    #[test]
    fn a_run_below_a_bigger_layer_is_not_left_behind() {
        let mut sizes = vec![241; 300];
        sizes.push(100_000);
        sizes.extend([241; 10]);
        let all = layers(&sizes);
        assert_eq!(
            seqs(compaction_run(&all, 32)),
            (0..COMPACT_MAX as i64).collect::<Vec<_>>()
        );
        // Merging until nothing is left to merge ends with few layers.
        let mut live = all;
        loop {
            let run = compaction_run(&live, 32);
            let Some(first) = run.first() else { break };
            let (at, n) = (
                live.iter().position(|l| l.id == first.id).unwrap(),
                run.len(),
            );
            let merged = LayerRow {
                size_bytes: run.iter().map(|l| l.size_bytes).sum(),
                ..first.clone()
            };
            live.splice(at..at + n, [merged]);
        }
        assert!(live.len() <= 14, "{} layers left", live.len());
    }

    #[test]
    fn only_delta_layers_of_one_size_class_make_a_run() {
        let mut all = layers(&[241; 40]);
        all[20].kind = LayerKind::Image;
        assert_eq!(seqs(compaction_run(&all, 16)), (21..40).collect::<Vec<_>>());
        assert_eq!(seqs(compaction_run(&all, 20)), (0..20).collect::<Vec<_>>());
        assert!(compaction_run(&all, 32).is_empty());
        let all = layers(&[100_000; 40]);
        assert_eq!(compaction_run(&all, 32).len(), 40);
    }
}

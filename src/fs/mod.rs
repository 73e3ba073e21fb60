//! The filesystem a mount serves, as plain Rust (no fuser types): the FUSE adapter in
//! `crate::fuse` only translates requests to these calls and results to replies, so tests drive
//! this directly too.
//!
//! The root directory holds the database's versioned files. Directories created in the mount
//! (DuckDB's `<db>.tmp/` spill directory) and everything inside them are local scratch in a
//! private directory of the mount: never versioned, removed at unmount.
//!
//! Durability (writable mounts): writes land in memory; `fsync` turns the file's dirty ranges into
//! a delta layer, stores it, then registers it in the catalog together with the branch's durable
//! file table (one transaction, fenced by the writer's lease). Creating, renaming and removing a
//! file are registered when they happen. What is registered is exactly what a crash leaves, and
//! what `quackfs commit` seals.

mod scratch;

use crate::catalog::FileRow;
use crate::engine::duckdb_file::{self, HeaderMark};
use crate::engine::extent_map::{ExtentMap, Source};
use crate::engine::session::{BranchSession, Segment};
use crate::engine::view::ReadView;
use crate::engine::{new_file_id, Engine};
use crate::error::Error;
use crate::store::StoreError;
use bytes::Bytes;
use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime};

/// Inode number of the root directory.
pub const ROOT: u64 = 1;

/// What the name of a scratch entry at the top of a mount ends with: DuckDB names its spill
/// directory `<database>.tmp` (`.tmp` for an in-memory database). Any other directory there is
/// refused, so that nothing is written where it would not be kept.
pub const SCRATCH_SUFFIX: &str = ".tmp";

/// Whether `name` may be a scratch entry at the top of a mount.
fn is_scratch_name(name: &str) -> bool {
    name.ends_with(SCRATCH_SUFFIX)
}

/// Dirty bytes held in memory before a background flush starts.
const FLUSH_THRESHOLD: u64 = 64 * 1024 * 1024;
/// A write over existing bytes is compared with them in units of this many bytes: units that
/// did not change are left out of the dirty ranges (and so of the layers). DuckDB rewrites whole
/// 256 KiB blocks of which a few bytes changed.
const COMPARE_UNIT: usize = 512;
/// Changed units closer than this are kept as one range (fewer, longer extents).
const COMPARE_GAP: usize = 4096;
/// Only writes at least this long are compared: the old bytes come a whole stored extent (up to
/// 256 KiB) at a time, so comparing random 4 KiB writes (a page store's, fio's) could read 64
/// times what they write, for little to gain.
const COMPARE_MIN: usize = 64 << 10;
/// Zeros to compare holes with.
static ZEROS: [u8; 65536] = [0; 65536];
/// Default bound of a mount's dirty (written, unsynced) bytes: beyond it writes wait until a
/// flush has stored some (backpressure, e.g. while the object store is down).
pub const DEFAULT_DIRTY_LIMIT: u64 = 256 * 1024 * 1024;
/// The smallest dirty bound a mount takes: one write of the largest size the kernel sends. (At
/// 0 every write waited for a flush that had nothing to store: the writer hung for ever.)
pub const MIN_DIRTY_LIMIT: u64 = crate::fuse::MAX_WRITE as u64;

/// A failed filesystem operation, as an errno.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FsError(pub i32);

impl FsError {
    pub const NOENT: FsError = FsError(libc::ENOENT);
    pub const EXIST: FsError = FsError(libc::EEXIST);
    pub const ROFS: FsError = FsError(libc::EROFS);
    pub const IO: FsError = FsError(libc::EIO);
    pub const ISDIR: FsError = FsError(libc::EISDIR);
    pub const NOTDIR: FsError = FsError(libc::ENOTDIR);
    pub const INVAL: FsError = FsError(libc::EINVAL);
    pub const XDEV: FsError = FsError(libc::EXDEV);
    pub const BADF: FsError = FsError(libc::EBADF);
    pub const NOTSUP: FsError = FsError(libc::EOPNOTSUPP);
    pub const NAMETOOLONG: FsError = FsError(libc::ENAMETOOLONG);
    pub const NOSPC: FsError = FsError(libc::ENOSPC);
    pub const PERM: FsError = FsError(libc::EPERM);

    fn from_io(e: &std::io::Error) -> FsError {
        FsError(e.raw_os_error().unwrap_or(libc::EIO))
    }
}

/// Maps library errors to errno at the filesystem edge.
impl From<Error> for FsError {
    fn from(e: Error) -> FsError {
        tracing::warn!("I/O failed: {e}");
        crate::metrics::count(&e);
        match e {
            Error::Store(StoreError::NoSpace(_)) => FsError::NOSPC,
            Error::Catalog(c) if c.is_no_space() => FsError::NOSPC,
            Error::Layer(crate::layer::LayerError::Io(ref source)) => FsError::from_io(source),
            Error::File { source, .. } => FsError::from_io(&source),
            _ => FsError::IO,
        }
    }
}

pub type FsResult<T> = Result<T, FsError>;

/// File type of a node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    File,
    Dir,
}

/// Attributes of a node.
#[derive(Debug, Clone)]
pub struct Attr {
    pub ino: u64,
    pub kind: Kind,
    pub size: u64,
    pub perm: u16,
    pub nlink: u32,
    pub atime: SystemTime,
    pub mtime: SystemTime,
    pub ctime: SystemTime,
}

/// A directory entry.
#[derive(Debug, Clone)]
pub struct DirEntry {
    pub ino: u64,
    pub name: String,
    pub kind: Kind,
}

/// How a mount behaves.
#[derive(Clone)]
pub struct MountConfig {
    /// The writable branch's session (lease, registration order); None: read-only.
    pub session: Option<Arc<BranchSession>>,
    /// Make a `checkpoint` commit when DuckDB completes a checkpoint.
    pub autocommit: bool,
    /// Private local directory for scratch (unversioned) entries.
    pub scratch: PathBuf,
    /// Most dirty bytes held in memory before writes wait.
    pub dirty_limit: u64,
    /// A read-only mount that follows its branch ([`QuackFs::follow`]): the kernel must look
    /// names up again instead of caching them.
    pub follow: bool,
}

/// Upper bounds (microseconds) of the sync latency histogram's buckets; the last is +Inf.
pub const SYNC_BUCKETS_US: [u64; 12] = [
    500,
    1_000,
    2_000,
    4_000,
    8_000,
    16_000,
    32_000,
    64_000,
    128_000,
    512_000,
    2_000_000,
    u64::MAX,
];

/// Counters for `status` and benchmarks (fixed size: nothing grows per sync).
#[derive(Debug, Default)]
pub struct Stats {
    pub syncs: AtomicU64,
    /// Syncs by latency bucket ([`SYNC_BUCKETS_US`]).
    pub sync_latency: [AtomicU64; 12],
    pub sync_micros_total: AtomicU64,
    pub layers_uploaded: AtomicU64,
    pub bytes_uploaded: AtomicU64,
    /// Sync layers kept in the catalog (no store round trip).
    pub layers_inline: AtomicU64,
    /// Catalog transactions that registered syncs (fewer than syncs: group commit).
    pub registrations: AtomicU64,
    pub commits: AtomicU64,
    /// Writes that waited for a flush because the dirty limit was reached.
    pub write_waits: AtomicU64,
    /// Bytes DuckDB wrote (write calls on versioned files).
    pub written_bytes: AtomicU64,
    /// Bytes of those writes equal to what they replaced (left out of the dirty ranges).
    pub unchanged_bytes: AtomicU64,
    /// Bytes of the layers syncs produced (in the catalog or the store).
    pub stored_bytes: AtomicU64,
    /// Reads by the number of distinct layers they went through ([`READ_LAYER_BUCKETS`]).
    pub read_layers: [AtomicU64; 8],
    pub read_layers_sum: AtomicU64,
}

/// Upper bounds of the read-amplification histogram's buckets; the last is +Inf.
pub const READ_LAYER_BUCKETS: [u64; 8] = [0, 1, 2, 4, 8, 16, 64, u64::MAX];

impl Stats {
    fn record_read(&self, layers: u64) {
        self.read_layers_sum.fetch_add(layers, Ordering::Relaxed);
        let b = READ_LAYER_BUCKETS
            .iter()
            .position(|&ub| layers <= ub)
            .unwrap_or(READ_LAYER_BUCKETS.len() - 1);
        self.read_layers[b].fetch_add(1, Ordering::Relaxed);
    }

    fn record_sync(&self, took: Duration) {
        let us = took.as_micros() as u64;
        self.syncs.fetch_add(1, Ordering::Relaxed);
        self.sync_micros_total.fetch_add(us, Ordering::Relaxed);
        let b = SYNC_BUCKETS_US
            .iter()
            .position(|&ub| us <= ub)
            .unwrap_or(SYNC_BUCKETS_US.len() - 1);
        self.sync_latency[b].fetch_add(1, Ordering::Relaxed);
    }
}

/// A versioned file.
#[derive(Debug)]
struct FileNode {
    file_id: u64,
    /// None once unlinked (kept while open).
    name: Option<String>,
    size: u64,
    /// Everything readable: layer pieces and memory pieces.
    map: ExtentMap,
    /// Memory pieces written since the last sync.
    dirty: ExtentMap,
    dirty_bytes: u64,
    /// Smallest size cut to since the last successful sync.
    truncate_to: Option<u64>,
    /// Smallest size cut to since the current sync took its snapshot.
    truncated_during_sync: Option<u64>,
    perm: u16,
    mtime: SystemTime,
    ctime: SystemTime,
    open: u32,
    /// What the DuckDB headers of the file's durable (registered) bytes say of its checkpoints,
    /// if it is a DuckDB database file (see `engine::duckdb_file::HeaderMark`).
    durable_mark: Option<HeaderMark>,
    /// The header mark of the file's last completed checkpoint that is in a commit, or of its
    /// creation (a checkpoint commit is due when the durable mark is past it). It belongs to
    /// the file: a database removed and created again under the same name starts without one.
    committed_mark: Option<HeaderMark>,
    /// Orders the syncs of this file (snapshot, upload, registration); other files' syncs run
    /// beside it.
    sync: Arc<tokio::sync::Mutex<()>>,
    /// Counts the changes of its contents (writes, truncations): a write that compared its bytes
    /// with the contents outside the lock knows whether they are still the same.
    changes: u64,
}

impl FileNode {
    /// A file with no unsynced changes.
    fn new(
        file_id: u64,
        name: &str,
        size: u64,
        map: ExtentMap,
        perm: u16,
        time: SystemTime,
        open: u32,
    ) -> FileNode {
        FileNode {
            file_id,
            name: Some(name.to_string()),
            size,
            map,
            dirty: ExtentMap::new(),
            dirty_bytes: 0,
            truncate_to: None,
            truncated_during_sync: None,
            perm,
            mtime: time,
            ctime: time,
            open,
            durable_mark: None,
            committed_mark: None,
            sync: Arc::new(tokio::sync::Mutex::new(())),
            changes: 0,
        }
    }
}

#[derive(Debug)]
enum Node {
    /// (Boxed: a file node is ten times the size of a scratch entry's path.)
    File(Box<FileNode>),
    /// A scratch entry: path relative to the scratch directory.
    Scratch(PathBuf),
}

#[derive(Debug)]
enum Handle {
    File { ino: u64 },
    Scratch(Arc<std::fs::File>),
}

/// What a namespace change of the root replaced, put back if its registration in the catalog
/// fails: the change then has no effect at all (the caller gets the errno).
#[derive(Default)]
struct NsUndo {
    /// Previous values of the root entries and durable rows it touched.
    root: Vec<(String, Option<u64>)>,
    durable: Vec<(String, Option<(u64, u64)>)>,
    /// Previous names of the file nodes it renamed or unlinked.
    names: Vec<(u64, Option<String>)>,
    /// Nodes it removed (unlinked and not open) and nodes it added.
    removed: Vec<(u64, Node)>,
    added: Vec<u64>,
    handle: Option<u64>,
}

impl NsUndo {
    /// Remembers the root entry and durable row of `name` before they change.
    fn entry(&mut self, st: &State, name: &str) {
        if !self.root.iter().any(|(n, _)| n == name) {
            self.root
                .push((name.to_string(), st.root.get(name).copied()));
            self.durable
                .push((name.to_string(), st.durable.get(name).copied()));
        }
    }

    /// Remembers the name of node `ino` before it changes.
    fn name(&mut self, st: &State, ino: u64) {
        if let Some(Node::File(f)) = st.nodes.get(&ino) {
            self.names.push((ino, f.name.clone()));
        }
    }

    /// Puts everything back.
    fn undo(self, st: &mut State) {
        for ino in self.added {
            st.nodes.remove(&ino);
        }
        for (ino, node) in self.removed {
            if let Node::File(f) = &node {
                st.dirty_bytes += f.dirty_bytes;
            }
            st.nodes.insert(ino, node);
        }
        for (ino, name) in self.names.into_iter().rev() {
            if let Some(Node::File(f)) = st.nodes.get_mut(&ino) {
                f.name = name;
            }
        }
        for (name, v) in self.root {
            match v {
                Some(ino) => st.root.insert(name, ino),
                None => st.root.remove(&name),
            };
        }
        for (name, v) in self.durable {
            match v {
                Some(d) => st.durable.insert(name, d),
                None => st.durable.remove(&name),
            };
        }
        if let Some(fh) = self.handle {
            st.handles.remove(&fh);
        }
    }
}

/// How far the kernel reads ahead of a reader of a mount (set when the session starts).
pub const KERNEL_READAHEAD: u32 = 128 * 1024;

/// How many files of a mount [`QuackFs::warm_open`] looks at (the largest).
const WARM_FILES: usize = 4;

struct State {
    nodes: HashMap<u64, Node>,
    /// Root directory entries.
    root: BTreeMap<String, u64>,
    scratch_inos: HashMap<PathBuf, u64>,
    next_ino: u64,
    handles: HashMap<u64, Handle>,
    next_fh: u64,
    /// Object keys of the layers that `Source::Layer::layer` numbers; layers no piece refers to
    /// any more are dropped now and then (`collect_layers`), so the table does not grow per sync.
    layers: HashMap<u32, Arc<str>>,
    next_layer: u32,
    /// Size of the layer table after its last collection.
    layers_live: usize,
    /// Syncs stored and waiting for their registration, in order.
    reg_queue: Vec<QueuedSync>,
    /// The durable file table as registered in the catalog: name -> (file id, size).
    durable: BTreeMap<String, (u64, u64)>,
    write_seq: u64,
    dirty_bytes: u64,
    /// Last attributes of removed scratch entries (fstat on an open descriptor still works).
    removed: HashMap<u64, Attr>,
    /// A following mount: the generation (commit served) each file inode belongs to.
    node_gen: HashMap<u64, u64>,
    /// Inodes a follow replaced, with when: kept a moment even if not open, so that a lookup
    /// answered just before the switch can still be followed by its getattr or open.
    retired: Vec<(u64, std::time::Instant)>,
}

/// How long a replaced, unopened inode of a following mount stays answerable.
const RETIRED_GRACE: Duration = Duration::from_secs(3);

/// The filesystem of one mount.
pub struct QuackFs {
    engine: Arc<Engine>,
    cfg: MountConfig,
    state: Mutex<State>,
    /// Signalled when dirty bytes were freed (writers waiting at the dirty limit).
    freed: Condvar,
    flushing: AtomicBool,
    started: SystemTime,
    rt: tokio::runtime::Handle,
    pub stats: Stats,
    /// Bytes of stored segments being copied into the extent cache (bounded by [`PRIME_MAX`]).
    priming: Arc<AtomicU64>,
    /// WAL removals acknowledged to the caller and not registered yet (see
    /// [`unlink_acked`](Self::unlink_acked)).
    unlinks_in_flight: AtomicUsize,
    /// Such a removal failed to register: the catalog's file table lags the mount's until the
    /// next registration (an fsync of the directory makes one).
    namespace_behind: AtomicBool,
}

/// Most bytes of just-stored segments held for the extent cache at once. Beyond it (a bulk
/// load) they are not primed: the memory they hold would escape the dirty limit, and a bulk
/// load would only evict what readers use.
const PRIME_MAX: u64 = 16 << 20;

/// A sync waiting for its registration (group commit: whoever holds the registration order
/// registers every queued one).
struct QueuedSync {
    ino: u64,
    file_id: u64,
    size: u64,
    /// The write sequence number its snapshot covered.
    seq: u64,
    segment: Option<Segment>,
    /// The bytes the segment holds (memory pieces), to keep in the extent cache once stored.
    dirty: ExtentMap,
    done: tokio::sync::oneshot::Sender<FsResult<()>>,
}

/// The pieces of a read, resolved under the state lock: (offset in the range, length, source).
type Resolved = Vec<(u64, u64, ReadSrc)>;

/// Where the bytes of one piece of a read come from (resolved under the lock).
enum ReadSrc {
    Mem(Bytes),
    Layer(ExtentPiece),
}

/// A piece of a stored extent: the extent (its object, offset in it, length and checksum) and
/// where the piece starts in it.
struct ExtentPiece {
    key: Arc<str>,
    data_off: u64,
    ext_len: u32,
    crc: u32,
    skip: u32,
}

impl ExtentPiece {
    /// The piece's `len` bytes, out of its whole extent `ext` (None if `ext` is too short).
    fn cut(&self, ext: Bytes, len: usize) -> Option<Bytes> {
        let (from, to) = (self.skip as usize, self.skip as usize + len);
        (to <= ext.len()).then(|| ext.slice(from..to))
    }
}

/// Puts the extents of layers this mount just stored into the extent cache, from the memory
/// pieces they were written from.
fn prime_written(
    cache: &crate::engine::layers::LayerCache,
    written: Vec<(String, Arc<crate::layer::LayerIndex>, u64, ExtentMap)>,
) {
    for (key, index, file_id, dirty) in written {
        let Some(entry) = index.file(file_id) else {
            continue;
        };
        let mut items = Vec::with_capacity(entry.extents.len());
        for e in &entry.extents {
            let mut buf = vec![0u8; e.len as usize];
            for (start, p) in dirty.range(e.offset, e.offset + e.len as u64) {
                if let Source::Mem { buf: b, .. } = &p.src {
                    let at = (start - e.offset) as usize;
                    buf[at..at + p.len as usize].copy_from_slice(&b[..p.len as usize]);
                }
            }
            // Exactly the stored bytes, or nothing is cached.
            if crc32c::crc32c(&buf) == e.crc {
                items.push((e.data_off, Bytes::from(buf), e.crc));
            }
        }
        cache.prime(&key, items);
    }
}

/// The database file whose checkpoint state a change to `name` can complete, if `name` is one of
/// DuckDB's WAL files.
fn wal_database(name: &str) -> Option<String> {
    duckdb_file::database_of_wal(name).map(str::to_string)
}

impl QuackFs {
    /// A filesystem serving `view` (a commit, plus pending state for a writable branch).
    pub fn new(engine: Arc<Engine>, view: ReadView, cfg: MountConfig) -> FsResult<QuackFs> {
        std::fs::create_dir_all(&cfg.scratch).map_err(|e| FsError::from_io(&e))?;
        let now = SystemTime::now();
        let mtime =
            SystemTime::UNIX_EPOCH + Duration::from_millis(view.commit.created_at.max(0) as u64);
        let mut st = State {
            nodes: HashMap::new(),
            root: BTreeMap::new(),
            scratch_inos: HashMap::new(),
            next_ino: ROOT + 1,
            handles: HashMap::new(),
            next_fh: 1,
            layers: view
                .layers
                .iter()
                .enumerate()
                .map(|(i, l)| (i as u32, Arc::from(l.row.object_key.as_str())))
                .collect(),
            next_layer: view.layers.len() as u32,
            layers_live: view.layers.len(),
            reg_queue: Vec::new(),
            durable: BTreeMap::new(),
            write_seq: 0,
            dirty_bytes: 0,
            removed: HashMap::new(),
            node_gen: HashMap::new(),
            retired: Vec::new(),
        };
        for f in view.files.values() {
            let ino = st.next_ino;
            st.next_ino += 1;
            st.durable.insert(f.path.clone(), (f.file_id, f.size));
            st.root.insert(f.path.clone(), ino);
            st.nodes.insert(
                ino,
                Node::File(Box::new(FileNode::new(
                    f.file_id,
                    &f.path,
                    f.size,
                    f.map.clone(),
                    0o644,
                    mtime,
                    0,
                ))),
            );
        }
        Ok(QuackFs {
            engine,
            cfg,
            state: Mutex::new(st),
            freed: Condvar::new(),
            flushing: AtomicBool::new(false),
            started: now,
            rt: tokio::runtime::Handle::try_current().map_err(|_| FsError::IO)?,
            stats: Stats::default(),
            priming: Arc::new(AtomicU64::new(0)),
            unlinks_in_flight: AtomicUsize::new(0),
            namespace_behind: AtomicBool::new(false),
        })
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn writable(&self) -> bool {
        self.cfg.session.is_some()
    }

    /// On a remote store, brings into the caches what DuckDB reads first when it opens a
    /// database: the headers, then the metadata block the active header names (each with what
    /// the kernel reads ahead of them). Each is a round trip, the second only after the first,
    /// before DuckDB can answer anything; done right after the mount, a later open finds both
    /// in memory. The largest files of the view are looked at, [`WARM_FILES`] at most, and only
    /// the database files among them get the second read. Failures are left to the reads that
    /// will need those bytes.
    pub async fn warm_open(&self) {
        self.warm(None).await
    }

    /// [`warm_open`](Self::warm_open) for the files a follow move changed (`names`): a new
    /// connection opening one of them after the move reads its new headers and metadata.
    pub async fn warm_changed(&self, names: &[String]) {
        self.warm(Some(names)).await
    }

    async fn warm(&self, only: Option<&[String]>) {
        if self.engine.store.as_local().is_some() {
            return;
        }
        let mut files: Vec<(u64, u64)> = {
            let st = self.lock();
            st.root
                .iter()
                .filter(|(name, _)| only.is_none_or(|o| o.contains(name)))
                .filter_map(|(_, ino)| match st.nodes.get(ino) {
                    Some(Node::File(f)) if f.size >= duckdb_file::HEADERS_END => {
                        Some((f.size, *ino))
                    }
                    _ => None,
                })
                .collect()
        };
        files.sort_unstable_by(|a, b| b.cmp(a));
        files.truncate(WARM_FILES);
        // (No handle: handles start at 1, and scratch files are never in the view. Each read
        // goes as far as the kernel reads ahead of DuckDB's.)
        const NO_HANDLE: u64 = 0;
        let warm = |ino: u64| async move {
            let Ok(head) = self.read(ino, NO_HANDLE, 0, KERNEL_READAHEAD).await else {
                return;
            };
            if let Some((off, len)) = duckdb_file::metadata_block(&head) {
                let len = u32::try_from(len).unwrap_or(u32::MAX);
                let _ = self
                    .read(ino, NO_HANDLE, off, len.saturating_add(KERNEL_READAHEAD))
                    .await;
            }
        };
        futures::future::join_all(files.into_iter().map(|(_, ino)| warm(ino))).await;
    }

    /// Everything this mount reports (`mount --metrics`, `status --json`); the pending figures
    /// come from the catalog (another host may have committed them).
    pub fn metrics(&self, pending_layers: u64, pending_bytes: u64) -> crate::metrics::Snapshot {
        use crate::metrics::{Histogram, GLOBAL};
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        let bound = |b: u64, scale: f64| {
            if b == u64::MAX {
                f64::INFINITY
            } else {
                b as f64 * scale
            }
        };
        let s = &self.stats;
        let fsync_seconds = Histogram {
            buckets: SYNC_BUCKETS_US
                .iter()
                .zip(&s.sync_latency)
                .map(|(b, c)| (bound(*b, 1e-6), get(c)))
                .collect(),
            sum: get(&s.sync_micros_total) as f64 / 1e6,
            count: get(&s.syncs),
        };
        let read_layers = Histogram {
            buckets: READ_LAYER_BUCKETS
                .iter()
                .zip(&s.read_layers)
                .map(|(b, c)| (bound(*b, 1.0), get(c)))
                .collect(),
            sum: get(&s.read_layers_sum) as f64,
            count: s.read_layers.iter().map(get).sum(),
        };
        let disk = self.engine.disk_cache();
        crate::metrics::Snapshot {
            fsync_seconds,
            read_layers,
            duckdb_written_bytes: get(&s.written_bytes),
            unchanged_bytes: get(&s.unchanged_bytes),
            stored_bytes: get(&s.stored_bytes),
            uploads: get(&GLOBAL.uploads),
            uploaded_bytes: get(&GLOBAL.uploaded_bytes),
            downloads: get(&GLOBAL.downloads),
            downloaded_bytes: get(&GLOBAL.downloaded_bytes),
            memory_cache_hits: get(&GLOBAL.memory_cache_hits),
            memory_cache_misses: get(&GLOBAL.memory_cache_misses),
            readahead_fetches: get(&GLOBAL.readahead_fetches),
            disk_cache_hits: disk.map(|d| get(&d.hits)).unwrap_or(0),
            disk_cache_misses: disk.map(|d| get(&d.misses)).unwrap_or(0),
            dirty_bytes: self.lock().dirty_bytes,
            pending_layers,
            pending_bytes,
            commits: get(&s.commits),
            registrations: get(&s.registrations),
            lease_heartbeats: get(&GLOBAL.lease_heartbeats),
            lease_heartbeat_failures: get(&GLOBAL.lease_heartbeat_failures),
            fence_events: get(&GLOBAL.fence_events),
            errors: crate::metrics::global_errors()
                .into_iter()
                .map(|((b, k), n)| (format!("{b}/{k}"), n))
                .collect(),
        }
    }

    /// Whether this read-only mount follows its branch.
    pub fn follows(&self) -> bool {
        self.cfg.follow
    }

    /// Serves `view` (a newer commit of the followed branch, generation `gen`) to every open from
    /// now on. A file whose contents changed gets a new inode: handles already open keep reading
    /// the old one (its commit, whole; the kernel's page cache is per inode, so it never mixes
    /// the two), and the old inode goes when its last handle closes. Unchanged files keep their
    /// inode and cached pages. Returns the names that changed.
    pub fn follow(&self, view: &ReadView, gen: u64) -> Vec<String> {
        let mut st = self.lock();
        // The new view's layers, numbered in this mount's layer table (by object key).
        let mut by_key: HashMap<Arc<str>, u32> =
            st.layers.iter().map(|(n, k)| (k.clone(), *n)).collect();
        let mut remap = Vec::with_capacity(view.layers.len());
        for l in &view.layers {
            let key: Arc<str> = Arc::from(l.row.object_key.as_str());
            let no = match by_key.get(&key) {
                Some(n) => *n,
                None => {
                    let n = st.next_layer;
                    st.next_layer += 1;
                    st.layers.insert(n, key.clone());
                    by_key.insert(key, n);
                    n
                }
            };
            remap.push(no);
        }
        let mtime =
            SystemTime::UNIX_EPOCH + Duration::from_millis(view.commit.created_at.max(0) as u64);
        let mut changed = Vec::new();
        let old_names: Vec<String> = st.root.keys().cloned().collect();
        for name in old_names {
            if !view.files.contains_key(&name) {
                if let Some(ino) = st.root.remove(&name) {
                    Self::retire(&mut st, ino);
                }
                changed.push(name);
            }
        }
        for f in view.files.values() {
            let mut map = ExtentMap::new();
            for (off, p) in f.map.iter() {
                let mut src = p.src.clone();
                if let Source::Layer { layer, .. } = &mut src {
                    *layer = remap.get(*layer as usize).copied().unwrap_or(*layer);
                }
                map.insert(off, p.len, src);
            }
            let same = st
                .root
                .get(&f.path)
                .and_then(|ino| st.nodes.get(ino))
                .is_some_and(|n| match n {
                    Node::File(old) => {
                        old.file_id == f.file_id
                            && old.size == f.size
                            && old.map.iter().eq(map.iter())
                    }
                    Node::Scratch(_) => false,
                });
            if same {
                // The new generation's session holds the same layers.
                if let Some(ino) = st.root.get(&f.path).copied() {
                    st.node_gen.insert(ino, gen);
                }
                continue;
            }
            if let Some(ino) = st.root.remove(&f.path) {
                Self::retire(&mut st, ino);
            }
            let ino = st.next_ino;
            st.next_ino += 1;
            st.root.insert(f.path.clone(), ino);
            st.nodes.insert(
                ino,
                Node::File(Box::new(FileNode::new(
                    f.file_id, &f.path, f.size, map, 0o644, mtime, 0,
                ))),
            );
            st.node_gen.insert(ino, gen);
            changed.push(f.path.clone());
        }
        st.durable = view
            .files
            .values()
            .map(|f| (f.path.clone(), (f.file_id, f.size)))
            .collect();
        Self::collect_layers(&mut st);
        changed
    }

    /// A file inode no longer named: removed when its last handle closes, or after
    /// [`RETIRED_GRACE`] if it is not open.
    fn retire(st: &mut State, ino: u64) {
        if let Some(Node::File(f)) = st.nodes.get_mut(&ino) {
            f.name = None;
            st.retired.push((ino, std::time::Instant::now()));
        }
    }

    /// Removes retired inodes past their grace that no handle holds.
    fn sweep_retired(st: &mut State) {
        let now = std::time::Instant::now();
        let mut keep = Vec::new();
        for (ino, at) in std::mem::take(&mut st.retired) {
            let open = match st.nodes.get(&ino) {
                Some(Node::File(f)) => f.open,
                _ => continue,
            };
            if open == 0 && now.duration_since(at) >= RETIRED_GRACE {
                st.nodes.remove(&ino);
                st.node_gen.remove(&ino);
            } else {
                keep.push((ino, at));
            }
        }
        st.retired = keep;
    }

    /// The generations ([`follow`](Self::follow)) some inode still belongs to: files named now
    /// or held open. Generation 0 is the commit the mount started with.
    pub fn live_generations(&self) -> std::collections::BTreeSet<u64> {
        let mut st = self.lock();
        Self::sweep_retired(&mut st);
        st.nodes
            .keys()
            .map(|ino| st.node_gen.get(ino).copied().unwrap_or(0))
            .collect()
    }

    /// The writable branch's session, or EROFS.
    fn session(&self) -> FsResult<&Arc<BranchSession>> {
        self.cfg.session.as_ref().ok_or(FsError::ROFS)
    }

    /// The session of the branch this mount writes (None: read-only).
    pub fn branch_session(&self) -> Option<Arc<BranchSession>> {
        self.cfg.session.clone()
    }

    fn check_writable(&self) -> FsResult<()> {
        if self.session()?.is_fenced() {
            return Err(FsError::IO);
        }
        Ok(())
    }

    /// Whether another writer took the branch over (every write fails from then on).
    pub fn is_fenced(&self) -> bool {
        self.cfg.session.as_ref().is_some_and(|s| s.is_fenced())
    }

    fn scratch_path(&self, rel: &std::path::Path) -> PathBuf {
        self.cfg.scratch.join(rel)
    }

    fn root_attr(&self, st: &State) -> Attr {
        let dirs = st
            .root
            .values()
            .filter(|i| matches!(st.nodes.get(i), Some(Node::Scratch(_))))
            .count();
        Attr {
            ino: ROOT,
            kind: Kind::Dir,
            size: 4096,
            perm: if self.writable() { 0o755 } else { 0o555 },
            nlink: 2 + dirs as u32,
            atime: self.started,
            mtime: self.started,
            ctime: self.started,
        }
    }

    fn node_attr(&self, st: &State, ino: u64) -> FsResult<Attr> {
        if ino == ROOT {
            return Ok(self.root_attr(st));
        }
        match st.nodes.get(&ino) {
            Some(Node::File(f)) => Ok(Attr {
                ino,
                kind: Kind::File,
                size: f.size,
                perm: if self.writable() {
                    f.perm
                } else {
                    f.perm & 0o555
                },
                nlink: u32::from(f.name.is_some()),
                atime: f.mtime,
                mtime: f.mtime,
                ctime: f.ctime,
            }),
            Some(Node::Scratch(rel)) => match scratch::attr(ino, &self.scratch_path(rel)) {
                Err(FsError::NOENT) => st.removed.get(&ino).cloned().ok_or(FsError::NOENT),
                other => other,
            },
            None => Err(FsError::NOENT),
        }
    }

    /// Remembers the attributes of a scratch entry about to be removed.
    fn remember_removed(&self, st: &mut State, rel: &std::path::Path) {
        if let Some(&ino) = st.scratch_inos.get(rel) {
            if let Ok(mut a) = scratch::attr(ino, &self.scratch_path(rel)) {
                a.nlink = 0;
                st.removed.insert(ino, a);
            }
        }
    }

    fn scratch_ino(st: &mut State, rel: PathBuf) -> u64 {
        if let Some(&ino) = st.scratch_inos.get(&rel) {
            return ino;
        }
        let ino = st.next_ino;
        st.next_ino += 1;
        st.scratch_inos.insert(rel.clone(), ino);
        st.nodes.insert(ino, Node::Scratch(rel));
        ino
    }

    /// After a rename in scratch: inodes under `from` now live under `to` (open handles and the
    /// kernel keep their inode numbers); whatever `to` named before is gone.
    fn move_scratch(st: &mut State, from: &std::path::Path, to: &std::path::Path) {
        st.scratch_inos.retain(|p, _| !p.starts_with(to));
        let moved: Vec<(PathBuf, u64)> = st
            .scratch_inos
            .iter()
            .filter(|(p, _)| p.starts_with(from))
            .map(|(p, &i)| (p.clone(), i))
            .collect();
        for (old, ino) in moved {
            let new = match old.strip_prefix(from) {
                Ok(rest) if rest.as_os_str().is_empty() => to.to_path_buf(),
                Ok(rest) => to.join(rest),
                Err(_) => continue,
            };
            st.scratch_inos.remove(&old);
            st.scratch_inos.insert(new.clone(), ino);
            st.nodes.insert(ino, Node::Scratch(new));
        }
    }

    /// The scratch directory path of `parent` (which must be a scratch directory), joined with `name`.
    fn scratch_child(st: &State, parent: u64, name: &str) -> FsResult<PathBuf> {
        match st.nodes.get(&parent) {
            Some(Node::Scratch(rel)) => Ok(rel.join(name)),
            Some(Node::File(_)) => Err(FsError::NOTDIR),
            None => Err(FsError::NOENT),
        }
    }

    fn check_name(name: &str) -> FsResult<()> {
        if name.len() > 255 {
            return Err(FsError::NAMETOOLONG);
        }
        if name.is_empty() || name == "." || name == ".." || name.contains('/') {
            return Err(FsError::INVAL);
        }
        Ok(())
    }

    pub fn getattr(&self, ino: u64) -> FsResult<Attr> {
        self.getattr_fh(ino, None)
    }

    /// getattr through an open handle when there is one (a scratch file may have lost its name).
    pub fn getattr_fh(&self, ino: u64, fh: Option<u64>) -> FsResult<Attr> {
        let st = self.lock();
        if let Some(Handle::Scratch(file)) = fh.and_then(|h| st.handles.get(&h)) {
            let m = file.metadata().map_err(|e| FsError::from_io(&e))?;
            return scratch::attr_of(ino, &m);
        }
        self.node_attr(&st, ino)
    }

    pub fn lookup(&self, parent: u64, name: &str) -> FsResult<Attr> {
        let mut st = self.lock();
        if parent == ROOT {
            let ino = *st.root.get(name).ok_or(FsError::NOENT)?;
            return self.node_attr(&st, ino);
        }
        let rel = Self::scratch_child(&st, parent, name)?;
        std::fs::symlink_metadata(self.scratch_path(&rel)).map_err(|e| FsError::from_io(&e))?;
        let ino = Self::scratch_ino(&mut st, rel);
        self.node_attr(&st, ino)
    }

    pub fn readdir(&self, ino: u64) -> FsResult<Vec<DirEntry>> {
        let mut st = self.lock();
        let mut out = vec![
            DirEntry {
                ino,
                name: ".".into(),
                kind: Kind::Dir,
            },
            DirEntry {
                ino: ROOT,
                name: "..".into(),
                kind: Kind::Dir,
            },
        ];
        if ino == ROOT {
            for (name, &i) in &st.root {
                let kind = if matches!(st.nodes.get(&i), Some(Node::Scratch(_))) {
                    Kind::Dir
                } else {
                    Kind::File
                };
                out.push(DirEntry {
                    ino: i,
                    name: name.clone(),
                    kind,
                });
            }
            return Ok(out);
        }
        let rel = match st.nodes.get(&ino) {
            Some(Node::Scratch(rel)) => rel.clone(),
            Some(Node::File(_)) => return Err(FsError::NOTDIR),
            None => return Err(FsError::NOENT),
        };
        for (name, kind) in scratch::list(&self.scratch_path(&rel))? {
            let i = Self::scratch_ino(&mut st, rel.join(&name));
            out.push(DirEntry { ino: i, name, kind });
        }
        Ok(out)
    }

    pub fn mkdir(&self, parent: u64, name: &str, mode: u32) -> FsResult<Attr> {
        Self::check_name(name)?;
        self.check_writable()?;
        let mut st = self.lock();
        let rel = if parent == ROOT {
            if st.root.contains_key(name) {
                return Err(FsError::EXIST);
            }
            if !is_scratch_name(name) {
                tracing::warn!(
                    "mkdir {name} refused (EPERM): only the files at the top of a mount are versioned; a directory is scratch, for DuckDB's spill files, and its name must end in {SCRATCH_SUFFIX} (docs/semantics.md)"
                );
                return Err(FsError::PERM);
            }
            PathBuf::from(name)
        } else {
            Self::scratch_child(&st, parent, name)?
        };
        scratch::mkdir(&self.scratch_path(&rel), mode)?;
        let ino = Self::scratch_ino(&mut st, rel);
        if parent == ROOT {
            st.root.insert(name.to_string(), ino);
        }
        self.node_attr(&st, ino)
    }

    pub fn rmdir(&self, parent: u64, name: &str) -> FsResult<()> {
        self.check_writable()?;
        let mut st = self.lock();
        let rel = if parent == ROOT {
            match st.root.get(name).and_then(|i| st.nodes.get(i)) {
                Some(Node::Scratch(rel)) => rel.clone(),
                Some(Node::File(_)) => return Err(FsError::NOTDIR),
                None => return Err(FsError::NOENT),
            }
        } else {
            Self::scratch_child(&st, parent, name)?
        };
        self.remember_removed(&mut st, &rel);
        std::fs::remove_dir(self.scratch_path(&rel)).map_err(|e| FsError::from_io(&e))?;
        st.scratch_inos.remove(&rel);
        if parent == ROOT {
            st.root.remove(name);
        }
        Ok(())
    }

    /// Creates (or opens, without O_EXCL) a file; returns its attributes and a handle.
    pub async fn create(
        &self,
        parent: u64,
        name: &str,
        mode: u32,
        flags: i32,
    ) -> FsResult<(Attr, u64)> {
        Self::check_name(name)?;
        self.check_writable()?;
        if parent != ROOT {
            let mut st = self.lock();
            let rel = Self::scratch_child(&st, parent, name)?;
            let file = scratch::open(&self.scratch_path(&rel), flags | libc::O_CREAT, mode)?;
            let ino = Self::scratch_ino(&mut st, rel);
            let fh = Self::add_handle(&mut st, Handle::Scratch(Arc::new(file)));
            return Ok((self.node_attr(&st, ino)?, fh));
        }
        let existing = self.lock().root.get(name).copied();
        if let Some(ino) = existing {
            if flags & libc::O_EXCL != 0 {
                return Err(FsError::EXIST);
            }
            let fh = self.open(ino, flags).await?;
            return Ok((self.getattr(ino)?, fh));
        }
        // The new name is registered with the file's first fsync (or a rename of it, or an
        // fsync of the directory), as a local filesystem makes a new name durable: a created
        // file that was never synced is not part of the durable state yet. (Without a session
        // nothing is versioned: no root files.)
        self.session()?;
        let mut st = self.lock();
        if st.root.contains_key(name) {
            return Err(FsError::EXIST);
        }
        let ino = st.next_ino;
        st.next_ino += 1;
        st.nodes.insert(
            ino,
            Node::File(Box::new(FileNode::new(
                new_file_id(),
                name,
                0,
                ExtentMap::new(),
                (mode & 0o7777) as u16,
                SystemTime::now(),
                1,
            ))),
        );
        st.root.insert(name.to_string(), ino);
        let fh = Self::add_handle(&mut st, Handle::File { ino });
        Ok((self.node_attr(&st, ino)?, fh))
    }

    fn add_handle(st: &mut State, h: Handle) -> u64 {
        let fh = st.next_fh;
        st.next_fh += 1;
        st.handles.insert(fh, h);
        fh
    }

    pub async fn open(&self, ino: u64, flags: i32) -> FsResult<u64> {
        let wants_write = flags & libc::O_ACCMODE != libc::O_RDONLY || flags & libc::O_TRUNC != 0;
        if wants_write {
            self.check_writable()?;
        }
        let mut st = self.lock();
        match st.nodes.get_mut(&ino) {
            Some(Node::File(f)) => {
                f.open += 1;
            }
            Some(Node::Scratch(rel)) => {
                let file = scratch::open(&self.scratch_path(rel), flags & !libc::O_CREAT, 0)?;
                return Ok(Self::add_handle(&mut st, Handle::Scratch(Arc::new(file))));
            }
            None => return Err(FsError::NOENT),
        }
        let fh = Self::add_handle(&mut st, Handle::File { ino });
        drop(st);
        if flags & libc::O_TRUNC != 0 {
            self.set_size(ino, 0)?;
        }
        Ok(fh)
    }

    /// Opens a directory: scratch directories get a handle (fstat works after rmdir).
    pub fn opendir(&self, ino: u64) -> FsResult<u64> {
        let mut st = self.lock();
        match st.nodes.get(&ino) {
            _ if ino == ROOT => Ok(0),
            Some(Node::Scratch(rel)) => {
                let file = std::fs::File::open(self.scratch_path(rel))
                    .map_err(|e| FsError::from_io(&e))?;
                if !file.metadata().map_err(|e| FsError::from_io(&e))?.is_dir() {
                    return Err(FsError::NOTDIR);
                }
                Ok(Self::add_handle(&mut st, Handle::Scratch(Arc::new(file))))
            }
            Some(Node::File(_)) => Err(FsError::NOTDIR),
            None => Err(FsError::NOENT),
        }
    }

    pub fn release(&self, fh: u64) -> FsResult<()> {
        let mut st = self.lock();
        match st.handles.remove(&fh) {
            Some(Handle::File { ino }) => {
                let unnamed = match st.nodes.get_mut(&ino) {
                    Some(Node::File(f)) => {
                        f.open = f.open.saturating_sub(1);
                        f.open == 0 && f.name.is_none()
                    }
                    _ => false,
                };
                // An inode a follower replaced stays for its grace (`sweep_retired`): a lookup
                // answered just before the switch may still ask for its attributes.
                let gone = unnamed && !st.retired.iter().any(|(i, _)| *i == ino);
                if gone {
                    if let Some(Node::File(f)) = st.nodes.remove(&ino) {
                        st.dirty_bytes = st.dirty_bytes.saturating_sub(f.dirty_bytes);
                    }
                    st.node_gen.remove(&ino);
                }
                Ok(())
            }
            Some(Handle::Scratch(_)) => Ok(()),
            None => Err(FsError::BADF),
        }
    }

    /// Reads up to `size` bytes at `off`. A read that one piece covers (the usual case: a read
    /// within one extent or one dirty buffer) shares that piece's bytes, uncopied.
    pub async fn read(&self, ino: u64, fh: u64, off: u64, size: u32) -> FsResult<Bytes> {
        let (len, pieces) = {
            let st = self.lock();
            if let Some(Handle::Scratch(file)) = st.handles.get(&fh) {
                let file = file.clone();
                drop(st);
                return scratch::read(&file, off, size).map(Bytes::from);
            }
            let Some(Node::File(f)) = st.nodes.get(&ino) else {
                return Err(FsError::NOENT);
            };
            let end = (off + size as u64).min(f.size);
            if off >= end {
                return Ok(Bytes::new());
            }
            (end - off, Self::pieces(&st, f, off, end)?)
        };
        let mut layers: Vec<&Arc<str>> = pieces
            .iter()
            .filter_map(|(_, _, src)| match src {
                ReadSrc::Layer(e) => Some(&e.key),
                ReadSrc::Mem(_) => None,
            })
            .collect();
        layers.sort();
        layers.dedup();
        self.stats.record_read(layers.len() as u64);
        if matches!(pieces[..], [(0, plen, _)] if plen == len) {
            let (_, _, src) = pieces.into_iter().next().ok_or(FsError::IO)?;
            return self.piece(src, len).await;
        }
        let mut buf = vec![0u8; len as usize];
        self.fill(&mut buf, pieces).await?;
        Ok(Bytes::from(buf))
    }

    /// The `len` bytes of one resolved piece, shared with the cache or buffer that holds them.
    async fn piece(&self, src: ReadSrc, len: u64) -> FsResult<Bytes> {
        let len = len as usize;
        match src {
            ReadSrc::Mem(b) => (len <= b.len()).then(|| b.slice(..len)),
            ReadSrc::Layer(e) => {
                let ext = self
                    .engine
                    .layers
                    .extent(&e.key, e.data_off, e.ext_len, e.crc)
                    .await?;
                e.cut(ext, len)
            }
        }
        .ok_or(FsError::IO)
    }

    /// Where the bytes of `[off, end)` of `f` come from, resolved under the state lock: (offset
    /// in the range, length, source) per piece; what no piece covers reads as zeros.
    fn pieces(st: &State, f: &FileNode, off: u64, end: u64) -> FsResult<Resolved> {
        let mut pieces = Vec::new();
        for (start, p) in f.map.range(off, end) {
            let src = match p.src {
                Source::Mem { buf, .. } => ReadSrc::Mem(buf.slice(..p.len as usize)),
                Source::Layer {
                    layer,
                    data_off,
                    ext_len,
                    crc,
                    skip,
                } => {
                    let key = st.layers.get(&layer).ok_or(FsError::IO)?;
                    ReadSrc::Layer(ExtentPiece {
                        key: key.clone(),
                        data_off,
                        ext_len,
                        crc,
                        skip,
                    })
                }
            };
            pieces.push((start - off, p.len, src));
        }
        Ok(pieces)
    }

    /// Copies resolved pieces into `buf` (zeroed where no piece lies), fetching layer bytes
    /// through the layer cache (checksums verified).
    async fn fill(&self, buf: &mut [u8], pieces: Resolved) -> FsResult<()> {
        for (at, plen, src) in pieces {
            let dst = buf
                .get_mut(at as usize..(at + plen) as usize)
                .ok_or(FsError::IO)?;
            dst.copy_from_slice(&self.piece(src, plen).await?);
        }
        Ok(())
    }

    /// Where the bytes of DuckDB's headers of `f` (its first `HEADERS_END` bytes, or fewer if it
    /// is shorter) come from, as they are in its map now; `mark_of` reads them.
    fn header_pieces(st: &State, f: &FileNode) -> FsResult<(usize, Resolved)> {
        let end = f.size.min(duckdb_file::HEADERS_END);
        Ok((end as usize, Self::pieces(st, f, 0, end)?))
    }

    /// The checkpoint mark of the resolved header pieces (None: not a DuckDB database file, or
    /// shorter than its headers).
    async fn mark_of(&self, len: usize, pieces: Resolved) -> FsResult<Option<HeaderMark>> {
        if (len as u64) < duckdb_file::HEADERS_END {
            return Ok(None);
        }
        let mut head = vec![0u8; len];
        self.fill(&mut head, pieces).await?;
        Ok(duckdb_file::header_mark(&head))
    }

    /// Notes the checkpoint mark of the durable bytes of file `f`. An encrypted database with no
    /// committed mark yet (just created, or not in the branch head) takes it as its baseline:
    /// its header bytes cannot say whether they are a creation or a checkpoint.
    fn set_durable_mark(f: &mut FileNode, mark: Option<HeaderMark>) {
        if f.committed_mark.is_none() {
            f.committed_mark = mark.clone().filter(|m| m.needs_baseline());
        }
        f.durable_mark = mark;
    }

    /// Reads the checkpoint state of every file as served at mount time, and the state of the
    /// branch head (`head`, when the mount resumes synced-but-uncommitted changes on top of it;
    /// None when it serves the head itself) as the last committed checkpoints.
    pub async fn load_checkpoint_state(&self, head: Option<&ReadView>) -> FsResult<()> {
        if !self.writable() {
            return Ok(());
        }
        let files: Vec<(u64, u64, String, usize, Resolved)> = {
            let st = self.lock();
            let mut v = Vec::new();
            for (name, ino) in &st.root {
                if let Some(Node::File(f)) = st.nodes.get(ino) {
                    let (len, pieces) = Self::header_pieces(&st, f)?;
                    v.push((*ino, f.file_id, name.clone(), len, pieces));
                }
            }
            v
        };
        for (ino, file_id, name, len, pieces) in files {
            let mark = self.mark_of(len, pieces).await?;
            // The head's checkpoint of this very file (not of a file since removed and created
            // again under its name).
            let committed = match head {
                None => mark.clone(),
                Some(view) => match view.file(&name) {
                    Some(fv) if fv.file_id == file_id && fv.size >= duckdb_file::HEADERS_END => {
                        let mut buf = vec![0u8; duckdb_file::HEADERS_END as usize];
                        view.read(fv, 0, &mut buf).await?;
                        duckdb_file::header_mark(&buf)
                    }
                    _ => None,
                },
            };
            if let Some(Node::File(f)) = self.lock().nodes.get_mut(&ino) {
                if committed.is_some() {
                    f.committed_mark = committed;
                }
                Self::set_durable_mark(f, mark);
            }
        }
        Ok(())
    }

    /// Writes `data` at `off`; returns the bytes written. Once the mount holds its dirty limit
    /// of unsynced bytes, waits (on this FUSE thread) until a flush has stored some.
    pub fn write(
        self: &Arc<Self>,
        ino: u64,
        fh: u64,
        off: u64,
        data: &[u8],
        append: bool,
    ) -> FsResult<u32> {
        self.check_writable()?;
        // (Copied before the state lock is taken: every other call waits on it.)
        let buf = Bytes::copy_from_slice(data);
        let mut st = self.lock();
        let before = {
            if let Some(Handle::Scratch(file)) = st.handles.get(&fh) {
                let file = file.clone();
                drop(st);
                return scratch::write(&file, off, data);
            }
            if st.dirty_bytes >= self.cfg.dirty_limit {
                self.stats.write_waits.fetch_add(1, Ordering::Relaxed);
                while st.dirty_bytes >= self.cfg.dirty_limit {
                    drop(st);
                    if self.is_fenced() {
                        return Err(FsError::IO);
                    }
                    // (Again) start a flush: the last one may have failed (store down).
                    self.start_flush();
                    st = self.lock();
                    st = self
                        .freed
                        .wait_timeout(st, Duration::from_secs(1))
                        .map(|(g, _)| g)
                        .unwrap_or_else(|p| p.into_inner().0);
                }
            }
            let Some(Node::File(f)) = st.nodes.get(&ino) else {
                return Err(FsError::NOENT);
            };
            let end = (off + data.len() as u64).min(f.size);
            if append || off >= end || data.len() < COMPARE_MIN {
                None
            } else {
                Self::pieces(&st, f, off, end)
                    .ok()
                    .map(|pieces| (f.changes, end - off, pieces))
            }
        };
        // Runs of `data` that differ from what they replace (all of it when that is not known),
        // found outside the lock; a write that replaces nothing to compare keeps the lock.
        let (mut st, changed) = match before {
            None => (st, None),
            Some((changes, len, pieces)) => {
                drop(st);
                let changed = self
                    .changed_runs(&data[..len as usize], pieces)
                    .map(|mut runs| {
                        // What lies past the old end is new in any case.
                        if (len as usize) < data.len() {
                            match runs.last_mut() {
                                Some(last) if last.1 == len as usize => last.1 = data.len(),
                                _ => runs.push((len as usize, data.len())),
                            }
                        }
                        (changes, runs)
                    });
                (self.lock(), changed)
            }
        };
        let flush = {
            st.write_seq += 1;
            let seq = st.write_seq;
            let Some(Node::File(f)) = st.nodes.get_mut(&ino) else {
                return Err(FsError::NOENT);
            };
            let off = if append { f.size } else { off };
            let whole = [(0, data.len())];
            let runs: &[(usize, usize)] = match &changed {
                // Nothing changed the contents since they were compared.
                Some((changes, runs)) if *changes == f.changes => runs,
                _ => &whole,
            };
            let mut added = 0;
            for &(a, b) in runs {
                let (at, len) = (off + a as u64, (b - a) as u64);
                let src = Source::Mem {
                    buf: buf.slice(a..b),
                    seq,
                };
                f.map.insert(at, len, src.clone());
                f.dirty.insert(at, len, src);
                added += len;
            }
            f.changes += 1;
            f.dirty_bytes += added;
            f.size = f.size.max(off + data.len() as u64);
            let now = SystemTime::now();
            f.mtime = now;
            f.ctime = now;
            st.dirty_bytes += added;
            self.stats
                .unchanged_bytes
                .fetch_add(data.len() as u64 - added, Ordering::Relaxed);
            st.dirty_bytes > FLUSH_THRESHOLD
        };
        drop(st);
        if flush {
            self.start_flush();
        }
        self.stats
            .written_bytes
            .fetch_add(data.len() as u64, Ordering::Relaxed);
        Ok(data.len() as u32)
    }

    /// The runs (start, end) of `new` that differ from the bytes `pieces` resolve to (what `new`
    /// overwrites), in units of [`COMPARE_UNIT`] bytes, runs closer than [`COMPARE_GAP`] joined;
    /// None when the old bytes cannot be had at once (they would be fetched from a remote store,
    /// or read from disk): the write is then taken whole.
    fn changed_runs(&self, new: &[u8], pieces: Resolved) -> Option<Vec<(usize, usize)>> {
        let mut differs = vec![false; new.len().div_ceil(COMPARE_UNIT)];
        let mut covered = 0;
        let compare = |at: usize, old: &[u8], differs: &mut Vec<bool>| {
            let new = &new[at..at + old.len()];
            // Units of the write that this piece overlaps.
            let mut u = at / COMPARE_UNIT;
            while u * COMPARE_UNIT < at + old.len() {
                let (s, e) = (
                    (u * COMPARE_UNIT).max(at),
                    ((u + 1) * COMPARE_UNIT).min(at + old.len()),
                );
                if new[s - at..e - at] != old[s - at..e - at] {
                    differs[u] = true;
                }
                u += 1;
            }
        };
        // What no piece covers (holes) reads as zeros.
        let zeros = |from: usize, to: usize, differs: &mut Vec<bool>| {
            for s in (from..to).step_by(ZEROS.len()) {
                compare(s, &ZEROS[..(s + ZEROS.len()).min(to) - s], differs);
            }
        };
        for (at, plen, src) in pieces {
            let (at, plen) = (at as usize, plen as usize);
            zeros(covered, at, &mut differs);
            let old = match src {
                ReadSrc::Mem(b) => b,
                ReadSrc::Layer(e) => {
                    let ext = self
                        .engine
                        .layers
                        .extent_now(&e.key, e.data_off, e.ext_len, e.crc)?;
                    e.cut(ext, plen)?
                }
            };
            compare(at, old.get(..plen)?, &mut differs);
            covered = at + plen;
        }
        zeros(covered, new.len(), &mut differs);
        let mut runs: Vec<(usize, usize)> = Vec::new();
        for (u, _) in differs.iter().enumerate().filter(|(_, d)| **d) {
            let (s, e) = (u * COMPARE_UNIT, ((u + 1) * COMPARE_UNIT).min(new.len()));
            match runs.last_mut() {
                Some(last) if s - last.1 < COMPARE_GAP => last.1 = e,
                _ => runs.push((s, e)),
            }
        }
        Some(runs)
    }

    /// Starts a background flush of every file's dirty data, unless one is running.
    fn start_flush(self: &Arc<Self>) {
        if self.flushing.swap(true, Ordering::SeqCst) {
            return;
        }
        let fs = self.clone();
        self.rt.spawn(async move {
            if let Err(e) = fs.sync_all().await {
                tracing::warn!(
                    "background flush failed (retried at the next sync or write): {}",
                    std::io::Error::from_raw_os_error(e.0)
                );
            }
            fs.flushing.store(false, Ordering::SeqCst);
        });
    }

    /// Changes the size of a file (truncate or extend).
    pub fn set_size(&self, ino: u64, size: u64) -> FsResult<()> {
        self.set_size_fh(ino, size, None)
    }

    /// Changes the size, through an open handle when there is one.
    pub fn set_size_fh(&self, ino: u64, size: u64, fh: Option<u64>) -> FsResult<()> {
        self.check_writable()?;
        let mut st = self.lock();
        if let Some(Handle::Scratch(file)) = fh.and_then(|h| st.handles.get(&h)) {
            return file.set_len(size).map_err(|e| FsError::from_io(&e));
        }
        let node = st.nodes.get_mut(&ino).ok_or(FsError::NOENT)?;
        let f = match node {
            Node::File(f) => f,
            Node::Scratch(rel) => {
                let path = self.cfg.scratch.join(&*rel);
                let file = std::fs::OpenOptions::new()
                    .write(true)
                    .open(path)
                    .map_err(|e| FsError::from_io(&e))?;
                return file.set_len(size).map_err(|e| FsError::from_io(&e));
            }
        };
        if size < f.size {
            f.changes += 1;
            f.map.truncate(size);
            f.dirty.truncate(size);
            f.truncate_to = Some(f.truncate_to.map_or(size, |t| t.min(size)));
            f.truncated_during_sync = Some(f.truncated_during_sync.map_or(size, |t| t.min(size)));
        }
        f.size = size;
        let now = SystemTime::now();
        f.mtime = now;
        f.ctime = now;
        Ok(())
    }

    /// setattr: size, mode and times.
    pub fn setattr(
        &self,
        ino: u64,
        fh: Option<u64>,
        size: Option<u64>,
        mode: Option<u32>,
        mtime: Option<SystemTime>,
    ) -> FsResult<Attr> {
        if let Some(s) = size {
            self.set_size_fh(ino, s, fh)?;
        }
        if mode.is_some() || mtime.is_some() {
            let mut st = self.lock();
            match st.nodes.get_mut(&ino) {
                Some(Node::File(f)) => {
                    if let Some(m) = mode {
                        f.perm = (m & 0o7777) as u16;
                    }
                    if let Some(t) = mtime {
                        f.mtime = t;
                    }
                    f.ctime = SystemTime::now();
                }
                Some(Node::Scratch(rel)) => {
                    if let Some(m) = mode {
                        use std::os::unix::fs::PermissionsExt;
                        let p = std::fs::Permissions::from_mode(m & 0o7777);
                        std::fs::set_permissions(self.cfg.scratch.join(&*rel), p)
                            .map_err(|e| FsError::from_io(&e))?;
                    }
                }
                None if ino == ROOT => {}
                None => return Err(FsError::NOENT),
            }
        }
        self.getattr_fh(ino, fh)
    }

    /// fallocate: mode 0 extends the size; KEEP_SIZE is a no-op; punching holes is refused.
    pub fn fallocate(&self, ino: u64, off: u64, len: u64, mode: i32) -> FsResult<()> {
        self.check_writable()?;
        if mode & !libc::FALLOC_FL_KEEP_SIZE != 0 {
            return Err(FsError::NOTSUP);
        }
        if mode & libc::FALLOC_FL_KEEP_SIZE != 0 {
            return Ok(());
        }
        let cur = self.getattr(ino)?.size;
        if off + len > cur {
            self.set_size(ino, off + len)?;
        }
        Ok(())
    }

    pub async fn unlink(&self, parent: u64, name: &str) -> FsResult<()> {
        self.unlink_acked(parent, name, |_| ()).await
    }

    /// [`unlink`](Self::unlink), telling `ack` the outcome as soon as the caller may go on,
    /// and returning it once the removal is registered.
    ///
    /// The removal of a DuckDB WAL (which completes a checkpoint) is acknowledged once the name
    /// is gone from the mount, before its registration and the checkpoint commit reach the
    /// catalog, as on a local disk an unlink is not durable before an fsync of its directory:
    /// the checkpoint costs one catalog round trip fewer, and DuckDB, finding a WAL of a
    /// completed checkpoint after a crash, skips it. The registration keeps its place in the
    /// registration order (taken before the acknowledgement), and a close (FUSE flush),
    /// [`fsyncdir`](Self::fsyncdir) and [`sync_all`](Self::sync_all) wait for it
    /// ([`settle_unlinks`](Self::settle_unlinks)). If it fails, the name stays removed in the
    /// mount: every registration carries the whole file table, so the next one registers it,
    /// and an fsync of the directory makes one.
    /// Any other removal is acknowledged once registered.
    pub async fn unlink_acked<A: FnOnce(FsResult<()>)>(
        &self,
        parent: u64,
        name: &str,
        ack: A,
    ) -> FsResult<()> {
        let wal = parent == ROOT && wal_database(name).is_some();
        let mut ack = Some(ack);
        let mut early = None;
        if wal {
            early = ack.take();
            self.unlinks_in_flight.fetch_add(1, Ordering::SeqCst);
        }
        let r = self.unlink_now(parent, name, &mut early).await;
        if wal {
            self.unlinks_in_flight.fetch_sub(1, Ordering::SeqCst);
        }
        match early.or(ack) {
            // Not acknowledged yet (not a WAL, or it failed before the name went).
            Some(ack) => ack(r),
            None => {
                if let Err(e) = r {
                    self.namespace_behind.store(true, Ordering::SeqCst);
                    tracing::warn!(
                        "the removal of {name} is not in the catalog yet (errno {}); the next registration carries it",
                        e.0
                    );
                }
            }
        }
        r
    }

    /// Whether a WAL removal was acknowledged and is not registered yet.
    pub fn unlinks_in_flight(&self) -> bool {
        self.unlinks_in_flight.load(Ordering::SeqCst) > 0
    }

    /// Waits until every WAL removal acknowledged so far is registered (or failed).
    pub async fn settle_unlinks(&self) {
        if let Some(session) = &self.cfg.session {
            if self.unlinks_in_flight() {
                drop(session.lock_registration().await);
            }
        }
    }

    /// The removal. `early`, when given, is told once the name is gone from the mount, and then
    /// nothing is undone if the registration fails; it is left in place if the removal fails
    /// before that.
    async fn unlink_now<A: FnOnce(FsResult<()>)>(
        &self,
        parent: u64,
        name: &str,
        early: &mut Option<A>,
    ) -> FsResult<()> {
        self.check_writable()?;
        let session = self.session()?.clone();
        let sync = session.lock_registration().await;
        let mut undo = NsUndo::default();
        let (checkpoint, changed) = {
            let mut st = self.lock();
            if parent != ROOT {
                let rel = Self::scratch_child(&st, parent, name)?;
                self.remember_removed(&mut st, &rel);
                std::fs::remove_file(self.scratch_path(&rel)).map_err(|e| FsError::from_io(&e))?;
                // The node stays: open handles keep working on the unlinked file.
                st.scratch_inos.remove(&rel);
                return Ok(());
            }
            let ino = *st.root.get(name).ok_or(FsError::NOENT)?;
            if matches!(st.nodes.get(&ino), Some(Node::Scratch(_))) {
                return Err(FsError::ISDIR);
            }
            undo.entry(&st, name);
            st.root.remove(name);
            // (A file created and never synced was not registered: nothing to register.)
            let changed = st.durable.remove(name).is_some();
            Self::drop_name(&mut st, ino, &mut undo);
            (wal_database(name).map(|db| (db, false)), changed)
        };
        if let Some(ack) = early.take() {
            ack(Ok(()));
            undo = NsUndo::default();
        }
        self.register_namespace(&sync, undo, checkpoint, changed)
            .await
    }

    /// The file at `ino` lost its name: forget it unless it is still open.
    fn drop_name(st: &mut State, ino: u64, undo: &mut NsUndo) {
        undo.name(st, ino);
        let remove = match st.nodes.get_mut(&ino) {
            Some(Node::File(f)) => {
                f.name = None;
                f.open == 0
            }
            _ => false,
        };
        if remove {
            if let Some(node) = st.nodes.remove(&ino) {
                if let Node::File(f) = &node {
                    st.dirty_bytes = st.dirty_bytes.saturating_sub(f.dirty_bytes);
                }
                undo.removed.push((ino, node));
            }
        }
    }

    pub async fn rename(
        &self,
        parent: u64,
        name: &str,
        newparent: u64,
        newname: &str,
        flags: u32,
    ) -> FsResult<()> {
        Self::check_name(newname)?;
        self.check_writable()?;
        if flags & libc::RENAME_EXCHANGE != 0 {
            return Err(FsError::INVAL);
        }
        let noreplace = flags & libc::RENAME_NOREPLACE != 0;
        let session = self.session()?.clone();
        let sync = session.lock_registration().await;
        let mut undo = NsUndo::default();
        let checkpoint = {
            let mut st = self.lock();
            if parent != ROOT || newparent != ROOT {
                // Scratch entries move within scratch only.
                let from = if parent == ROOT {
                    match st.root.get(name).and_then(|i| st.nodes.get(i)) {
                        Some(Node::Scratch(rel)) => rel.clone(),
                        Some(Node::File(_)) => return Err(FsError::XDEV),
                        None => return Err(FsError::NOENT),
                    }
                } else {
                    Self::scratch_child(&st, parent, name)?
                };
                let to = if newparent == ROOT {
                    // (A scratch entry named like a versioned file would look like one, and be
                    // lost at unmount: `mv` copies it instead.)
                    if !is_scratch_name(newname)
                        || st
                            .root
                            .get(newname)
                            .is_some_and(|i| matches!(st.nodes.get(i), Some(Node::File(_))))
                    {
                        return Err(FsError::XDEV);
                    }
                    PathBuf::from(newname)
                } else {
                    Self::scratch_child(&st, newparent, newname)?
                };
                if noreplace && self.scratch_path(&to).exists() {
                    return Err(FsError::EXIST);
                }
                // Root entries are versioned files or scratch directories: a scratch file cannot
                // become a root entry (it would look versioned and vanish at unmount).
                if newparent == ROOT && !self.scratch_path(&from).is_dir() {
                    return Err(FsError::XDEV);
                }
                std::fs::rename(self.scratch_path(&from), self.scratch_path(&to))
                    .map_err(|e| FsError::from_io(&e))?;
                Self::move_scratch(&mut st, &from, &to);
                if parent == ROOT {
                    st.root.remove(name);
                }
                if newparent == ROOT {
                    let ino = Self::scratch_ino(&mut st, to);
                    st.root.insert(newname.to_string(), ino);
                }
                return Ok(());
            }
            let ino = *st.root.get(name).ok_or(FsError::NOENT)?;
            if name == newname {
                return Ok(());
            }
            if let Some(&target) = st.root.get(newname) {
                if noreplace {
                    return Err(FsError::EXIST);
                }
                match (st.nodes.get(&ino), st.nodes.get(&target)) {
                    (Some(Node::File(_)), Some(Node::Scratch(_))) => return Err(FsError::ISDIR),
                    (Some(Node::Scratch(_)), Some(Node::File(_))) => return Err(FsError::NOTDIR),
                    _ => {}
                }
                if let Some(Node::File(_)) = st.nodes.get(&target) {
                    undo.entry(&st, newname);
                    st.durable.remove(newname);
                    Self::drop_name(&mut st, target, &mut undo);
                }
            }
            if let Some(Node::Scratch(rel)) = st.nodes.get(&ino) {
                if !is_scratch_name(newname) {
                    return Err(FsError::XDEV);
                }
                let rel = rel.clone();
                std::fs::rename(
                    self.scratch_path(&rel),
                    self.scratch_path(std::path::Path::new(newname)),
                )
                .map_err(|e| FsError::from_io(&e))?;
                Self::move_scratch(&mut st, &rel, std::path::Path::new(newname));
                st.root.remove(name);
                st.root.insert(newname.to_string(), ino);
                return Ok(());
            }
            undo.entry(&st, name);
            undo.entry(&st, newname);
            undo.name(&st, ino);
            st.root.remove(name);
            st.root.insert(newname.to_string(), ino);
            if let Some(Node::File(f)) = st.nodes.get_mut(&ino) {
                f.name = Some(newname.to_string());
                f.ctime = SystemTime::now();
            }
            // A file created and never synced is registered by its rename (empty, as it is
            // durable), so that the rename replaces the file it replaces in the durable state.
            let entry = match st.durable.remove(name) {
                Some(entry) => entry,
                None => match st.nodes.get(&ino) {
                    Some(Node::File(f)) => (f.file_id, 0),
                    _ => return Err(FsError::NOENT),
                },
            };
            st.durable.insert(newname.to_string(), entry);
            // Onto a main WAL (DuckDB 1.5 finishing a checkpoint), or a WAL moved away.
            match duckdb_file::database_of_wal(newname) {
                Some(db) if duckdb_file::wal_of(db) == newname => Some((db.to_string(), true)),
                _ => wal_database(name).map(|db| (db, false)),
            }
        };
        self.register_namespace(&sync, undo, checkpoint, true).await
    }

    /// Registers the durable file table after a namespace change (rename, unlink, fsyncdir).
    /// `checkpoint`: the database file whose checkpoint the change may have completed, and
    /// whether the change renamed a file onto its main WAL. Called holding the registration
    /// order (taken before the change was made, so no sync registers a half-made change); if
    /// registering fails, `undo` puts the change back. `changed`: whether the durable file table
    /// changed (else only a checkpoint commit may be due).
    async fn register_namespace(
        &self,
        order: &tokio::sync::MutexGuard<'_, ()>,
        undo: NsUndo,
        checkpoint: Option<(String, bool)>,
        changed: bool,
    ) -> FsResult<()> {
        let session = self.session()?;
        if !changed {
            if let Some((db, renamed_onto_wal)) = checkpoint {
                self.maybe_checkpoint_commit(order, &db, renamed_onto_wal)
                    .await;
            }
            return Ok(());
        }
        let files = self.durable_rows(&self.lock().durable);
        // A change that completes a checkpoint (DuckDB removing the WAL) is registered with its
        // checkpoint commit in one catalog transaction.
        let due = checkpoint
            .as_ref()
            .and_then(|(db, renamed)| Some((db, self.checkpoint_due(db, *renamed)?)));
        if let Some((db, (ino, mark))) = due {
            let message = format!("checkpoint of {db}");
            match session
                .register_and_commit(order, Vec::new(), files.clone(), message)
                .await
            {
                Ok(_) => {
                    self.checkpoint_sealed(ino, mark, true);
                    return Ok(());
                }
                Err(e) if session.is_fenced() => {
                    undo.undo(&mut self.lock());
                    return Err(e.into());
                }
                // Register the change alone; its commit is tried after it, as after a sync.
                Err(e) => tracing::warn!(
                    "registering a change with the checkpoint commit of {db} failed, registering it alone: {e}"
                ),
            }
        }
        if let Err(e) = session.register(order, Vec::new(), files).await {
            undo.undo(&mut self.lock());
            return Err(e.into());
        }
        if let Some((db, renamed_onto_wal)) = checkpoint {
            self.maybe_checkpoint_commit(order, &db, renamed_onto_wal)
                .await;
        }
        Ok(())
    }

    fn durable_rows(&self, durable: &BTreeMap<String, (u64, u64)>) -> Vec<FileRow> {
        durable
            .iter()
            .map(|(p, (id, size))| FileRow {
                path: p.clone(),
                file_id: *id as i64,
                size: *size as i64,
            })
            .collect()
    }

    /// The inode and durable header mark of database file `db` if the state registered (or
    /// about to be registered, with the change just made) completes a checkpoint that is not in
    /// a commit yet, with `--autocommit checkpoint`: the rule of [`maybe_checkpoint_commit`]
    /// (Self::maybe_checkpoint_commit).
    fn checkpoint_due(&self, db: &str, renamed_onto_wal: bool) -> Option<(u64, HeaderMark)> {
        self.cfg.session.as_ref().filter(|_| self.cfg.autocommit)?;
        let st = self.lock();
        let ino = *st.root.get(db)?;
        let Some(Node::File(f)) = st.nodes.get(&ino) else {
            return None;
        };
        let mark = f.durable_mark.as_ref()?;
        let wal_clear = renamed_onto_wal
            || st
                .durable
                .get(&duckdb_file::wal_of(db))
                .is_none_or(|&(_, size)| size == 0);
        (wal_clear && mark.after(f.committed_mark.as_ref())).then(|| (ino, mark.clone()))
    }

    /// Seals a `checkpoint` commit if DuckDB has completed a checkpoint of database file `db`
    /// (docs/semantics.md, "Checkpoint commits"): its durable active header has a higher
    /// iteration than the last committed checkpoint of the file (an encrypted database: other
    /// header bytes), and its WAL holds nothing from before that
    /// checkpoint: the WAL is absent or empty, or was just replaced by a rename (DuckDB 1.5
    /// moves `.wal.checkpoint`, written during the checkpoint, over the WAL). Called holding the
    /// registration order, right after the change that may complete it was registered.
    async fn maybe_checkpoint_commit(
        &self,
        order: &tokio::sync::MutexGuard<'_, ()>,
        db: &str,
        renamed_onto_wal: bool,
    ) {
        let Some(session) = self.cfg.session.as_ref() else {
            return;
        };
        let Some((ino, mark)) = self.checkpoint_due(db, renamed_onto_wal) else {
            return;
        };
        match session
            .checkpoint_commit(order, format!("checkpoint of {db}"))
            .await
        {
            // Made, or someone sealed it already (`quackfs commit` from another process).
            Ok(made) => self.checkpoint_sealed(ino, mark, made.is_some()),
            Err(e) => {
                tracing::warn!("checkpoint commit of {db} failed, retried at its next change: {e}")
            }
        }
    }

    /// The checkpoint of file `ino` with header mark `mark` is in a commit (`made`: this mount
    /// made it).
    fn checkpoint_sealed(&self, ino: u64, mark: HeaderMark, made: bool) {
        if made {
            self.stats.commits.fetch_add(1, Ordering::Relaxed);
        }
        if let Some(Node::File(f)) = self.lock().nodes.get_mut(&ino) {
            f.committed_mark = Some(mark);
        }
    }

    /// fsync of a directory: makes the names of the root's files durable. A file created and
    /// never synced is registered (empty, as it is durable); every other namespace change is
    /// registered already. Scratch directories: nothing to do.
    pub async fn fsyncdir(&self, ino: u64) -> FsResult<()> {
        if ino != ROOT || !self.writable() {
            return Ok(());
        }
        let Some(session) = self.cfg.session.clone() else {
            return Ok(());
        };
        let order = session.lock_registration().await;
        let mut undo = NsUndo::default();
        let changed = {
            let mut st = self.lock();
            let new: Vec<(String, u64)> = st
                .root
                .iter()
                .filter(|(name, _)| !st.durable.contains_key(*name))
                .filter_map(|(name, i)| match st.nodes.get(i) {
                    Some(Node::File(f)) => Some((name.clone(), f.file_id)),
                    _ => None,
                })
                .collect();
            for (name, file_id) in &new {
                undo.entry(&st, name);
                st.durable.insert(name.clone(), (*file_id, 0));
            }
            !new.is_empty() || self.namespace_behind.load(Ordering::SeqCst)
        };
        self.register_namespace(&order, undo, None, changed).await?;
        self.namespace_behind.store(false, Ordering::SeqCst);
        Ok(())
    }

    /// Makes everything written to `ino` durable: stored in a layer and registered. Syncs of
    /// one file run in order; syncs of different files upload side by side and register in the
    /// order they finish.
    pub async fn fsync(&self, ino: u64) -> FsResult<()> {
        let Some(session) = self.cfg.session.clone() else {
            return Ok(());
        };
        if session.is_fenced() {
            return Err(FsError::IO);
        }
        let started = Instant::now();
        let file_lock = match self.lock().nodes.get(&ino) {
            Some(Node::File(f)) => f.sync.clone(),
            Some(Node::Scratch(_)) => return Ok(()),
            None => return Err(FsError::NOENT),
        };
        let _file = file_lock.lock().await;
        // Snapshot the file's dirty state.
        let snapshot = {
            let mut st = self.lock();
            let seq = st.write_seq;
            let Some(Node::File(f)) = st.nodes.get(&ino) else {
                return Err(FsError::NOENT);
            };
            let Some(name) = f.name.clone() else {
                // Unlinked: nothing of it is versioned any more.
                return Ok(());
            };
            let durable = st.durable.get(&name).copied();
            let Some(Node::File(f)) = st.nodes.get_mut(&ino) else {
                return Err(FsError::NOENT);
            };
            if f.dirty.is_empty() && f.truncate_to.is_none() && durable == Some((f.file_id, f.size))
            {
                return Ok(());
            }
            f.truncated_during_sync = None;
            let snap = (f.file_id, name, f.size, f.dirty.clone(), f.truncate_to, seq);
            // A sync that rewrites DuckDB's headers may complete a checkpoint: note what the
            // first bytes will be once it is durable (the map holds exactly that right now).
            let touches_headers = !snap.3.range(0, duckdb_file::HEADERS_END).is_empty()
                || snap.4.is_some_and(|t| t < duckdb_file::HEADERS_END);
            let headers = match st.nodes.get(&ino) {
                Some(Node::File(f)) if touches_headers => Some(Self::header_pieces(&st, f)?),
                _ => None,
            };
            let (file_id, name, size, dirty, truncate_to, seq) = snap;
            (file_id, name, size, dirty, truncate_to, seq, headers)
        };
        let (file_id, name, size, dirty, truncate_to, seq, headers) = snapshot;
        // Write the layer (and store it, unless it is small enough for the catalog), holding
        // no lock but this file's.
        let segment = if dirty.is_empty() && truncate_to.is_none() {
            None
        } else {
            let seg = session
                .store_segment(file_id, size, &dirty, truncate_to)
                .await?;
            self.stats
                .stored_bytes
                .fetch_add(seg.layer.row.size_bytes as u64, Ordering::Relaxed);
            if seg.layer.inline.is_none() {
                self.stats.layers_uploaded.fetch_add(1, Ordering::Relaxed);
                self.stats
                    .bytes_uploaded
                    .fetch_add(seg.layer.row.size_bytes as u64, Ordering::Relaxed);
            } else {
                self.stats.layers_inline.fetch_add(1, Ordering::Relaxed);
            }
            Some(seg)
        };
        // Register, in order: whoever holds the registration order registers every sync queued
        // by then in one catalog transaction (group commit).
        let (done, mut result) = tokio::sync::oneshot::channel();
        self.lock().reg_queue.push(QueuedSync {
            ino,
            file_id,
            size,
            seq,
            segment,
            dirty,
            done,
        });
        let order = session.lock_registration().await;
        let outcome = match result.try_recv() {
            // A sync ahead of this one registered it with its own.
            Ok(outcome) => outcome,
            Err(_) => {
                self.register_queued(&session, &order).await;
                result.try_recv().unwrap_or(Err(FsError::IO))
            }
        };
        outcome?;
        self.stats.record_sync(started.elapsed());
        // Did this sync complete a checkpoint? Either it made a new database header durable, or
        // it emptied a WAL.
        let completes = if let Some((len, pieces)) = headers {
            match self.mark_of(len, pieces).await {
                Ok(mark) => {
                    let db = mark.as_ref().map(|_| name.clone());
                    if let Some(Node::File(f)) = self.lock().nodes.get_mut(&ino) {
                        if truncate_to.is_some_and(|t| t < duckdb_file::HEADERS_END) {
                            // Cut below its headers: whatever database it holds next is new.
                            f.committed_mark = None;
                        }
                        Self::set_durable_mark(f, mark);
                    }
                    db
                }
                Err(e) => {
                    tracing::warn!("reading the DuckDB headers of {name} failed (errno {}); no checkpoint commit", e.0);
                    None
                }
            }
        } else if size == 0 {
            wal_database(&name)
        } else {
            None
        };
        if let Some(db) = completes {
            self.maybe_checkpoint_commit(&order, &db, false).await;
        }
        Ok(())
    }

    /// Registers every queued sync in one catalog transaction (called holding the registration
    /// order), settles their memory pieces onto their layers and tells each one the outcome.
    async fn register_queued(
        &self,
        session: &BranchSession,
        order: &tokio::sync::MutexGuard<'_, ()>,
    ) {
        let mut batch = std::mem::take(&mut self.lock().reg_queue);
        if batch.is_empty() {
            return;
        }
        let files = {
            let st = self.lock();
            let mut durable = st.durable.clone();
            for q in &batch {
                Self::set_durable(&st.nodes, &mut durable, q);
            }
            self.durable_rows(&durable)
        };
        let mut indexes = Vec::new();
        let mut layers = Vec::new();
        // Stored (not inline) segments, whose bytes go into the extent cache once registered:
        // DuckDB reads back what it wrote, and that must not cost a store round trip.
        let mut written: Vec<(String, Arc<crate::layer::LayerIndex>, u64, ExtentMap)> = Vec::new();
        for q in &mut batch {
            if let Some(seg) = q.segment.take() {
                let index = Arc::new(seg.index);
                if seg.layer.inline.is_none() {
                    written.push((
                        seg.layer.row.object_key.clone(),
                        index.clone(),
                        q.file_id,
                        std::mem::take(&mut q.dirty),
                    ));
                }
                layers.push(seg.layer);
                indexes.push(Some(index));
            } else {
                indexes.push(None);
            }
        }
        let indexes_len = layers.len();
        let registered = session.register(order, layers, files).await;
        let mut rows = match registered {
            Ok(rows) => rows.into_iter(),
            Err(e) => {
                let e = FsError::from(e);
                for q in batch {
                    let _ = q.done.send(Err(e));
                }
                return;
            }
        };
        {
            let mut st = self.lock();
            for (q, index) in batch.iter().zip(indexes) {
                let index = index.as_deref();
                // Registered: the memory pieces the layer covers now read from it.
                if let Some(index) = index {
                    let Some(row) = rows.next() else { break };
                    let layer_no = st.next_layer;
                    st.next_layer += 1;
                    st.layers
                        .insert(layer_no, Arc::from(row.object_key.as_str()));
                    if let (Some(Node::File(f)), Some(entry)) =
                        (st.nodes.get_mut(&q.ino), index.file(q.file_id))
                    {
                        for e in &entry.extents {
                            let src = Source::Layer {
                                layer: layer_no,
                                data_off: e.data_off,
                                ext_len: e.len,
                                crc: e.crc,
                                skip: 0,
                            };
                            f.map.settle(e.offset, e.len as u64, q.seq, &src);
                        }
                    }
                }
                let State { nodes, durable, .. } = &mut *st;
                Self::set_durable(nodes, durable, q);
                let mut freed = 0;
                if let Some(Node::File(f)) = st.nodes.get_mut(&q.ino) {
                    f.dirty.drop_settled(q.seq);
                    let left = f.dirty.covered_bytes();
                    freed = f.dirty_bytes.saturating_sub(left);
                    f.dirty_bytes = left;
                    f.truncate_to = f.truncated_during_sync.take();
                }
                st.dirty_bytes = st.dirty_bytes.saturating_sub(freed);
            }
            Self::collect_layers(&mut st);
        }
        self.stats.registrations.fetch_add(1, Ordering::Relaxed);
        // (It carried the whole file table.)
        self.namespace_behind.store(false, Ordering::SeqCst);
        let new_layers = indexes_len;
        for q in batch {
            let _ = q.done.send(Ok(()));
        }
        self.freed.notify_all();
        if new_layers > 0 {
            if let Some(s) = &self.cfg.session {
                s.registered_layers(new_layers);
            }
        }
        // (A local store reads them back from the page cache: no need.)
        let bytes: u64 = written.iter().map(|w| w.3.covered_bytes()).sum();
        if bytes > 0 && self.engine.store.as_local().is_none() {
            if self.priming.fetch_add(bytes, Ordering::SeqCst) + bytes <= PRIME_MAX {
                let cache = self.engine.layers.clone();
                let priming = self.priming.clone();
                self.rt.spawn_blocking(move || {
                    prime_written(&cache, written);
                    priming.fetch_sub(bytes, Ordering::SeqCst);
                });
            } else {
                self.priming.fetch_sub(bytes, Ordering::SeqCst);
            }
        }
    }

    /// The durable row of a synced file: found by identity (it may have been renamed since the
    /// sync began), or, on the file's first sync, added under its name (unless it is unlinked).
    fn set_durable(
        nodes: &HashMap<u64, Node>,
        durable: &mut BTreeMap<String, (u64, u64)>,
        q: &QueuedSync,
    ) {
        if let Some(entry) = durable.values_mut().find(|(id, _)| *id == q.file_id) {
            entry.1 = q.size;
        } else if let Some(Node::File(f)) = nodes.get(&q.ino) {
            if let Some(name) = f.name.as_ref().filter(|_| f.file_id == q.file_id) {
                durable.insert(name.clone(), (q.file_id, q.size));
            }
        }
    }

    /// Drops layers no piece refers to from the layer table, once it has doubled since the last
    /// time (amortised: the table stays proportional to the layers the maps use).
    fn collect_layers(st: &mut State) {
        if st.layers.len() <= 2 * st.layers_live + 64 {
            return;
        }
        let mut used = std::collections::HashSet::new();
        for node in st.nodes.values() {
            if let Node::File(f) = node {
                for (_, p) in f.map.iter() {
                    if let Source::Layer { layer, .. } = p.src {
                        used.insert(layer);
                    }
                }
            }
        }
        st.layers.retain(|no, _| used.contains(no));
        st.layers_live = st.layers.len();
    }

    /// Syncs every file with unsynced changes (unmount, background flush).
    pub async fn sync_all(&self) -> FsResult<()> {
        if !self.writable() {
            return Ok(());
        }
        self.settle_unlinks().await;
        let inos: Vec<u64> = {
            let st = self.lock();
            st.nodes
                .iter()
                .filter_map(|(&ino, n)| match n {
                    Node::File(f) if f.name.is_some() => {
                        let durable = st
                            .durable
                            .get(f.name.as_deref().unwrap_or_default())
                            .copied();
                        let changed = !f.dirty.is_empty()
                            || f.truncate_to.is_some()
                            || durable != Some((f.file_id, f.size));
                        changed.then_some(ino)
                    }
                    _ => None,
                })
                .collect()
        };
        for ino in inos {
            self.fsync(ino).await?;
        }
        Ok(())
    }

    /// Unsynced bytes held in memory.
    pub fn dirty_bytes(&self) -> u64 {
        self.lock().dirty_bytes
    }

    /// Removes the scratch directory (at unmount).
    pub fn remove_scratch(&self) {
        let _ = std::fs::remove_dir_all(&self.cfg.scratch);
    }

    /// Capacity numbers for statfs: (total blocks, free blocks, files) with 4 KiB blocks.
    pub fn statfs(&self) -> (u64, u64, u64) {
        let st = self.lock();
        let used: u64 = st
            .nodes
            .values()
            .map(|n| match n {
                Node::File(f) => f.size.div_ceil(4096),
                Node::Scratch(_) => 0,
            })
            .sum();
        let free = scratch::free_blocks(&self.cfg.scratch).unwrap_or(1 << 30);
        (used + free, free, st.nodes.len() as u64)
    }
}

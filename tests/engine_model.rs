//! Reference-model test of the code a mount runs: random sequences of creates, writes,
//! truncates, unlinks, renames, reads, fsyncs (some while the object store refuses uploads),
//! groups of them running concurrently, and commits, driven on the filesystem type itself
//! (`QuackFs` with a real `BranchSession`, the same objects a FUSE mount serves; FUSE only
//! translates) and on a plain in-memory model that knows, per file, what a read shows and what is
//! durable. Reads are compared as they happen; after a simulated crash (the session let go
//! without a final sync) a fresh mount shows exactly the durable model; every commit is re-read
//! through a fresh engine (cold caches), byte for byte, sizes included, through the read, bulk
//! and export paths.

use indicatif::ProgressBar;
use proptest::prelude::*;
use quackfs::catalog::{self, CommitKind, NewCommit};
use quackfs::engine::session::BranchSession;
use quackfs::engine::{new_id, now_millis, Engine};
use quackfs::fs::{MountConfig, QuackFs, DEFAULT_DIRTY_LIMIT, ROOT};
use quackfs::store::faulty::FaultyStore;
use quackfs::store::memory::MemoryStore;
use quackfs::store::DynStore;
use quackfs::store::LocalStore;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

const NAMES: [&str; 3] = ["db.duckdb", "db.duckdb.wal", "other.bin"];

/// An operation on one file (by name index), or a commit.
#[derive(Debug, Clone)]
enum Op {
    Write {
        file: usize,
        off: u64,
        len: usize,
        seed: u8,
    },
    Truncate {
        file: usize,
        size: u64,
    },
    /// A write of what the file holds there already with a few bytes changed (or none: seed
    /// a multiple of 4), as DuckDB rewrites a block or a header.
    Rewrite {
        file: usize,
        off: u64,
        len: usize,
        seed: u8,
    },
    Read {
        file: usize,
        off: u64,
        len: u32,
    },
    Fsync {
        file: usize,
    },
    /// An fsync while the store refuses every upload: it fails, and loses nothing.
    FailedFsync {
        file: usize,
    },
    Unlink {
        file: usize,
    },
    Rename {
        from: usize,
        to: usize,
    },
    /// Writes, fsyncs and reads running at the same time.
    Concurrent(Vec<Op>),
    Commit,
}

fn file_op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (0..3usize, 0..700_000u64, 1..300_000usize, any::<u8>()).prop_map(|(file, off, len, seed)| Op::Write { file, off, len, seed }),
        // DuckDB-like writes: 4 KiB headers at 0/4096/8192, 256 KiB blocks after 12288.
        3 => (0..3usize, 0..3u64, any::<u8>()).prop_map(|(file, i, seed)| Op::Write { file, off: 12288 + i * 262_144, len: 262_144, seed }),
        2 => (0..3usize, 0..3u64, any::<u8>()).prop_map(|(file, i, seed)| Op::Write { file, off: i * 4096, len: 4096, seed }),
        2 => (0..3usize, 0..800_000u64).prop_map(|(file, size)| Op::Truncate { file, size }),
        3 => (0..3usize, 0..800_000u64, 1..200_000u32).prop_map(|(file, off, len)| Op::Read { file, off, len }),
        4 => (0..3usize).prop_map(|file| Op::Fsync { file }),
        1 => (0..3usize).prop_map(|file| Op::FailedFsync { file }),
    ]
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        18 => file_op(),
        1 => (0..3usize).prop_map(|file| Op::Unlink { file }),
        1 => (0..3usize, 0..3usize).prop_map(|(from, to)| Op::Rename { from, to }),
        3 => (0..3usize, 0..700_000u64, 1..300_000usize, any::<u8>()).prop_map(|(file, off, len, seed)| Op::Rewrite { file, off, len, seed }),
        3 => (0..3usize, 0..3u64, any::<u8>()).prop_map(|(file, i, seed)| Op::Rewrite { file, off: 12288 + i * 262_144, len: 262_144, seed }),
        2 => proptest::collection::vec(file_op(), 2..6).prop_map(Op::Concurrent),
        3 => Just(Op::Commit),
    ]
}

fn pattern(seed: u8, off: u64, len: usize) -> Vec<u8> {
    (0..len as u64)
        .map(|i| ((off + i) as u8).wrapping_mul(31).wrapping_add(seed))
        .collect()
}

/// One file of the model: what reads show, and what a crash would leave.
#[derive(Debug, Clone, Default)]
struct ModelFile {
    live: Vec<u8>,
    durable: Vec<u8>,
    /// Whether its name is durable: a created file's name is registered with its first sync or
    /// its rename (a crash before either leaves no file).
    named: bool,
}

impl ModelFile {
    /// A sync succeeded: what reads show is durable, and so is the name.
    fn synced(&mut self) {
        self.durable = self.live.clone();
        self.named = true;
    }
}

/// A file as the test holds it open on the filesystem.
struct Open {
    ino: u64,
    fh: u64,
    key: usize,
}

struct Case {
    fs: Arc<QuackFs>,
    faulty: Arc<FaultyStore>,
    /// Name -> the open file.
    open: BTreeMap<String, Open>,
    /// File identity -> contents.
    files: HashMap<usize, ModelFile>,
    next_key: usize,
}

fn io(e: quackfs::fs::FsError) -> TestCaseError {
    TestCaseError::fail(format!("errno {}", e.0))
}

impl Case {
    /// Creates `name` if it does not exist; returns its open file.
    async fn ensure(&mut self, name: &str) -> Result<(u64, u64), TestCaseError> {
        if let Some(o) = self.open.get(name) {
            return Ok((o.ino, o.fh));
        }
        let (attr, fh) = self
            .fs
            .create(
                ROOT,
                name,
                0o644,
                libc::O_RDWR | libc::O_CREAT | libc::O_EXCL,
            )
            .await
            .map_err(io)?;
        let key = self.next_key;
        self.next_key += 1;
        self.files.insert(key, ModelFile::default());
        self.open.insert(
            name.to_string(),
            Open {
                ino: attr.ino,
                fh,
                key,
            },
        );
        Ok((attr.ino, fh))
    }

    fn model(&mut self, name: &str) -> &mut ModelFile {
        let key = self.open[name].key;
        self.files.get_mut(&key).unwrap()
    }

    async fn write(
        &mut self,
        file: usize,
        off: u64,
        len: usize,
        seed: u8,
    ) -> Result<(), TestCaseError> {
        self.write_bytes(file, off, pattern(seed, off, len)).await
    }

    /// Writes what the file holds at `[off, off + len)` (zeros past its end) back, with the
    /// bytes at every `(seed * 37 + 1)`-th position flipped unless `seed` is a multiple of 4.
    async fn rewrite(
        &mut self,
        file: usize,
        off: u64,
        len: usize,
        seed: u8,
    ) -> Result<(), TestCaseError> {
        let name = NAMES[file];
        self.ensure(name).await?;
        let live = &self.model(name).live;
        let mut data: Vec<u8> = (off as usize..off as usize + len)
            .map(|i| live.get(i).copied().unwrap_or(0))
            .collect();
        if !seed.is_multiple_of(4) {
            let step = seed as usize * 37 + 1;
            for (i, b) in data.iter_mut().enumerate() {
                if (i + seed as usize).is_multiple_of(step) {
                    *b ^= 0x5a;
                }
            }
        }
        self.write_bytes(file, off, data).await
    }

    async fn write_bytes(
        &mut self,
        file: usize,
        off: u64,
        data: Vec<u8>,
    ) -> Result<(), TestCaseError> {
        let name = NAMES[file];
        let (ino, fh) = self.ensure(name).await?;
        let len = data.len();
        let fs = self.fs.clone();
        let d = data.clone();
        // FUSE calls write on its own threads.
        let n = tokio::task::spawn_blocking(move || fs.write(ino, fh, off, &d, false))
            .await
            .unwrap()
            .map_err(io)?;
        prop_assert_eq!(n as usize, len);
        let m = self.model(name);
        let end = off as usize + len;
        if m.live.len() < end {
            m.live.resize(end, 0);
        }
        m.live[off as usize..end].copy_from_slice(&data);
        Ok(())
    }

    async fn read_check(&mut self, file: usize, off: u64, len: u32) -> Result<(), TestCaseError> {
        let name = NAMES[file];
        let Some(o) = self.open.get(name) else {
            return Ok(());
        };
        let got = self.fs.read(o.ino, o.fh, off, len).await.map_err(io)?;
        let live = &self.files[&o.key].live;
        let from = (off as usize).min(live.len());
        let to = (off as usize + len as usize).min(live.len());
        prop_assert!(
            got[..] == live[from..to],
            "read of {} at {} (+{})",
            name,
            off,
            len
        );
        Ok(())
    }

    async fn fsync(&mut self, file: usize) -> Result<(), TestCaseError> {
        let name = NAMES[file];
        let Some(o) = self.open.get(name) else {
            return Ok(());
        };
        self.fs.fsync(o.ino).await.map_err(io)?;
        let m = self.model(name);
        m.synced();
        Ok(())
    }

    async fn apply(&mut self, op: &Op) -> Result<(), TestCaseError> {
        match op {
            Op::Write {
                file,
                off,
                len,
                seed,
            } => self.write(*file, *off, *len, *seed).await?,
            Op::Rewrite {
                file,
                off,
                len,
                seed,
            } => self.rewrite(*file, *off, *len, *seed).await?,
            Op::Truncate { file, size } => {
                let name = NAMES[*file];
                if let Some(o) = self.open.get(name) {
                    self.fs.set_size(o.ino, *size).map_err(io)?;
                    self.model(name).live.resize(*size as usize, 0);
                }
            }
            Op::Read { file, off, len } => self.read_check(*file, *off, *len).await?,
            Op::Fsync { file } => self.fsync(*file).await?,
            Op::FailedFsync { file } => {
                let name = NAMES[*file];
                if let Some(o) = self.open.get(name) {
                    self.faulty.fail_puts_after(0);
                    let r = self.fs.fsync(o.ino).await;
                    self.faulty.clear_faults();
                    let m = self.model(name);
                    match r {
                        // Nothing needed uploading (the size alone, or nothing changed).
                        Ok(()) => m.synced(),
                        Err(e) => prop_assert_eq!(e.0, libc::EIO),
                    }
                }
            }
            Op::Unlink { file } => {
                let name = NAMES[*file];
                if let Some(o) = self.open.remove(name) {
                    self.fs.unlink(ROOT, name).await.map_err(io)?;
                    self.fs.release(o.fh).map_err(io)?;
                    self.files.remove(&o.key);
                }
            }
            Op::Rename { from, to } => {
                let (from, to) = (NAMES[*from], NAMES[*to]);
                if from != to && self.open.contains_key(from) {
                    self.fs.rename(ROOT, from, ROOT, to, 0).await.map_err(io)?;
                    let o = self.open.remove(from).unwrap();
                    // The rename registers the name, also of a file never synced (empty).
                    self.files.get_mut(&o.key).unwrap().named = true;
                    if let Some(old) = self.open.insert(to.to_string(), o) {
                        self.fs.release(old.fh).map_err(io)?;
                        self.files.remove(&old.key);
                    }
                }
            }
            Op::Concurrent(ops) => self.concurrent(ops).await?,
            Op::Commit => {}
        }
        Ok(())
    }

    /// Runs `ops` at the same time. Reads check files nothing in the group writes; a file both
    /// written and synced in the group is synced once more afterwards, so what is durable is
    /// known again.
    async fn concurrent(&mut self, ops: &[Op]) -> Result<(), TestCaseError> {
        let written: BTreeSet<usize> = ops
            .iter()
            .filter_map(|o| match o {
                Op::Write { file, .. } | Op::Truncate { file, .. } => Some(*file),
                _ => None,
            })
            .collect();
        let synced: BTreeSet<usize> = ops
            .iter()
            .filter_map(|o| match o {
                Op::Fsync { file } | Op::FailedFsync { file } => Some(*file),
                _ => None,
            })
            .collect();
        for &f in &written {
            self.ensure(NAMES[f]).await?;
        }
        let mut tasks = Vec::new();
        for o in ops {
            let fs = self.fs.clone();
            match o.clone() {
                Op::Write {
                    file,
                    off,
                    len,
                    seed,
                } => {
                    let o = &self.open[NAMES[file]];
                    let (ino, fh) = (o.ino, o.fh);
                    let data = pattern(seed, off, len);
                    tasks.push(tokio::task::spawn_blocking(move || {
                        fs.write(ino, fh, off, &data, false).map(|_| ())
                    }));
                }
                Op::Truncate { file, size } => {
                    let ino = self.open[NAMES[file]].ino;
                    tasks.push(tokio::task::spawn_blocking(move || {
                        fs.set_size(ino, size).map(|_| ())
                    }));
                }
                Op::Fsync { file } | Op::FailedFsync { file } => {
                    if let Some(o) = self.open.get(NAMES[file]) {
                        let ino = o.ino;
                        let rt = tokio::runtime::Handle::current();
                        tasks.push(tokio::task::spawn_blocking(move || {
                            rt.block_on(fs.fsync(ino)).map(|_| ())
                        }));
                    }
                }
                Op::Read { file, off, len } if !written.contains(&file) => {
                    if let Some(o) = self.open.get(NAMES[file]) {
                        let (ino, fh) = (o.ino, o.fh);
                        let rt = tokio::runtime::Handle::current();
                        tasks.push(tokio::task::spawn_blocking(move || {
                            rt.block_on(fs.read(ino, fh, off, len)).map(|_| ())
                        }));
                    }
                }
                _ => {}
            }
        }
        for t in tasks {
            t.await.unwrap().map_err(io)?;
        }
        // The model, in list order (the caller only runs groups whose ops of one file do not
        // overlap, so the order they ran in does not matter).
        for o in ops {
            match o {
                Op::Write {
                    file,
                    off,
                    len,
                    seed,
                } => {
                    let data = pattern(*seed, *off, *len);
                    let m = self.model(NAMES[*file]);
                    let end = *off as usize + *len;
                    if m.live.len() < end {
                        m.live.resize(end, 0);
                    }
                    m.live[*off as usize..end].copy_from_slice(&data);
                }
                Op::Truncate { file, size } => {
                    self.model(NAMES[*file]).live.resize(*size as usize, 0);
                }
                _ => {}
            }
        }
        // Synced files that were not written in the group are durable as they are.
        for f in synced.difference(&written) {
            let name = NAMES[*f];
            if self.open.contains_key(name) {
                let m = self.model(name);
                m.synced();
            }
        }
        for f in written.intersection(&synced) {
            self.fsync(*f).await?;
        }
        Ok(())
    }

    /// The durable state: name -> bytes.
    fn durable(&self) -> BTreeMap<String, Vec<u8>> {
        self.open
            .iter()
            .filter(|(_, o)| self.files[&o.key].named)
            .map(|(n, o)| (n.clone(), self.files[&o.key].durable.clone()))
            .collect()
    }

    fn live(&self) -> BTreeMap<String, Vec<u8>> {
        self.open
            .iter()
            .map(|(n, o)| (n.clone(), self.files[&o.key].live.clone()))
            .collect()
    }
}

/// Each group's writes of one file must not depend on their order: drop groups where two ops
/// of one file overlap (a write and a truncate, or two overlapping writes).
fn order_free(ops: &[Op]) -> bool {
    let mut by_file: HashMap<usize, Vec<(u64, u64, bool)>> = HashMap::new();
    for o in ops {
        match o {
            Op::Write { file, off, len, .. } => {
                by_file
                    .entry(*file)
                    .or_default()
                    .push((*off, off + *len as u64, false))
            }
            Op::Truncate { file, .. } => {
                by_file.entry(*file).or_default().push((0, u64::MAX, true))
            }
            _ => {}
        }
    }
    by_file.values().all(|v| {
        v.iter()
            .enumerate()
            .all(|(i, a)| v.iter().skip(i + 1).all(|b| a.1 <= b.0 || b.1 <= a.0))
    })
}

/// A multi-threaded runtime with `workers` worker threads, as a mount runs.
fn runtime(workers: usize) -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(workers)
        .enable_all()
        .build()
        .unwrap()
}

async fn open_fs(engine: Arc<Engine>, repo: &catalog::Repo, dir: &std::path::Path) -> Arc<QuackFs> {
    let o = BranchSession::open(
        engine.clone(),
        repo.clone(),
        "main",
        format!("test pid={} host=model-test", std::process::id()),
    )
    .await
    .unwrap();
    let cfg = MountConfig {
        session: Some(o.session),
        autocommit: false,
        scratch: dir.join(format!("scratch-{}", new_id())),
        dirty_limit: DEFAULT_DIRTY_LIMIT,
        follow: false,
    };
    Arc::new(QuackFs::new(engine, o.view, cfg).unwrap())
}

/// An engine on a SQLite catalog in `dir` and an in-memory store; with the catalog URL, the
/// scratch directory and the store, to open the same state again (after a crash).
async fn memory_engine(
    dir: &std::path::Path,
) -> (Arc<Engine>, String, std::path::PathBuf, DynStore) {
    let url = format!("sqlite://{}", dir.join("catalog.sqlite").display());
    let tmp = dir.join("tmp");
    std::fs::create_dir_all(&tmp).unwrap();
    let store: DynStore = Arc::new(MemoryStore::new());
    let engine = Arc::new(Engine::new(
        catalog::open(&url).await.unwrap(),
        store.clone(),
        tmp.clone(),
        "t".into(),
    ));
    (engine, url, tmp, store)
}

/// Ends `fs`'s writer session and opens the branch again in a fresh engine over the same catalog
/// and store, as a new mount process would.
async fn remount(
    fs: Arc<QuackFs>,
    url: &str,
    store: DynStore,
    tmp: std::path::PathBuf,
    repo: &catalog::Repo,
    dir: &std::path::Path,
) -> Arc<QuackFs> {
    fs.branch_session().unwrap().release().await;
    drop(fs);
    let engine = Arc::new(Engine::new(
        catalog::open(url).await.unwrap(),
        store,
        tmp,
        "t".into(),
    ));
    open_fs(engine, repo, dir).await
}

/// Compares a file listing of the filesystem with `want`, reading every file whole.
async fn assert_fs_holds(
    fs: &QuackFs,
    want: &BTreeMap<String, Vec<u8>>,
    what: &str,
) -> Result<(), TestCaseError> {
    let names: Vec<String> = fs
        .readdir(ROOT)
        .map_err(io)?
        .into_iter()
        .map(|e| e.name)
        .filter(|n| n != "." && n != "..")
        .collect();
    let expect: Vec<String> = want.keys().cloned().collect();
    prop_assert_eq!(&names, &expect, "{} file list", what);
    for (name, data) in want {
        let a = fs.lookup(ROOT, name).map_err(io)?;
        prop_assert_eq!(a.size, data.len() as u64, "{} size of {}", what, name);
        let fh = fs.open(a.ino, libc::O_RDONLY).await.map_err(io)?;
        let got = fs
            .read(a.ino, fh, 0, data.len() as u32 + 100)
            .await
            .map_err(io)?;
        fs.release(fh).map_err(io)?;
        prop_assert!(got == *data, "{} bytes of {}", what, name);
    }
    Ok(())
}

/// Runs `ops`, then checks a remount after a crash and every commit. `local`: the
/// local-directory store (whose export maps objects) instead of the in-memory one.
async fn run_case(ops: Vec<Op>, local: bool) -> Result<(), TestCaseError> {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("catalog.sqlite").display());
    let inner: DynStore = if local {
        Arc::new(LocalStore::open(dir.path().join("objects")).unwrap())
    } else {
        Arc::new(MemoryStore::new())
    };
    let faulty = Arc::new(FaultyStore::new(inner.clone()));
    let tmp = dir.path().join("tmp");
    std::fs::create_dir_all(&tmp).unwrap();
    let engine = Arc::new(Engine::new(
        catalog::open(&url).await.unwrap(),
        faulty.clone(),
        tmp.clone(),
        "t".into(),
    ));
    let (repo, _) = engine.init("model").await.unwrap();
    let mut case = Case {
        fs: open_fs(engine.clone(), &repo, dir.path()).await,
        faulty,
        open: BTreeMap::new(),
        files: HashMap::new(),
        next_key: 0,
    };
    let mut snapshots = Vec::new();
    let mut ops = ops;
    ops.push(Op::Commit);
    for op in &ops {
        if let Op::Concurrent(group) = op {
            if !order_free(group) {
                continue;
            }
        }
        case.apply(op).await?;
        if let Op::Commit = op {
            let c = engine
                .catalog
                .commit_pending(
                    repo.id,
                    "main",
                    NewCommit {
                        id: new_id(),
                        kind: CommitKind::Manual,
                        message: "step".into(),
                        author: "t".into(),
                        time: now_millis(),
                        merge_parent: None,
                    },
                    true,
                )
                .await
                .unwrap();
            snapshots.push((c, case.durable()));
        }
    }
    assert_fs_holds(&case.fs, &case.live(), "the live mount").await?;
    // A crash: the writer goes away without its final sync.
    let durable = case.durable();
    let session = case.fs.branch_session().unwrap();
    session.release().await;
    drop(case);
    let engine2 = Arc::new(Engine::new(
        catalog::open(&url).await.unwrap(),
        inner.clone(),
        tmp.clone(),
        "t".into(),
    ));
    let fs2 = open_fs(engine2, &repo, dir.path()).await;
    assert_fs_holds(&fs2, &durable, "the mount after a crash").await?;

    // Re-read every commit through a fresh engine (cold caches); and as a follower sees them,
    // each view built on the chain of the one before.
    let reader = Engine::new(catalog::open(&url).await.unwrap(), inner, tmp, "t".into());
    let mut chain: Option<quackfs::engine::view::ViewChain> = None;
    for (commit, model) in &snapshots {
        let view = reader.view(commit).await.unwrap();
        view_holds(&view, model, "the view").await?;
        let (followed, next) = match &chain {
            Some(c) => {
                let built = reader.advance_view(c, commit).await.unwrap();
                prop_assert!(
                    built.is_some(),
                    "a follower builds commit {} on the one before",
                    commit.depth
                );
                built.unwrap()
            }
            None => reader.view_chain(commit).await.unwrap(),
        };
        view_holds(&followed, model, "the follower's view").await?;
        chain = Some(next);
        for (name, data) in model {
            let f = view.file(name).unwrap();
            if data.len() > 10 {
                let (a, b) = (data.len() / 3, data.len() / 3 + data.len() / 2);
                let mut part = vec![0xAAu8; b - a + 7];
                let mut scratch = Vec::new();
                let n = view
                    .read_bulk(f, a as u64, &mut part, &mut scratch)
                    .await
                    .unwrap();
                prop_assert_eq!(n, (b - a + 7).min(data.len() - a));
                prop_assert!(part[..b - a] == data[a..b], "bulk read of {}", name);
            }
        }
        let out = tempfile::tempdir().unwrap();
        quackfs::engine::export::export(&view, out.path(), false, &ProgressBar::hidden())
            .await
            .unwrap();
        for (name, data) in model {
            let got = std::fs::read(out.path().join(name)).unwrap();
            prop_assert!(
                got == *data,
                "export of {} at commit {}",
                name,
                commit.depth
            );
        }
    }
    Ok(())
}

/// `view` shows exactly `model` (file names, sizes, bytes, zeros past the end).
async fn view_holds(
    view: &quackfs::engine::view::ReadView,
    model: &BTreeMap<String, Vec<u8>>,
    what: &str,
) -> Result<(), TestCaseError> {
    let depth = view.commit.depth;
    let names: Vec<&String> = view.files.keys().collect();
    let want: Vec<&String> = model.keys().collect();
    prop_assert_eq!(names, want, "{}: file list of commit {}", what, depth);
    for (name, data) in model {
        let f = view.file(name).unwrap();
        prop_assert_eq!(
            f.size,
            data.len() as u64,
            "{}: size of {} at commit {}",
            what,
            name,
            depth
        );
        let mut buf = vec![0xAAu8; data.len() + 100];
        let n = view.read(f, 0, &mut buf).await.unwrap();
        prop_assert_eq!(n, data.len());
        prop_assert!(
            buf[..n] == data[..],
            "{}: bytes of {} at commit {}",
            what,
            name,
            depth
        );
        prop_assert!(
            buf[n..].iter().all(|&b| b == 0),
            "{}: reads past the end are zeros",
            what
        );
    }
    Ok(())
}

/// Layers up to 16 KiB are kept in the catalog in these tests (the default is larger than most
/// of their syncs), so both kinds of layer, and failed uploads, are exercised.
fn small_inline_limit() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    // Set before any sync of this test process reads it.
    ONCE.call_once(|| std::env::set_var("QUACKFS_INLINE_MAX", "16KiB"));
}

fn run(ops: Vec<Op>, local: bool) -> Result<(), TestCaseError> {
    small_inline_limit();
    let _ = tracing_subscriber::fmt().with_test_writer().try_init();
    let rt = runtime(4);
    rt.block_on(run_case(ops, local))
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 32, ..ProptestConfig::default() })]
    #[test]
    fn the_mount_matches_the_model(
        ops in proptest::collection::vec(op(), 1..30),
        local in any::<bool>(),
    ) {
        run(ops, local)?;
    }
}

#[test]
fn regression_truncate_then_extend_reads_zeros() {
    let ops = vec![
        Op::Write {
            file: 0,
            off: 0,
            len: 5000,
            seed: 1,
        },
        Op::Fsync { file: 0 },
        Op::Commit,
        Op::Truncate { file: 0, size: 100 },
        Op::Truncate {
            file: 0,
            size: 9000,
        },
        Op::Fsync { file: 0 },
        Op::Commit,
        Op::Write {
            file: 0,
            off: 8000,
            len: 10,
            seed: 2,
        },
        Op::Truncate {
            file: 0,
            size: 8005,
        },
        Op::Fsync { file: 0 },
    ];
    run(ops.clone(), false).unwrap();
    run(ops, true).unwrap();
}

#[test]
fn regression_a_failed_fsync_loses_nothing() {
    let ops = vec![
        Op::Write {
            file: 1,
            off: 0,
            len: 70_000,
            seed: 3,
        },
        Op::FailedFsync { file: 1 },
        Op::Commit,
        Op::Write {
            file: 1,
            off: 100,
            len: 10,
            seed: 4,
        },
        Op::Fsync { file: 1 },
        Op::Commit,
    ];
    run(ops.clone(), false).unwrap();
    run(ops, true).unwrap();
}

#[test]
fn regression_concurrent_syncs_after_a_failed_one() {
    let ops = vec![
        Op::Write {
            file: 2,
            off: 12288,
            len: 262_144,
            seed: 212,
        },
        Op::Write {
            file: 1,
            off: 140_048,
            len: 147_623,
            seed: 120,
        },
        Op::FailedFsync { file: 1 },
        Op::Concurrent(vec![
            Op::FailedFsync { file: 2 },
            Op::Write {
                file: 0,
                off: 0,
                len: 4096,
                seed: 33,
            },
            Op::Fsync { file: 1 },
            Op::FailedFsync { file: 0 },
        ]),
        Op::Read {
            file: 2,
            off: 421_311,
            len: 42_369,
        },
    ];
    for _ in 0..5 {
        run(ops.clone(), false).unwrap();
    }
}

/// Group commit: syncs of different files at the same time share catalog transactions.
#[test]
fn concurrent_fsyncs_share_registrations() {
    small_inline_limit();
    let rt = runtime(4);
    rt.block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let (engine, ..) = memory_engine(dir.path()).await;
        let (repo, _) = engine.init("group").await.unwrap();
        let fs = open_fs(engine, &repo, dir.path()).await;
        let mut inos = Vec::new();
        for i in 0..16 {
            let (a, fh) = fs
                .create(ROOT, &format!("f{i}"), 0o644, libc::O_RDWR | libc::O_CREAT)
                .await
                .unwrap();
            fs.write(a.ino, fh, 0, &pattern(i as u8, 0, 3000), false)
                .unwrap();
            inos.push(a.ino);
        }
        let before = fs
            .stats
            .registrations
            .load(std::sync::atomic::Ordering::Relaxed);
        let tasks: Vec<_> = inos
            .iter()
            .map(|&ino| {
                let fs = fs.clone();
                tokio::spawn(async move { fs.fsync(ino).await })
            })
            .collect();
        for t in tasks {
            t.await.unwrap().unwrap();
        }
        let regs = fs
            .stats
            .registrations
            .load(std::sync::atomic::Ordering::Relaxed)
            - before;
        assert!(
            regs < 16,
            "16 concurrent fsyncs took {regs} catalog transactions"
        );
        for (i, &ino) in inos.iter().enumerate() {
            let fh = fs.open(ino, libc::O_RDONLY).await.unwrap();
            assert_eq!(
                fs.read(ino, fh, 0, 4000).await.unwrap(),
                pattern(i as u8, 0, 3000)
            );
        }
    });
}

/// Waits up to a minute for background compaction to leave `main` of `repo` at most `most`
/// pending layers; fails with their sizes if it does not.
async fn settle_pending(engine: &Engine, repo: &catalog::Repo, most: usize) {
    let sizes = || async {
        engine
            .catalog
            .pending(repo.id, "main")
            .await
            .unwrap()
            .map(|p| p.layers.iter().map(|l| l.size_bytes).collect::<Vec<_>>())
            .unwrap_or_default()
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        let now = sizes().await;
        if now.len() <= most {
            return;
        }
        if std::time::Instant::now() >= deadline {
            panic!(
                "{} pending layers after a minute (at most {most} expected), of sizes {now:?}",
                now.len()
            );
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

/// Checks that file `name` (inode `ino`, open as `fh` on `fs`) reads exactly `model` on the live
/// mount, then on a fresh mount of the same catalog and store.
async fn reads_back(
    fs: Arc<QuackFs>,
    ino: u64,
    fh: u64,
    name: &str,
    model: &[u8],
    (url, store, tmp, repo, dir): (
        &str,
        DynStore,
        std::path::PathBuf,
        &catalog::Repo,
        &std::path::Path,
    ),
) {
    let got = fs.read(ino, fh, 0, model.len() as u32 + 10).await.unwrap();
    assert!(got == model, "the live mount reads other bytes");
    let fs2 = remount(fs, url, store, tmp, repo, dir).await;
    let a2 = fs2.lookup(ROOT, name).unwrap();
    let fh2 = fs2.open(a2.ino, libc::O_RDONLY).await.unwrap();
    let got = fs2
        .read(a2.ino, fh2, 0, model.len() as u32 + 10)
        .await
        .unwrap();
    assert!(
        got == model,
        "a fresh mount reads other bytes after compaction"
    );
}

/// Many small syncs of one file are compacted into few pending layers in the background; the
/// live mount and a fresh one read the same bytes, and a commit of the compacted state too.
#[test]
fn pending_layers_are_compacted() {
    small_inline_limit();
    let rt = runtime(4);
    rt.block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let (engine, url, tmp, store) = memory_engine(dir.path()).await;
        let (repo, _) = engine.init("compact").await.unwrap();
        let fs = open_fs(engine.clone(), &repo, dir.path()).await;
        let (a, fh) = fs
            .create(ROOT, "f", 0o644, libc::O_RDWR | libc::O_CREAT)
            .await
            .unwrap();
        let mut model = vec![0u8; 0];
        for i in 0..40u64 {
            // 64 random 4 KiB pages per sync, as fio's random writes with fsync every 64.
            for j in 0..64u64 {
                let off = ((i * 64 + j) * 2_654_435_761 % 512) * 4096;
                let data = pattern((i * 64 + j) as u8, off, 4096);
                fs.write(a.ino, fh, off, &data, false).unwrap();
                let end = off as usize + 4096;
                if model.len() < end {
                    model.resize(end, 0);
                }
                model[off as usize..end].copy_from_slice(&data);
            }
            fs.fsync(a.ino).await.unwrap();
        }
        settle_pending(&engine, &repo, 40 - 15).await;
        reads_back(
            fs,
            a.ino,
            fh,
            "f",
            &model,
            (&url, store, tmp, &repo, dir.path()),
        )
        .await;
    });
}

/// A burst of tiny syncs, as DuckDB's single-row commits append to its WAL, comes faster than
/// compactions: the runs they leave are all merged in the end, none is stranded below a bigger
/// layer, and the file reads back exactly, live and on a fresh mount.
#[test]
fn a_burst_of_tiny_syncs_leaves_few_pending_layers() {
    small_inline_limit();
    let rt = runtime(4);
    rt.block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let (engine, url, tmp, store) = memory_engine(dir.path()).await;
        let (repo, _) = engine.init("burst").await.unwrap();
        let fs = open_fs(engine.clone(), &repo, dir.path()).await;
        let (a, fh) = fs
            .create(ROOT, "db.duckdb.wal", 0o644, libc::O_RDWR | libc::O_CREAT)
            .await
            .unwrap();
        let mut model = Vec::new();
        for i in 0..3000u64 {
            let data = pattern(i as u8, model.len() as u64, 125);
            fs.write(a.ino, fh, model.len() as u64, &data, false)
                .unwrap();
            model.extend_from_slice(&data);
            fs.fsync(a.ino).await.unwrap();
        }
        // 3000 x 125 bytes: some 6-10 layers of 64 KiB, and fewer than 64 small ones above them (a
        // compaction starts once 32 layers were registered since the last one started, so the
        // newest run may hold up to twice that until the next sync). Stranded runs were 950.
        settle_pending(&engine, &repo, 80).await;
        let name = "db.duckdb.wal";
        reads_back(
            fs,
            a.ino,
            fh,
            name,
            &model,
            (&url, store, tmp, &repo, dir.path()),
        )
        .await;
    });
}

/// DuckDB rewrites whole blocks of which a few bytes changed: only the changed stretches are
/// stored (the rest reads from the layers that hold it already), and the file reads exactly, live
/// and after a remount. (Writes shorter than 64 KiB, such as a header, are stored whole.)
#[test]
fn rewritten_blocks_store_only_what_changed() {
    let rt = runtime(4);
    rt.block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let (engine, url, tmp, store) = memory_engine(dir.path()).await;
        let (repo, _) = engine.init("rewrite").await.unwrap();
        let fs = open_fs(engine.clone(), &repo, dir.path()).await;
        let (a, fh) = fs
            .create(ROOT, "db.duckdb", 0o644, libc::O_RDWR | libc::O_CREAT)
            .await
            .unwrap();
        let mut model = pattern(1, 0, 12288 + 3 * 262_144);
        fs.write(a.ino, fh, 0, &model, false).unwrap();
        fs.fsync(a.ino).await.unwrap();
        let newest = || async {
            let p = engine
                .catalog
                .pending(repo.id, "main")
                .await
                .unwrap()
                .unwrap();
            p.layers.last().unwrap().size_bytes
        };
        assert!(newest().await > 3 * 262_144);
        // The second block again with 10 bytes changed, a header with 1, the first block as it was.
        let block = 12288 + 262_144;
        let mut data = model[block..block + 262_144].to_vec();
        for i in 0..10 {
            data[i * 26_000 + 7] ^= 0xff;
        }
        fs.write(a.ino, fh, block as u64, &data, false).unwrap();
        model[block..block + 262_144].copy_from_slice(&data);
        let mut header = model[4096..8192].to_vec();
        header[100] ^= 1;
        fs.write(a.ino, fh, 4096, &header, false).unwrap();
        model[4096..8192].copy_from_slice(&header);
        let same = model[12288..12288 + 262_144].to_vec();
        fs.write(a.ino, fh, 12288, &same, false).unwrap();
        fs.fsync(a.ino).await.unwrap();
        let stored = newest().await;
        assert!(
            stored < 16_384,
            "{stored} bytes stored for 11 changed bytes"
        );
        let unchanged = fs.metrics(0, 0).unchanged_bytes;
        assert!(
            unchanged >= 2 * 262_144 - 10 * 512,
            "{unchanged} bytes found unchanged"
        );
        let got = fs
            .read(a.ino, fh, 0, model.len() as u32 + 10)
            .await
            .unwrap();
        assert!(got == model, "the live mount reads other bytes");
        let fs2 = remount(fs, &url, store, tmp, &repo, dir.path()).await;
        let a2 = fs2.lookup(ROOT, "db.duckdb").unwrap();
        let fh2 = fs2.open(a2.ino, libc::O_RDONLY).await.unwrap();
        let got = fs2
            .read(a2.ino, fh2, 0, model.len() as u32 + 10)
            .await
            .unwrap();
        assert!(got == model, "a fresh mount reads other bytes");
    });
}

/// A created file's name is durable once the file is synced or the directory is: a crash before
/// either leaves no file; `fsyncdir` registers the new names (empty, as their bytes are durable)
/// and nothing else, and with nothing new it changes nothing.
#[test]
fn new_names_are_durable_after_fsync_or_fsyncdir() {
    let rt = runtime(2);
    rt.block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let (engine, url, tmp, store) = memory_engine(dir.path()).await;
        let (repo, _) = engine.init("names").await.unwrap();
        let fs = open_fs(engine, &repo, dir.path()).await;
        let create = |name: &'static str| {
            let fs = fs.clone();
            async move {
                fs.create(
                    ROOT,
                    name,
                    0o644,
                    libc::O_RDWR | libc::O_CREAT | libc::O_EXCL,
                )
                .await
                .unwrap()
                .0
                .ino
            }
        };
        let synced = create("synced").await;
        let fh = fs.open(synced, libc::O_RDWR).await.unwrap();
        fs.write(synced, fh, 0, b"kept", false).unwrap();
        fs.fsync(synced).await.unwrap();
        let by_dir = create("by-dir").await;
        let fh = fs.open(by_dir, libc::O_RDWR).await.unwrap();
        fs.write(by_dir, fh, 0, b"not synced", false).unwrap();
        let cat = catalog::open(&url).await.unwrap();
        let pending = || async { cat.pending(repo.id, "main").await.unwrap().unwrap().files };
        fs.fsyncdir(ROOT).await.unwrap();
        let files = pending().await;
        let names: Vec<(&str, i64)> = files.iter().map(|f| (f.path.as_str(), f.size)).collect();
        assert_eq!(names, [("by-dir", 0), ("synced", 4)]);
        fs.fsyncdir(ROOT).await.unwrap();
        assert_eq!(pending().await, files);
        create("lost").await;

        // A crash: the writer goes away without its final sync.
        let fs2 = remount(fs, &url, store, tmp, &repo, dir.path()).await;
        let mut want = BTreeMap::new();
        want.insert("by-dir".to_string(), Vec::new());
        want.insert("synced".to_string(), b"kept".to_vec());
        assert_fs_holds(&fs2, &want, "the mount after a crash")
            .await
            .unwrap();
    });
}

/// A follower replaces a changed file's inode when its branch moves; the old inode stays
/// answerable for a grace period, so that a `stat` whose lookup came just before the switch can
/// still get its attributes. Also when a reader held the old inode open and closes it meanwhile:
/// closing the last handle does not remove it early.
#[test]
fn a_followers_replaced_inode_outlives_its_last_handle_for_the_grace() {
    let rt = runtime(2);
    rt.block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let (engine, _, _, _) = memory_engine(dir.path()).await;
        let (repo, _) = engine.init("f").await.unwrap();
        let src = dir.path().join("src");
        std::fs::create_dir_all(&src).unwrap();
        let file = src.join("a");
        let commit = |data: &'static [u8]| {
            let (engine, repo, file) = (engine.clone(), repo.clone(), file.clone());
            async move {
                std::fs::write(&file, data).unwrap();
                engine
                    .import(&repo, "main", &[file], None, &ProgressBar::hidden())
                    .await
                    .unwrap();
                engine
                    .view(&engine.branch_head(&repo, "main").await.unwrap())
                    .await
                    .unwrap()
            }
        };
        let v1 = commit(b"one").await;
        let cfg = MountConfig {
            session: None,
            autocommit: false,
            scratch: dir.path().join("scratch"),
            dirty_limit: DEFAULT_DIRTY_LIMIT,
            follow: true,
        };
        let fs = Arc::new(QuackFs::new(engine.clone(), v1, cfg).unwrap());
        let old = fs.lookup(ROOT, "a").unwrap().ino;
        let fh = fs.open(old, libc::O_RDONLY).await.unwrap();
        let v2 = commit(b"two!").await;
        assert_eq!(fs.follow(&v2, 1), ["a"]);
        let new = fs.lookup(ROOT, "a").unwrap().ino;
        assert_ne!(new, old);
        fs.release(fh).unwrap();
        assert_eq!(
            fs.getattr(old).map(|a| a.size),
            Ok(3),
            "the old inode after its close"
        );
        assert_eq!(fs.getattr(new).map(|a| a.size), Ok(4));
    });
}

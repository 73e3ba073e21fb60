//! Property test of the storage engine against a plain in-memory model: random writes,
//! overwrites, truncates, creates, deletes, renames and commits over several files; then every
//! commit is re-read through a fresh engine and compared byte for byte, sizes included.

use indicatif::ProgressBar;
use proptest::prelude::*;
use quackfs::catalog::{self, CommitKind, FileRow};
use quackfs::engine::write_buffer::WriteBuffer;
use quackfs::engine::{new_file_id, Engine};
use quackfs::store::memory::MemoryStore;
use quackfs::store::DynStore;
use quackfs::store::LocalStore;
use std::collections::BTreeMap;
use std::sync::Arc;

const NAMES: [&str; 3] = ["db.duckdb", "db.duckdb.wal", "other.bin"];

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
    Delete {
        file: usize,
    },
    Rename {
        from: usize,
        to: usize,
    },
    Commit,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (0..3usize, 0..700_000u64, 1..300_000usize, any::<u8>()).prop_map(|(file, off, len, seed)| Op::Write { file, off, len, seed }),
        // Small writes at DuckDB-like offsets (4 KiB headers, 256 KiB blocks after 12288).
        3 => (0..3usize, 0..3u64, any::<u8>()).prop_map(|(file, i, seed)| Op::Write { file, off: 12288 + i * 262_144, len: 262_144, seed }),
        2 => (0..3usize, 0..800_000u64).prop_map(|(file, size)| Op::Truncate { file, size }),
        1 => (0..3usize).prop_map(|file| Op::Delete { file }),
        1 => (0..3usize, 0..3usize).prop_map(|(from, to)| Op::Rename { from, to }),
        3 => Just(Op::Commit),
    ]
}

fn pattern(seed: u8, off: u64, len: usize) -> Vec<u8> {
    (0..len as u64)
        .map(|i| ((off + i) as u8).wrapping_mul(31).wrapping_add(seed))
        .collect()
}

struct Work {
    files: BTreeMap<String, (u64, u64)>,
    buf: WriteBuffer,
    model: BTreeMap<String, Vec<u8>>,
}

impl Work {
    fn file_rows(&self) -> Vec<FileRow> {
        self.files
            .iter()
            .map(|(p, (id, size))| FileRow {
                path: p.clone(),
                file_id: *id as i64,
                size: *size as i64,
            })
            .collect()
    }

    fn apply(&mut self, op: &Op) {
        match *op {
            Op::Write {
                file,
                off,
                len,
                seed,
            } => {
                let name = NAMES[file].to_string();
                let (id, size) = *self.files.entry(name.clone()).or_insert((new_file_id(), 0));
                let data = pattern(seed, off, len);
                self.buf.write(id, size, off, &data);
                let new_size = size.max(off + len as u64);
                self.files.insert(name.clone(), (id, new_size));
                let m = self.model.entry(name).or_default();
                if m.len() < new_size as usize {
                    m.resize(new_size as usize, 0);
                }
                m[off as usize..off as usize + len].copy_from_slice(&data);
            }
            Op::Truncate {
                file,
                size: new_size,
            } => {
                let name = NAMES[file];
                if let Some((id, size)) = self.files.get(name).copied() {
                    self.buf.set_size(id, size, new_size);
                    self.files.insert(name.to_string(), (id, new_size));
                    if let Some(m) = self.model.get_mut(name) {
                        m.resize(new_size as usize, 0);
                    }
                }
            }
            Op::Delete { file } => {
                if let Some((id, _)) = self.files.remove(NAMES[file]) {
                    self.buf.forget(id);
                    self.model.remove(NAMES[file]);
                }
            }
            Op::Rename { from, to } => {
                if from != to {
                    if let Some(entry) = self.files.remove(NAMES[from]) {
                        if let Some((old, _)) = self.files.insert(NAMES[to].to_string(), entry) {
                            self.buf.forget(old);
                        }
                        let data = self.model.remove(NAMES[from]).unwrap_or_default();
                        self.model.insert(NAMES[to].to_string(), data);
                    }
                }
            }
            Op::Commit => {}
        }
    }
}

/// Runs `ops`, then re-reads every commit. `local`: the local-directory store (whose export maps
/// objects) instead of the in-memory one.
async fn run_case(ops: Vec<Op>, local: bool) -> Result<(), TestCaseError> {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("catalog.sqlite").display());
    let store: DynStore = if local {
        Arc::new(LocalStore::open(dir.path().join("objects")).unwrap())
    } else {
        Arc::new(MemoryStore::new())
    };
    let tmp = dir.path().join("tmp");
    std::fs::create_dir_all(&tmp).unwrap();
    let engine = Engine::new(
        catalog::open(&url).await.unwrap(),
        store.clone(),
        tmp.clone(),
        "t".into(),
    );
    let (repo, root) = engine.init("model").await.unwrap();
    let mut head = root.id;
    let mut work = Work {
        files: BTreeMap::new(),
        buf: WriteBuffer::new(),
        model: BTreeMap::new(),
    };
    let mut snapshots = Vec::new();
    let mut ops = ops;
    ops.push(Op::Commit);
    for op in &ops {
        work.apply(op);
        if let Op::Commit = op {
            let c = engine
                .commit_buffer(
                    &repo,
                    "main",
                    &head,
                    work.file_rows(),
                    &work.buf,
                    CommitKind::Manual,
                    "step",
                )
                .await
                .unwrap();
            head = c.id.clone();
            work.buf = WriteBuffer::new();
            snapshots.push((c, work.model.clone()));
        }
    }
    // Re-read every commit through a fresh engine (cold caches).
    let reader = Engine::new(catalog::open(&url).await.unwrap(), store, tmp, "t".into());
    for (commit, model) in &snapshots {
        let view = reader.view(commit).await.unwrap();
        let names: Vec<&String> = view.files.keys().collect();
        let want: Vec<&String> = model.keys().collect();
        prop_assert_eq!(names, want, "file list of commit {}", commit.depth);
        for (name, data) in model {
            let f = view.file(name).unwrap();
            prop_assert_eq!(
                f.size,
                data.len() as u64,
                "size of {} at commit {}",
                name,
                commit.depth
            );
            let mut buf = vec![0xAAu8; data.len() + 100];
            let n = view.read(f, 0, &mut buf).await.unwrap();
            prop_assert_eq!(n, data.len());
            prop_assert!(
                buf[..n] == data[..],
                "bytes of {} at commit {}",
                name,
                commit.depth
            );
            prop_assert!(
                buf[n..].iter().all(|&b| b == 0),
                "reads past the end are zeros"
            );
            // An unaligned read in the middle, through the cache and through the bulk path.
            if data.len() > 10 {
                let (a, b) = (data.len() / 3, data.len() / 3 + data.len() / 2);
                let mut part = vec![0u8; b - a];
                view.read(f, a as u64, &mut part).await.unwrap();
                prop_assert!(part[..] == data[a..b]);
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
        // Export writes exactly the model's files.
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

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]
    #[test]
    fn every_commit_reads_back_exactly(
        ops in proptest::collection::vec(op(), 1..25),
        local in any::<bool>(),
    ) {
        let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
        rt.block_on(run_case(ops, local))?;
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
        Op::Commit,
        Op::Truncate { file: 0, size: 100 },
        Op::Truncate {
            file: 0,
            size: 9000,
        },
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
    ];
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(run_case(ops.clone(), false)).unwrap();
    rt.block_on(run_case(ops, true)).unwrap();
}

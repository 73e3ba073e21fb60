//! merge and gc: random histories (branches, tags, clones, resets, deletes) with merge and gc at
//! random points; afterwards every readable commit reads byte-identical to before, nothing live
//! was deleted and every dead layer's object is gone. Plus the DuckDB, pin and orphan scenarios.

mod common;
use common::{duckdb, duckdb_raw, Env};
use proptest::prelude::*;
use quackfs::catalog::{self, CommitKind, RefKind};
use quackfs::engine::session::BranchSession;
use quackfs::engine::{new_id, now_millis, Engine};
use quackfs::fs::{MountConfig, QuackFs, DEFAULT_DIRTY_LIMIT, ROOT};
use quackfs::store::{DynStore, MemoryStore};
use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;

#[derive(Debug, Clone)]
enum Op {
    /// Write into the file of `branch` (0..3 of the current database) and commit.
    Commit {
        branch: usize,
        off: u64,
        len: usize,
        seed: u8,
        shrink: bool,
    },
    Branch {
        from: usize,
        to: usize,
    },
    Tag {
        from: usize,
    },
    Reset {
        branch: usize,
        to: usize,
    },
    DeleteBranch {
        branch: usize,
    },
    Clone {
        from: usize,
    },
    DropClone,
    Merge,
    Gc,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        8 => (0..3usize, 0..200_000u64, 1..80_000usize, any::<u8>(), prop::bool::weighted(0.15))
            .prop_map(|(branch, off, len, seed, shrink)| Op::Commit { branch, off, len, seed, shrink }),
        2 => (0..3usize, 0..3usize).prop_map(|(from, to)| Op::Branch { from, to }),
        1 => (0..64usize).prop_map(|from| Op::Tag { from }),
        1 => (0..3usize, 0..64usize).prop_map(|(branch, to)| Op::Reset { branch, to }),
        1 => (0..3usize).prop_map(|branch| Op::DeleteBranch { branch }),
        1 => (0..64usize).prop_map(|from| Op::Clone { from }),
        1 => Just(Op::DropClone),
        2 => Just(Op::Merge),
        2 => Just(Op::Gc),
    ]
}

fn pattern(seed: u8, off: u64, len: usize) -> Vec<u8> {
    // Some writes are zeros over older data: merged layers must keep them.
    if seed.is_multiple_of(4) {
        return vec![0; len];
    }
    (0..len as u64)
        .map(|i| ((off + i) as u8).wrapping_mul(7).wrapping_add(seed))
        .collect()
}

const BRANCHES: [&str; 3] = ["main", "b1", "b2"];

/// One change of file `f` in [`commit_edits`].
enum Edit {
    Write(u64, Vec<u8>),
    SetSize(u64),
    /// An fsync: what came before becomes its own segment of the commit.
    Sync,
}

/// Makes a commit on `branch` through the code a mount runs: the branch's session, the
/// filesystem, fsyncs, then `commit` (as `quackfs commit` would).
async fn commit_edits(
    engine: &Arc<Engine>,
    repo: &catalog::Repo,
    branch: &str,
    edits: Vec<Edit>,
) -> catalog::Commit {
    let holder = format!("host=maintenance-test pid={}", std::process::id());
    let o = BranchSession::open(engine.clone(), repo.clone(), branch, holder)
        .await
        .unwrap();
    let dir = engine.tmp_dir.join(format!("scratch-{}", new_id()));
    let cfg = MountConfig {
        session: Some(o.session.clone()),
        autocommit: false,
        scratch: dir,
        dirty_limit: DEFAULT_DIRTY_LIMIT,
        follow: false,
    };
    let fs = Arc::new(QuackFs::new(engine.clone(), o.view, cfg).unwrap());
    let (ino, fh) = match fs.lookup(ROOT, "f") {
        Ok(a) => (a.ino, fs.open(a.ino, libc::O_RDWR).await.unwrap()),
        Err(_) => {
            let (a, fh) = fs
                .create(ROOT, "f", 0o644, libc::O_RDWR | libc::O_CREAT)
                .await
                .unwrap();
            (a.ino, fh)
        }
    };
    for e in edits {
        match e {
            Edit::Write(off, data) => {
                fs.write(ino, fh, off, &data, false).unwrap();
            }
            Edit::SetSize(n) => fs.set_size(ino, n).unwrap(),
            Edit::Sync => fs.fsync(ino).await.unwrap(),
        }
    }
    fs.fsync(ino).await.unwrap();
    fs.release(fh).unwrap();
    fs.remove_scratch();
    let c = engine
        .catalog
        .commit_pending(
            repo.id,
            branch,
            catalog::NewCommit {
                id: new_id(),
                kind: CommitKind::Manual,
                message: "c".into(),
                author: "t".into(),
                time: now_millis(),
                merge_parent: None,
            },
            true,
        )
        .await
        .unwrap();
    o.session.release().await;
    c
}

async fn read_all(engine: &Engine, c: &catalog::Commit) -> BTreeMap<String, Vec<u8>> {
    let view = engine.view(c).await.unwrap();
    let mut out = BTreeMap::new();
    for (name, f) in &view.files {
        let mut buf = vec![0u8; f.size as usize];
        view.read(f, 0, &mut buf).await.unwrap();
        out.insert(name.clone(), buf);
    }
    out
}

async fn run_case(ops: Vec<Op>) -> Result<(), TestCaseError> {
    let dir = tempfile::tempdir().unwrap();
    let store: DynStore = Arc::new(MemoryStore::new());
    let url = format!("sqlite://{}", dir.path().join("c.sqlite").display());
    let tmp = dir.path().join("tmp");
    std::fs::create_dir_all(&tmp).unwrap();
    let engine = Arc::new(Engine::new(
        catalog::open(&url).await.unwrap(),
        store.clone(),
        tmp,
        "t".into(),
    ));
    let (repo, root) = engine.init("p").await.unwrap();
    let pb = indicatif::ProgressBar::hidden();
    // Every commit made, with what it must read; clones made.
    let mut commits: Vec<(catalog::Commit, BTreeMap<String, Vec<u8>>)> =
        vec![(root, BTreeMap::new())];
    let mut clones: Vec<quackfs::catalog::Repo> = Vec::new();
    for op in &ops {
        match op.clone() {
            Op::Commit {
                branch,
                off,
                len,
                seed,
                shrink,
            } => {
                let Ok(head) = engine.branch_head(&repo, BRANCHES[branch]).await else {
                    continue;
                };
                let mut files = commits
                    .iter()
                    .find(|(c, _)| c.id == head.id)
                    .map(|(_, m)| m.clone())
                    .unwrap_or_default();
                let data = files.entry("f".into()).or_default();
                let size = data.len() as u64;
                let edit = if shrink && size > 10 {
                    data.truncate(data.len() / 2);
                    Edit::SetSize(size / 2)
                } else {
                    let bytes = pattern(seed, off, len);
                    if data.len() < off as usize + len {
                        data.resize(off as usize + len, 0);
                    }
                    data[off as usize..off as usize + len].copy_from_slice(&bytes);
                    Edit::Write(off, bytes)
                };
                let c = commit_edits(&engine, &repo, BRANCHES[branch], vec![edit]).await;
                commits.push((c, files));
            }
            Op::Branch { from, to } => {
                if let Ok(head) = engine.branch_head(&repo, BRANCHES[from]).await {
                    let _ = engine
                        .catalog
                        .create_ref(
                            repo.id,
                            BRANCHES[to],
                            RefKind::Branch,
                            &head.id,
                            "b",
                            now_millis(),
                        )
                        .await;
                }
            }
            Op::Tag { from } => {
                let c = &commits[from % commits.len()].0;
                if c.repo_id == repo.id
                    && c.expired_at.is_none()
                    && engine
                        .catalog
                        .commit(&c.id)
                        .await
                        .unwrap()
                        .unwrap()
                        .expired_at
                        .is_none()
                {
                    let _ = engine
                        .catalog
                        .create_ref(
                            repo.id,
                            &format!("t{from}"),
                            RefKind::Tag,
                            &c.id,
                            "t",
                            now_millis(),
                        )
                        .await;
                }
            }
            Op::Reset { branch, to } => {
                let c = &commits[to % commits.len()].0;
                let fresh = engine.catalog.commit(&c.id).await.unwrap().unwrap();
                if c.repo_id == repo.id && fresh.expired_at.is_none() {
                    let _ = engine
                        .catalog
                        .move_branch(
                            repo.id,
                            BRANCHES[branch],
                            None,
                            &c.id,
                            "reset",
                            now_millis(),
                        )
                        .await;
                }
            }
            Op::DeleteBranch { branch } => {
                let refs = engine.catalog.refs(repo.id).await.unwrap();
                if refs.iter().filter(|r| r.kind == RefKind::Branch).count() > 1 {
                    let _ = engine
                        .catalog
                        .delete_ref(repo.id, BRANCHES[branch], RefKind::Branch, now_millis())
                        .await;
                }
            }
            Op::Clone { from } => {
                let c = commits[from % commits.len()].0.clone();
                let fresh = engine.catalog.commit(&c.id).await.unwrap().unwrap();
                if fresh.expired_at.is_none() {
                    let name = format!("clone{}", clones.len() + commits.len());
                    let r = engine.clone_repo(&repo, &fresh, &name).await.unwrap();
                    let head = engine.branch_head(&r, "main").await.unwrap();
                    let model = commits
                        .iter()
                        .find(|(x, _)| x.id == c.id)
                        .unwrap()
                        .1
                        .clone();
                    commits.push((head, model));
                    clones.push(r);
                }
            }
            Op::DropClone => {
                if let Some(r) = clones.pop() {
                    engine
                        .catalog
                        .delete_repo(r.id, now_millis())
                        .await
                        .unwrap();
                }
            }
            Op::Merge => {
                engine.merge(&repo, false, &pb).await.unwrap();
            }
            Op::Gc => {
                engine.gc(0, 0, false, &pb).await.unwrap();
            }
        }
    }
    engine.merge(&repo, false, &pb).await.unwrap();
    // A first gc with a grace period deletes nothing, only marks.
    let objects_before: HashSet<String> = store
        .list("")
        .await
        .unwrap()
        .into_iter()
        .map(|o| o.key)
        .collect();
    let r = engine.gc(0, 3_600_000, false, &pb).await.unwrap();
    prop_assert_eq!(r.deleted_layers, 0);
    let objects_mid: HashSet<String> = store
        .list("")
        .await
        .unwrap()
        .into_iter()
        .map(|o| o.key)
        .collect();
    prop_assert!(
        objects_before.is_subset(&objects_mid),
        "nothing is deleted before the grace"
    );
    engine.gc(0, 0, false, &pb).await.unwrap();

    // Every commit gc kept readable reads exactly as it did; expired ones say so.
    let fresh_engine = Engine::new(
        engine.catalog.clone(),
        store.clone(),
        dir.path().join("tmp"),
        "t".into(),
    );
    let mut readable = 0;
    for (c, model) in &commits {
        let now = fresh_engine.catalog.commit(&c.id).await.unwrap().unwrap();
        if now.expired_at.is_some() {
            let e = fresh_engine
                .view(&now)
                .await
                .err()
                .expect("expired commits refuse to be read");
            prop_assert!(e.to_string().contains("expired"), "{}", e);
            continue;
        }
        readable += 1;
        let got = read_all(&fresh_engine, &now).await;
        prop_assert_eq!(&got, model, "commit {} (depth {})", &c.id[..8], c.depth);
    }
    prop_assert!(readable >= 1);
    // Every refs' head is readable.
    for r in fresh_engine.catalog.refs(repo.id).await.unwrap() {
        let c = fresh_engine
            .catalog
            .commit(&r.commit_id)
            .await
            .unwrap()
            .unwrap();
        prop_assert!(
            c.expired_at.is_none(),
            "ref {} points at an expired commit",
            r.name
        );
    }
    // Objects and catalog rows agree exactly: no dead object left, no live one missing (layers
    // kept in the catalog have their bytes there).
    let snap = fresh_engine.catalog.gc_snapshot().await.unwrap();
    let (inline, rows): (HashSet<String>, HashSet<String>) = snap
        .layers
        .iter()
        .map(|l| l.row.object_key.clone())
        .partition(|k| k.starts_with(catalog::INLINE_PREFIX));
    for k in &inline {
        let id = &k[catalog::INLINE_PREFIX.len()..];
        prop_assert!(
            fresh_engine
                .catalog
                .inline_object(id)
                .await
                .unwrap()
                .is_some(),
            "inline layer {} has no bytes in the catalog",
            id
        );
    }
    let objects: HashSet<String> = store
        .list("")
        .await
        .unwrap()
        .into_iter()
        .map(|o| o.key)
        .collect();
    prop_assert_eq!(rows, objects);
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]
    #[test]
    fn merge_and_gc_keep_every_readable_commit(ops in proptest::collection::vec(op(), 1..30)) {
        let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
        rt.block_on(run_case(ops))?;
    }
}

fn layers_per_file(env: &Env, rev: &str) -> u64 {
    let show: serde_json::Value = serde_json::from_str(&env.ok(&["show", "--json", rev])).unwrap();
    show["files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["layers"].as_u64().unwrap())
        .max()
        .unwrap_or(0)
}

/// Found by the DuckDB benchmark: merging the segments of a commit dropped zero pages that hid
/// older data (zeros may only be left out of image layers).
#[test]
fn regression_merge_keeps_zeros_written_over_data() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let store: DynStore = Arc::new(MemoryStore::new());
        let url = format!("sqlite://{}", dir.path().join("c.sqlite").display());
        let tmp = dir.path().join("tmp");
        std::fs::create_dir_all(&tmp).unwrap();
        let engine = Arc::new(Engine::new(
            catalog::open(&url).await.unwrap(),
            store,
            tmp,
            "t".into(),
        ));
        let (repo, _root) = engine.init("z").await.unwrap();
        commit_edits(
            &engine,
            &repo,
            "main",
            vec![Edit::Write(0, vec![7u8; 65536])],
        )
        .await;
        // Two segments in one commit, the second writing zeros over the data.
        let c2 = commit_edits(
            &engine,
            &repo,
            "main",
            vec![
                Edit::Write(0, vec![1u8; 10]),
                Edit::Sync,
                Edit::Write(4096, vec![0u8; 8192]),
            ],
        )
        .await;
        let before = read_all(&engine, &c2).await;
        assert_eq!(&before["f"][4096..12288], &[0u8; 8192][..]);
        let pb = indicatif::ProgressBar::hidden();
        let r = engine.merge(&repo, false, &pb).await.unwrap();
        assert_eq!(r.merged_segments.len(), 1);
        assert_eq!(read_all(&engine, &c2).await, before);
    });
}

fn two_hundred_checkpoints_then_merge(env: Env) {
    env.ok(&["init", "m"]);
    let mnt = env.path("mnt");
    let m = env.mount("m", &mnt, &[]);
    let db = mnt.join("m.duckdb");
    let mut sql =
        String::from("CREATE TABLE t AS SELECT range AS i FROM range(50000); CHECKPOINT;");
    for i in 0..200 {
        sql.push_str(&format!(
            "INSERT INTO t VALUES ({i}); UPDATE t SET i = i + 1 WHERE i = {}; CHECKPOINT;",
            i * 100
        ));
    }
    duckdb(&db, &sql);
    let q = "SELECT count(*), sum(i) FROM t";
    let before = duckdb(&db, q);
    let log: serde_json::Value = serde_json::from_str(&env.ok(&["log", "--json"])).unwrap();
    let n = log.as_array().unwrap().len();
    assert!(n >= 200, "expected 200+ checkpoint commits, got {n}");
    assert!(layers_per_file(&env, "main") > 2);
    let mid = log[100]["created_at"].as_i64().unwrap();
    let mid_id = log[100]["id"].as_str().unwrap().to_string();

    env.ok(&["merge"]);
    assert!(
        layers_per_file(&env, "main") <= 2,
        "after merge the head reads through at most 2 layers per file"
    );
    assert_eq!(
        duckdb(&db, q),
        before,
        "the live mount still reads the same"
    );
    m.unmount();
    let ro = env.path("ro");
    let m = env.mount("m", &ro, &["--read-only"]);
    let out = duckdb_raw(&ro.join("m.duckdb"), q, &["-readonly"]);
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), before);
    m.unmount();
    // History and time travel still work for retained history.
    let at = chrono::DateTime::from_timestamp_millis(mid)
        .unwrap()
        .to_rfc3339();
    let log: serde_json::Value =
        serde_json::from_str(&env.ok(&["log", "--json", "-n", "1", &format!("main@{{{at}}}")]))
            .unwrap();
    assert_eq!(log[0]["id"], mid_id.as_str());
    env.ok(&["verify", "--all"]);
}

fn gc_beside_a_pinned_reader_then_after_it(env: Env) {
    let f = env.path("f.bin");
    std::fs::write(&f, vec![1u8; 300_000]).unwrap();
    env.ok(&["init", "g", "--import", f.to_str().unwrap()]);
    let old = env.ok(&["log", "--json", "-n", "1"]);
    let old: serde_json::Value = serde_json::from_str(&old).unwrap();
    let old_id = old[0]["id"].as_str().unwrap().to_string();
    std::fs::write(&f, vec![2u8; 300_000]).unwrap();
    env.ok(&["import", f.to_str().unwrap()]);

    let ro = env.path("ro");
    let m = env.mount(&format!("g@{}", &old_id[..12]), &ro, &[]);
    let gc: serde_json::Value =
        serde_json::from_str(&env.ok(&["gc", "--json", "--retain", "0s", "--grace", "0s"]))
            .unwrap();
    assert_eq!(
        gc["deleted_layers"], 0,
        "the pinned commit keeps its layers: {gc}"
    );
    assert_eq!(
        std::fs::read(ro.join("f.bin")).unwrap(),
        vec![1u8; 300_000],
        "the reader keeps reading"
    );
    m.unmount();
    let gc: serde_json::Value =
        serde_json::from_str(&env.ok(&["gc", "--json", "--retain", "0s", "--grace", "0s"]))
            .unwrap();
    // The head gets an image at the retention boundary, so both delta layers can go.
    assert_eq!(gc["images_written"], 1, "{gc}");
    assert_eq!(gc["deleted_layers"], 2, "{gc}");
    let e = env.fails(&["export", &old_id[..12], env.path("x").to_str().unwrap()]);
    assert!(e.contains("expired"), "{e}");
    let out = env.path("head");
    env.ok(&["export", "main", out.to_str().unwrap()]);
    assert_eq!(
        std::fs::read(out.join("f.bin")).unwrap(),
        vec![2u8; 300_000]
    );
}

#[test]
fn orphan_objects_go_after_the_grace_and_never_before() {
    let env = Env::new();
    env.ok(&["init", "o"]);
    // An upload whose catalog transaction never happened.
    let orphan = env
        .home()
        .join("objects")
        .join("layers")
        .join("0123456789abcdef0123456789abcdef");
    std::fs::create_dir_all(orphan.parent().unwrap()).unwrap();
    std::fs::write(&orphan, b"half a commit").unwrap();
    let gc: serde_json::Value =
        serde_json::from_str(&env.ok(&["gc", "--json", "--grace", "1h"])).unwrap();
    assert_eq!(gc["orphans_deleted"], 0);
    assert!(orphan.exists(), "younger than the grace: kept");
    let dry: serde_json::Value =
        serde_json::from_str(&env.ok(&["gc", "--json", "--grace", "0s", "--dry-run"])).unwrap();
    assert_eq!(dry["orphans_deleted"], 1);
    assert!(orphan.exists(), "--dry-run deletes nothing");
    env.ok(&["gc", "--grace", "0s"]);
    assert!(!orphan.exists());
}

on_both_backends!(
    two_hundred_checkpoints_then_merge_embedded,
    two_hundred_checkpoints_then_merge_pg_s3,
    two_hundred_checkpoints_then_merge
);

on_both_backends!(
    gc_beside_a_pinned_reader_then_after_it_embedded,
    gc_beside_a_pinned_reader_then_after_it_pg_s3,
    gc_beside_a_pinned_reader_then_after_it
);

//! Two hosts simulated on one machine: separate quackfs data directories (caches, state) sharing
//! one PostgreSQL catalog and one S3 bucket. Runs only with the production backends configured.

mod common;
use common::{duckdb, duckdb_raw, Backend, Env};

/// A second "host": its own data dir, the same catalog and store as `a`.
fn second_host(a: &Env) -> Env {
    let mut b = Env::new();
    b.backend = a.backend.clone();
    b
}

#[test]
fn a_writer_on_one_host_a_reader_on_another() {
    let Some(a) = Env::on(Backend::PgS3) else {
        return;
    };
    let b = second_host(&a);
    a.ok(&["init", "shared"]);
    let mnt = a.path("mnt");
    let m = a.mount("shared", &mnt, &[]);
    let db = mnt.join("shared.duckdb");
    duckdb(&db, "CREATE TABLE t AS SELECT range AS i, md5(range::VARCHAR) AS h FROM range(200000); CHECKPOINT;");
    a.ok(&["-r", "shared", "tag", "v1"]);
    let want = duckdb(&db, "SELECT count(*), max(h) FROM t");
    // The writer goes on; the tag does not move.
    duckdb(&db, "DELETE FROM t WHERE i < 1000; CHECKPOINT;");

    // Host B sees the database and mounts the tag read-only.
    let repos: serde_json::Value = serde_json::from_str(&b.ok(&["repos", "--json"])).unwrap();
    assert_eq!(repos[0]["name"], "shared");
    let ro = b.path("ro");
    let mb = b.mount("shared@v1", &ro, &[]);
    let out = duckdb_raw(
        &ro.join("shared.duckdb"),
        "SELECT count(*), max(h) FROM t",
        &["-readonly"],
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), want);
    mb.unmount();
    // B's export of the tag is byte-identical to A's.
    let (ea, eb) = (a.path("exp"), b.path("exp"));
    a.ok(&["export", "shared@v1", ea.to_str().unwrap()]);
    b.ok(&["export", "shared@v1", eb.to_str().unwrap()]);
    assert!(
        std::fs::read(ea.join("shared.duckdb")).unwrap()
            == std::fs::read(eb.join("shared.duckdb")).unwrap()
    );
    // A second writable mount of main from host B is refused while A holds it.
    let dir = b.path("w");
    std::fs::create_dir_all(&dir).unwrap();
    let e = b.fails(&["mount", "shared", dir.to_str().unwrap()]);
    assert!(e.contains("already mounted writable by host="), "{e}");
    m.unmount();
}

#[test]
fn concurrent_commits_lose_nothing() {
    let Some(a) = Env::on(Backend::PgS3) else {
        return;
    };
    let b = second_host(&a);
    a.ok(&["init", "race"]);
    b.ok(&["use", "race"]);
    for round in 0..3 {
        let fa = a.path(&format!("a{round}.bin"));
        let fb = b.path(&format!("b{round}.bin"));
        std::fs::write(&fa, vec![round as u8 + 1; 3_000_000]).unwrap();
        std::fs::write(&fb, vec![round as u8 + 101; 3_000_000]).unwrap();
        let spawn = |env: &Env, f: &std::path::Path| {
            env.std_cmd()
                .args(["import", f.to_str().unwrap()])
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap()
        };
        let (ca, cb) = (spawn(&a, &fa), spawn(&b, &fb));
        let (oa, ob) = (
            ca.wait_with_output().unwrap(),
            cb.wait_with_output().unwrap(),
        );
        for (out, file) in [(&oa, &fa), (&ob, &fb)] {
            if out.status.success() {
                continue;
            }
            let err = String::from_utf8_lossy(&out.stderr);
            assert_eq!(out.status.code(), Some(3), "{err}");
            assert!(
                err.contains("moved while the commit was being made"),
                "a clear conflict: {err}"
            );
            // Retrying after a conflict works.
            let env = if file == &fa { &a } else { &b };
            env.ok(&["import", file.to_str().unwrap()]);
        }
    }
    // Every file made it into main: nothing was lost.
    let show: serde_json::Value =
        serde_json::from_str(&a.ok(&["show", "--json", "race@main"])).unwrap();
    let names: Vec<&str> = show["files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        vec!["a0.bin", "a1.bin", "a2.bin", "b0.bin", "b1.bin", "b2.bin"]
    );
}

/// Small syncs are kept in the catalog (no S3 round trip) and a second host reads them back
/// exactly, before and after they were moved into S3.
#[test]
fn small_syncs_kept_in_the_catalog_read_back_on_another_host() {
    let Some(a) = Env::on(Backend::PgS3) else {
        return;
    };
    let b = second_host(&a);
    a.ok(&["init", "inl"]);
    let mnt = a.path("mnt");
    // Keep them in the catalog for this test's first half.
    let m = a.mount_env(
        &[("QUACKFS_INLINE_SPILL_AFTER", "1h")],
        &[],
        "inl",
        &mnt,
        &[],
    );
    let db = mnt.join("inl.duckdb");
    duckdb(
        &db,
        "CREATE TABLE t AS SELECT range AS i FROM range(100000); CHECKPOINT",
    );
    duckdb(
        &db,
        "PRAGMA disable_checkpoint_on_shutdown; INSERT INTO t VALUES (-1); INSERT INTO t VALUES (-2); INSERT INTO t VALUES (-3)",
    );
    a.ok(&["-r", "inl", "commit", "-m", "small ones"]);
    let wal = std::fs::read(mnt.join("inl.duckdb.wal")).unwrap();
    assert!(!wal.is_empty());
    let inline_count = || {
        let url = a.backend[0].1.clone();
        let rt = tokio::runtime::Runtime::new().unwrap();
        rt.block_on(async {
            let cat = quackfs::catalog::open(&url).await.unwrap();
            cat.inline_objects(i64::MAX, 1000).await.unwrap().len()
        })
    };
    assert!(
        inline_count() >= 3,
        "the WAL syncs were not kept in the catalog"
    );
    let check = |tag: &str| {
        let out = b.path(tag);
        b.ok(&["export", "inl@main", out.to_str().unwrap()]);
        assert!(
            std::fs::read(out.join("inl.duckdb.wal")).unwrap() == wal,
            "{tag}: host B reads other WAL bytes"
        );
        let r = duckdb_raw(
            &out.join("inl.duckdb"),
            "SELECT count(*), min(i) FROM t",
            &["-readonly"],
        );
        assert_eq!(
            String::from_utf8_lossy(&r.stdout).trim(),
            "100003,-3",
            "{tag}"
        );
    };
    check("from-catalog");
    m.unmount();
    // gc moves what is left in the catalog into S3; B reads the same bytes from there.
    let out = a.ok_env(&[("QUACKFS_INLINE_SPILL_AFTER", "0s")], &["--json", "gc"]);
    let r: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert!(r["inline_moved"].as_u64().unwrap() >= 3, "{r}");
    assert_eq!(inline_count(), 0);
    check("from-s3");
}

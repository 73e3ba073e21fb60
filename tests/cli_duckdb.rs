//! CLI tests on real DuckDB files made by the duckdb CLI: import several versions, export every
//! commit, check each export is byte-identical to the copy saved at that point and that DuckDB
//! opens it and returns the expected results.

mod common;
use common::{duckdb, Env};

/// Returns (count, sum) as DuckDB prints them.
fn summary(db: &std::path::Path) -> String {
    duckdb(db, "SELECT count(*), sum(v), max(s) FROM t")
}

fn import_versions_then_export_each_byte_identical(env: Env) {
    let db = env.path("shop.duckdb");
    duckdb(
        &db,
        "CREATE TABLE t AS SELECT i AS id, i * 3 AS v, 'row ' || i AS s FROM range(300000) r(i); CHECKPOINT;",
    );
    let mut versions = Vec::new(); // (commit id, saved copy, expected summary)
    let snap = |n: usize| env.path(&format!("snap{n}.duckdb"));
    std::fs::copy(&db, snap(0)).unwrap();
    env.ok(&[
        "init",
        "shop",
        "--import",
        db.to_str().unwrap(),
        "-m",
        "first load",
    ]);
    let head = env.ok(&["log", "-n", "1", "--json"]);
    let head: serde_json::Value = serde_json::from_str(&head).unwrap();
    versions.push((
        head[0]["id"].as_str().unwrap().to_string(),
        snap(0),
        summary(&db),
    ));
    let full_size = std::fs::metadata(&db).unwrap().len();

    let changes = [
        "UPDATE t SET v = v + 1 WHERE id % 1000 = 0; CHECKPOINT;",
        "INSERT INTO t SELECT i, i, 'new ' || i FROM range(300000, 310000) r(i); CHECKPOINT;",
        "DELETE FROM t WHERE id < 5000; CHECKPOINT;",
        "CREATE TABLE u AS SELECT 1 AS x; DROP TABLE u; CHECKPOINT;",
    ];
    for (n, sql) in changes.iter().enumerate() {
        duckdb(&db, sql);
        std::fs::copy(&db, snap(n + 1)).unwrap();
        let out = env.ok(&[
            "--json",
            "import",
            db.to_str().unwrap(),
            "-m",
            &format!("change {n}"),
        ]);
        let out: serde_json::Value = serde_json::from_str(&out).unwrap();
        let stored = out["stored_bytes"].as_u64().unwrap();
        assert!(
            stored < full_size / 4,
            "a small change must not store the whole file: {stored} of {full_size}"
        );
        let id = out["commit"]["id"]
            .as_str()
            .expect("a commit was made")
            .to_string();
        versions.push((id, snap(n + 1), summary(&db)));
    }
    // Importing the same bytes again makes no commit.
    let out = env
        .cmd()
        .args(["import", db.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("nothing changed"));

    for (i, (id, saved, expect)) in versions.iter().enumerate() {
        let dir = env.path(&format!("export{i}"));
        env.ok(&["export", &id[..10], dir.to_str().unwrap()]);
        let exported = dir.join("shop.duckdb");
        let a = std::fs::read(&exported).unwrap();
        let b = std::fs::read(saved).unwrap();
        assert_eq!(a.len(), b.len(), "size of version {i}");
        assert!(a == b, "version {i} is not byte-identical");
        assert_eq!(&summary(&exported), expect, "query results of version {i}");
    }
    // Revisions by branch ancestry give the same bytes.
    let dir = env.path("export-main2");
    env.ok(&["export", "main~2", dir.to_str().unwrap()]);
    assert!(
        std::fs::read(dir.join("shop.duckdb")).unwrap() == std::fs::read(&versions[2].1).unwrap()
    );

    // log lists every commit newest first, with kinds.
    let log: serde_json::Value = serde_json::from_str(&env.ok(&["log", "--json"])).unwrap();
    let kinds: Vec<&str> = log
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["kind"].as_str().unwrap())
        .collect();
    assert_eq!(
        kinds,
        vec!["import", "import", "import", "import", "import", "init"]
    );
    assert_eq!(log[0]["message"], "change 3");
}

#[test]
fn export_refuses_existing_files_unless_forced() {
    let env = Env::new();
    let db = env.path("a.duckdb");
    duckdb(&db, "CREATE TABLE t AS SELECT 42 AS x; CHECKPOINT;");
    env.ok(&["init", "a", "--import", db.to_str().unwrap()]);
    let dir = env.path("out");
    env.ok(&["export", "main", dir.to_str().unwrap()]);
    std::fs::write(dir.join("a.duckdb"), b"precious").unwrap();
    let err = env.fails(&["export", "main", dir.to_str().unwrap()]);
    assert!(err.contains("already exists"), "{err}");
    assert!(err.contains("hint: pass --force"), "{err}");
    assert_eq!(
        std::fs::read(dir.join("a.duckdb")).unwrap(),
        b"precious",
        "nothing half-written"
    );
    env.ok(&["export", "main", dir.to_str().unwrap(), "--force"]);
    assert_eq!(duckdb(&dir.join("a.duckdb"), "SELECT x FROM t"), "42");
    // No temporary files are left behind.
    let names: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into())
        .collect();
    assert_eq!(names, vec!["a.duckdb".to_string()]);
}

on_both_backends!(
    import_versions_then_export_each_byte_identical_embedded,
    import_versions_then_export_each_byte_identical_pg_s3,
    import_versions_then_export_each_byte_identical
);

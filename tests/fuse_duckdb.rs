//! End to end with real FUSE and the real duckdb CLI: a database created and changed on a mount,
//! commits made from another process while it runs, every commit mounted read-only and queried;
//! crash safety (kill -9 right after a transaction returned); DuckDB spilling to `<db>.tmp/`;
//! DuckDB's file lock keeping a second process out of a mounted database, as on local disk.

mod common;
use common::{duckdb, duckdb_raw, Env, Python};

const Q: &str = "SELECT count(*), sum(v), sum(length(s)) FROM t";

fn duckdb_on_a_mount_and_every_commit_read_only(env: Env) {
    env.ok(&["init", "e2e"]);
    let mnt = env.path("mnt");
    let m = env.mount("e2e", &mnt, &[]);
    let db = mnt.join("e2e.duckdb");
    let mut expected = Vec::new(); // (commit id, query result)

    duckdb(
        &db,
        "CREATE TABLE t AS SELECT i AS id, i % 97 AS v, 'row ' || i AS s FROM range(1000000) r(i)",
    );
    duckdb(&db, "UPDATE t SET v = v + 1000 WHERE id % 10 = 0; DELETE FROM t WHERE id % 7 = 0; INSERT INTO t VALUES (-1, 5, 'extra'); CHECKPOINT;");
    let r1 = duckdb(&db, Q);
    // The completed CHECKPOINT already made a checkpoint commit: nothing is left to commit.
    let log: serde_json::Value =
        serde_json::from_str(&env.ok(&["log", "--json", "-n", "1"])).unwrap();
    assert_eq!(log[0]["kind"], "checkpoint", "{log}");
    let e = env.fails_with(4, &["commit", "-m", "nothing new"]);
    assert!(e.contains("nothing to commit"), "{e}");
    // The hint says where the changes went.
    let head = log[0]["id"].as_str().unwrap();
    let hint = format!(
        "hint: the head, {} (checkpoint of e2e.duckdb), already has every synced byte",
        &head[..12]
    );
    assert!(e.contains(&hint), "{e}");
    expected.push((log[0]["id"].as_str().unwrap().to_string(), r1));

    // More changes, left in the WAL (no checkpoint), then a manual commit from another process.
    duckdb(&db, "PRAGMA disable_checkpoint_on_shutdown; UPDATE t SET s = s || '!' WHERE id < 1000; DELETE FROM t WHERE id BETWEEN 5000 AND 6000;");
    // Read-only, so DuckDB replays the WAL in memory instead of checkpointing it on open.
    let r2 = duckdb_ro(&db, Q);
    assert_ne!(r1_of(&expected), r2);
    let c2 = env.ok(&["commit", "-m", "second state"]).trim().to_string();
    expected.push((c2.clone(), r2.clone()));
    let log: serde_json::Value =
        serde_json::from_str(&env.ok(&["log", "--json", "-n", "1"])).unwrap();
    assert_eq!(log[0]["id"], c2.as_str());

    // Checkpoint commits are made automatically when DuckDB completes a checkpoint.
    duckdb(
        &db,
        "INSERT INTO t SELECT i, 1, 'late' FROM range(2000000, 2010000) r(i); CHECKPOINT;",
    );
    let r3 = duckdb(&db, Q);
    let log: serde_json::Value =
        serde_json::from_str(&env.ok(&["log", "--json", "-n", "1"])).unwrap();
    assert_eq!(log[0]["kind"], "checkpoint", "{log}");
    expected.push((log[0]["id"].as_str().unwrap().to_string(), r3.clone()));

    // The writer keeps working while read-only mounts of every commit serve their own state.
    for (i, (id, want)) in expected.iter().enumerate() {
        let dir = env.path(&format!("ro{i}"));
        let ro = env.mount(&format!("e2e@{}", &id[..12]), &dir, &[]);
        assert_eq!(&duckdb_ro(&dir.join("e2e.duckdb"), Q), want, "commit {i}");
        // Read-only: writing is refused.
        let err = std::fs::write(dir.join("x"), b"x").unwrap_err();
        assert_eq!(err.raw_os_error(), Some(libc::EROFS));
        if i == 0 {
            // So is DuckDB opening it for writing, its default; the mount said how to open it.
            let out = duckdb_raw(&dir.join("e2e.duckdb"), Q, &[]);
            let e = String::from_utf8_lossy(&out.stderr);
            assert!(e.contains("Read-only file system"), "{e}");
            let log = std::fs::read_to_string(env.mount_log(&dir)).unwrap();
            assert!(
                log.contains("hint: open its databases read-only: `duckdb -readonly "),
                "{log}"
            );
        }
        ro.unmount();
    }
    assert_eq!(duckdb(&db, Q), r3, "the writer still sees its latest state");
    m.unmount();

    // After a clean unmount the branch reads back the same.
    let m = env.mount("e2e", &mnt, &[]);
    assert_eq!(duckdb(&mnt.join("e2e.duckdb"), Q), r3);
    m.unmount();
}

fn duckdb_ro(db: &std::path::Path, sql: &str) -> String {
    let out = duckdb_raw(db, sql, &["-readonly"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

fn r1_of(v: &[(String, String)]) -> String {
    v[0].1.clone()
}

/// One round of the crash test: a transaction returns, the mount process is killed, remount.
fn crash_round(env: &Env, mnt: &std::path::Path, round: i64) {
    let m = env.mount("crash", mnt, &["--autocommit", "off"]);
    let db = mnt.join("crash.duckdb");
    duckdb(
        &db,
        &format!("PRAGMA disable_checkpoint_on_shutdown; CREATE TABLE IF NOT EXISTS t (round BIGINT, payload VARCHAR); INSERT INTO t SELECT {round}, repeat('x', 100) FROM range(1000);"),
    );
    m.crash();
    let m = env.mount("crash", mnt, &["--autocommit", "off"]);
    let got = duckdb(
        &mnt.join("crash.duckdb"),
        "SELECT count(*), max(round) FROM t",
    );
    assert_eq!(
        got,
        format!("{},{round}", 1000 * (round + 1)),
        "round {round}"
    );
    m.unmount();
}

fn kill_9_loses_no_synced_transaction(env: Env) {
    env.ok(&["init", "crash"]);
    let mnt = env.path("mnt");
    crash_round(&env, &mnt, 0);
    // The synced state is pending on the branch until someone commits it.
    let c = env.ok(&["-r", "crash", "commit", "-m", "after crash"]);
    assert_eq!(c.trim().len(), 32);
}

#[test]
#[ignore = "long: run with --ignored (CI runs it via make test)"]
fn kill_9_in_a_loop() {
    let env = Env::new();
    env.ok(&["init", "crash"]);
    let mnt = env.path("mnt");
    for round in 0..8 {
        crash_round(&env, &mnt, round);
    }
}

fn duckdb_spills_to_local_scratch(env: Env) {
    env.ok(&["init", "spill"]);
    let mnt = env.path("mnt");
    let m = env.mount("spill", &mnt, &[]);
    let db = mnt.join("spill.duckdb");
    duckdb(&db, "CREATE TABLE t AS SELECT i AS id, md5(i::VARCHAR) AS h FROM range(2000000) r(i); CHECKPOINT;");
    // A sort far bigger than the memory limit spills into <db>.tmp/ on the mount.
    let out = duckdb(
        &db,
        "SET memory_limit = '64MB'; SET threads = 1; SET preserve_insertion_order = false; \
         SELECT count(*), count(DISTINCT h) FROM (SELECT h FROM t ORDER BY h);",
    );
    assert_eq!(out, "2000000,2000000");
    let stats = duckdb(&db, "SELECT count(*) FROM t");
    assert_eq!(stats, "2000000");
    m.unmount();
    // Scratch is never versioned: only the database file is in the branch.
    let show: serde_json::Value =
        serde_json::from_str(&env.ok(&["show", "--json", "spill@main"])).unwrap();
    let names: Vec<&str> = show["files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["name"].as_str().unwrap())
        .collect();
    assert!(names.iter().all(|n| !n.contains(".tmp")), "{names:?}");
}

/// What a DuckDB process meets opening `db` (`flags`: `-readonly` or none): Ok(count of t), or
/// the error line.
fn try_count(db: &std::path::Path, flags: &[&str]) -> Result<String, String> {
    let out = duckdb_raw(db, "SELECT count(*) FROM t", flags);
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).trim().to_string())
    }
}

/// Two processes never write one mounted database at once: DuckDB's own file lock (F_SETLK,
/// handled by the kernel for the mount) refuses a second process while one has it open for
/// writing (also after its checkpoint made a commit: the file keeps its identity), and lets
/// readers share it, exactly as on local disk.
fn a_second_process_is_kept_out_by_duckdbs_lock(env: Env) {
    env.ok(&["init", "locks"]);
    let mnt = env.path("mnt");
    let m = env.mount("locks", &mnt, &[]);
    let db = mnt.join("locks.duckdb");
    duckdb(&db, "CREATE TABLE t AS SELECT i FROM range(1000) r(i)");

    // A Python connection holds the file open for writing; its checkpoint makes a commit.
    let path = db.display().to_string();
    let mut writer = Python::start();
    for sql in ["INSERT INTO t VALUES (-1)", "CHECKPOINT"] {
        writer.request(serde_json::json!({"op": "sql", "db": path, "sql": sql}));
    }
    let log: serde_json::Value =
        serde_json::from_str(&env.ok(&["log", "--json", "-n", "1"])).unwrap();
    assert_eq!(log[0]["kind"], "checkpoint", "{log}");
    for flags in [&[][..], &["-readonly"][..]] {
        let e = try_count(&db, flags).expect_err("a second process got in while one writes");
        assert!(e.contains("Could not set lock on file"), "{flags:?}: {e}");
    }
    writer.request(serde_json::json!({"op": "close", "db": path}));
    assert_eq!(try_count(&db, &[]).as_deref(), Ok("1001"));

    // Readers share the file; a writer waits for them all to close it.
    let mut reader = Python::start();
    reader.request(serde_json::json!({"op": "open", "db": path, "read_only": true}));
    reader.request(serde_json::json!({"op": "sql", "db": path, "sql": "SELECT count(*) FROM t"}));
    assert_eq!(try_count(&db, &["-readonly"]).as_deref(), Ok("1001"));
    let e = try_count(&db, &[]).expect_err("a writer got in while another process reads");
    assert!(e.contains("Could not set lock on file"), "{e}");
    reader.request(serde_json::json!({"op": "close", "db": path}));
    duckdb(&db, "INSERT INTO t VALUES (-2); CHECKPOINT");
    m.unmount();
    let out = env.path("out");
    env.ok(&["export", "locks@main", out.to_str().unwrap()]);
    assert_eq!(
        duckdb(&out.join("locks.duckdb"), "SELECT count(*), min(i) FROM t"),
        "1002,-2"
    );
}

#[test]
fn a_second_process_is_kept_out_by_duckdbs_lock_embedded() {
    a_second_process_is_kept_out_by_duckdbs_lock(Env::new());
}

on_both_backends!(
    duckdb_on_a_mount_and_every_commit_read_only_embedded,
    duckdb_on_a_mount_and_every_commit_read_only_pg_s3,
    duckdb_on_a_mount_and_every_commit_read_only
);

on_both_backends!(
    kill_9_loses_no_synced_transaction_embedded,
    kill_9_loses_no_synced_transaction_pg_s3,
    kill_9_loses_no_synced_transaction
);

on_both_backends!(
    duckdb_spills_to_local_scratch_embedded,
    duckdb_spills_to_local_scratch_pg_s3,
    duckdb_spills_to_local_scratch
);

//! gc and merge beside live mounts, with cold caches: a read-only mount started before `merge` and
//! `gc --retain 0s --grace 0s`, and a writable mount up longer than the retention, still read every
//! byte afterwards. Their in-memory caches are far smaller than the database (`--cache-size 1MiB`)
//! and nothing was read through them before gc, so every byte comes from the store after it (S3 on
//! the production backend pair). gc keeps exactly what live sessions registered: the test fails if
//! gc ignores a live mount (checked by hand by disabling the session rule).
//!
//! Also: gc converges in one pass (a second pass finds nothing to do), and a dead mount's session
//! lets go of its layers.

mod common;
use common::{duckdb, Env};
use std::path::Path;

fn gc_json(env: &Env, args: &[&str]) -> serde_json::Value {
    let mut all = vec!["--json", "gc"];
    all.extend_from_slice(args);
    serde_json::from_str(&env.ok(&all)).unwrap()
}

fn read_whole(path: &Path) -> Vec<u8> {
    std::fs::read(path).unwrap()
}

fn gc_beside_live_mounts(env: Env) {
    env.ok(&["init", "live"]);
    let wdir = env.path("w");
    // Build a history of many layers: a table, then checkpointed updates.
    let w = env.mount("live", &wdir, &["--cache-size", "1MiB"]);
    let db = wdir.join("live.duckdb");
    duckdb(
        &db,
        "CREATE TABLE t AS SELECT range AS id, md5(range::VARCHAR) AS h FROM range(400000); CHECKPOINT",
    );
    for i in 0..6 {
        duckdb(
            &db,
            &format!("UPDATE t SET h = md5((id + {i})::VARCHAR) WHERE id % 5 = {i}; CHECKPOINT"),
        );
    }
    env.ok(&["-r", "live", "tag", "old", "main~3"]);
    let old = env.exported("live@old", "live.duckdb");
    let head = env.exported("live@main", "live.duckdb");
    assert!(
        head.len() > 8 << 20,
        "the database must be far larger than the caches"
    );
    // A reader of an old commit, started now, that has read nothing yet.
    let rdir = env.path("r");
    let r = env.mount("live@old", &rdir, &["--cache-size", "1MiB"]);
    // The tag goes: only the reader's pin keeps that commit, only its session its layers.
    env.ok(&["-r", "live", "tag", "-d", "old"]);
    // The writer has been up longer than the retention; both are live sessions.
    std::thread::sleep(std::time::Duration::from_millis(1500));
    env.ok(&["-r", "live", "merge"]);
    let first = gc_json(&env, &["--retain", "0s", "--grace", "0s"]);
    assert!(
        first["deleted_layers"].as_u64().unwrap() > 0,
        "gc should have removed the merged-away history: {first}"
    );
    // One pass converges: nothing left to do.
    let second = gc_json(&env, &["--retain", "0s", "--grace", "0s"]);
    for k in [
        "deleted_layers",
        "newly_doomed",
        "orphans_deleted",
        "expired_commits",
        "images_written",
    ] {
        assert_eq!(second[k], 0, "second gc pass did {k}: {second}");
    }
    // Every byte, from the store, through both mounts.
    assert!(
        read_whole(&rdir.join("live.duckdb")) == old,
        "the read-only mount lost bytes to gc"
    );
    // The writer may also hold DuckDB's unsynced truncation of free blocks at the end of the
    // file (a checkpoint's last step): what it shows is the head, possibly cut short.
    let live = read_whole(&db);
    assert!(
        live.len() <= head.len() && live[..] == head[..live.len()],
        "the writable mount lost bytes to gc"
    );
    // And DuckDB works on both.
    let out = common::duckdb_raw(
        &rdir.join("live.duckdb"),
        "SELECT count(*) FROM t",
        &["-readonly"],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "400000");
    duckdb(&db, "UPDATE t SET h = 'after gc' WHERE id < 10; CHECKPOINT");
    assert_eq!(
        duckdb(&db, "SELECT count(*) FILTER (h = 'after gc') FROM t"),
        "10"
    );
    r.unmount();
    w.unmount();
    // With the reader gone, the next gc lets its commit and layers go.
    let third = gc_json(&env, &["--retain", "0s", "--grace", "0s"]);
    assert!(
        third["deleted_layers"].as_u64().unwrap() > 0,
        "the reader's layers should go once it is gone: {third}"
    );
    let w = env.mount("live", &wdir, &[]);
    assert_eq!(
        duckdb(&db, "SELECT count(*) FILTER (h = 'after gc') FROM t"),
        "10"
    );
    w.unmount();
    env.ok(&["verify", "--all"]);
}

on_both_backends!(
    gc_beside_live_mounts_embedded,
    gc_beside_live_mounts_pgs3,
    gc_beside_live_mounts
);

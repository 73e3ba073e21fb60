//! History with the real duckdb CLI on mounts: time travel by date, branches, tags, `main~N`,
//! zero-copy clones that survive the deletion of their source, diff (files and tables), verify.

mod common;
use common::{duckdb, duckdb_raw, Env};
use std::path::Path;

fn count(db: &Path) -> String {
    let out = duckdb_raw(db, "SELECT count(*) FROM t", &["-readonly"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

fn head(env: &Env, rev: &str) -> serde_json::Value {
    let log: serde_json::Value =
        serde_json::from_str(&env.ok(&["log", "--json", "-n", "1", rev])).unwrap();
    log[0].clone()
}

fn time_travel_branches_tags_clones(env: Env) {
    env.ok(&["init", "h"]);
    let mnt = env.path("mnt");
    let m = env.mount("h", &mnt, &[]);
    let db = mnt.join("h.duckdb");
    // State A, B, C a little apart; each CHECKPOINT makes a checkpoint commit.
    duckdb(
        &db,
        "CREATE TABLE t AS SELECT range AS i FROM range(10); CHECKPOINT;",
    );
    let a = head(&env, "main");
    std::thread::sleep(std::time::Duration::from_millis(1200));
    duckdb(
        &db,
        "INSERT INTO t SELECT range FROM range(20); CHECKPOINT;",
    );
    let b = head(&env, "main");
    std::thread::sleep(std::time::Duration::from_millis(1200));
    duckdb(&db, "INSERT INTO t SELECT range FROM range(30); CREATE TABLE extra AS SELECT 1 AS x; CHECKPOINT;");
    let c = head(&env, "main");
    assert_eq!(count(&db), "60");
    m.unmount();
    let (ta, tb) = (
        a["created_at"].as_i64().unwrap(),
        b["created_at"].as_i64().unwrap(),
    );
    assert!(tb > ta);
    let between = chrono::DateTime::from_timestamp_millis((ta + tb) / 2)
        .unwrap()
        .to_rfc3339();

    // A branch where main was between A and B holds A.
    env.ok(&["branch", "past", "main", "--at", &between]);
    let past = env.path("past");
    let m = env.mount("h@past", &past, &[]);
    assert_eq!(count(&past.join("h.duckdb")), "10");
    duckdb(
        &past.join("h.duckdb"),
        "INSERT INTO t VALUES (-1); CHECKPOINT;",
    );
    assert_eq!(count(&past.join("h.duckdb")), "11");
    m.unmount();
    assert_ne!(
        head(&env, "past")["id"],
        a["id"],
        "writing to past committed on past"
    );
    let main_dir = env.path("main-ro");
    let m = env.mount("h@main", &main_dir, &["--read-only"]);
    assert_eq!(count(&main_dir.join("h.duckdb")), "60", "main is unchanged");
    m.unmount();

    // Tags and main~2 mount read-only with their own contents.
    env.ok(&["tag", "v1", b["id"].as_str().unwrap()]);
    for (rev, want) in [
        ("h@v1", "30"),
        ("h@main~2", "10"),
        (&format!("h@main@{{{between}}}") as &str, "10"),
    ] {
        let dir = env.path("ro");
        let m = env.mount(rev, &dir, &[]);
        assert_eq!(count(&dir.join("h.duckdb")), want, "{rev}");
        let err = std::fs::OpenOptions::new()
            .write(true)
            .open(dir.join("h.duckdb"))
            .unwrap_err();
        assert_eq!(err.raw_os_error(), Some(libc::EROFS), "{rev}");
        m.unmount();
    }

    // Clone at B: zero copy; each database then has its own history.
    env.ok(&["clone", "h@v1", "hc"]);
    let repos: serde_json::Value = serde_json::from_str(&env.ok(&["repos", "--json"])).unwrap();
    let hc = repos
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["name"] == "hc")
        .unwrap()
        .clone();
    assert_eq!(hc["stored_bytes"], 0, "a clone owns no bytes");
    assert!(hc["shared_bytes"].as_i64().unwrap() > 0);
    let cdir = env.path("clone");
    let m = env.mount("hc", &cdir, &[]);
    assert_eq!(count(&cdir.join("h.duckdb")), "30");
    duckdb(
        &cdir.join("h.duckdb"),
        "DELETE FROM t WHERE i < 5; CHECKPOINT;",
    );
    assert_eq!(count(&cdir.join("h.duckdb")), "20");
    m.unmount();
    let out = env.path("h-export");
    env.ok(&["export", "h@main", out.to_str().unwrap()]);
    assert_eq!(
        count(&out.join("h.duckdb")),
        "60",
        "the source is unchanged"
    );

    // Deleting the source database does not break the clone.
    env.ok(&["drop", "h", "--yes"]);
    let e = env.fails(&["-r", "h", "log"]);
    assert!(e.contains("does not exist"), "{e}");
    let m = env.mount("hc", &cdir, &["--read-only"]);
    assert_eq!(count(&cdir.join("h.duckdb")), "20");
    m.unmount();
    let _ = c;
}

#[test]
fn diff_and_verify() {
    let env = Env::new();
    let db = env.path("d.duckdb");
    duckdb(&db, "CREATE TABLE t AS SELECT range AS i, md5(range::VARCHAR) AS h FROM range(100000); CHECKPOINT;");
    env.ok(&["init", "d", "--import", db.to_str().unwrap()]);
    duckdb(&db, "UPDATE t SET h = 'x' WHERE i < 100; CREATE TABLE u AS SELECT range AS k FROM range(42); CHECKPOINT;");
    let imported: serde_json::Value =
        serde_json::from_str(&env.ok(&["--json", "import", db.to_str().unwrap()])).unwrap();

    // The diff's ranges are exactly what the import stored for the file.
    let diff: serde_json::Value =
        serde_json::from_str(&env.ok(&["diff", "--json", "main~1", "main"])).unwrap();
    let files = diff["files"].as_array().unwrap();
    assert_eq!(files.len(), 1);
    let changed = files[0]["changed_bytes"].as_u64().unwrap();
    let import: serde_json::Value =
        serde_json::from_str(&env.ok(&["show", "--json", "main"])).unwrap();
    assert!(changed > 0);
    let ranges = files[0]["ranges"].as_array().unwrap();
    let sum: u64 = ranges
        .iter()
        .map(|r| r[1].as_u64().unwrap() - r[0].as_u64().unwrap())
        .sum();
    assert_eq!(sum, changed);
    assert_eq!(
        changed,
        imported["files"][0]["changed_bytes"].as_u64().unwrap()
    );
    assert!(ranges.len() as u64 <= imported["files"][0]["changed_ranges"].as_u64().unwrap());
    assert_eq!(import["commit"]["bytes_added"], imported["stored_bytes"]);
    let text = env.ok(&["diff", "main~1"]);
    assert!(text.contains("d.duckdb"), "{text}");

    // --rows: the added table and its rows; t (no key) lost 100 rows and gained 100.
    let rows: serde_json::Value =
        serde_json::from_str(&env.ok(&["diff", "--json", "main~1", "main", "--rows"])).unwrap();
    let tables = rows["rows"][0]["tables"].as_array().unwrap();
    let u = tables
        .iter()
        .find(|r| r["table"] == "u")
        .expect("table u listed");
    assert_eq!(u["change"], "added");
    assert_eq!(u["inserted"], 42);
    let t = tables.iter().find(|r| r["table"] == "t").expect("t listed");
    assert_eq!(
        (&t["inserted"], &t["deleted"], &t["updated"]),
        (&100.into(), &100.into(), &0.into()),
        "{t}"
    );

    // verify passes, then finds a flipped byte and names the object.
    let ok = env.ok(&["verify", "--all"]);
    assert!(ok.starts_with("ok: 3 commit(s), 2 layer(s)"), "{ok}");
    let layers = env.home().join("objects").join("layers");
    let mut objs: Vec<_> = std::fs::read_dir(&layers)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    objs.sort_by_key(|p| std::fs::metadata(p).unwrap().len());
    let victim = objs.last().unwrap().clone();
    let mut bytes = std::fs::read(&victim).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x01;
    std::fs::write(&victim, bytes).unwrap();
    let e = env.fails(&["verify", "--all"]);
    let name = victim.file_name().unwrap().to_str().unwrap();
    assert!(e.contains(&format!("layers/{name}")), "{e}");
}

on_both_backends!(
    time_travel_branches_tags_clones_embedded,
    time_travel_branches_tags_clones_pg_s3,
    time_travel_branches_tags_clones
);

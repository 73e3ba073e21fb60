//! `mount --metrics ADDR`: scraped during a DuckDB workload, the counters move as they should;
//! `status --json` reports the same figures. On both backend pairs (on S3, bytes really go up to
//! and come down from the object store).

mod common;
use common::{duckdb, duckdb_raw, Env};
use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::time::Duration;

fn free_addr() -> String {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().to_string()
}

/// GET /metrics: (metric line without value -> value).
fn scrape(addr: &str) -> BTreeMap<String, f64> {
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    write!(
        s,
        "GET /metrics HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text).unwrap();
    let (head, body) = text.split_once("\r\n\r\n").unwrap();
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(head.contains("openmetrics-text"), "{head}");
    assert!(body.trim_end().ends_with("# EOF"), "{body}");
    body.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .filter_map(|l| {
            let (k, v) = l.rsplit_once(' ')?;
            Some((k.to_string(), v.parse().ok()?))
        })
        .collect()
}

fn get(m: &BTreeMap<String, f64>, k: &str) -> f64 {
    *m.get(k)
        .unwrap_or_else(|| panic!("no {k} in {:#?}", m.keys().collect::<Vec<_>>()))
}

fn metrics(env: Env) {
    env.ok(&["init", "db"]);
    let dir = env.path("m");
    let addr = free_addr();
    let m = env.mount("db", &dir, &["--metrics", &addr, "--autocommit", "off"]);
    let db = dir.join("db.duckdb");
    let before = scrape(&addr);
    assert_eq!(get(&before, "quackfs_duckdb_written_bytes_total"), 0.0);
    assert_eq!(get(&before, "quackfs_pending_layers"), 0.0);
    // Enough rows that a checkpoint is larger than what the catalog keeps inline.
    duckdb(
        &db,
        "CREATE TABLE t AS SELECT range AS i, md5(range::VARCHAR) AS h FROM range(400000); CHECKPOINT",
    );
    for i in 0..5 {
        duckdb(&db, &format!("INSERT INTO t VALUES ({i}, 'x')"));
    }
    // The lease heartbeat runs every 2 s: wait for one (a loaded machine may delay it).
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let after = loop {
        let m = scrape(&addr);
        if get(&m, "quackfs_lease_heartbeats_total") >= 1.0 || std::time::Instant::now() > deadline
        {
            break m;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    let written = get(&after, "quackfs_duckdb_written_bytes_total");
    assert!(written > 10_000_000.0, "{written}");
    let syncs = get(&after, "quackfs_fsync_duration_seconds_count");
    assert!(syncs >= 6.0, "{syncs} syncs");
    assert_eq!(
        get(&after, "quackfs_fsync_duration_seconds_bucket{le=\"+Inf\"}"),
        syncs
    );
    assert!(get(&after, "quackfs_fsync_duration_seconds_sum") > 0.0);
    let stored = get(&after, "quackfs_stored_bytes_total");
    assert!(
        stored > 0.0 && stored <= written * 1.2,
        "stored {stored}, written {written}"
    );
    assert!(get(&after, "quackfs_registrations_total") >= 1.0);
    assert!(get(&after, "quackfs_pending_layers") >= 2.0);
    assert!(get(&after, "quackfs_pending_bytes") > 1_000_000.0);
    assert!(
        get(&after, "quackfs_lease_heartbeats_total") >= 1.0,
        "heartbeats"
    );
    assert_eq!(get(&after, "quackfs_fence_events_total"), 0.0);
    assert!(get(&after, "quackfs_uploaded_bytes_total") > 1_000_000.0);
    // DuckDB read its file back: reads went through layers.
    assert!(get(&after, "quackfs_read_layers_count") > 0.0);
    // The same figures in status --json (its snapshot is rewritten every second: wait for the
    // one taken after the scrape).
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let st = loop {
        let st: serde_json::Value = serde_json::from_str(&env.ok(&["status", "--json"])).unwrap();
        let sm = &st["mounts"][0]["metrics"];
        let caught_up = sm["duckdb_written_bytes"].as_f64().unwrap_or(0.0) >= written
            && sm["fsync_seconds"]["count"].as_f64().unwrap_or(0.0) >= syncs;
        if caught_up || std::time::Instant::now() > deadline {
            break st;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    let sm = &st["mounts"][0]["metrics"];
    assert!(
        sm["duckdb_written_bytes"].as_f64().unwrap() >= written,
        "{st}"
    );
    assert!(
        sm["fsync_seconds"]["count"].as_f64().unwrap() >= syncs,
        "{st}"
    );
    assert_eq!(st["uncommitted"], true, "{st}");
    assert!(st["uncommitted_layers"].as_u64().unwrap() >= 1, "{st}");
    // A commit from outside takes the pending layers: the gauge follows.
    env.ok(&["commit", "-m", "sealed"]);
    let sealed = scrape(&addr);
    assert_eq!(get(&sealed, "quackfs_pending_layers"), 0.0);
    assert_eq!(get(&sealed, "quackfs_pending_bytes"), 0.0);
    // Anything but /metrics is a 404.
    let mut s = std::net::TcpStream::connect(&addr).unwrap();
    write!(s, "GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text).unwrap();
    assert!(text.starts_with("HTTP/1.1 404"), "{text}");
    m.unmount();
    assert!(
        std::net::TcpStream::connect(&addr).is_err(),
        "still serving"
    );

    // A fresh read-only mount with a small cache reads the file from the store: downloads and
    // cache misses count; reading it again hits the memory cache.
    let ro = env.path("ro");
    let addr = free_addr();
    let m = env.mount(
        "db",
        &ro,
        &[
            "--read-only",
            "--metrics",
            &addr,
            "--cache-size",
            "64MiB",
            "--disk-cache",
            "0",
        ],
    );
    let q = "SELECT count(*), max(h) FROM t";
    let out = duckdb_raw(&ro.join("db.duckdb"), q, &["-readonly"]);
    assert!(out.status.success());
    let cold = scrape(&addr);
    assert!(get(&cold, "quackfs_downloaded_bytes_total") > 1_000_000.0);
    assert!(get(&cold, "quackfs_memory_cache_misses_total") > 0.0);
    assert_eq!(get(&cold, "quackfs_duckdb_written_bytes_total"), 0.0);
    assert_eq!(get(&cold, "quackfs_pending_layers"), 0.0);
    let _ = std::fs::write("/proc/sys/vm/drop_caches", "3");
    let out = duckdb_raw(&ro.join("db.duckdb"), q, &["-readonly"]);
    assert!(out.status.success());
    let warm = scrape(&addr);
    assert!(
        get(&warm, "quackfs_memory_cache_hits_total")
            > get(&cold, "quackfs_memory_cache_hits_total"),
        "no hits on the second read"
    );
    m.unmount();

    // With a disk cache: a cold mount misses, the next one hits.
    let _ = std::fs::remove_dir_all(env.home().join("cache"));
    let disk = |tag: &str| {
        let dir = env.path(tag);
        let addr = free_addr();
        let m = env.mount_env(
            &[],
            &[],
            "db",
            &dir,
            &[
                "--read-only",
                "--metrics",
                &addr,
                "--cache-size",
                "1MiB",
                "--disk-cache",
                "256MiB",
            ],
        );
        let out = duckdb_raw(&dir.join("db.duckdb"), q, &["-readonly"]);
        assert!(out.status.success());
        let got = scrape(&addr);
        m.unmount();
        got
    };
    let first = disk("d1");
    assert!(get(&first, "quackfs_disk_cache_misses_total") > 0.0);
    let second = disk("d2");
    assert!(get(&second, "quackfs_disk_cache_hits_total") > 0.0);

    // A layer object gone from S3 under a running mount: the read fails and the error is
    // counted by kind. (The local store keeps object files open: a deleted one still reads.)
    if env.backend.is_empty() {
        return;
    }
    let show: serde_json::Value = serde_json::from_str(&env.ok(&["show", "--json"])).unwrap();
    // (The largest: small ones may be kept in the catalog.)
    let key = show["layers"]
        .as_array()
        .unwrap()
        .iter()
        .max_by_key(|l| l["bytes"].as_i64().unwrap())
        .and_then(|l| l["object_key"].as_str())
        .unwrap()
        .to_string();
    assert!(key.starts_with("layers/"), "{key}");
    let _ = std::fs::remove_dir_all(env.home().join("cache"));
    let dir = env.path("broken");
    let addr = free_addr();
    let m = env.mount(
        "db",
        &dir,
        &[
            "--read-only",
            "--metrics",
            &addr,
            "--disk-cache",
            "0",
            "--cache-size",
            "1MiB",
        ],
    );
    common::with_store(&env, async |st| st.delete(&key).await.unwrap());
    let _ = std::fs::write("/proc/sys/vm/drop_caches", "3");
    let out = duckdb_raw(&dir.join("db.duckdb"), q, &["-readonly"]);
    assert!(!out.status.success(), "read a missing object");
    let broken = scrape(&addr);
    assert!(
        get(
            &broken,
            "quackfs_errors_total{backend=\"store\",kind=\"not_found\"}"
        ) >= 1.0,
        "{broken:?}"
    );
    m.unmount();
}

on_both_backends!(metrics_embedded, metrics_pgs3, metrics);

#[test]
fn a_metrics_address_in_use_fails_the_mount() {
    let env = Env::new();
    env.ok(&["init", "db"]);
    let busy = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = busy.local_addr().unwrap().to_string();
    let dir = env.path("m");
    std::fs::create_dir_all(&dir).unwrap();
    let e = env.fails(&["mount", "db", dir.to_str().unwrap(), "--metrics", &addr]);
    assert!(
        e.contains(&format!("cannot serve metrics at {addr}")),
        "{e}"
    );
    for (bad, says) in [
        ("nonsense", "--metrics"),
        ("localhost:99999", "expected HOST:PORT"),
    ] {
        let e = env.fails_with(2, &["mount", "db", dir.to_str().unwrap(), "--metrics", bad]);
        assert!(e.contains(says), "{bad}: {e}");
    }
    // A host name serves, as its address does.
    let port = free_addr().rsplit_once(':').unwrap().1.to_string();
    let m = env.mount("db", &dir, &["--metrics", &format!("localhost:{port}")]);
    let got = scrape(&format!("127.0.0.1:{port}"));
    assert_eq!(get(&got, "quackfs_pending_layers"), 0.0);
    m.unmount();
}

/// Waits until `misses()` has stopped changing for a second at a value above `above`; returns it.
fn settled_above(misses: &dyn Fn() -> f64, above: f64, what: &str) -> f64 {
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let (mut last, mut since) = (-1.0, std::time::Instant::now());
    loop {
        let n = misses();
        if n != last {
            (last, since) = (n, std::time::Instant::now());
        } else if n > above && since.elapsed() > Duration::from_secs(1) {
            return n;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{what}: the mount read {last} extents by itself (more than {above} expected)"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// On S3, a mount fetches at once what DuckDB reads first when it opens a database (the headers,
/// then the metadata block the active header names), so that a cold open waits on no round trip
/// of its own: with no reader at all, the mount reads extents it did not hold; opening the
/// database and reading its catalog then misses none.
#[test]
fn a_mount_on_s3_fetches_what_opening_the_database_reads() {
    let Some(env) = common::Env::on(common::Backend::PgS3) else {
        return;
    };
    env.ok(&["init", "db"]);
    let w = env.path("w");
    let m = env.mount("db", &w, &[]);
    duckdb(
        &w.join("db.duckdb"),
        "CREATE TABLE t AS SELECT range AS id, md5(range::VARCHAR) AS h FROM range(1500000); CHECKPOINT",
    );
    m.unmount();
    let dir = env.path("ro");
    let addr = free_addr();
    let m = env.mount(
        "db",
        &dir,
        &["--read-only", "--metrics", &addr, "--disk-cache", "0"],
    );
    // (A stat reads no data.) Larger than two fetch windows: the metadata is far from the
    // headers.
    let size = std::fs::metadata(dir.join("db.duckdb")).unwrap().len();
    assert!(size > 20 << 20, "the database is too small: {size}");
    let misses = || get(&scrape(&addr), "quackfs_memory_cache_misses_total");
    // Two at least: the headers, the metadata.
    let last = settled_above(&misses, 1.0, "after mounting");
    let out = duckdb_raw(
        &dir.join("db.duckdb"),
        "SELECT table_name, estimated_size FROM duckdb_tables()",
        &["-readonly"],
    );
    assert!(out.status.success(), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stdout).contains('t'));
    assert_eq!(
        misses(),
        last,
        "opening the database read what the mount had not fetched"
    );
    m.unmount();
}

/// The same for a follower on S3 when its branch moves: it fetches what opening the changed
/// database reads (its new headers and metadata, far from the old ones), with no reader at all,
/// and a new connection then misses nothing.
#[test]
fn a_follower_on_s3_fetches_what_opening_the_moved_database_reads() {
    let Some(env) = common::Env::on(common::Backend::PgS3) else {
        return;
    };
    env.ok(&["init", "db"]);
    let w = env.path("w");
    let m = env.mount("db", &w, &[]);
    let db = w.join("db.duckdb");
    duckdb(
        &db,
        "CREATE TABLE t AS SELECT range AS id FROM range(1000); CHECKPOINT",
    );
    let dir = env.path("ro");
    let addr = free_addr();
    let f = env.mount(
        "db@main",
        &dir,
        &["--follow", "--metrics", &addr, "--disk-cache", "0"],
    );
    let misses = || get(&scrape(&addr), "quackfs_memory_cache_misses_total");
    let before = settled_above(&misses, 0.0, "after mounting");
    // A move that writes some 25 MB: the new metadata block lies past the old fetch windows.
    duckdb(
        &db,
        "CREATE TABLE u AS SELECT range AS id, md5(range::VARCHAR) AS h FROM range(1500000); CHECKPOINT",
    );
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while std::fs::metadata(dir.join("db.duckdb")).unwrap().len() < 20 << 20 {
        assert!(
            std::time::Instant::now() < deadline,
            "the follower did not move"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let after = settled_above(&misses, before, "after the move");
    let out = duckdb_raw(
        &dir.join("db.duckdb"),
        "SELECT string_agg(table_name, ' ' ORDER BY table_name) FROM duckdb_tables()",
        &["-readonly"],
    );
    assert!(out.status.success(), "{out:?}");
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "t u");
    assert_eq!(
        misses(),
        after,
        "opening the moved database read what the follower had not fetched"
    );
    f.unmount();
    m.unmount();
}

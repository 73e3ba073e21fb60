//! `mount --follow`: a read-only mount that follows its branch. A writer commits in a loop while
//! a reader opens, queries and closes in a loop: every query sees a complete commit, never goes
//! backwards, and reaches the newest. A handle opened before the branch moved keeps reading its
//! commit byte for byte, also after merge + gc, and a fresh open reads the new one. Embedded
//! (two processes of one host) and PostgreSQL + S3 (two hosts: separate data directories).

mod common;
use common::{duckdb, duckdb_raw, Backend, Env};
use std::io::{Read, Seek, SeekFrom};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// (rows, complete) as seen by a fresh DuckDB process on the follower.
fn observe(db: &std::path::Path) -> Option<(i64, bool)> {
    let out = duckdb_raw(
        db,
        "SELECT count(*), count(*) = count(DISTINCT i) AND count(*) = coalesce(max(i) + 1, 0) FROM t",
        &["-readonly"],
    );
    if !out.status.success() {
        return None;
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let (n, ok) = text.trim().split_once(',')?;
    Some((n.parse().ok()?, ok == "true"))
}

fn wait_for_rows(db: &std::path::Path, n: i64) {
    let deadline = Instant::now() + Duration::from_secs(15);
    while Instant::now() < deadline {
        if observe(db).is_some_and(|(got, _)| got == n) {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("the follower did not reach {n} rows: {:?}", observe(db));
}

fn read_all(f: &mut std::fs::File) -> Vec<u8> {
    f.seek(SeekFrom::Start(0)).unwrap();
    let mut v = Vec::new();
    f.read_to_end(&mut v).unwrap();
    v
}

fn drop_page_cache() {
    let _ = std::fs::write("/proc/sys/vm/drop_caches", "3");
}

fn follow(writer: Env, reader: Env) {
    writer.ok(&["init", "db"]);
    let w = writer.path("w");
    let wm = writer.mount("db@main", &w, &[]);
    let wdb = w.join("db.duckdb");
    // Enough data that the follower reads through its small cache from the store.
    duckdb(
        &wdb,
        "CREATE TABLE t(i BIGINT); CREATE TABLE pad AS SELECT range AS r, md5(range::VARCHAR) AS h FROM range(300000); CHECKPOINT",
    );
    let r = reader.path("r");
    let rm = reader.mount_with(
        &["-v"],
        "db@main",
        &r,
        &[
            "--follow",
            "--cache-size",
            "1MiB",
            "--follow-interval",
            "100ms",
        ],
    );
    let rdb = r.join("db.duckdb");
    assert_eq!(observe(&rdb), Some((0, true)));
    let st = reader.ok(&["-r", "db", "status"]);
    assert!(st.contains("read-only, following main"), "{st}");

    // Writer commits, reader opens/queries/closes in a loop.
    let stop = Arc::new(AtomicBool::new(false));
    let seen = Arc::new(Mutex::new(Vec::new()));
    let reader_loop = {
        let (stop, seen, rdb) = (stop.clone(), seen.clone(), rdb.clone());
        std::thread::spawn(move || {
            while !stop.load(Ordering::SeqCst) {
                if let Some(o) = observe(&rdb) {
                    seen.lock().unwrap().push(o);
                }
            }
        })
    };
    // Meanwhile the name never vanishes, not even for a moment while the follower switches.
    let stat_errors = Arc::new(Mutex::new(Vec::new()));
    let stat_loop = {
        let (stop, errors, rdb) = (stop.clone(), stat_errors.clone(), rdb.clone());
        std::thread::spawn(move || {
            while !stop.load(Ordering::SeqCst) {
                if let Err(e) = std::fs::metadata(&rdb) {
                    errors.lock().unwrap().push(e.to_string());
                }
            }
        })
    };
    const COMMITS: i64 = 20;
    for n in 0..COMMITS {
        duckdb(&wdb, &format!("INSERT INTO t VALUES ({n}); CHECKPOINT"));
    }
    wait_for_rows(&rdb, COMMITS);
    // After the first move, the follower builds each view on the one it serves (the layers of
    // the commits in between), not from the whole history.
    let log = std::fs::read_to_string(reader.mount_log(&r)).unwrap();
    let built = |how: &str| log.lines().filter(|l| l.contains(how)).count();
    assert!(
        built("view built on the one served") >= built("view built whole"),
        "{log}"
    );
    assert!(built("view built on the one served") > 0, "{log}");
    stop.store(true, Ordering::SeqCst);
    reader_loop.join().unwrap();
    stat_loop.join().unwrap();
    let errors = stat_errors.lock().unwrap().clone();
    assert!(errors.is_empty(), "stat failed during switches: {errors:?}");
    let seen = seen.lock().unwrap().clone();
    assert!(seen.len() > 5, "the reader hardly ran: {seen:?}");
    for w in seen.windows(2) {
        assert!(w[1].0 >= w[0].0, "went backwards: {seen:?}");
    }
    assert!(
        seen.iter().all(|(_, ok)| *ok),
        "an incomplete commit: {seen:?}"
    );

    // A handle opened now keeps reading this commit after the branch moves.
    let before = writer.ok(&["-r", "db", "show", "--json"]);
    let before: serde_json::Value = serde_json::from_str(&before).unwrap();
    let old_id = before["commit"]["id"].as_str().unwrap().to_string();
    let want_old = writer.exported(&old_id[..12], "db.duckdb");
    let mut held = std::fs::File::open(&rdb).unwrap();
    assert!(
        read_all(&mut held) == want_old,
        "the open handle reads its commit"
    );
    duckdb(
        &wdb,
        &format!(
            "INSERT INTO t VALUES ({COMMITS}); UPDATE pad SET h = 'x' WHERE r % 3 = 0; CHECKPOINT"
        ),
    );
    wait_for_rows(&rdb, COMMITS + 1);
    wm.unmount();
    let want_new = writer.exported("main", "db.duckdb");
    assert!(want_new != want_old);
    // gc with no retention beside the open handle: its commit stays readable.
    writer.ok(&["-r", "db", "merge"]);
    writer.ok(&["-r", "db", "gc", "--retain", "0s", "--grace", "0s"]);
    drop_page_cache();
    assert!(
        read_all(&mut held) == want_old,
        "the open handle switched commits or lost bytes"
    );
    let mut fresh = std::fs::File::open(&rdb).unwrap();
    assert!(
        read_all(&mut fresh) == want_new,
        "a new open reads the new commit"
    );
    drop(fresh);
    drop(held);
    // With the old handle closed, the follower lets the old commit go: one session left.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let st: serde_json::Value =
            serde_json::from_str(&reader.ok(&["-r", "db", "status", "--json"])).unwrap();
        let followers: Vec<&serde_json::Value> = st["mounts"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|m| m["follows"] == "main")
            .collect();
        if followers.len() == 1 {
            let head: serde_json::Value =
                serde_json::from_str(&reader.ok(&["-r", "db", "show", "--json"])).unwrap();
            assert_eq!(followers[0]["commit"], head["commit"]["id"], "{st}");
            break;
        }
        assert!(Instant::now() < deadline, "old generations kept: {st}");
        std::thread::sleep(Duration::from_millis(100));
    }
    rm.unmount();
}

#[test]
fn follow_embedded_two_processes() {
    let env = Env::on(Backend::Embedded).unwrap();
    let mut reader = Env::new();
    // The same data directory and catalog: a second process of the same host.
    reader.backend = vec![(
        "QUACKFS_HOME".to_string(),
        env.home().to_string_lossy().to_string(),
    )];
    follow(env, reader);
}

#[test]
fn follow_pgs3_two_hosts() {
    let Some(a) = Env::on(Backend::PgS3) else {
        return;
    };
    let mut b = Env::new();
    b.backend = a.backend.clone();
    follow(a, b);
}

#[test]
fn follow_needs_a_branch() {
    let env = Env::new();
    env.ok(&["init", "db"]);
    env.ok(&["tag", "v1"]);
    let dir = env.path("m");
    std::fs::create_dir_all(&dir).unwrap();
    let dir = dir.to_str().unwrap();
    for (args, want) in [
        (&["db@v1", dir, "--follow"][..], "--follow follows a branch"),
        (&["db", dir, "--follow-interval", "1s"][..], "--follow"),
        // An interval of 0 polled the catalog without pause.
        (
            &["db", dir, "--follow", "--follow-interval", "0s"][..],
            "at least 10ms",
        ),
    ] {
        let e = env.fails_with(2, &[&["mount"][..], args].concat());
        assert!(e.contains(want), "{args:?}: {e}");
    }
}

#[test]
fn follow_pgs3_is_woken_by_notify() {
    let Some(a) = Env::on(Backend::PgS3) else {
        return;
    };
    let mut b = Env::new();
    b.backend = a.backend.clone();
    a.ok(&["init", "db"]);
    let w = a.path("w");
    let wm = a.mount("db@main", &w, &[]);
    let wdb = w.join("db.duckdb");
    duckdb(&wdb, "CREATE TABLE t(i BIGINT); CHECKPOINT");
    // Polling once a minute: only PostgreSQL's notification can bring the commits in time.
    let r = b.path("r");
    let rm = b.mount("db@main", &r, &["--follow", "--follow-interval", "60s"]);
    let rdb = r.join("db.duckdb");
    assert_eq!(observe(&rdb), Some((0, true)));
    for n in 0..3 {
        duckdb(&wdb, &format!("INSERT INTO t VALUES ({n}); CHECKPOINT"));
        wait_for_rows(&rdb, n + 1);
    }
    rm.unmount();
    wm.unmount();
}

/// A follower whose branch is deleted keeps serving its commit, says so once in its log (not at
/// every poll), and follows again once the branch is back.
#[test]
fn a_follower_of_a_deleted_branch_keeps_serving_and_logs_it_once() {
    let env = Env::new();
    std::fs::write(env.path("f.bin"), vec![7u8; 100_000]).unwrap();
    env.ok(&["init", "db", "--import", "f.bin"]);
    env.ok(&["branch", "feat"]);
    let r = env.path("r");
    let rm = env.mount_with(
        &["-v"],
        "db@feat",
        &r,
        &["--follow", "--follow-interval", "50ms"],
    );
    env.ok(&["branch", "-d", "feat"]);
    // Some 30 polls.
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(std::fs::read(r.join("f.bin")).unwrap(), vec![7u8; 100_000]);
    let said = |what: &str| {
        std::fs::read_to_string(env.mount_log(&r))
            .unwrap()
            .lines()
            .filter(|l| l.contains(what))
            .count()
    };
    assert_eq!(said("branch \"feat\" does not exist"), 1);
    // Back, at another commit: followed again.
    std::fs::write(env.path("f.bin"), vec![8u8; 100_000]).unwrap();
    env.ok(&["import", "f.bin"]);
    env.ok(&["branch", "feat", "main"]);
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::fs::read(r.join("f.bin")).unwrap() != vec![8u8; 100_000] {
        assert!(
            Instant::now() < deadline,
            "the follower did not follow again"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(said("resolved; following again"), 1);
    assert_eq!(said("branch \"feat\" does not exist"), 1);
    rm.unmount();
}

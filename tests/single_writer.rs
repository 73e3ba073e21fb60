//! One writer per branch, for every command: while a writable mount holds a branch, or while the
//! branch has synced-but-uncommitted changes, nothing else moves or deletes it (import, reset,
//! branch -d, drop), checked in the catalog transaction that would move it; `commit` from another
//! process stays allowed. A dead writer (kill -9 on this host) or a stale one (heartbeat stopped,
//! any host) does not block the branch, and a stale writer is fenced when a command takes it over.

mod common;
use common::{duckdb, duckdb_raw, Env};
use std::path::Path;
use std::time::{Duration, Instant};

/// Exit code of a command refused because a branch is held or has pending changes.
const REFUSED: i32 = 3;

/// Runs quackfs expecting a refusal: exit code, one `error:` line mentioning `needle`, and a hint.
fn refused(env: &Env, args: &[&str], needle: &str) -> String {
    let out = env.cmd().args(args).output().expect("run quackfs");
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    assert_eq!(
        out.status.code(),
        Some(REFUSED),
        "quackfs {args:?} should be refused: {stderr}"
    );
    assert!(stderr.starts_with("error: "), "{stderr}");
    assert!(stderr.contains(needle), "quackfs {args:?}: {stderr}");
    assert!(stderr.contains("\nhint: "), "no hint: {stderr}");
    stderr
}

fn head(env: &Env, repo: &str) -> String {
    let log: serde_json::Value =
        serde_json::from_str(&env.ok(&["-r", repo, "log", "--json", "-n", "1"])).unwrap();
    log[0]["id"].as_str().unwrap().to_string()
}

/// A database `s` whose main has an import on top of init, and a second branch `side`.
fn setup(env: &Env) {
    let src = env.path("s.duckdb");
    duckdb(
        &src,
        "CREATE TABLE t AS SELECT range AS id FROM range(1000); CHECKPOINT",
    );
    env.ok(&["init", "s", "--import", src.to_str().unwrap()]);
    env.ok(&["-r", "s", "branch", "side"]);
    let other = env.path("other/s.duckdb");
    std::fs::create_dir_all(other.parent().unwrap()).unwrap();
    duckdb(
        &other,
        "CREATE TABLE t AS SELECT range AS id FROM range(5); CHECKPOINT",
    );
}

fn count(db: &Path) -> String {
    let out = duckdb_raw(db, "SELECT count(*) FROM t", &["-readonly"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// Every branch-moving command is refused while a mount holds the branch, from this host and
/// (PostgreSQL + S3) from another host sharing the backends; then refused for the pending
/// changes the mount left; then allowed once they are committed, and the head opens in DuckDB.
fn commands_respect_the_writer(env: Env) {
    setup(&env);
    let other = env.path("other/s.duckdb");
    let other = other.to_str().unwrap();
    let before = head(&env, "s");
    let mnt = env.path("mnt");
    let m = env.mount("s", &mnt, &["--autocommit", "off"]);
    // A second host (its own data dir) sharing the catalog and store, when there is one.
    let hosts: Vec<Env> = if env.backend.is_empty() {
        vec![]
    } else {
        let mut b = Env::new();
        b.backend = env.backend.clone();
        vec![b]
    };
    for h in std::iter::once(&env).chain(hosts.iter()) {
        refused(
            h,
            &["-r", "s", "import", other],
            "mounted writable by host=",
        );
        refused(
            h,
            &["-r", "s", "import", other, "-b", "main"],
            "mounted writable",
        );
        refused(
            h,
            &["-r", "s", "reset", "main", "main~1"],
            "mounted writable",
        );
        refused(h, &["-r", "s", "branch", "-d", "main"], "mounted writable");
        let e = refused(h, &["drop", "s", "--yes"], "mounted writable");
        assert!(e.contains("umount"), "{e}");
        // Another branch is not held.
        h.ok(&["-r", "s", "import", other, "-b", "side"]);
    }
    // Commit from another process stays allowed (it seals what the mount registered).
    env.ok(&["-r", "s", "commit", "--allow-empty", "-m", "from outside"]);
    assert_ne!(head(&env, "s"), before);

    // Changes synced through DuckDB but not committed (no checkpoint, autocommit off).
    duckdb(
        &mnt.join("s.duckdb"),
        "PRAGMA disable_checkpoint_on_shutdown; INSERT INTO t SELECT range + 5000 FROM range(10)",
    );
    m.unmount();
    for h in std::iter::once(&env).chain(hosts.iter()) {
        refused(
            h,
            &["-r", "s", "import", other],
            "synced changes that are not committed",
        );
        refused(h, &["-r", "s", "reset", "main", "main~1"], "not committed");
        let e = refused(h, &["-r", "s", "branch", "-d", "main"], "not committed");
        assert!(e.contains("quackfs commit -b main"), "{e}");
    }
    env.ok(&["-r", "s", "commit", "-m", "seal"]);
    let sealed = env.path("sealed");
    env.ok(&["export", "s@main", sealed.to_str().unwrap()]);
    assert_eq!(count(&sealed.join("s.duckdb")), "1010");
    // Now the import is accepted, and its head opens in DuckDB.
    env.ok(&["-r", "s", "import", other, "-m", "replace"]);
    let out = env.path("out");
    env.ok(&["export", "s@main", out.to_str().unwrap()]);
    assert_eq!(count(&out.join("s.duckdb")), "5");
    env.ok(&["-r", "s", "reset", "main", "main~1"]);
    let out2 = env.path("out2");
    env.ok(&["export", "s@main", out2.to_str().unwrap()]);
    assert_eq!(count(&out2.join("s.duckdb")), "1010");

    // A local database whose WAL holds transactions is not imported without it.
    let local = env.path("walled/s.duckdb");
    std::fs::create_dir_all(local.parent().unwrap()).unwrap();
    duckdb(
        &local,
        "CREATE TABLE t AS SELECT range AS id FROM range(7); CHECKPOINT",
    );
    duckdb(
        &local,
        "PRAGMA disable_checkpoint_on_shutdown; INSERT INTO t VALUES (100), (101)",
    );
    let wal = env.path("walled/s.duckdb.wal");
    let out = env
        .cmd()
        .args(["-r", "s", "import", local.to_str().unwrap()])
        .output()
        .unwrap();
    let e = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && e.contains("import both"), "{e}");
    env.ok(&[
        "-r",
        "s",
        "import",
        local.to_str().unwrap(),
        wal.to_str().unwrap(),
    ]);
    let out3 = env.path("out3");
    env.ok(&["export", "s@main", out3.to_str().unwrap()]);
    assert_eq!(count(&out3.join("s.duckdb")), "9");
}

on_both_backends!(
    commands_respect_the_writer_embedded,
    commands_respect_the_writer_pgs3,
    commands_respect_the_writer
);

/// A writer killed with -9 on this host does not block reset, branch -d or drop (the mount
/// itself already took such branches over).
fn a_dead_writer_does_not_block(env: Env) {
    setup(&env);
    env.ok(&["-r", "s", "branch", "third"]);
    let mounts: Vec<_> = ["main", "side", "third"]
        .iter()
        .map(|b| {
            let dir = env.path(&format!("mnt-{b}"));
            (env.mount(&format!("s@{b}"), &dir, &[]), dir)
        })
        .collect();
    let t0 = Instant::now();
    for (m, _dir) in mounts {
        m.crash();
    }
    // status says so, and that the next mount takes the branch over.
    let st: serde_json::Value =
        serde_json::from_str(&env.ok(&["-r", "s", "status", "--json"])).unwrap();
    let gone: Vec<_> = st["mounts"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| m["process_gone"] == true)
        .map(|m| m["branch"].as_str().unwrap())
        .collect();
    assert_eq!(gone.len(), 3, "{st}");
    let text = env.ok(&["-r", "s", "status"]);
    assert!(
        text.contains("its process is gone: the next mount of main takes the branch over"),
        "{text}"
    );
    // Within the leases' 10 s, so only the pid check can let these through.
    env.ok(&["-r", "s", "reset", "main", "main~1"]);
    env.ok(&["-r", "s", "branch", "-d", "side"]);
    env.ok(&["drop", "s", "--yes"]);
    assert!(
        t0.elapsed() < Duration::from_secs(8),
        "the dead holders' leases were not stale yet; the commands must not have waited"
    );
}

on_both_backends!(
    a_dead_writer_does_not_block_embedded,
    a_dead_writer_does_not_block_pgs3,
    a_dead_writer_does_not_block
);

/// A writer on another host whose heartbeat stopped (SIGSTOP) for longer than the lease's 10 s:
/// a reset from this host goes through and fences it; when it wakes up, its writes fail and
/// reach nothing.
#[test]
fn a_stale_writer_on_another_host_is_fenced_by_a_reset() {
    let Some(a) = Env::on(common::Backend::PgS3) else {
        return;
    };
    setup(&a);
    let mut b = Env::new();
    b.backend = a.backend.clone();
    let mnt = a.path("mnt");
    let m = a.mount("s", &mnt, &[]);
    let pid = m.pid() as i32;
    let db = mnt.join("s.duckdb");
    // SAFETY: stopping our own child; SIGCONT below (and the Mount's drop kills it anyway).
    unsafe { libc::kill(pid, libc::SIGSTOP) };
    struct Cont(i32);
    impl Drop for Cont {
        fn drop(&mut self) {
            // SAFETY: our own child.
            unsafe { libc::kill(self.0, libc::SIGCONT) };
        }
    }
    let cont = Cont(pid);
    refused(
        &b,
        &["-r", "s", "reset", "main", "main~1"],
        "mounted writable",
    );
    std::thread::sleep(Duration::from_secs(11));
    b.ok(&["-r", "s", "reset", "main", "main~1"]);
    let reset_to = head(&b, "s");
    drop(cont);
    // The woken writer is fenced: DuckDB's commit fails, nothing reaches the branch.
    let out = duckdb_raw(&db, "INSERT INTO t VALUES (-1)", &[]);
    assert!(
        !out.status.success(),
        "a fenced writer's transaction succeeded"
    );
    assert_eq!(head(&b, "s"), reset_to);
    let st = b.ok(&["-r", "s", "status"]);
    assert!(st.contains("nothing synced"), "{st}");
    drop(m);
}

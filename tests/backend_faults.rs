//! The production backends under faults, through real mounts and the real duckdb CLI: S3 going
//! away during DuckDB writes, a PostgreSQL restart, a stale writer fenced by a takeover, and
//! credentials kept out of every output.
//!
//! Each test starts its own PostgreSQL + SeaweedFS (`scripts/services.sh up` in a temporary
//! directory, torn down with `--purge` when the test ends), so stopping a service never disturbs
//! another test. Without the server binaries the tests are skipped, except under CI (`CI` set),
//! where they fail.

mod common;

use common::{duckdb, listing, Env, Mount};
use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

const SERVICES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/services.sh");

/// Rows each test transaction inserts (all with the transaction's number).
const ROWS_PER_TXN: u64 = 200;

fn tag() -> String {
    uuid::Uuid::new_v4().simple().to_string()[..12].to_string()
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

// ------------------------------------------------------------------------------------------------
// A private PostgreSQL + S3 for one test.

/// `scripts/services.sh` instance of one test; dropping it runs `down --purge`.
struct Services {
    dir: PathBuf,
    vars: BTreeMap<String, String>,
    /// Key prefix of this test in the bucket.
    prefix: String,
}

impl Services {
    /// Starts the services, or returns None (skip) when their binaries are missing outside CI.
    fn up(test: &str) -> Option<Services> {
        let dir = tempfile::Builder::new()
            .prefix("qfs-bf-")
            .tempdir_in("/tmp")
            .expect("tempdir")
            .keep();
        // The guard exists before the start, so a half start is cleaned up too.
        let mut svc = Services {
            dir,
            vars: BTreeMap::new(),
            prefix: format!("bf-{}", tag()),
        };
        let started = Instant::now();
        let out = svc.script("up");
        if !out.status.success() {
            let why = String::from_utf8_lossy(&out.stderr).to_string();
            let missing = why.contains("not found") || why.contains("no 'postgres' user");
            if missing && std::env::var_os("CI").is_none() {
                eprintln!("skipping {test}: cannot start PostgreSQL + SeaweedFS:\n{why}");
                return None;
            }
            panic!("{test}: scripts/services.sh up failed:\n{why}");
        }
        svc.read_env();
        eprintln!(
            "{test}: services up in {:.1?} (PostgreSQL :{}, S3 {})",
            started.elapsed(),
            svc.var("QUACKFS_SERVICES_PG_PORT"),
            svc.var("AWS_ENDPOINT_URL")
        );
        Some(svc)
    }

    fn script(&self, cmd: &str) -> Output {
        Command::new("bash")
            .arg(SERVICES)
            .arg(cmd)
            .arg(&self.dir)
            .env_remove("QUACKFS_SERVICES_DIR")
            .stdin(Stdio::null())
            .output()
            .expect("run scripts/services.sh")
    }

    /// `down --purge`: stops both services and deletes the directory.
    fn script_purge(&self) -> Output {
        Command::new("bash")
            .arg(SERVICES)
            .args(["down", "--purge"])
            .arg(&self.dir)
            .env_remove("QUACKFS_SERVICES_DIR")
            .stdin(Stdio::null())
            .output()
            .expect("run scripts/services.sh")
    }

    /// Reads DIR/env (rewritten by every `up`: the pids change on a restart).
    fn read_env(&mut self) {
        let env = std::fs::read_to_string(self.dir.join("env")).expect("services env file");
        self.vars = env
            .lines()
            .filter_map(|l| l.strip_prefix("export "))
            .filter_map(|l| l.split_once('='))
            .map(|(k, v)| (k.to_string(), v.trim_matches('\'').to_string()))
            .collect();
    }

    fn var(&self, k: &str) -> String {
        self.vars
            .get(k)
            .cloned()
            .unwrap_or_else(|| panic!("{k} missing from {}/env", self.dir.display()))
    }

    fn pg_url(&self) -> String {
        self.var("QUACKFS_TEST_PG_URL")
    }

    fn store_url(&self) -> String {
        format!(
            "s3://{}/{}",
            self.var("QUACKFS_TEST_S3_BUCKET"),
            self.prefix
        )
    }

    /// `--catalog PG --store S3`.
    fn global(&self) -> Vec<String> {
        vec![
            "--catalog".into(),
            self.pg_url(),
            "--store".into(),
            self.store_url(),
        ]
    }

    /// The S3 variables for quackfs processes, plus `extra`.
    fn envs(&self, extra: &[(&str, &str)]) -> Vec<(String, String)> {
        let mut v: Vec<(String, String)> = [
            "AWS_ENDPOINT_URL",
            "AWS_ACCESS_KEY_ID",
            "AWS_SECRET_ACCESS_KEY",
            "AWS_REGION",
            "AWS_EC2_METADATA_DISABLED",
        ]
        .iter()
        .map(|k| (k.to_string(), self.var(k)))
        .collect();
        // Takes precedence over AWS_ENDPOINT_URL: never let an outer one win.
        v.push(("AWS_ENDPOINT_URL_S3".into(), self.var("AWS_ENDPOINT_URL")));
        v.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        v
    }

    fn weed_pid(&self) -> i32 {
        self.var("QUACKFS_SERVICES_S3_PID").parse().unwrap()
    }

    fn pg_pid(&self) -> i32 {
        let pidfile = std::fs::read_to_string(self.dir.join("pg/postmaster.pid")).unwrap();
        pidfile.lines().next().unwrap().trim().parse().unwrap()
    }

    /// Kills SeaweedFS outright (SIGKILL) and waits until it is gone.
    fn kill_weed(&self) {
        let pid = self.weed_pid();
        // SAFETY: the pid of the weed process this test started.
        unsafe { libc::kill(pid, libc::SIGKILL) };
        wait_gone(pid, "weed");
    }

    /// Stops PostgreSQL the way `pg_ctl stop -m fast` does (SIGINT to the postmaster: clients
    /// are disconnected, the server shuts down cleanly) and waits until it is gone.
    fn stop_pg(&self) {
        let pid = self.pg_pid();
        // SAFETY: the postmaster this test started.
        unsafe { libc::kill(pid, libc::SIGINT) };
        wait_gone(pid, "postgres");
    }

    /// Starts again whatever is down, on the same ports and data directories.
    fn restart(&mut self) -> Duration {
        let started = Instant::now();
        let out = self.script("up");
        assert!(
            out.status.success(),
            "services.sh up (restart) failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let before = self.pg_url();
        self.read_env();
        assert_eq!(
            self.pg_url(),
            before,
            "the restart changed the PostgreSQL URL"
        );
        started.elapsed()
    }

    /// Runs SQL as the PostgreSQL superuser (trust authentication on loopback).
    fn psql_admin(&self, sql: &str) {
        let url = format!(
            "postgres://postgres@127.0.0.1:{}/postgres",
            self.var("QUACKFS_SERVICES_PG_PORT")
        );
        let out = Command::new(pg_tool("psql"))
            .args(["-X", "-q", "-v", "ON_ERROR_STOP=1", &url, "-c", sql])
            .stdin(Stdio::null())
            .output()
            .expect("run psql");
        assert!(out.status.success(), "psql {sql}: {}", text(&out));
    }
}

impl Drop for Services {
    fn drop(&mut self) {
        let out = self.script_purge();
        if !out.status.success() {
            eprintln!(
                "services.sh down failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A PostgreSQL client tool: from the newest /usr/lib/postgresql/*/bin (as services.sh picks
/// its server), else from PATH.
fn pg_tool(name: &str) -> PathBuf {
    let mut dirs: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let v = e.file_name().to_string_lossy().parse().ok()?;
            Some((v, e.path().join("bin").join(name)))
        })
        .filter(|(_, p)| p.is_file())
        .collect();
    dirs.sort();
    dirs.pop()
        .map(|(_, p)| p)
        .unwrap_or_else(|| PathBuf::from(name))
}

fn wait_gone(pid: i32, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    // A dead child of the script is reparented (and reaped) by init; a zombie counts as gone.
    while quackfs::process::is_running(pid) {
        assert!(Instant::now() < deadline, "{what} (pid {pid}) did not exit");
        std::thread::sleep(Duration::from_millis(20));
    }
}

// ------------------------------------------------------------------------------------------------
// quackfs against the services.

struct Qfs<'a> {
    env: &'a Env,
    global: Vec<String>,
    envs: Vec<(String, String)>,
}

impl<'a> Qfs<'a> {
    fn new(env: &'a Env, svc: &Services, extra: &[(&str, &str)]) -> Qfs<'a> {
        Qfs {
            env,
            global: svc.global(),
            envs: svc.envs(extra),
        }
    }

    fn envs(&self) -> Vec<(&str, &str)> {
        self.envs
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect()
    }

    fn global(&self) -> Vec<&str> {
        self.global.iter().map(String::as_str).collect()
    }

    fn run(&self, args: &[&str]) -> Output {
        self.env
            .cmd_env(&self.envs())
            .args(self.global())
            .args(args)
            .output()
            .expect("run quackfs")
    }

    fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(out.status.success(), "quackfs {args:?}: {}", text(&out));
        String::from_utf8_lossy(&out.stdout).to_string()
    }

    fn mount(&self, rev: &str, dir: &Path, extra: &[&str]) -> Mount {
        self.env
            .mount_env(&self.envs(), &self.global(), rev, dir, extra)
    }

    fn try_mount(&self, rev: &str, dir: &Path, extra: &[&str]) -> Result<Mount, String> {
        self.env
            .try_mount_env(&self.envs(), &self.global(), rev, dir, extra)
    }
}

/// Detaches the dead mount a crashed mount process left behind.
fn detach(dir: &Path) {
    let c = std::ffi::CString::new(dir.as_os_str().as_encoded_bytes()).unwrap();
    // SAFETY: valid NUL-terminated path.
    unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) };
}

/// What the mount process has logged so far (for failure messages).
fn log_of(env: &Env, m: &Mount) -> String {
    std::fs::read_to_string(env.mount_log(&m.dir)).unwrap_or_default()
}

fn assert_alive(m: &mut Mount, env: &Env, what: &str) {
    let status = m.child.as_mut().unwrap().try_wait().unwrap();
    assert!(
        status.is_none() && common::is_mounted(&m.dir),
        "the mount process died {what} ({status:?}): {}",
        log_of(env, m)
    );
}

// ------------------------------------------------------------------------------------------------
// A long-lived duckdb CLI session (so that a commit needs no reads, only the WAL fsync).

struct Duck {
    child: std::process::Child,
    stdin: Option<std::process::ChildStdin>,
    lines: mpsc::Receiver<String>,
    err_path: PathBuf,
    err_seen: usize,
    seq: u64,
}

impl Duck {
    fn open(db: &Path, err_path: PathBuf) -> Duck {
        let err = std::fs::File::create(&err_path).unwrap();
        let mut child = Command::new(common::duckdb_bin())
            .args(["-csv", "-noheader"])
            .arg(db)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(err)
            .spawn()
            .expect("start duckdb");
        let stdout = child.stdout.take().unwrap();
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Duck {
            stdin: child.stdin.take(),
            child,
            lines,
            err_path,
            err_seen: 0,
            seq: 0,
        }
    }

    fn new_stderr(&mut self) -> String {
        let all = std::fs::read_to_string(&self.err_path).unwrap_or_default();
        let new = all.get(self.err_seen..).unwrap_or("").to_string();
        self.err_seen = all.len();
        new
    }

    /// Runs `sql`; Ok(time) once it completed, Err((message, time)) once DuckDB reported an
    /// error. Panics if neither happens within `limit`.
    fn exec(&mut self, sql: &str, limit: Duration) -> Result<Duration, (String, Duration)> {
        self.seq += 1;
        let marker = format!("done-{}", self.seq);
        let started = Instant::now();
        let stdin = self.stdin.as_mut().expect("session closed");
        if let Err(e) = writeln!(stdin, "{sql};\nSELECT '{marker}';").and_then(|_| stdin.flush()) {
            return Err((format!("duckdb stdin: {e}"), started.elapsed()));
        }
        loop {
            match self.lines.recv_timeout(Duration::from_millis(25)) {
                Ok(l) if l.trim() == marker => return Ok(started.elapsed()),
                Ok(_) => continue,
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    let took = started.elapsed();
                    std::thread::sleep(Duration::from_millis(100));
                    return Err((format!("duckdb exited: {}", self.new_stderr()), took));
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {}
            }
            let err = self.new_stderr();
            if !err.is_empty() {
                let took = started.elapsed();
                std::thread::sleep(Duration::from_millis(200));
                return Err((err + &self.new_stderr(), took));
            }
            assert!(
                started.elapsed() < limit,
                "duckdb neither finished nor failed within {limit:?}: {sql}"
            );
        }
    }

    /// Ends the session (EOF); returns how long DuckDB took to exit.
    fn close(mut self, limit: Duration) -> Duration {
        let started = Instant::now();
        self.stdin.take();
        loop {
            if self.child.try_wait().unwrap().is_some() {
                return started.elapsed();
            }
            assert!(
                started.elapsed() < limit,
                "duckdb did not exit within {limit:?} of the end of its input"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Duck {
    fn drop(&mut self) {
        self.stdin.take();
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn insert_sql(k: u64) -> String {
    format!("INSERT INTO t SELECT {k}, repeat('x', 200) FROM range({ROWS_PER_TXN})")
}

/// Rows per transaction number in `db` (read with a one-shot duckdb).
fn txn_rows(db: &Path) -> BTreeMap<u64, u64> {
    let out = duckdb(db, "SELECT k, count(*) FROM t GROUP BY k ORDER BY k");
    out.lines()
        .filter(|l| !l.is_empty())
        .map(|l| {
            let (k, n) = l.split_once(',').unwrap();
            (k.parse().unwrap(), n.parse().unwrap())
        })
        .collect()
}

/// Every committed transaction is there in full; nothing else but (whole) uncertain ones.
fn assert_durable(rows: &BTreeMap<u64, u64>, committed: &BTreeSet<u64>, uncertain: &BTreeSet<u64>) {
    for k in committed {
        assert_eq!(
            rows.get(k),
            Some(&ROWS_PER_TXN),
            "committed transaction {k} lost: {rows:?}"
        );
    }
    for (k, n) in rows {
        assert!(
            committed.contains(k) || uncertain.contains(k),
            "transaction {k} was never run: {rows:?}"
        );
        assert_eq!(*n, ROWS_PER_TXN, "transaction {k} is torn: {rows:?}");
    }
}

// ------------------------------------------------------------------------------------------------
// 1. S3 goes away during DuckDB writes.

#[test]
fn s3_outage_fails_fsync_in_bounded_time_and_loses_nothing_committed() {
    let test = "s3_outage";
    let Some(mut svc) = Services::up(test) else {
        return;
    };
    let t0 = Instant::now();
    let env = Env::new();
    // Every sync through the store here (no layer kept in the catalog): the upload path.
    let q = Qfs::new(
        &env,
        &svc,
        &[
            ("QUACKFS_S3_RETRY_TIMEOUT", "5s"),
            ("QUACKFS_CONNECT_TIMEOUT", "10s"),
            ("QUACKFS_INLINE_MAX", "0"),
        ],
    );
    q.ok(&["init", "shop"]);
    let mnt1 = env.path("mnt1");
    let mut m = q.mount("shop@main", &mnt1, &[]);
    let db = m.dir.join("shop.duckdb");

    let mut committed = BTreeSet::new();
    let mut uncertain = BTreeSet::new();
    let mut duck = Duck::open(&db, env.path("duck1.err"));
    duck.exec(
        "CREATE TABLE t (k BIGINT, payload VARCHAR)",
        Duration::from_secs(60),
    )
    .expect("create table");
    for k in 1..=5 {
        duck.exec(&insert_sql(k), Duration::from_secs(60))
            .unwrap_or_else(|e| panic!("insert {k}: {e:?}"));
        committed.insert(k);
    }

    svc.kill_weed();
    let (err, took) = duck
        .exec(&insert_sql(6), Duration::from_secs(90))
        .expect_err("a commit while S3 is down must fail");
    uncertain.insert(6);
    eprintln!(
        "{test}: commit with S3 down failed after {took:.1?}: {}",
        err.trim()
    );
    assert!(
        err.to_lowercase().contains("error"),
        "DuckDB should report an error: {err}"
    );
    assert!(
        took < Duration::from_secs(5 + 10),
        "fsync with S3 down should fail after the 5 s retry timeout, took {took:?}"
    );
    assert_alive(&mut m, &env, "while S3 was down");
    let log = std::fs::read_to_string(env.mount_log(&m.dir)).unwrap();
    assert!(log.contains("QUACKFS_S3_RETRY_TIMEOUT"), "{log}");
    let closed = duck.close(Duration::from_secs(60));
    eprintln!("{test}: the failed DuckDB session exited {closed:.1?} after its input ended");
    assert_alive(&mut m, &env, "after the failed DuckDB session");

    let restart = svc.restart();
    eprintln!("{test}: SeaweedFS restarted in {restart:.1?}");
    // The same mount works again once S3 is back.
    let mut duck = Duck::open(&db, env.path("duck2.err"));
    for k in 7..=8 {
        duck.exec(&insert_sql(k), Duration::from_secs(60))
            .unwrap_or_else(|e| panic!("insert {k} after S3 came back: {e:?}"));
        committed.insert(k);
    }
    duck.close(Duration::from_secs(60));
    assert_alive(&mut m, &env, "after S3 came back");

    // Only what was registered survives a crash: all of it must be there.
    m.crash();
    detach(&mnt1);
    let m2 = q.mount("shop@main", &env.path("mnt2"), &[]);
    let rows = txn_rows(&m2.dir.join("shop.duckdb"));
    eprintln!("{test}: after crash and remount: {rows:?}");
    assert_durable(&rows, &committed, &uncertain);
    m2.unmount();
    eprintln!("{test}: {:.1?}", t0.elapsed());
}

/// With the default settings small commits (kept in the catalog) go on while S3 is down, and
/// are all there after S3 is back and the branch is mounted again.
#[test]
fn small_commits_go_on_while_s3_is_down() {
    let test = "s3_down_small_commits";
    let Some(mut svc) = Services::up(test) else {
        return;
    };
    let env = Env::new();
    let q = Qfs::new(&env, &svc, &[("QUACKFS_S3_RETRY_TIMEOUT", "5s")]);
    q.ok(&["init", "shop"]);
    let mnt = env.path("mnt");
    let mut m = q.mount("shop@main", &mnt, &[]);
    let db = m.dir.join("shop.duckdb");
    let mut duck = Duck::open(&db, env.path("duck.err"));
    duck.exec(
        "CREATE TABLE t (k BIGINT, payload VARCHAR)",
        Duration::from_secs(60),
    )
    .expect("create table");
    svc.kill_weed();
    let mut committed = BTreeSet::new();
    for k in 1..=20 {
        let took = duck
            .exec(&insert_sql(k), Duration::from_secs(60))
            .unwrap_or_else(|e| panic!("insert {k} with S3 down: {e:?}"));
        assert!(took < Duration::from_secs(2), "insert {k} took {took:?}");
        committed.insert(k);
    }
    assert_alive(&mut m, &env, "while S3 was down");
    duck.close(Duration::from_secs(60));
    svc.restart();
    m.unmount();
    let m2 = q.mount("shop@main", &env.path("mnt2"), &[]);
    let rows = txn_rows(&m2.dir.join("shop.duckdb"));
    assert_durable(&rows, &committed, &BTreeSet::new());
    m2.unmount();
}

/// A query on a second host (cold caches, read-only mount) while S3 is down: it fails in
/// bounded time with DuckDB's error, never hangs and never answers wrong rows; the mount lives
/// on, and once S3 is back the same mount answers right. S3 goes away before a query, then at a
/// random moment of one (while windows of the table are on their way from S3).
#[test]
fn cold_reads_while_s3_is_down_fail_in_bounded_time_and_recover() {
    let test = "s3_down_cold_reads";
    let Some(mut svc) = Services::up(test) else {
        return;
    };
    const ROWS: u64 = 3_000_000;
    const QUERY: &str = "SELECT count(*), sum(k), count(DISTINCT payload) FROM t";
    let right = format!("{ROWS},{},{ROWS}", ROWS * (ROWS - 1) / 2);
    let retry = [("QUACKFS_S3_RETRY_TIMEOUT", "5s")];
    let a = Env::new();
    let qa = Qfs::new(&a, &svc, &retry);
    qa.ok(&["init", "shop"]);
    let ma = qa.mount("shop@main", &a.path("mnt"), &[]);
    duckdb(
        &ma.dir.join("shop.duckdb"),
        &format!(
            "CREATE TABLE t AS SELECT range AS k, md5(range::VARCHAR) AS payload \
             FROM range({ROWS}); CHECKPOINT"
        ),
    );
    ma.unmount();

    // The query by a one-shot duckdb CLI, bounded: Ok(rows) or Err(DuckDB's error).
    let query = |db: &Path| {
        let (tx, rx) = mpsc::channel();
        let db = db.to_path_buf();
        let started = Instant::now();
        std::thread::spawn(move || {
            let _ = tx.send(common::duckdb_raw(&db, QUERY, &["-readonly"]));
        });
        let out = rx
            .recv_timeout(Duration::from_secs(60))
            .expect("the query neither answered nor failed within 60 s");
        let took = started.elapsed();
        let r = if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
        } else {
            Err(String::from_utf8_lossy(&out.stderr).trim().to_string())
        };
        (r, took)
    };

    for (round, delay) in [
        ("S3 down before the query", None),
        (
            "S3 down during the query",
            Some(Duration::from_millis(
                u64::from(
                    std::time::SystemTime::now()
                        .duration_since(std::time::UNIX_EPOCH)
                        .unwrap()
                        .subsec_nanos(),
                ) % 400,
            )),
        ),
    ] {
        let b = Env::new();
        let qb = Qfs::new(&b, &svc, &retry);
        let mut mb = qb.mount("shop@main", &b.path("mnt"), &["--read-only"]);
        let db = mb.dir.join("shop.duckdb");
        let (r, took) = match delay {
            None => {
                svc.kill_weed();
                query(&db)
            }
            Some(d) => {
                let (tx, rx) = mpsc::channel();
                let db2 = db.clone();
                std::thread::spawn(move || {
                    let _ = tx.send(query(&db2));
                });
                std::thread::sleep(d);
                svc.kill_weed();
                rx.recv().expect("the query thread")
            }
        };
        eprintln!("{test}: {round} ({delay:?}): {r:?} after {took:.1?}");
        match &r {
            Ok(rows) => assert!(
                delay.is_some() && *rows == right,
                "{round}: answered {rows}, expected an error or {right}"
            ),
            Err(e) => assert!(e.contains("Error"), "{round}: {e}"),
        }
        // (Here about 15 s: a few reads in a row, each given up after the 5 s retry timeout.)
        assert!(took < Duration::from_secs(40), "{round}: took {took:?}");
        assert_alive(&mut mb, &b, round);
        svc.restart();
        let (again, _) = query(&db);
        assert_eq!(
            again.as_deref(),
            Ok(right.as_str()),
            "{round}: once S3 is back"
        );
        mb.unmount();
    }
}

// ------------------------------------------------------------------------------------------------
// 2. PostgreSQL restarts under a mount.

#[test]
fn pg_restart_fails_syncs_cleanly_and_the_mount_recovers() {
    let test = "pg_restart";
    let Some(mut svc) = Services::up(test) else {
        return;
    };
    let t0 = Instant::now();
    let env = Env::new();
    let q = Qfs::new(
        &env,
        &svc,
        &[
            ("QUACKFS_S3_RETRY_TIMEOUT", "5s"),
            ("QUACKFS_CONNECT_TIMEOUT", "3s"),
        ],
    );
    q.ok(&["init", "shop"]);
    let mnt1 = env.path("mnt1");
    let mut m = q.mount("shop@main", &mnt1, &[]);
    let db = m.dir.join("shop.duckdb");

    let mut committed = BTreeSet::new();
    let mut uncertain = BTreeSet::new();
    let mut duck = Duck::open(&db, env.path("duck1.err"));
    duck.exec(
        "CREATE TABLE t (k BIGINT, payload VARCHAR)",
        Duration::from_secs(60),
    )
    .expect("create table");
    for k in 1..=5 {
        duck.exec(&insert_sql(k), Duration::from_secs(60))
            .unwrap_or_else(|e| panic!("insert {k}: {e:?}"));
        committed.insert(k);
    }

    // A long outage: the sync cannot be registered, DuckDB's commit fails within the connect
    // timeout (3 s) instead of hanging.
    svc.stop_pg();
    let (err, took) = duck
        .exec(&insert_sql(6), Duration::from_secs(90))
        .expect_err("a commit while PostgreSQL is down must fail");
    uncertain.insert(6);
    eprintln!(
        "{test}: commit with PostgreSQL down failed after {took:.1?}: {}",
        err.trim()
    );
    assert!(took < Duration::from_secs(3 + 12), "took {took:?}");
    assert_alive(&mut m, &env, "while PostgreSQL was down");
    duck.close(Duration::from_secs(60));
    let restart = svc.restart();
    eprintln!("{test}: PostgreSQL restarted in {restart:.1?}");

    // The same mount registers syncs again.
    let mut duck = Duck::open(&db, env.path("duck2.err"));
    for k in 7..=8 {
        let took = duck
            .exec(&insert_sql(k), Duration::from_secs(60))
            .unwrap_or_else(|e| {
                panic!(
                    "insert {k} after PostgreSQL came back: {e:?}\nmount log:\n{}",
                    log_of(&env, &m)
                )
            });
        eprintln!("{test}: commit {k} after the restart: {took:.1?}");
        committed.insert(k);
    }

    // A quick restart between two commits, with no call in between to find the server gone:
    // the pooled connection of commit 8 died with it, and was put back less than the ping
    // interval (1 s) ago; commit 11 must not fail on it.
    svc.stop_pg();
    let restart = svc.restart();
    let took = duck
        .exec(&insert_sql(11), Duration::from_secs(60))
        .unwrap_or_else(|e| {
            panic!(
                "insert 11 right after a quick restart ({restart:.1?}): {e:?}\nmount log:\n{}",
                log_of(&env, &m)
            )
        });
    eprintln!("{test}: commit 11 right after a quick restart ({restart:.1?}): {took:.1?}");
    committed.insert(11);

    // A quick restart while a commit is under way: it succeeds or fails cleanly.
    svc.stop_pg();
    let restarter = {
        let dir = svc.dir.clone();
        std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(500));
            Command::new("bash")
                .arg(SERVICES)
                .arg("up")
                .arg(dir)
                .stdin(Stdio::null())
                .output()
                .expect("services.sh up")
        })
    };
    let during = duck.exec(&insert_sql(9), Duration::from_secs(90));
    let out = restarter.join().unwrap();
    assert!(out.status.success(), "restart: {}", text(&out));
    svc.read_env();
    match &during {
        Ok(took) => {
            eprintln!("{test}: commit during a quick restart succeeded after {took:.1?}");
            committed.insert(9);
        }
        Err((e, took)) => {
            eprintln!(
                "{test}: commit during a quick restart failed after {took:.1?}: {}",
                e.trim()
            );
            assert!(*took < Duration::from_secs(3 + 12), "took {took:?}");
            uncertain.insert(9);
        }
    }
    duck.close(Duration::from_secs(60));
    let mut duck = Duck::open(&db, env.path("duck3.err"));
    duck.exec(&insert_sql(10), Duration::from_secs(60))
        .unwrap_or_else(|e| {
            panic!(
                "insert 10 after the quick restart: {e:?}\nmount log:\n{}",
                log_of(&env, &m)
            )
        });
    committed.insert(10);
    duck.close(Duration::from_secs(60));
    assert_alive(&mut m, &env, "after the restarts");

    // A clean unmount syncs the rest; a new mount has every committed transaction.
    m.unmount();
    let m2 = q.mount("shop@main", &env.path("mnt2"), &[]);
    let rows = txn_rows(&m2.dir.join("shop.duckdb"));
    eprintln!("{test}: after unmount and remount: {rows:?}");
    assert_durable(&rows, &committed, &uncertain);
    m2.unmount();
    eprintln!("{test}: {:.1?}", t0.elapsed());
}

// ------------------------------------------------------------------------------------------------
// 2b. A namespace change whose registration fails leaves nothing behind.

#[test]
fn failed_namespace_changes_are_rolled_back() {
    let test = "namespace_rollback";
    let Some(mut svc) = Services::up(test) else {
        return;
    };
    let env = Env::new();
    let q = Qfs::new(&env, &svc, &[("QUACKFS_CONNECT_TIMEOUT", "2s")]);
    q.ok(&["init", "ns"]);
    let mnt = env.path("mnt");
    let m = q.mount("ns@main", &mnt, &["--autocommit", "off"]);
    write_and_sync(&mnt.join("a"), b"alpha").unwrap();
    write_and_sync(&mnt.join("b"), b"bravo").unwrap();
    write_and_sync(&mnt.join("w.duckdb.wal"), b"whiskey").unwrap();
    let before = listing(&mnt);
    assert_eq!(before, ["a", "b", "w.duckdb.wal"]);

    svc.stop_pg();
    // Each change fails with an errno (the catalog cannot register it) and leaves no trace.
    let e = std::fs::rename(mnt.join("a"), mnt.join("d")).expect_err("rename");
    assert_eq!(e.raw_os_error(), Some(libc::EIO), "{e}");
    let e = std::fs::rename(mnt.join("a"), mnt.join("b")).expect_err("rename over");
    assert_eq!(e.raw_os_error(), Some(libc::EIO), "{e}");
    let e = std::fs::remove_file(mnt.join("b")).expect_err("unlink");
    assert_eq!(e.raw_os_error(), Some(libc::EIO), "{e}");
    assert_eq!(listing(&mnt), before);
    assert_eq!(std::fs::read(mnt.join("a")).unwrap(), b"alpha");
    assert_eq!(std::fs::read(mnt.join("b")).unwrap(), b"bravo");
    assert!(std::fs::metadata(mnt.join("d")).is_err());
    // A DuckDB WAL's removal (which completes a checkpoint) is acknowledged before it is
    // registered, as a local filesystem makes an unlink durable only with an fsync of the
    // directory: it succeeds, and that fsync is what fails.
    std::fs::remove_file(mnt.join("w.duckdb.wal")).expect("a WAL's removal is acknowledged");
    assert_eq!(listing(&mnt), ["a", "b"]);
    let e = std::fs::File::open(&mnt)
        .and_then(|d| d.sync_all())
        .expect_err("fsync of the directory while PostgreSQL is down");
    assert_eq!(e.raw_os_error(), Some(libc::EIO), "{e}");
    // A create needs no catalog (its name is registered with its first sync, as a local
    // filesystem makes a new name durable); that sync fails, and keeps the bytes for the next.
    let e = write_and_sync(&mnt.join("c"), b"charlie").expect_err("sync while PostgreSQL is down");
    assert_eq!(e.raw_os_error(), Some(libc::EIO), "{e}");
    assert_eq!(listing(&mnt), ["a", "b", "c"]);
    assert_eq!(std::fs::read(mnt.join("c")).unwrap(), b"charlie");

    svc.restart();
    assert_eq!(listing(&mnt), ["a", "b", "c"]);
    // The directory's fsync registers the WAL's removal once the catalog is back.
    std::fs::File::open(&mnt)
        .and_then(|d| d.sync_all())
        .expect("fsync of the directory");
    // The same changes go through once the catalog is back.
    write_and_sync(&mnt.join("c"), b"charlie").unwrap();
    std::fs::rename(mnt.join("a"), mnt.join("d")).unwrap();
    std::fs::remove_file(mnt.join("b")).unwrap();
    assert_eq!(listing(&mnt), ["c", "d"]);
    m.unmount();
    let m = q.mount("ns@main", &mnt, &["--autocommit", "off"]);
    assert_eq!(listing(&mnt), ["c", "d"]);
    assert_eq!(std::fs::read(mnt.join("d")).unwrap(), b"alpha");
    assert_eq!(std::fs::read(mnt.join("c")).unwrap(), b"charlie");
    m.unmount();
}

// ------------------------------------------------------------------------------------------------
// 2c. A WAL's removal is answered before it is registered; a close waits for the registration.

/// A transaction holding the row lock of every ref, as a commit under way holds its branch's:
/// every sync and namespace registration of a mount waits behind it. Rolled back when released
/// (or when dropped: the server ends the transaction with the connection).
struct RefsLocked {
    rt: tokio::runtime::Runtime,
    conn: sqlx::PgConnection,
}

impl RefsLocked {
    fn take(url: &str) -> RefsLocked {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let conn = rt
            .block_on(async {
                use sqlx::Connection;
                let mut c = sqlx::PgConnection::connect(url).await?;
                sqlx::query("BEGIN").execute(&mut c).await?;
                sqlx::query("SELECT 1 FROM refs FOR UPDATE")
                    .execute(&mut c)
                    .await?;
                Ok::<_, sqlx::Error>(c)
            })
            .expect("lock the refs");
        RefsLocked { rt, conn }
    }

    fn release(mut self) {
        self.rt
            .block_on(sqlx::query("ROLLBACK").execute(&mut self.conn))
            .expect("ROLLBACK");
    }
}

#[test]
fn a_wal_removal_is_answered_first_and_a_close_waits_for_its_registration() {
    let test = "wal_removal";
    let Some(svc) = Services::up(test) else {
        return;
    };
    let env = Env::new();
    let q = Qfs::new(&env, &svc, &[]);
    q.ok(&["init", "wr"]);
    let mnt = env.path("mnt");
    let m = q.mount("wr@main", &mnt, &[]);
    write_and_sync(&mnt.join("a"), b"alpha").unwrap();
    write_and_sync(&mnt.join("a.wal"), b"whiskey").unwrap();
    assert_eq!(listing(&mnt), ["a", "a.wal"]);

    // Opened now: only its close is to wait.
    let other = std::fs::File::create(mnt.join("b")).unwrap();
    let locked = RefsLocked::take(&svc.pg_url());
    // The WAL's removal returns although its registration waits behind the lock.
    let wal = mnt.join("a.wal");
    within(Duration::from_secs(20), "the removal of a WAL", move || {
        std::fs::remove_file(wal)
    })
    .expect("remove the WAL");
    assert_eq!(listing(&mnt), ["a", "b"]);
    // A plain file's removal is answered once registered: after the WAL's.
    let plain = {
        let f = mnt.join("a");
        std::thread::spawn(move || std::fs::remove_file(f))
    };
    std::thread::sleep(Duration::from_millis(500));
    assert!(
        !plain.is_finished(),
        "a plain file's removal returned before it was registered"
    );
    // A close (FUSE flush) of any file of the mount waits until it is registered.
    let (closed_tx, closed) = mpsc::channel();
    std::thread::spawn(move || {
        drop(other);
        let _ = closed_tx.send(());
    });
    assert!(
        closed.recv_timeout(Duration::from_secs(1)).is_err(),
        "a close returned while the WAL's removal was not registered yet"
    );
    locked.release();
    closed
        .recv_timeout(Duration::from_secs(30))
        .expect("the close returns once the removal is registered");
    plain.join().unwrap().expect("remove a");
    // Both removals are in the catalog: a fresh mount of the branch has neither file.
    m.unmount();
    let m = q.mount("wr@main", &mnt, &[]);
    assert_eq!(listing(&mnt), ["b"]);
    m.unmount();
}

// ------------------------------------------------------------------------------------------------
// 3. A stale writer is fenced.

/// Sends SIGCONT when dropped, so a failing test never leaves a stopped process behind.
struct Resume(i32);

impl Drop for Resume {
    fn drop(&mut self) {
        // SAFETY: our own mount process.
        unsafe { libc::kill(self.0, libc::SIGCONT) };
    }
}

/// Runs `f` on another thread; panics if it takes longer than `limit` (a hung FUSE call).
fn within<T: Send + 'static>(
    limit: Duration,
    what: &str,
    f: impl FnOnce() -> T + Send + 'static,
) -> T {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    rx.recv_timeout(limit)
        .unwrap_or_else(|_| panic!("{what} did not return within {limit:?}"))
}

fn write_and_sync(path: &Path, data: &[u8]) -> std::io::Result<()> {
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)?;
    f.write_all(data)?;
    f.sync_all()
}

#[test]
fn stale_writer_is_fenced_after_a_takeover() {
    let test = "stale_writer";
    let Some(svc) = Services::up(test) else {
        return;
    };
    let t0 = Instant::now();
    let extra = [
        ("QUACKFS_S3_RETRY_TIMEOUT", "5s"),
        ("QUACKFS_CONNECT_TIMEOUT", "10s"),
    ];
    // Two data directories: two holders, as two hosts would be.
    let env_a = Env::new();
    let env_b = Env::new();
    let qa = Qfs::new(&env_a, &svc, &extra);
    let qb = Qfs::new(&env_b, &svc, &extra);
    qa.ok(&["init", "shop"]);

    let ma = qa.mount("shop@main", &env_a.path("mnt"), &["--autocommit", "off"]);
    let a_dir = ma.dir.clone();
    write_and_sync(&a_dir.join("shared.txt"), b"v1 from A").unwrap();

    // A stops (its heartbeat with it) but stays alive.
    let a_pid = ma.pid() as i32;
    // SAFETY: our own mount process.
    unsafe { libc::kill(a_pid, libc::SIGSTOP) };
    let resume = Resume(a_pid);
    let stopped = Instant::now();

    // B (another holder) is refused while A's lease is fresh, then takes the branch over.
    let b_mnt = env_b.path("mnt");
    let mut refusals = 0;
    let mb = loop {
        match qb.try_mount("shop@main", &b_mnt, &["--autocommit", "off"]) {
            Ok(m) => break m,
            Err(log) => {
                assert!(log.contains("already mounted writable"), "{log}");
                refusals += 1;
                assert!(
                    stopped.elapsed() < Duration::from_secs(30),
                    "B never took over the stale lease: {log}"
                );
                std::thread::sleep(Duration::from_millis(500));
            }
        }
    };
    let takeover = stopped.elapsed();
    eprintln!("{test}: B took over {takeover:.1?} after A stopped ({refusals} refusals)");
    assert!(refusals > 0, "B mounted while A's lease was fresh");
    assert!(
        takeover >= Duration::from_secs(7),
        "B took over a live lease after {takeover:?} (stale after 10 s, heartbeat every 2 s)"
    );
    let b_dir = mb.dir.clone();
    assert_eq!(
        std::fs::read(b_dir.join("shared.txt")).unwrap(),
        b"v1 from A"
    );
    write_and_sync(&b_dir.join("b.txt"), b"from B").unwrap();

    // A wakes up: nothing it writes may reach the branch.
    drop(resume);
    let a = a_dir.clone();
    let (overwrite, create) = within(Duration::from_secs(60), "A's writes", move || {
        let overwrite = write_and_sync(&a.join("shared.txt"), b"A AFTER TAKEOVER");
        let create = write_and_sync(&a.join("a-new.txt"), b"A AFTER TAKEOVER");
        (overwrite, create)
    });
    eprintln!("{test}: A after the takeover: overwrite {overwrite:?}, create {create:?}");
    for (what, r) in [("overwrite+fsync", &overwrite), ("create+fsync", &create)] {
        let e = r.as_ref().expect_err(what);
        assert_eq!(e.raw_os_error(), Some(libc::EIO), "{what} through A: {e}");
    }
    // A's heartbeat notices too, and A keeps refusing writes.
    std::thread::sleep(Duration::from_millis(2500));
    let a = a_dir.clone();
    let again = within(Duration::from_secs(60), "A's write", move || {
        write_and_sync(&a.join("shared.txt"), b"A again")
    });
    assert_eq!(again.unwrap_err().raw_os_error(), Some(libc::EIO));
    let log_a = std::fs::read_to_string(env_a.mount_log(&a_dir)).unwrap();
    assert!(log_a.contains("lease was taken over"), "{log_a}");

    // B still works and never sees A's writes.
    write_and_sync(&b_dir.join("b.txt"), b"from B, again").unwrap();
    assert_eq!(
        std::fs::read(b_dir.join("shared.txt")).unwrap(),
        b"v1 from A"
    );
    assert!(!b_dir.join("a-new.txt").exists());

    let status_a = ma.terminate();
    eprintln!("{test}: A exited with {status_a}: {}", {
        let log = std::fs::read_to_string(env_a.mount_log(&a_dir)).unwrap_or_default();
        log.lines().last().unwrap_or("").to_string()
    });
    mb.unmount();

    // The branch as sealed into a commit and exported: B's data, none of A's late writes.
    qb.ok(&["-r", "shop", "commit", "-m", "after the takeover"]);
    let out = env_b.path("export");
    qb.ok(&["-r", "shop", "export", "main", out.to_str().unwrap()]);
    let mut files: Vec<String> = std::fs::read_dir(&out)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
        .collect();
    files.sort();
    assert_eq!(files, ["b.txt", "shared.txt"]);
    assert_eq!(std::fs::read(out.join("shared.txt")).unwrap(), b"v1 from A");
    assert_eq!(std::fs::read(out.join("b.txt")).unwrap(), b"from B, again");
    eprintln!("{test}: {:.1?}", t0.elapsed());
}

// ------------------------------------------------------------------------------------------------
// 4. Credentials are never printed.

/// A PostgreSQL role and database that authenticate with a password (the services trust
/// loopback otherwise); returns (password, catalog URL with it, the same URL with a wrong one).
fn password_role(svc: &Services) -> (String, String, String) {
    let password = format!("pw{}", tag());
    let wrong = format!("wrong{}", tag());
    let user = "qfs_secret_user";
    let hba = svc.dir.join("pg/pg_hba.conf");
    let old = std::fs::read_to_string(&hba).unwrap();
    std::fs::write(
        &hba,
        format!("host all {user} 127.0.0.1/32 scram-sha-256\n{old}"),
    )
    .unwrap();
    svc.psql_admin(&format!("CREATE ROLE {user} LOGIN PASSWORD '{password}'"));
    svc.psql_admin(&format!("CREATE DATABASE secretdb OWNER {user}"));
    svc.psql_admin("SELECT pg_reload_conf()");
    let port = svc.var("QUACKFS_SERVICES_PG_PORT");
    let url = format!("postgres://{user}:{password}@127.0.0.1:{port}/secretdb");
    let bad_url = format!("postgres://{user}:{wrong}@127.0.0.1:{port}/secretdb");
    (password, url, bad_url)
}

fn assert_absent(seen: &str, needles: &[(&str, &str)]) {
    for (what, needle) in needles {
        assert!(
            !seen.contains(needle),
            "the {what} appears in the output:\n{}",
            seen.lines()
                .filter(|l| l.contains(needle))
                .collect::<Vec<_>>()
                .join("\n")
        );
    }
}

#[test]
fn credentials_never_appear_in_output_or_logs() {
    let test = "credentials";
    let Some(svc) = Services::up(test) else {
        return;
    };
    let t0 = Instant::now();
    let (password, url, bad_url) = password_role(&svc);
    let wrong = bad_url
        .split_once("qfs_secret_user:")
        .and_then(|(_, r)| r.split_once('@'))
        .map(|(pw, _)| pw.to_string())
        .unwrap();
    let secret = svc.var("AWS_SECRET_ACCESS_KEY");
    let wrong_secret = format!("{secret}-wrong{}", tag());
    let store = svc.store_url();

    let env = Env::new();
    let extra = [
        ("QUACKFS_S3_RETRY_TIMEOUT", "5s"),
        ("QUACKFS_CONNECT_TIMEOUT", "5s"),
    ];
    let envs = svc.envs(&extra);
    let envs: Vec<(&str, &str)> = envs.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let mut bad_s3 = envs.clone();
    bad_s3.retain(|(k, _)| *k != "AWS_SECRET_ACCESS_KEY");
    bad_s3.push(("AWS_SECRET_ACCESS_KEY", &wrong_secret));
    // Everything at trace level, the dependencies (SQL driver, AWS SDK) included.
    let mut traced = envs.clone();
    traced.push(("RUST_LOG", "trace"));
    let mut traced_bad_s3 = bad_s3.clone();
    traced_bad_s3.push(("RUST_LOG", "trace"));

    let mut seen = String::new();
    let mut run = |envs: &[(&str, &str)], catalog: &str, args: &[&str], ok: bool| {
        let out = env
            .cmd_env(envs)
            .args(["-vvv", "--catalog", catalog, "--store", &store])
            .args(args)
            .output()
            .expect("run quackfs");
        let all = text(&out);
        assert_eq!(out.status.success(), ok, "quackfs {args:?}: {all}");
        seen.push_str(&format!("$ quackfs {args:?}\n{all}\n"));
        all
    };
    duckdb(
        &env.path("shop.duckdb"),
        "CREATE TABLE t AS SELECT range AS i FROM range(1000); CHECKPOINT",
    );
    run(
        &envs,
        &url,
        &["init", "shop", "--import", "shop.duckdb"],
        true,
    );
    let status = run(&envs, &url, &["status", "--json"], true);
    assert!(
        status.contains("***"),
        "the catalog URL should show masked: {status}"
    );
    run(&envs, &url, &["log"], true);
    run(&envs, &url, &["show", "main"], true);
    run(&envs, &url, &["repos", "--json"], true);
    run(&traced, &url, &["status", "--json"], true);
    run(&traced, &url, &["export", "main", "out"], true);
    let refused = run(&envs, &bad_url, &["status"], false);
    assert!(refused.contains("password"), "{refused}");
    eprintln!(
        "{test}: wrong password: {}",
        refused
            .lines()
            .find(|l| l.starts_with("error"))
            .unwrap_or("")
    );
    run(&envs, &bad_url, &["log", "--json"], false);
    run(&traced, &bad_url, &["status", "--json"], false);
    let denied = run(&bad_s3, &url, &["export", "main", "out2"], false);
    eprintln!(
        "{test}: wrong S3 secret: {}",
        denied
            .lines()
            .find(|l| l.starts_with("error"))
            .unwrap_or("")
    );
    run(&traced_bad_s3, &url, &["export", "main", "out3"], false);

    // A verbose mount, written through.
    let global = ["-vvv", "--catalog", url.as_str(), "--store", store.as_str()];
    let m = env.mount_env(&envs, &global, "shop@main", &env.path("mnt"), &[]);
    duckdb(
        &m.dir.join("shop.duckdb"),
        "INSERT INTO t SELECT 5000 + range FROM range(10)",
    );
    let mnt_dir = m.dir.clone();
    m.unmount();
    let mount_log = std::fs::read_to_string(env.mount_log(&mnt_dir)).unwrap();
    assert!(mount_log.contains("mounted"), "{mount_log}");
    seen.push_str(&mount_log);
    // A mount that cannot authenticate.
    let bad_global = ["-vvv", "--catalog", &bad_url, "--store", &store];
    let failed = env
        .try_mount_env(&envs, &bad_global, "shop@main", &env.path("mnt-bad"), &[])
        .err()
        .expect("a mount with a wrong password must fail");
    seen.push_str(&failed);

    assert_absent(
        &seen,
        &[
            ("PostgreSQL password", &password),
            ("wrong PostgreSQL password", &wrong),
            ("AWS secret key", &secret),
            ("wrong AWS secret key", &wrong_secret),
        ],
    );
    eprintln!(
        "{test}: {} bytes of output checked in {:.1?}",
        seen.len(),
        t0.elapsed()
    );
}

/// A `--daemon` mount whose process must be stopped at the end, whatever happens.
struct Daemon {
    pid: i32,
    dir: PathBuf,
}

impl Drop for Daemon {
    fn drop(&mut self) {
        // SAFETY: the mount process this test started (in its own process group).
        unsafe { libc::kill(self.pid, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(30);
        while quackfs::process::is_running(self.pid) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        if quackfs::process::is_running(self.pid) {
            // SAFETY: as above.
            unsafe { libc::kill(self.pid, libc::SIGKILL) };
        }
        if common::is_mounted(&self.dir) {
            detach(&self.dir);
        }
    }
}

/// `mount --daemon` re-runs quackfs in the background: the catalog URL (with its password) must
/// not be in that long-lived process's argv, which /proc/PID/cmdline and `ps` show to every
/// local user (it goes through the environment instead).
#[test]
fn daemon_mount_keeps_the_catalog_password_off_the_command_line() {
    let test = "daemon_argv";
    let Some(svc) = Services::up(test) else {
        return;
    };
    let (password, url, _) = password_role(&svc);
    let env = Env::new();
    let mut envs = svc.envs(&[("QUACKFS_CONNECT_TIMEOUT", "5s")]);
    envs.push(("QUACKFS_CATALOG".into(), url.clone()));
    envs.push(("QUACKFS_STORE".into(), svc.store_url()));
    let envs: Vec<(&str, &str)> = envs.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let ok = |args: &[&str]| {
        let out = env.cmd_env(&envs).args(args).output().unwrap();
        assert!(out.status.success(), "quackfs {args:?}: {}", text(&out));
        text(&out)
    };
    ok(&["init", "shop"]);
    let mnt = env.path("mnt");
    std::fs::create_dir_all(&mnt).unwrap();
    let said = ok(&["mount", "shop", mnt.to_str().unwrap(), "--daemon"]);
    let pid: i32 = said
        .split("(pid ")
        .nth(1)
        .and_then(|r| r.split(|c: char| !c.is_ascii_digit()).next())
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("no pid in: {said}"));
    let daemon = Daemon {
        pid,
        dir: std::fs::canonicalize(&mnt).unwrap(),
    };
    assert_absent(&said, &[("PostgreSQL password", &password)]);
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline"))
        .map(|b| String::from_utf8_lossy(&b).replace('\0', " "))
        .unwrap_or_default();
    let mut logs = String::new();
    for e in std::fs::read_dir(env.home().join("logs")).unwrap() {
        logs.push_str(&std::fs::read_to_string(e.unwrap().path()).unwrap_or_default());
    }
    ok(&["umount", mnt.to_str().unwrap()]);
    drop(daemon);
    assert_absent(&logs, &[("PostgreSQL password", &password)]);
    assert_absent(&cmdline, &[("PostgreSQL password", &password)]);
}

// ------------------------------------------------------------------------------------------------
// 6. Bounded memory: a soak of small fsyncs, then a large load through an S3 outage.

/// Peak and current resident set of a process, in bytes (VmHWM, VmRSS).
fn rss(pid: u32) -> (u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let field = |k: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(k))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            .unwrap_or(0)
            * 1024
    };
    (field("VmHWM:"), field("VmRSS:"))
}

fn soak_py(db: &Path, phase: &str, n: u64) -> std::process::Child {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/py/soak.py");
    Command::new("python3")
        .arg(script)
        .arg(db)
        .arg(phase)
        .arg(n.to_string())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start python3")
}

fn finish(child: std::process::Child, what: &str) -> String {
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{what}: {}", text(&out));
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// Many small fsyncs (single-row transactions through the Python client), then a large load
/// written while S3 is down: writes wait at the dirty limit instead of growing memory, the load
/// finishes once S3 is back, nothing is lost, and the mount's peak RSS stays under
/// cache size + dirty limit + a fixed overhead. `QUACKFS_SOAK=full` runs the full soak (20,000
/// fsyncs, a 2 GiB load, a 30 s outage); by default a smaller one (CI time).
#[test]
fn soak_bounded_memory_through_an_s3_outage() {
    let test = "soak";
    let full = std::env::var("QUACKFS_SOAK").is_ok_and(|v| v == "full");
    let (fsyncs, rows, outage) = if full {
        (20_000, 40_000_000, Duration::from_secs(30))
    } else {
        (2_000, 5_000_000, Duration::from_secs(10))
    };
    const CACHE: u64 = 64 << 20;
    const DIRTY: u64 = 128 << 20;
    /// The binary, its runtime, the SQL and S3 clients, buffers of uploads in flight.
    const OVERHEAD: u64 = 64 << 20;
    let Some(mut svc) = Services::up(test) else {
        return;
    };
    let t0 = Instant::now();
    let env = Env::new();
    // An fsync waits for S3 longer than the outage lasts.
    let q = Qfs::new(&env, &svc, &[("QUACKFS_S3_RETRY_TIMEOUT", "180s")]);
    q.ok(&["init", "soak"]);
    let mnt = env.path("mnt");
    let mut m = q.mount(
        "soak@main",
        &mnt,
        &[
            "--cache-size",
            "64MiB",
            "--dirty-limit",
            "128MiB",
            "--autocommit",
            "off",
        ],
    );
    let pid = m.pid();
    let db = mnt.join("soak.duckdb");
    let small = finish(soak_py(&db, "small", fsyncs), "small transactions");
    let (peak_small, now_small) = rss(pid);
    eprintln!(
        "{test}: {fsyncs} single-row transactions: {small} s; mount RSS now {} MiB, peak {} MiB",
        now_small >> 20,
        peak_small >> 20
    );
    // The large load starts, then S3 goes away under it.
    let load = soak_py(&db, "load", rows);
    std::thread::sleep(Duration::from_secs(2));
    svc.kill_weed();
    let down = Instant::now();
    let mut peak_down = 0;
    while down.elapsed() < outage {
        std::thread::sleep(Duration::from_millis(500));
        assert_alive(&mut m, &env, "during the S3 outage");
        peak_down = peak_down.max(rss(pid).1);
    }
    svc.restart();
    let loaded = finish(load, "large load");
    let (peak, _) = rss(pid);
    eprintln!(
        "{test}: {rows} rows loaded through a {outage:?} S3 outage: {loaded} s; RSS during the outage up to {} MiB; peak RSS {} MiB (bound: cache {} + dirty {} + overhead {} MiB)",
        peak_down >> 20,
        peak >> 20,
        CACHE >> 20,
        DIRTY >> 20,
        OVERHEAD >> 20
    );
    assert!(
        peak <= CACHE + DIRTY + OVERHEAD,
        "peak RSS {} MiB over the bound",
        peak >> 20
    );
    // Nothing is lost: everything DuckDB committed is there after a clean remount.
    m.unmount();
    let m = q.mount("soak@main", &mnt, &[]);
    let out = common::duckdb_raw(
        &mnt.join("soak.duckdb"),
        "SELECT (SELECT count(*) FROM small), (SELECT count(*) FROM big)",
        &["-readonly"],
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        format!("{fsyncs},{rows}"),
        "{}",
        text(&out)
    );
    m.unmount();
    eprintln!("{test}: {:.1?}", t0.elapsed());
}

/// PostgreSQL aborts a transaction to break a deadlock (or a serialization conflict), and says
/// to run it again. A mount's sync or commit it aborts is run again: DuckDB's fsync does not
/// fail, and every commit holds its rows. The aborts are injected by a trigger on the real
/// server: the first two inserts into `layers` after it is made fail with SQLSTATE 40P01.
#[test]
fn a_catalog_call_aborted_by_a_deadlock_runs_again() {
    let Some(env) = Env::on(common::Backend::PgS3) else {
        return;
    };
    let catalog = env
        .backend
        .iter()
        .find(|(k, _)| k == "QUACKFS_CATALOG")
        .map(|(_, v)| v.clone())
        .expect("QUACKFS_CATALOG of the PostgreSQL backend");
    env.ok(&["init", "shop"]);
    let psql = |sql: &str| {
        let out = Command::new("psql")
            .args([catalog.as_str(), "-v", "ON_ERROR_STOP=1", "-qAt", "-c", sql])
            .output()
            .expect("run psql");
        assert!(out.status.success(), "psql {sql}: {}", text(&out));
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    };
    psql(
        "CREATE SEQUENCE injected_aborts; \
         CREATE FUNCTION inject_abort() RETURNS trigger LANGUAGE plpgsql AS $$ \
         BEGIN \
           IF nextval('injected_aborts') <= 2 THEN \
             RAISE EXCEPTION 'injected deadlock' USING ERRCODE = 'deadlock_detected'; \
           END IF; \
           RETURN NEW; \
         END $$; \
         CREATE TRIGGER inject_abort BEFORE INSERT ON layers \
           FOR EACH ROW EXECUTE FUNCTION inject_abort();",
    );
    let mnt = env.path("mnt");
    let m = env.mount("shop", &mnt, &[]);
    let db = mnt.join("shop.duckdb");
    duckdb(
        &db,
        "CREATE TABLE t AS SELECT range AS k FROM range(100000); \
         INSERT INTO t VALUES (-1); CHECKPOINT;",
    );
    m.unmount();
    // Both injected aborts happened, and the calls they aborted ran again.
    let fired: u64 = psql("SELECT last_value FROM injected_aborts")
        .parse()
        .unwrap();
    assert!(fired > 2, "the trigger fired {fired} time(s)");
    let ro = env.mount("shop@main", &env.path("ro"), &["--read-only"]);
    let out = common::duckdb_raw(
        &ro.dir.join("shop.duckdb"),
        "SELECT count(*), min(k) FROM t",
        &["-readonly"],
    );
    assert_eq!(text(&out).trim(), "100001,-1");
    ro.unmount();
    let log = env.ok(&["log", "--json"]);
    assert!(log.contains("checkpoint of shop.duckdb"), "{log}");
}

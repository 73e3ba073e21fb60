//! Every checkpoint DuckDB completes on a writable mount becomes exactly one `checkpoint` commit,
//! whichever way DuckDB completes it (WAL removed or replaced, or no WAL at all for transactions
//! above the checkpoint threshold), with both real clients: the duckdb CLI (1.5.x, one process per
//! step, closing with or without its checkpoint on shutdown) and the Python module (1.4.4, one
//! connection kept open across steps).
//!
//! The oracle is DuckDB itself: the same statements run side by side on a database file on local
//! disk, whose fingerprint after each step is what a commit made during that step must hold, and
//! the active header iteration of the mounted file counts the checkpoints DuckDB completed (each
//! completed checkpoint raises it by one). Every commit is then mounted read-only and queried.

mod common;
use common::{duckdb, duckdb_bin, duckdb_raw, Env, Python};
use quackfs::engine::duckdb_file;
use std::path::{Path, PathBuf};
use std::process::Command;

const FINGERPRINT: &str =
    "SELECT count(*), coalesce(sum(id), 0), coalesce(sum(length(h)), 0), coalesce(bit_xor(hash(h)), 0) FROM t";

/// A DuckDB client under test.
trait Client {
    /// Runs one step of SQL on `db`.
    fn step(&mut self, db: &Path, sql: &str);
    /// Closes whatever the client keeps open on `db` (the CLI keeps nothing).
    fn close(&mut self, db: &Path);
    /// The fingerprint of table `t` in `db`, opened read-only by a fresh connection.
    fn fingerprint(&mut self, db: &Path) -> String;
}

/// The duckdb CLI: each step is a process of its own, closing the database when it exits.
struct Cli;

impl Client for Cli {
    fn step(&mut self, db: &Path, sql: &str) {
        let out = Command::new(duckdb_bin())
            .args(["-csv", "-noheader", "-bail"])
            .arg(db)
            .arg("-c")
            .arg(sql)
            .output()
            .expect("run duckdb");
        assert!(
            out.status.success(),
            "duckdb {} failed: {}\nSQL: {sql}",
            db.display(),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    fn close(&mut self, _db: &Path) {}

    fn fingerprint(&mut self, db: &Path) -> String {
        let out = Command::new(duckdb_bin())
            .args(["-csv", "-noheader", "-bail", "-readonly"])
            .arg(db)
            .arg("-c")
            .arg(FINGERPRINT)
            .output()
            .expect("run duckdb");
        assert!(
            out.status.success(),
            "duckdb -readonly {} failed: {}",
            db.display(),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }
}

impl Client for Python {
    fn step(&mut self, db: &Path, sql: &str) {
        let db = db.display().to_string();
        self.request(serde_json::json!({"op": "sql", "db": db, "sql": sql}));
    }

    fn close(&mut self, db: &Path) {
        let db = db.display().to_string();
        self.request(serde_json::json!({"op": "close", "db": db}));
    }

    fn fingerprint(&mut self, db: &Path) -> String {
        let db = db.display().to_string();
        self.request(serde_json::json!({"op": "open", "db": db, "read_only": true}));
        let rows = self.request(serde_json::json!({"op": "sql", "db": db, "sql": FINGERPRINT}));
        self.request(serde_json::json!({"op": "close", "db": db}));
        rows[0]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap().to_string())
            .collect::<Vec<_>>()
            .join(",")
    }
}

/// One step of a scenario.
enum Step {
    /// SQL, and how many checkpoints DuckDB completes during it (None: whatever DuckDB does, the
    /// header iteration tells).
    Sql(&'static str, Option<u64>),
    /// Close the client's connection (Python; the CLI closes after every step).
    Close(Option<u64>),
}

/// Active header iteration of a DuckDB file, read through the file system.
fn iteration(path: &Path) -> u64 {
    let bytes = std::fs::read(path).unwrap();
    let head = &bytes[..bytes.len().min(duckdb_file::HEADERS_END as usize)];
    duckdb_file::active_iteration(head).unwrap_or(0)
}

/// The checkpoint commits of the branch, oldest first.
fn checkpoint_commits(env: &Env) -> Vec<String> {
    let log: serde_json::Value = serde_json::from_str(&env.ok(&["log", "--json"])).unwrap();
    let mut ids: Vec<String> = log
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["kind"] == "checkpoint")
        .map(|c| c["id"].as_str().unwrap().to_string())
        .collect();
    ids.reverse();
    ids
}

/// Runs `steps` with `client` on a mount and on a local file side by side; checks the checkpoint
/// commits after every step, then mounts every commit read-only.
fn run_scenario(env: &Env, client: &mut dyn Client, steps: &[Step]) -> Vec<(String, u64, u64)> {
    env.ok(&["init", "ck"]);
    let mnt = env.path("mnt");
    let m = env.mount("ck", &mnt, &[]);
    let db = mnt.join("ck.duckdb");
    let local: PathBuf = env.path("local.duckdb");
    // Fingerprint after every step (index 0: before the first), and which step made each commit.
    let mut states = vec![String::new()];
    let mut made_in: Vec<usize> = Vec::new();
    let mut report = Vec::new();
    let mut commits = 0;
    let mut iter = 0;
    for (i, step) in steps.iter().enumerate() {
        let (what, expected) = match step {
            Step::Sql(sql, n) => {
                client.step(&local, sql);
                client.step(&db, sql);
                (sql.to_string(), *n)
            }
            Step::Close(n) => {
                client.close(&local);
                client.close(&db);
                ("close".to_string(), *n)
            }
        };
        let now_iter = iteration(&db);
        let now_commits = checkpoint_commits(env).len();
        let completed = now_iter - iter;
        let made = (now_commits - commits) as u64;
        assert_eq!(
            made, completed,
            "step {i} ({what}): DuckDB completed {completed} checkpoint(s), quackfs made {made} checkpoint commit(s)"
        );
        if let Some(n) = expected {
            assert_eq!(completed, n, "step {i} ({what}): checkpoints completed");
        }
        report.push((what, completed, made));
        made_in.extend(std::iter::repeat_n(i + 1, made as usize));
        iter = now_iter;
        commits = now_commits;
        // The reference state after this step: a fresh read-only connection on the local file
        // (the client's own connection, if open, holds it writable: read through a copy).
        let snapshot = env.path("snapshot.duckdb");
        std::fs::copy(&local, &snapshot).unwrap();
        let wal = PathBuf::from(format!("{}.wal", local.display()));
        let snap_wal = PathBuf::from(format!("{}.wal", snapshot.display()));
        let _ = std::fs::remove_file(&snap_wal);
        if wal.exists() {
            std::fs::copy(&wal, &snap_wal).unwrap();
        }
        states.push(client.fingerprint(&snapshot));
    }
    client.close(&local);
    client.close(&db);
    let ids = checkpoint_commits(env);
    assert_eq!(ids.len(), made_in.len());
    // Every checkpoint commit opens in DuckDB and holds the transactions committed before it:
    // the state after its step, or (a checkpoint DuckDB ran when it opened the file and replayed
    // the WAL of the step before) the state after the previous step.
    for (k, (id, &step)) in ids.iter().zip(&made_in).enumerate() {
        let dir = env.path(&format!("ro{k}"));
        let ro = env.mount(&format!("ck@{id}"), &dir, &[]);
        let got = client.fingerprint(&dir.join("ck.duckdb"));
        ro.unmount();
        assert!(
            got == states[step] || got == states[step - 1],
            "checkpoint commit {k} ({id}, made in step {}) holds {got}; expected {} (or {})",
            step - 1,
            states[step],
            states[step - 1]
        );
    }
    m.unmount();
    report
}

fn cli_steps() -> Vec<Step> {
    vec![
        // Large CTAS, explicit CHECKPOINT.
        Step::Sql(
            "CREATE TABLE t AS SELECT range AS id, md5(range::VARCHAR) AS h FROM range(3000000); CHECKPOINT",
            Some(1),
        ),
        // Large UPDATE and DELETE: straight into the file, checkpointed without any WAL.
        Step::Sql(
            "UPDATE t SET h = md5((id + 1)::VARCHAR) WHERE id % 7 = 1; CHECKPOINT",
            Some(1),
        ),
        Step::Sql("DELETE FROM t WHERE id % 3 = 0; CHECKPOINT", Some(1)),
        // Small transaction through the WAL; the checkpoint on shutdown completes it.
        Step::Sql("INSERT INTO t VALUES (-1, 'one')", Some(1)),
        // Small transaction left in the WAL: no checkpoint.
        Step::Sql(
            "PRAGMA disable_checkpoint_on_shutdown; UPDATE t SET h = 'x' WHERE id < 100",
            Some(0),
        ),
        // FORCE CHECKPOINT (DuckDB may also checkpoint the replayed WAL when it opens the file).
        Step::Sql("FORCE CHECKPOINT", None),
        Step::Sql(
            "PRAGMA disable_checkpoint_on_shutdown; DELETE FROM t WHERE id BETWEEN 100 AND 200",
            None,
        ),
        // Automatic checkpoint once the WAL passes wal_autocheckpoint.
        Step::Sql(
            "PRAGMA disable_checkpoint_on_shutdown; SET wal_autocheckpoint = '1KB'; INSERT INTO t SELECT -range - 10, 'auto' FROM range(1000)",
            None,
        ),
        // A large transaction with no CHECKPOINT statement (its rows go straight into the file;
        // the WAL only points at them), closed without the checkpoint on shutdown.
        Step::Sql(
            "PRAGMA disable_checkpoint_on_shutdown; INSERT INTO t SELECT range + 10000000, md5(range::VARCHAR) FROM range(3000000)",
            None,
        ),
        // The WAL holds that transaction (pointers to its blocks): CHECKPOINT completes it.
        Step::Sql("CHECKPOINT", Some(1)),
        // Nothing changed since: CHECKPOINT has nothing to do.
        Step::Sql("CHECKPOINT", Some(0)),
    ]
}

fn python_steps() -> Vec<Step> {
    vec![
        Step::Sql(
            "CREATE TABLE t AS SELECT range AS id, md5(range::VARCHAR) AS h FROM range(3000000)",
            None,
        ),
        Step::Sql("CHECKPOINT", None),
        Step::Sql(
            "UPDATE t SET h = md5((id + 1)::VARCHAR) WHERE id % 7 = 1",
            None,
        ),
        Step::Sql("CHECKPOINT", None),
        // Small transactions stay in the WAL until a checkpoint.
        Step::Sql("INSERT INTO t VALUES (-1, 'one')", Some(0)),
        Step::Sql("DELETE FROM t WHERE id < 50", Some(0)),
        Step::Sql("CHECKPOINT", Some(1)),
        Step::Sql("DELETE FROM t WHERE id % 3 = 0", None),
        Step::Sql("INSERT INTO t VALUES (-2, 'two')", Some(0)),
        Step::Sql("FORCE CHECKPOINT", Some(1)),
        // Closing checkpoints what the WAL holds.
        Step::Sql("INSERT INTO t VALUES (-3, 'three')", Some(0)),
        Step::Close(Some(1)),
        // Closing without the checkpoint on shutdown leaves the WAL.
        Step::Sql(
            "PRAGMA disable_checkpoint_on_shutdown; INSERT INTO t VALUES (-4, 'four')",
            None,
        ),
        Step::Close(Some(0)),
        // Reopening replays it; a checkpoint then empties it.
        Step::Sql("CHECKPOINT", None),
        Step::Sql(
            "INSERT INTO t SELECT range + 10000000, md5(range::VARCHAR) FROM range(3000000)",
            None,
        ),
        Step::Close(None),
    ]
}

fn print_report(client: &str, env: &Env, report: &[(String, u64, u64)]) {
    let backend = if env.backend.is_empty() {
        "embedded"
    } else {
        "postgres+s3"
    };
    for (what, completed, made) in report {
        let what: String = what.chars().take(60).collect();
        eprintln!("{client} {backend}: checkpoints {completed} commits {made}: {what}");
    }
    let (c, m) = report.iter().fold((0, 0), |(c, m), r| (c + r.1, m + r.2));
    eprintln!("{client} {backend}: total checkpoints {c}, checkpoint commits {m}");
}

fn cli_checkpoints(env: Env) {
    let report = run_scenario(&env, &mut Cli, &cli_steps());
    print_report("duckdb-cli", &env, &report);
    assert!(report.iter().map(|r| r.1).sum::<u64>() >= 6);
}

fn python_checkpoints(env: Env) {
    let mut py = Python::start();
    let report = run_scenario(&env, &mut py, &python_steps());
    print_report("python", &env, &report);
    assert!(report.iter().map(|r| r.1).sum::<u64>() >= 5);
}

on_both_backends!(
    cli_checkpoints_embedded,
    cli_checkpoints_pgs3,
    cli_checkpoints
);
on_both_backends!(
    python_checkpoints_embedded,
    python_checkpoints_pgs3,
    python_checkpoints
);

/// The rows of `sql` (CSV) in the database file `file` of commit `id`, mounted read-only; `pre`
/// runs first (an ATTACH for an encrypted file: `FILE` in it is the file's path).
fn in_commit(env: &Env, id: &str, file: &str, pre: &str, sql: &str) -> String {
    let dir = env.path(&format!("ro-{id}"));
    let ro = env.mount(&format!("ck@{id}"), &dir, &[]);
    let path = dir.join(file);
    let out = if pre.is_empty() {
        duckdb_raw(&path, sql, &["-readonly"])
    } else {
        let pre = pre.replace("FILE", &path.display().to_string());
        duckdb_raw(Path::new(":memory:"), &format!("{pre} {sql}"), &[])
    };
    ro.unmount();
    assert!(
        out.status.success(),
        "{sql} in {file} of {id}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// A database file removed and created again, or replaced by a rename, is another database: its
/// checkpoints are commits from its first one on, whatever iteration the file it replaced had
/// reached. An encrypted database (its headers are ciphertext) gets a commit for each checkpoint
/// too, also after a remount. Every commit holds the rows of its checkpoint.
fn replaced_and_encrypted_databases(env: Env) {
    env.ok(&["init", "ck"]);
    let mnt = env.path("mnt");
    let m = env.mount("ck", &mnt, &[]);
    let a = mnt.join("a.duckdb");
    let commits = |n: usize| {
        let ids = checkpoint_commits(&env);
        assert_eq!(ids.len(), n, "checkpoint commits: {ids:?}");
        ids[n - 1].clone()
    };
    // Three checkpoints of a.duckdb: the file reaches iteration 3.
    for i in 1..=3 {
        duckdb(
            &a,
            &format!("CREATE TABLE t{i} AS SELECT range AS id FROM range(100000)"),
        );
    }
    commits(3);
    assert_eq!(iteration(&a), 3);
    // Removed and created again: its first checkpoint (iteration 1) is a commit.
    std::fs::remove_file(&a).unwrap();
    duckdb(&a, "CREATE TABLE fresh AS SELECT 42 AS x");
    let id = commits(4);
    let sql = "SELECT string_agg(table_name, ',' ORDER BY table_name) FROM duckdb_tables()";
    assert_eq!(in_commit(&env, &id, "a.duckdb", "", sql), "fresh");
    // Replaced by a rename: b.duckdb (two checkpoints, two commits) moved over a.duckdb, whose
    // next checkpoint (b's third) is a commit.
    let b = mnt.join("b.duckdb");
    duckdb(&b, "CREATE TABLE moved AS SELECT 1 AS x");
    duckdb(&b, "INSERT INTO moved VALUES (2)");
    commits(6);
    std::fs::rename(&b, &a).unwrap();
    duckdb(&a, "INSERT INTO moved VALUES (3)");
    let id = commits(7);
    assert_eq!(iteration(&a), 3);
    let sum = "SELECT sum(x) FROM moved";
    assert_eq!(in_commit(&env, &id, "a.duckdb", "", sum), "6");

    // An encrypted database, through the CLI (DuckDB refuses to write encrypted files with its
    // built-in crypto unless told to; the format is the same).
    let attach = "SET force_mbedtls_unsafe = 'true'; ATTACH 'FILE' AS e (ENCRYPTION_KEY 'k1');";
    let on_mount = attach.replace("FILE", &mnt.join("enc.duckdb").display().to_string());
    let memory = Path::new(":memory:");
    duckdb(
        memory,
        &format!("{on_mount} CREATE TABLE e.t AS SELECT range AS id FROM range(1000000);"),
    );
    let first = commits(8);
    duckdb(
        memory,
        &format!("{on_mount} INSERT INTO e.t VALUES (-1); CHECKPOINT e;"),
    );
    let second = commits(9);
    // Reading makes no commit.
    duckdb(memory, &format!("{on_mount} SELECT count(*) FROM e.t;"));
    commits(9);
    m.unmount();
    // After a remount the mount knows the committed checkpoint of the file from the head.
    let m = env.mount("ck", &mnt, &[]);
    duckdb(memory, &format!("{on_mount} INSERT INTO e.t VALUES (-2);"));
    let third = commits(10);
    m.unmount();
    let count = "SELECT count(*), min(id) FROM e.t";
    let read = attach.replace("'k1'", "'k1', READ_ONLY");
    for (id, want) in [
        (&first, "1000000,0"),
        (&second, "1000001,-1"),
        (&third, "1000002,-2"),
    ] {
        assert_eq!(in_commit(&env, id, "enc.duckdb", &read, count), want);
    }
}

on_both_backends!(
    replaced_and_encrypted_databases_embedded,
    replaced_and_encrypted_databases_pgs3,
    replaced_and_encrypted_databases
);

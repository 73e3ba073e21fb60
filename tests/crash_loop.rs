//! kill -9 of the mount at random moments of a DuckDB load (Python client): during uploads,
//! registrations, checkpoints. After every kill the branch is mounted again and DuckDB must open
//! the database, and every transaction DuckDB reported committed must be there, whole; a
//! transaction it had not reported yet is there whole or not at all. And kill -9 of `merge` and
//! `gc` at random moments: every revision still reads byte for byte as before.

mod common;
use common::{duckdb_raw, Env};
use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// Rows of transaction `k` (as tests/py/txn_load.py makes them).
fn rows(k: u64) -> u64 {
    if k.is_multiple_of(5) {
        150_000
    } else {
        50 + k % 200
    }
}

/// A small deterministic generator (the seed is printed, so a failure can be replayed).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

/// Transactions present in `db`: k -> rows, read by the duckdb CLI (which must open it).
fn present(db: &Path) -> BTreeMap<u64, u64> {
    let out = duckdb_raw(db, "SELECT k, count(*) FROM t GROUP BY k ORDER BY k", &[]);
    let err = String::from_utf8_lossy(&out.stderr);
    if !out.status.success() && err.contains("Table with name t does not exist") {
        return BTreeMap::new();
    }
    assert!(
        out.status.success(),
        "DuckDB cannot open the database after a crash: {err}"
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| {
            let (k, n) = l.split_once(',').unwrap();
            (k.parse().unwrap(), n.parse().unwrap())
        })
        .collect()
}

fn crash_loop(env: Env, rounds: usize) {
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
        | 1;
    eprintln!("crash loop seed {seed}");
    let mut rng = Rng(seed);
    env.ok(&["init", "crash"]);
    let mnt = env.path("mnt");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/py/txn_load.py");
    let mut reported: BTreeMap<u64, u64> = BTreeMap::new();
    let mut next = 1u64;
    let mut kills = 0;
    for round in 0..rounds {
        let m = env.mount("crash", &mnt, &[]);
        let db = mnt.join("crash.duckdb");
        let mut py = Command::new("python3")
            .arg(&script)
            .arg(&db)
            .arg(next.to_string())
            .arg("1000")
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("start python3");
        let (tx, rx) = mpsc::channel();
        let stdout = py.stdout.take().unwrap();
        let reader = std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Some(k) = line.strip_prefix("committed ") {
                    let _ = tx.send(k.parse::<u64>().unwrap());
                }
            }
        });
        // Kill at a random moment once the load runs (first commit seen, or 5 s).
        let _ = rx.recv_timeout(Duration::from_secs(5));
        let wait = Duration::from_millis(rng.next() % 1500);
        let t0 = Instant::now();
        while t0.elapsed() < wait {
            std::thread::sleep(Duration::from_millis(5));
        }
        // Freeze the client first, so it cannot write into the bare directory once the dead
        // mount is gone; then the crash, then the client goes too.
        // SAFETY: signalling our own child.
        unsafe { libc::kill(py.id() as i32, libc::SIGSTOP) };
        m.crash();
        kills += 1;
        let _ = py.kill();
        let _ = py.wait();
        let _ = reader.join();
        for k in rx.try_iter() {
            reported.insert(k, rows(k));
        }
        // `reported` also holds the first one received above.
        if let Some(&k) = reported.keys().next_back() {
            next = next.max(k + 1);
        }
        let m = env.mount("crash", &mnt, &[]);
        let got = present(&mnt.join("crash.duckdb"));
        for (k, n) in &reported {
            assert_eq!(
                got.get(k),
                Some(n),
                "round {round} (seed {seed}): transaction {k}, reported committed, is missing or partial"
            );
        }
        for (k, n) in &got {
            assert_eq!(
                *n,
                rows(*k),
                "round {round} (seed {seed}): transaction {k} is partial"
            );
            reported.insert(*k, *n);
        }
        next = got.keys().next_back().map_or(next, |k| next.max(k + 1));
        m.unmount();
    }
    eprintln!(
        "crash loop: {kills} kills, {} transactions committed and found whole",
        reported.len()
    );
    assert!(reported.len() > rounds / 2, "the load hardly ran");
}

fn crash_loop_embedded_50(env: Env) {
    crash_loop(env, 50);
}

fn crash_loop_pgs3_30(env: Env) {
    crash_loop(env, 30);
}

#[test]
fn kill_9_during_a_load_embedded() {
    crash_loop_embedded_50(common::Env::on(common::Backend::Embedded).unwrap());
}

#[test]
fn kill_9_during_a_load_pgs3() {
    if let Some(env) = common::Env::on(common::Backend::PgS3) {
        crash_loop_pgs3_30(env);
    }
}

/// `quackfs ARGS` killed (SIGKILL) after a random part of how long it last took to complete
/// (`took`), up to a fifth longer. Ok(how long it took) when it completed first, Err(())
/// when it was killed.
fn killed_at_random(
    env: &Env,
    rng: &mut Rng,
    took: Duration,
    args: &[&str],
) -> Result<Duration, ()> {
    let wait = Duration::from_micros(rng.next() % (took.as_micros() as u64 * 6 / 5 + 1));
    let t0 = Instant::now();
    let mut child = env
        .std_cmd()
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start quackfs");
    while t0.elapsed() < wait {
        if let Some(status) = child.try_wait().unwrap() {
            assert!(status.success(), "quackfs {args:?} failed");
            return Ok(t0.elapsed());
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    let _ = child.kill();
    let status = child.wait().unwrap();
    if status.success() {
        Ok(t0.elapsed())
    } else {
        Err(())
    }
}

/// kill -9 of `merge` and of `gc` at random moments, on a history that grows every round: every
/// revision exports byte for byte as it did before, `verify --all` passes, and the next merge
/// and gc complete.
fn maintenance_kills(env: Env, rounds: usize) {
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
        | 1;
    eprintln!("maintenance kills seed {seed}");
    let mut rng = Rng(seed);
    env.ok(&["init", "m"]);
    let mnt = env.path("mnt");
    let mut revs: Vec<(String, Vec<u8>)> = Vec::new();
    let (mut merge_took, mut gc_took) = (Duration::from_millis(300), Duration::from_millis(300));
    let mut kills = 0;
    for round in 0..rounds {
        let m = env.mount("m", &mnt, &[]);
        let db = mnt.join("m.duckdb");
        if round == 0 {
            common::duckdb(
                &db,
                "CREATE TABLE t AS SELECT range AS i, md5(range::VARCHAR) AS h FROM range(200000); CHECKPOINT",
            );
        }
        for k in 0..4 {
            common::duckdb(
                &db,
                &format!(
                    "UPDATE t SET h = md5(h) WHERE i % 97 = {}; CHECKPOINT",
                    round * 4 + k
                ),
            );
        }
        m.unmount();
        let head = env.ok(&["--json", "show", "m@main"]);
        let head: serde_json::Value = serde_json::from_str(&head).unwrap();
        let id = head["commit"]["id"].as_str().unwrap().to_string();
        revs.push((id.clone(), env.exported(&format!("m@{id}"), "m.duckdb")));
        let check = |what: &str| {
            for (id, want) in &revs {
                assert!(
                    env.exported(&format!("m@{id}"), "m.duckdb") == *want,
                    "round {round} (seed {seed}), after {what}: {id} reads differently"
                );
            }
            env.ok(&["verify", "--all"]);
        };
        match killed_at_random(&env, &mut rng, merge_took, &["merge"]) {
            Ok(t) => merge_took = t,
            Err(()) => kills += 1,
        }
        check("a killed merge");
        env.ok(&["merge"]);
        match killed_at_random(&env, &mut rng, gc_took, &["gc", "--grace", "0s"]) {
            Ok(t) => gc_took = t,
            Err(()) => kills += 1,
        }
        check("a killed gc");
        env.ok(&["gc", "--grace", "0s"]);
        check("gc");
    }
    // (Each run is killed with a chance of about 5 in 6: none in 8 is one in a million.)
    eprintln!(
        "maintenance kills: {kills} of {} runs killed while they ran",
        2 * rounds
    );
    assert!(kills > 0, "seed {seed}: no run was killed");
}

fn maintenance_kills_embedded_6(env: Env) {
    maintenance_kills(env, 6);
}

fn maintenance_kills_pgs3_4(env: Env) {
    maintenance_kills(env, 4);
}

#[test]
fn merge_and_gc_killed_at_random_moments_embedded() {
    maintenance_kills_embedded_6(common::Env::on(common::Backend::Embedded).unwrap());
}

#[test]
fn merge_and_gc_killed_at_random_moments_pgs3() {
    if let Some(env) = common::Env::on(common::Backend::PgS3) {
        maintenance_kills_pgs3_4(env);
    }
}

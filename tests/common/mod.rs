//! Shared helpers for integration tests: an isolated quackfs environment and the real duckdb CLI.
#![allow(dead_code)]

use assert_cmd::Command;
use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};
use std::process::Output;

/// A throwaway quackfs home (catalog, objects, state, config) and a work directory.
pub struct Env {
    pub dir: tempfile::TempDir,
    /// Catalog and store URLs when testing the production backends.
    pub backend: Vec<(String, String)>,
}

/// Which backend pair a test runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// SQLite catalog + local objects (the default).
    Embedded,
    /// PostgreSQL catalog + S3 (SeaweedFS) from `scripts/services.sh` (QUACKFS_TEST_PG_URL,
    /// QUACKFS_TEST_S3_BUCKET, AWS_*): a fresh database and object prefix per test.
    PgS3,
}

impl Env {
    pub fn new() -> Env {
        let dir = tempfile::Builder::new()
            .prefix("quackfs-test-")
            .tempdir()
            .expect("tempdir");
        std::fs::create_dir_all(dir.path().join("work")).unwrap();
        Env {
            dir,
            backend: Vec::new(),
        }
    }

    /// An environment on `backend`; None (test skipped) when PostgreSQL/S3 are not configured,
    /// which is an error under CI.
    pub fn on(backend: Backend) -> Option<Env> {
        let mut env = Env::new();
        if backend == Backend::Embedded {
            return Some(env);
        }
        let (Ok(pg), Ok(bucket)) = (
            std::env::var("QUACKFS_TEST_PG_URL"),
            std::env::var("QUACKFS_TEST_S3_BUCKET"),
        ) else {
            assert!(
                std::env::var_os("CI").is_none(),
                "CI must provide PostgreSQL and S3 (scripts/services.sh up)"
            );
            eprintln!(
                "skipped: QUACKFS_TEST_PG_URL / QUACKFS_TEST_S3_BUCKET not set (make services-up)"
            );
            return None;
        };
        let name = format!("qfs_{}", uuid_like());
        let out = std::process::Command::new("psql")
            .arg(&pg)
            .args(["-q", "-c", &format!("CREATE DATABASE {name}")])
            .output()
            .expect("run psql");
        assert!(
            out.status.success(),
            "CREATE DATABASE failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let (base, _) = pg
            .rsplit_once('/')
            .expect("a database in QUACKFS_TEST_PG_URL");
        env.backend = vec![
            ("QUACKFS_CATALOG".into(), format!("{base}/{name}")),
            ("QUACKFS_STORE".into(), format!("s3://{bucket}/{name}")),
        ];
        Some(env)
    }

    pub fn home(&self) -> PathBuf {
        self.dir.path().join("home")
    }

    pub fn work(&self) -> PathBuf {
        self.dir.path().join("work")
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.work().join(rel)
    }

    /// The bytes of `file` in `rev`, exported into a fresh directory (removed again).
    pub fn exported(&self, rev: &str, file: &str) -> Vec<u8> {
        let dir = self.path(&format!("export-{}", uuid_like()));
        self.ok(&["export", rev, dir.to_str().unwrap()]);
        let bytes = std::fs::read(dir.join(file)).unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
        bytes
    }

    /// `quackfs` with an isolated environment, run in the work directory.
    pub fn cmd(&self) -> Command {
        Command::from_std(self.std_cmd())
    }

    /// The same as a plain `std::process::Command` (to spawn it in the background).
    pub fn std_cmd(&self) -> std::process::Command {
        let mut c = std::process::Command::new(assert_cmd::cargo::cargo_bin("quackfs"));
        c.current_dir(self.work())
            .env("QUACKFS_HOME", self.home())
            .env("XDG_CONFIG_HOME", self.dir.path().join("config"))
            .env("QUACKFS_AUTHOR", "tester")
            .env_remove("QUACKFS_REPO")
            .env_remove("QUACKFS_CATALOG")
            .env_remove("QUACKFS_STORE")
            .env_remove("RUST_LOG")
            .envs(self.backend.iter().map(|(k, v)| (k, v)));
        c
    }

    /// Runs quackfs, expecting success; returns stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        self.ok_env(&[], args)
    }

    /// `ok` with extra environment variables for the quackfs process.
    pub fn ok_env(&self, envs: &[(&str, &str)], args: &[&str]) -> String {
        let out = self.cmd_env(envs).args(args).output().expect("run quackfs");
        assert!(
            out.status.success(),
            "quackfs {args:?} failed: {}\n{}",
            String::from_utf8_lossy(&out.stderr),
            String::from_utf8_lossy(&out.stdout)
        );
        String::from_utf8(out.stdout).expect("utf8 stdout")
    }

    /// Runs quackfs, expecting a documented failure exit code (1 to 9, see `docs/cli.md`) with
    /// one `error:` line; returns stderr.
    pub fn fails(&self, args: &[&str]) -> String {
        self.fails_code(args).1
    }

    /// Runs quackfs, expecting exactly exit code `code` with one `error:` line; returns stderr.
    pub fn fails_with(&self, code: i32, args: &[&str]) -> String {
        let (got, stderr) = self.fails_code(args);
        assert_eq!(
            got, code,
            "quackfs {args:?} should fail with {code}: {stderr}"
        );
        stderr
    }

    /// Runs quackfs, expecting a documented failure; returns its exit code and stderr.
    pub fn fails_code(&self, args: &[&str]) -> (i32, String) {
        let out = self.cmd().args(args).output().expect("run quackfs");
        let stderr = String::from_utf8_lossy(&out.stderr).to_string();
        let code = out.status.code().unwrap_or(-1);
        assert!(
            (1..=9).contains(&code),
            "quackfs {args:?} should fail with a documented code (1-9), got {code}: {stderr}"
        );
        let first = stderr.lines().next().unwrap_or("");
        assert!(
            first.starts_with("error: "),
            "first stderr line should be the error: {stderr}"
        );
        assert_eq!(
            stderr.lines().filter(|l| l.starts_with("error:")).count(),
            1,
            "{stderr}"
        );
        assert!(!stderr.contains("panicked"), "{stderr}");
        (code, stderr)
    }
}

/// Unmounts a tmpfs when dropped (even if the test fails).
pub struct TmpfsGuard(pub PathBuf);

impl Drop for TmpfsGuard {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount").arg(&self.0).status();
    }
}

/// 16 random hex digits (for unique database names and prefixes).
pub fn uuid_like() -> String {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos(),
    );
    h.write_u32(std::process::id());
    format!("{:016x}", h.finish())
}

/// Defines one `#[test]` per backend pair calling `$body(env)`.
#[macro_export]
macro_rules! on_both_backends {
    ($embedded:ident, $pgs3:ident, $body:ident) => {
        #[test]
        fn $embedded() {
            $body(common::Env::on(common::Backend::Embedded).unwrap());
        }
        #[test]
        fn $pgs3() {
            if let Some(env) = common::Env::on(common::Backend::PgS3) {
                $body(env);
            }
        }
    };
}

/// The duckdb CLI (from PyPI `duckdb-cli`); tests need it, CI installs it.
pub fn duckdb_bin() -> PathBuf {
    if let Ok(p) = std::env::var("DUCKDB") {
        return PathBuf::from(p);
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    for dir in std::env::split_paths(&path) {
        let cand = dir.join("duckdb");
        if cand.is_file() {
            return cand;
        }
    }
    panic!("the duckdb CLI is not on PATH: run scripts/install-deps.sh (pip install duckdb-cli)");
}

/// Runs SQL with the duckdb CLI on `db` and returns its CSV output (no header).
pub fn duckdb(db: &Path, sql: &str) -> String {
    let out = duckdb_raw(db, sql, &[]);
    assert!(
        out.status.success(),
        "duckdb {} failed: {}\nSQL: {sql}",
        db.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .expect("utf8")
        .trim()
        .to_string()
}

/// Runs the duckdb CLI with extra flags; returns the raw output.
pub fn duckdb_raw(db: &Path, sql: &str, flags: &[&str]) -> Output {
    std::process::Command::new(duckdb_bin())
        .args(flags)
        .args(["-csv", "-noheader", "-bail"])
        .arg(db)
        .arg("-c")
        .arg(sql)
        .output()
        .expect("run duckdb")
}

/// A running `quackfs mount` (foreground child process). Dropping it unmounts (SIGTERM, then a
/// lazy unmount if needed) and reaps the process, even when the test failed.
pub struct Mount {
    pub dir: PathBuf,
    pub child: Option<std::process::Child>,
}

/// Whether `dir` is a mount point.
pub fn is_mounted(dir: &Path) -> bool {
    let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let want = dir.to_string_lossy().replace(' ', "\\040");
    info.lines()
        .any(|l| l.split(' ').nth(4) == Some(want.as_str()))
}

impl Env {
    /// Starts `quackfs [global args] mount REV DIR [extra]` and waits until it serves.
    pub fn mount(&self, rev: &str, dir: &Path, extra: &[&str]) -> Mount {
        self.mount_with(&[], rev, dir, extra)
    }

    pub fn mount_with(&self, global: &[&str], rev: &str, dir: &Path, extra: &[&str]) -> Mount {
        self.try_mount_env(&[], global, rev, dir, extra)
            .unwrap_or_else(|log| panic!("{log}"))
    }
}

impl Mount {
    /// The pid of the mount process.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map(|c| c.id()).unwrap_or(0)
    }

    /// Unmounts cleanly (SIGTERM) and waits; panics if the process reports an error.
    pub fn unmount(mut self) {
        let mut child = self.child.take().unwrap();
        // SAFETY: sending SIGTERM to our own child.
        unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
        let status = child.wait().unwrap();
        assert!(status.success(), "mount process exited with {status}");
        assert!(
            !is_mounted(&self.dir),
            "still mounted after the process exited"
        );
    }

    /// Kills the mount process with SIGKILL (a crash), leaving a dead mount behind.
    pub fn crash(mut self) {
        let mut child = self.child.take().unwrap();
        child.kill().unwrap();
        child.wait().unwrap();
        // The dead FUSE mount stays until detached; the next `quackfs mount` clears it.
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            // SAFETY: sending SIGTERM to our own child.
            unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
            loop {
                match child.try_wait() {
                    Ok(Some(_)) => break,
                    _ if std::time::Instant::now() > deadline => {
                        let _ = child.kill();
                        let _ = child.wait();
                        break;
                    }
                    _ => std::thread::sleep(std::time::Duration::from_millis(20)),
                }
            }
        }
        if is_mounted(&self.dir) {
            if let Ok(c) = std::ffi::CString::new(self.dir.as_os_str().as_encoded_bytes()) {
                // SAFETY: valid path; detach whatever is left.
                unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) };
            }
        }
    }
}

// ------------------------------------------------------------------------------------------------
// Processes with extra environment variables (added for tests/backend_faults.rs). Setting
// variables on the test process itself would leak into tests running in parallel.

impl Env {
    /// `cmd()` with extra environment variables.
    pub fn cmd_env(&self, envs: &[(&str, &str)]) -> Command {
        let mut c = self.cmd();
        c.envs(envs.iter().copied());
        c
    }

    /// The log file of a mount started on `dir` (stdout and stderr of the mount process).
    pub fn mount_log(&self, dir: &Path) -> PathBuf {
        let name = dir
            .file_name()
            .map(|n| n.to_string_lossy().to_string())
            .unwrap_or_default();
        self.dir.path().join(format!("mount-{name}.log"))
    }

    /// Like `mount_with`, with extra environment variables for the mount process.
    pub fn mount_env(
        &self,
        envs: &[(&str, &str)],
        global: &[&str],
        rev: &str,
        dir: &Path,
        extra: &[&str],
    ) -> Mount {
        match self.try_mount_env(envs, global, rev, dir, extra) {
            Ok(m) => m,
            Err(log) => panic!("{log}"),
        }
    }

    /// Like `mount_env`, but a mount process that exits before mounting is an `Err` with its log.
    pub fn try_mount_env(
        &self,
        envs: &[(&str, &str)],
        global: &[&str],
        rev: &str,
        dir: &Path,
        extra: &[&str],
    ) -> Result<Mount, String> {
        std::fs::create_dir_all(dir).unwrap();
        let dir = std::fs::canonicalize(dir).unwrap();
        let log_path = self.mount_log(&dir);
        let log = std::fs::File::create(&log_path).unwrap();
        let child = self
            .std_cmd()
            .envs(envs.iter().copied())
            .args(global)
            .arg("mount")
            .arg(rev)
            .arg(&dir)
            .args(extra)
            .stdin(std::process::Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("start quackfs mount");
        let mut m = Mount {
            dir: dir.clone(),
            child: Some(child),
        };
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        while !is_mounted(&dir) {
            if let Some(status) = m.child.as_mut().unwrap().try_wait().unwrap() {
                m.child = None;
                let log = std::fs::read_to_string(&log_path).unwrap_or_default();
                return Err(format!(
                    "quackfs mount exited ({status}) before mounting: {log}"
                ));
            }
            assert!(
                std::time::Instant::now() < deadline,
                "mount not ready after 60 s"
            );
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        Ok(m)
    }
}

impl Mount {
    /// Stops the mount process with SIGTERM and waits for it (at most 60 s, then SIGKILL);
    /// returns its exit status whatever it is, detaching a mount it left behind.
    pub fn terminate(mut self) -> std::process::ExitStatus {
        let mut child = self.child.take().unwrap();
        // SAFETY: sending SIGTERM to our own child.
        unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        let status = loop {
            if let Some(status) = child.try_wait().unwrap() {
                break status;
            }
            if std::time::Instant::now() > deadline {
                let _ = child.kill();
                break child.wait().unwrap();
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        };
        // Drop detaches whatever is left.
        status
    }
}

/// The object store URL of `env`.
pub fn store_url(env: &Env) -> String {
    env.backend
        .iter()
        .find(|(k, _)| k == "QUACKFS_STORE")
        .map(|(_, v)| v.clone())
        .unwrap_or_else(|| format!("file://{}", env.home().join("objects").display()))
}

/// Runs `f` on the store of `env` (through the library, on a runtime of its own).
pub fn with_store<T>(env: &Env, f: impl AsyncFnOnce(quackfs::store::DynStore) -> T) -> T {
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let store = quackfs::engine::open_store(&store_url(env)).await.unwrap();
        f(store).await
    })
}

/// The entries of a directory (a mount's root), sorted.
pub fn listing(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
        .collect();
    v.sort();
    v
}

/// The Python duckdb module (1.4.4) in a process of its own, through tests/py/duckdb_driver.py:
/// its connections stay open across requests until closed (or the process is dropped).
pub struct Python {
    child: std::process::Child,
    stdin: std::process::ChildStdin,
    stdout: std::io::BufReader<std::process::ChildStdout>,
}

impl Python {
    pub fn start() -> Python {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/py/duckdb_driver.py");
        let mut child = std::process::Command::new("python3")
            .arg(script)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("start python3 (scripts/install-deps.sh installs the duckdb module)");
        let stdin = child.stdin.take().unwrap();
        let stdout = std::io::BufReader::new(child.stdout.take().unwrap());
        let mut p = Python {
            child,
            stdin,
            stdout,
        };
        let v = p.request(serde_json::json!({"op": "version"}));
        assert_eq!(
            v[0][0], "1.4.4",
            "the tests use the duckdb Python module 1.4.4 (scripts/install-deps.sh)"
        );
        p
    }

    /// One request (see the driver's docstring); its rows. A failed request fails the test.
    pub fn request(&mut self, req: serde_json::Value) -> serde_json::Value {
        writeln!(self.stdin, "{req}").unwrap();
        self.stdin.flush().unwrap();
        let mut line = String::new();
        self.stdout.read_line(&mut line).unwrap();
        let v: serde_json::Value =
            serde_json::from_str(&line).unwrap_or_else(|e| panic!("driver answered {line:?}: {e}"));
        assert_eq!(
            v["ok"], true,
            "python duckdb failed on {req}: {}",
            v["error"]
        );
        v["rows"].clone()
    }
}

impl Drop for Python {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

//! Shared helpers for integration tests: an isolated quackfs environment and the real duckdb CLI.
#![allow(dead_code)]

use assert_cmd::Command;
use std::path::{Path, PathBuf};
use std::process::Output;

/// A throwaway quackfs home (catalog, objects, state, config) and a work directory.
pub struct Env {
    pub dir: tempfile::TempDir,
}

impl Env {
    pub fn new() -> Env {
        let dir = tempfile::Builder::new()
            .prefix("quackfs-test-")
            .tempdir()
            .expect("tempdir");
        std::fs::create_dir_all(dir.path().join("work")).unwrap();
        Env { dir }
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

    /// `quackfs` with an isolated environment, run in the work directory.
    pub fn cmd(&self) -> Command {
        let mut c = Command::cargo_bin("quackfs").expect("binary");
        c.current_dir(self.work())
            .env("QUACKFS_HOME", self.home())
            .env("XDG_CONFIG_HOME", self.dir.path().join("config"))
            .env("QUACKFS_AUTHOR", "tester")
            .env_remove("QUACKFS_REPO")
            .env_remove("QUACKFS_CATALOG")
            .env_remove("QUACKFS_STORE")
            .env_remove("RUST_LOG");
        c
    }

    /// Runs quackfs, expecting success; returns stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.cmd().args(args).output().expect("run quackfs");
        assert!(
            out.status.success(),
            "quackfs {args:?} failed: {}\n{}",
            String::from_utf8_lossy(&out.stderr),
            String::from_utf8_lossy(&out.stdout)
        );
        String::from_utf8(out.stdout).expect("utf8 stdout")
    }

    /// Runs quackfs, expecting exit code 1 with one `error:` line; returns stderr.
    pub fn fails(&self, args: &[&str]) -> String {
        let out = self.cmd().args(args).output().expect("run quackfs");
        let stderr = String::from_utf8_lossy(&out.stderr).to_string();
        assert_eq!(
            out.status.code(),
            Some(1),
            "quackfs {args:?} should fail with 1: {stderr}"
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
        stderr
    }
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

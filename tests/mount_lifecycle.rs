//! A mount's life ends with its final sync and unmount, whatever happens to its output: a closed
//! stdout/stderr pipe (`quackfs mount … | tee log`, Ctrl-C kills tee first) or a full log disk
//! must never kill it or skip the final flush; and a final flush that fails is never reported as
//! a success.

mod common;
use common::{is_mounted, Env, Mount};
use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

/// Waits for the mount process to exit (at most 60 s); returns its exit status.
fn wait_exit(m: &mut Mount) -> std::process::ExitStatus {
    let child = m.child.as_mut().unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(st) = child.try_wait().unwrap() {
            m.child = None;
            return st;
        }
        assert!(Instant::now() < deadline, "the mount process did not exit");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Writes `data` to `name` in the mount without syncing it: only the final flush makes it durable.
fn write_unsynced(dir: &Path, name: &str, data: &[u8]) {
    let mut f = std::fs::File::create(dir.join(name)).unwrap();
    f.write_all(data).unwrap();
}

fn check_flushed(env: &Env, dir: &Path, name: &str, data: &[u8]) {
    assert!(!is_mounted(dir), "{} is still mounted", dir.display());
    let m = env.mount("life", dir, &[]);
    assert_eq!(
        std::fs::read(dir.join(name)).unwrap(),
        data,
        "the final flush did not happen"
    );
    m.unmount();
}

fn signal(m: &Mount, sig: i32) {
    // SAFETY: signalling our own child.
    unsafe { libc::kill(m.pid() as i32, sig) };
}

/// stdout and stderr are a pipe whose reader goes away (tee killed by the same Ctrl-C): the mount
/// still syncs, unmounts and exits normally.
fn closed_output_pipe(env: Env) {
    env.ok(&["init", "life"]);
    let dir = env.path("mnt");
    std::fs::create_dir_all(&dir).unwrap();
    let dir = std::fs::canonicalize(&dir).unwrap();
    let mut child = env
        .std_cmd()
        .args(["mount", "life"])
        .arg(&dir)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let stdout = child.stdout.take().unwrap();
    let mut m = Mount {
        dir: dir.clone(),
        child: Some(child),
    };
    // Read until the mount says it is ready, then close both pipes like a dead tee.
    let mut lines = BufReader::new(stderr).lines();
    loop {
        let line = lines.next().expect("mount output ended").unwrap();
        if line.starts_with("mounted ") {
            break;
        }
    }
    drop(lines);
    drop(stdout);
    assert!(is_mounted(&dir));
    let data = b"written after the terminal went away".repeat(1000);
    write_unsynced(&dir, "late.bin", &data);
    signal(&m, libc::SIGINT);
    let st = wait_exit(&mut m);
    assert!(st.success(), "the mount process ended with {st}");
    check_flushed(&env, &dir, "late.bin", &data);
}

/// The mount's log is on a full disk (/dev/full): same.
fn full_log_disk(env: Env) {
    env.ok(&["init", "life"]);
    let dir = env.path("mnt");
    std::fs::create_dir_all(&dir).unwrap();
    let dir = std::fs::canonicalize(&dir).unwrap();
    let full = || {
        std::fs::OpenOptions::new()
            .write(true)
            .open("/dev/full")
            .unwrap()
    };
    let child = env
        .std_cmd()
        .args(["-v", "mount", "life"])
        .arg(&dir)
        .stdin(Stdio::null())
        .stdout(full())
        .stderr(full())
        .spawn()
        .unwrap();
    let mut m = Mount {
        dir: dir.clone(),
        child: Some(child),
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    while !is_mounted(&dir) {
        assert!(Instant::now() < deadline, "not mounted");
        assert!(
            m.child.as_mut().unwrap().try_wait().unwrap().is_none(),
            "the mount died"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let data = b"logged nowhere".repeat(500);
    write_unsynced(&dir, "late.bin", &data);
    signal(&m, libc::SIGTERM);
    let st = wait_exit(&mut m);
    assert!(st.success(), "the mount process ended with {st}");
    check_flushed(&env, &dir, "late.bin", &data);
}

on_both_backends!(
    closed_output_pipe_embedded,
    closed_output_pipe_pgs3,
    closed_output_pipe
);
on_both_backends!(full_log_disk_embedded, full_log_disk_pgs3, full_log_disk);

/// A small tmpfs, unmounted when dropped (even if the test fails).
struct Tmpfs(std::path::PathBuf);

impl Tmpfs {
    fn new(dir: std::path::PathBuf, size: &str) -> Tmpfs {
        std::fs::create_dir_all(&dir).unwrap();
        let st = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(&dir)
            .status()
            .expect("run mount");
        assert!(st.success(), "this test mounts a tmpfs and needs root");
        Tmpfs(dir)
    }

    /// Fills the file system up with a ballast file.
    fn fill(&self) {
        let mut f = std::fs::File::create(self.0.join("ballast")).unwrap();
        let block = vec![0xa5u8; 64 * 1024];
        while f.write_all(&block).is_ok() {}
        let _ = f.sync_all();
    }

    fn free(&self) {
        std::fs::remove_file(self.0.join("ballast")).unwrap();
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(&self.0)
            .status();
    }
}

fn duck(db: &Path, sql: &str) -> std::process::Output {
    common::duckdb_raw(db, sql, &[])
}

fn checkpoint_commits(env: &Env, global: &[&str]) -> usize {
    let out = env
        .cmd()
        .args(global)
        .args(["log", "--json"])
        .output()
        .unwrap();
    let log: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    log.as_array()
        .unwrap()
        .iter()
        .filter(|c| c["kind"] == "checkpoint")
        .count()
}

/// The catalog's disk fills up: DuckDB's commits fail with ENOSPC ("No space left on device",
/// not EIO), later ones too while it is full, and everything works again once space is freed.
#[test]
fn full_catalog_disk_is_enospc_and_recovers() {
    let env = Env::new();
    let small = Tmpfs::new(env.path("catalog-disk"), "8m");
    let url = format!("sqlite://{}/catalog.sqlite", small.0.display());
    let global = ["--catalog", url.as_str()];
    let run = |args: &[&str]| env.cmd().args(global).args(args).output().unwrap();
    assert!(run(&["init", "full"]).status.success());
    let dir = env.path("mnt");
    let m = env.mount_with(&global, "full", &dir, &[]);
    let db = dir.join("full.duckdb");
    let ok = duck(
        &db,
        "CREATE TABLE t AS SELECT range AS id FROM range(1000); CHECKPOINT",
    );
    assert!(ok.status.success());
    assert_eq!(checkpoint_commits(&env, &global), 1);

    small.fill();
    for k in 0..2 {
        let out = duck(&db, &format!("INSERT INTO t VALUES (-{k})"));
        let e = String::from_utf8_lossy(&out.stderr);
        assert!(
            !out.status.success(),
            "a commit on a full catalog disk succeeded"
        );
        assert!(e.contains("No space left on device"), "not ENOSPC: {e}");
    }
    small.free();
    let out = duck(
        &db,
        "INSERT INTO t VALUES (-5); CHECKPOINT; SELECT count(*) FROM t",
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("1001"));
    assert_eq!(checkpoint_commits(&env, &global), 2);
    m.unmount();
}

/// The data directory's disk (objects and the embedded catalog) fills up during a large
/// checkpoint: it fails, and once space is freed DuckDB's own recovery works, the next
/// checkpoint becomes a commit and every commit opens.
#[test]
fn full_data_disk_fails_a_checkpoint_and_recovers() {
    let env = Env::new();
    let small = Tmpfs::new(env.path("data-disk"), "96m");
    let home = small.0.join("home");
    let global: [&str; 0] = [];
    let cmd = || {
        let mut c = env.cmd();
        c.env("QUACKFS_HOME", &home).args(global);
        c
    };
    assert!(cmd()
        .args(["init", "full"])
        .output()
        .unwrap()
        .status
        .success());
    let dir = env.path("mnt");
    let m = env.mount_env(
        &[("QUACKFS_HOME", home.to_str().unwrap())],
        &global,
        "full",
        &dir,
        &[],
    );
    let db = dir.join("full.duckdb");
    let out = duck(
        &db,
        "CREATE TABLE t AS SELECT range AS id, md5(range::VARCHAR) AS h FROM range(1000000); CHECKPOINT",
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    small.fill();
    let out = duck(&db, "UPDATE t SET h = md5((id + 1)::VARCHAR); CHECKPOINT");
    assert!(
        !out.status.success(),
        "a checkpoint on a full disk succeeded"
    );
    small.free();
    let out = duck(
        &db,
        "UPDATE t SET h = 'x' WHERE id < 10; CHECKPOINT; SELECT count(*), count(*) FILTER (h = 'x') FROM t",
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("1000000"));
    let n = {
        let out = cmd().args(["log", "--json"]).output().unwrap();
        let log: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        let ids: Vec<String> = log
            .as_array()
            .unwrap()
            .iter()
            .filter(|c| c["kind"] == "checkpoint")
            .map(|c| c["id"].as_str().unwrap().to_string())
            .collect();
        for id in &ids {
            let ro = env.path(&format!("ro-{}", &id[..8]));
            let r = env.mount_env(
                &[("QUACKFS_HOME", home.to_str().unwrap())],
                &global,
                &format!("full@{id}"),
                &ro,
                &[],
            );
            let out = common::duckdb_raw(
                &ro.join("full.duckdb"),
                "SELECT count(*) FROM t",
                &["-readonly"],
            );
            assert!(
                out.status.success(),
                "commit {id}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "1000000");
            r.unmount();
        }
        ids.len()
    };
    assert!(n >= 2, "no checkpoint commit after the disk was freed");
    m.unmount();
}

/// The final sync at unmount fails (the data disk is full): `quackfs umount` says so and exits
/// non-zero; a lost write is never reported as a success.
#[test]
fn umount_reports_a_failed_final_sync() {
    let env = Env::new();
    let small = Tmpfs::new(env.path("data-disk"), "64m");
    let home = small.0.join("home");
    let home_env = [("QUACKFS_HOME", home.to_str().unwrap())];
    let run = |args: &[&str]| env.cmd_env(&home_env).args(args).output().unwrap();
    assert!(run(&["init", "lost"]).status.success());
    let dir = env.path("mnt");
    let m = env.mount_env(&home_env, &[], "lost", &dir, &[]);
    // 8 MiB written and never synced: only the final sync at unmount could keep it.
    write_unsynced(&dir, "unsynced.bin", &vec![0x5au8; 8 << 20]);
    small.fill();
    let out = run(&["umount", dir.to_str().unwrap()]);
    let e = String::from_utf8_lossy(&out.stderr);
    let log = std::fs::read_to_string(env.mount_log(&dir)).unwrap_or_default();
    assert_ne!(
        out.status.code(),
        Some(0),
        "umount reported success: {e}\nmount log: {log}"
    );
    assert!(
        e.starts_with("error: ") && e.contains("lost") && e.contains("No space left on device"),
        "{e}"
    );
    assert!(e.contains("\nhint: "), "{e}");
    assert!(!is_mounted(&dir));
    drop(m);
    small.free();
    // A clean unmount reports success.
    let m = env.mount_env(&home_env, &[], "lost", &dir, &[]);
    write_unsynced(&dir, "fine.bin", b"fine");
    let out = run(&["umount", dir.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    drop(m);
}

/// `commit` seals what is synced. Asked while the branch's mount holds bytes written but not
/// synced (a file written by anything but DuckDB, say), its "nothing to commit" says so and how to
/// sync them, and a commit of other, synced bytes notes what it left out; once synced they commit,
/// and the next "nothing to commit" says nothing of a mount.
#[test]
fn commit_says_when_the_mount_holds_unsynced_writes() {
    let env = Env::new();
    env.ok(&["init", "life"]);
    let dir = env.path("mnt");
    let m = env.mount("life", &dir, &[]);
    write_unsynced(&dir, "export.csv", &vec![b'x'; 300 << 10]);
    let e = env.fails_with(4, &["commit", "-m", "export"]);
    assert!(e.contains("error: nothing to commit"), "{e}");
    let held = format!(
        "the mount at {} holds 300.0 KiB written but not synced",
        dir.display()
    );
    assert!(e.contains(&format!("hint: {held}")), "{e}");
    assert!(e.contains("`sync FILE`"), "{e}");
    let status = env.ok(&["status"]);
    assert!(
        status.contains("; 300.0 KiB written, not synced yet)"),
        "{status}"
    );
    std::fs::File::open(dir.join("export.csv"))
        .unwrap()
        .sync_all()
        .unwrap();
    // A commit of what is synced, while another file is held unsynced: it says what it left out.
    write_unsynced(&dir, "later.csv", &vec![b'y'; 100 << 10]);
    // (Once the mount's figures, reported each second, show it.)
    let mut status = String::new();
    for _ in 0..50 {
        status = env.ok(&["status"]);
        if status.contains("; 100.0 KiB written, not synced yet)") {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    assert!(
        status.contains("; 100.0 KiB written, not synced yet)"),
        "{status}"
    );
    // (A commit that succeeds: its stderr.)
    let commit = |msg: &str| {
        let out = env.std_cmd().args(["commit", "-m", msg]).output().unwrap();
        let e = String::from_utf8_lossy(&out.stderr).to_string();
        assert!(out.status.success(), "{e}");
        e
    };
    let e = commit("export");
    let left_out = format!(
        "note: not in this commit: the mount at {} holds 100.0 KiB written but not synced",
        dir.display()
    );
    assert!(e.contains(&left_out), "{e}");
    let show = env.ok(&["show", "main"]);
    assert!(
        show.contains("export.csv") && !show.contains("later.csv"),
        "{show}"
    );
    std::fs::File::open(dir.join("later.csv"))
        .unwrap()
        .sync_all()
        .unwrap();
    let e = commit("later");
    assert!(!e.contains("not in this commit"), "{e}");
    let e = env.fails_with(4, &["commit", "-m", "again"]);
    assert!(e.contains("hint: use --allow-empty"), "{e}");
    assert!(!e.contains("not synced"), "{e}");
    let status = env.ok(&["status"]);
    assert!(!status.contains("not synced yet"), "{status}");
    m.unmount();
    let show = env.ok(&["show", "main"]);
    assert!(show.contains("export.csv"), "{show}");
}

/// Puts a file's mode back when dropped.
struct ModeGuard(std::path::PathBuf, u32);

impl Drop for ModeGuard {
    fn drop(&mut self) {
        use std::os::unix::fs::PermissionsExt;
        let _ = std::fs::set_permissions(&self.0, std::fs::Permissions::from_mode(self.1));
    }
}

/// Detaches a mount (as root) and kills the mount process left, if any, when dropped.
struct UserMountGuard {
    dir: std::path::PathBuf,
    run_dir: std::path::PathBuf,
}

impl Drop for UserMountGuard {
    fn drop(&mut self) {
        for e in std::fs::read_dir(&self.run_dir)
            .into_iter()
            .flatten()
            .flatten()
        {
            if e.path().extension().is_some_and(|x| x == "pid") {
                if let Some(pid) = std::fs::read_to_string(e.path())
                    .ok()
                    .and_then(|s| s.trim().parse::<i32>().ok())
                {
                    // SAFETY: a process of this test's own user-owned mount.
                    unsafe { libc::kill(pid, libc::SIGKILL) };
                }
            }
        }
        if is_mounted(&self.dir) {
            let _ = std::process::Command::new("umount")
                .arg("-l")
                .arg(&self.dir)
                .status();
        }
    }
}

/// A user other than root (as most people run it) mounts a database, writes through the mount,
/// and after the mount process is killed mounts it again: fusermount3 makes and clears such
/// mounts, and refuses `allow_other` to users unless /etc/fuse.conf allows it.
#[test]
fn a_user_other_than_root_mounts_and_remounts_after_a_kill() {
    use std::os::unix::fs::PermissionsExt;
    // SAFETY: geteuid cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("skipped: running quackfs as another user needs root");
        return;
    }
    let env = Env::new();
    let top = env.dir.path();
    let nobody = 65534;
    std::fs::set_permissions(top, std::fs::Permissions::from_mode(0o755)).unwrap();
    let bin = top.join("quackfs");
    std::fs::copy(assert_cmd::cargo::cargo_bin("quackfs"), &bin).unwrap();
    std::fs::set_permissions(&bin, std::fs::Permissions::from_mode(0o755)).unwrap();
    let home = top.join("user");
    let mnt = home.join("m");
    std::fs::create_dir_all(&mnt).unwrap();
    std::os::unix::fs::chown(&home, Some(nobody), Some(nobody)).unwrap();
    std::os::unix::fs::chown(&mnt, Some(nobody), Some(nobody)).unwrap();
    // Debian's /dev/fuse is open to everyone; some images keep it to root.
    let dev = std::path::Path::new("/dev/fuse");
    let mode = std::fs::metadata(dev).unwrap().permissions().mode() & 0o7777;
    let _mode = ModeGuard(dev.to_path_buf(), mode);
    std::fs::set_permissions(dev, std::fs::Permissions::from_mode(0o666)).unwrap();
    let data_dir = home.join("data");
    let _mounted = UserMountGuard {
        dir: mnt.clone(),
        run_dir: data_dir.join("run"),
    };
    let as_user = |prog: &std::path::Path, args: &[&str]| {
        let out = std::process::Command::new("setpriv")
            .args(["--reuid=65534", "--regid=65534", "--clear-groups", "--"])
            .arg(prog)
            .args(args)
            .current_dir(&home)
            .env("HOME", &home)
            .env("QUACKFS_HOME", &data_dir)
            .env_remove("QUACKFS_CATALOG")
            .env_remove("QUACKFS_STORE")
            .env_remove("QUACKFS_REPO")
            .env_remove("XDG_CONFIG_HOME")
            .env_remove("XDG_DATA_HOME")
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).to_string(),
            String::from_utf8_lossy(&out.stderr).to_string(),
        )
    };
    let quackfs = |args: &[&str]| {
        let (code, stdout, stderr) = as_user(&bin, args);
        assert_eq!(code, Some(0), "quackfs {args:?}: {stderr}");
        stdout
    };
    let sh = |script: &str| {
        let (code, stdout, stderr) = as_user(std::path::Path::new("/bin/sh"), &["-c", script]);
        assert_eq!(code, Some(0), "{script}: {stderr}");
        stdout
    };
    quackfs(&["init", "db"]);
    quackfs(&["mount", "db", "m", "--daemon"]);
    assert!(is_mounted(&mnt));
    sh("printf 'written by nobody' > m/f.txt && sync m/f.txt");
    quackfs(&["commit", "-m", "one file"]);
    // kill -9 of the mount process leaves a dead mount behind.
    let pid_file = std::fs::read_dir(data_dir.join("run"))
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|x| x == "pid"))
        .expect("the mount's run file");
    let pid: i32 = std::fs::read_to_string(&pid_file)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    // SAFETY: the mount process this test started.
    unsafe { libc::kill(pid, libc::SIGKILL) };
    let deadline = Instant::now() + Duration::from_secs(10);
    while quackfs_alive(pid) {
        assert!(
            Instant::now() < deadline,
            "the mount process outlived SIGKILL"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(is_mounted(&mnt), "the dead mount is still there");
    quackfs(&["mount", "db", "m", "--daemon"]);
    assert_eq!(sh("cat m/f.txt"), "written by nobody");
    quackfs(&["umount", "m"]);
    assert!(!is_mounted(&mnt));
    let log = quackfs(&["log", "--json"]);
    assert!(log.contains("one file"), "{log}");
}

/// Whether process `pid` still exists (a zombie counts as gone).
fn quackfs_alive(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| !s.contains(") Z "))
        .unwrap_or(false)
}

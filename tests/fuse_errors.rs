//! Mounting and unmounting with bad input gives one clear `error:` line and exit 1, and leaves no
//! mount behind; read-only mounts refuse writes with EROFS; one writer per branch (the refusal
//! names the holder); `umount` returns only once the mount process is gone and the branch free;
//! `mount --daemon` returns once the mount serves.

mod common;
use common::{is_mounted, Env};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// A database `db` with two commits of `f.bin` (10 KB of 1s, then 20 KB of 2s), tag `v1` on the
/// first; returns the two commit ids.
fn setup(env: &Env) -> (String, String) {
    std::fs::write(env.path("f.bin"), vec![1u8; 10_000]).unwrap();
    env.ok(&["init", "db", "--import", "f.bin", "-m", "first"]);
    env.ok(&["tag", "v1"]);
    let show: serde_json::Value =
        serde_json::from_str(&env.ok(&["show", "main", "--json"])).unwrap();
    let c1 = show["commit"]["id"].as_str().unwrap().to_string();
    std::fs::write(env.path("f.bin"), vec![2u8; 20_000]).unwrap();
    let c2 = env
        .ok(&["import", "f.bin", "-m", "second"])
        .trim()
        .to_string();
    std::fs::remove_file(env.path("f.bin")).unwrap();
    (c1, c2)
}

/// How many mounts sit on `dir`.
fn mount_count(dir: &Path) -> usize {
    let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let want = dir.to_string_lossy().replace(' ', "\\040");
    info.lines()
        .filter(|l| l.split(' ').nth(4) == Some(want.as_str()))
        .count()
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// An empty directory under the work directory, by absolute (canonical) path.
fn empty_dir(env: &Env, name: &str) -> PathBuf {
    let p = env.path(name);
    std::fs::create_dir_all(&p).unwrap();
    std::fs::canonicalize(p).unwrap()
}

fn is_erofs(e: &std::io::Error) -> bool {
    e.kind() == std::io::ErrorKind::ReadOnlyFilesystem || e.raw_os_error() == Some(libc::EROFS)
}

#[test]
fn bad_mount_points_and_revisions() {
    let env = Env::new();
    setup(&env);

    let missing = env.path("missing");
    let e = env.fails(&["mount", "db", s(&missing)]);
    assert!(e.contains("does not exist"), "{e}");
    assert!(e.contains("missing"), "{e}");
    assert!(
        !missing.exists(),
        "a missing mount point must not be created"
    );

    std::fs::write(env.path("afile"), b"x").unwrap();
    let e = env.fails(&["mount", "db", "afile"]);
    assert!(e.contains("afile is not a directory"), "{e}");
    assert_eq!(std::fs::read(env.path("afile")).unwrap(), b"x");

    let full = empty_dir(&env, "full");
    std::fs::write(full.join("keep"), b"k").unwrap();
    let e = env.fails(&["mount", "db", s(&full)]);
    assert!(e.contains("is not empty"), "{e}");
    assert!(!is_mounted(&full));
    assert_eq!(std::fs::read(full.join("keep")).unwrap(), b"k");

    // A directory the mount itself writes into (its scratch, temporary, run or log files, the
    // local store): its own writes would go through the mount and wait on it for ever.
    std::fs::create_dir_all(env.home().join("scratch/new")).unwrap();
    std::fs::create_dir_all(env.home().join("logs/sub")).unwrap();
    for own in ["tmp", "objects/.tmp", "scratch/new", "logs/sub"] {
        let dir = std::fs::canonicalize(env.home().join(own)).unwrap();
        let e = env.fails(&["mount", "db", s(&dir)]);
        assert!(
            e.contains(&format!("mount point {} is ", dir.display()))
                && e.contains("which the mount itself writes to"),
            "{own}: {e}"
        );
        assert!(!is_mounted(&dir), "{own}");
    }
    // Elsewhere in the data directory is fine (nothing of the mount's is there).
    let beside = env.home().join("mnt");
    std::fs::create_dir_all(&beside).unwrap();
    let mount = env.mount("db", &beside, &[]);
    assert_eq!(
        std::fs::read(beside.join("f.bin")).unwrap(),
        vec![2u8; 20_000]
    );
    mount.unmount();

    let m = empty_dir(&env, "m");
    for (rev, want) in [
        (
            "db@nosuch",
            "unknown revision \"nosuch\" in database \"db\"",
        ),
        ("nosuch", "unknown revision \"nosuch\" in database \"db\""),
        ("db@main~7", "main~7: main has only"),
        ("nope@main", "database \"nope\" does not exist"),
        ("db@bad^rev", "invalid revision"),
    ] {
        let e = env.fails(&["mount", rev, s(&m)]);
        assert!(e.contains(want), "mount {rev}: {e}");
        assert!(!is_mounted(&m), "mount {rev} left a mount behind");
    }
    // Nothing kept the branch: a writable mount works now.
    let mount = env.mount("db", &m, &[]);
    assert_eq!(std::fs::read(m.join("f.bin")).unwrap(), vec![2u8; 20_000]);
    mount.unmount();

    // umount of something that is not a mount.
    let e = env.fails(&["umount", s(&m)]);
    assert!(e.contains("is not a mount point"), "{e}");
    let e = env.fails(&["umount", s(&missing)]);
    assert!(e.contains("is not a mount point"), "{e}");
}

#[test]
fn one_writer_per_branch_and_readers_alongside() {
    let env = Env::new();
    setup(&env);
    let m1 = empty_dir(&env, "m1");
    let writer = env.mount("db", &m1, &[]);

    // The same directory again.
    let e = env.fails(&["mount", "db", s(&m1)]);
    assert!(e.contains("already a mount point"), "{e}");
    assert!(
        e.contains(&format!("quackfs umount {}", m1.display())),
        "{e}"
    );
    let e = env.fails(&["mount", "db", s(&m1), "--read-only"]);
    assert!(e.contains("already a mount point"), "{e}");
    assert_eq!(mount_count(&m1), 1, "a second mount was stacked on {m1:?}");

    // A second writer of the same branch elsewhere: refused, naming the holder.
    let m2 = empty_dir(&env, "m2");
    let e = env.fails(&["mount", "db", s(&m2)]);
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .unwrap()
        .trim()
        .to_string();
    assert!(
        e.contains("branch main of db is already mounted writable"),
        "{e}"
    );
    assert!(e.contains(&format!("host={host}")), "{e}");
    assert!(e.contains(&format!("pid={}", writer.pid())), "{e}");
    assert!(e.contains(&format!("dir={}", m1.display())), "{e}");
    assert!(e.contains("--read-only"), "{e}");
    assert!(!is_mounted(&m2));
    let e = env.fails(&["mount", "db@main", s(&m2)]);
    assert!(e.contains("already mounted writable"), "{e}");
    assert!(!is_mounted(&m2));

    // A reader alongside the writer works, and serves the last commit.
    std::fs::write(m1.join("new.bin"), b"pending").unwrap();
    let reader = env.mount("db", &m2, &["--read-only"]);
    assert_eq!(std::fs::read(m2.join("f.bin")).unwrap(), vec![2u8; 20_000]);
    let err = std::fs::write(m2.join("f.bin"), b"no").unwrap_err();
    assert!(is_erofs(&err), "{err:?}");
    // The writer is unaffected.
    std::fs::write(m1.join("f.bin"), b"changed").unwrap();
    assert_eq!(std::fs::read(m1.join("f.bin")).unwrap(), b"changed");
    reader.unmount();
    writer.unmount();
}

#[test]
fn read_only_mounts_refuse_writes() {
    let env = Env::new();
    let (c1, c2) = setup(&env);
    let first = vec![1u8; 10_000];
    let second = vec![2u8; 20_000];
    let cases: Vec<(String, Vec<&str>, &Vec<u8>)> = vec![
        ("db@v1".into(), vec![], &first),
        ("v1".into(), vec![], &first),
        (format!("db@{c1}"), vec![], &first),
        (c2[..12].to_string(), vec![], &second),
        ("db@main~1".into(), vec![], &first),
        ("db".into(), vec!["--read-only"], &second),
    ];
    for (i, (rev, extra, want)) in cases.iter().enumerate() {
        let dir = empty_dir(&env, &format!("ro{i}"));
        let mount = env.mount(rev, &dir, extra);
        let f = dir.join("f.bin");
        assert_eq!(&std::fs::read(&f).unwrap(), *want, "{rev}");
        let check = |what: &str, r: std::io::Result<()>| match r {
            Err(e) if is_erofs(&e) => {}
            other => panic!("{rev}: {what} should fail with EROFS, got {other:?}"),
        };
        check("overwriting", std::fs::write(&f, b"x"));
        check(
            "opening for append",
            std::fs::OpenOptions::new()
                .append(true)
                .open(&f)
                .map(|_| ()),
        );
        check(
            "truncating",
            std::fs::OpenOptions::new()
                .write(true)
                .truncate(true)
                .open(&f)
                .map(|_| ()),
        );
        check("creating", std::fs::write(dir.join("new"), b"x"));
        check("removing", std::fs::remove_file(&f));
        check("renaming", std::fs::rename(&f, dir.join("g.bin")));
        check("mkdir", std::fs::create_dir(dir.join("sub")));
        // Still intact.
        assert_eq!(&std::fs::read(&f).unwrap(), *want, "{rev}");
        let names: Vec<String> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names, vec!["f.bin".to_string()], "{rev}");
        mount.unmount();
    }
    // Read-only mounts never took the branch: a writer mounts right away.
    let dir = empty_dir(&env, "rw");
    let mount = env.mount("db", &dir, &[]);
    assert_eq!(std::fs::read(dir.join("f.bin")).unwrap(), second);
    mount.unmount();
}

#[test]
fn umount_waits_for_the_mount_process() {
    let env = Env::new();
    setup(&env);
    let m = empty_dir(&env, "m");
    let mut mount = env.mount("db", &m, &[]);
    let pid = mount.pid() as i32;
    // Unsynced writes: the mount process flushes them after the kernel unmount.
    let big: Vec<u8> = (0..3_000_000u32).map(|i| (i % 251) as u8).collect();
    std::fs::write(m.join("big.bin"), &big).unwrap();
    // Reap the foreground mount process as soon as it exits (as a shell would).
    let mut child = mount.child.take().unwrap();
    let reaper = std::thread::spawn(move || child.wait().unwrap());

    env.ok(&["umount", s(&m)]);
    assert!(!is_mounted(&m));
    assert!(
        !quackfs::process::is_running(pid),
        "umount returned while mount process {pid} still ran"
    );
    assert!(reaper.join().unwrap().success());
    // The branch is free at once, with everything written.
    let again = env.mount("db", &m, &[]);
    assert_eq!(std::fs::read(m.join("big.bin")).unwrap(), big);
    again.unmount();
    drop(mount);
}

/// A `mount --daemon` process: on drop, unmounts and ends it (by pid) if a test failed midway.
struct Daemon {
    dir: PathBuf,
    pid: Option<i32>,
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if is_mounted(&self.dir) {
            let c = std::ffi::CString::new(self.dir.as_os_str().as_encoded_bytes()).unwrap();
            // SAFETY: valid NUL-terminated path.
            unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) };
        }
        if let Some(pid) = self.pid {
            let deadline = Instant::now() + Duration::from_secs(20);
            while quackfs::process::is_running(pid) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(50));
            }
            if quackfs::process::is_running(pid) {
                // SAFETY: ending the daemon this test started, by its pid.
                unsafe { libc::kill(pid, libc::SIGKILL) };
            }
        }
    }
}

/// The pid recorded by the mount process of `dir` (under the data directory's `run/`).
fn daemon_pid(env: &Env) -> Option<i32> {
    let run = env.home().join("run");
    std::fs::read_dir(run)
        .ok()?
        .filter_map(|e| e.ok())
        .filter(|e| {
            let n = e.file_name().to_string_lossy().into_owned();
            n.starts_with("mount") && n.ends_with(".pid")
        })
        .find_map(|e| std::fs::read_to_string(e.path()).ok()?.trim().parse().ok())
}

#[test]
fn daemon_mount_returns_when_ready_and_umount_ends_it() {
    let env = Env::new();
    setup(&env);
    let m = empty_dir(&env, "m");
    let mut daemon = Daemon {
        dir: m.clone(),
        pid: None,
    };
    env.ok(&["mount", "--daemon", "db", s(&m)]);
    daemon.pid = daemon_pid(&env);
    assert!(
        is_mounted(&m),
        "mount --daemon returned before the mount was ready"
    );
    let pid = daemon.pid.expect("the daemon records its pid");
    assert!(quackfs::process::is_running(pid));
    assert_eq!(std::fs::read(m.join("f.bin")).unwrap(), vec![2u8; 20_000]);
    std::fs::write(m.join("f.bin"), b"daemon").unwrap();

    // A second daemon on the same branch is refused with the holder.
    let m2 = empty_dir(&env, "m2");
    let e = env.fails(&["mount", "--daemon", "db", s(&m2)]);
    assert!(e.contains(&format!("pid={pid}")), "{e}");
    assert!(!is_mounted(&m2));

    env.ok(&["umount", s(&m)]);
    assert!(!is_mounted(&m));
    assert!(
        !quackfs::process::is_running(pid),
        "umount returned while daemon {pid} still ran"
    );
    // Released and flushed: a foreground writer mounts at once and sees the write.
    let mount = env.mount("db", &m, &[]);
    assert_eq!(std::fs::read(m.join("f.bin")).unwrap(), b"daemon");
    mount.unmount();
    drop(daemon);
}

/// `-v` and `-q` reach a daemon mount's process: its log file (plain text, no terminal colours)
/// has the INFO lines asked for, and none without them.
#[test]
fn daemon_mount_logs_at_the_level_asked() {
    let env = Env::new();
    env.ok(&["init", "db"]);
    let logs = env.home().join("logs");
    let m = empty_dir(&env, "m");
    for (flags, info) in [(&["-v"][..], true), (&[][..], false), (&["-q"][..], false)] {
        let mut daemon = Daemon {
            dir: m.clone(),
            pid: None,
        };
        let _ = std::fs::remove_dir_all(&logs);
        let mut args = flags.to_vec();
        args.extend(["mount", "--daemon", "db", s(&m)]);
        env.ok(&args);
        daemon.pid = daemon_pid(&env);
        // A DuckDB checkpoint makes a commit, which the mount logs at INFO.
        common::duckdb(
            &m.join("db.duckdb"),
            "CREATE TABLE IF NOT EXISTS t(i INT); INSERT INTO t VALUES (1); CHECKPOINT",
        );
        env.ok(&["umount", s(&m)]);
        let log: String = std::fs::read_dir(&logs)
            .unwrap()
            .map(|e| std::fs::read_to_string(e.unwrap().path()).unwrap())
            .collect();
        assert_eq!(log.contains("checkpoint commit"), info, "{flags:?}: {log}");
        assert!(
            !log.contains('\u{1b}'),
            "terminal colours in a log file: {log}"
        );
        drop(daemon);
    }
}

/// `quackfs umount` returns once the mount process has exited even if its parent has not reaped
/// it yet (a zombie still answers kill(pid, 0)): e.g. a supervisor that spawned `quackfs mount`
/// runs `quackfs umount DIR` and only then waits for its child.
#[test]
fn regression_umount_does_not_wait_for_an_unreaped_mount_process() {
    let env = Env::new();
    setup(&env);
    let m = empty_dir(&env, "m");
    let mount = env.mount("db", &m, &[]);
    let mut umount = std::process::Command::new(assert_cmd::cargo::cargo_bin("quackfs"))
        .current_dir(env.work())
        .env("QUACKFS_HOME", env.home())
        .env("XDG_CONFIG_HOME", env.dir.path().join("config"))
        .arg("umount")
        .arg(&m)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(st) = umount.try_wait().unwrap() {
            break Some(st);
        }
        if Instant::now() > deadline {
            // End the umount we started, by its pid, before failing.
            let _ = umount.kill();
            let _ = umount.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    drop(mount); // reaps the mount process
    let status = status.expect("umount still waiting after 10 s for an exited mount process");
    assert!(status.success());
    assert!(!is_mounted(&m));
}

/// `--dirty-limit` below one write is refused (at 0 every write waited for ever); at the
/// smallest bound writes go on, each waiting for the last to be flushed, and nothing is lost.
#[test]
fn the_smallest_dirty_limit_still_writes() {
    let env = Env::new();
    setup(&env);
    let m = empty_dir(&env, "m");
    for small in ["0", "512KiB"] {
        let e = env.fails_with(2, &["mount", "db", s(&m), "--dirty-limit", small]);
        assert!(e.contains("at least 1.0 MiB"), "{small}: {e}");
        assert!(!is_mounted(&m));
    }
    let mount = env.mount("db", &m, &["--dirty-limit", "1MiB", "--cache-size", "0"]);
    let data: Vec<u8> = (0..8 << 20).map(|i: u32| (i % 251) as u8).collect();
    {
        use std::io::Write;
        let mut f = std::fs::File::create(m.join("big.bin")).unwrap();
        for chunk in data.chunks(300_000) {
            f.write_all(chunk).unwrap();
        }
        f.sync_all().unwrap();
    }
    assert!(std::fs::read(m.join("big.bin")).unwrap() == data);
    mount.unmount();
    env.ok(&["commit", "-m", "big"]);
    let out = env.path("out");
    env.ok(&["export", "main", s(&out)]);
    assert!(std::fs::read(out.join("big.bin")).unwrap() == data);
}

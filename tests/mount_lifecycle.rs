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

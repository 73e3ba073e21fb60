//! Whether a local process still runs (for `umount` waiting on a mount process, lease takeover of
//! dead same-host holders, and tests), and the holder strings that name a mount process in the
//! catalog.

/// The boot id of this kernel and the inode of this process' pid namespace: two holders with the
/// same pair see the same processes under the same pids (the hostname alone does not tell
/// containers or cloned VMs apart).
fn machine_id() -> String {
    let boot = std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
        .map(|b| {
            b.trim()
                .chars()
                .filter(|c| *c != '-')
                .take(16)
                .collect::<String>()
        })
        .unwrap_or_default();
    let pidns = std::fs::read_link("/proc/self/ns/pid")
        .map(|l| {
            l.to_string_lossy()
                .chars()
                .filter(char::is_ascii_digit)
                .collect::<String>()
        })
        .unwrap_or_default();
    format!("{boot}.{pidns}")
}

fn host_name() -> String {
    hostname::get()
        .ok()
        .and_then(|h| h.into_string().ok())
        .unwrap_or_else(|| "localhost".into())
}

/// How a mount process names itself as a lease or pin holder:
/// `host=NAME pid=N dir=DIR machine=BOOT.PIDNS`.
pub fn holder_string(dir: &std::path::Path) -> String {
    format!(
        "host={} pid={} dir={} machine={}",
        host_name(),
        std::process::id(),
        dir.display(),
        machine_id()
    )
}

/// One `key=value` field of a holder string (values other than `dir` hold no spaces; `dir` is
/// everything up to the next known key).
fn holder_field<'a>(holder: &'a str, key: &str) -> Option<&'a str> {
    let start = holder.find(&format!("{key}="))? + key.len() + 1;
    let rest = &holder[start..];
    let end = [" host=", " pid=", " dir=", " machine=", " follows="]
        .iter()
        .filter_map(|k| rest.find(k))
        .min()
        .unwrap_or(rest.len());
    Some(&rest[..end])
}

/// True if `holder` names a process on this machine (same host name, and the same kernel and
/// pid namespace when the holder records them) that no longer runs.
pub fn holder_is_dead(holder: &str) -> bool {
    let (Some(host), Some(pid)) = (
        holder_field(holder, "host"),
        holder_field(holder, "pid").and_then(|p| p.parse::<i32>().ok()),
    ) else {
        return false;
    };
    if host != host_name() {
        return false;
    }
    if let Some(machine) = holder_field(holder, "machine") {
        if machine != machine_id() {
            return false;
        }
    }
    !is_running(pid)
}

/// Whether `holder` names a process of this machine that still runs (its liveness needs no
/// heartbeat); false for other machines and for dead processes.
pub fn holder_runs_here(holder: &str) -> bool {
    let (Some(host), Some(pid)) = (
        holder_field(holder, "host"),
        holder_field(holder, "pid").and_then(|p| p.parse::<i32>().ok()),
    ) else {
        return false;
    };
    host == host_name()
        && holder_field(holder, "machine").is_some_and(|m| m == machine_id())
        && is_running(pid)
}

/// The branch a `--follow` mount's holder string follows, if it is one.
pub fn holder_follows(holder: &str) -> Option<&str> {
    holder_field(holder, "follows")
}

/// The directory a holder string names, if any.
pub fn holder_dir(holder: &str) -> Option<&str> {
    holder_field(holder, "dir")
}

/// Whether process `pid` exists and has not exited: a process of another user counts as running
/// (`kill` answers EPERM), an exited process not yet reaped by its parent (a zombie) does not.
pub fn is_running(pid: i32) -> bool {
    if pid <= 0 {
        return false;
    }
    // SAFETY: signal 0 sends nothing; it only checks that the process exists.
    if unsafe { libc::kill(pid, 0) } != 0
        && std::io::Error::last_os_error().raw_os_error() != Some(libc::EPERM)
    {
        return false;
    }
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        // The state letter follows the parenthesised command name.
        Ok(stat) => stat
            .rsplit_once(')')
            .map(|(_, rest)| !rest.trim_start().starts_with('Z'))
            .unwrap_or(true),
        // Gone between the two checks, or no /proc: trust kill.
        Err(e) => e.kind() != std::io::ErrorKind::NotFound,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn holders_of_live_and_dead_processes() {
        let me = holder_string(std::path::Path::new("/tmp/a dir with spaces"));
        assert!(!holder_is_dead(&me), "{me}");
        assert_eq!(holder_dir(&me), Some("/tmp/a dir with spaces"));
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let pid = child.id();
        child.wait().unwrap();
        let dead = me.replace(
            &format!("pid={}", std::process::id()),
            &format!("pid={pid}"),
        );
        assert!(holder_is_dead(&dead), "{dead}");
        // Another machine (or one that records no machine id, as older versions did).
        assert!(!holder_is_dead(&dead.replace("machine=", "machine=x")));
        let old = format!("host={} pid={pid} dir=/x", host_name());
        assert!(holder_is_dead(&old));
        assert!(!holder_is_dead(&format!("host=elsewhere pid={pid} dir=/x")));
        assert!(!holder_is_dead("garbage"));
    }

    #[test]
    fn running_exited_and_zombie() {
        assert!(is_running(std::process::id() as i32));
        assert!(!is_running(0));
        assert!(!is_running(-1));
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let pid = child.id() as i32;
        // Not reaped yet: a zombie once it exits.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while is_running(pid) && std::time::Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        assert!(!is_running(pid), "an exited, unreaped child is not running");
        child.wait().unwrap();
        assert!(!is_running(pid));
    }
}

//! Whether a local process still runs (for `umount` waiting on a mount process, lease takeover of
//! dead same-host holders, and tests).

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

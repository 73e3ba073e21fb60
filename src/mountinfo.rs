//! The mount table of this process (`/proc/self/mountinfo`): which directories are mount points,
//! of which filesystem type, and which of them are quackfs mounts (fsname `quackfs:REPO@REV`,
//! where REV is the branch of a writable mount or the short commit id of a read-only one).

use std::path::{Component, Path, PathBuf};

/// One line of the mount table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountEntry {
    pub mount_point: PathBuf,
    /// e.g. `fuse.quackfs`, `tmpfs`, `ext4`.
    pub fstype: String,
    /// The mount source; the fsname of a FUSE mount.
    pub source: String,
}

impl MountEntry {
    /// For a quackfs mount, its database and revision (`quackfs:REPO@REV`).
    pub fn quackfs(&self) -> Option<(&str, &str)> {
        if !self.fstype.starts_with("fuse") {
            return None;
        }
        self.source.strip_prefix("quackfs:")?.split_once('@')
    }
}

/// Undoes the octal escapes of mountinfo paths (`\040` is a space, `\134` a backslash, …).
fn unescape(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' && i + 4 <= b.len() {
            let oct = std::str::from_utf8(&b[i + 1..i + 4]).unwrap_or("");
            if let Ok(v) = u8::from_str_radix(oct, 8) {
                out.push(v);
                i += 4;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Parses the text of a mountinfo file; lines it does not understand are skipped.
pub fn parse(text: &str) -> Vec<MountEntry> {
    text.lines()
        .filter_map(|line| {
            let (left, right) = line.split_once(" - ")?;
            let mount_point = left.split(' ').nth(4)?;
            let mut r = right.split(' ');
            let fstype = r.next()?;
            let source = r.next().unwrap_or("");
            Some(MountEntry {
                mount_point: PathBuf::from(unescape(mount_point)),
                fstype: unescape(fstype),
                source: unescape(source),
            })
        })
        .collect()
}

/// This process's mount table, in mount order (empty if it cannot be read).
pub fn entries() -> Vec<MountEntry> {
    std::fs::read_to_string("/proc/self/mountinfo")
        .map(|t| parse(&t))
        .unwrap_or_default()
}

/// The mount on top at `dir` (an absolute, resolved path), if `dir` is a mount point.
pub fn at(dir: &Path) -> Option<MountEntry> {
    entries().into_iter().rev().find(|e| e.mount_point == dir)
}

/// The innermost mount containing `path` (an absolute, resolved path).
pub fn containing(path: &Path) -> Option<MountEntry> {
    entries()
        .into_iter()
        .rev()
        .filter(|e| path.starts_with(&e.mount_point))
        .max_by_key(|e| e.mount_point.components().count())
}

/// `path` made absolute with `.` and `..` removed, without touching the filesystem.
pub fn normalize(path: &Path) -> std::io::Result<PathBuf> {
    let abs = std::path::absolute(path)?;
    let mut out = PathBuf::new();
    for c in abs.components() {
        match c {
            Component::ParentDir => {
                out.pop();
            }
            Component::CurDir => {}
            other => out.push(other.as_os_str()),
        }
    }
    Ok(out)
}

/// Resolves `path` to the absolute path without symlinks, `.` or `..` that the mount table uses,
/// also when `path` is a dead FUSE mount (whose root cannot be stat'ed: `ENOTCONN`) or a symlink
/// to one: then its parent directory is resolved and symlinks in the last component followed.
pub fn resolve(path: &Path) -> std::io::Result<PathBuf> {
    if let Ok(p) = std::fs::canonicalize(path) {
        return Ok(p);
    }
    let mut p = normalize(path)?;
    for _ in 0..40 {
        let parent = match p.parent() {
            Some(parent) => std::fs::canonicalize(parent).unwrap_or_else(|_| parent.to_path_buf()),
            None => return Ok(p),
        };
        let Some(name) = p.file_name() else {
            return Ok(p);
        };
        let here = parent.join(name);
        match std::fs::read_link(&here) {
            Ok(target) => p = normalize(&parent.join(target))?,
            Err(_) => return Ok(here),
        }
    }
    Ok(p)
}

/// Unmounts the mount at `dir`; `lazy` detaches it (MNT_DETACH: it goes once the last process
/// using it lets go). Root unmounts it itself; any other user asks fusermount3 (`-u`, `-z` when
/// lazy), which unmounts the FUSE mounts the user made. A mount in use (EBUSY) is an error
/// unless lazy.
pub fn unmount(dir: &Path, lazy: bool) -> std::io::Result<()> {
    let c = std::ffi::CString::new(dir.as_os_str().as_encoded_bytes())
        .map_err(|_| std::io::Error::from(std::io::ErrorKind::InvalidInput))?;
    let flags = if lazy { libc::MNT_DETACH } else { 0 };
    // SAFETY: valid NUL-terminated path.
    if unsafe { libc::umount2(c.as_ptr(), flags) } == 0 {
        return Ok(());
    }
    let denied = std::io::Error::last_os_error();
    if denied.raw_os_error() == Some(libc::EBUSY) {
        return Err(denied);
    }
    let mut fusermount = std::process::Command::new("fusermount3");
    fusermount.arg("-u");
    if lazy {
        fusermount.arg("-z");
    }
    let out = fusermount
        .arg(dir)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .output();
    match out {
        Ok(o) if o.status.success() => Ok(()),
        Ok(o) => Err(std::io::Error::other(format!(
            "{denied}; fusermount3: {}",
            String::from_utf8_lossy(&o.stderr).trim()
        ))),
        Err(e) => Err(std::io::Error::other(format!(
            "{denied}; fusermount3 cannot run: {e}"
        ))),
    }
}

/// Whether `dir` is a dead FUSE mount: the process that served it is gone (killed), so its root
/// cannot be stat'ed (`ENOTCONN`).
pub fn is_dead(dir: &Path) -> bool {
    std::fs::metadata(dir).is_err_and(|e| e.raw_os_error() == Some(libc::ENOTCONN))
}

/// Detaches the mount at `dir` ([`unmount`], lazily).
pub fn lazy_unmount(dir: &Path) -> std::io::Result<()> {
    unmount(dir, true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_mountinfo_lines() {
        let text = "\
22 1 0:21 / / rw,relatime shared:1 - ext4 /dev/vda rw
98 22 0:52 / /tmp/my\\040dir rw,nosuid,nodev,relatime shared:60 - fuse.quackfs quackfs:shop@main rw,user_id=0
99 22 0:53 / /tmp/t rw master:3 - tmpfs tmpfs rw,size=3072k
garbage line";
        let e = parse(text);
        assert_eq!(e.len(), 3);
        assert_eq!(e[1].mount_point, PathBuf::from("/tmp/my dir"));
        assert_eq!(e[1].quackfs(), Some(("shop", "main")));
        assert_eq!(e[2].fstype, "tmpfs");
        assert_eq!(e[2].quackfs(), None);
        assert_eq!(e[0].quackfs(), None);
        assert_eq!(unescape("a\\134b\\011"), "a\\b\t");
        assert_eq!(unescape("trailing\\04"), "trailing\\04");
    }

    #[test]
    fn normalizes_paths() {
        assert_eq!(
            normalize(Path::new("/a/./b/../c/")).unwrap(),
            PathBuf::from("/a/c")
        );
        assert_eq!(normalize(Path::new("/..")).unwrap(), PathBuf::from("/"));
    }
}

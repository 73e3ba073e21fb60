//! Scratch entries: directories created in a mount (DuckDB's `<db>.tmp/` spill directory) and
//! everything inside them live in a private local directory, unversioned.

use super::{Attr, FsError, FsResult, Kind};
use std::os::unix::fs::{FileExt, MetadataExt, OpenOptionsExt};
use std::path::Path;
use std::time::{Duration, SystemTime};

fn io(e: std::io::Error) -> FsError {
    FsError::from_io(&e)
}

fn time(secs: i64, nsecs: i64) -> SystemTime {
    if secs >= 0 {
        SystemTime::UNIX_EPOCH + Duration::new(secs as u64, nsecs.clamp(0, 999_999_999) as u32)
    } else {
        SystemTime::UNIX_EPOCH
    }
}

pub(super) fn attr(ino: u64, path: &Path) -> FsResult<Attr> {
    let m = std::fs::symlink_metadata(path).map_err(io)?;
    attr_of(ino, &m)
}

pub(super) fn attr_of(ino: u64, m: &std::fs::Metadata) -> FsResult<Attr> {
    Ok(Attr {
        ino,
        kind: if m.is_dir() { Kind::Dir } else { Kind::File },
        size: m.len(),
        perm: (m.mode() & 0o7777) as u16,
        nlink: m.nlink() as u32,
        atime: time(m.atime(), m.atime_nsec()),
        mtime: time(m.mtime(), m.mtime_nsec()),
        ctime: time(m.ctime(), m.ctime_nsec()),
    })
}

pub(super) fn list(path: &Path) -> FsResult<Vec<(String, Kind)>> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(path).map_err(io)? {
        let e = e.map_err(io)?;
        let kind = if e.file_type().map_err(io)?.is_dir() {
            Kind::Dir
        } else {
            Kind::File
        };
        if let Ok(name) = e.file_name().into_string() {
            out.push((name, kind));
        }
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(out)
}

pub(super) fn mkdir(path: &Path, mode: u32) -> FsResult<()> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .mode(mode & 0o7777)
        .create(path)
        .map_err(io)
}

pub(super) fn open(path: &Path, flags: i32, mode: u32) -> FsResult<std::fs::File> {
    let acc = flags & libc::O_ACCMODE;
    std::fs::OpenOptions::new()
        .read(acc == libc::O_RDONLY || acc == libc::O_RDWR)
        .write(acc == libc::O_WRONLY || acc == libc::O_RDWR)
        .custom_flags(flags & (libc::O_CREAT | libc::O_EXCL | libc::O_TRUNC | libc::O_APPEND))
        .mode(if mode == 0 { 0o644 } else { mode & 0o7777 })
        .open(path)
        .map_err(io)
}

pub(super) fn read(file: &std::fs::File, off: u64, size: u32) -> FsResult<Vec<u8>> {
    let mut buf = vec![0u8; size as usize];
    let mut n = 0;
    while n < buf.len() {
        match file.read_at(&mut buf[n..], off + n as u64) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(io(e)),
        }
    }
    buf.truncate(n);
    Ok(buf)
}

pub(super) fn write(file: &std::fs::File, off: u64, data: &[u8]) -> FsResult<u32> {
    file.write_all_at(data, off).map_err(io)?;
    Ok(data.len() as u32)
}

/// Free 4 KiB blocks on the filesystem holding `path`.
pub(super) fn free_blocks(path: &Path) -> Option<u64> {
    let c = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).ok()?;
    let mut s: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: `c` is a valid NUL-terminated path and `s` a valid out-pointer.
    let rc = unsafe { libc::statvfs(c.as_ptr(), &mut s) };
    (rc == 0).then(|| s.f_bavail as u64 * s.f_frsize as u64 / 4096)
}

//! The thin fuser adapter: translates FUSE requests into [`QuackFs`] calls and results into
//! replies. Fast in-memory operations answer on the FUSE thread; anything that may wait on the
//! object store or the catalog (read, fsync, create, rename, unlink) runs as a task on the tokio
//! runtime and replies from there, so one slow upload never blocks other requests.

pub mod snapshot;

use crate::fs::{Attr, FsError, FsResult, Kind, QuackFs};
use fuser::{
    Errno, FileAttr, FileHandle, FileType, Filesystem, FopenFlags, Generation, INodeNo, InitFlags,
    KernelConfig, LockOwner, OpenFlags, RenameFlags, ReplyAttr, ReplyCreate, ReplyData,
    ReplyDirectory, ReplyEmpty, ReplyEntry, ReplyOpen, ReplyStatfs, ReplyWrite, Request, TimeOrNow,
    WriteFlags,
};
use std::ffi::OsStr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

/// Largest write the kernel sends in one request.
pub const MAX_WRITE: u32 = 1024 * 1024;

/// The fuser `Filesystem` over a [`QuackFs`].
pub struct FuseAdapter {
    fs: Arc<QuackFs>,
    rt: tokio::runtime::Handle,
    ttl: Duration,
    uid: u32,
    gid: u32,
}

impl FuseAdapter {
    pub fn new(fs: Arc<QuackFs>, rt: tokio::runtime::Handle) -> FuseAdapter {
        // Read-only revisions never change: let the kernel cache attributes and pages for long.
        let ttl = if fs.follows() {
            // A follower's names move to new inodes when the branch moves: look them up again
            // on every open.
            Duration::ZERO
        } else if fs.writable() {
            Duration::from_secs(1)
        } else {
            Duration::from_secs(3600)
        };
        // SAFETY: getuid/getgid cannot fail.
        let (uid, gid) = unsafe { (libc::geteuid(), libc::getegid()) };
        FuseAdapter {
            fs,
            rt,
            ttl,
            uid,
            gid,
        }
    }

    fn attr(&self, a: &Attr) -> FileAttr {
        AttrMaker {
            uid: self.uid,
            gid: self.gid,
        }
        .make(a)
    }

    /// Keep the kernel page cache across opens: every write goes through this mount (no writeback
    /// caching, one writer per branch), so cached pages never go stale; read-only revisions never
    /// change at all.
    fn open_flags(&self) -> FopenFlags {
        FopenFlags::FOPEN_KEEP_CACHE
    }
}

fn errno(e: FsError) -> Errno {
    Errno::from_i32(e.0)
}

fn name_of(name: &OsStr) -> Result<&str, Errno> {
    name.to_str().ok_or(Errno::from_i32(libc::EINVAL))
}

fn time_of(t: TimeOrNow) -> SystemTime {
    match t {
        TimeOrNow::SpecificTime(t) => t,
        TimeOrNow::Now => SystemTime::now(),
    }
}

impl Filesystem for FuseAdapter {
    fn init(&mut self, _req: &Request, config: &mut KernelConfig) -> std::io::Result<()> {
        let _ = config.set_max_write(MAX_WRITE);
        let _ = config.set_max_readahead(crate::fs::KERNEL_READAHEAD);
        let _ = config.set_max_background(64);
        let _ = config.add_capabilities(InitFlags::FUSE_PARALLEL_DIROPS);
        Ok(())
    }

    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        let name = match name_of(name) {
            Ok(n) => n,
            Err(e) => return reply.error(e),
        };
        match self.fs.lookup(parent.0, name) {
            Ok(a) => reply.entry(&self.ttl, &self.attr(&a), Generation(0)),
            Err(e) => reply.error(errno(e)),
        }
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, fh: Option<FileHandle>, reply: ReplyAttr) {
        match self.fs.getattr_fh(ino.0, fh.map(|h| h.0)) {
            Ok(a) => reply.attr(&self.ttl, &self.attr(&a)),
            Err(e) => reply.error(errno(e)),
        }
    }

    fn setattr(
        &self,
        _req: &Request,
        ino: INodeNo,
        mode: Option<u32>,
        _uid: Option<u32>,
        _gid: Option<u32>,
        size: Option<u64>,
        _atime: Option<TimeOrNow>,
        mtime: Option<TimeOrNow>,
        _ctime: Option<SystemTime>,
        fh: Option<FileHandle>,
        _crtime: Option<SystemTime>,
        _chgtime: Option<SystemTime>,
        _bkuptime: Option<SystemTime>,
        _flags: Option<fuser::BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        match self
            .fs
            .setattr(ino.0, fh.map(|h| h.0), size, mode, mtime.map(time_of))
        {
            Ok(a) => reply.attr(&self.ttl, &self.attr(&a)),
            Err(e) => reply.error(errno(e)),
        }
    }

    fn mkdir(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        reply: ReplyEntry,
    ) {
        let name = match name_of(name) {
            Ok(n) => n,
            Err(e) => return reply.error(e),
        };
        match self.fs.mkdir(parent.0, name, mode & !umask) {
            Ok(a) => reply.entry(&self.ttl, &self.attr(&a), Generation(0)),
            Err(e) => reply.error(errno(e)),
        }
    }

    fn unlink(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        let name = match name_of(name) {
            Ok(n) => n.to_string(),
            Err(e) => return reply.error(e),
        };
        let fs = self.fs.clone();
        self.rt.spawn(async move {
            let ack = move |r: FsResult<()>| match r {
                Ok(()) => reply.ok(),
                Err(e) => reply.error(errno(e)),
            };
            let _ = fs.unlink_acked(parent.0, &name, ack).await;
        });
    }

    fn rmdir(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        let name = match name_of(name) {
            Ok(n) => n,
            Err(e) => return reply.error(e),
        };
        match self.fs.rmdir(parent.0, name) {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(errno(e)),
        }
    }

    fn rename(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        newparent: INodeNo,
        newname: &OsStr,
        flags: RenameFlags,
        reply: ReplyEmpty,
    ) {
        let (name, newname) = match (name_of(name), name_of(newname)) {
            (Ok(a), Ok(b)) => (a.to_string(), b.to_string()),
            _ => return reply.error(Errno::from_i32(libc::EINVAL)),
        };
        let fs = self.fs.clone();
        self.rt.spawn(async move {
            match fs
                .rename(parent.0, &name, newparent.0, &newname, flags.bits())
                .await
            {
                Ok(()) => reply.ok(),
                Err(e) => reply.error(errno(e)),
            }
        });
    }

    fn open(&self, _req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        let fs = self.fs.clone();
        let fopen = self.open_flags();
        self.rt.spawn(async move {
            match fs.open(ino.0, flags.0).await {
                Ok(fh) => reply.opened(FileHandle(fh), fopen),
                Err(e) => reply.error(errno(e)),
            }
        });
    }

    fn read(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        let fs = self.fs.clone();
        self.rt.spawn(async move {
            match fs.read(ino.0, fh.0, offset, size).await {
                Ok(data) => reply.data(&data),
                Err(e) => reply.error(errno(e)),
            }
        });
    }

    fn write(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        data: &[u8],
        _write_flags: WriteFlags,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyWrite,
    ) {
        // The kernel already turned O_APPEND into the right offset.
        match self.fs.write(ino.0, fh.0, offset, data, false) {
            Ok(n) => reply.written(n),
            Err(e) => reply.error(errno(e)),
        }
    }

    fn flush(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _lock_owner: LockOwner,
        reply: ReplyEmpty,
    ) {
        // close() does not promise durability; fsync does. It does wait for a WAL removal
        // acknowledged before its registration (QuackFs::unlink_acked), so that once DuckDB
        // closes the database, its checkpoint commit is in the catalog.
        if !self.fs.unlinks_in_flight() {
            return reply.ok();
        }
        let fs = self.fs.clone();
        self.rt.spawn(async move {
            fs.settle_unlinks().await;
            reply.ok();
        });
    }

    fn release(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        _flush: bool,
        reply: ReplyEmpty,
    ) {
        match self.fs.release(fh.0) {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(errno(e)),
        }
    }

    fn fsync(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        let fs = self.fs.clone();
        self.rt.spawn(async move {
            match fs.fsync(ino.0).await {
                Ok(()) => reply.ok(),
                Err(e) => reply.error(errno(e)),
            }
        });
    }

    fn opendir(&self, _req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        match self.fs.opendir(ino.0) {
            Ok(fh) => reply.opened(FileHandle(fh), FopenFlags::empty()),
            Err(e) => reply.error(errno(e)),
        }
    }

    fn releasedir(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        reply: ReplyEmpty,
    ) {
        if fh.0 != 0 {
            let _ = self.fs.release(fh.0);
        }
        reply.ok();
    }

    fn readdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectory,
    ) {
        match self.fs.readdir(ino.0) {
            Ok(entries) => {
                for (i, e) in entries.iter().enumerate().skip(offset as usize) {
                    let kind = match e.kind {
                        Kind::File => FileType::RegularFile,
                        Kind::Dir => FileType::Directory,
                    };
                    if reply.add(INodeNo(e.ino), (i + 1) as u64, kind, &e.name) {
                        break;
                    }
                }
                reply.ok();
            }
            Err(e) => reply.error(errno(e)),
        }
    }

    fn fsyncdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        let fs = self.fs.clone();
        self.rt.spawn(async move {
            match fs.fsyncdir(ino.0).await {
                Ok(()) => reply.ok(),
                Err(e) => reply.error(errno(e)),
            }
        });
    }

    fn statfs(&self, _req: &Request, _ino: INodeNo, reply: ReplyStatfs) {
        let (blocks, free, files) = self.fs.statfs();
        reply.statfs(blocks, free, free, files, 1 << 20, 4096, 255, 4096);
    }

    fn create(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        flags: i32,
        reply: ReplyCreate,
    ) {
        let name = match name_of(name) {
            Ok(n) => n.to_string(),
            Err(e) => return reply.error(e),
        };
        let fs = self.fs.clone();
        let ttl = self.ttl;
        let fopen = self.open_flags();
        let adapter_attr = AttrMaker {
            uid: self.uid,
            gid: self.gid,
        };
        self.rt.spawn(async move {
            match fs.create(parent.0, &name, mode & !umask, flags).await {
                Ok((a, fh)) => reply.created(
                    &ttl,
                    &adapter_attr.make(&a),
                    Generation(0),
                    FileHandle(fh),
                    fopen,
                ),
                Err(e) => reply.error(errno(e)),
            }
        });
    }

    fn getxattr(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _name: &OsStr,
        _size: u32,
        reply: fuser::ReplyXattr,
    ) {
        // No extended attributes. ENOSYS (not ENODATA) makes the kernel stop asking: it answers
        // EOPNOTSUPP itself from then on. It asks for `security.capability` before every write
        // otherwise, a request per write that DuckDB's WAL appends would pay.
        reply.error(Errno::from_i32(libc::ENOSYS));
    }

    fn listxattr(&self, _req: &Request, _ino: INodeNo, size: u32, reply: fuser::ReplyXattr) {
        if size == 0 {
            reply.size(0);
        } else {
            reply.data(&[]);
        }
    }

    fn fallocate(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        length: u64,
        mode: i32,
        reply: ReplyEmpty,
    ) {
        match self.fs.fallocate(ino.0, offset, length, mode) {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(errno(e)),
        }
    }
}

/// Builds `FileAttr`s off the FUSE thread (inside spawned tasks).
#[derive(Clone, Copy)]
struct AttrMaker {
    uid: u32,
    gid: u32,
}

impl AttrMaker {
    fn make(&self, a: &Attr) -> FileAttr {
        FileAttr {
            ino: INodeNo(a.ino),
            size: a.size,
            blocks: a.size.div_ceil(512),
            atime: a.atime,
            mtime: a.mtime,
            ctime: a.ctime,
            crtime: a.ctime,
            kind: match a.kind {
                Kind::File => FileType::RegularFile,
                Kind::Dir => FileType::Directory,
            },
            perm: a.perm,
            nlink: a.nlink,
            uid: self.uid,
            gid: self.gid,
            rdev: 0,
            blksize: 4096,
            flags: 0,
        }
    }
}

/// A FUSE session serving a [`QuackFs`] at a directory, run on a thread of its own.
pub struct Served {
    pub unmounter: fuser::SessionUnmounter,
    /// Receives the session's result when it ends (unmounted, or the kernel went away).
    pub done: tokio::sync::oneshot::Receiver<std::io::Result<()>>,
}

/// Mounts `fs` at `dir` (read-only or not, named `fsname` in the mount table) and starts
/// serving it.
pub async fn serve(
    fs: Arc<QuackFs>,
    dir: &std::path::Path,
    read_only: bool,
    fsname: &str,
) -> Result<Served, String> {
    let adapter = FuseAdapter::new(fs, tokio::runtime::Handle::current());
    let config = config(read_only, fsname);
    let mount_dir = dir.to_path_buf();
    let mut session =
        tokio::task::spawn_blocking(move || fuser::Session::new(adapter, &mount_dir, &config))
            .await
            .map_err(|e| e.to_string())?
            .map_err(|e| mount_error(&e))?;
    let unmounter = session.unmount_callable();
    let (tx, done) = tokio::sync::oneshot::channel();
    // (If the thread cannot start, the session is dropped with the closure: that unmounts.)
    std::thread::Builder::new()
        .name("fuse-session".into())
        .spawn(move || {
            let _ = tx.send(session.run());
        })
        .map_err(|e| format!("cannot start the FUSE session: {e}"))?;
    Ok(Served { unmounter, done })
}

/// Why mounting failed. fuser opens /dev/fuse itself before it would ask fusermount3, so a user
/// other than root cannot mount where /dev/fuse is not open to everyone (Debian makes it 0666;
/// some images make it 0600): say so.
fn mount_error(e: &std::io::Error) -> String {
    let dev_closed = e.kind() == std::io::ErrorKind::PermissionDenied
        && std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open("/dev/fuse")
            .is_err();
    if dev_closed {
        format!("{e}: this user may not open /dev/fuse (mount as root, or make it usable by all as Debian does: `chmod 0666 /dev/fuse`)")
    } else {
        e.to_string()
    }
}

/// Who may use a mount besides the user who made it. Everyone (`allow_other`: a DuckDB server
/// running as another user) when root mounts it, or when `/etc/fuse.conf` lets users ask for that
/// (`user_allow_other`); else only its owner, since fusermount3 refuses `allow_other` to other
/// users and the mount would fail. The mount's files keep their permission bits either way
/// (`default_permissions`).
fn session_acl() -> fuser::SessionACL {
    // SAFETY: geteuid cannot fail.
    let root = unsafe { libc::geteuid() } == 0;
    let conf = std::fs::read_to_string("/etc/fuse.conf").unwrap_or_default();
    if root || allows_other(&conf) {
        fuser::SessionACL::All
    } else {
        fuser::SessionACL::Owner
    }
}

/// Whether a `/etc/fuse.conf` lets users mount with `allow_other`.
fn allows_other(conf: &str) -> bool {
    conf.lines()
        .any(|l| l.split('#').next().unwrap_or_default().trim() == "user_allow_other")
}

/// Mount options for a quackfs mount.
pub fn config(read_only: bool, fsname: &str) -> fuser::Config {
    let mut opts = vec![
        fuser::MountOption::FSName(fsname.to_string()),
        fuser::MountOption::Subtype("quackfs".into()),
        fuser::MountOption::DefaultPermissions,
        fuser::MountOption::NoAtime,
    ];
    if read_only {
        opts.push(fuser::MountOption::RO);
    }
    let mut cfg = fuser::Config::default();
    cfg.mount_options = opts;
    cfg.acl = session_acl();
    cfg.n_threads = Some(4);
    cfg.clone_fd = true;
    cfg
}

#[cfg(test)]
mod tests {
    use super::allows_other;

    #[test]
    fn fuse_conf_user_allow_other() {
        assert!(!allows_other(""));
        assert!(!allows_other("# mount_max = 1000\n#user_allow_other\n"));
        assert!(allows_other("mount_max = 1000\n  user_allow_other  \n"));
        assert!(allows_other("user_allow_other # for the DuckDB server\n"));
        assert!(!allows_other("user_allow_other_not\n"));
    }
}

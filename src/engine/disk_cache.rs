//! A bounded on-disk cache of extents and footers read from a remote object store (S3), shared by
//! the processes of one host that use the same data directory (`DATA_DIR/cache/extents`), and
//! surviving remounts. Objects are immutable and keys never reused, so an entry never goes stale;
//! every entry read back is checked against the checksum the layer's index holds (extents) or its
//! own (footers), and a damaged or foreign entry is removed and fetched again.
//!
//! An entry is found under a name made of a hash of (object key, offset). The extents fetched
//! together (a run of one object) are written to one file, under a temporary name, and that file
//! is then linked under the name of each entry it holds (renamed, for one): no reader sees half an
//! entry, and a run costs one inode, not one per extent (inode allocation on a file system that
//! saw many deletions was the largest part of the disk cache's cost in a cold read). No fsync:
//! the cache is disposable. Each file starts with a header (checksummed) naming the object and,
//! for each entry, its offset, place in the file, length and checksum, so a hash collision is a
//! miss, never wrong bytes; a read takes the header and the entry's bytes alone. Files of an older
//! format are removed when found. The cache's size is bounded: when a process has added more than
//! a tenth of the bound since it last looked, it lists the directory and removes the least
//! recently used files (by modification time, refreshed on a hit; every name of each) until the
//! total is under 90% of the bound.
//!
//! Objects kept in the catalog (`inline/ID`, see `engine::inline`) are not cached here: they are
//! read from the catalog, not the object store, the inline store keeps them in memory, and they
//! move into the store (as `layers/ID`) seconds after they were written. A writing mount makes
//! several of them per DuckDB transaction; a file for each of their footers cost an inode
//! allocation per layer on the commit path's CPU, for entries nothing would read again.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::SystemTime;

/// File header: magic, header length (u32), key length (u16), key, entry count (u32), per entry
/// its offset in the object (u64), place in the file (u64), length (u32) and crc32c (u32); then
/// the crc32c of all that (u32).
const MAGIC: &[u8; 4] = b"QDC2";
/// Bytes of one entry's record in a file header.
const RECORD_LEN: usize = 24;
/// Most bytes of entries in one file (a smaller bound makes them smaller: at most a tenth of it).
const FILE_MAX: u64 = 4 << 20;
/// Entries that are mapped start on a boundary of this many bytes (the page size, or a multiple).
const PAGE: u64 = 4096;

/// The default bound of the disk cache (`--disk-cache`).
pub const DEFAULT_BYTES: u64 = 2 << 30;

/// The bound of the disk cache: `QUACKFS_DISK_CACHE` (a size; 0 turns it off) or the default
/// for a remote store; none for the local store, whose objects are on local disk already (unless
/// the variable asks for one).
pub fn configured_bytes(local_store: bool) -> u64 {
    match crate::tuning::size("QUACKFS_DISK_CACHE") {
        Some(bytes) => bytes,
        None if local_store => 0,
        None => DEFAULT_BYTES,
    }
}

/// An offset that marks an object's footer (index) entry rather than an extent.
pub const FOOTER: u64 = u64::MAX;

/// Entries at least this large are read by mapping their file (populated at once) rather than
/// copied into fresh memory: a read then neither copies the bytes out of the page cache nor
/// faults in and zeroes new pages for them (in a profile of reads from a warm disk cache the two
/// were a quarter of the mount's CPU). Smaller ones (WAL appends) are copied: a mapping per
/// small extent held in the memory cache could run into the limit of mappings per process.
/// Files are never written or truncated once in place (they are renamed or linked into place,
/// and removal unlinks), so the bytes of a mapping cannot change under it.
const MAP_MIN: usize = 128 << 10;

/// How stale an entry's recency stamp (its mtime) may get before a hit renews it.
const RECENCY_STEP: std::time::Duration = std::time::Duration::from_secs(60);

/// Most bytes handed to [`DiskCache::put_behind`] and not yet written; past it the caller
/// writes them itself (a reader faster than the disk slows down to it instead of queueing
/// memory).
const BEHIND_MAX: u64 = 64 << 20;

/// Runs `f`, which reads or writes local files (the disk cache), as blocking work: on a
/// multi-threaded runtime the worker hands its other tasks to another thread meanwhile, so a
/// request that waits for the disk holds up neither the mount's other requests nor other reads.
pub(crate) fn off_the_runtime<T>(f: impl FnOnce() -> T) -> T {
    match tokio::runtime::Handle::try_current().map(|h| h.runtime_flavor()) {
        Ok(tokio::runtime::RuntimeFlavor::MultiThread) => tokio::task::block_in_place(f),
        _ => f(),
    }
}

/// The on-disk cache of one data directory.
pub struct DiskCache {
    dir: PathBuf,
    cap: u64,
    /// What this process may still add before it trims the directory again; one lock, so
    /// concurrent puts never both take the last of the room.
    budget: std::sync::Mutex<Budget>,
    /// Bytes of entries reserved and still being written (a trim leaves room for them too).
    writing: AtomicU64,
    pub hits: AtomicU64,
    pub misses: AtomicU64,
    /// Entries found damaged (removed and fetched again).
    pub corrupt: AtomicU64,
    /// Whether puts add entries (off: the cache is only read).
    fill: AtomicBool,
    /// Bytes handed to `put_behind` and not yet written.
    behind: AtomicU64,
    /// Tests: every hard link fails, as on a file system without them.
    #[cfg(test)]
    no_links: AtomicBool,
}

#[derive(Default)]
struct Budget {
    /// Bytes this process reserved since it last trimmed the directory.
    added: u64,
    /// Bytes the last trim left free (0 before the first: the first put trims).
    room: u64,
}

fn fnv(key: &str, off: u64) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in key.bytes().chain(off.to_le_bytes()) {
        h ^= b as u64;
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

impl DiskCache {
    /// A cache of at most `cap` bytes in `dir` (created if needed).
    pub fn open(dir: PathBuf, cap: u64) -> std::io::Result<DiskCache> {
        std::fs::create_dir_all(&dir)?;
        Ok(DiskCache {
            dir,
            cap,
            budget: std::sync::Mutex::new(Budget::default()),
            writing: AtomicU64::new(0),
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
            corrupt: AtomicU64::new(0),
            fill: AtomicBool::new(true),
            behind: AtomicU64::new(0),
            #[cfg(test)]
            no_links: AtomicBool::new(false),
        })
    }

    /// Off: this process reads the cache but adds nothing to it (`merge` reads history that its
    /// own result replaces: filling the cache with it would only evict what mounts read).
    pub fn set_fill(&self, on: bool) {
        self.fill.store(on, Ordering::Relaxed);
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Whether entries of object `key` belong here (not those of objects kept in the catalog).
    fn keeps(key: &str) -> bool {
        !key.starts_with(crate::catalog::INLINE_PREFIX)
    }

    fn path(&self, key: &str, off: u64) -> PathBuf {
        let h = fnv(key, off);
        self.dir.join(format!("{:02x}/{h:016x}", h >> 56))
    }

    /// The bytes cached for (`key`, `off`), if present, whole and with checksum `crc` (None:
    /// checked by the caller, for footers). Objects kept in the catalog are never here.
    pub fn get(&self, key: &str, off: u64, crc: Option<u32>) -> Option<bytes::Bytes> {
        if !Self::keeps(key) {
            return None;
        }
        let path = self.path(key, off);
        match read_entry(&path, key, off, crc) {
            Ok(Lookup::Hit(data, file, modified)) => {
                self.hits.fetch_add(1, Ordering::Relaxed);
                // Recently used (the eviction order), stamped at most once a minute.
                let now = SystemTime::now();
                let stale = modified
                    .map(|t| now.duration_since(t).unwrap_or_default() > RECENCY_STEP)
                    .unwrap_or(true);
                if stale {
                    let _ = file.set_modified(now);
                }
                Some(data)
            }
            Ok(Lookup::Damaged) => {
                // Never served; fetched again. (Only this name goes: the other entries of its
                // file are checked when they are read.)
                tracing::warn!("disk cache entry {} is damaged: removed", path.display());
                self.corrupt.fetch_add(1, Ordering::Relaxed);
                let _ = std::fs::remove_file(&path);
                None
            }
            // Not of this format: removed, so that the entry can be put in its place.
            Ok(Lookup::Stale) => {
                self.misses.fetch_add(1, Ordering::Relaxed);
                let _ = std::fs::remove_file(&path);
                None
            }
            // Absent, or another extent with the same hash: a miss.
            Ok(Lookup::Other) | Err(_) => {
                self.misses.fetch_add(1, Ordering::Relaxed);
                None
            }
        }
    }

    /// [`put_run`](Self::put_run)s the extents `items` (offset, bytes, checksum) of object `key`
    /// on a blocking thread, so that the caller, a read that fetched them from the store, answers
    /// without waiting for their file. With [`BEHIND_MAX`] bytes already waiting, or outside a
    /// runtime, they are written before it returns.
    pub fn put_behind(self: &Arc<Self>, key: &str, items: Vec<(u64, bytes::Bytes, u32)>) {
        if items.is_empty() || !self.fill.load(Ordering::Relaxed) || !Self::keeps(key) {
            return;
        }
        let len: u64 = items.iter().map(|(_, b, _)| b.len() as u64).sum();
        let queued = self.behind.fetch_add(len, Ordering::SeqCst) + len;
        let me = self.clone();
        let key = key.to_string();
        let write = move || {
            me.put_run(&key, &items);
            me.behind.fetch_sub(len, Ordering::SeqCst);
        };
        match tokio::runtime::Handle::try_current() {
            Ok(rt) if queued <= BEHIND_MAX => drop(rt.spawn_blocking(write)),
            _ => off_the_runtime(write),
        }
    }

    /// Caches `data` (checksum `crc`) for (`key`, `off`), unless the object is kept in the
    /// catalog. Failures are ignored: it is a cache. (The tests' shorthand for a run of one.)
    #[cfg(test)]
    pub fn put(&self, key: &str, off: u64, data: &[u8], crc: u32) {
        self.put_run(key, &[(off, bytes::Bytes::copy_from_slice(data), crc)]);
    }

    /// Caches the extents `items` (offset, bytes, checksum) of object `key`: those not cached
    /// yet go into files of at most [`FILE_MAX`] bytes (a tenth of the bound with a small one),
    /// each linked under the name of every entry it holds. Unless the object is kept in the
    /// catalog; failures are ignored: it is a cache.
    pub fn put_run(&self, key: &str, items: &[(u64, bytes::Bytes, u32)]) {
        if !self.fill.load(Ordering::Relaxed) || !Self::keeps(key) {
            return;
        }
        let file_max = (self.cap / 10).clamp(1, FILE_MAX);
        let mut group: Vec<Item> = Vec::new();
        let mut bytes = 0;
        for (off, data, crc) in items {
            let path = self.path(key, *off);
            // Objects are immutable: an entry in place holds these bytes already.
            if path.symlink_metadata().is_ok() {
                continue;
            }
            if !group.is_empty() && bytes + data.len() as u64 > file_max {
                self.write_file(key, &std::mem::take(&mut group));
                bytes = 0;
            }
            bytes += data.len() as u64;
            group.push(Item {
                off: *off,
                data,
                crc: *crc,
                path,
            });
        }
        if !group.is_empty() {
            self.write_file(key, &group);
        }
    }

    /// Writes one file holding the entries `group` of object `key` (under a temporary name) and
    /// puts it in place under each entry's name: renamed for one, linked for several.
    fn write_file(&self, key: &str, group: &[Item<'_>]) {
        let Some(parent) = group.first().and_then(|i| i.path.parent()) else {
            return;
        };
        let (head, positions, file_len) = encode(key, group);
        if file_len > self.cap {
            return;
        }
        // Room first, reserved under one lock: a trim leaves `room` bytes free (besides the
        // entries still being written) and at most that much is reserved before the next one,
        // so this process never makes the cache hold more than its bound, however many threads
        // put at once.
        {
            let mut b = self.budget.lock().unwrap_or_else(|p| p.into_inner());
            if b.added + file_len > b.room {
                let room = (self.cap / 10).max(file_len);
                self.trim_leaving(room.saturating_add(self.writing.load(Ordering::SeqCst)));
                b.room = room;
                b.added = 0;
            }
            b.added += file_len;
            self.writing.fetch_add(file_len, Ordering::SeqCst);
        }
        let tmp = parent.join(format!(
            ".tmp-{}-{}",
            std::process::id(),
            crate::engine::new_id()
        ));
        let write = || -> std::io::Result<()> {
            use std::os::unix::fs::FileExt;
            std::fs::create_dir_all(parent)?;
            let f = std::fs::File::create(&tmp)?;
            f.write_all_at(&head, 0)?;
            for (item, pos) in group.iter().zip(&positions) {
                f.write_all_at(item.data, *pos)?;
            }
            Ok(())
        };
        if write().is_ok() {
            if let [one] = group {
                let _ = std::fs::rename(&tmp, &one.path);
            } else {
                for (i, item) in group.iter().enumerate() {
                    let linked = item
                        .path
                        .parent()
                        .map_or(Ok(()), std::fs::create_dir_all)
                        .and_then(|()| self.link(&tmp, &item.path));
                    match linked {
                        // (Put in place by another process meanwhile: the same bytes.)
                        Ok(()) => {}
                        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
                        // A file system without links: a file per entry.
                        Err(_) if i == 0 => {
                            let _ = std::fs::remove_file(&tmp);
                            self.writing.fetch_sub(file_len, Ordering::SeqCst);
                            // (Each file reserves its own room.)
                            let mut b = self.budget.lock().unwrap_or_else(|p| p.into_inner());
                            b.added = b.added.saturating_sub(file_len);
                            drop(b);
                            for item in group {
                                self.write_file(key, std::slice::from_ref(item));
                            }
                            return;
                        }
                        Err(_) => {}
                    }
                }
            }
        }
        let _ = std::fs::remove_file(&tmp);
        self.writing.fetch_sub(file_len, Ordering::SeqCst);
    }

    fn link(&self, from: &Path, to: &Path) -> std::io::Result<()> {
        #[cfg(test)]
        if self.no_links.load(Ordering::Relaxed) {
            return Err(std::io::Error::from_raw_os_error(libc::EPERM));
        }
        std::fs::hard_link(from, to)
    }

    /// Removes least recently used entries until the cache holds at most 90% of its bound.
    pub fn trim(&self) {
        self.trim_leaving(self.cap / 10);
    }

    /// Removes least recently used files (every name of each) until `room` bytes are free under
    /// the bound.
    fn trim_leaving(&self, room: u64) {
        let files = self.files();
        let mut total: u64 = files.values().map(|f| f.len).sum();
        let goal = self.cap.saturating_sub(room);
        if total <= goal {
            return;
        }
        let mut files: Vec<Listed> = files.into_values().collect();
        files.sort_by_key(|f| f.modified);
        for f in files {
            if total <= goal {
                break;
            }
            let mut removed = false;
            for name in &f.names {
                removed |= std::fs::remove_file(name).is_ok();
            }
            if removed {
                total = total.saturating_sub(f.len);
            }
        }
    }

    /// The files of the cache (by inode: one file has a name per entry it holds).
    fn files(&self) -> HashMap<u64, Listed> {
        use std::os::unix::fs::MetadataExt;
        let mut files: HashMap<u64, Listed> = HashMap::new();
        for sub in std::fs::read_dir(&self.dir).into_iter().flatten().flatten() {
            for f in std::fs::read_dir(sub.path())
                .into_iter()
                .flatten()
                .flatten()
            {
                let Ok(m) = f.metadata() else { continue };
                if !m.is_file() {
                    continue;
                }
                files
                    .entry(m.ino())
                    .or_insert_with(|| Listed {
                        modified: m.modified().unwrap_or(SystemTime::UNIX_EPOCH),
                        len: m.len(),
                        names: Vec::new(),
                    })
                    .names
                    .push(f.path());
            }
        }
        files
    }

    /// Bytes of files in the cache now (lists the directory).
    pub fn size(&self) -> u64 {
        self.files().values().map(|f| f.len).sum()
    }
}

/// An extent to cache, and the name of its entry.
struct Item<'a> {
    off: u64,
    data: &'a bytes::Bytes,
    crc: u32,
    path: PathBuf,
}

/// A file of the cache, as listed.
struct Listed {
    modified: SystemTime,
    len: u64,
    names: Vec<PathBuf>,
}

/// One entry as its file's header describes it.
struct Record {
    off: u64,
    pos: u64,
    len: u32,
    crc: u32,
}

/// Header of a file of `group`'s entries of object `key`, where each entry's bytes go, and the
/// file's length. Entries of [`MAP_MIN`] bytes or more start on a page boundary (they are read by
/// mapping); smaller ones follow each other.
fn encode(key: &str, group: &[Item<'_>]) -> (Vec<u8>, Vec<u64>, u64) {
    let head_len = 4 + 4 + 2 + key.len() + 4 + RECORD_LEN * group.len() + 4;
    let mut pos = head_len as u64;
    let mut positions = Vec::with_capacity(group.len());
    for item in group {
        if item.data.len() >= MAP_MIN {
            pos = pos.next_multiple_of(PAGE);
        }
        positions.push(pos);
        pos += item.data.len() as u64;
    }
    let mut head = Vec::with_capacity(head_len);
    head.extend_from_slice(MAGIC);
    head.extend_from_slice(&(head_len as u32).to_le_bytes());
    head.extend_from_slice(&(key.len() as u16).to_le_bytes());
    head.extend_from_slice(key.as_bytes());
    head.extend_from_slice(&(group.len() as u32).to_le_bytes());
    for (item, p) in group.iter().zip(&positions) {
        head.extend_from_slice(&item.off.to_le_bytes());
        head.extend_from_slice(&p.to_le_bytes());
        head.extend_from_slice(&(item.data.len() as u32).to_le_bytes());
        head.extend_from_slice(&item.crc.to_le_bytes());
    }
    let crc = crc32c::crc32c(&head);
    head.extend_from_slice(&crc.to_le_bytes());
    (head, positions, pos)
}

/// What a cache file holds for (`key`, `off`).
enum Lookup {
    /// The entry's bytes, checked; its file (for the recency stamp) and modification time.
    Hit(bytes::Bytes, std::fs::File, Option<SystemTime>),
    /// An entry for it that fails its checks.
    Damaged,
    /// Entries of other extents (a hash collision).
    Other,
    /// Not a file of this format (an older version's entry, or garbage).
    Stale,
}

/// Reads the entry for (`key`, `off`) from the file at `path`: its header, then the entry's
/// bytes alone (mapped if large), checked against the header's checksum and `crc` if given.
fn read_entry(path: &Path, key: &str, off: u64, crc: Option<u32>) -> std::io::Result<Lookup> {
    use std::os::unix::fs::FileExt;
    let f = std::fs::File::options().read(true).write(true).open(path)?;
    let meta = f.metadata()?;
    let file_len = meta.len();
    let mut head = vec![0u8; (PAGE.min(file_len)) as usize];
    f.read_exact_at(&mut head, 0)?;
    if !head.starts_with(MAGIC) {
        return Ok(Lookup::Stale);
    }
    let head_len = match head.get(4..8) {
        Some(b) => u32::from_le_bytes(b.try_into().map_err(std::io::Error::other)?) as u64,
        None => return Ok(Lookup::Damaged),
    };
    if head_len > file_len || head_len < 14 {
        return Ok(Lookup::Damaged);
    }
    if head_len > head.len() as u64 {
        head = vec![0u8; head_len as usize];
        f.read_exact_at(&mut head, 0)?;
    }
    head.truncate(head_len as usize);
    let Some(records) = parse_head(&head, key) else {
        return Ok(Lookup::Damaged);
    };
    let Some(records) = records else {
        return Ok(Lookup::Other);
    };
    let Some(r) = records.into_iter().find(|r| r.off == off) else {
        return Ok(Lookup::Other);
    };
    let len = r.len as usize;
    let past_end = r
        .pos
        .checked_add(len as u64)
        .is_none_or(|end| end > file_len);
    if past_end || crc.is_some_and(|c| c != r.crc) {
        return Ok(Lookup::Damaged);
    }
    // (A mapping that fails, e.g. at the limit of mappings per process, is a copy.)
    let mapped = (len >= MAP_MIN && r.pos % PAGE == 0)
        .then(|| crate::store::local::map_file(&f, r.pos, len, true).ok())
        .flatten();
    let data = match mapped {
        Some(m) => bytes::Bytes::from(m),
        None => {
            let mut buf = vec![0u8; len];
            f.read_exact_at(&mut buf, r.pos)?;
            bytes::Bytes::from(buf)
        }
    };
    if crc32c::crc32c(&data) != r.crc {
        return Ok(Lookup::Damaged);
    }
    Ok(Lookup::Hit(data, f, meta.modified().ok()))
}

/// The records of a whole header (checksum included) naming object `key`: None if damaged,
/// Some(None) if it names another key.
fn parse_head(head: &[u8], key: &str) -> Option<Option<Vec<Record>>> {
    let (body, sum) = head.split_at_checked(head.len().checked_sub(4)?)?;
    if crc32c::crc32c(body) != u32::from_le_bytes(sum.try_into().ok()?) {
        return None;
    }
    let u32_at = |p: usize| Some(u32::from_le_bytes(body.get(p..p + 4)?.try_into().ok()?));
    let u64_at = |p: usize| Some(u64::from_le_bytes(body.get(p..p + 8)?.try_into().ok()?));
    let klen = u16::from_le_bytes(body.get(8..10)?.try_into().ok()?) as usize;
    if body.get(10..10 + klen)? != key.as_bytes() {
        return Some(None);
    }
    let mut p = 10 + klen;
    let count = u32_at(p)? as usize;
    p += 4;
    if body.len() != p + count.checked_mul(RECORD_LEN)? {
        return None;
    }
    let mut records = Vec::with_capacity(count);
    for _ in 0..count {
        records.push(Record {
            off: u64_at(p)?,
            pos: u64_at(p + 8)?,
            len: u32_at(p + 16)?,
            crc: u32_at(p + 20)?,
        });
        p += RECORD_LEN;
    }
    Some(Some(records))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn concurrent_puts_keep_the_bound() {
        let dir = tempfile::tempdir().unwrap();
        let c = std::sync::Arc::new(DiskCache::open(dir.path().join("c"), 200_000).unwrap());
        let data = vec![5u8; 9_000];
        let crc = crc32c::crc32c(&data);
        let threads: Vec<_> = (0..8)
            .map(|t| {
                let (c, data) = (c.clone(), data.clone());
                std::thread::spawn(move || {
                    for i in 0..40 {
                        c.put(&format!("layers/t{t}"), i, &data, crc);
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        // (Checked once the puts are done: a directory listing taken while files are renamed
        // and removed may count one twice.)
        let size = c.size();
        assert!(size <= 200_000, "over the bound: {size}");
    }

    /// The extents of a run go into one file (files of at most a tenth of a small bound), linked
    /// under each entry's name: each reads back exactly (the large ones mapped), the file counts
    /// once, damage to one entry's bytes loses that entry alone, a trim removes every name of a
    /// file, and an entry already in place is not written again.
    #[test]
    fn a_run_is_one_file_linked_under_each_entry() {
        use std::os::unix::fs::MetadataExt;
        let dir = tempfile::tempdir().unwrap();
        let c = DiskCache::open(dir.path().join("c"), 40 << 20).unwrap();
        let item = |off: u64, len: usize| {
            // (xorshift: no 64-byte window repeats, so the test can find an entry's bytes.)
            let mut x = off.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
            let data: Vec<u8> = (0..len)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    x as u8
                })
                .collect();
            let crc = crc32c::crc32c(&data);
            (off, bytes::Bytes::from(data), crc)
        };
        // Small and mapped entries, back to back in the object.
        let sizes = [1000, MAP_MIN + 100, 5000, MAP_MIN, 300];
        let mut off = 0;
        let mut run = Vec::new();
        for len in sizes {
            run.push(item(off, len));
            off += len as u64;
        }
        c.put_run("layers/run", &run);
        let inodes: std::collections::HashSet<u64> = run
            .iter()
            .map(|(o, _, _)| std::fs::metadata(c.path("layers/run", *o)).unwrap().ino())
            .collect();
        assert_eq!(inodes.len(), 1, "one file for the run");
        let data_len: u64 = sizes.iter().map(|&l| l as u64).sum();
        let size = c.size();
        assert!(
            size >= data_len && size < data_len + 3 * PAGE + 256,
            "counted once: {size} for {data_len} bytes of entries"
        );
        for (o, b, crc) in &run {
            assert_eq!(
                c.get("layers/run", *o, Some(*crc)).unwrap(),
                b,
                "entry at {o}"
            );
        }
        // Damage in the second entry's bytes: that entry is refused and its name removed; the
        // others are still served from the same file.
        let (o1, b1, crc1) = &run[1];
        let path = c.path("layers/run", *o1);
        let raw = std::fs::read(&path).unwrap();
        let at = raw.windows(64).position(|w| w == &b1[1000..1064]).unwrap() + 10;
        let mut damaged = raw.clone();
        damaged[at] ^= 0x40;
        std::fs::write(&path, &damaged).unwrap();
        assert!(c.get("layers/run", *o1, Some(*crc1)).is_none());
        assert!(!path.exists(), "the damaged entry's name is removed");
        assert_eq!(c.corrupt.load(Ordering::Relaxed), 1);
        for (o, b, crc) in run.iter().filter(|(o, _, _)| o != o1) {
            assert_eq!(c.get("layers/run", *o, Some(*crc)).unwrap(), b);
        }
        // Put again: only the missing entry gets a (new) file.
        c.put_run("layers/run", &run);
        assert_eq!(c.get("layers/run", *o1, Some(*crc1)).unwrap(), b1);
        let inode_of = |o: u64| std::fs::metadata(c.path("layers/run", o)).unwrap().ino();
        assert_ne!(inode_of(*o1), inode_of(run[0].0));
        assert_eq!(inode_of(run[2].0), inode_of(run[0].0));
        // A trim to nothing removes every name.
        c.trim_leaving(c.cap);
        assert_eq!(c.size(), 0);
        for (o, _, crc) in &run {
            assert!(c.get("layers/run", *o, Some(*crc)).is_none());
        }
        // A small bound makes small files: at most a tenth of it each (one entry at least).
        // Here a tenth is MAP_MIN: no two entries fit in one file.
        let small = DiskCache::open(dir.path().join("s"), MAP_MIN as u64 * 10).unwrap();
        small.put_run("layers/run", &run);
        assert_eq!(small.files().len(), run.len());
        for (o, b, crc) in &run {
            assert_eq!(small.get("layers/run", *o, Some(*crc)).unwrap(), b);
        }
    }

    /// Where hard links fail (a file system without them), a run is written as a file per
    /// entry: every entry reads back, each is counted once, and no temporary file is left.
    #[test]
    fn without_links_a_run_is_a_file_per_entry() {
        use std::os::unix::fs::MetadataExt;
        let dir = tempfile::tempdir().unwrap();
        let c = DiskCache::open(dir.path().join("c"), 40 << 20).unwrap();
        c.no_links.store(true, Ordering::Relaxed);
        let run: Vec<(u64, bytes::Bytes, u32)> =
            [(0u64, 3000usize), (3000, MAP_MIN + 7), (9000, 500)]
                .iter()
                .map(|&(off, len)| {
                    let data: Vec<u8> = (0..len).map(|i| (i as u64 * 31 + off) as u8).collect();
                    let crc = crc32c::crc32c(&data);
                    (off, bytes::Bytes::from(data), crc)
                })
                .collect();
        c.put_run("layers/nolink", &run);
        let inodes: std::collections::HashSet<u64> = run
            .iter()
            .map(|(o, _, _)| {
                std::fs::metadata(c.path("layers/nolink", *o))
                    .unwrap()
                    .ino()
            })
            .collect();
        assert_eq!(inodes.len(), run.len(), "a file per entry");
        assert_eq!(c.files().len(), run.len());
        let data_len: u64 = run.iter().map(|(_, b, _)| b.len() as u64).sum();
        let size = c.size();
        assert!(
            size >= data_len && size < data_len + 3 * (PAGE + 256),
            "{size} for {data_len} bytes of entries"
        );
        for (o, b, crc) in &run {
            assert_eq!(
                c.get("layers/nolink", *o, Some(*crc)).unwrap(),
                b,
                "entry at {o}"
            );
        }
        let mut left = Vec::new();
        let mut dirs = vec![dir.path().join("c")];
        while let Some(d) = dirs.pop() {
            for e in std::fs::read_dir(&d).unwrap() {
                let e = e.unwrap();
                if e.file_type().unwrap().is_dir() {
                    dirs.push(e.path());
                } else if e.file_name().to_string_lossy().starts_with(".tmp-") {
                    left.push(e.path());
                }
            }
        }
        assert!(left.is_empty(), "temporary files left: {left:?}");
    }

    /// A file of an older format under an entry's name is a miss, and is removed so that the
    /// entry can be put in its place.
    #[test]
    fn entries_of_an_older_format_are_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let c = DiskCache::open(dir.path().join("c"), 1 << 20).unwrap();
        let data = vec![1u8; 3000];
        let crc = crc32c::crc32c(&data);
        let path = c.path("layers/old", 0);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, b"QDC1 an entry of the first format").unwrap();
        c.put("layers/old", 0, &data, crc);
        assert!(c.get("layers/old", 0, Some(crc)).is_none());
        assert!(!path.exists());
        c.put("layers/old", 0, &data, crc);
        assert_eq!(c.get("layers/old", 0, Some(crc)).unwrap(), data);
    }

    /// Objects kept in the catalog get no entries (and no files): their bytes and footers are
    /// read from the catalog. The same object, once moved into the store, is cached.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn objects_kept_in_the_catalog_are_not_cached() {
        let dir = tempfile::tempdir().unwrap();
        let c = Arc::new(DiskCache::open(dir.path().join("c"), 1 << 20).unwrap());
        let data = vec![3u8; 4096];
        let crc = crc32c::crc32c(&data);
        let inline = format!("{}abc", crate::catalog::INLINE_PREFIX);
        c.put(&inline, 0, &data, crc);
        c.put_behind(
            &inline,
            vec![(FOOTER, bytes::Bytes::from(data.clone()), crc)],
        );
        assert_eq!(c.size(), 0);
        assert!(c.get(&inline, 0, Some(crc)).is_none());
        assert!(c.get(&inline, FOOTER, None).is_none());
        c.put("layers/abc", 0, &data, crc);
        assert_eq!(c.get("layers/abc", 0, Some(crc)).unwrap(), data);
        assert!(c.size() > 0);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn puts_behind_are_written_and_bounded() {
        let dir = tempfile::tempdir().unwrap();
        let c = Arc::new(DiskCache::open(dir.path().join("c"), 1 << 30).unwrap());
        let data = bytes::Bytes::from(vec![9u8; 1 << 20]);
        let crc = crc32c::crc32c(&data);
        // More than BEHIND_MAX at once: the excess is written in place, the rest behind.
        let n = (BEHIND_MAX >> 20) + 8;
        for i in 0..n {
            c.put_behind("layers/x", vec![(i << 20, data.clone(), crc)]);
            assert!(c.behind.load(Ordering::SeqCst) <= BEHIND_MAX + (1 << 20));
        }
        let waited = std::time::Instant::now();
        while c.behind.load(Ordering::SeqCst) > 0 {
            assert!(
                waited.elapsed() < std::time::Duration::from_secs(60),
                "never written"
            );
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        for i in 0..n {
            assert_eq!(
                c.get("layers/x", i << 20, Some(crc)).unwrap(),
                data,
                "entry {i}"
            );
        }
        // Not filling: nothing is queued or written.
        c.set_fill(false);
        c.put_behind("layers/y", vec![(0, data.clone(), crc)]);
        assert_eq!(c.behind.load(Ordering::SeqCst), 0);
        assert!(c.get("layers/y", 0, Some(crc)).is_none());
    }

    #[test]
    fn a_cache_not_filled_is_still_read() {
        let dir = tempfile::tempdir().unwrap();
        let c = DiskCache::open(dir.path().join("c"), 100_000).unwrap();
        let data = vec![3u8; 1000];
        let crc = crc32c::crc32c(&data);
        c.put("layers/a", 0, &data, crc);
        c.set_fill(false);
        c.put("layers/b", 0, &data, crc);
        assert!(
            c.get("layers/b", 0, Some(crc)).is_none(),
            "added while not filling"
        );
        assert_eq!(c.get("layers/a", 0, Some(crc)).unwrap(), data);
    }

    #[test]
    fn large_entries_are_mapped_checked_and_outlive_their_file() {
        let dir = tempfile::tempdir().unwrap();
        let c = DiskCache::open(dir.path().join("c"), 10 << 20).unwrap();
        let data: Vec<u8> = (0..MAP_MIN + 4321).map(|i| (i * 7 % 251) as u8).collect();
        let crc = crc32c::crc32c(&data);
        c.put("layers/big", 4096, &data, crc);
        let got = c.get("layers/big", 4096, Some(crc)).unwrap();
        assert_eq!(got, data);
        // The bytes stay readable once the entry is removed (trimmed) or replaced.
        let path = c.path("layers/big", 4096);
        std::fs::remove_file(&path).unwrap();
        assert_eq!(got, data);
        assert!(c.get("layers/big", 4096, Some(crc)).is_none());
        // Damage in a mapped entry is found: never served, removed.
        c.put("layers/big", 4096, &data, crc);
        let mut raw = std::fs::read(&path).unwrap();
        let mid = raw.len() / 2;
        raw[mid] ^= 0x01;
        std::fs::write(&path, raw).unwrap();
        assert!(c.get("layers/big", 4096, Some(crc)).is_none());
        assert!(!path.exists(), "a damaged entry is removed");
        assert_eq!(c.corrupt.load(Ordering::Relaxed), 1);
    }

    #[test]
    fn entries_are_checked_and_bounded() {
        let dir = tempfile::tempdir().unwrap();
        let c = DiskCache::open(dir.path().join("c"), 100_000).unwrap();
        let data = vec![7u8; 30_000];
        let crc = crc32c::crc32c(&data);
        c.put("layers/a", 0, &data, crc);
        assert_eq!(c.get("layers/a", 0, Some(crc)).unwrap(), data);
        assert!(c.get("layers/a", 1, Some(crc)).is_none(), "another offset");
        assert!(c.get("layers/b", 0, Some(crc)).is_none(), "another key");
        // A wrong expected checksum, then damage: never served.
        assert!(c.get("layers/a", 0, Some(crc ^ 1)).is_none());
        c.put("layers/a", 0, &data, crc);
        let path = c.path("layers/a", 0);
        let mut raw = std::fs::read(&path).unwrap();
        let n = raw.len();
        raw[n - 1] ^= 0xff;
        std::fs::write(&path, raw).unwrap();
        assert!(c.get("layers/a", 0, Some(crc)).is_none());
        assert!(!path.exists(), "a damaged entry is removed");
        assert_eq!(c.corrupt.load(Ordering::Relaxed), 2, "both refusals count");
        // The bound holds.
        for i in 0..20 {
            c.put(&format!("layers/k{i}"), 0, &data, crc);
        }
        c.trim();
        assert!(c.size() <= 100_000, "{}", c.size());
        assert!(
            c.get("layers/k19", 0, Some(crc)).is_some(),
            "the newest stays"
        );
    }
}

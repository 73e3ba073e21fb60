//! A bounded on-disk cache of extents and footers read from a remote object store (S3), shared by
//! the processes of one host that use the same data directory (`DATA_DIR/cache/extents`), and
//! surviving remounts. Objects are immutable and keys never reused, so an entry never goes stale;
//! every entry read back is checked against the checksum the layer's index holds (extents) or its
//! own (footers), and a damaged or foreign entry is removed and fetched again.
//!
//! Entries are files named after a hash of (object key, offset), written to a temporary name and
//! renamed into place (no reader sees half an entry; no fsync: the cache is disposable). Each file
//! starts with the key and offset it holds, so a hash collision is a miss, never wrong bytes. The
//! cache's size is bounded: when a process has added more than a tenth of the bound since it last
//! looked, it lists the directory and removes the least recently used entries (by modification
//! time, refreshed on a hit) until the total is under 90% of the bound.
//!
//! Objects kept in the catalog (`inline/ID`, see `engine::inline`) are not cached here: they are
//! read from the catalog, not the object store, the inline store keeps them in memory, and they
//! move into the store (as `layers/ID`) seconds after they were written. A writing mount makes
//! several of them per DuckDB transaction; a file for each of their footers cost an inode
//! allocation per layer on the commit path's CPU, for entries nothing would read again.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::SystemTime;

/// Entry header: magic, key length (u16), key, offset (u64), data length (u32), crc32c (u32).
const MAGIC: &[u8; 4] = b"QDC1";

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
/// Entries are never written or truncated once in place (a new entry is renamed over an old
/// one, and removal unlinks), so the bytes of a mapping cannot change under it.
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
        // One open for the read and the recency stamp.
        let read = || -> std::io::Result<(bytes::Bytes, std::fs::File, Option<SystemTime>)> {
            let mut f = std::fs::File::options()
                .read(true)
                .write(true)
                .open(&path)?;
            let meta = f.metadata()?;
            let len = usize::try_from(meta.len()).map_err(std::io::Error::other)?;
            // (A mapping that fails, e.g. at the limit of mappings per process, is a copy.)
            let raw = match (len >= MAP_MIN).then(|| crate::store::local::map_file(&f, len, true)) {
                Some(Ok(m)) => bytes::Bytes::from(m),
                _ => {
                    let mut raw = Vec::with_capacity(len);
                    std::io::Read::read_to_end(&mut f, &mut raw)?;
                    bytes::Bytes::from(raw)
                }
            };
            Ok((raw, f, meta.modified().ok()))
        };
        let (raw, file, modified) = match read() {
            Ok(r) => r,
            Err(_) => {
                self.misses.fetch_add(1, Ordering::Relaxed);
                return None;
            }
        };
        match parse(&raw, key, off) {
            Some((data, stored_crc))
                if crc.is_none_or(|c| c == stored_crc) && crc32c::crc32c(data) == stored_crc =>
            {
                self.hits.fetch_add(1, Ordering::Relaxed);
                // Recently used (the eviction order), stamped at most once a minute.
                let now = SystemTime::now();
                let stale = modified
                    .map(|t| now.duration_since(t).unwrap_or_default() > RECENCY_STEP)
                    .unwrap_or(true);
                if stale {
                    let _ = file.set_modified(now);
                }
                let start = raw.len() - data.len();
                Some(raw.slice(start..))
            }
            Some(_) | None if raw.starts_with(MAGIC) && header_key(&raw) == Some(key) => {
                // Damaged: never served; fetched again.
                tracing::warn!("disk cache entry {} is damaged: removed", path.display());
                self.corrupt.fetch_add(1, Ordering::Relaxed);
                let _ = std::fs::remove_file(&path);
                None
            }
            _ => {
                // Another key with the same hash, or garbage: a miss.
                self.misses.fetch_add(1, Ordering::Relaxed);
                None
            }
        }
    }

    /// [`put`](Self::put)s the extents `items` (offset, bytes, checksum) of object `key` on a
    /// blocking thread, so that the caller, a read that fetched them from the store, answers
    /// without waiting for the creation of their files (inode allocation shows as a large
    /// part of a cold read's CPU). With [`BEHIND_MAX`] bytes already waiting, or outside a
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
            for (off, bytes, crc) in &items {
                me.put(&key, *off, bytes, *crc);
            }
            me.behind.fetch_sub(len, Ordering::SeqCst);
        };
        match tokio::runtime::Handle::try_current() {
            Ok(rt) if queued <= BEHIND_MAX => drop(rt.spawn_blocking(write)),
            _ => off_the_runtime(write),
        }
    }

    /// Caches `data` (checksum `crc`) for (`key`, `off`), unless the object is kept in the
    /// catalog. Failures are ignored: it is a cache.
    pub fn put(&self, key: &str, off: u64, data: &[u8], crc: u32) {
        if !self.fill.load(Ordering::Relaxed) || !Self::keeps(key) {
            return;
        }
        let path = self.path(key, off);
        let Some(parent) = path.parent() else { return };
        let tmp = parent.join(format!(
            ".tmp-{}-{}",
            std::process::id(),
            crate::engine::new_id()
        ));
        let entry_len = (22 + key.len() + data.len()) as u64;
        if entry_len > self.cap {
            return;
        }
        // Room first, reserved under one lock: a trim leaves `room` bytes free (besides the
        // entries still being written) and at most that much is reserved before the next one,
        // so this process never makes the cache hold more than its bound, however many threads
        // put at once.
        {
            let mut b = self.budget.lock().unwrap_or_else(|p| p.into_inner());
            if b.added + entry_len > b.room {
                let room = (self.cap / 10).max(entry_len);
                self.trim_leaving(room.saturating_add(self.writing.load(Ordering::SeqCst)));
                b.room = room;
                b.added = 0;
            }
            b.added += entry_len;
            self.writing.fetch_add(entry_len, Ordering::SeqCst);
        }
        let write = || -> std::io::Result<()> {
            std::fs::create_dir_all(parent)?;
            let mut f = std::fs::File::create(&tmp)?;
            let mut head = Vec::with_capacity(22 + key.len());
            head.extend_from_slice(MAGIC);
            head.extend_from_slice(&(key.len() as u16).to_le_bytes());
            head.extend_from_slice(key.as_bytes());
            head.extend_from_slice(&off.to_le_bytes());
            head.extend_from_slice(&(data.len() as u32).to_le_bytes());
            head.extend_from_slice(&crc.to_le_bytes());
            f.write_all(&head)?;
            f.write_all(data)?;
            std::fs::rename(&tmp, &path)
        };
        if write().is_err() {
            let _ = std::fs::remove_file(&tmp);
        }
        self.writing.fetch_sub(entry_len, Ordering::SeqCst);
    }

    /// Removes least recently used entries until the cache holds at most 90% of its bound.
    pub fn trim(&self) {
        self.trim_leaving(self.cap / 10);
    }

    /// Removes least recently used entries until `room` bytes are free under the bound.
    fn trim_leaving(&self, room: u64) {
        let mut entries: Vec<(SystemTime, u64, PathBuf)> = Vec::new();
        let Ok(subdirs) = std::fs::read_dir(&self.dir) else {
            return;
        };
        for sub in subdirs.flatten() {
            let Ok(files) = std::fs::read_dir(sub.path()) else {
                continue;
            };
            for f in files.flatten() {
                if let Ok(m) = f.metadata() {
                    if m.is_file() {
                        let t = m.modified().unwrap_or(SystemTime::UNIX_EPOCH);
                        entries.push((t, m.len(), f.path()));
                    }
                }
            }
        }
        let mut total: u64 = entries.iter().map(|e| e.1).sum();
        let goal = self.cap.saturating_sub(room);
        if total <= goal {
            return;
        }
        entries.sort();
        for (_, len, path) in entries {
            if total <= goal {
                break;
            }
            if std::fs::remove_file(&path).is_ok() {
                total = total.saturating_sub(len);
            }
        }
    }

    /// Bytes of entries in the cache now (lists the directory).
    pub fn size(&self) -> u64 {
        let mut total = 0;
        for sub in std::fs::read_dir(&self.dir).into_iter().flatten().flatten() {
            for f in std::fs::read_dir(sub.path())
                .into_iter()
                .flatten()
                .flatten()
            {
                total += f.metadata().map(|m| m.len()).unwrap_or(0);
            }
        }
        total
    }
}

/// The key named by an entry's header.
fn header_key(raw: &[u8]) -> Option<&str> {
    let klen = u16::from_le_bytes(raw.get(4..6)?.try_into().ok()?) as usize;
    std::str::from_utf8(raw.get(6..6 + klen)?).ok()
}

/// The data and stored checksum of an entry for (`key`, `off`); None if it holds something else
/// or is cut short.
fn parse<'a>(raw: &'a [u8], key: &str, off: u64) -> Option<(&'a [u8], u32)> {
    if !raw.starts_with(MAGIC) || header_key(raw)? != key {
        return None;
    }
    let mut p = 6 + key.len();
    let o = u64::from_le_bytes(raw.get(p..p + 8)?.try_into().ok()?);
    p += 8;
    let len = u32::from_le_bytes(raw.get(p..p + 4)?.try_into().ok()?) as usize;
    p += 4;
    let crc = u32::from_le_bytes(raw.get(p..p + 4)?.try_into().ok()?);
    p += 4;
    let data = raw.get(p..p + len)?;
    if o != off || raw.len() != p + len {
        return None;
    }
    Some((data, crc))
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

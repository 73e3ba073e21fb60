//! Object store in a local directory: the embedded default.
//!
//! Key `layers/ab12` is the file `<root>/layers/ab12`. Objects are written to `<root>/.tmp/`, made
//! durable, then hard-linked into place: `link(2)` fails if the target exists, so an object is
//! never overwritten and readers never see a partial one. Keys that are a prefix-directory of
//! other keys (`a` and `a/b`) cannot coexist here, unlike on S3.

use std::fs::{self, File};
use std::io::{self, ErrorKind, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use bytes::Bytes;
use chrono::{DateTime, Utc};

use super::{validate_key, ObjectMeta, ObjectStore, StoreError};

/// Directory (under the root) for objects being written; never listed.
const TMP_DIR: &str = ".tmp";
/// Temp files older than this are leftovers of a crash; removed on open.
const STALE_TMP_AGE: Duration = Duration::from_secs(24 * 3600);

/// Files of objects kept open for reads (objects are immutable and keys never reused, so an
/// open file always holds the object's bytes; a deleted one stays readable until evicted).
const OPEN_FILES: usize = 512;

/// Recently read objects: key -> (file, size).
type OpenFiles = std::sync::Mutex<lru::LruCache<String, std::sync::Arc<(File, u64)>>>;

/// Object store rooted at a local directory.
#[derive(Debug, Clone)]
pub struct LocalStore {
    root: PathBuf,
    tmp: PathBuf,
    /// Shared by clones of the store: no open() per extent read.
    open_files: std::sync::Arc<OpenFiles>,
}

impl LocalStore {
    /// Opens (creating if needed) the store at `root`, and removes temp files left by crashes
    /// more than a day ago.
    pub fn open(root: PathBuf) -> Result<Self, StoreError> {
        let tmp = root.join(TMP_DIR);
        fs::create_dir_all(&tmp).map_err(|e| StoreError::from_io(&tmp.to_string_lossy(), e))?;
        sweep_stale_temps(&tmp);
        let cap = std::num::NonZeroUsize::new(OPEN_FILES).unwrap_or(std::num::NonZeroUsize::MIN);
        Ok(LocalStore {
            root,
            tmp,
            open_files: std::sync::Arc::new(std::sync::Mutex::new(lru::LruCache::new(cap))),
        })
    }

    /// The open file of object `key` and its size (from the open-file cache, else opened).
    fn object_file(&self, key: &str) -> Result<std::sync::Arc<(File, u64)>, StoreError> {
        let lock = || self.open_files.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(f) = lock().get(key) {
            return Ok(f.clone());
        }
        let f = std::sync::Arc::new(open_object(&self.path(key), key)?);
        lock().put(key.to_string(), f.clone());
        Ok(f)
    }

    /// The directory holding the objects.
    pub fn root(&self) -> &Path {
        &self.root
    }

    fn path(&self, key: &str) -> PathBuf {
        self.root.join(key)
    }

    fn temp_path(&self) -> PathBuf {
        self.tmp.join(uuid::Uuid::new_v4().simple().to_string())
    }

    /// Maps the object `key` into memory, read-only (an empty object maps to an empty slice).
    pub fn map(&self, key: &str) -> Result<MappedObject, StoreError> {
        validate_key(key)?;
        let (f, size) = open_object(&self.path(key), key)?;
        let len = usize::try_from(size)
            .map_err(|_| StoreError::from_io(key, io::Error::other("object too large to map")))?;
        if len == 0 {
            return Ok(MappedObject {
                ptr: std::ptr::null(),
                len: 0,
            });
        }
        // Objects are immutable: they are created whole (temp file + link) and only ever
        // unlinked, never truncated or written, so the mapped bytes cannot change or vanish under
        // us (an unlinked file stays mapped).
        map_file(&f, 0, len, false).map_err(|e| StoreError::from_io(key, e))
    }
}

/// Maps `len` (> 0) bytes of `f` from `offset` (a multiple of the page size) into memory,
/// read-only and shared, advised sequential; `populate`: its page-cache pages are mapped at once
/// (no fault per page on first touch). The mapping stays valid after `f` is closed or unlinked;
/// the caller promises that nobody truncates or writes the file while it is mapped (its files are
/// immutable).
pub(crate) fn map_file(
    f: &File,
    offset: u64,
    len: usize,
    populate: bool,
) -> io::Result<MappedObject> {
    use std::os::fd::AsRawFd;
    let offset = libc::off_t::try_from(offset).map_err(io::Error::other)?;
    let flags = libc::MAP_SHARED | if populate { libc::MAP_POPULATE } else { 0 };
    // SAFETY: mapping `len` bytes of a regular file open for reading, read-only; the region is
    // owned by the returned value, which unmaps it once.
    let ptr = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_READ,
            flags,
            f.as_raw_fd(),
            offset,
        )
    };
    if ptr == libc::MAP_FAILED {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: advice on the mapping made above; failure is harmless.
    unsafe { libc::madvise(ptr, len, libc::MADV_SEQUENTIAL) };
    Ok(MappedObject {
        ptr: ptr as *const u8,
        len,
    })
}

/// A read-only memory mapping of one immutable object ([`LocalStore::map`]); unmapped on drop.
pub struct MappedObject {
    ptr: *const u8,
    len: usize,
}

// SAFETY: the mapping is read-only and owned by this value; sharing `&[u8]` views of immutable
// bytes across threads is sound.
unsafe impl Send for MappedObject {}
// SAFETY: as above: no interior mutability.
unsafe impl Sync for MappedObject {}

impl MappedObject {
    /// The whole object.
    pub fn bytes(&self) -> &[u8] {
        if self.len == 0 {
            return &[];
        }
        // SAFETY: `ptr` maps `len` readable bytes for as long as `self` lives (see `map`).
        unsafe { std::slice::from_raw_parts(self.ptr, self.len) }
    }
}

/// The mapped bytes as a [`Bytes`], which owns the mapping (unmapped when the last clone goes).
impl From<MappedObject> for Bytes {
    fn from(m: MappedObject) -> Bytes {
        Bytes::from_owner(m)
    }
}

impl AsRef<[u8]> for MappedObject {
    fn as_ref(&self) -> &[u8] {
        self.bytes()
    }
}

impl Drop for MappedObject {
    fn drop(&mut self) {
        if self.len > 0 {
            // SAFETY: unmapping exactly the region `map` created, once.
            unsafe { libc::munmap(self.ptr as *mut libc::c_void, self.len) };
        }
    }
}

/// Runs blocking file I/O off the async threads; a panic in `f` is propagated.
async fn blocking<T, F>(f: F) -> Result<T, StoreError>
where
    T: Send + 'static,
    F: FnOnce() -> Result<T, StoreError> + Send + 'static,
{
    match tokio::task::spawn_blocking(f).await {
        Ok(result) => result,
        Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
        Err(e) => Err(StoreError::Backend(format!("blocking task failed: {e}"))),
    }
}

/// Maps an error from reading object `key`: a missing path or a directory in its place means the
/// object does not exist.
fn read_error(key: &str, e: io::Error) -> StoreError {
    match e.kind() {
        ErrorKind::NotFound | ErrorKind::IsADirectory | ErrorKind::NotADirectory => {
            StoreError::NotFound(key.to_string())
        }
        _ => StoreError::from_io(key, e),
    }
}

/// Opens object `key` at `path` for reading: its file and size; a missing path, or anything but
/// a regular file in its place, is `NotFound`.
fn open_object(path: &Path, key: &str) -> Result<(File, u64), StoreError> {
    let f = File::open(path).map_err(|e| read_error(key, e))?;
    let m = f.metadata().map_err(|e| read_error(key, e))?;
    if !m.is_file() {
        return Err(StoreError::NotFound(key.to_string()));
    }
    Ok((f, m.len()))
}

/// Maps an error from publishing object `key`.
fn publish_error(key: &str, e: io::Error) -> StoreError {
    match e.kind() {
        ErrorKind::AlreadyExists => StoreError::AlreadyExists(key.to_string()),
        _ => StoreError::from_io(key, e),
    }
}

fn fsync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Creates `dir` and its missing ancestors below `root`, fsyncing each new entry's parent.
fn create_dirs_durable(root: &Path, dir: &Path) -> io::Result<()> {
    if dir == root || dir.is_dir() {
        return Ok(());
    }
    let parent = dir
        .parent()
        .ok_or_else(|| io::Error::new(ErrorKind::InvalidInput, "path outside the store"))?;
    create_dirs_durable(root, parent)?;
    match fs::create_dir(dir) {
        Ok(()) => fsync_dir(parent),
        Err(e) if e.kind() == ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(e),
    }
}

/// Makes the durable file `src` visible at `dst` without replacing anything (`AlreadyExists` if
/// `dst` exists), durably. `src` stays in place.
fn publish(root: &Path, src: &Path, dst: &Path) -> io::Result<()> {
    let parent = dst
        .parent()
        .ok_or_else(|| io::Error::new(ErrorKind::InvalidInput, "path outside the store"))?;
    create_dirs_durable(root, parent)?;
    fs::hard_link(src, dst)?;
    fsync_dir(parent)
}

/// Writes `data` to a new file at `path` and makes it durable.
fn write_durable(path: &Path, data: &[u8]) -> io::Result<()> {
    let mut f = File::create_new(path)?;
    f.write_all(data)?;
    f.sync_all()
}

fn remove_leftover(path: &Path) {
    if let Err(e) = fs::remove_file(path) {
        if e.kind() != ErrorKind::NotFound {
            tracing::warn!(path = %path.display(), error = %e, "cannot remove temp file");
        }
    }
}

fn sweep_stale_temps(tmp: &Path) {
    let Ok(entries) = fs::read_dir(tmp) else {
        return;
    };
    for entry in entries.flatten() {
        let stale = entry
            .metadata()
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| t.elapsed().ok())
            .is_some_and(|age| age > STALE_TMP_AGE);
        if stale {
            tracing::debug!(path = %entry.path().display(), "removing stale temp file");
            remove_leftover(&entry.path());
        }
    }
}

fn meta(key: String, m: &fs::Metadata) -> io::Result<ObjectMeta> {
    Ok(ObjectMeta {
        key,
        size: m.len(),
        modified: DateTime::<Utc>::from(m.modified()?),
    })
}

/// Collects the objects under `dir` (whose key prefix is `dir_key`) with keys starting with
/// `prefix`, skipping subtrees that cannot match and entries that are not valid keys.
fn walk(dir: &Path, dir_key: &str, prefix: &str, out: &mut Vec<ObjectMeta>) -> io::Result<()> {
    let entries = match fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    for entry in entries {
        let entry = entry?;
        let Ok(name) = entry.file_name().into_string() else {
            continue;
        };
        let key = format!("{dir_key}{name}");
        if validate_key(&key).is_err() {
            continue; // .tmp, hidden or foreign files
        }
        let m = match entry.metadata() {
            Ok(m) => m,
            Err(e) if e.kind() == ErrorKind::NotFound => continue, // deleted meanwhile
            Err(e) => return Err(e),
        };
        if m.is_dir() {
            let sub = format!("{key}/");
            if sub.starts_with(prefix) || prefix.starts_with(&sub) {
                walk(&entry.path(), &sub, prefix, out)?;
            }
        } else if m.is_file() && key.starts_with(prefix) {
            out.push(meta(key, &m)?);
        }
    }
    Ok(())
}

#[async_trait::async_trait]
impl ObjectStore for LocalStore {
    async fn put(&self, key: &str, data: Bytes) -> Result<(), StoreError> {
        validate_key(key)?;
        let (root, dst, tmp, key) = (
            self.root.clone(),
            self.path(key),
            self.temp_path(),
            key.to_string(),
        );
        blocking(move || {
            let result = write_durable(&tmp, &data)
                .map_err(|e| StoreError::from_io(&key, e))
                .and_then(|()| publish(&root, &tmp, &dst).map_err(|e| publish_error(&key, e)));
            remove_leftover(&tmp);
            result
        })
        .await
    }

    async fn put_file(&self, key: &str, path: &Path) -> Result<(), StoreError> {
        validate_key(key)?;
        let (root, dst, tmp, src, key) = (
            self.root.clone(),
            self.path(key),
            self.temp_path(),
            path.to_path_buf(),
            key.to_string(),
        );
        blocking(move || {
            let io_err = |e: io::Error| StoreError::from_io(&key, e);
            if !fs::symlink_metadata(&src).map_err(io_err)?.is_file() {
                return Err(io_err(io::Error::new(
                    ErrorKind::InvalidInput,
                    format!("{} is not a regular file", src.display()),
                )));
            }
            File::open(&src)
                .and_then(|f| f.sync_all())
                .map_err(io_err)?;
            match publish(&root, &src, &dst) {
                Ok(()) => {}
                Err(e) if e.kind() == ErrorKind::CrossesDevices => {
                    // Another filesystem: copy into the store's temp dir, then link.
                    let result = fs::copy(&src, &tmp)
                        .and_then(|_| File::open(&tmp)?.sync_all())
                        .map_err(io_err)
                        .and_then(|()| {
                            publish(&root, &tmp, &dst).map_err(|e| publish_error(&key, e))
                        });
                    remove_leftover(&tmp);
                    result?;
                }
                Err(e) => return Err(publish_error(&key, e)),
            }
            remove_leftover(&src);
            Ok(())
        })
        .await
    }

    async fn get(&self, key: &str) -> Result<Bytes, StoreError> {
        validate_key(key)?;
        let (path, key) = (self.path(key), key.to_string());
        blocking(move || {
            fs::read(&path)
                .map(Bytes::from)
                .map_err(|e| read_error(&key, e))
        })
        .await
    }

    async fn get_range(&self, key: &str, start: u64, end: u64) -> Result<Bytes, StoreError> {
        validate_key(key)?;
        let (store, key) = (self.clone(), key.to_string());
        blocking(move || {
            let file = store.object_file(&key)?;
            let (f, size) = (&file.0, file.1);
            let end = end.min(size);
            if start >= end {
                return Ok(Bytes::new());
            }
            let len = usize::try_from(end - start).map_err(|_| {
                StoreError::from_io(&key, io::Error::other("range too large for memory"))
            })?;
            let mut buf = vec![0u8; len];
            f.read_exact_at(&mut buf, start)
                .map_err(|e| StoreError::from_io(&key, e))?;
            Ok(Bytes::from(buf))
        })
        .await
    }

    async fn read_into(
        &self,
        key: &str,
        start: u64,
        mut buf: Vec<u8>,
    ) -> Result<Vec<u8>, StoreError> {
        validate_key(key)?;
        let (store, key) = (self.clone(), key.to_string());
        blocking(move || {
            let file = store.object_file(&key)?;
            file.0
                .read_exact_at(&mut buf, start)
                .map_err(|e| StoreError::from_io(&key, e))?;
            Ok(buf)
        })
        .await
    }

    async fn head(&self, key: &str) -> Result<ObjectMeta, StoreError> {
        validate_key(key)?;
        let (path, key) = (self.path(key), key.to_string());
        blocking(move || {
            let m = fs::metadata(&path).map_err(|e| read_error(&key, e))?;
            if !m.is_file() {
                return Err(StoreError::NotFound(key));
            }
            meta(key.clone(), &m).map_err(|e| StoreError::from_io(&key, e))
        })
        .await
    }

    async fn delete(&self, key: &str) -> Result<(), StoreError> {
        validate_key(key)?;
        self.open_files
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .pop(key);
        let (path, key) = (self.path(key), key.to_string());
        blocking(move || match fs::remove_file(&path) {
            Ok(()) => match path.parent() {
                Some(parent) => fsync_dir(parent).map_err(|e| StoreError::from_io(&key, e)),
                None => Ok(()),
            },
            Err(e) => match read_error(&key, e) {
                StoreError::NotFound(_) => Ok(()),
                other => Err(other),
            },
        })
        .await
    }

    async fn list(&self, prefix: &str) -> Result<Vec<ObjectMeta>, StoreError> {
        let (root, prefix) = (self.root.clone(), prefix.to_string());
        blocking(move || {
            let mut out = Vec::new();
            walk(&root, "", &prefix, &mut out).map_err(|e| StoreError::from_io(&prefix, e))?;
            out.sort_by(|a, b| a.key.cmp(&b.key));
            Ok(out)
        })
        .await
    }

    fn describe(&self) -> String {
        format!("file://{}", self.root.display())
    }

    fn as_local(&self) -> Option<&LocalStore> {
        Some(self)
    }

    /// A read of the object's file on the calling thread, only of what the page cache holds
    /// (`RWF_NOWAIT`: a read that would wait for the disk is not made).
    fn read_now(&self, key: &str, start: u64, end: u64) -> Option<Bytes> {
        use std::os::fd::AsRawFd;
        validate_key(key).ok()?;
        let file = self.object_file(key).ok()?;
        if start > end || end > file.1 {
            return None;
        }
        let mut buf = vec![0u8; usize::try_from(end - start).ok()?];
        let iov = libc::iovec {
            iov_base: buf.as_mut_ptr().cast(),
            iov_len: buf.len(),
        };
        // SAFETY: one iovec over `buf`, which lives across the call; the descriptor is open.
        let n = unsafe {
            libc::preadv2(
                file.0.as_raw_fd(),
                &iov,
                1,
                i64::try_from(start).ok()?,
                libc::RWF_NOWAIT,
            )
        };
        // (Short: part of it is not cached.)
        (usize::try_from(n).ok()? == buf.len()).then(|| Bytes::from(buf))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{testsuite, DynStore};
    use std::os::unix::fs::MetadataExt;
    use std::sync::Arc;

    fn store() -> (tempfile::TempDir, LocalStore) {
        let dir = tempfile::tempdir().unwrap();
        let store = LocalStore::open(dir.path().join("objects")).unwrap();
        (dir, store)
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn conformance() {
        let (_dir, store) = store();
        let root = store.root().to_path_buf();
        testsuite::conformance_suite(Arc::new(store) as DynStore).await;
        // Nothing left behind in the temp dir.
        assert_eq!(fs::read_dir(root.join(TMP_DIR)).unwrap().count(), 0);
    }

    #[tokio::test]
    async fn keys_map_to_paths() {
        let (_dir, store) = store();
        store
            .put("layers/ab12", Bytes::from_static(b"xyz"))
            .await
            .unwrap();
        assert_eq!(fs::read(store.root().join("layers/ab12")).unwrap(), b"xyz");
        assert!(store.describe().starts_with("file:///"));
        // Foreign and hidden files are not objects.
        fs::write(store.root().join("layers/.hidden"), b"x").unwrap();
        fs::write(store.root().join(".tmp/pending"), b"x").unwrap();
        let keys: Vec<String> = store
            .list("")
            .await
            .unwrap()
            .into_iter()
            .map(|m| m.key)
            .collect();
        assert_eq!(keys, ["layers/ab12"]);
    }

    #[tokio::test]
    async fn put_file_same_filesystem_moves() {
        let (dir, store) = store();
        let src = dir.path().join("spill");
        fs::write(&src, b"layer bytes").unwrap();
        let ino = fs::metadata(&src).unwrap().ino();
        store.put_file("layers/1", &src).await.unwrap();
        assert!(!src.exists());
        let m = fs::metadata(store.root().join("layers/1")).unwrap();
        assert_eq!(m.ino(), ino, "same filesystem: linked, not copied");
        assert_eq!(m.nlink(), 1);
    }

    #[tokio::test]
    async fn put_file_other_filesystem_copies() {
        let (_dir, store) = store();
        let other = Path::new("/dev/shm");
        let same_dev = |p: &Path| fs::metadata(p).map(|m| m.dev());
        match (same_dev(other), same_dev(store.root())) {
            (Ok(a), Ok(b)) if a != b => {}
            _ => return, // no second filesystem available here
        }
        let src = other.join(format!("quackfs-test-{}", uuid::Uuid::new_v4()));
        fs::write(&src, b"from afar").unwrap();
        store.put_file("layers/far", &src).await.unwrap();
        assert!(!src.exists());
        assert_eq!(
            store.get("layers/far").await.unwrap(),
            Bytes::from_static(b"from afar")
        );
        let src = other.join(format!("quackfs-test-{}", uuid::Uuid::new_v4()));
        fs::write(&src, b"again").unwrap();
        assert!(matches!(
            store.put_file("layers/far", &src).await,
            Err(StoreError::AlreadyExists(_))
        ));
        assert!(src.exists());
        fs::remove_file(&src).unwrap();
        assert_eq!(fs::read_dir(store.root().join(TMP_DIR)).unwrap().count(), 0);
    }

    #[tokio::test]
    async fn put_file_rejects_non_files() {
        let (dir, store) = store();
        let missing = dir.path().join("missing");
        assert!(matches!(
            store.put_file("k", &missing).await,
            Err(StoreError::Io { .. })
        ));
        assert!(matches!(
            store.put_file("k", dir.path()).await,
            Err(StoreError::Io { .. })
        ));
        assert!(matches!(
            store.head("k").await,
            Err(StoreError::NotFound(_))
        ));
    }

    #[tokio::test]
    async fn directories_are_not_objects() {
        let (_dir, store) = store();
        store.put("a/b", Bytes::from_static(b"x")).await.unwrap();
        assert!(matches!(store.get("a").await, Err(StoreError::NotFound(_))));
        assert!(matches!(
            store.head("a").await,
            Err(StoreError::NotFound(_))
        ));
        assert!(matches!(
            store.get_range("a", 0, 1).await,
            Err(StoreError::NotFound(_))
        ));
        store.delete("a").await.unwrap();
        assert!(store.get("a/b").await.is_ok());
    }

    #[test]
    fn stale_temp_files_are_swept_on_open() {
        let (_dir, store) = store();
        let old = store.tmp.join("old");
        let fresh = store.tmp.join("fresh");
        fs::write(&old, b"x").unwrap();
        fs::write(&fresh, b"x").unwrap();
        let two_days_ago = std::time::SystemTime::now() - 2 * STALE_TMP_AGE;
        File::options()
            .write(true)
            .open(&old)
            .unwrap()
            .set_modified(two_days_ago)
            .unwrap();
        let store = LocalStore::open(store.root().to_path_buf()).unwrap();
        assert!(!old.exists());
        assert!(fresh.exists());
        drop(store);
    }
}

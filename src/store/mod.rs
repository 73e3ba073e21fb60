//! Object store: immutable objects (layer objects) addressed by string keys such as
//! `layers/<id>`.
//!
//! Objects are created once, never modified, and deleted only by gc. Implementations: a local
//! directory ([`LocalStore`], the embedded default), S3 (production), and test doubles
//! ([`MemoryStore`], [`FaultyStore`]). [`testsuite::conformance_suite`] checks the contract every
//! implementation must meet.

pub mod faulty;
pub mod local;
pub mod memory;
pub mod s3;

pub use faulty::FaultyStore;
pub use local::LocalStore;
pub use memory::MemoryStore;
pub use s3::S3Store;

use std::path::Path;
use std::sync::Arc;

use bytes::Bytes;
use chrono::{DateTime, Utc};

/// Longest accepted key (S3's limit).
pub const MAX_KEY_LEN: usize = 1024;

/// What the store knows about one object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectMeta {
    pub key: String,
    pub size: u64,
    pub modified: DateTime<Utc>,
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("object {0} not found")]
    NotFound(String),
    #[error("object {0} already exists")]
    AlreadyExists(String),
    #[error("no space left on the object store device ({0})")]
    NoSpace(String),
    #[error("object store I/O error on {key}: {source}")]
    Io {
        key: String,
        #[source]
        source: std::io::Error,
    },
    /// Network, 5xx, throttling and the like.
    #[error("object store error: {0}")]
    Backend(String),
    #[error("injected fault: {0}")]
    Injected(String),
    #[error("invalid object key {0:?}")]
    BadKey(String),
}

impl StoreError {
    /// Whether retrying the same operation later may succeed.
    pub fn is_transient(&self) -> bool {
        matches!(self, StoreError::Backend(_) | StoreError::Injected(_))
    }

    /// Wraps an I/O error about `key`: full device or exhausted quota become [`StoreError::NoSpace`].
    /// Callers map `NotFound` themselves (it may concern a source file rather than the object).
    pub fn from_io(key: &str, source: std::io::Error) -> Self {
        use std::io::ErrorKind;
        match source.kind() {
            ErrorKind::StorageFull | ErrorKind::QuotaExceeded => {
                StoreError::NoSpace(format!("{key}: {source}"))
            }
            _ => StoreError::Io {
                key: key.to_string(),
                source,
            },
        }
    }
}

/// A store of immutable objects.
///
/// Every method validates its key with [`validate_key`] first (except `list`, whose prefix is
/// only matched against keys).
#[async_trait::async_trait]
pub trait ObjectStore: Send + Sync + 'static {
    /// Creates an object; never overwrites: `Err(AlreadyExists)` if the key exists, and the existing
    /// content is unchanged. Atomic: a reader sees all or nothing; a failed or cancelled put leaves
    /// no partial object (a cancelled put may still complete in full).
    async fn put(&self, key: &str, data: Bytes) -> Result<(), StoreError>;

    /// Creates an object from a local file the caller hands over, with the semantics of
    /// [`put`](Self::put), so large layers are never held in memory. The store may move the file
    /// instead of copying it. On success the file no longer exists at `path`; on error it is left
    /// in place (the caller may retry or remove it).
    async fn put_file(&self, key: &str, path: &Path) -> Result<(), StoreError>;

    /// The whole object.
    async fn get(&self, key: &str) -> Result<Bytes, StoreError>;

    /// Bytes `[start, end)` of the object. A range past the end returns what exists (short read);
    /// `start >= size` or `end <= start` gives an empty result. A missing key is `NotFound`.
    async fn get_range(&self, key: &str, start: u64, end: u64) -> Result<Bytes, StoreError>;

    /// Bytes `[start, start + Σ lens)` of the object, handed to `piece` as consecutive pieces of
    /// `lens[i]` bytes (with their index `i`), in order and as soon as each is in: a reader can
    /// use the first piece of a long range while the rest is still on its way. Where the object
    /// ends first, the pieces past its end (and one cut short) are not handed over and the call
    /// succeeds. On an error, the pieces handed over before it stand. A missing key is `NotFound`.
    /// The default reads the whole range first ([`get_range`](Self::get_range)).
    async fn get_range_pieces(
        &self,
        key: &str,
        start: u64,
        lens: &[u32],
        piece: &mut (dyn FnMut(usize, Bytes) + Send),
    ) -> Result<(), StoreError> {
        let all = self
            .get_range(key, start, start.saturating_add(span(lens)))
            .await?;
        cut_pieces(&all, lens, piece);
        Ok(())
    }

    /// Bytes `[start, start + buf.len())` of the object, read into `buf` (handed back): the bulk
    /// path (export, import's comparison) that reuses one buffer instead of allocating per request.
    /// A range that is not entirely inside the object is an error ([`StoreError::Io`] with
    /// `UnexpectedEof`); a missing key is `NotFound`.
    async fn read_into(
        &self,
        key: &str,
        start: u64,
        mut buf: Vec<u8>,
    ) -> Result<Vec<u8>, StoreError> {
        let end = start + buf.len() as u64;
        let bytes = self.get_range(key, start, end).await?;
        if bytes.len() != buf.len() {
            return Err(short_read(key, start, end, bytes.len()));
        }
        buf.copy_from_slice(&bytes);
        Ok(buf)
    }

    /// Size and modification time of the object.
    async fn head(&self, key: &str) -> Result<ObjectMeta, StoreError>;

    /// Deletes the object; deleting a missing key is `Ok`.
    async fn delete(&self, key: &str) -> Result<(), StoreError>;

    /// All objects whose key starts with `prefix` (plain string prefix), sorted by key.
    async fn list(&self, prefix: &str) -> Result<Vec<ObjectMeta>, StoreError>;

    /// Where the store lives, for messages, e.g. `file:///var/lib/quackfs/objects` (never
    /// credentials).
    fn describe(&self) -> String;

    /// The local-directory store behind this one, if it is one (bulk paths map its objects
    /// instead of copying them). Wrappers such as the fault injector answer `None`, so everything
    /// they wrap goes through the methods above.
    fn as_local(&self) -> Option<&LocalStore> {
        None
    }

    /// The bytes of `[start, end)` of object `key` if they can be had at once, without waiting
    /// on a network (memory, or a file on local disk); None otherwise, and on any error: the
    /// caller does without (the write path uses it to compare rewritten bytes with the stored
    /// ones, and stores what differs).
    fn read_now(&self, _key: &str, _start: u64, _end: u64) -> Option<Bytes> {
        None
    }
}

/// Bytes of consecutive pieces of `lens` bytes.
pub fn span(lens: &[u32]) -> u64 {
    lens.iter().map(|&l| u64::from(l)).sum()
}

/// Hands `all` to `piece` cut into consecutive pieces of `lens` bytes, as far as it holds whole
/// ones (for [`ObjectStore::get_range_pieces`] of a store that reads a range at once).
pub fn cut_pieces(all: &Bytes, lens: &[u32], piece: &mut (dyn FnMut(usize, Bytes) + Send)) {
    let mut at = 0usize;
    for (i, &l) in lens.iter().enumerate() {
        let end = at + l as usize;
        if end > all.len() {
            break;
        }
        piece(i, all.slice(at..end));
        at = end;
    }
}

/// The error for a [`ObjectStore::read_into`] range that runs past the end of the object.
pub fn short_read(key: &str, start: u64, end: u64, got: usize) -> StoreError {
    StoreError::Io {
        key: key.to_string(),
        source: std::io::Error::new(
            std::io::ErrorKind::UnexpectedEof,
            format!("range {start}..{end}: the object has only {got} bytes of it"),
        ),
    }
}

/// A shared, dynamically typed store.
pub type DynStore = Arc<dyn ObjectStore>;

/// Checks that `key` is a valid object key: 1 to [`MAX_KEY_LEN`] characters from `[A-Za-z0-9._/-]`,
/// `/`-separated components that are non-empty and do not start with `.` (so no leading or
/// trailing `/`, no `//`, no `.` or `..` components, no hidden names), and no `..` anywhere.
pub fn validate_key(key: &str) -> Result<(), StoreError> {
    let chars_ok = key
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'/' | b'-'));
    let components_ok = key.split('/').all(|c| !c.is_empty() && !c.starts_with('.'));
    if key.is_empty()
        || key.len() > MAX_KEY_LEN
        || !chars_ok
        || !components_ok
        || key.contains("..")
    {
        return Err(StoreError::BadKey(key.to_string()));
    }
    Ok(())
}

/// The contract every [`ObjectStore`] must meet, as a reusable test (run it against S3 from an
/// integration test). Works under a fresh random prefix and deletes what it created.
pub mod testsuite {
    use super::{DynStore, StoreError};
    use bytes::Bytes;
    use std::path::PathBuf;

    /// Runs every check against `store`; panics on the first violation. Needs a multi-threaded
    /// tokio runtime for the concurrency check to be meaningful (it works on any runtime).
    pub async fn conformance_suite(store: DynStore) {
        let prefix = format!("conformance-{}/", uuid::Uuid::new_v4().simple());
        let k = |s: &str| format!("{prefix}{s}");

        round_trip_and_no_overwrite(&store, &k("a")).await;
        missing(&store, &k("missing")).await;
        ranges(&store, &k("range")).await;
        pieces(&store, &k("pieces")).await;
        empty_object(&store, &k("empty")).await;
        put_file(&store, &k("file"), &k("a")).await;
        listing(&store, &prefix).await;
        deletion(&store, &k("del")).await;
        bad_keys(&store).await;
        concurrent_puts(&store, &k("race")).await;

        for meta in store.list(&prefix).await.expect("list for cleanup") {
            store.delete(&meta.key).await.expect("cleanup delete");
        }
        assert!(store.list(&prefix).await.expect("list").is_empty());
    }

    async fn round_trip_and_no_overwrite(store: &DynStore, key: &str) {
        let data = Bytes::from_static(b"hello, object store");
        store.put(key, data.clone()).await.expect("put");
        assert_eq!(store.get(key).await.expect("get"), data);
        match store.put(key, Bytes::from_static(b"other")).await {
            Err(StoreError::AlreadyExists(k)) => assert_eq!(k, key),
            other => panic!("second put of {key}: expected AlreadyExists, got {other:?}"),
        }
        assert_eq!(store.get(key).await.expect("get"), data, "content changed");
        let meta = store.head(key).await.expect("head");
        assert_eq!((meta.key.as_str(), meta.size), (key, data.len() as u64));
    }

    async fn missing(store: &DynStore, key: &str) {
        assert!(matches!(store.get(key).await, Err(StoreError::NotFound(_))));
        assert!(matches!(
            store.get_range(key, 0, 10).await,
            Err(StoreError::NotFound(_))
        ));
        assert!(matches!(
            store.head(key).await,
            Err(StoreError::NotFound(_))
        ));
    }

    async fn ranges(store: &DynStore, key: &str) {
        let data: Vec<u8> = (0..=255u8).collect();
        store
            .put(key, Bytes::from(data.clone()))
            .await
            .expect("put");
        let cases: [(u64, u64, &[u8]); 8] = [
            (10, 20, &data[10..20]),
            (0, 256, &data[..]),
            (250, 256, &data[250..]),
            (250, 1000, &data[250..]),
            (0, u64::MAX, &data[..]),
            (256, 300, &[]),
            (1000, 2000, &[]),
            (20, 10, &[]),
        ];
        for (start, end, want) in cases {
            let got = store.get_range(key, start, end).await.expect("get_range");
            assert_eq!(&got[..], want, "range {start}..{end}");
        }
        assert_eq!(store.head(key).await.expect("head").size, 256);

        // read_into: exact ranges into a reused buffer; a range past the end is an error.
        let mut buf = vec![0xAAu8; 16];
        buf = store.read_into(key, 100, buf).await.expect("read_into");
        assert_eq!(&buf[..], &data[100..116]);
        buf.resize(6, 0);
        buf = store
            .read_into(key, 250, buf)
            .await
            .expect("read_into tail");
        assert_eq!(&buf[..], &data[250..]);
        buf.resize(7, 0);
        match store.read_into(key, 250, buf).await {
            Err(StoreError::Io { source, .. }) => {
                assert_eq!(source.kind(), std::io::ErrorKind::UnexpectedEof)
            }
            other => panic!("read_into past the end: expected UnexpectedEof, got {other:?}"),
        }
        assert!(matches!(
            store
                .read_into(&format!("{key}-missing"), 0, vec![0; 4])
                .await,
            Err(StoreError::NotFound(_))
        ));
    }

    /// The pieces `get_range_pieces(start, lens)` hands over from an object holding `data`: each
    /// with its index, as far as whole ones fit (a reference for tests, written apart from the
    /// stores' own cutting).
    pub fn expected_pieces<'a>(
        data: &'a [u8],
        start: usize,
        lens: &[u32],
    ) -> Vec<(usize, &'a [u8])> {
        let mut at = start;
        let mut out = Vec::new();
        for (i, &l) in lens.iter().enumerate() {
            let end = at + l as usize;
            if end > data.len() {
                break;
            }
            out.push((i, &data[at..end]));
            at = end;
        }
        out
    }

    /// `get_range_pieces`: consecutive pieces in order, byte for byte, over an object big enough
    /// to come in many network reads; where the object ends first, the whole pieces before it.
    async fn pieces(store: &DynStore, key: &str) {
        let data: Vec<u8> = (0..7_000_000u32)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
            .collect();
        store
            .put(key, Bytes::from(data.clone()))
            .await
            .expect("put");
        let lens = [
            1u32, 70_000, 0, 262_144, 5, 1_048_576, 900_000, 700_000, 4_000_000,
        ];
        for start in [0usize, 12_345, 2_900_000, 6_900_000, 7_000_000, 8_000_000] {
            let mut got = Vec::new();
            store
                .get_range_pieces(key, start as u64, &lens, &mut |i, b| got.push((i, b)))
                .await
                .expect("get_range_pieces");
            let want = expected_pieces(&data, start, &lens);
            let got: Vec<(usize, &[u8])> = got.iter().map(|(i, b)| (*i, &b[..])).collect();
            assert!(
                got == want,
                "pieces from {start}: {} of {}",
                got.len(),
                want.len()
            );
        }
        // Empty pieces where the object ends are whole pieces too.
        let mut got = Vec::new();
        store
            .get_range_pieces(key, 6_999_999, &[1, 0, 1], &mut |i, b| got.push((i, b)))
            .await
            .expect("pieces at the end");
        assert_eq!(
            got,
            vec![(0, Bytes::from(vec![data[6_999_999]])), (1, Bytes::new())]
        );
        let mut none = 0;
        assert!(matches!(
            store
                .get_range_pieces(&format!("{key}-missing"), 0, &[4], &mut |_, _| none += 1)
                .await,
            Err(StoreError::NotFound(_))
        ));
        assert_eq!(none, 0);
    }

    async fn empty_object(store: &DynStore, key: &str) {
        store.put(key, Bytes::new()).await.expect("put empty");
        assert!(store.get(key).await.expect("get").is_empty());
        assert!(store.get_range(key, 0, 10).await.expect("range").is_empty());
        assert_eq!(store.head(key).await.expect("head").size, 0);
        assert!(matches!(
            store.put(key, Bytes::new()).await,
            Err(StoreError::AlreadyExists(_))
        ));
    }

    fn scratch_file(data: &[u8]) -> PathBuf {
        let path = std::env::temp_dir().join(format!(
            "quackfs-conformance-{}",
            uuid::Uuid::new_v4().simple()
        ));
        std::fs::write(&path, data).expect("write scratch file");
        path
    }

    /// `existing` is a key that already holds an object.
    async fn put_file(store: &DynStore, key: &str, existing: &str) {
        let data: Vec<u8> = (0..3 * 1024 * 1024 / 2).map(|i| (i % 251) as u8).collect();
        let path = scratch_file(&data);
        store.put_file(key, &path).await.expect("put_file");
        assert!(!path.exists(), "put_file left the source file behind");
        assert_eq!(store.get(key).await.expect("get"), data);
        assert_eq!(
            &store.get_range(key, 1000, 1010).await.expect("range")[..],
            &data[1000..1010]
        );

        let before = store.get(existing).await.expect("get");
        let path = scratch_file(b"must not replace");
        match store.put_file(existing, &path).await {
            Err(StoreError::AlreadyExists(_)) => {}
            other => panic!("put_file over {existing}: expected AlreadyExists, got {other:?}"),
        }
        assert!(
            path.exists(),
            "a failed put_file must leave the file in place"
        );
        assert_eq!(store.get(existing).await.expect("get"), before);
        std::fs::remove_file(&path).expect("remove scratch file");
    }

    async fn listing(store: &DynStore, prefix: &str) {
        let p = format!("{prefix}list");
        for (name, len) in [("/b", 2usize), ("/a", 1), ("/c/d", 3), ("x", 4)] {
            store
                .put(&format!("{p}{name}"), Bytes::from(vec![7u8; len]))
                .await
                .expect("put");
        }
        let listed = store.list(&format!("{p}/")).await.expect("list");
        let got: Vec<(String, u64)> = listed.into_iter().map(|m| (m.key, m.size)).collect();
        let want: Vec<(String, u64)> = [("/a", 1), ("/b", 2), ("/c/d", 3)]
            .into_iter()
            .map(|(n, s)| (format!("{p}{n}"), s))
            .collect();
        assert_eq!(got, want);
        let all: Vec<String> = store
            .list(&p)
            .await
            .expect("list")
            .into_iter()
            .map(|m| m.key)
            .collect();
        assert_eq!(all.len(), 4);
        assert_eq!(all.last(), Some(&format!("{p}x")));
        assert!(store
            .list(&format!("{prefix}nothing/"))
            .await
            .expect("list")
            .is_empty());
        let everything = store.list(prefix).await.expect("list");
        assert!(
            everything.windows(2).all(|w| w[0].key < w[1].key),
            "unsorted"
        );
        assert!(everything.iter().all(|m| m.key.starts_with(prefix)));
    }

    async fn deletion(store: &DynStore, key: &str) {
        store
            .put(key, Bytes::from_static(b"doomed"))
            .await
            .expect("put");
        store.delete(key).await.expect("delete");
        assert!(matches!(store.get(key).await, Err(StoreError::NotFound(_))));
        assert!(matches!(
            store.head(key).await,
            Err(StoreError::NotFound(_))
        ));
        assert!(store.list(key).await.expect("list").is_empty());
        store.delete(key).await.expect("delete of a missing key");
        // The key can be used again after deletion.
        store
            .put(key, Bytes::from_static(b"again"))
            .await
            .expect("put");
        store.delete(key).await.expect("delete");
    }

    async fn bad_keys(store: &DynStore) {
        let bad = [
            "",
            "/abs",
            "a/../b",
            "..",
            "a//b",
            "trailing/",
            "sp ace",
            "ünï",
            "back\\slash",
            ".tmp/x",
            "a/./b",
            "a/.hidden",
            "x?y",
        ];
        let long = "k".repeat(super::MAX_KEY_LEN + 1);
        for key in bad.iter().copied().chain([long.as_str()]) {
            let is_bad = |r: Result<(), StoreError>| matches!(r, Err(StoreError::BadKey(_)));
            assert!(is_bad(store.put(key, Bytes::new()).await), "put {key:?}");
            assert!(is_bad(store.get(key).await.map(drop)), "get {key:?}");
            assert!(is_bad(store.get_range(key, 0, 1).await.map(drop)));
            assert!(is_bad(store.head(key).await.map(drop)), "head {key:?}");
            assert!(is_bad(store.delete(key).await), "delete {key:?}");
            let path = scratch_file(b"x");
            assert!(is_bad(store.put_file(key, &path).await), "put_file {key:?}");
            assert!(path.exists());
            std::fs::remove_file(&path).expect("remove scratch file");
        }
    }

    async fn concurrent_puts(store: &DynStore, key: &str) {
        let tasks: Vec<_> = (0..8u8)
            .map(|i| {
                let store = store.clone();
                let key = key.to_string();
                tokio::spawn(async move {
                    let data = Bytes::from(vec![i; 64 * 1024 + usize::from(i)]);
                    (data.clone(), store.put(&key, data).await)
                })
            })
            .collect();
        let mut winners = Vec::new();
        for task in tasks {
            match task.await.expect("put task") {
                (data, Ok(())) => winners.push(data),
                (_, Err(StoreError::AlreadyExists(_))) => {}
                (_, Err(e)) => panic!("concurrent put: {e}"),
            }
        }
        assert_eq!(winners.len(), 1, "exactly one concurrent put must win");
        assert_eq!(store.get(key).await.expect("get"), winners[0]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys() {
        for good in ["layers/ab12", "a", "a.b", "x/y/z-1_2.v", "A9"] {
            validate_key(good).unwrap();
        }
        for bad in [
            "", "/a", "a/", "a//b", "..", "a..b", "./a", ".tmp/x", "a b", "é",
        ] {
            assert!(
                matches!(validate_key(bad), Err(StoreError::BadKey(_))),
                "{bad:?}"
            );
        }
        validate_key(&"k".repeat(MAX_KEY_LEN)).unwrap();
        assert!(validate_key(&"k".repeat(MAX_KEY_LEN + 1)).is_err());
    }

    #[test]
    fn error_classes() {
        assert!(StoreError::Backend("503".into()).is_transient());
        assert!(StoreError::Injected("x".into()).is_transient());
        assert!(!StoreError::NotFound("x".into()).is_transient());
        let enospc = std::io::Error::from_raw_os_error(libc::ENOSPC);
        assert!(matches!(
            StoreError::from_io("k", enospc),
            StoreError::NoSpace(_)
        ));
        let edquot = std::io::Error::from_raw_os_error(libc::EDQUOT);
        assert!(matches!(
            StoreError::from_io("k", edquot),
            StoreError::NoSpace(_)
        ));
        let eio = std::io::Error::from_raw_os_error(libc::EIO);
        assert!(matches!(
            StoreError::from_io("k", eio),
            StoreError::Io { .. }
        ));
    }
}

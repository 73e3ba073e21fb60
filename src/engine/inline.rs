//! Small layers kept in the catalog: a sync whose layer object is small (DuckDB's WAL appends of
//! single transactions, the blocks a small checkpoint rewrites) registers the object's bytes in the catalog in the same transaction as the
//! sync itself (`catalog::SyncLayer::inline`), so a DuckDB commit costs one catalog transaction and
//! no object-store round trip, as DuckLake inlines small writes into its catalog. Such a layer's
//! object key is `inline/ID`.
//!
//! [`InlineStore`] is the object store every reader goes through: a key `inline/ID` is read from
//! the catalog (and kept in a bounded memory cache: objects are immutable), or, once it was moved
//! into the store, from `layers/ID`; every other key goes to the store. So reads, export, verify,
//! merge and other hosts all see the same bytes wherever they are. [`spill`] moves inline objects
//! into the store in the background (the writing mount, and gc for those a dead mount left), in
//! batches: stored as `layers/ID` first, then the layer rows name them and the catalog's copies
//! go, one transaction per batch; a reader that looked in the catalog just before still finds
//! the stored object.

use crate::catalog::{DynCatalog, INLINE_PREFIX};
use crate::store::{DynStore, LocalStore, ObjectMeta, ObjectStore, StoreError};
use bytes::Bytes;
use futures::StreamExt;
use std::path::Path;
use std::sync::Mutex;

/// With a remote object store (S3), a sync's layer object at most this large is kept in the
/// catalog: a DuckDB commit's WAL append, and the few blocks a small transaction's checkpoint
/// rewrites, cost one catalog transaction instead of an object-store round trip. Larger ones
/// (bulk loads, background flushes) go to the store directly.
pub const INLINE_MAX_REMOTE: usize = 4 << 20;
/// With the local-directory store, syncs up to a few DuckDB blocks (WAL appends, the blocks a
/// small transaction's checkpoint rewrites) are kept in the catalog: one SQLite transaction (one
/// fsync) instead of a file, its fsync, a link and the directory's fsync, then the transaction.
/// (bench/commit_latency.sh, 2 runs of 5 rounds: transactions 1.31x local at 1 MiB against
/// 1.39-1.61x at 64 KiB.)
pub const INLINE_MAX_LOCAL: usize = 1 << 20;

/// The inline limit in effect for a store (local or not); `QUACKFS_INLINE_MAX` (a size; 0 keeps
/// nothing in the catalog) overrides both defaults.
pub fn inline_max(local_store: bool) -> usize {
    static MAX: std::sync::OnceLock<Option<usize>> = std::sync::OnceLock::new();
    let set = *MAX.get_or_init(|| {
        crate::tuning::size("QUACKFS_INLINE_MAX").map(|b| usize::try_from(b).unwrap_or(usize::MAX))
    });
    set.unwrap_or(if local_store {
        INLINE_MAX_LOCAL
    } else {
        INLINE_MAX_REMOTE
    })
}
/// Layers a spill stores before it names them in one catalog transaction, and the uploads it
/// runs at a time.
const SPILL_BATCH: usize = 64;
const SPILL_UPLOADS: usize = 8;
/// Inline objects kept in memory by each process (they are small and immutable).
const CACHE_BYTES: u64 = 32 << 20;

/// How old a layer kept in the catalog gets before it is moved into the store: `default_ms`, or
/// `QUACKFS_INLINE_SPILL_AFTER` (e.g. `10s`, `1h`) when set (tests and tuning).
pub fn spill_after_ms(default_ms: i64) -> i64 {
    crate::tuning::duration("QUACKFS_INLINE_SPILL_AFTER")
        .ok()
        .flatten()
        .map_or(default_ms, |d| d.as_millis().min(i64::MAX as u128) as i64)
}

/// The key of a layer kept in the catalog.
pub fn inline_key(id: &str) -> String {
    format!("{INLINE_PREFIX}{id}")
}

/// Ends the catalog's copy of an inline object that is kept compressed (see [`pack`]). Every
/// layer object ends with its trailer's magic instead, so the two never mix up.
const PACKED_MAGIC: &[u8; 8] = b"QFSINLZ1";
/// After the compressed bytes: the object's length (u32), its crc32c (u32), the magic.
const PACKED_TAIL: usize = 4 + 4 + PACKED_MAGIC.len();

/// The catalog's copy of the inline object `raw` (a layer object) if it is to be kept
/// compressed: LZ4, with the object's length and checksum and [`PACKED_MAGIC`] after it, when
/// that saves at least an eighth of it; else None (`raw` itself is kept). The blocks of a small
/// transaction's checkpoint are mostly empty (bench/commit_latency.sh's compress to about 4%;
/// TPC-H's, full, to 73% with zlib), and every byte kept in the catalog is written to its WAL
/// (SQLite writes a page per system call) and read back by the spill. The layer row's size
/// stays the object's own.
pub fn pack(raw: &[u8]) -> Option<Vec<u8>> {
    let len = u32::try_from(raw.len()).ok()?;
    let mut packed = lz4_flex::block::compress(raw);
    if packed.len() + PACKED_TAIL > raw.len() - raw.len() / 8 {
        return None;
    }
    packed.extend_from_slice(&len.to_le_bytes());
    packed.extend_from_slice(&crc32c::crc32c(raw).to_le_bytes());
    packed.extend_from_slice(PACKED_MAGIC);
    Some(packed)
}

/// The inline object `id` from the catalog's copy of it, `stored` (see [`pack`]): decompressed
/// and checked if it was kept compressed, else as it is.
pub fn unpack(id: &str, stored: Vec<u8>) -> Result<Bytes, StoreError> {
    let Some(body) = stored
        .len()
        .checked_sub(PACKED_TAIL)
        .filter(|_| stored.ends_with(PACKED_MAGIC))
    else {
        return Ok(Bytes::from(stored));
    };
    let damaged = |what: String| StoreError::Io {
        key: inline_key(id),
        source: std::io::Error::new(std::io::ErrorKind::InvalidData, what),
    };
    let word = |at: usize| {
        let mut w = [0u8; 4];
        w.copy_from_slice(&stored[at..at + 4]);
        u32::from_le_bytes(w)
    };
    let (len, crc) = (word(body) as usize, word(body + 4));
    let raw = lz4_flex::block::decompress(&stored[..body], len).map_err(|e| {
        damaged(format!(
            "the catalog's compressed copy does not decompress: {e}"
        ))
    })?;
    if raw.len() != len || crc32c::crc32c(&raw) != crc {
        return Err(damaged(
            "the catalog's compressed copy does not match its checksum".to_string(),
        ));
    }
    Ok(Bytes::from(raw))
}

/// The object store as readers see it: `inline/ID` from the catalog (or `layers/ID` once
/// moved), everything else from `inner`.
pub struct InlineStore {
    catalog: DynCatalog,
    inner: DynStore,
    cache: Mutex<Cache>,
}

struct Cache {
    used: u64,
    map: lru::LruCache<String, Bytes>,
}

impl InlineStore {
    pub fn new(catalog: DynCatalog, inner: DynStore) -> InlineStore {
        InlineStore {
            catalog,
            inner,
            cache: Mutex::new(Cache {
                used: 0,
                map: lru::LruCache::unbounded(),
            }),
        }
    }

    /// The store behind (where `layers/…` objects live).
    pub fn inner(&self) -> &DynStore {
        &self.inner
    }

    /// Remembers an inline object this process just wrote, before its registration (its reads
    /// then need no catalog query).
    pub fn prime(&self, id: &str, bytes: Bytes) {
        let mut c = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        c.used += bytes.len() as u64;
        if let Some(old) = c.map.put(id.to_string(), bytes) {
            c.used -= old.len() as u64;
        }
        while c.used > CACHE_BYTES {
            match c.map.pop_lru() {
                Some((_, b)) => c.used -= b.len() as u64,
                None => break,
            }
        }
    }

    /// The bytes of inline object `id`: memory, the catalog, or (moved) the store.
    async fn object(&self, id: &str) -> Result<Bytes, StoreError> {
        if let Some(b) = self
            .cache
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .map
            .get(id)
            .cloned()
        {
            return Ok(b);
        }
        match self.catalog.inline_object(id).await {
            Ok(Some(stored)) => {
                let b = unpack(id, stored)?;
                self.prime(id, b.clone());
                Ok(b)
            }
            Ok(None) => self.inner.get(&super::layer_key(id)).await,
            Err(e) => Err(StoreError::Backend(format!(
                "reading inline object {id} from the catalog: {e}"
            ))),
        }
    }
}

fn inline_id(key: &str) -> Option<&str> {
    key.strip_prefix(INLINE_PREFIX)
}

fn slice(b: &Bytes, start: u64, end: u64) -> Bytes {
    let len = b.len() as u64;
    let (s, e) = (start.min(len), end.min(len));
    if s >= e {
        return Bytes::new();
    }
    b.slice(s as usize..e as usize)
}

#[async_trait::async_trait]
impl ObjectStore for InlineStore {
    async fn put(&self, key: &str, data: Bytes) -> Result<(), StoreError> {
        self.inner.put(key, data).await
    }

    async fn put_file(&self, key: &str, path: &Path) -> Result<(), StoreError> {
        self.inner.put_file(key, path).await
    }

    async fn get(&self, key: &str) -> Result<Bytes, StoreError> {
        match inline_id(key) {
            Some(id) => self.object(id).await,
            None => self.inner.get(key).await,
        }
    }

    async fn get_range(&self, key: &str, start: u64, end: u64) -> Result<Bytes, StoreError> {
        match inline_id(key) {
            Some(id) => Ok(slice(&self.object(id).await?, start, end)),
            None => self.inner.get_range(key, start, end).await,
        }
    }

    async fn get_range_pieces(
        &self,
        key: &str,
        start: u64,
        lens: &[u32],
        piece: &mut (dyn FnMut(usize, Bytes) + Send),
    ) -> Result<(), StoreError> {
        match inline_id(key) {
            Some(id) => {
                let end = start.saturating_add(crate::store::span(lens));
                let all = slice(&self.object(id).await?, start, end);
                crate::store::cut_pieces(&all, lens, piece);
                Ok(())
            }
            None => self.inner.get_range_pieces(key, start, lens, piece).await,
        }
    }

    async fn read_into(
        &self,
        key: &str,
        start: u64,
        mut buf: Vec<u8>,
    ) -> Result<Vec<u8>, StoreError> {
        match inline_id(key) {
            Some(id) => {
                let end = start + buf.len() as u64;
                let b = slice(&self.object(id).await?, start, end);
                if b.len() != buf.len() {
                    return Err(crate::store::short_read(key, start, end, b.len()));
                }
                buf.copy_from_slice(&b);
                Ok(buf)
            }
            None => self.inner.read_into(key, start, buf).await,
        }
    }

    async fn head(&self, key: &str) -> Result<ObjectMeta, StoreError> {
        match inline_id(key) {
            Some(id) => Ok(ObjectMeta {
                key: key.to_string(),
                size: self.object(id).await?.len() as u64,
                modified: chrono::Utc::now(),
            }),
            None => self.inner.head(key).await,
        }
    }

    async fn delete(&self, key: &str) -> Result<(), StoreError> {
        match inline_id(key) {
            // The catalog row goes with its layer row (gc); a moved copy is an orphan then.
            Some(id) => self.inner.delete(&super::layer_key(id)).await,
            None => self.inner.delete(key).await,
        }
    }

    async fn list(&self, prefix: &str) -> Result<Vec<ObjectMeta>, StoreError> {
        self.inner.list(prefix).await
    }

    fn describe(&self) -> String {
        self.inner.describe()
    }

    fn as_local(&self) -> Option<&LocalStore> {
        self.inner.as_local()
    }

    /// An inline object from the memory cache (a catalog query would wait), else the store's
    /// own answer.
    fn read_now(&self, key: &str, start: u64, end: u64) -> Option<Bytes> {
        match inline_id(key) {
            Some(id) => {
                let cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
                let b = cache.map.peek(id)?;
                let (start, end) = (usize::try_from(start).ok()?, usize::try_from(end).ok()?);
                (start <= end && end <= b.len()).then(|| b.slice(start..end))
            }
            None => self.inner.read_now(key, start, end),
        }
    }
}

/// Moves inline objects created before `before` into the store (at most `limit`); returns how
/// many moved. Safe beside readers (see the module docs) and beside another process doing the
/// same (a second copy of an object is refused by the store as existing, and ignored).
///
/// Into a local-directory store nothing moves: the catalog is a file on the same disk, as
/// durable and as fast to read, and a file per layer would cost a write, two fsyncs and a link
/// each, beside the mount's own work (bench/commit_latency.sh, transactions on the embedded
/// default: 1.37-1.43x local without, 1.50-1.83x with). Merge and gc replace and remove them.
pub async fn spill(
    catalog: &DynCatalog,
    store: &DynStore,
    before: crate::catalog::Millis,
    limit: i64,
) -> crate::error::Result<usize> {
    if store.as_local().is_some() {
        return Ok(0);
    }
    let objects = catalog.inline_objects(before, limit).await?;
    let mut moved = 0;
    let mut objects = objects.into_iter().peekable();
    while objects.peek().is_some() {
        // A batch is stored (a few uploads at a time), then named by its layers in one catalog
        // transaction: one WAL flush of the catalog per batch rather than per layer.
        let batch: Vec<(String, i64, Vec<u8>)> = objects.by_ref().take(SPILL_BATCH).collect();
        let results: Vec<(String, std::result::Result<(), StoreError>)> =
            futures::stream::iter(batch.into_iter().map(|(id, _repo, stored)| async move {
                let put = async {
                    store
                        .put(&super::layer_key(&id), unpack(&id, stored)?)
                        .await
                };
                let r = match put.await {
                    Ok(()) | Err(StoreError::AlreadyExists(_)) => Ok(()),
                    Err(e) => Err(e),
                };
                (id, r)
            }))
            .buffer_unordered(SPILL_UPLOADS)
            .collect()
            .await;
        let mut stored = Vec::with_capacity(results.len());
        let mut failed = None;
        for (id, r) in results {
            match r {
                Ok(()) => stored.push(id),
                Err(e) => failed = failed.or(Some(e)),
            }
        }
        // What was stored is named by its layers even if another upload failed.
        if !stored.is_empty() {
            catalog.spilled(&stored).await?;
            moved += stored.len();
        }
        if let Some(e) = failed {
            return Err(e.into());
        }
    }
    Ok(moved)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::{self, CommitKind, LayerRow, NewCommit, SyncLayer, SyncRequest};
    use crate::layer::LayerKind;
    use crate::store::faulty::FaultyStore;
    use crate::store::memory::MemoryStore;
    use std::sync::Arc;

    /// A catalog with a database `spill` whose `main` holds `n` pending inline layers
    /// `spill0000`… (bodies by [`body`]), and the lease generation that registered them.
    async fn inline_layers(dir: &Path, n: usize) -> (DynCatalog, i64, i64) {
        let url = format!("sqlite://{}", dir.join("c.sqlite").display());
        let cat = catalog::open(&url).await.unwrap();
        let root = NewCommit {
            id: "root0000000000000000000000000000".into(),
            kind: CommitKind::Manual,
            message: "root".into(),
            author: "t".into(),
            time: 1,
            merge_parent: None,
        };
        let (repo, _) = cat.create_repo("spill", root).await.unwrap();
        let lease = cat
            .acquire_lease(repo.id, "main", "test", 60_000)
            .await
            .unwrap();
        let layers = (0..n).map(|i| inline_layer(repo.id, i)).collect();
        cat.register_sync(sync_request(repo.id, lease.generation, layers))
            .await
            .unwrap();
        (cat, repo.id, lease.generation)
    }

    fn body(i: usize) -> Vec<u8> {
        vec![i as u8; 100 + i]
    }

    fn inline_layer(repo_id: i64, i: usize) -> SyncLayer {
        let id = format!("spill{i:04}");
        SyncLayer {
            row: LayerRow {
                object_key: inline_key(&id),
                id,
                repo_id,
                commit_id: None,
                seq: 0,
                kind: LayerKind::Delta,
                size_bytes: 100,
                min_time: 1,
                max_time: 1,
                created_at: 1,
            },
            inline: Some(body(i)),
        }
    }

    fn sync_request(repo_id: i64, generation: i64, layers: Vec<SyncLayer>) -> SyncRequest {
        SyncRequest {
            repo_id,
            branch: "main".into(),
            generation,
            layers,
            files: vec![],
            now: 1,
            session_id: None,
        }
    }

    async fn left(cat: &DynCatalog) -> usize {
        cat.inline_objects(i64::MAX, 10_000).await.unwrap().len()
    }

    /// A spill stores layers in batches and names each batch in one catalog transaction; when an
    /// upload fails, what was stored is still named (its catalog copy goes), the rest stays in
    /// the catalog, and the next spill moves it. Every byte reads back the same from the store.
    #[tokio::test]
    async fn spill_moves_batches_and_keeps_what_a_failed_upload_left() {
        let dir = tempfile::tempdir().unwrap();
        let n = SPILL_BATCH + 36;
        let (cat, repo_id, _) = inline_layers(dir.path(), n).await;
        let faulty = Arc::new(FaultyStore::new(Arc::new(MemoryStore::new())));
        let store: DynStore = faulty.clone();

        faulty.fail_puts_after((SPILL_BATCH + 6) as u64);
        assert!(spill(&cat, &store, i64::MAX, 10_000).await.is_err());
        assert_eq!(left(&cat).await, n - SPILL_BATCH - 6);
        faulty.clear_faults();
        assert_eq!(
            spill(&cat, &store, i64::MAX, 10_000).await.unwrap(),
            n - SPILL_BATCH - 6
        );
        assert_eq!(left(&cat).await, 0);
        let pending = cat.pending(repo_id, "main").await.unwrap().unwrap();
        assert_eq!(pending.layers.len(), n);
        for (i, l) in pending.layers.iter().enumerate() {
            assert_eq!(l.object_key, format!("layers/{}", l.id));
            assert_eq!(cat.inline_object(&l.id).await.unwrap(), None);
            assert_eq!(store.get(&l.object_key).await.unwrap().to_vec(), body(i));
        }
    }

    /// A layer object of `blocks` DuckDB-sized blocks: the first `used` bytes of each block
    /// are pseudo-random (incompressible), the rest zeros (a block a small transaction began).
    fn layer_object(blocks: u64, used: usize) -> Vec<u8> {
        let mut w = crate::layer::LayerWriter::new(Vec::new(), LayerKind::Delta);
        w.begin_file(1, None, blocks << 18).unwrap();
        let mut x: u64 = 0x2545_f491_4f6c_dd1d;
        for b in 0..blocks {
            let mut block = vec![0u8; 1 << 18];
            for byte in &mut block[..used] {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                *byte = x as u8;
            }
            w.add_extent(b << 18, &block).unwrap();
        }
        w.finish().unwrap().0
    }

    /// An inline object is kept compressed in the catalog when that pays, and every reader gets
    /// the object itself: from the catalog, and from the store once the spill moved it. An
    /// object that does not compress is kept as it is; a damaged compressed copy is an error,
    /// never wrong bytes.
    #[tokio::test]
    async fn packed_objects_read_back_and_spill_as_themselves() {
        let sparse = layer_object(2, 3000);
        let packed = pack(&sparse).expect("mostly empty blocks compress");
        assert!(packed.len() * 10 < sparse.len(), "{} bytes", packed.len());
        assert_eq!(unpack("x", packed.clone()).unwrap(), sparse);
        // A layer object is never taken for a compressed copy (it ends with its own magic).
        assert_eq!(unpack("x", sparse.clone()).unwrap(), sparse);
        let full = layer_object(1, 1 << 18);
        assert!(pack(&full).is_none(), "incompressible: kept as it is");
        for at in [packed.len() / 2, packed.len() - PACKED_TAIL] {
            let mut bad = packed.clone();
            bad[at] ^= 0x10;
            assert!(unpack("x", bad).is_err(), "damage at {at} went unnoticed");
        }

        let dir = tempfile::tempdir().unwrap();
        let (cat, repo_id, generation) = inline_layers(dir.path(), 0).await;
        let mut layer = inline_layer(repo_id, 7);
        layer.inline = Some(packed);
        let id = layer.row.id.clone();
        cat.register_sync(sync_request(repo_id, generation, vec![layer]))
            .await
            .unwrap();
        let store: DynStore = Arc::new(MemoryStore::new());
        let reader = InlineStore::new(cat.clone(), store.clone());
        assert_eq!(reader.get(&inline_key(&id)).await.unwrap(), sparse);
        assert_eq!(spill(&cat, &store, i64::MAX, 10_000).await.unwrap(), 1);
        assert_eq!(
            store.get(&crate::engine::layer_key(&id)).await.unwrap(),
            sparse
        );
        let fresh = InlineStore::new(cat.clone(), store.clone());
        assert_eq!(fresh.get(&inline_key(&id)).await.unwrap(), sparse);
    }

    /// Layers a compaction superseded are not moved: their bytes stay in the catalog (readers
    /// that resolved them before still read them there) until gc deletes the rows, and the
    /// store receives only the live layers, the compacted one among them.
    #[tokio::test]
    async fn spill_leaves_superseded_layers_in_the_catalog() {
        let dir = tempfile::tempdir().unwrap();
        let (cat, repo_id, generation) = inline_layers(dir.path(), 10).await;
        let old: Vec<String> = (0..8).map(|i| format!("spill{i:04}")).collect();
        let merged = inline_layer(repo_id, 99);
        cat.replace_pending(sync_request(repo_id, generation, vec![merged]), &old)
            .await
            .unwrap();
        let inner = Arc::new(MemoryStore::new());
        let store: DynStore = inner.clone();
        assert_eq!(spill(&cat, &store, i64::MAX, 10_000).await.unwrap(), 3);
        assert_eq!(left(&cat).await, 0);
        let mut stored: Vec<String> = store
            .list("layers/")
            .await
            .unwrap()
            .into_iter()
            .map(|o| o.key)
            .collect();
        stored.sort();
        assert_eq!(
            stored,
            ["layers/spill0008", "layers/spill0009", "layers/spill0099"]
        );
        // The superseded ones still read back exactly, from the catalog.
        let reader = InlineStore::new(cat.clone(), store.clone());
        for (i, id) in old.iter().enumerate() {
            assert_eq!(cat.inline_object(id).await.unwrap(), Some(body(i)));
            assert_eq!(reader.get(&inline_key(id)).await.unwrap().to_vec(), body(i));
        }
    }

    /// Into a local-directory store nothing moves: the layers stay in the catalog and read back.
    #[tokio::test]
    async fn nothing_moves_into_a_local_store() {
        let dir = tempfile::tempdir().unwrap();
        let (cat, _, _) = inline_layers(dir.path(), 3).await;
        let store: DynStore = Arc::new(LocalStore::open(dir.path().join("objects")).unwrap());
        assert_eq!(spill(&cat, &store, i64::MAX, 10_000).await.unwrap(), 0);
        assert_eq!(left(&cat).await, 3);
        assert!(store.list("layers/").await.unwrap().is_empty());
        let reader = InlineStore::new(cat.clone(), store);
        assert_eq!(
            reader.get(&inline_key("spill0002")).await.unwrap().to_vec(),
            body(2)
        );
    }
}

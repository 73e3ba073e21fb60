//! Access to layer objects: footer indexes (cached forever: objects are immutable) and extent
//! bytes (checksummed on every fetch from the store, then kept in a bounded in-memory cache).

use super::disk_cache::{self, DiskCache};
use crate::error::{Error, Result};
use crate::layer::{self, LayerIndex, TRAILER_LEN};
use crate::store::DynStore;
use bytes::Bytes;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

/// How much of an object's tail is fetched first, hoping the whole footer is in it.
const TAIL_GUESS: u64 = 64 * 1024;
/// On a miss, following extents stored contiguously in the same object are fetched in the same
/// request, up to this many bytes (readahead and request coalescing for sequential reads); a
/// remote store pays a round trip per request, so it gets a wider window (QUACKFS_FETCH_WINDOW
/// overrides both).
const FETCH_WINDOW: u64 = 1024 * 1024;
const REMOTE_FETCH_WINDOW: u64 = 8 * 1024 * 1024;

fn fetch_window(local: bool) -> u64 {
    std::env::var("QUACKFS_FETCH_WINDOW")
        .ok()
        .and_then(|v| v.trim().parse::<bytesize::ByteSize>().ok())
        .map(|b| b.as_u64().max(1))
        .unwrap_or(if local {
            FETCH_WINDOW
        } else {
            REMOTE_FETCH_WINDOW
        })
}

/// Extents of one object by their offset in it: (length, crc).
type ExtentOffsets = BTreeMap<u64, (u32, u32)>;

/// Reads layer objects through caches.
pub struct LayerCache {
    store: DynStore,
    /// Extents and footers read from a remote store, kept on local disk (see `disk_cache`).
    disk: Option<Arc<DiskCache>>,
    /// Footer indexes of the most recently used objects (a view keeps its own references).
    indexes: Mutex<lru::LruCache<String, Arc<LayerIndex>>>,
    /// Per object: extents by their offset in the object -> (length, crc), for coalescing.
    by_offset: Mutex<lru::LruCache<String, Arc<ExtentOffsets>>>,
    extents: Mutex<Lru>,
    /// Bytes one miss fetches at most ([`fetch_window`]).
    window: u64,
}

/// Footer indexes (and extent offset tables) kept in memory: objects beyond it are read again
/// from their footer when needed (one ranged read), so memory does not grow with history.
const INDEX_ENTRIES: usize = 4096;

impl LayerCache {
    /// A cache over `store` keeping at most `extent_bytes` of extent data in memory.
    pub fn new(store: DynStore, extent_bytes: u64) -> Self {
        Self::with_disk(store, extent_bytes, None)
    }

    /// The same, with an on-disk cache under the memory one.
    pub fn with_disk(store: DynStore, extent_bytes: u64, disk: Option<Arc<DiskCache>>) -> Self {
        LayerCache {
            disk,
            indexes: Mutex::new(lru::LruCache::new(index_entries())),
            by_offset: Mutex::new(lru::LruCache::new(index_entries())),
            extents: Mutex::new(Lru::new(extent_bytes)),
            window: fetch_window(store.as_local().is_some()),
            store,
        }
    }

    pub fn store(&self) -> &DynStore {
        &self.store
    }

    /// The footer index of the object `key` of `size` bytes.
    pub async fn index(&self, key: &str, size: u64) -> Result<Arc<LayerIndex>> {
        if let Some(ix) = lock(&self.indexes).get(key) {
            return Ok(ix.clone());
        }
        let corrupt = |e: layer::LayerError| Error::Corrupt(format!("layer object {key}: {e}"));
        if size < TRAILER_LEN as u64 {
            return Err(Error::Corrupt(format!(
                "layer object {key}: {size} bytes is too short to be a layer"
            )));
        }
        // The footer and trailer, from the disk cache or the store. The trailer's checksum of the
        // footer is checked by `parse_footer` either way.
        let cached = self
            .disk
            .as_ref()
            .and_then(|d| d.get(key, disk_cache::FOOTER, None))
            .filter(|t| t.len() >= TRAILER_LEN && t.len() as u64 <= size);
        let (footer, trailer) = match cached.and_then(|t| {
            let trailer = layer::parse_trailer(&t).ok()?;
            let footer = t.slice(..t.len() - TRAILER_LEN);
            (trailer.footer_len as usize == footer.len()
                && trailer.footer_off + footer.len() as u64 + TRAILER_LEN as u64 == size)
                .then_some((footer, trailer))
        }) {
            Some(hit) => hit,
            None => {
                let (footer, trailer) = self.fetch_footer(key, size).await?;
                if let Some(d) = &self.disk {
                    let mut entry = footer.to_vec();
                    entry.extend_from_slice(&trailer.encode());
                    d.put(key, disk_cache::FOOTER, &entry, crc32c::crc32c(&entry));
                }
                (footer, trailer)
            }
        };
        let index = Arc::new(layer::parse_footer(&footer, &trailer).map_err(corrupt)?);
        let offsets: ExtentOffsets = index
            .files
            .iter()
            .flat_map(|f| f.extents.iter().map(|e| (e.data_off, (e.len, e.crc))))
            .collect();
        lock(&self.by_offset).put(key.to_string(), Arc::new(offsets));
        lock(&self.indexes).put(key.to_string(), index.clone());
        Ok(index)
    }

    /// Keeps the bytes of an extent this process just wrote (their checksum is `crc`), so reading
    /// them back needs no store round trip: in memory and, with a disk cache, on disk.
    pub fn prime(&self, key: &str, data_off: u64, bytes: Bytes, crc: u32) {
        if let Some(d) = &self.disk {
            d.put(key, data_off, &bytes, crc);
        }
        lock(&self.extents).put((key.to_string(), data_off), bytes);
    }

    /// The footer (and trailer) of an object, from the store: one ranged read of its tail, two
    /// if the footer is larger than the guess.
    async fn fetch_footer(&self, key: &str, size: u64) -> Result<(Bytes, layer::Trailer)> {
        let corrupt = |e: layer::LayerError| Error::Corrupt(format!("layer object {key}: {e}"));
        let tail_start = size.saturating_sub(TAIL_GUESS);
        let tail = self.store.get_range(key, tail_start, size).await?;
        if (tail.len() as u64) != size - tail_start {
            return Err(Error::Corrupt(format!(
                "layer object {key}: expected {size} bytes, the store has fewer"
            )));
        }
        let trailer = layer::parse_trailer(&tail).map_err(corrupt)?;
        let footer_end = trailer.footer_off + trailer.footer_len as u64;
        if footer_end + TRAILER_LEN as u64 != size {
            return Err(Error::Corrupt(format!(
                "layer object {key}: footer does not end at the trailer"
            )));
        }
        let footer = if trailer.footer_off >= tail_start {
            let from = (trailer.footer_off - tail_start) as usize;
            tail.slice(from..from + trailer.footer_len as usize)
        } else {
            self.store
                .get_range(key, trailer.footer_off, footer_end)
                .await?
        };
        Ok((footer, trailer))
    }

    /// The bytes of one whole extent, checksum verified.
    pub async fn extent(&self, key: &str, data_off: u64, len: u32, crc: u32) -> Result<Bytes> {
        let cache_key = (key.to_string(), data_off);
        if let Some(b) = lock(&self.extents).get(&cache_key) {
            crate::metrics::add(&crate::metrics::GLOBAL.memory_cache_hits, 1);
            return Ok(b);
        }
        crate::metrics::add(&crate::metrics::GLOBAL.memory_cache_misses, 1);
        if let Some(b) = self
            .disk
            .as_ref()
            .and_then(|d| d.get(key, data_off, Some(crc)))
        {
            lock(&self.extents).put(cache_key, b.clone());
            return Ok(b);
        }
        // The extent, and the ones right after it in the object while they fit the window.
        let mut run = vec![(data_off, len, crc)];
        let offsets = lock(&self.by_offset).get(key).cloned();
        // (Never more than a quarter of the memory cache the run goes into.)
        let window = self.window.min(lock(&self.extents).cap / 4);
        if let (Some(offsets), true) = (offsets, window > 0) {
            let mut end = data_off + len as u64;
            for (&off, &(l, c)) in offsets.range(end..) {
                if off != end || end + l as u64 - data_off > window {
                    break;
                }
                run.push((off, l, c));
                end += l as u64;
            }
        }
        let end = run
            .last()
            .map(|(o, l, _)| o + *l as u64)
            .unwrap_or(data_off);
        let all = self.store.get_range(key, data_off, end).await?;
        let mut first = None;
        for (off, l, c) in run {
            let from = (off - data_off) as usize;
            let Some(bytes) =
                (from + l as usize <= all.len()).then(|| all.slice(from..from + l as usize))
            else {
                return Err(Error::Corrupt(format!(
                    "layer object {key}: shorter than its index says"
                )));
            };
            let entry = layer::ExtentEntry {
                offset: 0,
                len: l,
                data_off: off,
                crc: c,
            };
            let checked = layer::verify_extent(&entry, &bytes);
            if off == data_off {
                checked.map_err(|e| {
                    Error::Corrupt(format!(
                        "layer object {key}: extent at object offset {data_off}: {e}"
                    ))
                })?;
                first = Some(bytes.clone());
                if let Some(d) = &self.disk {
                    d.put(key, off, &bytes, c);
                }
                lock(&self.extents).put(cache_key.clone(), bytes);
            } else if checked.is_ok() {
                // Read ahead; a damaged neighbour is reported when it is itself read.
                if let Some(d) = &self.disk {
                    d.put(key, off, &bytes, c);
                }
                lock(&self.extents).put((key.to_string(), off), bytes);
            }
        }
        first.ok_or_else(|| {
            Error::Corrupt(format!("layer object {key}: extent at {data_off} missing"))
        })
    }
}

fn index_entries() -> std::num::NonZeroUsize {
    std::num::NonZeroUsize::new(INDEX_ENTRIES).unwrap_or(std::num::NonZeroUsize::MIN)
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A panic while holding a cache lock cannot leave it inconsistent in a harmful way: the caches
    // only ever hold verified, immutable data.
    m.lock().unwrap_or_else(|poison| poison.into_inner())
}

/// A byte-bounded LRU of extents (O(1) per operation).
struct Lru {
    cap: u64,
    used: u64,
    map: lru::LruCache<(String, u64), Bytes>,
}

impl Lru {
    fn new(cap: u64) -> Self {
        Lru {
            cap,
            used: 0,
            map: lru::LruCache::unbounded(),
        }
    }

    fn get(&mut self, k: &(String, u64)) -> Option<Bytes> {
        self.map.get(k).cloned()
    }

    fn put(&mut self, k: (String, u64), v: Bytes) {
        let len = v.len() as u64;
        if len > self.cap {
            return;
        }
        if let Some(old) = self.map.put(k, v) {
            self.used -= old.len() as u64;
        }
        self.used += len;
        while self.used > self.cap {
            match self.map.pop_lru() {
                Some((_, b)) => self.used -= b.len() as u64,
                None => break,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lru_evicts_least_recent() {
        let mut l = Lru::new(10);
        l.put(("a".into(), 0), Bytes::from(vec![0u8; 4]));
        l.put(("b".into(), 0), Bytes::from(vec![0u8; 4]));
        assert!(l.get(&("a".into(), 0)).is_some());
        l.put(("c".into(), 0), Bytes::from(vec![0u8; 4]));
        assert!(l.get(&("b".into(), 0)).is_none());
        assert!(l.get(&("a".into(), 0)).is_some());
        assert!(l.used <= 10);
    }
}

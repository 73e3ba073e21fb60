//! Access to layer objects: footer indexes (cached forever: objects are immutable) and extent
//! bytes (checksummed on every fetch from the store, then kept in a bounded in-memory cache).

use super::disk_cache::{self, DiskCache};
use crate::error::{Error, Result};
use crate::layer::{self, LayerIndex, TRAILER_LEN};
use crate::store::DynStore;
use bytes::Bytes;
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

/// How much of an object's tail is fetched first, hoping the whole footer is in it.
const TAIL_GUESS: u64 = 64 * 1024;
/// On a miss, following extents stored contiguously in the same object are fetched in the same
/// request, up to this many bytes (readahead and request coalescing for sequential reads); a
/// remote store pays a round trip per request, so it gets a wider window (QUACKFS_FETCH_WINDOW
/// overrides both). The miss is answered as soon as its own extent is in, so a wider window
/// costs it nothing; on S3 16 MiB made a second host's cold TPC-H queries 10% faster than
/// 8 MiB (fewer requests for the same bytes), with or without a cap on a connection's rate.
const FETCH_WINDOW: u64 = 1024 * 1024;
const REMOTE_FETCH_WINDOW: u64 = 16 * 1024 * 1024;

fn fetch_window(local: bool) -> u64 {
    crate::tuning::size("QUACKFS_FETCH_WINDOW")
        .map(|b| b.max(1))
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
    extents: Arc<Mutex<Lru>>,
    /// Bytes one miss fetches at most ([`fetch_window`]).
    window: u64,
    /// Sequential-read detection and background fetches ahead of it (remote stores).
    ahead: Readahead,
    /// Bounds the windows of misses still on their way after their reader was answered.
    windows: Arc<tokio::sync::Semaphore>,
}

/// Windows of misses on their way at once (each up to the fetch window of memory, and a
/// connection): a miss while as many are on their way fetches its own extent alone.
const MISS_WINDOWS: usize = 8;

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
            extents: Arc::new(Mutex::new(Lru::new(extent_bytes))),
            window: fetch_window(store.as_local().is_some()),
            ahead: Readahead::new(readahead_windows(store.as_local().is_some())),
            windows: Arc::new(tokio::sync::Semaphore::new(MISS_WINDOWS)),
            store,
        }
    }

    /// A cache with the given fetch window and windows read ahead (instead of the defaults).
    #[cfg(test)]
    pub fn tuned(store: DynStore, extent_bytes: u64, window: u64, readahead: usize) -> Self {
        let mut c = Self::new(store, extent_bytes);
        c.window = window;
        c.ahead = Readahead::new(readahead);
        c
    }

    pub fn store(&self) -> &DynStore {
        &self.store
    }

    /// Waits until no fetch ahead is under way.
    #[cfg(test)]
    pub async fn read_ahead_idle(&self) {
        loop {
            let pending: Vec<Pending> = lock(&self.ahead.state.0)
                .in_flight
                .values()
                .flat_map(|m| m.values().map(|(_, p)| p.clone()))
                .collect();
            if pending.is_empty() {
                return;
            }
            // (Each ends when its fetch does.)
            futures::future::join_all(pending.into_iter().map(|mut p| async move {
                let _ = p.wait_for(|_| false).await;
            }))
            .await;
        }
    }

    /// Whether the memory cache holds the extent at `data_off` of object `key`.
    #[cfg(test)]
    pub fn holds(&self, key: &str, data_off: u64) -> bool {
        lock(&self.extents).contains(&(key.to_string(), data_off))
    }

    /// The footer index of the object `key` of `size` bytes.
    pub async fn index(&self, key: &str, size: u64) -> Result<Arc<LayerIndex>> {
        let cached = lock(&self.indexes).get(same_layer(key)).cloned();
        if let Some(ix) = cached {
            if !lock(&self.by_offset).contains(key) {
                self.note_offsets(key, &ix);
            }
            return Ok(ix);
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
            .and_then(|d| disk_cache::off_the_runtime(|| d.get(key, disk_cache::FOOTER, None)))
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
                    let crc = crc32c::crc32c(&entry);
                    d.put_behind(key, vec![(disk_cache::FOOTER, Bytes::from(entry), crc)]);
                }
                (footer, trailer)
            }
        };
        let index = Arc::new(layer::parse_footer(&footer, &trailer).map_err(corrupt)?);
        self.note_offsets(key, &index);
        lock(&self.indexes).put(same_layer(key).to_string(), index.clone());
        Ok(index)
    }

    /// Notes where the extents of object `key` lie (for fetches of runs of them).
    fn note_offsets(&self, key: &str, index: &LayerIndex) {
        let offsets: ExtentOffsets = index
            .files
            .iter()
            .flat_map(|f| f.extents.iter().map(|e| (e.data_off, (e.len, e.crc))))
            .collect();
        lock(&self.by_offset).put(key.to_string(), Arc::new(offsets));
    }

    /// Keeps the bytes of extents of object `key` this process just wrote (offset, bytes,
    /// checksum), so reading them back needs no store round trip: in memory and, with a disk
    /// cache, on disk.
    pub fn prime(&self, key: &str, items: Vec<(u64, Bytes, u32)>) {
        if let Some(d) = &self.disk {
            d.put_run(key, &items);
        }
        let mut mem = lock(&self.extents);
        for (data_off, bytes, _) in items {
            mem.put((key.to_string(), data_off), bytes);
        }
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
        if let Some(b) = self.memory_hit(&cache_key) {
            return Ok(b);
        }
        // The extent, and the ones right after it in the object while they fit the window
        // (a remote store's window goes on after the reader is answered: while as many as
        // allowed are on their way, the extent alone).
        let window = self.window_bytes();
        let local = self.store.as_local().is_some();
        let slot = if local {
            None
        } else {
            self.windows.clone().try_acquire_owned().ok()
        };
        let offsets = lock(&self.by_offset)
            .get(key)
            .cloned()
            .filter(|_| local || slot.is_some());
        let mut run = match offsets {
            Some(offsets) => window_run(&offsets, (data_off, len, crc), window),
            None => vec![(data_off, len, crc)],
        };
        let demand_end = run.last().map_or(data_off, |(o, l, _)| o + *l as u64);
        // Registered as under way, so concurrent misses of these extents wait for this fetch;
        // if a fetch that holds this extent is under way already (ahead of a reader, or another
        // reader's miss), wait for it once rather than fetch the same bytes twice, and the run
        // stops where a fetch under way starts.
        let fetching = match self.ahead.claim(key, data_off, demand_end, true) {
            Ok(claimed) => Some(claimed),
            Err(mut pending) => {
                // (Until the fetch has brought this extent, or ended.)
                let end = data_off + u64::from(len);
                let _ = pending.wait_for(|&at| at >= end).await;
                if let Some(b) = self.memory_hit(&cache_key) {
                    return Ok(b);
                }
                self.ahead.claim(key, data_off, demand_end, true).ok()
            }
        }
        .map(|(claimed, end)| {
            cut_run(&mut run, end);
            claimed
        });
        let demand_end = run.last().map_or(data_off, |(o, l, _)| o + *l as u64);
        crate::metrics::add(&crate::metrics::GLOBAL.memory_cache_misses, 1);
        if let Some(b) = self
            .disk
            .as_ref()
            .and_then(|d| disk_cache::off_the_runtime(|| d.get(key, data_off, Some(crc))))
        {
            lock(&self.extents).put(cache_key, b.clone());
            self.read_ahead(key, data_off, Some(data_off + len as u64));
            return Ok(b);
        }
        // Fetches ahead (if the reads go forward) and behind start before this one is awaited.
        self.read_ahead(key, data_off, Some(demand_end));
        self.read_behind(key, data_off);
        // The whole run is fetched in a task of its own (holding the claim until it is in); the
        // extent asked for is answered as soon as its bytes are.
        let (tx, rx) = tokio::sync::oneshot::channel();
        let (store, disk, extents) = (self.store.clone(), self.disk.clone(), self.extents.clone());
        let key = key.to_string();
        let fetch = async move {
            let mut tx = Some(tx);
            let mut tell = fetching.as_ref().map(|f| f.arrivals(&run));
            let fetched = fetch_run(&store, disk.as_ref(), &extents, &key, &run, &mut |i, b| {
                if i == 0 {
                    if let Some(tx) = tx.take() {
                        let _ = tx.send(Ok(b.clone()));
                    }
                }
                if let Some(tell) = tell.as_mut() {
                    tell(i, b);
                }
            })
            .await;
            drop(tell);
            drop(slot);
            match (fetched, tx) {
                (Err(e), Some(tx)) => {
                    let _ = tx.send(Err(e));
                }
                (Err(e), None) => {
                    tracing::debug!(key = %key, error = %e, "fetch after its first extent failed")
                }
                (Ok(()), _) => {}
            }
            drop(fetching);
        };
        // (A local store reads the whole window at once: no task of its own.)
        match tokio::runtime::Handle::try_current() {
            Ok(rt) if !local => drop(rt.spawn(fetch)),
            _ => fetch.await,
        }
        rx.await.unwrap_or_else(|_| {
            Err(Error::Corrupt(format!(
                "layer object {}: extent at {data_off} missing",
                cache_key.0
            )))
        })
    }

    /// The bytes of one whole extent if they can be had without waiting on a network: memory,
    /// the disk cache, or a store that answers at once (a local one); checksum verified. None
    /// otherwise (also for damaged bytes: a read reports those). Nothing is counted or read
    /// ahead: the write path asks, to compare what DuckDB rewrites with what it replaces.
    pub fn extent_now(&self, key: &str, data_off: u64, len: u32, crc: u32) -> Option<Bytes> {
        let cache_key = (key.to_string(), data_off);
        if let Some(b) = lock(&self.extents).get(&cache_key) {
            return Some(b);
        }
        let bytes = match self
            .disk
            .as_ref()
            .and_then(|d| d.get(key, data_off, Some(crc)))
        {
            Some(b) => b,
            None => {
                let b = self.store.read_now(key, data_off, data_off + len as u64)?;
                let entry = layer::ExtentEntry {
                    offset: 0,
                    len,
                    data_off,
                    crc,
                };
                layer::verify_extent(&entry, &b).ok()?;
                b
            }
        };
        lock(&self.extents).put(cache_key, bytes.clone());
        Some(bytes)
    }

    /// The extent `cache_key` from the memory cache, counted, and noted for reading ahead.
    fn memory_hit(&self, cache_key: &(String, u64)) -> Option<Bytes> {
        let hit = lock(&self.extents).get(cache_key)?;
        crate::metrics::add(&crate::metrics::GLOBAL.memory_cache_hits, 1);
        self.read_ahead(&cache_key.0, cache_key.1, None);
        Some(hit)
    }

    /// Bytes one fetch covers: the window, never more than a quarter of the memory cache the
    /// fetched extents go into.
    fn window_bytes(&self) -> u64 {
        self.window.min(lock(&self.extents).cap / 4)
    }

    /// Notes a read of the extent at `data_off` of object `key` (`miss`: it was not in memory and
    /// is being read up to there) and, once reads of the object go forward, starts fetches of the
    /// extents ahead of them.
    fn read_ahead(&self, key: &str, data_off: u64, miss: Option<u64>) {
        if !self.ahead.enabled() {
            return;
        }
        let Ok(rt) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let window = self.window_bytes();
        // The object's offset table is looked up only when there is something to fetch.
        let offsets = || lock(&self.by_offset).get(key).cloned();
        for run in self.ahead.note(key, data_off, miss, window, offsets) {
            // (The stream advanced over at most as many runs as there were free slots.)
            let (Some(permit), Some(&(first, _, _))) = (self.ahead.permit(), run.first()) else {
                break;
            };
            let end = run.last().map_or(first, |(o, l, _)| o + *l as u64);
            // Registered before it starts (the runs ahead start where every fetch under way
            // ends), so a read of these extents meanwhile waits for it.
            // (Not cut short: the stream counts these bytes as fetched.)
            let Ok((fetching, _)) = self.ahead.claim(key, first, end, false) else {
                continue;
            };
            self.spawn_fetch(&rt, key, run, (permit, fetching), "read ahead");
        }
    }

    /// Fetches `run` of object `key` in the background ([`fetch_ahead`]), holding `held` (its
    /// slot and its claim) until done; `what` names it in the log of a failure.
    fn spawn_fetch(
        &self,
        rt: &tokio::runtime::Handle,
        key: &str,
        run: Vec<(u64, u32, u32)>,
        held: (tokio::sync::OwnedSemaphorePermit, InFlight),
        what: &'static str,
    ) {
        let (store, disk, extents) = (self.store.clone(), self.disk.clone(), self.extents.clone());
        let key = key.to_string();
        rt.spawn(async move {
            if let Err(e) = fetch_ahead(&store, disk.as_ref(), &extents, &key, run, &held.1).await {
                tracing::debug!(key = %key, error = %e, "{what} failed");
            }
            drop(held);
        });
    }

    /// On a miss at `data_off` of object `key` (a remote store), fetches in the background the
    /// extents stored back to back right before it, up to a quarter of the fetch window, that
    /// are neither in memory nor under way: DuckDB's scan threads and its metadata reads step
    /// back a little as often as they go on (a block of a row group read after a later one), and
    /// each such step cost a whole round trip. A window fetched forward from the miss never
    /// covers them.
    fn read_behind(&self, key: &str, data_off: u64) {
        let span = self.window_bytes() / 4;
        if !self.ahead.enabled() || span == 0 {
            return;
        }
        let Ok(rt) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let Some(offsets) = lock(&self.by_offset).get(key).cloned() else {
            return;
        };
        let mut run = Vec::new();
        let mut start = data_off;
        for (&off, &(l, c)) in offsets.range(..data_off).rev() {
            if off + l as u64 != start || data_off - off > span {
                break;
            }
            run.push((off, l, c));
            start = off;
        }
        run.reverse();
        {
            // Only what is missing: the run starts at the first extent not in memory.
            let mem = lock(&self.extents);
            let mut k = (key.to_string(), 0);
            let held = run.iter().rposition(|(o, _, _)| {
                k.1 = *o;
                mem.contains(&k)
            });
            if let Some(i) = held {
                run.drain(..=i);
            }
        }
        let (Some(&(first, _, _)), Some(&(last, l, _))) = (run.first(), run.last()) else {
            return;
        };
        let Some(permit) = self.ahead.permit() else {
            return;
        };
        // (Cut short where a fetch under way starts; none if one covers the start already.)
        let Ok((fetching, end)) = self.ahead.claim(key, first, last + l as u64, true) else {
            return;
        };
        cut_run(&mut run, end);
        self.spawn_fetch(&rt, key, run, (permit, fetching), "read behind");
    }
}

/// Brings the extents `run` (back to back in object `key`) into the memory cache: from the disk
/// cache where it holds them, the rest from the store, a request per contiguous stretch.
async fn fetch_ahead(
    store: &DynStore,
    disk: Option<&Arc<DiskCache>>,
    extents: &Mutex<Lru>,
    key: &str,
    mut run: Vec<(u64, u32, u32)>,
    claim: &InFlight,
) -> Result<()> {
    {
        let mem = lock(extents);
        run.retain(|(o, _, _)| !mem.contains(&(key.to_string(), *o)));
    }
    if let Some(d) = disk {
        disk_cache::off_the_runtime(|| {
            run.retain(|(o, _, c)| match d.get(key, *o, Some(*c)) {
                Some(b) => {
                    lock(extents).put((key.to_string(), *o), b);
                    false
                }
                None => true,
            })
        });
    }
    // A request per stretch of extents stored back to back.
    let mut stretches: Vec<Vec<(u64, u32, u32)>> = Vec::new();
    for e in run {
        match stretches.last_mut() {
            Some(s) if s.last().is_some_and(|&(o, l, _)| o + l as u64 == e.0) => s.push(e),
            _ => stretches.push(vec![e]),
        }
    }
    for stretch in stretches {
        crate::metrics::add(&crate::metrics::GLOBAL.readahead_fetches, 1);
        let mut arrived = claim.arrivals(&stretch);
        fetch_run(store, disk, extents, key, &stretch, &mut arrived).await?;
    }
    Ok(())
}

/// Drops the extents of `run` from `end` on (the first one always stays: a claim starts with it).
fn cut_run(run: &mut Vec<(u64, u32, u32)>, end: u64) {
    let keep = run
        .iter()
        .skip(1)
        .position(|(o, l, _)| o + *l as u64 > end)
        .map_or(run.len(), |i| i + 1);
    run.truncate(keep);
}

/// The extent `first` and those stored right after it in an object (from its offset table), back
/// to back, while they fit `window` bytes counted from the start of `first`.
fn window_run(
    offsets: &ExtentOffsets,
    first: (u64, u32, u32),
    window: u64,
) -> Vec<(u64, u32, u32)> {
    let start = first.0;
    let mut end = first.0 + first.1 as u64;
    let mut out = vec![first];
    for (&off, &(l, c)) in offsets.range(end..) {
        if off != end || end + l as u64 - start > window {
            break;
        }
        out.push((off, l, c));
        end += l as u64;
    }
    out
}

/// The name of object `key` in the index cache: a layer kept in the catalog (`inline/ID`) and
/// the same layer once moved into the store (`layers/ID`) are the same bytes and share one
/// entry (a follower's views name a layer by the key it had when they were built).
fn same_layer(key: &str) -> &str {
    key.strip_prefix(crate::catalog::INLINE_PREFIX)
        .or_else(|| key.strip_prefix(crate::catalog::LAYERS_PREFIX))
        .unwrap_or(key)
}

/// Fetches the extents `run` (object offset, length, crc; back to back in object `key`) from the
/// store in one request, verifies each as it arrives and keeps the good ones in the caches,
/// telling `arrived` of each (its index in `run`) once it is in memory: a reader of the first
/// extent, or of one further on, goes on while the rest of a long run is still on its way. A
/// damaged or missing first extent is an error; a damaged or missing later one is skipped (it
/// is reported when it is itself read).
async fn fetch_run(
    store: &DynStore,
    disk: Option<&Arc<DiskCache>>,
    extents: &Mutex<Lru>,
    key: &str,
    run: &[(u64, u32, u32)],
    arrived: &mut (dyn FnMut(usize, &Bytes) + Send),
) -> Result<()> {
    let Some(&(data_off, _, _)) = run.first() else {
        return Ok(());
    };
    let lens: Vec<u32> = run.iter().map(|&(_, l, _)| l).collect();
    let mut to_disk = Vec::new();
    let mut first_bad = None;
    let mut first_in = false;
    let got = store
        .get_range_pieces(key, data_off, &lens, &mut |i, bytes| {
            let Some(&(off, l, c)) = run.get(i) else {
                return;
            };
            let entry = layer::ExtentEntry {
                offset: 0,
                len: l,
                data_off: off,
                crc: c,
            };
            let checked = layer::verify_extent(&entry, &bytes);
            if i == 0 {
                if let Err(e) = checked {
                    first_bad = Some(e);
                    return;
                }
                first_in = true;
            } else if checked.is_err() {
                return;
            }
            if disk.is_some() {
                to_disk.push((off, bytes.clone(), c));
            }
            lock(extents).put((key.to_string(), off), bytes.clone());
            arrived(i, &bytes);
        })
        .await;
    // The reader waits for the bytes, not for their cache files.
    if let Some(d) = disk {
        d.put_behind(key, to_disk);
    }
    got?;
    if let Some(e) = first_bad {
        return Err(Error::Corrupt(format!(
            "layer object {key}: extent at object offset {data_off}: {e}"
        )));
    }
    if !first_in {
        return Err(Error::Corrupt(format!(
            "layer object {key}: shorter than its index says"
        )));
    }
    Ok(())
}

/// Windows fetched ahead of a forward-going reader of one object on a remote store (each a
/// background request of up to the fetch window), `QUACKFS_READAHEAD` overriding; 0 turns it off.
/// A local store reads fast enough without it.
const REMOTE_READAHEAD: usize = 4;

fn readahead_windows(local: bool) -> usize {
    crate::tuning::count("QUACKFS_READAHEAD").unwrap_or(if local { 0 } else { REMOTE_READAHEAD })
}

/// Readers of one object that go forward (a scan, or DuckDB's threads scanning neighbouring row
/// groups): where they are and how far fetches ahead of them reach.
#[derive(Debug, Clone, Copy)]
struct Stream {
    /// The furthest offset read.
    at: u64,
    /// Where the next fetch ahead starts (everything before it is fetched or being fetched).
    next: u64,
    /// Two reads in a row went forward: fetch ahead.
    active: bool,
}

/// How far a fetch under way has brought its extents into memory (closed when it ends).
type Pending = tokio::sync::watch::Receiver<u64>;

#[derive(Default)]
struct AheadState {
    /// Per object, a few streams (most recent last).
    streams: HashMap<String, Vec<Stream>>,
    /// Fetches ahead under way, per object: (start, end) -> completion.
    in_flight: HashMap<String, BTreeMap<u64, (u64, Pending)>>,
}

/// Shared by a cache and its background fetches.
#[derive(Clone)]
struct AheadHandle(Arc<Mutex<AheadState>>);

/// A fetch registered as under way: dropping it (the fetch ended, well or not) removes the entry
/// and wakes whoever waits for it.
struct InFlight {
    state: AheadHandle,
    key: String,
    start: u64,
    progress: tokio::sync::watch::Sender<u64>,
}

impl InFlight {
    /// The extents of the fetch up to object offset `end` are in memory (or will not come):
    /// wakes whoever waits for one of them.
    fn arrived(&self, end: u64) {
        self.progress.send_if_modified(|at| {
            let later = end > *at;
            *at = (*at).max(end);
            later
        });
    }

    /// A callback for [`fetch_run`] of `run` that tells of each extent as it arrives.
    fn arrivals<'a>(&'a self, run: &'a [(u64, u32, u32)]) -> impl FnMut(usize, &Bytes) + Send + 'a {
        move |i, _| {
            if let Some(&(o, l, _)) = run.get(i) {
                self.arrived(o + u64::from(l));
            }
        }
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        // (The sender is dropped after this: waiters find the entry gone and the bytes cached.)
        let mut st = lock(&self.state.0);
        if let Some(m) = st.in_flight.get_mut(&self.key) {
            m.remove(&self.start);
            if m.is_empty() {
                st.in_flight.remove(&self.key);
            }
        }
    }
}

/// Objects whose streams are remembered; beyond it the state starts over (a new stream is only
/// one extra miss).
const AHEAD_OBJECTS: usize = 1024;
/// Streams remembered per object.
const STREAMS_PER_OBJECT: usize = 4;

struct Readahead {
    /// Windows ahead of a stream (0: off).
    windows: usize,
    state: AheadHandle,
    /// Bounds the fetches ahead in flight (memory, and the store's connections).
    permits: Arc<tokio::sync::Semaphore>,
}

impl Readahead {
    fn new(windows: usize) -> Self {
        Readahead {
            windows,
            state: AheadHandle(Arc::new(Mutex::new(AheadState::default()))),
            permits: Arc::new(tokio::sync::Semaphore::new(windows.max(1))),
        }
    }

    /// A free slot for a fetch ahead, taken.
    fn permit(&self) -> Option<tokio::sync::OwnedSemaphorePermit> {
        self.permits.clone().try_acquire_owned().ok()
    }

    /// Registers a fetch of `[start, end)` of `key` as under way (until the returned guard is
    /// dropped), unless a fetch covering `start` is under way already: then its completion. With
    /// `cut`, a fetch under way that starts inside the range cuts it short: the claim covers
    /// `[start, its start)`. Returns the end claimed.
    fn claim(
        &self,
        key: &str,
        start: u64,
        end: u64,
        cut: bool,
    ) -> std::result::Result<(InFlight, u64), Pending> {
        let mut st = lock(&self.state.0);
        let mut end = end;
        if let Some(m) = st.in_flight.get(key) {
            // (Not only the last fetch starting before `start`: an older, longer one may hold it.)
            if let Some((_, (_, p))) = m.range(..=start).rev().find(|(_, (e, _))| start < *e) {
                return Err(p.clone());
            }
            if let Some((&next, _)) = m.range(start + 1..).next().filter(|_| cut) {
                end = end.min(next);
            }
        }
        let (progress, pending) = tokio::sync::watch::channel(start);
        st.in_flight
            .entry(key.to_string())
            .or_default()
            .insert(start, (end, pending));
        let claimed = InFlight {
            state: self.state.clone(),
            key: key.to_string(),
            start,
            progress,
        };
        Ok((claimed, end))
    }

    fn enabled(&self) -> bool {
        self.windows > 0
    }

    /// Records a read of `off` in object `key` (whose extents are `offsets`; `miss`: it was not
    /// in memory and is being read up to there); returns the runs of extents to fetch ahead of
    /// it (each up to `window` bytes), if any.
    fn note(
        &self,
        key: &str,
        off: u64,
        miss: Option<u64>,
        window: u64,
        offsets: impl FnOnce() -> Option<Arc<ExtentOffsets>>,
    ) -> Vec<Vec<(u64, u32, u32)>> {
        let reach = window * self.windows as u64;
        let mut st = lock(&self.state.0);
        if !st.streams.contains_key(key) {
            if miss.is_none() {
                return Vec::new();
            }
            if st.streams.len() >= AHEAD_OBJECTS {
                st.streams.clear();
            }
            st.streams.insert(key.to_string(), Vec::new());
        }
        let Some(streams) = st.streams.get_mut(key) else {
            return Vec::new();
        };
        // The stream this read belongs to: it lies between just behind the stream and one
        // window past what was fetched for it.
        let found = streams
            .iter()
            .position(|s| off + reach >= s.at && off <= s.next + window);
        let Some(i) = found else {
            if let Some(next) = miss {
                if streams.len() >= STREAMS_PER_OBJECT {
                    streams.remove(0);
                }
                streams.push(Stream {
                    at: off,
                    next,
                    active: false,
                });
            }
            return Vec::new();
        };
        let mut s = streams.remove(i);
        if miss.is_some() && off >= s.at {
            s.active = true;
        }
        s.at = s.at.max(off);
        s.next = s.next.max(miss.unwrap_or(off));
        let mut runs = Vec::new();
        let max_runs = self.permits.available_permits();
        let wanted = s.active && s.next < s.at + reach && max_runs > 0;
        if let Some(offsets) = wanted.then(offsets).flatten() {
            while s.next < s.at + reach && runs.len() < max_runs {
                // The extent holding `next` (extents lie back to back), or the first after it.
                let holding = offsets
                    .range(..=s.next)
                    .next_back()
                    .filter(|(&o, &(l, _))| o + l as u64 > s.next);
                let Some((&o, &(l, c))) = holding.or_else(|| offsets.range(s.next..).next()) else {
                    break;
                };
                let run = window_run(&offsets, (o, l, c), window);
                s.next = run
                    .last()
                    .map_or(s.next + window, |(o, l, _)| o + *l as u64);
                runs.push(run);
            }
        }
        streams.push(s);
        runs
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

    fn contains(&self, k: &(String, u64)) -> bool {
        self.map.contains(k)
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
    use crate::layer::{LayerKind, LayerWriter};
    use crate::store::faulty::{FaultyStore, Op};
    use crate::store::memory::MemoryStore;
    use crate::store::ObjectStore;

    const EXT: usize = 64 * 1024;
    const N: usize = 64;

    fn extent_data(i: usize) -> Vec<u8> {
        (0..EXT).map(|j| (i * 31 + j * 7) as u8).collect()
    }

    /// A layer of one file of `N` extents of `EXT` bytes stored back to back, in a counting
    /// store; `damage` flips a byte of that extent in the stored object.
    async fn layer_store(damage: Option<usize>) -> (Arc<FaultyStore>, u64, Arc<LayerIndex>) {
        let mut w = LayerWriter::new(Vec::new(), LayerKind::Delta);
        w.begin_file(1, None, (N * EXT) as u64).unwrap();
        for i in 0..N {
            w.add_extent((i * EXT) as u64, &extent_data(i)).unwrap();
        }
        let (mut obj, index, _) = w.finish().unwrap();
        if let Some(d) = damage {
            let e = &index.files[0].extents[d];
            obj[e.data_off as usize + 5] ^= 0xff;
        }
        let size = obj.len() as u64;
        let store = Arc::new(FaultyStore::new(Arc::new(MemoryStore::new())));
        store.put("l", Bytes::from(obj)).await.unwrap();
        (store, size, Arc::new(index))
    }

    /// Reads extent `i` through `cache`.
    async fn read(cache: &LayerCache, index: &LayerIndex, i: usize) -> Result<Bytes> {
        let e = &index.files[0].extents[i];
        cache.extent("l", e.data_off, e.len, e.crc).await
    }

    /// Returns once a fetch of object `key` is under way in `cache`.
    async fn under_way(cache: &LayerCache, key: &str) {
        for _ in 0..5000 {
            if lock(&cache.ahead.state.0).in_flight.contains_key(key) {
                return;
            }
            tokio::time::sleep(std::time::Duration::from_millis(1)).await;
        }
        panic!("no fetch of {key} under way after 5 s");
    }

    /// A cache over `store` (a window of 4 extents) with the layer's index loaded, and the
    /// store's ranged reads so far.
    async fn cache_over(
        store: &Arc<FaultyStore>,
        size: u64,
        readahead: usize,
    ) -> (LayerCache, u64) {
        let cache = LayerCache::tuned(store.clone(), 64 << 20, 4 * EXT as u64, readahead);
        cache.index("l", size).await.unwrap();
        (cache, store.count(Op::GetRange))
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_forward_scan_is_fetched_ahead_once_and_exactly() {
        let (store, size, index) = layer_store(None).await;
        let (cache, before) = cache_over(&store, size, 4).await;
        // Two misses going forward start the fetches ahead: up to four windows past the reader
        // (the second miss fetches its own window, three more follow).
        read(&cache, &index, 0).await.unwrap();
        read(&cache, &index, 4).await.unwrap();
        cache.read_ahead_idle().await;
        let off = |i: usize| index.files[0].extents[i].data_off;
        for i in 8..20 {
            assert!(cache.holds("l", off(i)), "extent {i} was not fetched ahead");
        }
        assert!(
            !cache.holds("l", off(20)),
            "fetched further than four windows ahead"
        );
        // The whole scan gives the exact bytes, and every window is fetched once.
        for i in 0..N {
            assert_eq!(
                read(&cache, &index, i).await.unwrap(),
                extent_data(i),
                "extent {i}"
            );
        }
        cache.read_ahead_idle().await;
        assert_eq!(store.count(Op::GetRange) - before, (N / 4) as u64);
    }

    /// A miss also fetches, in the background, the extents right before it (a quarter of the
    /// window) that are not in memory: a read that then steps back finds them there.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_miss_fetches_a_little_behind_it() {
        let (store, size, index) = layer_store(None).await;
        let cache = LayerCache::tuned(store.clone(), 64 << 20, 16 * EXT as u64, 4);
        cache.index("l", size).await.unwrap();
        let off = |i: usize| index.files[0].extents[i].data_off;
        let before = store.count(Op::GetRange);
        read(&cache, &index, 20).await.unwrap();
        cache.read_ahead_idle().await;
        for i in 16..36 {
            assert!(cache.holds("l", off(i)), "extent {i}");
        }
        assert!(
            !cache.holds("l", off(15)),
            "no more than a quarter window behind"
        );
        assert_eq!(
            store.count(Op::GetRange) - before,
            2,
            "the window and the run behind it"
        );
        // Stepping back finds them in memory, byte for byte.
        for i in (16..20).rev() {
            assert_eq!(read(&cache, &index, i).await.unwrap(), extent_data(i));
        }
        cache.read_ahead_idle().await;
        assert_eq!(store.count(Op::GetRange) - before, 2);
        // Behind a miss, only what is missing: the run ends where memory holds the extents.
        read(&cache, &index, 38).await.unwrap();
        cache.read_ahead_idle().await;
        assert!(cache.holds("l", off(36)) && cache.holds("l", off(37)));
        // A local store (no fetching ahead) fetches nothing behind either.
        let local = LayerCache::tuned(store.clone(), 64 << 20, 16 * EXT as u64, 0);
        local.index("l", size).await.unwrap();
        read(&local, &index, 50).await.unwrap();
        local.read_ahead_idle().await;
        assert!(!local.holds("l", off(49)));
    }

    /// A layer kept in the catalog and the same layer moved into the store share their index:
    /// a follower's views name it by either key, and its footer is read once.
    #[tokio::test]
    async fn a_layer_moved_into_the_store_keeps_its_index() {
        let (store, size, _) = layer_store(None).await;
        let obj = store.get("l").await.unwrap();
        for key in ["inline/x", "layers/x"] {
            store.put(key, obj.clone()).await.unwrap();
        }
        let cache = LayerCache::tuned(store.clone(), 64 << 20, 4 * EXT as u64, 0);
        let inline = cache.index("inline/x", size).await.unwrap();
        let before = store.count(Op::GetRange);
        let moved = cache.index("layers/x", size).await.unwrap();
        assert!(Arc::ptr_eq(&inline, &moved));
        assert_eq!(store.count(Op::GetRange), before, "no footer read again");
        // Runs of the moved object are fetched by its own key, in one window.
        let e = &moved.files[0].extents[0];
        let got = cache
            .extent("layers/x", e.data_off, e.len, e.crc)
            .await
            .unwrap();
        assert_eq!(got, extent_data(0));
        assert!(cache.holds("layers/x", moved.files[0].extents[3].data_off));
        // Other objects keep their own entries.
        assert_eq!(same_layer("l"), "l");
        assert_eq!(same_layer("inline/x"), same_layer("layers/x"));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn scattered_reads_fetch_nothing_ahead() {
        let (store, size, index) = layer_store(None).await;
        let (cache, before) = cache_over(&store, size, 4).await;
        for i in [0, 40, 20, 60, 12] {
            assert_eq!(read(&cache, &index, i).await.unwrap(), extent_data(i));
        }
        cache.read_ahead_idle().await;
        // A window each, and the quarter window behind each (one extent; none before 0).
        assert_eq!(store.count(Op::GetRange) - before, 5 + 4);
        let off = |i: usize| index.files[0].extents[i].data_off;
        assert!(!cache.holds("l", off(44)), "nothing ahead of a window");
        assert!(cache.holds("l", off(39)) && !cache.holds("l", off(38)));
        // Off: a forward scan fetches only what it misses.
        let (cache, before) = cache_over(&store, size, 0).await;
        read(&cache, &index, 0).await.unwrap();
        read(&cache, &index, 4).await.unwrap();
        cache.read_ahead_idle().await;
        assert!(!cache.holds("l", index.files[0].extents[8].data_off));
        assert_eq!(store.count(Op::GetRange) - before, 2);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_misses_of_one_window_fetch_it_once() {
        let (store, size, index) = layer_store(None).await;
        store.set_read_latency_ms(50);
        // Readahead off: only the readers' own misses fetch.
        let (cache, before) = cache_over(&store, size, 0).await;
        let cache = Arc::new(cache);
        let index = Arc::new(index);
        // Eight readers miss extents of the first window (0..4) while the first one's fetch of
        // it is under way. (It goes first: a reader of extent 2 going first would fetch the
        // window from extent 2 on, and extent 0 would need a request of its own.)
        let spawn_reader = |r: usize| {
            let (cache, index) = (cache.clone(), index.clone());
            tokio::spawn(async move {
                let i = r % 4;
                (i, read(&cache, &index, i).await)
            })
        };
        let mut readers = vec![spawn_reader(0)];
        under_way(&cache, "l").await;
        readers.extend((1..8).map(spawn_reader));
        for r in readers {
            let (i, got) = r.await.unwrap();
            assert_eq!(got.unwrap(), extent_data(i), "extent {i}");
        }
        assert_eq!(
            store.count(Op::GetRange) - before,
            1,
            "one window, fetched once"
        );
        // A reader waiting for a fetch that failed fetches the extent itself.
        let (cache, _) = cache_over(&store, size, 0).await;
        let cache = Arc::new(cache);
        store.fail_nth(1);
        let first = {
            let (cache, index) = (cache.clone(), index.clone());
            tokio::spawn(async move { read(&cache, &index, 8).await })
        };
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        let second = read(&cache, &index, 9).await;
        assert!(first.await.unwrap().is_err(), "the injected failure");
        assert_eq!(second.unwrap(), extent_data(9));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_miss_stops_where_a_fetch_under_way_starts() {
        let (store, size, index) = layer_store(None).await;
        store.set_read_latency_ms(50);
        let (cache, before) = cache_over(&store, size, 0).await;
        let cache = Arc::new(cache);
        let index = Arc::new(index);
        let len = |i: usize| index.files[0].extents[i].len as u64;
        let bytes_before = store.range_bytes();
        // A reader of extent 2 fetches the window 2..6; a reader of extent 0, while that is
        // under way, fetches 0..2 only (not 0..4: extents 2 and 3 are coming).
        let second = {
            let (cache, index) = (cache.clone(), index.clone());
            tokio::spawn(async move { read(&cache, &index, 2).await })
        };
        under_way(&cache, "l").await;
        assert_eq!(read(&cache, &index, 0).await.unwrap(), extent_data(0));
        assert_eq!(second.await.unwrap().unwrap(), extent_data(2));
        for i in 0..6 {
            assert_eq!(
                read(&cache, &index, i).await.unwrap(),
                extent_data(i),
                "extent {i}"
            );
        }
        assert_eq!(store.count(Op::GetRange) - before, 2);
        let window: u64 = (2..6).map(len).sum();
        let head: u64 = (0..2).map(len).sum();
        assert_eq!(
            store.range_bytes() - bytes_before,
            window + head,
            "each byte asked for once"
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_damaged_extent_fetched_ahead_is_an_error_when_read() {
        let (store, size, index) = layer_store(Some(13)).await;
        // Missed first: the error names the damaged extent (its window's later extents come in
        // good and are kept).
        let (cache, _) = cache_over(&store, size, 4).await;
        let off = index.files[0].extents[13].data_off;
        let got = read(&cache, &index, 13).await;
        assert!(
            matches!(&got, Err(Error::Corrupt(m)) if m.contains(&format!("extent at object offset {off}"))),
            "{got:?}"
        );
        cache.read_ahead_idle().await;
        assert!(cache.holds("l", index.files[0].extents[14].data_off));
        let (cache, _) = cache_over(&store, size, 4).await;
        for i in 0..N {
            let got = read(&cache, &index, i).await;
            if i == 13 {
                assert!(
                    matches!(&got, Err(Error::Corrupt(m)) if m.contains("layer object l")),
                    "{got:?}"
                );
            } else {
                assert_eq!(got.unwrap(), extent_data(i), "extent {i}");
            }
        }
    }

    /// A cache over a store whose reads in pieces are held back after the first piece (a
    /// window of 4 extents, no reading ahead), with the layer's index loaded, and the gate.
    async fn held_back() -> (
        Arc<FaultyStore>,
        Arc<tokio::sync::Semaphore>,
        Arc<LayerCache>,
        Arc<LayerIndex>,
    ) {
        let (store, size, index) = layer_store(None).await;
        let gate = store.hold_pieces();
        let cache = Arc::new(LayerCache::tuned(
            store.clone(),
            64 << 20,
            4 * EXT as u64,
            0,
        ));
        cache.index("l", size).await.unwrap();
        (store, gate, cache, index)
    }

    /// A miss is answered as soon as its extent is in, not when the whole window is; a reader
    /// of an extent further on in that window goes on once that one is in; nothing is fetched
    /// twice.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn readers_go_on_as_their_extents_arrive() {
        use std::time::Duration;
        let (inner, gate, cache, index) = held_back().await;
        let before = inner.count(Op::GetRange);
        let soon = Duration::from_secs(5);
        // Extent 0 comes while 1..4 are held back.
        let first = tokio::time::timeout(soon, read(&cache, &index, 0)).await;
        assert_eq!(
            first
                .expect("extent 0 waited for its whole window")
                .unwrap(),
            extent_data(0)
        );
        // A reader of extent 2 waits for the fetch under way, until extent 2 is in.
        let mut third = {
            let (cache, index) = (cache.clone(), index.clone());
            tokio::spawn(async move { read(&cache, &index, 2).await })
        };
        gate.add_permits(1);
        assert!(
            tokio::time::timeout(Duration::from_millis(200), &mut third)
                .await
                .is_err(),
            "extent 2 answered before it was in"
        );
        gate.add_permits(1);
        let got = tokio::time::timeout(soon, third)
            .await
            .expect("extent 2 waited for the whole window");
        assert_eq!(got.unwrap().unwrap(), extent_data(2));
        assert!(!cache.holds("l", index.files[0].extents[3].data_off));
        gate.add_permits(1);
        cache.read_ahead_idle().await;
        for i in 0..4 {
            assert_eq!(read(&cache, &index, i).await.unwrap(), extent_data(i));
        }
        assert_eq!(inner.count(Op::GetRange) - before, 1, "one request");
    }

    /// While as many windows of misses as allowed are still on their way, a miss fetches its
    /// own extent alone: memory and connections stay bounded under many scattered misses.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn windows_of_misses_on_their_way_are_bounded() {
        let (inner, gate, cache, index) = held_back().await;
        let ext = |i: usize| &index.files[0].extents[i];
        // Misses in MISS_WINDOWS windows, each answered with the rest of its window held back.
        for w in 0..MISS_WINDOWS {
            let i = 4 * w;
            assert_eq!(read(&cache, &index, i).await.unwrap(), extent_data(i));
        }
        let before = inner.range_bytes();
        let i = 4 * MISS_WINDOWS;
        assert_eq!(read(&cache, &index, i).await.unwrap(), extent_data(i));
        assert_eq!(
            inner.range_bytes() - before,
            u64::from(ext(i).len),
            "the extent alone"
        );
        // Once they are in, a miss fetches its window again.
        gate.add_permits(1 << 20);
        cache.read_ahead_idle().await;
        let before = inner.range_bytes();
        let i = 4 * MISS_WINDOWS + 8;
        assert_eq!(read(&cache, &index, i).await.unwrap(), extent_data(i));
        cache.read_ahead_idle().await;
        let window: u64 = (i..i + 4).map(|j| u64::from(ext(j).len)).sum();
        assert_eq!(inner.range_bytes() - before, window);
        for i in 0..N {
            assert_eq!(
                read(&cache, &index, i).await.unwrap(),
                extent_data(i),
                "{i}"
            );
        }
    }

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

//! What a running mount counts, for operators: `mount --metrics ADDR` serves it in the Prometheus
//! text format (encoded by the `prometheus-client` crate), and `status --json` shows the same
//! figures from the snapshot each mount writes next to its run file. docs/operations.md lists
//! every metric.
//!
//! The counters are process-wide (one mount per process): the object store's traffic and
//! errors ([`MeteredStore`]), cache hits, lease heartbeats and fencing, catalog errors seen by
//! the mount; the mount's own figures (syncs, bytes written, read amplification) live in its
//! [`crate::fs::Stats`].

use crate::error::Error;
use crate::store::{DynStore, LocalStore, ObjectMeta, ObjectStore, StoreError};
use bytes::Bytes;
use serde::Serialize;
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{LazyLock, Mutex};

/// Process-wide counters.
#[derive(Debug, Default)]
pub struct Global {
    pub uploads: AtomicU64,
    pub uploaded_bytes: AtomicU64,
    pub downloads: AtomicU64,
    pub downloaded_bytes: AtomicU64,
    pub memory_cache_hits: AtomicU64,
    pub memory_cache_misses: AtomicU64,
    /// Background fetches ahead of a forward-going reader.
    pub readahead_fetches: AtomicU64,
    pub lease_heartbeats: AtomicU64,
    pub lease_heartbeat_failures: AtomicU64,
    pub fence_events: AtomicU64,
    /// (backend "catalog" or "store", kind) -> count.
    errors: Mutex<BTreeMap<(&'static str, String), u64>>,
}

pub static GLOBAL: LazyLock<Global> = LazyLock::new(Global::default);

/// Counts `n` on a counter.
pub fn add(c: &AtomicU64, n: u64) {
    c.fetch_add(n, Ordering::Relaxed);
}

/// Counts an error of a backend by its kind.
fn count_error(backend: &'static str, kind: &str) {
    let mut m = GLOBAL.errors.lock().unwrap_or_else(|p| p.into_inner());
    *m.entry((backend, kind.to_string())).or_default() += 1;
}

/// The kind of a store error, as a metric label.
pub fn store_error_kind(e: &StoreError) -> &'static str {
    match e {
        StoreError::NotFound(_) => "not_found",
        StoreError::AlreadyExists(_) => "already_exists",
        StoreError::NoSpace(_) => "no_space",
        StoreError::Io { .. } => "io",
        StoreError::Backend(_) => "backend",
        StoreError::Injected(_) => "injected",
        StoreError::BadKey(_) => "bad_key",
    }
}

/// Counts a catalog error a mount ran into (store errors are counted by [`MeteredStore`]).
pub fn count_catalog_error(e: &crate::catalog::CatalogError) {
    let kind = format!("{e:?}");
    let kind = kind
        .split(|c: char| !c.is_ascii_alphanumeric())
        .next()
        .unwrap_or("other")
        .to_ascii_lowercase();
    count_error("catalog", &kind);
}

/// Counts the catalog part of an error on the way to a FUSE reply.
pub fn count(e: &Error) {
    if let Error::Catalog(c) = e {
        count_catalog_error(c);
    }
}

/// An object store that counts its traffic and errors.
pub struct MeteredStore {
    inner: DynStore,
}

impl MeteredStore {
    pub fn wrap(inner: DynStore) -> DynStore {
        std::sync::Arc::new(MeteredStore { inner })
    }
}

/// Counts the error of a store call; a missing key counts only where data was expected (a
/// probe or a delete of a missing key is an answer, not a failure).
fn counted_as<T>(r: Result<T, StoreError>, missing_is_error: bool) -> Result<T, StoreError> {
    if let Err(e) = &r {
        if missing_is_error || !matches!(e, StoreError::NotFound(_)) {
            count_error("store", store_error_kind(e));
        }
    }
    r
}

fn counted<T>(r: Result<T, StoreError>) -> Result<T, StoreError> {
    counted_as(r, false)
}

/// A read of data: a missing object is an error.
fn counted_read<T>(r: Result<T, StoreError>) -> Result<T, StoreError> {
    counted_as(r, true)
}

#[async_trait::async_trait]
impl ObjectStore for MeteredStore {
    async fn put(&self, key: &str, data: Bytes) -> Result<(), StoreError> {
        let n = data.len() as u64;
        let r = counted(self.inner.put(key, data).await);
        if r.is_ok() {
            add(&GLOBAL.uploads, 1);
            add(&GLOBAL.uploaded_bytes, n);
        }
        r
    }

    async fn put_file(&self, key: &str, path: &Path) -> Result<(), StoreError> {
        let n = std::fs::metadata(path).map(|m| m.len()).unwrap_or(0);
        let r = counted(self.inner.put_file(key, path).await);
        if r.is_ok() {
            add(&GLOBAL.uploads, 1);
            add(&GLOBAL.uploaded_bytes, n);
        }
        r
    }

    async fn get(&self, key: &str) -> Result<Bytes, StoreError> {
        let r = counted_read(self.inner.get(key).await);
        if let Ok(b) = &r {
            add(&GLOBAL.downloads, 1);
            add(&GLOBAL.downloaded_bytes, b.len() as u64);
        }
        r
    }

    async fn get_range(&self, key: &str, start: u64, end: u64) -> Result<Bytes, StoreError> {
        let r = counted_read(self.inner.get_range(key, start, end).await);
        if let Ok(b) = &r {
            add(&GLOBAL.downloads, 1);
            add(&GLOBAL.downloaded_bytes, b.len() as u64);
        }
        r
    }

    async fn get_range_pieces(
        &self,
        key: &str,
        start: u64,
        lens: &[u32],
        piece: &mut (dyn FnMut(usize, Bytes) + Send),
    ) -> Result<(), StoreError> {
        let mut n = 0u64;
        let r = counted_read(
            self.inner
                .get_range_pieces(key, start, lens, &mut |i, b| {
                    n += b.len() as u64;
                    piece(i, b)
                })
                .await,
        );
        if r.is_ok() {
            add(&GLOBAL.downloads, 1);
            add(&GLOBAL.downloaded_bytes, n);
        }
        r
    }

    async fn read_into(&self, key: &str, start: u64, buf: Vec<u8>) -> Result<Vec<u8>, StoreError> {
        let r = counted_read(self.inner.read_into(key, start, buf).await);
        if let Ok(b) = &r {
            add(&GLOBAL.downloads, 1);
            add(&GLOBAL.downloaded_bytes, b.len() as u64);
        }
        r
    }

    async fn head(&self, key: &str) -> Result<ObjectMeta, StoreError> {
        counted(self.inner.head(key).await)
    }

    async fn delete(&self, key: &str) -> Result<(), StoreError> {
        counted(self.inner.delete(key).await)
    }

    async fn list(&self, prefix: &str) -> Result<Vec<ObjectMeta>, StoreError> {
        counted(self.inner.list(prefix).await)
    }

    fn describe(&self) -> String {
        self.inner.describe()
    }

    fn as_local(&self) -> Option<&LocalStore> {
        self.inner.as_local()
    }

    fn read_now(&self, key: &str, start: u64, end: u64) -> Option<Bytes> {
        self.inner.read_now(key, start, end)
    }
}

/// A histogram as upper bounds and per-bucket counts (not cumulative), with sum and count.
#[derive(Debug, Clone, Serialize)]
pub struct Histogram {
    /// (upper bound, observations in this bucket); the last bound is +Inf.
    pub buckets: Vec<(f64, u64)>,
    pub sum: f64,
    pub count: u64,
}

impl prometheus_client::encoding::EncodeMetric for Histogram {
    fn encode(
        &self,
        mut encoder: prometheus_client::encoding::MetricEncoder,
    ) -> Result<(), std::fmt::Error> {
        encoder.encode_histogram::<prometheus_client::encoding::NoLabelSet>(
            self.sum,
            self.count,
            &self.buckets,
            None,
        )
    }

    fn metric_type(&self) -> prometheus_client::metrics::MetricType {
        prometheus_client::metrics::MetricType::Histogram
    }
}

/// Everything a mount reports, at one moment.
#[derive(Debug, Clone, Serialize)]
pub struct Snapshot {
    pub fsync_seconds: Histogram,
    /// Distinct layers one read went through.
    pub read_layers: Histogram,
    pub duckdb_written_bytes: u64,
    /// Bytes DuckDB rewrote with the same contents (left out of the layers).
    pub unchanged_bytes: u64,
    pub stored_bytes: u64,
    pub uploads: u64,
    pub uploaded_bytes: u64,
    pub downloads: u64,
    pub downloaded_bytes: u64,
    pub memory_cache_hits: u64,
    pub memory_cache_misses: u64,
    pub readahead_fetches: u64,
    pub disk_cache_hits: u64,
    pub disk_cache_misses: u64,
    pub dirty_bytes: u64,
    pub pending_layers: u64,
    pub pending_bytes: u64,
    pub commits: u64,
    pub registrations: u64,
    pub lease_heartbeats: u64,
    pub lease_heartbeat_failures: u64,
    pub fence_events: u64,
    /// "backend/kind" -> count.
    pub errors: BTreeMap<String, u64>,
}

/// The process-wide part of a [`Snapshot`]; the mount fills in the rest.
pub fn global_errors() -> BTreeMap<(&'static str, String), u64> {
    GLOBAL
        .errors
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .clone()
}

/// The Prometheus text exposition of `s`.
pub fn prometheus_text(s: &Snapshot) -> String {
    use prometheus_client::metrics::counter::ConstCounter;
    use prometheus_client::metrics::family::Family;
    use prometheus_client::metrics::gauge::ConstGauge;
    use prometheus_client::registry::Registry;
    let mut r = Registry::with_prefix("quackfs");
    r.register(
        "fsync_duration_seconds",
        "Time from fsync to its registration in the catalog",
        s.fsync_seconds.clone(),
    );
    r.register(
        "read_layers",
        "Distinct layers one read went through (read amplification)",
        s.read_layers.clone(),
    );
    let counters: [(&str, &str, u64); 16] = [
        (
            "duckdb_written_bytes",
            "Bytes DuckDB wrote into the mount",
            s.duckdb_written_bytes,
        ),
        (
            "unchanged_bytes",
            "Bytes DuckDB wrote that equal what they replace (not stored again)",
            s.unchanged_bytes,
        ),
        (
            "stored_bytes",
            "Bytes of the layers the mount's syncs produced (catalog or store)",
            s.stored_bytes,
        ),
        ("uploads", "Objects put into the object store", s.uploads),
        (
            "uploaded_bytes",
            "Bytes put into the object store",
            s.uploaded_bytes,
        ),
        ("downloads", "Reads from the object store", s.downloads),
        (
            "downloaded_bytes",
            "Bytes read from the object store",
            s.downloaded_bytes,
        ),
        (
            "memory_cache_hits",
            "Extent reads served by the memory cache",
            s.memory_cache_hits,
        ),
        (
            "memory_cache_misses",
            "Extent reads the memory cache did not hold",
            s.memory_cache_misses,
        ),
        (
            "readahead_fetches",
            "Background fetches of extents ahead of a forward-going reader (remote stores)",
            s.readahead_fetches,
        ),
        (
            "disk_cache_hits",
            "Extent and footer reads served by the disk cache",
            s.disk_cache_hits,
        ),
        (
            "disk_cache_misses",
            "Extent and footer reads the disk cache did not hold",
            s.disk_cache_misses,
        ),
        ("commits", "Checkpoint commits the mount made", s.commits),
        (
            "registrations",
            "Catalog transactions that registered syncs (group commit)",
            s.registrations,
        ),
        (
            "lease_heartbeats",
            "Lease heartbeats renewed",
            s.lease_heartbeats,
        ),
        (
            "lease_heartbeat_failures",
            "Lease heartbeats that failed (retried)",
            s.lease_heartbeat_failures,
        ),
    ];
    for (name, help, v) in counters {
        r.register(name, help, ConstCounter::new(v));
    }
    r.register(
        "fence_events",
        "Times this writer found its lease taken over (fenced)",
        ConstCounter::new(s.fence_events),
    );
    let gauges: [(&str, &str, u64); 3] = [
        ("dirty_bytes", "Written bytes not yet synced", s.dirty_bytes),
        (
            "pending_layers",
            "Synced layers not yet in a commit",
            s.pending_layers,
        ),
        (
            "pending_bytes",
            "Bytes of synced layers not yet in a commit",
            s.pending_bytes,
        ),
    ];
    for (name, help, v) in gauges {
        r.register(name, help, ConstGauge::new(v as i64));
    }
    let errors =
        Family::<Vec<(String, String)>, prometheus_client::metrics::counter::Counter>::default();
    for (k, v) in &s.errors {
        let (backend, kind) = k.split_once('/').unwrap_or(("other", k));
        errors
            .get_or_create(&vec![
                ("backend".to_string(), backend.to_string()),
                ("kind".to_string(), kind.to_string()),
            ])
            .inc_by(*v);
    }
    r.register("errors", "Catalog and store errors by kind", errors);
    let mut out = String::new();
    // Writing into a String cannot fail.
    let _ = prometheus_client::encoding::text::encode(&mut out, &r);
    out
}

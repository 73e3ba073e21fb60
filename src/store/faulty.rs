//! Fault-injecting wrapper around another store, for tests.
//!
//! Injected failures happen before the inner store is called, so a failed put leaves no object.

use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;

use super::{DynStore, ObjectMeta, ObjectStore, StoreError};

/// The operations of [`ObjectStore`], for counting calls.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Op {
    Put,
    PutFile,
    Get,
    GetRange,
    Head,
    Delete,
    List,
}

const OPS: usize = 7;

/// Passes calls through to an inner store, failing them with [`StoreError::Injected`] on demand.
pub struct FaultyStore {
    inner: DynStore,
    counts: [AtomicU64; OPS],
    /// All calls so far.
    calls: AtomicU64,
    /// Puts (`put` and `put_file`) so far.
    puts: AtomicU64,
    /// Number (1-based, over all calls) of the call that fails; 0 for none.
    fail_at: AtomicU64,
    fail_all: AtomicBool,
    /// Puts numbered above this fail.
    puts_allowed: AtomicU64,
    /// Milliseconds every ranged read waits before it is answered (a distant store).
    read_latency_ms: AtomicU64,
    /// Bytes asked for by ranged reads so far.
    range_bytes: AtomicU64,
    /// Set: reads in pieces hand over each piece after the first only when this lets them.
    pieces_gate: Mutex<Option<Arc<tokio::sync::Semaphore>>>,
}

impl FaultyStore {
    /// Wraps `inner`, with no faults armed.
    pub fn new(inner: DynStore) -> Self {
        FaultyStore {
            inner,
            counts: Default::default(),
            calls: AtomicU64::new(0),
            puts: AtomicU64::new(0),
            fail_at: AtomicU64::new(0),
            fail_all: AtomicBool::new(false),
            puts_allowed: AtomicU64::new(u64::MAX),
            read_latency_ms: AtomicU64::new(0),
            range_bytes: AtomicU64::new(0),
            pieces_gate: Mutex::new(None),
        }
    }

    /// From now on a read in pieces (`get_range_pieces`) hands over its first piece at once and
    /// each further one only for a permit of the returned gate (a body on its way).
    pub fn hold_pieces(&self) -> Arc<tokio::sync::Semaphore> {
        let gate = Arc::new(tokio::sync::Semaphore::new(0));
        *self.pieces_gate.lock().unwrap_or_else(|p| p.into_inner()) = Some(gate.clone());
        gate
    }

    /// Every ranged read from now on waits `ms` milliseconds before it is answered.
    pub fn set_read_latency_ms(&self, ms: u64) {
        self.read_latency_ms.store(ms, Ordering::SeqCst);
    }

    /// Bytes asked for by ranged reads (`get_range`) so far.
    pub fn range_bytes(&self) -> u64 {
        self.range_bytes.load(Ordering::SeqCst)
    }

    /// Makes the `n`-th call from now (1-based, counting every operation) fail; `n = 0` disarms.
    pub fn fail_nth(&self, n: u64) {
        let at = if n == 0 {
            0
        } else {
            self.calls.load(Ordering::SeqCst) + n
        };
        self.fail_at.store(at, Ordering::SeqCst);
    }

    /// While on, every call fails.
    pub fn fail_all(&self, on: bool) {
        self.fail_all.store(on, Ordering::SeqCst);
    }

    /// The next `n` puts (`put` or `put_file`) succeed, later ones fail until [`clear_faults`].
    ///
    /// [`clear_faults`]: FaultyStore::clear_faults
    pub fn fail_puts_after(&self, n: u64) {
        let limit = self.puts.load(Ordering::SeqCst).saturating_add(n);
        self.puts_allowed.store(limit, Ordering::SeqCst);
    }

    /// Disarms every fault.
    pub fn clear_faults(&self) {
        self.fail_at.store(0, Ordering::SeqCst);
        self.fail_all.store(false, Ordering::SeqCst);
        self.puts_allowed.store(u64::MAX, Ordering::SeqCst);
    }

    /// Calls of `op` so far, failed ones included.
    pub fn count(&self, op: Op) -> u64 {
        self.counts[op as usize].load(Ordering::SeqCst)
    }

    /// Calls of any kind so far, failed ones included.
    pub fn total_calls(&self) -> u64 {
        self.calls.load(Ordering::SeqCst)
    }

    /// Counts the call and decides whether it fails.
    fn check(&self, op: Op, key: &str) -> Result<(), StoreError> {
        self.counts[op as usize].fetch_add(1, Ordering::SeqCst);
        let call = self.calls.fetch_add(1, Ordering::SeqCst) + 1;
        let mut reason = None;
        if matches!(op, Op::Put | Op::PutFile) {
            let put = self.puts.fetch_add(1, Ordering::SeqCst) + 1;
            if put > self.puts_allowed.load(Ordering::SeqCst) {
                reason = Some(format!("put #{put} after the allowed ones"));
            }
        }
        if call == self.fail_at.load(Ordering::SeqCst) {
            reason = Some(format!("call #{call}"));
        }
        if self.fail_all.load(Ordering::SeqCst) {
            reason = Some("all calls fail".to_string());
        }
        match reason {
            Some(reason) => Err(StoreError::Injected(format!("{op:?} {key:?}: {reason}"))),
            None => Ok(()),
        }
    }
}

#[async_trait::async_trait]
impl ObjectStore for FaultyStore {
    async fn put(&self, key: &str, data: Bytes) -> Result<(), StoreError> {
        self.check(Op::Put, key)?;
        self.inner.put(key, data).await
    }

    async fn put_file(&self, key: &str, path: &Path) -> Result<(), StoreError> {
        self.check(Op::PutFile, key)?;
        self.inner.put_file(key, path).await
    }

    async fn get(&self, key: &str) -> Result<Bytes, StoreError> {
        self.check(Op::Get, key)?;
        self.inner.get(key).await
    }

    async fn get_range(&self, key: &str, start: u64, end: u64) -> Result<Bytes, StoreError> {
        // (The wait comes first: an injected failure is answered as late as a success.)
        let ms = self.read_latency_ms.load(Ordering::SeqCst);
        if ms > 0 {
            tokio::time::sleep(std::time::Duration::from_millis(ms)).await;
        }
        self.check(Op::GetRange, key)?;
        self.range_bytes
            .fetch_add(end.saturating_sub(start), Ordering::SeqCst);
        self.inner.get_range(key, start, end).await
    }

    async fn get_range_pieces(
        &self,
        key: &str,
        start: u64,
        lens: &[u32],
        piece: &mut (dyn FnMut(usize, Bytes) + Send),
    ) -> Result<(), StoreError> {
        let all = self
            .get_range(key, start, start.saturating_add(super::span(lens)))
            .await?;
        let gate = self
            .pieces_gate
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        let mut pieces = Vec::with_capacity(lens.len());
        super::cut_pieces(&all, lens, &mut |i, b| pieces.push((i, b)));
        for (i, b) in pieces {
            if let Some(gate) = gate.as_ref().filter(|_| i > 0) {
                gate.acquire()
                    .await
                    .map_err(|_| StoreError::Injected("the pieces' gate closed".into()))?
                    .forget();
            }
            piece(i, b);
        }
        Ok(())
    }

    async fn read_into(&self, key: &str, start: u64, buf: Vec<u8>) -> Result<Vec<u8>, StoreError> {
        self.check(Op::GetRange, key)?;
        self.inner.read_into(key, start, buf).await
    }

    async fn head(&self, key: &str) -> Result<ObjectMeta, StoreError> {
        self.check(Op::Head, key)?;
        self.inner.head(key).await
    }

    async fn delete(&self, key: &str) -> Result<(), StoreError> {
        self.check(Op::Delete, key)?;
        self.inner.delete(key).await
    }

    async fn list(&self, prefix: &str) -> Result<Vec<ObjectMeta>, StoreError> {
        self.check(Op::List, prefix)?;
        self.inner.list(prefix).await
    }

    fn describe(&self) -> String {
        format!("faulty+{}", self.inner.describe())
    }

    /// Not counted as a call; nothing while any fault is armed or reads are slow.
    fn read_now(&self, key: &str, start: u64, end: u64) -> Option<Bytes> {
        let armed = self.fail_all.load(Ordering::SeqCst)
            || self.fail_at.load(Ordering::SeqCst) != 0
            || self.read_latency_ms.load(Ordering::SeqCst) != 0;
        if armed {
            return None;
        }
        self.inner.read_now(key, start, end)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{testsuite, MemoryStore};
    use std::sync::Arc;

    fn faulty() -> Arc<FaultyStore> {
        Arc::new(FaultyStore::new(Arc::new(MemoryStore::new())))
    }

    fn injected<T: std::fmt::Debug>(r: Result<T, StoreError>) -> bool {
        matches!(r, Err(StoreError::Injected(_)))
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn conformance_without_faults() {
        let store = faulty();
        testsuite::conformance_suite(store.clone()).await;
        assert!(store.count(Op::Put) > 0 && store.count(Op::PutFile) > 0);
    }

    #[tokio::test]
    async fn failed_put_leaves_nothing() {
        let store = faulty();
        store.fail_all(true);
        let err = store.put("k", Bytes::from_static(b"x")).await.unwrap_err();
        assert!(err.is_transient());
        let file = tempfile::NamedTempFile::new().unwrap();
        assert!(injected(store.put_file("f", file.path()).await));
        assert!(file.path().exists(), "a failed put_file keeps the file");
        store.fail_all(false);
        assert!(matches!(store.get("k").await, Err(StoreError::NotFound(_))));
        assert!(matches!(
            store.head("f").await,
            Err(StoreError::NotFound(_))
        ));
        assert!(store.list("").await.unwrap().is_empty());
    }

    #[tokio::test]
    async fn fail_nth_counts_every_call() {
        let store = faulty();
        store.put("a", Bytes::from_static(b"1")).await.unwrap();
        store.fail_nth(3);
        store.get("a").await.unwrap(); // 1
        store.head("a").await.unwrap(); // 2
        assert!(injected(store.list("").await)); // 3
        store.list("").await.unwrap(); // one-shot
        store.fail_nth(1);
        assert!(injected(store.put("b", Bytes::new()).await));
        assert!(matches!(store.get("b").await, Err(StoreError::NotFound(_))));
        store.fail_nth(2);
        store.fail_nth(0);
        store.get("a").await.unwrap();
        store.get("a").await.unwrap();
        assert_eq!(store.count(Op::Put), 2);
        assert_eq!(store.count(Op::Get), 4);
        assert_eq!(store.count(Op::Head), 1);
        assert_eq!(store.count(Op::List), 2);
        assert_eq!(store.count(Op::Delete), 0);
        assert_eq!(store.total_calls(), 9);
    }

    #[tokio::test]
    async fn fail_all_toggles() {
        let store = faulty();
        store.fail_all(true);
        assert!(injected(store.get("a").await));
        assert!(injected(store.delete("a").await));
        store.fail_all(false);
        store.delete("a").await.unwrap();
        store.fail_all(true);
        assert!(injected(store.list("").await));
        store.clear_faults();
        store.list("").await.unwrap();
    }

    #[tokio::test]
    async fn fail_puts_after_n() {
        let store = faulty();
        store.put("before", Bytes::new()).await.unwrap();
        store.fail_puts_after(2);
        store.put("a", Bytes::new()).await.unwrap();
        store.get("a").await.unwrap(); // other operations are unaffected
        store.put("b", Bytes::new()).await.unwrap();
        assert!(injected(store.put("c", Bytes::new()).await));
        assert!(injected(store.put("d", Bytes::new()).await));
        let keys: Vec<String> = store
            .list("")
            .await
            .unwrap()
            .into_iter()
            .map(|m| m.key)
            .collect();
        assert_eq!(keys, ["a", "b", "before"]);
        store.clear_faults();
        store.put("c", Bytes::new()).await.unwrap();
    }
}

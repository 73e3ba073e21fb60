//! In-memory object store, for tests.

use std::collections::btree_map::Entry;
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Mutex, MutexGuard, PoisonError};

use bytes::Bytes;
use chrono::{DateTime, Utc};

use super::{validate_key, ObjectMeta, ObjectStore, StoreError};

/// Objects in a map behind a mutex; contents vanish with the store.
#[derive(Debug, Default)]
pub struct MemoryStore {
    objects: Mutex<BTreeMap<String, (Bytes, DateTime<Utc>)>>,
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    fn objects(&self) -> MutexGuard<'_, BTreeMap<String, (Bytes, DateTime<Utc>)>> {
        // The map is consistent after every operation, so a panic elsewhere cannot corrupt it.
        self.objects.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn insert(&self, key: &str, data: Bytes) -> Result<(), StoreError> {
        match self.objects().entry(key.to_string()) {
            Entry::Occupied(_) => Err(StoreError::AlreadyExists(key.to_string())),
            Entry::Vacant(v) => {
                v.insert((data, Utc::now()));
                Ok(())
            }
        }
    }

    fn lookup(&self, key: &str) -> Result<(Bytes, DateTime<Utc>), StoreError> {
        validate_key(key)?;
        self.objects()
            .get(key)
            .cloned()
            .ok_or_else(|| StoreError::NotFound(key.to_string()))
    }
}

#[async_trait::async_trait]
impl ObjectStore for MemoryStore {
    async fn put(&self, key: &str, data: Bytes) -> Result<(), StoreError> {
        validate_key(key)?;
        self.insert(key, data)
    }

    async fn put_file(&self, key: &str, path: &Path) -> Result<(), StoreError> {
        validate_key(key)?;
        let data = tokio::fs::read(path)
            .await
            .map_err(|e| StoreError::from_io(key, e))?;
        self.insert(key, Bytes::from(data))?;
        if let Err(e) = tokio::fs::remove_file(path).await {
            tracing::warn!(path = %path.display(), error = %e, "cannot remove uploaded file");
        }
        Ok(())
    }

    async fn get(&self, key: &str) -> Result<Bytes, StoreError> {
        Ok(self.lookup(key)?.0)
    }

    async fn get_range(&self, key: &str, start: u64, end: u64) -> Result<Bytes, StoreError> {
        let data = self.lookup(key)?.0;
        let len = data.len() as u64;
        let (start, end) = (start.min(len), end.min(len));
        if start >= end {
            return Ok(Bytes::new());
        }
        // Both bounds are at most data.len(), so they fit in usize.
        Ok(data.slice(start as usize..end as usize))
    }

    async fn head(&self, key: &str) -> Result<ObjectMeta, StoreError> {
        let (data, modified) = self.lookup(key)?;
        Ok(ObjectMeta {
            key: key.to_string(),
            size: data.len() as u64,
            modified,
        })
    }

    async fn delete(&self, key: &str) -> Result<(), StoreError> {
        validate_key(key)?;
        self.objects().remove(key);
        Ok(())
    }

    async fn list(&self, prefix: &str) -> Result<Vec<ObjectMeta>, StoreError> {
        Ok(self
            .objects()
            .range(prefix.to_string()..)
            .take_while(|(k, _)| k.starts_with(prefix))
            .map(|(k, (data, modified))| ObjectMeta {
                key: k.clone(),
                size: data.len() as u64,
                modified: *modified,
            })
            .collect())
    }

    fn describe(&self) -> String {
        "memory://".to_string()
    }

    fn read_now(&self, key: &str, start: u64, end: u64) -> Option<Bytes> {
        let data = self.lookup(key).ok()?.0;
        let (start, end) = (usize::try_from(start).ok()?, usize::try_from(end).ok()?);
        (start <= end && end <= data.len()).then(|| data.slice(start..end))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{testsuite, DynStore};
    use std::sync::Arc;

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn conformance() {
        testsuite::conformance_suite(Arc::new(MemoryStore::new()) as DynStore).await;
    }
}

//! `MemoryBackend`: a `BTreeMap` behind a mutex, for tests and ephemeral objects.

use std::collections::BTreeMap;
use std::sync::{Mutex, MutexGuard};

use async_trait::async_trait;

use crate::backend::{KeyRange, KvBackend, WriteBatch, key_string, list_map};
use crate::error::Result;

/// An in-memory [`KvBackend`]: every call completes at once, never fails, and is atomic
/// because it runs under one lock. Nothing survives the value being dropped.
#[derive(Debug, Default)]
pub struct MemoryBackend {
    map: Mutex<BTreeMap<Box<[u8]>, Vec<u8>>>,
}

impl MemoryBackend {
    /// An empty backend.
    pub fn new() -> MemoryBackend {
        MemoryBackend::default()
    }

    fn lock(&self) -> MutexGuard<'_, BTreeMap<Box<[u8]>, Vec<u8>>> {
        self.map.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// How many keys are stored.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// True when no key is stored.
    pub fn is_empty(&self) -> bool {
        self.lock().is_empty()
    }

    /// Every stored entry, in key order (a synchronous look for tests).
    pub fn entries(&self) -> Vec<(String, Vec<u8>)> {
        self.lock().iter().map(|(k, v)| (key_string(k), v.clone())).collect()
    }
}

fn apply(map: &mut BTreeMap<Box<[u8]>, Vec<u8>>, batch: WriteBatch) {
    if batch.delete_all {
        map.clear();
    }
    for key in batch.deletes {
        map.remove(key.as_bytes());
    }
    for (key, value) in batch.puts {
        map.insert(key.into_bytes().into_boxed_slice(), value);
    }
}

#[async_trait]
impl KvBackend for MemoryBackend {
    async fn get(&self, keys: &[String]) -> Result<Vec<Option<Vec<u8>>>> {
        let map = self.lock();
        Ok(keys.iter().map(|k| map.get(k.as_bytes()).cloned()).collect())
    }

    async fn list(&self, range: &KeyRange) -> Result<Vec<(String, Vec<u8>)>> {
        Ok(list_map(&self.lock(), range, |k, v| Some((key_string(k), v.clone()))))
    }

    async fn delete(&self, keys: Vec<String>) -> Result<usize> {
        let mut map = self.lock();
        Ok(keys.iter().filter(|k| map.remove(k.as_bytes()).is_some()).count())
    }

    async fn write(&self, batch: WriteBatch) -> Result<()> {
        apply(&mut self.lock(), batch);
        Ok(())
    }
}

//! The `KvBackend` trait, its contract, and the batch and range types it speaks.

use std::collections::BTreeMap;
use std::ops::Bound;
use std::sync::Arc;

use async_trait::async_trait;
pub use durable_kv::KeyRange;

use crate::error::Result;

/// One atomic write: an optional `delete_all`, then deletes, then puts, applied in that order.
///
/// A key may appear both in `deletes` and in `puts` (it ends up put); a key put twice ends up
/// with its last value. Keys are plain strings, values opaque bytes (the value codec of
/// `durable_kv::codec` lives above this level).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WriteBatch {
    /// Delete every key first.
    pub delete_all: bool,
    /// Keys to delete (after `delete_all`).
    pub deletes: Vec<String>,
    /// Entries to store (last), replacing earlier values.
    pub puts: Vec<(String, Vec<u8>)>,
}

impl WriteBatch {
    /// True when the batch changes nothing.
    pub fn is_empty(&self) -> bool {
        !self.delete_all && self.deletes.is_empty() && self.puts.is_empty()
    }

    /// Keys the batch names (deletes plus puts, duplicates counted).
    pub fn key_count(&self) -> usize {
        self.deletes.len() + self.puts.len()
    }

    /// Cuts the batch into pieces of at most `max_keys` keys each (a `max_keys` of 0 counts as
    /// 1), in application order: `delete_all` rides on the first piece, then the deletes, then
    /// the puts. Applying the pieces in order inside one transaction has the effect of the
    /// whole batch; a backend whose calls carry a key limit uses this to stay atomic.
    pub fn split(&self, max_keys: usize) -> Vec<WriteBatch> {
        let max = max_keys.max(1);
        let mut pieces: Vec<WriteBatch> = Vec::new();
        for chunk in self.deletes.chunks(max) {
            pieces.push(WriteBatch { deletes: chunk.to_vec(), ..WriteBatch::default() });
        }
        for chunk in self.puts.chunks(max) {
            pieces.push(WriteBatch { puts: chunk.to_vec(), ..WriteBatch::default() });
        }
        if self.delete_all {
            match pieces.first_mut() {
                Some(first) => first.delete_all = true,
                None => pieces.push(WriteBatch { delete_all: true, ..WriteBatch::default() }),
            }
        }
        pieces
    }
}

/// The storage underneath a legacy (KV-only) object: an ordered map from string keys to
/// opaque bytes, reached asynchronously.
///
/// # Contract
///
/// Every implementation keeps these promises; `testing::run_suite` (the `testing` feature)
/// checks them.
///
/// - **Order.** Keys compare by their UTF-8 bytes (`"Z" < "z" < "é" < "\u{FFFF}" < "😀"`,
///   `"a" < "a\0" < "ab"`); the empty string is a valid key.
/// - **Atomicity.** Every writing call ([`put`](KvBackend::put), [`delete`](KvBackend::delete),
///   [`write`](KvBackend::write), [`delete_all`](KvBackend::delete_all)) is one batch that is
///   applied all or nothing: when it returns `Err`, none of it is applied (and none of it will
///   be); when it returns `Ok`, all of it is. A concurrent reader never sees part of a batch.
/// - **Durability.** When a writing call returns `Ok`, its batch survives a crash of the
///   process (for a durable backend; [`MemoryBackend`](crate::MemoryBackend) is not durable).
///   After a crash during a call, the batch is either wholly applied or not at all.
/// - **Errors.** A failed read changes nothing. A failed call may be retried: every batch is
///   idempotent (puts set, deletes remove), so applying it twice has the effect of once.
/// - **Per-call key limit.** [`max_keys_per_call`](KvBackend::max_keys_per_call) bounds the
///   keys of one `get`, `put` or `delete`; callers split larger requests. `write` and
///   `delete_all` have no such bound: a backend whose transport has one splits the batch itself
///   (see [`WriteBatch::split`]) inside one transaction, so a `write` stays atomic at any size.
/// - **Concurrency.** Calls may overlap; each behaves as if it ran alone at some instant
///   between its start and its end.
#[async_trait]
pub trait KvBackend: Send + Sync {
    /// The values of `keys`, one per key in request order (duplicates repeated, `None` for a
    /// missing key). An empty request is answered with an empty vector. On error nothing is
    /// returned and nothing changes.
    async fn get(&self, keys: &[String]) -> Result<Vec<Option<Vec<u8>>>>;

    /// The entries with `range.start <= key < range.end` (no end: to the last key), ascending
    /// by key bytes or descending when `range.reverse`, at most `range.limit` of them (taken in
    /// that direction, so a reverse list with a limit returns the largest keys). A range whose
    /// end is not above its start is empty. On error nothing is returned and nothing changes.
    async fn list(&self, range: &KeyRange) -> Result<Vec<(String, Vec<u8>)>>;

    /// Stores `entries` as one atomic batch (a repeated key keeps its last value). The default
    /// sends a [`WriteBatch`] of puts through [`write`](KvBackend::write).
    async fn put(&self, entries: Vec<(String, Vec<u8>)>) -> Result<()> {
        self.write(WriteBatch { puts: entries, ..WriteBatch::default() }).await
    }

    /// Deletes `keys` as one atomic batch and returns how many of them existed (a repeated key
    /// counts once). On error nothing is deleted.
    async fn delete(&self, keys: Vec<String>) -> Result<usize>;

    /// Applies `batch` atomically, whatever its size: `delete_all` first, then the deletes,
    /// then the puts. An empty batch succeeds and changes nothing.
    async fn write(&self, batch: WriteBatch) -> Result<()>;

    /// Deletes every key, atomically. The default sends a `delete_all` batch through
    /// [`write`](KvBackend::write).
    async fn delete_all(&self) -> Result<()> {
        self.write(WriteBatch { delete_all: true, ..WriteBatch::default() }).await
    }

    /// The most keys one `get`, `put` or `delete` call may carry, or `None` for no limit
    /// (the default). The production storage service takes 128.
    fn max_keys_per_call(&self) -> Option<usize> {
        None
    }
}

#[async_trait]
impl<B: KvBackend + ?Sized> KvBackend for Arc<B> {
    async fn get(&self, keys: &[String]) -> Result<Vec<Option<Vec<u8>>>> {
        (**self).get(keys).await
    }
    async fn list(&self, range: &KeyRange) -> Result<Vec<(String, Vec<u8>)>> {
        (**self).list(range).await
    }
    async fn put(&self, entries: Vec<(String, Vec<u8>)>) -> Result<()> {
        (**self).put(entries).await
    }
    async fn delete(&self, keys: Vec<String>) -> Result<usize> {
        (**self).delete(keys).await
    }
    async fn write(&self, batch: WriteBatch) -> Result<()> {
        (**self).write(batch).await
    }
    async fn delete_all(&self) -> Result<()> {
        (**self).delete_all().await
    }
    fn max_keys_per_call(&self) -> Option<usize> {
        (**self).max_keys_per_call()
    }
}

/// True when `key` lies inside `range`'s bounds (the limit and direction aside).
pub fn range_contains(range: &KeyRange, key: &[u8]) -> bool {
    key >= range.start.as_slice() && range.end.as_deref().is_none_or(|end| key < end)
}

/// Lower and upper bounds over byte keys.
pub(crate) type Bounds<'a> = (Bound<&'a [u8]>, Bound<&'a [u8]>);

/// The bounds of `range` for `BTreeMap::range` over byte keys, or `None` when the range is
/// empty (its end is not above its start), which `BTreeMap::range` would refuse.
pub(crate) fn btree_bounds(range: &KeyRange) -> Option<Bounds<'_>> {
    match range.end.as_deref() {
        Some(end) if end <= range.start.as_slice() => None,
        Some(end) => Some((Bound::Included(range.start.as_slice()), Bound::Excluded(end))),
        None => Some((Bound::Included(range.start.as_slice()), Bound::Unbounded)),
    }
}

/// The entries of `map` that `range` selects, in its order and up to its limit.
pub(crate) fn list_map<V, T>(
    map: &BTreeMap<Box<[u8]>, V>,
    range: &KeyRange,
    mut f: impl FnMut(&[u8], &V) -> Option<T>,
) -> Vec<T> {
    let Some(bounds) = btree_bounds(range) else { return Vec::new() };
    let limit = range.limit.map_or(usize::MAX, |l| usize::try_from(l).unwrap_or(usize::MAX));
    let iter = map.range::<[u8], _>(bounds);
    let mut out = Vec::new();
    let mut push = |k: &[u8], v: &V| {
        if out.len() >= limit {
            return false;
        }
        if let Some(t) = f(k, v) {
            out.push(t);
        }
        true
    };
    if range.reverse {
        for (k, v) in iter.rev() {
            if !push(k, v) {
                break;
            }
        }
    } else {
        for (k, v) in iter {
            if !push(k, v) {
                break;
            }
        }
    }
    out
}

/// A key's bytes as a `String`. Keys enter as `String`s, so the bytes are valid UTF-8 and the
/// conversion is lossless.
pub(crate) fn key_string(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

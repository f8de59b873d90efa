//! The prepared-statement cache: query text to statement, LRU by total text size.
//!
//! A statement is checked out while an execution uses it and comes back by its slot number,
//! so a cached `exec` hashes its query text once, not twice.

use std::collections::HashMap;
use std::hash::BuildHasherDefault;

use crate::raw::RawStmt;

/// FNV-1a: the cache hashes query text on every `exec`; SipHash's DoS resistance buys
/// nothing here (the keys are the object's own queries) and costs more per byte.
#[derive(Default, Clone, Copy)]
struct Fnv(u64);

impl std::hash::Hasher for Fnv {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        let mut h = if self.0 == 0 { 0xcbf2_9ce4_8422_2325 } else { self.0 };
        for &b in bytes {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
        self.0 = h;
    }
}

/// Where a statement goes when its execution ends.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Home<K> {
    /// Not cacheable (a statement of a multi-statement query): finalize it.
    Uncached,
    /// Checked out of this cache slot: put it back there.
    Cached(usize),
    /// Prepared for this single-statement query text: cache it under the text.
    Fresh(K),
}

impl Home<&str> {
    /// The same home, owning its text (for a statement held by a cursor).
    pub(crate) fn to_owned(self) -> Home<Box<str>> {
        match self {
            Home::Uncached => Home::Uncached,
            Home::Cached(slot) => Home::Cached(slot),
            Home::Fresh(text) => Home::Fresh(text.into()),
        }
    }
}

impl Home<Box<str>> {
    /// The same home, borrowing its text.
    pub(crate) fn as_ref(&self) -> Home<&str> {
        match self {
            Home::Uncached => Home::Uncached,
            Home::Cached(slot) => Home::Cached(*slot),
            Home::Fresh(text) => Home::Fresh(text),
        }
    }
}

struct Entry {
    text: Box<str>,
    /// `None` while checked out.
    stmt: Option<RawStmt>,
    last_used: u64,
}

/// A statement of the project's own SQL, held prepared across calls (see
/// [`Internal::held`](crate::Internal::held)).
pub(crate) struct HeldEntry {
    pub(crate) text: &'static str,
    pub(crate) stmt: RawStmt,
    /// False while a [`Held`](crate::Held) uses the statement; a handle that was never
    /// dropped (leaked) leaves it false, and the next use resets the statement first.
    pub(crate) clean: bool,
}

/// The cache itself. Entries live in a slab; the map finds a slot by text.
pub(crate) struct StmtCache {
    by_text: HashMap<Box<str>, usize, BuildHasherDefault<Fnv>>,
    entries: Vec<Option<Entry>>,
    free: Vec<usize>,
    bytes: usize,
    capacity: usize,
    tick: u64,
    /// Held statements, apart from the entries: they are prepared in trusted mode, so user
    /// SQL with the same text must never find them.
    held: Vec<HeldEntry>,
}

impl StmtCache {
    /// A cache holding at most `capacity` bytes of query text.
    pub(crate) fn new(capacity: usize) -> StmtCache {
        StmtCache {
            by_text: HashMap::default(),
            entries: Vec::new(),
            free: Vec::new(),
            bytes: 0,
            capacity,
            tick: 0,
            held: Vec::new(),
        }
    }

    /// Takes the cached statement for `text`, if it is there and not in use.
    pub(crate) fn checkout(&mut self, text: &str) -> Option<(usize, RawStmt)> {
        let slot = *self.by_text.get(text)?;
        self.tick += 1;
        let entry = self.entries[slot].as_mut()?;
        entry.last_used = self.tick;
        Some((slot, entry.stmt.take()?))
    }

    /// Takes back a statement whose execution ended (already reset), or finalizes it.
    pub(crate) fn give_back(&mut self, stmt: RawStmt, home: Home<&str>) {
        match home {
            Home::Uncached => stmt.finalize(),
            Home::Cached(slot) => match self.entries.get_mut(slot).and_then(Option::as_mut) {
                Some(entry) if entry.stmt.is_none() => entry.stmt = Some(stmt),
                _ => stmt.finalize(),
            },
            Home::Fresh(text) => {
                // Another execution of the same text may have cached its statement meanwhile.
                if text.len() > self.capacity || self.by_text.contains_key(text) {
                    stmt.finalize();
                    return;
                }
                self.tick += 1;
                let entry = Entry { text: text.into(), stmt: Some(stmt), last_used: self.tick };
                let slot = match self.free.pop() {
                    Some(slot) => {
                        self.entries[slot] = Some(entry);
                        slot
                    }
                    None => {
                        self.entries.push(Some(entry));
                        self.entries.len() - 1
                    }
                };
                self.by_text.insert(text.into(), slot);
                self.bytes += text.len();
                self.evict();
            }
        }
    }

    /// Drops least recently used statements that are not checked out until the text fits.
    fn evict(&mut self) {
        while self.bytes > self.capacity {
            let victim = self
                .entries
                .iter()
                .enumerate()
                .filter_map(|(slot, e)| e.as_ref().filter(|e| e.stmt.is_some()).map(|e| (slot, e)))
                .min_by_key(|(_, e)| e.last_used)
                .map(|(slot, _)| slot);
            let Some(slot) = victim else { break };
            if let Some(entry) = self.entries[slot].take() {
                self.by_text.remove(&entry.text);
                self.bytes -= entry.text.len();
                self.free.push(slot);
                if let Some(stmt) = entry.stmt {
                    stmt.finalize();
                }
            }
        }
    }

    /// Where the held statement for `text` is, if it was prepared before.
    pub(crate) fn held_index(&self, text: &str) -> Option<usize> {
        // A handful of entries: a scan beats hashing. Same constant, usually same address.
        self.held.iter().position(|e| std::ptr::eq(e.text, text) || e.text == text)
    }

    /// Holds `stmt`, prepared from `text`, from now until [`clear`](StmtCache::clear).
    pub(crate) fn hold(&mut self, text: &'static str, stmt: RawStmt) -> usize {
        self.held.push(HeldEntry { text, stmt, clean: true });
        self.held.len() - 1
    }

    /// The held statement at `index` (from `held_index` or `hold`).
    pub(crate) fn held_at(&mut self, index: usize) -> &mut HeldEntry {
        &mut self.held[index]
    }

    /// Finalizes every cached and held statement and forgets them all.
    pub(crate) fn clear(&mut self) {
        for entry in self.held.drain(..) {
            entry.stmt.finalize();
        }
        for entry in self.entries.drain(..).flatten() {
            if let Some(stmt) = entry.stmt {
                stmt.finalize();
            }
        }
        self.by_text.clear();
        self.free.clear();
        self.bytes = 0;
    }
}

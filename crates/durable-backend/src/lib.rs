//! The legacy (KV-only) storage backend of durable-storage: the [`KvBackend`] trait and its
//! contract, two implementations, a fault-injecting wrapper, a generic test suite and the
//! runtime's write-behind cache.
//!
//! - [`KvBackend`] is the store under a legacy object: string keys ordered by their UTF-8
//!   bytes, opaque byte values, batched gets, atomic write batches, ranged lists. Its contract
//!   (ordering, atomicity, durability, behaviour on error and crash) is written on the trait.
//! - [`MemoryBackend`] keeps the map in memory (tests, ephemeral objects); [`SqliteBackend`]
//!   keeps it in one durable SQLite file per object, in the same `_cf_KV` table as the SQLite
//!   KV API.
//! - Test doubles, with the `testing` feature: `FaultyBackend` wraps any backend to inject
//!   errors, latency and crashes, and records the calls that reach it; `testing::run_suite`
//!   checks every point of the contract against any implementation.
//! - [`cache::WriteBehindCache`] is the runtime's write-behind, read-through cache: reads it
//!   can answer need no I/O, writes land in it at once, and a flush sends everything pending
//!   as one atomic batch. The turn layer above decides when to flush.
//!
//! Values are opaque bytes here; `durable_kv::codec` encodes them above this level.
//!
//! ```
//! use durable_backend::cache::{ReadOptions, WriteBehindCache, WriteOptions, Lookup};
//! use durable_backend::{KvBackend, MemoryBackend};
//!
//! # tokio::runtime::Builder::new_current_thread().build()?.block_on(async {
//! let backend = MemoryBackend::new();
//! let cache = WriteBehindCache::default();
//!
//! // Writes land in the cache at once; reads of them need no I/O.
//! let value = durable_kv::codec::encode(&"hello")?;
//! cache.put("greeting", value.clone(), WriteOptions::default())?;
//! let keys = ["greeting".to_string()];
//! assert!(matches!(cache.lookup(&keys, ReadOptions::default())?, Lookup::Ready(_)));
//!
//! // When the turn ends, everything pending goes out as one atomic batch.
//! let report = cache.flush(&backend).await?;
//! assert_eq!(report.puts, 1);
//! assert_eq!(backend.get(&keys).await?, vec![Some(value)]);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! # })?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! Architecture Invariant: this crate knows nothing of turns, gates or tokio. The cache is a
//! data structure with async reads and flushes over `&dyn KvBackend`; when to flush and what
//! a failure does to the object belong to the turn layer (`durable-txn`).

#![deny(missing_docs)]
#![forbid(unsafe_code)]

mod backend;
pub mod cache;
mod error;
#[cfg(feature = "testing")]
mod faulty;
mod memory;
mod sqlite;
#[cfg(feature = "testing")]
pub mod testing;

pub use backend::{KeyRange, KvBackend, WriteBatch, range_contains};
pub use error::{Error, Result};
#[cfg(feature = "testing")]
pub use faulty::{Call, Delay, FaultyBackend, Op};
pub use memory::MemoryBackend;
pub use sqlite::SqliteBackend;

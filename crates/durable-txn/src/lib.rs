//! Turns, write coalescing, gates and transactions: the layer that makes an object's storage
//! behave as the Durable Objects runtime's does.
//!
//! [`Storage`] is one object's storage over its SQLite database: the SQL API, the sync KV
//! API, the async KV API (calls take effect when made; the returned [`Op`] only reports the
//! outcome), `transaction_sync`, async `transaction`, alarms, `sync` and `delete_all`.
//! Every write between two commit points is one atomic transaction.
//!
//! [`Object`] runs an object: it delivers events to the object's code, one poll of an
//! event's future being one *turn*; the turn's writes commit when the turn ends, results
//! wait behind the [`OutputGate`] until their commits are durable, and the input gate keeps
//! other events out while the object waits on storage or runs a critical section.
//!
//! ```
//! use durable_txn::Storage;
//!
//! // Without the object runtime, commit points are explicit.
//! let storage = Storage::open_in_memory()?;
//! storage.put("greeting", "hello");          // takes effect now
//! storage.sql()?.exec("CREATE TABLE t (x)", &[])?;   // the same transaction
//! storage.sync().now().ok().unwrap()?;               // one commit for both
//! let value: Option<String> = storage.get("greeting").now().ok().unwrap()?;
//! assert_eq!(value.as_deref(), Some("hello"));
//! # Ok::<(), durable_txn::Error>(())
//! ```
//!
//! Architecture Invariant: this crate knows nothing of archives or the facade. It sees the
//! SQL layer's implicit transaction and decides when it commits.

#![deny(missing_docs)]
#![forbid(unsafe_code)]

mod alarm;
mod block;
mod clock;
mod durability;
mod error;
mod gate;
mod legacy;
mod op;
mod recovery;
mod runtime;
mod storage;
mod target;
mod transaction;
mod turn;

pub use alarm::AlarmTime;
pub use block::block_on;
pub use clock::{Clock, Sleep, SystemClock};
pub use durability::Replicated;
pub use error::{Error, Result};
pub use gate::{OutputGate, OutputLock};
pub use op::Op;
pub use recovery::Recovery;
pub use runtime::{
    ALARM_FIRST_RETRY_MS, ALARM_MAX_RETRIES, Actor, AlarmInfo, CRITICAL_SECTION_TIMEOUT_MESSAGE,
    Context, HandlerError, Object, ObjectOptions, Opener,
};
pub use storage::{AlarmListener, Compatibility, GetOptions, PutOptions, Storage, TurnEnd};
pub use transaction::Transaction;
pub use turn::{InputLock, in_turn, input_lock};

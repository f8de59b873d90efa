//! Integration tests of durable-txn: one test binary, one module per area.
//!
//! Behaviours come from `shared/spec/sqlite-storage.md` sections 5 to 7 and
//! `shared/spec/legacy-kv-and-gates.md` section 2 (cited by section).

#[path = "txn/support.rs"]
mod support;

#[path = "txn/alarm_listener.rs"]
mod alarm_listener;
#[path = "txn/alarms.rs"]
mod alarms;
#[path = "txn/crash.rs"]
mod crash;
#[path = "txn/gates.rs"]
mod gates;
#[path = "txn/group_commit.rs"]
mod group_commit;
#[path = "txn/legacy.rs"]
mod legacy;
#[path = "txn/runtime.rs"]
mod runtime;
#[path = "txn/storage.rs"]
mod storage;
#[path = "txn/transaction.rs"]
mod transaction;
#[path = "txn/turns.rs"]
mod turns;

//! Integration tests of durable-storage: one test binary, one module per area.
//!
//! Issue 4 (the facade: namespaces, handles, backends) and issue 11 (the namespace-wide
//! alarm index and the scheduler).

#[path = "storage/support.rs"]
mod support;

#[path = "storage/alarms.rs"]
mod alarms;
#[path = "storage/archiving.rs"]
mod archiving;
#[path = "storage/backend.rs"]
mod backend;
#[path = "storage/counter.rs"]
mod counter;
#[path = "storage/errors.rs"]
mod errors;
#[path = "storage/faults.rs"]
mod faults;
#[path = "../../durable-pitr/tests/pitr/faulty_store.rs"]
mod faulty_store;
#[path = "storage/leases.rs"]
mod leases;
#[path = "storage/names.rs"]
mod names;
#[path = "storage/namespace.rs"]
mod namespace;
#[path = "storage/opening.rs"]
mod opening;
#[path = "storage/pitr.rs"]
mod pitr;
#[path = "storage/replication.rs"]
mod replication;
#[cfg(feature = "s3-tests")]
#[path = "storage/s3.rs"]
mod s3;

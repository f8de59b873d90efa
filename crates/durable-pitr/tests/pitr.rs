//! Integration tests of durable-pitr: one binary, one module per concern.

mod pitr {
    pub mod support;

    mod bookmarks;
    mod check;
    mod cluster;
    mod crash;
    mod faults;
    pub mod faulty_store;
    mod group;
    mod history;
    mod leases;
    mod restore;
    mod retention;
    mod shared_log;
    mod stores;
    mod time;
}

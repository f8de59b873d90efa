//! Integration tests of durable-pitr.

//! Integration tests of the `durable` command: each runs the built binary on a temporary
//! data directory. One test binary; the modules live in `tests/cli/`.

#[path = "cli/support.rs"]
mod support;

#[path = "cli/archive_url.rs"]
mod archive_url;
#[path = "cli/env.rs"]
mod env;
#[path = "cli/errors.rs"]
mod errors;
#[path = "cli/history.rs"]
mod history;
#[path = "cli/kv.rs"]
mod kv;
#[path = "cli/leases.rs"]
mod leases;
#[path = "cli/objects.rs"]
mod objects;
#[path = "cli/pitr.rs"]
mod pitr;
#[cfg(feature = "s3-tests")]
#[path = "cli/s3.rs"]
mod s3;
#[path = "cli/shell.rs"]
mod shell;
#[path = "cli/sql.rs"]
mod sql;
#[path = "cli/tour.rs"]
mod tour;

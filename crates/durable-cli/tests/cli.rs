//! Integration tests of the `durable` command: each runs the built binary on a temporary
//! data directory. One test binary; the modules live in `tests/cli/`.

#[path = "cli/support.rs"]
mod support;

#[path = "cli/errors.rs"]
mod errors;
#[path = "cli/kv.rs"]
mod kv;
#[path = "cli/objects.rs"]
mod objects;
#[path = "cli/pitr.rs"]
mod pitr;
#[path = "cli/shell.rs"]
mod shell;
#[path = "cli/sql.rs"]
mod sql;
#[path = "cli/tour.rs"]
mod tour;

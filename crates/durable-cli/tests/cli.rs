//! Integration tests of the `durable` command: each runs the built binary on a temporary
//! data directory. One test binary; the modules live in `tests/cli/`.

#[path = "cli/support.rs"]
mod support;

// The `--archive` URL parser, compiled into the test binary to be tested directly.
#[path = "../src/url.rs"]
#[allow(dead_code)]
mod url;

#[path = "cli/archive_url.rs"]
mod archive_url;
#[path = "cli/errors.rs"]
mod errors;
#[path = "cli/history.rs"]
mod history;
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

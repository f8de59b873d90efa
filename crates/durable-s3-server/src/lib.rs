//! An S3-compatible server for tests: [s3s-fs](https://crates.io/crates/s3s-fs) over a local
//! folder, on 127.0.0.1 only, requiring requests signed with [`ACCESS_KEY`] and
//! [`SECRET_KEY`]. s3s-fs implements S3's conditional writes (`If-None-Match: *` answers 412),
//! which the archive's single-writer leases and the shared log's fences rely on; the server
//! makes them atomic (s3s-fs alone lets racing creates of one key all succeed) by writing
//! each key under a lock of its own.
//!
//! Each sub-folder of the server's folder is a bucket: `S3Server::create_bucket` makes one.
//! The tests of durable-pitr, durable-storage and durable-cli and the failover test
//! (`cargo xtask failover`) start it in their own process (`S3Server::start`); the
//! `durable-s3-server` binary prints `listening on 127.0.0.1:PORT` and serves until its
//! standard input closes.
//!
//! Everything is behind the `server` feature, so the crate builds empty in ordinary test runs.
//!
//! ```
//! # #[cfg(feature = "server")]
//! # {
//! let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
//! rt.block_on(async {
//!     let dir = std::env::temp_dir().join(format!("s3-doc-{}", std::process::id()));
//!     let server = durable_s3_server::S3Server::start(&dir).await.unwrap();
//!     server.create_bucket("archive").unwrap();
//!     assert!(server.endpoint().starts_with("http://127.0.0.1:"));
//!     std::fs::remove_dir_all(&dir).unwrap();
//! });
//! # }
//! ```
#![deny(missing_docs)]
#![forbid(unsafe_code)]

/// The access key the server accepts.
pub const ACCESS_KEY: &str = "test-key";
/// The secret key the server accepts.
pub const SECRET_KEY: &str = "test-secret";

#[cfg(feature = "server")]
mod server;
#[cfg(feature = "server")]
pub use server::S3Server;

/// The environment variables object_store's S3 client reads for a server at `endpoint`
/// (`http://127.0.0.1:PORT`): the keys, the region, the endpoint, and plain HTTP allowed.
/// Give them to a child process that opens `s3://bucket/prefix`.
pub fn client_env(endpoint: &str) -> Vec<(&'static str, String)> {
    vec![
        ("AWS_ACCESS_KEY_ID", ACCESS_KEY.into()),
        ("AWS_SECRET_ACCESS_KEY", SECRET_KEY.into()),
        ("AWS_REGION", "us-east-1".into()),
        ("AWS_ENDPOINT", endpoint.into()),
        ("AWS_ALLOW_HTTP", "true".into()),
    ]
}

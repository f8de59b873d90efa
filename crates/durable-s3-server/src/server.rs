//! The server: s3s-fs behind hyper on a loopback listener, one task per connection.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto::Builder as ConnBuilder;

use crate::{ACCESS_KEY, SECRET_KEY};

/// A running server. It serves on the tokio runtime that started it until that runtime stops
/// or the server is dropped.
#[derive(Debug)]
pub struct S3Server {
    addr: SocketAddr,
    dir: PathBuf,
    task: tokio::task::JoinHandle<()>,
}

impl S3Server {
    /// Starts a server over `dir` (created if missing) on 127.0.0.1 at a free port.
    pub async fn start(dir: &Path) -> std::io::Result<S3Server> {
        S3Server::start_at(dir, 0).await
    }

    /// Starts a server over `dir` on 127.0.0.1:`port` (0: a free port).
    pub async fn start_at(dir: &Path, port: u16) -> std::io::Result<S3Server> {
        std::fs::create_dir_all(dir)?;
        let fs =
            s3s_fs::FileSystem::new(dir).map_err(|e| std::io::Error::other(format!("{e:?}")))?;
        let mut builder = s3s::service::S3ServiceBuilder::new(fs);
        builder.set_auth(s3s::auth::SimpleAuth::from_single(ACCESS_KEY, SECRET_KEY));
        let service = builder.build();
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await?;
        let addr = listener.local_addr()?;
        let task = tokio::spawn(async move {
            loop {
                let Ok((socket, _)) = listener.accept().await else { continue };
                let service = service.clone();
                tokio::spawn(async move {
                    let _ = ConnBuilder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(socket), service)
                        .await;
                });
            }
        });
        Ok(S3Server { addr, dir: dir.to_path_buf(), task })
    }

    /// The address it listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:PORT`.
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Creates the bucket `name` (a folder of the server's folder).
    pub fn create_bucket(&self, name: &str) -> std::io::Result<()> {
        std::fs::create_dir_all(self.dir.join(name))
    }
}

impl Drop for S3Server {
    fn drop(&mut self) {
        self.task.abort();
    }
}

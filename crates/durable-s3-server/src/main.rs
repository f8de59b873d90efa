//! `durable-s3-server DIR [PORT]`: serves DIR (each sub-folder a bucket; `archive` is created)
//! on 127.0.0.1, prints `listening on 127.0.0.1:PORT`, and stops when its standard input
//! closes, so a test harness that dies takes the server with it.

use std::io::Read;
use std::path::PathBuf;

fn main() -> std::process::ExitCode {
    let mut args = std::env::args().skip(1);
    let Some(dir) = args.next().map(PathBuf::from) else {
        eprintln!("usage: durable-s3-server DIR [PORT]");
        return std::process::ExitCode::FAILURE;
    };
    let port: u16 = match args.next().map(|p| p.parse()) {
        None => 0,
        Some(Ok(p)) => p,
        Some(Err(e)) => {
            eprintln!("durable-s3-server: bad port: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("durable-s3-server: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let server = match runtime.block_on(durable_s3_server::S3Server::start_at(&dir, port)) {
        Ok(server) => server,
        Err(e) => {
            eprintln!("durable-s3-server: {}: {e}", dir.display());
            return std::process::ExitCode::FAILURE;
        }
    };
    if let Err(e) = server.create_bucket("archive") {
        eprintln!("durable-s3-server: {e}");
        return std::process::ExitCode::FAILURE;
    }
    #[allow(clippy::print_stdout)]
    {
        println!("listening on {}", server.addr());
    }
    // Serve until stdin closes (the parent exits or closes its end).
    let mut sink = Vec::new();
    let _ = std::io::stdin().read_to_end(&mut sink);
    drop(server);
    runtime.shutdown_background();
    std::process::ExitCode::SUCCESS
}

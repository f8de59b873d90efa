//! `durable --archive s3://bucket/prefix ...` against an S3-compatible server on 127.0.0.1
//! (s3s-fs, signed requests), with the settings in `AWS_*` variables as a user gives them.

use durable_s3_server::{S3Server, client_env};

use crate::support::Data;

struct Server {
    server: S3Server,
    _runtime: tokio::runtime::Runtime,
    _dir: tempfile::TempDir,
}

fn server() -> Server {
    let runtime =
        tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let server = runtime.block_on(S3Server::start(dir.path())).unwrap();
    server.create_bucket("bucket").unwrap();
    Server { server, _runtime: runtime, _dir: dir }
}

fn data(s3: &Server) -> Data {
    Data::new().with_env(client_env(&s3.server.endpoint()))
}

const URL: &str = "s3://bucket/some/prefix";

#[test]
fn sql_and_kv_run_on_an_s3_archive_and_another_machine_reads_them() {
    let s3 = server();
    let first = data(&s3);
    first.ok(&["--archive", URL, "sql", "room", "CREATE TABLE t(x)"]);
    first.ok(&["--archive", URL, "sql", "room", "INSERT INTO t VALUES (7)"]);
    first.ok(&["--archive", URL, "kv", "put", "room", "k", "\"v\""]);
    let status = first.json(&["--archive", URL, "archive", "status", "room"]);
    assert!(status[0]["seq"].as_u64().unwrap() >= 3, "{status:?}");
    first.ok(&["--archive", URL, "archive", "prune"]);
    // Another data directory, the same archive: the object is rebuilt from S3.
    let second = data(&s3);
    let rows = second.json(&["--archive", URL, "sql", "room", "SELECT x FROM t"]);
    assert_eq!(rows["rows"], serde_json::json!([{"x": 7}]));
    assert_eq!(second.ok(&["--archive", URL, "kv", "get", "room", "k"]).trim(), "\"v\"");
    // Bookmarks, history and verification read the S3 archive too.
    let bookmark = second.ok(&["--archive", URL, "bookmark", "room"]);
    assert_eq!(bookmark.trim().len(), 55);
    let verify = second.json(&["--archive", URL, "archive", "verify", "room"]);
    assert!(verify.to_string().contains("\"ok\""), "{verify}");
}

#[test]
fn wrong_credentials_fail_with_the_retries_visible() {
    let s3 = server();
    let data = Data::new().with_env(
        client_env(&s3.server.endpoint())
            .into_iter()
            .map(|(k, v)| (k, if k == "AWS_SECRET_ACCESS_KEY" { "wrong".into() } else { v })),
    );
    // The library's retries are warnings: on stderr by default, before the one-line error.
    let run = data.run(&["--archive", URL, "sql", "room", "SELECT 1"]);
    assert_ne!(run.code, 0, "{run:?}");
    assert!(run.stderr.contains("WARN") && run.stderr.contains("retrying"), "{run:?}");
    let last = run.stderr.lines().last().unwrap();
    assert!(last.starts_with("durable: ") && last.contains("object store"), "{run:?}");
    // With -q only the error is left.
    let err = data.fails(&["-q", "--archive", URL, "sql", "room", "SELECT 1"]);
    assert!(err.contains("object store"), "{err}");
}

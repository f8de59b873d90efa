//! `--archive URL`: folders, `file://` and object store URLs through object_store's parsing;
//! what a build cannot reach is refused in one line naming the URL. Nothing here touches the
//! network.

use crate::support::Data;

#[test]
fn a_folder_and_a_file_url_are_the_same_archive() {
    let data = Data::new();
    let archive = data.root().join("elsewhere");
    let folder = archive.to_str().unwrap();
    data.ok(&["--archive", folder, "sql", "o", "CREATE TABLE t(x)"]);
    assert!(archive.join("o.sqlite").join("meta").exists(), "history went to {folder}");
    let url = format!("file://{folder}");
    let status = data.json(&["--archive", &url, "archive", "status", "o"]);
    assert!(status[0]["seq"].as_u64().unwrap() >= 1, "{status:?}");
}

#[test]
fn unknown_schemes_and_bad_urls_are_refused_in_one_line() {
    let data = Data::new();
    let err = data.fails(&["--archive", "ftp://host/x", "objects"]);
    assert!(err.contains("archive ftp://host/x: unknown scheme \"ftp\""), "{err}");
    let err = data.fails(&["--archive", "", "objects"]);
    assert!(err.contains("empty"), "{err}");
}

#[cfg(not(feature = "s3"))]
#[test]
fn builds_without_s3_name_the_url_and_the_feature() {
    let data = Data::new();
    let err = data.fails(&["--archive", "s3://bucket/some/prefix", "objects"]);
    assert!(err.contains("archive s3://bucket/some/prefix"), "{err}");
    assert!(err.contains("no s3 support") && err.contains("`s3` feature"), "{err}");
}

#[cfg(not(feature = "gcs"))]
#[test]
fn builds_without_gcs_refuse_gs_urls() {
    let data = Data::new();
    let err = data.fails(&["--archive", "gs://bucket/p", "objects"]);
    assert!(err.contains("no gs support") && err.contains("`gcs` feature"), "{err}");
}

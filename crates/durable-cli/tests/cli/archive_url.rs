//! `--archive s3://bucket/prefix`: the parser picks bucket and prefix; builds without the `s3`
//! feature refuse it in one line; nothing here touches the network.

use crate::support::Data;
use crate::url::{S3Location, object_prefix, parse_s3};

fn location(bucket: &str, prefix: &str) -> S3Location {
    S3Location { bucket: bucket.into(), prefix: prefix.into() }
}

#[test]
fn s3_urls_give_bucket_and_prefix() {
    assert_eq!(parse_s3("s3://bucket/prefix"), Some(Ok(location("bucket", "prefix"))));
    assert_eq!(parse_s3("s3://b/a/b/c/"), Some(Ok(location("b", "a/b/c"))));
    assert_eq!(parse_s3("s3://bucket"), Some(Ok(location("bucket", ""))));
    assert_eq!(parse_s3("s3://bucket/"), Some(Ok(location("bucket", ""))));
    assert!(matches!(parse_s3("s3:///prefix"), Some(Err(e)) if e.contains("no bucket")));
    assert_eq!(parse_s3("/tmp/archive"), None);
    assert_eq!(parse_s3("file:///tmp/archive"), None);
    assert_eq!(object_prefix(&location("b", "p/q"), "o.sqlite"), "p/q/o.sqlite");
    assert_eq!(object_prefix(&location("b", ""), "o.sqlite"), "o.sqlite");
}

#[test]
fn an_s3_url_without_a_bucket_is_refused() {
    let data = Data::new();
    let err = data.fails(&["--archive", "s3:///prefix", "objects"]);
    assert!(err.contains("no bucket"), "{err}");
}

#[cfg(not(feature = "s3"))]
#[test]
fn builds_without_s3_name_the_url_and_refuse_it() {
    let data = Data::new();
    let err = data.fails(&["--archive", "s3://bucket/some/prefix", "objects"]);
    assert!(err.contains("bucket \"bucket\", prefix \"some/prefix\""), "{err}");
    assert!(err.contains("no S3 support"), "{err}");
}

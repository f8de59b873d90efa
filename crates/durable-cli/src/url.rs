//! Parsing `--archive` URLs that name S3 storage (`s3://bucket/prefix`). Plain std, so the
//! integration tests include this file and test it directly.

/// An S3 location: a bucket and a key prefix inside it (without slashes at either end; empty
/// for the bucket's root).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct S3Location {
    /// The bucket's name.
    pub bucket: String,
    /// The key prefix under which every object's history goes (`PREFIX/OBJECT-FILE/...`).
    pub prefix: String,
}

/// Parses `s3://bucket[/prefix...]`. `None` when `url` is not an `s3://` URL; `Err` with a
/// reason when it is one without a bucket.
pub fn parse_s3(url: &str) -> Option<Result<S3Location, String>> {
    let rest = url.strip_prefix("s3://")?;
    let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
    if bucket.is_empty() {
        return Some(Err(format!("--archive {url}: no bucket (give s3://bucket/prefix)")));
    }
    let prefix = prefix.trim_matches('/').to_owned();
    Some(Ok(S3Location { bucket: bucket.to_owned(), prefix }))
}

/// The key prefix of one object's history under `location`: its database file's name, after
/// the location's prefix.
#[cfg_attr(not(feature = "s3"), allow(dead_code))]
pub fn object_prefix(location: &S3Location, file_name: &str) -> String {
    if location.prefix.is_empty() {
        file_name.to_owned()
    } else {
        format!("{}/{file_name}", location.prefix)
    }
}

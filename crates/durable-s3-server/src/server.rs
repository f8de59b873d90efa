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
        let locks = (0..KEY_LOCKS).map(|_| tokio::sync::Mutex::new(())).collect();
        let fs = PrefixListing { fs, root: dir.to_path_buf(), locks };
        let mut builder = s3s::service::S3ServiceBuilder::new(fs);
        builder.set_auth(s3s::auth::SimpleAuth::from_single(ACCESS_KEY, SECRET_KEY));
        let service = builder.build();
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await?;
        let addr = listener.local_addr()?;
        let task = tokio::spawn(async move {
            loop {
                let Ok((socket, _)) = listener.accept().await else { continue };
                // Without it, a response written in two parts (head, then body) waits for
                // the client's delayed ACK of the first: 40 ms per request on Linux.
                let _ = socket.set_nodelay(true);
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

/// s3s-fs, with listings that read only the folder their prefix names, and with writes to
/// one key one at a time.
///
/// s3s-fs checks a create-only write (`If-None-Match: *`) by looking for the key, then
/// writes a temporary file and renames it over the key: of several creates of one key racing,
/// all could pass the check and succeed, the last rename winning. Leases and the shared log's
/// fences rely on exactly one winning, as on S3, so every write and delete of a key holds
/// that key's lock (one of [`KEY_LOCKS`], by a hash of the bucket and key) from the check to
/// the rename, and reads a conditional write's whole body before s3s-fs checks it (see
/// [`read_whole_body`]).
///
/// s3s-fs answers every `ListObjectsV2` by walking the whole bucket, so with thousands of
/// keys (the multi-node tests upload a segment per replicated write) each listing of one
/// object's history took seconds. Keys are paths under the bucket's folder, so every key
/// that starts with `a/b/c` lies under the folder `a/b`: the listing runs there, as if that
/// folder were the bucket, and the keys it returns get `a/b/` back in front.
struct PrefixListing {
    fs: s3s_fs::FileSystem,
    /// The server's folder (each sub-folder a bucket).
    root: PathBuf,
    /// Writes of keys whose hash falls on the same lock run one at a time.
    locks: Vec<tokio::sync::Mutex<()>>,
}

/// Locks serializing writes per key: keys share one when their hashes collide.
const KEY_LOCKS: usize = 256;

/// The `S3` implementation: each operation s3s-fs implements goes to it, writes of one key
/// under that key's lock (`locked`, the key each names), and `ListObjectsV2` to
/// [`PrefixListing::list_in_folder`]. (A macro around the whole `impl`, so that
/// `async_trait` sees the generated methods.)
macro_rules! forward_except_listing {
    (
        plain: $($op:ident: $input:ident => $output:ident),* ;
        locked: $($lop:ident: $linput:ident => $loutput:ident by $bucket:ident / $key:ident),* $(,)?
    ) => {
        #[async_trait::async_trait]
        impl s3s::S3 for PrefixListing {
            $(
                async fn $op(
                    &self,
                    req: s3s::S3Request<s3s::dto::$input>,
                ) -> s3s::S3Result<s3s::S3Response<s3s::dto::$output>> {
                    s3s::S3::$op(&self.fs, req).await
                }
            )*

            $(
                async fn $lop(
                    &self,
                    req: s3s::S3Request<s3s::dto::$linput>,
                ) -> s3s::S3Result<s3s::S3Response<s3s::dto::$loutput>> {
                    let _key = self.lock(&req.input.$bucket, &req.input.$key).await;
                    s3s::S3::$lop(&self.fs, req).await
                }
            )*

            async fn put_object(
                &self,
                mut req: s3s::S3Request<s3s::dto::PutObjectInput>,
            ) -> s3s::S3Result<s3s::S3Response<s3s::dto::PutObjectOutput>> {
                if req.input.if_none_match.is_some() || req.input.if_match.is_some() {
                    read_whole_body(&mut req.input.body).await?;
                }
                let _key = self.lock(&req.input.bucket, &req.input.key).await;
                s3s::S3::put_object(&self.fs, req).await
            }

            async fn delete_objects(
                &self,
                mut req: s3s::S3Request<s3s::dto::DeleteObjectsInput>,
            ) -> s3s::S3Result<s3s::S3Response<s3s::dto::DeleteObjectsOutput>> {
                // One key at a time, under that key's lock only: S3 deletes each key of a
                // bulk delete atomically, not the set, and holding every key's lock until
                // the last file went made writes to any of them wait for all of it: with
                // the shared log's bulk deletes (tens of batches at a time), benchmark (r)'s
                // paced confirm p99 was 47-91 ms that way against 10-24 ms this way.
                let objects = std::mem::take(&mut req.input.delete.objects);
                let mut output = s3s::dto::DeleteObjectsOutput::default();
                for object in objects {
                    let mut one = req.clone();
                    let _key = self.lock(&one.input.bucket, &object.key).await;
                    one.input.delete.objects = vec![object];
                    let done = s3s::S3::delete_objects(&self.fs, one).await?.output;
                    output.deleted.get_or_insert_default().extend(done.deleted.into_iter().flatten());
                    if let Some(errors) = done.errors {
                        output.errors.get_or_insert_default().extend(errors);
                    }
                }
                Ok(s3s::S3Response::new(output))
            }

            async fn list_objects_v2(
                &self,
                req: s3s::S3Request<s3s::dto::ListObjectsV2Input>,
            ) -> s3s::S3Result<s3s::S3Response<s3s::dto::ListObjectsV2Output>> {
                self.list_in_folder(req).await
            }
        }
    };
}

forward_except_listing! {
    plain:
    create_bucket: CreateBucketInput => CreateBucketOutput,
    delete_bucket: DeleteBucketInput => DeleteBucketOutput,
    get_bucket_location: GetBucketLocationInput => GetBucketLocationOutput,
    get_object: GetObjectInput => GetObjectOutput,
    head_bucket: HeadBucketInput => HeadBucketOutput,
    head_object: HeadObjectInput => HeadObjectOutput,
    list_buckets: ListBucketsInput => ListBucketsOutput,
    list_objects: ListObjectsInput => ListObjectsOutput,
    create_multipart_upload: CreateMultipartUploadInput => CreateMultipartUploadOutput,
    upload_part: UploadPartInput => UploadPartOutput,
    upload_part_copy: UploadPartCopyInput => UploadPartCopyOutput,
    list_parts: ListPartsInput => ListPartsOutput,
    abort_multipart_upload: AbortMultipartUploadInput => AbortMultipartUploadOutput;
    locked:
    copy_object: CopyObjectInput => CopyObjectOutput by bucket / key,
    delete_object: DeleteObjectInput => DeleteObjectOutput by bucket / key,
    complete_multipart_upload: CompleteMultipartUploadInput => CompleteMultipartUploadOutput
        by bucket / key,
}

/// Reads a conditional write's whole body before the condition is checked.
///
/// s3s-fs refuses a write whose condition fails (`412`) without reading its body; hyper then
/// answers and closes the connection while the client may still be sending, and the client
/// sees a reset (`error sending request`) instead of the `412`: a lost race for a lease or a
/// fence would look like an unreachable store. With the body read first, the client always
/// gets the answer. (Bodies of conditional writes are leases, fences and segments: small.)
async fn read_whole_body(body: &mut Option<s3s::dto::StreamingBlob>) -> s3s::S3Result<()> {
    let Some(blob) = body.take() else { return Ok(()) };
    let mut whole = s3s::Body::from(blob);
    whole
        .store_all_limited(CONDITIONAL_BODY_LIMIT)
        .await
        .map_err(|e| s3s::s3_error!(IncompleteBody, "reading a conditional write's body: {e}"))?;
    *body = Some(s3s::dto::StreamingBlob::from(whole));
    Ok(())
}

/// The largest body of a conditional write the server reads into memory.
const CONDITIONAL_BODY_LIMIT: usize = 256 << 20;

impl PrefixListing {
    /// The lock of `key` in `bucket`.
    fn stripe(&self, bucket: &str, key: &str) -> usize {
        use std::hash::{Hash, Hasher};
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        (bucket, key).hash(&mut hasher);
        (hasher.finish() % self.locks.len() as u64) as usize
    }

    /// Waits for `key`'s lock; writes of the key wait while it is held.
    async fn lock(&self, bucket: &str, key: &str) -> tokio::sync::MutexGuard<'_, ()> {
        self.locks[self.stripe(bucket, key)].lock().await
    }

    /// `ListObjectsV2` in the folder the prefix names, as if it were the bucket.
    async fn list_in_folder(
        &self,
        mut req: s3s::S3Request<s3s::dto::ListObjectsV2Input>,
    ) -> s3s::S3Result<s3s::S3Response<s3s::dto::ListObjectsV2Output>> {
        let input = &req.input;
        let prefix = input.prefix.clone().unwrap_or_default();
        // The folder the prefix names: up to its last `/`, plain segments only (anything
        // else, and a bucket that does not exist, goes to s3s-fs as it is).
        let folder = match prefix.rfind('/') {
            Some(cut) => prefix[..cut].to_owned(),
            None => return s3s::S3::list_objects_v2(&self.fs, req).await,
        };
        let plain = |segment: &str| !segment.is_empty() && segment != "." && segment != "..";
        let bucket = input.bucket.clone();
        if !folder.split('/').all(plain)
            || !plain(&bucket)
            || bucket.contains('/')
            || !self.root.join(&bucket).is_dir()
        {
            return s3s::S3::list_objects_v2(&self.fs, req).await;
        }
        let lead = format!("{folder}/");
        // Resume points are full keys: those in the folder lose the lead; one after every
        // key of the folder goes to s3s-fs as it is (rare), one before it means from the start.
        let relative = |marker: &mut Option<String>| match marker.take() {
            None => true,
            Some(m) => match m.strip_prefix(&lead) {
                Some(rest) => {
                    *marker = Some(rest.to_owned());
                    true
                }
                None if m < lead => true,
                None => {
                    *marker = Some(m);
                    false
                }
            },
        };
        let (mut token, mut after) = (input.continuation_token.clone(), input.start_after.clone());
        if !relative(&mut token) || !relative(&mut after) {
            return s3s::S3::list_objects_v2(&self.fs, req).await;
        }
        let original =
            (input.prefix.clone(), input.continuation_token.clone(), input.start_after.clone());
        req.input.bucket = format!("{bucket}/{folder}");
        req.input.prefix = Some(prefix[lead.len()..].to_owned());
        req.input.continuation_token = token;
        req.input.start_after = after;
        let mut response = if self.root.join(&bucket).join(&folder).is_dir() {
            s3s::S3::list_objects_v2(&self.fs, req).await?
        } else {
            // No folder: no key.
            s3s::S3Response::new(s3s::dto::ListObjectsV2Output {
                key_count: Some(0),
                max_keys: req.input.max_keys.or(Some(1000)),
                is_truncated: Some(false),
                delimiter: req.input.delimiter.clone(),
                ..Default::default()
            })
        };
        let output = &mut response.output;
        output.name = Some(bucket);
        (output.prefix, output.continuation_token, output.start_after) = original;
        for object in output.contents.iter_mut().flatten() {
            object.key = object.key.take().map(|k| format!("{lead}{k}"));
        }
        for common in output.common_prefixes.iter_mut().flatten() {
            common.prefix = common.prefix.take().map(|p| format!("{lead}{p}"));
        }
        output.next_continuation_token =
            output.next_continuation_token.take().map(|t| format!("{lead}{t}"));
        Ok(response)
    }
}

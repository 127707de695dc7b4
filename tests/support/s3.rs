//! An in-process S3 server for tests and the quickstart example.
//!
//! s3s 0.14.1 serves the S3 protocol (SigV4 verified through `SimpleAuth`), s3s-fs stores the
//! objects as plain files below a root directory (one top-level directory per bucket), and a
//! scripted fault plan can reject, delay, throttle or "fail after success" any operation,
//! optionally only for one object key. The whole server can also go down (connections refused)
//! or hang (connections accepted, nothing answered) and come back, like a real server process
//! that is stopped, frozen and restarted ([`TestS3::go_down`], [`TestS3::hang`],
//! [`TestS3::come_back`]).
//!
//! Self-contained on purpose: `examples/quickstart.rs` includes this file with
//! `#[path = "../tests/support/s3.rs"] mod s3;`, so it must not refer to anything outside itself.
#![allow(dead_code)]

use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use http_body_util::BodyExt;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto::Builder as ConnBuilder;
use s3s::auth::SimpleAuth;
use s3s::dto::*;
use s3s::service::{S3Service, S3ServiceBuilder};
use s3s::{S3, S3Error, S3Request, S3Response, S3Result};

pub use s3s::S3ErrorCode;

/// Access key the server accepts (pass it to the daemon as `AWS_ACCESS_KEY_ID`).
pub const ACCESS_KEY: &str = "AKIDINBOXDTEST";
/// Secret key the server accepts (pass it to the daemon as `AWS_SECRET_ACCESS_KEY`).
pub const SECRET_KEY: &str = "inboxd-test-secret-key-0123456789";
/// Region the verification client signs for.
pub const REGION: &str = "us-east-1";
/// Bucket that [`TestS3::start`] always creates.
pub const BUCKET: &str = "test-bucket";

// ---------------------------------------------------------------------------------------------
// Operations
// ---------------------------------------------------------------------------------------------

/// The S3 operation of a request, as far as the tests care.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Op {
    PutObject,
    HeadObject,
    HeadBucket,
    GetObject,
    CreateBucket,
    ListObjectsV2,
    DeleteObject,
    CreateMultipartUpload,
    UploadPart,
    CompleteMultipartUpload,
    AbortMultipartUpload,
    ListParts,
    /// Anything else (ListBuckets, DeleteBucket, CopyObject, DeleteObjects, ...).
    Other,
}

/// What one HTTP request addresses.
#[derive(Clone, Debug)]
struct Target {
    op: Op,
    key: Option<String>,
}

fn classify(method: &http::Method, uri: &http::Uri) -> Target {
    let path = percent_decode(uri.path());
    let path = path.trim_start_matches('/');
    let (bucket, key) = match path.split_once('/') {
        Some((b, k)) if !k.is_empty() => (b, Some(k.to_owned())),
        Some((b, _)) => (b, None),
        None => (path, None),
    };
    let query: Vec<&str> = uri
        .query()
        .unwrap_or("")
        .split('&')
        .map(|pair| pair.split_once('=').map_or(pair, |(name, _)| name))
        .collect();
    let has = |name: &str| query.contains(&name);

    let op = match (method.as_str(), bucket.is_empty(), key.is_some()) {
        (_, true, _) => Op::Other,
        ("HEAD", _, true) => Op::HeadObject,
        ("HEAD", _, false) => Op::HeadBucket,
        ("GET", _, true) if has("uploadId") => Op::ListParts,
        ("GET", _, true) => Op::GetObject,
        ("GET", _, false) if has("list-type") => Op::ListObjectsV2,
        ("PUT", _, true) if has("uploadId") => Op::UploadPart,
        ("PUT", _, true) => Op::PutObject,
        ("PUT", _, false) if query.iter().all(|q| q.is_empty()) => Op::CreateBucket,
        ("POST", _, true) if has("uploads") => Op::CreateMultipartUpload,
        ("POST", _, true) if has("uploadId") => Op::CompleteMultipartUpload,
        ("DELETE", _, true) if has("uploadId") => Op::AbortMultipartUpload,
        ("DELETE", _, true) => Op::DeleteObject,
        _ => Op::Other,
    };
    Target { op, key }
}

/// The daemon's capability probe writes below `<prefix>.inboxd-probe/` at every start. Its
/// requests are neither counted nor hit by scripted faults: tests count and break the
/// daemon's work on files, and a probe request taking a fault meant for a file would make
/// every such test depend on the probe's request order.
fn is_probe(key: Option<&str>) -> bool {
    key.is_some_and(|k| k.starts_with(".inboxd-probe/") || k.contains("/.inboxd-probe/"))
}

/// Decodes `%XX` escapes (keys with spaces or non-ASCII characters arrive percent-encoded).
fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).ok();
            if let Some(b) = hex.and_then(|h| u8::from_str_radix(h, 16).ok()) {
                out.push(b);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

// ---------------------------------------------------------------------------------------------
// Faults
// ---------------------------------------------------------------------------------------------

/// How a fault hits a request.
#[derive(Clone, Debug)]
pub enum FaultKind {
    /// Answer with this S3 error before the backend sees the request (the body is drained first,
    /// so the client gets a clean error response rather than a connection reset).
    Reject(S3ErrorCode),
    /// Sleep this long, then serve the request normally.
    Delay(Duration),
    /// Let the backend perform the operation, then answer with this error anyway
    /// ("succeeded on the server, failed for the client").
    FailAfter(S3ErrorCode),
    /// Read the request body at most this many bytes per second (a slow link that keeps
    /// moving), then serve the request normally.
    Throttle(u64),
    /// Close the connection without an answer (a reset, as from a crashing proxy).
    Reset,
    /// Like `Reject`, with a `Date` header this many seconds ahead of the real clock (negative:
    /// behind), as a server whose clock differs from ours answers.
    RejectDated(S3ErrorCode, i64),
}

/// One scripted fault: a kind, an optional object key it is limited to, and how often it fires.
#[derive(Clone, Debug)]
pub struct Fault {
    kind: FaultKind,
    key: Option<String>,
    /// `None` = fires on every matching request until the plan is cleared.
    times: Option<usize>,
}

impl Fault {
    pub fn reject(code: S3ErrorCode) -> Self {
        Self::new(FaultKind::Reject(code))
    }

    pub fn delay(duration: Duration) -> Self {
        Self::new(FaultKind::Delay(duration))
    }

    pub fn fail_after(code: S3ErrorCode) -> Self {
        Self::new(FaultKind::FailAfter(code))
    }

    pub fn reset() -> Self {
        Self::new(FaultKind::Reset)
    }

    pub fn throttle(bytes_per_sec: u64) -> Self {
        Self::new(FaultKind::Throttle(bytes_per_sec))
    }

    /// Rejects with `code` and a `Date` header `server_ahead` seconds off the real clock.
    pub fn reject_dated(code: S3ErrorCode, server_ahead: i64) -> Self {
        Self::new(FaultKind::RejectDated(code, server_ahead))
    }

    fn new(kind: FaultKind) -> Self {
        Self {
            kind,
            key: None,
            times: Some(1),
        }
    }

    /// Only requests for this object key match (exact key, e.g. `"incoming/bad.bin"`).
    pub fn for_key(mut self, key: impl Into<String>) -> Self {
        self.key = Some(key.into());
        self
    }

    /// Fire on the next `n` matching requests (default: once).
    pub fn times(mut self, n: usize) -> Self {
        self.times = Some(n);
        self
    }

    /// Fire on every matching request until [`FaultPlan::clear`].
    pub fn always(mut self) -> Self {
        self.times = None;
        self
    }

    fn http_level(&self) -> bool {
        !matches!(self.kind, FaultKind::FailAfter(_))
    }

    fn matches(&self, key: Option<&str>) -> bool {
        match &self.key {
            None => true,
            Some(want) => key == Some(want.as_str()),
        }
    }
}

/// The script of faults, consumed in the order they were pushed.
#[derive(Default)]
pub struct FaultPlan {
    entries: Mutex<Vec<(Op, Fault)>>,
}

impl FaultPlan {
    pub fn push(&self, op: Op, fault: Fault) {
        if fault.times != Some(0) {
            lock(&self.entries).push((op, fault));
        }
    }

    /// Removes every pending fault (also the `always()` ones): "the problem is fixed".
    pub fn clear(&self) {
        lock(&self.entries).clear();
    }

    /// How many more times faults for `op` will fire (`usize::MAX` if one fires always).
    pub fn remaining(&self, op: Op) -> usize {
        lock(&self.entries)
            .iter()
            .filter(|(o, _)| *o == op)
            .map(|(_, f)| f.times.unwrap_or(usize::MAX))
            .fold(0, usize::saturating_add)
    }

    /// True when a `Throttle` fault is pending.
    fn throttles(&self) -> bool {
        lock(&self.entries)
            .iter()
            .any(|(_, f)| matches!(f.kind, FaultKind::Throttle(_)))
    }

    /// True when no fault of any operation is left to fire.
    pub fn is_drained(&self) -> bool {
        lock(&self.entries).is_empty()
    }

    fn take(&self, op: Op, key: Option<&str>, http_level: bool) -> Option<FaultKind> {
        let mut entries = lock(&self.entries);
        let idx = entries
            .iter()
            .position(|(o, f)| *o == op && f.http_level() == http_level && f.matches(key))?;
        let fault = &mut entries[idx].1;
        let kind = fault.kind.clone();
        if let Some(n) = fault.times.as_mut() {
            *n -= 1;
            if *n == 0 {
                entries.remove(idx);
            }
        }
        Some(kind)
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

// ---------------------------------------------------------------------------------------------
// Counters
// ---------------------------------------------------------------------------------------------

#[derive(Default)]
struct Stats {
    /// Every request that reached the server, per operation (rejected ones included).
    requests: Mutex<HashMap<Op, usize>>,
    /// Every request per (operation, key).
    requests_by_key: Mutex<HashMap<(Op, String), usize>>,
    /// Objects the backend actually wrote (PutObject or CompleteMultipartUpload that succeeded
    /// in s3s-fs, whatever the client was told afterwards), per key.
    writes: Mutex<HashMap<String, usize>>,
    /// Distinct `x-amz-security-token` values that came with requests (session credentials;
    /// SimpleAuth ignores them, but they are part of the signed headers).
    session_tokens: Mutex<Vec<String>>,
    /// Distinct regions requests were signed for (the credential scope of SigV4).
    regions: Mutex<Vec<String>>,
    /// Requests per operation that carried `Content-MD5`.
    content_md5: Mutex<HashMap<Op, usize>>,
    /// The object options that came with each key's accepted PutObject or
    /// CreateMultipartUpload: what a server that supports them stores (s3s-fs keeps
    /// Content-Type, Cache-Control and metadata itself, but not these).
    options: Mutex<HashMap<String, ObjectOptions>>,
}

/// Object options a write carried, as the server received them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ObjectOptions {
    pub tagging: Option<String>,
    pub storage_class: Option<String>,
    pub sse: Option<String>,
    pub sse_kms_key_id: Option<String>,
}

impl ObjectOptions {
    /// From the fields PutObject and CreateMultipartUpload share.
    fn of(
        tagging: &Option<String>,
        storage_class: &Option<s3s::dto::StorageClass>,
        sse: &Option<s3s::dto::ServerSideEncryption>,
        kms_key: &Option<String>,
    ) -> Self {
        ObjectOptions {
            tagging: tagging.clone(),
            storage_class: storage_class.as_ref().map(|c| c.as_str().to_owned()),
            sse: sse.as_ref().map(|c| c.as_str().to_owned()),
            sse_kms_key_id: kms_key.clone(),
        }
    }
}

impl Stats {
    fn request(&self, target: &Target) {
        *lock(&self.requests).entry(target.op).or_default() += 1;
        if let Some(key) = &target.key {
            *lock(&self.requests_by_key)
                .entry((target.op, key.clone()))
                .or_default() += 1;
        }
    }

    fn signing_region(&self, headers: &http::HeaderMap) {
        // Authorization: AWS4-HMAC-SHA256 Credential=AKID/20261129/eu-west-3/s3/aws4_request, ...
        let region = headers
            .get(http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split("Credential=").nth(1))
            .and_then(|c| c.split('/').nth(2));
        if let Some(region) = region {
            let mut seen = lock(&self.regions);
            if !seen.iter().any(|r| r == region) {
                seen.push(region.to_owned());
            }
        }
    }

    fn session_token(&self, headers: &http::HeaderMap) {
        if let Some(token) = headers
            .get("x-amz-security-token")
            .and_then(|v| v.to_str().ok())
        {
            let mut seen = lock(&self.session_tokens);
            if !seen.iter().any(|t| t == token) {
                seen.push(token.to_owned());
            }
        }
    }

    fn written(&self, key: &str) {
        if is_probe(Some(key)) {
            return;
        }
        *lock(&self.writes).entry(key.to_owned()).or_default() += 1;
    }
}

// ---------------------------------------------------------------------------------------------
// HTTP-level layer: rejects and delays before s3s sees the request
// ---------------------------------------------------------------------------------------------

#[derive(Clone)]
struct FaultLayer {
    inner: S3Service,
    plan: Arc<FaultPlan>,
    stats: Arc<Stats>,
    backend: Backend,
    power: tokio::sync::watch::Receiver<Power>,
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send + 'static>>;

impl hyper::service::Service<http::Request<hyper::body::Incoming>> for FaultLayer {
    type Response = s3s::HttpResponse;
    type Error = s3s::HttpError;
    type Future = BoxFuture<Result<Self::Response, Self::Error>>;

    fn call(&self, req: http::Request<hyper::body::Incoming>) -> Self::Future {
        let target = classify(req.method(), req.uri());
        let probe = is_probe(target.key.as_deref());
        if !probe {
            self.stats.request(&target);
            if req.headers().contains_key("content-md5") {
                *lock(&self.stats.content_md5).entry(target.op).or_default() += 1;
            }
        }
        self.stats.session_token(req.headers());
        self.stats.signing_region(req.headers());
        let fault = if probe {
            None
        } else {
            self.plan.take(target.op, target.key.as_deref(), true)
        };
        let inner = self.inner.clone();
        let backend = self.backend.clone();
        let hung = *self.power.borrow() == Power::Hung;
        Box::pin(async move {
            if hung {
                // A hung server reads nothing and answers nothing; the connection dies when the
                // server "restarts" (TestS3::come_back).
                std::future::pending::<()>().await;
            }
            match fault {
                Some(FaultKind::RejectDated(code, ahead)) => {
                    let _ = req.into_body().collect().await;
                    let err = S3Error::with_message(code, "injected by the test fault plan");
                    let mut res = err.to_http_response().expect("serialize injected S3 error");
                    let now = std::time::SystemTime::now()
                        .duration_since(std::time::UNIX_EPOCH)
                        .expect("clock after 1970")
                        .as_secs() as i64;
                    let date = aws_sdk_s3::primitives::DateTime::from_secs(now + ahead)
                        .fmt(aws_sdk_s3::primitives::DateTimeFormat::HttpDate)
                        .expect("format an HTTP date");
                    res.headers_mut().insert(
                        http::header::DATE,
                        http::HeaderValue::from_str(&date).expect("an HTTP date is a header value"),
                    );
                    Ok(res)
                }
                Some(FaultKind::Reset) => Err(s3s::HttpError::new(
                    "injected by the test fault plan: connection closed".into(),
                )),
                Some(FaultKind::Throttle(rate)) => {
                    backend.run(inner, req.map(|b| throttled(b, rate))).await
                }
                Some(FaultKind::Reject(code)) => {
                    // Drain the body so the client reads a clean error, not a reset connection.
                    let _ = req.into_body().collect().await;
                    let err = S3Error::with_message(code, "injected by the test fault plan");
                    Ok(err.to_http_response().expect("serialize injected S3 error"))
                }
                Some(FaultKind::Delay(d)) => {
                    // The delay is "before the server reads the request": a client that goes
                    // away meanwhile takes the request with it, as with a real server.
                    tokio::time::sleep(d).await;
                    backend.run(inner, req.map(s3s::Body::from)).await
                }
                _ => backend.run(inner, req.map(s3s::Body::from)).await,
            }
        })
    }
}

/// The body read at most `rate` bytes per second: after each chunk, a pause as long as the
/// chunk takes at that rate. The client sees a slow link that keeps moving.
fn throttled(body: hyper::body::Incoming, rate: u64) -> s3s::Body {
    use futures::StreamExt as _;
    let rate = rate.max(1);
    let chunks = body.into_data_stream().then(move |chunk| async move {
        if let Ok(bytes) = &chunk {
            let pause = Duration::from_secs_f64(bytes.len() as f64 / rate as f64);
            tokio::time::sleep(pause).await;
        }
        chunk.map(hyper::body::Frame::data)
    });
    s3s::Body::http_body_unsync(http_body_util::StreamBody::new(chunks))
}

// ---------------------------------------------------------------------------------------------
// Backend work that outlives the connection
// ---------------------------------------------------------------------------------------------

/// Runs each request's backend work (s3s reading the body, s3s-fs storing it) in a task of its
/// own, so that it finishes even when the client disconnects in the middle: hyper drops the
/// connection's futures when the peer goes away, and without this a write that s3s-fs had
/// already renamed into place would never reach the write counter. A real S3 server likewise
/// completes a request whose body it has received, whatever the client does next. A body cut
/// short by the disconnect fails to read, and then nothing is stored (and nothing counted).
#[derive(Clone, Default)]
struct Backend {
    /// Backend tasks still running; [`TestS3::idle`] waits for zero.
    running: Arc<tokio::sync::watch::Sender<usize>>,
}

/// Counts one running backend task; dropped when the task ends, also by panic or abort.
struct Running(Arc<tokio::sync::watch::Sender<usize>>);

impl Drop for Running {
    fn drop(&mut self) {
        self.0.send_modify(|n| *n -= 1);
    }
}

impl Backend {
    async fn run(
        &self,
        inner: S3Service,
        req: http::Request<s3s::Body>,
    ) -> Result<s3s::HttpResponse, s3s::HttpError> {
        self.running.send_modify(|n| *n += 1);
        let running = Running(self.running.clone());
        let task = tokio::spawn(async move {
            let _running = running;
            inner.call(req).await
        });
        match task.await {
            Ok(res) => res,
            Err(err) => {
                let err = S3Error::with_message(
                    S3ErrorCode::InternalError,
                    format!("test server backend task failed: {err}"),
                );
                Ok(err.to_http_response().expect("serialize backend failure"))
            }
        }
    }

    /// Waits until no backend task is running (panics after `timeout`).
    async fn idle(&self, timeout: Duration) {
        let mut rx = self.running.subscribe();
        let waited = tokio::time::timeout(timeout, rx.wait_for(|n| *n == 0)).await;
        match waited {
            Ok(Ok(_)) => {}
            Ok(Err(_)) => unreachable!("the sender lives in self"),
            Err(_) => panic!(
                "test S3 server: {} backend requests still running after {timeout:?}",
                *self.running.borrow()
            ),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// S3-trait wrapper: delegates to s3s-fs, counts writes, applies FailAfter
// ---------------------------------------------------------------------------------------------

struct FaultyFs {
    inner: s3s_fs::FileSystem,
    plan: Arc<FaultPlan>,
    stats: Arc<Stats>,
    /// Behave like a server that accepts `If-None-Match` / `If-Match` and ignores them
    /// (Garage 2.5 does on PutObject): the conditions are dropped before s3s-fs sees them.
    ignore_conditions: Arc<std::sync::atomic::AtomicBool>,
    /// Behave like a server that does not know `x-amz-checksum-*` (Ceph RGW before Squid):
    /// SHA-256 checksums are dropped before s3s-fs sees them; Content-MD5 is still checked.
    ignore_checksums: Arc<std::sync::atomic::AtomicBool>,
}

impl FaultyFs {
    fn ignoring_conditions(&self) -> bool {
        self.ignore_conditions
            .load(std::sync::atomic::Ordering::SeqCst)
    }

    fn ignoring_checksums(&self) -> bool {
        self.ignore_checksums
            .load(std::sync::atomic::Ordering::SeqCst)
    }

    /// The backend has run `op`; a scripted `FailAfter` now replaces its answer.
    fn after<T>(&self, op: Op, key: Option<&str>, res: S3Result<T>) -> S3Result<T> {
        if is_probe(key) {
            return res;
        }
        match self.plan.take(op, key, false) {
            Some(FaultKind::FailAfter(code)) => Err(S3Error::with_message(
                code,
                "injected by the test fault plan after the backend succeeded",
            )),
            _ => res,
        }
    }
}

#[async_trait::async_trait]
impl S3 for FaultyFs {
    async fn put_object(
        &self,
        mut req: S3Request<PutObjectInput>,
    ) -> S3Result<S3Response<PutObjectOutput>> {
        if self.ignoring_conditions() {
            req.input.if_none_match = None;
            req.input.if_match = None;
        }
        if self.ignoring_checksums() {
            req.input.checksum_sha256 = None;
        }
        let key = req.input.key.clone();
        let options = ObjectOptions::of(
            &req.input.tagging,
            &req.input.storage_class,
            &req.input.server_side_encryption,
            &req.input.ssekms_key_id,
        );
        let sse = req.input.server_side_encryption.clone();
        let mut res = self.inner.put_object(req).await;
        if let Ok(out) = res.as_mut() {
            self.stats.written(&key);
            if !is_probe(Some(&key)) {
                lock(&self.stats.options).insert(key.clone(), options);
            }
            // Confirm the encryption, as a server that applies it does.
            out.output.server_side_encryption = sse;
        }
        self.after(Op::PutObject, Some(&key), res)
    }

    async fn head_object(
        &self,
        req: S3Request<HeadObjectInput>,
    ) -> S3Result<S3Response<HeadObjectOutput>> {
        let key = req.input.key.clone();
        let res = self.inner.head_object(req).await;
        self.after(Op::HeadObject, Some(&key), res)
    }

    async fn head_bucket(
        &self,
        req: S3Request<HeadBucketInput>,
    ) -> S3Result<S3Response<HeadBucketOutput>> {
        let res = self.inner.head_bucket(req).await;
        self.after(Op::HeadBucket, None, res)
    }

    async fn get_object(
        &self,
        req: S3Request<GetObjectInput>,
    ) -> S3Result<S3Response<GetObjectOutput>> {
        let key = req.input.key.clone();
        let res = self.inner.get_object(req).await;
        self.after(Op::GetObject, Some(&key), res)
    }

    async fn create_bucket(
        &self,
        req: S3Request<CreateBucketInput>,
    ) -> S3Result<S3Response<CreateBucketOutput>> {
        let res = self.inner.create_bucket(req).await;
        self.after(Op::CreateBucket, None, res)
    }

    async fn list_objects_v2(
        &self,
        req: S3Request<ListObjectsV2Input>,
    ) -> S3Result<S3Response<ListObjectsV2Output>> {
        let res = self.inner.list_objects_v2(req).await;
        self.after(Op::ListObjectsV2, None, res)
    }

    async fn delete_object(
        &self,
        req: S3Request<DeleteObjectInput>,
    ) -> S3Result<S3Response<DeleteObjectOutput>> {
        let key = req.input.key.clone();
        let res = self.inner.delete_object(req).await;
        self.after(Op::DeleteObject, Some(&key), res)
    }

    async fn create_multipart_upload(
        &self,
        mut req: S3Request<CreateMultipartUploadInput>,
    ) -> S3Result<S3Response<CreateMultipartUploadOutput>> {
        if self.ignoring_checksums() {
            req.input.checksum_algorithm = None;
        }
        let key = req.input.key.clone();
        let options = ObjectOptions::of(
            &req.input.tagging,
            &req.input.storage_class,
            &req.input.server_side_encryption,
            &req.input.ssekms_key_id,
        );
        // AWS refuses a storage class it does not have already here (s3s-fs only at
        // PutObject): behave like it, so that `inboxd check` can be tested against it.
        if let Some(class) = &req.input.storage_class
            && !["STANDARD", "REDUCED_REDUNDANCY"].contains(&class.as_str())
        {
            return Err(S3Error::new(S3ErrorCode::InvalidStorageClass));
        }
        let res = self.inner.create_multipart_upload(req).await;
        if res.is_ok() && !is_probe(Some(&key)) {
            lock(&self.stats.options).insert(key.clone(), options);
        }
        self.after(Op::CreateMultipartUpload, Some(&key), res)
    }

    async fn upload_part(
        &self,
        mut req: S3Request<UploadPartInput>,
    ) -> S3Result<S3Response<UploadPartOutput>> {
        if self.ignoring_checksums() {
            req.input.checksum_sha256 = None;
        }
        let key = req.input.key.clone();
        let res = self.inner.upload_part(req).await;
        self.after(Op::UploadPart, Some(&key), res)
    }

    async fn complete_multipart_upload(
        &self,
        mut req: S3Request<CompleteMultipartUploadInput>,
    ) -> S3Result<S3Response<CompleteMultipartUploadOutput>> {
        if self.ignoring_conditions() {
            req.input.if_none_match = None;
            req.input.if_match = None;
        }
        if self.ignoring_checksums()
            && let Some(parts) = req
                .input
                .multipart_upload
                .as_mut()
                .and_then(|m| m.parts.as_mut())
        {
            for part in parts {
                part.checksum_sha256 = None;
            }
        }
        let key = req.input.key.clone();
        let mut res = self.inner.complete_multipart_upload(req).await;
        if let Ok(out) = res.as_mut() {
            self.stats.written(&key);
            // Confirm the encryption asked for at creation, as a server that applies it does.
            out.output.server_side_encryption = lock(&self.stats.options)
                .get(&key)
                .and_then(|o| o.sse.clone())
                .map(s3s::dto::ServerSideEncryption::from);
        }
        self.after(Op::CompleteMultipartUpload, Some(&key), res)
    }

    async fn abort_multipart_upload(
        &self,
        req: S3Request<AbortMultipartUploadInput>,
    ) -> S3Result<S3Response<AbortMultipartUploadOutput>> {
        let key = req.input.key.clone();
        let res = self.inner.abort_multipart_upload(req).await;
        self.after(Op::AbortMultipartUpload, Some(&key), res)
    }

    async fn list_parts(
        &self,
        req: S3Request<ListPartsInput>,
    ) -> S3Result<S3Response<ListPartsOutput>> {
        let key = req.input.key.clone();
        let res = self.inner.list_parts(req).await;
        self.after(Op::ListParts, Some(&key), res)
    }
}

// ---------------------------------------------------------------------------------------------
// The server
// ---------------------------------------------------------------------------------------------

/// Whether the server runs, like a real server process.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Power {
    /// Serving.
    Up,
    /// Stopped: nothing listens on the port (connections are refused), and the connections
    /// it had were closed.
    Down,
    /// Hung (a frozen process): connections are accepted, nothing is read or answered.
    Hung,
}

/// The connections being served, so that a stop or restart can close them.
#[derive(Clone, Default)]
struct Connections(Arc<Mutex<Vec<tokio::task::AbortHandle>>>);

impl Connections {
    fn add(&self, task: tokio::task::AbortHandle) {
        let mut all = lock(&self.0);
        all.retain(|t| !t.is_finished());
        all.push(task);
    }

    /// Closes every connection (their sockets are dropped with their tasks).
    fn close_all(&self) {
        for t in lock(&self.0).drain(..) {
            t.abort();
        }
    }
}

/// When the accept loop ends, also by abort ([`TestS3::stop`], drop), its connections end
/// with it, as when a real server goes down.
impl Drop for Connections {
    fn drop(&mut self) {
        self.close_all();
    }
}

/// Accepts connections on `addr` and serves them as `power` says, until `power`'s sender (the
/// TestS3) is gone.
async fn accept_loop(
    listener: tokio::net::TcpListener,
    addr: SocketAddr,
    service: FaultLayer,
    mut power: tokio::sync::watch::Receiver<Power>,
) {
    let conns = Connections::default();
    let mut listener = Some(listener);
    // Accepted while hung: held open, never read.
    let mut held: Vec<tokio::net::TcpStream> = Vec::new();
    let mut was = Power::Up;
    loop {
        let accept = async {
            match &listener {
                Some(l) => l.accept().await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            changed = power.changed() => {
                if changed.is_err() {
                    break;
                }
                let now = *power.borrow_and_update();
                if now == Power::Down || (was == Power::Hung && now == Power::Up) {
                    // Stopped, or a hung server restarted: its connections die with it.
                    conns.close_all();
                    held.clear();
                }
                if now == Power::Down {
                    listener = None;
                } else if listener.is_none() {
                    listener = Some(bind_again(addr).await);
                }
                was = now;
            }
            accepted = accept => {
                let Ok((stream, _)) = accepted else {
                    break;
                };
                if *power.borrow() == Power::Hung {
                    held.push(stream);
                    continue;
                }
                // Without it small requests can stall on Nagle + delayed ACK.
                let _ = stream.set_nodelay(true);
                if service.plan.throttles() {
                    shrink_receive_buffer(&stream);
                }
                let svc = service.clone();
                let task = tokio::spawn(async move {
                    let _ = ConnBuilder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(stream), svc)
                        .await;
                });
                conns.add(task.abort_handle());
            }
        }
    }
    conns.close_all();
}

/// Keeps the kernel from buffering much of a throttled body. A throttled reader on a paused
/// test clock reads fast in real time, so the kernel would grow the receive buffer to tens of
/// MiB and take the whole body at once, hiding the throttle from the client.
fn shrink_receive_buffer(stream: &tokio::net::TcpStream) {
    use std::os::fd::AsRawFd as _;
    let size: libc::c_int = 64 * 1024;
    // SAFETY: a valid socket descriptor and a pointer to a c_int of the size given.
    let rc = unsafe {
        libc::setsockopt(
            stream.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVBUF,
            (&size as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    assert_eq!(
        rc,
        0,
        "setsockopt(SO_RCVBUF): {}",
        std::io::Error::last_os_error()
    );
}

/// Listens on `addr` again after a stop (the port was free a moment ago; if something took
/// it meanwhile, try for a while).
async fn bind_again(addr: SocketAddr) -> tokio::net::TcpListener {
    for _ in 0..200 {
        if let Ok(l) = tokio::net::TcpListener::bind(addr).await {
            return l;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("test S3 server: cannot listen on {addr} again");
}

/// A running in-process S3 server. Dropping it stops accepting connections.
pub struct TestS3 {
    endpoint: String,
    addr: SocketAddr,
    root: PathBuf,
    /// Owns the root when the server created it itself.
    _tmp: Option<tempfile::TempDir>,
    /// The fault script; push faults at any time, they apply to the next matching requests.
    pub plan: Arc<FaultPlan>,
    stats: Arc<Stats>,
    backend: Backend,
    ignore_conditions: Arc<std::sync::atomic::AtomicBool>,
    ignore_checksums: Arc<std::sync::atomic::AtomicBool>,
    power: tokio::sync::watch::Sender<Power>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for TestS3 {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A [`TestS3`] that was stopped: its address and its objects, kept for a restart.
pub struct StoppedS3 {
    addr: SocketAddr,
    root: PathBuf,
    /// Owns the root when the server created it itself.
    tmp: Option<tempfile::TempDir>,
}

impl StoppedS3 {
    /// Serves the same directory on the same address again (fresh fault plan and counters).
    /// Waits up to 10 s for the port to become free.
    pub async fn start_again(self) -> TestS3 {
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        loop {
            match TestS3::serve(self.addr, self.root.clone(), None, &[]).await {
                Ok(mut s3) => {
                    s3._tmp = self.tmp;
                    return s3;
                }
                Err(e)
                    if e.kind() == std::io::ErrorKind::AddrInUse
                        && std::time::Instant::now() < deadline =>
                {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                Err(e) => panic!("restart the test S3 server on {}: {e}", self.addr),
            }
        }
    }
}

impl TestS3 {
    /// Random port on 127.0.0.1, fresh temporary root, bucket [`BUCKET`] created.
    pub async fn start() -> Self {
        Self::start_with(&[]).await
    }

    /// Like [`TestS3::start`], with these buckets created in addition to [`BUCKET`].
    pub async fn start_with(buckets: &[&str]) -> Self {
        let tmp = tempfile::Builder::new()
            .prefix("inboxd-s3-")
            .tempdir()
            .expect("create S3 root tempdir");
        let mut all = vec![BUCKET];
        all.extend_from_slice(buckets);
        let addr = SocketAddr::from(([127, 0, 0, 1], 0));
        Self::serve(addr, tmp.path().to_path_buf(), Some(tmp), &all)
            .await
            .expect("start test S3 server")
    }

    /// Serves an existing directory (one sub-directory per bucket) on a random loopback port;
    /// the listed buckets are created if missing. The directory is left in place on drop.
    pub async fn start_at(root: &Path, buckets: &[&str]) -> std::io::Result<Self> {
        Self::start_on(SocketAddr::from(([127, 0, 0, 1], 0)), root, buckets).await
    }

    /// Like [`TestS3::start_at`], bound to a given address (e.g. `127.0.0.1:9000`).
    pub async fn start_on(
        addr: SocketAddr,
        root: &Path,
        buckets: &[&str],
    ) -> std::io::Result<Self> {
        std::fs::create_dir_all(root)?;
        Self::serve(addr, root.to_path_buf(), None, buckets).await
    }

    async fn serve(
        addr: SocketAddr,
        root: PathBuf,
        tmp: Option<tempfile::TempDir>,
        buckets: &[&str],
    ) -> std::io::Result<Self> {
        for bucket in buckets {
            // s3s-fs: a top-level directory is a bucket.
            std::fs::create_dir_all(root.join(bucket))?;
        }
        // s3s_fs::Error has no Display; its Debug form is the useful one.
        let fs = s3s_fs::FileSystem::new(&root)
            .map_err(|e| std::io::Error::other(format!("s3s-fs: {e:?}")))?;
        let root = root.canonicalize()?;
        let plan = Arc::new(FaultPlan::default());
        let stats = Arc::new(Stats::default());
        let backend = Backend::default();
        let ignore_conditions = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let ignore_checksums = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let power = tokio::sync::watch::Sender::new(Power::Up);

        let mut builder = S3ServiceBuilder::new(FaultyFs {
            inner: fs,
            plan: plan.clone(),
            stats: stats.clone(),
            ignore_conditions: ignore_conditions.clone(),
            ignore_checksums: ignore_checksums.clone(),
        });
        builder.set_auth(SimpleAuth::from_single(ACCESS_KEY, SECRET_KEY));
        let service = FaultLayer {
            inner: builder.build(),
            plan: plan.clone(),
            stats: stats.clone(),
            backend: backend.clone(),
            power: power.subscribe(),
        };

        let listener = tokio::net::TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let task = tokio::spawn(accept_loop(listener, addr, service, power.subscribe()));

        Ok(Self {
            endpoint: format!("http://{addr}"),
            addr,
            root,
            _tmp: tmp,
            plan,
            stats,
            backend,
            ignore_conditions,
            ignore_checksums,
            power,
            task,
        })
    }

    /// From now on, accept `If-None-Match` and `If-Match` on PutObject and
    /// CompleteMultipartUpload and ignore them, as Garage 2.5 does on PutObject.
    pub fn ignore_conditions(&self) {
        self.ignore_conditions
            .store(true, std::sync::atomic::Ordering::SeqCst);
    }

    /// Goes down like a crashed server: the port stops answering and open connections are
    /// cut. The stored objects stay, for [`StoppedS3::start_again`].
    pub async fn stop(mut self) -> StoppedS3 {
        self.task.abort();
        // Once the task has ended, its listener and connections are gone.
        let _ = (&mut self.task).await;
        StoppedS3 {
            addr: self.addr,
            root: self.root.clone(),
            tmp: self._tmp.take(),
        }
    }

    /// Stops the server: connections to its port are refused, open ones are closed. Stored
    /// objects stay.
    pub fn go_down(&self) {
        self.power.send_replace(Power::Down);
    }

    /// Freezes the server: connections are accepted (the kernel does that for a frozen
    /// process too), but nothing is read or answered.
    pub fn hang(&self) {
        self.power.send_replace(Power::Hung);
    }

    /// Starts the server again on the same port and storage; after a hang, as a restart does,
    /// closes the connections the hung server held.
    pub fn come_back(&self) {
        self.power.send_replace(Power::Up);
    }

    pub fn power(&self) -> Power {
        *self.power.borrow()
    }

    /// `http://127.0.0.1:PORT`
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The directory s3s-fs stores everything in.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The directory holding the objects of `bucket` (object `a/b.pdf` is the file `a/b.pdf`).
    pub fn bucket_dir(&self, bucket: &str) -> PathBuf {
        self.root.join(bucket)
    }

    /// Creates a bucket directly in the backend.
    pub fn create_bucket(&self, bucket: &str) {
        std::fs::create_dir_all(self.bucket_dir(bucket)).expect("create bucket dir");
    }

    /// Removes a bucket with everything in it directly in the backend.
    pub fn remove_bucket(&self, bucket: &str) {
        std::fs::remove_dir_all(self.bucket_dir(bucket)).expect("remove bucket dir");
    }

    /// Whether the object exists, read from the backend directory (cheap, synchronous: usable
    /// inside `wait_until` conditions). s3s-fs renames objects into place, so existence implies
    /// the object is complete.
    pub fn exists(&self, bucket: &str, key: &str) -> bool {
        self.bucket_dir(bucket).join(key).is_file()
    }

    pub fn push(&self, op: Op, fault: Fault) {
        self.plan.push(op, fault);
    }

    /// Waits until every request that reached the backend has finished, including those whose
    /// client went away (a killed daemon): after it, what is stored and what is counted agree.
    pub async fn idle(&self) {
        self.backend.idle(Duration::from_secs(60)).await;
    }

    /// How many times the backend successfully wrote the object `key` (PutObject or
    /// CompleteMultipartUpload), counting writes the client was told had failed or never heard
    /// of. Waits for [`TestS3::idle`] first, so a write still finishing is counted.
    pub async fn puts(&self, key: &str) -> usize {
        self.idle().await;
        lock(&self.stats.writes).get(key).copied().unwrap_or(0)
    }

    /// Successful backend writes over all keys (after [`TestS3::idle`]).
    pub async fn total_puts(&self) -> usize {
        self.idle().await;
        lock(&self.stats.writes).values().sum()
    }

    /// Requests of this operation that reached the server (rejected and delayed ones included,
    /// the verification client's own requests too).
    /// Distinct session tokens (`x-amz-security-token`) requests carried.
    pub fn session_tokens(&self) -> Vec<String> {
        lock(&self.stats.session_tokens).clone()
    }

    /// From now on, drop `x-amz-checksum-sha256` (and the multipart checksum algorithm)
    /// unverified, as servers that do not know the header do; Content-MD5 is still verified.
    pub fn ignore_checksums(&self) {
        self.ignore_checksums
            .store(true, std::sync::atomic::Ordering::SeqCst);
    }

    /// The tags, storage class and encryption the last accepted write of `key` carried.
    pub fn options(&self, key: &str) -> Option<ObjectOptions> {
        lock(&self.stats.options).get(key).cloned()
    }

    /// Requests of `op` that carried a `Content-MD5` header (probe requests not counted).
    pub fn with_content_md5(&self, op: Op) -> usize {
        lock(&self.stats.content_md5)
            .get(&op)
            .copied()
            .unwrap_or_default()
    }

    /// Distinct regions the requests so far were signed for.
    pub fn signing_regions(&self) -> Vec<String> {
        lock(&self.stats.regions).clone()
    }

    pub fn requests(&self, op: Op) -> usize {
        lock(&self.stats.requests).get(&op).copied().unwrap_or(0)
    }

    /// Requests of this operation for this object key.
    pub fn requests_for(&self, op: Op, key: &str) -> usize {
        lock(&self.stats.requests_by_key)
            .get(&(op, key.to_owned()))
            .copied()
            .unwrap_or(0)
    }

    /// Multipart uploads the backend still holds open (created, neither completed nor
    /// aborted), as upload ids. s3s-fs has no ListMultipartUploads; it keeps one
    /// `.upload-<id>.json` file per open upload in its root, removed on complete and abort.
    pub fn open_uploads(&self) -> Vec<String> {
        let mut ids: Vec<String> = self
            .root_entries()
            .iter()
            .filter_map(|n| n.strip_prefix(".upload-")?.strip_suffix(".json"))
            .map(str::to_owned)
            .collect();
        ids.sort();
        ids
    }

    /// Parts stored for multipart uploads not yet completed or aborted, as
    /// `<upload id>.part-<n>` (s3s-fs keeps each as `.upload_id-<id>.part-<n>` in its root
    /// and removes them on complete and abort).
    pub fn stored_parts(&self) -> Vec<String> {
        let mut parts: Vec<String> = self
            .root_entries()
            .iter()
            .filter_map(|n| n.strip_prefix(".upload_id-"))
            .map(str::to_owned)
            .collect();
        parts.sort();
        parts
    }

    /// File names directly in the s3s-fs root (its bookkeeping lives there, beside buckets).
    fn root_entries(&self) -> Vec<String> {
        std::fs::read_dir(&self.root)
            .map(|entries| {
                entries
                    .flatten()
                    .filter(|e| e.file_type().is_ok_and(|t| t.is_file()))
                    .filter_map(|e| e.file_name().into_string().ok())
                    .collect()
            })
            .unwrap_or_default()
    }

    /// A client for verification: static credentials, path style, latest behaviour version.
    pub fn client(&self) -> aws_sdk_s3::Client {
        use aws_sdk_s3::config::{BehaviorVersion, Credentials, Region};
        let conf = aws_sdk_s3::Config::builder()
            .behavior_version(BehaviorVersion::latest())
            .region(Region::new(REGION))
            .endpoint_url(&self.endpoint)
            .force_path_style(true)
            .credentials_provider(Credentials::new(
                ACCESS_KEY, SECRET_KEY, None, None, "static",
            ))
            .build();
        aws_sdk_s3::Client::from_conf(conf)
    }

    /// The object's bytes through the S3 protocol, `None` if there is no such key.
    pub async fn get(&self, bucket: &str, key: &str) -> Option<Vec<u8>> {
        let res = self
            .client()
            .get_object()
            .bucket(bucket)
            .key(key)
            .send()
            .await;
        match res {
            Ok(out) => {
                let body = out.body.collect().await.expect("read object body");
                Some(body.into_bytes().to_vec())
            }
            Err(err) if err.as_service_error().is_some_and(|e| e.is_no_such_key()) => None,
            Err(err) => panic!("GetObject {bucket}/{key}: {err:?}"),
        }
    }

    /// Every key in the bucket, sorted, through the S3 protocol.
    pub async fn list(&self, bucket: &str) -> Vec<String> {
        let mut keys = Vec::new();
        let mut pages = self
            .client()
            .list_objects_v2()
            .bucket(bucket)
            .into_paginator()
            .send();
        while let Some(page) = pages.next().await {
            let page = page.unwrap_or_else(|e| panic!("ListObjectsV2 {bucket}: {e:?}"));
            keys.extend(
                page.contents()
                    .iter()
                    .filter_map(|o| o.key().map(str::to_owned)),
            );
        }
        keys.sort();
        keys
    }

    /// The object's user metadata (`x-amz-meta-*`, without the prefix), `None` if missing.
    pub async fn head_meta(&self, bucket: &str, key: &str) -> Option<HashMap<String, String>> {
        let res = self
            .client()
            .head_object()
            .bucket(bucket)
            .key(key)
            .send()
            .await;
        match res {
            Ok(out) => Some(out.metadata().cloned().unwrap_or_default()),
            Err(err) if err.as_service_error().is_some_and(|e| e.is_not_found()) => None,
            Err(err) => panic!("HeadObject {bucket}/{key}: {err:?}"),
        }
    }
}

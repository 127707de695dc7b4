//! The S3 side of uploading: the client, a streaming conditional PUT with a precomputed
//! SHA-256 checksum, HEAD, and the one pure function that classifies errors.

use std::path::Path;
use std::time::{Duration, SystemTime};

use aws_config::meta::region::RegionProviderChain;
use aws_sdk_s3::Client;
use aws_sdk_s3::config::retry::RetryConfig;
use aws_sdk_s3::config::timeout::TimeoutConfig;
use aws_sdk_s3::config::{BehaviorVersion, Region};
use aws_sdk_s3::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_s3::primitives::{ByteStream, Length};
use base64::Engine as _;

use crate::config::{S3Settings, UploadSettings};
use crate::stall::FsGuard;

/// What to do about a failed S3 call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Disposition {
    /// Throttling, 500, a conflict of the moment: this request may work if sent again later.
    Retry,
    /// The endpoint cannot be reached (connection refused or reset, DNS, TLS, timeout, a
    /// stalled request, 502/503/504 without a throttling code): not this file's problem. The
    /// file waits at the outage gate ([`super::gate`]) without spending attempts.
    Unreachable,
    /// 412 on a create-only write: something is already at the key; look at it.
    AlreadyExists,
    /// The server says the body does not match its checksum: the file may have changed.
    BadDigest,
    /// Bucket, credentials or clock problem: every file of the inbox would fail the same way,
    /// so pause the inbox instead of failing files (with a fix-it message, see
    /// [`super::fixit`]).
    FatalConfig,
    /// This file can never be uploaded as it is (e.g. 400 InvalidArgument, EntityTooLarge).
    Permanent,
    /// NoSuchUpload: the multipart upload no longer exists (completed already, or aborted by
    /// hand or by a lifecycle rule). Only multipart calls get it; they decide what it means.
    UploadGone,
    /// InvalidPart / InvalidPartOrder on completion: the server lacks parts the ledger
    /// remembers (lost or expired). That upload cannot be completed; a fresh one can.
    PartsMissing,
}

/// The kind of failure below the HTTP status, as far as it matters for classification.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    /// The server answered with a status code.
    Response,
    /// Timeout, connection refused/reset, broken response.
    Network,
    /// The request could not be built (a bug or unusable input).
    Construction,
}

/// Classifies a failure from its parts. Pure, so every case is unit-tested.
pub fn classify(transport: Transport, status: Option<u16>, code: Option<&str>) -> Disposition {
    use Disposition::*;
    match transport {
        Transport::Network => return Unreachable,
        Transport::Construction => return Permanent,
        Transport::Response => {}
    }
    match (status, code) {
        (Some(412), _) | (_, Some("PreconditionFailed")) => AlreadyExists,
        (_, Some("BadDigest" | "XAmzContentChecksumMismatch" | "InvalidDigest")) => BadDigest,
        (_, Some("NoSuchUpload")) => UploadGone,
        (_, Some("InvalidPart" | "InvalidPartOrder")) => PartsMissing,
        (_, Some("ConditionalRequestConflict")) => Retry,
        // Throttling and the server's own hiccups: per file, with backoff (the endpoint is
        // there, it only asks us to slow down).
        (
            _,
            Some(
                "SlowDown"
                | "Throttling"
                | "ThrottlingException"
                | "RequestLimitExceeded"
                | "BandwidthLimitExceeded"
                | "RequestTimeout"
                | "InternalError"
                | "OperationAborted"
                | "TooManyRequests"
                | "TooManyRequestsException",
            ),
        ) => Retry,
        // A server that is not ready (MinIO starting, Garage without quorum) says this.
        (_, Some("ServiceUnavailable")) => Unreachable,
        // No retry cures these; the SDK has already corrected a clock skew it could measure
        // and retried, so a skew error that gets here needs the clock fixed.
        (
            _,
            Some(
                "NoSuchBucket"
                | "AccessDenied"
                | "InvalidAccessKeyId"
                | "SignatureDoesNotMatch"
                | "ExpiredToken"
                | "TokenRefreshRequired"
                | "RequestTimeTooSkewed"
                | "AllAccessDisabled"
                | "InvalidBucketName"
                | "AccountProblem"
                | "PermanentRedirect"
                | "AuthorizationHeaderMalformed"
                | "InvalidToken",
            ),
        ) => FatalConfig,
        // HEAD answers carry no error body: judge by status alone.
        (Some(401 | 403), _) => FatalConfig,
        (Some(301 | 307), _) => FatalConfig,
        // A gateway with no server behind it, or a server that is down.
        (Some(502..=504), _) => Unreachable,
        (Some(408 | 409 | 429), _) => Retry,
        (Some(500..=599), _) => Retry,
        _ => Permanent,
    }
}

/// A failed S3 call: how to treat it, and a message for logs and reason files.
#[derive(Debug, Clone)]
pub struct S3Failure {
    pub disposition: Disposition,
    pub message: String,
    /// The server's error code, when it sent one (to tell which object option it refused).
    pub code: Option<String>,
}

impl std::fmt::Display for S3Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

pub(super) fn failure<E>(err: &SdkError<E, aws_sdk_s3::config::http::HttpResponse>) -> S3Failure
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
{
    let (transport, status) = match err {
        SdkError::ServiceError(ctx) => (Transport::Response, Some(ctx.raw().status().as_u16())),
        SdkError::ResponseError(ctx) => (Transport::Network, Some(ctx.raw().status().as_u16())),
        SdkError::TimeoutError(_) | SdkError::DispatchFailure(_) => (Transport::Network, None),
        SdkError::ConstructionFailure(_) => (Transport::Construction, None),
        _ => (Transport::Network, None),
    };
    let code = err.code();
    let disposition = classify(transport, status, code);
    let mut message = match (code, err.message()) {
        (Some(c), Some(m)) => format!("{c}: {m}"),
        (Some(c), None) => c.to_owned(),
        _ => error_chain(err),
    };
    if let Some(s) = status {
        message = format!("{message} (HTTP {s})");
    }
    if transport != Transport::Response
        && let Some(hint) = super::fixit::network_hint(&message)
    {
        message = format!("{message}: {hint}");
    }
    if disposition == Disposition::FatalConfig {
        let date = err.raw_response().and_then(|r| r.headers().get("date"));
        let skew = super::fixit::skew(date, SystemTime::now());
        if let Some(hint) = super::fixit::hint(code, status, skew) {
            message = format!("{message}: {hint}");
        }
    }
    S3Failure {
        disposition,
        message,
        code: code.map(str::to_owned),
    }
}

/// An error and its causes on one line ("dispatch failure: io error: connection refused"),
/// without the SDK's multi-line debug dump.
fn error_chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut parts: Vec<String> = vec![err.to_string()];
    let mut cur = err.source();
    while let Some(e) = cur {
        let text = e.to_string();
        if parts.last().is_none_or(|last| !last.contains(&text)) {
            parts.push(text);
        }
        cur = e.source();
    }
    parts
        .join(": ")
        .lines()
        .map(str::trim)
        .collect::<Vec<_>>()
        .join(" ")
}

/// Builds the client: the standard AWS credential chain, our endpoint and region, retries
/// with backoff inside the SDK for quick blips (our own loop handles longer outages).
pub async fn client(s3: &S3Settings, upload: &UploadSettings) -> Client {
    let retry = RetryConfig::standard()
        .with_max_attempts(3)
        .with_initial_backoff(upload.retry_initial.min(Duration::from_secs(1)))
        .with_max_backoff(upload.retry_max);
    // No attempt timeout: a large body legitimately takes long. A dead connection is caught by
    // the SDK's stalled-stream protection instead.
    let timeouts = TimeoutConfig::builder()
        .connect_timeout(s3.connect_timeout)
        .build();
    // Like every AWS tool: the configured region, else the AWS chain (AWS_REGION, the
    // profile), else us-east-1 (which most S3-compatible servers accept).
    let region = match &s3.region {
        Some(r) => RegionProviderChain::first_try(Region::new(r.clone())),
        None => RegionProviderChain::default_provider(),
    }
    .or_else(Region::from_static("us-east-1"));
    let mut loader = aws_config::defaults(BehaviorVersion::latest())
        .region(region)
        .retry_config(retry)
        .timeout_config(timeouts);
    if let Some(pem) = &s3.ca_pem {
        loader = loader.http_client(https_trusting(pem));
    }
    let sdk = loader.load().await;
    let mut b = aws_sdk_s3::config::Builder::from(&sdk).interceptor(super::liveness::Liveness);
    if let Some(ep) = &s3.endpoint {
        b = b.endpoint_url(ep);
    }
    b = b.force_path_style(s3.force_path_style);
    Client::from_conf(b.build())
}

/// The SDK's own HTTPS client (rustls with aws-lc, as by default), trusting `pem` (checked
/// when the configuration was loaded) in addition to the system's certificates.
fn https_trusting(pem: &[u8]) -> aws_sdk_s3::config::SharedHttpClient {
    use aws_smithy_http_client::tls::{self, TlsContext, TrustStore};
    let trust = TrustStore::default().with_pem_certificate(pem.to_vec());
    let builder = aws_smithy_http_client::Builder::new().tls_provider(tls::Provider::Rustls(
        tls::rustls_provider::CryptoMode::AwsLc,
    ));
    match TlsContext::builder().with_trust_store(trust).build() {
        Ok(ctx) => builder.tls_context(ctx).build_https(),
        // Only fails for unusable extra server names, which are never set here.
        Err(e) => {
            tracing::error!(error = %e, "cannot use s3.ca_file; using the system's certificates only");
            builder.build_https()
        }
    }
}

/// The `Content-Type` an object gets: guessed from the file's extension (mime_guess),
/// `application/octet-stream` when unknown, so browsers and downstream tools open it right.
pub fn content_type(rel: &Path) -> &'static str {
    mime_guess::from_path(rel)
        .first_raw()
        .unwrap_or("application/octet-stream")
}

/// Puts an object's options ([`super::object::Dressing`]) on a PutObject or a
/// CreateMultipartUpload request (the two builders share these methods but no trait).
macro_rules! dressed {
    ($req:expr, $d:expr) => {{
        let d: &super::object::Dressing = $d;
        let mut req = $req
            .content_type(d.content_type.as_str())
            .set_tagging(d.tagging.clone())
            .set_storage_class(
                d.storage_class
                    .as_deref()
                    .map(aws_sdk_s3::types::StorageClass::from),
            )
            .set_server_side_encryption(
                d.sse
                    .as_ref()
                    .map(|s| aws_sdk_s3::types::ServerSideEncryption::from(s.header())),
            )
            .set_ssekms_key_id(d.sse.as_ref().and_then(|s| match s {
                super::object::Sse::Kms { key_id } => key_id.clone(),
                super::object::Sse::Aes256 => None,
            }))
            .set_cache_control(d.cache_control.clone());
        for (name, value) in &d.metadata {
            req = req.metadata(name.as_str(), value.as_str());
        }
        req
    }};
}
pub(super) use dressed;

/// A server that stores objects encrypted says so in its answer (`x-amz-server-side-
/// encryption`). One that asked-for encryption leaves unconfirmed may have ignored the header
/// (Garage 2.5 does: it knows only SSE-C) and stored the object in the clear: said once per
/// bucket at WARN, because an administrator who set `sse` relies on it. The object itself is
/// whole and correct, so the file is not held back.
pub fn confirm_sse(
    bucket: &str,
    dress: &super::object::Dressing,
    answer: Option<&aws_sdk_s3::types::ServerSideEncryption>,
) {
    let Some(asked) = &dress.sse else { return };
    if answer.is_some() {
        return;
    }
    static WARNED: std::sync::Mutex<Vec<String>> = std::sync::Mutex::new(Vec::new());
    let mut warned = WARNED.lock().unwrap_or_else(|p| p.into_inner());
    if warned.iter().any(|b| b == bucket) {
        return;
    }
    warned.push(bucket.to_owned());
    tracing::warn!(
        bucket,
        sse = asked.header(),
        "the server did not confirm server-side encryption: it may store objects unencrypted; \
         check that it supports `sse`, or remove the key"
    );
}

/// One PUT of a whole file.
pub struct Put<'a> {
    pub bucket: &'a str,
    pub key: &'a str,
    /// The file is `root/rel` (opened through [`crate::beneath`], never through a link).
    pub root: &'a Path,
    pub rel: &'a Path,
    /// The inbox's file-system guard, for opening the file.
    pub guard: &'a FsGuard,
    /// The file's bytes, when it is small enough to be sent from memory.
    pub content: Option<bytes::Bytes>,
    pub size: u64,
    pub sha256: &'a [u8; 32],
    /// Sent as `Content-MD5` when set (to servers that verify it but not SHA-256).
    pub content_md5: Option<&'a [u8; 16]>,
    /// `Content-Type`, metadata and the other object options.
    pub dress: &'a super::object::Dressing,
    /// Replace only this exact object (its ETag); `None` means create-only (If-None-Match: *).
    pub replace_etag: Option<&'a str>,
    /// Replace whatever is there (on_conflict = "overwrite").
    pub unconditional: bool,
    /// Given up after this long without progress (`s3.stall_timeout`).
    pub stall: Duration,
}

/// Why an upload did not happen.
#[derive(Debug)]
pub enum PutError {
    /// The file could not be opened for the body (vanished or unreadable).
    File(String),
    /// The file changed while its parts were sent; nothing was completed.
    Changed,
    /// Shutdown: stopped before finishing.
    Interrupted,
    /// The ledger could not durably record a step that must be recorded before the next one
    /// (a multipart upload id before its first part). The daemon's problem, never the file's:
    /// the file is deferred, not failed.
    Ledger(String),
    S3(S3Failure),
}

/// Streams the file as the body of a PUT. The precomputed SHA-256 goes in
/// `x-amz-checksum-sha256`, so the server verifies the bytes, and the SDK neither adds its own
/// CRC32 nor switches to aws-chunked encoding (which several S3-compatible servers reject).
/// Returns the ETag.
pub async fn put_file(client: &Client, p: Put<'_>) -> Result<Option<String>, PutError> {
    let mut _pinned = None;
    let body = match p.content {
        Some(bytes) => ByteStream::from(bytes),
        None => {
            let pinned = open_pinned(p.guard, p.root, p.rel).await?;
            file_body(_pinned.insert(pinned), 0, p.size).await?
        }
    };
    let hex = hex::encode(p.sha256);
    let mut req = client
        .put_object()
        .bucket(p.bucket)
        .key(p.key)
        .body(body)
        .content_length(p.size as i64)
        .checksum_sha256(base64::engine::general_purpose::STANDARD.encode(p.sha256))
        .metadata(super::object::OWN_METADATA, hex)
        .set_content_md5(
            p.content_md5
                .map(|m| base64::engine::general_purpose::STANDARD.encode(m)),
        );
    req = dressed!(req, p.dress);
    if let Some(etag) = p.replace_etag {
        req = req.if_match(etag);
    } else if !p.unconditional {
        req = req.if_none_match("*");
    }
    match super::liveness::watched(p.stall, req.send()).await {
        Ok(out) => {
            confirm_sse(p.bucket, p.dress, out.server_side_encryption());
            Ok(out.e_tag().map(str::to_owned))
        }
        Err(f) => Err(PutError::S3(f)),
    }
}

/// Opens the file `root/rel` for a body: a regular file, reached without following links,
/// under its inbox's time limit (a share that does not answer is an error of the open).
pub async fn open_pinned(
    guard: &FsGuard,
    root: &Path,
    rel: &Path,
) -> Result<crate::beneath::Pinned, PutError> {
    let (root, rel) = (root.to_path_buf(), rel.to_path_buf());
    match guard
        .run(move || crate::beneath::Pinned::open(&root, &rel))
        .await
    {
        Ok(Ok(pinned)) => Ok(pinned),
        Ok(Err(e)) => Err(PutError::File(e.to_string())),
        Err(stalled) => Err(PutError::File(stalled.to_string())),
    }
}

/// `len` bytes from `offset` of the pinned file as a body; keep `pinned` until the request
/// is done. Through its /proc path the SDK can read the body again for a retry of its own;
/// without /proc the body is the open file itself, and a failed request is retried by the
/// upload loop instead.
pub async fn file_body(
    pinned: &crate::beneath::Pinned,
    offset: u64,
    len: u64,
) -> Result<ByteStream, PutError> {
    let b = ByteStream::read_from();
    let b = match pinned.path() {
        Some(path) => b.path(path),
        None => {
            let f = pinned.file().map_err(|e| PutError::File(e.to_string()))?;
            b.file(tokio::fs::File::from_std(f))
        }
    };
    b.offset(offset)
        .length(Length::Exact(len))
        .buffer_size(256 * 1024)
        .build()
        .await
        .map_err(|e| PutError::File(e.to_string()))
}

/// What HEAD says about an existing object.
#[derive(Debug, Clone)]
pub struct Head {
    pub sha256: Option<String>,
    pub size: Option<i64>,
    pub etag: Option<String>,
}

/// HEAD of `key`; `Ok(None)` when there is no object.
pub async fn head(client: &Client, bucket: &str, key: &str) -> Result<Option<Head>, S3Failure> {
    match client.head_object().bucket(bucket).key(key).send().await {
        Ok(out) => Ok(Some(Head {
            sha256: out.metadata().and_then(|m| m.get("sha256").cloned()),
            size: out.content_length(),
            etag: out.e_tag().map(str::to_owned),
        })),
        Err(SdkError::ServiceError(ctx)) if ctx.raw().status().as_u16() == 404 => Ok(None),
        Err(e) => Err(failure(&e)),
    }
}

/// Probes a bucket as `inboxd check` does: reachable with these credentials (HeadBucket), and
/// writable without leaving anything behind (start a multipart upload under the prefix and
/// abort it at once).
pub async fn probe(
    client: &Client,
    bucket: &str,
    prefix: &str,
    object: &super::object::ObjectSettings,
) -> Result<(), String> {
    let head = client.head_bucket().bucket(bucket).send().await;
    if let Err(e) = &head
        && e.code().is_none()
        && matches!(
            e.raw_response().map(|r| r.status().as_u16()),
            Some(400 | 301)
        )
    {
        // HEAD answers have no body, so a 400 says nothing (a wrong region, mostly). A GET
        // of the same bucket gets the server's own words, e.g. which region it expects.
        if let Err(e) = client
            .list_objects_v2()
            .bucket(bucket)
            .prefix(prefix)
            .max_keys(1)
            .send()
            .await
        {
            return Err(format!("bucket {bucket} not usable: {}", failure(&e)));
        }
    }
    head.map_err(|e| {
        let f = failure(&e);
        // HeadBucket answers carry no error code: the status says what the fix is.
        let status = e.raw_response().map(|r| r.status().as_u16());
        match status {
            Some(404) => format!(
                "bucket {bucket} does not exist (HeadBucket: 404): {}",
                super::fixit::hint(Some("NoSuchBucket"), status, None).unwrap_or_default()
            ),
            Some(403) => format!(
                "access to bucket {bucket} denied (HeadBucket: 403): {}",
                super::fixit::hint(None, status, None).unwrap_or_default()
            ),
            _ => format!("bucket {bucket} not reachable: {f}"),
        }
    })?;
    let key = format!("{prefix}.inboxd-check");
    // With the inbox's object options (storage class, encryption, tags, …): a server that
    // refuses one says so here, at install time, rather than at the first file.
    let facts = super::template::Facts {
        rel: ".inboxd-check",
        inbox: "",
        host: crate::run::host_name(),
        found_at: 0,
        sha256_hex: "",
    };
    let dress = object.dress(Path::new(".inboxd-check"), &facts);
    let create = client.create_multipart_upload().bucket(bucket).key(&key);
    let created = dressed!(create, &dress).send().await.map_err(|e| {
        let f = failure(&e);
        match object.refused_option(f.code.as_deref(), &f.message) {
            Some(option) => format!("the server refuses this inbox's {option}: {f}"),
            None => format!("not writable: {f}"),
        }
    })?;
    if let Some(id) = created.upload_id() {
        client
            .abort_multipart_upload()
            .bucket(bucket)
            .key(&key)
            .upload_id(id)
            .send()
            .await
            .map_err(|e| format!("write probe could not be cleaned up: {}", failure(&e)))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::Disposition::*;
    use super::Transport::*;
    use super::*;

    #[test]
    fn classification() {
        assert_eq!(classify(Network, None, None), Unreachable);
        assert_eq!(classify(Construction, None, None), Permanent);
        assert_eq!(classify(Response, Some(503), Some("SlowDown")), Retry);
        assert_eq!(classify(Response, Some(500), Some("InternalError")), Retry);
        assert_eq!(classify(Response, Some(500), None), Retry);
        assert_eq!(classify(Response, Some(503), Some("Throttling")), Retry);
        // Down, not throttling: the outage gate, not per-file retries.
        assert_eq!(classify(Response, Some(502), None), Unreachable);
        assert_eq!(classify(Response, Some(503), None), Unreachable);
        assert_eq!(classify(Response, Some(504), None), Unreachable);
        assert_eq!(
            classify(Response, Some(503), Some("ServiceUnavailable")),
            Unreachable
        );
        // Operator errors pause the inbox: no retry cures them.
        for code in [
            "ExpiredToken",
            "RequestTimeTooSkewed",
            "InvalidAccessKeyId",
            "SignatureDoesNotMatch",
            "AccessDenied",
        ] {
            assert_eq!(
                classify(Response, Some(403), Some(code)),
                FatalConfig,
                "{code}"
            );
        }
        assert_eq!(
            classify(Response, Some(400), Some("ExpiredToken")),
            FatalConfig
        );
        assert_eq!(classify(Response, Some(429), None), Retry);
        assert_eq!(
            classify(Response, Some(412), Some("PreconditionFailed")),
            AlreadyExists
        );
        assert_eq!(
            classify(Response, Some(409), Some("ConditionalRequestConflict")),
            Retry
        );
        assert_eq!(
            classify(Response, Some(403), Some("AccessDenied")),
            FatalConfig
        );
        assert_eq!(classify(Response, Some(403), None), FatalConfig);
        assert_eq!(
            classify(Response, Some(404), Some("NoSuchBucket")),
            FatalConfig
        );
        assert_eq!(
            classify(Response, Some(403), Some("InvalidAccessKeyId")),
            FatalConfig
        );
        assert_eq!(classify(Response, Some(400), Some("BadDigest")), BadDigest);
        assert_eq!(
            classify(Response, Some(400), Some("InvalidArgument")),
            Permanent
        );
        assert_eq!(
            classify(Response, Some(400), Some("EntityTooLarge")),
            Permanent
        );
        assert_eq!(classify(Response, Some(400), Some("RequestTimeout")), Retry);
        assert_eq!(
            classify(Response, Some(400), Some("KeyTooLongError")),
            Permanent
        );
        assert_eq!(
            classify(Response, Some(404), Some("NoSuchUpload")),
            UploadGone
        );
        assert_eq!(
            classify(Response, Some(400), Some("InvalidPart")),
            PartsMissing
        );
        assert_eq!(
            classify(Response, Some(400), Some("InvalidPartOrder")),
            PartsMissing
        );
    }
}

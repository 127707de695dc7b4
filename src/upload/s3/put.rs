//! The request that sends a whole file: [`put_file`], a streaming conditional PUT with a
//! precomputed SHA-256 checksum, and the file bodies it and multipart parts are read from
//! ([`open_pinned`], [`file_body`]).

use std::path::Path;
use std::time::Duration;

use aws_sdk_s3::Client;
use aws_sdk_s3::primitives::{ByteStream, Length};
use base64::Engine as _;

use super::dress::{confirm_sse, dressed};
use super::errors::S3Failure;
use crate::stall::FsGuard;

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
    pub dress: &'a crate::upload::object::Dressing,
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
        .metadata(crate::upload::object::OWN_METADATA, hex)
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
    match crate::upload::liveness::watched(p.stall, req.send()).await {
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

//! Sending the parts of a multipart upload: those the ledger does not list as stored yet, at
//! most as many at a time as the global upload limit allows, each part retried on its own
//! transient errors, and each stored part recorded so that a resumed upload skips it.

use base64::Engine as _;
use futures::StreamExt;

use super::{b64, forget_upload};
use crate::ledger::Record;
use crate::settle::ReadyFile;
use crate::upload::hash::Digests;
use crate::upload::liveness::watched;
use crate::upload::s3::{Disposition, PutError};
use crate::upload::{Shared, backoff};

/// Sends every part of `file` not yet in `rec` to the upload `(bucket, key, upload id)`,
/// recording each one stored. An upload found gone is forgotten, to be started afresh.
pub(super) async fn send_parts(
    sh: &Shared,
    file: &ReadyFile,
    (bucket, key, upload_id): (&str, &str, &str),
    rec: &mut Record,
    part_size: u64,
    digests: &Digests,
) -> Result<(), PutError> {
    let part_digests = &digests.parts;
    let count = part_digests.len() as u32;
    let todo: Vec<u32> = (1..=count)
        .filter(|n| !rec.parts.iter().any(|(done, _)| done == n))
        .collect();
    // Cancelled when one part fails for good (and by shutdown, as a child of `intake`): parts
    // not yet sent then never start. Parts already on the wire are waited for instead of
    // dropped: a server finishes a part whose body it has received even after the client
    // hangs up, and an abort sent before it does would leave that part stored behind the
    // aborted upload.
    let stop = sh.intake.child_token();
    let mut parts = futures::stream::iter(todo)
        .map(|n| {
            let offset = (n as u64 - 1) * part_size;
            let len = part_size.min(file.size - offset);
            let part = Part {
                n,
                offset,
                len,
                digest: &part_digests[n as usize - 1],
                md5: digests.part_md5s.get(n as usize - 1),
            };
            upload_part(sh, &stop, file, (bucket, key, upload_id), part)
        })
        // No more parts in flight than the global limit could ever run; the limit itself
        // (a semaphore shared with every other upload) decides how many actually run.
        .buffer_unordered(sh.settings.concurrency);
    let mut failure = None;
    while let Some(res) = parts.next().await {
        match res {
            Ok((n, etag)) => {
                rec.parts.push((n, etag));
                // Not flushed per part: sled's background flush persists it within a second;
                // a part lost from the record is simply sent again on resume.
                if let Err(e) = sh.ledger.put(rec) {
                    tracing::warn!(error = %e, "cannot record a finished part; it may be sent again");
                }
            }
            // A part that never started because an earlier one failed: not a failure itself.
            Err(PutError::Interrupted) if failure.is_some() => {}
            Err(e) => {
                stop.cancel();
                failure.get_or_insert(e);
            }
        }
    }
    drop(parts);
    match failure {
        None => Ok(()),
        Some(PutError::S3(f)) if f.disposition == Disposition::UploadGone => {
            // The upload is gone (aborted by a lifecycle rule or by hand): start over.
            Err(forget_upload(
                &sh.ledger,
                rec,
                Disposition::Retry,
                f.message,
            ))
        }
        Some(e) => Err(e),
    }
}

/// One part of a file: its number, where it lies in the file, and its SHA-256.
struct Part<'a> {
    n: u32,
    offset: u64,
    len: u64,
    digest: &'a [u8; 32],
    /// Sent as `Content-MD5` when set (see upload::capabilities).
    md5: Option<&'a [u8; 16]>,
}

/// Uploads one part of `file` to the upload `(bucket, key, upload id)`, retrying transient
/// errors with backoff. Returns (part number, ETag).
async fn upload_part(
    sh: &Shared,
    stop: &tokio_util::sync::CancellationToken,
    file: &ReadyFile,
    (bucket, key, upload_id): (&str, &str, &str),
    part: Part<'_>,
) -> Result<(u32, String), PutError> {
    let Part {
        n,
        offset,
        len,
        digest,
        md5: part_md5,
    } = part;
    let mut transient = 0u32;
    loop {
        // Shutting down, or another part of this upload failed: no new part starts (on
        // shutdown the upload resumes on the next start).
        if stop.is_cancelled() {
            return Err(PutError::Interrupted);
        }
        // The parts permit first, then the global one: parts never queue for more than their
        // share of the upload slots (see `Shared::parts`).
        let permit = tokio::select! {
            p = async {
                let part = sh.parts.acquire().await?;
                let slot = sh.uploads.acquire().await?;
                Ok::<_, tokio::sync::AcquireError>((part, slot))
            } => p.map_err(|_| PutError::Interrupted)?,
            _ = stop.cancelled() => return Err(PutError::Interrupted),
        };
        // This very file (regular, reached without following links), also on an SDK retry;
        // open until the part is sent.
        let pinned =
            crate::upload::s3::open_pinned(&sh.guards[file.inbox], &file.root, &file.at).await?;
        let body = crate::upload::s3::file_body(&pinned, offset, len).await?;
        let send = sh
            .client
            .upload_part()
            .bucket(bucket)
            .key(key)
            .upload_id(upload_id)
            .part_number(n as i32)
            .content_length(len as i64)
            .checksum_sha256(b64(digest))
            .set_content_md5(part_md5.map(|m| base64::engine::general_purpose::STANDARD.encode(m)))
            .body(body)
            .send();
        let res = tokio::select! {
            r = watched(sh.stall, send) => r,
            _ = sh.abort.cancelled() => return Err(PutError::Interrupted),
        };
        drop(permit);
        let f = match res {
            Ok(out) => return Ok((n, out.e_tag().unwrap_or_default().to_owned())),
            Err(f) => f,
        };
        // Anything but a transient error of this part ends the upload's round (an unreachable
        // endpoint: the whole file waits at the outage gate, then resumes from stored parts).
        if f.disposition != Disposition::Retry {
            return Err(PutError::S3(f));
        }
        transient += 1;
        if transient >= sh.settings.max_attempts {
            return Err(PutError::S3(f));
        }
        let delay = backoff(sh.settings.retry_initial, sh.settings.retry_max, transient);
        tracing::warn!(part = n, error = %f, retry_in = ?delay, "part upload failed; retrying");
        tokio::select! {
            _ = tokio::time::sleep(delay) => {}
            _ = stop.cancelled() => return Err(PutError::Interrupted),
        }
    }
}

//! Multipart uploads for large files: parts run concurrently under the same global limit as
//! whole files, each part carries its own SHA-256 checksum, and every stored part is
//! recorded in the ledger so an interrupted upload resumes where it stopped.
//!
//! Safety rules:
//! - the upload id is flushed to the ledger before any part is sent, so a crash never leaves
//!   an upload inboxd does not know about (startup aborts the ones it cannot resume);
//! - a resumed upload only reuses parts recorded for the same content (the ledger record is
//!   keyed by the file's SHA-256);
//! - the file is checked unchanged after the last part and before completing, so an object
//!   is never assembled from two versions of a file.

use aws_sdk_s3::error::ProvideErrorMetadata;
use aws_sdk_s3::types::{ChecksumAlgorithm, CompletedMultipartUpload, CompletedPart};
use base64::Engine as _;
use futures::StreamExt;

use super::capabilities::{self, Cond};
use super::liveness::watched;
use super::s3::{Disposition, PutError, S3Failure};
use super::{Job, Shared, backoff, changed_since};
use crate::config::MIB;
use crate::ledger::{Ledger, Record, State};
use crate::settle::ReadyFile;

/// S3's limits: at most 10 000 parts, each 5 MiB to 5 GiB (the last may be smaller).
const MAX_PARTS: u64 = 10_000;
const MIN_PART: u64 = 5 * MIB;
const MAX_PART: u64 = 5 * 1024 * MIB;
/// The largest object S3 accepts.
pub const MAX_OBJECT: u64 = 5 * 1024 * 1024 * MIB;

/// The part size for a file: the configured one, grown (in whole MiB) as needed to stay
/// within 10 000 parts.
pub fn part_size_for(size: u64, preferred: u64) -> u64 {
    preferred
        .max(size.div_ceil(MAX_PARTS))
        .max(MIN_PART)
        .next_multiple_of(MIB)
        .min(MAX_PART)
}

/// How the completion may treat an existing object at the key.
#[derive(Debug, Clone, Copy)]
pub enum Condition<'a> {
    /// Only if nothing is there (If-None-Match: *).
    CreateOnly,
    /// Only if exactly this object is there (If-Match).
    Replace(&'a str),
    /// Whatever is there (on_conflict = "overwrite").
    Unconditional,
}

impl Condition<'_> {
    fn kind(&self) -> Cond {
        match self {
            Condition::CreateOnly => Cond::CreateOnly,
            Condition::Replace(_) => Cond::Replace,
            Condition::Unconditional => Cond::Unconditional,
        }
    }

    fn etag(&self) -> Option<&str> {
        match self {
            Condition::Replace(etag) => Some(etag),
            _ => None,
        }
    }
}

fn b64(d: &[u8; 32]) -> String {
    base64::engine::general_purpose::STANDARD.encode(d)
}

fn s3_failure<E>(
    e: &aws_sdk_s3::error::SdkError<E, aws_sdk_s3::config::http::HttpResponse>,
) -> S3Failure
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
{
    super::s3::failure(e)
}

/// One multipart upload of `file` to `key`, resuming the upload recorded in `rec` when it
/// is for the same key and part size. Returns the ETag of the completed object.
pub(super) async fn send(
    sh: &Shared,
    job: &Job<'_>,
    key: &str,
    rec: &mut Record,
    part_size: u64,
    digests: &super::hash::Digests,
    cond: Condition<'_>,
) -> Result<Option<String>, PutError> {
    let Job {
        file,
        inbox,
        hex: whole_hex,
        ..
    } = *job;
    let client = &sh.client;
    let bucket = inbox.bucket.as_str();
    // Where the server would not enforce the condition at completion, look at the key
    // before sending any part (a taken key is found before gigabytes go up for nothing) and
    // again right before completing.
    let plan = sh.known.get(bucket).complete(cond.kind());
    if plan.look_first
        && let Err(f) = capabilities::look(client, bucket, key, cond.etag()).await
    {
        if f.disposition == Disposition::AlreadyExists {
            // A recorded upload for this key can never complete there either.
            abort_recorded(client, &sh.ledger, bucket, rec).await;
        }
        return Err(PutError::S3(f));
    }

    // Reuse the recorded upload only if it is for this very key and part size.
    let reusable = rec.upload_id.is_some()
        && rec.part_size == Some(part_size)
        && rec.key.as_deref() == Some(key);
    if !reusable {
        abort_recorded(client, &sh.ledger, bucket, rec).await;
    }
    let upload_id = match rec.upload_id.clone().filter(|_| reusable) {
        Some(id) => {
            tracing::info!(
                key,
                parts_done = rec.parts.len(),
                "resuming multipart upload"
            );
            id
        }
        None => {
            let create = client
                .create_multipart_upload()
                .bucket(bucket)
                .key(key)
                .checksum_algorithm(ChecksumAlgorithm::Sha256)
                .metadata(super::object::OWN_METADATA, whole_hex);
            let create = super::s3::dressed!(create, job.dress).send();
            let created = tokio::select! {
                r = watched(sh.stall, create) => r,
                _ = sh.abort.cancelled() => return Err(PutError::Interrupted),
            };
            let created = created.map_err(PutError::S3)?;
            let Some(id) = created.upload_id().map(str::to_owned) else {
                return Err(PutError::S3(S3Failure {
                    disposition: Disposition::Retry,
                    message: "CreateMultipartUpload answered without an upload id".into(),
                    code: None,
                }));
            };
            rec.upload_id = Some(id.clone());
            rec.part_size = Some(part_size);
            rec.parts.clear();
            rec.key = Some(key.to_owned());
            rec.state = State::Uploading;
            // Durable before the first part: after a crash we know this upload exists and
            // can resume or abort it; it is never left behind unknown.
            let recorded = match sh.ledger.put(rec) {
                Ok(()) if crate::failpoint_error("ledger-record-upload-id") => {
                    Err("injected by a failpoint".to_owned())
                }
                Ok(()) => sh.ledger.flush().await.map_err(|e| e.to_string()),
                Err(e) => Err(e.to_string()),
            };
            if let Err(e) = recorded {
                // Unrecorded, the upload would be unknown after a crash: abort it while its id
                // is still in memory (best effort), and let the whole file wait for a ledger
                // that works again.
                abort_recorded(client, &sh.ledger, bucket, rec).await;
                return Err(PutError::Ledger(e));
            }
            id
        }
    };

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
            upload_part(sh, &stop, file, (bucket, key, upload_id.as_str()), part)
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
        None => {}
        Some(PutError::S3(f)) if f.disposition == Disposition::UploadGone => {
            // The upload is gone (aborted by a lifecycle rule or by hand): start over.
            return Err(forget_upload(
                &sh.ledger,
                rec,
                Disposition::Retry,
                f.message,
            ));
        }
        Some(e) => return Err(e),
    }

    // Every part was read from the file by now. If the file changed meanwhile, the parts may
    // mix versions (servers that do not verify part checksums would accept them): never
    // complete such an upload.
    if changed_since(sh, file).await {
        return Err(PutError::Changed);
    }

    let mut done = rec.parts.clone();
    done.sort_by_key(|(n, _)| *n);
    let completed: Vec<CompletedPart> = done
        .iter()
        .map(|(n, etag)| {
            CompletedPart::builder()
                .part_number(*n as i32)
                .e_tag(etag)
                .checksum_sha256(b64(&part_digests[*n as usize - 1]))
                .build()
        })
        .collect();
    let mut req = client
        .complete_multipart_upload()
        .bucket(bucket)
        .key(key)
        .upload_id(&upload_id)
        .multipart_upload(
            CompletedMultipartUpload::builder()
                .set_parts(Some(completed))
                .build(),
        );
    if plan.look_first
        && let Err(f) = capabilities::look(client, bucket, key, cond.etag()).await
    {
        if f.disposition == Disposition::AlreadyExists {
            // The key was taken while the parts went up: this upload can never complete
            // there (the caller decides where the file goes instead).
            abort_recorded(client, &sh.ledger, bucket, rec).await;
        }
        return Err(PutError::S3(f));
    }
    req = match cond {
        _ if !plan.send_header => req,
        Condition::CreateOnly => req.if_none_match("*"),
        Condition::Replace(etag) => req.if_match(etag),
        Condition::Unconditional => req,
    };
    let res = {
        let Ok(_permit) = sh.uploads.acquire().await else {
            return Err(PutError::Interrupted);
        };
        tokio::select! {
            r = watched(sh.stall, req.send()) => r,
            _ = sh.abort.cancelled() => return Err(PutError::Interrupted),
        }
    };
    match res {
        Ok(out) => {
            rec.upload_id = None;
            rec.parts.clear();
            rec.part_size = None;
            super::s3::confirm_sse(bucket, job.dress, out.server_side_encryption());
            Ok(out.e_tag().map(str::to_owned))
        }
        Err(f) => {
            if f.disposition == Disposition::UploadGone {
                // Completed already (an earlier answer was lost) or gone: either way this
                // upload id is finished. Let the caller look at what the key holds.
                return Err(forget_upload(
                    &sh.ledger,
                    rec,
                    Disposition::AlreadyExists,
                    f.message,
                ));
            }
            if f.disposition == Disposition::PartsMissing {
                // The server does not have the parts the ledger remembers (it lost them, or
                // they expired): this upload cannot be completed. Start a fresh one rather
                // than fail a file that is perfectly fine.
                abort_recorded(client, &sh.ledger, bucket, rec).await;
                return Err(PutError::S3(S3Failure {
                    disposition: Disposition::Retry,
                    message: f.message,
                    code: None,
                }));
            }
            if f.disposition == Disposition::AlreadyExists {
                // Something else is at the key: this upload can never complete there.
                abort_recorded(client, &sh.ledger, bucket, rec).await;
            }
            Err(PutError::S3(f))
        }
    }
}

/// The recorded upload id no longer exists at the server: forget it, and let the caller go on
/// as `then` says.
fn forget_upload(
    ledger: &Ledger,
    rec: &mut Record,
    then: Disposition,
    message: String,
) -> PutError {
    rec.upload_id = None;
    rec.parts.clear();
    // Best effort: a record that still names the gone upload costs one NoSuchUpload next time.
    let _ = ledger.put(rec);
    PutError::S3(S3Failure {
        disposition: then,
        message,
        code: None,
    })
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
        let pinned = super::s3::open_pinned(&sh.guards[file.inbox], &file.root, &file.at).await?;
        let body = super::s3::file_body(&pinned, offset, len).await?;
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

/// The longest wait for the answer to an abort (a tiny request): beyond it the server hangs.
const ABORT_WAIT: std::time::Duration = std::time::Duration::from_secs(30);

/// Aborts the multipart upload recorded in `rec`, if any, and forgets it. Best effort: an
/// upload that cannot be aborted now is logged (a bucket lifecycle rule for incomplete
/// multipart uploads is the backstop).
pub(crate) async fn abort_recorded(
    client: &aws_sdk_s3::Client,
    ledger: &Ledger,
    bucket: &str,
    rec: &mut Record,
) {
    let (Some(id), Some(key)) = (rec.upload_id.take(), rec.key.clone()) else {
        return;
    };
    rec.parts.clear();
    rec.part_size = None;
    let abort = client
        .abort_multipart_upload()
        .bucket(bucket)
        .key(&key)
        .upload_id(&id)
        .send();
    // Bounded: this runs at startup (recovery) and after a failed upload, where a server that
    // accepts connections and never answers must not hold the start or an upload slot.
    let Ok(aborted) = tokio::time::timeout(ABORT_WAIT, abort).await else {
        tracing::warn!(key, upload_id = %id, waited = ?ABORT_WAIT,
            "no answer to aborting an unfinished multipart upload; it may remain in the bucket until a lifecycle rule removes it");
        return;
    };
    match aborted {
        Ok(_) => tracing::info!(key, "aborted an unfinished multipart upload"),
        Err(e) => {
            let f = s3_failure(&e);
            // Gone already is what an abort wants: nothing to say.
            if f.disposition != Disposition::UploadGone {
                tracing::warn!(key, upload_id = %id, error = %f,
                    "cannot abort an unfinished multipart upload; it may remain in the bucket until a lifecycle rule removes it");
            }
        }
    }
    if let Err(e) = ledger.put(rec) {
        tracing::warn!(error = %e, "cannot record an aborted multipart upload");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn part_sizes_respect_s3_limits() {
        let gib = 1024 * MIB;
        assert_eq!(part_size_for(100 * MIB, 16 * MIB), 16 * MIB);
        assert_eq!(part_size_for(100 * MIB, MIB), 5 * MIB);
        // 1 TiB at 16 MiB would be 65 536 parts: grow to stay within 10 000.
        let p = part_size_for(1024 * gib, 16 * MIB);
        assert!((1024 * gib).div_ceil(p) <= MAX_PARTS);
        assert_eq!(p % MIB, 0);
        assert_eq!(
            part_size_for(MAX_OBJECT, 16 * MIB),
            MAX_PART.min(part_size_for(MAX_OBJECT, 16 * MIB))
        );
        assert!(MAX_OBJECT.div_ceil(part_size_for(MAX_OBJECT, 16 * MIB)) <= MAX_PARTS);
    }
}

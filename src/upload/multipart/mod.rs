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
//!
//! A folder by job: `send` (here) runs one upload through its steps: open or resume it
//! (`open.rs`), send the parts (`parts.rs`), complete it (`complete.rs`); the part size a file
//! gets is in `size.rs`.

use base64::Engine as _;

use super::capabilities::{self, Cond};
use super::s3::{Disposition, PutError, S3Failure};
use super::{Job, Shared, changed_since};
use crate::ledger::{Ledger, Record};

mod complete;
mod open;
mod parts;
mod size;

pub use size::{MAX_OBJECT, part_size_for};

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
    let bucket = job.inbox.bucket.as_str();
    // Where the server would not enforce the condition at completion, look at the key
    // before sending any part (a taken key is found before gigabytes go up for nothing) and
    // again right before completing.
    let plan = sh.known.get(bucket).complete(cond.kind());
    if plan.look_first {
        look_at_key(sh, bucket, key, cond, rec).await?;
    }
    let upload_id = open::open_or_resume(sh, job, key, rec, part_size).await?;
    let upload = (bucket, key, upload_id.as_str());
    parts::send_parts(sh, job.file, upload, rec, part_size, digests).await?;
    // Every part was read from the file by now. If the file changed meanwhile, the parts may
    // mix versions (servers that do not verify part checksums would accept them): never
    // complete such an upload.
    if changed_since(sh, job.file).await {
        return Err(PutError::Changed);
    }
    if plan.look_first {
        look_at_key(sh, bucket, key, cond, rec).await?;
    }
    complete::complete(sh, job, upload, rec, &digests.parts, cond, plan.send_header).await
}

/// Looks at the key for a server that would not enforce `cond` itself. A key taken by another
/// object ends the recorded upload too: it can never complete there (the caller decides where
/// the file goes instead).
async fn look_at_key(
    sh: &Shared,
    bucket: &str,
    key: &str,
    cond: Condition<'_>,
    rec: &mut Record,
) -> Result<(), PutError> {
    let Err(f) = capabilities::look(&sh.client, bucket, key, cond.etag()).await else {
        return Ok(());
    };
    if f.disposition == Disposition::AlreadyExists {
        abort_recorded(&sh.client, &sh.ledger, bucket, rec).await;
    }
    Err(PutError::S3(f))
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
            let f = super::s3::failure(&e);
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

//! Opening a multipart upload, or resuming the one the ledger recorded. A new upload id is
//! durable in the ledger before it is returned, so no part is ever sent to an upload inboxd
//! would not know about after a crash.

use aws_sdk_s3::types::ChecksumAlgorithm;

use super::abort_recorded;
use crate::ledger::{Record, State};
use crate::upload::liveness::watched;
use crate::upload::s3::{Disposition, PutError, S3Failure};
use crate::upload::{Job, Shared};

/// The upload id to send the parts to: the one recorded in `rec` when it is for this very key
/// and part size, else a new one (a recorded one for anything else is aborted first).
pub(super) async fn open_or_resume(
    sh: &Shared,
    job: &Job<'_>,
    key: &str,
    rec: &mut Record,
    part_size: u64,
) -> Result<String, PutError> {
    let client = &sh.client;
    let bucket = job.inbox.bucket.as_str();
    // Reuse the recorded upload only if it is for this very key and part size.
    let reusable = rec.upload_id.is_some()
        && rec.part_size == Some(part_size)
        && rec.key.as_deref() == Some(key);
    if !reusable {
        abort_recorded(client, &sh.ledger, bucket, rec).await;
    }
    if let Some(id) = rec.upload_id.clone().filter(|_| reusable) {
        tracing::info!(
            key,
            parts_done = rec.parts.len(),
            "resuming multipart upload"
        );
        return Ok(id);
    }
    let create = client
        .create_multipart_upload()
        .bucket(bucket)
        .key(key)
        .checksum_algorithm(ChecksumAlgorithm::Sha256)
        .metadata(crate::upload::object::OWN_METADATA, job.hex);
    let create = crate::upload::s3::dressed!(create, job.dress).send();
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
    // Durable before the first part: after a crash we know this upload exists and can resume
    // or abort it; it is never left behind unknown.
    let recorded = match sh.ledger.put(rec) {
        Ok(()) if crate::failpoint_error("ledger-record-upload-id") => {
            Err("injected by a failpoint".to_owned())
        }
        Ok(()) => sh.ledger.flush().await.map_err(|e| e.to_string()),
        Err(e) => Err(e.to_string()),
    };
    if let Err(e) = recorded {
        // Unrecorded, the upload would be unknown after a crash: abort it while its id is
        // still in memory (best effort), and let the whole file wait for a ledger that works
        // again.
        abort_recorded(client, &sh.ledger, bucket, rec).await;
        return Err(PutError::Ledger(e));
    }
    Ok(id)
}

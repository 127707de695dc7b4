//! Completing a multipart upload: the stored parts assembled into the object, under the
//! condition on what may already be at the key, and what each refusal means for the upload.

use aws_sdk_s3::types::{CompletedMultipartUpload, CompletedPart};

use super::{Condition, abort_recorded, b64, forget_upload};
use crate::ledger::Record;
use crate::upload::liveness::watched;
use crate::upload::s3::{Disposition, PutError, S3Failure};
use crate::upload::{Job, Shared};

/// Completes the upload `(bucket, key, upload id)` from the parts recorded in `rec` (their
/// SHA-256s in `part_digests`), sending `cond` as a header when `send_header`. Returns the
/// ETag of the object.
pub(super) async fn complete(
    sh: &Shared,
    job: &Job<'_>,
    (bucket, key, upload_id): (&str, &str, &str),
    rec: &mut Record,
    part_digests: &[[u8; 32]],
    cond: Condition<'_>,
    send_header: bool,
) -> Result<Option<String>, PutError> {
    let client = &sh.client;
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
        .upload_id(upload_id)
        .multipart_upload(
            CompletedMultipartUpload::builder()
                .set_parts(Some(completed))
                .build(),
        );
    req = match cond {
        _ if !send_header => req,
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
            crate::upload::s3::confirm_sse(bucket, job.dress, out.server_side_encryption());
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

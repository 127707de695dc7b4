//! The attempts for one file: the write (a single PUT or a multipart upload) under the
//! right condition, and what each failure leads to — retry with backoff, pause the inbox,
//! defer, fail. A key already taken is judged in [`super::existing`].

use super::capabilities::{self, Cond};
use super::existing::{Existing, Target, on_existing_object};
use super::gate::Blocked;
use super::next::{Next, next_step};
use super::pause::Admit;
use super::s3::{self, Disposition, Put, PutError};
use super::{FileResult, Job, Shared, backoff, changed_since, multipart};
use crate::ledger::Record;
use crate::run::Mode;

/// How a file's bytes go up.
#[derive(Clone)]
pub(super) enum Body<'a> {
    /// One PUT; small files carry their bytes (read once, hashed and sent from memory).
    Single {
        content: Option<bytes::Bytes>,
        md5: Option<[u8; 16]>,
    },
    Multipart {
        part_size: u64,
        digests: &'a super::hash::Digests,
    },
}

/// Uploads with retries, conflict handling and pausing. Returns attempts made and the result.
pub(super) async fn upload_loop(
    sh: &Shared,
    job: &Job<'_>,
    rec: &mut Record,
    body: Body<'_>,
) -> (u32, FileResult) {
    let Job {
        file,
        inbox,
        default_key,
        rel,
        sha,
        hex,
        ..
    } = *job;
    let pause = &sh.pauses[file.inbox];
    let mut key = default_key.to_owned();
    let mut replace_etag: Option<String> = None;
    let mut unconditional = false;
    let mut attempts = 0u32;
    let mut transient = 0u32;
    // Bounded so that a server answering nonsense cannot keep us in the conflict dance.
    let mut conflict_rounds = 0u32;
    loop {
        if sh.mode == Mode::Daemon
            && let Admit::Later { reason, until } = pause.admit()
        {
            // Paused: hand the file back at once rather than wait here, so a paused inbox
            // holds no upload task, memory or admission slot that other inboxes need.
            return (attempts, FileResult::Paused { reason, until });
        }
        if sh.intake.is_cancelled() {
            // Shutting down and this upload has not started: it stays for the next start.
            return (attempts, FileResult::Interrupted);
        }
        // While the endpoint cannot be reached, the file waits here without spending attempts.
        let attempt = match sh.gate.pass(&sh.intake).await {
            Ok(a) => a,
            Err(blocked) => return (attempts, blocked_result(blocked)),
        };
        attempts += 1;
        let res = match &body {
            Body::Single { content, md5 } => {
                single_put(
                    sh,
                    Put {
                        bucket: &inbox.bucket,
                        key: &key,
                        root: &file.root,
                        rel: &file.at,
                        guard: &sh.guards[file.inbox],
                        content: content.clone(),
                        content_md5: md5.as_ref(),
                        dress: job.dress,
                        size: file.size,
                        sha256: sha,
                        replace_etag: replace_etag.as_deref(),
                        unconditional,
                        stall: sh.stall,
                    },
                )
                .await
            }
            &Body::Multipart { part_size, digests } => {
                let cond = match (&replace_etag, unconditional) {
                    (Some(etag), _) => multipart::Condition::Replace(etag),
                    (None, true) => multipart::Condition::Unconditional,
                    (None, false) => multipart::Condition::CreateOnly,
                };
                // Boxed: the multipart future is large, and inline it would make every file's task
                // (small files included) as large, copied at each spawn and move.
                Box::pin(multipart::send(
                    sh, job, &key, rec, part_size, digests, cond,
                ))
                .await
            }
        };

        let failure = match res {
            Ok(etag) => {
                crate::failpoint("after-upload");
                pause.resume();
                if replace_etag.is_some() {
                    // The abandoned earlier version is replaced: nothing to remember any more.
                    let _ = sh.ledger.remove_abandoned(&inbox.bucket, &key);
                }
                // Whether the file is still the one uploaded is checked by finish, right before
                // it moves the file, in the same call as the move (no hand-off per file here,
                // and no gap between the check and the move).
                if key != default_key {
                    tracing::warn!(key = %crate::telemetry::escape(&key), default_key, "a different object already had this file's key; uploaded under a new key");
                }
                return (
                    attempts,
                    FileResult::Uploaded {
                        key,
                        etag,
                        existed: false,
                    },
                );
            }
            Err(PutError::File(e)) => {
                if changed_since(sh, file).await {
                    return (attempts, FileResult::Changed);
                }
                return (
                    attempts,
                    FileResult::Failed {
                        reason: format!("cannot read the file: {e}"),
                    },
                );
            }
            Err(PutError::Changed) => {
                tracing::warn!(key = %crate::telemetry::escape(&key), "file changed during upload; it will be uploaded again once stable");
                return (attempts, FileResult::Changed);
            }
            Err(PutError::Interrupted) => return (attempts, FileResult::Interrupted),
            Err(PutError::Ledger(e)) => {
                // Nothing is wrong with the file: it stays in the inbox and is tried again
                // after retry_later, when the ledger may be writable again.
                return (
                    attempts,
                    FileResult::Deferred {
                        reason: format!("the ledger cannot be written: {e}"),
                    },
                );
            }
            Err(PutError::S3(f)) => f,
        };
        // A refusal of one of the inbox's object options (SSE on a server without it, a
        // storage class it does not know) would fail every file the same way: it pauses the
        // inbox, with a message naming the key to change, instead of failing files one by one.
        let failure = match failure.disposition {
            Disposition::AlreadyExists
            | Disposition::BadDigest
            | Disposition::Unreachable
            | Disposition::UploadGone
            | Disposition::PartsMissing => failure,
            _ => match inbox
                .object
                .refused_option(failure.code.as_deref(), &failure.message)
            {
                Some(option) => s3::S3Failure {
                    disposition: Disposition::FatalConfig,
                    message: format!(
                        "the server refused this inbox's {option} ({}): change or remove it \
                         in the configuration, then reload",
                        failure.message
                    ),
                    code: failure.code,
                },
                None => failure,
            },
        };

        let disposition = match failure.disposition {
            Disposition::AlreadyExists => {
                conflict_rounds += 1;
                if conflict_rounds > 4 {
                    return (
                        attempts,
                        FileResult::Deferred {
                            reason: format!("the object at {key} keeps changing: {failure}"),
                        },
                    );
                }
                let mut target = Target {
                    key: &mut key,
                    replace_etag: &mut replace_etag,
                    unconditional: &mut unconditional,
                };
                match Box::pin(on_existing_object(
                    sh,
                    file,
                    inbox,
                    default_key,
                    rel,
                    hex,
                    &mut target,
                ))
                .await
                {
                    Existing::Done(result) => {
                        if matches!(result, FileResult::Uploaded { .. }) {
                            pause.resume();
                        }
                        return (attempts, result);
                    }
                    Existing::TryAgain => continue,
                    Existing::HeadFailed(d) => d,
                }
            }
            Disposition::BadDigest => {
                if changed_since(sh, file).await {
                    return (attempts, FileResult::Changed);
                }
                // The bytes were damaged on the way; sending again is the cure.
                Disposition::Retry
            }
            // The multipart code turns these into a fresh upload or a look at the key before
            // they get here; should one arrive, a new attempt starts a new upload.
            Disposition::UploadGone | Disposition::PartsMissing => Disposition::Retry,
            d => d,
        };

        if disposition != Disposition::FatalConfig {
            // Whatever this says, it is not a verdict on the bucket or the credentials.
            pause.probe_inconclusive();
        }
        if disposition == Disposition::Unreachable {
            match sh.gate.failed(attempt, &failure.message, &sh.intake).await {
                Err(blocked) => return (attempts, blocked_result(blocked)),
                // The endpoint was down (the gate has said so, once for all files) and is
                // back: not this file's failure, so no attempt is spent and no line written.
                Ok(false) => continue,
                // The endpoint answers: the failure is this request's own (a reset of this
                // upload, say). Counted like any transient error, so it cannot go on forever.
                Ok(true) => {}
            }
        } else {
            drop(attempt);
        }
        match next_step(disposition, transient, sh.settings.max_attempts, sh.mode) {
            Next::Retry { transient: t } => {
                transient = t;
                let delay = backoff(sh.settings.retry_initial, sh.settings.retry_max, transient);
                tracing::warn!(error = %failure, retry_in = ?delay, attempt = attempts, "upload failed; retrying");
                crate::run::retried();
                tokio::select! {
                    _ = tokio::time::sleep(delay) => {}
                    _ = sh.intake.cancelled() => return (attempts, FileResult::Interrupted),
                }
            }
            Next::Defer => {
                if disposition == Disposition::FatalConfig {
                    // `once`: nothing pauses; say what to fix, and leave the file.
                    tracing::error!(error = %failure, "bucket, credential or clock problem; the error says what to fix");
                }
                return (
                    attempts,
                    FileResult::Deferred {
                        reason: failure.message,
                    },
                );
            }
            Next::Pause => {
                let until = pause.pause(&failure.message);
                return (
                    attempts,
                    FileResult::Paused {
                        reason: failure.message,
                        until,
                    },
                );
            }
            Next::Fail => {
                return (
                    attempts,
                    FileResult::Failed {
                        reason: failure.message,
                    },
                );
            }
        }
    }
}

/// What a file that did not get through the outage gate becomes.
fn blocked_result(blocked: Blocked) -> FileResult {
    match blocked {
        Blocked::Interrupted => FileResult::Interrupted,
        // `once`: the endpoint stayed unreachable; the file stays for the next run.
        Blocked::GaveUp(reason) => FileResult::Deferred { reason },
    }
}

/// One PUT under the global limit; abandoned when the grace period ends.
async fn single_put(sh: &Shared, mut put: Put<'_>) -> Result<Option<String>, PutError> {
    let cond = match (put.replace_etag, put.unconditional) {
        (Some(_), _) => Cond::Replace,
        (None, true) => Cond::Unconditional,
        (None, false) => Cond::CreateOnly,
    };
    // Where the server would not enforce the condition, look at the key first: what is there
    // is then judged by the caller exactly as a 412 would be.
    let plan = sh.known.get(put.bucket).put(cond);
    if plan.look_first {
        Box::pin(capabilities::look(
            &sh.client,
            put.bucket,
            put.key,
            put.replace_etag,
        ))
        .await
        .map_err(PutError::S3)?;
    }
    if !plan.send_header {
        // The server refuses requests carrying it; the look above stands in for it.
        put.replace_etag = None;
        put.unconditional = true;
    }
    let _permit = tokio::select! {
        p = sh.uploads.acquire() => p.map_err(|_| PutError::Interrupted)?,
        _ = sh.intake.cancelled() => return Err(PutError::Interrupted),
    };
    tokio::select! {
        // Boxed: the SDK's request future is large (tens of KiB); inline it would make every
        // file's task as large, copied whole at each spawn.
        r = Box::pin(s3::put_file(&sh.client, put)) => r,
        // Grace period over: abandon. Nothing is recorded as uploaded, so the next start
        // does this file again (and finds the object if it did land).
        _ = sh.abort.cancelled() => Err(PutError::Interrupted),
    }
}

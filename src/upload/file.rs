//! The life of one file in the upload stage, in order: checks that need no reading (kind,
//! name, size limits), hashing, what the ledger knows of this exact file ([`ledger_verdict`],
//! pure), the object's key and options, then the attempts ([`super::attempts`]) and the
//! result that goes to finish.

use std::time::Duration;

use tokio::time::Instant;
use tracing::Instrument;

use super::attempts::{Body, upload_loop};
use super::{FileResult, Outcome, Shared, keys, multipart, object, reading, template};
use crate::config::InboxSettings;
use crate::ledger::{Record, State};
use crate::settle::{Kind, ReadyFile, Signature};

/// The life of one file in this stage.
pub(super) async fn process(sh: &Shared, file: ReadyFile, batch: u64) -> Outcome {
    let inbox = &sh.inboxes[file.inbox];
    let span = tracing::info_span!("file", inbox = %inbox.name, path = %crate::telemetry::escape(&file.rel));
    let began = Instant::now();
    let (sha256, attempts, result) = process_inner(sh, &file, inbox).instrument(span).await;
    Outcome {
        batch,
        file,
        sha256,
        attempts,
        result,
        took: began.elapsed(),
    }
}

async fn process_inner(
    sh: &Shared,
    file: &ReadyFile,
    inbox: &InboxSettings,
) -> (Option<String>, u32, FileResult) {
    if sh.intake.is_cancelled() {
        // Shutdown came before the file was read: it stays in the inbox for the next start.
        return (None, 0, FileResult::Interrupted);
    }
    let failed = |reason: String| FileResult::Failed { reason };
    match &file.kind {
        Kind::Regular => {}
        Kind::NotRegular(why) => return (None, 0, failed(format!("this is {why}"))),
        // Never read, let alone uploaded: settle's reason says what was missing.
        Kind::Incomplete(why) => return (None, 0, failed(why.clone())),
    }
    // Keys are text: a name that is not UTF-8 cannot become one (checked before reading).
    let Some(rel) = file.rel.to_str().map(str::to_owned) else {
        return (None, 0, failed(keys::KeyError::NotUtf8.to_string()));
    };
    // Checked before the file is read: a limit exists to spare the disk and the line.
    if let Some(max) = inbox.max_file_size.filter(|max| file.size > *max) {
        return (
            None,
            0,
            failed(format!(
                "{} ({} bytes) is larger than this inbox's max_file_size, {} ({max} bytes)",
                bytesize::ByteSize(file.size),
                file.size,
                bytesize::ByteSize(max)
            )),
        );
    }
    if file.size > multipart::MAX_OBJECT {
        return (
            None,
            0,
            failed("larger than 5 TiB, the largest object S3 accepts".into()),
        );
    }
    let part_size = (file.size > sh.settings.multipart_threshold)
        .then(|| multipart::part_size_for(file.size, sh.settings.part_size));

    // Hash first: the content is the file's identity, and the checksum the server verifies.
    let mut digests = match reading::digests(sh, file, part_size).await {
        Ok(d) => d,
        Err(result) => return (None, 0, result),
    };
    let hex = hex::encode(digests.whole);
    let sha_out = Some(hex.clone());

    // The ledger remembers what happened to this exact file before.
    let mut rec = match sh.ledger.get(&inbox.name, &rel, Some(&hex)) {
        Ok(r) => r,
        Err(e) => {
            return (
                sha_out,
                0,
                FileResult::Deferred {
                    reason: format!("ledger unreadable: {e}"),
                },
            );
        }
    };
    match ledger_verdict(rec.as_ref(), &file.sig) {
        Verdict::Upload => {}
        Verdict::MoveToFailed { reason } => {
            return (sha_out, 0, FileResult::Failed { reason });
        }
        Verdict::Duplicate { key } => {
            tracing::info!(
                key = key.as_deref().unwrap_or(""),
                "identical file was uploaded before; not uploading again"
            );
            return (sha_out, 0, FileResult::Duplicate { key });
        }
        Verdict::MoveToDone { key, etag } => {
            // An uploaded record always has its key (written with the state); an old one
            // without falls back to the default key, as before templates existed.
            let key = match key {
                Some(k) => k,
                None => match keys::object_key(&inbox.prefix, &file.rel) {
                    Ok(k) => k,
                    Err(e) => return (sha_out, 0, failed(e.to_string())),
                },
            };
            tracing::info!(key = %crate::telemetry::escape(&key), "already uploaded before a restart; moving it");
            return (
                sha_out,
                0,
                FileResult::Uploaded {
                    key,
                    etag,
                    existed: true,
                },
            );
        }
    }
    // No "uploading" record for a single PUT: after a crash the conditional PUT and HEAD
    // recognise our own object. A multipart upload records itself before its first part.
    let mut r = rec
        .take()
        .unwrap_or_else(|| Record::new(&inbox.name, &rel, Some(&hex), file.size, &inbox.bucket));
    let (default_key, dress) = match name_object(sh, file, inbox, &rel, &hex, &mut r).await {
        Ok(named) => named,
        Err(result) => return (sha_out, 0, result),
    };

    let body = match part_size {
        Some(ps) => Body::Multipart {
            part_size: ps,
            digests: &digests,
        },
        None => Body::Single {
            content: digests.content.take().map(bytes::Bytes::from),
            md5: digests.md5,
        },
    };
    let job = Job {
        file,
        inbox,
        default_key: &default_key,
        dress: &dress,
        rel: &rel,
        sha: &digests.whole,
        hex: &hex,
    };
    let (attempts, result) = upload_loop(sh, &job, &mut r, body).await;
    if matches!(result, FileResult::Failed { .. } | FileResult::Changed) {
        // This content will never complete that multipart upload: abort it now rather than
        // leave parts behind. (Deferred and interrupted uploads keep theirs to resume.)
        multipart::abort_recorded(&sh.client, &sh.ledger, &inbox.bucket, &mut r).await;
    }
    (sha_out, attempts, result)
}

/// The file's key (the inbox's template, rendered) and object options. When they depend on
/// the moment the file was found complete, that moment is first made durable in the ledger:
/// a retry after a crash or restart must render the same key, or the file could end up in
/// the bucket twice under two dates.
async fn name_object(
    sh: &Shared,
    file: &ReadyFile,
    inbox: &InboxSettings,
    rel: &str,
    hex: &str,
    r: &mut Record,
) -> Result<(String, object::Dressing), FileResult> {
    let o = &inbox.object;
    let kept = r.found_at;
    let found_at = kept.unwrap_or_else(|| found_at(file.ready_at));
    let facts = template::Facts {
        rel,
        inbox: &inbox.name,
        host: crate::run::host_name(),
        found_at,
        sha256_hex: hex,
    };
    let key = o
        .key(&inbox.prefix, &file.rel, &facts)
        .map_err(|reason| FileResult::Failed { reason })?;
    let dress = o.dress(&file.rel, &facts);
    if kept.is_none() && o.uses_time() {
        r.found_at = Some(found_at);
        let durable = match sh.ledger.put(r) {
            Ok(()) => sh.ledger.flush().await.map_err(|e| e.to_string()),
            Err(e) => Err(e.to_string()),
        };
        if let Err(e) = durable {
            // The daemon's problem, not the file's: it waits in the inbox.
            return Err(FileResult::Deferred {
                reason: format!("the ledger cannot be written: {e}"),
            });
        }
    }
    Ok((key, dress))
}

/// Wall-clock seconds (UTC) of the moment settle found the file complete (`ready_at`).
fn found_at(ready_at: Instant) -> i64 {
    let then = std::time::SystemTime::now() - ready_at.elapsed();
    then.duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

/// One file's upload as the attempts see it: the file, where it goes unless its key is taken,
/// and its content's identity.
#[derive(Clone, Copy)]
pub(super) struct Job<'a> {
    pub(super) file: &'a ReadyFile,
    pub(super) inbox: &'a InboxSettings,
    pub(super) default_key: &'a str,
    /// Content-Type, metadata and the other object options.
    pub(super) dress: &'a object::Dressing,
    /// The relative path with `/` separators, as the ledger names the file.
    pub(super) rel: &'a str,
    pub(super) sha: &'a [u8; 32],
    pub(super) hex: &'a str,
}

/// What the ledger's record of this very content says to do with the file.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Verdict {
    /// Not uploaded yet (or an earlier attempt was interrupted): upload it.
    Upload,
    /// Failed before, and the move to failed/ did not happen (it failed, or a crash came
    /// first; or the file was copied there and its original could not be removed): do not
    /// upload again, only move it. A file an admin moved back from failed/ has a recorded
    /// destination and is uploaded again.
    MoveToFailed { reason: String },
    /// Uploaded and moved before: an identical file dropped again.
    Duplicate { key: Option<String> },
    /// Uploaded, then the daemon stopped before the file moved: only move it now.
    MoveToDone {
        key: Option<String>,
        etag: Option<String>,
    },
}

/// Pure: the ledger's record for this content (if any) and the file's signature → what to do.
fn ledger_verdict(rec: Option<&Record>, sig: &Signature) -> Verdict {
    let Some(r) = rec else {
        return Verdict::Upload;
    };
    // This very file (same device and inode) was copied to done/ or failed/ on another file
    // system but could not be removed from the inbox: never copy or upload it again.
    let left_here = r.source_left == Some([sig.dev, sig.ino]);
    match r.state {
        State::Failed if left_here || r.dest.is_none() => Verdict::MoveToFailed {
            reason: r
                .reason
                .clone()
                .unwrap_or_else(|| "failed before".to_owned()),
        },
        State::Finished => Verdict::Duplicate { key: r.key.clone() },
        State::Uploaded => Verdict::MoveToDone {
            key: r.key.clone(),
            etag: r.etag.clone(),
        },
        State::Failed | State::Uploading => Verdict::Upload,
    }
}

/// Exponential backoff with jitter: base doubles per attempt up to `max`, and the actual
/// wait is uniformly between half and all of it, so many files retrying do not stampede.
pub(super) fn backoff(initial: Duration, max: Duration, attempt: u32) -> Duration {
    let exp = initial.saturating_mul(1u32 << attempt.saturating_sub(1).min(16));
    let base = exp.min(max);
    let half = base / 2;
    half + half.mul_f64(fastrand::f64())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ledger_decides_what_a_known_file_needs() {
        let sig = Signature {
            size: 10,
            mtime_ns: 1,
            ino: 42,
            dev: 7,
        };
        assert_eq!(ledger_verdict(None, &sig), Verdict::Upload);
        let mut r = Record::new("in", "a.pdf", Some("ab"), 10, "b");
        assert_eq!(ledger_verdict(Some(&r), &sig), Verdict::Upload, "uploading");
        r.state = State::Uploaded;
        r.key = Some("k".into());
        r.etag = Some("e".into());
        assert_eq!(
            ledger_verdict(Some(&r), &sig),
            Verdict::MoveToDone {
                key: Some("k".into()),
                etag: Some("e".into())
            }
        );
        r.state = State::Finished;
        assert_eq!(
            ledger_verdict(Some(&r), &sig),
            Verdict::Duplicate {
                key: Some("k".into())
            }
        );
        r.state = State::Failed;
        r.reason = Some("bad".into());
        assert_eq!(
            ledger_verdict(Some(&r), &sig),
            Verdict::MoveToFailed {
                reason: "bad".into()
            },
            "failed, never moved: only the move is owed"
        );
        r.dest = Some("/failed/a.pdf".into());
        assert_eq!(
            ledger_verdict(Some(&r), &sig),
            Verdict::Upload,
            "moved back from failed/ by an admin: upload again"
        );
        r.source_left = Some([7, 42]);
        assert!(
            matches!(ledger_verdict(Some(&r), &sig), Verdict::MoveToFailed { .. }),
            "this very file was copied already: never again"
        );
    }

    #[test]
    fn backoff_grows_and_is_capped() {
        let i = Duration::from_millis(100);
        let m = Duration::from_secs(2);
        for _ in 0..50 {
            let b1 = backoff(i, m, 1);
            assert!(b1 >= Duration::from_millis(50) && b1 <= i, "{b1:?}");
            let b3 = backoff(i, m, 3);
            assert!(b3 >= Duration::from_millis(200) && b3 <= Duration::from_millis(400));
            let b20 = backoff(i, m, 20);
            assert!(b20 >= Duration::from_secs(1) && b20 <= m);
        }
    }
}

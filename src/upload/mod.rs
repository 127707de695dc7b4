//! upload: uploads every file it is handed concurrently under one global limit
//! (`upload.concurrency`), so a large or slow file never holds back the others; parts of
//! large files may hold at most three quarters of the slots.
//!
//! Per file: hash (streamed, bounded memory; small files are read once and sent from
//! memory) → consult the ledger (already uploaded or already finished? then no upload) →
//! conditional PUT, or a resumable multipart upload, with SHA-256 checksums the server
//! verifies → classify any error → retry, pause the inbox, defer, or fail the file. The
//! result is an [`Outcome`], passed to finish in a [`Report`].

mod attempts;
pub mod hash;
pub mod keys;
pub mod multipart;
pub mod pause;
pub mod s3;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;

use aws_sdk_s3::Client;
use tokio::sync::{Semaphore, mpsc};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument;

use crate::batch::{BatchInfo, Batched};
use crate::config::{InboxSettings, UploadSettings};
use crate::ledger::{Ledger, Record, State};
use crate::run::Mode;
use crate::settle::{Kind, ReadyFile, Signature};
use crate::stall::FsGuard;
use attempts::{Body, upload_loop};
use pause::Pause;

/// What became of one file; sent to finish.
#[derive(Debug)]
pub struct Outcome {
    pub batch: Arc<BatchInfo>,
    pub file: ReadyFile,
    /// Hex SHA-256, when the file could be read.
    pub sha256: Option<String>,
    /// PUT attempts made.
    pub attempts: u32,
    pub result: FileResult,
}

/// What flows from upload to finish.
#[derive(Debug)]
pub enum Report {
    File(Box<Outcome>),
    /// Forwarded from batch: the batch has all its files (their outcomes may still come).
    BatchClosed(Arc<BatchInfo>),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FileResult {
    /// The object holds exactly this file. `existed`: it was already there (uploaded before a
    /// crash, or by an earlier attempt whose answer was lost), so nothing was sent again.
    Uploaded {
        key: String,
        etag: Option<String>,
        existed: bool,
    },
    /// This exact file (same place, same content) was uploaded and finished before.
    Duplicate { key: Option<String> },
    /// It can never be uploaded as it is: goes to failed/ with this reason.
    Failed { reason: String },
    /// S3 trouble that may pass (outage, throttling, paused inbox at `once`): the file stays
    /// in the inbox and is tried again later.
    Deferred { reason: String },
    /// Its inbox is paused (bucket or credential problem): the file stays in the inbox and
    /// is offered again at `until`, when one file probes whether the problem is gone.
    Paused { reason: String, until: Instant },
    /// The file changed or vanished while being processed: it goes round again once stable.
    Changed,
    /// Shutdown came first: the file stays in the inbox for the next start.
    Interrupted,
}

/// Everything the per-file tasks share.
struct Shared {
    client: Client,
    inboxes: Arc<Vec<InboxSettings>>,
    settings: UploadSettings,
    ledger: Ledger,
    mode: Mode,
    /// The one limit over all uploads in flight.
    uploads: Semaphore,
    /// Parts of multipart uploads take a permit here before one of `uploads`. It has fewer
    /// permits than `uploads`, so however many large files are in flight, a quarter of the
    /// upload slots stay free for whole files: a large file never holds back small ones.
    parts: Semaphore,
    /// Hashing reads whole files; a few at a time keep the disk busy without thrashing it.
    /// Large files hash in their own lane, so that hashing a few huge files (seconds to
    /// minutes) never makes small files wait.
    hashing: Semaphore,
    hashing_large: Semaphore,
    pauses: Vec<Pause>,
    /// Files found unreadable (permission denied), and since when.
    unreadable: UnreadableSince,
    /// One per inbox: its file-system calls run under its time limit (see [`crate::stall`]).
    guards: Vec<FsGuard>,
    /// Cancelled at shutdown: no new upload starts.
    intake: CancellationToken,
    /// Cancelled when the grace period is over: uploads still running are abandoned.
    abort: CancellationToken,
}

pub struct UploadStage {
    pub client: Client,
    pub inboxes: Arc<Vec<InboxSettings>>,
    pub settings: UploadSettings,
    pub max_batch_files: usize,
    pub ledger: Ledger,
    pub mode: Mode,
    pub intake: CancellationToken,
    pub abort: CancellationToken,
    pub stats: Arc<crate::run::Stats>,
    pub guards: Vec<FsGuard>,
}

impl UploadStage {
    pub async fn run(self, mut input: mpsc::Receiver<Batched>, output: mpsc::Sender<Report>) {
        let hashers = std::thread::available_parallelism().map_or(2, |n| n.get().clamp(2, 8));
        let pauses = self
            .inboxes
            .iter()
            .map(|i| {
                Pause::new(
                    &i.name,
                    self.settings.retry_initial,
                    self.settings.retry_max,
                )
            })
            .collect();
        // Files admitted at once: enough to keep every upload slot busy while others hash or
        // wait for their report, few enough that a stalled S3 pushes back on settle instead
        // of piling up tasks.
        let admission = Arc::new(Semaphore::new(
            self.settings.concurrency * 2 + self.max_batch_files,
        ));
        let shared = Arc::new(Shared {
            uploads: Semaphore::new(self.settings.concurrency),
            parts: Semaphore::new(part_slots(self.settings.concurrency)),
            hashing: Semaphore::new(hashers),
            hashing_large: Semaphore::new(hashers),
            client: self.client,
            inboxes: self.inboxes,
            settings: self.settings,
            ledger: self.ledger,
            mode: self.mode,
            pauses,
            unreadable: UnreadableSince::default(),
            guards: self.guards,
            intake: self.intake,
            abort: self.abort,
        });
        let tracker = TaskTracker::new();
        while let Some(item) = input.recv().await {
            let (info, file) = match item {
                Batched::File(info, file) => (info, file),
                Batched::Closed(info) => {
                    if output.send(Report::BatchClosed(info)).await.is_err() {
                        break; // finish is gone: the daemon is going down
                    }
                    continue;
                }
            };
            self.stats.mark_started();
            let Ok(permit) = admission.clone().acquire_owned().await else {
                break; // never closed
            };
            let shared = shared.clone();
            let output = output.clone();
            tracker.spawn(async move {
                let outcome = process(&shared, file, info).await;
                // If finish is gone the daemon is going down; the ledger still knows.
                let _ = output.send(Report::File(Box::new(outcome))).await;
                drop(permit);
            });
        }
        tracker.close();
        tracker.wait().await;
    }
}

fn outcome(
    batch: Arc<BatchInfo>,
    file: ReadyFile,
    sha256: Option<String>,
    attempts: u32,
    result: FileResult,
) -> Outcome {
    Outcome {
        batch,
        file,
        sha256,
        attempts,
        result,
    }
}

/// The life of one file in this stage.
async fn process(sh: &Shared, file: ReadyFile, batch: Arc<BatchInfo>) -> Outcome {
    let inbox = &sh.inboxes[file.inbox];
    let span = tracing::info_span!("file", inbox = %inbox.name, path = %crate::telemetry::escape(&file.rel));
    let (sha, attempts, result) = process_inner(sh, &file, inbox).instrument(span).await;
    outcome(batch, file, sha, attempts, result)
}

async fn process_inner(
    sh: &Shared,
    file: &ReadyFile,
    inbox: &InboxSettings,
) -> (Option<String>, u32, FileResult) {
    let failed = |reason: String| FileResult::Failed { reason };
    if let Kind::NotRegular(why) = &file.kind {
        return (None, 0, failed(format!("this is {why}")));
    }
    let default_key = match keys::object_key(&inbox.prefix, &file.rel) {
        Ok(k) => k,
        Err(e) => return (None, 0, failed(e.to_string())),
    };
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
    let mut digests = {
        let lane = if part_size.is_some() {
            &sh.hashing_large
        } else {
            &sh.hashing
        };
        let Ok(_slot) = lane.acquire().await else {
            return (None, 0, FileResult::Interrupted);
        };
        let root = inbox.path.clone();
        let rel = file.rel.clone();
        let sig = file.sig;
        // Small files are kept in memory from this single read: hashed and sent from the same
        // bytes, one read instead of two. At most (files admitted) × SMALL bytes.
        let keep = file.size <= hash::SMALL;
        // Under the inbox's time limit, counted from the last chunk read: a hung share stalls
        // this inbox, never a hashing slot for good.
        let hashed = sh.guards[file.inbox]
            .run_with_progress(move |p| {
                hash::digests(&root, &rel, &sig, part_size, keep, &|| p.tick())
            })
            .await;
        let hashed = match hashed {
            Ok(h) => h,
            Err(stalled) => {
                // Said once for the inbox by its guard; per file it only waits.
                let until = Instant::now() + inbox.fs_timeout;
                return (
                    None,
                    0,
                    FileResult::Paused {
                        reason: stalled.to_string(),
                        until,
                    },
                );
            }
        };
        if !matches!(&hashed, Err(hash::HashError::Io(e)) if e.kind() == std::io::ErrorKind::PermissionDenied)
        {
            sh.unreadable.forget(&file.path);
        }
        match hashed {
            Ok(d) => d,
            Err(hash::HashError::Changed) => return (None, 0, FileResult::Changed),
            // Gone, or no longer a regular file reached without links (replaced by a link or
            // a FIFO since settle looked): it goes round again and settle says what it is.
            Err(hash::HashError::Io(e))
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::NotFound
                        | std::io::ErrorKind::InvalidInput
                        | std::io::ErrorKind::NotADirectory
                ) || e.raw_os_error() == Some(libc::ELOOP) =>
            {
                return (None, 0, FileResult::Changed);
            }
            Err(hash::HashError::Io(e)) if e.kind() == std::io::ErrorKind::PermissionDenied => {
                // Often temporary: the file was dropped before its chmod or ACL. Give it
                // `unreadable_retry_for` before it counts as failed.
                let window = sh.settings.unreadable_retry_for;
                return match sh.unreadable.note(&file.path, Instant::now(), window) {
                    Unreadable::Wait => (
                        None,
                        0,
                        FileResult::Deferred {
                            reason: format!(
                                "cannot read the file yet ({e}); retried for up to {}",
                                humantime::format_duration(window)
                            ),
                        },
                    ),
                    Unreadable::GiveUp => (
                        None,
                        0,
                        failed(format!(
                            "cannot read the file: {e} (still, after {})",
                            humantime::format_duration(window)
                        )),
                    ),
                };
            }
            Err(e) => return (None, 0, failed(e.to_string())),
        }
    };
    let hex = hex::encode(digests.whole);
    let sha_out = Some(hex.clone());
    let rel = file.rel.to_string_lossy().into_owned();

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
    // This very file was copied to done/ or failed/ on another file system, but could not be
    // removed from the inbox: never copy or upload it again; finish only tries removing it.
    let left_here = rec
        .as_ref()
        .is_some_and(|r| r.source_left == Some([file.sig.dev, file.sig.ino]));
    match rec.as_ref().map(|r| r.state) {
        Some(State::Failed) if left_here || rec.as_ref().is_some_and(|r| r.dest.is_none()) => {
            // Failed before, and the move to failed/ did not happen (it failed, or a crash
            // came first): do not upload again, only try the move. (A file an admin moved back
            // from failed/ has a recorded destination and is uploaded again.)
            let reason = rec
                .and_then(|r| r.reason)
                .unwrap_or_else(|| "failed before".to_owned());
            return (sha_out, 0, FileResult::Failed { reason });
        }
        Some(State::Finished) => {
            let key = rec.and_then(|r| r.key);
            tracing::info!(
                key = key.as_deref().unwrap_or(""),
                "identical file was uploaded before; not uploading again"
            );
            return (sha_out, 0, FileResult::Duplicate { key });
        }
        Some(State::Uploaded) => {
            // Uploaded, then the daemon stopped before the file moved: just move it now.
            let r = rec.unwrap_or_else(|| {
                Record::new(&inbox.name, &rel, Some(&hex), file.size, &inbox.bucket)
            });
            let key = r.key.clone().unwrap_or_else(|| default_key.clone());
            tracing::info!(key = %crate::telemetry::escape(&key), "already uploaded before a restart; moving it");
            return (
                sha_out,
                0,
                FileResult::Uploaded {
                    key,
                    etag: r.etag,
                    existed: true,
                },
            );
        }
        _ => {}
    }
    // No "uploading" record for a single PUT: after a crash the conditional PUT and HEAD
    // recognise our own object. A multipart upload records itself before its first part.
    let mut r = rec
        .take()
        .unwrap_or_else(|| Record::new(&inbox.name, &rel, Some(&hex), file.size, &inbox.bucket));

    let body = match part_size {
        Some(ps) => Body::Multipart {
            part_size: ps,
            parts: &digests.parts,
        },
        None => Body::Single(digests.content.take().map(bytes::Bytes::from)),
    };
    let (attempts, result) = upload_loop(
        sh,
        file,
        inbox,
        &default_key,
        &rel,
        &digests.whole,
        &hex,
        &mut r,
        body,
    )
    .await;
    if matches!(result, FileResult::Failed { .. } | FileResult::Changed) {
        // This content will never complete that multipart upload: abort it now rather than
        // leave parts behind. (Deferred and interrupted uploads keep theirs to resume.)
        multipart::abort_recorded(&sh.client, &sh.ledger, &inbox.bucket, &mut r).await;
    }
    (sha_out, attempts, result)
}

/// Upload slots that parts of multipart uploads may hold at once: three quarters of the
/// limit (at least one), so whole files always find a free slot.
fn part_slots(concurrency: usize) -> usize {
    (concurrency - concurrency / 4).max(1)
}

/// Whether an unreadable file gets more time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Unreadable {
    Wait,
    GiveUp,
}

/// When each file was first found unreadable (permission denied), so that it is retried for
/// a while before it goes to failed/: a chmod or ACL often arrives just after the file.
#[derive(Default)]
struct UnreadableSince(std::sync::Mutex<HashMap<PathBuf, Instant>>);

impl UnreadableSince {
    fn map(&self) -> std::sync::MutexGuard<'_, HashMap<PathBuf, Instant>> {
        // A poisoned lock only means a panic elsewhere; single inserts/removes keep it sound.
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The file is unreadable now: wait longer or give up.
    fn note(&self, path: &Path, now: Instant, window: Duration) -> Unreadable {
        let mut map = self.map();
        // Files that went away while waiting are never looked up again: drop old entries.
        map.retain(|_, since| now.saturating_duration_since(*since) <= window * 4 + HOUR);
        let since = *map.entry(path.to_path_buf()).or_insert(now);
        let verdict = unreadable_verdict(since, now, window);
        if verdict == Unreadable::GiveUp {
            map.remove(path);
        }
        verdict
    }

    fn forget(&self, path: &Path) {
        let mut map = self.map();
        if !map.is_empty() {
            map.remove(path);
        }
    }
}

const HOUR: Duration = Duration::from_secs(3600);

/// A file unreadable since `since` is retried until `window` has passed.
fn unreadable_verdict(since: Instant, now: Instant, window: Duration) -> Unreadable {
    if now.saturating_duration_since(since) < window {
        Unreadable::Wait
    } else {
        Unreadable::GiveUp
    }
}

/// True when the file is no longer the one settle handed on (or is gone). A share that does
/// not answer counts as changed: nothing is recorded as done that could not be checked, and
/// the file goes round again.
async fn changed_since(sh: &Shared, file: &ReadyFile) -> bool {
    let root = sh.inboxes[file.inbox].path.clone();
    let rel = file.rel.clone();
    let looked = sh.guards[file.inbox]
        .run(move || crate::beneath::metadata(&root, &rel))
        .await;
    match looked {
        Ok(Ok(m)) => Signature::of(&m) != file.sig,
        Ok(Err(_)) | Err(_) => true,
    }
}

/// Exponential backoff with jitter: base doubles per attempt up to `max`, and the actual
/// wait is uniformly between half and all of it, so many files retrying do not stampede.
fn backoff(initial: Duration, max: Duration, attempt: u32) -> Duration {
    let exp = initial.saturating_mul(1u32 << attempt.saturating_sub(1).min(16));
    let base = exp.min(max);
    let half = base / 2;
    half + half.mul_f64(fastrand::f64())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parts_leave_slots_for_whole_files() {
        assert_eq!(part_slots(1), 1);
        assert_eq!(part_slots(4), 3);
        assert_eq!(part_slots(32), 24);
        for c in 4..200 {
            assert!(part_slots(c) < c && part_slots(c) >= c / 2);
        }
    }

    #[test]
    fn unreadable_files_wait_then_fail() {
        let t0 = Instant::now();
        let w = Duration::from_secs(300);
        assert_eq!(unreadable_verdict(t0, t0, w), Unreadable::Wait);
        assert_eq!(unreadable_verdict(t0, t0 + w / 2, w), Unreadable::Wait);
        assert_eq!(unreadable_verdict(t0, t0 + w, w), Unreadable::GiveUp);
        let u = UnreadableSince::default();
        let p = Path::new("/in/a");
        assert_eq!(u.note(p, t0, w), Unreadable::Wait);
        assert_eq!(u.note(p, t0 + w / 2, w), Unreadable::Wait);
        assert_eq!(u.note(p, t0 + w, w), Unreadable::GiveUp);
        // Given up: a new drop under the same name starts afresh.
        assert_eq!(u.note(p, t0 + w * 2, w), Unreadable::Wait);
        u.forget(p);
        assert_eq!(u.note(p, t0 + w * 3, w), Unreadable::Wait);
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

//! upload: uploads every file it is handed concurrently under one global limit
//! (`upload.concurrency`), so a large or slow file never holds back the others; parts of
//! large files may hold at most three quarters of the slots.
//!
//! Per file: hash (streamed, bounded memory; small files are read once and sent from
//! memory) → consult the ledger (already uploaded or already finished? then no upload) →
//! conditional PUT, or a resumable multipart upload, with SHA-256 checksums the server
//! verifies → classify any error → retry, pause the inbox, defer, or fail the file. The
//! result is an [`Outcome`], passed to finish in a [`Report`].
//!
//! An endpoint that cannot be reached is one event, not a failure of every file: the outage
//! [`gate`] holds every attempt while one prober asks the endpoint, and releases them all at
//! its first answer (decisions in [`outage`]). A request that stops making progress counts as
//! unreachable ([`liveness`]). Credential, clock and bucket errors pause the inbox ([`pause`])
//! with a fix-it message ([`fixit`]).

pub mod admission;
mod attempts;
pub mod capabilities;
pub mod fixit;
pub mod gate;
pub mod hash;
pub mod keys;
pub mod liveness;
pub mod multipart;
pub mod object;
pub mod outage;
pub mod pause;
mod reading;
pub mod s3;
pub mod template;

use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;

use aws_sdk_s3::Client;
use tokio::sync::{Semaphore, mpsc};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument;

use crate::batch::{Batched, Summary};
use crate::config::{InboxSettings, S3Settings, UploadSettings};
use crate::ledger::{Ledger, Record, State};
use crate::run::Mode;
use crate::settle::{Kind, ReadyFile, Signature};
use crate::stall::FsGuard;
use admission::Lane;
use attempts::{Body, upload_loop};
use gate::Gate;
use pause::Pause;
use reading::{UnreadableSince, changed_since};

/// What became of one file; sent to finish.
#[derive(Debug)]
pub struct Outcome {
    /// The id of the batch the file was placed in.
    pub batch: u64,
    pub file: ReadyFile,
    /// Hex SHA-256, when the file could be read.
    pub sha256: Option<String>,
    /// PUT attempts made.
    pub attempts: u32,
    pub result: FileResult,
    /// Time spent on the file in this stage (hashing, waiting for a slot, uploading).
    pub took: Duration,
}

/// What flows from upload to finish.
#[derive(Debug)]
pub enum Report {
    File(Box<Outcome>),
    /// Forwarded from batch: the batch has all its files (their outcomes may still come).
    BatchClosed(Summary),
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
    /// Its inbox is paused (bucket, credential or clock problem): the file stays in the inbox and
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
    /// What each bucket's server enforces itself; where it does not, uploads look first.
    known: capabilities::Known,
    /// Cancelled at shutdown: no new upload starts.
    intake: CancellationToken,
    /// Cancelled when the grace period is over: uploads still running are abandoned.
    abort: CancellationToken,
    /// Every attempt passes it; closed while the endpoint cannot be reached.
    gate: Arc<Gate>,
    /// `s3.stall_timeout`: a request without progress for this long is given up.
    stall: Duration,
    /// Files this stage has finished with (for its progress in `/healthz`).
    finished: std::sync::atomic::AtomicU64,
}

pub struct UploadStage {
    pub client: Client,
    pub s3: S3Settings,
    pub inboxes: Arc<Vec<InboxSettings>>,
    pub settings: UploadSettings,
    pub ledger: Ledger,
    pub mode: Mode,
    pub intake: CancellationToken,
    pub abort: CancellationToken,
    pub stats: Arc<crate::run::Stats>,
    pub guards: Vec<FsGuard>,
    pub known: capabilities::Known,
    /// Where S3 state, paused inboxes, retries and this stage's progress are shown.
    pub ops: Arc<crate::ops::Ops>,
    /// Daemon mode: how a resumed inbox hands its waiting files back to settle at once
    /// (claims to release, and settle's candidate channel). `None` in `once`, where the
    /// channel must close when the sweep is done (and nothing pauses).
    pub wake: Option<(
        Arc<crate::claims::Claims>,
        mpsc::Sender<crate::watch::Candidate>,
    )>,
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
            .enumerate()
            .map(|(idx, p)| {
                let p = p.shown_in(self.ops.clone(), idx);
                match &self.wake {
                    Some((claims, candidates)) => p.waking(pause::Wake {
                        claims: claims.clone(),
                        root: self.inboxes[idx].path.clone(),
                        inbox: idx,
                        candidates: candidates.clone(),
                    }),
                    None => p,
                }
            })
            .collect();
        // Files started at once (see [`admission`]): one round hashing while the previous one
        // uploads; large files in a lane of their own, as many as may send parts.
        let slots = self.settings.concurrency * 2;
        let mut admission = admission::Admission::new(
            self.inboxes.len(),
            slots,
            part_slots(self.settings.concurrency),
        );
        let held = Arc::new(std::sync::atomic::AtomicU64::new(0));
        // In `once` mode a file waits for an unreachable endpoint as long as a file's retries
        // would wait between two attempts at most, then stays for the next run.
        let once_limit = (self.mode == Mode::Once).then_some(self.settings.retry_max);
        // The prober ends with this stage, or at shutdown (waiting files are interrupted then).
        let stop_probing = self.intake.child_token();
        let gate = Gate::start(
            &self.client,
            &self.s3,
            self.inboxes.first().map(|i| i.bucket.clone()),
            once_limit,
            stop_probing.clone(),
        );
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
            known: self.known,
            intake: self.intake,
            abort: self.abort,
            gate,
            stall: self.s3.stall_timeout,
            finished: std::sync::atomic::AtomicU64::new(0),
        });
        tokio::spawn(show_s3_state(
            shared.gate.subscribe(),
            self.ops.clone(),
            stop_probing.clone(),
        ));
        tokio::spawn(show_progress(
            self.ops.clone(),
            held.clone(),
            shared.clone(),
            stop_probing.clone(),
        ));
        let tracker = TaskTracker::new();
        // Each started file's task says here when it is done, freeing its slot.
        let (done_tx, mut done_rx) = mpsc::unbounded_channel::<Lane>();
        let mut receiving = true;
        loop {
            // Start every file that admission lets start now.
            while let Some((_, lane, (batch, file))) = admission.start_next() {
                let shared = shared.clone();
                let output = output.clone();
                let done = done_tx.clone();
                tracker.spawn(async move {
                    let outcome = process(&shared, file, batch).await;
                    shared
                        .finished
                        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    // If finish is gone the daemon is going down; the ledger still knows.
                    let _ = output.send(Report::File(Box::new(outcome))).await;
                    // The stage loop has gone only when nothing is left to start.
                    let _ = done.send(lane);
                });
            }
            held.store(
                admission.held() as u64,
                std::sync::atomic::Ordering::Relaxed,
            );
            if !receiving && admission.held() == 0 {
                break;
            }
            tokio::select! {
                item = input.recv(), if receiving && !admission.is_full() => match item {
                    None => receiving = false,
                    Some(Batched::Closed(summary)) => {
                        if output.send(Report::BatchClosed(summary)).await.is_err() {
                            break; // finish is gone: the daemon is going down
                        }
                    }
                    Some(Batched::File(batch, file)) => {
                        self.stats.mark_started();
                        let lane = if file.size > shared.settings.multipart_threshold {
                            Lane::Large
                        } else {
                            Lane::Small
                        };
                        admission.offer(file.inbox, lane, (batch, file));
                    }
                },
                Some(lane) = done_rx.recv() => admission.done(lane),
            }
        }
        tracker.close();
        tracker.wait().await;
        stop_probing.cancel();
    }
}

/// Shows the endpoint's state (the outage gate open or closed) in metrics and `/status`.
async fn show_s3_state(
    mut open: tokio::sync::watch::Receiver<bool>,
    ops: Arc<crate::ops::Ops>,
    stop: CancellationToken,
) {
    loop {
        let up = *open.borrow_and_update();
        ops.s3(
            up,
            (!up).then(|| "unreachable: uploads wait for it".to_owned()),
        );
        tokio::select! {
            changed = open.changed() => if changed.is_err() { return },
            _ = stop.cancelled() => return,
        }
    }
}

/// Tells ops, once a second, how many files this stage holds and whether it moved: a file
/// finished, or any sign of life of long work (body chunks sent, file chunks read), so that
/// one long upload is never taken for a stuck stage.
async fn show_progress(
    ops: Arc<crate::ops::Ops>,
    held: Arc<std::sync::atomic::AtomicU64>,
    sh: Arc<Shared>,
    stop: CancellationToken,
) {
    // Well within the time after which a stage counts as stuck (short under a fast
    // watchdog), so that a moving stage is never seen still between two reports.
    let every = (ops.stuck_after() / 4).clamp(Duration::from_millis(50), Duration::from_secs(1));
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let mut seen = (u64::MAX, u64::MAX);
    let gate = sh.gate.subscribe();
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.cancelled() => return,
        }
        let now = (
            sh.finished.load(std::sync::atomic::Ordering::Relaxed),
            crate::run::signs_of_life(),
        );
        let held = held.load(std::sync::atomic::Ordering::Relaxed);
        // Files waiting at a closed outage gate wait for S3, not for this stage: an outage of
        // any length is not a stuck daemon (the gate's prober has its own time limits), and
        // a watchdog restart would not bring S3 back.
        let waiting_for_s3 = !*gate.borrow();
        ops.stage(
            "upload",
            held,
            now != seen || waiting_for_s3,
            Instant::now(),
        );
        seen = now;
    }
}

/// The life of one file in this stage.
async fn process(sh: &Shared, file: ReadyFile, batch: u64) -> Outcome {
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

/// Upload slots that parts of multipart uploads may hold at once: three quarters of the
/// limit (at least one), so whole files always find a free slot.
fn part_slots(concurrency: usize) -> usize {
    (concurrency - concurrency / 4).max(1)
}

/// One file's upload as the attempts see it: the file, where it goes unless its key is taken,
/// and its content's identity.
#[derive(Clone, Copy)]
struct Job<'a> {
    file: &'a ReadyFile,
    inbox: &'a InboxSettings,
    default_key: &'a str,
    /// Content-Type, metadata and the other object options.
    dress: &'a object::Dressing,
    /// The relative path with `/` separators, as the ledger names the file.
    rel: &'a str,
    sha: &'a [u8; 32],
    hex: &'a str,
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

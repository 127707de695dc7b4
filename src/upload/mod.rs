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
mod existing;
mod file;
pub mod fixit;
pub mod gate;
pub mod hash;
pub mod keys;
pub mod liveness;
pub mod multipart;
mod next;
pub mod object;
pub mod outage;
mod outcome;
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

use crate::batch::Batched;
use crate::config::{InboxSettings, S3Settings, UploadSettings};
use crate::ledger::Ledger;
use crate::run::Mode;
use crate::stall::FsGuard;
use admission::Lane;
use file::process;
use file::{Job, backoff};
use gate::Gate;
pub use outcome::{FileResult, Outcome, Report};
use pause::Pause;
use reading::{UnreadableSince, changed_since};

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
                // Frees the slot when the task ends, however it ends (a panic included: a
                // slot never freed would keep `once` from ever finishing).
                let slot = Slot(done_tx.clone(), lane);
                tracker.spawn(async move {
                    let _slot = slot;
                    let outcome = process(&shared, file, batch).await;
                    shared
                        .finished
                        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    // If finish is gone the daemon is going down; the ledger still knows.
                    let _ = output.send(Report::File(Box::new(outcome))).await;
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

/// A started file's slot in admission: freed (told to the stage loop) when dropped.
struct Slot(mpsc::UnboundedSender<Lane>, Lane);

impl Drop for Slot {
    fn drop(&mut self) {
        // The stage loop has gone only when nothing is left to start.
        let _ = self.0.send(self.1);
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

/// Upload slots that parts of multipart uploads may hold at once: three quarters of the
/// limit (at least one), so whole files always find a free slot.
fn part_slots(concurrency: usize) -> usize {
    (concurrency - concurrency / 4).max(1)
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
}

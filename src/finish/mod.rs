//! finish: records every outcome in the ledger and makes it durable, *then* moves the file
//! into done/ (or failed/ with a reason file beside it). One summary line per batch.
//!
//! Outcomes are handled in groups (whatever has arrived): record all, flush once, then move
//! all. One fsync then covers many files, and no file ever moves before its record is on disk.
//!
//! A folder by job: the stage loop (here); a group's ledger records and moves (`group.rs`);
//! each file's completion after its move (`complete.rs`); the reason file (`reason.rs`); the
//! batch summaries (`report.rs`, `observe.rs`).

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::time::Instant;

use crate::claims::Claims;
use crate::config::InboxSettings;
use crate::ledger::{Ledger, LedgerError, Record};
use crate::run::{Mode, Stats};
use crate::stall::{FsGuard, Stalled};
use crate::upload::{FileResult, Outcome, Report};

mod complete;
mod group;
mod observe;
mod reason;
mod report;
use report::{BatchReport, Reports};

/// How long a file waits that must stay in the inbox for a reason no retry soon will fix (a
/// FIFO or socket that cannot be moved to failed/ on another file system; a file copied to
/// done/ whose original cannot be removed). It is looked at again after this, with one ERROR
/// line each time.
const STUCK_RETRY: Duration = Duration::from_secs(3600);

/// Outcomes taken together at most (one ledger flush each).
const GROUP: usize = 256;

pub struct FinishStage {
    pub inboxes: Arc<Vec<InboxSettings>>,
    pub ledger: Ledger,
    pub claims: Arc<Claims>,
    pub stats: Arc<Stats>,
    /// How long a deferred file waits before it is tried again.
    pub retry_later: Duration,
    pub mode: Mode,
    /// One per inbox: moves and reason files run under its time limit (see [`crate::stall`]).
    pub guards: Vec<FsGuard>,
    /// Where outcomes and batch reports are shown (metrics, `/status`).
    pub ops: Arc<crate::ops::Ops>,
}

impl FinishStage {
    /// Runs until the upload stage is done. An error means the ledger cannot be written: no
    /// file may move any more, so the daemon must stop.
    pub async fn run(self, mut input: mpsc::Receiver<Report>) -> Result<(), LedgerError> {
        let mut reports = Reports::default();
        while let Some(first) = input.recv().await {
            let mut group = vec![first];
            while group.len() < GROUP {
                match input.try_recv() {
                    Ok(o) => group.push(o),
                    Err(_) => break,
                }
            }
            // Work in hand: if this group never completes, /healthz and the watchdog see it.
            let waiting = (group.len() + input.len()) as u64;
            self.ops.stage("finish", waiting, false, Instant::now());
            crate::failpoint_hang("finish-hang").await;
            let mut records = Vec::with_capacity(group.len());
            for r in &group {
                records.push(match r {
                    Report::File(o) => self.record(o)?,
                    Report::BatchClosed(_) => None,
                });
            }
            // The durability point: after this, a crash cannot make us upload these again.
            self.ledger.flush().await?;
            let uploaded = |r: &Report| matches!(r, Report::File(o) if matches!(o.result, FileResult::Uploaded { .. }));
            if group.iter().any(uploaded) {
                crate::failpoint("after-ledger-flush");
            }
            let moved = self.move_group(&group, &records).await;
            for ((r, rec), moved) in group.into_iter().zip(records).zip(moved) {
                match r {
                    Report::File(o) => {
                        let key = rec.as_ref().and_then(|r| r.key.clone());
                        let (fate, news) = self.complete(&o, rec, moved).await;
                        self.stats.mark_finished();
                        let inbox = &self.inboxes[o.file.inbox].name;
                        self.ops
                            .file(o.batch, observe::file_status(&o, fate, inbox, key));
                        self.report(reports.outcome(o.batch, fate, news));
                    }
                    Report::BatchClosed(summary) => self.report(reports.closed(summary)),
                }
            }
            self.ops
                .stage("finish", input.len() as u64, true, Instant::now());
        }
        self.ledger.flush().await
    }

    /// Runs a file-system call of inbox `inbox` under its time limit; a share that does not
    /// answer is an error like any other failed move (the file stays, and is tried again).
    async fn fs<T: Send + 'static>(
        &self,
        inbox: usize,
        f: impl FnOnce() -> std::io::Result<T> + Send + 'static,
    ) -> std::io::Result<T> {
        match self.guards[inbox].run(f).await {
            Ok(res) => res,
            Err(stalled) => Err(timed_out(&stalled)),
        }
    }
}

/// Whether `rec` says this very file (device and inode) is the original of a copy already made
/// to done/ or failed/ that could not be removed from the inbox.
fn left_here(o: &Outcome, rec: Option<&Record>) -> bool {
    rec.is_some_and(|r| r.source_left == Some([o.file.sig.dev, o.file.sig.ino]))
}

/// A file-system call that did not answer in time, as the error of a failed move.
fn timed_out(stalled: &Stalled) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::TimedOut, stalled.to_string())
}

impl FinishStage {
    /// The one summary line per batch, once every file of it has an outcome; also shown in
    /// the metrics and `/status`.
    fn report(&self, report: Option<BatchReport>) {
        let Some(r) = report else { return };
        self.ops.batch(observe::batch_status(&r));
        log_report(&r);
    }
}

/// The one summary line per batch. A batch of files that only wait again as they waited
/// before (a paused inbox's retry rounds) is no news: debug level.
fn log_report(r: &BatchReport) {
    macro_rules! line {
        ($level:expr) => {
            tracing::event!(
                $level,
                batch = r.summary.id,
                files = r.summary.files,
                uploaded = r.uploaded,
                duplicates = r.duplicates,
                failed = r.failed,
                deferred = r.deferred,
                requeued = r.requeued,
                bytes = r.summary.bytes,
                duration_ms = r.summary.opened.elapsed().as_millis() as u64,
                "batch finished"
            )
        };
    }
    if r.news {
        line!(tracing::Level::INFO);
    } else {
        line!(tracing::Level::DEBUG);
    }
}

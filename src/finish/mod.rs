//! finish: records every outcome in the ledger and makes it durable, *then* moves the file
//! into done/ (or failed/ with a reason file beside it). One summary line per batch.
//!
//! Outcomes are handled in groups (whatever has arrived): record all, flush once, then move
//! all. One fsync then covers many files, and no file ever moves before its record is on disk.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;

use tokio::sync::mpsc;

use crate::claims::Claims;
use crate::config::InboxSettings;
use crate::ledger::{Ledger, LedgerError, Record, State};
use crate::run::{Fate, Mode, Stats};
use crate::stall::FsGuard;
use crate::telemetry::escape;
use crate::upload::{FileResult, Outcome, Report};

use crate::beneath;

mod reason;
mod report;
use reason::Reason;
use report::{BatchReport, Reports};

mod observe;

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

    /// Writes the outcome to the ledger (not yet flushed). Returns the record to complete.
    fn record(&self, o: &Outcome) -> Result<Option<Record>, LedgerError> {
        if o.sha256.is_none() && matches!(o.result, FileResult::Deferred { .. }) {
            // Deferred before it could be read (permission denied, retried for a while): no
            // content, so no identity to record; a record without one would only linger.
            return Ok(None);
        }
        let inbox = &self.inboxes[o.file.inbox];
        let rel = o.file.rel.to_string_lossy();
        let sha = o.sha256.as_deref();
        let existing = self.ledger.get(&inbox.name, &rel, sha)?;
        let mut rec = existing
            .unwrap_or_else(|| Record::new(&inbox.name, &rel, sha, o.file.size, &inbox.bucket));
        rec.attempts += o.attempts;
        match &o.result {
            FileResult::Uploaded { key, etag, .. } => {
                rec.state = State::Uploaded;
                rec.key = Some(key.clone());
                rec.upload_id = None;
                rec.parts.clear();
                rec.etag = etag.clone();
                rec.reason = None;
            }
            FileResult::Duplicate { .. } => {
                rec.drops += 1;
            }
            FileResult::Failed { reason } => {
                rec.state = State::Failed;
                rec.reason = Some(reason.clone());
            }
            FileResult::Deferred { reason } | FileResult::Paused { reason, .. } => {
                // Still in the inbox; keep the state, remember why it is waiting.
                rec.reason = Some(reason.clone());
            }
            FileResult::Changed | FileResult::Interrupted => return Ok(None),
        }
        self.ledger.put(&mut rec)?;
        Ok(Some(rec))
    }

    /// Where the outcome's file must move (done/ or failed/), if anywhere: not when it stays
    /// in the inbox, nor when it is the original of a file already copied (only removed).
    fn move_target(&self, o: &Outcome, rec: Option<&Record>) -> Option<PathBuf> {
        let inbox = &self.inboxes[o.file.inbox];
        let left_here =
            rec.is_some_and(|r| r.source_left == Some([o.file.sig.dev, o.file.sig.ino]));
        match &o.result {
            FileResult::Uploaded { .. } => Some(inbox.done_dir.clone()),
            FileResult::Duplicate { .. } if !left_here => Some(inbox.done_dir.clone()),
            FileResult::Failed { .. } if !left_here => Some(inbox.failed_dir.clone()),
            _ => None,
        }
    }

    /// Makes the group's moves: those of one inbox in one call on the blocking pool, under the
    /// inbox's time limit (one thread hand-off per inbox and group, not per file). The result
    /// is in the group's order; `None` where a report needs no move.
    async fn move_group(
        &self,
        group: &[Report],
        records: &[Option<Record>],
    ) -> Vec<Option<std::io::Result<beneath::Moved>>> {
        let mut out: Vec<Option<std::io::Result<beneath::Moved>>> =
            (0..group.len()).map(|_| None).collect();
        // Per inbox: (index in the group, relative path, destination folder).
        let mut jobs: Vec<(usize, Vec<MoveJob>)> = Vec::new();
        for (i, (r, rec)) in group.iter().zip(records).enumerate() {
            let Report::File(o) = r else { continue };
            let Some(to) = self.move_target(o, rec.as_ref()) else {
                continue;
            };
            let job = (
                i,
                o.file.root.clone(),
                o.file.at.clone(),
                o.file.rel.clone(),
                to,
            );
            match jobs.iter_mut().find(|(inbox, _)| *inbox == o.file.inbox) {
                Some((_, list)) => list.push(job),
                None => jobs.push((o.file.inbox, vec![job])),
            }
        }
        for (inbox, list) in jobs {
            let idx: Vec<usize> = list.iter().map(|(i, ..)| *i).collect();
            let done = self.guards[inbox]
                .run_with_progress(move |progress| {
                    list.into_iter()
                        .map(|(i, root, at, rel, to)| {
                            let moved = beneath::move_no_clobber(&root, &at, &to, &rel);
                            progress.tick();
                            (i, moved)
                        })
                        .collect::<Vec<_>>()
                })
                .await;
            match done {
                Ok(done) => {
                    for (i, moved) in done {
                        out[i] = Some(moved);
                    }
                }
                // Not answering: none of them moved now; each is an error like a failed move.
                Err(stalled) => {
                    for i in idx {
                        out[i] = Some(Err(std::io::Error::new(
                            std::io::ErrorKind::TimedOut,
                            stalled.to_string(),
                        )));
                    }
                }
            }
        }
        out
    }

    /// Counts the file's fate (see [`Stats::count`]); true when that is news, and its lines
    /// are worth more than debug level.
    fn count(&self, o: &Outcome, fate: Fate) -> bool {
        if !fate.stays() {
            self.stats.add_done_bytes(o.file.sig.size);
        }
        self.stats.count(&o.file.path, fate)
    }

    /// Completes the file's move (its outcome is already durable; `moved` is the move already
    /// made for it, if any), releases or defers its claim, and says what became of the file
    /// and whether that is news.
    async fn complete(
        &self,
        o: &Outcome,
        rec: Option<Record>,
        moved: Option<std::io::Result<beneath::Moved>>,
    ) -> (Fate, bool) {
        let inbox = &self.inboxes[o.file.inbox];
        let path = &o.file.path;
        let left_here = rec
            .as_ref()
            .is_some_and(|r| r.source_left == Some([o.file.sig.dev, o.file.sig.ino]));
        if left_here
            && matches!(
                o.result,
                FileResult::Duplicate { .. } | FileResult::Failed { .. }
            )
        {
            return self.remove_left_source(o, rec).await;
        }
        match &o.result {
            FileResult::Uploaded { key, existed, .. } => {
                let moved = self.moved_or_move(o, moved, &inbox.done_dir).await;
                self.after_done(o, rec, key, Some(*existed), moved)
            }
            FileResult::Duplicate { key } => {
                let moved = self.moved_or_move(o, moved, &inbox.done_dir).await;
                self.after_done(o, rec, key.as_deref().unwrap_or(""), None, moved)
            }
            FileResult::Failed { reason } => {
                match self.moved_or_move(o, moved, &inbox.failed_dir).await {
                    Ok(moved) => {
                        let note = Reason::of(&moved.dest, inbox, o, reason);
                        if let Err(e) = self.fs(o.file.inbox, move || note.write()).await {
                            tracing::error!(dest = %escape(&moved.dest), error = %e,
                                "cannot write the reason file; the reason is in the ledger");
                        }
                        tracing::warn!(inbox = %inbox.name, path = %escape(&o.file.rel), reason = %escape(reason),
                            dest = %escape(&moved.dest), "failed; moved to failed/");
                        self.after_move(o, rec, State::Failed, Fate::Failed, moved)
                    }
                    Err(e) if beneath::is_unmovable(&e) => {
                        // A FIFO, socket or device, and failed/ is on another file system:
                        // moving it would mean opening it. It stays; say so once per look.
                        tracing::error!(inbox = %inbox.name, path = %escape(&o.file.rel), reason = %escape(reason),
                            error = %e, failed_dir = %inbox.failed_dir.display(),
                            retry_in = ?STUCK_RETRY,
                            "cannot be moved to failed/; it stays in the inbox (remove it by hand)");
                        self.claims.defer(path, Instant::now() + STUCK_RETRY);
                        (Fate::Deferred, self.count(o, Fate::Deferred))
                    }
                    Err(e) if self.taken_over(o, &e) => {
                        (Fate::Requeued, self.count(o, Fate::Requeued))
                    }
                    Err(e) => {
                        // Not failed yet in the counts' sense: a file counted failed is in
                        // failed/. It stays in the inbox and its move is tried again.
                        tracing::error!(inbox = %inbox.name, path = %escape(&o.file.rel), reason = %escape(reason),
                            error = %e, "failed, and cannot move the file to failed/; it stays in the inbox");
                        self.claims.defer(path, Instant::now() + self.retry_later);
                        (Fate::Deferred, self.count(o, Fate::Deferred))
                    }
                }
            }
            FileResult::Deferred { reason } => {
                let news = self.count(o, Fate::Deferred);
                if self.mode == Mode::Once {
                    tracing::warn!(inbox = %inbox.name, path = %escape(&o.file.rel), reason = %escape(reason),
                        "not uploaded now; left in the inbox for the next run");
                } else if news {
                    tracing::warn!(inbox = %inbox.name, path = %escape(&o.file.rel), reason = %escape(reason),
                        retry_in = ?self.retry_later, "not uploaded now; stays in the inbox and is tried again later");
                } else {
                    // Said when it began; each further round only at debug level.
                    tracing::debug!(inbox = %inbox.name, path = %escape(&o.file.rel), reason = %escape(reason),
                        retry_in = ?self.retry_later, "not uploaded now; stays in the inbox and is tried again later");
                }
                self.claims.defer(path, Instant::now() + self.retry_later);
                (Fate::Deferred, news)
            }
            FileResult::Paused { reason, until } => {
                // The pause itself is logged once (and at each failed probe); per file, debug.
                tracing::debug!(inbox = %inbox.name, path = %escape(&o.file.rel), reason = %escape(reason),
                    "inbox paused; the file stays in the inbox");
                self.claims.defer(path, *until);
                (Fate::Deferred, self.count(o, Fate::Deferred))
            }
            FileResult::Changed => {
                let news = self.count(o, Fate::Requeued);
                if news {
                    tracing::info!(inbox = %inbox.name, path = %escape(&o.file.rel),
                        "file changed while being processed; it goes round again once stable");
                } else {
                    tracing::debug!(inbox = %inbox.name, path = %escape(&o.file.rel),
                        "file changed while being processed; it goes round again once stable");
                }
                self.claims.release(path);
                (Fate::Requeued, news)
            }
            FileResult::Interrupted => {
                tracing::info!(inbox = %inbox.name, path = %escape(&o.file.rel),
                    "interrupted by shutdown; stays in the inbox for the next start");
                self.claims.release(path);
                (Fate::Requeued, self.count(o, Fate::Requeued))
            }
        }
    }

    /// A claimed file (shared inbox) gone from this host's claim folder when it is to be
    /// moved: another host took it over (this host's heartbeat had stood still for
    /// `claim_timeout`: a hung share, a stopped process). That host finishes it, and its
    /// upload finds this host's object instead of storing a second one; this host lets go
    /// without a fight (no retry, no ERROR), said once.
    fn taken_over(&self, o: &Outcome, e: &std::io::Error) -> bool {
        if e.kind() != std::io::ErrorKind::NotFound || o.file.at == o.file.rel {
            return false;
        }
        tracing::warn!(inbox = %self.inboxes[o.file.inbox].name, path = %escape(&o.file.rel),
            "another host took this file over while it was in flight here; that host finishes it");
        self.claims.release(&o.file.path);
        true
    }

    /// `existed`: None for a duplicate of a finished file, else whether the object was
    /// already in the bucket before this attempt.
    fn after_done(
        &self,
        o: &Outcome,
        rec: Option<Record>,
        key: &str,
        existed: Option<bool>,
        moved: std::io::Result<beneath::Moved>,
    ) -> (Fate, bool) {
        let inbox = &self.inboxes[o.file.inbox];
        let path = &o.file.path;
        match moved {
            Ok(moved) => {
                let dest = &moved.dest;
                let fate = match existed {
                    None => {
                        tracing::info!(inbox = %inbox.name, path = %escape(&o.file.rel), key,
                            dest = %escape(&dest), "identical file seen again; not re-uploaded, moved to done");
                        Fate::Duplicate
                    }
                    Some(existed) => {
                        tracing::info!(inbox = %inbox.name, path = %escape(&o.file.rel), key,
                            bytes = o.file.size, already_there = existed, dest = %escape(&dest), "uploaded");
                        Fate::Uploaded
                    }
                };
                self.after_move(o, rec, State::Finished, fate, moved)
            }
            Err(e) if self.taken_over(o, &e) => (Fate::Requeued, self.count(o, Fate::Requeued)),
            Err(e) => {
                // The upload is recorded; only the move failed. Leave the file in the inbox:
                // the next attempt sees "uploaded" in the ledger and only moves it.
                tracing::error!(inbox = %inbox.name, path = %escape(&o.file.rel), key,
                    error = %e, done_dir = %inbox.done_dir.display(), "uploaded, but cannot move the file to done/; will retry");
                self.claims.defer(path, Instant::now() + self.retry_later);
                (Fate::Deferred, self.count(o, Fate::Deferred))
            }
        }
    }

    /// Records where the file went and releases its claim. When the move was a copy to
    /// another file system whose original could not be removed, the record says so, so that
    /// the original is never copied (or uploaded) again, only removed.
    ///
    /// `fate` is what the file counts as once it has left the inbox; an original that could not
    /// be removed counts as deferred until it is (see [`FinishStage::remove_left_source`]).
    fn after_move(
        &self,
        o: &Outcome,
        mut rec: Option<Record>,
        state: State,
        fate: Fate,
        moved: beneath::Moved,
    ) -> (Fate, bool) {
        let path = &o.file.path;
        match moved.source_left {
            None => {
                self.finished(rec, state, moved.dest);
                self.claims.release(path);
                (fate, self.count(o, fate))
            }
            Some(e) => {
                let inbox = &self.inboxes[o.file.inbox];
                tracing::error!(inbox = %inbox.name, path = %escape(&o.file.rel),
                    dest = %escape(&moved.dest), error = %e, retry_in = ?STUCK_RETRY,
                    "copied, but the original cannot be removed from the inbox; it is not copied again (remove it by hand)");
                if let Some(r) = rec.as_mut() {
                    r.source_left = Some([o.file.sig.dev, o.file.sig.ino]);
                }
                self.finished(rec, state, moved.dest);
                self.claims.defer(path, Instant::now() + STUCK_RETRY);
                (Fate::Deferred, self.count(o, Fate::Deferred))
            }
        }
    }

    /// The original of a file already copied to done/ or failed/ is back in view: only try
    /// removing it again. Once removed, the file has left the inbox and counts as what its
    /// copy is: uploaded (in done/) or failed.
    async fn remove_left_source(&self, o: &Outcome, rec: Option<Record>) -> (Fate, bool) {
        let inbox = &self.inboxes[o.file.inbox];
        let path = &o.file.path;
        let (root, rel) = (o.file.root.clone(), o.file.at.clone());
        let removed = self
            .fs(o.file.inbox, move || beneath::remove(&root, &rel))
            .await;
        match removed {
            Ok(()) => {
                tracing::info!(inbox = %inbox.name, path = %escape(&o.file.rel),
                    "removed the original of a file copied earlier");
                let fate = match rec.as_ref().map(|r| r.state) {
                    Some(State::Failed) => Fate::Failed,
                    _ => Fate::Uploaded,
                };
                if let Some(mut r) = rec {
                    r.source_left = None;
                    if let Err(e) = self.ledger.put(&mut r) {
                        tracing::error!(error = %e, "cannot record the removal of a file");
                    }
                }
                self.claims.release(path);
                (fate, self.count(o, fate))
            }
            Err(e) => {
                tracing::error!(inbox = %inbox.name, path = %escape(&o.file.rel), error = %e,
                    retry_in = ?STUCK_RETRY,
                    "already copied, and the original still cannot be removed from the inbox; it is not copied again (remove it by hand)");
                self.claims.defer(path, Instant::now() + STUCK_RETRY);
                (Fate::Deferred, self.count(o, Fate::Deferred))
            }
        }
    }

    /// The move made for the file in its group, or (should there be none) made now.
    async fn moved_or_move(
        &self,
        o: &Outcome,
        moved: Option<std::io::Result<beneath::Moved>>,
        to: &std::path::Path,
    ) -> std::io::Result<beneath::Moved> {
        match moved {
            Some(m) => m,
            None => self.move_out(o, to).await,
        }
    }

    /// Moves the outcome's file from its inbox to the same relative path below `to` (done/ or
    /// failed/), never replacing anything, under the inbox's time limit.
    async fn move_out(&self, o: &Outcome, to: &std::path::Path) -> std::io::Result<beneath::Moved> {
        let root = o.file.root.clone();
        let (at, rel, to) = (o.file.at.clone(), o.file.rel.clone(), to.to_path_buf());
        self.fs(o.file.inbox, move || {
            beneath::move_no_clobber(&root, &at, &to, &rel)
        })
        .await
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
            Err(stalled) => Err(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                stalled.to_string(),
            )),
        }
    }

    /// Records where the file ended up. Not flushed here: if this is lost in a crash, the
    /// ledger still says uploaded/failed, which is true, and the file is where it should be.
    fn finished(&self, rec: Option<Record>, state: State, dest: PathBuf) {
        if let Some(mut rec) = rec {
            rec.state = state;
            rec.dest = Some(dest);
            if let Err(e) = self.ledger.put(&mut rec) {
                tracing::error!(error = %e, "cannot record the final place of a file");
            }
        }
    }
}

/// One move of a group: the report's index, the file's relative path, done/ or failed/.
/// (index in the group, the file's root, where it is below it, its relative path,
/// destination folder).
type MoveJob = (usize, PathBuf, PathBuf, PathBuf, PathBuf);

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

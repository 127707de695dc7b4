//! A group's ledger records and its moves: each outcome written to the ledger (flushed once
//! for the group by the stage loop), then the moves to done/ or failed/ made per inbox in one
//! call on the blocking pool.

use std::path::PathBuf;

use super::{FinishStage, left_here, timed_out};
use crate::beneath;
use crate::ledger::{LedgerError, Record, State};
use crate::settle::Signature;
use crate::upload::{FileResult, Outcome, Report};

impl FinishStage {
    /// Writes the outcome to the ledger (not yet flushed). Returns the record to complete.
    pub(super) fn record(&self, o: &Outcome) -> Result<Option<Record>, LedgerError> {
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
        let left_here = left_here(o, rec);
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
    pub(super) async fn move_group(
        &self,
        group: &[Report],
        records: &[Option<Record>],
    ) -> Vec<Option<std::io::Result<beneath::Moved>>> {
        let mut out: Vec<Option<std::io::Result<beneath::Moved>>> =
            (0..group.len()).map(|_| None).collect();
        // Per inbox, its moves.
        let mut jobs: Vec<(usize, Vec<MoveJob>)> = Vec::new();
        for (i, (r, rec)) in group.iter().zip(records).enumerate() {
            let Report::File(o) = r else { continue };
            let Some(to) = self.move_target(o, rec.as_ref()) else {
                continue;
            };
            let job = MoveJob {
                i,
                root: o.file.root.clone(),
                at: o.file.at.clone(),
                rel: o.file.rel.clone(),
                to,
                sig: o.file.sig,
            };
            match jobs.iter_mut().find(|(inbox, _)| *inbox == o.file.inbox) {
                Some((_, list)) => list.push(job),
                None => jobs.push((o.file.inbox, vec![job])),
            }
        }
        for (inbox, list) in jobs {
            let idx: Vec<usize> = list.iter().map(|j| j.i).collect();
            let done = self.guards[inbox]
                .run_with_progress(move |progress| {
                    list.into_iter()
                        .map(|j| {
                            let moved = j.check_and_move();
                            progress.tick();
                            (j.i, moved)
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
                        out[i] = Some(Err(timed_out(&stalled)));
                    }
                }
            }
        }
        out
    }
}

/// One move of a group.
struct MoveJob {
    /// Index in the group.
    i: usize,
    /// The file's root, where it is below it, and its relative path.
    root: PathBuf,
    at: PathBuf,
    rel: PathBuf,
    /// done/ or failed/.
    to: PathBuf,
    /// The file as it was judged (uploaded, found a duplicate, failed).
    sig: Signature,
}

impl MoveJob {
    /// Moves the file, if it is still the file that was judged. A file changed or replaced
    /// since (written to during its upload, a new version saved over it) must not go to
    /// done/ or failed/ under a verdict about other bytes: it is left where it is, with
    /// [`ChangedSince`], and goes round again. Checked in the same call as the move, so
    /// nothing but the rename itself comes between the check and the move.
    fn check_and_move(&self) -> std::io::Result<beneath::Moved> {
        match beneath::metadata(&self.root, &self.at) {
            Ok(m) if Signature::of(&m) != self.sig => Err(std::io::Error::other(ChangedSince)),
            // Unchanged, or not there to look at: the move says what became of it.
            _ => beneath::move_no_clobber(&self.root, &self.at, &self.to, &self.rel),
        }
    }
}

/// The file at the name is no longer the file the verdict is about.
#[derive(Debug)]
pub(super) struct ChangedSince;

impl std::fmt::Display for ChangedSince {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("the file changed after it was judged")
    }
}

impl std::error::Error for ChangedSince {}

/// Whether a move was not made because the file had changed ([`ChangedSince`]).
pub(super) fn changed_since(e: &std::io::Error) -> bool {
    e.get_ref().is_some_and(|inner| inner.is::<ChangedSince>())
}

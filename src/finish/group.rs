//! A group's ledger records and its moves: each outcome written to the ledger (flushed once
//! for the group by the stage loop), then the moves to done/ or failed/ made per inbox in one
//! call on the blocking pool.

use std::path::PathBuf;

use super::{FinishStage, left_here, timed_out};
use crate::beneath;
use crate::ledger::{LedgerError, Record, State};
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
                        out[i] = Some(Err(timed_out(&stalled)));
                    }
                }
            }
        }
        out
    }
}

/// One move of a group: (index in the group, the file's root, where it is below it, its
/// relative path, destination folder).
type MoveJob = (usize, PathBuf, PathBuf, PathBuf, PathBuf);

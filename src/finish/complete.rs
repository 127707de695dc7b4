//! Each file's completion once its outcome is durable: the move finished (or found already
//! made for its group), the reason file written beside a failed one, where it went recorded,
//! its claim released or deferred, and one log line saying what became of it.

use std::path::PathBuf;

use tokio::time::Instant;

use super::reason::Reason;
use super::{FinishStage, STUCK_RETRY, left_here};
use crate::beneath;
use crate::ledger::{AbandonedObject, Record, State};
use crate::run::{Fate, Mode};
use crate::telemetry::escape;
use crate::upload::{FileResult, Outcome};

impl FinishStage {
    /// Counts the file's fate (see [`Stats::count`]); true when that is news, and its lines
    /// are worth more than debug level.
    fn count(&self, o: &Outcome, fate: Fate) -> bool {
        if !fate.stays() {
            self.stats.add_done_bytes(o.file.sig.size);
        }
        self.stats.count(&o.file.path, fate)
    }

    /// The file stays in the inbox, its claim deferred until `until`; counted as deferred.
    fn stays_until(&self, o: &Outcome, until: Instant) -> (Fate, bool) {
        self.claims.defer(&o.file.path, until);
        (Fate::Deferred, self.count(o, Fate::Deferred))
    }

    /// Completes the file's move (its outcome is already durable; `moved` is the move already
    /// made for it, if any), releases or defers its claim, and says what became of the file
    /// and whether that is news.
    pub(super) async fn complete(
        &self,
        o: &Outcome,
        rec: Option<Record>,
        moved: Option<std::io::Result<beneath::Moved>>,
    ) -> (Fate, bool) {
        let inbox = &self.inboxes[o.file.inbox];
        let path = &o.file.path;
        if let Some(Err(e)) = &moved
            && super::group::changed_since(e)
        {
            return self.changed_before_move(o);
        }
        if left_here(o, rec.as_ref())
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
                        self.stays_until(o, Instant::now() + STUCK_RETRY)
                    }
                    Err(e) if self.taken_over(o, &e) => {
                        (Fate::Requeued, self.count(o, Fate::Requeued))
                    }
                    Err(e) => {
                        // Not failed yet in the counts' sense: a file counted failed is in
                        // failed/. It stays in the inbox and its move is tried again.
                        tracing::error!(inbox = %inbox.name, path = %escape(&o.file.rel), reason = %escape(reason),
                            error = %e, "failed, and cannot move the file to failed/; it stays in the inbox");
                        self.stays_until(o, Instant::now() + self.retry_later)
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
                self.stays_until(o, *until)
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

    /// The file changed after its verdict (found when it was to be moved): it stays and goes
    /// round again once stable. An object uploaded from it holds the earlier bytes (the server
    /// verified them); it is remembered as ours and unfinished, so that the next version of
    /// this file may replace it (best effort: losing this record costs a renamed key at worst,
    /// never data). The ledger's record of the earlier bytes stays `uploaded`, which is true.
    fn changed_before_move(&self, o: &Outcome) -> (Fate, bool) {
        let inbox = &self.inboxes[o.file.inbox];
        let news = self.count(o, Fate::Requeued);
        if let (FileResult::Uploaded { key, .. }, Some(sha)) = (&o.result, &o.sha256) {
            let obj = AbandonedObject {
                v: 1,
                sha256: sha.clone(),
                size: o.file.size,
                inbox: inbox.name.clone(),
                rel_path: o.file.rel.to_string_lossy().into_owned(),
            };
            if let Err(e) = self.ledger.put_abandoned(&inbox.bucket, key, &obj) {
                tracing::debug!(error = %e, "cannot remember the object of a changed file");
            }
            tracing::warn!(inbox = %inbox.name, path = %escape(&o.file.rel), key = %escape(key),
                "file changed during upload; it will be uploaded again once stable");
        } else {
            tracing::info!(inbox = %inbox.name, path = %escape(&o.file.rel),
                "file changed while being processed; it goes round again once stable");
        }
        self.claims.release(&o.file.path);
        (Fate::Requeued, news)
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
                self.stays_until(o, Instant::now() + self.retry_later)
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
                self.stays_until(o, Instant::now() + STUCK_RETRY)
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
                self.stays_until(o, Instant::now() + STUCK_RETRY)
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

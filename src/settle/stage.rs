//! The stage loop: takes candidates from watch, feeds them to the [`Settler`], runs the looks
//! it asks for (grouped by inbox, on the blocking pool under the inbox's [`FsGuard`]), and
//! claims and hands on the files it decides are ready.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;

use futures::StreamExt;
use futures::future::BoxFuture;
use futures::stream::FuturesUnordered;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::look::{Ask, look_at};
use super::{Decision, Due, Ignore, Kind, Look, ReadyFile, Rules, Settler};
use crate::claims::Claims;
use crate::config::InboxSettings;
use crate::run::{Mode, Stats};
use crate::stall::FsGuard;
use crate::watch::Candidate;

/// Files being looked at, at most, at once.
const LOOKS: usize = 512;
/// Files of one inbox looked at in one blocking call, at most.
const GROUP: usize = 64;
/// How long after a file's due time its look may wait for others due at about the same time.
const COALESCE: Duration = Duration::from_millis(5);

/// How often the backlog is reported to [`crate::ops`].
const BACKLOG_EVERY: Duration = Duration::from_secs(1);

pub struct SettleStage {
    pub inboxes: Arc<Vec<InboxSettings>>,
    pub ignores: Vec<Ignore>,
    pub claims: Arc<Claims>,
    /// One per inbox: its file-system calls run under its time limit (see [`crate::stall`]).
    pub guards: Vec<FsGuard>,
    pub mode: Mode,
    /// Where the backlog is shown (metrics, `/status`).
    pub ops: Arc<crate::ops::Ops>,
    /// Told when a file that was left in the inbox has gone (it is no longer left).
    pub stats: Arc<Stats>,
}

impl SettleStage {
    pub async fn run(
        self,
        mut input: mpsc::Receiver<Candidate>,
        output: mpsc::Sender<ReadyFile>,
        shutdown: CancellationToken,
    ) {
        let mut settler = Settler::new(self.mode == Mode::Daemon);
        // Looks run concurrently and are handled as they come back, so a look that waits on
        // a hung share holds up nothing but its own inbox's files. Files due together in one
        // inbox are looked at in one blocking call: one thread hand-off per group, not per file.
        let mut looks: FuturesUnordered<BoxFuture<'static, Vec<(PathBuf, Look)>>> =
            FuturesUnordered::new();
        let mut in_flight = 0usize;
        let mut input_open = true;
        // The backlog for metrics and `/status`, once a second (ages are computed when read).
        let mut report = tokio::time::interval(BACKLOG_EVERY);
        report.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        loop {
            if !input_open && settler.is_empty() {
                return; // once mode: everything swept has been handed on or has vanished
            }
            // A little after the earliest due time, so that files due within a few
            // milliseconds of each other share one look (never before: a window is a minimum).
            let next = settler.next_due().map(|t| t + COALESCE);
            tokio::select! {
                _ = shutdown.cancelled() => return,
                c = input.recv(), if input_open => match c {
                    Some(c) => {
                        self.on_candidate(c, &mut settler);
                        // A burst (a sweep, many drops at once) is taken in as a whole.
                        for _ in 0..GROUP {
                            let Ok(c) = input.try_recv() else { break };
                            self.on_candidate(c, &mut settler);
                        }
                    }
                    None => input_open = false,
                },
                Some(group) = looks.next() => {
                    in_flight -= group.len();
                    for (path, look) in group {
                        if !self.on_look(&path, look, &mut settler, &output).await {
                            return; // downstream is gone: shutting down
                        }
                    }
                }
                _ = crate::run::sleep_until(next), if next.is_some() && in_flight < LOOKS => {}
                _ = report.tick() => {
                    for (inbox, (files, oldest)) in settler.backlog(self.inboxes.len()).into_iter().enumerate() {
                        self.ops.backlog(inbox, files, oldest);
                    }
                }
            }
            let due = settler.take_due(Instant::now(), LOOKS.saturating_sub(in_flight));
            for group in self.groups(due) {
                in_flight += group.len();
                looks.push(Box::pin(self.look(group)));
            }
        }
    }

    /// Due looks by inbox, at most [`GROUP`] to a group.
    fn groups(&self, due: Vec<Due>) -> Vec<Vec<Due>> {
        let mut by_inbox: Vec<Vec<Due>> = Vec::new();
        for d in due {
            match by_inbox
                .iter_mut()
                .find(|g| g[0].inbox == d.inbox && g.len() < GROUP)
            {
                Some(g) => g.push(d),
                None => by_inbox.push(vec![d]),
            }
        }
        by_inbox
    }

    fn on_candidate(&self, c: Candidate, settler: &mut Settler) {
        let inbox = &self.inboxes[c.inbox];
        let Ok(rel) = c.path.strip_prefix(&inbox.path).map(Path::to_path_buf) else {
            return; // not under this inbox (cannot happen with our watchers)
        };
        if rel.as_os_str().is_empty() || self.ignores[c.inbox].is_ignored(&rel) {
            return;
        }
        let now = Instant::now();
        let wake = c.now.then(|| c.path.clone());
        let rules = Rules {
            settle: inbox.settle,
            incomplete_after: inbox.incomplete_after,
        };
        let new = settler.candidate(c.path, c.inbox, rel, rules, c.hint, now);
        if let Some(path) = wake.filter(|_| !new) {
            // Its wait is over (a paused inbox works again): look now, not at the old time.
            settler.retry_at(&path, now);
        }
    }

    /// Looks at a group of files of one inbox, in one call on the blocking pool under the
    /// inbox's time limit (each look counts as progress).
    fn look(&self, group: Vec<Due>) -> impl Future<Output = Vec<(PathBuf, Look)>> + Send + use<> {
        let inbox = group.first().map_or(0, |d| d.inbox);
        let guard = self.guards[inbox].clone();
        let root = self.inboxes[inbox].path.clone();
        let check = self.inboxes[inbox].check_format;
        let now = Instant::now();
        // Ask whether a writer still holds a file, and check its format, only when it looked
        // quiet (or its writer has just closed it) and is free to go: both open the file.
        let jobs: Vec<(PathBuf, PathBuf, Ask)> = group
            .into_iter()
            .map(|d| {
                let ask = if self.claims.busy(&d.path, now).is_some() {
                    Ask::Nothing
                } else if d.closed {
                    Ask::Always
                } else {
                    d.unchanged_from.map_or(Ask::Nothing, Ask::IfUnchanged)
                };
                (d.path, d.rel, ask)
            })
            .collect();
        let paths: Vec<PathBuf> = jobs.iter().map(|(p, _, _)| p.clone()).collect();
        async move {
            let looked = guard
                .run_with_progress(move |progress| {
                    // The inbox folder is resolved once for the whole group.
                    let dir = crate::beneath::Root::open(&root);
                    jobs.into_iter()
                        .map(|(path, rel, ask)| {
                            let look = match &dir {
                                Ok(dir) => look_at(dir, &rel, ask, check),
                                // No inbox folder (removed, or its share is gone): nothing
                                // below it is there.
                                Err(_) => Look::Gone,
                            };
                            progress.tick();
                            (path, look)
                        })
                        .collect::<Vec<_>>()
                })
                .await;
            // Not answering: nothing is known about any of them.
            looked.unwrap_or_else(|_| paths.into_iter().map(|p| (p, Look::Stalled)).collect())
        }
    }

    /// Acts on a look's decision. Returns false when downstream has gone away.
    async fn on_look(
        &self,
        path: &Path,
        look: Look,
        settler: &mut Settler,
        output: &mpsc::Sender<ReadyFile>,
    ) -> bool {
        let now = Instant::now();
        let busy = self.claims.busy(path, now);
        let (inbox, rel, size, sig, kind) = match settler.looked(path, look, busy, now) {
            Decision::Wait => return true,
            Decision::Forget => {
                // Forget any deferral too, which would otherwise stay in memory for good.
                self.claims.forget_deferred(path);
                self.stats.gone(path);
                return true;
            }
            Decision::Cut { inbox, rel, what } => {
                // Once per file: why it waits beyond its settle window.
                tracing::info!(inbox = %self.inboxes[inbox].name,
                    path = %crate::telemetry::escape(&rel), reason = %what,
                    after = ?self.inboxes[inbox].incomplete_after,
                    "file is not complete yet by its format; waiting for the rest");
                return true;
            }
            Decision::LeftCut { inbox, rel, what } => {
                // Not an error: a later run (or the daemon) takes it once it is whole, or
                // moves it to failed/ after incomplete_after.
                tracing::warn!(inbox = %self.inboxes[inbox].name,
                    path = %crate::telemetry::escape(&rel), reason = %what,
                    "file is not complete yet; left in the inbox for the next run");
                // Counted as left, so that `once` does not claim every file went to done/.
                self.stats.count(path, crate::run::Fate::Requeued);
                return true;
            }
            Decision::Ready { inbox, rel, sig } => (inbox, rel, sig.size, sig, Kind::Regular),
            // Not something we can upload faithfully; it still must not sit unexplained in
            // the inbox, so hand it on to be moved to failed/ (as itself) with a reason.
            Decision::NotRegular {
                inbox,
                rel,
                sig,
                reason,
            } => (inbox, rel, 0, sig, Kind::NotRegular(reason)),
            // Cut for all of incomplete_after: it must not sit unexplained in the inbox
            // either, and must never be uploaded half.
            Decision::Incomplete {
                inbox,
                rel,
                sig,
                reason,
            } => {
                tracing::warn!(inbox = %self.inboxes[inbox].name,
                    path = %crate::telemetry::escape(&rel), reason = %reason,
                    "file is still incomplete; moving it to failed/");
                (inbox, rel, sig.size, sig, Kind::Incomplete(reason))
            }
        };
        if self.claims.try_claim(path, now).is_err() {
            // Taken between the two looks (cannot happen with one settle): look again later.
            settler.retry_at(path, now + self.inboxes[inbox].settle);
            return true;
        }
        let ready = ReadyFile {
            inbox,
            path: path.to_path_buf(),
            root: self.inboxes[inbox].path.clone(),
            at: rel.clone(),
            rel,
            size,
            sig,
            kind,
            ready_at: now,
        };
        if output.send(ready).await.is_err() {
            self.claims.release(path);
            settler.forget(path);
            return false;
        }
        true
    }
}

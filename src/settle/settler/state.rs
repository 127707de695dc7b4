//! The [`Settler`]'s state: the files in view, what each was last seen as and since when,
//! and the timetable of their looks (settle windows, the backoff of a cut file, the pause
//! after a close). Pure: time is passed in.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::path::{Path, PathBuf};
use std::time::Duration;
use tokio::time::Instant;

use super::{Decision, Due, Hint, RECHECK_MAX, Rules};
use crate::settle::Signature;

#[derive(Debug)]
pub(super) struct Pending {
    pub(super) inbox: usize,
    pub(super) rel: PathBuf,
    /// What the last look saw; `None` before the first one.
    pub(super) sig: Option<Signature>,
    /// When the next look is due; `None` while a look is under way.
    pub(super) next: Option<Instant>,
    pub(super) rules: Rules,
    /// When it came into view (for the backlog's oldest age).
    pub(super) seen: Instant,
    /// Since when this file has been in view: the clock of `incomplete_after`. Starts again
    /// when another file (another inode) takes the path.
    pub(super) since: Instant,
    /// The wait before the next look while its format says it is cut; `None` while it is
    /// not known to be cut.
    pub(super) cut: Option<Duration>,
    /// When its writer last closed it, while that close has not been acted on: the fast
    /// path. Cleared once a look has decided it (taken, or back to the settle window).
    pub(super) closed: Option<Instant>,
    /// The look under way was made for a close (asked the lease probe and the format).
    pub(super) closed_look: bool,
}

impl Pending {
    /// Takes in the signature a look saw at `now`; returns whether it changed since the
    /// previous look (or is the first).
    pub(super) fn saw(&mut self, sig: Signature, now: Instant) -> bool {
        if self
            .sig
            .is_some_and(|s| (s.dev, s.ino) != (sig.dev, sig.ino))
        {
            // Another file has taken the path: its own clock.
            self.since = now;
            self.cut = None;
        }
        let changed = self.sig != Some(sig);
        self.sig = Some(sig);
        if changed {
            // Written to since the last look: a cut file is being finished, so the next
            // check comes a window after its last write, not after a long wait.
            self.cut = self.cut.map(|_| Duration::ZERO);
        }
        changed
    }

    /// The wait before the next look at a file its format says is cut, and whether it is
    /// the first (news worth a line in the log): the settle window, then doubling while the
    /// file stays unchanged and cut, up to [`RECHECK_MAX`] (never below the window).
    pub(super) fn back_off(&mut self) -> (Duration, bool) {
        let first = self.cut.is_none();
        let wait = self
            .cut
            .map_or(self.rules.settle, |w| w * 2)
            .clamp(self.rules.settle, RECHECK_MAX.max(self.rules.settle));
        self.cut = Some(wait);
        (wait, first)
    }
}

/// The files settle is watching, with their timetable.
#[derive(Debug, Default)]
pub struct Settler {
    pub(super) pending: HashMap<PathBuf, Pending>,
    /// Due times, earliest first; an entry is stale when it no longer matches the file's
    /// `next` (cheaper than removing from the middle of the heap).
    pub(super) due: BinaryHeap<Reverse<(Instant, PathBuf)>>,
    /// Daemon mode: a file handed on stays in view, so that a file that comes back (deferred,
    /// inbox paused, changed during upload) is offered again on time without a rescan. `once`
    /// offers every file exactly once.
    pub(super) keep_in_view: bool,
}

impl Settler {
    pub fn new(keep_in_view: bool) -> Self {
        Settler {
            keep_in_view,
            ..Settler::default()
        }
    }

    /// No file in view (and so no look under way).
    pub fn is_empty(&self) -> bool {
        self.pending.is_empty()
    }

    /// A candidate from watch. A new one is due for its first look at once. A file already
    /// in view is mostly left alone (its next look sees any change), except: a close is
    /// looked at at once (the fast path), and a change ends the long wait of a file that was
    /// cut (its writer is back). Returns whether it is new.
    pub fn candidate(
        &mut self,
        path: PathBuf,
        inbox: usize,
        rel: PathBuf,
        rules: Rules,
        hint: Hint,
        now: Instant,
    ) -> bool {
        let closed = (hint == Hint::Closed).then_some(now);
        let Some(p) = self.pending.get_mut(&path) else {
            self.pending.insert(
                path.clone(),
                Pending {
                    inbox,
                    rel,
                    sig: None,
                    next: None,
                    rules,
                    seen: now,
                    since: now,
                    cut: None,
                    closed,
                    closed_look: false,
                },
            );
            self.rearm(&path, now);
            return true;
        };
        let look_now = match hint {
            Hint::Found => false,
            Hint::Closed => {
                p.closed = closed;
                true
            }
            Hint::Changed => p.cut.is_some() && p.next.is_some_and(|t| t > now + p.rules.settle),
        };
        // A look under way (`next` is `None`) is followed by one for the close when it comes
        // back (see `looked`): never two looks at one file at once.
        if look_now && p.next.is_some() {
            self.rearm(&path, now);
        }
        false
    }

    /// Files in view per inbox (seen and not gone from the inbox yet: in daemon mode that
    /// includes files on their way through the pipeline) and since when the oldest is.
    pub fn backlog(&self, inboxes: usize) -> Vec<(u64, Option<Instant>)> {
        let mut out = vec![(0u64, None::<Instant>); inboxes];
        for p in self.pending.values() {
            if let Some((n, oldest)) = out.get_mut(p.inbox) {
                *n += 1;
                if oldest.is_none_or(|o| p.seen < o) {
                    *oldest = Some(p.seen);
                }
            }
        }
        out
    }

    /// When the earliest look is due.
    pub fn next_due(&mut self) -> Option<Instant> {
        while let Some(Reverse((t, path))) = self.due.peek() {
            if self.pending.get(path).and_then(|p| p.next) == Some(*t) {
                return Some(*t);
            }
            self.due.pop(); // stale
        }
        None
    }

    /// Up to `max` looks due by `now`; each is marked as under way until [`Settler::looked`].
    pub fn take_due(&mut self, now: Instant, max: usize) -> Vec<Due> {
        let mut out = Vec::new();
        while out.len() < max {
            let Some(t) = self.next_due() else { break };
            if t > now {
                break;
            }
            let Some(Reverse((_, path))) = self.due.pop() else {
                break;
            };
            let Some(p) = self.pending.get_mut(&path) else {
                continue;
            };
            p.next = None;
            p.closed_look = p.closed.is_some();
            out.push(Due {
                inbox: p.inbox,
                rel: p.rel.clone(),
                unchanged_from: p.sig,
                closed: p.closed_look,
                path,
            });
        }
        out
    }

    /// Decided complete: hand it on.
    pub(super) fn ready(&mut self, path: &Path, window: Instant) -> Decision {
        let Some(p) = self.pending.get(path) else {
            return Decision::Wait;
        };
        let (inbox, rel) = (p.inbox, p.rel.clone());
        let Some(sig) = p.sig else {
            return Decision::Wait;
        };
        if self.keep_in_view {
            // Stays in view while in flight; once it has moved to done/, the next look finds
            // it gone and forgets it.
            self.rearm(path, window);
        } else {
            self.pending.remove(path);
        }
        Decision::Ready { inbox, rel, sig }
    }

    /// The claim for a file decided ready was refused after all: look again at `at`.
    pub fn retry_at(&mut self, path: &Path, at: Instant) {
        if self.pending.contains_key(path) {
            self.rearm(path, at);
        }
    }

    /// Drops `path` from view (handing it on failed: the pipeline is going down).
    pub fn forget(&mut self, path: &Path) {
        self.pending.remove(path);
    }

    pub(super) fn rearm(&mut self, path: &Path, at: Instant) {
        if let Some(p) = self.pending.get_mut(path) {
            p.next = Some(at);
            self.due.push(Reverse((at, path.to_path_buf())));
        }
    }
}

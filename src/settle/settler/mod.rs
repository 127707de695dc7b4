//! The settle decisions without I/O (like [`crate::batch::Batcher`]): which files are due for a
//! look, and what a look's findings, the file's claim and the time mean for each. The stage
//! loop in `mod.rs` does the looking, on the blocking pool under the inbox's time limit.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::path::{Path, PathBuf};
use std::time::Duration;
use tokio::time::Instant;

use super::Signature;
use super::format::Whole;
use crate::claims::Busy;

/// How long a file of no known format waits after its writer closed it before it goes on the
/// fast path. Some writers close a file and open it again to go on (a copy tool that sets
/// the times or writes a resource fork afterwards, an application that saves in two steps);
/// their next write comes within milliseconds. 300 ms is long enough for those and still
/// far below the default `settle` (2 s). A file whose format says it is whole needs no pause.
pub const CLOSE_PAUSE: Duration = Duration::from_millis(300);

/// The longest wait between two looks at a file that its format says is cut. The wait
/// starts at the settle window and doubles while the file stays unchanged and cut: each
/// look rereads its tail (up to 64 KiB for a ZIP), which on a network share costs round
/// trips, and a file left cut for minutes is rarely finished a second later. Kernel events
/// (a write, a close) end the wait at once on local disks, so this only bounds how late a
/// writer that resumes is noticed on a share or in poll mode.
pub const RECHECK_MAX: Duration = Duration::from_secs(30);

/// Per inbox: what settle needs to know to time a file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rules {
    pub settle: Duration,
    /// A file its format says is cut goes to failed/ once it has been in view this long.
    pub incomplete_after: Duration,
}

/// Why watch offers a path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hint {
    /// Found by a sweep, a poll or a rescan: nothing is known about it.
    Found,
    /// A kernel event said it changed.
    Changed,
    /// Its writer closed it (close-write on a local file system): worth a look at once.
    Closed,
}

/// The format check of one look.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Checked {
    /// Not made: the look did not ask (the file was not quiet, or was busy), or a writer
    /// still holds the file.
    NotAsked,
    /// This inbox does not check formats (`check_format = false`).
    Off,
    /// The file could not be opened to check it (permission denied, say). Not a verdict on
    /// its completeness: the upload stage reports a file it cannot read, and gives a
    /// permission that arrives late its time.
    Unopenable,
    /// What the check found.
    Found(Whole),
    /// Reading failed half way (an I/O error): not a verdict either; look again.
    Failed,
}

/// What one look at a path found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Look {
    /// Gone, or reachable only through a link: nothing to do (a new candidate comes if it
    /// returns).
    Gone,
    Dir,
    /// A link, FIFO, socket or device: it goes to failed/ as itself, with this reason.
    NotRegular {
        sig: Signature,
        reason: String,
    },
    /// A regular file. `writing` is the lease probe's answer when the look asked it (the file
    /// looked unchanged since the previous look, or its writer had just closed it), `None`
    /// when not asked or not knowable; `checked` the format check made with it.
    Regular {
        sig: Signature,
        writing: Option<bool>,
        checked: Checked,
    },
    /// The inbox's file system did not answer in time: nothing is known.
    Stalled,
}

/// What the stage loop should do after a look.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Nothing now: the file waits (the settler has its next look in its timetable) or has
    /// been dropped from view (a folder, an empty placeholder).
    Wait,
    /// It has gone: forget it, and any deferral of it.
    Forget,
    /// Complete: claim it and hand it on.
    Ready {
        inbox: usize,
        rel: PathBuf,
        sig: Signature,
    },
    /// Not a regular file: claim it and hand it on to be moved to failed/ with `reason`.
    NotRegular {
        inbox: usize,
        rel: PathBuf,
        sig: Signature,
        reason: String,
    },
    /// Like [`Decision::Wait`], the first time its format says it is cut (worth one line in
    /// the log: a file that waits longer than its settle window should say why).
    Cut {
        inbox: usize,
        rel: PathBuf,
        what: String,
    },
    /// `once` only: its format says it is cut. A run that ends when its files are done
    /// cannot wait `incomplete_after` for it: it stays in the inbox for the next run.
    LeftCut {
        inbox: usize,
        rel: PathBuf,
        what: String,
    },
    /// Its format says it is cut and it has stayed so for `incomplete_after`: claim it and
    /// hand it on to be moved to failed/ with `reason` (never uploaded half).
    Incomplete {
        inbox: usize,
        rel: PathBuf,
        sig: Signature,
        reason: String,
    },
}

/// A look the stage loop should make now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Due {
    pub path: PathBuf,
    pub inbox: usize,
    pub rel: PathBuf,
    /// The signature of the previous look: ask the lease probe only if the file still has it.
    pub unchanged_from: Option<Signature>,
    /// Its writer has closed it: ask the lease probe (and check the format) whatever the
    /// previous look saw.
    pub closed: bool,
}

#[derive(Debug)]
struct Pending {
    inbox: usize,
    rel: PathBuf,
    /// What the last look saw; `None` before the first one.
    sig: Option<Signature>,
    /// When the next look is due; `None` while a look is under way.
    next: Option<Instant>,
    rules: Rules,
    /// When it came into view (for the backlog's oldest age).
    seen: Instant,
    /// Since when this file has been in view: the clock of `incomplete_after`. Starts again
    /// when another file (another inode) takes the path.
    since: Instant,
    /// The wait before the next look while its format says it is cut; `None` while it is
    /// not known to be cut.
    cut: Option<Duration>,
    /// When its writer last closed it, while that close has not been acted on: the fast
    /// path. Cleared once a look has decided it (taken, or back to the settle window).
    closed: Option<Instant>,
    /// The look under way was made for a close (asked the lease probe and the format).
    closed_look: bool,
}

/// The files settle is watching, with their timetable.
#[derive(Debug, Default)]
pub struct Settler {
    pending: HashMap<PathBuf, Pending>,
    /// Due times, earliest first; an entry is stale when it no longer matches the file's
    /// `next` (cheaper than removing from the middle of the heap).
    due: BinaryHeap<Reverse<(Instant, PathBuf)>>,
    /// Daemon mode: a file handed on stays in view, so that a file that comes back (deferred,
    /// inbox paused, changed during upload) is offered again on time without a rescan. `once`
    /// offers every file exactly once.
    keep_in_view: bool,
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

    /// What a look at `path` found, its claim now (`busy`), and the time: the decision.
    pub fn looked(
        &mut self,
        path: &Path,
        look: Look,
        busy: Option<Busy>,
        now: Instant,
    ) -> Decision {
        let Some(p) = self.pending.get_mut(path) else {
            return Decision::Wait;
        };
        let window = now + p.rules.settle;
        let closed_look = std::mem::take(&mut p.closed_look);
        let (sig, writing, checked) = match look {
            Look::Stalled => {
                // Nothing known: look again a window later. The inbox's guard refuses at once
                // while its share hangs, so this costs no thread.
                self.rearm(path, window);
                return Decision::Wait;
            }
            Look::Gone => {
                self.pending.remove(path);
                return Decision::Forget;
            }
            Look::Dir => {
                self.pending.remove(path);
                return Decision::Wait;
            }
            Look::NotRegular { sig, reason } => {
                let Some(p) = self.pending.remove(path) else {
                    return Decision::Wait;
                };
                return Decision::NotRegular {
                    inbox: p.inbox,
                    rel: p.rel,
                    sig,
                    reason,
                };
            }
            Look::Regular {
                sig,
                writing,
                checked,
            } => (sig, writing, checked),
        };
        if p.sig.is_some_and(|s| (s.dev, s.ino) != (sig.dev, sig.ino)) {
            // Another file has taken the path: its own clock.
            p.since = now;
            p.cut = None;
        }
        let changed = p.sig != Some(sig);
        p.sig = Some(sig);
        if changed {
            // Written to since the last look: a cut file is being finished, so the next
            // check comes a window after its last write, not after a long wait.
            p.cut = p.cut.map(|_| Duration::ZERO);
        }
        if sig.size == 0 {
            if changed {
                self.rearm(path, window);
            } else {
                // A placeholder: wait until it grows. Dropped from view; a later event or
                // rescan brings it back.
                self.pending.remove(path);
            }
            return Decision::Wait;
        }
        match busy {
            None => {}
            // Being uploaded (or this version's predecessor is): look again later. A close
            // meanwhile is the upload's business (it sees the file change under it).
            Some(Busy::InFlight) => {
                p.closed = None;
                self.rearm(path, window);
                return Decision::Wait;
            }
            // Deferred or its inbox paused: offer it again when that time comes.
            Some(Busy::Until(t)) => {
                p.closed = None;
                self.rearm(path, t.max(window));
                return Decision::Wait;
            }
        }
        if let Some(closed) = p.closed {
            if !closed_look {
                // Closed while an ordinary look was under way: the look for the close now.
                self.rearm(path, now);
                return Decision::Wait;
            }
            match (writing, &checked) {
                // The fast path. Its writer has closed it, nobody has it open for writing,
                // the look saw the same size and time before and after the check, and its
                // format says it is whole: no reason to wait any longer.
                (Some(false), Checked::Found(Whole::Yes(_))) => {
                    p.closed = None;
                    return self.ready(path, window);
                }
                // Closed and free, but nothing in it says it is whole: a short pause after the
                // close (some writers close and open again), then a second look that must see
                // it unchanged.
                (Some(false), Checked::Found(Whole::Unknown) | Checked::Off) => {
                    let after = closed + CLOSE_PAUSE;
                    if changed || now < after {
                        self.rearm(path, after.max(now));
                        return Decision::Wait;
                    }
                    p.closed = None;
                    return self.ready(path, window);
                }
                // Cut: handled as ever, below.
                (Some(false), Checked::Found(Whole::No(..))) => p.closed = None,
                // Open for writing again, lease unknowable (no CAP_LEASE, a file system
                // without leases), or unreadable: the settle window decides, as for any file.
                _ => {
                    p.closed = None;
                    self.rearm(path, window);
                    return Decision::Wait;
                }
            }
        } else if changed {
            // New, or still being written: the window starts (again) from now.
            self.rearm(path, window);
            return Decision::Wait;
        }
        if writing == Some(true) {
            // Quiet for the whole window, but a writer (a Samba client, a scanner's
            // driver) still holds it open for writing: it may only be pausing.
            self.rearm(path, window);
            return Decision::Wait;
        }
        match checked {
            Checked::Found(Whole::Yes(_) | Whole::Unknown) | Checked::Off | Checked::Unopenable => {
                p.cut = None;
                self.ready(path, window)
            }
            Checked::NotAsked => {
                // Busy when the look was made and free now: the look that checks, at once.
                self.rearm(path, now);
                Decision::Wait
            }
            Checked::Failed => {
                // A read error is no verdict on the file: look again a window later.
                self.rearm(path, window);
                Decision::Wait
            }
            Checked::Found(Whole::No(format, what)) => {
                if !self.keep_in_view {
                    let Some(p) = self.pending.remove(path) else {
                        return Decision::Wait;
                    };
                    return Decision::LeftCut {
                        inbox: p.inbox,
                        rel: p.rel,
                        what: format!("incomplete {}: {what}", format.name()),
                    };
                }
                let waited = now.saturating_duration_since(p.since);
                let deadline = p.since + p.rules.incomplete_after;
                if waited >= p.rules.incomplete_after {
                    // Cut for all of incomplete_after: its writer is not coming back. Never
                    // uploaded half; it goes to failed/ with what was missing.
                    let Some(p) = self.pending.remove(path) else {
                        return Decision::Wait;
                    };
                    let waited = Duration::from_secs(waited.as_secs());
                    return Decision::Incomplete {
                        inbox: p.inbox,
                        rel: p.rel,
                        sig,
                        reason: format!(
                            "incomplete {}: {what}; waited {}",
                            format.name(),
                            humantime::format_duration(waited)
                        ),
                    };
                }
                // Cut: a scanner between pages, a copy that stalled. Look again after a wait
                // that doubles while nothing changes (see RECHECK_MAX), and at the deadline
                // at the latest, so that it goes to failed/ on time.
                let first = p.cut.is_none();
                let wait = p
                    .cut
                    .map_or(p.rules.settle, |w| w * 2)
                    .clamp(p.rules.settle, RECHECK_MAX.max(p.rules.settle));
                p.cut = Some(wait);
                let (inbox, rel) = (p.inbox, p.rel.clone());
                self.rearm(path, (now + wait).min(deadline));
                if first {
                    return Decision::Cut {
                        inbox,
                        rel,
                        what: format!("incomplete {}: {what}", format.name()),
                    };
                }
                Decision::Wait
            }
        }
    }

    /// Decided complete: hand it on.
    fn ready(&mut self, path: &Path, window: Instant) -> Decision {
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

    fn rearm(&mut self, path: &Path, at: Instant) {
        if let Some(p) = self.pending.get_mut(path) {
            p.next = Some(at);
            self.due.push(Reverse((at, path.to_path_buf())));
        }
    }
}

#[cfg(test)]
mod tests;

//! The settle decisions without I/O (like [`crate::batch::Batcher`]): which files are due for a
//! look, and what a look's findings, the file's claim and the time mean for each. The stage
//! loop in `mod.rs` does the looking, on the blocking pool under the inbox's time limit.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::path::{Path, PathBuf};
use std::time::Duration;
use tokio::time::Instant;

use super::Signature;
use crate::claims::Busy;

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
    /// looked unchanged since the previous look), `None` when not asked or not knowable.
    Regular {
        sig: Signature,
        writing: Option<bool>,
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
}

/// A look the stage loop should make now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Due {
    pub path: PathBuf,
    pub inbox: usize,
    pub rel: PathBuf,
    /// The signature of the previous look: ask the lease probe only if the file still has it.
    pub unchanged_from: Option<Signature>,
}

#[derive(Debug)]
struct Pending {
    inbox: usize,
    rel: PathBuf,
    /// What the last look saw; `None` before the first one.
    sig: Option<Signature>,
    /// When the next look is due; `None` while a look is under way.
    next: Option<Instant>,
    settle: Duration,
    /// When it came into view (for the backlog's oldest age).
    seen: Instant,
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

    /// A candidate from watch. A file already in view is left alone (its next look sees any
    /// change); a new one is due for its first look at once. Returns whether it is new.
    pub fn candidate(
        &mut self,
        path: PathBuf,
        inbox: usize,
        rel: PathBuf,
        settle: Duration,
        now: Instant,
    ) -> bool {
        if self.pending.contains_key(&path) {
            return false;
        }
        self.pending.insert(
            path.clone(),
            Pending {
                inbox,
                rel,
                sig: None,
                next: None,
                settle,
                seen: now,
            },
        );
        self.rearm(&path, now);
        true
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
            out.push(Due {
                inbox: p.inbox,
                rel: p.rel.clone(),
                unchanged_from: p.sig,
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
        let window = now + p.settle;
        let sig = match look {
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
            Look::Regular { sig, writing } => {
                if p.sig != Some(sig) {
                    // New, or still being written: the window starts (again) from now.
                    p.sig = Some(sig);
                    self.rearm(path, window);
                    return Decision::Wait;
                }
                if sig.size == 0 {
                    // A placeholder: wait until it grows. Dropped from view; a later event or
                    // rescan brings it back.
                    self.pending.remove(path);
                    return Decision::Wait;
                }
                match busy {
                    None => {}
                    // Being uploaded (or this version's predecessor is): look again later.
                    Some(Busy::InFlight) => {
                        self.rearm(path, window);
                        return Decision::Wait;
                    }
                    // Deferred or its inbox paused: offer it again when that time comes.
                    Some(Busy::Until(t)) => {
                        self.rearm(path, t.max(window));
                        return Decision::Wait;
                    }
                }
                if writing == Some(true) {
                    // Quiet for the whole window, but a writer (a Samba client, a scanner's
                    // driver) still holds it open for writing: it may only be pausing.
                    self.rearm(path, window);
                    return Decision::Wait;
                }
                sig
            }
        };
        let (inbox, rel) = (p.inbox, p.rel.clone());
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
mod tests {
    use super::*;

    const W: Duration = Duration::from_secs(2);

    fn sig(size: u64, mtime_ns: i128) -> Signature {
        Signature {
            size,
            mtime_ns,
            ino: 7,
            dev: 1,
        }
    }

    fn regular(size: u64, mtime_ns: i128) -> Look {
        Look::Regular {
            sig: sig(size, mtime_ns),
            writing: None,
        }
    }

    fn settler_with(path: &str, now: Instant) -> Settler {
        let mut s = Settler::new(true);
        assert!(s.candidate(path.into(), 0, "a.pdf".into(), W, now));
        assert_eq!(s.take_due(now, 10).len(), 1);
        s
    }

    #[test]
    fn a_file_is_ready_after_one_quiet_window() {
        let t = Instant::now();
        let p = Path::new("/in/a.pdf");
        let mut s = settler_with("/in/a.pdf", t);
        assert_eq!(s.looked(p, regular(10, 1), None, t), Decision::Wait);
        assert_eq!(s.next_due(), Some(t + W));
        assert!(s.take_due(t + W - Duration::from_millis(1), 10).is_empty());
        let due = s.take_due(t + W, 10);
        assert_eq!(due[0].unchanged_from, Some(sig(10, 1)));
        assert_eq!(
            s.looked(p, regular(10, 1), None, t + W),
            Decision::Ready {
                inbox: 0,
                rel: "a.pdf".into(),
                sig: sig(10, 1)
            }
        );
        // Daemon mode: still in view, looked at again a window later.
        assert_eq!(s.next_due(), Some(t + W + W));
    }

    #[test]
    fn a_change_restarts_the_window_and_a_writer_holds_it() {
        let t = Instant::now();
        let p = Path::new("/in/a.pdf");
        let mut s = settler_with("/in/a.pdf", t);
        s.looked(p, regular(10, 1), None, t);
        s.take_due(t + W, 10);
        assert_eq!(s.looked(p, regular(20, 2), None, t + W), Decision::Wait);
        assert_eq!(s.next_due(), Some(t + W + W));
        s.take_due(t + W + W, 10);
        let open = Look::Regular {
            sig: sig(20, 2),
            writing: Some(true),
        };
        assert_eq!(s.looked(p, open, None, t + W + W), Decision::Wait);
        assert_eq!(s.next_due(), Some(t + W * 3));
    }

    #[test]
    fn claims_stalls_and_placeholders() {
        let t = Instant::now();
        let p = Path::new("/in/a.pdf");
        let mut s = settler_with("/in/a.pdf", t);
        s.looked(p, regular(10, 1), None, t);
        s.take_due(t + W, 10);
        let later = t + Duration::from_secs(60);
        assert_eq!(
            s.looked(p, regular(10, 1), Some(Busy::Until(later)), t + W),
            Decision::Wait
        );
        assert_eq!(s.next_due(), Some(later), "deferred: offered again on time");
        s.take_due(later, 10);
        assert_eq!(s.looked(p, Look::Stalled, None, later), Decision::Wait);
        assert_eq!(s.next_due(), Some(later + W), "stalled: looked at again");
        s.take_due(later + W, 10);
        assert_eq!(s.looked(p, Look::Gone, None, later + W), Decision::Forget);
        assert!(s.is_empty());

        let mut s = settler_with("/in/a.pdf", t);
        s.looked(p, regular(0, 1), None, t);
        s.take_due(t + W, 10);
        assert_eq!(s.looked(p, regular(0, 1), None, t + W), Decision::Wait);
        assert!(
            s.is_empty(),
            "an empty placeholder is dropped until it grows"
        );
    }

    #[test]
    fn once_mode_offers_a_file_once_and_links_go_on_at_once() {
        let t = Instant::now();
        let p = Path::new("/in/a.pdf");
        let mut s = Settler::new(false);
        s.candidate(p.into(), 0, "a.pdf".into(), W, t);
        s.take_due(t, 10);
        s.looked(p, regular(10, 1), None, t);
        s.take_due(t + W, 10);
        assert!(matches!(
            s.looked(p, regular(10, 1), None, t + W),
            Decision::Ready { .. }
        ));
        assert!(s.is_empty());

        let l = Path::new("/in/link");
        s.candidate(l.into(), 0, "link".into(), W, t);
        s.take_due(t, 10);
        let look = Look::NotRegular {
            sig: sig(0, 0),
            reason: "a symbolic link".into(),
        };
        assert!(matches!(
            s.looked(l, look, None, t),
            Decision::NotRegular { reason, .. } if reason == "a symbolic link"
        ));
        assert!(s.is_empty());
    }

    #[test]
    fn take_due_respects_the_limit_and_known_files_are_not_taken_twice() {
        let t = Instant::now();
        let mut s = Settler::new(true);
        for i in 0..5 {
            assert!(s.candidate(format!("/in/{i}").into(), 0, format!("{i}").into(), W, t));
        }
        assert!(!s.candidate("/in/0".into(), 0, "0".into(), W, t));
        assert_eq!(s.take_due(t, 3).len(), 3);
        assert_eq!(s.take_due(t, 3).len(), 2);
        assert!(s.take_due(t, 3).is_empty(), "under way: not due again");
        assert_eq!(s.next_due(), None);
    }
}

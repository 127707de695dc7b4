//! What a look means: [`Settler::looked`] turns one look's findings, the file's claim and
//! the time into a [`Decision`], and sets the file's next look.

use std::path::Path;
use std::time::Duration;
use tokio::time::Instant;

use super::{CLOSE_PAUSE, Checked, Decision, Look, Settler};
use crate::claims::Busy;
use crate::settle::Signature;
use crate::settle::format::Whole;

impl Settler {
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
        let changed = p.saw(sig, now);
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
            Checked::Found(Whole::No(format, what)) => self.cut(
                path,
                sig,
                format!("incomplete {}: {what}", format.name()),
                now,
            ),
        }
    }

    /// Its format says the file (seen with `sig`) is cut, missing `what`: it waits, each wait
    /// longer than the last, and goes to failed/ after `incomplete_after`.
    fn cut(&mut self, path: &Path, sig: Signature, what: String, now: Instant) -> Decision {
        let Some(p) = self.pending.get_mut(path) else {
            return Decision::Wait;
        };
        if !self.keep_in_view {
            let Some(p) = self.pending.remove(path) else {
                return Decision::Wait;
            };
            return Decision::LeftCut {
                inbox: p.inbox,
                rel: p.rel,
                what,
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
                reason: format!("{what}; waited {}", humantime::format_duration(waited)),
            };
        }
        // Cut: a scanner between pages, a copy that stalled. Look again after a wait that
        // doubles while nothing changes (see RECHECK_MAX), and at the deadline at the latest,
        // so that it goes to failed/ on time.
        let (wait, first) = p.back_off();
        let (inbox, rel) = (p.inbox, p.rel.clone());
        self.rearm(path, (now + wait).min(deadline));
        if first {
            return Decision::Cut { inbox, rel, what };
        }
        Decision::Wait
    }
}

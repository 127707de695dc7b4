//! Pausing an inbox whose bucket or credentials are wrong: its files stay in the inbox
//! (instead of each failing the same way), one file at a time probes again after a backoff,
//! and the others are handed back at once so they hold no upload task, memory or admission
//! slot that other inboxes need.

use std::sync::Mutex;
use std::time::Duration;
use tokio::time::Instant;

/// The longest wait between two probes of a paused inbox: a fix (a restored bucket, new
/// credentials) takes effect within this, whatever `retry_max` says.
pub const PROBE_MAX: Duration = Duration::from_secs(2);

/// While an inbox stays paused, a reminder this often (the probes in between log at debug).
const REMIND_EVERY: Duration = Duration::from_secs(300);

/// What a resumed inbox wakes: its files waiting out the pause go at once.
pub struct Wake {
    pub claims: std::sync::Arc<crate::claims::Claims>,
    pub root: std::path::PathBuf,
    pub inbox: usize,
    pub candidates: tokio::sync::mpsc::Sender<crate::watch::Candidate>,
}

pub struct Pause {
    /// Where the paused state is shown (metrics, `/status`), and this inbox's index there.
    shown: Option<(std::sync::Arc<crate::ops::Ops>, usize)>,
    wake: Option<Wake>,
    inbox: String,
    state: Mutex<Option<Paused>>,
    initial: Duration,
    max: Duration,
}

struct Paused {
    reason: String,
    until: Instant,
    backoff: Duration,
    /// One file has been let through to try again; the others wait for its answer.
    probing: bool,
    /// When the last WARN about it was written.
    said: Instant,
}

/// Whether a file of this inbox may try an upload now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Admit {
    Go,
    /// Paused: leave the file in the inbox and offer it again at `until`.
    Later {
        reason: String,
        until: Instant,
    },
}

impl Pause {
    pub fn new(inbox: &str, initial: Duration, max: Duration) -> Pause {
        let initial = initial.max(Duration::from_millis(100)).min(PROBE_MAX);
        Pause {
            shown: None,
            wake: None,
            inbox: inbox.to_owned(),
            state: Mutex::new(None),
            initial,
            max: max.min(PROBE_MAX).max(initial),
        }
    }

    /// On resume, wakes the inbox's waiting files through `wake`.
    pub fn waking(mut self, wake: Wake) -> Pause {
        self.wake = Some(wake);
        self
    }

    /// Shows this inbox's paused state in `ops` (index `inbox` there).
    pub fn shown_in(mut self, ops: std::sync::Arc<crate::ops::Ops>, inbox: usize) -> Pause {
        self.shown = Some((ops, inbox));
        self
    }

    fn show(&self, reason: Option<&str>) {
        if let Some((ops, i)) = &self.shown {
            ops.paused(*i, reason.map(str::to_owned));
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Option<Paused>> {
        // A poisoned lock only means a panic elsewhere; the state itself is always whole.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Not paused: go. Paused and the backoff is over: this file probes (go). Otherwise:
    /// later.
    pub fn admit(&self) -> Admit {
        let now = Instant::now();
        let mut st = self.lock();
        match st.as_mut() {
            None => Admit::Go,
            Some(p) if !p.probing && now >= p.until => {
                p.probing = true;
                Admit::Go
            }
            Some(p) => Admit::Later {
                reason: p.reason.clone(),
                until: if p.until > now {
                    p.until
                } else {
                    now + p.backoff
                },
            },
        }
    }

    /// A bucket or credential error: pause, or stay paused for twice as long. Returns when the
    /// next probe may start.
    pub fn pause(&self, reason: &str) -> Instant {
        let now = Instant::now();
        let mut st = self.lock();
        match st.as_mut() {
            None => {
                tracing::error!(inbox = %self.inbox, reason, retry_in = ?self.initial,
                    "inbox paused: bucket, credential or clock problem (the reason says what to fix); its files stay in the inbox until it is fixed");
                let until = now + self.initial;
                self.show(Some(reason));
                *st = Some(Paused {
                    reason: reason.to_owned(),
                    until,
                    backoff: self.initial,
                    probing: false,
                    said: now,
                });
                until
            }
            Some(p) if p.probing || now >= p.until => {
                p.backoff = (p.backoff * 2).min(self.max);
                p.until = now + p.backoff;
                p.probing = false;
                p.reason = reason.to_owned();
                if now.saturating_duration_since(p.said) >= REMIND_EVERY {
                    p.said = now;
                    tracing::warn!(inbox = %self.inbox, reason, retry_in = ?p.backoff, "inbox still paused");
                } else {
                    tracing::debug!(inbox = %self.inbox, reason, retry_in = ?p.backoff, "inbox still paused");
                }
                p.until
            }
            // Another file's answer from before the pause began: already counted.
            Some(p) => p.until,
        }
    }

    /// An upload worked: the problem is gone.
    pub fn resume(&self) {
        if self.lock().take().is_some() {
            self.show(None);
            tracing::info!(inbox = %self.inbox, "inbox resumed: uploads work again");
            self.wake_waiting();
        }
    }

    /// Hands every file that waited out the pause back to settle, to be looked at now.
    fn wake_waiting(&self) {
        let Some(w) = &self.wake else { return };
        let paths = w.claims.release_deferred_under(&w.root);
        if paths.is_empty() {
            return;
        }
        let (tx, inbox) = (w.candidates.clone(), w.inbox);
        // Sent from a task of its own: the channel is bounded and this runs inside an upload.
        tokio::spawn(async move {
            for path in paths {
                let c = crate::watch::Candidate {
                    inbox,
                    path,
                    now: true,
                    hint: crate::settle::Hint::Found,
                };
                if tx.send(c).await.is_err() {
                    return; // settle is gone: shutting down
                }
            }
        });
    }

    /// The probe ended without a verdict on the configuration (e.g. a 503): let the next file
    /// probe instead.
    pub fn probe_inconclusive(&self) {
        if let Some(p) = self.lock().as_mut() {
            p.probing = false;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_probe_at_a_time_and_backoff_doubles() {
        let p = Pause::new("in", Duration::from_millis(100), Duration::from_millis(300));
        assert_eq!(p.admit(), Admit::Go);
        let until = p.pause("AccessDenied");
        assert!(matches!(p.admit(), Admit::Later { until: u, .. } if u == until));
        std::thread::sleep(Duration::from_millis(110));
        assert_eq!(p.admit(), Admit::Go, "the backoff is over: one file probes");
        assert!(
            matches!(p.admit(), Admit::Later { .. }),
            "only one probe at a time"
        );
        let t0 = Instant::now();
        let next = p.pause("AccessDenied");
        assert!(next >= t0 + Duration::from_millis(200), "backoff doubled");
        std::thread::sleep(Duration::from_millis(210));
        assert_eq!(p.admit(), Admit::Go);
        p.probe_inconclusive();
        assert_eq!(
            p.admit(),
            Admit::Go,
            "an inconclusive probe lets the next one try"
        );
        p.resume();
        assert_eq!(p.admit(), Admit::Go);
        assert_eq!(p.admit(), Admit::Go);
    }
}

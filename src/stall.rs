//! stall: one inbox whose file system stops answering must not stop the others.
//!
//! Calls on an inbox's files (stat, open, read, rename, a folder walk) are blocking system
//! calls. On a hard-mounted NFS or SMB share whose server has gone away they block for as long
//! as the server is gone, and no signal or timeout ends them. So they never run on the async
//! workers: [`FsGuard::run`] sends each to tokio's blocking pool and waits for it at most the
//! time limit *without progress* (a call that reads a large file or walks a large folder
//! reports progress through [`Progress::tick`] and may take as long as it keeps moving).
//!
//! A call that overruns marks its inbox *stalled* (one WARN). While an inbox is stalled no
//! further call of it is started — each would only add one more stuck thread — and callers get
//! [`Stalled`] at once and leave the file where it is for a later round. When the stuck call
//! finally returns, the inbox is healthy again (one INFO) and its files flow as before. The
//! other inboxes never wait for it.
//!
//! The decisions live in [`Health`] (pure, time passed in); [`FsGuard`] is the thin I/O loop.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::time::Instant;

/// The inbox's file system did not answer within its time limit; nothing was done (or the
/// call is still stuck and its result will be ignored). Try again later.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the file system of inbox {inbox} is not answering (no progress for {limit:?})")]
pub struct Stalled {
    pub inbox: String,
    pub limit: Duration,
}

/// A change of an inbox's health worth one log line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    Stalled,
    Recovered { after: Duration },
}

/// The health of one inbox's file system: how many calls it has that overran their limit and
/// are still stuck. Pure: the caller passes the time in.
#[derive(Debug, Default)]
pub struct Health {
    stuck: usize,
    since: Option<Instant>,
}

impl Health {
    /// New calls start only while no earlier call is stuck.
    pub fn may_start(&self) -> bool {
        self.stuck == 0
    }

    pub fn is_stalled(&self) -> bool {
        self.stuck > 0
    }

    /// Since when the inbox has been stalled.
    pub fn stalled_since(&self) -> Option<Instant> {
        self.since
    }

    /// A call overran its limit (and still runs).
    pub fn overran(&mut self, now: Instant) -> Option<Change> {
        self.stuck += 1;
        (self.stuck == 1).then(|| {
            self.since = Some(now);
            Change::Stalled
        })
    }

    /// A call that had overrun has returned after all.
    pub fn stuck_returned(&mut self, now: Instant) -> Option<Change> {
        self.stuck = self.stuck.saturating_sub(1);
        if self.stuck > 0 {
            return None;
        }
        let since = self.since.take()?;
        Some(Change::Recovered {
            after: now.saturating_duration_since(since),
        })
    }
}

/// Handed to a long call so it can say it is still moving (after each chunk read, each folder
/// entry): the time limit counts from the last tick.
#[derive(Clone)]
pub struct Progress {
    origin: Instant,
    /// Nanoseconds from `origin` to the last tick.
    last: Arc<AtomicU64>,
}

impl Progress {
    fn new() -> Self {
        Progress {
            origin: Instant::now(),
            last: Arc::new(AtomicU64::new(0)),
        }
    }

    pub fn tick(&self) {
        let nanos = self.origin.elapsed().as_nanos().min(u64::MAX as u128) as u64;
        self.last.store(nanos, Ordering::Relaxed);
        crate::run::sign_of_life();
    }

    fn last(&self) -> Instant {
        self.origin + Duration::from_nanos(self.last.load(Ordering::Relaxed))
    }
}

/// Where one call stands, shared between the caller and the blocking thread, so that "gave up
/// on it" and "it returned" cannot both happen unnoticed.
#[derive(Default)]
struct Call {
    returned: bool,
    given_up: bool,
}

struct Inner {
    inbox: String,
    limit: Duration,
    health: Mutex<Health>,
    /// Debug builds only: `INBOXD_STALL_FS=<inbox>:<flag file>` makes every call of that inbox
    /// wait while the flag file exists, as on a share whose server stopped answering.
    #[cfg(debug_assertions)]
    hang_while: Option<std::path::PathBuf>,
}

/// Runs one inbox's blocking file-system calls off the async workers, under its time limit.
/// Cheap to clone; all clones share the inbox's health.
#[derive(Clone)]
pub struct FsGuard {
    inner: Arc<Inner>,
}

impl FsGuard {
    pub fn new(inbox: &str, limit: Duration) -> Self {
        FsGuard {
            inner: Arc::new(Inner {
                inbox: inbox.to_owned(),
                limit,
                health: Mutex::new(Health::default()),
                #[cfg(debug_assertions)]
                hang_while: std::env::var("INBOXD_STALL_FS").ok().and_then(|v| {
                    let (name, flag) = v.split_once(':')?;
                    (name == inbox).then(|| std::path::PathBuf::from(flag))
                }),
            }),
        }
    }

    fn health(&self) -> MutexGuard<'_, Health> {
        lock(&self.inner.health)
    }

    /// Whether a call of this inbox is stuck right now.
    pub fn is_stalled(&self) -> bool {
        self.health().is_stalled()
    }

    fn stalled(&self) -> Stalled {
        Stalled {
            inbox: self.inner.inbox.clone(),
            limit: self.inner.limit,
        }
    }

    /// Runs `f` on the blocking pool and waits for it at most the limit.
    pub async fn run<T, F>(&self, f: F) -> Result<T, Stalled>
    where
        F: FnOnce() -> T + Send + 'static,
        T: Send + 'static,
    {
        self.run_with_progress(move |_| f()).await
    }

    /// Like [`FsGuard::run`] for a call that may take long but ticks `Progress` as it goes:
    /// it is given up on only after the limit passes without a tick.
    pub async fn run_with_progress<T, F>(&self, f: F) -> Result<T, Stalled>
    where
        F: FnOnce(&Progress) -> T + Send + 'static,
        T: Send + 'static,
    {
        if !self.health().may_start() {
            // Another call of this inbox is stuck: starting this one would most likely only
            // add a second stuck thread. The caller leaves the file for later.
            return Err(self.stalled());
        }
        let call = Arc::new(Mutex::new(Call::default()));
        let progress = Progress::new();
        let mut task = {
            let call = call.clone();
            let guard = self.clone();
            let progress = progress.clone();
            tokio::task::spawn_blocking(move || {
                guard.hang_point();
                let out = f(&progress);
                let mut c = lock(&call);
                c.returned = true;
                if c.given_up {
                    // A call we had given up on came back: the share may answer again.
                    let change = guard.health().stuck_returned(Instant::now());
                    guard.log(change);
                }
                out
            })
        };
        let limit = self.inner.limit;
        loop {
            let deadline = progress.last() + limit;
            match tokio::time::timeout_at(deadline, &mut task).await {
                Ok(Ok(out)) => return Ok(out),
                // The call panicked (a bug, not the share): treat it like no answer.
                Ok(Err(_)) => return Err(self.stalled()),
                Err(_) if progress.last() + limit > Instant::now() => continue,
                Err(_) => {
                    let returned = {
                        let mut c = lock(&call);
                        c.given_up = !c.returned;
                        c.returned
                    };
                    if returned {
                        // It returned just now; its result is ready.
                        return match task.await {
                            Ok(out) => Ok(out),
                            Err(_) => Err(self.stalled()),
                        };
                    }
                    let change = self.health().overran(Instant::now());
                    self.log(change);
                    // The thread stays blocked in the kernel; its result, if it ever comes,
                    // is dropped (the caller has already moved on).
                    return Err(self.stalled());
                }
            }
        }
    }

    fn log(&self, change: Option<Change>) {
        match change {
            Some(Change::Stalled) => tracing::warn!(
                inbox = %self.inner.inbox,
                limit = ?self.inner.limit,
                "the inbox's file system is not answering; its files wait, the other inboxes go on"
            ),
            Some(Change::Recovered { after }) => tracing::info!(
                inbox = %self.inner.inbox,
                stalled_for = ?after,
                "the inbox's file system answers again"
            ),
            None => {}
        }
    }

    /// Test hook (debug builds): wait while the inbox's hang flag exists.
    fn hang_point(&self) {
        #[cfg(debug_assertions)]
        if let Some(flag) = &self.inner.hang_while {
            while flag.exists() {
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc;

    #[test]
    fn health_reports_each_change_once() {
        let t0 = Instant::now();
        let mut h = Health::default();
        assert!(h.may_start());
        assert_eq!(h.overran(t0), Some(Change::Stalled));
        assert!(!h.may_start());
        assert_eq!(h.overran(t0 + Duration::from_secs(1)), None);
        assert_eq!(h.stuck_returned(t0 + Duration::from_secs(5)), None);
        assert!(h.is_stalled());
        assert_eq!(
            h.stuck_returned(t0 + Duration::from_secs(9)),
            Some(Change::Recovered {
                after: Duration::from_secs(9)
            })
        );
        assert!(h.may_start());
        assert_eq!(h.stalled_since(), None);
    }

    #[tokio::test]
    async fn a_stuck_call_stalls_its_inbox_until_it_returns() {
        // Generous, so that a healthy call on a loaded machine never overruns.
        let guard = FsGuard::new("scans", Duration::from_secs(2));
        assert_eq!(guard.run(|| 7).await, Ok(7));

        let (release, wait) = mpsc::channel::<()>();
        let stuck = guard.run(move || wait.recv().is_ok()).await;
        assert_eq!(stuck.unwrap_err().inbox, "scans");
        assert!(guard.is_stalled());
        // While stalled, nothing new starts: the closure must not run.
        let ran = Arc::new(AtomicU64::new(0));
        let r = ran.clone();
        let refused = guard.run(move || r.fetch_add(1, Ordering::Relaxed)).await;
        assert!(refused.is_err());
        assert_eq!(ran.load(Ordering::Relaxed), 0);

        // Another inbox is not affected.
        let other = FsGuard::new("lab", Duration::from_secs(2));
        assert_eq!(other.run(|| "fine").await, Ok("fine"));

        release.send(()).unwrap();
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while guard.is_stalled() {
            assert!(std::time::Instant::now() < deadline, "never recovered");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        assert_eq!(guard.run(|| 8).await, Ok(8));
    }

    #[tokio::test]
    async fn a_slow_call_that_makes_progress_is_not_given_up_on() {
        let guard = FsGuard::new("big", Duration::from_secs(1));
        let out = guard
            .run_with_progress(|p| {
                // 2 s in all, twice the limit, but never near 1 s without a tick.
                for _ in 0..100 {
                    std::thread::sleep(Duration::from_millis(20));
                    p.tick();
                }
                "read"
            })
            .await;
        assert_eq!(out, Ok("read"));
        assert!(!guard.is_stalled());
    }
}

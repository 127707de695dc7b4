//! Run-wide state that every stage reads: how the pipeline runs ([`Mode`]) and what it has
//! done so far ([`Stats`]). Kept apart from the stages so that no stage imports another one
//! for it.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tokio::time::Instant;

/// How the pipeline runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Watch until shut down (`inboxd run`).
    Daemon,
    /// One sweep of every inbox, then end (`inboxd once`).
    Once,
}

/// Counters over the whole run (for `inboxd once`'s exit code and the final log line).
#[derive(Debug, Default)]
pub struct Stats {
    pub uploaded: AtomicU64,
    pub duplicates: AtomicU64,
    pub failed: AtomicU64,
    /// Left in the inbox: deferred, changed while processed, or interrupted by shutdown.
    pub left: AtomicU64,
    busy: std::sync::Mutex<(Option<Instant>, Option<Instant>)>,
}

impl Stats {
    pub fn get(c: &AtomicU64) -> u64 {
        c.load(Ordering::Relaxed)
    }

    /// A file reached the upload stage (the first one starts the busy period).
    pub fn mark_started(&self) {
        let mut b = self.busy.lock().unwrap_or_else(|p| p.into_inner());
        if b.0.is_none() {
            b.0 = Some(Instant::now());
        }
    }

    pub(crate) fn mark_finished(&self) {
        let mut b = self.busy.lock().unwrap_or_else(|p| p.into_inner());
        b.1 = Some(Instant::now());
    }

    /// From the first file reaching upload to the last outcome recorded: the upload phase,
    /// without settle time (for the benchmark and the final log line).
    pub fn busy(&self) -> Option<Duration> {
        let b = self.busy.lock().unwrap_or_else(|p| p.into_inner());
        match *b {
            (Some(from), Some(until)) => Some(until.saturating_duration_since(from)),
            _ => None,
        }
    }
}

/// Waits until `t`; returns at once when there is no `t` (callers guard a `select!` branch
/// with `if t.is_some()`). Stage loops use tokio's clock, so a paused test clock drives them.
pub async fn sleep_until(t: Option<Instant>) {
    if let Some(t) = t {
        tokio::time::sleep_until(t).await;
    }
}

/// Signs of life of long work (a chunk of a body sent, a chunk of a file read): counted so
/// that a stage busy with one long upload or hash is not taken for a stuck one.
static SIGNS_OF_LIFE: AtomicU64 = AtomicU64::new(0);

pub fn sign_of_life() {
    SIGNS_OF_LIFE.fetch_add(1, Ordering::Relaxed);
}

pub fn signs_of_life() -> u64 {
    SIGNS_OF_LIFE.load(Ordering::Relaxed)
}

/// Requests repeated after a transient failure, by the SDK or by the upload loop.
static RETRIES: AtomicU64 = AtomicU64::new(0);

pub fn retried() {
    RETRIES.fetch_add(1, Ordering::Relaxed);
}

pub fn retries() -> u64 {
    RETRIES.load(Ordering::Relaxed)
}

//! Pausing an inbox whose bucket or credentials are wrong: its files wait in the inbox
//! (instead of each failing the same way) and one of them probes again after a backoff.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

/// A paused inbox: its bucket or credentials are wrong, so its files wait (in the inbox)
/// instead of each failing the same way.
pub struct Pause {
    inbox: String,
    state: Mutex<Option<Paused>>,
    initial: Duration,
    max: Duration,
}

struct Paused {
    until: Instant,
    backoff: Duration,
}

impl Pause {
    pub fn new(inbox: &str, initial: Duration, max: Duration) -> Pause {
        Pause {
            inbox: inbox.to_owned(),
            state: Mutex::new(None),
            initial: initial.max(Duration::from_millis(100)),
            max: max.max(initial),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Option<Paused>> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn pause(&self, reason: &str) {
        let now = Instant::now();
        let mut st = self.lock();
        match st.as_mut() {
            None => {
                tracing::error!(inbox = %self.inbox, reason, retry_in = ?self.initial,
                    "inbox paused: bucket or credential problem; its files stay in the inbox until it is fixed");
                *st = Some(Paused {
                    until: now + self.initial,
                    backoff: self.initial,
                });
            }
            Some(p) if now >= p.until => {
                p.backoff = (p.backoff * 2).min(self.max);
                p.until = now + p.backoff;
                tracing::warn!(inbox = %self.inbox, reason, retry_in = ?p.backoff, "inbox still paused");
            }
            Some(_) => {}
        }
    }

    pub fn resume(&self) {
        if self.lock().take().is_some() {
            tracing::info!(inbox = %self.inbox, "inbox resumed: uploads work again");
        }
    }

    /// Waits while paused. False when shutdown came first.
    pub async fn wait(&self, intake: &CancellationToken) -> bool {
        loop {
            let until = match self.lock().as_ref() {
                None => return true,
                Some(p) => p.until,
            };
            if until <= Instant::now() {
                return true; // time to probe again
            }
            tokio::select! {
                _ = tokio::time::sleep_until(until.into()) => {}
                _ = intake.cancelled() => return false,
            }
        }
    }
}

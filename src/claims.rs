//! Which files are currently taken by the pipeline, so that a rescan or a late event does not
//! hand the same file downstream twice, and when a deferred file may be tried again.
//!
//! settle claims a file when it passes it on; finish releases it once the file has moved (or
//! defers it when it must stay in the inbox for a while).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use tokio::time::Instant;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Claim {
    InFlight,
    RetryAfter(Instant),
}

/// Why a file cannot be claimed right now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Busy {
    /// Somewhere between settle and finish.
    InFlight,
    /// Deferred (e.g. S3 unreachable); may be tried again at this time.
    Until(Instant),
}

#[derive(Debug, Default)]
pub struct Claims {
    inner: Mutex<HashMap<PathBuf, Claim>>,
}

impl Claims {
    fn map(&self) -> std::sync::MutexGuard<'_, HashMap<PathBuf, Claim>> {
        // A poisoned lock only means another thread panicked while holding it; the map itself
        // is always in a consistent state (single inserts/removes), so keep using it.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn try_claim(&self, path: &Path, now: Instant) -> Result<(), Busy> {
        let mut map = self.map();
        match map.get(path) {
            Some(Claim::InFlight) => Err(Busy::InFlight),
            Some(Claim::RetryAfter(t)) if *t > now => Err(Busy::Until(*t)),
            _ => {
                map.insert(path.to_path_buf(), Claim::InFlight);
                Ok(())
            }
        }
    }

    /// Why the file cannot be claimed now, if it cannot (without claiming it).
    pub fn busy(&self, path: &Path, now: Instant) -> Option<Busy> {
        match self.map().get(path) {
            Some(Claim::InFlight) => Some(Busy::InFlight),
            Some(Claim::RetryAfter(t)) if *t > now => Some(Busy::Until(*t)),
            _ => None,
        }
    }

    /// Forgets a deferral (the file is gone); a file in flight stays claimed.
    pub fn forget_deferred(&self, path: &Path) {
        let mut map = self.map();
        if let Some(Claim::RetryAfter(_)) = map.get(path) {
            map.remove(path);
        }
    }

    pub fn release(&self, path: &Path) {
        self.map().remove(path);
    }

    pub fn defer(&self, path: &Path, until: Instant) {
        self.map()
            .insert(path.to_path_buf(), Claim::RetryAfter(until));
    }

    /// Ends the deferrals of every file below `root` (an inbox whose pause is over) and
    /// returns those files: they may be tried again at once.
    pub fn release_deferred_under(&self, root: &Path) -> Vec<PathBuf> {
        let mut map = self.map();
        let due: Vec<PathBuf> = map
            .iter()
            .filter(|(p, c)| matches!(c, Claim::RetryAfter(_)) && p.starts_with(root))
            .map(|(p, _)| p.clone())
            .collect();
        for p in &due {
            map.remove(p);
        }
        due
    }

    pub fn in_flight(&self) -> usize {
        self.map()
            .values()
            .filter(|c| **c == Claim::InFlight)
            .count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn claim_release_defer() {
        let c = Claims::default();
        let p = Path::new("/in/a");
        let now = Instant::now();
        assert_eq!(c.try_claim(p, now), Ok(()));
        assert_eq!(c.try_claim(p, now), Err(Busy::InFlight));
        c.defer(p, now + Duration::from_secs(5));
        assert_eq!(
            c.try_claim(p, now),
            Err(Busy::Until(now + Duration::from_secs(5)))
        );
        assert_eq!(c.try_claim(p, now + Duration::from_secs(6)), Ok(()));
        c.release(p);
        assert_eq!(c.in_flight(), 0);
        c.defer(p, now + Duration::from_secs(5));
        c.forget_deferred(p);
        assert_eq!(c.busy(p, now), None, "a forgotten deferral");
        assert_eq!(c.try_claim(p, now), Ok(()));
        c.forget_deferred(p);
        assert_eq!(
            c.busy(p, now),
            Some(Busy::InFlight),
            "in flight stays claimed"
        );
    }
}

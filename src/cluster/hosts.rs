//! The decisions of the cluster stage without I/O (like [`crate::batch::Batcher`]): which
//! hosts are alive, judged by this process's own clock, and which claimed files are ready to
//! be offered again.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Duration;
use tokio::time::Instant;

use crate::settle::Signature;

/// How often the heartbeat is refreshed: every few seconds, and often enough that a live
/// host never looks dead (several beats per `claim_timeout`).
pub fn heartbeat_every(claim_timeout: Duration) -> Duration {
    (claim_timeout / 4).clamp(Duration::from_millis(100), Duration::from_secs(5))
}

/// What this host knows of the others on one shared inbox.
///
/// A host is alive while its heartbeat file keeps changing. Its age is measured here, from
/// the moment this process first saw its current content, never from the file's mtime: the
/// hosts' clocks may disagree, and a share's server may stamp times of its own.
#[derive(Debug, Default)]
pub struct Hosts {
    seen: HashMap<String, Seen>,
}

#[derive(Debug)]
struct Seen {
    content: Vec<u8>,
    since: Instant,
    /// How many claimed files it holds (as last counted).
    claimed: usize,
}

/// One host as shown in `/status`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct HostView {
    pub host: String,
    /// Seconds since its heartbeat last changed (as seen here).
    pub heartbeat_age_secs: u64,
    pub claimed: usize,
    pub alive: bool,
}

impl Hosts {
    /// The heartbeat content of `host` (empty when it has none, only claims) and how many
    /// files it has claimed, as read now.
    pub fn observe(&mut self, host: &str, content: &[u8], claimed: usize, now: Instant) {
        match self.seen.get_mut(host) {
            Some(s) => {
                if s.content != content {
                    s.content = content.to_vec();
                    s.since = now;
                }
                s.claimed = claimed;
            }
            None => {
                self.seen.insert(
                    host.to_owned(),
                    Seen {
                        content: content.to_vec(),
                        since: now,
                        claimed,
                    },
                );
            }
        }
    }

    /// Hosts other than `me` whose heartbeat has not changed for `timeout` and that hold
    /// claimed files: their files are to be taken over.
    pub fn dead(&self, me: &str, timeout: Duration, now: Instant) -> Vec<String> {
        let mut out: Vec<String> = self
            .seen
            .iter()
            .filter(|(h, s)| {
                h.as_str() != me && s.claimed > 0 && now.duration_since(s.since) >= timeout
            })
            .map(|(h, _)| h.clone())
            .collect();
        out.sort();
        out
    }

    pub fn view(&self, timeout: Duration, now: Instant) -> Vec<HostView> {
        let mut out: Vec<HostView> = self
            .seen
            .iter()
            .map(|(h, s)| {
                let age = now.duration_since(s.since);
                HostView {
                    host: h.clone(),
                    heartbeat_age_secs: age.as_secs(),
                    claimed: s.claimed,
                    alive: age < timeout,
                }
            })
            .collect();
        out.sort_by(|a, b| a.host.cmp(&b.host));
        out
    }
}

/// This host's claimed files that are not in flight: each is offered again once it has kept
/// the same signature for the inbox's settle window (a writer on another host may still have
/// been appending when the file was claimed or taken over).
#[derive(Debug, Default)]
pub struct Sweep {
    stable: HashMap<PathBuf, (Signature, Instant)>,
}

impl Sweep {
    /// A claimed file seen now with `sig`; true when it is ready to be offered.
    pub fn seen(&mut self, path: &Path, sig: Signature, settle: Duration, now: Instant) -> bool {
        match self.stable.get(path) {
            Some((s, since)) if *s == sig => now.duration_since(*since) >= settle,
            _ => {
                self.stable.insert(path.to_path_buf(), (sig, now));
                settle.is_zero()
            }
        }
    }

    /// Forgets files not seen in the last sweep (moved to done/ or failed/).
    pub fn keep_only(&mut self, seen: &[PathBuf]) {
        self.stable.retain(|p, _| seen.contains(p));
    }

    pub fn offered(&mut self, path: &Path) {
        self.stable.remove(path);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: Duration = Duration::from_secs(120);

    #[test]
    fn a_host_is_dead_when_its_heartbeat_stops_changing_for_the_timeout() {
        let t0 = Instant::now();
        let mut h = Hosts::default();
        h.observe("a", b"n1 1", 3, t0);
        h.observe("me", b"n2 1", 1, t0);
        assert!(h.dead("me", T, t0 + T / 2).is_empty());
        // It keeps beating: alive, however old its first beat.
        h.observe("a", b"n1 2", 3, t0 + T / 2);
        assert!(h.dead("me", T, t0 + T).is_empty());
        // Silent for the whole timeout, measured from the last change seen here.
        assert_eq!(h.dead("me", T, t0 + T / 2 + T), vec!["a".to_owned()]);
        // Never this host itself, and never a host with nothing to take over.
        h.observe("b", b"", 0, t0);
        assert_eq!(h.dead("me", T, t0 + 10 * T), vec!["a".to_owned()]);
        let v = h.view(T, t0 + T);
        assert_eq!(v.len(), 3);
        assert!(v.iter().any(|x| x.host == "a" && x.alive && x.claimed == 3));
        assert!(v.iter().any(|x| x.host == "b" && !x.alive));
    }

    #[test]
    fn a_claimed_file_is_offered_once_stable_for_the_window() {
        let t0 = Instant::now();
        let w = Duration::from_secs(2);
        let sig = |size| Signature {
            size,
            mtime_ns: 1,
            ino: 1,
            dev: 1,
        };
        let p = Path::new("/in/.inboxd/claims/me/a.pdf");
        let mut s = Sweep::default();
        assert!(!s.seen(p, sig(10), w, t0));
        assert!(!s.seen(p, sig(10), w, t0 + w / 2));
        // Still growing: the window starts again.
        assert!(!s.seen(p, sig(20), w, t0 + w));
        assert!(!s.seen(p, sig(20), w, t0 + w + w / 2));
        assert!(s.seen(p, sig(20), w, t0 + 2 * w));
        s.offered(p);
        assert!(!s.seen(p, sig(20), w, t0 + 3 * w));
        // `once`: no window.
        assert!(s.seen(Path::new("/x"), sig(1), Duration::ZERO, t0));
        s.keep_only(&[]);
        assert!(s.stable.is_empty());
    }

    #[test]
    fn heartbeats_come_several_times_per_timeout() {
        assert_eq!(
            heartbeat_every(Duration::from_secs(120)),
            Duration::from_secs(5)
        );
        assert_eq!(
            heartbeat_every(Duration::from_secs(2)),
            Duration::from_millis(500)
        );
        assert!(heartbeat_every(Duration::from_secs(1)) >= Duration::from_millis(100));
    }
}

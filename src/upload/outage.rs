//! The decisions of the outage gate ([`super::gate`]), as a pure state machine with time passed
//! in: observations go in (a request failed because the endpoint could not be reached, a probe
//! answered or failed, files start and stop waiting), decisions come out (is the gate open, when
//! to probe next, does a failure count against the file, which line to log).
//!
//! The idea: when the S3 endpoint cannot be reached, that is one event for the daemon, not a
//! failure of every file that happens to be waiting. The first such failure closes the gate;
//! files wait at it without spending attempts while one prober asks the endpoint, at once and
//! then with a backoff capped at a few seconds; the first answer opens the gate for every
//! waiting file at once.
//!
//! A failure costs the file an attempt only when no probe saw the endpoint down after the
//! request was sent (the endpoint answers, so the failure is this request's own, e.g. a proxy
//! that resets one large upload). Otherwise a request failing the same way for ever, against an
//! endpoint that answers probes, would go round without end.

use std::time::Duration;
use tokio::time::Instant;

/// Probe timing and log cadence.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tuning {
    /// Wait after the first failed probe; doubles after each further one, up to `probe_max`.
    pub probe_first: Duration,
    /// The longest wait between two probes: how late, at most, the gate opens after the
    /// endpoint is back.
    pub probe_max: Duration,
    /// While the endpoint stays down, a reminder this often.
    pub remind_every: Duration,
}

/// The daemon's tuning: probes 250 ms, 500 ms, 1 s, then every 2 s; a reminder every 5 min.
pub const TUNING: Tuning = Tuning {
    probe_first: Duration::from_millis(250),
    probe_max: Duration::from_secs(2),
    remind_every: Duration::from_secs(300),
};

/// The gate's state.
#[derive(Debug)]
pub struct Outage {
    tuning: Tuning,
    closed: Option<Closed>,
    /// When the gate last opened: a request sent before that may have failed in the outage
    /// that just ended.
    opened_at: Option<Instant>,
    /// The last time a probe found the endpoint unreachable.
    last_down: Option<Instant>,
    /// Files waiting at the gate and attempts in flight (both held up while it is closed).
    waiting: usize,
    in_flight: usize,
}

#[derive(Debug)]
struct Closed {
    since: Instant,
    /// The failure that closed the gate.
    error: String,
    /// A probe failed: this is an outage (announced), not a blip.
    confirmed: bool,
    failed_probes: u32,
    next_probe: Instant,
    /// When the last WARN about this outage was written.
    said_at: Instant,
}

/// What a file does after its request failed because the endpoint could not be reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AfterFailure {
    /// The gate is closed: wait at it.
    Wait,
    /// The gate closed and opened again while the request was under way: try again now.
    /// `counted`: the failure counts against the file's attempts.
    TryAgain { counted: bool },
}

/// A line to log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Say {
    /// WARN, once per outage: the endpoint is down, this many files are held up.
    Down {
        error: String,
        probe: String,
        waiting: usize,
    },
    /// WARN, every `remind_every` while it stays down.
    StillDown {
        down_for: Duration,
        probe: String,
        waiting: usize,
    },
    /// INFO: the endpoint answers again; the waiting files go on.
    Back {
        lasted: Duration,
        waiting: usize,
        probes: u32,
    },
    /// DEBUG: a request failed, but the endpoint answered the first probe (no outage).
    Blip { error: String },
}

impl Outage {
    pub fn new(tuning: Tuning) -> Self {
        Outage {
            tuning,
            closed: None,
            opened_at: None,
            last_down: None,
            waiting: 0,
            in_flight: 0,
        }
    }

    pub fn is_open(&self) -> bool {
        self.closed.is_none()
    }

    /// Since when the gate has been closed.
    pub fn closed_since(&self) -> Option<Instant> {
        self.closed.as_ref().map(|c| c.since)
    }

    /// A request sent at `sent` failed at `now` because the endpoint could not be reached.
    pub fn failed(&mut self, sent: Instant, error: &str, now: Instant) -> AfterFailure {
        if self.closed.is_some() {
            return AfterFailure::Wait;
        }
        if self.opened_at.is_some_and(|opened| opened > sent) {
            // Sent before the gate last opened: this failure belongs to the outage that ended
            // meanwhile (or to a blip already probed). Not a reason to close it again.
            return AfterFailure::TryAgain {
                counted: self.counts(sent),
            };
        }
        self.closed = Some(Closed {
            since: now,
            error: error.to_owned(),
            confirmed: false,
            failed_probes: 0,
            // The first probe at once: a blip must cost a round trip, not seconds.
            next_probe: now,
            said_at: now,
        });
        AfterFailure::Wait
    }

    /// Whether the failure of a request sent at `sent` counts against the file: only when no
    /// probe has seen the endpoint down since (the endpoint answered; the failure is the
    /// request's own).
    pub fn counts(&self, sent: Instant) -> bool {
        self.last_down.is_none_or(|down| down < sent)
    }

    /// When to probe next; `None` while the gate is open.
    pub fn next_probe(&self) -> Option<Instant> {
        self.closed.as_ref().map(|c| c.next_probe)
    }

    /// The probe got an answer (any answer: the endpoint is reachable). Opens the gate.
    pub fn probe_answered(&mut self, now: Instant) -> Option<Say> {
        let closed = self.closed.take()?;
        self.opened_at = Some(now);
        Some(if closed.confirmed {
            Say::Back {
                lasted: now.saturating_duration_since(closed.since),
                waiting: self.held_up(),
                probes: closed.failed_probes + 1,
            }
        } else {
            Say::Blip {
                error: closed.error,
            }
        })
    }

    /// The probe found the endpoint unreachable.
    pub fn probe_failed(&mut self, probe: &str, now: Instant) -> Option<Say> {
        let waiting = self.held_up();
        let tuning = self.tuning;
        let closed = self.closed.as_mut()?;
        self.last_down = Some(now);
        closed.failed_probes += 1;
        let doubling = 1u32 << (closed.failed_probes - 1).min(16);
        let delay = tuning.probe_first.saturating_mul(doubling);
        closed.next_probe = now + delay.min(tuning.probe_max);
        if !closed.confirmed {
            closed.confirmed = true;
            closed.said_at = now;
            return Some(Say::Down {
                error: closed.error.clone(),
                probe: probe.to_owned(),
                waiting,
            });
        }
        if now.saturating_duration_since(closed.said_at) >= tuning.remind_every {
            closed.said_at = now;
            return Some(Say::StillDown {
                down_for: now.saturating_duration_since(closed.since),
                probe: probe.to_owned(),
                waiting,
            });
        }
        None
    }

    /// A file starts (`true`) or stops (`false`) waiting at the gate.
    pub fn waiting(&mut self, starts: bool) {
        self.waiting = step(self.waiting, starts);
    }

    /// An attempt starts (`true`) or ends (`false`) a request to the endpoint.
    pub fn in_flight(&mut self, starts: bool) {
        self.in_flight = step(self.in_flight, starts);
    }

    /// Files held up by an outage: waiting at the gate, or in a request that is failing.
    fn held_up(&self) -> usize {
        self.waiting + self.in_flight
    }
}

fn step(n: usize, up: bool) -> usize {
    if up { n + 1 } else { n.saturating_sub(1) }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn an_outage_is_announced_once_probed_with_capped_backoff_and_ends_at_the_first_answer() {
        let t0 = Instant::now();
        let mut o = Outage::new(TUNING);
        assert!(o.is_open());
        for _ in 0..3 {
            o.in_flight(true);
        }
        // The first failure closes the gate; the first probe is due at once.
        o.in_flight(false);
        assert_eq!(o.failed(t0, "refused", t0 + ms(5)), AfterFailure::Wait);
        o.waiting(true);
        assert!(!o.is_open());
        assert_eq!(o.next_probe(), Some(t0 + ms(5)));
        // Later failures just wait.
        o.in_flight(false);
        assert_eq!(o.failed(t0, "refused", t0 + ms(6)), AfterFailure::Wait);
        o.waiting(true);

        // The first failed probe announces the outage, with everyone held up.
        let said = o.probe_failed("refused", t0 + ms(6));
        assert_eq!(
            said,
            Some(Say::Down {
                error: "refused".into(),
                probe: "refused".into(),
                waiting: 3
            })
        );
        // Backoff: 250 ms, 500 ms, 1 s, then capped at 2 s; no more lines for a while.
        let mut now = t0 + ms(6);
        for want in [250, 500, 1000, 2000, 2000, 2000] {
            assert_eq!(o.next_probe(), Some(now + ms(want)));
            now += ms(want);
            assert_eq!(o.probe_failed("refused", now), None);
        }
        // A reminder after five minutes, then not again for five more.
        let mut reminders = 0;
        while now < t0 + Duration::from_secs(700) {
            now = o.next_probe().expect("closed");
            if let Some(Say::StillDown { waiting, .. }) = o.probe_failed("refused", now) {
                assert_eq!(waiting, 3);
                reminders += 1;
            }
        }
        assert_eq!(reminders, 2);

        // The first answer opens the gate.
        let back = now + ms(2000);
        match o.probe_answered(back) {
            Some(Say::Back {
                lasted, waiting, ..
            }) => {
                assert_eq!(lasted, back - (t0 + ms(5)));
                assert_eq!(waiting, 3);
            }
            other => panic!("{other:?}"),
        }
        assert!(o.is_open());
        assert_eq!(o.next_probe(), None);
        // The waiting files' failures were the outage's: they cost no attempt.
        assert!(!o.counts(t0));
    }

    #[test]
    fn a_blip_costs_one_probe_and_counts_against_the_file() {
        let t0 = Instant::now();
        let mut o = Outage::new(TUNING);
        assert_eq!(o.failed(t0, "reset", t0 + ms(1)), AfterFailure::Wait);
        assert_eq!(
            o.probe_answered(t0 + ms(2)),
            Some(Say::Blip {
                error: "reset".into()
            })
        );
        assert!(o.is_open());
        // No probe saw the endpoint down: the failure was the request's own.
        assert!(o.counts(t0));
    }

    #[test]
    fn a_failure_of_a_request_sent_before_the_gate_opened_does_not_close_it_again() {
        let t0 = Instant::now();
        let mut o = Outage::new(TUNING);
        // A slow request goes out, then the endpoint goes down and comes back.
        let slow_sent = t0;
        assert_eq!(
            o.failed(t0 + ms(10), "refused", t0 + ms(20)),
            AfterFailure::Wait
        );
        o.probe_failed("refused", t0 + ms(21));
        o.probe_answered(t0 + ms(300));
        // Its failure arrives now: try again at once, free.
        assert_eq!(
            o.failed(slow_sent, "reset", t0 + ms(301)),
            AfterFailure::TryAgain { counted: false }
        );
        assert!(o.is_open());
        // A request sent after the gate opened closes it again.
        assert_eq!(
            o.failed(t0 + ms(302), "refused", t0 + ms(400)),
            AfterFailure::Wait
        );
        assert!(!o.is_open());
        assert_eq!(o.closed_since(), Some(t0 + ms(400)));
    }

    #[test]
    fn a_stale_failure_after_a_blip_counts() {
        let t0 = Instant::now();
        let mut o = Outage::new(TUNING);
        o.failed(t0 + ms(10), "reset", t0 + ms(20));
        o.probe_answered(t0 + ms(21));
        assert_eq!(
            o.failed(t0, "reset", t0 + ms(30)),
            AfterFailure::TryAgain { counted: true }
        );
    }

    #[test]
    fn held_up_counts_never_underflow() {
        let mut o = Outage::new(TUNING);
        o.waiting(false);
        o.in_flight(false);
        assert_eq!(o.held_up(), 0);
    }
}

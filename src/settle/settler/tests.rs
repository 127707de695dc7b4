//! Unit tests of the [`Settler`](super::Settler): windows, claims, cut files and their
//! backoff, and the close fast path, each on a clock passed in.

use std::path::Path;
use std::time::Duration;
use tokio::time::Instant;

use super::*;
use crate::claims::Busy;
use crate::settle::Signature;
use crate::settle::format::Whole;

const W: Duration = Duration::from_secs(2);

fn sig(size: u64, mtime_ns: i128) -> Signature {
    Signature {
        size,
        mtime_ns,
        ino: 7,
        dev: 1,
    }
}

const RULES: Rules = Rules {
    settle: W,
    incomplete_after: Duration::from_secs(3600),
};

fn regular(size: u64, mtime_ns: i128) -> Look {
    Look::Regular {
        sig: sig(size, mtime_ns),
        writing: None,
        checked: Checked::Found(Whole::Unknown),
    }
}

fn settler_with(path: &str, now: Instant) -> Settler {
    let mut s = Settler::new(true);
    assert!(s.candidate(path.into(), 0, "a.pdf".into(), RULES, Hint::Found, now));
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
        checked: Checked::NotAsked,
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
    s.candidate(p.into(), 0, "a.pdf".into(), RULES, Hint::Found, t);
    s.take_due(t, 10);
    s.looked(p, regular(10, 1), None, t);
    s.take_due(t + W, 10);
    assert!(matches!(
        s.looked(p, regular(10, 1), None, t + W),
        Decision::Ready { .. }
    ));
    assert!(s.is_empty());

    let l = Path::new("/in/link");
    s.candidate(l.into(), 0, "link".into(), RULES, Hint::Found, t);
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
fn once_mode_leaves_a_cut_file_for_the_next_run() {
    let t = Instant::now();
    let p = Path::new("/in/a.pdf");
    let mut s = Settler::new(false);
    s.candidate(p.into(), 0, "a.pdf".into(), RULES, Hint::Found, t);
    s.take_due(t, 10);
    s.looked(p, regular(10, 1), None, t);
    s.take_due(t + W, 10);
    assert_eq!(
        s.looked(p, cut(10), None, t + W),
        Decision::LeftCut {
            inbox: 0,
            rel: "a.pdf".into(),
            what: "incomplete PDF: no %%EOF in the last 1 KiB of the PDF".into()
        }
    );
    assert!(s.is_empty());
}

#[test]
fn take_due_respects_the_limit_and_known_files_are_not_taken_twice() {
    let t = Instant::now();
    let mut s = Settler::new(true);
    for i in 0..5 {
        assert!(s.candidate(
            format!("/in/{i}").into(),
            0,
            format!("{i}").into(),
            RULES,
            Hint::Found,
            t
        ));
    }
    assert!(!s.candidate("/in/0".into(), 0, "0".into(), RULES, Hint::Found, t));
    assert_eq!(s.take_due(t, 3).len(), 3);
    assert_eq!(s.take_due(t, 3).len(), 2);
    assert!(s.take_due(t, 3).is_empty(), "under way: not due again");
    assert_eq!(s.next_due(), None);
}

use crate::settle::format::Format;

fn checked(size: u64, mtime_ns: i128, writing: Option<bool>, checked: Checked) -> Look {
    Look::Regular {
        sig: sig(size, mtime_ns),
        writing,
        checked,
    }
}

fn cut(size: u64) -> Look {
    checked(
        size,
        1,
        Some(false),
        Checked::Found(Whole::No(
            Format::Pdf,
            "no %%EOF in the last 1 KiB of the PDF".into(),
        )),
    )
}

fn whole(size: u64, mtime_ns: i128) -> Look {
    checked(
        size,
        mtime_ns,
        Some(false),
        Checked::Found(Whole::Yes(Format::Pdf)),
    )
}

/// Takes the one look due at `at` (asserting it is due then and not before).
fn look_due(s: &mut Settler, at: Instant) -> Due {
    assert_eq!(s.next_due(), Some(at));
    let mut due = s.take_due(at, 10);
    assert_eq!(due.len(), 1);
    due.remove(0)
}

#[test]
fn a_cut_file_is_looked_at_less_and_less_often_and_fails_after_incomplete_after() {
    let t = Instant::now();
    let p = Path::new("/in/a.pdf");
    let mut s = settler_with("/in/a.pdf", t);
    assert_eq!(s.looked(p, regular(10, 1), None, t), Decision::Wait);
    let mut at = t + W;
    let mut waits = Vec::new();
    loop {
        look_due(&mut s, at);
        match s.looked(p, cut(10), None, at) {
            Decision::Wait => assert!(!waits.is_empty(), "the first cut look says so"),
            Decision::Cut { what, .. } => {
                assert!(waits.is_empty(), "said once");
                assert_eq!(
                    what,
                    "incomplete PDF: no %%EOF in the last 1 KiB of the PDF"
                );
            }
            Decision::Incomplete {
                reason, sig: got, ..
            } => {
                assert_eq!(at, t + RULES.incomplete_after, "fails at the deadline");
                assert_eq!(got, sig(10, 1));
                assert_eq!(
                    reason,
                    "incomplete PDF: no %%EOF in the last 1 KiB of the PDF; waited 1h"
                );
                break;
            }
            d => panic!("{d:?}"),
        }
        let next = s.next_due().expect("a next look");
        waits.push(next - at);
        at = next;
    }
    assert!(s.is_empty());
    // Doubling from the window to RECHECK_MAX: 2, 4, 8, 16, 30, 30, …; the last one is
    // cut short by the deadline.
    let secs = |n| Duration::from_secs(n);
    assert_eq!(
        waits[..6],
        [
            secs(2),
            secs(4),
            secs(8),
            secs(16),
            RECHECK_MAX,
            RECHECK_MAX
        ]
    );
    assert!(waits.iter().all(|w| *w <= RECHECK_MAX));
    assert!(waits.len() < 130, "{} looks in an hour", waits.len());
}

#[test]
fn a_cut_file_that_is_finished_goes_and_a_write_ends_its_wait() {
    let t = Instant::now();
    let p = Path::new("/in/a.pdf");
    let mut s = settler_with("/in/a.pdf", t);
    s.looked(p, regular(10, 1), None, t);
    let mut at = t + W;
    for i in 0..4 {
        look_due(&mut s, at);
        let d = s.looked(p, cut(10), None, at);
        assert_eq!(matches!(d, Decision::Cut { .. }), i == 0, "{d:?}");
        assert!(matches!(d, Decision::Cut { .. } | Decision::Wait));
        at = s.next_due().unwrap();
    }
    assert_eq!(at - (t + W * 8), Duration::from_secs(16), "waiting 16 s");
    // A kernel event says it changed: looked at now, not in 16 s.
    let now = t + W * 9;
    assert!(!s.candidate(p.into(), 0, "a.pdf".into(), RULES, Hint::Changed, now));
    look_due(&mut s, now);
    // It changed: a window from the change, then the check, which finds it whole.
    assert_eq!(s.looked(p, regular(20, 2), None, now), Decision::Wait);
    look_due(&mut s, now + W);
    assert!(matches!(
        s.looked(p, whole(20, 2), None, now + W),
        Decision::Ready { sig: got, .. } if got == sig(20, 2)
    ));
    // A sweep's candidate while a file waits is no news.
    assert!(!s.candidate(p.into(), 0, "a.pdf".into(), RULES, Hint::Found, now + W));
    assert_eq!(s.next_due(), Some(now + W + W));
}

#[test]
fn a_failed_check_is_no_verdict_and_another_file_starts_the_clock_again() {
    let t = Instant::now();
    let p = Path::new("/in/a.pdf");
    let mut s = settler_with("/in/a.pdf", t);
    s.looked(p, regular(10, 1), None, t);
    look_due(&mut s, t + W);
    let failed = checked(10, 1, Some(false), Checked::Failed);
    assert_eq!(s.looked(p, failed, None, t + W), Decision::Wait);
    look_due(&mut s, t + W * 2);
    // Free now, but busy when the look was made: the look that checks, at once.
    let unasked = checked(10, 1, None, Checked::NotAsked);
    assert_eq!(s.looked(p, unasked, None, t + W * 2), Decision::Wait);
    look_due(&mut s, t + W * 2);
    assert!(matches!(
        s.looked(p, cut(10), None, t + W * 2),
        Decision::Cut { .. }
    ));

    // An hour later another file (another inode) has the path, cut too: its own hour.
    let later = t + Duration::from_secs(3600);
    s.retry_at(p, later);
    look_due(&mut s, later);
    let other = Look::Regular {
        sig: Signature {
            ino: 8,
            ..sig(10, 1)
        },
        writing: None,
        checked: Checked::NotAsked,
    };
    assert_eq!(s.looked(p, other, None, later), Decision::Wait);
    look_due(&mut s, later + W);
    let other_cut = match cut(10) {
        Look::Regular {
            checked, writing, ..
        } => Look::Regular {
            sig: Signature {
                ino: 8,
                ..sig(10, 1)
            },
            writing,
            checked,
        },
        _ => unreachable!(),
    };
    assert!(
        matches!(
            s.looked(p, other_cut, None, later + W),
            Decision::Cut { .. }
        ),
        "its own clock: not failed, and news again"
    );

    // With checks off, or unopenable, the window decides alone.
    for c in [Checked::Off, Checked::Unopenable] {
        let mut s = settler_with("/in/a.pdf", t);
        s.looked(p, regular(10, 1), None, t);
        look_due(&mut s, t + W);
        assert!(matches!(
            s.looked(p, checked(10, 1, None, c), None, t + W),
            Decision::Ready { .. }
        ));
    }
}

#[test]
fn a_closed_whole_file_goes_at_once_and_one_of_no_known_format_after_a_pause() {
    let t = Instant::now();
    let p = Path::new("/in/a.pdf");
    let mut s = Settler::new(true);
    assert!(s.candidate(p.into(), 0, "a.pdf".into(), RULES, Hint::Closed, t));
    assert!(
        look_due(&mut s, t).closed,
        "asks the lease and the format at once"
    );
    assert!(matches!(
        s.looked(p, whole(10, 1), None, t),
        Decision::Ready { .. }
    ));
    // Handed on: the next look is an ordinary one, a window later.
    assert!(!look_due(&mut s, t + W).closed);

    // No known format: a pause after the close, then a second look that sees it unchanged.
    let q = Path::new("/in/a.bin");
    let mut s = Settler::new(true);
    s.candidate(q.into(), 0, "a.bin".into(), RULES, Hint::Changed, t);
    look_due(&mut s, t);
    assert_eq!(s.looked(q, regular(5, 1), None, t), Decision::Wait);
    let closed_at = t + Duration::from_millis(40);
    assert!(!s.candidate(q.into(), 0, "a.bin".into(), RULES, Hint::Closed, closed_at));
    assert!(look_due(&mut s, closed_at).closed);
    let free = |size, m| checked(size, m, Some(false), Checked::Found(Whole::Unknown));
    assert_eq!(s.looked(q, free(9, 2), None, closed_at), Decision::Wait);
    assert!(look_due(&mut s, closed_at + CLOSE_PAUSE).closed);
    assert!(matches!(
        s.looked(q, free(9, 2), None, closed_at + CLOSE_PAUSE),
        Decision::Ready { .. }
    ));

    // Changed during the pause: another pause is no help; the settle window decides.
    let mut s = Settler::new(true);
    s.candidate(q.into(), 0, "a.bin".into(), RULES, Hint::Closed, t);
    look_due(&mut s, t);
    assert_eq!(s.looked(q, free(9, 2), None, t), Decision::Wait);
    look_due(&mut s, t + CLOSE_PAUSE);
    let reopened = checked(12, 3, Some(true), Checked::NotAsked);
    assert_eq!(s.looked(q, reopened, None, t + CLOSE_PAUSE), Decision::Wait);
    assert!(!look_due(&mut s, t + CLOSE_PAUSE + W).closed);
}

#[test]
fn a_close_counts_only_with_a_free_file_and_never_makes_two_looks_at_once() {
    let t = Instant::now();
    let p = Path::new("/in/a.pdf");
    // The lease cannot tell (no CAP_LEASE): the settle window, even for a whole PDF.
    let mut s = Settler::new(true);
    s.candidate(p.into(), 0, "a.pdf".into(), RULES, Hint::Closed, t);
    look_due(&mut s, t);
    let unknowable = checked(10, 1, None, Checked::Found(Whole::Yes(Format::Pdf)));
    assert_eq!(s.looked(p, unknowable.clone(), None, t), Decision::Wait);
    assert!(!look_due(&mut s, t + W).closed);
    assert!(matches!(
        s.looked(p, unknowable, None, t + W),
        Decision::Ready { .. }
    ));

    // Closed and cut: it waits like any cut file.
    let mut s = Settler::new(true);
    s.candidate(p.into(), 0, "a.pdf".into(), RULES, Hint::Closed, t);
    look_due(&mut s, t);
    assert!(matches!(
        s.looked(p, cut(10), None, t),
        Decision::Cut { .. }
    ));
    assert!(!look_due(&mut s, t + W).closed);

    // A close while an ordinary look is under way: no second look meanwhile; the look
    // for the close follows when the first comes back.
    let mut s = settler_with("/in/a.pdf", t);
    assert!(!s.candidate(p.into(), 0, "a.pdf".into(), RULES, Hint::Closed, t));
    assert_eq!(s.next_due(), None, "a look is under way");
    assert_eq!(s.looked(p, regular(10, 1), None, t), Decision::Wait);
    assert!(look_due(&mut s, t).closed);
    assert!(matches!(
        s.looked(p, whole(10, 1), None, t),
        Decision::Ready { .. }
    ));

    // A close of a file in flight is the upload's business.
    let mut s = settler_with("/in/a.pdf", t);
    s.looked(p, regular(10, 1), None, t);
    s.candidate(p.into(), 0, "a.pdf".into(), RULES, Hint::Closed, t);
    look_due(&mut s, t);
    assert_eq!(
        s.looked(p, whole(10, 1), Some(Busy::InFlight), t),
        Decision::Wait
    );
    assert!(!look_due(&mut s, t + W).closed);
}

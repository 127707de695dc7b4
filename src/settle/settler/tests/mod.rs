//! Unit tests of the [`Settler`](super::Settler), each on a clock passed in: here the
//! helpers, and the settle window, claims, stalls and `once` mode; cut files and their
//! backoff in cut.rs; the close fast path in closed.rs.

use std::path::Path;
use std::time::Duration;
use tokio::time::Instant;

use super::*;
use crate::claims::Busy;
use crate::settle::Signature;
use crate::settle::format::{Format, Whole};

mod closed;
mod cut;

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

/// A settler (daemon mode, or `once`) whose first look at /in/a.pdf, found at `now`, is
/// under way.
fn looking(keep_in_view: bool, now: Instant) -> Settler {
    let mut s = Settler::new(keep_in_view);
    assert!(s.candidate(
        "/in/a.pdf".into(),
        0,
        "a.pdf".into(),
        RULES,
        Hint::Found,
        now
    ));
    assert_eq!(s.take_due(now, 10).len(), 1);
    s
}

/// The same once that look saw 10 quiet bytes: its next look is due a window later.
fn seen(keep_in_view: bool, now: Instant) -> Settler {
    let mut s = looking(keep_in_view, now);
    let p = Path::new("/in/a.pdf");
    assert_eq!(s.looked(p, regular(10, 1), None, now), Decision::Wait);
    s
}

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

/// `look` as if another file (another inode) had taken the path.
fn another(look: Look) -> Look {
    match look {
        Look::Regular {
            sig,
            writing,
            checked,
        } => Look::Regular {
            sig: Signature { ino: 8, ..sig },
            writing,
            checked,
        },
        look => unreachable!("not a regular file: {look:?}"),
    }
}

#[test]
fn a_file_is_ready_after_one_quiet_window() {
    let t = Instant::now();
    let p = Path::new("/in/a.pdf");
    let mut s = seen(true, t);
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
    let mut s = seen(true, t);
    look_due(&mut s, t + W);
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
    let mut s = seen(true, t);
    look_due(&mut s, t + W);
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

    let mut s = looking(true, t);
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
    let mut s = seen(false, t);
    look_due(&mut s, t + W);
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

//! Unit tests of a file its format says is cut: the backoff of its looks, its deadline,
//! a write that ends its wait, a check that fails, another file at its path, and `once`.

use super::*;

#[test]
fn once_mode_leaves_a_cut_file_for_the_next_run() {
    let t = Instant::now();
    let p = Path::new("/in/a.pdf");
    let mut s = seen(false, t);
    look_due(&mut s, t + W);
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
fn a_cut_file_is_looked_at_less_and_less_often_and_fails_after_incomplete_after() {
    let t = Instant::now();
    let p = Path::new("/in/a.pdf");
    let mut s = seen(true, t);
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
    let mut s = seen(true, t);
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
    let mut s = seen(true, t);
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
    let other = another(checked(10, 1, None, Checked::NotAsked));
    assert_eq!(s.looked(p, other, None, later), Decision::Wait);
    look_due(&mut s, later + W);
    assert!(
        matches!(
            s.looked(p, another(cut(10)), None, later + W),
            Decision::Cut { .. }
        ),
        "its own clock: not failed, and news again"
    );

    // With checks off, or unopenable, the window decides alone.
    for c in [Checked::Off, Checked::Unopenable] {
        let mut s = seen(true, t);
        look_due(&mut s, t + W);
        assert!(matches!(
            s.looked(p, checked(10, 1, None, c), None, t + W),
            Decision::Ready { .. }
        ));
    }
}

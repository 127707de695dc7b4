//! Unit tests of the close fast path: a file its writer has closed is looked at at once,
//! and goes without the settle window when it is free and whole (or after [`CLOSE_PAUSE`]).

use super::*;

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
    let mut s = looking(true, t);
    assert!(!s.candidate(p.into(), 0, "a.pdf".into(), RULES, Hint::Closed, t));
    assert_eq!(s.next_due(), None, "a look is under way");
    assert_eq!(s.looked(p, regular(10, 1), None, t), Decision::Wait);
    assert!(look_due(&mut s, t).closed);
    assert!(matches!(
        s.looked(p, whole(10, 1), None, t),
        Decision::Ready { .. }
    ));

    // A close of a file in flight is the upload's business.
    let mut s = seen(true, t);
    s.candidate(p.into(), 0, "a.pdf".into(), RULES, Hint::Closed, t);
    look_due(&mut s, t);
    assert_eq!(
        s.looked(p, whole(10, 1), Some(Busy::InFlight), t),
        Decision::Wait
    );
    assert!(!look_due(&mut s, t + W).closed);
}

//! Completeness from the file's format, end to end: real files made by real encoders (PDF,
//! ZIP/docx, PNG, JPEG, GIF, TIFF), whole and cut, dropped into a running pipeline; a
//! scanner-like writer that closes half a file and comes back; and the close-write fast path.
//!
//! Most run on a paused tokio clock (`support::inproc`), so an hour of waiting costs nothing;
//! the fast path's timing runs against the real binary on the real clock.

mod support;

use std::fs;
use std::io::Write as _;
use std::time::Duration;

use inboxd::run::Stats;
use support::formats::{self, Sample};
use support::inproc::{InProc, wait_for};
use support::s3::TestS3;
use support::*;
use tokio::time::{Instant, sleep};

/// Resolution of the measured times on the paused clock.
const STEP: Duration = Duration::from_millis(10);
const HOUR: Duration = Duration::from_secs(3600);

fn cut_name(s: &Sample, n: usize) -> String {
    format!("cut-{n}.{}", s.ext)
}

#[tokio::test(start_paused = true)]
async fn cut_files_wait_whole_ones_go_and_after_incomplete_after_the_cut_ones_fail() {
    let s3 = TestS3::start().await;
    // Every default but the suite's short settle (300 ms): incomplete_after is 1 h.
    let mut p = InProc::start(&s3, Setup::new());
    let inbox = p.inbox().clone();
    let samples = formats::samples();
    let mut whole = Vec::new();
    let mut cut = Vec::new();
    for s in &samples {
        let rel = format!("whole.{}", s.ext);
        inbox.drop(&rel, &s.bytes);
        whole.push((rel, s.bytes.clone()));
        for n in s.cuts() {
            let rel = cut_name(s, n);
            inbox.drop(&rel, &s.bytes[..n]);
            cut.push((rel, s.bytes[..n].to_vec(), s.format));
        }
    }
    assert!(cut.len() >= 3 * samples.len(), "{} cut files", cut.len());
    let dropped = Instant::now();

    wait_for("every whole file is in done/", STEP, || {
        whole.iter().all(|(rel, _)| inbox.is_done(rel))
    })
    .await;
    // Most of an hour: the cut files wait, unread by S3, and nothing fails.
    sleep(HOUR - Duration::from_secs(60)).await;
    for (rel, bytes, _) in &cut {
        assert!(inbox.in_inbox(rel), "{rel} left the inbox while cut");
        assert_bytes_eq(
            format!("{rel} in the inbox"),
            &fs::read(inbox.file(rel)).expect("read"),
            bytes,
        );
        assert_eq!(s3.requests_for(Op::PutObject, &inbox.key(rel)), 0, "{rel}");
    }
    inbox.assert_no_failures();
    // Each says once why it waits.
    for (rel, _, format) in &cut {
        let lines = p
            .logs
            .lines_with(&["not complete yet by its format", &format!("path={rel} ")]);
        assert_eq!(lines.len(), 1, "{rel}: {lines:?}");
        assert!(
            lines[0].contains(&format!("incomplete {format}: ")),
            "{}",
            lines[0]
        );
    }

    // At the hour they go to failed/, each with what was missing, never uploaded.
    wait_for("every cut file is in failed/", STEP, || {
        cut.iter().all(|(rel, _, _)| inbox.is_failed(rel))
    })
    .await;
    let took = dropped.elapsed();
    // Each goes at its deadline (one hour after it was first seen); the look is due exactly
    // then, and the move follows within a batch window.
    assert!(
        took >= HOUR && took <= HOUR + Duration::from_secs(2),
        "cut files failed {took:?} after the drop"
    );
    for (rel, bytes, format) in &cut {
        let reason = inbox.assert_failed(rel);
        assert!(
            reason.contains(&format!("incomplete {format}: ")) && reason.contains("; waited 1h"),
            "{rel}: {reason}"
        );
        assert_bytes_eq(
            format!("failed/{rel}"),
            &fs::read(inbox.failed.join(rel)).expect("read failed/ copy"),
            bytes,
        );
        assert!(!s3.exists(BUCKET, &inbox.key(rel)), "{rel} was uploaded");
    }
    // The PDF's reason, word for word.
    let pdf = samples.iter().find(|s| s.ext == "pdf").expect("a PDF");
    let reason = inbox.assert_failed(&cut_name(pdf, pdf.cuts()[1]));
    assert!(
        reason.contains("incomplete PDF: no %%EOF in the last 1 KiB of the PDF; waited 1h"),
        "{reason}"
    );
    assert_eq!(
        p.logs
            .lines_with(&["WARN", "still incomplete", "moving it to failed/"])
            .len(),
        cut.len()
    );

    let stats = p.stop().await;
    assert_eq!(Stats::get(&stats.uploaded), whole.len() as u64);
    assert_eq!(Stats::get(&stats.failed), cut.len() as u64);
    for (rel, bytes) in &whole {
        inbox.assert_done(rel, bytes);
        assert_object(&s3, &inbox.key(rel), bytes).await;
        assert_eq!(s3.puts(&inbox.key(rel)).await, 1, "{rel}");
    }
    assert_eq!(s3.list(BUCKET).await.len(), whole.len(), "objects");
    inbox.assert_empty();
}

#[tokio::test(start_paused = true)]
async fn a_scanner_that_closes_half_a_pdf_and_comes_back_makes_one_whole_object() {
    let s3 = TestS3::start().await;
    let settle = Duration::from_millis(300);
    let mut p = InProc::start(&s3, Setup::new().settle("300ms"));
    let inbox = p.inbox().clone();
    let bytes = formats::pdf(40);
    let half = bytes.len() / 2;
    let path = inbox.file("scan.pdf");

    // Page by page: half of it, closed (the fast path looks at once and finds it cut).
    fs::write(&path, &bytes[..half]).expect("write the first half");
    // Far longer than settle: the time alone would have taken it long ago.
    sleep(settle * 100).await;
    assert!(
        inbox.in_inbox("scan.pdf") && !inbox.in_done("scan.pdf"),
        "half a PDF was taken"
    );
    assert_eq!(s3.requests_for(Op::PutObject, &inbox.key("scan.pdf")), 0);
    inbox.assert_no_failures();

    // The rest, appended by a writer that opens it again, and closed.
    let mut f = fs::OpenOptions::new()
        .append(true)
        .open(&path)
        .expect("open again");
    f.write_all(&bytes[half..]).expect("append the rest");
    drop(f);
    wait_for("scan.pdf is in done/", STEP, || inbox.is_done("scan.pdf")).await;

    let stats = p.stop().await;
    assert_eq!(Stats::get(&stats.uploaded), 1);
    inbox.assert_done("scan.pdf", &bytes);
    assert_object(&s3, &inbox.key("scan.pdf"), &bytes).await;
    assert_eq!(s3.puts(&inbox.key("scan.pdf")).await, 1, "uploaded once");
    assert_eq!(s3.requests_for(Op::PutObject, &inbox.key("scan.pdf")), 1);
    inbox.assert_no_failures();
    inbox.assert_empty();
}

#[tokio::test(start_paused = true)]
async fn with_check_format_off_a_cut_file_goes_on_time_alone() {
    let s3 = TestS3::start().await;
    // Polled, so no close makes it go early: only the settle window.
    let settle = Duration::from_secs(5);
    let layout = Setup::new()
        .settle("5s")
        .inbox_set("check_format", "false")
        .inbox_set("watch", &toml_str("poll"))
        .set("watch", "poll_interval", &toml_str("10m"));
    let bytes = formats::pdf(3);
    let cut = bytes[..bytes.len() / 2].to_vec();
    let start = Instant::now();
    let mut p = InProc::start_with(&s3, layout, |inbox| inbox.drop("cut.pdf", &cut));
    let inbox = p.inbox().clone();
    let took = wait_for("cut.pdf is in done/", STEP, || inbox.is_done("cut.pdf")).await;
    assert!(
        took >= settle && start.elapsed() <= settle + Duration::from_millis(300),
        "taken {took:?} after start, settle is {settle:?}"
    );
    let stats = p.stop().await;
    assert_eq!(Stats::get(&stats.uploaded), 1);
    inbox.assert_done("cut.pdf", &cut);
    assert_object(&s3, &inbox.key("cut.pdf"), &cut).await;
    inbox.assert_no_failures();
}

#[tokio::test(start_paused = true)]
async fn in_poll_mode_a_cut_file_waits_and_goes_once_finished() {
    // No kernel events: the doubling wait between checks alone brings the finished file.
    let s3 = TestS3::start().await;
    let layout = Setup::new()
        .settle("1s")
        .inbox_set("watch", &toml_str("poll"))
        .set("watch", "poll_interval", &toml_str("10m"));
    let bytes = formats::png();
    let half = bytes.len() / 2;
    let mut p = InProc::start_with(&s3, layout, |inbox| {
        inbox.drop("photo.png", &bytes[..half]);
    });
    let inbox = p.inbox().clone();
    // Ten minutes: many settle windows, and checks every 30 s at most by the end.
    sleep(Duration::from_secs(600)).await;
    inbox.assert_holds(&["photo.png"]);
    assert_eq!(s3.requests(Op::PutObject), 0);
    let mut f = fs::OpenOptions::new()
        .append(true)
        .open(inbox.file("photo.png"))
        .expect("open again");
    f.write_all(&bytes[half..]).expect("append");
    drop(f);
    let took = wait_for("photo.png is in done/", STEP, || inbox.is_done("photo.png")).await;
    // The next look comes within the longest wait (30 s), then one settle window.
    assert!(
        took <= Duration::from_secs(30 + 1) + Duration::from_millis(300),
        "finished PNG taken {took:?} after its last write"
    );
    let stats = p.stop().await;
    assert_eq!(Stats::get(&stats.uploaded), 1);
    inbox.assert_done("photo.png", &bytes);
    assert_object(&s3, &inbox.key("photo.png"), &bytes).await;
    assert_eq!(s3.puts(&inbox.key("photo.png")).await, 1);
    inbox.assert_no_failures();
}

/// A started daemon with the default settle (2 s) that watches its inbox with kernel events
/// (the fast paths need them), and its inbox.
async fn watching_with_events(s3: &TestS3) -> (Daemon, Inbox) {
    let mut daemon = Daemon::new(s3, Setup::new().settle("2s"));
    let inbox = daemon.inbox().clone();
    daemon.start();
    wait_until(TIMEOUT, "the daemon watches with kernel events", || {
        daemon.stdout().contains("watching with kernel events")
    })
    .await;
    (daemon, inbox)
}

/// Real binary, real clock: with the default settle (2 s), a PDF whose writer has closed it
/// is in the bucket long before a settle window could have passed. The slowest path without
/// the fast path is a first look, then 2 s of quiet, then a second look: no object can exist
/// sooner than 2 s after the drop. So "well before 2 s" proves the fast path, and the bound
/// (1.5 s from the start of the write) still leaves more than a second for a loaded machine
/// to do what takes milliseconds (one event, one look, one PUT).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_closed_pdf_reaches_the_bucket_well_before_settle() {
    let s3 = TestS3::start().await;
    let (mut daemon, inbox) = watching_with_events(&s3).await;
    let bytes = formats::pdf(5);
    let key = inbox.key("letter.pdf");
    let began = std::time::Instant::now();
    inbox.drop("letter.pdf", &bytes);
    wait_until(TIMEOUT, "letter.pdf is in the bucket", || {
        s3.exists(BUCKET, &key)
    })
    .await;
    let took = began.elapsed();
    // A file of no known format waits CLOSE_PAUSE (300 ms) after its close, then goes.
    let other = content(77, 5000);
    let began_other = std::time::Instant::now();
    inbox.drop("notes.bin", &other);
    wait_until(TIMEOUT, "notes.bin is in the bucket", || {
        s3.exists(BUCKET, &inbox.key("notes.bin"))
    })
    .await;
    let took_other = began_other.elapsed();
    wait_until(TIMEOUT, "both are in done/", || {
        inbox.is_done("letter.pdf") && inbox.is_done("notes.bin")
    })
    .await;
    daemon.stop().await;
    assert!(
        took < Duration::from_millis(1500),
        "a closed, whole PDF took {took:?} to reach the bucket (settle is 2 s)"
    );
    assert!(
        took_other >= Duration::from_millis(300) && took_other < Duration::from_millis(1500),
        "a closed file of no known format took {took_other:?} (pause 300 ms, settle 2 s)"
    );
    inbox.assert_done("letter.pdf", &bytes);
    inbox.assert_done("notes.bin", &other);
    assert_object(&s3, &key, &bytes).await;
    assert_object(&s3, &inbox.key("notes.bin"), &other).await;
    assert_eq!(s3.puts(&key).await, 1);
    inbox.assert_no_failures();
}

/// An atomic save ends with a rename into place: written under a temporary name, then
/// renamed (within the inbox, or moved in from beside it on the same file system). The rename
/// counts like a close: a whole PDF goes well before the 2 s settle window (see above).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pdf_renamed_into_place_reaches_the_bucket_well_before_settle() {
    let s3 = TestS3::start().await;
    let (mut daemon, inbox) = watching_with_events(&s3).await;
    // Within the inbox: the temporary name is hidden, so it is never a candidate itself.
    let saved = formats::pdf(6);
    let tmp = inbox.path.join(".saved.pdf.tmp");
    std::fs::write(&tmp, &saved).unwrap();
    let began = std::time::Instant::now();
    std::fs::rename(&tmp, inbox.file("saved.pdf")).unwrap();
    wait_until(TIMEOUT, "saved.pdf is in the bucket", || {
        s3.exists(BUCKET, &inbox.key("saved.pdf"))
    })
    .await;
    let took_within = began.elapsed();
    // Moved in from beside the inbox (same file system).
    let moved = formats::pdf(7);
    let outside = daemon.dir().join("moved.pdf");
    std::fs::write(&outside, &moved).unwrap();
    let began = std::time::Instant::now();
    std::fs::rename(&outside, inbox.file("moved.pdf")).unwrap();
    wait_until(TIMEOUT, "moved.pdf is in the bucket", || {
        s3.exists(BUCKET, &inbox.key("moved.pdf"))
    })
    .await;
    let took_in = began.elapsed();
    wait_until(TIMEOUT, "both are in done/", || {
        inbox.is_done("saved.pdf") && inbox.is_done("moved.pdf")
    })
    .await;
    daemon.stop().await;
    for (what, took) in [("renamed within", took_within), ("moved in", took_in)] {
        assert!(
            took < Duration::from_millis(1500),
            "a whole PDF {what} took {took:?} to reach the bucket (settle is 2 s)"
        );
    }
    inbox.assert_done("saved.pdf", &saved);
    inbox.assert_done("moved.pdf", &moved);
    assert_object(&s3, &inbox.key("saved.pdf"), &saved).await;
    assert_object(&s3, &inbox.key("moved.pdf"), &moved).await;
    inbox.assert_no_failures();
}

/// The fast path needs a close: a writer that keeps the file open keeps it, even when it is
/// already a whole PDF (the test process is root, so the lease can tell).
#[tokio::test(start_paused = true)]
async fn a_whole_pdf_still_open_for_writing_waits_for_its_close() {
    let s3 = TestS3::start().await;
    let mut p = InProc::start(&s3, Setup::new().settle("300ms"));
    let inbox = p.inbox().clone();
    let bytes = formats::pdf(2);
    let mut w = fs::File::create(inbox.file("open.pdf")).expect("create");
    w.write_all(&bytes).expect("write");
    w.flush().expect("flush");
    // A hundred settle windows with the file whole but open.
    sleep(Duration::from_secs(30)).await;
    assert!(
        inbox.in_inbox("open.pdf") && !inbox.in_done("open.pdf"),
        "taken while open for writing"
    );
    assert_eq!(s3.requests_for(Op::PutObject, &inbox.key("open.pdf")), 0);
    drop(w);
    wait_for("open.pdf is in done/", STEP, || inbox.is_done("open.pdf")).await;
    let stats = p.stop().await;
    assert_eq!(Stats::get(&stats.uploaded), 1);
    inbox.assert_done("open.pdf", &bytes);
    assert_object(&s3, &inbox.key("open.pdf"), &bytes).await;
    assert_eq!(s3.puts(&inbox.key("open.pdf")).await, 1);
}

/// `inboxd once` cannot wait an hour for a cut file: it takes the whole ones, leaves the cut
/// one untouched for the next run, and does not claim that every file went to done/.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn once_leaves_a_cut_file_for_the_next_run() {
    let s3 = TestS3::start().await;
    let daemon = Daemon::new(&s3, Setup::new());
    let inbox = daemon.inbox().clone();
    let whole = formats::docx();
    let cut = formats::png()[..500].to_vec();
    inbox.drop("letter.docx", &whole);
    inbox.drop("photo.png", &cut);
    let out = daemon.once().await;
    assert_eq!(out.code(), Some(1), "{out}");
    assert!(
        out.stdout.contains("1 left in the inbox for the next run"),
        "{out}"
    );
    let warned: Vec<&str> = out
        .stdout
        .lines()
        .filter(|l| l.contains("left in the inbox for the next run") && l.contains("photo.png"))
        .collect();
    assert_eq!(warned.len(), 1, "{out}");
    assert!(warned[0].contains("incomplete PNG: "), "{}", warned[0]);
    inbox.assert_done("letter.docx", &whole);
    assert_object(&s3, &inbox.key("letter.docx"), &whole).await;
    inbox.assert_holds(&["photo.png"]);
    assert_bytes_eq(
        "photo.png in the inbox",
        &fs::read(inbox.file("photo.png")).expect("read"),
        &cut,
    );
    assert!(!s3.exists(BUCKET, &inbox.key("photo.png")));
    inbox.assert_no_failures();
}

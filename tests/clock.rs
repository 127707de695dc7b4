//! Timing on a paused tokio clock: the pipeline runs in this process (`support::inproc`) and
//! the clock jumps over settle windows, batch windows and backoffs instead of the test
//! sleeping through them. A "nothing happens for N seconds" wait costs nothing here, so the
//! waits are long and the bounds tight.
//!
//! Signals, crashes and the CLI are tested against the real binary (edge.rs, restart.rs, ...).

mod support;

use std::fs;
use std::io::Write as _;
use std::time::Duration;

use inboxd::run::Stats;
use support::inproc::{InProc, wait_for};
use support::s3::TestS3;
use support::*;
use tokio::time::{Instant, sleep, sleep_until};

/// Resolution of the measured times: each poll lets the paused clock jump this far.
const STEP: Duration = Duration::from_millis(10);

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// `took` is in `[at_least, at_least + slack]`.
fn assert_between(what: &str, took: Duration, at_least: Duration, slack: Duration) {
    assert!(
        took >= at_least && took <= at_least + slack,
        "{what}: took {took:?} on the tokio clock, expected {at_least:?} to {:?}",
        at_least + slack
    );
}

#[tokio::test(start_paused = true)]
async fn a_file_is_taken_only_after_a_quiet_settle_window_and_right_after_it() {
    let s3 = TestS3::start().await;
    let settle = Duration::from_secs(20);
    // The startup sweep finds both files at once (time 0); kernel events never carry timing
    // here, so the windows start at a known instant.
    let layout = Setup::new()
        .settle("20s")
        .inbox_set("watch", &toml_str("poll"))
        .set("watch", "poll_interval", &toml_str("10m"));
    let quiet = content(101, 30_000);
    let first = content(102, 10_000);
    let rest = content(103, 25_000);
    let start = Instant::now();
    let mut p = InProc::start_with(&s3, layout, |inbox| {
        inbox.drop("quiet.pdf", &quiet);
        inbox.drop("growing.pdf", &first);
    });
    let inbox = p.inbox().clone();

    // Just before the window ends, nothing has been taken.
    sleep_until(start + settle - ms(100)).await;
    inbox.assert_holds(&["growing.pdf", "quiet.pdf"]);
    assert_eq!(s3.requests(Op::PutObject), 0, "PUTs before settle elapsed");
    // growing.pdf changes inside its window, which starts the window again.
    let mut f = fs::OpenOptions::new()
        .append(true)
        .open(inbox.file("growing.pdf"))
        .expect("open growing.pdf");
    f.write_all(&rest).expect("append");
    drop(f);
    let changed = Instant::now();

    // quiet.pdf goes right after its window (plus the 100 ms batch window).
    wait_for("quiet.pdf is in done/", STEP, || inbox.is_done("quiet.pdf")).await;
    assert_between(
        "quiet.pdf from start to done/",
        start.elapsed(),
        settle,
        ms(300),
    );
    assert!(
        inbox.in_inbox("growing.pdf") && !inbox.in_done("growing.pdf"),
        "growing.pdf was taken although it changed inside its window"
    );
    assert_eq!(s3.requests_for(Op::PutObject, &inbox.key("growing.pdf")), 0);

    // growing.pdf: the look at the end of its first window saw the change and started a new
    // window there; it goes when that one is quiet.
    wait_for("growing.pdf is in done/", STEP, || {
        inbox.is_done("growing.pdf")
    })
    .await;
    assert_between(
        "growing.pdf from start to done/",
        start.elapsed(),
        settle * 2,
        ms(300),
    );
    assert!(
        changed.elapsed() >= settle,
        "growing.pdf went within settle of its change"
    );

    let stats = p.stop().await;
    assert_eq!(Stats::get(&stats.uploaded), 2);
    let whole = [first.as_slice(), rest.as_slice()].concat();
    inbox.assert_done("quiet.pdf", &quiet);
    inbox.assert_done("growing.pdf", &whole);
    assert_object(&s3, &inbox.key("quiet.pdf"), &quiet).await;
    assert_object(&s3, &inbox.key("growing.pdf"), &whole).await;
    assert_eq!(s3.puts(&inbox.key("growing.pdf")).await, 1);
    inbox.assert_empty();
}

#[tokio::test(start_paused = true)]
async fn a_deferred_file_comes_back_after_retry_later_and_not_before() {
    // Transient errors beyond max_attempts defer the file (it stays in the inbox) while the
    // other files go on; it comes back by itself after retry_later (no rescan within 10 min).
    let s3 = TestS3::start().await;
    let retry_later = Duration::from_secs(30);
    let layout = Setup::new().set("upload", "max_attempts", "2").set(
        "upload",
        "retry_later",
        &toml_str("30s"),
    );
    let flaky = content(111, 40_000);
    let fine = content(112, 41_000);
    let mut p = InProc::start_with(&s3, layout, |inbox| {
        inbox.drop("flaky.pdf", &flaky);
        inbox.drop("fine.pdf", &fine);
    });
    let inbox = p.inbox().clone();
    let key = inbox.key("flaky.pdf");
    s3.push(
        Op::PutObject,
        Fault::reject(S3ErrorCode::SlowDown).for_key(&key).always(),
    );
    let deferrals = |p: &InProc| p.logs.lines_with(&["tried again later", "flaky.pdf"]).len();

    wait_for("flaky.pdf is deferred", STEP, || deferrals(&p) == 1).await;
    let deferred = Instant::now();
    assert!(inbox.is_done("fine.pdf"), "fine.pdf waited for flaky.pdf");
    let first_round = s3.requests_for(Op::PutObject, &key);
    assert!(first_round >= 2, "PUTs before the deferral: {first_round}");
    // Nothing touches it for the whole of retry_later.
    sleep_until(deferred + retry_later - ms(100)).await;
    assert_eq!(
        s3.requests_for(Op::PutObject, &key),
        first_round,
        "PUTs while deferred"
    );
    inbox.assert_holds(&["flaky.pdf"]);

    // Then it is offered again by itself (no rescan within 10 min): one more round, deferred
    // again.
    wait_for("flaky.pdf is tried again", STEP, || {
        s3.requests_for(Op::PutObject, &key) > first_round
    })
    .await;
    assert_between(
        "from deferral to the next PUT",
        deferred.elapsed(),
        retry_later,
        ms(200),
    );
    wait_for("flaky.pdf is deferred again", STEP, || deferrals(&p) == 2).await;
    inbox.assert_holds(&["flaky.pdf"]);
    assert_bytes_eq(
        "flaky.pdf in the inbox",
        &fs::read(inbox.file("flaky.pdf")).expect("read flaky.pdf"),
        &flaky,
    );
    inbox.assert_no_failures();
    assert!(!s3.exists(BUCKET, &key));
    // The batch line follows once the batch's window has closed, which may be after the
    // file's own line.
    wait_for("two batch summaries with the deferral", STEP, || {
        p.logs.lines_with(&["batch finished", "deferred=1"]).len() == 2
    })
    .await;
    // The deferral is news once; the next round that only defers it again is said at debug
    // level, per file and per batch.
    assert_eq!(
        p.logs
            .lines_with(&["WARN", "tried again later", "flaky.pdf"])
            .len(),
        1,
        "{}",
        p.logs.text()
    );
    assert_eq!(
        p.logs
            .lines_with(&["INFO", "batch finished", "deferred=1"])
            .len(),
        1,
        "{}",
        p.logs.text()
    );

    // S3 recovers: the next round, retry_later on, uploads it once.
    s3.plan.clear();
    let again = Instant::now();
    wait_for("flaky.pdf is in done/", STEP, || inbox.is_done("flaky.pdf")).await;
    assert_between(
        "from second deferral to done/",
        again.elapsed(),
        retry_later - ms(300),
        ms(600),
    );
    let stats = p.stop().await;
    assert_eq!(Stats::get(&stats.uploaded), 2);
    assert_eq!(
        stats.left(),
        0,
        "deferred twice, then uploaded: counted once, as uploaded, and not left"
    );
    inbox.assert_done("flaky.pdf", &flaky);
    inbox.assert_done("fine.pdf", &fine);
    assert_object(&s3, &key, &flaky).await;
    assert_object(&s3, &inbox.key("fine.pdf"), &fine).await;
    assert_eq!(s3.puts(&key).await, 1);
    inbox.assert_empty();
    inbox.assert_no_failures();
}

#[tokio::test(start_paused = true)]
async fn a_paused_inbox_probes_after_doubling_backoffs_and_resumes() {
    let s3 = TestS3::start().await;
    // Pause backoff: retry_initial, doubled after every failed probe, at most retry_max and
    // never more than pause::PROBE_MAX (2 s).
    let layout = Setup::new()
        .set("upload", "retry_initial", &toml_str("1s"))
        .set("upload", "retry_max", &toml_str("4s"));
    let files: Vec<(String, Vec<u8>)> = (0..3)
        .map(|i| (format!("doc{i}.pdf"), content(120 + i, 20_000 + i as usize)))
        .collect();
    s3.push(
        Op::PutObject,
        Fault::reject(S3ErrorCode::AccessDenied).always(),
    );
    let mut p = InProc::start_with(&s3, layout, |inbox| {
        for (rel, bytes) in &files {
            inbox.drop(rel, bytes);
        }
    });
    let inbox = p.inbox().clone();

    // The first answer pauses the inbox; from then on, one PUT (a probe) per backoff.
    wait_for("the inbox is paused", STEP, || {
        !p.logs.lines_with(&["inbox paused"]).is_empty()
    })
    .await;
    let mut last = Instant::now();
    let mut gaps = Vec::new();
    for _ in 0..5 {
        let seen = s3.requests(Op::PutObject);
        wait_for("the next probe", STEP, || s3.requests(Op::PutObject) > seen).await;
        gaps.push(last.elapsed());
        last = Instant::now();
        // A probe is one file: no second PUT may follow it at once.
        sleep(ms(200)).await;
        assert_eq!(s3.requests(Op::PutObject), seen + 1, "PUTs in one probe");
    }
    // Doubling from retry_initial, capped at 2 s (pause::PROBE_MAX) below retry_max.
    let want = [1, 2, 2, 2, 2].map(Duration::from_secs);
    for (i, (gap, want)) in gaps.iter().zip(want).enumerate() {
        assert_between(&format!("gap before probe {}", i + 1), *gap, want, ms(300));
    }
    assert_eq!(p.logs.lines_with(&["inbox still paused"]).len(), 5);
    inbox.assert_no_failures();
    assert!(
        inbox.done_files().is_empty(),
        "done/: {:?}",
        inbox.done_files()
    );
    assert_eq!(s3.list(BUCKET).await, Vec::<String>::new());

    // Fixed: the next probe works and the inbox resumes with every file.
    s3.plan.clear();
    let fixed = Instant::now();
    wait_for("every file is in done/", STEP, || {
        files.iter().all(|(rel, _)| inbox.is_done(rel))
    })
    .await;
    // The next probe comes within one backoff (4 s); the files handed back while paused
    // wait for their own offer time, at most one more backoff.
    let took = fixed.elapsed();
    assert!(
        took <= Duration::from_secs(9),
        "every file done {took:?} after the fix"
    );
    assert_eq!(p.logs.lines_with(&["inbox resumed"]).len(), 1);
    let stats = p.stop().await;
    assert_eq!(Stats::get(&stats.uploaded), 3);
    for (rel, bytes) in &files {
        inbox.assert_done(rel, bytes);
        assert_object(&s3, &inbox.key(rel), bytes).await;
        assert_eq!(s3.puts(&inbox.key(rel)).await, 1);
    }
    inbox.assert_empty();
}

#[tokio::test(start_paused = true)]
async fn a_rescan_request_finds_what_nothing_else_would_look_at() {
    // The in-process half of edge.rs's SIGHUP test: polled every 10 minutes, rescanned every
    // 10 minutes, so after the startup sweep only a rescan request (what SIGHUP sends) finds
    // a new file. The wait in between is long on the paused clock and costs nothing.
    let s3 = TestS3::start().await;
    let layout = Setup::new().inbox_set("watch", &toml_str("poll")).set(
        "watch",
        "poll_interval",
        &toml_str("10m"),
    );
    let early = content(130, 10_000);
    let mut p = InProc::start_with(&s3, layout, |inbox| inbox.drop("early.pdf", &early));
    let inbox = p.inbox().clone();
    wait_for("early.pdf (startup sweep) is in done/", STEP, || {
        inbox.is_done("early.pdf")
    })
    .await;

    for (round, rel) in ["late.pdf", "later.pdf"].into_iter().enumerate() {
        let bytes = content(131 + round as u64, 12_000);
        inbox.drop(rel, &bytes);
        // Four minutes: hundreds of settle and batch windows; both rounds together stay
        // short of the first 10 min poll and rescan.
        sleep(Duration::from_secs(4 * 60)).await;
        inbox.assert_holds(&[rel]);
        assert_eq!(s3.requests_for(Op::PutObject, &inbox.key(rel)), 0);

        let asked = Instant::now();
        p.rescan();
        wait_for(&format!("{rel} is in done/ after the rescan"), STEP, || {
            inbox.is_done(rel)
        })
        .await;
        // One settle window (300 ms) after the request, plus at most a batch window.
        assert_between(
            "from rescan request to done/",
            asked.elapsed(),
            ms(300),
            ms(200),
        );
        inbox.assert_done(rel, &bytes);
        assert_object(&s3, &inbox.key(rel), &bytes).await;
    }
    assert_eq!(
        p.logs
            .lines_with(&["rescanning all inboxes", "requested"])
            .len(),
        2,
        "log lines of requested rescans"
    );
    let stats = p.stop().await;
    assert_eq!(Stats::get(&stats.uploaded), 3);
    inbox.assert_done("early.pdf", &early);
    inbox.assert_empty();
}

#[tokio::test(start_paused = true)]
async fn a_writer_pausing_longer_than_settle_keeps_its_file_until_it_closes() {
    // Moved from edge.rs to the paused clock. The test process runs as root, so the pipeline
    // may take the read lease that tells whether a file is still open for writing (the
    // systemd unit grants CAP_LEASE for the same reason).
    let s3 = TestS3::start().await;
    let mut p = InProc::start(&s3, Setup::new().settle("300ms"));
    let inbox = p.inbox().clone();
    let bytes = content(91, 64_000);
    let mut writer = fs::File::create(inbox.file("paused.pdf")).expect("create");
    writer.write_all(&bytes[..20_000]).expect("write");
    writer.flush().expect("flush");
    // The pause is the point of the test: a hundred settle windows with the file unchanged
    // but still open for writing.
    sleep(Duration::from_secs(30)).await;
    assert!(
        inbox.in_inbox("paused.pdf") && !inbox.in_done("paused.pdf"),
        "a file still open for writing was taken"
    );
    assert_eq!(s3.requests_for(Op::PutObject, &inbox.key("paused.pdf")), 0);
    writer.write_all(&bytes[20_000..]).expect("write");
    drop(writer);
    wait_for("paused.pdf is in done/", STEP, || {
        inbox.is_done("paused.pdf")
    })
    .await;
    let stats = p.stop().await;
    assert_eq!(Stats::get(&stats.uploaded), 1);
    inbox.assert_done("paused.pdf", &bytes);
    assert_object(&s3, &inbox.key("paused.pdf"), &bytes).await;
    assert_eq!(s3.puts(&inbox.key("paused.pdf")).await, 1);
    inbox.assert_empty();
}

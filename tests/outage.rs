//! An outage is one event, not N file failures: while the S3 server is down or hung, files wait
//! at the outage gate without spending attempts, one prober asks the server, and every waiting
//! file goes the moment it answers; the log says so once. Most tests run the pipeline in this
//! process on a paused clock (long outages cost nothing); the last ones stop and restart the
//! server under the real binary.

mod support;

use std::time::Duration;

use inboxd::run::Stats;
use support::inproc::{InProc, Logs, wait_for};
use support::s3::TestS3;
use support::*;
use tokio::time::{Instant, sleep};

/// Resolution of the measured times: each poll lets the paused clock jump this far.
const STEP: Duration = Duration::from_millis(10);
/// The prober's longest wait between two probes (`outage::TUNING.probe_max`).
const PROBE_MAX: Duration = Duration::from_secs(2);

/// WARN and ERROR lines of a log (tracing's text format: timestamp, level, target, ...),
/// without the in-process test server's own (target `s3s::...`).
fn alarms(text: &str) -> Vec<String> {
    strip_ansi(text)
        .lines()
        .filter(|l| {
            let mut words = l.split_whitespace().skip(1);
            matches!(words.next(), Some("WARN" | "ERROR"))
                && !words
                    .next()
                    .is_some_and(|target| target.starts_with("s3s::"))
        })
        .map(str::to_owned)
        .collect()
}

/// The value of `name=value` in a log line.
fn field(line: &str, name: &str) -> String {
    let at = format!("{name}=");
    line.split_whitespace()
        .find_map(|w| w.strip_prefix(&at))
        .unwrap_or_else(|| panic!("no {name}= in {line}"))
        .trim_matches('"')
        .to_owned()
}

fn down_lines(logs: &Logs) -> usize {
    logs.lines_with(&["S3 endpoint unreachable"]).len()
}

fn back_lines(logs: &Logs) -> Vec<String> {
    logs.lines_with(&["S3 endpoint answers again"])
}

fn files(n: usize, seed: u64) -> Vec<(String, Vec<u8>)> {
    (0..n)
        .map(|i| {
            let len = 10_000 + 997 * i;
            (format!("scan-{i:02}.pdf"), content(seed + i as u64, len))
        })
        .collect()
}

async fn assert_all_uploaded_once(s3: &TestS3, inbox: &Inbox, files: &[(String, Vec<u8>)]) {
    for (rel, bytes) in files {
        inbox.assert_done(rel, bytes);
        assert_object(s3, &inbox.key(rel), bytes).await;
        assert_eq!(s3.puts(&inbox.key(rel)).await, 1, "writes of {rel}");
    }
    inbox.assert_empty();
    inbox.assert_no_failures();
}

#[tokio::test(start_paused = true)]
async fn sixty_files_wait_out_a_70s_outage_as_one_event_and_go_the_moment_it_ends() {
    let s3 = TestS3::start().await;
    // Two attempts per file and a deferral of ten minutes: a file that spent its attempts on
    // the outage would miss the end of it by minutes.
    let layout = Setup::new().set("upload", "max_attempts", "2").set(
        "upload",
        "retry_later",
        &toml_str("10m"),
    );
    let files = files(60, 300);
    let mut p = InProc::start(&s3, layout);
    let inbox = p.inbox().clone();
    wait_for("the pipeline has started", STEP, || {
        !p.logs.lines_with(&["inboxd started"]).is_empty()
    })
    .await;

    s3.go_down();
    let down = Instant::now();
    for (rel, bytes) in &files {
        inbox.drop(rel, bytes);
    }
    wait_for("the outage is announced", STEP, || down_lines(&p.logs) == 1).await;
    let announced = p.logs.lines_with(&["S3 endpoint unreachable"]).remove(0);
    assert!(announced.contains("waiting="), "{announced}");
    // Seventy seconds of outage, on the paused clock.
    tokio::time::sleep_until(down + Duration::from_secs(70)).await;
    inbox.assert_no_failures();
    assert!(inbox.done_files().is_empty(), "done/ during the outage");
    assert_eq!(inbox.files().len(), 60);

    s3.come_back();
    let back = Instant::now();
    let took = wait_for("every file is in done/", STEP, || {
        files.iter().all(|(rel, _)| inbox.is_done(rel))
    })
    .await;
    assert!(
        took <= PROBE_MAX + Duration::from_millis(500),
        "the last file went {took:?} after the server came back"
    );
    let ended = back_lines(&p.logs);
    assert_eq!(ended.len(), 1, "{ended:?}");
    assert!(ended[0].contains(" INFO "), "{}", ended[0]);
    assert!(ended[0].contains("released="), "{}", ended[0]);
    // One prober, its probes at most PROBE_MAX apart: about 36 in 70 s, not one per file
    // and attempt.
    let probes: u32 = field(&ended[0], "probes").parse().expect("probes=N");
    assert!((30..=45).contains(&probes), "{probes} probes in 70 s");
    let stats = p.stop().await;
    assert_eq!(Stats::get(&stats.uploaded), 60);
    assert_eq!(stats.left(), 0, "files deferred or requeued");
    // One WARN for the outage, and nothing per file.
    let alarms = alarms(&p.logs.text());
    assert_eq!(alarms.len(), 1, "WARN/ERROR lines: {alarms:#?}");
    assert!(alarms[0].contains("S3 endpoint unreachable"));
    assert!(p.logs.lines_with(&["retrying"]).is_empty());
    assert_all_uploaded_once(&s3, &inbox, &files).await;
    let _ = back;
}

#[tokio::test(start_paused = true)]
async fn a_blip_costs_one_probe_not_seconds() {
    let s3 = TestS3::start().await;
    let mut p = InProc::start(&s3, Setup::new());
    let inbox = p.inbox().clone();
    let bytes = content(320, 20_000);
    let key = inbox.key("blip.pdf");
    // Connections reset more often than the SDK's own quick retries (3) cover; the server
    // itself answers all along.
    s3.push(Op::PutObject, Fault::reset().for_key(&key).times(3));
    inbox.drop("blip.pdf", &bytes);
    wait_for("a request has failed", STEP, || {
        !p.logs
            .lines_with(&["S3 endpoint not reachable; waiting"])
            .is_empty()
    })
    .await;
    let failed = Instant::now();
    let took = wait_for("blip.pdf is in done/", STEP, || inbox.is_done("blip.pdf")).await;
    // One probe's round trip and the file's own short backoff (retry_initial = 50 ms).
    assert!(
        took <= Duration::from_millis(200),
        "{took:?} after the failure"
    );
    assert_eq!(s3.requests(Op::HeadBucket), 1, "probes");
    p.stop().await;
    assert_eq!(down_lines(&p.logs), 0, "a blip is not an outage");
    // The failure was the request's own (the endpoint answered): counted, and said as such.
    assert_eq!(p.logs.lines_with(&["upload failed; retrying"]).len(), 1);
    assert_all_uploaded_once(&s3, &inbox, &[("blip.pdf".into(), bytes)]).await;
    let _ = failed;
}

#[tokio::test(start_paused = true)]
async fn a_hung_server_is_detected_and_the_files_go_when_it_is_back() {
    let s3 = TestS3::start().await;
    // The default stall_timeout (30 s).
    let mut p = InProc::start(&s3, Setup::new());
    let inbox = p.inbox().clone();
    let warm = content(330, 20_000);
    inbox.drop("warm.pdf", &warm);
    wait_for("warm.pdf is in done/", STEP, || inbox.is_done("warm.pdf")).await;

    s3.hang();
    let hung = Instant::now();
    let files = files(20, 340);
    for (rel, bytes) in &files {
        inbox.drop(rel, bytes);
    }
    // The requests hang until 30 s without progress; then the probe hangs for its 5 s.
    let took = wait_for("the outage is announced", STEP, || down_lines(&p.logs) == 1).await;
    assert!(
        took >= Duration::from_secs(30) && took <= Duration::from_secs(40),
        "hang noticed after {took:?}"
    );
    let announced = p.logs.lines_with(&["S3 endpoint unreachable"]).remove(0);
    assert!(announced.contains("no progress"), "{announced}");
    tokio::time::sleep_until(hung + Duration::from_secs(45)).await;
    assert!(files.iter().all(|(rel, _)| inbox.in_inbox(rel)));
    inbox.assert_no_failures();

    // The server restarts: its hung connections (the probe's among them) are closed.
    s3.come_back();
    let took = wait_for("every file is in done/", STEP, || {
        files.iter().all(|(rel, _)| inbox.is_done(rel))
    })
    .await;
    assert!(
        took <= PROBE_MAX + Duration::from_millis(500),
        "the last file went {took:?} after the server came back"
    );
    p.stop().await;
    assert_eq!(back_lines(&p.logs).len(), 1);
    let alarms = alarms(&p.logs.text());
    assert_eq!(alarms.len(), 1, "WARN/ERROR lines: {alarms:#?}");
    assert_all_uploaded_once(&s3, &inbox, &files).await;
}

#[tokio::test(start_paused = true)]
async fn a_slow_upload_that_keeps_moving_is_never_cut_off() {
    let s3 = TestS3::start().await;
    let layout = Setup::new().set("s3", "stall_timeout", &toml_str("10s"));
    // 24 MiB at 1 MiB/s: 24 s in all, far longer than stall_timeout, never silent for it.
    let bytes = content(350, 24 * MIB);
    let mut p = InProc::start(&s3, layout);
    let inbox = p.inbox().clone();
    let key = inbox.key("slow.tiff");
    s3.push(
        Op::PutObject,
        Fault::throttle(MIB as u64).for_key(&key).always(),
    );
    let t0 = Instant::now();
    inbox.drop("slow.tiff", &bytes);
    let took = wait_for("slow.tiff is in done/", STEP, || inbox.is_done("slow.tiff")).await;
    assert!(
        took >= Duration::from_secs(20),
        "the upload took only {took:?}"
    );
    assert_eq!(s3.requests_for(Op::PutObject, &key), 1, "PUTs of slow.tiff");
    p.stop().await;
    assert_eq!(down_lines(&p.logs), 0);
    assert_eq!(alarms(&p.logs.text()), Vec::<String>::new());
    assert_all_uploaded_once(&s3, &inbox, &[("slow.tiff".into(), bytes)]).await;
    let _ = t0;
}

#[tokio::test(start_paused = true)]
async fn a_multipart_upload_cut_by_an_outage_resumes_from_its_stored_parts() {
    let s3 = TestS3::start().await;
    let layout = Setup::new().multipart("5 MiB", "5 MiB");
    let bytes = content(355, 12 * MIB);
    let mut p = InProc::start(&s3, layout);
    let inbox = p.inbox().clone();
    let key = inbox.key("large.tiff");
    // The first part goes through at once, the others crawl: the outage catches them on
    // the wire.
    s3.push(
        Op::UploadPart,
        Fault::delay(Duration::ZERO).for_key(&key).times(1),
    );
    s3.push(
        Op::UploadPart,
        Fault::throttle(MIB as u64).for_key(&key).always(),
    );
    inbox.drop("large.tiff", &bytes);
    wait_for("the first part is stored", STEP, || {
        s3.stored_parts().len() == 1
    })
    .await;
    s3.go_down();
    wait_for("the outage is announced", STEP, || down_lines(&p.logs) == 1).await;
    sleep(Duration::from_secs(30)).await;
    inbox.assert_holds(&["large.tiff"]);

    s3.come_back();
    wait_for("large.tiff is in done/", STEP, || {
        inbox.is_done("large.tiff")
    })
    .await;
    p.stop().await;
    // Resumed: the same multipart upload, its stored part not sent again.
    assert_eq!(s3.requests_for(Op::CreateMultipartUpload, &key), 1);
    assert_eq!(s3.requests_for(Op::CompleteMultipartUpload, &key), 1);
    assert_eq!(s3.open_uploads(), Vec::<String>::new());
    assert_eq!(back_lines(&p.logs).len(), 1);
    let alarms = alarms(&p.logs.text());
    assert_eq!(alarms.len(), 1, "WARN/ERROR lines: {alarms:#?}");
    assert_all_uploaded_once(&s3, &inbox, &[("large.tiff".into(), bytes)]).await;
}

#[tokio::test(start_paused = true)]
async fn shutdown_while_waiting_for_the_server_leaves_every_file_in_the_inbox() {
    let s3 = TestS3::start().await;
    let files = files(10, 360);
    s3.go_down();
    let mut p = InProc::start_with(&s3, Setup::new(), |inbox| {
        for (rel, bytes) in &files {
            inbox.drop(rel, bytes);
        }
    });
    let inbox = p.inbox().clone();
    wait_for("the outage is announced", STEP, || down_lines(&p.logs) == 1).await;
    sleep(Duration::from_secs(20)).await;
    let stats = p.stop().await;
    assert_eq!(Stats::get(&stats.uploaded), 0);
    assert_eq!(Stats::get(&stats.failed), 0);
    assert_eq!(stats.left(), 10, "files interrupted");
    for (rel, bytes) in &files {
        assert_bytes_eq(
            rel,
            &std::fs::read(inbox.file(rel)).expect("still in the inbox"),
            bytes,
        );
    }
    inbox.assert_no_failures();
    assert!(inbox.done_files().is_empty());
}

// ---------------------------------------------------------------------------------------------
// The real binary, the server really stopped and started again
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_daemon_rides_out_a_server_stop_and_restart_with_one_warning() {
    let s3 = TestS3::start().await;
    let mut daemon = Daemon::new(&s3, Setup::new().set("upload", "max_attempts", "2"));
    let inbox = daemon.inbox().clone();
    daemon.start();
    let warm = content(370, 20_000);
    inbox.drop("warm.pdf", &warm);
    wait_until(TIMEOUT, "warm.pdf is in done/", || {
        inbox.is_done("warm.pdf")
    })
    .await;

    s3.go_down();
    let files = files(30, 380);
    for (rel, bytes) in &files {
        inbox.drop(rel, bytes);
    }
    let said = |daemon: &Daemon, needle: &str| strip_ansi(&daemon.stdout()).matches(needle).count();
    wait_until(TIMEOUT, "the outage is announced", || {
        said(&daemon, "S3 endpoint unreachable") == 1
    })
    .await;
    // The outage itself: long enough for many probes (and for every file to have failed).
    sleep(Duration::from_secs(4)).await;
    inbox.assert_no_failures();
    assert!(files.iter().all(|(rel, _)| inbox.in_inbox(rel)));

    s3.come_back();
    wait_until(TIMEOUT, "every file is in done/", || {
        files.iter().all(|(rel, _)| inbox.is_done(rel))
    })
    .await;
    daemon.stop().await;
    assert_eq!(said(&daemon, "S3 endpoint answers again"), 1);
    let alarms = alarms(&daemon.stdout());
    assert_eq!(alarms.len(), 1, "WARN/ERROR lines: {alarms:#?}");
    assert_eq!(daemon.batch_total("deferred"), 0);
    assert_all_uploaded_once(&s3, &inbox, &files).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn once_waits_for_a_server_that_comes_back_within_retry_max() {
    let s3 = TestS3::start().await;
    let daemon = Daemon::new(
        &s3,
        Setup::new().set("upload", "retry_max", &toml_str("20s")),
    );
    let inbox = daemon.inbox().clone();
    let files = files(5, 390);
    for (rel, bytes) in &files {
        inbox.drop(rel, bytes);
    }
    s3.go_down();
    let (out, ()) = tokio::join!(daemon.once(), async {
        // Down for a while, but less than retry_max.
        sleep(Duration::from_secs(2)).await;
        s3.come_back();
    });
    assert_eq!(out.code(), Some(0), "{out}");
    assert_eq!(
        strip_ansi(&out.stdout)
            .matches("S3 endpoint unreachable")
            .count(),
        1,
        "{out}"
    );
    assert_all_uploaded_once(&s3, &inbox, &files).await;
}

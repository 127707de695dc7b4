//! Crashes, restarts, re-drops and conflicts: nothing is uploaded twice, nothing is overwritten,
//! nothing is lost.

mod support;

use std::time::{Duration, Instant};

use support::s3::TestS3;
use support::{
    BUCKET, Daemon, Fault, Op, Setup, TIMEOUT, assert_bytes_eq, content, sha256_hex, wait_until,
};

/// The daemon dies at `failpoint` while handling `a.pdf`; a restart must finish the job
/// without a second upload.
async fn crash_and_recover(failpoint: &str) -> (TestS3, Daemon, usize) {
    let s3 = TestS3::start().await;
    let mut daemon = Daemon::new(&s3, Setup::new());
    let inbox = daemon.inbox().clone();
    let key = inbox.key("a.pdf");
    let bytes = content(1, 120_000);

    daemon.start_with_env(&[("INBOXD_FAILPOINT", failpoint)]);
    inbox.drop("a.pdf", &bytes);
    let status = daemon.wait_exit(TIMEOUT).await;
    assert!(
        !status.success(),
        "inboxd should abort at failpoint {failpoint}, exited with {status}"
    );

    // Crashed between the upload and the move: object stored, file still in the inbox.
    let object = s3
        .get(BUCKET, &key)
        .await
        .expect("object stored before the crash");
    assert_bytes_eq("object", &object, &bytes);
    assert_eq!(s3.puts(&key).await, 1);
    inbox.assert_holds(&["a.pdf"]);
    assert!(
        inbox.done_files().is_empty(),
        "done/: {:?}",
        inbox.done_files()
    );
    let put_requests = s3.requests(Op::PutObject);

    daemon.start();
    wait_until(TIMEOUT, "a.pdf is in done/ after the restart", || {
        inbox.is_done("a.pdf")
    })
    .await;
    daemon.stop().await;

    inbox.assert_done("a.pdf", &bytes);
    inbox.assert_empty();
    assert_eq!(
        s3.puts(&key).await,
        1,
        "successful PUTs of a.pdf over both runs"
    );
    assert_eq!(
        s3.list(BUCKET).await,
        vec![key.clone()],
        "objects in the bucket"
    );
    let object = s3.get(BUCKET, &key).await.expect("object");
    assert_bytes_eq("object after restart", &object, &bytes);
    inbox.assert_no_failures();

    let records = daemon.ledger_for("a.pdf").await;
    assert_eq!(records.len(), 1, "ledger records for a.pdf: {records:?}");
    assert_eq!(records[0]["state"], "finished", "{}", records[0]);
    assert_eq!(records[0]["sha256"], sha256_hex(&bytes).as_str());
    assert_eq!(records[0]["key"], key.as_str());
    (s3, daemon, put_requests)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crash_after_ledger_flush_restart_only_moves_the_file() {
    let (s3, _daemon, put_requests) = crash_and_recover("after-ledger-flush").await;
    // The ledger already said "uploaded": the restart has no reason to talk PUT to S3.
    assert_eq!(
        s3.requests(Op::PutObject),
        put_requests,
        "PutObject requests after the restart"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crash_after_upload_restart_recognises_its_own_object() {
    // The ledger never heard of the upload: If-None-Match gets 412, HEAD shows our sha256.
    crash_and_recover("after-upload").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn identical_redrop_is_moved_to_done_without_a_second_upload() {
    let s3 = TestS3::start().await;
    let mut daemon = Daemon::new(&s3, Setup::new());
    let inbox = daemon.inbox().clone();
    let key = inbox.key("invoices/a.pdf");
    let bytes = content(2, 70_000);
    daemon.start();

    inbox.drop("invoices/a.pdf", &bytes);
    wait_until(TIMEOUT, "first copy in done/", || {
        inbox.is_done("invoices/a.pdf")
    })
    .await;
    inbox.drop("invoices/a.pdf", &bytes);
    wait_until(TIMEOUT, "second copy in done/ as `a (1).pdf`", || {
        inbox.in_done("invoices/a (1).pdf") && !inbox.in_inbox("invoices/a.pdf")
    })
    .await;
    daemon.stop().await;

    inbox.assert_done("invoices/a.pdf", &bytes);
    inbox.assert_done("invoices/a (1).pdf", &bytes);
    inbox.assert_empty();
    assert_eq!(s3.puts(&key).await, 1, "successful PUTs");
    assert_eq!(s3.list(BUCKET).await, vec![key], "objects in the bucket");
    inbox.assert_no_failures();
    assert!(
        daemon.batch_total("duplicates") >= 1,
        "no batch summary counted the duplicate:\n{}",
        daemon.all_stdout()
    );

    let records = daemon.ledger_for("invoices/a.pdf").await;
    assert!(
        records.iter().any(|r| r["drops"].as_u64() >= Some(2)),
        "ledger does not count the second drop: {records:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn different_content_at_an_existing_key_is_uploaded_under_a_new_name() {
    let s3 = TestS3::start().await;
    let mut daemon = Daemon::new(&s3, Setup::new());
    let inbox = daemon.inbox().clone();
    daemon.start();

    // (rel, name of the second copy in done/, renamed key for the new content)
    let cases = [
        (
            "report.final.pdf",
            "report.final (1).pdf",
            "report.final.{h}.pdf",
        ),
        ("NOTES", "NOTES (1)", "NOTES.{h}"),
    ];
    let mut want: Vec<String> = Vec::new();
    for (i, (rel, second, renamed)) in cases.iter().enumerate() {
        let old = content(10 + i as u64, 30_000);
        let new = content(20 + i as u64, 31_000);
        inbox.drop(rel, &old);
        wait_until(TIMEOUT, format!("{rel} in done/"), || inbox.is_done(rel)).await;
        inbox.drop(rel, &new);
        wait_until(TIMEOUT, format!("{second} in done/"), || {
            inbox.in_done(second) && !inbox.in_inbox(rel)
        })
        .await;

        let key = inbox.key(rel);
        let renamed_key = inbox.key(&renamed.replace("{h}", &sha256_hex(&new)[..12]));
        let at_key = s3.get(BUCKET, &key).await.expect("original object");
        assert_bytes_eq(format!("original object {key}"), &at_key, &old);
        let Some(at_renamed) = s3.get(BUCKET, &renamed_key).await else {
            panic!(
                "renamed object {renamed_key} missing; bucket holds {:?}",
                s3.list(BUCKET).await
            );
        };
        assert_bytes_eq(format!("renamed object {renamed_key}"), &at_renamed, &new);
        assert_eq!(s3.puts(&key).await, 1, "PUTs at {key}");
        assert_eq!(s3.puts(&renamed_key).await, 1, "PUTs at {renamed_key}");
        inbox.assert_done(rel, &old);
        inbox.assert_done(second, &new);
        want.push(key);
        want.push(renamed_key);
    }
    want.sort();
    assert_eq!(s3.list(BUCKET).await, want, "objects in the bucket");
    inbox.assert_empty();
    inbox.assert_no_failures();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_lets_the_inflight_upload_finish() {
    let s3 = TestS3::start().await;
    let mut daemon = Daemon::new(&s3, Setup::new());
    let inbox = daemon.inbox().clone();
    let key = inbox.key("big scan.pdf");
    let delay = Duration::from_secs(2);
    s3.push(Op::PutObject, Fault::delay(delay).for_key(&key));
    daemon.start();

    let bytes = content(3, 64 * 1024);
    inbox.drop("big scan.pdf", &bytes);
    wait_until(TIMEOUT, "the PUT has reached the server", || {
        s3.requests_for(Op::PutObject, &key) >= 1
    })
    .await;
    let t0 = Instant::now();
    daemon.sigterm();
    // grace is 10 s in the test config.
    let status = daemon.wait_exit(Duration::from_secs(15)).await;
    let took = t0.elapsed();

    assert!(status.success(), "exit status after SIGTERM: {status}");
    assert!(took < Duration::from_secs(12), "shutdown took {took:?}");
    inbox.assert_done("big scan.pdf", &bytes);
    inbox.assert_empty();
    let object = s3.get(BUCKET, &key).await.expect("object");
    assert_bytes_eq("object", &object, &bytes);
    assert_eq!(s3.puts(&key).await, 1);
    inbox.assert_no_failures();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_sigterm_exits_at_once_with_a_last_line_that_says_so() {
    let s3 = TestS3::start().await;
    let mut daemon = Daemon::new(&s3, Setup::new().grace("30s"));
    let inbox = daemon.inbox().clone();
    let key = inbox.key("slow.pdf");
    // Longer than the test waits: the first SIGTERM leaves it running in the grace period.
    s3.push(
        Op::PutObject,
        Fault::delay(Duration::from_secs(40)).for_key(&key),
    );
    daemon.start();
    let bytes = content(5, 20_000);
    inbox.drop("slow.pdf", &bytes);
    wait_until(TIMEOUT, "the PUT has reached the server", || {
        s3.requests_for(Op::PutObject, &key) >= 1
    })
    .await;
    daemon.sigterm();
    wait_until(TIMEOUT, "the first SIGTERM is taken", || {
        daemon.stdout().contains("shutting down")
    })
    .await;
    assert!(
        daemon.is_running(),
        "the first SIGTERM waits for the upload"
    );
    daemon.sigterm();
    let status = daemon.wait_exit(Duration::from_secs(10)).await;
    assert_eq!(
        status.code(),
        Some(1),
        "exit status after a second SIGTERM: {status}"
    );

    let out = support::strip_ansi(&daemon.stdout());
    let last = out
        .lines()
        .rfind(|l| !l.trim().is_empty())
        .unwrap_or_default();
    assert!(last.contains("inboxd stopped"), "last line: {last}\n{out}");
    let end = daemon.stop_line();
    assert!(
        support::field(&end, "reason").starts_with("a second SIGTERM: exiting at once"),
        "{last}"
    );
    assert_eq!(support::field(&end, "exit_code"), "1", "{last}");
    assert_eq!(out.matches("inboxd stopped").count(), 1, "{out}");
    // Nothing lost: the file is still in the inbox, for the next start.
    assert!(inbox.in_inbox("slow.pdf"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn repeated_sigkills_under_load_lose_nothing_and_store_nothing_twice() {
    // 40 files, uploads slowed by the server, and the daemon killed (SIGKILL: no drain, no
    // flush) three times at different moments. Whatever was cut off where, after a last
    // clean run every file is in done/ exactly once, byte for byte, and in the bucket
    // written exactly once.
    let s3 = TestS3::start().await;
    let mut daemon = Daemon::new(&s3, Setup::new().concurrency(4));
    let inbox = daemon.inbox().clone();
    let files: Vec<(String, Vec<u8>)> = (0..40)
        .map(|i| {
            let rel = format!("batch{}/scan {i:02}.pdf", i % 3);
            (rel, content(200 + i as u64, 1_000 + 7_919 * i))
        })
        .collect();
    for (rel, _) in &files {
        s3.push(
            Op::PutObject,
            Fault::delay(Duration::from_millis(150)).for_key(inbox.key(rel)),
        );
    }
    for (rel, bytes) in &files {
        inbox.drop(rel, bytes);
    }
    let finished = || files.iter().filter(|(rel, _)| inbox.is_done(rel)).count();
    for kill_after in [5usize, 15, 25] {
        daemon.start();
        wait_until(
            TIMEOUT,
            format!("at least {kill_after} files in done/"),
            || finished() >= kill_after,
        )
        .await;
        daemon.kill().await;
    }
    daemon.start();
    wait_until(TIMEOUT, "every file in done/", || finished() == files.len()).await;
    daemon.stop().await;

    inbox.assert_empty();
    inbox.assert_no_failures();
    let mut want_done: Vec<String> = files.iter().map(|(rel, _)| rel.clone()).collect();
    want_done.sort();
    let mut done = inbox.done_files();
    done.sort();
    assert_eq!(
        done, want_done,
        "done/ holds each file once, under its own name"
    );
    for (rel, bytes) in &files {
        inbox.assert_done(rel, bytes);
        let key = inbox.key(rel);
        let object = s3.get(BUCKET, &key).await.expect("object");
        assert_bytes_eq(format!("object {key}"), &object, bytes);
        assert_eq!(s3.puts(&key).await, 1, "successful writes of {key}");
    }
    let records = daemon.ledger().await;
    let finished_records = records.iter().filter(|r| r["state"] == "finished").count();
    assert_eq!(
        finished_records,
        files.len(),
        "finished ledger records: {records:?}"
    );
}

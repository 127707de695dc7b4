//! Errors that need an operator (an expired session token, a skewed clock, unknown or wrong
//! keys, a missing bucket, denied access) pause the inboxes they hit instead of costing every
//! file its attempts: the files wait in the inbox, the log line and the recorded reason say
//! what to fix, and the files go out once it is fixed.

mod support;

use support::s3::TestS3;
use support::*;

/// How far the injected server clock is ahead of ours.
const SKEW_SECS: i64 = 1234;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operator_errors_pause_their_inbox_with_a_fix_it_message() {
    let s3 = TestS3::start().await;
    let mut daemon = Daemon::new(&s3, Setup::new().inboxes(5));
    let inboxes = daemon.inboxes().to_vec();
    // (error the server gives for the inbox's file, what the message must tell the operator)
    let cases: [(Fault, &[&str]); 5] = [
        (
            Fault::reject(S3ErrorCode::ExpiredToken),
            &["ExpiredToken", "session token has expired", "renew"],
        ),
        (
            Fault::reject_dated(S3ErrorCode::RequestTimeTooSkewed, SKEW_SECS),
            &[
                "RequestTimeTooSkewed",
                "clock is 20m 3",
                "behind the server's",
                "NTP",
            ],
        ),
        (
            Fault::reject(S3ErrorCode::InvalidAccessKeyId),
            &["InvalidAccessKeyId", "AWS_ACCESS_KEY_ID"],
        ),
        (
            Fault::reject(S3ErrorCode::SignatureDoesNotMatch),
            &["SignatureDoesNotMatch", "[s3] region", "[s3] endpoint"],
        ),
        (
            Fault::reject(S3ErrorCode::NoSuchBucket),
            &["NoSuchBucket", "bucket does not exist", "create it"],
        ),
    ];
    let bytes: Vec<Vec<u8>> = (0..5).map(|i| content(400 + i, 30_000)).collect();
    for ((fault, _), inbox) in cases.iter().zip(&inboxes) {
        s3.push(
            Op::PutObject,
            fault.clone().for_key(inbox.key("doc.pdf")).always(),
        );
    }
    daemon.start();
    for (inbox, bytes) in inboxes.iter().zip(&bytes) {
        inbox.drop("doc.pdf", bytes);
    }

    let paused = |daemon: &Daemon, inbox: &Inbox| -> Vec<String> {
        strip_ansi(&daemon.stdout())
            .lines()
            .filter(|l| l.contains("inbox paused") && l.contains(&format!("inbox={}", inbox.name)))
            .map(str::to_owned)
            .collect()
    };
    wait_until(TIMEOUT, "every inbox is paused", || {
        inboxes.iter().all(|i| !paused(&daemon, i).is_empty())
    })
    .await;
    for ((_, needles), inbox) in cases.iter().zip(&inboxes) {
        let lines = paused(&daemon, inbox);
        assert_eq!(lines.len(), 1, "{lines:#?}");
        assert!(lines[0].contains("ERROR"), "{}", lines[0]);
        for needle in *needles {
            assert!(lines[0].contains(needle), "{needle:?} not in {}", lines[0]);
        }
    }
    // Paused, not retried file by file: no per-file retry lines, nothing failed or deferred.
    let out = strip_ansi(&daemon.stdout());
    assert!(!out.contains("retrying"), "{out}");
    assert!(!out.contains("tried again later"), "{out}");
    for (inbox, bytes) in inboxes.iter().zip(&bytes) {
        inbox.assert_holds(&["doc.pdf"]);
        assert_bytes_eq(
            "doc.pdf in the inbox",
            &std::fs::read(inbox.file("doc.pdf")).expect("read"),
            bytes,
        );
        inbox.assert_no_failures();
    }

    // The reason recorded for each file carries the fix too.
    daemon.stop().await;
    let records = daemon.ledger().await;
    for ((_, needles), inbox) in cases.iter().zip(&inboxes) {
        let rec = records
            .iter()
            .find(|r| r["inbox"] == inbox.name.as_str() && r["rel_path"] == "doc.pdf")
            .unwrap_or_else(|| panic!("no record for {}: {records:#?}", inbox.name));
        let reason = rec["reason"].as_str().unwrap_or_default();
        assert!(reason.contains(needles[1]), "{}: {reason}", inbox.name);
    }

    // Fixed: every file goes out.
    s3.plan.clear();
    daemon.start();
    wait_until(TIMEOUT, "every doc.pdf is in done/", || {
        inboxes.iter().all(|i| i.is_done("doc.pdf"))
    })
    .await;
    daemon.stop().await;
    for (inbox, bytes) in inboxes.iter().zip(&bytes) {
        inbox.assert_done("doc.pdf", bytes);
        assert_object(&s3, &inbox.key("doc.pdf"), bytes).await;
        assert_eq!(s3.puts(&inbox.key("doc.pdf")).await, 1);
    }
}

/// Issue 13: once the problem is fixed, every waiting file goes at once, and a fix takes
/// effect within seconds even with the default `retry_max` (30 s): the probe of a paused
/// inbox comes at most every 5 s, and its success wakes every other file of the inbox.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fixed_inbox_sends_every_waiting_file_within_seconds() {
    let s3 = TestS3::start().await;
    let setup =
        Setup::new()
            .set("upload", "retry_initial", "\"1s\"")
            .set("upload", "retry_max", "\"30s\"");
    let mut daemon = Daemon::new(&s3, setup);
    let inbox = daemon.inbox().clone();
    // The bucket is gone: every PUT gets NoSuchBucket until it is back.
    s3.push(
        Op::PutObject,
        Fault::reject(S3ErrorCode::NoSuchBucket).always(),
    );
    daemon.start();
    let files: Vec<(String, Vec<u8>)> = (0..10)
        .map(|i| (format!("scan{i}.pdf"), content(500 + i, 20_000)))
        .collect();
    for (rel, bytes) in &files {
        inbox.drop(rel, bytes);
    }
    // Paused (other files may have sent their first PUT meanwhile), then probed three more
    // times, one file per probe, while the backoff grows.
    wait_until(TIMEOUT, "the inbox is paused", || {
        daemon.stdout().contains("inbox paused")
    })
    .await;
    let at_pause = s3.requests(Op::PutObject);
    wait_until(TIMEOUT, "three probes after the pause", || {
        s3.requests(Op::PutObject) >= at_pause + 3
    })
    .await;
    assert!(files.iter().all(|(rel, _)| inbox.in_inbox(rel)));

    s3.plan.clear();
    let fixed = std::time::Instant::now();
    wait_until(TIMEOUT, "every file is in done/", || {
        files.iter().all(|(rel, _)| inbox.is_done(rel))
    })
    .await;
    let took = fixed.elapsed();
    daemon.stop().await;
    assert!(
        took <= std::time::Duration::from_secs(10),
        "the files went {took:?} after the fix"
    );
    for (rel, bytes) in &files {
        assert_object(&s3, &inbox.key(rel), bytes).await;
    }
    assert!(
        daemon.stdout().contains("inbox resumed"),
        "{}",
        daemon.stdout()
    );
}

//! Server faults: transient errors are retried, permanent ones fail one file, configuration
//! problems pause the inbox without losing anything, and an ambiguous success is recognised.

mod support;

use support::assert_object;
use support::s3::TestS3;
use support::{
    BUCKET, Change, Daemon, Fault, Op, S3ErrorCode, Setup, TIMEOUT, assert_bytes_eq, content,
    field, strip_ansi, wait_until,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transient_slowdown_is_retried_until_the_upload_succeeds() {
    let s3 = TestS3::start().await;
    let mut daemon = Daemon::new(&s3, Setup::new());
    let inbox = daemon.inbox().clone();
    let key = inbox.key("scan.pdf");
    s3.push(
        Op::PutObject,
        Fault::reject(S3ErrorCode::SlowDown).for_key(&key).times(3),
    );
    daemon.start();

    let bytes = content(1, 64 * 1024);
    inbox.drop("scan.pdf", &bytes);
    wait_until(TIMEOUT, "scan.pdf is in done/", || {
        inbox.is_done("scan.pdf")
    })
    .await;

    assert!(s3.plan.is_drained(), "the 503s were not all consumed");
    assert!(s3.requests_for(Op::PutObject, &key) >= 4, "PUT attempts");
    let object = s3.get(BUCKET, &key).await.expect("object");
    assert_bytes_eq("object", &object, &bytes);
    inbox.assert_done("scan.pdf", &bytes);
    assert_eq!(s3.puts(&key).await, 1, "successful PUTs");
    inbox.assert_no_failures();
    inbox.assert_empty();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn permanent_invalid_argument_fails_only_that_file() {
    let s3 = TestS3::start().await;
    let mut daemon = Daemon::new(&s3, Setup::new());
    let inbox = daemon.inbox().clone();
    let bad_key = inbox.key("bad.bin");
    s3.push(
        Op::PutObject,
        Fault::reject(S3ErrorCode::InvalidArgument)
            .for_key(&bad_key)
            .always(),
    );
    daemon.start();

    let bad = content(2, 20_000);
    let good = [
        ("good.bin", content(3, 30_000)),
        ("sub/good ä.bin", content(4, 40_000)),
    ];
    inbox.drop("bad.bin", &bad);
    for (rel, bytes) in &good {
        inbox.drop(rel, bytes);
    }
    wait_until(
        TIMEOUT,
        "bad.bin in failed/ and the others in done/",
        || inbox.is_failed("bad.bin") && good.iter().all(|(rel, _)| inbox.is_done(rel)),
    )
    .await;

    let reason = inbox.assert_failed("bad.bin");
    assert!(
        reason.contains("InvalidArgument"),
        "reason file does not name the error:\n{reason}"
    );
    let failed_copy = std::fs::read(inbox.failed.join("bad.bin")).expect("failed copy");
    assert_bytes_eq("failed/bad.bin", &failed_copy, &bad);
    for (rel, bytes) in &good {
        let key = inbox.key(rel);
        let object = s3.get(BUCKET, &key).await.expect("object");
        assert_bytes_eq(&key, &object, bytes);
        inbox.assert_done(rel, bytes);
    }
    let mut want: Vec<String> = good.iter().map(|(rel, _)| inbox.key(rel)).collect();
    want.sort();
    assert_eq!(s3.list(BUCKET).await, want, "objects in the bucket");
    assert_eq!(s3.puts(&bad_key).await, 0);
    inbox.assert_empty();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_inbox_says_so_once_and_left_counts_no_ignored_file() {
    let s3 = TestS3::start().await;
    let mut daemon = Daemon::new(&s3, Setup::new());
    let inbox = daemon.inbox().clone();
    s3.push(
        Op::PutObject,
        Fault::reject(S3ErrorCode::AccessDenied).always(),
    );
    let ignored = [
        ".DS_Store",
        "notes.tmp",
        "Thumbs.db",
        "~$draft.docx",
        "big.part",
    ];
    for (i, rel) in ignored.iter().enumerate() {
        inbox.drop(rel, &content(60 + i as u64, 1_000));
    }
    let files = [("a.pdf", content(70, 9_000)), ("b.pdf", content(71, 9_000))];
    for (rel, bytes) in &files {
        inbox.drop(rel, bytes);
    }
    daemon.start();
    // Several probe rounds, each handing both files back to wait again.
    // (The first refusal, then three probes; between reminders they log at debug only.)
    wait_until(TIMEOUT, "three failed probes", || {
        s3.requests(Op::PutObject) >= 4
    })
    .await;
    let waiting = strip_ansi(&daemon.stdout());
    let deferred_lines = waiting
        .lines()
        .filter(|l| l.contains("batch finished") && !l.contains("deferred=0"))
        .count();
    assert!(
        (1..=2).contains(&deferred_lines),
        "batch lines while paused: one when the files began to wait, none per round\n{waiting}"
    );

    s3.plan.clear();
    wait_until(TIMEOUT, "both files are in done/", || {
        files.iter().all(|(rel, _)| inbox.is_done(rel))
    })
    .await;
    daemon.stop().await;
    let end = daemon.stop_line();
    assert_eq!(field(&end, "uploaded"), "2", "{end:?}");
    assert_eq!(field(&end, "deferred"), "0", "{end:?}");
    assert_eq!(
        field(&end, "left_in_inbox"),
        "0",
        "only ignored files remain, and they are not left: {end:?}"
    );
    assert_eq!(daemon.batch_total("uploaded"), 2);
    inbox.assert_holds(&ignored);
    for (rel, bytes) in &files {
        inbox.assert_done(rel, bytes);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn access_denied_pauses_the_inbox_and_keeps_the_file_until_fixed() {
    let s3 = TestS3::start().await;
    let mut daemon = Daemon::new(&s3, Setup::new());
    let inbox = daemon.inbox().clone();
    let key = inbox.key("contract.pdf");
    s3.push(
        Op::PutObject,
        Fault::reject(S3ErrorCode::AccessDenied).always(),
    );
    daemon.start();

    let bytes = content(5, 50_000);
    inbox.drop("contract.pdf", &bytes);
    wait_until(TIMEOUT, "stdout reports the paused inbox", || {
        daemon.stdout().contains("paused")
    })
    .await;
    // While access is denied the daemon keeps trying and the file stays where it is.
    wait_until(TIMEOUT, "a second PUT attempt", || {
        s3.requests_for(Op::PutObject, &key) >= 2
    })
    .await;
    inbox.assert_holds(&["contract.pdf"]);
    assert_bytes_eq(
        "file in inbox",
        &std::fs::read(inbox.file("contract.pdf")).expect("file in inbox"),
        &bytes,
    );
    inbox.assert_no_failures();
    assert!(
        inbox.done_files().is_empty(),
        "done/: {:?}",
        inbox.done_files()
    );
    assert!(!s3.exists(BUCKET, &key));

    // The problem is fixed: the file goes out without anyone touching the daemon.
    s3.plan.clear();
    wait_until(TIMEOUT, "contract.pdf is in done/", || {
        inbox.is_done("contract.pdf")
    })
    .await;
    let object = s3.get(BUCKET, &key).await.expect("object");
    assert_bytes_eq("object", &object, &bytes);
    inbox.assert_done("contract.pdf", &bytes);
    assert_eq!(s3.puts(&key).await, 1);
    inbox.assert_no_failures();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ambiguous_success_is_recognised_as_our_own_upload() {
    let s3 = TestS3::start().await;
    let mut daemon = Daemon::new(&s3, Setup::new());
    let inbox = daemon.inbox().clone();
    let key = inbox.key("lab/run-7.csv");
    // The object is stored, but the client hears 500.
    s3.push(
        Op::PutObject,
        Fault::fail_after(S3ErrorCode::InternalError).for_key(&key),
    );
    daemon.start();

    let bytes = content(6, 80_000);
    inbox.drop("lab/run-7.csv", &bytes);
    wait_until(TIMEOUT, "run-7.csv is in done/", || {
        inbox.is_done("lab/run-7.csv")
    })
    .await;

    assert!(s3.plan.is_drained(), "the fault was never hit");
    let object = s3.get(BUCKET, &key).await.expect("object");
    assert_bytes_eq("object", &object, &bytes);
    inbox.assert_done("lab/run-7.csv", &bytes);
    assert_eq!(s3.puts(&key).await, 1, "successful backend PUTs");
    // No renamed copy: the daemon knew the object at the key was its own.
    assert_eq!(s3.list(BUCKET).await, vec![key], "objects in the bucket");
    inbox.assert_no_failures();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_inbox_does_not_hold_back_the_others() {
    // Inbox 0's credentials are refused for every one of its (many) files; inbox 1 must not
    // notice. Its files go out while inbox 0 stays paused with all its files in place.
    let s3 = TestS3::start().await;
    let mut daemon = Daemon::new(&s3, Setup::new().inboxes(2));
    let (paused, healthy) = (daemon.inboxes()[0].clone(), daemon.inboxes()[1].clone());
    // More files than the upload stage admits at once (4 × 2 + 20 with concurrency 4).
    let refused: Vec<(String, Vec<u8>)> = (0..60)
        .map(|i| {
            (
                format!("refused {i:02}.pdf"),
                content(300 + i as u64, 2_000),
            )
        })
        .collect();
    for (rel, _) in &refused {
        s3.push(
            Op::PutObject,
            Fault::reject(S3ErrorCode::AccessDenied)
                .for_key(paused.key(rel))
                .always(),
        );
    }
    for (rel, bytes) in &refused {
        paused.drop(rel, bytes);
    }
    daemon.start();
    wait_until(TIMEOUT, "stdout reports the paused inbox", || {
        daemon.stdout().contains("inbox paused")
    })
    .await;

    let fine: Vec<(String, Vec<u8>)> = (0..10)
        .map(|i| (format!("fine {i}.pdf"), content(400 + i as u64, 3_000)))
        .collect();
    for (rel, bytes) in &fine {
        healthy.drop(rel, bytes);
    }
    wait_until(TIMEOUT, "every file of the healthy inbox in done/", || {
        fine.iter().all(|(rel, _)| healthy.is_done(rel))
    })
    .await;
    daemon.stop().await;

    for (rel, bytes) in &fine {
        healthy.assert_done(rel, bytes);
        assert_object(&s3, &healthy.key(rel), bytes).await;
    }
    let mut want: Vec<String> = refused.iter().map(|(rel, _)| rel.clone()).collect();
    want.sort();
    let mut held = paused.files();
    held.sort();
    assert_eq!(held, want, "the paused inbox keeps all its files");
    paused.assert_no_failures();
    assert!(
        paused.done_files().is_empty(),
        "done/: {:?}",
        paused.done_files()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_file_whose_move_fails_is_not_uploaded_again() {
    // The file fails for good (400), but failed/ cannot take it yet (a plain file sits where
    // its sub-folder must go). It stays in the inbox; later tries only retry the move, never
    // the upload, and once the obstacle is gone it lands in failed/ with its reason.
    let s3 = TestS3::start().await;
    let mut daemon = Daemon::new(&s3, Setup::new());
    let inbox = daemon.inbox().clone();
    let rel = "sub/bad.pdf";
    let key = inbox.key(rel);
    s3.push(
        Op::PutObject,
        Fault::reject(S3ErrorCode::InvalidArgument)
            .for_key(&key)
            .times(1),
    );
    let failed_sub = inbox.failed.join("sub");
    std::fs::create_dir_all(&inbox.failed).expect("failed/");
    std::fs::write(&failed_sub, b"in the way").expect("obstacle");
    daemon.start();
    let bytes = content(7, 9_000);
    inbox.drop(rel, &bytes);
    wait_until(TIMEOUT, "the move to failed/ was tried and refused", || {
        daemon.stdout().contains("cannot move the file to failed/")
    })
    .await;
    // retry_later is 1 s in tests: let a few more rounds pass before the obstacle goes.
    wait_until(TIMEOUT, "a second attempt to move it", || {
        daemon
            .stdout()
            .matches("cannot move the file to failed/")
            .count()
            >= 2
    })
    .await;
    assert!(
        inbox.in_inbox(rel),
        "the file left the inbox without a place to go"
    );
    std::fs::remove_file(&failed_sub).expect("remove the obstacle");
    wait_until(TIMEOUT, "the file is in failed/", || inbox.is_failed(rel)).await;
    daemon.stop().await;

    assert_eq!(
        s3.requests_for(Op::PutObject, &key),
        1,
        "PUTs of a file that failed for good"
    );
    assert!(!s3.exists(BUCKET, &key));
    let reason = inbox.assert_failed(rel);
    assert!(reason.contains("InvalidArgument"), "reason file: {reason}");
}

/// A small file changes while its PUT waits at the server. The earlier bytes reach the
/// bucket (the server checks them against their own SHA-256), but the file must not go to
/// done/ under that upload: it goes round again, and its new version replaces the object at
/// the same key (the earlier object is remembered as this file's own unfinished one).
async fn small_file_changed_during_its_upload(change: Change) {
    let s3 = TestS3::start().await;
    let mut daemon = Daemon::new(&s3, Setup::new());
    let inbox = daemon.inbox().clone();
    let rel = "minutes.txt";
    let key = inbox.key(rel);
    s3.push(
        Op::PutObject,
        Fault::delay(std::time::Duration::from_secs(2))
            .for_key(&key)
            .times(1),
    );
    let old = content(51, 30_000);
    inbox.drop(rel, &old);
    daemon.start();
    wait_until(TIMEOUT, "the first PUT has arrived", || {
        s3.requests_for(Op::PutObject, &key) >= 1
    })
    .await;
    let new = change.apply(&inbox.file(rel), &old, daemon.dir(), 52, 12_000);
    wait_until(TIMEOUT, "minutes.txt in done/", || inbox.is_done(rel)).await;
    daemon.stop().await;

    inbox.assert_done(rel, &new);
    assert_object(&s3, &key, &new).await;
    assert_eq!(
        s3.list(BUCKET).await,
        vec![key.clone()],
        "objects after a {change:?}"
    );
    assert_eq!(
        s3.puts(&key).await,
        2,
        "writes of {key}: the first version, then the new one"
    );
    daemon.inbox().assert_no_failures();
    assert!(
        strip_ansi(&daemon.all_stdout()).contains("file changed during upload"),
        "no line says the file changed during its upload"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_small_file_appended_during_its_upload_ends_whole_under_its_own_key() {
    small_file_changed_during_its_upload(Change::Append).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_small_file_rewritten_during_its_upload_ends_whole_under_its_own_key() {
    small_file_changed_during_its_upload(Change::RewriteInPlace).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_small_file_replaced_during_its_upload_ends_whole_under_its_own_key() {
    small_file_changed_during_its_upload(Change::Replace).await;
}

//! Servers that do less than S3 documents. The daemon probes what the server enforces at
//! startup. Where it accepts conditional writes and ignores them (Garage 2.5 on PutObject),
//! the daemon looks at the key before writing, so `rename` and `fail` never replace an object
//! written by another tool or by inboxd itself. Where it does not verify SHA-256 checksums
//! (Ceph RGW before Squid) but does verify Content-MD5, every body carries a Content-MD5. On a
//! server that enforces everything neither costs anything.

mod support;

use aws_sdk_s3::primitives::ByteStream;
use support::s3::TestS3;
use support::{BUCKET, Daemon, Op, Setup, TIMEOUT, assert_object, content, sha256_hex, wait_until};

/// The object at `key` holds exactly `bytes` (no inboxd metadata expected: another tool's).
async fn assert_foreign(s3: &TestS3, key: &str, bytes: &[u8]) {
    let stored = s3
        .get(BUCKET, key)
        .await
        .expect("the object is still there");
    support::assert_bytes_eq(key, &stored, bytes);
}

/// Writes `bytes` at `key` as another tool would: a plain PUT, no inboxd metadata.
async fn foreign_put(s3: &TestS3, key: &str, bytes: &[u8]) {
    s3.client()
        .put_object()
        .bucket(BUCKET)
        .key(key)
        .body(ByteStream::from(bytes.to_vec()))
        .send()
        .await
        .expect("foreign PUT");
}

fn renamed(key: &str, bytes: &[u8]) -> String {
    let (stem, ext) = key.rsplit_once('.').expect("key with an extension");
    format!("{stem}.{}.{ext}", &sha256_hex(bytes)[..12])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_probe_finds_ignored_conditions_and_rename_keeps_another_tools_object() {
    let s3 = TestS3::start().await;
    s3.ignore_conditions();
    let mut daemon = Daemon::new(&s3, Setup::new());
    let inbox = daemon.inbox().clone();
    let key = inbox.key("scan.pdf");
    let theirs = content(1, 30_000);
    let ours = content(2, 40_000);
    foreign_put(&s3, &key, &theirs).await;
    daemon.start();
    inbox.drop("scan.pdf", &ours);
    wait_until(TIMEOUT, "scan.pdf is in done/", || {
        inbox.is_done("scan.pdf")
    })
    .await;
    daemon.stop().await;

    assert_foreign(&s3, &key, &theirs).await;
    let other = renamed(&key, &ours);
    assert_object(&s3, &other, &ours).await;
    let mut want = vec![key.clone(), other];
    want.sort();
    assert_eq!(
        s3.list(BUCKET).await,
        want,
        "objects in the bucket (probe objects must be gone)"
    );
    inbox.assert_done("scan.pdf", &ours);
    inbox.assert_no_failures();
    let log = daemon.stdout();
    assert!(
        log.contains("If-None-Match on PUT IGNORED"),
        "the probe result is not logged:\n{log}"
    );
    assert!(
        log.contains("does not honour conditional writes"),
        "no warning about the server:\n{log}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fail_keeps_an_object_inboxd_wrote_earlier_on_a_server_that_ignores_conditions() {
    let s3 = TestS3::start().await;
    s3.ignore_conditions();
    let mut daemon = Daemon::new(&s3, Setup::new().on_conflict("fail"));
    let inbox = daemon.inbox().clone();
    let key = inbox.key("a.pdf");
    let old = content(3, 50_000);
    let new = content(4, 50_000);
    daemon.start();
    inbox.drop("a.pdf", &old);
    wait_until(TIMEOUT, "a.pdf is in done/", || inbox.is_done("a.pdf")).await;
    inbox.drop("a.pdf", &new);
    wait_until(TIMEOUT, "the second a.pdf is in failed/", || {
        inbox.is_failed("a.pdf")
    })
    .await;
    daemon.stop().await;

    assert_object(&s3, &key, &old).await;
    assert_eq!(s3.puts(&key).await, 1, "objects written at {key}");
    assert_eq!(s3.list(BUCKET).await, vec![key.clone()]);
    let reason = inbox.assert_failed("a.pdf");
    assert!(
        reason.contains(&key),
        "reason does not name {key}: {reason}"
    );
    inbox.assert_done("a.pdf", &old);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_file_is_renamed_not_completed_over_another_tools_object() {
    let s3 = TestS3::start().await;
    s3.ignore_conditions();
    let mut daemon = Daemon::new(&s3, Setup::new().multipart("5 MiB", "5 MiB"));
    let inbox = daemon.inbox().clone();
    let key = inbox.key("movie.mp4");
    let theirs = content(5, 1000);
    let ours = content(6, 11 * 1024 * 1024);
    foreign_put(&s3, &key, &theirs).await;
    daemon.start();
    inbox.drop("movie.mp4", &ours);
    wait_until(TIMEOUT, "movie.mp4 is in done/", || {
        inbox.is_done("movie.mp4")
    })
    .await;
    daemon.stop().await;

    assert_foreign(&s3, &key, &theirs).await;
    let other = renamed(&key, &ours);
    assert_object(&s3, &other, &ours).await;
    assert_eq!(
        s3.requests_for(Op::CreateMultipartUpload, &key),
        0,
        "no upload was even started at the taken key"
    );
    assert!(s3.open_uploads().is_empty(), "{:?}", s3.open_uploads());
    inbox.assert_done("movie.mp4", &ours);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_taken_while_the_parts_went_up_is_seen_before_completing() {
    let s3 = TestS3::start().await;
    s3.ignore_conditions();
    let mut daemon = Daemon::new(&s3, Setup::new().multipart("5 MiB", "5 MiB"));
    let inbox = daemon.inbox().clone();
    let key = inbox.key("big.bin");
    let theirs = content(7, 1000);
    let ours = content(8, 11 * 1024 * 1024);
    // The foreign object arrives after the look before the first part (the key was free)
    // and before completion: the first part's request is delayed until it is in place.
    s3.push(
        Op::UploadPart,
        support::s3::Fault::delay(std::time::Duration::from_millis(300))
            .for_key(key.clone())
            .times(1),
    );
    daemon.start();
    inbox.drop("big.bin", &ours);
    wait_until(TIMEOUT, "the upload has started", || {
        s3.requests_for(Op::UploadPart, &key) > 0
    })
    .await;
    foreign_put(&s3, &key, &theirs).await;
    wait_until(TIMEOUT, "big.bin is in done/", || inbox.is_done("big.bin")).await;
    daemon.stop().await;

    assert_foreign(&s3, &key, &theirs).await;
    assert_object(&s3, &renamed(&key, &ours), &ours).await;
    assert_eq!(
        s3.requests_for(Op::CompleteMultipartUpload, &key),
        0,
        "the upload at the taken key was never completed"
    );
    assert!(s3.open_uploads().is_empty(), "{:?}", s3.open_uploads());
    inbox.assert_done("big.bin", &ours);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_that_enforces_conditions_costs_no_look_and_is_probed_once() {
    let s3 = TestS3::start().await;
    let mut daemon = Daemon::new(&s3, Setup::new());
    let inbox = daemon.inbox().clone();
    let files: Vec<(String, Vec<u8>)> = (0..5)
        .map(|i| (format!("f{i}.pdf"), content(20 + i, 10_000)))
        .collect();
    daemon.start();
    for (rel, bytes) in &files {
        inbox.drop(rel, bytes);
    }
    wait_until(TIMEOUT, "every file is in done/", || {
        files.iter().all(|(rel, _)| inbox.is_done(rel))
    })
    .await;
    daemon.stop().await;
    // Counted before the checks below, which HEAD each object themselves.
    assert_eq!(
        s3.requests(Op::HeadObject),
        0,
        "a HEAD was spent although the server enforces If-None-Match"
    );
    for (rel, bytes) in &files {
        assert_object(&s3, &inbox.key(rel), bytes).await;
    }
    let first = daemon.stdout();
    assert!(
        first.contains("capabilities probed") && first.contains("If-None-Match on PUT honoured"),
        "{first}"
    );

    daemon.start();
    wait_until(TIMEOUT, "the daemon has started again", || {
        daemon.all_stdout().matches("inboxd started").count() == 2
    })
    .await;
    daemon.stop().await;
    let second = daemon.stdout();
    assert!(
        second.contains("remembered from an earlier probe")
            && !second.contains("capabilities probed"),
        "the second start probed again:\n{second}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_that_ignores_sha256_checksums_gets_content_md5_on_every_body() {
    let s3 = TestS3::start().await;
    s3.ignore_checksums();
    let mut daemon = Daemon::new(&s3, Setup::new().multipart("5 MiB", "5 MiB"));
    let inbox = daemon.inbox().clone();
    let small = content(30, 10_000);
    let medium = content(31, 300_000);
    let large = content(32, 11 * 1024 * 1024);
    daemon.start();
    inbox.drop("small.pdf", &small);
    inbox.drop("medium.pdf", &medium);
    inbox.drop("large.bin", &large);
    wait_until(TIMEOUT, "every file is in done/", || {
        ["small.pdf", "medium.pdf", "large.bin"]
            .iter()
            .all(|rel| inbox.is_done(rel))
    })
    .await;
    daemon.stop().await;

    assert_eq!(s3.requests(Op::PutObject), 2, "PUTs of the two small files");
    assert_eq!(
        s3.with_content_md5(Op::PutObject),
        2,
        "both PUTs (one sent from memory, one streamed) carry Content-MD5"
    );
    assert_eq!(s3.requests(Op::UploadPart), 3);
    assert_eq!(
        s3.with_content_md5(Op::UploadPart),
        3,
        "every part carries Content-MD5"
    );
    assert_object(&s3, &inbox.key("small.pdf"), &small).await;
    assert_object(&s3, &inbox.key("medium.pdf"), &medium).await;
    assert_object(&s3, &inbox.key("large.bin"), &large).await;
    let log = daemon.stdout();
    assert!(
        log.contains("SHA-256 checksum IGNORED; Content-MD5 honoured"),
        "{log}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_that_verifies_sha256_gets_no_content_md5() {
    let s3 = TestS3::start().await;
    let mut daemon = Daemon::new(&s3, Setup::new().multipart("5 MiB", "5 MiB"));
    let inbox = daemon.inbox().clone();
    let small = content(33, 10_000);
    let large = content(34, 6 * 1024 * 1024);
    daemon.start();
    inbox.drop("small.pdf", &small);
    inbox.drop("large.bin", &large);
    wait_until(TIMEOUT, "both files are in done/", || {
        inbox.is_done("small.pdf") && inbox.is_done("large.bin")
    })
    .await;
    daemon.stop().await;
    assert_eq!(s3.requests(Op::PutObject), 1);
    assert_eq!(s3.requests(Op::UploadPart), 2);
    assert_eq!(s3.with_content_md5(Op::PutObject), 0);
    assert_eq!(s3.with_content_md5(Op::UploadPart), 0);
}

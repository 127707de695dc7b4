//! Large files: multipart uploads are byte-exact, resume after a crash or SIGTERM from the
//! parts already stored, never leave an open upload behind, never complete an object from two
//! versions of a file, and retry failed parts.
//!
//! Threshold and part size are S3's minimum (5 MiB) so the files stay small (11–18 MiB).

mod support;

use std::fs;
use std::time::{Duration, Instant};

use support::assert_object;
use support::s3::TestS3;
use support::{
    BUCKET, Change, Daemon, Fault, MIB, Op, S3ErrorCode, Setup, TIMEOUT, assert_bytes_eq, content,
    sha256_hex, wait_until,
};

/// Threshold and part size.
const PART: usize = 5 * MIB;
/// How long a stalled part is held by the server: far longer than any test waits before it
/// kills or stops the daemon (and shorter than nothing it waits for).
const STALL: Duration = Duration::from_secs(120);

fn setup() -> Setup {
    Setup::new().multipart("5 MiB", "5 MiB")
}

fn parts(len: usize) -> usize {
    len.div_ceil(PART)
}

/// Lets the first `n` UploadPart requests for `key` through and holds every later one for
/// [`STALL`] before the server reads its body.
fn stall_parts_after(s3: &TestS3, key: &str, n: usize) {
    // Faults fire in the order they were pushed: the zero delay takes the first `n` requests.
    s3.push(
        Op::UploadPart,
        Fault::delay(Duration::ZERO).for_key(key).times(n),
    );
    s3.push(Op::UploadPart, Fault::delay(STALL).for_key(key).always());
}

/// No multipart upload is open at the server and no stored part is left over.
/// Waits for the server's running requests first, so a write cut off by a kill has landed.
async fn assert_nothing_open(s3: &TestS3) {
    s3.idle().await;
    assert_eq!(
        s3.open_uploads(),
        Vec::<String>::new(),
        "multipart uploads left open"
    );
    assert_eq!(s3.stored_parts(), Vec::<String>::new(), "parts left behind");
}

/// The ledger has exactly one finished record for `rel`, with the SHA-256 of `bytes`, and no
/// record of it still holds a multipart upload id.
async fn assert_ledger_finished_only(daemon: &Daemon, rel: &str, bytes: &[u8]) {
    let records = daemon.ledger_for(rel).await;
    let sha = sha256_hex(bytes);
    let finished: Vec<_> = records
        .iter()
        .filter(|r| r["state"] == "finished")
        .collect();
    assert_eq!(
        finished.len(),
        1,
        "finished ledger records of {rel} (want one, for sha256 {sha}): {records:?}"
    );
    assert_eq!(
        finished[0]["sha256"],
        sha.as_str(),
        "the finished record of {rel} is not for the final content: {records:?}"
    );
    for r in &records {
        assert!(
            r["upload_id"].is_null(),
            "a ledger record of {rel} still holds a multipart upload: {r}"
        );
        assert!(
            r["state"] != "uploaded" || r["sha256"] == sha.as_str(),
            "a ledger record says an earlier version of {rel} was uploaded: {r}"
        );
    }
}

// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn multipart_round_trip_is_byte_exact() {
    let s3 = TestS3::start().await;
    let mut daemon = Daemon::new(&s3, setup());
    let inbox = daemon.inbox().clone();
    let files = [
        ("just above.bin", content(1, PART + 1)),
        ("video/three and a half parts.mp4", content(2, PART * 7 / 2)),
        // Exactly at the threshold: not above it, so one PUT.
        ("at threshold.bin", content(3, PART)),
        ("small.txt", content(4, 10_000)),
    ];
    daemon.start();
    for (rel, bytes) in &files {
        inbox.drop(rel, bytes);
    }
    wait_until(TIMEOUT, "every file is in done/", || {
        files.iter().all(|(rel, _)| inbox.is_done(rel))
    })
    .await;
    daemon.stop().await;

    for (rel, bytes) in &files {
        let key = inbox.key(rel);
        assert_object(&s3, &key, bytes).await;
        inbox.assert_done(rel, bytes);
        assert_eq!(s3.puts(&key).await, 1, "objects written at {key}");
        let create = s3.requests_for(Op::CreateMultipartUpload, &key);
        let upload_part = s3.requests_for(Op::UploadPart, &key);
        let complete = s3.requests_for(Op::CompleteMultipartUpload, &key);
        let put = s3.requests_for(Op::PutObject, &key);
        if bytes.len() > PART {
            assert_eq!(
                (create, upload_part, complete, put),
                (1, parts(bytes.len()), 1, 0),
                "{key}: (CreateMultipartUpload, UploadPart, CompleteMultipartUpload, PutObject)"
            );
        } else {
            assert_eq!(
                (create, upload_part, put),
                (0, 0, 1),
                "{key}: (CreateMultipartUpload, UploadPart, PutObject)"
            );
        }
        assert_ledger_finished_only(&daemon, rel, bytes).await;
    }
    let mut keys: Vec<String> = files.iter().map(|(rel, _)| inbox.key(rel)).collect();
    keys.sort();
    assert_eq!(s3.list(BUCKET).await, keys, "objects in the bucket");
    assert_nothing_open(&s3).await;
    inbox.assert_empty();
    daemon.inbox().assert_no_failures();
}

/// Starts the daemon on `bytes` at `rel` with every part after the first stalled at the
/// server, waits until the first part is stored and `in_flight` part requests have arrived,
/// optionally lets sled's background flush persist the recorded part, then SIGKILLs it.
/// Returns the UploadPart requests seen so far.
async fn kill_mid_multipart(
    s3: &TestS3,
    daemon: &mut Daemon,
    rel: &str,
    bytes: &[u8],
    in_flight: usize,
    persist_parts: bool,
) -> usize {
    let inbox = daemon.inbox().clone();
    let key = inbox.key(rel);
    stall_parts_after(s3, &key, 1);
    daemon.start();
    inbox.drop(rel, bytes);
    wait_until(
        TIMEOUT,
        "one part is stored and the others are stalled at the server",
        || !s3.stored_parts().is_empty() && s3.requests_for(Op::UploadPart, &key) >= in_flight,
    )
    .await;
    if persist_parts {
        // A finished part is recorded in the ledger without an explicit flush; sled's
        // background flush (every 500 ms) makes it durable. The point of this wait is that
        // enough time has passed for it.
        tokio::time::sleep(Duration::from_millis(1500)).await;
    }
    daemon.kill().await;

    assert!(
        !s3.exists(BUCKET, &key),
        "{key} was completed although parts were stalled"
    );
    inbox.assert_holds(&[rel]);
    assert!(
        inbox.done_files().is_empty(),
        "done/: {:?}",
        inbox.done_files()
    );
    assert_eq!(
        s3.open_uploads().len(),
        1,
        "the interrupted upload should be open at the server"
    );
    s3.requests_for(Op::UploadPart, &key)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_during_multipart_then_restart_resumes_from_the_stored_parts() {
    let s3 = TestS3::start().await;
    let mut daemon = Daemon::new(&s3, setup().concurrency(4));
    let inbox = daemon.inbox().clone();
    let rel = "disk.img";
    let key = inbox.key(rel);
    let bytes = content(21, PART * 7 / 2);
    let n = parts(bytes.len());

    let first_run = kill_mid_multipart(&s3, &mut daemon, rel, &bytes, n, true).await;
    s3.plan.clear();
    daemon.start();
    wait_until(TIMEOUT, "disk.img is in done/ after the restart", || {
        inbox.is_done(rel)
    })
    .await;
    daemon.stop().await;

    let total = s3.requests_for(Op::UploadPart, &key);
    let second_run = total - first_run;
    assert!(
        second_run < n,
        "the restart sent {second_run} of {n} parts: the stored part was sent again"
    );
    assert!(
        total < 2 * n,
        "UploadPart requests over both runs: {total} (first run {first_run}), {n} parts"
    );
    assert_eq!(
        s3.requests_for(Op::CreateMultipartUpload, &key),
        1,
        "the restart should resume the recorded upload, not start a new one"
    );
    assert_object(&s3, &key, &bytes).await;
    inbox.assert_done(rel, &bytes);
    assert_eq!(s3.puts(&key).await, 1, "objects written at {key}");
    assert_eq!(s3.list(BUCKET).await, vec![key], "objects in the bucket");
    assert_nothing_open(&s3).await;
    inbox.assert_empty();
    daemon.inbox().assert_no_failures();
    assert_ledger_finished_only(&daemon, rel, &bytes).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_during_multipart_then_file_changed_aborts_the_old_upload() {
    let s3 = TestS3::start().await;
    let mut daemon = Daemon::new(&s3, setup().concurrency(4));
    let inbox = daemon.inbox().clone();
    let rel = "dump.bin";
    let key = inbox.key(rel);
    let old = content(31, PART * 7 / 2);
    let new = content(32, PART * 3 + 12_345);

    kill_mid_multipart(&s3, &mut daemon, rel, &old, parts(old.len()), false).await;
    let old_upload = s3.open_uploads();
    inbox.drop(rel, &new);
    s3.plan.clear();
    daemon.start();
    wait_until(TIMEOUT, "dump.bin is in done/ after the restart", || {
        inbox.is_done(rel)
    })
    .await;
    daemon.stop().await;

    assert!(
        s3.requests_for(Op::AbortMultipartUpload, &key) >= 1,
        "the upload of the old content {old_upload:?} was never aborted"
    );
    assert_eq!(
        s3.requests_for(Op::CreateMultipartUpload, &key),
        2,
        "one upload per content"
    );
    assert_nothing_open(&s3).await;
    assert_object(&s3, &key, &new).await;
    inbox.assert_done(rel, &new);
    assert_eq!(s3.puts(&key).await, 1, "objects written at {key}");
    assert_eq!(s3.list(BUCKET).await, vec![key], "objects in the bucket");
    inbox.assert_empty();
    daemon.inbox().assert_no_failures();
    assert_ledger_finished_only(&daemon, rel, &new).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_during_multipart_then_file_removed_aborts_the_upload_at_startup() {
    let s3 = TestS3::start().await;
    let mut daemon = Daemon::new(&s3, setup().concurrency(4));
    let inbox = daemon.inbox().clone();
    let rel = "gone.bin";
    let key = inbox.key(rel);
    let bytes = content(33, PART * 3);

    kill_mid_multipart(&s3, &mut daemon, rel, &bytes, parts(bytes.len()), false).await;
    fs::remove_file(inbox.file(rel)).expect("remove gone.bin");
    s3.plan.clear();
    daemon.start();
    wait_until(TIMEOUT, "the orphaned upload is aborted", || {
        s3.open_uploads().is_empty()
    })
    .await;
    daemon.stop().await;

    assert!(s3.requests_for(Op::AbortMultipartUpload, &key) >= 1);
    assert_nothing_open(&s3).await;
    assert_eq!(s3.list(BUCKET).await, Vec::<String>::new(), "objects");
    assert_eq!(s3.puts(&key).await, 0);
    let records = daemon.ledger_for(rel).await;
    assert!(
        records.iter().all(|r| r["upload_id"].is_null()),
        "the ledger still holds the aborted upload: {records:?}"
    );
}

async fn file_changed_during_multipart_upload(change: Change) {
    let s3 = TestS3::start().await;
    let mut daemon = Daemon::new(&s3, setup().concurrency(4));
    let inbox = daemon.inbox().clone();
    let rel = "growing.bin";
    let key = inbox.key(rel);
    let old = content(41, PART * 7 / 2);
    let n = parts(old.len());
    // Every part of the first round waits 2 s before the server reads it: the file changes
    // while they are on the way (the SDK's stall protection only steps in after 20 s).
    s3.push(
        Op::UploadPart,
        Fault::delay(Duration::from_secs(2)).for_key(&key).times(n),
    );
    daemon.start();
    inbox.drop(rel, &old);
    wait_until(TIMEOUT, "the first part request has arrived", || {
        s3.requests_for(Op::UploadPart, &key) >= 1
    })
    .await;

    let len = match change {
        Change::Append => PART / 2,
        _ => PART * 3,
    };
    let new = change.apply(&inbox.file(rel), &old, daemon.dir(), 42, len);
    wait_until(TIMEOUT, "growing.bin is in done/", || inbox.is_done(rel)).await;
    daemon.stop().await;

    inbox.assert_done(rel, &new);
    assert_eq!(
        inbox.done_files(),
        vec![rel.to_owned()],
        "done/ after a {change:?}"
    );
    assert_object(&s3, &key, &new).await;
    assert_eq!(
        s3.puts(&key).await,
        1,
        "objects completed at {key}: the upload of the old version must be discarded, not completed"
    );
    assert_eq!(s3.list(BUCKET).await, vec![key], "objects in the bucket");
    assert_nothing_open(&s3).await;
    inbox.assert_empty();
    daemon.inbox().assert_no_failures();
    assert_ledger_finished_only(&daemon, rel, &new).await;
    let records = daemon.ledger_for(rel).await;
    let old_sha = sha256_hex(&old);
    assert!(
        records
            .iter()
            .all(|r| r["sha256"] != old_sha.as_str() || r["state"] == "uploading"),
        "the old version is recorded as more than an attempt: {records:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn file_appended_during_multipart_upload_is_uploaded_again_whole() {
    file_changed_during_multipart_upload(Change::Append).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn file_rewritten_in_place_during_multipart_upload_is_uploaded_again_whole() {
    file_changed_during_multipart_upload(Change::RewriteInPlace).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn file_replaced_during_multipart_upload_is_uploaded_again_whole() {
    file_changed_during_multipart_upload(Change::Replace).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn part_upload_500_and_503_are_retried() {
    let s3 = TestS3::start().await;
    // One part at a time, so the failures in a row all hit the first part: more than the
    // SDK's own 3 attempts, so inboxd's per-part retry has to step in.
    let mut daemon = Daemon::new(&s3, setup().concurrency(1));
    let inbox = daemon.inbox().clone();
    let rel = "flaky parts.bin";
    let key = inbox.key(rel);
    let bytes = content(51, PART * 5 / 2);
    let n = parts(bytes.len());
    s3.push(
        Op::UploadPart,
        Fault::reject(S3ErrorCode::InternalError)
            .for_key(&key)
            .times(3),
    );
    s3.push(
        Op::UploadPart,
        Fault::reject(S3ErrorCode::SlowDown).for_key(&key).times(3),
    );
    // Stored by the server, but the client hears 500: the part is simply sent again.
    s3.push(
        Op::UploadPart,
        Fault::fail_after(S3ErrorCode::InternalError)
            .for_key(&key)
            .times(1),
    );
    let injected = 7;
    daemon.start();
    inbox.drop(rel, &bytes);
    wait_until(TIMEOUT, "the file is in done/", || inbox.is_done(rel)).await;
    daemon.stop().await;

    assert!(
        s3.plan.is_drained(),
        "not every injected error was consumed"
    );
    assert_eq!(
        s3.requests_for(Op::UploadPart, &key),
        n + injected,
        "UploadPart requests: every failure costs exactly one more request"
    );
    assert_eq!(s3.requests_for(Op::CreateMultipartUpload, &key), 1);
    assert_eq!(s3.requests_for(Op::CompleteMultipartUpload, &key), 1);
    assert_object(&s3, &key, &bytes).await;
    inbox.assert_done(rel, &bytes);
    assert_eq!(s3.puts(&key).await, 1);
    assert_nothing_open(&s3).await;
    inbox.assert_empty();
    daemon.inbox().assert_no_failures();
    assert_ledger_finished_only(&daemon, rel, &bytes).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn completion_503_is_retried_without_sending_parts_again() {
    let s3 = TestS3::start().await;
    let mut daemon = Daemon::new(&s3, setup());
    let inbox = daemon.inbox().clone();
    let rel = "complete later.bin";
    let key = inbox.key(rel);
    let bytes = content(52, PART * 2 + 1);
    let n = parts(bytes.len());
    // More than the SDK's own 3 attempts: the upload loop has to try the completion again.
    s3.push(
        Op::CompleteMultipartUpload,
        Fault::reject(S3ErrorCode::SlowDown).for_key(&key).times(4),
    );
    daemon.start();
    inbox.drop(rel, &bytes);
    wait_until(TIMEOUT, "the file is in done/", || inbox.is_done(rel)).await;
    daemon.stop().await;

    assert!(
        s3.plan.is_drained(),
        "not every injected error was consumed"
    );
    assert_eq!(
        s3.requests_for(Op::UploadPart, &key),
        n,
        "UploadPart requests: the stored parts are reused"
    );
    assert_eq!(s3.requests_for(Op::CreateMultipartUpload, &key), 1);
    assert_eq!(s3.requests_for(Op::CompleteMultipartUpload, &key), 5);
    assert_object(&s3, &key, &bytes).await;
    inbox.assert_done(rel, &bytes);
    assert_eq!(s3.puts(&key).await, 1);
    assert_nothing_open(&s3).await;
    daemon.inbox().assert_no_failures();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_part_on_completion_starts_a_fresh_upload_instead_of_failing() {
    // The server no longer has the parts the ledger remembers (lost, expired): the file is
    // fine, so it must not go to failed/. The old upload is aborted and a new one is made.
    let s3 = TestS3::start().await;
    let mut daemon = Daemon::new(&s3, setup());
    let inbox = daemon.inbox().clone();
    let rel = "lost parts.bin";
    let key = inbox.key(rel);
    let bytes = content(53, PART * 2 + 7);
    let n = parts(bytes.len());
    s3.push(
        Op::CompleteMultipartUpload,
        Fault::reject(S3ErrorCode::InvalidPart)
            .for_key(&key)
            .times(1),
    );
    daemon.start();
    inbox.drop(rel, &bytes);
    wait_until(TIMEOUT, "the file is in done/", || inbox.is_done(rel)).await;
    daemon.stop().await;

    assert!(
        s3.plan.is_drained(),
        "the injected InvalidPart was not consumed"
    );
    assert_eq!(
        s3.requests_for(Op::CreateMultipartUpload, &key),
        2,
        "a fresh upload"
    );
    assert_eq!(
        s3.requests_for(Op::AbortMultipartUpload, &key),
        1,
        "the old one aborted"
    );
    assert_eq!(
        s3.requests_for(Op::UploadPart, &key),
        2 * n,
        "every part sent again"
    );
    assert_object(&s3, &key, &bytes).await;
    inbox.assert_done(rel, &bytes);
    assert_nothing_open(&s3).await;
    daemon.inbox().assert_no_failures();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_during_multipart_exits_in_grace_and_the_restart_resumes() {
    let s3 = TestS3::start().await;
    let grace = Duration::from_secs(2);
    let mut daemon = Daemon::new(&s3, setup().concurrency(2).grace("2s"));
    let inbox = daemon.inbox().clone();
    let rel = "archive.tar";
    let key = inbox.key(rel);
    let bytes = content(61, PART * 7 / 2);
    let n = parts(bytes.len());
    stall_parts_after(&s3, &key, 1);
    daemon.start();
    inbox.drop(rel, &bytes);
    // Part 1 stored, parts 2 and 3 stalled, part 4 waiting for an upload slot.
    wait_until(TIMEOUT, "one part stored, two stalled", || {
        !s3.stored_parts().is_empty() && s3.requests_for(Op::UploadPart, &key) >= 3
    })
    .await;
    let t0 = Instant::now();
    daemon.sigterm();
    let status = daemon.wait_exit(grace + Duration::from_secs(20)).await;
    let took = t0.elapsed();
    assert!(status.success(), "exit status after SIGTERM: {status}");
    assert!(
        took < grace + Duration::from_secs(3),
        "shutdown took {took:?} with a grace of {grace:?}"
    );
    assert!(!s3.exists(BUCKET, &key), "completed with stalled parts");
    inbox.assert_holds(&[rel]);
    assert!(
        inbox.done_files().is_empty(),
        "done/: {:?}",
        inbox.done_files()
    );
    let first_run = s3.requests_for(Op::UploadPart, &key);

    s3.plan.clear();
    daemon.start();
    wait_until(TIMEOUT, "archive.tar is in done/ after the restart", || {
        inbox.is_done(rel)
    })
    .await;
    daemon.stop().await;

    let second_run = s3.requests_for(Op::UploadPart, &key) - first_run;
    assert!(
        second_run < n,
        "the restart sent {second_run} of {n} parts: the stored part was sent again"
    );
    assert_eq!(
        s3.requests_for(Op::CreateMultipartUpload, &key),
        1,
        "the restart should resume the upload, not start a new one"
    );
    assert_object(&s3, &key, &bytes).await;
    inbox.assert_done(rel, &bytes);
    assert_eq!(s3.puts(&key).await, 1);
    assert_nothing_open(&s3).await;
    inbox.assert_empty();
    daemon.inbox().assert_no_failures();
    assert_ledger_finished_only(&daemon, rel, &bytes).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_lets_a_multipart_upload_in_flight_finish() {
    let s3 = TestS3::start().await;
    let mut daemon = Daemon::new(&s3, setup().concurrency(4));
    let inbox = daemon.inbox().clone();
    let rel = "in flight.bin";
    let key = inbox.key(rel);
    let bytes = content(62, PART * 5 / 2);
    let n = parts(bytes.len());
    s3.push(
        Op::UploadPart,
        Fault::delay(Duration::from_secs(1)).for_key(&key).times(n),
    );
    daemon.start();
    inbox.drop(rel, &bytes);
    wait_until(TIMEOUT, "every part is on the way", || {
        s3.requests_for(Op::UploadPart, &key) >= n
    })
    .await;
    let t0 = Instant::now();
    daemon.sigterm();
    // grace is 10 s in the test config.
    let status = daemon.wait_exit(Duration::from_secs(20)).await;
    let took = t0.elapsed();
    assert!(status.success(), "exit status after SIGTERM: {status}");
    assert!(took < Duration::from_secs(12), "shutdown took {took:?}");

    inbox.assert_done(rel, &bytes);
    inbox.assert_empty();
    assert_object(&s3, &key, &bytes).await;
    assert_eq!(s3.puts(&key).await, 1);
    assert_eq!(s3.requests_for(Op::UploadPart, &key), n);
    assert_nothing_open(&s3).await;
    daemon.inbox().assert_no_failures();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn different_large_file_at_an_existing_key_is_renamed_and_leaves_nothing_open() {
    let s3 = TestS3::start().await;
    let mut daemon = Daemon::new(&s3, setup());
    let inbox = daemon.inbox().clone();
    let rel = "movie.mp4";
    let key = inbox.key(rel);
    let old = content(71, PART * 2 + 100);
    let new = content(72, PART * 2 + 200);
    daemon.start();
    inbox.drop(rel, &old);
    wait_until(TIMEOUT, "movie.mp4 is in done/", || inbox.is_done(rel)).await;
    inbox.drop(rel, &new);
    wait_until(TIMEOUT, "the second movie.mp4 is in done/", || {
        inbox.in_done("movie (1).mp4") && !inbox.in_inbox(rel)
    })
    .await;
    daemon.stop().await;

    let renamed = inbox.key(&format!("movie.{}.mp4", &sha256_hex(&new)[..12]));
    assert_object(&s3, &key, &old).await;
    assert_object(&s3, &renamed, &new).await;
    inbox.assert_done(rel, &old);
    inbox.assert_done("movie (1).mp4", &new);
    let mut want = vec![key.clone(), renamed.clone()];
    want.sort();
    assert_eq!(s3.list(BUCKET).await, want, "objects in the bucket");
    assert_eq!(s3.puts(&key).await, 1, "objects written at {key}");
    assert_nothing_open(&s3).await;
    daemon.inbox().assert_no_failures();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overwrite_replaces_a_large_object() {
    let s3 = TestS3::start().await;
    let mut daemon = Daemon::new(&s3, setup().on_conflict("overwrite"));
    let inbox = daemon.inbox().clone();
    let rel = "image.iso";
    let key = inbox.key(rel);
    let old = content(81, PART * 2 + 100);
    let new = content(82, PART * 3 + 7);
    daemon.start();
    inbox.drop(rel, &old);
    wait_until(TIMEOUT, "image.iso is in done/", || inbox.is_done(rel)).await;
    inbox.drop(rel, &new);
    wait_until(TIMEOUT, "the second image.iso is in done/", || {
        inbox.in_done("image (1).iso") && !inbox.in_inbox(rel)
    })
    .await;
    daemon.stop().await;

    assert_object(&s3, &key, &new).await;
    inbox.assert_done(rel, &old);
    inbox.assert_done("image (1).iso", &new);
    assert_eq!(s3.list(BUCKET).await, vec![key.clone()], "objects");
    assert_eq!(s3.puts(&key).await, 2, "objects written at {key}");
    assert_nothing_open(&s3).await;
    daemon.inbox().assert_no_failures();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn permanent_part_error_fails_the_file_and_aborts_its_upload() {
    let s3 = TestS3::start().await;
    let mut daemon = Daemon::new(&s3, setup());
    let inbox = daemon.inbox().clone();
    let rel = "rejected.bin";
    let key = inbox.key(rel);
    let bytes = content(91, PART * 2 + 10);
    let small = content(92, 20_000);
    s3.push(
        Op::UploadPart,
        Fault::reject(S3ErrorCode::InvalidArgument)
            .for_key(&key)
            .always(),
    );
    daemon.start();
    inbox.drop(rel, &bytes);
    inbox.drop("small.txt", &small);
    wait_until(
        TIMEOUT,
        "rejected.bin in failed/, small.txt in done/",
        || inbox.is_failed(rel) && inbox.is_done("small.txt"),
    )
    .await;
    daemon.stop().await;

    let reason = inbox.assert_failed(rel);
    assert!(
        reason.contains("InvalidArgument"),
        "the reason does not name the error:\n{reason}"
    );
    let kept = fs::read(inbox.failed.join(rel)).expect("failed copy");
    assert_bytes_eq("failed/rejected.bin", &kept, &bytes);
    assert!(
        s3.requests_for(Op::AbortMultipartUpload, &key) >= 1,
        "the upload of a failed file was not aborted"
    );
    assert_nothing_open(&s3).await;
    assert!(!s3.exists(BUCKET, &key));
    inbox.assert_done("small.txt", &small);
    inbox.assert_empty();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn part_errors_beyond_max_attempts_defer_and_the_upload_resumes_later() {
    let s3 = TestS3::start().await;
    let mut daemon = Daemon::new(
        &s3,
        setup()
            .concurrency(1)
            .set("upload", "max_attempts", "2")
            .set("upload", "retry_later", "\"1s\"")
            .set("watch", "rescan", "\"500ms\""),
    );
    let inbox = daemon.inbox().clone();
    let rel = "patient.bin";
    let key = inbox.key(rel);
    let bytes = content(93, PART * 7 / 2);
    let n = parts(bytes.len());
    // Part 1 goes through, everything after it is throttled until the test clears the plan.
    s3.push(
        Op::UploadPart,
        Fault::delay(Duration::ZERO).for_key(&key).times(1),
    );
    s3.push(
        Op::UploadPart,
        Fault::reject(S3ErrorCode::SlowDown).for_key(&key).always(),
    );
    daemon.start();
    inbox.drop(rel, &bytes);
    wait_until(TIMEOUT, "patient.bin is deferred", || {
        support::strip_ansi(&daemon.stdout())
            .lines()
            .any(|l| l.contains("tried again later") && l.contains(rel))
    })
    .await;
    inbox.assert_holds(&[rel]);
    inbox.assert_no_failures();
    assert_eq!(
        s3.open_uploads().len(),
        1,
        "a deferred upload should stay open to be resumed"
    );
    let parts_before = s3.requests_for(Op::UploadPart, &key);

    s3.plan.clear();
    wait_until(TIMEOUT, "patient.bin is in done/ once S3 recovers", || {
        inbox.is_done(rel)
    })
    .await;
    daemon.stop().await;

    let after = s3.requests_for(Op::UploadPart, &key) - parts_before;
    assert_eq!(
        after,
        n - 1,
        "UploadPart requests after recovery: part 1, stored before the errors, is reused"
    );
    assert_eq!(
        s3.requests_for(Op::CreateMultipartUpload, &key),
        1,
        "the deferred upload should be resumed, not started again"
    );
    assert_object(&s3, &key, &bytes).await;
    inbox.assert_done(rel, &bytes);
    assert_eq!(s3.puts(&key).await, 1);
    assert_nothing_open(&s3).await;
    inbox.assert_empty();
    daemon.inbox().assert_no_failures();
}

/// With `big` dropped into `daemon`'s inbox (concurrency 4) and the server holding their
/// parts for minutes (see [`stall_parts_after`]): waits until they hold the three part slots
/// that concurrency 4 leaves them, drops five small files, and checks that these go out whole
/// at once while the large files stay held.
async fn small_files_go_while_large_ones_are_held(
    s3: &TestS3,
    daemon: &Daemon,
    big: &[(String, Vec<u8>)],
    seed: u64,
) {
    let inbox = daemon.inbox();
    let parts_in_flight = || -> usize {
        big.iter()
            .map(|(rel, _)| s3.requests_for(Op::UploadPart, &inbox.key(rel)))
            .sum()
    };
    wait_until(TIMEOUT, "large files holding their part slots", || {
        parts_in_flight() >= 3
    })
    .await;
    let small: Vec<(String, Vec<u8>)> = (0..5)
        .map(|i| (format!("small {i}.pdf"), content(seed + i, 20_000)))
        .collect();
    for (rel, bytes) in &small {
        inbox.drop(rel, bytes);
    }
    wait_until(TIMEOUT, "every small file in done/", || {
        small.iter().all(|(rel, _)| inbox.is_done(rel))
    })
    .await;
    for (rel, bytes) in &small {
        inbox.assert_done(rel, bytes);
        assert_object(s3, &inbox.key(rel), bytes).await;
    }
    // The large files are still held at the server: the small ones did not wait for them.
    for (rel, _) in big {
        assert!(
            inbox.in_inbox(rel),
            "{rel} left the inbox although its parts are held"
        );
    }
    assert_eq!(
        parts_in_flight(),
        3,
        "parts in flight: three quarters of concurrency 4"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_files_never_take_every_upload_slot() {
    // Two large files of four parts each, dropped into a running daemon: their parts may
    // hold only three of the four slots.
    let s3 = TestS3::start().await;
    let mut daemon = Daemon::new(&s3, setup().concurrency(4));
    let inbox = daemon.inbox().clone();
    let big = [
        ("big one.bin".to_owned(), content(61, PART * 4)),
        ("big two.bin".to_owned(), content(62, PART * 4)),
    ];
    for (rel, _) in &big {
        stall_parts_after(&s3, &inbox.key(rel), 0);
    }
    daemon.start();
    for (rel, bytes) in &big {
        inbox.drop(rel, bytes);
    }
    small_files_go_while_large_ones_are_held(&s3, &daemon, &big, 70).await;
    daemon.kill().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_large_files_never_holds_back_small_ones() {
    // Ten large files waiting at startup, more than the upload stage starts at once
    // (concurrency 4: eight files). Large files start in their own lane (three, as many as
    // may send parts), the rest wait without taking a slot, so small files dropped
    // afterwards still go out at once. (Before, the ten took every admission slot and the
    // small files never went while the large ones were held.)
    let s3 = TestS3::start().await;
    let mut daemon = Daemon::new(&s3, setup().concurrency(4).batch_max_files(1));
    let inbox = daemon.inbox().clone();
    let big: Vec<(String, Vec<u8>)> = (0..10)
        .map(|i| (format!("big {i}.bin"), content(600 + i, PART + 1_000)))
        .collect();
    for (rel, bytes) in &big {
        stall_parts_after(&s3, &inbox.key(rel), 0);
        inbox.drop(rel, bytes);
    }
    daemon.start();
    small_files_go_while_large_ones_are_held(&s3, &daemon, &big, 620).await;
    daemon.kill().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ledger_that_cannot_record_the_upload_defers_the_file_and_never_fails_it() {
    // The ledger refuses to record the upload id (injected): a problem of the daemon, not of
    // the file. The file stays in the inbox, no part goes out for an upload the ledger does
    // not know, the created upload is aborted, and with a working ledger the file goes out.
    let s3 = TestS3::start().await;
    let mut daemon = Daemon::new(&s3, setup());
    let inbox = daemon.inbox().clone();
    let rel = "scan.tiff";
    let key = inbox.key(rel);
    let bytes = content(91, PART * 2 + 1_000);
    inbox.drop(rel, &bytes);
    daemon.start_with_env(&[("INBOXD_FAILPOINT", "ledger-record-upload-id")]);
    wait_until(TIMEOUT, "scan.tiff deferred for the ledger", || {
        daemon.stdout().contains("the ledger cannot be written")
    })
    .await;
    daemon.stop().await;

    inbox.assert_holds(&[rel]);
    assert_eq!(inbox.failed_files(), Vec::<String>::new(), "failed/");
    assert!(
        s3.requests_for(Op::CreateMultipartUpload, &key) >= 1,
        "the upload was never created: the failpoint was not reached"
    );
    assert_eq!(
        s3.requests_for(Op::UploadPart, &key),
        0,
        "parts sent for an upload the ledger does not know"
    );
    assert_nothing_open(&s3).await;

    daemon.start();
    wait_until(TIMEOUT, "scan.tiff is in done/", || inbox.is_done(rel)).await;
    daemon.stop().await;
    inbox.assert_done(rel, &bytes);
    assert_object(&s3, &key, &bytes).await;
    assert_eq!(s3.puts(&key).await, 1, "objects written at {key}");
    assert_nothing_open(&s3).await;
    inbox.assert_empty();
    assert_ledger_finished_only(&daemon, rel, &bytes).await;
}

/// systemd's start timeout: the restart after a crash re-hashes the file of the interrupted
/// multipart upload before it is ready, and says so (EXTEND_TIMEOUT_USEC) before READY=1; a
/// start with nothing to recover goes straight to READY=1.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_startup_recovery_extends_the_start_timeout_before_ready() {
    let s3 = TestS3::start().await;
    let mut daemon = Daemon::new(&s3, setup().concurrency(4));
    let inbox = daemon.inbox().clone();
    let rel = "big.img";
    let bytes = content(31, PART * 4);
    kill_mid_multipart(&s3, &mut daemon, rel, &bytes, parts(bytes.len()), true).await;
    s3.plan.clear();

    let dir = daemon.dir().to_path_buf();
    let messages = |sock: &str| {
        let path = dir.join(sock);
        (
            support::notify::notify_socket(&path),
            path.to_string_lossy().into_owned(),
        )
    };
    let (got, sock) = messages("notify1.sock");
    daemon.start_with_env(&[("NOTIFY_SOCKET", &sock)]);
    wait_until(TIMEOUT, "READY=1", || {
        got.lock()
            .unwrap()
            .iter()
            .any(|(_, m)| m.contains("READY=1"))
    })
    .await;
    let sent: Vec<String> = got.lock().unwrap().iter().map(|(_, m)| m.clone()).collect();
    let ready = sent
        .iter()
        .position(|m| m.lines().any(|l| l == "READY=1"))
        .expect("READY=1");
    let extended = sent.iter().position(|m| {
        m.lines().any(|l| {
            l.strip_prefix("EXTEND_TIMEOUT_USEC=")
                .and_then(|v| v.parse::<u64>().ok())
                .is_some_and(|us| us >= 10_000_000)
        })
    });
    assert!(
        extended.is_some_and(|e| e < ready),
        "no EXTEND_TIMEOUT_USEC of 10 s or more before READY=1: {sent:#?}"
    );
    wait_until(TIMEOUT, "big.img is in done/", || inbox.is_done(rel)).await;
    daemon.stop().await;
    assert_object(&s3, &inbox.key(rel), &bytes).await;
    inbox.assert_done(rel, &bytes);

    // Nothing interrupted now: ready without asking for more time.
    let (got, sock) = messages("notify2.sock");
    daemon.start_with_env(&[("NOTIFY_SOCKET", &sock)]);
    wait_until(TIMEOUT, "READY=1 again", || {
        got.lock()
            .unwrap()
            .iter()
            .any(|(_, m)| m.contains("READY=1"))
    })
    .await;
    daemon.stop().await;
    let sent: Vec<String> = got.lock().unwrap().iter().map(|(_, m)| m.clone()).collect();
    assert!(
        !sent.iter().any(|m| m.contains("EXTEND_TIMEOUT_USEC")),
        "extended a start with nothing to recover: {sent:#?}"
    );
}

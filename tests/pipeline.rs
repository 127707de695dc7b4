//! The happy path end to end: files of every size and name land byte-identical in the bucket and
//! in done/, whatever must be left alone is left alone, and half-written files are never sent.

mod support;

use std::time::Duration;

use support::s3::TestS3;
use support::{BUCKET, Daemon, Setup, TIMEOUT, content, fingerprint, sha256_hex, wait_until};

/// Waits until every file has left the inbox for done/.
async fn wait_all_done(daemon: &Daemon, rels: &[&str]) {
    let inbox = daemon.inbox();
    wait_until(TIMEOUT, format!("{rels:?} are in done/"), || {
        rels.iter().all(|rel| inbox.is_done(rel))
    })
    .await;
}

/// Object, done/ copy and x-amz-meta-sha256 of every file match its bytes.
async fn assert_uploaded(s3: &TestS3, daemon: &Daemon, files: &[(&str, Vec<u8>)]) {
    let inbox = daemon.inbox();
    for (rel, bytes) in files {
        let key = inbox.key(rel);
        let object = s3
            .get(BUCKET, &key)
            .await
            .unwrap_or_else(|| panic!("object {key} missing"));
        support::assert_bytes_eq(format!("object {key}"), &object, bytes);
        inbox.assert_done(rel, bytes);
        let meta = s3.head_meta(BUCKET, &key).await.expect("object metadata");
        assert_eq!(
            meta.get("sha256").map(String::as_str),
            Some(sha256_hex(bytes).as_str()),
            "x-amz-meta-sha256 of {key}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn files_present_at_start_land_byte_identical_and_ignored_files_stay() {
    let s3 = TestS3::start().await;
    let mut daemon = Daemon::new(&s3, Setup::new());
    let inbox = daemon.inbox().clone();

    let uploads: Vec<(&str, Vec<u8>)> = vec![
        ("one.txt", content(1, 1)),
        ("docs/hundred.bin", content(2, 100 * 1024)),
        (
            "Rechnungen/März/Übersicht ñ 東京.pdf",
            content(3, 3 * 1024 * 1024),
        ),
    ];
    // Never uploaded, never moved, never modified.
    let stays: Vec<(&str, Vec<u8>)> = vec![
        ("empty.bin", Vec::new()),
        ("Rechnungen/leer.pdf", Vec::new()),
        ("x.tmp", content(10, 300)),
        (".hidden", content(11, 300)),
        ("y.part", content(12, 300)),
        ("~$doc.docx", content(13, 300)),
        ("dl.crdownload", content(14, 300)),
        (".~lock.sheet.ods#", content(15, 300)),
        ("docs/.sync/state.bin", content(16, 300)),
        ("Rechnungen/März/~$entwurf.docx", content(17, 300)),
    ];
    for (rel, bytes) in uploads.iter().chain(&stays) {
        inbox.drop(rel, bytes);
    }
    let before: Vec<_> = stays
        .iter()
        .map(|(rel, _)| fingerprint(&inbox.file(rel)))
        .collect();

    daemon.start();
    let rels: Vec<&str> = uploads.iter().map(|(rel, _)| *rel).collect();
    wait_all_done(&daemon, &rels).await;
    // Stop cleanly so nothing is in flight while we look.
    daemon.stop().await;

    assert_uploaded(&s3, &daemon, &uploads).await;
    let mut want_keys: Vec<String> = rels.iter().map(|rel| inbox.key(rel)).collect();
    want_keys.sort();
    assert_eq!(s3.list(BUCKET).await, want_keys, "objects in the bucket");
    for rel in &rels {
        assert_eq!(
            s3.puts(&inbox.key(rel)).await,
            1,
            "successful PUTs of {rel}"
        );
    }

    let stay_rels: Vec<&str> = stays.iter().map(|(rel, _)| *rel).collect();
    inbox.assert_holds(&stay_rels);
    for ((rel, _), before) in stays.iter().zip(&before) {
        assert_eq!(&fingerprint(&inbox.file(rel)), before, "{rel} was modified");
    }
    let mut done = inbox.done_files();
    done.sort();
    let mut want_done: Vec<String> = rels.iter().map(|r| (*r).to_owned()).collect();
    want_done.sort();
    assert_eq!(done, want_done, "files in done/");
    inbox.assert_no_failures();

    // One summary line per batch, with the documented fields.
    let summaries = daemon.batch_summaries();
    assert!(
        !summaries.is_empty(),
        "no `batch finished` line in stdout:\n{}",
        daemon.all_stdout()
    );
    for fields in &summaries {
        for name in ["files", "uploaded", "failed", "duration_ms"] {
            assert!(
                fields.iter().any(|(k, _)| k == name),
                "batch summary without {name}=: {fields:?}"
            );
        }
    }
    assert_eq!(
        daemon.batch_total("uploaded"),
        3,
        "uploaded= over all batches"
    );
    assert_eq!(daemon.batch_total("failed"), 0, "failed= over all batches");

    // The ledger remembers every upload.
    let ledger = daemon.ledger().await;
    for (rel, bytes) in &uploads {
        let rec = ledger
            .iter()
            .find(|r| r["rel_path"] == *rel)
            .unwrap_or_else(|| panic!("no ledger record for {rel}: {ledger:?}"));
        assert_eq!(rec["state"], "finished", "{rec}");
        assert_eq!(rec["sha256"], sha256_hex(bytes).as_str(), "{rec}");
        assert_eq!(rec["key"], inbox.key(rel).as_str(), "{rec}");
        assert_eq!(rec["bucket"], BUCKET, "{rec}");
        assert_eq!(rec["size"], bytes.len() as u64, "{rec}");
        assert_eq!(rec["inbox"], inbox.name.as_str(), "{rec}");
    }

    // stdout is a file here, not a terminal: plain `key=value` text, no colour codes.
    let stdout = daemon.all_stdout();
    let line = stdout
        .lines()
        .find(|l| l.contains("batch finished"))
        .unwrap_or_default();
    assert!(
        !stdout.contains('\x1b'),
        "ANSI escape codes in stdout although it is not a terminal: {line:?}"
    );
    assert!(
        line.contains(" files="),
        "summary line without plain files=: {line:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn files_in_folders_created_after_start_are_uploaded() {
    let s3 = TestS3::start().await;
    let mut daemon = Daemon::new(&s3, Setup::new());
    let inbox = daemon.inbox().clone();
    daemon.start();

    // Proves the watcher is up before the interesting part.
    let first = content(20, 5000);
    inbox.drop("first.txt", &first);
    wait_all_done(&daemon, &["first.txt"]).await;

    // A deep folder created and filled at once: the new sub-folders race the watcher.
    let mut files: Vec<(String, Vec<u8>)> = Vec::new();
    for (i, rel) in [
        "new/a.bin",
        "new/deeper/b.bin",
        "new/deeper/still/c ü.bin",
        "other/d.bin",
    ]
    .iter()
    .enumerate()
    {
        let bytes = content(30 + i as u64, 10_000 + i * 777);
        inbox.drop(rel, &bytes);
        files.push(((*rel).to_owned(), bytes));
    }
    // A folder prepared elsewhere and moved in whole: no event for the files inside it.
    let staging = daemon.dir().join("staging/moved");
    std::fs::create_dir_all(staging.join("inner")).expect("staging dir");
    let moved = [
        ("moved/x.bin", content(40, 2048)),
        ("moved/inner/y.bin", content(41, 4096)),
    ];
    for (rel, bytes) in &moved {
        let path = daemon.dir().join("staging").join(rel);
        std::fs::write(path, bytes).expect("write staging file");
    }
    std::fs::rename(&staging, inbox.file("moved")).expect("move folder into inbox");
    files.extend(moved.iter().map(|(r, b)| ((*r).to_owned(), b.clone())));

    let rels: Vec<&str> = files.iter().map(|(r, _)| r.as_str()).collect();
    wait_all_done(&daemon, &rels).await;
    let files: Vec<(&str, Vec<u8>)> = files.iter().map(|(r, b)| (r.as_str(), b.clone())).collect();
    assert_uploaded(&s3, &daemon, &files).await;
    inbox.assert_done("first.txt", &first);
    inbox.assert_empty();
    assert_eq!(s3.list(BUCKET).await.len(), files.len() + 1, "objects");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slowly_written_file_is_uploaded_once_and_whole() {
    let s3 = TestS3::start().await;
    let mut daemon = Daemon::new(&s3, Setup::new().settle("1s"));
    let inbox = daemon.inbox().clone();
    daemon.start();

    // ~3 s of writing, a pause of 300 ms between appends: far shorter than settle.
    let bytes = content(50, 200 * 1024);
    inbox
        .drop_slowly("scans/slow.pdf", &bytes, 11, Duration::from_millis(300))
        .await;
    wait_all_done(&daemon, &["scans/slow.pdf"]).await;

    let key = inbox.key("scans/slow.pdf");
    let object = s3.get(BUCKET, &key).await.expect("object");
    support::assert_bytes_eq("object", &object, &bytes);
    inbox.assert_done("scans/slow.pdf", &bytes);
    assert_eq!(s3.puts(&key).await, 1, "successful PUTs of the slow file");
    assert_eq!(s3.list(BUCKET).await, vec![key], "objects in the bucket");
    inbox.assert_no_failures();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backlog_in_one_inbox_never_holds_back_another_inbox() {
    // Inbox 0 gets 40 files at once, and every PUT takes a second at the server, so with
    // concurrency 2 its backlog lasts about 20 s. A file dropped into inbox 1 afterwards goes
    // out at the next free slot, not after the backlog: the inboxes take turns.
    let s3 = TestS3::start().await;
    s3.push(
        support::Op::PutObject,
        support::Fault::delay(Duration::from_secs(1)).always(),
    );
    let mut daemon = Daemon::new(&s3, Setup::new().inboxes(2).concurrency(2));
    let (busy, quiet) = (daemon.inboxes()[0].clone(), daemon.inboxes()[1].clone());
    let backlog: Vec<(String, Vec<u8>)> = (0..40)
        .map(|i| {
            (
                format!("scan {i:02}.pdf"),
                content(300 + i, 3_000 + i as usize),
            )
        })
        .collect();
    for (rel, bytes) in &backlog {
        busy.drop(rel, bytes);
    }
    daemon.start();
    wait_until(TIMEOUT, "the backlog's first uploads under way", || {
        s3.requests(support::Op::PutObject) >= 2
    })
    .await;
    let lone = content(399, 5_000);
    quiet.drop("lone.pdf", &lone);
    wait_until(TIMEOUT, "lone.pdf in done/", || quiet.is_done("lone.pdf")).await;
    let left = busy.files().len();
    assert!(
        left >= 20,
        "only {left} of the 40 backlog files were still waiting when the other inbox's file \
         was done: it waited for the backlog"
    );
    quiet.assert_done("lone.pdf", &lone);
    support::assert_object(&s3, &quiet.key("lone.pdf"), &lone).await;

    // Without the delay the backlog drains, every file whole.
    s3.plan.clear();
    wait_until(TIMEOUT, "the backlog in done/", || {
        backlog.iter().all(|(rel, _)| busy.is_done(rel))
    })
    .await;
    for (rel, bytes) in &backlog {
        busy.assert_done(rel, bytes);
        support::assert_object(&s3, &busy.key(rel), bytes).await;
    }
    daemon.stop().await;
}

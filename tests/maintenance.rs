//! Ledger upkeep while the daemon runs: multipart uploads left idle by files that went away
//! are aborted without waiting for a restart, and uploads whose file is still there are kept.
//! (Uses the library directly: the real schedule is hourly and a day of idleness.)

mod support;

use std::fs;
use std::time::{Duration, SystemTime};

use inboxd::config::{InboxSettings, WatchMode};
use inboxd::ledger::{Ledger, Record};
use inboxd::upkeep::cleanup;
use support::BUCKET;
use support::s3::TestS3;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_uploads_of_vanished_files_are_aborted_and_the_others_kept() {
    let s3 = TestS3::start().await;
    let client = s3.client();
    let dir = tempfile::tempdir().expect("tempdir");
    let inbox_dir = dir.path().join("in");
    fs::create_dir(&inbox_dir).expect("inbox");
    let ledger = Ledger::open(&dir.path().join("state")).expect("ledger");
    let mut ids = Vec::new();
    for (name, present) in [("gone.bin", false), ("kept.bin", true)] {
        let created = client
            .create_multipart_upload()
            .bucket(BUCKET)
            .key(name)
            .send()
            .await
            .expect("create multipart upload");
        let id = created.upload_id().expect("upload id").to_owned();
        if present {
            fs::write(inbox_dir.join(name), vec![7u8; 1000]).expect("write");
        }
        let mut rec = Record::new("in", name, Some("00"), 1000, BUCKET);
        rec.upload_id = Some(id.clone());
        rec.key = Some(name.to_owned());
        rec.part_size = Some(5 * 1024 * 1024);
        ledger.put(&mut rec).expect("put");
        ids.push(id);
    }
    let inboxes = vec![InboxSettings {
        name: "in".into(),
        path: inbox_dir.clone(),
        done_dir: dir.path().join("done"),
        failed_dir: dir.path().join("failed"),
        bucket: BUCKET.into(),
        prefix: String::new(),
        settle: Duration::from_millis(100),
        watch: WatchMode::Events,
        ignore: Vec::new(),
        fs_timeout: Duration::from_secs(30),
        max_file_size: None,
        object: Default::default(),
        shared: false,
        check_format: true,
        incomplete_after: Duration::from_secs(3600),
    }];
    let mut open = s3.open_uploads();
    open.sort();
    let mut want = ids.clone();
    want.sort();
    assert_eq!(open, want, "uploads open at the server before the check");

    // Touched within the last hour: not idle, nothing happens.
    let hour_ago = SystemTime::now() - Duration::from_secs(3600);
    cleanup(&client, &ledger, &inboxes, Some(hour_ago))
        .await
        .expect("cleanup");
    assert_eq!(s3.open_uploads().len(), 2, "a recent upload was aborted");

    // Idle: the upload of the vanished file is aborted and forgotten; the other stays.
    let later = SystemTime::now() + Duration::from_secs(3600);
    cleanup(&client, &ledger, &inboxes, Some(later))
        .await
        .expect("cleanup");
    assert_eq!(s3.open_uploads(), vec![ids[1].clone()], "uploads left open");
    let gone = ledger
        .get("in", "gone.bin", Some("00"))
        .expect("get")
        .expect("record");
    assert_eq!(gone.upload_id, None, "{gone:?}");
    let kept = ledger
        .get("in", "kept.bin", Some("00"))
        .expect("get")
        .expect("record");
    assert_eq!(kept.upload_id.as_deref(), Some(ids[1].as_str()), "{kept:?}");
}

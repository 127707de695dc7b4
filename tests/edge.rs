//! Edge cases: symlinks and non-UTF-8 names go to failed/, on_conflict "fail" and
//! "overwrite", files deferred after too many transient errors, polling, SIGHUP, and `once`
//! with S3 unreachable.

mod support;

use std::ffi::{OsStr, OsString};
use std::fs;
use std::os::unix::ffi::OsStrExt as _;
use std::path::Path;
use std::time::{Duration, Instant};

use support::assert_object;
use support::s3::TestS3;
use support::{
    BUCKET, Daemon, Op, Setup, TIMEOUT, assert_bytes_eq, content, field, fingerprint, sha256_hex,
    strip_ansi, toml_str, wait_until,
};

/// `<path>.reason.txt`, beside a file in failed/.
fn reason_path(path: &Path) -> std::path::PathBuf {
    let mut name: OsString = path.as_os_str().to_owned();
    name.push(".reason.txt");
    name.into()
}

// ---------------------------------------------------------------------------------------------
// Things that are not regular files with UTF-8 names
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn symlinks_go_to_failed_and_their_targets_are_left_alone() {
    let s3 = TestS3::start().await;
    let mut daemon = Daemon::new(&s3, Setup::new());
    let inbox = daemon.inbox().clone();
    let target = daemon.dir().join("elsewhere/secret.pdf");
    fs::create_dir_all(target.parent().unwrap()).expect("create target folder");
    fs::write(&target, content(1, 40_000)).expect("write target");
    let before = fingerprint(&target);
    let real = content(2, 30_000);
    daemon.start();

    std::os::unix::fs::symlink(&target, inbox.file("link.pdf")).expect("symlink");
    std::os::unix::fs::symlink(daemon.dir().join("nowhere"), inbox.file("dangling.pdf"))
        .expect("dangling symlink");
    inbox.drop("real.pdf", &real);
    let in_failed = |rel: &str| {
        fs::symlink_metadata(inbox.failed.join(rel)).is_ok()
            && reason_path(&inbox.failed.join(rel)).is_file()
            && fs::symlink_metadata(inbox.file(rel)).is_err()
    };
    wait_until(
        TIMEOUT,
        "both links in failed/ and real.pdf in done/",
        || in_failed("link.pdf") && in_failed("dangling.pdf") && inbox.is_done("real.pdf"),
    )
    .await;
    daemon.stop().await;

    for (rel, points_to) in [
        ("link.pdf", target.clone()),
        ("dangling.pdf", daemon.dir().join("nowhere")),
    ] {
        let moved = inbox.failed.join(rel);
        let meta = fs::symlink_metadata(&moved).expect("moved link");
        assert!(
            meta.file_type().is_symlink(),
            "failed/{rel} is not the link itself"
        );
        assert_eq!(
            fs::read_link(&moved).expect("read link"),
            points_to,
            "failed/{rel} points elsewhere"
        );
        // (`Inbox::assert_failed` follows the link, which dangles for one of them.)
        let reason = fs::read_to_string(reason_path(&moved)).expect("reason file");
        assert!(
            reason.contains("symbolic link"),
            "reason for {rel} does not say why:\n{reason}"
        );
        assert_eq!(
            s3.requests_for(Op::PutObject, &inbox.key(rel)),
            0,
            "{rel} was sent to S3"
        );
    }
    assert_eq!(fingerprint(&target), before, "the link target was touched");
    assert!(
        !daemon.dir().join("nowhere").exists(),
        "the dangling target was created"
    );
    inbox.assert_done("real.pdf", &real);
    assert_eq!(
        s3.list(BUCKET).await,
        vec![inbox.key("real.pdf")],
        "objects in the bucket"
    );
    inbox.assert_empty();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn names_that_are_not_utf8_go_to_failed() {
    let s3 = TestS3::start().await;
    let mut daemon = Daemon::new(&s3, Setup::new());
    let inbox = daemon.inbox().clone();
    let bad_file = OsStr::from_bytes(b"scan-\xff\xfe.pdf");
    let bad_dir = OsStr::from_bytes(b"Ordner-\xe4");
    let bad_nested = Path::new(bad_dir).join("inside.pdf");
    let bad = content(3, 20_000);
    let bad2 = content(4, 21_000);
    let good = [
        ("good.pdf", content(5, 30_000)),
        ("sub/Übersicht ñ.pdf", content(6, 31_000)),
    ];
    daemon.start();

    fs::write(inbox.path.join(bad_file), &bad).expect("write non-UTF-8 file");
    fs::create_dir_all(inbox.path.join(bad_dir)).expect("create non-UTF-8 folder");
    fs::write(inbox.path.join(&bad_nested), &bad2).expect("write into non-UTF-8 folder");
    for (rel, bytes) in &good {
        inbox.drop(rel, bytes);
    }
    let failed = |rel: &Path| {
        inbox.failed.join(rel).is_file()
            && reason_path(&inbox.failed.join(rel)).is_file()
            && !inbox.path.join(rel).exists()
    };
    wait_until(
        TIMEOUT,
        "non-UTF-8 names in failed/, the others in done/",
        || {
            failed(Path::new(bad_file))
                && failed(&bad_nested)
                && good.iter().all(|(rel, _)| inbox.is_done(rel))
        },
    )
    .await;
    daemon.stop().await;

    for (rel, bytes) in [(Path::new(bad_file), &bad), (bad_nested.as_path(), &bad2)] {
        let moved = inbox.failed.join(rel);
        let kept = fs::read(&moved).expect("read failed copy");
        assert_bytes_eq(format!("failed/{}", rel.display()), &kept, bytes);
        let reason = fs::read_to_string(reason_path(&moved)).expect("reason file");
        assert!(
            reason.contains("UTF-8"),
            "reason for {} does not say why:\n{reason}",
            rel.display()
        );
    }
    let mut want = Vec::new();
    for (rel, bytes) in &good {
        inbox.assert_done(rel, bytes);
        assert_object(&s3, &inbox.key(rel), bytes).await;
        want.push(inbox.key(rel));
    }
    want.sort();
    assert_eq!(s3.list(BUCKET).await, want, "objects in the bucket");
    inbox.assert_empty();

    // Handled without an error about the ledger, and the records are complete: the next
    // start finds nothing to repair.
    let log = strip_ansi(&daemon.stdout());
    let errors: Vec<&str> = log.lines().filter(|l| l.contains("ERROR")).collect();
    assert!(errors.is_empty(), "ERROR lines:\n{}", errors.join("\n"));
    // A name with a space reads as one value in the text log, as key= values do.
    assert!(
        log.contains("path=\"sub/Übersicht ñ.pdf\""),
        "path= with a space is not quoted:\n{log}"
    );
    daemon.start();
    wait_until(TIMEOUT, "the daemon started again", || {
        daemon.stdout().contains("inboxd started")
    })
    .await;
    daemon.stop().await;
    let again = daemon.stdout();
    assert!(
        !again.contains("ledger: recorded where") && !again.contains("crash"),
        "the start after a clean stop repaired records:\n{again}"
    );
}

// ---------------------------------------------------------------------------------------------
// on_conflict
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_conflict_fail_sends_the_different_file_to_failed() {
    let s3 = TestS3::start().await;
    let mut daemon = Daemon::new(&s3, Setup::new().on_conflict("fail"));
    let inbox = daemon.inbox().clone();
    let key = inbox.key("a.pdf");
    let old = content(10, 50_000);
    let new = content(11, 50_000);
    daemon.start();
    inbox.drop("a.pdf", &old);
    wait_until(TIMEOUT, "a.pdf is in done/", || inbox.is_done("a.pdf")).await;
    inbox.drop("a.pdf", &new);
    wait_until(TIMEOUT, "the second a.pdf is in failed/", || {
        inbox.is_failed("a.pdf")
    })
    .await;
    daemon.stop().await;

    let reason = inbox.assert_failed("a.pdf");
    assert!(
        reason.contains(&key),
        "the reason does not name the key {key}:\n{reason}"
    );
    let kept = fs::read(inbox.failed.join("a.pdf")).expect("failed copy");
    assert_bytes_eq("failed/a.pdf", &kept, &new);
    assert_object(&s3, &key, &old).await;
    assert_eq!(s3.puts(&key).await, 1, "objects written at {key}");
    assert_eq!(s3.list(BUCKET).await, vec![key], "objects in the bucket");
    inbox.assert_done("a.pdf", &old);
    assert_eq!(inbox.done_files(), vec!["a.pdf".to_owned()], "done/");
    inbox.assert_empty();
    let records = daemon.ledger_for("a.pdf").await;
    assert!(
        records
            .iter()
            .any(|r| r["sha256"] == sha256_hex(&new).as_str() && r["state"] == "failed"),
        "no failed ledger record for the new content: {records:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_conflict_overwrite_replaces_the_object() {
    let s3 = TestS3::start().await;
    let mut daemon = Daemon::new(&s3, Setup::new().on_conflict("overwrite"));
    let inbox = daemon.inbox().clone();
    let key = inbox.key("b.pdf");
    let old = content(12, 50_000);
    let new = content(13, 60_000);
    daemon.start();
    inbox.drop("b.pdf", &old);
    wait_until(TIMEOUT, "b.pdf is in done/", || inbox.is_done("b.pdf")).await;
    inbox.drop("b.pdf", &new);
    wait_until(TIMEOUT, "the second b.pdf is in done/", || {
        inbox.in_done("b (1).pdf") && !inbox.in_inbox("b.pdf")
    })
    .await;
    daemon.stop().await;

    assert_object(&s3, &key, &new).await;
    let meta = s3.head_meta(BUCKET, &key).await.expect("metadata");
    assert_eq!(
        meta.get("sha256").map(String::as_str),
        Some(sha256_hex(&new).as_str())
    );
    assert_eq!(s3.puts(&key).await, 2, "objects written at {key}");
    assert_eq!(s3.list(BUCKET).await, vec![key], "objects in the bucket");
    inbox.assert_done("b.pdf", &old);
    inbox.assert_done("b (1).pdf", &new);
    inbox.assert_empty();
    inbox.assert_no_failures();
}

// Deferred files (they come back after retry_later) are tested on the paused clock, clock.rs.

// ---------------------------------------------------------------------------------------------
// Watching
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn poll_mode_finds_files_without_kernel_events() {
    let s3 = TestS3::start().await;
    let mut daemon = Daemon::new(
        &s3,
        Setup::new().inbox_set("watch", &toml_str("poll")).set(
            "watch",
            "poll_interval",
            &toml_str("200ms"),
        ),
    );
    let inbox = daemon.inbox().clone();
    let files = [
        ("first.pdf", content(30, 20_000)),
        ("deep/er/second.pdf", content(31, 21_000)),
    ];
    daemon.start();
    wait_until(TIMEOUT, "the daemon has started watching", || {
        daemon.stdout().contains("watching by polling")
    })
    .await;
    assert_eq!(
        daemon.inotify_watches(),
        0,
        "an inbox with watch = \"poll\" holds kernel watches"
    );
    for (rel, bytes) in &files {
        inbox.drop(rel, bytes);
    }
    wait_until(TIMEOUT, "both files are in done/", || {
        files.iter().all(|(rel, _)| inbox.is_done(rel))
    })
    .await;
    assert_eq!(daemon.inotify_watches(), 0, "kernel watches while polling");
    daemon.stop().await;

    for (rel, bytes) in &files {
        inbox.assert_done(rel, bytes);
        assert_object(&s3, &inbox.key(rel), bytes).await;
    }
    inbox.assert_empty();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_rescans_an_inbox_nothing_else_would_look_at() {
    let s3 = TestS3::start().await;
    // Polled every 10 minutes, rescanned every 10 minutes: after the startup sweep, only
    // SIGHUP can find a new file.
    let mut daemon = Daemon::new(
        &s3,
        Setup::new().inbox_set("watch", &toml_str("poll")).set(
            "watch",
            "poll_interval",
            &toml_str("10m"),
        ),
    );
    let inbox = daemon.inbox().clone();
    let early = content(40, 10_000);
    inbox.drop("early.pdf", &early);
    daemon.start();
    wait_until(TIMEOUT, "early.pdf (startup sweep) is in done/", || {
        inbox.is_done("early.pdf")
    })
    .await;

    for (round, rel) in ["late.pdf", "later.pdf"].into_iter().enumerate() {
        let bytes = content(41 + round as u64, 12_000);
        inbox.drop(rel, &bytes);
        // That nothing but the rescan request finds the file, however long it waits, is
        // shown on the paused clock (clock.rs, a_rescan_request_finds_what_nothing_else_would_
        // look_at); this test covers the signal's wiring to that request.
        inbox.assert_holds(&[rel]);
        assert_eq!(s3.requests_for(Op::PutObject, &inbox.key(rel)), 0);

        daemon.sighup();
        wait_until(TIMEOUT, format!("{rel} is in done/ after SIGHUP"), || {
            inbox.is_done(rel)
        })
        .await;
        assert!(daemon.is_running(), "inboxd exited after SIGHUP");
        inbox.assert_done(rel, &bytes);
        assert_object(&s3, &inbox.key(rel), &bytes).await;
    }
    let rescans = strip_ansi(&daemon.stdout())
        .lines()
        .filter(|l| l.contains("SIGHUP") && l.contains("rescanning"))
        .count();
    assert_eq!(rescans, 2, "log lines about SIGHUP rescans");
    daemon.stop().await;
    inbox.assert_done("early.pdf", &early);
    inbox.assert_empty();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_with_kernel_events_rescans_and_keeps_running() {
    let s3 = TestS3::start().await;
    let mut daemon = Daemon::new(&s3, Setup::new().inbox_set("watch", &toml_str("events")));
    let inbox = daemon.inbox().clone();
    daemon.start();
    wait_until(TIMEOUT, "the daemon has started watching", || {
        daemon.stdout().contains("watching with kernel events")
    })
    .await;
    assert!(
        daemon.inotify_watches() > 0,
        "watch = \"events\" but no kernel watch is held"
    );
    daemon.sighup();
    wait_until(TIMEOUT, "the log says SIGHUP rescans", || {
        strip_ansi(&daemon.stdout())
            .lines()
            .any(|l| l.contains("SIGHUP") && l.contains("rescanning"))
    })
    .await;
    assert!(daemon.is_running(), "inboxd exited after SIGHUP");

    let bytes = content(45, 33_000);
    inbox.drop("after-hup.pdf", &bytes);
    wait_until(TIMEOUT, "after-hup.pdf is in done/", || {
        inbox.is_done("after-hup.pdf")
    })
    .await;
    daemon.stop().await;
    inbox.assert_done("after-hup.pdf", &bytes);
    assert_object(&s3, &inbox.key("after-hup.pdf"), &bytes).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_applies_a_changed_config_and_keeps_the_old_one_when_the_new_is_bad() {
    let s3 = TestS3::start().await;
    let mut daemon = Daemon::new(&s3, Setup::new().inboxes(2));
    let (first, second) = (daemon.inboxes()[0].clone(), daemon.inboxes()[1].clone());
    // Start with the first inbox only.
    let full = daemon.config_text();
    let second_block = full
        .match_indices("[[inbox]]")
        .nth(1)
        .expect("two inbox blocks")
        .0;
    daemon.write_config(&full[..second_block]);
    daemon.start();
    let early = content(81, 12_000);
    second.drop("early.pdf", &early);
    let one = content(82, 12_000);
    first.drop("one.pdf", &one);
    wait_until(TIMEOUT, "one.pdf is in done/", || first.is_done("one.pdf")).await;
    assert!(
        second.in_inbox("early.pdf"),
        "an inbox not yet configured was processed"
    );

    // A broken file: the running configuration stays, and so does the daemon.
    daemon.write_config("this is = = not toml");
    daemon.sighup();
    wait_until(
        TIMEOUT,
        "the log says the new configuration is not valid",
        || strip_ansi(&daemon.stdout()).contains("keeping the running one"),
    )
    .await;
    assert!(daemon.is_running(), "inboxd exited on a bad configuration");
    let two = content(83, 12_000);
    first.drop("two.pdf", &two);
    wait_until(TIMEOUT, "two.pdf is in done/", || first.is_done("two.pdf")).await;

    // The full configuration: the second inbox is taken up, the first keeps working.
    daemon.write_config(&full);
    daemon.sighup();
    wait_until(
        TIMEOUT,
        "early.pdf from the added inbox is in done/",
        || second.is_done("early.pdf"),
    )
    .await;
    let three = content(84, 12_000);
    first.drop("three.pdf", &three);
    wait_until(TIMEOUT, "three.pdf is in done/", || {
        first.is_done("three.pdf")
    })
    .await;
    assert!(daemon.is_running(), "inboxd exited after a reload");
    daemon.stop().await;

    for (inbox, rel, bytes) in [
        (&first, "one.pdf", &one),
        (&first, "two.pdf", &two),
        (&first, "three.pdf", &three),
        (&second, "early.pdf", &early),
    ] {
        inbox.assert_done(rel, bytes);
        assert_object(&s3, &inbox.key(rel), bytes).await;
        inbox.assert_no_failures();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_says_reloading_and_reloaded_and_nothing_about_stopping_or_crashing() {
    let s3 = TestS3::start().await;
    let mut daemon = Daemon::new(&s3, Setup::new());
    let inbox = daemon.inbox().clone();
    daemon.start();
    let before = content(91, 10_000);
    inbox.drop("before.pdf", &before);
    wait_until(TIMEOUT, "before.pdf is in done/", || {
        inbox.is_done("before.pdf")
    })
    .await;

    let text = daemon.config_text();
    assert!(text.contains("settle = \"300ms\"") && text.contains("concurrency = 4"));
    daemon.write_config(
        &text
            .replace("settle = \"300ms\"", "settle = \"400ms\"")
            .replace("concurrency = 4", "concurrency = 3"),
    );
    daemon.sighup();
    wait_until(TIMEOUT, "the log says the reload is done", || {
        daemon.stdout().contains("reloaded")
    })
    .await;
    let after = content(92, 10_000);
    inbox.drop("after.pdf", &after);
    wait_until(TIMEOUT, "after.pdf is in done/", || {
        inbox.is_done("after.pdf")
    })
    .await;
    let log = strip_ansi(&daemon.stdout());
    daemon.stop().await;

    let reloading: Vec<&str> = log.lines().filter(|l| l.contains("reloading")).collect();
    assert_eq!(reloading.len(), 1, "{log}");
    assert!(
        reloading[0].contains("upload.concurrency") && reloading[0].contains("inbox in0 (settle)"),
        "the reload line must say what changed: {}",
        reloading[0]
    );
    let reloaded: Vec<&str> = log.lines().filter(|l| l.contains("reloaded")).collect();
    assert_eq!(reloaded.len(), 1, "{log}");
    assert!(
        reloaded[0].contains("upload.concurrency"),
        "{}",
        reloaded[0]
    );
    // From the reload on, nothing reads like a stop, a start or a crash.
    let from_reload = &log[log.find("reloading").expect("reloading line")..];
    for word in ["stopped", "started", "crash"] {
        assert!(
            !from_reload.contains(word),
            "{word:?} in the log of a reload:\n{from_reload}"
        );
    }
    assert_eq!(log.matches("inboxd started").count(), 1, "{log}");

    // The run ends with one line: why, the exit code, and the counts of the whole run.
    let out = strip_ansi(&daemon.stdout());
    let last = out
        .lines()
        .rfind(|l| !l.trim().is_empty())
        .unwrap_or_default();
    assert!(last.contains("inboxd stopped"), "last line: {last}\n{out}");
    let end = daemon.stop_line();
    assert_eq!(field(&end, "reason"), "stopped by SIGTERM", "{last}");
    assert_eq!(field(&end, "exit_code"), "0", "{last}");
    assert_eq!(
        field(&end, "uploaded"),
        "2",
        "counted over the reload: {last}"
    );
    assert_eq!(field(&end, "left_in_inbox"), "0", "{last}");
    inbox.assert_done("before.pdf", &before);
    inbox.assert_done("after.pdf", &after);
}

// ---------------------------------------------------------------------------------------------
// once
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn once_with_s3_unreachable_exits_1_and_leaves_the_file() {
    let s3 = TestS3::start().await;
    let daemon = Daemon::new(
        &s3,
        Setup::new()
            .set("upload", "max_attempts", "2")
            .set("upload", "retry_initial", &toml_str("20ms"))
            .set("upload", "retry_max", &toml_str("100ms")),
    );
    let inbox = daemon.inbox().clone();
    // A port nothing listens on: connections are refused at once.
    let closed = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        listener.local_addr().expect("addr").port()
    };
    let config = daemon
        .config_text()
        .replace(s3.endpoint(), &format!("http://127.0.0.1:{closed}"));
    daemon.write_config(&config);
    let bytes = content(50, 25_000);
    inbox.drop("a.pdf", &bytes);

    let t0 = Instant::now();
    let out = daemon.once().await;
    let took = t0.elapsed();
    assert_eq!(out.code(), Some(1), "exit code\n{out}");
    assert!(took < Duration::from_secs(20), "once took {took:?}\n{out}");
    inbox.assert_holds(&["a.pdf"]);
    assert_eq!(
        fs::read(inbox.file("a.pdf")).expect("read a.pdf"),
        bytes,
        "a.pdf was changed"
    );
    inbox.assert_no_failures();
    assert!(
        inbox.done_files().is_empty(),
        "done/: {:?}",
        inbox.done_files()
    );
    assert_eq!(s3.total_puts().await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replaced_inbox_folder_is_watched_again() {
    // An admin deletes the inbox folder and creates it again: the kernel drops the old watch
    // with the old folder. The next rescan notices the new folder and watches it.
    let s3 = TestS3::start().await;
    let mut daemon = Daemon::new(
        &s3,
        Setup::new().inbox_set("watch", &toml_str("events")).set(
            "watch",
            "rescan",
            &toml_str("1s"),
        ),
    );
    let inbox = daemon.inbox().clone();
    daemon.start();
    wait_until(TIMEOUT, "the daemon watches the inbox", || {
        daemon.inotify_watches() > 0
    })
    .await;
    fs::remove_dir_all(&inbox.path).expect("remove the inbox");
    wait_until(TIMEOUT, "the kernel dropped the old watch", || {
        daemon.inotify_watches() == 0
    })
    .await;
    fs::create_dir(&inbox.path).expect("create the inbox again");
    wait_until(TIMEOUT, "the new folder is watched", || {
        daemon.inotify_watches() > 0
    })
    .await;
    // The watch is in place a moment before the line that says so is written.
    wait_until(TIMEOUT, "a log line about the replaced folder", || {
        strip_ansi(&daemon.stdout()).contains("the inbox folder was replaced")
    })
    .await;
    let bytes = content(95, 20_000);
    inbox.drop("after.pdf", &bytes);
    wait_until(TIMEOUT, "after.pdf is in done/", || {
        inbox.is_done("after.pdf")
    })
    .await;
    daemon.stop().await;
    inbox.assert_done("after.pdf", &bytes);
    assert_object(&s3, &inbox.key("after.pdf"), &bytes).await;
}

// ---------------------------------------------------------------------------------------------
// Writers that pause
// ---------------------------------------------------------------------------------------------

// ---------------------------------------------------------------------------------------------
// Logging
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_logs_on_stdout_and_rolling_files_in_log_dir() {
    let s3 = TestS3::start().await;
    let logs = tempfile::tempdir().expect("tempdir");
    let daemon = Daemon::new(
        &s3,
        Setup::new().set("log", "format", &toml_str("json")).set(
            "log",
            "dir",
            &toml_str(&logs.path().display().to_string()),
        ),
    );
    let inbox = daemon.inbox().clone();
    let bytes = content(60, 10_000);
    inbox.drop("scan.pdf", &bytes);
    let out = daemon.once().await;
    assert_eq!(out.code(), Some(0), "exit code\n{out}");
    inbox.assert_done("scan.pdf", &bytes);
    assert_object(&s3, &inbox.key("scan.pdf"), &bytes).await;

    // Every stdout line is one JSON object; the batch summary carries its counts as fields.
    let lines: Vec<serde_json::Value> = out
        .stdout
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    let summary = lines
        .iter()
        .find(|v| v["message"] == "batch finished")
        .unwrap_or_else(|| panic!("no batch summary on stdout\n{out}"));
    assert_eq!(summary["files"], 1, "{summary}");
    assert_eq!(summary["uploaded"], 1, "{summary}");
    assert_eq!(summary["failed"], 0, "{summary}");
    assert!(summary["duration_ms"].is_u64(), "{summary}");
    let uploaded = lines
        .iter()
        .find(|v| v["message"] == "uploaded")
        .unwrap_or_else(|| panic!("no per-file line on stdout\n{out}"));
    assert_eq!(
        uploaded["key"],
        inbox.key("scan.pdf").as_str(),
        "{uploaded}"
    );

    // The batch journal beside them: every batch report, with its files.
    let journal = fs::read_to_string(logs.path().join("batches.jsonl")).expect("batches.jsonl");
    let report: serde_json::Value =
        serde_json::from_str(journal.lines().next().unwrap_or("")).expect("a JSON line");
    assert_eq!(report["uploaded"], 1, "{report}");
    assert_eq!(
        report["files"][0]["key"],
        inbox.key("scan.pdf").as_str(),
        "{report}"
    );

    // The same events went to the daily file in log.dir, as JSON.
    let files: Vec<_> = fs::read_dir(logs.path())
        .expect("read log dir")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.file_name() != Some(OsStr::new("batches.jsonl")))
        .collect();
    assert_eq!(files.len(), 1, "log files: {files:?}");
    let name = files[0].file_name().and_then(OsStr::to_str).unwrap_or("");
    assert!(
        name.starts_with("inboxd.") && name.ends_with(".log"),
        "{name}"
    );
    let text = fs::read_to_string(&files[0]).expect("read log file");
    let in_file: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    // The same flat shape as on stdout: one parser reads both.
    assert!(
        in_file
            .iter()
            .any(|v| v["message"] == "batch finished" && v["uploaded"] == 1),
        "no batch summary in {}:\n{text}",
        files[0].display()
    );
    assert!(
        in_file.iter().any(|v| v["message"] == "uploaded"
            && v["key"] == inbox.key("scan.pdf").as_str()
            && v["path"] == "scan.pdf"),
        "no per-file line in {}:\n{text}",
        files[0].display()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_over_max_file_size_goes_to_failed_unread_and_the_rest_go_on() {
    let s3 = TestS3::start().await;
    let mut daemon = Daemon::new(&s3, Setup::new().inbox_set("max_file_size", "\"64 KiB\""));
    let inbox = daemon.inbox().clone();
    let small = content(90, 64 * 1024);
    let big = content(91, 64 * 1024 + 1);
    daemon.start();
    inbox.drop("small.pdf", &small);
    inbox.drop("big.pdf", &big);
    wait_until(TIMEOUT, "small in done/, big in failed/", || {
        inbox.is_done("small.pdf") && inbox.is_failed("big.pdf")
    })
    .await;
    daemon.stop().await;
    let reason = inbox.assert_failed("big.pdf");
    assert!(
        reason.contains("max_file_size")
            && reason.contains("65537 bytes")
            && reason.contains("65536 bytes"),
        "the reason does not name the limit and the size:\n{reason}"
    );
    assert_eq!(
        s3.requests_for(Op::PutObject, &inbox.key("big.pdf")),
        0,
        "the big file was sent"
    );
    assert_object(&s3, &inbox.key("small.pdf"), &small).await;
    let kept = fs::read(inbox.failed.join("big.pdf")).expect("failed copy");
    assert_bytes_eq("failed/big.pdf", &kept, &big);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn objects_get_the_content_type_of_their_name_single_and_multipart() {
    let s3 = TestS3::start().await;
    let mut daemon = Daemon::new(&s3, Setup::new().multipart("5 MiB", "5 MiB"));
    let inbox = daemon.inbox().clone();
    let files = [
        ("scan.pdf", content(92, 10_000), "application/pdf"),
        ("photo.JPG", content(93, 10_000), "image/jpeg"),
        (
            "data.unknownext",
            content(94, 10_000),
            "application/octet-stream",
        ),
        ("big.zip", content(95, 6 * 1024 * 1024), "application/zip"),
    ];
    daemon.start();
    for (rel, bytes, _) in &files {
        inbox.drop(rel, bytes);
    }
    wait_until(TIMEOUT, "every file is in done/", || {
        files.iter().all(|(rel, _, _)| inbox.is_done(rel))
    })
    .await;
    daemon.stop().await;
    for (rel, bytes, want) in &files {
        let key = inbox.key(rel);
        assert_object(&s3, &key, bytes).await;
        let head = s3
            .client()
            .head_object()
            .bucket(BUCKET)
            .key(&key)
            .send()
            .await
            .expect("HEAD");
        assert_eq!(head.content_type(), Some(*want), "Content-Type of {key}");
    }
}

//! Several hosts, one share (issue 12): two real daemon processes with their own state
//! folders watch the same inbox, done/, failed/ and bucket (`shared = true`). Every file is
//! taken by exactly one of them; a host killed with SIGKILL has its claims taken over.

mod support;

use std::time::Duration;

use support::http::{get, listener_url};
use support::s3::{BUCKET, Fault, Op, TestS3};
use support::{
    Daemon, Inbox, TIMEOUT, content, files_under, shared_host as host, strip_ansi, wait_until,
};

/// Files of the inbox that are not inboxd's own bookkeeping (`.inboxd/`).
/// Hosts a and b on one shared inbox, both started, watching with kernel events.
fn two_started_hosts(s3: &TestS3) -> (Daemon, Daemon, Inbox) {
    let mut a = Daemon::new(s3, host("a", None, "events"));
    let inbox = a.inbox().clone();
    let mut b = Daemon::new(s3, host("b", Some(&inbox), "events"));
    a.start();
    b.start();
    (a, b, inbox)
}

fn waiting(inbox: &Inbox) -> Vec<String> {
    inbox
        .files()
        .into_iter()
        .filter(|f| !f.starts_with(".inboxd/"))
        .collect()
}

fn errors(d: &Daemon) -> Vec<String> {
    strip_ansi(&d.all_stdout())
        .lines()
        .filter(|l| l.contains(" ERROR "))
        .map(str::to_owned)
        .collect()
}

/// Every file in done/ exactly once with its bytes, one object per file in the bucket written
/// once, nothing in failed/, nothing left in the inbox.
async fn assert_each_once(s3: &TestS3, inbox: &Inbox, files: &[(String, Vec<u8>)]) {
    assert_eq!(
        inbox.done_files().len(),
        files.len(),
        "done/: {:?}",
        inbox.done_files()
    );
    for (rel, bytes) in files {
        inbox.assert_done(rel, bytes);
        support::assert_object(s3, &inbox.key(rel), bytes).await;
        assert_eq!(s3.puts(&inbox.key(rel)).await, 1, "{rel} stored once");
    }
    assert_eq!(
        s3.list(BUCKET).await.len(),
        files.len(),
        "one object per file"
    );
    assert!(
        inbox.failed_files().is_empty(),
        "{:?}",
        inbox.failed_files()
    );
    assert!(waiting(inbox).is_empty(), "{:?}", waiting(inbox));
}

async fn two_hosts_take_each_file_once(watch: &str) {
    let s3 = TestS3::start().await;
    let mut a = Daemon::new(&s3, host("a", None, watch));
    let inbox = a.inbox().clone();
    let mut b = Daemon::new(&s3, host("b", Some(&inbox), watch));
    a.start();
    b.start();
    let files: Vec<(String, Vec<u8>)> = (0..500)
        .map(|i| {
            (
                format!("d{}/f{i:03}.bin", i % 7),
                content(i, 1_000 + (i as usize % 5) * 700),
            )
        })
        .collect();
    for (rel, bytes) in &files {
        inbox.drop(rel, bytes);
    }
    wait_until(TIMEOUT * 2, "every file in done/", || {
        files.iter().all(|(rel, _)| inbox.in_done(rel))
    })
    .await;
    if watch == "events" {
        // The inbox and its 7 folders; inboxd's own .inboxd/ folders are never watched.
        for d in [&a, &b] {
            assert_eq!(d.inotify_watches(), 8);
        }
    }
    a.stop().await;
    b.stop().await;
    assert_each_once(&s3, &inbox, &files).await;
    // How the work was shared (a figure for the reader, not a promise: either host may be
    // faster on a loaded machine).
    let uploaded = |d: &Daemon| d.batch_total("uploaded");
    eprintln!(
        "{watch}: host a uploaded {}, host b {}",
        uploaded(&a),
        uploaded(&b)
    );
    for d in [&a, &b] {
        assert!(errors(d).is_empty(), "{:?}", errors(d));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hosts_take_each_file_once_with_events() {
    two_hosts_take_each_file_once("events").await;
}

/// The way NFS clients see a share: no events from the other host's writes, only polling.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hosts_take_each_file_once_when_polling() {
    two_hosts_take_each_file_once("poll").await;
}

/// Both hosts run; host a is killed with SIGKILL mid-way, holding claimed files. Host b
/// takes them over once a's heartbeat has been still for claim_timeout, and finishes them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_hosts_claims_are_taken_over() {
    let s3 = TestS3::start().await;
    // Slow uploads, so that host a holds claimed files when it dies.
    s3.push(
        Op::PutObject,
        Fault::delay(Duration::from_millis(300)).always(),
    );
    let mut a = Daemon::new(&s3, host("a", None, "events").concurrency(2));
    let inbox = a.inbox().clone();
    let mut b = Daemon::new(&s3, host("b", Some(&inbox), "events").concurrency(2));
    a.start();
    let files: Vec<(String, Vec<u8>)> = (0..60)
        .map(|i| (format!("scan-{i:02}.pdf"), content(100 + i, 2_000)))
        .collect();
    for (rel, bytes) in &files {
        inbox.drop(rel, bytes);
    }
    let claims_a = inbox.path.join(".inboxd/claims/a");
    wait_until(TIMEOUT, "host a holds claims and has finished some", || {
        files_under(&claims_a).len() >= 3 && !inbox.done_files().is_empty()
    })
    .await;
    // Host b joins while a works (had both started together, b might take every file and
    // leave a nothing to die with), then a dies.
    b.start();
    wait_until(TIMEOUT, "host b's heartbeat", || {
        inbox.path.join(".inboxd/hosts/b").is_file()
    })
    .await;
    a.kill().await;
    let stranded = files_under(&claims_a).len();
    assert!(stranded > 0);
    // Within claim_timeout (3 s), plus the settle window and the uploads.
    wait_until(TIMEOUT, "every file in done/", || {
        files.iter().all(|(rel, _)| inbox.in_done(rel))
    })
    .await;
    b.stop().await;
    assert!(
        files_under(&claims_a).is_empty(),
        "{:?}",
        files_under(&claims_a)
    );
    let took = strip_ansi(&b.all_stdout())
        .lines()
        .filter(|l| l.contains("took over the claimed files"))
        .map(str::to_owned)
        .collect::<Vec<_>>();
    assert_eq!(took.len(), 1, "one line for the takeover: {took:?}");
    assert!(
        took[0].contains("host=\"a\"") && took[0].contains(&format!("files={stranded}")),
        "{took:?}"
    );
    // Objects host a stored before it died are recognised, not stored again.
    assert_each_once(&s3, &inbox, &files).await;
    assert!(errors(&b).is_empty(), "{:?}", errors(&b));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shared_inbox_shows_its_hosts_in_status_and_metrics() {
    let s3 = TestS3::start().await;
    let (mut a, mut b, inbox) = two_started_hosts(&s3);
    let deadline = tokio::time::Instant::now() + TIMEOUT;
    let hosts = loop {
        if let Some(url) = listener_url(&a.stdout()) {
            let status: serde_json::Value =
                serde_json::from_str(&get(&url, "/status").await.body).unwrap();
            let hosts = status["inboxes"][0]["hosts"]
                .as_array()
                .cloned()
                .unwrap_or_default();
            if hosts.len() == 2 {
                break hosts;
            }
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "host a never saw both hosts"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let names: Vec<&str> = hosts.iter().filter_map(|h| h["host"].as_str()).collect();
    assert_eq!(names, ["a", "b"]);
    assert!(hosts.iter().all(|h| h["alive"] == true), "{hosts:?}");
    let url = listener_url(&a.stdout()).unwrap();
    let metrics = get(&url, "/metrics").await.body;
    assert!(
        metrics.contains(&format!(
            "inboxd_cluster_heartbeat_age_seconds{{inbox=\"{}\",host=\"b\"}}",
            inbox.name
        )),
        "{metrics}"
    );
    a.stop().await;
    b.stop().await;
}

/// Files this host claimed while the inbox was shared are still finished once it is not
/// (its claim folder is looked into at start), under their own names; the folders a
/// finished file leaves are removed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn claims_left_from_a_shared_past_are_finished() {
    let s3 = TestS3::start().await;
    let setup = host("a", None, "events").inbox_set("shared", "false");
    let mut d = Daemon::new(&s3, setup);
    let inbox = d.inbox().clone();
    let claimed = inbox.path.join(".inboxd/claims/a/2026/scan.pdf");
    std::fs::create_dir_all(claimed.parent().unwrap()).unwrap();
    let bytes = content(7, 5_000);
    std::fs::write(&claimed, &bytes).unwrap();
    d.start();
    wait_until(TIMEOUT, "the claimed file in done/", || {
        inbox.in_done("2026/scan.pdf")
    })
    .await;
    wait_until(TIMEOUT, "its claim folders removed", || {
        !inbox.path.join(".inboxd/claims/a/2026").exists()
    })
    .await;
    d.stop().await;
    inbox.assert_done("2026/scan.pdf", &bytes);
    support::assert_object(&s3, &inbox.key("2026/scan.pdf"), &bytes).await;
    assert!(waiting(&inbox).is_empty());
    assert!(inbox.failed_files().is_empty());
}

/// `once` on a shared inbox claims, uploads and moves like the daemon, and exits 0.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn once_on_a_shared_inbox_claims_and_finishes() {
    let s3 = TestS3::start().await;
    let d = Daemon::new(&s3, host("a", None, "events"));
    let inbox = d.inbox().clone();
    let files: Vec<(String, Vec<u8>)> = (0..20)
        .map(|i| (format!("sub/once-{i}.bin"), content(300 + i, 3_000)))
        .collect();
    for (rel, bytes) in &files {
        inbox.drop(rel, bytes);
    }
    let out = d.once().await;
    assert_eq!(out.code(), Some(0), "{out}");
    assert_each_once(&s3, &inbox, &files).await;
}

/// Host a is alive but its claimed file is taken over while it uploads it (as when a's
/// heartbeat stood still for claim_timeout: a hung share, a stopped process). a lets go
/// without a fight (the file is gone from its claim folder: it goes round again there and
/// is not found; no ERROR); b finishes the file, finding a's object (or a finds b's) instead
/// of storing a second one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_host_whose_claim_was_taken_over_lets_go() {
    let s3 = TestS3::start().await;
    s3.push(
        Op::PutObject,
        Fault::delay(Duration::from_millis(1500)).always(),
    );
    let mut a = Daemon::new(&s3, host("a", None, "events"));
    let inbox = a.inbox().clone();
    let mut b = Daemon::new(&s3, host("b", Some(&inbox), "events"));
    a.start();
    let bytes = content(400, 4_000);
    inbox.drop("slow.pdf", &bytes);
    let claimed = inbox.path.join(".inboxd/claims/a/slow.pdf");
    wait_until(TIMEOUT, "a holds its claim", || claimed.is_file()).await;
    // The takeover, as host b makes it: the same rename into b's claim folder; then b runs.
    let taken = inbox.path.join(".inboxd/claims/b/slow.pdf");
    std::fs::create_dir_all(taken.parent().unwrap()).unwrap();
    std::fs::rename(&claimed, &taken).unwrap();
    b.start();
    wait_until(TIMEOUT, "the file in done/", || inbox.in_done("slow.pdf")).await;
    a.stop().await;
    b.stop().await;
    assert_each_once(&s3, &inbox, &[("slow.pdf".to_owned(), bytes)]).await;
    for d in [&a, &b] {
        assert!(errors(d).is_empty(), "{:?}", errors(d));
        assert!(
            !d.all_stdout().contains("took over"),
            "b is alive: no takeover"
        );
    }
}

/// Odd files in a shared inbox (a FIFO, a link to a file outside): claimed by one host,
/// never opened or followed, moved to failed/ as themselves with a reason; nothing in the
/// bucket, no ERROR on either host.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn odd_files_in_a_shared_inbox_go_to_failed_once() {
    let s3 = TestS3::start().await;
    let (mut a, mut b, inbox) = two_started_hosts(&s3);
    support::mkfifo(&inbox.file("pipe.pdf"));
    let secret = a.dir().join("secret.txt");
    std::fs::write(&secret, b"not for the bucket").unwrap();
    std::os::unix::fs::symlink(&secret, inbox.file("link.pdf")).unwrap();
    // (`is_failed` opens what it finds: not for a FIFO.)
    wait_until(TIMEOUT, "both in failed/ with their reasons", || {
        let f = inbox.failed_files();
        [
            "pipe.pdf",
            "pipe.pdf.reason.txt",
            "link.pdf",
            "link.pdf.reason.txt",
        ]
        .iter()
        .all(|n| f.iter().any(|x| x == n))
    })
    .await;
    a.stop().await;
    b.stop().await;
    let failed = inbox.failed.join("pipe.pdf");
    assert!(
        std::os::unix::fs::FileTypeExt::is_fifo(
            &std::fs::symlink_metadata(&failed).unwrap().file_type()
        ),
        "moved as the FIFO"
    );
    assert_eq!(
        std::fs::read_link(inbox.failed.join("link.pdf")).unwrap(),
        secret,
        "moved as the link"
    );
    assert_eq!(
        inbox.failed_files().len(),
        4,
        "each once, with its reason: {:?}",
        inbox.failed_files()
    );
    assert!(s3.list(BUCKET).await.is_empty());
    assert!(waiting(&inbox).is_empty(), "{:?}", waiting(&inbox));
    for d in [&a, &b] {
        assert!(errors(d).is_empty(), "{:?}", errors(d));
    }
}

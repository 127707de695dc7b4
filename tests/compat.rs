//! The compatibility suite: the promises that must hold on any S3 server, checked with the real
//! binary against the in-process s3s-fs server (always) and against a real third-party server,
//! Garage (when installed: see `support/garage.rs`; `.ci/run` installs it).
//!
//! Every case runs twice, as `s3s_fs::<case>` and `garage::<case>`. Without a Garage binary the
//! `garage::` tests return at once, and the test binary says on stderr, once, that it skipped
//! them and how to enable them.

mod support;

use std::path::Path;

use support::garage::{self as garage_server, Garage};
use support::s3::{StoppedS3, TestS3};
use support::{
    Backend, Daemon, Inbox, Setup, TIMEOUT, content, sha256_hex, strip_ansi, toml_str, wait_until,
};

// ---------------------------------------------------------------------------------------------
// The servers
// ---------------------------------------------------------------------------------------------

/// The server one case runs against, kept alive (and stoppable) for the whole case.
enum Server {
    Fs {
        backend: Backend,
        running: Option<TestS3>,
        stopped: Option<StoppedS3>,
    },
    /// A bucket on the Garage shared by the whole test process (`own` = None), or a Garage of
    /// this case's own, for cases that stop it.
    Garage {
        backend: Backend,
        own: Option<Garage>,
    },
}

impl Server {
    async fn s3s_fs() -> Server {
        let s3 = TestS3::start().await;
        Server::Fs {
            backend: Backend::from(&s3),
            running: Some(s3),
            stopped: None,
        }
    }

    /// `None` when Garage is not installed (the skip has been announced).
    fn garage_shared() -> Option<Server> {
        Some(Server::Garage {
            backend: garage_server::shared_bucket()?,
            own: None,
        })
    }

    fn garage_own() -> Option<Server> {
        let own = Garage::own()?;
        Some(Server::Garage {
            backend: own.bucket(),
            own: Some(own),
        })
    }

    fn backend(&self) -> Backend {
        match self {
            Server::Fs { backend, .. } | Server::Garage { backend, .. } => backend.clone(),
        }
    }

    /// The server dies at once: its port refuses connections, open connections are cut.
    async fn crash(&mut self) {
        match self {
            Server::Fs {
                running, stopped, ..
            } => {
                let s3 = running.take().expect("the server runs");
                *stopped = Some(s3.stop().await);
            }
            Server::Garage { own, .. } => own.as_mut().expect("an own Garage").kill(),
        }
    }

    /// The server comes back on the same port with everything it had stored.
    async fn come_back(&mut self) {
        match self {
            Server::Fs {
                running, stopped, ..
            } => {
                let s3 = stopped.take().expect("the server was stopped");
                *running = Some(s3.start_again().await);
            }
            Server::Garage { own, .. } => own.as_mut().expect("an own Garage").restart(),
        }
    }
}

/// Each case as `s3s_fs::<case>` and `garage::<case>`. Cases after `own:` stop and start their
/// server, so on Garage they get a server of their own instead of the shared one.
macro_rules! against_both {
    ($($case:ident),* $(,)?; own: $($own:ident),* $(,)?) => {
        mod s3s_fs {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() {
                    super::$case(super::Server::s3s_fs().await).await;
                }
            )*
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $own() {
                    super::$own(super::Server::s3s_fs().await).await;
                }
            )*
        }
        mod garage {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() {
                    // No Garage installed: skipped, and announced once on stderr.
                    if let Some(server) = super::Server::garage_shared() {
                        super::$case(server).await;
                    }
                }
            )*
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $own() {
                    // No Garage installed: skipped, and announced once on stderr.
                    if let Some(server) = super::Server::garage_own() {
                        super::$own(server).await;
                    }
                }
            )*
        }
    };
}

against_both!(
    small_round_trip,
    multipart_round_trip,
    rename_keeps_another_tools_object,
    fail_keeps_another_tools_object,
    overwrite_replaces_another_tools_object,
    rename_keeps_its_own_earlier_object,
    fail_keeps_its_own_earlier_object,
    overwrite_replaces_its_own_earlier_object,
    recognises_its_own_object_after_a_crash_before_the_move,
    recognises_its_own_object_after_the_ledger_is_lost,
    keys_with_url_and_xml_special_and_non_ascii_characters,
    templated_keys_and_object_options,
    a_dead_hosts_upload_is_recognised_by_the_host_that_takes_over;
    own: every_file_arrives_after_an_outage,
);

// ---------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------

/// Waits until each of `rels` has left the inbox for done/ or failed/ (which one, the caller
/// asserts: a wrong outcome then fails with a clear message instead of a timeout).
async fn wait_handled(inbox: &Inbox, rels: &[&str]) {
    wait_until(
        TIMEOUT,
        format!("{rels:?} moved to done/ or failed/"),
        || {
            rels.iter()
                .all(|rel| inbox.is_done(rel) || inbox.is_failed(rel))
        },
    )
    .await;
}

/// `name.ext` → `name.<first 12 hex digits of sha256(bytes)>.ext`: where `on_conflict =
/// "rename"` puts a different file (README, "Conflicts").
fn renamed(key: &str, bytes: &[u8]) -> String {
    let tag = &sha256_hex(bytes)[..12];
    match key.rsplit_once('.') {
        Some((stem, ext)) => format!("{stem}.{tag}.{ext}"),
        None => format!("{key}.{tag}"),
    }
}

/// Log lines (colours stripped) that say the file's object was already in the bucket.
fn recognised(stdout: &str, key: &str) -> bool {
    strip_ansi(stdout)
        .lines()
        .any(|l| l.contains("already_there=true") && l.contains(key))
}

/// WARN and ERROR lines in a log.
fn warnings(stdout: &str) -> usize {
    strip_ansi(stdout)
        .lines()
        .filter(|l| l.contains(" WARN ") || l.contains(" ERROR "))
        .count()
}

// ---------------------------------------------------------------------------------------------
// Round trips
// ---------------------------------------------------------------------------------------------

async fn small_round_trip(server: Server) {
    let backend = server.backend();
    let mut daemon = Daemon::with_backend(&backend, Setup::new());
    let inbox = daemon.inbox().clone();
    // One byte, a few KiB (Garage keeps these inline in its metadata), a few hundred KiB
    // (Garage's data blocks), one in a sub-folder.
    let files = [
        ("one byte.txt", content(1, 1)),
        ("scan.pdf", content(2, 3_000)),
        ("2024/03/report.pdf", content(3, 300_000)),
    ];
    for (rel, bytes) in &files {
        inbox.drop(rel, bytes);
    }
    daemon.start();
    let rels: Vec<&str> = files.iter().map(|(rel, _)| *rel).collect();
    wait_handled(&inbox, &rels).await;
    daemon.stop().await;

    for (rel, bytes) in &files {
        inbox.assert_done(rel, bytes);
        backend.assert_object(&inbox.key(rel), bytes).await;
    }
    let keys: Vec<String> = rels.iter().map(|rel| inbox.key(rel)).collect();
    backend
        .assert_keys(&keys.iter().map(String::as_str).collect::<Vec<_>>())
        .await;
    inbox.assert_empty();
    inbox.assert_no_failures();
}

async fn multipart_round_trip(server: Server) {
    let backend = server.backend();
    let mut daemon = Daemon::with_backend(&backend, Setup::new().multipart("5 MiB", "5 MiB"));
    let inbox = daemon.inbox().clone();
    // Three parts, the last one short; and a small file beside it that goes with one PUT.
    let big = content(4, 11 * support::MIB + 12_345);
    let small = content(5, 40_000);
    inbox.drop("volume/scan 0001.tiff", &big);
    inbox.drop("volume/notes.txt", &small);
    daemon.start();
    wait_handled(&inbox, &["volume/scan 0001.tiff", "volume/notes.txt"]).await;
    daemon.stop().await;

    inbox.assert_done("volume/scan 0001.tiff", &big);
    inbox.assert_done("volume/notes.txt", &small);
    let big_key = inbox.key("volume/scan 0001.tiff");
    backend.assert_object(&big_key, &big).await;
    backend
        .assert_object(&inbox.key("volume/notes.txt"), &small)
        .await;
    assert_eq!(
        backend.parts(&big_key).await,
        Some(3),
        "{}: {big_key} should have been stored as a multipart upload of 3 parts",
        backend.server
    );
    assert_eq!(
        backend.parts(&inbox.key("volume/notes.txt")).await,
        None,
        "{}: the small file goes with one PutObject",
        backend.server
    );
    inbox.assert_no_failures();
}

// ---------------------------------------------------------------------------------------------
// on_conflict against an object another tool wrote
// ---------------------------------------------------------------------------------------------

/// Another tool has written `incoming/report.pdf`; then a different file arrives for that key.
/// Returns the daemon (stopped), the inbox, the backend, the key, the foreign and new bytes.
async fn conflict_with_another_tool(
    server: &Server,
    mode: &str,
) -> (Daemon, Inbox, Backend, String, Vec<u8>, Vec<u8>) {
    let backend = server.backend();
    let mut daemon = Daemon::with_backend(&backend, Setup::new().on_conflict(mode));
    let inbox = daemon.inbox().clone();
    let key = inbox.key("report.pdf");
    let foreign = content(10, 20_000);
    let new = content(11, 21_000);
    backend.put_foreign(&key, &foreign).await;
    inbox.drop("report.pdf", &new);
    daemon.start();
    wait_handled(&inbox, &["report.pdf"]).await;
    daemon.stop().await;
    (daemon, inbox, backend, key, foreign, new)
}

async fn rename_keeps_another_tools_object(server: Server) {
    let (_daemon, inbox, backend, key, foreign, new) =
        conflict_with_another_tool(&server, "rename").await;
    // The promise: the other tool's object is untouched, the file lands beside it.
    backend.assert_bytes(&key, &foreign).await;
    let renamed = renamed(&key, &new);
    backend.assert_object(&renamed, &new).await;
    backend.assert_keys(&[&key, &renamed]).await;
    inbox.assert_done("report.pdf", &new);
    inbox.assert_no_failures();
}

async fn fail_keeps_another_tools_object(server: Server) {
    let (_daemon, inbox, backend, key, foreign, new) =
        conflict_with_another_tool(&server, "fail").await;
    backend.assert_bytes(&key, &foreign).await;
    backend.assert_keys(&[&key]).await;
    let reason = inbox.assert_failed("report.pdf");
    assert!(
        reason.contains(&key),
        "{}: the reason should name the taken key {key}:\n{reason}",
        backend.server
    );
    assert_eq!(
        std::fs::read(inbox.failed.join("report.pdf")).expect("failed file"),
        new,
        "failed/ holds the file unchanged"
    );
    assert!(
        inbox.done_files().is_empty(),
        "done/: {:?}",
        inbox.done_files()
    );
}

async fn overwrite_replaces_another_tools_object(server: Server) {
    let (_daemon, inbox, backend, key, _foreign, new) =
        conflict_with_another_tool(&server, "overwrite").await;
    backend.assert_object(&key, &new).await;
    backend.assert_keys(&[&key]).await;
    inbox.assert_done("report.pdf", &new);
    inbox.assert_no_failures();
}

// ---------------------------------------------------------------------------------------------
// on_conflict against an object inboxd itself wrote earlier
// ---------------------------------------------------------------------------------------------

/// `plan.pdf` is uploaded and finished; then a different file is dropped at the same path.
/// Returns the daemon (stopped), the inbox, the backend, the key, the first and second bytes.
async fn conflict_with_own_object(
    server: &Server,
    mode: &str,
) -> (Daemon, Inbox, Backend, String, Vec<u8>, Vec<u8>) {
    let backend = server.backend();
    let mut daemon = Daemon::with_backend(&backend, Setup::new().on_conflict(mode));
    let inbox = daemon.inbox().clone();
    let key = inbox.key("plan.pdf");
    let first = content(20, 30_000);
    let second = content(21, 31_000);
    daemon.start();
    inbox.drop("plan.pdf", &first);
    wait_until(TIMEOUT, "the first plan.pdf in done/", || {
        inbox.is_done("plan.pdf")
    })
    .await;
    backend.assert_object(&key, &first).await;
    inbox.drop("plan.pdf", &second);
    wait_until(
        TIMEOUT,
        "the second plan.pdf moved out of the inbox",
        || {
            !inbox.in_inbox("plan.pdf")
                && (inbox.in_done("plan (1).pdf") || inbox.is_failed("plan.pdf"))
        },
    )
    .await;
    daemon.stop().await;
    (daemon, inbox, backend, key, first, second)
}

async fn rename_keeps_its_own_earlier_object(server: Server) {
    let (_daemon, inbox, backend, key, first, second) =
        conflict_with_own_object(&server, "rename").await;
    backend.assert_object(&key, &first).await;
    let renamed = renamed(&key, &second);
    backend.assert_object(&renamed, &second).await;
    backend.assert_keys(&[&key, &renamed]).await;
    inbox.assert_done("plan.pdf", &first);
    inbox.assert_done("plan (1).pdf", &second);
    inbox.assert_no_failures();
}

async fn fail_keeps_its_own_earlier_object(server: Server) {
    let (_daemon, inbox, backend, key, first, second) =
        conflict_with_own_object(&server, "fail").await;
    backend.assert_object(&key, &first).await;
    backend.assert_keys(&[&key]).await;
    let reason = inbox.assert_failed("plan.pdf");
    assert!(
        reason.contains(&key),
        "{}: the reason should name the taken key {key}:\n{reason}",
        backend.server
    );
    assert_eq!(
        std::fs::read(inbox.failed.join("plan.pdf")).expect("failed file"),
        second,
        "failed/ holds the second file unchanged"
    );
    inbox.assert_done("plan.pdf", &first);
}

async fn overwrite_replaces_its_own_earlier_object(server: Server) {
    let (_daemon, inbox, backend, key, first, second) =
        conflict_with_own_object(&server, "overwrite").await;
    backend.assert_object(&key, &second).await;
    backend.assert_keys(&[&key]).await;
    inbox.assert_done("plan.pdf", &first);
    inbox.assert_done("plan (1).pdf", &second);
    inbox.assert_no_failures();
}

// ---------------------------------------------------------------------------------------------
// Recognising its own object
// ---------------------------------------------------------------------------------------------

async fn recognises_its_own_object_after_a_crash_before_the_move(server: Server) {
    let backend = server.backend();
    let mut daemon = Daemon::with_backend(&backend, Setup::new());
    let inbox = daemon.inbox().clone();
    let key = inbox.key("a.pdf");
    let bytes = content(30, 120_000);

    // The process dies (abort: no cleanup, no flush) right after the object is stored, before
    // the ledger hears of it and before the move.
    daemon.start_with_env(&[("INBOXD_FAILPOINT", "after-upload")]);
    inbox.drop("a.pdf", &bytes);
    let status = daemon.wait_exit(TIMEOUT).await;
    assert!(
        !status.success(),
        "inboxd should have died at the failpoint"
    );
    backend.assert_object(&key, &bytes).await;
    inbox.assert_holds(&["a.pdf"]);

    daemon.start();
    wait_handled(&inbox, &["a.pdf"]).await;
    daemon.stop().await;

    inbox.assert_done("a.pdf", &bytes);
    inbox.assert_empty();
    backend.assert_object(&key, &bytes).await;
    backend.assert_keys(&[&key]).await;
    assert!(
        recognised(&daemon.stdout(), &key),
        "{}: after the restart inboxd must recognise the object it stored before the crash \
         (log line with already_there=true for {key}), not store it again:\n{}",
        backend.server,
        daemon.stdout()
    );
    let records = daemon.ledger_for("a.pdf").await;
    assert_eq!(records.len(), 1, "ledger records for a.pdf: {records:?}");
    assert_eq!(records[0]["state"], "finished", "{}", records[0]);
    assert_eq!(records[0]["key"], key.as_str());
}

async fn recognises_its_own_object_after_the_ledger_is_lost(server: Server) {
    let backend = server.backend();
    let mut daemon = Daemon::with_backend(&backend, Setup::new());
    let inbox = daemon.inbox().clone();
    let key = inbox.key("b.pdf");
    let bytes = content(31, 90_000);
    daemon.start();
    inbox.drop("b.pdf", &bytes);
    wait_handled(&inbox, &["b.pdf"]).await;
    daemon.stop().await;
    inbox.assert_done("b.pdf", &bytes);

    // The state folder is gone (a new disk, a wiped /var/lib); the same file comes again.
    std::fs::remove_dir_all(daemon.state_dir()).expect("remove the state folder");
    inbox.drop("b.pdf", &bytes);
    daemon.start();
    wait_until(TIMEOUT, "the second b.pdf in done/", || {
        inbox.in_done("b (1).pdf") && !inbox.in_inbox("b.pdf")
    })
    .await;
    daemon.stop().await;

    inbox.assert_done("b (1).pdf", &bytes);
    backend.assert_object(&key, &bytes).await;
    backend.assert_keys(&[&key]).await;
    inbox.assert_no_failures();
    assert!(
        recognised(&daemon.stdout(), &key),
        "{}: without its ledger, inboxd must recognise its own object by its sha256 \
         (log line with already_there=true for {key}), not store it again:\n{}",
        backend.server,
        daemon.stdout()
    );
}

// ---------------------------------------------------------------------------------------------
// Keys
// ---------------------------------------------------------------------------------------------

async fn keys_with_url_and_xml_special_and_non_ascii_characters(server: Server) {
    let backend = server.backend();
    let mut daemon = Daemon::with_backend(&backend, Setup::new());
    let inbox = daemon.inbox().clone();
    let rels = [
        "a&b <c> \"d\" 'e'.pdf",
        "plus+sign and %20 percent.txt",
        "why?#not=1;x.csv",
        "100% sure & more.bin",
        "Überweisung – 東京.pdf",
        "Ordner mit Leerzeichen/x+y=z&w <1>.txt",
        "ünïcödé/naïve café ☕.txt",
    ];
    let files: Vec<(&str, Vec<u8>)> = rels
        .iter()
        .enumerate()
        .map(|(i, rel)| (*rel, content(40 + i as u64, 2_000 + 1_000 * i)))
        .collect();
    for (rel, bytes) in &files {
        inbox.drop(rel, bytes);
    }
    daemon.start();
    wait_handled(&inbox, &rels).await;
    daemon.stop().await;

    for (rel, bytes) in &files {
        inbox.assert_done(rel, bytes);
        backend.assert_object(&inbox.key(rel), bytes).await;
    }
    let keys: Vec<String> = rels.iter().map(|rel| inbox.key(rel)).collect();
    backend
        .assert_keys(&keys.iter().map(String::as_str).collect::<Vec<_>>())
        .await;
    inbox.assert_no_failures();
}

/// Issue 11 on each server: keys rendered from the template, and the object options each
/// server stores (Garage keeps Content-Type, Cache-Control and metadata; it ignores SSE-S3,
/// which inboxd then says, once).
async fn templated_keys_and_object_options(server: Server) {
    let backend = server.backend();
    let setup = Setup::new()
        .inbox_set("key", &toml_str("{inbox}/{dir}/{stem}.{sha256_12}.{ext}"))
        .inbox_set("metadata", r#"{ origin = "{host}", Dept = "lab 2" }"#)
        .inbox_set("cache_control", &toml_str("no-cache"))
        .inbox_set("sse", &toml_str("AES256"));
    let mut daemon = Daemon::with_backend(&backend, setup);
    let inbox = daemon.inbox().clone();
    let files = [
        ("a/scan.pdf", content(60, 4_000), "application/pdf"),
        ("photo.jpg", content(61, 300_000), "image/jpeg"),
    ];
    for (rel, bytes, _) in &files {
        inbox.drop(rel, bytes);
    }
    daemon.start();
    let rels: Vec<&str> = files.iter().map(|(rel, _, _)| *rel).collect();
    wait_handled(&inbox, &rels).await;
    daemon.stop().await;

    let host = rustix::system::uname()
        .nodename()
        .to_string_lossy()
        .into_owned();
    let mut keys = Vec::new();
    for (rel, bytes, content_type) in &files {
        inbox.assert_done(rel, bytes);
        let (dir, name) = rel.rsplit_once('/').unwrap_or(("", rel));
        let (stem, ext) = name.rsplit_once('.').unwrap();
        let sha12 = &sha256_hex(bytes)[..12];
        let below = if dir.is_empty() {
            format!("{}/{stem}.{sha12}.{ext}", inbox.name)
        } else {
            format!("{}/{dir}/{stem}.{sha12}.{ext}", inbox.name)
        };
        let key = format!("{}{below}", inbox.prefix);
        backend.assert_object(&key, bytes).await;
        let h = backend
            .client()
            .head_object()
            .bucket(&backend.bucket)
            .key(&key)
            .send()
            .await
            .unwrap_or_else(|e| panic!("HEAD {key}: {e:?}"));
        assert_eq!(h.content_type(), Some(*content_type), "{key}");
        assert_eq!(h.cache_control(), Some("no-cache"), "{key}");
        let meta = h.metadata().cloned().unwrap_or_default();
        assert_eq!(meta.get("origin"), Some(&host), "{key}: {meta:?}");
        assert_eq!(
            meta.get("dept").map(String::as_str),
            Some("lab 2"),
            "{meta:?}"
        );
        keys.push(key);
    }
    backend
        .assert_keys(&keys.iter().map(String::as_str).collect::<Vec<_>>())
        .await;
    inbox.assert_no_failures();
    let unconfirmed = strip_ansi(&daemon.all_stdout())
        .lines()
        .filter(|l| l.contains("did not confirm server-side encryption"))
        .count();
    match server {
        // The test server confirms what it was asked for, as AWS does.
        Server::Fs { .. } => assert_eq!(unconfirmed, 0),
        Server::Garage { .. } => assert_eq!(unconfirmed, 1, "said once, not per file"),
    }
}

/// Several hosts on one share (issue 12), the bucket's side: host a dies right after its
/// upload, before anything is recorded or moved. Host b takes its claim over and must see
/// that the object is already there with the same SHA-256: on s3s-fs through the create-only
/// write's 412, on Garage (which ignores If-None-Match) through the look before the write.
/// Either way the file goes to done/ without a second upload.
async fn a_dead_hosts_upload_is_recognised_by_the_host_that_takes_over(server: Server) {
    let backend = server.backend();
    let mut a = Daemon::with_backend(&backend, support::shared_host("a", None, "events"));
    let inbox = a.inbox().clone();
    let bytes = content(70, 30_000);
    inbox.drop("scan.pdf", &bytes);
    a.start_with_env(&[("INBOXD_FAILPOINT", "after-upload")]);
    let status = a.wait_exit(TIMEOUT).await;
    assert!(
        !status.success(),
        "the failpoint aborts host a after its upload"
    );
    backend.assert_object(&inbox.key("scan.pdf"), &bytes).await;
    assert!(!inbox.in_done("scan.pdf"), "not moved before the crash");

    let mut b = Daemon::with_backend(&backend, support::shared_host("b", Some(&inbox), "events"));
    b.start();
    wait_handled(&inbox, &["scan.pdf"]).await;
    b.stop().await;
    inbox.assert_done("scan.pdf", &bytes);
    inbox.assert_no_failures();
    backend.assert_object(&inbox.key("scan.pdf"), &bytes).await;
    backend.assert_keys(&[&inbox.key("scan.pdf")]).await;
    let log = strip_ansi(&b.all_stdout());
    assert!(log.contains("took over the claimed files"), "{log}");
    assert!(
        log.lines()
            .any(|l| l.contains("uploaded") && l.contains("already_there=true")),
        "host b recognised host a's object instead of storing it again:\n{log}"
    );
    assert!(!log.contains(" ERROR "), "{log}");
}

// ---------------------------------------------------------------------------------------------
// Outage
// ---------------------------------------------------------------------------------------------

async fn every_file_arrives_after_an_outage(mut server: Server) {
    let backend = server.backend();
    let mut daemon = Daemon::with_backend(&backend, Setup::new());
    let inbox = daemon.inbox().clone();
    daemon.start();
    // A first file goes out: the daemon is connected when the server dies.
    let first = content(50, 10_000);
    inbox.drop("before.pdf", &first);
    wait_handled(&inbox, &["before.pdf"]).await;
    inbox.assert_done("before.pdf", &first);

    server.crash().await;
    let warned_before = warnings(&daemon.stdout());
    let files: Vec<(String, Vec<u8>)> = (0..8)
        .map(|i| {
            let len = if i == 0 { 400_000 } else { 3_000 + 500 * i };
            (format!("during/scan {i}.pdf"), content(60 + i as u64, len))
        })
        .collect();
    for (rel, bytes) in &files {
        inbox.drop(rel, bytes);
    }
    wait_until(
        TIMEOUT,
        "the daemon has met the outage (a new WARN or ERROR line)",
        || warnings(&daemon.stdout()) > warned_before,
    )
    .await;
    for (rel, _) in &files {
        assert!(
            !inbox.in_done(rel) && !inbox.in_failed(rel),
            "{rel} left the inbox while the server was down"
        );
    }

    server.come_back().await;
    let rels: Vec<&str> = files.iter().map(|(rel, _)| rel.as_str()).collect();
    wait_handled(&inbox, &rels).await;
    daemon.stop().await;

    for (rel, bytes) in &files {
        inbox.assert_done(rel, bytes);
        backend.assert_object(&inbox.key(rel), bytes).await;
    }
    let mut keys: Vec<String> = rels.iter().map(|rel| inbox.key(rel)).collect();
    keys.push(inbox.key("before.pdf"));
    backend
        .assert_keys(&keys.iter().map(String::as_str).collect::<Vec<_>>())
        .await;
    inbox.assert_empty();
    inbox.assert_no_failures();
}

// ---------------------------------------------------------------------------------------------
// Provider examples
// ---------------------------------------------------------------------------------------------

const PROVIDERS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/providers");

/// Every provider example is a valid configuration, and every provider the README promises an
/// example for has one.
#[test]
fn every_provider_example_is_a_valid_config() {
    let mut found: Vec<String> = std::fs::read_dir(PROVIDERS)
        .expect("examples/providers")
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|name| name.ends_with(".toml"))
        .collect();
    found.sort();
    assert_eq!(
        found,
        [
            "aws-s3.toml",
            "backblaze-b2.toml",
            "ceph-rgw.toml",
            "cloudflare-r2.toml",
            "garage.toml",
            "minio.toml",
        ],
        "provider examples"
    );
    for name in &found {
        let path = Path::new(PROVIDERS).join(name);
        if let Err(e) = inboxd::config::Settings::load(&path) {
            panic!("{name} is not a valid inboxd config: {e}");
        }
    }
}

/// Sets `key = value` on every uncommented line that assigns `key` (the whole example is
/// otherwise used as it is); panics if the example has no such line.
fn set_in_example(text: &str, key: &str, value: &str) -> String {
    let mut hit = false;
    let out: Vec<String> = text
        .lines()
        .map(|line| {
            let assigns = line
                .strip_prefix(key)
                .is_some_and(|rest| rest.trim_start().starts_with('='));
            if assigns {
                hit = true;
                format!("{key} = {}", toml_str(value))
            } else {
                line.to_owned()
            }
        })
        .collect();
    assert!(hit, "the Garage example has no `{key} = ...` line");
    out.join("\n")
}

/// The Garage provider example, as shipped (its region, path style, prefix, upload settings),
/// uploads a file to a real Garage; only the endpoint, bucket and folders are this test's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_garage_example_works_against_garage() {
    let Some(backend) = garage_server::shared_bucket() else {
        return;
    };
    // Test support configures every Garage with the example's region; this is that check's
    // other half: the region the example signs with is the one the server expects.
    assert_eq!(backend.region, garage_server::example_region());
    let daemon = Daemon::with_backend(&backend, Setup::new());
    let inbox = daemon.inbox().clone();
    let mut text =
        std::fs::read_to_string(garage_server::EXAMPLE).expect("read the Garage example");
    for (key, value) in [
        ("endpoint", backend.endpoint.clone()),
        ("bucket", backend.bucket.clone()),
        (
            "state_dir",
            daemon.state_dir().to_string_lossy().into_owned(),
        ),
        ("path", inbox.path.to_string_lossy().into_owned()),
        ("done_dir", inbox.done.to_string_lossy().into_owned()),
        ("failed_dir", inbox.failed.to_string_lossy().into_owned()),
    ] {
        text = set_in_example(&text, key, &value);
    }
    daemon.write_config(&text);
    let prefix = text
        .lines()
        .find_map(|l| l.strip_prefix("prefix = "))
        .map(|v| v.trim_matches('"').to_owned())
        .unwrap_or_default();
    let bytes = content(70, 50_000);
    inbox.drop("scan.pdf", &bytes);
    let out = daemon.once().await;
    assert_eq!(
        out.code(),
        Some(0),
        "inboxd once with the Garage example\n{out}"
    );
    inbox.assert_done("scan.pdf", &bytes);
    backend
        .assert_object(&format!("{prefix}scan.pdf"), &bytes)
        .await;
}

/// Issue 13: a wrong region is the classic first-hour mistake with Garage (it wants its own
/// `s3_region`). `check` says so, with the region the server expects and the key to fix.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_says_what_region_garage_expects() {
    let Some(backend) = garage_server::shared_bucket() else {
        return;
    };
    let daemon = Daemon::with_backend(&backend, Setup::new());
    let text = daemon.config_text().replace(
        &format!("region = {}", toml_str(&backend.region)),
        "region = \"us-east-1\"",
    );
    assert_ne!(
        text,
        daemon.config_text(),
        "the test config names the region"
    );
    daemon.write_config(&text);
    let out = daemon.check().await;
    assert_eq!(out.code(), Some(1), "{out}");
    let text = out.to_string();
    // Garage names the scope it expects ("…/<its region>/s3/aws4_request"); the hint names
    // the key to set.
    assert!(
        text.contains(&format!("/{}/s3/", backend.region)) && text.contains("set [s3] region"),
        "check does not say which region the server expects, and what to set:\n{text}"
    );
}

//! The operations listener of the real daemon: `/metrics` after uploads, a failure and a
//! duplicate; `/status` with the batch report; `/healthz`; the page in a real browser
//! (headless Chromium) with a hostile file name; a taken port is a clear startup error.

mod support;

use std::path::Path;
use std::process::Command;
use std::sync::Mutex;

use support::http::{get, listener_url};
use support::notify::notify_socket;
use support::s3::TestS3;
use support::{Daemon, Fault, Op, S3ErrorCode, Setup, TIMEOUT, content, toml_str, wait_until};

/// The metric line's value (`name{labels} value`), if the line is there.
fn metric(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find(|l| l.starts_with(series) && l[series.len()..].starts_with(' '))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

async fn started(daemon: &mut Daemon) -> String {
    daemon.start();
    let mut url = None;
    // The listener answers during the startup recovery already: wait for the pipeline too.
    wait_until(
        TIMEOUT,
        "the operations listener and the pipeline are up",
        || {
            let out = daemon.stdout();
            url = listener_url(&out);
            url.is_some() && out.contains("inboxd started")
        },
    )
    .await;
    url.unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_and_status_count_uploads_failures_and_duplicates() {
    let s3 = TestS3::start().await;
    let mut daemon = Daemon::new(&s3, Setup::new());
    let inbox = daemon.inbox().clone();
    let base = started(&mut daemon).await;
    let before = get(&base, "/metrics").await;
    assert_eq!(before.status, 200);
    assert_eq!(
        metric(
            &before.body,
            "inboxd_files_total{inbox=\"in0\",outcome=\"uploaded\"}"
        ),
        Some(0.0),
        "every inbox is there from the start:\n{}",
        before.body
    );

    let a = content(1, 30_000);
    inbox.drop("a.pdf", &a);
    std::os::unix::fs::symlink("/etc/hostname", inbox.file("link.pdf")).expect("symlink");
    wait_until(TIMEOUT, "a.pdf in done/, link.pdf in failed/", || {
        inbox.is_done("a.pdf") && inbox.is_failed("link.pdf")
    })
    .await;
    // The same content at the same path again: a duplicate.
    inbox.drop("a.pdf", &a);
    wait_until(TIMEOUT, "the duplicate is in done/", || {
        inbox.in_done("a (1).pdf") && !inbox.in_inbox("a.pdf")
    })
    .await;
    let mut m = String::new();
    wait_until(TIMEOUT, "the metrics count all three", || {
        m = futures_block(get(&base, "/metrics")).body;
        metric(
            &m,
            "inboxd_files_total{inbox=\"in0\",outcome=\"duplicate\"}",
        ) == Some(1.0)
    })
    .await;
    let series = |s: &str| metric(&m, s).unwrap_or_else(|| panic!("no {s} in\n{m}"));
    assert_eq!(
        series("inboxd_files_total{inbox=\"in0\",outcome=\"uploaded\"}"),
        1.0
    );
    assert_eq!(
        series("inboxd_files_total{inbox=\"in0\",outcome=\"failed\"}"),
        1.0
    );
    assert_eq!(
        series("inboxd_files_total{inbox=\"in0\",outcome=\"deferred\"}"),
        0.0
    );
    assert_eq!(
        series("inboxd_bytes_uploaded_total{inbox=\"in0\"}"),
        30_000.0
    );
    assert_eq!(series("inboxd_upload_duration_seconds_count"), 1.0);
    assert!(series("inboxd_batch_duration_seconds_count") >= 2.0, "{m}");
    assert!(series("inboxd_last_upload_timestamp_seconds{inbox=\"in0\"}") > 1.7e9);
    assert_eq!(series("inboxd_s3_up"), 1.0);
    assert!(m.contains("inboxd_build_info{version="), "{m}");

    let status = get(&base, "/status").await;
    assert_eq!(status.status, 200);
    assert_eq!(status.header("content-type"), Some("application/json"));
    let json: serde_json::Value = serde_json::from_str(&status.body).expect("JSON");
    let files: Vec<serde_json::Value> = json["batches"]
        .as_array()
        .expect("batches")
        .iter()
        .flat_map(|b| b["files"].as_array().cloned().unwrap_or_default())
        .collect();
    let uploaded = files
        .iter()
        .find(|f| f["outcome"] == "uploaded")
        .expect("an uploaded file in the batch reports");
    assert_eq!(uploaded["key"], inbox.key("a.pdf").as_str());
    assert_eq!(uploaded["size"], 30_000);
    assert!(uploaded["duration_ms"].is_u64());
    let failure = &json["recent_failures"][0];
    assert_eq!(failure["path"], "link.pdf");
    assert!(
        failure["reason"].as_str().unwrap_or("").contains("link"),
        "{failure}"
    );
    assert_eq!(json["inboxes"][0]["name"], "in0");
    assert_eq!(json["s3"]["up"], true);
    assert_eq!(get(&base, "/healthz").await.status, 200);
    daemon.stop().await;
}

/// Runs a future to completion from a synchronous closure (wait_until's condition).
fn futures_block<F: std::future::Future>(f: F) -> F::Output {
    tokio::task::block_in_place(|| tokio::runtime::Handle::current().block_on(f))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn healthz_stays_ok_and_the_backlog_grows_while_s3_refuses_everything() {
    let s3 = TestS3::start().await;
    let mut daemon = Daemon::new(&s3, Setup::new());
    let inbox = daemon.inbox().clone();
    s3.push(
        Op::PutObject,
        Fault::reject(S3ErrorCode::ServiceUnavailable).always(),
    );
    let base = started(&mut daemon).await;
    inbox.drop("a.pdf", &content(2, 1000));
    wait_until(TIMEOUT, "S3 has refused the upload", || {
        s3.requests(Op::PutObject) >= 2
    })
    .await;
    let health = get(&base, "/healthz").await;
    assert_eq!(health.status, 200, "{}", health.body);
    assert_eq!(health.body, "ok\n");
    // The waiting file is the backlog, and its age grows.
    let mut m = String::new();
    wait_until(TIMEOUT, "the backlog shows the waiting file", || {
        m = futures_block(get(&base, "/metrics")).body;
        metric(&m, "inboxd_backlog_files{inbox=\"in0\"}") == Some(1.0)
            && metric(&m, "inboxd_oldest_pending_seconds{inbox=\"in0\"}").is_some_and(|a| a > 0.5)
    })
    .await;
    let json: serde_json::Value =
        serde_json::from_str(&get(&base, "/status").await.body).expect("JSON");
    assert_eq!(json["inboxes"][0]["backlog"], 1, "{json}");
    daemon.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_page_renders_in_a_real_browser_and_shows_hostile_names_as_text() {
    let Some(chromium) = support::chromium() else {
        return;
    };
    let s3 = TestS3::start().await;
    let mut daemon = Daemon::new(&s3, Setup::new());
    let inbox = daemon.inbox().clone();
    let base = started(&mut daemon).await;
    inbox.drop("report.pdf", &content(3, 5000));
    // A name that would be markup if it were not escaped.
    let hostile = "<img src=x onerror=alert(1)>.pdf";
    std::os::unix::fs::symlink("/etc/hostname", inbox.file(hostile)).expect("symlink");
    wait_until(TIMEOUT, "both files are handled", || {
        inbox.is_done("report.pdf") && inbox.is_failed(hostile)
    })
    .await;

    let page = get(&base, "/").await;
    assert_eq!(page.status, 200);
    assert!(
        page.header("content-security-policy")
            .is_some_and(|c| c.contains("default-src 'none'")),
        "{:?}",
        page.headers
    );
    // What the browser makes of it: the rendered document, after parsing.
    let out = Command::new(&chromium)
        .args(["--headless", "--no-sandbox", "--disable-gpu", "--dump-dom"])
        .arg(format!("{base}/"))
        .output()
        .expect("run chromium");
    let dom = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "chromium: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    for text in [
        "inboxd",
        "in0",
        "Recent batches",
        "Recent failures",
        "healthy",
    ] {
        assert!(
            dom.contains(text),
            "{text:?} not on the rendered page:\n{dom}"
        );
    }
    assert!(
        dom.contains("&lt;img src=x onerror=alert(1)&gt;.pdf"),
        "the hostile name is not shown as text:\n{dom}"
    );
    assert!(
        !dom.contains("<img"),
        "the hostile name became markup:\n{dom}"
    );
    assert!(dom.contains("<svg"), "no chart:\n{dom}");

    // The screenshot README shows how to make.
    let shot = daemon.dir().join("status.png");
    let out = Command::new(&chromium)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--window-size=1100,900",
        ])
        .arg(format!("--screenshot={}", shot.display()))
        .arg(format!("{base}/"))
        .output()
        .expect("run chromium");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let png = std::fs::read(&shot).expect("screenshot written");
    assert!(png.starts_with(b"\x89PNG"), "not a PNG");
    if let Some(dir) = std::env::var_os("SCREENSHOT_DIR").filter(|d| !d.is_empty()) {
        let _ = std::fs::copy(&shot, Path::new(&dir).join("status.png"));
    }
    daemon.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_taken_port_is_a_clear_startup_error_and_off_means_no_listener() {
    let s3 = TestS3::start().await;
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = taken.local_addr().expect("addr");
    let daemon = Daemon::new(
        &s3,
        Setup::new().set("http", "listen", &toml_str(&addr.to_string())),
    );
    let out = daemon.once().await;
    assert_ne!(out.code(), Some(0), "{out}");
    let text = out.to_string();
    assert!(
        text.contains("[http] listen") && text.contains(&addr.to_string()),
        "the error does not name the key and address:\n{text}"
    );

    let daemon = Daemon::new(&s3, Setup::new().set("http", "listen", "\"off\""));
    let out = daemon.once().await;
    assert_eq!(out.code(), Some(0), "{out}");
    assert!(!out.to_string().contains("operations listener"), "{out}");

    let daemon = Daemon::new(&s3, Setup::new().set("http", "listen", "\"9478\""));
    let out = daemon.check().await;
    assert_eq!(out.code(), Some(2), "{out}");
    assert!(out.to_string().contains("http.listen"), "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_asks_the_running_daemon_and_reads_the_folders_without_one() {
    let s3 = TestS3::start().await;
    // `status` finds the daemon at the configured address: a fixed port here, not port 0.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    let listen = toml_str(&format!("127.0.0.1:{port}"));
    let mut daemon = Daemon::new(&s3, Setup::new().set("http", "listen", &listen));
    let inbox = daemon.inbox().clone();
    let config = daemon.config.to_string_lossy().into_owned();
    std::os::unix::fs::symlink("/etc/hostname", inbox.file("link.pdf")).expect("symlink");
    let base = started(&mut daemon).await;
    // The file is moved first, and its outcome reported to /status just after: wait for
    // the report, not only for the move.
    wait_until(
        TIMEOUT,
        "link.pdf is in failed/ and among the recent failures",
        || {
            inbox.is_failed("link.pdf")
                && futures_block(get(&base, "/status"))
                    .body
                    .contains("link.pdf")
        },
    )
    .await;

    let out = daemon.cli(&["status", "--config", &config], &[]).await;
    assert_eq!(out.code(), Some(0), "{out}");
    let text = out.to_string();
    assert!(text.contains("pipeline healthy; S3 up"), "{text}");
    assert!(text.contains("in0"), "{text}");
    assert!(text.contains("link.pdf: this is a symbolic link"), "{text}");
    let out = daemon
        .cli(&["status", "--json", "--config", &config], &[])
        .await;
    assert_eq!(out.code(), Some(0), "{out}");
    let json: serde_json::Value = serde_json::from_str(&out.stdout).expect("JSON");
    assert_eq!(json["recent_failures"][0]["path"], "link.pdf");
    daemon.stop().await;

    inbox.drop("waiting.pdf", b"not yet");
    let out = daemon.cli(&["status", "--config", &config], &[]).await;
    assert_eq!(out.code(), Some(0), "{out}");
    let text = out.to_string();
    assert!(text.contains("no daemon answers"), "{text}");
    assert!(text.contains("in0: 1 waiting"), "{text}");
    assert!(
        text.contains("failed: link.pdf: this is a symbolic link"),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retry_sends_failed_files_through_again_with_and_without_the_daemon() {
    let s3 = TestS3::start().await;
    let mut daemon = Daemon::new(&s3, Setup::new());
    let inbox = daemon.inbox().clone();
    let config = daemon.config.to_string_lossy().into_owned();
    let (a, b) = (content(5, 20_000), content(6, 30_000));
    // Refused for good once each: both go to failed/ with a reason.
    for key in [inbox.key("a.pdf"), inbox.key("sub/b.pdf")] {
        s3.push(
            Op::PutObject,
            Fault::reject(S3ErrorCode::InvalidArgument)
                .for_key(key)
                .times(1),
        );
    }
    started(&mut daemon).await;
    inbox.drop("a.pdf", &a);
    inbox.drop("sub/b.pdf", &b);
    wait_until(TIMEOUT, "both are in failed/", || {
        inbox.is_failed("a.pdf") && inbox.is_failed("sub/b.pdf")
    })
    .await;

    // With the daemon running: a.pdf only.
    let out = daemon
        .cli(&["retry", "--config", &config, "a.pdf"], &[])
        .await;
    assert_eq!(out.code(), Some(0), "{out}");
    assert!(out.stdout.contains("moved   in0: a.pdf"), "{out}");
    wait_until(TIMEOUT, "a.pdf is in done/", || inbox.is_done("a.pdf")).await;
    assert!(
        !inbox.failed.join("a.pdf.reason.txt").exists(),
        "reason file left"
    );
    support::assert_object(&s3, &inbox.key("a.pdf"), &a).await;
    daemon.stop().await;

    // Without the daemon: the rest, then one sweep.
    let out = daemon.cli(&["retry", "--config", &config], &[]).await;
    assert_eq!(out.code(), Some(0), "{out}");
    assert!(out.stdout.contains("moved   in0: sub/b.pdf"), "{out}");
    let out = daemon.once().await;
    assert_eq!(out.code(), Some(0), "{out}");
    support::assert_object(&s3, &inbox.key("sub/b.pdf"), &b).await;
    inbox.assert_done("sub/b.pdf", &b);
    inbox.assert_no_failures();

    let out = daemon
        .cli(&["retry", "--config", &config, "nope.pdf"], &[])
        .await;
    assert_eq!(out.code(), Some(1), "{out}");
    assert!(
        out.stdout.contains("skipped in0: nope.pdf: not in"),
        "{out}"
    );
}

/// Every file below `dir`: its path, bytes and modification time (to prove nothing changed).
fn snapshot(dir: &Path) -> Vec<(std::path::PathBuf, Vec<u8>, std::time::SystemTime)> {
    let mut files = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for entry in std::fs::read_dir(&d).expect("read_dir") {
            let path = entry.expect("entry").path();
            let meta = std::fs::symlink_metadata(&path).expect("metadata");
            if meta.is_dir() {
                todo.push(path.clone());
            }
            let bytes = if meta.is_file() {
                std::fs::read(&path).expect("read")
            } else {
                Vec::new()
            };
            files.push((path, bytes, meta.modified().expect("mtime")));
        }
    }
    files.sort();
    files
}

fn ledger_lines(out: &support::CliOutput) -> Vec<serde_json::Value> {
    out.stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}\n{out}")))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ledger_asks_the_running_daemon_and_reads_without_writing_when_none_runs() {
    use sha2::Digest as _;
    let s3 = TestS3::start().await;
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    let listen = toml_str(&format!("127.0.0.1:{port}"));
    let mut daemon = Daemon::new(&s3, Setup::new().set("http", "listen", &listen));
    let inbox = daemon.inbox().clone();
    let config = daemon.config.to_string_lossy().into_owned();
    let state = daemon.state_dir();

    // Nothing recorded yet: nothing printed, and no ledger (not even its folder) created.
    let out = daemon.cli(&["ledger", "--config", &config], &[]).await;
    assert_eq!(out.code(), Some(0), "{out}");
    assert_eq!(out.stdout, "", "{out}");
    assert!(out.stderr.contains("no ledger"), "{out}");
    assert!(!state.exists(), "inboxd ledger created {}", state.display());

    // While the daemon runs (it holds sled's lock): through the daemon.
    let a = content(41, 30_000);
    started(&mut daemon).await;
    inbox.drop("a.pdf", &a);
    wait_until(TIMEOUT, "a.pdf is in done/", || inbox.is_done("a.pdf")).await;
    let out = daemon.cli(&["ledger", "--config", &config], &[]).await;
    assert_eq!(out.code(), Some(0), "{out}");
    let running = ledger_lines(&out);
    let rec = running
        .iter()
        .find(|r| r["rel_path"] == "a.pdf")
        .unwrap_or_else(|| panic!("no record of a.pdf: {out}"));
    assert_eq!(
        rec["sha256"],
        hex::encode(sha2::Sha256::digest(&a)),
        "{rec}"
    );
    assert_eq!(rec["key"], inbox.key("a.pdf").as_str(), "{rec}");
    daemon.stop().await;

    // Without a daemon: the same records, and state_dir exactly as it was, byte for byte.
    let before = snapshot(&state);
    assert!(!before.is_empty());
    let out = daemon.cli(&["ledger", "--config", &config], &[]).await;
    assert_eq!(out.code(), Some(0), "{out}");
    let stopped = ledger_lines(&out);
    assert_eq!(stopped.len(), running.len(), "{out}");
    let stopped_rec = stopped
        .iter()
        .find(|r| r["rel_path"] == "a.pdf")
        .unwrap_or_else(|| panic!("no record of a.pdf: {out}"));
    assert_eq!(stopped_rec["state"], "finished", "{out}");
    assert_eq!(stopped_rec["sha256"], rec["sha256"]);
    assert_eq!(snapshot(&state), before, "inboxd ledger changed state_dir");

    // A running daemon that cannot be asked (listener off): a clear refusal, not a hang.
    daemon.write_config(&daemon.config_text().replace(&listen, "\"off\""));
    daemon.start();
    wait_until(TIMEOUT, "the daemon has started", || {
        daemon.stdout().contains("inboxd started")
    })
    .await;
    let out = daemon.cli(&["ledger", "--config", &config], &[]).await;
    assert_eq!(out.code(), Some(1), "{out}");
    assert!(
        out.stderr.contains("a running inboxd holds the ledger"),
        "{out}"
    );
    assert!(out.stderr.contains("[http] listen"), "{out}");
    daemon.stop().await;
}

fn pings_since(got: &Mutex<Vec<(std::time::Instant, String)>>, t: std::time::Instant) -> usize {
    got.lock()
        .unwrap()
        .iter()
        .filter(|(at, m)| *at >= t && m.lines().any(|l| l == "WATCHDOG=1"))
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watchdog_pings_while_the_pipeline_moves_and_stop_when_a_stage_is_stuck() {
    let s3 = TestS3::start().await;
    let mut daemon = Daemon::new(&s3, Setup::new());
    let inbox = daemon.inbox().clone();
    let sock_path = daemon.dir().join("notify.sock");
    let got = notify_socket(&sock_path);
    let sock = sock_path.to_string_lossy().into_owned();
    // A 400 ms watchdog: pings every 200 ms; a stage is stuck after 800 ms without progress.
    daemon.start_with_env(&[
        ("NOTIFY_SOCKET", &sock),
        ("WATCHDOG_USEC", "400000"),
        ("INBOXD_FAILPOINT", "finish-hang"),
    ]);
    let mut base = None;
    wait_until(TIMEOUT, "the listener is up", || {
        base = listener_url(&daemon.stdout());
        base.is_some()
    })
    .await;
    let base = base.unwrap_or_default();
    let t0 = std::time::Instant::now();
    wait_until(TIMEOUT, "READY and watchdog pings arrive", || {
        pings_since(&got, t0) >= 3
    })
    .await;
    assert!(
        got.lock()
            .unwrap()
            .iter()
            .any(|(_, m)| m.contains("READY=1")),
        "no READY=1"
    );
    assert_eq!(get(&base, "/healthz").await.status, 200);

    // The finish stage hangs on the first file it gets (the failpoint).
    inbox.drop("a.pdf", &content(7, 1000));
    let mut health = None;
    wait_until(TIMEOUT, "/healthz reports the stuck stage", || {
        let h = futures_block(get(&base, "/healthz"));
        let stuck = h.status == 503;
        health = Some(h);
        stuck
    })
    .await;
    let health = health.expect("an answer");
    assert!(health.body.contains("finish"), "{}", health.body);
    // From now on no ping: over a second (five ping periods) not one.
    let t1 = std::time::Instant::now();
    let until = t1 + std::time::Duration::from_millis(1000);
    wait_until(TIMEOUT, "a second without pings", || {
        std::time::Instant::now() >= until
    })
    .await;
    assert_eq!(
        pings_since(&got, t1),
        0,
        "pings went on while a stage was stuck"
    );
    assert!(
        daemon.stdout().contains("a pipeline stage is stuck"),
        "{}",
        daemon.stdout()
    );
    daemon.kill().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_up_falls_during_an_outage_while_healthz_stays_ok_and_paused_and_retries_are_counted() {
    let s3 = TestS3::start().await;
    let mut daemon = Daemon::new(&s3, Setup::new().inboxes(2));
    let (in0, in1) = (daemon.inboxes()[0].clone(), daemon.inboxes()[1].clone());
    let base = started(&mut daemon).await;
    let metrics = |m: &str, s: &str| metric(m, s);

    // An outage: the endpoint refuses connections.
    s3.go_down();
    in0.drop("a.pdf", &content(8, 2000));
    let mut m = String::new();
    wait_until(TIMEOUT, "inboxd_s3_up falls to 0", || {
        m = futures_block(get(&base, "/metrics")).body;
        metrics(&m, "inboxd_s3_up") == Some(0.0)
    })
    .await;
    assert_eq!(
        get(&base, "/healthz").await.status,
        200,
        "an outage is not a stuck daemon"
    );
    let json: serde_json::Value =
        serde_json::from_str(&get(&base, "/status").await.body).expect("JSON");
    assert_eq!(json["s3"]["up"], false, "{json}");
    s3.come_back();
    wait_until(TIMEOUT, "a.pdf is in done/ after the outage", || {
        in0.is_done("a.pdf")
    })
    .await;
    m = get(&base, "/metrics").await.body;
    assert_eq!(metrics(&m, "inboxd_s3_up"), Some(1.0), "{m}");

    // Throttling: per-file retries, counted.
    s3.push(Op::PutObject, Fault::reject(S3ErrorCode::SlowDown).times(2));
    in0.drop("b.pdf", &content(9, 2000));
    wait_until(TIMEOUT, "b.pdf is in done/", || in0.is_done("b.pdf")).await;
    m = get(&base, "/metrics").await.body;
    assert!(
        metrics(&m, "inboxd_retries_total").is_some_and(|r| r >= 2.0),
        "{m}"
    );

    // A bucket problem pauses in1 only.
    s3.push(
        Op::PutObject,
        Fault::reject(S3ErrorCode::AccessDenied)
            .for_key(in1.key("c.pdf"))
            .always(),
    );
    in1.drop("c.pdf", &content(10, 2000));
    wait_until(TIMEOUT, "in1 is shown paused", || {
        m = futures_block(get(&base, "/metrics")).body;
        metrics(&m, "inboxd_inbox_paused{inbox=\"in1\"}") == Some(1.0)
    })
    .await;
    assert_eq!(metrics(&m, "inboxd_inbox_paused{inbox=\"in0\"}"), Some(0.0));
    let json: serde_json::Value =
        serde_json::from_str(&get(&base, "/status").await.body).expect("JSON");
    assert!(
        json["inboxes"][1]["paused"]
            .as_str()
            .is_some_and(|r| r.contains("AccessDenied") || r.contains("denied")),
        "{json}"
    );
    daemon.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outage_is_not_a_stuck_daemon_for_the_watchdog() {
    let s3 = TestS3::start().await;
    let mut daemon = Daemon::new(&s3, Setup::new());
    let inbox = daemon.inbox().clone();
    let sock_path = daemon.dir().join("notify.sock");
    let got = notify_socket(&sock_path);
    let sock = sock_path.to_string_lossy().into_owned();
    // A 1 s watchdog: a stage would count as stuck after 2 s without progress. (With 400 ms,
    // a ledger flush slowed by a build beside the test passed the 800 ms stuck time after
    // the outage, 2 runs in 10: a slow disk, not what this test is about.)
    daemon.start_with_env(&[("NOTIFY_SOCKET", &sock), ("WATCHDOG_USEC", "1000000")]);
    let mut base = None;
    wait_until(TIMEOUT, "the listener is up", || {
        base = listener_url(&daemon.stdout());
        base.is_some()
    })
    .await;
    let base = base.unwrap_or_default();
    wait_until(TIMEOUT, "READY=1", || {
        got.lock()
            .unwrap()
            .iter()
            .any(|(_, m)| m.contains("READY=1"))
    })
    .await;
    s3.go_down();
    let files: Vec<(String, Vec<u8>)> = (0..3)
        .map(|i| (format!("o{i}.pdf"), content(20 + i, 3000)))
        .collect();
    for (rel, bytes) in &files {
        inbox.drop(rel, bytes);
    }
    wait_until(TIMEOUT, "the outage is seen", || {
        metric(&futures_block(get(&base, "/metrics")).body, "inboxd_s3_up") == Some(0.0)
    })
    .await;
    // Four seconds of outage, files held at the gate: twice the 2 s stuck time.
    let t1 = std::time::Instant::now();
    let until = t1 + std::time::Duration::from_millis(4000);
    wait_until(TIMEOUT, "four seconds of outage", || {
        std::time::Instant::now() >= until
    })
    .await;
    assert!(
        pings_since(&got, t1) >= 5,
        "the watchdog stopped during an outage: {} pings in 4 s",
        pings_since(&got, t1)
    );
    assert_eq!(get(&base, "/healthz").await.status, 200);
    s3.come_back();
    wait_until(TIMEOUT, "every file is in done/ after the outage", || {
        files.iter().all(|(rel, _)| inbox.is_done(rel))
    })
    .await;
    daemon.stop().await;
    assert!(
        !daemon.stdout().contains("a pipeline stage is stuck"),
        "{}",
        daemon.stdout()
    );
}

//! The command line: config errors exit 2 naming the key and where it came from, `once` and
//! `check` report through their exit codes.

mod support;

use support::s3::TestS3;
use support::{
    BUCKET, CliOutput, Daemon, Fault, Op, S3ErrorCode, Setup, TIMEOUT, assert_bytes_eq,
    assert_object, content, toml_str, wait_until,
};

/// Runs `inboxd once` with this config (and env) and expects exit 2 with every `needles` in
/// stderr, plus the config file path unless `names_file` is false.
async fn assert_rejected(
    daemon: &Daemon,
    env: &[(&str, &str)],
    needles: &[&str],
    names_file: bool,
) {
    let config = daemon.config.to_string_lossy().into_owned();
    let out = daemon.cli(&["once", "--config", &config], env).await;
    assert_eq!(out.code(), Some(2), "expected exit 2\n{out}");
    // The path itself contains "inbox": look for the key names elsewhere.
    let rest = out.stderr.replace(&config, "");
    for needle in needles {
        assert!(
            rest.contains(needle),
            "stderr does not mention {needle:?}\n{out}"
        );
    }
    if names_file {
        assert!(
            out.stderr.contains(&config),
            "stderr does not name the config file {config}\n{out}"
        );
    }
    // Nothing was touched.
    for inbox in daemon.inboxes() {
        assert!(
            inbox.done_files().is_empty(),
            "{} done/ written",
            inbox.name
        );
    }
}

async fn reject_setup(setup: Setup, needles: &[&str]) {
    let s3 = TestS3::start().await;
    let daemon = Daemon::new(&s3, setup);
    assert_rejected(&daemon, &[], needles, true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_top_level_key_is_rejected() {
    reject_setup(Setup::new().set("", "stat_dir", "\"/tmp\""), &["stat_dir"]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_key_in_upload_is_rejected() {
    reject_setup(
        Setup::new().set("upload", "concurency", "4"),
        &["concurency", "upload"],
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_type_is_rejected() {
    reject_setup(
        Setup::new().set("upload", "concurrency", "\"many\""),
        &["upload.concurrency"],
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unparsable_duration_is_rejected() {
    reject_setup(Setup::new().settle("soon"), &["settle"]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unparsable_size_is_rejected() {
    reject_setup(
        Setup::new().set("batch", "max_bytes", "\"lots\""),
        &["batch.max_bytes"],
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bare_number_for_a_duration_is_rejected_with_the_form_to_write() {
    let s3 = TestS3::start().await;
    let daemon = Daemon::new(&s3, Setup::new().inbox_set("settle", "2"));
    let line = 1 + daemon
        .config_text()
        .lines()
        .position(|l| l == "settle = 2")
        .expect("the settle line");
    assert_rejected(
        &daemon,
        &[],
        &[
            &format!(", line {line}: "),
            "inbox[0].settle",
            "settle = \"2s\"",
        ],
        true,
    )
    .await;
    // From the environment, the message says how to write the variable.
    assert_rejected(
        &Daemon::new(&s3, Setup::new()),
        &[("INBOXD_UPLOAD__RETRY_LATER", "60")],
        &["INBOXD_UPLOAD__RETRY_LATER=\"60s\""],
        false,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bare_number_for_a_size_is_rejected_with_the_form_to_write() {
    for (value, want) in [
        ("1073741824", "max_bytes = \"1 GiB\""),
        ("\"1000\"", "max_bytes = \"1000 B\""),
    ] {
        reject_setup(
            Setup::new().set("batch", "max_bytes", value),
            &["batch.max_bytes", want],
        )
        .await;
    }
    reject_setup(
        Setup::new().set("upload", "part_size", "8388608"),
        &["upload.part_size", "part_size = \"8 MiB\""],
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_key_is_named_once_without_nested_quotes() {
    let s3 = TestS3::start().await;
    let daemon = Daemon::new(&s3, Setup::new().set("upload", "concurency", "4"));
    let out = daemon.once().await;
    assert_eq!(out.code(), Some(2), "{out}");
    let lines: Vec<&str> = out.stderr.lines().collect();
    assert_eq!(lines.len(), 1, "one line\n{out}");
    assert!(
        lines[0]
            .contains("key `upload.concurency`: not a known key; the keys here are concurrency, "),
        "{out}"
    );
    assert_eq!(
        lines[0].matches('`').count(),
        2,
        "only the key is quoted\n{out}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn zero_concurrency_is_rejected() {
    reject_setup(Setup::new().concurrency(0), &["upload.concurrency"]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inbox_without_bucket_is_rejected() {
    reject_setup(Setup::new().inbox_unset("bucket"), &["bucket"]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prefix_without_a_closing_slash_is_rejected() {
    // "team" + a folder "-hr" would write into the key space of a prefix "team-hr/".
    reject_setup(
        Setup::new().inbox_set("prefix", "\"team\""),
        &["inbox[0].prefix", "must end with '/'"],
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn duplicate_inbox_names_are_rejected() {
    reject_setup(
        Setup::new().inboxes(2).inbox_set("name", "\"twin\""),
        &["twin"],
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn config_without_inbox_is_rejected() {
    reject_setup(Setup::new().inboxes(0), &["inbox"]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_config_file_is_rejected() {
    let s3 = TestS3::start().await;
    let daemon = Daemon::new(&s3, Setup::new());
    let missing = daemon.dir().join("nope/inboxd.toml");
    let missing = missing.to_string_lossy();
    let out = daemon.cli(&["once", "--config", &missing], &[]).await;
    assert_eq!(out.code(), Some(2), "{out}");
    assert!(
        out.stderr.contains(missing.as_ref()),
        "stderr must name {missing}\n{out}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unparsable_toml_is_rejected() {
    let s3 = TestS3::start().await;
    let daemon = Daemon::new(&s3, Setup::new());
    daemon.write_config("state_dir = \"/tmp/x\"\n[upload\nconcurrency = = 3\n");
    assert_rejected(&daemon, &[], &[], true).await;
}

/// Points `done_dir` or `failed_dir` of the only inbox into the inbox itself.
async fn reject_dir_inside_inbox(key: &str) {
    let s3 = TestS3::start().await;
    let daemon = Daemon::new(&s3, Setup::new());
    let inbox = daemon.inbox().clone();
    let current = if key == "done_dir" {
        &inbox.done
    } else {
        &inbox.failed
    };
    let inside = inbox.path.join("sub");
    let text = daemon.config_text().replace(
        &format!("{key} = {}", toml_str(&current.to_string_lossy())),
        &format!("{key} = {}", toml_str(&inside.to_string_lossy())),
    );
    assert!(text.contains(&inside.to_string_lossy().into_owned()));
    daemon.write_config(&text);
    assert_rejected(&daemon, &[], &[key], true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn done_dir_inside_the_inbox_is_rejected() {
    reject_dir_inside_inbox("done_dir").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_dir_inside_the_inbox_is_rejected() {
    reject_dir_inside_inbox("failed_dir").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_env_override_is_rejected_naming_the_variable() {
    let s3 = TestS3::start().await;
    let daemon = Daemon::new(&s3, Setup::new());
    assert_rejected(
        &daemon,
        &[("INBOXD_UPLOAD__CONCURRENCY", "abc")],
        &["INBOXD_UPLOAD__CONCURRENCY"],
        false,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn env_override_is_applied() {
    // The config file names one server, the environment another: the file must reach the
    // one the environment names, so the override provably took effect.
    let in_file = TestS3::start().await;
    let in_env = TestS3::start().await;
    let daemon = Daemon::new(&in_file, Setup::new());
    let inbox = daemon.inbox().clone();
    let bytes = content(7, 20_000);
    inbox.drop("over.pdf", &bytes);
    let config = daemon.config.to_string_lossy().into_owned();
    let out = daemon
        .cli(
            &["once", "--config", &config],
            &[("INBOXD_S3__ENDPOINT", in_env.endpoint())],
        )
        .await;
    assert_eq!(out.code(), Some(0), "{out}");
    inbox.assert_done("over.pdf", &bytes);
    assert_object(&in_env, &inbox.key("over.pdf"), &bytes).await;
    assert_eq!(
        in_file.list(BUCKET).await,
        Vec::<String>::new(),
        "objects at the endpoint the environment overrode"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn once_exits_0_when_every_file_went_out() {
    let s3 = TestS3::start().await;
    let daemon = Daemon::new(&s3, Setup::new());
    let inbox = daemon.inbox().clone();
    let files = [
        ("a.pdf", content(1, 10_000)),
        ("b/c.pdf", content(2, 20_000)),
    ];
    for (rel, bytes) in &files {
        inbox.drop(rel, bytes);
    }

    let out = daemon.once().await;
    assert_eq!(out.code(), Some(0), "{out}");
    for (rel, bytes) in &files {
        inbox.assert_done(rel, bytes);
        let object = s3.get(BUCKET, &inbox.key(rel)).await.expect("object");
        assert_bytes_eq(rel, &object, bytes);
    }
    inbox.assert_empty();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn once_exits_1_when_a_file_went_to_failed() {
    let s3 = TestS3::start().await;
    let daemon = Daemon::new(&s3, Setup::new());
    let inbox = daemon.inbox().clone();
    s3.push(
        Op::PutObject,
        Fault::reject(S3ErrorCode::InvalidArgument)
            .for_key(inbox.key("bad.pdf"))
            .always(),
    );
    let good = content(3, 10_000);
    let bad = content(4, 10_000);
    inbox.drop("good.pdf", &good);
    inbox.drop("bad.pdf", &bad);

    let out = daemon.once().await;
    assert_eq!(out.code(), Some(1), "{out}");
    inbox.assert_done("good.pdf", &good);
    inbox.assert_failed("bad.pdf");
    assert_bytes_eq(
        "failed/bad.pdf",
        &std::fs::read(inbox.failed.join("bad.pdf")).expect("failed copy"),
        &bad,
    );
    inbox.assert_empty();
}

fn lines_starting<'a>(out: &'a CliOutput, word: &str) -> Vec<&'a str> {
    out.stdout
        .lines()
        .filter(|l| l.trim_start().starts_with(word))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_passes_against_a_healthy_server_without_side_effects() {
    let s3 = TestS3::start().await;
    let daemon = Daemon::new(&s3, Setup::new().inboxes(2));

    let out = daemon.check().await;
    assert_eq!(out.code(), Some(0), "{out}");
    let ok = lines_starting(&out, "ok");
    assert_eq!(
        ok.len(),
        3,
        "one ok line for the state_dir, one per inbox\n{out}"
    );
    assert!(ok[0].contains("state_dir"), "{out}");
    assert!(ok.iter().any(|l| l.contains("in0")), "{out}");
    assert!(ok.iter().any(|l| l.contains("in1")), "{out}");
    assert!(lines_starting(&out, "FAIL").is_empty(), "{out}");
    let server = lines_starting(&out, "server of bucket");
    assert_eq!(server.len(), 1, "one capability line per bucket\n{out}");
    assert!(
        server[0].contains("If-None-Match on PUT honoured")
            && server[0].contains("SHA-256 checksum honoured"),
        "{out}"
    );

    // The write probe and the capability probe leave nothing behind.
    assert!(
        s3.list(BUCKET).await.is_empty(),
        "check left objects behind"
    );
    assert!(s3.requests(Op::HeadBucket) >= 2, "HeadBucket per inbox");
    assert_eq!(
        s3.requests(Op::CreateMultipartUpload),
        s3.requests(Op::AbortMultipartUpload),
        "every probe upload must be aborted"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_fails_when_access_is_denied() {
    let s3 = TestS3::start().await;
    let daemon = Daemon::new(&s3, Setup::new());
    s3.push(
        Op::HeadBucket,
        Fault::reject(S3ErrorCode::AccessDenied).always(),
    );

    let out = daemon.check().await;
    assert_eq!(out.code(), Some(1), "{out}");
    let fail = lines_starting(&out, "FAIL");
    assert!(
        fail.iter().any(|l| l.contains("in0")),
        "no FAIL line naming inbox in0\n{out}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_fails_for_a_missing_bucket_and_names_the_inbox() {
    let s3 = TestS3::start().await;
    let daemon = Daemon::new(
        &s3,
        Setup::new()
            .inboxes(2)
            .inbox_set_at(1, "bucket", "\"no-such-bucket\""),
    );

    let out = daemon.check().await;
    assert_eq!(out.code(), Some(1), "{out}");
    let fail = lines_starting(&out, "FAIL");
    assert_eq!(fail.len(), 1, "exactly one FAIL line\n{out}");
    assert!(fail[0].contains("in1"), "FAIL line must name in1\n{out}");
    let ok = lines_starting(&out, "ok");
    assert!(ok.iter().any(|l| l.contains("in0")), "in0 is fine\n{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn help_works_and_unknown_subcommand_exits_2() {
    let s3 = TestS3::start().await;
    let daemon = Daemon::new(&s3, Setup::new());

    let help = daemon.cli(&["--help"], &[]).await;
    assert_eq!(help.code(), Some(0), "{help}");
    for sub in ["run", "once", "check", "ledger"] {
        assert!(
            help.stdout.contains(sub),
            "--help does not list {sub}\n{help}"
        );
    }

    let unknown = daemon.cli(&["frobnicate"], &[]).await;
    assert_eq!(unknown.code(), Some(2), "{unknown}");
    assert!(
        !unknown.stderr.is_empty(),
        "usage error without message\n{unknown}"
    );

    let bad_flag = daemon.cli(&["run", "--no-such-flag"], &[]).await;
    assert_eq!(bad_flag.code(), Some(2), "{bad_flag}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_with_an_inbox_path_that_is_a_file_exits_2() {
    // A missing inbox folder is waited for (tests/sandbox.rs); a path that names a file is a
    // mistake in the configuration.
    let s3 = TestS3::start().await;
    let mut daemon = Daemon::new(&s3, Setup::new());
    let path = daemon.inbox().path.to_string_lossy().into_owned();
    std::fs::remove_dir(&path).expect("remove inbox");
    std::fs::write(&path, b"not a folder").expect("write a file in its place");
    daemon.start();
    let status = daemon.wait_exit(TIMEOUT).await;
    assert_eq!(status.code(), Some(2), "inboxd run exited with {status}");
    assert!(
        daemon.stderr().contains(&path) && daemon.stderr().contains("inbox[0].path"),
        "the error must name the key and the path {path}\nstderr:\n{}",
        daemon.stderr()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_region_comes_from_the_config_else_the_aws_chain_else_us_east_1() {
    let s3 = TestS3::start().await;
    let daemon = Daemon::new(&s3, Setup::new());
    let configured = daemon.config_text();
    let config = daemon.config.to_string_lossy().into_owned();
    let check = ["check", "--config", config.as_str()];
    let env = [("AWS_REGION", "eu-west-3")];
    assert!(
        configured.contains("region = \"us-east-1\"\n"),
        "{configured}"
    );

    // Configured: the configuration wins over the environment.
    daemon.write_config(&configured.replace("\"us-east-1\"", "\"ap-south-1\""));
    let out = daemon.cli(&check, &env).await;
    assert_eq!(out.code(), Some(0), "{out}");
    assert_eq!(s3.signing_regions(), vec!["ap-south-1".to_owned()]);

    let s3 = TestS3::start().await;
    let daemon = Daemon::new(&s3, Setup::new());
    let text = daemon.config_text().replace("region = \"us-east-1\"\n", "");
    daemon.write_config(&text);
    let config = daemon.config.to_string_lossy().into_owned();
    let check = ["check", "--config", config.as_str()];
    let out = daemon.cli(&check, &env).await;
    assert_eq!(out.code(), Some(0), "{out}");
    assert_eq!(
        s3.signing_regions(),
        vec!["eu-west-3".to_owned()],
        "not set: AWS_REGION"
    );

    let s3 = TestS3::start().await;
    let daemon = Daemon::new(&s3, Setup::new());
    let text = daemon.config_text().replace("region = \"us-east-1\"\n", "");
    daemon.write_config(&text);
    let config = daemon.config.to_string_lossy().into_owned();
    let out = daemon
        .cli(&["check", "--config", config.as_str()], &[])
        .await;
    assert_eq!(out.code(), Some(0), "{out}");
    assert_eq!(
        s3.signing_regions(),
        vec!["us-east-1".to_owned()],
        "neither set nor in the environment: us-east-1"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn under_journald_every_line_carries_its_priority_in_text_and_json() {
    for format in ["text", "json"] {
        let s3 = TestS3::start().await;
        let mut daemon = Daemon::new(&s3, Setup::new().set("log", "format", &toml_str(format)));
        let inbox = daemon.inbox().clone();
        // JOURNAL_STREAM is how systemd tells a service that stdout is the journal.
        daemon.start_with_env(&[("JOURNAL_STREAM", "8:12345")]);
        std::os::unix::fs::symlink("/etc/hostname", inbox.file("link.pdf")).expect("symlink");
        inbox.drop("ok.txt", b"fine");
        wait_until(TIMEOUT, "both files are handled", || {
            inbox.is_done("ok.txt") && inbox.is_failed("link.pdf")
        })
        .await;
        daemon.stop().await;
        let out = daemon.stdout();
        let lines: Vec<&str> = out.lines().filter(|l| !l.is_empty()).collect();
        assert!(lines.len() >= 4, "{format}: {out}");
        for line in &lines {
            let prio = line.strip_prefix('<').and_then(|l| l.split_once('>'));
            assert!(
                prio.is_some_and(|(p, _)| ["3", "4", "6", "7"].contains(&p)),
                "{format}: a line without a priority prefix: {line}"
            );
        }
        let with = |prio: &str, text: &str| {
            lines
                .iter()
                .any(|l| l.starts_with(prio) && l.contains(text))
        };
        assert!(with("<6>", "inboxd started"), "{format}: {out}");
        assert!(with("<4>", "moved to failed/"), "{format}: {out}");
        if format == "json" {
            for line in &lines {
                let json = line.split_once('>').map(|(_, j)| j).unwrap_or_default();
                let v: serde_json::Value = serde_json::from_str(json)
                    .unwrap_or_else(|e| panic!("not JSON after the prefix ({e}): {line}"));
                assert!(v.get("message").is_some(), "flat event fields: {line}");
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_log_dir_that_does_not_exist_yet_is_made_without_a_stray_line() {
    let s3 = TestS3::start().await;
    let logs = tempfile::tempdir().expect("tempdir");
    let dir = logs.path().join("var/log/inboxd");
    let daemon = Daemon::new(
        &s3,
        Setup::new().set("log", "dir", &toml_str(&dir.to_string_lossy())),
    );
    let inbox = daemon.inbox().clone();
    inbox.drop("a.pdf", b"first run");
    assert!(!dir.exists());

    let out = daemon.once().await;
    assert_eq!(out.code(), Some(0), "{out}");
    inbox.assert_done("a.pdf", b"first run");
    assert!(out.stderr.is_empty(), "stray lines on stderr\n{out}");
    for line in out.stdout.lines().filter(|l| !l.is_empty()) {
        // Each line of the text log starts with its timestamp ("2026-...").
        assert!(
            line.starts_with(|c: char| c.is_ascii_digit()) && line.contains("Z "),
            "a line without the log's prefix: {line:?}\n{out}"
        );
    }
    // The daily log file, beside the batch journal (batches.jsonl).
    let files: Vec<_> = std::fs::read_dir(&dir)
        .expect("the log dir was made")
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.file_name() != Some(std::ffi::OsStr::new("batches.jsonl")))
        .collect();
    assert_eq!(files.len(), 1, "{files:?}");
    assert!(dir.join("batches.jsonl").is_file(), "no batch journal");
    let logged = std::fs::read_to_string(&files[0]).expect("read the log file");
    assert!(logged.contains("\"uploaded\""), "{logged}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn once_while_the_daemon_runs_exits_1_and_says_why_once() {
    let s3 = TestS3::start().await;
    let mut daemon = Daemon::new(&s3, Setup::new());
    daemon.start();
    wait_until(TIMEOUT, "the daemon has started", || {
        daemon.stdout().contains("inboxd started")
    })
    .await;

    let out = daemon.once().await;
    daemon.stop().await;
    // Refused by something outside the configuration (the ledger is in use): 1, not 2.
    assert_eq!(out.code(), Some(1), "{out}");
    let all = format!("{}{}", out.stdout, out.stderr);
    assert_eq!(
        all.matches("in use by another inboxd process").count(),
        1,
        "the reason, once\n{out}"
    );
    let last = out
        .stdout
        .lines()
        .rfind(|l| !l.trim().is_empty())
        .unwrap_or_default();
    assert!(
        last.contains("inboxd stopped") && last.contains("exit_code=1"),
        "the last line gives the reason and the exit code\n{out}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_names_the_endpoint_and_the_fix_for_a_refused_endpoint_and_missing_credentials() {
    let s3 = TestS3::start().await;
    let daemon = Daemon::new(&s3, Setup::new());
    let config = daemon.config.to_string_lossy().into_owned();

    // No credentials anywhere (the test environment is cleared; HOME has no ~/.aws).
    let out = daemon
        .command(&["check", "--config", &config])
        .env_remove("AWS_ACCESS_KEY_ID")
        .env_remove("AWS_SECRET_ACCESS_KEY")
        .output()
        .await
        .expect("run check");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(
        text.contains("AWS_ACCESS_KEY_ID") && text.contains(s3.endpoint()),
        "no fix or endpoint for missing credentials:\n{text}"
    );

    // A port where nothing listens.
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port");
    let text = daemon
        .config_text()
        .replace(s3.endpoint(), &format!("http://{closed}"));
    daemon.write_config(&text);
    let out = daemon.check().await;
    assert_eq!(out.code(), Some(1), "{out}");
    let text = out.to_string();
    assert!(
        text.contains("is the server running") && text.contains(&closed.to_string()),
        "no fix or endpoint for a refused connection:\n{text}"
    );
}

/// `'…'` for sh.
fn sh_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn once_draws_a_progress_bar_on_a_terminal_and_only_log_lines_elsewhere() {
    let s3 = TestS3::start().await;
    let daemon = Daemon::new(&s3, Setup::new());
    let inbox = daemon.inbox().clone();
    let config = daemon.config.to_string_lossy().into_owned();
    let batch = |seed: u64| -> Vec<(String, Vec<u8>)> {
        (0..3u64)
            .map(|i| {
                let len = 10_000 * (i as usize + 1);
                (format!("p{seed}-{i}.pdf"), content(seed + i, len))
            })
            .collect()
    };

    // Not a terminal (pipes): the log lines, no bar.
    let plain = batch(60);
    for (rel, bytes) in &plain {
        inbox.drop(rel, bytes);
    }
    let out = daemon.once().await;
    assert_eq!(out.code(), Some(0), "{out}");
    assert!(out.stdout.contains("inboxd stopped"), "{out}");
    let text = out.to_string();
    assert!(
        !text.contains("3/3 files"),
        "a bar without a terminal\n{out}"
    );
    assert!(
        !text.contains("of about"),
        "a bar without a terminal\n{out}"
    );
    for (rel, bytes) in &plain {
        inbox.assert_done(rel, bytes);
    }

    // On a pseudo-terminal (util-linux `script`): the bar, with its final state, and the log
    // lines around it.
    if std::process::Command::new("script")
        .arg("--version")
        .output()
        .is_err()
    {
        println!("SKIP: no `script` (util-linux) for a pseudo-terminal; the bar is not tested");
        return;
    }
    let on_tty = batch(70);
    for (rel, bytes) in &on_tty {
        inbox.drop(rel, bytes);
    }
    let inner = daemon.command(&["once", "--config", &config]);
    let line: Vec<String> = std::iter::once(inner.as_std().get_program())
        .chain(inner.as_std().get_args())
        .map(|a| sh_quote(&a.to_string_lossy()))
        .collect();
    let mut cmd = tokio::process::Command::new("script");
    cmd.args(["-q", "-e", "-c", &line.join(" "), "/dev/null"])
        .env_clear()
        .envs(inner.as_std().get_envs().filter_map(|(k, v)| Some((k, v?))))
        .env("TERM", "xterm")
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true);
    let out = tokio::time::timeout(TIMEOUT, cmd.output())
        .await
        .expect("once under script did not end in time")
        .expect("run script");
    let tty = String::from_utf8_lossy(&out.stdout).into_owned();
    assert_eq!(out.status.code(), Some(0), "{tty}");
    // 10 000 + 20 000 + 30 000 bytes.
    let last = "3/3 files, 58.59 KiB of about 58.59 KiB";
    let at = tty
        .find(last)
        .unwrap_or_else(|| panic!("no final bar state {last:?}:\n{tty}"));
    let after = &tty[at + last.len()..];
    assert!(
        after.contains("inboxd stopped"),
        "the last log line comes after the bar:\n{tty}"
    );
    assert!(
        after.trim_start_matches([' ', '\r']).starts_with('\n')
            || after.trim_start_matches([' ', '\r']).starts_with("\x1b"),
        "the last log line starts on a line of its own:\n{tty}"
    );
    for (rel, bytes) in &on_tty {
        inbox.assert_done(rel, bytes);
        assert_object(&s3, &inbox.key(rel), bytes).await;
    }
}

/// Every file below `dir`, relative to it, with its bytes.
fn files_below(dir: &std::path::Path) -> std::collections::BTreeMap<std::path::PathBuf, Vec<u8>> {
    let mut out = std::collections::BTreeMap::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for entry in std::fs::read_dir(&d).unwrap_or_else(|e| panic!("{}: {e}", d.display())) {
            let path = entry.expect("entry").path();
            if path.is_dir() {
                todo.push(path);
            } else {
                let rel = path.strip_prefix(dir).expect("below").to_path_buf();
                out.insert(rel, std::fs::read(&path).expect("read"));
            }
        }
    }
    out
}

#[test]
fn the_committed_completions_and_man_pages_match_the_command_line() {
    let fresh = tempfile::tempdir().expect("tempdir");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_inboxd"))
        .arg("generate-assets")
        .arg(fresh.path())
        .env_clear()
        .output()
        .expect("run inboxd generate-assets");
    assert!(out.status.success(), "{out:?}");
    let packaging = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("packaging");
    let regenerate = "regenerate them: cargo run -- generate-assets packaging";
    for sub in ["completions", "man"] {
        let want = files_below(&fresh.path().join(sub));
        let have = files_below(&packaging.join(sub));
        assert!(want.len() >= 3, "{sub}: only {:?}", want.keys());
        assert_eq!(
            have.keys().collect::<Vec<_>>(),
            want.keys().collect::<Vec<_>>(),
            "packaging/{sub} holds other files than the command line makes; {regenerate}"
        );
        for (rel, bytes) in &want {
            assert!(
                have[rel] == *bytes,
                "packaging/{sub}/{} is stale; {regenerate}",
                rel.display()
            );
        }
    }
    // Hidden commands stay out of the man pages.
    let man = files_below(&fresh.path().join("man"));
    assert!(
        man.keys()
            .all(|p| !p.to_string_lossy().contains("check-folders"))
    );
    assert!(man.contains_key(std::path::Path::new("inboxd-ledger.1")));
}

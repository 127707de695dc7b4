//! No secret at any log level: credentials given to inboxd never appear in its output, even
//! at `RUST_LOG=trace`, so that a dependency upgrade cannot quietly start printing them.

mod support;

use support::s3::{self, TestS3};
use support::{Daemon, Setup, assert_object, content, toml_str};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_secret_reaches_any_log_even_at_trace_level() {
    const TOKEN: &str = "inboxd-test-session-token-FwoGZXIvYXdzEJr";
    let s3 = TestS3::start().await;
    let logs = tempfile::tempdir().unwrap();
    let setup = Setup::new().set("log", "dir", &toml_str(&logs.path().to_string_lossy()));
    let daemon = Daemon::new(&s3, setup);
    let inbox = daemon.inbox().clone();
    let small = content(5, 10_000);
    inbox.drop("a.pdf", &small);

    // The secret key is the one the server verifies every signature with, so an accepted
    // upload proves the daemon signed with it; the session token is one of the signed headers.
    let out = daemon
        .cli(
            &["once", "--config", &daemon.config.to_string_lossy()],
            &[("RUST_LOG", "trace"), ("AWS_SESSION_TOKEN", TOKEN)],
        )
        .await;
    assert_eq!(out.code(), Some(0), "{}", tail(&out.stdout));
    inbox.assert_done("a.pdf", &small);
    assert_object(&s3, &inbox.key("a.pdf"), &small).await;
    assert_eq!(
        s3.session_tokens(),
        vec![TOKEN.to_owned()],
        "the token was sent"
    );
    // Trace logging was really on (the SDK's own request handling is logged).
    assert!(
        out.stdout.contains("TRACE") && out.stdout.lines().count() > 100,
        "expected a trace-level log\n{}",
        tail(&out.stdout)
    );

    let mut texts = vec![
        ("stdout", out.stdout.clone()),
        ("stderr", out.stderr.clone()),
    ];
    for entry in std::fs::read_dir(logs.path()).unwrap().flatten() {
        let text = std::fs::read_to_string(entry.path()).unwrap();
        texts.push(("log file", text));
    }
    assert!(texts.len() > 2, "the log dir holds a file");
    for (what, text) in &texts {
        for secret in [s3::SECRET_KEY, TOKEN] {
            assert!(
                !text.contains(secret),
                "{what} contains a secret ({secret})"
            );
        }
        // Not even a recognisable part of one.
        assert!(
            !text.contains(&s3::SECRET_KEY[..16]),
            "{what} contains part of the secret"
        );
        assert!(
            !text.contains(&TOKEN[..16]),
            "{what} contains part of the session token"
        );
    }
}

/// The last lines of a long log, for failure messages.
fn tail(text: &str) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(40)..].join("\n")
}

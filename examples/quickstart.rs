//! A runnable demo: an in-process S3 server (s3s-fs, storing objects under ./demo/s3) and the
//! real inboxd pipeline watching ./demo/inbox. Drop files into ./demo/inbox and watch them
//! appear in ./demo/s3/demo-bucket/ and move to ./demo/done/. Ctrl-C stops it.
//!
//!     cargo run --example quickstart

#[path = "../tests/support/s3.rs"]
mod s3;

use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;

const BUCKET: &str = "demo-bucket";

fn main() -> ExitCode {
    let demo = Path::new("demo");
    for d in ["inbox", "done", "failed", "s3", "state"] {
        if let Err(e) = std::fs::create_dir_all(demo.join(d)) {
            eprintln!("quickstart: cannot create demo/{d}: {e}");
            return ExitCode::FAILURE;
        }
    }
    // The daemon takes credentials from the standard AWS chain; the demo server accepts these.
    // Set before the runtime starts any thread.
    // SAFETY: single-threaded at this point.
    unsafe {
        std::env::set_var("AWS_ACCESS_KEY_ID", s3::ACCESS_KEY);
        std::env::set_var("AWS_SECRET_ACCESS_KEY", s3::SECRET_KEY);
        std::env::set_var("AWS_EC2_METADATA_DISABLED", "true");
        std::env::set_var("NO_PROXY", "127.0.0.1,localhost");
    }
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("quickstart: {e}");
            return ExitCode::FAILURE;
        }
    };
    rt.block_on(run(demo))
}

async fn run(demo: &Path) -> ExitCode {
    let server = match s3::TestS3::start_at(&demo.join("s3"), &[BUCKET]).await {
        Ok(s) => s,
        Err(e) => {
            eprintln!("quickstart: cannot start the demo S3 server: {e}");
            return ExitCode::FAILURE;
        }
    };
    let config = demo.join("inboxd.toml");
    let toml = format!(
        r#"# Written by `cargo run --example quickstart`; see examples/inboxd.toml for every key.
state_dir = "state"

[s3]
endpoint = "{endpoint}"
region = "us-east-1"

[batch]
window = "200ms"

[[inbox]]
name = "demo"
path = "inbox"
done_dir = "done"
failed_dir = "failed"
bucket = "{BUCKET}"
prefix = ""
settle = "1s"
"#,
        endpoint = server.endpoint()
    );
    if let Err(e) = std::fs::write(&config, toml) {
        eprintln!("quickstart: cannot write {}: {e}", config.display());
        return ExitCode::FAILURE;
    }
    let settings = match inboxd::config::Settings::load(&config) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("quickstart: {e}");
            return ExitCode::from(2);
        }
    };
    let _ = inboxd::telemetry::init(&settings.log);
    let intake = tokio_util::sync::CancellationToken::new();
    let rescan = Arc::new(tokio::sync::Notify::new());
    // SIGHUP rescans the demo inbox (the demo does not reload its generated config).
    let _signals = inboxd::shutdown::listen(intake.clone(), rescan.clone());

    let hello = demo.join("inbox/hello.txt");
    if !hello.exists() {
        let _ = std::fs::write(&hello, "Hello from the inboxd quickstart.\n");
    }
    println!(
        "\ninboxd quickstart\n  S3 server : {endpoint} (bucket {BUCKET}, stored in demo/s3/{BUCKET}/)\n  \
         inbox     : demo/inbox   → done: demo/done   failed: demo/failed\n  config    : {config}\n  \
         status    : {status}\n\n\
         Drop a file into demo/inbox (try: cp README.md demo/inbox/) and watch it reach\n  \
         demo/s3/{BUCKET}/ and demo/done/. Ctrl-C stops the daemon.\n",
        endpoint = server.endpoint(),
        config = config.display(),
        status = settings.http_listen.map_or("off".to_owned(), |a| format!(
            "http://{a}/ (metrics at /metrics)"
        )),
    );
    let stats = Arc::new(inboxd::run::Stats::default());
    let ran = inboxd::pipeline::run(
        settings,
        inboxd::run::Mode::Daemon,
        intake,
        rescan,
        stats,
        &inboxd::run::Phase::Start,
    )
    .await;
    inboxd::telemetry::finish();
    match ran {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("quickstart: {e}");
            ExitCode::FAILURE
        }
    }
}

//! The `inboxd` binary: command line, exit codes, logging setup.
//!
//! Exit codes: 0 success; 1 a runtime problem (or, for `once`, a file that did not make it;
//! for `check`, an inbox that failed its probe); 2 a configuration or usage error.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use clap::{Args, Parser, Subcommand};
use inboxd::config::Settings;
use inboxd::run::Mode;
use inboxd::run::Stats;

#[derive(Parser)]
#[command(
    name = "inboxd",
    version,
    about = "Uploads every complete file dropped into inbox folders to S3, exactly once"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the daemon in the foreground (as systemd does).
    Run(Common),
    /// Process everything in the inboxes now, then exit: 0 if every file succeeded, 1 if not.
    Once(Common),
    /// Validate the configuration and probe each inbox's bucket; exit 0 if all is well.
    Check(Common),
    /// Print every ledger record as one JSON object per line (the daemon must be stopped).
    Ledger(Common),
    /// Show what the running daemon is doing: per inbox the files waiting and the oldest
    /// one, S3, recent failures. Without a running daemon, what the folders hold.
    Status {
        #[command(flatten)]
        common: Common,
        /// Print the daemon's /status JSON instead.
        #[arg(long)]
        json: bool,
    },
    /// Move files from failed/ back into their inbox (reason files removed) so that they go
    /// through the pipeline again. Works whether or not the daemon runs.
    Retry {
        #[command(flatten)]
        common: Common,
        /// Only this inbox.
        #[arg(long)]
        inbox: Option<String>,
        /// Only these files (relative to failed/, or full paths in it); default: all.
        files: Vec<PathBuf>,
    },
}

#[derive(Args)]
struct Common {
    /// The configuration file.
    #[arg(
        long,
        short,
        env = "INBOXD_CONFIG",
        default_value = "/etc/inboxd/inboxd.toml"
    )]
    config: PathBuf,
}

const CONFIG_ERROR: u8 = 2;

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            let _ = e.print();
            // --help and --version are not errors; everything else is a usage error.
            return if e.use_stderr() {
                ExitCode::from(CONFIG_ERROR)
            } else {
                ExitCode::SUCCESS
            };
        }
    };
    let (Command::Run(c)
    | Command::Once(c)
    | Command::Check(c)
    | Command::Ledger(c)
    | Command::Status { common: c, .. }
    | Command::Retry { common: c, .. }) = &cli.command;
    let settings = match Settings::load(&c.config) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("inboxd: {e}");
            return ExitCode::from(CONFIG_ERROR);
        }
    };
    match cli.command {
        Command::Ledger(_) => ledger(&settings),
        Command::Check(_) => runtime_then(|| check(settings)),
        Command::Run(_) => daemon(settings, Mode::Daemon),
        Command::Once(_) => daemon(settings, Mode::Once),
        Command::Status { json, .. } => status(&settings, json),
        Command::Retry { inbox, files, .. } => retry(&settings, inbox.as_deref(), &files),
    }
}

fn status(settings: &Settings, json: bool) -> ExitCode {
    use inboxd::operator;
    let answer = match settings.http_listen {
        Some(addr) => operator::fetch_status(addr),
        None => Err("[http] listen is \"off\"".to_owned()),
    };
    match (answer, json) {
        (Ok(body), true) => {
            println!("{body}");
            ExitCode::SUCCESS
        }
        (Ok(body), false) => match operator::render_status(&body) {
            Ok(text) => {
                print!("{text}");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("inboxd: the daemon's /status is not readable: {e}");
                ExitCode::FAILURE
            }
        },
        (Err(why), true) => {
            eprintln!("inboxd: {why}");
            ExitCode::FAILURE
        }
        (Err(why), false) => {
            eprintln!("inboxd: {why}");
            print!("{}", operator::offline_status(settings));
            ExitCode::SUCCESS
        }
    }
}

fn retry(settings: &Settings, inbox: Option<&str>, files: &[PathBuf]) -> ExitCode {
    use inboxd::operator::Retried;
    if let Some(name) = inbox
        && !settings.inboxes.iter().any(|i| i.name == name)
    {
        eprintln!(
            "inboxd: no inbox named {name:?} in {}",
            settings.file.display()
        );
        return ExitCode::from(CONFIG_ERROR);
    }
    let done = inboxd::operator::retry(settings, inbox, files);
    let mut skipped = 0;
    for r in &done {
        match r {
            Retried::Moved { inbox, rel } => {
                println!("moved   {inbox}: {}", inboxd::telemetry::escape(rel));
            }
            Retried::Skipped { inbox, rel, why } => {
                skipped += 1;
                println!("skipped {inbox}: {}: {why}", inboxd::telemetry::escape(rel));
            }
        }
    }
    if done.is_empty() {
        println!("nothing to retry");
    }
    if skipped > 0 {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}

fn runtime_then<F, Fut>(f: F) -> ExitCode
where
    F: FnOnce() -> Fut,
    Fut: Future<Output = ExitCode>,
{
    match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt.block_on(f()),
        Err(e) => {
            eprintln!("inboxd: cannot start the async runtime: {e}");
            ExitCode::FAILURE
        }
    }
}

fn daemon(settings: Settings, mode: Mode) -> ExitCode {
    if let Err(e) = settings.check_paths() {
        eprintln!("inboxd: {e}");
        return ExitCode::from(CONFIG_ERROR);
    }
    // The guard flushes file logs when main returns; it must outlive the runtime.
    let _guard = match inboxd::telemetry::init(&settings.log) {
        Ok(g) => g,
        Err(e) => {
            eprintln!("inboxd: {e}");
            return ExitCode::FAILURE;
        }
    };
    if let Err(e) = inboxd::shutdown::arm_double_signal_exit() {
        eprintln!("inboxd: cannot install signal handlers: {e}");
        return ExitCode::FAILURE;
    }
    runtime_then(|| async move {
        let stop = tokio_util::sync::CancellationToken::new();
        let hup = Arc::new(tokio::sync::Notify::new());
        let signals = match inboxd::shutdown::listen(stop.clone(), hup.clone()) {
            Ok(h) => h,
            Err(e) => {
                eprintln!("inboxd: cannot listen for signals: {e}");
                return ExitCode::FAILURE;
            }
        };
        let code = run_until_stopped(settings, mode, stop, hup).await;
        signals.abort();
        code
    })
}

/// Runs the pipeline; on SIGHUP re-reads the configuration and, if it changed and is valid,
/// drains the pipeline (as on SIGTERM, within the grace period) and starts it again with the
/// new settings. An unchanged or invalid configuration only triggers a rescan.
async fn run_until_stopped(
    mut settings: Settings,
    mode: Mode,
    stop: tokio_util::sync::CancellationToken,
    hup: Arc<tokio::sync::Notify>,
) -> ExitCode {
    loop {
        // Cancelled by SIGTERM (through `stop`) or by a reload.
        let intake = stop.child_token();
        let rescan = Arc::new(tokio::sync::Notify::new());
        let reloaded: Arc<std::sync::Mutex<Option<Settings>>> = Arc::default();
        let reloader = (mode == Mode::Daemon).then(|| {
            tokio::spawn(watch_for_reload(
                settings.clone(),
                hup.clone(),
                rescan.clone(),
                intake.clone(),
                reloaded.clone(),
            ))
        });
        // `once` cannot do its job for an inbox whose folder is missing (the watch stage
        // says so in the log): that run is not a success.
        let skipped = mode == Mode::Once && settings.inboxes.iter().any(|i| !i.path.is_dir());
        let result = inboxd::pipeline::run(settings.clone(), mode, intake, rescan).await;
        if let Some(r) = reloader {
            r.abort();
        }
        let stats = match result {
            Ok(stats) => stats,
            Err(e) => {
                tracing::error!(error = %e, "inboxd stopped on a fatal error");
                eprintln!("inboxd: {e}");
                return ExitCode::FAILURE;
            }
        };
        let next = reloaded.lock().unwrap_or_else(|p| p.into_inner()).take();
        match next {
            Some(new) if !stop.is_cancelled() => {
                settings = new;
                continue;
            }
            _ => {}
        }
        let incomplete = Stats::get(&stats.failed) > 0 || Stats::get(&stats.left) > 0 || skipped;
        return if mode == Mode::Once && incomplete {
            ExitCode::FAILURE
        } else {
            ExitCode::SUCCESS
        };
    }
}

/// Waits for SIGHUP. Unchanged or invalid configuration: rescan and keep running. Changed:
/// hand the new settings over and cancel intake, so the pipeline drains and restarts.
async fn watch_for_reload(
    current: Settings,
    hup: Arc<tokio::sync::Notify>,
    rescan: Arc<tokio::sync::Notify>,
    intake: tokio_util::sync::CancellationToken,
    reloaded: Arc<std::sync::Mutex<Option<Settings>>>,
) {
    loop {
        hup.notified().await;
        let new = Settings::load(&current.file).and_then(|s| s.check_paths().map(|()| s));
        match new {
            Err(e) => {
                tracing::error!(error = %e, "SIGHUP: the configuration is not valid; keeping the running one and rescanning every inbox");
                rescan.notify_one();
            }
            Ok(new) if new == current => {
                tracing::info!("SIGHUP: configuration unchanged; rescanning every inbox");
                rescan.notify_one();
            }
            Ok(new) => {
                if new.log != current.log {
                    tracing::warn!("SIGHUP: [log] settings take effect at the next restart");
                }
                tracing::info!(file = %current.file.display(),
                    "SIGHUP: configuration changed; finishing running uploads, then restarting the pipeline with it");
                let _ = sd_notify::notify(&[sd_notify::NotifyState::Reloading]);
                *reloaded.lock().unwrap_or_else(|p| p.into_inner()) = Some(new);
                intake.cancel();
                return;
            }
        }
    }
}

async fn check(settings: Settings) -> ExitCode {
    use inboxd::upload::capabilities;
    let client = inboxd::upload::s3::client(&settings.s3, &settings.upload).await;
    let mut all_ok = true;
    let mut probed: Vec<String> = Vec::new();
    for inbox in &settings.inboxes {
        let target = format!("s3://{}/{}", inbox.bucket, inbox.prefix);
        let mut problems = Vec::new();
        if !inbox.path.is_dir() {
            problems.push(format!(
                "inbox folder {} does not exist (is the share mounted?)",
                inbox.path.display()
            ));
        }
        // Look, don't touch: `check` is often run as root, and folders it created would
        // belong to root instead of the service user.
        for dir in [&inbox.done_dir, &inbox.failed_dir] {
            if let Some(problem) = dir_problem(dir) {
                problems.push(problem);
            }
        }
        let reachable = inboxd::upload::s3::probe(&client, &inbox.bucket, &inbox.prefix).await;
        let server = match reachable {
            Err(e) => {
                problems.push(e);
                None
            }
            // Once per bucket: what the server enforces itself (see upload::capabilities).
            Ok(()) if probed.contains(&inbox.bucket) => None,
            Ok(()) => {
                probed.push(inbox.bucket.clone());
                let caps = capabilities::probe(&client, &inbox.bucket, &inbox.prefix).await;
                Some(match caps {
                    Ok(caps) => caps.describe(),
                    Err(e) => format!(
                        "could not be probed ({e}); inboxd will look at each key before writing it"
                    ),
                })
            }
        };
        if problems.is_empty() {
            let notes: String = [
                ("done_dir", &inbox.done_dir),
                ("failed_dir", &inbox.failed_dir),
            ]
            .into_iter()
            .filter_map(|(key, dir)| {
                let what = inboxd::mounts::apart(&inbox.path, dir)?.describe()?;
                Some(format!("; note: {key} {what}"))
            })
            .collect();
            println!(
                "ok    {}  {}  -> {target}  (reachable, credentials accepted, writable{notes})",
                inbox.name,
                inbox.path.display()
            );
            if let Some(server) = server {
                println!("      server of bucket {}: {server}", inbox.bucket);
            }
        } else {
            all_ok = false;
            println!(
                "FAIL  {}  {}  -> {target}  {}",
                inbox.name,
                inbox.path.display(),
                problems.join("; ")
            );
        }
    }
    if all_ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// Why inboxd could not use `dir` for done/ or failed/, if it could not: it must be a
/// writable folder, or creatable in its nearest existing parent.
fn dir_problem(dir: &std::path::Path) -> Option<String> {
    let mut probe = dir;
    while !probe.exists() {
        probe = probe.parent()?;
    }
    if !probe.is_dir() {
        return Some(format!("{} is not a folder", probe.display()));
    }
    let c = std::ffi::CString::new(probe.as_os_str().as_encoded_bytes()).ok()?;
    // SAFETY: a valid NUL-terminated path; access(2) only reads it.
    let writable = unsafe { libc::access(c.as_ptr(), libc::W_OK | libc::X_OK) } == 0;
    (!writable).then(|| format!("{} is not writable", probe.display()))
}

fn ledger(settings: &Settings) -> ExitCode {
    let ledger = match inboxd::ledger::Ledger::open(&settings.state_dir) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("inboxd: {e}");
            return ExitCode::FAILURE;
        }
    };
    for rec in ledger.records() {
        match rec.and_then(|r| serde_json::to_string(&r).map_err(Into::into)) {
            Ok(line) => println!("{line}"),
            Err(e) => {
                eprintln!("inboxd: {e}");
                return ExitCode::FAILURE;
            }
        }
    }
    ExitCode::SUCCESS
}

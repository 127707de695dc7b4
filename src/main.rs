//! The `inboxd` binary: command line, exit codes, logging setup.
//!
//! Exit codes, one rule for every command (README, "Exit codes"): 0 all good; 1 something
//! outside the configuration is missing or refuses (a folder, the bucket, the credentials, the
//! ledger in use, a file that did not make it for `once`, a fatal runtime error); 2 the
//! configuration or the command line is wrong.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use clap::{Args, Parser, Subcommand};
use inboxd::config::Settings;
use inboxd::run::{Mode, Phase, Stats};

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

/// Something outside the configuration is missing or refuses (see the module doc).
const REFUSED: u8 = 1;
/// The configuration or the command line is wrong.
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
    let c = match &cli.command {
        Command::Run(c) | Command::Once(c) | Command::Ledger(c) | Command::Check(c) => c,
    };
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
            ExitCode::from(REFUSED)
        }
    }
}

/// How a run ends: the exit code and the reason the last line gives.
struct End {
    code: u8,
    reason: String,
    /// A fatal error (logged as an ERROR), not a run that did what it could.
    fatal: bool,
}

fn daemon(settings: Settings, mode: Mode) -> ExitCode {
    if let Err(e) = settings.check_paths() {
        eprintln!("inboxd: {e}");
        return ExitCode::from(CONFIG_ERROR);
    }
    if let Err(e) = inboxd::telemetry::init(&settings.log) {
        eprintln!("inboxd: {e}");
        return ExitCode::from(REFUSED);
    }
    // From here on every way out ends with one "inboxd stopped" line (a second signal writes
    // its own, in shutdown).
    let stop = tokio_util::sync::CancellationToken::new();
    let hup = Arc::new(tokio::sync::Notify::new());
    let stats = Arc::new(Stats::default());
    let end = match inboxd::shutdown::listen(stop.clone(), hup.clone()) {
        Err(e) => End {
            code: REFUSED,
            reason: format!("cannot listen for signals: {e}"),
            fatal: true,
        },
        Ok(received) => match tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
        {
            Ok(rt) => rt.block_on(run_until_stopped(
                settings,
                mode,
                stop,
                hup,
                &received,
                stats.clone(),
            )),
            Err(e) => End {
                code: REFUSED,
                reason: format!("cannot start the async runtime: {e}"),
                fatal: true,
            },
        },
    };
    log_end(&end, &stats);
    inboxd::telemetry::finish();
    ExitCode::from(end.code)
}

/// The one line that ends a run: why, the exit code, and the run's counts.
fn log_end(end: &End, stats: &Stats) {
    macro_rules! line {
        ($level:expr) => {
            tracing::event!(
                $level,
                reason = %end.reason,
                exit_code = end.code,
                uploaded = Stats::get(&stats.uploaded),
                duplicates = Stats::get(&stats.duplicates),
                failed = Stats::get(&stats.failed),
                deferred = stats.deferred(),
                left_in_inbox = stats.left(),
                busy_ms = stats.busy().map_or(0, |d| d.as_millis() as u64),
                "inboxd stopped"
            )
        };
    }
    if end.fatal {
        line!(tracing::Level::ERROR);
    } else if end.code != 0 {
        line!(tracing::Level::WARN);
    } else {
        line!(tracing::Level::INFO);
    }
}

/// Runs the pipeline; on SIGHUP re-reads the configuration and, if it changed and is valid,
/// drains the pipeline (as on SIGTERM, within the grace period) and starts it again with the
/// new settings. An unchanged or invalid configuration only triggers a rescan.
async fn run_until_stopped(
    mut settings: Settings,
    mode: Mode,
    stop: tokio_util::sync::CancellationToken,
    hup: Arc<tokio::sync::Notify>,
    received: &inboxd::shutdown::Received,
    stats: Arc<Stats>,
) -> End {
    let mut phase = Phase::Start;
    loop {
        // Cancelled by SIGTERM (through `stop`) or by a reload.
        let intake = stop.child_token();
        let rescan = Arc::new(tokio::sync::Notify::new());
        let reloaded: Arc<std::sync::Mutex<Option<(Settings, String)>>> = Arc::default();
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
        let skipped: Vec<String> = if mode == Mode::Once {
            settings
                .inboxes
                .iter()
                .filter(|i| !i.path.is_dir())
                .map(|i| i.name.clone())
                .collect()
        } else {
            Vec::new()
        };
        let result = inboxd::pipeline::run(
            settings.clone(),
            mode,
            intake,
            rescan,
            stats.clone(),
            &phase,
        )
        .await;
        if let Some(r) = reloader {
            r.abort();
        }
        if let Err(e) = result {
            return End {
                code: REFUSED,
                reason: e.to_string(),
                fatal: true,
            };
        }
        let next = reloaded.lock().unwrap_or_else(|p| p.into_inner()).take();
        match next {
            Some((new, changes)) if !stop.is_cancelled() => {
                settings = new;
                phase = Phase::Reload { changes };
                continue;
            }
            _ => {}
        }
        return match (mode, received.stop_signal()) {
            (Mode::Daemon, Some(sig)) => End {
                code: 0,
                reason: format!("stopped by {sig}"),
                fatal: false,
            },
            (Mode::Daemon, None) => End {
                code: 0,
                reason: "the pipeline ended".to_owned(),
                fatal: false,
            },
            (Mode::Once, Some(sig)) => End {
                code: REFUSED,
                reason: format!("stopped by {sig} before every file was handled"),
                fatal: false,
            },
            (Mode::Once, None) => once_end(&stats, &skipped),
        };
    }
}

/// How `once` ends once it has swept every inbox: 0 only if every file it found went to done/.
fn once_end(stats: &Stats, skipped: &[String]) -> End {
    let failed = Stats::get(&stats.failed);
    let left = stats.left();
    let mut problems = Vec::new();
    if failed > 0 {
        problems.push(format!("{failed} went to failed/"));
    }
    if left > 0 {
        problems.push(format!("{left} left in the inbox for the next run"));
    }
    if !skipped.is_empty() {
        problems.push(format!(
            "inbox folder missing, skipped: {}",
            skipped.join(", ")
        ));
    }
    if problems.is_empty() {
        End {
            code: 0,
            reason: "every inbox swept; every file found is in done/".to_owned(),
            fatal: false,
        }
    } else {
        End {
            code: REFUSED,
            reason: format!("every inbox swept; {}", problems.join("; ")),
            fatal: false,
        }
    }
}

/// Waits for SIGHUP. Unchanged or invalid configuration: rescan and keep running. Changed:
/// hand the new settings (and what changed) over and cancel intake, so the pipeline drains
/// and starts again with them.
async fn watch_for_reload(
    current: Settings,
    hup: Arc<tokio::sync::Notify>,
    rescan: Arc<tokio::sync::Notify>,
    intake: tokio_util::sync::CancellationToken,
    reloaded: Arc<std::sync::Mutex<Option<(Settings, String)>>>,
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
                let changes = current.changes(&new).join(", ");
                tracing::info!(file = %current.file.display(), changes = %changes,
                    "reloading: configuration changed; running uploads finish first, then the new configuration applies");
                let _ = sd_notify::notify(&[sd_notify::NotifyState::Reloading]);
                *reloaded.lock().unwrap_or_else(|p| p.into_inner()) = Some((new, changes));
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
        ExitCode::from(REFUSED)
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
            return ExitCode::from(REFUSED);
        }
    };
    for rec in ledger.records() {
        match rec.and_then(|r| serde_json::to_string(&r).map_err(Into::into)) {
            Ok(line) => println!("{line}"),
            Err(e) => {
                eprintln!("inboxd: {e}");
                return ExitCode::from(REFUSED);
            }
        }
    }
    ExitCode::SUCCESS
}

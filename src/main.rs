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
    /// Validate the configuration, check every folder and probe each inbox's bucket; exit 0 if
    /// all is well.
    Check(CheckArgs),
    /// Print every ledger record as one JSON object per line. Asks the running daemon;
    /// without one, reads the ledger (never writing it).
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
    /// The folder checks of `check --user`, run by `check` itself as that user; prints JSON.
    #[command(name = "check-folders", hide = true)]
    CheckFolders(Common),
    /// Writes the shell completions and man pages for this command line into DIR
    /// (`completions/`, `man/`); the packaging/ copies are made with it (see README).
    #[command(name = "generate-assets", hide = true)]
    GenerateAssets {
        /// Where to write them (packaging/ for the committed copies).
        dir: PathBuf,
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

#[derive(Args)]
struct CheckArgs {
    #[command(flatten)]
    common: Common,
    /// Check the folders as this user, the one the service runs as (needs root unless it is
    /// you): `inboxd check --user inboxd`.
    #[arg(long, value_name = "NAME")]
    user: Option<String>,
}

/// Something outside the configuration is missing or refuses (see the module doc).
const REFUSED: u8 = inboxd::run::EXIT_REFUSED;
/// The configuration or the command line is wrong.
const CONFIG_ERROR: u8 = inboxd::run::EXIT_CONFIG_ERROR;

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
    if let Command::GenerateAssets { dir } = &cli.command {
        return match generate_assets(dir) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("inboxd: cannot write into {}: {e}", dir.display());
                ExitCode::from(REFUSED)
            }
        };
    }
    let c = match &cli.command {
        Command::Run(c)
        | Command::Once(c)
        | Command::Ledger(c)
        | Command::CheckFolders(c)
        | Command::Status { common: c, .. }
        | Command::Retry { common: c, .. }
        | Command::Check(CheckArgs { common: c, .. }) => c,
        Command::GenerateAssets { .. } => return ExitCode::SUCCESS, // handled above
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
        Command::Check(args) => inboxd::check::check(settings, args.user.as_deref()),
        Command::CheckFolders(_) => inboxd::check::check_folders(&settings),
        Command::Run(_) => daemon(settings, Mode::Daemon),
        Command::Once(_) => daemon(settings, Mode::Once),
        Command::Status { json, .. } => status(&settings, json),
        Command::Retry { inbox, files, .. } => retry(&settings, inbox.as_deref(), &files),
        Command::GenerateAssets { .. } => ExitCode::SUCCESS, // handled above
    }
}

/// Shell completions (bash, zsh, fish) into `dir/completions/` and one man page per visible
/// command into `dir/man/`, all from the clap definition above, so they cannot drift from it
/// (tests/cli.rs compares the committed copies in packaging/ with a fresh run).
fn generate_assets(dir: &std::path::Path) -> std::io::Result<()> {
    use clap::CommandFactory as _;
    use clap_complete::Shell;
    let completions = dir.join("completions");
    let man = dir.join("man");
    std::fs::create_dir_all(&completions)?;
    std::fs::create_dir_all(&man)?;
    for shell in [Shell::Bash, Shell::Zsh, Shell::Fish] {
        clap_complete::generate_to(shell, &mut Cli::command(), "inboxd", &completions)?;
    }
    clap_mangen::generate_to(Cli::command(), &man)
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
    // On a terminal, `once` shows a bar; elsewhere the log lines are all there is.
    let progress = (mode == Mode::Once && inboxd::progress::wanted())
        .then(|| inboxd::progress::Progress::start(&settings.inboxes, stats.clone()));
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
    if let Some(p) = progress {
        p.finish();
    }
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

// ---------------------------------------------------------------------------------------------
// check
// ---------------------------------------------------------------------------------------------

/// `inboxd ledger`: asks the running daemon (it holds the ledger); without one, reads a
/// private copy of the ledger, so that nothing in state_dir is written (see
/// [`inboxd::ledger::LedgerCopy`]).
fn ledger(settings: &Settings) -> ExitCode {
    use inboxd::ledger::{CopyError, LedgerCopy};
    use inboxd::operator::{Asked, fetch_ledger};
    use std::io::Write as _;
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    let asked = match settings.http_listen {
        Some(addr) => match fetch_ledger(addr, &mut out) {
            Ok(()) => return ExitCode::SUCCESS,
            Err(Asked::BrokeOff(why)) => {
                eprintln!("inboxd: {why}");
                return ExitCode::from(REFUSED);
            }
            Err(Asked::NoAnswer(why)) => why,
        },
        None => "[http] listen is \"off\"".to_owned(),
    };
    let copy = match LedgerCopy::open(&settings.state_dir) {
        Ok(Some(c)) => c,
        Ok(None) => {
            eprintln!(
                "inboxd: no ledger in {} yet: nothing has been recorded",
                settings.state_dir.display()
            );
            return ExitCode::SUCCESS;
        }
        Err(CopyError::InUse(dir)) => {
            eprintln!(
                "inboxd: a running inboxd holds the ledger in {}, and it cannot be asked: {asked}. \
                 Ask it through its operations listener ([http] listen), or stop it first",
                dir.display()
            );
            return ExitCode::from(REFUSED);
        }
        Err(e) => {
            eprintln!("inboxd: {e}");
            return ExitCode::from(REFUSED);
        }
    };
    for rec in copy.records() {
        let line = rec.and_then(|r| serde_json::to_string(&r).map_err(Into::into));
        let written = match line {
            Ok(line) => writeln!(out, "{line}"),
            Err(e) => {
                eprintln!("inboxd: {e}");
                return ExitCode::from(REFUSED);
            }
        };
        match written {
            Ok(()) => {}
            // The reader went away (`inboxd ledger | head`).
            Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => break,
            Err(e) => {
                eprintln!("inboxd: cannot write: {e}");
                return ExitCode::from(REFUSED);
            }
        }
    }
    ExitCode::SUCCESS
}

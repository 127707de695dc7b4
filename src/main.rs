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
        Command::Check(args) => check(settings, args.user.as_deref()),
        Command::CheckFolders(_) => check_folders(&settings),
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

/// `check`: the configuration (already loaded), every folder as the service user, every
/// bucket. Exit 2 for a configuration error, 1 for anything missing, unreachable or refused.
fn check(settings: Settings, user: Option<&str>) -> ExitCode {
    if let Err(e) = settings.check_paths() {
        eprintln!("inboxd: {e}");
        return ExitCode::from(CONFIG_ERROR);
    }
    let folders = match folders_as(&settings, user) {
        Ok(f) => f,
        Err(Usage(e)) => {
            eprintln!("inboxd: {e}");
            return ExitCode::from(CONFIG_ERROR);
        }
    };
    runtime_then(|| check_all(settings, folders))
}

/// A wrong `--user`: a usage error.
struct Usage(String);

/// What the folder checks found: the report, or why they could not run as that user.
enum Folders {
    Checked(inboxd::preflight::Report),
    /// The checks as the user could not run (the configuration file is not readable for
    /// them, typically): the reason.
    NotRun(String),
}

/// Runs the folder checks as `user` (a child process switched to that user when we are root),
/// or as the current user.
fn folders_as(settings: &Settings, user: Option<&str>) -> Result<Folders, Usage> {
    let me = current_user_name();
    let Some(name) = user else {
        return Ok(Folders::Checked(inboxd::preflight::check(settings, &me)));
    };
    let account = lookup_user(name).ok_or_else(|| Usage(format!("--user {name}: no such user")))?;
    // SAFETY: geteuid has no preconditions and cannot fail.
    let euid = unsafe { libc::geteuid() };
    if euid == account.uid {
        return Ok(Folders::Checked(inboxd::preflight::check(settings, name)));
    }
    if euid != 0 {
        return Err(Usage(format!(
            "--user {name}: only root can check as another user (run it with sudo, or as {name})"
        )));
    }
    Ok(check_folders_in_child(settings, &account))
}

/// Re-runs this binary as `account` (groups, group, user switched in the child only; this
/// process keeps root for the bucket probes) to check the folders, and reads its report.
fn check_folders_in_child(settings: &Settings, account: &Account) -> Folders {
    use std::os::unix::process::CommandExt as _;
    let exe = match std::env::current_exe() {
        Ok(e) => e,
        Err(e) => return Folders::NotRun(format!("cannot find this program to re-run it: {e}")),
    };
    // Absolute, and run from "/": the user may not be allowed into our current folder.
    let config = std::fs::canonicalize(&settings.file).unwrap_or_else(|_| settings.file.clone());
    let mut cmd = std::process::Command::new(exe);
    cmd.arg("check-folders")
        .arg("--config")
        .arg(&config)
        .current_dir("/")
        .stdin(std::process::Stdio::null());
    let (uid, gid, groups) = (account.uid, account.gid, account.groups.clone());
    // SAFETY: between fork and exec only async-signal-safe calls (setgroups, setgid, setuid)
    // on data allocated before the fork. Done here rather than with CommandExt::uid/gid,
    // which would drop the user's supplementary groups (and with them group access to the
    // folders), and whose groups() is not stable.
    unsafe {
        cmd.pre_exec(move || {
            if libc::setgroups(groups.len(), groups.as_ptr()) != 0
                || libc::setgid(gid) != 0
                || libc::setuid(uid) != 0
            {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let out = match cmd.output() {
        Ok(o) => o,
        Err(e) => {
            return Folders::NotRun(format!("cannot run the checks as {}: {e}", account.name));
        }
    };
    if !out.status.success() {
        let why = String::from_utf8_lossy(&out.stderr);
        let why = why.trim().trim_start_matches("inboxd: ");
        return Folders::NotRun(format!("as {}: {why}", account.name));
    }
    match serde_json::from_slice(&out.stdout) {
        Ok(report) => Folders::Checked(report),
        Err(e) => Folders::NotRun(format!(
            "the checks as {} answered nonsense: {e}",
            account.name
        )),
    }
}

/// The hidden `check-folders`: the folder checks as the current user, as JSON.
fn check_folders(settings: &Settings) -> ExitCode {
    let report = inboxd::preflight::check(settings, &current_user_name());
    match serde_json::to_string(&report) {
        Ok(json) => {
            println!("{json}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("inboxd: {e}");
            ExitCode::from(REFUSED)
        }
    }
}

async fn check_all(settings: Settings, folders: Folders) -> ExitCode {
    use inboxd::upload::capabilities;
    let client = inboxd::upload::s3::client(&settings.s3, &settings.upload).await;
    let mut all_ok = true;
    let (state_problems, mut inbox_problems, user) = match folders {
        Folders::Checked(r) => (
            // The line names the state_dir already.
            r.state_dir
                .iter()
                .map(|p| p.detail.clone())
                .collect::<Vec<_>>(),
            r.inboxes
                .into_iter()
                .map(|i| i.problems.iter().map(ToString::to_string).collect())
                .collect::<Vec<Vec<String>>>(),
            Some(r.user),
        ),
        Folders::NotRun(why) => {
            println!("FAIL  folders  not checked: {why}");
            all_ok = false;
            (Vec::new(), Vec::new(), None)
        }
    };
    inbox_problems.resize(settings.inboxes.len(), Vec::new());
    let as_user = user
        .as_deref()
        .map(|u| format!(" as {u}"))
        .unwrap_or_default();
    if state_problems.is_empty() {
        if user.is_some() {
            println!(
                "ok    state_dir  {}  (usable{as_user})",
                settings.state_dir.display()
            );
        }
    } else {
        all_ok = false;
        println!(
            "FAIL  state_dir  {}  {}",
            settings.state_dir.display(),
            state_problems.join("; ")
        );
    }
    let mut probed: Vec<String> = Vec::new();
    for (inbox, mut problems) in settings.inboxes.iter().zip(inbox_problems) {
        let target = format!("s3://{}/{}", inbox.bucket, inbox.prefix);
        let reachable =
            inboxd::upload::s3::probe(&client, &inbox.bucket, &inbox.prefix, &inbox.object).await;
        let server = match reachable {
            Err(e) => {
                let endpoint = settings.s3.endpoint.as_deref().unwrap_or("AWS S3");
                problems.push(format!("{e} (endpoint {endpoint})"));
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
            let folders = if user.is_some() {
                format!("folders usable{as_user}")
            } else {
                "folders not checked".to_owned()
            };
            println!(
                "ok    {}  {}  -> {target}  (reachable, credentials accepted, {folders}{notes})",
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
    // SAFETY: geteuid has no preconditions and cannot fail.
    if user.as_deref() == Some("root") && unsafe { libc::geteuid() } == 0 {
        println!(
            "note: the folders were checked as root, who may use any of them; check them as the \
             service user with --user inboxd"
        );
    }
    if all_ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(REFUSED)
    }
}

/// A user account, as `--user` names it.
struct Account {
    name: String,
    uid: libc::uid_t,
    gid: libc::gid_t,
    /// Every group the user is in, the primary one included.
    groups: Vec<libc::gid_t>,
}

/// Looks the user up (getpwnam_r, getgrouplist): the system's own answer, NSS included.
fn lookup_user(name: &str) -> Option<Account> {
    let cname = std::ffi::CString::new(name).ok()?;
    let mut buf = vec![0 as libc::c_char; 16 * 1024];
    // SAFETY: an all-zero passwd is a valid value for getpwnam_r to fill in.
    let mut pwd: libc::passwd = unsafe { std::mem::zeroed() };
    let mut found: *mut libc::passwd = std::ptr::null_mut();
    // SAFETY: every pointer is valid for the call, and `buf` outlives the use of `pwd`'s
    // string fields (none are read).
    let rc = unsafe {
        libc::getpwnam_r(
            cname.as_ptr(),
            &mut pwd,
            buf.as_mut_ptr(),
            buf.len(),
            &mut found,
        )
    };
    if rc != 0 || found.is_null() {
        return None;
    }
    let (uid, gid) = (pwd.pw_uid, pwd.pw_gid);
    let mut groups: Vec<libc::gid_t> = vec![0; 64];
    loop {
        let mut n = groups.len() as libc::c_int;
        // SAFETY: `groups` holds `n` entries; getgrouplist writes at most `n` and sets `n` to
        // the number it needs.
        let rc = unsafe { libc::getgrouplist(cname.as_ptr(), gid, groups.as_mut_ptr(), &mut n) };
        if rc >= 0 {
            groups.truncate(n.max(0) as usize);
            break;
        }
        if n as usize <= groups.len() {
            groups = vec![gid];
            break;
        }
        groups.resize(n as usize, 0);
    }
    Some(Account {
        name: name.to_owned(),
        uid,
        gid,
        groups,
    })
}

/// The name of the user this process runs as (for messages), or its uid.
fn current_user_name() -> String {
    // SAFETY: geteuid has no preconditions and cannot fail.
    let uid = unsafe { libc::geteuid() };
    let mut buf = vec![0 as libc::c_char; 16 * 1024];
    // SAFETY: as in lookup_user.
    let mut pwd: libc::passwd = unsafe { std::mem::zeroed() };
    let mut found: *mut libc::passwd = std::ptr::null_mut();
    // SAFETY: every pointer is valid for the call; pw_name points into `buf`, read below
    // while `buf` lives.
    let rc = unsafe { libc::getpwuid_r(uid, &mut pwd, buf.as_mut_ptr(), buf.len(), &mut found) };
    if rc == 0 && !found.is_null() && !pwd.pw_name.is_null() {
        // SAFETY: getpwuid_r succeeded: pw_name is a NUL-terminated string inside `buf`.
        let name = unsafe { std::ffi::CStr::from_ptr(pwd.pw_name) };
        return name.to_string_lossy().into_owned();
    }
    format!("uid {uid}")
}

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

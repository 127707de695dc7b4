//! A run of `inboxd run` or `inboxd once` from start to its last line: the checks and
//! logging setup before it, the signal listener and the async runtime, the pipeline started
//! again on a changed configuration (SIGHUP), and the one "inboxd stopped" line with the exit
//! code by the binary's one rule.

use std::process::ExitCode;
use std::sync::Arc;

use crate::config::Settings;
use crate::run::{EXIT_CONFIG_ERROR as CONFIG_ERROR, EXIT_REFUSED as REFUSED, Mode, Phase, Stats};

/// How a run ends: the exit code and the reason the last line gives.
struct End {
    code: u8,
    reason: String,
    /// A fatal error (logged as an ERROR), not a run that did what it could.
    fatal: bool,
}

/// Runs the daemon (`Mode::Daemon`) or one sweep (`Mode::Once`) with `settings` until it
/// ends, and says how it ended.
pub fn run(settings: Settings, mode: Mode) -> ExitCode {
    if let Err(e) = settings.check_paths() {
        eprintln!("inboxd: {e}");
        return ExitCode::from(CONFIG_ERROR);
    }
    if let Err(e) = crate::telemetry::init(&settings.log) {
        eprintln!("inboxd: {e}");
        return ExitCode::from(REFUSED);
    }
    // From here on every way out ends with one "inboxd stopped" line (a second signal writes
    // its own, in shutdown).
    let stop = tokio_util::sync::CancellationToken::new();
    let hup = Arc::new(tokio::sync::Notify::new());
    let stats = Arc::new(Stats::default());
    // On a terminal, `once` shows a bar; elsewhere the log lines are all there is.
    let progress = (mode == Mode::Once && crate::progress::wanted())
        .then(|| crate::progress::Progress::start(&settings.inboxes, stats.clone()));
    let end = match crate::shutdown::listen(stop.clone(), hup.clone()) {
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
    crate::telemetry::finish();
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
    received: &crate::shutdown::Received,
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
        let result = crate::pipeline::run(
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

//! The only wiring file: opens the ledger, creates the channels, spawns the five stages, and
//! orders startup and shutdown.
//!
//! Shutdown runs down the pipeline by closing channels: intake is cancelled (watch and settle
//! stop), batch passes on what it holds and ends, upload lets running uploads finish within
//! the grace period and ends, finish records and moves what arrives, flushes, and ends.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{Notify, mpsc};
use tokio_util::sync::CancellationToken;

use crate::claims::Claims;
use crate::config::Settings;
use crate::finish::FinishStage;
use crate::ledger::{Ledger, LedgerError};
use crate::run::{Mode, Phase, Stats};
use crate::settle::{Ignore, SettleStage};
use crate::stall::FsGuard;
use crate::upload::UploadStage;
use crate::watch::{WatchError, WatchStage};

#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    #[error(transparent)]
    Ledger(#[from] LedgerError),
    #[error(transparent)]
    Watch(#[from] WatchError),
    #[error("cannot create {path}: {source}")]
    Dir {
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("bad ignore pattern in inbox {inbox}: {source}")]
    Ignore {
        inbox: String,
        #[source]
        source: globset::Error,
    },
    #[error("a pipeline stage stopped unexpectedly: {0}")]
    Stage(String),
    #[error(
        "cannot listen on {addr} for [http] listen: {source} (another inboxd, or another program, has that port; set another address or \"off\")"
    )]
    Listen {
        addr: std::net::SocketAddr,
        #[source]
        source: std::io::Error,
    },
}

/// Channel capacities: small enough to push back when downstream is slow, large enough that
/// stages do not wait on each other in normal operation.
const CANDIDATES: usize = 4096;
const READY: usize = 1024;
const BATCHES: usize = 16;
/// Files handed on by the cluster stage and not yet taken by batch (see its channel).
const CLAIMED_AHEAD: usize = 8;
const OUTCOMES: usize = 1024;

/// Runs the pipeline until `intake` is cancelled (daemon) or everything present at startup
/// is handled (once), counting into `stats` (which outlive a reload). `phase` says whether
/// this is the start of the process or a reload, for the line that says the pipeline is ready.
/// The line that ends the process is the caller's: a pipeline that ends for a reload has not
/// stopped anything.
pub async fn run(
    settings: Settings,
    mode: Mode,
    intake: CancellationToken,
    rescan_now: Arc<Notify>,
    stats: Arc<Stats>,
    phase: &Phase,
) -> Result<(), PipelineError> {
    for inbox in &settings.inboxes {
        if !inbox.path.is_dir() {
            // A share not mounted yet (watch reports it): its done/ and failed/ would be
            // created on the disk under the mount point. They are made by the first move.
            continue;
        }
        for (key, dir) in [
            ("done_dir", &inbox.done_dir),
            ("failed_dir", &inbox.failed_dir),
        ] {
            std::fs::create_dir_all(dir).map_err(|source| PipelineError::Dir {
                path: dir.clone(),
                source,
            })?;
            // Said here because only the daemon itself sees its sandbox's mounts.
            if let Some(what) = crate::mounts::apart(&inbox.path, dir).and_then(|a| a.describe()) {
                tracing::warn!(inbox = %inbox.name, dir = %dir.display(), "{key} {what}");
            }
        }
    }
    // Bound before anything else starts: a taken port is a clear error at once.
    let listener = match settings.http_listen {
        Some(addr) => Some(
            crate::ops::http::bind(addr)
                .await
                .map_err(|source| PipelineError::Listen { addr, source })?,
        ),
        None => None,
    };
    let ledger = Ledger::open(&settings.state_dir)?;
    // Served from here on, also while the startup recovery below runs: `inboxd status` and
    // `inboxd ledger` can ask a daemon that is still starting.
    let names: Vec<String> = settings.inboxes.iter().map(|i| i.name.clone()).collect();
    let ops = Arc::new(crate::ops::Ops::new(&names, settings.log.dir.as_deref()));
    // Serves until this run ends (a reload binds again with the new settings).
    let ops_stop = CancellationToken::new();
    // Also when this function returns early with an error: the port must be free for the
    // next run (a reload).
    let _stop_listener = ops_stop.clone().drop_guard();
    // Set before any stage starts: stages report their progress often enough for it.
    let watchdog_period = sd_notify::watchdog_enabled();
    if let Some(period) = watchdog_period {
        ops.set_stuck_after(crate::ops::STUCK_AFTER.min(period * 2));
    }
    let listening = listener.map(|l| {
        if let Ok(addr) = l.local_addr() {
            tracing::info!(address = %format!("http://{addr}"), "operations listener: /metrics, /healthz, /status and a status page");
        }
        tokio::spawn(crate::ops::http::serve(
            l,
            ops.clone(),
            ledger.clone(),
            ops_stop.clone(),
        ))
    });
    let client = crate::upload::s3::client(&settings.s3, &settings.upload).await;
    let inboxes = Arc::new(settings.inboxes.clone());
    crate::upkeep::recover(&client, &ledger, &inboxes).await?;
    // What the server enforces itself (conditional writes, checksums), remembered or probed;
    // buckets that cannot be probed now are probed again in the background.
    let known = crate::upload::capabilities::Known::default();
    let endpoint = settings.s3.endpoint.clone().unwrap_or_default();
    // Buckets it could not probe now are probed again by `keep_probing` (below).
    crate::upload::capabilities::establish(&client, &ledger, &endpoint, &inboxes, &known).await;
    let ignores = inboxes
        .iter()
        .map(|i| {
            Ignore::new(&i.ignore).map_err(|source| PipelineError::Ignore {
                inbox: i.name.clone(),
                source,
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    let claims = Arc::new(Claims::default());
    // One per inbox, shared by every stage that touches its files: a hung share is noticed
    // once and then refused everywhere at once.
    let guards: Vec<FsGuard> = inboxes
        .iter()
        .map(|i| FsGuard::new(&i.name, i.fs_timeout))
        .collect();
    // Cancelled when the grace period after a shutdown request is over.
    let abort = CancellationToken::new();

    let (cand_tx, cand_rx) = mpsc::channel(CANDIDATES);
    let (ready_tx, ready_rx) = mpsc::channel(READY);
    // Small on purpose: on a shared inbox a file is claimed when the cluster stage hands it
    // on, so this bound (with batch's and upload's admission behind it) is how far a host
    // claims ahead of its uploads. A large buffer here would let the first host to see a
    // burst claim all of it while the others idle; the backlog waits in settle's output.
    let (claimed_tx, claimed_rx) = mpsc::channel(CLAIMED_AHEAD);
    let (batch_tx, batch_rx) = mpsc::channel(BATCHES);
    let (out_tx, out_rx) = mpsc::channel(OUTCOMES);

    let watch = WatchStage {
        inboxes: inboxes.clone(),
        settings: settings.watch,
        mode,
        rescan_now,
        guards: guards.clone(),
    };
    let watchers = watch.start_watchers()?;
    let settle = SettleStage {
        inboxes: inboxes.clone(),
        ignores,
        claims: claims.clone(),
        guards: guards.clone(),
        mode,
        ops: ops.clone(),
        stats: stats.clone(),
    };
    let cluster = crate::cluster::ClusterStage {
        inboxes: inboxes.clone(),
        settings: settings.cluster.clone(),
        claims: claims.clone(),
        guards: guards.clone(),
        mode,
        ops: ops.clone(),
    };
    let upload = UploadStage {
        client: client.clone(),
        s3: settings.s3.clone(),
        inboxes: inboxes.clone(),
        settings: settings.upload.clone(),
        ledger: ledger.clone(),
        mode,
        intake: intake.clone(),
        abort: abort.clone(),
        stats: stats.clone(),
        guards: guards.clone(),
        known: known.clone(),
        ops: ops.clone(),
        wake: (mode == Mode::Daemon).then(|| (claims.clone(), cand_tx.clone())),
    };
    let finish = FinishStage {
        ops: ops.clone(),
        inboxes: inboxes.clone(),
        ledger: ledger.clone(),
        claims: claims.clone(),
        stats: stats.clone(),
        retry_later: settings.upload.retry_later,
        mode,
        guards: guards.clone(),
    };

    let tasks = vec![
        (
            "watch",
            tokio::spawn(watch.run(watchers, cand_tx, intake.clone())),
        ),
        (
            "settle",
            tokio::spawn(settle.run(cand_rx, ready_tx, intake.clone())),
        ),
        (
            "cluster",
            tokio::spawn(cluster.run(ready_rx, claimed_tx, intake.clone())),
        ),
        (
            "batch",
            tokio::spawn(crate::batch::run(settings.batch, claimed_rx, batch_tx)),
        ),
        ("upload", tokio::spawn(upload.run(batch_rx, out_tx))),
    ];
    let finish = tokio::spawn(finish.run(out_rx));

    let maintenance = tokio::spawn(crate::upkeep::hourly(
        ledger.clone(),
        client.clone(),
        inboxes.clone(),
        settings.ledger_keep,
        intake.clone(),
    ));
    let reprobe = tokio::spawn(crate::upload::capabilities::keep_probing(
        client.clone(),
        ledger.clone(),
        endpoint,
        inboxes.clone(),
        known,
        intake.clone(),
    ));
    // systemd's watchdog (WatchdogSec=): pinged only while no stage is stuck, so a pipeline
    // that stops moving gets restarted.
    let watchdog = watchdog_period
        .map(|period| tokio::spawn(crate::ops::watchdog(ops.clone(), period, ops_stop.clone())));
    let grace = settings.shutdown_grace;
    let grace_timer = tokio::spawn(grace_period(intake.clone(), abort.clone(), grace));

    let _ = sd_notify::notify(&[
        sd_notify::NotifyState::Ready,
        sd_notify::NotifyState::Status("watching"),
    ]);
    match phase {
        Phase::Start => tracing::info!(
            inboxes = inboxes.len(),
            concurrency = settings.upload.concurrency,
            mode = ?mode,
            "inboxd started"
        ),
        Phase::Reload { changes } => tracing::info!(
            inboxes = inboxes.len(),
            concurrency = settings.upload.concurrency,
            changes = %changes,
            "reloaded: running with the new configuration"
        ),
    }

    let finished = finish.await;
    // finish ends last in an orderly run-down; if it ended early (ledger failure), stop the
    // rest so that nothing else moves.
    intake.cancel();
    abort.cancel();
    for (stage, task) in tasks {
        if let Err(e) = task.await {
            tracing::error!(stage, error = %e, "a pipeline stage stopped unexpectedly");
        }
    }
    grace_timer.abort();
    // Awaited, not aborted: a prune in progress runs on a blocking thread that holds the
    // ledger, and a reload must be able to open it again right after.
    let _ = maintenance.await;
    let _ = reprobe.await;
    ops_stop.cancel();
    for task in [listening, watchdog].into_iter().flatten() {
        let _ = task.await;
    }
    match finished {
        Ok(Ok(())) => {}
        Ok(Err(e)) => return Err(e.into()),
        Err(e) => return Err(PipelineError::Stage(format!("finish: {e}"))),
    }
    ledger.flush().await?;
    forget_gone(&stats, &inboxes, &guards).await;
    Ok(())
}

/// The last look at the end of a run: files counted as left in an inbox that are no longer
/// there (removed by someone while they waited, since settle last looked) are not left; nor
/// are files of an inbox no longer configured. A share that does not answer keeps its files
/// counted. After the ledger's last flush: nothing here is needed for safety.
async fn forget_gone(stats: &Stats, inboxes: &[crate::config::InboxSettings], guards: &[FsGuard]) {
    let mut by_inbox: Vec<Vec<(std::path::PathBuf, std::path::PathBuf)>> =
        vec![Vec::new(); inboxes.len()];
    for path in stats.waiting_paths() {
        let found = inboxes.iter().enumerate().find_map(|(i, inbox)| {
            let rel = path.strip_prefix(&inbox.path).ok()?;
            Some((i, rel.to_path_buf()))
        });
        match found {
            Some((i, rel)) => by_inbox[i].push((path, rel)),
            None => stats.gone(&path),
        }
    }
    for (i, files) in by_inbox.into_iter().enumerate() {
        if files.is_empty() {
            continue;
        }
        let root = inboxes[i].path.clone();
        let looked = guards[i]
            .run(move || {
                files
                    .into_iter()
                    .filter(|(_, rel)| crate::beneath::metadata(&root, rel).is_err())
                    .map(|(path, _)| path)
                    .collect::<Vec<_>>()
            })
            .await;
        for path in looked.unwrap_or_default() {
            stats.gone(&path);
        }
    }
}

/// After a shutdown request, gives running uploads `grace`, then abandons them (they are
/// done again on the next start: nothing is recorded as uploaded that was not).
async fn grace_period(intake: CancellationToken, abort: CancellationToken, grace: Duration) {
    intake.cancelled().await;
    tokio::select! {
        _ = tokio::time::sleep(grace) => {
            tracing::warn!(grace = ?grace, "grace period over; abandoning uploads still running (they will be redone on the next start)");
            abort.cancel();
        }
        _ = abort.cancelled() => {}
    }
}

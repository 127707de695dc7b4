//! upkeep: the work beside the pipeline that keeps the ledger and the bucket tidy — startup
//! recovery after a crash or a stop, and the hourly housekeeping while running. Neither moves
//! or uploads a file; each only makes the ledger and the server agree with what is on disk.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::beneath;
use crate::config::InboxSettings;
use crate::ledger::{Ledger, LedgerError, Record, State};

/// At startup, before any stage runs: interrupted multipart uploads whose file is gone or
/// changed are aborted (they can never be resumed), and records of files moved just before a
/// crash, whose final record did not reach the disk, are completed. Flushed before returning.
///
/// Re-hashing the files of interrupted multipart uploads can take minutes (a 100 GiB file
/// on a slow share); meanwhile systemd is told the start is still under way (see
/// [`StartExtender`]), so that `TimeoutStartSec=` does not kill a recovery that moves.
pub async fn recover(
    client: &aws_sdk_s3::Client,
    ledger: &Ledger,
    inboxes: &[InboxSettings],
) -> Result<(), LedgerError> {
    let long = ledger
        .records()
        .filter_map(Result::ok)
        .any(|r| r.upload_id.is_some());
    // Stops extending when dropped, whichever way this function returns.
    let _extending = long.then(StartExtender::start);
    cleanup(client, ledger, inboxes, None).await?;
    let fixed = reconcile(ledger, inboxes)?;
    if fixed > 0 {
        // Normal after a crash or a kill (the last records are written after the move and
        // flushed with the next group); after a clean stop there are none.
        tracing::info!(
            records = fixed,
            "ledger: recorded where files went that were moved just before the previous run ended"
        );
    }
    ledger.flush().await
}

/// How often a long startup tells systemd it is still starting, and how far each message
/// moves the start timeout (from the moment it arrives: systemd never shortens it).
const EXTEND_EVERY: Duration = Duration::from_secs(10);
const EXTEND_BY: Duration = Duration::from_secs(30);
/// A recovery that has shown no sign of life (a chunk hashed, an upload checked) for this
/// long is no longer vouched for: it is left to systemd's timeout, which then ends a start
/// that hangs (on a share that stopped answering, say) instead of waiting for ever. Above the
/// longest single step without a sign of life (an abort waits at most 30 s for its answer).
const EXTEND_QUIET: Duration = Duration::from_secs(60);
// One message lost or late must not end the start.
const _: () = assert!(EXTEND_BY.as_secs() > 2 * EXTEND_EVERY.as_secs());

/// Pure: whether to extend the start timeout at `now`, the last sign of life at `last`.
fn extend_now(now: tokio::time::Instant, last: tokio::time::Instant) -> bool {
    now.saturating_duration_since(last) < EXTEND_QUIET
}

/// Sends `EXTEND_TIMEOUT_USEC` to systemd (sd_notify; nothing without `NOTIFY_SOCKET`) at
/// once and then every `EXTEND_EVERY` while the work shows signs of life; stops when dropped.
/// `READY=1` comes after the recovery, from the pipeline.
pub struct StartExtender {
    task: tokio::task::JoinHandle<()>,
}

impl StartExtender {
    pub fn start() -> StartExtender {
        let task = tokio::spawn(async {
            let by = u32::try_from(EXTEND_BY.as_micros()).unwrap_or(u32::MAX);
            let mut seen = crate::run::signs_of_life();
            let mut last = tokio::time::Instant::now();
            let mut tick = tokio::time::interval(EXTEND_EVERY);
            loop {
                tick.tick().await;
                let now = tokio::time::Instant::now();
                let signs = crate::run::signs_of_life();
                if signs != seen {
                    (seen, last) = (signs, now);
                }
                if extend_now(now, last) {
                    let _ = sd_notify::notify(&[
                        sd_notify::NotifyState::ExtendTimeoutUsec(by),
                        sd_notify::NotifyState::Status("recovering interrupted uploads"),
                    ]);
                }
            }
        });
        StartExtender { task }
    }
}

impl Drop for StartExtender {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// How often the ledger is tidied.
const MAINTAIN_EVERY: Duration = Duration::from_secs(3600);
/// A recorded multipart upload nobody has touched for this long is checked (and aborted if
/// its file is gone or changed) without waiting for a restart.
const IDLE_UPLOAD: Duration = Duration::from_secs(24 * 3600);

/// Keeps the ledger and the bucket tidy while running: every hour, removes finished and
/// failed records older than `ledger.keep` (unless it is zero), and aborts multipart uploads
/// left idle by files that went away.
pub async fn hourly(
    ledger: Ledger,
    client: aws_sdk_s3::Client,
    inboxes: Arc<Vec<crate::config::InboxSettings>>,
    keep: Duration,
    stop: CancellationToken,
) {
    let mut tick = tokio::time::interval(MAINTAIN_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.cancelled() => return,
        }
        let now = std::time::SystemTime::now();
        if let Some(cutoff) = now.checked_sub(keep).filter(|_| !keep.is_zero()) {
            let l = ledger.clone();
            match tokio::task::spawn_blocking(move || l.prune(cutoff)).await {
                Ok(Ok(0)) => {}
                Ok(Ok(n)) => tracing::info!(removed = n, keep = ?keep, "pruned old ledger records"),
                Ok(Err(e)) => tracing::warn!(error = %e, "cannot prune the ledger"),
                Err(e) => tracing::warn!(error = %e, "ledger pruning stopped unexpectedly"),
            }
        }
        let idle_since = now.checked_sub(IDLE_UPLOAD);
        if let Err(e) = cleanup(&client, &ledger, &inboxes, idle_since).await {
            tracing::warn!(error = %e, "cannot check idle multipart uploads");
        }
    }
}

/// Aborts every multipart upload in the ledger that cannot be resumed because its file is gone
/// or no longer has the same content. The rest resume when their file comes by.
///
/// At startup `idle_since` is `None`: every recorded upload is looked at. While running, only
/// uploads whose record has not changed since `idle_since` are: an upload in progress updates
/// its record with every part, and a deferred one with every retry, so an old record means
/// nobody is working on it (typically its file was deleted while it waited).
pub async fn cleanup(
    client: &aws_sdk_s3::Client,
    ledger: &Ledger,
    inboxes: &[InboxSettings],
    idle_since: Option<std::time::SystemTime>,
) -> Result<(), crate::ledger::LedgerError> {
    let mut open = Vec::new();
    for rec in ledger.records() {
        let rec = rec?;
        let idle = match idle_since {
            None => true,
            Some(t) => humantime::parse_rfc3339(&rec.updated_at).is_ok_and(|u| u < t),
        };
        if rec.upload_id.is_some() && idle {
            open.push(rec);
        }
    }
    for mut rec in open {
        let Some(inbox) = inboxes.iter().find(|i| i.name == rec.inbox) else {
            crate::upload::multipart::abort_recorded(client, ledger, &rec.bucket.clone(), &mut rec)
                .await;
            continue;
        };
        if !inbox.path.is_dir() {
            // Its share is not mounted: the file may well be there later; keep the upload.
            continue;
        }
        let root = inbox.path.clone();
        let rel = std::path::PathBuf::from(&rec.rel_path);
        let want = rec.sha256.clone();
        let size = rec.size;
        // At startup the content is compared (a restart may follow any change); while running,
        // the hourly check only looks at presence and size, so that a huge file waiting in a
        // paused inbox is not read again every hour.
        let full = idle_since.is_none();
        let same = tokio::task::spawn_blocking(move || {
            let meta = crate::beneath::metadata(&root, &rel).ok()?;
            if !full {
                return (meta.is_file() && meta.len() == size).then_some(());
            }
            let sig = crate::settle::Signature::of(&meta);
            // Every chunk read is a sign of life: a long re-hash keeps the start going.
            let sha = crate::upload::hash::digests(
                &root,
                &rel,
                &sig,
                crate::upload::hash::Want::default(),
                &crate::run::sign_of_life,
            )
            .ok()?
            .whole;
            (Some(hex::encode(sha)) == want).then_some(())
        })
        .await
        .ok()
        .flatten();
        if same.is_none() {
            tracing::info!(inbox = %rec.inbox, path = %crate::telemetry::escape(&rec.rel_path),
                "the file of an interrupted multipart upload is gone or changed; aborting that upload");
            let bucket = rec.bucket.clone();
            crate::upload::multipart::abort_recorded(client, ledger, &bucket, &mut rec).await;
        }
        // One recorded upload checked: progress, for a long startup (see StartExtender).
        crate::run::sign_of_life();
    }
    ledger.flush().await
}

/// At startup: records left at `uploaded` (or `failed` without a destination) whose file is
/// no longer in its inbox were moved just before a crash, before the final record reached
/// the disk (it is written after the move and flushed with the next group). Marks them
/// finished (with their place in done/ when it is where the move would have put it), or
/// records their place in failed/. Files still in the inbox keep their state: the sweep finds
/// them and they are only moved. Returns how many were fixed.
pub fn reconcile(ledger: &Ledger, inboxes: &[InboxSettings]) -> Result<usize, LedgerError> {
    let mut fixed = 0;
    let stale: Vec<Record> = ledger
        .records()
        .filter_map(|r| r.ok())
        .filter(|r| r.state == State::Uploaded || (r.state == State::Failed && r.dest.is_none()))
        .collect();
    for mut rec in stale {
        let Some(inbox) = inboxes.iter().find(|i| i.name == rec.inbox) else {
            continue; // an inbox no longer configured: leave its records as they are
        };
        if !inbox.path.is_dir() {
            continue; // its share is not mounted: a missing folder says nothing about its files
        }
        let rel = Path::new(&rec.rel_path);
        if beneath::metadata(&inbox.path, rel).is_ok() {
            continue;
        }
        if rec.state == State::Failed {
            // Moved to failed/ just before a crash. Recording where matters: a failed file
            // with no destination is one whose move is still owed, and would not be uploaded
            // again if an admin put it back into the inbox to retry it.
            rec.dest = Some(inbox.failed_dir.join(&rec.rel_path));
        } else {
            let done = inbox.done_dir.join(&rec.rel_path);
            let there = beneath::metadata(&inbox.done_dir, rel)
                .is_ok_and(|m| m.is_file() && m.len() == rec.size);
            rec.state = State::Finished;
            rec.dest = there.then_some(done);
        }
        ledger.put(&mut rec)?;
        fixed += 1;
    }
    Ok(fixed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_recovery_is_vouched_for_while_it_shows_signs_of_life() {
        let t0 = tokio::time::Instant::now();
        assert!(extend_now(t0, t0));
        assert!(extend_now(t0 + EXTEND_QUIET / 2, t0));
        // Quiet too long: systemd's own timeout decides.
        assert!(!extend_now(t0 + EXTEND_QUIET, t0));
        assert!(extend_now(t0 + EXTEND_QUIET, t0 + EXTEND_QUIET / 2));
    }
}

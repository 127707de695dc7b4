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
pub async fn recover(
    client: &aws_sdk_s3::Client,
    ledger: &Ledger,
    inboxes: &[InboxSettings],
) -> Result<(), LedgerError> {
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
            let sha = crate::upload::hash::sha256_file(&root, &rel, &sig).ok()?;
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

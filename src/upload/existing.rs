//! A create-only write found the key taken: whose object is it? Ours (uploaded before a crash,
//! or by an attempt whose answer was lost: done), our own abandoned earlier version of this
//! file (replace exactly it), or someone else's, which `on_conflict` decides: fail the file,
//! upload under a new key, or overwrite.

use super::s3::{self, Disposition};
use super::{FileResult, Shared, changed_since, keys};
use crate::config::{InboxSettings, OnConflict};
use crate::settle::ReadyFile;

/// Where the next attempt writes, and under which condition.
pub(super) struct Target<'a> {
    pub(super) key: &'a mut String,
    /// Replace exactly this object (our own abandoned earlier version).
    pub(super) replace_etag: &'a mut Option<String>,
    /// Replace whatever is there (on_conflict = "overwrite").
    pub(super) unconditional: &'a mut bool,
}

/// What to do after a create-only write found the key taken.
pub(super) enum Existing {
    /// Settled: the object is ours, or the conflict policy decided.
    Done(FileResult),
    /// Write again, to the (possibly new) target.
    TryAgain,
    /// HEAD itself failed: treat like any failed request.
    HeadFailed(Disposition),
}

/// The key already holds an object: find out whose, and apply `on_conflict`.
pub(super) async fn on_existing_object(
    sh: &Shared,
    file: &ReadyFile,
    inbox: &InboxSettings,
    default_key: &str,
    rel: &str,
    hex: &str,
    target: &mut Target<'_>,
) -> Existing {
    let key = target.key.clone();
    let looked = super::liveness::watch(sh.stall, s3::head(&sh.client, &inbox.bucket, &key)).await;
    let h = match looked {
        Ok(Ok(Some(h))) => h,
        Ok(Ok(None)) => {
            // It went away meanwhile: just try again, create-only (an object we meant to
            // replace is gone too).
            *target.replace_etag = None;
            return Existing::TryAgain;
        }
        Ok(Err(hf)) => return Existing::HeadFailed(hf.disposition),
        // No answer: a hung server, like a refused connection.
        Err(_stalled) => return Existing::HeadFailed(Disposition::Unreachable),
    };
    if h.sha256.as_deref() == Some(hex) && h.size == Some(file.size as i64) {
        // Exactly our content is already there: an earlier attempt (before a crash, or whose
        // answer was lost) stored it. Nothing to send again.
        if changed_since(sh, file).await {
            return Existing::Done(FileResult::Changed);
        }
        return Existing::Done(FileResult::Uploaded {
            key,
            etag: h.etag,
            existed: true,
        });
    }
    let ours = sh.ledger.get_abandoned(&inbox.bucket, &key).ok().flatten();
    let abandoned_by_us = ours.is_some_and(|o| {
        o.inbox == inbox.name && o.rel_path == rel && h.sha256.as_deref() == Some(o.sha256.as_str())
    });
    if abandoned_by_us && h.etag.is_some() {
        // An earlier version of this same file that we stored but never finished (it changed
        // during upload): replace exactly that object, and nothing else.
        tracing::info!(key = %crate::telemetry::escape(&key), "replacing an unfinished earlier version of this file");
        *target.replace_etag = h.etag;
        return Existing::TryAgain;
    }
    *target.replace_etag = None;
    match sh.settings.on_conflict {
        OnConflict::Rename if key == default_key => {
            *target.key = keys::conflict_key(default_key, hex);
            Existing::TryAgain
        }
        OnConflict::Overwrite => {
            tracing::warn!(key = %crate::telemetry::escape(&key), "replacing a different existing object (on_conflict = \"overwrite\")");
            *target.unconditional = true;
            Existing::TryAgain
        }
        _ => Existing::Done(FileResult::Failed {
            reason: format!(
                "a different object already exists at s3://{}/{key} (sha256 {}); on_conflict = \"{}\" keeps it",
                inbox.bucket,
                h.sha256.as_deref().unwrap_or("unknown"),
                sh.settings.on_conflict
            ),
        }),
    }
}

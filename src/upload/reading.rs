//! Reading the file for its upload: hashing under the inbox's time limit, the retry window
//! for files that cannot be read yet, and the check that the file is still the one settle
//! handed on.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::time::Instant;

use super::{FileResult, Shared, hash};
use crate::settle::{ReadyFile, Signature};

/// Hashes `file` (whole and, for multipart, per part; small files also kept in memory), or
/// says what became of it instead.
pub(super) async fn digests(
    sh: &Shared,
    file: &ReadyFile,
    part_size: Option<u64>,
) -> Result<hash::Digests, FileResult> {
    let inbox = &sh.inboxes[file.inbox];
    let failed = |reason: String| FileResult::Failed { reason };
    let lane = if part_size.is_some() {
        &sh.hashing_large
    } else {
        &sh.hashing
    };
    let Ok(_slot) = lane.acquire().await else {
        return Err(FileResult::Interrupted);
    };
    let root = file.root.clone();
    let rel = file.at.clone();
    let sig = file.sig;
    // Small files are kept in memory from this single read: hashed and sent from the same
    // bytes, one read instead of two. At most (files admitted) × SMALL bytes.
    let want = hash::Want {
        part_size,
        keep: file.size <= hash::SMALL,
        md5: sh.known.get(&inbox.bucket).send_md5(),
    };
    // Under the inbox's time limit, counted from the last chunk read: a hung share stalls
    // this inbox, never a hashing slot for good.
    let hashed = sh.guards[file.inbox]
        .run_with_progress(move |p| hash::digests(&root, &rel, &sig, want, &|| p.tick()))
        .await;
    let hashed = match hashed {
        Ok(h) => h,
        // Said once for the inbox by its guard; per file it only waits.
        Err(stalled) => {
            return Err(FileResult::Paused {
                reason: stalled.to_string(),
                until: Instant::now() + inbox.fs_timeout,
            });
        }
    };
    if !matches!(&hashed, Err(hash::HashError::Io(e)) if e.kind() == std::io::ErrorKind::PermissionDenied)
    {
        sh.unreadable.forget(&file.path);
    }
    match hashed {
        Ok(d) => Ok(d),
        Err(hash::HashError::Changed) => Err(FileResult::Changed),
        // Gone, or no longer a regular file reached without links (replaced by a link or a
        // FIFO since settle looked): it goes round again and settle says what it is.
        Err(hash::HashError::Io(e))
            if matches!(
                e.kind(),
                std::io::ErrorKind::NotFound
                    | std::io::ErrorKind::InvalidInput
                    | std::io::ErrorKind::NotADirectory
            ) || e.raw_os_error() == Some(libc::ELOOP) =>
        {
            Err(FileResult::Changed)
        }
        Err(hash::HashError::Io(e)) if e.kind() == std::io::ErrorKind::PermissionDenied => {
            // Often temporary: the file was dropped before its chmod or ACL. Give it
            // `unreadable_retry_for` before it counts as failed.
            let window = sh.settings.unreadable_retry_for;
            Err(
                match sh.unreadable.note(&file.path, Instant::now(), window) {
                    Unreadable::Wait => FileResult::Deferred {
                        reason: format!(
                            "cannot read the file yet ({e}); retried for up to {}",
                            humantime::format_duration(window)
                        ),
                    },
                    Unreadable::GiveUp => failed(format!(
                        "cannot read the file: {e} (still, after {})",
                        humantime::format_duration(window)
                    )),
                },
            )
        }
        Err(e) => Err(failed(e.to_string())),
    }
}

/// Whether an unreadable file gets more time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Unreadable {
    Wait,
    GiveUp,
}

/// When each file was first found unreadable (permission denied), so that it is retried for
/// a while before it goes to failed/: a chmod or ACL often arrives just after the file.
#[derive(Default)]
pub(super) struct UnreadableSince(std::sync::Mutex<HashMap<PathBuf, Instant>>);

impl UnreadableSince {
    fn map(&self) -> std::sync::MutexGuard<'_, HashMap<PathBuf, Instant>> {
        // A poisoned lock only means a panic elsewhere; single inserts/removes keep it sound.
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The file is unreadable now: wait longer or give up.
    pub(super) fn note(&self, path: &Path, now: Instant, window: Duration) -> Unreadable {
        let mut map = self.map();
        // Files that went away while waiting are never looked up again: drop old entries.
        map.retain(|_, since| now.saturating_duration_since(*since) <= window * 4 + HOUR);
        let since = *map.entry(path.to_path_buf()).or_insert(now);
        let verdict = unreadable_verdict(since, now, window);
        if verdict == Unreadable::GiveUp {
            map.remove(path);
        }
        verdict
    }

    pub(super) fn forget(&self, path: &Path) {
        let mut map = self.map();
        if !map.is_empty() {
            map.remove(path);
        }
    }
}

const HOUR: Duration = Duration::from_secs(3600);

/// A file unreadable since `since` is retried until `window` has passed.
pub(super) fn unreadable_verdict(since: Instant, now: Instant, window: Duration) -> Unreadable {
    if now.saturating_duration_since(since) < window {
        Unreadable::Wait
    } else {
        Unreadable::GiveUp
    }
}

/// True when the file is no longer the one settle handed on (or is gone). A share that does
/// not answer counts as changed: nothing is recorded as done that could not be checked, and
/// the file goes round again.
pub(super) async fn changed_since(sh: &Shared, file: &ReadyFile) -> bool {
    let root = file.root.clone();
    let rel = file.at.clone();
    let looked = sh.guards[file.inbox]
        .run(move || crate::beneath::metadata(&root, &rel))
        .await;
    match looked {
        Ok(Ok(m)) => Signature::of(&m) != file.sig,
        Ok(Err(_)) | Err(_) => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unreadable_files_wait_then_fail() {
        let t0 = Instant::now();
        let w = Duration::from_secs(300);
        assert_eq!(unreadable_verdict(t0, t0, w), Unreadable::Wait);
        assert_eq!(unreadable_verdict(t0, t0 + w / 2, w), Unreadable::Wait);
        assert_eq!(unreadable_verdict(t0, t0 + w, w), Unreadable::GiveUp);
        let u = UnreadableSince::default();
        let p = Path::new("/in/a");
        assert_eq!(u.note(p, t0, w), Unreadable::Wait);
        assert_eq!(u.note(p, t0 + w / 2, w), Unreadable::Wait);
        assert_eq!(u.note(p, t0 + w, w), Unreadable::GiveUp);
        // Given up: a new drop under the same name starts afresh.
        assert_eq!(u.note(p, t0 + w * 2, w), Unreadable::Wait);
        u.forget(p);
        assert_eq!(u.note(p, t0 + w * 3, w), Unreadable::Wait);
    }
}

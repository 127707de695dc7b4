//! Run-wide state that every stage reads: how the pipeline runs ([`Mode`]) and what it has
//! done so far ([`Stats`]). Kept apart from the stages so that no stage imports another one
//! for it.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tokio::time::Instant;

/// How the pipeline runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Watch until shut down (`inboxd run`).
    Daemon,
    /// One sweep of every inbox, then end (`inboxd once`).
    Once,
}

/// Why a pipeline starts: the process starts, or a reload with a changed configuration
/// (described in words) replaces the previous pipeline.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Phase {
    Start,
    Reload { changes: String },
}

/// What became of a file, in the words every count uses: the batch lines, the final line
/// and `once`'s exit code all count these and nothing else.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Fate {
    /// The object holds the file (stored now, or found there with the same content) and the
    /// file is in done/.
    Uploaded,
    /// The same file (inbox, path, content) was finished before: moved to done/ without an
    /// upload.
    Duplicate,
    /// In failed/, with its reason file.
    Failed,
    /// Still in the inbox, tried again at a set time: S3 unreachable or throttling, its inbox
    /// paused or its share not answering, the file unreadable for now, or its move to done/
    /// or failed/ did not work.
    Deferred,
    /// Still in the inbox, taken again once stable: it changed while it was processed, or
    /// shutdown came first.
    Requeued,
}

impl Fate {
    /// The file is still in the inbox.
    pub fn stays(self) -> bool {
        matches!(self, Fate::Deferred | Fate::Requeued)
    }
}

/// Pure: whether a file's fate is news, given the fate it had before in this run. A file that
/// waits again the way it already waited (another retry round of a deferred file, another
/// round of a paused inbox) is not: its lines go to debug, so that waiting files do not fill
/// the log with the same line every few seconds.
pub fn is_news(before: Option<Fate>, now: Fate) -> bool {
    !(now.stays() && before == Some(now))
}

/// Counters over the whole run, reloads included (for `inboxd once`'s exit code and the final
/// log line). Files are counted once each, when they leave the inbox; the files still in it
/// are kept by path, so that a file deferred ten times is one file left, not ten.
#[derive(Debug, Default)]
pub struct Stats {
    pub uploaded: AtomicU64,
    pub duplicates: AtomicU64,
    pub failed: AtomicU64,
    /// Bytes of the files counted in the three above (for `once`'s progress bar).
    pub done_bytes: AtomicU64,
    /// Files whose latest fate kept them in the inbox, and that fate.
    waiting: std::sync::Mutex<HashMap<PathBuf, Fate>>,
    busy: std::sync::Mutex<(Option<Instant>, Option<Instant>)>,
}

impl Stats {
    pub fn get(c: &AtomicU64) -> u64 {
        c.load(Ordering::Relaxed)
    }

    fn waiting(&self) -> std::sync::MutexGuard<'_, HashMap<PathBuf, Fate>> {
        // A poisoned lock only means a panic elsewhere; the map is always whole.
        self.waiting.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Counts what became of the file at `path`. Returns whether that is news (see
    /// [`is_news`]).
    pub fn count(&self, path: &Path, fate: Fate) -> bool {
        let before = if fate.stays() {
            self.waiting().insert(path.to_path_buf(), fate)
        } else {
            self.waiting().remove(path)
        };
        let counter = match fate {
            Fate::Uploaded => Some(&self.uploaded),
            Fate::Duplicate => Some(&self.duplicates),
            Fate::Failed => Some(&self.failed),
            Fate::Deferred | Fate::Requeued => None,
        };
        if let Some(c) = counter {
            c.fetch_add(1, Ordering::Relaxed);
        }
        is_news(before, fate)
    }

    /// Adds the size of a file that left the inbox (uploaded, duplicate or failed).
    pub fn add_done_bytes(&self, size: u64) {
        self.done_bytes.fetch_add(size, Ordering::Relaxed);
    }

    /// When the first file reached the upload stage, if one has.
    pub fn busy_since(&self) -> Option<Instant> {
        self.busy.lock().unwrap_or_else(|p| p.into_inner()).0
    }

    /// The file at `path` is no longer in its inbox (someone removed it): it is not left.
    pub fn gone(&self, path: &Path) {
        self.waiting().remove(path);
    }

    /// Paths of the files still in their inbox (for a last look at the end of a run).
    pub fn waiting_paths(&self) -> Vec<PathBuf> {
        self.waiting().keys().cloned().collect()
    }

    /// Files left in the inbox: deferred or requeued, and not seen leaving since.
    pub fn left(&self) -> u64 {
        self.waiting().len() as u64
    }

    /// Of the files left, those deferred (the rest are requeued).
    pub fn deferred(&self) -> u64 {
        self.waiting()
            .values()
            .filter(|f| **f == Fate::Deferred)
            .count() as u64
    }

    /// A file reached the upload stage (the first one starts the busy period).
    pub fn mark_started(&self) {
        let mut b = self.busy.lock().unwrap_or_else(|p| p.into_inner());
        if b.0.is_none() {
            b.0 = Some(Instant::now());
        }
    }

    pub(crate) fn mark_finished(&self) {
        let mut b = self.busy.lock().unwrap_or_else(|p| p.into_inner());
        b.1 = Some(Instant::now());
    }

    /// From the first file reaching upload to the last outcome recorded: the upload phase,
    /// without settle time (for the benchmark and the final log line).
    pub fn busy(&self) -> Option<Duration> {
        let b = self.busy.lock().unwrap_or_else(|p| p.into_inner());
        match *b {
            (Some(from), Some(until)) => Some(until.saturating_duration_since(from)),
            _ => None,
        }
    }
}

/// Waits until `t`; returns at once when there is no `t` (callers guard a `select!` branch
/// with `if t.is_some()`). Stage loops use tokio's clock, so a paused test clock drives them.
pub async fn sleep_until(t: Option<Instant>) {
    if let Some(t) = t {
        tokio::time::sleep_until(t).await;
    }
}

/// Signs of life of long work (a chunk of a body sent, a chunk of a file read): counted so
/// that a stage busy with one long upload or hash is not taken for a stuck one.
static SIGNS_OF_LIFE: AtomicU64 = AtomicU64::new(0);

pub fn sign_of_life() {
    SIGNS_OF_LIFE.fetch_add(1, Ordering::Relaxed);
}

pub fn signs_of_life() -> u64 {
    SIGNS_OF_LIFE.load(Ordering::Relaxed)
}

/// Requests repeated after a transient failure, by the SDK or by the upload loop.
static RETRIES: AtomicU64 = AtomicU64::new(0);

pub fn retried() {
    RETRIES.fetch_add(1, Ordering::Relaxed);
}

pub fn retries() -> u64 {
    RETRIES.load(Ordering::Relaxed)
}

/// Exit code: something outside the configuration is missing or refuses (a folder, the
/// bucket, the credentials, the ledger in use, a file that did not make it for `once`).
pub const EXIT_REFUSED: u8 = 1;
/// Exit code: the configuration or the command line is wrong.
pub const EXIT_CONFIG_ERROR: u8 = 2;

/// This machine's host name (`{host}` in key templates), read once.
pub fn host_name() -> &'static str {
    static HOST: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    HOST.get_or_init(|| {
        rustix::system::uname()
            .nodename()
            .to_string_lossy()
            .into_owned()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_is_counted_once_and_waiting_again_is_no_news() {
        let s = Stats::default();
        let a = Path::new("/in/a.pdf");
        assert!(s.count(a, Fate::Deferred), "first deferral");
        assert!(!s.count(a, Fate::Deferred), "deferred again: a retry round");
        assert!(s.count(a, Fate::Requeued), "another way of waiting");
        assert!(s.count(a, Fate::Deferred));
        assert_eq!(
            (s.left(), s.deferred()),
            (1, 1),
            "one file, however many rounds"
        );
        assert!(s.count(a, Fate::Failed));
        assert_eq!(s.left(), 0, "a file counted failed is not left");
        assert_eq!(Stats::get(&s.failed), 1);
        assert!(s.count(a, Fate::Deferred), "back again later: news");
        s.gone(a);
        assert_eq!(s.left(), 0);
        assert!(s.count(Path::new("/in/b.pdf"), Fate::Uploaded));
        assert!(s.count(Path::new("/in/c.pdf"), Fate::Duplicate));
        assert_eq!((Stats::get(&s.uploaded), Stats::get(&s.duplicates)), (1, 1));
    }
}

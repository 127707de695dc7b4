//! settle: decides when a file is complete. A candidate becomes a [`ReadyFile`] once its
//! size, nanosecond mtime and inode have not changed for the inbox's settle window, measured
//! by this process (never by trusting mtime's age: clocks on network shares drift).
//!
//! Where the kernel can tell (a read lease), a quiet file that some process still holds open
//! for writing is not complete either: its writer may only be pausing.
//!
//! A file of a known format (PDF, ZIP, PNG, JPEG, TIFF, GIF; see [`mod@format`]) must also be
//! whole by its own structure; a cut one waits, and goes to failed/ after the inbox's
//! `incomplete_after`. On a local file system a file whose writer has closed it
//! ([`Hint::Closed`]) is looked at at once and may go without the settle window; see
//! [`CLOSE_PAUSE`].
//!
//! "Not yet complete" is a normal state, not an error. Ignored names (hidden files, `*.tmp`,
//! `*.part`, `~$*`, `Thumbs.db`, … in any component of the path) are skipped here, and
//! zero-byte files wait until they grow.
//!
//! The decisions are [`Settler`]'s (pure, time passed in); this module's loop makes the looks:
//! each one a blocking call under its inbox's [`FsGuard`], all of them concurrent, so a share
//! that hangs holds up only its own files.
//!
//! In daemon mode a file stays in view while it is in flight, so that a file handed back
//! (deferred, inbox paused, changed during upload) is offered again exactly when its claim
//! allows, without waiting for a rescan.

use std::future::Future;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;

use futures::StreamExt;
use futures::future::BoxFuture;
use futures::stream::FuturesUnordered;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::claims::Claims;
use crate::config::InboxSettings;
use crate::run::{Mode, Stats};
use crate::stall::FsGuard;
use crate::watch::Candidate;

pub mod format;
mod ignore;
mod settler;
pub use ignore::{DEFAULT_IGNORES, Ignore};
pub use settler::{CLOSE_PAUSE, Checked, Decision, Due, Hint, Look, RECHECK_MAX, Rules, Settler};

/// What settle knows about a file when it hands it on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Signature {
    pub size: u64,
    pub mtime_ns: i128,
    pub ino: u64,
    pub dev: u64,
}

impl Signature {
    pub fn of(meta: &std::fs::Metadata) -> Signature {
        Signature {
            size: meta.len(),
            mtime_ns: meta.mtime() as i128 * 1_000_000_000 + meta.mtime_nsec() as i128,
            ino: meta.ino(),
            dev: meta.dev(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Kind {
    Regular,
    /// A symlink, FIFO, socket or device: never opened nor uploaded, moved to failed/ (as
    /// itself: a link as the link) with this reason, which says what it is (and where a link
    /// points).
    NotRegular(String),
    /// A regular file its format says is cut, and has been for the inbox's
    /// `incomplete_after`: never uploaded, moved to failed/ with this reason (see
    /// [`mod@format`]).
    Incomplete(String),
}

/// A file that has been stable for its settle window, claimed for upload.
#[derive(Debug, Clone)]
pub struct ReadyFile {
    pub inbox: usize,
    pub path: PathBuf,
    /// Path relative to the inbox: the file's name for its key, done/ and the ledger.
    pub rel: PathBuf,
    /// Its inbox's folder, the root every access to the file is resolved beneath.
    pub root: PathBuf,
    /// Where the file is, relative to `root`: `rel`, or, once claimed on a shared inbox, its
    /// place in this host's claim folder there (see [`crate::cluster`]). Always resolved
    /// beneath `root`, never through a link, like every path in an inbox.
    pub at: PathBuf,
    pub size: u64,
    pub sig: Signature,
    pub kind: Kind,
    /// When settle handed it on (for latency figures).
    pub ready_at: Instant,
}

/// Files being looked at, at most, at once.
const LOOKS: usize = 512;
/// Files of one inbox looked at in one blocking call, at most.
const GROUP: usize = 64;
/// How long after a file's due time its look may wait for others due at about the same time.
const COALESCE: Duration = Duration::from_millis(5);

/// How often the backlog is reported to [`crate::ops`].
const BACKLOG_EVERY: Duration = Duration::from_secs(1);

pub struct SettleStage {
    pub inboxes: Arc<Vec<InboxSettings>>,
    pub ignores: Vec<Ignore>,
    pub claims: Arc<Claims>,
    /// One per inbox: its file-system calls run under its time limit (see [`crate::stall`]).
    pub guards: Vec<FsGuard>,
    pub mode: Mode,
    /// Where the backlog is shown (metrics, `/status`).
    pub ops: Arc<crate::ops::Ops>,
    /// Told when a file that was left in the inbox has gone (it is no longer left).
    pub stats: Arc<Stats>,
}

impl SettleStage {
    pub async fn run(
        self,
        mut input: mpsc::Receiver<Candidate>,
        output: mpsc::Sender<ReadyFile>,
        shutdown: CancellationToken,
    ) {
        let mut settler = Settler::new(self.mode == Mode::Daemon);
        // Looks run concurrently and are handled as they come back, so a look that waits on
        // a hung share holds up nothing but its own inbox's files. Files due together in one
        // inbox are looked at in one blocking call: one thread hand-off per group, not per file.
        let mut looks: FuturesUnordered<BoxFuture<'static, Vec<(PathBuf, Look)>>> =
            FuturesUnordered::new();
        let mut in_flight = 0usize;
        let mut input_open = true;
        // The backlog for metrics and `/status`, once a second (ages are computed when read).
        let mut report = tokio::time::interval(BACKLOG_EVERY);
        report.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        loop {
            if !input_open && settler.is_empty() {
                return; // once mode: everything swept has been handed on or has vanished
            }
            // A little after the earliest due time, so that files due within a few
            // milliseconds of each other share one look (never before: a window is a minimum).
            let next = settler.next_due().map(|t| t + COALESCE);
            tokio::select! {
                _ = shutdown.cancelled() => return,
                c = input.recv(), if input_open => match c {
                    Some(c) => {
                        self.on_candidate(c, &mut settler);
                        // A burst (a sweep, many drops at once) is taken in as a whole.
                        for _ in 0..GROUP {
                            let Ok(c) = input.try_recv() else { break };
                            self.on_candidate(c, &mut settler);
                        }
                    }
                    None => input_open = false,
                },
                Some(group) = looks.next() => {
                    in_flight -= group.len();
                    for (path, look) in group {
                        if !self.on_look(&path, look, &mut settler, &output).await {
                            return; // downstream is gone: shutting down
                        }
                    }
                }
                _ = crate::run::sleep_until(next), if next.is_some() && in_flight < LOOKS => {}
                _ = report.tick() => {
                    for (inbox, (files, oldest)) in settler.backlog(self.inboxes.len()).into_iter().enumerate() {
                        self.ops.backlog(inbox, files, oldest);
                    }
                }
            }
            let due = settler.take_due(Instant::now(), LOOKS.saturating_sub(in_flight));
            for group in self.groups(due) {
                in_flight += group.len();
                looks.push(Box::pin(self.look(group)));
            }
        }
    }

    /// Due looks by inbox, at most [`GROUP`] to a group.
    fn groups(&self, due: Vec<Due>) -> Vec<Vec<Due>> {
        let mut by_inbox: Vec<Vec<Due>> = Vec::new();
        for d in due {
            match by_inbox
                .iter_mut()
                .find(|g| g[0].inbox == d.inbox && g.len() < GROUP)
            {
                Some(g) => g.push(d),
                None => by_inbox.push(vec![d]),
            }
        }
        by_inbox
    }

    fn on_candidate(&self, c: Candidate, settler: &mut Settler) {
        let inbox = &self.inboxes[c.inbox];
        let Ok(rel) = c.path.strip_prefix(&inbox.path).map(Path::to_path_buf) else {
            return; // not under this inbox (cannot happen with our watchers)
        };
        if rel.as_os_str().is_empty() || self.ignores[c.inbox].is_ignored(&rel) {
            return;
        }
        let now = Instant::now();
        let wake = c.now.then(|| c.path.clone());
        let rules = Rules {
            settle: inbox.settle,
            incomplete_after: inbox.incomplete_after,
        };
        let new = settler.candidate(c.path, c.inbox, rel, rules, c.hint, now);
        if let Some(path) = wake.filter(|_| !new) {
            // Its wait is over (a paused inbox works again): look now, not at the old time.
            settler.retry_at(&path, now);
        }
    }

    /// Looks at a group of files of one inbox, in one call on the blocking pool under the
    /// inbox's time limit (each look counts as progress).
    fn look(&self, group: Vec<Due>) -> impl Future<Output = Vec<(PathBuf, Look)>> + Send + use<> {
        let inbox = group.first().map_or(0, |d| d.inbox);
        let guard = self.guards[inbox].clone();
        let root = self.inboxes[inbox].path.clone();
        let check = self.inboxes[inbox].check_format;
        let now = Instant::now();
        // Ask whether a writer still holds a file, and check its format, only when it looked
        // quiet (or its writer has just closed it) and is free to go: both open the file.
        let jobs: Vec<(PathBuf, PathBuf, Ask)> = group
            .into_iter()
            .map(|d| {
                let ask = if self.claims.busy(&d.path, now).is_some() {
                    Ask::Nothing
                } else if d.closed {
                    Ask::Always
                } else {
                    d.unchanged_from.map_or(Ask::Nothing, Ask::IfUnchanged)
                };
                (d.path, d.rel, ask)
            })
            .collect();
        let paths: Vec<PathBuf> = jobs.iter().map(|(p, _, _)| p.clone()).collect();
        async move {
            let looked = guard
                .run_with_progress(move |progress| {
                    // The inbox folder is resolved once for the whole group.
                    let dir = crate::beneath::Root::open(&root);
                    jobs.into_iter()
                        .map(|(path, rel, ask)| {
                            let look = match &dir {
                                Ok(dir) => look_at(dir, &rel, ask, check),
                                // No inbox folder (removed, or its share is gone): nothing
                                // below it is there.
                                Err(_) => Look::Gone,
                            };
                            progress.tick();
                            (path, look)
                        })
                        .collect::<Vec<_>>()
                })
                .await;
            // Not answering: nothing is known about any of them.
            looked.unwrap_or_else(|_| paths.into_iter().map(|p| (p, Look::Stalled)).collect())
        }
    }

    /// Acts on a look's decision. Returns false when downstream has gone away.
    async fn on_look(
        &self,
        path: &Path,
        look: Look,
        settler: &mut Settler,
        output: &mpsc::Sender<ReadyFile>,
    ) -> bool {
        let now = Instant::now();
        let busy = self.claims.busy(path, now);
        let (inbox, rel, size, sig, kind) = match settler.looked(path, look, busy, now) {
            Decision::Wait => return true,
            Decision::Forget => {
                // Forget any deferral too, which would otherwise stay in memory for good.
                self.claims.forget_deferred(path);
                self.stats.gone(path);
                return true;
            }
            Decision::Cut { inbox, rel, what } => {
                // Once per file: why it waits beyond its settle window.
                tracing::info!(inbox = %self.inboxes[inbox].name,
                    path = %crate::telemetry::escape(&rel), reason = %what,
                    after = ?self.inboxes[inbox].incomplete_after,
                    "file is not complete yet by its format; waiting for the rest");
                return true;
            }
            Decision::LeftCut { inbox, rel, what } => {
                // Not an error: a later run (or the daemon) takes it once it is whole, or
                // moves it to failed/ after incomplete_after.
                tracing::warn!(inbox = %self.inboxes[inbox].name,
                    path = %crate::telemetry::escape(&rel), reason = %what,
                    "file is not complete yet; left in the inbox for the next run");
                // Counted as left, so that `once` does not claim every file went to done/.
                self.stats.count(path, crate::run::Fate::Requeued);
                return true;
            }
            Decision::Ready { inbox, rel, sig } => (inbox, rel, sig.size, sig, Kind::Regular),
            // Not something we can upload faithfully; it still must not sit unexplained in
            // the inbox, so hand it on to be moved to failed/ (as itself) with a reason.
            Decision::NotRegular {
                inbox,
                rel,
                sig,
                reason,
            } => (inbox, rel, 0, sig, Kind::NotRegular(reason)),
            // Cut for all of incomplete_after: it must not sit unexplained in the inbox
            // either, and must never be uploaded half.
            Decision::Incomplete {
                inbox,
                rel,
                sig,
                reason,
            } => {
                tracing::warn!(inbox = %self.inboxes[inbox].name,
                    path = %crate::telemetry::escape(&rel), reason = %reason,
                    "file is still incomplete; moving it to failed/");
                (inbox, rel, sig.size, sig, Kind::Incomplete(reason))
            }
        };
        if self.claims.try_claim(path, now).is_err() {
            // Taken between the two looks (cannot happen with one settle): look again later.
            settler.retry_at(path, now + self.inboxes[inbox].settle);
            return true;
        }
        let ready = ReadyFile {
            inbox,
            path: path.to_path_buf(),
            root: self.inboxes[inbox].path.clone(),
            at: rel.clone(),
            rel,
            size,
            sig,
            kind,
            ready_at: now,
        };
        if output.send(ready).await.is_err() {
            self.claims.release(path);
            settler.forget(path);
            return false;
        }
        true
    }
}

/// What a look asks besides the file's kind, size and times.
#[derive(Debug, Clone, Copy)]
enum Ask {
    Nothing,
    /// Whether a writer holds it, and whether its format says it is whole, when it still has
    /// this signature (it has been quiet since the previous look).
    IfUnchanged(Signature),
    /// Both, whatever it looks like (its writer has just closed it).
    Always,
}

/// Looks at `rel` below the inbox folder `root` without following links, and asks what `ask`
/// says (the format only when `check`).
fn look_at(root: &crate::beneath::Root, rel: &Path, ask: Ask, check: bool) -> Look {
    use crate::beneath::Kind as Entry;
    // A file with a question is opened straight away (regular files only, never through a
    // link): the open file's metadata is the look, one path resolution instead of two. What
    // cannot be opened that way is looked at below without opening.
    if !matches!(ask, Ask::Nothing)
        && let Ok((file, meta)) = root.open_file(rel)
    {
        let sig = Signature::of(&meta);
        return if asked(ask, sig) {
            examine_open(&file, rel, sig, check)
        } else {
            not_asked(sig)
        };
    }
    // Never through a link: a path below a link to a folder fails here (and is dropped); the
    // link itself is seen as a link.
    let Ok(meta) = root.metadata(rel) else {
        return Look::Gone; // renamed away, deleted, or below a link
    };
    let sig = Signature::of(&meta);
    match Entry::of(meta.file_type()) {
        Entry::Dir => Look::Dir,
        Entry::Regular if asked(ask, sig) => examine(root, rel, sig, check),
        Entry::Regular => not_asked(sig),
        kind => Look::NotRegular {
            sig,
            reason: not_regular_reason(kind, || root.read_link(rel)),
        },
    }
}

/// Whether `ask` asks about a regular file that has `sig` now (an empty file is never asked
/// about: nothing has been written yet).
fn asked(ask: Ask, sig: Signature) -> bool {
    sig.size > 0
        && match ask {
            Ask::Nothing => false,
            Ask::IfUnchanged(before) => before == sig,
            Ask::Always => true,
        }
}

fn not_asked(sig: Signature) -> Look {
    Look::Regular {
        sig,
        writing: None,
        checked: Checked::NotAsked,
    }
}

/// Opens the file seen with `sig` and examines it ([`examine_open`]), unless it has changed
/// from `sig` by the time it is open.
fn examine(root: &crate::beneath::Root, rel: &Path, sig: Signature, check: bool) -> Look {
    let (file, meta) = match root.open_file(rel) {
        Ok(f) => f,
        // Not ours to judge here: the upload stage reports a file it cannot read (and gives
        // a permission that arrives late its time); the settle window decides as ever.
        Err(_) => {
            return Look::Regular {
                sig,
                writing: None,
                checked: Checked::Unopenable,
            };
        }
    };
    match Signature::of(&meta) {
        now if now == sig => examine_open(&file, rel, sig, check),
        now => not_asked(now),
    }
}

/// Asks whether a writer holds the open `file` (seen with `sig`), and (`check`) whether its
/// format says it is whole. The answers count only for the file as it was seen: it must
/// still have `sig` after the questions, or the look reports what it has now (changed: the
/// settle window starts again).
fn examine_open(file: &std::fs::File, rel: &Path, sig: Signature, check: bool) -> Look {
    let writing = open_for_writing(file);
    if writing == Some(true) {
        return Look::Regular {
            sig,
            writing,
            checked: Checked::NotAsked,
        };
    }
    let checked = if !check {
        Checked::Off
    } else {
        match format::check(rel, sig.size, file) {
            Ok(w) => Checked::Found(w),
            Err(_) => Checked::Failed,
        }
    };
    // Written to while it was checked: what was read may be neither the old nor the new file.
    match file.metadata().map(|m| Signature::of(&m)) {
        Ok(now) if now == sig => Look::Regular {
            sig,
            writing,
            checked,
        },
        Ok(now) => not_asked(now),
        Err(_) => Look::Stalled,
    }
}

/// Whether some process has `file` open for writing, when the kernel will tell us: a read
/// lease (fcntl F_SETLEASE) is refused with EAGAIN exactly then. `None` when we cannot know —
/// leases need the file's owner or CAP_LEASE (the systemd unit grants it), and some file
/// systems have none — and then the settle window alone decides.
fn open_for_writing(file: &std::fs::File) -> Option<bool> {
    use std::os::fd::AsRawFd;
    let fd = file.as_raw_fd();
    // SAFETY: `fd` is a valid descriptor owned by `file`, which outlives both calls;
    // F_SETLEASE takes an integer argument and touches no memory of ours.
    let rc = unsafe { libc::fcntl(fd, libc::F_SETLEASE, libc::F_RDLCK) };
    if rc == 0 {
        // Give the lease back at once so no writer ever waits on it.
        // SAFETY: as above.
        unsafe { libc::fcntl(fd, libc::F_SETLEASE, libc::F_UNLCK) };
        return Some(false);
    }
    match std::io::Error::last_os_error().raw_os_error() {
        Some(libc::EAGAIN) => Some(true),
        _ => None,
    }
}

/// The reason a link, FIFO, socket or device goes to failed/: what it is, and for a link
/// where it points (escaped: the target is text anyone can choose).
fn not_regular_reason(
    kind: crate::beneath::Kind,
    target: impl FnOnce() -> std::io::Result<PathBuf>,
) -> String {
    use crate::beneath::Kind;
    match kind {
        Kind::Symlink => match target() {
            Ok(t) => format!(
                "a symbolic link to \"{}\"; links are never followed, only regular files are uploaded",
                crate::telemetry::escape(&t)
            ),
            Err(_) => "a symbolic link; links are never followed, only regular files are uploaded"
                .to_owned(),
        },
        Kind::Special(what) => {
            format!("{what}, not a regular file; only regular files are read and uploaded")
        }
        Kind::Regular | Kind::Dir => "not a regular file".to_owned(),
    }
}

/// The shortest settle window of all inboxes (for tests and messages).
pub fn shortest_settle(inboxes: &[InboxSettings]) -> Duration {
    inboxes
        .iter()
        .map(|i| i.settle)
        .min()
        .unwrap_or(Duration::from_secs(2))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_open_for_writing_is_seen_as_such() {
        // Needs the file's owner or CAP_LEASE: the test creates the file, so it owns it.
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("f");
        let mut w = std::fs::File::create(&p).unwrap();
        std::io::Write::write_all(&mut w, b"half").unwrap();
        let probe =
            || open_for_writing(&crate::beneath::open_file(d.path(), Path::new("f")).unwrap());
        assert_eq!(probe(), Some(true));
        drop(w);
        assert_eq!(probe(), Some(false));
    }
}

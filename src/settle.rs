//! settle: decides when a file is complete. A candidate becomes a [`ReadyFile`] once its
//! size, nanosecond mtime and inode have not changed for the inbox's settle window, measured
//! by this process (never by trusting mtime's age: clocks on network shares drift).
//!
//! Where the kernel can tell (a read lease), a quiet file that some process still holds open
//! for writing is not complete either: its writer may only be pausing.
//!
//! "Not yet complete" is a normal state, not an error. Ignored names (hidden files, `*.tmp`,
//! `*.part`, `~$*`, `Thumbs.db`, … in any component of the path) are skipped here, and zero-byte files wait until they grow.
//!
//! In daemon mode a file stays in view while it is in flight, so that a file handed back
//! (deferred, inbox paused, changed during upload) is offered again exactly when its claim
//! allows, without waiting for a rescan.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use globset::{GlobBuilder, GlobSet, GlobSetBuilder};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::claims::{Busy, Claims};
use crate::config::InboxSettings;
use crate::run::Mode;
use crate::watch::Candidate;

/// Names that are never uploaded: temporary, partial-download and lock files of common
/// programs, and the metadata that file servers and desktops leave in shared folders (Windows
/// thumbnails and folder settings, macOS Finder data, recycle bins of Windows, Synology and
/// Samba, Synology's thumbnail folders). Matched case-insensitively against every component of
/// the path, so a folder with such a name hides everything in it. Hidden files and folders (a
/// leading '.') are ignored as well, see [`Ignore::is_ignored`].
pub const DEFAULT_IGNORES: &[&str] = &[
    "*.tmp",
    "~*.tmp",
    "*.part",
    "*.partial",
    "*.filepart",
    "*.crdownload",
    "~$*",
    ".~lock*",
    "Thumbs.db",
    "desktop.ini",
    ".DS_Store",
    "$RECYCLE.BIN",
    "@eaDir",
    "#recycle",
];

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
}

/// A file that has been stable for its settle window, claimed for upload.
#[derive(Debug, Clone)]
pub struct ReadyFile {
    pub inbox: usize,
    pub path: PathBuf,
    /// Path relative to the inbox.
    pub rel: PathBuf,
    pub size: u64,
    pub sig: Signature,
    pub kind: Kind,
    /// When settle handed it on (for latency figures).
    pub ready_at: Instant,
}

/// Ignore rules of one inbox.
pub struct Ignore {
    names: GlobSet,
}

impl Ignore {
    pub fn new(extra: &[String]) -> Result<Ignore, globset::Error> {
        let mut b = GlobSetBuilder::new();
        for pat in DEFAULT_IGNORES
            .iter()
            .copied()
            .chain(extra.iter().map(String::as_str))
        {
            // Case-insensitive: files arrive from Windows and macOS clients, whose file
            // systems do not tell `X.TMP` from `x.tmp`.
            b.add(GlobBuilder::new(pat).case_insensitive(true).build()?);
        }
        Ok(Ignore { names: b.build()? })
    }

    /// `rel` is relative to the inbox. Every component is matched, so an ignored or hidden
    /// folder (`@eaDir/`, `$RECYCLE.BIN/`, `.git/`) hides everything inside it.
    pub fn is_ignored(&self, rel: &Path) -> bool {
        rel.components().any(|c| {
            let name = c.as_os_str();
            name.as_encoded_bytes().first() == Some(&b'.') || self.names.is_match(name)
        })
    }
}

struct Pending {
    inbox: usize,
    rel: PathBuf,
    sig: Signature,
    next_check: Instant,
}

pub struct SettleStage {
    pub inboxes: Arc<Vec<InboxSettings>>,
    pub ignores: Vec<Ignore>,
    pub claims: Arc<Claims>,
    pub mode: Mode,
}

impl SettleStage {
    pub async fn run(
        self,
        mut input: mpsc::Receiver<Candidate>,
        output: mpsc::Sender<ReadyFile>,
        shutdown: CancellationToken,
    ) {
        let mut pending: HashMap<PathBuf, Pending> = HashMap::new();
        // Deadlines, earliest first; an entry is stale when its time no longer matches the
        // pending file's `next_check` (cheaper than removing from the middle of the heap).
        let mut due: BinaryHeap<Reverse<(Instant, PathBuf)>> = BinaryHeap::new();
        let mut input_open = true;
        loop {
            if !input_open && pending.is_empty() {
                return; // once mode: everything swept has been handed on or has vanished
            }
            let next = due.peek().map(|Reverse((t, _))| *t);
            tokio::select! {
                _ = shutdown.cancelled() => return,
                c = input.recv(), if input_open => match c {
                    Some(c) => self.on_candidate(c, &mut pending, &mut due, &output).await,
                    None => input_open = false,
                },
                _ = sleep_until(next), if next.is_some() => {}
            }
            let now = Instant::now();
            while let Some(Reverse((t, _))) = due.peek() {
                if *t > now {
                    break;
                }
                let Some(Reverse((t, path))) = due.pop() else {
                    break;
                };
                let current = pending.get(&path).map(|p| p.next_check);
                if current != Some(t) {
                    continue; // stale heap entry
                }
                if !self
                    .check(&path, now, &mut pending, &mut due, &output)
                    .await
                {
                    return; // downstream is gone: shutting down
                }
            }
        }
    }

    async fn on_candidate(
        &self,
        c: Candidate,
        pending: &mut HashMap<PathBuf, Pending>,
        due: &mut BinaryHeap<Reverse<(Instant, PathBuf)>>,
        output: &mpsc::Sender<ReadyFile>,
    ) {
        if pending.contains_key(&c.path) {
            return; // already being watched; its next check sees any change
        }
        let inbox = &self.inboxes[c.inbox];
        let Ok(rel) = c.path.strip_prefix(&inbox.path).map(Path::to_path_buf) else {
            return; // not under this inbox (cannot happen with our watchers)
        };
        if rel.as_os_str().is_empty() || self.ignores[c.inbox].is_ignored(&rel) {
            return;
        }
        // Never through a link: a path below a link to a folder fails here (and is dropped);
        // the link itself is seen as a link.
        let meta = match crate::beneath::metadata(&inbox.path, &rel) {
            Ok(m) => m,
            Err(_) => return, // gone already (renamed away, deleted), or below a link
        };
        let kind = crate::beneath::Kind::of(meta.file_type());
        if kind == crate::beneath::Kind::Dir {
            return;
        }
        let now = Instant::now();
        if kind != crate::beneath::Kind::Regular {
            // Not something we can upload faithfully; it still must not sit unexplained in
            // the inbox, so hand it on to be moved to failed/ (as itself) with a reason.
            let what = not_regular_reason(kind, || crate::beneath::read_link(&inbox.path, &rel));
            if self.claims.try_claim(&c.path, now).is_ok() {
                let _ = output
                    .send(ReadyFile {
                        inbox: c.inbox,
                        rel,
                        size: 0,
                        sig: Signature::of(&meta),
                        kind: Kind::NotRegular(what),
                        path: c.path,
                        ready_at: now,
                    })
                    .await;
            }
            return;
        }
        let next_check = now + inbox.settle;
        due.push(Reverse((next_check, c.path.clone())));
        pending.insert(
            c.path,
            Pending {
                inbox: c.inbox,
                rel,
                sig: Signature::of(&meta),
                next_check,
            },
        );
    }

    /// A pending file's deadline has come. Returns false when downstream has gone away.
    async fn check(
        &self,
        path: &Path,
        now: Instant,
        pending: &mut HashMap<PathBuf, Pending>,
        due: &mut BinaryHeap<Reverse<(Instant, PathBuf)>>,
        output: &mpsc::Sender<ReadyFile>,
    ) -> bool {
        let Some(p) = pending.get_mut(path) else {
            return true;
        };
        let inbox = &self.inboxes[p.inbox];
        let settle = inbox.settle;
        let meta = match crate::beneath::metadata(&inbox.path, &p.rel) {
            Ok(m) if m.is_file() => m,
            // Vanished or replaced by something else: forget it (and any deferral, which
            // would otherwise stay in memory for good); a new candidate will come.
            _ => {
                pending.remove(path);
                self.claims.forget_deferred(path);
                return true;
            }
        };
        let sig = Signature::of(&meta);
        let mut rearm = |p: &mut Pending, at: Instant| {
            p.next_check = at;
            due.push(Reverse((at, path.to_path_buf())));
        };
        if sig != p.sig {
            // Still being written: the window starts again from now.
            p.sig = sig;
            rearm(p, now + settle);
            return true;
        }
        if sig.size == 0 {
            // A placeholder: wait until it grows. Dropped from memory; a later event or
            // rescan brings it back.
            pending.remove(path);
            return true;
        }
        match self.claims.busy(path, now) {
            None => {}
            Some(Busy::InFlight) => {
                // Being uploaded (or this version's predecessor is); look again later.
                rearm(p, now + settle);
                return true;
            }
            Some(Busy::Until(t)) => {
                // Deferred or its inbox paused: offer it again when that time comes.
                rearm(p, t.max(now + settle));
                return true;
            }
        }
        if open_for_writing(&inbox.path, &p.rel) == Some(true) {
            // Quiet for the whole window, but a writer (a Samba client, a scanner's driver)
            // still holds it open for writing: it may only be pausing. Wait another window.
            tracing::debug!(path = %path.display(), "stable but still open for writing; waiting");
            rearm(p, now + settle);
            return true;
        }
        if self.claims.try_claim(path, now).is_err() {
            rearm(p, now + settle); // taken between the two looks (cannot happen: one settle)
            return true;
        }
        let ready = ReadyFile {
            inbox: p.inbox,
            path: path.to_path_buf(),
            rel: p.rel.clone(),
            size: sig.size,
            sig,
            kind: Kind::Regular,
            ready_at: now,
        };
        if self.mode == Mode::Daemon {
            // Stay in view while it is in flight: if it comes back (deferred, inbox paused,
            // changed during upload) it is offered again on time without waiting for a
            // rescan; once it has moved to done/ the next look finds it gone and forgets it.
            rearm(p, now + settle);
        } else {
            // `once` offers every file exactly once.
            pending.remove(path);
        }
        if output.send(ready).await.is_err() {
            self.claims.release(path);
            return false;
        }
        true
    }
}

/// Whether some process has the file open for writing, when the kernel will tell us: a read
/// lease (fcntl F_SETLEASE) is refused with EAGAIN exactly then. `None` when we cannot know —
/// leases need the file's owner or CAP_LEASE (the systemd unit grants it), and some file
/// systems have none — and then the settle window alone decides.
fn open_for_writing(root: &Path, rel: &Path) -> Option<bool> {
    use std::os::fd::AsRawFd;
    // Only a regular file is opened, never through a link (a FIFO would block here).
    let f = crate::beneath::open_file(root, rel).ok()?;
    let fd = f.as_raw_fd();
    // SAFETY: `fd` is a valid descriptor owned by `f`, which outlives both calls; F_SETLEASE
    // takes an integer argument and touches no memory of ours.
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

async fn sleep_until(t: Option<Instant>) {
    if let Some(t) = t {
        tokio::time::sleep_until(t.into()).await;
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
        assert_eq!(open_for_writing(d.path(), Path::new("f")), Some(true));
        drop(w);
        assert_eq!(open_for_writing(d.path(), Path::new("f")), Some(false));
    }

    #[test]
    fn default_ignores() {
        let ig = Ignore::new(&["*.bak".to_string()]).unwrap();
        for name in [
            "a.tmp",
            "A.TMP",
            "~WRL0001.tmp",
            "x/y.part",
            "y.PART",
            "big.iso.partial",
            "upload.filepart",
            "~$report.docx",
            ".~lock.report.odt#",
            ".hidden",
            ".git/config",
            "sub/.cache/file.pdf",
            "old.bak",
            "OLD.BAK",
            "d.crdownload",
            "Thumbs.db",
            "scans/thumbs.DB",
            "Desktop.ini",
            ".DS_Store",
            "$RECYCLE.BIN/S-1-5-21/$R1.pdf",
            "$Recycle.Bin/x.pdf",
            "2024/@eaDir/a.pdf/SYNOFILE_THUMB_M.jpg",
            "#recycle/a.pdf",
            "old.bak/inside.pdf",
        ] {
            assert!(ig.is_ignored(Path::new(name)), "{name} should be ignored");
        }
        for name in [
            "a.pdf",
            "tmp/a.pdf",
            "part.txt",
            "März/Übersicht.pdf",
            "a.tmp.pdf",
            "Thumbs.db.pdf",
            "recycle/a.pdf",
            "eaDir/a.pdf",
        ] {
            assert!(!ig.is_ignored(Path::new(name)), "{name} should be uploaded");
        }
    }
}

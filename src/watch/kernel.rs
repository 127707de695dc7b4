//! The kernel side of watching: one notify watcher per inbox with a non-recursive watch per
//! folder, which events count, which mounts are network file systems (polled instead), and
//! inbox folders that come and go (a share unmounted, a folder replaced).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use notify::{EventKind, RecommendedWatcher, RecursiveMode, Watcher};
use tokio::sync::mpsc;

use super::{Raw, WatchError, WatchStage};
use crate::config::{InboxSettings, WatchMode};
use crate::settle::Hint;

impl WatchStage {
    /// Inbox folders come and go with their shares. Before every full rescan: a missing one
    /// that is there now is watched (and the rescan sweeps it); one that has gone is reported
    /// once and skipped until it is back, instead of a failed walk at every look.
    pub(super) async fn check_presence(
        &self,
        watchers: &mut [Option<Watched>],
        missing: &mut [bool],
        tx: &mpsc::Sender<Raw>,
        overflowed: &Arc<AtomicBool>,
    ) {
        for (idx, inbox) in self.inboxes.iter().enumerate() {
            let path = inbox.path.clone();
            let Ok(present) = self.guards[idx].run(move || path.is_dir()).await else {
                continue; // the share does not answer: nothing known; said once by the guard
            };
            if present != missing[idx] {
                continue; // unchanged
            }
            missing[idx] = !present;
            if !present {
                tracing::warn!(inbox = %inbox.name, path = %inbox.path.display(),
                    "the inbox folder has gone (share unmounted?); skipping this inbox until it is back");
                watchers[idx] = None;
                continue;
            }
            tracing::info!(inbox = %inbox.name, path = %inbox.path.display(),
                "the inbox folder is there now; taking up this inbox");
            watchers[idx] = match self.watch_one(idx, tx, overflowed) {
                Ok(w) => w,
                Err(e) => {
                    // Polled instead: slower to notice files, but none is missed.
                    tracing::error!(inbox = %inbox.name, error = %e,
                        "cannot watch the inbox folder with kernel events; polling it instead");
                    None
                }
            };
        }
    }

    /// An inbox folder that was deleted and created again (or remounted) has lost its watch:
    /// watch the new one. Checked before every full rescan, so events resume within one
    /// rescan interval (the rescan itself finds what arrived meanwhile).
    pub(super) async fn rewatch_replaced(
        &self,
        watchers: &mut [Option<Watched>],
        tx: &mpsc::Sender<Raw>,
        overflowed: &Arc<AtomicBool>,
    ) {
        for (idx, inbox) in self.inboxes.iter().enumerate() {
            let Some(current) = watchers.get(idx).and_then(Option::as_ref) else {
                continue; // polled inbox
            };
            let current = current.root;
            let path = inbox.path.clone();
            let Ok(Some(root)) = self.guards[idx].run(move || folder_id(&path)).await else {
                continue; // gone for now, or not answering: look again next time
            };
            if root == current {
                continue;
            }
            match watch_inbox(idx, inbox, tx, overflowed) {
                Ok(w) => {
                    tracing::warn!(inbox = %inbox.name, path = %inbox.path.display(),
                        "the inbox folder was replaced; watching the new one");
                    watchers[idx] = Some(w);
                }
                Err(e) => {
                    tracing::error!(inbox = %inbox.name, error = %e,
                        "the inbox folder was replaced and cannot be watched; the periodic rescan still finds its files");
                }
            }
        }
    }
}

/// A kernel watcher and the identity of the folder it watches.
///
/// Every folder gets its own non-recursive watch, added by this module after a walk that
/// never follows links: notify's recursive mode would follow a folder that is swapped for a
/// link (even to `/`) between its creation event and notify's own walk, and watch every
/// folder behind it.
pub(super) struct Watched {
    watcher: RecommendedWatcher,
    pub(super) root: FolderId,
}

impl Watched {
    /// Watches each of `dirs` (folders of `inbox`, found by a no-follow walk). Adding a watch
    /// again is harmless. A path that is no longer a folder reached without links by the
    /// time its watch exists (swapped for a link in between) loses the watch at once.
    pub(super) fn add_dirs(
        &mut self,
        inbox: &InboxSettings,
        dirs: &[PathBuf],
    ) -> Result<(), WatchError> {
        if folder_id(&inbox.path) != Some(self.root) {
            // The inbox folder was replaced since this watcher started: its folders belong to
            // the new watcher that the next rescan starts (`rewatch_replaced`).
            return Ok(());
        }
        // inboxd's own folder in a shared inbox (claims, heartbeats) is never watched: nothing
        // there is a candidate, and a heartbeat is rewritten every few seconds.
        let own = inbox.path.join(crate::cluster::DIR);
        for dir in dirs.iter().filter(|d| !d.starts_with(&own)) {
            match self.watcher.watch(dir, RecursiveMode::NonRecursive) {
                Ok(()) => {}
                // Gone meanwhile: nothing to watch.
                Err(e) if matches!(e.kind, notify::ErrorKind::PathNotFound) => continue,
                Err(e)
                    if matches!(&e.kind, notify::ErrorKind::Io(io)
                        if io.kind() == std::io::ErrorKind::NotFound) =>
                {
                    continue;
                }
                Err(e) => return Err(watch_error(dir, e)),
            }
            let still_dir = match dir.strip_prefix(&inbox.path) {
                Ok(rel) if rel.as_os_str().is_empty() => true,
                Ok(rel) => crate::beneath::metadata(&inbox.path, rel).is_ok_and(|m| m.is_dir()),
                Err(_) => false,
            };
            if !still_dir {
                let _ = self.watcher.unwatch(dir);
            }
        }
        Ok(())
    }
}

/// Identity of a folder: tells a replaced folder from the one being watched. The inode
/// number alone is not enough (a folder deleted and created again often gets the same one),
/// so the birth time goes with it where the file system records one.
pub(super) type FolderId = (u64, u64, Option<std::time::SystemTime>);

pub(super) fn folder_id(path: &Path) -> Option<FolderId> {
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::metadata(path).ok()?;
    m.is_dir().then(|| (m.dev(), m.ino(), m.created().ok()))
}

/// Watches one inbox recursively; events go to `tx` tagged with the inbox's index.
pub(super) fn watch_inbox(
    idx: usize,
    inbox: &InboxSettings,
    tx: &mpsc::Sender<Raw>,
    overflowed: &Arc<AtomicBool>,
) -> Result<Watched, WatchError> {
    let root = folder_id(&inbox.path).ok_or_else(|| WatchError::Notify {
        path: inbox.path.clone(),
        source: notify::Error::path_not_found(),
    })?;
    let tx = tx.clone();
    let flag = overflowed.clone();
    // A close is news only where the kernel sees every writer: on a network file system a
    // client on another machine closes without an event here, and its data may reach the
    // server later than its close (write-back caches), so there the settle window rules.
    let closes_count = closes_count(inbox);
    let handler = move |res: notify::Result<notify::Event>| {
        let raw = match res {
            Ok(ev) => {
                let rescan = ev.need_rescan();
                if !is_interesting(&ev.kind) && !rescan {
                    return;
                }
                let hint = if closes_count && (is_close_write(&ev.kind) || is_renamed_in(&ev.kind))
                {
                    Hint::Closed
                } else {
                    Hint::Changed
                };
                Raw::Paths(idx, ev.paths, hint, rescan)
            }
            Err(e) => Raw::Error(idx, e),
        };
        // Never block notify's thread: if the queue is full, drop the event and ask for a
        // full rescan, which finds the same files.
        if tx.try_send(raw).is_err() {
            flag.store(true, Ordering::Relaxed);
        }
    };
    // Never follow links: a link to a folder (even to `/`) must neither be watched nor cost
    // a watch per folder behind it. The link itself is a candidate like any file.
    let config = notify::Config::default().with_follow_symlinks(false);
    let mut w = RecommendedWatcher::new(handler, config).map_err(|source| WatchError::Notify {
        path: inbox.path.clone(),
        source,
    })?;
    w.watch(&inbox.path, RecursiveMode::NonRecursive)
        .map_err(|e| watch_error(&inbox.path, e))?;
    let mut watched = Watched { watcher: w, root };
    // Every folder below now, so that a watch limit stops the daemon at startup with a clear
    // message; folders that appear later are added by the sweeps.
    let tree = crate::beneath::walk_tree(&inbox.name, &inbox.path, Path::new(""));
    watched.add_dirs(inbox, &tree.dirs)?;
    Ok(watched)
}

/// Its writer closed it (`IN_CLOSE_WRITE`).
pub(super) fn is_close_write(kind: &EventKind) -> bool {
    use notify::event::{AccessKind, AccessMode};
    matches!(
        kind,
        EventKind::Access(AccessKind::Close(AccessMode::Write))
    )
}

/// It was renamed into place (`IN_MOVED_TO`, or a rename within the inbox): the usual end of
/// an atomic save (write a temporary name, then rename). Its writer is done with the name it
/// now has, as after a close; the same checks follow (nobody holds it open for writing, its
/// format says it is whole).
pub(super) fn is_renamed_in(kind: &EventKind) -> bool {
    use notify::event::{ModifyKind, RenameMode};
    matches!(
        kind,
        EventKind::Modify(ModifyKind::Name(RenameMode::To | RenameMode::Both))
    )
}

/// Whether a close-write event in this inbox may take a file at once (see
/// [`crate::settle::CLOSE_PAUSE`]): only on a file system known to be local.
fn closes_count(inbox: &InboxSettings) -> bool {
    let fs = fs_type(&inbox.path);
    let local = is_local_fs(fs.as_deref());
    if !local {
        tracing::info!(inbox = %inbox.name, fs = fs.as_deref().unwrap_or("unknown"),
            "not a local file system: a file closed by its writer still waits for its settle window");
    }
    local
}

pub(super) fn is_interesting(kind: &EventKind) -> bool {
    use notify::event::{AccessKind, AccessMode, ModifyKind};
    match kind {
        EventKind::Create(_) => true,
        EventKind::Modify(ModifyKind::Metadata(_)) => false,
        EventKind::Modify(_) => true,
        EventKind::Access(AccessKind::Close(AccessMode::Write)) => true,
        _ => false,
    }
}

pub(super) fn watch_error(path: &Path, e: notify::Error) -> WatchError {
    if matches!(e.kind, notify::ErrorKind::MaxFilesWatch) {
        WatchError::WatchLimit {
            path: path.to_path_buf(),
        }
    } else {
        WatchError::Notify {
            path: path.to_path_buf(),
            source: e,
        }
    }
}

/// Whether kernel events are used for this inbox (otherwise it is polled).
pub(super) fn uses_events(inbox: &InboxSettings) -> bool {
    match inbox.watch {
        WatchMode::Events => true,
        WatchMode::Poll => false,
        WatchMode::Auto => match fs_type(&inbox.path) {
            Some(t) if is_network_fs(&t) => {
                tracing::info!(inbox = %inbox.name, fs = %t,
                    "inbox is on a network file system; polling (writes from other machines raise no events)");
                false
            }
            _ => true,
        },
    }
}

/// A file system known to be local: not a network one, and not one we could not name.
pub(super) fn is_local_fs(fs: Option<&str>) -> bool {
    fs.is_some_and(|t| !is_network_fs(t))
}

pub(super) fn is_network_fs(fs: &str) -> bool {
    matches!(
        fs,
        "nfs" | "nfs4" | "cifs" | "smb3" | "smbfs" | "9p" | "ceph" | "glusterfs" | "afs" | "davfs"
    ) || fs.starts_with("fuse.")
}

/// The file system type of the mount holding `path`, from /proc/self/mountinfo.
pub(super) fn fs_type(path: &Path) -> Option<String> {
    let info = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    mount_fs_type(&info, path)
}

pub(super) fn mount_fs_type(mountinfo: &str, path: &Path) -> Option<String> {
    let mut best: Option<(usize, String)> = None;
    for line in mountinfo.lines() {
        // "36 35 98:0 /mnt1 /mnt2 rw,noatime master:1 - ext3 /dev/root rw,errors=continue"
        let mut halves = line.splitn(2, " - ");
        let (Some(left), Some(right)) = (halves.next(), halves.next()) else {
            continue;
        };
        let Some(mount_point) = left.split(' ').nth(4) else {
            continue;
        };
        let mount_point = mount_point.replace("\\040", " ");
        let Some(fs) = right.split(' ').next() else {
            continue;
        };
        if path.starts_with(&mount_point)
            && best.as_ref().is_none_or(|(l, _)| mount_point.len() >= *l)
        {
            best = Some((mount_point.len(), fs.to_owned()));
        }
    }
    best.map(|(_, fs)| fs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_longest_mount() {
        let info = "22 1 8:1 / / rw - ext4 /dev/sda1 rw\n\
                    40 22 0:50 / /srv/share rw - nfs4 server:/export rw\n\
                    41 22 0:51 / /srv/my\\040docs rw - cifs //host/docs rw\n";
        assert_eq!(
            mount_fs_type(info, Path::new("/srv/share/inbox")).as_deref(),
            Some("nfs4")
        );
        assert_eq!(
            mount_fs_type(info, Path::new("/srv/my docs/in")).as_deref(),
            Some("cifs")
        );
        assert_eq!(
            mount_fs_type(info, Path::new("/var/x")).as_deref(),
            Some("ext4")
        );
        assert!(is_network_fs("nfs4") && is_network_fs("fuse.sshfs") && !is_network_fs("ext4"));
        // Closes count only where the kernel sees every writer.
        assert!(is_local_fs(Some("ext4")) && is_local_fs(Some("tmpfs")));
        assert!(!is_local_fs(Some("cifs")) && !is_local_fs(Some("fuse.sshfs")));
        assert!(!is_local_fs(None), "unknown: not counted as local");
    }
}

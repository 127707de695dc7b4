//! The local half of `inboxd check`: can the user the service runs as use every folder it
//! needs? For each inbox, done_dir, failed_dir and the state_dir, four checks, each made by
//! doing what the daemon will do rather than by reading permission bits (ACLs, read-only
//! mounts and root squash all answer for themselves):
//!
//! | check | how |
//! |---|---|
//! | exists | the folder is there (done_dir, failed_dir, state_dir: or can be created in its nearest existing parent) |
//! | readable | its entries can be listed |
//! | writable | a probe file can be created in it and removed (in the state_dir, also every ledger file can be written) |
//! | movable | done_dir, failed_dir: a probe file can be renamed into it from the inbox (another mount is a note, not a problem); inbox: files others drop can be moved out (no sticky bit); state_dir: a rename within it works |
//!
//! Probe files are named `.inboxd-check-*` (hidden: a running daemon ignores them) and removed
//! again. Folders that do not exist are not created: `check` is often run as root, and a
//! folder it made would belong to root.
//!
//! Run as the service user (`inboxd check --user inboxd` switches to it in a child process),
//! the answers are the service's. The outcome is plain data ([`Report`]) so that the child can
//! hand it to the parent as JSON.

use std::fmt;
use std::io::ErrorKind;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};

use serde::{Deserialize, Serialize};

use crate::config::Settings;

/// Which folder a problem is about, named as its configuration key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Folder {
    Inbox,
    DoneDir,
    FailedDir,
    StateDir,
}

impl fmt::Display for Folder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Folder::Inbox => "inbox",
            Folder::DoneDir => "done_dir",
            Folder::FailedDir => "failed_dir",
            Folder::StateDir => "state_dir",
        })
    }
}

/// Which of the four checks failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Check {
    Exists,
    Readable,
    Writable,
    Movable,
}

/// One thing the service would run into.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Problem {
    pub folder: Folder,
    /// The folder, as text (escaped like every path inboxd prints).
    pub path: String,
    pub check: Check,
    /// The rest of the sentence: what is wrong, as whom, and the system's answer.
    pub detail: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}: {}", self.folder, self.path, self.detail)
    }
}

/// What the checks found for one inbox (in the configuration's order).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct InboxReport {
    pub problems: Vec<Problem>,
}

/// What the checks found, as the user named in `user`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Report {
    pub user: String,
    pub state_dir: Vec<Problem>,
    pub inboxes: Vec<InboxReport>,
}

impl Report {
    pub fn is_ok(&self) -> bool {
        self.state_dir.is_empty() && self.inboxes.iter().all(|i| i.problems.is_empty())
    }
}

/// Runs every check as the current user (`user` names it in the messages).
pub fn check(settings: &Settings, user: &str) -> Report {
    let c = Checker { user };
    let state_dir = c.state_dir(&settings.state_dir);
    let inboxes = settings
        .inboxes
        .iter()
        .map(|i| InboxReport {
            problems: c.inbox(&i.path, &i.done_dir, &i.failed_dir),
        })
        .collect();
    Report {
        user: user.to_owned(),
        state_dir,
        inboxes,
    }
}

struct Checker<'a> {
    user: &'a str,
}

impl Checker<'_> {
    fn problem(&self, folder: Folder, path: &Path, check: Check, detail: String) -> Problem {
        Problem {
            folder,
            path: crate::telemetry::escape(path),
            check,
            detail,
        }
    }

    fn inbox(&self, inbox: &Path, done: &Path, failed: &Path) -> Vec<Problem> {
        let mut out = Vec::new();
        let kind = Folder::Inbox;
        match std::fs::metadata(inbox) {
            Err(e) if e.kind() == ErrorKind::NotFound => {
                out.push(self.problem(
                    kind,
                    inbox,
                    Check::Exists,
                    "does not exist (is the share mounted?)".to_owned(),
                ));
                // Nothing else can be checked; done/ and failed/ are only made once it is there.
                return out;
            }
            Err(e) => {
                out.push(self.problem(
                    kind,
                    inbox,
                    Check::Exists,
                    format!("cannot be looked at as {} ({e})", self.user),
                ));
                return out;
            }
            Ok(meta) if !meta.is_dir() => {
                out.push(self.problem(kind, inbox, Check::Exists, "is not a folder".to_owned()));
                return out;
            }
            Ok(meta) => {
                if let Some(p) = self.readable(kind, inbox) {
                    out.push(p);
                }
                if let Some(p) = self.writable(kind, inbox) {
                    out.push(p);
                }
                // With the sticky bit only a file's owner (or the folder's) may move it: the
                // files others drop would stay in the inbox.
                let sticky = meta.mode() & libc::S_ISVTX != 0;
                if sticky && meta.uid() != euid() && euid() != 0 {
                    out.push(self.problem(
                        kind,
                        inbox,
                        Check::Movable,
                        format!(
                            "files others drop cannot be moved out of it as {}: the folder has the sticky bit (remove it with chmod -t)",
                            self.user
                        ),
                    ));
                }
            }
        }
        let inbox_writable = !out.iter().any(|p| p.check == Check::Writable);
        for (kind, dir) in [(Folder::DoneDir, done), (Folder::FailedDir, failed)] {
            match self.exists_or_creatable(kind, dir) {
                Err(p) => out.push(p),
                Ok(false) => {} // made by the first move, as this user: nothing more to check
                Ok(true) => {
                    out.extend(self.readable(kind, dir));
                    let writable = self.writable(kind, dir);
                    let ok = writable.is_none();
                    out.extend(writable);
                    if ok && inbox_writable {
                        out.extend(self.movable_from(kind, dir, inbox));
                    }
                }
            }
        }
        out
    }

    fn state_dir(&self, dir: &Path) -> Vec<Problem> {
        let kind = Folder::StateDir;
        let mut out = Vec::new();
        match self.exists_or_creatable(kind, dir) {
            Err(p) => out.push(p),
            Ok(false) => {}
            Ok(true) => {
                out.extend(self.readable(kind, dir));
                match self.writable(kind, dir) {
                    Some(p) => out.push(p),
                    None => {
                        // The ledger's own files: one left by a run as root cannot be opened
                        // by the service user, although the folder is writable.
                        if let Some(file) = first_unwritable(dir, 3) {
                            out.push(self.problem(
                                kind,
                                dir,
                                Check::Writable,
                                format!(
                                    "not writable as {}: {} cannot be written (give the folder and all in it to that user)",
                                    self.user,
                                    crate::telemetry::escape(&file)
                                ),
                            ));
                        }
                        out.extend(self.movable_within(kind, dir));
                    }
                }
            }
        }
        out
    }

    /// Ok(true): a folder. Ok(false): missing, and its nearest existing parent lets this user
    /// create it. Err: neither.
    fn exists_or_creatable(&self, kind: Folder, dir: &Path) -> Result<bool, Problem> {
        match std::fs::metadata(dir) {
            Ok(m) if m.is_dir() => return Ok(true),
            Ok(_) => {
                return Err(self.problem(kind, dir, Check::Exists, "is not a folder".to_owned()));
            }
            Err(e) if e.kind() != ErrorKind::NotFound => {
                return Err(self.problem(
                    kind,
                    dir,
                    Check::Exists,
                    format!("cannot be looked at as {} ({e})", self.user),
                ));
            }
            Err(_) => {}
        }
        let mut parent = dir.parent();
        while let Some(p) = parent {
            if p.exists() {
                break;
            }
            parent = p.parent();
        }
        let Some(parent) = parent else {
            return Err(self.problem(kind, dir, Check::Exists, "does not exist".to_owned()));
        };
        match probe_file(parent) {
            Ok(()) => Ok(false),
            Err(e) => Err(self.problem(
                kind,
                dir,
                Check::Exists,
                format!(
                    "does not exist, and cannot be created as {}: {} is not writable ({e})",
                    self.user,
                    crate::telemetry::escape(parent)
                ),
            )),
        }
    }

    fn readable(&self, kind: Folder, dir: &Path) -> Option<Problem> {
        let listed = std::fs::read_dir(dir).and_then(|mut entries| entries.next().transpose());
        let e = listed.err()?;
        Some(self.problem(
            kind,
            dir,
            Check::Readable,
            format!("not readable as {} ({e})", self.user),
        ))
    }

    fn writable(&self, kind: Folder, dir: &Path) -> Option<Problem> {
        let e = probe_file(dir).err()?;
        Some(self.problem(
            kind,
            dir,
            Check::Writable,
            format!("not writable as {} ({e})", self.user),
        ))
    }

    /// A file made in the inbox can be renamed into `dir`, as a finished file will be. Across
    /// mounts a rename cannot work at all: inboxd then copies, which `check` notes elsewhere.
    fn movable_from(&self, kind: Folder, dir: &Path, inbox: &Path) -> Option<Problem> {
        let from = probe_name(inbox);
        let to = probe_name(dir);
        if let Err(e) = create_probe(&from) {
            // The inbox was writable a moment ago; whatever changed is not this folder's.
            tracing::debug!(error = %e, "cannot make a probe file in the inbox");
            return None;
        }
        let moved = std::fs::rename(&from, &to);
        let _ = std::fs::remove_file(if moved.is_ok() { &to } else { &from });
        match moved {
            Ok(()) => None,
            Err(e) if e.raw_os_error() == Some(libc::EXDEV) => None,
            Err(e) => Some(self.problem(
                kind,
                dir,
                Check::Movable,
                format!(
                    "files cannot be moved into it from the inbox as {} ({e})",
                    self.user
                ),
            )),
        }
    }

    fn movable_within(&self, kind: Folder, dir: &Path) -> Option<Problem> {
        let (from, to) = (probe_name(dir), probe_name(dir));
        create_probe(&from).ok()?;
        let moved = std::fs::rename(&from, &to);
        let _ = std::fs::remove_file(if moved.is_ok() { &to } else { &from });
        let e = moved.err()?;
        Some(self.problem(
            kind,
            dir,
            Check::Movable,
            format!("files cannot be renamed in it as {} ({e})", self.user),
        ))
    }
}

fn euid() -> u32 {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() }
}

/// A fresh hidden name in `dir` for a probe file.
fn probe_name(dir: &Path) -> PathBuf {
    static N: AtomicU32 = AtomicU32::new(0);
    let n = N.fetch_add(1, Ordering::Relaxed);
    dir.join(format!(".inboxd-check-{}-{n}", std::process::id()))
}

/// Creates a new empty file (never through an existing name or a link).
fn create_probe(path: &Path) -> std::io::Result<()> {
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)
        .map(drop)
}

/// Creates a probe file in `dir` and removes it again.
fn probe_file(dir: &Path) -> std::io::Result<()> {
    let path = probe_name(dir);
    create_probe(&path)?;
    std::fs::remove_file(&path)
}

/// The first file or folder below `dir` (at most `depth` levels down) that this user cannot
/// read and write, by access(2), which answers for the real user: the one `--user` switched to.
fn first_unwritable(dir: &Path, depth: usize) -> Option<PathBuf> {
    let entries = std::fs::read_dir(dir).ok()?;
    for entry in entries.flatten() {
        let path = entry.path();
        let Ok(c) = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()) else {
            continue;
        };
        let is_dir = entry.file_type().is_ok_and(|t| t.is_dir());
        let mode = if is_dir {
            libc::R_OK | libc::W_OK | libc::X_OK
        } else {
            libc::R_OK | libc::W_OK
        };
        // SAFETY: a valid NUL-terminated path; access(2) only reads it.
        if unsafe { libc::access(c.as_ptr(), mode) } != 0 {
            return Some(path);
        }
        if is_dir
            && depth > 1
            && let Some(p) = first_unwritable(&path, depth - 1)
        {
            return Some(p);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_usable_layout_has_no_problem_and_leaves_nothing_behind() {
        let d = tempfile::tempdir().unwrap();
        let inbox = d.path().join("inbox");
        std::fs::create_dir(&inbox).unwrap();
        let c = Checker { user: "me" };
        let done = d.path().join("done");
        std::fs::create_dir(&done).unwrap();
        let failed = d.path().join("not-yet/failed");
        assert_eq!(c.inbox(&inbox, &done, &failed), vec![]);
        assert_eq!(c.state_dir(&d.path().join("state")), vec![]);
        assert!(!failed.exists(), "check creates nothing");
        let left: Vec<_> = std::fs::read_dir(d.path())
            .unwrap()
            .flatten()
            .map(|e| e.file_name())
            .collect();
        assert_eq!(left.len(), 2, "only inbox and done: {left:?}");
        assert_eq!(std::fs::read_dir(&inbox).unwrap().count(), 0);
        assert_eq!(std::fs::read_dir(&done).unwrap().count(), 0);
    }

    #[test]
    fn a_missing_inbox_is_named_as_such() {
        let d = tempfile::tempdir().unwrap();
        let c = Checker { user: "me" };
        let inbox = d.path().join("share");
        let problems = c.inbox(&inbox, &d.path().join("done"), &d.path().join("failed"));
        assert_eq!(problems.len(), 1);
        assert_eq!(problems[0].check, Check::Exists);
        assert_eq!(
            problems[0].to_string(),
            format!(
                "inbox {}: does not exist (is the share mounted?)",
                inbox.display()
            )
        );
    }
}

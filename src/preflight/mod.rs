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
//!
//! `report` holds what the checks find, `checks` the four checks and their probe files;
//! this file says which checks each folder gets.

use std::io::ErrorKind;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use crate::config::Settings;

mod checks;
mod report;

use checks::first_unwritable;
pub use report::{Check, Folder, InboxReport, Problem, Report};

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
}

fn euid() -> u32 {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() }
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

//! The four checks on one folder (exists, readable, writable, movable), each made by doing
//! what the daemon will do, with probe files that are removed again.

use std::io::ErrorKind;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};

use super::{Check, Checker, Folder, Problem};

impl Checker<'_> {
    /// Ok(true): a folder. Ok(false): missing, and its nearest existing parent lets this user
    /// create it. Err: neither.
    pub(super) fn exists_or_creatable(&self, kind: Folder, dir: &Path) -> Result<bool, Problem> {
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

    pub(super) fn readable(&self, kind: Folder, dir: &Path) -> Option<Problem> {
        let listed = std::fs::read_dir(dir).and_then(|mut entries| entries.next().transpose());
        let e = listed.err()?;
        Some(self.problem(
            kind,
            dir,
            Check::Readable,
            format!("not readable as {} ({e})", self.user),
        ))
    }

    pub(super) fn writable(&self, kind: Folder, dir: &Path) -> Option<Problem> {
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
    pub(super) fn movable_from(&self, kind: Folder, dir: &Path, inbox: &Path) -> Option<Problem> {
        let from = probe_name(inbox);
        let to = probe_name(dir);
        if let Err(e) = create_probe(&from) {
            // The inbox was writable a moment ago; whatever changed is not this folder's.
            tracing::debug!(error = %e, "cannot make a probe file in the inbox");
            return None;
        }
        let moved = move_probe(&from, &to);
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

    pub(super) fn movable_within(&self, kind: Folder, dir: &Path) -> Option<Problem> {
        let (from, to) = (probe_name(dir), probe_name(dir));
        create_probe(&from).ok()?;
        let moved = move_probe(&from, &to);
        let e = moved.err()?;
        Some(self.problem(
            kind,
            dir,
            Check::Movable,
            format!("files cannot be renamed in it as {} ({e})", self.user),
        ))
    }
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

/// Renames the probe file `from` to `to`, then removes whichever of the two is left.
fn move_probe(from: &Path, to: &Path) -> std::io::Result<()> {
    let moved = std::fs::rename(from, to);
    let _ = std::fs::remove_file(if moved.is_ok() { to } else { from });
    moved
}

/// The first file or folder below `dir` (at most `depth` levels down) that this user cannot
/// read and write, by access(2), which answers for the real user: the one `--user` switched to.
pub(super) fn first_unwritable(dir: &Path, depth: usize) -> Option<PathBuf> {
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

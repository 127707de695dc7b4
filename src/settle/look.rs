//! The look at one file: its kind, size and times, and (when asked) whether a writer still
//! holds it and whether its format says it is whole. Blocking file-system calls, made on the
//! blocking pool by the stage loop; never through a link.

use std::path::{Path, PathBuf};

use super::{Checked, Look, Signature, format};

/// What a look asks besides the file's kind, size and times.
#[derive(Debug, Clone, Copy)]
pub(super) enum Ask {
    Nothing,
    /// Whether a writer holds it, and whether its format says it is whole, when it still has
    /// this signature (it has been quiet since the previous look).
    IfUnchanged(Signature),
    /// Both, whatever it looks like (its writer has just closed it).
    Always,
}

/// Looks at `rel` below the inbox folder `root` without following links, and asks what `ask`
/// says (the format only when `check`).
pub(super) fn look_at(root: &crate::beneath::Root, rel: &Path, ask: Ask, check: bool) -> Look {
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

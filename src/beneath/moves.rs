//! Moving into done/ and failed/ without following links and without replacing anything,
//! also across file systems.

use std::ffi::{OsStr, OsString};
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};

use rustix::fs::{AtFlags, Mode, OFlags, RenameFlags};

use super::across::copy_across;
use super::{check_rel, open_root, parent_of, resolve};

/// Opens (creating as needed) the folder `rel` below `root`, following no link.
fn make_dirs(root: &OwnedFd, rel: Option<&Path>) -> io::Result<OwnedFd> {
    let Some(rel) = rel.filter(|r| !r.as_os_str().is_empty()) else {
        return root.try_clone();
    };
    match resolve(root.as_fd(), rel, OFlags::PATH | OFlags::DIRECTORY) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        r => return r,
    }
    check_rel(rel)?;
    let mut cur = root.try_clone()?;
    for c in rel.iter() {
        match rustix::fs::mkdirat(&cur, c, Mode::from_raw_mode(0o777)) {
            Ok(()) | Err(rustix::io::Errno::EXIST) => {}
            Err(e) => return Err(e.into()),
        }
        cur = rustix::fs::openat(
            &cur,
            c,
            OFlags::PATH | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::empty(),
        )?;
    }
    Ok(cur)
}

/// What [`move_no_clobber`] did.
#[derive(Debug)]
pub struct Moved {
    /// Where the entry is now (the full path).
    pub dest: PathBuf,
    /// Across file systems the copy is in place but the original could not be removed
    /// (why). The caller must make sure it is never copied again.
    pub source_left: Option<io::Error>,
}

/// Moves the entry `src_root/rel` (a file, or a link as the link, or a special file) to
/// `dest_root/dest_rel`, never replacing anything there: on a collision it picks
/// `name (1).ext`, `name (2).ext`, …. Links are never followed on either side.
///
/// Across file systems: a regular file is copied to a temporary file in the destination
/// folder (created exclusively, so never through a link), made durable, renamed into place
/// without replacing anything, then the source is removed; a link is recreated there (same
/// target text) and the source removed; a FIFO, socket or device cannot be moved and gives
/// an error that [`super::is_unmovable`] recognises (the copying is in `across.rs`).
pub fn move_no_clobber(
    src_root: &Path,
    rel: &Path,
    dest_root: &Path,
    dest_rel: &Path,
) -> io::Result<Moved> {
    let src = open_root(src_root)?;
    let (src_dir, src_name) = parent_of(&src, rel)?;
    check_rel(dest_rel)?;
    let dest = match open_root(dest_root) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            // The done/failed folder itself (the admin's path) went missing: make it again.
            std::fs::create_dir_all(dest_root)?;
            open_root(dest_root)?
        }
        r => r?,
    };
    let dest_dir = make_dirs(&dest, dest_rel.parent())?;
    let target = dest_rel
        .file_name()
        .ok_or_else(|| io::Error::from(io::ErrorKind::InvalidInput))?;
    let full = |name: &OsStr| dest_root.join(dest_rel.with_file_name(name));
    let placed = first_free_name(target, |cand| {
        rename_noreplace(src_dir.as_fd(), src_name, dest_dir.as_fd(), cand)
    });
    match placed {
        Ok(name) => Ok(Moved {
            dest: full(&name),
            source_left: None,
        }),
        Err(e) if e.raw_os_error() == Some(libc::EXDEV) => {
            let (name, source_left) =
                copy_across(src_dir.as_fd(), src_name, dest_dir.as_fd(), target)?;
            Ok(Moved {
                dest: full(&name),
                source_left,
            })
        }
        Err(e) => Err(e),
    }
}

/// Renames the entry `root/from` to `root/to` (folders of `to` created as needed), within one
/// root, following no link and never replacing anything at `to`. For claims on a shared
/// inbox ([`crate::cluster`]): of several hosts renaming the same `from`, exactly one
/// succeeds; the others get `NotFound`.
pub fn rename_within(root: &Path, from: &Path, to: &Path) -> io::Result<()> {
    let root = open_root(root)?;
    let (from_dir, from_name) = parent_of(&root, from)?;
    check_rel(to)?;
    let to_dir = make_dirs(&root, to.parent())?;
    let to_name = to
        .file_name()
        .ok_or_else(|| io::Error::from(io::ErrorKind::InvalidInput))?;
    rename_noreplace(from_dir.as_fd(), from_name, to_dir.as_fd(), to_name)
}

/// Writes a small file `root/rel` whole, replacing what was there (a write to a fresh
/// temporary name, then a rename over it, so a reader never sees half of it). Folders of
/// `rel` are created as needed; no link is followed.
pub fn write_whole(root: &Path, rel: &Path, bytes: &[u8]) -> io::Result<()> {
    use std::io::Write as _;
    let root = open_root(root)?;
    check_rel(rel)?;
    let dir = make_dirs(&root, rel.parent())?;
    let name = rel
        .file_name()
        .ok_or_else(|| io::Error::from(io::ErrorKind::InvalidInput))?;
    let mut tmp = OsString::from(".");
    tmp.push(name);
    tmp.push(format!(".{}.tmp", std::process::id()));
    let _ = rustix::fs::unlinkat(&dir, tmp.as_os_str(), AtFlags::empty());
    let fd = rustix::fs::openat(
        &dir,
        tmp.as_os_str(),
        OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::from_raw_mode(0o644),
    )?;
    let mut file = std::fs::File::from(fd);
    file.write_all(bytes)?;
    drop(file);
    Ok(rustix::fs::renameat(&dir, tmp.as_os_str(), &dir, name)?)
}

/// `scan.pdf` → `scan (n).pdf`; `README` → `README (n)`; n = 0 is the name itself.
fn numbered(name: &OsStr, n: u32) -> OsString {
    if n == 0 {
        return name.to_owned();
    }
    let p = Path::new(name);
    let mut out: OsString = p.file_stem().map(|s| s.to_owned()).unwrap_or_default();
    out.push(format!(" ({n})"));
    if let Some(ext) = p.extension() {
        out.push(".");
        out.push(ext);
    }
    out
}

/// Places an entry under `target`, or else `name (1).ext`, `name (2).ext`, …: `place` is
/// tried with each name until it does not fail with `AlreadyExists`. Returns the name taken.
pub(super) fn first_free_name(
    target: &OsStr,
    mut place: impl FnMut(&OsStr) -> io::Result<()>,
) -> io::Result<OsString> {
    for n in 0..100_000u32 {
        let cand = numbered(target, n);
        match place(&cand) {
            Ok(()) => return Ok(cand),
            // Taken: try the next number.
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(e),
        }
    }
    Err(io::Error::other("too many files with this name"))
}

/// renameat2(RENAME_NOREPLACE): fails with AlreadyExists instead of replacing the target.
pub(super) fn rename_noreplace(
    from_dir: BorrowedFd<'_>,
    from: &OsStr,
    to_dir: BorrowedFd<'_>,
    to: &OsStr,
) -> io::Result<()> {
    match rustix::fs::renameat_with(from_dir, from, to_dir, to, RenameFlags::NOREPLACE) {
        Ok(()) => Ok(()),
        // The file system cannot do an atomic no-replace rename (some network file systems):
        // check, then rename. Only inboxd writes into done/ and failed/, so the gap is ours.
        Err(rustix::io::Errno::INVAL)
        | Err(rustix::io::Errno::NOSYS)
        | Err(rustix::io::Errno::OPNOTSUPP) => {
            if rustix::fs::statat(to_dir, to, AtFlags::SYMLINK_NOFOLLOW).is_ok() {
                return Err(io::Error::from(io::ErrorKind::AlreadyExists));
            }
            Ok(rustix::fs::renameat(from_dir, from, to_dir, to)?)
        }
        Err(e) => Err(e.into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::beneath::tests::tree;
    use std::os::unix::fs::symlink;

    #[test]
    fn a_link_in_the_destination_is_not_followed() {
        let d = tree();
        let root = d.path().join("in");
        let done = d.path().join("done");
        std::fs::create_dir_all(&done).unwrap();
        symlink(d.path().join("outside"), done.join("sub")).unwrap();
        let e = move_no_clobber(&root, Path::new("sub/a.pdf"), &done, Path::new("sub/a.pdf"))
            .unwrap_err();
        assert!(e.raw_os_error().is_some(), "{e}");
        assert!(!d.path().join("outside/a.pdf").exists());
        assert!(root.join("sub/a.pdf").exists());
    }

    #[test]
    fn collisions_get_numbered_names() {
        let d = tempfile::tempdir().unwrap();
        let done = d.path().join("done");
        for (i, content) in [b"one", b"two", b"tri"].iter().enumerate() {
            let name = format!("src{i}");
            std::fs::write(d.path().join(&name), content).unwrap();
            let m = move_no_clobber(d.path(), Path::new(&name), &done, Path::new("a/scan.pdf"))
                .unwrap();
            assert!(m.source_left.is_none());
            assert!(!d.path().join(&name).exists());
            assert_eq!(std::fs::read(&m.dest).unwrap(), *content);
        }
        assert_eq!(std::fs::read(done.join("a/scan.pdf")).unwrap(), b"one");
        assert_eq!(std::fs::read(done.join("a/scan (1).pdf")).unwrap(), b"two");
        assert_eq!(std::fs::read(done.join("a/scan (2).pdf")).unwrap(), b"tri");
        assert_eq!(
            numbered(OsStr::new("README"), 3),
            OsString::from("README (3)")
        );
    }
}

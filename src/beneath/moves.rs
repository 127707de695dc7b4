//! Moving into done/ and failed/ without following links and without replacing anything,
//! also across file systems.

use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};

use rustix::fs::{AtFlags, FileType, Mode, OFlags, RenameFlags};

use super::{Kind, check_rel, open_regular_at, open_root, parent_of, resolve};

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

/// An entry that cannot be moved to another file system (a FIFO, socket or device: copying
/// would mean opening it).
#[derive(Debug, thiserror::Error)]
#[error("{0} cannot be moved to another file system (it would have to be opened)")]
struct Unmovable(&'static str);

/// Whether `e` says the entry cannot be moved to another file system (see `Unmovable`).
pub fn is_unmovable(e: &io::Error) -> bool {
    e.get_ref().is_some_and(|inner| inner.is::<Unmovable>())
}

/// Moves the entry `src_root/rel` (a file, or a link as the link, or a special file) to
/// `dest_root/dest_rel`, never replacing anything there: on a collision it picks
/// `name (1).ext`, `name (2).ext`, …. Links are never followed on either side.
///
/// Across file systems: a regular file is copied to a temporary file in the destination
/// folder (created exclusively, so never through a link), made durable, renamed into place
/// without replacing anything, then the source is removed; a link is recreated there (same
/// target text) and the source removed; a FIFO, socket or device cannot be moved and gives
/// an error that [`is_unmovable`] recognises.
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
    for n in 0..100_000u32 {
        let cand = numbered(target, n);
        match rename_noreplace(src_dir.as_fd(), src_name, dest_dir.as_fd(), &cand) {
            Ok(()) => {
                return Ok(Moved {
                    dest: full(&cand),
                    source_left: None,
                });
            }
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
            Err(e) if e.raw_os_error() == Some(libc::EXDEV) => {
                let (name, source_left) =
                    copy_across(src_dir.as_fd(), src_name, dest_dir.as_fd(), target)?;
                return Ok(Moved {
                    dest: full(&name),
                    source_left,
                });
            }
            Err(e) => return Err(e),
        }
    }
    Err(io::Error::other("too many files with this name"))
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

/// renameat2(RENAME_NOREPLACE): fails with AlreadyExists instead of replacing the target.
fn rename_noreplace(
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

/// The cross-file-system move (see [`move_no_clobber`]). Returns the name used in `to_dir`
/// and, when the source could not be removed afterwards, why.
fn copy_across(
    from_dir: BorrowedFd<'_>,
    from: &OsStr,
    to_dir: BorrowedFd<'_>,
    target: &OsStr,
) -> io::Result<(OsString, Option<io::Error>)> {
    let st = rustix::fs::statat(from_dir, from, AtFlags::SYMLINK_NOFOLLOW)?;
    let name = match Kind::of_raw(FileType::from_raw_mode(st.st_mode)) {
        Kind::Regular => copy_file_across(from_dir, from, to_dir, target, st.st_mode)?,
        Kind::Symlink => {
            // A link moves as the link: the same target text, never what it points at.
            let link = rustix::fs::readlinkat(from_dir, from, Vec::new())?;
            let mut placed = None;
            for n in 0..100_000u32 {
                let cand = numbered(target, n);
                match rustix::fs::symlinkat(link.as_c_str(), to_dir, &cand) {
                    Ok(()) => {
                        placed = Some(cand);
                        break;
                    }
                    Err(rustix::io::Errno::EXIST) => continue,
                    Err(e) => return Err(e.into()),
                }
            }
            placed.ok_or_else(|| io::Error::other("too many files with this name"))?
        }
        kind => {
            let what = match kind {
                Kind::Special(what) => what,
                _ => "a folder",
            };
            return Err(io::Error::new(io::ErrorKind::Unsupported, Unmovable(what)));
        }
    };
    // The copy is durable and in place. If the original cannot be removed now, say so: the
    // caller records it, so that the same file is never copied a second time.
    let left = rustix::fs::unlinkat(from_dir, from, AtFlags::empty())
        .err()
        .map(io::Error::from);
    Ok((name, left))
}

fn copy_file_across(
    from_dir: BorrowedFd<'_>,
    from: &OsStr,
    to_dir: BorrowedFd<'_>,
    target: &OsStr,
    mode: u32,
) -> io::Result<OsString> {
    let (mut src, _) = open_regular_at(from_dir, from)?;
    // A fresh name created exclusively (O_EXCL never goes through a link), hidden, and
    // unique per process and attempt so that two moves never share it.
    let (tmp_name, tmp_fd) = {
        let mut attempt = 0u32;
        loop {
            let name = OsString::from(format!(
                ".inboxd-move-{}-{:08x}.tmp",
                std::process::id(),
                fastrand::u32(..)
            ));
            match rustix::fs::openat(
                to_dir,
                &name,
                OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                Mode::from_raw_mode(mode & 0o777),
            ) {
                Ok(fd) => break (name, fd),
                Err(rustix::io::Errno::EXIST) if attempt < 100 => attempt += 1,
                Err(e) => return Err(e.into()),
            }
        }
    };
    let cleanup = |e: io::Error| {
        let _ = rustix::fs::unlinkat(to_dir, &tmp_name, AtFlags::empty());
        e
    };
    let mut tmp = File::from(tmp_fd);
    io::copy(&mut src, &mut tmp).map_err(cleanup)?;
    tmp.sync_all().map_err(cleanup)?;
    drop(tmp);
    for n in 0..100_000u32 {
        let cand = numbered(target, n);
        match rename_noreplace(to_dir, &tmp_name, to_dir, &cand) {
            Ok(()) => {
                // The new name itself is durable once the folder is.
                let _ = rustix::fs::fsync(to_dir);
                return Ok(cand);
            }
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(cleanup(e)),
        }
    }
    Err(cleanup(io::Error::other("too many files with this name")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::beneath::tests::tree;
    use std::os::unix::fs::symlink;

    /// Without it the cross-file-system tests would pass on a rename and prove nothing.
    fn assert_two_file_systems(a: &Path, b: &Path) {
        use std::os::unix::fs::MetadataExt;
        let dev = |p: &Path| std::fs::metadata(p).unwrap().dev();
        assert_ne!(
            dev(a),
            dev(b),
            "{} and {} are one file system here: this test would not cross file systems \
             (set TMPDIR to a disk-backed folder)",
            a.display(),
            b.display()
        );
    }

    #[test]
    fn moves_links_as_links_across_file_systems() {
        let shm = Path::new("/dev/shm");
        assert!(shm.is_dir(), "this test needs /dev/shm (tmpfs)");
        let d = tree();
        let root = d.path().join("in");
        let dest = tempfile::tempdir_in(shm).unwrap();
        assert_two_file_systems(&root, dest.path());
        let m = move_no_clobber(
            &root,
            Path::new("dirlink"),
            dest.path(),
            Path::new("x/dirlink"),
        )
        .unwrap();
        assert!(m.source_left.is_none());
        assert_eq!(m.dest, dest.path().join("x/dirlink"));
        assert_eq!(
            std::fs::read_link(&m.dest).unwrap(),
            d.path().join("outside")
        );
        assert!(std::fs::symlink_metadata(root.join("dirlink")).is_err());
        // The folder behind it is untouched.
        assert_eq!(
            std::fs::read(d.path().join("outside/secret")).unwrap(),
            b"secret"
        );

        let fifo = root.join("p");
        rustix::fs::mkfifoat(rustix::fs::CWD, &fifo, Mode::from_raw_mode(0o644)).unwrap();
        let e = move_no_clobber(&root, Path::new("p"), dest.path(), Path::new("p")).unwrap_err();
        assert!(is_unmovable(&e), "{e}");
        assert!(
            std::fs::symlink_metadata(&fifo).is_ok(),
            "the FIFO stays put"
        );
    }

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

    #[test]
    fn moves_files_across_file_systems_without_clobbering() {
        // /tmp and /dev/shm are different file systems on the machines this project runs
        // on; rename(2) between them fails with EXDEV and the copy path must take over.
        let shm = Path::new("/dev/shm");
        assert!(shm.is_dir(), "this test needs /dev/shm (tmpfs)");
        let src_dir = tempfile::tempdir().unwrap();
        let dst_dir = tempfile::tempdir_in(shm).unwrap();
        assert_two_file_systems(src_dir.path(), dst_dir.path());
        std::fs::write(dst_dir.path().join("a.pdf"), b"earlier").unwrap();
        std::fs::write(src_dir.path().join("a.pdf"), b"new content").unwrap();
        let m = move_no_clobber(
            src_dir.path(),
            Path::new("a.pdf"),
            dst_dir.path(),
            Path::new("a.pdf"),
        )
        .unwrap();
        assert!(m.source_left.is_none());
        assert_eq!(m.dest, dst_dir.path().join("a (1).pdf"));
        assert_eq!(std::fs::read(&m.dest).unwrap(), b"new content");
        assert_eq!(
            std::fs::read(dst_dir.path().join("a.pdf")).unwrap(),
            b"earlier"
        );
        assert!(!src_dir.path().join("a.pdf").exists());
        let leftovers: Vec<_> = std::fs::read_dir(dst_dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .filter(|n| n.to_string_lossy().starts_with(".inboxd-move"))
            .collect();
        assert!(leftovers.is_empty(), "{leftovers:?}");
    }
}

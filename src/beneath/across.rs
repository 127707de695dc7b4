//! The cross-file-system half of [`super::move_no_clobber`]: where rename(2) fails with
//! EXDEV (done/ on another mount, or a systemd bind mount), a regular file is copied to a
//! fresh hidden name, made durable and renamed into place; a link is recreated as the link.

use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::io;
use std::os::fd::BorrowedFd;

use rustix::fs::{AtFlags, FileType, Mode, OFlags};

use super::moves::{first_free_name, rename_noreplace};
use super::{Kind, open_regular_at};

/// An entry that cannot be moved to another file system (a FIFO, socket or device: copying
/// would mean opening it).
#[derive(Debug, thiserror::Error)]
#[error("{0} cannot be moved to another file system (it would have to be opened)")]
struct Unmovable(&'static str);

/// Whether `e` says the entry cannot be moved to another file system (see `Unmovable`).
pub fn is_unmovable(e: &io::Error) -> bool {
    e.get_ref().is_some_and(|inner| inner.is::<Unmovable>())
}

/// The cross-file-system move (see [`super::move_no_clobber`]). Returns the name used in `to_dir`
/// and, when the source could not be removed afterwards, why.
pub(super) fn copy_across(
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
            first_free_name(target, |cand| {
                Ok(rustix::fs::symlinkat(link.as_c_str(), to_dir, cand)?)
            })?
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
    let placed = first_free_name(target, |cand| {
        rename_noreplace(to_dir, &tmp_name, to_dir, cand)
    })
    .map_err(cleanup)?;
    // The new name itself is durable once the folder is.
    let _ = rustix::fs::fsync(to_dir);
    Ok(placed)
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use rustix::fs::Mode;

    use crate::beneath::tests::tree;
    use crate::beneath::{is_unmovable, move_no_clobber};

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

//! beneath: every file-system access to a path beneath an inbox (and beneath done/ and
//! failed/) goes through this module, and none of it ever follows a symbolic link.
//!
//! Anyone may write into an inbox, including a link to any folder the service may read or
//! write. So a path below a root is never handed to the kernel as one string: the root is
//! opened first (the configured path, trusted), and everything below it is resolved from
//! there with `openat2(RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS)`, or, where the kernel has no
//! openat2 (before 5.6, or a seccomp filter that refuses it), one `O_NOFOLLOW` component at a
//! time. A link anywhere below the root is an error (`ELOOP`/`ENOTDIR`), except as the last
//! component of [`metadata`], [`read_link`] and [`move_no_clobber`], which see the link
//! itself.
//!
//! Only regular files are ever opened for reading ([`open_file`]): FIFOs, sockets and
//! devices are refused after an `lstat`, and the open itself is `O_NONBLOCK | O_NOFOLLOW`
//! and checked again with `fstat`, so swapping the file for a FIFO in between cannot block.
//!
//! All calls here are blocking system calls; this is the one place where a time limit per
//! inbox (a hung network share) would be put.

use std::ffi::OsStr;
use std::fs::File;
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

use rustix::fs::{AtFlags, FileType, Mode, OFlags, ResolveFlags};

mod across;
mod moves;
mod pinned;
mod walk;
pub use across::is_unmovable;
pub use moves::{Moved, move_no_clobber, rename_within, write_whole};
pub use pinned::Pinned;
pub use walk::{Walked, walk, walk_tree, walk_tree_ticking};

/// Cleared the first time the kernel says it has no openat2; from then on the component walk.
static OPENAT2: AtomicBool = AtomicBool::new(true);

/// What an entry below a root is, as far as inboxd cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Regular,
    Dir,
    Symlink,
    /// A FIFO, socket or device: never opened.
    Special(&'static str),
}

impl Kind {
    pub fn of(ft: std::fs::FileType) -> Kind {
        use std::os::unix::fs::FileTypeExt;
        if ft.is_file() {
            Kind::Regular
        } else if ft.is_dir() {
            Kind::Dir
        } else if ft.is_symlink() {
            Kind::Symlink
        } else if ft.is_fifo() {
            Kind::Special("a FIFO (named pipe)")
        } else if ft.is_socket() {
            Kind::Special("a socket")
        } else if ft.is_block_device() || ft.is_char_device() {
            Kind::Special("a device")
        } else {
            Kind::Special("not a regular file")
        }
    }

    fn of_raw(ft: FileType) -> Kind {
        match ft {
            FileType::RegularFile => Kind::Regular,
            FileType::Directory => Kind::Dir,
            FileType::Symlink => Kind::Symlink,
            FileType::Fifo => Kind::Special("a FIFO (named pipe)"),
            FileType::Socket => Kind::Special("a socket"),
            FileType::CharacterDevice | FileType::BlockDevice => Kind::Special("a device"),
            FileType::Unknown => Kind::Special("not a regular file"),
        }
    }
}

/// The error for something that is not a regular file where one is needed.
fn not_regular(kind: Kind) -> io::Error {
    let what = match kind {
        Kind::Regular => "a regular file",
        Kind::Dir => "a folder",
        Kind::Symlink => "a symbolic link",
        Kind::Special(what) => what,
    };
    io::Error::new(
        io::ErrorKind::InvalidInput,
        format!("not a regular file: {what}"),
    )
}

/// `rel` must be a plain relative path: no root, no `..`, no `.`, not empty.
fn check_rel(rel: &Path) -> io::Result<()> {
    let plain = rel.components().all(|c| matches!(c, Component::Normal(_)));
    if plain && !rel.as_os_str().is_empty() {
        Ok(())
    } else {
        Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("not a plain relative path: {}", rel.display()),
        ))
    }
}

/// Opens the root itself (the configured folder; links in its own path are the admin's).
fn open_root(root: &Path) -> io::Result<OwnedFd> {
    Ok(rustix::fs::open(
        root,
        OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )?)
}

/// Opens `rel` below the directory `dir` with `flags`, following no link at any component
/// (the last one included: `O_NOFOLLOW`, which with `O_PATH` gives the link itself).
fn resolve(dir: BorrowedFd<'_>, rel: &Path, flags: OFlags) -> io::Result<OwnedFd> {
    check_rel(rel)?;
    let flags = flags | OFlags::NOFOLLOW | OFlags::CLOEXEC;
    if OPENAT2.load(Ordering::Relaxed) {
        let how = ResolveFlags::BENEATH | ResolveFlags::NO_SYMLINKS | ResolveFlags::NO_MAGICLINKS;
        // EAGAIN: a rename somewhere on the system raced the lookup; the kernel asks to retry.
        for _ in 0..3 {
            match rustix::fs::openat2(dir, rel, flags, Mode::empty(), how) {
                Err(rustix::io::Errno::AGAIN) => continue,
                Err(rustix::io::Errno::NOSYS) | Err(rustix::io::Errno::PERM) => {
                    // No openat2 here (old kernel, or a seccomp filter): walk instead.
                    OPENAT2.store(false, Ordering::Relaxed);
                    break;
                }
                r => return Ok(r?),
            }
        }
    }
    walk_nofollow(dir, rel, flags)
}

/// The fallback: one `openat(O_NOFOLLOW)` per component. With only plain components (checked)
/// and no link followed, the result is beneath `dir` by construction.
fn walk_nofollow(dir: BorrowedFd<'_>, rel: &Path, flags: OFlags) -> io::Result<OwnedFd> {
    let mut comps: Vec<&OsStr> = rel.iter().collect();
    let last = comps
        .pop()
        .ok_or_else(|| io::Error::from(io::ErrorKind::InvalidInput))?;
    let mut cur: Option<OwnedFd> = None;
    for c in comps {
        let at = cur.as_ref().map_or(dir, |f| f.as_fd());
        let next = rustix::fs::openat(
            at,
            c,
            OFlags::PATH | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::empty(),
        )?;
        cur = Some(next);
    }
    let at = cur.as_ref().map_or(dir, |f| f.as_fd());
    Ok(rustix::fs::openat(at, last, flags, Mode::empty())?)
}

/// A folder reached below a root: the root itself (borrowed, so a file at the top needs no
/// duplicated descriptor) or a sub-folder opened for the purpose.
enum Dir<'a> {
    Root(BorrowedFd<'a>),
    Sub(OwnedFd),
}

impl AsFd for Dir<'_> {
    fn as_fd(&self) -> BorrowedFd<'_> {
        match self {
            Dir::Root(fd) => *fd,
            Dir::Sub(fd) => fd.as_fd(),
        }
    }
}

/// The folder holding `rel` (opened `O_PATH`, beneath the root) and `rel`'s last name.
fn parent_of<'a, 'r>(root: &'r OwnedFd, rel: &'a Path) -> io::Result<(Dir<'r>, &'a OsStr)> {
    check_rel(rel)?;
    let name = rel
        .file_name()
        .ok_or_else(|| io::Error::from(io::ErrorKind::InvalidInput))?;
    let parent = match rel.parent() {
        Some(p) if !p.as_os_str().is_empty() => {
            Dir::Sub(resolve(root.as_fd(), p, OFlags::PATH | OFlags::DIRECTORY)?)
        }
        _ => Dir::Root(root.as_fd()),
    };
    Ok((parent, name))
}

/// A root folder (an inbox, done/ or failed/) opened once for several calls below it: a
/// group of looks in settle pays for resolving the configured path once, not per file.
pub struct Root(OwnedFd);

impl Root {
    pub fn open(root: &Path) -> io::Result<Root> {
        open_root(root).map(Root)
    }

    /// [`metadata`] below this root.
    pub fn metadata(&self, rel: &Path) -> io::Result<std::fs::Metadata> {
        let fd = resolve(self.0.as_fd(), rel, OFlags::PATH)?;
        File::from(fd).metadata()
    }

    /// [`read_link`] below this root.
    pub fn read_link(&self, rel: &Path) -> io::Result<PathBuf> {
        let (parent, name) = parent_of(&self.0, rel)?;
        let target = rustix::fs::readlinkat(&parent, name, Vec::new())?;
        Ok(PathBuf::from(OsStr::from_bytes(target.to_bytes())))
    }

    /// [`open_file`] below this root, with the open file's metadata (taken after the open,
    /// so it describes exactly what will be read).
    pub fn open_file(&self, rel: &Path) -> io::Result<(File, std::fs::Metadata)> {
        let (parent, name) = parent_of(&self.0, rel)?;
        open_regular_at(parent.as_fd(), name)
    }
}

/// `lstat` of `root/rel`: a link anywhere above the last component is an error; a link as
/// the last component is described, never followed.
pub fn metadata(root: &Path, rel: &Path) -> io::Result<std::fs::Metadata> {
    Root::open(root)?.metadata(rel)
}

/// Where the link `root/rel` points (its text; nothing is followed).
pub fn read_link(root: &Path, rel: &Path) -> io::Result<PathBuf> {
    Root::open(root)?.read_link(rel)
}

/// Opens `name` in `dir` for reading, only if it is a regular file: checked before the open
/// (`lstat`) so that FIFOs and devices are never opened, and after it (`fstat`, same inode)
/// because the entry may have been swapped meanwhile. `O_NONBLOCK` keeps even that swap from
/// blocking. The returned file is back in blocking mode; the metadata is the open file's.
fn open_regular_at(dir: BorrowedFd<'_>, name: &OsStr) -> io::Result<(File, std::fs::Metadata)> {
    use std::os::unix::fs::MetadataExt;
    let before = rustix::fs::statat(dir, name, AtFlags::SYMLINK_NOFOLLOW)?;
    let kind = Kind::of_raw(FileType::from_raw_mode(before.st_mode));
    if kind != Kind::Regular {
        return Err(not_regular(kind));
    }
    let fd = rustix::fs::openat(
        dir,
        name,
        OFlags::RDONLY | OFlags::NONBLOCK | OFlags::NOFOLLOW | OFlags::NOCTTY | OFlags::CLOEXEC,
        Mode::empty(),
    )?;
    let file = File::from(fd);
    let after = file.metadata()?;
    let kind = Kind::of(after.file_type());
    if kind != Kind::Regular {
        return Err(not_regular(kind));
    }
    if (after.dev(), after.ino()) != (before.st_dev, before.st_ino) {
        return Err(io::Error::new(
            io::ErrorKind::NotFound,
            "the file was replaced while it was opened",
        ));
    }
    // F_SETFL changes only the status flags (O_NONBLOCK among them), so setting none clears
    // O_NONBLOCK without reading the flags first.
    rustix::fs::fcntl_setfl(&file, OFlags::empty())?;
    Ok((file, after))
}

/// Opens the regular file `root/rel` for reading (see the module notes): links, FIFOs,
/// sockets and devices are refused with `InvalidInput`, never opened.
pub fn open_file(root: &Path, rel: &Path) -> io::Result<File> {
    Ok(Root::open(root)?.open_file(rel)?.0)
}

/// Creates `root/rel` for writing; fails if anything (a link included) is already there.
pub fn create_new(root: &Path, rel: &Path) -> io::Result<File> {
    let root = open_root(root)?;
    let (parent, name) = parent_of(&root, rel)?;
    let fd = rustix::fs::openat(
        &parent,
        name,
        OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::from_raw_mode(0o666),
    )?;
    Ok(File::from(fd))
}

/// Removes the entry `root/rel` (a file or a link, never a folder) without following links.
pub fn remove(root: &Path, rel: &Path) -> io::Result<()> {
    let root = open_root(root)?;
    let (parent, name) = parent_of(&root, rel)?;
    Ok(rustix::fs::unlinkat(&parent, name, AtFlags::empty())?)
}

/// Removes the folder `root/rel` if it is empty (an error otherwise), following no link.
pub fn remove_empty_dir(root: &Path, rel: &Path) -> io::Result<()> {
    let root = open_root(root)?;
    let (parent, name) = parent_of(&root, rel)?;
    Ok(rustix::fs::unlinkat(&parent, name, AtFlags::REMOVEDIR)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    /// in/sub/a.pdf, in/dirlink → outside/, in/filelink → outside/secret.
    pub(super) fn tree() -> tempfile::TempDir {
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(d.path().join("in/sub")).unwrap();
        std::fs::create_dir_all(d.path().join("outside")).unwrap();
        std::fs::write(d.path().join("outside/secret"), b"secret").unwrap();
        std::fs::write(d.path().join("in/sub/a.pdf"), b"a").unwrap();
        symlink(d.path().join("outside"), d.path().join("in/dirlink")).unwrap();
        symlink(
            d.path().join("outside/secret"),
            d.path().join("in/filelink"),
        )
        .unwrap();
        d
    }

    fn both_ways(f: impl Fn()) {
        OPENAT2.store(true, Ordering::Relaxed);
        f();
        OPENAT2.store(false, Ordering::Relaxed);
        f();
        OPENAT2.store(true, Ordering::Relaxed);
    }

    #[test]
    fn links_are_never_followed() {
        let d = tree();
        let root = d.path().join("in");
        both_ways(|| {
            assert!(metadata(&root, Path::new("dirlink/secret")).is_err());
            assert!(open_file(&root, Path::new("dirlink/secret")).is_err());
            assert!(open_file(&root, Path::new("filelink")).is_err());
            assert!(metadata(&root, Path::new("filelink")).unwrap().is_symlink());
            assert!(metadata(&root, Path::new("../outside/secret")).is_err());
            assert!(metadata(&root, Path::new("/etc/passwd")).is_err());
            let mut s = String::new();
            io::Read::read_to_string(
                &mut open_file(&root, Path::new("sub/a.pdf")).unwrap(),
                &mut s,
            )
            .unwrap();
            assert_eq!(s, "a");
        });
        assert_eq!(
            read_link(&root, Path::new("dirlink")).unwrap(),
            d.path().join("outside")
        );
    }

    #[test]
    fn fifos_are_refused_without_blocking() {
        let d = tempfile::tempdir().unwrap();
        let fifo = d.path().join("p");
        rustix::fs::mkfifoat(rustix::fs::CWD, &fifo, Mode::from_raw_mode(0o644)).unwrap();
        let e = open_file(d.path(), Path::new("p")).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidInput, "{e}");
        assert!(e.to_string().contains("FIFO"), "{e}");
    }
}

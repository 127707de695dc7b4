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

use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

use rustix::fs::{AtFlags, FileType, Mode, OFlags, RenameFlags, ResolveFlags};

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

/// The folder holding `rel` (opened `O_PATH`, beneath the root) and `rel`'s last name.
fn parent_of<'a>(root: &OwnedFd, rel: &'a Path) -> io::Result<(OwnedFd, &'a OsStr)> {
    check_rel(rel)?;
    let name = rel
        .file_name()
        .ok_or_else(|| io::Error::from(io::ErrorKind::InvalidInput))?;
    let parent = match rel.parent() {
        Some(p) if !p.as_os_str().is_empty() => {
            resolve(root.as_fd(), p, OFlags::PATH | OFlags::DIRECTORY)?
        }
        _ => root.try_clone()?,
    };
    Ok((parent, name))
}

/// `lstat` of `root/rel`: a link anywhere above the last component is an error; a link as
/// the last component is described, never followed.
pub fn metadata(root: &Path, rel: &Path) -> io::Result<std::fs::Metadata> {
    let root = open_root(root)?;
    let fd = resolve(root.as_fd(), rel, OFlags::PATH)?;
    File::from(fd).metadata()
}

/// Where the link `root/rel` points (its text; nothing is followed).
pub fn read_link(root: &Path, rel: &Path) -> io::Result<PathBuf> {
    let root = open_root(root)?;
    let (parent, name) = parent_of(&root, rel)?;
    let target = rustix::fs::readlinkat(&parent, name, Vec::new())?;
    Ok(PathBuf::from(OsStr::from_bytes(target.to_bytes())))
}

/// Opens `name` in `dir` for reading, only if it is a regular file: checked before the open
/// (`lstat`) so that FIFOs and devices are never opened, and after it (`fstat`, same inode)
/// because the entry may have been swapped meanwhile. `O_NONBLOCK` keeps even that swap from
/// blocking. The returned file is back in blocking mode.
fn open_regular_at(dir: BorrowedFd<'_>, name: &OsStr) -> io::Result<File> {
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
    let after = rustix::fs::fstat(&fd)?;
    let kind = Kind::of_raw(FileType::from_raw_mode(after.st_mode));
    if kind != Kind::Regular {
        return Err(not_regular(kind));
    }
    if (after.st_dev, after.st_ino) != (before.st_dev, before.st_ino) {
        return Err(io::Error::new(
            io::ErrorKind::NotFound,
            "the file was replaced while it was opened",
        ));
    }
    let flags = rustix::fs::fcntl_getfl(&fd)?;
    rustix::fs::fcntl_setfl(&fd, flags - OFlags::NONBLOCK)?;
    Ok(File::from(fd))
}

/// Opens the regular file `root/rel` for reading (see the module notes): links, FIFOs,
/// sockets and devices are refused with `InvalidInput`, never opened.
pub fn open_file(root: &Path, rel: &Path) -> io::Result<File> {
    let root = open_root(root)?;
    let (parent, name) = parent_of(&root, rel)?;
    open_regular_at(parent.as_fd(), name)
}

/// An open regular file below an inbox, with a path that names exactly this open file
/// (`/proc/self/fd/N`), whatever the name in the inbox points to by now. For APIs that want
/// a path and may open it more than once (the S3 SDK re-reads a body on a retry).
pub struct Pinned {
    _file: File,
    path: PathBuf,
}

impl Pinned {
    pub fn open(root: &Path, rel: &Path) -> io::Result<Pinned> {
        use std::os::fd::AsRawFd;
        let file = open_file(root, rel)?;
        let path = PathBuf::from(format!("/proc/self/fd/{}", file.as_raw_fd()));
        Ok(Pinned { _file: file, path })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
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

/// What [`walk_tree`] found, as full paths (`root/...`).
#[derive(Debug, Default)]
pub struct Walked {
    /// Every entry that is not a folder (files, links, special files).
    pub files: Vec<PathBuf>,
    /// Every folder read, `root/sub` itself included.
    pub dirs: Vec<PathBuf>,
}

/// Every entry below `root/sub` that is not a folder, as full paths (`root/...`); `sub`
/// empty means the whole root. See [`walk_tree`].
pub fn walk(label: &str, root: &Path, sub: &Path) -> Vec<PathBuf> {
    walk_tree(label, root, sub).files
}

/// Walks `root/sub` (`sub` empty: the whole root). Folder links are not descended into
/// (they are listed as files: links). Unreadable folders are logged and skipped: they cannot
/// be uploaded anyway, and the next sweep looks again.
pub fn walk_tree(label: &str, root: &Path, sub: &Path) -> Walked {
    let mut out = Walked::default();
    let root_fd = match open_root(root) {
        Ok(f) => f,
        Err(e) => {
            tracing::warn!(inbox = label, path = %root.display(), error = %e, "cannot read the inbox folder");
            return out;
        }
    };
    // Folders still to read, relative to the root. One folder is open at a time: a wide tree
    // must not run out of file descriptors.
    let mut todo: Vec<PathBuf> = vec![sub.to_path_buf()];
    while let Some(rel) = todo.pop() {
        let opened = if rel.as_os_str().is_empty() {
            rustix::fs::openat(
                &root_fd,
                ".",
                OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
                Mode::empty(),
            )
            .map_err(io::Error::from)
        } else {
            resolve(root_fd.as_fd(), &rel, OFlags::RDONLY | OFlags::DIRECTORY)
        };
        let dir_fd = match opened {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue, // gone meanwhile
            Err(e) => {
                tracing::warn!(inbox = label, path = %rel.display(), error = %e,
                    "cannot read part of the inbox");
                continue;
            }
        };
        let dir = match rustix::fs::Dir::new(dir_fd) {
            Ok(d) => d,
            Err(e) => {
                tracing::warn!(inbox = label, path = %rel.display(), error = %e,
                    "cannot read part of the inbox");
                continue;
            }
        };
        out.dirs.push(if rel.as_os_str().is_empty() {
            root.to_path_buf()
        } else {
            root.join(&rel)
        });
        let mut dir = dir;
        while let Some(entry) = dir.read() {
            let entry = match entry {
                Ok(e) => e,
                Err(e) => {
                    tracing::warn!(inbox = label, path = %rel.display(), error = %e,
                        "cannot read part of the inbox");
                    break;
                }
            };
            let name = OsStr::from_bytes(entry.file_name().to_bytes());
            if name == "." || name == ".." {
                continue;
            }
            let child = rel.join(name);
            let mut ft = entry.file_type();
            if ft == FileType::Unknown {
                // Some file systems do not say in the listing; ask without following.
                match dir
                    .fd()
                    .and_then(|d| rustix::fs::statat(d, name, AtFlags::SYMLINK_NOFOLLOW))
                {
                    Ok(st) => ft = FileType::from_raw_mode(st.st_mode),
                    Err(_) => continue, // gone meanwhile
                }
            }
            if ft == FileType::Directory {
                todo.push(child);
            } else {
                out.files.push(root.join(child));
            }
        }
    }
    out
}

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

/// Whether `e` says the entry cannot be moved to another file system (see [`Unmovable`]).
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
    let mut src = open_regular_at(from_dir, from)?;
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

/// Removes the entry `root/rel` (a file or a link, never a folder) without following links.
pub fn remove(root: &Path, rel: &Path) -> io::Result<()> {
    let root = open_root(root)?;
    let (parent, name) = parent_of(&root, rel)?;
    Ok(rustix::fs::unlinkat(&parent, name, AtFlags::empty())?)
}

/// `text` for a log line or a reason file: control characters (newlines, escape sequences)
/// are escaped, so a name or link target cannot forge a line.
pub fn escaped(text: &OsStr) -> String {
    let s = text.to_string_lossy();
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if c.is_control() {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    fn tree() -> tempfile::TempDir {
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
    fn walk_does_not_descend_into_links() {
        let d = tree();
        let root = d.path().join("in");
        let mut found = walk("t", &root, Path::new(""));
        found.sort();
        assert_eq!(
            found,
            vec![
                root.join("dirlink"),
                root.join("filelink"),
                root.join("sub/a.pdf")
            ]
        );
        assert!(walk("t", &root, Path::new("dirlink")).is_empty());
        let mut dirs = walk_tree("t", &root, Path::new("")).dirs;
        dirs.sort();
        assert_eq!(dirs, vec![root.clone(), root.join("sub")]);
        assert_eq!(
            walk("t", &root, Path::new("sub")),
            vec![root.join("sub/a.pdf")]
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

    #[test]
    fn moves_links_as_links_across_file_systems() {
        let shm = Path::new("/dev/shm");
        assert!(shm.is_dir(), "this test needs /dev/shm (tmpfs)");
        let d = tree();
        let root = d.path().join("in");
        let dest = tempfile::tempdir_in(shm).unwrap();
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

    #[test]
    fn escapes_control_characters() {
        assert_eq!(
            escaped(OsStr::new("a\nb\u{1b}[31m/März")),
            "a\\nb\\u{1b}[31m/März"
        );
    }
}

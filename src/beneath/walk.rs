//! Walking an inbox without ever descending into a link.

use std::ffi::OsStr;
use std::io;
use std::os::fd::AsFd;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use rustix::fs::{AtFlags, FileType, Mode, OFlags};

use super::{open_root, resolve};

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
    walk_tree_ticking(label, root, sub, &|| {})
}

/// [`walk_tree`] that calls `tick` after every folder entry, so a caller with a time limit
/// can tell a long walk that keeps moving from one stuck on a hung share.
pub fn walk_tree_ticking(label: &str, root: &Path, sub: &Path, tick: &dyn Fn()) -> Walked {
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
            tick();
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::beneath::tests::tree;

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
}

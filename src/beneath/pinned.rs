//! An open file with a path that reopens exactly it, for APIs that want a path.

use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};

use super::Root;

/// An open regular file below an inbox, and where possible a path that names exactly this
/// open file (`/proc/self/fd/N`), whatever the name in the inbox points to by now. For APIs
/// that want a path and may open it more than once (the S3 SDK re-reads a body on a retry).
pub struct Pinned {
    file: File,
    path: Option<PathBuf>,
}

impl Pinned {
    pub fn open(root: &Path, rel: &Path) -> io::Result<Pinned> {
        use std::os::fd::AsRawFd;
        use std::os::unix::fs::MetadataExt;
        let (file, ours) = Root::open(root)?.open_file(rel)?;
        let path = PathBuf::from(format!("/proc/self/fd/{}", file.as_raw_fd()));
        // Without /proc (or with one that says something else) there is no such path: the
        // caller reads the open file itself instead.
        let usable = std::fs::metadata(&path)
            .is_ok_and(|m| (m.dev(), m.ino()) == (ours.dev(), ours.ino()) && m.is_file());
        Ok(Pinned {
            file,
            path: usable.then_some(path),
        })
    }

    /// The path that reopens exactly this file, when /proc provides one.
    pub fn path(&self) -> Option<&Path> {
        self.path.as_deref()
    }

    /// Another handle on the same open file (shares its read position).
    pub fn file(&self) -> io::Result<File> {
        self.file.try_clone()
    }
}

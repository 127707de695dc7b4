//! Where a folder sits: its file system and its mount. A file moves from an inbox to done/ or
//! failed/ by one atomic rename only when both are on the same *mount*; the same file system
//! is not enough. systemd's `ReadWritePaths=` bind-mounts every path it lists, so an inbox and
//! its done/ listed separately are two mounts of one file system, `rename(2)` between them
//! fails with EXDEV, and every move becomes a copy. The device number cannot tell (a bind
//! mount keeps it); the mount id from `statx(2)` can.

use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

/// How a destination folder relates to its inbox.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Apart {
    /// Same mount: moves are atomic renames.
    SameMount,
    /// Another mount of the same file system (a bind mount): moves are copies.
    OtherMount,
    /// Another file system: moves are copies.
    OtherFileSystem,
}

impl Apart {
    /// Words for a message, or `None` when moves are renames.
    pub fn describe(self) -> Option<&'static str> {
        match self {
            Apart::SameMount => None,
            Apart::OtherMount => Some(
                "is on another mount than the inbox (a bind mount, as systemd's ReadWritePaths= \
                 makes for every path it lists), so moves will be copies, not atomic renames",
            ),
            Apart::OtherFileSystem => Some(
                "is on another file system than the inbox, so moves will be copies, not atomic \
                 renames",
            ),
        }
    }
}

/// Where `dest` (or, while it does not exist yet, its nearest existing parent, where it will
/// be created) sits compared with `inbox`. `None` when either cannot be examined.
pub fn apart(inbox: &Path, dest: &Path) -> Option<Apart> {
    let a = place(inbox)?;
    let b = place(nearest_existing(dest)?)?;
    Some(if a.dev != b.dev {
        Apart::OtherFileSystem
    } else if a.mnt_id.is_some() && b.mnt_id.is_some() && a.mnt_id != b.mnt_id {
        Apart::OtherMount
    } else {
        Apart::SameMount
    })
}

fn nearest_existing(path: &Path) -> Option<&Path> {
    let mut probe = path;
    while std::fs::symlink_metadata(probe).is_err() {
        probe = probe.parent()?;
    }
    Some(probe)
}

struct Place {
    dev: u64,
    /// `None` on kernels before 5.8, which do not report it: then only the device counts.
    mnt_id: Option<u64>,
}

fn place(path: &Path) -> Option<Place> {
    let c = CString::new(path.as_os_str().as_bytes()).ok()?;
    // SAFETY: all-zero bytes are a valid `statx` (plain integers).
    let mut stx: libc::statx = unsafe { std::mem::zeroed() };
    // SAFETY: `c` is a valid NUL-terminated path and `stx` a writable buffer of the right
    // type; statx only writes into it.
    let rc = unsafe {
        libc::statx(
            libc::AT_FDCWD,
            c.as_ptr(),
            libc::AT_STATX_SYNC_AS_STAT,
            libc::STATX_BASIC_STATS | libc::STATX_MNT_ID,
            &mut stx,
        )
    };
    if rc != 0 {
        return None;
    }
    let dev = libc::makedev(stx.stx_dev_major, stx.stx_dev_minor);
    let mnt_id = (stx.stx_mask & libc::STATX_MNT_ID != 0).then_some(stx.stx_mnt_id);
    Some(Place { dev, mnt_id })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn folders_side_by_side_are_on_the_same_mount() {
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir(d.path().join("inbox")).unwrap();
        std::fs::create_dir(d.path().join("done")).unwrap();
        let inbox = d.path().join("inbox");
        assert_eq!(
            apart(&inbox, &d.path().join("done")),
            Some(Apart::SameMount)
        );
        // Not created yet: judged by the folder it will be created in.
        assert_eq!(
            apart(&inbox, &d.path().join("failed/2024")),
            Some(Apart::SameMount)
        );
    }

    #[test]
    fn proc_is_another_file_system() {
        let d = tempfile::tempdir().unwrap();
        assert_eq!(
            apart(d.path(), Path::new("/proc/self")),
            Some(Apart::OtherFileSystem)
        );
    }
}

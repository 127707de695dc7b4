//! Moving files into done/ and failed/ without ever replacing a file already there: an
//! atomic no-replace rename where the file system has one, a copy with fsync across file
//! systems, and ` (1)`, ` (2)`, … names on collisions.

use std::ffi::OsString;
use std::path::{Path, PathBuf};

/// Moves `src` to `dir/rel`, never replacing an existing file: on a name collision it picks
/// `name (1).ext`, `name (2).ext`, …. Works across file systems (copy, fsync, then remove).
pub fn move_no_clobber(src: &Path, dir: &Path, rel: &Path) -> std::io::Result<PathBuf> {
    let target = dir.join(rel);
    let mut made_parent = false;
    let mut n = 0u32;
    while n < 100_000 {
        let cand = if n == 0 {
            target.clone()
        } else {
            numbered(&target, n)
        };
        match rename_noreplace(src, &cand) {
            Ok(()) => return Ok(cand),
            // Usually the folder exists already; create it only when the rename says it
            // does not (two system calls saved per file), then try the same name again.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && !made_parent => {
                if let Some(parent) = target.parent() {
                    std::fs::create_dir_all(parent)?;
                }
                made_parent = true;
                continue;
            }
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => n += 1,
            Err(e) if e.raw_os_error() == Some(libc::EXDEV) => {
                return copy_across(src, &cand);
            }
            Err(e) => return Err(e),
        }
    }
    Err(std::io::Error::other("too many files with this name"))
}

/// The done/failed folder is on another file system: copy to a temporary name there, make
/// it durable, give it its final name without replacing anything, then remove the source.
fn copy_across(src: &Path, target: &Path) -> std::io::Result<PathBuf> {
    let dir = target.parent().unwrap_or(Path::new("."));
    let tmp = dir.join(format!(".inboxd-move-{}.tmp", std::process::id()));
    std::fs::copy(src, &tmp)?;
    std::fs::File::open(&tmp)?.sync_all()?;
    for n in 0..100_000u32 {
        let cand = if n == 0 {
            target.to_path_buf()
        } else {
            numbered(target, n)
        };
        match rename_noreplace(&tmp, &cand) {
            Ok(()) => {
                std::fs::remove_file(src)?;
                return Ok(cand);
            }
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => {
                let _ = std::fs::remove_file(&tmp);
                return Err(e);
            }
        }
    }
    let _ = std::fs::remove_file(&tmp);
    Err(std::io::Error::other("too many files with this name"))
}

/// `a/scan.pdf` → `a/scan (n).pdf`; `a/README` → `a/README (n)`.
fn numbered(p: &Path, n: u32) -> PathBuf {
    let stem = p.file_stem().map(|s| s.to_owned()).unwrap_or_default();
    let mut name: OsString = stem;
    name.push(format!(" ({n})"));
    if let Some(ext) = p.extension() {
        name.push(".");
        name.push(ext);
    }
    p.with_file_name(name)
}

/// rename(2) that fails with AlreadyExists instead of replacing the target.
fn rename_noreplace(src: &Path, dst: &Path) -> std::io::Result<()> {
    use std::os::unix::ffi::OsStrExt;
    let c_src = std::ffi::CString::new(src.as_os_str().as_bytes())?;
    let c_dst = std::ffi::CString::new(dst.as_os_str().as_bytes())?;
    // SAFETY: both arguments are valid NUL-terminated strings that live across the call.
    let rc = unsafe {
        libc::renameat2(
            libc::AT_FDCWD,
            c_src.as_ptr(),
            libc::AT_FDCWD,
            c_dst.as_ptr(),
            libc::RENAME_NOREPLACE,
        )
    };
    if rc == 0 {
        return Ok(());
    }
    let err = std::io::Error::last_os_error();
    match err.raw_os_error() {
        // The file system cannot do an atomic no-replace rename (some network file systems):
        // check, then rename. Only inboxd writes into done/ and failed/, so the gap is ours.
        Some(libc::EINVAL) | Some(libc::ENOSYS) | Some(libc::EOPNOTSUPP) => {
            if std::fs::symlink_metadata(dst).is_ok() {
                return Err(std::io::Error::from(std::io::ErrorKind::AlreadyExists));
            }
            std::fs::rename(src, dst)
        }
        _ => Err(err),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn collisions_get_numbered_names() {
        let d = tempfile::tempdir().unwrap();
        let done = d.path().join("done");
        for (i, content) in [b"one", b"two", b"tri"].iter().enumerate() {
            let src = d.path().join(format!("src{i}"));
            std::fs::write(&src, content).unwrap();
            let dest = move_no_clobber(&src, &done, Path::new("a/scan.pdf")).unwrap();
            assert!(!src.exists());
            assert_eq!(std::fs::read(&dest).unwrap(), *content);
        }
        assert_eq!(std::fs::read(done.join("a/scan.pdf")).unwrap(), b"one");
        assert_eq!(std::fs::read(done.join("a/scan (1).pdf")).unwrap(), b"two");
        assert_eq!(std::fs::read(done.join("a/scan (2).pdf")).unwrap(), b"tri");
        assert_eq!(
            numbered(Path::new("x/README"), 3),
            PathBuf::from("x/README (3)")
        );
    }

    #[test]
    fn moves_across_file_systems_without_clobbering() {
        // /tmp and /dev/shm are different file systems on the machines this project runs
        // on; rename(2) between them fails with EXDEV and the copy path must take over.
        let shm = Path::new("/dev/shm");
        assert!(shm.is_dir(), "this test needs /dev/shm (tmpfs)");
        let src_dir = tempfile::tempdir().unwrap();
        let dst_dir = tempfile::tempdir_in(shm).unwrap();
        use std::os::unix::fs::MetadataExt;
        let dev = |p: &Path| std::fs::metadata(p).unwrap().dev();
        assert_ne!(
            dev(src_dir.path()),
            dev(dst_dir.path()),
            "the temporary folder and /dev/shm are one file system here: this test would not \
             cross file systems (set TMPDIR to a disk-backed folder)"
        );
        std::fs::write(dst_dir.path().join("a.pdf"), b"earlier").unwrap();
        let src = src_dir.path().join("a.pdf");
        std::fs::write(&src, b"new content").unwrap();
        let dest = move_no_clobber(&src, dst_dir.path(), Path::new("a.pdf")).unwrap();
        assert_eq!(dest, dst_dir.path().join("a (1).pdf"));
        assert_eq!(std::fs::read(&dest).unwrap(), b"new content");
        assert_eq!(
            std::fs::read(dst_dir.path().join("a.pdf")).unwrap(),
            b"earlier"
        );
        assert!(!src.exists());
        let leftovers: Vec<_> = std::fs::read_dir(dst_dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .filter(|n| n.to_string_lossy().starts_with(".inboxd-move"))
            .collect();
        assert!(leftovers.is_empty(), "{leftovers:?}");
    }
}

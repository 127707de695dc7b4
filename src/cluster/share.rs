//! The blocking reads of a shared inbox's `.inboxd` folder for the cluster stage: every
//! host's heartbeat and claims, and this host's claimed files. Every path is resolved
//! beneath the inbox root without following links (see [`crate::beneath`]).

use std::io;
use std::path::{Path, PathBuf};

use super::{DIR, claims_of, heartbeat_of};
use crate::beneath;
use crate::settle::Signature;

/// What one look at a shared inbox's `.inboxd` found.
pub(super) struct Looked {
    /// (host, heartbeat content, files claimed), every host with a heartbeat or claims.
    pub(super) hosts: Vec<(String, Vec<u8>, usize)>,
    /// This host's claimed files: (place below the inbox, relative path, signature).
    pub(super) mine: Vec<(PathBuf, PathBuf, Signature)>,
}

/// The blocking part of [`super::ClusterStage`]'s look.
pub(super) fn look_at(label: &str, root: &Path, me: &str) -> Looked {
    let mut names: Vec<String> = Vec::new();
    for sub in ["hosts", "claims"] {
        let dir = Path::new(DIR).join(sub);
        let Ok(entries) = list_dir(root, &dir) else {
            continue;
        };
        for name in entries {
            if !name.starts_with('.') && !names.contains(&name) {
                names.push(name);
            }
        }
    }
    names.sort();
    let mut hosts = Vec::new();
    let mut mine = Vec::new();
    for host in names {
        let content = read_small(root, &heartbeat_of(&host)).unwrap_or_default();
        let sub = claims_of(&host);
        let base = root.join(&sub);
        let walked = beneath::walk_tree(label, root, &sub);
        let files = walked.files;
        if host == me {
            // Folders a claimed file has left (moved to done/ or failed/), deepest first; one
            // that is not empty stays. Only this host's own folder, and only this stage
            // claims into it, so no claim is under way in a folder removed here.
            let mut dirs: Vec<PathBuf> = walked
                .dirs
                .iter()
                .filter_map(|d| d.strip_prefix(root).ok())
                .filter(|d| d.starts_with(&sub) && *d != sub.as_path())
                .map(Path::to_path_buf)
                .collect();
            dirs.sort_by_key(|d| std::cmp::Reverse(d.components().count()));
            for d in dirs {
                let _ = beneath::remove_empty_dir(root, &d);
            }
            for full in &files {
                let Ok(rel) = full.strip_prefix(&base) else {
                    continue;
                };
                let at = sub.join(rel);
                // Only regular files are offered: anything else in a claim folder was not put
                // there by a claim (settle hands links and special files on as such, and the
                // rename keeps them so, but they go straight on), and is left alone.
                if let Ok(m) = beneath::metadata(root, &at)
                    && m.file_type().is_file()
                {
                    mine.push((at, rel.to_path_buf(), Signature::of(&m)));
                }
            }
        }
        hosts.push((host, content, files.len()));
    }
    Looked { hosts, mine }
}

/// Names in the folder `root/rel` (resolved without following links).
fn list_dir(root: &Path, rel: &Path) -> io::Result<Vec<String>> {
    let meta = beneath::metadata(root, rel)?;
    if !meta.is_dir() {
        return Err(io::Error::from(io::ErrorKind::NotADirectory));
    }
    let walked = beneath::walk_tree("cluster", root, rel);
    let base = root.join(rel);
    let mut out = Vec::new();
    for p in walked.dirs.iter().chain(walked.files.iter()) {
        if let Ok(r) = p.strip_prefix(&base)
            && let Some(first) = r.components().next()
        {
            let name = first.as_os_str().to_string_lossy().into_owned();
            if !out.contains(&name) {
                out.push(name);
            }
        }
    }
    Ok(out)
}

/// A heartbeat file's content (at most 256 bytes; a regular file only, no link followed).
fn read_small(root: &Path, rel: &Path) -> io::Result<Vec<u8>> {
    use std::io::Read as _;
    let f = beneath::open_file(root, rel)?;
    let mut buf = Vec::new();
    f.take(256).read_to_end(&mut buf)?;
    Ok(buf)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::claims_of;

    #[test]
    fn a_claim_takes_the_file_once_and_keeps_its_relative_path() {
        let d = tempfile::tempdir().unwrap();
        let root = d.path();
        std::fs::create_dir_all(root.join("a")).unwrap();
        std::fs::write(root.join("a/scan.pdf"), b"x").unwrap();
        let to = claims_of("h1").join("a/scan.pdf");
        beneath::rename_within(root, Path::new("a/scan.pdf"), &to).unwrap();
        // The second host finds it gone.
        let again = beneath::rename_within(
            root,
            Path::new("a/scan.pdf"),
            &claims_of("h2").join("a/scan.pdf"),
        );
        assert_eq!(again.unwrap_err().kind(), io::ErrorKind::NotFound);
        assert_eq!(std::fs::read(root.join(&to)).unwrap(), b"x");
        let l = look_at("t", root, "h1");
        assert_eq!(l.mine.len(), 1);
        assert_eq!(l.mine[0].1, Path::new("a/scan.pdf"));
        // h2's attempt made its (empty) claim folder: it is seen, holding nothing.
        assert_eq!(
            l.hosts,
            vec![
                ("h1".to_owned(), Vec::new(), 1),
                ("h2".to_owned(), Vec::new(), 0)
            ]
        );
    }

    #[test]
    fn a_link_in_place_of_the_claim_folder_is_never_followed() {
        let d = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(outside.path().join("claims/h1")).unwrap();
        std::fs::write(outside.path().join("claims/h1/secret"), b"s").unwrap();
        std::os::unix::fs::symlink(outside.path(), d.path().join(DIR)).unwrap();
        let l = look_at("t", d.path(), "h1");
        assert!(l.mine.is_empty() && l.hosts.is_empty());
        std::fs::write(d.path().join("f"), b"x").unwrap();
        assert!(
            beneath::rename_within(d.path(), Path::new("f"), &claims_of("h1").join("f")).is_err()
        );
        assert!(d.path().join("f").exists(), "the file stayed in the inbox");
    }
}

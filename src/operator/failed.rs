//! What a failed/ folder holds: the failed files and, beside each, its reason file. Read by
//! `status` (without a daemon) and `retry`.

use std::path::{Path, PathBuf};

use crate::config::InboxSettings;

/// Regular files below `dir` (not through links), skipping the folders in `skip`.
pub(super) fn regular_files(dir: &Path, skip: &[&PathBuf]) -> Vec<PathBuf> {
    walkdir::WalkDir::new(dir)
        .follow_links(false)
        .into_iter()
        .filter_entry(|e| !skip.iter().any(|s| e.path() == s.as_path()))
        .filter_map(Result::ok)
        .filter(|e| !e.file_type().is_dir())
        .filter_map(|e| e.path().strip_prefix(dir).ok().map(Path::to_path_buf))
        .collect()
}

/// What failed/ holds besides reason files, relative to it.
pub(super) fn failed_files(inbox: &InboxSettings) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = regular_files(&inbox.failed_dir, &[])
        .into_iter()
        .filter(|p| !is_reason_file(p))
        .collect();
    files.sort();
    files
}

/// `x.reason.txt`, or `x.reason (2).txt` when a reason file of that name was there already.
fn is_reason_file(p: &Path) -> bool {
    let name = p
        .file_name()
        .map(|n| n.to_string_lossy())
        .unwrap_or_default();
    if name.ends_with(".reason.txt") {
        return true;
    }
    name.strip_suffix(").txt")
        .and_then(|n| n.rsplit_once(".reason ("))
        .is_some_and(|(_, digits)| !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()))
}

pub(super) fn reason_path(failed_dir: &Path, rel: &Path) -> PathBuf {
    let mut name = failed_dir.join(rel).into_os_string();
    name.push(".reason.txt");
    PathBuf::from(name)
}

pub(super) fn reason_line(failed_dir: &Path, rel: &Path) -> String {
    std::fs::read_to_string(reason_path(failed_dir, rel))
        .ok()
        .and_then(|t| {
            t.lines()
                .find(|l| l.starts_with("reason:"))
                .map(|l| l.trim_start_matches("reason:").trim().to_owned())
        })
        .unwrap_or_else(|| "(no reason file)".to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reason_files_are_told_apart_from_failed_files() {
        assert!(is_reason_file(Path::new("a/scan.pdf.reason.txt")));
        assert!(is_reason_file(Path::new("scan.pdf.reason (2).txt")));
        assert!(!is_reason_file(Path::new("scan.pdf")));
        assert!(!is_reason_file(Path::new("my.reason (draft).txt")));
        assert!(!is_reason_file(Path::new("notes.txt")));
    }
}

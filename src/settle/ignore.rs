//! Ignore rules: names settle never takes (temporary files, lock files, file-server clutter),
//! matched against every component of a path relative to its inbox.

use std::path::Path;

use globset::{GlobBuilder, GlobSet, GlobSetBuilder};

/// Names that are never uploaded: temporary, partial-download and lock files of common
/// programs, and the metadata that file servers and desktops leave in shared folders (Windows
/// thumbnails and folder settings, macOS Finder data, recycle bins of Windows, Synology and
/// Samba, Synology's thumbnail folders). Matched case-insensitively against every component of
/// the path, so a folder with such a name hides everything in it. Hidden files and folders (a
/// leading '.') are ignored as well, see [`Ignore::is_ignored`].
pub const DEFAULT_IGNORES: &[&str] = &[
    "*.tmp",
    "~*.tmp",
    "*.part",
    "*.partial",
    "*.filepart",
    "*.crdownload",
    "~$*",
    ".~lock*",
    "Thumbs.db",
    "desktop.ini",
    ".DS_Store",
    "$RECYCLE.BIN",
    "@eaDir",
    "#recycle",
];

/// Ignore rules of one inbox.
pub struct Ignore {
    names: GlobSet,
}

impl Ignore {
    pub fn new(extra: &[String]) -> Result<Ignore, globset::Error> {
        let mut b = GlobSetBuilder::new();
        for pat in DEFAULT_IGNORES
            .iter()
            .copied()
            .chain(extra.iter().map(String::as_str))
        {
            // Case-insensitive: files arrive from Windows and macOS clients, whose file
            // systems do not tell `X.TMP` from `x.tmp`.
            b.add(GlobBuilder::new(pat).case_insensitive(true).build()?);
        }
        Ok(Ignore { names: b.build()? })
    }

    /// `rel` is relative to the inbox. Every component is matched, so an ignored or hidden
    /// folder (`@eaDir/`, `$RECYCLE.BIN/`, `.git/`) hides everything inside it.
    pub fn is_ignored(&self, rel: &Path) -> bool {
        rel.components().any(|c| {
            let name = c.as_os_str();
            name.as_encoded_bytes().first() == Some(&b'.') || self.names.is_match(name)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_ignores() {
        let ig = Ignore::new(&["*.bak".to_string()]).unwrap();
        for name in [
            "a.tmp",
            "A.TMP",
            "~WRL0001.tmp",
            "x/y.part",
            "y.PART",
            "big.iso.partial",
            "upload.filepart",
            "~$report.docx",
            ".~lock.report.odt#",
            ".hidden",
            ".git/config",
            "sub/.cache/file.pdf",
            "old.bak",
            "OLD.BAK",
            "d.crdownload",
            "Thumbs.db",
            "scans/thumbs.DB",
            "Desktop.ini",
            ".DS_Store",
            "$RECYCLE.BIN/S-1-5-21/$R1.pdf",
            "$Recycle.Bin/x.pdf",
            "2024/@eaDir/a.pdf/SYNOFILE_THUMB_M.jpg",
            "#recycle/a.pdf",
            "old.bak/inside.pdf",
        ] {
            assert!(ig.is_ignored(Path::new(name)), "{name} should be ignored");
        }
        for name in [
            "a.pdf",
            "tmp/a.pdf",
            "part.txt",
            "März/Übersicht.pdf",
            "a.tmp.pdf",
            "Thumbs.db.pdf",
            "recycle/a.pdf",
            "eaDir/a.pdf",
        ] {
            assert!(!ig.is_ignored(Path::new(name)), "{name} should be uploaded");
        }
    }
}

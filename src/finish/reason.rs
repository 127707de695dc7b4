//! Reason files: `<file>.reason.txt` beside a file in failed/, saying why it is there.

use std::io::Write;
use std::path::{Path, PathBuf};

use crate::beneath;
use crate::config::InboxSettings;
use crate::telemetry::escape;
use crate::upload::Outcome;

/// The content of a reason file, taken from the outcome so that it can be written on the
/// blocking pool (under the inbox's time limit).
pub(super) struct Reason {
    dest: PathBuf,
    failed_dir: PathBuf,
    reason: String,
    attempts: u32,
    inbox: String,
    original: PathBuf,
    size: u64,
    sha256: Option<String>,
}

impl Reason {
    pub(super) fn of(dest: &Path, inbox: &InboxSettings, o: &Outcome, reason: &str) -> Reason {
        Reason {
            dest: dest.to_path_buf(),
            failed_dir: inbox.failed_dir.clone(),
            reason: reason.to_owned(),
            attempts: o.attempts,
            inbox: inbox.name.clone(),
            original: o.file.path.clone(),
            size: o.file.size,
            sha256: o.sha256.clone(),
        }
    }

    /// Writes `<file>.reason.txt` beside the file in failed/.
    pub(super) fn write(self) -> std::io::Result<()> {
        let rel = self
            .dest
            .strip_prefix(&self.failed_dir)
            .map_err(|_| std::io::Error::other("the file is not in failed/"))?;
        // Created exclusively, never through a link: a file in failed/ that happens to carry
        // such a name is never overwritten.
        let mut f = None;
        for n in 0..1000u32 {
            let mut name = rel.as_os_str().to_owned();
            name.push(if n == 0 {
                ".reason.txt".to_owned()
            } else {
                format!(".reason ({n}).txt")
            });
            match beneath::create_new(&self.failed_dir, Path::new(&name)) {
                Ok(file) => {
                    f = Some(file);
                    break;
                }
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(e),
            }
        }
        let Some(mut f) = f else {
            return Err(std::io::Error::other(
                "too many reason files with this name",
            ));
        };
        // Names are chosen by whoever writes into the inbox, and a reason may quote a link's
        // target or an error naming a file: escaped, so that none can add a line of its own.
        writeln!(f, "reason: {}", escape(&self.reason))?;
        writeln!(f, "time: {}", crate::ledger::now_rfc3339())?;
        writeln!(f, "attempts: {}", self.attempts)?;
        writeln!(f, "inbox: {}", self.inbox)?;
        writeln!(f, "original path: {}", escape(&self.original))?;
        writeln!(f, "size: {}", self.size)?;
        if let Some(sha) = &self.sha256 {
            writeln!(f, "sha256: {sha}")?;
        }
        f.sync_all()
    }
}

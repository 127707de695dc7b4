//! The batch journal: every batch report appended as one JSON line to `batches.jsonl` in
//! `[log] dir`, kept for later reading. A disk that refuses it is said once and never stops
//! a batch.

use std::path::Path;

/// The batch journal file, opened on first use (append only).
pub(super) struct Journal {
    path: std::path::PathBuf,
    file: Option<std::fs::File>,
    /// A failure is said once, not once per batch.
    failed: bool,
}

impl Journal {
    /// The journal in `dir` (`[log] dir`); nothing is opened until the first batch.
    pub(super) fn in_dir(dir: &Path) -> Journal {
        Journal {
            path: dir.join("batches.jsonl"),
            file: None,
            failed: false,
        }
    }

    pub(super) fn append(&mut self, line: &str) {
        use std::io::Write as _;
        if self.file.is_none() {
            let opened = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&self.path);
            match opened {
                Ok(f) => self.file = Some(f),
                Err(e) => {
                    self.failed_once(&e);
                    return;
                }
            }
        }
        if let Some(f) = self.file.as_mut()
            && let Err(e) = writeln!(f, "{line}")
        {
            self.failed_once(&e);
            // Opened again for the next batch (the disk may have room again).
            self.file = None;
        }
    }

    /// Says the first failure; the batch reports are still in the log and `/status`, so the
    /// ones after it would only repeat the line.
    fn failed_once(&mut self, e: &std::io::Error) {
        if !std::mem::replace(&mut self.failed, true) {
            tracing::warn!(file = %self.path.display(), error = %e, "cannot write the batch journal; batch reports stay in the log and /status only");
        }
    }
}

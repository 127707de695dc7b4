//! The ledger of a stopped daemon, copied and read without writing a byte in `state_dir`
//! (for `inboxd ledger` when no daemon answers).

use std::path::{Path, PathBuf};

use super::schema::open_db;
use super::store::records_of;
use super::{LedgerError, Record};

/// The ledger of a stopped daemon, read without writing a byte in `state_dir`.
///
/// sled 0.34 has no read-only mode: opening a database creates `blobs/`, `conf` and `db`
/// when they are missing, takes an exclusive `flock` on `db`, may write a new `snap.*`
/// snapshot and rewrite the end of the log during recovery, and flushes again when dropped.
/// So this copies the ledger folder into a private temporary folder (in `$TMPDIR`, removed
/// again on drop) and opens the copy. While copying it holds a shared `flock` on `db`: a
/// daemon holds the exclusive one for as long as it runs, so the copy is never taken from a
/// ledger being written, and a daemon starting during the copy finds the ledger in use
/// (and, under systemd, is started again five seconds later).
pub struct LedgerCopy {
    files: sled::Tree,
    _db: sled::Db,
    _dir: tempfile::TempDir,
}

#[derive(Debug, thiserror::Error)]
pub enum CopyError {
    /// A daemon holds the ledger.
    #[error("the ledger in {0} is in use by a running inboxd")]
    InUse(PathBuf),
    #[error("cannot read the ledger in {dir}: {source}")]
    Io {
        dir: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Ledger(#[from] LedgerError),
}

impl LedgerCopy {
    /// `None` when `state_dir` holds no ledger yet (nothing is created then either).
    pub fn open(state_dir: &Path) -> Result<Option<LedgerCopy>, CopyError> {
        let src = state_dir.join("ledger");
        let io = |source: std::io::Error| CopyError::Io {
            dir: src.clone(),
            source,
        };
        // Opened read-only: a missing `db` stays missing.
        let db_file = match std::fs::File::open(src.join("db")) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(io(e)),
        };
        match rustix::fs::flock(&db_file, rustix::fs::FlockOperation::NonBlockingLockShared) {
            Ok(()) => {}
            Err(rustix::io::Errno::WOULDBLOCK) => return Err(CopyError::InUse(src)),
            Err(e) => return Err(io(e.into())),
        }
        let tmp = tempfile::Builder::new()
            .prefix("inboxd-ledger-")
            .tempdir()
            .map_err(|e| CopyError::Io {
                dir: std::env::temp_dir(),
                source: e,
            })?;
        let copy = tmp.path().join("ledger");
        copy_tree(&src, &copy).map_err(io)?;
        // The copy is complete: the daemon may have the ledger again.
        drop(db_file);
        let db = open_db(&copy, state_dir)?;
        let files = db.open_tree("files").map_err(LedgerError::Io)?;
        Ok(Some(LedgerCopy {
            files,
            _db: db,
            _dir: tmp,
        }))
    }

    /// Every file record, in key order (the same as [`super::Ledger::records`]).
    pub fn records(&self) -> impl Iterator<Item = Result<Record, LedgerError>> + '_ {
        records_of(&self.files)
    }
}

/// Copies the folders and regular files below `from` to `to` (sled keeps nothing else there).
fn copy_tree(from: &Path, to: &Path) -> std::io::Result<()> {
    for entry in walkdir::WalkDir::new(from).follow_links(false) {
        let entry = entry.map_err(std::io::Error::other)?;
        let Ok(rel) = entry.path().strip_prefix(from) else {
            continue;
        };
        let target = to.join(rel);
        if entry.file_type().is_dir() {
            std::fs::create_dir_all(&target)?;
        } else if entry.file_type().is_file() {
            std::fs::copy(entry.path(), &target)?;
        }
    }
    Ok(())
}

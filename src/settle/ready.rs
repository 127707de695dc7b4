//! What settle hands on: a [`ReadyFile`], with the [`Signature`] it was decided on and its
//! [`Kind`] (upload it, or move it to failed/ as it is).

use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;
use tokio::time::Instant;

/// What settle knows about a file when it hands it on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Signature {
    pub size: u64,
    pub mtime_ns: i128,
    pub ino: u64,
    pub dev: u64,
}

impl Signature {
    pub fn of(meta: &std::fs::Metadata) -> Signature {
        Signature {
            size: meta.len(),
            mtime_ns: meta.mtime() as i128 * 1_000_000_000 + meta.mtime_nsec() as i128,
            ino: meta.ino(),
            dev: meta.dev(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Kind {
    Regular,
    /// A symlink, FIFO, socket or device: never opened nor uploaded, moved to failed/ (as
    /// itself: a link as the link) with this reason, which says what it is (and where a link
    /// points).
    NotRegular(String),
    /// A regular file its format says is cut, and has been for the inbox's
    /// `incomplete_after`: never uploaded, moved to failed/ with this reason (see
    /// [`mod@crate::settle::format`]).
    Incomplete(String),
}

/// A file that has been stable for its settle window, claimed for upload.
#[derive(Debug, Clone)]
pub struct ReadyFile {
    pub inbox: usize,
    pub path: PathBuf,
    /// Path relative to the inbox: the file's name for its key, done/ and the ledger.
    pub rel: PathBuf,
    /// Its inbox's folder, the root every access to the file is resolved beneath.
    pub root: PathBuf,
    /// Where the file is, relative to `root`: `rel`, or, once claimed on a shared inbox, its
    /// place in this host's claim folder there (see [`crate::cluster`]). Always resolved
    /// beneath `root`, never through a link, like every path in an inbox.
    pub at: PathBuf,
    pub size: u64,
    pub sig: Signature,
    pub kind: Kind,
    /// When settle handed it on (for latency figures).
    pub ready_at: Instant,
}

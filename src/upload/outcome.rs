//! What the upload stage hands to finish: one [`Outcome`] per file (its [`FileResult`]), and
//! the batches' closings, in [`Report`]s.

use std::time::Duration;

use tokio::time::Instant;

use crate::batch::Summary;
use crate::settle::ReadyFile;

/// What became of one file; sent to finish.
#[derive(Debug)]
pub struct Outcome {
    /// The id of the batch the file was placed in.
    pub batch: u64,
    pub file: ReadyFile,
    /// Hex SHA-256, when the file could be read.
    pub sha256: Option<String>,
    /// PUT attempts made.
    pub attempts: u32,
    pub result: FileResult,
    /// Time spent on the file in this stage (hashing, waiting for a slot, uploading).
    pub took: Duration,
}

/// What flows from upload to finish.
#[derive(Debug)]
pub enum Report {
    File(Box<Outcome>),
    /// Forwarded from batch: the batch has all its files (their outcomes may still come).
    BatchClosed(Summary),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FileResult {
    /// The object holds exactly this file. `existed`: it was already there (uploaded before a
    /// crash, or by an earlier attempt whose answer was lost), so nothing was sent again.
    Uploaded {
        key: String,
        etag: Option<String>,
        existed: bool,
    },
    /// This exact file (same place, same content) was uploaded and finished before.
    Duplicate { key: Option<String> },
    /// It can never be uploaded as it is: goes to failed/ with this reason.
    Failed { reason: String },
    /// S3 trouble that may pass (outage, throttling, paused inbox at `once`): the file stays
    /// in the inbox and is tried again later.
    Deferred { reason: String },
    /// Its inbox is paused (bucket, credential or clock problem): the file stays in the inbox and
    /// is offered again at `until`, when one file probes whether the problem is gone.
    Paused { reason: String, until: Instant },
    /// The file changed or vanished while being processed: it goes round again once stable.
    Changed,
    /// Shutdown came first: the file stays in the inbox for the next start.
    Interrupted,
}

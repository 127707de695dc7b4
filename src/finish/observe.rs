//! What finish shows of each outcome and batch (metrics, `/status`, the page), in the ops
//! module's own terms, so that ops needs nothing from the stages.

use crate::ops::{BatchStatus, FileStatus};
use crate::run::Fate;
use crate::upload::{FileResult, Outcome};

use super::report::BatchReport;

/// The file's fate as metrics and `/status` name it: the same five words, and the same
/// decision, as the batch line (`requeued` files go round again and are not counted).
fn outcome_word(fate: Fate) -> &'static str {
    match fate {
        Fate::Uploaded => "uploaded",
        Fate::Duplicate => "duplicate",
        Fate::Failed => "failed",
        Fate::Deferred => "deferred",
        Fate::Requeued => "requeued",
    }
}

pub(super) fn file_status(
    o: &Outcome,
    fate: Fate,
    inbox: &str,
    recorded_key: Option<String>,
) -> FileStatus {
    let (key, reason) = match &o.result {
        FileResult::Uploaded { key, .. } => (Some(key.clone()), None),
        FileResult::Duplicate { key } => (key.clone().or(recorded_key), None),
        FileResult::Failed { reason }
        | FileResult::Deferred { reason }
        | FileResult::Paused { reason, .. } => (None, Some(reason.clone())),
        FileResult::Changed => (None, Some("changed while it was uploaded".to_owned())),
        FileResult::Interrupted => (None, Some("interrupted by shutdown".to_owned())),
    };
    FileStatus {
        inbox: inbox.to_owned(),
        path: crate::telemetry::escape(&o.file.rel),
        outcome: outcome_word(fate),
        key,
        size: o.file.size,
        duration_ms: o.took.as_millis() as u64,
        reason,
    }
}

pub(super) fn batch_status(r: &BatchReport) -> BatchStatus {
    BatchStatus {
        batch: r.summary.id,
        finished_at: crate::ledger::now_rfc3339(),
        duration_ms: r.summary.opened.elapsed().as_millis() as u64,
        uploaded: r.uploaded,
        duplicates: r.duplicates,
        failed: r.failed,
        deferred: r.deferred,
        requeued: r.requeued,
        bytes: r.summary.bytes,
        files: Vec::new(),
    }
}

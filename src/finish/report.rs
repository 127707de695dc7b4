//! Batch reports: one summary per batch, once the batch is closed and every file placed in it
//! has an outcome (the daemon's counterpart of an HTTP 207 multi-status). Pure: the stage
//! feeds it outcomes and closings, in whatever order they come, and logs what it returns.

use std::collections::HashMap;

use crate::batch::Summary;
use crate::upload::FileResult;

/// A finished batch: its totals and what became of its files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BatchReport {
    pub summary: Summary,
    pub uploaded: usize,
    pub duplicates: usize,
    pub failed: usize,
    /// Deferred, or waiting on a paused or stalled inbox: still in the inbox.
    pub deferred: usize,
    /// Changed while processed, or interrupted by shutdown: offered again.
    pub requeued: usize,
}

#[derive(Debug, Default)]
struct Tally {
    closed: Option<Summary>,
    seen: usize,
    uploaded: usize,
    duplicates: usize,
    failed: usize,
    deferred: usize,
    requeued: usize,
}

/// The batches with outcomes still to come.
#[derive(Debug, Default)]
pub struct Reports {
    open: HashMap<u64, Tally>,
}

impl Reports {
    /// One file of batch `batch` has its outcome.
    pub fn outcome(&mut self, batch: u64, result: &FileResult) -> Option<BatchReport> {
        let t = self.open.entry(batch).or_default();
        t.seen += 1;
        match result {
            FileResult::Uploaded { .. } => t.uploaded += 1,
            FileResult::Duplicate { .. } => t.duplicates += 1,
            FileResult::Failed { .. } => t.failed += 1,
            FileResult::Deferred { .. } | FileResult::Paused { .. } => t.deferred += 1,
            FileResult::Changed | FileResult::Interrupted => t.requeued += 1,
        }
        self.complete(batch)
    }

    /// The batch is closed: no more files will be placed in it.
    pub fn closed(&mut self, summary: Summary) -> Option<BatchReport> {
        self.open.entry(summary.id).or_default().closed = Some(summary);
        self.complete(summary.id)
    }

    fn complete(&mut self, batch: u64) -> Option<BatchReport> {
        let t = self.open.get(&batch)?;
        let summary = t.closed.filter(|s| t.seen >= s.files)?;
        let t = self.open.remove(&batch)?;
        Some(BatchReport {
            summary,
            uploaded: t.uploaded,
            duplicates: t.duplicates,
            failed: t.failed,
            deferred: t.deferred,
            requeued: t.requeued,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::time::Instant;

    #[test]
    fn a_report_waits_for_the_closing_and_every_outcome_in_any_order() {
        let summary = Summary {
            id: 3,
            files: 2,
            bytes: 10,
            opened: Instant::now(),
        };
        let mut r = Reports::default();
        let up = FileResult::Uploaded {
            key: "k".into(),
            etag: None,
            existed: false,
        };
        assert_eq!(r.outcome(3, &up), None, "one of two outcomes");
        assert_eq!(r.closed(summary), None, "closed, one outcome missing");
        let report = r.outcome(3, &FileResult::Changed).expect("complete");
        assert_eq!(
            (report.summary, report.uploaded, report.requeued),
            (summary, 1, 1)
        );
        assert!(r.open.is_empty());

        // Outcomes may all come before the closing.
        let one = Summary {
            id: 4,
            files: 1,
            ..summary
        };
        let failed = FileResult::Failed { reason: "x".into() };
        assert_eq!(r.outcome(4, &failed), None);
        assert_eq!(r.closed(one).map(|b| b.failed), Some(1));
    }
}

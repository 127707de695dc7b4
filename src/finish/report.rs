//! Batch reports: one summary per batch, once the batch is closed and every file placed in it
//! has an outcome (the daemon's counterpart of an HTTP 207 multi-status). Pure: the stage
//! feeds it outcomes and closings, in whatever order they come, and logs what it returns.

use std::collections::HashMap;

use crate::batch::Summary;
use crate::run::Fate;

/// A finished batch: its totals and what became of its files (each counted once, by its
/// [`Fate`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BatchReport {
    pub summary: Summary,
    pub uploaded: usize,
    pub duplicates: usize,
    pub failed: usize,
    pub deferred: usize,
    pub requeued: usize,
    /// Some file's fate is news (see [`crate::run::is_news`]); a batch of files that only
    /// wait again as they waited before is reported at debug level.
    pub news: bool,
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
    news: bool,
}

/// The batches with outcomes still to come.
#[derive(Debug, Default)]
pub struct Reports {
    open: HashMap<u64, Tally>,
}

impl Reports {
    /// One file of batch `batch` has its fate; `news` as [`crate::run::Stats::count`] said.
    pub fn outcome(&mut self, batch: u64, fate: Fate, news: bool) -> Option<BatchReport> {
        let t = self.open.entry(batch).or_default();
        t.seen += 1;
        t.news |= news;
        match fate {
            Fate::Uploaded => t.uploaded += 1,
            Fate::Duplicate => t.duplicates += 1,
            Fate::Failed => t.failed += 1,
            Fate::Deferred => t.deferred += 1,
            Fate::Requeued => t.requeued += 1,
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
            news: t.news,
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
        assert_eq!(
            r.outcome(3, Fate::Uploaded, true),
            None,
            "one of two outcomes"
        );
        assert_eq!(r.closed(summary), None, "closed, one outcome missing");
        let report = r.outcome(3, Fate::Requeued, false).expect("complete");
        assert_eq!(
            (
                report.summary,
                report.uploaded,
                report.requeued,
                report.news
            ),
            (summary, 1, 1, true)
        );
        assert!(r.open.is_empty());

        // Outcomes may all come before the closing.
        let one = Summary {
            id: 4,
            files: 1,
            ..summary
        };
        assert_eq!(r.outcome(4, Fate::Failed, true), None);
        assert_eq!(r.closed(one).map(|b| b.failed), Some(1));

        // Files that only wait again make a batch that is no news.
        let two = Summary {
            id: 5,
            files: 2,
            ..summary
        };
        assert_eq!(r.outcome(5, Fate::Deferred, false), None);
        assert_eq!(r.outcome(5, Fate::Deferred, false), None);
        let again = r.closed(two).expect("complete");
        assert_eq!((again.deferred, again.news), (2, false));
    }
}

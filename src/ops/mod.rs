//! Operations: what an administrator (or Prometheus, or systemd) can ask the running daemon.
//! Stages report into one shared [`Ops`]; the HTTP listener ([`http`]) serves it as
//! `/metrics`, `/healthz`, `/status` (JSON) and `/` (a page). Nothing here decides anything
//! about files: it only records and shows.
//!
//! This file holds the record the stages write into; `status` the shapes it is shown in,
//! `health` the stuck-stage check and the systemd watchdog, `journal` the batch journal
//! file, [`metrics`] the Prometheus counters, `page` the HTML page.

mod health;
pub mod http;
mod journal;
pub mod metrics;
mod page;
mod status;

use std::collections::{BTreeMap, VecDeque};
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

use tokio::time::Instant;

use health::stuck_stage;
pub use health::{STUCK_AFTER, watchdog};
use journal::Journal;
pub use metrics::Metrics;
use status::Minute;
pub use status::{BatchStatus, Failure, FileStatus, InboxStatus, S3Status, Status};

/// Batches and failures kept for `/status` and the page.
const RECENT_BATCHES: usize = 20;
const RECENT_FAILURES: usize = 50;
/// The page's chart: one point per minute over the last hour.
const MINUTES: usize = 60;

#[derive(Default)]
struct State {
    inboxes: Vec<InboxStatus>,
    s3_up: bool,
    s3_note: Option<String>,
    /// Files of batches not closed yet, by batch id.
    open: BTreeMap<u64, Vec<FileStatus>>,
    batches: VecDeque<BatchStatus>,
    failures: VecDeque<Failure>,
    /// (minute since the Unix epoch, totals), oldest first.
    minutes: VecDeque<(u64, Minute)>,
    /// Per inbox: since when the oldest file in view waits.
    oldest: Vec<Option<Instant>>,
    /// Per stage: (work waiting, last progress).
    stages: BTreeMap<&'static str, (u64, Instant)>,
}

/// Shared by every stage and the HTTP listener.
pub struct Ops {
    pub metrics: Metrics,
    state: Mutex<State>,
    started_at: String,
    /// `batches.jsonl` in `[log] dir`: every batch report, one JSON line each, kept.
    journal: Option<Mutex<Journal>>,
    /// How long a stage may hold work without finishing any before it counts as stuck.
    stuck_after: Mutex<Duration>,
}

fn now_rfc3339() -> String {
    crate::ledger::now_rfc3339()
}

fn unix_secs() -> f64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

impl Ops {
    /// `journal_dir`: where `batches.jsonl` is kept (`[log] dir`), if anywhere.
    pub fn new(inboxes: &[String], journal_dir: Option<&std::path::Path>) -> Ops {
        let state = State {
            inboxes: inboxes
                .iter()
                .map(|name| InboxStatus {
                    name: name.clone(),
                    ..InboxStatus::default()
                })
                .collect(),
            s3_up: true,
            ..State::default()
        };
        Ops {
            metrics: Metrics::new(inboxes),
            state: Mutex::new(state),
            started_at: now_rfc3339(),
            stuck_after: Mutex::new(STUCK_AFTER),
            journal: journal_dir.map(|d| Mutex::new(Journal::in_dir(d))),
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        // A poisoned lock only means a panic elsewhere; what is recorded stays readable.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A file's outcome, in its batch (shown once the batch closes).
    pub fn file(&self, batch: u64, f: FileStatus) {
        let outcome = match f.outcome {
            "uploaded" | "duplicate" | "failed" | "deferred" => Some(f.outcome),
            // Changed or interrupted files go round again: not an outcome yet.
            _ => None,
        };
        if let Some(outcome) = outcome {
            self.metrics.file(&f.inbox, outcome);
        }
        let mut st = self.state();
        if f.outcome == "uploaded" {
            self.metrics.uploaded(&f.inbox, f.size, unix_secs());
            self.metrics
                .upload_duration
                .observe(f.duration_ms as f64 / 1000.0);
            add_to_minute(&mut st.minutes, |m| {
                m.files += 1;
                m.bytes += f.size;
            });
        }
        if let (Some(reason), "failed") = (&f.reason, f.outcome) {
            st.failures.push_back(Failure {
                at: now_rfc3339(),
                inbox: f.inbox.clone(),
                path: f.path.clone(),
                reason: reason.clone(),
            });
            while st.failures.len() > RECENT_FAILURES {
                st.failures.pop_front();
            }
        }
        st.open.entry(batch).or_default().push(f);
    }

    /// A batch is complete (every file has its outcome).
    pub fn batch(&self, mut b: BatchStatus) {
        self.metrics
            .batch_duration
            .observe(b.duration_ms as f64 / 1000.0);
        let mut st = self.state();
        b.files = st.open.remove(&b.batch).unwrap_or_default();
        if let Some(j) = &self.journal
            && let Ok(line) = serde_json::to_string(&b)
        {
            j.lock().unwrap_or_else(|p| p.into_inner()).append(&line);
        }
        add_to_minute(&mut st.minutes, |m| {
            m.batches += 1;
            m.batch_ms += b.duration_ms;
        });
        st.batches.push_back(b);
        while st.batches.len() > RECENT_BATCHES {
            st.batches.pop_front();
        }
    }

    /// The endpoint answers again (`true`) or an outage began (`false`).
    pub fn s3(&self, up: bool, note: Option<String>) {
        self.metrics.s3_up.set(i64::from(up));
        let mut st = self.state();
        st.s3_up = up;
        st.s3_note = note;
    }

    pub fn paused(&self, inbox: usize, reason: Option<String>) {
        let mut st = self.state();
        if let Some(i) = st.inboxes.get_mut(inbox) {
            let label = metrics::InboxLabel {
                inbox: i.name.clone(),
            };
            self.metrics
                .paused
                .get_or_create(&label)
                .set(i64::from(reason.is_some()));
            i.paused = reason;
        }
    }

    /// The hosts seen on a shared inbox, their heartbeat age and claimed files.
    pub fn hosts(&self, inbox: usize, hosts: Vec<crate::cluster::HostView>) {
        let mut st = self.state();
        if let Some(i) = st.inboxes.get_mut(inbox) {
            for h in &hosts {
                let label = metrics::HostLabels {
                    inbox: i.name.clone(),
                    host: h.host.clone(),
                };
                self.metrics
                    .host_claimed
                    .get_or_create(&label)
                    .set(h.claimed as i64);
                self.metrics
                    .host_heartbeat_age
                    .get_or_create(&label)
                    .set(h.heartbeat_age_secs as i64);
            }
            i.hosts = hosts;
        }
    }

    pub fn stalled(&self, inbox: usize, stalled: bool) {
        if let Some(i) = self.state().inboxes.get_mut(inbox) {
            i.stalled = stalled;
        }
    }

    /// Files seen and not finished, and since when the oldest waits, per inbox.
    pub fn backlog(&self, inbox: usize, files: u64, oldest: Option<Instant>) {
        let mut st = self.state();
        if let Some(i) = st.inboxes.get_mut(inbox) {
            let label = metrics::InboxLabel {
                inbox: i.name.clone(),
            };
            self.metrics.backlog.get_or_create(&label).set(files as i64);
            i.backlog = files;
        }
        if let Some(o) = st.oldest.get_mut(inbox) {
            *o = oldest;
        } else {
            st.oldest.resize(inbox + 1, None);
            st.oldest[inbox] = oldest;
        }
    }

    /// Brings the ages of the oldest waiting files up to `now` (before they are shown).
    fn refresh_ages(&self, now: Instant) {
        let mut st = self.state();
        let ages: Vec<f64> = st
            .oldest
            .iter()
            .map(|o| o.map_or(0.0, |t| now.saturating_duration_since(t).as_secs_f64()))
            .collect();
        for (i, age) in st.inboxes.iter_mut().zip(ages) {
            let label = metrics::InboxLabel {
                inbox: i.name.clone(),
            };
            self.metrics.oldest_pending.get_or_create(&label).set(age);
            i.oldest_pending_seconds = age;
        }
    }

    /// The metrics in the text format, ages and the retry count brought up to `now`.
    pub fn encode_metrics(&self, now: Instant) -> String {
        self.refresh_ages(now);
        // Counted process-wide (the SDK's retries are seen by an interceptor on the client).
        let behind = crate::run::retries().saturating_sub(self.metrics.retries.get());
        self.metrics.retries.inc_by(behind);
        self.metrics.encode()
    }

    pub fn status(&self, now: Instant) -> Status {
        self.refresh_ages(now);
        let after = self.stuck_after();
        let st = self.state();
        let stuck = stuck_stage(&st.stages, now, after);
        Status {
            version: env!("CARGO_PKG_VERSION"),
            started_at: self.started_at.clone(),
            healthy: stuck.is_none(),
            stuck_stage: stuck,
            s3: S3Status {
                up: st.s3_up,
                note: st.s3_note.clone(),
            },
            inboxes: st.inboxes.clone(),
            batches: st.batches.iter().rev().cloned().collect(),
            recent_failures: st.failures.iter().rev().cloned().collect(),
        }
    }

    /// The last hour, one entry per minute (minutes without activity included as zeros).
    fn last_hour(&self) -> Vec<(u64, Minute)> {
        let st = self.state();
        let now = (unix_secs() / 60.0) as u64;
        (now + 1 - MINUTES as u64..=now)
            .map(|m| {
                let found = st.minutes.iter().find(|(at, _)| *at == m);
                (m, found.map(|(_, v)| *v).unwrap_or_default())
            })
            .collect()
    }
}

/// Adds to the current minute's totals (the minute is created, and the oldest dropped, as
/// time goes on).
fn add_to_minute(minutes: &mut VecDeque<(u64, Minute)>, add: impl FnOnce(&mut Minute)) {
    let now = (unix_secs() / 60.0) as u64;
    match minutes.back_mut() {
        Some((m, totals)) if *m == now => add(totals),
        _ => {
            let mut totals = Minute::default();
            add(&mut totals);
            minutes.push_back((now, totals));
            while minutes.len() > MINUTES {
                minutes.pop_front();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(outcome: &'static str, reason: Option<&str>) -> FileStatus {
        FileStatus {
            inbox: "scans".into(),
            path: "a.pdf".into(),
            outcome,
            key: Some("in/a.pdf".into()),
            size: 10,
            duration_ms: 5,
            reason: reason.map(str::to_owned),
        }
    }

    fn batch(n: u64) -> BatchStatus {
        BatchStatus {
            batch: n,
            finished_at: now_rfc3339(),
            duration_ms: 7,
            uploaded: 1,
            duplicates: 0,
            failed: 1,
            deferred: 0,
            requeued: 0,
            bytes: 20,
            files: Vec::new(),
        }
    }

    #[test]
    fn a_batch_carries_its_files_and_failures_are_kept() {
        let ops = Ops::new(&["scans".to_owned()], None);
        ops.file(1, file("uploaded", None));
        ops.file(1, file("failed", Some("too large")));
        ops.batch(batch(1));
        let s = ops.status(Instant::now());
        assert_eq!(s.batches.len(), 1);
        assert_eq!(s.batches[0].files.len(), 2);
        assert_eq!(s.recent_failures.len(), 1);
        assert_eq!(s.recent_failures[0].reason, "too large");
        let text = ops.metrics.encode();
        assert!(text.contains("inboxd_files_total{inbox=\"scans\",outcome=\"failed\"} 1"));
        assert!(text.contains("inboxd_batch_duration_seconds_count 1"));
    }

    #[test]
    fn every_batch_report_is_appended_to_the_journal() {
        let dir = tempfile::tempdir().unwrap();
        let ops = Ops::new(&["scans".to_owned()], Some(dir.path()));
        ops.file(1, file("uploaded", None));
        ops.batch(batch(1));
        ops.batch(batch(2));
        let text = std::fs::read_to_string(dir.path().join("batches.jsonl")).unwrap();
        let lines: Vec<serde_json::Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines.len(), 2);
        assert_eq!(lines[0]["batch"], 1);
        assert_eq!(lines[0]["files"][0]["key"], "in/a.pdf");
        assert_eq!(lines[1]["batch"], 2);
    }

    #[test]
    fn only_the_last_batches_are_kept_newest_first() {
        let ops = Ops::new(&[], None);
        for n in 1..=(RECENT_BATCHES as u64 + 5) {
            ops.batch(batch(n));
        }
        let s = ops.status(Instant::now());
        assert_eq!(s.batches.len(), RECENT_BATCHES);
        assert_eq!(s.batches[0].batch, RECENT_BATCHES as u64 + 5);
    }
}

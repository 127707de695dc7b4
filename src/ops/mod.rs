//! Operations: what an administrator (or Prometheus, or systemd) can ask the running daemon.
//! Stages report into one shared [`Ops`]; the HTTP listener ([`http`]) serves it as
//! `/metrics`, `/healthz`, `/status` (JSON) and `/` (a page). Nothing here decides anything
//! about files: it only records and shows.

pub mod http;
pub mod metrics;
mod page;

use std::collections::{BTreeMap, VecDeque};
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

use serde::Serialize;
use tokio::time::Instant;

pub use metrics::Metrics;

/// Batches and failures kept for `/status` and the page.
const RECENT_BATCHES: usize = 20;
const RECENT_FAILURES: usize = 50;
/// A stage with work waiting that has not finished anything for this long is stuck (unless
/// the systemd watchdog asks for less, see [`Ops::set_stuck_after`]).
pub const STUCK_AFTER: Duration = Duration::from_secs(120);
/// The page's chart: one point per minute over the last hour.
const MINUTES: usize = 60;

/// One file's outcome as `/status` shows it.
#[derive(Debug, Clone, Serialize)]
pub struct FileStatus {
    pub inbox: String,
    pub path: String,
    pub outcome: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    pub size: u64,
    pub duration_ms: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// A finished batch: the daemon's form of the partial-success report.
#[derive(Debug, Clone, Serialize)]
pub struct BatchStatus {
    pub batch: u64,
    pub finished_at: String,
    pub duration_ms: u64,
    pub uploaded: usize,
    pub duplicates: usize,
    pub failed: usize,
    pub deferred: usize,
    pub requeued: usize,
    pub bytes: u64,
    pub files: Vec<FileStatus>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Failure {
    pub at: String,
    pub inbox: String,
    pub path: String,
    pub reason: String,
}

/// One inbox as `/status` shows it.
#[derive(Debug, Clone, Default, Serialize)]
pub struct InboxStatus {
    pub name: String,
    pub backlog: u64,
    pub oldest_pending_seconds: f64,
    /// Why the inbox is paused (bucket or credential problem), if it is.
    pub paused: Option<String>,
    /// Its file system does not answer (see crate::stall).
    pub stalled: bool,
    /// A shared inbox: the hosts seen on it (see crate::cluster).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub hosts: Vec<crate::cluster::HostView>,
}

/// Uploads per minute, for the page's chart.
#[derive(Debug, Clone, Copy, Default, Serialize)]
struct Minute {
    files: u64,
    bytes: u64,
    batches: u64,
    batch_ms: u64,
}

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

/// The batch journal file, opened on first use (append only).
struct Journal {
    path: std::path::PathBuf,
    file: Option<std::fs::File>,
    /// A failure is said once, not once per batch.
    failed: bool,
}

impl Journal {
    fn append(&mut self, line: &str) {
        use std::io::Write as _;
        if self.file.is_none() {
            let opened = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&self.path);
            match opened {
                Ok(f) => self.file = Some(f),
                Err(e) => {
                    if !std::mem::replace(&mut self.failed, true) {
                        tracing::warn!(file = %self.path.display(), error = %e, "cannot write the batch journal; batch reports stay in the log and /status only");
                    }
                    return;
                }
            }
        }
        if let Some(f) = self.file.as_mut()
            && let Err(e) = writeln!(f, "{line}")
        {
            if !std::mem::replace(&mut self.failed, true) {
                tracing::warn!(file = %self.path.display(), error = %e, "cannot write the batch journal; batch reports stay in the log and /status only");
            }
            // Opened again for the next batch (the disk may have room again).
            self.file = None;
        }
    }
}

/// What `/status` returns.
#[derive(Debug, Serialize)]
pub struct Status {
    pub version: &'static str,
    pub started_at: String,
    pub healthy: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stuck_stage: Option<&'static str>,
    pub s3: S3Status,
    pub inboxes: Vec<InboxStatus>,
    pub batches: Vec<BatchStatus>,
    pub recent_failures: Vec<Failure>,
}

#[derive(Debug, Serialize)]
pub struct S3Status {
    pub up: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
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
            journal: journal_dir.map(|d| {
                Mutex::new(Journal {
                    path: d.join("batches.jsonl"),
                    file: None,
                    failed: false,
                })
            }),
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

    /// A stage's work waiting (`waiting`) and whether it just finished something.
    pub fn stage(&self, name: &'static str, waiting: u64, progressed: bool, now: Instant) {
        let mut st = self.state();
        let entry = st.stages.entry(name).or_insert((0, now));
        entry.0 = waiting;
        if progressed || waiting == 0 {
            entry.1 = now;
        }
    }

    /// The first stage that has had work waiting and finished nothing for the stuck time.
    pub fn stuck(&self, now: Instant) -> Option<&'static str> {
        let after = self.stuck_after();
        let st = self.state();
        stuck_stage(&st.stages, now, after)
    }

    pub fn stuck_after(&self) -> Duration {
        *self.stuck_after.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Under a systemd watchdog: stuck after two watchdog periods when that is shorter, so
    /// that systemd restarts a stuck daemon within about three periods.
    pub fn set_stuck_after(&self, d: Duration) {
        *self.stuck_after.lock().unwrap_or_else(|p| p.into_inner()) = d;
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

/// Sends `WATCHDOG=1` twice per watchdog `period` while no stage is stuck; says once when it
/// stops and once when it goes on again.
pub async fn watchdog(
    ops: std::sync::Arc<Ops>,
    period: Duration,
    stop: tokio_util::sync::CancellationToken,
) {
    let mut tick = tokio::time::interval(period / 2);
    let mut withheld = false;
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.cancelled() => return,
        }
        match ops.stuck(Instant::now()) {
            None => {
                if std::mem::replace(&mut withheld, false) {
                    tracing::info!("the pipeline moves again; watchdog pings resumed");
                }
                let _ = sd_notify::notify(&[sd_notify::NotifyState::Watchdog]);
            }
            Some(stage) => {
                if !std::mem::replace(&mut withheld, true) {
                    tracing::error!(stage, stuck_for = ?ops.stuck_after(), "a pipeline stage is stuck; no more watchdog pings, so systemd restarts the daemon");
                }
            }
        }
    }
}

fn stuck_stage(
    stages: &BTreeMap<&'static str, (u64, Instant)>,
    now: Instant,
    after: Duration,
) -> Option<&'static str> {
    stages
        .iter()
        .find(|(_, (waiting, last))| *waiting > 0 && now.saturating_duration_since(*last) >= after)
        .map(|(name, _)| *name)
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

    #[test]
    fn a_stage_with_waiting_work_and_no_progress_is_stuck() {
        let ops = Ops::new(&[], None);
        let t0 = Instant::now();
        ops.stage("upload", 3, true, t0);
        assert_eq!(ops.stuck(t0 + STUCK_AFTER / 2), None);
        assert_eq!(ops.stuck(t0 + STUCK_AFTER), Some("upload"));
        ops.stage("upload", 3, true, t0 + STUCK_AFTER);
        assert_eq!(ops.stuck(t0 + STUCK_AFTER), None, "it moved again");
        ops.stage("upload", 0, false, t0 + STUCK_AFTER);
        assert_eq!(ops.stuck(t0 + STUCK_AFTER * 5), None, "idle is not stuck");
    }
}

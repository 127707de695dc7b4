//! The shapes the operations listener shows: `/status` (JSON, also the page's source) and
//! the page's per-minute chart. Plain data; [`super::Ops`] fills them.

use serde::Serialize;

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
pub(super) struct Minute {
    pub(super) files: u64,
    pub(super) bytes: u64,
    pub(super) batches: u64,
    pub(super) batch_ms: u64,
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

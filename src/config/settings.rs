//! The validated settings: what the rest of the daemon sees once a configuration has been
//! loaded and checked, with the built-in defaults that are named elsewhere (README, `check`).
//! Kept apart from loading so that a reader looking for a key's type or default finds it
//! without the figment and error plumbing around it.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

/// What to do when a *different* file arrives at a key that already holds an object.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OnConflict {
    /// Upload under `name.<sha12>.ext` and keep the existing object (the safe default).
    Rename,
    /// Move the file to failed/ with the reason.
    Fail,
    /// Replace the existing object (explicit opt-in only).
    Overwrite,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum WatchMode {
    /// Polling on network file systems, kernel events elsewhere.
    Auto,
    Events,
    Poll,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Settings {
    /// The file the settings came from (for messages).
    pub file: PathBuf,
    pub state_dir: PathBuf,
    pub s3: S3Settings,
    pub upload: UploadSettings,
    pub batch: BatchSettings,
    pub watch: WatchSettings,
    pub shutdown_grace: Duration,
    /// Finished and failed ledger records older than this are removed; zero keeps them all.
    pub ledger_keep: Duration,
    pub log: LogSettings,
    /// The operations listener (`[http] listen`); `None` when "off".
    pub http_listen: Option<std::net::SocketAddr>,
    /// Several hosts on one share (`[cluster]`, used by inboxes with `shared = true`).
    pub cluster: ClusterSettings,
    pub inboxes: Vec<InboxSettings>,
}

/// Default `[http] listen`: loopback only; the port is inboxd's own.
pub const DEFAULT_HTTP_LISTEN: &str = "127.0.0.1:9478";

#[derive(Debug, Clone, PartialEq)]
pub struct S3Settings {
    pub endpoint: Option<String>,
    /// `None`: the AWS chain (`AWS_REGION`, the profile), else `us-east-1`.
    pub region: Option<String>,
    pub force_path_style: bool,
    pub connect_timeout: Duration,
    /// Certificates (PEM) trusted for the endpoint besides the system's, from `ca_file`;
    /// read and checked when the configuration is loaded.
    pub ca_pem: Option<Vec<u8>>,
    /// How long an S3 request may go without any progress (no byte of its body taken by the
    /// connection, no answer) before it counts as a network failure; see
    /// [`crate::upload::liveness`].
    pub stall_timeout: Duration,
}

#[derive(Debug, Clone, PartialEq)]
pub struct UploadSettings {
    pub concurrency: usize,
    pub max_attempts: u32,
    pub retry_initial: Duration,
    pub retry_max: Duration,
    pub retry_later: Duration,
    /// How long a file that cannot be opened for reading (permission denied) is retried
    /// before it goes to failed/: a chmod or ACL often arrives just after the file.
    pub unreadable_retry_for: Duration,
    pub on_conflict: OnConflict,
    pub multipart_threshold: u64,
    pub part_size: u64,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BatchSettings {
    pub max_files: usize,
    pub max_bytes: u64,
    pub window: Duration,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct WatchSettings {
    pub rescan: Duration,
    pub poll_interval: Duration,
}

#[derive(Debug, Clone, PartialEq)]
pub struct LogSettings {
    pub format: LogFormat,
    pub dir: Option<PathBuf>,
    pub keep: usize,
    pub level: String,
}

/// `[cluster]`: this host's identity among the hosts that share an inbox.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterSettings {
    /// Unique among the hosts on one share; names this host's claim folder and heartbeat.
    pub host_id: String,
    /// A host whose heartbeat has not changed for this long is taken for dead, and its
    /// claimed files are taken over.
    pub claim_timeout: Duration,
}

/// Default `[cluster] claim_timeout`.
pub const DEFAULT_CLAIM_TIMEOUT: Duration = Duration::from_secs(120);

#[derive(Debug, Clone, PartialEq)]
pub struct InboxSettings {
    pub name: String,
    pub path: PathBuf,
    pub done_dir: PathBuf,
    pub failed_dir: PathBuf,
    pub bucket: String,
    pub prefix: String,
    pub settle: Duration,
    pub watch: WatchMode,
    /// Extra ignore globs on top of the built-in ones.
    pub ignore: Vec<String>,
    /// How long a file-system call on this inbox may go without progress before the inbox
    /// counts as stalled (a hung network share); see [`crate::stall`].
    pub fs_timeout: Duration,
    /// Files larger than this go to failed/ unread (`None`: no limit but S3's 5 TiB).
    pub max_file_size: Option<u64>,
    /// Key template and object options (`key`, `content_type`, `metadata`, `tags`,
    /// `storage_class`, `sse`, `sse_kms_key_id`, `cache_control`).
    pub object: crate::upload::object::ObjectSettings,
    /// Watched by inboxd on several hosts at once: each file is claimed by one of them
    /// before any work ([`crate::cluster`]).
    pub shared: bool,
    /// Whether a file of a known format (PDF, ZIP, PNG, JPEG, TIFF, GIF) must also be whole
    /// by its own structure before it is taken; see [`crate::settle::format`].
    pub check_format: bool,
    /// How long a file may stay incomplete by its format before it goes to failed/.
    pub incomplete_after: Duration,
}

pub const MIB: u64 = 1024 * 1024;

/// Default `inbox.incomplete_after`: a scanner that pauses between pages, or a copy that
/// stalls and resumes, is back long before an hour; a file still cut after that was abandoned.
pub const DEFAULT_INCOMPLETE_AFTER: Duration = Duration::from_secs(3600);

/// Default `inbox.fs_timeout`: far longer than any healthy disk or share needs for one call
/// (or between two chunks of a long read), short enough that a hung share is noticed soon.
pub const DEFAULT_FS_TIMEOUT: Duration = Duration::from_secs(30);

/// Default `s3.stall_timeout`. A healthy S3 server answers a request within a second or two
/// of receiving its body, and takes more of a body every few milliseconds; 30 s without any of
/// that is far outside normal operation, even on a loaded server or a slow uplink (where the
/// only unseen stretch is the last bytes that wait in the kernel's send buffer), and short
/// enough that a hung server costs half a minute, not forever.
pub const DEFAULT_STALL_TIMEOUT: Duration = Duration::from_secs(30);

/// Default `upload.concurrency`. 32: a full default batch (20 files) goes out in one round
/// trip, with room for the parts of a large file beside it. Uploads wait on the network, not
/// on the CPU, so more slots cost little.
pub const DEFAULT_CONCURRENCY: usize = 32;

impl fmt::Display for OnConflict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            OnConflict::Rename => "rename",
            OnConflict::Fail => "fail",
            OnConflict::Overwrite => "overwrite",
        })
    }
}

//! The raw shape of the file, as figment extracts it. Unknown keys are errors everywhere;
//! every value is optional here, and [`super::validate`] applies defaults and checks.

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use super::{LogFormat, OnConflict, WatchMode, units};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawConfig {
    pub(super) state_dir: Option<PathBuf>,
    #[serde(default)]
    pub(super) s3: RawS3,
    #[serde(default)]
    pub(super) upload: RawUpload,
    #[serde(default)]
    pub(super) batch: RawBatch,
    #[serde(default)]
    pub(super) watch: RawWatch,
    #[serde(default)]
    pub(super) shutdown: RawShutdown,
    #[serde(default)]
    pub(super) ledger: RawLedger,
    #[serde(default)]
    pub(super) log: RawLog,
    #[serde(default)]
    pub(super) http: RawHttp,
    #[serde(default)]
    pub(super) cluster: RawCluster,
    #[serde(default)]
    pub(super) inbox: Vec<RawInbox>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawS3 {
    pub(super) endpoint: Option<String>,
    pub(super) region: Option<String>,
    pub(super) force_path_style: Option<bool>,
    #[serde(default, deserialize_with = "units::duration")]
    pub(super) connect_timeout: Option<Duration>,
    pub(super) ca_file: Option<std::path::PathBuf>,
    #[serde(default, deserialize_with = "units::duration")]
    pub(super) stall_timeout: Option<Duration>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawUpload {
    pub(super) concurrency: Option<usize>,
    pub(super) max_attempts: Option<u32>,
    #[serde(default, deserialize_with = "units::duration")]
    pub(super) retry_initial: Option<Duration>,
    #[serde(default, deserialize_with = "units::duration")]
    pub(super) retry_max: Option<Duration>,
    #[serde(default, deserialize_with = "units::duration")]
    pub(super) retry_later: Option<Duration>,
    #[serde(default, deserialize_with = "units::duration")]
    pub(super) unreadable_retry_for: Option<Duration>,
    pub(super) on_conflict: Option<OnConflict>,
    #[serde(default, deserialize_with = "units::size")]
    pub(super) multipart_threshold: Option<u64>,
    #[serde(default, deserialize_with = "units::size")]
    pub(super) part_size: Option<u64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawBatch {
    pub(super) max_files: Option<usize>,
    #[serde(default, deserialize_with = "units::size")]
    pub(super) max_bytes: Option<u64>,
    #[serde(default, deserialize_with = "units::duration")]
    pub(super) window: Option<Duration>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawWatch {
    #[serde(default, deserialize_with = "units::duration")]
    pub(super) rescan: Option<Duration>,
    #[serde(default, deserialize_with = "units::duration")]
    pub(super) poll_interval: Option<Duration>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawLedger {
    #[serde(default, deserialize_with = "units::duration")]
    pub(super) keep: Option<Duration>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawShutdown {
    #[serde(default, deserialize_with = "units::duration")]
    pub(super) grace: Option<Duration>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawLog {
    pub(super) format: Option<LogFormat>,
    pub(super) dir: Option<PathBuf>,
    pub(super) keep: Option<usize>,
    pub(super) level: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawCluster {
    pub(super) host_id: Option<String>,
    #[serde(default, deserialize_with = "units::duration")]
    pub(super) claim_timeout: Option<Duration>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawHttp {
    pub(super) listen: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawInbox {
    pub(super) name: Option<String>,
    pub(super) path: Option<PathBuf>,
    pub(super) done_dir: Option<PathBuf>,
    pub(super) failed_dir: Option<PathBuf>,
    pub(super) bucket: Option<String>,
    pub(super) prefix: Option<String>,
    #[serde(default, deserialize_with = "units::duration")]
    pub(super) settle: Option<Duration>,
    pub(super) watch: Option<WatchMode>,
    pub(super) ignore: Option<Vec<String>>,
    #[serde(default, deserialize_with = "units::duration")]
    pub(super) fs_timeout: Option<Duration>,
    #[serde(default, deserialize_with = "units::size")]
    pub(super) max_file_size: Option<u64>,
    pub(super) key: Option<String>,
    pub(super) content_type: Option<String>,
    pub(super) metadata: Option<std::collections::BTreeMap<String, String>>,
    pub(super) tags: Option<std::collections::BTreeMap<String, String>>,
    pub(super) storage_class: Option<String>,
    pub(super) sse: Option<String>,
    pub(super) sse_kms_key_id: Option<String>,
    pub(super) cache_control: Option<String>,
    pub(super) shared: Option<bool>,
    pub(super) check_format: Option<bool>,
    #[serde(default, deserialize_with = "units::duration")]
    pub(super) incomplete_after: Option<Duration>,
}

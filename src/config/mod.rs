//! Configuration: built-in defaults → one TOML file → `INBOXD_*` environment variables,
//! extracted with figment into raw structs, then validated into [`Settings`].
//!
//! Every error names the key and where the bad value came from (the file, or the exact
//! environment variable), because the person reading it is a sysadmin looking at a failed
//! `systemctl start`.

use std::fmt;
use std::path::{Component, Path, PathBuf};
use std::time::Duration;

use figment::Figment;
use figment::providers::{Env, Format, Toml};
use serde::Deserialize;

mod raw;
mod validate;
use raw::*;
use validate::Ctx;

/// Environment variables with our prefix that are not configuration keys.
const ENV_NOT_KEYS: &[&str] = &["CONFIG", "FAILPOINT", "STALL_FS"];
const ENV_PREFIX: &str = "INBOXD_";

/// A configuration problem; the binary exits 2 on any of these.
#[derive(Debug, thiserror::Error)]
#[error("config error in {source_desc}: {message}")]
pub struct ConfigError {
    /// "/etc/inboxd/inboxd.toml" or "environment variable INBOXD_X__Y".
    pub source_desc: String,
    pub message: String,
}

impl ConfigError {
    fn in_file(file: &Path, message: impl Into<String>) -> Self {
        ConfigError {
            source_desc: file.display().to_string(),
            message: message.into(),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Validated settings: what the rest of the daemon sees.

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
}

pub const MIB: u64 = 1024 * 1024;

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

impl Settings {
    /// Loads `file`, applies `INBOXD_*` overrides from the environment, validates.
    pub fn load(file: &Path) -> Result<Settings, ConfigError> {
        if !file.is_file() {
            let why = if file.exists() {
                "not a regular file"
            } else {
                "file not found"
            };
            return Err(ConfigError::in_file(file, why));
        }
        let figment = Figment::new()
            // file_exact: a missing file must be an error, never a silently empty config.
            .merge(Toml::file_exact(file))
            .merge(
                Env::prefixed(ENV_PREFIX)
                    .ignore(ENV_NOT_KEYS)
                    // [[inbox]] blocks cannot be addressed by env; a stray INBOXD_INBOX would
                    // only produce a confusing type error, so it is refused by name below.
                    .split("__"),
            );
        let raw: RawConfig = figment.extract().map_err(|e| describe_figment(file, e))?;
        Self::validate(file, raw, Some(&figment))
    }

    fn validate(
        file: &Path,
        raw: RawConfig,
        figment: Option<&Figment>,
    ) -> Result<Settings, ConfigError> {
        let ctx = Ctx::new(file, figment);
        let state_dir = ctx.resolve(
            raw.state_dir
                .as_deref()
                .unwrap_or(Path::new("/var/lib/inboxd")),
        );
        // In the order of the file's sections, so the first error reported is the first one
        // a reader meets.
        let s3 = ctx.s3(raw.s3)?;
        let upload = ctx.upload(raw.upload)?;
        let batch = ctx.batch(raw.batch)?;
        let watch = ctx.watch(raw.watch)?;
        let log = ctx.log(raw.log)?;
        let http_listen = ctx.http(raw.http)?;
        let inboxes = ctx.inboxes(raw.inbox)?;
        ctx.check_nesting(&inboxes, &state_dir)?;
        Ok(Settings {
            file: file.to_path_buf(),
            state_dir,
            s3,
            upload,
            batch,
            watch,
            shutdown_grace: raw.shutdown.grace.unwrap_or(Duration::from_secs(25)),
            ledger_keep: raw
                .ledger
                .keep
                .unwrap_or(Duration::from_secs(90 * 24 * 3600)),
            log,
            http_listen,
            inboxes,
        })
    }

    /// Checks what can only be checked on this machine: no inbox path names something that
    /// is not a folder. A missing inbox folder is not an error here (a share that is not
    /// mounted yet): the daemon reports it and takes the inbox up when the folder appears.
    pub fn check_paths(&self) -> Result<(), ConfigError> {
        for (i, inbox) in self.inboxes.iter().enumerate() {
            if inbox.path.exists() && !inbox.path.is_dir() {
                return Err(ConfigError::in_file(
                    &self.file,
                    format!(
                        "key `inbox[{i}].path`: {} is not a folder",
                        inbox.path.display()
                    ),
                ));
            }
        }
        Ok(())
    }
}

/// Turns figment's error into one naming the key and the file or environment variable.
fn describe_figment(file: &Path, error: figment::Error) -> ConfigError {
    let mut source_desc = file.display().to_string();
    let mut parts = Vec::new();
    for e in error {
        let from_env = e
            .metadata
            .as_ref()
            .is_some_and(|m| m.name.contains("environment"));
        let key = key_name(&e.path);
        if from_env {
            source_desc = format!(
                "environment variable {}",
                env_var_name(e.path.iter().map(String::as_str))
            );
        }
        let kind = e.kind.to_string();
        if key.is_empty() {
            parts.push(kind);
        } else {
            parts.push(format!("key `{key}`: {kind}"));
        }
    }
    ConfigError {
        source_desc,
        message: parts.join("; "),
    }
}

/// `["inbox", "0", "bucket"]` → `inbox[0].bucket`, the way the rest of our messages spell it.
fn key_name(path: &[String]) -> String {
    let mut out = String::new();
    for part in path {
        if !out.is_empty() && part.chars().all(|c| c.is_ascii_digit()) {
            out.push_str(&format!("[{part}]"));
        } else {
            if !out.is_empty() {
                out.push('.');
            }
            out.push_str(part);
        }
    }
    out
}

/// `upload.concurrency` → `INBOXD_UPLOAD__CONCURRENCY`.
fn env_var_name<'a>(parts: impl Iterator<Item = &'a str>) -> String {
    let parts: Vec<String> = parts.map(str::to_uppercase).collect();
    format!("{ENV_PREFIX}{}", parts.join("__"))
}

/// Makes `p` absolute and removes `.`/`..` lexically (without touching the disk, since done/
/// may not exist yet), so "inside the inbox" checks compare like with like.
fn absolute(p: &Path) -> PathBuf {
    let joined = if p.is_absolute() {
        p.to_path_buf()
    } else {
        std::env::current_dir()
            .map(|d| d.join(p))
            .unwrap_or_else(|_| p.to_path_buf())
    };
    let mut out = PathBuf::new();
    for c in joined.components() {
        match c {
            Component::CurDir => {}
            Component::ParentDir => {
                out.pop();
            }
            other => out.push(other),
        }
    }
    // Resolve symlinks where the folder exists, so a symlinked inbox compares correctly.
    std::fs::canonicalize(&out).unwrap_or(out)
}

impl fmt::Display for OnConflict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            OnConflict::Rename => "rename",
            OnConflict::Fail => "fail",
            OnConflict::Overwrite => "overwrite",
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load_str(toml: &str) -> Result<Settings, ConfigError> {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("in")).unwrap();
        let f = dir.path().join("c.toml");
        std::fs::write(&f, toml).unwrap();
        Settings::load(&f)
    }

    const GOOD: &str = r#"
state_dir = "state"
[[inbox]]
name = "a"
path = "in"
done_dir = "done"
failed_dir = "failed"
bucket = "b"
"#;

    #[test]
    fn defaults_and_relative_paths() {
        let s = load_str(GOOD).unwrap();
        assert_eq!(s.upload.concurrency, 32);
        assert_eq!(s.batch.max_files, 20);
        assert_eq!(s.batch.max_bytes, 1024 * MIB);
        assert_eq!(s.batch.window, Duration::from_millis(500));
        assert_eq!(s.inboxes[0].settle, Duration::from_secs(2));
        assert!(s.state_dir.is_absolute());
        assert!(s.inboxes[0].done_dir.ends_with("done"));
        assert_eq!(s.upload.on_conflict, OnConflict::Rename);
        assert!(!s.s3.force_path_style);
        assert_eq!(s.s3.stall_timeout, Duration::from_secs(30));
    }

    #[test]
    fn sizes_are_binary_when_asked() {
        let s = load_str(&format!("{GOOD}\n[batch]\nmax_bytes = \"8 MiB\"\n")).unwrap();
        assert_eq!(s.batch.max_bytes, 8 * MIB);
    }

    #[test]
    fn errors_name_the_key() {
        let e = load_str(&format!("{GOOD}\n[upload]\nconcurrency = 0\n")).unwrap_err();
        assert!(e.to_string().contains("upload.concurrency"), "{e}");
        let e = load_str(&format!("{GOOD}\n[upload]\nconcurency = 3\n")).unwrap_err();
        assert!(e.to_string().contains("concurency"), "{e}");
        let e = load_str(&format!("{GOOD}\n[s3]\nstall_timeout = \"500ms\"\n")).unwrap_err();
        assert!(e.to_string().contains("s3.stall_timeout"), "{e}");
        let e = load_str(&format!("{GOOD}\n[batch]\nwindow = \"soon\"\n")).unwrap_err();
        assert!(e.to_string().contains("batch.window"), "{e}");
        let e = load_str(&GOOD.replace("bucket = \"b\"", "")).unwrap_err();
        assert!(e.to_string().contains("inbox[0].bucket"), "{e}");
        let e = load_str(&GOOD.replace("\"done\"", "\"in/done\"")).unwrap_err();
        assert!(e.to_string().contains("inbox[0].done_dir"), "{e}");
        let e =
            load_str(&GOOD.replace("bucket = \"b\"", "bucket = \"b\"\nbukcet = 1")).unwrap_err();
        assert!(e.to_string().contains("inbox[0]"), "{e}");
    }

    #[test]
    fn a_prefix_must_end_with_a_slash() {
        let with = |p: &str| {
            load_str(&GOOD.replace("bucket = \"b\"", &format!("bucket = \"b\"\nprefix = {p:?}")))
        };
        let e = with("team").unwrap_err();
        assert!(e.to_string().contains("inbox[0].prefix"), "{e}");
        assert!(e.to_string().contains("\"team/\""), "{e}");
        assert_eq!(with("team/").unwrap().inboxes[0].prefix, "team/");
        assert_eq!(with("").unwrap().inboxes[0].prefix, "");
    }

    #[test]
    fn key_and_env_names() {
        let path: Vec<String> = ["inbox", "0", "bucket"].map(String::from).to_vec();
        assert_eq!(key_name(&path), "inbox[0].bucket");
        assert_eq!(
            env_var_name("upload.concurrency".split('.')),
            "INBOXD_UPLOAD__CONCURRENCY"
        );
    }
}

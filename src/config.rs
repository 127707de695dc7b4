//! Configuration: built-in defaults → one TOML file → `INBOXD_*` environment variables,
//! extracted with figment into raw structs, then validated into [`Settings`].
//!
//! Every error names the key and where the bad value came from (the file, or the exact
//! environment variable), because the person reading it is a sysadmin looking at a failed
//! `systemctl start`.

use std::collections::HashSet;
use std::fmt;
use std::path::{Component, Path, PathBuf};
use std::time::Duration;

use bytesize::ByteSize;
use figment::Figment;
use figment::providers::{Env, Format, Toml};
use serde::Deserialize;

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
// Raw shape of the file. Unknown keys are errors everywhere.

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    state_dir: Option<PathBuf>,
    #[serde(default)]
    s3: RawS3,
    #[serde(default)]
    upload: RawUpload,
    #[serde(default)]
    batch: RawBatch,
    #[serde(default)]
    watch: RawWatch,
    #[serde(default)]
    shutdown: RawShutdown,
    #[serde(default)]
    ledger: RawLedger,
    #[serde(default)]
    log: RawLog,
    #[serde(default)]
    inbox: Vec<RawInbox>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawS3 {
    endpoint: Option<String>,
    region: Option<String>,
    force_path_style: Option<bool>,
    #[serde(default, with = "humantime_serde")]
    connect_timeout: Option<Duration>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawUpload {
    concurrency: Option<usize>,
    max_attempts: Option<u32>,
    #[serde(default, with = "humantime_serde")]
    retry_initial: Option<Duration>,
    #[serde(default, with = "humantime_serde")]
    retry_max: Option<Duration>,
    #[serde(default, with = "humantime_serde")]
    retry_later: Option<Duration>,
    #[serde(default, with = "humantime_serde")]
    unreadable_retry_for: Option<Duration>,
    on_conflict: Option<OnConflict>,
    multipart_threshold: Option<ByteSize>,
    part_size: Option<ByteSize>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawBatch {
    max_files: Option<usize>,
    max_bytes: Option<ByteSize>,
    #[serde(default, with = "humantime_serde")]
    window: Option<Duration>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawWatch {
    #[serde(default, with = "humantime_serde")]
    rescan: Option<Duration>,
    #[serde(default, with = "humantime_serde")]
    poll_interval: Option<Duration>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLedger {
    #[serde(default, with = "humantime_serde")]
    keep: Option<Duration>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawShutdown {
    #[serde(default, with = "humantime_serde")]
    grace: Option<Duration>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLog {
    format: Option<LogFormat>,
    dir: Option<PathBuf>,
    keep: Option<usize>,
    level: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawInbox {
    name: Option<String>,
    path: Option<PathBuf>,
    done_dir: Option<PathBuf>,
    failed_dir: Option<PathBuf>,
    bucket: Option<String>,
    prefix: Option<String>,
    #[serde(default, with = "humantime_serde")]
    settle: Option<Duration>,
    watch: Option<WatchMode>,
    ignore: Option<Vec<String>>,
    #[serde(default, with = "humantime_serde")]
    fs_timeout: Option<Duration>,
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
    pub inboxes: Vec<InboxSettings>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct S3Settings {
    pub endpoint: Option<String>,
    pub region: String,
    pub force_path_style: bool,
    pub connect_timeout: Duration,
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

// ---------------------------------------------------------------------------------------------
// Validation: raw → Settings, one function per section. Each error names the key and where the
// bad value came from.

struct Ctx<'a> {
    file: &'a Path,
    figment: Option<&'a Figment>,
    /// The config file's folder: relative paths in the file are relative to it.
    base: PathBuf,
}

impl<'a> Ctx<'a> {
    fn new(file: &'a Path, figment: Option<&'a Figment>) -> Self {
        let base = file
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .map_or_else(|| PathBuf::from("."), Path::to_path_buf);
        Ctx {
            file,
            figment,
            base,
        }
    }

    /// An error about `key`, naming the environment variable when the value came from one.
    fn err(&self, key: &str, msg: &str) -> ConfigError {
        let from_env = self
            .figment
            .and_then(|f| f.find_metadata(key))
            .is_some_and(|m| m.name.contains("environment"));
        if from_env {
            ConfigError {
                source_desc: format!("environment variable {}", env_var_name(key.split('.'))),
                message: format!("key `{key}`: {msg}"),
            }
        } else {
            ConfigError::in_file(self.file, format!("key `{key}`: {msg}"))
        }
    }

    fn resolve(&self, p: &Path) -> PathBuf {
        absolute(&self.base.join(p))
    }

    fn s3(&self, raw: RawS3) -> Result<S3Settings, ConfigError> {
        let force_path_style = raw.force_path_style.unwrap_or(raw.endpoint.is_some());
        if let Some(ep) = &raw.endpoint
            && !(ep.starts_with("http://") || ep.starts_with("https://"))
        {
            return Err(self.err("s3.endpoint", "must start with http:// or https://"));
        }
        Ok(S3Settings {
            endpoint: raw.endpoint,
            region: raw.region.unwrap_or_else(|| "us-east-1".into()),
            force_path_style,
            connect_timeout: raw.connect_timeout.unwrap_or(Duration::from_secs(5)),
        })
    }

    fn upload(&self, u: RawUpload) -> Result<UploadSettings, ConfigError> {
        let concurrency = u.concurrency.unwrap_or(DEFAULT_CONCURRENCY);
        if concurrency == 0 {
            return Err(self.err("upload.concurrency", "must be at least 1"));
        }
        let max_attempts = u.max_attempts.unwrap_or(5);
        if max_attempts == 0 {
            return Err(self.err("upload.max_attempts", "must be at least 1"));
        }
        let retry_initial = u.retry_initial.unwrap_or(Duration::from_millis(500));
        let retry_max = u.retry_max.unwrap_or(Duration::from_secs(30));
        if retry_max < retry_initial {
            return Err(self.err(
                "upload.retry_max",
                "must not be shorter than upload.retry_initial",
            ));
        }
        let multipart_threshold = u.multipart_threshold.map_or(64 * MIB, |b| b.as_u64());
        let part_size = u.part_size.map_or(16 * MIB, |b| b.as_u64());
        if part_size < 5 * MIB {
            return Err(self.err(
                "upload.part_size",
                "must be at least 5 MiB (the S3 minimum part size)",
            ));
        }
        if part_size > 5 * 1024 * MIB {
            return Err(self.err(
                "upload.part_size",
                "must be at most 5 GiB (the S3 maximum part size)",
            ));
        }
        if multipart_threshold > 5 * 1024 * MIB {
            return Err(self.err(
                "upload.multipart_threshold",
                "must be at most 5 GiB (the S3 limit for a single PUT)",
            ));
        }
        if multipart_threshold < 5 * MIB {
            return Err(self.err("upload.multipart_threshold", "must be at least 5 MiB"));
        }
        Ok(UploadSettings {
            concurrency,
            max_attempts,
            retry_initial,
            retry_max,
            retry_later: u.retry_later.unwrap_or(Duration::from_secs(60)),
            unreadable_retry_for: u.unreadable_retry_for.unwrap_or(Duration::from_secs(300)),
            on_conflict: u.on_conflict.unwrap_or(OnConflict::Rename),
            multipart_threshold,
            part_size,
        })
    }

    fn batch(&self, raw: RawBatch) -> Result<BatchSettings, ConfigError> {
        let batch = BatchSettings {
            max_files: raw.max_files.unwrap_or(20),
            max_bytes: raw.max_bytes.map_or(1024 * MIB, |b| b.as_u64()),
            window: raw.window.unwrap_or(Duration::from_millis(500)),
        };
        if batch.max_files == 0 {
            return Err(self.err("batch.max_files", "must be at least 1"));
        }
        if batch.max_bytes == 0 {
            return Err(self.err("batch.max_bytes", "must be more than 0 bytes"));
        }
        Ok(batch)
    }

    fn watch(&self, raw: RawWatch) -> Result<WatchSettings, ConfigError> {
        let watch = WatchSettings {
            rescan: raw.rescan.unwrap_or(Duration::from_secs(60)),
            poll_interval: raw.poll_interval.unwrap_or(Duration::from_secs(10)),
        };
        if watch.rescan.is_zero() {
            return Err(self.err("watch.rescan", "must be longer than 0s"));
        }
        if watch.poll_interval.is_zero() {
            return Err(self.err("watch.poll_interval", "must be longer than 0s"));
        }
        Ok(watch)
    }

    fn log(&self, raw: RawLog) -> Result<LogSettings, ConfigError> {
        let log = LogSettings {
            format: raw.format.unwrap_or(LogFormat::Text),
            dir: raw.dir.as_deref().map(|d| self.resolve(d)),
            keep: raw.keep.unwrap_or(14),
            level: raw.level.unwrap_or_else(|| "info".into()),
        };
        if let Err(e) = tracing_subscriber::EnvFilter::try_new(&log.level) {
            return Err(self.err("log.level", &format!("not a valid filter: {e}")));
        }
        Ok(log)
    }

    fn inboxes(&self, raw: Vec<RawInbox>) -> Result<Vec<InboxSettings>, ConfigError> {
        if raw.is_empty() {
            return Err(self.err(
                "inbox",
                "no [[inbox]] is configured; at least one is needed",
            ));
        }
        let mut inboxes: Vec<InboxSettings> = Vec::new();
        let mut names = HashSet::new();
        for (i, ri) in raw.into_iter().enumerate() {
            let inbox = self.inbox(i, ri)?;
            if !names.insert(inbox.name.clone()) {
                return Err(self.err(
                    &format!("inbox[{i}].name"),
                    &format!("inbox name {:?} is used twice", inbox.name),
                ));
            }
            inboxes.push(inbox);
        }
        Ok(inboxes)
    }

    fn inbox(&self, i: usize, ri: RawInbox) -> Result<InboxSettings, ConfigError> {
        let key = |field: &str| format!("inbox[{i}].{field}");
        let required = |v: Option<PathBuf>, field: &str| {
            v.map(|p| self.resolve(&p))
                .ok_or_else(|| self.err(&key(field), "is missing"))
        };
        let name = ri
            .name
            .ok_or_else(|| self.err(&key("name"), "is missing"))?;
        if name.is_empty() {
            return Err(self.err(&key("name"), "must not be empty"));
        }
        let path = required(ri.path, "path")?;
        let done_dir = required(ri.done_dir, "done_dir")?;
        let failed_dir = required(ri.failed_dir, "failed_dir")?;
        let bucket = ri
            .bucket
            .ok_or_else(|| self.err(&key("bucket"), "is missing"))?;
        if bucket.is_empty() {
            return Err(self.err(&key("bucket"), "must not be empty"));
        }
        let prefix = ri.prefix.unwrap_or_default();
        if prefix.starts_with('/') {
            return Err(self.err(
                &key("prefix"),
                "must not start with '/' (S3 keys have no leading slash)",
            ));
        }
        // Without the closing '/', one inbox could write into another's key space:
        // prefix "team" and a folder "-hr" in its inbox give the key "team-hr/x".
        if !prefix.is_empty() && !prefix.ends_with('/') {
            return Err(self.err(
                &key("prefix"),
                &format!("must end with '/' (for example {:?})", format!("{prefix}/")),
            ));
        }
        let fs_timeout = ri.fs_timeout.unwrap_or(DEFAULT_FS_TIMEOUT);
        if fs_timeout.is_zero() {
            return Err(self.err(&key("fs_timeout"), "must be longer than 0s"));
        }
        let ignore = ri.ignore.unwrap_or_default();
        for pat in &ignore {
            if let Err(e) = globset::Glob::new(pat) {
                return Err(self.err(&key("ignore"), &format!("bad glob {pat:?}: {e}")));
            }
        }
        Ok(InboxSettings {
            name,
            path,
            done_dir,
            failed_dir,
            bucket,
            prefix,
            settle: ri.settle.unwrap_or(Duration::from_secs(2)),
            watch: ri.watch.unwrap_or(WatchMode::Auto),
            ignore,
            fs_timeout,
        })
    }

    /// Where files go must never be watched as an inbox, or a moved file would come round
    /// again; and one inbox inside another would see every file twice.
    fn check_nesting(
        &self,
        inboxes: &[InboxSettings],
        state_dir: &Path,
    ) -> Result<(), ConfigError> {
        for (i, a) in inboxes.iter().enumerate() {
            for (j, b) in inboxes.iter().enumerate() {
                for (field, dir) in [("done_dir", &a.done_dir), ("failed_dir", &a.failed_dir)] {
                    if dir.starts_with(&b.path) {
                        return Err(self.err(
                            &format!("inbox[{i}].{field}"),
                            &format!(
                                "{} is inside the inbox {} ({}); it must be outside every inbox",
                                dir.display(),
                                b.name,
                                b.path.display()
                            ),
                        ));
                    }
                }
                if i != j && a.path.starts_with(&b.path) {
                    return Err(self.err(
                        &format!("inbox[{i}].path"),
                        &format!(
                            "{} is inside the inbox {} ({})",
                            a.path.display(),
                            b.name,
                            b.path.display()
                        ),
                    ));
                }
            }
            if state_dir.starts_with(&a.path) {
                return Err(self.err("state_dir", "must not be inside an inbox"));
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

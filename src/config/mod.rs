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

mod errors;
mod raw;
mod units;
mod validate;
use errors::{describe_figment, env_var_name};
use raw::*;
use validate::Ctx;

/// Environment variables with our prefix that are not configuration keys.
const ENV_NOT_KEYS: &[&str] = &["CONFIG", "FAILPOINT", "STALL_FS"];
const ENV_PREFIX: &str = "INBOXD_";

/// A configuration problem; the binary exits 2 on any of these.
#[derive(Debug, thiserror::Error)]
#[error("config error in {source_desc}{}: {message}", line.map(|l| format!(", line {l}")).unwrap_or_default())]
pub struct ConfigError {
    /// "/etc/inboxd/inboxd.toml" or "environment variable INBOXD_X__Y".
    pub source_desc: String,
    /// The line of the file the problem is on, when known.
    pub line: Option<usize>,
    pub message: String,
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

impl Settings {
    /// Loads `file`, applies `INBOXD_*` overrides from the environment, validates.
    pub fn load(file: &Path) -> Result<Settings, ConfigError> {
        if !file.is_file() {
            let why = if file.exists() {
                "not a regular file"
            } else {
                "file not found"
            };
            return Err(ConfigError::in_file(file, "", why));
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
        let cluster = ctx.cluster(raw.cluster)?;
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
            cluster,
            inboxes,
        })
    }

    /// What differs from `self` in `new`, as keys (`upload.concurrency`) and inboxes (`inbox
    /// lab added`), for the line that says what a reload changed.
    pub fn changes(&self, new: &Settings) -> Vec<String> {
        let mut out = Vec::new();
        // Each named key that differs; a section that differs in a key not named here is
        // still reported, by its name.
        macro_rules! keys {
            ($section:literal, $a:expr, $b:expr, [$($field:ident),*]) => {{
                let before = out.len();
                $(
                    if $a.$field != $b.$field {
                        out.push(format!(concat!($section, ".{}"), stringify!($field)));
                    }
                )*
                if out.len() == before && $a != $b {
                    out.push(format!("[{}]", $section));
                }
            }};
        }
        if self.state_dir != new.state_dir {
            out.push("state_dir".to_owned());
        }
        keys!(
            "s3",
            self.s3,
            new.s3,
            [endpoint, region, force_path_style, connect_timeout, ca_pem]
        );
        keys!(
            "upload",
            self.upload,
            new.upload,
            [
                concurrency,
                max_attempts,
                retry_initial,
                retry_max,
                retry_later,
                unreadable_retry_for,
                on_conflict,
                multipart_threshold,
                part_size
            ]
        );
        keys!(
            "batch",
            self.batch,
            new.batch,
            [max_files, max_bytes, window]
        );
        keys!("watch", self.watch, new.watch, [rescan, poll_interval]);
        keys!(
            "cluster",
            self.cluster,
            new.cluster,
            [host_id, claim_timeout]
        );
        if self.shutdown_grace != new.shutdown_grace {
            out.push("shutdown.grace".to_owned());
        }
        if self.ledger_keep != new.ledger_keep {
            out.push("ledger.keep".to_owned());
        }
        keys!("log", self.log, new.log, [format, dir, keep, level]);
        for inbox in &new.inboxes {
            match self.inboxes.iter().find(|i| i.name == inbox.name) {
                None => out.push(format!("inbox {} added", inbox.name)),
                Some(old) if old != inbox => {
                    let mut fields = Vec::new();
                    macro_rules! fields {
                        ($($field:ident),*) => {
                            $( if old.$field != inbox.$field { fields.push(stringify!($field)); } )*
                        };
                    }
                    fields!(
                        path,
                        done_dir,
                        failed_dir,
                        bucket,
                        prefix,
                        settle,
                        watch,
                        ignore,
                        fs_timeout,
                        max_file_size,
                        object,
                        shared,
                        check_format,
                        incomplete_after
                    );
                    out.push(format!("inbox {} ({})", inbox.name, fields.join(", ")));
                }
                Some(_) => {}
            }
        }
        for old in &self.inboxes {
            if !new.inboxes.iter().any(|i| i.name == old.name) {
                out.push(format!("inbox {} removed", old.name));
            }
        }
        out.iter_mut()
            .for_each(|c| *c = c.replace("s3.ca_pem", "s3.ca_file"));
        out
    }

    /// Checks what can only be checked on this machine: no inbox path names something that
    /// is not a folder. A missing inbox folder is not an error here (a share that is not
    /// mounted yet): the daemon reports it and takes the inbox up when the folder appears.
    pub fn check_paths(&self) -> Result<(), ConfigError> {
        for (i, inbox) in self.inboxes.iter().enumerate() {
            if inbox.path.exists() && !inbox.path.is_dir() {
                return Err(ConfigError::in_file(
                    &self.file,
                    &format!("inbox[{i}].path"),
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
    fn errors_say_what_to_write_and_where() {
        let e =
            load_str(&GOOD.replace("bucket = \"b\"", "bucket = \"b\"\nsettle = 2")).unwrap_err();
        assert!(
            e.to_string()
                .ends_with(", line 9: key `inbox[0].settle`: a duration needs its unit, written as a string: settle = \"2s\""),
            "{e}"
        );
        let e = load_str(&format!("{GOOD}\n[batch]\nmax_bytes = 1073741824\n")).unwrap_err();
        assert!(e.to_string().contains("max_bytes = \"1 GiB\""), "{e}");
        assert!(e.to_string().contains("line 11"), "{e}");
        let e = load_str(&format!("{GOOD}\n[upload]\nconcurency = 3\n")).unwrap_err();
        let text = e.to_string();
        assert_eq!(
            text.matches('`').count(),
            2,
            "only the key is quoted: {text}"
        );
        assert!(
            text.contains(
                "key `upload.concurency`: not a known key; the keys here are concurrency, "
            ),
            "{text}"
        );
        let e = load_str(&format!("{GOOD}\n[upload]\nconcurrency = \"many\"\n")).unwrap_err();
        assert!(
            e.to_string()
                .ends_with("expected a whole number, found the text \"many\""),
            "{e}"
        );
        let e = load_str(&format!("{GOOD}\n[upload]\non_conflict = \"replace\"\n")).unwrap_err();
        assert!(
            e.to_string()
                .contains("\"replace\" is not one of \"rename\", \"fail\", \"overwrite\""),
            "{e}"
        );
        let e = load_str(&format!("{GOOD}\n[upload\n")).unwrap_err();
        assert!(e.to_string().contains(", line 10: not valid TOML: "), "{e}");
        assert!(!e.to_string().contains('\n'), "one line: {e}");
    }

    /// examples/inboxd.toml, as shipped, is the built-in defaults: the same settings as its
    /// required keys alone.
    #[test]
    fn the_example_configuration_sets_only_defaults() {
        let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/inboxd.toml");
        let text = std::fs::read_to_string(&example).unwrap();
        let full = Settings::load(&example).unwrap_or_else(|e| panic!("{e}"));
        // The required keys only: the top of each [[inbox]] block down to `bucket`.
        let mut minimal = String::new();
        let mut keep = false;
        for line in text.lines() {
            if line == "[[inbox]]" {
                keep = true;
            }
            if keep && !line.starts_with('#') {
                minimal.push_str(line);
                minimal.push('\n');
            }
            if line.starts_with("bucket = ") {
                keep = false;
            }
        }
        let dir = tempfile::tempdir().unwrap();
        let bare = dir.path().join("bare.toml");
        std::fs::write(&bare, &minimal).unwrap();
        let defaults = Settings::load(&bare).unwrap_or_else(|e| panic!("{e}\n{minimal}"));
        assert_eq!(Settings { file: bare, ..full }, defaults);
    }

    /// Every default in README's key tables is what examples/inboxd.toml shows for the key:
    /// set to it, or commented out with it; "not set" keys are commented out.
    #[test]
    fn the_readme_and_the_example_agree_on_every_default() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        let readme = std::fs::read_to_string(root.join("README.md")).unwrap();
        let example = std::fs::read_to_string(root.join("examples/inboxd.toml")).unwrap();
        // (section, key) → (value, commented) as the example writes them.
        let mut shown: Vec<(String, String, String, bool)> = Vec::new();
        let mut section = String::new();
        for line in example.lines() {
            if line.starts_with('[') {
                section = line.trim_matches(['[', ']']).to_owned();
                continue;
            }
            let (commented, body) = match line.strip_prefix("# ") {
                Some(b) => (true, b),
                None => (false, line),
            };
            let Some((key, value)) = body.split_once(" = ") else {
                continue;
            };
            if key.chars().all(|c| c.is_ascii_lowercase() || c == '_') {
                shown.push((section.clone(), key.to_owned(), value.to_owned(), commented));
            }
        }
        let mut section = String::new();
        let mut checked = 0;
        for line in readme.lines() {
            if let Some(h) = line.strip_prefix("### ") {
                section = match h {
                    "Top level" => String::new(),
                    h if h.starts_with("`[") => h
                        .trim_start_matches("`[")
                        .split(']')
                        .next()
                        .unwrap_or_default()
                        .trim_start_matches('[')
                        .to_owned(),
                    _ => "-".to_owned(),
                };
                continue;
            }
            let cells: Vec<&str> = line.split(" | ").collect();
            if section == "-" || cells.len() < 4 || !cells[0].starts_with("| `") {
                continue;
            }
            let key = cells[0].trim_start_matches("| `").trim_end_matches('`');
            let default = cells[2];
            let lines: Vec<_> = shown
                .iter()
                .filter(|(s, k, _, _)| s == &section && k == key)
                .collect();
            assert!(!lines.is_empty(), "[{section}] {key} is not in the example");
            if default == "required" {
                continue;
            }
            if default.starts_with("not set") {
                assert!(
                    lines.iter().all(|(_, _, _, commented)| *commented),
                    "[{section}] {key}: README says not set, the example sets it"
                );
            } else if let Some(value) = default
                .strip_prefix('`')
                .and_then(|d| d.strip_suffix('`'))
                .filter(|d| !d.contains('`'))
            {
                assert!(
                    lines.iter().any(|(_, _, v, _)| v == value),
                    "[{section}] {key}: README's default {value} is not what the example shows: {lines:?}"
                );
            } else {
                continue; // a default that depends on another key
            }
            checked += 1;
        }
        assert!(checked >= 25, "only {checked} defaults checked");
    }

    #[test]
    fn a_reload_says_what_changed() {
        let old = load_str(GOOD).unwrap();
        let two = GOOD.to_owned()
            + "[[inbox]]\nname = \"b\"\npath = \"in2\"\ndone_dir = \"d2\"\nfailed_dir = \"f2\"\nbucket = \"b\"\n";
        let new = load_str(&format!(
            "{}\n[upload]\nconcurrency = 4\n",
            two.replace("bucket = \"b\"\n", "bucket = \"b\"\nsettle = \"5s\"\n")
        ))
        .unwrap();
        let changes = Settings {
            file: old.file.clone(),
            ..new
        }
        .changes_from_test(&old);
        assert_eq!(
            changes,
            ["upload.concurrency", "inbox a (settle)", "inbox b added"]
        );
        assert!(old.changes(&old).is_empty());
    }

    impl Settings {
        /// `changes` seen from the new side, with the state dirs of two temp dirs made equal.
        fn changes_from_test(self, old: &Settings) -> Vec<String> {
            let mut new = self;
            new.state_dir = old.state_dir.clone();
            for (n, o) in new.inboxes.iter_mut().zip(&old.inboxes) {
                n.path = o.path.clone();
                n.done_dir = o.done_dir.clone();
                n.failed_dir = o.failed_dir.clone();
            }
            old.changes(&new)
        }
    }

    #[test]
    fn format_checks_are_on_by_default_and_incomplete_after_outlasts_settle() {
        let s = load_str(GOOD).unwrap();
        assert!(s.inboxes[0].check_format);
        assert_eq!(s.inboxes[0].incomplete_after, Duration::from_secs(3600));
        let with = |extra: &str| {
            load_str(&GOOD.replace("bucket = \"b\"", &format!("bucket = \"b\"\n{extra}")))
        };
        let s = with("check_format = false\nincomplete_after = \"10m\"").unwrap();
        assert!(!s.inboxes[0].check_format);
        assert_eq!(s.inboxes[0].incomplete_after, Duration::from_secs(600));
        let e = with("settle = \"1m\"\nincomplete_after = \"30s\"").unwrap_err();
        let text = e.to_string();
        assert!(text.contains("c.toml, line 10: key `inbox[0].incomplete_after`: must be longer than this inbox's settle (1m)"), "{text}");
        let e = with("check_format = \"yes\"").unwrap_err();
        assert!(e.to_string().contains("inbox[0].check_format"), "{e}");
        let e = with("incomplete_after = 3600").unwrap_err();
        assert!(
            e.to_string().contains("incomplete_after = \"3600s\""),
            "{e}"
        );
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
}

//! Domain verbs for the integration tests: a daemon running the real `inboxd` binary against the
//! in-process S3 server of [`s3`] (or any [`Backend`], e.g. a real Garage from [`garage`]),
//! inboxes to drop files into, and outcome assertions.
#![allow(dead_code, unused_imports)]

pub mod backend;
pub mod formats;
pub mod garage;
pub mod http;
pub mod inproc;
pub mod notify;
pub mod s3;

use std::fmt::{self, Display};
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::time::{Duration, Instant, SystemTime};

use s3::TestS3;
use tokio::process::{Child, Command};

pub use backend::Backend;

pub use s3::{BUCKET, Fault, Op, S3ErrorCode};

pub const MIB: usize = 1024 * 1024;

/// Upper bound for anything a test waits for. Tests wait on conditions, never on this.
pub const TIMEOUT: Duration = Duration::from_secs(60);

const BIN: &str = env!("CARGO_BIN_EXE_inboxd");

// ---------------------------------------------------------------------------------------------
// Small helpers
// ---------------------------------------------------------------------------------------------

/// Deterministic pseudo-random bytes (xorshift64*), different for every seed.
pub fn content(seed: u64, len: usize) -> Vec<u8> {
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        state ^= state >> 12;
        state ^= state << 25;
        state ^= state >> 27;
        out.extend_from_slice(&state.wrapping_mul(0x2545_F491_4F6C_DD1D).to_le_bytes());
    }
    out.truncate(len);
    out
}

pub fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest as _;
    hex::encode(sha2::Sha256::digest(bytes))
}

/// Polls `cond` every 50 ms until it holds; panics naming `what` after `timeout`.
pub async fn wait_until(timeout: Duration, what: impl Display, mut cond: impl FnMut() -> bool) {
    let start = Instant::now();
    loop {
        if cond() {
            return;
        }
        if start.elapsed() > timeout {
            panic!("timed out after {timeout:?} waiting until {what}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Byte comparison that reports lengths and the first difference instead of dumping megabytes.
#[track_caller]
pub fn assert_bytes_eq(what: impl Display, actual: &[u8], expected: &[u8]) {
    if actual == expected {
        return;
    }
    let first_diff = actual
        .iter()
        .zip(expected)
        .position(|(a, e)| a != e)
        .unwrap_or(actual.len().min(expected.len()));
    panic!(
        "{what}: content differs: actual {} bytes, expected {} bytes, first difference at byte {first_diff}",
        actual.len(),
        expected.len()
    );
}

/// Removes ANSI escape sequences (`ESC [ ... final-byte`).
pub fn strip_ansi(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\x1b' && chars.peek() == Some(&'[') {
            chars.next();
            for c in chars.by_ref() {
                if ('\x40'..='\x7e').contains(&c) {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// A TOML basic string.
pub fn toml_str(s: &str) -> String {
    let escaped = s.replace('\\', "\\\\").replace('"', "\\\"");
    format!("\"{escaped}\"")
}

/// Regular files (and symlinks) below `dir`, as sorted '/'-separated relative paths.
pub fn files_under(dir: &Path) -> Vec<String> {
    fn walk(base: &Path, dir: &Path, out: &mut Vec<String>) {
        let Ok(entries) = fs::read_dir(dir) else {
            return;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            let Ok(ty) = entry.file_type() else { continue };
            if ty.is_dir() {
                walk(base, &path, out);
            } else {
                let rel = path.strip_prefix(base).expect("below base");
                let parts: Vec<_> = rel
                    .components()
                    .map(|c| c.as_os_str().to_string_lossy().into_owned())
                    .collect();
                out.push(parts.join("/"));
            }
        }
    }
    let mut out = Vec::new();
    walk(dir, dir, &mut out);
    out.sort();
    out
}

/// A setup for host (several hosts, one share: `shared = true`, claim_timeout 3 s) `id` on the shared inbox of `first` (or a fresh one when `None`).
pub fn shared_host(id: &str, first: Option<&Inbox>, watch: &str) -> Setup {
    let mut s = Setup::new()
        .inbox_set("shared", "true")
        .inbox_set("watch", &toml_str(watch))
        .set("cluster", "host_id", &toml_str(id))
        .set("cluster", "claim_timeout", &toml_str("3s"))
        .set("watch", "poll_interval", &toml_str("200ms"));
    if let Some(inbox) = first {
        s = s
            .inbox_set("name", &toml_str(&inbox.name))
            .inbox_set("prefix", &toml_str(&inbox.prefix))
            .inbox_set("bucket", &toml_str(&inbox.bucket))
            .inbox_set("path", &toml_str(&inbox.path.to_string_lossy()))
            .inbox_set("done_dir", &toml_str(&inbox.done.to_string_lossy()))
            .inbox_set("failed_dir", &toml_str(&inbox.failed.to_string_lossy()));
    }
    s
}

/// Makes a FIFO at `path` (a writer's odd file: opening it would block).
pub fn mkfifo(path: &Path) {
    let c = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).unwrap();
    // SAFETY: a valid NUL-terminated path that lives across the call.
    let rc = unsafe { libc::mkfifo(c.as_ptr(), 0o644) };
    assert_eq!(rc, 0, "mkfifo {}", path.display());
}

// ---------------------------------------------------------------------------------------------
// Config builder
// ---------------------------------------------------------------------------------------------

/// What the daemon's config file says. Every value is raw TOML (`"\"2s\""`, `"4"`); the
/// defaults keep the suite fast (settle 300 ms, batch window 100 ms, retries in milliseconds).
#[derive(Clone, Debug)]
pub struct Setup {
    inboxes: usize,
    /// (section, [(key, raw value)]); section "" is the top level.
    sections: Vec<(String, Vec<(String, String)>)>,
    inbox_keys: Vec<(String, String)>,
    /// (inbox index, key, raw value), applied after `inbox_keys`.
    inbox_at_keys: Vec<(usize, String, String)>,
    raw: String,
}

impl Default for Setup {
    fn default() -> Self {
        Self::new()
    }
}

impl Setup {
    pub fn new() -> Self {
        let mut setup = Self {
            inboxes: 1,
            sections: Vec::new(),
            inbox_keys: Vec::new(),
            inbox_at_keys: Vec::new(),
            raw: String::new(),
        };
        setup = setup
            .set("upload", "concurrency", "4")
            .set("upload", "max_attempts", "5")
            .set("upload", "retry_initial", "\"50ms\"")
            .set("upload", "retry_max", "\"500ms\"")
            .set("upload", "retry_later", "\"1s\"")
            .set("batch", "max_files", "20")
            .set("batch", "max_bytes", "\"64 MiB\"")
            .set("batch", "window", "\"100ms\"")
            // Events and the startup sweep must carry the tests; a short rescan would hide
            // lost events.
            .set("watch", "rescan", "\"10m\"")
            .set("shutdown", "grace", "\"10s\"")
            .set("log", "format", "\"text\"")
            .set("log", "level", "\"info\"")
            // Every test daemon serves operations, on a port of its own.
            .set("http", "listen", "\"127.0.0.1:0\"")
            .inbox_set("settle", "\"300ms\"");
        setup
    }

    pub fn inboxes(mut self, n: usize) -> Self {
        self.inboxes = n;
        self
    }

    pub fn settle(self, d: &str) -> Self {
        self.inbox_set("settle", &toml_str(d))
    }

    pub fn batch_window(self, d: &str) -> Self {
        self.set("batch", "window", &toml_str(d))
    }

    pub fn batch_max_files(self, n: usize) -> Self {
        self.set("batch", "max_files", &n.to_string())
    }

    pub fn concurrency(self, n: usize) -> Self {
        self.set("upload", "concurrency", &n.to_string())
    }

    /// Files larger than `threshold` go multipart in parts of `part_size` (e.g. "5 MiB").
    pub fn multipart(self, threshold: &str, part_size: &str) -> Self {
        self.set("upload", "multipart_threshold", &toml_str(threshold))
            .set("upload", "part_size", &toml_str(part_size))
    }

    pub fn grace(self, d: &str) -> Self {
        self.set("shutdown", "grace", &toml_str(d))
    }

    pub fn on_conflict(self, mode: &str) -> Self {
        self.set("upload", "on_conflict", &toml_str(mode))
    }

    /// Sets `key = raw` in `[section]` ("" = top level), replacing an earlier value.
    pub fn set(mut self, section: &str, key: &str, raw: &str) -> Self {
        let idx = match self.sections.iter().position(|(s, _)| s == section) {
            Some(i) => i,
            None => {
                self.sections.push((section.to_owned(), Vec::new()));
                self.sections.len() - 1
            }
        };
        let keys = &mut self.sections[idx].1;
        match keys.iter_mut().find(|(k, _)| k == key) {
            Some(entry) => entry.1 = raw.to_owned(),
            None => keys.push((key.to_owned(), raw.to_owned())),
        }
        self
    }

    pub fn unset(mut self, section: &str, key: &str) -> Self {
        for (s, keys) in &mut self.sections {
            if s == section {
                keys.retain(|(k, _)| k != key);
            }
        }
        self
    }

    /// Sets `key = raw` in every `[[inbox]]` (also overrides name/path/bucket/... defaults).
    pub fn inbox_set(mut self, key: &str, raw: &str) -> Self {
        match self.inbox_keys.iter_mut().find(|(k, _)| k == key) {
            Some(entry) => entry.1 = raw.to_owned(),
            None => self.inbox_keys.push((key.to_owned(), raw.to_owned())),
        }
        self
    }

    /// Leaves `key` out of every `[[inbox]]`.
    pub fn inbox_unset(mut self, key: &str) -> Self {
        self.inbox_keys.retain(|(k, _)| k != key);
        self.inbox_keys.push((key.to_owned(), String::new()));
        self
    }

    /// Sets `key = raw` in the `i`-th `[[inbox]]` only.
    pub fn inbox_set_at(mut self, i: usize, key: &str, raw: &str) -> Self {
        self.inbox_at_keys.push((i, key.to_owned(), raw.to_owned()));
        self
    }

    /// Raw TOML appended verbatim at the end of the file.
    pub fn raw(mut self, toml: &str) -> Self {
        self.raw.push_str(toml);
        self.raw.push('\n');
        self
    }

    fn render(&self, state_dir: &Path, backend: &Backend, inboxes: &[Inbox]) -> String {
        let mut out = String::new();
        let top = self.sections.iter().find(|(s, _)| s.is_empty());
        if !top.is_some_and(|(_, keys)| keys.iter().any(|(k, _)| k == "state_dir")) {
            out.push_str(&format!(
                "state_dir = {}\n",
                toml_str(&state_dir.to_string_lossy())
            ));
        }
        for (key, raw) in top.map(|(_, keys)| keys.as_slice()).unwrap_or_default() {
            out.push_str(&format!("{key} = {raw}\n"));
        }
        out.push_str(&format!(
            "\n[s3]\nendpoint = {}\nregion = {}\nforce_path_style = true\n",
            toml_str(&backend.endpoint),
            toml_str(&backend.region)
        ));
        if let Some((_, keys)) = self.sections.iter().find(|(s, _)| s == "s3") {
            for (key, raw) in keys {
                out.push_str(&format!("{key} = {raw}\n"));
            }
        }
        for (section, keys) in &self.sections {
            if section.is_empty() || section == "s3" {
                continue;
            }
            out.push_str(&format!("\n[{section}]\n"));
            for (key, raw) in keys {
                out.push_str(&format!("{key} = {raw}\n"));
            }
        }
        for (i, inbox) in inboxes.iter().enumerate() {
            let mut keys: Vec<(String, String)> = vec![
                ("name".into(), toml_str(&inbox.name)),
                ("path".into(), toml_str(&inbox.path.to_string_lossy())),
                ("done_dir".into(), toml_str(&inbox.done.to_string_lossy())),
                (
                    "failed_dir".into(),
                    toml_str(&inbox.failed.to_string_lossy()),
                ),
                ("bucket".into(), toml_str(&inbox.bucket)),
                ("prefix".into(), toml_str(&inbox.prefix)),
            ];
            for (key, raw) in &self.inbox_keys {
                keys.retain(|(k, _)| k != key);
                if !raw.is_empty() {
                    keys.push((key.clone(), raw.clone()));
                }
            }
            for (_, key, raw) in self.inbox_at_keys.iter().filter(|(at, _, _)| *at == i) {
                keys.retain(|(k, _)| k != key);
                keys.push((key.clone(), raw.clone()));
            }
            out.push_str("\n[[inbox]]\n");
            for (key, raw) in keys {
                out.push_str(&format!("{key} = {raw}\n"));
            }
        }
        out.push('\n');
        out.push_str(&self.raw);
        out
    }
}

// ---------------------------------------------------------------------------------------------
// Inbox
// ---------------------------------------------------------------------------------------------

/// One watched folder with its done/ and failed/ folders.
#[derive(Clone, Debug)]
pub struct Inbox {
    pub name: String,
    pub path: PathBuf,
    pub done: PathBuf,
    pub failed: PathBuf,
    pub bucket: String,
    pub prefix: String,
}

impl Inbox {
    /// The object key a file at `rel` is uploaded to.
    pub fn key(&self, rel: &str) -> String {
        format!("{}{rel}", self.prefix)
    }

    pub fn file(&self, rel: &str) -> PathBuf {
        self.path.join(rel)
    }

    /// Writes the file in place, the way a scanner or a copy onto a share does.
    pub fn drop(&self, rel: &str, bytes: &[u8]) {
        let path = self.file(rel);
        if let Some(parent) = path.parent() {
            fs::create_dir_all(parent).expect("create inbox sub-folder");
        }
        fs::write(&path, bytes).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
    }

    /// Writes `bytes` in `chunks` appends, `interval` apart (the first append happens at once).
    pub async fn drop_slowly(&self, rel: &str, bytes: &[u8], chunks: usize, interval: Duration) {
        use std::io::Write as _;
        let path = self.file(rel);
        if let Some(parent) = path.parent() {
            fs::create_dir_all(parent).expect("create inbox sub-folder");
        }
        let chunk_len = bytes.len().div_ceil(chunks.max(1)).max(1);
        let mut file = fs::File::create(&path).expect("create slow file");
        for (i, chunk) in bytes.chunks(chunk_len).enumerate() {
            if i > 0 {
                tokio::time::sleep(interval).await;
            }
            file.write_all(chunk).expect("append to slow file");
            file.flush().expect("flush slow file");
        }
    }

    /// Regular files left in the inbox.
    pub fn files(&self) -> Vec<String> {
        files_under(&self.path)
    }

    pub fn done_files(&self) -> Vec<String> {
        files_under(&self.done)
    }

    /// Files in failed/, reason files included.
    pub fn failed_files(&self) -> Vec<String> {
        files_under(&self.failed)
    }

    pub fn in_inbox(&self, rel: &str) -> bool {
        self.file(rel).exists()
    }

    pub fn in_done(&self, rel: &str) -> bool {
        self.done.join(rel).is_file()
    }

    pub fn in_failed(&self, rel: &str) -> bool {
        self.failed.join(rel).is_file()
    }

    /// Moved out of the inbox into done/.
    pub fn is_done(&self, rel: &str) -> bool {
        self.in_done(rel) && !self.in_inbox(rel)
    }

    /// Moved out of the inbox into failed/ (with its reason file).
    pub fn is_failed(&self, rel: &str) -> bool {
        self.in_failed(rel) && self.reason_path(rel).is_file() && !self.in_inbox(rel)
    }

    fn reason_path(&self, rel: &str) -> PathBuf {
        let mut name = self.failed.join(rel).into_os_string();
        name.push(".reason.txt");
        PathBuf::from(name)
    }

    /// The file in done/ holds exactly `bytes`.
    #[track_caller]
    pub fn assert_done(&self, rel: &str, bytes: &[u8]) {
        let path = self.done.join(rel);
        let actual = fs::read(&path).unwrap_or_else(|e| {
            panic!(
                "{}: expected in done/ ({e}); done/ holds {:?}, inbox holds {:?}, failed/ holds {:?}",
                path.display(),
                self.done_files(),
                self.files(),
                self.failed_files()
            )
        });
        assert_bytes_eq(format!("done/{rel}"), &actual, bytes);
    }

    /// The file is in failed/ next to its reason file; returns the reason text.
    #[track_caller]
    pub fn assert_failed(&self, rel: &str) -> String {
        let path = self.failed.join(rel);
        assert!(
            path.is_file(),
            "{}: expected in failed/; failed/ holds {:?}, inbox holds {:?}, done/ holds {:?}",
            path.display(),
            self.failed_files(),
            self.files(),
            self.done_files()
        );
        let reason = self.reason_path(rel);
        fs::read_to_string(&reason)
            .unwrap_or_else(|e| panic!("reason file {}: {e}", reason.display()))
    }

    /// Nothing went to failed/.
    #[track_caller]
    pub fn assert_no_failures(&self) {
        let failed = self.failed_files();
        assert!(failed.is_empty(), "failed/ of {}: {failed:?}", self.name);
    }

    /// No file is left in the inbox (empty sub-folders may stay).
    #[track_caller]
    pub fn assert_empty(&self) {
        let left = self.files();
        assert!(left.is_empty(), "inbox {} still holds {left:?}", self.name);
    }

    /// The inbox holds exactly these files.
    #[track_caller]
    pub fn assert_holds(&self, rels: &[&str]) {
        let mut want: Vec<String> = rels.iter().map(|s| (*s).to_owned()).collect();
        want.sort();
        assert_eq!(self.files(), want, "files left in inbox {}", self.name);
    }
}

/// `chown -hR uid:gid dir` (links themselves, never what they point to).
pub fn chown_tree(dir: &Path, uid: u32, gid: u32) {
    std::os::unix::fs::lchown(dir, Some(uid), Some(gid))
        .unwrap_or_else(|e| panic!("chown {}: {e}", dir.display()));
    let meta = fs::symlink_metadata(dir).expect("stat");
    if meta.is_dir() {
        for entry in fs::read_dir(dir).expect("read dir").flatten() {
            chown_tree(&entry.path(), uid, gid);
        }
    }
}

/// The `key=value` fields of one text log line; a value in double quotes may hold spaces
/// (`reason="stopped by SIGTERM"` → ("reason", "stopped by SIGTERM")).
pub fn log_fields(line: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut rest = line;
    while let Some(eq) = rest.find('=') {
        let key = rest[..eq].rsplit(' ').next().unwrap_or_default().to_owned();
        let after = &rest[eq + 1..];
        let (value, tail) = match after.strip_prefix('"') {
            Some(quoted) => {
                let mut end = quoted.len();
                let mut escaped = false;
                for (i, c) in quoted.char_indices() {
                    match c {
                        '\\' if !escaped => escaped = true,
                        '"' if !escaped => {
                            end = i;
                            break;
                        }
                        _ => escaped = false,
                    }
                }
                let value = quoted[..end].replace("\\\"", "\"");
                (value, quoted.get(end + 1..).unwrap_or_default())
            }
            None => {
                let end = after.find(' ').unwrap_or(after.len());
                (after[..end].to_owned(), &after[end..])
            }
        };
        if !key.is_empty() {
            out.push((key, value));
        }
        rest = tail;
    }
    out
}

/// The value of `key` among `fields` (from [`log_fields`]).
#[track_caller]
pub fn field<'a>(fields: &'a [(String, String)], key: &str) -> &'a str {
    fields
        .iter()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.as_str())
        .unwrap_or_else(|| panic!("no {key}= in {fields:?}"))
}

/// Content and modification time of a file, to prove it was left untouched.
pub fn fingerprint(path: &Path) -> (Vec<u8>, SystemTime) {
    let bytes = fs::read(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    let mtime = fs::metadata(path)
        .and_then(|m| m.modified())
        .expect("mtime");
    (bytes, mtime)
}

// ---------------------------------------------------------------------------------------------
// Daemon
// ---------------------------------------------------------------------------------------------

/// Result of a one-shot command (`once`, `check`, `ledger`, ...).
pub struct CliOutput {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

impl CliOutput {
    pub fn code(&self) -> Option<i32> {
        self.status.code()
    }
}

impl Display for CliOutput {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "status: {}\n--- stdout ---\n{}\n--- stderr ---\n{}",
            self.status, self.stdout, self.stderr
        )
    }
}

/// The real `inboxd` binary, configured for one test in its own temporary directory.
pub struct Daemon {
    dir: tempfile::TempDir,
    pub config: PathBuf,
    /// The server and bucket the config points at; its credentials go into the environment.
    backend: Backend,
    inboxes: Vec<Inbox>,
    child: Option<Child>,
    /// stdout/stderr log files of every `run` started so far.
    runs: Vec<(PathBuf, PathBuf)>,
}

impl Daemon {
    /// Writes the config (inboxes `in0`, `in1`, ... uploading to [`BUCKET`] with prefix
    /// `incoming/`, `incoming1/`, ...) and creates the inbox folders. Does not start anything.
    pub fn new(s3: &TestS3, setup: Setup) -> Self {
        Self::with_backend(&Backend::from(s3), setup)
    }

    /// Like [`Daemon::new`], for any server: the inboxes upload to `backend.bucket`, signed
    /// for `backend.region` with `backend`'s credentials.
    pub fn with_backend(backend: &Backend, setup: Setup) -> Self {
        let dir = tempfile::Builder::new()
            .prefix("inboxd-test-")
            .tempdir()
            .expect("create daemon tempdir");
        let root = dir.path().to_path_buf();
        let mut inboxes: Vec<Inbox> = (0..setup.inboxes)
            .map(|i| {
                let name = format!("in{i}");
                let base = root.join(&name);
                Inbox {
                    path: base.join("inbox"),
                    done: base.join("done"),
                    failed: base.join("failed"),
                    bucket: backend.bucket.clone(),
                    prefix: if i == 0 {
                        "incoming/".to_owned()
                    } else {
                        format!("incoming{i}/")
                    },
                    name,
                }
            })
            .collect();

        // Keep the Inbox view in step with bucket/prefix overrides (plain TOML strings only).
        for (i, inbox) in inboxes.iter_mut().enumerate() {
            let overrides = setup.inbox_keys.iter().map(|(k, v)| (k, v)).chain(
                setup
                    .inbox_at_keys
                    .iter()
                    .filter(|(at, _, _)| *at == i)
                    .map(|(_, k, v)| (k, v)),
            );
            for (key, raw) in overrides {
                let plain = raw.strip_prefix('"').and_then(|r| r.strip_suffix('"'));
                match (key.as_str(), plain) {
                    ("bucket", Some(v)) => inbox.bucket = v.to_owned(),
                    ("prefix", Some(v)) => inbox.prefix = v.to_owned(),
                    _ => {}
                }
            }
        }
        for inbox in &inboxes {
            fs::create_dir_all(&inbox.path).expect("create inbox");
        }
        fs::create_dir_all(root.join("home")).expect("create home");
        fs::create_dir_all(root.join("logs")).expect("create logs");
        let config = root.join("inboxd.toml");
        let text = setup.render(&root.join("state"), backend, &inboxes);
        fs::write(&config, text).expect("write config");
        Self {
            dir,
            config,
            backend: backend.clone(),
            inboxes,
            child: None,
            runs: Vec::new(),
        }
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The server and bucket the config points at.
    pub fn backend(&self) -> &Backend {
        &self.backend
    }

    /// The ledger's folder (unless the setup set its own `state_dir`).
    pub fn state_dir(&self) -> PathBuf {
        self.dir.path().join("state")
    }

    /// The first inbox.
    pub fn inbox(&self) -> &Inbox {
        &self.inboxes[0]
    }

    pub fn inboxes(&self) -> &[Inbox] {
        &self.inboxes
    }

    /// Replaces the config file with `text`.
    pub fn write_config(&self, text: &str) {
        fs::write(&self.config, text).expect("write config");
    }

    pub fn config_text(&self) -> String {
        fs::read_to_string(&self.config).expect("read config")
    }

    /// A command for the binary with a hermetic environment: only PATH survives, credentials
    /// match the test server, no IMDS, no proxy for loopback.
    pub fn command(&self, args: &[&str]) -> Command {
        let home = self.dir.path().join("home");
        let mut cmd = Command::new(BIN);
        cmd.args(args)
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("HOME", &home)
            .env("AWS_ACCESS_KEY_ID", &self.backend.access_key)
            .env("AWS_SECRET_ACCESS_KEY", &self.backend.secret_key)
            .env("AWS_EC2_METADATA_DISABLED", "true")
            .env("NO_PROXY", "127.0.0.1,localhost")
            .env("no_proxy", "127.0.0.1,localhost")
            .env("RUST_LOG", "info")
            .env("RUST_BACKTRACE", "1")
            .stdin(Stdio::null())
            .kill_on_drop(true);
        cmd
    }

    /// Runs `inboxd ARGS` to completion (killed after [`TIMEOUT`]).
    pub async fn cli(&self, args: &[&str], env: &[(&str, &str)]) -> CliOutput {
        let mut cmd = self.command(args);
        cmd.envs(env.iter().copied())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let child = cmd.spawn().expect("spawn inboxd");
        let out = tokio::time::timeout(TIMEOUT, child.wait_with_output())
            .await
            .unwrap_or_else(|_| panic!("inboxd {args:?} did not exit within {TIMEOUT:?}"))
            .expect("wait for inboxd");
        CliOutput {
            status: out.status,
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    fn config_arg(&self) -> String {
        self.config.to_string_lossy().into_owned()
    }

    /// `inboxd once --config FILE`
    pub async fn once(&self) -> CliOutput {
        self.cli(&["once", "--config", &self.config_arg()], &[])
            .await
    }

    /// `inboxd check --config FILE`
    pub async fn check(&self) -> CliOutput {
        self.cli(&["check", "--config", &self.config_arg()], &[])
            .await
    }

    /// `inboxd ledger --config FILE`, one JSON value per record (through the daemon when it runs).
    pub async fn ledger(&self) -> Vec<serde_json::Value> {
        let out = self
            .cli(&["ledger", "--config", &self.config_arg()], &[])
            .await;
        assert_eq!(out.code(), Some(0), "inboxd ledger failed:\n{out}");
        out.stdout
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(|l| {
                serde_json::from_str(l)
                    .unwrap_or_else(|e| panic!("ledger line is not JSON ({e}): {l}\n{out}"))
            })
            .collect()
    }

    /// Ledger records of one file of the first inbox.
    pub async fn ledger_for(&self, rel: &str) -> Vec<serde_json::Value> {
        let inbox = self.inbox().name.clone();
        self.ledger()
            .await
            .into_iter()
            .filter(|r| r["rel_path"] == rel && r["inbox"] == inbox.as_str())
            .collect()
    }

    /// Starts `inboxd run --config FILE` in the background.
    pub fn start(&mut self) {
        self.start_with_env(&[]);
    }

    /// Starts `inboxd run` with extra environment variables (e.g. `INBOXD_FAILPOINT`).
    pub fn start_with_env(&mut self, env: &[(&str, &str)]) {
        self.spawn_run(env, None);
    }

    /// Hands the whole test directory (config, state, inboxes) to another user, for
    /// [`Daemon::start_as`].
    pub fn give_to(&self, uid: u32, gid: u32) {
        chown_tree(self.dir.path(), uid, gid);
    }

    /// Starts `inboxd run` as another user (`uid`, `gid`; see [`Daemon::give_to`]). Root
    /// reads and removes whatever it likes; permission tests need a daemon that cannot.
    pub fn start_as(&mut self, uid: u32, gid: u32) {
        self.spawn_run(&[], Some((uid, gid)));
    }

    fn spawn_run(&mut self, env: &[(&str, &str)], user: Option<(u32, u32)>) {
        assert!(self.child.is_none(), "daemon already running");
        let n = self.runs.len();
        let logs = self.dir.path().join("logs");
        let stdout = logs.join(format!("run-{n}.stdout"));
        let stderr = logs.join(format!("run-{n}.stderr"));
        let mut cmd = self.command(&["run", "--config", &self.config_arg()]);
        cmd.envs(env.iter().copied())
            .stdout(fs::File::create(&stdout).expect("create stdout log"))
            .stderr(fs::File::create(&stderr).expect("create stderr log"));
        if let Some((uid, gid)) = user {
            cmd.uid(uid).gid(gid);
        }
        self.child = Some(cmd.spawn().expect("spawn inboxd run"));
        self.runs.push((stdout, stderr));
    }

    fn pid(&self) -> u32 {
        self.child
            .as_ref()
            .and_then(Child::id)
            .expect("daemon is running")
    }

    fn signal(&self, sig: &str) {
        let status = std::process::Command::new("kill")
            .args([sig, &self.pid().to_string()])
            .status()
            .expect("run kill");
        assert!(status.success(), "kill {sig} failed");
    }

    /// Kernel file watches (inotify) the running daemon holds, from /proc/PID/fdinfo.
    pub fn inotify_watches(&self) -> usize {
        let dir = PathBuf::from(format!("/proc/{}/fdinfo", self.pid()));
        let entries = fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
        entries
            .flatten()
            .filter_map(|e| fs::read_to_string(e.path()).ok())
            .map(|info| {
                info.lines()
                    .filter(|l| l.starts_with("inotify wd:"))
                    .count()
            })
            .sum()
    }

    pub fn sigterm(&self) {
        self.signal("-TERM");
    }

    pub fn sighup(&self) {
        self.signal("-HUP");
    }

    /// SIGKILL and reap.
    pub async fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill().await;
        }
    }

    /// Whether the `run` process is still alive (reaps it if it has exited).
    pub fn is_running(&mut self) -> bool {
        match self.child.as_mut().map(Child::try_wait) {
            Some(Ok(None)) => true,
            Some(Ok(Some(_))) | Some(Err(_)) | None => false,
        }
    }

    /// Waits for the `run` process to exit by itself; panics after `timeout`.
    pub async fn wait_exit(&mut self, timeout: Duration) -> ExitStatus {
        let child = self.child.as_mut().expect("daemon was started");
        let status = tokio::time::timeout(timeout, child.wait())
            .await
            .unwrap_or_else(|_| panic!("inboxd run did not exit within {timeout:?}"))
            .expect("wait for inboxd run");
        self.child = None;
        status
    }

    /// SIGTERM and wait; the exit must be clean.
    pub async fn stop(&mut self) {
        if self.is_running() {
            self.sigterm();
        }
        if self.child.is_some() {
            let status = self.wait_exit(TIMEOUT).await;
            assert!(
                status.success(),
                "inboxd run exited with {status} after SIGTERM"
            );
        }
    }

    /// Stops the daemon if it still runs (SIGTERM), then starts it again without extra env.
    pub async fn restart(&mut self) {
        self.stop().await;
        self.start();
    }

    /// stdout of the current (or last) `run`.
    pub fn stdout(&self) -> String {
        self.runs
            .last()
            .map(|(out, _)| fs::read_to_string(out).unwrap_or_default())
            .unwrap_or_default()
    }

    /// stderr of the current (or last) `run`.
    pub fn stderr(&self) -> String {
        self.runs
            .last()
            .map(|(_, err)| fs::read_to_string(err).unwrap_or_default())
            .unwrap_or_default()
    }

    /// stdout of every `run` so far.
    pub fn all_stdout(&self) -> String {
        self.runs
            .iter()
            .map(|(out, _)| fs::read_to_string(out).unwrap_or_default())
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// `batch finished` lines of every run, as field maps (`files=3` → ("files", "3")).
    /// Colour escapes are stripped here; `pipeline.rs` asserts separately that there are none.
    pub fn batch_summaries(&self) -> Vec<Vec<(String, String)>> {
        strip_ansi(&self.all_stdout())
            .lines()
            .filter(|l| l.contains("batch finished"))
            .map(log_fields)
            .collect()
    }

    /// The fields of the last `inboxd stopped` line of the current (or last) run.
    #[track_caller]
    pub fn stop_line(&self) -> Vec<(String, String)> {
        let out = strip_ansi(&self.stdout());
        let line = out
            .lines()
            .rfind(|l| l.contains("inboxd stopped"))
            .unwrap_or_else(|| panic!("no `inboxd stopped` line:\n{out}"));
        log_fields(line)
    }

    /// Sum of one numeric field over all batch summaries.
    pub fn batch_total(&self, field: &str) -> u64 {
        self.batch_summaries()
            .iter()
            .flat_map(|fields| fields.iter().filter(|(k, _)| k == field))
            .map(|(_, v)| {
                v.parse::<u64>()
                    .unwrap_or_else(|_| panic!("{field}={v} is not a number"))
            })
            .sum()
    }

    fn dump_logs(&self) {
        eprintln!("===== inboxd config {} =====", self.config.display());
        eprintln!("{}", fs::read_to_string(&self.config).unwrap_or_default());
        for (i, (out, err)) in self.runs.iter().enumerate() {
            eprintln!("===== inboxd run #{i} stdout =====");
            eprintln!("{}", fs::read_to_string(out).unwrap_or_default());
            eprintln!("===== inboxd run #{i} stderr =====");
            eprintln!("{}", fs::read_to_string(err).unwrap_or_default());
        }
        for inbox in &self.inboxes {
            eprintln!(
                "===== {}: inbox {:?} done {:?} failed {:?}",
                inbox.name,
                inbox.files(),
                inbox.done_files(),
                inbox.failed_files()
            );
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Some(child) = self.child.as_mut() {
            let _ = child.start_kill();
        }
        // INBOXD_TEST_DUMP=1 shows the logs of passing tests too.
        if std::thread::panicking() || std::env::var_os("INBOXD_TEST_DUMP").is_some() {
            self.dump_logs();
        }
    }
}

/// The object at `key` holds exactly `bytes` and carries their SHA-256 as metadata.
pub async fn assert_object(s3: &s3::TestS3, key: &str, bytes: &[u8]) {
    let Some(object) = s3.get(BUCKET, key).await else {
        panic!(
            "object {key} missing; the bucket holds {:?}",
            s3.list(BUCKET).await
        );
    };
    assert_bytes_eq(format!("object {key}"), &object, bytes);
    let meta = s3.head_meta(BUCKET, key).await.expect("object metadata");
    assert_eq!(
        meta.get("sha256").map(String::as_str),
        Some(sha256_hex(bytes).as_str()),
        "x-amz-meta-sha256 of {key}"
    );
}

/// The Chromium binary for browser tests: `CHROMIUM` (then required: a missing binary fails
/// the test), else `/usr/bin/chromium`. Without either, says once on stderr which tests it
/// skipped and how to enable them, and returns `None`.
pub fn chromium() -> Option<std::path::PathBuf> {
    use std::io::Write as _;
    if let Some(path) = std::env::var_os("CHROMIUM").filter(|p| !p.is_empty()) {
        let path = std::path::PathBuf::from(path);
        assert!(path.is_file(), "CHROMIUM={} does not exist", path.display());
        return Some(path);
    }
    let default = std::path::PathBuf::from("/usr/bin/chromium");
    if default.is_file() {
        return Some(default);
    }
    static SAID: std::sync::Once = std::sync::Once::new();
    SAID.call_once(|| {
        // Straight to stderr: libtest captures eprintln! inside tests.
        let _ = writeln!(
            std::io::stderr(),
            "browser tests SKIPPED: no chromium at /usr/bin/chromium; install Debian's chromium \
             (apt-get install chromium, as .ci/run does) or set CHROMIUM=/path/to/chromium"
        );
    });
    None
}

/// How a test changes a file while the daemon works on it.
#[derive(Clone, Copy, Debug)]
pub enum Change {
    /// It grows by `len` bytes.
    Append,
    /// Same inode, same size, different bytes: only the mtime tells.
    RewriteInPlace,
    /// A new version of `len` bytes, written in `scratch` (beside the inbox, on the same file
    /// system) and renamed over it: an editor's atomic save.
    Replace,
}

impl Change {
    /// Changes the file at `path`, which holds `old`; returns the bytes it holds now (made
    /// from `seed`).
    pub fn apply(self, path: &Path, old: &[u8], scratch: &Path, seed: u64, len: usize) -> Vec<u8> {
        use std::io::Write as _;
        match self {
            Change::Append => {
                let extra = content(seed, len);
                let mut f = std::fs::OpenOptions::new()
                    .append(true)
                    .open(path)
                    .expect("open for append");
                f.write_all(&extra).expect("append");
                [old, extra.as_slice()].concat()
            }
            Change::RewriteInPlace => {
                let new = content(seed, old.len());
                let mut f = std::fs::OpenOptions::new()
                    .write(true)
                    .open(path)
                    .expect("open for rewrite");
                f.write_all(&new).expect("rewrite");
                new
            }
            Change::Replace => {
                let new = content(seed, len);
                let tmp = scratch.join("replacement.tmp");
                std::fs::write(&tmp, &new).expect("write the new version");
                std::fs::rename(&tmp, path).expect("rename it over the file");
                new
            }
        }
    }
}

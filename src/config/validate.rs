//! Validation: raw → [`Settings`], one function per section. Each error names the key and
//! where the bad value came from (the file, or the exact environment variable).

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

use figment::Figment;

use super::*;
use crate::upload::object::{self, ObjectSettings, Sse};
use crate::upload::template::Template;

/// What every check needs: the file (for messages), figment's metadata (to tell a value
/// from the environment), and the folder relative paths are relative to.
pub(super) struct Ctx<'a> {
    file: &'a Path,
    figment: Option<&'a Figment>,
    /// The config file's folder: relative paths in the file are relative to it.
    base: PathBuf,
}

impl<'a> Ctx<'a> {
    pub(super) fn new(file: &'a Path, figment: Option<&'a Figment>) -> Self {
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
                line: None,
                message: format!("key `{key}`: {msg}"),
            }
        } else {
            ConfigError::in_file(self.file, key, format!("key `{key}`: {msg}"))
        }
    }

    pub(super) fn resolve(&self, p: &Path) -> PathBuf {
        absolute(&self.base.join(p))
    }

    pub(super) fn s3(&self, raw: RawS3) -> Result<S3Settings, ConfigError> {
        let force_path_style = raw.force_path_style.unwrap_or(raw.endpoint.is_some());
        if let Some(ep) = &raw.endpoint
            && !(ep.starts_with("http://") || ep.starts_with("https://"))
        {
            return Err(self.err("s3.endpoint", "must start with http:// or https://"));
        }
        if raw.region.as_deref().is_some_and(|r| r.trim().is_empty()) {
            return Err(self.err(
                "s3.region",
                "must not be empty (leave it out to take the region from AWS_REGION or the AWS profile)",
            ));
        }
        let ca_pem = match &raw.ca_file {
            None => None,
            Some(f) => {
                let path = self.resolve(f);
                Some(
                    read_ca_file(&path)
                        .map_err(|m| self.err("s3.ca_file", &format!("{}: {m}", path.display())))?,
                )
            }
        };
        let stall_timeout = raw.stall_timeout.unwrap_or(DEFAULT_STALL_TIMEOUT);
        if stall_timeout < Duration::from_secs(1) {
            return Err(self.err("s3.stall_timeout", "must be at least 1s"));
        }
        Ok(S3Settings {
            endpoint: raw.endpoint,
            region: raw.region,
            force_path_style,
            connect_timeout: raw.connect_timeout.unwrap_or(Duration::from_secs(5)),
            stall_timeout,
            ca_pem,
        })
    }

    pub(super) fn cluster(&self, raw: RawCluster) -> Result<ClusterSettings, ConfigError> {
        let host_id = match raw.host_id {
            Some(id) => id,
            // The host name, made a plain folder name (it names this host's claim folder).
            None => crate::run::host_name()
                .chars()
                .map(|c| {
                    if c.is_ascii_alphanumeric() || "-_.".contains(c) {
                        c
                    } else {
                        '-'
                    }
                })
                .collect::<String>()
                .trim_start_matches('.')
                .chars()
                .take(64)
                .collect(),
        };
        // It names a folder on the share: one plain path component, readable in logs.
        let plain = !host_id.is_empty()
            && !host_id.starts_with('.')
            && host_id.len() <= 64
            && host_id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b));
        if !plain {
            return Err(self.err(
                "cluster.host_id",
                &format!(
                    "{host_id:?} must be 1 to 64 letters, digits, '-', '_' or '.', not starting \
                     with '.' (set it explicitly when the host name is not like that)"
                ),
            ));
        }
        let claim_timeout = raw.claim_timeout.unwrap_or(DEFAULT_CLAIM_TIMEOUT);
        if claim_timeout < Duration::from_secs(1) {
            return Err(self.err("cluster.claim_timeout", "must be at least 1s"));
        }
        Ok(ClusterSettings {
            host_id,
            claim_timeout,
        })
    }

    pub(super) fn http(&self, raw: RawHttp) -> Result<Option<std::net::SocketAddr>, ConfigError> {
        let listen = raw.listen.unwrap_or_else(|| DEFAULT_HTTP_LISTEN.to_owned());
        if listen == "off" {
            return Ok(None);
        }
        listen.parse().map(Some).map_err(|_| {
            self.err(
                "http.listen",
                &format!("{listen:?} is not an address and port (for example \"127.0.0.1:9478\" or \"[::1]:9478\"), or \"off\""),
            )
        })
    }

    pub(super) fn upload(&self, u: RawUpload) -> Result<UploadSettings, ConfigError> {
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
        let multipart_threshold = u.multipart_threshold.unwrap_or(64 * MIB);
        let part_size = u.part_size.unwrap_or(16 * MIB);
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

    pub(super) fn batch(&self, raw: RawBatch) -> Result<BatchSettings, ConfigError> {
        let batch = BatchSettings {
            max_files: raw.max_files.unwrap_or(20),
            max_bytes: raw.max_bytes.unwrap_or(1024 * MIB),
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

    pub(super) fn watch(&self, raw: RawWatch) -> Result<WatchSettings, ConfigError> {
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

    pub(super) fn log(&self, raw: RawLog) -> Result<LogSettings, ConfigError> {
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

    pub(super) fn inboxes(&self, raw: Vec<RawInbox>) -> Result<Vec<InboxSettings>, ConfigError> {
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

    fn inbox(&self, i: usize, mut ri: RawInbox) -> Result<InboxSettings, ConfigError> {
        let object = self.object(i, &mut ri)?;
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
        let max_file_size = ri.max_file_size;
        if max_file_size == Some(0) {
            return Err(self.err(
                &key("max_file_size"),
                "must be more than 0 bytes (leave it out for no limit)",
            ));
        }
        let settle = ri.settle.unwrap_or(Duration::from_secs(2));
        let incomplete_after = ri.incomplete_after.unwrap_or(DEFAULT_INCOMPLETE_AFTER);
        if incomplete_after <= settle {
            return Err(self.err(
                &key("incomplete_after"),
                &format!(
                    "must be longer than this inbox's settle ({}): a file is only checked once it has settled",
                    humantime::format_duration(settle)
                ),
            ));
        }
        Ok(InboxSettings {
            name,
            path,
            done_dir,
            failed_dir,
            bucket,
            prefix,
            settle,
            watch: ri.watch.unwrap_or(WatchMode::Auto),
            ignore,
            fs_timeout,
            max_file_size,
            object,
            shared: ri.shared.unwrap_or(false),
            check_format: ri.check_format.unwrap_or(true),
            incomplete_after,
        })
    }

    /// The key template and object options of inbox `i` (issue 11).
    fn object(&self, i: usize, ri: &mut RawInbox) -> Result<ObjectSettings, ConfigError> {
        let key = |field: &str| format!("inbox[{i}].{field}");
        let bad = |field: &str, msg: String| self.err(&key(field), &msg);
        let mut o = ObjectSettings::default();
        if let Some(t) = ri.key.take() {
            o.key = Template::parse(&t).map_err(|e| bad("key", e))?;
        }
        if let Some(ct) = ri.content_type.take() {
            let v = object::plain_header(&ct).map_err(|e| bad("content_type", e))?;
            if v.parse::<mime::Mime>().is_err() {
                return Err(bad(
                    "content_type",
                    format!("{v:?} is not a media type (like \"application/pdf\")"),
                ));
            }
            o.content_type = Some(v);
        }
        for (name, value) in ri.metadata.take().unwrap_or_default() {
            let name = object::metadata_name(&name).map_err(|e| bad("metadata", e))?;
            let t = Template::parse_value(&value)
                .map_err(|e| bad("metadata", format!("{name}: {e}")))?;
            if o.metadata.iter().any(|(n, _)| *n == name) {
                return Err(bad(
                    "metadata",
                    format!("{name:?} is given twice (names are not case-sensitive)"),
                ));
            }
            o.metadata.push((name, t));
        }
        let tags: Vec<(String, String)> = ri.tags.take().unwrap_or_default().into_iter().collect();
        o.tagging = object::tagging(&tags).map_err(|e| bad("tags", e))?;
        if let Some(c) = ri.storage_class.take() {
            o.storage_class = Some(object::storage_class(&c).map_err(|e| bad("storage_class", e))?);
        }
        let kms_key = ri.sse_kms_key_id.take();
        o.sse = match (ri.sse.take().as_deref(), kms_key) {
            (None, None) => None,
            (Some("AES256"), None) => Some(Sse::Aes256),
            (Some("aws:kms"), key_id) => {
                if let Some(id) = &key_id {
                    object::plain_header(id).map_err(|e| bad("sse_kms_key_id", e))?;
                }
                Some(Sse::Kms { key_id })
            }
            (Some("AES256") | None, Some(_)) => {
                return Err(bad("sse_kms_key_id", "needs sse = \"aws:kms\"".to_owned()));
            }
            (Some(other), _) => {
                return Err(bad(
                    "sse",
                    format!("{other:?} is not one of \"AES256\", \"aws:kms\""),
                ));
            }
        };
        if let Some(c) = ri.cache_control.take() {
            o.cache_control = Some(object::plain_header(&c).map_err(|e| bad("cache_control", e))?);
        }
        Ok(o)
    }

    /// Where files go must never be watched as an inbox, or a moved file would come round
    /// again; and one inbox inside another would see every file twice.
    pub(super) fn check_nesting(
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

/// Reads a PEM bundle of CA certificates and checks each one as the TLS client will load it
/// (the client would panic on a bad one; here it is a configuration error instead).
fn read_ca_file(path: &Path) -> Result<Vec<u8>, String> {
    use rustls_pki_types::CertificateDer;
    use rustls_pki_types::pem::PemObject as _;
    let pem = std::fs::read(path).map_err(|e| format!("cannot read it: {e}"))?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("not a PEM certificate bundle: {e}"))?;
    if certs.is_empty() {
        return Err(
            "holds no certificate (expected one or more -----BEGIN CERTIFICATE----- blocks)".into(),
        );
    }
    let mut roots = rustls::RootCertStore::empty();
    for (i, cert) in certs.into_iter().enumerate() {
        roots
            .add(cert)
            .map_err(|e| format!("certificate {} is not usable as a CA: {e}", i + 1))?;
    }
    Ok(pem)
}

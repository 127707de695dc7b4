//! Validation: raw → [`Settings`], one function per section, in a file per group of
//! sections ([`s3`], [`upload`] with `[batch]`, [`daemon`] for how the daemon itself runs,
//! [`inbox`] with its [`object`] options). Each error names the key and where the bad value
//! came from (the file, or the exact environment variable).

use std::path::{Component, Path, PathBuf};
use std::time::Duration;

use figment::Figment;

use super::errors::env_var_name;
use super::raw::RawConfig;
use super::{ConfigError, Settings};

mod daemon;
mod inbox;
mod object;
mod s3;
mod upload;

/// What every check needs: the file (for messages), figment's metadata (to tell a value
/// from the environment), and the folder relative paths are relative to.
pub(super) struct Ctx<'a> {
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
                line: None,
                message: format!("key `{key}`: {msg}"),
            }
        } else {
            ConfigError::in_file(self.file, key, format!("key `{key}`: {msg}"))
        }
    }

    fn resolve(&self, p: &Path) -> PathBuf {
        absolute(&self.base.join(p))
    }
}

impl Settings {
    pub(super) fn validate(
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

//! Configuration: built-in defaults → one TOML file → `INBOXD_*` environment variables,
//! extracted with figment into raw structs, then validated into [`Settings`].
//!
//! Every error names the key and where the bad value came from (the file, or the exact
//! environment variable), because the person reading it is a sysadmin looking at a failed
//! `systemctl start`.
//!
//! This file loads; `settings` holds the validated shapes and their defaults, `raw` the
//! shapes figment extracts, `validate` turns one into the other (a file per section), and
//! `changes` says what a reload changed.

use std::path::Path;

use figment::Figment;
use figment::providers::{Env, Format, Toml};

mod changes;
mod errors;
mod raw;
mod settings;
mod units;
mod validate;
use errors::describe_figment;
use raw::RawConfig;
pub use settings::*;

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

#[cfg(test)]
mod tests;

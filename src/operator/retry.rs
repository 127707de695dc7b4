//! `inboxd retry`: files from failed/ back into their inbox, their reason files removed, so
//! that the pipeline takes them again. Works whether or not the daemon runs.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use super::failed::{failed_files, reason_path};
use crate::config::{InboxSettings, Settings};
use crate::run::EXIT_CONFIG_ERROR as CONFIG_ERROR;

/// The command: one line per file; exit 0 when every file asked for was moved, 1 when one was
/// skipped, 2 for an inbox the configuration does not name.
pub fn retry_command(settings: &Settings, inbox: Option<&str>, files: &[PathBuf]) -> ExitCode {
    if let Some(name) = inbox
        && !settings.inboxes.iter().any(|i| i.name == name)
    {
        eprintln!(
            "inboxd: no inbox named {name:?} in {}",
            settings.file.display()
        );
        return ExitCode::from(CONFIG_ERROR);
    }
    let done = retry(settings, inbox, files);
    let mut skipped = 0;
    for r in &done {
        match r {
            Retried::Moved { inbox, rel } => {
                println!("moved   {inbox}: {}", crate::telemetry::escape(rel));
            }
            Retried::Skipped { inbox, rel, why } => {
                skipped += 1;
                println!("skipped {inbox}: {}: {why}", crate::telemetry::escape(rel));
            }
        }
    }
    if done.is_empty() {
        println!("nothing to retry");
    }
    if skipped > 0 {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}

/// One file `retry` handled.
#[derive(Debug, PartialEq, Eq)]
pub enum Retried {
    Moved {
        inbox: String,
        rel: PathBuf,
    },
    /// Left in failed/: a file of that name is in the inbox already, or it cannot be moved.
    Skipped {
        inbox: String,
        rel: PathBuf,
        why: String,
    },
}

/// Moves files from failed/ back into their inbox, under the same relative path, and removes
/// their reason files: the pipeline takes them again (the ledger knows they were moved to
/// failed/, so they are uploaded again rather than failed again). `only` limits it to those
/// paths (relative to failed/, or absolute inside it); empty means everything.
pub fn retry(settings: &Settings, inbox: Option<&str>, only: &[PathBuf]) -> Vec<Retried> {
    let mut done = Vec::new();
    for i in settings
        .inboxes
        .iter()
        .filter(|i| inbox.is_none_or(|n| n == i.name))
    {
        let wanted: Vec<PathBuf> = only
            .iter()
            .filter_map(|p| match p.strip_prefix(&i.failed_dir) {
                Ok(rel) => Some(rel.to_path_buf()),
                Err(_) if p.is_relative() => Some(p.clone()),
                Err(_) => None,
            })
            .collect();
        let present = failed_files(i);
        for rel in &present {
            if !only.is_empty() && !wanted.contains(rel) {
                continue;
            }
            done.push(retry_one(i, rel));
        }
        if inbox.is_some() || settings.inboxes.len() == 1 {
            for rel in wanted.iter().filter(|w| !present.contains(w)) {
                done.push(Retried::Skipped {
                    inbox: i.name.clone(),
                    rel: rel.clone(),
                    why: format!("not in {}", i.failed_dir.display()),
                });
            }
        }
    }
    done
}

fn retry_one(i: &InboxSettings, rel: &Path) -> Retried {
    let skipped = |why: String| Retried::Skipped {
        inbox: i.name.clone(),
        rel: rel.to_path_buf(),
        why,
    };
    let from = i.failed_dir.join(rel);
    let to = i.path.join(rel);
    if std::fs::symlink_metadata(&to).is_ok() {
        return skipped(format!("{} exists already", to.display()));
    }
    if let Some(parent) = to.parent()
        && let Err(e) = std::fs::create_dir_all(parent)
    {
        return skipped(format!("cannot create {}: {e}", parent.display()));
    }
    match std::fs::rename(&from, &to) {
        Ok(()) => {}
        Err(e) if e.raw_os_error() == Some(libc::EXDEV) => {
            return skipped(format!(
                "{} is on another file system than the inbox; move it by hand",
                i.failed_dir.display()
            ));
        }
        Err(e) => return skipped(format!("cannot move it: {e}")),
    }
    // The reason belongs to the failed attempt; a new failure writes a new one.
    let _ = std::fs::remove_file(reason_path(&i.failed_dir, rel));
    Retried::Moved {
        inbox: i.name.clone(),
        rel: rel.to_path_buf(),
    }
}

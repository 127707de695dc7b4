//! The ledger: a sled database that remembers every file's fate so that restarts are safe.
//!
//! A file's identity is where it came from (inbox + path relative to the inbox) plus its
//! content (SHA-256). States move `uploading → uploaded → finished`, or end in `failed`.
//! Records are stored as versioned JSON so a later release can read what an earlier one wrote.
//!
//! sled is not durable until flushed: [`Ledger::flush`] must complete before a file is moved.
//!
//! `record` holds what is stored, `schema` its version and how a database is opened,
//! `store` the [`Ledger`] itself, `copy` the read-only [`LedgerCopy`]; this file the
//! errors and the clock every record is stamped with.

use std::path::PathBuf;
use std::time::{SystemTime, UNIX_EPOCH};

mod copy;
mod record;
mod schema;
mod store;

pub use copy::{CopyError, LedgerCopy};
pub use record::{AbandonedObject, Record, State};
pub use store::Ledger;

#[derive(Debug, thiserror::Error)]
pub enum LedgerError {
    #[error("cannot open the ledger in {dir}: {}", open_message(.source))]
    Open {
        dir: PathBuf,
        #[source]
        source: sled::Error,
    },
    #[error(
        "the ledger in {dir} was written by a newer inboxd (ledger schema {found}; this version \
         reads schema {supported} and older): run the newer inboxd again, or move that folder \
         away to start a new ledger (an identical file dropped again is then uploaded again)"
    )]
    Newer {
        dir: PathBuf,
        found: String,
        supported: u32,
    },
    #[error("ledger I/O error: {0}")]
    Io(#[from] sled::Error),
    #[error("ledger record is unreadable: {0}")]
    Decode(#[from] serde_json::Error),
}

/// Why the ledger cannot be opened, and what to do about it.
fn open_message(e: &sled::Error) -> String {
    match e {
        sled::Error::Corruption { .. } => format!(
            "{e} (the ledger is damaged: stop inboxd, move the state_dir's `ledger` folder aside \
             and start again; objects already in the bucket are recognised by their SHA-256 and \
             never stored twice; files in done/ and failed/ stay where they are)"
        ),
        // sled locks its file; for a second process it says so only in words (kind Other).
        sled::Error::Io(io) if io.to_string().starts_with("could not acquire lock") => {
            "it is in use by another inboxd process with this state_dir (the daemon?); stop \
             that one first (systemctl stop inboxd), or run this one with its own state_dir"
                .to_owned()
        }
        sled::Error::Io(io) if io.kind() == std::io::ErrorKind::PermissionDenied => {
            format!("{io} (the state_dir must be writable by the user inboxd runs as)")
        }
        _ => e.to_string(),
    }
}

pub fn now_rfc3339() -> String {
    humantime::format_rfc3339_millis(SystemTime::now()).to_string()
}

pub fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

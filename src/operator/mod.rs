//! Commands for the operator beside the daemon: `inboxd status` (asks the running daemon
//! through its operations listener; without one, looks at the folders), `inboxd ledger`
//! (asks the running daemon; without one, reads a copy of the ledger) and `inboxd retry`
//! (sends files from failed/ through the pipeline again). None ever writes the ledger.
//!
//! One file per command, each with the function the binary calls (it prints, and returns the
//! exit code by the binary's one rule: [`crate::run::EXIT_REFUSED`],
//! [`crate::run::EXIT_CONFIG_ERROR`]); `failed` reads what failed/ holds for two of them.

mod failed;
mod ledger;
mod retry;
mod status;

pub use ledger::{Asked, fetch_ledger, ledger_command};
pub use retry::{Retried, retry, retry_command};
pub use status::{fetch_status, offline_status, render_status, status_command};

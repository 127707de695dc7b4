//! settle: decides when a file is complete. A candidate becomes a [`ReadyFile`] once its
//! size, nanosecond mtime and inode have not changed for the inbox's settle window, measured
//! by this process (never by trusting mtime's age: clocks on network shares drift).
//!
//! Where the kernel can tell (a read lease), a quiet file that some process still holds open
//! for writing is not complete either: its writer may only be pausing.
//!
//! A file of a known format (PDF, ZIP, PNG, JPEG, TIFF, GIF; see [`mod@format`]) must also be
//! whole by its own structure; a cut one waits, and goes to failed/ after the inbox's
//! `incomplete_after`. On a local file system a file whose writer has closed it
//! ([`Hint::Closed`]) is looked at at once and may go without the settle window; see
//! [`CLOSE_PAUSE`].
//!
//! "Not yet complete" is a normal state, not an error. Ignored names (hidden files, `*.tmp`,
//! `*.part`, `~$*`, `Thumbs.db`, … in any component of the path) are skipped here, and
//! zero-byte files wait until they grow.
//!
//! The decisions are [`Settler`]'s (settler/: pure, time passed in); the stage loop
//! ([`SettleStage`], stage.rs) makes the looks (look.rs): each one a blocking call under its
//! inbox's [`FsGuard`](crate::stall::FsGuard), all of them concurrent, so a share that hangs
//! holds up only its own files. What it hands on is in ready.rs.
//!
//! In daemon mode a file stays in view while it is in flight, so that a file handed back
//! (deferred, inbox paused, changed during upload) is offered again exactly when its claim
//! allows, without waiting for a rescan.

use std::time::Duration;

use crate::config::InboxSettings;

pub mod format;
mod ignore;
mod look;
mod ready;
mod settler;
mod stage;
pub use ignore::{DEFAULT_IGNORES, Ignore};
pub use ready::{Kind, ReadyFile, Signature};
pub use settler::{CLOSE_PAUSE, Checked, Decision, Due, Hint, Look, RECHECK_MAX, Rules, Settler};
pub use stage::SettleStage;

/// The shortest settle window of all inboxes (for tests and messages).
pub fn shortest_settle(inboxes: &[InboxSettings]) -> Duration {
    inboxes
        .iter()
        .map(|i| i.settle)
        .min()
        .unwrap_or(Duration::from_secs(2))
}

//! The settle decisions without I/O (like [`crate::batch::Batcher`]): which files are due for a
//! look, and what a look's findings, the file's claim and the time mean for each. Settle's
//! stage loop (stage.rs) does the looking, on the blocking pool under the inbox's time limit.
//!
//! Here: the vocabulary (observations in, decisions out). In state.rs: the per-file state
//! and the timetable (windows, backoff). In decide.rs: what a look means.

use std::path::PathBuf;
use std::time::Duration;

use super::Signature;
use super::format::Whole;

mod decide;
mod state;
pub use state::Settler;

/// How long a file of no known format waits after its writer closed it before it goes on the
/// fast path. Some writers close a file and open it again to go on (a copy tool that sets
/// the times or writes a resource fork afterwards, an application that saves in two steps);
/// their next write comes within milliseconds. 300 ms is long enough for those and still
/// far below the default `settle` (2 s). A file whose format says it is whole needs no pause.
pub const CLOSE_PAUSE: Duration = Duration::from_millis(300);

/// The longest wait between two looks at a file that its format says is cut. The wait
/// starts at the settle window and doubles while the file stays unchanged and cut: each
/// look rereads its tail (up to 64 KiB for a ZIP), which on a network share costs round
/// trips, and a file left cut for minutes is rarely finished a second later. Kernel events
/// (a write, a close) end the wait at once on local disks, so this only bounds how late a
/// writer that resumes is noticed on a share or in poll mode.
pub const RECHECK_MAX: Duration = Duration::from_secs(30);

/// Per inbox: what settle needs to know to time a file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rules {
    pub settle: Duration,
    /// A file its format says is cut goes to failed/ once it has been in view this long.
    pub incomplete_after: Duration,
}

/// Why watch offers a path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hint {
    /// Found by a sweep, a poll or a rescan: nothing is known about it.
    Found,
    /// A kernel event said it changed.
    Changed,
    /// Its writer closed it (close-write on a local file system): worth a look at once.
    Closed,
}

/// The format check of one look.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Checked {
    /// Not made: the look did not ask (the file was not quiet, or was busy), or a writer
    /// still holds the file.
    NotAsked,
    /// This inbox does not check formats (`check_format = false`).
    Off,
    /// The file could not be opened to check it (permission denied, say). Not a verdict on
    /// its completeness: the upload stage reports a file it cannot read, and gives a
    /// permission that arrives late its time.
    Unopenable,
    /// What the check found.
    Found(Whole),
    /// Reading failed half way (an I/O error): not a verdict either; look again.
    Failed,
}

/// What one look at a path found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Look {
    /// Gone, or reachable only through a link: nothing to do (a new candidate comes if it
    /// returns).
    Gone,
    Dir,
    /// A link, FIFO, socket or device: it goes to failed/ as itself, with this reason.
    NotRegular {
        sig: Signature,
        reason: String,
    },
    /// A regular file. `writing` is the lease probe's answer when the look asked it (the file
    /// looked unchanged since the previous look, or its writer had just closed it), `None`
    /// when not asked or not knowable; `checked` the format check made with it.
    Regular {
        sig: Signature,
        writing: Option<bool>,
        checked: Checked,
    },
    /// The inbox's file system did not answer in time: nothing is known.
    Stalled,
}

/// What the stage loop should do after a look.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Nothing now: the file waits (the settler has its next look in its timetable) or has
    /// been dropped from view (a folder, an empty placeholder).
    Wait,
    /// It has gone: forget it, and any deferral of it.
    Forget,
    /// Complete: claim it and hand it on.
    Ready {
        inbox: usize,
        rel: PathBuf,
        sig: Signature,
    },
    /// Not a regular file: claim it and hand it on to be moved to failed/ with `reason`.
    NotRegular {
        inbox: usize,
        rel: PathBuf,
        sig: Signature,
        reason: String,
    },
    /// Like [`Decision::Wait`], the first time its format says it is cut (worth one line in
    /// the log: a file that waits longer than its settle window should say why).
    Cut {
        inbox: usize,
        rel: PathBuf,
        what: String,
    },
    /// `once` only: its format says it is cut. A run that ends when its files are done
    /// cannot wait `incomplete_after` for it: it stays in the inbox for the next run.
    LeftCut {
        inbox: usize,
        rel: PathBuf,
        what: String,
    },
    /// Its format says it is cut and it has stayed so for `incomplete_after`: claim it and
    /// hand it on to be moved to failed/ with `reason` (never uploaded half).
    Incomplete {
        inbox: usize,
        rel: PathBuf,
        sig: Signature,
        reason: String,
    },
}

/// A look the stage loop should make now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Due {
    pub path: PathBuf,
    pub inbox: usize,
    pub rel: PathBuf,
    /// The signature of the previous look: ask the lease probe only if the file still has it.
    pub unchanged_from: Option<Signature>,
    /// Its writer has closed it: ask the lease probe (and check the format) whatever the
    /// previous look saw.
    pub closed: bool,
}

#[cfg(test)]
mod tests;

//! What the checks found, as plain data: the child process that runs them as the service
//! user hands it to `check` as JSON, and `check` prints it.

use std::fmt;

use serde::{Deserialize, Serialize};

/// Which folder a problem is about, named as its configuration key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Folder {
    Inbox,
    DoneDir,
    FailedDir,
    StateDir,
}

impl fmt::Display for Folder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Folder::Inbox => "inbox",
            Folder::DoneDir => "done_dir",
            Folder::FailedDir => "failed_dir",
            Folder::StateDir => "state_dir",
        })
    }
}

/// Which of the four checks failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Check {
    Exists,
    Readable,
    Writable,
    Movable,
}

/// One thing the service would run into.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Problem {
    pub folder: Folder,
    /// The folder, as text (escaped like every path inboxd prints).
    pub path: String,
    pub check: Check,
    /// The rest of the sentence: what is wrong, as whom, and the system's answer.
    pub detail: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}: {}", self.folder, self.path, self.detail)
    }
}

/// What the checks found for one inbox (in the configuration's order).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct InboxReport {
    pub problems: Vec<Problem>,
}

/// What the checks found, as the user named in `user`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Report {
    pub user: String,
    pub state_dir: Vec<Problem>,
    pub inboxes: Vec<InboxReport>,
}

impl Report {
    pub fn is_ok(&self) -> bool {
        self.state_dir.is_empty() && self.inboxes.iter().all(|i| i.problems.is_empty())
    }
}

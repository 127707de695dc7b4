//! The records the ledger stores, as versioned JSON: one per file (where it came from, its
//! content, its state and everything needed to resume or finish it), and one per object the
//! daemon stored but never finished.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::now_rfc3339;
use super::schema::RECORD_VERSION;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum State {
    /// An upload was started; the object may or may not exist.
    Uploading,
    /// The object is in the bucket; the file may still be in the inbox.
    Uploaded,
    /// The file was moved to done/.
    Finished,
    /// The file was (or is being) moved to failed/.
    Failed,
}

/// Everything the ledger knows about one file.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Record {
    pub v: u32,
    pub inbox: String,
    pub rel_path: String,
    /// Hex SHA-256 of the content; `None` when the file could not be read.
    pub sha256: Option<String>,
    pub size: u64,
    pub state: State,
    pub bucket: String,
    /// The object key actually used (may differ from the default key after a conflict).
    pub key: Option<String>,
    pub etag: Option<String>,
    /// An unfinished multipart upload id, so it can be resumed or aborted after a crash.
    pub upload_id: Option<String>,
    /// Part size of that multipart upload.
    #[serde(default)]
    pub part_size: Option<u64>,
    /// Parts of that multipart upload already stored: (part number, ETag).
    #[serde(default)]
    pub parts: Vec<(u32, String)>,
    pub attempts: u32,
    pub reason: Option<String>,
    /// Final location in done/ or failed/.
    #[serde(serialize_with = "lossy_path")]
    pub dest: Option<PathBuf>,
    /// (device, inode) of an original that was copied to `dest` (another file system) but
    /// could not be removed from the inbox: that file is never copied again, only removed.
    #[serde(default)]
    pub source_left: Option<[u64; 2]>,
    /// How many times this exact file (same place, same content) has been dropped.
    pub drops: u32,
    /// When the file was first found complete (seconds since the Unix epoch, UTC): the
    /// moment a key template's dates come from, kept so that a retry after a restart (at
    /// midnight, say) renders the same key.
    #[serde(default)]
    pub found_at: Option<i64>,
    pub updated_at: String,
}

/// Writes a path as text, bytes that are not UTF-8 replaced by U+FFFD. A destination is read
/// by people and tested for presence, never opened, and a file whose name is not UTF-8 (it
/// goes to failed/ under that name) must not make its record unwritable.
fn lossy_path<S: serde::Serializer>(path: &Option<PathBuf>, s: S) -> Result<S::Ok, S::Error> {
    match path {
        Some(p) => s.serialize_some(&p.to_string_lossy()),
        None => s.serialize_none(),
    }
}

impl Record {
    pub fn new(inbox: &str, rel_path: &str, sha256: Option<&str>, size: u64, bucket: &str) -> Self {
        Record {
            v: RECORD_VERSION,
            inbox: inbox.to_owned(),
            rel_path: rel_path.to_owned(),
            sha256: sha256.map(str::to_owned),
            size,
            state: State::Uploading,
            bucket: bucket.to_owned(),
            key: None,
            etag: None,
            upload_id: None,
            part_size: None,
            parts: Vec::new(),
            attempts: 0,
            reason: None,
            dest: None,
            source_left: None,
            drops: 1,
            found_at: None,
            updated_at: now_rfc3339(),
        }
    }
}

/// An object we stored ourselves but never finished: the file changed after its upload, so
/// done/ could not hold the same bytes. The next version of the same file may replace
/// exactly this object (and nobody else's).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AbandonedObject {
    pub v: u32,
    pub sha256: String,
    pub size: u64,
    pub inbox: String,
    pub rel_path: String,
}

//! The ledger: a sled database that remembers every file's fate so that restarts are safe.
//!
//! A file's identity is where it came from (inbox + path relative to the inbox) plus its
//! content (SHA-256). States move `uploading → uploaded → finished`, or end in `failed`.
//! Records are stored as versioned JSON so a later release can read what an earlier one wrote.
//!
//! sled is not durable until flushed: [`Ledger::flush`] must complete before a file is moved.

use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

/// Version of the stored record layout.
const RECORD_VERSION: u32 = 1;

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

#[derive(Clone)]
pub struct Ledger {
    db: sled::Db,
    files: sled::Tree,
    abandoned: sled::Tree,
    /// What each endpoint and bucket was found to support (see upload::capabilities).
    capabilities: sled::Tree,
}

impl Ledger {
    pub fn open(dir: &Path) -> Result<Ledger, LedgerError> {
        if let Err(e) = std::fs::create_dir_all(dir) {
            return Err(LedgerError::Open {
                dir: dir.to_path_buf(),
                source: sled::Error::Io(e),
            });
        }
        let db = sled::Config::new()
            .path(dir.join("ledger"))
            .cache_capacity(16 * 1024 * 1024)
            .open()
            .map_err(|source| LedgerError::Open {
                dir: dir.to_path_buf(),
                source,
            })?;
        // Refuse a ledger from a newer release rather than misread (and then overwrite) records
        // whose meaning changed; an older schema is read as it is and marked current.
        check_schema(&db, dir)?;
        let files = db.open_tree("files")?;
        let abandoned = db.open_tree("abandoned")?;
        let capabilities = db.open_tree("capabilities")?;
        db.insert("schema", &RECORD_VERSION.to_be_bytes())?;
        Ok(Ledger {
            db,
            files,
            abandoned,
            capabilities,
        })
    }

    /// Key of a file record: inbox NUL rel_path NUL sha256-hex (or "-" when unknown).
    fn file_key(inbox: &str, rel_path: &str, sha256: Option<&str>) -> Vec<u8> {
        let mut k = Vec::with_capacity(inbox.len() + rel_path.len() + 66);
        k.extend_from_slice(inbox.as_bytes());
        k.push(0);
        k.extend_from_slice(rel_path.as_bytes());
        k.push(0);
        k.extend_from_slice(sha256.unwrap_or("-").as_bytes());
        k
    }

    fn object_key(bucket: &str, key: &str) -> Vec<u8> {
        let mut k = Vec::with_capacity(bucket.len() + key.len() + 1);
        k.extend_from_slice(bucket.as_bytes());
        k.push(0);
        k.extend_from_slice(key.as_bytes());
        k
    }

    pub fn get(
        &self,
        inbox: &str,
        rel_path: &str,
        sha256: Option<&str>,
    ) -> Result<Option<Record>, LedgerError> {
        match self.files.get(Self::file_key(inbox, rel_path, sha256))? {
            Some(bytes) => Ok(Some(serde_json::from_slice(&bytes)?)),
            None => Ok(None),
        }
    }

    /// Stores `rec` (not yet durable: call [`Ledger::flush`]).
    pub fn put(&self, rec: &mut Record) -> Result<(), LedgerError> {
        rec.updated_at = now_rfc3339();
        rec.v = RECORD_VERSION;
        let key = Self::file_key(&rec.inbox, &rec.rel_path, rec.sha256.as_deref());
        self.files.insert(key, serde_json::to_vec(rec)?)?;
        Ok(())
    }

    pub fn get_abandoned(
        &self,
        bucket: &str,
        key: &str,
    ) -> Result<Option<AbandonedObject>, LedgerError> {
        match self.abandoned.get(Self::object_key(bucket, key))? {
            Some(bytes) => Ok(Some(serde_json::from_slice(&bytes)?)),
            None => Ok(None),
        }
    }

    pub fn put_abandoned(
        &self,
        bucket: &str,
        key: &str,
        rec: &AbandonedObject,
    ) -> Result<(), LedgerError> {
        self.abandoned
            .insert(Self::object_key(bucket, key), serde_json::to_vec(rec)?)?;
        Ok(())
    }

    pub fn remove_abandoned(&self, bucket: &str, key: &str) -> Result<(), LedgerError> {
        self.abandoned.remove(Self::object_key(bucket, key))?;
        Ok(())
    }

    /// A remembered capability probe (opaque bytes; the upload stage owns their meaning).
    pub fn get_capabilities(&self, key: &str) -> Result<Option<Vec<u8>>, LedgerError> {
        Ok(self.capabilities.get(key)?.map(|v| v.to_vec()))
    }

    /// Remembers a capability probe; durable with the next flush (losing it costs a probe).
    pub fn put_capabilities(&self, key: &str, value: &[u8]) -> Result<(), LedgerError> {
        self.capabilities.insert(key, value)?;
        Ok(())
    }

    /// Makes every write so far durable (fsync). Required before any file is moved.
    ///
    /// On tokio's blocking pool rather than sled's `flush_async` (its own thread): the runtime
    /// then knows work is under way, so a paused test clock does not jump ahead while the
    /// fsync runs (tokio does not auto-advance during a `spawn_blocking` call).
    pub async fn flush(&self) -> Result<(), LedgerError> {
        let db = self.db.clone();
        match tokio::task::spawn_blocking(move || db.flush()).await {
            Ok(flushed) => flushed.map(|_| ()).map_err(LedgerError::Io),
            // Only a panic inside sled: report it as the I/O error it stands for.
            Err(e) => Err(LedgerError::Io(sled::Error::Io(std::io::Error::other(
                format!("ledger flush did not finish: {e}"),
            )))),
        }
    }

    /// Removes records last updated before `cutoff` that nothing depends on: finished,
    /// failed, and waiting ones without a multipart upload to resume. Returns how many.
    ///
    /// Safe for what the ledger promises: a file dropped again after its record is gone is
    /// recognised at the bucket (create-only write, then the object's sha256), never stored
    /// twice; only the `drops` count starts again. Blocking: run it on a blocking thread.
    pub fn prune(&self, cutoff: SystemTime) -> Result<usize, LedgerError> {
        let mut removed = 0;
        for item in self.files.iter() {
            let (key, value) = item?;
            let Ok(rec) = serde_json::from_slice::<Record>(&value) else {
                continue; // unreadable: leave it for a person to look at
            };
            // Settled records, and waiting ones that hold nothing to resume (a file deferred
            // or paused long ago and since deleted by hand). `uploaded` ones are kept: their
            // file still has to be moved.
            let prunable = match rec.state {
                State::Finished | State::Failed => true,
                State::Uploading => rec.upload_id.is_none(),
                State::Uploaded => false,
            };
            if !prunable {
                continue;
            }
            let Ok(updated) = humantime::parse_rfc3339(&rec.updated_at) else {
                continue;
            };
            if updated >= cutoff {
                continue;
            }
            // Only if unchanged since we read it: a record updated meanwhile stays.
            if self
                .files
                .compare_and_swap(&key, Some(&value), None::<&[u8]>)?
                .is_ok()
            {
                removed += 1;
            }
        }
        Ok(removed)
    }

    /// Every file record, in key order (for `inboxd ledger` and the startup clean-up).
    pub fn records(&self) -> impl Iterator<Item = Result<Record, LedgerError>> + '_ {
        records_of(&self.files)
    }
}

fn records_of(files: &sled::Tree) -> impl Iterator<Item = Result<Record, LedgerError>> + '_ {
    files.iter().map(|r| {
        let (_, v) = r?;
        Ok(serde_json::from_slice(&v)?)
    })
}

/// Checks the stored schema: a ledger of a newer release is refused (see [`Ledger::open`]).
fn check_schema(db: &sled::Db, dir: &Path) -> Result<(), LedgerError> {
    let found = db.get("schema")?;
    let found = found
        .as_deref()
        .map(|b| <[u8; 4]>::try_from(b).map(u32::from_be_bytes));
    match found {
        None => Ok(()),
        Some(Ok(v)) if v <= RECORD_VERSION => Ok(()),
        Some(Ok(v)) => Err(LedgerError::Newer {
            dir: dir.to_path_buf(),
            found: v.to_string(),
            supported: RECORD_VERSION,
        }),
        Some(Err(_)) => Err(LedgerError::Newer {
            dir: dir.to_path_buf(),
            found: "unknown".to_owned(),
            supported: RECORD_VERSION,
        }),
    }
}

/// The ledger of a stopped daemon, read without writing a byte in `state_dir`.
///
/// sled 0.34 has no read-only mode: opening a database creates `blobs/`, `conf` and `db`
/// when they are missing, takes an exclusive `flock` on `db`, may write a new `snap.*`
/// snapshot and rewrite the end of the log during recovery, and flushes again when dropped.
/// So this copies the ledger folder into a private temporary folder (in `$TMPDIR`, removed
/// again on drop) and opens the copy. While copying it holds a shared `flock` on `db`: a
/// daemon holds the exclusive one for as long as it runs, so the copy is never taken from a
/// ledger being written, and a daemon starting during the copy finds the ledger in use
/// (and, under systemd, is started again five seconds later).
pub struct LedgerCopy {
    files: sled::Tree,
    _db: sled::Db,
    _dir: tempfile::TempDir,
}

#[derive(Debug, thiserror::Error)]
pub enum CopyError {
    /// A daemon holds the ledger.
    #[error("the ledger in {0} is in use by a running inboxd")]
    InUse(PathBuf),
    #[error("cannot read the ledger in {dir}: {source}")]
    Io {
        dir: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Ledger(#[from] LedgerError),
}

impl LedgerCopy {
    /// `None` when `state_dir` holds no ledger yet (nothing is created then either).
    pub fn open(state_dir: &Path) -> Result<Option<LedgerCopy>, CopyError> {
        let src = state_dir.join("ledger");
        let io = |source: std::io::Error| CopyError::Io {
            dir: src.clone(),
            source,
        };
        // Opened read-only: a missing `db` stays missing.
        let db_file = match std::fs::File::open(src.join("db")) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(io(e)),
        };
        match rustix::fs::flock(&db_file, rustix::fs::FlockOperation::NonBlockingLockShared) {
            Ok(()) => {}
            Err(rustix::io::Errno::WOULDBLOCK) => return Err(CopyError::InUse(src)),
            Err(e) => return Err(io(e.into())),
        }
        let tmp = tempfile::Builder::new()
            .prefix("inboxd-ledger-")
            .tempdir()
            .map_err(|e| CopyError::Io {
                dir: std::env::temp_dir(),
                source: e,
            })?;
        let copy = tmp.path().join("ledger");
        copy_tree(&src, &copy).map_err(io)?;
        // The copy is complete: the daemon may have the ledger again.
        drop(db_file);
        let db = sled::Config::new()
            .path(&copy)
            .cache_capacity(16 * 1024 * 1024)
            .open()
            .map_err(|source| LedgerError::Open {
                dir: state_dir.to_path_buf(),
                source,
            })?;
        check_schema(&db, state_dir)?;
        let files = db.open_tree("files").map_err(LedgerError::Io)?;
        Ok(Some(LedgerCopy {
            files,
            _db: db,
            _dir: tmp,
        }))
    }

    /// Every file record, in key order (the same as [`Ledger::records`]).
    pub fn records(&self) -> impl Iterator<Item = Result<Record, LedgerError>> + '_ {
        records_of(&self.files)
    }
}

/// Copies the folders and regular files below `from` to `to` (sled keeps nothing else there).
fn copy_tree(from: &Path, to: &Path) -> std::io::Result<()> {
    for entry in walkdir::WalkDir::new(from).follow_links(false) {
        let entry = entry.map_err(std::io::Error::other)?;
        let Ok(rel) = entry.path().strip_prefix(from) else {
            continue;
        };
        let target = to.join(rel);
        if entry.file_type().is_dir() {
            std::fs::create_dir_all(&target)?;
        } else if entry.file_type().is_file() {
            std::fs::copy(entry.path(), &target)?;
        }
    }
    Ok(())
}

/// What the admin can do about a ledger that does not open.
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

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn records_survive_reopen() {
        let dir = tempfile::tempdir().unwrap();
        {
            let l = Ledger::open(dir.path()).unwrap();
            let mut r = Record::new("scans", "a/b.pdf", Some("ab"), 3, "bkt");
            r.state = State::Uploaded;
            r.key = Some("in/a/b.pdf".into());
            l.put(&mut r).unwrap();
            l.flush().await.unwrap();
        }
        let l = Ledger::open(dir.path()).unwrap();
        let r = l.get("scans", "a/b.pdf", Some("ab")).unwrap().unwrap();
        assert_eq!(r.state, State::Uploaded);
        assert_eq!(r.key.as_deref(), Some("in/a/b.pdf"));
        assert!(l.get("scans", "a/b.pdf", Some("cd")).unwrap().is_none());
        assert_eq!(l.records().count(), 1);
    }

    #[test]
    fn a_ledger_of_a_newer_schema_is_refused_and_left_untouched() {
        let dir = tempfile::tempdir().unwrap();
        drop(Ledger::open(dir.path()).unwrap());
        {
            let db = sled::open(dir.path().join("ledger")).unwrap();
            db.insert("schema", &(RECORD_VERSION + 1).to_be_bytes())
                .unwrap();
            db.flush().unwrap();
        }
        let err = Ledger::open(dir.path())
            .err()
            .expect("a newer ledger was opened");
        let msg = err.to_string();
        assert!(matches!(err, LedgerError::Newer { .. }), "{msg}");
        assert!(
            msg.contains(&format!("schema {}", RECORD_VERSION + 1)),
            "{msg}"
        );
        assert!(msg.contains(&dir.path().display().to_string()), "{msg}");
        // Refused without writing: the newer release still finds its own schema.
        let db = sled::open(dir.path().join("ledger")).unwrap();
        let schema = db.get("schema").unwrap().unwrap();
        assert_eq!(schema.as_ref(), &(RECORD_VERSION + 1).to_be_bytes());
    }

    #[tokio::test]
    async fn prune_removes_only_old_settled_records() {
        let dir = tempfile::tempdir().unwrap();
        let l = Ledger::open(dir.path()).unwrap();
        for (name, state, upload_id) in [
            ("done.pdf", State::Finished, None),
            ("bad.pdf", State::Failed, None),
            ("waited.pdf", State::Uploading, None),
            ("busy.pdf", State::Uploading, Some("mpu-1")),
            ("moving.pdf", State::Uploaded, None),
        ] {
            let mut r = Record::new("in", name, Some("ab"), 1, "b");
            r.state = state;
            r.upload_id = upload_id.map(str::to_owned);
            l.put(&mut r).unwrap();
        }
        // Nothing is older than an hour ago.
        let hour_ago = SystemTime::now() - std::time::Duration::from_secs(3600);
        assert_eq!(l.prune(hour_ago).unwrap(), 0);
        // Everything is older than an hour from now: only settled records go.
        let later = SystemTime::now() + std::time::Duration::from_secs(3600);
        assert_eq!(l.prune(later).unwrap(), 3);
        let left: Vec<String> = l.records().map(|r| r.unwrap().rel_path).collect();
        assert_eq!(left, vec!["busy.pdf", "moving.pdf"]);
    }

    #[test]
    fn a_destination_that_is_not_utf8_is_recorded() {
        use std::os::unix::ffi::OsStrExt;
        let dir = tempfile::tempdir().unwrap();
        let l = Ledger::open(dir.path()).unwrap();
        let mut r = Record::new("in", "bad\u{fffd}.pdf", None, 1, "b");
        r.state = State::Failed;
        r.dest = Some(PathBuf::from(std::ffi::OsStr::from_bytes(
            b"/failed/bad\xff.pdf",
        )));
        l.put(&mut r)
            .expect("a name that is not UTF-8 must not make the record unwritable");
        let back = l.get("in", "bad\u{fffd}.pdf", None).unwrap().unwrap();
        assert_eq!(back.dest, Some(PathBuf::from("/failed/bad\u{fffd}.pdf")));
    }

    #[test]
    fn second_open_is_refused_with_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        let _l = Ledger::open(dir.path()).unwrap();
        let e = Ledger::open(dir.path()).err().unwrap();
        assert!(e.to_string().contains("another inboxd"), "{e}");
    }
}

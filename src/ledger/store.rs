//! The store: the sled trees (file records, abandoned objects, remembered capability probes)
//! and the reads and writes on them, flushed before any file moves.

use std::path::Path;
use std::time::SystemTime;

use super::schema::{RECORD_VERSION, open_db};
use super::{AbandonedObject, LedgerError, Record, State, now_rfc3339};

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
        let db = open_db(&dir.join("ledger"), dir)?;
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

pub(super) fn records_of(
    files: &sled::Tree,
) -> impl Iterator<Item = Result<Record, LedgerError>> + '_ {
    files.iter().map(|r| {
        let (_, v) = r?;
        Ok(serde_json::from_slice(&v)?)
    })
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

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

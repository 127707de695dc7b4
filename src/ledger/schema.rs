//! The ledger's schema: the version of the stored record layout, and the one way a sled
//! database is opened, which refuses a ledger written by a newer release.

use std::path::Path;

use super::LedgerError;

/// Version of the stored record layout.
pub(super) const RECORD_VERSION: u32 = 1;

/// Opens the sled database at `path` and checks its schema; `dir` names the ledger in
/// messages (the state_dir, also for a private copy of it).
pub(super) fn open_db(path: &Path, dir: &Path) -> Result<sled::Db, LedgerError> {
    let db = sled::Config::new()
        .path(path)
        .cache_capacity(16 * 1024 * 1024)
        .open()
        .map_err(|source| LedgerError::Open {
            dir: dir.to_path_buf(),
            source,
        })?;
    // Refuse a ledger from a newer release rather than misread (and then overwrite) records
    // whose meaning changed; an older schema is read as it is (and marked current by a
    // [`super::Ledger`] that opens it).
    check_schema(&db, dir)?;
    Ok(db)
}

/// Checks the stored schema: a ledger of a newer release is refused.
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ledger::Ledger;

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
}

//! Content hashing: SHA-256 of a whole file, streamed with a fixed buffer (memory does not
//! grow with file size), checking that the file did not change while it was read.

use std::io::Read;
use std::path::Path;

use sha2::{Digest, Sha256};

use crate::settle::Signature;

const BUF: usize = 1024 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum HashError {
    #[error("cannot read the file: {0}")]
    Io(#[from] std::io::Error),
    /// Size, mtime or inode differ from what settle saw: the file is being written again.
    #[error("the file changed while it was being read")]
    Changed,
}

/// Hex SHA-256 of the file at `path`, provided it still matches `expected` before and after.
/// Blocking: run it on a blocking thread.
pub fn sha256_file(path: &Path, expected: &Signature) -> Result<[u8; 32], HashError> {
    let mut f = std::fs::File::open(path)?;
    if Signature::of(&f.metadata()?) != *expected {
        return Err(HashError::Changed);
    }
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; BUF];
    let mut total = 0u64;
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        total += n as u64;
        hasher.update(&buf[..n]);
    }
    if total != expected.size || Signature::of(&std::fs::symlink_metadata(path)?) != *expected {
        return Err(HashError::Changed);
    }
    Ok(hasher.finalize().into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashes_and_notices_changes() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("f");
        std::fs::write(&p, b"abc").unwrap();
        let sig = Signature::of(&std::fs::metadata(&p).unwrap());
        let h = sha256_file(&p, &sig).unwrap();
        assert_eq!(
            hex::encode(h),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        std::fs::write(&p, b"abcd").unwrap();
        assert!(matches!(sha256_file(&p, &sig), Err(HashError::Changed)));
    }
}

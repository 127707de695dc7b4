//! Content hashing: SHA-256 of a whole file, streamed with a fixed buffer (memory does not
//! grow with file size), checking that the file did not change while it was read.

use std::io::Read;
use std::path::Path;

use md5::Md5;
use sha2::{Digest, Sha256};

use crate::settle::Signature;

const BUF: usize = 1024 * 1024;

/// Files up to this size are read into memory once, hashed, and sent from memory.
pub const SMALL: u64 = 256 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum HashError {
    #[error("cannot read the file: {0}")]
    Io(#[from] std::io::Error),
    /// Size, mtime or inode differ from what settle saw: the file is being written again.
    #[error("the file changed while it was being read")]
    Changed,
}

/// SHA-256 of a whole file, and of every `part_size` slice of it when a part size is
/// given (multipart uploads send each part with its own checksum), in one read of the file.
#[derive(Debug, Clone)]
pub struct Digests {
    pub whole: [u8; 32],
    pub parts: Vec<[u8; 32]>,
    /// The whole content, when asked for (small files only).
    pub content: Option<Vec<u8>>,
    /// MD5 of the whole file and of each part, when asked for: sent as `Content-MD5` to a
    /// server that verifies that but not SHA-256 (see upload::capabilities).
    pub md5: Option<[u8; 16]>,
    pub part_md5s: Vec<[u8; 16]>,
}

/// What to compute besides the file's SHA-256.
#[derive(Debug, Clone, Copy, Default)]
pub struct Want {
    /// Per-part digests for this part size (a multiple of the read buffer, as every valid
    /// S3 part size is: whole MiB).
    pub part_size: Option<u64>,
    /// Keep the content (only for files of at most [`SMALL`] bytes without parts).
    pub keep: bool,
    /// MD5 digests too.
    pub md5: bool,
}

/// SHA-256 of the file `root/rel` (never through a link, never anything but a regular file),
/// provided it still matches `expected` before and after. Blocking: run it on a blocking
/// thread.
pub fn sha256_file(root: &Path, rel: &Path, expected: &Signature) -> Result<[u8; 32], HashError> {
    Ok(digests(root, rel, expected, Want::default(), &|| {})?.whole)
}

/// Like [`sha256_file`], plus what `want` asks for.
pub fn digests(
    root: &Path,
    rel: &Path,
    expected: &Signature,
    want: Want,
    tick: &dyn Fn(),
) -> Result<Digests, HashError> {
    let part_size = want.part_size;
    let keep = want.keep && expected.size <= SMALL && part_size.is_none();
    let mut md5 = want.md5.then(Md5::new);
    let mut part_md5 = (want.md5 && part_size.is_some()).then(Md5::new);
    let mut part_md5s = Vec::new();
    let mut content = keep.then(|| Vec::with_capacity(expected.size as usize));
    let (mut f, opened) = crate::beneath::Root::open(root)?.open_file(rel)?;
    if Signature::of(&opened) != *expected {
        return Err(HashError::Changed);
    }
    let mut hasher = Sha256::new();
    let mut part = Sha256::new();
    let mut parts = Vec::new();
    let mut in_part = 0u64;
    if let Some(c) = content.as_mut() {
        // Small file: one read straight into the buffer that will be sent.
        (&mut f).take(SMALL + 1).read_to_end(c)?;
        // The open file, not its name, is checked: what was read is what is sent. A name
        // that meanwhile points elsewhere is caught by the look after the upload, as ever.
        if c.len() as u64 != expected.size || Signature::of(&f.metadata()?) != *expected {
            return Err(HashError::Changed);
        }
        return Ok(Digests {
            whole: Sha256::digest(c.as_slice()).into(),
            parts: Vec::new(),
            md5: want.md5.then(|| Md5::digest(c.as_slice()).into()),
            part_md5s: Vec::new(),
            content,
        });
    }
    // Sized to the file when it is smaller than the usual buffer: a large zeroed allocation
    // per small file costs an mmap/munmap pair (and cross-thread TLB flushes) for nothing.
    let mut buf = vec![0u8; (expected.size as usize).clamp(4096, BUF)];
    let mut total = 0u64;
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        // Still moving: a long read of a large file is not a hung share.
        tick();
        total += n as u64;
        let mut chunk = &buf[..n];
        hasher.update(chunk);
        if let Some(m) = md5.as_mut() {
            m.update(chunk);
        }
        if let Some(ps) = part_size {
            while !chunk.is_empty() {
                let take = ((ps - in_part) as usize).min(chunk.len());
                part.update(&chunk[..take]);
                if let Some(m) = part_md5.as_mut() {
                    m.update(&chunk[..take]);
                }
                in_part += take as u64;
                chunk = &chunk[take..];
                if in_part == ps {
                    parts.push(std::mem::take(&mut part).finalize().into());
                    if let Some(m) = part_md5.as_mut() {
                        part_md5s.push(std::mem::take(m).finalize().into());
                    }
                    in_part = 0;
                }
            }
        }
    }
    if part_size.is_some() && in_part > 0 {
        parts.push(part.finalize().into());
        if let Some(m) = part_md5 {
            part_md5s.push(m.finalize().into());
        }
    }
    if total != expected.size || Signature::of(&crate::beneath::metadata(root, rel)?) != *expected {
        return Err(HashError::Changed);
    }
    Ok(Digests {
        whole: hasher.finalize().into(),
        parts,
        content,
        md5: md5.map(|m| m.finalize().into()),
        part_md5s,
    })
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
        let (root, rel) = (p.parent().unwrap(), Path::new("f"));
        let h = sha256_file(root, rel, &sig).unwrap();
        let want = Want {
            keep: true,
            md5: true,
            ..Want::default()
        };
        let d = digests(root, rel, &sig, want, &|| {}).unwrap();
        assert_eq!(
            hex::encode(d.md5.unwrap()),
            "900150983cd24fb0d6963f7d28e17f72"
        );
        assert_eq!((d.whole, d.content.as_deref()), (h, Some(&b"abc"[..])));
        assert_eq!(
            hex::encode(h),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        std::fs::write(&p, b"abcd").unwrap();
        assert!(matches!(
            sha256_file(root, rel, &sig),
            Err(HashError::Changed)
        ));
    }

    #[test]
    fn part_digests_match_slices() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("f");
        let data: Vec<u8> = (0..(5 * BUF + 123)).map(|i| (i * 7 % 251) as u8).collect();
        std::fs::write(&p, &data).unwrap();
        let sig = Signature::of(&std::fs::metadata(&p).unwrap());
        let part = 2 * BUF as u64;
        let want = Want {
            part_size: Some(part),
            md5: true,
            ..Want::default()
        };
        let got = digests(d.path(), Path::new("f"), &sig, want, &|| {}).unwrap();
        let want_md5s: Vec<[u8; 16]> = data
            .chunks(part as usize)
            .map(|c| Md5::digest(c).into())
            .collect();
        assert_eq!(got.part_md5s, want_md5s);
        assert_eq!(got.md5, Some(Md5::digest(&data).into()));
        let want: Vec<[u8; 32]> = data
            .chunks(part as usize)
            .map(|c| Sha256::digest(c).into())
            .collect();
        assert_eq!(got.parts, want);
        assert_eq!(got.parts.len(), 3);
        assert_eq!(got.whole, <[u8; 32]>::from(Sha256::digest(&data)));
    }
}

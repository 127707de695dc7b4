//! Object keys: where a file lands in the bucket.

use std::path::{Component, Path};

/// S3's limit on key length, in UTF-8 bytes.
pub const MAX_KEY_BYTES: usize = 1024;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum KeyError {
    #[error("the file name is not valid UTF-8, so it cannot become an S3 key")]
    NotUtf8,
    #[error("the object key would be {0} bytes long; S3 allows at most 1024")]
    TooLong(usize),
    #[error("the path contains an unusable component")]
    BadComponent,
}

/// The default key: `prefix` + the path relative to the inbox, '/'-separated.
pub fn object_key(prefix: &str, rel: &Path) -> Result<String, KeyError> {
    let mut key = String::from(prefix);
    let mut first = true;
    for c in rel.components() {
        let Component::Normal(part) = c else {
            return Err(KeyError::BadComponent);
        };
        let part = part.to_str().ok_or(KeyError::NotUtf8)?;
        if !first {
            key.push('/');
        }
        key.push_str(part);
        first = false;
    }
    if first {
        return Err(KeyError::BadComponent);
    }
    if key.len() > MAX_KEY_BYTES {
        return Err(KeyError::TooLong(key.len()));
    }
    Ok(key)
}

/// The key used when a different object already sits at `key`: the first 12 hex digits of
/// the file's SHA-256 before the last extension (`a/scan.pdf` → `a/scan.3f2a9c1b7d0e.pdf`).
/// Deterministic, so retrying the same file always picks the same key.
pub fn conflict_key(key: &str, sha256_hex: &str) -> String {
    let tag = &sha256_hex[..sha256_hex.len().min(12)];
    let name_start = key.rfind('/').map_or(0, |i| i + 1);
    let name = &key[name_start..];
    match name.rfind('.') {
        Some(dot) if dot > 0 => {
            let at = name_start + dot;
            format!("{}.{tag}{}", &key[..at], &key[at..])
        }
        _ => format!("{key}.{tag}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::ffi::OsStr;
    use std::os::unix::ffi::OsStrExt;
    use std::path::PathBuf;

    #[test]
    fn keys_join_with_slashes() {
        assert_eq!(
            object_key("incoming/", Path::new("März/Übersicht ñ.pdf")).unwrap(),
            "incoming/März/Übersicht ñ.pdf"
        );
        assert_eq!(object_key("", Path::new("a")).unwrap(), "a");
        assert_eq!(object_key("p-", Path::new("a/b")).unwrap(), "p-a/b");
    }

    #[test]
    fn bad_names_are_refused() {
        let bad = PathBuf::from(OsStr::from_bytes(b"caf\xe9.pdf"));
        assert_eq!(object_key("", &bad), Err(KeyError::NotUtf8));
        let long = "x".repeat(1100);
        assert!(matches!(
            object_key("", Path::new(&long)),
            Err(KeyError::TooLong(1100))
        ));
        assert_eq!(object_key("", Path::new("")), Err(KeyError::BadComponent));
    }

    #[test]
    fn conflict_keys_keep_the_extension() {
        let sha = "3f2a9c1b7d0e55aa";
        assert_eq!(conflict_key("in/scan.pdf", sha), "in/scan.3f2a9c1b7d0e.pdf");
        assert_eq!(conflict_key("in/README", sha), "in/README.3f2a9c1b7d0e");
        assert_eq!(conflict_key("in.d/README", sha), "in.d/README.3f2a9c1b7d0e");
        assert_eq!(conflict_key(".env", sha), ".env.3f2a9c1b7d0e");
        assert_eq!(conflict_key("a.tar.gz", sha), "a.tar.3f2a9c1b7d0e.gz");
    }
}

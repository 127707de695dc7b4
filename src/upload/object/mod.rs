//! How a file looks in the bucket: its key (the inbox's key template, rendered below
//! `prefix`) and its object options (`Content-Type`, metadata, tags, storage class,
//! server-side encryption, `Cache-Control`). Parsed once with the configuration, rendered per
//! file from facts fixed once (see [`Facts`]). Pure.
//!
//! Also: which of the options a server's refusal is about, so that a server without (say)
//! SSE pauses the inbox with a message naming the key instead of failing files one by one
//! (`refusal.rs`); and the checks the configuration makes on each option (`checks.rs`).

use std::path::Path;

use super::keys::{self, KeyError};
use super::template::{Facts, Template};

mod checks;
mod refusal;

pub use checks::{metadata_name, plain_header, storage_class, tagging};

/// `sse`: server-side encryption the server applies with its own keys.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Sse {
    /// `"AES256"`: keys managed by the storage service (SSE-S3).
    Aes256,
    /// `"aws:kms"`: a KMS key, the account's default one when `key_id` is `None`.
    Kms { key_id: Option<String> },
}

impl Sse {
    /// The value of `x-amz-server-side-encryption`.
    pub fn header(&self) -> &'static str {
        match self {
            Sse::Aes256 => "AES256",
            Sse::Kms { .. } => "aws:kms",
        }
    }
}

/// One inbox's object settings, checked when the configuration is loaded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectSettings {
    /// `key`: below `prefix`; the default is the relative path.
    pub key: Template,
    /// `content_type`: replaces the type guessed from the file name.
    pub content_type: Option<String>,
    /// `metadata`: `x-amz-meta-<name>` (names lower-case), values may hold placeholders.
    pub metadata: Vec<(String, Template)>,
    /// `tags`, already encoded as `x-amz-tagging` wants them (`k=v&k2=v2`).
    pub tagging: Option<String>,
    pub storage_class: Option<String>,
    pub sse: Option<Sse>,
    pub cache_control: Option<String>,
}

impl Default for ObjectSettings {
    fn default() -> Self {
        ObjectSettings {
            key: Template::default_key(),
            content_type: None,
            metadata: Vec::new(),
            tagging: None,
            storage_class: None,
            sse: None,
            cache_control: None,
        }
    }
}

/// What one object is sent with, rendered for one file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dressing {
    pub content_type: String,
    /// User metadata, values safe for an HTTP header (see [`header_value`]).
    pub metadata: Vec<(String, String)>,
    pub tagging: Option<String>,
    pub storage_class: Option<String>,
    pub sse: Option<Sse>,
    pub cache_control: Option<String>,
}

/// The metadata name inboxd itself writes (the content's SHA-256, by which it recognises its
/// own objects): not available to `metadata`.
pub const OWN_METADATA: &str = "sha256";

impl ObjectSettings {
    /// Whether rendering depends on when the file was found complete: then that moment must be
    /// kept in the ledger before the upload starts, so that a retry after a restart renders
    /// the same key.
    pub fn uses_time(&self) -> bool {
        self.key.uses_time() || self.metadata.iter().any(|(_, t)| t.uses_time())
    }

    /// The object key: `prefix` + the rendered template, within S3's length limit.
    pub fn key(&self, prefix: &str, rel: &Path, facts: &Facts<'_>) -> Result<String, String> {
        if self.key.is_default() {
            return keys::object_key(prefix, rel).map_err(|e| e.to_string());
        }
        let below = self.key.render(facts)?;
        let key = format!("{prefix}{below}");
        if key.len() > keys::MAX_KEY_BYTES {
            return Err(KeyError::TooLong(key.len()).to_string());
        }
        Ok(key)
    }

    /// Everything but the key, for one file.
    pub fn dress(&self, rel: &Path, facts: &Facts<'_>) -> Dressing {
        Dressing {
            content_type: self
                .content_type
                .clone()
                .unwrap_or_else(|| super::s3::content_type(rel).to_owned()),
            metadata: self
                .metadata
                .iter()
                .map(|(name, t)| (name.clone(), header_value(&t.render_value(facts))))
                .collect(),
            tagging: self.tagging.clone(),
            storage_class: self.storage_class.clone(),
            sse: self.sse.clone(),
            cache_control: self.cache_control.clone(),
        }
    }
}

/// A metadata value as it can travel in an HTTP header: printable ASCII as it is; anything
/// else (non-ASCII names, control characters, spaces at the ends that HTTP would trim) as an
/// RFC 2047 encoded word, which AWS S3 decodes on store and other servers keep verbatim.
/// Never an invalid header, whatever bytes a file name holds.
pub fn header_value(value: &str) -> String {
    let plain = value.bytes().all(|b| (0x20..0x7f).contains(&b))
        && !value.starts_with(' ')
        && !value.ends_with(' ')
        && !value.contains("  ")
        && !value.starts_with("=?");
    if plain {
        return value.to_owned();
    }
    use base64::Engine as _;
    format!(
        "=?UTF-8?B?{}?=",
        base64::engine::general_purpose::STANDARD.encode(value.as_bytes())
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::upload::template::tests::facts;

    #[test]
    fn keys_render_below_the_prefix() {
        let mut o = ObjectSettings::default();
        let p = Path::new("a/scan.pdf");
        assert_eq!(
            o.key("in/", p, &facts("a/scan.pdf")).unwrap(),
            "in/a/scan.pdf"
        );
        assert!(!o.uses_time());
        o.key = Template::parse("{yyyy}/{mm}/{dd}/{name}").unwrap();
        assert!(o.uses_time());
        assert_eq!(
            o.key("in/", p, &facts("a/scan.pdf")).unwrap(),
            "in/2026/11/29/scan.pdf"
        );
        o.key = Template::parse("{dir}/{name}").unwrap();
        let long = format!("{}.pdf", "x".repeat(1100));
        assert!(
            o.key("", Path::new(&long), &facts(&long))
                .unwrap_err()
                .contains("1024")
        );
    }

    #[test]
    fn metadata_values_are_always_valid_headers() {
        assert_eq!(header_value("scan.pdf"), "scan.pdf");
        assert_eq!(header_value("a b"), "a b");
        for odd in ["Übersicht.pdf", "a\nb", " lead", "trail ", "a  b", "=?x?="] {
            let v = header_value(odd);
            assert!(
                v.starts_with("=?UTF-8?B?") && v.ends_with("?="),
                "{odd:?} → {v}"
            );
            assert!(v.bytes().all(|b| (0x21..0x7f).contains(&b)));
        }
        let o = ObjectSettings {
            metadata: vec![(
                "source".into(),
                Template::parse_value("{inbox}/{name}").unwrap(),
            )],
            ..ObjectSettings::default()
        };
        let d = o.dress(Path::new("x/Ü.pdf"), &facts("x/Ü.pdf"));
        assert_eq!(d.content_type, "application/pdf");
        assert_eq!(d.metadata[0].0, "source");
        assert!(d.metadata[0].1.starts_with("=?UTF-8?B?"));
    }
}

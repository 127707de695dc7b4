//! How a file looks in the bucket: its key (the inbox's key template, rendered below
//! `prefix`) and its object options (`Content-Type`, metadata, tags, storage class,
//! server-side encryption, `Cache-Control`). Parsed once with the configuration, rendered per
//! file from facts fixed once (see [`Facts`]). Pure.
//!
//! Also: which of the options a server's refusal is about, so that a server without (say)
//! SSE pauses the inbox with a message naming the key instead of failing files one by one.

use std::path::Path;

use super::keys::{self, KeyError};
use super::template::{Facts, Template};

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

/// S3's limits on tags.
const MAX_TAGS: usize = 10;
const MAX_TAG_KEY: usize = 128;
const MAX_TAG_VALUE: usize = 256;

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

    /// The option a server's refusal (error `code` and `message`) is about, as its config key
    /// and value, when it can be told. A refusal that names no option we set is not ours to
    /// explain (it stays the file's own failure, or the classifier's).
    pub fn refused_option(&self, code: Option<&str>, message: &str) -> Option<String> {
        let msg = message.to_ascii_lowercase();
        let code = code.unwrap_or("");
        let class = self
            .storage_class
            .as_ref()
            .map(|c| format!("storage_class = {c:?}"));
        let sse = self.sse.as_ref().map(|s| match s {
            Sse::Kms { key_id: Some(id) } => {
                format!("sse = \"aws:kms\" with sse_kms_key_id = {id:?}")
            }
            s => format!("sse = {:?}", s.header()),
        });
        let tags = self.tagging.as_ref().map(|_| "tags".to_owned());
        let cache = self
            .cache_control
            .as_ref()
            .map(|c| format!("cache_control = {c:?}"));
        let about = |words: &[&str]| words.iter().any(|w| msg.contains(w));
        let named = match code {
            "InvalidStorageClass" => class.clone(),
            "InvalidTag" | "MalformedTag" | "InvalidTagging" => tags.clone(),
            "InvalidEncryptionAlgorithmError" | "KMSNotConfigured" => sse.clone(),
            c if c.starts_with("KMS.") => sse.clone(),
            _ => None,
        };
        if named.is_some() {
            return named;
        }
        // Refusals whose code says "not supported" or "bad argument": the message names the
        // header (AWS, MinIO and Ceph all do).
        let generic = matches!(
            code,
            "NotImplemented" | "InvalidArgument" | "InvalidRequest" | "AccessDenied"
        );
        if !generic {
            return None;
        }
        if about(&["storage class", "storage-class", "storageclass"]) && class.is_some() {
            return class;
        }
        if about(&["encryption", "kms", "x-amz-server-side"]) && sse.is_some() {
            return sse;
        }
        if about(&["tagging", " tag", "tags"]) && tags.is_some() {
            return tags;
        }
        if about(&["cache-control"]) && cache.is_some() {
            return cache;
        }
        // "Not implemented" without saying what: every option we set is a suspect; a server
        // that lacks the basics (PUT) is not a case that gets here.
        if code == "NotImplemented" {
            let set: Vec<String> = [class, sse, tags, cache].into_iter().flatten().collect();
            if !set.is_empty() {
                return Some(format!("one of: {}", set.join(", ")));
            }
        }
        None
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

/// Checks one metadata name; returns it lower-cased (S3 stores names lower-cased).
pub fn metadata_name(name: &str) -> Result<String, String> {
    if name.is_empty()
        || !name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    {
        return Err(format!(
            "metadata name {name:?} may hold only letters, digits, '-' and '_'"
        ));
    }
    let lower = name.to_ascii_lowercase();
    if lower == OWN_METADATA {
        return Err(format!(
            "metadata name {name:?} is inboxd's own (the content's SHA-256); choose another"
        ));
    }
    Ok(lower)
}

/// Checks the tags against S3's rules and encodes them for `x-amz-tagging`.
pub fn tagging(tags: &[(String, String)]) -> Result<Option<String>, String> {
    if tags.is_empty() {
        return Ok(None);
    }
    if tags.len() > MAX_TAGS {
        return Err(format!(
            "has {} tags; S3 allows at most {MAX_TAGS} per object",
            tags.len()
        ));
    }
    // S3's allowed characters: letters, digits, spaces and + - = . _ : / @
    let allowed = |s: &str| {
        s.chars()
            .all(|c| c.is_alphanumeric() || c == ' ' || "+-=._:/@".contains(c))
    };
    let mut out = Vec::new();
    for (k, v) in tags {
        if k.is_empty() || k.chars().count() > MAX_TAG_KEY {
            return Err(format!(
                "tag name {k:?} must be 1 to {MAX_TAG_KEY} characters"
            ));
        }
        if v.chars().count() > MAX_TAG_VALUE {
            return Err(format!(
                "tag {k:?} has a value longer than {MAX_TAG_VALUE} characters"
            ));
        }
        if !allowed(k) || !allowed(v) {
            return Err(format!(
                "tag {k:?} = {v:?}: S3 allows only letters, digits, spaces and + - = . _ : / @"
            ));
        }
        if k.starts_with("aws:") {
            return Err(format!("tag name {k:?}: the aws: prefix is reserved"));
        }
        out.push(format!("{}={}", query_encode(k), query_encode(v)));
    }
    Ok(Some(out.join("&")))
}

fn query_encode(s: &str) -> String {
    percent_encoding::utf8_percent_encode(s, percent_encoding::NON_ALPHANUMERIC).to_string()
}

/// Checks a storage class name: S3's own (`STANDARD_IA`, `GLACIER_IR`, …) or a server's own
/// (Ceph and MinIO define their own names), so only its shape is checked here.
pub fn storage_class(name: &str) -> Result<String, String> {
    if name.is_empty()
        || !name
            .bytes()
            .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
    {
        return Err(format!(
            "{name:?} is not a storage class name (upper-case, like \"STANDARD_IA\")"
        ));
    }
    Ok(name.to_owned())
}

/// Checks a header value given in the configuration (`content_type`, `cache_control`).
pub fn plain_header(value: &str) -> Result<String, String> {
    if value.trim().is_empty() || !value.bytes().all(|b| (0x20..0x7f).contains(&b)) {
        return Err(format!(
            "{value:?} must be printable ASCII, without line breaks"
        ));
    }
    Ok(value.trim().to_owned())
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

    #[test]
    fn options_are_checked() {
        assert_eq!(metadata_name("Source-Host").unwrap(), "source-host");
        assert!(
            metadata_name("sha256")
                .unwrap_err()
                .contains("inboxd's own")
        );
        assert!(metadata_name("a b").is_err());
        let t = |pairs: &[(&str, &str)]| {
            tagging(
                &pairs
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect::<Vec<_>>(),
            )
        };
        assert_eq!(
            t(&[("dept", "lab 2"), ("keep", "7y")]).unwrap().unwrap(),
            "dept=lab%202&keep=7y"
        );
        assert!(t(&[("a", "b&c")]).unwrap_err().contains("only letters"));
        assert!(t(&[("aws:x", "1")]).unwrap_err().contains("reserved"));
        let eleven: Vec<(String, String)> =
            (0..11).map(|i| (format!("k{i}"), "v".to_owned())).collect();
        assert!(tagging(&eleven).unwrap_err().contains("at most 10"));
        assert!(storage_class("STANDARD_IA").is_ok());
        assert!(storage_class("standard").is_err());
        assert!(plain_header("max-age=3600").is_ok());
        assert!(plain_header("a\r\nX-Evil: 1").is_err());
    }

    #[test]
    fn refusals_name_the_option() {
        let mut o = ObjectSettings {
            storage_class: Some("GLACIER_IR".into()),
            sse: Some(Sse::Kms {
                key_id: Some("k-1".into()),
            }),
            tagging: Some("a=b".into()),
            ..ObjectSettings::default()
        };
        assert_eq!(
            o.refused_option(Some("InvalidStorageClass"), "").unwrap(),
            "storage_class = \"GLACIER_IR\""
        );
        assert!(
            o.refused_option(Some("KMS.NotFoundException"), "key not found")
                .unwrap()
                .contains("sse_kms_key_id = \"k-1\"")
        );
        assert_eq!(
            o.refused_option(
                Some("InvalidArgument"),
                "The x-amz-tagging header is malformed"
            )
            .unwrap(),
            "tags"
        );
        assert!(
            o.refused_option(
                Some("NotImplemented"),
                "Server side encryption specified but KMS is not configured"
            )
            .unwrap()
            .starts_with("sse = ")
        );
        assert!(
            o.refused_option(
                Some("NotImplemented"),
                "A header you provided implies functionality that is not implemented"
            )
            .unwrap()
            .starts_with("one of: storage_class")
        );
        // Not about an option: the classifier's business.
        assert_eq!(o.refused_option(Some("EntityTooLarge"), "too big"), None);
        assert_eq!(
            o.refused_option(Some("AccessDenied"), "Access Denied"),
            None
        );
        o = ObjectSettings::default();
        assert_eq!(
            o.refused_option(Some("NotImplemented"), "storage class"),
            None
        );
    }
}

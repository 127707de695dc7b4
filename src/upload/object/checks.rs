//! The checks the configuration makes on each object option when it is loaded, against
//! S3's rules, so that a bad value is a configuration error naming the key rather than a
//! refusal for every file.

use super::OWN_METADATA;

/// S3's limits on tags.
const MAX_TAGS: usize = 10;
const MAX_TAG_KEY: usize = 128;
const MAX_TAG_VALUE: usize = 256;

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
}

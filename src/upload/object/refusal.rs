//! Which object option a server's refusal is about, so that a server without (say) SSE
//! pauses the inbox with a message naming the key instead of failing files one by one.

use super::{ObjectSettings, Sse};

impl ObjectSettings {
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

#[cfg(test)]
mod tests {
    use super::*;

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

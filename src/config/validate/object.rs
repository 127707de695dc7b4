//! The object options of an inbox (issue 11): key template, content type, metadata, tags,
//! storage class, server-side encryption and cache control, each checked as S3 will take it.

use super::Ctx;
use crate::config::ConfigError;
use crate::config::raw::RawInbox;
use crate::upload::object::{self, ObjectSettings, Sse};
use crate::upload::template::Template;

impl Ctx<'_> {
    /// The key template and object options of inbox `i` (issue 11).
    pub(super) fn object(
        &self,
        i: usize,
        ri: &mut RawInbox,
    ) -> Result<ObjectSettings, ConfigError> {
        let key = |field: &str| format!("inbox[{i}].{field}");
        let bad = |field: &str, msg: String| self.err(&key(field), &msg);
        let mut o = ObjectSettings::default();
        if let Some(t) = ri.key.take() {
            o.key = Template::parse(&t).map_err(|e| bad("key", e))?;
        }
        if let Some(ct) = ri.content_type.take() {
            let v = object::plain_header(&ct).map_err(|e| bad("content_type", e))?;
            if v.parse::<mime::Mime>().is_err() {
                return Err(bad(
                    "content_type",
                    format!("{v:?} is not a media type (like \"application/pdf\")"),
                ));
            }
            o.content_type = Some(v);
        }
        for (name, value) in ri.metadata.take().unwrap_or_default() {
            let name = object::metadata_name(&name).map_err(|e| bad("metadata", e))?;
            let t = Template::parse_value(&value)
                .map_err(|e| bad("metadata", format!("{name}: {e}")))?;
            if o.metadata.iter().any(|(n, _)| *n == name) {
                return Err(bad(
                    "metadata",
                    format!("{name:?} is given twice (names are not case-sensitive)"),
                ));
            }
            o.metadata.push((name, t));
        }
        let tags: Vec<(String, String)> = ri.tags.take().unwrap_or_default().into_iter().collect();
        o.tagging = object::tagging(&tags).map_err(|e| bad("tags", e))?;
        if let Some(c) = ri.storage_class.take() {
            o.storage_class = Some(object::storage_class(&c).map_err(|e| bad("storage_class", e))?);
        }
        let kms_key = ri.sse_kms_key_id.take();
        o.sse = match (ri.sse.take().as_deref(), kms_key) {
            (None, None) => None,
            (Some("AES256"), None) => Some(Sse::Aes256),
            (Some("aws:kms"), key_id) => {
                if let Some(id) = &key_id {
                    object::plain_header(id).map_err(|e| bad("sse_kms_key_id", e))?;
                }
                Some(Sse::Kms { key_id })
            }
            (Some("AES256") | None, Some(_)) => {
                return Err(bad("sse_kms_key_id", "needs sse = \"aws:kms\"".to_owned()));
            }
            (Some(other), _) => {
                return Err(bad(
                    "sse",
                    format!("{other:?} is not one of \"AES256\", \"aws:kms\""),
                ));
            }
        };
        if let Some(c) = ri.cache_control.take() {
            o.cache_control = Some(object::plain_header(&c).map_err(|e| bad("cache_control", e))?);
        }
        Ok(o)
    }
}

//! An object's options on the wire: the `Content-Type` guessed from the name, the options of
//! [`crate::upload::object::Dressing`] put on a request ([`dressed!`]), and the check that a
//! server confirmed the encryption it was asked for.

use std::path::Path;

/// The `Content-Type` an object gets: guessed from the file's extension (mime_guess),
/// `application/octet-stream` when unknown, so browsers and downstream tools open it right.
pub fn content_type(rel: &Path) -> &'static str {
    mime_guess::from_path(rel)
        .first_raw()
        .unwrap_or("application/octet-stream")
}

/// Puts an object's options ([`crate::upload::object::Dressing`]) on a PutObject or a
/// CreateMultipartUpload request (the two builders share these methods but no trait).
macro_rules! dressed {
    ($req:expr, $d:expr) => {{
        let d: &$crate::upload::object::Dressing = $d;
        let mut req = $req
            .content_type(d.content_type.as_str())
            .set_tagging(d.tagging.clone())
            .set_storage_class(
                d.storage_class
                    .as_deref()
                    .map(aws_sdk_s3::types::StorageClass::from),
            )
            .set_server_side_encryption(
                d.sse
                    .as_ref()
                    .map(|s| aws_sdk_s3::types::ServerSideEncryption::from(s.header())),
            )
            .set_ssekms_key_id(d.sse.as_ref().and_then(|s| match s {
                $crate::upload::object::Sse::Kms { key_id } => key_id.clone(),
                $crate::upload::object::Sse::Aes256 => None,
            }))
            .set_cache_control(d.cache_control.clone());
        for (name, value) in &d.metadata {
            req = req.metadata(name.as_str(), value.as_str());
        }
        req
    }};
}
pub(in crate::upload) use dressed;

/// A server that stores objects encrypted says so in its answer (`x-amz-server-side-
/// encryption`). One that asked-for encryption leaves unconfirmed may have ignored the header
/// (Garage 2.5 does: it knows only SSE-C) and stored the object in the clear: said once per
/// bucket at WARN, because an administrator who set `sse` relies on it. The object itself is
/// whole and correct, so the file is not held back.
pub fn confirm_sse(
    bucket: &str,
    dress: &crate::upload::object::Dressing,
    answer: Option<&aws_sdk_s3::types::ServerSideEncryption>,
) {
    let Some(asked) = &dress.sse else { return };
    if answer.is_some() {
        return;
    }
    static WARNED: std::sync::Mutex<Vec<String>> = std::sync::Mutex::new(Vec::new());
    let mut warned = WARNED.lock().unwrap_or_else(|p| p.into_inner());
    if warned.iter().any(|b| b == bucket) {
        return;
    }
    warned.push(bucket.to_owned());
    tracing::warn!(
        bucket,
        sse = asked.header(),
        "the server did not confirm server-side encryption: it may store objects unencrypted; \
         check that it supports `sse`, or remove the key"
    );
}

//! Small S3 calls: the HEAD of one object, and the bucket probe of `inboxd check`.

use std::path::Path;

use aws_sdk_s3::Client;
use aws_sdk_s3::error::{ProvideErrorMetadata, SdkError};

use super::dress::dressed;
use super::errors::{S3Failure, failure};

/// What HEAD says about an existing object.
#[derive(Debug, Clone)]
pub struct Head {
    pub sha256: Option<String>,
    pub size: Option<i64>,
    pub etag: Option<String>,
}

/// HEAD of `key`; `Ok(None)` when there is no object.
pub async fn head(client: &Client, bucket: &str, key: &str) -> Result<Option<Head>, S3Failure> {
    match client.head_object().bucket(bucket).key(key).send().await {
        Ok(out) => Ok(Some(Head {
            sha256: out.metadata().and_then(|m| m.get("sha256").cloned()),
            size: out.content_length(),
            etag: out.e_tag().map(str::to_owned),
        })),
        Err(SdkError::ServiceError(ctx)) if ctx.raw().status().as_u16() == 404 => Ok(None),
        Err(e) => Err(failure(&e)),
    }
}

/// Probes a bucket as `inboxd check` does: reachable with these credentials (HeadBucket), and
/// writable without leaving anything behind (start a multipart upload under the prefix and
/// abort it at once).
pub async fn probe(
    client: &Client,
    bucket: &str,
    prefix: &str,
    object: &crate::upload::object::ObjectSettings,
) -> Result<(), String> {
    let head = client.head_bucket().bucket(bucket).send().await;
    if let Err(e) = &head
        && e.code().is_none()
        && matches!(
            e.raw_response().map(|r| r.status().as_u16()),
            Some(400 | 301)
        )
    {
        // HEAD answers have no body, so a 400 says nothing (a wrong region, mostly). A GET
        // of the same bucket gets the server's own words, e.g. which region it expects.
        if let Err(e) = client
            .list_objects_v2()
            .bucket(bucket)
            .prefix(prefix)
            .max_keys(1)
            .send()
            .await
        {
            return Err(format!("bucket {bucket} not usable: {}", failure(&e)));
        }
    }
    head.map_err(|e| {
        let f = failure(&e);
        // HeadBucket answers carry no error code: the status says what the fix is.
        let status = e.raw_response().map(|r| r.status().as_u16());
        match status {
            Some(404) => format!(
                "bucket {bucket} does not exist (HeadBucket: 404): {}",
                crate::upload::fixit::hint(Some("NoSuchBucket"), status, None).unwrap_or_default()
            ),
            Some(403) => format!(
                "access to bucket {bucket} denied (HeadBucket: 403): {}",
                crate::upload::fixit::hint(None, status, None).unwrap_or_default()
            ),
            _ => format!("bucket {bucket} not reachable: {f}"),
        }
    })?;
    let key = format!("{prefix}.inboxd-check");
    // With the inbox's object options (storage class, encryption, tags, …): a server that
    // refuses one says so here, at install time, rather than at the first file.
    let facts = crate::upload::template::Facts {
        rel: ".inboxd-check",
        inbox: "",
        host: crate::run::host_name(),
        found_at: 0,
        sha256_hex: "",
    };
    let dress = object.dress(Path::new(".inboxd-check"), &facts);
    let create = client.create_multipart_upload().bucket(bucket).key(&key);
    let created = dressed!(create, &dress).send().await.map_err(|e| {
        let f = failure(&e);
        match object.refused_option(f.code.as_deref(), &f.message) {
            Some(option) => format!("the server refuses this inbox's {option}: {f}"),
            None => format!("not writable: {f}"),
        }
    })?;
    if let Some(id) = created.upload_id() {
        client
            .abort_multipart_upload()
            .bucket(bucket)
            .key(&key)
            .upload_id(id)
            .send()
            .await
            .map_err(|e| format!("write probe could not be cleaned up: {}", failure(&e)))?;
    }
    Ok(())
}

//! The look (HEAD) before a write whose condition the server would not enforce itself, so
//! that `rename` and `fail` never replace an object on any server.

use aws_sdk_s3::Client;

use crate::upload::s3::{Disposition, S3Failure};

/// Looks at `key` before a write whose condition the server would not enforce itself. `Ok`
/// when the write may go ahead: nothing is at the key (create-only), or exactly the object
/// `expect` names (replace). Otherwise the same answer a server that honours the condition
/// gives, so the caller's conflict handling takes over.
pub async fn look(
    client: &Client,
    bucket: &str,
    key: &str,
    expect: Option<&str>,
) -> Result<(), S3Failure> {
    let head = crate::upload::s3::head(client, bucket, key).await?;
    let clear = match (expect, head) {
        (None, None) => true,
        (Some(etag), Some(h)) => h.etag.as_deref() == Some(etag),
        _ => false,
    };
    if clear {
        Ok(())
    } else {
        Err(S3Failure {
            disposition: Disposition::AlreadyExists,
            message: "the key does not hold what the write expects (seen by HEAD before \
                      writing: this server does not enforce conditional writes)"
                .to_owned(),
            code: None,
        })
    }
}

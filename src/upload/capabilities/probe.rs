//! The probe itself: each header tried once on tiny objects below `<prefix>.inboxd-probe/`
//! (deleted again), each answer read as honoured, ignored or rejected.

use aws_sdk_s3::Client;
use aws_sdk_s3::error::ProvideErrorMetadata;
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{ChecksumAlgorithm, CompletedMultipartUpload, CompletedPart};
use base64::Engine as _;
use sha2::{Digest, Sha256};

use super::{Capabilities, Support};
use crate::upload::s3::{Disposition, failure};

/// The answer to one probing request.
enum Answer {
    Accepted,
    /// 412, or a checksum error: the header did its job.
    Refused,
    /// The request was refused for another reason that is about the header itself.
    Rejected(String),
}

/// Interprets a failed probing request: a refusal, a rejection of the header, or a problem
/// that makes the whole probe inconclusive (network, credentials, 5xx).
fn answer<E, R>(
    res: Result<R, aws_sdk_s3::error::SdkError<E, aws_sdk_s3::config::http::HttpResponse>>,
    refusal: Disposition,
) -> Result<Answer, String>
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
{
    let err = match res {
        Ok(_) => return Ok(Answer::Accepted),
        Err(e) => e,
    };
    let f = failure(&err);
    match f.disposition {
        d if d == refusal => Ok(Answer::Refused),
        Disposition::Permanent => Ok(Answer::Rejected(f.message)),
        _ => Err(f.message),
    }
}

fn support(what: &str, a: &Answer) -> Support {
    match a {
        Answer::Accepted => Support::Ignored,
        Answer::Refused => Support::Honoured,
        Answer::Rejected(reason) => {
            tracing::warn!(
                header = what,
                reason,
                "the S3 server refuses requests that carry this header; inboxd will not send it"
            );
            Support::Rejected
        }
    }
}

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// A key no file can have been given: random, below the reserved `.inboxd-probe/` folder.
fn probe_key(prefix: &str, what: &str) -> String {
    format!("{prefix}.inboxd-probe/{:032x}-{what}", fastrand::u128(..))
}

/// Tries each header once on tiny objects below `<prefix>.inboxd-probe/` and removes them.
/// Needs s3:PutObject, s3:DeleteObject and s3:AbortMultipartUpload below the prefix.
pub async fn probe(client: &Client, bucket: &str, prefix: &str) -> Result<Capabilities, String> {
    let mut made: Vec<String> = Vec::new();
    let result = probe_inner(client, bucket, prefix, &mut made).await;
    for k in made {
        // Best effort: a probe object left behind is harmless, but say so.
        if let Err(e) = client.delete_object().bucket(bucket).key(&k).send().await {
            tracing::warn!(bucket, key = %k, error = %failure(&e), "cannot delete a probe object; it may be removed by hand");
        }
    }
    result
}

async fn probe_inner(
    client: &Client,
    bucket: &str,
    prefix: &str,
    made: &mut Vec<String>,
) -> Result<Capabilities, String> {
    let key = &probe_key(prefix, "object");
    let put = |body: &'static [u8]| {
        client
            .put_object()
            .bucket(bucket)
            .key(key)
            .checksum_sha256(b64(&Sha256::digest(body)))
            .body(ByteStream::from_static(body))
    };
    // The object the conditions are tried against.
    put(b"inboxd probe 1")
        .send()
        .await
        .map_err(|e| format!("cannot write a probe object: {}", failure(&e)))?;
    made.push(key.to_owned());
    let mut caps = Capabilities::unknown();

    let a = answer(
        put(b"inboxd probe 2").if_none_match("*").send().await,
        Disposition::AlreadyExists,
    )?;
    caps.put_if_none_match = support("If-None-Match", &a);
    let a = answer(
        put(b"inboxd probe 3")
            .if_match("\"00000000000000000000000000000000\"")
            .send()
            .await,
        Disposition::AlreadyExists,
    )?;
    caps.put_if_match = support("If-Match", &a);
    caps.complete_if_none_match = probe_complete(client, bucket, key).await?;

    // Bodies whose checksums are wrong, each at a key of its own (accepted, it must go).
    let body: &'static [u8] = b"inboxd probe: checksum";
    let wrong_sha = probe_key(prefix, "sha256");
    // Deleted whatever the answer: some servers (s3s-fs) store a body before they check it,
    // and keep it after refusing it.
    made.push(wrong_sha.clone());
    let res = client
        .put_object()
        .bucket(bucket)
        .key(&wrong_sha)
        .checksum_sha256(b64(&Sha256::digest(b"something else")))
        .body(ByteStream::from_static(body))
        .send()
        .await;
    let a = answer(res, Disposition::BadDigest)?;
    caps.checks_sha256 = support("x-amz-checksum-sha256", &a);
    let wrong_md5 = probe_key(prefix, "md5");
    made.push(wrong_md5.clone());
    let res = client
        .put_object()
        .bucket(bucket)
        .key(&wrong_md5)
        // The right SHA-256 keeps the SDK from adding a checksum of its own; only the MD5
        // is wrong.
        .checksum_sha256(b64(&Sha256::digest(body)))
        .content_md5(b64(&[0u8; 16]))
        .body(ByteStream::from_static(body))
        .send()
        .await;
    let a = answer(res, Disposition::BadDigest)?;
    caps.checks_md5 = support("Content-MD5", &a);
    caps.probed_at_ms = crate::ledger::unix_ms();
    Ok(caps)
}

/// A one-part multipart upload completed with `If-None-Match: *` onto the existing `key`.
async fn probe_complete(client: &Client, bucket: &str, key: &str) -> Result<Support, String> {
    let created = client
        .create_multipart_upload()
        .bucket(bucket)
        .key(key)
        .checksum_algorithm(ChecksumAlgorithm::Sha256)
        .send()
        .await
        .map_err(|e| format!("cannot start a probe multipart upload: {}", failure(&e)))?;
    let id = created
        .upload_id()
        .ok_or("CreateMultipartUpload answered without an upload id")?
        .to_owned();
    let result = async {
        let body: &'static [u8] = b"inboxd probe 4";
        let sha = b64(&Sha256::digest(body));
        let part = client
            .upload_part()
            .bucket(bucket)
            .key(key)
            .upload_id(&id)
            .part_number(1)
            .checksum_sha256(&sha)
            .body(ByteStream::from_static(body))
            .send()
            .await
            .map_err(|e| format!("cannot send a probe part: {}", failure(&e)))?;
        let done = CompletedPart::builder()
            .part_number(1)
            .set_e_tag(part.e_tag().map(str::to_owned))
            .checksum_sha256(sha)
            .build();
        let res = client
            .complete_multipart_upload()
            .bucket(bucket)
            .key(key)
            .upload_id(&id)
            .multipart_upload(CompletedMultipartUpload::builder().parts(done).build())
            .if_none_match("*")
            .send()
            .await;
        answer(res, Disposition::AlreadyExists).map(|a| support("If-None-Match on completion", &a))
    }
    .await;
    if result != Ok(Support::Ignored) {
        // Not completed: abort it so that no parts stay behind (best effort).
        let _ = client
            .abort_multipart_upload()
            .bucket(bucket)
            .key(key)
            .upload_id(&id)
            .send()
            .await;
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn probe_keys_are_distinct_and_under_the_reserved_folder() {
        let a = probe_key("in/", "object");
        let b = probe_key("in/", "object");
        assert!(a.starts_with("in/.inboxd-probe/") && a.ends_with("-object"));
        assert_ne!(a, b);
    }
}

//! The I/O around [`super::Capabilities`]: the probe itself (a few tiny objects below
//! `<prefix>.inboxd-probe/`, deleted again), remembering its result in the ledger, probing
//! again while the server cannot be reached, and the look (HEAD) before a write the server
//! would not guard itself.

use std::time::Duration;

use aws_sdk_s3::Client;
use aws_sdk_s3::error::ProvideErrorMetadata;
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{ChecksumAlgorithm, CompletedMultipartUpload, CompletedPart};
use base64::Engine as _;
use sha2::{Digest, Sha256};

use super::{Capabilities, Known, Support};
use crate::config::InboxSettings;
use crate::ledger::Ledger;
use crate::upload::s3::{Disposition, S3Failure, failure};

fn ledger_key(endpoint: &str, bucket: &str) -> String {
    format!("{endpoint}\u{0}{bucket}")
}

/// The buckets the inboxes write to, each with the prefix of the first inbox that uses it
/// (credentials are often limited to the prefix, so the probe writes below it).
fn buckets<'a>(inboxes: impl Iterator<Item = (&'a str, &'a str)>) -> Vec<(String, String)> {
    let mut seen: Vec<(String, String)> = Vec::new();
    for (bucket, prefix) in inboxes {
        if !seen.iter().any(|(b, _)| b == bucket) {
            seen.push((bucket.to_owned(), prefix.to_owned()));
        }
    }
    seen
}

/// At startup: for every bucket, the remembered probe if it is recent, else a new probe
/// (remembered when it could tell). A bucket that cannot be probed now (the server is down)
/// is treated as [`Capabilities::unknown`] and probed again by [`keep_probing`].
pub async fn establish(
    client: &Client,
    ledger: &Ledger,
    endpoint: &str,
    inboxes: &[InboxSettings],
    known: &Known,
) {
    let pairs = inboxes
        .iter()
        .map(|i| (i.bucket.as_str(), i.prefix.as_str()));
    for (bucket, prefix) in buckets(pairs) {
        let key = ledger_key(endpoint, &bucket);
        let remembered = ledger
            .get_capabilities(&key)
            .ok()
            .flatten()
            .and_then(|b| serde_json::from_slice::<Capabilities>(&b).ok())
            .filter(|c| c.fresh(crate::ledger::unix_ms()));
        if let Some(caps) = remembered {
            tracing::info!(bucket, capabilities = %caps.describe(), "S3 server capabilities (remembered from an earlier probe)");
            known.set(&bucket, caps);
            continue;
        }
        // Not answering now: `keep_probing` tries again every minute.
        probe_and_remember(client, ledger, endpoint, &bucket, &prefix, known).await;
    }
}

/// How long a failed probe of a bucket whose capabilities are known (only stale) waits
/// before the next: what is known stays in use meanwhile, and an outage must not bring a
/// warning a minute.
const RETRY_STALE: Duration = Duration::from_secs(3600);

/// Until `stop`: every minute, probes the buckets whose capabilities are not known (the
/// server could not be probed at start) or are older than [`super::REMEMBER_FOR`], so that a
/// daemon that runs for weeks notices a server replaced behind the same endpoint.
pub async fn keep_probing(
    client: Client,
    ledger: Ledger,
    endpoint: String,
    inboxes: std::sync::Arc<Vec<InboxSettings>>,
    known: Known,
    stop: tokio_util::sync::CancellationToken,
) {
    let all = buckets(
        inboxes
            .iter()
            .map(|i| (i.bucket.as_str(), i.prefix.as_str())),
    );
    let mut waiting: Vec<(String, tokio::time::Instant)> = Vec::new();
    loop {
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs(60)) => {}
            _ = stop.cancelled() => return,
        }
        let now = tokio::time::Instant::now();
        waiting.retain(|(_, until)| *until > now);
        for (bucket, prefix) in due(&all, &known, crate::ledger::unix_ms(), &waiting) {
            let stale = known.get(&bucket).probed_at_ms > 0;
            if !probe_and_remember(&client, &ledger, &endpoint, &bucket, &prefix, &known).await
                && stale
            {
                waiting.push((bucket, now + RETRY_STALE));
            }
        }
    }
}

/// Pure: the buckets to probe now: never probed, or probed longer ago than
/// [`super::REMEMBER_FOR`], and not `waiting` after a failed re-probe.
fn due(
    all: &[(String, String)],
    known: &Known,
    now_ms: u64,
    waiting: &[(String, tokio::time::Instant)],
) -> Vec<(String, String)> {
    all.iter()
        .filter(|(b, _)| !known.get(b).fresh(now_ms))
        .filter(|(b, _)| !waiting.iter().any(|(w, _)| w == b))
        .cloned()
        .collect()
}

async fn probe_and_remember(
    client: &Client,
    ledger: &Ledger,
    endpoint: &str,
    bucket: &str,
    prefix: &str,
    known: &Known,
) -> bool {
    // Bounded: a server that does not answer must not hold up the start; uploads meanwhile
    // take the safe path (look before every write).
    let probed = tokio::time::timeout(Duration::from_secs(30), probe(client, bucket, prefix)).await;
    match probed {
        Ok(Ok(caps)) => {
            tracing::info!(bucket, capabilities = %caps.describe(), "S3 server capabilities probed");
            if !caps.all_conditions_honoured() {
                tracing::warn!(
                    bucket,
                    "this S3 server does not honour conditional writes; inboxd checks each key with HEAD before writing it"
                );
            }
            if caps.checks_sha256 != Support::Honoured {
                tracing::warn!(
                    bucket,
                    "this S3 server does not verify the SHA-256 checksum of what it stores; a body damaged on the way would not be noticed"
                );
            }
            if let Ok(json) = serde_json::to_vec(&caps)
                && let Err(e) = ledger.put_capabilities(&ledger_key(endpoint, bucket), &json)
            {
                tracing::warn!(error = %e, "cannot remember the probe in the ledger; it runs again at the next start");
            }
            known.set(bucket, caps);
            true
        }
        Ok(Err(e)) => {
            tracing::warn!(bucket, error = %e, "cannot probe what this S3 server supports; until it can, inboxd looks at each key before writing it");
            false
        }
        Err(_) => {
            tracing::warn!(
                bucket,
                "probing this S3 server timed out; until it answers, inboxd looks at each key before writing it"
            );
            false
        }
    }
}

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
    fn buckets_are_probed_again_when_unknown_or_a_day_old() {
        let all = vec![
            ("fresh".to_owned(), "p/".to_owned()),
            ("stale".to_owned(), "".to_owned()),
            ("never".to_owned(), "".to_owned()),
            ("failed".to_owned(), "".to_owned()),
        ];
        let now_ms = 10 * super::super::REMEMBER_FOR.as_millis() as u64;
        let known = Known::default();
        let at = |ms| Capabilities {
            probed_at_ms: ms,
            ..Capabilities::full()
        };
        known.set("fresh", at(now_ms - 1_000));
        known.set(
            "stale",
            at(now_ms - super::super::REMEMBER_FOR.as_millis() as u64),
        );
        known.set("failed", at(1));
        let waiting = vec![(
            "failed".to_owned(),
            tokio::time::Instant::now() + RETRY_STALE,
        )];
        let names: Vec<String> = due(&all, &known, now_ms, &waiting)
            .into_iter()
            .map(|(b, _)| b)
            .collect();
        assert_eq!(names, ["stale", "never"]);
    }

    #[test]
    fn each_bucket_is_probed_once_below_the_prefix_of_its_first_inbox() {
        let b = buckets([("a", "one/"), ("b", ""), ("a", "two/")].into_iter());
        assert_eq!(
            b,
            vec![("a".into(), "one/".into()), ("b".into(), String::new())]
        );
    }

    #[test]
    fn probe_keys_are_distinct_and_under_the_reserved_folder() {
        let a = probe_key("in/", "object");
        let b = probe_key("in/", "object");
        assert!(a.starts_with("in/.inboxd-probe/") && a.ends_with("-object"));
        assert_ne!(a, b);
    }
}

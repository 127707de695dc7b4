//! Keeping [`super::Known`] up to date: at startup the remembered probe or a new one per
//! bucket, remembered in the ledger; then, until shutdown, probing again the buckets the
//! server could not be probed for, or whose probe is a day old.

use std::time::Duration;

use aws_sdk_s3::Client;

use super::probe::probe;
use super::{Capabilities, Known, Support};
use crate::config::InboxSettings;
use crate::ledger::Ledger;

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
}

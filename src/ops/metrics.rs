//! The Prometheus metrics: one registry, the families the README documents, and the few
//! verbs stages use to update them. Names follow Prometheus conventions (`_total` for
//! counters is added by the encoder, units in the name, `inbox` and `outcome` labels).

use std::sync::atomic::AtomicU64;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct InboxLabel {
    pub inbox: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabels {
    pub inbox: String,
    /// `uploaded`, `duplicate`, `failed` or `deferred`.
    pub outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct HostLabels {
    pub inbox: String,
    pub host: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct VersionLabel {
    version: String,
}

type FloatGauge = Gauge<f64, AtomicU64>;

/// Every metric the daemon exports.
pub struct Metrics {
    registry: Registry,
    pub files: Family<OutcomeLabels, Counter>,
    pub bytes_uploaded: Family<InboxLabel, Counter>,
    pub backlog: Family<InboxLabel, Gauge>,
    pub oldest_pending: Family<InboxLabel, FloatGauge>,
    pub s3_up: Gauge,
    pub upload_duration: Histogram,
    pub batch_duration: Histogram,
    pub retries: Counter,
    pub paused: Family<InboxLabel, Gauge>,
    pub last_upload: Family<InboxLabel, FloatGauge>,
    pub host_claimed: Family<HostLabels, Gauge>,
    pub host_heartbeat_age: Family<HostLabels, Gauge>,
}

impl Metrics {
    pub fn new(inboxes: &[String]) -> Metrics {
        let mut registry = Registry::default();
        let m = Metrics {
            files: Family::default(),
            bytes_uploaded: Family::default(),
            backlog: Family::default(),
            oldest_pending: Family::default(),
            s3_up: Gauge::default(),
            // 10 ms … ~160 s: a small PUT on a LAN to a large part over a slow line.
            upload_duration: Histogram::new(exponential_buckets(0.01, 2.0, 15)),
            // 50 ms … ~27 min.
            batch_duration: Histogram::new(exponential_buckets(0.05, 2.0, 16)),
            retries: Counter::default(),
            paused: Family::default(),
            last_upload: Family::default(),
            host_claimed: Family::default(),
            host_heartbeat_age: Family::default(),
            registry: Registry::default(),
        };
        registry.register(
            "inboxd_files",
            "Files finished, by inbox and outcome (uploaded, duplicate, failed, deferred)",
            m.files.clone(),
        );
        registry.register(
            "inboxd_bytes_uploaded",
            "Bytes of files uploaded, by inbox",
            m.bytes_uploaded.clone(),
        );
        registry.register(
            "inboxd_backlog_files",
            "Files seen in the inbox and not finished yet",
            m.backlog.clone(),
        );
        registry.register(
            "inboxd_oldest_pending_seconds",
            "Age of the oldest file seen in the inbox and not finished yet (0 when none)",
            m.oldest_pending.clone(),
        );
        registry.register(
            "inboxd_s3_up",
            "1 while the S3 endpoint answers, 0 during an outage",
            m.s3_up.clone(),
        );
        registry.register(
            "inboxd_upload_duration_seconds",
            "Time to upload one file (all its attempts), from its first request to its last answer",
            m.upload_duration.clone(),
        );
        registry.register(
            "inboxd_batch_duration_seconds",
            "Time from a batch opening to its last file finished",
            m.batch_duration.clone(),
        );
        registry.register(
            "inboxd_retries",
            "Upload requests repeated after a transient failure",
            m.retries.clone(),
        );
        registry.register(
            "inboxd_inbox_paused",
            "1 while the inbox is paused by a bucket or credential problem",
            m.paused.clone(),
        );
        registry.register(
            "inboxd_cluster_claimed_files",
            "Files a host holds claimed in a shared inbox, as last seen here",
            m.host_claimed.clone(),
        );
        registry.register(
            "inboxd_cluster_heartbeat_age_seconds",
            "Seconds since a host's heartbeat in a shared inbox last changed, as seen here",
            m.host_heartbeat_age.clone(),
        );
        registry.register(
            "inboxd_last_upload_timestamp_seconds",
            "Unix time of the inbox's last successful upload",
            m.last_upload.clone(),
        );
        let build = Family::<VersionLabel, Gauge>::default();
        build
            .get_or_create(&VersionLabel {
                version: env!("CARGO_PKG_VERSION").to_owned(),
            })
            .set(1);
        registry.register("inboxd_build_info", "The running inboxd's version", build);
        // Every inbox shows up at once, with zeros, so that alerts and dashboards see it before
        // its first file.
        for name in inboxes {
            let inbox = InboxLabel {
                inbox: name.clone(),
            };
            for outcome in ["uploaded", "duplicate", "failed", "deferred"] {
                let _ = m.files.get_or_create(&OutcomeLabels {
                    inbox: name.clone(),
                    outcome: outcome.to_owned(),
                });
            }
            let _ = m.bytes_uploaded.get_or_create(&inbox);
            let _ = m.backlog.get_or_create(&inbox);
            let _ = m.oldest_pending.get_or_create(&inbox);
            let _ = m.paused.get_or_create(&inbox);
        }
        m.s3_up.set(1);
        Metrics { registry, ..m }
    }

    /// The text exposition format (version 0.0.4 / OpenMetrics text).
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }

    pub fn file(&self, inbox: &str, outcome: &str) {
        self.files
            .get_or_create(&OutcomeLabels {
                inbox: inbox.to_owned(),
                outcome: outcome.to_owned(),
            })
            .inc();
    }

    pub fn uploaded(&self, inbox: &str, bytes: u64, unix_secs: f64) {
        let label = InboxLabel {
            inbox: inbox.to_owned(),
        };
        self.bytes_uploaded.get_or_create(&label).inc_by(bytes);
        self.last_upload.get_or_create(&label).set(unix_secs);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_documented_family_is_exported_with_its_labels() {
        let m = Metrics::new(&["scans".to_owned()]);
        m.file("scans", "uploaded");
        m.uploaded("scans", 4096, 1_800_000_000.0);
        m.upload_duration.observe(0.2);
        let text = m.encode();
        for line in [
            "inboxd_files_total{inbox=\"scans\",outcome=\"uploaded\"} 1",
            "inboxd_files_total{inbox=\"scans\",outcome=\"failed\"} 0",
            "inboxd_bytes_uploaded_total{inbox=\"scans\"} 4096",
            "inboxd_backlog_files{inbox=\"scans\"} 0",
            "inboxd_oldest_pending_seconds{inbox=\"scans\"} 0.0",
            "inboxd_s3_up 1",
            "inboxd_upload_duration_seconds_count 1",
            "inboxd_batch_duration_seconds_count 0",
            "inboxd_retries_total 0",
            "inboxd_inbox_paused{inbox=\"scans\"} 0",
            "inboxd_last_upload_timestamp_seconds{inbox=\"scans\"} 1800000000.0",
        ] {
            assert!(text.contains(line), "missing {line:?} in\n{text}");
        }
        assert!(
            text.contains(&format!(
                "inboxd_build_info{{version=\"{}\"}} 1",
                env!("CARGO_PKG_VERSION")
            )),
            "{text}"
        );
        assert!(
            text.contains("# HELP inboxd_files Files finished"),
            "{text}"
        );
        assert!(text.contains("# TYPE inboxd_files counter"), "{text}");
    }
}

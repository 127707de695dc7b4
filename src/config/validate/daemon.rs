//! The sections about how the daemon itself runs, whatever its inboxes: `[watch]` timings,
//! `[log]`, the operations listener `[http]`, and this host's identity in `[cluster]`.

use std::time::Duration;

use super::Ctx;
use crate::config::raw::{RawCluster, RawHttp, RawLog, RawWatch};
use crate::config::{
    ClusterSettings, ConfigError, DEFAULT_CLAIM_TIMEOUT, DEFAULT_HTTP_LISTEN, LogFormat,
    LogSettings, WatchSettings,
};

impl Ctx<'_> {
    pub(super) fn watch(&self, raw: RawWatch) -> Result<WatchSettings, ConfigError> {
        let watch = WatchSettings {
            rescan: raw.rescan.unwrap_or(Duration::from_secs(60)),
            poll_interval: raw.poll_interval.unwrap_or(Duration::from_secs(10)),
        };
        if watch.rescan.is_zero() {
            return Err(self.err("watch.rescan", "must be longer than 0s"));
        }
        if watch.poll_interval.is_zero() {
            return Err(self.err("watch.poll_interval", "must be longer than 0s"));
        }
        Ok(watch)
    }

    pub(super) fn log(&self, raw: RawLog) -> Result<LogSettings, ConfigError> {
        let log = LogSettings {
            format: raw.format.unwrap_or(LogFormat::Text),
            dir: raw.dir.as_deref().map(|d| self.resolve(d)),
            keep: raw.keep.unwrap_or(14),
            level: raw.level.unwrap_or_else(|| "info".into()),
        };
        if let Err(e) = tracing_subscriber::EnvFilter::try_new(&log.level) {
            return Err(self.err("log.level", &format!("not a valid filter: {e}")));
        }
        Ok(log)
    }

    pub(super) fn cluster(&self, raw: RawCluster) -> Result<ClusterSettings, ConfigError> {
        let host_id = match raw.host_id {
            Some(id) => id,
            // The host name, made a plain folder name (it names this host's claim folder).
            None => crate::run::host_name()
                .chars()
                .map(|c| {
                    if c.is_ascii_alphanumeric() || "-_.".contains(c) {
                        c
                    } else {
                        '-'
                    }
                })
                .collect::<String>()
                .trim_start_matches('.')
                .chars()
                .take(64)
                .collect(),
        };
        // It names a folder on the share: one plain path component, readable in logs.
        let plain = !host_id.is_empty()
            && !host_id.starts_with('.')
            && host_id.len() <= 64
            && host_id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b));
        if !plain {
            return Err(self.err(
                "cluster.host_id",
                &format!(
                    "{host_id:?} must be 1 to 64 letters, digits, '-', '_' or '.', not starting \
                     with '.' (set it explicitly when the host name is not like that)"
                ),
            ));
        }
        let claim_timeout = raw.claim_timeout.unwrap_or(DEFAULT_CLAIM_TIMEOUT);
        if claim_timeout < Duration::from_secs(1) {
            return Err(self.err("cluster.claim_timeout", "must be at least 1s"));
        }
        Ok(ClusterSettings {
            host_id,
            claim_timeout,
        })
    }

    pub(super) fn http(&self, raw: RawHttp) -> Result<Option<std::net::SocketAddr>, ConfigError> {
        let listen = raw.listen.unwrap_or_else(|| DEFAULT_HTTP_LISTEN.to_owned());
        if listen == "off" {
            return Ok(None);
        }
        listen.parse().map(Some).map_err(|_| {
            self.err(
                "http.listen",
                &format!("{listen:?} is not an address and port (for example \"127.0.0.1:9478\" or \"[::1]:9478\"), or \"off\""),
            )
        })
    }
}

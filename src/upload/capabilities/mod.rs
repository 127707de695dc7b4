//! What the S3 server really does with the headers inboxd's promises rest on, found out by
//! trying instead of assumed. Some servers accept `If-None-Match: *` and overwrite anyway
//! (Garage 2.5), some reject headers they do not know, some do not check checksums. Per
//! bucket, at startup (or from the ledger, when a recent probe is remembered) and in
//! `inboxd check`, a probe writes a few tiny objects under `<prefix>.inboxd-probe/` and
//! deletes them again.
//!
//! The decisions that follow are pure functions of [`Capabilities`]: where a condition is not
//! honoured, the key is looked at (HEAD) before the write, so `rename` and `fail` never
//! replace an object on any server; a header the server rejects is not sent.

mod look;
mod probe;
mod schedule;

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use serde::{Deserialize, Serialize};

pub use look::look;
pub use probe::probe;
pub use schedule::{establish, keep_probing};

/// What a server did with one header when it mattered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Support {
    /// It did what S3 documents (refused the write with 412 or a checksum error).
    Honoured,
    /// It accepted the request and ignored the header.
    Ignored,
    /// It refused the request because of the header (e.g. 501 NotImplemented).
    Rejected,
    /// Not probed (yet), or the probe could not tell: assume the worst.
    Unknown,
}

impl Support {
    fn word(self) -> &'static str {
        match self {
            Support::Honoured => "honoured",
            Support::Ignored => "IGNORED",
            Support::Rejected => "REJECTED",
            Support::Unknown => "unknown",
        }
    }
}

/// The condition a write is made under.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cond {
    /// Only if nothing is at the key (`If-None-Match: *`).
    CreateOnly,
    /// Only if the key holds exactly this object (`If-Match: <etag>`).
    Replace,
    /// Whatever is there (on_conflict = "overwrite").
    Unconditional,
}

/// One write request as the server will see it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Plan {
    /// HEAD the key first and judge what is there ourselves: the server would not.
    pub look_first: bool,
    /// Send the condition header (not when the server refuses requests that carry it).
    pub send_header: bool,
}

/// What one bucket's server does. Stored in the ledger (JSON) so a restart need not probe.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Capabilities {
    pub v: u32,
    /// PutObject with `If-None-Match: *` on an existing key.
    pub put_if_none_match: Support,
    /// PutObject with `If-Match` naming another ETag.
    pub put_if_match: Support,
    /// CompleteMultipartUpload with `If-None-Match: *` on an existing key.
    pub complete_if_none_match: Support,
    /// A body whose `x-amz-checksum-sha256` is wrong.
    pub checks_sha256: Support,
    /// A body whose `Content-MD5` is wrong.
    pub checks_md5: Support,
    /// When the probe ran (milliseconds since the Unix epoch); 0 if never.
    pub probed_at_ms: u64,
}

pub(crate) const VERSION: u32 = 1;

/// A remembered probe older than this is repeated at startup: servers get upgraded.
///
/// A day: a server replaced behind the same endpoint (MinIO swapped for Garage) must not be
/// trusted to honour conditions on the old server's word for long; one probe a day is cheap.
pub const REMEMBER_FOR: Duration = Duration::from_secs(24 * 3600);

impl Capabilities {
    /// Nothing known: every condition is checked by HEAD as well, every header is sent.
    pub fn unknown() -> Capabilities {
        Capabilities {
            v: VERSION,
            put_if_none_match: Support::Unknown,
            put_if_match: Support::Unknown,
            complete_if_none_match: Support::Unknown,
            checks_sha256: Support::Unknown,
            checks_md5: Support::Unknown,
            probed_at_ms: 0,
        }
    }

    /// Every S3 promise kept: what AWS S3 does, and what the tests' server does.
    pub fn full() -> Capabilities {
        Capabilities {
            v: VERSION,
            put_if_none_match: Support::Honoured,
            put_if_match: Support::Honoured,
            complete_if_none_match: Support::Honoured,
            checks_sha256: Support::Honoured,
            checks_md5: Support::Honoured,
            probed_at_ms: 0,
        }
    }

    /// How to make a single PUT under `cond`.
    pub fn put(&self, cond: Cond) -> Plan {
        match cond {
            Cond::CreateOnly => plan(self.put_if_none_match),
            Cond::Replace => plan(self.put_if_match),
            Cond::Unconditional => Plan {
                look_first: false,
                send_header: false,
            },
        }
    }

    /// How to complete a multipart upload under `cond`. Replacing is judged by the PUT probe
    /// (a server honouring If-Match on PUT but not on completion is not known to exist; HEAD
    /// covers completion whenever If-None-Match is not honoured there).
    pub fn complete(&self, cond: Cond) -> Plan {
        match cond {
            Cond::CreateOnly => plan(self.complete_if_none_match),
            Cond::Replace => {
                let mut p = plan(self.put_if_match);
                p.look_first |= self.complete_if_none_match != Support::Honoured;
                p
            }
            Cond::Unconditional => Plan {
                look_first: false,
                send_header: false,
            },
        }
    }

    /// Whether to send `Content-MD5`: only to a server that verifies it but not SHA-256 (a
    /// server that verifies SHA-256 needs nothing more, and some refuse two checksums).
    pub fn send_md5(&self) -> bool {
        self.checks_sha256 != Support::Honoured && self.checks_md5 == Support::Honoured
    }

    /// Whether a probe result this old should be used rather than probing again.
    pub fn fresh(&self, now_ms: u64) -> bool {
        self.v == VERSION
            && self.probed_at_ms > 0
            && now_ms.saturating_sub(self.probed_at_ms) < REMEMBER_FOR.as_millis() as u64
    }

    /// Whether the server would keep a create-only write from replacing an object.
    pub fn all_conditions_honoured(&self) -> bool {
        [
            self.put_if_none_match,
            self.put_if_match,
            self.complete_if_none_match,
        ]
        .iter()
        .all(|s| *s == Support::Honoured)
    }

    /// One line for the log and for `inboxd check`.
    pub fn describe(&self) -> String {
        let mut s = format!(
            "If-None-Match on PUT {}, on multipart completion {}; If-Match on PUT {}; \
             SHA-256 checksum {}; Content-MD5 {}",
            self.put_if_none_match.word(),
            self.complete_if_none_match.word(),
            self.put_if_match.word(),
            self.checks_sha256.word(),
            self.checks_md5.word(),
        );
        if !self.all_conditions_honoured() {
            s.push_str(
                " -> inboxd looks at each key (HEAD) before writing it, so no object is \
                 replaced; a write by another client in the moment between the look and the \
                 write can still be replaced",
            );
        }
        if self.checks_sha256 != Support::Honoured {
            s.push_str(
                " -> the server does not verify uploaded bytes against their SHA-256; \
                 inboxd relies on TLS and the transport's own checks",
            );
        }
        s
    }
}

fn plan(s: Support) -> Plan {
    Plan {
        look_first: s != Support::Honoured,
        send_header: s != Support::Rejected,
    }
}

/// The probe results of every bucket the daemon writes to; shared by every upload.
#[derive(Clone, Default)]
pub struct Known(Arc<RwLock<HashMap<String, Capabilities>>>);

impl Known {
    pub fn get(&self, bucket: &str) -> Capabilities {
        let map = self.0.read().unwrap_or_else(|p| p.into_inner());
        map.get(bucket)
            .cloned()
            .unwrap_or_else(Capabilities::unknown)
    }

    pub fn set(&self, bucket: &str, caps: Capabilities) {
        let mut map = self.0.write().unwrap_or_else(|p| p.into_inner());
        map.insert(bucket.to_owned(), caps);
    }

    /// For tests and tools that know their server.
    pub fn with(bucket: &str, caps: Capabilities) -> Known {
        let k = Known::default();
        k.set(bucket, caps);
        k
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn honoured_conditions_need_no_look() {
        let c = Capabilities::full();
        for cond in [Cond::CreateOnly, Cond::Replace, Cond::Unconditional] {
            assert!(!c.put(cond).look_first);
            assert!(!c.complete(cond).look_first);
        }
        assert!(c.put(Cond::CreateOnly).send_header);
        assert!(!c.put(Cond::Unconditional).send_header);
    }

    #[test]
    fn ignored_or_unknown_conditions_are_checked_by_looking_first() {
        let mut garage = Capabilities::full();
        garage.put_if_none_match = Support::Ignored;
        garage.complete_if_none_match = Support::Ignored;
        assert!(garage.put(Cond::CreateOnly).look_first);
        assert!(garage.put(Cond::CreateOnly).send_header);
        assert!(garage.complete(Cond::CreateOnly).look_first);
        assert!(garage.complete(Cond::Replace).look_first);
        assert!(!garage.put(Cond::Replace).look_first);
        assert!(!garage.all_conditions_honoured());

        let u = Capabilities::unknown();
        assert!(u.put(Cond::CreateOnly).look_first);
        assert!(u.put(Cond::Replace).look_first);
        assert!(u.complete(Cond::CreateOnly).look_first);
        assert!(!u.put(Cond::Unconditional).look_first);
    }

    #[test]
    fn a_rejected_header_is_not_sent_but_looked_for() {
        let mut c = Capabilities::full();
        c.put_if_none_match = Support::Rejected;
        let p = c.put(Cond::CreateOnly);
        assert!(p.look_first && !p.send_header);
    }

    #[test]
    fn remembered_results_expire() {
        let mut c = Capabilities::full();
        assert!(!c.fresh(1_000), "never probed");
        c.probed_at_ms = 1_000;
        assert!(c.fresh(1_000 + 3_600_000));
        assert!(!c.fresh(1_000 + REMEMBER_FOR.as_millis() as u64));
        c.v = VERSION + 1;
        assert!(!c.fresh(2_000));
    }

    #[test]
    fn stored_form_round_trips() {
        let mut c = Capabilities::unknown();
        c.put_if_none_match = Support::Ignored;
        c.probed_at_ms = 42;
        let json = serde_json::to_vec(&c).unwrap();
        assert!(String::from_utf8_lossy(&json).contains("\"put_if_none_match\":\"ignored\""));
        assert_eq!(serde_json::from_slice::<Capabilities>(&json).unwrap(), c);
    }
}

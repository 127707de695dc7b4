//! What an operator must do about an S3 error that no retry can cure (credentials, clock,
//! bucket): a fix-it sentence for the log line and the pause reason. Pure, so every message is
//! unit-tested.

use std::time::{Duration, SystemTime};

use aws_sdk_s3::primitives::{DateTime, DateTimeFormat};

/// S3's limit on the difference between the request's time and the server's clock.
const ALLOWED_SKEW: &str = "15 minutes";

/// The fix-it sentence for an error with this code (HEAD answers carry none: then the status
/// decides). `skew`: the server's clock minus ours, when the answer carried a `Date`.
pub fn hint(code: Option<&str>, status: Option<u16>, skew: Option<Skew>) -> Option<String> {
    let text = match (code, status) {
        (Some("ExpiredToken" | "TokenRefreshRequired"), _) => {
            "the credentials' session token has expired: renew them (temporary keys given in the \
             environment need a restart of inboxd once renewed; a profile, SSO session or \
             instance role is renewed by the SDK itself)"
                .to_owned()
        }
        (Some("RequestTimeTooSkewed"), _) => {
            let how_far = match skew {
                Some(s) => format!("this machine's clock is {s} the server's"),
                None => "this machine's clock differs from the server's".to_owned(),
            };
            format!(
                "{how_far}, more than S3 accepts ({ALLOWED_SKEW}): set the clock right, e.g. \
                 with NTP (`timedatectl set-ntp true`)"
            )
        }
        (Some("InvalidAccessKeyId"), _) => "the server does not know this access key id: check \
             AWS_ACCESS_KEY_ID (or the profile in use), and that [s3] endpoint is the server that \
             issued the key"
            .to_owned(),
        (Some("SignatureDoesNotMatch"), _) => "the request's signature was refused: check that \
             AWS_SECRET_ACCESS_KEY belongs to the access key id, and that [s3] region and [s3] \
             endpoint are the ones the server expects"
            .to_owned(),
        (Some("AccessDenied" | "AllAccessDisabled" | "AccountProblem"), _) | (None, Some(403)) => {
            "these credentials may not write here: allow s3:PutObject, s3:GetObject, \
             s3:AbortMultipartUpload on the inbox's bucket and prefix and s3:ListBucket on the \
             bucket, in the bucket policy or the IAM policy"
                .to_owned()
        }
        (Some("NoSuchBucket"), _) => "the bucket does not exist at this endpoint: create it, or \
             correct the inbox's bucket, [s3] endpoint or [s3] region"
            .to_owned(),
        (Some("PermanentRedirect"), _) | (None, Some(301)) => {
            "the bucket is in another region: set [s3] region to the bucket's region".to_owned()
        }
        (Some("AuthorizationHeaderMalformed"), _) => "the server expects requests signed for \
             another region (its message above names it): set [s3] region to that region \
             (for Garage, its s3_region)"
            .to_owned(),
        _ => return None,
    };
    Some(text)
}

/// The likely fix for a request that never got an answer, from the error's text (the SDK
/// reports these as a chain of messages, not codes).
pub fn network_hint(message: &str) -> Option<&'static str> {
    let m = message.to_ascii_lowercase();
    let hint = if m.contains("credentials") {
        "no credentials were found: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (for the \
         service in /etc/default/inboxd), or AWS_PROFILE with ~/.aws/credentials, or run where \
         an instance role or web identity provides them"
    } else if m.contains("certificate") || m.contains("tls") || m.contains("handshake") {
        "the TLS connection failed: if the server's certificate comes from an internal CA, set \
         [s3] ca_file to that CA's PEM file (or SSL_CERT_FILE); check also that [s3] endpoint \
         is https:// only where the server speaks TLS"
    } else if m.contains("connection refused") {
        "nothing accepts connections at [s3] endpoint: is the server running, and are the host \
         and port right?"
    } else if m.contains("dns") || m.contains("lookup") || m.contains("resolve") {
        "the host name in [s3] endpoint does not resolve: check its spelling and this \
         machine's DNS"
    } else if m.contains("timed out") || m.contains("timeout") {
        "no answer in time: a firewall in the way, or the wrong host or port in [s3] endpoint?"
    } else {
        return None;
    };
    Some(hint)
}

/// A clock difference: the server's clock minus ours.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Skew {
    pub server_ahead: bool,
    pub by: Duration,
}

impl std::fmt::Display for Skew {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let side = if self.server_ahead {
            "behind"
        } else {
            "ahead of"
        };
        write!(f, "{} {side}", humantime::format_duration(self.by))
    }
}

/// The skew from a response's `Date` header (`Sun, 06 Nov 1994 08:49:37 GMT`) and our clock
/// when the answer arrived, to the second.
pub fn skew(date: Option<&str>, now: SystemTime) -> Option<Skew> {
    let server = DateTime::from_str(date?, DateTimeFormat::HttpDate).ok()?;
    let server = SystemTime::try_from(server).ok()?;
    let (server_ahead, by) = match server.duration_since(now) {
        Ok(ahead) => (true, ahead),
        Err(e) => (false, e.duration()),
    };
    Some(Skew {
        server_ahead,
        by: Duration::from_secs(by.as_secs()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn network_failures_get_the_likely_fix() {
        let hint = |m: &str| network_hint(m).unwrap_or("");
        assert!(
            hint("dispatch failure: io error: Connection refused (os error 111)")
                .contains("is the server running")
        );
        assert!(
            hint("an error occurred while loading credentials: failed to load IMDS session token")
                .contains("AWS_ACCESS_KEY_ID")
        );
        assert!(
            hint("dispatch failure: invalid peer certificate: UnknownIssuer").contains("ca_file")
        );
        assert!(
            hint("dns error: failed to lookup address information").contains("does not resolve")
        );
        assert!(hint("timeout: connect timed out").contains("firewall"));
        assert_eq!(network_hint("something else entirely"), None);
    }

    #[test]
    fn every_operator_error_has_its_fix() {
        for (code, needle) in [
            ("ExpiredToken", "session token has expired"),
            ("InvalidAccessKeyId", "AWS_ACCESS_KEY_ID"),
            ("SignatureDoesNotMatch", "[s3] region"),
            ("AccessDenied", "s3:PutObject"),
            ("NoSuchBucket", "create it"),
            ("RequestTimeTooSkewed", "timedatectl"),
        ] {
            let h = hint(Some(code), Some(403), None).unwrap_or_default();
            assert!(h.contains(needle), "{code}: {h}");
        }
        assert!(
            hint(None, Some(403), None).is_some_and(|h| h.contains("s3:PutObject")),
            "HEAD answers have no code"
        );
        assert_eq!(hint(Some("SlowDown"), Some(503), None), None);
        assert_eq!(hint(None, Some(500), None), None);
    }

    #[test]
    fn the_clock_skew_is_measured_from_the_date_header() {
        let date = "Sun, 06 Nov 1994 08:49:37 GMT";
        let at = SystemTime::UNIX_EPOCH + Duration::from_secs(784_111_777);
        let behind = skew(Some(date), at - Duration::from_secs(1234)).expect("parsed");
        assert_eq!(
            behind,
            Skew {
                server_ahead: true,
                by: Duration::from_secs(1234)
            }
        );
        let h = hint(Some("RequestTimeTooSkewed"), Some(403), Some(behind)).unwrap_or_default();
        assert!(h.contains("clock is 20m 34s behind the server's"), "{h}");
        let ahead = skew(Some(date), at + Duration::from_millis(3_600_400)).expect("parsed");
        assert_eq!(ahead.to_string(), "1h ahead of");
        assert_eq!(skew(Some("yesterday"), at), None);
        assert_eq!(skew(None, at), None);
    }
}

//! Error classification: what a failed S3 call means for the file ([`Disposition`]), decided
//! by the one pure function [`classify`] from the transport, the status and the server's code;
//! [`failure`] turns an SDK error into an [`S3Failure`] with a message for logs and reason
//! files (with a fix-it hint where one applies).

use std::time::SystemTime;

use aws_sdk_s3::error::{ProvideErrorMetadata, SdkError};

/// What to do about a failed S3 call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Disposition {
    /// Throttling, 500, a conflict of the moment: this request may work if sent again later.
    Retry,
    /// The endpoint cannot be reached (connection refused or reset, DNS, TLS, timeout, a
    /// stalled request, 502/503/504 without a throttling code): not this file's problem. The
    /// file waits at the outage gate ([`crate::upload::gate`]) without spending attempts.
    Unreachable,
    /// 412 on a create-only write: something is already at the key; look at it.
    AlreadyExists,
    /// The server says the body does not match its checksum: the file may have changed.
    BadDigest,
    /// Bucket, credentials or clock problem: every file of the inbox would fail the same way,
    /// so pause the inbox instead of failing files (with a fix-it message, see
    /// [`crate::upload::fixit`]).
    FatalConfig,
    /// This file can never be uploaded as it is (e.g. 400 InvalidArgument, EntityTooLarge).
    Permanent,
    /// NoSuchUpload: the multipart upload no longer exists (completed already, or aborted by
    /// hand or by a lifecycle rule). Only multipart calls get it; they decide what it means.
    UploadGone,
    /// InvalidPart / InvalidPartOrder on completion: the server lacks parts the ledger
    /// remembers (lost or expired). That upload cannot be completed; a fresh one can.
    PartsMissing,
}

/// The kind of failure below the HTTP status, as far as it matters for classification.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    /// The server answered with a status code.
    Response,
    /// Timeout, connection refused/reset, broken response.
    Network,
    /// The request could not be built (a bug or unusable input).
    Construction,
}

/// Classifies a failure from its parts. Pure, so every case is unit-tested.
pub fn classify(transport: Transport, status: Option<u16>, code: Option<&str>) -> Disposition {
    use Disposition::*;
    match transport {
        Transport::Network => return Unreachable,
        Transport::Construction => return Permanent,
        Transport::Response => {}
    }
    match (status, code) {
        (Some(412), _) | (_, Some("PreconditionFailed")) => AlreadyExists,
        (_, Some("BadDigest" | "XAmzContentChecksumMismatch" | "InvalidDigest")) => BadDigest,
        (_, Some("NoSuchUpload")) => UploadGone,
        (_, Some("InvalidPart" | "InvalidPartOrder")) => PartsMissing,
        (_, Some("ConditionalRequestConflict")) => Retry,
        // Throttling and the server's own hiccups: per file, with backoff (the endpoint is
        // there, it only asks us to slow down).
        (
            _,
            Some(
                "SlowDown"
                | "Throttling"
                | "ThrottlingException"
                | "RequestLimitExceeded"
                | "BandwidthLimitExceeded"
                | "RequestTimeout"
                | "InternalError"
                | "OperationAborted"
                | "TooManyRequests"
                | "TooManyRequestsException",
            ),
        ) => Retry,
        // A server that is not ready (MinIO starting, Garage without quorum) says this.
        (_, Some("ServiceUnavailable")) => Unreachable,
        // No retry cures these; the SDK has already corrected a clock skew it could measure
        // and retried, so a skew error that gets here needs the clock fixed.
        (
            _,
            Some(
                "NoSuchBucket"
                | "AccessDenied"
                | "InvalidAccessKeyId"
                | "SignatureDoesNotMatch"
                | "ExpiredToken"
                | "TokenRefreshRequired"
                | "RequestTimeTooSkewed"
                | "AllAccessDisabled"
                | "InvalidBucketName"
                | "AccountProblem"
                | "PermanentRedirect"
                | "AuthorizationHeaderMalformed"
                | "InvalidToken",
            ),
        ) => FatalConfig,
        // HEAD answers carry no error body: judge by status alone.
        (Some(401 | 403), _) => FatalConfig,
        (Some(301 | 307), _) => FatalConfig,
        // A gateway with no server behind it, or a server that is down.
        (Some(502..=504), _) => Unreachable,
        (Some(408 | 409 | 429), _) => Retry,
        (Some(500..=599), _) => Retry,
        _ => Permanent,
    }
}

/// A failed S3 call: how to treat it, and a message for logs and reason files.
#[derive(Debug, Clone)]
pub struct S3Failure {
    pub disposition: Disposition,
    pub message: String,
    /// The server's error code, when it sent one (to tell which object option it refused).
    pub code: Option<String>,
}

impl std::fmt::Display for S3Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

pub(in crate::upload) fn failure<E>(
    err: &SdkError<E, aws_sdk_s3::config::http::HttpResponse>,
) -> S3Failure
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
{
    let (transport, status) = match err {
        SdkError::ServiceError(ctx) => (Transport::Response, Some(ctx.raw().status().as_u16())),
        SdkError::ResponseError(ctx) => (Transport::Network, Some(ctx.raw().status().as_u16())),
        SdkError::TimeoutError(_) | SdkError::DispatchFailure(_) => (Transport::Network, None),
        SdkError::ConstructionFailure(_) => (Transport::Construction, None),
        _ => (Transport::Network, None),
    };
    let code = err.code();
    let disposition = classify(transport, status, code);
    let mut message = match (code, err.message()) {
        (Some(c), Some(m)) => format!("{c}: {m}"),
        (Some(c), None) => c.to_owned(),
        _ => error_chain(err),
    };
    if let Some(s) = status {
        message = format!("{message} (HTTP {s})");
    }
    if transport != Transport::Response
        && let Some(hint) = crate::upload::fixit::network_hint(&message)
    {
        message = format!("{message}: {hint}");
    }
    if disposition == Disposition::FatalConfig {
        let date = err.raw_response().and_then(|r| r.headers().get("date"));
        let skew = crate::upload::fixit::skew(date, SystemTime::now());
        if let Some(hint) = crate::upload::fixit::hint(code, status, skew) {
            message = format!("{message}: {hint}");
        }
    }
    S3Failure {
        disposition,
        message,
        code: code.map(str::to_owned),
    }
}

/// An error and its causes on one line ("dispatch failure: io error: connection refused"),
/// without the SDK's multi-line debug dump.
fn error_chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut parts: Vec<String> = vec![err.to_string()];
    let mut cur = err.source();
    while let Some(e) = cur {
        let text = e.to_string();
        if parts.last().is_none_or(|last| !last.contains(&text)) {
            parts.push(text);
        }
        cur = e.source();
    }
    parts
        .join(": ")
        .lines()
        .map(str::trim)
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::Disposition::*;
    use super::Transport::*;
    use super::*;

    #[test]
    fn classification() {
        assert_eq!(classify(Network, None, None), Unreachable);
        assert_eq!(classify(Construction, None, None), Permanent);
        assert_eq!(classify(Response, Some(503), Some("SlowDown")), Retry);
        assert_eq!(classify(Response, Some(500), Some("InternalError")), Retry);
        assert_eq!(classify(Response, Some(500), None), Retry);
        assert_eq!(classify(Response, Some(503), Some("Throttling")), Retry);
        // Down, not throttling: the outage gate, not per-file retries.
        assert_eq!(classify(Response, Some(502), None), Unreachable);
        assert_eq!(classify(Response, Some(503), None), Unreachable);
        assert_eq!(classify(Response, Some(504), None), Unreachable);
        assert_eq!(
            classify(Response, Some(503), Some("ServiceUnavailable")),
            Unreachable
        );
        // Operator errors pause the inbox: no retry cures them.
        for code in [
            "ExpiredToken",
            "RequestTimeTooSkewed",
            "InvalidAccessKeyId",
            "SignatureDoesNotMatch",
            "AccessDenied",
        ] {
            assert_eq!(
                classify(Response, Some(403), Some(code)),
                FatalConfig,
                "{code}"
            );
        }
        assert_eq!(
            classify(Response, Some(400), Some("ExpiredToken")),
            FatalConfig
        );
        assert_eq!(classify(Response, Some(429), None), Retry);
        assert_eq!(
            classify(Response, Some(412), Some("PreconditionFailed")),
            AlreadyExists
        );
        assert_eq!(
            classify(Response, Some(409), Some("ConditionalRequestConflict")),
            Retry
        );
        assert_eq!(
            classify(Response, Some(403), Some("AccessDenied")),
            FatalConfig
        );
        assert_eq!(classify(Response, Some(403), None), FatalConfig);
        assert_eq!(
            classify(Response, Some(404), Some("NoSuchBucket")),
            FatalConfig
        );
        assert_eq!(
            classify(Response, Some(403), Some("InvalidAccessKeyId")),
            FatalConfig
        );
        assert_eq!(classify(Response, Some(400), Some("BadDigest")), BadDigest);
        assert_eq!(
            classify(Response, Some(400), Some("InvalidArgument")),
            Permanent
        );
        assert_eq!(
            classify(Response, Some(400), Some("EntityTooLarge")),
            Permanent
        );
        assert_eq!(classify(Response, Some(400), Some("RequestTimeout")), Retry);
        assert_eq!(
            classify(Response, Some(400), Some("KeyTooLongError")),
            Permanent
        );
        assert_eq!(
            classify(Response, Some(404), Some("NoSuchUpload")),
            UploadGone
        );
        assert_eq!(
            classify(Response, Some(400), Some("InvalidPart")),
            PartsMissing
        );
        assert_eq!(
            classify(Response, Some(400), Some("InvalidPartOrder")),
            PartsMissing
        );
    }
}

//! The S3 side of uploading, a folder by job: the client (here); error classification, the
//! one pure function that says what a failed call means (`errors.rs`); the PUT of a whole file
//! and the file bodies requests are read from (`put.rs`); an object's options on a request
//! (`dress.rs`); and the small calls, HEAD and the bucket probe of `inboxd check` (`calls.rs`).

use std::time::Duration;

use aws_config::meta::region::RegionProviderChain;
use aws_sdk_s3::Client;
use aws_sdk_s3::config::retry::RetryConfig;
use aws_sdk_s3::config::timeout::TimeoutConfig;
use aws_sdk_s3::config::{BehaviorVersion, Region};

use crate::config::{S3Settings, UploadSettings};

mod calls;
mod dress;
mod errors;
mod put;

pub use calls::{Head, head, probe};
pub(super) use dress::dressed;
pub use dress::{confirm_sse, content_type};
pub(super) use errors::failure;
pub use errors::{Disposition, S3Failure, Transport, classify};
pub use put::{Put, PutError, file_body, open_pinned, put_file};

/// Builds the client: the standard AWS credential chain, our endpoint and region, retries
/// with backoff inside the SDK for quick blips (our own loop handles longer outages).
pub async fn client(s3: &S3Settings, upload: &UploadSettings) -> Client {
    let retry = RetryConfig::standard()
        .with_max_attempts(3)
        .with_initial_backoff(upload.retry_initial.min(Duration::from_secs(1)))
        .with_max_backoff(upload.retry_max);
    // No attempt timeout: a large body legitimately takes long. A dead connection is caught by
    // the SDK's stalled-stream protection instead.
    let timeouts = TimeoutConfig::builder()
        .connect_timeout(s3.connect_timeout)
        .build();
    // Like every AWS tool: the configured region, else the AWS chain (AWS_REGION, the
    // profile), else us-east-1 (which most S3-compatible servers accept).
    let region = match &s3.region {
        Some(r) => RegionProviderChain::first_try(Region::new(r.clone())),
        None => RegionProviderChain::default_provider(),
    }
    .or_else(Region::from_static("us-east-1"));
    let mut loader = aws_config::defaults(BehaviorVersion::latest())
        .region(region)
        .retry_config(retry)
        .timeout_config(timeouts);
    if let Some(pem) = &s3.ca_pem {
        loader = loader.http_client(https_trusting(pem));
    }
    let sdk = loader.load().await;
    let mut b =
        aws_sdk_s3::config::Builder::from(&sdk).interceptor(crate::upload::liveness::Liveness);
    if let Some(ep) = &s3.endpoint {
        b = b.endpoint_url(ep);
    }
    b = b.force_path_style(s3.force_path_style);
    Client::from_conf(b.build())
}

/// The SDK's own HTTPS client (rustls with aws-lc, as by default), trusting `pem` (checked
/// when the configuration was loaded) in addition to the system's certificates.
fn https_trusting(pem: &[u8]) -> aws_sdk_s3::config::SharedHttpClient {
    use aws_smithy_http_client::tls::{self, TlsContext, TrustStore};
    let trust = TrustStore::default().with_pem_certificate(pem.to_vec());
    let builder = aws_smithy_http_client::Builder::new().tls_provider(tls::Provider::Rustls(
        tls::rustls_provider::CryptoMode::AwsLc,
    ));
    match TlsContext::builder().with_trust_store(trust).build() {
        Ok(ctx) => builder.tls_context(ctx).build_https(),
        // Only fails for unusable extra server names, which are never set here.
        Err(e) => {
            tracing::error!(error = %e, "cannot use s3.ca_file; using the system's certificates only");
            builder.build_https()
        }
    }
}

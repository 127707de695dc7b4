//! `[s3]`: where the store is and how to reach it, including the extra CA certificates,
//! which are read and checked here so that a bad bundle is a configuration error, not a
//! failure at the first upload.

use std::path::Path;
use std::time::Duration;

use super::Ctx;
use crate::config::raw::RawS3;
use crate::config::{ConfigError, DEFAULT_STALL_TIMEOUT, S3Settings};

impl Ctx<'_> {
    pub(super) fn s3(&self, raw: RawS3) -> Result<S3Settings, ConfigError> {
        let force_path_style = raw.force_path_style.unwrap_or(raw.endpoint.is_some());
        if let Some(ep) = &raw.endpoint
            && !(ep.starts_with("http://") || ep.starts_with("https://"))
        {
            return Err(self.err("s3.endpoint", "must start with http:// or https://"));
        }
        if raw.region.as_deref().is_some_and(|r| r.trim().is_empty()) {
            return Err(self.err(
                "s3.region",
                "must not be empty (leave it out to take the region from AWS_REGION or the AWS profile)",
            ));
        }
        let ca_pem = match &raw.ca_file {
            None => None,
            Some(f) => {
                let path = self.resolve(f);
                Some(
                    read_ca_file(&path)
                        .map_err(|m| self.err("s3.ca_file", &format!("{}: {m}", path.display())))?,
                )
            }
        };
        let stall_timeout = raw.stall_timeout.unwrap_or(DEFAULT_STALL_TIMEOUT);
        if stall_timeout < Duration::from_secs(1) {
            return Err(self.err("s3.stall_timeout", "must be at least 1s"));
        }
        Ok(S3Settings {
            endpoint: raw.endpoint,
            region: raw.region,
            force_path_style,
            connect_timeout: raw.connect_timeout.unwrap_or(Duration::from_secs(5)),
            stall_timeout,
            ca_pem,
        })
    }
}

/// Reads a PEM bundle of CA certificates and checks each one as the TLS client will load it
/// (the client would panic on a bad one; here it is a configuration error instead).
fn read_ca_file(path: &Path) -> Result<Vec<u8>, String> {
    use rustls_pki_types::CertificateDer;
    use rustls_pki_types::pem::PemObject as _;
    let pem = std::fs::read(path).map_err(|e| format!("cannot read it: {e}"))?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("not a PEM certificate bundle: {e}"))?;
    if certs.is_empty() {
        return Err(
            "holds no certificate (expected one or more -----BEGIN CERTIFICATE----- blocks)".into(),
        );
    }
    let mut roots = rustls::RootCertStore::empty();
    for (i, cert) in certs.into_iter().enumerate() {
        roots
            .add(cert)
            .map_err(|e| format!("certificate {} is not usable as a CA: {e}", i + 1))?;
    }
    Ok(pem)
}

//! An on-premises server behind an internal CA: the test makes a CA and a certificate for
//! `localhost`, puts a TLS front in front of the test S3 server, and checks that inboxd
//! trusts the endpoint only with `s3.ca_file` (or `SSL_CERT_FILE`), and that a file then
//! arrives byte for byte.

mod support;

use std::net::SocketAddr;
use std::sync::Arc;

use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair, KeyUsagePurpose};
use support::s3::TestS3;
use support::{Daemon, Setup, TIMEOUT, assert_object, content, toml_str, wait_until};
use tokio::net::{TcpListener, TcpStream};

/// A CA and a server certificate for `localhost` signed by it.
struct Pki {
    ca_pem: String,
    server: tokio_rustls::TlsAcceptor,
}

fn pki() -> Pki {
    let ca_key = KeyPair::generate().expect("CA key");
    let mut ca = CertificateParams::new(Vec::<String>::new()).expect("CA params");
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    ca.distinguished_name
        .push(rcgen::DnType::CommonName, "inboxd test CA");
    let ca_cert = ca.self_signed(&ca_key).expect("CA certificate");
    let issuer = Issuer::new(ca, ca_key);

    let key = KeyPair::generate().expect("server key");
    let params = CertificateParams::new(vec!["localhost".to_owned()]).expect("server params");
    let cert = params.signed_by(&key, &issuer).expect("server certificate");

    let der_key = rustls_pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into());
    let config = tokio_rustls::rustls::ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(vec![cert.der().clone()], der_key)
        .expect("server TLS config");
    Pki {
        ca_pem: ca_cert.pem(),
        server: tokio_rustls::TlsAcceptor::from(Arc::new(config)),
    }
}

/// Terminates TLS on a loopback port and passes the plain bytes to `backend`.
async fn tls_front(acceptor: tokio_rustls::TlsAcceptor, backend: SocketAddr) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind TLS front");
    let addr = listener.local_addr().expect("TLS front address");
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                // A client that does not trust the certificate hangs up here: nothing to do.
                let Ok(mut tls) = acceptor.accept(stream).await else {
                    return;
                };
                let Ok(mut plain) = TcpStream::connect(backend).await else {
                    return;
                };
                let _ = tokio::io::copy_bidirectional(&mut tls, &mut plain).await;
            });
        }
    });
    addr
}

/// A daemon whose endpoint is `https://localhost:<port of the TLS front>`.
async fn behind_tls(s3: &TestS3, setup: Setup) -> (Daemon, Pki) {
    let pki = pki();
    let front = tls_front(pki.server.clone(), s3.addr()).await;
    let daemon = Daemon::new(s3, setup);
    let text = daemon.config_text().replace(
        &toml_str(s3.endpoint()),
        &toml_str(&format!("https://localhost:{}", front.port())),
    );
    daemon.write_config(&text);
    (daemon, pki)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_internal_ca_is_trusted_through_ca_file_and_files_arrive() {
    let s3 = TestS3::start().await;
    let (mut daemon, pki) = behind_tls(&s3, Setup::new()).await;
    let ca = daemon.dir().join("internal-ca.pem");
    std::fs::write(&ca, &pki.ca_pem).expect("write CA");

    // Without the CA the endpoint is not trusted, and check says why.
    let out = daemon.check().await;
    assert_eq!(out.code(), Some(1), "{out}");
    assert!(
        out.to_string().to_lowercase().contains("certificate"),
        "the failure does not mention the certificate:\n{out}"
    );

    let text = daemon.config_text().replace(
        "[s3]\n",
        &format!("[s3]\nca_file = {}\n", toml_str(&ca.to_string_lossy())),
    );
    daemon.write_config(&text);
    let out = daemon.check().await;
    assert_eq!(out.code(), Some(0), "{out}");

    let inbox = daemon.inbox().clone();
    let bytes = content(1, 200_000);
    daemon.start();
    inbox.drop("scan.pdf", &bytes);
    wait_until(TIMEOUT, "scan.pdf is in done/", || {
        inbox.is_done("scan.pdf")
    })
    .await;
    daemon.stop().await;
    assert_object(&s3, &inbox.key("scan.pdf"), &bytes).await;
    inbox.assert_done("scan.pdf", &bytes);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ssl_cert_file_is_honoured_too() {
    let s3 = TestS3::start().await;
    let (daemon, pki) = behind_tls(&s3, Setup::new()).await;
    let ca = daemon.dir().join("bundle.pem");
    std::fs::write(&ca, &pki.ca_pem).expect("write CA");
    let config = daemon.config.to_string_lossy();
    let args = ["check", "--config", config.as_ref()];
    let out = daemon
        .cli(
            &args,
            &[("SSL_CERT_FILE", ca.to_str().expect("utf-8 path"))],
        )
        .await;
    assert_eq!(out.code(), Some(0), "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ca_file_that_is_not_a_certificate_is_a_config_error_naming_the_key() {
    let s3 = TestS3::start().await;
    let daemon = Daemon::new(&s3, Setup::new());
    let ca = daemon.dir().join("not-a-cert.pem");
    std::fs::write(&ca, "hello\n").expect("write file");
    let text = daemon.config_text().replace(
        "[s3]\n",
        &format!("[s3]\nca_file = {}\n", toml_str(&ca.to_string_lossy())),
    );
    daemon.write_config(&text);
    let out = daemon.check().await;
    assert_eq!(out.code(), Some(2), "{out}");
    let text = out.to_string();
    assert!(
        text.contains("s3.ca_file") && text.contains("not-a-cert.pem"),
        "the error does not name the key and file:\n{text}"
    );
}

//! The API over TLS: the agent's certificate and, when a client CA is given, the client
//! certificates callers may present — verified against that CA, their subject naming an
//! identity (`clientSubject` in `agent.yaml`). A caller without a certificate may still use a
//! token. The same module gives `plumb` its client side: the CA to trust, the certificate to
//! present.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_util::sync::CancellationToken;

/// Where the API's certificate, key and client CA are.
#[derive(Clone, Debug, PartialEq)]
pub struct TlsSettings {
    /// The agent's certificate chain (PEM).
    pub cert_file: PathBuf,
    /// Its private key (PEM).
    pub key_file: PathBuf,
    /// The CA (PEM) client certificates must chain to; without it none is asked for.
    pub client_ca_file: Option<PathBuf>,
}

/// The subject of the client certificate a connection presented (verified), if any; it goes
/// with each request of the connection.
#[derive(Clone, Debug, Default)]
pub struct Peer(pub Option<String>);

/// How long a client may take to finish its TLS handshake.
const HANDSHAKE: Duration = Duration::from_secs(10);

/// The crypto rustls uses here (ring, as kube does).
pub fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn certificates(file: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(file)
        .map_err(|e| format!("cannot read {}: {e}", file.display()))?
        .collect::<Result<_, _>>()
        .map_err(|e| format!("{} holds a certificate that cannot be read: {e}", file.display()))?;
    if certs.is_empty() {
        return Err(format!("{} holds no certificate", file.display()));
    }
    Ok(certs)
}

fn key(file: &Path) -> Result<PrivateKeyDer<'static>, String> {
    PrivateKeyDer::from_pem_file(file)
        .map_err(|e| format!("{} holds no private key that can be read: {e}", file.display()))
}

/// The CA certificates in `file`, as roots.
pub fn roots(file: &Path) -> Result<rustls::RootCertStore, String> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in certificates(file)? {
        roots
            .add(cert)
            .map_err(|e| format!("{}: not a CA certificate rustls takes: {e}", file.display()))?;
    }
    Ok(roots)
}

/// The server side: the agent's certificate, and client certificates verified against the
/// client CA when one is given (optional: a caller may use a token instead).
pub fn server_config(settings: &TlsSettings) -> Result<Arc<rustls::ServerConfig>, String> {
    let builder = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?;
    let builder = match &settings.client_ca_file {
        Some(ca) => {
            let verifier =
                rustls::server::WebPkiClientVerifier::builder_with_provider(Arc::new(roots(ca)?), provider())
                    .allow_unauthenticated()
                    .build()
                    .map_err(|e| format!("{}: {e}", ca.display()))?;
            builder.with_client_cert_verifier(verifier)
        }
        None => builder.with_no_client_auth(),
    };
    let config = builder
        .with_single_cert(certificates(&settings.cert_file)?, key(&settings.key_file)?)
        .map_err(|e| format!("{}: {e}", settings.key_file.display()))?;
    Ok(Arc::new(config))
}

/// The client side (`plumb status --server https://…`): the agent's CA, the only root trusted
/// (the system's are not read), and the certificate to present, if any.
pub fn client_config(ca: &Path, identity: Option<(&Path, &Path)>) -> Result<rustls::ClientConfig, String> {
    let builder = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots(ca)?);
    match identity {
        Some((cert, private)) => builder
            .with_client_auth_cert(certificates(cert)?, key(private)?)
            .map_err(|e| format!("{}: {e}", private.display())),
        None => Ok(builder.with_no_client_auth()),
    }
}

/// The subject of `cert` as RFC 4514 writes it (`CN=alice,O=ops`).
pub fn subject(cert: &CertificateDer<'_>) -> Option<String> {
    use x509_cert::der::Decode;
    let parsed = x509_cert::Certificate::from_der(cert.as_ref()).ok()?;
    Some(parsed.tbs_certificate.subject.to_string())
}

/// Serves `routes` over TLS on `listener` until `stop`; each connection's verified client
/// certificate subject goes with its requests as a [`Peer`].
pub async fn serve(
    listener: tokio::net::TcpListener,
    config: Arc<rustls::ServerConfig>,
    routes: axum::Router,
    stop: CancellationToken,
) {
    let acceptor = tokio_rustls::TlsAcceptor::from(config);
    loop {
        let accepted = tokio::select! {
            _ = stop.cancelled() => return,
            accepted = listener.accept() => accepted,
        };
        let Ok((stream, _)) = accepted else {
            continue;
        };
        let (acceptor, routes, stop) = (acceptor.clone(), routes.clone(), stop.clone());
        tokio::spawn(async move {
            let Ok(Ok(tls)) = tokio::time::timeout(HANDSHAKE, acceptor.accept(stream)).await else {
                return;
            };
            let peer = tls
                .get_ref()
                .1
                .peer_certificates()
                .and_then(|chain| chain.first())
                .and_then(subject);
            let service = routes.layer(axum::Extension(Peer(peer)));
            let service = hyper_util::service::TowerToHyperService::new(service);
            let connection =
                hyper::server::conn::http1::Builder::new().serve_connection(hyper_util::rt::TokioIo::new(tls), service);
            tokio::select! {
                _ = connection => {}
                _ = stop.cancelled() => {}
            }
        });
    }
}

//! TLS to the database: rustls, verifying the server's certificate.

use std::path::Path;
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;
use tokio_postgres_rustls::MakeRustlsConnect;
use weld_pipeline::Error;

/// A connector trusting Mozilla's roots and the certificates of `ca_file`, if any.
///
/// # Errors
///
/// [`Error::Invalid`] when the file cannot be read or holds no certificate.
pub(crate) fn connector(ca_file: Option<&Path>) -> Result<MakeRustlsConnect, Error> {
    let mut roots = rustls::RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    if let Some(path) = ca_file {
        let invalid = |why: String| Error::Invalid(format!("{}: {why}", path.display()));
        let certificates = CertificateDer::pem_file_iter(path)
            .map_err(|e| invalid(e.to_string()))?
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| invalid(e.to_string()))?;
        if certificates.is_empty() {
            return Err(invalid("no certificate in the file".into()));
        }
        for certificate in certificates {
            roots
                .add(certificate)
                .map_err(|e| invalid(format!("a certificate is refused: {e}")))?;
        }
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| Error::Bug(format!("rustls has no safe protocol version: {e}")))?
    .with_root_certificates(roots)
    .with_no_client_auth();
    Ok(MakeRustlsConnect::new(config))
}

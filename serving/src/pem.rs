//! Reading PEM certificates and keys, for servers and clients alike. Both
//! [`crate::tls`] (the files a server starts with) and [`crate::tls_reload`]
//! (the same files re-read when they change) read through here, so neither
//! needs the other's errors.

use std::path::Path;

use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};

/// A TLS certificate or key file that could not be read.
#[derive(Debug, thiserror::Error)]
#[error("reading {what} {path}: {source}")]
pub struct TlsFileError {
    /// Which flag's file.
    pub what: &'static str,
    /// The file.
    pub path: String,
    /// The I/O error.
    pub source: std::io::Error,
}

/// Reads the PEM file given by flag `what`.
pub fn read_pem(what: &'static str, path: &Path) -> Result<Vec<u8>, TlsFileError> {
    std::fs::read(path).map_err(|source| TlsFileError {
        what,
        path: path.display().to_string(),
        source,
    })
}

/// The certificates in `pem`, read from `path` for flag `what`; a file
/// with none (a key, a truncated copy, an empty file) is an error, as
/// trusting no CA or presenting no certificate is never what was meant.
pub fn certificates(
    what: &'static str,
    path: &Path,
    pem: &[u8],
) -> Result<Vec<CertificateDer<'static>>, TlsFileError> {
    let invalid = |reason: String| TlsFileError {
        what,
        path: path.display().to_string(),
        source: std::io::Error::new(std::io::ErrorKind::InvalidData, reason),
    };
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| invalid(format!("unreadable PEM certificate: {e}")))?;
    if certs.is_empty() {
        return Err(invalid("no PEM certificate in it".into()));
    }
    Ok(certs)
}

/// The private key in `pem`, read from `path` for flag `what`.
pub fn private_key(
    what: &'static str,
    path: &Path,
    pem: &[u8],
) -> Result<PrivateKeyDer<'static>, TlsFileError> {
    PrivateKeyDer::from_pem_slice(pem).map_err(|e| TlsFileError {
        what,
        path: path.display().to_string(),
        source: std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("no PEM private key in it: {e}"),
        ),
    })
}

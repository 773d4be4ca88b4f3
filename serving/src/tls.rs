//! TLS files for the gRPC servers (`--tls-cert`, `--tls-key`) and for
//! clients that verify a server against a CA (`--trainer-ca`).

use std::path::Path;

use tonic::transport::{Identity, ServerTlsConfig};

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

/// The gRPC server's TLS settings from `--tls-cert` and `--tls-key`; `None`
/// serves plaintext. Clap makes the flags require each other; a config built
/// in code with only one of them also serves plaintext.
pub fn server_tls(
    cert: Option<&Path>,
    key: Option<&Path>,
) -> Result<Option<ServerTlsConfig>, TlsFileError> {
    let (Some(cert), Some(key)) = (cert, key) else {
        return Ok(None);
    };
    let identity = Identity::from_pem(read_pem("--tls-cert", cert)?, read_pem("--tls-key", key)?);
    Ok(Some(ServerTlsConfig::new().identity(identity)))
}

//! TLS files for the gRPC servers (`--tls-cert`, `--tls-key`,
//! `--tls-client-ca`) and for clients that verify a server against a CA
//! (`--trainer-ca`) and present their own certificate (`--trainer-cert`).
//!
//! The PEM readers live in [`crate::pem`] and are re-exported here, where
//! both services have always found them; this module only adds the step
//! from flags to [`ReloadingServerTls`], so the arrows go one way:
//! `tls` → `tls_reload` → `pem`.

use std::path::Path;

pub use crate::pem::{TlsFileError, certificates, private_key, read_pem};
use crate::tls_reload::{ReloadingServerTls, ServerTlsError, ServerTlsFiles};

/// The gRPC server's TLS settings from `--tls-cert`, `--tls-key` and, for
/// mutual TLS, `--tls-client-ca`, re-read whenever the files change; `None`
/// serves plaintext. Clap makes the cert and key require each other; a
/// config built in code with only one of them also serves plaintext.
pub fn server_tls(
    cert: Option<&Path>,
    key: Option<&Path>,
    client_ca: Option<&Path>,
) -> Result<Option<ReloadingServerTls>, ServerTlsError> {
    let (Some(cert), Some(key)) = (cert, key) else {
        return Ok(None);
    };
    ReloadingServerTls::load(ServerTlsFiles {
        cert: cert.to_path_buf(),
        key: key.to_path_buf(),
        client_ca: client_ca.map(Path::to_path_buf),
    })
    .map(Some)
}

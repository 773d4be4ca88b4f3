//! TLS towards the trainer: the CA that signs the trainer's certificate
//! (`--trainer-ca`) and, for a trainer that requires mutual TLS, the
//! certificate and key this replica presents (`--trainer-cert`,
//! `--trainer-key`). Kept as paths, not contents, and read again on every
//! (re)connect of the subscription: a rotated Secret is used from the next
//! reconnect on, without a restart.

use std::path::{Path, PathBuf};

use taskcast_serving::tls::{TlsFileError, certificates, private_key, read_pem};
use tonic::transport::{Certificate, ClientTlsConfig, Identity};

/// The files behind the subscription's TLS.
#[derive(Clone, Debug)]
pub struct TrainerTls {
    /// `--trainer-ca`: PEM CA certificate(s) the trainer's certificate is
    /// verified against.
    pub ca: PathBuf,
    /// `--trainer-cert` and `--trainer-key`: this replica's client identity;
    /// `None` presents no certificate.
    pub identity: Option<ClientIdentity>,
}

/// A client certificate and its key, as files.
#[derive(Clone, Debug)]
pub struct ClientIdentity {
    /// PEM certificate chain, the replica's own first.
    pub cert: PathBuf,
    /// PEM private key of that certificate.
    pub key: PathBuf,
}

impl TrainerTls {
    /// Reads the files as they are now into the settings of one connection.
    /// A file without the PEM section its flag needs fails here; whether
    /// the key is the certificate's is found when the connection is set up.
    pub fn load(&self) -> Result<ClientTlsConfig, TlsFileError> {
        let mut tls = ClientTlsConfig::new().ca_certificate(Certificate::from_pem(
            read_certificates("--trainer-ca", &self.ca)?,
        ));
        if let Some(identity) = &self.identity {
            let key = read_pem("--trainer-key", &identity.key)?;
            private_key("--trainer-key", &identity.key, &key)?;
            tls = tls.identity(Identity::from_pem(
                read_certificates("--trainer-cert", &identity.cert)?,
                key,
            ));
        }
        // The server name checked against the certificate is the URL's host.
        Ok(tls)
    }
}

/// The PEM file given by flag `what`, which must hold a certificate (tonic
/// takes one without any as trusting nothing, or presenting nothing).
fn read_certificates(what: &'static str, path: &Path) -> Result<Vec<u8>, TlsFileError> {
    let pem = read_pem(what, path)?;
    certificates(what, path, &pem)?;
    Ok(pem)
}

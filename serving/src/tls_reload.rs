//! Server TLS settings that follow their files. Kubernetes rotates a mounted
//! Secret by swapping a symlink and cert-manager renews certificates before
//! they expire; either must reach new connections without a restart, but
//! tonic's `ServerTlsConfig` is fixed when the server starts. So the serve
//! loop asks [`ReloadingServerTls::current`] for the settings of every
//! connection it accepts ([`crate::tls_incoming`]), and connections already
//! open keep the session they negotiated.
//!
//! A change is noticed by the files' metadata, looked at no more than once
//! per [`RECHECK_INTERVAL`] and only when a connection arrives, so an idle
//! server does no work. New files are parsed into a complete rustls config
//! before they replace the old one: a half-written file, a key that does not
//! match its certificate or an unreadable CA is logged and the last good
//! settings keep serving.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime};

use tokio_rustls::rustls::crypto::ring;
use tokio_rustls::rustls::server::{VerifierBuilderError, WebPkiClientVerifier};
use tokio_rustls::rustls::{self, RootCertStore, ServerConfig};

use crate::pem::{TlsFileError, certificates, private_key, read_pem};

/// How stale the view of the files may get: a rotation reaches new
/// connections at most this long after the files change.
pub const RECHECK_INTERVAL: Duration = Duration::from_secs(1);

/// HTTP/2 is all a gRPC server speaks; a client that cannot negotiate it
/// fails at the handshake rather than at its first call.
const ALPN_H2: &[u8] = b"h2";

/// The files behind a server's TLS settings, as the flags name them.
#[derive(Clone, Debug)]
pub struct ServerTlsFiles {
    /// `--tls-cert`: PEM certificate chain, the server's own first.
    pub cert: PathBuf,
    /// `--tls-key`: PEM private key of that certificate.
    pub key: PathBuf,
    /// `--tls-client-ca`: PEM CA certificate(s); when set every client must
    /// present a certificate one of them signed (mutual TLS).
    pub client_ca: Option<PathBuf>,
}

/// Why a set of TLS files cannot be served.
#[derive(Debug, thiserror::Error)]
pub enum ServerTlsError {
    /// A file could not be read or holds no PEM section of the kind its
    /// flag needs.
    #[error(transparent)]
    Read(#[from] TlsFileError),
    /// The certificate and key do not make a server identity (most often:
    /// the key is not the certificate's).
    #[error("--tls-cert {cert} with --tls-key {key}: {source}")]
    Identity {
        /// The certificate file.
        cert: String,
        /// The key file.
        key: String,
        /// What rustls refused.
        source: rustls::Error,
    },
    /// The client CA file cannot verify client certificates.
    #[error("--tls-client-ca {path}: {reason}")]
    ClientCa {
        /// The CA file.
        path: String,
        /// What is wrong with it.
        reason: String,
    },
}

impl ServerTlsFiles {
    /// Reads and parses the files into the rustls settings of one server.
    pub fn build(&self) -> Result<Arc<ServerConfig>, ServerTlsError> {
        let chain = certificates(
            "--tls-cert",
            &self.cert,
            &read_pem("--tls-cert", &self.cert)?,
        )?;
        let key = private_key("--tls-key", &self.key, &read_pem("--tls-key", &self.key)?)?;
        // Explicit rather than the process default: another crate enabling
        // a second provider would make the default ambiguous (a panic).
        let provider = Arc::new(ring::default_provider());
        let identity_error = |source| ServerTlsError::Identity {
            cert: self.cert.display().to_string(),
            key: self.key.display().to_string(),
            source,
        };
        let builder = ServerConfig::builder_with_provider(Arc::clone(&provider))
            .with_safe_default_protocol_versions()
            .map_err(identity_error)?;
        let builder = match &self.client_ca {
            None => builder.with_no_client_auth(),
            Some(path) => {
                let verifier = client_verifier(path, provider)?;
                builder.with_client_cert_verifier(verifier)
            }
        };
        let mut config = builder
            .with_single_cert(chain, key)
            .map_err(identity_error)?;
        config.alpn_protocols = vec![ALPN_H2.to_vec()];
        Ok(Arc::new(config))
    }

    fn paths(&self) -> impl Iterator<Item = &Path> {
        [Some(&self.cert), Some(&self.key), self.client_ca.as_ref()]
            .into_iter()
            .flatten()
            .map(PathBuf::as_path)
    }

    fn stamps(&self) -> Vec<Option<Stamp>> {
        self.paths().map(Stamp::of).collect()
    }
}

/// A verifier requiring a client certificate signed by a CA in `path`.
fn client_verifier(
    path: &Path,
    provider: Arc<rustls::crypto::CryptoProvider>,
) -> Result<Arc<dyn rustls::server::danger::ClientCertVerifier>, ServerTlsError> {
    let bad = |reason: String| ServerTlsError::ClientCa {
        path: path.display().to_string(),
        reason,
    };
    let mut roots = RootCertStore::empty();
    let what = "--tls-client-ca";
    for cert in certificates(what, path, &read_pem(what, path)?)? {
        // Every one must parse: silently trusting fewer CAs than the file
        // lists would refuse clients the operator meant to admit.
        roots
            .add(cert)
            .map_err(|e| bad(format!("not a CA certificate: {e}")))?;
    }
    WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
        .build()
        .map_err(|e: VerifierBuilderError| bad(e.to_string()))
}

/// What a file looked like when last loaded. Kubernetes swaps a symlink, so
/// the file the path resolves to changes identity (inode) even when its
/// size and timestamp happen to match; a file rewritten in place changes
/// its modification and change times.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Stamp {
    len: u64,
    modified: Option<SystemTime>,
    #[cfg(unix)]
    identity: (u64, u64, i64, i64),
}

impl Stamp {
    /// `None` when the file cannot be looked at (mid-swap, say): that too is
    /// a change, tried again once the file is back.
    fn of(path: &Path) -> Option<Stamp> {
        let meta = std::fs::metadata(path).ok()?;
        #[cfg(unix)]
        let identity = {
            use std::os::unix::fs::MetadataExt;
            (meta.dev(), meta.ino(), meta.ctime(), meta.ctime_nsec())
        };
        Some(Stamp {
            len: meta.len(),
            modified: meta.modified().ok(),
            #[cfg(unix)]
            identity,
        })
    }
}

/// Server TLS settings, re-read from their files when those change. Clones
/// share one view of the files.
#[derive(Clone)]
pub struct ReloadingServerTls {
    inner: Arc<Inner>,
}

struct Inner {
    files: ServerTlsFiles,
    recheck: Duration,
    state: Mutex<State>,
}

struct State {
    /// The last settings that loaded; what new connections get.
    config: Arc<ServerConfig>,
    /// The files as they were when last tried, loaded or not, so a bad
    /// file is reported once rather than on every connection.
    stamps: Vec<Option<Stamp>>,
    checked: Instant,
}

impl ReloadingServerTls {
    /// Loads `files`; fails when they cannot be served now, so a
    /// misconfigured server refuses to start rather than serve nothing.
    pub fn load(files: ServerTlsFiles) -> Result<Self, ServerTlsError> {
        Self::load_with(files, RECHECK_INTERVAL)
    }

    fn load_with(files: ServerTlsFiles, recheck: Duration) -> Result<Self, ServerTlsError> {
        // Stamped before reading: a change made while reading is seen next time.
        let stamps = files.stamps();
        let config = files.build()?;
        Ok(ReloadingServerTls {
            inner: Arc::new(Inner {
                files,
                recheck,
                state: Mutex::new(State {
                    config,
                    stamps,
                    checked: Instant::now(),
                }),
            }),
        })
    }

    /// The files these settings come from.
    pub fn files(&self) -> &ServerTlsFiles {
        &self.inner.files
    }

    /// Whether clients must present a certificate.
    pub fn mutual(&self) -> bool {
        self.inner.files.client_ca.is_some()
    }

    /// The settings for a connection arriving now: reloaded first when the
    /// files changed since they were last looked at.
    pub fn current(&self) -> Arc<ServerConfig> {
        // Held while reloading so that a burst of connections after a
        // rotation parses the files once; a reload takes milliseconds.
        let mut state = self
            .inner
            .state
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if state.checked.elapsed() >= self.inner.recheck {
            state.checked = Instant::now();
            let stamps = self.inner.files.stamps();
            if stamps != state.stamps {
                state.stamps = stamps;
                match self.inner.files.build() {
                    Ok(config) => {
                        state.config = config;
                        tracing::info!(
                            cert = %self.inner.files.cert.display(),
                            mutual = self.mutual(),
                            "TLS files changed: new connections use them"
                        );
                    }
                    Err(e) => tracing::error!(
                        error = %e,
                        "TLS files changed but cannot be used; new connections keep the previous ones"
                    ),
                }
            }
        }
        Arc::clone(&state.config)
    }
}

impl fmt::Debug for ReloadingServerTls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ReloadingServerTls")
            .field("files", &self.inner.files)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
    use tokio_rustls::rustls::ClientConfig;
    use tokio_rustls::rustls::pki_types::pem::PemObject;
    use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
    use tokio_rustls::{TlsAcceptor, TlsConnector};

    /// A CA that signs certificates for tests.
    pub(crate) struct Ca(CertifiedIssuer<'static, KeyPair>);

    /// A certificate and its key, in PEM.
    pub(crate) struct Pair {
        pub(crate) cert: String,
        pub(crate) key: String,
    }

    impl Ca {
        pub(crate) fn new(name: &str) -> Ca {
            let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
            params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
            params
                .distinguished_name
                .push(rcgen::DnType::CommonName, name);
            Ca(CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap())
        }

        pub(crate) fn pem(&self) -> String {
            self.0.pem()
        }

        pub(crate) fn issue(&self, name: &str) -> Pair {
            let key = KeyPair::generate().unwrap();
            let cert = CertificateParams::new(vec![name.to_string()])
                .unwrap()
                .signed_by(&key, &self.0)
                .unwrap();
            Pair {
                cert: cert.pem(),
                key: key.serialize_pem(),
            }
        }
    }

    fn roots(ca_pem: &str) -> RootCertStore {
        let mut roots = RootCertStore::empty();
        for c in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
            roots.add(c.unwrap()).unwrap();
        }
        roots
    }

    /// A client trusting `ca_pem`, presenting `identity` if given.
    pub(crate) fn client(ca_pem: &str, identity: Option<&Pair>) -> TlsConnector {
        let builder = ClientConfig::builder_with_provider(Arc::new(ring::default_provider()))
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots(ca_pem));
        let mut config = match identity {
            None => builder.with_no_client_auth(),
            Some(p) => builder
                .with_client_auth_cert(
                    CertificateDer::pem_slice_iter(p.cert.as_bytes())
                        .map(Result::unwrap)
                        .collect(),
                    PrivateKeyDer::from_pem_slice(p.key.as_bytes()).unwrap(),
                )
                .unwrap(),
        };
        config.alpn_protocols = vec![ALPN_H2.to_vec()];
        TlsConnector::from(Arc::new(config))
    }

    /// One handshake over an in-memory pipe: the server certificate the
    /// client saw, or why either side gave up.
    async fn handshake(server: Arc<ServerConfig>, client: TlsConnector) -> Result<Vec<u8>, String> {
        let (a, b) = tokio::io::duplex(64 * 1024);
        let accept = async {
            // Like a real server, read once after the handshake: a TLS 1.3
            // client learns of a refused certificate only then.
            let mut s = TlsAcceptor::from(server).accept(a).await?;
            let mut buf = [0u8; 1];
            tokio::io::AsyncReadExt::read(&mut s, &mut buf).await?;
            Ok::<_, std::io::Error>(())
        };
        let connect = async {
            let mut s = client
                .connect(ServerName::try_from("localhost").unwrap(), b)
                .await?;
            tokio::io::AsyncWriteExt::write_all(&mut s, b"x").await?;
            tokio::io::AsyncWriteExt::flush(&mut s).await?;
            let seen = s.get_ref().1.peer_certificates().unwrap()[0].to_vec();
            // Kept open until the server is done with it.
            Ok::<_, std::io::Error>((seen, s))
        };
        let (served, seen) = tokio::join!(accept, connect);
        served.map_err(|e| format!("server: {e}"))?;
        seen.map(|(seen, _)| seen)
            .map_err(|e| format!("client: {e}"))
    }

    fn der(pem: &str) -> Vec<u8> {
        CertificateDer::from_pem_slice(pem.as_bytes())
            .unwrap()
            .to_vec()
    }

    /// Writes `contents` to `path` by rename, as a Secret update replaces it.
    fn replace(path: &Path, contents: &str) {
        let tmp = path.with_extension("tmp");
        std::fs::write(&tmp, contents).unwrap();
        std::fs::rename(&tmp, path).unwrap();
    }

    struct Files {
        _dir: tempfile::TempDir,
        files: ServerTlsFiles,
    }

    fn write_files(server: &Pair, client_ca: Option<&str>) -> Files {
        let dir = tempfile::tempdir().unwrap();
        let files = ServerTlsFiles {
            cert: dir.path().join("tls.crt"),
            key: dir.path().join("tls.key"),
            client_ca: client_ca.map(|_| dir.path().join("ca.crt")),
        };
        std::fs::write(&files.cert, &server.cert).unwrap();
        std::fs::write(&files.key, &server.key).unwrap();
        if let (Some(path), Some(pem)) = (&files.client_ca, client_ca) {
            std::fs::write(path, pem).unwrap();
        }
        Files { _dir: dir, files }
    }

    #[tokio::test]
    async fn client_certificates_are_required_and_checked() {
        let ca = Ca::new("ca");
        let other = Ca::new("other");
        let server = ca.issue("localhost");
        let f = write_files(&server, Some(&ca.pem()));
        let tls = ReloadingServerTls::load(f.files.clone()).unwrap();
        assert!(tls.mutual());

        let good = ca.issue("replica");
        let seen = handshake(tls.current(), client(&ca.pem(), Some(&good))).await;
        assert_eq!(seen.unwrap(), der(&server.cert));
        let none = handshake(tls.current(), client(&ca.pem(), None)).await;
        assert!(none.is_err(), "a client without a certificate got in");
        let stranger = other.issue("replica");
        let wrong = handshake(tls.current(), client(&ca.pem(), Some(&stranger))).await;
        assert!(wrong.is_err(), "a certificate from another CA got in");
    }

    #[tokio::test]
    async fn rotated_files_reach_new_connections_and_bad_ones_do_not() {
        let ca = Ca::new("ca");
        let first = ca.issue("localhost");
        let f = write_files(&first, None);
        let tls = ReloadingServerTls::load_with(f.files.clone(), Duration::ZERO).unwrap();
        assert!(!tls.mutual());
        let seen = handshake(tls.current(), client(&ca.pem(), None)).await;
        assert_eq!(seen.unwrap(), der(&first.cert));

        let second = ca.issue("localhost");
        replace(&f.files.key, &second.key);
        replace(&f.files.cert, &second.cert);
        let seen = handshake(tls.current(), client(&ca.pem(), None)).await;
        assert_eq!(
            seen.unwrap(),
            der(&second.cert),
            "the rotation was not picked up"
        );

        // A key that is not the certificate's: logged, the last good pair stays.
        let third = ca.issue("localhost");
        replace(&f.files.cert, &third.cert);
        let seen = handshake(tls.current(), client(&ca.pem(), None)).await;
        assert_eq!(seen.unwrap(), der(&second.cert));
        // Garbage and a missing file: the same.
        replace(&f.files.key, "not a key");
        std::fs::remove_file(&f.files.cert).unwrap();
        let seen = handshake(tls.current(), client(&ca.pem(), None)).await;
        assert_eq!(seen.unwrap(), der(&second.cert));
        // Once the pair is whole again it is taken.
        replace(&f.files.cert, &third.cert);
        replace(&f.files.key, &third.key);
        let seen = handshake(tls.current(), client(&ca.pem(), None)).await;
        assert_eq!(seen.unwrap(), der(&third.cert));
    }

    #[tokio::test]
    async fn a_rotated_client_ca_changes_who_gets_in() {
        let (old, new) = (Ca::new("old"), Ca::new("new"));
        let server = old.issue("localhost");
        let f = write_files(&server, Some(&old.pem()));
        let tls = ReloadingServerTls::load_with(f.files.clone(), Duration::ZERO).unwrap();
        let (old_client, new_client) = (old.issue("replica"), new.issue("replica"));
        assert!(
            handshake(tls.current(), client(&old.pem(), Some(&old_client)))
                .await
                .is_ok()
        );
        assert!(
            handshake(tls.current(), client(&old.pem(), Some(&new_client)))
                .await
                .is_err()
        );

        let ca_file = f.files.client_ca.as_deref().unwrap();
        replace(ca_file, &new.pem());
        assert!(
            handshake(tls.current(), client(&old.pem(), Some(&new_client)))
                .await
                .is_ok()
        );
        assert!(
            handshake(tls.current(), client(&old.pem(), Some(&old_client)))
                .await
                .is_err()
        );

        // A CA file with nothing in it keeps the previous CA.
        replace(ca_file, "");
        assert!(
            handshake(tls.current(), client(&old.pem(), Some(&new_client)))
                .await
                .is_ok()
        );
    }

    #[test]
    fn bad_files_at_startup_name_the_flag_and_the_file() {
        let ca = Ca::new("ca");
        let pair = ca.issue("localhost");
        let f = write_files(&pair, Some("junk"));
        let e = ReloadingServerTls::load(f.files.clone())
            .unwrap_err()
            .to_string();
        assert!(e.contains("--tls-client-ca") && e.contains("ca.crt"), "{e}");

        let other = ca.issue("localhost");
        let f = write_files(
            &Pair {
                cert: pair.cert,
                key: other.key,
            },
            None,
        );
        let e = ReloadingServerTls::load(f.files.clone())
            .unwrap_err()
            .to_string();
        assert!(e.contains("--tls-cert") && e.contains("--tls-key"), "{e}");

        let missing = ServerTlsFiles {
            cert: "/nonexistent/c.pem".into(),
            key: "/nonexistent/k.pem".into(),
            client_ca: None,
        };
        let e = ReloadingServerTls::load(missing).unwrap_err().to_string();
        assert!(
            e.contains("--tls-cert") && e.contains("/nonexistent/c.pem"),
            "{e}"
        );
    }
}

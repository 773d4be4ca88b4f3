//! The accept loop of a TLS server, in place of tonic's own (whose settings
//! are fixed at startup): TCP connections from tonic's `TcpIncoming`, with
//! its nodelay and keepalive, each handshaken with the settings current when
//! it arrived ([`ReloadingServerTls::current`]).
//!
//! Handshakes run as tasks of their own, so a client that connects and
//! stalls does not hold up the next one, and each is bounded by
//! [`HANDSHAKE_TIMEOUT`]. A failed handshake (no client certificate, one from
//! an unknown CA, a plaintext client) is that client's problem: it is logged
//! and skipped, never handed to tonic, which ends the server on an accept
//! error it does not know to be transient.

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::net::TcpStream;
use tokio::task::JoinSet;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;
use tokio_stream::Stream;
use tonic::transport::server::TcpIncoming;

use crate::tls_reload::ReloadingServerTls;

/// Longest a client may take to complete the TLS handshake.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// TLS connections for `serve_with_incoming_shutdown`: tonic implements
/// `Connected` for `TlsStream<TcpStream>` (feature `tls-connect-info`), so
/// calls see the peer's address and certificates as with tonic's own TLS.
pub struct TlsIncoming {
    tcp: TcpIncoming,
    tls: ReloadingServerTls,
    /// Handshakes under way; `None` is one that failed (already logged).
    handshakes: JoinSet<Option<TlsStream<TcpStream>>>,
    tcp_done: bool,
}

impl TlsIncoming {
    /// Accepts on `tcp`, handshaking with `tls`.
    pub fn new(tcp: TcpIncoming, tls: ReloadingServerTls) -> Self {
        TlsIncoming {
            tcp,
            tls,
            handshakes: JoinSet::new(),
            tcp_done: false,
        }
    }

    fn start_handshake(&mut self, stream: TcpStream) {
        let tls = self.tls.clone();
        self.handshakes.spawn(async move {
            let peer = stream.peer_addr().ok();
            // Looked up here, not in poll_next: a reload reads files, which
            // belongs on a task, not in the accept loop.
            let acceptor = TlsAcceptor::from(tls.current());
            match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                Ok(Ok(io)) => Some(io),
                // Debug, like tonic's: load balancers and port scans fail
                // handshakes all day. The refused client logs its own error.
                Ok(Err(e)) => {
                    tracing::debug!(?peer, error = %e, "TLS handshake failed");
                    None
                }
                Err(_) => {
                    tracing::debug!(?peer, timeout = ?HANDSHAKE_TIMEOUT, "TLS handshake timed out");
                    None
                }
            }
        });
    }
}

impl Stream for TlsIncoming {
    type Item = Result<TlsStream<TcpStream>, std::io::Error>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        while !this.tcp_done {
            match Pin::new(&mut this.tcp).poll_next(cx) {
                Poll::Ready(Some(Ok(stream))) => this.start_handshake(stream),
                // Tonic skips the transient ones (reset before accept, …).
                Poll::Ready(Some(Err(e))) => return Poll::Ready(Some(Err(e))),
                Poll::Ready(None) => this.tcp_done = true,
                Poll::Pending => break,
            }
        }
        loop {
            match this.handshakes.poll_join_next(cx) {
                Poll::Ready(Some(Ok(Some(io)))) => return Poll::Ready(Some(Ok(io))),
                Poll::Ready(Some(Ok(None))) => {}
                Poll::Ready(Some(Err(e))) => {
                    tracing::warn!(error = %e, "TLS handshake task failed");
                }
                // No handshakes: the listener's waker is registered above.
                Poll::Ready(None) if !this.tcp_done => return Poll::Pending,
                Poll::Ready(None) => return Poll::Ready(None),
                Poll::Pending => return Poll::Pending,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;
    use tokio_rustls::rustls::pki_types::ServerName;
    use tokio_stream::StreamExt;

    use super::*;
    use crate::tls_reload::ServerTlsFiles;
    use crate::tls_reload::tests::{Ca, client};

    /// A stalled client, a plaintext one and one without a certificate
    /// neither end the loop nor hold up a good client behind them.
    #[tokio::test]
    async fn bad_clients_are_skipped() {
        let ca = Ca::new("ca");
        let server = ca.issue("localhost");
        let dir = tempfile::tempdir().unwrap();
        let files = ServerTlsFiles {
            cert: dir.path().join("tls.crt"),
            key: dir.path().join("tls.key"),
            client_ca: Some(dir.path().join("ca.crt")),
        };
        std::fs::write(&files.cert, &server.cert).unwrap();
        std::fs::write(&files.key, &server.key).unwrap();
        std::fs::write(files.client_ca.as_ref().unwrap(), ca.pem()).unwrap();
        let tls = ReloadingServerTls::load(files).unwrap();

        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let mut incoming = TlsIncoming::new(TcpIncoming::from(listener), tls);
        let server = tokio::spawn(async move {
            let mut io = incoming.next().await.unwrap().unwrap();
            let mut buf = [0u8; 5];
            io.read_exact(&mut buf).await.unwrap();
            io.write_all(&buf).await.unwrap();
            io.flush().await.unwrap();
            // Keep the connection until the client has read the echo.
            let _ = io.read(&mut buf).await;
            buf
        });

        let _stalled = tokio::net::TcpStream::connect(addr).await.unwrap();
        let mut plaintext = tokio::net::TcpStream::connect(addr).await.unwrap();
        plaintext
            .write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
            .await
            .unwrap();
        let anonymous = tokio::net::TcpStream::connect(addr).await.unwrap();
        let refused = client(&ca.pem(), None)
            .connect(ServerName::try_from("localhost").unwrap(), anonymous)
            .await;
        if let Ok(mut s) = refused {
            // TLS 1.3: the refusal comes after the client's handshake.
            let _ = s.write_all(b"x").await;
            let mut buf = [0u8; 1];
            let answer = s.read(&mut buf).await;
            assert!(
                !matches!(answer, Ok(n) if n > 0),
                "a client without a certificate got an answer"
            );
        }

        let good = ca.issue("replica");
        let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
        let mut s = client(&ca.pem(), Some(&good))
            .connect(ServerName::try_from("localhost").unwrap(), tcp)
            .await
            .unwrap();
        s.write_all(b"hello").await.unwrap();
        s.flush().await.unwrap();
        let mut echo = [0u8; 5];
        tokio::time::timeout(Duration::from_secs(5), s.read_exact(&mut echo))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(&echo, b"hello");
        drop(s);
        assert_eq!(&server.await.unwrap(), b"hello");
    }
}

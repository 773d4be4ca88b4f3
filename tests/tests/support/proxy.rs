//! A TCP proxy between the trainer and PostgreSQL that a test can cut.
//!
//! Modes: `Open` forwards; `Hold` accepts new connections but forwards them
//! only once the proxy is open again (a database that is briefly away: the
//! client's connect waits); `Refuse` accepts and closes at once (a database
//! that is down: every connect fails fast). Cutting also aborts every
//! connection already proxied, so in-flight queries fail.
//!
//! [`Proxy::trip_after`] arms a cut that fires by itself once a number of
//! bytes has flowed from the server: only the training scan reads pages that
//! big, so the cut lands in the middle of a run's read deterministically,
//! instead of racing a timer against the run.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use anyhow::{Context, Result};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::AbortHandle;

/// What the proxy does with connections.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Forward.
    Open,
    /// Accept, forward only after reopening.
    Hold,
    /// Accept and close at once.
    Refuse,
}

struct Shared {
    upstream: SocketAddr,
    mode: watch::Sender<Mode>,
    conns: Mutex<Vec<AbortHandle>>,
    /// Bytes forwarded server → client, in total.
    down_bytes: AtomicU64,
    /// Cut (to `Hold`) when `down_bytes` passes this; `u64::MAX` = disarmed.
    trip_at: AtomicU64,
    /// Flips to true when an armed cut fires.
    tripped: watch::Sender<bool>,
}

impl Shared {
    fn cut(&self, mode: Mode) {
        self.mode.send_replace(mode);
        let conns = std::mem::take(&mut *self.conns.lock().unwrap_or_else(|p| p.into_inner()));
        for c in conns {
            c.abort();
        }
    }
}

/// The proxy; stops accepting when dropped.
pub struct Proxy {
    pub port: u16,
    shared: Arc<Shared>,
    accept: tokio::task::JoinHandle<()>,
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.accept.abort();
        self.shared.cut(Mode::Refuse);
    }
}

/// `host:port` of a postgres:// URL (5432 when the port is omitted).
pub fn pg_host_port(url: &str) -> Result<String> {
    let rest = url.split_once("://").context("URL without scheme")?.1;
    let authority = rest.split(['/', '?']).next().unwrap_or(rest);
    let host = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    Ok(if host.contains(':') {
        host.to_string()
    } else {
        format!("{host}:5432")
    })
}

/// `url` with its host:port replaced by 127.0.0.1:`port`.
pub fn via_port(url: &str, port: u16) -> Result<String> {
    let hp = pg_host_port(url)?;
    let plain = hp.trim_end_matches(":5432");
    let replaced = if url.contains(&hp) {
        url.replacen(&hp, &format!("127.0.0.1:{port}"), 1)
    } else {
        url.replacen(plain, &format!("127.0.0.1:{port}"), 1)
    };
    Ok(replaced)
}

impl Proxy {
    /// A proxy on 127.0.0.1:0 to `upstream`, open.
    pub async fn start(upstream: &str) -> Result<Proxy> {
        let upstream: SocketAddr = tokio::net::lookup_host(upstream)
            .await?
            .next()
            .context("upstream address")?;
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let port = listener.local_addr()?.port();
        let shared = Arc::new(Shared {
            upstream,
            mode: watch::channel(Mode::Open).0,
            conns: Mutex::new(Vec::new()),
            down_bytes: AtomicU64::new(0),
            trip_at: AtomicU64::new(u64::MAX),
            tripped: watch::channel(false).0,
        });
        let s = Arc::clone(&shared);
        let accept = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let _ = client.set_nodelay(true);
                let mode = *s.mode.borrow();
                if mode == Mode::Refuse {
                    drop(client);
                    continue;
                }
                let s2 = Arc::clone(&s);
                let task = tokio::spawn(async move {
                    let mut rx = s2.mode.subscribe();
                    // Held connections wait for a decision; closing drops them.
                    let Ok(mode) = rx.wait_for(|m| *m != Mode::Hold).await.map(|m| *m) else {
                        return;
                    };
                    if mode == Mode::Open {
                        pipe(client, s2).await;
                    }
                });
                let mut conns = s.conns.lock().unwrap_or_else(|p| p.into_inner());
                conns.retain(|c| !c.is_finished());
                conns.push(task.abort_handle());
            }
        });
        Ok(Proxy {
            port,
            shared,
            accept,
        })
    }

    /// Cuts every proxied connection and switches to `mode`.
    pub fn cut(&self, mode: Mode) {
        self.shared.cut(mode);
    }

    /// Forwards again (held connections proceed).
    pub fn restore(&self) {
        self.shared.mode.send_replace(Mode::Open);
    }

    /// Arms a cut to `Hold` once `bytes` more have come from the server.
    pub fn trip_after(&self, bytes: u64) {
        let now = self.shared.down_bytes.load(Ordering::SeqCst);
        self.shared.trip_at.store(now + bytes, Ordering::SeqCst);
    }

    /// Resolves when an armed cut has fired.
    pub async fn tripped(&self) {
        let mut rx = self.shared.tripped.subscribe();
        let _ = rx.wait_for(|t| *t).await;
    }

    /// Bytes forwarded from the server so far.
    pub fn down_bytes(&self) -> u64 {
        self.shared.down_bytes.load(Ordering::SeqCst)
    }
}

async fn pipe(client: TcpStream, s: Arc<Shared>) {
    let Ok(server) = TcpStream::connect(s.upstream).await else {
        return;
    };
    let _ = server.set_nodelay(true);
    let (mut cr, mut cw) = client.into_split();
    let (mut sr, mut sw) = server.into_split();
    let up = async {
        let _ = tokio::io::copy(&mut cr, &mut sw).await;
        let _ = sw.shutdown().await;
    };
    let down = async {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let n = match sr.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            let total = s.down_bytes.fetch_add(n as u64, Ordering::SeqCst) + n as u64;
            if total >= s.trip_at.load(Ordering::SeqCst) {
                s.trip_at.store(u64::MAX, Ordering::SeqCst);
                s.tripped.send_replace(true);
                // Aborts this task too: the bytes just read are never delivered.
                s.cut(Mode::Hold);
                return;
            }
            if cw.write_all(&buf[..n]).await.is_err() {
                break;
            }
        }
        let _ = cw.shutdown().await;
    };
    tokio::join!(up, down);
}

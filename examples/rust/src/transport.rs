//! Addresses, TLS and channels: how `--inference` and `--trainer` become
//! connections, and deadlines on everything that waits for the network.
//!
//! `https://host:port` is TLS, verified against the system roots or
//! `--ca-file`; `http://host:port` and bare `host:port` are plaintext; a
//! `dns:///host:port` channel balances calls over every address the name
//! resolves to (plaintext, or TLS with `--tls`). Nothing falls back from TLS
//! to plaintext.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, bail};
use tokio::time::Instant;
use tonic::transport::channel::Change;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};

/// How often a `dns:///` channel looks the name up again, so replicas the
/// autoscaler adds get calls and removed ones stop getting them.
const RERESOLVE: Duration = Duration::from_secs(30);

/// When something must have answered, and which flag set that, so a
/// timeout's message says what to change.
#[derive(Clone, Copy, Debug)]
pub struct Deadline {
    at: Instant,
    limit: Duration,
    flag: &'static str,
}

impl Deadline {
    /// `limit` from now, set by `flag` (e.g. `--timeout`).
    pub fn after(limit: Duration, flag: &'static str) -> Deadline {
        Deadline {
            at: Instant::now() + limit,
            limit,
            flag,
        }
    }

    /// The instant itself.
    pub fn at(&self) -> Instant {
        self.at
    }

    /// Time left (zero once passed); also what the server is told
    /// (`grpc-timeout`), so it can stop working on an answer nobody awaits.
    pub fn remaining(&self) -> Duration {
        self.at.saturating_duration_since(Instant::now())
    }

    /// The error when it passed while waiting for `what`.
    pub fn expired(&self, what: &str) -> anyhow::Error {
        anyhow::anyhow!(
            "{what}: no answer within {} s ({} {})",
            seconds(self.limit),
            self.flag,
            seconds(self.limit)
        )
    }

    /// Runs `fut` until the deadline; past it, [`Deadline::expired`].
    pub async fn run<T>(
        &self,
        what: &str,
        fut: impl Future<Output = anyhow::Result<T>>,
    ) -> anyhow::Result<T> {
        tokio::time::timeout_at(self.at, fut)
            .await
            .unwrap_or_else(|_| Err(self.expired(what)))
    }
}

/// Seconds as a person writes them: `10`, `0.5`.
pub fn seconds(d: Duration) -> String {
    format!("{}", d.as_secs_f64())
}

/// A parsed `--inference` / `--trainer` address.
#[derive(Clone, Debug)]
pub struct Address {
    /// As the user wrote it, for messages.
    pub text: String,
    kind: Kind,
}

#[derive(Clone, Debug)]
enum Kind {
    /// One HTTP/2 connection to `uri` (`http://` or `https://`).
    Direct { uri: String, tls: bool },
    /// A balanced channel over every address `authority` resolves to; `host`
    /// is the name a TLS certificate must carry.
    Dns {
        authority: String,
        host: String,
        tls: bool,
    },
}

impl Address {
    /// Parses `https://host:port`, `http://host:port`, `host:port` or
    /// `dns:///host:port`. `force_tls` (`--tls`) makes the forms without a
    /// scheme TLS and refuses `http://`, which says plaintext outright.
    pub fn parse(text: &str, force_tls: bool) -> anyhow::Result<Address> {
        let trimmed = text.trim_end_matches('/');
        let kind = if let Some(rest) = strip_scheme(trimmed, "https://") {
            Kind::Direct {
                uri: format!("https://{rest}"),
                tls: true,
            }
        } else if let Some(rest) = strip_scheme(trimmed, "http://") {
            if force_tls {
                bail!(
                    "{text} is plaintext (http://), but --tls asks for TLS: write it as https://{rest}"
                );
            }
            Kind::Direct {
                uri: format!("http://{rest}"),
                tls: false,
            }
        } else if let Some(rest) = strip_scheme(trimmed, "dns:") {
            let Some(authority) = rest.strip_prefix("///") else {
                bail!(
                    "{text}: only dns:///HOST:PORT is supported (no DNS server authority in the name)"
                );
            };
            let host =
                host_of(authority).with_context(|| format!("{text}: expected dns:///HOST:PORT"))?;
            Kind::Dns {
                authority: authority.to_string(),
                host,
                tls: force_tls,
            }
        } else if trimmed.contains("://") {
            bail!("{text}: unsupported scheme; use https://, http://, dns:/// or HOST:PORT");
        } else {
            let scheme = if force_tls { "https" } else { "http" };
            Kind::Direct {
                uri: format!("{scheme}://{trimmed}"),
                tls: force_tls,
            }
        };
        Ok(Address {
            text: text.to_string(),
            kind,
        })
    }

    /// Whether calls to it go over TLS.
    pub fn uses_tls(&self) -> bool {
        match self.kind {
            Kind::Direct { tls, .. } | Kind::Dns { tls, .. } => tls,
        }
    }

    /// A channel to it. A direct address is connected now (TCP, TLS and the
    /// HTTP/2 handshake), within `deadline`, so a wrong CA or a dead port
    /// fails here with a clear message; a `dns:///` channel connects to
    /// each resolved address as calls need it.
    pub async fn connect(&self, tls: &TlsOptions, deadline: Deadline) -> anyhow::Result<Channel> {
        match &self.kind {
            Kind::Direct { uri, tls: use_tls } => {
                let tls = use_tls.then_some(tls);
                let endpoint = endpoint(&self.text, uri, tls, None, deadline.remaining())?;
                let what = format!("connecting to {}", self.text);
                deadline
                    .run(&what, async {
                        endpoint
                            .connect()
                            .await
                            .map_err(|e| connect_error(&self.text, &e, tls))
                    })
                    .await
            }
            Kind::Dns {
                authority,
                host,
                tls: use_tls,
            } => {
                let what = format!("resolving {authority}");
                let known = deadline.run(&what, resolve(authority)).await?;
                if known.is_empty() {
                    bail!("{authority} resolves to no address");
                }
                let (text, host) = (self.text.clone(), host.clone());
                let tls = use_tls.then(|| tls.clone());
                // These endpoints outlive this call, so they keep its limit,
                // not what is left of its deadline.
                let limit = deadline.limit;
                let make = move |addr: SocketAddr| {
                    let scheme = if tls.is_some() { "https" } else { "http" };
                    let uri = format!("{scheme}://{addr}");
                    endpoint(&text, &uri, tls.as_ref(), Some(&host), limit)
                };
                balanced(authority.clone(), known, make).await
            }
        }
    }
}

/// An endpoint for `uri`; with `tls`, verified as [`TlsOptions`] says, the
/// certificate checked for `domain` (default: the URI's host).
fn endpoint(
    text: &str,
    uri: &str,
    tls: Option<&TlsOptions>,
    domain: Option<&str>,
    connect_timeout: Duration,
) -> anyhow::Result<Endpoint> {
    let endpoint = Endpoint::from_shared(uri.to_string())
        .with_context(|| format!("{text} is not a valid address"))?
        .connect_timeout(connect_timeout)
        .tcp_nodelay(true);
    let Some(tls) = tls else {
        return Ok(endpoint);
    };
    endpoint
        .tls_config(tls.client_config(domain, connect_timeout))
        .map_err(|e| {
            let detail = chain(&e);
            if detail.contains("native certs") {
                anyhow::anyhow!(
                    "TLS with {text}: no system root certificates found (install ca-certificates, set $SSL_CERT_FILE, or pass --ca-file): {detail}"
                )
            } else {
                anyhow::anyhow!("TLS settings for {text} ({}): {detail}", tls.roots())
            }
        })
}

fn strip_scheme<'a>(text: &'a str, scheme: &str) -> Option<&'a str> {
    let head = text.get(..scheme.len())?;
    head.eq_ignore_ascii_case(scheme)
        .then(|| &text[scheme.len()..])
}

/// The host of `HOST:PORT` or `[V6]:PORT`.
fn host_of(authority: &str) -> Option<String> {
    let (host, port) = authority.rsplit_once(':')?;
    port.parse::<u16>().ok()?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    (!host.is_empty()).then(|| host.to_string())
}

/// One channel balancing each call over every address `authority` resolves
/// to (tonic's balancer: the less loaded of two random endpoints), kept in
/// step with DNS every [`RERESOLVE`].
async fn balanced(
    authority: String,
    mut known: HashSet<SocketAddr>,
    endpoint: impl Fn(SocketAddr) -> anyhow::Result<Endpoint> + Send + 'static,
) -> anyhow::Result<Channel> {
    let (channel, tx) = Channel::balance_channel::<SocketAddr>(known.len().max(16));
    for addr in &known {
        tx.send(Change::Insert(*addr, endpoint(*addr)?))
            .await
            .context("the balanced channel closed while starting")?;
    }
    tokio::spawn(async move {
        while !tx.is_closed() {
            tokio::time::sleep(RERESOLVE).await;
            // A failed lookup keeps the endpoints we have.
            let Ok(now) = resolve(&authority).await else {
                continue;
            };
            for addr in now.difference(&known) {
                if let Ok(e) = endpoint(*addr) {
                    let _ = tx.send(Change::Insert(*addr, e)).await;
                }
            }
            for addr in known.difference(&now) {
                let _ = tx.send(Change::Remove(*addr)).await;
            }
            known = now;
        }
    });
    Ok(channel)
}

async fn resolve(authority: &str) -> anyhow::Result<HashSet<SocketAddr>> {
    Ok(tokio::net::lookup_host(authority)
        .await
        .with_context(|| format!("resolving {authority}"))?
        .collect())
}

/// TLS settings shared by both addresses: whom to trust and, for mutual TLS,
/// who we are. The files are read when the flags are parsed, so a wrong path
/// fails before any call.
#[derive(Clone, Debug, Default)]
pub struct TlsOptions {
    ca: Option<(PathBuf, Certificate)>,
    identity: Option<Identity>,
}

impl TlsOptions {
    /// From `--ca-file`, `--cert-file` and `--key-file` (the last two together).
    pub fn load(
        ca_file: Option<&Path>,
        cert_file: Option<&Path>,
        key_file: Option<&Path>,
    ) -> anyhow::Result<TlsOptions> {
        let read = |flag: &str, path: &Path| {
            std::fs::read(path).with_context(|| format!("reading {flag} {}", path.display()))
        };
        let ca = match ca_file {
            Some(p) => {
                let pem = read("--ca-file", p)?;
                // rustls skips what is not a PEM certificate, which would
                // show up later as an untrusted server.
                if !String::from_utf8_lossy(&pem).contains("-----BEGIN CERTIFICATE-----") {
                    bail!("--ca-file {} holds no PEM certificate", p.display());
                }
                Some((p.to_path_buf(), Certificate::from_pem(pem)))
            }
            None => None,
        };
        let identity = match (cert_file, key_file) {
            (Some(c), Some(k)) => Some(Identity::from_pem(
                read("--cert-file", c)?,
                read("--key-file", k)?,
            )),
            (None, None) => None,
            _ => bail!("a client certificate needs both --cert-file and --key-file"),
        };
        Ok(TlsOptions { ca, identity })
    }

    /// Whether any TLS material was given (then some address had better use TLS).
    pub fn given(&self) -> bool {
        self.ca.is_some() || self.identity.is_some()
    }

    /// Whether a client certificate was given (mutual TLS).
    pub fn has_identity(&self) -> bool {
        self.identity.is_some()
    }

    /// rustls settings: `--ca-file` replaces the system roots (a private CA
    /// should not widen whom we trust to every public CA, nor the reverse).
    fn client_config(&self, domain: Option<&str>, handshake: Duration) -> ClientTlsConfig {
        let mut config = ClientTlsConfig::new().timeout(handshake);
        config = match &self.ca {
            Some((_, ca)) => config.ca_certificate(ca.clone()),
            None => config.with_native_roots(),
        };
        if let Some(identity) = &self.identity {
            config = config.identity(identity.clone());
        }
        if let Some(domain) = domain {
            config = config.domain_name(domain);
        }
        config
    }

    /// What a server certificate is checked against, for messages.
    fn roots(&self) -> String {
        match &self.ca {
            Some((path, _)) => format!("the CA in --ca-file {}", path.display()),
            None => "the system roots".into(),
        }
    }
}

/// Every message in an error's source chain, joined as anyhow's `{:#}` does.
pub fn chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut parts = vec![e.to_string()];
    let mut source = e.source();
    while let Some(s) = source {
        let text = s.to_string();
        // hyper and tonic repeat their source's text in their own.
        if !parts.last().is_some_and(|p| p.contains(&text)) {
            parts.push(text);
        }
        source = s.source();
    }
    parts.join(": ")
}

/// A failed connection, said plainly: for TLS, what the certificate was
/// checked against and what to change.
fn connect_error(
    text: &str,
    e: &tonic::transport::Error,
    tls: Option<&TlsOptions>,
) -> anyhow::Error {
    let detail = chain(e);
    let lower = detail.to_ascii_lowercase();
    match tls {
        Some(tls) if lower.contains("invalid peer certificate") => {
            let hint = if lower.contains("notvalidforname") {
                "it does not name the host in the address"
            } else if tls.ca.is_some() {
                "is that the CA that signed the server's certificate?"
            } else {
                "a server with a private CA needs --ca-file"
            };
            anyhow::anyhow!(
                "TLS with {text} failed: the server's certificate is not trusted (checked against {}; {hint}): {detail}",
                tls.roots()
            )
        }
        Some(tls) if !tls.has_identity() && closed_by_peer(&lower) => anyhow::anyhow!(
            "connecting to {text}: {detail} (if the server asks for a client certificate, give --cert-file and --key-file)"
        ),
        Some(_) if lower.contains("handshake") || lower.contains("tls") => {
            anyhow::anyhow!("TLS with {text} failed (is the server serving TLS?): {detail}")
        }
        None if closed_by_peer(&lower) => anyhow::anyhow!(
            "connecting to {text}: {detail} (if the server serves TLS, write the address as https://)"
        ),
        _ => anyhow::anyhow!("connecting to {text}: {detail}"),
    }
}

/// Whether an error (lower-cased) says the server ended a connection it had
/// accepted: what a refused client certificate, or TLS bytes read as
/// HTTP/2, look like from here.
fn closed_by_peer(lower: &str) -> bool {
    [
        "connection closed",
        "broken pipe",
        "connection reset",
        "frame with invalid size",
        "alert",
    ]
    .iter()
    .any(|s| lower.contains(s))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str, tls: bool) -> Address {
        Address::parse(text, tls).expect("valid address")
    }

    #[test]
    fn schemes_decide_tls() {
        assert!(parse("https://trainer.example:50052", false).uses_tls());
        assert!(parse("HTTPS://trainer.example:50052/", false).uses_tls());
        assert!(!parse("http://127.0.0.1:50051", false).uses_tls());
        assert!(!parse("127.0.0.1:50051", false).uses_tls());
        assert!(parse("127.0.0.1:50051", true).uses_tls());
        assert!(!parse("dns:///inference.ns.svc.cluster.local:50051", false).uses_tls());
        assert!(parse("dns:///inference.ns.svc.cluster.local:50051", true).uses_tls());
    }

    #[test]
    fn contradictions_and_unknown_forms_are_refused() {
        let e = Address::parse("http://h:1", true).unwrap_err().to_string();
        assert!(e.contains("write it as https://h:1"), "{e}");
        assert!(Address::parse("dns://8.8.8.8/h:1", false).is_err());
        assert!(Address::parse("dns:///h", false).is_err());
        assert!(Address::parse("grpc+unix:///tmp/s", false).is_err());
    }

    #[test]
    fn dns_names_keep_their_host_for_the_certificate() {
        assert_eq!(
            host_of("inference.ns:50051").as_deref(),
            Some("inference.ns")
        );
        assert_eq!(host_of("[::1]:50051").as_deref(), Some("::1"));
        assert_eq!(host_of("noport"), None);
    }

    #[test]
    fn half_a_client_identity_is_refused() {
        let e = TlsOptions::load(None, Some(Path::new("c.pem")), None).unwrap_err();
        assert!(
            e.to_string().contains("both --cert-file and --key-file"),
            "{e}"
        );
    }
}

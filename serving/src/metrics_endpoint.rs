//! The tiny HTTP endpoint beside the gRPC port: `/metrics` for Prometheus
//! and `/healthz` for liveness probes.

use std::convert::Infallible;
use std::future::Future;
use std::time::Duration;

use http::{Method, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use prometheus::{Encoder, Registry, TextEncoder};
use tokio::net::TcpListener;

/// Serves `GET /metrics` (Prometheus text format of `registry`) and
/// `GET /healthz` (200, "ok": the process is up) over HTTP/1.1 on `listener`
/// until `shutdown` resolves. Anything else is 404.
///
/// Kept separate from the gRPC port so scrapers and probes never compete with
/// traffic for the gRPC concurrency limits. Open connections get one second to
/// finish after shutdown.
pub async fn serve_metrics(
    listener: TcpListener,
    registry: Registry,
    shutdown: impl Future<Output = ()>,
) -> std::io::Result<()> {
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => {
                let (stream, _) = match accepted {
                    Ok(s) => s,
                    // Accept errors (e.g. EMFILE) are transient; back off briefly.
                    Err(e) => {
                        tracing::warn!(error = %e, "metrics accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let registry = registry.clone();
                let conn = hyper::server::conn::http1::Builder::new().serve_connection(
                    TokioIo::new(stream),
                    service_fn(move |req| {
                        let registry = registry.clone();
                        async move { Ok::<_, Infallible>(metrics_response(&req, &registry)) }
                    }),
                );
                let conn = graceful.watch(conn);
                tokio::spawn(async move {
                    if let Err(e) = conn.await {
                        tracing::debug!(error = %e, "metrics connection ended with an error");
                    }
                });
            }
        }
    }
    let _ = tokio::time::timeout(Duration::from_secs(1), graceful.shutdown()).await;
    Ok(())
}

fn metrics_response(req: &Request<Incoming>, registry: &Registry) -> Response<Full<Bytes>> {
    let reply = |status: StatusCode, content_type: &str, body: Vec<u8>| {
        let mut resp = Response::new(Full::new(Bytes::from(body)));
        *resp.status_mut() = status;
        if let Ok(v) = http::HeaderValue::from_str(content_type) {
            resp.headers_mut().insert(http::header::CONTENT_TYPE, v);
        }
        resp
    };
    if req.method() != Method::GET {
        return reply(
            StatusCode::METHOD_NOT_ALLOWED,
            "text/plain",
            b"GET only\n".to_vec(),
        );
    }
    match req.uri().path() {
        "/metrics" => {
            let encoder = TextEncoder::new();
            let mut buf = Vec::new();
            match encoder.encode(&registry.gather(), &mut buf) {
                Ok(()) => reply(StatusCode::OK, encoder.format_type(), buf),
                Err(e) => reply(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "text/plain",
                    format!("encoding metrics: {e}\n").into_bytes(),
                ),
            }
        }
        "/healthz" => reply(StatusCode::OK, "text/plain", b"ok\n".to_vec()),
        _ => reply(StatusCode::NOT_FOUND, "text/plain", b"not found\n".to_vec()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    async fn get(addr: std::net::SocketAddr, path: &str) -> String {
        let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
        let req = format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
        s.write_all(req.as_bytes()).await.unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).await.unwrap();
        out
    }

    #[tokio::test]
    async fn metrics_endpoint_serves_registry_healthz_and_404() {
        let registry = Registry::new();
        let c = prometheus::IntCounter::new("demo_total", "a demo").unwrap();
        registry.register(Box::new(c.clone())).unwrap();
        c.inc();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(serve_metrics(listener, registry, async {
            let _ = rx.await;
        }));
        let m = get(addr, "/metrics").await;
        assert!(m.starts_with("HTTP/1.1 200"), "{m}");
        assert!(m.contains("demo_total 1"), "{m}");
        assert!(get(addr, "/healthz").await.starts_with("HTTP/1.1 200"));
        assert!(get(addr, "/nope").await.starts_with("HTTP/1.1 404"));
        tx.send(()).unwrap();
        tokio::time::timeout(Duration::from_secs(3), server)
            .await
            .unwrap()
            .unwrap()
            .unwrap();
    }
}

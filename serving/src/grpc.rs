//! The gRPC server both services run: their own services beside
//! `grpc.health.v1` and server reflection (v1 and v1alpha, so `grpcurl` needs
//! no proto files), behind the per-RPC metrics layer and, where a service has
//! guarded RPCs, the role layer; on a listener the caller bound, with
//! TLS when configured.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use http::{HeaderMap, HeaderValue, Request, Response};
use http_body_util::BodyExt;
use hyper::body::Frame;
use tokio::net::TcpListener;
use tonic::Status;
use tonic::body::Body;
use tonic::codegen::Bytes;
use tonic::service::Routes;
use tonic::transport::server::TcpIncoming;
use tonic_health::pb::health_server::HealthServer;
use tonic_health::server::{HealthReporter, HealthService};
use tower::{Layer, Service};

use crate::Error;
use crate::auth::RoleAuthLayer;
use crate::grpc_metrics::GrpcMetricsLayer;
use crate::request_bytes::{BudgetError, RequestBytes, RequestBytesPermit, SMALL_MESSAGE_BYTES};
use crate::tls_incoming::TlsIncoming;
use crate::tls_reload::ReloadingServerTls;

/// What differs between the services' servers; the rest is the same for both.
#[derive(Clone, Debug, Default)]
pub struct GrpcOptions {
    /// Serve over TLS, each new connection with the files as they are then
    /// (mutual when they include a client CA); plaintext when `None`.
    pub tls: Option<ReloadingServerTls>,
    /// Server-side deadline of every call.
    pub request_timeout: Option<Duration>,
    /// Calls in flight per connection; with `load_shed` the excess is refused
    /// (`UNAVAILABLE`) rather than queued.
    pub concurrency_limit_per_connection: Option<usize>,
    /// Refuse calls over the concurrency limit instead of queueing them.
    pub load_shed: bool,
    /// TCP keepalive on accepted connections.
    pub tcp_keepalive: Option<Duration>,
    /// Guards the service's RPCs by role; `None` for a service open to its
    /// network.
    pub auth: Option<RoleAuthLayer>,
    /// One unary method answered straight from its request bytes, before
    /// the router (see [`RawUnary`]).
    pub raw_unary: Option<RawUnary>,
    /// Close each client connection gracefully once it is this old; `None`
    /// keeps connections for as long as the client does.
    pub max_connection_age: Option<ConnectionAge>,
}

/// How long a client connection may live. gRPC clients keep one HTTP/2
/// connection per server address for as long as it works, so without an age
/// limit a replica the autoscaler adds gets nothing from clients that
/// connected before it existed. When a connection reaches `max`, the server
/// sends GOAWAY: the client opens a new connection (re-resolving the name,
/// or being balanced afresh by a proxy) for its next calls, while calls
/// already in flight finish on the old one for up to `grace`; any still
/// running then are cut.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConnectionAge {
    /// Age at which the server sends GOAWAY.
    pub max: Duration,
    /// How long calls in flight may continue after the GOAWAY.
    pub grace: Duration,
}

/// The connection-age flags, shared so both services spell them the same way
/// (`#[command(flatten)]` into a service's flags).
#[derive(clap::Args, Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConnectionAgeArgs {
    /// Close each client connection with a graceful GOAWAY after this many
    /// seconds, so long-lived clients reconnect and reach replicas added
    /// since (the HPA's); 0 keeps connections open for as long as clients do.
    #[arg(
        long = "max-connection-age-seconds",
        env = "TASKCAST_MAX_CONNECTION_AGE_SECONDS",
        default_value_t = 300
    )]
    pub max_connection_age_seconds: u64,

    /// After the GOAWAY, how long calls in flight on the old connection may
    /// take before it is closed anyway.
    #[arg(
        long = "max-connection-age-grace-seconds",
        env = "TASKCAST_MAX_CONNECTION_AGE_GRACE_SECONDS",
        default_value_t = 30
    )]
    pub max_connection_age_grace_seconds: u64,
}

impl ConnectionAgeArgs {
    /// The age limit these flags ask for; `None` when it is off (0).
    pub fn connection_age(&self) -> Option<ConnectionAge> {
        (self.max_connection_age_seconds > 0).then(|| ConnectionAge {
            max: Duration::from_secs(self.max_connection_age_seconds),
            grace: Duration::from_secs(self.max_connection_age_grace_seconds),
        })
    }
}

/// A health service and the reporter that sets its statuses. The overall
/// status (`""`) starts SERVING; a service that is not ready at start says so.
pub fn health() -> (HealthReporter, HealthServer<HealthService>) {
    let reporter = HealthReporter::new();
    let service = HealthServer::new(HealthService::from_health_reporter(reporter.clone()))
        .max_decoding_message_size(SMALL_MESSAGE_BYTES);
    (reporter, service)
}

/// Builds the server for `routes` (the service's own gRPC services) on
/// `listener`; the returned future serves until `shutdown` resolves, then
/// stops accepting and waits for the calls in flight (bound it with
/// [`drain`]). Fails before serving anything when reflection or TLS cannot be
/// set up.
pub fn serve(
    listener: TcpListener,
    options: GrpcOptions,
    metrics: GrpcMetricsLayer,
    health: HealthServer<HealthService>,
    routes: Routes,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<impl Future<Output = Result<(), Error>> + Send + 'static, Error> {
    let reflection = || {
        tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(taskcast_proto::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
    };
    // Their requests are a few bytes: a small cap keeps what they hold small.
    let reflection_v1 = reflection()
        .build_v1()?
        .max_decoding_message_size(SMALL_MESSAGE_BYTES);
    let reflection_v1alpha = reflection()
        .build_v1alpha()?
        .max_decoding_message_size(SMALL_MESSAGE_BYTES);

    // Builder::tcp_nodelay only applies to listeners tonic binds itself;
    // ours comes from the caller, so set it here. Without it a response
    // spanning several segments waits out Nagle + delayed ACK (~40 ms).
    let incoming = TcpIncoming::from(listener)
        .with_nodelay(Some(true))
        .with_keepalive(options.tcp_keepalive);
    let mut builder = tonic::transport::Server::builder();
    if let Some(timeout) = options.request_timeout {
        builder = builder.timeout(timeout);
    }
    if let Some(limit) = options.concurrency_limit_per_connection {
        builder = builder.concurrency_limit_per_connection(limit);
    }
    if let Some(age) = options.max_connection_age {
        // tonic starts hyper's graceful shutdown of the connection (GOAWAY,
        // in-flight streams finish) at `max`, and closes it `grace` later.
        builder = builder
            .max_connection_age(age.max)
            .max_connection_age_grace(age.grace);
    }
    let router = builder
        .load_shed(options.load_shed)
        .http2_keepalive_interval(Some(Duration::from_secs(30)))
        .http2_keepalive_timeout(Some(Duration::from_secs(10)))
        // Outermost, so calls the role layer refuses are counted too.
        .layer(metrics)
        .layer(tower::util::option_layer(options.auth))
        // Inside the deadline, load shedding, concurrency limit, metrics
        // and roles like every method; only the routing and the codec are
        // skipped.
        .layer(tower::util::option_layer(options.raw_unary))
        .add_routes(routes)
        .add_service(health)
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha);
    // Not the builder's tls_config: its settings are fixed at startup, and
    // certificates must rotate under a running server.
    let server: Pin<Box<dyn Future<Output = Result<(), tonic::transport::Error>> + Send>> =
        match options.tls {
            Some(tls) => Box::pin(
                router.serve_with_incoming_shutdown(TlsIncoming::new(incoming, tls), shutdown),
            ),
            None => Box::pin(router.serve_with_incoming_shutdown(incoming, shutdown)),
        };
    Ok(async move { server.await.map_err(Error::from) })
}

/// Waits for a server told to stop to finish its calls in flight, for at most
/// `grace`; calls still running then are dropped.
pub async fn drain<F>(server: F, grace: Duration) -> Result<(), Error>
where
    F: Future<Output = Result<(), Error>>,
{
    match tokio::time::timeout(grace, server).await {
        Ok(result) => result,
        Err(_) => {
            tracing::warn!(
                grace_seconds = grace.as_secs_f64(),
                "grace period over; dropping the calls still running"
            );
            Ok(())
        }
    }
}

/// A unary method's handler from request bytes to response bytes: it gets
/// the request message and a buffer that already holds the 5-byte gRPC
/// frame header, and its future gives the buffer back with the encoded
/// response message appended. A future, so a handler can wait for work it
/// shares with other calls (inference-svc batches model runs).
pub type RawHandler = Arc<dyn Fn(Bytes, Vec<u8>) -> RawReply + Send + Sync>;

/// A [`RawHandler`]'s answer.
pub type RawReply = Pin<Box<dyn Future<Output = Result<Vec<u8>, Status>> + Send>>;

/// Unary gRPC methods served as bytes in, bytes out, in front of the
/// router: for the hot methods of a service, this skips what tonic's
/// generic path costs per call (routing, the codec's receive and send
/// buffers, message and metadata wrappers, the trailers built through a
/// `Status`). Every layer of [`serve`] still applies to it: deadline, load
/// shedding, concurrency limit, metrics, roles. The framing follows the gRPC
/// HTTP/2 protocol as tonic serves it: no compression (a compressed request
/// is refused as tonic refuses it), the message-size limit, `grpc-status`
/// in the trailers, or alone in the headers for an error. With a
/// [`RequestBytes`] budget, a message's declared size is taken from it
/// before the message is read and given back once it is answered.
#[derive(Clone)]
pub struct RawUnary {
    /// Shared, so the per-call clone is a reference count.
    routes: Arc<[(&'static str, RawHandler)]>,
    max_request_bytes: usize,
    budget: Option<RequestBytes>,
    in_flight: Option<Arc<AtomicUsize>>,
}

impl std::fmt::Debug for RawUnary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let paths: Vec<&str> = self.routes.iter().map(|(p, _)| *p).collect();
        f.debug_struct("RawUnary")
            .field("paths", &paths)
            .field("max_request_bytes", &self.max_request_bytes)
            .field("budget", &self.budget)
            .finish_non_exhaustive()
    }
}

impl RawUnary {
    /// Serves `path` (`/package.Service/Method`) with `handler`, refusing
    /// request messages over `max_request_bytes`.
    pub fn new(path: &'static str, max_request_bytes: usize, handler: RawHandler) -> Self {
        RawUnary {
            routes: Arc::from([(path, handler)]),
            max_request_bytes,
            budget: None,
            in_flight: None,
        }
    }

    /// Counts in `counter` the calls to its routes that the server has
    /// accepted and not yet answered. The count rises when HTTP/2 accepts
    /// the stream, before the call's task first runs, so a handler can tell
    /// whether other calls are on their way (inference-svc's batcher
    /// gathers only then).
    pub fn with_in_flight(mut self, counter: Arc<AtomicUsize>) -> Self {
        self.in_flight = Some(counter);
        self
    }

    /// Serves `path` with `handler` too, under the same limits.
    pub fn route(mut self, path: &'static str, handler: RawHandler) -> Self {
        let mut routes = self.routes.to_vec();
        routes.push((path, handler));
        self.routes = Arc::from(routes);
        self
    }

    /// Reads every message through `budget` (see [`RequestBytes`]).
    pub fn with_budget(mut self, budget: RequestBytes) -> Self {
        self.budget = Some(budget);
        self
    }

    /// Reads the request message, runs the handler, frames the answer.
    async fn answer(self, handler: RawHandler, req: Request<Body>) -> Response<Body> {
        let reply = match read_message(req, self.max_request_bytes, self.budget.as_ref()).await {
            Ok((message, permit)) => {
                let mut out = Vec::with_capacity(256);
                out.extend_from_slice(&[0; 5]);
                let reply = handler(message, out).await.and_then(frame);
                // The request's bytes go back to the budget only now.
                drop(permit);
                reply
            }
            Err(status) => Err(status),
        };
        match reply {
            Ok(data) => {
                let mut response = Response::new(Body::new(OneMessage {
                    data: Some(data),
                    trailers: true,
                }));
                response.headers_mut().insert(
                    http::header::CONTENT_TYPE,
                    tonic::metadata::GRPC_CONTENT_TYPE,
                );
                response
            }
            Err(status) => status.into_http(),
        }
    }
}

/// Writes the gRPC frame header (uncompressed, length) into the first five bytes.
fn frame(mut out: Vec<u8>) -> Result<Bytes, Status> {
    let len = u32::try_from(out.len() - 5)
        .map_err(|_| Status::resource_exhausted("response message over 4 GiB"))?;
    out[1..5].copy_from_slice(&len.to_be_bytes());
    Ok(Bytes::from(out))
}

/// The request's one message, as tonic's unary path reads it: the body to
/// its end, the first message in it, with tonic's statuses for what it
/// refuses. With a budget, the message's size is taken from it as soon as
/// its header is in, before the rest is read (or buffered).
async fn read_message(
    req: Request<Body>,
    limit: usize,
    budget: Option<&RequestBytes>,
) -> Result<(Bytes, Option<RequestBytesPermit>), Status> {
    if let Some(encoding) = req.headers().get("grpc-encoding")
        && encoding != "identity"
    {
        return Err(Status::unimplemented(format!(
            "Content is compressed with `{}` which isn't supported",
            encoding.to_str().unwrap_or("?")
        )));
    }
    let mut body = req.into_body();
    // Usually the whole message is one DATA frame, kept without a copy.
    let mut first: Option<Bytes> = None;
    let mut joined: Vec<u8> = Vec::new();
    let mut wanted: Option<usize> = None;
    let mut permit = None;
    while let Some(frame) = body.frame().await {
        let Ok(data) = frame?.into_data() else {
            continue; // trailers: nothing a unary call needs
        };
        if joined.is_empty() && first.is_none() {
            first = Some(data);
        } else {
            if let Some(f) = first.take() {
                // One allocation of the message's size, not a doubling run.
                joined.reserve_exact(wanted.unwrap_or(0).max(f.len() + data.len()));
                joined.extend_from_slice(&f);
            }
            joined.extend_from_slice(&data);
        }
        let have = first.as_ref().map_or(&joined[..], |f| &f[..]);
        if wanted.is_none() && have.len() >= 5 {
            if have[0] != 0 {
                return Err(Status::internal(
                    "protocol error: received message with compressed-flag but no grpc-encoding was specified",
                ));
            }
            let len = u32::from_be_bytes([have[1], have[2], have[3], have[4]]) as usize;
            if len > limit {
                return Err(Status::out_of_range(format!(
                    "Error, decoded message length too large: found {len} bytes, the limit is: {limit} bytes"
                )));
            }
            wanted = Some(5 + len);
            if let Some(budget) = budget {
                permit = Some(budget.acquire(5 + len).await.map_err(budget_status)?);
            }
        }
        if let Some(w) = wanted
            && have.len() >= w
        {
            // The message is complete; read on to the end of the stream, as
            // tonic does for a unary call, without keeping what follows.
            while let Some(frame) = body.frame().await {
                frame?;
            }
            let message = match first {
                Some(f) => f.slice(5..w),
                None => Bytes::from(joined).slice(5..w),
            };
            return Ok((message, permit));
        }
    }
    if first.is_none() && joined.is_empty() {
        Err(Status::internal("Missing request message."))
    } else {
        Err(Status::internal("Unexpected EOF decoding stream."))
    }
}

/// A message the budget has no room for is shed like a call over the
/// concurrency limit; a closed budget means the server is stopping.
fn budget_status(e: BudgetError) -> Status {
    match e {
        BudgetError::Full { .. } => Status::resource_exhausted(e.to_string()),
        BudgetError::Closed => Status::unavailable(e.to_string()),
    }
}

/// One call in [`RawUnary::with_in_flight`]'s count, until it is answered
/// or dropped (a cancelled call).
struct InFlight(Arc<AtomicUsize>);

impl InFlight {
    fn enter(counter: Arc<AtomicUsize>) -> Self {
        counter.fetch_add(1, Ordering::Relaxed);
        InFlight(counter)
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A body of one DATA frame and `grpc-status: 0` trailers.
struct OneMessage {
    data: Option<Bytes>,
    trailers: bool,
}

impl hyper::body::Body for OneMessage {
    type Data = Bytes;
    type Error = Status;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Status>>> {
        if let Some(data) = self.data.take() {
            return Poll::Ready(Some(Ok(Frame::data(data))));
        }
        if std::mem::take(&mut self.trailers) {
            let mut trailers = HeaderMap::with_capacity(1);
            trailers.insert(Status::GRPC_STATUS, HeaderValue::from_static("0"));
            return Poll::Ready(Some(Ok(Frame::trailers(trailers))));
        }
        Poll::Ready(None)
    }

    fn is_end_stream(&self) -> bool {
        self.data.is_none() && !self.trailers
    }
}

impl<S> Layer<S> for RawUnary {
    type Service = RawUnaryService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        RawUnaryService {
            inner,
            raw: self.clone(),
        }
    }
}

/// [`RawUnary`] in front of the rest of the server.
#[derive(Clone, Debug)]
pub struct RawUnaryService<S> {
    inner: S,
    raw: RawUnary,
}

type RawFuture<E> = Pin<Box<dyn Future<Output = Result<Response<Body>, E>> + Send>>;

impl<S> Service<Request<Body>> for RawUnaryService<S>
where
    S: Service<Request<Body>, Response = Response<Body>>,
    S::Future: Send + 'static,
    S::Error: 'static,
{
    type Response = Response<Body>;
    type Error = S::Error;
    type Future = RawFuture<S::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<Body>) -> Self::Future {
        let path = req.uri().path();
        if let Some((_, handler)) = self.raw.routes.iter().find(|(p, _)| *p == path) {
            let handler = Arc::clone(handler);
            let raw = self.raw.clone();
            let counted = raw.in_flight.clone().map(InFlight::enter);
            Box::pin(async move {
                let response = raw.answer(handler, req).await;
                drop(counted);
                Ok(response)
            })
        } else {
            // Every other method (a boxed future, as the router's own are).
            Box::pin(self.inner.call(req))
        }
    }
}

#[cfg(test)]
mod tests {
    use std::convert::Infallible;

    use super::*;

    fn request(path: &str) -> Request<Body> {
        let mut req = Request::new(Body::empty());
        *req.uri_mut() = path.parse().expect("a path");
        req
    }

    /// The in-flight count rises when the call is accepted, before its
    /// future first runs, and falls when it is answered or dropped
    /// (cancelled); calls to other methods are not counted.
    #[tokio::test]
    async fn in_flight_counts_accepted_calls_until_answered_or_dropped() {
        let counter = Arc::new(AtomicUsize::new(0));
        let handler: RawHandler = Arc::new(|_, out| Box::pin(async move { Ok(out) }));
        let raw = RawUnary::new("/p.S/M", 1024, handler).with_in_flight(Arc::clone(&counter));
        let inner = tower::service_fn(|_: Request<Body>| async {
            Ok::<_, Infallible>(Response::new(Body::empty()))
        });
        let mut svc = raw.layer(inner);
        let count = || counter.load(Ordering::Relaxed);

        let first = svc.call(request("/p.S/M"));
        let second = svc.call(request("/p.S/M"));
        assert_eq!(count(), 2, "counted at accept, before any poll");
        drop(first);
        assert_eq!(count(), 1, "a dropped call leaves the count");
        // An empty body is refused ("Missing request message"): answered all the same.
        let answer = second.await.expect("a response");
        assert_eq!(
            answer.headers().get("grpc-status").map(|v| v.as_bytes()),
            Some(&b"13"[..])
        );
        assert_eq!(count(), 0, "an answered call leaves the count");

        let other = svc.call(request("/p.S/Other"));
        assert_eq!(count(), 0, "other methods are not counted");
        other.await.expect("the inner service answers");
    }
}

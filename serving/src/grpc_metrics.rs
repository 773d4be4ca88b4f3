//! A tower layer that counts and times every gRPC call for Prometheus:
//! `grpc_server_requests_total{service,method,code}` and
//! `grpc_server_request_duration_seconds{service,method}`.
//!
//! It sits in front of any tonic router (`Server::builder().layer(..)`), so a
//! service gets per-RPC request and latency metrics without touching its
//! handlers. Register it in a [`Registry`] created with a prefix
//! (`Registry::new_custom(Some("taskcast_inference".into()), None)`) to get
//! per-service metric names.
//!
//! The code is read from the response headers: tonic puts `grpc-status` there
//! for every error it returns from a unary handler, interceptor, timeout or
//! load shedding ("trailers-only" responses). A response whose headers carry
//! no status is counted as `OK`: its status would arrive in the trailers,
//! which for unary calls means success. Duration is time to response headers.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::task::{Context, Poll, ready};
use std::time::Instant;

use http::{Request, Response};
use prometheus::{
    Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, Opts, Registry,
};
use tower::{Layer, Service};

/// Latency buckets in seconds: 100 µs to 10 s, dense where a fast RPC lives.
pub const DURATION_BUCKETS: &[f64] = &[
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0,
];

/// Methods whose label children are kept resolved; more (a client trying
/// random paths) are counted the slow way, by label lookup per call.
const CACHED_METHODS: usize = 32;

/// The two metric families; cheap to clone (one shared handle).
#[derive(Clone, Debug)]
pub struct GrpcMetricsLayer {
    inner: Arc<Families>,
}

#[derive(Debug)]
struct Families {
    requests: IntCounterVec,
    duration: HistogramVec,
    /// Per-method children resolved on first use, so a call neither
    /// allocates its label strings nor hashes them into the families' maps:
    /// slots `0..len` are set, and only ever appended to (under `adding`).
    methods: [OnceLock<Arc<MethodMetrics>>; CACHED_METHODS],
    len: AtomicUsize,
    adding: Mutex<()>,
    /// Every path that is not `/service/method`.
    unknown: OnceLock<Arc<MethodMetrics>>,
}

/// One method's children of the families.
#[derive(Debug)]
struct MethodMetrics {
    path: String,
    service: String,
    method: String,
    requests: IntCounterVec,
    /// Made on the first success, so a method that only ever failed shows no `OK` series.
    ok: OnceLock<IntCounter>,
    duration: Histogram,
}

impl MethodMetrics {
    fn new(f: &Families, path: &str) -> Self {
        let (service, method) = split_path(path);
        MethodMetrics {
            path: path.to_string(),
            ok: OnceLock::new(),
            duration: f.duration.with_label_values(&[service, method]),
            requests: f.requests.clone(),
            service: service.to_string(),
            method: method.to_string(),
        }
    }

    fn record(&self, code: &str, seconds: f64) {
        if code == "OK" {
            self.ok
                .get_or_init(|| {
                    self.requests
                        .with_label_values(&[&self.service, &self.method, "OK"])
                })
                .inc();
        } else {
            self.requests
                .with_label_values(&[&self.service, &self.method, code])
                .inc();
        }
        self.duration.observe(seconds);
    }
}

impl Families {
    fn method(&self, path: &str) -> Arc<MethodMetrics> {
        let cached = |len: usize| {
            self.methods[..len]
                .iter()
                .filter_map(OnceLock::get)
                .find(|m| m.path == path)
                .cloned()
        };
        if let Some(m) = cached(self.len.load(Ordering::Acquire)) {
            return m;
        }
        if split_path(path) == ("unknown", "unknown") {
            return Arc::clone(
                self.unknown
                    .get_or_init(|| Arc::new(MethodMetrics::new(self, path))),
            );
        }
        let _adding = self.adding.lock().unwrap_or_else(|p| p.into_inner());
        let len = self.len.load(Ordering::Acquire);
        if let Some(m) = cached(len) {
            return m;
        }
        let m = Arc::new(MethodMetrics::new(self, path));
        if len < CACHED_METHODS {
            let _ = self.methods[len].set(Arc::clone(&m));
            self.len.store(len + 1, Ordering::Release);
        }
        m
    }
}

impl GrpcMetricsLayer {
    /// Creates the metrics and registers them in `registry`.
    pub fn new(registry: &Registry) -> Result<Self, prometheus::Error> {
        let requests = IntCounterVec::new(
            Opts::new(
                "grpc_server_requests_total",
                "gRPC requests handled, by final status code.",
            ),
            &["service", "method", "code"],
        )?;
        let duration = HistogramVec::new(
            HistogramOpts::new(
                "grpc_server_request_duration_seconds",
                "Time from request to response headers, per gRPC method.",
            )
            .buckets(DURATION_BUCKETS.to_vec()),
            &["service", "method"],
        )?;
        registry.register(Box::new(requests.clone()))?;
        registry.register(Box::new(duration.clone()))?;
        Ok(GrpcMetricsLayer {
            inner: Arc::new(Families {
                requests,
                duration,
                methods: std::array::from_fn(|_| OnceLock::new()),
                len: AtomicUsize::new(0),
                adding: Mutex::new(()),
                unknown: OnceLock::new(),
            }),
        })
    }
}

impl<S> Layer<S> for GrpcMetricsLayer {
    type Service = GrpcMetrics<S>;
    fn layer(&self, inner: S) -> Self::Service {
        GrpcMetrics {
            inner,
            metrics: self.clone(),
        }
    }
}

/// The service [`GrpcMetricsLayer`] wraps around an inner one.
#[derive(Clone, Debug)]
pub struct GrpcMetrics<S> {
    inner: S,
    metrics: GrpcMetricsLayer,
}

/// Splits `/pkg.Service/Method` into `("pkg.Service", "Method")`; anything
/// else (a stray HTTP path) is grouped under `("unknown", "unknown")` so that
/// random paths cannot blow up label cardinality.
pub fn split_path(path: &str) -> (&str, &str) {
    let mut parts = path.trim_start_matches('/').splitn(2, '/');
    match (parts.next(), parts.next()) {
        (Some(s), Some(m)) if !s.is_empty() && !m.is_empty() && !m.contains('/') => (s, m),
        _ => ("unknown", "unknown"),
    }
}

/// Name of a numeric gRPC status code, as Prometheus label value.
pub fn code_name(code: tonic::Code) -> &'static str {
    use tonic::Code::*;
    match code {
        Ok => "OK",
        Cancelled => "CANCELLED",
        Unknown => "UNKNOWN",
        InvalidArgument => "INVALID_ARGUMENT",
        DeadlineExceeded => "DEADLINE_EXCEEDED",
        NotFound => "NOT_FOUND",
        AlreadyExists => "ALREADY_EXISTS",
        PermissionDenied => "PERMISSION_DENIED",
        ResourceExhausted => "RESOURCE_EXHAUSTED",
        FailedPrecondition => "FAILED_PRECONDITION",
        Aborted => "ABORTED",
        OutOfRange => "OUT_OF_RANGE",
        Unimplemented => "UNIMPLEMENTED",
        Internal => "INTERNAL",
        Unavailable => "UNAVAILABLE",
        DataLoss => "DATA_LOSS",
        Unauthenticated => "UNAUTHENTICATED",
    }
}

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for GrpcMetrics<S>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>>,
{
    type Response = Response<ResBody>;
    type Error = S::Error;
    type Future = ResponseFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<ReqBody>) -> Self::Future {
        let method = self.metrics.inner.method(req.uri().path());
        ResponseFuture {
            inner: self.inner.call(req),
            method,
            start: Instant::now(),
        }
    }
}

pin_project_lite::pin_project! {
    /// The inner service's future, recording its outcome when it completes.
    #[derive(Debug)]
    pub struct ResponseFuture<F> {
        #[pin]
        inner: F,
        method: Arc<MethodMetrics>,
        start: Instant,
    }
}

impl<F, ResBody, E> Future for ResponseFuture<F>
where
    F: Future<Output = Result<Response<ResBody>, E>>,
{
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let this = self.project();
        let result = ready!(this.inner.poll(cx));
        let code = match &result {
            Ok(resp) => {
                tonic::Status::from_header_map(resp.headers()).map_or("OK", |s| code_name(s.code()))
            }
            // A transport-level failure of the inner service: no gRPC status was produced.
            Err(_) => "UNKNOWN",
        };
        this.method.record(code, this.start.elapsed().as_secs_f64());
        Poll::Ready(result)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::convert::Infallible;
    use tower::ServiceExt;

    #[test]
    fn splits_grpc_paths() {
        assert_eq!(
            split_path("/taskcast.v1.Inference/Predict"),
            ("taskcast.v1.Inference", "Predict")
        );
        assert_eq!(split_path("/"), ("unknown", "unknown"));
        assert_eq!(split_path("/a/b/c"), ("unknown", "unknown"));
        assert_eq!(split_path("/metrics"), ("unknown", "unknown"));
    }

    #[tokio::test]
    async fn counts_ok_and_error_codes() {
        let registry = Registry::new();
        let layer = GrpcMetricsLayer::new(&registry).unwrap();
        let svc = tower::service_fn(|req: Request<()>| async move {
            if req.uri().path().ends_with("Bad") {
                Ok::<_, Infallible>(tonic::Status::invalid_argument("x").into_http::<()>())
            } else {
                Ok(Response::new(()))
            }
        });
        let svc = layer.layer(svc);
        for path in ["/p.S/Good", "/p.S/Good", "/p.S/Bad"] {
            let req = Request::builder().uri(path).body(()).unwrap();
            svc.clone().oneshot(req).await.unwrap();
        }
        let text = {
            use prometheus::Encoder;
            let mut b = Vec::new();
            prometheus::TextEncoder::new()
                .encode(&registry.gather(), &mut b)
                .unwrap();
            String::from_utf8(b).unwrap()
        };
        assert!(
            text.contains(r#"grpc_server_requests_total{code="OK",method="Good",service="p.S"} 2"#),
            "{text}"
        );
        assert!(
            text.contains(r#"code="INVALID_ARGUMENT",method="Bad""#),
            "{text}"
        );
        assert!(
            text.contains("grpc_server_request_duration_seconds_count"),
            "{text}"
        );
    }
}

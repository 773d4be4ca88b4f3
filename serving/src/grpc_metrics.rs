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
//!
//! Label values come only from the server's own routes: the methods of the
//! services in the descriptor sets the server registers (its own, health,
//! reflection). Any other path, made up by a client that needs no token to
//! send it (this layer runs before the role layer), is counted under
//! `service="unknown", method="unknown"`, so no input can add a series.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll, ready};
use std::time::Instant;

use http::{Request, Response};
use prometheus::{
    Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, Opts, Registry,
};
use prost::Message;
use tower::{Layer, Service};

/// Latency buckets in seconds: 100 µs to 10 s, dense where a fast RPC lives.
pub const DURATION_BUCKETS: &[f64] = &[
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0,
];

/// The label value of every path that is not one of the server's methods.
pub const UNKNOWN: &str = "unknown";

/// The reflection services `grpc::serve` mounts (their descriptors are not
/// exported by tonic-reflection).
const REFLECTION_PATHS: [&str; 2] = [
    "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
    "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo",
];

/// The two metric families; cheap to clone (one shared handle).
#[derive(Clone, Debug)]
pub struct GrpcMetricsLayer {
    inner: Arc<Families>,
}

#[derive(Debug)]
struct Families {
    requests: IntCounterVec,
    duration: HistogramVec,
    /// Every method the server routes, by path, fixed at construction: a
    /// call only hashes its path (no lock, no allocation) and the label
    /// children are made on a method's first call, so methods never called
    /// show no series.
    known: HashMap<String, OnceLock<Arc<MethodMetrics>>>,
    /// Every other path, whatever it is.
    unknown: OnceLock<Arc<MethodMetrics>>,
}

/// One method's children of the families.
#[derive(Debug)]
struct MethodMetrics {
    service: String,
    method: String,
    requests: IntCounterVec,
    /// Made on the first success, so a method that only ever failed shows no `OK` series.
    ok: OnceLock<IntCounter>,
    duration: Histogram,
}

impl MethodMetrics {
    fn new(f: &Families, service: &str, method: &str) -> Self {
        MethodMetrics {
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
            // `code` is one of the 17 names of `code_name`: bounded.
            self.requests
                .with_label_values(&[&self.service, &self.method, code])
                .inc();
        }
        self.duration.observe(seconds);
    }
}

impl Families {
    fn method(&self, path: &str) -> Arc<MethodMetrics> {
        match self.known.get(path) {
            Some(slot) => Arc::clone(slot.get_or_init(|| {
                let (service, method) = split_path(path);
                Arc::new(MethodMetrics::new(self, service, method))
            })),
            None => Arc::clone(
                self.unknown
                    .get_or_init(|| Arc::new(MethodMetrics::new(self, UNKNOWN, UNKNOWN))),
            ),
        }
    }
}

/// `/package.Service/Method` of every method in an encoded descriptor set
/// whose service `keep` admits.
fn method_paths(descriptor_set: &[u8], keep: &dyn Fn(&str) -> bool) -> Vec<String> {
    // The sets are compiled into the binary; one that does not decode is a
    // build defect, caught by this crate's tests, and names nothing here.
    let Ok(set) = prost_types::FileDescriptorSet::decode(descriptor_set) else {
        return Vec::new();
    };
    let mut paths = Vec::new();
    for file in &set.file {
        for service in &file.service {
            let name = match file.package() {
                "" => service.name().to_string(),
                package => format!("{package}.{}", service.name()),
            };
            if keep(&name) {
                paths.extend(
                    service
                        .method
                        .iter()
                        .map(|m| format!("/{name}/{}", m.name())),
                );
            }
        }
    }
    paths
}

impl GrpcMetricsLayer {
    /// Creates the metrics and registers them in `registry`; every method
    /// of the Taskcast services, health and reflection gets its own labels.
    pub fn new(registry: &Registry) -> Result<Self, prometheus::Error> {
        Self::build(registry, &|_| true)
    }

    /// As [`GrpcMetricsLayer::new`], but of the Taskcast services only
    /// those named (`taskcast.v1.Inference`) get labels: what the server
    /// routes, so a call to another service's method is `unknown` too.
    pub fn for_services(registry: &Registry, services: &[&str]) -> Result<Self, prometheus::Error> {
        Self::build(registry, &|s| services.contains(&s))
    }

    fn build(registry: &Registry, keep: &dyn Fn(&str) -> bool) -> Result<Self, prometheus::Error> {
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
        let mut paths = method_paths(taskcast_proto::FILE_DESCRIPTOR_SET, keep);
        paths.extend(method_paths(tonic_health::pb::FILE_DESCRIPTOR_SET, &|_| {
            true
        }));
        paths.extend(REFLECTION_PATHS.iter().map(|p| (*p).to_string()));
        Ok(GrpcMetricsLayer {
            inner: Arc::new(Families {
                requests,
                duration,
                known: paths.into_iter().map(|p| (p, OnceLock::new())).collect(),
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
/// else (a stray HTTP path) is `("unknown", "unknown")`. The layer only
/// splits the paths of its known methods: a well-formed path it does not
/// route is `unknown` as well, so random paths cannot add label values.
pub fn split_path(path: &str) -> (&str, &str) {
    let mut parts = path.trim_start_matches('/').splitn(2, '/');
    match (parts.next(), parts.next()) {
        (Some(s), Some(m)) if !s.is_empty() && !m.is_empty() && !m.contains('/') => (s, m),
        _ => (UNKNOWN, UNKNOWN),
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

    fn render(registry: &Registry) -> String {
        use prometheus::Encoder;
        let mut b = Vec::new();
        prometheus::TextEncoder::new()
            .encode(&registry.gather(), &mut b)
            .unwrap();
        String::from_utf8(b).unwrap()
    }

    async fn call(
        svc: &GrpcMetrics<
            impl Service<Request<()>, Response = Response<()>, Error = Infallible> + Clone,
        >,
        path: &str,
    ) {
        let req = Request::builder().uri(path).body(()).unwrap();
        svc.clone().oneshot(req).await.unwrap();
    }

    /// The issue's attack: 300 made-up paths, no token. Before, each added
    /// series (2 220 new lines on /metrics); now they all land on one
    /// `unknown` label set, and so do the methods of a service this server
    /// does not route.
    #[tokio::test]
    async fn made_up_paths_add_no_series() {
        let registry = Registry::new();
        let layer = GrpcMetricsLayer::for_services(&registry, &["taskcast.v1.Inference"]).unwrap();
        let svc = layer.layer(tower::service_fn(|_req: Request<()>| async {
            Ok::<_, Infallible>(tonic::Status::unimplemented("").into_http::<()>())
        }));
        call(&svc, "/x0/y0").await;
        let lines = render(&registry).lines().count();
        for i in 1..300 {
            call(&svc, &format!("/x{i}/y{i}")).await;
            call(&svc, &format!("/taskcast.v1.Inference/Nope{i}")).await;
            call(&svc, &format!("/{i}")).await;
        }
        call(&svc, "/taskcast.v1.Trainer/Train").await;
        let text = render(&registry);
        assert_eq!(text.lines().count(), lines, "{text}");
        assert!(
            text.contains(r#"grpc_server_requests_total{code="UNIMPLEMENTED",method="unknown",service="unknown"} 899"#),
            "{text}"
        );
        // The server's own methods keep their names.
        call(&svc, "/taskcast.v1.Inference/Predict").await;
        call(&svc, "/grpc.health.v1.Health/Check").await;
        call(
            &svc,
            "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
        )
        .await;
        let text = render(&registry);
        for (service, method) in [
            ("taskcast.v1.Inference", "Predict"),
            ("grpc.health.v1.Health", "Check"),
            (
                "grpc.reflection.v1.ServerReflection",
                "ServerReflectionInfo",
            ),
        ] {
            assert!(
                text.contains(&format!(r#"method="{method}",service="{service}""#)),
                "{text}"
            );
        }
    }

    #[test]
    fn every_taskcast_method_is_known_by_default() {
        let layer = GrpcMetricsLayer::new(&Registry::new()).unwrap();
        let known = &layer.inner.known;
        for path in [
            "/taskcast.v1.Inference/Predict",
            "/taskcast.v1.Inference/Recommend",
            "/taskcast.v1.Inference/GetModel",
            "/taskcast.v1.Trainer/WatchModels",
            "/grpc.health.v1.Health/Watch",
        ] {
            assert!(known.contains_key(path), "{path}: {:?}", known.keys());
        }
    }

    #[tokio::test]
    async fn counts_ok_and_error_codes() {
        let registry = Registry::new();
        let layer = GrpcMetricsLayer::new(&registry).unwrap();
        let svc = tower::service_fn(|req: Request<()>| async move {
            if req.uri().path().ends_with("GetModel") {
                Ok::<_, Infallible>(tonic::Status::invalid_argument("x").into_http::<()>())
            } else {
                Ok(Response::new(()))
            }
        });
        let svc = layer.layer(svc);
        for path in [
            "/taskcast.v1.Inference/Predict",
            "/taskcast.v1.Inference/Predict",
            "/taskcast.v1.Inference/GetModel",
        ] {
            call(&svc, path).await;
        }
        let text = render(&registry);
        assert!(
            text.contains(r#"grpc_server_requests_total{code="OK",method="Predict",service="taskcast.v1.Inference"} 2"#),
            "{text}"
        );
        assert!(
            text.contains(r#"code="INVALID_ARGUMENT",method="GetModel""#),
            "{text}"
        );
        assert!(
            text.contains("grpc_server_request_duration_seconds_count"),
            "{text}"
        );
    }
}

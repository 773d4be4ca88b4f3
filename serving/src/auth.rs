//! Bearer-token protection for admin RPCs, as a tower layer in front of a
//! tonic router: calls to the listed full method paths
//! (`/taskcast.v1.Trainer/Promote`) must carry `authorization: Bearer <token>`;
//! every other path passes through untouched.
//!
//! Missing or wrong credentials get `UNAUTHENTICATED` without reaching the
//! handler. With no token configured the admin methods are refused outright:
//! failing closed is the only safe default for "who may promote a model".

use std::collections::HashSet;
use std::future::Future;
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use http::{Request, Response};
use subtle::ConstantTimeEq;
use tower::{Layer, Service};

/// Why an admin token could not be read.
#[derive(Debug, thiserror::Error)]
pub enum AdminTokenError {
    /// The token file could not be read.
    #[error("reading admin token file {path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The token (after trimming whitespace) is empty.
    #[error("the admin token is empty")]
    Empty,
}

/// A secret admin token. Its `Debug` output never shows the secret.
#[derive(Clone)]
pub struct AdminToken(Arc<[u8]>);

impl std::fmt::Debug for AdminToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AdminToken(<redacted>)")
    }
}

impl AdminToken {
    /// A token given directly (e.g. from an environment variable); surrounding
    /// whitespace is trimmed.
    pub fn from_value(value: &str) -> Result<Self, AdminTokenError> {
        let v = value.trim();
        if v.is_empty() {
            return Err(AdminTokenError::Empty);
        }
        Ok(AdminToken(Arc::from(v.as_bytes())))
    }

    /// A token read from a file (a mounted secret); the trailing newline that
    /// editors and `echo` add is trimmed.
    pub fn from_file(path: &Path) -> Result<Self, AdminTokenError> {
        let text = std::fs::read_to_string(path).map_err(|source| AdminTokenError::Read {
            path: path.display().to_string(),
            source,
        })?;
        Self::from_value(&text)
    }

    /// Whether an `authorization` header value is `Bearer <this token>`,
    /// compared in constant time so response timing does not leak the token.
    pub fn matches_header(&self, header: &[u8]) -> bool {
        let Some(presented) = strip_bearer(header) else {
            return false;
        };
        bool::from(presented.ct_eq(&self.0))
    }
}

/// The credentials after a case-insensitive `Bearer ` scheme.
fn strip_bearer(header: &[u8]) -> Option<&[u8]> {
    const SCHEME: &[u8] = b"bearer ";
    if header.len() < SCHEME.len() || !header[..SCHEME.len()].eq_ignore_ascii_case(SCHEME) {
        return None;
    }
    Some(header[SCHEME.len()..].trim_ascii())
}

/// Layer guarding a set of full gRPC method paths with an [`AdminToken`].
#[derive(Clone, Debug)]
pub struct AdminAuthLayer {
    methods: Arc<HashSet<String>>,
    token: Option<AdminToken>,
}

impl AdminAuthLayer {
    /// Guards `methods` (full paths such as `/taskcast.v1.Trainer/Promote`)
    /// with `token`; `None` refuses every call to them.
    pub fn new<I, M>(methods: I, token: Option<AdminToken>) -> Self
    where
        I: IntoIterator<Item = M>,
        M: Into<String>,
    {
        AdminAuthLayer {
            methods: Arc::new(methods.into_iter().map(Into::into).collect()),
            token,
        }
    }

    /// The check itself: `Ok` to pass the call on, or the status to answer with.
    pub fn check<B>(&self, req: &Request<B>) -> Result<(), tonic::Status> {
        if !self.methods.contains(req.uri().path()) {
            return Ok(());
        }
        let Some(token) = &self.token else {
            return Err(tonic::Status::unauthenticated(
                "admin RPCs are disabled: this server has no admin token configured",
            ));
        };
        match req.headers().get(http::header::AUTHORIZATION) {
            None => Err(tonic::Status::unauthenticated(
                "this admin RPC needs `authorization: Bearer <token>`",
            )),
            Some(v) if token.matches_header(v.as_bytes()) => Ok(()),
            Some(_) => Err(tonic::Status::unauthenticated("invalid admin token")),
        }
    }
}

impl<S> Layer<S> for AdminAuthLayer {
    type Service = AdminAuth<S>;
    fn layer(&self, inner: S) -> Self::Service {
        AdminAuth {
            inner,
            auth: self.clone(),
        }
    }
}

/// The service [`AdminAuthLayer`] wraps around an inner one.
#[derive(Clone, Debug)]
pub struct AdminAuth<S> {
    inner: S,
    auth: AdminAuthLayer,
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for AdminAuth<S>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>>,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    ResBody: Default + Send + 'static,
{
    type Response = Response<ResBody>;
    type Error = S::Error;
    type Future = BoxFuture<Result<Response<ResBody>, S::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<ReqBody>) -> Self::Future {
        match self.auth.check(&req) {
            Ok(()) => Box::pin(self.inner.call(req)),
            Err(status) => {
                tracing::warn!(path = %req.uri().path(), "admin call refused: {}", status.message());
                Box::pin(std::future::ready(Ok(status.into_http::<ResBody>())))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::convert::Infallible;
    use tower::ServiceExt;

    const ADMIN: &str = "/taskcast.v1.Trainer/Promote";

    async fn call(layer: &AdminAuthLayer, path: &str, auth: Option<&str>) -> tonic::Code {
        let svc = layer.layer(tower::service_fn(|_req: Request<()>| async {
            Ok::<_, Infallible>(Response::new(()))
        }));
        let mut req = Request::builder().uri(path);
        if let Some(a) = auth {
            req = req.header("authorization", a);
        }
        let resp = svc.oneshot(req.body(()).unwrap()).await.unwrap();
        tonic::Status::from_header_map(resp.headers()).map_or(tonic::Code::Ok, |s| s.code())
    }

    fn layer() -> AdminAuthLayer {
        AdminAuthLayer::new([ADMIN], Some(AdminToken::from_value("s3cret").unwrap()))
    }

    #[tokio::test]
    async fn right_token_passes() {
        assert_eq!(
            call(&layer(), ADMIN, Some("Bearer s3cret")).await,
            tonic::Code::Ok
        );
        assert_eq!(
            call(&layer(), ADMIN, Some("bearer s3cret")).await,
            tonic::Code::Ok
        );
    }

    #[tokio::test]
    async fn missing_or_wrong_token_is_unauthenticated() {
        let un = tonic::Code::Unauthenticated;
        assert_eq!(call(&layer(), ADMIN, None).await, un);
        assert_eq!(call(&layer(), ADMIN, Some("Bearer wrong")).await, un);
        assert_eq!(call(&layer(), ADMIN, Some("Bearer s3cre")).await, un);
        assert_eq!(call(&layer(), ADMIN, Some("Basic s3cret")).await, un);
        assert_eq!(call(&layer(), ADMIN, Some("s3cret")).await, un);
        assert_eq!(call(&layer(), ADMIN, Some("Bearer ")).await, un);
    }

    #[tokio::test]
    async fn other_methods_pass_without_token() {
        assert_eq!(
            call(&layer(), "/taskcast.v1.Trainer/ListModels", None).await,
            tonic::Code::Ok
        );
    }

    #[tokio::test]
    async fn no_configured_token_refuses_admin_calls() {
        let l = AdminAuthLayer::new([ADMIN], None);
        assert_eq!(
            call(&l, ADMIN, Some("Bearer anything")).await,
            tonic::Code::Unauthenticated
        );
        assert_eq!(call(&l, "/x.Y/Z", None).await, tonic::Code::Ok);
    }

    #[test]
    fn token_from_file_trims_and_rejects_empty() {
        let dir = std::env::temp_dir().join(format!("taskcast-auth-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("token");
        std::fs::write(&p, "abc\n").unwrap();
        assert!(
            AdminToken::from_file(&p)
                .unwrap()
                .matches_header(b"Bearer abc")
        );
        std::fs::write(&p, "  \n").unwrap();
        assert!(matches!(
            AdminToken::from_file(&p),
            Err(AdminTokenError::Empty)
        ));
        assert!(AdminToken::from_file(&dir.join("missing")).is_err());
        assert_eq!(
            format!("{:?}", AdminToken::from_value("abc").unwrap()),
            "AdminToken(<redacted>)"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
}

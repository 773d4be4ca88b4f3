//! Bearer-token roles for a gRPC service, as a tower layer in front of a
//! tonic router.
//!
//! Each guarded method (a full path such as `/taskcast.v1.Trainer/Promote`)
//! needs one [`Role`]; a caller proves a role with
//! `authorization: Bearer <token>`, each role's token read from its own file
//! (a mounted Secret). `admin` may call everything guarded; `replica` and
//! `reader` only their own methods. Methods of the guarded service that no
//! rule names need `admin`, so an RPC added later is closed until someone
//! decides who may call it. Paths outside the service (health, reflection)
//! pass untouched.
//!
//! No credential, or one that matches no role, gets `UNAUTHENTICATED`; a
//! valid token of a role the method does not admit gets `PERMISSION_DENIED`.
//! A role with no token configured cannot be proved at all: failing closed
//! is the only safe default for "who may read learners' data". Tokens are
//! compared in constant time and never logged. On success the caller's role
//! is put into the request's extensions ([`Caller`]) so a handler can show
//! more to `admin` than to others.

use std::collections::HashMap;
use std::future::Future;
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use arc_swap::ArcSwap;

use http::{Request, Response};
use subtle::ConstantTimeEq;
use tower::{Layer, Service};

/// Who a caller is, as proved by its token.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Role {
    /// Operators: training, promotion, rollback, and everything else.
    Admin,
    /// Inference replicas: the model stream.
    Replica,
    /// Dashboards and tools: the registry, runs and reports.
    Reader,
}

impl Role {
    /// Every role, strongest first.
    pub const ALL: [Role; 3] = [Role::Admin, Role::Replica, Role::Reader];

    /// The role's name in flags, messages and docs.
    pub fn name(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::Replica => "replica",
            Role::Reader => "reader",
        }
    }
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// The role a call was admitted with, in the request's extensions.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Caller(pub Role);

/// Why a token could not be read.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    /// The token file could not be read.
    #[error("reading the {role} token file {path}: {source}")]
    Read {
        /// Whose token.
        role: Role,
        /// The file.
        path: String,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The token (after trimming whitespace) is empty.
    #[error("the {role} token is empty")]
    Empty {
        /// Whose token.
        role: Role,
    },
    /// Two roles were given the same token, which would make the weaker role
    /// indistinguishable from the stronger one.
    #[error("the {0} and {1} tokens are the same; each role needs its own")]
    Shared(Role, Role),
}

/// A secret bearer token. Its `Debug` output never shows the secret.
#[derive(Clone)]
pub struct Token(Arc<[u8]>);

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Token(<redacted>)")
    }
}

impl Token {
    /// `role`'s token given directly (e.g. from an environment variable);
    /// surrounding whitespace is trimmed.
    pub fn from_value(role: Role, value: &str) -> Result<Self, TokenError> {
        let v = value.trim();
        if v.is_empty() {
            return Err(TokenError::Empty { role });
        }
        Ok(Token(Arc::from(v.as_bytes())))
    }

    /// `role`'s token read from a file (a mounted Secret); the trailing
    /// newline that editors and `echo` add is trimmed.
    pub fn from_file(role: Role, path: &Path) -> Result<Self, TokenError> {
        let text = std::fs::read_to_string(path).map_err(|source| TokenError::Read {
            role,
            path: path.display().to_string(),
            source,
        })?;
        Self::from_value(role, &text)
    }

    /// `role`'s token from a file or a value, the file winning; `None` when
    /// neither is given.
    pub fn from_file_or_value(
        role: Role,
        file: Option<&Path>,
        value: Option<&str>,
    ) -> Result<Option<Self>, TokenError> {
        match (file, value) {
            (Some(path), _) => Self::from_file(role, path).map(Some),
            (None, Some(v)) => Self::from_value(role, v).map(Some),
            (None, None) => Ok(None),
        }
    }

    /// Whether `presented` is this token, in constant time so response
    /// timing does not leak how much of a guess was right.
    fn matches(&self, presented: &[u8]) -> bool {
        bool::from(presented.ct_eq(&self.0))
    }

    /// Whether an `authorization` header value is `Bearer <this token>`.
    pub fn matches_header(&self, header: &[u8]) -> bool {
        strip_bearer(header).is_some_and(|p| self.matches(p))
    }

    /// The `authorization` metadata a client sends to present this token,
    /// marked sensitive so HTTP/2 never indexes it in header tables. `None`
    /// when the token has bytes a header cannot carry.
    pub fn bearer_metadata(&self) -> Option<tonic::metadata::AsciiMetadataValue> {
        let mut value = b"Bearer ".to_vec();
        value.extend_from_slice(&self.0);
        let mut v = tonic::metadata::AsciiMetadataValue::try_from(value.as_slice()).ok()?;
        v.set_sensitive(true);
        Some(v)
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

/// The tokens a server accepts: at most one current token per role, and
/// tokens a rotation replaced, each accepted until its grace period ends.
#[derive(Clone, Debug, Default)]
pub struct RoleTokens {
    tokens: Vec<(Role, Token)>,
    retired: Vec<(Role, Token, Instant)>,
}

impl RoleTokens {
    /// No tokens: every guarded method is refused.
    pub fn none() -> Self {
        RoleTokens::default()
    }

    /// Adds `role`'s token (`None` leaves the role unprovable). Refuses a
    /// token another role already has.
    pub fn with(mut self, role: Role, token: Option<Token>) -> Result<Self, TokenError> {
        let Some(token) = token else {
            return Ok(self);
        };
        if let Some((other, _)) = self.tokens.iter().find(|(_, t)| t.matches(&token.0)) {
            return Err(TokenError::Shared(*other, role));
        }
        self.tokens.retain(|(r, _)| *r != role);
        self.tokens.push((role, token));
        Ok(self)
    }

    /// Whether `role` has a token.
    pub fn has(&self, role: Role) -> bool {
        self.tokens.iter().any(|(r, _)| *r == role)
    }

    /// Whether `role`'s current token is `token`.
    pub fn is_current(&self, role: Role, token: &Token) -> bool {
        self.tokens
            .iter()
            .any(|(r, t)| *r == role && t.matches(&token.0))
    }

    /// These tokens with `role`'s replaced by `token`; the one it replaces
    /// is still accepted until `until`, so callers holding it (pods that
    /// have not re-read the Secret yet) are not cut off mid-rotation.
    /// Retired tokens past their time are dropped.
    pub fn rotated(&self, role: Role, token: Token, until: Instant) -> Result<Self, TokenError> {
        let now = Instant::now();
        let mut retired: Vec<(Role, Token, Instant)> = self
            .retired
            .iter()
            .filter(|(_, _, t)| *t > now)
            .cloned()
            .collect();
        if let Some((_, old)) = self.tokens.iter().find(|(r, _)| *r == role) {
            retired.push((role, old.clone(), until));
        }
        let mut next = RoleTokens {
            tokens: self.tokens.clone(),
            retired: Vec::new(),
        }
        .with(role, Some(token))?;
        next.retired = retired;
        Ok(next)
    }

    /// The role whose token `presented` is. Every configured token is
    /// compared, so the time taken does not say which role nearly matched.
    fn identify(&self, presented: &[u8]) -> Option<Role> {
        let mut found = None;
        for (role, token) in &self.tokens {
            if token.matches(presented) {
                found = Some(*role);
            }
        }
        let now = Instant::now();
        for (role, token, until) in &self.retired {
            if token.matches(presented) && now < *until && found.is_none() {
                found = Some(*role);
            }
        }
        found
    }
}

/// Layer guarding one gRPC service's methods by [`Role`].
#[derive(Clone, Debug)]
pub struct RoleAuthLayer {
    service_prefix: Arc<str>,
    rules: Arc<HashMap<String, Role>>,
    tokens: SharedTokens,
}

/// The tokens a [`RoleAuthLayer`] checks against, replaceable while it
/// serves (token rotation, [`crate::token_reload`]). Reads take no lock.
#[derive(Clone, Debug)]
pub struct SharedTokens(Arc<ArcSwap<RoleTokens>>);

impl SharedTokens {
    /// Shares `tokens`.
    pub fn new(tokens: RoleTokens) -> Self {
        SharedTokens(Arc::new(ArcSwap::from_pointee(tokens)))
    }

    /// The tokens now.
    pub fn load(&self) -> Arc<RoleTokens> {
        self.0.load_full()
    }

    /// Replaces the tokens for every call checked from now on.
    pub fn store(&self, tokens: RoleTokens) {
        self.0.store(Arc::new(tokens));
    }
}

impl RoleAuthLayer {
    /// Guards every method under `service_prefix` (`/taskcast.v1.Trainer/`):
    /// those in `rules` need their role, the rest need `admin`.
    pub fn new<I, M>(service_prefix: &str, rules: I, tokens: RoleTokens) -> Self
    where
        I: IntoIterator<Item = (M, Role)>,
        M: Into<String>,
    {
        RoleAuthLayer {
            service_prefix: Arc::from(service_prefix),
            rules: Arc::new(rules.into_iter().map(|(m, r)| (m.into(), r)).collect()),
            tokens: SharedTokens::new(tokens),
        }
    }

    /// The tokens this layer checks, to replace them while it serves.
    pub fn tokens(&self) -> SharedTokens {
        self.tokens.clone()
    }

    /// The role `path` needs; `None` for paths outside the guarded service.
    pub fn required(&self, path: &str) -> Option<Role> {
        if !path.starts_with(&*self.service_prefix) {
            return None;
        }
        Some(self.rules.get(path).copied().unwrap_or(Role::Admin))
    }

    /// The check itself: the caller's role to pass the call on with (`None`
    /// for an unguarded path), or the status to answer with.
    pub fn check<B>(&self, req: &Request<B>) -> Result<Option<Role>, tonic::Status> {
        let Some(needed) = self.required(req.uri().path()) else {
            return Ok(None);
        };
        let tokens = self.tokens.0.load();
        if !tokens.has(needed) && !tokens.has(Role::Admin) {
            return Err(tonic::Status::unauthenticated(format!(
                "this RPC needs the {needed} role, and this server has no {needed} or admin token configured"
            )));
        }
        let Some(header) = req.headers().get(http::header::AUTHORIZATION) else {
            return Err(tonic::Status::unauthenticated(format!(
                "this RPC needs the {needed} role: send `authorization: Bearer <token>`"
            )));
        };
        let Some(caller) = strip_bearer(header.as_bytes()).and_then(|p| tokens.identify(p)) else {
            return Err(tonic::Status::unauthenticated("invalid token"));
        };
        if caller == needed || caller == Role::Admin {
            Ok(Some(caller))
        } else {
            Err(tonic::Status::permission_denied(format!(
                "the {caller} role may not call this RPC; it needs {needed}"
            )))
        }
    }
}

impl<S> Layer<S> for RoleAuthLayer {
    type Service = RoleAuth<S>;
    fn layer(&self, inner: S) -> Self::Service {
        RoleAuth {
            inner,
            auth: self.clone(),
        }
    }
}

/// The service [`RoleAuthLayer`] wraps around an inner one.
#[derive(Clone, Debug)]
pub struct RoleAuth<S> {
    inner: S,
    auth: RoleAuthLayer,
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for RoleAuth<S>
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

    fn call(&mut self, mut req: Request<ReqBody>) -> Self::Future {
        match self.auth.check(&req) {
            Ok(caller) => {
                if let Some(role) = caller {
                    req.extensions_mut().insert(Caller(role));
                }
                Box::pin(self.inner.call(req))
            }
            Err(status) => {
                // The path and the reason only: never the presented header.
                tracing::warn!(path = %req.uri().path(), code = ?status.code(), "call refused: {}", status.message());
                Box::pin(std::future::ready(Ok(status.into_http::<ResBody>())))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::convert::Infallible;
    use tonic::Code;
    use tower::ServiceExt;

    const PREFIX: &str = "/taskcast.v1.Trainer/";
    const PROMOTE: &str = "/taskcast.v1.Trainer/Promote";
    const WATCH: &str = "/taskcast.v1.Trainer/WatchModels";
    const LIST: &str = "/taskcast.v1.Trainer/ListModels";

    /// Calls `path` through `layer`; the status code and the role the inner
    /// service saw.
    async fn call(layer: &RoleAuthLayer, path: &str, auth: Option<&str>) -> (Code, Option<Role>) {
        let svc = layer.layer(tower::service_fn(|req: Request<()>| async move {
            let mut resp = Response::new(());
            if let Some(c) = req.extensions().get::<Caller>() {
                resp.extensions_mut().insert(*c);
            }
            Ok::<_, Infallible>(resp)
        }));
        let mut req = Request::builder().uri(path);
        if let Some(a) = auth {
            req = req.header("authorization", a);
        }
        let resp = svc.oneshot(req.body(()).unwrap()).await.unwrap();
        let code = tonic::Status::from_header_map(resp.headers()).map_or(Code::Ok, |s| s.code());
        (code, resp.extensions().get::<Caller>().map(|c| c.0))
    }

    fn tokens() -> RoleTokens {
        let t = |r, v| Some(Token::from_value(r, v).unwrap());
        RoleTokens::none()
            .with(Role::Admin, t(Role::Admin, "adm"))
            .unwrap()
            .with(Role::Replica, t(Role::Replica, "rep"))
            .unwrap()
            .with(Role::Reader, t(Role::Reader, "rea"))
            .unwrap()
    }

    fn layer(tokens: RoleTokens) -> RoleAuthLayer {
        RoleAuthLayer::new(
            PREFIX,
            [(WATCH, Role::Replica), (LIST, Role::Reader)],
            tokens,
        )
    }

    #[tokio::test]
    async fn each_role_reaches_its_methods_and_admin_reaches_all() {
        let l = layer(tokens());
        assert_eq!(
            call(&l, PROMOTE, Some("Bearer adm")).await,
            (Code::Ok, Some(Role::Admin))
        );
        assert_eq!(call(&l, PROMOTE, Some("bearer adm")).await.0, Code::Ok);
        assert_eq!(
            call(&l, WATCH, Some("Bearer rep")).await,
            (Code::Ok, Some(Role::Replica))
        );
        assert_eq!(call(&l, WATCH, Some("Bearer adm")).await.0, Code::Ok);
        assert_eq!(
            call(&l, LIST, Some("Bearer rea")).await,
            (Code::Ok, Some(Role::Reader))
        );
        assert_eq!(
            call(&l, LIST, Some("Bearer adm")).await,
            (Code::Ok, Some(Role::Admin))
        );
    }

    #[tokio::test]
    async fn a_valid_token_of_the_wrong_role_is_permission_denied() {
        let l = layer(tokens());
        let denied = Code::PermissionDenied;
        assert_eq!(call(&l, PROMOTE, Some("Bearer rep")).await.0, denied);
        assert_eq!(call(&l, PROMOTE, Some("Bearer rea")).await.0, denied);
        assert_eq!(call(&l, WATCH, Some("Bearer rea")).await.0, denied);
        assert_eq!(call(&l, LIST, Some("Bearer rep")).await.0, denied);
    }

    #[tokio::test]
    async fn missing_or_wrong_token_is_unauthenticated() {
        let l = layer(tokens());
        let un = Code::Unauthenticated;
        for path in [PROMOTE, WATCH, LIST] {
            assert_eq!(call(&l, path, None).await.0, un);
            assert_eq!(call(&l, path, Some("Bearer wrong")).await.0, un);
            assert_eq!(call(&l, path, Some("Bearer ad")).await.0, un);
            assert_eq!(call(&l, path, Some("Basic adm")).await.0, un);
            assert_eq!(call(&l, path, Some("adm")).await.0, un);
            assert_eq!(call(&l, path, Some("Bearer ")).await.0, un);
        }
    }

    #[tokio::test]
    async fn unlisted_methods_of_the_service_need_admin_and_others_pass() {
        let l = layer(tokens());
        let new_rpc = "/taskcast.v1.Trainer/SomethingNew";
        assert_eq!(
            call(&l, new_rpc, Some("Bearer rea")).await.0,
            Code::PermissionDenied
        );
        assert_eq!(call(&l, new_rpc, Some("Bearer adm")).await.0, Code::Ok);
        assert_eq!(
            call(&l, "/grpc.health.v1.Health/Check", None).await,
            (Code::Ok, None)
        );
    }

    #[tokio::test]
    async fn a_role_without_a_token_cannot_be_proved() {
        let l = layer(RoleTokens::none());
        assert_eq!(
            call(&l, LIST, Some("Bearer anything")).await.0,
            Code::Unauthenticated
        );
        assert_eq!(call(&l, "/x.Y/Z", None).await.0, Code::Ok);
        // With only an admin token, admin still reaches the reader's methods.
        let only_admin = RoleTokens::none()
            .with(
                Role::Admin,
                Some(Token::from_value(Role::Admin, "adm").unwrap()),
            )
            .unwrap();
        let l = layer(only_admin);
        assert_eq!(call(&l, LIST, Some("Bearer adm")).await.0, Code::Ok);
        assert_eq!(
            call(&l, LIST, Some("Bearer rea")).await.0,
            Code::Unauthenticated
        );
    }

    #[test]
    fn roles_may_not_share_a_token() {
        let t = |r| Some(Token::from_value(r, "same").unwrap());
        let e = RoleTokens::none()
            .with(Role::Admin, t(Role::Admin))
            .unwrap()
            .with(Role::Reader, t(Role::Reader))
            .unwrap_err();
        assert!(
            matches!(e, TokenError::Shared(Role::Admin, Role::Reader)),
            "{e}"
        );
    }

    #[test]
    fn token_from_file_trims_and_rejects_empty() {
        let dir = std::env::temp_dir().join(format!("taskcast-auth-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("token");
        std::fs::write(&p, "abc\n").unwrap();
        let t = Token::from_file(Role::Reader, &p).unwrap();
        assert!(t.matches_header(b"Bearer abc"));
        std::fs::write(&p, "  \n").unwrap();
        let e = Token::from_file(Role::Reader, &p).unwrap_err();
        assert_eq!(e.to_string(), "the reader token is empty");
        let e = Token::from_file(Role::Replica, &dir.join("missing")).unwrap_err();
        assert!(
            e.to_string().starts_with("reading the replica token file"),
            "{e}"
        );
        assert_eq!(format!("{t:?}"), "Token(<redacted>)");
        assert_eq!(t.bearer_metadata().unwrap(), "Bearer abc");
        assert!(t.bearer_metadata().unwrap().is_sensitive());
        assert!(
            Token::from_value(Role::Replica, "a\u{7f}b")
                .unwrap()
                .bearer_metadata()
                .is_none()
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
}

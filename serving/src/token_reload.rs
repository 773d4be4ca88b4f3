//! Token files re-read when they change, so rotating a Secret needs no
//! restart: Kubernetes updates a mounted Secret's file in place (within
//! about a minute), and the server picks the new token up on its next look.
//! The token it replaces stays valid for a grace period, because the pods
//! that present it (inference replicas, operators' scripts) read the new
//! file on their own schedule; without the overlap every rotation would be
//! an outage of whoever is slowest.
//!
//! A file that cannot be read, or holds no token, leaves the current token
//! in place (a half-written file must not lock everyone out); the event is
//! logged with the role and path, never a token.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use crate::auth::{Role, SharedTokens, Token};
use crate::shutdown::Shutdown;

/// Default time a replaced token stays valid: long enough for every pod to
/// see the new Secret (the kubelet's sync period is about a minute) and
/// reconnect, short enough that a leaked token dies soon.
pub const DEFAULT_TOKEN_GRACE: Duration = Duration::from_secs(300);

/// How often the files are looked at: a read of a few small files.
pub const DEFAULT_TOKEN_POLL: Duration = Duration::from_secs(5);

/// Re-reads each role's token file into a [`SharedTokens`].
pub struct TokenReloader {
    tokens: SharedTokens,
    files: Vec<(Role, PathBuf)>,
    grace: Duration,
}

impl TokenReloader {
    /// Watches `files` (each role's token file) for `tokens`; a replaced
    /// token is accepted for `grace` more.
    pub fn new(tokens: SharedTokens, files: Vec<(Role, PathBuf)>, grace: Duration) -> Self {
        TokenReloader {
            tokens,
            files,
            grace,
        }
    }

    /// Reads every file once; the roles whose token changed.
    pub fn reload(&self) -> Vec<Role> {
        let mut changed = Vec::new();
        for (role, path) in &self.files {
            let token = match Token::from_file(*role, path) {
                Ok(t) => t,
                Err(e) => {
                    tracing::warn!(%role, path = %path.display(), error = %e, "token file unreadable; keeping the current token");
                    continue;
                }
            };
            let now = self.tokens.load();
            if now.is_current(*role, &token) {
                continue;
            }
            match now.rotated(*role, token, Instant::now() + self.grace) {
                Ok(next) => {
                    self.tokens.store(next);
                    tracing::info!(%role, grace_seconds = self.grace.as_secs(), "token rotated; the previous one is accepted for the grace period");
                    changed.push(*role);
                }
                Err(e) => {
                    tracing::warn!(%role, path = %path.display(), error = %e, "new token refused; keeping the current one");
                }
            }
        }
        changed
    }

    /// Looks at the files every `every` until `shutdown`.
    pub async fn run(self, every: Duration, mut shutdown: Shutdown) {
        loop {
            tokio::select! {
                () = tokio::time::sleep(every) => {}
                () = shutdown.recv() => return,
            }
            self.reload();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::{RoleAuthLayer, RoleTokens};

    fn call(layer: &RoleAuthLayer, token: &str) -> Result<Option<Role>, tonic::Code> {
        let req = http::Request::builder()
            .uri("/taskcast.v1.Trainer/ListModels")
            .header("authorization", format!("Bearer {token}"))
            .body(())
            .expect("request");
        layer.check(&req).map_err(|s| s.code())
    }

    #[test]
    fn a_rotated_token_is_accepted_with_the_old_one_for_the_grace_period() {
        let dir = tempfile::tempdir().expect("dir");
        let file = dir.path().join("admin");
        std::fs::write(&file, "old-token\n").expect("write");
        let tokens = RoleTokens::none()
            .with(
                Role::Admin,
                Some(Token::from_file(Role::Admin, &file).expect("token")),
            )
            .expect("tokens");
        let layer = RoleAuthLayer::new(
            "/taskcast.v1.Trainer/",
            Vec::<(String, Role)>::new(),
            tokens,
        );
        let reloader = TokenReloader::new(
            layer.tokens(),
            vec![(Role::Admin, file.clone())],
            Duration::from_millis(300),
        );
        assert!(reloader.reload().is_empty(), "nothing changed yet");
        std::fs::write(&file, "new-token\n").expect("rotate");
        assert_eq!(reloader.reload(), [Role::Admin]);
        assert_eq!(call(&layer, "new-token"), Ok(Some(Role::Admin)));
        assert_eq!(call(&layer, "old-token"), Ok(Some(Role::Admin)), "grace");
        // A half-written (empty) file keeps the current token.
        std::fs::write(&file, "").expect("truncate");
        assert!(reloader.reload().is_empty());
        assert_eq!(call(&layer, "new-token"), Ok(Some(Role::Admin)));
        std::thread::sleep(Duration::from_millis(400));
        assert_eq!(call(&layer, "old-token"), Err(tonic::Code::Unauthenticated));
        assert_eq!(call(&layer, "new-token"), Ok(Some(Role::Admin)));
        assert_eq!(
            call(&layer, "never-valid"),
            Err(tonic::Code::Unauthenticated)
        );
    }
}

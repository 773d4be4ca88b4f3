//! The trainer's bearer tokens, one per role, and which call carries which.
//!
//! A token goes only where its role is needed: inference and health calls
//! never carry one, so a token given for the trainer cannot leak to a replica
//! (or to whatever answers at the inference address).

use std::path::Path;

use anyhow::{Context, bail};
use clap::ArgMatches;
use clap::parser::ValueSource;
use tonic::metadata::{Ascii, MetadataValue};

/// A trainer role, as the trainer's `--admin-token-file`,
/// `--reader-token-file` and `--replica-token-file` define them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// Train, Promote, Rollback; the trainer also lets admin call everything else.
    Admin,
    /// ListModels, GetTrainingRun, WatchTrainingRun, ModelReport.
    Reader,
    /// WatchModels, the stream inference replicas follow.
    Replica,
}

impl Role {
    /// The role's name in flags and messages.
    pub fn name(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::Reader => "reader",
            Role::Replica => "replica",
        }
    }

    /// Where a token for this role comes from, for error messages.
    pub fn how_to_give(self) -> String {
        let (name, env) = (self.name(), self.name().to_ascii_uppercase());
        format!(
            "--{name}-token-file (or $TASKCAST_{env}_TOKEN_FILE), --{name}-token (or $TASKCAST_{env}_TOKEN)"
        )
    }
}

/// A ready `authorization` header value. Marked sensitive, so HTTP/2 never
/// puts it in its header compression table; its `Debug` shows no secret.
#[derive(Clone)]
pub struct Bearer {
    value: MetadataValue<Ascii>,
    /// Whose token it is.
    pub role: Role,
    /// Where it came from (a flag, a file, a variable), never the token.
    pub origin: String,
}

impl std::fmt::Debug for Bearer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Bearer(<redacted> {} token, from {})",
            self.role.name(),
            self.origin
        )
    }
}

impl Bearer {
    /// `Bearer <token>` from a token's text (surrounding whitespace, such as
    /// the newline `echo` adds to a file, is not part of it).
    fn new(role: Role, token: &str, origin: String) -> anyhow::Result<Bearer> {
        let token = token.trim();
        if token.is_empty() {
            bail!("the {} token from {origin} is empty", role.name());
        }
        // The error names the origin only: the value is the secret.
        let mut value: MetadataValue<Ascii> = format!("Bearer {token}").parse().map_err(|_| {
            anyhow::anyhow!(
                "the {} token from {origin} has characters an HTTP header cannot carry",
                role.name()
            )
        })?;
        value.set_sensitive(true);
        Ok(Bearer {
            value,
            role,
            origin,
        })
    }

    /// The header value to send.
    pub fn header(&self) -> MetadataValue<Ascii> {
        self.value.clone()
    }
}

/// The tokens given for each role; any may be missing.
#[derive(Clone, Debug, Default)]
pub struct Tokens {
    admin: Option<Bearer>,
    reader: Option<Bearer>,
    replica: Option<Bearer>,
}

/// One role's two flags, as parsed.
pub struct RoleFlags<'a> {
    /// The role.
    pub role: Role,
    /// `--ROLE-token-file` (or its variable).
    pub file: Option<&'a Path>,
    /// `--ROLE-token` (or its variable).
    pub value: Option<&'a str>,
}

impl Tokens {
    /// Reads each role's token from its flags. A command-line flag beats an
    /// environment variable, so `--admin-token-file` works with a stale
    /// `$TASKCAST_ADMIN_TOKEN` set; from the same place, the file beats the
    /// value. Token files are read now, so a wrong path fails before any call.
    pub fn from_flags(flags: [RoleFlags<'_>; 3], matches: &ArgMatches) -> anyhow::Result<Tokens> {
        let mut tokens = Tokens::default();
        for f in flags {
            let file_id = format!("{}_token_file", f.role.name());
            let value_id = format!("{}_token", f.role.name());
            let from_cli = |id: &str| matches.value_source(id) == Some(ValueSource::CommandLine);
            let use_file = match (f.file, f.value) {
                (Some(_), Some(_)) => from_cli(&file_id) || !from_cli(&value_id),
                (file, _) => file.is_some(),
            };
            let bearer = match (use_file, f.file, f.value) {
                (true, Some(path), _) => Some(read_token_file(f.role, path)?),
                (_, _, Some(value)) => Some(Bearer::new(
                    f.role,
                    value,
                    value_origin(matches, &value_id, f.role),
                )?),
                _ => None,
            };
            match f.role {
                Role::Admin => tokens.admin = bearer,
                Role::Reader => tokens.reader = bearer,
                Role::Replica => tokens.replica = bearer,
            }
        }
        Ok(tokens)
    }

    /// The token a call of `role` carries: its own role's; for reader and
    /// replica calls the admin token when only that was given (the trainer
    /// lets admin call everything).
    pub fn for_role(&self, role: Role) -> Option<&Bearer> {
        match role {
            Role::Admin => self.admin.as_ref(),
            Role::Reader => self.reader.as_ref().or(self.admin.as_ref()),
            Role::Replica => self.replica.as_ref().or(self.admin.as_ref()),
        }
    }
}

fn read_token_file(role: Role, path: &Path) -> anyhow::Result<Bearer> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading the {} token file {}", role.name(), path.display()))?;
    Bearer::new(role, &text, format!("file {}", path.display()))
}

/// `--admin-token` or `$TASKCAST_ADMIN_TOKEN`, whichever gave the value.
fn value_origin(matches: &ArgMatches, id: &str, role: Role) -> String {
    match matches.value_source(id) {
        Some(ValueSource::EnvVariable) => {
            format!("$TASKCAST_{}_TOKEN", role.name().to_ascii_uppercase())
        }
        _ => format!("--{}-token", role.name()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bearer(role: Role, t: &str) -> Bearer {
        Bearer::new(role, t, "a test".into()).expect("valid token")
    }

    fn sent(tokens: &Tokens, role: Role) -> Option<String> {
        tokens
            .for_role(role)
            .map(|b| b.header().to_str().expect("ascii").to_string())
    }

    #[test]
    fn each_role_gets_its_own_token_and_reads_fall_back_to_admin() {
        let all = Tokens {
            admin: Some(bearer(Role::Admin, "a")),
            reader: Some(bearer(Role::Reader, "r")),
            replica: Some(bearer(Role::Replica, "p")),
        };
        assert_eq!(sent(&all, Role::Admin).as_deref(), Some("Bearer a"));
        assert_eq!(sent(&all, Role::Reader).as_deref(), Some("Bearer r"));
        assert_eq!(sent(&all, Role::Replica).as_deref(), Some("Bearer p"));

        let admin_only = Tokens {
            admin: Some(bearer(Role::Admin, "a")),
            ..Tokens::default()
        };
        assert_eq!(sent(&admin_only, Role::Reader).as_deref(), Some("Bearer a"));
        assert_eq!(
            sent(&admin_only, Role::Replica).as_deref(),
            Some("Bearer a")
        );

        // A reader token never stands in for admin.
        let reader_only = Tokens {
            reader: Some(bearer(Role::Reader, "r")),
            ..Tokens::default()
        };
        assert_eq!(sent(&reader_only, Role::Admin), None);
    }

    #[test]
    fn tokens_are_trimmed_checked_and_never_shown() {
        assert_eq!(
            bearer(Role::Admin, " secret\n").header().to_str().ok(),
            Some("Bearer secret")
        );
        let e = Bearer::new(Role::Reader, " \n", "file t".into()).unwrap_err();
        assert_eq!(e.to_string(), "the reader token from file t is empty");
        let e = Bearer::new(Role::Admin, "s3cr\u{7f}t", "file t".into()).unwrap_err();
        assert!(!e.to_string().contains("s3cr"), "{e}");
        let b = bearer(Role::Admin, "s3cret");
        assert!(!format!("{b:?}").contains("s3cret"));
        assert!(b.header().is_sensitive());
    }
}

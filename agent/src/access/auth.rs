//! Who may call the API: the `[api] tokens` entries and the client certificates of
//! `[[sync.accept_certs]]` that carry `scopes`, loaded into a [`Credentials`] table. The
//! scope each route needs is `api::route_scope`'s.
//!
//! Scopes are ordered: `read` < `write` < `admin`; a principal holding a scope may do
//! everything the lower ones allow. Tokens are kept only as SHA-256 digests and compared in
//! constant time (`subtle`), so neither the table nor a timing side channel gives them away.
//! With no token and no certificate principal configured the API is open — config
//! validation allows that only on a loopback `api.listen` — unless `api.tls.require_client_cert`
//! says clients authenticate by certificate: then a certificate that maps to no principal
//! gets nothing, never an open API. HTTP concerns (status codes, the
//! middleware) are `guard`'s; this module answers with values.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};
use subtle::ConstantTimeEq;

use crate::peers::AcceptCert;
pub use crate::scope::Scope;
pub use crate::secret::sha256;
use crate::secret::{TokenLength, TokenSource};
use crate::section::{InvalidValue, refuse};
use crate::tls::ClientCert;

/// Shortest accepted clear-text token: guessing must be hopeless, not merely slow.
pub const MIN_TOKEN_LEN: usize = 16;

/// How long an API token may be.
const API_TOKEN_LENGTH: TokenLength = TokenLength {
    min_chars: MIN_TOKEN_LEN,
    max_bytes: 4096,
};

/// `[api] tokens = [{ name, token | token_sha256 | token_file, scopes }]`: a bearer token
/// accepted by the API.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiToken {
    /// Who this token belongs to, in logs and errors (never the token itself).
    pub name: String,
    /// The token in clear text (at least 16 characters).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
    /// SHA-256 of the token, 64 hex digits (`printf %s TOKEN | sha256sum`): the config
    /// file then holds no secret.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_sha256: Option<String>,
    /// A file holding the token (first line, surrounding whitespace ignored), read at start.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_file: Option<PathBuf>,
    /// What the token may do: `read`, `write`, `admin`.
    pub scopes: Vec<Scope>,
}

impl std::fmt::Debug for ApiToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiToken")
            .field("name", &self.name)
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .field(
                "token_sha256",
                &self.token_sha256.as_ref().map(|_| "<redacted>"),
            )
            .field("token_file", &self.token_file)
            .field("scopes", &self.scopes)
            .finish()
    }
}

impl ApiToken {
    /// Where the token comes from; a clear token is compared trimmed, as presented tokens
    /// are.
    fn source(&self) -> TokenSource<'_> {
        TokenSource {
            token: self.token.as_deref().map(str::trim),
            token_sha256: self.token_sha256.as_deref(),
            token_file: self.token_file.as_deref(),
        }
    }

    /// Checks one entry; `key` is its dotted key (`api.tokens[0]`).
    pub fn validate(&self, key: &str) -> Result<(), InvalidValue> {
        if self.name.trim().is_empty() || self.name.len() > 64 {
            return refuse(format!("{key}.name"), "use 1 to 64 characters");
        }
        self.source().validate(key, API_TOKEN_LENGTH)?;
        if self.scopes.is_empty() {
            return refuse(
                format!("{key}.scopes"),
                "must list at least one of read, write, admin",
            );
        }
        Ok(())
    }
}

/// Why the credential table could not be built (a token file that cannot be read).
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// A `token_file` is missing, unreadable or holds too short a token.
    #[error(transparent)]
    TokenFile(#[from] crate::secret::TokenFileError),
}

/// Someone the API recognised.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    /// The token's or certificate's configured name.
    pub name: String,
    /// Its highest scope.
    pub scope: Scope,
}

struct TokenEntry {
    digest: [u8; 32],
    principal: Principal,
}

struct CertEntry {
    fingerprint: [u8; 32],
    principal: Principal,
}

/// The accepted tokens (as digests) and certificate principals.
#[derive(Default)]
pub struct Credentials {
    tokens: Vec<TokenEntry>,
    certs: Vec<CertEntry>,
    /// `api.tls.require_client_cert`: the API is never open, whatever is configured.
    cert_required: bool,
}

/// The result of checking a request's credentials.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Check {
    /// No credentials are configured: the API is open (loopback only).
    Open,
    /// Recognised.
    Principal(Principal),
    /// Nothing was presented.
    Missing,
    /// A token was presented and is not accepted.
    BadToken,
    /// A verified client certificate that maps to no principal (not listed in
    /// `[[sync.accept_certs]]`, or listed without `scopes`), and no token.
    UnmappedCert,
}

impl Credentials {
    /// Builds the table from `[api] tokens` and the `[[sync.accept_certs]]` entries with
    /// scopes, reading token files. Errors name the key.
    /// The token in `admin_file` (`api.admin_token_file`) is accepted with scope `admin` as
    /// `local-admin`. With `cert_required` (`api.tls.require_client_cert`) the API is
    /// never open, even with an empty table.
    pub fn load(
        tokens: &[ApiToken],
        admin_file: Option<&std::path::Path>,
        certs: &[AcceptCert],
        cert_required: bool,
    ) -> Result<Credentials, AuthError> {
        let mut table = Credentials {
            cert_required,
            ..Credentials::default()
        };
        if let Some(path) = admin_file {
            table.tokens.push(TokenEntry {
                digest: sha256(read_token_file("api.admin_token_file", path)?.as_bytes()),
                principal: Principal {
                    name: "local-admin".into(),
                    scope: Scope::Admin,
                },
            });
        }
        for (i, t) in tokens.iter().enumerate() {
            let digest = t
                .source()
                .digest(&format!("api.tokens[{i}]"), MIN_TOKEN_LEN)?;
            table.tokens.push(TokenEntry {
                digest,
                principal: Principal {
                    name: t.name.clone(),
                    scope: t.scopes.iter().copied().max().unwrap_or(Scope::Read),
                },
            });
        }
        for c in certs {
            let (Some(scope), Ok(fingerprint)) =
                (c.scopes.iter().copied().max(), c.fingerprint_bytes())
            else {
                continue;
            };
            table.certs.push(CertEntry {
                fingerprint,
                principal: Principal {
                    name: c.name.clone(),
                    scope,
                },
            });
        }
        Ok(table)
    }

    /// True when no credential is configured and none is required (the API is open).
    pub fn is_open(&self) -> bool {
        !self.cert_required && self.tokens.is_empty() && self.certs.is_empty()
    }

    /// Who presents `bearer` and/or `cert`. A verified certificate with scopes wins; a
    /// presented token is checked against every entry without an early exit.
    pub fn check(&self, bearer: Option<&str>, cert: Option<ClientCert>) -> Check {
        if self.is_open() {
            return Check::Open;
        }
        if let Some(cert) = cert
            && let Some(e) = self
                .certs
                .iter()
                .find(|e| bool::from(e.fingerprint.ct_eq(&cert.fingerprint)))
        {
            return Check::Principal(e.principal.clone());
        }
        let Some(bearer) = bearer else {
            return if cert.is_some() {
                Check::UnmappedCert
            } else {
                Check::Missing
            };
        };
        let digest = sha256(bearer.trim().as_bytes());
        let mut found = None;
        for e in &self.tokens {
            if bool::from(e.digest.ct_eq(&digest)) {
                found = Some(&e.principal);
            }
        }
        match found {
            Some(p) => Check::Principal(p.clone()),
            None => Check::BadToken,
        }
    }
}

/// The token in `path` (its first line, trimmed, at least [`MIN_TOKEN_LEN`] characters);
/// `key` names the setting in errors.
fn read_token_file(key: &str, path: &std::path::Path) -> Result<String, AuthError> {
    Ok(crate::secret::read_token_file(key, path, MIN_TOKEN_LEN)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn token(name: &str, t: &str, scopes: &[Scope]) -> ApiToken {
        ApiToken {
            name: name.into(),
            token: Some(t.into()),
            token_sha256: None,
            token_file: None,
            scopes: scopes.to_vec(),
        }
    }

    #[test]
    fn tokens_are_matched_by_digest_and_scopes_are_ordered() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("admin.token");
        std::fs::write(&file, "file-token-0123456789\n").unwrap();
        let hashed = ApiToken {
            name: "hashed".into(),
            token: None,
            token_sha256: Some(hex::encode(sha256(b"hashed-token-0123456789"))),
            token_file: None,
            scopes: vec![Scope::Write, Scope::Read],
        };
        let from_file = ApiToken {
            name: "local".into(),
            token: None,
            token_sha256: None,
            token_file: Some(file),
            scopes: vec![Scope::Admin],
        };
        let tokens = vec![
            token("reader", "reader-token-0123456789", &[Scope::Read]),
            hashed,
            from_file,
        ];
        for (i, t) in tokens.iter().enumerate() {
            t.validate(&format!("api.tokens[{i}]")).unwrap();
        }
        let c = Credentials::load(&tokens, None, &[], false).unwrap();
        let who = |t: &str| match c.check(Some(t), None) {
            Check::Principal(p) => Some((p.name, p.scope)),
            _ => None,
        };
        assert_eq!(
            who("reader-token-0123456789"),
            Some(("reader".into(), Scope::Read))
        );
        assert_eq!(
            who("hashed-token-0123456789"),
            Some(("hashed".into(), Scope::Write))
        );
        assert_eq!(
            who("file-token-0123456789"),
            Some(("local".into(), Scope::Admin))
        );
        assert_eq!(c.check(Some("nope-nope-nope-nope"), None), Check::BadToken);
        assert_eq!(c.check(None, None), Check::Missing);
        assert!(Scope::Admin > Scope::Write && Scope::Write > Scope::Read);
        assert_eq!(Credentials::default().check(None, None), Check::Open);
    }

    #[test]
    fn a_listed_certificate_with_scopes_is_a_principal() {
        let cert = |name: &str, byte: u8, scopes: Vec<Scope>| AcceptCert {
            name: name.into(),
            fingerprint: hex::encode([byte; 32]),
            scopes,
            role: Default::default(),
        };
        let certs = [
            cert("ops-laptop", 1, vec![Scope::Admin]),
            cert("sync-only", 2, vec![]),
        ];
        let c = Credentials::load(&[], None, &certs, false).unwrap();
        assert!(!c.is_open(), "a certificate principal closes the API");
        let with = |byte: u8| {
            c.check(
                None,
                Some(ClientCert {
                    fingerprint: [byte; 32],
                }),
            )
        };
        assert_eq!(
            with(1),
            Check::Principal(Principal {
                name: "ops-laptop".into(),
                scope: Scope::Admin
            })
        );
        // Listed for sync only, or not listed: no API principal; a token is then needed.
        assert_eq!(with(2), Check::UnmappedCert);
        assert_eq!(with(3), Check::UnmappedCert);
        assert_eq!(c.check(None, None), Check::Missing);
    }

    #[test]
    fn a_required_client_certificate_without_principal_never_opens_the_api() {
        // require_client_cert, no tokens, the only listed certificate has no scopes: the
        // table is empty, yet nothing is open.
        let sync_only = AcceptCert {
            name: "sync-only".into(),
            fingerprint: hex::encode([2u8; 32]),
            scopes: vec![],
            role: Default::default(),
        };
        let c = Credentials::load(&[], None, &[sync_only], true).unwrap();
        assert!(!c.is_open());
        for byte in [2u8, 3] {
            let cert = Some(ClientCert {
                fingerprint: [byte; 32],
            });
            assert_eq!(c.check(None, cert), Check::UnmappedCert, "{byte}");
        }
        assert_eq!(c.check(Some("any-token-0123456789"), None), Check::BadToken);
        // Without the requirement the same table is an open (loopback) API.
        let open = Credentials::load(&[], None, &[], false).unwrap();
        assert_eq!(open.check(None, None), Check::Open);
    }

    #[test]
    fn bad_entries_are_refused_naming_the_key() {
        let short = token("x", "short", &[Scope::Read]);
        let e = short.validate("api.tokens[0]").unwrap_err().to_string();
        assert!(e.contains("api.tokens[0].token"), "{e}");
        let mut none = token("x", "long-enough-token-0123", &[Scope::Read]);
        none.scopes.clear();
        let e = none.validate("api.tokens[1]").unwrap_err().to_string();
        assert!(e.contains("api.tokens[1].scopes"), "{e}");
        let mut two = token("x", "long-enough-token-0123", &[Scope::Read]);
        two.token_sha256 = Some("00".repeat(32));
        let e = two.validate("api.tokens[2]").unwrap_err().to_string();
        assert!(e.contains("api.tokens[2]"), "{e}");
        let missing = ApiToken {
            token: None,
            token_file: Some("/nonexistent/kdelta.token".into()),
            ..token("x", "", &[Scope::Read])
        };
        let e = Credentials::load(&[missing], None, &[], false)
            .err()
            .unwrap()
            .to_string();
        assert!(e.starts_with("api.tokens[0].token_file"), "{e}");
    }
}

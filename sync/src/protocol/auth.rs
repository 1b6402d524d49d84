//! Who may sync with this store: the responder's [`Authenticator`], checked once per session
//! against the initiator's `Hello`. Owns constant-time token comparison; knows nothing of
//! TLS (a transport that authenticated a client certificate can pass a closure that accepts
//! on its own terms).

use std::fmt;

use subtle::ConstantTimeEq;

use crate::ActorId;

/// What an accepted credential may send (see `docs/security.md`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PeerRole {
    /// May originate only its own actor's changes; the credential is bound to the first
    /// actor that uses it ([`Store::bind_credential`](crate::Store::bind_credential)).
    Device,
    /// May relay changes of any actor (another hub, a device that also syncs with others).
    Hub,
}

impl PeerRole {
    /// `device` or `hub`.
    pub fn as_str(self) -> &'static str {
        match self {
            PeerRole::Device => "device",
            PeerRole::Hub => "hub",
        }
    }
}

/// A `device` credential as a session holds it once the handshake bound it: its name, the
/// actor it is bound to, and the actors it was bound to before (a device's actors before it
/// rebased its clock), whose remaining changes it may still send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceOrigin {
    /// The credential's configured name.
    pub principal: String,
    /// The actor it is bound to.
    pub bound: ActorId,
    /// The actors it was bound to before, oldest first.
    pub predecessors: Vec<ActorId>,
}

impl DeviceOrigin {
    /// Whether the credential may send `actor`'s changes.
    pub fn may_send(&self, actor: &ActorId) -> bool {
        *actor == self.bound || self.predecessors.contains(actor)
    }

    /// Every actor whose changes it may send: the bound one first.
    pub fn actors(&self) -> Vec<ActorId> {
        std::iter::once(self.bound)
            .chain(self.predecessors.iter().copied())
            .collect()
    }
}

/// What the initiator presented in its `Hello`.
#[derive(Clone, Copy)]
pub struct PeerCredentials<'a> {
    /// The initiator's actor id (self-declared: not a credential).
    pub actor: ActorId,
    /// Its self-declared name.
    pub peer_name: &'a str,
    /// Its bearer token, if it sent one.
    pub token: Option<&'a str>,
}

impl fmt::Debug for PeerCredentials<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PeerCredentials")
            .field("actor", &self.actor)
            .field("peer_name", &self.peer_name)
            .field("token", &self.token.map(|_| "<redacted>"))
            .finish()
    }
}

/// Decides whether an initiator may sync. Returns the principal (the name the peer is known
/// by in logs and status, e.g. the token's configured name) or `None` to refuse with
/// [`ProtocolError::Unauthorized`](super::ProtocolError::Unauthorized).
///
/// Closures implement it, so a transport that already verified the peer (mutual TLS) can
/// pass `|_| Some(subject.clone())`.
pub trait Authenticator: Send + Sync {
    /// Checks the credentials; must not block.
    fn authenticate(&self, peer: &PeerCredentials<'_>) -> Option<String>;
}

impl<F> Authenticator for F
where
    F: Fn(&PeerCredentials<'_>) -> Option<String> + Send + Sync,
{
    fn authenticate(&self, peer: &PeerCredentials<'_>) -> Option<String> {
        self(peer)
    }
}

/// Accepts peers presenting one of a set of bearer tokens.
///
/// Tokens are kept as SHA-256 digests (so a configuration may give the digest instead of the
/// token: [`TokenAuthenticator::add_sha256`]) and compared with [`subtle::ConstantTimeEq`]
/// against every configured token, so neither the time taken nor an early exit tells an
/// attacker how much of a guess was right, or how long a token is.
#[derive(Clone, Default)]
pub struct TokenAuthenticator {
    /// `(principal, SHA-256 of the token)`.
    tokens: Vec<(String, [u8; 32])>,
}

impl TokenAuthenticator {
    /// An authenticator that refuses everyone until tokens are added.
    pub fn new() -> TokenAuthenticator {
        TokenAuthenticator::default()
    }

    /// Accepts `token`, naming peers that present it `principal`.
    pub fn with_token(mut self, principal: impl Into<String>, token: &str) -> TokenAuthenticator {
        self.add(principal, token);
        self
    }

    /// Accepts `token`, naming peers that present it `principal`.
    pub fn add(&mut self, principal: impl Into<String>, token: &str) {
        self.add_sha256(principal, sha256(token.as_bytes()));
    }

    /// Accepts the token whose SHA-256 digest is `digest` (`printf %s TOKEN | sha256sum`),
    /// naming peers that present it `principal`.
    pub fn add_sha256(&mut self, principal: impl Into<String>, digest: [u8; 32]) {
        self.tokens.push((principal.into(), digest));
    }

    /// Number of accepted tokens.
    pub fn len(&self) -> usize {
        self.tokens.len()
    }

    /// True when no token is accepted (every peer is refused).
    pub fn is_empty(&self) -> bool {
        self.tokens.is_empty()
    }
}

impl fmt::Debug for TokenAuthenticator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names: Vec<&str> = self.tokens.iter().map(|(n, _)| n.as_str()).collect();
        f.debug_struct("TokenAuthenticator")
            .field("principals", &names)
            .finish()
    }
}

impl Authenticator for TokenAuthenticator {
    fn authenticate(&self, peer: &PeerCredentials<'_>) -> Option<String> {
        let presented = sha256(peer.token?.as_bytes());
        let mut found = None;
        // No early exit: every configured token is compared.
        for (principal, hash) in &self.tokens {
            let equal: bool = hash.ct_eq(&presented).into();
            if equal && found.is_none() {
                found = Some(principal.clone());
            }
        }
        found
    }
}

fn sha256(bytes: &[u8]) -> [u8; 32] {
    use sha2::Digest;
    sha2::Sha256::digest(bytes).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn creds(token: Option<&str>) -> PeerCredentials<'_> {
        PeerCredentials {
            actor: ActorId([7; 16]),
            peer_name: "pi-1",
            token,
        }
    }

    #[test]
    fn tokens_are_matched_exactly() {
        let auth = TokenAuthenticator::new()
            .with_token("greenhouse", "s3cret")
            .with_token("barn", "other");
        assert_eq!(
            auth.authenticate(&creds(Some("s3cret"))).as_deref(),
            Some("greenhouse")
        );
        assert_eq!(
            auth.authenticate(&creds(Some("other"))).as_deref(),
            Some("barn")
        );
        assert_eq!(auth.authenticate(&creds(Some("s3cre"))), None);
        assert_eq!(auth.authenticate(&creds(Some(""))), None);
        assert_eq!(auth.authenticate(&creds(None)), None);
        assert_eq!(
            TokenAuthenticator::new().authenticate(&creds(Some("s3cret"))),
            None
        );
        assert!(!format!("{auth:?}").contains("s3cret"));
    }

    #[test]
    fn a_token_given_by_its_sha256_digest_is_accepted() {
        // printf %s s3cret | sha256sum
        let mut digest = [0u8; 32];
        hex::decode_to_slice(
            "1ec1c26b50d5d3c58d9583181af8076655fe00756bf7285940ba3670f99fcba0",
            &mut digest,
        )
        .unwrap();
        let mut auth = TokenAuthenticator::new();
        auth.add_sha256("hashed", digest);
        assert_eq!(
            auth.authenticate(&creds(Some("s3cret"))).as_deref(),
            Some("hashed")
        );
        assert_eq!(auth.authenticate(&creds(Some("s3cre"))), None);
    }

    #[test]
    fn closures_authenticate() {
        let allow = |p: &PeerCredentials<'_>| Some(p.peer_name.to_owned());
        assert_eq!(allow.authenticate(&creds(None)).as_deref(), Some("pi-1"));
    }
}

//! Client configurations (outbound `wss://` sync peers, `mqtts://` brokers) and handshake
//! errors turned into sentences that say what to fix.

use std::error::Error as StdError;
use std::path::Path;
use std::sync::Arc;

use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::rustls::{self, CertificateError, ClientConfig, RootCertStore};

use super::{TlsError, provider};

/// A client certificate chain and its key, for mutual TLS.
pub struct ClientAuth {
    /// The chain, end-entity certificate first.
    pub certs: Vec<CertificateDer<'static>>,
    /// Its private key.
    pub key: PrivateKeyDer<'static>,
    /// The config key of the key file (named in errors).
    pub key_name: String,
}

impl ClientAuth {
    /// Reads a client certificate chain and its key, named in errors as `{key}.client_cert`
    /// and `{key}.client_key`; `None` unless both are given (config validation refuses one
    /// without the other).
    pub fn load(
        key: &str,
        cert: Option<&Path>,
        private_key: Option<&Path>,
    ) -> Result<Option<ClientAuth>, TlsError> {
        let (Some(cert), Some(private_key)) = (cert, private_key) else {
            return Ok(None);
        };
        Ok(Some(ClientAuth {
            certs: super::load_certs(&format!("{key}.client_cert"), cert)?,
            key: super::load_key(&format!("{key}.client_key"), private_key)?,
            key_name: format!("{key}.client_key"),
        }))
    }
}

/// A client config over ring that trusts `roots` and presents `auth` when the server asks
/// for a certificate.
pub fn client_config(
    roots: RootCertStore,
    auth: Option<ClientAuth>,
) -> Result<Arc<ClientConfig>, TlsError> {
    let builder = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Invalid {
            key: "tls".into(),
            detail: e.to_string(),
        })?
        .with_root_certificates(roots);
    let config = match auth {
        None => builder.with_no_client_auth(),
        Some(a) => {
            builder
                .with_client_auth_cert(a.certs, a.key)
                .map_err(|e| TlsError::Invalid {
                    key: a.key_name,
                    detail: format!("does not match the client certificate or is unusable: {e}"),
                })?
        }
    };
    Ok(Arc::new(config))
}

/// A sentence for a failed TLS handshake found anywhere in `err`'s chain (including inside
/// nested `io::Error`s), or `None` when the failure was not about TLS.
pub fn describe_handshake_error(err: &(dyn StdError + 'static)) -> Option<String> {
    find_rustls(err, 0).map(describe)
}

/// The rustls error in `e`'s chain. An `io::Error` hides its inner error from `source()`
/// (and HTTP stacks wrap io errors in io errors), so it is opened explicitly; `depth`
/// bounds the walk.
fn find_rustls<'a>(e: &'a (dyn StdError + 'static), depth: u8) -> Option<&'a rustls::Error> {
    if depth > 16 {
        return None;
    }
    if let Some(r) = e.downcast_ref::<rustls::Error>() {
        return Some(r);
    }
    if let Some(inner) = e
        .downcast_ref::<std::io::Error>()
        .and_then(std::io::Error::get_ref)
        && let Some(r) = find_rustls(inner, depth + 1)
    {
        return Some(r);
    }
    find_rustls(e.source()?, depth + 1)
}

fn describe(e: &rustls::Error) -> String {
    use CertificateError as C;
    let what = match e {
        rustls::Error::InvalidCertificate(c) => match c {
            C::UnknownIssuer => {
                "the server's certificate is not trusted (unknown issuer): configure the CA that signed it"
            }
            C::Expired | C::ExpiredContext { .. } => "the server's certificate has expired",
            C::NotValidYet | C::NotValidYetContext { .. } => {
                "the server's certificate is not valid yet (check this device's clock)"
            }
            C::NotValidForName | C::NotValidForNameContext { .. } => {
                "the server's certificate is not valid for the host name in the URL"
            }
            C::Revoked => "the server's certificate is revoked",
            _ => "the server's certificate was refused",
        },
        rustls::Error::AlertReceived(_) => {
            "the server refused the TLS handshake (a client certificate may be missing or not trusted by it)"
        }
        _ => "TLS handshake failed",
    };
    format!("TLS: {what} ({e})")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_rustls_errors_inside_io_errors() {
        let inner = rustls::Error::InvalidCertificate(CertificateError::UnknownIssuer);
        let io = std::io::Error::new(std::io::ErrorKind::InvalidData, inner);
        let text = describe_handshake_error(&io).unwrap();
        assert!(text.contains("not trusted"), "{text}");
        // As hyper-rustls hands it on: an io::Error around tokio-rustls's io::Error.
        let nested = std::io::Error::other(io);
        assert!(describe_handshake_error(&nested).is_some());
        let plain = std::io::Error::from(std::io::ErrorKind::ConnectionRefused);
        assert_eq!(describe_handshake_error(&plain), None);
    }
}

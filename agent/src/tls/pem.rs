//! PEM files and trust anchors: certificate chains, private keys, root stores from a CA file
//! or the system store, and the ring provider every config is built with. Files are read
//! whole but bounded ([`MAX_PEM_BYTES`]), so a wrong path (a device, a huge file) cannot
//! exhaust memory.

use std::io::Read;
use std::path::Path;
use std::sync::Arc;

use tokio_rustls::rustls::RootCertStore;
use tokio_rustls::rustls::crypto::{CryptoProvider, ring};
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};

use super::TlsError;

/// Largest PEM file read (a CA bundle of a few hundred certificates fits).
pub const MAX_PEM_BYTES: u64 = 1 << 20;

/// The crypto provider of every TLS config in the agent.
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(ring::default_provider())
}

fn read(key: &str, path: &Path) -> Result<Vec<u8>, TlsError> {
    let err = |detail: String| TlsError::Read {
        key: key.to_owned(),
        path: path.to_path_buf(),
        detail,
    };
    let file = std::fs::File::open(path).map_err(|e| err(e.to_string()))?;
    let mut bytes = Vec::new();
    file.take(MAX_PEM_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| err(e.to_string()))?;
    if bytes.len() as u64 > MAX_PEM_BYTES {
        return Err(err(format!(
            "larger than {MAX_PEM_BYTES} bytes: not a PEM file"
        )));
    }
    Ok(bytes)
}

fn content(key: &str, path: &Path, detail: String) -> TlsError {
    TlsError::Content {
        key: key.to_owned(),
        path: path.to_path_buf(),
        detail,
    }
}

/// Every certificate in the PEM file at `path` (a chain: the end-entity certificate first).
pub fn load_certs(key: &str, path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let bytes = read(key, path)?;
    let certs = CertificateDer::pem_slice_iter(&bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| content(key, path, format!("is not valid PEM: {e}")))?;
    if certs.is_empty() {
        return Err(content(
            key,
            path,
            "holds no certificate (expected -----BEGIN CERTIFICATE-----)".into(),
        ));
    }
    Ok(certs)
}

/// The first private key in the PEM file at `path` (PKCS#8, PKCS#1 or SEC1).
pub fn load_key(key: &str, path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    let bytes = read(key, path)?;
    PrivateKeyDer::from_pem_slice(&bytes).map_err(|e| {
        content(
            key,
            path,
            format!("holds no usable private key (PKCS#8, PKCS#1 or SEC1 PEM): {e}"),
        )
    })
}

/// A root store holding every certificate of the PEM file at `path` as a trust anchor.
pub fn load_roots(key: &str, path: &Path) -> Result<RootCertStore, TlsError> {
    let mut roots = RootCertStore::empty();
    for cert in load_certs(key, path)? {
        roots
            .add(cert)
            .map_err(|e| content(key, path, format!("holds an unusable CA certificate: {e}")))?;
    }
    Ok(roots)
}

/// Roots from the CA file `ca` (config key `key`), or the system's when `ca` is `None`.
pub fn roots(key: &str, ca: Option<&Path>) -> Result<RootCertStore, TlsError> {
    if let Some(path) = ca {
        return load_roots(key, path);
    }
    let mut roots = RootCertStore::empty();
    let found = rustls_native_certs::load_native_certs();
    let (added, _) = roots.add_parsable_certificates(found.certs);
    if added == 0 {
        return Err(TlsError::NoSystemRoots {
            key: key.to_owned(),
        });
    }
    Ok(roots)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_name_the_key_and_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("missing.pem");
        let e = load_certs("api.tls.cert", &missing)
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("api.tls.cert: cannot read") && e.contains("missing.pem"),
            "{e}"
        );

        let empty = dir.path().join("empty.pem");
        std::fs::write(&empty, "not pem at all\n").unwrap();
        let e = load_certs("api.tls.cert", &empty).unwrap_err().to_string();
        assert!(e.contains("holds no certificate"), "{e}");
        let e = load_key("api.tls.key", &empty).unwrap_err().to_string();
        assert!(
            e.starts_with("api.tls.key:") && e.contains("no usable private key"),
            "{e}"
        );

        let big = dir.path().join("big.pem");
        std::fs::write(&big, vec![b'a'; MAX_PEM_BYTES as usize + 1]).unwrap();
        let e = load_roots("sync.peers[0].ca", &big)
            .unwrap_err()
            .to_string();
        assert!(e.contains("larger than"), "{e}");
    }
}

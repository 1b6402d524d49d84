//! Token secrets shared by `[api] tokens` (`access::auth`) and `[sync] accept_tokens`
//! (`peers`): SHA-256 digests, digests written as hex, and token files. A leaf: knows nothing
//! of who accepts the tokens.

use std::path::{Path, PathBuf};

/// A `token_file` that is missing, unreadable or holds too short a token.
#[derive(Debug, thiserror::Error)]
#[error("{key}: cannot use {}: {detail}", path.display())]
pub struct TokenFileError {
    /// Dotted key, e.g. `api.tokens[0].token_file`.
    pub key: String,
    /// The file.
    pub path: PathBuf,
    /// The I/O error or what is wrong with the content.
    pub detail: String,
}

/// The token in `path` (its first line, trimmed), at least `min` characters; `key` names
/// the setting in errors.
pub fn read_token_file(key: &str, path: &Path, min: usize) -> Result<String, TokenFileError> {
    let fail = |detail: String| TokenFileError {
        key: key.to_owned(),
        path: path.to_path_buf(),
        detail,
    };
    let text = std::fs::read_to_string(path).map_err(|e| fail(e.to_string()))?;
    let token = text.lines().next().unwrap_or("").trim();
    if token.chars().count() < min {
        return Err(fail(format!("the token is shorter than {min} characters")));
    }
    Ok(token.to_owned())
}

/// SHA-256 of `bytes`.
pub fn sha256(bytes: &[u8]) -> [u8; 32] {
    let d = ring::digest::digest(&ring::digest::SHA256, bytes);
    let mut out = [0u8; 32];
    out.copy_from_slice(d.as_ref());
    out
}

/// 64 hex digits (surrounding whitespace ignored) as a SHA-256 digest.
pub fn parse_digest(hex_digits: &str) -> Option<[u8; 32]> {
    let mut out = [0u8; 32];
    hex::decode_to_slice(hex_digits.trim(), &mut out).ok()?;
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_files_give_their_first_line_and_refuse_short_ones() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("t");
        std::fs::write(&file, "  long-enough-token \nsecond line\n").unwrap();
        assert_eq!(read_token_file("k", &file, 8).unwrap(), "long-enough-token");
        let e = read_token_file("sync.accept_tokens[0].token_file", &file, 64)
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("sync.accept_tokens[0].token_file"), "{e}");
        assert_eq!(parse_digest(&hex::encode(sha256(b"x"))), Some(sha256(b"x")));
        assert_eq!(parse_digest("abc"), None);
    }
}

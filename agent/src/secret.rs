//! Token secrets shared by `[api] tokens` (`access::auth`) and `[sync] accept_tokens`
//! (`peers`): where a configured token comes from (clear text, a SHA-256 digest or a file),
//! SHA-256 digests, digests written as hex, and token files. A leaf: knows nothing of who
//! accepts the tokens.

use std::path::{Path, PathBuf};

use crate::section::{InvalidValue, refuse};

/// The three ways a config entry gives a token, of which exactly one must be used:
/// `token` (clear text), `token_sha256` (its digest, so the file holds no secret) or
/// `token_file` (read at start and at reload).
#[derive(Debug, Clone, Copy)]
pub struct TokenSource<'a> {
    /// The clear-text token, as it will be compared.
    pub token: Option<&'a str>,
    /// 64 hex digits.
    pub token_sha256: Option<&'a str>,
    /// A file whose first line is the token.
    pub token_file: Option<&'a Path>,
}

/// How long a configured token may be.
#[derive(Debug, Clone, Copy)]
pub struct TokenLength {
    /// Fewest characters: guessing must be hopeless, not merely slow.
    pub min_chars: usize,
    /// Most bytes of a clear-text token.
    pub max_bytes: usize,
}

impl TokenSource<'_> {
    /// Checks the entry at `key` (`api.tokens[0]`): exactly one source, a clear token of the
    /// allowed length, a digest of 64 hex digits, a file name that is not empty. Errors name
    /// the offending key.
    pub fn validate(&self, key: &str, length: TokenLength) -> Result<(), InvalidValue> {
        let given = [
            self.token.is_some(),
            self.token_sha256.is_some(),
            self.token_file.is_some(),
        ];
        if given.iter().filter(|g| **g).count() != 1 {
            return refuse(key, "give exactly one of token, token_sha256 or token_file");
        }
        if let Some(t) = self.token {
            if t.chars().count() < length.min_chars {
                return refuse(
                    format!("{key}.token"),
                    format!(
                        "is too short; use at least {} random characters (e.g. `openssl rand -hex 32`)",
                        length.min_chars
                    ),
                );
            }
            if t.len() > length.max_bytes {
                return refuse(
                    format!("{key}.token"),
                    format!("is too long; use at most {} bytes", length.max_bytes),
                );
            }
        }
        if let Some(h) = self.token_sha256
            && parse_digest(h).is_none()
        {
            return refuse(
                format!("{key}.token_sha256"),
                "is not a SHA-256 digest: use 64 hex digits (`printf %s TOKEN | sha256sum`)",
            );
        }
        if self.token_file.is_some_and(|p| p.as_os_str().is_empty()) {
            return refuse(format!("{key}.token_file"), "must name a file");
        }
        Ok(())
    }

    /// The SHA-256 digest of the token of the entry at `key`, reading `token_file` (whose
    /// token must have at least `min_chars` characters).
    pub fn digest(&self, key: &str, min_chars: usize) -> Result<[u8; 32], TokenFileError> {
        if let Some(t) = self.token {
            Ok(sha256(t.as_bytes()))
        } else if let Some(hex) = self.token_sha256 {
            parse_digest(hex).ok_or_else(|| TokenFileError {
                key: format!("{key}.token_sha256"),
                path: PathBuf::new(),
                detail: "not 64 hex digits".into(),
            })
        } else if let Some(path) = self.token_file {
            let key = format!("{key}.token_file");
            Ok(sha256(read_token_file(&key, path, min_chars)?.as_bytes()))
        } else {
            Err(TokenFileError {
                key: key.to_owned(),
                path: PathBuf::new(),
                detail: "no token, token_sha256 or token_file given".into(),
            })
        }
    }
}

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

    #[test]
    fn a_token_source_gives_exactly_one_token_of_the_allowed_length() {
        let length = TokenLength {
            min_chars: 8,
            max_bytes: 16,
        };
        let none = TokenSource {
            token: None,
            token_sha256: None,
            token_file: None,
        };
        let refused = |src: TokenSource<'_>| src.validate("api.tokens[2]", length).unwrap_err();
        let e = refused(none);
        assert_eq!(e.key, "api.tokens[2]");
        assert!(e.to_string().contains("exactly one"), "{e}");
        let both = TokenSource {
            token: Some("long-enough"),
            token_sha256: Some(&"0".repeat(64)),
            ..none
        };
        assert!(refused(both).to_string().contains("exactly one"));
        let short = TokenSource {
            token: Some("short"),
            ..none
        };
        assert_eq!(refused(short).key, "api.tokens[2].token");
        let long = TokenSource {
            token: Some("seventeen-bytes!!"),
            ..none
        };
        assert!(refused(long).to_string().contains("at most 16 bytes"));
        let bad_hex = TokenSource {
            token_sha256: Some("abc"),
            ..none
        };
        assert_eq!(refused(bad_hex).key, "api.tokens[2].token_sha256");
        let empty_file = TokenSource {
            token_file: Some(Path::new("")),
            ..none
        };
        assert_eq!(refused(empty_file).key, "api.tokens[2].token_file");

        // Every source of the same token gives the same digest.
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("t");
        std::fs::write(&file, "same-token\n").unwrap();
        let hex = hex::encode(sha256(b"same-token"));
        let sources = [
            TokenSource {
                token: Some("same-token"),
                ..none
            },
            TokenSource {
                token_sha256: Some(&hex),
                ..none
            },
            TokenSource {
                token_file: Some(&file),
                ..none
            },
        ];
        for src in sources {
            src.validate("k", length).unwrap();
            assert_eq!(src.digest("k", 8).unwrap(), sha256(b"same-token"));
        }
        let missing = TokenSource {
            token_file: Some(Path::new("/nonexistent/token")),
            ..none
        };
        let e = missing.digest("sync.accept_tokens[0]", 8).unwrap_err();
        assert_eq!(e.key, "sync.accept_tokens[0].token_file");
    }
}

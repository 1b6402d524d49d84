//! The backup file's layout and header. Reading treats the file as hostile: the header
//! length is bounded before anything is allocated, and every field is checked by serde.

use std::io::{Read, Write};
use std::path::Path;

use serde::{Deserialize, Serialize};

use super::BackupError;
use crate::{ActorId, VersionVector};

/// The first bytes of every backup file.
pub const MAGIC: &[u8; 8] = b"KDELTAbk";

/// The layout this build writes and reads.
pub const FORMAT_VERSION: u32 = 1;

/// Largest header accepted (a version vector of ~300k actors).
const MAX_HEADER_BYTES: u32 = 16 << 20;

/// What a backup holds, written before the compressed database.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BackupHeader {
    /// When the snapshot was taken, unix ms (wall clock of the backed-up agent).
    pub created_at_ms: u64,
    /// The kdelta-sync version that wrote it.
    pub kdelta_version: String,
    /// Schema version of the database inside.
    pub schema_version: i64,
    /// The backed-up store's actor id.
    pub actor: ActorId,
    /// What the snapshot holds.
    pub version_vector: VersionVector,
    /// The store's digest at that version vector (hex).
    pub digest: String,
    /// Changes in the snapshot's log.
    pub changes: u64,
    /// Size of the database file inside, bytes.
    pub db_bytes: u64,
    /// BLAKE3 of the database file inside (hex).
    pub db_blake3: String,
}

impl BackupHeader {
    /// Writes the signature, the format and the header.
    pub(crate) fn write_to(&self, out: &mut impl Write) -> std::io::Result<()> {
        let json = serde_json::to_vec(self).map_err(std::io::Error::other)?;
        out.write_all(MAGIC)?;
        out.write_all(&FORMAT_VERSION.to_le_bytes())?;
        out.write_all(&(json.len() as u32).to_le_bytes())?;
        out.write_all(&json)
    }
}

/// Reads and checks the signature, format and header of the backup `input` (named `path` in
/// errors); leaves `input` at the first byte of the compressed database.
pub fn read_header(input: &mut impl Read, path: &Path) -> Result<BackupHeader, BackupError> {
    let mut fixed = [0u8; 16];
    let got = read_full(input, &mut fixed).map_err(BackupError::io(path))?;
    if got < MAGIC.len() || &fixed[..8] != MAGIC {
        return Err(BackupError::NotABackup {
            path: path.to_path_buf(),
        });
    }
    if got < fixed.len() {
        return Err(BackupError::Truncated {
            path: path.to_path_buf(),
            detail: format!("it ends inside the header ({got} bytes)"),
        });
    }
    let format = u32::from_le_bytes(fixed[8..12].try_into().expect("4 bytes"));
    if format != FORMAT_VERSION {
        return Err(BackupError::UnsupportedFormat {
            path: path.to_path_buf(),
            found: format,
            supported: FORMAT_VERSION,
        });
    }
    let len = u32::from_le_bytes(fixed[12..16].try_into().expect("4 bytes"));
    if len == 0 || len > MAX_HEADER_BYTES {
        return Err(BackupError::BadHeader {
            path: path.to_path_buf(),
            detail: format!("header length {len} is outside 1..={MAX_HEADER_BYTES}"),
        });
    }
    let mut json = vec![0u8; len as usize];
    let got = read_full(input, &mut json).map_err(BackupError::io(path))?;
    if got < json.len() {
        return Err(BackupError::Truncated {
            path: path.to_path_buf(),
            detail: format!("it ends inside the header ({got} of {len} bytes)"),
        });
    }
    serde_json::from_slice(&json).map_err(|e| BackupError::BadHeader {
        path: path.to_path_buf(),
        detail: e.to_string(),
    })
}

/// Reads until `buf` is full or the input ends; returns the bytes read.
fn read_full(input: &mut impl Read, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match input.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header() -> BackupHeader {
        let mut vv = VersionVector::new();
        vv.set(ActorId::random(), 7);
        BackupHeader {
            created_at_ms: 1_764_000_000_000,
            kdelta_version: "0.1.0".into(),
            schema_version: 2,
            actor: ActorId::random(),
            version_vector: vv,
            digest: "00".repeat(32),
            changes: 7,
            db_bytes: 4096,
            db_blake3: "11".repeat(32),
        }
    }

    #[test]
    fn header_round_trips() {
        let h = header();
        let mut bytes = Vec::new();
        h.write_to(&mut bytes).unwrap();
        bytes.extend_from_slice(b"rest");
        let mut input = bytes.as_slice();
        assert_eq!(read_header(&mut input, Path::new("x")).unwrap(), h);
        assert_eq!(input, b"rest");
    }

    #[test]
    fn foreign_short_and_oversized_inputs_are_refused() {
        let p = Path::new("f");
        let sqlite = b"SQLite format 3\0 and more bytes";
        assert!(matches!(
            read_header(&mut sqlite.as_slice(), p),
            Err(BackupError::NotABackup { .. })
        ));
        assert!(matches!(
            read_header(&mut &b""[..], p),
            Err(BackupError::NotABackup { .. })
        ));
        let mut big = MAGIC.to_vec();
        big.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
        big.extend_from_slice(&u32::MAX.to_le_bytes());
        assert!(matches!(
            read_header(&mut big.as_slice(), p),
            Err(BackupError::BadHeader { .. })
        ));
        let mut newer = MAGIC.to_vec();
        newer.extend_from_slice(&9u32.to_le_bytes());
        newer.extend_from_slice(&4u32.to_le_bytes());
        assert!(matches!(
            read_header(&mut newer.as_slice(), p),
            Err(BackupError::UnsupportedFormat { found: 9, .. })
        ));
        let mut bytes = Vec::new();
        header().write_to(&mut bytes).unwrap();
        for cut in [10, 20, bytes.len() - 1] {
            let err = read_header(&mut &bytes[..cut], p).unwrap_err();
            assert!(
                matches!(err, BackupError::Truncated { .. }),
                "cut at {cut}: {err:?}"
            );
        }
    }
}

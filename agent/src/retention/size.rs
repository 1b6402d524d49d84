//! A disk size as the `[retention]` budget keys take it: bytes with a unit (`"500MB"`,
//! `"2GiB"`, a plain integer of bytes) or a share of the file system holding the data
//! directory (`"10%"`). Parsing only; what a share comes to is decided when the budget is
//! measured (the file system may be resized).

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// `"2GiB"`, `"500MB"`, `1048576` or `"10%"`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum DiskSize {
    /// A fixed number of bytes.
    Bytes(u64),
    /// A percentage (0 < p ≤ 100) of the file system holding the data directory.
    Percent(f64),
}

/// Decimal and binary units, longest first so `MiB` is not read as `B`.
const UNITS: &[(&str, u64)] = &[
    ("KiB", 1 << 10),
    ("MiB", 1 << 20),
    ("GiB", 1 << 30),
    ("TiB", 1 << 40),
    ("kB", 1_000),
    ("KB", 1_000),
    ("MB", 1_000_000),
    ("GB", 1_000_000_000),
    ("TB", 1_000_000_000_000),
    ("B", 1),
];

impl DiskSize {
    /// Parses `text`; the error says what forms are accepted.
    pub fn parse(text: &str) -> Result<DiskSize, String> {
        let t = text.trim();
        let explain = || {
            format!(
                "{text:?} is not a disk size: use bytes with a unit (\"500MB\", \"2GiB\"; units B, kB, MB, GB, TB, KiB, MiB, GiB, TiB) or a share of the file system (\"10%\")"
            )
        };
        if let Some(p) = t.strip_suffix('%') {
            let p: f64 = p.trim().parse().map_err(|_| explain())?;
            if !(p > 0.0 && p <= 100.0) {
                return Err(format!(
                    "{text:?}: a share must be above 0% and at most 100%"
                ));
            }
            return Ok(DiskSize::Percent(p));
        }
        let (number, factor) = UNITS
            .iter()
            .find_map(|(u, f)| t.strip_suffix(u).map(|n| (n.trim(), *f)))
            .unwrap_or((t, 1));
        let value: f64 = number.parse().map_err(|_| explain())?;
        if !value.is_finite() || value < 0.0 {
            return Err(explain());
        }
        let bytes = value * factor as f64;
        if bytes >= u64::MAX as f64 {
            return Err(format!("{text:?} is too large"));
        }
        Ok(DiskSize::Bytes(bytes.round() as u64))
    }

    /// The size in bytes on a file system of `fs_total` bytes.
    pub fn bytes_of(self, fs_total: u64) -> u64 {
        match self {
            DiskSize::Bytes(b) => b,
            DiskSize::Percent(p) => (fs_total as f64 * p / 100.0) as u64,
        }
    }
}

/// `1536` → `1.5 KiB`.
pub fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = n as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

impl std::fmt::Display for DiskSize {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DiskSize::Bytes(b) => write!(f, "{b}B"),
            DiskSize::Percent(p) => write!(f, "{p}%"),
        }
    }
}

impl Serialize for DiskSize {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_string())
    }
}

impl<'de> Deserialize<'de> for DiskSize {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl serde::de::Visitor<'_> for Visitor {
            type Value = DiskSize;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a disk size such as \"500MB\", \"2GiB\" or \"10%\"")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<DiskSize, E> {
                DiskSize::parse(v).map_err(E::custom)
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<DiskSize, E> {
                Ok(DiskSize::Bytes(v))
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<DiskSize, E> {
                u64::try_from(v)
                    .map(DiskSize::Bytes)
                    .map_err(|_| E::custom(format!("{v} is not a disk size: negative")))
            }
        }
        d.deserialize_any(Visitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn units_shares_and_plain_bytes() {
        assert_eq!(DiskSize::parse("2GiB"), Ok(DiskSize::Bytes(2 << 30)));
        assert_eq!(DiskSize::parse("500MB"), Ok(DiskSize::Bytes(500_000_000)));
        assert_eq!(DiskSize::parse("1.5 KiB"), Ok(DiskSize::Bytes(1536)));
        assert_eq!(DiskSize::parse("4096"), Ok(DiskSize::Bytes(4096)));
        assert_eq!(DiskSize::parse("10B"), Ok(DiskSize::Bytes(10)));
        assert_eq!(DiskSize::parse("10%"), Ok(DiskSize::Percent(10.0)));
        assert_eq!(DiskSize::Percent(10.0).bytes_of(1000), 100);
        assert_eq!(DiskSize::Bytes(7).bytes_of(1000), 7);
        for bad in [
            "",
            "lots",
            "-5MB",
            "10 parsecs",
            "0%",
            "101%",
            "1e30TB",
            "NaN",
        ] {
            assert!(DiskSize::parse(bad).is_err(), "{bad:?} accepted");
        }
        assert!(DiskSize::parse("big").unwrap_err().contains("\"10%\""));
        let round = DiskSize::parse(&DiskSize::Bytes(123).to_string()).unwrap();
        assert_eq!(round, DiskSize::Bytes(123));
    }
}

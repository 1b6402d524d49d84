//! The `[store]` section as the agent reads it ([`StoreSection`]): which backend the agent
//! runs on (`backend`, `url`) next to the embedded store's own settings (the keys of
//! [`kdelta_sync::StoreConfig`], where they always were), and
//! its `validate()`. The PostgreSQL URL's password is a secret: messages here never show the
//! URL, and [`redact_url`] hides it wherever a configuration is printed.

use kdelta_sync::{Limits, StoreConfig};
use serde::{Deserialize, Serialize};

use crate::section::{InvalidValue, refuse};

/// Which store an agent runs on (`[store] backend`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BackendKind {
    /// The embedded SQLite store in `data_dir` (every device; a single-machine hub).
    #[default]
    Sqlite,
    /// A hub replica on PostgreSQL (`url`): any number of replicas share one database
    /// (docs/hub.md). Needs the cargo feature `postgres`.
    Postgres,
}

impl BackendKind {
    /// The name in config files, status and log lines.
    pub fn as_str(self) -> &'static str {
        match self {
            BackendKind::Sqlite => "sqlite",
            BackendKind::Postgres => "postgres",
        }
    }
}

/// `[store]`: the backend and the embedded store's settings (whose size limits and clock
/// offset apply to the PostgreSQL backend too). The settings are listed here as plain fields
/// and only [`Limits`] is flattened, the shape [`StoreConfig`] itself has: serde cannot nest
/// a flatten inside a flatten when both levels deny unknown keys (every key would be
/// "unknown"). [`StoreSection::settings`] builds the store's [`StoreConfig`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StoreSection {
    /// `"sqlite"` (default) or `"postgres"`.
    pub backend: BackendKind,
    /// The PostgreSQL database of `backend = "postgres"`:
    /// `postgres://user:password@host:port/database?sslmode=verify-full&sslrootcert=…`.
    /// Required with that backend, refused with the other. A secret (its password).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// Size limits for batches, values and changes (`max_batch_readings`, …).
    #[serde(flatten)]
    pub limits: Limits,
    /// See [`StoreConfig::max_clock_offset_ms`].
    pub max_clock_offset_ms: u64,
    /// See [`StoreConfig::busy_timeout_ms`].
    pub busy_timeout_ms: u64,
    /// See [`StoreConfig::read_connections`].
    pub read_connections: u32,
    /// See [`StoreConfig::max_group_jobs`].
    pub max_group_jobs: usize,
    /// See [`StoreConfig::write_queue`].
    pub write_queue: usize,
    /// See [`StoreConfig::require_signatures`].
    pub require_signatures: bool,
}

impl Default for StoreSection {
    fn default() -> Self {
        StoreSection::sqlite(StoreConfig::default())
    }
}

impl StoreSection {
    /// A SQLite `[store]` with `settings`.
    pub fn sqlite(settings: StoreConfig) -> StoreSection {
        // Destructured so that a new store setting fails to compile until it is listed here.
        let StoreConfig {
            limits,
            max_clock_offset_ms,
            busy_timeout_ms,
            read_connections,
            max_group_jobs,
            write_queue,
            require_signatures,
        } = settings;
        StoreSection {
            backend: BackendKind::Sqlite,
            url: None,
            limits,
            max_clock_offset_ms,
            busy_timeout_ms,
            read_connections,
            max_group_jobs,
            write_queue,
            require_signatures,
        }
    }

    /// The store's settings (both backends read their limits and clock offset from them).
    pub fn settings(&self) -> StoreConfig {
        StoreConfig {
            limits: self.limits.clone(),
            max_clock_offset_ms: self.max_clock_offset_ms,
            busy_timeout_ms: self.busy_timeout_ms,
            read_connections: self.read_connections,
            max_group_jobs: self.max_group_jobs,
            write_queue: self.write_queue,
            require_signatures: self.require_signatures,
        }
    }
}

/// The message for a build without the cargo feature `postgres` (the Pi's).
pub const NOT_BUILT_IN: &str = "this kdelta was built without PostgreSQL support (cargo feature `postgres`; the Raspberry Pi builds leave it out): run PostgreSQL hub replicas with an x86_64 build, or use backend = \"sqlite\"";

impl StoreSection {
    /// Checks `backend` and `url` (the settings are checked by the caller, which knows the
    /// keys they span). Never shows the URL (it may hold a password).
    pub fn validate(&self) -> Result<(), InvalidValue> {
        match (self.backend, self.url.as_deref()) {
            (BackendKind::Sqlite, None) => Ok(()),
            (BackendKind::Sqlite, Some(_)) => refuse(
                "store.url",
                "is only used with backend = \"postgres\"; remove it, or set store.backend = \"postgres\"",
            ),
            (BackendKind::Postgres, None) => refuse(
                "store.url",
                "backend = \"postgres\" needs url = \"postgres://user:password@host:5432/database\"",
            ),
            (BackendKind::Postgres, Some(url)) => {
                if !cfg!(feature = "postgres") {
                    return refuse("store.backend", NOT_BUILT_IN);
                }
                if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) {
                    return refuse(
                        "store.url",
                        "must start with postgres:// or postgresql:// (the URL is not shown: it may hold a password)",
                    );
                }
                Ok(())
            }
        }
    }
}

/// `url` with its password (`user:PASSWORD@`, `password=` in the query) replaced by
/// `replacement`. Anything that is not a URL with those parts is returned unchanged.
pub fn redact_url(url: &str, replacement: &str) -> String {
    let mut out = url.to_owned();
    if let Some(scheme_end) = out.find("://") {
        let rest = scheme_end + 3;
        let authority_end = out[rest..]
            .find(['/', '?', '#'])
            .map_or(out.len(), |i| rest + i);
        if let Some(at) = out[rest..authority_end].rfind('@') {
            let userinfo = rest..rest + at;
            if let Some(colon) = out[userinfo.clone()].find(':') {
                out.replace_range(rest + colon + 1..rest + at, replacement);
            }
        }
    }
    if let Some(q) = out.find('?') {
        let (head, query) = out.split_at(q + 1);
        let query = query
            .split('&')
            .map(|pair| match pair.split_once('=') {
                Some((k, _)) if k.eq_ignore_ascii_case("password") => format!("{k}={replacement}"),
                _ => pair.to_owned(),
            })
            .collect::<Vec<_>>()
            .join("&");
        out = format!("{head}{query}");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<StoreSection, toml::de::Error> {
        toml::from_str(text)
    }

    #[test]
    fn backend_and_url_next_to_the_store_settings() {
        let s = parse("busy_timeout_ms = 7\nmax_batch_readings = 9\n").unwrap();
        assert_eq!(s.backend, BackendKind::Sqlite);
        assert_eq!((s.busy_timeout_ms, s.limits.max_batch_readings), (7, 9));
        assert_eq!(s.settings().busy_timeout_ms, 7);
        assert_eq!(s.settings().limits.max_batch_readings, 9);
        assert_eq!(StoreSection::sqlite(s.settings()), s);
        assert_eq!(StoreSection::default().settings(), StoreConfig::default());
        assert_eq!(s.validate(), Ok(()));
        let s = parse("backend = \"postgres\"\nurl = \"postgres://k:pw@db/hub\"\n").unwrap();
        assert_eq!(s.backend, BackendKind::Postgres);
        assert!(parse("backend = \"mysql\"\n").is_err());
        assert!(parse("uri = \"postgres://db/hub\"\n").is_err());
    }

    #[test]
    fn validate_names_the_key_and_never_the_url() {
        let pg = |url: Option<&str>| StoreSection {
            backend: BackendKind::Postgres,
            url: url.map(str::to_owned),
            ..StoreSection::default()
        };
        let err = pg(None).validate().unwrap_err();
        assert_eq!(err.key, "store.url");
        assert!(err.detail.contains("postgres://"), "{}", err.detail);
        let err = pg(Some("mysql://u:secret-pw@db/x")).validate().unwrap_err();
        if cfg!(feature = "postgres") {
            assert_eq!(err.key, "store.url");
        } else {
            assert_eq!(err.key, "store.backend");
            assert!(
                err.detail
                    .starts_with("this kdelta was built without PostgreSQL support")
            );
        }
        assert!(!err.detail.contains("secret-pw"), "{}", err.detail);
        let sqlite_with_url = StoreSection {
            url: Some("postgres://db/x".into()),
            ..StoreSection::default()
        };
        assert_eq!(sqlite_with_url.validate().unwrap_err().key, "store.url");
        assert_eq!(
            pg(Some("postgres://db/x")).validate().is_ok(),
            cfg!(feature = "postgres")
        );
    }

    #[test]
    fn redact_url_hides_every_password() {
        let r = |u: &str| redact_url(u, "<redacted>");
        assert_eq!(
            r("postgres://kdelta:s3cr%40t@db.lan:5432/hub?sslmode=verify-full"),
            "postgres://kdelta:<redacted>@db.lan:5432/hub?sslmode=verify-full"
        );
        assert_eq!(
            r("postgres://kdelta@db/hub?sslmode=require&password=pw2&application_name=x"),
            "postgres://kdelta@db/hub?sslmode=require&password=<redacted>&application_name=x"
        );
        assert_eq!(r("postgres://db/hub"), "postgres://db/hub");
        assert_eq!(
            r("postgres://u:p@w@db/hub"),
            "postgres://u:<redacted>@db/hub"
        );
        assert_eq!(r("not a url"), "not a url");
    }
}

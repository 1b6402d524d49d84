//! Layering of the configuration with figment, lowest to highest:
//! built-in defaults < `$STATE_DIRECTORY` (systemd, for `data_dir` only) <
//! `/etc/kdelta/kdelta.toml` < `./kdelta.toml` or `--config FILE` < `KDELTA_*` environment
//! (`__` separates nested keys: `KDELTA_API__LISTEN` is `api.listen`) < command-line flags.
//!
//! Each layer is labelled so an error, and `kdelta config check`, can say where a value came
//! from: the file path, the environment variable, or the flag.

use std::fmt;
use std::path::{Path, PathBuf};

use figment::providers::{Env, Format, Serialized, Toml};
use figment::value::{Dict, Map, Tag, Value};
use figment::{Figment, Metadata, Profile, Provider, Source};

use super::Config;

/// The system-wide configuration file, read first when it exists.
pub const SYSTEM_CONFIG_FILE: &str = "/etc/kdelta/kdelta.toml";
/// The per-directory configuration file, read when it exists and no `--config` is given.
pub const LOCAL_CONFIG_FILE: &str = "kdelta.toml";
/// Prefix of the environment variables that set keys.
pub const ENV_PREFIX: &str = "KDELTA_";
/// `KDELTA_*` variables that are not config keys: the CLI's agent URL, and the mark of a
/// process re-executed for a clock rebase (`crate::clock_rebase::RESTARTED_ENV`).
const ENV_NOT_KEYS: &[&str] = &["url", "restarted_for_clock_rebase"];

const DEFAULT_LAYER: &str = "default";
const SYSTEMD_LAYER: &str = "systemd";
const ENV_LAYER: &str = "environment";
const FLAG_LAYER: &str = "flag";
const INLINE_LAYER: &str = "inline TOML";

/// What the command line says about configuration: which file, and flags that set keys.
#[derive(Debug, Clone)]
pub struct ConfigArgs {
    /// System-wide file, read when it exists ([`SYSTEM_CONFIG_FILE`]; tests point it elsewhere).
    pub system_file: PathBuf,
    /// `--config FILE`: must exist. Without it, `./kdelta.toml` is read when it exists.
    pub file: Option<PathBuf>,
    /// Keys set by flags: (dotted key, the flag as typed, value).
    pub flags: Vec<(&'static str, &'static str, Value)>,
}

impl Default for ConfigArgs {
    fn default() -> Self {
        ConfigArgs {
            system_file: PathBuf::from(SYSTEM_CONFIG_FILE),
            file: None,
            flags: Vec::new(),
        }
    }
}

/// Where one value came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    /// Built into kdelta.
    Default,
    /// systemd's `$STATE_DIRECTORY` (the default `data_dir` of the service).
    StateDirectory,
    /// A configuration file.
    File(PathBuf),
    /// An environment variable, by name.
    Env(String),
    /// A command-line flag, as typed (`--listen`).
    Flag(String),
    /// TOML given in code ([`parse_toml`]).
    Inline,
}

impl Origin {
    /// "in FILE" / "in environment variable X" / "in flag --x", for unknown-key errors.
    fn place(&self) -> String {
        match self {
            Origin::File(p) => format!("in {}", p.display()),
            Origin::Env(v) => {
                format!("in environment variable {v} (nested keys are separated by `__`)")
            }
            other => format!("in {other}"),
        }
    }
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Origin::Default => f.write_str("default"),
            Origin::StateDirectory => f.write_str("$STATE_DIRECTORY"),
            Origin::File(p) => write!(f, "{}", p.display()),
            Origin::Env(v) => f.write_str(v),
            Origin::Flag(flag) => f.write_str(flag),
            Origin::Inline => f.write_str(INLINE_LAYER),
        }
    }
}

/// A configuration that cannot be used. Rendered as one line naming the key and its origin;
/// the CLI exits with code 2.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// `--config FILE` names a file that does not exist.
    #[error("config: file {} does not exist", .0.display())]
    MissingFile(PathBuf),
    /// A key kdelta does not know (usually a typo).
    #[error("config: unknown key `{key}` {}{expected}", origin.place())]
    UnknownKey {
        /// Dotted key.
        key: String,
        /// Where it was set.
        origin: Origin,
        /// ", expected one of …" or empty.
        expected: String,
    },
    /// A value of the wrong type or out of range.
    #[error("config: invalid value for `{key}` (from {origin}): {detail}")]
    InvalidValue {
        /// Dotted key.
        key: String,
        /// Where it was set.
        origin: Origin,
        /// What is wrong and what is allowed.
        detail: String,
    },
    /// A file that cannot be read or parsed.
    #[error("config: {0}")]
    Unreadable(String),
}

/// A valid configuration and the layers it was merged from.
#[derive(Debug)]
pub struct LoadedConfig {
    /// The effective configuration.
    pub config: Config,
    figment: Figment,
}

/// Merges every layer, deserializes and validates.
pub fn load(args: &ConfigArgs) -> Result<LoadedConfig, ConfigError> {
    let figment = figment(args)?;
    let config = extract(&figment)?;
    Ok(LoadedConfig { config, figment })
}

/// The built-in defaults with `toml` on top — no files, no environment, no flags —
/// deserialized and validated like [`load`]. For building a configuration in code (tests,
/// embedders); errors name the key and the origin `inline TOML`.
pub fn parse_toml(toml: &str) -> Result<Config, ConfigError> {
    let figment = Figment::new()
        .merge(Labeled::new(
            Serialized::defaults(Config::default()),
            DEFAULT_LAYER,
        ))
        .merge(Labeled::new(Toml::string(toml), INLINE_LAYER));
    extract(&figment)
}

fn extract(figment: &Figment) -> Result<Config, ConfigError> {
    let config: Config = figment.extract().map_err(|e| from_figment(e, figment))?;
    config.validate().map_err(|invalid| {
        let path = split_key(&invalid.key);
        ConfigError::InvalidValue {
            origin: origin_at(figment, &path).unwrap_or(Origin::Default),
            key: invalid.key,
            detail: invalid.detail,
        }
    })?;
    Ok(config)
}

fn figment(args: &ConfigArgs) -> Result<Figment, ConfigError> {
    let mut figment = Figment::new().merge(Labeled::new(
        Serialized::defaults(Config::default()),
        DEFAULT_LAYER,
    ));
    if let Some(dir) = state_directory() {
        figment = figment.merge(Labeled::new(
            Serialized::default("data_dir", dir),
            SYSTEMD_LAYER,
        ));
    }
    if args.system_file.is_file() {
        figment = figment.merge(Toml::file_exact(absolute(&args.system_file)));
    }
    match &args.file {
        Some(file) if !file.is_file() => return Err(ConfigError::MissingFile(file.clone())),
        Some(file) => figment = figment.merge(Toml::file_exact(absolute(file))),
        None if Path::new(LOCAL_CONFIG_FILE).is_file() => {
            figment = figment.merge(Toml::file_exact(absolute(Path::new(LOCAL_CONFIG_FILE))));
        }
        None => {}
    }
    let env = Env::prefixed(ENV_PREFIX).split("__").ignore(ENV_NOT_KEYS);
    figment = figment.merge(Labeled::new(env, ENV_LAYER));
    for (key, flag, value) in &args.flags {
        let label = format!("{FLAG_LAYER} {flag}");
        figment = figment.merge(Labeled::new(Serialized::default(key, value.clone()), label));
    }
    Ok(figment)
}

/// Files are named by absolute path in messages, so "in kdelta.toml" never leaves the reader
/// guessing which directory was meant.
fn absolute(path: &Path) -> PathBuf {
    std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf())
}

/// systemd's `StateDirectory=` as passed to the service (the first, when several are listed).
fn state_directory() -> Option<String> {
    let value = std::env::var("STATE_DIRECTORY").ok()?;
    value.split(':').find(|p| !p.is_empty()).map(str::to_owned)
}

impl LoadedConfig {
    /// Every leaf key of the effective configuration with its value (as JSON) and origin.
    pub fn origins(&self) -> Vec<(String, String, Origin)> {
        let effective = Value::serialize(super::redacted(&self.config))
            .unwrap_or_else(|_| Value::from(Dict::new()));
        let mut leaves = Vec::new();
        collect_leaves(&effective, &mut Vec::new(), &mut leaves);
        leaves
            .into_iter()
            .map(|(path, value)| {
                let origin = origin_at(&self.figment, &path).unwrap_or(Origin::Default);
                let shown = serde_json::to_string(&value).unwrap_or_else(|_| "?".into());
                (join_key(&path), shown, origin)
            })
            .collect()
    }

    /// The effective configuration as TOML.
    pub fn to_toml(&self) -> String {
        toml::to_string_pretty(&super::redacted(&self.config))
            .unwrap_or_else(|e| format!("# cannot render as TOML: {e}\n"))
    }
}

fn collect_leaves(value: &Value, path: &mut Vec<String>, out: &mut Vec<(Vec<String>, Value)>) {
    match value {
        Value::Dict(_, dict) if !dict.is_empty() => {
            for (k, v) in dict {
                path.push(k.clone());
                collect_leaves(v, path, out);
                path.pop();
            }
        }
        Value::Array(_, items)
            if !items.is_empty() && items.iter().all(|v| matches!(v, Value::Dict(..))) =>
        {
            for (i, v) in items.iter().enumerate() {
                path.push(i.to_string());
                collect_leaves(v, path, out);
                path.pop();
            }
        }
        leaf => out.push((path.clone(), leaf.clone())),
    }
}

/// The origin of the value at `path` in the merged (not yet deserialized) layers.
fn origin_at(figment: &Figment, path: &[String]) -> Option<Origin> {
    let data = figment.data().ok()?;
    let root = data.get(&Profile::Default)?;
    let mut tag: Option<Tag> = None;
    let mut current: Option<&Value> = None;
    for (i, segment) in path.iter().enumerate() {
        let next = if i == 0 {
            root.get(segment)
        } else {
            match current? {
                Value::Dict(_, dict) => dict.get(segment),
                Value::Array(_, items) => segment.parse::<usize>().ok().and_then(|n| items.get(n)),
                _ => None,
            }
        };
        match next {
            Some(v) => {
                tag = Some(v.tag());
                current = Some(v);
            }
            // Not in any layer: serde filled it in, so it is a built-in default.
            None => return None,
        }
    }
    let metadata = figment.get_metadata(tag?)?;
    Some(origin_of(metadata, path))
}

fn origin_of(metadata: &Metadata, path: &[String]) -> Origin {
    if let Some(Source::File(p)) = &metadata.source {
        return Origin::File(p.clone());
    }
    let name = metadata.name.as_ref();
    if name == SYSTEMD_LAYER {
        Origin::StateDirectory
    } else if name == INLINE_LAYER {
        Origin::Inline
    } else if name == ENV_LAYER {
        Origin::Env(format!(
            "{ENV_PREFIX}{}",
            path.join("__").to_ascii_uppercase()
        ))
    } else if let Some(flag) = name.strip_prefix(FLAG_LAYER).map(str::trim) {
        if flag.is_empty() {
            Origin::Default
        } else {
            Origin::Flag(flag.to_owned())
        }
    } else {
        Origin::Default
    }
}

fn from_figment(err: figment::Error, figment: &Figment) -> ConfigError {
    // A figment error may chain several; the first is the one to fix first.
    let err = err
        .into_iter()
        .next()
        .expect("an error holds at least itself");
    let origin_of_err = |path: &[String]| {
        origin_at(figment, path)
            .or_else(|| err.metadata.as_ref().map(|m| origin_of(m, path)))
            .unwrap_or(Origin::Default)
    };
    match &err.kind {
        figment::error::Kind::UnknownField(field, expected) => {
            // figment's path usually ends with the field already; serde's does not.
            let mut path = err.path.clone();
            if path.last() != Some(field) {
                path.push(field.clone());
            }
            ConfigError::UnknownKey {
                key: join_key(&path),
                origin: origin_of_err(&path),
                expected: expected_list(expected),
            }
        }
        kind if err.path.is_empty()
            && err.metadata.as_ref().is_some_and(|m| m.source.is_some()) =>
        {
            // A file that does not parse: the message carries line and column.
            let file = err
                .metadata
                .as_ref()
                .and_then(|m| m.source.as_ref())
                .map(ToString::to_string);
            ConfigError::Unreadable(format!("{}: {kind}", file.unwrap_or_default()))
        }
        kind => ConfigError::InvalidValue {
            key: if err.path.is_empty() {
                "(top level)".into()
            } else {
                join_key(&err.path)
            },
            origin: origin_of_err(&err.path),
            detail: kind.to_string(),
        },
    }
}

fn expected_list(expected: &[&str]) -> String {
    match expected {
        [] => String::new(),
        [one] => format!(" (the only key here is `{one}`)"),
        many => format!(
            " (known keys: {})",
            many.iter()
                .map(|k| format!("`{k}`"))
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}

/// `["sources", "1", "interval"]` → `sources[1].interval`.
fn join_key(path: &[String]) -> String {
    let mut out = String::new();
    for segment in path {
        if segment.parse::<usize>().is_ok() && !out.is_empty() {
            out.push_str(&format!("[{segment}]"));
        } else {
            if !out.is_empty() {
                out.push('.');
            }
            out.push_str(segment);
        }
    }
    out
}

/// `sources[1].interval` → `["sources", "1", "interval"]`.
fn split_key(key: &str) -> Vec<String> {
    key.replace('[', ".")
        .replace(']', "")
        .split('.')
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect()
}

/// A provider with our own label, so origins render as "default", "flag --listen", ….
struct Labeled<P> {
    inner: P,
    name: String,
}

impl<P: Provider> Labeled<P> {
    fn new(inner: P, name: impl Into<String>) -> Self {
        Labeled {
            inner,
            name: name.into(),
        }
    }
}

impl<P: Provider> Provider for Labeled<P> {
    fn metadata(&self) -> Metadata {
        Metadata::named(self.name.clone())
    }

    fn data(&self) -> Result<Map<Profile, Dict>, figment::Error> {
        self.inner.data()
    }
}

#[cfg(test)]
// `Jail::expect_with` closures return figment's (large) error type; that is its API.
#[allow(clippy::result_large_err)]
mod tests {
    use super::*;
    use figment::Jail;

    fn args_in(jail: &Jail) -> ConfigArgs {
        ConfigArgs {
            system_file: jail.directory().join("etc-kdelta.toml"),
            ..ConfigArgs::default()
        }
    }

    /// `./kdelta.toml` of the jail, as messages name it (absolute).
    fn local(_jail: &Jail) -> PathBuf {
        std::env::current_dir().expect("cwd").join("kdelta.toml")
    }

    fn flag(
        key: &'static str,
        flag: &'static str,
        value: &str,
    ) -> (&'static str, &'static str, Value) {
        (key, flag, Value::from(value.to_owned()))
    }

    #[test]
    fn zero_config_is_the_defaults() {
        Jail::expect_with(|jail| {
            let loaded = load(&args_in(jail)).expect("loads");
            assert_eq!(loaded.config, Config::default());
            let origins = loaded.origins();
            assert!(
                origins.iter().all(|(_, _, o)| *o == Origin::Default),
                "{origins:?}"
            );
            assert!(
                origins.iter().any(|(k, _, _)| k == "sources[0].interval"),
                "{origins:?}"
            );
            Ok(())
        });
    }

    #[test]
    fn layers_override_in_order() {
        Jail::expect_with(|jail| {
            let system = jail.directory().join("etc-kdelta.toml");
            jail.create_file(
                &system,
                "device_name = \"from-etc\"\n[api]\nlisten = \"127.0.0.1:1000\"\nmax_body_bytes = 2048\n[store]\nbusy_timeout_ms = 1\n",
            )?;
            jail.create_file(
                "kdelta.toml",
                "[api]\nlisten = \"127.0.0.1:2000\"\nmax_body_bytes = 4096\n[log]\nlevel = \"debug\"\n",
            )?;
            jail.set_env("KDELTA_API__LISTEN", "127.0.0.1:3000");
            jail.set_env("KDELTA_LOG__LEVEL", "warn");
            jail.set_env("KDELTA_DATA_DIR", "/tmp/from-env");
            let mut args = args_in(jail);
            args.flags
                .push(flag("api.listen", "--listen", "127.0.0.1:4000"));

            let loaded = load(&args).expect("loads");
            let c = &loaded.config;
            assert_eq!(c.device_name, "from-etc");
            assert_eq!(c.store.busy_timeout_ms, 1);
            assert_eq!(c.api.max_body_bytes, 4096);
            assert_eq!(c.log.level, "warn");
            assert_eq!(c.data_dir, PathBuf::from("/tmp/from-env"));
            assert_eq!(c.api.listen.to_string(), "127.0.0.1:4000");

            let origin = |key: &str| {
                loaded
                    .origins()
                    .into_iter()
                    .find(|(k, _, _)| k == key)
                    .map(|(_, _, o)| o)
                    .expect(key)
            };
            assert_eq!(origin("device_name"), Origin::File(system.clone()));
            assert_eq!(origin("api.max_body_bytes"), Origin::File(local(jail)));
            assert_eq!(origin("log.level"), Origin::Env("KDELTA_LOG__LEVEL".into()));
            assert_eq!(origin("data_dir"), Origin::Env("KDELTA_DATA_DIR".into()));
            assert_eq!(origin("api.listen"), Origin::Flag("--listen".into()));
            assert_eq!(origin("ingest.batch_max_readings"), Origin::Default);
            Ok(())
        });
    }

    #[test]
    fn config_flag_replaces_the_local_file() {
        Jail::expect_with(|jail| {
            jail.create_file("kdelta.toml", "device_name = \"local\"\n")?;
            jail.create_file("other.toml", "[ingest]\nbatch_max_age = \"250ms\"\n")?;
            let mut args = args_in(jail);
            args.file = Some("other.toml".into());
            let c = load(&args).expect("loads").config;
            assert_ne!(c.device_name, "local");
            assert_eq!(
                c.ingest.batch_max_age,
                std::time::Duration::from_millis(250)
            );

            args.file = Some("missing.toml".into());
            assert_eq!(
                load(&args).unwrap_err(),
                ConfigError::MissingFile("missing.toml".into())
            );
            Ok(())
        });
    }

    #[test]
    fn env_keys_keep_single_underscores() {
        Jail::expect_with(|jail| {
            jail.set_env("KDELTA_DATA_DIR", "/srv/kdelta");
            jail.set_env("KDELTA_API__LISTEN", "127.0.0.1:9999");
            jail.set_env("KDELTA_INGEST__BATCH_MAX_READINGS", "10");
            jail.set_env("KDELTA_STORE__MAX_BATCH_READINGS", "500");
            jail.set_env("KDELTA_URL", "http://127.0.0.1:1"); // the CLI's, not a key
            let c = load(&args_in(jail)).expect("loads").config;
            assert_eq!(c.data_dir, PathBuf::from("/srv/kdelta"));
            assert_eq!(c.api.listen.to_string(), "127.0.0.1:9999");
            // Reachable from other hosts without credentials: refused, naming the key.
            jail.set_env("KDELTA_API__LISTEN", "0.0.0.0:9999");
            let e = load(&args_in(jail)).unwrap_err().to_string();
            assert!(e.contains("api.listen"), "{e}");
            assert_eq!(c.ingest.batch_max_readings, 10);
            assert_eq!(c.store.limits.max_batch_readings, 500);
            Ok(())
        });
    }

    #[test]
    fn state_directory_is_the_service_default_but_config_wins() {
        Jail::expect_with(|jail| {
            jail.set_env("STATE_DIRECTORY", "/var/lib/kdelta:/var/lib/other");
            let loaded = load(&args_in(jail)).expect("loads");
            assert_eq!(loaded.config.data_dir, PathBuf::from("/var/lib/kdelta"));
            let (_, _, origin) = loaded
                .origins()
                .into_iter()
                .find(|(k, _, _)| k == "data_dir")
                .expect("key");
            assert_eq!(origin, Origin::StateDirectory);

            jail.create_file("kdelta.toml", "data_dir = \"/data\"\n")?;
            assert_eq!(
                load(&args_in(jail)).expect("loads").config.data_dir,
                PathBuf::from("/data")
            );
            Ok(())
        });
    }

    #[test]
    fn unknown_key_names_key_and_file() {
        Jail::expect_with(|jail| {
            jail.create_file(
                "kdelta.toml",
                "[api]\nlisten = \"127.0.0.1:1\"\nlisen = \"127.0.0.1:2\"\n",
            )?;
            let err = load(&args_in(jail)).unwrap_err();
            let text = err.to_string();
            let file = local(jail);
            assert!(
                text.starts_with(&format!(
                    "config: unknown key `api.lisen` in {}",
                    file.display()
                )),
                "{text}"
            );
            assert!(text.contains("`listen`"), "{text}");

            jail.create_file("kdelta.toml", "colour = \"blue\"\n")?;
            let text = load(&args_in(jail)).unwrap_err().to_string();
            assert!(
                text.starts_with(&format!(
                    "config: unknown key `colour` in {}",
                    file.display()
                )),
                "{text}"
            );
            Ok(())
        });
    }

    #[test]
    fn unknown_env_key_names_the_variable() {
        Jail::expect_with(|jail| {
            jail.set_env("KDELTA_API_LISTEN", "127.0.0.1:1");
            let text = load(&args_in(jail)).unwrap_err().to_string();
            assert!(
                text.starts_with(
                    "config: unknown key `api_listen` in environment variable KDELTA_API_LISTEN"
                ),
                "{text}"
            );
            Ok(())
        });
    }

    #[test]
    fn bad_values_name_key_and_origin() {
        Jail::expect_with(|jail| {
            jail.set_env("KDELTA_API__LISTEN", "localhost");
            let text = load(&args_in(jail)).unwrap_err().to_string();
            assert!(
                text.starts_with(
                    "config: invalid value for `api.listen` (from KDELTA_API__LISTEN):"
                ),
                "{text}"
            );
            Ok(())
        });
        Jail::expect_with(|jail| {
            jail.create_file("kdelta.toml", "[ingest]\nbatch_max_readings = 0\n")?;
            let text = load(&args_in(jail)).unwrap_err().to_string();
            let file = local(jail).display().to_string();
            assert!(
                text.starts_with(&format!(
                    "config: invalid value for `ingest.batch_max_readings` (from {file}):"
                )),
                "{text}"
            );
            jail.create_file("kdelta.toml", "[ingest]\nbatch_max_age = \"soon\"\n")?;
            let text = load(&args_in(jail)).unwrap_err().to_string();
            assert!(
                text.contains(&format!("`ingest.batch_max_age` (from {file})")),
                "{text}"
            );
            jail.create_file("kdelta.toml", "[ingest]\noverflow = \"drop_newest\"\n")?;
            let text = load(&args_in(jail)).unwrap_err().to_string();
            assert!(
                text.contains(&format!("`ingest.overflow` (from {file})")),
                "{text}"
            );
            Ok(())
        });
    }

    #[test]
    fn bad_flag_value_names_the_flag() {
        Jail::expect_with(|jail| {
            let mut args = args_in(jail);
            args.flags.push(flag("api.listen", "--listen", "nowhere"));
            let text = load(&args).unwrap_err().to_string();
            assert!(
                text.starts_with("config: invalid value for `api.listen` (from --listen):"),
                "{text}"
            );
            Ok(())
        });
    }

    #[test]
    fn sources_replace_the_default_and_errors_name_the_entry() {
        Jail::expect_with(|jail| {
            jail.create_file(
                "kdelta.toml",
                "[[sources]]\nkind = \"sim\"\ninterval = \"2s\"\n",
            )?;
            let loaded = load(&args_in(jail)).expect("loads");
            assert_eq!(loaded.config.sources.len(), 1);
            assert_eq!(loaded.config.sources[0].kind(), "sim");
            let (_, _, origin) = loaded
                .origins()
                .into_iter()
                .find(|(k, _, _)| k == "sources[0].interval")
                .expect("key");
            assert_eq!(origin, Origin::File(local(jail)));
            let (_, _, origin) = loaded
                .origins()
                .into_iter()
                .find(|(k, _, _)| k == "sources[0].seed")
                .expect("key");
            assert_eq!(
                origin,
                Origin::Default,
                "filled in by serde, not written in the file"
            );

            jail.create_file("kdelta.toml", "sources = []\n")?;
            assert!(
                load(&args_in(jail))
                    .expect("loads")
                    .config
                    .sources
                    .is_empty()
            );

            jail.create_file(
                "kdelta.toml",
                "[[sources]]\nkind = \"system\"\ninterval = \"1ms\"\n",
            )?;
            let text = load(&args_in(jail)).unwrap_err().to_string();
            assert!(
                text.starts_with(&format!(
                    "config: invalid value for `sources[0].interval` (from {}):",
                    local(jail).display()
                )),
                "{text}"
            );

            jail.create_file(
                "kdelta.toml",
                "[[sources]]\nkind = \"system\"\nintervall = \"5s\"\n",
            )?;
            let text = load(&args_in(jail)).unwrap_err().to_string();
            assert!(text.contains("intervall"), "{text}");
            assert!(text.contains("kdelta.toml"), "{text}");
            Ok(())
        });
    }

    #[test]
    fn unparsable_file_is_reported_with_its_path() {
        Jail::expect_with(|jail| {
            jail.create_file("kdelta.toml", "[api\nlisten = 1\n")?;
            let text = load(&args_in(jail)).unwrap_err().to_string();
            assert!(
                text.starts_with("config: ") && text.contains("kdelta.toml"),
                "{text}"
            );
            Ok(())
        });
    }
}

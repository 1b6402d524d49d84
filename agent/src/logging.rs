//! Log output of the daemon: human lines or JSON on stderr, or the journal when systemd
//! connected stderr to it. The level filter sits behind a reload handle so SIGHUP can change
//! it without a restart. Client subcommands do not log; they print. Owns `[log]`.

use std::io::IsTerminal;

use serde::{Deserialize, Serialize};
use tracing_subscriber::filter::{LevelFilter, Targets};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{Registry, reload};

use crate::section::{InvalidValue, refuse};

/// `[log]`: what is logged and how.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LogConfig {
    /// A `tracing` filter: a level (`info`) or directives (`info,kdelta::sources=debug`).
    /// `RUST_LOG`, when set, takes precedence. Reloaded on SIGHUP.
    pub level: String,
    /// `human` (default) or `json` lines on stderr. Under systemd, human logs go to the
    /// journal with their level as priority.
    pub format: LogFormat,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            level: "info".into(),
            format: LogFormat::Human,
        }
    }
}

/// Log line format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LogFormat {
    /// One readable line per event.
    Human,
    /// One JSON object per event (for log shippers).
    Json,
}

impl LogConfig {
    /// Checks that `level` is a filter this module can install; the error names `log.level`.
    pub fn validate(&self) -> Result<(), InvalidValue> {
        match parse_filter(&self.level) {
            Ok(_) => Ok(()),
            Err(e) => refuse(
                "log.level",
                format!(
                    "{:?} is not a level or filter ({e}); use error, warn, info, debug or trace",
                    self.level
                ),
            ),
        }
    }
}

/// Where log lines go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogTarget {
    /// Readable lines on stderr.
    Stderr,
    /// JSON objects on stderr.
    StderrJson,
    /// The systemd journal, with levels as priorities.
    Journald,
}

/// The installed subscriber's handles.
#[derive(Debug)]
pub struct Logging {
    filter: reload::Handle<Targets, Registry>,
    /// Where lines go.
    pub target: LogTarget,
    /// The filter in force, as text (for the reload log line).
    pub filter_text: String,
}

/// Installs the global subscriber. `RUST_LOG`, when set, wins over `log.level`.
pub fn init(config: &LogConfig) -> anyhow::Result<Logging> {
    let (filter, filter_text) = build_filter(&config.level);
    let (filter_layer, handle) = reload::Layer::new(filter);
    let journald = match config.format {
        LogFormat::Human if stderr_is_journal() => tracing_journald::layer().ok(),
        _ => None,
    };
    let target = match (config.format, &journald) {
        (_, Some(_)) => LogTarget::Journald,
        (LogFormat::Json, None) => LogTarget::StderrJson,
        (LogFormat::Human, None) => LogTarget::Stderr,
    };
    let human = (target == LogTarget::Stderr).then(|| {
        tracing_subscriber::fmt::layer()
            .with_writer(std::io::stderr)
            .with_ansi(std::io::stderr().is_terminal())
    });
    let json = (target == LogTarget::StderrJson).then(|| {
        tracing_subscriber::fmt::layer()
            .json()
            .flatten_event(true)
            .with_writer(std::io::stderr)
    });
    tracing_subscriber::registry()
        .with(filter_layer)
        .with(human)
        .with(json)
        .with(journald)
        .try_init()?;
    install_panic_hook(target);
    Ok(Logging {
        filter: handle,
        target,
        filter_text,
    })
}

impl Logging {
    /// Replaces the level filter (SIGHUP). `RUST_LOG` still wins when set.
    pub fn reload(&mut self, level: &str) -> anyhow::Result<()> {
        let (filter, text) = build_filter(level);
        self.filter.reload(filter)?;
        self.filter_text = text;
        Ok(())
    }
}

/// Parses a level filter: `info`, or `target=level` directives such as
/// `info,kdelta_sync=debug,rumqttc=warn` (a bare level is the default for every other target).
/// `Targets` rather than `EnvFilter`: the same directives minus span/field matching, without
/// the regex engine (a quarter of a megabyte of the Pi binary).
///
/// A bare word must be a level: tracing would read `inf` as "everything of target `inf`" and
/// silence the rest, which is never what a typo in `log.level` meant.
pub fn parse_filter(text: &str) -> Result<Targets, String> {
    for directive in text.split(',').map(str::trim).filter(|d| !d.is_empty()) {
        if !directive.contains('=') && directive.parse::<LevelFilter>().is_err() {
            return Err(format!(
                "{directive:?} is not a level (error, warn, info, debug, trace, off); \
                 write target=level to filter a target"
            ));
        }
    }
    text.trim().parse::<Targets>().map_err(|e| e.to_string())
}

fn build_filter(level: &str) -> (Targets, String) {
    if let Ok(env) = std::env::var("RUST_LOG")
        && !env.trim().is_empty()
        && let Ok(filter) = parse_filter(&env)
    {
        return (filter, format!("{env} (RUST_LOG)"));
    }
    // `validate` checked the text; "info" is the fallback should it change under us.
    let filter =
        parse_filter(level).unwrap_or_else(|_| Targets::new().with_default(tracing::Level::INFO));
    (filter, level.to_owned())
}

/// Routes panics through the log, so the journal records them with error priority and
/// the JSON log stays one object per line. In the Pi build (`panic = "abort"`, see
/// Cargo.toml) a panic ends the process right after this line and systemd restarts it;
/// everything acknowledged before is already durable.
fn install_panic_hook(target: LogTarget) {
    let default_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let message = info.payload_as_str().unwrap_or("(no message)");
        let location = info
            .location()
            .map(|l| l.to_string())
            .unwrap_or_else(|| "unknown".into());
        let thread = std::thread::current()
            .name()
            .unwrap_or("unnamed")
            .to_owned();
        tracing::error!(panic.location = %location, panic.thread = %thread, "panic: {message}");
        // The standard hook adds the backtrace hint; its plain text would break JSON lines and
        // repeat the message in the journal.
        if target == LogTarget::Stderr {
            default_hook(info);
        }
    }));
}

/// True when systemd connected stderr to the journal: `$JOURNAL_STREAM` names stderr's
/// device and inode. An inherited variable with stderr redirected elsewhere does not count.
fn stderr_is_journal() -> bool {
    let Ok(value) = std::env::var("JOURNAL_STREAM") else {
        return false;
    };
    let Some((dev, ino)) = value.split_once(':') else {
        return false;
    };
    let (Ok(dev), Ok(ino)) = (dev.parse::<u64>(), ino.parse::<u64>()) else {
        return false;
    };
    // SAFETY: fstat fills the zeroed struct for a valid descriptor (2, stderr) or fails.
    let mut stat: libc::stat = unsafe { std::mem::zeroed() };
    if unsafe { libc::fstat(2, &mut stat) } != 0 {
        return false;
    }
    stat.st_dev as u64 == dev && stat.st_ino as u64 == ino
}

#[cfg(test)]
mod tests {
    use tracing::Level;

    use super::parse_filter;

    #[test]
    fn levels_and_target_directives_parse_and_filter_by_target() {
        let filter = parse_filter(" info,kdelta::sources=debug,rumqttc=warn ").unwrap();
        assert!(filter.would_enable("kdelta::sources::sysfs", &Level::DEBUG));
        assert!(!filter.would_enable("kdelta::sources::sysfs", &Level::TRACE));
        assert!(filter.would_enable("kdelta::daemon", &Level::INFO));
        assert!(!filter.would_enable("kdelta::daemon", &Level::DEBUG));
        assert!(!filter.would_enable("rumqttc::state", &Level::INFO));
        assert!(filter.would_enable("rumqttc::state", &Level::WARN));

        let upper = parse_filter("WARN").unwrap();
        assert!(upper.would_enable("anything", &Level::WARN));
        assert!(!upper.would_enable("anything", &Level::INFO));
        let off = parse_filter("off").unwrap();
        assert!(!off.would_enable("anything", &Level::ERROR));
    }

    #[test]
    fn bad_levels_are_refused() {
        for bad in [
            "loud",
            "inf",
            "info,kdelta=loud",
            "kdelta=debug=trace",
            "info,,kdelta",
        ] {
            assert!(parse_filter(bad).is_err(), "{bad:?} was accepted");
        }
    }
}

//! Log output of the daemon: human lines or JSON on stderr, or the journal when systemd
//! connected stderr to it. The level filter sits behind a reload handle so SIGHUP can change
//! it without a restart. Client subcommands do not log; they print.

use std::io::IsTerminal;

use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Registry, reload};

use crate::config::{LogConfig, LogFormat};

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
    filter: reload::Handle<EnvFilter, Registry>,
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

fn build_filter(level: &str) -> (EnvFilter, String) {
    if let Ok(env) = std::env::var("RUST_LOG")
        && !env.trim().is_empty()
        && let Ok(filter) = EnvFilter::builder().parse(&env)
    {
        return (filter, format!("{env} (RUST_LOG)"));
    }
    // `validate` checked the text; "info" is the fallback should it change under us.
    let filter = EnvFilter::builder()
        .parse(level)
        .unwrap_or_else(|_| EnvFilter::new("info"));
    (filter, level.to_owned())
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

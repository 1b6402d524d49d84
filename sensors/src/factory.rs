//! Builds sources from [`SourceConfig`]. Owns the mapping from a config variant to a
//! constructor, and nothing else: no scheduling, no retries (the agent does those).

use crate::config::SourceConfig;
use crate::modbus::ModbusSource;
use crate::serial::SerialSource;
use crate::sim::SimSource;
use crate::sysfs::SysfsSource;
use crate::system::SystemSource;
use crate::{PolledSource, SourceError, StreamingSource};

/// Validates `config` and builds the polled source it describes.
///
/// Returns `Ok(None)` for streaming kinds (serial line protocols), which the agent builds as a
/// [`StreamingSource`] instead.
///
/// # Errors
/// [`SourceError::Config`] naming the offending key (relative to the source's table).
/// Building does not open devices, so an unplugged sensor is reported by the first
/// [`PolledSource::sample`], not here.
pub fn build_polled(config: &SourceConfig) -> Result<Option<Box<dyn PolledSource>>, SourceError> {
    config.validate()?;
    let source: Box<dyn PolledSource> = match config {
        SourceConfig::System(c) => Box::new(SystemSource::new(c.clone())?),
        SourceConfig::Sysfs(c) => Box::new(SysfsSource::new(c.clone())?),
        SourceConfig::Sim(c) => Box::new(SimSource::new(c.clone())?),
        SourceConfig::ModbusTcp(c) => Box::new(ModbusSource::tcp(c.clone())?),
        SourceConfig::ModbusRtu(c) => Box::new(ModbusSource::rtu(c.clone())?),
        SourceConfig::Serial(_) => return Ok(None),
    };
    Ok(Some(source))
}

/// Validates `config` and builds the streaming source it describes (serial line protocols).
///
/// Returns `Ok(None)` for polled kinds, which [`build_polled`] builds. Like it, this opens no
/// device: a missing port is reported (and retried) once the source runs.
///
/// # Errors
/// [`SourceError::Config`] naming the offending key (relative to the source's table).
pub fn build_streaming(
    config: &SourceConfig,
) -> Result<Option<Box<dyn StreamingSource>>, SourceError> {
    config.validate()?;
    match config {
        SourceConfig::Serial(c) => Ok(Some(Box::new(SerialSource::new(c.clone())?))),
        _ => Ok(None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sim::SimConfig;
    use crate::sysfs::SysfsConfig;
    use crate::system::SystemConfig;

    #[test]
    fn builds_each_kind_with_its_name() {
        let cases = [
            (SourceConfig::System(SystemConfig::default()), "system"),
            (SourceConfig::Sysfs(SysfsConfig::default()), "sysfs"),
            (
                SourceConfig::Sim(SimConfig {
                    name: Some("load".into()),
                    ..SimConfig::default()
                }),
                "load",
            ),
        ];
        for (config, name) in cases {
            let source = build_polled(&config).expect("valid").expect("polled kind");
            assert_eq!(source.name(), name);
            assert_eq!(config.name(), name);
        }
    }

    #[test]
    fn invalid_config_is_refused() {
        let config = SourceConfig::Sim(SimConfig {
            count: Some(0),
            ..SimConfig::default()
        });
        match build_polled(&config) {
            Err(SourceError::Config { key, .. }) => assert_eq!(key, "count"),
            Err(other) => panic!("expected Config error, got {other:?}"),
            Ok(_) => panic!("invalid config was accepted"),
        }
    }
}

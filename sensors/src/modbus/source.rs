//! The Modbus polled source: connect (TCP) or open the port (RTU) on demand, read every
//! planned batch with a timeout, decode, and drop the connection after any transport failure so
//! the next sample starts clean.

use std::io;
use std::time::Duration;

use tokio_modbus::client::{Client, Context, rtu, tcp};
use tokio_modbus::{ExceptionCode, Request, Response, Slave};
use tokio_serial::SerialStream;

use super::config::{ModbusRtuConfig, ModbusTcpConfig, RegisterConfig};
use super::registers::{Batch, plan, raw_from_bits, raw_from_words, scaled, single};
use crate::decode::clean_field;
use crate::serial::port_builder;
use crate::{BoxFuture, PolledSource, Reading, Sample, SourceError, now_ms};

/// How to reach the device.
#[derive(Debug, Clone)]
enum Transport {
    Tcp { host: String, port: u16 },
    Rtu(ModbusRtuConfig),
}

/// What went wrong with one batch.
enum BatchError {
    /// The device answered with an exception: the connection is fine, the request was not.
    Exception(ExceptionCode),
    /// Timeout, I/O or framing failure: the connection is no longer trustworthy.
    Transport(SourceError),
}

/// A Modbus device read at the agent's interval, over TCP or RTU.
///
/// Each [`sample`](PolledSource::sample) reads all configured registers, batching contiguous
/// ones. Exceptions affect only their register (a batch that draws one is split into single
/// reads from then on, so the others keep working); a timeout or connection failure ends the
/// round and the next sample reconnects. Readings that were obtained are returned even when
/// others failed (the failures are logged at debug level, see [`Sample`]); `Err`, with the
/// first failure, only when nothing at all could be read.
pub struct ModbusSource {
    name: String,
    /// Address or port plus unit, named in every error.
    device: String,
    transport: Transport,
    unit_id: u8,
    timeout: Duration,
    prefix: String,
    registers: Vec<RegisterConfig>,
    batches: Vec<Batch>,
    /// The open connection, if any; `None` after a failure so the next sample reconnects.
    context: Option<Context>,
}

impl std::fmt::Debug for ModbusSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // tokio-modbus's `Context` has no Debug; whether it is open is what matters.
        f.debug_struct("ModbusSource")
            .field("name", &self.name)
            .field("device", &self.device)
            .field("transport", &self.transport)
            .field("timeout", &self.timeout)
            .field("prefix", &self.prefix)
            .field("registers", &self.registers)
            .field("batches", &self.batches)
            .field("connected", &self.context.is_some())
            .finish()
    }
}

impl ModbusSource {
    /// A Modbus TCP source. Validates `config`; connects only when first sampled.
    pub fn tcp(config: ModbusTcpConfig) -> Result<Self, SourceError> {
        config.validate()?;
        let (host, port) = config.host_port()?;
        let device = format!("{}:{} unit {}", host, port, config.unit_id);
        let name = config
            .name
            .clone()
            .unwrap_or_else(|| "modbus_tcp".to_owned());
        Ok(Self::build(
            name,
            device,
            Transport::Tcp { host, port },
            config.unit_id,
            config.timeout,
            prefix(&config.series_prefix, &config.name),
            config.registers,
        ))
    }

    /// A Modbus RTU source. Validates `config`; opens the port only when first sampled.
    pub fn rtu(config: ModbusRtuConfig) -> Result<Self, SourceError> {
        config.validate()?;
        let device = format!("{} unit {}", config.port.display(), config.unit_id);
        let name = config
            .name
            .clone()
            .unwrap_or_else(|| "modbus_rtu".to_owned());
        Ok(Self::build(
            name,
            device,
            Transport::Rtu(config.clone()),
            config.unit_id,
            config.timeout,
            prefix(&config.series_prefix, &config.name),
            config.registers,
        ))
    }

    fn build(
        name: String,
        device: String,
        transport: Transport,
        unit_id: u8,
        timeout: Duration,
        prefix: String,
        registers: Vec<RegisterConfig>,
    ) -> Self {
        ModbusSource {
            name,
            device,
            transport,
            unit_id,
            timeout,
            prefix,
            batches: plan(&registers),
            registers,
            context: None,
        }
    }

    /// How many requests one sample sends (after any batch splits so far).
    pub fn requests_per_sample(&self) -> usize {
        self.batches.len()
    }

    fn timeout_error(&self) -> SourceError {
        SourceError::Timeout {
            device: self.device.clone(),
            timeout_ms: u64::try_from(self.timeout.as_millis()).unwrap_or(u64::MAX),
        }
    }

    fn io_error(&self, e: io::Error) -> SourceError {
        match e.kind() {
            io::ErrorKind::ConnectionRefused | io::ErrorKind::NotFound => {
                SourceError::DeviceMissing {
                    device: self.device.clone(),
                    detail: e.to_string(),
                }
            }
            _ => SourceError::Io {
                path: self.device.clone().into(),
                source: e,
            },
        }
    }

    // `&mut self` although nothing is mutated: the future must be Send, and `&self` would
    // require `Sync`, which tokio-modbus's `Context` is not.
    async fn connect(&mut self) -> Result<Context, SourceError> {
        let slave = Slave(self.unit_id);
        match &self.transport {
            Transport::Tcp { host, port } => {
                let connect = async {
                    let mut addrs = tokio::net::lookup_host((host.as_str(), *port)).await?;
                    let addr = addrs.next().ok_or_else(|| {
                        io::Error::new(io::ErrorKind::NotFound, "host name has no address")
                    })?;
                    tcp::connect_slave(addr, slave).await
                };
                match tokio::time::timeout(self.timeout, connect).await {
                    Ok(Ok(context)) => Ok(context),
                    Ok(Err(e)) => Err(self.io_error(e)),
                    Err(_) => Err(self.timeout_error()),
                }
            }
            Transport::Rtu(c) => {
                let builder = port_builder(&c.port, c.baud, c.data_bits, c.parity, c.stop_bits);
                let stream = SerialStream::open(&builder).map_err(|e| self.io_error(e.into()))?;
                Ok(rtu::attach_slave(stream, slave))
            }
        }
    }

    /// Sends one read; checks the response shape, since a device may answer with anything.
    async fn read(&mut self, batch: &Batch) -> Result<Response, BatchError> {
        use super::config::RegisterFunction::*;
        let Some(context) = self.context.as_mut() else {
            return Err(BatchError::Transport(
                self.io_error(io::ErrorKind::NotConnected.into()),
            ));
        };
        let (start, count) = (batch.start, batch.count);
        let request = match batch.function {
            Holding => Request::ReadHoldingRegisters(start, count),
            Input => Request::ReadInputRegisters(start, count),
            Coil => Request::ReadCoils(start, count),
            Discrete => Request::ReadDiscreteInputs(start, count),
        };
        match tokio::time::timeout(self.timeout, context.call(request)).await {
            Ok(Ok(Ok(response))) => Ok(response),
            Ok(Ok(Err(exception))) => Err(BatchError::Exception(exception)),
            Ok(Err(tokio_modbus::Error::Transport(e))) => {
                Err(BatchError::Transport(self.io_error(e)))
            }
            Ok(Err(tokio_modbus::Error::Protocol(e))) => {
                Err(BatchError::Transport(SourceError::Protocol {
                    device: self.device.clone(),
                    detail: e.to_string(),
                }))
            }
            Err(_) => Err(BatchError::Transport(self.timeout_error())),
        }
    }

    /// Decodes the members of `batch` from `response` into `out`; failures into `failures`.
    fn decode(
        &self,
        batch: &Batch,
        response: &Response,
        ts_ms: i64,
        out: &mut Vec<Reading>,
        failures: &mut Vec<SourceError>,
    ) {
        for &i in &batch.members {
            let r = &self.registers[i];
            let raw = match response {
                Response::ReadHoldingRegisters(words) | Response::ReadInputRegisters(words) => {
                    raw_from_words(r, batch.start, words)
                }
                Response::ReadCoils(bits) | Response::ReadDiscreteInputs(bits) => {
                    raw_from_bits(r, batch.start, bits)
                }
                _ => None,
            };
            let Some(raw) = raw else {
                failures.push(self.register_error(r, "response too short or of the wrong kind"));
                continue;
            };
            match scaled(r, raw) {
                Some(value) => out.push(Reading::new(
                    self.series(r),
                    ts_ms,
                    value,
                    r.unit.as_deref(),
                )),
                None => failures.push(SourceError::Parse {
                    device: self.device.clone(),
                    detail: format!("register `{}` holds a non-finite value", r.name),
                }),
            }
        }
    }

    fn series(&self, r: &RegisterConfig) -> String {
        if self.prefix.is_empty() {
            r.name.clone()
        } else {
            format!("{}.{}", self.prefix, r.name)
        }
    }

    fn register_error(&self, r: &RegisterConfig, detail: impl std::fmt::Display) -> SourceError {
        SourceError::Protocol {
            device: self.device.clone(),
            detail: format!(
                "register `{}` ({:?} address {}): {}",
                r.name, r.function, r.address, detail
            ),
        }
    }

    fn exception_error(&self, r: &RegisterConfig, e: ExceptionCode) -> SourceError {
        self.register_error(r, format!("exception {:#04x} ({e})", u8::from(e)))
    }

    async fn sample_all(&mut self) -> Result<Vec<Reading>, SourceError> {
        if self.context.is_none() {
            self.context = Some(self.connect().await?);
        }
        let ts_ms = now_ms();
        let mut out = Vec::with_capacity(self.registers.len());
        let mut failures = Vec::new();
        let mut next = 0;
        while next < self.batches.len() {
            let batch = self.batches[next].clone();
            match self.read(&batch).await {
                Ok(response) => self.decode(&batch, &response, ts_ms, &mut out, &mut failures),
                Err(BatchError::Exception(e)) if batch.members.len() > 1 => {
                    // Some register in the range is refused. Read them one by one from now
                    // on, so the refused one is named and the others keep reporting.
                    tracing::info!(source = %self.name, exception = %e, start = batch.start,
                        "Modbus batch refused; splitting into single reads");
                    let singles = batch.members.iter().map(|&i| single(&self.registers, i));
                    self.batches.splice(next..=next, singles);
                    continue;
                }
                Err(BatchError::Exception(e)) => {
                    let r = &self.registers[batch.members[0]];
                    failures.push(self.exception_error(r, e));
                }
                Err(BatchError::Transport(error)) => {
                    // The connection may hold a late reply or half a frame; start over next time.
                    self.context = None;
                    failures.push(error);
                    break;
                }
            }
            next += 1;
        }
        // Same partial-failure policy as the other multi-sensor sources.
        Sample {
            readings: out,
            errors: failures,
        }
        .into_result(&self.name)
    }
}

/// The series prefix: `series_prefix`, else the source name (cleaned: names may hold
/// capitals, series do not), else `modbus`.
fn prefix(series_prefix: &Option<String>, name: &Option<String>) -> String {
    if let Some(prefix) = series_prefix {
        return prefix.clone();
    }
    name.as_deref()
        .and_then(clean_field)
        .map_or_else(|| "modbus".to_owned(), |n| n.into_owned())
}

impl PolledSource for ModbusSource {
    fn name(&self) -> &str {
        &self.name
    }

    fn sample(&mut self) -> BoxFuture<'_, Result<Vec<Reading>, SourceError>> {
        Box::pin(self.sample_all())
    }
}

//! The serial streaming source: open the port, read, split lines, decode, send — and when the
//! device disappears, report it and reopen with backoff until shutdown.

use std::io;
use std::time::Duration;

use tokio::io::AsyncReadExt;
use tokio_serial::SerialStream;

use super::config::{SerialConfig, port_builder};
use super::lines::{Frame, LineSplitter};
use crate::decode::{Decoder, LineDecoder};
use crate::{BoxFuture, Reading, ReadingSink, SourceError, StreamingSource, now_ms};

/// First reopen delay; doubled after every failed attempt up to `reopen_backoff_max`.
const INITIAL_BACKOFF: Duration = Duration::from_millis(250);

/// Bytes asked of the port per read. Serial lines deliver far less than this between reads, so
/// a bigger buffer would only cost memory.
const READ_CHUNK: usize = 1024;

/// Exponential backoff with ±20 % jitter, so many agents (or many ports of one agent) that lost
/// their devices at the same moment do not retry in lockstep.
#[derive(Debug)]
pub(crate) struct Backoff {
    next: Duration,
    max: Duration,
}

impl Backoff {
    pub(crate) fn new(max: Duration) -> Self {
        Backoff {
            next: INITIAL_BACKOFF.min(max),
            max,
        }
    }

    pub(crate) fn reset(&mut self) {
        self.next = INITIAL_BACKOFF.min(self.max);
    }

    pub(crate) fn next_delay(&mut self) -> Duration {
        let base = self.next;
        self.next = self.next.saturating_mul(2).min(self.max);
        base.mul_f64(rand::random_range(0.8..=1.2)).min(self.max)
    }
}

/// How one open-read session of the port ended.
enum SessionEnd {
    /// Shutdown was requested, or the agent dropped the receiving end of the sink.
    Stop,
    /// The device went away or failed; `got_data` says whether it delivered anything first
    /// (then the backoff starts over, since the device evidently worked).
    Lost { error: SourceError, got_data: bool },
}

/// A serial device speaking a line protocol (JSON lines, CSV, `key=value` or NMEA).
///
/// Construct with [`SerialSource::new`], then drive with [`StreamingSource::run`]. Readings go
/// to the bounded sink in line order; when the sink is full, reading the port pauses (the
/// kernel buffers a few KiB, then the device's output is lost — the agent's store is expected
/// to be faster than any serial line).
#[derive(Debug)]
pub struct SerialSource {
    config: SerialConfig,
    name: String,
    decoder: Decoder,
}

impl SerialSource {
    /// Validates `config` and builds the source. Does not open the port: a missing device is
    /// not an error here but a status reported while retrying.
    pub fn new(config: SerialConfig) -> Result<Self, SourceError> {
        config.validate()?;
        Ok(SerialSource {
            name: config.display_name(),
            decoder: Decoder::new(config.format, config.decoder_options()),
            config,
        })
    }

    /// The validated configuration.
    pub fn config(&self) -> &SerialConfig {
        &self.config
    }

    fn device(&self) -> String {
        self.config.port.display().to_string()
    }

    fn open(&self) -> Result<SerialStream, SourceError> {
        let c = &self.config;
        let builder = port_builder(&c.port, c.baud, c.data_bits, c.parity, c.stop_bits);
        SerialStream::open(&builder).map_err(|e| {
            let e = io::Error::from(e);
            match e.kind() {
                io::ErrorKind::NotFound => SourceError::DeviceMissing {
                    device: self.device(),
                    detail: e.to_string(),
                },
                _ => SourceError::Io {
                    path: c.port.clone(),
                    source: e,
                },
            }
        })
    }

    /// Classifies a read failure. EIO/ENXIO/ENODEV are what Linux returns once a USB adapter is
    /// unplugged or a pty's other end closes: the device is gone, not merely erring.
    fn read_error(&self, e: io::Error) -> SourceError {
        match e.raw_os_error() {
            Some(libc::EIO | libc::ENXIO | libc::ENODEV) => SourceError::DeviceMissing {
                device: self.device(),
                detail: format!("disconnected ({e})"),
            },
            _ => SourceError::Io {
                path: self.config.port.clone(),
                source: e,
            },
        }
    }

    async fn run_loop<'a>(
        &'a mut self,
        sink: ReadingSink,
        on_error: Box<dyn Fn(&SourceError) + Send + Sync + 'a>,
        mut shutdown: BoxFuture<'a, ()>,
    ) -> Result<(), SourceError> {
        let mut backoff = Backoff::new(self.config.reopen_backoff_max);
        let mut splitter = LineSplitter::new(self.config.max_line_bytes);
        loop {
            match self.open() {
                Ok(stream) => {
                    tracing::info!(source = %self.name, port = %self.device(), "serial port opened");
                    splitter.reset();
                    match self
                        .session(stream, &mut splitter, &sink, &*on_error, &mut shutdown)
                        .await
                    {
                        SessionEnd::Stop => return Ok(()),
                        SessionEnd::Lost { error, got_data } => {
                            tracing::info!(source = %self.name, %error, "serial port lost");
                            on_error(&error);
                            if got_data {
                                backoff.reset();
                            }
                        }
                    }
                }
                Err(error) => {
                    tracing::debug!(source = %self.name, %error, "cannot open serial port");
                    on_error(&error);
                }
            }
            let delay = backoff.next_delay();
            tokio::select! {
                () = &mut shutdown => return Ok(()),
                () = tokio::time::sleep(delay) => {}
            }
        }
    }

    /// Reads the open port until it fails or shutdown. Decode errors are reported and skipped.
    async fn session(
        &mut self,
        mut stream: SerialStream,
        splitter: &mut LineSplitter,
        sink: &ReadingSink,
        on_error: &(dyn Fn(&SourceError) + Send + Sync),
        shutdown: &mut BoxFuture<'_, ()>,
    ) -> SessionEnd {
        let mut buf = vec![0u8; READ_CHUNK];
        let mut pending: Vec<Reading> = Vec::new();
        let mut got_data = false;
        loop {
            let read = tokio::select! {
                () = &mut *shutdown => return SessionEnd::Stop,
                read = stream.read(&mut buf) => read,
            };
            let n = match read {
                Ok(0) => {
                    let error = SourceError::DeviceMissing {
                        device: self.device(),
                        detail: "end of stream (unplugged?)".into(),
                    };
                    return SessionEnd::Lost { error, got_data };
                }
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    let error = self.read_error(e);
                    return SessionEnd::Lost { error, got_data };
                }
            };
            got_data = true;
            let now = now_ms();
            let device = &self.config.port;
            let max = self.config.max_line_bytes;
            let decoder = &mut self.decoder;
            splitter.push(&buf[..n], |frame| match frame {
                Frame::Line(line) => match decoder.decode(line, now) {
                    Ok(readings) => pending.extend(readings),
                    Err(error) => on_error(&error),
                },
                Frame::Overlong { bytes } => on_error(&SourceError::Parse {
                    device: device.display().to_string(),
                    detail: format!(
                        "line longer than max_line_bytes ({max}; {bytes} bytes so far), \
                         discarded up to the next newline"
                    ),
                }),
            });
            for reading in pending.drain(..) {
                tokio::select! {
                    () = &mut *shutdown => return SessionEnd::Stop,
                    sent = sink.send(reading) => if sent.is_err() {
                        // The agent dropped the receiver: nobody wants readings any more.
                        return SessionEnd::Stop;
                    },
                }
            }
        }
    }
}

impl StreamingSource for SerialSource {
    fn name(&self) -> &str {
        &self.name
    }

    fn run<'a>(
        &'a mut self,
        sink: ReadingSink,
        on_error: Box<dyn Fn(&SourceError) + Send + Sync + 'a>,
        shutdown: BoxFuture<'a, ()>,
    ) -> BoxFuture<'a, Result<(), SourceError>> {
        Box::pin(self.run_loop(sink, on_error, shutdown))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_with_jitter_up_to_max() {
        let mut b = Backoff::new(Duration::from_secs(2));
        let delays: Vec<Duration> = (0..6).map(|_| b.next_delay()).collect();
        let bases = [250, 500, 1000, 2000, 2000, 2000];
        for (d, base) in delays.iter().zip(bases) {
            let base = Duration::from_millis(base);
            assert!(
                *d >= base.mul_f64(0.8) && *d <= base.mul_f64(1.2).min(b.max),
                "{d:?}"
            );
        }
        b.reset();
        assert!(b.next_delay() <= Duration::from_millis(300));
        let mut tiny = Backoff::new(Duration::from_millis(20));
        assert!(tiny.next_delay() <= Duration::from_millis(20));
    }

    #[test]
    fn new_rejects_invalid_config() {
        let mut c = SerialConfig::new("/dev/ttyS0", crate::decode::LineFormat::Csv);
        c.baud = 1;
        assert!(matches!(
            SerialSource::new(c),
            Err(SourceError::Config { .. })
        ));
    }
}

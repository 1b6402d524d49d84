//! Line decoders: turn one line of text from a device into [`Reading`]s.
//!
//! Owns the four serial line protocols kdelta understands — JSON lines, CSV, `key=value` and
//! NMEA 0183 — and nothing else: no I/O, no clocks (the caller passes `now_ms`), no framing (the
//! serial reader splits lines and hands each one over without its terminator).
//!
//! Every decoder treats its input as hostile. Invalid UTF-8, garbage and lines longer than
//! [`DecoderOptions::max_line_bytes`] become a [`SourceError::Parse`] that names the device; no
//! input makes a decoder panic (property tests in each module feed them arbitrary bytes).
//! Values are always finite: NaN and infinities are never emitted.
//!
//! Series are named `<prefix>.<field>`; see [`DecoderOptions::prefix`]. Field names sent by a
//! device are cleaned by [`clean_field`] (`Temp Out` → `temp_out`) so they are safe in MQTT
//! topics and URLs; a name with nothing usable left is skipped.
//!
//! ```
//! use kdelta_sensors::decode::{Decoder, DecoderOptions, LineDecoder, LineFormat};
//!
//! let opts = DecoderOptions::new("/dev/ttyUSB0", "greenhouse");
//! let mut decoder = Decoder::new(LineFormat::JsonLines, opts);
//! let readings = decoder.decode(br#"{"temp": 21.5, "hum": 40}"#, 1_700_000_000_000).unwrap();
//! assert_eq!(readings.len(), 2);
//! assert_eq!(readings[1].series, "greenhouse.temp");
//! ```

mod csv;
mod json;
mod key_value;
mod nmea;
mod options;
mod timestamp;

pub use csv::CsvDecoder;
pub use json::JsonLinesDecoder;
pub use key_value::KeyValueDecoder;
pub use nmea::NmeaDecoder;
pub use options::{DEFAULT_MAX_LINE_BYTES, Decoder, DecoderOptions, LineFormat, clean_field};
pub use timestamp::parse_timestamp;

use crate::{Reading, SourceError};

/// Decodes one line of a line-oriented protocol.
///
/// Decoders may keep state between lines (the CSV decoder remembers the header), so `decode`
/// takes `&mut self`; one decoder serves one device.
pub trait LineDecoder: Send {
    /// Decodes `line` (without its CR/LF terminator) received at `now_ms` (unix milliseconds,
    /// used unless the line carries its own timestamp).
    ///
    /// An empty or whitespace-only line yields no readings. A line that is well-formed but has
    /// nothing to report (an NMEA sentence kdelta does not use, a GPS without a fix) yields no
    /// readings either; only malformed input is an error: [`SourceError::Parse`], or
    /// [`SourceError::Checksum`] for an NMEA sentence whose checksum does not match.
    fn decode(&mut self, line: &[u8], now_ms: i64) -> Result<Vec<Reading>, SourceError>;
}

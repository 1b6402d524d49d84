//! NMEA 0183 sentences from a GPS receiver.
//!
//! Every sentence's `*hh` checksum (XOR of the bytes between `$` and `*`) is verified first: a
//! serial line picks up noise, and a flipped digit in a coordinate is worse than a lost fix. A
//! missing checksum is a parse error, a wrong one [`SourceError::Checksum`].
//!
//! Decoded, for any talker (`GP`, `GN`, `GL`, `GA`, …), series under the prefix (default `gps`):
//! - GGA: `latitude`, `longitude` (decimal degrees, south and west negative, °), `altitude`
//!   (m above mean sea level), `fix_quality` (0 = none, 1 = GPS, 2 = DGPS, …), `satellites`,
//!   `hdop`. Without a fix only `fix_quality` and `satellites` are reported.
//! - RMC with status `A` (valid): `latitude`, `longitude`, `speed` (m/s, converted from knots),
//!   `course` (° true). Status `V` (void) yields nothing and is not an error.
//!
//! Other sentences (GSV, VTG, proprietary `$P…`) are checked and then ignored. Readings take
//! the receive time `now_ms`: GGA carries no date, and keeping both sentence types on one clock
//! keeps their readings aligned.

use super::LineDecoder;
use super::options::DecoderOptions;
use crate::{Reading, SourceError};

/// Metres per second in one knot (1852 m per nautical mile).
const MS_PER_KNOT: f64 = 1852.0 / 3600.0;

/// Decoder for [`LineFormat::Nmea`](super::LineFormat::Nmea).
#[derive(Debug, Clone)]
pub struct NmeaDecoder {
    opts: DecoderOptions,
}

/// Which axis a coordinate is on; decides digits of degrees, range and hemisphere letters.
#[derive(Clone, Copy)]
enum Axis {
    Latitude,
    Longitude,
}

impl NmeaDecoder {
    /// A decoder with `opts`.
    pub fn new(opts: DecoderOptions) -> Self {
        NmeaDecoder { opts }
    }

    /// Verifies framing and checksum; returns the comma-separated body between `$` and `*`.
    fn body<'a>(&self, text: &'a str, line: &[u8]) -> Result<&'a str, SourceError> {
        let Some(rest) = text.strip_prefix('$') else {
            return Err(self.opts.parse_error("not an NMEA sentence (no `$`)", line));
        };
        let Some((body, checksum)) = rest.rsplit_once('*') else {
            return Err(self
                .opts
                .parse_error("NMEA sentence without `*hh` checksum", line));
        };
        let received = match checksum.len() {
            2 => u8::from_str_radix(checksum, 16).ok(),
            _ => None,
        };
        let Some(received) = received else {
            return Err(self
                .opts
                .parse_error(format!("malformed NMEA checksum `{checksum}`"), line));
        };
        let computed = body.bytes().fold(0u8, |acc, b| acc ^ b);
        if computed != received {
            return Err(SourceError::Checksum {
                device: self.opts.device.clone(),
                detail: format!(
                    "NMEA sentence says {received:02X}, bytes give {computed:02X}: {}",
                    super::options::snippet(line)
                ),
            });
        }
        Ok(body)
    }

    /// Parses `ddmm.mmmm` / `dddmm.mmmm` plus hemisphere into signed decimal degrees.
    fn coordinate(
        &self,
        value: &str,
        hemisphere: &str,
        axis: Axis,
        line: &[u8],
    ) -> Result<f64, SourceError> {
        let (limit, positive, negative) = match axis {
            Axis::Latitude => (90.0, "N", "S"),
            Axis::Longitude => (180.0, "E", "W"),
        };
        let bad = |what: &str| self.opts.parse_error(format!("bad {what} `{value}`"), line);
        let raw: f64 = value.parse().map_err(|_| bad("coordinate"))?;
        if !raw.is_finite() || raw < 0.0 || value.starts_with(['+', '-']) {
            return Err(bad("coordinate"));
        }
        let degrees = (raw / 100.0).trunc();
        let minutes = raw - degrees * 100.0;
        let decimal = degrees + minutes / 60.0;
        if minutes >= 60.0 || decimal > limit {
            return Err(bad("coordinate"));
        }
        if hemisphere == positive {
            Ok(decimal)
        } else if hemisphere == negative {
            Ok(-decimal)
        } else {
            Err(bad(&format!("hemisphere `{hemisphere}` for")))
        }
    }

    /// A finite number from an optional field: `Ok(None)` when the receiver left it empty.
    fn number(
        &self,
        field: Option<&str>,
        what: &str,
        line: &[u8],
    ) -> Result<Option<f64>, SourceError> {
        match field {
            None | Some("") => Ok(None),
            Some(s) => match s.parse::<f64>() {
                Ok(v) if v.is_finite() => Ok(Some(v)),
                _ => Err(self.opts.parse_error(format!("bad {what} `{s}`"), line)),
            },
        }
    }

    /// Latitude and longitude from four consecutive fields, if the receiver filled them in.
    fn position(&self, f: &[&str], line: &[u8]) -> Result<Option<(f64, f64)>, SourceError> {
        match f {
            [lat, ns, lon, ew] if !lat.is_empty() && !lon.is_empty() => Ok(Some((
                self.coordinate(lat, ns, Axis::Latitude, line)?,
                self.coordinate(lon, ew, Axis::Longitude, line)?,
            ))),
            _ => Ok(None),
        }
    }

    fn gga(&self, f: &[&str], now_ms: i64, line: &[u8]) -> Result<Vec<Reading>, SourceError> {
        // $--GGA,time,lat,N,lon,E,quality,satellites,hdop,altitude,M,geoid,M,age,station
        let quality = self.number(f.get(6).copied(), "fix quality", line)?;
        let satellites = self.number(f.get(7).copied(), "satellite count", line)?;
        let mut out = Vec::with_capacity(6);
        let o = &self.opts;
        if let Some(q) = quality {
            out.push(o.reading("fix_quality", now_ms, q, None));
        }
        if let Some(n) = satellites {
            out.push(o.reading("satellites", now_ms, n, None));
        }
        // Quality 0 means no fix: whatever coordinates the receiver still prints are stale.
        if quality.is_some_and(|q| q > 0.0) {
            if let Some((lat, lon)) = self.position(f.get(2..6).unwrap_or(&[]), line)? {
                out.push(o.reading("latitude", now_ms, lat, Some("°")));
                out.push(o.reading("longitude", now_ms, lon, Some("°")));
            }
            if let Some(alt) = self.number(f.get(9).copied(), "altitude", line)? {
                out.push(o.reading("altitude", now_ms, alt, Some("m")));
            }
            if let Some(hdop) = self.number(f.get(8).copied(), "hdop", line)? {
                out.push(o.reading("hdop", now_ms, hdop, None));
            }
        }
        Ok(out)
    }

    fn rmc(&self, f: &[&str], now_ms: i64, line: &[u8]) -> Result<Vec<Reading>, SourceError> {
        // $--RMC,time,status,lat,N,lon,E,speed_knots,course,date,variation,E[,mode]
        match f.get(2).copied() {
            Some("A") => {}
            Some("V") => return Ok(Vec::new()),
            other => {
                let status = other.unwrap_or("");
                return Err(self
                    .opts
                    .parse_error(format!("bad RMC status `{status}`"), line));
            }
        }
        let mut out = Vec::with_capacity(4);
        let o = &self.opts;
        if let Some((lat, lon)) = self.position(f.get(3..7).unwrap_or(&[]), line)? {
            out.push(o.reading("latitude", now_ms, lat, Some("°")));
            out.push(o.reading("longitude", now_ms, lon, Some("°")));
        }
        if let Some(knots) = self.number(f.get(7).copied(), "speed", line)? {
            out.push(o.reading("speed", now_ms, knots * MS_PER_KNOT, Some("m/s")));
        }
        if let Some(course) = self.number(f.get(8).copied(), "course", line)? {
            out.push(o.reading("course", now_ms, course, Some("°")));
        }
        Ok(out)
    }
}

impl LineDecoder for NmeaDecoder {
    fn decode(&mut self, line: &[u8], now_ms: i64) -> Result<Vec<Reading>, SourceError> {
        let text = self.opts.text(line)?;
        if text.is_empty() {
            return Ok(Vec::new());
        }
        let body = self.body(text, line)?;
        // Sentences have at most ~20 fields; a small fixed bound keeps a hostile line of commas
        // from allocating much.
        let fields: Vec<&str> = body.split(',').take(32).collect();
        // Address: two-letter talker plus three-letter type. `get` instead of slicing, since a
        // checksummed line can still hold multi-byte characters.
        let address = fields.first().copied().unwrap_or("");
        if address.len() != 5 || address.starts_with('P') {
            return Ok(Vec::new());
        }
        match address.get(2..) {
            Some("GGA") => self.gga(&fields, now_ms, line),
            Some("RMC") => self.rmc(&fields, now_ms, line),
            _ => Ok(Vec::new()),
        }
    }
}

#[cfg(test)]
#[path = "nmea_tests.rs"]
mod tests;

//! Readings written with `COPY … FROM STDIN (FORMAT binary)` — PostgreSQL's bulk load,
//! which skips the planner and buffers rows per partition — for the large pages of a
//! catch-up; small pages (a live change of a few readings) keep the one-round-trip `INSERT
//! … SELECT FROM unnest` of `rows.rs`, since COPY costs a round trip more.
//!
//! The binary format (PostgreSQL docs, "COPY", "Binary Format"): an 11-byte signature, a
//! flags word and a header-extension length (both 0), then per row a 16-bit field count and
//! each field as a 32-bit length and its bytes — `int8` and `float8` are 8 bytes, big-endian
//! (a float8 as its IEEE 754 bits, so every value, `-0.0` included, is stored as sent) — and
//! a 16-bit −1 trailer.

use sqlx::{Postgres, Transaction};

use crate::error::{PgError, Result};

/// From this many readings a page's readings are copied rather than inserted.
pub(crate) const COPY_FROM_ROWS: usize = 2_000;

const SIGNATURE: &[u8; 11] = b"PGCOPY\n\xff\r\n\0";

/// One row's bytes: field count, then four 8-byte fields with their lengths.
const ROW_BYTES: usize = 2 + 4 * (4 + 8);

/// The COPY payload of readings given as parallel columns (equal lengths).
pub(crate) fn encode_readings(
    series: &[i64],
    ts: &[i64],
    change: &[i64],
    value: &[f64],
) -> Vec<u8> {
    let mut out = Vec::with_capacity(SIGNATURE.len() + 8 + series.len() * ROW_BYTES + 2);
    out.extend_from_slice(SIGNATURE);
    out.extend_from_slice(&0i32.to_be_bytes()); // flags
    out.extend_from_slice(&0i32.to_be_bytes()); // header extension length
    for i in 0..series.len() {
        out.extend_from_slice(&4i16.to_be_bytes());
        for field in [
            series[i].to_be_bytes(),
            ts[i].to_be_bytes(),
            change[i].to_be_bytes(),
            value[i].to_bits().to_be_bytes(),
        ] {
            out.extend_from_slice(&8i32.to_be_bytes());
            out.extend_from_slice(&field);
        }
    }
    out.extend_from_slice(&(-1i16).to_be_bytes());
    out
}

/// Copies readings into `readings` (routed to their partitions by PostgreSQL), in the
/// transaction: nothing is visible before it commits, and a failed copy fails it.
pub(crate) async fn copy_readings(
    tx: &mut Transaction<'_, Postgres>,
    series: &[i64],
    ts: &[i64],
    change: &[i64],
    value: &[f64],
) -> Result<()> {
    let ctx = "copying readings";
    let payload = encode_readings(series, ts, change, value);
    let mut copy = tx
        .copy_in_raw("COPY readings (series_id, ts, change_id, value) FROM STDIN (FORMAT binary)")
        .await
        .map_err(PgError::db(ctx))?;
    if let Err(e) = copy.send(payload).await {
        // The server is told the copy failed; the transaction is rolled back by the caller.
        let _ = copy.abort("sending the readings failed").await;
        return Err(PgError::db(ctx)(e));
    }
    copy.finish().await.map_err(PgError::db(ctx))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_payload_has_the_binary_format_of_the_docs() {
        let p = encode_readings(&[7], &[-1], &[3], &[-0.0]);
        assert_eq!(&p[..11], SIGNATURE);
        assert_eq!(&p[11..19], &[0; 8]);
        assert_eq!(&p[19..21], &4i16.to_be_bytes());
        assert_eq!(&p[21..25], &8i32.to_be_bytes());
        assert_eq!(&p[25..33], &7i64.to_be_bytes());
        assert_eq!(&p[37..45], &(-1i64).to_be_bytes());
        assert_eq!(&p[61..69], &(-0.0f64).to_bits().to_be_bytes());
        assert_eq!(&p[69..], &(-1i16).to_be_bytes());
        assert_eq!(p.len(), 11 + 8 + ROW_BYTES + 2);
    }
}

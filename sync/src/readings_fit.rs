//! Fitting a readings batch into changes a peer can receive: the size check of `append`
//! (a change over `max_change_bytes` could be stored but never synced) and the split of
//! `append_in_parts` (by series, then by time, until each part fits). Pure functions of the
//! batch and the writing actor, shared by the embedded store and the PostgreSQL hub so both
//! refuse and split alike.

use crate::seal::SEAL_MAX_BYTES;
use crate::{ActorId, Change, ChangeBody, Hlc, ReadingBatch, Result, StoreError};

/// `batch` back, with an upper bound of the encoded size of its change written by `actor`
/// (exact but for the seq and HLC, taken at their largest, and the seal, at its largest).
pub fn sized_readings(actor: ActorId, batch: ReadingBatch) -> (ReadingBatch, usize) {
    let probe = Change {
        actor,
        seq: u64::MAX,
        hlc: Hlc(u64::MAX),
        body: ChangeBody::Readings(batch),
        seal: None,
        pruned_rollups: Vec::new(),
    };
    // The seal is added when the change is written.
    let size = probe.encoded_len() + SEAL_MAX_BYTES;
    let ChangeBody::Readings(batch) = probe.body else {
        unreachable!("built as readings above")
    };
    (batch, size)
}

/// `batch` (normalized) as one change of `actor`, or [`StoreError::InvalidBatch`] naming
/// its size when that change would encode to more than `max` bytes.
pub fn fit_readings(actor: ActorId, batch: ReadingBatch, max: usize) -> Result<ReadingBatch> {
    let (batch, size) = sized_readings(actor, batch);
    if size > max {
        return Err(oversized(&batch, size, max));
    }
    Ok(batch)
}

/// `batch` (normalized) cut into parts whose changes each encode to at most `max` bytes:
/// halves by series, then by time, in order. One part when it fits already; an error when a
/// single reading cannot fit.
pub fn split_readings(
    actor: ActorId,
    batch: ReadingBatch,
    max: usize,
) -> Result<Vec<ReadingBatch>> {
    let mut todo = vec![batch];
    let mut parts = Vec::new();
    while let Some(part) = todo.pop() {
        let (part, size) = sized_readings(actor, part);
        if size > max && part.len() > 1 {
            let (first, second) = part.split_in_two();
            todo.push(second);
            todo.push(first);
            continue;
        }
        if size > max {
            return Err(oversized(&part, size, max));
        }
        parts.push(part);
    }
    Ok(parts)
}

/// The refusal of a batch whose change would encode to `size` bytes, over `max`.
fn oversized(batch: &ReadingBatch, size: usize, max: usize) -> StoreError {
    StoreError::InvalidBatch(format!(
        "the batch ({} readings in {} series) encodes to {size} bytes, over \
         max_change_bytes ({max}); send it in smaller batches",
        batch.len(),
        batch.series.len(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn batch(series: usize, readings: usize) -> ReadingBatch {
        let mut b = ReadingBatch::new();
        for s in 0..series {
            for i in 0..readings {
                b.push(&format!("s{s}"), 1_000 + i as i64, i as f64, Some("°C"));
            }
        }
        b
    }

    #[test]
    fn a_batch_that_fits_is_one_part_and_an_oversized_one_is_refused_by_fit() {
        let actor = ActorId::random();
        let (_, size) = sized_readings(actor, batch(3, 50));
        assert_eq!(split_readings(actor, batch(3, 50), size).unwrap().len(), 1);
        assert!(fit_readings(actor, batch(3, 50), size).is_ok());
        let err = fit_readings(actor, batch(3, 50), size - 1).unwrap_err();
        assert!(err.to_string().contains("max_change_bytes"), "{err}");
    }

    #[test]
    fn split_parts_each_fit_and_keep_every_reading_in_order() {
        let actor = ActorId::random();
        let (_, size) = sized_readings(actor, batch(4, 200));
        let max = size / 5;
        let parts = split_readings(actor, batch(4, 200), max).unwrap();
        assert!(parts.len() >= 5, "{} parts", parts.len());
        let mut seen = Vec::new();
        for p in parts {
            let (p, size) = sized_readings(actor, p);
            assert!(size <= max, "{size} > {max}");
            for s in &p.series {
                seen.extend(s.ts.iter().map(|&ts| (s.name.clone(), ts)));
            }
        }
        let mut want = Vec::new();
        for s in &batch(4, 200).series {
            want.extend(s.ts.iter().map(|&ts| (s.name.clone(), ts)));
        }
        assert_eq!(seen, want);
    }

    #[test]
    fn a_single_reading_too_large_is_refused_by_split() {
        let actor = ActorId::random();
        let err = split_readings(actor, batch(1, 1), 10).unwrap_err();
        assert_eq!(err.code(), "invalid_batch");
    }
}

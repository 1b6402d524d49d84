//! Pure register logic: grouping configured registers into as few reads as possible, and
//! turning raw words or bits into scaled values. No I/O, so all of it is unit-tested here.

use super::config::{RegisterConfig, RegisterFunction, RegisterType, WordOrder};

/// Most registers one read may request (Modbus limit for functions 0x03/0x04).
const MAX_WORDS: u32 = 125;
/// Most bits one read may request (Modbus limit for functions 0x01/0x02).
const MAX_BITS: u32 = 2000;

/// One read request covering one or more configured registers.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Batch {
    /// Table to read from.
    pub function: RegisterFunction,
    /// First address read.
    pub start: u16,
    /// Number of registers (or bits) read.
    pub count: u16,
    /// Indices into the configured register list, in address order.
    pub members: Vec<usize>,
}

/// Groups `registers` into reads: per table, sorted by address, merging registers that are
/// contiguous or overlap. Gaps are never bridged — reading an unmapped address makes many
/// devices refuse the whole request.
pub(crate) fn plan(registers: &[RegisterConfig]) -> Vec<Batch> {
    let mut order: Vec<usize> = (0..registers.len()).collect();
    order.sort_by_key(|&i| (registers[i].function, registers[i].address));
    let mut batches: Vec<Batch> = Vec::new();
    for i in order {
        let r = &registers[i];
        let start = u32::from(r.address);
        let end = start + u32::from(r.effective_type().width());
        let limit = if r.function.is_bit() {
            MAX_BITS
        } else {
            MAX_WORDS
        };
        if let Some(b) = batches.last_mut() {
            let b_start = u32::from(b.start);
            let b_end = b_start + u32::from(b.count);
            let new_end = end.max(b_end);
            if b.function == r.function && start <= b_end && new_end - b_start <= limit {
                // Fits: both bounds are within u16 range because `end` ≤ 65536 is validated
                // and count ≤ limit.
                b.count = (new_end - b_start) as u16;
                b.members.push(i);
                continue;
            }
        }
        batches.push(single(registers, i));
    }
    batches
}

/// A read of just register `i`.
pub(crate) fn single(registers: &[RegisterConfig], i: usize) -> Batch {
    let r = &registers[i];
    Batch {
        function: r.function,
        start: r.address,
        count: r.effective_type().width(),
        members: vec![i],
    }
}

/// The raw (unscaled) value of `r` from `words` read starting at address `start`. `None` if the
/// response is too short (a misbehaving device) — callers report it.
pub(crate) fn raw_from_words(r: &RegisterConfig, start: u16, words: &[u16]) -> Option<f64> {
    let at = usize::from(r.address.checked_sub(start)?);
    let w = words.get(at..at + usize::from(r.effective_type().width()))?;
    let combined = || {
        let (hi, lo) = match r.word_order {
            WordOrder::Big => (w[0], w[1]),
            WordOrder::Little => (w[1], w[0]),
        };
        (u32::from(hi) << 16) | u32::from(lo)
    };
    Some(match r.effective_type() {
        RegisterType::U16 => f64::from(w[0]),
        RegisterType::I16 => f64::from(w[0] as i16),
        RegisterType::Bool => f64::from(u8::from(w[0] != 0)),
        RegisterType::U32 => f64::from(combined()),
        RegisterType::I32 => f64::from(combined() as i32),
        RegisterType::F32 => f64::from(f32::from_bits(combined())),
    })
}

/// The raw value (0 or 1) of bit register `r` from `bits` read starting at `start`.
pub(crate) fn raw_from_bits(r: &RegisterConfig, start: u16, bits: &[bool]) -> Option<f64> {
    let at = usize::from(r.address.checked_sub(start)?);
    bits.get(at).map(|&b| f64::from(u8::from(b)))
}

/// `raw * scale + offset`, or `None` if that is not finite (an f32 register holding NaN, as
/// many devices report a failed sensor).
pub(crate) fn scaled(r: &RegisterConfig, raw: f64) -> Option<f64> {
    Some(raw * r.scale + r.offset).filter(|v| v.is_finite())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reg(
        name: &str,
        function: RegisterFunction,
        address: u16,
        ty: RegisterType,
    ) -> RegisterConfig {
        let mut r = RegisterConfig::new(name, function, address);
        r.data_type = Some(ty);
        r
    }

    #[test]
    fn contiguous_registers_share_a_read_and_gaps_split() {
        use RegisterFunction::*;
        use RegisterType::*;
        let regs = vec![
            reg("c", Holding, 3, F32), // 3..5
            reg("a", Holding, 0, U16), // 0..1
            reg("b", Holding, 1, I32), // 1..3
            reg("gap", Holding, 10, U16),
            reg("in", Input, 0, U16),
            reg("k1", Coil, 0, Bool),
            reg("k2", Coil, 1, Bool),
            reg("same", Holding, 10, I16), // overlaps `gap`: same address, other view
        ];
        let plan = plan(&regs);
        let summary: Vec<(RegisterFunction, u16, u16, Vec<usize>)> = plan
            .into_iter()
            .map(|b| (b.function, b.start, b.count, b.members))
            .collect();
        assert_eq!(
            summary,
            [
                (Holding, 0, 5, vec![1, 2, 0]),
                (Holding, 10, 1, vec![3, 7]),
                (Input, 0, 1, vec![4]),
                (Coil, 0, 2, vec![5, 6]),
            ]
        );
    }

    #[test]
    fn batches_respect_the_protocol_limit() {
        let regs: Vec<RegisterConfig> = (0..200)
            .map(|i| {
                reg(
                    &format!("r{i}"),
                    RegisterFunction::Input,
                    i,
                    RegisterType::U16,
                )
            })
            .collect();
        let plan = plan(&regs);
        assert_eq!(plan.iter().map(|b| b.count).collect::<Vec<_>>(), [125, 75]);
        let wide = vec![reg(
            "top",
            RegisterFunction::Holding,
            65534,
            RegisterType::U32,
        )];
        assert_eq!(super::plan(&wide)[0].count, 2);
    }

    #[test]
    fn word_orders_and_types() {
        use RegisterType::*;
        let h = RegisterFunction::Holding;
        let words = [0x1234, 0x5678, 0xFFFE];
        let mut r = reg("x", h, 10, U32);
        assert_eq!(
            raw_from_words(&r, 10, &words),
            Some(f64::from(0x1234_5678u32))
        );
        r.word_order = WordOrder::Little;
        assert_eq!(
            raw_from_words(&r, 10, &words),
            Some(f64::from(0x5678_1234u32))
        );
        assert_eq!(
            raw_from_words(&reg("x", h, 12, I16), 10, &words),
            Some(-2.0)
        );
        assert_eq!(
            raw_from_words(&reg("x", h, 12, U16), 10, &words),
            Some(65534.0)
        );
        assert_eq!(
            raw_from_words(&reg("x", h, 11, I32), 10, &words),
            Some(f64::from(0x5678_FFFEu32 as i32))
        );
        assert_eq!(
            raw_from_words(&reg("x", h, 12, Bool), 10, &words),
            Some(1.0)
        );
        let pi = 3.5f32.to_bits();
        let f = [(pi >> 16) as u16, pi as u16];
        assert_eq!(raw_from_words(&reg("x", h, 0, F32), 0, &f), Some(3.5));
        let mut little = reg("x", h, 0, F32);
        little.word_order = WordOrder::Little;
        assert_eq!(raw_from_words(&little, 0, &[f[1], f[0]]), Some(3.5));
    }

    #[test]
    fn short_responses_are_none_not_a_panic() {
        let r = reg("x", RegisterFunction::Holding, 11, RegisterType::F32);
        assert_eq!(raw_from_words(&r, 10, &[1, 2]), None);
        assert_eq!(raw_from_words(&r, 12, &[1, 2, 3]), None);
        let c = reg("c", RegisterFunction::Coil, 5, RegisterType::Bool);
        assert_eq!(raw_from_bits(&c, 0, &[true; 5]), None);
        assert_eq!(
            raw_from_bits(&c, 0, &[false, false, false, false, false, true]),
            Some(1.0)
        );
    }

    #[test]
    fn scaling_and_nan() {
        let mut r = reg("x", RegisterFunction::Holding, 0, RegisterType::I16);
        r.scale = 0.1;
        r.offset = -40.0;
        assert!((scaled(&r, 612.0).unwrap() - 21.2).abs() < 1e-9);
        assert_eq!(scaled(&r, f64::NAN), None);
        assert_eq!(scaled(&r, f64::from(f32::INFINITY)), None);
    }
}

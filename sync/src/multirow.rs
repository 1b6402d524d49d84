//! Multi-row statements on rusqlite: `INSERT … VALUES (?, ?), (?, ?), …` and `WITH k AS
//! (VALUES …)` lists built for a chunk of rows, parameters bound by position. Rows are split
//! into chunks whose sizes are powers of two ([`statement_chunks`]), so each kind of
//! statement comes in at most nine sizes and every one stays in the connection's statement
//! cache. Compiling a statement of a new size costs more than running it: before, a batch
//! of 1,000 readings compiled a 1,000-row INSERT on every append (SQLite's parser and code
//! generator were the writer's top frames; docs/PERFORMANCE.md).

use rusqlite::types::ToSql;
use rusqlite::{Connection, Statement};

/// Most rows in one multi-row statement. A cached statement holds its compiled program and
/// parameter cells (~100 KB at 256 rows of 4 columns); the sizes 1, 2, 4, …, 256 of one
/// kind together hold about twice the largest.
const MAX_STATEMENT_ROWS: usize = 256;

/// `rows` in chunks whose lengths are powers of two, largest first, each at most `max` (and
/// [`MAX_STATEMENT_ROWS`]): 1,000 rows are 256 + 256 + 256 + 128 + 64 + 32 + 8.
pub(crate) fn statement_chunks<T>(rows: &[T], max: usize) -> impl Iterator<Item = &[T]> {
    let cap = floor_power_of_two(max.clamp(1, MAX_STATEMENT_ROWS));
    let mut rest = rows;
    std::iter::from_fn(move || {
        if rest.is_empty() {
            return None;
        }
        let (chunk, tail) = rest.split_at(cap.min(floor_power_of_two(rest.len())));
        rest = tail;
        Some(chunk)
    })
}

/// The largest power of two ≤ `n` (`n` ≥ 1).
fn floor_power_of_two(n: usize) -> usize {
    1 << (usize::BITS - 1 - n.leading_zeros())
}

/// `head` + `rows` groups of `cols` placeholders separated by commas + `tail`.
pub(crate) fn values_sql(head: &str, cols: usize, rows: usize, tail: &str) -> String {
    let group = {
        let mut g = String::with_capacity(cols * 2 + 2);
        g.push('(');
        for c in 0..cols {
            if c > 0 {
                g.push(',');
            }
            g.push('?');
        }
        g.push(')');
        g
    };
    let mut sql = String::with_capacity(head.len() + tail.len() + rows * (group.len() + 1));
    sql.push_str(head);
    for r in 0..rows {
        if r > 0 {
            sql.push(',');
        }
        sql.push_str(&group);
    }
    sql.push_str(tail);
    sql
}

/// `head` + `n` comma-separated placeholders + `tail` (for `IN (…)` lists).
pub(crate) fn list_sql(head: &str, n: usize, tail: &str) -> String {
    values_sql(head, 1, n, tail).replace("(?)", "?")
}

/// Runs `f` on `sql` prepared, from the connection's statement cache.
pub(crate) fn with_statement<T>(
    conn: &Connection,
    sql: &str,
    f: impl FnOnce(&mut Statement<'_>) -> rusqlite::Result<T>,
) -> rusqlite::Result<T> {
    let mut st = conn.prepare_cached(sql)?;
    f(&mut st)
}

/// Binds parameters by position, 1, 2, 3, …
pub(crate) struct Binder<'a, 's> {
    st: &'a mut Statement<'s>,
    at: usize,
}

impl<'a, 's> Binder<'a, 's> {
    pub fn new(st: &'a mut Statement<'s>) -> Self {
        Binder { st, at: 0 }
    }

    /// Binds the next parameter.
    pub fn bind<T: ToSql>(&mut self, v: T) -> rusqlite::Result<&mut Self> {
        self.at += 1;
        self.st.raw_bind_parameter(self.at, v)?;
        Ok(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builds_placeholder_lists() {
        assert_eq!(values_sql("V ", 2, 3, ";"), "V (?,?),(?,?),(?,?);");
        assert_eq!(list_sql("IN (", 3, ")"), "IN (?,?,?)");
        let conn = Connection::open_in_memory().unwrap();
        let sum: i64 = with_statement(&conn, &list_sql("SELECT ", 1, " + 1"), |st| {
            Binder::new(st).bind(41i64)?;
            let mut rows = st.raw_query();
            rows.next()?.unwrap().get(0)
        })
        .unwrap();
        assert_eq!(sum, 42);
    }

    #[test]
    fn chunks_are_powers_of_two_in_order_and_cover_every_row() {
        let rows: Vec<usize> = (0..1000).collect();
        let lens: Vec<usize> = statement_chunks(&rows, 2000).map(<[usize]>::len).collect();
        assert_eq!(lens, [256, 256, 256, 128, 64, 32, 8]);
        let lens: Vec<usize> = statement_chunks(&rows, 100).map(<[usize]>::len).collect();
        assert_eq!(lens[..15], [64; 15]);
        assert_eq!(lens[15..], [32, 8]);
        for n in [0, 1, 2, 3, 255, 256, 257, 511, 4097] {
            let rows: Vec<usize> = (0..n).collect();
            let again: Vec<usize> = statement_chunks(&rows, 500).flatten().copied().collect();
            assert_eq!(again, rows, "{n} rows");
            assert!(
                statement_chunks(&rows, 500).all(|c| c.len().is_power_of_two() && c.len() <= 256)
            );
        }
    }
}

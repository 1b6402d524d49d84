//! Multi-row statements on rusqlite: `INSERT … VALUES (?, ?), (?, ?), …` and `WITH k AS
//! (VALUES …)` lists built for a chunk of rows, parameters bound by position. Full chunks and
//! small ones are kept in the connection's statement cache; other sizes are prepared for one
//! use, so the cache does not fill with large one-off statements (each holds memory).

use rusqlite::types::ToSql;
use rusqlite::{Connection, Statement};

/// Multi-row statements of at most this many rows are cached whatever their size.
const CACHED_ROWS: usize = 64;

/// Whether a multi-row statement of `rows` rows (chunks of `chunk`) is worth caching.
pub(crate) fn cache_statement(rows: usize, chunk: usize) -> bool {
    rows <= CACHED_ROWS || rows == chunk
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

/// Runs `f` on `sql` prepared (from the cache when `cached`).
pub(crate) fn with_statement<T>(
    conn: &Connection,
    sql: &str,
    cached: bool,
    f: impl FnOnce(&mut Statement<'_>) -> rusqlite::Result<T>,
) -> rusqlite::Result<T> {
    if cached {
        let mut st = conn.prepare_cached(sql)?;
        f(&mut st)
    } else {
        let mut st = conn.prepare(sql)?;
        f(&mut st)
    }
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
        let sum: i64 = with_statement(&conn, &list_sql("SELECT ", 1, " + 1"), true, |st| {
            Binder::new(st).bind(41i64)?;
            let mut rows = st.raw_query();
            rows.next()?.unwrap().get(0)
        })
        .unwrap();
        assert_eq!(sum, 42);
    }
}

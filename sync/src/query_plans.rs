//! The loop order of the store's multi-table queries whose speed depends on it, checked
//! against the bundled SQLite's planner on a migrated store.
//!
//! The store runs no `ANALYZE`, so SQLite plans from its built-in guesses, and those change
//! between SQLite releases: 3.51 (bundled by rusqlite 0.39) walks every version of a key to
//! find its heads, where 3.40 looked up the heads first. The queries below fix their order with
//! `CROSS JOIN`; these tests fail if a statement or an upgrade of SQLite loses it.

use rusqlite::Connection;

use crate::StoreConfig;

/// `EXPLAIN QUERY PLAN` of `sql`, one detail line per step (parameters bound to 1).
fn plan(conn: &Connection, sql: &str) -> Vec<String> {
    let mut st = conn
        .prepare(&format!("EXPLAIN QUERY PLAN {sql}"))
        .expect("a valid statement");
    let params: Vec<i64> = vec![1; st.parameter_count()];
    st.query_map(rusqlite::params_from_iter(params), |r| {
        r.get::<_, String>(3)
    })
    .expect("explain")
    .collect::<rusqlite::Result<_>>()
    .expect("explain rows")
}

/// Asserts the plan's steps include each of `steps`, in that order; returns the plan.
fn assert_steps(conn: &Connection, what: &str, sql: &str, steps: &[&str]) -> Vec<String> {
    let got = plan(conn, sql);
    let mut at = 0;
    for step in steps {
        match got[at..].iter().position(|line| line.contains(step)) {
            Some(i) => at += i + 1,
            None => panic!(
                "{what}: expected the step {step:?} (after the ones before it) in the plan {got:#?}"
            ),
        }
    }
    got
}

fn migrated_store() -> (tempfile::TempDir, Connection) {
    let dir = tempfile::tempdir().expect("tempdir");
    let (conn, _) =
        crate::schema::open_writer(&dir.path().join("plans.db"), &StoreConfig::default())
            .expect("a new store");
    (dir, conn)
}

/// Each head is found by its key, then its version by the whole primary key: never a walk
/// over the key's versions.
const HEAD_VERSION_BY_PRIMARY_KEY: &str =
    "SEARCH v USING PRIMARY KEY (key_id=? AND hlc=? AND change_id=?)";

#[test]
fn a_keys_heads_are_read_without_walking_its_versions() {
    let (_dir, conn) = migrated_store();
    assert_steps(
        &conn,
        "get",
        crate::docs_query::HEADS_OF_KEY,
        &[
            "SEARCH k",
            "SEARCH h USING PRIMARY KEY (key_id=?)",
            HEAD_VERSION_BY_PRIMARY_KEY,
        ],
    );
    assert_steps(
        &conn,
        "a listing page",
        crate::docs_query::HEADS_OF_KEYS_PAGE,
        &[
            "SEARCH h USING PRIMARY KEY (key_id=?)",
            HEAD_VERSION_BY_PRIMARY_KEY,
        ],
    );
    assert_steps(
        &conn,
        "a delete's tombstone check",
        crate::docwrite::HEAD_TOMBSTONES,
        &[
            "SEARCH h USING PRIMARY KEY (key_id=?)",
            HEAD_VERSION_BY_PRIMARY_KEY,
        ],
    );
}

#[test]
fn an_as_of_read_scans_one_range_of_a_keys_versions() {
    let (_dir, conn) = migrated_store();
    let got = assert_steps(
        &conn,
        "as-of",
        crate::docs_query::VERSIONS_UP_TO,
        &["SEARCH v USING PRIMARY KEY (key_id=? AND hlc<?)"],
    );
    assert!(
        !got.iter().any(|l| l.contains("TEMP B-TREE")),
        "as-of sorts: {got:#?}"
    );
}

#[test]
fn the_clock_at_open_reads_the_actors_not_the_change_log() {
    let (_dir, conn) = migrated_store();
    for sql in [crate::rebase::HIGHEST_HLC, crate::rebase::NEWEST_BY_ACTOR] {
        let got = plan(&conn, sql);
        assert!(
            got.iter().all(|l| !l.contains("changes")),
            "{sql}: {got:#?}"
        );
    }
}

#[test]
fn a_correction_finds_its_readings_from_the_open_timings() {
    let (_dir, conn) = migrated_store();
    let got = assert_steps(
        &conn,
        "a time correction",
        crate::correct::OPEN_TIMINGS,
        &[
            "SEARCH t USING INDEX reading_timing_open (boot_id=?)",
            "SEARCH c USING INTEGER PRIMARY KEY (rowid=?)",
        ],
    );
    // In index order: the scan stops at the limit instead of sorting every open timing.
    assert!(
        !got.iter().any(|l| l.contains("TEMP B-TREE")),
        "a time correction sorts: {got:#?}"
    );
}

//! Timing records and gap records on a PostgreSQL hub: listed as a SQLite store holding
//! the same changes lists them (records, series filter, paging), positions aside (each
//! store's own).

use super::*;

const MIN: i64 = 60_000;

#[tokio::test]
async fn timing_and_gap_records_on_postgres_list_as_on_sqlite() {
    let Some(db) = TestDb::new("records").await else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (device(&dir, "a.db").await, device(&dir, "b.db").await);
    busy_device(&a, 1).await; // timing records, one corrected
    busy_device(&b, 2).await;
    // An uncorrected timing record on b, of a second series.
    let mut batch = ReadingBatch::new();
    batch.push("pi.volts", 90_000, 5.1, None);
    batch.push("pi.temp", 90_000, 42.0, None);
    batch.timing = Some(ReadingTiming {
        boot_id: BootId([9; 16]),
        offset_ms: 0,
    });
    b.append(batch).await.unwrap();
    // Gap records on a: readings dropped before upstream had them.
    for m in 0..6 {
        let mut batch = ReadingBatch::new();
        for i in 0..30 {
            batch.push("g.a", T0 + m * MIN + i * 1_000, 1.0, None);
            batch.push("g.b", T0 + m * MIN + i * 1_000, 2.0, None);
        }
        a.append(batch).await.unwrap();
    }
    let r = a
        .prune_before(T0 + 4 * MIN, 100, &Unacked::Drop(VersionVector::new()))
        .await
        .unwrap();
    assert!(r.gaps >= 1, "{r:?}");
    let hub = db.replica().await;
    sync(&a, &hub, 1 << 20).await;
    sync(&b, &hub, 1 << 20).await;
    // A SQLite store holding the same changes.
    let r = device(&dir, "r.db").await;
    sync(&hub, &r, 1 << 20).await;
    assert_eq!(r.digest(), hub.digest().await.unwrap());

    for series in [None, Some("pi.temp"), Some("pi.volts"), Some("nope")] {
        for limit in [1, 2, 1000] {
            let mut want = Vec::new();
            let mut after = 0;
            loop {
                let page = r
                    .reading_timing(series.map(Into::into), after, limit)
                    .await
                    .unwrap();
                let Some(&(last, _)) = page.last() else { break };
                after = last;
                want.extend(page.into_iter().map(|(_, t)| t));
            }
            let mut got = Vec::new();
            let mut after = 0;
            loop {
                let page = hub.reading_timing(series, after, limit).await.unwrap();
                let Some(&(last, _)) = page.last() else { break };
                assert!(page.len() <= limit);
                after = last;
                got.extend(page.into_iter().map(|(_, t)| t));
            }
            assert_eq!(got, want, "timing, series {series:?}, limit {limit}");
        }
        for limit in [1, 1000] {
            let want: Vec<_> = r
                .gaps(series.map(Into::into), 0, 1000)
                .await
                .unwrap()
                .into_iter()
                .map(|g| (g.change, g.record))
                .collect();
            let mut got = Vec::new();
            let mut after = 0;
            loop {
                let page = hub.gaps(series, after, limit).await.unwrap();
                let Some(last) = page.last() else { break };
                after = last.local_id;
                got.extend(page.into_iter().map(|g| (g.change, g.record)));
            }
            assert_eq!(got, want, "gaps, series {series:?}, limit {limit}");
        }
    }
    let timing = hub.reading_timing(None, 0, 1000).await.unwrap();
    assert!(timing.len() >= 2, "{timing:?}");
    assert!(timing.iter().any(|(_, t)| t.delta_ms.is_some()));
    assert!(timing.iter().any(|(_, t)| t.delta_ms.is_none()));
    let gaps = hub.gaps(Some("g.a"), 0, 1000).await.unwrap();
    assert!(!gaps.is_empty());
    assert!(
        gaps.iter()
            .all(|g| g.record.entries.iter().all(|e| e.series == "g.a"))
    );
    db.drop().await;
}

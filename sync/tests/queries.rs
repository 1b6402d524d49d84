//! Store queries that must not scan more than they return: series pages (name order, each
//! series once across pages, counts and spans from its own rollups), the latest reading of
//! every series in one statement, and prefix listings across many deleted keys.

use kdelta_sync::*;
use serde_json::json;

const T0: i64 = 1_764_000_000_000;

async fn open(dir: &tempfile::TempDir) -> Store {
    Store::open(dir.path().join("q.db"), StoreConfig::default())
        .await
        .unwrap()
}

#[tokio::test]
async fn series_pages_cover_every_series_once_in_name_order() {
    let dir = tempfile::tempdir().unwrap();
    let s = open(&dir).await;
    let mut b = ReadingBatch::new();
    for i in 0..25 {
        // Series i: i + 1 readings, one per minute from T0 + i s.
        for j in 0..=i {
            b.push(
                &format!("s{i:02}"),
                T0 + i * 1000 + j * 60_000,
                j as f64,
                Some("V"),
            );
        }
    }
    s.append(b).await.unwrap();
    let mut seen = Vec::new();
    let mut after: Option<String> = None;
    let mut pages = 0;
    loop {
        let page = s.series_page(after.as_deref(), 7).await.unwrap();
        pages += 1;
        assert!(page.series.len() <= 7);
        seen.extend(page.series);
        match page.next_after {
            Some(next) => after = Some(next),
            None => break,
        }
    }
    assert_eq!(pages, 4, "25 series in pages of 7: 7, 7, 7, 4");
    let names: Vec<String> = seen.iter().map(|x| x.name.clone()).collect();
    let expected: Vec<String> = (0..25).map(|i| format!("s{i:02}")).collect();
    assert_eq!(names, expected);
    for (i, x) in seen.iter().enumerate() {
        let i = i as i64;
        assert_eq!(x.count, i as u64 + 1, "{}", x.name);
        assert_eq!(x.first_ts, Some(T0 + i * 1000));
        assert_eq!(x.last_ts, Some(T0 + i * 1000 + i * 60_000));
        assert_eq!(x.unit.as_deref(), Some("V"));
    }
    assert_eq!(s.series().await.unwrap(), seen);
    // Exactly a full last page: the next one is empty and ends the listing.
    let page = s.series_page(Some("s17"), 7).await.unwrap();
    assert_eq!(page.next_after.as_deref(), Some("s24"));
    let page = s.series_page(Some("s24"), 7).await.unwrap();
    assert_eq!((page.series.len(), page.next_after), (0, None));
    s.close().await;
}

#[tokio::test]
async fn latest_of_every_series_and_of_named_ones() {
    let dir = tempfile::tempdir().unwrap();
    let s = open(&dir).await;
    let mut b = ReadingBatch::new();
    b.push("a", T0, 1.0, Some("V"));
    b.push("a", T0 + 5, 2.0, None);
    b.push("b", T0 + 9, 7.0, None);
    s.append(b).await.unwrap();
    // Another change with a reading of `a` at the same last time: the higher value wins.
    let mut b = ReadingBatch::new();
    b.push("a", T0 + 5, 3.5, None);
    b.push("a", T0 + 1, 9.0, None);
    s.append(b).await.unwrap();

    let all = s.latest(None).await.unwrap();
    let got: Vec<(&str, i64, f64)> = all
        .iter()
        .map(|l| (l.series.as_str(), l.ts, l.value))
        .collect();
    assert_eq!(got, [("a", T0 + 5, 3.5), ("b", T0 + 9, 7.0)]);
    assert_eq!(all[0].unit.as_deref(), Some("V"));
    let named = s
        .latest(Some(&["b".to_owned(), "a".to_owned()]))
        .await
        .unwrap();
    assert_eq!(
        named.iter().map(|l| l.series.as_str()).collect::<Vec<_>>(),
        ["b", "a"],
        "in the order asked"
    );
    let err = s
        .latest(Some(&["a".to_owned(), "nope".to_owned()]))
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::UnknownSeries(n) if n == "nope"));
    s.close().await;
}

#[tokio::test]
async fn listing_by_prefix_skips_many_deleted_keys_and_follows_winners() {
    let dir = tempfile::tempdir().unwrap();
    let s = open(&dir).await;
    // 600 keys under the prefix, every one but each 100th deleted (more deleted keys than
    // one read looks at), and keys around the prefix that must not appear.
    let mut entries = Vec::new();
    for i in 0..600 {
        entries.push(BatchEntry::put(format!("p/{i:03}"), json!(i)));
    }
    for chunk in entries.chunks(500) {
        s.write_batch(chunk.to_vec()).await.unwrap();
    }
    let deletes: Vec<BatchEntry> = (0..600)
        .filter(|i| i % 100 != 42)
        .map(|i| BatchEntry::delete(format!("p/{i:03}")))
        .collect();
    for chunk in deletes.chunks(500) {
        s.write_batch(chunk.to_vec()).await.unwrap();
    }
    s.put("o/1", &json!(0)).await.unwrap();
    s.put("q/1", &json!(0)).await.unwrap();
    let live: Vec<String> = (0..600)
        .filter(|i| i % 100 == 42)
        .map(|i| format!("p/{i:03}"))
        .collect();

    let listed = s.list("p/", None, 1000, None).await.unwrap();
    let keys: Vec<String> = listed.iter().map(|d| d.winner.key.clone()).collect();
    assert_eq!(keys, live);
    assert!(
        listed
            .iter()
            .all(|d| d.siblings == 1 && d.winner.value.is_some())
    );
    assert_eq!(listed[1].winner.value, Some(json!(142)));

    // Paged by `after`, two at a time.
    let mut paged = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let page = s.list("p/", None, 2, after.as_deref()).await.unwrap();
        if page.is_empty() {
            break;
        }
        after = page.last().map(|d| d.winner.key.clone());
        paged.extend(page.into_iter().map(|d| d.winner.key));
    }
    assert_eq!(paged, live);

    // A key whose winner is a tombstone but with a live sibling is not listed; one whose
    // winner is live with a deleted sibling is, with its sibling count.
    let other = Store::open(dir.path().join("other.db"), StoreConfig::default())
        .await
        .unwrap();
    s.put("p/042", &json!("here")).await.unwrap();
    other.put("p/042", &json!("there")).await.unwrap();
    other.delete("p/042").await.unwrap();
    other.put("p/142", &json!("concurrent")).await.unwrap();
    s.apply_remote(
        other
            .changes_since(&s.version_vector(), usize::MAX)
            .await
            .unwrap(),
    )
    .await
    .unwrap();
    let state = s.get("p/042").await.unwrap().unwrap();
    assert_eq!(state.siblings, 2);
    let listed = s.list("p/", None, 1000, None).await.unwrap();
    let expect_042 = (!state.winner.is_tombstone()).then_some("p/042");
    let got: Vec<(&str, usize)> = listed
        .iter()
        .map(|d| (d.winner.key.as_str(), d.siblings))
        .collect();
    let mut want: Vec<(&str, usize)> = Vec::new();
    if let Some(k) = expect_042 {
        want.push((k, 2));
    }
    want.push(("p/142", 2));
    want.extend(live[2..].iter().map(|k| (k.as_str(), 1)));
    assert_eq!(got, want);
    // The as-of listing agrees with the current one at the latest point.
    let at = s
        .list("p/", Some(AsOf::Hlc(s.last_hlc())), 1000, None)
        .await
        .unwrap();
    assert_eq!(at, listed);
    s.close().await;
    other.close().await;
}

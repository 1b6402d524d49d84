//! `kdelta peers`: the running agent's sync peers (`GET /v1/sync/peers`), and
//! `kdelta sync now` (`POST /v1/sync/now`).

use serde_json::Value;

use super::args::{Conn, SyncNowArgs};
use super::show::{array, cell, pretty, table, ts};

/// `kdelta peers`.
pub async fn peers(conn: Conn) -> anyhow::Result<()> {
    let c = conn.client()?;
    let answer = c.get(c.url("v1/sync/peers", &[])).await?;
    if conn.json {
        println!("{}", pretty(&answer));
        return Ok(());
    }
    let rows: Vec<Vec<String>> = array(&answer, &["peers"])
        .iter()
        .map(|p| {
            let field = |k: &str| p.get(k).cloned().unwrap_or(Value::Null);
            // A fork (a cloned store) outweighs whatever else went wrong, then a failed
            // session, then changes held back for their clock (the rest of the link
            // flows); a change too large for the peer, or one it is too old to check, is
            // shown when nothing else is.
            let error = [
                "/last_fork/message",
                "/last_error/message",
                "/last_quarantine/message",
                "/last_too_large/message",
                "/last_held_for_upgrade/message",
            ]
            .iter()
            .find_map(|at| p.pointer(at).filter(|v| !v.is_null()).cloned())
            .unwrap_or(Value::Null);
            vec![
                cell(&field("name"), 24),
                cell(&field("direction"), 8),
                if field("connected") == Value::Bool(true) {
                    "yes".into()
                } else {
                    "no".into()
                },
                cell(&field("phase"), 11),
                ts(&field("last_sync_ms")),
                cell(&field("lag_to_peer"), 10),
                cell(&field("lag_from_peer"), 10),
                cell(&field("bytes_in"), 12),
                cell(&field("bytes_out"), 12),
                cell(&field("changes_quarantined"), 10),
                cell(&error, 60),
            ]
        })
        .collect();
    table(
        &[
            "NAME",
            "DIR",
            "CONNECTED",
            "PHASE",
            "LAST SYNC",
            "LAG OUT",
            "LAG IN",
            "BYTES IN",
            "BYTES OUT",
            "HELD BACK",
            "LAST ERROR",
        ],
        &rows,
    );
    // Accepted credentials: role, and the actor a device credential is bound to.
    let credentials: Vec<Vec<String>> = array(&answer, &["credentials"])
        .iter()
        .map(|c| {
            let field = |k: &str| c.get(k).cloned().unwrap_or(Value::Null);
            let refused: u64 = array(&answer, &["peers"])
                .iter()
                .filter(|p| p.get("name") == c.get("name"))
                .filter_map(|p| p.get("changes_refused").and_then(Value::as_u64))
                .sum();
            vec![
                cell(&field("name"), 24),
                cell(&field("kind"), 11),
                cell(&field("role"), 6),
                cell(&field("bound_actor"), 32),
                refused.to_string(),
            ]
        })
        .collect();
    if !credentials.is_empty() {
        println!();
        table(
            &["CREDENTIAL", "KIND", "ROLE", "BOUND ACTOR", "REFUSED"],
            &credentials,
        );
    }
    Ok(())
}

/// `kdelta sync now`: wakes the outbound peers and prints how each one ended; an error (exit
/// code 1) when any did not sync.
pub async fn sync_now(args: SyncNowArgs) -> anyhow::Result<()> {
    let c = args.conn.client()?;
    let mut query = vec![(
        "timeout",
        humantime::format_duration(args.timeout).to_string(),
    )];
    if let Some(p) = &args.peer {
        query.push(("peer", p.clone()));
    }
    let answer = c
        .post_and_wait(c.url("v1/sync/now", &query), args.timeout)
        .await?;
    let peers = array(&answer, &["peers"]);
    if args.conn.json {
        println!("{}", pretty(&answer));
    } else if peers.is_empty() {
        println!("no outbound sync peers are configured ([[sync.peers]])");
    } else {
        let rows: Vec<Vec<String>> = peers
            .iter()
            .map(|p| {
                let field = |k: &str| p.get(k).cloned().unwrap_or(Value::Null);
                let secs = field("elapsed_ms").as_u64().unwrap_or(0) as f64 / 1000.0;
                let detail = match p.get("result").and_then(Value::as_str) {
                    Some("synced") => String::new(),
                    _ => p
                        .pointer("/error/message")
                        .and_then(Value::as_str)
                        .unwrap_or("")
                        .to_owned(),
                };
                vec![
                    cell(&field("name"), 24),
                    cell(&field("result"), 8),
                    format!("{secs:.1} s"),
                    cell(&field("lag_to_peer"), 10),
                    cell(&field("lag_from_peer"), 10),
                    cell(&Value::String(detail), 100),
                ]
            })
            .collect();
        table(
            &["NAME", "RESULT", "TIME", "LAG OUT", "LAG IN", "ERROR"],
            &rows,
        );
    }
    let failed = peers
        .iter()
        .filter(|p| p.get("result").and_then(Value::as_str) != Some("synced"))
        .count();
    if failed > 0 {
        anyhow::bail!("{failed} of {} sync peers did not sync", peers.len());
    }
    Ok(())
}

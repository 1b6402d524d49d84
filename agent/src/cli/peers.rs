//! `kdelta peers`: the running agent's sync peers (`GET /v1/sync/peers`).

use serde_json::Value;

use super::args::Conn;
use super::show::{array, cell, pretty, table, ts};
use crate::client::ApiClient;

/// `kdelta peers`.
pub async fn peers(conn: Conn) -> anyhow::Result<()> {
    let c = ApiClient::new(&conn.url)?;
    let answer = c.get(c.url("v1/sync/peers", &[])).await?;
    if conn.json {
        println!("{}", pretty(&answer));
        return Ok(());
    }
    let rows: Vec<Vec<String>> = array(&answer, &["peers"])
        .iter()
        .map(|p| {
            let field = |k: &str| p.get(k).cloned().unwrap_or(Value::Null);
            let error = p
                .pointer("/last_error/message")
                .cloned()
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
            "LAST ERROR",
        ],
        &rows,
    );
    Ok(())
}

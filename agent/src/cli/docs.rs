//! Document subcommands: `put`, `get`, `delete`, `history`, `diff`, `siblings`, `docs`.

use std::io::Read;

use reqwest::{Method, Url};
use serde_json::Value;

use super::args::{Conn, DiffArgs, DocsArgs, GetArgs, HistoryArgs, KeyArgs, PutArgs, UsageError};
use super::show::{array, cell, pretty, table, time_arg, ts};
use crate::client::ApiClient;

/// `/v1/docs/<key>[/<suffix>]`, the key's `/`-separated parts as path segments.
fn doc_url(client: &ApiClient, key: &str, suffix: Option<&str>, query: &[(&str, String)]) -> Url {
    let segments = ["v1", "docs"]
        .into_iter()
        .chain(key.split('/'))
        .chain(suffix);
    client.url_of(segments, query)
}

fn client(conn: &Conn) -> anyhow::Result<ApiClient> {
    Ok(conn.client()?)
}

/// A version's identity for display: `actor:seq @ time`.
pub(super) fn version_line(v: &Value) -> String {
    let actor = short_actor(v.get("actor"));
    let seq = v.get("seq").map(|s| s.to_string()).unwrap_or_default();
    let hlc = v.get("hlc").map(|h| cell(h, 40)).unwrap_or_default();
    format!("{actor}:{seq} at HLC {hlc}")
}

/// The first 8 hex digits of an actor id, like a short git hash (enough to tell devices apart).
pub(super) fn short_actor(actor: Option<&Value>) -> String {
    match actor {
        Some(Value::String(a)) => a.chars().take(8).collect(),
        Some(other) => cell(other, 8),
        None => "-".into(),
    }
}

/// The document answer's version object (`winner`, or the answer itself).
fn winner(answer: &Value) -> &Value {
    answer.get("winner").unwrap_or(answer)
}

/// `kdelta put KEY JSON`.
pub async fn put(args: PutArgs) -> anyhow::Result<()> {
    if let Some(file) = &args.batch {
        return super::put_batch::put_batch(file, args.batch_size as usize, &args.conn).await;
    }
    // clap requires both without --batch.
    let (Some(key), Some(value)) = (&args.key, &args.value) else {
        return Err(UsageError("give KEY and VALUE, or --batch FILE".into()).into());
    };
    let text = if value == "-" {
        let mut s = String::new();
        std::io::stdin().read_to_string(&mut s)?;
        s
    } else {
        value.clone()
    };
    let value: Value = serde_json::from_str(&text).map_err(|e| {
        UsageError(format!(
            "the value is not JSON ({e}); quote it for the shell, e.g. '{{\"temp\": 22}}' or '\"text\"'"
        ))
    })?;
    let c = client(&args.conn)?;
    let answer = c
        .send_json(Method::PUT, doc_url(&c, key, None, &[]), &value)
        .await?;
    if args.conn.json {
        println!("{}", pretty(&answer));
    } else {
        println!("wrote {key} ({})", version_line(winner(&answer)));
    }
    Ok(())
}

/// `kdelta get KEY [--as-of T]`.
pub async fn get(args: GetArgs) -> anyhow::Result<()> {
    let c = client(&args.conn)?;
    let query: Vec<(&str, String)> = args.as_of.iter().map(|t| ("as_of", time_arg(t))).collect();
    let answer = c.get(doc_url(&c, &args.key, None, &query)).await?;
    if args.conn.json {
        println!("{}", pretty(&answer));
        return Ok(());
    }
    let version = winner(&answer);
    match version.get("value") {
        Some(Value::Null) | None => println!("(deleted)"),
        Some(value) => println!("{}", pretty(value)),
    }
    let siblings = answer.get("siblings").and_then(Value::as_u64).unwrap_or(1);
    if siblings > 1 {
        eprintln!(
            "note: {siblings} concurrent versions; this is the winner. See them with `kdelta siblings {}`",
            args.key
        );
    }
    Ok(())
}

/// `kdelta delete KEY`.
pub async fn delete(args: KeyArgs) -> anyhow::Result<()> {
    let c = client(&args.conn)?;
    let answer = c.delete(doc_url(&c, &args.key, None, &[])).await?;
    if args.conn.json {
        println!("{}", pretty(&answer));
    } else {
        println!(
            "deleted {} ({}); its history is kept",
            args.key,
            version_line(winner(&answer))
        );
    }
    Ok(())
}

fn versions_table(versions: &[Value]) {
    let rows: Vec<Vec<String>> = versions
        .iter()
        .map(|v| {
            let value = match v.get("value") {
                Some(Value::Null) | None => "(deleted)".to_owned(),
                Some(value) => cell(value, 60),
            };
            let hlc = v.get("hlc").cloned().unwrap_or(Value::Null);
            let time = v
                .get("time")
                .or_else(|| v.get("ts"))
                .map_or_else(|| hlc_time(&hlc), ts);
            vec![
                time,
                cell(&hlc, 24),
                format!(
                    "{}:{}",
                    short_actor(v.get("actor")),
                    v.get("seq").map(|s| s.to_string()).unwrap_or_default()
                ),
                value,
            ]
        })
        .collect();
    table(&["TIME", "HLC", "ACTOR:SEQ", "VALUE"], &rows);
}

/// The wall time of an HLC in its text form `<ms>:<logical>`.
pub(super) fn hlc_time(hlc: &Value) -> String {
    hlc.as_str()
        .and_then(|s| s.split(':').next())
        .and_then(|ms| ms.parse::<i64>().ok())
        .map_or_else(|| "-".into(), crate::time::format_rfc3339_ms)
}

/// `kdelta history KEY`.
pub async fn history(args: HistoryArgs) -> anyhow::Result<()> {
    let c = client(&args.conn)?;
    let answer = c
        .get(doc_url(
            &c,
            &args.key,
            Some("history"),
            &[("limit", args.limit.to_string())],
        ))
        .await?;
    if args.conn.json {
        println!("{}", pretty(&answer));
        return Ok(());
    }
    versions_table(array(&answer, &["versions", "history"]));
    Ok(())
}

/// `kdelta siblings KEY`.
pub async fn siblings(args: KeyArgs) -> anyhow::Result<()> {
    let c = client(&args.conn)?;
    let answer = c.get(doc_url(&c, &args.key, Some("siblings"), &[])).await?;
    if args.conn.json {
        println!("{}", pretty(&answer));
        return Ok(());
    }
    let versions = array(&answer, &["siblings", "versions"]);
    if versions.len() <= 1 {
        println!("{} has no concurrent versions", args.key);
    }
    versions_table(versions);
    Ok(())
}

/// `kdelta diff KEY --from T --to T`.
pub async fn diff(args: DiffArgs) -> anyhow::Result<()> {
    let c = client(&args.conn)?;
    let query = [("from", time_arg(&args.from)), ("to", time_arg(&args.to))];
    let answer = c.get(doc_url(&c, &args.key, Some("diff"), &query)).await?;
    if args.conn.json {
        println!("{}", pretty(&answer));
        return Ok(());
    }
    print_changes(&answer);
    Ok(())
}

/// Prints the `changes` of a diff answer, one line per JSON pointer.
pub(super) fn print_changes(answer: &Value) {
    let changes = array(answer, &["changes"]);
    if changes.is_empty() {
        println!("no changes");
    }
    for change in changes {
        let path = change.get("path").and_then(Value::as_str).unwrap_or("");
        let path = if path.is_empty() {
            "(whole value)"
        } else {
            path
        };
        let from = change.get("from").map(|v| cell(v, 60));
        let to = change.get("to").map(|v| cell(v, 60));
        match change.get("op").and_then(Value::as_str).unwrap_or("") {
            "added" => println!("+ {path}: {}", to.unwrap_or_default()),
            "removed" => println!("- {path}: {}", from.unwrap_or_default()),
            _ => println!(
                "~ {path}: {} → {}",
                from.unwrap_or_default(),
                to.unwrap_or_default()
            ),
        }
    }
}

/// `kdelta docs [--prefix P]`.
pub async fn list(args: DocsArgs) -> anyhow::Result<()> {
    let c = client(&args.conn)?;
    let mut query = vec![("prefix", args.prefix.clone())];
    if let Some(t) = &args.as_of {
        query.push(("as_of", time_arg(t)));
    }
    let answer = c.get(c.url_of(["v1", "docs"], &query)).await?;
    if args.conn.json {
        println!("{}", pretty(&answer));
        return Ok(());
    }
    let rows: Vec<Vec<String>> = array(&answer, &["docs", "documents", "items"])
        .iter()
        .map(|d| {
            let v = winner(d);
            let key = v
                .get("key")
                .or_else(|| d.get("key"))
                .map(|k| cell(k, 64))
                .unwrap_or_default();
            let value = match v.get("value") {
                Some(Value::Null) | None => "(deleted)".to_owned(),
                Some(value) => cell(value, 60),
            };
            vec![key, value]
        })
        .collect();
    table(&["KEY", "VALUE"], &rows);
    Ok(())
}

//! `kdelta twin …`: create, patch, get, history, diff and list twins (merge documents)
//! through the agent's `/v1/twins` API.

use std::io::Read;

use reqwest::{Method, Url};
use serde_json::Value;

use super::args::{
    Conn, DiffArgs, GetArgs, HistoryArgs, TwinCommand, TwinCreateArgs, TwinListArgs, TwinPatchArgs,
    UsageError,
};
use super::docs::{hlc_time, print_changes, short_actor};
use super::show::{array, cell, pretty, table, time_arg};
use crate::client::ApiClient;

/// Runs one `kdelta twin` subcommand.
pub async fn run(cmd: TwinCommand) -> anyhow::Result<()> {
    match cmd {
        TwinCommand::Create(a) => create(a).await,
        TwinCommand::Patch(a) => patch(a).await,
        TwinCommand::Get(a) => get(a).await,
        TwinCommand::History(a) => history(a).await,
        TwinCommand::Diff(a) => diff(a).await,
        TwinCommand::List(a) => list(a).await,
    }
}

/// `/v1/twins/<key>[/<suffix>]`, the key's `/`-separated parts as path segments.
fn twin_url(c: &ApiClient, key: &str, suffix: Option<&str>, query: &[(&str, String)]) -> Url {
    let segments = ["v1", "twins"]
        .into_iter()
        .chain(key.split('/'))
        .chain(suffix);
    c.url_of(segments, query)
}

fn client(conn: &Conn) -> anyhow::Result<ApiClient> {
    Ok(conn.client()?)
}

/// The argument as JSON text (`-` reads stdin), checked to parse.
fn json_arg(text: &str, what: &str) -> anyhow::Result<Value> {
    let text = if text == "-" {
        let mut s = String::new();
        std::io::stdin().read_to_string(&mut s)?;
        s
    } else {
        text.to_owned()
    };
    Ok(serde_json::from_str(&text).map_err(|e| {
        UsageError(format!(
            "the {what} is not JSON ({e}); quote it for the shell, e.g. '{{\"desired\": {{}}}}'"
        ))
    })?)
}

fn print_write(args_json: bool, key: &str, answer: &Value) {
    if args_json {
        println!("{}", pretty(answer));
        return;
    }
    if answer.get("changed") == Some(&Value::Bool(false)) {
        eprintln!("{key}: unchanged");
    } else {
        eprintln!(
            "{key}: {}:{} at HLC {}",
            short_actor(answer.get("actor")),
            answer.get("seq").map(|s| s.to_string()).unwrap_or_default(),
            answer.get("hlc").map(|h| cell(h, 40)).unwrap_or_default()
        );
    }
    println!("{}", pretty(answer.get("value").unwrap_or(&Value::Null)));
}

async fn create(args: TwinCreateArgs) -> anyhow::Result<()> {
    let body = match &args.value {
        Some(v) => serde_json::to_vec(&json_arg(v, "initial value")?)?,
        None => Vec::new(),
    };
    let c = client(&args.conn)?;
    let answer = c
        .send_bytes(
            Method::POST,
            twin_url(&c, &args.key, None, &[]),
            "application/json",
            body,
        )
        .await?;
    print_write(args.conn.json, &args.key, &answer);
    Ok(())
}

async fn patch(args: TwinPatchArgs) -> anyhow::Result<()> {
    let value = json_arg(&args.patch, "patch")?;
    let (content_type, body) = if args.ops {
        if !value.is_array() {
            return Err(UsageError(
                "with --ops the patch is a JSON array of operations, e.g. '[{\"op\": \"set\", \"path\": \"/a\", \"value\": 1}]'".into(),
            )
            .into());
        }
        ("application/json", serde_json::json!({ "ops": value }))
    } else {
        ("application/merge-patch+json", value)
    };
    let c = client(&args.conn)?;
    let answer = c
        .send_bytes(
            Method::PATCH,
            twin_url(&c, &args.key, None, &[]),
            content_type,
            serde_json::to_vec(&body)?,
        )
        .await?;
    print_write(args.conn.json, &args.key, &answer);
    Ok(())
}

async fn get(args: GetArgs) -> anyhow::Result<()> {
    let c = client(&args.conn)?;
    let query: Vec<(&str, String)> = args.as_of.iter().map(|t| ("as_of", time_arg(t))).collect();
    let answer = c.get(twin_url(&c, &args.key, None, &query)).await?;
    if args.conn.json {
        println!("{}", pretty(&answer));
    } else {
        println!("{}", pretty(answer.get("value").unwrap_or(&Value::Null)));
    }
    Ok(())
}

async fn history(args: HistoryArgs) -> anyhow::Result<()> {
    let c = client(&args.conn)?;
    let query = [("limit", args.limit.to_string())];
    let answer = c
        .get(twin_url(&c, &args.key, Some("history"), &query))
        .await?;
    if args.conn.json {
        println!("{}", pretty(&answer));
        return Ok(());
    }
    let rows: Vec<Vec<String>> = array(&answer, &["changes"])
        .iter()
        .map(|e| {
            let hlc = e.get("hlc").cloned().unwrap_or(Value::Null);
            let mut paths: Vec<String> = array(e, &["paths"])
                .iter()
                .filter_map(|p| p.as_str().map(str::to_owned))
                .collect();
            if e.get("truncated") == Some(&Value::Bool(true)) {
                paths.push("…".into());
            }
            vec![
                hlc_time(&hlc),
                cell(&hlc, 24),
                format!(
                    "{}:{}",
                    short_actor(e.get("actor")),
                    e.get("seq").map(|s| s.to_string()).unwrap_or_default()
                ),
                paths.join(" "),
            ]
        })
        .collect();
    table(&["TIME", "HLC", "ACTOR:SEQ", "PATHS"], &rows);
    Ok(())
}

async fn diff(args: DiffArgs) -> anyhow::Result<()> {
    let c = client(&args.conn)?;
    let query = [("from", time_arg(&args.from)), ("to", time_arg(&args.to))];
    let answer = c.get(twin_url(&c, &args.key, Some("diff"), &query)).await?;
    if args.conn.json {
        println!("{}", pretty(&answer));
    } else {
        print_changes(&answer);
    }
    Ok(())
}

async fn list(args: TwinListArgs) -> anyhow::Result<()> {
    let c = client(&args.conn)?;
    let answer = c
        .get(c.url_of(["v1", "twins"], &[("prefix", args.prefix.clone())]))
        .await?;
    if args.conn.json {
        println!("{}", pretty(&answer));
        return Ok(());
    }
    for key in array(&answer, &["twins"]) {
        println!("{}", key.as_str().unwrap_or_default());
    }
    Ok(())
}

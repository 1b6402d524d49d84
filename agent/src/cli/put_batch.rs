//! `kdelta put --batch FILE`: documents from a JSON lines file (or stdin) written through
//! `POST /v1/docs` in batches of bounded size, each batch one atomic change, with a progress
//! bar. A line is `{"key", "value"}` or `{"key", "delete": true}` (optional `"context"`); blank
//! lines are skipped. A key written twice in the file is written in file order: the batch
//! holding the first write is sent before the second is queued. Errors name the line, and say
//! which lines were already written.

use std::collections::HashSet;
use std::io::{BufRead, BufReader, Read};
use std::path::Path;

use anyhow::Context;
use reqwest::Method;
use serde_json::Value;

use super::args::{Conn, UsageError};
use crate::client::{ApiClient, ClientError};

/// Most request body bytes of one batch (lines are sent as they are; a longer line goes
/// alone and the agent judges it).
const MAX_BATCH_BYTES: usize = 1 << 20;

/// The lines queued for the next request.
#[derive(Default)]
struct Pending {
    entries: Vec<Value>,
    /// The file line of each entry.
    lines: Vec<u64>,
    keys: HashSet<String>,
    bytes: usize,
}

/// Reads `file` (`-`: stdin) and writes its documents in batches of at most `batch_size`.
pub async fn put_batch(file: &Path, batch_size: usize, conn: &Conn) -> anyhow::Result<()> {
    let client = conn.client()?;
    let (reader, total): (Box<dyn Read>, Option<u64>) = if file.as_os_str() == "-" {
        (Box::new(std::io::stdin()), None)
    } else {
        let f =
            std::fs::File::open(file).with_context(|| format!("cannot open {}", file.display()))?;
        let len = f.metadata().map(|m| m.len()).ok();
        (Box::new(f), len)
    };
    let name = if file.as_os_str() == "-" {
        "stdin".to_owned()
    } else {
        file.display().to_string()
    };
    let bar = match total {
        Some(n) => indicatif::ProgressBar::new(n).with_style(
            indicatif::ProgressStyle::with_template(
                "{spinner} [{bar:30}] {bytes}/{total_bytes} {msg} ({eta} left)",
            )
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
            .progress_chars("=> "),
        ),
        None => indicatif::ProgressBar::new_spinner(),
    };

    let mut reader = BufReader::with_capacity(1 << 16, reader);
    let mut text = String::new();
    let (mut lineno, mut read_bytes) = (0u64, 0u64);
    let mut pending = Pending::default();
    let mut written = Written::default();
    loop {
        text.clear();
        let n = reader
            .read_line(&mut text)
            .with_context(|| format!("reading {name} line {}", lineno + 1))?;
        if n == 0 {
            break;
        }
        lineno += 1;
        read_bytes += n as u64;
        let line = text.trim();
        if line.is_empty() {
            continue;
        }
        let entry = parse_line(line)
            .map_err(|e| UsageError(format!("{name} line {lineno}: {e}{}", written.so_far())))?;
        let key = entry["key"].as_str().unwrap_or_default().to_owned();
        let full =
            pending.entries.len() >= batch_size || pending.bytes + line.len() > MAX_BATCH_BYTES;
        if !pending.entries.is_empty() && (full || pending.keys.contains(&key)) {
            send(&client, &mut pending, &name, &mut written).await?;
            bar.set_position(read_bytes);
            bar.set_message(format!("{} documents", written.documents));
        }
        pending.bytes += line.len() + 1;
        pending.entries.push(entry);
        pending.lines.push(lineno);
        pending.keys.insert(key);
    }
    if !pending.entries.is_empty() {
        send(&client, &mut pending, &name, &mut written).await?;
    }
    bar.finish_and_clear();
    if conn.json {
        println!(
            "{}",
            serde_json::json!({"documents": written.documents, "batches": written.batches, "lines": lineno})
        );
    } else {
        println!(
            "wrote {} documents from {name} in {} batches (one atomic change each)",
            written.documents, written.batches
        );
    }
    Ok(())
}

/// What is already durable, for error messages.
#[derive(Default)]
struct Written {
    documents: u64,
    batches: u64,
    last_line: u64,
}

impl Written {
    fn so_far(&self) -> String {
        if self.batches == 0 {
            "; nothing was written".into()
        } else {
            format!(
                "; lines up to {} were written ({} documents), nothing after them",
                self.last_line, self.documents
            )
        }
    }
}

/// One line as an entry object; the agent checks the rest (and names the entry, mapped back
/// to the line by `send`).
fn parse_line(line: &str) -> Result<Value, String> {
    let v: Value = serde_json::from_str(line).map_err(|e| format!("not JSON: {e}"))?;
    match v.get("key") {
        Some(Value::String(_)) if v.is_object() => Ok(v),
        _ => {
            Err(r#"expected an object {"key": …, "value": …} or {"key": …, "delete": true}"#.into())
        }
    }
}

async fn send(
    client: &ApiClient,
    pending: &mut Pending,
    name: &str,
    written: &mut Written,
) -> anyhow::Result<()> {
    let url = client.url_of(["v1", "docs"], &[]);
    let batch = std::mem::take(pending);
    match client.send_json(Method::POST, url, &batch.entries).await {
        Ok(_) => {
            written.documents += batch.entries.len() as u64;
            written.batches += 1;
            written.last_line = batch.lines.last().copied().unwrap_or(written.last_line);
            Ok(())
        }
        Err(ClientError::Api {
            message,
            code,
            status,
        }) => {
            let (first, last) = (batch.lines[0], batch.lines[batch.lines.len() - 1]);
            let at = entry_index(&message)
                .and_then(|i| batch.lines.get(i))
                .map(|l| format!("line {l}"))
                .unwrap_or_else(|| format!("lines {first}–{last}"));
            anyhow::bail!(
                "{name} {at}: {message} ({code}, HTTP {status}); nothing of lines {first}–{last} was stored{}",
                written.so_far()
            )
        }
        Err(e) => Err(e.into()),
    }
}

/// The entry an API error message names (`entry 3: …`).
fn entry_index(message: &str) -> Option<usize> {
    message
        .strip_prefix("entry ")?
        .split(':')
        .next()?
        .parse()
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_and_entry_indexes() {
        assert!(parse_line(r#"{"key": "a", "value": 1}"#).is_ok());
        assert!(parse_line(r#"{"key": "a", "delete": true}"#).is_ok());
        assert!(
            parse_line(r#"{"value": 1}"#)
                .unwrap_err()
                .contains("expected an object")
        );
        assert!(parse_line(r#"[1]"#).is_err());
        assert!(
            parse_line(r#"{"key": "a""#)
                .unwrap_err()
                .starts_with("not JSON")
        );
        assert_eq!(entry_index("entry 12: invalid key"), Some(12));
        assert_eq!(entry_index("invalid document batch: too many"), None);
    }
}

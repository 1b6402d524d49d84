//! `kdelta import FILE.csv`: streams a CSV file to `POST /v1/readings` in batches, with a
//! progress bar. After every acknowledged batch the last line it covered is written to
//! `FILE.csv.kdelta-import`, so `--resume` continues an interrupted import exactly after the
//! last acknowledged line (the agent stores an acknowledged batch durably; a batch that was
//! not acknowledged was not stored, because a rejected batch stores nothing).

use std::fs::File;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::Context;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::args::{ImportArgs, UsageError};
use crate::client::ApiClient;

/// Progress of an import, kept next to the file.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
struct Progress {
    /// Last line (1-based, the header is line 1) whose reading the agent acknowledged.
    line: u64,
    /// Readings acknowledged so far.
    readings: u64,
    /// True once the whole file went through.
    complete: bool,
}

fn progress_path(file: &Path) -> PathBuf {
    let mut name = file.as_os_str().to_owned();
    name.push(".kdelta-import");
    PathBuf::from(name)
}

fn read_progress(path: &Path) -> anyhow::Result<Option<Progress>> {
    match std::fs::read(path) {
        Ok(bytes) => Ok(Some(serde_json::from_slice(&bytes).with_context(|| {
            format!(
                "{} is not an import progress file; delete it to start over",
                path.display()
            )
        })?)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
    }
}

fn write_progress(path: &Path, progress: &Progress) -> anyhow::Result<()> {
    // Write-then-rename: a crash leaves the old or the new progress, never half of one.
    let tmp = path.with_extension("kdelta-import.tmp");
    std::fs::write(&tmp, serde_json::to_vec(progress)?)
        .with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}

/// Column positions from the header line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Columns {
    series: usize,
    ts: usize,
    value: usize,
    unit: Option<usize>,
}

impl Columns {
    fn from_header(fields: &[String]) -> Result<Columns, String> {
        let find = |name: &str| {
            fields
                .iter()
                .position(|f| f.trim().eq_ignore_ascii_case(name))
        };
        let need = |name: &str| {
            find(name).ok_or_else(|| {
                format!(
                    "the header has no `{name}` column (found: {}); the first line must name the columns series,ts,value[,unit]",
                    fields.join(",")
                )
            })
        };
        Ok(Columns {
            series: need("series")?,
            ts: need("ts")?,
            value: need("value")?,
            unit: find("unit"),
        })
    }
}

/// One CSV row as the API's row form.
fn parse_row(fields: &[String], cols: Columns) -> Result<Value, String> {
    let get = |i: usize, name: &str| {
        fields
            .get(i)
            .map(|s| s.trim())
            .filter(|s| !s.is_empty())
            .ok_or_else(|| format!("no `{name}` value"))
    };
    let series = get(cols.series, "series")?;
    let ts_text = get(cols.ts, "ts")?;
    let ts = match ts_text.parse::<i64>() {
        Ok(ms) => json!(ms),
        Err(_) if ts_text.contains('T') || ts_text.contains('-') => json!(ts_text),
        Err(_) => return Err(format!("ts {ts_text:?} is neither unix ms nor RFC 3339")),
    };
    let value_text = get(cols.value, "value")?;
    let value: f64 = value_text
        .parse()
        .ok()
        .filter(|v: &f64| v.is_finite())
        .ok_or_else(|| format!("value {value_text:?} is not a finite number"))?;
    let mut row = json!({ "series": series, "ts": ts, "value": value });
    if let Some(unit) = cols
        .unit
        .and_then(|i| fields.get(i))
        .map(|u| u.trim())
        .filter(|u| !u.is_empty())
    {
        row["unit"] = json!(unit);
    }
    Ok(row)
}

/// Splits one CSV line: `,` separated, fields may be double-quoted (`""` is a quote).
fn split_csv(line: &str) -> Vec<String> {
    let mut fields = Vec::new();
    let mut field = String::new();
    let mut quoted = false;
    let mut chars = line.chars().peekable();
    while let Some(c) = chars.next() {
        match (c, quoted) {
            ('"', true) if chars.peek() == Some(&'"') => {
                field.push('"');
                chars.next();
            }
            ('"', true) => quoted = false,
            ('"', false) if field.trim().is_empty() => {
                field.clear();
                quoted = true;
            }
            (',', false) => fields.push(std::mem::take(&mut field)),
            (c, _) => field.push(c),
        }
    }
    fields.push(field);
    fields
}

/// `kdelta import FILE`.
pub async fn import(args: ImportArgs) -> anyhow::Result<()> {
    let client = args.conn.client()?;
    let progress_file = progress_path(&args.file);
    let previous = read_progress(&progress_file)?;
    let mut progress = match (previous, args.resume) {
        (Some(p), _) if p.complete => {
            return Err(UsageError(format!(
                "{} was already imported completely ({} readings); delete {} to import it again",
                args.file.display(),
                p.readings,
                progress_file.display()
            ))
            .into());
        }
        (Some(p), false) => {
            return Err(UsageError(format!(
                "{} was partly imported (up to line {}, {} readings); run again with --resume to continue, or delete {} to start over",
                args.file.display(),
                p.line,
                p.readings,
                progress_file.display()
            ))
            .into());
        }
        (Some(p), true) => p,
        (None, _) => Progress::default(),
    };
    let resumed_after = progress.line;

    let file =
        File::open(&args.file).with_context(|| format!("cannot open {}", args.file.display()))?;
    let total = file.metadata().map(|m| m.len()).unwrap_or(0);
    let mut reader = BufReader::with_capacity(1 << 16, file);
    let bar = indicatif::ProgressBar::new(total);
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "{spinner} [{bar:30}] {bytes}/{total_bytes} {msg} ({eta} left)",
        )
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
        .progress_chars("=> "),
    );

    let mut line = String::new();
    let mut lineno: u64 = 0;
    let mut read_bytes: u64 = 0;
    let mut columns: Option<Columns> = None;
    let mut batch: Vec<Value> = Vec::with_capacity(args.batch as usize);
    let mut batch_first_line = 0u64;
    let started = Instant::now();
    let mut sent_now = 0u64;
    loop {
        line.clear();
        let n = reader
            .read_line(&mut line)
            .with_context(|| format!("reading {} line {}", args.file.display(), lineno + 1))?;
        if n == 0 {
            break;
        }
        lineno += 1;
        read_bytes += n as u64;
        let text = line.trim_end_matches(['\n', '\r']);
        let Some(cols) = columns else {
            let header = split_csv(text.trim_start_matches('\u{feff}'));
            columns = Some(
                Columns::from_header(&header)
                    .map_err(|e| anyhow::anyhow!("{} line 1: {e}", args.file.display()))?,
            );
            continue;
        };
        if lineno <= progress.line || text.trim().is_empty() {
            continue;
        }
        let row = parse_row(&split_csv(text), cols).map_err(|e| {
            anyhow::anyhow!(
                "{} line {lineno}: {e}; fix the line and run again with --resume (lines up to {} are imported)",
                args.file.display(),
                progress.line
            )
        })?;
        if batch.is_empty() {
            batch_first_line = lineno;
        }
        batch.push(row);
        if batch.len() >= args.batch as usize {
            sent_now += send(
                &client,
                &mut batch,
                (batch_first_line, lineno),
                &args.file,
                &mut progress,
                &progress_file,
            )
            .await?;
            bar.set_position(read_bytes);
            bar.set_message(format!("{} readings", progress.readings));
        }
    }
    if columns.is_none() {
        anyhow::bail!(
            "{} is empty: expected a header line series,ts,value[,unit]",
            args.file.display()
        );
    }
    sent_now += send(
        &client,
        &mut batch,
        (batch_first_line, lineno),
        &args.file,
        &mut progress,
        &progress_file,
    )
    .await?;
    progress.line = lineno;
    progress.complete = true;
    write_progress(&progress_file, &progress)?;
    bar.finish_and_clear();

    let secs = started.elapsed().as_secs_f64();
    let resumed = if resumed_after > 0 {
        format!(", resumed after line {resumed_after}")
    } else {
        String::new()
    };
    println!(
        "imported {sent_now} readings from {} in {secs:.1} s ({:.0} readings/s{resumed}); {} in total",
        args.file.display(),
        sent_now as f64 / secs.max(1e-9),
        progress.readings
    );
    Ok(())
}

/// Posts `batch` (lines `lines.0..=lines.1`), then records the progress. Returns readings sent.
async fn send(
    client: &ApiClient,
    batch: &mut Vec<Value>,
    lines: (u64, u64),
    file: &Path,
    progress: &mut Progress,
    progress_file: &Path,
) -> anyhow::Result<u64> {
    if batch.is_empty() {
        return Ok(0);
    }
    let body = serde_json::to_vec(&*batch)?;
    client
        .post_bytes(client.url("v1/readings", &[]), "application/json", body)
        .await
        .with_context(|| {
            format!(
                "{} lines {}–{} were not imported (lines up to {} are); fix the cause and run again with --resume",
                file.display(),
                lines.0,
                lines.1,
                progress.line
            )
        })?;
    let n = batch.len() as u64;
    batch.clear();
    progress.line = lines.1;
    progress.readings += n;
    write_progress(progress_file, progress)?;
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_fields_and_quotes() {
        assert_eq!(split_csv("a,b,c"), vec!["a", "b", "c"]);
        assert_eq!(
            split_csv("\"a,b\",1,\"say \"\"hi\"\"\""),
            vec!["a,b", "1", "say \"hi\""]
        );
        assert_eq!(split_csv("a,,"), vec!["a", "", ""]);
    }

    #[test]
    fn header_in_any_order() {
        let cols = Columns::from_header(&split_csv("ts,value,series")).unwrap();
        assert_eq!(
            cols,
            Columns {
                series: 2,
                ts: 0,
                value: 1,
                unit: None
            }
        );
        let err = Columns::from_header(&split_csv("name,ts,value")).unwrap_err();
        assert!(err.contains("`series`"), "{err}");
    }

    #[test]
    fn rows() {
        let cols = Columns::from_header(&split_csv("series,ts,value,unit")).unwrap();
        let row = parse_row(&split_csv("t.a,1764000000000,21.5,°C"), cols).unwrap();
        assert_eq!(
            row,
            json!({"series": "t.a", "ts": 1764000000000i64, "value": 21.5, "unit": "°C"})
        );
        let row = parse_row(&split_csv("t.a,2025-11-24T16:00:00Z,1,"), cols).unwrap();
        assert_eq!(
            row,
            json!({"series": "t.a", "ts": "2025-11-24T16:00:00Z", "value": 1.0})
        );
        assert!(
            parse_row(&split_csv("t.a,1,abc"), cols)
                .unwrap_err()
                .contains("abc")
        );
        assert!(parse_row(&split_csv("t.a,1,NaN"), cols).is_err());
        assert!(
            parse_row(&split_csv("t.a,yesterday,1"), cols)
                .unwrap_err()
                .contains("yesterday")
        );
    }

    #[test]
    fn progress_round_trips() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("data.csv");
        let path = progress_path(&file);
        assert_eq!(path, dir.path().join("data.csv.kdelta-import"));
        assert_eq!(read_progress(&path).unwrap(), None);
        let p = Progress {
            line: 1001,
            readings: 1000,
            complete: false,
        };
        write_progress(&path, &p).unwrap();
        assert_eq!(read_progress(&path).unwrap(), Some(p));
    }
}

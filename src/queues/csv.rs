//! A recorded queue-depth series for `logwarden replay --queue-csv FILE`: one row per sample,
//! `time,key,depth[,part]`.
//!
//! - `time`: RFC 3339 / ISO 8601 (`2026-11-23T10:00:00Z`) or Unix seconds (`1795428000`);
//! - `key`: the Redis key (it becomes both the `key` and the `queue` label);
//! - `depth`: a number;
//! - `part` (optional): `waiting` (default), `active`, `scheduled`, … as in `[[queue]]` keys.
//!
//! A header row (`time,key,depth`), blank lines and `#` comments are skipped. Bad rows are
//! counted and reported with their line numbers; they never stop the replay. Rows with the
//! same time form one batch; a key keeps its last depth until its next row (write a 0 when
//! the queue drains).

use std::io::{BufRead, BufReader, Read};
use std::sync::Arc;

use super::{series_labels, Metric, Sample, SampleBatch, PARTS};
use crate::event::Ts;

/// A parsed depth series.
#[derive(Debug, Default)]
pub struct DepthSeries {
    /// Batches in time order.
    pub batches: Vec<SampleBatch>,
    /// Good rows.
    pub rows: usize,
    /// `(line number, why)` of rows that were skipped.
    pub bad_rows: Vec<(usize, String)>,
}

/// Reads a depth series; `name` becomes the samples' source.
pub fn read(name: &str, input: impl Read) -> std::io::Result<DepthSeries> {
    let source: Arc<str> = Arc::from(name);
    let mut out = DepthSeries::default();
    let mut rows: Vec<(Ts, Sample)> = Vec::new();
    for (i, line) in BufReader::new(input).split(b'\n').enumerate() {
        let line = line?;
        let n = i + 1;
        let text = String::from_utf8_lossy(&line);
        let text = text.trim();
        if text.is_empty() || text.starts_with('#') {
            continue;
        }
        let fields: Vec<&str> = text.split(',').map(str::trim).collect();
        if n == 1
            && fields
                .first()
                .is_some_and(|f| f.eq_ignore_ascii_case("time"))
        {
            continue;
        }
        match parse_row(&fields) {
            Ok(row) => rows.push(row),
            Err(why) => out.bad_rows.push((n, why)),
        }
    }
    out.rows = rows.len();
    // Stable: rows of one time keep their file order.
    rows.sort_by_key(|(t, _)| *t);
    for (at, s) in rows {
        match out.batches.last_mut() {
            Some(b) if b.at == at => b.samples.push(s),
            _ => out.batches.push(SampleBatch {
                source: source.clone(),
                at,
                samples: vec![s],
                complete: false,
            }),
        }
    }
    Ok(out)
}

fn parse_row(f: &[&str]) -> Result<(Ts, Sample), String> {
    if !(3..=4).contains(&f.len()) {
        return Err(format!(
            "expected time,key,depth[,part], got {} fields",
            f.len()
        ));
    }
    let at = parse_time(f[0]).ok_or_else(|| format!("bad time {:?}", f[0]))?;
    if f[1].is_empty() {
        return Err("empty key".into());
    }
    let depth: f64 = f[2]
        .parse()
        .ok()
        .filter(|d: &f64| d.is_finite() && *d >= 0.0)
        .ok_or_else(|| format!("bad depth {:?}", f[2]))?;
    let part = f.get(3).copied().unwrap_or("waiting");
    if !PARTS.contains(&part) {
        return Err(format!("unknown part {part:?}"));
    }
    Ok((
        at,
        Sample {
            labels: series_labels(f[1], f[1], part),
            metric: Metric::Depth,
            value: depth,
        },
    ))
}

fn parse_time(s: &str) -> Option<Ts> {
    if let Ok(secs) = s.parse::<f64>() {
        return (secs.is_finite() && secs >= 0.0).then(|| Ts((secs * 1000.0).round() as u64));
    }
    crate::replay::parse_timestamp(s.as_bytes(), None, 1970)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_headers_and_bad_lines() {
        let text = "time,key,depth\n\
                    2026-11-23T10:00:00Z,llm_tasks,5\n\
                    # a comment\n\
                    1795428000,task_queue,7,waiting\n\
                    1795428060,llm_tasks,x\n\
                    2026-11-23T10:00:30Z,llm_tasks:processing,2,active\n\
                    nonsense\n";
        let s = read("d.csv", text.as_bytes()).unwrap();
        assert_eq!(s.rows, 3);
        assert_eq!(s.bad_rows.len(), 2);
        assert_eq!(s.bad_rows[0].0, 5);
        assert!(s.bad_rows[0].1.contains("\"x\""), "{:?}", s.bad_rows);
        assert_eq!(s.bad_rows[1].0, 7);
        assert_eq!(s.batches.len(), 2, "two distinct times");
        assert_eq!(s.batches[0].samples.len(), 2);
        assert_eq!(s.batches[0].at, Ts::from_secs(1_795_428_000));
        assert_eq!(s.batches[1].samples[0].labels.get("part"), Some("active"));
        assert!(!s.batches[0].complete);
    }
}

//! What each fuzz target checks, shared by the fuzz targets (`fuzz/fuzz_targets/*.rs`) and by
//! the normal test suite (`tests/fuzz_regressions.rs` replays the committed corpora and
//! crash reproducers through these same functions), so CI checks every saved input without
//! nightly Rust or cargo-fuzz.
//!
//! Each function takes the raw fuzz input, must never panic on any input, and panics (an
//! assertion) only when an invariant of the library does not hold.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, OnceLock};

use logwarden::classify::{parse_pack, PatternSet};
use logwarden::config::{Config, RecordConfig};
use logwarden::event::{Labels, Line, Origin, Ts};
use logwarden::records::{Classifier, OTHER_LABEL_VALUE};
use logwarden::replay::parse_timestamp;
use logwarden::sources::LineSplitter;

/// A target's check: panics only when an invariant does not hold.
pub type Check = fn(&[u8]);

/// Every fuzz target, by name: the names of `fuzz/fuzz_targets/*.rs` and of the directories
/// under `fuzz/corpus/` and `fuzz/regressions/`.
pub const TARGETS: [(&str, Check); 6] = [
    ("config", config),
    ("pack", pack),
    ("classify", classify),
    ("splitter", splitter),
    ("records", records),
    ("timestamp", timestamp),
];

fn default_set() -> &'static Arc<PatternSet> {
    static SET: OnceLock<Arc<PatternSet>> = OnceLock::new();
    SET.get_or_init(|| Arc::new(PatternSet::default_pack().expect("the default pack compiles")))
}

/// Config text → `Config::from_str_opts` (offline: secrets from missing env vars and files
/// become placeholders, so validation goes deeper) and `Config::from_str_named`. Only errors,
/// never panics. Inputs naming device or proc files are skipped: a pack or secret file of
/// `/dev/zero` would be read forever, and the config file is trusted (SECURITY.md).
pub fn config(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if ["/dev", "/proc", "/sys"].iter().any(|p| text.contains(p)) {
        return;
    }
    // Offline first: it accepts whatever the daemon accepts, so only then is the second
    // (slow: it compiles the patterns again) load worth running.
    if let Ok(cfg) = Config::from_str_opts("fuzz.toml", text, None, true) {
        assert!(cfg.max_line_bytes > 0 && cfg.max_label_values > 0);
        let _ = Config::from_str_named("fuzz.toml", text, None);
    }
}

/// A pattern pack (TOML), then a NUL byte, then log bytes. The pack compiles or is an error
/// that names the file; when it compiles, every line of the log bytes is classified, the
/// winner's captures run, and the whole-buffer prefilter (`count_buffer`) must agree with
/// classifying each line on its own.
pub fn pack(data: &[u8]) {
    let (toml, log) = match data.iter().position(|&b| b == 0) {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => (data, &b""[..]),
    };
    let Ok(text) = std::str::from_utf8(toml) else {
        return;
    };
    let set = match parse_pack("fuzz.toml", text).and_then(|p| PatternSet::compile(&[p], &[])) {
        Ok(set) => set,
        Err(e) => {
            assert!(
                e.to_string().contains("fuzz.toml"),
                "error without file: {e}"
            );
            return;
        }
    };
    let mut scratch = set.scratch();
    let mut want = Vec::new();
    for line in split_lines(log) {
        // As the daemon's sources and `count_buffer` see it: without the `\r` of a CRLF.
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        let won = set.classify(line, &mut scratch);
        assert_eq!(
            won,
            set.classify_naive(line),
            "literal gate disagrees on {line:?}"
        );
        if let Some(i) = won {
            let _ = set.extract(i, line, &mut scratch);
            want.push((line.to_vec(), i));
        }
    }
    let mut hits = vec![0; set.patterns().len()];
    let mut got = Vec::new();
    let n = set.count_buffer(log, usize::MAX, &mut hits, &mut scratch, |l, w| {
        if let Some(i) = w {
            got.push((l.to_vec(), i));
        }
    });
    assert_eq!(n as usize, split_lines(log).count(), "line count");
    assert_eq!(got, want, "count_buffer disagrees with per-line classify");
    assert_eq!(hits.iter().sum::<u64>() as usize, want.len());
}

/// Arbitrary bytes, as one line and as `\n`-separated lines, through the default pack:
/// `classify`, the winner's `extract`, and a `Classifier`.
pub fn classify(data: &[u8]) {
    let set = default_set();
    let mut scratch = set.scratch();
    for line in std::iter::once(data).chain(split_lines(data)) {
        let won = set.classify(line, &mut scratch);
        if !line.contains(&b'\n') {
            assert_eq!(
                won,
                set.classify_naive(line),
                "literal gate disagrees on {line:?}"
            );
        }
        if let Some(i) = won {
            assert!(i < set.patterns().len());
            let x = set.extract(i, line, &mut scratch);
            for (_, v) in x.labels.iter() {
                assert!(
                    v.len() <= logwarden::classify::MAX_LABEL_VALUE,
                    "label {v:?}"
                );
            }
        }
    }
    let mut c = Classifier::new(set.clone(), RecordConfig::default(), 100);
    let mut out = Vec::new();
    for (i, line) in split_lines(data).enumerate() {
        c.push(&line_at("fuzz", 0, line, Ts(i as u64)), &mut out);
    }
    c.finish(&mut out);
    assert!(out.len() as u64 <= c.stats.lines);
}

/// The first byte picks the line cap (1..=64), the next ones the chunk sizes; the rest is fed
/// to a `LineSplitter` in those chunks. The lines must be those of splitting the whole input
/// at once at `\n` (one `\r` before it stripped, the last line without `\n` kept), each capped
/// at the line cap and flagged when it was cut, whatever the chunking; the buffer stays within
/// the cap.
pub fn splitter(data: &[u8]) {
    let [cap_byte, chunk_seed @ ..] = data else {
        return;
    };
    let cap = usize::from(cap_byte % 64) + 1;
    let (sizes, input) = chunk_seed.split_at(chunk_seed.len().min(4));
    let mut splitter = LineSplitter::new(cap);
    let mut got: Vec<(Vec<u8>, bool)> = Vec::new();
    let mut rest = input;
    let mut k = 0;
    while !rest.is_empty() {
        let size = sizes
            .get(k % sizes.len().max(1))
            .map_or(rest.len(), |&s| usize::from(s) + 1);
        let (chunk, tail) = rest.split_at(size.min(rest.len()));
        splitter.push(chunk, |l| got.push((l.bytes.to_vec(), l.truncated)));
        assert!(
            splitter.pending() <= cap + 1,
            "pending {} > cap {cap} + 1",
            splitter.pending()
        );
        rest = tail;
        k += 1;
    }
    splitter.finish(|l| got.push((l.bytes.to_vec(), l.truncated)));
    assert_eq!(splitter.pending(), 0);

    let want: Vec<(Vec<u8>, bool)> = split_lines(input)
        .map(|l| {
            let l = l.strip_suffix(b"\r").unwrap_or(l);
            (l[..l.len().min(cap)].to_vec(), l.len() > cap)
        })
        .collect();
    assert_eq!(got, want, "cap {cap}, chunk sizes {sizes:?}");
}

/// Lines through a `Classifier` with records and folding on (the default pack folds), from
/// three sources and two streams, with times that may jump or go back, `tick`s in between and
/// a small label cap. No panic; every event accounts for at least one line and no line is in
/// two events; at most `max_label_values` distinct values per captured label; after `finish`
/// nothing is pending.
pub fn records(data: &[u8]) {
    const MAX_LABEL_VALUES: usize = 3;
    let set = default_set();
    let cfg = RecordConfig {
        max_lines: 8,
        timeout: std::time::Duration::from_secs(1),
    };
    let mut c = Classifier::new(set.clone(), cfg, MAX_LABEL_VALUES);
    c.single_line(Arc::from("single"));
    let mut out = Vec::new();
    let mut now: u64 = 1_000_000;
    let mut pushed = 0u64;
    for line in split_lines(data) {
        // A line may start with a control byte: bits pick source, stream, a time step, a tick.
        let (ctl, body) = match line.split_first() {
            Some((&b, rest)) if b < 0x20 && b != b'\t' => (b, rest),
            _ => (0, line),
        };
        let source = ["fuzz", "other", "single"][usize::from(ctl & 3) % 3];
        let stream = u64::from(ctl >> 2 & 1);
        now = match ctl >> 3 & 3 {
            0 => now.saturating_add(1),
            1 => now.saturating_add(1_500),
            2 => now.saturating_sub(700),
            _ => u64::MAX - 1,
        };
        c.push(&line_at(source, stream, body, Ts(now)), &mut out);
        pushed += 1;
        if ctl & 0x10 != 0 {
            c.tick(Ts(now.saturating_add(5_000)), &mut out);
        }
    }
    c.finish(&mut out);
    assert!(!c.has_pending(), "pending after finish");
    assert_eq!(c.stats.lines, pushed);
    assert_eq!(
        out.len() as u64,
        c.stats.events,
        "events emitted vs counted"
    );
    assert!(
        c.stats.events <= pushed,
        "{} events from {pushed} lines",
        c.stats.events
    );
    let in_events: u64 = out.iter().map(|e| u64::from(e.lines)).sum();
    assert!(
        in_events <= pushed,
        "{in_events} lines in events, {pushed} pushed"
    );
    assert!(out.iter().all(|e| e.lines >= 1));
    let mut values: HashMap<&str, HashSet<&str>> = HashMap::new();
    for e in &out {
        for (k, v) in e.labels.iter() {
            if v != OTHER_LABEL_VALUE {
                values.entry(k).or_default().insert(v);
            }
        }
    }
    for (k, vs) in values {
        assert!(vs.len() <= MAX_LABEL_VALUES, "label {k}: {vs:?}");
    }
}

/// Arbitrary bytes → `parse_timestamp` with the built-in formats (the first two bytes pick
/// the default year, any `i16`) and with a permissive custom regex whose groups take any
/// number of digits. Only `Some` or `None`, never a panic or an overflow.
pub fn timestamp(data: &[u8]) {
    static CUSTOM: OnceLock<[regex::bytes::Regex; 2]> = OnceLock::new();
    let custom = CUSTOM.get_or_init(|| {
        [
            r"(?P<year>-?[0-9]+)/(?P<month>[A-Za-z0-9]+)/(?P<day>[0-9]+)T(?P<hour>[0-9]+):(?P<minute>[0-9]+):(?P<second>[0-9]+)(?:\.(?P<frac>[0-9]+))?(?P<tz>Z|[+-][0-9:]+)?",
            r"@(?P<epoch>[0-9.eE+-]+)",
        ]
        .map(|s| regex::bytes::Regex::new(s).expect("custom timestamp regex"))
    });
    let year = match data {
        [a, b, ..] => i32::from(i16::from_le_bytes([*a, *b])),
        _ => 2026,
    };
    let _ = parse_timestamp(data, None, year);
    for re in custom {
        let _ = parse_timestamp(data, Some(re), year);
    }
}

/// `buf` split at `\n` as the daemon's sources split it: a last line without `\n` counts, an
/// empty input has no lines. `\r` is left in place.
fn split_lines(buf: &[u8]) -> impl Iterator<Item = &[u8]> {
    let body = buf.strip_suffix(b"\n").unwrap_or(buf);
    let none = buf.is_empty();
    body.split(|&b| b == b'\n').filter(move |_| !none)
}

fn line_at(source: &str, stream: u64, bytes: &[u8], at: Ts) -> Line {
    Line::new(
        Origin::new(Arc::from(source), stream, Labels::new()),
        bytes,
        at,
    )
}

//! `logwarden replay`: run log files through classification and rules on a simulated clock,
//! and report the notifications that would have gone out, in order, with their times.
//!
//! Time comes from the lines themselves: a configured `replay.timestamp_regex`, else the
//! common formats below. A line without a timestamp takes its file's previous time plus
//! `1 / replay.rate` seconds. Several files are merged by time. Rules are evaluated at every
//! simulated second (gaps longer than any rule needs are skipped), so `for`, windows and
//! resolution behave as they would have live.
//!
//! Queue-depth series (`--queue-csv`, see [`crate::queues::csv`]) are merged with the log
//! lines by time, so backlog and stalled-worker rules can be tried offline.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read};
use std::path::Path;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use regex::bytes::{Captures, Regex};

use crate::config::Config;
use crate::event::{days_from_civil, Event, Labels, Line, Origin, Ts};
use crate::queues::SampleBatch;
use crate::records::{Classifier, ClassifyStats};
use crate::rules::{Alert, RuleEngine};
use crate::sources::LineSplitter;

/// Epoch seconds of 10000-01-01: later "epoch" values are not timestamps.
const MAX_EPOCH_SECS: f64 = 253_402_300_800.0;

/// Only this many leading bytes of a line are searched for a timestamp.
const TS_SEARCH_BYTES: usize = 96;

const MONTHS: [&str; 12] = [
    "jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec",
];

fn builtin_formats() -> &'static [Regex] {
    static F: OnceLock<Vec<Regex>> = OnceLock::new();
    F.get_or_init(|| {
        [
            // ISO 8601 / RFC 3339 / Python logging / Celery: 2026-11-23T10:00:00.123Z, 2026-11-23 10:00:00,123
            r"(?P<year>[0-9]{4})-(?P<month>[0-9]{2})-(?P<day>[0-9]{2})[T ](?P<hour>[0-9]{2}):(?P<minute>[0-9]{2}):(?P<second>[0-9]{2})(?:[.,](?P<frac>[0-9]{1,9}))?(?P<tz>Z| ?[+-][0-9]{2}:?[0-9]{2})?",
            // Apache / nginx: 23/Nov/2026:10:00:00 +0000
            r"(?P<day>[0-9]{2})/(?P<month>[A-Z][a-z]{2})/(?P<year>[0-9]{4}):(?P<hour>[0-9]{2}):(?P<minute>[0-9]{2}):(?P<second>[0-9]{2})(?: (?P<tz>[+-][0-9]{4}))?",
            // syslog / journald: Nov 23 10:00:00 (no year)
            r"\b(?P<month>Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec) +(?P<day>[0-9]{1,2}) (?P<hour>[0-9]{2}):(?P<minute>[0-9]{2}):(?P<second>[0-9]{2})(?:\.(?P<frac>[0-9]{1,9}))?",
            // JSON loggers with epoch seconds: "ts":1795428000.123, "time": 1795428000
            r#""(?:ts|time|timestamp|t)": ?(?P<epoch>[0-9]{10}(?:\.[0-9]+)?)\b"#,
        ]
        .iter()
        .map(|s| Regex::new(s).expect("built-in timestamp regex"))
        .collect()
    })
}

/// Parses a line's timestamp with `custom` (if given) or the built-in formats.
/// `default_year` fills in formats without a year (syslog).
pub fn parse_timestamp(line: &[u8], custom: Option<&Regex>, default_year: i32) -> Option<Ts> {
    let head = &line[..line.len().min(TS_SEARCH_BYTES)];
    match custom {
        Some(re) => re
            .captures(line)
            .and_then(|c| from_captures(&c, default_year)),
        None => {
            // Most lines that have a timestamp start with an ISO one (after a `[` or a JSON
            // key, at most): read by hand, with the same fields as the regex
            // (`iso_by_hand_is_the_iso_regex`). An old 200k-line backlog, parsed line by
            // line in catch-up, went from 2,079M to 1,272M instructions (callgrind).
            let formats = builtin_formats();
            let rest = match iso_at_first_digit(head) {
                Some(f) => match from_fields(&f, default_year) {
                    Some(ts) => return Some(ts),
                    None => &formats[1..],
                },
                None => formats,
            };
            rest.iter().find_map(|re| {
                re.captures(head)
                    .and_then(|c| from_captures(&c, default_year))
            })
        }
    }
}

/// The fields of a timestamp, as the built-in formats' named groups capture them.
#[derive(Debug, Default, PartialEq)]
struct Fields<'a> {
    epoch: Option<&'a str>,
    year: Option<&'a str>,
    month: Option<&'a str>,
    day: Option<&'a str>,
    hour: Option<&'a str>,
    minute: Option<&'a str>,
    second: Option<&'a str>,
    frac: Option<&'a str>,
    tz: Option<&'a str>,
}

/// The first built-in format (ISO 8601) read by hand where `head`'s first ASCII digit is:
/// a match there is the regex's leftmost one (no match can start before a digit), and its
/// optional parts are taken as greedily as the regex takes them. `None` when the format does
/// not match there (it may still match further on: the caller asks the regex).
fn iso_at_first_digit(head: &[u8]) -> Option<Fields<'_>> {
    let p = head.iter().position(u8::is_ascii_digit)?;
    let b = &head[p..];
    let digits = |i: usize, n: usize| -> Option<&str> {
        let s = b.get(i..i + n)?;
        if s.iter().all(u8::is_ascii_digit) {
            std::str::from_utf8(s).ok()
        } else {
            None
        }
    };
    let is = |i: usize, set: &[u8]| b.get(i).is_some_and(|c| set.contains(c));
    let mut f = Fields {
        year: Some(digits(0, 4)?),
        ..Fields::default()
    };
    if !(is(4, b"-") && is(7, b"-") && is(10, b"T ") && is(13, b":") && is(16, b":")) {
        return None;
    }
    f.month = Some(digits(5, 2)?);
    f.day = Some(digits(8, 2)?);
    f.hour = Some(digits(11, 2)?);
    f.minute = Some(digits(14, 2)?);
    f.second = Some(digits(17, 2)?);
    let mut i = 19;
    // (?:[.,](?P<frac>[0-9]{1,9}))?
    if is(i, b".,") {
        let n = b[i + 1..]
            .iter()
            .take(9)
            .take_while(|c| c.is_ascii_digit())
            .count();
        if n > 0 {
            f.frac = digits(i + 1, n);
            i += 1 + n;
        }
    }
    // (?P<tz>Z| ?[+-][0-9]{2}:?[0-9]{2})?
    if is(i, b"Z") {
        f.tz = Some("Z");
    } else {
        let sign = if is(i, b" ") { i + 1 } else { i };
        if is(sign, b"+-") && digits(sign + 1, 2).is_some() {
            let m = if is(sign + 3, b":") {
                sign + 4
            } else {
                sign + 3
            };
            if digits(m, 2).is_some() {
                f.tz = std::str::from_utf8(&b[i..m + 2]).ok();
            }
        }
    }
    Some(f)
}

fn from_captures(c: &Captures<'_>, default_year: i32) -> Option<Ts> {
    from_fields(&fields_of(c), default_year)
}

/// The named groups a timestamp regex captured (a group that is not UTF-8 is left out).
fn fields_of<'a>(c: &Captures<'a>) -> Fields<'a> {
    let text = |n: &str| {
        c.name(n)
            .and_then(|m| std::str::from_utf8(m.as_bytes()).ok())
    };
    Fields {
        epoch: text("epoch"),
        year: text("year"),
        month: text("month"),
        day: text("day"),
        hour: text("hour"),
        minute: text("minute"),
        second: text("second"),
        frac: text("frac"),
        tz: text("tz"),
    }
}

fn from_fields(f: &Fields<'_>, default_year: i32) -> Option<Ts> {
    let num = |s: Option<&str>| s.and_then(|s| s.trim().parse::<i64>().ok());
    if let Some(e) = f.epoch {
        let secs: f64 = e.parse().ok()?;
        return (secs.is_finite() && (0.0..MAX_EPOCH_SECS).contains(&secs))
            .then(|| Ts((secs * 1000.0).round() as u64));
    }
    // Years outside 0..=9999 are not timestamps; bounding them keeps the arithmetic below
    // from overflowing when a custom regex captures any number of digits (found by the
    // `timestamp` fuzz target: a nine-digit year).
    let year = num(f.year).unwrap_or(i64::from(default_year));
    if !(0..=9999).contains(&year) {
        return None;
    }
    let month = match f.month? {
        m if m.chars().all(|c| c.is_ascii_digit()) => m.parse::<u32>().ok()?,
        m => MONTHS.iter().position(|x| x.eq_ignore_ascii_case(m))? as u32 + 1,
    };
    let (day, hour, minute, second) = (num(f.day)?, num(f.hour)?, num(f.minute)?, num(f.second)?);
    if !(1..=12).contains(&month)
        || !(1..=31).contains(&day)
        || !(0..=23).contains(&hour)
        || !(0..=59).contains(&minute)
        || !(0..=60).contains(&second)
    {
        return None;
    }
    // Milliseconds: the fraction's first three digits, padded with zeros (0 if they are
    // not digits, which only a custom regex can capture).
    let ms = f.frac.map_or(0, |fr| {
        fr.chars()
            .chain("000".chars())
            .take(3)
            .try_fold(0, |ms, c| Some(ms * 10 + i64::from(c.to_digit(10)?)))
            .unwrap_or(0)
    });
    let offset_min = match f.tz.map(str::trim) {
        None | Some("Z") => 0,
        Some(tz) => {
            let sign = if tz.starts_with('-') { -1 } else { 1 };
            // Hours: its first two digits (none: not a zone); minutes: the digits after.
            let mut digits = tz
                .bytes()
                .filter(u8::is_ascii_digit)
                .map(|d| i64::from(d - b'0'));
            let h = match (digits.next(), digits.next()) {
                (None, _) => return None,
                (Some(a), None) => a,
                (Some(a), Some(b)) => a * 10 + b,
            };
            let m = digits
                .try_fold(0i64, |m, d| m.checked_mul(10)?.checked_add(d))
                .unwrap_or(0);
            if h > 23 || m > 59 {
                return None;
            }
            sign * (h * 60 + m)
        }
    };
    let days = days_from_civil(year, month, day as u32);
    let secs = days * 86_400 + hour * 3600 + minute * 60 + second - offset_min * 60;
    (secs >= 0).then(|| Ts(secs as u64 * 1000 + ms as u64))
}

/// A log file being replayed: its lines with their times, read lazily.
struct ReplayFile {
    name: Arc<str>,
    reader: Box<dyn BufRead>,
    splitter: LineSplitter,
    pending: std::collections::VecDeque<(Vec<u8>, bool)>,
    eof: bool,
    last: Option<Ts>,
    step: Duration,
}

impl ReplayFile {
    fn next_line(&mut self) -> std::io::Result<Option<(Vec<u8>, bool)>> {
        while self.pending.is_empty() && !self.eof {
            let buf = self.reader.fill_buf()?;
            let n = buf.len();
            let pending = &mut self.pending;
            if n == 0 {
                self.eof = true;
                self.splitter
                    .finish(|l| pending.push_back((l.bytes.to_vec(), l.truncated)));
            } else {
                self.splitter
                    .push(buf, |l| pending.push_back((l.bytes.to_vec(), l.truncated)));
                self.reader.consume(n);
            }
        }
        Ok(self.pending.pop_front())
    }
}

/// What a replay produced.
#[derive(Debug, Default)]
pub struct ReplayReport {
    /// Notifications in the order they would have gone out.
    pub alerts: Vec<Alert>,
    /// Classification counters.
    pub stats: ClassifyStats,
    /// Events per kind.
    pub per_kind: BTreeMap<String, u64>,
    /// Events per pattern name.
    pub per_pattern: BTreeMap<String, u64>,
    /// Up to 10 lines that matched no pattern.
    pub unmatched_sample: Vec<String>,
    /// Lines that had no timestamp of their own.
    pub untimed_lines: u64,
    /// Simulated time span covered.
    pub first: Option<Ts>,
    /// Simulated end.
    pub last: Option<Ts>,
    /// Queue-depth samples replayed.
    pub samples: u64,
}

/// Replays `inputs` (name, reader) through `config`'s patterns and rules.
pub fn replay(
    config: &Config,
    inputs: Vec<(String, Box<dyn Read>)>,
    on_event: impl FnMut(&Event),
) -> std::io::Result<ReplayReport> {
    replay_with_queues(config, inputs, Vec::new(), on_event)
}

/// Like [`replay`], with queue-depth batches (in time order) merged with the lines by time.
pub fn replay_with_queues(
    config: &Config,
    inputs: Vec<(String, Box<dyn Read>)>,
    depth: Vec<SampleBatch>,
    mut on_event: impl FnMut(&Event),
) -> std::io::Result<ReplayReport> {
    let mut depth = std::collections::VecDeque::from(depth);
    let year = config.replay.year.unwrap_or_else(current_year);
    let step = Duration::from_secs_f64(1.0 / config.replay.rate);
    let mut files: Vec<ReplayFile> = inputs
        .into_iter()
        .map(|(name, r)| ReplayFile {
            name: Arc::from(name.as_str()),
            reader: Box::new(BufReader::with_capacity(1 << 20, r)),
            splitter: LineSplitter::new(config.max_line_bytes),
            pending: Default::default(),
            eof: false,
            last: None,
            step,
        })
        .collect();
    let origins: Vec<Arc<Origin>> = files
        .iter()
        .enumerate()
        .map(|(i, f)| Origin::new(f.name.clone(), i as u64, Labels::new()))
        .collect();
    let mut classifier = Classifier::new(
        config.patterns.clone(),
        config.records,
        config.max_label_values,
    );
    let mut engine = RuleEngine::new(config.rules.clone(), config.max_series);
    let mut report = ReplayReport::default();
    let horizon = config
        .rules
        .iter()
        .map(|r| match &r.kind {
            crate::rules::RuleKind::Count { window, .. } | crate::rules::RuleKind::Ratio { window, .. } => *window,
            crate::rules::RuleKind::Gauge(crate::rules::GaugeSpec {
                metric: crate::rules::GaugeMetric::Growth { window },
                ..
            }) => *window,
            _ => Duration::ZERO,
        } + r.for_ + r.keep_firing_for)
        .max()
        .unwrap_or_default()
        + Duration::from_secs(2);

    // One look-ahead line per file, merged by time (ties: file order).
    let mut heads: Vec<Option<(Ts, Vec<u8>, bool)>> = Vec::with_capacity(files.len());
    for f in &mut files {
        heads.push(timed_next(f, config, year, &mut report)?);
    }
    let mut clock: Option<Ts> = None;
    let mut events = Vec::new();
    let mut alerts = Vec::new();
    // Moves the simulated clock to `at`, never back (interleaved writers may step back a
    // little): first everything due in between runs (record timeouts, rule evaluation).
    macro_rules! step_to {
        ($at:expr) => {{
            let at = $at;
            let now = clock.map_or(at, |c: Ts| c.max(at));
            if let Some(prev) = clock {
                advance(
                    prev,
                    now,
                    horizon,
                    &mut classifier,
                    &mut engine,
                    &mut events,
                    &mut alerts,
                    &mut report,
                    &mut on_event,
                );
            }
            clock = Some(now);
            report.first.get_or_insert(now);
            now
        }};
    }
    loop {
        let line_head = (0..heads.len())
            .filter(|&i| heads[i].is_some())
            .min_by_key(|&i| heads[i].as_ref().map(|h| h.0));
        let line_at = line_head.and_then(|i| heads[i].as_ref().map(|h| h.0));
        // Depth samples at or before the next line go first.
        if let Some(b) = depth.front() {
            if line_at.is_none_or(|t| b.at <= t) {
                let b = depth.pop_front().expect("front exists");
                let now = step_to!(b.at);
                report.samples += b.samples.len() as u64;
                engine.observe_samples(&b);
                engine.evaluate_touched(now, &mut alerts);
                report.alerts.append(&mut alerts);
                continue;
            }
        }
        let Some(i) = line_head else { break };
        let (at, bytes, truncated) = heads[i].take().expect("selected head is some");
        let now = step_to!(at);
        let line = Line {
            truncated,
            ..Line::new(origins[i].clone(), bytes, now)
        };
        engine.observe_lines(line.source(), line.labels(), now);
        let unmatched_before = classifier.stats.unmatched;
        classifier.push(&line, &mut events);
        if classifier.stats.unmatched > unmatched_before && report.unmatched_sample.len() < 10 {
            report
                .unmatched_sample
                .push(crate::event::display_text(&line.bytes));
        }
        if !events.is_empty() {
            feed(
                &mut engine,
                &mut events,
                &mut alerts,
                &mut report,
                &mut on_event,
            );
            engine.evaluate_touched(now, &mut alerts);
            report.alerts.append(&mut alerts);
        }
        heads[i] = timed_next(&mut files[i], config, year, &mut report)?;
    }
    classifier.finish(&mut events);
    feed(
        &mut engine,
        &mut events,
        &mut alerts,
        &mut report,
        &mut on_event,
    );
    if let Some(end) = clock {
        // Let windows run out after the last line, so what would have resolved does.
        let stop = end.plus(horizon);
        advance(
            end,
            stop,
            horizon,
            &mut classifier,
            &mut engine,
            &mut events,
            &mut alerts,
            &mut report,
            &mut on_event,
        );
        report.last = Some(end);
    }
    report.stats = classifier.stats.clone();
    Ok(report)
}

fn timed_next(
    f: &mut ReplayFile,
    config: &Config,
    year: i32,
    report: &mut ReplayReport,
) -> std::io::Result<Option<(Ts, Vec<u8>, bool)>> {
    let Some((bytes, truncated)) = f.next_line()? else {
        return Ok(None);
    };
    let at = match parse_timestamp(&bytes, config.replay.timestamp_regex.as_ref(), year) {
        Some(t) => t,
        None => {
            report.untimed_lines += 1;
            f.last.map_or(Ts(0), |l| l.plus(f.step))
        }
    };
    f.last = Some(at);
    Ok(Some((at, bytes, truncated)))
}

fn feed(
    engine: &mut RuleEngine,
    events: &mut Vec<Event>,
    alerts: &mut Vec<Alert>,
    report: &mut ReplayReport,
    on_event: &mut impl FnMut(&Event),
) {
    for ev in events.drain(..) {
        *report.per_kind.entry(ev.kind.to_string()).or_default() += 1;
        *report
            .per_pattern
            .entry(ev.pattern.to_string())
            .or_default() += 1;
        on_event(&ev);
        engine.observe(&ev, alerts);
    }
    report.alerts.append(alerts);
}

/// Evaluates at every whole second in `(from, to]`, skipping the middle of gaps longer than
/// `horizon` (nothing can change there once every window has emptied).
#[allow(clippy::too_many_arguments)]
fn advance(
    from: Ts,
    to: Ts,
    horizon: Duration,
    classifier: &mut Classifier,
    engine: &mut RuleEngine,
    events: &mut Vec<Event>,
    alerts: &mut Vec<Alert>,
    report: &mut ReplayReport,
    on_event: &mut impl FnMut(&Event),
) {
    let mut s = from.secs() + 1;
    let end = to.secs();
    let skip_after = from.plus(horizon).secs();
    while s <= end {
        let t = Ts::from_secs(s);
        classifier.tick(t, events);
        feed(engine, events, alerts, report, on_event);
        engine.evaluate(t, alerts);
        report.alerts.append(alerts);
        s = if s >= skip_after && end > s {
            end.max(s + 1)
        } else {
            s + 1
        };
    }
    engine.evaluate(to, alerts);
    report.alerts.append(alerts);
}

/// The current UTC year.
pub fn current_year() -> i32 {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    crate::event::civil_from_days((secs / 86_400) as i64).0 as i32
}

/// Opens replay inputs; `-` is stdin.
pub fn open_inputs(paths: &[String]) -> std::io::Result<Vec<(String, Box<dyn Read>)>> {
    paths
        .iter()
        .map(|p| -> std::io::Result<(String, Box<dyn Read>)> {
            if p == "-" {
                Ok(("stdin".into(), Box::new(std::io::stdin())))
            } else {
                let f = std::fs::File::open(Path::new(p))
                    .map_err(|e| std::io::Error::new(e.kind(), format!("cannot open {p}: {e}")))?;
                Ok((p.clone(), Box::new(f)))
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rules::AlertState;

    fn ts(s: &str) -> Option<String> {
        parse_timestamp(s.as_bytes(), None, 2026).map(|t| t.rfc3339())
    }

    /// `parse_timestamp` as it was: the built-in regexes in order, nothing by hand.
    fn by_regexes(line: &[u8]) -> Option<Ts> {
        let head = &line[..line.len().min(TS_SEARCH_BYTES)];
        builtin_formats()
            .iter()
            .find_map(|re| re.captures(head).and_then(|c| from_captures(&c, 2026)))
    }

    /// Where the hand-read ISO timestamp is found, the ISO regex's leftmost match is there
    /// with the same fields; and the parsed time is always the regexes' time.
    fn check_iso_by_hand(line: &[u8]) {
        let head = &line[..line.len().min(TS_SEARCH_BYTES)];
        if let Some(f) = iso_at_first_digit(head) {
            let c = builtin_formats()[0].captures(head);
            let c =
                c.unwrap_or_else(|| panic!("by hand only: {:?}", String::from_utf8_lossy(line)));
            let at = head.iter().position(u8::is_ascii_digit);
            assert_eq!(
                c.get(0).map(|m| m.start()),
                at,
                "{:?}",
                String::from_utf8_lossy(line)
            );
            assert_eq!(f, fields_of(&c), "{:?}", String::from_utf8_lossy(line));
        }
        assert_eq!(
            parse_timestamp(line, None, 2026),
            by_regexes(line),
            "{:?}",
            String::from_utf8_lossy(line)
        );
    }

    #[test]
    fn iso_by_hand_is_the_iso_regex() {
        let corpus = include_str!("../fixtures/labeled-dev.tsv");
        let demo = include_str!("../fixtures/demo/worker.log");
        let mut hand = 0;
        for line in corpus.lines().chain(demo.lines()) {
            let line = line.split('\t').next_back().unwrap_or(line);
            hand += usize::from(iso_at_first_digit(line.as_bytes()).is_some());
            check_iso_by_hand(line.as_bytes());
        }
        assert!(hand > 100, "lines read by hand: {hand}");
        for line in [
            "2026-11-23T10:00:00Z",
            // Where the fraction and the zone stop (the proptest's shrunk cases).
            "2026-11-23T10:00:00.1",
            "2026-11-23T10:00:00.1Z",
            "2026-11-23T10:00:00.1234567890",
            "2026-11-23T10:00:00.1234567891",
            "2026-11-23T10:00:00+05:30",
            "2026-11-23T10:00:00 -0530",
            "2026-11-23 10:00:00,1234567891 +0530 x",
            "2026-11-23 10:00:00.5 -05:30",
            "2026-11-23 10:00:00.5 -05:3",
            "2026-11-23 10:00:00 +05",
            "2026-11-23 10:00:00+0530",
            "2026-11-23 10:00:00.Z",
            "2026-11-23 10:00:00,",
            "2026-13-23 10:00:00 x 23/Nov/2026:10:00:00 +0000",
            "2026-11-23 10:00:0",
            "12026-11-23 10:00:00",
            "[2026-11-23 10:00:00,007: INFO/MainProcess]",
            "{\"ts\":\"2026-11-23T10:00:00.020Z\"}",
            "10.0.4.9 - - [23/Nov/2026:10:00:00 +0000] \"GET /\"",
            "Nov 23 10:00:00 host x",
            "x 2026-11-23 10:00:00",
            "9 2026-11-23 10:00:00",
        ] {
            check_iso_by_hand(line.as_bytes());
        }
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(2000))]
        /// An ISO-shaped head (sometimes broken) and a tail of pieces: every way the optional
        /// fraction and zone can stop short.
        #[test]
        fn iso_by_hand_is_the_iso_regex_on_pieces(
            lead in proptest::sample::select(vec!["", "[", "{\"ts\":\"", "x ", "9 ", "1"]),
            date in proptest::sample::select(vec!["2026-11-23", "2026-13-23", "0000-01-01", "2026-1-23", "2026/11/23"]),
            sep in proptest::sample::select(vec!["T", " ", "_"]),
            time in proptest::sample::select(vec!["10:00:00", "23:59:60", "24:00:00", "10:00:0", "10:0:00"]),
            tail in proptest::collection::vec(proptest::sample::select(vec![
                ".", ",", "1", "123", "1234567890", "Z", " ", "+", "-", "05", ":", "30", "0530",
                "a", "\u{e9}", "+05:30", " -0530", " +05:3", "-05", " +05:30x", ".123456789", ".1", ",5Z", "z",
            ]), 0..7)
        ) {
            check_iso_by_hand(format!("{lead}{date}{sep}{time}{}", tail.concat()).as_bytes());
        }
    }

    #[test]
    fn common_timestamp_formats() {
        assert_eq!(
            ts("2026-11-23T10:00:00Z x").as_deref(),
            Some("2026-11-23T10:00:00.000Z")
        );
        assert_eq!(
            ts("2026-11-23T12:00:00.5+02:00 x").as_deref(),
            Some("2026-11-23T10:00:00.500Z")
        );
        assert_eq!(
            ts("[2026-11-23 10:00:01,123: ERROR/Main] x").as_deref(),
            Some("2026-11-23T10:00:01.123Z")
        );
        assert_eq!(
            ts("Nov 23 10:00:02 host kernel: x").as_deref(),
            Some("2026-11-23T10:00:02.000Z")
        );
        assert_eq!(
            ts("1.2.3.4 - - [23/Nov/2026:11:00:03 +0100] \"GET /\"").as_deref(),
            Some("2026-11-23T10:00:03.000Z")
        );
        assert_eq!(
            ts("{\"ts\":1795428004.25,\"msg\":\"x\"}").as_deref(),
            Some("2026-11-23T10:00:04.250Z")
        );
        assert_eq!(ts("no time here"), None);
        assert_eq!(ts("2026-13-45T99:00:00Z"), None);
    }

    #[test]
    fn custom_timestamp_regex() {
        let re = Regex::new(r"t=(?P<day>[0-9]{2})\.(?P<month>[0-9]{2})\.(?P<year>[0-9]{4})-(?P<hour>[0-9]{2})(?P<minute>[0-9]{2})(?P<second>[0-9]{2})").unwrap();
        let t = parse_timestamp(b"x t=23.11.2026-100005 y", Some(&re), 2000).unwrap();
        assert_eq!(t.rfc3339(), "2026-11-23T10:00:05.000Z");
    }

    #[test]
    fn out_of_range_captures_are_not_timestamps_and_never_overflow() {
        // fuzz/regressions/timestamp/: a custom regex that takes any number of digits.
        let re = Regex::new(r"(?P<year>[0-9]+)/(?P<month>[0-9]+)/(?P<day>[0-9]+)T(?P<hour>[0-9]+):(?P<minute>[0-9]+):(?P<second>[0-9]+)(?P<tz>[+-][0-9:]+)?").unwrap();
        for line in [
            "777772026/11/23T10:0:0",
            "9223372036854775807/1/1T0:0:0",
            "2026/11/23T10:0:0+99999999999999999",
            "2026/11/23T10:0:0+00:99",
        ] {
            assert_eq!(
                parse_timestamp(line.as_bytes(), Some(&re), 2026),
                None,
                "{line}"
            );
        }
        let signed = Regex::new(r"(?P<year>[0-9]+)-(?P<month>[0-9]+)-(?P<day>[0-9]+) (?P<hour>-?[0-9]+):(?P<minute>-?[0-9]+):(?P<second>-?[0-9]+)").unwrap();
        for line in [
            "2026-1-1 -9223372036854775807:0:0",
            "2026-1-1 0:-1:0",
            "2026-1-1 0:0:-1",
        ] {
            assert_eq!(
                parse_timestamp(line.as_bytes(), Some(&signed), 2026),
                None,
                "{line}"
            );
        }
        let t = parse_timestamp(b"2026/11/23T10:0:0+01:30", Some(&re), 2026).unwrap();
        assert_eq!(t.rfc3339(), "2026-11-23T08:30:00.000Z");
        let epoch = Regex::new(r"@(?P<epoch>[0-9.e+]+)").unwrap();
        assert_eq!(parse_timestamp(b"@1e300", Some(&epoch), 2026), None);
        assert!(parse_timestamp(b"@1795428000", Some(&epoch), 2026).is_some());
        // Syslog lines take the default year, which may be anything.
        assert_eq!(parse_timestamp(b"Nov 23 10:00:00 x", None, i32::MAX), None);
    }

    fn run(text: &str, cfg: &str) -> ReplayReport {
        let config = Config::from_str_named("t.toml", cfg, None).unwrap();
        replay(
            &config,
            vec![(
                "w.log".into(),
                Box::new(std::io::Cursor::new(text.to_string())),
            )],
            |_| {},
        )
        .unwrap()
    }

    #[test]
    fn replay_fires_and_resolves_on_log_time() {
        let cfg = r#"
            [[pattern]]
            name = "boom"
            kind = "crash"
            regex = 'boom'
            [[rule]]
            name = "crashes"
            type = "count"
            kinds = ["crash"]
            window = "1m"
            threshold = 1
            severity = "critical"
        "#;
        let text =
            "2026-11-23T10:00:00Z boom\n2026-11-23T10:00:30Z boom\n2026-11-23T10:05:00Z quiet\n";
        let r = run(text, cfg);
        let got: Vec<(AlertState, String)> =
            r.alerts.iter().map(|a| (a.state, a.at.rfc3339())).collect();
        assert_eq!(
            got,
            vec![
                (AlertState::Firing, "2026-11-23T10:00:30.000Z".to_string()),
                (AlertState::Resolved, "2026-11-23T10:01:00.000Z".to_string())
            ]
        );
        assert_eq!(r.per_kind.get("crash"), Some(&2));
        assert_eq!(
            r.unmatched_sample,
            vec!["2026-11-23T10:05:00Z quiet".to_string()]
        );
    }

    #[test]
    fn lines_without_time_advance_at_rate() {
        let cfg = r#"
            [replay]
            rate = 1
            [[pattern]]
            name = "boom"
            kind = "crash"
            regex = 'boom'
            [[rule]]
            name = "crashes"
            type = "count"
            kinds = ["crash"]
            window = "10s"
            threshold = 2
        "#;
        // One boom per simulated second: 3 in a 10 s window fires at the third line.
        let r = run("boom\nboom\nboom\n", cfg);
        assert_eq!(r.alerts[0].state, AlertState::Firing);
        assert_eq!(r.alerts[0].at, Ts(2000));
        assert_eq!(r.untimed_lines, 3);
    }
}

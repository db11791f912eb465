//! The types that cross channels between pipeline stages: [`Line`] (sources → classify),
//! [`Event`] (classify → counters) and the time type [`Ts`] every pure stage takes as `now`.
//!
//! Nothing here does I/O or reads a clock.

use std::fmt;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

/// A point in time in milliseconds since the Unix epoch.
///
/// The daemon derives it from a monotonic clock anchored at the wall time of start-up (so an
/// NTP step cannot move windows backwards); `replay` derives it from timestamps in the log.
/// Pure logic (windows, rules, record folding) takes it as an argument and never reads a clock.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Ts(pub u64);

impl Serialize for Ts {
    /// As RFC 3339 text: people read event and alert files.
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.rfc3339())
    }
}

impl<'de> Deserialize<'de> for Ts {
    /// The RFC 3339 text [`Ts::rfc3339`] writes (or a number of milliseconds).
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Ts, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Ms(u64),
            Text(String),
        }
        match Raw::deserialize(d)? {
            Raw::Ms(ms) => Ok(Ts(ms)),
            Raw::Text(t) => Ts::parse_rfc3339(&t).ok_or_else(|| {
                serde::de::Error::custom(format!(
                    "expected a time like 2026-11-23T10:00:00.000Z, got {t:?}"
                ))
            }),
        }
    }
}

impl Ts {
    /// Parses what [`Ts::rfc3339`] writes: `YYYY-MM-DDTHH:MM:SS.mmmZ` (the milliseconds may be
    /// left out). Not a general RFC 3339 parser: no offsets, no other precisions.
    pub fn parse_rfc3339(s: &str) -> Option<Ts> {
        let b = s.as_bytes();
        let num = |r: std::ops::Range<usize>| -> Option<u64> {
            let d = b.get(r)?;
            d.iter()
                .all(u8::is_ascii_digit)
                .then(|| d.iter().fold(0u64, |n, c| n * 10 + u64::from(c - b'0')))
        };
        let sep = |i: usize, c: u8| b.get(i) == Some(&c);
        if !(sep(4, b'-') && sep(7, b'-') && sep(10, b'T') && sep(13, b':') && sep(16, b':')) {
            return None;
        }
        let (y, mo, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
        let (h, mi, sec) = (num(11..13)?, num(14..16)?, num(17..19)?);
        let ms = match b.len() {
            20 if sep(19, b'Z') => 0,
            24 if sep(19, b'.') && sep(23, b'Z') => num(20..23)?,
            _ => return None,
        };
        if !(1..=12).contains(&mo) || !(1..=31).contains(&d) || h > 23 || mi > 59 || sec > 60 {
            return None;
        }
        let days = u64::try_from(days_from_civil(y as i64, mo as u32, d as u32)).ok()?;
        Some(Ts(((days * 86_400 + h * 3600 + mi * 60 + sec) * 1000) + ms))
    }

    /// Builds a time from whole seconds since the epoch.
    pub const fn from_secs(secs: u64) -> Ts {
        Ts(secs * 1000)
    }

    /// Whole seconds since the epoch (floor).
    pub const fn secs(self) -> u64 {
        self.0 / 1000
    }

    /// `self + d`, saturating.
    pub fn plus(self, d: std::time::Duration) -> Ts {
        Ts(self.0.saturating_add(d.as_millis() as u64))
    }

    /// `self - earlier`, or zero when `earlier` is later.
    pub fn since(self, earlier: Ts) -> std::time::Duration {
        std::time::Duration::from_millis(self.0.saturating_sub(earlier.0))
    }

    /// RFC 3339 in UTC with millisecond precision, e.g. `2026-11-23T10:00:00.000Z`.
    pub fn rfc3339(self) -> String {
        let secs = (self.0 / 1000) as i64;
        let ms = self.0 % 1000;
        let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
        let (y, m, d) = civil_from_days(days);
        format!(
            "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{ms:03}Z",
            rem / 3600,
            rem / 60 % 60,
            rem % 60
        )
    }
}

impl fmt::Display for Ts {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.rfc3339())
    }
}

/// Days since 1970-01-01 → (year, month, day). Howard Hinnant's `civil_from_days`.
pub fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

/// (year, month, day) → days since 1970-01-01. Howard Hinnant's `days_from_civil`.
pub fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let m = i64::from(m);
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// Where lines come from: a source, one byte stream of it, its static labels. Shared by every
/// line of the stream (`Arc<Origin>`), so a line carries one reference, not a name, a
/// number and a copy of the label list each (a `Line` was 96 bytes with a `Vec` of labels
/// cloned per line, allocating whenever the source had labels; it is 56 now).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Origin {
    /// Name of the source (`stdin`, or the `[[source]]` name).
    pub source: Arc<str>,
    /// Which byte stream of the source (a file's open sequence number; 0 for stdin), so a
    /// multi-line record never joins lines of two files.
    pub stream: u64,
    /// Static labels of the source (`labels = { worker = "w1" }`).
    pub labels: Labels,
}

impl Origin {
    /// A shared origin.
    pub fn new(source: Arc<str>, stream: u64, labels: Labels) -> Arc<Origin> {
        Arc::new(Origin {
            source,
            stream,
            labels,
        })
    }
}

/// One physical log line as read by a source: bytes, never a `String`.
///
/// The terminating `\n` (and a `\r` before it) is stripped; a line longer than the configured
/// cap keeps its head and has `truncated` set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Line {
    /// The source, stream and static labels of the line.
    pub origin: Arc<Origin>,
    /// The line's bytes without the line terminator.
    pub bytes: LineBytes,
    /// When the line was read (daemon) or when it says it was written (replay).
    pub at: Ts,
    /// True when the line was longer than the line cap and only its head is kept.
    pub truncated: bool,
    /// Read from data that was already in the file when the daemon started (a checkpoint
    /// resume or `start_at = "beginning"`): the classify stage checks its timestamp.
    pub catch_up: bool,
    /// Older than `catch_up_window`: counted, but its alerts are summarised (see
    /// [`Event::backfill`]).
    pub backfill: bool,
}

impl Line {
    /// A line read now-ish: not truncated, not catch-up, not backfill.
    pub fn new(origin: Arc<Origin>, bytes: impl Into<LineBytes>, at: Ts) -> Line {
        Line {
            origin,
            bytes: bytes.into(),
            at,
            truncated: false,
            catch_up: false,
            backfill: false,
        }
    }

    /// Name of the source the line came from.
    pub fn source(&self) -> &Arc<str> {
        &self.origin.source
    }

    /// Which byte stream of the source the line came from.
    pub fn stream(&self) -> u64 {
        self.origin.stream
    }

    /// Static labels of the source.
    pub fn labels(&self) -> &Labels {
        &self.origin.labels
    }
}

/// A line's bytes: a range of a chunk shared by the lines read together, so a source
/// allocates once per piece it reads (16 KiB), not once per line. A `Vec` per line, made by
/// the source and freed after classification, was ~10% of the daemon's instructions on the
/// bench corpus (callgrind). A line holds its whole chunk alive; lines live for one batch.
#[derive(Clone)]
pub struct LineBytes {
    chunk: Arc<[u8]>,
    start: usize,
    end: usize,
}

impl LineBytes {
    /// `line`'s bytes as a range of `chunk` when it lies inside it (no copy), else a copy
    /// (a line that spanned two reads comes from the splitter's own buffer).
    pub fn within(chunk: &Arc<[u8]>, line: &[u8]) -> LineBytes {
        let base = chunk.as_ptr() as usize;
        let at = line.as_ptr() as usize;
        if at >= base && at + line.len() <= base + chunk.len() {
            LineBytes {
                chunk: chunk.clone(),
                start: at - base,
                end: at - base + line.len(),
            }
        } else {
            LineBytes::from(line)
        }
    }
}

impl std::ops::Deref for LineBytes {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        &self.chunk[self.start..self.end]
    }
}

impl From<&[u8]> for LineBytes {
    fn from(bytes: &[u8]) -> LineBytes {
        LineBytes {
            chunk: Arc::from(bytes),
            start: 0,
            end: bytes.len(),
        }
    }
}

impl From<Vec<u8>> for LineBytes {
    fn from(bytes: Vec<u8>) -> LineBytes {
        let end = bytes.len();
        LineBytes {
            chunk: Arc::from(bytes),
            start: 0,
            end,
        }
    }
}

impl fmt::Debug for LineBytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&**self, f)
    }
}

impl PartialEq for LineBytes {
    fn eq(&self, other: &LineBytes) -> bool {
        **self == **other
    }
}

impl Eq for LineBytes {}

impl PartialEq<[u8]> for LineBytes {
    fn eq(&self, other: &[u8]) -> bool {
        **self == *other
    }
}

impl PartialEq<Vec<u8>> for LineBytes {
    fn eq(&self, other: &Vec<u8>) -> bool {
        **self == **other
    }
}

/// Labels: a small sorted list of `(name, value)` pairs. Sorted so that equal label sets
/// compare and hash equal whatever order they were built in.
#[derive(Debug, Clone, Default, Eq, PartialOrd, Ord)]
pub struct Labels(Vec<(Arc<str>, Arc<str>)>);

impl std::hash::Hash for Labels {
    /// As derived (written out because `==` is).
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.0.hash(state);
    }
}

impl PartialEq for Labels {
    /// As derived, but a name or value shared by both sides (the same `Arc`, as when they
    /// came from one source or one capped label) is not compared byte by byte.
    fn eq(&self, other: &Labels) -> bool {
        self.0.len() == other.0.len()
            && self
                .0
                .iter()
                .zip(&other.0)
                .all(|((a, b), (c, d))| same_str(a, c) && same_str(b, d))
    }
}

/// `a == b`, without reading the text when both are the same allocation (`Arc<str>`'s own
/// `==` always compares the bytes: its pointer shortcut needs a sized type).
pub fn same_str(a: &Arc<str>, b: &Arc<str>) -> bool {
    Arc::ptr_eq(a, b) || a == b
}

impl Labels {
    /// No labels.
    pub const fn new() -> Labels {
        Labels(Vec::new())
    }

    /// Builds labels from pairs; a later pair with the same name replaces an earlier one.
    pub fn from_pairs<K: Into<Arc<str>>, V: Into<Arc<str>>>(
        pairs: impl IntoIterator<Item = (K, V)>,
    ) -> Labels {
        let mut l = Labels::new();
        for (k, v) in pairs {
            l.insert(k.into(), v.into());
        }
        l
    }

    /// Sets `name` to `value`, keeping the list sorted.
    pub fn insert(&mut self, name: Arc<str>, value: Arc<str>) {
        match self.0.binary_search_by(|(k, _)| k.as_ref().cmp(&name)) {
            Ok(i) => self.0[i].1 = value,
            Err(i) => self.0.insert(i, (name, value)),
        }
    }

    /// The value of `name`, if set.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0
            .binary_search_by(|(k, _)| k.as_ref().cmp(name))
            .ok()
            .map(|i| self.0[i].1.as_ref())
    }

    /// Iterates `(name, value)` in name order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.0.iter().map(|(k, v)| (k.as_ref(), v.as_ref()))
    }

    /// The `(name, value)` pairs in name order, taken out.
    pub fn into_pairs(self) -> Vec<(Arc<str>, Arc<str>)> {
        self.0
    }

    /// True when there are no labels.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The subset of these labels whose names are in `names` (missing names are left out).
    pub fn project(&self, names: &[Arc<str>]) -> Labels {
        Labels(
            self.0
                .iter()
                .filter(|(k, _)| names.iter().any(|n| n == k))
                .cloned()
                .collect(),
        )
    }

    /// Adds every label of `other` that is not already set here.
    pub fn merge_missing(&mut self, other: &Labels) {
        for (k, v) in &other.0 {
            if self.get(k).is_none() {
                self.insert(k.clone(), v.clone());
            }
        }
    }
}

impl fmt::Display for Labels {
    /// `{worker="w1",queue="q"}`, or the empty string for no labels.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_empty() {
            return Ok(());
        }
        f.write_str("{")?;
        for (i, (k, v)) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            write!(f, "{k}={v:?}")?;
        }
        f.write_str("}")
    }
}

impl Serialize for Labels {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut m = s.serialize_map(Some(self.0.len()))?;
        for (k, v) in &self.0 {
            m.serialize_entry(k.as_ref(), v.as_ref())?;
        }
        m.end()
    }
}

impl<'de> Deserialize<'de> for Labels {
    /// The map [`Labels`] serialises to.
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Labels, D::Error> {
        let pairs = std::collections::BTreeMap::<String, String>::deserialize(d)?;
        Ok(Labels::from_pairs(pairs))
    }
}

/// A classified incident: one line, or one multi-line record (a traceback), or a record with
/// its follow-ups folded in (a Celery `exited with signal 9` plus its `WorkerLostError`).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Event {
    /// When the incident's first line was read (or written, in replay).
    pub ts: Ts,
    /// Source name.
    pub source: Arc<str>,
    /// Kind: `downloaded`, `processed`, `error`, `crash`, `oom` or a user kind.
    pub kind: Arc<str>,
    /// Name of the pattern that decided the kind.
    pub pattern: Arc<str>,
    /// Source labels plus labels captured by the winning pattern.
    pub labels: Labels,
    /// The numeric value captured by the winning pattern (e.g. a duration in seconds).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub value: Option<f64>,
    /// Human-readable message: the line, or for a record its final exception line.
    pub message: Message,
    /// Normalised signature of an error (exception class, or message with numbers and ids
    /// masked), for "top errors" grouping. `None` also when events are not printed
    /// ([`crate::records::Classifier::unprinted`]).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub signature: Option<String>,
    /// The raw line for single-line events (lossy UTF-8); `None` for records, and when
    /// events are not printed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub line: Option<String>,
    /// Physical lines in the incident (1 for a plain line).
    pub lines: u32,
    /// The multi-line record kind (`python`, `java`, `go`, `rust`) when the event is one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub record: Option<&'static str>,
    /// How many follow-up events were folded into this one.
    #[serde(skip_serializing_if = "is_zero")]
    pub folded: u32,
    /// Read while catching up on lines older than `catch_up_window`: counted, but its alerts
    /// are summarised in one backfill notification.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub backfill: bool,
}

/// An event's message. A plain line's event keeps the line's bytes (a range of the piece it
/// was read in) and makes display text of them only where it is shown or kept as evidence:
/// a `String` per event (allocated, validated, copied, freed) was ~10% of the daemon's
/// instructions on the bench corpus (callgrind). Events live for one batch; whatever keeps
/// a message longer (rule evidence) copies its text, so no piece is held alive by it.
#[derive(Clone, Debug, PartialEq)]
pub enum Message {
    /// The line's own bytes, shown through [`display_text`].
    Line(LineBytes),
    /// Display text already made (a record's message line, a synthetic event).
    Text(String),
}

impl Message {
    /// The display text: lossy UTF-8, control characters other than tab replaced.
    pub fn text(&self) -> std::borrow::Cow<'_, str> {
        match self {
            Message::Text(s) => std::borrow::Cow::Borrowed(s),
            Message::Line(b) => match plain_str(b) {
                Some(s) => std::borrow::Cow::Borrowed(s),
                None => std::borrow::Cow::Owned(display_text(b)),
            },
        }
    }
}

impl Default for Message {
    fn default() -> Message {
        Message::Text(String::new())
    }
}

impl From<String> for Message {
    fn from(s: String) -> Message {
        Message::Text(s)
    }
}

impl From<&str> for Message {
    fn from(s: &str) -> Message {
        Message::Text(s.to_owned())
    }
}

impl fmt::Display for Message {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text())
    }
}

impl Serialize for Message {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.text())
    }
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

/// Lossy UTF-8 text of a line for display, with control characters (other than tab)
/// replaced so a log line cannot drive a terminal.
pub fn display_text(bytes: &[u8]) -> String {
    match plain_str(bytes) {
        Some(s) => s.to_owned(),
        None => defang(&String::from_utf8_lossy(bytes)),
    }
}

/// `bytes` as text when [`display_text`] would return them unchanged: valid UTF-8 without
/// control characters other than tab.
pub fn plain_str(bytes: &[u8]) -> Option<&str> {
    // ASCII first: it is nearly every log line, and its check is cheaper than UTF-8's.
    let s = if is_ascii(bytes) {
        // SAFETY: ASCII is valid UTF-8.
        unsafe { std::str::from_utf8_unchecked(bytes) }
    } else {
        std::str::from_utf8(bytes).ok()?
    };
    is_plain(s).then_some(s)
}

/// `bytes` is ASCII. One OR over the slice, which the compiler vectorises: in place of
/// `<[u8]>::is_ascii` (~0.8 instructions a byte on log lines) it saved the daemon 24M of
/// 693M instructions on 200k bench-corpus lines (callgrind).
pub fn is_ascii(bytes: &[u8]) -> bool {
    bytes.iter().fold(0u8, |acc, b| acc | b) < 0x80
}

/// `bytes` is valid UTF-8.
pub fn is_utf8(bytes: &[u8]) -> bool {
    is_ascii(bytes) || std::str::from_utf8(bytes).is_ok()
}

/// No control characters other than tab.
fn is_plain(s: &str) -> bool {
    // Nearly every log line is valid UTF-8 without control characters: check that with
    // whole-slice passes (a branch-free fold the compiler vectorises).
    let c0 = s.bytes().fold(false, |acc, b| {
        acc | ((b < 0x20) & (b != b'\t')) | (b == 0x7f)
    });
    !c0 && (is_ascii(s.as_bytes()) || !s.chars().any(char::is_control))
}

fn defang(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_control() && c != '\t' {
                '\u{fffd}'
            } else {
                c
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Millions of lines a second are built, moved through a channel and dropped: a line
    /// carries its origin by one reference (it was 96 bytes with a name, a stream and a
    /// label list of its own), and the lines of one file share it.
    #[test]
    fn a_line_is_small_and_shares_its_origin() {
        assert!(
            std::mem::size_of::<Line>() <= 56,
            "{}",
            std::mem::size_of::<Line>()
        );
        let origin = Origin::new(Arc::from("w"), 3, Labels::from_pairs([("worker", "w1")]));
        let a = Line::new(origin.clone(), &b"a"[..], Ts(1));
        let b = Line::new(origin.clone(), &b"b"[..], Ts(2));
        assert!(Arc::ptr_eq(&a.origin, &b.origin));
        assert_eq!(
            (&**a.source(), a.stream(), a.labels().get("worker")),
            ("w", 3, Some("w1"))
        );
    }

    #[test]
    fn civil_round_trip() {
        for days in [-800_000, -1, 0, 1, 59, 60, 365, 10_957, 20_000, 2_932_896] {
            let (y, m, d) = civil_from_days(days);
            assert_eq!(days_from_civil(y, m, d), days, "{y}-{m}-{d}");
        }
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(days_from_civil(2026, 11, 23), 20_780);
    }

    #[test]
    fn rfc3339_formats_millis() {
        assert_eq!(Ts(1_795_428_000_123).rfc3339(), "2026-11-23T10:00:00.123Z");
        assert_eq!(Ts(0).rfc3339(), "1970-01-01T00:00:00.000Z");
    }

    #[test]
    fn rfc3339_parses_what_it_writes() {
        for ms in [0, 999, 1_795_428_000_123, 253_402_300_799_999] {
            assert_eq!(Ts::parse_rfc3339(&Ts(ms).rfc3339()), Some(Ts(ms)), "{ms}");
        }
        assert_eq!(
            Ts::parse_rfc3339("2026-11-23T10:00:00Z"),
            Some(Ts(1_795_428_000_000))
        );
        for bad in [
            "",
            "2026-11-23 10:00:00.000Z",
            "2026-11-23T10:00:00.000",
            "2026-11-23T10:00:00.000+01:00",
            "2026-13-23T10:00:00.000Z",
            "2026-11-23T24:00:00.000Z",
            "1969-12-31T23:59:59.000Z",
            "２026-11-23T10:00:00.000Z",
        ] {
            assert_eq!(Ts::parse_rfc3339(bad), None, "{bad:?}");
        }
        let t: Ts = serde_json::from_str("\"2026-11-23T10:00:00.123Z\"").unwrap();
        assert_eq!(t, Ts(1_795_428_000_123));
        assert_eq!(serde_json::from_str::<Ts>("42").unwrap(), Ts(42));
    }

    #[test]
    fn labels_round_trip_through_json() {
        let a = Labels::from_pairs([("worker", "w1"), ("queue", "q \"x\"")]);
        let back: Labels = serde_json::from_str(&serde_json::to_string(&a).unwrap()).unwrap();
        assert_eq!(back, a);
    }

    #[test]
    fn labels_sorted_and_deduplicated() {
        let a = Labels::from_pairs([("b", "2"), ("a", "1"), ("b", "3")]);
        let b = Labels::from_pairs([("a", "1"), ("b", "3")]);
        assert_eq!(a, b);
        assert_eq!(a.to_string(), r#"{a="1",b="3"}"#);
        assert_eq!(a.get("b"), Some("3"));
        assert_eq!(a.project(&["b".into()]).to_string(), r#"{b="3"}"#);
    }

    #[test]
    fn display_text_is_lossy_and_defanged() {
        assert_eq!(display_text(b"ok\xffx\x1b[31m"), "ok\u{fffd}x\u{fffd}[31m");
        assert_eq!(display_text(b"a\tb"), "a\tb");
        // The fast path (valid UTF-8) still defangs C0, DEL and C1 controls.
        assert_eq!(display_text(b"a\x1bb\x7fc"), "a\u{fffd}b\u{fffd}c");
        assert_eq!(display_text("é\u{85}ü".as_bytes()), "é\u{fffd}ü");
        assert_eq!(display_text("naïve café".as_bytes()), "naïve café");
    }

    /// A message kept as the line's bytes shows, prints and serialises exactly as the display
    /// text made at once would, borrowing when there is nothing to replace.
    #[test]
    fn line_messages_display_as_their_text() {
        let cases: [&[u8]; 5] = [
            b"plain ascii",
            b"ok\xffx\x1b[31m",
            b"a\tb\x7fc",
            "é\u{85}ü".as_bytes(),
            "naïve café".as_bytes(),
        ];
        for bytes in cases {
            let m = Message::Line(LineBytes::from(bytes));
            let want = display_text(bytes);
            assert_eq!(m.text(), want);
            assert_eq!(m.to_string(), want);
            assert_eq!(
                serde_json::to_string(&m).unwrap(),
                serde_json::to_string(&want).unwrap()
            );
            let borrowed = matches!(m.text(), std::borrow::Cow::Borrowed(_));
            assert_eq!(borrowed, plain_str(bytes).is_some(), "{want:?}");
        }
        assert!(plain_str(b"plain ascii").is_some() && plain_str("naïve".as_bytes()).is_some());
    }
}

//! Records and incidents: the stateful half of classification, per source.
//!
//! 1. **Records.** A Python traceback, a Java stack trace, a Go panic dump and a Rust panic are
//!    joined into one record before they become an event. Each line is still classified by
//!    the [`PatternSet`]; the record's kind is the most severe kind among its lines
//!    (oom > crash > error > …) and its message is the line that says what happened (Python:
//!    the final exception line; Java: the deepest `Caused by:`; Go and Rust: the header).
//!    A record ends at the first line that cannot continue it, at `max_lines`, or when no
//!    line arrived for `timeout` (the daemon's tick calls [`Classifier::tick`]).
//! 2. **Incidents.** A pattern may list `folds` (pattern names, or `record:python|java|go|rust`
//!    for a whole multi-line record): events of those that follow it from
//!    the same source within its `fold_window` are folded into its event, so one SIGKILLed
//!    Celery child (an `exited with signal 9` record plus a `WorkerLostError` traceback)
//!    counts once. An event that can fold others is held until its window closes.
//!
//! Pure: time comes from each [`Line`]'s `at` and from the `now` given to `tick`.

use std::collections::{HashMap, HashSet};
use std::hash::BuildHasherDefault;
use std::sync::Arc;

use aho_corasick::{AhoCorasick, MatchKind};
use regex::bytes::Regex;

use crate::classify::{kind_rank, Extracted, FoldTarget, PatternSet, Scratch};
use crate::config::RecordConfig;
use crate::event::{display_text, is_utf8, Event, Labels, Line, Message, Ts};

/// Label value that replaces new values once a label has `max_label_values` distinct ones.
pub const OTHER_LABEL_VALUE: &str = "__other__";

/// Counters of what the classifier saw, for `/metrics` and summaries.
#[derive(Debug, Default, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ClassifyStats {
    /// Physical lines classified.
    pub lines: u64,
    /// Lines that matched no pattern (outside records).
    pub unmatched: u64,
    /// Lines cut at the line cap.
    pub truncated: u64,
    /// Lines that were not valid UTF-8 (classified as bytes, shown lossily).
    pub invalid_utf8: u64,
    /// Events emitted (after folding).
    pub events: u64,
    /// Events folded into an earlier one.
    pub folded: u64,
    /// Label values replaced by `__other__` because of the cardinality cap.
    pub label_overflow: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Python { after_exception: bool },
    Java,
    Go,
    Rust { take_next: bool },
}

impl Mode {
    /// The name used in events and in `folds = ["record:…"]`.
    fn name(self) -> &'static str {
        match self {
            Mode::Python { .. } => "python",
            Mode::Java => "java",
            Mode::Go => "go",
            Mode::Rust { .. } => "rust",
        }
    }
}

/// Recognises record starts and continuations. Built once.
#[derive(Debug)]
struct Grammar {
    /// Literals one of which is in every record start (each start regex requires one):
    /// a line without any starts nothing, and costs one search instead of four regexes.
    /// Without it the start regexes were ~3,400 instructions a line, more than classifying
    /// it (`java_start` has no literal prefix; bench corpus, callgrind).
    start_gate: AhoCorasick,
    python_start: Regex,
    java_start: Regex,
    java_cont: Regex,
    go_start: Regex,
    go_cont: Regex,
    rust_start: Regex,
    rust_cont: Regex,
    py_chain: Regex,
}

impl Grammar {
    fn new() -> Grammar {
        let re = |s: &str| Regex::new(s).expect("built-in record grammar regex");
        Grammar {
            // Leftmost-first: only then does aho-corasick search with Teddy (SIMD); the
            // standard match kind costs ~2,000 instructions a line here.
            start_gate: AhoCorasick::builder()
                .match_kind(MatchKind::LeftmostFirst)
                .build(START_LITERALS)
                .expect("built-in record start literals"),
            python_start: re(r"Traceback \(most recent call last\):\s*$"),
            java_start: re(
                r"(?:^|\s|Exception in thread .*? )((?:[a-zA-Z_$][a-zA-Z0-9_$]*\.)+[A-Z][a-zA-Z0-9_$]*(?:Exception|Error|Throwable))(?::\s.*)?$",
            ),
            java_cont: re(
                r"^(?:\s+at\s|\s*\.\.\. [0-9]+ (?:more|common frames omitted)|Caused by: |\s+Suppressed: |\s+Caused by: )",
            ),
            go_start: re(r"(?:^|\s)(?:panic: |fatal error: )"),
            go_cont: re(
                r"^(?:$|\s|goroutine [0-9]+ \[|\[signal |created by |exit status [0-9]+|runtime stack:|\[recovered\]|[a-zA-Z0-9_./*()\[\]{}-]+\(.*\)$|panic: .*\[recovered\])",
            ),
            rust_start: re(r"thread '[^']*' panicked at "),
            rust_cont: re(r"^(?:note: |stack backtrace:|\s+[0-9]+: |\s+at )"),
            py_chain: re(
                r"^(?:During handling of the above exception|The above exception was the direct cause)",
            ),
        }
    }

    /// A record kind starting at `line`, and the prefix before its marker.
    fn start(&self, line: &[u8]) -> Option<(Mode, usize)> {
        if !self.start_gate.is_match(line) {
            return None;
        }
        self.start_ungated(line)
    }

    fn start_ungated(&self, line: &[u8]) -> Option<(Mode, usize)> {
        if let Some(m) = self.python_start.find(line) {
            return Some((
                Mode::Python {
                    after_exception: false,
                },
                m.start(),
            ));
        }
        if let Some(m) = self.rust_start.find(line) {
            let take_next = line.ends_with(b":");
            return Some((Mode::Rust { take_next }, m.start()));
        }
        if let Some(m) = self.go_start.find(line) {
            let s = m.start() + usize::from(line[m.start()].is_ascii_whitespace());
            return Some((Mode::Go, s));
        }
        if let Some(c) = self.java_start.captures(line) {
            let s = c.get(1).map_or(0, |g| g.start());
            // "Exception in thread" headers keep their text in the record, not the prefix.
            let s = find_sub(&line[..s], b"Exception in thread ").unwrap_or(s);
            return Some((Mode::Java, s));
        }
        None
    }
}

/// What [`Grammar::start_gate`] looks for: `python_start` needs its whole marker,
/// `rust_start` its `' panicked at `, `go_start` one of its two markers, `java_start` the
/// class name's `Exception`, `Error` or `Throwable`.
const START_LITERALS: [&str; 7] = [
    "Traceback (most recent call last):",
    "' panicked at ",
    "panic: ",
    "fatal error: ",
    "Exception",
    "Error",
    "Throwable",
];

fn find_sub(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// Removes a prefix of the same shape as `prefix` (digits may differ): the docker-compose
/// `svc_1  | ` or journald `Nov 23 10:00:01 host app[42]: ` that precedes every line of a
/// record. Returns the line unchanged when the prefix does not fit.
fn strip_prefix_shape<'a>(line: &'a [u8], prefix: &[u8]) -> &'a [u8] {
    if prefix.is_empty() || line.len() < prefix.len() {
        return line;
    }
    let fits = prefix
        .iter()
        .zip(line)
        .all(|(p, l)| p == l || (p.is_ascii_digit() && l.is_ascii_digit()));
    if fits {
        &line[prefix.len()..]
    } else {
        line
    }
}

/// A line's pattern work (winner, captures, whether it may start a record), done before the
/// sequential record logic, so a batch can do it on several threads.
#[derive(Debug)]
struct Prepared {
    winner: Option<usize>,
    labels: Labels,
    value: Option<f64>,
    /// The line is valid UTF-8 (for the stats).
    utf8: bool,
    /// Its source joins records (`grammar` was given).
    records: bool,
    /// The record this line would start ([`Grammar::start`]).
    start: Option<(Mode, usize)>,
}

/// `grammar`: look for a record start too (the batch path; a line pushed alone has it
/// looked for by the record logic).
fn prepare(
    patterns: &PatternSet,
    grammar: Option<&Grammar>,
    bytes: &[u8],
    scratch: &mut Scratch,
) -> Prepared {
    let winner = patterns.classify(bytes, scratch);
    let x = winner.map_or_else(Extracted::default, |i| patterns.extract(i, bytes, scratch));
    Prepared {
        winner,
        labels: x.labels,
        value: x.value,
        utf8: is_utf8(bytes),
        records: grammar.is_some(),
        start: grammar.and_then(|g| g.start(bytes)),
    }
}

/// Batches at least this long are prepared on two threads.
const PARALLEL_BATCH: usize = 512;

fn prepare_all(
    patterns: &PatternSet,
    grammar: &Grammar,
    lines: &[Line],
    multi: &[bool],
    scratch: &mut Scratch,
) -> Vec<Prepared> {
    lines
        .iter()
        .zip(multi)
        .map(|(l, &m)| prepare(patterns, m.then_some(grammar), &l.bytes, scratch))
        .collect()
}

/// A batch's pattern work (multi-pattern search, captures, record starts), detached from
/// its [`Classifier`] so that it can run on any thread: [`Classifier::job`] makes it,
/// [`run`](PrepareJob::run) does it, [`Classifier::push_prepared_batch`] takes the result.
pub struct PrepareJob {
    lines: Vec<Line>,
    multi: Vec<bool>,
    patterns: Arc<PatternSet>,
    grammar: Arc<Grammar>,
}

impl PrepareJob {
    /// The patterns the job classifies with (a worker keeps a [`Scratch`] for them).
    pub fn patterns(&self) -> &Arc<PatternSet> {
        &self.patterns
    }

    /// Does the pattern work. `scratch` must come from [`patterns`](PrepareJob::patterns).
    /// Should it panic (a bug: nothing in it panics on input), the batch comes back undone
    /// rather than lost, and `scratch` should be made anew.
    pub fn run(self, scratch: &mut Scratch) -> PreparedBatch {
        let pre = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            prepare_all(
                &self.patterns,
                &self.grammar,
                &self.lines,
                &self.multi,
                scratch,
            )
        }));
        PreparedBatch {
            lines: self.lines,
            pre: pre.ok(),
            patterns: self.patterns,
        }
    }

    /// The job undone: [`Classifier::push_prepared_batch`] does its work in place.
    pub fn undone(self) -> PreparedBatch {
        PreparedBatch {
            lines: self.lines,
            pre: None,
            patterns: self.patterns,
        }
    }
}

/// The result of a [`PrepareJob`].
pub struct PreparedBatch {
    lines: Vec<Line>,
    /// One per line; `None` when the job was not run.
    pre: Option<Vec<Prepared>>,
    patterns: Arc<PatternSet>,
}

impl PreparedBatch {
    /// The pattern work was done (else [`Classifier::push_prepared_batch`] does it).
    pub fn is_prepared(&self) -> bool {
        self.pre.is_some()
    }
}

/// One classified physical line inside a record.
#[derive(Debug)]
struct RecLine {
    text: String,
    winner: Option<usize>,
    extracted_labels: Labels,
    value: Option<f64>,
}

#[derive(Debug)]
struct OpenRecord {
    mode: Mode,
    prefix: Vec<u8>,
    started: Ts,
    last_at: Ts,
    /// Source labels of the first line.
    labels: Labels,
    /// The first line was backfill.
    backfill: bool,
    lines: Vec<RecLine>,
    /// Index into `lines` of the line that becomes the message.
    message: usize,
}

#[derive(Debug)]
struct Held {
    event: Event,
    pattern: usize,
    until: Ts,
    /// Which of the pattern's fold targets were absorbed already.
    used: Vec<bool>,
}

#[derive(Debug, Default)]
struct SourceState {
    open: Option<OpenRecord>,
    held: Vec<Held>,
}

/// The classify stage's state: patterns, per-source records and fold windows, label caps.
pub struct Classifier {
    patterns: Arc<PatternSet>,
    scratch: Scratch,
    /// The second thread's scratch for [`push_batch`](Classifier::push_batch).
    scratch2: Option<Scratch>,
    /// More than one CPU: long batches are prepared on two threads.
    parallel: bool,
    grammar: Arc<Grammar>,
    records: RecordConfig,
    max_label_values: usize,
    label_values: HashMap<Arc<str>, HashSet<Arc<str>>>,
    /// Open records and held events per (source, stream).
    sources: HashMap<(Arc<str>, u64), SourceState, BuildHasherDefault<NameHasher>>,
    /// Sources whose lines are not joined into records (`multiline = false`).
    single_line_sources: HashSet<Arc<str>, BuildHasherDefault<NameHasher>>,
    /// Events are printed (`--events`, `classify`), so they carry `signature` and `line`.
    printed: bool,
    /// What was seen so far.
    pub stats: ClassifyStats,
}

impl Classifier {
    /// A classifier over `patterns`.
    pub fn new(
        patterns: Arc<PatternSet>,
        records: RecordConfig,
        max_label_values: usize,
    ) -> Classifier {
        Classifier {
            scratch: patterns.scratch(),
            scratch2: None,
            parallel: std::thread::available_parallelism().is_ok_and(|n| n.get() > 1),
            patterns,
            grammar: Arc::new(Grammar::new()),
            records,
            max_label_values,
            label_values: HashMap::new(),
            sources: HashMap::default(),
            single_line_sources: HashSet::default(),
            printed: true,
            stats: ClassifyStats::default(),
        }
    }

    /// Leaves [`Event::signature`] and [`Event::line`] out: nothing reads them but the
    /// printed events, and a daemon without `--events` prints none. The signature's regex
    /// capture and masking cost ~8,000 instructions per error event, ~6% of the daemon's
    /// instructions on the bench corpus (callgrind); the line is a second copy of the message.
    pub fn unprinted(&mut self) {
        self.printed = false;
    }

    /// Turns record joining off for `source`.
    pub fn single_line(&mut self, source: Arc<str>) {
        self.single_line_sources.insert(source);
    }

    /// Classifies one line; completed events are pushed to `out` (possibly none now, and
    /// several later, when a record or fold window closes).
    pub fn push(&mut self, line: &Line, out: &mut Vec<Event>) {
        self.push_prepared(line, None, out);
    }

    /// [`push`](Classifier::push) for a batch. A long batch has its pattern work (the
    /// multi-pattern search, captures and message text of each line) done on two threads
    /// first; the record and fold logic then runs in order, so results are the same as
    /// pushing line by line.
    pub fn push_batch(&mut self, lines: &[Line], out: &mut Vec<Event>) {
        if lines.len() < PARALLEL_BATCH || !self.parallel {
            for l in lines {
                self.push(l, out);
            }
            return;
        }
        let (a, b) = lines.split_at(lines.len() / 2);
        let multi = self.multi_flags(lines);
        let (ma, mb) = multi.split_at(a.len());
        let (patterns, grammar) = (&*self.patterns, &*self.grammar);
        let prep = |lines: &[Line], multi: &[bool], s: &mut Scratch| -> Vec<Prepared> {
            prepare_all(patterns, grammar, lines, multi, s)
        };
        let (s1, s2) = (&mut self.scratch, &mut self.scratch2);
        let s2 = s2.get_or_insert_with(|| patterns.scratch());
        let (pa, pb): (Vec<Prepared>, Vec<Prepared>) = std::thread::scope(|sc| {
            let hb = sc.spawn(|| prep(b, mb, s2));
            let pa = prep(a, ma, s1);
            match hb.join() {
                Ok(pb) => (pa, pb),
                // Cannot happen (prepare does not panic on input); stay correct anyway.
                Err(_) => (pa, prep(b, mb, s1)),
            }
        });
        self.push_all_prepared(lines, vec![pa, pb], out);
    }

    /// The pattern work of a batch as a job for another thread ([`crate::prepare`]), so
    /// this classifier can go on with the record logic of earlier batches meanwhile.
    pub fn job(&self, lines: Vec<Line>) -> PrepareJob {
        PrepareJob {
            multi: self.multi_flags(&lines),
            lines,
            patterns: self.patterns.clone(),
            grammar: self.grammar.clone(),
        }
    }

    /// [`push_batch`](Classifier::push_batch) for a batch whose job ran: the record logic,
    /// in order. A batch prepared with other patterns (a reload came between) is pushed
    /// line by line.
    pub fn push_prepared_batch(&mut self, batch: PreparedBatch, out: &mut Vec<Event>) {
        let PreparedBatch {
            lines,
            pre,
            patterns,
        } = batch;
        match pre {
            Some(pre) if Arc::ptr_eq(&patterns, &self.patterns) => {
                self.push_all_prepared(&lines, vec![pre], out)
            }
            _ => {
                for l in &lines {
                    self.push(l, out);
                }
            }
        }
    }

    /// Whether each line's source joins records (a lookup per run of one source).
    fn multi_flags(&self, lines: &[Line]) -> Vec<bool> {
        let mut last: Option<(&Arc<str>, bool)> = None;
        lines
            .iter()
            .map(|l| match last {
                Some((s, m)) if Arc::ptr_eq(s, l.source()) => m,
                _ => {
                    let m = !self.single_line_sources.contains(l.source());
                    last = Some((l.source(), m));
                    m
                }
            })
            .collect()
    }

    /// `parts`: the lines' [`Prepared`] in order, in one or more pieces (a batch's halves
    /// stay two vectors: joining them copied every result).
    fn push_all_prepared(
        &mut self,
        lines: &[Line],
        parts: Vec<Vec<Prepared>>,
        out: &mut Vec<Event>,
    ) {
        // Nearly every event of a batch is one of its matched lines: size `out` once (a
        // vector of ~200-byte events grown by doubling was copied about twice over).
        out.reserve(
            parts
                .iter()
                .flatten()
                .filter(|p| p.winner.is_some())
                .count(),
        );
        for (l, p) in lines.iter().zip(parts.into_iter().flatten()) {
            self.push_prepared(l, Some(p), out);
        }
    }

    fn push_prepared(&mut self, line: &Line, pre: Option<Prepared>, out: &mut Vec<Event>) {
        self.stats.lines += 1;
        self.stats.truncated += u64::from(line.truncated);
        let utf8 = match &pre {
            Some(p) => p.utf8,
            None => is_utf8(&line.bytes),
        };
        self.stats.invalid_utf8 += u64::from(!utf8);
        // Only streams with an open record or held events are in `sources`: most lines find
        // the map empty and cost no hashing (a remove and an insert per line were ~6% of the
        // daemon's instructions on the bench corpus, callgrind).
        let key = || (line.source().clone(), line.stream());
        let mut state = if self.sources.is_empty() {
            SourceState::default()
        } else {
            self.sources.remove(&key()).unwrap_or_default()
        };
        self.push_line(&mut state, line, pre, out);
        if state.open.is_some() || !state.held.is_empty() {
            self.sources.insert(key(), state);
        }
    }

    fn push_line(
        &mut self,
        state: &mut SourceState,
        line: &Line,
        pre: Option<Prepared>,
        out: &mut Vec<Event>,
    ) {
        self.release_held(state, line.at, out);
        if let Some(mut rec) = state.open.take() {
            match self.continue_record(&mut rec, line) {
                Continue::Taken => {
                    rec.last_at = line.at;
                    if rec.lines.len() >= self.records.max_lines {
                        self.close_record(state, rec, line.source(), out);
                    } else {
                        state.open = Some(rec);
                    }
                    return;
                }
                Continue::Ended => {
                    self.close_record(state, rec, line.source(), out);
                }
            }
        }

        let multiline = match &pre {
            Some(p) => p.records,
            None => !self.single_line_sources.contains(line.source()),
        };
        if multiline {
            let start = match &pre {
                Some(p) => p.start,
                None => self.grammar.start(&line.bytes),
            };
            if let Some((mode, prefix_len)) = start {
                let first = match pre {
                    Some(p) => RecLine {
                        text: display_text(&line.bytes),
                        winner: p.winner,
                        extracted_labels: p.labels,
                        value: p.value,
                    },
                    None => self.rec_line(&line.bytes),
                };
                state.open = Some(OpenRecord {
                    mode,
                    prefix: line.bytes[..prefix_len].to_vec(),
                    started: line.at,
                    last_at: line.at,
                    labels: line.labels().clone(),
                    backfill: line.backfill,
                    lines: vec![first],
                    message: 0,
                });
                return;
            }
        }

        let p = match pre {
            Some(p) => p,
            None => prepare(&self.patterns, None, &line.bytes, &mut self.scratch),
        };
        match p.winner {
            None => self.stats.unmatched += 1,
            Some(i) => {
                let message = Message::Line(line.bytes.clone());
                let mut ev = self.event(
                    i,
                    line.at,
                    line.source(),
                    line.labels(),
                    p.labels,
                    p.value,
                    message,
                    true,
                    1,
                );
                ev.backfill = line.backfill;
                self.emit_or_hold(state, ev, i, out);
            }
        }
    }

    /// Closes records idle for `timeout` and fold windows that have passed, as of `now`.
    pub fn tick(&mut self, now: Ts, out: &mut Vec<Event>) {
        let timeout = self.records.timeout;
        let keys: Vec<(Arc<str>, u64)> = self.sources.keys().cloned().collect();
        for key in keys {
            let Some(mut state) = self.sources.remove(&key) else {
                continue;
            };
            let source = &key.0;
            if let Some(rec) = state.open.take() {
                if now.since(rec.last_at) >= timeout {
                    self.close_record(&mut state, rec, source, out);
                } else {
                    state.open = Some(rec);
                }
            }
            self.release_held(&mut state, now, out);
            if state.open.is_some() || !state.held.is_empty() {
                self.sources.insert(key.clone(), state);
            }
        }
    }

    /// Ends the input: closes every record and releases every held event.
    pub fn finish(&mut self, out: &mut Vec<Event>) {
        let keys: Vec<(Arc<str>, u64)> = self.sources.keys().cloned().collect();
        for key in keys {
            let Some(mut state) = self.sources.remove(&key) else {
                continue;
            };
            let source = &key.0;
            if let Some(rec) = state.open.take() {
                self.close_record(&mut state, rec, source, out);
            }
            self.release_held(&mut state, Ts(u64::MAX), out);
        }
    }

    /// True when a record or a fold window is still open (the caller should tick).
    pub fn has_pending(&self) -> bool {
        !self.sources.is_empty()
    }

    fn rec_line(&mut self, bytes: &[u8]) -> RecLine {
        let winner = self.patterns.classify(bytes, &mut self.scratch);
        let (extracted_labels, value) = match winner {
            Some(i) => {
                let x = self.patterns.extract(i, bytes, &mut self.scratch);
                (x.labels, x.value)
            }
            None => (Labels::new(), None),
        };
        RecLine {
            text: display_text(bytes),
            winner,
            extracted_labels,
            value,
        }
    }

    fn continue_record(&mut self, rec: &mut OpenRecord, line: &Line) -> Continue {
        let body = strip_prefix_shape(&line.bytes, &rec.prefix);
        let g = &self.grammar;
        let take = match &mut rec.mode {
            Mode::Python { after_exception } => {
                let indented = body.first().is_some_and(|c| c.is_ascii_whitespace());
                if body.is_empty() {
                    true
                } else if g.py_chain.is_match(body) {
                    *after_exception = false;
                    true
                } else if g.python_start.is_match(body) {
                    // Chained tracebacks are introduced by a phrase above; a bare header after
                    // an exception line is the next incident.
                    !*after_exception
                } else if *after_exception {
                    false
                } else if indented {
                    true
                } else {
                    // The final `ExcType: message` line: part of the record, and the message.
                    *after_exception = true;
                    rec.message = rec.lines.len();
                    true
                }
            }
            Mode::Java => {
                if g.java_cont.is_match(body) {
                    if body.starts_with(b"Caused by: ") {
                        rec.message = rec.lines.len();
                    }
                    true
                } else {
                    false
                }
            }
            Mode::Go => g.go_cont.is_match(body),
            Mode::Rust { take_next } => {
                if *take_next {
                    *take_next = false;
                    true
                } else {
                    g.rust_cont.is_match(body)
                }
            }
        };
        if take {
            // Classify the line without the record's prefix, as the record's first line was
            // classified from its marker on: patterns need not know every prefix.
            let body = strip_prefix_shape(&line.bytes, &rec.prefix).to_vec();
            let l = self.rec_line(&body);
            rec.lines.push(l);
            Continue::Taken
        } else {
            Continue::Ended
        }
    }

    fn close_record(
        &mut self,
        state: &mut SourceState,
        rec: OpenRecord,
        source: &Arc<str>,
        out: &mut Vec<Event>,
    ) {
        // Python: a record that never reached its exception line ends with its last line.
        let mut msg_idx = rec.message;
        if matches!(
            rec.mode,
            Mode::Python {
                after_exception: false
            }
        ) && msg_idx == 0
        {
            msg_idx = rec
                .lines
                .iter()
                .rposition(|l| !l.text.starts_with(char::is_whitespace) && !l.text.is_empty())
                .unwrap_or(0);
        }
        // The most severe line decides the kind; on ties the later line wins (the final
        // exception line says more than the `Traceback` header).
        let best = rec
            .lines
            .iter()
            .enumerate()
            .filter_map(|(i, l)| l.winner.map(|w| (i, w)))
            .max_by_key(|&(i, w)| (kind_rank(&self.patterns.patterns()[w].kind), i));
        let n = rec.lines.len();
        let Some((best_line, winner)) = best else {
            // Nothing in it matched: its lines are unmatched lines, no event.
            self.stats.unmatched += n as u64;
            return;
        };
        let l = &rec.lines[best_line];
        let (labels, value) = (l.extracted_labels.clone(), l.value);
        // Continuation lines are stored without the record's prefix already.
        let message = Message::Text(rec.lines[msg_idx].text.clone());
        let single = n == 1;
        let mut ev = self.event(
            winner,
            rec.started,
            source,
            &rec.labels,
            labels,
            value,
            message,
            single,
            n as u32,
        );
        if single {
            if self.printed {
                ev.line = Some(rec.lines[0].text.clone());
            }
        } else {
            ev.record = Some(rec.mode.name());
        }
        ev.backfill = rec.backfill;
        self.emit_or_hold(state, ev, winner, out);
    }

    #[allow(clippy::too_many_arguments)]
    fn event(
        &mut self,
        winner: usize,
        at: Ts,
        source: &Arc<str>,
        source_labels: &Labels,
        captured: Labels,
        value: Option<f64>,
        message: Message,
        single: bool,
        lines: u32,
    ) -> Event {
        let mut labels = source_labels.clone();
        for (k, v) in captured.into_pairs() {
            let v = self.cap_label(&k, v);
            labels.insert(k, v);
        }
        let p = &self.patterns.patterns()[winner];
        let signature =
            (self.printed && kind_rank(&p.kind) >= 3).then(|| signature(&message.text()));
        Event {
            ts: at,
            source: source.clone(),
            kind: p.kind.clone(),
            pattern: p.name.clone(),
            labels,
            value,
            line: (self.printed && single).then(|| message.text().into_owned()),
            message,
            signature,
            lines,
            record: None,
            folded: 0,
            backfill: false,
        }
    }

    /// `value`, or the copy of it seen first (so equal values share one allocation), or
    /// [`OTHER_LABEL_VALUE`] past the label's cap. Allocates nothing for a value seen before.
    fn cap_label(&mut self, name: &Arc<str>, value: Arc<str>) -> Arc<str> {
        let set = match self.label_values.get_mut(&**name) {
            Some(set) => set,
            None => self.label_values.entry(name.clone()).or_default(),
        };
        if let Some(v) = set.get(&*value) {
            return v.clone();
        }
        if set.len() >= self.max_label_values {
            self.stats.label_overflow += 1;
            return Arc::from(OTHER_LABEL_VALUE);
        }
        set.insert(value.clone());
        value
    }

    fn emit_or_hold(
        &mut self,
        state: &mut SourceState,
        ev: Event,
        pattern: usize,
        out: &mut Vec<Event>,
    ) {
        // A follow-up of a held event is folded into it; each fold target at most once, so
        // in a busy worker one incident cannot swallow the next one's follow-ups.
        let patterns = &self.patterns;
        let target = state.held.iter_mut().find_map(|h| {
            if ev.ts > h.until {
                return None;
            }
            let folds = &patterns.patterns()[h.pattern].folds;
            // A pattern target may fold several follow-ups (Celery reports a lost worker as an
            // ERROR line and again as a traceback); a record target folds one record, so in a
            // busy worker one failure cannot swallow the next failure's traceback.
            let j = folds.iter().position(|f| match f {
                FoldTarget::Pattern(p) => *p == pattern,
                FoldTarget::Record(kind) => ev.record == Some(*kind),
            })?;
            if matches!(folds[j], FoldTarget::Record(_)) {
                if h.used[j] {
                    return None;
                }
                h.used[j] = true;
            }
            Some(h)
        });
        if let Some(h) = target {
            if kind_rank(&ev.kind) > kind_rank(&h.event.kind) {
                h.event.kind = ev.kind.clone();
            }
            h.event.folded += 1 + ev.folded;
            h.event.lines += ev.lines;
            h.event.labels.merge_missing(&ev.labels);
            self.stats.folded += 1;
            return;
        }
        let p = &self.patterns.patterns()[pattern];
        if p.folds.is_empty() {
            self.stats.events += 1;
            out.push(ev);
        } else {
            let until = ev.ts.plus(p.fold_window);
            state.held.push(Held {
                event: ev,
                pattern,
                until,
                used: vec![false; p.folds.len()],
            });
        }
    }

    fn release_held(&mut self, state: &mut SourceState, now: Ts, out: &mut Vec<Event>) {
        let mut i = 0;
        while i < state.held.len() {
            if now > state.held[i].until {
                let h = state.held.remove(i);
                self.stats.events += 1;
                out.push(h.event);
            } else {
                i += 1;
            }
        }
    }
}

enum Continue {
    Taken,
    Ended,
}

/// A normalised error signature: the exception class when the message names one
/// (`KeyError`, `java.lang.IllegalStateException`), otherwise the message with numbers, hex
/// ids, quoted strings and paths masked, cut to 120 characters.
pub fn signature(message: &str) -> String {
    static EXC: std::sync::OnceLock<Regex> = std::sync::OnceLock::new();
    static MASK: std::sync::OnceLock<Regex> = std::sync::OnceLock::new();
    let exc = EXC.get_or_init(|| {
        Regex::new(r"\b((?:[a-zA-Z_][a-zA-Z0-9_]*\.)*[A-Z][a-zA-Z0-9_]*(?:Error|Exception|Exit|Interrupt|Timeout|Lost|Exceeded))\b")
            .expect("signature regex")
    });
    if let Some(c) = exc.captures(message.as_bytes()) {
        if let Some(m) = c.get(1) {
            return String::from_utf8_lossy(m.as_bytes()).into_owned();
        }
    }
    let mask = MASK.get_or_init(|| {
        Regex::new(
            r#"(?x)
            "[^"]*" | '[^']*'                          # quoted strings
          | (?:/[A-Za-z0-9._-]+){2,}                   # paths
          | \b[0-9a-fA-F]{8}-[0-9a-fA-F-]{27}\b        # uuids
          | \b0x[0-9a-fA-F]+\b | \b[0-9a-f]{12,}\b     # hex ids
          | [0-9]+(?:\.[0-9]+)?                        # numbers
        "#,
        )
        .expect("mask regex")
    });
    // Drop a leading timestamp/level prefix by masking, then keep a readable stem.
    let masked = mask.replace_all(message.as_bytes(), &b"*"[..]);
    crate::rules::truncate_chars(String::from_utf8_lossy(&masked).trim(), 120)
}

/// A multiply-rotate hasher (FxHash's) for the per-line lookups keyed by source name and
/// stream: those keys come from the config and the tailer, not from log content, so they need
/// no flood-resistant SipHash, which cost about 9% of the daemon's instructions (callgrind,
/// bench corpus on stdin) at two lookups per line.
#[derive(Default)]
struct NameHasher(u64);

impl std::hash::Hasher for NameHasher {
    fn write(&mut self, bytes: &[u8]) {
        let mut chunks = bytes.chunks_exact(8);
        for c in &mut chunks {
            self.write_u64(u64::from_le_bytes(c.try_into().unwrap_or_default()));
        }
        for &b in chunks.remainder() {
            self.write_u64(u64::from(b));
        }
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = (self.0.rotate_left(5) ^ n).wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
    }
    fn write_u8(&mut self, n: u8) {
        self.write_u64(u64::from(n));
    }
    fn write_usize(&mut self, n: usize) {
        self.write_u64(n as u64);
    }
    fn finish(&self) -> u64 {
        self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::Origin;

    /// The start gate changes nothing: on every line of the labeled corpus, the demo log,
    /// the extra pattern lines and some near misses, the gated start equals the four regexes'.
    #[test]
    fn record_start_gate_is_exact() {
        let g = Grammar::new();
        let mut lines: Vec<String> = Vec::new();
        for f in [
            "fixtures/labeled-dev.tsv",
            "fixtures/patterns-extra.tsv",
            "fixtures/demo/worker.log",
        ] {
            let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(f);
            let text = std::fs::read_to_string(&path).unwrap();
            for l in text.lines() {
                lines.push(l.to_string());
                // Each TSV field alone too (the line is one of them).
                lines.extend(l.split('\t').map(str::to_string));
            }
        }
        lines.extend(
            [
                "Traceback (most recent call last):",
                "svc_1  | Traceback (most recent call last):  ",
                "Traceback (most recent call last): trailing",
                "thread 'main' panicked at src/main.rs:2:5:",
                "thread 'main' panicked at",
                "panic: boom",
                "xpanic: boom",
                "fatal error: all goroutines are asleep",
                "java.lang.IllegalStateException: outer",
                "Exception in thread \"main\" java.lang.OutOfMemoryError: Java heap space",
                "com.x.Thing$Inner.BadThrowable",
                "ValueError: no dot so not java",
                "error exception throwable",
                "",
            ]
            .map(str::to_string),
        );
        let mut starts = 0;
        for l in &lines {
            let want = g.start_ungated(l.as_bytes());
            assert_eq!(g.start(l.as_bytes()), want, "{l:?}");
            starts += usize::from(want.is_some());
        }
        assert!(
            starts >= 20 && lines.len() > 1000,
            "{starts} starts in {} lines",
            lines.len()
        );
    }
    use crate::classify::parse_pack;

    const PACK: &str = r#"
        [[pattern]]
        name = "py-memory"
        kind = "oom"
        regex = '^(?:[a-zA-Z_.]+\.)?MemoryError\b'
        [[pattern]]
        name = "worker-lost"
        kind = "crash"
        regex = 'WorkerLostError'
        [[pattern]]
        name = "celery-signal"
        kind = "crash"
        regex = "exited with 'signal [0-9]+"
        folds = ["worker-lost", "error-record"]
        [[pattern]]
        name = "traceback"
        kind = "error"
        regex = 'Traceback \(most recent call last\):'
        [[pattern]]
        name = "py-exc"
        kind = "error"
        regex = '^(?:[a-zA-Z_][a-zA-Z0-9_.]*\.)?[A-Z][a-zA-Z0-9]*(?:Error|Exception)(?:: |$)'
        [[pattern]]
        name = "java-exc"
        kind = "error"
        regex = '(?:[a-z0-9]+\.)+[A-Z][A-Za-z]*Exception'
        [[pattern]]
        name = "java-oom"
        kind = "oom"
        regex = 'java\.lang\.OutOfMemoryError'
        priority = 5
        [[pattern]]
        name = "go-panic"
        kind = "crash"
        regex = 'panic: '
        [[pattern]]
        name = "error-record"
        kind = "error"
        regex = '\bERROR\b'
        [[pattern]]
        name = "done"
        kind = "processed"
        regex = 'succeeded in'
        [[pattern]]
        name = "task-failed"
        kind = "error"
        regex = 'Task [a-z.]+\[[0-9a-f-]+\] raised unexpected'
        priority = 10
        folds = ["record:python"]
    "#;

    fn classifier() -> Classifier {
        let set = PatternSet::compile(&[parse_pack("t.toml", PACK).unwrap()], &[]).unwrap();
        Classifier::new(Arc::new(set), RecordConfig::default(), 3)
    }

    fn feed(c: &mut Classifier, text: &str, start: u64, step_ms: u64) -> Vec<Event> {
        let mut out = Vec::new();
        for (i, l) in text.lines().enumerate() {
            let line = Line::new(
                Origin::new(Arc::from("s"), 0, Labels::from_pairs([("worker", "w1")])),
                l.as_bytes(),
                Ts(start + i as u64 * step_ms),
            );
            c.push(&line, &mut out);
        }
        c.finish(&mut out);
        out
    }

    fn kinds(evs: &[Event]) -> Vec<(String, String)> {
        evs.iter()
            .map(|e| (e.kind.to_string(), e.message.to_string()))
            .collect()
    }

    const PY_TB: &str = "Traceback (most recent call last):\n  File \"/app/x.py\", line 3, in <module>\n    f()\n  File \"/app/x.py\", line 2, in f\n    raise KeyError('k')\nKeyError: 'k'\n";

    #[test]
    fn python_traceback_is_one_error_event_with_exception_message() {
        let mut c = classifier();
        let evs = feed(&mut c, &format!("{PY_TB}task succeeded in 1.0s\n"), 0, 1);
        assert_eq!(
            kinds(&evs),
            vec![
                ("error".into(), "KeyError: 'k'".into()),
                ("processed".into(), "task succeeded in 1.0s".into())
            ]
        );
        assert_eq!(evs[0].lines, 6);
        assert_eq!(evs[0].labels.get("worker"), Some("w1"));
        assert_eq!(evs[0].signature.as_deref(), Some("KeyError"));
        assert!(evs[0].line.is_none());
        assert_eq!(c.stats.lines, 7);
    }

    #[test]
    fn memory_error_traceback_is_oom() {
        let mut c = classifier();
        let evs = feed(&mut c, "Traceback (most recent call last):\n  File \"a.py\", line 1, in <module>\nMemoryError\n", 0, 1);
        assert_eq!(kinds(&evs), vec![("oom".into(), "MemoryError".into())]);
    }

    #[test]
    fn chained_traceback_is_one_record() {
        let text = "Traceback (most recent call last):\n  File \"a\", line 1, in f\nKeyError: 'x'\n\nDuring handling of the above exception, another exception occurred:\n\nTraceback (most recent call last):\n  File \"a\", line 2, in g\nValueError: bad\nnext line\n";
        let mut c = classifier();
        let evs = feed(&mut c, text, 0, 1);
        assert_eq!(
            kinds(&evs),
            vec![("error".into(), "ValueError: bad".into())]
        );
        assert_eq!(evs[0].lines, 9);
        assert_eq!(
            c.stats.unmatched, 1,
            "the line after the record is its own line"
        );
    }

    #[test]
    fn prefixed_traceback_joins_by_prefix_shape() {
        let text = "w_1  | Traceback (most recent call last):\nw_1  |   File \"a\", line 1, in f\nw_1  | MemoryError\nw_1  | fine\n";
        let mut c = classifier();
        let evs = feed(&mut c, text, 0, 1);
        assert_eq!(kinds(&evs), vec![("oom".into(), "MemoryError".into())]);
    }

    #[test]
    fn java_stack_is_one_event_and_deepest_cause_is_the_message() {
        let text = "java.lang.IllegalStateException: outer\n\tat com.x.A.run(A.java:10)\n\tat com.x.B.go(B.java:5)\nCaused by: java.io.IOException: disk gone\n\tat com.x.C.io(C.java:1)\n\t... 2 more\nINFO next\n";
        let mut c = classifier();
        let evs = feed(&mut c, text, 0, 1);
        assert_eq!(
            kinds(&evs),
            vec![(
                "error".into(),
                "Caused by: java.io.IOException: disk gone".into()
            )]
        );
        assert_eq!(evs[0].lines, 6);
    }

    #[test]
    fn java_oom_in_stack_makes_record_oom() {
        let text = "Exception in thread \"main\" java.lang.OutOfMemoryError: Java heap space\n\tat com.x.A.alloc(A.java:3)\n";
        let mut c = classifier();
        let evs = feed(&mut c, text, 0, 1);
        assert_eq!(evs.len(), 1);
        assert_eq!(&*evs[0].kind, "oom");
    }

    #[test]
    fn go_panic_dump_is_one_crash() {
        let text = "panic: runtime error: index out of range [5] with length 3\n\ngoroutine 1 [running]:\nmain.main()\n\t/app/main.go:8 +0x1d\nexit status 2\nother line\n";
        let mut c = classifier();
        let evs = feed(&mut c, text, 0, 1);
        assert_eq!(
            kinds(&evs),
            vec![(
                "crash".into(),
                "panic: runtime error: index out of range [5] with length 3".into()
            )]
        );
        assert_eq!(evs[0].lines, 6);
    }

    #[test]
    fn celery_sigkill_and_worker_lost_fold_into_one_incident() {
        let text = "[2026-11-23 10:00:00,000: ERROR/MainProcess] Process 'ForkPoolWorker-3' pid:812 exited with 'signal 9 (SIGKILL)'\n[2026-11-23 10:00:00,100: ERROR/MainProcess] Task handler raised error: WorkerLostError('Worker exited prematurely: signal 9 (SIGKILL) Job: 12.')\nTraceback (most recent call last):\n  File \"billiard/pool.py\", line 1265, in mark_as_worker_lost\nbilliard.exceptions.WorkerLostError: Worker exited prematurely: signal 9 (SIGKILL) Job: 12.\n";
        let mut c = classifier();
        let evs = feed(&mut c, text, 0, 100);
        assert_eq!(evs.len(), 1, "{:?}", kinds(&evs));
        assert_eq!(&*evs[0].kind, "crash");
        assert_eq!(evs[0].folded, 2);
        assert!(evs[0].message.text().contains("exited with 'signal 9"));
    }

    #[test]
    fn fold_window_expires() {
        let text = "x exited with 'signal 9 (SIGKILL)'\nWorkerLostError\n";
        let mut c = classifier();
        let evs = feed(&mut c, text, 0, 3000);
        assert_eq!(evs.len(), 2);
    }

    #[test]
    fn record_times_out_on_tick() {
        let mut c = classifier();
        let mut out = Vec::new();
        for (i, l) in PY_TB.lines().enumerate() {
            let line = Line::new(
                Origin::new(Arc::from("s"), 0, Labels::new()),
                l.as_bytes(),
                Ts(i as u64),
            );
            c.push(&line, &mut out);
        }
        assert!(out.is_empty(), "the record may still continue");
        c.tick(Ts(500), &mut out);
        assert!(out.is_empty());
        c.tick(Ts(1006), &mut out);
        assert_eq!(out.len(), 1);
        assert!(!c.has_pending());
    }

    #[test]
    fn max_lines_cuts_a_runaway_record() {
        let mut c = Classifier::new(
            classifier().patterns.clone(),
            RecordConfig {
                max_lines: 10,
                ..RecordConfig::default()
            },
            3,
        );
        let mut text = String::from("Traceback (most recent call last):\n");
        for i in 0..25 {
            text.push_str(&format!("  frame {i}\n"));
        }
        let evs = feed(&mut c, &text, 0, 1);
        assert_eq!(evs.len(), 1, "only the first chunk has the header");
        assert_eq!(evs[0].lines, 10);
    }

    #[test]
    fn label_cardinality_is_capped() {
        let pack = r#"
            [[pattern]]
            name = "job"
            kind = "processed"
            regex = 'job (?P<job>[0-9]+) done'
            labels = ["job"]
        "#;
        let set = PatternSet::compile(&[parse_pack("t.toml", pack).unwrap()], &[]).unwrap();
        let mut c = Classifier::new(Arc::new(set), RecordConfig::default(), 2);
        let evs = feed(
            &mut c,
            "job 1 done\njob 2 done\njob 3 done\njob 1 done\n",
            0,
            1,
        );
        let jobs: Vec<&str> = evs.iter().map(|e| e.labels.get("job").unwrap()).collect();
        assert_eq!(jobs, vec!["1", "2", OTHER_LABEL_VALUE, "1"]);
        assert_eq!(c.stats.label_overflow, 1);
    }

    #[test]
    fn single_line_mode_skips_records() {
        let mut c = classifier();
        c.single_line(Arc::from("s"));
        let evs = feed(&mut c, PY_TB, 0, 1);
        assert_eq!(
            evs.len(),
            2,
            "header and exception line separately: {:?}",
            kinds(&evs)
        );
    }

    #[test]
    fn records_of_two_files_in_one_source_do_not_mix() {
        let mut c = classifier();
        let mut out = Vec::new();
        let lines = [
            (1, "Traceback (most recent call last):"),
            (2, "Traceback (most recent call last):"),
            (1, "  File \"a.py\", line 1, in f"),
            (2, "  File \"b.py\", line 1, in g"),
            (2, "KeyError: 'b'"),
            (1, "MemoryError"),
        ];
        for (i, (stream, text)) in lines.iter().enumerate() {
            let line = Line::new(
                Origin::new(Arc::from("s"), *stream, Labels::new()),
                text.as_bytes(),
                Ts(i as u64),
            );
            c.push(&line, &mut out);
        }
        c.finish(&mut out);
        let mut got = kinds(&out);
        got.sort();
        assert_eq!(
            got,
            vec![
                ("error".into(), "KeyError: 'b'".into()),
                ("oom".into(), "MemoryError".into())
            ]
        );
    }

    #[test]
    fn a_task_failure_folds_its_traceback_once() {
        let tb =
            "Traceback (most recent call last):\n  File \"t.py\", line 1, in f\nKeyError: 'k'\n";
        let text = format!(
            "Task t.a[0a] raised unexpected: KeyError('k')\nTask t.b[0b] raised unexpected: KeyError('k')\n{tb}{tb}{tb}"
        );
        let mut c = classifier();
        let evs = feed(&mut c, &text, 0, 10);
        // Two failures, each with its own traceback; the third traceback is its own incident.
        assert_eq!(evs.len(), 3, "{:?}", kinds(&evs));
        assert_eq!(evs.iter().filter(|e| e.folded == 1).count(), 2);
        assert_eq!(evs.iter().filter(|e| e.record == Some("python")).count(), 1);
    }

    #[test]
    fn batches_on_threads_give_exactly_the_events_of_line_by_line() {
        // The demo log (tracebacks, folds, plain lines) with the default pack, three times
        // over: well past the parallel threshold.
        let demo = include_str!("../fixtures/demo/worker.log").repeat(3);
        let set = Arc::new(
            PatternSet::compile(
                &[parse_pack("default", crate::classify::DEFAULT_PACK).unwrap()],
                &[],
            )
            .unwrap(),
        );
        let lines: Vec<Line> = demo
            .lines()
            .enumerate()
            .map(|(i, l)| {
                Line::new(
                    Origin::new(Arc::from("s"), 0, Labels::new()),
                    l.as_bytes(),
                    Ts(1_000 + i as u64 * 7),
                )
            })
            .collect();
        assert!(lines.len() >= PARALLEL_BATCH);
        #[derive(Clone, Copy, Debug)]
        enum How {
            LineByLine,
            /// `push_batch`: halves on two threads.
            Halves,
            /// Batches of 37 lines through a pool of two threads, three in flight.
            Pool,
            /// Jobs made by a classifier with other patterns (one more in front, so every
            /// index differs), as after a reload: each batch is pushed line by line.
            StalePool,
        }
        let pool = crate::prepare::PreparePool::with_threads(2).unwrap();
        let run = |how: How| {
            let mut c = Classifier::new(set.clone(), RecordConfig::default(), 100);
            c.parallel = true;
            let first = "[[pattern]]\nname = \"never\"\nkind = \"error\"\nregex = '^never$'\n";
            let shifted = PatternSet::compile(
                &[
                    parse_pack("first", first).unwrap(),
                    parse_pack("default", crate::classify::DEFAULT_PACK).unwrap(),
                ],
                &[],
            )
            .unwrap();
            let other = Classifier::new(Arc::new(shifted), RecordConfig::default(), 100);
            let mut out = Vec::new();
            match how {
                How::LineByLine => {
                    for l in &lines {
                        c.push(l, &mut out);
                    }
                }
                How::Halves => c.push_batch(&lines, &mut out),
                How::Pool | How::StalePool => {
                    let maker = if matches!(how, How::Pool) { &c } else { &other };
                    let jobs: Vec<PrepareJob> =
                        lines.chunks(37).map(|b| maker.job(b.to_vec())).collect();
                    let mut inflight = std::collections::VecDeque::new();
                    for job in jobs {
                        inflight.push_back(pool.submit(job));
                        if inflight.len() == 3 {
                            let batch = inflight.pop_front().unwrap().blocking_recv().unwrap();
                            assert!(batch.is_prepared());
                            c.push_prepared_batch(batch, &mut out);
                        }
                    }
                    for rx in inflight {
                        c.push_prepared_batch(rx.blocking_recv().unwrap(), &mut out);
                    }
                }
            }
            c.finish(&mut out);
            (out, c.stats.clone())
        };
        let (one, s1) = run(How::LineByLine);
        assert!(one.len() > 60, "the demo's events: {}", one.len());
        for how in [How::Halves, How::Pool, How::StalePool] {
            let (two, s2) = run(how);
            assert_eq!(s1, s2, "{how:?}");
            assert_eq!(one.len(), two.len(), "{how:?}");
            for (a, b) in one.iter().zip(&two) {
                assert_eq!(
                    serde_json::to_string(a).unwrap(),
                    serde_json::to_string(b).unwrap(),
                    "{how:?}"
                );
            }
        }
    }

    #[test]
    fn unknown_record_fold_is_a_load_error() {
        let pack = "[[pattern]]\nname = \"x\"\nkind = \"error\"\nregex = 'x'\nfolds = [\"record:cobol\"]\n";
        let e = PatternSet::compile(&[parse_pack("t.toml", pack).unwrap()], &[]).unwrap_err();
        assert!(e.to_string().contains("record:cobol"), "{e}");
    }

    #[test]
    fn signatures() {
        assert_eq!(signature("KeyError: 'k'"), "KeyError");
        assert_eq!(
            signature("Caused by: java.io.IOException: x"),
            "java.io.IOException"
        );
        assert_eq!(
            signature("failed to fetch /data/a/b.bin after 3 tries (id 0xdeadbeef)"),
            "failed to fetch * after * tries (id *)"
        );
    }
}

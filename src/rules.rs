//! Rules over rolling windows, and the alert lifecycle
//! inactive → pending → firing → resolved.
//!
//! [`RuleEngine`] is pure: [`observe`](RuleEngine::observe) feeds it events (placing them in
//! windows by their own time), [`evaluate`](RuleEngine::evaluate) decides state at `now` and
//! returns the state *changes* ([`Alert`]s) for the notifier. The counters task calls
//! `evaluate` after every batch of events and on a 1 s tick, so alerts also resolve when
//! traffic stops.
//!
//! Rule types: `count` (events of kinds K in window W, compared to a threshold), `ratio`
//! (K / (K ∪ of) with `min_events`), `any` (every matching event is an alert), and in
//! [`signals`]: `gauge` (queue samples), `absent` (silence), `all` (a conjunction) and the
//! built-in `queue_source_down`.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::classify::PatternSet;
use crate::event::{same_str, Event, Labels, Ts};
use crate::window::RollingCount;

pub mod signals;
pub use signals::{GaugeMetric, GaugeSpec};

/// How urgent an alert is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// For the record.
    Info,
    /// Someone should look today.
    Warning,
    /// Someone should look now.
    Critical,
}

impl Severity {
    /// Parses `info`, `warning` or `critical`.
    pub fn parse(s: &str) -> Option<Severity> {
        match s {
            "info" => Some(Severity::Info),
            "warning" => Some(Severity::Warning),
            "critical" => Some(Severity::Critical),
            _ => None,
        }
    }

    /// Lower-case name.
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Info => "info",
            Severity::Warning => "warning",
            Severity::Critical => "critical",
        }
    }
}

/// The error text for an unknown severity.
pub fn severity_msg(s: &str) -> String {
    format!("unknown severity {s:?} (expected \"info\", \"warning\" or \"critical\")")
}

/// Comparison of a rule's value with its threshold.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Op {
    /// `value > threshold` (default).
    #[serde(rename = ">")]
    Gt,
    /// `value >= threshold`.
    #[serde(rename = ">=")]
    Ge,
    /// `value < threshold` (e.g. nothing processed: `processed < 1`).
    #[serde(rename = "<")]
    Lt,
    /// `value <= threshold`.
    #[serde(rename = "<=")]
    Le,
}

impl Op {
    fn holds(self, value: f64, threshold: f64) -> bool {
        match self {
            Op::Gt => value > threshold,
            Op::Ge => value >= threshold,
            Op::Lt => value < threshold,
            Op::Le => value <= threshold,
        }
    }

    /// `>` or `>=`.
    pub fn as_str(self) -> &'static str {
        match self {
            Op::Gt => ">",
            Op::Ge => ">=",
            Op::Lt => "<",
            Op::Le => "<=",
        }
    }
}

/// What a rule measures.
#[derive(Debug, Clone, PartialEq)]
pub enum RuleKind {
    /// Events of `kinds` in `window`.
    Count {
        /// Counted kinds.
        kinds: Vec<Arc<str>>,
        /// Window length.
        window: Duration,
    },
    /// Events of `kinds` divided by events of `kinds ∪ of`, over `window`; not evaluated below
    /// `min_events` events in the denominator.
    Ratio {
        /// Numerator kinds.
        kinds: Vec<Arc<str>>,
        /// Further denominator kinds (the numerator kinds are always included).
        of: Vec<Arc<str>>,
        /// Window length.
        window: Duration,
        /// Fewest denominator events for the ratio to mean anything.
        min_events: u64,
    },
    /// Every matching event is an alert of its own.
    Any {
        /// Matching kinds.
        kinds: Vec<Arc<str>>,
    },
    /// A queue metric (or its growth) compared with the threshold.
    Gauge(GaugeSpec),
    /// No events of `kinds` (empty: no lines at all) from a source for the rule's `for`.
    Absent {
        /// Awaited kinds; empty = any line.
        kinds: Vec<Arc<str>>,
    },
    /// Every named rule's alert is firing (notified or not) for the same group.
    All {
        /// The conjoined rules.
        rules: Vec<Arc<str>>,
    },
    /// Built in: a `[[queue]]` could not be polled for its `down_after`.
    SourceDown,
}

/// A validated rule.
#[derive(Debug, Clone, PartialEq)]
pub struct RuleSpec {
    /// Unique name.
    pub name: Arc<str>,
    /// What it measures.
    pub kind: RuleKind,
    /// Threshold the value is compared with (`count`, `ratio`).
    pub threshold: f64,
    /// Comparison. Default: `>`.
    pub op: Op,
    /// Once firing, resolve only when the value falls below this (hysteresis). Default: the
    /// threshold itself.
    pub clear_below: Option<f64>,
    /// Severity of its alerts.
    pub severity: Severity,
    /// How long the condition must hold before firing. Default: 0s.
    pub for_: Duration,
    /// How long to keep firing after the condition stops holding. Default: 0s.
    pub keep_firing_for: Duration,
    /// Labels that split the rule into one alert per value set.
    pub group_by: Vec<Arc<str>>,
    /// Only events whose labels equal these count.
    pub matchers: Vec<(Arc<str>, String)>,
    /// Only events from these sources count; empty = all.
    pub sources: Vec<Arc<str>>,
    /// Only events from these patterns count; empty = all.
    pub patterns: Vec<Arc<str>>,
    /// One-line description for messages.
    pub summary: Option<String>,
    /// False: the rule is evaluated (and may be part of an `all` rule) but sends nothing.
    /// Default: true.
    pub notify: bool,
}

impl RuleSpec {
    fn window(&self) -> Option<Duration> {
        match &self.kind {
            RuleKind::Count { window, .. } | RuleKind::Ratio { window, .. } => Some(*window),
            _ => None,
        }
    }

    /// The rule's `type` as written in TOML (`count`, `ratio`, …).
    pub fn type_name(&self) -> &'static str {
        match self.kind {
            RuleKind::Count { .. } => "count",
            RuleKind::Ratio { .. } => "ratio",
            RuleKind::Any { .. } => "any",
            RuleKind::Gauge(_) => "gauge",
            RuleKind::Absent { .. } => "absent",
            RuleKind::All { .. } => "all",
            RuleKind::SourceDown => "queue_source_down",
        }
    }

    fn matches(&self, ev: &Event) -> bool {
        (self.sources.is_empty() || self.sources.contains(&ev.source))
            && (self.patterns.is_empty() || self.patterns.contains(&ev.pattern))
            && self
                .matchers
                .iter()
                .all(|(k, v)| ev.labels.get(k) == Some(v.as_str()))
    }
}

/// The default rules used when a config has no `[[rule]]`: they mirror the operators' guides
/// logwarden replaces.
pub fn default_rules() -> Vec<RuleSpec> {
    let base =
        |name: &str, kind: RuleKind, threshold: f64, severity: Severity, summary: &str| RuleSpec {
            name: Arc::from(name),
            kind,
            threshold,
            op: Op::Gt,
            clear_below: None,
            severity,
            for_: Duration::ZERO,
            keep_firing_for: Duration::ZERO,
            group_by: Vec::new(),
            matchers: Vec::new(),
            sources: Vec::new(),
            patterns: Vec::new(),
            summary: Some(summary.to_string()),
            notify: true,
        };
    let k = |v: &[&str]| v.iter().map(|s| Arc::from(*s)).collect::<Vec<_>>();
    vec![
        base(
            "error-rate",
            RuleKind::Ratio {
                kinds: k(&["error"]),
                of: k(&["processed", "downloaded"]),
                window: Duration::from_secs(300),
                min_events: 20,
            },
            0.05,
            Severity::Warning,
            "more than 5% of jobs failed over 5 minutes",
        ),
        base(
            "crash-frequency",
            RuleKind::Count {
                kinds: k(&["crash", "oom"]),
                window: Duration::from_secs(3600),
            },
            1.0,
            Severity::Critical,
            "workers died more than once in an hour",
        ),
        base(
            "oom",
            RuleKind::Any { kinds: k(&["oom"]) },
            0.0,
            Severity::Critical,
            "a worker ran out of memory",
        ),
    ]
}

/// A rule as written in TOML: one flat table, checked per `type` by [`validate`].
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRule {
    name: String,
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    kinds: Vec<String>,
    of: Option<Vec<String>>,
    #[serde(default)]
    patterns: Vec<String>,
    #[serde(default, with = "crate::config::opt_duration")]
    window: Option<Duration>,
    threshold: Option<f64>,
    op: Option<String>,
    min_events: Option<u64>,
    clear_below: Option<f64>,
    severity: Option<String>,
    #[serde(default, rename = "for", with = "crate::config::opt_duration")]
    for_: Option<Duration>,
    #[serde(default, with = "crate::config::opt_duration")]
    keep_firing_for: Option<Duration>,
    #[serde(default)]
    group_by: Vec<String>,
    #[serde(default, rename = "match")]
    matchers: std::collections::BTreeMap<String, String>,
    #[serde(default)]
    sources: Vec<String>,
    summary: Option<String>,
    metric: Option<String>,
    #[serde(default)]
    parts: Vec<String>,
    rules: Option<Vec<String>>,
    notify: Option<bool>,
}

/// Validates rule `index`; errors are `(field path, message)`.
pub fn validate(
    index: usize,
    r: RawRule,
    patterns: &PatternSet,
    sources: &[Arc<str>],
) -> Result<RuleSpec, (String, String)> {
    let at = format!("rule[{index}] {:?}", r.name);
    let field = |f: &str| format!("{at}.{f}");
    if r.name.trim().is_empty() {
        return Err((format!("rule[{index}].name"), "must not be empty".into()));
    }
    let known = patterns.kinds();
    let resolve = |f: &str, list: &[String]| -> Result<Vec<Arc<str>>, (String, String)> {
        list.iter()
            .map(|k| {
                known
                    .iter()
                    .find(|x| x.as_ref() == k)
                    .cloned()
                    .ok_or_else(|| {
                        let names: Vec<&str> = known.iter().map(|k| k.as_ref()).collect();
                        (
                            field(f),
                            format!("unknown kind {k:?} (known: {})", names.join(", ")),
                        )
                    })
            })
            .collect()
    };
    let kinds = resolve("kinds", &r.kinds)?;
    if kinds.is_empty() && matches!(r.kind.as_str(), "count" | "ratio" | "any") {
        return Err((
            field("kinds"),
            "needs at least one kind, e.g. kinds = [\"error\"]".into(),
        ));
    }
    let need_window = |w: Option<Duration>| -> Result<Duration, (String, String)> {
        match w {
            Some(w) if w >= Duration::from_secs(1) => Ok(w),
            Some(w) => Err((field("window"), format!("must be at least 1s, got {w:?}"))),
            None => Err((
                field("window"),
                "is required for this type, e.g. window = \"5m\"".into(),
            )),
        }
    };
    let only = |name: &str, set: bool, types: &str| -> Result<(), (String, String)> {
        if set {
            Err((
                field(name),
                format!("only applies to type {types}, not {:?}", r.kind),
            ))
        } else {
            Ok(())
        }
    };
    let kind = match r.kind.as_str() {
        "count" => {
            only("of", r.of.is_some(), "\"ratio\"")?;
            only("min_events", r.min_events.is_some(), "\"ratio\"")?;
            RuleKind::Count {
                kinds,
                window: need_window(r.window)?,
            }
        }
        "ratio" => {
            let of = resolve("of", r.of.as_deref().unwrap_or_default())?;
            RuleKind::Ratio {
                kinds,
                of,
                window: need_window(r.window)?,
                min_events: r.min_events.unwrap_or(1),
            }
        }
        "any" => {
            only("window", r.window.is_some(), "\"count\" or \"ratio\"")?;
            only("threshold", r.threshold.is_some(), "\"count\" or \"ratio\"")?;
            only("of", r.of.is_some(), "\"ratio\"")?;
            only("min_events", r.min_events.is_some(), "\"ratio\"")?;
            only(
                "clear_below",
                r.clear_below.is_some(),
                "\"count\" or \"ratio\"",
            )?;
            RuleKind::Any { kinds }
        }
        "gauge" | "absent" | "all" => signals::signals_kind(&r, kinds, &field, &only)?,
        other => {
            return Err((
                field("type"),
                format!("unknown rule type {other:?} (expected \"count\", \"ratio\", \"any\", \"gauge\", \"absent\" or \"all\")"),
            ))
        }
    };
    if !matches!(kind, RuleKind::Gauge(_)) {
        only("metric", r.metric.is_some(), "\"gauge\"")?;
        only("parts", !r.parts.is_empty(), "\"gauge\"")?;
    }
    if !matches!(kind, RuleKind::All { .. }) {
        only("rules", r.rules.is_some(), "\"all\"")?;
    }
    let threshold = match (&kind, r.threshold) {
        (RuleKind::Any { .. } | RuleKind::Absent { .. } | RuleKind::All { .. }, _) => 0.0,
        (_, Some(t)) if t.is_finite() => t,
        (_, Some(t)) => return Err((field("threshold"), format!("must be a number, got {t}"))),
        (_, None) => return Err((field("threshold"), "is required for this type".into())),
    };
    if let (RuleKind::Ratio { .. }, t) = (&kind, threshold) {
        if !(0.0..=1.0).contains(&t) {
            return Err((
                field("threshold"),
                format!("a ratio threshold is between 0 and 1, got {t}"),
            ));
        }
    }
    let op = match r.op.as_deref() {
        None | Some(">") => Op::Gt,
        Some(">=") => Op::Ge,
        Some("<") => Op::Lt,
        Some("<=") => Op::Le,
        Some(o) => {
            return Err((
                field("op"),
                format!("unknown comparison {o:?} (expected \">\", \">=\", \"<\" or \"<=\")"),
            ))
        }
    };
    if matches!(op, Op::Lt | Op::Le) && r.clear_below.is_some() {
        return Err((
            field("clear_below"),
            "only applies to \">\" and \">=\" comparisons".into(),
        ));
    }
    if let Some(c) = r.clear_below {
        if !(c.is_finite() && c <= threshold) {
            return Err((
                field("clear_below"),
                format!("must be a number not above the threshold {threshold}, got {c}"),
            ));
        }
    }
    let severity = match r.severity.as_deref() {
        None => Severity::Warning,
        Some(s) => Severity::parse(s).ok_or_else(|| (field("severity"), severity_msg(s)))?,
    };
    for (i, g) in r.group_by.iter().enumerate() {
        if !crate::config::valid_label_name(g) {
            return Err((
                field(&format!("group_by[{i}]")),
                format!("invalid label name {g:?}"),
            ));
        }
    }
    for (i, s) in r.sources.iter().enumerate() {
        if !sources.iter().any(|x| x.as_ref() == s) {
            let names: Vec<&str> = sources.iter().map(|s| s.as_ref()).collect();
            return Err((
                field(&format!("sources[{i}]")),
                format!("unknown source {s:?} (known: {})", names.join(", ")),
            ));
        }
    }
    for (i, p) in r.patterns.iter().enumerate() {
        if patterns.find(p).is_none() {
            return Err((
                field(&format!("patterns[{i}]")),
                format!("unknown pattern {p:?}"),
            ));
        }
    }
    Ok(RuleSpec {
        name: Arc::from(r.name.as_str()),
        kind,
        threshold,
        op,
        clear_below: r.clear_below,
        severity,
        for_: r.for_.unwrap_or_default(),
        keep_firing_for: r.keep_firing_for.unwrap_or_default(),
        group_by: r.group_by.iter().map(|g| Arc::from(g.as_str())).collect(),
        matchers: r
            .matchers
            .into_iter()
            .map(|(k, v)| (Arc::from(k.as_str()), v))
            .collect(),
        sources: r.sources.iter().map(|s| Arc::from(s.as_str())).collect(),
        patterns: r.patterns.iter().map(|s| Arc::from(s.as_str())).collect(),
        summary: r.summary,
        notify: r.notify.unwrap_or(true),
    })
}

/// What happened to an alert.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AlertState {
    /// The condition held long enough: tell people.
    Firing,
    /// It stopped holding: tell them it is over.
    Resolved,
    /// One event of an `any` rule (no resolved notice follows).
    Event,
}

/// An alert state change, handed from counters to notify. It reads back what it writes (the
/// outbox journal stores messages as JSON).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Alert {
    /// Rule name.
    pub rule: Arc<str>,
    /// Rule type (`count`, `ratio`, `any`).
    #[serde(rename = "type", deserialize_with = "de_rule_type")]
    pub rule_type: RuleTypeName,
    /// The group's labels (`group_by` values), or the event's labels for `any`.
    pub labels: Labels,
    /// The change.
    pub state: AlertState,
    /// Severity.
    pub severity: Severity,
    /// The measured value at the change.
    pub value: f64,
    /// The threshold.
    pub threshold: f64,
    /// Comparison.
    pub op: Op,
    /// The window, in seconds (`None` for `any`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub window_secs: Option<u64>,
    /// Events counted (numerator) and, for ratios, the denominator.
    pub count: u64,
    /// Denominator of a ratio.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub total: Option<u64>,
    /// When the change happened.
    pub at: Ts,
    /// When the alert started firing (same as `at` for a new firing).
    pub since: Ts,
    /// Rule summary.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub summary: Option<String>,
    /// First and last matching lines (messages), oldest first, each at most
    /// [`EVIDENCE_CHARS`] characters.
    pub evidence: Vec<String>,
    /// Raised by lines read while catching up on old data: summarised, not sent one by one.
    #[serde(skip_serializing_if = "std::ops::Not::not", default)]
    pub backfill: bool,
    /// Related activity when the change happened (events per kind in the last 5 minutes,
    /// queue depths), filled in by the counters stage.
    #[serde(skip_serializing_if = "Vec::is_empty", default)]
    pub context: Vec<String>,
}

/// A rule type's name. An alias, not `&'static str` written out, because serde's derive reads
/// a literal `&'static str` field as borrowed from the input and would then only deserialise
/// `Alert` from `'static` data; `de_rule_type` maps the text to a static name instead.
pub type RuleTypeName = &'static str;

/// The `&'static str` for a rule type name read back from a file; an unknown name (a newer
/// version's) becomes `restored`.
pub fn static_rule_type(s: &str) -> &'static str {
    match s {
        "count" => "count",
        "ratio" => "ratio",
        "any" => "any",
        "gauge" => "gauge",
        "absent" => "absent",
        "all" => "all",
        "queue_source_down" => "queue_source_down",
        _ => "restored",
    }
}

fn de_rule_type<'de, D: serde::Deserializer<'de>>(d: D) -> Result<&'static str, D::Error> {
    Ok(static_rule_type(&String::deserialize(d)?))
}

/// Longest kept evidence line, in characters.
pub const EVIDENCE_CHARS: usize = 300;
const EVIDENCE_FIRST: usize = 2;
const EVIDENCE_LAST: usize = 3;

#[derive(Debug, Clone, Copy, PartialEq)]
enum Phase {
    Inactive,
    Pending { since: Ts },
    Firing { since: Ts, last_true: Ts },
}

#[derive(Debug)]
struct Group {
    labels: Labels,
    num: RollingCount,
    den: Option<RollingCount>,
    phase: Phase,
    /// Counted an event since the last evaluation.
    dirty: bool,
    first: Vec<String>,
    last: VecDeque<String>,
    /// The last event counted was backfill (read while catching up on old data).
    backfill: bool,
}

impl Group {
    fn new(labels: Labels, window: Duration, ratio: bool) -> Group {
        Group {
            labels,
            num: RollingCount::new(window),
            den: ratio.then(|| RollingCount::new(window)),
            phase: Phase::Inactive,
            dirty: false,
            first: Vec::new(),
            last: VecDeque::new(),
            backfill: false,
        }
    }

    /// Counts `ev` into the numerator and/or the denominator.
    fn count(&mut self, ev: &Event, in_num: bool, in_den: bool) {
        if in_num {
            self.num.add(ev.ts, 1);
            self.remember(ev);
        }
        if in_den {
            if let Some(den) = &mut self.den {
                den.add(ev.ts, 1);
            }
        }
        self.dirty = true;
    }

    fn remember(&mut self, ev: &Event) {
        self.backfill = ev.backfill;
        if self.first.len() < EVIDENCE_FIRST {
            self.first
                .push(truncate_chars(&ev.message.text(), EVIDENCE_CHARS));
            return;
        }
        // The oldest of the last lines makes room, and its buffer takes the new text: a
        // counted event costs a copy, not an allocation.
        let mut text = if self.last.len() == EVIDENCE_LAST {
            self.last.pop_front().unwrap_or_default()
        } else {
            String::new()
        };
        text.clear();
        push_truncated(&mut text, &ev.message.text(), EVIDENCE_CHARS);
        self.last.push_back(text);
    }

    fn evidence(&self) -> Vec<String> {
        self.first.iter().chain(self.last.iter()).cloned().collect()
    }
}

/// Cuts `s` to at most `n` characters, marking the cut with `…`.
pub fn truncate_chars(s: &str, n: usize) -> String {
    let mut out = String::new();
    push_truncated(&mut out, s, n);
    out
}

/// Appends `s` cut like [`truncate_chars`] to `out`.
fn push_truncated(out: &mut String, s: &str, n: usize) {
    // No more bytes than `n` means no more characters: no need to count them.
    let cut = if s.len() <= n {
        None
    } else {
        s.char_indices().nth(n)
    };
    match cut {
        None => out.push_str(s),
        Some((i, _)) => {
            out.push_str(&s[..i]);
            out.push('…');
        }
    }
}

struct RuleState {
    spec: RuleSpec,
    groups: HashMap<Labels, Group>,
}

impl RuleState {
    /// `(group labels, firing)` for `all` rules.
    fn conditions(&self) -> Vec<(Labels, bool)> {
        self.groups
            .iter()
            .map(|(l, g)| (l.clone(), matches!(g.phase, Phase::Firing { .. })))
            .collect()
    }
}

/// Label set that over-cap events are counted under.
pub fn overflow_labels() -> Labels {
    Labels::from_pairs([("__overflow__", "true")])
}

/// A firing alert, for status pages and summaries.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ActiveAlert {
    /// Rule name.
    pub rule: Arc<str>,
    /// Group labels.
    pub labels: Labels,
    /// `pending` or `firing`.
    pub state: &'static str,
    /// Since when.
    pub since: Ts,
    /// Severity.
    pub severity: Severity,
}

/// The current content of one count or ratio window, for `/status`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct WindowView {
    /// Rule name.
    pub rule: Arc<str>,
    /// Group labels.
    pub labels: Labels,
    /// Span of the window, in seconds.
    pub window_secs: u64,
    /// Matching events in the window.
    pub count: u64,
    /// Ratio rules: events of the denominator kinds in the window.
    pub total: Option<u64>,
    /// The value compared with the threshold (count, or count / total).
    pub value: f64,
    /// `>`, `>=`, `<` or `<=`.
    pub op: &'static str,
    /// The threshold.
    pub threshold: f64,
    /// `inactive`, `pending` or `firing`.
    pub state: &'static str,
}

/// All rules and their per-group windows and alert state.
pub struct RuleEngine {
    rules: Vec<RuleState>,
    max_series: usize,
    series: usize,
    /// Events that landed in the overflow series because the cap was hit.
    pub overflowed: u64,
    signals: signals::Signals,
    /// Rules with `notify = false`: their changes are dropped.
    silent: Vec<Arc<str>>,
    /// The first evaluation time: what the engine has watched since.
    started: Option<Ts>,
    /// Per event kind seen, which rules count it: see [`Membership`]. Events carry a few
    /// kind strings shared by all events of a pattern; comparing each with every rule's
    /// kinds was part of `observe`'s ~4% of the daemon's CPU on the bench corpus (perf).
    kinds: Vec<(Arc<str>, Vec<Membership>)>,
}

/// How an event of some kind counts in one rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Membership {
    /// Not at all (or the rule is a signal rule, counted elsewhere).
    None,
    /// In a count or ratio rule: `num` in the numerator (count: the count), `den` in the
    /// ratio's denominator.
    Counts { num: bool, den: bool },
    /// An `any` rule's kind: alerts at once.
    Alerts,
}

impl Membership {
    fn of(kind: &RuleKind, ev_kind: &Arc<str>) -> Membership {
        let has = |kinds: &[Arc<str>]| kinds.iter().any(|k| same_str(k, ev_kind));
        match kind {
            RuleKind::Count { kinds, .. } if has(kinds) => Membership::Counts {
                num: true,
                den: false,
            },
            RuleKind::Ratio { kinds, of, .. } => {
                let num = has(kinds);
                if num || has(of) {
                    Membership::Counts { num, den: true }
                } else {
                    Membership::None
                }
            }
            RuleKind::Any { kinds } if has(kinds) => Membership::Alerts,
            _ => Membership::None,
        }
    }
}

/// Most event kinds remembered by [`RuleEngine::kinds`] (then it starts over).
const KIND_MEMO: usize = 64;

impl RuleEngine {
    /// An engine for `specs`, keeping at most `max_series` (rule, group) windows.
    pub fn new(specs: Vec<RuleSpec>, max_series: usize) -> RuleEngine {
        let silent = specs
            .iter()
            .filter(|s| !s.notify)
            .map(|s| s.name.clone())
            .collect();
        let (sig, counted): (Vec<_>, Vec<_>) =
            specs.into_iter().partition(|s| signals::is_signal(&s.kind));
        let rules: Vec<RuleState> = counted
            .into_iter()
            .map(|spec| RuleState {
                spec,
                groups: HashMap::new(),
            })
            .collect();
        RuleEngine {
            signals: signals::Signals::new(sig, &rules),
            rules,
            max_series: max_series.max(1),
            series: 0,
            overflowed: 0,
            silent,
            started: None,
            kinds: Vec::new(),
        }
    }

    /// Index into `kinds` of `kind`'s memberships, computed on first sight.
    fn kind_index(&mut self, kind: &Arc<str>) -> usize {
        // By pointer: events of one pattern share its kind string.
        if let Some(i) = self.kinds.iter().position(|(k, _)| Arc::ptr_eq(k, kind)) {
            return i;
        }
        // The same kind in another string (patterns reloaded): remember this one.
        if let Some(i) = self.kinds.iter().position(|(k, _)| k == kind) {
            self.kinds[i].0 = kind.clone();
            return i;
        }
        if self.kinds.len() >= KIND_MEMO {
            self.kinds.clear();
        }
        let m = self
            .rules
            .iter()
            .map(|r| Membership::of(&r.spec.kind, kind))
            .collect();
        self.kinds.push((kind.clone(), m));
        self.kinds.len() - 1
    }

    /// An engine for `specs` that keeps the windows and alert state of every rule of `self`
    /// whose spec is unchanged (a config reload). Changed rules start afresh; removed rules
    /// are dropped with their state. Returns the engine and the names of the kept rules.
    pub fn reconfigure(
        mut self,
        specs: Vec<RuleSpec>,
        max_series: usize,
    ) -> (RuleEngine, Vec<Arc<str>>) {
        let mut new = RuleEngine::new(specs, max_series);
        let mut kept = Vec::new();
        for r in &mut new.rules {
            if let Some(old) = self.rules.iter_mut().find(|o| o.spec == r.spec) {
                r.groups = std::mem::take(&mut old.groups);
                kept.push(r.spec.name.clone());
            }
        }
        new.series = new.rules.iter().map(|r| r.groups.len()).sum();
        kept.extend(new.signals.adopt(&mut self.signals));
        new.started = self.started;
        new.overflowed = self.overflowed;
        (new, kept)
    }

    /// Lines read from `source` at `at` (one call per batch and label set), for `absent`
    /// rules without kinds.
    pub fn observe_lines(&mut self, source: &Arc<str>, labels: &Labels, at: Ts) {
        self.signals.observe_lines(source, labels, at);
    }

    /// One poll's queue samples, for `gauge` rules.
    pub fn observe_samples(&mut self, batch: &crate::queues::SampleBatch) {
        self.signals.observe_samples(batch);
    }

    /// A queue source went down or came back, for `queue_source_down`.
    pub fn observe_health(&mut self, h: &crate::queues::Health) {
        self.signals.observe_health(h);
    }

    /// The rules, in config order.
    pub fn specs(&self) -> impl Iterator<Item = &RuleSpec> {
        self.rules.iter().map(|r| &r.spec)
    }

    /// Counts `ev` into every rule it matches; `any` rules push their alert to `out` at once.
    pub fn observe(&mut self, ev: &Event, out: &mut Vec<Alert>) {
        let k = self.kind_index(&ev.kind);
        let memberships = &self.kinds[k].1;
        for (rule, &member) in self.rules.iter_mut().zip(memberships) {
            let spec = &rule.spec;
            // The kind first, then `matches` (sources, patterns, label matchers): most
            // (rule, event) pairs differ in kind.
            let (in_num, in_den) = match member {
                Membership::None => continue,
                Membership::Counts { num, den } => (num, den),
                Membership::Alerts => {
                    if spec.matches(ev) {
                        let mut labels = ev.labels.clone();
                        labels.insert(Arc::from("source"), ev.source.clone());
                        out.push(Alert {
                            rule: spec.name.clone(),
                            rule_type: spec.type_name(),
                            labels,
                            state: AlertState::Event,
                            severity: spec.severity,
                            value: 1.0,
                            threshold: 0.0,
                            op: spec.op,
                            window_secs: None,
                            count: 1,
                            total: None,
                            at: ev.ts,
                            since: ev.ts,
                            summary: spec.summary.clone(),
                            evidence: vec![truncate_chars(&ev.message.text(), EVIDENCE_CHARS)],
                            backfill: ev.backfill,
                            context: Vec::new(),
                        });
                    }
                    continue;
                }
            };
            if !spec.matches(ev) {
                continue;
            }
            let mut key = ev.labels.project(&spec.group_by);
            // One hash of the label set for an existing group (nearly every event); none for
            // a rule without `group_by`, whose one group is the empty label set (when that
            // group is not there, neither is `key`).
            let group = if spec.group_by.is_empty() && rule.groups.len() == 1 {
                rule.groups
                    .values_mut()
                    .next()
                    .filter(|g| g.labels.is_empty())
            } else {
                rule.groups.get_mut(&key)
            };
            if let Some(group) = group {
                group.count(ev, in_num, in_den);
                continue;
            }
            if self.series >= self.max_series {
                self.overflowed += 1;
                key = overflow_labels();
            }
            let window = spec.window().unwrap_or(Duration::from_secs(1));
            let is_ratio = matches!(spec.kind, RuleKind::Ratio { .. });
            let group = rule.groups.entry(key.clone()).or_insert_with(|| {
                self.series += 1;
                Group::new(key, window, is_ratio)
            });
            group.count(ev, in_num, in_den);
        }
        self.signals.observe_event(ev);
        self.drop_silent(out);
    }

    fn drop_silent(&self, out: &mut Vec<Alert>) {
        if !self.silent.is_empty() {
            out.retain(|a| !self.silent.contains(&a.rule));
        }
    }

    /// Decides every alert's state at `now`, pushing changes to `out`, and forgets groups
    /// that are inactive with empty windows. Call it on a steady tick (1 s): time alone
    /// moves windows and `for`/`keep_firing_for` clocks.
    pub fn evaluate(&mut self, now: Ts, out: &mut Vec<Alert>) {
        self.evaluate_groups(now, false, out);
    }

    /// Like [`evaluate`](Self::evaluate), but only for groups that counted an event since
    /// their last evaluation: cheap enough to call after every event or batch, so an alert
    /// fires at the event that tips it rather than at the next tick.
    pub fn evaluate_touched(&mut self, now: Ts, out: &mut Vec<Alert>) {
        self.evaluate_groups(now, true, out);
    }

    fn evaluate_groups(&mut self, now: Ts, only_touched: bool, out: &mut Vec<Alert>) {
        let started = *self.started.get_or_insert(now);
        self.evaluate_counts(now, only_touched, out);
        self.signals
            .evaluate(now, started, only_touched, &self.rules, out);
        self.drop_silent(out);
    }

    fn evaluate_counts(&mut self, now: Ts, only_touched: bool, out: &mut Vec<Alert>) {
        for rule in &mut self.rules {
            let spec = &rule.spec;
            let Some(window) = spec.window() else {
                continue;
            };
            let mut forget = Vec::new();
            for (key, g) in &mut rule.groups {
                if only_touched && !g.dirty {
                    continue;
                }
                g.dirty = false;
                let count = g.num.sum(now);
                let total = g.den.as_ref().map(|d| d.sum(now));
                let (value, meaningful) = match (&spec.kind, total) {
                    (RuleKind::Ratio { min_events, .. }, Some(t)) => (
                        if t == 0 { 0.0 } else { count as f64 / t as f64 },
                        t >= *min_events,
                    ),
                    _ => (count as f64, true),
                };
                let holds = meaningful && spec.op.holds(value, spec.threshold);
                let alert = |state, since| Alert {
                    rule: spec.name.clone(),
                    rule_type: spec.type_name(),
                    labels: g.labels.clone(),
                    state,
                    severity: spec.severity,
                    value,
                    threshold: spec.threshold,
                    op: spec.op,
                    window_secs: Some(window.as_secs()),
                    count,
                    total,
                    at: now,
                    since,
                    summary: spec.summary.clone(),
                    evidence: g.evidence(),
                    backfill: g.backfill,
                    context: Vec::new(),
                };
                g.phase = match g.phase {
                    Phase::Inactive if holds && spec.for_.is_zero() => {
                        out.push(alert(AlertState::Firing, now));
                        Phase::Firing {
                            since: now,
                            last_true: now,
                        }
                    }
                    Phase::Inactive if holds => Phase::Pending { since: now },
                    Phase::Inactive => {
                        // Evidence describes the current episode only.
                        g.first.clear();
                        g.last.clear();
                        if count == 0 && total.unwrap_or(0) == 0 {
                            forget.push(key.clone());
                        }
                        Phase::Inactive
                    }
                    Phase::Pending { since } if holds => {
                        if now.since(since) >= spec.for_ {
                            out.push(alert(AlertState::Firing, now));
                            Phase::Firing {
                                since: now,
                                last_true: now,
                            }
                        } else {
                            Phase::Pending { since }
                        }
                    }
                    Phase::Pending { .. } => Phase::Inactive,
                    Phase::Firing { since, last_true } => {
                        // Hysteresis: once firing, the alert holds until the value drops
                        // below `clear_below` (if set), not merely to the threshold.
                        let still =
                            holds || (meaningful && spec.clear_below.is_some_and(|c| value >= c));
                        if still {
                            Phase::Firing {
                                since,
                                last_true: now,
                            }
                        } else if now.since(last_true) >= spec.keep_firing_for {
                            out.push(alert(AlertState::Resolved, since));
                            g.first.clear();
                            g.last.clear();
                            Phase::Inactive
                        } else {
                            Phase::Firing { since, last_true }
                        }
                    }
                };
            }
            for key in forget {
                rule.groups.remove(&key);
                self.series -= 1;
            }
        }
    }

    /// Alerts that are pending or firing now.
    pub fn active(&self) -> Vec<ActiveAlert> {
        let mut out = Vec::new();
        for rule in &self.rules {
            for g in rule.groups.values() {
                let (state, since) = match g.phase {
                    Phase::Inactive => continue,
                    Phase::Pending { since } => ("pending", since),
                    Phase::Firing { since, .. } => ("firing", since),
                };
                out.push(ActiveAlert {
                    rule: rule.spec.name.clone(),
                    labels: g.labels.clone(),
                    state,
                    since,
                    severity: rule.spec.severity,
                });
            }
        }
        self.signals.active(&mut out);
        out.sort_by(|a, b| (&a.rule, &a.labels).cmp(&(&b.rule, &b.labels)));
        out
    }

    /// The windows of count and ratio rules at `now` (at most `limit`, in rule order).
    pub fn windows(&self, now: Ts, limit: usize) -> Vec<WindowView> {
        let mut out = Vec::new();
        for rule in &self.rules {
            let spec = &rule.spec;
            let Some(window) = spec.window() else {
                continue;
            };
            let mut groups: Vec<&Group> = rule.groups.values().collect();
            groups.sort_by(|a, b| a.labels.cmp(&b.labels));
            for g in groups {
                if out.len() >= limit {
                    return out;
                }
                let count = g.num.sum(now);
                let total = g.den.as_ref().map(|d| d.sum(now));
                let value = match total {
                    Some(0) => 0.0,
                    Some(t) => count as f64 / t as f64,
                    None => count as f64,
                };
                out.push(WindowView {
                    rule: spec.name.clone(),
                    labels: g.labels.clone(),
                    window_secs: window.as_secs(),
                    count,
                    total,
                    value,
                    op: spec.op.as_str(),
                    threshold: spec.threshold,
                    state: match g.phase {
                        Phase::Inactive => "inactive",
                        Phase::Pending { .. } => "pending",
                        Phase::Firing { .. } => "firing",
                    },
                });
            }
        }
        out
    }

    /// (rule, group) windows held now.
    pub fn series(&self) -> usize {
        self.series + self.signals.series()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T0: u64 = 1_795_428_000;

    fn at(secs: u64) -> Ts {
        Ts::from_secs(T0 + secs)
    }

    fn ev(kind: &str, secs: u64, labels: &[(&str, &str)]) -> Event {
        Event {
            ts: at(secs),
            source: Arc::from("src"),
            kind: Arc::from(kind),
            pattern: Arc::from("p"),
            labels: Labels::from_pairs(labels.iter().copied()),
            value: None,
            message: format!("{kind} at {secs}").into(),
            signature: None,
            line: None,
            lines: 1,
            record: None,
            folded: 0,
            backfill: false,
        }
    }

    fn count_rule(threshold: f64) -> RuleSpec {
        let mut r = default_rules().remove(1);
        r.threshold = threshold;
        r.kind = RuleKind::Count {
            kinds: vec![Arc::from("crash")],
            window: Duration::from_secs(60),
        };
        r
    }

    fn run(engine: &mut RuleEngine, events: &[Event], now: u64) -> Vec<(AlertState, String)> {
        let mut out = Vec::new();
        for e in events {
            engine.observe(e, &mut out);
        }
        engine.evaluate(at(now), &mut out);
        out.iter()
            .map(|a| (a.state, format!("{}{}", a.rule, a.labels)))
            .collect()
    }

    #[test]
    fn count_fires_above_threshold_and_resolves_when_window_empties() {
        let mut e = RuleEngine::new(vec![count_rule(1.0)], 100);
        assert!(run(&mut e, &[ev("crash", 0, &[])], 0).is_empty());
        let got = run(&mut e, &[ev("crash", 10, &[])], 10);
        assert_eq!(got, vec![(AlertState::Firing, "crash-frequency".into())]);
        assert!(run(&mut e, &[], 59).is_empty(), "still 2 in window");
        // At 60 s the first crash left the window: 1 is not > 1.
        assert_eq!(
            run(&mut e, &[], 60),
            vec![(AlertState::Resolved, "crash-frequency".into())]
        );
        assert!(run(&mut e, &[], 61).is_empty());
    }

    #[test]
    fn reconfigure_keeps_state_of_unchanged_rules_only() {
        let mut changed = count_rule(5.0);
        changed.name = "other".into();
        let mut e = RuleEngine::new(vec![count_rule(1.0), changed.clone()], 100);
        let got = run(&mut e, &[ev("crash", 0, &[]), ev("crash", 1, &[])], 1);
        assert_eq!(got, vec![(AlertState::Firing, "crash-frequency".into())]);
        changed.threshold = 1.0;
        let (mut e, kept) = e.reconfigure(vec![count_rule(1.0), changed], 100);
        assert_eq!(kept, vec![Arc::<str>::from("crash-frequency")]);
        assert_eq!(e.active().len(), 1, "the firing alert is kept");
        // No second Firing for the kept alert; the changed rule starts with empty windows.
        assert!(run(&mut e, &[], 2).is_empty());
        assert_eq!(
            run(&mut e, &[], 60),
            vec![(AlertState::Resolved, "crash-frequency".into())]
        );
    }

    #[test]
    fn ge_op_fires_at_equality() {
        let mut r = count_rule(2.0);
        r.op = Op::Ge;
        let mut e = RuleEngine::new(vec![r], 100);
        assert_eq!(
            run(&mut e, &[ev("crash", 0, &[]), ev("crash", 1, &[])], 1).len(),
            1
        );
    }

    #[test]
    fn for_delays_firing_and_short_blips_never_fire() {
        let mut r = count_rule(0.0);
        r.for_ = Duration::from_secs(30);
        let mut e = RuleEngine::new(vec![r], 100);
        assert!(run(&mut e, &[ev("crash", 0, &[])], 0).is_empty());
        assert_eq!(e.active()[0].state, "pending");
        assert!(run(&mut e, &[], 29).is_empty());
        assert_eq!(
            run(&mut e, &[], 30).len(),
            1,
            "fires once `for` has elapsed"
        );
        // A blip that ends before `for` elapses never fires.
        let mut r = count_rule(0.0);
        r.for_ = Duration::from_secs(120);
        let mut e = RuleEngine::new(vec![r], 100);
        assert!(run(&mut e, &[ev("crash", 0, &[])], 0).is_empty());
        assert!(run(&mut e, &[], 60).is_empty());
        assert!(run(&mut e, &[], 200).is_empty());
        assert!(e.active().is_empty());
    }

    #[test]
    fn keep_firing_for_delays_resolution() {
        let mut r = count_rule(0.0);
        r.keep_firing_for = Duration::from_secs(30);
        let mut e = RuleEngine::new(vec![r], 100);
        assert_eq!(run(&mut e, &[ev("crash", 0, &[])], 0).len(), 1);
        assert!(run(&mut e, &[], 59).is_empty(), "still true at 59");
        assert!(
            run(&mut e, &[], 60).is_empty(),
            "false since 60: keep firing"
        );
        assert!(run(&mut e, &[], 88).is_empty());
        assert_eq!(
            run(&mut e, &[], 89)[0].0,
            AlertState::Resolved,
            "30 s after last true"
        );
    }

    fn ratio_rule() -> RuleSpec {
        default_rules().remove(0)
    }

    #[test]
    fn kinds_count_the_same_by_pointer_by_content_and_past_the_kind_memo() {
        // Each event of `fresh` has a kind string of its own; `shared` events of a kind share
        // one (as events of one pattern do). More kinds than the memo holds, interleaved.
        let kinds: Vec<String> = ["crash", "error", "processed", "downloaded"]
            .into_iter()
            .map(String::from)
            .chain((0..KIND_MEMO + 6).map(|i| format!("user{i}")))
            .collect();
        let fresh: Vec<Event> = (0..3)
            .flat_map(|round| kinds.iter().map(move |k| ev(k, round, &[])))
            .collect();
        let templates: Vec<Event> = kinds.iter().map(|k| ev(k, 0, &[])).collect();
        let shared: Vec<Event> = (0..3)
            .flat_map(|round| {
                templates.iter().map(move |t| Event {
                    ts: at(round),
                    ..t.clone()
                })
            })
            .collect();
        let windows = |events: &[Event]| {
            let mut e = RuleEngine::new(vec![count_rule(100.0), ratio_rule()], 100);
            run(&mut e, events, 3);
            e.windows(at(3), 10)
                .into_iter()
                .map(|w| (w.rule.to_string(), w.count, w.total))
                .collect::<Vec<_>>()
        };
        let want = vec![
            ("crash-frequency".to_string(), 3, None),
            ("error-rate".to_string(), 3, Some(9)),
        ];
        assert_eq!(windows(&fresh), want);
        assert_eq!(windows(&shared), want);
        // Both in one engine, alternating, with fewer kinds than the memo holds (so it is
        // never started over): a kind met in a new string, then in the string the memo
        // knows, and back.
        let few = |evs: &[Event]| -> Vec<Event> {
            evs.iter()
                .filter(|e| !e.kind.starts_with("user") || e.kind.len() == 5)
                .cloned()
                .collect()
        };
        let mixed: Vec<Event> = few(&fresh)
            .into_iter()
            .zip(few(&shared))
            .flat_map(|(a, b)| [a, b])
            .collect();
        let twice = vec![
            ("crash-frequency".to_string(), 6, None),
            ("error-rate".to_string(), 6, Some(18)),
        ];
        assert_eq!(windows(&mixed), twice);
    }

    #[test]
    fn ratio_needs_min_events_then_fires_and_clear_below_holds() {
        let mut r = ratio_rule();
        r.clear_below = Some(0.02);
        let mut e = RuleEngine::new(vec![r], 100);
        // 3 errors of 10: 30%, but below min_events 20.
        let mut evs: Vec<Event> = (0..7).map(|i| ev("processed", i, &[])).collect();
        evs.extend((0..3).map(|i| ev("error", i, &[])));
        assert!(run(&mut e, &evs, 10).is_empty());
        // 20 events, 3 errors: 15% > 5%.
        let evs: Vec<Event> = (0..10).map(|i| ev("processed", 10 + i, &[])).collect();
        let got = run(&mut e, &evs, 20);
        assert_eq!(got, vec![(AlertState::Firing, "error-rate".into())]);
        // 3 of 100 = 3%: below 5% but not below clear_below 2%: still firing.
        let evs: Vec<Event> = (0..80).map(|_| ev("processed", 30, &[])).collect();
        assert!(run(&mut e, &evs, 30).is_empty());
        // 3 of 200 = 1.5%: resolves.
        let evs: Vec<Event> = (0..100).map(|_| ev("downloaded", 31, &[])).collect();
        assert_eq!(run(&mut e, &evs, 31)[0].0, AlertState::Resolved);
    }

    #[test]
    fn group_by_splits_alerts_and_matchers_filter() {
        let mut r = count_rule(0.0);
        r.group_by = vec![Arc::from("worker")];
        r.matchers = vec![(Arc::from("queue"), "emails".into())];
        let mut e = RuleEngine::new(vec![r], 100);
        let got = run(
            &mut e,
            &[
                ev("crash", 0, &[("worker", "a"), ("queue", "emails")]),
                ev("crash", 0, &[("worker", "b"), ("queue", "emails")]),
                ev("crash", 0, &[("worker", "c"), ("queue", "other")]),
            ],
            0,
        );
        let mut names: Vec<String> = got.into_iter().map(|(_, n)| n).collect();
        names.sort();
        assert_eq!(
            names,
            vec![
                "crash-frequency{worker=\"a\"}".to_string(),
                "crash-frequency{worker=\"b\"}".to_string()
            ]
        );
    }

    #[test]
    fn any_rule_alerts_per_event_without_resolution() {
        let mut e = RuleEngine::new(default_rules(), 100);
        let got = run(&mut e, &[ev("oom", 0, &[]), ev("oom", 1, &[])], 1);
        let ooms: Vec<_> = got
            .iter()
            .filter(|(s, _)| *s == AlertState::Event)
            .collect();
        assert_eq!(ooms.len(), 2);
        // The two OOMs also trip crash-frequency (2 > 1 in 1h).
        assert!(got.contains(&(AlertState::Firing, "crash-frequency".into())));
    }

    #[test]
    fn series_cap_routes_new_groups_to_overflow() {
        let mut r = count_rule(100.0);
        r.group_by = vec![Arc::from("worker")];
        let mut e = RuleEngine::new(vec![r], 3);
        let evs: Vec<Event> = (0..10)
            .map(|i| ev("crash", 0, &[("worker", &format!("w{i}"))]))
            .collect();
        run(&mut e, &evs, 0);
        assert_eq!(e.series(), 4, "3 groups plus the overflow group");
        assert_eq!(e.overflowed, 7);
    }

    #[test]
    fn idle_groups_are_forgotten() {
        let mut r = count_rule(5.0);
        r.group_by = vec![Arc::from("worker")];
        let mut e = RuleEngine::new(vec![r], 100);
        run(&mut e, &[ev("crash", 0, &[("worker", "a")])], 0);
        assert_eq!(e.series(), 1);
        run(&mut e, &[], 120);
        assert_eq!(e.series(), 0);
    }

    #[test]
    fn evidence_keeps_first_and_last_lines() {
        let mut e = RuleEngine::new(vec![count_rule(5.0)], 100);
        let evs: Vec<Event> = (0..10).map(|i| ev("crash", i, &[])).collect();
        let mut out = Vec::new();
        for x in &evs {
            e.observe(x, &mut out);
        }
        e.evaluate(at(10), &mut out);
        assert_eq!(
            out[0].evidence,
            vec![
                "crash at 0",
                "crash at 1",
                "crash at 7",
                "crash at 8",
                "crash at 9"
            ]
        );
    }

    #[test]
    fn truncate_chars_marks_cut() {
        assert_eq!(truncate_chars("héllo", 2), "hé…");
        assert_eq!(truncate_chars("hi", 2), "hi");
    }
}

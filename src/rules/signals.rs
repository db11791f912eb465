//! Rules over signals other than event counts, kept beside the count/ratio engine and driven
//! by the same [`RuleEngine`](super::RuleEngine):
//!
//! - `gauge`: a queue metric (`depth`, `age`, `pending`, `lag`) summed per group (`age`: the
//!   maximum), or the depth's `growth` per minute over a window, compared with a threshold;
//! - `absent`: no events of `kinds` (or no lines at all) from a source for `for`: the silent
//!   worker, the missing heartbeat;
//! - `all`: a conjunction of other rules' conditions for the same group (stalled workers =
//!   depth > 0 and nothing processed);
//! - `queue_source_down` (built in): a `[[queue]]` has not been polled for its `down_after`.
//!
//! Pure like the rest of the engine: samples, line counts and health changes carry their own
//! time, and `evaluate(now)` decides.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use super::{Alert, AlertState, Op, Phase, RuleKind, RuleSpec, RuleState};
use crate::event::{Event, Labels, Ts};
use crate::queues::{label, Health, Metric, SampleBatch};

/// What a `gauge` rule compares.
#[derive(Debug, Clone, PartialEq)]
pub enum GaugeMetric {
    /// The latest value of a metric, summed over the group's series (`age`: the maximum).
    Value(Metric),
    /// Change of the summed depth per minute over `window`.
    Growth {
        /// Span the growth is measured over.
        window: Duration,
    },
}

impl GaugeMetric {
    fn name(&self) -> &'static str {
        match self {
            GaugeMetric::Value(m) => m.as_str(),
            GaugeMetric::Growth { .. } => "growth",
        }
    }

    fn source_metric(&self) -> Metric {
        match self {
            GaugeMetric::Value(m) => *m,
            GaugeMetric::Growth { .. } => Metric::Depth,
        }
    }
}

/// A `gauge` rule's selection.
#[derive(Debug, Clone, PartialEq)]
pub struct GaugeSpec {
    /// What is compared.
    pub metric: GaugeMetric,
    /// Only series whose `part` is one of these; empty = all.
    pub parts: Vec<Arc<str>>,
}

/// How one rule's groups look from an `all` rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Component {
    /// Index into the count/ratio rules.
    Count(usize),
    /// Index into the signal rules.
    Signal(usize),
}

#[derive(Debug)]
struct GaugeGroup {
    labels: Labels,
    /// Latest value (and the batch generation that set it) per source and series labels.
    series: HashMap<Arc<str>, HashMap<Labels, (f64, u64)>>,
    /// Group value after each update, for growth.
    history: VecDeque<(Ts, f64)>,
    phase: Phase,
    dirty: bool,
}

#[derive(Debug)]
struct AbsentGroup {
    labels: Labels,
    last_seen: Ts,
    phase: Phase,
    dirty: bool,
}

#[derive(Debug)]
struct DownState {
    down_since: Option<Ts>,
    down_after: Duration,
    error: Option<String>,
    firing_since: Option<Ts>,
    dirty: bool,
}

#[derive(Debug)]
enum State {
    Gauge(HashMap<Labels, GaugeGroup>),
    Absent {
        groups: HashMap<Labels, AbsentGroup>,
        started: bool,
    },
    All {
        components: Vec<Component>,
        groups: HashMap<Labels, Phase>,
    },
    Down(HashMap<Arc<str>, DownState>),
}

struct SignalRule {
    spec: RuleSpec,
    state: State,
}

/// The signal rules of an engine.
pub(super) struct Signals {
    rules: Vec<SignalRule>,
    /// Sample batches seen: tells the series of the latest batch from older ones.
    generation: u64,
}

/// True for the rule kinds this module evaluates.
pub(super) fn is_signal(kind: &RuleKind) -> bool {
    matches!(
        kind,
        RuleKind::Gauge(_) | RuleKind::Absent { .. } | RuleKind::All { .. } | RuleKind::SourceDown
    )
}

impl Signals {
    /// Builds the states; `count_rules` resolves `all` components among the count/ratio rules.
    pub(super) fn new(specs: Vec<RuleSpec>, count_rules: &[RuleState]) -> Signals {
        let names: Vec<Arc<str>> = specs.iter().map(|s| s.name.clone()).collect();
        let rules = specs
            .into_iter()
            .map(|spec| {
                let state = match &spec.kind {
                    RuleKind::Gauge(_) => State::Gauge(HashMap::new()),
                    RuleKind::Absent { .. } => State::Absent {
                        groups: HashMap::new(),
                        started: false,
                    },
                    RuleKind::All { rules } => State::All {
                        components: rules
                            .iter()
                            .filter_map(|r| {
                                count_rules
                                    .iter()
                                    .position(|c| &c.spec.name == r)
                                    .map(Component::Count)
                                    .or_else(|| {
                                        names.iter().position(|n| n == r).map(Component::Signal)
                                    })
                            })
                            .collect(),
                        groups: HashMap::new(),
                    },
                    _ => State::Down(HashMap::new()),
                };
                SignalRule { spec, state }
            })
            .collect();
        Signals {
            rules,
            generation: 0,
        }
    }

    /// Takes over the state of `old`'s rules whose spec equals one of ours (a config
    /// reload); `all` rules keep their groups but their components are resolved anew.
    /// Returns the names of the rules taken over.
    pub(super) fn adopt(&mut self, old: &mut Signals) -> Vec<Arc<str>> {
        let mut kept = Vec::new();
        for r in &mut self.rules {
            let Some(o) = old.rules.iter_mut().find(|o| o.spec == r.spec) else {
                continue;
            };
            match (&mut r.state, &mut o.state) {
                (State::All { groups, .. }, State::All { groups: old, .. }) => {
                    *groups = std::mem::take(old);
                }
                (new, old) => std::mem::swap(new, old),
            }
            kept.push(r.spec.name.clone());
        }
        self.generation = old.generation;
        kept
    }

    /// Windows held (for the series count).
    pub(super) fn series(&self) -> usize {
        self.rules
            .iter()
            .map(|r| match &r.state {
                State::Gauge(g) => g.len(),
                State::Absent { groups, .. } => groups.len(),
                State::All { groups, .. } => groups.len(),
                State::Down(d) => d.len(),
            })
            .sum()
    }

    /// An event refreshes `absent` rules that watch its kind.
    pub(super) fn observe_event(&mut self, ev: &Event) {
        for r in &mut self.rules {
            let (RuleKind::Absent { kinds }, State::Absent { groups, .. }) =
                (&r.spec.kind, &mut r.state)
            else {
                continue;
            };
            if kinds.is_empty() || !kinds.contains(&ev.kind) || !r.spec.matches(ev) {
                continue;
            }
            seen(groups, &r.spec, &ev.source, &ev.labels, ev.ts);
        }
    }

    /// Lines read from `source` (with its static labels) refresh `absent` rules without kinds.
    pub(super) fn observe_lines(&mut self, source: &Arc<str>, labels: &Labels, at: Ts) {
        for r in &mut self.rules {
            let (RuleKind::Absent { kinds }, State::Absent { groups, .. }) =
                (&r.spec.kind, &mut r.state)
            else {
                continue;
            };
            if !kinds.is_empty() || !(r.spec.sources.is_empty() || r.spec.sources.contains(source))
            {
                continue;
            }
            seen(groups, &r.spec, source, labels, at);
        }
    }

    /// Queue samples update the `gauge` rules.
    pub(super) fn observe_samples(&mut self, batch: &SampleBatch) {
        self.generation += 1;
        let gen = self.generation;
        for r in &mut self.rules {
            let (RuleKind::Gauge(g), State::Gauge(groups)) = (&r.spec.kind, &mut r.state) else {
                continue;
            };
            let spec = &r.spec;
            if !(spec.sources.is_empty() || spec.sources.contains(&batch.source)) {
                continue;
            }
            let metric = g.metric.source_metric();
            for s in &batch.samples {
                if s.metric != metric
                    || !(g.parts.is_empty()
                        || s.labels
                            .get(label::PART)
                            .is_some_and(|p| g.parts.iter().any(|x| x.as_ref() == p)))
                    || !spec
                        .matchers
                        .iter()
                        .all(|(k, v)| s.labels.get(k) == Some(v.as_str()))
                {
                    continue;
                }
                let grp = groups
                    .entry(s.labels.project(&spec.group_by))
                    .or_insert_with_key(|key| GaugeGroup {
                        labels: key.clone(),
                        series: HashMap::new(),
                        history: VecDeque::new(),
                        phase: Phase::Inactive,
                        dirty: false,
                    });
                let per = grp.series.entry(batch.source.clone()).or_default();
                // Updating in place: no allocation per series and poll.
                match per.get_mut(&s.labels) {
                    Some(v) => *v = (s.value, gen),
                    None => {
                        per.insert(s.labels.clone(), (s.value, gen));
                    }
                }
                grp.dirty = true;
            }
            if batch.complete {
                // A poll holds every series of its source: the ones it lacks are gone.
                for grp in groups.values_mut() {
                    if let Some(per) = grp.series.get_mut(&batch.source) {
                        let before = per.len();
                        per.retain(|_, (_, g)| *g == gen);
                        grp.dirty |= per.len() != before;
                        if per.is_empty() {
                            grp.series.remove(&batch.source);
                        }
                    }
                }
            }
            for grp in groups.values_mut().filter(|g| g.dirty) {
                if let (GaugeMetric::Growth { window }, Some(v)) =
                    (&g.metric, group_value(metric, &grp.series))
                {
                    grp.history.push_back((batch.at, v));
                    // Keep one point at or before the window start as the baseline.
                    while grp.history.len() > 2 && batch.at.since(grp.history[1].0) >= *window {
                        grp.history.pop_front();
                    }
                }
            }
        }
    }

    /// A queue source went down or came back.
    pub(super) fn observe_health(&mut self, h: &Health) {
        for r in &mut self.rules {
            if let State::Gauge(groups) = &mut r.state {
                if !h.up {
                    // Its depths are unknown now, not frozen at the last poll: gauges of
                    // that source keep their state until polling works again.
                    for g in groups.values_mut() {
                        g.series.remove(&h.source);
                    }
                }
                continue;
            }
            let State::Down(states) = &mut r.state else {
                continue;
            };
            let st = states.entry(h.source.clone()).or_insert(DownState {
                down_since: None,
                down_after: h.down_after,
                error: None,
                firing_since: None,
                dirty: false,
            });
            st.down_after = h.down_after;
            if h.up {
                st.down_since = None;
            } else if st.down_since.is_none() {
                st.down_since = Some(h.at);
                st.error = h.error.clone();
            }
            st.dirty = true;
        }
    }

    /// Decides the signal rules at `now`. `all` rules are decided only on full evaluations
    /// (`only_touched` false): they depend on time as much as on input.
    pub(super) fn evaluate(
        &mut self,
        now: Ts,
        started: Ts,
        only_touched: bool,
        count_rules: &[RuleState],
        out: &mut Vec<Alert>,
    ) {
        for i in 0..self.rules.len() {
            let (before, rest) = self.rules.split_at_mut(i);
            let (r, after) = rest.split_first_mut().expect("index in range");
            let spec = &r.spec;
            match (&spec.kind, &mut r.state) {
                (RuleKind::Gauge(g), State::Gauge(groups)) => {
                    for grp in groups.values_mut() {
                        if only_touched && !grp.dirty {
                            continue;
                        }
                        grp.dirty = false;
                        let Some((value, meaningful)) = gauge_value(g, grp) else {
                            continue; // no data (source down): the state stands
                        };
                        let holds = meaningful && spec.op.holds(value, spec.threshold);
                        let still =
                            holds || (meaningful && spec.clear_below.is_some_and(|c| value >= c));
                        let ev = || gauge_evidence(spec, g, grp);
                        grp.phase = step(
                            spec,
                            grp.phase,
                            holds,
                            still,
                            now,
                            spec.for_,
                            value,
                            &grp.labels,
                            &ev,
                            out,
                        );
                    }
                    groups
                        .retain(|_, grp| !(grp.series.is_empty() && grp.phase == Phase::Inactive));
                }
                (RuleKind::Absent { .. }, State::Absent { groups, started }) => {
                    if !*started {
                        *started = true;
                        // Configured sources are watched from the start, heard from or not.
                        if spec.group_by.is_empty() {
                            for s in &spec.sources {
                                let key = Labels::from_pairs([("source", s.clone())]);
                                groups.entry(key.clone()).or_insert(AbsentGroup {
                                    labels: key,
                                    last_seen: now,
                                    phase: Phase::Inactive,
                                    dirty: true,
                                });
                            }
                        }
                    }
                    for grp in groups.values_mut() {
                        if only_touched && !grp.dirty {
                            continue;
                        }
                        grp.dirty = false;
                        let silent = now.since(grp.last_seen);
                        let holds = silent >= spec.for_;
                        let value = silent.as_secs_f64();
                        let last = grp.last_seen;
                        let ev = || vec![format!("nothing since {last}")];
                        grp.phase = step(
                            spec,
                            grp.phase,
                            holds,
                            holds,
                            now,
                            Duration::ZERO,
                            value,
                            &grp.labels,
                            &ev,
                            out,
                        );
                    }
                }
                (RuleKind::All { .. }, State::All { components, groups }) => {
                    if only_touched {
                        continue;
                    }
                    let mut per: Vec<Vec<(Labels, bool)>> = Vec::new();
                    let mut empty_holds = Vec::new();
                    for c in components.iter() {
                        let (conds, at_empty) = match *c {
                            Component::Count(j) => {
                                let rs = &count_rules[j];
                                // A rule with no group has seen no event: its value is 0, which
                                // means something once the daemon has watched a whole window.
                                let watched = rs.spec.window().unwrap_or_default() + rs.spec.for_;
                                (
                                    rs.conditions(),
                                    rs.spec.op.holds(0.0, rs.spec.threshold)
                                        && now.since(started) >= watched,
                                )
                            }
                            Component::Signal(j) if j < i => (before[j].conditions(), false),
                            Component::Signal(j) if j > i => (after[j - i - 1].conditions(), false),
                            Component::Signal(_) => (Vec::new(), false),
                        };
                        per.push(
                            conds
                                .into_iter()
                                .map(|(l, h)| (l.project(&spec.group_by), h))
                                .collect(),
                        );
                        empty_holds.push(at_empty);
                    }
                    let mut candidates: Vec<Labels> =
                        per.iter().flatten().map(|(l, _)| l.clone()).collect();
                    candidates.extend(groups.keys().cloned());
                    if spec.group_by.is_empty() {
                        candidates.push(Labels::new());
                    }
                    candidates.sort();
                    candidates.dedup();
                    for key in candidates {
                        let holds = !per.is_empty()
                            && per.iter().zip(&empty_holds).all(|(conds, at_empty)| {
                                let mine: Vec<bool> = conds
                                    .iter()
                                    .filter(|(l, _)| *l == key)
                                    .map(|(_, h)| *h)
                                    .collect();
                                if mine.is_empty() {
                                    *at_empty
                                } else {
                                    mine.contains(&true)
                                }
                            });
                        let phase = groups.get(&key).copied().unwrap_or(Phase::Inactive);
                        let names: Vec<&str> = match &spec.kind {
                            RuleKind::All { rules } => rules.iter().map(|r| r.as_ref()).collect(),
                            _ => Vec::new(),
                        };
                        let ev = || vec![format!("all of {} held", names.join(", "))];
                        let next = step(
                            spec,
                            phase,
                            holds,
                            holds,
                            now,
                            spec.for_,
                            f64::from(u8::from(holds)),
                            &key,
                            &ev,
                            out,
                        );
                        if next == Phase::Inactive {
                            groups.remove(&key);
                        } else {
                            groups.insert(key, next);
                        }
                    }
                }
                (RuleKind::SourceDown, State::Down(states)) => {
                    for (source, st) in states.iter_mut() {
                        if only_touched && !st.dirty {
                            continue;
                        }
                        st.dirty = false;
                        let labels = Labels::from_pairs([("source", source.clone())]);
                        let down_for = st.down_since.map(|d| now.since(d));
                        let alert = |state, since: Ts| Alert {
                            rule: spec.name.clone(),
                            rule_type: spec.type_name(),
                            labels: labels.clone(),
                            state,
                            severity: spec.severity,
                            value: down_for.unwrap_or_default().as_secs_f64(),
                            threshold: st.down_after.as_secs_f64(),
                            op: Op::Ge,
                            window_secs: None,
                            count: 0,
                            total: None,
                            at: now,
                            since,
                            summary: spec.summary.clone(),
                            evidence: st.error.iter().cloned().collect(),
                            backfill: false,
                            context: Vec::new(),
                        };
                        match (down_for, st.firing_since) {
                            (Some(d), None) if d >= st.down_after => {
                                out.push(alert(AlertState::Firing, now));
                                st.firing_since = Some(now);
                            }
                            (None, Some(since)) => {
                                out.push(alert(AlertState::Resolved, since));
                                st.firing_since = None;
                            }
                            _ => {}
                        }
                    }
                }
                _ => {}
            }
        }
    }

    /// Pending and firing alerts.
    pub(super) fn active(&self, out: &mut Vec<super::ActiveAlert>) {
        for r in &self.rules {
            let mut push = |labels: &Labels, phase: Phase| {
                let (state, since) = match phase {
                    Phase::Inactive => return,
                    Phase::Pending { since } => ("pending", since),
                    Phase::Firing { since, .. } => ("firing", since),
                };
                out.push(super::ActiveAlert {
                    rule: r.spec.name.clone(),
                    labels: labels.clone(),
                    state,
                    since,
                    severity: r.spec.severity,
                });
            };
            match &r.state {
                State::Gauge(g) => g.values().for_each(|x| push(&x.labels, x.phase)),
                State::Absent { groups, .. } => {
                    groups.values().for_each(|x| push(&x.labels, x.phase))
                }
                State::All { groups, .. } => groups.iter().for_each(|(l, p)| push(l, *p)),
                State::Down(d) => {
                    for (s, st) in d {
                        if let Some(since) = st.firing_since {
                            let l = Labels::from_pairs([("source", s.clone())]);
                            push(
                                &l,
                                Phase::Firing {
                                    since,
                                    last_true: since,
                                },
                            );
                        }
                    }
                }
            }
        }
    }
}

impl SignalRule {
    /// `(group labels, firing)` for `all` rules: a component counts once its own `for` held.
    fn conditions(&self) -> Vec<(Labels, bool)> {
        let firing = |p: &Phase| matches!(p, Phase::Firing { .. });
        match &self.state {
            State::Gauge(groups) => groups
                .values()
                .map(|g| (g.labels.clone(), firing(&g.phase)))
                .collect(),
            State::Absent { groups, .. } => groups
                .values()
                .map(|g| (g.labels.clone(), firing(&g.phase)))
                .collect(),
            _ => Vec::new(),
        }
    }
}

fn seen(
    groups: &mut HashMap<Labels, AbsentGroup>,
    spec: &RuleSpec,
    source: &Arc<str>,
    labels: &Labels,
    at: Ts,
) {
    let mut key = labels.project(&spec.group_by);
    key.insert(Arc::from("source"), source.clone());
    let g = groups.entry(key.clone()).or_insert(AbsentGroup {
        labels: key,
        last_seen: at,
        phase: Phase::Inactive,
        dirty: true,
    });
    if at > g.last_seen {
        g.last_seen = at;
    }
    g.dirty = true;
}

fn group_value(
    metric: Metric,
    series: &HashMap<Arc<str>, HashMap<Labels, (f64, u64)>>,
) -> Option<f64> {
    if series.is_empty() {
        return None;
    }
    let vals = series.values().flat_map(|m| m.values().map(|(v, _)| *v));
    Some(match metric {
        Metric::Age => vals.fold(0.0, f64::max),
        _ => vals.sum(),
    })
}

/// `(value, meaningful)`, or `None` without data.
fn gauge_value(g: &GaugeSpec, grp: &GaugeGroup) -> Option<(f64, bool)> {
    match &g.metric {
        GaugeMetric::Value(m) => group_value(*m, &grp.series).map(|v| (v, true)),
        GaugeMetric::Growth { window } => {
            group_value(Metric::Depth, &grp.series)?;
            let (first, last) = (grp.history.front()?, grp.history.back()?);
            let span = last.0.since(first.0);
            // Growth over less than half the window says little: not evaluated yet.
            if span < *window / 2 || span.is_zero() {
                return Some((0.0, false));
            }
            Some(((last.1 - first.1) / (span.as_secs_f64() / 60.0), true))
        }
    }
}

/// A headline (`depth 150 (threshold > 100)`, `growth 12.5/min (threshold > 10) over 10m`) and
/// the largest series.
fn gauge_evidence(spec: &RuleSpec, g: &GaugeSpec, grp: &GaugeGroup) -> Vec<String> {
    let mut head = match gauge_value(g, grp) {
        Some((v, true)) => format!(
            "{} {}{} (threshold {} {})",
            g.metric.name(),
            num(v),
            if matches!(g.metric, GaugeMetric::Growth { .. }) {
                "/min"
            } else {
                ""
            },
            spec.op.as_str(),
            num(spec.threshold)
        ),
        _ => format!("{} unknown", g.metric.name()),
    };
    if let GaugeMetric::Growth { window } = &g.metric {
        head.push_str(&format!(
            " over {}",
            crate::notify::short_duration(window.as_secs())
        ));
    }
    let mut s: Vec<(&Labels, f64)> = grp
        .series
        .values()
        .flat_map(|m| m.iter().map(|(l, (v, _))| (l, *v)))
        .collect();
    s.sort_by(|a, b| b.1.total_cmp(&a.1).then_with(|| a.0.cmp(b.0)));
    let metric = g.metric.source_metric().as_str();
    std::iter::once(head)
        .chain(s.iter().take(4).map(|(l, v)| {
            let key = l.get(label::KEY).unwrap_or("?");
            let part = l.get(label::PART).unwrap_or("?");
            let group = l
                .get(label::GROUP)
                .map(|g| format!(" group {g}"))
                .unwrap_or_default();
            format!("{key:?} ({part}{group}) {metric} {}", num(*v))
        }))
        .collect()
}

fn num(v: f64) -> String {
    if v.fract() == 0.0 && v.abs() < 1e15 {
        format!("{v:.0}")
    } else {
        format!("{v:.2}")
    }
}

/// The lifecycle inactive → pending → firing → resolved for one group; pushes changes.
#[allow(clippy::too_many_arguments)]
fn step(
    spec: &RuleSpec,
    phase: Phase,
    holds: bool,
    still: bool,
    now: Ts,
    for_: Duration,
    value: f64,
    labels: &Labels,
    evidence: &dyn Fn() -> Vec<String>,
    out: &mut Vec<Alert>,
) -> Phase {
    let mut emit = |state, since| {
        if spec.notify {
            out.push(Alert {
                rule: spec.name.clone(),
                rule_type: spec.type_name(),
                labels: labels.clone(),
                state,
                severity: spec.severity,
                value,
                threshold: spec.threshold,
                op: spec.op,
                window_secs: None,
                count: value.max(0.0).round() as u64,
                total: None,
                at: now,
                since,
                summary: spec.summary.clone(),
                evidence: evidence(),
                backfill: false,
                context: Vec::new(),
            });
        }
    };
    match phase {
        Phase::Inactive if holds && for_.is_zero() => {
            emit(AlertState::Firing, now);
            Phase::Firing {
                since: now,
                last_true: now,
            }
        }
        Phase::Inactive if holds => Phase::Pending { since: now },
        Phase::Inactive => Phase::Inactive,
        Phase::Pending { since } if holds => {
            if now.since(since) >= for_ {
                emit(AlertState::Firing, now);
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
            if still {
                Phase::Firing {
                    since,
                    last_true: now,
                }
            } else if now.since(last_true) >= spec.keep_firing_for {
                emit(AlertState::Resolved, since);
                Phase::Inactive
            } else {
                Phase::Firing { since, last_true }
            }
        }
    }
}

type FieldErr = (String, String);

/// Validates the fields of `gauge`, `absent` and `all` rules (called by [`super::validate`]).
pub(super) fn signals_kind(
    r: &super::RawRule,
    kinds: Vec<Arc<str>>,
    field: &dyn Fn(&str) -> String,
    only: &dyn Fn(&str, bool, &str) -> Result<(), FieldErr>,
) -> Result<RuleKind, FieldErr> {
    only("of", r.of.is_some(), "\"ratio\"")?;
    only("min_events", r.min_events.is_some(), "\"ratio\"")?;
    match r.kind.as_str() {
        "gauge" => {
            only(
                "kinds",
                !r.kinds.is_empty(),
                "\"count\", \"ratio\", \"any\" or \"absent\"",
            )?;
            only("patterns", !r.patterns.is_empty(), "log rules")?;
            let metric = match r.metric.as_deref().unwrap_or("depth") {
                "depth" => GaugeMetric::Value(Metric::Depth),
                "age" => GaugeMetric::Value(Metric::Age),
                "pending" => GaugeMetric::Value(Metric::Pending),
                "lag" => GaugeMetric::Value(Metric::Lag),
                "growth" => match r.window {
                    Some(w) if w >= Duration::from_secs(1) => GaugeMetric::Growth { window: w },
                    Some(w) => {
                        return Err((field("window"), format!("must be at least 1s, got {w:?}")))
                    }
                    None => {
                        return Err((
                            field("window"),
                            "is required for metric = \"growth\", e.g. window = \"10m\"".into(),
                        ))
                    }
                },
                other => {
                    return Err((
                        field("metric"),
                        format!("unknown metric {other:?} (expected \"depth\", \"growth\", \"age\", \"pending\" or \"lag\")"),
                    ))
                }
            };
            if !matches!(metric, GaugeMetric::Growth { .. }) {
                only(
                    "window",
                    r.window.is_some(),
                    "\"count\", \"ratio\" and gauges with metric = \"growth\"",
                )?;
            }
            let mut parts = Vec::new();
            for (i, p) in r.parts.iter().enumerate() {
                if !crate::queues::PARTS.contains(&p.as_str()) {
                    return Err((
                        field(&format!("parts[{i}]")),
                        format!(
                            "unknown part {p:?} (expected one of {})",
                            crate::queues::PARTS.join(", ")
                        ),
                    ));
                }
                parts.push(Arc::from(p.as_str()));
            }
            Ok(RuleKind::Gauge(GaugeSpec { metric, parts }))
        }
        "absent" => {
            let why = "\"count\", \"ratio\" or \"gauge\"";
            only("window", r.window.is_some(), why)?;
            only("threshold", r.threshold.is_some(), why)?;
            only("op", r.op.is_some(), why)?;
            only("clear_below", r.clear_below.is_some(), why)?;
            match r.for_ {
                Some(f) if !f.is_zero() => Ok(RuleKind::Absent { kinds }),
                _ => Err((
                    field("for"),
                    "is required for an absent rule: how long a source may stay silent, e.g. for = \"10m\"".into(),
                )),
            }
        }
        _ => {
            let why = "\"count\", \"ratio\" or \"gauge\"";
            only(
                "kinds",
                !r.kinds.is_empty(),
                "\"count\", \"ratio\", \"any\" or \"absent\"",
            )?;
            only("window", r.window.is_some(), why)?;
            only("threshold", r.threshold.is_some(), why)?;
            only("op", r.op.is_some(), why)?;
            only("clear_below", r.clear_below.is_some(), why)?;
            match &r.rules {
                Some(names) if !names.is_empty() => Ok(RuleKind::All {
                    rules: names.iter().map(|n| Arc::from(n.as_str())).collect(),
                }),
                _ => Err((
                    field("rules"),
                    "is required: the rules that must all fire, e.g. rules = [\"queue-not-empty\", \"no-jobs-processed\"]".into(),
                )),
            }
        }
    }
}

/// Checks that every `all` rule names existing count, ratio, gauge or absent rules (not
/// itself), whose `group_by` includes the `all` rule's. Errors name the rule's field.
pub fn check_all_rules(rules: &[RuleSpec]) -> Result<(), FieldErr> {
    for (i, r) in rules.iter().enumerate() {
        let RuleKind::All { rules: names } = &r.kind else {
            continue;
        };
        for (j, n) in names.iter().enumerate() {
            let at = format!("rule[{i}] {:?}.rules[{j}]", r.name);
            let Some(c) = rules.iter().find(|c| &c.name == n) else {
                let known: Vec<&str> = rules.iter().map(|c| c.name.as_ref()).collect();
                return Err((
                    at,
                    format!("unknown rule {n:?} (known: {})", known.join(", ")),
                ));
            };
            if !matches!(
                c.kind,
                RuleKind::Count { .. }
                    | RuleKind::Ratio { .. }
                    | RuleKind::Gauge(_)
                    | RuleKind::Absent { .. }
            ) {
                return Err((
                    at,
                    format!("{n:?} is of type {}; an all rule combines count, ratio, gauge and absent rules", c.type_name()),
                ));
            }
            if let Some(g) = r.group_by.iter().find(|g| !c.group_by.contains(g)) {
                return Err((
                    at,
                    format!("{n:?} is not grouped by {g:?}, which this rule's group_by needs"),
                ));
            }
        }
    }
    Ok(())
}

fn rule(
    name: &str,
    kind: RuleKind,
    threshold: f64,
    severity: super::Severity,
    summary: &str,
) -> RuleSpec {
    let mut r = super::default_rules().remove(0);
    r.name = Arc::from(name);
    r.kind = kind;
    r.threshold = threshold;
    r.severity = severity;
    r.summary = Some(summary.to_string());
    r
}

/// The default queue rules, added to the defaults when a `[[queue]]` is configured and no
/// `[[rule]]` is: backlog > 100 for 10m (warning, per queue), and stalled workers (critical):
/// waiting jobs for 5 minutes and nothing processed in 5 minutes.
pub fn queue_default_rules() -> Vec<RuleSpec> {
    let waiting = || GaugeSpec {
        metric: GaugeMetric::Value(Metric::Depth),
        parts: vec![Arc::from("waiting")],
    };
    let mut backlog = rule(
        "queue-backlog",
        RuleKind::Gauge(waiting()),
        100.0,
        super::Severity::Warning,
        "more than 100 jobs waiting for 10 minutes",
    );
    backlog.for_ = Duration::from_secs(600);
    backlog.group_by = vec![Arc::from(label::QUEUE)];
    let mut not_empty = rule(
        "queue-not-empty",
        RuleKind::Gauge(waiting()),
        0.0,
        super::Severity::Info,
        "jobs have been waiting for 5 minutes",
    );
    not_empty.for_ = Duration::from_secs(300);
    not_empty.notify = false;
    let mut idle = rule(
        "no-jobs-processed",
        RuleKind::Count {
            kinds: vec![Arc::from("processed")],
            window: Duration::from_secs(300),
        },
        1.0,
        super::Severity::Info,
        "no job finished in 5 minutes",
    );
    idle.op = Op::Lt;
    idle.notify = false;
    let stalled = rule(
        "stalled-workers",
        RuleKind::All {
            rules: vec![Arc::from("queue-not-empty"), Arc::from("no-jobs-processed")],
        },
        0.0,
        super::Severity::Critical,
        "jobs are waiting but no worker finished one in 5 minutes",
    );
    vec![backlog, not_empty, idle, stalled]
}

/// The built-in rule behind `queue_source_down` alerts (critical), present whenever a
/// `[[queue]]` is configured; each queue's `down_after` is its delay.
pub fn queue_source_down_rule() -> RuleSpec {
    rule(
        "queue_source_down",
        RuleKind::SourceDown,
        0.0,
        super::Severity::Critical,
        "a Redis queue source cannot be polled",
    )
}

#[cfg(test)]
mod tests {
    use super::super::{AlertState, RuleEngine, RuleKind, RuleSpec};
    use super::*;
    use crate::queues::{series_labels, Sample};

    const T0: u64 = 1_795_428_000;

    fn at(secs: u64) -> Ts {
        Ts::from_secs(T0 + secs)
    }

    fn batch(secs: u64, depths: &[(&str, f64)]) -> SampleBatch {
        SampleBatch {
            source: Arc::from("redis"),
            at: at(secs),
            samples: depths
                .iter()
                .map(|(k, v)| Sample {
                    labels: series_labels(k, k, "waiting"),
                    metric: Metric::Depth,
                    value: *v,
                })
                .collect(),
            complete: true,
        }
    }

    fn changes(e: &mut RuleEngine, secs: u64) -> Vec<(AlertState, String)> {
        let mut out = Vec::new();
        e.evaluate(at(secs), &mut out);
        out.iter()
            .map(|a| (a.state, format!("{}{}", a.rule, a.labels)))
            .collect()
    }

    fn gauge(name: &str, threshold: f64, for_secs: u64) -> RuleSpec {
        let mut r = rule(
            name,
            RuleKind::Gauge(GaugeSpec {
                metric: GaugeMetric::Value(Metric::Depth),
                parts: vec![Arc::from("waiting")],
            }),
            threshold,
            crate::rules::Severity::Warning,
            "backlog",
        );
        r.for_ = Duration::from_secs(for_secs);
        r
    }

    #[test]
    fn gauge_backlog_fires_after_for_and_resolves_when_drained() {
        let mut e = RuleEngine::new(vec![gauge("backlog", 100.0, 600)], 100);
        e.observe_samples(&batch(0, &[("a", 80.0), ("b", 30.0)]));
        assert!(changes(&mut e, 0).is_empty(), "110 > 100: pending");
        assert_eq!(e.active()[0].state, "pending");
        e.observe_samples(&batch(599, &[("a", 90.0), ("b", 30.0)]));
        assert!(changes(&mut e, 599).is_empty());
        e.observe_samples(&batch(600, &[("a", 90.0), ("b", 30.0)]));
        assert_eq!(
            changes(&mut e, 600),
            vec![(AlertState::Firing, "backlog".into())]
        );
        // Key b vanished from the poll (complete batch): 90 is not > 100.
        e.observe_samples(&batch(605, &[("a", 90.0)]));
        assert_eq!(
            changes(&mut e, 605),
            vec![(AlertState::Resolved, "backlog".into())]
        );
    }

    #[test]
    fn gauge_alert_says_value_threshold_and_largest_series() {
        let mut e = RuleEngine::new(vec![gauge("backlog", 100.0, 0)], 100);
        e.observe_samples(&batch(0, &[("a", 80.0), ("b", 30.5)]));
        let mut out = Vec::new();
        e.evaluate(at(0), &mut out);
        assert_eq!(
            out[0].evidence,
            vec![
                "depth 110.50 (threshold > 100)".to_string(),
                "\"a\" (waiting) depth 80".to_string(),
                "\"b\" (waiting) depth 30.50".to_string(),
            ]
        );
        assert_eq!(out[0].value, 110.5);
        assert_eq!(out[0].rule_type, "gauge");
    }

    #[test]
    fn gauge_holds_its_state_while_the_source_is_down() {
        let mut e = RuleEngine::new(vec![gauge("backlog", 10.0, 0)], 100);
        e.observe_samples(&batch(0, &[("a", 50.0)]));
        assert_eq!(changes(&mut e, 0).len(), 1);
        // An empty complete batch (every key gone) leaves no data: no false "resolved".
        e.observe_samples(&SampleBatch {
            samples: Vec::new(),
            ..batch(5, &[])
        });
        assert!(changes(&mut e, 5).is_empty());
        assert_eq!(e.active()[0].state, "firing");
    }

    #[test]
    fn gauge_does_not_fire_on_stale_depths_while_the_source_is_down() {
        let mut e = RuleEngine::new(vec![gauge("backlog", 10.0, 60)], 100);
        e.observe_samples(&batch(0, &[("a", 50.0)]));
        assert!(changes(&mut e, 0).is_empty(), "pending");
        e.observe_health(&Health {
            source: Arc::from("redis"),
            up: false,
            at: at(5),
            down_after: Duration::from_secs(30),
            error: None,
        });
        // 60 s later the last known depth would have fired; unknown depths do not.
        assert!(changes(&mut e, 120).is_empty());
        e.observe_samples(&batch(125, &[("a", 50.0)]));
        assert_eq!(
            changes(&mut e, 125)[0].0,
            AlertState::Firing,
            "held since 0"
        );
    }

    #[test]
    fn gauge_growth_per_minute() {
        let mut r = gauge("growing", 10.0, 0);
        r.kind = RuleKind::Gauge(GaugeSpec {
            metric: GaugeMetric::Growth {
                window: Duration::from_secs(120),
            },
            parts: Vec::new(),
        });
        let mut e = RuleEngine::new(vec![r], 100);
        e.observe_samples(&batch(0, &[("a", 0.0)]));
        e.observe_samples(&batch(30, &[("a", 100.0)]));
        assert!(changes(&mut e, 30).is_empty(), "30 s < half the window");
        e.observe_samples(&batch(60, &[("a", 15.0)]));
        // (15 - 0) / 1 min = 15/min > 10.
        assert_eq!(changes(&mut e, 60).len(), 1);
        e.observe_samples(&batch(240, &[("a", 15.0)]));
        e.observe_samples(&batch(300, &[("a", 15.0)]));
        assert_eq!(changes(&mut e, 300)[0].0, AlertState::Resolved);
    }

    fn ev(kind: &str, source: &str, secs: u64) -> Event {
        Event {
            ts: at(secs),
            source: Arc::from(source),
            kind: Arc::from(kind),
            pattern: Arc::from("p"),
            labels: Labels::new(),
            value: None,
            message: kind.into(),
            signature: None,
            line: None,
            lines: 1,
            record: None,
            folded: 0,
            backfill: false,
        }
    }

    #[test]
    fn absent_fires_for_a_silent_source_and_resolves_on_a_line() {
        let mut r = rule(
            "silent",
            RuleKind::Absent { kinds: Vec::new() },
            0.0,
            crate::rules::Severity::Warning,
            "silent",
        );
        r.for_ = Duration::from_secs(600);
        r.sources = vec![Arc::from("w1"), Arc::from("w2")];
        let mut e = RuleEngine::new(vec![r], 100);
        assert!(changes(&mut e, 0).is_empty());
        e.observe_lines(&Arc::from("w1"), &Labels::new(), at(300));
        assert!(changes(&mut e, 599).is_empty());
        // w2 never said anything since the start: silent for 600 s.
        assert_eq!(
            changes(&mut e, 600),
            vec![(AlertState::Firing, "silent{source=\"w2\"}".into())]
        );
        assert_eq!(
            changes(&mut e, 900),
            vec![(AlertState::Firing, "silent{source=\"w1\"}".into())]
        );
        e.observe_lines(&Arc::from("w2"), &Labels::new(), at(901));
        assert_eq!(
            changes(&mut e, 901),
            vec![(AlertState::Resolved, "silent{source=\"w2\"}".into())]
        );
    }

    #[test]
    fn absent_with_kinds_watches_only_those_events() {
        let mut r = rule(
            "no-heartbeat",
            RuleKind::Absent {
                kinds: vec![Arc::from("heartbeat")],
            },
            0.0,
            crate::rules::Severity::Warning,
            "hb",
        );
        r.for_ = Duration::from_secs(60);
        r.sources = vec![Arc::from("w")];
        let mut e = RuleEngine::new(vec![r], 100);
        let mut out = Vec::new();
        e.evaluate(at(0), &mut out);
        e.observe(&ev("processed", "w", 30), &mut out);
        e.observe(&ev("heartbeat", "w", 40), &mut out);
        assert!(changes(&mut e, 99).is_empty());
        e.observe(&ev("processed", "w", 100), &mut out);
        assert_eq!(changes(&mut e, 100).len(), 1, "other kinds do not count");
    }

    fn stalled_engine() -> RuleEngine {
        let mut rules = queue_default_rules();
        // Short for the test: waiting for 60 s, nothing processed in 60 s.
        rules[1].for_ = Duration::from_secs(60);
        rules[2].kind = RuleKind::Count {
            kinds: vec![Arc::from("processed")],
            window: Duration::from_secs(60),
        };
        RuleEngine::new(rules, 100)
    }

    #[test]
    fn stalled_workers_fire_and_resolve() {
        let mut e = stalled_engine();
        let mut out = Vec::new();
        e.evaluate(at(0), &mut out);
        e.observe(&ev("processed", "w", 0), &mut out);
        for s in 0..=120 {
            if s % 5 == 0 {
                e.observe_samples(&batch(s, &[("celery", 3.0)]));
            }
            let got = changes(&mut e, s);
            if s < 60 {
                assert!(got.is_empty(), "{s}: {got:?}");
            }
            if s == 60 {
                // Waiting for 60 s and the processed event at 0 left the 60 s window.
                assert_eq!(got, vec![(AlertState::Firing, "stalled-workers".into())]);
            }
        }
        // A worker finishes a job: resolved.
        e.observe(&ev("processed", "w", 121), &mut out);
        assert_eq!(
            changes(&mut e, 121),
            vec![(AlertState::Resolved, "stalled-workers".into())]
        );
        assert!(out.is_empty(), "helper rules send nothing: {out:?}");
    }

    #[test]
    fn stalled_workers_need_a_whole_window_after_start() {
        let mut e = stalled_engine();
        for s in 0..=59 {
            e.observe_samples(&batch(s, &[("celery", 3.0)]));
            assert!(changes(&mut e, s).is_empty(), "{s}");
        }
        // Queue drained: nothing fires even once the windows are full.
        e.observe_samples(&batch(60, &[("celery", 0.0)]));
        for s in 60..200 {
            assert!(changes(&mut e, s).is_empty(), "{s}");
        }
    }

    fn config_err(text: &str) -> String {
        crate::config::Config::from_str_named("t.toml", text, None)
            .map(|_| ())
            .expect_err("expected an error")
            .to_string()
    }

    const QUEUE: &str = "[[queue]]\nurl = \"redis://127.0.0.1:6379\"\nkeys = [\"q\"]\n";

    #[test]
    fn queue_defaults_only_without_user_rules() {
        let c = crate::config::Config::from_str_named("t.toml", QUEUE, None).unwrap();
        let names: Vec<&str> = c.rules.iter().map(|r| r.name.as_ref()).collect();
        assert_eq!(
            names,
            [
                "error-rate",
                "crash-frequency",
                "oom",
                "queue-backlog",
                "queue-not-empty",
                "no-jobs-processed",
                "stalled-workers",
                "queue_source_down"
            ]
        );
        let own = format!("{QUEUE}[[rule]]\nname = \"x\"\ntype = \"any\"\nkinds = [\"oom\"]\n");
        let c = crate::config::Config::from_str_named("t.toml", &own, None).unwrap();
        let names: Vec<&str> = c.rules.iter().map(|r| r.name.as_ref()).collect();
        assert_eq!(names, ["x", "queue_source_down"], "built-in stays");
        let c = crate::config::Config::from_str_named("t.toml", "", None).unwrap();
        assert_eq!(c.rules.len(), 3, "no queue: no queue rules");
    }

    #[test]
    fn signal_rule_errors_name_the_field_and_value() {
        let e = config_err(
            "[[rule]]\nname = \"g\"\ntype = \"gauge\"\nmetric = \"size\"\nthreshold = 1\n",
        );
        assert!(
            e.contains("t.toml: rule[0] \"g\".metric") && e.contains("\"size\""),
            "{e}"
        );
        let e = config_err(
            "[[rule]]\nname = \"g\"\ntype = \"gauge\"\nmetric = \"growth\"\nthreshold = 1\n",
        );
        assert!(e.contains("\"g\".window") && e.contains("growth"), "{e}");
        let e = config_err(
            "[[rule]]\nname = \"g\"\ntype = \"gauge\"\nparts = [\"busy\"]\nthreshold = 1\n",
        );
        assert!(
            e.contains("\"g\".parts[0]") && e.contains("\"busy\""),
            "{e}"
        );
        let e = config_err("[[rule]]\nname = \"a\"\ntype = \"absent\"\n");
        assert!(e.contains("\"a\".for") && e.contains("required"), "{e}");
        let e =
            config_err("[[rule]]\nname = \"a\"\ntype = \"absent\"\nfor = \"1m\"\nthreshold = 3\n");
        assert!(e.contains("\"a\".threshold"), "{e}");
        let e = config_err("[[rule]]\nname = \"s\"\ntype = \"all\"\nrules = [\"nope\"]\n");
        assert!(
            e.contains("rule[0] \"s\".rules[0]") && e.contains("unknown rule \"nope\""),
            "{e}"
        );
        let e = config_err("[[rule]]\nname = \"o\"\ntype = \"any\"\nkinds = [\"oom\"]\n[[rule]]\nname = \"s\"\ntype = \"all\"\nrules = [\"o\"]\n");
        assert!(e.contains("is of type any"), "{e}");
        let e = config_err("[[rule]]\nname = \"c\"\ntype = \"count\"\nkinds = [\"processed\"]\nwindow = \"5m\"\nop = \"<\"\nthreshold = 1\nclear_below = 0\n");
        assert!(e.contains("\"c\".clear_below"), "{e}");
        let e = config_err("[[rule]]\nname = \"g\"\ntype = \"count\"\nkinds = [\"error\"]\nwindow = \"1m\"\nthreshold = 1\nmetric = \"depth\"\n");
        assert!(
            e.contains("\"g\".metric") && e.contains("only applies"),
            "{e}"
        );
    }

    #[test]
    fn absent_without_sources_watches_every_source() {
        let text = "[[source]]\nname = \"w1\"\npath = \"/tmp/a.log\"\n[[rule]]\nname = \"a\"\ntype = \"absent\"\nfor = \"1m\"\n";
        let c = crate::config::Config::from_str_named("t.toml", text, None).unwrap();
        assert_eq!(c.rules[0].sources, vec![Arc::<str>::from("w1")]);
    }

    #[test]
    fn source_down_fires_after_down_after_and_resolves() {
        let mut e = RuleEngine::new(vec![queue_source_down_rule()], 100);
        let h = |up: bool, secs: u64| Health {
            source: Arc::from("redis"),
            up,
            at: at(secs),
            down_after: Duration::from_secs(30),
            error: (!up).then(|| "Connection refused".to_string()),
        };
        e.observe_health(&h(false, 0));
        assert!(changes(&mut e, 29).is_empty());
        let mut out = Vec::new();
        e.evaluate(at(30), &mut out);
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].state, AlertState::Firing);
        assert_eq!(out[0].labels.to_string(), "{source=\"redis\"}");
        assert_eq!(out[0].evidence, vec!["Connection refused".to_string()]);
        assert!(changes(&mut e, 60).is_empty(), "once");
        e.observe_health(&h(true, 61));
        assert_eq!(changes(&mut e, 61)[0].0, AlertState::Resolved);
        // A blip shorter than down_after never fires.
        e.observe_health(&h(false, 100));
        e.observe_health(&h(true, 110));
        assert!(changes(&mut e, 140).is_empty());
    }
}

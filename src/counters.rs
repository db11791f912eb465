//! The counters task: owns the rule engine (windows, alert state) and per-kind totals.
//! Log events (with per-batch line counts) and queue samples arrive on one channel as
//! [`CounterInput`], so both feed the same windows and rules.
//!
//! It evaluates rules after every batch of events and on a 1 s tick, so alerts also resolve
//! when traffic stops, and hands alert *state changes* to notify. When its input closes it
//! evaluates once more and returns its totals.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, watch};

use crate::clock::Clock;
use crate::event::{same_str, Event, Labels, Ts};
use crate::ops::{Activity, CountersSnapshot};
use crate::queues::{Health, Metric, SampleBatch};
use crate::rules::{Alert, RuleEngine, RuleSpec};
use crate::window::RollingCount;

/// What the counters stage receives.
#[derive(Debug, Clone)]
pub enum CounterInput {
    /// A classify batch: its events, and how many lines each source (and label set) had in
    /// it, for `absent` rules (one entry per source per batch, not per line).
    Events {
        /// Classified events.
        events: Vec<Event>,
        /// Lines per source.
        lines: Vec<LineCount>,
    },
    /// One poll of one `[[queue]]`.
    Samples(SampleBatch),
    /// A queue source went down or came back.
    Health(Health),
    /// A config reload: the new rules (state is kept for unchanged ones).
    Reload {
        /// The new rules.
        rules: Vec<RuleSpec>,
        /// The new series cap.
        max_series: usize,
    },
}

/// Lines read from one source (with one label set) in one batch.
#[derive(Debug, Clone, PartialEq)]
pub struct LineCount {
    /// Source name.
    pub source: Arc<str>,
    /// The source's static labels.
    pub labels: Labels,
    /// Lines.
    pub n: u64,
    /// When the last of them was read.
    pub at: Ts,
}

/// Evaluation tick.
pub const TICK: Duration = Duration::from_secs(1);

/// What the counters saw, returned when the task ends.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct CountersReport {
    /// Events per kind.
    pub per_kind: BTreeMap<String, u64>,
    /// Alert changes emitted.
    pub alerts: u64,
    /// Events counted in the overflow series because of the series cap.
    pub series_overflow: u64,
    /// Queue samples received.
    pub samples: u64,
}

/// Recent activity attached to every alert as context: events per kind over the last 5
/// minutes (all sources) and the latest depth of every queue series.
#[derive(Debug, Default)]
pub struct Context {
    kinds: BTreeMap<Arc<str>, RollingCount>,
    depths: BTreeMap<(Arc<str>, String), f64>,
}

/// The span of the per-kind context counts.
pub const CONTEXT_WINDOW: Duration = Duration::from_secs(300);
/// Most queue series listed in an alert's context.
const CONTEXT_QUEUES: usize = 8;

impl Context {
    /// Counts `n` events of `ev`'s kind at `ev`'s time.
    pub fn events(&mut self, ev: &Event, n: u32) {
        match self.kinds.get_mut(&ev.kind) {
            Some(w) => w.add(ev.ts, n),
            None => {
                let mut w = RollingCount::new(CONTEXT_WINDOW);
                w.add(ev.ts, n);
                self.kinds.insert(ev.kind.clone(), w);
            }
        }
    }

    /// Remembers the depths of a poll.
    pub fn samples(&mut self, b: &SampleBatch) {
        if b.complete {
            self.depths.retain(|(src, _), _| *src != b.source);
        }
        for s in b.samples.iter().filter(|s| s.metric == Metric::Depth) {
            let name = match (s.labels.get("queue"), s.labels.get("part")) {
                (Some(q), Some(p)) => format!("{q} {p}"),
                (Some(q), None) => q.to_string(),
                _ => s.labels.get("key").unwrap_or("?").to_string(),
            };
            *self.depths.entry((b.source.clone(), name)).or_default() += s.value;
        }
    }

    /// `last 5m: 120 processed, 14 error` and `queues: celery waiting 150, …`.
    pub fn describe(&self, now: Ts) -> Vec<String> {
        let mut out = Vec::new();
        let kinds: Vec<String> = self
            .kinds
            .iter()
            .map(|(k, w)| (k, w.sum(now)))
            .filter(|(_, n)| *n > 0)
            .map(|(k, n)| format!("{n} {k}"))
            .collect();
        if !kinds.is_empty() {
            out.push(format!("last 5m: {}", kinds.join(", ")));
        }
        if !self.depths.is_empty() {
            let mut q: Vec<String> = self
                .depths
                .iter()
                .take(CONTEXT_QUEUES)
                .map(|((_, name), d)| format!("{name} {d}"))
                .collect();
            if self.depths.len() > CONTEXT_QUEUES {
                q.push(format!("… {} more", self.depths.len() - CONTEXT_QUEUES));
            }
            out.push(format!("queues: {}", q.join(", ")));
        }
        out
    }
}

/// Runs until `rx` closes, publishing a [`CountersSnapshot`] to `status` once per tick.
pub async fn run(
    rules: Vec<RuleSpec>,
    max_series: usize,
    mut rx: mpsc::Receiver<CounterInput>,
    tx: mpsc::Sender<Alert>,
    clock: Clock,
    status: watch::Sender<CountersSnapshot>,
) -> CountersReport {
    let mut engine = RuleEngine::new(rules, max_series);
    let mut activity = Activity::with_max_series(max_series);
    let mut report = CountersReport::default();
    let mut tick = tokio::time::interval(TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut out: Vec<Alert> = Vec::new();
    let mut context = Context::default();
    loop {
        // `Some(input)`, `Some(None)` when the channel closed, `None` on a tick.
        let input: Option<Option<CounterInput>> = tokio::select! {
            b = rx.recv() => Some(b),
            _ = tick.tick() => None,
        };
        match input {
            Some(Some(CounterInput::Events { events, lines })) => {
                for l in &lines {
                    engine.observe_lines(&l.source, &l.labels, l.at);
                    activity.lines(l);
                }
                count_events(&events, &mut report, &mut context, &mut activity);
                for ev in &events {
                    engine.observe(ev, &mut out);
                }
                engine.evaluate_touched(clock.now(), &mut out);
            }
            Some(Some(CounterInput::Samples(batch))) => {
                report.samples += batch.samples.len() as u64;
                context.samples(&batch);
                activity.samples(&batch);
                engine.observe_samples(&batch);
                engine.evaluate_touched(clock.now(), &mut out);
            }
            Some(Some(CounterInput::Reload { rules, max_series })) => {
                let (names, total) = (rules.len(), engine.specs().count());
                let (e, kept) = engine.reconfigure(rules, max_series);
                engine = e;
                activity.set_max_series(max_series);
                tracing::info!(
                    rules = names,
                    kept = kept.len(),
                    before = total,
                    "rules reloaded; unchanged rules keep their windows and alert state"
                );
                engine.evaluate(clock.now(), &mut out);
            }
            Some(Some(CounterInput::Health(h))) => {
                engine.observe_health(&h);
                engine.evaluate_touched(clock.now(), &mut out);
            }
            Some(None) => break,
            None => {
                engine.evaluate(clock.now(), &mut out); // time moves every window
                publish(&status, &activity, &engine, &report, clock.now());
            }
        }
        if !out.is_empty() {
            let ctx = context.describe(clock.now());
            for a in &mut out {
                a.context.clone_from(&ctx);
            }
        }
        for a in out.drain(..) {
            report.alerts += 1;
            if tx.send(a).await.is_err() {
                tracing::warn!("notify stage is gone; alert changes are no longer delivered");
            }
        }
    }
    engine.evaluate(clock.now(), &mut out);
    for a in out.drain(..) {
        report.alerts += 1;
        // The notifier is still running: it ends after we drop `tx`.
        let _ = tx.send(a).await;
    }
    report.series_overflow = engine.overflowed;
    publish(&status, &activity, &engine, &report, clock.now());
    report
}

/// Most distinct (kind, source, label set) entries of one tally.
const TALLY: usize = 16;

/// Counts a batch's events into the totals (`report`, the alert context, the `/metrics` and
/// dashboard totals) once per distinct (kind, source, label set) rather than once per event.
/// A tally holds events of one time only (a batch's lines share their read time), so every
/// window and per-minute count gets what it would have got event by event; its entries are
/// applied in the order of their first event, so the series cap admits the same label sets.
/// Those totals were ~14% of the daemon's instructions on the bench corpus (callgrind), at
/// several map lookups (SipHash for the label sets) and a `String` per event.
fn count_events(
    events: &[Event],
    report: &mut CountersReport,
    context: &mut Context,
    activity: &mut Activity,
) {
    let mut tally: Vec<(&Event, u32)> = Vec::with_capacity(TALLY);
    let mut apply = |tally: &mut Vec<(&Event, u32)>| {
        for (ev, n) in tally.drain(..) {
            match report.per_kind.get_mut(&*ev.kind) {
                Some(c) => *c += u64::from(n),
                None => {
                    report.per_kind.insert(ev.kind.to_string(), u64::from(n));
                }
            }
            context.events(ev, n);
            activity.events(ev, u64::from(n));
        }
    };
    for ev in events {
        if tally.first().is_some_and(|(t, _)| t.ts != ev.ts) {
            apply(&mut tally);
        }
        let same = tally.iter_mut().find(|(t, _)| {
            same_str(&t.kind, &ev.kind) && same_str(&t.source, &ev.source) && t.labels == ev.labels
        });
        match same {
            Some((_, n)) => *n += 1,
            None => {
                if tally.len() == TALLY {
                    apply(&mut tally);
                }
                tally.push((ev, 1));
            }
        }
    }
    apply(&mut tally);
}

/// Sends the status snapshot (once per tick: never per event).
fn publish(
    status: &watch::Sender<CountersSnapshot>,
    activity: &Activity,
    engine: &RuleEngine,
    report: &CountersReport,
    now: Ts,
) {
    let mut snap = activity.snapshot(now);
    snap.alerts = engine.active();
    snap.windows = engine.windows(now, crate::ops::STATUS_WINDOWS);
    snap.series = engine.series();
    snap.series_overflow = engine.overflowed;
    snap.alert_changes = report.alerts;
    status.send_replace(snap);
}

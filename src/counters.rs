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

use tokio::sync::mpsc;

use crate::clock::Clock;
use crate::event::{Event, Labels, Ts};
use crate::queues::{Health, SampleBatch};
use crate::rules::{Alert, RuleEngine, RuleSpec};

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

/// Runs until `rx` closes.
pub async fn run(
    rules: Vec<RuleSpec>,
    max_series: usize,
    mut rx: mpsc::Receiver<CounterInput>,
    tx: mpsc::Sender<Alert>,
    clock: Clock,
) -> CountersReport {
    let mut engine = RuleEngine::new(rules, max_series);
    let mut report = CountersReport::default();
    let mut tick = tokio::time::interval(TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut out: Vec<Alert> = Vec::new();
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
                }
                for ev in &events {
                    *report.per_kind.entry(ev.kind.to_string()).or_default() += 1;
                    engine.observe(ev, &mut out);
                }
                engine.evaluate_touched(clock.now(), &mut out);
            }
            Some(Some(CounterInput::Samples(batch))) => {
                report.samples += batch.samples.len() as u64;
                engine.observe_samples(&batch);
                engine.evaluate_touched(clock.now(), &mut out);
            }
            Some(Some(CounterInput::Health(h))) => {
                engine.observe_health(&h);
                engine.evaluate_touched(clock.now(), &mut out);
            }
            Some(None) => break,
            None => engine.evaluate(clock.now(), &mut out), // time moves every window
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
    report
}

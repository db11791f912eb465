//! The counters task: owns the rule engine (windows, alert state) and per-kind totals.
//!
//! It evaluates rules after every batch of events and on a 1 s tick, so alerts also resolve
//! when traffic stops, and hands alert *state changes* to notify. When its input closes it
//! evaluates once more and returns its totals.

use std::collections::BTreeMap;
use std::time::Duration;

use tokio::sync::mpsc;

use crate::clock::Clock;
use crate::event::Event;
use crate::rules::{Alert, RuleEngine, RuleSpec};

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
}

/// Runs until `rx` closes.
pub async fn run(
    rules: Vec<RuleSpec>,
    max_series: usize,
    mut rx: mpsc::Receiver<Vec<Event>>,
    tx: mpsc::Sender<Alert>,
    clock: Clock,
) -> CountersReport {
    let mut engine = RuleEngine::new(rules, max_series);
    let mut report = CountersReport::default();
    let mut tick = tokio::time::interval(TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut out: Vec<Alert> = Vec::new();
    loop {
        let batch = tokio::select! {
            b = rx.recv() => b,
            _ = tick.tick() => Some(Vec::new()),
        };
        let Some(batch) = batch else { break };
        if batch.is_empty() {
            engine.evaluate(clock.now(), &mut out); // the tick: time moves every window
        } else {
            for ev in &batch {
                *report.per_kind.entry(ev.kind.to_string()).or_default() += 1;
                engine.observe(ev, &mut out);
            }
            engine.evaluate_touched(clock.now(), &mut out);
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

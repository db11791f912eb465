//! A config reload inside the notify task. The notifier and the rate gates are re-mapped
//! ([`Dispatcher::reconfigure`]); delivery workers are swapped per receiver:
//!
//! - unchanged (same [`ReceiverConfig`], secrets included, and the same `[notify]` rendering
//!   settings): keeps its worker and outbox, so nothing queued or in flight is touched;
//! - changed or removed: its outbox is closed, so its worker delivers what is queued (retrying
//!   until `shutdown_grace` from now) and stops; whatever is still queued at that deadline is
//!   recorded failed;
//! - new or changed: a fresh worker with a fresh outbox.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::task::JoinSet;

use super::config::{Format, NotifyConfig, ReceiverConfig};
use super::deliver::{self, Outbox, Outcome, SharedHistory, Worker};
use super::journal::Journal;
use super::{dispatch, Dispatcher, FailWriter, NotifyStats, StdoutFactory, Tick};
use crate::clock::Clock;

/// What the notify task lends a reload.
pub(super) struct Env<'a> {
    /// Where stdout receivers write.
    pub stdout: &'a StdoutFactory,
    /// The notification log.
    pub history: &'a SharedHistory,
    /// The daemon clock.
    pub clock: Clock,
    /// How long a retired receiver's worker may go on delivering what it holds.
    pub grace: Duration,
    /// The outboxes' write-ahead log.
    pub journal: &'a Arc<Journal>,
}

/// The next config handed over by a reload (cancel-safe); never ready without a channel.
pub(super) async fn next_config(
    rx: &mut Option<mpsc::Receiver<Arc<NotifyConfig>>>,
) -> Option<Arc<NotifyConfig>> {
    match rx {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}

/// Applies `cfg`: re-maps `d`, swaps the workers of changed receivers (`outboxes` is indexed
/// like `cfg.receivers` afterwards) and logs one line saying what changed.
pub(super) fn apply(
    d: &mut Dispatcher,
    cfg: Arc<NotifyConfig>,
    outboxes: &mut Vec<Arc<Outbox>>,
    workers: &mut JoinSet<()>,
    stats: &mut NotifyStats,
    env: &Env<'_>,
) {
    let old = d.notifier.config().clone();
    if old == *cfg {
        return;
    }
    let (remap, digests) = d.reconfigure(cfg.clone(), env.clock.now());
    // Digests of replaced gates go to the receiver's old worker, before its outbox closes.
    dispatch(
        Tick {
            send: digests,
            held: Vec::new(),
        },
        outboxes,
        env.history,
        stats,
    );
    let same_rendering = old.hostname == cfg.hostname
        && old.evidence_lines == cfg.evidence_lines
        && old
            .redact
            .iter()
            .map(|r| r.as_str())
            .eq(cfg.redact.iter().map(|r| r.as_str()));
    let mut kept = vec![false; old.receivers.len()];
    let (mut added, mut changed) = (Vec::new(), Vec::new());
    let mut next = Vec::with_capacity(cfg.receivers.len());
    for rc in &cfg.receivers {
        let before = old.receivers.iter().position(|o| o.name == rc.name);
        match before {
            Some(i) if same_rendering && old.receivers[i] == *rc => {
                kept[i] = true;
                next.push(outboxes[i].clone());
                continue;
            }
            Some(_) => changed.push(rc.name.as_str()),
            None => added.push(rc.name.as_str()),
        }
        next.push(start_worker(rc, &cfg, env, workers));
    }
    let deadline = tokio::time::Instant::now() + env.grace;
    for (i, outbox) in outboxes.iter().enumerate() {
        if !kept[i] {
            retire(outbox.clone(), old.receivers[i].name.clone(), deadline, env);
        }
    }
    *outboxes = next;
    env.history
        .lock()
        .expect("history lock")
        .set_cap(cfg.history);
    tracing::info!(
        receivers = cfg.receivers.len(),
        routes = cfg.routes.len(),
        added = added.join(", "),
        changed = changed.join(", "),
        removed = remap.removed_receivers.join(", "),
        dropped_alerts = remap.dropped.len(),
        dropped = remap.dropped.join(", "),
        "notification config reloaded"
    );
}

/// Starts a worker for `rc` (at start-up and on a reload) and returns its outbox.
pub(super) fn start_worker(
    rc: &ReceiverConfig,
    cfg: &NotifyConfig,
    env: &Env<'_>,
    workers: &mut JoinSet<()>,
) -> Arc<Outbox> {
    let outbox = Arc::new(Outbox::new(env.journal.clone()));
    let sender = match deliver::Sender::new(rc, || (env.stdout)()) {
        Ok(s) => s,
        Err(e) => {
            tracing::error!(receiver = %rc.name, error = %e, "cannot set up receiver; its notifications will be recorded as failed");
            deliver::Sender::Stdout {
                format: Format::Text,
                out: Mutex::new(Box::new(FailWriter)),
            }
        }
    };
    workers.spawn(
        Worker {
            rc: rc.clone(),
            sender,
            outbox: outbox.clone(),
            history: env.history.clone(),
            hostname: cfg.hostname.clone(),
            redact: cfg.redact.clone(),
            evidence_lines: cfg.evidence_lines,
            clock: env.clock,
        }
        .run(),
    );
    outbox
}

/// Closes the outbox of a removed or changed receiver: its worker delivers what is queued,
/// retrying until `deadline`, and stops. What is still queued at the deadline is recorded
/// failed (the message in flight then ends within one attempt's timeout and is recorded by
/// the worker).
fn retire(outbox: Arc<Outbox>, name: String, deadline: tokio::time::Instant, env: &Env<'_>) {
    outbox.close(deadline);
    let history = env.history.clone();
    tokio::spawn(async move {
        tokio::time::sleep_until(deadline).await;
        const WHY: &str = "not delivered before the deadline after a reload replaced the receiver";
        let left = outbox.take_failed(WHY);
        if left.is_empty() {
            return;
        }
        tracing::warn!(
            receiver = %name,
            messages = left.len(),
            "receiver replaced by a reload still had notifications queued at its deadline; recorded failed"
        );
        let mut h = history.lock().expect("history lock");
        for m in &left {
            h.record(m, Outcome::Failed, 0, Some(WHY.into()));
        }
    });
}

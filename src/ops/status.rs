//! `/status` (a JSON view of everything the daemon holds) and `/health` (freshness checks
//! with their reasons). Both are built from the [`Hub`]'s snapshots at request time.
//! Secrets never appear: queue URLs are redacted, receivers are listed by name only.

use std::time::Duration;

use serde::Serialize;
use serde_json::{json, Value};

use super::{Hub, ERROR_KINDS};
use crate::event::Ts;

/// How stale the counters stage's snapshot may be (it publishes every second) before the
/// pipeline counts as stalled.
pub const COUNTERS_STALE: Duration = Duration::from_secs(15);
/// The label whose values are shown as instances (one card each on the dashboard).
pub const INSTANCE_LABEL: &str = "worker";
/// Notification log entries shown in `/status`.
pub const STATUS_HISTORY: usize = 20;

/// The result of the health checks.
#[derive(Debug, Clone, Serialize)]
pub struct Health {
    /// True when every check passed.
    pub ok: bool,
    /// `ok` or `unhealthy`.
    pub status: &'static str,
    /// Why it is unhealthy, one sentence per failed check.
    pub reasons: Vec<String>,
    /// Degraded but healthy (e.g. a directory tailed without inotify).
    pub warnings: Vec<String>,
}

/// Runs the checks: every source task is running; the counters stage published recently;
/// every `[[queue]]` had a successful poll within 3 intervals + its timeout (or, before the
/// first one, the daemon is younger than that).
pub fn health(hub: &Hub) -> Health {
    let now = hub.clock.now();
    let mut reasons = Vec::new();
    let mut warnings = Vec::new();
    for (name, alive) in hub
        .sources_alive
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .iter()
    {
        if !alive {
            reasons.push(format!("source {name:?} has stopped"));
        }
    }
    match hub.counters.borrow().at {
        Some(at) if now.since(at) > COUNTERS_STALE => reasons.push(format!(
            "the counters stage last reported {}s ago",
            now.since(at).as_secs()
        )),
        None if now.since(hub.started) > COUNTERS_STALE => {
            reasons.push("the counters stage has not reported since start-up".into())
        }
        _ => {}
    }
    let layout = hub.layout.borrow().clone();
    let queues = hub.queues.lock().unwrap_or_else(|e| e.into_inner()).clone();
    for q in &layout.queues {
        let limit = q.interval * 3 + q.timeout;
        let st = queues.get(&q.name).cloned().unwrap_or_default();
        let since = st.last_ok.unwrap_or(hub.started);
        if now.since(since) > limit {
            let last = match st.last_ok {
                Some(t) => format!("last good poll {:.1}s ago", now.since(t).as_secs_f64()),
                None => format!(
                    "no good poll since start-up {:.1}s ago",
                    now.since(hub.started).as_secs_f64()
                ),
            };
            let err = st.last_error.map(|e| format!(": {e}")).unwrap_or_default();
            reasons.push(format!(
                "queue {:?} ({}): {last} (allowed {:.1}s){err}",
                q.name,
                q.url,
                limit.as_secs_f64()
            ));
        }
    }
    let tailer = hub.tailer.borrow();
    if tailer.unwatched_dirs > 0 {
        warnings.push(format!(
            "{} directories are tailed by the poll tick alone (inotify unavailable)",
            tailer.unwatched_dirs
        ));
    }
    let ok = reasons.is_empty();
    Health {
        ok,
        status: if ok { "ok" } else { "unhealthy" },
        reasons,
        warnings,
    }
}

/// Events per minute of `kind` over the last 5 minutes of history.
fn rate(minutes: &[super::Minute], now: Ts, f: impl Fn(&super::Minute) -> u64) -> f64 {
    let from = Ts(now.0.saturating_sub(5 * 60_000));
    let n: u64 = minutes.iter().filter(|m| m.start >= from).map(f).sum();
    n as f64 / 5.0
}

/// The `/status` document.
pub fn status(hub: &Hub) -> Value {
    let now = hub.clock.now();
    let layout = hub.layout.borrow().clone();
    let counters = hub.counters.borrow().clone();
    let tailer = hub.tailer.borrow().clone();
    let classify = hub.classify.borrow().clone();
    let alive = hub
        .sources_alive
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .clone();
    let sources: Vec<Value> = layout
        .sources
        .iter()
        .map(|(name, input)| {
            let totals = counters.per_source.get(name).cloned().unwrap_or_default();
            let kinds: serde_json::Map<String, Value> = totals
                .kinds
                .iter()
                .map(|(k, n)| {
                    let r = rate(&counters.minutes, now, |m| {
                        m.per_source_kind
                            .iter()
                            .filter(|((s, kk), _)| **s == **name && **kk == **k)
                            .map(|(_, n)| *n)
                            .sum()
                    });
                    (k.clone(), json!({"total": n, "per_minute": r}))
                })
                .collect();
            let files: Vec<Value> = tailer
                .files
                .iter()
                .filter(|f| *f.source == **name)
                .map(|f| {
                    json!({
                        "path": f.path.display().to_string(),
                        "open": f.open,
                        "inode": f.inode,
                        "offset": f.offset,
                        "size": f.size,
                        "lag": f.size.saturating_sub(f.offset),
                        "lines": f.lines,
                        "bytes": f.bytes,
                        "rotations": f.rotations,
                        "truncations": f.truncations,
                        "truncated_lines": f.truncated_lines,
                        "binary": f.binary,
                    })
                })
                .collect();
            json!({
                "name": name,
                "input": input,
                "alive": alive.get(name).copied().unwrap_or(false),
                "lines": totals.lines,
                "events": kinds,
                "files": files,
            })
        })
        .collect();
    let kinds: serde_json::Map<String, Value> = counters
        .per_kind
        .iter()
        .map(|(k, n)| {
            let r = rate(&counters.minutes, now, |m| {
                m.per_source_kind
                    .iter()
                    .filter(|((_, kk), _)| **kk == **k)
                    .map(|(_, n)| *n)
                    .sum()
            });
            (k.clone(), json!({"total": n, "per_minute": r}))
        })
        .collect();
    let history: Vec<Value> = counters
        .minutes
        .iter()
        .map(|m| {
            json!({
                "start": m.start,
                "lines": m.lines,
                "events": m.events,
                "errors": m.errors,
                "depth": m.depth,
                "queue_depth": m.queue_depth,
            })
        })
        .collect();
    let queues = hub.queues.lock().unwrap_or_else(|e| e.into_inner()).clone();
    let queues: Vec<Value> = layout
        .queues
        .iter()
        .map(|q| {
            let st = queues.get(&q.name).cloned().unwrap_or_default();
            let depth: f64 = st
                .series
                .iter()
                .filter(|(_, m, _)| *m == "depth")
                .fold(0.0, |a, (_, _, v)| a + v);
            let series: Vec<Value> = st
                .series
                .iter()
                .map(|(l, m, v)| json!({"labels": l, "metric": m, "value": v}))
                .collect();
            json!({
                "name": q.name,
                "url": q.url,
                "interval_seconds": q.interval.as_secs_f64(),
                "up": st.up,
                "last_ok": st.last_ok,
                "last_attempt": st.last_attempt,
                "last_error": st.last_error,
                "latency_seconds": st.latency_seconds,
                "polls": st.polls,
                "failed_polls": st.failed,
                "key_errors": st.key_errors,
                "depth": depth,
                "series": series,
            })
        })
        .collect();
    let (receivers, last) = match hub.history() {
        Some(h) => {
            let h = h.lock().unwrap_or_else(|e| e.into_inner());
            let receivers: Vec<Value> = layout
                .receivers
                .iter()
                .map(|r| {
                    let c = h.counts.get(r).cloned().unwrap_or_default();
                    json!({
                        "name": r,
                        "healthy": !c.down,
                        "sent": c.sent,
                        "held": c.held,
                        "failed": c.failed,
                        "retries": c.retries,
                        "coalesced": c.coalesced,
                    })
                })
                .collect();
            let skip = h.entries.len().saturating_sub(STATUS_HISTORY);
            let last: Vec<Value> = h
                .entries
                .iter()
                .skip(skip)
                .map(|e| serde_json::to_value(e).unwrap_or(Value::Null))
                .collect();
            (receivers, last)
        }
        None => (Vec::new(), Vec::new()),
    };
    // Per instance (the `worker` label, e.g. `labels = { worker = "{stem}" }`): the card per
    // worker the operators' old dashboard had.
    let mut instances: std::collections::BTreeMap<String, std::collections::BTreeMap<String, u64>> =
        Default::default();
    for (kind, _, labels, n) in &counters.events {
        if let Some(w) = labels.get(INSTANCE_LABEL) {
            *instances
                .entry(w.to_string())
                .or_default()
                .entry(kind.clone())
                .or_default() += n;
        }
    }
    let health = health(hub);
    let errors_per_minute = rate(&counters.minutes, now, |m| m.errors);
    json!({
        "version": env!("CARGO_PKG_VERSION"),
        "now": now,
        "started": hub.started,
        "uptime_seconds": now.since(hub.started).as_secs(),
        "config_file": layout.config_file,
        "reloads": {
            "ok": hub.reloads.load(std::sync::atomic::Ordering::Relaxed),
            "rejected": hub.reload_failures.load(std::sync::atomic::Ordering::Relaxed),
        },
        "health": health,
        "totals": {
            "lines": classify.lines,
            "unmatched": classify.unmatched,
            "truncated": classify.truncated,
            "invalid_utf8": classify.invalid_utf8,
            "events": counters.per_kind.values().sum::<u64>(),
            "errors": ERROR_KINDS.iter().map(|k| counters.per_kind.get(*k).copied().unwrap_or(0)).sum::<u64>(),
            "errors_per_minute": errors_per_minute,
        },
        "kinds": kinds,
        "sources": sources,
        "instances": instances,
        "tailer": {
            "open_files": tailer.open_files,
            "errors": tailer.errors,
            "watched_dirs": tailer.watched_dirs,
            "unwatched_dirs": tailer.unwatched_dirs,
            "checkpoint_writes": tailer.checkpoint_writes,
            "checkpoint_errors": tailer.checkpoint_errors,
        },
        "windows": counters.windows,
        "history": history,
        "queues": queues,
        "rules": layout.rules.iter().map(|(n, t, s)| json!({"name": n, "type": t, "severity": s})).collect::<Vec<_>>(),
        "alerts": counters.alerts,
        "series": counters.series,
        "pending_groups": hub.notify.borrow().groups,
        "receivers": receivers,
        "notifications": last,
    })
}

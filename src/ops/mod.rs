//! Operating the daemon: what each stage publishes about itself, and the HTTP listener that
//! serves it (`/metrics`, `/health`, `/status`, the dashboard `/`).
//!
//! ```text
//!  tailer ──TailerStats (watch, per poll tick)────────┐
//!  classify ─ClassifyStats (watch, per 200 ms tick)───┤
//!  counters ─CountersSnapshot (watch, per 1 s tick)───┼─▶ Hub ─▶ http (read-only, at request time)
//!  pollers ──QueueStatus (mutex, once per poll)───────┤
//!  notify ───NotifySnapshot (watch, per loop) + SharedHistory ┘
//! ```
//!
//! The [`Hub`] outlives the pipeline (a SIGHUP reload restarts the stages and hands them the
//! same hub). Stages publish whole snapshots at most once per tick; nothing here is touched
//! per line, and a request only clones the latest snapshots. [`Activity`] is the pure part the
//! counters stage keeps: totals per kind, source and label set, and a per-minute history of
//! the last hour for the dashboard's charts.

pub mod dashboard;
pub mod http;
pub mod metrics;
pub mod status;

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::Serialize;
use tokio::sync::watch;

use crate::clock::Clock;
use crate::counters::LineCount;
use crate::event::{Event, Labels, Ts};
use crate::notify::deliver::SharedHistory;
use crate::queues::{Metric, SampleBatch};
use crate::records::ClassifyStats;
use crate::rules::ActiveAlert;
use crate::sources::file::TailerStats;

/// Minutes of history kept for the dashboard's charts.
pub const HISTORY_MINUTES: usize = 60;
/// Most rule windows published for `/status`.
pub const STATUS_WINDOWS: usize = 500;
/// Most per-queue depth series (`[[queue]]` × the application's queue) kept in the history;
/// later ones are left out of it (the dashboard says how many it does not chart).
pub const QUEUE_SERIES: usize = 100;
/// Kinds counted as errors in the error-rate chart.
pub const ERROR_KINDS: [&str; 3] = ["error", "crash", "oom"];

/// What the configuration says the daemon watches, for `/status` and `/health`.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Layout {
    /// Source names and their input (`stdin` or the glob).
    pub sources: Vec<(String, String)>,
    /// `[[queue]]`s: name, redacted URL, poll interval.
    pub queues: Vec<QueueLayout>,
    /// Rules: name, type, severity.
    pub rules: Vec<(String, String, String)>,
    /// Receiver names.
    pub receivers: Vec<String>,
    /// The config file, if any.
    pub config_file: Option<String>,
}

/// One configured `[[queue]]`.
#[derive(Debug, Clone, Serialize)]
pub struct QueueLayout {
    /// The `[[queue]]` name.
    pub name: String,
    /// URL with the password replaced.
    pub url: String,
    /// Poll interval.
    #[serde(serialize_with = "ser_secs")]
    pub interval: Duration,
    /// Poll timeout.
    #[serde(serialize_with = "ser_secs")]
    pub timeout: Duration,
}

fn ser_secs<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_f64(d.as_secs_f64())
}

/// The state of one queue poller, written once per poll.
#[derive(Debug, Clone, Default, Serialize)]
pub struct QueueStatus {
    /// Last poll reached Redis (`None` before the first poll).
    pub up: Option<bool>,
    /// When the last successful poll was made.
    pub last_ok: Option<Ts>,
    /// When the last poll (good or not) was made.
    pub last_attempt: Option<Ts>,
    /// The error of the last failed poll (cleared by a good one).
    pub last_error: Option<String>,
    /// Round-trip time of the last successful poll, in seconds.
    pub latency_seconds: Option<f64>,
    /// Round-trip times of all successful polls (kept across reloads that restart the
    /// poller, like the counters).
    #[serde(skip)]
    pub latency: DurationHistogram,
    /// Polls that returned samples.
    pub polls: u64,
    /// Polls that failed.
    pub failed: u64,
    /// Per-key errors inside good polls.
    pub key_errors: u64,
    /// The last poll's series: labels, metric name, value.
    pub series: Vec<(Labels, &'static str, f64)>,
}

/// Upper bounds of [`DurationHistogram`]'s buckets, in seconds: a poll is one round trip
/// (about 2 ms on a LAN) and gives up at its `timeout` (2 s by default).
pub const DURATION_BUCKETS: [f64; 12] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
];

/// Durations counted per bucket of [`DURATION_BUCKETS`] (plus one for longer ones), with
/// their sum: what a Prometheus histogram exposes, kept as totals so `/metrics` can build
/// it per scrape.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct DurationHistogram {
    /// Observations per bucket (not cumulative); the last one counts those above every
    /// bound.
    pub counts: [u64; DURATION_BUCKETS.len() + 1],
    /// Sum of the observations, in seconds.
    pub sum: f64,
}

impl DurationHistogram {
    /// Counts one duration, in seconds.
    pub fn observe(&mut self, secs: f64) {
        let i = DURATION_BUCKETS
            .iter()
            .position(|b| secs <= *b)
            .unwrap_or(DURATION_BUCKETS.len());
        self.counts[i] += 1;
        self.sum += secs;
    }

    /// Observations.
    pub fn count(&self) -> u64 {
        self.counts.iter().sum()
    }

    /// `(upper bound, observations in that bucket)`, ending with `+Inf`.
    pub fn buckets(&self) -> Vec<(f64, u64)> {
        DURATION_BUCKETS
            .iter()
            .copied()
            .chain([f64::INFINITY])
            .zip(self.counts)
            .collect()
    }
}

/// A group the notifier holds, for `/status`.
#[derive(Debug, Clone, Serialize)]
pub struct PendingGroup {
    /// Receiver name.
    pub receiver: String,
    /// The group's labels.
    pub labels: Labels,
    /// `rule{labels}` of its members.
    pub alerts: Vec<String>,
    /// Members with a change not sent yet.
    pub unsent: usize,
    /// When the group is next flushed.
    pub next_flush: Option<Ts>,
}

/// What the notify task holds, published once per loop.
#[derive(Debug, Clone, Default, Serialize)]
pub struct NotifySnapshot {
    /// Groups with members (firing, or with a change waiting for `group_wait`).
    pub groups: Vec<PendingGroup>,
}

/// Totals of one source, from the counters.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct SourceTotals {
    /// Lines read.
    pub lines: u64,
    /// Events per kind.
    pub kinds: BTreeMap<String, u64>,
}

/// One minute of the dashboard's history.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct Minute {
    /// Start of the minute.
    pub start: Ts,
    /// Lines read.
    pub lines: u64,
    /// Events.
    pub events: u64,
    /// Events of the error kinds ([`ERROR_KINDS`]).
    pub errors: u64,
    /// Events per (source, kind).
    #[serde(skip)]
    pub per_source_kind: HashMap<(Arc<str>, Arc<str>), u64>,
    /// Latest total depth per `[[queue]]` in this minute.
    pub depth: BTreeMap<String, f64>,
    /// Latest depth per `[[queue]]` and application queue (the `queue` label) in this
    /// minute (at most [`QUEUE_SERIES`] in all).
    pub queue_depth: BTreeMap<String, BTreeMap<String, f64>>,
}

/// The counters stage's published view.
#[derive(Debug, Clone, Default)]
pub struct CountersSnapshot {
    /// When it was published (`None`: never).
    pub at: Option<Ts>,
    /// Events per kind.
    pub per_kind: BTreeMap<String, u64>,
    /// Per source.
    pub per_source: BTreeMap<String, SourceTotals>,
    /// Events per (kind, source, labels).
    pub events: Vec<(String, String, Labels, u64)>,
    /// The last hour, oldest first.
    pub minutes: Vec<Minute>,
    /// Pending and firing alerts.
    pub alerts: Vec<ActiveAlert>,
    /// Count and ratio windows (at most [`STATUS_WINDOWS`]).
    pub windows: Vec<crate::rules::WindowView>,
    /// (rule, group) windows held.
    pub series: usize,
    /// Events counted in the overflow series.
    pub series_overflow: u64,
    /// Events counted under `{__overflow__="true"}` in the event totals because they had
    /// `limits.max_series` label sets (see [`Activity`]).
    pub event_series_overflow: u64,
    /// Alert changes emitted.
    pub alert_changes: u64,
}

/// Totals and recent history kept by the counters stage. Pure: time is passed in.
///
/// Bounded: the event totals per (kind, source, label set) keep at most `max_series` label
/// sets (`limits.max_series`, like the rule windows); events of label sets past it are
/// counted under `{__overflow__="true"}` of their kind and source, and in
/// [`CountersSnapshot::event_series_overflow`]. Captured label values are capped already
/// (`patterns.max_label_values`), but per label *name*: a source's `{stem}` labels are not,
/// and several capped labels multiply.
#[derive(Debug)]
pub struct Activity {
    per_kind: BTreeMap<String, u64>,
    per_source: BTreeMap<String, SourceTotals>,
    events: HashMap<(Arc<str>, Arc<str>), HashMap<Labels, u64>>,
    /// Label sets in `events`, over all (kind, source).
    event_series: usize,
    max_series: usize,
    event_overflow: u64,
    minutes: VecDeque<Minute>,
    depth: BTreeMap<Arc<str>, f64>,
    queue_depth: BTreeMap<String, BTreeMap<String, f64>>,
}

impl Default for Activity {
    /// With the default `limits.max_series` (10,000).
    fn default() -> Activity {
        Activity::with_max_series(10_000)
    }
}

fn minute_of(t: Ts) -> Ts {
    Ts(t.0 - t.0 % 60_000)
}

impl Activity {
    /// Empty, keeping at most `max_series` label sets of event totals.
    pub fn with_max_series(max_series: usize) -> Activity {
        Activity {
            per_kind: BTreeMap::new(),
            per_source: BTreeMap::new(),
            events: HashMap::new(),
            event_series: 0,
            max_series: max_series.max(1),
            event_overflow: 0,
            minutes: VecDeque::new(),
            depth: BTreeMap::new(),
            queue_depth: BTreeMap::new(),
        }
    }

    /// A reload's new cap: label sets already kept stay; new ones wait for room.
    pub fn set_max_series(&mut self, max_series: usize) {
        self.max_series = max_series.max(1);
    }

    fn minute(&mut self, at: Ts) -> &mut Minute {
        let start = minute_of(at);
        // Times from different stages may be a hair out of order: a late one lands in the
        // newest minute rather than opening an older one.
        let newest = self.minutes.back().map(|m| m.start);
        if newest.is_none_or(|n| start > n) {
            let mut m = Minute {
                start,
                ..Minute::default()
            };
            // Depth is a level, not a count: it carries over until the next poll.
            m.depth = self
                .depth
                .iter()
                .map(|(k, v)| (k.to_string(), *v))
                .collect();
            m.queue_depth = self.queue_depth.clone();
            self.minutes.push_back(m);
            while self.minutes.len() > HISTORY_MINUTES {
                self.minutes.pop_front();
            }
        }
        self.minutes.back_mut().expect("a minute was just pushed")
    }

    /// Counts one batch's lines of one source.
    pub fn lines(&mut self, l: &LineCount) {
        self.per_source
            .entry(l.source.to_string())
            .or_default()
            .lines += l.n;
        self.minute(l.at).lines += l.n;
    }

    /// Counts an event.
    pub fn event(&mut self, ev: &Event) {
        self.events(ev, 1);
    }

    /// Counts `n` events like `ev` (same kind, source, label set and minute): the counters
    /// stage tallies a batch first and calls this once per distinct event, in the order of
    /// their first occurrence, so a label set is admitted under the cap exactly as if each
    /// event came one by one.
    pub fn events(&mut self, ev: &Event, n: u64) {
        let kind: &str = &ev.kind;
        match self.per_kind.get_mut(kind) {
            Some(c) => *c += n,
            None => {
                self.per_kind.insert(kind.to_string(), n);
            }
        }
        let src = match self.per_source.get_mut(&*ev.source) {
            Some(s) => s,
            None => self.per_source.entry(ev.source.to_string()).or_default(),
        };
        match src.kinds.get_mut(kind) {
            Some(c) => *c += n,
            None => {
                src.kinds.insert(kind.to_string(), n);
            }
        }
        let by_labels = self
            .events
            .entry((ev.kind.clone(), ev.source.clone()))
            .or_default();
        match by_labels.get_mut(&ev.labels) {
            Some(c) => *c += n,
            None if self.event_series < self.max_series => {
                by_labels.insert(ev.labels.clone(), n);
                self.event_series += 1;
            }
            None => {
                self.event_overflow += n;
                *by_labels
                    .entry(crate::rules::overflow_labels())
                    .or_insert_with(|| {
                        // One overflow series per (kind, source): bounded by the config.
                        self.event_series += 1;
                        0
                    }) += n;
            }
        }
        let error = ERROR_KINDS.contains(&kind);
        let m = self.minute(ev.ts);
        m.events += n;
        if error {
            m.errors += n;
        }
        *m.per_source_kind
            .entry((ev.source.clone(), ev.kind.clone()))
            .or_default() += n;
    }

    /// Remembers a poll's total depth.
    pub fn samples(&mut self, b: &SampleBatch) {
        if !b.complete {
            return;
        }
        let total: f64 = b
            .samples
            .iter()
            .filter(|s| s.metric == Metric::Depth)
            .fold(0.0, |a, s| a + s.value);
        self.depth.insert(b.source.clone(), total);
        let name = b.source.to_string();
        // Per application queue; a complete poll replaces the `[[queue]]`'s whole set.
        let others: usize = self
            .queue_depth
            .iter()
            .filter(|(k, _)| **k != name)
            .map(|(_, q)| q.len())
            .sum();
        let mut per_queue: BTreeMap<String, f64> = BTreeMap::new();
        for s in b.samples.iter().filter(|s| s.metric == Metric::Depth) {
            let q = s
                .labels
                .get("queue")
                .or_else(|| s.labels.get("key"))
                .unwrap_or("");
            let room = others + per_queue.len() < QUEUE_SERIES;
            match per_queue.get_mut(q) {
                Some(v) => *v += s.value,
                None if room => {
                    per_queue.insert(q.to_string(), s.value);
                }
                None => {}
            }
        }
        self.queue_depth.insert(name.clone(), per_queue.clone());
        let m = self.minute(b.at);
        m.depth.insert(name.clone(), total);
        m.queue_depth.insert(name, per_queue);
    }

    /// The snapshot at `now`.
    pub fn snapshot(&self, now: Ts) -> CountersSnapshot {
        let mut events: Vec<(String, String, Labels, u64)> = self
            .events
            .iter()
            .flat_map(|((k, s), m)| {
                m.iter()
                    .map(move |(l, n)| (k.to_string(), s.to_string(), l.clone(), *n))
            })
            .collect();
        events.sort();
        let oldest = Ts(minute_of(now)
            .0
            .saturating_sub(60_000 * (HISTORY_MINUTES as u64 - 1)));
        CountersSnapshot {
            at: Some(now),
            per_kind: self.per_kind.clone(),
            per_source: self.per_source.clone(),
            events,
            minutes: self
                .minutes
                .iter()
                .filter(|m| m.start >= oldest)
                .cloned()
                .collect(),
            event_series_overflow: self.event_overflow,
            ..CountersSnapshot::default()
        }
    }
}

/// Everything the HTTP listener reads. Created once per daemon; survives reloads.
pub struct Hub {
    /// The daemon clock.
    pub clock: Clock,
    /// When the daemon started.
    pub started: Ts,
    /// What the current config watches.
    pub layout: watch::Sender<Layout>,
    /// The file tailer's counters (published per poll tick).
    pub tailer: watch::Sender<TailerStats>,
    /// Classification counters.
    pub classify: watch::Sender<ClassifyStats>,
    /// The counters stage's view.
    pub counters: watch::Sender<CountersSnapshot>,
    /// What notify holds.
    pub notify: watch::Sender<NotifySnapshot>,
    /// Per `[[queue]]` name.
    pub queues: Mutex<BTreeMap<String, QueueStatus>>,
    /// Source task liveness per source name (false once its task ended).
    pub sources_alive: Mutex<BTreeMap<String, bool>>,
    /// The notification log and per-receiver counts.
    pub history: Mutex<Option<SharedHistory>>,
    /// Successful config reloads.
    pub reloads: std::sync::atomic::AtomicU64,
    /// Rejected config reloads.
    pub reload_failures: std::sync::atomic::AtomicU64,
}

impl Hub {
    /// A hub with empty snapshots.
    pub fn new(clock: Clock) -> Arc<Hub> {
        Arc::new(Hub {
            clock,
            started: clock.now(),
            layout: watch::Sender::new(Layout::default()),
            tailer: watch::Sender::new(TailerStats::default()),
            classify: watch::Sender::new(ClassifyStats::default()),
            counters: watch::Sender::new(CountersSnapshot::default()),
            notify: watch::Sender::new(NotifySnapshot::default()),
            queues: Mutex::new(BTreeMap::new()),
            sources_alive: Mutex::new(BTreeMap::new()),
            history: Mutex::new(None),
            reloads: Default::default(),
            reload_failures: Default::default(),
        })
    }

    /// Updates one queue's status.
    pub fn queue(&self, name: &str, f: impl FnOnce(&mut QueueStatus)) {
        let mut q = self.queues.lock().unwrap_or_else(|e| e.into_inner());
        f(q.entry(name.to_string()).or_default());
    }

    /// Marks sources as running or stopped.
    pub fn set_alive<'a>(&self, names: impl IntoIterator<Item = &'a str>, alive: bool) {
        let mut m = self.sources_alive.lock().unwrap_or_else(|e| e.into_inner());
        for n in names {
            m.insert(n.to_string(), alive);
        }
    }

    /// The notification history, if the notify stage has started.
    pub fn history(&self) -> Option<SharedHistory> {
        self.history
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(kind: &str, src: &str, ts: u64) -> Event {
        Event {
            ts: Ts(ts),
            source: src.into(),
            kind: kind.into(),
            pattern: "p".into(),
            labels: Labels::new(),
            value: None,
            message: Default::default(),
            signature: None,
            line: None,
            lines: 1,
            record: None,
            folded: 0,
            backfill: false,
        }
    }

    #[test]
    fn activity_counts_per_kind_source_and_minute() {
        let mut a = Activity::default();
        let t0 = 1_700_000_000_000 - 1_700_000_000_000 % 60_000;
        a.event(&ev("error", "w1", t0));
        a.event(&ev("processed", "w1", t0 + 1));
        a.event(&ev("error", "w2", t0 + 61_000));
        let s = a.snapshot(Ts(t0 + 61_000));
        assert_eq!(s.per_kind["error"], 2);
        assert_eq!(s.per_source["w1"].kinds["processed"], 1);
        assert_eq!(s.minutes.len(), 2);
        assert_eq!((s.minutes[0].events, s.minutes[0].errors), (2, 1));
        assert_eq!((s.minutes[1].events, s.minutes[1].errors), (1, 1));
        assert_eq!(s.events.len(), 3);
    }

    /// Issue 7: the event totals keep at most `max_series` label sets; the rest are counted
    /// in one overflow series per kind and source, and in the snapshot's overflow counter.
    #[test]
    fn event_totals_keep_at_most_max_series_label_sets() {
        let mut a = Activity::with_max_series(3);
        let t0 = 1_700_000_000_000;
        let task = |kind: &str, src: &str, i: usize| {
            let mut e = ev(kind, src, t0);
            e.labels = Labels::from_pairs([("task", format!("t{i}"))]);
            e
        };
        for i in 0..1000 {
            a.event(&task("processed", "w1", i));
        }
        a.event(&task("processed", "w1", 1)); // a kept label set still counts as itself
        a.event(&task("error", "w2", 5000)); // past the cap in another kind and source
        let s = a.snapshot(Ts(t0));
        let overflow = crate::rules::overflow_labels();
        let n = |kind: &str, src: &str, l: &Labels| {
            s.events
                .iter()
                .find(|(k, so, ll, _)| k == kind && so == src && ll == l)
                .map(|e| e.3)
        };
        assert_eq!(s.events.len(), 3 + 2, "3 label sets and 2 overflow series");
        assert_eq!(n("processed", "w1", &overflow), Some(997));
        assert_eq!(n("error", "w2", &overflow), Some(1));
        assert_eq!(
            n("processed", "w1", &Labels::from_pairs([("task", "t1")])),
            Some(2)
        );
        assert_eq!(s.event_series_overflow, 998);
        assert_eq!(s.per_kind["processed"], 1001, "totals per kind are exact");
        let total: u64 = s.events.iter().map(|e| e.3).sum();
        assert_eq!(total, 1002, "every event is counted once");

        // A reload that raises the cap makes room for new label sets.
        a.set_max_series(10);
        a.event(&task("processed", "w1", 2000));
        let s = a.snapshot(Ts(t0));
        assert!(s
            .events
            .iter()
            .any(|e| e.2 == Labels::from_pairs([("task", "t2000")])));
    }

    #[test]
    fn duration_histogram_buckets_at_their_upper_bounds() {
        let mut h = DurationHistogram::default();
        for s in [0.0005, 0.001, 0.0011, 2.0, 7.0] {
            h.observe(s);
        }
        let b = h.buckets();
        assert_eq!(b.len(), DURATION_BUCKETS.len() + 1);
        assert_eq!(
            b[0],
            (0.001, 2),
            "a bound is inclusive, like Prometheus's le"
        );
        assert_eq!(b[1], (0.0025, 1));
        assert_eq!(b[10], (2.5, 1));
        assert_eq!(b[12], (f64::INFINITY, 1));
        assert_eq!(h.count(), 5);
        assert!((h.sum - 9.0026).abs() < 1e-9, "{}", h.sum);
    }

    #[test]
    fn depth_is_kept_per_queue_and_carried_into_quiet_minutes() {
        use crate::queues::Sample;
        let sample = |queue: &str, part: &str, v: f64| Sample {
            labels: Labels::from_pairs([("queue", queue), ("part", part)]),
            metric: Metric::Depth,
            value: v,
        };
        let mut a = Activity::default();
        a.samples(&SampleBatch {
            source: "celery".into(),
            at: Ts(0),
            samples: vec![
                sample("default", "waiting", 3.0),
                sample("default", "active", 1.0),
                sample("emails", "waiting", 2.0),
            ],
            complete: true,
        });
        a.samples(&SampleBatch {
            source: "celery".into(),
            at: Ts(61_000),
            samples: vec![sample("default", "waiting", 5.0)],
            complete: true,
        });
        a.event(&ev("error", "w", 125_000));
        let s = a.snapshot(Ts(125_000));
        let q = |i: usize| &s.minutes[i].queue_depth["celery"];
        assert_eq!(q(0)["default"], 4.0);
        assert_eq!(q(0)["emails"], 2.0);
        assert_eq!(
            q(1).len(),
            1,
            "a complete poll replaces the set: {:?}",
            q(1)
        );
        assert_eq!(
            q(2)["default"],
            5.0,
            "a level carries into a minute without a poll"
        );
        assert_eq!(s.minutes[2].depth["celery"], 5.0);
    }

    #[test]
    fn per_queue_depth_is_capped() {
        use crate::queues::Sample;
        let mut a = Activity::default();
        let samples = (0..QUEUE_SERIES + 5)
            .map(|i| Sample {
                labels: Labels::from_pairs([("queue", format!("q{i:03}").as_str())]),
                metric: Metric::Depth,
                value: 1.0,
            })
            .collect();
        a.samples(&SampleBatch {
            source: "big".into(),
            at: Ts(0),
            samples,
            complete: true,
        });
        let s = a.snapshot(Ts(0));
        assert_eq!(s.minutes[0].queue_depth["big"].len(), QUEUE_SERIES);
        assert_eq!(s.minutes[0].depth["big"], (QUEUE_SERIES + 5) as f64);
    }

    #[test]
    fn history_keeps_an_hour() {
        let mut a = Activity::default();
        for m in 0..90u64 {
            a.event(&ev("error", "w", m * 60_000));
        }
        let s = a.snapshot(Ts(89 * 60_000));
        assert_eq!(s.minutes.len(), HISTORY_MINUTES);
        assert_eq!(s.minutes[0].start, Ts(30 * 60_000));
    }
}

//! Wires the stages together, runs them, and drains them on shutdown.
//!
//! ```text
//! sources ─mpsc<Vec<Line>>─▶ classify ─mpsc<CounterInput>─▶ counters ─mpsc<Alert>─▶ notify
//! redis ─▶ queues (one poller per [[queue]]) ─CounterInput─┘
//! ```
//! Shutdown is a channel cascade: only the sources watch the cancel token; every later stage
//! ends when its input channel closes, after flushing (classify closes open records, counters
//! evaluates once more, notify delivers what it holds). End of stdin ends the sources the
//! same way, so a finished pipe drains exactly like SIGTERM.

use std::collections::{HashSet, VecDeque};
use std::future::Future;
use std::io::Write;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::clock::Clock;
use crate::config::{Config, SourceConfig, SourceInput};
use crate::counters::{self, CounterInput, CountersReport, LineCount};
use crate::event::{same_str, Event, Line, Ts};
use crate::notify::{self, NotifySetup, NotifyStats, StdoutFactory};
use crate::ops::{self, Hub};
use crate::prepare::{Pending, PreparePool};
use crate::records::{Classifier, ClassifyStats, PreparedBatch};
pub use crate::reload::layout_of;
use crate::reload::{classifier_for, Pipeline};
use crate::sources;

/// How often the classify stage checks for idle records and closed fold windows.
const CLASSIFY_TICK: Duration = Duration::from_millis(200);

/// Re-reads the config for a reload (the file, plus the command line's overrides).
pub type Reload = Box<dyn Fn() -> anyhow::Result<Config> + Send + Sync>;

/// Options of `logwarden run` beyond the config file.
#[derive(Default)]
pub struct RunOptions {
    /// How to re-read the config on SIGHUP (`None`: SIGHUP keeps its default action).
    pub reload: Option<Reload>,
    /// Where to write every event as a JSON line.
    pub events: Option<Box<dyn Write + Send>>,
    /// Where stdout receivers write (default: the process's stdout).
    pub stdout: Option<StdoutFactory>,
}

/// What a run did.
#[derive(Debug, Default, Clone)]
pub struct RunReport {
    /// Classification counters.
    pub classify: ClassifyStats,
    /// Event and alert counts.
    pub counters: CountersReport,
    /// Notifications.
    pub notify: NotifyStats,
    /// Queue pollers.
    pub queues: Vec<crate::queues::poller::PollerReport>,
}

impl RunReport {
    /// One line for stderr at exit: `read 1200 lines: 800 processed, 12 error, ...; 3 alerts`.
    pub fn summary(&self) -> String {
        let kinds: Vec<String> = self
            .counters
            .per_kind
            .iter()
            .map(|(k, n)| format!("{n} {k}"))
            .collect();
        let kinds = if kinds.is_empty() {
            "no events".to_string()
        } else {
            kinds.join(", ")
        };
        let mut s = format!(
            "read {} lines ({} unmatched): {kinds}; {} notifications sent ({} firing, {} resolved)",
            self.classify.lines,
            self.classify.unmatched,
            self.notify.sent,
            self.notify.firing,
            self.notify.resolved
        );
        for (n, what) in [
            (self.notify.failed, "failed"),
            (self.notify.held, "held back by rate limits"),
            (
                self.notify.kept,
                "kept in the outbox journal for the next start",
            ),
            (self.notify.inhibited, "inhibited"),
            (
                self.notify.backfilled,
                "backfilled alert changes summarised",
            ),
        ] {
            if n > 0 {
                s.push_str(&format!("; {n} {what}"));
            }
        }
        for q in &self.queues {
            s.push_str(&format!(
                "; queue {}: {} polls, {} failed",
                q.name, q.stats.polls, q.stats.failed
            ));
        }
        if self.classify.truncated > 0 {
            s.push_str(&format!("; {} lines truncated", self.classify.truncated));
        }
        if self.classify.invalid_utf8 > 0 {
            s.push_str(&format!("; {} lines not UTF-8", self.classify.invalid_utf8));
        }
        s
    }
}

/// Runs the daemon until the sources end (stdin EOF) or `shutdown` completes, then drains
/// within `config.shutdown_grace`. With [`RunOptions::reload`], SIGHUP reloads the config
/// (see [`crate::reload`]).
pub async fn run(
    config: Config,
    opts: RunOptions,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<RunReport> {
    // Before anything can be seen from outside (the http port): a SIGHUP that arrives before
    // the handler exists would end the process (its default action).
    let mut hup = match opts
        .reload
        .as_ref()
        .map(|_| tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()))
    {
        Some(Ok(s)) => Some(s),
        Some(Err(e)) => {
            tracing::warn!(error = %e, "cannot install the SIGHUP handler; reload disabled");
            None
        }
        None => None,
    };
    let clock = Clock::start();
    let hub = Hub::new(clock);
    hub.layout.send_replace(layout_of(&config));
    let http = match config.http_listen {
        Some(addr) => match ops::http::Running::start(addr, hub.clone()).await {
            Ok(l) => Some(l),
            // Watching matters more than being watched: a taken port must not stop alerts.
            Err(e) => {
                tracing::error!(addr = %addr, error = %e, "cannot bind the http listener; running without /metrics and /health");
                None
            }
        },
        None => None,
    };
    let cancel = CancellationToken::new();
    let tasks = TaskTracker::new();
    let cap = config.channel_capacity;
    let (line_tx, line_rx) = mpsc::channel::<Vec<Line>>(cap);
    let (event_tx, event_rx) = mpsc::channel::<CounterInput>(cap);
    let (alert_tx, alert_rx) = mpsc::channel(cap.max(256));
    let (classifier_tx, classifier_rx) = mpsc::channel::<Classifier>(1);

    let mut srcs: Vec<SourceConfig> = config.sources.clone();
    // Stdin by default, unless the config only watches queues: such a daemon runs until a
    // signal (under a service manager stdin is /dev/null and would end it at once).
    if srcs.is_empty() && config.queues.is_empty() {
        srcs.push(SourceConfig::stdin());
    }
    let mut has_sources = !srcs.is_empty();
    let classifier = classifier_for(&config, &srcs);

    let stdin_srcs: Vec<SourceConfig> = srcs
        .into_iter()
        .filter(|s| s.input == SourceInput::Stdin)
        .collect();
    let has_stdin = !stdin_srcs.is_empty();
    let failed = CancellationToken::new();
    for src in stdin_srcs {
        let (tx, cancel, failed) = (line_tx.clone(), cancel.clone(), failed.clone());
        let (hub, name) = (hub.clone(), src.name.clone());
        hub.set_alive([&*name], true);
        tasks.spawn(async move {
            if let Err(e) = sources::stdin::run(tokio::io::stdin(), src, tx, cancel, clock).await {
                tracing::error!(source = "stdin", error = %e, "cannot read stdin");
                failed.cancel();
            }
            hub.set_alive([&*name], false);
        });
    }
    let mut pipeline = Pipeline {
        config,
        hub: hub.clone(),
        clock,
        tasks: tasks.clone(),
        cancel: cancel.clone(),
        failed: failed.clone(),
        line_tx,
        event_tx,
        classifier_tx,
        files: None,
        pollers: Vec::new(),
        queues: Vec::new(),
        notify_tx: None,
        http,
    };
    pipeline.start_files(None);
    pipeline.start_pollers(&[]);
    tasks.close();

    let guard = BackfillGuard::new(&pipeline.config);
    let classify = tokio::spawn(classify_stage(
        classifier,
        line_rx,
        pipeline.event_tx.clone(),
        opts.events,
        clock,
        guard,
        ClassifyControl {
            status: hub.classify.clone(),
            reload: classifier_rx,
        },
    ));
    let counters = tokio::spawn(counters::run(
        pipeline.config.rules.clone(),
        pipeline.config.max_series,
        event_rx,
        alert_tx,
        clock,
        hub.counters.clone(),
    ));
    let (notify_tx, notify_rx) = mpsc::channel(1);
    pipeline.notify_tx = Some(notify_tx);
    let notify_cfg = Arc::new(pipeline.config.notify.clone());
    let history = notify::new_history(&notify_cfg);
    *hub.history.lock().unwrap_or_else(|e| e.into_inner()) = Some(history.clone());
    let notify = tokio::spawn(notify::run(
        NotifySetup {
            history,
            status: Some(hub.notify.clone()),
            cfg: notify_cfg,
            state_dir: pipeline.config.state_dir.clone(),
            stdout: opts
                .stdout
                .unwrap_or_else(|| Box::new(|| Box::new(std::io::stdout()))),
            clock,
            grace: pipeline.config.shutdown_grace,
            reload: Some(notify_rx),
        },
        alert_rx,
    ));

    let sources_done = tasks.wait();
    tokio::pin!(sources_done);
    tokio::pin!(shutdown);
    loop {
        let hup_recv = async {
            match hup.as_mut() {
                Some(h) => h.recv().await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            () = &mut sources_done, if has_sources => {
                tracing::debug!("all sources ended");
                break;
            }
            () = &mut shutdown => {
                tracing::info!("shutdown requested, draining pipeline");
                break;
            }
            () = failed.cancelled() => {
                tracing::warn!("a source failed, draining pipeline");
                break;
            }
            _ = hup_recv => {
                if let Some(reload) = opts.reload.as_ref() {
                    tracing::info!(signal = "SIGHUP", "reloading config");
                    match reload() {
                        Ok(new) => {
                            pipeline.reload(new).await;
                            // A reload that leaves no source (only queues) runs on until a
                            // signal, like a queue-only start.
                            has_sources = has_stdin || pipeline.files.is_some();
                        }
                        Err(e) => {
                            hub.reload_failures.fetch_add(1, Ordering::Relaxed);
                            tracing::error!(error = %format!("{e:#}"), "config reload rejected; the old config keeps running");
                        }
                    }
                }
            }
        }
    }
    cancel.cancel();
    let grace = pipeline.config.shutdown_grace;
    let Pipeline {
        files,
        pollers,
        line_tx,
        event_tx,
        classifier_tx,
        notify_tx,
        queues: mut reports,
        http,
        ..
    } = pipeline;
    // Our own senders: classify ends when the sources' are gone, counters when classify's
    // and the pollers' are.
    drop((line_tx, event_tx, classifier_tx, notify_tx));
    let drained = tokio::time::timeout(grace, async {
        if let Some((_, h, _)) = files {
            // Its outcome was logged (and `failed` set) by the task itself.
            let _ = h.await;
        }
        sources_done.await;
        let classify = classify.await.context("classify stage panicked")?;
        for p in pollers {
            reports.push(p.handle.await.context("queue poller panicked")?);
        }
        let counters = counters.await.context("counters stage panicked")?;
        let notify = notify.await.context("notify stage panicked")?;
        anyhow::Ok(RunReport {
            classify,
            counters,
            notify,
            queues: reports,
        })
    })
    .await;
    if let Some(h) = http {
        h.stop().await;
    }
    let report = match drained {
        Ok(r) => r?,
        Err(_) => anyhow::bail!("the pipeline did not drain within {grace:?}"),
    };
    if failed.is_cancelled() {
        anyhow::bail!("a source failed (see the log above); {}", report.summary());
    }
    Ok(report)
}

/// What the classify stage publishes to and takes from the rest of the daemon.
pub struct ClassifyControl {
    /// Its counters, for `/metrics` (published per tick).
    pub status: watch::Sender<ClassifyStats>,
    /// A new classifier after a config reload.
    pub reload: mpsc::Receiver<Classifier>,
}

/// The classify stage: lines → records/incidents → events, written to `--events` and sent on.
pub async fn classify_stage(
    mut classifier: Classifier,
    mut rx: mpsc::Receiver<Vec<Line>>,
    tx: mpsc::Sender<CounterInput>,
    mut events_out: Option<Box<dyn Write + Send>>,
    clock: Clock,
    mut guard: BackfillGuard,
    control: ClassifyControl,
) -> ClassifyStats {
    let ClassifyControl { status, mut reload } = control;
    if events_out.is_none() {
        classifier.unprinted();
    }
    let mut tick = tokio::time::interval(CLASSIFY_TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut events_failed = false;
    let pool = match PreparePool::new() {
        Ok(p) => Some(p),
        Err(e) => {
            tracing::warn!(error = %e, "cannot start pattern threads; classifying on the stage's own");
            None
        }
    };
    // Batches handed to the pool, oldest first, with their line counts.
    let mut inflight: VecDeque<InFlight> = VecDeque::new();
    loop {
        let mut out = Vec::new();
        let mut counts: Vec<LineCount> = Vec::new();
        let room = pool.as_ref().map_or(1, PreparePool::depth) > inflight.len();
        // Not `biased`: under a steady load the first two branches may always be ready, and
        // the tick (record timeouts, stats) and a reload must still get their turn.
        let open = tokio::select! {
            // The oldest batch's pattern work is done: its record logic, in order.
            done = oldest(&mut inflight) => {
                settle(&mut classifier, done, &mut out, &mut counts);
                true
            }
            batch = rx.recv(), if room => match batch {
                Some(mut lines) => {
                    guard.mark(&mut lines, clock.now());
                    count_lines(&lines, &mut counts);
                    match &pool {
                        // A short batch with nothing in flight (a quiet or moderate load):
                        // the hand-off to a pattern thread and back would cost more than it
                        // saves, and the stage's own search caches are warm.
                        Some(_) if inflight.is_empty() && lines.len() < INLINE_BATCH => {
                            for l in &lines {
                                classifier.push(l, &mut out);
                            }
                        }
                        Some(pool) => {
                            let n = lines.len();
                            let pending = pool.submit(classifier.job(lines));
                            inflight.push_back(InFlight { pending, counts, n });
                            continue;
                        }
                        None => classifier.push_batch(&lines, &mut out),
                    }
                    true
                }
                None => false,
            },
            _ = tick.tick() => {
                classifier.tick(clock.now(), &mut out);
                status.send_replace(classifier.stats.clone());
                true
            }
            Some(mut next) = reload.recv() => {
                // Batches in flight were searched with the old patterns: they go first; then
                // open records end with the old patterns; the counts carry on.
                while let Some(f) = inflight.front_mut() {
                    let done = wait(f).await;
                    inflight.pop_front();
                    settle(&mut classifier, done, &mut out, &mut counts);
                }
                classifier.finish(&mut out);
                next.stats = classifier.stats.clone();
                if events_out.is_none() {
                    next.unprinted();
                }
                classifier = next;
                true
            }
        };
        if !open {
            while let Some(f) = inflight.front_mut() {
                let done = wait(f).await;
                inflight.pop_front();
                settle(&mut classifier, done, &mut out, &mut counts);
            }
            classifier.finish(&mut out);
        }
        if !out.is_empty() || !counts.is_empty() {
            if let Some(w) = events_out.as_mut() {
                if let Err(e) = write_events(w, &out) {
                    if !events_failed {
                        tracing::warn!(error = %e, "cannot write --events output");
                        events_failed = true;
                    }
                }
            }
            let input = CounterInput::Events {
                events: out,
                lines: counts,
            };
            if tx.send(input).await.is_err() {
                tracing::warn!("counters stage is gone");
            }
        }
        if !open {
            break;
        }
    }
    status.send_replace(classifier.stats.clone());
    classifier.stats.clone()
}

/// Batches shorter than this are classified on the stage itself, line by line, when none is
/// in flight. 100 files written at 100 lines/s each (`scripts/bench-steady`): ticks of a few
/// hundred lines, each handed to a pattern thread and back, cost ~8 % more CPU.
const INLINE_BATCH: usize = 1024;

/// A batch in the [`PreparePool`].
struct InFlight {
    pending: Pending,
    /// Its line counts, sent with its events.
    counts: Vec<LineCount>,
    /// How many lines it has.
    n: usize,
}

/// The oldest batch in flight, once its pattern work is done (never, with none in flight).
async fn oldest(inflight: &mut VecDeque<InFlight>) -> (Option<PreparedBatch>, Vec<LineCount>) {
    let Some(f) = inflight.front_mut() else {
        return std::future::pending().await;
    };
    let done = wait(f).await;
    inflight.pop_front();
    done
}

/// A batch's result; `None` if its thread died (cannot happen: a job catches its panics).
async fn wait(f: &mut InFlight) -> (Option<PreparedBatch>, Vec<LineCount>) {
    let batch = (&mut f.pending).await.ok();
    if batch.is_none() {
        tracing::error!(
            lines = f.n,
            "a pattern thread died with a batch; its lines are lost"
        );
    }
    (batch, std::mem::take(&mut f.counts))
}

/// A finished batch through the record logic: its events to `out`, its counts to `counts`.
fn settle(
    classifier: &mut Classifier,
    (batch, c): (Option<PreparedBatch>, Vec<LineCount>),
    out: &mut Vec<Event>,
    counts: &mut Vec<LineCount>,
) {
    if let Some(batch) = batch {
        classifier.push_prepared_batch(batch, out);
    }
    counts.extend(c);
}

/// Lines per (source, labels) of one batch: one entry per source, not per line.
fn count_lines(lines: &[Line], counts: &mut Vec<LineCount>) {
    let of = |c: &LineCount, l: &Line| same_str(&c.source, l.source()) && c.labels == *l.labels();
    let mut last = usize::MAX;
    for l in lines {
        // A batch holds runs of one file's lines: the entry of the line before is tried
        // first. Searching all entries per line, with 100 files labelled by file, was
        // ~2.6 % of the daemon's CPU writing them at 100 lines/s each (`perf`: comparing
        // label values).
        let found = match counts.get(last) {
            Some(c) if of(c, l) => Some(last),
            _ => counts.iter().position(|c| of(c, l)),
        };
        match found {
            Some(i) => {
                let c = &mut counts[i];
                c.n += 1;
                c.at = c.at.max(l.at);
                last = i;
            }
            None => {
                last = counts.len();
                counts.push(LineCount {
                    source: l.source().clone(),
                    labels: l.labels().clone(),
                    n: 1,
                    at: l.at,
                });
            }
        }
    }
}

fn write_events(w: &mut Box<dyn Write + Send>, events: &[Event]) -> std::io::Result<()> {
    for e in events {
        serde_json::to_writer(&mut *w, e)?;
        w.write_all(b"\n")?;
    }
    w.flush()
}

/// The catch-up guard: a line read from data that was already in a file at start-up
/// ([`Line::catch_up`]) whose own timestamp is older than `catch_up_window` is backfill: it
/// counts, but the alerts it raises go out as one summary. A line without a recognisable
/// timestamp is not backfill (its alerts go out normally). Timestamps without a zone are
/// read as UTC, so the window is widened by the host's UTC offset: a fresh local-time line
/// on a UTC−5 host never looks five hours old.
///
/// A file is written in time order, so once a stream's catch-up reaches a line that is
/// recent, the rest of its catch-up is recent too and is not parsed: parsing every line's
/// timestamp made catching up on a backlog cost ~3× as much as reading new lines (11,000
/// against 3,900 instructions a line, bench corpus, callgrind). A late line that is older
/// than one before it (interleaved writers) is therefore not backfill.
pub struct BackfillGuard {
    window: Duration,
    ts_regex: Option<regex::bytes::Regex>,
    year: i32,
    /// Streams (source, open sequence number) whose catch-up reached a recent line.
    recent: HashSet<(Arc<str>, u64)>,
}

impl BackfillGuard {
    /// The guard for `config` (its `tailer.catch_up_window` and `replay` timestamp settings).
    pub fn new(config: &Config) -> BackfillGuard {
        BackfillGuard {
            window: config.tailer.catch_up_window + utc_offset(),
            ts_regex: config.replay.timestamp_regex.clone(),
            year: config
                .replay
                .year
                .unwrap_or_else(crate::replay::current_year),
            recent: HashSet::new(),
        }
    }

    /// Sets [`Line::backfill`] on the catch-up lines of a batch.
    pub fn mark(&mut self, lines: &mut [Line], now: Ts) {
        // The last stream found recent: a batch's lines mostly come from one stream.
        let mut last: Option<(Arc<str>, u64)> = None;
        for l in lines.iter_mut().filter(|l| l.catch_up) {
            if last
                .as_ref()
                .is_some_and(|(s, n)| same_str(s, l.source()) && *n == l.stream())
            {
                continue;
            }
            let key = (l.source().clone(), l.stream());
            if !self.recent.contains(&key) {
                match crate::replay::parse_timestamp(&l.bytes, self.ts_regex.as_ref(), self.year) {
                    Some(t) if t.plus(self.window) < now => {
                        l.backfill = true;
                        continue;
                    }
                    Some(_) => {
                        self.recent.insert(key.clone());
                    }
                    None => continue,
                }
            }
            last = Some(key);
        }
    }
}

/// The host's distance from UTC (absolute), from the C library's local time.
fn utc_offset() -> Duration {
    // SAFETY: localtime_r writes only into `tm`, which we own.
    let off = unsafe {
        let t = libc::time(std::ptr::null_mut());
        let mut tm: libc::tm = std::mem::zeroed();
        if libc::localtime_r(&t, &mut tm).is_null() {
            0
        } else {
            tm.tm_gmtoff
        }
    };
    Duration::from_secs(off.unsigned_abs())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{Labels, Origin};

    fn catch_up(source: &str, stream: u64, text: &str) -> Line {
        Line {
            catch_up: true,
            ..Line::new(
                Origin::new(Arc::from(source), stream, Labels::new()),
                text.as_bytes(),
                Ts(0),
            )
        }
    }

    /// A stream's catch-up is backfill until its first recent line; after that its lines are
    /// not parsed (a late old line stays live), and other streams are judged on their own.
    #[test]
    fn catch_up_is_backfill_until_a_stream_reaches_a_recent_line() {
        let cfg =
            Config::from_str_named("t.toml", "[tailer]\ncatch_up_window = \"5m\"\n", None).unwrap();
        let mut guard = BackfillGuard::new(&cfg);
        // No host offset in the test.
        guard.window = Duration::from_secs(300);
        let now = Ts(1_795_428_000_000); // 2026-11-23 10:00:00Z
        let mut lines = vec![
            catch_up("a", 1, "2026-11-23 08:00:00,000 ERROR [x] old"),
            catch_up("a", 1, "no timestamp here"),
            catch_up("a", 1, "2026-11-23 09:00:00,000 ERROR [x] old"),
            catch_up("a", 1, "2026-11-23 09:58:00,000 ERROR [x] recent"),
            catch_up("a", 1, "2026-11-23 08:30:00,000 ERROR [x] late but old"),
            catch_up("a", 2, "2026-11-23 08:00:00,000 ERROR [x] old, a new file"),
            catch_up(
                "b",
                1,
                "2026-11-23 08:00:00,000 ERROR [x] old, another source",
            ),
        ];
        let mut live = catch_up("b", 1, "2026-11-23 07:00:00,000 read after start-up");
        live.catch_up = false;
        lines.push(live);
        guard.mark(&mut lines, now);
        let backfill: Vec<bool> = lines.iter().map(|l| l.backfill).collect();
        assert_eq!(
            backfill,
            [true, false, true, false, false, true, true, false],
            "{lines:#?}"
        );
        // The next batch of stream a/1 is not parsed at all; b/1 still is.
        let mut next = vec![
            catch_up("a", 1, "2026-11-23 08:00:00,000 old again"),
            catch_up("b", 1, "2026-11-23 08:00:00,000 old"),
        ];
        guard.mark(&mut next, now);
        assert!(!next[0].backfill && next[1].backfill, "{next:#?}");
    }

    /// One entry per (source, labels), whatever the runs: runs of one file, lines of files
    /// alternating, a source seen again after others, equal labels in separate allocations.
    #[test]
    fn lines_are_counted_per_source_and_labels() {
        let line = |source: &str, worker: &str, at: u64| {
            let labels = Labels::from_pairs([("worker", worker)]);
            Line::new(Origin::new(Arc::from(source), 1, labels), &b"x"[..], Ts(at))
        };
        let spec = [
            ("a", "w1"),
            ("a", "w1"),
            ("a", "w2"),
            ("b", "w1"),
            ("a", "w1"),
            ("b", "w1"),
            ("a", "w2"),
            ("a", "w2"),
            ("c", "w3"),
            ("a", "w1"),
        ];
        let lines: Vec<Line> = spec
            .iter()
            .enumerate()
            .map(|(i, (s, w))| line(s, w, i as u64))
            .collect();
        let mut counts = Vec::new();
        count_lines(&lines, &mut counts);
        let got: Vec<(String, String, u64, u64)> = counts
            .iter()
            .map(|c| {
                let w = c.labels.get("worker").unwrap_or_default();
                (c.source.to_string(), w.to_string(), c.n, c.at.0)
            })
            .collect();
        let want = [
            ("a", "w1", 4, 9),
            ("a", "w2", 3, 7),
            ("b", "w1", 2, 5),
            ("c", "w3", 1, 8),
        ];
        let want: Vec<(String, String, u64, u64)> = want
            .iter()
            .map(|(s, w, n, at)| (s.to_string(), w.to_string(), *n, *at))
            .collect();
        assert_eq!(got, want);
    }
}

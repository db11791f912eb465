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
use crate::event::{Event, Line, Ts};
use crate::notify::{self, NotifySetup, NotifyStats, StdoutFactory};
use crate::ops::{self, Hub, Layout, QueueLayout};
use crate::records::{Classifier, ClassifyStats};
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
/// (see [`Pipeline::reload`]).
pub async fn run(
    config: Config,
    opts: RunOptions,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<RunReport> {
    let clock = Clock::start();
    let hub = Hub::new(clock);
    hub.layout.send_replace(layout_of(&config));
    let http_cancel = CancellationToken::new();
    let http = match config.http_listen {
        Some(addr) => match ops::http::bind(addr).await {
            Ok(l) => Some(tokio::spawn(ops::http::serve(
                l,
                hub.clone(),
                http_cancel.clone(),
            ))),
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
        },
        alert_rx,
    ));

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
        queues: mut reports,
        ..
    } = pipeline;
    // Our own senders: classify ends when the sources' are gone, counters when classify's
    // and the pollers' are.
    drop((line_tx, event_tx, classifier_tx));
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
    http_cancel.cancel();
    if let Some(h) = http {
        // A listener that panicked changes nothing about the drain's result.
        let _ = h.await;
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

/// The classifier for `config` and its sources.
fn classifier_for(config: &Config, srcs: &[SourceConfig]) -> Classifier {
    let mut classifier = Classifier::new(
        config.patterns.clone(),
        config.records,
        config.max_label_values,
    );
    for s in srcs {
        if !s.multiline {
            classifier.single_line(s.name.clone());
        }
    }
    classifier
}

type FileTask = tokio::task::JoinHandle<Vec<sources::file::Checkpoint>>;

/// One running queue poller.
struct PollerTask {
    name: Arc<str>,
    /// Its config as text: a reload restarts the poller only when this changed.
    fingerprint: String,
    cancel: CancellationToken,
    handle: tokio::task::JoinHandle<crate::queues::poller::PollerReport>,
}

/// The restartable part of the running daemon: file sources and queue pollers, plus the
/// senders a reload uses to hand new patterns to classify and new rules to counters.
/// Classify, counters and notify keep running across reloads, so windows, alert state and
/// pending notifications are never rebuilt from scratch.
struct Pipeline {
    config: Config,
    hub: Arc<Hub>,
    clock: Clock,
    tasks: TaskTracker,
    cancel: CancellationToken,
    failed: CancellationToken,
    line_tx: mpsc::Sender<Vec<Line>>,
    event_tx: mpsc::Sender<CounterInput>,
    classifier_tx: mpsc::Sender<Classifier>,
    /// The file tailer: its cancel token, its task (returning its last checkpoints) and the
    /// config it runs with (as text).
    files: Option<(CancellationToken, FileTask, String)>,
    pollers: Vec<PollerTask>,
    /// Reports of pollers stopped by reloads.
    queues: Vec<crate::queues::poller::PollerReport>,
}

impl Pipeline {
    fn file_sources(&self) -> Vec<SourceConfig> {
        self.config
            .sources
            .iter()
            .filter(|s| s.input != SourceInput::Stdin)
            .cloned()
            .collect()
    }

    fn files_fingerprint(&self) -> String {
        format!(
            "{:?} {:?} {:?}",
            self.file_sources(),
            self.config.tailer,
            self.config.state_dir
        )
    }

    /// Starts the file tailer for the current config, resuming from `resume` when given.
    fn start_files(&mut self, resume: Option<Vec<sources::file::Checkpoint>>) {
        let file_srcs = self.file_sources();
        if file_srcs.is_empty() {
            return;
        }
        let (tx, failed) = (self.line_tx.clone(), self.failed.clone());
        let cancel = self.cancel.child_token();
        let (tailer, state_dir) = (self.config.tailer.clone(), self.config.state_dir.clone());
        let (hub, clock) = (self.hub.clone(), self.clock);
        let names: Vec<Arc<str>> = file_srcs.iter().map(|s| s.name.clone()).collect();
        hub.set_alive(names.iter().map(|n| &**n), true);
        let c2 = cancel.clone();
        let handle = self.tasks.spawn(async move {
            let stats = Some(hub.tailer.clone());
            let res = sources::file::run_resuming(
                file_srcs, tailer, state_dir, tx, c2, clock, stats, resume,
            )
            .await;
            hub.set_alive(names.iter().map(|n| &**n), false);
            match res {
                Ok(cps) => cps,
                Err(e) => {
                    tracing::error!(error = %e, "file sources failed");
                    failed.cancel();
                    Vec::new()
                }
            }
        });
        self.files = Some((cancel, handle, self.files_fingerprint()));
    }

    /// Starts a poller for every `[[queue]]` of the current config not in `running`.
    fn start_pollers(&mut self, running: &[String]) {
        for q in &self.config.queues {
            let fingerprint = format!("{q:?}");
            if running.contains(&fingerprint) {
                continue;
            }
            let cancel = self.cancel.child_token();
            let handle = tokio::spawn(crate::queues::run(
                q.clone(),
                self.event_tx.clone(),
                cancel.clone(),
                self.clock,
                self.hub.clone(),
            ));
            self.pollers.push(PollerTask {
                name: q.name.clone(),
                fingerprint,
                cancel,
                handle,
            });
        }
    }

    /// Applies a new, valid config: new patterns go to classify (open records of the old
    /// classifier are flushed first), new rules to counters (unchanged rules keep their
    /// windows and alert state), the file tailer restarts when its sources changed (from
    /// the old tailer's last checkpoints, so it resumes exactly), and pollers restart when
    /// their `[[queue]]` changed. Receivers, routes, stdin, `[http]` and the channel sizes
    /// keep their start-up values until a restart (logged when they differ).
    async fn reload(&mut self, new: Config) {
        let old = std::mem::replace(&mut self.config, new);
        let mut needs_restart = Vec::new();
        if format!("{:?}", old.notify) != format!("{:?}", self.config.notify) {
            needs_restart.push("receivers, routes and [notify]");
        }
        if old.http_listen != self.config.http_listen {
            needs_restart.push("[http]");
        }
        if old.channel_capacity != self.config.channel_capacity
            || old.shutdown_grace != self.config.shutdown_grace
        {
            needs_restart.push("limits.channel_capacity and shutdown_grace");
        }
        let stdin = |c: &Config| c.sources.iter().any(|s| s.input == SourceInput::Stdin);
        if stdin(&old) != stdin(&self.config) {
            needs_restart.push("stdin sources");
        }
        if !needs_restart.is_empty() {
            tracing::warn!(
                settings = needs_restart.join(", "),
                "these settings changed and take effect on restart only"
            );
        }
        let srcs: Vec<SourceConfig> = self.config.sources.clone();
        // A closed channel means classify or counters is gone: we are draining anyway.
        let _ = self
            .classifier_tx
            .send(classifier_for(&self.config, &srcs))
            .await;
        let _ = self
            .event_tx
            .send(CounterInput::Reload {
                rules: self.config.rules.clone(),
                max_series: self.config.max_series,
            })
            .await;

        if self.files.as_ref().map(|f| f.2.as_str()) != Some(self.files_fingerprint().as_str()) {
            // Keep the tracker open while the tailer is swapped, or the daemon would see
            // "all sources ended" in between.
            self.tasks.reopen();
            let mut resume = None;
            if let Some((cancel, handle, _)) = self.files.take() {
                cancel.cancel();
                resume = handle.await.ok();
            }
            if let Some(old_names) = resume.as_ref() {
                tracing::debug!(files = old_names.len(), "file tailer stopped for reload");
            }
            let alive: Vec<String> = self
                .config
                .sources
                .iter()
                .map(|s| s.name.to_string())
                .collect();
            self.hub
                .sources_alive
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .retain(|n, _| alive.contains(n));
            self.start_files(resume);
            self.tasks.close();
        }

        let wanted: Vec<String> = self
            .config
            .queues
            .iter()
            .map(|q| format!("{q:?}"))
            .collect();
        let (keep, stop): (Vec<PollerTask>, Vec<PollerTask>) = std::mem::take(&mut self.pollers)
            .into_iter()
            .partition(|p| wanted.contains(&p.fingerprint));
        for p in stop {
            p.cancel.cancel();
            if let Ok(r) = p.handle.await {
                self.queues.push(r);
            }
            self.hub
                .queues
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .remove(&*p.name);
            // Clears its down state: a restarted poller reports down again if it still is.
            let _ = self
                .event_tx
                .send(CounterInput::Health(crate::queues::Health {
                    source: p.name.clone(),
                    up: true,
                    at: self.clock.now(),
                    down_after: Duration::ZERO,
                    error: None,
                }))
                .await;
        }
        let running: Vec<String> = keep.iter().map(|p| p.fingerprint.clone()).collect();
        self.pollers = keep;
        self.start_pollers(&running);

        self.hub.layout.send_replace(layout_of(&self.config));
        self.hub.reloads.fetch_add(1, Ordering::Relaxed);
        tracing::info!(
            sources = self.config.sources.len(),
            rules = self.config.rules.len(),
            queues = self.config.queues.len(),
            "config reloaded"
        );
    }
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
    guard: BackfillGuard,
    control: ClassifyControl,
) -> ClassifyStats {
    let ClassifyControl { status, mut reload } = control;
    let mut tick = tokio::time::interval(CLASSIFY_TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut events_failed = false;
    loop {
        let mut out = Vec::new();
        let mut counts: Vec<LineCount> = Vec::new();
        let open = tokio::select! {
            batch = rx.recv() => match batch {
                Some(mut lines) => {
                    let now = clock.now();
                    for l in &mut lines {
                        if l.catch_up {
                            l.backfill = guard.is_old(&l.bytes, now);
                        }
                        classifier.push(l, &mut out);
                    }
                    count_lines(&lines, &mut counts);
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
                // Open records end with the old patterns; the counts carry on.
                classifier.finish(&mut out);
                next.stats = classifier.stats.clone();
                classifier = next;
                true
            }
        };
        if !open {
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

/// What `config` watches, for `/status` and `/health`.
pub fn layout_of(config: &Config) -> Layout {
    let mut sources: Vec<(String, String)> = config
        .sources
        .iter()
        .map(|s| {
            let input = match &s.input {
                SourceInput::Stdin => "stdin".to_string(),
                SourceInput::Files { glob } => glob.clone(),
            };
            (s.name.to_string(), input)
        })
        .collect();
    if sources.is_empty() && config.queues.is_empty() {
        sources.push(("stdin".into(), "stdin".into()));
    }
    Layout {
        sources,
        queues: config
            .queues
            .iter()
            .map(|q| QueueLayout {
                name: q.name.to_string(),
                url: q.redacted_url(),
                interval: q.interval,
                timeout: q.timeout,
            })
            .collect(),
        rules: config
            .rules
            .iter()
            .map(|r| {
                (
                    r.name.to_string(),
                    r.type_name().to_string(),
                    r.severity.as_str().to_string(),
                )
            })
            .collect(),
        receivers: config
            .notify
            .receivers
            .iter()
            .map(|r| r.name.clone())
            .collect(),
        config_file: config.file.as_ref().map(|f| f.display().to_string()),
    }
}

/// Lines per (source, labels) of one batch: one entry per source, not per line.
fn count_lines(lines: &[Line], counts: &mut Vec<LineCount>) {
    for l in lines {
        match counts
            .iter_mut()
            .find(|c| c.source == l.source && c.labels == l.labels)
        {
            Some(c) => {
                c.n += 1;
                c.at = c.at.max(l.at);
            }
            None => counts.push(LineCount {
                source: l.source.clone(),
                labels: l.labels.clone(),
                n: 1,
                at: l.at,
            }),
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
pub struct BackfillGuard {
    window: Duration,
    ts_regex: Option<regex::bytes::Regex>,
    year: i32,
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
        }
    }

    /// True when `line` carries a timestamp older than the window at `now`.
    pub fn is_old(&self, line: &[u8], now: Ts) -> bool {
        crate::replay::parse_timestamp(line, self.ts_regex.as_ref(), self.year)
            .is_some_and(|t| t.plus(self.window) < now)
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

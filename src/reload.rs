//! SIGHUP reload: the restartable part of the running daemon ([`Pipeline`]: the file tailer,
//! the queue pollers and the HTTP listener, plus the senders that hand new patterns to
//! classify, new rules to counters and new receivers and routes to notify), and what the ops
//! pages learn about a config ([`layout_of`]).
//!
//! Classify, counters and notify keep running across reloads, so windows, alert state and
//! pending notifications are never rebuilt from scratch; ARCHITECTURE.md ("Operations") says
//! what is reloaded and what needs a restart.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::clock::Clock;
use crate::config::{Config, SourceConfig, SourceInput};
use crate::counters::CounterInput;
use crate::event::Line;
use crate::notify::config::NotifyConfig;
use crate::ops::{self, Hub, Layout, QueueLayout};
use crate::records::Classifier;
use crate::sources;

/// The classifier for `config` and its sources.
pub(crate) fn classifier_for(config: &Config, srcs: &[SourceConfig]) -> Classifier {
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

pub(crate) type FileTask = tokio::task::JoinHandle<Vec<sources::file::Checkpoint>>;

/// One running queue poller.
pub(crate) struct PollerTask {
    pub(crate) name: Arc<str>,
    /// Its config as text: a reload restarts the poller only when this changed.
    pub(crate) fingerprint: String,
    pub(crate) cancel: CancellationToken,
    pub(crate) handle: tokio::task::JoinHandle<crate::queues::poller::PollerReport>,
}

/// The restartable part of the running daemon: file sources and queue pollers, plus the
/// senders a reload uses to hand new patterns to classify and new rules to counters.
/// Classify, counters and notify keep running across reloads, so windows, alert state and
/// pending notifications are never rebuilt from scratch.
pub(crate) struct Pipeline {
    pub(crate) config: Config,
    pub(crate) hub: Arc<Hub>,
    pub(crate) clock: Clock,
    pub(crate) tasks: TaskTracker,
    pub(crate) cancel: CancellationToken,
    pub(crate) failed: CancellationToken,
    pub(crate) line_tx: mpsc::Sender<Vec<Line>>,
    pub(crate) event_tx: mpsc::Sender<CounterInput>,
    pub(crate) classifier_tx: mpsc::Sender<Classifier>,
    /// The file tailer: its cancel token, its task (returning its last checkpoints) and the
    /// config it runs with (as text).
    pub(crate) files: Option<(CancellationToken, FileTask, String)>,
    pub(crate) pollers: Vec<PollerTask>,
    /// Reports of pollers stopped by reloads.
    pub(crate) queues: Vec<crate::queues::poller::PollerReport>,
    /// Hands new receivers, routes, inhibitions and `[notify]` settings to notify.
    pub(crate) notify_tx: Option<mpsc::Sender<Arc<NotifyConfig>>>,
    /// The HTTP listener (`None`: disabled, or its address could not be bound).
    pub(crate) http: Option<ops::http::Running>,
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

    /// Starts the file tailer for the current config, taking over from a stopped one when
    /// `resume` is given.
    pub(crate) fn start_files(&mut self, resume: Option<sources::file::Handover>) {
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
    pub(crate) fn start_pollers(&mut self, running: &[String]) {
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
    /// windows and alert state), new receivers and routes to notify (see
    /// `Notifier::reconfigure`), the file tailer restarts when its sources changed (from the
    /// old tailer's last checkpoints and counters, so it resumes exactly), pollers restart
    /// when their `[[queue]]` changed, and the HTTP listener moves when its address changed.
    /// Stdin and the channel sizes keep their start-up values until a restart (logged when
    /// they differ).
    pub(crate) async fn reload(&mut self, new: Config) {
        let old = std::mem::replace(&mut self.config, new);
        let mut needs_restart = Vec::new();
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
        if old.notify != self.config.notify {
            if let Some(tx) = &self.notify_tx {
                // Closed: notify is draining, and so are we.
                let _ = tx.send(Arc::new(self.config.notify.clone())).await;
            }
        }
        self.rebind_http().await;

        if self.files.as_ref().map(|f| f.2.as_str()) != Some(self.files_fingerprint().as_str()) {
            // Keep the tracker open while the tailer is swapped, or the daemon would see
            // "all sources ended" in between.
            self.tasks.reopen();
            let mut resume = None;
            if let Some((cancel, handle, _)) = self.files.take() {
                cancel.cancel();
                // A tailer that failed returns nothing: then the new one reads the checkpoint
                // file. Its counters are the last it published (its final ones when it stopped).
                let checkpoints = handle.await.ok().filter(|cps| !cps.is_empty());
                tracing::debug!(
                    files = checkpoints.as_ref().map(Vec::len),
                    "file tailer stopped for reload; handing over its offsets and counters"
                );
                resume = Some(sources::file::Handover {
                    checkpoints,
                    stats: self.hub.tailer.borrow().clone(),
                });
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
            // A `[[queue]]` that stays (restarted with new settings) keeps its counters: its
            // new poller counts on from them, so `/metrics` counters never go back.
            if !self.config.queues.iter().any(|q| q.name == p.name) {
                self.hub
                    .queues
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .remove(&*p.name);
            }
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

impl Pipeline {
    /// Moves the HTTP listener to the configured address: the new one binds first, then the
    /// old one stops; if the new address cannot be bound, the old listener keeps serving
    /// (and the next reload tries again).
    async fn rebind_http(&mut self) {
        let want = self.config.http_listen;
        if want == self.http.as_ref().map(|h| h.addr) {
            return;
        }
        let Some(addr) = want else {
            if let Some(old) = self.http.take() {
                let from = old.addr;
                old.stop().await;
                tracing::info!(addr = %from, "http listener stopped: disabled by the new config");
            }
            return;
        };
        match ops::http::Running::start(addr, self.hub.clone()).await {
            Ok(new) => {
                if let Some(old) = self.http.replace(new) {
                    let from = old.addr;
                    old.stop().await;
                    tracing::info!(from = %from, to = %addr, "http listener moved");
                }
            }
            Err(e) => match &self.http {
                Some(old) => tracing::error!(addr = %addr, error = %e, serving = %old.addr,
                    "cannot bind the new http address; the old listener keeps serving"),
                None => tracing::error!(addr = %addr, error = %e,
                    "cannot bind the http listener; running without /metrics and /health"),
            },
        }
    }
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

//! Notification: alert state changes in, messages out.
//!
//! ```text
//! counters ─Alert─▶ Notifier (route, inhibit, group, repeat, backfill summary)
//!                     └─▶ Gate per receiver (rate limit → digest) ─▶ Outbox ─▶ Worker (deadline, retries)
//! ```
//! [`core::Notifier`] and [`deliver::Gate`] are pure (time passed in): the daemon, `replay`
//! and the tests drive the same code. Workers run one per receiver, so a dead receiver only
//! fills its own outbox, where messages for one group coalesce; counting never waits.
//! Alert state and the notification log are saved under `state_dir` ([`state`]); what sits in
//! the outboxes is journaled there ([`journal`]) and sent after a crash.

pub mod config;
pub mod core;
pub mod deliver;
pub mod format;
pub mod journal;
mod reload;
pub mod state;
#[cfg(test)]
mod testing;

use std::io::Write;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::Serialize;
use tokio::sync::mpsc;

use crate::clock::Clock;
use crate::event::Ts;
use crate::rules::Alert;

use self::config::NotifyConfig;
use self::core::{Body, Change, Message, Notifier, Remap};
use self::deliver::{Gate, History, Outbox, Outcome, SharedHistory};
pub use self::format::{format_text, short_duration};
use self::journal::Journal;

/// How long after a restart a restored firing alert waits for the rules to confirm it
/// (at least; an alert's own window counts when longer).
pub const RESTORE_CONFIRM: Duration = Duration::from_secs(60);

/// The notifier and one rate gate per receiver: what the daemon and `replay` share.
pub struct Dispatcher {
    /// Routing, grouping and repeats.
    pub notifier: Notifier,
    gates: Vec<Gate>,
}

/// What one [`Dispatcher::tick`] produced.
#[derive(Debug, Default)]
pub struct Tick {
    /// Messages to deliver (digests included).
    pub send: Vec<Message>,
    /// Messages a rate limit held back (they are listed in a later digest).
    pub held: Vec<Message>,
}

impl Dispatcher {
    /// What the gates hold for digests, by receiver name.
    pub fn held_digests(&self) -> std::collections::BTreeMap<String, deliver::HeldDigest> {
        let cfg = self.notifier.config();
        self.gates
            .iter()
            .zip(&cfg.receivers)
            .filter_map(|(g, rc)| Some((rc.name.clone(), g.held_digest()?)))
            .collect()
    }

    /// Gives each receiver (by name) what a previous run held for its digest; a receiver no
    /// longer configured has its held messages logged and dropped.
    pub fn restore_digests(
        &mut self,
        saved: std::collections::BTreeMap<String, deliver::HeldDigest>,
    ) {
        let cfg = self.notifier.config();
        for (name, h) in saved {
            match cfg.receivers.iter().position(|rc| rc.name == name) {
                Some(i) => self.gates[i].restore_held(h),
                None => {
                    tracing::warn!(receiver = %name, held = h.held, "a digest held for a receiver that is no longer configured is dropped")
                }
            }
        }
    }

    /// A dispatcher for `cfg`.
    pub fn new(cfg: Arc<NotifyConfig>) -> Dispatcher {
        let gates = cfg.receivers.iter().map(Gate::new).collect();
        Dispatcher {
            notifier: Notifier::new(cfg),
            gates,
        }
    }

    /// Switches to `cfg` after a config reload ([`Notifier::reconfigure`]). A receiver whose
    /// name, rate limit and digest wait are unchanged keeps its gate (its rate-limit state and
    /// what it holds for a digest); any other gate is drained: its digest is returned,
    /// addressed by the receiver's index in the *old* config, for its old worker to deliver.
    pub fn reconfigure(&mut self, cfg: Arc<NotifyConfig>, now: Ts) -> (Remap, Vec<Message>) {
        let old = self.notifier.config().receivers.clone();
        let mut old_gates: Vec<Option<Gate>> = std::mem::take(&mut self.gates)
            .into_iter()
            .map(Some)
            .collect();
        for rc in &cfg.receivers {
            let kept = old
                .iter()
                .position(|o| {
                    o.name == rc.name && o.rate == rc.rate && o.digest_wait == rc.digest_wait
                })
                .and_then(|i| old_gates[i].take());
            self.gates.push(kept.unwrap_or_else(|| Gate::new(rc)));
        }
        let digests = old_gates
            .iter_mut()
            .enumerate()
            .filter_map(|(i, g)| g.as_mut()?.poll((i, &old[i].name), now, true))
            .collect();
        (self.notifier.reconfigure(cfg), digests)
    }

    /// Feeds an alert change.
    pub fn push(&mut self, a: Alert, now: Ts) {
        self.notifier.push(a, now);
    }

    /// Messages due at `now` through the rate gates. `drain` flushes everything.
    pub fn tick(&mut self, now: Ts, drain: bool) -> Tick {
        let mut t = Tick::default();
        for m in self.notifier.tick(now, drain) {
            let r = m.receiver;
            match self.gates[r].offer(m.clone(), now) {
                Some(m) => t.send.push(m),
                None => t.held.push(m),
            }
        }
        let cfg = self.notifier.config();
        for (i, g) in self.gates.iter_mut().enumerate() {
            if let Some(d) = g.poll((i, &cfg.receivers[i].name), now, drain) {
                t.send.push(d);
            }
        }
        t
    }

    /// When something may next be due.
    pub fn next_due(&self) -> Option<Ts> {
        let gates = self.gates.iter().filter_map(Gate::next_due).min();
        self.notifier.next_due().into_iter().chain(gates).min()
    }
}

/// What the notify task did, returned when it ends.
#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize)]
pub struct NotifyStats {
    /// Messages delivered.
    pub sent: u64,
    /// Messages that failed after retries.
    pub failed: u64,
    /// Messages held back by rate limits.
    pub held: u64,
    /// Firing items (firing, repeat, event) handed to receivers.
    pub firing: u64,
    /// Resolved items handed to receivers.
    pub resolved: u64,
    /// Items muted by inhibitions.
    pub inhibited: u64,
    /// Alert changes summarised as backfill.
    pub backfilled: u64,
    /// Messages left queued in the outbox journal at exit (a receiver was down), for the
    /// next start to deliver.
    pub kept: u64,
}

/// Makes the writer a stdout receiver prints to.
pub type StdoutFactory = Box<dyn Fn() -> Box<dyn Write + Send> + Send + Sync>;

/// The notify task's inputs beyond the alert channel.
pub struct NotifySetup {
    /// Config.
    pub cfg: Arc<NotifyConfig>,
    /// Where state is saved.
    pub state_dir: Option<PathBuf>,
    /// Where stdout receivers write.
    pub stdout: StdoutFactory,
    /// Shared log (also read by /status).
    pub history: SharedHistory,
    /// The daemon clock.
    pub clock: Clock,
    /// Drain deadline.
    pub grace: Duration,
    /// Where the held groups are published for `/status` (once per loop).
    pub status: Option<tokio::sync::watch::Sender<crate::ops::NotifySnapshot>>,
    /// New configs from SIGHUP reloads (receivers, routes, inhibitions, `[notify]`).
    pub reload: Option<mpsc::Receiver<Arc<NotifyConfig>>>,
}

/// A fresh shared history for `cfg`.
pub fn new_history(cfg: &NotifyConfig) -> SharedHistory {
    Arc::new(Mutex::new(History::new(cfg.history)))
}

/// The notify task: runs until `rx` closes, then flushes everything pending and waits for
/// the workers, within the grace deadline.
pub async fn run(setup: NotifySetup, mut rx: mpsc::Receiver<Alert>) -> NotifyStats {
    let NotifySetup {
        cfg,
        state_dir,
        stdout,
        history,
        clock,
        grace,
        status,
        reload: mut configs,
    } = setup;
    let mut d = Dispatcher::new(cfg.clone());
    if let Some(dir) = &state_dir {
        let saved = state::load(dir);
        let n = saved.groups.iter().map(|g| g.members.len()).sum::<usize>();
        {
            let mut h = history.lock().expect("history lock");
            h.entries.extend(saved.history);
            while h.entries.len() > cfg.history {
                h.entries.pop_front();
            }
            h.counts = saved.counts;
        }
        d.notifier.restore(
            state::groups(&cfg, saved.groups),
            clock.now(),
            RESTORE_CONFIRM,
        );
        d.restore_digests(saved.digests);
        if n > 0 {
            tracing::info!(
                firing = n,
                "restored firing alerts from the last run; they are not sent again"
            );
        }
    }
    let (journal, recovered) = match &state_dir {
        Some(dir) => Journal::open(dir, clock.now().0, cfg.redact.clone()),
        None => (Journal::disabled(clock.now().0), Vec::new()),
    };
    let journal = Arc::new(journal);
    let mut workers = tokio::task::JoinSet::new();
    let mut outboxes: Vec<Arc<Outbox>> = {
        let env = reload::Env {
            stdout: &stdout,
            history: &history,
            clock,
            grace,
            journal: &journal,
        };
        cfg.receivers
            .iter()
            .map(|rc| reload::start_worker(rc, &cfg, &env, &mut workers))
            .collect()
    };
    requeue(recovered, &cfg, &outboxes, &history, &journal, clock.now());
    let mut stats = NotifyStats::default();
    let mut last_save = std::time::Instant::now();
    let mut dirty = false;
    let mut save_failing = false;
    loop {
        let now = clock.now();
        let wait = d
            .next_due()
            .map(|t| {
                if t <= now {
                    Duration::ZERO
                } else {
                    t.since(now)
                }
            })
            .unwrap_or(Duration::from_secs(1))
            .min(Duration::from_secs(1));
        let open = tokio::select! {
            a = rx.recv() => match a {
                Some(a) => {
                    d.push(a, clock.now());
                    while let Ok(a) = rx.try_recv() {
                        d.push(a, clock.now());
                    }
                    dirty = true;
                    true
                }
                None => false,
            },
            Some(new) = reload::next_config(&mut configs) => {
                let env = reload::Env { stdout: &stdout, history: &history, clock, grace, journal: &journal };
                reload::apply(&mut d, new, &mut outboxes, &mut workers, &mut stats, &env);
                dirty = true;
                true
            }
            () = tokio::time::sleep(wait) => true,
        };
        let t = d.tick(clock.now(), !open);
        let handed = dispatch(t, &outboxes, &history, &mut stats);
        dirty |= handed;
        journal.commit(); // before the state below can call these messages' alerts announced
        if let Some(s) = &status {
            s.send_replace(snapshot(&d.notifier));
        }
        if let Some(dir) = &state_dir {
            let hist_dirty = history.lock().expect("history lock").dirty;
            // Saved at once when messages were handed out: a crash right after must not
            // find these alerts unannounced and send them again as new messages (grouping
            // keeps such dispatches to about one per group_interval). Otherwise at most
            // once a second.
            let due = handed || !open || last_save.elapsed() >= Duration::from_secs(1);
            if (dirty || hist_dirty) && due {
                save(dir, &d, &history, &mut save_failing);
                last_save = std::time::Instant::now();
                dirty = false;
            }
        }
        if !open {
            break;
        }
    }
    let deadline = tokio::time::Instant::now() + grace.mul_f64(0.8);
    for o in &outboxes {
        o.close_for_restart(deadline);
    }
    if tokio::time::timeout(grace.mul_f64(0.9), async {
        while workers.join_next().await.is_some() {}
    })
    .await
    .is_err()
    {
        tracing::warn!("notifications still in flight at the drain deadline");
        workers.abort_all();
    }
    journal.commit();
    journal.report();
    if journal.durable() {
        // Queued and not done: left by a receiver that was down (or an attempt cut off at
        // the drain deadline); the next start re-queues them.
        stats.kept = journal.live().len() as u64;
    }
    if let Some(dir) = &state_dir {
        save(dir, &d, &history, &mut save_failing);
    }
    let h = history.lock().expect("history lock");
    for c in h.counts.values() {
        stats.sent += c.sent;
        stats.failed += c.failed;
    }
    stats.inhibited = d.notifier.stats.inhibited;
    stats.backfilled = d.notifier.stats.backfilled;
    stats
}

/// Puts the messages the journal held at start-up back into their receivers' outboxes, ahead
/// of anything new; a message whose receiver is no longer configured, or that cannot be read
/// back, is recorded failed. Then compacts the journal.
fn requeue(
    recovered: Vec<journal::Pending>,
    cfg: &NotifyConfig,
    outboxes: &[Arc<Outbox>],
    history: &SharedHistory,
    journal: &Journal,
    now: Ts,
) {
    let (mut requeued, mut failed) = (0usize, 0usize);
    for p in recovered {
        let mut h = history.lock().expect("history lock");
        let mut m = match p.message {
            Ok(m) => m,
            Err(u) => {
                let error = format!(
                    "cannot read the message back from the outbox journal: {}",
                    u.error
                );
                journal.done(&p.id, journal::Done::Failed, None, Some(&error));
                h.push(deliver::Entry {
                    at: now.rfc3339(),
                    receiver: u.receiver,
                    outcome: Outcome::Failed,
                    group: u.group,
                    what: vec!["(unreadable journal record)".into()],
                    attempts: 0,
                    error: Some(error),
                });
                failed += 1;
                continue;
            }
        };
        match cfg.receivers.iter().position(|r| r.name == m.receiver_name) {
            Some(i) => {
                m.receiver = i;
                requeued += 1;
                if let (Some(old), _) = outboxes[i].push_recovered(p.id, m) {
                    h.record(&old, Outcome::Failed, 0, Some(deliver::OUTBOX_FULL.into()));
                }
            }
            None => {
                let error = format!("receiver {:?} is no longer configured", m.receiver_name);
                journal.done(&p.id, journal::Done::Failed, None, Some(&error));
                h.record(&m, Outcome::Failed, 0, Some(error));
                failed += 1;
            }
        }
    }
    journal.compact();
    if requeued + failed > 0 {
        tracing::info!(
            requeued,
            failed,
            "recovered notifications that were not delivered before the last stop"
        );
    }
}

/// Hands a tick's messages to the outboxes; records held ones. Returns whether anything
/// happened.
fn dispatch(
    t: Tick,
    outboxes: &[Arc<Outbox>],
    history: &SharedHistory,
    stats: &mut NotifyStats,
) -> bool {
    let any = !t.send.is_empty() || !t.held.is_empty();
    for m in &t.held {
        stats.held += 1;
        history
            .lock()
            .expect("history lock")
            .record(m, Outcome::Held, 0, None);
    }
    for m in t.send {
        if let Body::Alerts { items } = &m.body {
            for i in items {
                match i.change {
                    Change::Resolved => stats.resolved += 1,
                    _ => stats.firing += 1,
                }
            }
        }
        let name = m.receiver_name.clone();
        let (dropped, merged) = outboxes[m.receiver].push(m);
        let mut h = history.lock().expect("history lock");
        if merged {
            h.counts.entry(name).or_default().coalesced += 1;
        }
        if let Some(old) = dropped {
            h.record(&old, Outcome::Failed, 0, Some(deliver::OUTBOX_FULL.into()));
        }
    }
    any
}

/// What [`save`] writes: the notifier's announced firing groups, the notification log, and
/// what the gates hold for digests.
fn saved_state(d: &Dispatcher, h: &deliver::History) -> state::Saved {
    state::Saved {
        digests: d.held_digests(),
        ..state::snapshot(d.notifier.config(), d.notifier.groups(), h)
    }
}

/// Saves the state; a failure is logged when saving starts failing and when it works again.
fn save(dir: &std::path::Path, d: &Dispatcher, history: &SharedHistory, failing: &mut bool) {
    let snap = {
        let mut h = history.lock().expect("history lock");
        h.dirty = false;
        saved_state(d, &h)
    };
    match state::save(dir, &snap) {
        Ok(()) if std::mem::take(failing) => {
            tracing::info!(dir = %dir.display(), "notification state is saved again")
        }
        Ok(()) => {}
        Err(e) if !*failing => {
            *failing = true;
            tracing::warn!(dir = %dir.display(), error = %e, "cannot save notification state; retrying");
        }
        Err(_) => {}
    }
}

/// The groups `n` holds, for `/status`: one entry per receiver of the group's route.
fn snapshot(n: &Notifier) -> crate::ops::NotifySnapshot {
    let cfg = n.config();
    let mut groups: Vec<crate::ops::PendingGroup> = n
        .groups()
        .iter()
        .filter(|(_, g)| !g.members.is_empty())
        .flat_map(|((route, labels), g)| {
            cfg.routes[*route]
                .receivers
                .iter()
                .map(move |&r| (r, labels, g))
        })
        .map(|(r, labels, g)| crate::ops::PendingGroup {
            receiver: cfg.receivers[r].name.clone(),
            labels: labels.clone(),
            alerts: g
                .members
                .keys()
                .map(|(rule, l)| format!("{rule}{l}"))
                .collect(),
            unsent: g.members.values().filter(|m| m.pending.is_some()).count(),
            next_flush: g.next_flush,
        })
        .collect();
    groups.sort_by(|a, b| (&a.receiver, &a.labels).cmp(&(&b.receiver, &b.labels)));
    crate::ops::NotifySnapshot { groups }
}

/// A writer that always fails: stands in for a receiver that could not be set up.
struct FailWriter;

impl Write for FailWriter {
    fn write(&mut self, _: &[u8]) -> std::io::Result<usize> {
        Err(std::io::Error::other("receiver could not be set up"))
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::notify::testing;

    use crate::notify::config::{Format, RateLimit, ReceiverConfig, RouteConfig};
    use crate::rules::{AlertState, Severity};

    fn at(s: u64) -> Ts {
        Ts::from_secs(1_795_428_000 + s)
    }

    fn firing(worker: &str, s: u64) -> Alert {
        testing::alert(
            "crash",
            AlertState::Firing,
            Severity::Critical,
            &[("worker", worker)],
            at(s),
        )
    }

    /// "slack" (one message per hour, then a digest after 30 s) on a route grouping by worker.
    fn cfg(period: u64) -> Arc<NotifyConfig> {
        let mut c = NotifyConfig::default_stdout();
        let mut slack = ReceiverConfig::stdout(Format::Text);
        slack.name = "slack".into();
        slack.rate = Some(RateLimit {
            period: Duration::from_secs(period),
            burst: 1,
        });
        c.receivers = vec![slack];
        c.routes = vec![RouteConfig {
            group_wait: Duration::ZERO,
            group_by: vec!["worker".into()],
            ..RouteConfig::catch_all(1)
        }];
        Arc::new(c)
    }

    #[test]
    fn reload_keeps_the_gate_of_an_unchanged_receiver_and_drains_a_changed_one() {
        let mut d = Dispatcher::new(cfg(3600));
        d.push(firing("w1", 0), at(0));
        assert_eq!(d.tick(at(0), false).send.len(), 1);
        d.push(firing("w2", 1), at(1));
        assert_eq!(
            d.tick(at(1), false).held.len(),
            1,
            "the hour's message is spent"
        );

        // Unchanged: the gate (spent limit, one held) carries on; nothing to drain.
        let (_, drained) = d.reconfigure(cfg(3600), at(2));
        assert!(drained.is_empty());
        d.push(firing("w3", 3), at(3));
        assert_eq!(
            d.tick(at(3), false).held.len(),
            1,
            "still limited after the reload"
        );

        // Changed limit: a new gate; the old one's digest comes back for the old worker.
        let (_, drained) = d.reconfigure(cfg(60), at(4));
        assert_eq!(drained.len(), 1, "{drained:?}");
        let Body::Digest { held, .. } = &drained[0].body else {
            panic!("{drained:?}")
        };
        assert_eq!((*held, drained[0].receiver), (2, 0));
        d.push(firing("w4", 5), at(5));
        assert_eq!(
            d.tick(at(5), false).send.len(),
            1,
            "the new gate has its burst"
        );
    }

    /// A kill while a rate limit holds messages for a digest: the saved state carries them,
    /// and the next run's digest lists them.
    #[test]
    fn a_held_digest_survives_a_restart() {
        let mut d = Dispatcher::new(cfg(3600));
        d.push(firing("w1", 0), at(0));
        assert_eq!(d.tick(at(0), false).send.len(), 1);
        d.push(firing("w2", 1), at(1));
        d.push(firing("w3", 2), at(2));
        assert_eq!(d.tick(at(2), false).held.len(), 2);
        let saved = saved_state(&d, &deliver::History::new(10));
        let saved: state::Saved =
            serde_json::from_str(&serde_json::to_string(&saved).unwrap()).unwrap();

        let mut after = Dispatcher::new(cfg(3600));
        after.restore_digests(saved.digests);
        assert!(
            after.tick(at(31), false).send.is_empty(),
            "digest_wait not over"
        );
        let sent = after.tick(at(32), false).send;
        let [m] = &sent[..] else { panic!("{sent:?}") };
        let Body::Digest { held, since, lines } = &m.body else {
            panic!("{m:?}")
        };
        assert_eq!((*held, *since), (2, at(2)));
        let mut lines = lines.clone();
        lines.sort();
        assert_eq!(
            lines,
            [
                "FIRING critical crash{worker=\"w2\"}",
                "FIRING critical crash{worker=\"w3\"}"
            ]
        );
    }

    #[test]
    fn pending_groups_are_listed_per_receiver_of_their_route() {
        let mut c = (*cfg(1)).clone();
        let mut pager = c.receivers[0].clone();
        pager.name = "pager".into();
        c.receivers.insert(0, pager);
        // The only route (index 0) goes to slack (index 1) alone.
        c.routes[0].receivers = vec![1];
        let mut d = Dispatcher::new(Arc::new(c));
        d.push(firing("w1", 0), at(0));
        let s = snapshot(&d.notifier);
        let receivers: Vec<&str> = s.groups.iter().map(|g| g.receiver.as_str()).collect();
        assert_eq!(receivers, ["slack"]);
    }
}

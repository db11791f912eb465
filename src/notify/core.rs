//! The pure part of notification: routing, inhibition, grouping, repeats, restart restore and
//! the backfill summary. Time is passed in; nothing here does I/O, so the daemon, `replay`
//! and the unit tests run the same code.
//!
//! An alert change enters with [`Notifier::push`]; [`Notifier::tick`] returns the messages
//! that are due, one per (group, receiver). Semantics follow Alertmanager's:
//! - a route takes an alert when its severities and label matchers match; routes are tried in
//!   order and the first match wins unless it says `continue = true`;
//! - alerts of one route with equal `group_by` values form a group; a new group waits
//!   `group_wait` to collect its siblings, later changes wait until `group_interval` after the
//!   group's last message; a still-firing alert is sent again after its repeat interval;
//! - a firing alert of an `[[inhibit]]` source severity mutes target alerts with equal
//!   `equal` labels (muted alerts stay pending and go out when the mute lifts);
//! - a resolved notice goes out only for an alert whose firing was announced;
//! - `any`-rule events of one alert key within one flush become one item with a count.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::event::{Labels, Ts};
use crate::notify::config::{NotifyConfig, RouteConfig};
use crate::rules::{Alert, AlertState, Severity};

/// An alert's identity: rule name and labels.
pub type AlertKey = (Arc<str>, Labels);

/// Why an alert is in a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Change {
    /// It started firing.
    Firing,
    /// It is still firing (repeat interval passed).
    Repeat,
    /// It stopped.
    Resolved,
    /// Events of an `any` rule.
    Event,
}

impl Change {
    /// Upper-case word for text formats.
    pub fn word(self) -> &'static str {
        match self {
            Change::Firing => "FIRING",
            Change::Repeat => "STILL FIRING",
            Change::Resolved => "RESOLVED",
            Change::Event => "ALERT",
        }
    }
}

/// One alert in a message.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Item {
    /// The alert as last seen.
    pub alert: Alert,
    /// Why it is here.
    pub change: Change,
    /// Events folded into this item (1 unless an `any` rule fired repeatedly).
    pub occurrences: u64,
}

/// What a message says.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum Body {
    /// Alerts of one group.
    Alerts {
        /// The items, most severe first.
        items: Vec<Item>,
    },
    /// What a rate limit held back.
    Digest {
        /// Messages held.
        held: u64,
        /// Since when.
        since: Ts,
        /// One line per held alert item (capped).
        lines: Vec<String>,
    },
    /// Alerts raised by lines read while catching up on old data.
    Backfill {
        /// First and last such alert.
        since: Ts,
        /// Last.
        until: Ts,
        /// One line per alert key.
        lines: Vec<String>,
        /// Alert changes summarised.
        changes: u64,
    },
}

/// One message for one receiver.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Message {
    /// Receiver index.
    pub receiver: usize,
    /// Receiver name.
    pub receiver_name: String,
    /// The group's labels, for display (`{rule="oom",worker="w1"}`).
    pub group: String,
    /// When it was produced.
    pub at: Ts,
    /// Content.
    pub body: Body,
}

impl Message {
    /// Most severe severity in the message.
    pub fn severity(&self) -> Severity {
        match &self.body {
            Body::Alerts { items } => items
                .iter()
                .map(|i| i.alert.severity)
                .max()
                .unwrap_or(Severity::Info),
            _ => Severity::Warning,
        }
    }

    /// Short description for logs and history: `FIRING critical oom{worker="w1"}, …`.
    pub fn describe(&self) -> Vec<String> {
        match &self.body {
            Body::Alerts { items } => items.iter().map(item_summary).collect(),
            Body::Digest { held, since, .. } => {
                vec![format!("digest: {held} held back since {since}")]
            }
            Body::Backfill { changes, .. } => {
                vec![format!("backfill summary of {changes} alert changes")]
            }
        }
    }
}

/// `FIRING critical oom{worker="w1"}` (with `×N` for repeated events).
pub fn item_summary(i: &Item) -> String {
    let mut s = format!(
        "{} {} {}{}",
        i.change.word(),
        i.alert.severity.as_str(),
        i.alert.rule,
        i.alert.labels
    );
    if i.occurrences > 1 {
        s.push_str(&format!(" ×{}", i.occurrences));
    }
    s
}

/// A member of a group: one alert key.
#[derive(Debug, Clone)]
pub struct Member {
    /// The alert as last seen.
    pub alert: Alert,
    /// Currently firing.
    pub firing: bool,
    /// Its firing was announced (sent, or summarised in a backfill notice).
    pub announced: bool,
    /// Change waiting for the next flush.
    pub pending: Option<Change>,
    /// Events waiting (for `Event` changes).
    pub occurrences: u64,
    /// Last time it went to each receiver (receiver index, time).
    pub sent: Vec<(usize, Ts)>,
    /// Restored from disk after a restart and not yet confirmed by the rules: resolved if
    /// still unconfirmed at this time.
    pub restored_until: Option<Ts>,
    /// An inhibition held its pending change back at the last flush.
    pub muted: bool,
}

/// A group: one route, one set of `group_by` values.
#[derive(Debug, Clone, Default)]
pub struct Group {
    /// Members by alert key.
    pub members: BTreeMap<AlertKey, Member>,
    /// When the next message is due.
    pub next_flush: Option<Ts>,
    /// When the last message went out.
    pub last_flush: Option<Ts>,
}

/// Group identity: route index and group labels.
pub type GroupKey = (usize, Labels);

/// Counts for `/status` and the exit summary.
#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize)]
pub struct CoreStats {
    /// Alert changes received.
    pub changes: u64,
    /// Changes no route took.
    pub unrouted: u64,
    /// Items left out of a message because an inhibition muted them.
    pub inhibited: u64,
    /// Changes summarised as backfill.
    pub backfilled: u64,
}

#[derive(Debug, Default)]
struct BackfillSummary {
    since: Option<Ts>,
    last: Ts,
    changes: u64,
    lines: BTreeMap<String, u64>,
}

/// The notifier state machine.
pub struct Notifier {
    cfg: Arc<NotifyConfig>,
    groups: HashMap<GroupKey, Group>,
    backfill: BackfillSummary,
    /// Counters.
    pub stats: CoreStats,
}

const BACKFILL_LINES: usize = 30;

impl Notifier {
    /// A notifier with no state.
    pub fn new(cfg: Arc<NotifyConfig>) -> Notifier {
        Notifier {
            cfg,
            groups: HashMap::new(),
            backfill: BackfillSummary::default(),
            stats: CoreStats::default(),
        }
    }

    /// The config.
    pub fn config(&self) -> &NotifyConfig {
        &self.cfg
    }

    /// Groups, for persistence and `/status`.
    pub fn groups(&self) -> &HashMap<GroupKey, Group> {
        &self.groups
    }

    /// Restores groups saved before a restart. Firing members must be confirmed by the
    /// rules (a `Firing` change for the same key) before `now + confirm`; otherwise they are
    /// resolved then, with a note.
    ///
    /// A group whose route is gone or changed (key route out of range, see
    /// [`super::state::REROUTE`]) has its alerts routed again through the current routes,
    /// keeping what each receiver (by name) was told and the group's pace; alerts no route
    /// takes now are dropped.
    pub fn restore(&mut self, groups: Vec<(GroupKey, Group)>, now: Ts, confirm: Duration) {
        for (key, mut g) in groups {
            for m in g.members.values_mut() {
                let window = Duration::from_secs(m.alert.window_secs.unwrap_or(0));
                m.restored_until = Some(now.plus(confirm.max(window)));
            }
            g.next_flush = None;
            if key.0 < self.cfg.routes.len() {
                self.groups.insert(key, g);
                continue;
            }
            for (akey, m) in g.members {
                for r in self.routes_for(&m.alert) {
                    let labels = group_labels(&self.cfg.routes[r].group_by, &m.alert);
                    let ng = self.groups.entry((r, labels)).or_default();
                    ng.last_flush = ng.last_flush.max(g.last_flush);
                    ng.members.entry(akey.clone()).or_insert_with(|| m.clone());
                }
            }
        }
    }

    /// Switches to `cfg` after a config reload, keeping what was told to whom.
    ///
    /// Receivers are matched by name: what each was sent (an announced firing, the time of
    /// its last message) carries over, and a removed receiver's record goes. Every held alert
    /// is routed again through the new routes with its state (firing, announced, a change
    /// still waiting), so a receiver that was told keeps getting the resolved notice and none
    /// is told twice; a receiver newly responsible for a firing alert hears it is still
    /// firing at the group's next flush. When an alert sat in several old routes (`continue`),
    /// the copy from the route with the same identity ([`route_identity`]) is kept. A group
    /// of a route that keeps its identity keeps its timing (group_wait already waited, the
    /// group_interval since its last message). Alerts no new route takes are dropped without
    /// a message and listed in the returned [`Remap`].
    pub fn reconfigure(&mut self, cfg: Arc<NotifyConfig>) -> Remap {
        let old = std::mem::replace(&mut self.cfg, cfg);
        let new = self.cfg.clone();
        let receiver: Vec<Option<usize>> = old
            .receivers
            .iter()
            .map(|r| new.receivers.iter().position(|n| n.name == r.name))
            .collect();
        let same_route = match_routes(&old, &new);
        let mut old_groups: Vec<(GroupKey, Group)> =
            std::mem::take(&mut self.groups).into_iter().collect();
        old_groups.sort_by(|a, b| a.0.cmp(&b.0));
        // Every copy of an alert, with the old route it was in and that group's last flush.
        let mut copies: BTreeMap<AlertKey, Vec<(usize, Option<Ts>, Member)>> = BTreeMap::new();
        for ((route, labels), g) in old_groups {
            if let Some(r) = same_route[route] {
                // Kept even when empty: an emptied group still paces its next message.
                self.groups.insert(
                    (r, labels),
                    Group {
                        members: BTreeMap::new(),
                        next_flush: g.next_flush,
                        last_flush: g.last_flush,
                    },
                );
            }
            for (akey, mut m) in g.members {
                m.sent = m
                    .sent
                    .iter()
                    .filter_map(|&(i, t)| receiver.get(i).copied().flatten().map(|j| (j, t)))
                    .collect();
                copies
                    .entry(akey)
                    .or_default()
                    .push((route, g.last_flush, m));
            }
        }
        let mut remap = Remap {
            removed_receivers: old
                .receivers
                .iter()
                .filter(|r| !new.receivers.iter().any(|n| n.name == r.name))
                .map(|r| r.name.clone())
                .collect(),
            ..Remap::default()
        };
        for (akey, list) in copies {
            let routes = self.routes_for(&list[0].2.alert);
            if routes.is_empty() {
                remap.dropped.push(format!("{}{}", akey.0, akey.1));
                continue;
            }
            for r in routes {
                let (m, last_flush) = match list.iter().find(|(o, _, _)| same_route[*o] == Some(r))
                {
                    Some((_, _, m)) => (m.clone(), None),
                    None => merge_copies(&list),
                };
                let key = (r, group_labels(&new.routes[r].group_by, &m.alert));
                let g = self.groups.entry(key).or_default();
                // A group formed anew keeps the pace of the groups its alerts came from.
                if last_flush > g.last_flush {
                    g.last_flush = last_flush;
                }
                g.members.insert(akey.clone(), m);
            }
        }
        remap
    }

    /// Feeds one alert change.
    pub fn push(&mut self, a: Alert, now: Ts) {
        self.stats.changes += 1;
        if a.backfill {
            self.note_backfill(&a, now);
        }
        let routes = self.routes_for(&a);
        if routes.is_empty() {
            self.stats.unrouted += 1;
            return;
        }
        for r in routes {
            let route = &self.cfg.routes[r];
            let gkey = (r, group_labels(&route.group_by, &a));
            let akey: AlertKey = (a.rule.clone(), a.labels.clone());
            let group = self.groups.entry(gkey).or_default();
            let is_new_group = group.members.is_empty() && group.last_flush.is_none();
            let member = group.members.entry(akey).or_insert_with(|| Member {
                alert: a.clone(),
                firing: false,
                announced: false,
                pending: None,
                occurrences: 0,
                sent: Vec::new(),
                restored_until: None,
                muted: false,
            });
            let was_pending = member.pending.is_some();
            match a.state {
                AlertState::Firing => {
                    member.restored_until = None;
                    if member.firing && member.announced {
                        // Already announced (e.g. before a restart): no second message.
                    } else if a.backfill {
                        member.announced = true;
                        member.pending = None;
                        member.sent = route.receivers.iter().map(|&i| (i, now)).collect();
                    } else {
                        member.pending = Some(Change::Firing);
                    }
                    member.firing = true;
                }
                AlertState::Resolved => {
                    let was_firing_pending = member.pending == Some(Change::Firing);
                    member.firing = false;
                    member.restored_until = None;
                    let send_resolved = self.cfg.send_resolved;
                    member.pending = if a.backfill || (was_firing_pending && member.muted) {
                        None
                    } else if was_firing_pending {
                        // Fired and resolved before any message: still say it fired.
                        Some(if send_resolved {
                            Change::Resolved
                        } else {
                            Change::Firing
                        })
                    } else if member.announced && send_resolved {
                        Some(Change::Resolved)
                    } else {
                        None
                    };
                }
                AlertState::Event => {
                    if !a.backfill {
                        member.pending = Some(Change::Event);
                        member.occurrences += 1;
                    }
                }
            }
            let keep_alert_since = member.alert.since;
            member.alert = a.clone();
            if a.state == AlertState::Firing && member.announced {
                member.alert.since = keep_alert_since.min(a.since);
            }
            let has_pending = member.pending.is_some();
            if !member.firing && !has_pending {
                let akey = (a.rule.clone(), a.labels.clone());
                group.members.remove(&akey);
                continue;
            }
            if has_pending && !was_pending && group.next_flush.is_none() {
                group.next_flush = Some(if is_new_group {
                    now.plus(route.group_wait)
                } else {
                    let earliest = group
                        .last_flush
                        .map(|t| t.plus(route.group_interval))
                        .unwrap_or(now.plus(route.group_wait));
                    earliest.max(now)
                });
            }
        }
    }

    fn note_backfill(&mut self, a: &Alert, now: Ts) {
        let b = &mut self.backfill;
        self.stats.backfilled += 1;
        b.since.get_or_insert(now);
        b.last = now;
        b.changes += 1;
        let word = match a.state {
            AlertState::Firing => "fired",
            AlertState::Resolved => "resolved",
            AlertState::Event => "matched",
        };
        let line = format!("{} {}{} {word}", a.severity.as_str(), a.rule, a.labels);
        if b.lines.len() < BACKFILL_LINES || b.lines.contains_key(&line) {
            *b.lines.entry(line).or_default() += 1;
        }
    }

    /// Route indexes that take `a`.
    fn routes_for(&self, a: &Alert) -> Vec<usize> {
        let mut out = Vec::new();
        for (i, r) in self.cfg.routes.iter().enumerate() {
            if !r.severities.is_empty() && !r.severities.contains(&a.severity) {
                continue;
            }
            let ok = r.matchers.iter().all(|(label, re)| {
                let v = if label == "rule" {
                    Some(a.rule.as_ref())
                } else {
                    a.labels.get(label)
                };
                re.is_match(v.unwrap_or(""))
            });
            if !ok {
                continue;
            }
            out.push(i);
            if !r.cont {
                break;
            }
        }
        out
    }

    /// True when a firing alert of an inhibit source severity mutes `a`.
    fn inhibited(&self, a: &Alert) -> bool {
        self.cfg.inhibits.iter().any(|inh| {
            a.severity == inh.target
                && self.groups.values().any(|g| {
                    g.members.values().any(|m| {
                        m.firing
                            && m.alert.severity == inh.source
                            && inh
                                .equal
                                .iter()
                                .all(|l| m.alert.labels.get(l) == a.labels.get(l))
                    })
                })
        })
    }

    /// When the next message could be due (for the task's timer).
    pub fn next_due(&self) -> Option<Ts> {
        let groups = self.groups.values().filter_map(|g| g.next_flush).min();
        let backfill = self
            .backfill
            .since
            .map(|_| self.backfill.last.plus(self.cfg.backfill_wait));
        groups.into_iter().chain(backfill).min()
    }

    /// Returns the messages due at `now`. `drain` flushes everything pending regardless of
    /// waits (shutdown).
    pub fn tick(&mut self, now: Ts, drain: bool) -> Vec<Message> {
        let mut out = Vec::new();
        self.schedule_repeats_and_restores(now);
        let due: Vec<GroupKey> = self
            .groups
            .iter()
            .filter(|(_, g)| g.next_flush.is_some_and(|t| drain || t <= now))
            .map(|(k, _)| k.clone())
            .collect();
        for key in due {
            self.flush(&key, now, &mut out);
        }
        // An emptied group is kept for its group_interval, so the next change waits for it
        // instead of starting a new group (no group_wait bypass for a chatty `any` rule).
        let routes = &self.cfg.routes;
        self.groups.retain(|(r, _), g| {
            !g.members.is_empty()
                || g.next_flush.is_some()
                || g.last_flush
                    .is_some_and(|t| now.since(t) < routes[*r].group_interval)
        });
        if let Some(since) = self.backfill.since {
            if drain || now >= self.backfill.last.plus(self.cfg.backfill_wait) {
                let b = std::mem::take(&mut self.backfill);
                let lines: Vec<String> = b
                    .lines
                    .iter()
                    .map(|(l, n)| {
                        if *n > 1 {
                            format!("{l} ×{n}")
                        } else {
                            l.clone()
                        }
                    })
                    .collect();
                for (i, r) in self.cfg.receivers.iter().enumerate() {
                    out.push(Message {
                        receiver: i,
                        receiver_name: r.name.clone(),
                        group: String::new(),
                        at: now,
                        body: Body::Backfill {
                            since,
                            until: b.last,
                            lines: lines.clone(),
                            changes: b.changes,
                        },
                    });
                }
            }
        }
        out
    }

    fn schedule_repeats_and_restores(&mut self, now: Ts) {
        let cfg = self.cfg.clone();
        for ((route, _), g) in self.groups.iter_mut() {
            let mut due = false;
            for m in g.members.values_mut() {
                if let Some(t) = m.restored_until {
                    if now >= t {
                        m.restored_until = None;
                        m.firing = false;
                        m.alert.state = AlertState::Resolved;
                        m.alert.at = now;
                        let note = "not confirmed by the rules after a restart";
                        m.alert.summary = Some(match m.alert.summary.take() {
                            Some(s) => format!("{s} ({note})"),
                            None => note.to_string(),
                        });
                        m.pending = (m.announced && cfg.send_resolved).then_some(Change::Resolved);
                        due |= m.pending.is_some();
                        continue;
                    }
                }
                if m.pending.is_some() {
                    due = true;
                } else if m.firing && m.announced {
                    due |= cfg.routes[*route].receivers.iter().any(|&r| {
                        let last = m.sent.iter().find(|(i, _)| *i == r).map(|(_, t)| *t);
                        last.is_none_or(|t| {
                            now.since(t) >= cfg.repeat_for(*route, r, m.alert.severity)
                        })
                    });
                }
            }
            if due && g.next_flush.is_none() {
                let earliest = g
                    .last_flush
                    .map(|t| t.plus(cfg.routes[*route].group_interval))
                    .unwrap_or(now);
                g.next_flush = Some(earliest.max(now));
            }
        }
    }

    fn flush(&mut self, key: &GroupKey, now: Ts, out: &mut Vec<Message>) {
        let cfg = self.cfg.clone();
        let route = &cfg.routes[key.0];
        let Some(group) = self.groups.get(key) else {
            return;
        };
        // Decide inhibition first (it reads every group).
        let muted: Vec<AlertKey> = group
            .members
            .iter()
            .filter(|(_, m)| {
                matches!(m.pending, Some(Change::Firing | Change::Event))
                    || (m.firing && m.announced)
            })
            .filter(|(_, m)| self.inhibited(&m.alert))
            .map(|(k, _)| k.clone())
            .collect();
        let group = self.groups.get_mut(key).expect("group exists");
        group.next_flush = None;
        let mut per_receiver: Vec<(usize, Vec<Item>)> =
            route.receivers.iter().map(|&r| (r, Vec::new())).collect();
        let mut sent_any = false;
        for (akey, m) in group.members.iter_mut() {
            let is_muted = muted.contains(akey);
            m.muted = is_muted;
            for (r, items) in per_receiver.iter_mut() {
                let rc = &cfg.receivers[*r];
                if !rc.severities.is_empty() && !rc.severities.contains(&m.alert.severity) {
                    continue;
                }
                let change = match m.pending {
                    Some(Change::Resolved) => Some(Change::Resolved),
                    Some(c) if !is_muted => Some(c),
                    None if m.firing && m.announced && !is_muted => {
                        let last = m.sent.iter().find(|(i, _)| i == r).map(|(_, t)| *t);
                        let due = last.is_none_or(|t| {
                            now.since(t) >= cfg.repeat_for(key.0, *r, m.alert.severity)
                        });
                        due.then_some(Change::Repeat)
                    }
                    _ => None,
                };
                if let Some(change) = change {
                    items.push(Item {
                        alert: m.alert.clone(),
                        change,
                        occurrences: m.occurrences.max(1),
                    });
                    match m.sent.iter_mut().find(|(i, _)| i == r) {
                        Some(s) => s.1 = now,
                        None => m.sent.push((*r, now)),
                    }
                }
            }
            if is_muted && m.pending.is_some() && m.pending != Some(Change::Resolved) {
                self.stats.inhibited += 1;
                if m.pending == Some(Change::Event) {
                    m.pending = None;
                    m.occurrences = 0;
                }
                continue;
            }
            match m.pending.take() {
                Some(Change::Firing) => m.announced = true,
                Some(Change::Event) => m.occurrences = 0,
                _ => {}
            }
        }
        // Resolved and event-only members leave the group once told.
        group.members.retain(|_, m| m.firing || m.pending.is_some());
        for (r, mut items) in per_receiver {
            if items.is_empty() {
                continue;
            }
            sent_any = true;
            items.sort_by(|a, b| {
                b.alert
                    .severity
                    .cmp(&a.alert.severity)
                    .then_with(|| a.alert.rule.cmp(&b.alert.rule))
            });
            out.push(Message {
                receiver: r,
                receiver_name: cfg.receivers[r].name.clone(),
                group: display_group(&route.group_by, &key.1),
                at: now,
                body: Body::Alerts { items },
            });
        }
        if sent_any {
            group.last_flush = Some(now);
        }
    }
}

/// What a config reload did to the notifier's state ([`Notifier::reconfigure`]).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Remap {
    /// Held alerts (`rule{labels}`) that no route of the new config takes: dropped without
    /// a message.
    pub dropped: Vec<String>,
    /// Receivers of the old config missing from the new one: what they were told is gone.
    pub removed_receivers: Vec<String>,
}

/// What a route takes and how it groups: its severities, matchers and `group_by`. A reload
/// keeps the groups of a route whose identity is unchanged; receivers, waits and intervals
/// may change without making it a different route.
pub fn route_identity(r: &RouteConfig) -> (Vec<Severity>, Vec<(&str, &str)>, &[String]) {
    (
        r.severities.clone(),
        r.matcher_texts().collect(),
        &r.group_by,
    )
}

/// For each old route, the new route that is the same one: first by identity and receiver
/// names, then by identity alone (a receiver added to or removed from a route), each new
/// route matched at most once, in order.
fn match_routes(old: &NotifyConfig, new: &NotifyConfig) -> Vec<Option<usize>> {
    let names = |c: &NotifyConfig, r: &RouteConfig| -> Vec<String> {
        let mut v: Vec<String> = r
            .receivers
            .iter()
            .map(|&i| c.receivers[i].name.clone())
            .collect();
        v.sort();
        v
    };
    let mut out: Vec<Option<usize>> = vec![None; old.routes.len()];
    let mut used = vec![false; new.routes.len()];
    for with_receivers in [true, false] {
        for (i, o) in old.routes.iter().enumerate() {
            if out[i].is_some() {
                continue;
            }
            let found = new.routes.iter().enumerate().position(|(j, n)| {
                !used[j]
                    && route_identity(o) == route_identity(n)
                    && (!with_receivers || names(old, o) == names(new, n))
            });
            if let Some(j) = found {
                used[j] = true;
                out[i] = Some(j);
            }
        }
    }
    out
}

/// One member from the copies of an alert in routes that are gone: the first copy, with
/// what any copy told any receiver (so the new route's receivers that were not told hear
/// "still firing", and those that were are not told again). Also the latest last flush of
/// their groups.
fn merge_copies(list: &[(usize, Option<Ts>, Member)]) -> (Member, Option<Ts>) {
    let mut m = list[0].2.clone();
    let mut last_flush = list[0].1;
    for (_, lf, other) in &list[1..] {
        last_flush = last_flush.max(*lf);
        m.announced |= other.announced;
        for &(i, t) in &other.sent {
            match m.sent.iter_mut().find(|s| s.0 == i) {
                Some(s) => s.1 = s.1.max(t),
                None => m.sent.push((i, t)),
            }
        }
    }
    (m, last_flush)
}

/// The group labels of `a` for `group_by` (`rule` is the rule name).
fn group_labels(group_by: &[String], a: &Alert) -> Labels {
    let mut l = Labels::new();
    for name in group_by {
        let v = if name == "rule" {
            Some(a.rule.as_ref())
        } else {
            a.labels.get(name)
        };
        if let Some(v) = v {
            l.insert(Arc::from(name.as_str()), Arc::from(v));
        }
    }
    l
}

fn display_group(group_by: &[String], l: &Labels) -> String {
    if group_by.is_empty() {
        "all alerts".into()
    } else {
        l.to_string()
    }
}

#[cfg(test)]
mod tests {

    use super::*;
    use crate::notify::config::{InhibitConfig, ReceiverConfig, RouteConfig};

    fn at(s: u64) -> Ts {
        Ts::from_secs(1_795_428_000 + s)
    }

    fn alert(rule: &str, state: AlertState, sev: Severity, worker: &str, s: u64) -> Alert {
        Alert {
            evidence: vec!["boom".into()],
            ..crate::notify::testing::alert(rule, state, sev, &[("worker", worker)], at(s))
        }
    }

    fn cfg(routes: Vec<RouteConfig>, inhibits: Vec<InhibitConfig>) -> Arc<NotifyConfig> {
        let mut c = NotifyConfig::default_stdout();
        let mut slack = ReceiverConfig::stdout(crate::notify::config::Format::Text);
        slack.name = "slack".into();
        c.receivers.push(slack);
        c.routes = routes;
        c.inhibits = inhibits;
        Arc::new(c)
    }

    fn route(receivers: Vec<usize>, wait: u64) -> RouteConfig {
        RouteConfig {
            group_wait: Duration::from_secs(wait),
            ..RouteConfig::catch_all(0)
        }
        .with_receivers(receivers)
    }

    impl RouteConfig {
        fn with_receivers(mut self, r: Vec<usize>) -> RouteConfig {
            self.receivers = r;
            self
        }
    }

    fn summaries(ms: &[Message]) -> Vec<String> {
        ms.iter()
            .map(|m| format!("{}: {}", m.receiver_name, m.describe().join("; ")))
            .collect()
    }

    #[test]
    fn group_wait_collects_siblings_into_one_message() {
        let mut n = Notifier::new(cfg(vec![route(vec![0], 10)], vec![]));
        n.push(
            alert("crash", AlertState::Firing, Severity::Critical, "w1", 0),
            at(0),
        );
        n.push(
            alert("crash", AlertState::Firing, Severity::Critical, "w2", 3),
            at(3),
        );
        assert!(n.tick(at(9), false).is_empty());
        assert_eq!(n.next_due(), Some(at(10)));
        let m = n.tick(at(10), false);
        assert_eq!(
            summaries(&m),
            vec!["stdout: FIRING critical crash{worker=\"w1\"}; FIRING critical crash{worker=\"w2\"}"]
        );
        // Nothing more until something changes or the repeat interval passes.
        assert!(n.tick(at(600), false).is_empty());
    }

    #[test]
    fn resolved_after_group_interval_and_repeat_after_its_interval() {
        let mut n = Notifier::new(cfg(vec![route(vec![0], 0)], vec![]));
        n.push(
            alert("crash", AlertState::Firing, Severity::Critical, "w1", 0),
            at(0),
        );
        assert_eq!(n.tick(at(0), false).len(), 1);
        n.push(
            alert("crash", AlertState::Resolved, Severity::Critical, "w1", 20),
            at(20),
        );
        // group_interval (60s) after the last message.
        assert!(n.tick(at(59), false).is_empty());
        assert_eq!(
            summaries(&n.tick(at(60), false)),
            vec!["stdout: RESOLVED critical crash{worker=\"w1\"}"]
        );
        assert!(
            n.groups().values().all(|g| g.members.is_empty()),
            "a resolved, told alert leaves no member"
        );
        n.tick(at(120), false);
        assert!(
            n.groups().is_empty(),
            "and the group goes after its interval"
        );

        n.push(
            alert("backlog", AlertState::Firing, Severity::Warning, "w1", 100),
            at(100),
        );
        assert_eq!(
            n.tick(at(100), false).len(),
            1,
            "a new group waits only group_wait"
        );
        assert!(n.tick(at(100 + 4 * 3600 - 1), false).is_empty());
        assert_eq!(
            summaries(&n.tick(at(100 + 4 * 3600), false)),
            vec!["stdout: STILL FIRING warning backlog{worker=\"w1\"}"]
        );
    }

    #[test]
    fn routes_first_match_and_continue() {
        let mut crit = route(vec![0, 1], 0);
        crit.severities = vec![Severity::Critical];
        let warn = route(vec![1], 0);
        let mut n = Notifier::new(cfg(vec![crit, warn], vec![]));
        n.push(
            alert("oom", AlertState::Firing, Severity::Critical, "w1", 0),
            at(0),
        );
        n.push(
            alert("slow", AlertState::Firing, Severity::Warning, "w1", 0),
            at(0),
        );
        let mut got = summaries(&n.tick(at(0), false));
        got.sort();
        assert_eq!(
            got,
            vec![
                "slack: FIRING critical oom{worker=\"w1\"}",
                "slack: FIRING warning slow{worker=\"w1\"}",
                "stdout: FIRING critical oom{worker=\"w1\"}",
            ]
        );
    }

    #[test]
    fn critical_inhibits_warning_with_equal_labels_until_it_resolves() {
        let inh = InhibitConfig {
            source: Severity::Critical,
            target: Severity::Warning,
            equal: vec!["worker".into()],
        };
        let mut n = Notifier::new(cfg(vec![route(vec![0], 0)], vec![inh]));
        n.push(
            alert("oom", AlertState::Firing, Severity::Critical, "w1", 0),
            at(0),
        );
        n.push(
            alert("errors", AlertState::Firing, Severity::Warning, "w1", 0),
            at(0),
        );
        n.push(
            alert("errors", AlertState::Firing, Severity::Warning, "w2", 0),
            at(0),
        );
        let mut got = summaries(&n.tick(at(0), false));
        got.sort();
        assert_eq!(
            got,
            vec![
                "stdout: FIRING critical oom{worker=\"w1\"}",
                "stdout: FIRING warning errors{worker=\"w2\"}"
            ]
        );
        assert_eq!(n.stats.inhibited, 1);
        n.push(
            alert("oom", AlertState::Resolved, Severity::Critical, "w1", 30),
            at(30),
        );
        let mut got = summaries(&n.tick(at(60), false));
        got.sort();
        assert_eq!(
            got,
            vec![
                "stdout: FIRING warning errors{worker=\"w1\"}",
                "stdout: RESOLVED critical oom{worker=\"w1\"}"
            ],
            "the muted warning goes out when the critical resolves"
        );
    }

    #[test]
    fn any_events_fold_into_one_item_with_a_count() {
        let mut n = Notifier::new(cfg(vec![route(vec![0], 5)], vec![]));
        for s in 0..5 {
            n.push(
                alert("oom", AlertState::Event, Severity::Critical, "w1", s),
                at(s),
            );
        }
        let m = n.tick(at(5), false);
        assert_eq!(
            summaries(&m),
            vec!["stdout: ALERT critical oom{worker=\"w1\"} ×5"]
        );
        assert!(n.groups().values().all(|g| g.members.is_empty()));
    }

    #[test]
    fn a_chatty_any_rule_waits_group_interval_between_messages() {
        let mut n = Notifier::new(cfg(vec![route(vec![0], 0)], vec![]));
        n.push(
            alert("oom", AlertState::Event, Severity::Critical, "w1", 0),
            at(0),
        );
        assert_eq!(n.tick(at(0), false).len(), 1);
        for s in 2..10 {
            n.push(
                alert("oom", AlertState::Event, Severity::Critical, "w1", s),
                at(s),
            );
            assert!(n.tick(at(s), false).is_empty(), "at {s}");
        }
        assert_eq!(
            summaries(&n.tick(at(60), false)),
            vec!["stdout: ALERT critical oom{worker=\"w1\"} ×8"]
        );
    }

    #[test]
    fn resolved_is_never_sent_for_an_alert_that_was_never_announced() {
        let inh = InhibitConfig {
            source: Severity::Critical,
            target: Severity::Warning,
            equal: vec![],
        };
        let mut n = Notifier::new(cfg(vec![route(vec![0], 0)], vec![inh]));
        n.push(
            alert("oom", AlertState::Firing, Severity::Critical, "w1", 0),
            at(0),
        );
        n.tick(at(0), false);
        // A warning that fires and resolves entirely while muted is never mentioned.
        n.push(
            alert("slow", AlertState::Firing, Severity::Warning, "w1", 1),
            at(1),
        );
        n.tick(at(61), false);
        n.push(
            alert("slow", AlertState::Resolved, Severity::Warning, "w1", 70),
            at(70),
        );
        let all: Vec<String> = summaries(&n.tick(at(200), true));
        assert!(all.iter().all(|s| !s.contains("slow")), "{all:?}");
    }

    #[test]
    fn fired_and_resolved_within_group_wait_is_still_told() {
        let mut n = Notifier::new(cfg(vec![route(vec![0], 10)], vec![]));
        n.push(
            alert("crash", AlertState::Firing, Severity::Critical, "w1", 0),
            at(0),
        );
        n.push(
            alert("crash", AlertState::Resolved, Severity::Critical, "w1", 4),
            at(4),
        );
        assert_eq!(
            summaries(&n.tick(at(10), false)),
            vec!["stdout: RESOLVED critical crash{worker=\"w1\"}"]
        );
    }

    #[test]
    fn backfilled_alerts_become_one_summary_and_later_resolve_normally() {
        let mut n = Notifier::new(cfg(vec![route(vec![0], 0)], vec![]));
        for w in ["w1", "w2", "w3"] {
            let mut a = alert("crash", AlertState::Firing, Severity::Critical, w, 0);
            a.backfill = true;
            n.push(a, at(0));
        }
        for s in 0..40 {
            let mut a = alert("oom", AlertState::Event, Severity::Critical, "w1", s);
            a.backfill = true;
            n.push(a, at(1));
        }
        assert!(
            n.tick(at(2), false).is_empty(),
            "waits for the catch-up to end"
        );
        let m = n.tick(at(6), false);
        assert_eq!(m.len(), 2, "one summary per receiver: {m:?}");
        let Body::Backfill { lines, changes, .. } = &m[0].body else {
            panic!("{m:?}")
        };
        assert_eq!(*changes, 43);
        assert!(
            lines.contains(&"critical oom{worker=\"w1\"} matched ×40".to_string()),
            "{lines:?}"
        );
        n.push(
            alert("crash", AlertState::Resolved, Severity::Critical, "w2", 90),
            at(90),
        );
        assert_eq!(
            summaries(&n.tick(at(90), false)),
            vec!["stdout: RESOLVED critical crash{worker=\"w2\"}"]
        );
    }

    #[test]
    fn restored_firing_alert_is_not_resent_and_resolves_if_unconfirmed() {
        let mut n = Notifier::new(cfg(vec![route(vec![0], 0)], vec![]));
        n.push(
            alert("crash", AlertState::Firing, Severity::Critical, "w1", 0),
            at(0),
        );
        n.push(
            alert("crash", AlertState::Firing, Severity::Critical, "w2", 0),
            at(0),
        );
        assert_eq!(n.tick(at(0), false).len(), 1);
        let saved: Vec<(GroupKey, Group)> = n
            .groups()
            .iter()
            .map(|(k, g)| (k.clone(), g.clone()))
            .collect();

        let mut m = Notifier::new(cfg(vec![route(vec![0], 0)], vec![]));
        m.restore(saved, at(100), Duration::from_secs(60));
        // The rules confirm w1 after the restart: nothing is sent again.
        m.push(
            alert("crash", AlertState::Firing, Severity::Critical, "w1", 120),
            at(120),
        );
        assert!(m.tick(at(120), false).is_empty());
        // w2 is never confirmed: resolved once its window (300s) has passed.
        assert!(m.tick(at(399), false).is_empty());
        let got = summaries(&m.tick(at(400), false));
        assert_eq!(got, vec!["stdout: RESOLVED critical crash{worker=\"w2\"}"]);
    }

    #[test]
    fn saved_state_holds_evidence_redacted() {
        let mut n = Notifier::new(cfg(vec![route(vec![0], 0)], vec![]));
        let a = Alert {
            evidence: vec!["login failed password=hunter2 for bob".into()],
            summary: Some("Authorization: Bearer sk-live-abcdef123456".into()),
            ..alert("auth", AlertState::Firing, Severity::Critical, "w1", 0)
        };
        n.push(a, at(0));
        assert_eq!(n.tick(at(0), false).len(), 1);
        let saved = crate::notify::state::snapshot(
            n.config(),
            n.groups(),
            &crate::notify::deliver::History::new(10),
        );
        let text = serde_json::to_string(&saved).unwrap();
        assert!(text.contains("login failed password="), "{text}");
        for secret in ["hunter2", "sk-live-abcdef123456"] {
            assert!(!text.contains(secret), "{secret} in {text}");
        }
    }

    #[test]
    fn restart_with_moved_routes_restores_alerts_into_the_route_that_now_takes_them() {
        let critical = |receivers| RouteConfig {
            severities: vec![Severity::Critical],
            ..route(receivers, 0)
        };
        let mut n = Notifier::new(cfg(vec![critical(vec![1]), route(vec![0], 0)], vec![]));
        n.push(
            alert("crash", AlertState::Firing, Severity::Critical, "w1", 0),
            at(0),
        );
        assert_eq!(summaries(&n.tick(at(0), false)).len(), 1);
        let saved = crate::notify::state::snapshot(
            n.config(),
            n.groups(),
            &crate::notify::deliver::History::new(10),
        );
        let saved: crate::notify::state::Saved =
            serde_json::from_str(&serde_json::to_string(&saved).unwrap()).unwrap();

        // The new config puts a warning route first: the critical route is now index 1.
        let warning = RouteConfig {
            severities: vec![Severity::Warning],
            ..route(vec![0], 0)
        };
        let moved = cfg(vec![warning, critical(vec![1]), route(vec![0], 0)], vec![]);
        let mut m = Notifier::new(moved.clone());
        m.restore(
            crate::notify::state::groups(&moved, saved.groups),
            at(100),
            Duration::from_secs(60),
        );
        assert!(
            m.groups().keys().all(|(r, _)| *r == 1),
            "{:?}",
            m.groups().keys()
        );
        // Confirmed by the rules after the restart: not sent again; resolved to slack only.
        m.push(
            alert("crash", AlertState::Firing, Severity::Critical, "w1", 120),
            at(120),
        );
        assert!(m.tick(at(120), false).is_empty());
        m.push(
            alert("crash", AlertState::Resolved, Severity::Critical, "w1", 130),
            at(130),
        );
        assert_eq!(
            summaries(&m.tick(at(130), false)),
            vec!["slack: RESOLVED critical crash{worker=\"w1\"}"]
        );
    }

    fn receivers(names: &[&str]) -> Vec<ReceiverConfig> {
        names
            .iter()
            .map(|n| {
                let mut r = ReceiverConfig::stdout(crate::notify::config::Format::Text);
                r.name = n.to_string();
                r
            })
            .collect()
    }

    fn cfg_with(names: &[&str], routes: Vec<RouteConfig>) -> Arc<NotifyConfig> {
        let mut c = NotifyConfig::default_stdout();
        c.receivers = receivers(names);
        c.routes = routes;
        Arc::new(c)
    }

    #[test]
    fn reload_adds_a_receiver_that_hears_still_firing_and_resends_nothing_else() {
        let mut n = Notifier::new(cfg_with(&["stdout"], vec![route(vec![0], 0)]));
        n.push(
            alert("crash", AlertState::Firing, Severity::Critical, "w1", 0),
            at(0),
        );
        assert_eq!(n.tick(at(0), false).len(), 1);
        // Same config again: nothing changes, nothing is sent.
        let same = n.reconfigure(cfg_with(&["stdout"], vec![route(vec![0], 0)]));
        assert_eq!(same, Remap::default());
        assert!(n.tick(at(20), false).is_empty());

        // Slack is added in front (indexes shift) and to the route.
        let r = n.reconfigure(cfg_with(&["slack", "stdout"], vec![route(vec![1, 0], 0)]));
        assert_eq!(r, Remap::default());
        assert!(n.tick(at(30), false).is_empty(), "paced by group_interval");
        assert_eq!(
            summaries(&n.tick(at(60), false)),
            vec!["slack: STILL FIRING critical crash{worker=\"w1\"}"],
            "stdout was told at 0 and is not told again"
        );
        n.push(
            alert("crash", AlertState::Resolved, Severity::Critical, "w1", 70),
            at(70),
        );
        assert!(n.tick(at(119), false).is_empty());
        let mut got = summaries(&n.tick(at(120), false));
        got.sort();
        assert_eq!(
            got,
            vec![
                "slack: RESOLVED critical crash{worker=\"w1\"}",
                "stdout: RESOLVED critical crash{worker=\"w1\"}",
            ]
        );
    }

    #[test]
    fn reload_removing_a_route_and_its_receiver_drops_its_alerts_with_a_report() {
        let mut crit = route(vec![1], 0);
        crit.severities = vec![Severity::Critical];
        let mut warn = route(vec![0], 0);
        warn.severities = vec![Severity::Warning];
        let mut n = Notifier::new(cfg_with(&["stdout", "pager"], vec![crit, warn.clone()]));
        n.push(
            alert("crash", AlertState::Firing, Severity::Critical, "w1", 0),
            at(0),
        );
        n.push(
            alert("slow", AlertState::Firing, Severity::Warning, "w1", 0),
            at(0),
        );
        assert_eq!(n.tick(at(0), false).len(), 2);
        let r = n.reconfigure(cfg_with(&["stdout"], vec![warn]));
        assert_eq!(
            r,
            Remap {
                dropped: vec!["crash{worker=\"w1\"}".into()],
                removed_receivers: vec!["pager".into()],
            }
        );
        n.push(
            alert("crash", AlertState::Resolved, Severity::Critical, "w1", 10),
            at(10),
        );
        n.push(
            alert("slow", AlertState::Resolved, Severity::Warning, "w1", 10),
            at(10),
        );
        assert_eq!(
            summaries(&n.tick(at(60), true)),
            vec!["stdout: RESOLVED warning slow{worker=\"w1\"}"],
            "the kept route still says its alert resolved; the removed one says nothing"
        );
    }

    #[test]
    fn reload_moves_an_alert_to_the_route_that_now_takes_it() {
        let mut crit = route(vec![1], 0);
        crit.severities = vec![Severity::Critical];
        let rest = route(vec![0], 0);
        let mut n = Notifier::new(cfg_with(&["stdout", "pager"], vec![crit, rest.clone()]));
        n.push(
            alert("crash", AlertState::Firing, Severity::Critical, "w1", 0),
            at(0),
        );
        assert_eq!(
            summaries(&n.tick(at(0), false)),
            vec!["pager: FIRING critical crash{worker=\"w1\"}"]
        );
        // The critical route goes: the catch-all takes the alert, and stdout, which never
        // heard of it, learns it is still firing (and later that it resolved).
        let r = n.reconfigure(cfg_with(&["stdout", "pager"], vec![rest]));
        assert!(r.dropped.is_empty(), "{r:?}");
        assert_eq!(
            summaries(&n.tick(at(60), false)),
            vec!["stdout: STILL FIRING critical crash{worker=\"w1\"}"]
        );
        n.push(
            alert("crash", AlertState::Resolved, Severity::Critical, "w1", 70),
            at(70),
        );
        assert_eq!(
            summaries(&n.tick(at(120), false)),
            vec!["stdout: RESOLVED critical crash{worker=\"w1\"}"]
        );
    }

    #[test]
    fn reload_regroups_when_group_by_changes_and_keeps_waiting_changes() {
        let mut by_rule = route(vec![0], 10);
        by_rule.group_by = vec!["rule".into()];
        let mut n = Notifier::new(cfg_with(&["stdout"], vec![by_rule.clone()]));
        n.push(
            alert("crash", AlertState::Firing, Severity::Critical, "w1", 0),
            at(0),
        );
        assert_eq!(n.tick(at(10), false).len(), 1);
        // w2 fires and waits for the group's interval when the reload comes.
        n.push(
            alert("crash", AlertState::Firing, Severity::Critical, "w2", 20),
            at(20),
        );
        let mut by_worker = by_rule;
        by_worker.group_by = vec!["worker".into()];
        n.reconfigure(cfg_with(&["stdout"], vec![by_worker]));
        assert_eq!(n.groups().len(), 2, "{:?}", n.groups().keys());
        let got = summaries(&n.tick(at(70), true));
        assert_eq!(
            got,
            vec!["stdout: FIRING critical crash{worker=\"w2\"}"],
            "w1 is not told again; w2's firing still goes out"
        );
    }

    #[test]
    fn receiver_severity_filter_applies_inside_a_route() {
        let mut c = (*cfg(vec![route(vec![0, 1], 0)], vec![])).clone();
        c.receivers[1].severities = vec![Severity::Critical];
        let mut n = Notifier::new(Arc::new(c));
        n.push(
            alert("slow", AlertState::Firing, Severity::Warning, "w1", 0),
            at(0),
        );
        assert_eq!(
            summaries(&n.tick(at(0), false)),
            vec!["stdout: FIRING warning slow{worker=\"w1\"}"]
        );
    }
}

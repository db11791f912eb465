//! Alert state and the notification log, persisted under `state_dir` so a restart neither
//! re-sends what was sent nor forgets what is firing. One JSON file, written atomically
//! (tmp + fsync + rename); a file that does not parse is set aside with a warning.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::event::{Labels, Ts};
use crate::notify::config::NotifyConfig;
use crate::notify::core::{Group, GroupKey, Member};
use crate::notify::deliver::{Entry, HeldDigest, History, ReceiverCounts};
use crate::notify::format::redact;
use crate::rules::{Alert, AlertState, Op, Severity};

/// File name under `state_dir`.
pub const FILE: &str = "notify-state.json";

/// The file's content.
#[derive(Debug, Serialize, Deserialize, Default)]
pub struct Saved {
    /// Format version.
    pub version: u32,
    /// Groups that hold firing alerts.
    pub groups: Vec<SavedGroup>,
    /// The notification log.
    pub history: Vec<Entry>,
    /// Per-receiver counters.
    #[serde(default)]
    pub counts: std::collections::BTreeMap<String, ReceiverCounts>,
    /// What each receiver's rate limit held back for a digest not yet sent, by receiver
    /// name: a kill before the digest goes out does not lose it.
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub digests: std::collections::BTreeMap<String, HeldDigest>,
}

/// A group.
#[derive(Debug, Serialize, Deserialize)]
pub struct SavedGroup {
    /// Route index.
    pub route: usize,
    /// What the route was ([`route_key`]): a restart whose config moved or changed routes
    /// routes the group's alerts again instead of trusting the index. Absent in old files.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub route_key: Option<String>,
    /// Group labels.
    pub labels: Vec<(String, String)>,
    /// Last message, ms.
    pub last_flush_ms: Option<u64>,
    /// Firing members.
    pub members: Vec<SavedMember>,
}

/// A firing alert.
#[derive(Debug, Serialize, Deserialize)]
pub struct SavedMember {
    /// Rule.
    pub rule: String,
    /// Rule type.
    pub rule_type: String,
    /// Labels.
    pub labels: Vec<(String, String)>,
    /// Severity.
    pub severity: Severity,
    /// Value at the last change.
    pub value: f64,
    /// Threshold.
    pub threshold: f64,
    /// Comparison.
    pub op: Op,
    /// Window.
    pub window_secs: Option<u64>,
    /// Count.
    pub count: u64,
    /// Denominator.
    pub total: Option<u64>,
    /// Last change, ms.
    pub at_ms: u64,
    /// Firing since, ms.
    pub since_ms: u64,
    /// Summary.
    pub summary: Option<String>,
    /// Evidence.
    pub evidence: Vec<String>,
    /// Announced.
    pub announced: bool,
    /// Last sent per receiver name, ms.
    pub sent: Vec<(String, u64)>,
}

fn labels_vec(l: &Labels) -> Vec<(String, String)> {
    l.iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// Snapshot of what must survive a restart.
pub fn snapshot(
    cfg: &NotifyConfig,
    groups: &std::collections::HashMap<GroupKey, Group>,
    hist: &History,
) -> Saved {
    let mut out = Saved {
        version: 1,
        history: hist.entries.iter().cloned().collect(),
        counts: hist.counts.clone(),
        groups: Vec::new(),
        digests: Default::default(),
    };
    for ((route, labels), g) in groups {
        let members: Vec<SavedMember> = g
            .members
            .values()
            .filter(|m| m.firing && m.announced)
            .map(|m| {
                let a = &m.alert;
                SavedMember {
                    rule: a.rule.to_string(),
                    rule_type: a.rule_type.to_string(),
                    labels: labels_vec(&a.labels),
                    severity: a.severity,
                    value: a.value,
                    threshold: a.threshold,
                    op: a.op,
                    window_secs: a.window_secs,
                    count: a.count,
                    total: a.total,
                    at_ms: a.at.0,
                    since_ms: a.since.0,
                    // Stored as a receiver would get them: the state file holds no more
                    // of a log line than a message does (redaction is idempotent, so
                    // restored evidence sent later is unchanged by a second pass).
                    summary: a.summary.as_deref().map(|s| redact(s, &cfg.redact)),
                    evidence: a.evidence.iter().map(|e| redact(e, &cfg.redact)).collect(),
                    announced: m.announced,
                    sent: m
                        .sent
                        .iter()
                        .filter_map(|(i, t)| cfg.receivers.get(*i).map(|r| (r.name.clone(), t.0)))
                        .collect(),
                }
            })
            .collect();
        if !members.is_empty() {
            out.groups.push(SavedGroup {
                route: *route,
                route_key: route_key(cfg, *route),
                labels: labels_vec(labels),
                last_flush_ms: g.last_flush.map(|t| t.0),
                members,
            });
        }
    }
    out.groups
        .sort_by(|a, b| (a.route, &a.labels).cmp(&(b.route, &b.labels)));
    out
}

/// The route index [`groups`] gives a saved group whose route is no longer the one at its
/// index: [`Notifier::restore`](super::core::Notifier::restore) routes its alerts again.
pub const REROUTE: usize = usize::MAX;

/// A route's identity (severities, matchers, group_by) and receiver names, as text; `None`
/// when `cfg` has no route `i`.
pub fn route_key(cfg: &NotifyConfig, i: usize) -> Option<String> {
    let r = cfg.routes.get(i)?;
    let mut names: Vec<&str> = r
        .receivers
        .iter()
        .filter_map(|&j| cfg.receivers.get(j).map(|rc| rc.name.as_str()))
        .collect();
    names.sort_unstable();
    Some(format!("{:?} {names:?}", super::core::route_identity(r)))
}

/// Turns saved groups back into notifier groups (receiver names resolved against `cfg`); a
/// group whose route changed gets the route [`REROUTE`].
pub fn groups(cfg: &NotifyConfig, saved: Vec<SavedGroup>) -> Vec<(GroupKey, Group)> {
    saved
        .into_iter()
        .map(|sg| {
            let mut g = Group {
                last_flush: sg.last_flush_ms.map(Ts),
                ..Group::default()
            };
            for m in sg.members {
                let labels =
                    Labels::from_pairs(m.labels.iter().map(|(k, v)| (k.as_str(), v.as_str())));
                let alert = Alert {
                    rule: Arc::from(m.rule.as_str()),
                    rule_type: crate::rules::static_rule_type(&m.rule_type),
                    labels: labels.clone(),
                    state: AlertState::Firing,
                    severity: m.severity,
                    value: m.value,
                    threshold: m.threshold,
                    op: m.op,
                    window_secs: m.window_secs,
                    count: m.count,
                    total: m.total,
                    at: Ts(m.at_ms),
                    since: Ts(m.since_ms),
                    summary: m.summary,
                    evidence: m.evidence,
                    backfill: false,
                    context: Vec::new(),
                };
                let sent = m
                    .sent
                    .iter()
                    .filter_map(|(name, t)| {
                        cfg.receivers
                            .iter()
                            .position(|r| &r.name == name)
                            .map(|i| (i, Ts(*t)))
                    })
                    .collect();
                g.members.insert(
                    (alert.rule.clone(), labels),
                    Member {
                        alert,
                        firing: true,
                        announced: m.announced,
                        pending: None,
                        occurrences: 0,
                        sent,
                        restored_until: None,
                        muted: false,
                    },
                );
            }
            let same = sg.route_key.is_none() || sg.route_key == route_key(cfg, sg.route);
            let key = (
                if same { sg.route } else { REROUTE },
                Labels::from_pairs(sg.labels.iter().map(|(k, v)| (k.as_str(), v.as_str()))),
            );
            (key, g)
        })
        .collect()
}

/// The state file path.
pub fn path(dir: &Path) -> PathBuf {
    dir.join(FILE)
}

/// Loads the state; a missing file is empty state, a corrupt one is renamed aside with a
/// warning (never a crash loop).
pub fn load(dir: &Path) -> Saved {
    let p = path(dir);
    let text = match std::fs::read(&p) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Saved::default(),
        Err(e) => {
            tracing::warn!(file = %p.display(), error = %e, "cannot read notification state; starting empty");
            return Saved::default();
        }
    };
    match serde_json::from_slice::<Saved>(&text) {
        Ok(s) => s,
        Err(e) => {
            let aside = p.with_extension(format!("corrupt-{}", std::process::id()));
            let moved = std::fs::rename(&p, &aside);
            tracing::warn!(file = %p.display(), error = %e, set_aside = %aside.display(), moved = moved.is_ok(),
                "notification state is corrupt; set aside, starting empty");
            Saved::default()
        }
    }
}

/// Writes the state atomically.
pub fn save(dir: &Path, s: &Saved) -> std::io::Result<()> {
    use std::io::Write;
    std::fs::create_dir_all(dir)?;
    let p = path(dir);
    let tmp = p.with_extension("json.tmp");
    let mut f = std::fs::File::create(&tmp)?;
    serde_json::to_writer_pretty(&mut f, s).map_err(std::io::Error::other)?;
    f.write_all(b"\n")?;
    f.sync_all()?;
    drop(f);
    std::fs::rename(&tmp, &p)?;
    if let Ok(d) = std::fs::File::open(dir) {
        let _ = d.sync_all();
    }
    Ok(())
}

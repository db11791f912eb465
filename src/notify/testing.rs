//! Fixtures shared by the notify modules' unit tests: one alert and one message shape, changed
//! per test with struct update syntax.

use super::core::{Body, Change, Item, Message};
use crate::event::{Labels, Ts};
use crate::rules::{Alert, AlertState, Op, Severity};
use regex::Regex;
use std::sync::Arc;

/// A `count` alert of `rule` over 5 m: 3 events against a threshold of 1, since `at`.
pub(crate) fn alert(
    rule: &str,
    state: AlertState,
    severity: Severity,
    labels: &[(&str, &str)],
    at: Ts,
) -> Alert {
    Alert {
        rule: Arc::from(rule),
        rule_type: "count",
        labels: Labels::from_pairs(labels.iter().copied()),
        state,
        severity,
        value: 3.0,
        threshold: 1.0,
        op: Op::Gt,
        window_secs: Some(300),
        count: 3,
        total: None,
        at,
        since: at,
        summary: None,
        evidence: Vec::new(),
        backfill: false,
        context: Vec::new(),
    }
}

/// Receiver 0 ("slack")'s message announcing `alert` as newly firing, in group `group`.
pub(crate) fn message(group: &str, alert: Alert) -> Message {
    Message {
        receiver: 0,
        receiver_name: "slack".into(),
        group: group.into(),
        at: alert.at,
        body: Body::Alerts {
            items: vec![Item {
                alert,
                change: Change::Firing,
                occurrences: 1,
            }],
        },
    }
}

/// The built-in redactions, compiled.
pub(crate) fn redactions() -> Vec<Regex> {
    super::config::BUILTIN_REDACT
        .iter()
        .map(|r| Regex::new(r).unwrap())
        .collect()
}

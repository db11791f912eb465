//! Notification: alert state changes in, messages out.
//!
//! The notify task owns delivery. Today it has one receiver type, `stdout` (one readable line,
//! or one JSON object, per notification); routing, grouping, rate limits and the network
//! receivers (Slack, email, webhook) plug in here. It never feeds back into counting: a slow
//! receiver only delays this task, and the channel in front of it is bounded.

use std::io::Write;

use tokio::sync::mpsc;

use crate::config::{Format, ReceiverConfig, ReceiverKind};
use crate::rules::{Alert, AlertState};

/// Formats a window length compactly: `45s`, `5m`, `1h`, `1h30m`.
pub fn short_duration(secs: u64) -> String {
    let (h, m, s) = (secs / 3600, secs / 60 % 60, secs % 60);
    let mut out = String::new();
    if h > 0 {
        out.push_str(&format!("{h}h"));
    }
    if m > 0 {
        out.push_str(&format!("{m}m"));
    }
    if s > 0 || out.is_empty() {
        out.push_str(&format!("{s}s"));
    }
    out
}

/// One readable line: time, state, severity, rule and labels, value vs threshold over the
/// window, the summary, and the first and last evidence lines.
pub fn format_text(a: &Alert) -> String {
    let state = match a.state {
        AlertState::Firing => "FIRING",
        AlertState::Resolved => "RESOLVED",
        AlertState::Event => "ALERT",
    };
    let mut s = format!(
        "{} {state} {} {}{}",
        a.at,
        a.severity.as_str(),
        a.rule,
        a.labels
    );
    match (a.window_secs, a.total) {
        (Some(w), Some(total)) => s.push_str(&format!(
            ": ratio {:.3} {} {} ({}/{}) over {}",
            a.value,
            a.op.as_str(),
            a.threshold,
            a.count,
            total,
            short_duration(w)
        )),
        (Some(w), None) => s.push_str(&format!(
            ": count {} {} {} over {}",
            a.count,
            a.op.as_str(),
            a.threshold,
            short_duration(w)
        )),
        (None, _) => {}
    }
    if a.state == AlertState::Resolved {
        s.push_str(&format!(" (firing since {})", a.since));
    }
    if let Some(sum) = &a.summary {
        s.push_str(&format!(" — {sum}"));
    }
    match a.evidence.as_slice() {
        [] => {}
        [one] => s.push_str(&format!(" | {one:?}")),
        [first, .., last] => s.push_str(&format!(" | {first:?} … {last:?}")),
    }
    s
}

/// The stdout receiver (or any writer, in tests).
pub struct StdoutReceiver {
    /// Receiver name.
    pub name: String,
    format: Format,
    severities: Vec<crate::rules::Severity>,
    out: Box<dyn Write + Send>,
    failed: bool,
}

impl StdoutReceiver {
    /// A receiver writing to `out`.
    pub fn new(cfg: &ReceiverConfig, out: Box<dyn Write + Send>) -> StdoutReceiver {
        let ReceiverKind::Stdout { format } = cfg.kind;
        StdoutReceiver {
            name: cfg.name.clone(),
            format,
            severities: cfg.severities.clone(),
            out,
            failed: false,
        }
    }

    /// Writes one notification. A closed stdout is reported once and then ignored: the
    /// daemon keeps counting.
    pub fn send(&mut self, a: &Alert) {
        if !self.severities.is_empty() && !self.severities.contains(&a.severity) {
            return;
        }
        let line = match self.format {
            Format::Text => format_text(a),
            Format::Json => {
                serde_json::to_string(a).unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}"))
            }
        };
        let res = writeln!(self.out, "{line}").and_then(|()| self.out.flush());
        if let Err(e) = res {
            if !self.failed {
                tracing::warn!(receiver = %self.name, error = %e, "cannot write notification");
                self.failed = true;
            }
        } else if self.failed {
            tracing::info!(receiver = %self.name, "receiver works again");
            self.failed = false;
        }
    }
}

/// What the notify task did, returned when it ends.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct NotifyStats {
    /// Notifications handed to receivers.
    pub sent: u64,
    /// Of which firing.
    pub firing: u64,
    /// Of which resolved.
    pub resolved: u64,
}

/// The notify task: delivers every alert change to every receiver, until the channel closes.
pub async fn run(mut receivers: Vec<StdoutReceiver>, mut rx: mpsc::Receiver<Alert>) -> NotifyStats {
    let mut stats = NotifyStats::default();
    while let Some(a) = rx.recv().await {
        for r in &mut receivers {
            r.send(&a);
        }
        stats.sent += 1;
        match a.state {
            AlertState::Firing | AlertState::Event => stats.firing += 1,
            AlertState::Resolved => stats.resolved += 1,
        }
    }
    stats
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{Labels, Ts};
    use crate::rules::{Op, Severity};
    use std::sync::Arc;

    fn alert() -> Alert {
        Alert {
            rule: Arc::from("error-rate"),
            rule_type: "ratio",
            labels: Labels::from_pairs([("worker", "w1")]),
            state: AlertState::Firing,
            severity: Severity::Warning,
            value: 0.15,
            threshold: 0.05,
            op: Op::Gt,
            window_secs: Some(300),
            count: 3,
            total: Some(20),
            at: Ts(1_795_428_000_000),
            since: Ts(1_795_428_000_000),
            summary: Some("too many failures".into()),
            evidence: vec!["KeyError: 'a'".into(), "x".into(), "ValueError: b".into()],
        }
    }

    #[test]
    fn text_line_has_everything_a_reader_needs() {
        assert_eq!(
            format_text(&alert()),
            "2026-11-23T10:00:00.000Z FIRING warning error-rate{worker=\"w1\"}: ratio 0.150 > 0.05 (3/20) over 5m — too many failures | \"KeyError: 'a'\" … \"ValueError: b\""
        );
    }

    #[test]
    fn short_durations() {
        assert_eq!(short_duration(0), "0s");
        assert_eq!(short_duration(45), "45s");
        assert_eq!(short_duration(3600), "1h");
        assert_eq!(short_duration(5400), "1h30m");
    }

    #[test]
    fn evidence_is_quoted_so_log_text_cannot_forge_fields() {
        let mut a = alert();
        a.evidence = vec!["\" | FIRING critical fake".into()];
        assert!(format_text(&a).ends_with(r#"| "\" | FIRING critical fake""#));
    }
}

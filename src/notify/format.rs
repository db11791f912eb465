//! Rendering messages for each receiver: one stdout line per item, Slack mrkdwn (escaped,
//! size-capped), an email subject and plain-text body with severity sections, our webhook
//! JSON and Alertmanager's alert array. Evidence and summaries pass through redaction first.

use regex::Regex;
use serde_json::{json, Value};

use crate::notify::core::{item_summary, Body, Change, Item, Message};
use crate::rules::{Alert, AlertState, Severity};

/// Shared rendering context.
pub struct Render<'a> {
    /// Host name shown in messages.
    pub hostname: &'a str,
    /// Redaction regexes.
    pub redact: &'a [Regex],
    /// Evidence lines kept from each end.
    pub evidence_lines: usize,
}

/// Replaces each redaction match (its `secret` group when it has one) with `[REDACTED]`.
pub fn redact(s: &str, res: &[Regex]) -> String {
    let mut out = s.to_string();
    for re in res {
        if !re.is_match(&out) {
            continue;
        }
        let mut next = String::with_capacity(out.len());
        let mut last = 0;
        for c in re.captures_iter(&out) {
            let m = c.name("secret").or_else(|| c.get(0)).expect("group 0");
            next.push_str(&out[last..m.start()]);
            next.push_str("[REDACTED]");
            last = m.end();
        }
        next.push_str(&out[last..]);
        out = next;
    }
    out
}

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

/// `ratio 0.150 > 0.05 (3/20) over 5m`, `count 3 > 1 over 1h`, or empty for `any`.
pub fn measure(a: &Alert) -> String {
    match (a.window_secs, a.total) {
        (Some(w), Some(total)) => format!(
            "ratio {:.3} {} {} ({}/{}) over {}",
            a.value,
            a.op.as_str(),
            a.threshold,
            a.count,
            total,
            short_duration(w)
        ),
        (Some(w), None) => format!(
            "{} {} {} {} over {}",
            if a.rule_type == "count" {
                "count".to_string()
            } else {
                a.rule_type.to_string()
            },
            fmt_num(a.value),
            a.op.as_str(),
            a.threshold,
            short_duration(w)
        ),
        (None, _) if a.rule_type == "any" => String::new(),
        (None, _) => format!(
            "{} {} {} {}",
            a.rule_type,
            fmt_num(a.value),
            a.op.as_str(),
            fmt_num(a.threshold)
        ),
    }
}

fn fmt_num(v: f64) -> String {
    if v.fract() == 0.0 && v.abs() < 1e15 {
        format!("{}", v as i64)
    } else {
        format!("{v:.3}")
    }
}

/// The evidence lines to show: the first and last `n`, redacted.
fn evidence(a: &Alert, r: &Render<'_>) -> Vec<String> {
    let ev = &a.evidence;
    let n = r.evidence_lines;
    let pick: Vec<&String> = if ev.len() <= 2 * n {
        ev.iter().collect()
    } else {
        ev[..n].iter().chain(ev[ev.len() - n..].iter()).collect()
    };
    pick.into_iter().map(|l| redact(l, r.redact)).collect()
}

/// One readable line: time, change, severity, rule and labels, measure, summary, and the
/// first and last evidence lines (quoted, so log text cannot forge fields).
pub fn format_text(a: &Alert) -> String {
    let state = match a.state {
        AlertState::Firing => Change::Firing,
        AlertState::Resolved => Change::Resolved,
        AlertState::Event => Change::Event,
    };
    item_line(
        &Item {
            alert: a.clone(),
            change: state,
            occurrences: 1,
        },
        a.at,
        &[],
    )
}

/// [`format_text`] for a message item at time `at`.
pub fn item_line(i: &Item, at: crate::event::Ts, redact_res: &[Regex]) -> String {
    let a = &i.alert;
    let mut s = format!("{at} {}", item_summary(i));
    let m = measure(a);
    if !m.is_empty() {
        s.push_str(": ");
        s.push_str(&m);
    }
    if i.change != Change::Firing && i.change != Change::Event {
        s.push_str(&format!(" (firing since {})", a.since));
    }
    if let Some(sum) = &a.summary {
        s.push_str(&format!(" — {}", redact(sum, redact_res)));
    }
    if !a.context.is_empty() {
        s.push_str(&format!(" [{}]", a.context.join("; ")));
    }
    let ev: Vec<String> = a.evidence.iter().map(|l| redact(l, redact_res)).collect();
    match ev.as_slice() {
        [] => {}
        [one] => s.push_str(&format!(" | {one:?}")),
        [first, .., last] => s.push_str(&format!(" | {first:?} … {last:?}")),
    }
    s
}

/// Lines for the stdout text receiver.
pub fn stdout_lines(m: &Message, r: &Render<'_>) -> Vec<String> {
    match &m.body {
        Body::Alerts { items } => items.iter().map(|i| item_line(i, m.at, r.redact)).collect(),
        Body::Digest { held, since, lines } => vec![format!(
            "{} DIGEST +{held} held back since {since}: {}",
            m.at,
            lines.join("; ")
        )],
        Body::Backfill {
            since,
            until,
            lines,
            changes,
        } => vec![format!(
            "{} BACKFILL {changes} alert changes from old lines read while catching up ({since} .. {until}): {}",
            m.at,
            lines.join("; ")
        )],
    }
}

/// JSON objects for the stdout json receiver (one per item).
pub fn stdout_json(m: &Message, r: &Render<'_>) -> Vec<String> {
    match &m.body {
        Body::Alerts { items } => items.iter().map(|i| item_json(i, r).to_string()).collect(),
        _ => vec![webhook_json(m, r).to_string()],
    }
}

/// Escapes Slack's control characters so log text cannot mention `@channel`, link or format.
pub fn slack_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// Slack `text` limit we keep to (Slack truncates at 40,000 and advises 4,000).
pub const SLACK_TEXT_MAX: usize = 3900;
/// Section block text limit.
pub const SLACK_SECTION_MAX: usize = 3000;

fn cap(s: String, max: usize) -> String {
    let n = s.chars().count();
    if n <= max {
        return s;
    }
    let marker = format!("\n… (truncated, {} more characters)", n - max + 60);
    let keep: String = s.chars().take(max.saturating_sub(60)).collect();
    keep + &marker
}

fn slack_item(i: &Item, r: &Render<'_>) -> String {
    let a = &i.alert;
    let icon = match (i.change, a.severity) {
        (Change::Resolved, _) => ":white_check_mark:",
        (_, Severity::Critical) => ":red_circle:",
        (_, Severity::Warning) => ":warning:",
        (_, Severity::Info) => ":information_source:",
    };
    let mut s = format!(
        "{icon} *{}* {} `{}`",
        i.change.word(),
        a.severity.as_str(),
        slack_escape(&format!("{}{}", a.rule, a.labels)).replace('`', "'")
    );
    if i.occurrences > 1 {
        s.push_str(&format!(" ×{}", i.occurrences));
    }
    let m = measure(a);
    if !m.is_empty() {
        s.push_str(&format!("\n{}", slack_escape(&m)));
    }
    match i.change {
        Change::Resolved | Change::Repeat => s.push_str(&format!(" (firing since {})", a.since)),
        _ => s.push_str(&format!(" at {}", a.at)),
    }
    if let Some(sum) = &a.summary {
        s.push_str(&format!("\n_{}_", slack_escape(&redact(sum, r.redact))));
    }
    if !a.context.is_empty() {
        s.push_str(&format!("\n{}", slack_escape(&a.context.join(" · "))));
    }
    let ev = evidence(a, r);
    if !ev.is_empty() {
        let body = ev
            .iter()
            .map(|l| slack_escape(l).replace("```", "'''"))
            .collect::<Vec<_>>()
            .join("\n");
        s.push_str(&format!("\n```{body}```"));
    }
    s
}

/// The Slack webhook body: `text` always, blocks when asked.
pub fn slack_body(m: &Message, r: &Render<'_>, blocks: bool) -> Value {
    let host = slack_escape(r.hostname);
    let (head, parts): (String, Vec<String>) = match &m.body {
        Body::Alerts { items } => (
            format!("*logwarden* on {host}: {}", slack_escape(&m.group)),
            items.iter().map(|i| slack_item(i, r)).collect(),
        ),
        Body::Digest { held, since, lines } => (
            format!("*logwarden* on {host}: +{held} held back since {since} (rate limit)"),
            vec![lines.iter().map(|l| format!("• {}", slack_escape(l))).collect::<Vec<_>>().join("\n")],
        ),
        Body::Backfill {
            since,
            until,
            lines,
            changes,
        } => (
            format!(
                "*logwarden* on {host}: {changes} alert changes from old lines read while catching up ({since} .. {until}); not sent one by one"
            ),
            vec![lines.iter().map(|l| format!("• {}", slack_escape(l))).collect::<Vec<_>>().join("\n")],
        ),
    };
    let text = cap(format!("{head}\n{}", parts.join("\n\n")), SLACK_TEXT_MAX);
    if !blocks {
        return json!({ "text": text });
    }
    let mut bl = vec![
        json!({"type": "section", "text": {"type": "mrkdwn", "text": cap(head, SLACK_SECTION_MAX)}}),
    ];
    for p in parts.into_iter().take(45) {
        bl.push(json!({"type": "section", "text": {"type": "mrkdwn", "text": cap(p, SLACK_SECTION_MAX)}}));
    }
    json!({ "text": text, "blocks": bl })
}

/// Removes CR, LF and other control characters (email headers).
fn one_line(s: &str) -> String {
    s.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect()
}

/// Email subject and plain-text body.
pub fn email(m: &Message, r: &Render<'_>) -> (String, String) {
    let host = one_line(r.hostname);
    match &m.body {
        Body::Alerts { items } => {
            let count = |sev: Severity| {
                items
                    .iter()
                    .filter(|i| i.change != Change::Resolved && i.alert.severity == sev)
                    .count()
            };
            let resolved = items.iter().filter(|i| i.change == Change::Resolved).count();
            let mut parts = Vec::new();
            for (sev, n) in [
                (Severity::Critical, count(Severity::Critical)),
                (Severity::Warning, count(Severity::Warning)),
                (Severity::Info, count(Severity::Info)),
            ] {
                if n > 0 {
                    parts.push(format!("{n} {}", sev.as_str()));
                }
            }
            if resolved > 0 {
                parts.push(format!("{resolved} resolved"));
            }
            let subject = one_line(&format!("[logwarden] {} on {host}", parts.join(", ")));
            let mut body = format!("logwarden on {host}, group {}, at {}\n", m.group, m.at);
            let sections = [
                ("CRITICAL", Some(Severity::Critical)),
                ("WARNING", Some(Severity::Warning)),
                ("INFO", Some(Severity::Info)),
                ("RESOLVED", None),
            ];
            for (title, sev) in sections {
                let sel: Vec<&Item> = items
                    .iter()
                    .filter(|i| match sev {
                        Some(s) => i.change != Change::Resolved && i.alert.severity == s,
                        None => i.change == Change::Resolved,
                    })
                    .collect();
                if sel.is_empty() {
                    continue;
                }
                body.push_str(&format!("\n{title}\n{}\n", "=".repeat(title.len())));
                for i in sel {
                    body.push_str(&email_item(i, r));
                }
            }
            (subject, body)
        }
        Body::Digest { held, since, lines } => (
            one_line(&format!("[logwarden] {held} notifications held back on {host}")),
            format!(
                "A rate limit held back {held} notifications since {since}:\n\n{}\n",
                lines.iter().map(|l| format!("  - {l}")).collect::<Vec<_>>().join("\n")
            ),
        ),
        Body::Backfill {
            since,
            until,
            lines,
            changes,
        } => (
            one_line(&format!("[logwarden] backfill summary: {changes} alert changes on {host}")),
            format!(
                "While catching up on old lines ({since} .. {until}) the rules raised {changes} alert changes.\nThey were not sent one by one:\n\n{}\n",
                lines.iter().map(|l| format!("  - {l}")).collect::<Vec<_>>().join("\n")
            ),
        ),
    }
}

fn email_item(i: &Item, r: &Render<'_>) -> String {
    let a = &i.alert;
    let mut s = format!(
        "\n* {}{} ({})",
        a.rule,
        a.labels,
        i.change.word().to_lowercase()
    );
    if i.occurrences > 1 {
        s.push_str(&format!(" ×{}", i.occurrences));
    }
    s.push('\n');
    let m = measure(a);
    if !m.is_empty() {
        s.push_str(&format!("  {m}\n"));
    }
    s.push_str(&format!("  since {}, at {}\n", a.since, a.at));
    if let Some(sum) = &a.summary {
        s.push_str(&format!("  {}\n", redact(sum, r.redact)));
    }
    for c in &a.context {
        s.push_str(&format!("  {c}\n"));
    }
    let ev = evidence(a, r);
    if !ev.is_empty() {
        s.push_str("  evidence:\n");
        for l in ev {
            s.push_str(&format!("    | {}\n", one_line(&l)));
        }
    }
    s
}

fn item_json(i: &Item, r: &Render<'_>) -> Value {
    let a = &i.alert;
    json!({
        "change": i.change,
        "state": a.state,
        "rule": a.rule.as_ref(),
        "type": a.rule_type,
        "severity": a.severity,
        "labels": a.labels,
        "value": a.value,
        "threshold": a.threshold,
        "op": a.op,
        "window_secs": a.window_secs,
        "count": a.count,
        "total": a.total,
        "since": a.since,
        "at": a.at,
        "summary": a.summary.as_ref().map(|s| redact(s, r.redact)),
        "evidence": evidence(a, r),
        "context": a.context,
        "occurrences": i.occurrences,
    })
}

/// Our webhook body.
pub fn webhook_json(m: &Message, r: &Render<'_>) -> Value {
    match &m.body {
        Body::Alerts { items } => {
            let firing = items.iter().any(|i| i.change != Change::Resolved);
            json!({
                "receiver": m.receiver_name,
                "host": r.hostname,
                "group": m.group,
                "at": m.at,
                "status": if firing { "firing" } else { "resolved" },
                "alerts": items.iter().map(|i| item_json(i, r)).collect::<Vec<_>>(),
            })
        }
        Body::Digest { held, since, lines } => json!({
            "receiver": m.receiver_name, "host": r.hostname, "at": m.at,
            "status": "digest", "held": held, "since": since, "lines": lines,
        }),
        Body::Backfill {
            since,
            until,
            lines,
            changes,
        } => json!({
            "receiver": m.receiver_name, "host": r.hostname, "at": m.at,
            "status": "backfill", "changes": changes, "since": since, "until": until, "lines": lines,
        }),
    }
}

/// Alertmanager's `POST /api/v2/alerts` body, or `None` for digests and backfill summaries
/// (Alertmanager does its own grouping and has no such notion).
pub fn alertmanager_json(m: &Message, r: &Render<'_>) -> Option<Value> {
    let Body::Alerts { items } = &m.body else {
        return None;
    };
    let alerts: Vec<Value> = items
        .iter()
        .map(|i| {
            let a = &i.alert;
            let mut labels = serde_json::Map::new();
            for (k, v) in a.labels.iter() {
                labels.insert(k.to_string(), json!(v));
            }
            labels.insert("alertname".into(), json!(a.rule.as_ref()));
            labels.insert("severity".into(), json!(a.severity.as_str()));
            labels.insert("instance".into(), json!(r.hostname));
            let mut desc = measure(a);
            for l in evidence(a, r) {
                desc.push_str(&format!("\n| {l}"));
            }
            let mut v = json!({
                "labels": labels,
                "annotations": {
                    "summary": a.summary.as_ref().map(|s| redact(s, r.redact)).unwrap_or_else(|| format!("{}{}", a.rule, a.labels)),
                    "description": desc.trim_start(),
                },
                "startsAt": a.since,
            });
            if i.change == Change::Resolved {
                v["endsAt"] = json!(a.at);
            }
            v
        })
        .collect();
    Some(Value::Array(alerts))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::Ts;
    use crate::notify::testing;

    use std::sync::Arc;

    fn alert() -> Alert {
        let at = Ts(1_795_428_000_000);
        Alert {
            rule_type: "ratio",
            value: 0.15,
            threshold: 0.05,
            total: Some(20),
            summary: Some("too many failures".into()),
            evidence: vec!["KeyError: 'a'".into(), "x".into(), "ValueError: b".into()],
            ..testing::alert(
                "error-rate",
                AlertState::Firing,
                Severity::Warning,
                &[("worker", "w1")],
                at,
            )
        }
    }

    fn res() -> Vec<Regex> {
        testing::redactions()
    }

    fn msg(items: Vec<Item>) -> Message {
        Message {
            receiver: 0,
            receiver_name: "slack".into(),
            group: "{rule=\"error-rate\"}".into(),
            at: Ts(1_795_428_000_000),
            body: Body::Alerts { items },
        }
    }

    fn item(a: Alert, change: Change) -> Item {
        Item {
            alert: a,
            change,
            occurrences: 1,
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

    #[test]
    fn redaction_hides_secrets_in_evidence() {
        let r = res();
        assert_eq!(
            redact("login failed password=hunter2 user=bob", &r),
            "login failed password=[REDACTED] user=bob"
        );
        assert_eq!(
            redact("GET https://bob:s3cret@api.example.com/x", &r),
            "GET https://bob:[REDACTED]@api.example.com/x"
        );
        assert_eq!(
            redact("Authorization: Bearer abc.def", &r),
            "Authorization: Bearer [REDACTED]"
        );
        assert_eq!(
            redact("key AKIAABCDEFGHIJKLMNOP used", &r),
            "key [REDACTED] used"
        );
    }

    #[test]
    fn slack_text_escapes_mentions_and_links_and_is_capped() {
        let mut a = alert();
        a.evidence = vec!["<!channel> <https://evil.example|click> & ```".into(); 1];
        let r = res();
        let rd = Render {
            hostname: "h1",
            redact: &r,
            evidence_lines: 3,
        };
        let body = slack_body(&msg(vec![item(a.clone(), Change::Firing)]), &rd, true);
        let text = body["text"].as_str().unwrap();
        assert!(
            !text.contains("<!channel>") && !text.contains("<https"),
            "{text}"
        );
        assert!(
            text.contains("&lt;!channel&gt;") && text.contains("&amp;"),
            "{text}"
        );
        assert!(body["blocks"].as_array().unwrap().len() >= 2);

        a.evidence = vec!["x".repeat(2000); 6];
        let items = (0..10).map(|_| item(a.clone(), Change::Firing)).collect();
        let rd = Render {
            hostname: "h1",
            redact: &r,
            evidence_lines: 3,
        };
        let text = slack_body(&msg(items), &rd, false)["text"]
            .as_str()
            .unwrap()
            .to_string();
        assert!(
            text.chars().count() <= SLACK_TEXT_MAX + 60,
            "{}",
            text.len()
        );
        assert!(text.contains("(truncated, "), "marker");
    }

    #[test]
    fn email_has_counted_subject_and_severity_sections() {
        let mut crit = alert();
        crit.rule = Arc::from("oom");
        crit.severity = Severity::Critical;
        let r = res();
        let rd = Render {
            hostname: "worker-7\r\nBcc: evil@example.com",
            redact: &r,
            evidence_lines: 3,
        };
        let m = msg(vec![
            item(crit.clone(), Change::Firing),
            item(crit, Change::Event),
            item(alert(), Change::Firing),
            item(alert(), Change::Resolved),
        ]);
        let (subject, body) = email(&m, &rd);
        assert_eq!(
            subject,
            "[logwarden] 2 critical, 1 warning, 1 resolved on worker-7  Bcc: evil@example.com"
        );
        assert!(!subject.contains('\n') && !subject.contains('\r'));
        let c = body.find("\nCRITICAL\n").unwrap();
        let w = body.find("\nWARNING\n").unwrap();
        let rs = body.find("\nRESOLVED\n").unwrap();
        assert!(c < w && w < rs, "{body}");
        assert!(body.contains("| KeyError: 'a'"), "{body}");
    }

    #[test]
    fn alertmanager_body_has_alertname_and_ends_at_for_resolved() {
        let r = res();
        let rd = Render {
            hostname: "h1",
            redact: &r,
            evidence_lines: 3,
        };
        let mut resolved = alert();
        resolved.at = Ts(1_795_428_600_000);
        let v = alertmanager_json(
            &msg(vec![
                item(alert(), Change::Firing),
                item(resolved, Change::Resolved),
            ]),
            &rd,
        )
        .unwrap();
        assert_eq!(v[0]["labels"]["alertname"], "error-rate");
        assert_eq!(v[0]["labels"]["worker"], "w1");
        assert!(v[0].get("endsAt").is_none());
        assert_eq!(v[1]["endsAt"], "2026-11-23T10:10:00.000Z");
    }
}

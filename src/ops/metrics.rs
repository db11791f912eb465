//! `/metrics`: a prometheus-client `Registry` built at scrape time from the [`Hub`]'s latest
//! snapshots and encoded as OpenMetrics text. Nothing here is updated per line: the stages
//! publish totals, and a scrape turns them into metrics. Names start with `logwarden_`;
//! counters get `_total` from the encoder.

use std::sync::atomic::{AtomicU64, Ordering};

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use prometheus_client::encoding::{EncodeMetric, MetricEncoder, NoLabelSet};
use prometheus_client::metrics::MetricType;

use super::{DurationHistogram, Hub};
use crate::event::Labels;

/// The content type of [`render`]'s output (served with the 0.0.4 type, Prometheus would
/// misread the `_total` suffixes; DEPENDENCIES.md §12).
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";
/// The content type of [`to_text_format`]'s output: the classic Prometheus text format.
pub const TEXT_CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Converts [`render`]'s OpenMetrics output to the classic text format (0.0.4), for clients
/// that do not ask for OpenMetrics (`curl`, `promtool check metrics`, old Prometheus): a
/// counter family `x` becomes `x_total` in its `# HELP` and `# TYPE` lines (the samples are
/// already `x_total`), and `# EOF` goes. We only emit counters and gauges, so that is all
/// the difference (histograms look the same in both).
pub fn to_text_format(om: &str) -> String {
    let counters: std::collections::HashSet<&str> = om
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.strip_suffix(" counter"))
        .collect();
    let mut out = String::with_capacity(om.len() + counters.len() * 12);
    for line in om.lines() {
        if line == "# EOF" || line.starts_with("# UNIT ") {
            continue;
        }
        let meta = ["# HELP ", "# TYPE "]
            .into_iter()
            .find_map(|p| line.strip_prefix(p).map(|rest| (p, rest)));
        if let Some((p, rest)) = meta {
            let name = rest.split(' ').next().unwrap_or("");
            if counters.contains(name) {
                out.push_str(p);
                out.push_str(name);
                out.push_str("_total");
                out.push_str(&rest[name.len()..]);
                out.push('\n');
                continue;
            }
        }
        out.push_str(line);
        out.push('\n');
    }
    out
}

type L = Vec<(String, String)>;
type Counters = Family<L, Counter<u64, AtomicU64>>;
type Gauges = Family<L, Gauge<f64, AtomicU64>>;

/// A histogram family built from totals ([`DurationHistogram`]): prometheus-client's own
/// `Histogram` can only observe, and the registry is rebuilt from snapshots per scrape.
#[derive(Debug, Default)]
struct Histograms(Vec<(L, DurationHistogram)>);

impl EncodeMetric for Histograms {
    fn encode(&self, mut encoder: MetricEncoder) -> std::fmt::Result {
        for (labels, h) in &self.0 {
            encoder
                .encode_family(labels)?
                .encode_histogram::<NoLabelSet>(h.sum, h.count(), &h.buckets(), None)?;
        }
        Ok(())
    }

    fn metric_type(&self) -> MetricType {
        MetricType::Histogram
    }
}

/// A label name Prometheus accepts: `[a-zA-Z_][a-zA-Z0-9_]*`, not starting with `__`, and
/// not one of the names we set ourselves (`reserved`), which get a `label_` prefix.
pub fn label_name(name: &str, reserved: &[&str]) -> String {
    let mut s: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect();
    if s.is_empty()
        || s.starts_with(|c: char| c.is_ascii_digit())
        || s.starts_with("__")
        || reserved.contains(&s.as_str())
    {
        s.insert_str(0, "label_");
    }
    s
}

fn with_labels(mut base: L, labels: &Labels) -> L {
    let reserved: Vec<String> = base.iter().map(|(k, _)| k.clone()).collect();
    let reserved: Vec<&str> = reserved.iter().map(String::as_str).collect();
    for (k, v) in labels.iter() {
        let k = label_name(k, &reserved);
        if !base.iter().any(|(b, _)| *b == k) {
            base.push((k, v.to_string()));
        }
    }
    base
}

fn l(pairs: &[(&str, &str)]) -> L {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

struct Builder {
    reg: Registry,
}

impl Builder {
    fn counters(&mut self, name: &str, help: &str) -> Counters {
        let f = Counters::default();
        self.reg.register(name, help, f.clone());
        f
    }
    fn gauges(&mut self, name: &str, help: &str) -> Gauges {
        let f = Gauges::default();
        self.reg.register(name, help, f.clone());
        f
    }
}

fn inc(f: &Counters, labels: L, n: u64) {
    f.get_or_create(&labels).inc_by(n);
}

fn set(f: &Gauges, labels: L, v: f64) {
    f.get_or_create(&labels).set(v);
}

/// Encodes every metric of `hub` in OpenMetrics text (ends with `# EOF`).
pub fn render(hub: &Hub) -> String {
    let mut b = Builder {
        reg: Registry::with_prefix("logwarden"),
    };
    let now = hub.clock.now();

    let info = b.gauges("build_info", "Version of the running daemon (always 1)");
    set(&info, l(&[("version", env!("CARGO_PKG_VERSION"))]), 1.0);
    let start = b.gauges(
        "start_time_seconds",
        "When the daemon started, in seconds since the Unix epoch",
    );
    set(&start, vec![], hub.started.0 as f64 / 1000.0);
    let reloads = b.counters("config_reloads", "Config reloads, by result");
    inc(
        &reloads,
        l(&[("result", "ok")]),
        hub.reloads.load(Ordering::Relaxed),
    );
    inc(
        &reloads,
        l(&[("result", "rejected")]),
        hub.reload_failures.load(Ordering::Relaxed),
    );

    // Sources: lines per source from the counters (stdin and files alike), bytes and
    // rotations per file from the tailer.
    let counters = hub.counters.borrow().clone();
    let lines = b.counters("lines_read", "Lines read, per source");
    for (src, t) in &counters.per_source {
        inc(&lines, l(&[("source", src)]), t.lines);
    }
    let tailer = hub.tailer.borrow().clone();
    let file_lines = b.counters("file_lines_read", "Lines read, per source and file path");
    let file_bytes = b.counters("file_bytes_read", "Bytes read, per source and file path");
    let rotations = b.counters(
        "file_rotations",
        "Times the file at a path was replaced, moved or removed",
    );
    let truncations = b.counters(
        "file_truncations",
        "Times a file shrank or was rewritten in place (copytruncate)",
    );
    let file_trunc_lines = b.counters(
        "file_truncated_lines",
        "Lines longer than the line cap (head kept), per file",
    );
    let offset = b.gauges(
        "file_offset_bytes",
        "Offset after the last complete line read, per file",
    );
    let lag = b.gauges(
        "file_lag_bytes",
        "Bytes of a file not read yet (size at the last read minus offset)",
    );
    let open = b.gauges(
        "file_open",
        "Whether the file at a path is open (1) or not (0)",
    );
    for f in &tailer.files {
        let p = f.path.display().to_string();
        let lab = l(&[("source", &f.source), ("path", &p)]);
        inc(&file_lines, lab.clone(), f.lines);
        inc(&file_bytes, lab.clone(), f.bytes);
        inc(&rotations, lab.clone(), f.rotations);
        inc(&truncations, lab.clone(), f.truncations);
        inc(&file_trunc_lines, lab.clone(), f.truncated_lines);
        set(&offset, lab.clone(), f.offset as f64);
        set(&lag, lab.clone(), f.size.saturating_sub(f.offset) as f64);
        set(&open, lab, if f.open { 1.0 } else { 0.0 });
    }
    let ckpt = b.counters("checkpoint_writes", "Checkpoint files written");
    inc(&ckpt, vec![], tailer.checkpoint_writes);
    let ckpt_err = b.counters(
        "checkpoint_write_errors",
        "Failed checkpoint writes (logged once per episode)",
    );
    inc(&ckpt_err, vec![], tailer.checkpoint_errors);
    let terr = b.counters(
        "tailer_errors",
        "Failed attempts to list a directory or to stat, open or read a file",
    );
    inc(&terr, vec![], tailer.errors);
    let werr = b.counters(
        "tailer_watch_errors",
        "Failed attempts to start inotify or add a watch",
    );
    inc(&werr, vec![], tailer.watch_errors);
    let open_files = b.gauges("tailer_open_files", "Files held open");
    set(&open_files, vec![], tailer.open_files as f64);
    let unwatched = b.gauges(
        "tailer_unwatched_dirs",
        "Directories tailed by the poll tick alone (inotify unavailable)",
    );
    set(&unwatched, vec![], tailer.unwatched_dirs as f64);

    // Classification.
    let classify = hub.classify.borrow().clone();
    for (name, help, v) in [
        (
            "lines_classified",
            "Physical lines classified",
            classify.lines,
        ),
        (
            "unmatched_lines",
            "Lines that matched no pattern (counted as kind other)",
            classify.unmatched,
        ),
        (
            "truncated_lines",
            "Lines cut at the line cap",
            classify.truncated,
        ),
        (
            "invalid_utf8_lines",
            "Lines that were not valid UTF-8",
            classify.invalid_utf8,
        ),
        (
            "folded_events",
            "Events folded into an earlier one",
            classify.folded,
        ),
        (
            "label_overflow",
            "Label values replaced by __other__ (cardinality cap)",
            classify.label_overflow,
        ),
    ] {
        let c = b.counters(name, help);
        inc(&c, vec![], v);
    }
    let events = b.counters(
        "events",
        "Classified events, per kind, source and label set",
    );
    for (kind, src, labels, n) in &counters.events {
        let base = l(&[("kind", kind), ("source", src)]);
        inc(&events, with_labels(base, labels), *n);
    }
    let overflow = b.counters(
        "series_overflow_events",
        "Events counted in the overflow series because max_series was reached",
    );
    inc(&overflow, vec![], counters.series_overflow);
    let overflow = b.counters(
        "event_series_overflow_events",
        "Events counted under __overflow__=\"true\" in events_total because max_series label sets were reached",
    );
    inc(&overflow, vec![], counters.event_series_overflow);

    // Queues.
    let queues = hub.queues.lock().unwrap_or_else(|e| e.into_inner()).clone();
    let up = b.gauges(
        "redis_up",
        "Whether the last poll of a [[queue]] reached Redis (1) or not (0)",
    );
    let latency = b.gauges(
        "queue_last_poll_duration_seconds",
        "Round-trip time of the last successful poll",
    );
    let mut durations = Histograms::default();
    let age = b.gauges(
        "queue_last_poll_age_seconds",
        "Seconds since the last successful poll",
    );
    let polls = b.counters("queue_polls", "Polls, by result");
    let key_errors = b.counters(
        "queue_key_errors",
        "Per-key errors inside good polls (WRONGTYPE, script errors)",
    );
    let series: Vec<(&str, Gauges)> = ["depth", "age", "pending", "lag"]
        .into_iter()
        .map(|m| {
            let (name, help) = match m {
                "depth" => ("queue_depth", "Jobs in a queue key"),
                "age" => (
                    "queue_oldest_job_age_seconds",
                    "Age of the oldest waiting job",
                ),
                "pending" => (
                    "queue_stream_pending",
                    "Stream entries delivered to a consumer group but not acknowledged",
                ),
                _ => (
                    "queue_stream_lag",
                    "Stream entries not yet delivered to a consumer group",
                ),
            };
            (m, b.gauges(name, help))
        })
        .collect();
    for (name, q) in &queues {
        let lab = l(&[("source", name)]);
        set(&up, lab.clone(), if q.up == Some(true) { 1.0 } else { 0.0 });
        if let Some(s) = q.latency_seconds {
            set(&latency, lab.clone(), s);
            durations.0.push((lab.clone(), q.latency.clone()));
        }
        if let Some(t) = q.last_ok {
            set(&age, lab.clone(), now.since(t).as_secs_f64());
        }
        inc(&polls, l(&[("source", name), ("result", "ok")]), q.polls);
        inc(
            &polls,
            l(&[("source", name), ("result", "failed")]),
            q.failed,
        );
        inc(&key_errors, lab, q.key_errors);
        if q.up == Some(true) {
            for (labels, metric, v) in &q.series {
                if let Some((_, g)) = series.iter().find(|(m, _)| m == metric) {
                    set(g, with_labels(l(&[("source", name)]), labels), *v);
                }
            }
        }
    }

    b.reg.register(
        "queue_poll_duration_seconds",
        "Round-trip times of successful polls",
        durations,
    );

    // Rules: ALERTS-style series per pending/firing alert, and a per-rule count.
    let alerts = b.gauges(
        "alerts",
        "Pending and firing alerts (1 per alert), like Prometheus's ALERTS",
    );
    let firing = b.gauges(
        "rule_alerts_firing",
        "Alerts of a rule that are firing now (0 when the rule is inactive)",
    );
    let layout = hub.layout.borrow().clone();
    for (rule, _, _) in &layout.rules {
        set(&firing, l(&[("rule", rule)]), 0.0);
    }
    for a in &counters.alerts {
        let base = l(&[
            ("rule", &a.rule),
            ("alertstate", a.state),
            ("severity", a.severity.as_str()),
        ]);
        set(&alerts, with_labels(base, &a.labels), 1.0);
        if a.state == "firing" {
            firing.get_or_create(&l(&[("rule", &a.rule)])).inc();
        }
    }
    let changes = b.counters("alert_changes", "Alert state changes handed to notify");
    inc(&changes, vec![], counters.alert_changes);

    // Notifications.
    let sent = b.counters(
        "notifications",
        "Notifications per receiver and outcome: sent, held (rate limit, listed in a digest), failed (after retries)",
    );
    let retries = b.counters("notification_retries", "Delivery retries per receiver");
    let coalesced = b.counters(
        "notifications_coalesced",
        "Messages merged into one already queued for the same group",
    );
    let down = b.gauges(
        "receiver_down",
        "Whether a receiver's last delivery failed (1) or not (0)",
    );
    let pending = b.gauges(
        "notification_groups",
        "Alert groups the notifier holds, per receiver",
    );
    for r in &layout.receivers {
        set(&pending, l(&[("receiver", r)]), 0.0);
    }
    for g in &hub.notify.borrow().groups {
        pending
            .get_or_create(&l(&[("receiver", &g.receiver)]))
            .inc();
    }
    if let Some(h) = hub.history() {
        let counts = h.lock().unwrap_or_else(|e| e.into_inner()).counts.clone();
        for r in &layout.receivers {
            let c = counts.get(r).cloned().unwrap_or_default();
            for (outcome, n) in [("sent", c.sent), ("held", c.held), ("failed", c.failed)] {
                inc(&sent, l(&[("receiver", r), ("outcome", outcome)]), n);
            }
            inc(&retries, l(&[("receiver", r)]), c.retries);
            inc(&coalesced, l(&[("receiver", r)]), c.coalesced);
            set(&down, l(&[("receiver", r)]), if c.down { 1.0 } else { 0.0 });
        }
    }

    let mut enc = String::new();
    // Writing into a String cannot fail.
    let _ = encode(&mut enc, &b.reg);
    // A family without labels is encoded as `name{} 1`: drop the empty braces, which some
    // parsers reject.
    let mut out = String::with_capacity(enc.len());
    for line in enc.lines() {
        match line.split_once("{} ") {
            Some((name, value)) if !line.starts_with('#') => {
                out.push_str(name);
                out.push(' ');
                out.push_str(value);
            }
            _ => out.push_str(line),
        }
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_names_are_made_valid() {
        assert_eq!(label_name("worker", &[]), "worker");
        assert_eq!(label_name("my-label", &[]), "my_label");
        assert_eq!(label_name("9x", &[]), "label_9x");
        assert_eq!(label_name("__x", &[]), "label___x");
        assert_eq!(label_name("kind", &["kind"]), "label_kind");
        assert_eq!(label_name("", &[]), "label_");
    }

    #[test]
    fn text_format_names_counter_families_with_total() {
        let om = "# HELP a_x Things.\n# TYPE a_x counter\na_x_total 3\n# HELP a_g G.\n# TYPE a_g gauge\na_g 1.0\n# EOF\n";
        assert_eq!(
            to_text_format(om),
            "# HELP a_x_total Things.\n# TYPE a_x_total counter\na_x_total 3\n# HELP a_g G.\n# TYPE a_g gauge\na_g 1.0\n"
        );
    }

    #[test]
    fn poll_durations_are_a_histogram_per_queue() {
        let hub = Hub::new(crate::clock::Clock::start());
        hub.queue("jobs", |q| {
            q.latency_seconds = Some(0.003);
            q.latency.observe(0.002);
            q.latency.observe(0.003);
            q.latency.observe(9.0);
        });
        let om = render(&hub);
        for want in [
            "# TYPE logwarden_queue_poll_duration_seconds histogram",
            r#"logwarden_queue_poll_duration_seconds_count{source="jobs"} 3"#,
            r#"logwarden_queue_poll_duration_seconds_bucket{le="0.001",source="jobs"} 0"#,
            r#"logwarden_queue_poll_duration_seconds_bucket{le="0.005",source="jobs"} 2"#,
            r#"logwarden_queue_poll_duration_seconds_bucket{le="5.0",source="jobs"} 2"#,
            r#"logwarden_queue_poll_duration_seconds_bucket{le="+Inf",source="jobs"} 3"#,
            r#"logwarden_queue_last_poll_duration_seconds{source="jobs"} 0.003"#,
        ] {
            assert!(om.lines().any(|l| l == want), "missing {want}\n{om}");
        }
        let text = to_text_format(&om);
        assert!(text.contains("# TYPE logwarden_queue_poll_duration_seconds histogram\n"));
    }

    #[test]
    fn empty_hub_renders_openmetrics() {
        let hub = Hub::new(crate::clock::Clock::start());
        let s = render(&hub);
        assert!(s.ends_with("# EOF\n"), "{s}");
        assert!(s.contains("logwarden_build_info{version="), "{s}");
        assert!(s.contains("\nlogwarden_tailer_open_files 0"), "{s}");
        assert!(!s.contains("{}"), "{s}");
    }
}

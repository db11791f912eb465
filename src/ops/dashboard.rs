//! `/`: a small server-rendered dashboard. One card per source (lines, events per kind with
//! their rate), totals, queues, pending and firing alerts, receivers, and the last hour of
//! error rate, total queue depth and the depth of each queue (up to [`QUEUE_CHARTS`]) as
//! inline SVG charts. No JavaScript and no CDN (the machine
//! may be offline); the page reloads itself every [`REFRESH_SECS`].
//!
//! Every number carries `data-value` and a stable `id` or `data-*` key, so a test (or a
//! scraper) reads exactly what a person sees.

use std::fmt::Write;

use serde_json::Value;

use super::Hub;

/// Seconds between automatic reloads of the page.
pub const REFRESH_SECS: u32 = 10;
/// Most per-queue depth charts on the page; a note counts the others.
pub const QUEUE_CHARTS: usize = 12;

/// HTML-escapes text for element content and attribute values.
pub fn esc(s: &str) -> String {
    let mut o = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => o.push_str("&amp;"),
            '<' => o.push_str("&lt;"),
            '>' => o.push_str("&gt;"),
            '"' => o.push_str("&quot;"),
            '\'' => o.push_str("&#39;"),
            c => o.push(c),
        }
    }
    o
}

fn num(v: &Value) -> f64 {
    v.as_f64().unwrap_or(0.0)
}

fn fmt_num(v: f64) -> String {
    if v.fract() == 0.0 && v.abs() < 1e15 {
        format!("{}", v as i64)
    } else {
        format!("{v:.2}")
    }
}

/// A `<span>` showing `v`, keyed by `attrs` (already escaped).
fn value(attrs: &str, v: f64) -> String {
    let t = fmt_num(v);
    format!(r#"<span class="v" {attrs} data-value="{t}">{t}</span>"#)
}

/// An SVG polyline chart of `points` (oldest first), 360×80 pixels, with its maximum.
pub fn chart(id: &str, title: &str, points: &[f64]) -> String {
    chart_sized(id, title, points, (360.0, 80.0))
}

/// [`chart`], `w`×`h` pixels.
fn chart_sized(id: &str, title: &str, points: &[f64], (w, h): (f64, f64)) -> String {
    let max = points.iter().copied().fold(0.0_f64, f64::max);
    let mut svg = format!(
        r#"<figure class="chart"><figcaption>{} <small>(last hour, max {})</small></figcaption><svg id="{}" width="{w}" height="{h}" viewBox="0 0 {w} {h}" role="img" aria-label="{}">"#,
        esc(title),
        fmt_num(max),
        esc(id),
        esc(title)
    );
    svg.push_str(r##"<rect width="100%" height="100%" fill="#f6f8fa"/>"##);
    if points.len() >= 2 {
        let step = w / (points.len() - 1) as f64;
        let scale = if max > 0.0 { (h - 8.0) / max } else { 0.0 };
        let pts: Vec<String> = points
            .iter()
            .enumerate()
            .map(|(i, v)| format!("{:.1},{:.1}", i as f64 * step, h - 4.0 - v * scale))
            .collect();
        let _ = write!(
            svg,
            r##"<polyline fill="none" stroke="#cf222e" stroke-width="2" points="{}"/>"##,
            pts.join(" ")
        );
    } else {
        let _ = write!(
            svg,
            r##"<text x="8" y="{:.0}" fill="#57606a">collecting…</text>"##,
            h / 2.0 + 4.0
        );
    }
    svg.push_str("</svg></figure>");
    svg
}

const STYLE: &str = r#"
body{font-family:system-ui,sans-serif;margin:1.5em;color:#1f2328;background:#fff}
h1{font-size:1.4em}h2{font-size:1.1em;margin-top:1.5em}
.cards{display:flex;flex-wrap:wrap;gap:1em}
.card{border:1px solid #d0d7de;border-radius:6px;padding:.8em 1em;min-width:14em}
.card h3{margin:.1em 0 .5em;font-size:1em}
.ok{border-left:6px solid #1a7f37}.bad{border-left:6px solid #cf222e}.warn{border-left:6px solid #bf8700}
table{border-collapse:collapse}td,th{padding:.2em .6em;text-align:left;border-bottom:1px solid #eee}
.v{font-variant-numeric:tabular-nums;font-weight:600}
.firing{color:#cf222e;font-weight:600}.pending{color:#bf8700}
figure{display:inline-block;margin:0 1em 1em 0}small{color:#57606a}
.queue-chart{display:inline-block}.queue-chart figcaption{font-size:.85em}
"#;

/// Renders the dashboard from the `/status` document (so both always agree).
pub fn render(hub: &Hub) -> String {
    let st = super::status::status(hub);
    let mut h = String::new();
    let healthy = st["health"]["ok"].as_bool().unwrap_or(false);
    let _ = write!(
        h,
        r#"<!doctype html><html lang="en"><head><meta charset="utf-8"><meta http-equiv="refresh" content="{REFRESH_SECS}"><title>logwarden</title><style>{STYLE}</style></head><body>"#
    );
    let _ = write!(
        h,
        r#"<h1>logwarden <small>{} · up {}s · refreshes every {REFRESH_SECS}s</small></h1>"#,
        esc(st["version"].as_str().unwrap_or("")),
        st["uptime_seconds"]
    );
    let _ = write!(
        h,
        r#"<div id="health" class="card {}" data-health="{}"><h3>health: {}</h3>"#,
        if healthy { "ok" } else { "bad" },
        if healthy { "ok" } else { "unhealthy" },
        if healthy { "ok" } else { "unhealthy" }
    );
    for r in st["health"]["reasons"].as_array().into_iter().flatten() {
        let _ = write!(h, "<div>{}</div>", esc(r.as_str().unwrap_or("")));
    }
    for r in st["health"]["warnings"].as_array().into_iter().flatten() {
        let _ = write!(
            h,
            "<div><small>{}</small></div>",
            esc(r.as_str().unwrap_or(""))
        );
    }
    h.push_str("</div>");

    // Totals and kinds.
    let t = &st["totals"];
    h.push_str(r#"<h2>Totals</h2><div class="cards"><div class="card"><table>"#);
    for (key, label) in [
        ("lines", "lines read"),
        ("events", "events"),
        ("errors", "errors (error, crash, oom)"),
        ("errors_per_minute", "errors per minute (last 5m)"),
        ("unmatched", "unmatched lines"),
        ("truncated", "truncated lines"),
    ] {
        let _ = write!(
            h,
            "<tr><td>{label}</td><td>{}</td></tr>",
            value(&format!(r#"id="total-{key}""#), num(&t[key]))
        );
    }
    h.push_str(r#"</table></div><div class="card"><table><tr><th>kind</th><th>total</th><th>per minute</th></tr>"#);
    if let Some(kinds) = st["kinds"].as_object() {
        for (k, v) in kinds {
            let ek = esc(k);
            let _ = write!(
                h,
                "<tr><td>{ek}</td><td>{}</td><td>{}</td></tr>",
                value(&format!(r#"data-kind="{ek}""#), num(&v["total"])),
                value(&format!(r#"data-kind-rate="{ek}""#), num(&v["per_minute"]))
            );
        }
    }
    h.push_str("</table></div></div>");

    // Charts.
    // One point per minute of the last hour: a quiet minute has no errors, and a depth
    // stays at its last polled value.
    let minutes = st["history"].as_array().cloned().unwrap_or_default();
    let by_start: std::collections::HashMap<&str, &Value> = minutes
        .iter()
        .filter_map(|m| Some((m["start"].as_str()?, m)))
        .collect();
    let now = hub.clock.now().0;
    let (mut errors, mut depth) = (Vec::new(), Vec::new());
    let mut last_depth = 0.0;
    for i in (0..super::HISTORY_MINUTES as u64).rev() {
        let start = crate::event::Ts((now - now % 60_000).saturating_sub(i * 60_000));
        let m = by_start.get(start.rfc3339().as_str());
        errors.push(m.map(|m| num(&m["errors"])).unwrap_or(0.0));
        if let Some(d) = m.and_then(|m| m["depth"].as_object()) {
            if !d.is_empty() {
                last_depth = d.values().map(num).fold(0.0, |a, b| a + b);
            }
        }
        depth.push(last_depth);
    }
    h.push_str("<h2>Last hour</h2>");
    h.push_str(&chart("chart-errors", "errors per minute", &errors));
    if st["queues"].as_array().is_some_and(|q| !q.is_empty()) {
        h.push_str(&chart("chart-depth", "queue depth (all queues)", &depth));
        queue_charts(&mut h, &st, &by_start, now);
    }

    // Sources.
    h.push_str(r#"<h2>Sources</h2><div class="cards">"#);
    for s in st["sources"].as_array().into_iter().flatten() {
        let name = s["name"].as_str().unwrap_or("");
        let en = esc(name);
        let alive = s["alive"].as_bool().unwrap_or(false);
        let _ = write!(
            h,
            r#"<div class="card {}" data-source="{en}"><h3>{en}</h3><small>{}</small><table><tr><td>lines</td><td>{}</td></tr>"#,
            if alive { "ok" } else { "bad" },
            esc(s["input"].as_str().unwrap_or("")),
            value(&format!(r#"data-source-lines="{en}""#), num(&s["lines"]))
        );
        if let Some(kinds) = s["events"].as_object() {
            for (k, v) in kinds {
                let ek = esc(k);
                let _ = write!(
                    h,
                    "<tr><td>{ek}</td><td>{} <small>({}/min)</small></td></tr>",
                    value(
                        &format!(r#"data-source-kind="{en}/{ek}""#),
                        num(&v["total"])
                    ),
                    fmt_num(num(&v["per_minute"]))
                );
            }
        }
        for f in s["files"].as_array().into_iter().flatten() {
            let _ = write!(
                h,
                "<tr><td colspan=2><small>{} · inode {} · offset {} · lag {}</small></td></tr>",
                esc(f["path"].as_str().unwrap_or("")),
                f["inode"],
                f["offset"],
                f["lag"]
            );
        }
        h.push_str("</table></div>");
    }
    h.push_str("</div>");

    // Instances (the `worker` label).
    if let Some(inst) = st["instances"].as_object().filter(|i| !i.is_empty()) {
        h.push_str(r#"<h2>Workers</h2><div class="cards">"#);
        for (w, kinds) in inst {
            let ew = esc(w);
            let errors: f64 = super::ERROR_KINDS.iter().map(|k| num(&kinds[*k])).sum();
            let _ = write!(
                h,
                r#"<div class="card {}" data-instance="{ew}"><h3>{ew}</h3><table>"#,
                if errors > 0.0 { "warn" } else { "ok" }
            );
            for (k, n) in kinds.as_object().into_iter().flatten() {
                let ek = esc(k);
                let _ = write!(
                    h,
                    "<tr><td>{ek}</td><td>{}</td></tr>",
                    value(&format!(r#"data-instance-kind="{ew}/{ek}""#), num(n))
                );
            }
            h.push_str("</table></div>");
        }
        h.push_str("</div>");
    }

    // Queues.
    if let Some(qs) = st["queues"].as_array().filter(|q| !q.is_empty()) {
        h.push_str(r#"<h2>Queues</h2><div class="cards">"#);
        for q in qs {
            let en = esc(q["name"].as_str().unwrap_or(""));
            let up = q["up"].as_bool();
            let _ = write!(
                h,
                r#"<div class="card {}" data-queue="{en}"><h3>{en}</h3><small>{}</small><table><tr><td>redis</td><td>{}</td></tr><tr><td>depth</td><td>{}</td></tr></table></div>"#,
                match up {
                    Some(true) => "ok",
                    Some(false) => "bad",
                    None => "warn",
                },
                esc(q["url"].as_str().unwrap_or("")),
                match up {
                    Some(true) => "up",
                    Some(false) => "down",
                    None => "not polled yet",
                },
                value(&format!(r#"data-queue-depth="{en}""#), num(&q["depth"]))
            );
        }
        h.push_str("</div>");
    }

    // Alerts.
    h.push_str(r#"<h2>Alerts</h2><table id="alerts"><tr><th>rule</th><th>labels</th><th>state</th><th>since</th><th>severity</th></tr>"#);
    let alerts = st["alerts"].as_array().cloned().unwrap_or_default();
    for a in &alerts {
        let state = a["state"].as_str().unwrap_or("");
        let labels = a["labels"]
            .as_object()
            .map(|m| {
                m.iter()
                    .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or("")))
                    .collect::<Vec<_>>()
                    .join(", ")
            })
            .unwrap_or_default();
        let _ = write!(
            h,
            r#"<tr class="alert" data-rule="{}" data-state="{}"><td>{}</td><td>{}</td><td class="{}">{}</td><td>{}</td><td>{}</td></tr>"#,
            esc(a["rule"].as_str().unwrap_or("")),
            esc(state),
            esc(a["rule"].as_str().unwrap_or("")),
            esc(&labels),
            esc(state),
            esc(state),
            esc(a["since"].as_str().unwrap_or("")),
            esc(a["severity"].as_str().unwrap_or(""))
        );
    }
    if alerts.is_empty() {
        h.push_str(r#"<tr><td colspan=5><small>nothing pending or firing</small></td></tr>"#);
    }
    h.push_str("</table>");

    // Rule windows.
    let windows = st["windows"].as_array().cloned().unwrap_or_default();
    if !windows.is_empty() {
        h.push_str(r#"<h2>Rule windows</h2><table id="windows"><tr><th>rule</th><th>labels</th><th>value</th><th>threshold</th><th>window</th><th>state</th></tr>"#);
        for w in &windows {
            let labels = w["labels"]
                .as_object()
                .map(|m| {
                    m.iter()
                        .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or("")))
                        .collect::<Vec<_>>()
                        .join(", ")
                })
                .unwrap_or_default();
            let state = w["state"].as_str().unwrap_or("");
            let _ = write!(
                h,
                r#"<tr><td>{}</td><td>{}</td><td>{}</td><td>{} {}</td><td>{}s</td><td class="{}">{}</td></tr>"#,
                esc(w["rule"].as_str().unwrap_or("")),
                esc(&labels),
                fmt_num(num(&w["value"])),
                esc(w["op"].as_str().unwrap_or("")),
                fmt_num(num(&w["threshold"])),
                w["window_secs"],
                esc(state),
                esc(state)
            );
        }
        h.push_str("</table>");
    }

    // Receivers and the last notifications.
    h.push_str(r#"<h2>Notifications</h2><div class="cards">"#);
    for r in st["receivers"].as_array().into_iter().flatten() {
        let en = esc(r["name"].as_str().unwrap_or(""));
        let healthy = r["healthy"].as_bool().unwrap_or(true);
        let _ = write!(
            h,
            r#"<div class="card {}" data-receiver="{en}"><h3>{en}</h3><table><tr><td>sent</td><td>{}</td></tr><tr><td>held</td><td>{}</td></tr><tr><td>failed</td><td>{}</td></tr></table></div>"#,
            if healthy { "ok" } else { "bad" },
            value(&format!(r#"data-receiver-sent="{en}""#), num(&r["sent"])),
            value(&format!(r#"data-receiver-held="{en}""#), num(&r["held"])),
            value(
                &format!(r#"data-receiver-failed="{en}""#),
                num(&r["failed"])
            ),
        );
    }
    h.push_str("</div><table>");
    for e in st["notifications"].as_array().into_iter().flatten().rev() {
        let what = e["what"]
            .as_array()
            .map(|w| {
                w.iter()
                    .filter_map(|x| x.as_str())
                    .collect::<Vec<_>>()
                    .join("; ")
            })
            .unwrap_or_default();
        let _ = write!(
            h,
            "<tr><td><small>{}</small></td><td>{}</td><td>{}</td><td>{}</td></tr>",
            esc(e["at"].as_str().unwrap_or("")),
            esc(e["receiver"].as_str().unwrap_or("")),
            esc(&e["outcome"].to_string().replace('"', "")),
            esc(&what)
        );
    }
    h.push_str("</table></body></html>\n");
    h
}

/// One small depth chart per application queue (the `queue` label) of each configured
/// `[[queue]]`, in config order then by name, at most [`QUEUE_CHARTS`], with a note counting
/// the others. A level carries into minutes without a poll; a queue missing from a minute's
/// poll is 0.
fn queue_charts(
    h: &mut String,
    st: &Value,
    by_start: &std::collections::HashMap<&str, &Value>,
    now: u64,
) {
    let configured: Vec<&Value> = st["queues"].as_array().into_iter().flatten().collect();
    let mut keys: Vec<(usize, String)> = Vec::new();
    let mut add = |i: usize, q: &str| {
        if !keys.iter().any(|(j, k)| *j == i && k == q) {
            keys.push((i, q.to_string()));
        }
    };
    for (i, qc) in configured.iter().enumerate() {
        let name = qc["name"].as_str().unwrap_or("");
        for m in by_start.values() {
            for q in m["queue_depth"][name].as_object().into_iter().flatten() {
                add(i, q.0);
            }
        }
        for s in qc["series"].as_array().into_iter().flatten() {
            if s["metric"] == "depth" {
                let l = &s["labels"];
                add(i, l["queue"].as_str().or(l["key"].as_str()).unwrap_or(""));
            }
        }
    }
    keys.sort();
    if keys.is_empty() {
        return;
    }
    h.push_str(r#"<div id="queue-charts">"#);
    for (n, (i, q)) in keys.iter().take(QUEUE_CHARTS).enumerate() {
        let name = configured[*i]["name"].as_str().unwrap_or("");
        let mut points = Vec::with_capacity(super::HISTORY_MINUTES);
        let mut last = 0.0;
        for back in (0..super::HISTORY_MINUTES as u64).rev() {
            let start = crate::event::Ts((now - now % 60_000).saturating_sub(back * 60_000));
            let polled = by_start
                .get(start.rfc3339().as_str())
                .and_then(|m| m["queue_depth"][name].as_object());
            if let Some(per_queue) = polled {
                last = per_queue.get(q).map(num).unwrap_or(0.0);
            }
            points.push(last);
        }
        let key = esc(&format!("{name}/{q}"));
        let _ = write!(h, r#"<div class="queue-chart" data-queue-chart="{key}">"#);
        h.push_str(&chart_sized(
            &format!("chart-depth-{n}"),
            &format!("{name} · {q}"),
            &points,
            (180.0, 50.0),
        ));
        h.push_str("</div>");
    }
    if keys.len() > QUEUE_CHARTS {
        let _ = write!(
            h,
            r#"<p id="queue-charts-more" data-value="{0}"><small>{0} more queues are not charted (/status lists them all)</small></p>"#,
            keys.len() - QUEUE_CHARTS
        );
    }
    h.push_str("</div>");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_markup() {
        assert_eq!(
            esc(r#"<a href="x">&'"#),
            "&lt;a href=&quot;x&quot;&gt;&amp;&#39;"
        );
    }

    #[test]
    fn chart_scales_points() {
        let s = chart("c", "t", &[0.0, 5.0, 10.0]);
        assert!(
            s.contains("points=\"0.0,76.0 180.0,40.0 360.0,4.0\""),
            "{s}"
        );
        assert!(chart("c", "t", &[]).contains("collecting"));
    }

    #[test]
    fn one_chart_per_queue_up_to_the_cap_with_a_note() {
        use crate::queues::{Metric, Sample, SampleBatch};
        let hub = Hub::new(crate::clock::Clock::start());
        hub.layout.send_modify(|l| {
            l.queues.push(crate::ops::QueueLayout {
                name: "celery".into(),
                url: "redis://127.0.0.1:6379/0".into(),
                interval: std::time::Duration::from_secs(5),
                timeout: std::time::Duration::from_secs(2),
            })
        });
        let mut a = crate::ops::Activity::default();
        let samples = (0..QUEUE_CHARTS + 3)
            .map(|i| Sample {
                labels: crate::event::Labels::from_pairs([("queue", format!("q{i:02}").as_str())]),
                metric: Metric::Depth,
                value: i as f64,
            })
            .collect();
        let now = hub.clock.now();
        a.samples(&SampleBatch {
            source: "celery".into(),
            at: now,
            samples,
            complete: true,
        });
        hub.counters.send_replace(a.snapshot(now));
        let page = render(&hub);
        assert_eq!(page.matches("data-queue-chart=").count(), QUEUE_CHARTS);
        assert!(page.contains(r#"data-queue-chart="celery/q00""#), "{page}");
        assert!(page.contains(r#"data-queue-chart="celery/q11""#));
        assert!(!page.contains(r#"data-queue-chart="celery/q12""#));
        assert!(
            page.contains(r#"id="queue-charts-more" data-value="3""#),
            "{page}"
        );
    }

    #[test]
    fn empty_hub_renders() {
        let hub = Hub::new(crate::clock::Clock::start());
        let page = render(&hub);
        assert!(page.contains(r#"id="total-lines""#), "{page}");
        assert!(page.ends_with("</html>\n"));
    }
}

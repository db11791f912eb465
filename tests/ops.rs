//! Operating the daemon, end to end: the real binary tailing a file in a temp dir, a real
//! `redis-server`, real HTTP over loopback. `/metrics` is checked by `promtool` (Debian
//! package `prometheus`) and the dashboard by a real headless Chromium (Debian `chromium`);
//! `scripts/test` installs both when missing, so their absence is a failure, not a skip.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::common::{bin, free_port, RedisServer};
use crate::notify::{FakeHttp, Reply};

const SLACK_SECRET: &str = "T0OPS/B0OPS/xoxOPSWEBHOOKSECRET";

const LOG: &str = "\
2026-11-23 10:00:00,000 INFO worker-1 Task jobs.fetch[a1] succeeded in 0.5s
2026-11-23 10:00:01,000 INFO worker-1 Task jobs.fetch[a2] succeeded in 0.4s
2026-11-23 10:00:02,000 ERROR worker-1 Task jobs.fetch[a3] raised unexpected: ConnectionError('reset')
2026-11-23 10:00:03,000 INFO worker-1 nothing to see here
2026-11-23 10:00:04,000 ERROR worker-1 Task jobs.fetch[a4] raised unexpected: ConnectionError('reset')
";

/// A daemon with its stdout and stderr in files; killed by pid on drop.
struct Daemon {
    child: Child,
    port: u16,
    dir: PathBuf,
}

impl Daemon {
    fn start(dir: &Path, cfg: &Path, env: &[(&str, &str)]) -> Daemon {
        Daemon::start_with(dir, cfg, env, &[])
    }

    fn start_with(dir: &Path, cfg: &Path, env: &[(&str, &str)], args: &[&str]) -> Daemon {
        let port = free_port();
        let listen = format!("127.0.0.1:{port}");
        Daemon::spawn(
            dir,
            cfg,
            env,
            &[args, &["--listen", &listen]].concat(),
            port,
        )
    }

    /// A daemon listening where its config's `[http] listen` says (`port`): no `--listen`,
    /// which would also override the address after a reload.
    fn start_configured(dir: &Path, cfg: &Path, port: u16) -> Daemon {
        Daemon::spawn(dir, cfg, &[], &[], port)
    }

    fn spawn(dir: &Path, cfg: &Path, env: &[(&str, &str)], args: &[&str], port: u16) -> Daemon {
        let mut cmd = Command::new(bin());
        cmd.args(["run", "--config", cfg.to_str().unwrap()])
            .args(args)
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(dir.join("stdout.log")).unwrap())
            .stderr(std::fs::File::create(dir.join("stderr.log")).unwrap());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let d = Daemon {
            child: cmd.spawn().unwrap(),
            port,
            dir: dir.to_path_buf(),
        };
        wait_for("the http listener", Duration::from_secs(20), || {
            TcpStream::connect(("127.0.0.1", port)).is_ok()
        });
        d
    }

    fn get(&self, path: &str) -> Resp {
        get(self.port, path, None)
    }

    fn status(&self) -> Value {
        serde_json::from_str(&self.get("/status").body).expect("/status is JSON")
    }

    fn signal(&self, sig: i32) {
        // SAFETY: kill(2) on the pid of a child we spawned and have not reaped.
        assert_eq!(unsafe { libc::kill(self.child.id() as i32, sig) }, 0);
    }

    /// Waits (bounded) for the process to exit; returns its exit code.
    fn wait_exit(&mut self, limit: Duration) -> Option<i32> {
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            if let Some(st) = self.child.try_wait().unwrap() {
                return st.code();
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("daemon did not exit within {limit:?}\n{}", self.stderr());
    }

    fn stderr(&self) -> String {
        std::fs::read_to_string(self.dir.join("stderr.log")).unwrap_or_default()
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill(); // already gone is fine
        let _ = self.child.wait();
    }
}

struct Resp {
    status: u16,
    content_type: String,
    body: String,
}

/// One HTTP/1.1 GET over loopback (`Connection: close`, read to the end).
fn get(port: u16, path: &str, accept: Option<&str>) -> Resp {
    let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let accept = accept
        .map(|a| format!("Accept: {a}\r\n"))
        .unwrap_or_default();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n{accept}Connection: close\r\n\r\n"
    )
    .unwrap();
    let mut raw = String::new();
    s.read_to_string(&mut raw).expect("read response");
    let (head, body) = raw.split_once("\r\n\r\n").expect("a complete response");
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .expect("status code");
    let content_type = head
        .lines()
        .find_map(|l| {
            l.to_ascii_lowercase()
                .strip_prefix("content-type:")
                .map(|v| v.trim().to_string())
        })
        .unwrap_or_default();
    Resp {
        status,
        content_type,
        body: body.to_string(),
    }
}

fn wait_for(what: &str, limit: Duration, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if f() {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("timed out after {limit:?} waiting for {what}");
}

/// A webhook endpoint on loopback that answers 200 and records request bodies (the notify
/// tests' fake HTTP server).
struct Hook(FakeHttp);

impl Hook {
    fn start() -> Hook {
        Hook(FakeHttp::start(vec![Reply::Ok]))
    }

    fn url(&self) -> String {
        self.0.url("/hook")
    }

    fn bodies(&self) -> Vec<String> {
        self.0.requests().into_iter().map(|r| r.body).collect()
    }
}

/// Writes `logs/w1.log` and a config tailing it from the beginning, with an error-count rule
/// and `extra` appended.
fn setup(dir: &Path, extra: &str) -> PathBuf {
    std::fs::create_dir_all(dir.join("logs")).unwrap();
    std::fs::write(dir.join("logs/w1.log"), LOG).unwrap();
    let cfg = dir.join("logwarden.toml");
    std::fs::write(&cfg, setup_text(dir, extra)).unwrap();
    cfg
}

/// The config [`setup`] writes (a reload test rewrites it with another `extra`).
fn setup_text(dir: &Path, extra: &str) -> String {
    format!(
        r#"
state_dir = "{state}"
default_rules = false
shutdown_grace = "20s"

[[source]]
name = "workers"
path = "{logs}/*.log"
start_at = "beginning"
labels = {{ worker = "{{stem}}" }}

[[rule]]
name = "errors"
type = "count"
kinds = ["error"]
window = "5m"
threshold = 1
severity = "warning"
group_by = ["worker"]
{extra}
"#,
        state = dir.join("state").display(),
        logs = dir.join("logs").display(),
    )
}

/// The value of one series (`name{labels}` exactly as written) in a `/metrics` body.
fn sample(body: &str, series: &str) -> Option<f64> {
    body.lines()
        .filter_map(|l| l.rsplit_once(' '))
        .find(|(s, _)| *s == series)
        .and_then(|(_, v)| v.parse().ok())
}

fn lines_read(st: &Value) -> u64 {
    st["totals"]["lines"].as_u64().unwrap_or(0)
}

fn promtool() -> PathBuf {
    ["/usr/bin/promtool", "/usr/local/bin/promtool"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.exists())
        .expect("promtool is not installed (apt-get install -y prometheus)")
}

#[test]
fn ops_metrics_pass_promtool_and_status_holds_the_numbers_without_secrets() {
    let tmp = tempfile::tempdir().unwrap();
    let redis = RedisServer::start();
    redis.cmd(&["RPUSH", "jobs:q", "a", "b", "c"]);
    let cfg = setup(
        tmp.path(),
        &format!(
            r#"
[[queue]]
name = "jobs"
url = "{url}"
interval = "200ms"
keys = ["jobs:q"]

[[receiver]]
name = "team-slack"
type = "slack"
url_env = "OPS_TEST_SLACK_URL"
"#,
            url = redis.url()
        ),
    );
    // The slack "webhook" is a dead loopback port whose URL carries the secret.
    let slack = format!("http://127.0.0.1:1/services/{SLACK_SECRET}");
    let d = Daemon::start(tmp.path(), &cfg, &[("OPS_TEST_SLACK_URL", &slack)]);
    wait_for(
        "all lines, a poll and the alert",
        Duration::from_secs(30),
        || {
            let st = d.status();
            lines_read(&st) == 5
                && st["totals"]["events"] == 4
                && st["queues"][0]["up"] == true
                && st["alerts"].as_array().is_some_and(|a| !a.is_empty())
        },
    );

    // /metrics, classic text: promtool's linter is happy with the real output.
    let m = d.get("/metrics");
    assert_eq!(m.status, 200);
    assert!(
        m.content_type.starts_with("text/plain; version=0.0.4"),
        "{}",
        m.content_type
    );
    let mut check = Command::new(promtool())
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    check
        .stdin
        .take()
        .unwrap()
        .write_all(m.body.as_bytes())
        .unwrap();
    let out = check.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "promtool check metrics failed:\n{}{}\n--- metrics ---\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
        m.body
    );
    for want in [
        r#"logwarden_lines_read_total{source="workers"} 5"#,
        r#"logwarden_events_total{kind="error",source="workers",task="jobs.fetch",worker="w1"} 2"#,
        r#"logwarden_unmatched_lines_total 1"#,
        r#"logwarden_redis_up{source="jobs"} 1"#,
        r#"logwarden_queue_depth{source="jobs",key="jobs:q",part="waiting",queue="jobs:q"} 3"#,
        r#"logwarden_alerts{rule="errors",alertstate="firing",severity="warning",worker="w1"} 1"#,
        r#"logwarden_rule_alerts_firing{rule="errors"} 1"#,
        r#"logwarden_notifications_total{receiver="team-slack",outcome="sent"} 0"#,
    ] {
        let found = m
            .body
            .lines()
            .any(|l| l.replace("{}", "").replace(".0", "") == want);
        assert!(found, "missing {want}\n{}", m.body);
    }
    assert!(
        m.body.contains("logwarden_file_rotations_total{"),
        "{}",
        m.body
    );
    // Poll durations: the last one, and all of them as a histogram whose count is the
    // good polls.
    assert!(
        m.body
            .contains("logwarden_queue_last_poll_duration_seconds{"),
        "{}",
        m.body
    );
    assert!(m
        .body
        .contains("# TYPE logwarden_queue_poll_duration_seconds histogram\n"));
    let polls = sample(
        &m.body,
        r#"logwarden_queue_polls_total{source="jobs",result="ok"}"#,
    );
    assert_eq!(
        sample(
            &m.body,
            r#"logwarden_queue_poll_duration_seconds_count{source="jobs"}"#
        ),
        polls,
        "{}",
        m.body
    );
    assert_eq!(
        sample(
            &m.body,
            r#"logwarden_queue_poll_duration_seconds_bucket{le="+Inf",source="jobs"}"#
        ),
        polls
    );

    // OpenMetrics when asked for, as Prometheus does.
    let om = get(
        d.port,
        "/metrics",
        Some("application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5"),
    );
    assert_eq!(
        om.content_type,
        "application/openmetrics-text; version=1.0.0; charset=utf-8"
    );
    assert!(om.body.ends_with("# EOF\n"));
    assert!(om.body.contains("# TYPE logwarden_lines_read counter"));

    // /status: sources with path, inode, offset and lag; windows; alerts; receivers.
    let st = d.status();
    let file = &st["sources"][0]["files"][0];
    let log = tmp.path().join("logs/w1.log");
    let md = std::fs::metadata(&log).unwrap();
    assert_eq!(st["sources"][0]["name"], "workers");
    assert_eq!(st["sources"][0]["alive"], true);
    assert_eq!(file["path"], log.display().to_string());
    assert_eq!(file["inode"], md.ino());
    assert_eq!(file["offset"], md.len());
    assert_eq!(file["lag"], 0);
    assert_eq!(st["sources"][0]["events"]["error"]["total"], 2);
    assert_eq!(st["kinds"]["error"]["total"], 2);
    assert_eq!(st["totals"]["unmatched"], 1);
    let w = &st["windows"][0];
    assert_eq!(
        (&w["rule"], &w["labels"]["worker"], &w["count"], &w["state"]),
        (&json!("errors"), &json!("w1"), &json!(2), &json!("firing")),
        "{w}"
    );
    assert_eq!((&w["window_secs"], &w["op"]), (&json!(300), &json!(">")));
    assert!(!st["history"].as_array().unwrap().is_empty());
    assert_eq!(st["alerts"][0]["rule"], "errors");
    assert_eq!(st["alerts"][0]["state"], "firing");
    assert!(st["alerts"][0]["since"].as_str().unwrap().ends_with('Z'));
    assert_eq!(st["queues"][0]["depth"], 3.0);
    assert_eq!(st["receivers"][0]["name"], "team-slack");
    assert_eq!(st["health"]["ok"], true);

    // The secret is in none of the pages.
    wait_for("the slack attempt to fail", Duration::from_secs(30), || {
        d.status()["receivers"][0]["failed"].as_u64() > Some(0)
            || d.status()["notifications"]
                .as_array()
                .is_some_and(|n| !n.is_empty())
    });
    for path in ["/status", "/metrics", "/", "/health"] {
        let body = d.get(path).body;
        for secret in [SLACK_SECRET, "xoxOPSWEBHOOKSECRET", "B0OPS"] {
            assert!(!body.contains(secret), "{path} leaks {secret}:\n{body}");
        }
    }
}

#[test]
fn ops_health_is_503_with_the_reason_while_redis_is_down_and_200_again_after() {
    let tmp = tempfile::tempdir().unwrap();
    let mut redis = RedisServer::start();
    let cfg = setup(
        tmp.path(),
        &format!(
            r#"
[[queue]]
name = "jobs"
url = "{url}"
interval = "200ms"
timeout = "200ms"
keys = ["jobs:q"]
"#,
            url = redis.url()
        ),
    );
    let d = Daemon::start(tmp.path(), &cfg, &[]);
    wait_for(
        "a good poll and /health 200",
        Duration::from_secs(20),
        || d.status()["queues"][0]["up"] == true && d.get("/health").status == 200,
    );
    redis.stop();
    let mut last = String::new();
    wait_for("/health 503", Duration::from_secs(20), || {
        let r = d.get("/health");
        last = r.body;
        r.status == 503
    });
    let h: Value = serde_json::from_str(&last).unwrap();
    assert_eq!(h["status"], "unhealthy");
    let reason = h["reasons"][0].as_str().unwrap();
    assert!(
        reason.starts_with("queue \"jobs\"") && reason.contains("last good poll"),
        "{reason}"
    );
    assert_eq!(d.status()["queues"][0]["up"], false);
    redis.restart();
    wait_for("/health 200 again", Duration::from_secs(20), || {
        d.get("/health").status == 200
    });
}

/// Reads `data-value` of the first element whose attributes contain `key` in a dumped DOM.
fn dom_value(dom: &str, key: &str) -> f64 {
    let at = dom
        .find(key)
        .unwrap_or_else(|| panic!("{key} not on the page"));
    let rest = &dom[at..];
    let v = rest
        .split("data-value=\"")
        .nth(1)
        .and_then(|r| r.split('"').next())
        .unwrap_or_else(|| panic!("{key} has no data-value"));
    v.parse().unwrap_or_else(|_| panic!("{key}: {v:?}"))
}

fn chromium() -> PathBuf {
    ["/usr/bin/chromium", "/usr/bin/chromium-browser"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.exists())
        .expect("chromium is not installed (apt-get install -y chromium)")
}

/// Runs headless Chromium with `args`, bounded by a deadline.
fn run_chromium(args: &[String], out: &Path) -> std::process::Output {
    let profile = tempfile::tempdir().unwrap();
    let mut child = Command::new(chromium())
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--no-first-run",
            "--hide-scrollbars",
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .args(args)
        .stdout(std::fs::File::create(out).unwrap())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        if child.try_wait().unwrap().is_some() {
            break;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("chromium did not finish within 90s");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    child.wait_with_output().unwrap()
}

#[test]
fn ops_dashboard_in_a_real_browser_shows_what_status_says() {
    let tmp = tempfile::tempdir().unwrap();
    let redis = RedisServer::start();
    redis.cmd(&["RPUSH", "jobs:q", "a", "b", "c"]);
    let cfg = setup(
        tmp.path(),
        &format!(
            "[[queue]]\nname = \"jobs\"\nurl = \"{}\"\ninterval = \"200ms\"\nkeys = [\"jobs:q\"]\n",
            redis.url()
        ),
    );
    let d = Daemon::start(tmp.path(), &cfg, &[]);
    // Wait until everything is read, counted and polled: then the numbers stand still.
    wait_for("all lines counted", Duration::from_secs(30), || {
        let st = d.status();
        lines_read(&st) == 5
            && st["sources"][0]["lines"] == 5
            && st["totals"]["events"] == 4
            && st["history"]
                .as_array()
                .is_some_and(|h| h.iter().any(|m| m["queue_depth"]["jobs"]["jobs:q"] == 3.0))
    });
    let url = format!("http://127.0.0.1:{}/", d.port);
    let dom_file = tmp.path().join("dom.html");
    let out = run_chromium(
        &[
            "--virtual-time-budget=3000".into(),
            "--dump-dom".into(),
            url.clone(),
        ],
        &dom_file,
    );
    let dom = std::fs::read_to_string(&dom_file).unwrap();
    assert!(
        dom.contains("id=\"total-lines\""),
        "chromium did not render the page ({}):\n{dom}",
        String::from_utf8_lossy(&out.stderr)
    );
    let st = d.status();
    let n = |v: &Value| v.as_f64().unwrap_or(f64::NAN);
    assert_eq!(
        dom_value(&dom, "id=\"total-lines\""),
        n(&st["totals"]["lines"])
    );
    assert_eq!(
        dom_value(&dom, "id=\"total-events\""),
        n(&st["totals"]["events"])
    );
    assert_eq!(
        dom_value(&dom, "id=\"total-errors\""),
        n(&st["totals"]["errors"])
    );
    assert_eq!(
        dom_value(&dom, "id=\"total-unmatched\""),
        n(&st["totals"]["unmatched"])
    );
    for (kind, v) in st["kinds"].as_object().unwrap() {
        assert_eq!(
            dom_value(&dom, &format!("data-kind=\"{kind}\"")),
            n(&v["total"]),
            "{kind}"
        );
    }
    assert_eq!(
        dom_value(&dom, "data-source-lines=\"workers\""),
        n(&st["sources"][0]["lines"])
    );
    assert_eq!(
        dom_value(&dom, "data-source-kind=\"workers/error\""),
        n(&st["sources"][0]["events"]["error"]["total"])
    );
    // One card per worker (the `worker` label), as the operators' old dashboard had.
    for (kind, n_) in st["instances"]["w1"].as_object().unwrap() {
        assert_eq!(
            dom_value(&dom, &format!("data-instance-kind=\"w1/{kind}\"")),
            n(n_),
            "{kind}"
        );
    }
    assert_eq!(st["instances"]["w1"]["error"], 2);
    // The firing alert is listed, and the charts are drawn.
    assert!(
        dom.contains(r#"data-rule="errors" data-state="firing""#),
        "{dom}"
    );
    assert!(
        dom.contains(r#"id="chart-errors""#) && dom.contains("<polyline"),
        "{dom}"
    );
    // One small depth chart per queue.
    let at = dom
        .find(r#"data-queue-chart="jobs/jobs:q""#)
        .unwrap_or_else(|| panic!("no chart for the queue:\n{dom}"));
    assert!(
        dom[at..].contains(r#"id="chart-depth-0""#) && dom[at..].contains("<polyline"),
        "{dom}"
    );
    assert_eq!(dom.matches("data-queue-chart=").count(), 1);
    assert!(dom.contains(r#"http-equiv="refresh""#));

    let artifacts = crate::common::repo("target/test-artifacts");
    std::fs::create_dir_all(&artifacts).unwrap();
    let png = artifacts.join("dashboard.png");
    let _ = std::fs::remove_file(&png); // a stale one must not pass
    run_chromium(
        &[
            "--window-size=1280,1400".into(),
            format!("--screenshot={}", png.display()),
            url,
        ],
        &tmp.path().join("shot.log"),
    );
    let bytes = std::fs::read(&png).expect("chromium wrote no screenshot");
    assert!(bytes.starts_with(b"\x89PNG"), "not a PNG");
}

#[test]
fn ops_sigterm_flushes_a_pending_notification_and_writes_the_checkpoint() {
    let tmp = tempfile::tempdir().unwrap();
    let hook = Hook::start();
    let cfg = setup(
        tmp.path(),
        &format!(
            r#"
[[receiver]]
name = "hook"
type = "webhook"
url = "{url}"

[[route]]
receivers = ["hook"]
group_wait = "1h"
"#,
            url = hook.url()
        ),
    );
    let mut d = Daemon::start(tmp.path(), &cfg, &[]);
    wait_for(
        "the alert held by group_wait",
        Duration::from_secs(30),
        || {
            d.status()["pending_groups"]
                .as_array()
                .is_some_and(|g| !g.is_empty())
        },
    );
    assert!(hook.bodies().is_empty(), "sent before group_wait");
    let ckpt = tmp.path().join("state/checkpoints.json");
    let _ = std::fs::remove_file(&ckpt); // only the drain may write it now
    d.signal(libc::SIGTERM);
    let code = d.wait_exit(Duration::from_secs(30));
    assert_eq!(code, Some(0), "{}", d.stderr());
    let bodies = hook.bodies();
    assert_eq!(bodies.len(), 1, "{bodies:?}");
    assert!(bodies[0].contains("errors"), "{}", bodies[0]);
    let saved: Value = serde_json::from_slice(&std::fs::read(&ckpt).expect("checkpoint written"))
        .expect("checkpoint is JSON");
    assert_eq!(saved["files"][0]["offset"], LOG.len() as u64);
    let history = std::fs::read_to_string(tmp.path().join("state/notify-state.json")).unwrap();
    assert!(history.contains("\"sent\""), "{history}");
}

#[test]
fn ops_help_and_version_are_worth_reading() {
    let v = Command::new(bin()).arg("--version").output().unwrap();
    assert_eq!(
        String::from_utf8_lossy(&v.stdout).trim(),
        format!("logwarden {}", env!("CARGO_PKG_VERSION"))
    );
    let h = Command::new(bin())
        .args(["run", "--help"])
        .output()
        .unwrap();
    let h = String::from_utf8_lossy(&h.stdout);
    for flag in ["--listen <ADDR>", "--no-http", "--config", "--state-dir"] {
        assert!(h.contains(flag), "{flag} missing from run --help:\n{h}");
    }
}

/// A config tailing `logs/*.log` as "workers" and `<extra_src>/*.log` as a source of that
/// name, with the error-count rule, from the beginning.
fn reload_config(dir: &Path, extra_src: &str, extra: &str) -> String {
    std::fs::create_dir_all(dir.join(extra_src)).unwrap();
    format!(
        r#"
state_dir = "{state}"
default_rules = false

[[source]]
name = "workers"
path = "{dir}/logs/*.log"
start_at = "beginning"
labels = {{ worker = "{{stem}}" }}

[[source]]
name = "{extra_src}"
path = "{dir}/{extra_src}/*.log"
start_at = "beginning"

[[rule]]
name = "errors"
type = "count"
kinds = ["error"]
window = "5m"
threshold = 1
severity = "warning"
group_by = ["worker"]
{extra}
"#,
        state = dir.join("state").display(),
        dir = dir.display(),
    )
}

/// Appends (never rewrites: a rewrite may be seen half-done, as a truncation).
fn append(path: &Path, text: &str) {
    let mut f = std::fs::OpenOptions::new().append(true).open(path).unwrap();
    f.write_all(text.as_bytes()).unwrap();
}

fn source_lines(st: &Value, name: &str) -> Option<u64> {
    st["sources"]
        .as_array()?
        .iter()
        .find(|s| s["name"] == name)
        .and_then(|s| s["lines"].as_u64())
}

#[test]
fn ops_sighup_reloads_sources_patterns_and_rules_and_rejects_a_bad_config() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    std::fs::create_dir_all(dir.join("logs")).unwrap();
    std::fs::write(dir.join("logs/w1.log"), LOG).unwrap();
    let cfg = dir.join("logwarden.toml");
    std::fs::write(&cfg, reload_config(dir, "old", "")).unwrap();
    std::fs::write(dir.join("old/o.log"), "old line 1\n").unwrap();
    let d = Daemon::start(dir, &cfg, &[]);
    wait_for("the alert firing", Duration::from_secs(30), || {
        let st = d.status();
        lines_read(&st) == 6 && st["alerts"].as_array().is_some_and(|a| a.len() == 1)
    });
    let since = d.status()["alerts"][0]["since"].clone();

    // An invalid config is rejected; the old one keeps running.
    std::fs::write(
        &cfg,
        "[[rule]]\nname = \"broken\"\ntype = \"count\"\nthreshold = \"many\"\n",
    )
    .unwrap();
    d.signal(libc::SIGHUP);
    wait_for("the rejection", Duration::from_secs(20), || {
        d.status()["reloads"]["rejected"] == 1
    });
    assert!(
        d.stderr().contains("config reload rejected"),
        "{}",
        d.stderr()
    );
    append(&dir.join("old/o.log"), "old line 2\n");
    wait_for("the old source still read", Duration::from_secs(20), || {
        source_lines(&d.status(), "old") == Some(2)
    });

    // A valid one: "old" is removed, "new" added, the rule is unchanged and a rule is added.
    std::fs::write(
        &cfg,
        reload_config(
            dir,
            "new",
            "[[rule]]\nname = \"ooms\"\ntype = \"any\"\nkinds = [\"oom\"]\nseverity = \"critical\"\n\
             [[pattern]]\nname = \"novel\"\nkind = \"novel\"\nregex = 'new line'\n",
        ),
    )
    .unwrap();
    std::fs::write(dir.join("new/n.log"), "new line 1\n").unwrap();
    d.signal(libc::SIGHUP);
    wait_for("the reload", Duration::from_secs(20), || {
        d.status()["reloads"]["ok"] == 1
    });
    wait_for("the new source read", Duration::from_secs(20), || {
        source_lines(&d.status(), "new") == Some(1)
    });
    // The new pattern classifies it.
    wait_for("the new pattern's event", Duration::from_secs(20), || {
        d.status()["kinds"]["novel"]["total"] == 1
    });
    let st = d.status();
    let names: Vec<&str> = st["sources"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["workers", "new"]);
    let rules: Vec<&str> = st["rules"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["name"].as_str().unwrap())
        .collect();
    assert_eq!(rules, ["errors", "ooms"]);
    // The unchanged rule kept its window and its alert (same `since`).
    assert_eq!(st["alerts"].as_array().unwrap().len(), 1, "{st}");
    assert_eq!(st["alerts"][0]["since"], since);

    // The kept file resumes exactly where it was (no re-read from the beginning), and the
    // removed source is no longer read.
    append(
        &dir.join("logs/w1.log"),
        "2026-11-23 10:00:05,000 INFO worker-1 one more\n",
    );
    append(&dir.join("old/o.log"), "old line 3\n");
    wait_for("the appended line", Duration::from_secs(20), || {
        source_lines(&d.status(), "workers") == Some(6)
    });
    std::thread::sleep(Duration::from_millis(1500)); // two poll ticks: nothing more comes
    let st = d.status();
    assert_eq!(
        source_lines(&st, "workers"),
        Some(6),
        "re-read after reload"
    );
    assert_eq!(
        lines_read(&st),
        6 + 2 + 1,
        "the removed source was read: {st}"
    );
    assert_eq!(st["health"]["ok"], true, "{st}");
}

#[test]
fn ops_a_bad_http_listen_address_is_a_config_error() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = tmp.path().join("bad.toml");
    std::fs::write(&cfg, "[http]\nlisten = \"localhost\"\n").unwrap();
    let out = Command::new(bin())
        .args(["check", "--config", cfg.to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("http.listen") && err.contains("\"localhost\""),
        "{err}"
    );
}

#[test]
fn ops_systemd_unit_verifies_and_is_hardened() {
    let unit = std::fs::read_to_string(crate::common::repo("config/logwarden.service")).unwrap();
    for want in [
        "DynamicUser=yes",
        "ProtectSystem=strict",
        "ProtectHome=yes",
        "PrivateTmp=yes",
        "NoNewPrivileges=yes",
        "StateDirectory=logwarden",
        "ReadOnlyPaths=",
        "CapabilityBoundingSet=\n",
        "RestrictAddressFamilies=AF_INET AF_INET6 AF_UNIX",
        "SystemCallFilter=@system-service",
        "ExecReload=/bin/kill -HUP $MAINPID",
        "EnvironmentFile=",
    ] {
        assert!(unit.contains(want), "the unit lacks {want:?}");
    }
    // systemd's own checker, with the binary path pointing at the one we built.
    let tmp = tempfile::tempdir().unwrap();
    let copy = tmp.path().join("logwarden.service");
    std::fs::write(
        &copy,
        unit.replace("/usr/local/bin/logwarden", bin().to_str().unwrap()),
    )
    .unwrap();
    let analyze = ["/usr/bin/systemd-analyze", "/bin/systemd-analyze"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.exists())
        .expect("systemd-analyze is not installed (apt-get install -y systemd)");
    let out = Command::new(analyze)
        .arg("verify")
        .arg(&copy)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "systemd-analyze verify: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn ops_json_logs_say_redis_is_down_once_and_count_the_failed_polls() {
    let tmp = tempfile::tempdir().unwrap();
    let dead = free_port(); // nothing listens there
    let cfg = setup(
        tmp.path(),
        &format!(
            r#"
[[queue]]
name = "jobs"
url = "redis://127.0.0.1:{dead}/0"
interval = "100ms"
timeout = "200ms"
keys = ["jobs:q"]
"#
        ),
    );
    let mut d = Daemon::start_with(tmp.path(), &cfg, &[], &["--log-format", "json"]);
    wait_for("10 failed polls", Duration::from_secs(30), || {
        d.status()["queues"][0]["failed_polls"].as_u64() >= Some(10)
    });
    let metrics = d.get("/metrics").body;
    assert!(
        metrics.lines().any(
            |l| l.starts_with(r#"logwarden_queue_polls_total{source="jobs",result="failed"} "#)
        ),
        "{metrics}"
    );
    d.signal(libc::SIGTERM);
    assert_eq!(d.wait_exit(Duration::from_secs(30)), Some(0));
    let log = d.stderr();
    let mut down = 0;
    for line in log.lines().filter(|l| l.starts_with('{')) {
        let v: Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}"));
        assert!(
            v["level"].is_string() && v["timestamp"].is_string(),
            "{line}"
        );
        if v["message"] == "redis queue source is down; retrying every interval" {
            assert_eq!(v["queue"], "jobs");
            down += 1;
        }
    }
    assert_eq!(down, 1, "one warning per outage, not per poll:\n{log}");
    // Everything but the exit summary is JSON.
    let other: Vec<&str> = log
        .lines()
        .filter(|l| !l.starts_with('{') && !l.starts_with("logwarden: "))
        .collect();
    assert!(other.is_empty(), "{other:?}");
}

/// The `worker` label of every alert in a webhook body (our JSON shape).
fn hook_workers(body: &str) -> Vec<String> {
    let v: Value = serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {body}"));
    v["alerts"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|a| a["labels"]["worker"].as_str().map(String::from))
        .collect()
}

/// Two error lines from `worker`, which fire the "errors" rule for it.
fn errors_of(worker: &str) -> String {
    format!(
        "2026-11-23 10:01:00,000 ERROR {worker} Task jobs.fetch[b1] raised unexpected: ConnectionError('reset')\n\
         2026-11-23 10:01:01,000 ERROR {worker} Task jobs.fetch[b2] raised unexpected: ConnectionError('reset')\n"
    )
}

/// Notification sections for the reload tests: an `any` rule on ooms (critical), then
/// `receivers_and_routes`.
fn notify_toml(receivers_and_routes: &str) -> String {
    format!(
        "[[rule]]\nname = \"ooms\"\ntype = \"any\"\nkinds = [\"oom\"]\nseverity = \"critical\"\n{receivers_and_routes}"
    )
}

#[test]
fn ops_sighup_reloads_receivers_and_routes_without_resending() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let (hook, slack) = (Hook::start(), FakeHttp::start(vec![Reply::Ok]));
    let slack_url = slack.url(&format!("/services/{SLACK_SECRET}"));
    let hook_receiver = format!(
        "[[receiver]]\nname = \"hook\"\ntype = \"webhook\"\nurl = \"{}\"\n",
        hook.url()
    );
    let slack_receiver = |env: &str| {
        format!("[[receiver]]\nname = \"slack\"\ntype = \"slack\"\nurl_env = \"{env}\"\n")
    };
    let route = |receivers: &str, extra: &str| {
        format!("[[route]]\nreceivers = [{receivers}]\ngroup_wait = \"0s\"\ngroup_interval = \"1s\"\n{extra}")
    };
    let cfg = setup(
        dir,
        &notify_toml(&format!("{hook_receiver}{}", route("\"hook\"", ""))),
    );
    let d = Daemon::start(dir, &cfg, &[("OPS_RELOAD_SLACK_URL", &slack_url)]);
    // w1.log's lines are hours old at start-up: its alert is announced in a backfill summary.
    wait_for("w1's alert at the hook", Duration::from_secs(30), || {
        hook.bodies().len() == 1
    });
    let first: Value = serde_json::from_str(&hook.bodies()[0]).unwrap();
    assert_eq!(first["status"], "backfill", "{first}");
    assert!(first["lines"].to_string().contains("w1"), "{first}");

    // Slack is added to the route: it hears that w1 is still firing; the hook is not told
    // again (its next message, for w2, holds w2 alone: a re-send of w1 would come first or
    // be merged into it).
    let reload = |text: String| {
        std::fs::write(&cfg, setup_text(dir, &text)).unwrap();
        d.signal(libc::SIGHUP);
    };
    reload(notify_toml(&format!(
        "{hook_receiver}{}{}",
        slack_receiver("OPS_RELOAD_SLACK_URL"),
        route("\"hook\", \"slack\"", "")
    )));
    wait_for("the reload", Duration::from_secs(20), || {
        d.status()["reloads"]["ok"] == 1
    });
    wait_for("w1 at slack", Duration::from_secs(30), || {
        !slack.requests().is_empty()
    });
    let first = &slack.requests()[0];
    assert!(first.path.ends_with(SLACK_SECRET), "{}", first.path);
    assert!(
        first.body.contains("STILL FIRING") && first.body.contains("w1"),
        "{}",
        first.body
    );
    std::fs::write(dir.join("logs/w2.log"), errors_of("worker-2")).unwrap();
    wait_for("w2's alert at the hook", Duration::from_secs(30), || {
        hook.bodies().len() >= 2
    });
    let bodies = hook.bodies();
    assert_eq!(bodies.len(), 2, "{bodies:?}");
    assert_eq!(hook_workers(&bodies[1]), ["w2"], "w1 re-sent: {bodies:?}");
    let names: Vec<Value> = d.status()["receivers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["name"].clone())
        .collect();
    assert_eq!(names, [json!("hook"), json!("slack")]);

    // Slack's route now takes critical alerts only: w3's errors go to the hook alone. The
    // oom after them reaches slack; had w3 gone to slack too, it would have come first.
    reload(notify_toml(&format!(
        "{hook_receiver}{}{}{}",
        slack_receiver("OPS_RELOAD_SLACK_URL"),
        route("\"slack\"", "severities = [\"critical\"]\n"),
        route("\"hook\"", "")
    )));
    wait_for("the second reload", Duration::from_secs(20), || {
        d.status()["reloads"]["ok"] == 2
    });
    let slack_before = slack.requests().len();
    std::fs::write(dir.join("logs/w3.log"), errors_of("worker-3")).unwrap();
    wait_for("w3's alert at the hook", Duration::from_secs(30), || {
        hook.bodies().len() >= 3
    });
    assert_eq!(hook_workers(&hook.bodies()[2]), ["w3"]);
    append(
        &dir.join("logs/w3.log"),
        "2026-11-23 10:02:00,000 ERROR worker-3 MemoryError: out of memory\n",
    );
    wait_for("the oom at slack", Duration::from_secs(30), || {
        slack.requests().len() > slack_before
    });
    let after: Vec<String> = slack.requests()[slack_before..]
        .iter()
        .map(|r| r.body.clone())
        .collect();
    assert!(after[0].contains("ooms"), "{after:?}");
    assert!(after.iter().all(|b| !b.contains("errors")), "{after:?}");

    // A receiver whose secret is missing is rejected with the field named; the running
    // config keeps sending.
    reload(notify_toml(&format!(
        "{hook_receiver}{}{}",
        slack_receiver("OPS_RELOAD_UNSET"),
        route("\"hook\", \"slack\"", "")
    )));
    wait_for("the rejection", Duration::from_secs(20), || {
        d.status()["reloads"]["rejected"] == 1
    });
    let err = d.stderr();
    assert!(
        err.contains("config reload rejected")
            && err.contains("url_env")
            && err.contains("OPS_RELOAD_UNSET"),
        "{err}"
    );
    std::fs::write(dir.join("logs/w4.log"), errors_of("worker-4")).unwrap();
    wait_for("w4's alert at the hook", Duration::from_secs(30), || {
        hook.bodies().len() >= 4
    });
    assert_eq!(hook_workers(&hook.bodies()[3]), ["w4"]);
    for page in [d.get("/status").body, d.get("/metrics").body, d.stderr()] {
        assert!(
            !page.contains("xoxOPSWEBHOOKSECRET"),
            "secret leaked:\n{page}"
        );
    }
}

#[test]
fn ops_sighup_moves_the_http_listener_and_keeps_it_when_the_new_address_is_taken() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let listen = |port: u16| format!("[http]\nlisten = \"127.0.0.1:{port}\"\n");
    let port = free_port();
    let cfg = setup(dir, &listen(port));
    let d = Daemon::start_configured(dir, &cfg, port);
    assert_eq!(d.get("/health").status, 200);

    // A taken port: the old listener keeps serving, and the log says why.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let taken_port = taken.local_addr().unwrap().port();
    std::fs::write(&cfg, setup_text(dir, &listen(taken_port))).unwrap();
    d.signal(libc::SIGHUP);
    wait_for("the reload", Duration::from_secs(20), || {
        d.status()["reloads"]["ok"] == 1
    });
    wait_for("the bind failure logged", Duration::from_secs(20), || {
        d.stderr()
            .contains("cannot bind the new http address; the old listener keeps serving")
    });
    assert_eq!(d.get("/health").status, 200);

    // A free one: /health moves there and the old port closes.
    let moved = free_port();
    std::fs::write(&cfg, setup_text(dir, &listen(moved))).unwrap();
    d.signal(libc::SIGHUP);
    wait_for("/health on the new port", Duration::from_secs(20), || {
        TcpStream::connect(("127.0.0.1", moved)).is_ok()
            && get(moved, "/health", None).status == 200
    });
    wait_for("the old port closed", Duration::from_secs(20), || {
        TcpStream::connect(("127.0.0.1", port)).is_err()
    });
    let st: Value = serde_json::from_str(&get(moved, "/status", None).body).unwrap();
    assert_eq!(st["reloads"]["ok"], 2);
    drop(taken);
}

#[test]
fn ops_sighup_keeps_counters_monotonic_across_tailer_and_poller_restarts() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let redis = RedisServer::start();
    redis.cmd(&["RPUSH", "jobs:q", "a"]);
    let queue = |interval: &str| {
        format!(
            "[[queue]]\nname = \"jobs\"\nurl = \"{}\"\ninterval = \"{interval}\"\nkeys = [\"jobs:q\"]\n",
            redis.url()
        )
    };
    let cfg = setup(dir, &queue("200ms"));
    let d = Daemon::start(dir, &cfg, &[]);
    let log = dir.join("logs/w1.log").display().to_string();
    let file_series =
        |name: &str| format!("logwarden_{name}_total{{source=\"workers\",path=\"{log}\"}}");
    let polls = r#"logwarden_queue_polls_total{source="jobs",result="ok"}"#;
    let durations = r#"logwarden_queue_poll_duration_seconds_count{source="jobs"}"#;
    wait_for("all lines and a few polls", Duration::from_secs(30), || {
        let m = d.get("/metrics").body;
        sample(&m, &file_series("file_lines_read")) == Some(5.0)
            && sample(&m, polls).is_some_and(|n| n >= 3.0)
    });
    let before = sample(&d.get("/metrics").body, polls).unwrap();

    // A source is added (the tailer restarts) and the queue's interval changes (its poller
    // restarts): the counters go on from where they were.
    std::fs::create_dir_all(dir.join("more")).unwrap();
    std::fs::write(
        &cfg,
        setup_text(
            dir,
            &format!(
                "{}[[source]]\nname = \"more\"\npath = \"{}/more/*.log\"\n",
                queue("300ms"),
                dir.display()
            ),
        ),
    )
    .unwrap();
    d.signal(libc::SIGHUP);
    wait_for("the reload", Duration::from_secs(20), || {
        d.status()["reloads"]["ok"] == 1
    });
    let line = "2026-11-23 10:00:05,000 INFO worker-1 one more\n";
    append(&dir.join("logs/w1.log"), line);
    wait_for(
        "the new tailer's line and a new poll",
        Duration::from_secs(30),
        || {
            let m = d.get("/metrics").body;
            sample(&m, &file_series("file_lines_read")).is_some_and(|n| n > 5.0)
                && sample(&m, polls).is_some_and(|n| n > before)
        },
    );
    let m = d.get("/metrics").body;
    assert_eq!(
        sample(&m, &file_series("file_lines_read")),
        Some(6.0),
        "{m}"
    );
    assert_eq!(
        sample(&m, &file_series("file_bytes_read")),
        Some((LOG.len() + line.len()) as f64),
        "{m}"
    );
    let (p, n) = (sample(&m, polls), sample(&m, durations));
    assert_eq!(p, n, "one duration per good poll: {m}");
}

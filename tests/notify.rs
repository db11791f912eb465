//! Notifications end to end, against real servers on loopback: a local HTTP server plays
//! Slack / webhook / Alertmanager (and can answer 429 + Retry-After, 500, slowly, or never),
//! and aiosmtpd (a real SMTP server we did not write) receives mail, which the tests parse.
//! The daemon is the real binary reading stdin.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::common::{bin, stderr, stdout};

const SLACK_SECRET: &str = "T0SECRET/B0SECRET/xoxWEBHOOKSECRET";
const SMTP_PASSWORD: &str = "smtp-pa55word-SECRET";

/// How the fake server answers the n-th request (the last one repeats).
#[derive(Clone, Copy, Debug)]
pub(crate) enum Reply {
    Ok,
    Status(u16, Option<u64>),
    Hang,
    /// 200 after this many milliseconds.
    Slow(u64),
}

/// One received request.
#[derive(Clone, Debug)]
pub(crate) struct Req {
    pub(crate) path: String,
    pub(crate) body: String,
    /// The `X-Logwarden-Message-Id` header.
    pub(crate) id: Option<String>,
    /// The status the script answered (0: no answer).
    pub(crate) status: u16,
}

impl Req {
    /// The receiver took it (2xx), as far as the server is concerned: the sender may still
    /// have died before reading the answer.
    pub(crate) fn accepted(&self) -> bool {
        (200..300).contains(&self.status)
    }
}

type Script = Arc<Mutex<Vec<Reply>>>;

/// A tiny HTTP/1.1 server on 127.0.0.1 with a reply script.
pub(crate) struct FakeHttp {
    port: u16,
    reqs: Arc<Mutex<Vec<Req>>>,
    script: Script,
}

impl FakeHttp {
    pub(crate) fn start(script: Vec<Reply>) -> FakeHttp {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        let reqs: Arc<Mutex<Vec<Req>>> = Arc::default();
        let script: Script = Arc::new(Mutex::new(script));
        let (r2, s2) = (reqs.clone(), script.clone());
        std::thread::spawn(move || {
            for conn in l.incoming() {
                let Ok(conn) = conn else { return };
                let (reqs, script) = (r2.clone(), s2.clone());
                std::thread::spawn(move || serve(conn, &reqs, &script));
            }
        });
        FakeHttp { port, reqs, script }
    }

    pub(crate) fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    pub(crate) fn requests(&self) -> Vec<Req> {
        self.reqs.lock().unwrap().clone()
    }

    /// Replaces the script: later requests are answered by `script` (its last reply repeats).
    pub(crate) fn answer(&self, script: Vec<Reply>) {
        let n = self.reqs.lock().unwrap().len();
        let mut s = self.script.lock().unwrap();
        s.truncate(n);
        s.resize(n, Reply::Ok);
        s.extend(script);
    }
}

fn serve(conn: TcpStream, reqs: &Mutex<Vec<Req>>, script: &Mutex<Vec<Reply>>) {
    let mut r = BufReader::new(conn.try_clone().unwrap());
    let mut w = conn;
    loop {
        let mut line = String::new();
        if r.read_line(&mut line).unwrap_or(0) == 0 {
            return;
        }
        let path = line.split(' ').nth(1).unwrap_or("").to_string();
        let (mut len, mut id) = (0usize, None);
        loop {
            let mut h = String::new();
            if r.read_line(&mut h).unwrap_or(0) == 0 {
                return;
            }
            if h == "\r\n" {
                break;
            }
            let lower = h.to_ascii_lowercase();
            if let Some(v) = lower.strip_prefix("content-length:") {
                len = v.trim().parse().unwrap_or(0);
            }
            if lower.starts_with("x-logwarden-message-id:") {
                id = h.split_once(':').map(|(_, v)| v.trim().to_string());
            }
        }
        let mut body = vec![0; len];
        if r.read_exact(&mut body).is_err() {
            return;
        }
        let reply = {
            let mut g = reqs.lock().unwrap();
            let script = script.lock().unwrap();
            let reply = script[g.len().min(script.len() - 1)];
            g.push(Req {
                path,
                body: String::from_utf8_lossy(&body).into_owned(),
                id,
                status: match reply {
                    Reply::Ok | Reply::Slow(_) => 200,
                    Reply::Status(code, _) => code,
                    Reply::Hang => 0,
                },
            });
            reply
        };
        let resp = match reply {
            Reply::Ok => "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok".to_string(),
            Reply::Slow(ms) => {
                std::thread::sleep(Duration::from_millis(ms));
                "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok".to_string()
            }
            Reply::Status(code, ra) => {
                let ra = ra
                    .map(|s| format!("Retry-After: {s}\r\n"))
                    .unwrap_or_default();
                format!("HTTP/1.1 {code} X\r\n{ra}Content-Length: 4\r\n\r\nnope")
            }
            Reply::Hang => {
                std::thread::sleep(Duration::from_secs(120));
                return;
            }
        };
        if w.write_all(resp.as_bytes()).is_err() {
            return;
        }
    }
}

/// A running daemon fed through stdin.
struct Daemon {
    child: Child,
}

impl Daemon {
    fn start(cfg: &Path, env: &[(&str, &str)]) -> Daemon {
        let mut cmd = Command::new(bin());
        cmd.args(["run", "--config", cfg.to_str().unwrap()])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        for (k, v) in env {
            cmd.env(k, v);
        }
        Daemon {
            child: cmd.spawn().unwrap(),
        }
    }

    fn write(&mut self, text: &str) {
        let w = self.child.stdin.as_mut().unwrap();
        w.write_all(text.as_bytes()).unwrap();
        w.flush().unwrap();
    }

    /// Closes stdin (drain) and waits.
    fn finish(mut self) -> std::process::Output {
        drop(self.child.stdin.take());
        self.child.wait_with_output().unwrap()
    }
}

fn wait_for(what: &str, limit: Duration, mut f: impl FnMut() -> bool) {
    let start = Instant::now();
    while !f() {
        assert!(start.elapsed() < limit, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn history(state: &Path) -> serde_json::Value {
    let out = Command::new(bin())
        .args(["history", "--json", "--state-dir", state.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    serde_json::from_slice(&out.stdout).unwrap()
}

/// A config with an `any` rule on oom lines (critical) and an error count rule (warning).
fn config(dir: &Path, receivers: &str, extra: &str) -> std::path::PathBuf {
    let p = dir.join("logwarden.toml");
    let text = format!(
        r#"
state_dir = "{state}"
default_rules = false
shutdown_grace = "20s"

[notify]
hostname = "worker-host-7"

[[rule]]
name = "oom"
type = "any"
kinds = ["oom"]
severity = "critical"

{extra}
{receivers}
"#,
        state = dir.join("state").display()
    );
    std::fs::write(&p, text).unwrap();
    p
}

/// A Slack receiver (URL from `LW_SLACK_URL`, with `extra` keys) on a route with no group
/// wait.
fn slack_now(extra: &str) -> String {
    format!(
        r#"
[[receiver]]
name = "slack"
type = "slack"
url_env = "LW_SLACK_URL"
{extra}
[[route]]
receivers = ["slack"]
group_wait = "0s"
"#
    )
}

const OOM: &str = "2026-11-23 10:00:00,000 ERROR worker-3 MemoryError: out of memory <!channel> <https://evil.example|click> password=hunter2\n";

#[test]
fn slack_gets_escaped_redacted_evidence_and_the_secret_url_never_leaks() {
    let slack = FakeHttp::start(vec![Reply::Ok]);
    let am = FakeHttp::start(vec![Reply::Ok]);
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(
        dir.path(),
        &format!(
            r#"
[[receiver]]
name = "slack"
type = "slack"
url_env = "LW_SLACK_URL"

[[receiver]]
name = "am"
type = "webhook"
mode = "alertmanager"
url = "{}"

[[route]]
receivers = ["slack", "am"]
group_wait = "0s"
"#,
            am.url("")
        ),
        "",
    );
    let url = format!("{}/services/{SLACK_SECRET}", slack.url(""));
    let mut d = Daemon::start(&cfg, &[("LW_SLACK_URL", &url)]);
    d.write(OOM);
    wait_for("the Slack POST", Duration::from_secs(60), || {
        !slack.requests().is_empty()
    });
    let out = d.finish();
    assert!(out.status.success(), "{}", stderr(&out));

    let reqs = slack.requests();
    assert_eq!(reqs.len(), 1, "{reqs:?}");
    assert_eq!(reqs[0].path, format!("/services/{SLACK_SECRET}"));
    let body: serde_json::Value = serde_json::from_str(&reqs[0].body).unwrap();
    let text = body["text"].as_str().unwrap();
    assert!(
        text.contains("worker-host-7") && text.contains("ALERT") && text.contains("oom"),
        "{text}"
    );
    assert!(
        text.contains("MemoryError: out of memory"),
        "evidence line: {text}"
    );
    assert!(
        !text.contains("<!channel>") && !text.contains("<https://evil"),
        "{text}"
    );
    assert!(text.contains("&lt;!channel&gt;"), "{text}");
    assert!(
        !text.contains("hunter2") && text.contains("password=[REDACTED]"),
        "{text}"
    );

    let am_reqs = am.requests();
    assert_eq!(am_reqs.len(), 1);
    assert_eq!(am_reqs[0].path, "/api/v2/alerts");
    let alerts: serde_json::Value = serde_json::from_str(&am_reqs[0].body).unwrap();
    assert_eq!(alerts[0]["labels"]["alertname"], "oom");
    assert_eq!(alerts[0]["labels"]["severity"], "critical");

    // The webhook URL is a secret: not in logs, stdout, or the history.
    let h = history(&dir.path().join("state"));
    for text in [stderr(&out), stdout(&out), h.to_string()] {
        assert!(!text.contains("SECRET"), "secret leaked: {text}");
    }
    assert_eq!(h["receivers"]["slack"]["sent"], 1, "{h}");
}

#[test]
fn slack_429_with_retry_after_and_500_are_retried_until_delivered() {
    let slack = FakeHttp::start(vec![
        Reply::Status(429, Some(1)),
        Reply::Status(500, None),
        Reply::Ok,
    ]);
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), &slack_now(""), "");
    let url = slack.url("/hook");
    let mut d = Daemon::start(&cfg, &[("LW_SLACK_URL", &url)]);
    d.write(OOM);
    wait_for("three attempts", Duration::from_secs(60), || {
        slack.requests().len() >= 3
    });
    let out = d.finish();
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(slack.requests().len(), 3, "no fourth POST after success");
    let h = history(&dir.path().join("state"));
    let e = &h["history"][0];
    assert_eq!(e["outcome"], "sent", "{h}");
    assert_eq!(e["attempts"], 3, "{h}");
    assert_eq!(h["receivers"]["slack"]["retries"], 2);
}

#[test]
fn a_slack_endpoint_that_never_answers_is_recorded_failed_and_counting_goes_on() {
    let slack = FakeHttp::start(vec![Reply::Hang]);
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(
        dir.path(),
        &slack_now("timeout = \"1s\"\nmax_attempts = 2\n"),
        "",
    );
    let url = slack.url("/hook");
    let mut d = Daemon::start(&cfg, &[("LW_SLACK_URL", &url)]);
    d.write(OOM);
    // While the receiver hangs, counting continues.
    for i in 0..2000 {
        d.write(&format!(
            "2026-11-23 10:00:01,000 INFO task {i} processed in 0.1s\n"
        ));
    }
    wait_for("two attempts", Duration::from_secs(60), || {
        slack.requests().len() >= 2
    });
    std::thread::sleep(Duration::from_millis(1500));
    let out = d.finish();
    assert!(out.status.success(), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(err.contains("read 2001 lines"), "{err}");
    assert!(err.contains("1 failed"), "{err}");
    let h = history(&dir.path().join("state"));
    assert_eq!(h["history"][0]["outcome"], "failed", "{h}");
    assert!(
        h["history"][0]["error"]
            .as_str()
            .unwrap()
            .contains("no answer within"),
        "{h}"
    );
    assert!(
        !err.contains("/hook") || !err.contains("127.0.0.1"),
        "no URL in logs: {err}"
    );
}

#[test]
fn an_error_storm_gives_the_burst_and_one_digest() {
    let slack = FakeHttp::start(vec![Reply::Ok]);
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(
        dir.path(),
        r#"
[[receiver]]
name = "slack"
type = "slack"
url_env = "LW_SLACK_URL"
rate_limit = "1/m"
burst = 3
digest_wait = "1h"

[[route]]
receivers = ["slack"]
group_by = ["rule", "job"]
group_wait = "0s"
"#,
        r#"
[[pattern]]
name = "storm-job"
kind = "error"
regex = 'job (?P<job>j[0-9]+) failed'
labels = ["job"]
priority = 100

[[rule]]
name = "job-failures"
type = "any"
kinds = ["error"]
severity = "warning"
"#,
    );
    let url = slack.url("/hook");
    let mut d = Daemon::start(&cfg, &[("LW_SLACK_URL", &url)]);
    let mut storm = String::new();
    for i in 0..10_000 {
        storm.push_str(&format!("2026-11-23 10:00:00,000 job j{} failed\n", i % 50));
    }
    d.write(&storm);
    wait_for("the burst", Duration::from_secs(60), || {
        slack.requests().len() >= 3
    });
    let out = d.finish();
    assert!(out.status.success(), "{}", stderr(&out));
    let reqs = slack.requests();
    let digests: Vec<&Req> = reqs
        .iter()
        .filter(|r| r.body.contains("held back"))
        .collect();
    assert_eq!(reqs.len(), 4, "3 (burst) + 1 digest: {reqs:#?}");
    assert_eq!(digests.len(), 1);
    let h = history(&dir.path().join("state"));
    let held = h["receivers"]["slack"]["held"].as_u64().unwrap();
    assert!(held >= 47, "{h}");
    assert!(
        digests[0].body.contains(&format!("+{held} held back")),
        "{}",
        digests[0].body
    );
}

#[test]
fn a_restart_does_not_resend_a_firing_alert_and_a_corrupt_state_is_set_aside() {
    let slack = FakeHttp::start(vec![Reply::Ok]);
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(
        dir.path(),
        &slack_now(""),
        r#"
[[rule]]
name = "crashes"
type = "count"
kinds = ["crash", "oom"]
threshold = 0
window = "10m"
severity = "critical"
"#,
    );
    let url = slack.url("/hook");
    let run = || {
        let mut d = Daemon::start(&cfg, &[("LW_SLACK_URL", &url)]);
        d.write(OOM);
        std::thread::sleep(Duration::from_millis(2500));
        d.finish()
    };
    let out = run();
    assert!(out.status.success(), "{}", stderr(&out));
    let first: Vec<Req> = slack.requests();
    assert!(
        first.iter().any(|r| r.body.contains("crashes")),
        "{first:?}"
    );
    let state = dir.path().join("state");
    assert_eq!(history(&state)["firing"][0]["rule"], "crashes");

    let out = run();
    assert!(out.status.success(), "{}", stderr(&out));
    let again: Vec<Req> = slack.requests()[first.len()..].to_vec();
    assert!(
        again.iter().all(|r| !r.body.contains("crashes")),
        "re-sent after restart: {again:?}"
    );

    std::fs::write(state.join("notify-state.json"), "{not json").unwrap();
    let out = run();
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stderr(&out).contains("corrupt"), "{}", stderr(&out));
    let aside = std::fs::read_dir(&state)
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .file_name()
                .to_string_lossy()
                .contains("corrupt")
        })
        .count();
    assert_eq!(aside, 1);
}

/// What `history --json` lists in flight (empty while there is nothing to read yet).
fn in_flight(state: &Path) -> Vec<serde_json::Value> {
    let out = Command::new(bin())
        .args(["history", "--json", "--state-dir", state.to_str().unwrap()])
        .output()
        .unwrap();
    serde_json::from_slice::<serde_json::Value>(&out.stdout)
        .ok()
        .and_then(|v| v["in_flight"].as_array().cloned())
        .unwrap_or_default()
}

/// An `any` rule per `task failed MARK-<n>` line, each marker its own group, to a Slack
/// receiver without a rate limit that retries up to 20 times, 1 s per attempt.
fn marked_config(dir: &Path) -> std::path::PathBuf {
    config(
        dir,
        r#"
[[receiver]]
name = "slack"
type = "slack"
url_env = "LW_SLACK_URL"
rate_limit = "none"
timeout = "1s"
max_attempts = 20

[[route]]
receivers = ["slack"]
group_by = ["rule", "marker"]
group_wait = "0s"
"#,
        r#"
[[pattern]]
name = "marked"
kind = "error"
regex = 'task failed (?P<marker>MARK-[0-9]+)'
labels = ["marker"]
priority = 100

[[rule]]
name = "marked"
type = "any"
kinds = ["error"]
severity = "warning"
"#,
    )
}

/// Issue 8: five alerts, each with its own marker, for a Slack endpoint that hangs and then
/// answers 503, so they sit in the outbox. After a SIGKILL, `history` shows them in flight
/// and the journal holds neither the webhook secret nor the password in the log lines.
/// Restarted with the endpoint healthy, the daemon delivers each exactly once, under the id
/// it had, and before anything new.
#[test]
fn issue_8_messages_in_the_outbox_at_a_sigkill_are_delivered_once_after_the_restart() {
    let slack = FakeHttp::start(vec![Reply::Hang, Reply::Status(503, None)]);
    let dir = tempfile::tempdir().unwrap();
    let cfg = marked_config(dir.path());
    let url = format!("{}/services/{SLACK_SECRET}", slack.url(""));
    let state = dir.path().join("state");
    let line =
        |k: u32| format!("2026-11-23 10:00:00,000 ERROR task failed MARK-{k} password=hunter2\n");
    let mut d = Daemon::start(&cfg, &[("LW_SLACK_URL", &url)]);
    for k in 1..=5 {
        d.write(&line(k));
    }
    // The first is being retried; four wait behind it.
    wait_for("five messages in flight", Duration::from_secs(60), || {
        in_flight(&state).len() == 5
    });
    d.child.kill().unwrap(); // SIGKILL
    d.child.wait().unwrap();

    let flying = in_flight(&state);
    assert_eq!(flying.len(), 5, "{flying:?}");
    let ids: std::collections::BTreeSet<String> = flying
        .iter()
        .map(|f| f["id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(ids.len(), 5);
    let text = Command::new(bin())
        .args(["history", "--state-dir", state.to_str().unwrap()])
        .output()
        .unwrap();
    let text = stdout(&text);
    assert!(
        text.contains("in flight") && text.contains(r#"marked{marker="MARK-3","#),
        "{text}"
    );
    let journal = std::fs::read_to_string(state.join("outbox.jsonl")).unwrap();
    assert!(journal.contains("MARK-5"), "{journal}");
    for secret in ["SECRET", "hunter2"] {
        assert!(
            !journal.contains(secret),
            "{secret} in the journal: {journal}"
        );
    }
    eprintln!(
        "outbox journal: {} bytes for 5 queued Slack messages, {} per message",
        journal.len(),
        journal.len() / 5
    );

    let tried = slack.requests().len();
    assert!(
        slack.requests().iter().all(|r| !r.accepted()),
        "nothing delivered before the kill"
    );
    slack.answer(vec![Reply::Ok]);
    let mut d = Daemon::start(&cfg, &[("LW_SLACK_URL", &url)]);
    d.write(&line(6));
    wait_for("six deliveries", Duration::from_secs(60), || {
        slack.requests().iter().filter(|r| r.accepted()).count() >= 6
    });
    let out = d.finish();
    assert!(out.status.success(), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(
        err.contains("recovered notifications") && err.contains("requeued=5"),
        "{err}"
    );

    let delivered: Vec<Req> = slack.requests()[tried..]
        .iter()
        .filter(|r| r.accepted())
        .cloned()
        .collect();
    assert_eq!(delivered.len(), 6, "{delivered:#?}");
    for k in 1..=6 {
        let n = delivered
            .iter()
            .filter(|r| r.body.contains(&format!("MARK-{k} ")))
            .count();
        assert_eq!(n, 1, "MARK-{k} delivered {n} times");
    }
    assert!(
        delivered[5].body.contains("MARK-6 "),
        "the recovered messages go first"
    );
    let sent_ids: std::collections::BTreeSet<String> = delivered[..5]
        .iter()
        .map(|r| r.id.clone().expect("message id header"))
        .collect();
    assert_eq!(sent_ids, ids, "the same ids as before the kill");

    let h = history(&state);
    assert_eq!(h["in_flight"].as_array().unwrap().len(), 0, "{h}");
    assert_eq!(h["receivers"]["slack"]["sent"], 6, "{h}");
    assert_eq!(h["receivers"]["slack"]["failed"], 0, "{h}");
}

/// A drain (end of input, or SIGTERM) while Slack is down: what Slack has not taken by the
/// drain deadline is not recorded failed but stays queued in the outbox journal, and the next
/// start delivers it, under the ids it was tried with. (Before, a restart during a Slack
/// outage lost those notifications: they were recorded failed at the deadline.)
#[test]
fn a_drain_while_slack_is_down_keeps_its_notifications_for_the_next_start() {
    let slack = FakeHttp::start(vec![Reply::Status(503, None)]);
    let dir = tempfile::tempdir().unwrap();
    let cfg = marked_config(dir.path());
    let text = std::fs::read_to_string(&cfg).unwrap();
    std::fs::write(
        &cfg,
        text.replace("shutdown_grace = \"20s\"", "shutdown_grace = \"2s\""),
    )
    .unwrap();
    let url = slack.url("/hook");
    let state = dir.path().join("state");
    let mut d = Daemon::start(&cfg, &[("LW_SLACK_URL", &url)]);
    for k in 1..=3 {
        d.write(&format!(
            "2026-11-23 10:00:00,000 ERROR task failed MARK-{k}\n"
        ));
    }
    wait_for("a first attempt", Duration::from_secs(60), || {
        !slack.requests().is_empty()
    });
    let out = d.finish();
    assert!(out.status.success(), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(
        err.contains("3 kept in the outbox journal for the next start"),
        "{err}"
    );
    assert!(
        !err.contains(" failed;") && !err.ends_with(" failed\n"),
        "{err}"
    );
    let h = history(&state);
    assert_eq!(
        h["history"].as_array().unwrap().len(),
        0,
        "nothing recorded failed: {h}"
    );
    assert_eq!(h["in_flight"].as_array().unwrap().len(), 3, "{h}");
    let kept: std::collections::BTreeSet<String> = h["in_flight"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["id"].as_str().unwrap().to_string())
        .collect();

    slack.answer(vec![Reply::Ok]);
    let d = Daemon::start(&cfg, &[("LW_SLACK_URL", &url)]);
    wait_for("three deliveries", Duration::from_secs(60), || {
        slack.requests().iter().filter(|r| r.accepted()).count() >= 3
    });
    let out = d.finish();
    assert!(out.status.success(), "{}", stderr(&out));
    let delivered: Vec<Req> = slack
        .requests()
        .into_iter()
        .filter(|r| r.accepted())
        .collect();
    assert_eq!(delivered.len(), 3, "{delivered:#?}");
    for k in 1..=3 {
        let n = delivered
            .iter()
            .filter(|r| r.body.contains(&format!("MARK-{k}")))
            .count();
        assert_eq!(n, 1, "MARK-{k} delivered {n} times");
    }
    let sent: std::collections::BTreeSet<String> =
        delivered.iter().filter_map(|r| r.id.clone()).collect();
    assert_eq!(sent, kept, "delivered under the ids they were queued with");
    let h = history(&state);
    assert_eq!(h["in_flight"].as_array().unwrap().len(), 0, "{h}");
    assert_eq!(h["receivers"]["slack"]["sent"], 3, "{h}");
}

/// aiosmtpd on a free port, saving mail into a directory.
struct Smtp {
    child: Child,
    port: u16,
    dir: tempfile::TempDir,
}

impl Smtp {
    fn start(auth: Option<(&str, &str)>) -> Smtp {
        Smtp::start_with(auth, None)
    }

    /// With `data_reply`, every message is answered with that SMTP reply instead.
    fn start_with(auth: Option<(&str, &str)>, data_reply: Option<&str>) -> Smtp {
        let dir = tempfile::tempdir().unwrap();
        let script = crate::common::repo("tests/support/smtp_server.py");
        let mut cmd = Command::new("python3");
        cmd.arg(script).arg(dir.path());
        if let Some(r) = data_reply {
            cmd.env("SMTP_DATA_REPLY", r);
        }
        if let Some((u, p)) = auth {
            cmd.args([u, p]);
        }
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("python3 (scripts/test installs python3-aiosmtpd)");
        let mut line = String::new();
        BufReader::new(child.stdout.as_mut().unwrap())
            .read_line(&mut line)
            .unwrap();
        let port = line
            .trim()
            .strip_prefix("PORT ")
            .unwrap_or_else(|| {
                panic!("aiosmtpd did not start (is python3-aiosmtpd installed?): {line:?}")
            })
            .parse()
            .unwrap();
        Smtp { child, port, dir }
    }

    fn mails(&self) -> Vec<String> {
        let mut names: Vec<_> = std::fs::read_dir(self.dir.path())
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|e| e == "eml"))
            .collect();
        names.sort();
        names
            .iter()
            .map(|p| std::fs::read_to_string(p).unwrap())
            .collect()
    }
}

impl Drop for Smtp {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Header value from a raw mail (unfolded).
fn header(mail: &str, name: &str) -> Option<String> {
    let head = mail.split("\r\n\r\n").next()?;
    let unfolded = head.replace("\r\n ", " ").replace("\r\n\t", " ");
    unfolded.lines().find_map(|l| {
        l.split_once(':')
            .filter(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.trim().to_string())
    })
}

#[test]
fn email_with_auth_reaches_a_real_smtp_server_with_counted_subject_and_sections() {
    let smtp = Smtp::start(Some(("alerts", SMTP_PASSWORD)));
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(
        dir.path(),
        &format!(
            r#"
[[receiver]]
name = "mail"
type = "email"
url = "smtp://127.0.0.1:{}"
tls = "none"
username = "alerts"
password_env = "LW_SMTP_PASSWORD"
from = "logwarden@example.com"
to = ["oncall@example.com", "lead@example.com"]

[[route]]
receivers = ["mail"]
group_by = []
group_wait = "4s"
"#,
            smtp.port
        ),
        r#"
[[rule]]
name = "errors"
type = "count"
kinds = ["error"]
threshold = 2
window = "5m"
severity = "warning"
"#,
    );
    let mut d = Daemon::start(&cfg, &[("LW_SMTP_PASSWORD", SMTP_PASSWORD)]);
    let mut text = OOM.to_string();
    text.push_str("2026-11-23 10:00:00,500 INFO task t9 processed in 0.2s\n");
    for i in 0..3 {
        text.push_str(&format!(
            "2026-11-23 10:00:01,000 ERROR task t{i} failed: ValueError: bad input\n"
        ));
    }
    d.write(&text);
    wait_for("the mail", Duration::from_secs(60), || {
        !smtp.mails().is_empty()
    });
    let out = d.finish();
    assert!(out.status.success(), "{}", stderr(&out));
    let mails = smtp.mails();
    let m = &mails[0];
    assert_eq!(header(m, "X-Auth-User").as_deref(), Some("alerts"), "{m}");
    assert_eq!(
        header(m, "X-Envelope-To").as_deref(),
        Some("oncall@example.com, lead@example.com")
    );
    assert_eq!(
        header(m, "Subject").as_deref(),
        Some("[logwarden] 1 critical, 1 warning on worker-host-7"),
        "{m}"
    );
    let raw = m.split_once("\r\n\r\n").unwrap().1.replace("\r\n", "\n");
    let body = match header(m, "Content-Transfer-Encoding").as_deref() {
        Some("quoted-printable") => decode_qp(&raw),
        _ => raw,
    };
    let (c, w) = (body.find("\nCRITICAL\n"), body.find("\nWARNING\n"));
    assert!(c.is_some() && w.is_some() && c < w, "{body}");
    assert!(
        body.contains("| 2026-11-23 10:00:00,000 ERROR worker-3 MemoryError"),
        "{body}"
    );
    assert!(
        body.contains("last 5m: ") && body.contains("3 error") && body.contains("1 processed"),
        "related counts in the mail: {body}"
    );
    assert!(
        body.contains("password=[REDACTED]") && !body.contains("hunter2"),
        "{body}"
    );
    let all = format!(
        "{}{}{}",
        stderr(&out),
        stdout(&out),
        history(&dir.path().join("state"))
    );
    assert!(!all.contains(SMTP_PASSWORD), "password leaked: {all}");
}

#[test]
fn an_smtp_server_that_accepts_and_never_answers_is_a_recorded_failure() {
    let silent = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = silent.local_addr().unwrap().port();
    let held = Arc::new(Mutex::new(Vec::new()));
    let h2 = held.clone();
    std::thread::spawn(move || {
        for c in silent.incoming() {
            h2.lock().unwrap().push(c); // accept, keep open, never greet
        }
    });
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), &mail_now(port), "");
    let mut d = Daemon::start(&cfg, &[]);
    d.write(OOM);
    wait_for("two connections", Duration::from_secs(60), || {
        held.lock().unwrap().len() >= 2
    });
    std::thread::sleep(Duration::from_millis(1500));
    let start = Instant::now();
    let out = d.finish();
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        start.elapsed() < Duration::from_secs(20),
        "drain is bounded"
    );
    let h = history(&dir.path().join("state"));
    assert_eq!(h["history"][0]["outcome"], "failed", "{h}");
    assert_eq!(h["history"][0]["attempts"], 2, "{h}");
}

#[test]
fn bad_receiver_config_names_the_field_and_never_echoes_the_secret() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(
        dir.path(),
        r#"
[[receiver]]
name = "slack"
type = "slack"
url_env = "LW_SLACK_URL"
"#,
        "",
    );
    let out = Command::new(bin())
        .args(["check", "--config", cfg.to_str().unwrap()])
        .env("LW_SLACK_URL", "not a url SECRETVALUE")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = stderr(&out);
    assert!(err.contains("receiver[0] \"slack\".url"), "{err}");
    assert!(err.contains("env LW_SLACK_URL"), "{err}");
    assert!(!err.contains("SECRETVALUE"), "{err}");

    let out = Command::new(bin())
        .args(["check", "--config", cfg.to_str().unwrap()])
        .env_remove("LW_SLACK_URL")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("\"LW_SLACK_URL\" is not set"),
        "{}",
        stderr(&out)
    );
}

/// Decodes a quoted-printable body (soft line breaks and `=XX`).
fn decode_qp(s: &str) -> String {
    let s = s.replace("=\n", "");
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'=' && i + 2 < b.len() {
            if let Ok(v) = u8::from_str_radix(&s[i + 1..(i + 3).min(s.len())], 16) {
                out.push(v);
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[test]
fn old_lines_read_while_catching_up_become_one_backfill_summary() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("worker.log");
    let mut old = String::new();
    for i in 0..300 {
        old.push_str(&format!(
            "2020-01-02 03:04:{:02},000 INFO task {i} processed in 0.1s\n",
            i % 60
        ));
        if i % 10 == 0 {
            old.push_str(&format!(
                "2020-01-02 03:05:{:02},000 ERROR worker-{} MemoryError: out of memory\n",
                i % 60,
                i / 10
            ));
        }
    }
    std::fs::write(&log, old).unwrap();
    let mut child = Command::new(bin())
        .args(["run", "--from-beginning", "--state-dir"])
        .arg(dir.path().join("state"))
        .arg(&log)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let lines: Arc<Mutex<Vec<String>>> = Arc::default();
    let l2 = lines.clone();
    let out = child.stdout.take().unwrap();
    std::thread::spawn(move || {
        for l in BufReader::new(out).lines() {
            l2.lock().unwrap().push(l.unwrap());
        }
    });
    wait_for("the backfill summary", Duration::from_secs(60), || {
        lines.lock().unwrap().iter().any(|l| l.contains("BACKFILL"))
    });
    // A fresh OOM after the catch-up is told on its own, at once.
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let ts = chrono_like(now);
    let mut f = std::fs::OpenOptions::new().append(true).open(&log).unwrap();
    writeln!(f, "{ts},000 ERROR worker-99 MemoryError: out of memory").unwrap();
    wait_for("the live alert", Duration::from_secs(60), || {
        lines
            .lock()
            .unwrap()
            .iter()
            .any(|l| l.contains("worker-99"))
    });
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let status = child.wait().unwrap();
    assert!(status.success());
    let got = lines.lock().unwrap().clone();
    let backfill: Vec<&String> = got.iter().filter(|l| l.contains("BACKFILL")).collect();
    assert_eq!(backfill.len(), 1, "{got:#?}");
    assert!(backfill[0].contains("critical oom"), "{}", backfill[0]);
    assert!(
        backfill[0].contains("×30"),
        "all 30 old OOMs in one line: {}",
        backfill[0]
    );
    let singles: Vec<&String> = got.iter().filter(|l| l.contains(" ALERT ")).collect();
    assert_eq!(
        singles.len(),
        1,
        "only the fresh OOM is told alone: {got:#?}"
    );
    assert!(singles[0].contains("worker-99"));
}

/// `YYYY-MM-DD HH:MM:SS` (UTC) for Unix seconds, without a date crate.
fn chrono_like(secs: u64) -> String {
    let days = (secs / 86_400) as i64;
    let (y, m, d) = logwarden::event::civil_from_days(days);
    let s = secs % 86_400;
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02}",
        s / 3600,
        s / 60 % 60,
        s % 60
    )
}

#[test]
fn replay_shows_what_each_receiver_would_get_including_what_limits_held_back() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("replay.toml");
    std::fs::write(
        &cfg,
        r#"
[[rule]]
name = "failures"
type = "any"
kinds = ["error", "crash", "oom"]
severity = "warning"
group_by = []

[[receiver]]
name = "slack"
type = "slack"
url_env = "LW_REPLAY_SLACK_UNSET"
rate_limit = "1/h"
burst = 2
digest_wait = "1m"

[[receiver]]
name = "console"
type = "stdout"

[[route]]
receivers = ["slack", "console"]
group_by = ["rule", "source", "task"]
group_wait = "0s"
group_interval = "1s"
"#,
    )
    .unwrap();
    let log = crate::common::fixture("demo/worker.log");
    let out = Command::new(bin())
        .args([
            "replay",
            "--config",
            cfg.to_str().unwrap(),
            log.to_str().unwrap(),
        ])
        .env_remove("LW_REPLAY_SLACK_UNSET")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    let slack: Vec<&str> = text.lines().filter(|l| l.contains(" [slack] ")).collect();
    let console: Vec<&str> = text.lines().filter(|l| l.contains(" [console] ")).collect();
    let sent = slack
        .iter()
        .filter(|l| !l.contains("HELD") && !l.contains("DIGEST"))
        .count();
    let held = slack
        .iter()
        .filter(|l| l.contains("HELD by rate limit"))
        .count();
    let digests: Vec<&&str> = slack.iter().filter(|l| l.contains("DIGEST")).collect();
    assert_eq!(sent, 2, "the burst: {text}");
    assert!(held >= 3, "{text}");
    assert_eq!(digests.len(), 1, "{text}");
    assert!(
        digests[0].contains(&format!("+{held} held back")),
        "{}",
        digests[0]
    );
    assert!(console.len() >= sent + held, "stdout has no limit: {text}");
    assert!(
        stderr(&out).contains("held back by rate limits"),
        "{}",
        stderr(&out)
    );
}

/// A mail receiver on `port` (1 s per attempt, two attempts), on a route with no group wait.
fn mail_now(port: u16) -> String {
    format!(
        r#"
[[receiver]]
name = "mail"
type = "email"
url = "smtp://127.0.0.1:{port}"
tls = "none"
from = "logwarden@example.com"
to = ["oncall@example.com"]
timeout = "1s"
max_attempts = 2

[[route]]
receivers = ["mail"]
group_wait = "0s"
"#
    )
}

#[test]
fn smtp_4xx_is_retried_5xx_fails_at_once_and_a_refused_connection_is_recorded() {
    // (server reply, attempts expected, error text expected)
    let cases = [
        (Some("451 4.3.0 Try again later"), 2, "451"),
        (Some("550 5.7.1 Relaying denied"), 1, "550"),
        (None, 2, "SMTP"),
    ];
    for (reply, attempts, needle) in cases {
        let (smtp, port) = match reply {
            Some(r) => {
                let s = Smtp::start_with(None, Some(r));
                let p = s.port;
                (Some(s), p)
            }
            None => {
                // Nothing listens: connection refused.
                let l = TcpListener::bind("127.0.0.1:0").unwrap();
                let p = l.local_addr().unwrap().port();
                drop(l);
                (None, p)
            }
        };
        let dir = tempfile::tempdir().unwrap();
        let cfg = config(dir.path(), &mail_now(port), "");
        let mut d = Daemon::start(&cfg, &[]);
        d.write(OOM);
        let state = dir.path().join("state");
        // Backoff after the first failure is about 1 s; give the drain time to record.
        std::thread::sleep(Duration::from_millis(if attempts > 1 {
            3000
        } else {
            1500
        }));
        let out = d.finish();
        assert!(out.status.success(), "{}", stderr(&out));
        let h = history(&state);
        let e = &h["history"][0];
        assert_eq!(e["outcome"], "failed", "{reply:?}: {h}");
        assert_eq!(e["attempts"], attempts, "{reply:?}: {h}");
        assert!(
            e["error"].as_str().unwrap().contains(needle),
            "{reply:?}: {h}"
        );
        if let Some(s) = &smtp {
            assert!(s.mails().is_empty());
        }
    }
}

#[test]
fn a_slack_429_storm_ends_in_a_recorded_failure_and_counting_goes_on() {
    let slack = FakeHttp::start(vec![Reply::Status(429, Some(1))]);
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), &slack_now("max_attempts = 3\n"), "");
    let url = slack.url("/hook");
    let mut d = Daemon::start(&cfg, &[("LW_SLACK_URL", &url)]);
    d.write(OOM);
    let mut text = String::new();
    for i in 0..5000 {
        text.push_str(&format!(
            "2026-11-23 10:00:01,000 INFO task {i} processed in 0.1s\n"
        ));
    }
    d.write(&text);
    wait_for("three attempts", Duration::from_secs(60), || {
        slack.requests().len() >= 3
    });
    std::thread::sleep(Duration::from_millis(500));
    let out = d.finish();
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(slack.requests().len(), 3, "bounded attempts");
    assert!(stderr(&out).contains("read 5001 lines"), "{}", stderr(&out));
    let h = history(&dir.path().join("state"));
    assert_eq!(h["history"][0]["outcome"], "failed", "{h}");
    assert!(
        h["history"][0]["error"].as_str().unwrap().contains("429"),
        "{h}"
    );
    assert_eq!(
        stderr(&out).matches("receiver marked down").count(),
        1,
        "logged once: {}",
        stderr(&out)
    );
}

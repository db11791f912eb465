//! Hostile surroundings for the daemon's own state: a `state_dir` it cannot write, a
//! file-size limit (a full disk's cousin) on its writes, and SIGKILLs at random points. It
//! keeps tailing and notifying, says so once per episode, exits cleanly, and loses neither
//! lines nor notifications to a kill.

use std::path::Path;
use std::time::Duration;

use crate::tail_hostile::{chmod, chown, dedicated_uid, is_root, Daemon};
use crate::tail_run::{daemon, values};

/// A config tailing `dir/app.log` from the beginning, checkpointing every 200 ms, with an
/// `any` rule on oom lines printed as JSON on stdout.
fn config(dir: &Path) -> std::path::PathBuf {
    let cfg = dir.join("lw.toml");
    std::fs::write(
        &cfg,
        format!(
            r#"
state_dir = "{state}"
default_rules = false

[[source]]
name = "app"
path = "{log}"
start_at = "beginning"

[tailer]
checkpoint_interval = "200ms"

[[rule]]
name = "oom"
type = "any"
kinds = ["oom"]
severity = "critical"

[[receiver]]
name = "console"
type = "stdout"
format = "json"

[[route]]
receivers = ["console"]
group_wait = "0s"
group_interval = "0s"
"#,
            state = dir.join("state").display(),
            log = dir.join("app.log").display()
        ),
    )
    .unwrap();
    cfg
}

fn oom_line(i: u32) -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let (y, m, d) = logwarden::event::civil_from_days((now / 86_400) as i64);
    let s = now % 86_400;
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02},000 ERROR worker-{i} MemoryError: out of memory\n",
        s / 3600,
        s / 60 % 60,
        s % 60
    )
}

fn append(path: &Path, text: &str) {
    use std::io::Write;
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .unwrap();
    f.write_all(text.as_bytes()).unwrap();
}

fn alerts(d: &Daemon) -> usize {
    d.events().iter().filter(|e| e["rule"] == "oom").count()
}

#[test]
fn chaos_read_only_state_dir_is_reported_once_and_nothing_else_stops() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    std::fs::create_dir(&state).unwrap();
    append(&dir.path().join("app.log"), &oom_line(1));
    let cfg = config(dir.path());
    // Root ignores mode bits: as root, run the daemon as a uid of its own.
    let uid = is_root().then(|| dedicated_uid(5));
    if let Some(uid) = uid {
        for p in [dir.path(), &dir.path().join("app.log"), &cfg] {
            chown(p, uid);
        }
    }
    chmod(&state, 0o555); // owned by us (root), read-only for the daemon's uid
    let mut d = Daemon::start(&cfg, uid);
    assert!(
        d.wait(Duration::from_secs(30), |d| alerts(d) >= 1),
        "first alert; log:\n{}",
        d.log_text()
    );
    // Several checkpoint intervals and notification-state saves go by.
    for i in 2..=4 {
        std::thread::sleep(Duration::from_millis(700));
        append(&dir.path().join("app.log"), &oom_line(i));
    }
    assert!(
        d.wait(Duration::from_secs(30), |d| alerts(d) >= 4),
        "tailing and notifying go on; log:\n{}",
        d.log_text()
    );
    let status = d.stop();
    assert!(status.success(), "{status:?}; log:\n{}", d.log_text());
    assert_eq!(d.logged("cannot write checkpoints"), 1, "{}", d.log_text());
    assert_eq!(
        d.logged("cannot save notification state"),
        1,
        "{}",
        d.log_text()
    );
    assert_eq!(
        d.logged("cannot write the outbox journal"),
        1,
        "{}",
        d.log_text()
    );
    assert!(
        std::fs::read_dir(&state).unwrap().next().is_none(),
        "nothing written"
    );
}

#[test]
fn chaos_file_size_limit_fails_state_writes_not_the_daemon() {
    let dir = tempfile::tempdir().unwrap();
    append(&dir.path().join("app.log"), &oom_line(1));
    let cfg = config(dir.path());
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_logwarden"));
    cmd.args(["run", "--config"])
        .arg(&cfg)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    // A 64-byte file-size limit: every checkpoint and state write exceeds it. Without
    // SIGXFSZ ignored, the first such write would kill the daemon.
    // SAFETY: setrlimit is async-signal-safe; the closure touches nothing else.
    unsafe {
        use std::os::unix::process::CommandExt;
        cmd.pre_exec(|| {
            let lim = libc::rlimit {
                rlim_cur: 64,
                rlim_max: 64,
            };
            if libc::setrlimit(libc::RLIMIT_FSIZE, &lim) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let child = cmd.spawn().unwrap();
    std::thread::sleep(Duration::from_secs(3));
    // SAFETY: our own child.
    unsafe {
        libc::kill(child.id() as i32, libc::SIGTERM);
    }
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{:?}: {err}", out.status);
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("\"rule\":\"oom\""),
        "the alert still went out: {err}"
    );
    assert_eq!(err.matches("cannot write checkpoints").count(), 1, "{err}");
    assert_eq!(
        err.matches("cannot save notification state").count(),
        1,
        "{err}"
    );
    assert_eq!(
        err.matches("cannot write the outbox journal").count(),
        1,
        "{err}"
    );
    assert!(err.contains("File too large"), "{err}");
}

/// A tiny seeded PRNG (xorshift) for kill points: reproducible rounds.
struct Rng(u64);

impl Rng {
    fn next(&mut self, below: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % below
    }
}

/// The marker numbers in a delivered Slack message (`MARK-<n>`), or in a history entry.
fn markers(text: &str) -> Vec<u64> {
    text.split("MARK-")
        .skip(1)
        .filter_map(|t| {
            let d: String = t.chars().take_while(char::is_ascii_digit).collect();
            d.parse().ok()
        })
        .collect()
}

/// Issue 8. A writer appends ~2000 lines/s, rotating every ~250 ms, with a marker line (an
/// alert of its own) every 200 lines; the daemon is SIGKILLed at 20 random points and
/// restarted; a last run reads to the end. No line is lost; every marker's alert reaches
/// the Slack endpoint (which is slow, answers 503 or hangs now and then, so messages sit in
/// the outbox at the kills) at least once or is recorded failed; and a message is re-sent
/// under the same id at most once per kill (one receiver, one message in flight). Printed:
/// duplicates by id (the journal's window: killed after the receiver took a message and
/// before its `done` record) and by alert (these add re-announcements: killed before the
/// notification state saying "announced" was saved, the re-read lines fire the alert again;
/// ARCHITECTURE.md, "The outboxes are journaled").
#[test]
fn chaos_sigkill_at_random_points_during_rotation_under_load_loses_no_line_and_no_notification() {
    use std::collections::{BTreeSet, HashMap};
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;

    use crate::notify::{FakeHttp, Reply};

    // Mostly fast; every 9th answer slow, every 17th a 503 (retried after ~1 s), every 61st
    // never (a 2 s timeout, then retried).
    let script = (0..50_000u32)
        .map(|i| match i {
            _ if i % 61 == 60 => Reply::Hang,
            _ if i % 17 == 16 => Reply::Status(503, None),
            _ if i % 9 == 8 => Reply::Slow(300),
            _ => Reply::Ok,
        })
        .collect();
    let slack = FakeHttp::start(script);
    const KILLS: usize = 20;

    let d = tempfile::tempdir().unwrap();
    let logs = d.path().join("logs");
    std::fs::create_dir(&logs).unwrap();
    let log = logs.join("app.log");
    std::fs::write(&log, b"").unwrap();
    let state = d.path().join("state");
    let cfg = d.path().join("lw.toml");
    std::fs::write(
        &cfg,
        format!(
            r#"state_dir = "{state}"
default_rules = false

[patterns]
packs = []
max_label_values = 100000

[[pattern]]
name = "seq"
kind = "processed"
regex = 'seq=(?P<n>[0-9]+)'
value = "n"

[[pattern]]
name = "mark"
kind = "error"
regex = 'task failed (?P<marker>MARK-[0-9]+)'
labels = ["marker"]

[[source]]
name = "app"
path = "{logs}/app.log*"
start_at = "beginning"
multiline = false

[tailer]
poll_interval = "100ms"
checkpoint_interval = "200ms"

[notify]
send_resolved = false
history = 100000

[[rule]]
name = "marked"
type = "count"
kinds = ["error"]
threshold = 0
window = "1m"
group_by = ["marker"]
severity = "critical"

[[receiver]]
name = "slack"
type = "slack"
url_file = "{url}"
rate_limit = "none"
timeout = "2s"
max_attempts = 20

[[route]]
receivers = ["slack"]
group_by = ["marker"]
group_wait = "0s"
group_interval = "0s"
"#,
            state = state.display(),
            logs = logs.display(),
            url = d.path().join("slack-url").display(),
        ),
    )
    .unwrap();
    let url_file = d.path().join("slack-url");
    std::fs::write(&url_file, slack.url("/services/T0SECRET/B0SECRET/chaos")).unwrap();
    chmod(&url_file, 0o600);

    // The writer: ~2000 lines/s, rotating (rename to app.log.<k>, create) every ~250 ms, a
    // marker line after every 200th.
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let (log, logs, stop) = (log.clone(), logs.clone(), stop.clone());
        std::thread::spawn(move || {
            use std::io::Write;
            let (mut n, mut k, mut marks) = (0u64, 0u32, 0u64);
            let mut f = std::fs::OpenOptions::new().append(true).open(&log).unwrap();
            while !stop.load(Ordering::SeqCst) {
                for _ in 0..20 {
                    n += 1;
                    f.write_all(format!("worker seq={n} done\n").as_bytes())
                        .unwrap();
                    if n % 200 == 0 {
                        marks += 1;
                        f.write_all(
                            format!("ERROR task failed MARK-{marks} password=hunter2\n").as_bytes(),
                        )
                        .unwrap();
                    }
                }
                if n % 500 == 0 {
                    k += 1;
                    std::fs::rename(&log, logs.join(format!("app.log.{k:03}"))).unwrap();
                    f = std::fs::OpenOptions::new()
                        .create(true)
                        .append(true)
                        .open(&log)
                        .unwrap();
                }
                std::thread::sleep(Duration::from_millis(10));
            }
            (n, marks)
        })
    };

    let mut rng = Rng(0x5eed_1234_abcd_0042);
    let mut files = Vec::new();
    for round in 0..KILLS {
        let ev = d.path().join(format!("events{round:02}.jsonl"));
        let mut child = daemon(&cfg, &ev);
        std::thread::sleep(Duration::from_millis(150 + rng.next(600)));
        child.kill().unwrap(); // SIGKILL at a random point
        child.wait().unwrap();
        files.push(ev);
        std::thread::sleep(Duration::from_millis(rng.next(200)));
    }
    stop.store(true, Ordering::SeqCst);
    let (written, marks) = writer.join().unwrap();
    let last = d.path().join("events-final.jsonl");
    let child = daemon(&cfg, &last);
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while !values(&last).contains(&written) && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    let delivered = || -> BTreeSet<u64> {
        slack
            .requests()
            .iter()
            .filter(|r| r.accepted())
            .flat_map(|r| markers(&r.body))
            .collect()
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while delivered().len() < marks as usize && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    // SAFETY: our own child.
    unsafe {
        libc::kill(child.id() as i32, libc::SIGTERM);
    }
    let out = child.wait_with_output().unwrap();
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{:?}: {log}", out.status);
    files.push(last);

    let mut count: HashMap<u64, usize> = HashMap::new();
    for f in &files {
        for v in values(f) {
            *count.entry(v).or_default() += 1;
        }
    }
    let lost: Vec<u64> = (1..=written).filter(|n| !count.contains_key(n)).collect();
    let dups: usize = count.values().map(|c| c - 1).sum();

    // Notifications: by marker (the alert) and by message id (the journal's unit).
    let reqs = slack.requests();
    let accepted: Vec<_> = reqs.iter().filter(|r| r.accepted()).collect();
    let mut per_marker: HashMap<u64, usize> = HashMap::new();
    let mut per_id: HashMap<&str, usize> = HashMap::new();
    for r in &accepted {
        for m in markers(&r.body).into_iter().collect::<BTreeSet<_>>() {
            *per_marker.entry(m).or_default() += 1;
        }
        *per_id
            .entry(r.id.as_deref().expect("message id header"))
            .or_default() += 1;
    }
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_logwarden"))
        .args(["history", "--json", "--limit", "1000000", "--state-dir"])
        .arg(&state)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let h: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let failed: BTreeSet<u64> = h["history"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["outcome"] == "failed")
        .flat_map(|e| markers(&e["what"].to_string()))
        .collect();
    let missing: Vec<u64> = (1..=marks)
        .filter(|m| !per_marker.contains_key(m) && !failed.contains(m))
        .collect();
    let id_dups: usize = per_id.values().map(|c| c - 1).sum();
    let marker_dups: usize = per_marker.values().map(|c| c.saturating_sub(1)).sum();
    let journal = std::fs::read_to_string(state.join("outbox.jsonl")).unwrap_or_default();
    eprintln!(
        "chaos SIGKILL: {KILLS} rounds, {written} lines written across rotations; lost {}, duplicates {dups}",
        lost.len()
    );
    eprintln!(
        "chaos SIGKILL notifications: {marks} alerts, {} delivered, {} recorded failed, {} missing; \
         {} POSTs ({} accepted); duplicates: {id_dups} by message id (≤ 1 per kill), \
         {marker_dups} by alert",
        per_marker.len(),
        failed.len(),
        missing.len(),
        reqs.len(),
        accepted.len(),
    );
    assert!(
        lost.is_empty(),
        "lost {} of {written} lines, first {:?}",
        lost.len(),
        &lost[..lost.len().min(10)]
    );
    assert!(marks > 50, "the writer wrote {marks} markers");
    assert!(
        missing.is_empty(),
        "neither delivered nor recorded failed: {missing:?}"
    );
    assert!(
        id_dups <= KILLS,
        "{id_dups} duplicates by id for {KILLS} kills"
    );
    // The notify state is saved as soon as messages are handed out, so an alert is sent
    // again as a new message only when a kill lands between the hand-out and that save.
    assert!(
        marker_dups <= KILLS,
        "{marker_dups} alerts sent again for {KILLS} kills"
    );
    for secret in ["SECRET", "hunter2"] {
        assert!(!journal.contains(secret), "{secret} in the journal");
    }
}

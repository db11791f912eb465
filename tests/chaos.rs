//! Hostile surroundings for the daemon's own state: a `state_dir` it cannot write, and a
//! file-size limit (a full disk's cousin) on its writes. It keeps tailing and notifying,
//! says so once per episode, and exits cleanly.

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

#[test]
fn chaos_sigkill_at_random_points_during_rotation_under_load_loses_no_line() {
    use std::collections::HashMap;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;

    let d = tempfile::tempdir().unwrap();
    let logs = d.path().join("logs");
    std::fs::create_dir(&logs).unwrap();
    let log = logs.join("app.log");
    std::fs::write(&log, b"").unwrap();
    let cfg = d.path().join("lw.toml");
    std::fs::write(
        &cfg,
        format!(
            r#"state_dir = "{state}"
default_rules = false

[patterns]
packs = []

[[pattern]]
name = "seq"
kind = "processed"
regex = 'seq=(?P<n>[0-9]+)'
value = "n"

[[source]]
name = "app"
path = "{logs}/app.log*"
start_at = "beginning"
multiline = false

[tailer]
poll_interval = "100ms"
checkpoint_interval = "200ms"
"#,
            state = d.path().join("state").display(),
            logs = logs.display()
        ),
    )
    .unwrap();

    // The writer: ~2000 lines/s, rotating (rename to app.log.<k>, create) every ~250 ms.
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let (log, logs, stop) = (log.clone(), logs.clone(), stop.clone());
        std::thread::spawn(move || {
            use std::io::Write;
            let (mut n, mut k) = (0u64, 0u32);
            let mut f = std::fs::OpenOptions::new().append(true).open(&log).unwrap();
            while !stop.load(Ordering::SeqCst) {
                for _ in 0..20 {
                    n += 1;
                    f.write_all(format!("worker seq={n} done\n").as_bytes())
                        .unwrap();
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
            n
        })
    };

    let mut rng = Rng(0x5eed_1234_abcd_0042);
    let mut files = Vec::new();
    for round in 0..20 {
        let ev = d.path().join(format!("events{round:02}.jsonl"));
        let mut child = daemon(&cfg, &ev);
        std::thread::sleep(Duration::from_millis(150 + rng.next(600)));
        child.kill().unwrap(); // SIGKILL at a random point
        child.wait().unwrap();
        files.push(ev);
        std::thread::sleep(Duration::from_millis(rng.next(200)));
    }
    stop.store(true, Ordering::SeqCst);
    let written = writer.join().unwrap();
    let last = d.path().join("events-final.jsonl");
    let mut child = daemon(&cfg, &last);
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while !values(&last).contains(&written) && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    // SAFETY: our own child.
    unsafe {
        libc::kill(child.id() as i32, libc::SIGTERM);
    }
    assert!(child.wait().unwrap().success());
    files.push(last);

    let mut count: HashMap<u64, usize> = HashMap::new();
    for f in &files {
        for v in values(f) {
            *count.entry(v).or_default() += 1;
        }
    }
    let lost: Vec<u64> = (1..=written).filter(|n| !count.contains_key(n)).collect();
    let dups: usize = count.values().map(|c| c - 1).sum();
    eprintln!(
        "chaos SIGKILL: 20 rounds, {written} lines written across rotations; lost {}, duplicates {dups}",
        lost.len()
    );
    assert!(
        lost.is_empty(),
        "lost {} of {written} lines, first {:?}",
        lost.len(),
        &lost[..lost.len().min(10)]
    );
}

//! The real daemon tailing hostile files and a hostile system: a file that becomes unreadable
//! and a directory that cannot be listed (as an unprivileged uid: root ignores permission
//! bits), the per-user inotify instance limit reached (for real, for a dedicated uid), binary
//! files and an endless line, and per-file records, folds and labels.
//!
//! Tests that need another uid run the daemon through `setresuid` in `pre_exec` when the test
//! runs as root (CI does); as a normal user, permission bits already apply to the test's own
//! files. Waiting is done with deadlines on observable output, never a fixed sleep as the
//! assertion, and nothing asserts a duration.

use std::collections::HashMap;
use std::fs::{self, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Appends `data` to `path` (as the test's uid: root writes whatever the mode says).
fn append(path: &Path, data: &[u8]) {
    OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .unwrap()
        .write_all(data)
        .unwrap();
}

fn chmod(path: &Path, mode: u32) {
    fs::set_permissions(path, fs::Permissions::from_mode(mode)).unwrap();
}

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// A uid for this test process alone (no passwd entry needed), so parallel tests and other
/// runs on the machine never share its per-user limits. `k` tells tests apart.
fn dedicated_uid(k: u32) -> u32 {
    1_000_000_000 + std::process::id() * 8 + k
}

fn chown(path: &Path, uid: u32) {
    std::os::unix::fs::chown(path, Some(uid), Some(uid)).unwrap();
}

/// Makes `cmd` run as `uid` (and gid `uid`, no supplementary groups): raw syscalls only, as
/// `pre_exec` runs between fork and exec.
fn run_as(cmd: &mut Command, uid: u32) {
    let id = uid as libc::c_long;
    // SAFETY: the closure only makes raw syscalls (async-signal-safe) and reads errno.
    unsafe {
        cmd.pre_exec(move || {
            for (nr, args) in [
                (libc::SYS_setgroups, [0, 0, 0]),
                (libc::SYS_setresgid, [id, id, id]),
                (libc::SYS_setresuid, [id, id, id]),
            ] {
                if libc::syscall(nr, args[0], args[1], args[2]) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
            }
            Ok(())
        });
    }
}

/// A running `logwarden run --events -` whose stdout (events) and stderr (its log) are
/// collected by two threads.
struct Daemon {
    child: Option<Child>,
    events: Arc<Mutex<Vec<serde_json::Value>>>,
    log: Arc<Mutex<Vec<String>>>,
    readers: Vec<std::thread::JoinHandle<()>>,
}

impl Daemon {
    /// Starts the daemon on `config`, as `uid` when given.
    fn start(config: &Path, uid: Option<u32>) -> Daemon {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_logwarden"));
        cmd.args(["run", "--events", "-", "--config"])
            .arg(config)
            .current_dir(config.parent().unwrap())
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        if let Some(uid) = uid {
            run_as(&mut cmd, uid);
        }
        let mut child = cmd.spawn().expect("spawn logwarden");
        let events = Arc::new(Mutex::new(Vec::new()));
        let log = Arc::new(Mutex::new(Vec::new()));
        let out = BufReader::new(child.stdout.take().unwrap());
        let err = BufReader::new(child.stderr.take().unwrap());
        let (ev, lg) = (events.clone(), log.clone());
        let readers = vec![
            std::thread::spawn(move || {
                for l in out.lines().map_while(Result::ok) {
                    if let Ok(v) = serde_json::from_str(&l) {
                        ev.lock().unwrap().push(v);
                    }
                }
            }),
            std::thread::spawn(move || {
                for l in err.lines().map_while(Result::ok) {
                    lg.lock().unwrap().push(l);
                }
            }),
        ];
        Daemon {
            child: Some(child),
            events,
            log,
            readers,
        }
    }

    fn events(&self) -> Vec<serde_json::Value> {
        self.events.lock().unwrap().clone()
    }

    fn log_text(&self) -> String {
        self.log.lock().unwrap().join("\n")
    }

    /// Log lines containing `needle`.
    fn logged(&self, needle: &str) -> usize {
        self.log
            .lock()
            .unwrap()
            .iter()
            .filter(|l| l.contains(needle))
            .count()
    }

    /// `(pattern, value)` of every event with a value.
    fn values(&self) -> Vec<(String, u64)> {
        self.events()
            .iter()
            .filter_map(|e| {
                Some((
                    e.get("pattern")?.as_str()?.to_string(),
                    e.get("value")?.as_f64()? as u64,
                ))
            })
            .collect()
    }

    /// Waits until `cond` holds (true) or `limit` passes (false).
    fn wait(&self, limit: Duration, mut cond: impl FnMut(&Daemon) -> bool) -> bool {
        let end = Instant::now() + limit;
        loop {
            if cond(self) {
                return true;
            }
            if Instant::now() >= end {
                return false;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// SIGTERM, wait for the exit and for the readers to finish.
    fn stop(&mut self) -> ExitStatus {
        let mut child = self.child.take().expect("running");
        // SAFETY: the pid is our own child's, not yet reaped.
        unsafe {
            libc::kill(child.id() as i32, libc::SIGTERM);
        }
        let status = child.wait().unwrap();
        for r in self.readers.drain(..) {
            r.join().unwrap();
        }
        status
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill(); // a failed test: do not leave the daemon running
            let _ = c.wait();
        }
    }
}

/// The value of `key=N` in the "tailer stopped" log line.
fn stopped_field(log: &str, key: &str) -> u64 {
    let line = log
        .lines()
        .find(|l| l.contains("tailer stopped"))
        .unwrap_or_else(|| panic!("no 'tailer stopped' line in the log:\n{log}"));
    let at = line
        .find(&format!(" {key}="))
        .unwrap_or_else(|| panic!("no {key} in {line}"));
    line[at + key.len() + 2..]
        .split(|c: char| !c.is_ascii_digit())
        .next()
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("bad {key} in {line}"))
}

/// A config tailing `glob` with two value patterns: `a-seq=N` (pattern `a`) and `b-seq=N`
/// (pattern `b`).
fn seq_config(dir: &Path, glob: &Path, poll: &str) -> PathBuf {
    let config = dir.join("logwarden.toml");
    fs::write(
        &config,
        format!(
            r#"[patterns]
packs = []

[[pattern]]
name = "a"
kind = "processed"
regex = 'a-seq=(?P<n>[0-9]+)'
value = "n"

[[pattern]]
name = "b"
kind = "processed"
regex = 'b-seq=(?P<n>[0-9]+)'
value = "n"

[[source]]
name = "logs"
path = "{}"
start_at = "beginning"
rotate_wait = "1s"
multiline = false

[tailer]
poll_interval = "{poll}"
"#,
            glob.display()
        ),
    )
    .unwrap();
    config
}

/// Every value of `pattern` in `1..=n` exactly once, and nothing else of it.
fn exactly_once(got: &[(String, u64)], pattern: &str, n: u64) -> Result<(), String> {
    let mut count: HashMap<u64, usize> = HashMap::new();
    for (p, v) in got {
        if p == pattern {
            *count.entry(*v).or_default() += 1;
        }
    }
    let lost: Vec<u64> = (1..=n).filter(|v| !count.contains_key(v)).collect();
    let dups: Vec<u64> = count
        .iter()
        .filter(|(_, c)| **c > 1)
        .map(|(v, _)| *v)
        .collect();
    let extra: Vec<u64> = count
        .keys()
        .filter(|v| **v < 1 || **v > n)
        .copied()
        .collect();
    if lost.is_empty() && dups.is_empty() && extra.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "{pattern}: lost {lost:?}, duplicated {dups:?}, unexpected {extra:?}"
        ))
    }
}

/// Numbered lines for one file: `next()` appends the next one.
struct Seq {
    tag: &'static str,
    n: u64,
}

impl Seq {
    fn write(&mut self, path: &Path) {
        self.n += 1;
        append(
            path,
            format!("{}-seq={} work\n", self.tag, self.n).as_bytes(),
        );
    }
}

fn has_all(d: &Daemon, pattern: &str, n: u64) -> bool {
    let got = d.values();
    (1..=n).all(|v| got.iter().any(|(p, x)| p == pattern && *x == v))
}

/// For about `ms` (several poll ticks), writes a `b` line every 50 ms, then waits until the
/// daemon has every `b` line: the other file keeps being tailed whatever happens to `a`.
fn keep_b_flowing(d: &Daemon, b: &mut Seq, b_log: &Path, ms: u64) {
    let end = Instant::now() + Duration::from_millis(ms);
    while Instant::now() < end {
        b.write(b_log);
        std::thread::sleep(Duration::from_millis(50));
    }
    let n = b.n;
    assert!(
        d.wait(Duration::from_secs(10), |d| has_all(d, "b", n)),
        "b.log stopped being tailed; log:\n{}",
        d.log_text()
    );
}

/// A file that cannot be opened (mode 000 when the tailer must open it: at start, and again
/// when its rotation creates an unreadable successor), a file made unreadable while open, and
/// a directory that cannot be listed. Each failure is logged once (not once per tick) and
/// counted, the other file keeps being tailed, and once readable everything written
/// meanwhile is read: nothing lost, nothing twice.
#[test]
fn tail_unreadable_file_and_directory_are_logged_once_and_lose_nothing() {
    let d = tempfile::tempdir().unwrap();
    chmod(d.path(), 0o755);
    let logs = d.path().join("logs");
    fs::create_dir(&logs).unwrap();
    let (a_log, b_log) = (logs.join("a.log"), logs.join("b.log"));
    let (mut a, mut b) = (Seq { tag: "a", n: 0 }, Seq { tag: "b", n: 0 });
    for _ in 0..5 {
        a.write(&a_log);
    }
    b.write(&b_log);
    let uid = is_root().then(|| dedicated_uid(1));
    if let Some(uid) = uid {
        for p in [&logs, &a_log, &b_log] {
            chown(p, uid);
        }
    }
    chmod(&a_log, 0o000);
    let config = seq_config(d.path(), &logs.join("*.log"), "100ms");
    let mut daemon = Daemon::start(&config, uid);

    // 1. a.log is unreadable from the start: b.log is tailed, a.log is not, one warning.
    for _ in 0..5 {
        a.write(&a_log);
    }
    keep_b_flowing(&daemon, &mut b, &b_log, 1000);
    assert!(
        !daemon.values().iter().any(|(p, _)| p == "a"),
        "a.log was read although its mode is 000: the daemon is privileged; log:\n{}",
        daemon.log_text()
    );
    assert_eq!(
        daemon.logged("cannot open file"),
        1,
        "one warning for ~10 poll ticks; log:\n{}",
        daemon.log_text()
    );

    // 2. Readable again: everything written so far, from the start of the file.
    chmod(&a_log, 0o644);
    let n = a.n;
    assert!(
        daemon.wait(Duration::from_secs(10), |d| has_all(d, "a", n)),
        "a.log not read after chmod 644; log:\n{}",
        daemon.log_text()
    );
    assert_eq!(daemon.logged("file is readable again"), 1);

    // 3. Unreadable while open: the open fd still reads; no failure at all.
    chmod(&a_log, 0o000);
    for _ in 0..3 {
        a.write(&a_log);
    }
    keep_b_flowing(&daemon, &mut b, &b_log, 300);
    let n = a.n;
    assert!(
        daemon.wait(Duration::from_secs(10), |d| has_all(d, "a", n)),
        "the open fd of a mode-000 file stopped being read; log:\n{}",
        daemon.log_text()
    );
    assert_eq!(daemon.logged("cannot open file"), 1);

    // 4. Rotation to an unreadable successor (logrotate `create 0000`): the old file is
    // drained, the new one fails to open (a second episode: one more warning) until fixed.
    fs::rename(&a_log, logs.join("a.log.1")).unwrap();
    append(&a_log, b"");
    if let Some(uid) = uid {
        chown(&a_log, uid);
    }
    chmod(&a_log, 0o000);
    for _ in 0..5 {
        a.write(&a_log);
    }
    keep_b_flowing(&daemon, &mut b, &b_log, 1000);
    assert_eq!(
        daemon.logged("cannot open file"),
        2,
        "one warning per episode; log:\n{}",
        daemon.log_text()
    );
    chmod(&a_log, 0o644);
    let n = a.n;
    assert!(
        daemon.wait(Duration::from_secs(10), |d| has_all(d, "a", n)),
        "rotated-in a.log not read after chmod 644; log:\n{}",
        daemon.log_text()
    );

    // 5. The directory cannot be listed (nor searched): its open files are not "rotated
    // away" (that would re-read them from 0 later), they keep being read through their fds.
    let rotations_before = daemon.logged("file rotated or removed");
    chmod(&logs, 0o000);
    for _ in 0..3 {
        a.write(&a_log);
    }
    keep_b_flowing(&daemon, &mut b, &b_log, 1000);
    let n = a.n;
    assert!(
        daemon.wait(Duration::from_secs(10), |d| has_all(d, "a", n)),
        "open files of an unlistable directory stopped being read; log:\n{}",
        daemon.log_text()
    );
    assert_eq!(
        daemon.logged("cannot read directory"),
        1,
        "{}",
        daemon.log_text()
    );
    assert_eq!(
        daemon.logged("file rotated or removed"),
        rotations_before,
        "an unlistable directory is not a rotation; log:\n{}",
        daemon.log_text()
    );
    chmod(&logs, 0o755);
    assert!(
        daemon.wait(Duration::from_secs(10), |d| d
            .logged("directory is readable again")
            == 1),
        "{}",
        daemon.log_text()
    );
    for _ in 0..3 {
        a.write(&a_log);
    }
    keep_b_flowing(&daemon, &mut b, &b_log, 300);
    let n = a.n;
    assert!(daemon.wait(Duration::from_secs(10), |d| has_all(d, "a", n)));

    let status = daemon.stop();
    let log = daemon.log_text();
    assert!(status.success(), "exit {status:?}; log:\n{log}");
    let got = daemon.values();
    exactly_once(&got, "a", a.n).unwrap();
    exactly_once(&got, "b", b.n).unwrap();
    // Counted per failed attempt (~10 ticks per episode here), logged once per episode.
    let errors = stopped_field(&log, "errors");
    assert!(errors >= 3, "errors={errors}; log:\n{log}");
    eprintln!(
        "unreadable: {} a lines, {} b lines, exactly once; {errors} failed attempts counted, \
         warnings: {} open, {} directory",
        a.n,
        b.n,
        daemon.logged("cannot open file"),
        daemon.logged("cannot read directory")
    );
}

/// `sleep 600` as `uid`, holding every inotify instance `uid` may have: `inotify_init1` until
/// it fails with `EMFILE` (the instances are inherited by `sleep`: no `IN_CLOEXEC`).
fn exhaust_inotify_instances(uid: u32) -> Child {
    let mut cmd = Command::new("sleep");
    cmd.arg("600").stdin(Stdio::null());
    run_as(&mut cmd, uid);
    // SAFETY: raw syscalls only; `last_os_error` and `from_raw_os_error` do not allocate.
    unsafe {
        cmd.pre_exec(|| {
            // The per-process fd limit must not be what stops us first.
            let mut lim = libc::rlimit {
                rlim_cur: 0,
                rlim_max: 0,
            };
            if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) == 0 {
                lim.rlim_cur = lim.rlim_max;
                libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
            }
            for _ in 0..1_000_000 {
                if libc::inotify_init1(0) < 0 {
                    let e = std::io::Error::last_os_error();
                    return if e.raw_os_error() == Some(libc::EMFILE) {
                        Ok(())
                    } else {
                        Err(e)
                    };
                }
            }
            Err(std::io::Error::from_raw_os_error(libc::E2BIG))
        });
    }
    cmd.spawn().expect("spawn the inotify holder")
}

/// inotify instances held by process `pid`.
fn inotify_fds(pid: u32) -> usize {
    fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .filter_map(|e| fs::read_link(e.ok()?.path()).ok())
        .filter(|t| t.to_string_lossy() == "anon_inode:inotify")
        .count()
}

/// The per-user inotify instance limit, really reached: a helper running as a dedicated uid
/// holds all `fs.inotify.max_user_instances` instances that uid may have, then the daemon
/// starts as the same uid. It tails by the poll tick alone (logged once, counted in
/// `watch_errors`), and when the helper exits it starts inotify by itself on a later tick.
/// Needs root to switch uids (CI runs as root); changes no sysctl.
#[test]
fn tail_inotify_instance_limit_falls_back_to_polling_and_recovers() {
    assert!(
        is_root(),
        "this test runs the daemon as a dedicated uid whose inotify instances are exhausted, \
         which needs root (CI and scripts/test run as root): run it as root"
    );
    let uid = dedicated_uid(2);
    let limit: usize = fs::read_to_string("/proc/sys/fs/inotify/max_user_instances")
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let mut holder = exhaust_inotify_instances(uid);
    struct Kill(Option<Child>);
    impl Drop for Kill {
        fn drop(&mut self) {
            if let Some(mut c) = self.0.take() {
                let _ = c.kill(); // a failed test: do not leave the holder running
                let _ = c.wait();
            }
        }
    }
    let held = inotify_fds(holder.id());
    let mut guard = Kill(Some(holder));
    assert_eq!(
        held, limit,
        "the helper should hold all {limit} instances of uid {uid}"
    );

    let d = tempfile::tempdir().unwrap();
    chmod(d.path(), 0o755);
    let logs = d.path().join("logs");
    fs::create_dir(&logs).unwrap();
    chown(&logs, uid);
    let a_log = logs.join("a.log");
    let mut a = Seq { tag: "a", n: 0 };
    a.write(&a_log);
    chown(&a_log, uid);
    let config = seq_config(d.path(), &logs.join("*.log"), "200ms");
    let mut daemon = Daemon::start(&config, Some(uid));

    // Polling only: every line still arrives (within about one poll interval).
    let mut worst = Duration::ZERO;
    for _ in 0..20 {
        let t = Instant::now();
        a.write(&a_log);
        let n = a.n;
        assert!(
            daemon.wait(Duration::from_secs(5), |d| has_all(d, "a", n)),
            "line {n} never arrived without inotify; log:\n{}",
            daemon.log_text()
        );
        worst = worst.max(t.elapsed());
    }
    assert_eq!(
        daemon.logged("cannot start inotify"),
        1,
        "the fallback is logged once; log:\n{}",
        daemon.log_text()
    );

    // The limit is gone: inotify starts on a later poll tick.
    holder = guard.0.take().unwrap();
    holder.kill().unwrap();
    holder.wait().unwrap();
    assert!(
        daemon.wait(Duration::from_secs(10), |d| d.logged("inotify works again")
            == 1),
        "inotify did not come back; log:\n{}",
        daemon.log_text()
    );
    for _ in 0..5 {
        a.write(&a_log);
    }
    let n = a.n;
    assert!(daemon.wait(Duration::from_secs(5), |d| has_all(d, "a", n)));

    let status = daemon.stop();
    let log = daemon.log_text();
    assert!(status.success(), "exit {status:?}; log:\n{log}");
    exactly_once(&daemon.values(), "a", a.n).unwrap();
    let watch_errors = stopped_field(&log, "watch_errors");
    assert!(
        watch_errors >= 2,
        "retried on every poll tick and counted: {watch_errors}; log:\n{log}"
    );
    assert_eq!(stopped_field(&log, "unwatched_dirs"), 0, "{log}");
    eprintln!(
        "inotify limit ({limit} instances held): 20 lines by polling alone (slowest {worst:?} at a \
         200ms poll), {watch_errors} failed inotify starts counted, 1 warning, recovered"
    );
}

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

pub(crate) fn chmod(path: &Path, mode: u32) {
    fs::set_permissions(path, fs::Permissions::from_mode(mode)).unwrap();
}

pub(crate) fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// A uid for this test process alone (no passwd entry needed), so parallel tests and other
/// runs on the machine never share its per-user limits. `k` tells tests apart.
pub(crate) fn dedicated_uid(k: u32) -> u32 {
    1_000_000_000 + std::process::id() * 8 + k
}

pub(crate) fn chown(path: &Path, uid: u32) {
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
pub(crate) struct Daemon {
    child: Option<Child>,
    events: Arc<Mutex<Vec<serde_json::Value>>>,
    log: Arc<Mutex<Vec<String>>>,
    readers: Vec<std::thread::JoinHandle<()>>,
}

impl Daemon {
    /// Starts the daemon on `config`, as `uid` when given.
    pub(crate) fn start(config: &Path, uid: Option<u32>) -> Daemon {
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

    pub(crate) fn events(&self) -> Vec<serde_json::Value> {
        self.events.lock().unwrap().clone()
    }

    pub(crate) fn log_text(&self) -> String {
        self.log.lock().unwrap().join("\n")
    }

    /// Log lines containing `needle`.
    pub(crate) fn logged(&self, needle: &str) -> usize {
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
    pub(crate) fn wait(&self, limit: Duration, mut cond: impl FnMut(&Daemon) -> bool) -> bool {
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
    pub(crate) fn stop(&mut self) -> ExitStatus {
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
    // Created unreadable in one step: a readable moment would let the tailer open it.
    {
        use std::os::unix::fs::OpenOptionsExt;
        fs::OpenOptions::new()
            .create_new(true)
            .write(true)
            .mode(0o000)
            .open(&a_log)
            .unwrap();
    }
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

/// Deterministic bytes that look like a compressed file: gzip magic, then noise with NULs.
fn binary_noise(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed;
    let mut v = vec![0x1f, 0x8b, 0x08, 0x00];
    while v.len() < len {
        x = x
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        v.push((x >> 56) as u8);
    }
    v
}

/// A compressed file matched by the glob and a 10 MB line with no newline beside a normal
/// file: the normal file is tailed throughout, the binary file is logged once and its lines
/// counted as not UTF-8, the endless line is held bounded and ends as one truncated line.
#[test]
fn tail_binary_file_and_endless_line_are_survived_and_counted() {
    let d = tempfile::tempdir().unwrap();
    let logs = d.path().join("logs");
    fs::create_dir(&logs).unwrap();
    let (app, gz, endless) = (
        logs.join("app.log"),
        logs.join("app.log.1.gz"),
        logs.join("endless.log"),
    );
    append(&gz, &binary_noise(1 << 20, 1));
    let mut a = Seq { tag: "a", n: 0 };
    a.write(&app);
    let config = seq_config(d.path(), &logs.join("*"), "100ms");
    let mut daemon = Daemon::start(&config, None);
    let chunk = vec![b'x'; 1 << 20];
    for i in 0..10 {
        append(&endless, &chunk); // 10 MB in all, no newline
        a.write(&app);
        if i % 3 == 0 {
            append(&gz, &binary_noise(64 << 10, 2 + i));
        }
        let n = a.n;
        assert!(
            daemon.wait(Duration::from_secs(10), |d| has_all(d, "a", n)),
            "app.log stalled beside the binary file and the endless line; log:\n{}",
            daemon.log_text()
        );
    }
    append(&endless, b"\nafter the endless line a-seq=999999\n");
    a.write(&app);
    let n = a.n;
    assert!(daemon.wait(Duration::from_secs(10), |d| has_all(d, "a", n)
        && d.values().iter().any(|(_, v)| *v == 999_999)));
    assert_eq!(
        daemon.logged("file starts with NUL bytes"),
        1,
        "{}",
        daemon.log_text()
    );
    let status = daemon.stop();
    let log = daemon.log_text();
    assert!(status.success(), "exit {status:?}; log:\n{log}");
    let got: Vec<_> = daemon
        .values()
        .into_iter()
        .filter(|(_, v)| *v != 999_999)
        .collect();
    exactly_once(&got, "a", a.n).unwrap();
    assert_eq!(stopped_field(&log, "binary_files"), 1, "{log}");
    assert_eq!(stopped_field(&log, "truncated_lines"), 1, "{log}");
    assert_eq!(stopped_field(&log, "errors"), 0, "{log}");
    let summary = log.lines().last().unwrap_or_default();
    assert!(summary.contains("1 lines truncated"), "{summary}");
    assert!(summary.contains("lines not UTF-8"), "{summary}");
}

/// Two workers' files under one source, written line by line in turn: a task failure and its
/// traceback in one file, a bare traceback in the other. Each record holds only its own
/// file's lines, the failure folds only its own file's traceback, and every event carries the
/// source's static labels plus those derived from its path.
#[test]
fn tail_records_folds_and_labels_stay_per_file() {
    let d = tempfile::tempdir().unwrap();
    let logs = d.path().join("logs");
    for w in ["w1", "w2"] {
        fs::create_dir_all(logs.join(w)).unwrap();
    }
    let config = d.path().join("logwarden.toml");
    fs::write(
        &config,
        format!(
            r#"[[source]]
name = "workers"
path = "{}/*/*.log"
start_at = "beginning"
labels = {{ team = "ops", worker = "{{dir}}", file = "{{stem}}", name = "{{name}}" }}

[tailer]
poll_interval = "100ms"
"#,
            logs.display()
        ),
    )
    .unwrap();
    let (w1, w2) = (logs.join("w1/celery.log"), logs.join("w2/celery.log"));
    let ok = "[2026-11-23 10:00:41,000: INFO/ForkPoolWorker-1] Task tasks.resize[0c] succeeded in 0.5s: None";
    append(&w1, format!("{ok}\n").as_bytes());
    append(&w2, b"");
    let mut daemon = Daemon::start(&config, None);
    // Both files are open once the first line came through: from now on every write below
    // is read on its own wake-up, so the classifier gets the two files' lines interleaved.
    assert!(
        daemon.wait(Duration::from_secs(10), |d| !d.events().is_empty()),
        "{}",
        daemon.log_text()
    );
    let ts = "[2026-11-23 10:00:40,299: ERROR/ForkPoolWorker-2]";
    let turns: [(&Path, String); 8] = [
        (
            &w1,
            format!("{ts} Task tasks.fetch_page[0a1b] raised unexpected: KeyError('k')"),
        ),
        (&w2, "Traceback (most recent call last):".into()),
        (&w1, "Traceback (most recent call last):".into()),
        (&w2, "  File \"/app/b.py\", line 2, in g".into()),
        (&w1, "  File \"/app/a.py\", line 1, in f".into()),
        (&w2, "ValueError: bad value".into()),
        (&w1, "KeyError: 'k'".into()),
        (&w2, ok.into()),
    ];
    for (path, line) in &turns {
        append(path, format!("{line}\n").as_bytes());
        // Separate writes, separate inotify wake-ups: the lines reach the classifier in turn.
        std::thread::sleep(Duration::from_millis(20));
    }
    // Records close after `records.timeout` (1 s), folds after their window (2 s).
    assert!(
        daemon.wait(Duration::from_secs(15), |d| d.events().len() >= 4),
        "events: {:?}; log:\n{}",
        daemon.events(),
        daemon.log_text()
    );
    let status = daemon.stop();
    assert!(status.success(), "{}", daemon.log_text());
    let events = daemon.events();
    assert_eq!(events.len(), 4, "{events:#?}");
    let of = |worker: &str, kind: &str| -> serde_json::Value {
        events
            .iter()
            .find(|e| e["labels"]["worker"] == worker && e["kind"] == kind)
            .unwrap_or_else(|| panic!("no {kind} event of {worker}: {events:#?}"))
            .clone()
    };
    let failed = of("w1", "error");
    assert_eq!(failed["pattern"], "celery-task-failed", "{failed}");
    assert_eq!(failed["folded"], 1, "{failed}");
    assert_eq!(failed["lines"], 4, "its own traceback only: {failed}");
    assert_eq!(failed["labels"]["task"], "tasks.fetch_page", "{failed}");
    let bare = of("w2", "error");
    assert_eq!(bare["record"], "python", "{bare}");
    assert_eq!(bare["lines"], 3, "{bare}");
    assert_eq!(bare["message"], "ValueError: bad value", "{bare}");
    assert!(bare.get("folded").is_none(), "{bare}");
    for e in &events {
        let w = e["labels"]["worker"].as_str().unwrap();
        assert!(w == "w1" || w == "w2", "{e}");
        assert_eq!(e["source"], "workers", "{e}");
        assert_eq!(e["labels"]["team"], "ops", "{e}");
        assert_eq!(e["labels"]["file"], "celery", "{e}");
        assert_eq!(e["labels"]["name"], "celery.log", "{e}");
    }
    assert_eq!(of("w1", "processed")["labels"]["task"], "tasks.resize");
    assert_eq!(of("w2", "processed")["labels"]["task"], "tasks.resize");
}

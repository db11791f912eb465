//! Shared helpers: the built binary, fixture paths, temp dirs.

#![allow(dead_code)]

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

/// Path of the built `logwarden` binary.
pub fn bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_logwarden"))
}

/// A path under `fixtures/`.
pub fn fixture(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures")
        .join(rel)
}

/// A path under the repository root.
pub fn repo(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(rel)
}

/// Runs `logwarden args…` with `stdin` piped in, and waits.
pub fn run_with_stdin(args: &[&str], stdin: &[u8]) -> Output {
    let mut child = Command::new(bin())
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn logwarden");
    let mut input = child.stdin.take().expect("stdin");
    let data = stdin.to_vec();
    let writer = std::thread::spawn(move || {
        // The child may exit early (bad config): a broken pipe here is expected then.
        let _ = input.write_all(&data);
    });
    let out = child.wait_with_output().expect("wait logwarden");
    writer.join().expect("stdin writer");
    out
}

/// The `logrotate` binary (Debian puts it in /usr/sbin, often not on PATH); `scripts/test`
/// installs it when missing, so its absence is a failure, not a skip.
pub fn logrotate() -> PathBuf {
    [
        "/usr/sbin/logrotate",
        "/sbin/logrotate",
        "/usr/bin/logrotate",
    ]
    .iter()
    .map(PathBuf::from)
    .find(|p| p.exists())
    .expect("logrotate is not installed (apt-get install -y logrotate)")
}

/// Writes a logrotate config for `log` with `directives` (one per line) into `dir`, returning
/// its path and a state-file path for `logrotate -f -s STATE CONF`.
pub fn logrotate_conf(dir: &Path, log: &Path, directives: &[&str]) -> (PathBuf, PathBuf) {
    let conf = dir.join("logrotate.conf");
    let body: String = directives.iter().map(|d| format!("    {d}\n")).collect();
    std::fs::write(&conf, format!("{} {{\n{body}}}\n", log.display()))
        .expect("write logrotate.conf");
    (conf, dir.join("logrotate.state"))
}

/// stdout as text.
pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// stderr as text.
pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// A `redis-server` of our own on a free loopback port, in a temp dir, without persistence;
/// killed by pid on drop. `scripts/test` installs the Debian package when it is missing, so
/// its absence is a failure, not a skip.
pub struct RedisServer {
    /// The port it listens on (kept across restarts).
    pub port: u16,
    /// Extra `redis-server` arguments (TLS).
    extra: Vec<String>,
    dir: tempfile::TempDir,
    child: Option<std::process::Child>,
    paused: bool,
}

impl RedisServer {
    /// Starts a server and waits until it answers PING.
    pub fn start() -> RedisServer {
        RedisServer::start_with(&[])
    }

    /// Starts a server with extra arguments (e.g. a TLS port and certificates).
    pub fn start_with(extra: &[String]) -> RedisServer {
        for _ in 0..5 {
            let mut s = RedisServer {
                port: free_port(),
                extra: extra.to_vec(),
                dir: tempfile::tempdir().expect("temp dir"),
                child: None,
                paused: false,
            };
            if s.spawn() {
                return s;
            }
        }
        panic!("redis-server did not start (apt-get install -y redis-server)");
    }

    fn spawn(&mut self) -> bool {
        let child = Command::new("redis-server")
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(self.dir.path())
            .args(&self.extra)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server is not installed (apt-get install -y redis-server)");
        self.child = Some(child);
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while std::time::Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.as_mut().expect("child").try_wait() {
                self.child = None;
                return false; // port taken: try another
            }
            if let Ok(mut c) = self.connection() {
                if redis::cmd("PING").query::<String>(&mut c).is_ok() {
                    return true;
                }
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        false
    }

    /// `redis://127.0.0.1:<port>/0`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.port)
    }

    /// A synchronous connection for writing test data.
    pub fn connection(&self) -> redis::RedisResult<redis::Connection> {
        let client = redis::Client::open(self.url())?;
        client.get_connection_with_timeout(std::time::Duration::from_secs(2))
    }

    /// Runs one command (args as given, binary-safe) and returns its reply.
    pub fn cmd(&self, args: &[&str]) -> redis::Value {
        let mut c = self.connection().expect("connect to test redis");
        let mut cmd = redis::cmd(args[0]);
        for a in &args[1..] {
            cmd.arg(*a);
        }
        cmd.query(&mut c)
            .unwrap_or_else(|e| panic!("{args:?}: {e}"))
    }

    /// Stops the server (SIGKILL by pid: an abrupt death, like a crash).
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            if self.paused {
                self.signal(&c, libc::SIGCONT);
                self.paused = false;
            }
            let _ = c.kill(); // already gone is fine
            let _ = c.wait();
        }
    }

    /// Starts it again on the same port (empty: no persistence).
    pub fn restart(&mut self) {
        self.stop();
        assert!(
            self.spawn(),
            "redis-server did not restart on {}",
            self.port
        );
    }

    /// Freezes the process (SIGSTOP): connected but never answering.
    pub fn freeze(&mut self) {
        let c = self.child.as_ref().expect("running");
        self.signal(c, libc::SIGSTOP);
        self.paused = true;
    }

    /// Thaws it (SIGCONT).
    pub fn thaw(&mut self) {
        let c = self.child.as_ref().expect("running");
        self.signal(c, libc::SIGCONT);
        self.paused = false;
    }

    fn signal(&self, c: &std::process::Child, sig: i32) {
        // SAFETY: kill(2) on the pid of a child we spawned and have not reaped.
        let rc = unsafe { libc::kill(c.id() as i32, sig) };
        assert_eq!(rc, 0, "kill({}, {sig})", c.id());
    }
}

/// A loopback port that was free a moment ago.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port()
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.stop();
    }
}

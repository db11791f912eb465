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

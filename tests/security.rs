//! Security properties that need the real binary or the source tree (SECURITY.md): secrets
//! never reach output, a config file that holds secrets and is readable by every user is
//! warned about, and no shell is ever started. Slack escaping and email header sanitising
//! are unit-tested in `src/notify/format.rs`; Slack escaping end to end in
//! `notify.rs::slack_gets_escaped_redacted_evidence_and_the_secret_url_never_leaks`.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use crate::common::{bin, repo, stderr, stdout};

const HOOK_TOKEN: &str = "HOOKTOKEN7f3a9c";
const REDIS_PASSWORD: &str = "REDISPASS51be04";

fn write_config(dir: &Path, name: &str, text: &str, mode: u32) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).unwrap();
    p
}

fn check(config: &Path) -> Output {
    Command::new(bin())
        .args(["check", "--config", config.to_str().unwrap()])
        .env("LW_HOOK_URL", "http://127.0.0.1:9/env-hook")
        .output()
        .unwrap()
}

fn inline_secrets() -> String {
    format!(
        r#"
[[receiver]]
name = "hook"
type = "webhook"
url = "http://127.0.0.1:9/hooks/{HOOK_TOKEN}"

[[queue]]
url = "redis://:{REDIS_PASSWORD}@127.0.0.1:9/0"
keys = ["celery"]
"#
    )
}

#[test]
fn config_readable_by_everyone_with_inline_secrets_is_warned_about() {
    let dir = tempfile::tempdir().unwrap();
    let open = write_config(dir.path(), "open.toml", &inline_secrets(), 0o644);
    let out = check(&open);
    assert!(out.status.success(), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(err.contains("readable by every user"), "{err}");
    assert!(
        err.contains(r#"receiver \"hook\".url"#) || err.contains(r#"receiver "hook".url"#),
        "{err}"
    );
    assert!(err.contains("queue[0]"), "{err}");
    for text in [&err, &stdout(&out)] {
        assert!(
            !text.contains(HOOK_TOKEN) && !text.contains(REDIS_PASSWORD),
            "{text}"
        );
    }

    // The same file, readable by its owner only: no warning.
    let closed = write_config(dir.path(), "closed.toml", &inline_secrets(), 0o600);
    let out = check(&closed);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        !stderr(&out).contains("readable by every user"),
        "{}",
        stderr(&out)
    );

    // Readable by everyone, but the secrets come from the environment: nothing to warn about.
    let from_env = write_config(
        dir.path(),
        "env.toml",
        "[[receiver]]\nname = \"hook\"\ntype = \"webhook\"\nurl_env = \"LW_HOOK_URL\"\n\n\
         [[queue]]\nurl = \"redis://127.0.0.1:9/0\"\nkeys = [\"celery\"]\n",
        0o644,
    );
    let out = check(&from_env);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        !stderr(&out).contains("readable by every user"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn secrets_never_appear_in_logs_errors_or_events() {
    let dir = tempfile::tempdir().unwrap();
    // Port 9 (discard) on loopback: the webhook POST and the Redis polls fail, and their
    // errors are logged. Debug logging on, so every level is searched.
    let text = format!(
        "shutdown_grace = \"3s\"\n{}\n[[source]]\nstdin = true\n\n\
         [[receiver]]\nname = \"out\"\ntype = \"stdout\"\n\n\
         [[route]]\nreceivers = [\"hook\", \"out\"]\ngroup_wait = \"0s\"\n",
        inline_secrets().replace(
            "type = \"webhook\"",
            "type = \"webhook\"\nmax_attempts = 1\ntimeout = \"1s\""
        )
    );
    let cfg = write_config(dir.path(), "c.toml", &text, 0o600);
    let events = dir.path().join("events.jsonl");
    let mut child = Command::new(bin())
        .args(["run", "--config", cfg.to_str().unwrap()])
        .args(["--events", events.to_str().unwrap()])
        .env("RUST_LOG", "debug")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    {
        use std::io::Write;
        let mut stdin = child.stdin.take().unwrap();
        stdin
            .write_all(b"2026-11-23 10:00:00,000 ERROR MemoryError: out of memory\n")
            .unwrap();
        // Give the poller a failed poll and the webhook its failed attempt before stdin ends.
        std::thread::sleep(std::time::Duration::from_millis(2500));
    }
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let events = std::fs::read_to_string(&events).unwrap();
    assert!(events.contains("\"oom\""), "no event: {events}");
    assert!(stdout(&out).contains("oom"), "no alert: {}", stdout(&out));
    for (what, text) in [
        ("stderr", stderr(&out)),
        ("stdout", stdout(&out)),
        ("events", events),
    ] {
        assert!(
            !text.contains(HOOK_TOKEN) && !text.contains(REDIS_PASSWORD),
            "secret in {what}: {text}"
        );
    }

    // A config error about a secret field does not quote it either.
    let bad = write_config(
        dir.path(),
        "bad.toml",
        &format!(
            "[[receiver]]\nname = \"hook\"\ntype = \"webhook\"\nurl = \"ftp://h/{HOOK_TOKEN}\"\n"
        ),
        0o600,
    );
    let out = check(&bad);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("receiver[0]"), "{}", stderr(&out));
    assert!(!stderr(&out).contains(HOOK_TOKEN), "{}", stderr(&out));
}

/// logwarden never starts a shell, so no config value or log line can become a command.
#[test]
fn no_shell_is_ever_invoked() {
    let needles = [
        "Command::new(\"sh\"",
        "Command::new(\"bash\"",
        "/bin/sh",
        "/bin/bash",
        "bash -c",
        "sh -c",
    ];
    let mut stack = vec![repo("src")];
    let mut files = 0;
    while let Some(dir) = stack.pop() {
        for e in std::fs::read_dir(&dir).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else if p.extension().is_some_and(|x| x == "rs") {
                files += 1;
                let text = std::fs::read_to_string(&p).unwrap();
                for n in needles {
                    assert!(!text.contains(n), "{} contains {n:?}", p.display());
                }
            }
        }
    }
    assert!(files > 10, "only {files} source files found");
}

//! CLI tests: the real binary on fixtures, as a user would run it.

use crate::common::{fixture, repo, run_with_stdin, stderr, stdout};

/// The first output line of `classify [--lines] --format counts` on the demo log: counts per
/// kind; and the whole stdout.
fn demo_counts(lines: bool) -> (serde_json::Value, String) {
    let log = fixture("demo/worker.log");
    let mut args = vec!["classify", "--format", "counts"];
    if lines {
        args.push("--lines");
    }
    args.push(log.to_str().unwrap());
    let out = run_with_stdin(&args, b"");
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    let counts = serde_json::from_str(text.lines().next().expect("counts line")).unwrap();
    (counts, text)
}

fn demo() -> Vec<u8> {
    std::fs::read(fixture("demo/worker.log")).expect("demo log")
}

#[test]
fn run_on_stdin_prints_alerts_and_summary() {
    let out = run_with_stdin(&[], &demo());
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(text.contains("ALERT critical oom"), "{text}");
    assert!(text.contains("FIRING warning error-rate: ratio"), "{text}");
    assert!(text.contains("FIRING critical crash-frequency"), "{text}");
    let err = stderr(&out);
    assert!(
        err.contains(&format!(
            "read {} lines",
            demo().split(|&b| b == b'\n').count() - 1
        )),
        "{err}"
    );
}

#[test]
fn events_output_is_one_json_object_per_incident() {
    let out = run_with_stdin(&["run", "--events", "-"], &demo());
    assert!(out.status.success(), "{}", stderr(&out));
    let events: Vec<serde_json::Value> = stdout(&out)
        .lines()
        .filter(|l| l.starts_with('{'))
        .map(|l| serde_json::from_str(l).expect("event JSON"))
        .collect();
    assert!(!events.is_empty());
    for e in &events {
        for key in ["ts", "source", "kind", "labels", "message"] {
            assert!(e.get(key).is_some(), "{key} missing in {e}");
        }
    }
    // A failed Celery task is one event: its ERROR line with the traceback folded in.
    let failed = events
        .iter()
        .find(|e| {
            e["message"]
                .as_str()
                .unwrap_or("")
                .contains("raised unexpected: ConnectionError")
        })
        .expect("failed-task event");
    assert_eq!(failed["kind"], "error");
    assert_eq!(failed["folded"], 1, "{failed}");
    assert_eq!(failed["lines"], 7, "{failed}");
    assert_eq!(failed["labels"]["task"], "tasks.fetch_page", "{failed}");
    // The SIGKILLed child is one crash incident of three records.
    let killed = events
        .iter()
        .find(|e| e["kind"] == "crash")
        .expect("crash event");
    assert_eq!(killed["folded"], 2, "{killed}");
    // A single-line event carries its raw line.
    let ok = events
        .iter()
        .find(|e| e["kind"] == "processed")
        .expect("processed event");
    assert_eq!(ok["line"], ok["message"]);
}

#[test]
fn check_accepts_shipped_configs() {
    for f in ["config/logwarden.toml", "config/minimal.toml"] {
        // The reference config's receivers read their secrets from the environment.
        let out = std::process::Command::new(crate::common::bin())
            .args(["check", "--config", repo(f).to_str().unwrap()])
            .env(
                "LOGWARDEN_SLACK_URL",
                "https://hooks.slack.com/services/T0/B0/X",
            )
            .env("LOGWARDEN_SMTP_PASSWORD", "stand-in")
            .output()
            .unwrap();
        assert!(out.status.success(), "{f}: {}", stderr(&out));
        assert!(stdout(&out).contains(": ok ("), "{}", stdout(&out));
    }
}

#[test]
fn check_rejects_bad_configs_naming_file_place_and_value() {
    let cases = [
        ("bad-unknown-key.toml", vec!["line 2", "max_line_bytez"]),
        (
            "bad-regex.toml",
            vec!["\"lookahead\"", "look-around", "timeout(?= after)"],
        ),
        (
            "bad-rule.toml",
            vec![
                "rule[0] \"too-many-errors\".kinds",
                "unknown kind \"errors\"",
            ],
        ),
        ("bad-duration.toml", vec!["line 5", "\"5 fortnights\""]),
    ];
    for (file, needles) in cases {
        let path = fixture(&format!("config/{file}"));
        let out = run_with_stdin(&["check", "--config", path.to_str().unwrap()], b"");
        assert_eq!(out.status.code(), Some(2), "{file}");
        let err = stderr(&out);
        assert!(err.contains(path.to_str().unwrap()), "{file}: {err}");
        for n in needles {
            assert!(err.contains(n), "{file}: {n:?} not in {err}");
        }
    }
    let out = run_with_stdin(&["check", "--config", "/nonexistent/x.toml"], b"");
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("/nonexistent/x.toml"));
}

#[test]
fn run_with_bad_config_exits_2_before_reading() {
    let path = fixture("config/bad-rule.toml");
    let out = run_with_stdin(&["run", "--config", path.to_str().unwrap()], &demo());
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn classify_lines_counts_match_tsv() {
    let (counts, text) = demo_counts(true);
    let log = fixture("demo/worker.log");
    let mut lines = text.lines().skip(1);
    let patterns: serde_json::Value = serde_json::from_str(lines.next().unwrap()).unwrap();
    let sample: serde_json::Value = serde_json::from_str(lines.next().unwrap()).unwrap();
    assert!(patterns["patterns"].is_object());
    assert!(sample["unmatched_sample"].is_array());

    // The same file through the per-line tsv path: identical counts.
    let out = run_with_stdin(
        &[
            "classify",
            "--lines",
            "--format",
            "tsv",
            log.to_str().unwrap(),
        ],
        b"",
    );
    let tsv = stdout(&out);
    let mut from_tsv = std::collections::BTreeMap::<String, u64>::new();
    for l in tsv.lines() {
        *from_tsv
            .entry(l.split('\t').next().unwrap().to_string())
            .or_default() += 1;
    }
    let total: u64 = counts
        .as_object()
        .unwrap()
        .values()
        .map(|v| v.as_u64().unwrap())
        .sum();
    assert_eq!(total as usize, tsv.lines().count());
    for (k, n) in &from_tsv {
        assert_eq!(counts[k].as_u64(), Some(*n), "kind {k}");
    }
}

#[test]
fn classify_records_folds_tracebacks() {
    let (counts, _) = demo_counts(false);
    let (per_line, _) = demo_counts(true);
    // Per line, each traceback counts its header and exception line; as incidents, each
    // failure counts once: 6 failed tasks (ERROR line + traceback each), 1 SIGKILLed child
    // (exit line + WorkerLostError line + traceback), 1 MemoryError task.
    assert!(
        counts["error"].as_u64().unwrap() < per_line["error"].as_u64().unwrap(),
        "{counts} vs {per_line}"
    );
    assert_eq!(counts["error"], 6, "{counts}");
    assert_eq!(counts["crash"], 1, "{counts}");
    assert_eq!(counts["oom"], 1, "{counts}");
}

#[test]
fn replay_prints_notifications_at_log_time_in_order() {
    let cfg = fixture("config/replay.toml");
    let log = fixture("demo/worker.log");
    let out = run_with_stdin(
        &[
            "replay",
            "--config",
            cfg.to_str().unwrap(),
            log.to_str().unwrap(),
        ],
        b"",
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    let lines: Vec<&str> = text.lines().collect();
    assert!(!lines.is_empty(), "{}", stderr(&out));
    // Times come from the log (2026-11-23 10:0x), not from the wall clock, and are ordered.
    let times: Vec<&str> = lines.iter().map(|l| l.split(' ').next().unwrap()).collect();
    assert!(
        times.iter().all(|t| t.starts_with("2026-11-23T10:0")),
        "{text}"
    );
    let mut sorted = times.clone();
    sorted.sort();
    assert_eq!(times, sorted);
    assert!(text.contains("FIRING critical crashes"), "{text}");
    // The crashes leave the 1-minute window after the log ends: resolved, at log time.
    assert!(text.contains("RESOLVED critical crashes"), "{text}");
    assert!(
        stderr(&out).contains("replayed 186 lines"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn hostile_input_is_counted_and_survived() {
    let mut input = Vec::new();
    input.extend_from_slice(b"ERROR ok line\r\n");
    input.extend_from_slice(b"bad utf8 \xff\xfe here\n");
    input.extend_from_slice(b"nul \x00 bytes\n");
    input.extend(std::iter::repeat_n(b'x', 10 << 20)); // a 10 MB line
    input.extend_from_slice(b"\nlast line without newline");
    let out = run_with_stdin(&["run", "--events", "-"], &input);
    assert!(out.status.success(), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(err.contains("read 5 lines"), "{err}");
    assert!(err.contains("1 lines truncated"), "{err}");
    assert!(err.contains("1 lines not UTF-8"), "{err}");
}

#[test]
fn help_and_version() {
    let out = run_with_stdin(&["--help"], b"");
    let text = stdout(&out);
    for cmd in ["run", "check", "classify", "replay", "patterns"] {
        assert!(text.contains(cmd), "{text}");
    }
    let out = run_with_stdin(&["--version"], b"");
    assert!(stdout(&out).starts_with("logwarden "));
}

#[test]
fn format_json_prints_one_object_per_notification() {
    let out = run_with_stdin(&["run", "--format", "json"], &demo());
    assert!(out.status.success(), "{}", stderr(&out));
    let alerts: Vec<serde_json::Value> = stdout(&out)
        .lines()
        .map(|l| serde_json::from_str(l).expect("notification JSON"))
        .collect();
    assert!(alerts.len() >= 3);
    let rate = alerts
        .iter()
        .find(|a| a["rule"] == "error-rate")
        .expect("error-rate alert");
    assert_eq!(rate["state"], "firing");
    assert_eq!(rate["severity"], "warning");
    assert!(rate["value"].as_f64().unwrap() > 0.05);
    assert_eq!(rate["window_secs"], 300);
    assert!(!rate["evidence"].as_array().unwrap().is_empty());
}

#[test]
fn sigterm_drains_and_exits_cleanly_while_stdin_is_open() {
    use std::io::{BufRead, BufReader, Read, Write};
    use std::process::{Command, Stdio};
    let mut child = Command::new(crate::common::bin())
        .args(["run", "--events", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    // One write (atomic below PIPE_BUF, so read whole): a line that becomes an event at once,
    // then a traceback with no line after it, which only the drain can close.
    stdin
        .write_all(b"[2026-11-23 10:00:00,000: INFO/ForkPoolWorker-1] Task t.x[1a2b3c4d-0000-4000-8000-000000000001] succeeded in 0.1s: None\nTraceback (most recent call last):\n  File \"a.py\", line 1, in <module>\nMemoryError\n")
        .unwrap();
    stdin.flush().unwrap();
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let mut first = String::new();
    out.read_line(&mut first).unwrap(); // the first event: the child has read our bytes
    assert!(first.contains("\"processed\""), "{first}");
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let mut rest = String::new();
    out.read_to_string(&mut rest).unwrap();
    let mut err = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    let status = child.wait().unwrap();
    drop(stdin);
    assert!(status.success(), "exit {status:?}: {err}");
    let events = rest.lines().filter(|l| l.starts_with('{')).count();
    assert_eq!(
        events, 1,
        "the open record was flushed as one event: {rest}"
    );
    assert!(rest.contains("ALERT critical oom"), "{rest}");
    assert!(err.contains("received signal"), "{err}");
}

/// Counting on several threads cuts the input into 4 MiB chunks; the counts must equal the
/// line-by-line classification whatever the thread count, on stdin and on a file.
#[test]
fn classify_counts_are_the_same_on_any_number_of_threads() {
    let demo = demo();
    let mut big = Vec::new();
    while big.len() < 5 << 20 {
        big.extend_from_slice(&demo);
    }
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("big.log");
    std::fs::write(&file, &big).unwrap();
    let tsv = run_with_stdin(&["classify", "--lines"], &big);
    assert!(tsv.status.success(), "{}", stderr(&tsv));
    let mut want = serde_json::Map::new();
    for line in stdout(&tsv).lines() {
        let kind = line.split('\t').next().unwrap().to_string();
        let n = want.get(&kind).and_then(|v| v.as_u64()).unwrap_or(0);
        want.insert(kind, (n + 1).into());
    }
    assert!(want.len() >= 4, "{want:?}");
    let counts = |args: &[&str], input: &[u8]| -> serde_json::Value {
        let out = run_with_stdin(args, input);
        assert!(out.status.success(), "{}", stderr(&out));
        let mut v: serde_json::Value =
            serde_json::from_str(stdout(&out).lines().next().unwrap()).unwrap();
        v.as_object_mut()
            .unwrap()
            .retain(|_, n| n.as_u64() != Some(0));
        v
    };
    let path = file.to_str().unwrap();
    for threads in ["1", "2", "3"] {
        let base = [
            "classify",
            "--lines",
            "--format",
            "counts",
            "--threads",
            threads,
        ];
        assert_eq!(
            counts(&base, &big),
            serde_json::Value::Object(want.clone()),
            "stdin, {threads}"
        );
        let with_file: Vec<&str> = base.iter().copied().chain([path]).collect();
        assert_eq!(
            counts(&with_file, b""),
            serde_json::Value::Object(want.clone()),
            "file, {threads}"
        );
    }
}

/// A line longer than `max_line_bytes` (64 KiB) is one line, classified by its head as the
/// daemon's line splitter keeps it; the rest is dropped, wherever the 4 MiB chunks fall. Before,
/// counting cut a 10 MB line into three "lines" and classified each piece.
#[test]
fn classify_counts_an_over_long_line_once_by_its_head() {
    let mut input = b"first line\nERROR [w1] head of a long line ".to_vec();
    input.extend(std::iter::repeat_n(b'x', 10 << 20));
    input.extend_from_slice(b" Killed process 123 (python) total-vm:1kB\n");
    input.extend_from_slice(b"Killed process 456 (python) total-vm:1kB\n");
    input.extend(std::iter::repeat_n(b'y', 5 << 20)); // and an unterminated one at the end
    input.extend_from_slice(b" ERROR");
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("long.log");
    std::fs::write(&file, &input).unwrap();
    let path = file.to_str().unwrap();
    let want = serde_json::json!({"error": 1, "oom": 1, "other": 2});
    for threads in ["1", "2"] {
        for (args, stdin) in [
            (vec!["--threads", threads], &input[..]),
            (vec!["--threads", threads, path], &b""[..]),
        ] {
            let mut all = vec!["classify", "--lines", "--format", "counts"];
            all.extend(args);
            let out = run_with_stdin(&all, stdin);
            assert!(out.status.success(), "{}", stderr(&out));
            let mut got: serde_json::Value =
                serde_json::from_str(stdout(&out).lines().next().unwrap()).unwrap();
            got.as_object_mut()
                .unwrap()
                .retain(|_, n| n.as_u64() != Some(0));
            assert_eq!(got, want, "{all:?}");
        }
    }
    let tsv = run_with_stdin(&["classify", "--lines", path], b"");
    let kinds: Vec<(&str, usize)> = std::str::from_utf8(&tsv.stdout)
        .unwrap()
        .lines()
        .map(|l| l.split_once('\t').map(|(k, t)| (k, t.len())).unwrap())
        .collect();
    assert_eq!(
        kinds,
        vec![
            ("other", 10),
            ("error", 64 << 10),
            ("oom", 40),
            ("other", 64 << 10)
        ]
    );
}

/// Counting on several threads cuts the input into 4 MiB chunks of whole lines. Lines end
/// exactly at, start exactly at, and run across 4 MiB boundaries (one over-long line covers
/// a whole chunk); the counts of the file on 2 and 3 threads must equal those of the same
/// bytes on stdin with one thread, and the line-by-line output.
#[test]
fn classify_counts_of_file_pieces_cut_no_line() {
    const PIECE: usize = 4 << 20;
    let demo = demo();
    let mut input = Vec::new();
    let fill_to = |input: &mut Vec<u8>, at: usize| {
        while input.len() + demo.len() < at {
            input.extend_from_slice(&demo);
        }
        // One "other" line whose `\n` is the byte before `at`.
        let pad = at - input.len() - 1;
        input.extend(std::iter::repeat_n(b'.', pad));
        input.push(b'\n');
    };
    fill_to(&mut input, PIECE); // a line starts exactly at the boundary
    fill_to(&mut input, 2 * PIECE + 1); // the boundary's byte is a `\n`
    fill_to(&mut input, 3 * PIECE - 1000);
    input.extend_from_slice(b"ERROR [w1] a 200 KiB line across a boundary ");
    input.extend(std::iter::repeat_n(b'x', 200 << 10));
    input.extend_from_slice(b"\n");
    fill_to(&mut input, 4 * PIECE - 10);
    input.extend(std::iter::repeat_n(b'y', PIECE + 20)); // covers a whole piece
    input.extend_from_slice(b" Killed process 1 (python)\n");
    input.extend_from_slice(&demo);
    input.extend_from_slice(b"ERROR and no newline at the end");
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("pieces.log");
    std::fs::write(&file, &input).unwrap();
    let counts = |args: &[&str], stdin: &[u8]| -> serde_json::Value {
        let mut all = vec!["classify", "--lines", "--format", "counts"];
        all.extend(args);
        let out = run_with_stdin(&all, stdin);
        assert!(out.status.success(), "{}", stderr(&out));
        serde_json::from_str(stdout(&out).lines().next().unwrap()).unwrap()
    };
    let in_order = counts(&["--threads", "1"], &input);
    let tsv = run_with_stdin(&["classify", "--lines"], &input);
    let lines = tsv.stdout.iter().filter(|&&b| b == b'\n').count() as u64;
    let total: u64 = in_order
        .as_object()
        .unwrap()
        .values()
        .map(|v| v.as_u64().unwrap())
        .sum();
    assert_eq!(total, lines);
    let path = file.to_str().unwrap();
    for threads in ["2", "3"] {
        assert_eq!(
            counts(&["--threads", threads, path], b""),
            in_order,
            "{threads}"
        );
    }
}

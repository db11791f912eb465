//! The default pattern pack, measured: per-class precision and recall on the hand-labeled
//! corpus (`fixtures/labeled-dev.tsv`), exact classification of the extra lines written for
//! formats the corpus lacks (`fixtures/patterns-extra.tsv`), no dead patterns, and the
//! incident folds the pack declares.
//!
//! `cargo test --test integration corpus -- --nocapture` prints the per-class table.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Arc;

use logwarden::classify::PatternSet;
use logwarden::config::RecordConfig;
use logwarden::event::{Event, Labels, Line, Origin, Ts};
use logwarden::records::Classifier;

use crate::common::fixture;

/// Classes in report order; `other` is "no pattern matched".
const CLASSES: [&str; 6] = ["oom", "crash", "error", "downloaded", "processed", "other"];

/// (class, minimum precision, minimum recall).
const TARGETS: [(&str, f64, f64); 5] = [
    ("crash", 0.98, 0.95),
    ("oom", 0.98, 0.95),
    ("error", 0.98, 0.95),
    ("downloaded", 0.95, 0.95),
    ("processed", 0.95, 0.95),
];

/// One labeled line.
struct Row {
    /// Line number in the fixture file (1-based), for messages.
    lineno: usize,
    class: String,
    source_kind: String,
    line: String,
}

/// Reads a `class<TAB>source_kind<TAB>line` file: `#` comments and the header row skipped,
/// the line column kept verbatim (it may contain tabs).
fn load_rows(name: &str) -> Vec<Row> {
    let path = fixture(name);
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    let mut rows = Vec::new();
    let mut header_seen = false;
    for (i, raw) in text.lines().enumerate() {
        if raw.starts_with('#') || raw.trim().is_empty() {
            continue;
        }
        if !header_seen {
            header_seen = true;
            if raw.starts_with("class\t") {
                continue;
            }
        }
        let mut cols = raw.splitn(3, '\t');
        let (Some(class), Some(source_kind), Some(line)) = (cols.next(), cols.next(), cols.next())
        else {
            panic!(
                "{name}:{}: expected 3 tab-separated columns: {raw:?}",
                i + 1
            );
        };
        assert!(
            CLASSES.contains(&class),
            "{name}:{}: unknown class {class:?}",
            i + 1
        );
        rows.push(Row {
            lineno: i + 1,
            class: class.to_string(),
            source_kind: source_kind.to_string(),
            line: line.to_string(),
        });
    }
    assert!(!rows.is_empty(), "{name} has no rows");
    rows
}

/// The class and winning pattern (name) of every row.
fn classify_rows(set: &PatternSet, rows: &[Row]) -> Vec<(String, Option<String>)> {
    let mut scratch = set.scratch();
    rows.iter()
        .map(|r| match set.classify(r.line.as_bytes(), &mut scratch) {
            Some(i) => {
                let p = &set.patterns()[i];
                (p.kind.to_string(), Some(p.name.to_string()))
            }
            None => ("other".to_string(), None),
        })
        .collect()
}

/// Confusion counts keyed by (expected, got).
struct Confusion(BTreeMap<(String, String), usize>);

impl Confusion {
    fn new(rows: &[Row], got: &[(String, Option<String>)]) -> Confusion {
        let mut m = BTreeMap::new();
        for (r, (g, _)) in rows.iter().zip(got) {
            *m.entry((r.class.clone(), g.clone())).or_insert(0) += 1;
        }
        Confusion(m)
    }

    fn get(&self, expected: &str, got: &str) -> usize {
        self.0
            .get(&(expected.to_string(), got.to_string()))
            .copied()
            .unwrap_or(0)
    }

    /// (true positives, predicted, actual) of one class.
    fn counts(&self, class: &str) -> (usize, usize, usize) {
        let tp = self.get(class, class);
        let predicted = CLASSES.iter().map(|e| self.get(e, class)).sum();
        let actual = CLASSES.iter().map(|g| self.get(class, g)).sum();
        (tp, predicted, actual)
    }

    /// Precision and recall; 1.0 when there is nothing to be wrong about.
    fn precision_recall(&self, class: &str) -> (f64, f64) {
        let (tp, predicted, actual) = self.counts(class);
        let ratio = |n: usize, d: usize| if d == 0 { 1.0 } else { n as f64 / d as f64 };
        (ratio(tp, predicted), ratio(tp, actual))
    }

    fn table(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(
            s,
            "{:<11} {:>6} {:>9} {:>6} {:>9} {:>7}",
            "class", "lines", "predicted", "tp", "precision", "recall"
        );
        for c in CLASSES {
            let (tp, predicted, actual) = self.counts(c);
            let (p, r) = self.precision_recall(c);
            let _ = writeln!(
                s,
                "{c:<11} {actual:>6} {predicted:>9} {tp:>6} {p:>9.3} {r:>7.3}"
            );
        }
        s
    }

    fn matrix(&self) -> String {
        let mut s = String::from("confusion (rows: expected, columns: got)\n");
        let _ = write!(s, "{:<11}", "");
        for g in CLASSES {
            let _ = write!(s, " {g:>10}");
        }
        s.push('\n');
        for e in CLASSES {
            let _ = write!(s, "{e:<11}");
            for g in CLASSES {
                let _ = write!(s, " {:>10}", self.get(e, g));
            }
            s.push('\n');
        }
        s
    }
}

fn misclassified(name: &str, rows: &[Row], got: &[(String, Option<String>)]) -> String {
    let mut s = String::new();
    for (r, (g, pattern)) in rows.iter().zip(got) {
        if *g != r.class {
            let _ = writeln!(
                s,
                "{name}:{}: expected {} got {} ({}) [{}] {}",
                r.lineno,
                r.class,
                g,
                pattern.as_deref().unwrap_or("-"),
                r.source_kind,
                r.line
            );
        }
    }
    s
}

fn default_pack() -> PatternSet {
    PatternSet::default_pack().expect("the default pack compiles")
}

#[test]
fn corpus_default_pack_precision_and_recall() {
    let set = default_pack();
    let rows = load_rows("labeled-dev.tsv");
    let got = classify_rows(&set, &rows);
    let confusion = Confusion::new(&rows, &got);
    println!(
        "default pack ({} patterns) on labeled-dev.tsv ({} lines):\n{}",
        set.patterns().len(),
        rows.len(),
        confusion.table()
    );

    let mut failures = Vec::new();
    for (class, min_p, min_r) in TARGETS {
        let (p, r) = confusion.precision_recall(class);
        if p < min_p {
            failures.push(format!("{class}: precision {p:.3} < {min_p}"));
        }
        if r < min_r {
            failures.push(format!("{class}: recall {r:.3} < {min_r}"));
        }
    }
    assert!(
        failures.is_empty(),
        "{}\n\n{}\n{}\nmisclassified:\n{}",
        failures.join("\n"),
        confusion.table(),
        confusion.matrix(),
        misclassified("labeled-dev.tsv", &rows, &got)
    );
}

#[test]
fn corpus_extra_lines_are_classified_as_labeled() {
    let set = default_pack();
    let rows = load_rows("patterns-extra.tsv");
    assert!(
        rows.len() >= 60,
        "patterns-extra.tsv should keep at least 60 lines"
    );
    let got = classify_rows(&set, &rows);
    let wrong = misclassified("patterns-extra.tsv", &rows, &got);
    assert!(
        wrong.is_empty(),
        "{}\nmisclassified:\n{wrong}",
        Confusion::new(&rows, &got).matrix()
    );
}

#[test]
fn corpus_every_default_pattern_wins_some_line() {
    let set = default_pack();
    let mut used: BTreeMap<String, usize> = set
        .patterns()
        .iter()
        .map(|p| (p.name.to_string(), 0))
        .collect();
    for name in ["labeled-dev.tsv", "patterns-extra.tsv"] {
        let rows = load_rows(name);
        for (_, pattern) in classify_rows(&set, &rows) {
            if let Some(p) = pattern {
                *used.get_mut(&p).expect("a pattern of the set") += 1;
            }
        }
    }
    let dead: Vec<&String> = used
        .iter()
        .filter(|(_, n)| **n == 0)
        .map(|(p, _)| p)
        .collect();
    assert!(
        dead.is_empty(),
        "patterns that win no line of labeled-dev.tsv or patterns-extra.tsv: {dead:?}"
    );
}

/// Feeds `text` as one source, a line every `step_ms`, and returns every event.
fn events(text: &str, step_ms: u64) -> Vec<Event> {
    let mut c = Classifier::new(Arc::new(default_pack()), RecordConfig::default(), 100);
    let mut out = Vec::new();
    for (i, l) in text.lines().enumerate() {
        let line = Line::new(
            Origin::new(Arc::from("worker"), 0, Labels::new()),
            l.as_bytes(),
            Ts(1_000_000 + i as u64 * step_ms),
        );
        c.push(&line, &mut out);
    }
    c.finish(&mut out);
    out
}

fn summary(evs: &[Event]) -> Vec<(String, String, u32)> {
    evs.iter()
        .map(|e| (e.kind.to_string(), e.pattern.to_string(), e.folded))
        .collect()
}

#[test]
fn corpus_celery_sigkill_is_one_crash_incident() {
    let text = "\
[2024-03-18 09:13:31,310: ERROR/MainProcess] Process 'ForkPoolWorker-11' pid:2513 exited with 'signal 9 (SIGKILL)'
[2024-03-18 09:13:31,420: ERROR/MainProcess] Task handler raised error: WorkerLostError('Worker exited prematurely: signal 9 (SIGKILL) Job: 36.')
Traceback (most recent call last):
  File \"/usr/lib/python3/site-packages/billiard/pool.py\", line 1265, in mark_as_worker_lost
    raise WorkerLostError(
billiard.exceptions.WorkerLostError: Worker exited prematurely: signal 9 (SIGKILL) Job: 36.
[2024-03-18 09:13:40,000: INFO/MainProcess] Task tasks.resize_image[1b7e1c9a-5c1e-4e0b-9d7a-0d5f2a3b4c5d] received
";
    let evs = events(text, 100);
    assert_eq!(
        summary(&evs),
        vec![("crash".into(), "celery-worker-exited".into(), 2)],
        "{evs:#?}"
    );
}

#[test]
fn corpus_rq_work_horse_death_is_one_crash_incident() {
    let text = "\
09:15:21 Worker 62cf6b1f: job e13e1be3-6386-4a36-86d5-cbb8fada5c7e failed (Work-horse terminated unexpectedly; waitpid returned 9 (signal 9); )
09:15:21 Work horse killed for job e13e1be3-6386-4a36-86d5-cbb8fada5c7e: retpid=58307, ret_val=9
";
    let evs = events(text, 200);
    assert_eq!(
        summary(&evs),
        vec![("crash".into(), "rq-work-horse-terminated".into(), 1)],
        "{evs:#?}"
    );
    let text = "\
12:01:07 Moving job to FailedJobRegistry (work-horse terminated unexpectedly; waitpid returned 9; )
12:01:07 Work horse killed for job 0f1d: retpid=4411, ret_val=9
";
    let evs = events(text, 200);
    assert_eq!(evs.len(), 1, "{evs:#?}");
    assert_eq!(&*evs[0].kind, "crash");
}

#[test]
fn corpus_memory_error_folds_the_celery_unrecoverable_error() {
    let text = "\
Traceback (most recent call last):
  File \"/app/ingest/tasks.py\", line 88, in hog_memory
    rows = list(reader)
MemoryError
[2024-03-18 09:13:49,941: CRITICAL/MainProcess] Unrecoverable error: MemoryError('Process got: ')
";
    let evs = events(text, 100);
    assert_eq!(
        summary(&evs),
        vec![("oom".into(), "python-memory-error".into(), 1)],
        "{evs:#?}"
    );
}

#[test]
fn corpus_fold_keeps_unrelated_events_apart() {
    // Two different pool children dying are two incidents; a later task is its own event.
    let text = "\
[2024-03-18 09:13:31,310: ERROR/MainProcess] Process 'ForkPoolWorker-11' pid:2513 exited with 'signal 9 (SIGKILL)'
[2024-03-18 09:13:33,544: ERROR/MainProcess] Process 'ForkPoolWorker-14' pid:35217 exited with 'signal 9 (SIGKILL)'
[2024-03-18 09:14:06,879: INFO/ForkPoolWorker-6] Task tasks.send_email[58085fa8-4b8f-4825-8e80-9db4cac56854] succeeded in 1.652084088s: 17
";
    let evs = events(text, 100);
    let mut kinds: Vec<&str> = evs.iter().map(|e| &*e.kind).collect();
    kinds.sort_unstable();
    assert_eq!(kinds, vec!["crash", "crash", "processed"], "{evs:#?}");
    let done = evs.iter().find(|e| &*e.kind == "processed").unwrap();
    assert_eq!(done.labels.get("task"), Some("tasks.send_email"));
    assert_eq!(done.value, Some(1.652084088));
}

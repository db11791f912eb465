//! Resource bounds on hostile or simply large input (issue 8): a pack of 5,000 patterns, a
//! regex that would explode, a million distinct label values. Elsewhere: a 10 MB line through
//! the daemon (`cli.rs::hostile_input_is_counted_and_survived`) and the tailer
//! (`tail.rs::bad_input_is_read_as_bytes_with_bounded_lines`,
//! `tail.rs::endless_line_without_newline_is_held_bounded_and_not_checkpointed`), the
//! open-file cap (`tail.rs::open_file_cap_defers_extra_files_without_losing_them`), and the
//! series cap (`rules.rs` unit tests).

use std::collections::HashSet;
use std::fmt::Write as _;
use std::sync::Arc;

use logwarden::classify::{parse_pack, PatternSet};
use logwarden::config::RecordConfig;
use logwarden::event::{Labels, Line, Origin, Ts};
use logwarden::records::{Classifier, OTHER_LABEL_VALUE};

use crate::common::{bin, stderr, stdout};

fn line(i: u64, text: String) -> Line {
    Line::new(
        Origin::new(Arc::from("s"), 0, Labels::new()),
        text.into_bytes(),
        Ts(1_000_000 + i),
    )
}

/// 5,000 patterns, each its own literal and capture: the pack loads, every pattern can win,
/// and first-match order holds across the whole set.
#[test]
fn pack_of_5000_patterns_loads_and_classifies() {
    const N: usize = 5000;
    let mut text = String::new();
    for i in 0..N {
        let kind = if i % 2 == 0 { "error" } else { "processed" };
        writeln!(
            text,
            "[[pattern]]\nname = \"p{i}\"\nkind = \"{kind}\"\n\
             regex = 'job-{i}-done after (?P<ms>[0-9]+)ms'\nvalue = \"ms\"\n"
        )
        .unwrap();
    }
    // A catch-all at the end, which the specific patterns beat.
    text.push_str("[[pattern]]\nname = \"any-job\"\nkind = \"error\"\nregex = 'job-[0-9]+-'\n");
    let set = PatternSet::compile(&[parse_pack("big.toml", &text).unwrap()], &[]).unwrap();
    assert_eq!(set.patterns().len(), N + 1);
    let mut scratch = set.scratch();
    for i in (0..N).step_by(97).chain([N - 1]) {
        let l = format!("2026-11-23 worker job-{i}-done after 12ms");
        let won = set.classify(l.as_bytes(), &mut scratch);
        assert_eq!(
            won.map(|w| &*set.patterns()[w].name),
            Some(&*format!("p{i}"))
        );
        assert_eq!(
            set.extract(won.unwrap(), l.as_bytes(), &mut scratch).value,
            Some(12.0)
        );
    }
    let l = b"job-99999-done after 1ms";
    let won = set.classify(l, &mut scratch).unwrap();
    assert_eq!(&*set.patterns()[won].name, "any-job");
    assert_eq!(set.classify(b"nothing here", &mut scratch), None);

    // The whole-buffer path (classify --lines) agrees on the same lines.
    let buf: String = (0..N)
        .step_by(50)
        .map(|i| format!("job-{i}-done after 3ms\nunrelated\n"))
        .collect();
    let mut hits = vec![0; set.patterns().len()];
    let lines = set.count_buffer(buf.as_bytes(), 1 << 16, &mut hits, &mut scratch, |_, _| {});
    assert_eq!(lines as usize, 2 * N.div_ceil(50));
    assert_eq!(hits.iter().sum::<u64>() as usize, N.div_ceil(50));
}

/// A regex whose compiled program would be huge fails at load, naming the pack file and the
/// pattern, instead of eating memory.
#[test]
fn exploding_regex_is_a_clear_error_at_load() {
    let dir = tempfile::tempdir().unwrap();
    let pack = dir.path().join("explode.toml");
    std::fs::write(
        &pack,
        "[[pattern]]\nname = \"ok\"\nkind = \"error\"\nregex = 'ERROR'\n\n\
         [[pattern]]\nname = \"boom\"\nkind = \"error\"\nregex = '((a{1,100}){1,100}){1,100}'\n",
    )
    .unwrap();
    let cfg = dir.path().join("c.toml");
    std::fs::write(&cfg, "[patterns]\npacks = [\"explode.toml\"]\n").unwrap();
    let out = std::process::Command::new(bin())
        .args(["check", "--config", cfg.to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", stdout(&out));
    let err = stderr(&out);
    assert!(err.contains("explode.toml"), "{err}");
    assert!(err.contains("\"boom\""), "{err}");
    assert!(err.contains("limit"), "{err}");
}

/// A million distinct values of a captured label: at most `max_label_values` are kept, the
/// rest become `__other__` and are counted, so memory stays bounded.
#[test]
fn a_million_distinct_label_values_stay_capped() {
    const LINES: u64 = 1_000_000;
    const CAP: usize = 100;
    let pack = "[[pattern]]\nname = \"job\"\nkind = \"processed\"\n\
                regex = 'job (?P<job>[0-9a-f]+) done'\nlabels = [\"job\"]\n";
    let set = PatternSet::compile(&[parse_pack("t.toml", pack).unwrap()], &[]).unwrap();
    let mut c = Classifier::new(Arc::new(set), RecordConfig::default(), CAP);
    // One line, one event: the cap does not depend on records, so skip their grammar (this
    // test runs unoptimised in CI).
    c.single_line(Arc::from("s"));
    let mut out = Vec::new();
    let mut seen = HashSet::new();
    let mut events = 0u64;
    for i in 0..LINES {
        c.push(&line(i, format!("job {i:x} done")), &mut out);
        for e in out.drain(..) {
            seen.insert(e.labels.get("job").unwrap().to_string());
            events += 1;
        }
    }
    c.finish(&mut out);
    events += out.len() as u64;
    assert_eq!(events, LINES);
    assert_eq!(c.stats.lines, LINES);
    assert_eq!(c.stats.label_overflow, LINES - CAP as u64);
    assert_eq!(seen.len(), CAP + 1, "{} distinct values", seen.len());
    assert!(seen.contains(OTHER_LABEL_VALUE));
}

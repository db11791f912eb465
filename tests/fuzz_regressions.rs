//! The fuzz targets' saved inputs, replayed without the fuzzer: every file under
//! `fuzz/corpus/<target>/` (the minimised corpus) and `fuzz/regressions/<target>/` (inputs
//! that once crashed or broke an invariant, each fixed in the library) goes through the same
//! check the fuzz target runs (`fuzz/src/checks.rs`, included below). CI runs this; it needs
//! neither nightly Rust nor cargo-fuzz. `scripts/fuzz` runs the fuzzer itself.

use std::path::Path;

#[allow(dead_code)]
#[path = "../fuzz/src/checks.rs"]
mod checks;

fn replay(dir: &str, target: &str, check: fn(&[u8])) -> usize {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz")
        .join(dir)
        .join(target);
    let Ok(entries) = std::fs::read_dir(&dir) else {
        return 0;
    };
    let mut files: Vec<_> = entries.map(|e| e.expect("dir entry").path()).collect();
    files.sort();
    for f in &files {
        let data = std::fs::read(f).expect("read fuzz input");
        let outcome = std::panic::catch_unwind(|| check(&data));
        assert!(
            outcome.is_ok(),
            "fuzz target {target} fails on {}",
            f.display()
        );
    }
    files.len()
}

/// Replays the corpus (which must not be empty) and the regressions of one target.
fn target(name: &str) {
    let (_, check) = checks::TARGETS
        .iter()
        .find(|(n, _)| *n == name)
        .expect("a fuzz target");
    assert!(
        replay("corpus", name, *check) > 0,
        "fuzz/corpus/{name} is empty"
    );
    replay("regressions", name, *check);
}

#[test]
fn fuzz_config() {
    target("config");
}

#[test]
fn fuzz_pack() {
    target("pack");
}

#[test]
fn fuzz_classify() {
    target("classify");
}

#[test]
fn fuzz_splitter() {
    target("splitter");
}

#[test]
fn fuzz_records() {
    target("records");
}

#[test]
fn fuzz_timestamp() {
    target("timestamp");
}

/// A regression directory names a real target, so a reproducer is never silently unreplayed.
#[test]
fn every_regression_directory_is_a_target() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/regressions");
    let names: Vec<&str> = checks::TARGETS.iter().map(|(n, _)| *n).collect();
    for e in std::fs::read_dir(root).expect("fuzz/regressions exists") {
        let name = e.expect("dir entry").file_name();
        let name = name.to_string_lossy();
        assert!(
            name == "README.md" || names.contains(&name.as_ref()),
            "fuzz/regressions/{name} is not a fuzz target"
        );
    }
}

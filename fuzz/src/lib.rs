//! The fuzz targets' checks, as a library so each target is three lines. The checks live in
//! `checks.rs`, which `tests/fuzz_regressions.rs` includes too.
#![allow(clippy::all)]

pub mod checks;

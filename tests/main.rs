//! Integration tests, linked into one binary (`autotests = false`): on a 2-core machine one
//! link beats many. Each module names what it covers.

mod chaos;
mod cli;
mod common;
mod corpus;
mod fuzz_regressions;
mod limits;
mod notify;
mod ops;
mod queues;
mod security;
mod tail;
mod tail_hostile;
mod tail_run;

//! logwarden watches job workers through their logs and Redis queues and tells people when
//! something is wrong, without drowning them.
//!
//! ```text
//!  files ─┐                                                              ┌─▶ stdout
//!  stdin ─┴▶ sources ─Vec<Line>─▶ classify ─Vec<Event>─▶ counters ─Alert─▶ notify ─┤ (slack,
//!                                (records,                (windows,              │  email,
//!                                 folding)                 rules)                └─ webhook)
//!  redis ─▶ queues ─samples, health──────────────────────────▲
//! ```
//!
//! # Layout
//! - [`event`]: the types that cross channels (`Line`, `Event`, `Ts`).
//! - [`sources`]: bytes → lines (stdin; files), one line splitter for all.
//! - [`classify`]: pattern packs compiled into a `PatternSet`: one line → the winning pattern.
//! - [`records`]: per-source multi-line records (tracebacks) and incident folding → `Event`s.
//! - [`prepare`]: the daemon's pattern work on a pool of threads, results taken in order.
//! - [`window`]: rolling counts over time buckets, time passed in.
//! - [`rules`]: rules over windows and the alert lifecycle, pure.
//! - [`queues`]: Redis queue-depth polling (keys, SCAN globs, Celery/RQ/Sidekiq/BullMQ
//!   presets) → samples for the counters.
//! - [`counters`]: the task that owns windows and rules and emits alert changes.
//! - [`notify`]: routing, grouping, rate limits and delivery (stdout, Slack, email, webhook).
//! - [`replay`]: timestamps in log lines and the simulated clock behind `logwarden replay`.
//! - [`clock`]: the daemon clock (monotonic, in wall-clock milliseconds).
//! - [`config`]: TOML → validated `Config`.
//! - [`app`]: wires the stages together, reloads them on SIGHUP and drains them on shutdown.
//! - [`reload`]: what SIGHUP restarts and what it keeps.
//! - [`ops`]: what the stages publish about themselves, and the HTTP listener serving it
//!   (`/metrics`, `/health`, `/status`, the dashboard).
#![warn(missing_docs)]

pub mod app;
pub mod classify;
pub mod clock;
pub mod config;
pub mod counters;
pub mod event;
pub mod notify;
pub mod ops;
pub mod prepare;
pub mod queues;
pub mod records;
pub mod reload;
pub mod replay;
pub mod rules;
pub mod sources;
pub mod window;

//! Rolling windows: a ring of time buckets, lazily reset, with time passed in.
//!
//! A window of `W` keeps at most [`MAX_BUCKETS`] buckets: one-second buckets up to 5 minutes,
//! coarser beyond (a 1 h window has 12 s buckets). `sum(now)` counts the buckets whose start
//! lies in `(now - W, now]`, so the oldest edge is exact to one bucket width. Memory is
//! `8 × buckets` bytes per window, whatever the event rate.

use std::time::Duration;

use crate::event::Ts;

/// Most buckets one window keeps.
pub const MAX_BUCKETS: u64 = 300;

/// Counts of events over a sliding window.
#[derive(Debug, Clone)]
pub struct RollingCount {
    width_ms: u64,
    /// `(bucket number, count)`; bucket number = `ts / width`. A slot whose number is stale
    /// is treated as zero and overwritten on the next add (lazy reset: no timer).
    buckets: Box<[(u32, u32)]>,
}

impl RollingCount {
    /// A window spanning `window` (at least one second).
    pub fn new(window: Duration) -> RollingCount {
        let secs = window.as_secs().max(1);
        let width_s = secs.div_ceil(MAX_BUCKETS);
        let n = secs.div_ceil(width_s) as usize;
        RollingCount {
            width_ms: width_s * 1000,
            buckets: vec![(u32::MAX, 0); n].into_boxed_slice(),
        }
    }

    /// The span actually covered (a multiple of the bucket width).
    pub fn span(&self) -> Duration {
        Duration::from_millis(self.width_ms * self.buckets.len() as u64)
    }

    fn bucket(&self, at: Ts) -> u32 {
        (at.0 / self.width_ms).min(u64::from(u32::MAX - 1)) as u32
    }

    /// Adds `n` events at time `at`. Events older than the window are ignored; events "from
    /// the future" (a clock step) land in their own bucket and count once time reaches them.
    pub fn add(&mut self, at: Ts, n: u32) {
        let b = self.bucket(at);
        let len = self.buckets.len();
        let slot = &mut self.buckets[b as usize % len];
        if slot.0 == b {
            slot.1 = slot.1.saturating_add(n);
        } else if slot.0 == u32::MAX || slot.0 < b {
            *slot = (b, n);
        }
        // else: the slot holds a newer bucket, so `at` is older than the window: drop.
    }

    /// Events in the window ending at `now`.
    pub fn sum(&self, now: Ts) -> u64 {
        let cur = self.bucket(now);
        let len = self.buckets.len() as u32;
        let oldest = cur.saturating_sub(len - 1);
        self.buckets
            .iter()
            .filter(|(b, _)| *b != u32::MAX && *b >= oldest && *b <= cur)
            .map(|(_, c)| u64::from(*c))
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(secs: u64) -> Ts {
        Ts::from_secs(1_000_000 + secs)
    }

    #[test]
    fn counts_inside_window_only() {
        let mut w = RollingCount::new(Duration::from_secs(60));
        w.add(s(0), 1);
        w.add(s(30), 2);
        assert_eq!(w.sum(s(30)), 3);
        assert_eq!(w.sum(s(59)), 3);
        // At 60 s the bucket of second 0 has left the window (window = (now-60, now]).
        assert_eq!(w.sum(s(60)), 2);
        assert_eq!(w.sum(s(89)), 2);
        assert_eq!(w.sum(s(90)), 0);
    }

    #[test]
    fn slot_reuse_resets_lazily() {
        let mut w = RollingCount::new(Duration::from_secs(10));
        w.add(s(1), 5);
        w.add(s(11), 1); // same slot, newer bucket
        assert_eq!(w.sum(s(11)), 1);
    }

    #[test]
    fn old_events_are_dropped_not_misfiled() {
        let mut w = RollingCount::new(Duration::from_secs(10));
        w.add(s(20), 1);
        w.add(s(10), 7); // same slot as 20, older: outside any window ending at >= 20
        assert_eq!(w.sum(s(20)), 1);
    }

    #[test]
    fn long_windows_use_coarse_buckets() {
        let w = RollingCount::new(Duration::from_secs(3600));
        assert_eq!(w.buckets.len() as u64, MAX_BUCKETS);
        assert_eq!(w.span(), Duration::from_secs(3600));
        let w = RollingCount::new(Duration::from_millis(10));
        assert_eq!(w.span(), Duration::from_secs(1));
    }

    #[test]
    fn agrees_with_brute_force() {
        // A deterministic pseudo-random walk of adds and sums against a list of timestamps.
        let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
        let mut next = || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        for window in [1u64, 7, 60, 300] {
            let mut w = RollingCount::new(Duration::from_secs(window));
            let mut all: Vec<u64> = Vec::new();
            let mut now = 0u64;
            for _ in 0..5000 {
                now += next() % 3;
                if next() % 2 == 0 {
                    w.add(s(now), 1);
                    all.push(now);
                }
                let want = all
                    .iter()
                    .filter(|&&t| t + window > now && t <= now)
                    .count() as u64;
                assert_eq!(w.sum(s(now)), want, "window {window} at {now}");
            }
        }
    }
}

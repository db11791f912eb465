//! Rolling windows: time buckets, lazily reset, with time passed in.
//!
//! A window of `W` has at most [`MAX_BUCKETS`] buckets: one-second buckets up to 5 minutes,
//! coarser beyond (a 1 h window has 12 s buckets). `sum(now)` counts the buckets whose start
//! lies in `(now - W, now]`, so the oldest edge is exact to one bucket width.
//!
//! Memory, whatever the event rate: a window starts *sparse*, holding only its non-empty
//! buckets (8 bytes each), and becomes a *dense* ring of all its buckets (8 bytes × buckets,
//! 2.4 KB for a 5 m window) once a quarter of them are non-empty. A rule keeps one window per
//! label set (`limits.max_series` of them, 10,000 by default), and most label sets of a
//! large set are rare: with rings only, 10,000 series of a 5 m rule took 23 MB (issue 7).

use std::collections::VecDeque;
use std::time::Duration;

use crate::event::Ts;

/// Most buckets one window keeps.
pub const MAX_BUCKETS: u64 = 300;

/// Windows of at most this many buckets are dense from the start.
const SMALL: u32 = 16;

/// Counts of events over a sliding window.
#[derive(Debug, Clone)]
pub struct RollingCount {
    width_ms: u64,
    /// Buckets in the window.
    len: u32,
    buckets: Buckets,
}

#[derive(Debug, Clone)]
enum Buckets {
    /// `(bucket number, count)` of the non-empty buckets within `len` of the newest, oldest
    /// first. Events older than the window of the newest bucket are dropped (a dense ring
    /// could keep some of them, but no sum at or after the newest bucket counts them).
    Sparse(VecDeque<(u32, u32)>),
    /// `(bucket number, count)` at slot `bucket % len`; bucket number = `ts / width`. A slot
    /// whose number is stale is treated as zero and overwritten on the next add (lazy reset:
    /// no timer).
    Dense(Box<[(u32, u32)]>),
}

impl RollingCount {
    /// A window spanning `window` (at least one second).
    pub fn new(window: Duration) -> RollingCount {
        let secs = window.as_secs().max(1);
        let width_s = secs.div_ceil(MAX_BUCKETS);
        let len = secs.div_ceil(width_s) as u32;
        RollingCount {
            width_ms: width_s * 1000,
            len,
            buckets: if len <= SMALL {
                Buckets::Dense(ring(len))
            } else {
                Buckets::Sparse(VecDeque::new())
            },
        }
    }

    /// The span actually covered (a multiple of the bucket width).
    pub fn span(&self) -> Duration {
        Duration::from_millis(self.width_ms * u64::from(self.len))
    }

    fn bucket(&self, at: Ts) -> u32 {
        (at.0 / self.width_ms).min(u64::from(u32::MAX - 1)) as u32
    }

    /// Adds `n` events at time `at`. Events older than the window are ignored; events "from
    /// the future" (a clock step) land in their own bucket and count once time reaches them.
    pub fn add(&mut self, at: Ts, n: u32) {
        let b = self.bucket(at);
        let len = self.len;
        match &mut self.buckets {
            Buckets::Dense(slots) => {
                let slot = &mut slots[(b % len) as usize];
                if slot.0 == b {
                    slot.1 = slot.1.saturating_add(n);
                } else if slot.0 == u32::MAX || slot.0 < b {
                    *slot = (b, n);
                }
                // else: the slot holds a newer bucket, so `at` is older than the window: drop.
            }
            Buckets::Sparse(held) => {
                match held.back_mut() {
                    Some(last) if last.0 == b => last.1 = last.1.saturating_add(n),
                    Some(last) if last.0 > b => {
                        if b.saturating_add(len) <= last.0 {
                            return; // older than the window of the newest bucket
                        }
                        match held.binary_search_by_key(&b, |e| e.0) {
                            Ok(i) => held[i].1 = held[i].1.saturating_add(n),
                            Err(i) => held.insert(i, (b, n)),
                        }
                    }
                    _ => {
                        held.push_back((b, n));
                        while held.front().is_some_and(|e| e.0.saturating_add(len) <= b) {
                            held.pop_front();
                        }
                    }
                }
                if held.len() as u32 > len / 4 {
                    let mut slots = ring(len);
                    for &(b, c) in held.iter() {
                        slots[(b % len) as usize] = (b, c);
                    }
                    self.buckets = Buckets::Dense(slots);
                }
            }
        }
    }

    /// Events in the window ending at `now`.
    pub fn sum(&self, now: Ts) -> u64 {
        let cur = self.bucket(now);
        let oldest = cur.saturating_sub(self.len - 1);
        let counted = |&(b, c): &(u32, u32)| {
            if b != u32::MAX && b >= oldest && b <= cur {
                u64::from(c)
            } else {
                0
            }
        };
        match &self.buckets {
            Buckets::Dense(slots) => slots.iter().map(counted).sum(),
            Buckets::Sparse(held) => held.iter().map(counted).sum(),
        }
    }

    /// Bytes this window holds on the heap (for tests and estimates).
    pub fn heap_bytes(&self) -> usize {
        match &self.buckets {
            Buckets::Dense(slots) => slots.len() * 8,
            Buckets::Sparse(held) => held.capacity() * 8,
        }
    }
}

fn ring(len: u32) -> Box<[(u32, u32)]> {
    vec![(u32::MAX, 0); len as usize].into_boxed_slice()
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
        assert_eq!(u64::from(w.len), MAX_BUCKETS);
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

    /// The window before issue 7 (a dense ring from the start), as a model.
    struct Ring {
        width_ms: u64,
        slots: Vec<(u32, u32)>,
    }

    impl Ring {
        fn new(window: Duration) -> Ring {
            let w = RollingCount::new(window);
            Ring {
                width_ms: w.width_ms,
                slots: vec![(u32::MAX, 0); w.len as usize],
            }
        }
        fn add(&mut self, at: Ts, n: u32) {
            let b = (at.0 / self.width_ms) as u32;
            let len = self.slots.len();
            let slot = &mut self.slots[b as usize % len];
            if slot.0 == b {
                slot.1 += n;
            } else if slot.0 == u32::MAX || slot.0 < b {
                *slot = (b, n);
            }
        }
        fn sum(&self, now: Ts) -> u64 {
            let cur = (now.0 / self.width_ms) as u32;
            let oldest = cur.saturating_sub(self.slots.len() as u32 - 1);
            self.slots
                .iter()
                .filter(|(b, _)| *b != u32::MAX && *b >= oldest && *b <= cur)
                .map(|(_, c)| u64::from(*c))
                .sum()
        }
    }

    #[test]
    fn sparse_and_dense_agree_with_the_ring_whatever_the_order_and_rate() {
        let mut x: u64 = 0x2545_F491_4F6C_DD1D;
        let mut next = || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        for window in [30u64, 300, 3600] {
            // From rare events (sparse all along) to one every step (dense soon).
            for gap in [1u64, 3, 40, 400] {
                let (mut w, mut ring) = (
                    RollingCount::new(Duration::from_secs(window)),
                    Ring::new(Duration::from_secs(window)),
                );
                let mut now = 0u64;
                for step in 0..3000 {
                    now += next() % (2 * gap);
                    // Mostly now, sometimes late (inside or beyond the window).
                    let late = match next() % 8 {
                        0 => next() % (window + 30),
                        1 => next() % 5,
                        _ => 0,
                    };
                    let at = s(now.saturating_sub(late));
                    let n = (next() % 3) as u32 + 1;
                    w.add(at, n);
                    ring.add(at, n);
                    let q = s(now + next() % 3);
                    assert_eq!(
                        w.sum(q),
                        ring.sum(q),
                        "window {window} gap {gap} step {step}"
                    );
                }
            }
        }
    }

    #[test]
    fn rare_series_stay_small_and_busy_ones_no_bigger_than_a_ring() {
        let mut rare = RollingCount::new(Duration::from_secs(300));
        rare.add(s(0), 1);
        rare.add(s(200), 1);
        assert!(rare.heap_bytes() <= 64, "{}", rare.heap_bytes());
        let mut busy = RollingCount::new(Duration::from_secs(300));
        for t in 0..1000 {
            busy.add(s(t), 1);
            assert!(
                busy.heap_bytes() <= 300 * 8,
                "at {t}: {}",
                busy.heap_bytes()
            );
        }
        assert_eq!(busy.heap_bytes(), 300 * 8, "dense");
        assert_eq!(busy.sum(s(999)), 300);
        // 10,000 label sets of one event each: ~32 bytes of buckets apiece, not 2.4 KB.
        let total: usize = (0..10_000)
            .map(|i| {
                let mut w = RollingCount::new(Duration::from_secs(300));
                w.add(s(i % 300), 1);
                w.heap_bytes()
            })
            .sum();
        assert!(total <= 10_000 * 32, "{total}");
    }
}

//! The daemon's clock: wall time at start-up plus monotonic time since, in [`Ts`].
//!
//! Only task loops read it; pure logic takes the `Ts` it returns as an argument. Built on
//! `tokio::time::Instant`, so tests with paused time control it.

use std::time::{SystemTime, UNIX_EPOCH};

use tokio::time::Instant;

use crate::event::Ts;

/// A monotonic clock in Unix milliseconds.
#[derive(Debug, Clone, Copy)]
pub struct Clock {
    anchor_wall: Ts,
    anchor: Instant,
}

impl Clock {
    /// A clock anchored at the current wall time.
    pub fn start() -> Clock {
        let wall = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0);
        Clock::anchored(Ts(wall))
    }

    /// A clock that reads `at` now (tests).
    pub fn anchored(at: Ts) -> Clock {
        Clock {
            anchor_wall: at,
            anchor: Instant::now(),
        }
    }

    /// Now.
    pub fn now(&self) -> Ts {
        self.anchor_wall.plus(self.anchor.elapsed())
    }
}

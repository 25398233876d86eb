//! The clocks a task's guest reads: the host's, rounded down to the
//! worker's [`Limits::clock_resolution`](super::Limits::clock_resolution).
//!
//! A fine clock is what timing side channels (cache probing, speculative
//! reads) measure with; tasks of different users share a worker process,
//! so a guest reads time no finer than it needs for timeouts, logs and
//! progress. Rounding down keeps the monotonic clock monotonic, and a
//! sleep still lasts at least as long as asked.

use std::time::{Duration, Instant, SystemTime};
use wasmtime_wasi::{HostMonotonicClock, HostWallClock};

/// `t` rounded down to a multiple of `step` (`t` itself for a zero step).
fn floor(t: u128, step: u128) -> u128 {
    if step == 0 { t } else { t - t % step }
}

/// The wall clock (Unix time), in steps of `step`.
pub(super) struct Wall {
    pub(super) step: Duration,
}

impl HostWallClock for Wall {
    fn resolution(&self) -> Duration {
        self.step.max(Duration::from_nanos(1))
    }

    fn now(&self) -> Duration {
        let since = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap_or_default();
        let nanos = floor(since.as_nanos(), self.step.as_nanos());
        Duration::new(
            (nanos / 1_000_000_000) as u64,
            (nanos % 1_000_000_000) as u32,
        )
    }
}

/// A monotonic clock counting from the task's start, in steps of `step`.
pub(super) struct Monotonic {
    pub(super) start: Instant,
    pub(super) step: Duration,
}

impl HostMonotonicClock for Monotonic {
    fn resolution(&self) -> u64 {
        (self.step.as_nanos() as u64).max(1)
    }

    fn now(&self) -> u64 {
        let nanos = floor(self.start.elapsed().as_nanos(), self.step.as_nanos());
        u64::try_from(nanos).unwrap_or(u64::MAX)
    }
}

/// A WASI context builder whose clocks step by `step`.
pub(super) fn builder(step: Duration) -> wasmtime_wasi::WasiCtxBuilder {
    let mut wasi = wasmtime_wasi::WasiCtxBuilder::new();
    wasi.wall_clock(Wall { step }).monotonic_clock(Monotonic {
        start: Instant::now(),
        step,
    });
    wasi
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn readings_are_whole_steps_and_never_go_back() {
        let step = Duration::from_micros(100);
        let wall = Wall { step };
        let mono = Monotonic {
            start: Instant::now(),
            step,
        };
        let mut last = 0;
        for _ in 0..10_000 {
            let m = mono.now();
            assert_eq!(m % 100_000, 0);
            assert!(m >= last);
            last = m;
            assert_eq!(wall.now().subsec_nanos() % 100_000, 0);
        }
        assert_eq!(mono.resolution(), 100_000);
        assert_eq!(wall.resolution(), step);
    }

    #[test]
    fn a_zero_step_is_the_host_clock() {
        assert_eq!(floor(123_456_789, 0), 123_456_789);
        assert_eq!(floor(123_456_789, 1_000), 123_456_000);
        let mono = Monotonic {
            start: Instant::now(),
            step: Duration::ZERO,
        };
        assert_eq!(mono.resolution(), 1);
    }
}

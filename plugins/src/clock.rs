//! The clocks of the project, in one place. Monotonic readings are counted from the first
//! reading in the process and fit in an atomic (`u64`), which is why state shared between
//! requests (breakers, key refreshes, buckets) stores them instead of `Instant`s. Wall-clock
//! readings are only for instants that come from outside (token expiries, logs).

use std::sync::LazyLock;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

static EPOCH: LazyLock<Instant> = LazyLock::new(Instant::now);

/// Milliseconds on the process's monotonic clock; never 0, so 0 can stand for "never".
pub fn monotonic_ms() -> u64 {
    EPOCH.elapsed().as_millis() as u64 + 1
}

/// Microseconds on the process's monotonic clock (the same origin as [`monotonic_ms`]).
pub fn monotonic_us() -> u64 {
    EPOCH.elapsed().as_micros() as u64
}

/// Time since the Unix epoch (zero if the system clock is set before it).
pub fn since_unix_epoch() -> Duration {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
}

/// Milliseconds since the Unix epoch.
pub fn unix_ms() -> u64 {
    since_unix_epoch().as_millis() as u64
}

/// Seconds since the Unix epoch (JWT `exp`, `iat`, `nbf`).
pub fn unix_secs() -> u64 {
    since_unix_epoch().as_secs()
}

/// Milliseconds since the Unix epoch of a wall-clock instant.
pub fn unix_ms_of(t: SystemTime) -> Option<u64> {
    t.duration_since(UNIX_EPOCH)
        .ok()
        .map(|d| d.as_millis() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn monotonic_never_zero_and_ordered() {
        let a = monotonic_ms();
        let b = monotonic_ms();
        assert!(a >= 1 && b >= a);
        assert!(unix_ms() > 1_700_000_000_000);
    }
}

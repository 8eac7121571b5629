//! How long to wait before a retry.

use crate::sync::Locked;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Chooses the wait before a retry.
///
/// An implementation must be cheap to clone (the retry middleware clones its policy for every
/// request) and may keep state shared between clones, as [`ExponentialBackoff`] shares its
/// random number generator. It must not sleep itself: it returns the wait.
///
/// # Examples
///
/// A constant backoff:
///
/// ```
/// use std::time::Duration;
/// use weld_pipeline::middleware::{Backoff, RetryPolicy};
///
/// #[derive(Clone)]
/// struct Constant(Duration);
///
/// impl Backoff for Constant {
///     fn delay(&self, _retry: u32) -> Duration {
///         self.0
///     }
/// }
///
/// let policy = RetryPolicy::with_backoff(Constant(Duration::from_millis(200)));
/// # let _ = policy;
/// ```
pub trait Backoff: Clone + Send + Sync + 'static {
    /// The wait before retry number `retry` (0 for the first retry).
    fn delay(&self, retry: u32) -> Duration;
}

/// Exponential backoff with full jitter: a uniform draw from `[0, min(max, base * 2^retry)]`.
///
/// Full jitter keeps retrying clients from moving in lockstep after a shared failure (AWS
/// Architecture Blog, "Exponential Backoff And Jitter"). The generator is shared by clones, so
/// concurrent requests draw different waits; seed it for reproducible tests.
#[derive(Clone, Debug)]
pub struct ExponentialBackoff {
    base: Duration,
    max: Duration,
    rng: Arc<Mutex<fastrand::Rng>>,
}

impl ExponentialBackoff {
    /// Waits drawn up to `base * 2^retry`, never more than `max`.
    pub fn new(base: Duration, max: Duration) -> Self {
        ExponentialBackoff {
            base,
            max,
            rng: Arc::new(Mutex::new(fastrand::Rng::new())),
        }
    }

    /// The same, with a seeded generator.
    pub fn seeded(mut self, seed: u64) -> Self {
        self.rng = Arc::new(Mutex::new(fastrand::Rng::with_seed(seed)));
        self
    }

    /// The upper bound of the draw for retry `retry`.
    pub fn ceiling(&self, retry: u32) -> Duration {
        let factor = 1u32.checked_shl(retry.min(31)).unwrap_or(u32::MAX);
        self.base.saturating_mul(factor).min(self.max)
    }
}

impl Default for ExponentialBackoff {
    /// 100 ms doubling up to 30 s: a first retry within a tenth of a second, and a client that
    /// keeps failing settles at about one attempt per 15 s on average.
    fn default() -> Self {
        ExponentialBackoff::new(Duration::from_millis(100), Duration::from_secs(30))
    }
}

impl Backoff for ExponentialBackoff {
    fn delay(&self, retry: u32) -> Duration {
        let ceiling = self.ceiling(retry);
        let nanos = u64::try_from(ceiling.as_nanos()).unwrap_or(u64::MAX);
        let mut rng = self.rng.locked();
        Duration::from_nanos(rng.u64(0..=nanos))
    }
}

//! Retry: try a failed call again, but only when trying again can help.
//!
//! The retry loop is tower's own ([`Retry`], [`RetryLayer`]); this module supplies the policy
//! that decides, so there is one retry loop in the whole project:
//!
//! - the error is classified ([`crate::error::classify`]): only [`ErrorKind::Transient`]
//!   failures are retried; permanent errors and bugs return at once;
//! - the wait before attempt `n` is the server's retry-after hint when the error carries one,
//!   otherwise a [`Backoff`] (by default exponential with full jitter: a uniform draw from
//!   `[0, min(max, base * 2^n)]`, which spreads retrying clients apart);
//! - after `max_retries` retries the last error is returned.
//!
//! [`ErrorKind::Transient`]: crate::ErrorKind::Transient

mod backoff;
mod policy;

pub use backoff::{Backoff, ExponentialBackoff};
pub use policy::RetryPolicy;

/// A service that retries, driven by a [`RetryPolicy`] (tower's retry middleware).
pub type Retry<S, B = ExponentialBackoff> = tower::retry::Retry<RetryPolicy<B>, S>;

/// Wraps services in [`Retry`].
#[derive(Clone, Debug)]
pub struct RetryLayer<B = ExponentialBackoff> {
    policy: RetryPolicy<B>,
}

impl<B> RetryLayer<B> {
    /// A layer retrying by `policy`.
    pub fn new(policy: RetryPolicy<B>) -> Self {
        RetryLayer { policy }
    }
}

impl<S, B: Clone> tower::Layer<S> for RetryLayer<B> {
    type Service = Retry<S, B>;

    fn layer(&self, service: S) -> Self::Service {
        tower::retry::Retry::new(self.policy.clone(), service)
    }
}

#[cfg(test)]
mod tests;

//! The decision to retry.

use std::time::Duration;

use super::backoff::{Backoff, ExponentialBackoff};
use crate::error::{self, BoxError, ErrorKind};

/// Retries transient failures, waiting the server's retry-after hint or a backoff, up to a
/// number of retries. Implements tower's retry `Policy` for any cloneable request and errors
/// that box into [`BoxError`].
///
/// A policy's retry count is per request: tower clones the policy for every call.
#[derive(Clone, Debug)]
pub struct RetryPolicy<B = ExponentialBackoff> {
    backoff: B,
    max_retries: u32,
    max_retry_after: Duration,
    retries: u32,
}

impl Default for RetryPolicy<ExponentialBackoff> {
    fn default() -> Self {
        RetryPolicy::with_backoff(ExponentialBackoff::default())
    }
}

impl<B: Backoff> RetryPolicy<B> {
    /// Retries waiting by `backoff`, at most 8 times, honouring retry-after hints up to 5
    /// minutes.
    pub fn with_backoff(backoff: B) -> Self {
        RetryPolicy {
            backoff,
            max_retries: 8,
            max_retry_after: Duration::from_secs(300),
            retries: 0,
        }
    }

    /// The most retries of one request (not counting the first attempt).
    pub fn max_retries(mut self, max_retries: u32) -> Self {
        self.max_retries = max_retries;
        self
    }

    /// The longest retry-after hint honoured. A longer one (a daily quota reset) is not waited
    /// out inside a call: the error is returned so the run can stop and record it.
    pub fn max_retry_after(mut self, max: Duration) -> Self {
        self.max_retry_after = max;
        self
    }

    /// The wait before the next attempt, or `None` to give up with this error.
    pub fn wait_for(&self, error: &(dyn std::error::Error + 'static)) -> Option<Duration> {
        if self.retries >= self.max_retries || error::classify(error) != ErrorKind::Transient {
            return None;
        }
        match error::retry_after(error) {
            Some(after) if after > self.max_retry_after => None,
            Some(after) => Some(after),
            None => Some(self.backoff.delay(self.retries)),
        }
    }
}

/// The retry of one call at which its failures are told in the log: by then it is no blip.
const WARN_AT_RETRY: u32 = 3;

impl<B, Req, Res, E> tower::retry::Policy<Req, Res, E> for RetryPolicy<B>
where
    B: Backoff,
    Req: Clone,
    E: Into<BoxError> + AsDynError,
{
    type Future = tokio::time::Sleep;

    fn retry(&mut self, _request: &mut Req, result: &mut Result<Res, E>) -> Option<Self::Future> {
        let error = result.as_ref().err()?;
        let wait = self.wait_for(error.as_dyn_error())?;
        self.retries += 1;
        // A call that keeps failing (a slow-drip answer timing out, a service down) is said
        // once, at its third retry, rather than only when its last retry gives up minutes later.
        if self.retries == WARN_AT_RETRY {
            tracing::warn!(retry = self.retries, max_retries = self.max_retries, wait_ms = wait.as_millis() as u64, error = %error.as_dyn_error(), "a call keeps failing; retrying");
        } else {
            tracing::debug!(retry = self.retries, wait_ms = wait.as_millis() as u64, error = %error.as_dyn_error(), "retrying");
        }
        Some(tokio::time::sleep(wait))
    }

    fn clone_request(&mut self, request: &Req) -> Option<Req> {
        Some(request.clone())
    }
}

/// Errors the retry policy can look into. Implemented for [`BoxError`] and this crate's
/// [`Error`](crate::Error).
pub trait AsDynError {
    /// The error as a trait object, for classification.
    fn as_dyn_error(&self) -> &(dyn std::error::Error + 'static);
}

impl AsDynError for BoxError {
    fn as_dyn_error(&self) -> &(dyn std::error::Error + 'static) {
        self.as_ref()
    }
}

impl AsDynError for crate::Error {
    fn as_dyn_error(&self) -> &(dyn std::error::Error + 'static) {
        self
    }
}

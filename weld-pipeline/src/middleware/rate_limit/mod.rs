//! Rate limit: pace calls so that a service's budget is never exceeded.
//!
//! A [`Pacer`] hands out start times; [`RateLimit`] waits for its start time before each call.
//! The pacer is shared (`Arc`) by every clone of the service and may be shared by several
//! services drawing on one budget (all streams of one HubSpot account).
//!
//! Two pacers ship:
//! - [`TokenBucket`]: a bucket of `capacity` tokens, refilled one every `per / capacity`; bursts up
//!   to `capacity`, then the steady rate.
//! - [`BudgetPacer`]: for services that state their budget (HubSpot's
//!   `X-HubSpot-RateLimit-Max`/`-Remaining`/`-Interval-Milliseconds`): calls are spread evenly over
//!   the window, never more than the budget in any rolling window, and what the service reports
//!   as already spent (by other clients of the same account) is respected. The client feeds it
//!   with [`Pacer::observe`] as responses arrive.
//!
//! Waiting happens inside the call's future, not in `poll_ready`: a call is paced from the moment
//! it is made, and a clone of the inner service makes it once its time comes.

mod layer;
mod pacer;

pub use layer::RateLimitLayer;
pub use pacer::{Budget, BudgetPacer, Pacer, TokenBucket};

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use tower::{Service, ServiceExt};

use crate::error::BoxError;

/// Waits for the pacer's start time, then calls the inner service.
#[derive(Debug)]
pub struct RateLimit<S, P> {
    inner: S,
    pacer: Arc<P>,
}

impl<S: Clone, P> Clone for RateLimit<S, P> {
    fn clone(&self) -> Self {
        RateLimit {
            inner: self.inner.clone(),
            pacer: self.pacer.clone(),
        }
    }
}

impl<S, P> RateLimit<S, P> {
    /// Paces `inner` by `pacer`.
    pub fn new(inner: S, pacer: Arc<P>) -> Self {
        RateLimit { inner, pacer }
    }

    /// The shared pacer.
    pub fn pacer(&self) -> &Arc<P> {
        &self.pacer
    }
}

impl<S, P, Req> Service<Req> for RateLimit<S, P>
where
    S: Service<Req> + Clone + Send + 'static,
    S::Error: Into<BoxError>,
    S::Future: Send,
    P: Pacer,
    Req: Send + 'static,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<S::Response, BoxError>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Req) -> Self::Future {
        let start = self.pacer.reserve(tokio::time::Instant::now());
        let inner = self.inner.clone();
        Box::pin(async move {
            // Only a start in the future is slept for: a timer costs a tick (about a millisecond)
            // even for a deadline that has passed.
            if start > tokio::time::Instant::now() {
                tokio::time::sleep_until(start).await;
            }
            inner.oneshot(request).await.map_err(Into::into)
        })
    }
}

#[cfg(test)]
mod tests;

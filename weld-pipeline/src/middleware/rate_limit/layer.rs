use std::sync::Arc;

use super::RateLimit;

/// Wraps services in [`RateLimit`], all sharing one pacer.
#[derive(Debug)]
pub struct RateLimitLayer<P> {
    pacer: Arc<P>,
}

impl<P> Clone for RateLimitLayer<P> {
    fn clone(&self) -> Self {
        RateLimitLayer {
            pacer: self.pacer.clone(),
        }
    }
}

impl<P> RateLimitLayer<P> {
    /// A layer pacing by `pacer`.
    pub fn new(pacer: P) -> Self {
        RateLimitLayer {
            pacer: Arc::new(pacer),
        }
    }

    /// A layer pacing by a pacer that is also held elsewhere (a client that feeds it budgets).
    pub fn shared(pacer: Arc<P>) -> Self {
        RateLimitLayer { pacer }
    }
}

impl<S, P> tower::Layer<S> for RateLimitLayer<P> {
    type Service = RateLimit<S, P>;

    fn layer(&self, inner: S) -> Self::Service {
        RateLimit::new(inner, self.pacer.clone())
    }
}

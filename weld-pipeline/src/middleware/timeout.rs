//! Timeout: fail a call that takes longer than a deadline.
//!
//! This is tower's own timeout, re-exported: its error, `tower::timeout::error::Elapsed`, is
//! classified as [`ErrorKind::Transient`](crate::ErrorKind::Transient) by
//! [`classify`](crate::error::classify), so a [`RetryLayer`](super::RetryLayer) above it retries
//! a call that timed out. Put the timeout inside the retry: it should bound one attempt.

pub use tower::timeout::{Timeout, TimeoutLayer};

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use tower::{Layer, Service, ServiceExt};

    use super::*;
    use crate::error::{classify, BoxError, ErrorKind};

    #[tokio::test(start_paused = true)]
    async fn a_slow_call_times_out_with_a_transient_error() {
        let slow = tower::service_fn(|()| async {
            tokio::time::sleep(Duration::from_secs(60)).await;
            Ok::<_, BoxError>(())
        });
        let mut service = TimeoutLayer::new(Duration::from_secs(1)).layer(slow);
        let started = tokio::time::Instant::now();
        let error = service.ready().await.unwrap().call(()).await.unwrap_err();
        assert_eq!(classify(error.as_ref()), ErrorKind::Transient);
        assert_eq!(started.elapsed(), Duration::from_secs(1));
    }

    #[tokio::test(start_paused = true)]
    async fn a_fast_call_passes_through() {
        let fast = tower::service_fn(|x: u32| async move { Ok::<_, BoxError>(x + 1) });
        let mut service = TimeoutLayer::new(Duration::from_secs(1)).layer(fast);
        assert_eq!(service.ready().await.unwrap().call(1).await.unwrap(), 2);
    }
}

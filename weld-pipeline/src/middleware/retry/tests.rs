use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;
use tower::{Layer, ServiceExt};

use super::*;
use crate::error::{BoxError, Error};
use crate::testing::Scripted;

fn fast_policy() -> RetryPolicy {
    RetryPolicy::with_backoff(
        ExponentialBackoff::new(Duration::from_millis(100), Duration::from_secs(2)).seeded(7),
    )
}

#[tokio::test(start_paused = true)]
async fn transient_errors_are_retried_until_success() {
    let inner = Scripted::new([
        Err(Error::Unavailable("503".into())),
        Err(Error::Closed),
        Ok("page"),
    ]);
    let mut service = RetryLayer::new(fast_policy()).layer(inner.clone());
    let response = (&mut service).oneshot(()).await.unwrap();
    assert_eq!(response, "page");
    assert_eq!(inner.calls(), 3);
}

#[tokio::test(start_paused = true)]
async fn permanent_errors_and_bugs_are_never_retried() {
    for error in [Error::Invalid("401".into()), Error::Bug("oops".into())] {
        let inner = Scripted::new([Err(error), Ok("never")]);
        let mut service = RetryLayer::new(fast_policy()).layer(inner.clone());
        assert!((&mut service).oneshot(()).await.is_err());
        assert_eq!(inner.calls(), 1);
    }
}

#[tokio::test(start_paused = true)]
async fn a_retry_after_hint_is_honoured() {
    let inner = Scripted::new([
        Err(Error::RateLimited {
            retry_after: Some(Duration::from_secs(7)),
        }),
        Ok("page"),
    ]);
    let mut service = RetryLayer::new(fast_policy()).layer(inner.clone());
    let start = Instant::now();
    (&mut service).oneshot(()).await.unwrap();
    let times = inner.call_times();
    assert_eq!(times[1] - times[0], Duration::from_secs(7));
    assert!(start.elapsed() >= Duration::from_secs(7));
}

#[tokio::test(start_paused = true)]
async fn a_retry_after_beyond_the_limit_is_returned_not_waited() {
    let inner = Scripted::new([
        Err(Error::RateLimited {
            retry_after: Some(Duration::from_secs(86_400)),
        }),
        Ok("never"),
    ]);
    let mut service = RetryLayer::new(fast_policy()).layer(inner.clone());
    let error = (&mut service).oneshot(()).await.unwrap_err();
    assert_eq!(
        Error::from_boxed(error).retry_after(),
        Some(Duration::from_secs(86_400))
    );
    assert_eq!(inner.calls(), 1);
}

#[tokio::test(start_paused = true)]
async fn retries_stop_after_the_maximum_with_the_last_error() {
    let inner: Scripted<&str> =
        Scripted::new((0..10).map(|i| Err(Error::Unavailable(format!("attempt {i}")))));
    let mut service = RetryLayer::new(fast_policy().max_retries(3)).layer(inner.clone());
    let error = (&mut service).oneshot(()).await.unwrap_err();
    assert_eq!(error.to_string(), "unavailable: attempt 3");
    assert_eq!(inner.calls(), 4);
}

#[tokio::test(start_paused = true)]
async fn backoff_waits_grow_and_stay_under_the_full_jitter_ceiling() {
    let backoff =
        ExponentialBackoff::new(Duration::from_millis(100), Duration::from_secs(2)).seeded(3);
    let inner = Scripted::new((0..6).map(|_| Err(Error::Closed)).chain([Ok("page")]));
    let mut service =
        RetryLayer::new(RetryPolicy::with_backoff(backoff.clone())).layer(inner.clone());
    (&mut service).oneshot(()).await.unwrap();
    let times = inner.call_times();
    for (retry, pair) in times.windows(2).enumerate() {
        let waited = pair[1] - pair[0];
        assert!(
            waited <= backoff.ceiling(retry as u32),
            "retry {retry} waited {waited:?}"
        );
    }
    assert_eq!(backoff.ceiling(10), Duration::from_secs(2));
}

#[test]
fn clones_share_one_generator_so_concurrent_requests_draw_different_jitter() {
    let backoff =
        ExponentialBackoff::new(Duration::from_secs(1), Duration::from_secs(60)).seeded(1);
    let clone = backoff.clone();
    // Two independently seeded copies would draw the same first wait.
    assert_ne!(clone.delay(5), backoff.delay(5));
}

#[tokio::test(start_paused = true)]
async fn timeouts_under_retry_are_retried() {
    // A slow first attempt is cut by the timeout (transient) and the retry succeeds.
    let slow_then_fast = Arc::new(Mutex::new(0));
    let counter = slow_then_fast.clone();
    let inner = tower::service_fn(move |()| {
        let attempt = {
            let mut n = counter.lock().unwrap();
            *n += 1;
            *n
        };
        async move {
            if attempt == 1 {
                tokio::time::sleep(Duration::from_secs(60)).await;
            }
            Ok::<_, BoxError>("page")
        }
    });
    let mut service = tower::ServiceBuilder::new()
        .layer(RetryLayer::new(fast_policy()))
        .layer(crate::middleware::TimeoutLayer::new(Duration::from_secs(5)))
        .service(inner);
    assert_eq!((&mut service).oneshot(()).await.unwrap(), "page");
    assert_eq!(*slow_then_fast.lock().unwrap(), 2);
}

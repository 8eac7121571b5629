use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;
use tower::{Layer, ServiceExt};

use super::*;
use crate::testing::Scripted;

/// Drives `callers` concurrent callers through a paced service for one paused-clock minute and
/// returns the instants at which the inner service was called.
async fn hammer<P: Pacer>(pacer: Arc<P>, callers: usize) -> Vec<Instant> {
    let inner = Scripted::always(());
    let service = RateLimitLayer::shared(pacer).layer(inner.clone());
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut tasks = Vec::new();
    for _ in 0..callers {
        let service = service.clone();
        tasks.push(tokio::spawn(async move {
            while Instant::now() < deadline {
                service.clone().oneshot(()).await.unwrap();
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    let mut times = inner.call_times();
    times.sort();
    times
}

/// The most calls found in any half-open window `[t, t + window)`.
fn busiest_window(times: &[Instant], window: Duration) -> usize {
    let mut most = 0;
    let mut from = 0;
    for to in 0..times.len() {
        while times[to] - times[from] >= window {
            from += 1;
        }
        most = most.max(to - from + 1);
    }
    most
}

#[tokio::test(start_paused = true)]
async fn token_bucket_never_exceeds_its_budget_over_a_minute() {
    let times = hammer(Arc::new(TokenBucket::new(10, Duration::from_secs(1))), 25).await;
    // Over any span, at most the burst plus the refill: check every pair of calls.
    let refill = Duration::from_millis(100);
    for i in 0..times.len() {
        for j in i..times.len() {
            let span = times[j] - times[i];
            let allowed = 10 + (span.as_nanos() / refill.as_nanos()) as usize;
            assert!(j - i < allowed, "{} calls within {span:?}", j - i + 1);
        }
    }
    // And it is not idle either: about 10 per second for 60 s, plus the initial burst.
    assert!(times.len() >= 600, "only {} calls", times.len());
}

#[tokio::test(start_paused = true)]
async fn budget_pacer_never_exceeds_max_per_rolling_interval_over_a_minute() {
    let pacer = Arc::new(BudgetPacer::new(100, Duration::from_secs(10)));
    let times = hammer(pacer, 40).await;
    assert!(busiest_window(&times, Duration::from_secs(10)) <= 100);
    // Close to the allowed rate: 100 per 10 s for 60 s is 600.
    assert!(times.len() >= 570, "only {} calls", times.len());
}

#[tokio::test(start_paused = true)]
async fn budget_pacer_spreads_calls_instead_of_bursting() {
    let pacer = Arc::new(BudgetPacer::new(10, Duration::from_secs(10)));
    let times = hammer(pacer, 10).await;
    for pair in times.windows(2) {
        assert!(pair[1] - pair[0] >= Duration::from_secs(1));
    }
}

#[tokio::test(start_paused = true)]
async fn budget_pacer_respects_budget_spent_by_other_clients() {
    let pacer = BudgetPacer::new(100, Duration::from_secs(10));
    let now = Instant::now();
    // The service says only 1 call remains in this window: someone else spent 99.
    pacer.observe(
        now,
        Budget {
            max: 100,
            remaining: 1,
            interval: Duration::from_secs(10),
        },
    );
    let first = pacer.reserve(now);
    let second = pacer.reserve(now);
    assert_eq!(first, now);
    assert!(
        second >= now + Duration::from_secs(10),
        "{:?}",
        second - now
    );
}

#[tokio::test(start_paused = true)]
async fn budget_pacer_adopts_the_budget_the_service_reports() {
    let pacer = BudgetPacer::new(10, Duration::from_secs(1));
    pacer.observe(
        Instant::now(),
        Budget {
            max: 190,
            remaining: 190,
            interval: Duration::from_secs(10),
        },
    );
    assert_eq!(pacer.budget(), (190, Duration::from_secs(10)));
}

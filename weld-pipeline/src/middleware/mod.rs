//! Middleware: tower layers that wrap sources' page fetchers, sinks' clients and transport peers
//! alike.
//!
//! | layer | module | what it does |
//! |---|---|---|
//! | [`RetryLayer`] | [`retry`] | retries transient errors with exponential backoff and full jitter, honouring a server's retry-after |
//! | [`TimeoutLayer`] | [`timeout`] | fails a call that takes too long, with an error classified as transient |
//! | [`RateLimitLayer`] | [`rate_limit`] | paces calls: a token bucket, or a budget the service reports |
//! | [`ConcurrencyLimitLayer`] | tower's own | bounds calls in flight |
//! | [`TelemetryLayer`] | [`telemetry`] | a tracing span per call, counters of calls and errors by kind |
//!
//! A typical page fetcher, outermost first: telemetry, retry, rate limit, timeout, the client.
//! Rate limiting sits inside retry so that every attempt, retries included, is paced; the
//! timeout sits innermost so that it bounds one attempt, not the sum of them.
//!
//! ```
//! use std::time::Duration;
//! use tower::ServiceBuilder;
//! use weld_pipeline::middleware::{RateLimitLayer, RetryLayer, RetryPolicy, TelemetryLayer, TimeoutLayer, TokenBucket};
//! use weld_pipeline::source::{Generator, Pages};
//!
//! let fetch = ServiceBuilder::new()
//!     .layer(TelemetryLayer::new("generator"))
//!     .layer(RetryLayer::new(RetryPolicy::default()))
//!     .layer(RateLimitLayer::new(TokenBucket::new(100, Duration::from_secs(10))))
//!     .layer(TimeoutLayer::new(Duration::from_secs(30)))
//!     .service(Generator::contacts(1_000));
//! let source = Pages::new(fetch);
//! # let _ = source;
//! ```

pub mod rate_limit;
pub mod retry;
pub mod telemetry;
pub mod timeout;

pub use rate_limit::{Budget, BudgetPacer, Pacer, RateLimit, RateLimitLayer, TokenBucket};
pub use retry::{Backoff, ExponentialBackoff, Retry, RetryLayer, RetryPolicy};
pub use telemetry::{Telemetry, TelemetryLayer};
pub use timeout::{Timeout, TimeoutLayer};

/// Bounds the calls in flight through a service: tower's own layer, re-exported.
pub use tower::limit::{ConcurrencyLimit, ConcurrencyLimitLayer};

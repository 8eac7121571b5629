//! Telemetry: a tracing span around every call, and counters of calls and errors by kind.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use metrics::{counter, histogram};
use tower::Service;
use tracing::Instrument;

use crate::error::{classify, BoxError};
use crate::telemetry::kind_label;

/// Wraps each call in a `call` span named after the service, and counts calls
/// (`weld_calls_total`), failures by kind (`weld_call_errors_total`) and durations
/// (`weld_call_duration_seconds`), all labelled `service`.
///
/// Put it outermost to count what callers see (a call retried three times and then successful
/// counts once, as a success), or inside the retry to count every attempt.
#[derive(Clone, Debug)]
pub struct Telemetry<S> {
    inner: S,
    service: &'static str,
}

impl<S, Req> Service<Req> for Telemetry<S>
where
    S: Service<Req>,
    S::Error: Into<BoxError>,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<S::Response, BoxError>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, request: Req) -> Self::Future {
        let service = self.service;
        let span = tracing::debug_span!("call", service);
        let future = {
            let _entered = span.enter();
            self.inner.call(request)
        };
        Box::pin(
            async move {
                let started = tokio::time::Instant::now();
                let result = future.await.map_err(Into::into);
                counter!("weld_calls_total", "service" => service).increment(1);
                histogram!("weld_call_duration_seconds", "service" => service)
                    .record(started.elapsed().as_secs_f64());
                if let Err(error) = &result {
                    let kind = kind_label(classify(error.as_ref()));
                    tracing::debug!(kind, error = %error, "call failed");
                    counter!("weld_call_errors_total", "service" => service, "kind" => kind)
                        .increment(1);
                }
                result
            }
            .instrument(span),
        )
    }
}

/// Wraps services in [`Telemetry`].
#[derive(Clone, Copy, Debug)]
pub struct TelemetryLayer {
    service: &'static str,
}

impl TelemetryLayer {
    /// A layer labelling its metrics and spans `service`.
    pub fn new(service: &'static str) -> Self {
        TelemetryLayer { service }
    }
}

impl<S> tower::Layer<S> for TelemetryLayer {
    type Service = Telemetry<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Telemetry {
            inner,
            service: self.service,
        }
    }
}

#[cfg(test)]
mod tests {
    use tower::{Layer, ServiceExt};

    use super::*;
    use crate::error::Error;
    use crate::testing::{counter_value, with_metrics, Scripted};

    #[test]
    fn calls_and_errors_are_counted_by_service_and_kind() {
        let snapshot = with_metrics(async {
            let inner = Scripted::new([
                Ok(()),
                Err(Error::Closed),
                Err(Error::Invalid("400".into())),
                Ok(()),
            ]);
            let service = TelemetryLayer::new("hubspot").layer(inner);
            for _ in 0..4 {
                let _ = service.clone().oneshot(()).await;
            }
        });
        assert_eq!(
            counter_value(&snapshot, "weld_calls_total", &[("service", "hubspot")]),
            4
        );
        assert_eq!(
            counter_value(
                &snapshot,
                "weld_call_errors_total",
                &[("service", "hubspot"), ("kind", "transient")]
            ),
            1
        );
        assert_eq!(
            counter_value(
                &snapshot,
                "weld_call_errors_total",
                &[("service", "hubspot"), ("kind", "permanent")]
            ),
            1
        );
    }
}

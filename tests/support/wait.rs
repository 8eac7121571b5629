//! Waiting.

use super::*;

/// Polls `probe` every [`POLL`] until it gives a value, and returns it.
///
/// # Panics
///
/// When `within` passes first, naming `what` was awaited.
pub(crate) async fn wait_for<T, F, Fut>(what: &str, within: Duration, mut probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + within;
    loop {
        if let Some(value) = probe().await {
            return value;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {within:?} waiting for {what}"
        );
        tokio::time::sleep(POLL).await;
    }
}

/// Polls `condition` every [`POLL`] until it holds.
///
/// # Panics
///
/// When `within` passes first, naming `what` was awaited.
pub(crate) async fn wait_until<F, Fut>(what: &str, within: Duration, mut condition: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    wait_for(what, within, || {
        let holds = condition();
        async move { holds.await.then_some(()) }
    })
    .await
}

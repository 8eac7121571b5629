//! The signals that stop a service: SIGINT and SIGTERM, shared by every service built on the
//! runtimes.

use tokio_util::sync::CancellationToken;

/// A token cancelled on the first SIGINT (Ctrl-C) or SIGTERM: the services' signal to stop
/// taking work, finish or abandon the page in flight, flush and exit. A second signal exits the
/// process at once, with status 130.
///
/// # Panics
///
/// Outside a tokio runtime, or when the signal handlers cannot be installed.
pub fn shutdown_on_signals() -> CancellationToken {
    let shutdown = CancellationToken::new();
    let cancel = shutdown.clone();
    // Both handlers are installed before this returns: a signal that came before the task first
    // ran would otherwise kill the process the default way, unflushed.
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let mut interrupt =
            signal(SignalKind::interrupt()).expect("cannot install the SIGINT handler");
        let mut terminate =
            signal(SignalKind::terminate()).expect("cannot install the SIGTERM handler");
        tokio::spawn(async move {
            tokio::select! {
                _ = interrupt.recv() => tracing::info!("SIGINT: shutting down"),
                _ = terminate.recv() => tracing::info!("SIGTERM: shutting down"),
            }
            cancel.cancel();
            // An operator who asks twice means it: exit at once. Acknowledged data is already
            // durable, and the outbox keeps what was not acknowledged.
            tokio::select! {
                _ = interrupt.recv() => {}
                _ = terminate.recv() => {}
            }
            tracing::warn!("second signal: exiting without waiting");
            std::process::exit(130);
        });
    }
    #[cfg(not(unix))]
    tokio::spawn(async move {
        let _ = tokio::signal::ctrl_c().await;
        tracing::info!("Ctrl-C: shutting down");
        cancel.cancel();
    });
    shutdown
}

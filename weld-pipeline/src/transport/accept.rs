//! The part of a listener's accept loop that every transport shares: taking the next socket,
//! riding out accept failures, and saying when a period of counted events is over.
//!
//! An accept fails when the process is out of file descriptors (`EMFILE`), and keeps failing
//! until a connection closes. Retrying at once would spin a core on it, and logging each
//! failure would write a line per retry: so a failure waits [`RETRY_AFTER`] before the next
//! accept, the first of every [`SUMMARY_EVERY`] is logged in full, and the others are counted and
//! summarised once per period ([`Tally`]).
//!
//! The same period ends the listener's own tallies (refusals at a limit, failed handshakes):
//! [`Accepts::next`] answers [`Accepted::Summary`] once per period, and the listener logs its
//! counts then. What a listener does with a socket, and what else its loop waits for (a stop, a
//! sweep of idle connections), stays its own.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::time::{Instant, Interval, MissedTickBehavior};

use crate::telemetry::{Tally, SUMMARY_EVERY};

/// How long a failed accept waits before the next: long enough not to spin on a lack of
/// descriptors, short enough that a freed one is taken at once in human terms.
pub const RETRY_AFTER: Duration = Duration::from_millis(50);

/// What [`Accepts::next`] gives.
#[derive(Debug)]
pub enum Accepted {
    /// A new connection, and the address it comes from.
    Socket(TcpStream, SocketAddr),
    /// A period of [`SUMMARY_EVERY`] is over: log the counts of what was tallied in it (the
    /// accept failures' own count is logged already). The first comes at once, with nothing
    /// counted yet.
    Summary,
}

/// A listening socket's accepts, with the failures ridden out and the summary periods marked.
///
/// ```no_run
/// # async fn run(listener: tokio::net::TcpListener) {
/// use weld_pipeline::telemetry::Tally;
/// use weld_pipeline::transport::kit::{Accepted, Accepts};
///
/// let refused = Tally::default();
/// let mut accepts = Accepts::new(listener);
/// loop {
///     match accepts.next().await {
///         Accepted::Socket(socket, remote) => { /* admit it, or count a refusal in `refused` */ }
///         Accepted::Summary => {
///             let more = refused.take();
///             if more > 0 {
///                 tracing::warn!(refused = more, "more connections refused in the last 30 s");
///             }
///         }
///     }
/// }
/// # }
/// ```
#[derive(Debug)]
pub struct Accepts {
    listener: TcpListener,
    /// Failed accepts: the first of every period is logged, the others counted.
    failures: Tally,
    summary: Interval,
    /// After a failed accept, when the next may be tried.
    retry_at: Option<Instant>,
}

impl Accepts {
    /// The accepts of `listener`.
    pub fn new(listener: TcpListener) -> Self {
        let mut summary = tokio::time::interval(SUMMARY_EVERY);
        summary.set_missed_tick_behavior(MissedTickBehavior::Delay);
        Accepts {
            listener,
            failures: Tally::default(),
            summary,
            retry_at: None,
        }
    }

    /// The next socket, or the end of a summary period, whichever comes first. A failed accept
    /// is logged (the first of a period) or counted, and retried after [`RETRY_AFTER`].
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: a listener may `select!` on it beside its stop. No socket is lost, and a
    /// retry still waiting keeps its time.
    pub async fn next(&mut self) -> Accepted {
        loop {
            tokio::select! {
                _ = self.summary.tick() => {
                    let failed = self.failures.take();
                    if failed > 0 {
                        tracing::warn!(failed, "more accepts failed in the last 30 s");
                    }
                    return Accepted::Summary;
                }
                accepted = accept_after(&self.listener, self.retry_at) => match accepted {
                    Ok((socket, remote)) => {
                        self.retry_at = None;
                        return Accepted::Socket(socket, remote);
                    }
                    Err(error) => {
                        // Out of file descriptors, say: wait a moment rather than spin; told
                        // once per period, however long its cause lasts.
                        if self.failures.record() {
                            tracing::warn!(error = %error, "accept failed (out of descriptors?); retrying every 50 ms, more are counted");
                        }
                        self.retry_at = Some(Instant::now() + RETRY_AFTER);
                    }
                },
            }
        }
    }
}

/// Accepts on `listener`, once `retry_at` (if any) has passed.
async fn accept_after(
    listener: &TcpListener,
    retry_at: Option<Instant>,
) -> std::io::Result<(TcpStream, SocketAddr)> {
    if let Some(at) = retry_at {
        tokio::time::sleep_until(at).await;
    }
    listener.accept().await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_period_ends_at_once_then_every_summary_period_and_sockets_come_between() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let mut accepts = Accepts::new(listener);
        assert!(matches!(accepts.next().await, Accepted::Summary));
        let _client = TcpStream::connect(addr).await.unwrap();
        let next = tokio::time::timeout(Duration::from_secs(5), accepts.next())
            .await
            .unwrap();
        assert!(matches!(next, Accepted::Socket(..)), "{next:?}");
        let started = Instant::now();
        assert!(matches!(accepts.next().await, Accepted::Summary));
        assert!(started.elapsed() <= SUMMARY_EVERY);
    }
}

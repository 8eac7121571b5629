//! Test seams shared by this crate's tests and by crates built on it (feature `testing`).
//!
//! | seam | what it is |
//! |---|---|
//! | [`Scripted`] | a tower service that answers from a script and records when it was called |
//! | [`FailingSink`] | a sink that fails the commits you tell it to, around a [`MemorySink`](crate::MemorySink) |
//! | [`CountingSource`], [`CountingSources`] | a source that counts the pages it starts and can be slowed down, and its `generator` factory |
//! | [`with_metrics`], [`global_counters`], [`counter_value`] | the counters a test recorded |
//! | [`ControllerProcess`], [`WorkerProcess`], [`Network`] (feature `sled`) | each runtime in its own tokio runtime, as if in its own process, on any transport |
//! | [`flows`] and [`runtime_flows!`](crate::runtime_flows) (feature `sled`) | the runtime flows every transport must pass |
//! | [`stores`] and [`store_conformance!`](crate::store_conformance) | the conformance suite every [`StreamStore`](crate::store::StreamStore) must pass |
//! | [`Answering`], [`still_flowing`] | a handler that answers, and the check that a connection still carries requests |
//! | [`bad_input`] and [`transport_bad_input!`](crate::transport_bad_input) | the bad input every network transport must survive |

mod metrics;
mod peers;
#[cfg(feature = "sled")]
mod processes;
mod scripted;
mod sinks;
mod sources;

pub mod bad_input;
#[cfg(feature = "sled")]
pub mod flows;
pub mod stores;

pub use self::metrics::{counter_value, global_counters, with_metrics, CounterValue};
pub use peers::{still_flowing, Answering};
#[cfg(feature = "sled")]
pub use processes::{stored_ids, ControllerProcess, Network, PeerOf, WorkerProcess};
pub use scripted::Scripted;
pub use sinks::FailingSink;
pub use sources::{CountingSource, CountingSources};

use std::time::Duration;

/// Waits, in real time, until `condition` holds, checking every 10 ms.
///
/// # Panics
///
/// When it does not hold within `deadline`, naming `what`.
pub fn wait_until(what: &str, deadline: Duration, mut condition: impl FnMut() -> bool) {
    let until = std::time::Instant::now() + deadline;
    while !condition() {
        assert!(
            std::time::Instant::now() < until,
            "timed out waiting until {what}"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

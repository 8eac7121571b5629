//! The runtimes of the two services: a [`Controller`] (data-streams' logic) and a [`Worker`].
//!
//! Both are library types: a service embeds one, hands it a [`Transport`](crate::Transport),
//! and wires its own API or configuration to it. The controller runs on any
//! [`StreamStore`](crate::store::StreamStore); the worker keeps its outbox on sled (feature
//! `sled`).
//!
//! ```text
//! Controller                                         Worker
//!  StreamStore: registry + records + runs             outbox (sled)
//!  accept worker  <---------- hello ----------------  connect (with backoff)
//!  assign stream  ---------- Start{cfg, checkpoint} ->  scheduler: run every interval
//!                                                       source -> transforms -> outbox
//!  commit (atomic, durable) <--- Deliver(batch) ------  courier: up to N in flight, in order
//!  ack            ---------- Ack{batch} ------------->  outbox entry removed
//!  worker gone: re-assign its streams to others       controller gone: outbox buffers, reconnect
//! ```

mod controller;
mod signals;
#[cfg(feature = "sled")]
mod worker;

pub use signals::shutdown_on_signals;

pub use controller::{ConnectedWorker, Controller, OutboxDepth, StreamState, StreamStatus};
#[cfg(feature = "sled")]
pub use worker::{Worker, WorkerConfig};

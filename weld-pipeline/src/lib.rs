//! Reliable, scheduled fetch -> transform -> store pipelines between services.
//!
//! `weld-pipeline` moves records from an external API into your service's store on a schedule,
//! and never loses one: a batch is acknowledged only after it is committed together with the
//! checkpoint it reached, and redelivering it is harmless. It is the core of two reference
//! services, a controller (**data-streams**) and a **worker**, and it is meant to be embedded in
//! yours.
//!
//! Non-goals: it is not a general stream processor (no joins, windows or exactly-once output to
//! arbitrary systems), and it brings no consensus of its own: many workers on many machines
//! connect to a controller, and several controller replicas share one database that decides
//! which of them runs each stream ([`lease`]); beyond that, use a broker-backed transport.
//!
//! # The flow of one run
//!
//! ```text
//! Scheduler --every interval--> Pipeline::run(checkpoint)
//!   Source: page after page from the checkpoint, behind tower layers (rate limit, retry, timeout)
//!     -> Batch{stream, run_id, seq, cursor, records}   (records' JSON parsed once, carried as bytes)
//!   transforms (map, filter, rename / drop / redact fields)
//!   Sink::commit: records + cursor + batch identity in one atomic, idempotent step
//!     (locally, or on the controller through a Transport: Deliver -> Ack)
//!   checkpoint advances only once the commit succeeded
//! ```
//!
//! | concept | where |
//! |---|---|
//! | [`Record`], [`Batch`], [`Checkpoint`], [`StreamName`], [`RunId`] | the data model |
//! | [`message`] | what a controller and a worker say to each other |
//! | [`encoding`] | the one binary encoding of messages and batches |
//! | [`Source`], [`source::Pages`], [`source::Generator`] | where records come from |
//! | [`source::SourceKinds`], [`source::Sources`] | sources by kind: checked on data-streams, built on workers |
//! | [`Sink`], [`MemorySink`] | where they are committed |
//! | [`transport`] ([`Transport`], [`transport::MemoryTransport`], [`transport::kit`]) | how services talk, and the plumbing every network transport shares |
//! | [`middleware`] | retry, timeout, rate limit, concurrency limit, telemetry |
//! | [`transform`] | record transforms: map, filter, rename / drop / redact fields |
//! | [`Scheduler`], [`Pipeline`], [`PipelineJob`] | running it all |
//! | [`store`] ([`store::StreamStore`]; [`store::SledStore`] with feature `sled`, default) | data-streams' storage: registry, records, checkpoints, ledger, run history; what "durable" means |
//! | [`outbox`] (feature `sled`) | the worker's bounded queue of unacknowledged batches, in memory, on disk once they wait |
//! | [`runtime`] ([`runtime::Controller`], [`runtime::Worker`]) | the two services' logic, to embed |
//! | [`lease`] ([`lease::Leasing`]) | several controller replicas on one shared store: who runs which stream |
//! | [`Error`], [`ErrorKind`] | what to do when it fails: retry, stop, or fix the bug |
//!
//! # Example
//!
//! A toy source of generated contacts, paced and retried, into the in-memory sink, run by the
//! scheduler until the first run has committed:
//!
//! ```
//! use std::sync::Arc;
//! use std::time::Duration;
//! use tower::ServiceBuilder;
//! use weld_pipeline::middleware::{RetryLayer, RetryPolicy, TimeoutLayer};
//! use weld_pipeline::source::{Generator, Pages};
//! use weld_pipeline::{Checkpoint, MemorySink, Pipeline, PipelineJob, RunOutcome, Scheduler, StreamName};
//!
//! # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
//! let fetch = ServiceBuilder::new()
//!     .layer(RetryLayer::new(RetryPolicy::default()))
//!     .layer(TimeoutLayer::new(Duration::from_secs(30)))
//!     .service(Generator::contacts(1_000).page_size(100));
//! let sink = MemorySink::new();
//! let job = Arc::new(PipelineJob::new(Pipeline::new(Pages::new(fetch), sink.clone()), Checkpoint::start()));
//! let mut reports = job.reports();
//!
//! let stream = StreamName::new("contacts")?;
//! let scheduler = Scheduler::new();
//! scheduler.start(stream.clone(), Duration::from_secs(300), job);
//!
//! let report = reports.wait_for(Option::is_some).await.unwrap().clone().unwrap();
//! assert_eq!(report.outcome, RunOutcome::Succeeded);
//! assert_eq!(sink.live_count(&stream), 1_000);
//! scheduler.stop(&stream).await;
//! # Ok::<_, weld_pipeline::Error>(())
//! # }).unwrap();
//! ```

pub mod batch;
pub mod checkpoint;
pub mod encoding;
pub mod error;
mod heal;
pub mod lease;
pub mod message;
pub mod middleware;
#[cfg(feature = "sled")]
pub mod outbox;
pub mod pipeline;
pub mod record;
pub mod runtime;
pub mod scheduler;
pub mod sink;
pub mod source;
pub mod store;
pub mod stream;
pub mod sync;
pub mod telemetry;
#[cfg(any(test, feature = "testing"))]
pub mod testing;
pub mod transform;
pub mod transport;

pub use batch::{Batch, BatchId};
pub use checkpoint::Checkpoint;
pub use error::{BoxError, Classify, DecodeError, Error, ErrorKind};
pub use message::{
    Commit, Event, Hello, Message, Request, Response, RunFinished, RunOutcome, SourceSpec, Start,
    StreamConfig, PROTOCOL_VERSION,
};
pub use pipeline::{Pipeline, PipelineJob, RunReport};
pub use record::{Json, Record, Timestamp};
pub use scheduler::{Job, Scheduler};
pub use sink::{MemorySink, Sink};
pub use source::{BatchStream, Page, PageRequest, RunContext, Source};
pub use stream::{RunId, StreamName};
pub use transport::{Handler, Listener, Peer, Transport};

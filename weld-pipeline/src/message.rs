//! What the two services say to each other.
//!
//! A controller (data-streams) and a worker talk in three shapes, which every
//! [`Transport`](crate::transport) carries: requests that get exactly one response, matched by a
//! correlation id; responses; and one-way events. The worker introduces itself with a [`Hello`]
//! during the transport's handshake, before any of these.
//!
//! ```text
//! controller                                   worker
//!   Request::Start{stream, config, checkpoint, epoch} -> Response::Started
//!   Request::Stop{stream}                       ->      Response::Stopped   (after the page boundary)
//!   Response::Ack{batch, commit}                <-      Request::Deliver(Batch)
//!   Response::Inventory(page)                   <-      Request::Inventory{stream, after, limit}
//!   Response::Described                         <-      Request::Describe{stream, schema}
//!                                               <-      Event::RunStarted / Event::RunFinished
//!                                               <-      Event::OutboxDepth  (every 2 s)
//! ```

use serde::{Deserialize, Serialize};

use crate::batch::{Batch, BatchId};
use crate::checkpoint::Checkpoint;
use crate::error::{Error, ErrorKind};
use crate::record::Timestamp;
/// A source kind and its parameters: defined with the source kinds that read it, and said here
/// too, since every stream's configuration carries one.
pub use crate::source::SourceSpec;
use crate::source::{HeldPage, Schema};
use crate::stream::{RunId, StreamName};
use crate::transform::FieldTransform;

/// The protocol version this build speaks. A peer with another version is refused at hello.
///
/// 2: `RunFinished` carries the run's duration and fetch errors; `OutboxDepth` is new.
/// 3: `Start` and every batch carry the stream's epoch (a resync raises it).
/// 4: `Describe` tells the controller's store a stream's fields.
/// 5: `Start` and every batch carry the lease epoch of the replica that started the stream.
pub const PROTOCOL_VERSION: u16 = 5;

/// A worker's introduction, sent once when it connects.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Hello {
    /// A stable id for logs and assignment.
    pub worker_id: String,
    /// The protocol version the worker speaks ([`PROTOCOL_VERSION`]).
    pub protocol_version: u16,
    /// The source kinds it can run (`"hubspot"`, ...).
    pub sources: Vec<String>,
}

impl Hello {
    /// A hello for this build's protocol version.
    pub fn new(worker_id: impl Into<String>, sources: Vec<String>) -> Self {
        Hello {
            worker_id: worker_id.into(),
            protocol_version: PROTOCOL_VERSION,
            sources,
        }
    }
}

/// A stream's configuration: what to pull, how often, and what to change on the way.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StreamConfig {
    /// Where the records come from: a source kind and its parameters.
    pub source: SourceSpec,
    /// Seconds between the starts of two runs.
    pub interval_secs: u64,
    /// Field transforms applied to every record, in order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub transforms: Vec<FieldTransform>,
}

/// A controller's order to run a stream every interval, from a checkpoint.
#[derive(Clone, Debug, PartialEq)]
pub struct Start {
    /// The stream to run (a worker that already runs it keeps its own position).
    pub stream: StreamName,
    /// Its configuration. A worker already running the stream applies it from the next run.
    pub config: StreamConfig,
    /// Where the next run starts: the last committed checkpoint.
    pub checkpoint: Checkpoint,
    /// The stream's epoch, raised by every resync: the worker stamps it on the batches of the
    /// runs this start begins. A worker holding the stream at a lower epoch drops its own
    /// position and starts from `checkpoint`; the controller never moves the checkpoint for a
    /// batch of an older epoch.
    pub epoch: u64,
    /// The epoch of the lease under which the controller replica that sent it runs the stream
    /// ([`crate::lease`]); 0 from a controller on its own. The worker stamps it on the batches
    /// of the runs this start begins, and a replica commits a batch only under the lease it was
    /// made for.
    pub lease: u64,
}

/// What a sink did with a batch. Both outcomes are acknowledgements: a replay is not an error.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Commit {
    /// The batch was new; its records and cursor were committed.
    Stored {
        /// Records written (new or newer than what was stored).
        records: u64,
    },
    /// The batch's identity was already committed; nothing was written.
    Replayed,
}

/// How a run ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RunOutcome {
    /// The last batch was committed.
    Succeeded,
    /// The run stopped on an error that retrying could not fix.
    Failed {
        /// What kind of error ended it.
        kind: ErrorKind,
        /// The error, as text for the run history.
        error: String,
    },
    /// A stop ended it at a page boundary.
    Cancelled,
}

/// A worker's report that a run ended: the [`RunReport`](crate::RunReport) of the run as it
/// travels, without the checkpoint (the controller's own moved with its commits).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RunFinished {
    /// The stream that ran.
    pub stream: StreamName,
    /// The run, as its batches' identities carry it.
    pub run_id: RunId,
    /// How it ended.
    pub outcome: RunOutcome,
    /// Batches the run committed.
    pub batches: u64,
    /// Records in those batches.
    pub records: u64,
    /// How long the run took, in milliseconds.
    pub duration_ms: u64,
    /// Page fetches that failed after their retries (a run stops at the first, so 0 or 1).
    pub fetch_errors: u64,
}

/// A request: it gets exactly one [`Response`].
#[derive(Clone, Debug, PartialEq)]
pub enum Request {
    /// Controller to worker: run this stream.
    Start(Start),
    /// Controller to worker: stop this stream at the next page boundary.
    Stop {
        /// The stream to stop; stopping one that does not run is not an error.
        stream: StreamName,
    },
    /// Worker to controller: commit this batch.
    Deliver(Batch),
    /// Worker to controller: a page of what the store holds of a stream this worker runs (ids,
    /// versions, archived flags), for a source's reconciliation.
    Inventory {
        /// The stream.
        stream: StreamName,
        /// A previous page's `next`.
        after: Option<String>,
        /// At most this many records.
        limit: u32,
    },
    /// Worker to controller: the fields of a stream this worker runs, as its source defines
    /// them, for the store (see [`Catalog`](crate::source::Catalog)).
    Describe {
        /// The stream.
        stream: StreamName,
        /// Its fields.
        schema: Schema,
    },
}

/// The answer to a [`Request`].
#[derive(Clone, Debug, PartialEq)]
pub enum Response {
    /// The stream is scheduled.
    Started,
    /// The stream is stopped: no source call starts after this response.
    Stopped,
    /// The batch is committed (or was already).
    Ack {
        /// The identity of the batch acknowledged: the worker removes that batch, no other.
        batch: BatchId,
        /// What the sink did.
        commit: Commit,
    },
    /// A page of what the store holds ([`Request::Inventory`]).
    Inventory(HeldPage),
    /// The store took the schema ([`Request::Describe`]).
    Described,
    /// The request was refused.
    Refused {
        /// What the requester should do next.
        kind: ErrorKind,
        /// Why, for the requester's log and the stream's last error.
        message: String,
    },
}

impl Response {
    /// The refusal for an error.
    pub fn refused(error: &Error) -> Self {
        Response::Refused {
            kind: error.kind(),
            message: error.to_string(),
        }
    }

    /// A refusal turned back into an error; other responses pass through.
    ///
    /// # Errors
    ///
    /// The refusal, with the kind the responder gave it.
    pub fn into_result(self) -> Result<Response, Error> {
        match self {
            Response::Refused { kind, message } => Err(Error::new(kind, message)),
            other => Ok(other),
        }
    }
}

/// A one-way message: no response, no delivery guarantee beyond the connection's.
#[derive(Clone, Debug, PartialEq)]
pub enum Event {
    /// A worker began a run.
    RunStarted {
        /// The stream whose run began.
        stream: StreamName,
        /// The run: the controller opens its history entry.
        run_id: RunId,
        /// When it started (wall clock).
        at: Timestamp,
    },
    /// A worker's run ended.
    RunFinished(RunFinished),
    /// How much a worker's outbox holds, sent every few seconds while connected, so the
    /// controller can show a backlog building up before it becomes an outage.
    OutboxDepth {
        /// Batches waiting for their ack.
        batches: u64,
        /// Their encoded size in bytes.
        bytes: u64,
    },
}

/// Any message, as a transport frames it.
#[derive(Clone, Debug, PartialEq)]
pub enum Message {
    /// A worker's introduction, the first message of a connection.
    Hello(Hello),
    /// A request.
    Request(Request),
    /// A response.
    Response(Response),
    /// An event.
    Event(Event),
}

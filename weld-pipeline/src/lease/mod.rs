//! Leases: which of several controller replicas on one shared store runs each stream.
//!
//! One controller is enough for many workers; a second one is for when the first dies. Several
//! replicas of a controller share one store (PostgreSQL, in `weld-pipeline-postgres`), and each
//! running stream is run by the replica holding its **lease**: a claim with an owner, an expiry
//! and an epoch, kept in the shared store itself. No consensus of our own: the database's row
//! locks decide, as Oban and Que decide which node runs a job.
//!
//! ```text
//! replica A                         shared store                         replica B
//!  every ttl/5: renew what it holds ---> weld.leases (owner, epoch, expiry) <--- renew
//!               claim what a local worker can run (FOR UPDATE SKIP LOCKED)
//!  start/stop/resync/delete ---> registry ---NOTIFY---> B re-reads that stream: starts,
//!                                                       stops or restarts it on its worker
//!  A dies or freezes: its leases lapse after ttl; B claims them (epoch + 1)
//!  A wakes: its renewal returns less; it stops those streams; its commits are fenced
//! ```
//!
//! The [`Controller`](crate::runtime::Controller) runs the loop when its storage is a
//! [replica's](crate::store::Storage::replica); a store that can be shared implements
//! [`Leasing`], and fences its commits with the same leases, so a replica that lost a lease
//! cannot commit a batch of its stream even before it has noticed.
//!
//! `MemoryLeases` (feature `testing`) are the same leases in one process's memory, on tokio's
//! clock: several controllers of one test share a `LeaseTable`, and a paused clock drives
//! their expiry.

#[cfg(any(test, feature = "testing"))]
mod memory;

#[cfg(any(test, feature = "testing"))]
pub use memory::{LeaseTable, MemoryLeases};

use std::collections::HashMap;
use std::time::Duration;

use async_trait::async_trait;
use futures::stream::BoxStream;

use crate::error::Error;
use crate::stream::StreamName;

/// A lease this replica holds: the stream, and the epoch it was claimed at.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Lease {
    /// The stream.
    pub stream: StreamName,
    /// Grows with every fresh claim of the stream's lease: a replica holding an older epoch
    /// holds nothing.
    pub epoch: u64,
}

/// Who holds a stream's lease now, as the shared store says.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Holder {
    /// The replica holding it.
    pub owner: String,
    /// Its epoch.
    pub epoch: u64,
    /// The worker the owner runs it on, once it has given it to one.
    pub worker: Option<String>,
}

/// A replica alive now, as its last [heartbeat](Leasing::heartbeat) said.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Replica {
    /// Its id.
    pub id: String,
    /// The workers connected to it.
    pub workers: usize,
}

/// What a replica hears of the registry its peers write.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RegistryChange {
    /// This stream's entry changed (started, stopped, resynced, its error recorded) or it was
    /// deleted: read it again.
    Stream(StreamName),
    /// Changes may have been missed (the listening connection was made again): read
    /// everything.
    Reconnected,
}

/// The leases of one replica on a shared store.
///
/// # Contract
///
/// - At most one replica holds a stream's lease at a time; a lease not renewed within
///   [`ttl`](Leasing::ttl) lapses, and may then be claimed by another at a higher epoch.
/// - [`epoch_of`](Leasing::epoch_of) answers from what the last claim or renewal returned, without a
///   round trip: it may be stale by up to one renewal period, which is why the store's commits
///   check the lease again in their own transaction.
/// - Times are the shared store's own clock, so replicas' clocks need not agree.
///
/// # Errors
///
/// Every method that reaches the store fails transiently when it cannot be reached; the
/// controller tries again at its next tick, and meanwhile its leases lapse by themselves.
///
/// # Cancel safety
///
/// Every future may be dropped: a claim or renewal not completed leaves the local view as it
/// was, and the store's row as the database left it (committed or not).
#[async_trait]
pub trait Leasing: Send + Sync + std::fmt::Debug + 'static {
    /// This replica's id, as its leases name it.
    fn replica(&self) -> &str;

    /// How long a lease lasts after its last claim or renewal.
    fn ttl(&self) -> Duration;

    /// The epoch at which this replica holds `stream`'s lease, as its last claim or renewal
    /// said; `None` when it does not hold it.
    fn epoch_of(&self, stream: &StreamName) -> Option<u64>;

    /// Whether this replica holds `stream`'s lease, as its last claim or renewal said.
    fn is_held(&self, stream: &StreamName) -> bool {
        self.epoch_of(stream).is_some()
    }

    /// Commits of this replica refused because it no longer held the stream's lease.
    fn refused_commits(&self) -> u64;

    /// Claims at most `limit` of `wanted` whose lease is free or has lapsed, and renews those
    /// of them it holds already; returns every one of `wanted` it holds afterwards.
    async fn claim(&self, wanted: &[StreamName], limit: usize) -> Result<Vec<Lease>, Error>;

    /// Extends every lease this replica still holds; returns them. A lease that lapsed is not
    /// renewed (another replica may hold it now).
    async fn renew(&self) -> Result<Vec<Lease>, Error>;

    /// Records the worker this replica runs `stream` on (`None`: on none now), for every
    /// replica's status of the stream.
    async fn run_on(&self, stream: &StreamName, worker: Option<&str>) -> Result<(), Error>;

    /// Gives up `stream`'s lease, if this replica holds it: another may claim it at once.
    async fn release(&self, stream: &StreamName) -> Result<(), Error>;

    /// Gives up every lease this replica holds, and its heartbeat (a clean shutdown); returns
    /// how many leases.
    async fn release_all(&self) -> Result<u64, Error>;

    /// Says this replica is alive with `workers` connected workers (until a time-to-live from
    /// now), and returns every replica alive, itself included: what each one's fair share of
    /// the streams is reckoned from.
    async fn heartbeat(&self, workers: usize) -> Result<Vec<Replica>, Error>;

    /// Every stream's live holder, by stream.
    async fn holders(&self) -> Result<HashMap<StreamName, Holder>, Error>;

    /// `stream`'s live holder, if it has one.
    async fn holder(&self, stream: &StreamName) -> Result<Option<Holder>, Error>;

    /// The registry changes every replica makes (this one's too), as they are announced; a
    /// periodic re-read covers any that are lost, so a lost one only delays.
    fn watch(&self) -> BoxStream<'static, RegistryChange>;
}

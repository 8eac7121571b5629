//! What the controller tells of its streams and workers: a stream's state and status (its
//! registry entry, where it runs, what its store holds), and the workers connected now.

use std::collections::HashMap;

use serde::Serialize;

use super::Controller;
use crate::error::Error;
use crate::lease::Holder;
use crate::message::StreamConfig;
use crate::record::Timestamp;
use crate::store::{Counts, Desired, LastError, RunRecord, StoreHealth, StreamEntry};
use crate::stream::StreamName;
use crate::transport::Peer;

/// Where a stream stands, as the API shows it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum StreamState {
    /// Assigned to a connected worker, which runs it every interval.
    Running,
    /// Should run, but no connected worker can take it yet.
    Pending,
    /// Stopped; its data stays.
    Stopped,
}

/// A stream's status: its registry entry, where it runs, and what its store holds.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct StreamStatus {
    /// The stream's name.
    pub name: StreamName,
    /// Whether it runs, waits for a worker, or is stopped.
    pub state: StreamState,
    /// Its configuration, with its source's defaults written in.
    pub config: StreamConfig,
    /// The id of the worker running it, while one does.
    pub worker: Option<String>,
    /// The replica whose worker runs it, when the controller is one of several replicas
    /// ([`Storage::replica`](crate::store::Storage::replica)); `None` for a controller on its own.
    pub replica: Option<String>,
    /// Live and archived records stored.
    pub counts: Counts,
    /// Its newest run, running or ended.
    pub last_run: Option<RunRecord>,
    /// When its next run is due (its last run's start plus its interval), while it runs; while
    /// it is held back after the store refused its batches, when it is offered to a worker again.
    pub next_run_at: Option<Timestamp>,
    /// The latest error its runs reported, kept until a newer one replaces it or a run of it
    /// completes (its last batch committed).
    pub last_error: Option<LastError>,
}

/// A worker connected now, as the controller sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConnectedWorker {
    /// Its id ([`Hello::worker_id`](crate::message::Hello)).
    pub id: String,
    /// The source kinds it runs.
    pub sources: Vec<String>,
    /// The streams assigned to it, by name.
    pub streams: Vec<StreamName>,
    /// When this connection began.
    pub since: Timestamp,
    /// What its outbox held at its latest report (every few seconds), `None` before the first.
    pub outbox: Option<OutboxDepth>,
}

/// How much a worker's outbox holds: batches waiting for their ack.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct OutboxDepth {
    /// Batches waiting for their ack.
    pub batches: u64,
    /// Their encoded size in bytes.
    pub bytes: u64,
}

impl<P: Peer> Controller<P> {
    /// The number of connected workers.
    pub fn workers(&self) -> usize {
        self.lock().workers()
    }

    /// The workers connected now, by id, with their sources, streams and outbox depth.
    pub fn connected_workers(&self) -> Vec<ConnectedWorker> {
        self.lock().connected()
    }

    /// A stream's status, `None` if it does not exist.
    ///
    /// # Errors
    ///
    /// When the registry or store cannot be read.
    pub async fn status(&self, name: &StreamName) -> Result<Option<StreamStatus>, Error> {
        let Some(entry) = self.store.stream(name).await? else {
            return Ok(None);
        };
        let holder = match &self.leases {
            Some(leases) => leases.holder(name).await?,
            None => None,
        };
        self.status_of(entry, holder.as_ref()).await.map(Some)
    }

    pub(super) async fn status_of(
        &self,
        mut entry: StreamEntry,
        holder: Option<&Holder>,
    ) -> Result<StreamStatus, Error> {
        // While storage fails, a stream that should run says why it does not move.
        if let (Desired::Running, StoreHealth::Failed { since, reason }) =
            (entry.desired, self.store.health())
        {
            entry.last_error = Some(LastError {
                at: since,
                message: format!("storage is failing (healing by itself): {reason}"),
            });
        }
        let name = &entry.name;
        let (worker, replica) = self.placement(name, holder);
        let state = match (entry.desired, &worker) {
            (Desired::Stopped, _) => StreamState::Stopped,
            (Desired::Running, Some(_)) => StreamState::Running,
            (Desired::Running, None) => StreamState::Pending,
        };
        let last_run = self.store.runs(name, 1).await?.into_iter().next();
        let hold = self.lock().hold_of(name);
        let next_run_at = match (state, &last_run) {
            // Held back after its batches were refused: when it is offered again.
            (StreamState::Pending, _) if hold.is_some() => hold.map(|h| h.until_wall),
            (StreamState::Running, Some(run)) => {
                let interval = i64::try_from(entry.config.interval_secs.saturating_mul(1000))
                    .unwrap_or(i64::MAX);
                Some(Timestamp::from_millis(
                    run.started_at.as_millis().saturating_add(interval),
                ))
            }
            _ => None,
        };
        Ok(StreamStatus {
            counts: self.store.counts(name).await?,
            name: entry.name,
            state,
            config: entry.config,
            worker,
            replica,
            last_run,
            next_run_at,
            last_error: entry.last_error,
        })
    }

    /// Every stream's status, by name.
    ///
    /// # Errors
    ///
    /// When the registry or store cannot be read.
    pub async fn streams(&self) -> Result<Vec<StreamStatus>, Error> {
        let holders = match &self.leases {
            Some(leases) => leases.holders().await?,
            None => HashMap::new(),
        };
        let mut statuses = Vec::new();
        for entry in self.store.streams().await? {
            let holder = holders.get(&entry.name);
            statuses.push(self.status_of(entry, holder).await?);
        }
        Ok(statuses)
    }
}

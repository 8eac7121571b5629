//! Which connected worker runs which stream: the controller's one piece of state that is not in
//! the store (it is rebuilt from the workers that connect).

use std::collections::{HashMap, HashSet};

use super::{ConnectedWorker, OutboxDepth};
use crate::record::Timestamp;
use crate::stream::StreamName;
use crate::transport::Peer;

/// One connected worker.
pub(super) struct Connected<P> {
    pub(super) peer: P,
    /// Tells this connection from a later one of the same worker.
    pub(super) serial: u64,
    /// The streams assigned to it.
    pub(super) streams: HashSet<StreamName>,
    /// When it connected.
    pub(super) since: Timestamp,
    /// What its outbox held at its latest report.
    pub(super) outbox: Option<OutboxDepth>,
}

/// Connected workers and the streams assigned to each.
pub(super) struct Assignments<P> {
    workers: HashMap<String, Connected<P>>,
    streams: HashMap<StreamName, String>,
    serial: u64,
}

impl<P: Peer> Assignments<P> {
    pub(super) fn new() -> Self {
        Assignments {
            workers: HashMap::new(),
            streams: HashMap::new(),
            serial: 0,
        }
    }

    pub(super) fn workers(&self) -> usize {
        self.workers.len()
    }

    /// The connected workers, by id.
    pub(super) fn connected(&self) -> Vec<ConnectedWorker> {
        let mut workers: Vec<ConnectedWorker> = self
            .workers
            .iter()
            .map(|(id, worker)| {
                let mut streams: Vec<StreamName> = worker.streams.iter().cloned().collect();
                streams.sort();
                ConnectedWorker {
                    id: id.clone(),
                    sources: worker.peer.hello().sources.clone(),
                    streams,
                    since: worker.since,
                    outbox: worker.outbox,
                }
            })
            .collect();
        workers.sort_by(|a, b| a.id.cmp(&b.id));
        workers
    }

    /// Keeps a worker's report of its outbox.
    pub(super) fn report_outbox(&mut self, worker_id: &str, depth: OutboxDepth) {
        if let Some(worker) = self.workers.get_mut(worker_id) {
            worker.outbox = Some(depth);
        }
    }

    /// The worker a stream is assigned to.
    pub(super) fn worker_of(&self, stream: &StreamName) -> Option<&String> {
        self.streams.get(stream)
    }

    /// Whether a connected worker runs source kind `kind`.
    pub(super) fn can_run(&self, kind: &str) -> bool {
        self.workers
            .values()
            .any(|w| w.peer.hello().sources.iter().any(|s| s == kind))
    }

    /// Every stream assigned to a worker.
    pub(super) fn assigned(&self) -> Vec<StreamName> {
        self.streams.keys().cloned().collect()
    }

    /// The peer of the worker a stream is assigned to.
    pub(super) fn peer_of(&self, stream: &StreamName) -> Option<(String, P)> {
        let id = self.streams.get(stream)?;
        let worker = self.workers.get(id)?;
        Some((id.clone(), worker.peer.clone()))
    }

    /// Registers a connection; a previous one of the same worker (a reconnect noticed before
    /// the old connection was) is closed and loses its streams. Returns the new serial.
    pub(super) fn connect(&mut self, worker_id: &str, peer: P) -> u64 {
        self.serial += 1;
        let connected = Connected {
            peer,
            serial: self.serial,
            streams: HashSet::new(),
            since: Timestamp::now(),
            outbox: None,
        };
        if let Some(old) = self.workers.insert(worker_id.to_owned(), connected) {
            old.peer.close();
            for stream in old.streams {
                self.streams.remove(&stream);
            }
        }
        self.serial
    }

    /// Forgets a connection, if it is still the worker's current one; returns its streams.
    pub(super) fn disconnect(
        &mut self,
        worker_id: &str,
        serial: u64,
    ) -> Option<HashSet<StreamName>> {
        if self.workers.get(worker_id)?.serial != serial {
            return None;
        }
        let connected = self.workers.remove(worker_id)?;
        for stream in &connected.streams {
            self.streams.remove(stream);
        }
        Some(connected.streams)
    }

    /// Assigns a stream to its worker, or to the least loaded worker that runs `kind`; returns
    /// the worker and its peer, `None` when no connected worker can run it.
    pub(super) fn assign(&mut self, stream: &StreamName, kind: &str) -> Option<(String, P)> {
        let worker_id = self.streams.get(stream).cloned().or_else(|| {
            self.workers
                .iter()
                .filter(|(_, w)| w.peer.hello().sources.iter().any(|s| s == kind))
                .min_by_key(|(id, w)| (w.streams.len(), (*id).clone()))
                .map(|(id, _)| id.clone())
        })?;
        let worker = self.workers.get_mut(&worker_id)?;
        worker.streams.insert(stream.clone());
        let peer = worker.peer.clone();
        self.streams.insert(stream.clone(), worker_id.clone());
        Some((worker_id, peer))
    }

    /// Takes a stream off a worker, if it is still that worker's.
    pub(super) fn unassign(&mut self, stream: &StreamName, worker_id: &str) {
        if self.streams.get(stream).map(String::as_str) == Some(worker_id) {
            self.streams.remove(stream);
        }
        if let Some(worker) = self.workers.get_mut(worker_id) {
            worker.streams.remove(stream);
        }
    }
}

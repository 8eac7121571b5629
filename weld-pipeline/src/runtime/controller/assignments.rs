//! Which connected worker runs which stream: the controller's one piece of state that is not in
//! the store (it is rebuilt from the workers that connect).

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use tokio::time::Instant;

use super::{ConnectedWorker, OutboxDepth};
use crate::middleware::ExponentialBackoff;
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
    /// Streams held back after the store refused their batches for good, until the hold's end.
    held: HashMap<StreamName, Hold>,
    /// The waits between a stream's refusals: 1 s doubling to 5 min, half of it jittered.
    backoff: ExponentialBackoff,
}

/// A stream whose batches the store refused for good: it is offered to no worker until `until`
/// (each refusal in a row doubles the wait), so a batch that can never be committed is fetched
/// again a few times an hour, not in a loop.
#[derive(Clone, Copy, Debug)]
pub(super) struct Hold {
    /// Refusals in a row.
    pub(super) refusals: u32,
    /// The end of the hold.
    pub(super) until: Instant,
    /// The same, on the wall clock, for the stream's status.
    pub(super) until_wall: Timestamp,
}

impl<P: Peer> Assignments<P> {
    pub(super) fn new() -> Self {
        Assignments {
            workers: HashMap::new(),
            streams: HashMap::new(),
            serial: 0,
            held: HashMap::new(),
            backoff: ExponentialBackoff::new(Duration::from_secs(1), Duration::from_secs(300)),
        }
    }

    /// Holds `stream` back after a refusal of its batches by the store, if it was still assigned
    /// to `worker_id` (the first refusal of a delivery's batches in flight, not each of them);
    /// takes it off the worker. Returns the hold when this refusal made it.
    pub(super) fn hold_back(&mut self, stream: &StreamName, worker_id: &str) -> Option<Hold> {
        if !self.unassign(stream, worker_id) {
            return None;
        }
        let refusals = self.held.get(stream).map_or(0, |h| h.refusals) + 1;
        // Half the ceiling and a random half more: never (almost) no wait, as full jitter
        // may draw, and streams refused together do not come back together.
        let ceiling = self.backoff.ceiling(refusals - 1);
        let wait = ceiling / 2 + ceiling.mul_f64(fastrand::f64() / 2.0);
        let hold = Hold {
            refusals,
            until: Instant::now() + wait,
            until_wall: Timestamp::from_millis(
                Timestamp::now()
                    .as_millis()
                    .saturating_add(i64::try_from(wait.as_millis()).unwrap_or(i64::MAX)),
            ),
        };
        self.held.insert(stream.clone(), hold);
        Some(hold)
    }

    /// Ends a stream's hold once a batch of it was committed by `worker_id`, the worker it is
    /// assigned to again (a batch of the refused run, still in flight when the hold began, ends
    /// nothing); returns the refusals it had.
    pub(super) fn release(&mut self, stream: &StreamName, worker_id: &str) -> Option<u32> {
        if self.held.is_empty() || self.worker_of(stream).map(String::as_str) != Some(worker_id) {
            return None;
        }
        self.held.remove(stream).map(|h| h.refusals)
    }

    /// Ends a stream's hold whoever runs it: the user started it by hand.
    pub(super) fn forget_hold(&mut self, stream: &StreamName) {
        self.held.remove(stream);
    }

    /// The hold of a stream, while it lasts.
    pub(super) fn hold_of(&self, stream: &StreamName) -> Option<Hold> {
        self.held
            .get(stream)
            .filter(|h| h.until > Instant::now())
            .copied()
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
        if !self.streams.contains_key(stream) && self.hold_of(stream).is_some() {
            return None;
        }
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

    /// Takes a stream off a worker, if it is still that worker's; returns whether it was.
    pub(super) fn unassign(&mut self, stream: &StreamName, worker_id: &str) -> bool {
        let was = self.streams.get(stream).map(String::as_str) == Some(worker_id);
        if was {
            self.streams.remove(stream);
        }
        if let Some(worker) = self.workers.get_mut(worker_id) {
            worker.streams.remove(stream);
        }
        was
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use async_trait::async_trait;

    use super::*;
    use crate::message::{Event, Hello, Request, Response};
    use crate::transport::{Handler, Listener, MemoryPeer, MemoryTransport, Transport};

    struct Nobody;

    #[async_trait]
    impl Handler for Nobody {
        async fn request(&self, _from: &Hello, _request: Request) -> Response {
            Response::Stopped
        }
        async fn event(&self, _from: &Hello, _event: Event) {}
    }

    /// Assignments with one connected worker, `w`, that runs `generator` streams.
    async fn with_a_worker() -> Assignments<MemoryPeer> {
        let transport = MemoryTransport::new();
        let mut listener = transport.listen(Arc::new(Nobody)).await.unwrap();
        let hello = Hello::new("w", vec!["generator".into()]);
        let _worker_side = transport.connect(hello, Arc::new(Nobody)).await.unwrap();
        let peer = listener.accept().await.unwrap();
        let mut assignments = Assignments::new();
        assignments.connect("w", peer);
        assignments
    }

    #[tokio::test(start_paused = true)]
    async fn a_stream_refused_for_good_is_held_back_longer_at_each_refusal_until_a_commit() {
        let stream = StreamName::new("contacts").unwrap();
        let mut assignments = with_a_worker().await;
        let mut waits = Vec::new();
        for refusals in 1..=6u32 {
            assert!(assignments.assign(&stream, "generator").is_some());
            let hold = assignments.hold_back(&stream, "w").expect("a hold");
            assert_eq!(hold.refusals, refusals);
            // Deliveries of the same stream in flight refused with it make no second hold.
            assert!(assignments.hold_back(&stream, "w").is_none());
            assert_eq!(assignments.worker_of(&stream), None);
            let wait = hold.until - Instant::now();
            let ceiling = Duration::from_secs(1 << (refusals - 1));
            assert!(
                wait >= ceiling / 2 && wait <= ceiling,
                "{wait:?} for {refusals}"
            );
            waits.push(wait);
            // Offered to no worker, however often asked, until the hold ends.
            tokio::time::advance(wait - Duration::from_millis(1)).await;
            assert!(assignments.assign(&stream, "generator").is_none());
            assert!(assignments.hold_of(&stream).is_some());
            tokio::time::advance(Duration::from_millis(1)).await;
        }
        // Six refusals in a row spread over more than half a minute, not six in a few ms.
        assert!(waits.iter().sum::<Duration>() >= Duration::from_secs(31));
        // A batch of the refused run, still in flight, committed: the hold stays.
        assert_eq!(assignments.release(&stream, "w"), None);
        assert!(assignments.held.contains_key(&stream));
        assert!(assignments.assign(&stream, "generator").is_some());
        assert_eq!(assignments.release(&stream, "w"), Some(6));
        assert!(assignments
            .hold_back(&stream, "w")
            .is_some_and(|h| h.refusals == 1));
    }

    #[tokio::test(start_paused = true)]
    async fn the_hold_stops_at_five_minutes() {
        let stream = StreamName::new("contacts").unwrap();
        let mut assignments = with_a_worker().await;
        for _ in 0..20 {
            assert!(assignments.assign(&stream, "generator").is_some());
            let hold = assignments.hold_back(&stream, "w").unwrap();
            let wait = hold.until - Instant::now();
            assert!(wait <= Duration::from_secs(300));
            tokio::time::advance(wait).await;
        }
        let last = assignments.hold_of(&stream);
        assert!(last.is_none(), "the last hold is over");
    }
}

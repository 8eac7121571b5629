//! Controller replicas on one store, in one process: each with its own in-memory transport and
//! one worker, all sharing one sled store and one [`LeaseTable`], on tokio's paused clock, so
//! that the leases' time-to-live passes in virtual time.
//!
//! The workers only record what they are told (Start, Stop): what is tested is which replica
//! runs which stream, and when that changes.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use weld_pipeline::lease::{LeaseTable, Leasing, MemoryLeases};
use weld_pipeline::runtime::{Controller, StreamState};
use weld_pipeline::store::{SledStore, SledStoreConfig, Storage, StreamStore};
use weld_pipeline::testing::CountingSources;
use weld_pipeline::transport::{MemoryPeer, MemoryTransport};
use weld_pipeline::{Error, Event, Handler, Hello, Request, Response, StreamName, Transport};

/// The leases' time-to-live; a replica renews every fifth of it.
const TTL: Duration = Duration::from_secs(10);
const PERIOD: Duration = Duration::from_secs(2);

fn stream() -> StreamName {
    StreamName::new("contacts").unwrap()
}

/// A worker that takes every Start and Stop and keeps what it runs.
#[derive(Debug, Default)]
struct RecordingWorker {
    running: Mutex<HashSet<StreamName>>,
    starts: Mutex<Vec<StreamName>>,
    stops: Mutex<Vec<StreamName>>,
}

impl RecordingWorker {
    fn runs(&self, stream: &StreamName) -> bool {
        self.running.lock().unwrap().contains(stream)
    }

    fn starts(&self) -> usize {
        self.starts.lock().unwrap().len()
    }

    fn stops(&self) -> usize {
        self.stops.lock().unwrap().len()
    }
}

#[async_trait]
impl Handler for RecordingWorker {
    async fn request(&self, _from: &Hello, request: Request) -> Response {
        match request {
            Request::Start(start) => {
                self.running.lock().unwrap().insert(start.stream.clone());
                self.starts.lock().unwrap().push(start.stream);
                Response::Started
            }
            Request::Stop { stream } => {
                self.running.lock().unwrap().remove(&stream);
                self.stops.lock().unwrap().push(stream);
                Response::Stopped
            }
            other => Response::refused(&Error::Invalid(format!("not for a worker: {other:?}"))),
        }
    }

    async fn event(&self, _from: &Hello, _event: Event) {}
}

/// One controller replica, serving its own worker.
struct Replica {
    id: &'static str,
    controller: Arc<Controller<MemoryPeer>>,
    leases: MemoryLeases,
    worker: Arc<RecordingWorker>,
    /// The worker's side of its connection: dropped, the worker is gone.
    _peer: MemoryPeer,
    /// Its listening point: dropped, the listener ends, and with it the replica's serve.
    _transport: MemoryTransport,
    shutdown: CancellationToken,
    serving: JoinHandle<Result<(), Error>>,
}

impl Replica {
    async fn start(id: &'static str, store: &Arc<dyn StreamStore>, table: &LeaseTable) -> Self {
        let leases = table.leases(id, TTL);
        let sources = CountingSources::new();
        let storage = Storage::replica(store.clone(), Arc::new(leases.clone()));
        let controller = Controller::new(storage, sources.kinds());
        let transport = MemoryTransport::new();
        let listener = transport.listen(controller.clone()).await.unwrap();
        let shutdown = CancellationToken::new();
        let serving = tokio::spawn(controller.clone().serve(listener, shutdown.clone()));
        let worker = Arc::new(RecordingWorker::default());
        let hello = Hello::new(format!("worker-{id}"), vec!["generator".into()]);
        let peer = transport.connect(hello, worker.clone()).await.unwrap();
        eventually("the worker is connected", TTL, || controller.workers() == 1).await;
        Replica {
            id,
            controller,
            leases,
            worker,
            _peer: peer,
            _transport: transport,
            shutdown,
            serving,
        }
    }

    fn runs(&self) -> bool {
        self.worker.runs(&stream())
    }
}

/// Checks `done` every 100 ms of (virtual) time until it holds, for `within` at most.
async fn eventually(what: &str, within: Duration, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + within;
    while !done() {
        assert!(Instant::now() < deadline, "not within {within:?}: {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Who holds the stream's lease, as the table says.
async fn holder(replica: &Replica) -> Option<(String, u64)> {
    let holder = replica.leases.holder(&stream()).await.unwrap();
    holder.map(|h| (h.owner, h.epoch))
}

/// Two or three replicas on one sled store in `dir`, sharing one lease table.
async fn replicas(dir: &std::path::Path, ids: &[&'static str]) -> Vec<Replica> {
    let store: Arc<dyn StreamStore> =
        Arc::new(SledStore::open(&SledStoreConfig::new(dir)).unwrap());
    let table = LeaseTable::new();
    let mut replicas = Vec::new();
    for id in ids {
        replicas.push(Replica::start(id, &store, &table).await);
    }
    replicas
}

/// Starts the stream through `replica`, and waits until one of `all` runs it.
async fn start_stream(replica: &Replica, all: &[Replica]) {
    let config = CountingSources::config(100, 10, 0, 300);
    replica
        .controller
        .start_stream(&stream(), config)
        .await
        .unwrap();
    eventually("a replica runs the stream", TTL, || {
        all.iter().any(Replica::runs)
    })
    .await;
}

#[tokio::test(start_paused = true)]
async fn a_stream_runs_on_exactly_one_replica() {
    let dir = tempfile::tempdir().unwrap();
    let all = replicas(dir.path(), &["a", "b", "c"]).await;
    start_stream(&all[1], &all).await;
    for _ in 0..10 {
        tokio::time::sleep(PERIOD).await;
        let running: Vec<&str> = all.iter().filter(|r| r.runs()).map(|r| r.id).collect();
        assert_eq!(running.len(), 1, "runs on {running:?}");
        let (owner, epoch) = holder(&all[0]).await.unwrap();
        assert_eq!(owner, running[0], "run by the lease's holder");
        assert_eq!(epoch, 1, "never claimed anew");
    }
    let starts: usize = all.iter().map(|r| r.worker.starts()).sum();
    assert_eq!(starts, 1, "started once");
    let status = all[2].controller.status(&stream()).await.unwrap().unwrap();
    assert_eq!(status.state, StreamState::Running);
    assert_eq!(status.replica.as_deref(), Some("b"));
}

#[tokio::test(start_paused = true)]
async fn a_replica_that_stops_renewing_loses_its_streams_to_another_after_the_time_to_live() {
    let dir = tempfile::tempdir().unwrap();
    let all = replicas(dir.path(), &["a", "b"]).await;
    start_stream(&all[0], &all).await;
    assert!(all[0].runs(), "started where it was asked, a's share");
    // a dies: nothing renews its leases any more, and nothing gives them up.
    all[0].serving.abort();
    let died = Instant::now();
    tokio::time::sleep(TTL / 2).await;
    assert!(!all[1].runs(), "taken before its lease lapsed");
    assert_eq!(holder(&all[1]).await.map(|h| h.0).as_deref(), Some("a"));

    eventually("b runs the stream", TTL + 3 * PERIOD, || all[1].runs()).await;
    assert!(died.elapsed() >= TTL * 4 / 5, "not before the lease lapsed");
    assert_eq!(holder(&all[1]).await, Some(("b".into(), 2)));
}

#[tokio::test(start_paused = true)]
async fn a_clean_shutdown_gives_the_leases_up_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let mut all = replicas(dir.path(), &["a", "b"]).await;
    start_stream(&all[0], &all).await;
    assert!(all[0].runs());
    all[0].shutdown.cancel();
    let stopped = Instant::now();
    tokio::time::timeout(TTL, &mut all[0].serving)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(holder(&all[1]).await, None, "given up as it shut down");
    assert_eq!(all[0].leases.epoch_of(&stream()), None);

    eventually("b runs the stream", TTL, || all[1].runs()).await;
    assert!(
        stopped.elapsed() <= 2 * PERIOD + Duration::from_millis(100),
        "taken within a lease period or two, not after the time-to-live: {:?}",
        stopped.elapsed()
    );
    assert_eq!(holder(&all[1]).await, Some(("b".into(), 2)));
}

#[tokio::test(start_paused = true)]
async fn a_replica_that_lost_its_lease_stops_its_worker() {
    let dir = tempfile::tempdir().unwrap();
    let all = replicas(dir.path(), &["a", "b"]).await;
    start_stream(&all[0], &all).await;
    assert!(all[0].runs());
    // a is cut off from the leases (a database out of reach) past their time-to-live: b claims
    // the stream meanwhile.
    all[0].leases.cut_off(true);
    eventually("b runs the stream", TTL + 3 * PERIOD, || all[1].runs()).await;
    assert_eq!(holder(&all[1]).await, Some(("b".into(), 2)));
    assert_eq!(all[0].worker.stops(), 0, "a has not heard yet");

    // a reaches the leases again: its renewal returns less, and it stops its worker.
    all[0].leases.cut_off(false);
    eventually("a's worker is stopped", 2 * PERIOD, || !all[0].runs()).await;
    assert_eq!(all[0].worker.stops(), 1);
    assert_eq!(all[0].leases.epoch_of(&stream()), None);
    tokio::time::sleep(5 * PERIOD).await;
    assert!(all[1].runs() && !all[0].runs(), "b alone runs it");
    assert_eq!(holder(&all[1]).await, Some(("b".into(), 2)));
}

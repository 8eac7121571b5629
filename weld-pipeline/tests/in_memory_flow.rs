//! A worker and a controller in one process, over the in-memory transport: the real runner,
//! scheduler and memory sink, delivering through the transport's peer.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use weld_pipeline::middleware::{Backoff, ExponentialBackoff};
use weld_pipeline::source::{Generator, Pages};
use weld_pipeline::transport::MemoryTransport;
use weld_pipeline::{
    Batch, Checkpoint, Commit, Error, ErrorKind, Event, Handler, Hello, Listener, MemorySink, Peer,
    Pipeline, PipelineJob, Request, Response, RunOutcome, Scheduler, Sink, StreamName, Transport,
};

/// A sink on the other side of the transport: delivers each batch through the peer, retrying
/// transient refusals and timeouts (a lost ack) with backoff, as a worker's courier does.
struct PeerSink<P> {
    peer: P,
}

#[async_trait]
impl<P: Peer> Sink for PeerSink<P> {
    async fn commit(&self, batch: &Batch) -> Result<Commit, Error> {
        let backoff = ExponentialBackoff::new(Duration::from_millis(100), Duration::from_secs(5));
        let mut attempt = 0;
        loop {
            let delivery = self.peer.request(Request::Deliver(batch.clone()));
            let answer = tokio::time::timeout(Duration::from_secs(10), delivery)
                .await
                .unwrap_or(Err(Error::Timeout {
                    operation: "delivery",
                    after: Duration::from_secs(10),
                }))
                .and_then(Response::into_result);
            match answer {
                Ok(Response::Ack { batch: id, commit }) if id == batch.id() => return Ok(commit),
                Ok(other) => return Err(Error::Bug(format!("answered with {other:?}"))),
                Err(error) if error.kind() == ErrorKind::Transient && attempt < 10 => {
                    tokio::time::sleep(backoff.delay(attempt)).await;
                    attempt += 1;
                }
                Err(error) => return Err(error),
            }
        }
    }

    async fn checkpoint(&self, _stream: &StreamName) -> Result<Checkpoint, Error> {
        Ok(Checkpoint::start())
    }
}

/// The controller's side: commits deliveries to a memory sink, optionally losing the first acks
/// it sends (the commit happened; the worker never hears of it).
#[derive(Default)]
struct Controller {
    sink: MemorySink,
    acks_to_lose: AtomicUsize,
    events: std::sync::Mutex<Vec<Event>>,
}

#[async_trait]
impl Handler for Controller {
    async fn request(&self, _from: &Hello, request: Request) -> Response {
        match request {
            Request::Deliver(batch) => match self.sink.commit(&batch).await {
                Ok(commit) => {
                    let lose = self
                        .acks_to_lose
                        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                        .is_ok();
                    if lose {
                        return Response::refused(&Error::Unavailable("ack lost".into()));
                    }
                    Response::Ack {
                        batch: batch.id(),
                        commit,
                    }
                }
                Err(error) => Response::refused(&error),
            },
            other => Response::refused(&Error::Invalid(format!(
                "a controller does not take {other:?}"
            ))),
        }
    }

    async fn event(&self, _from: &Hello, event: Event) {
        self.events.lock().unwrap().push(event);
    }
}

/// A worker takes no requests in these tests.
struct Idle;

#[async_trait]
impl Handler for Idle {
    async fn request(&self, _from: &Hello, _request: Request) -> Response {
        Response::refused(&Error::Invalid("idle".into()))
    }
    async fn event(&self, _from: &Hello, _event: Event) {}
}

fn stream() -> StreamName {
    StreamName::new("contacts").unwrap()
}

#[tokio::test(start_paused = true)]
async fn a_scheduled_worker_delivers_every_record_once_and_lost_acks_are_replayed() {
    let transport = MemoryTransport::new();
    let controller = Arc::new(Controller::default());
    controller.acks_to_lose.store(3, Ordering::SeqCst);
    let mut listener = transport.listen(controller.clone()).await.unwrap();

    let peer = transport
        .connect(
            Hello::new("worker-1", vec!["generator".into()]),
            Arc::new(Idle),
        )
        .await
        .unwrap();
    let accepted = listener.accept().await.unwrap();
    assert_eq!(accepted.hello().worker_id, "worker-1");

    let deliver = PeerSink { peer: peer.clone() };
    let source = Pages::new(Generator::contacts(1_000).page_size(100).record_bytes(128));
    let job = Arc::new(PipelineJob::new(
        Pipeline::new(source, deliver),
        Checkpoint::start(),
    ));
    let mut reports = job.reports();
    let scheduler = Scheduler::new();
    scheduler.start(stream(), Duration::from_secs(300), job);

    let report = tokio::time::timeout(Duration::from_secs(60), reports.wait_for(Option::is_some))
        .await
        .expect("the first run finishes")
        .unwrap()
        .clone()
        .unwrap();
    scheduler.stop(&stream()).await;

    assert_eq!(report.outcome, RunOutcome::Succeeded);
    let stored = controller.sink.records(&stream());
    let ids: Vec<u64> = stored.iter().map(|r| r.id.parse().unwrap()).collect();
    let mut expected: Vec<u64> = (1..=1_000).collect();
    expected.sort_by_key(|i| i.to_string());
    assert_eq!(ids, expected, "every record, once");
    assert_eq!(controller.sink.batches_committed(&stream()), 10);
    assert_eq!(
        controller.acks_to_lose.load(Ordering::SeqCst),
        0,
        "three acks were lost and replayed"
    );
    for record in stored.iter().take(20) {
        let id: u64 = record.id.parse().unwrap();
        assert_eq!(
            *record,
            Generator::contacts(1_000).record_bytes(128).record(id)
        );
    }
}

#[tokio::test(start_paused = true)]
async fn many_requests_in_flight_are_answered_out_of_order() {
    struct SlowFirst;
    #[async_trait]
    impl Handler for SlowFirst {
        async fn request(&self, _from: &Hello, request: Request) -> Response {
            let Request::Stop { stream } = request else {
                unreachable!()
            };
            // The lower the stream's number, the longer the answer takes.
            let n: u64 = stream.as_str()[1..].parse().unwrap();
            tokio::time::sleep(Duration::from_millis(5 * (16 - n))).await;
            Response::Refused {
                kind: weld_pipeline::ErrorKind::Permanent,
                message: stream.to_string(),
            }
        }
        async fn event(&self, _from: &Hello, _event: Event) {}
    }
    let transport = MemoryTransport::new();
    let _listener = transport.listen(Arc::new(SlowFirst)).await.unwrap();
    let peer = transport
        .connect(Hello::new("w", vec![]), Arc::new(Idle))
        .await
        .unwrap();
    let order = Arc::new(std::sync::Mutex::new(Vec::new()));
    let requests = (0..16).map(|n| {
        let peer = peer.clone();
        let order = order.clone();
        async move {
            let stream = StreamName::new(format!("s{n}")).unwrap();
            let response = peer
                .request(Request::Stop {
                    stream: stream.clone(),
                })
                .await
                .unwrap();
            // Each response is matched to its own request.
            assert!(
                matches!(response, Response::Refused { message, .. } if message == stream.as_str())
            );
            order.lock().unwrap().push(n);
        }
    });
    futures::future::join_all(requests).await;
    let order = order.lock().unwrap().clone();
    assert_eq!(order.len(), 16);
    assert_eq!(
        order[0], 15,
        "the quickest answer came back first: {order:?}"
    );
}

#[tokio::test]
async fn a_worker_going_away_is_noticed_and_its_requests_fail_as_transient() {
    let transport = MemoryTransport::new();
    let controller = Arc::new(Controller::default());
    let mut listener = transport.listen(controller).await.unwrap();
    let peer = transport
        .connect(Hello::new("w", vec![]), Arc::new(Idle))
        .await
        .unwrap();
    let accepted = listener.accept().await.unwrap();
    drop(peer);
    tokio::time::timeout(Duration::from_secs(5), accepted.closed())
        .await
        .expect("the controller notices");
    let error = accepted
        .request(Request::Stop { stream: stream() })
        .await
        .unwrap_err();
    assert!(error.is_transient());
}

#[tokio::test]
async fn events_arrive_in_order() {
    let transport = MemoryTransport::new();
    let controller = Arc::new(Controller::default());
    let _listener = transport.listen(controller.clone()).await.unwrap();
    let peer = transport
        .connect(Hello::new("w", vec![]), Arc::new(Idle))
        .await
        .unwrap();
    for at in 0..50 {
        peer.notify(Event::RunStarted {
            stream: stream(),
            run_id: weld_pipeline::RunId(at),
            at: weld_pipeline::Timestamp::from_millis(at as i64),
        })
        .await
        .unwrap();
    }
    tokio::time::timeout(Duration::from_secs(5), async {
        while controller.events.lock().unwrap().len() < 50 {
            tokio::task::yield_now().await;
        }
    })
    .await
    .unwrap();
    let runs: Vec<u64> = controller
        .events
        .lock()
        .unwrap()
        .iter()
        .map(|e| match e {
            Event::RunStarted { run_id, .. } => run_id.0,
            _ => unreachable!(),
        })
        .collect();
    assert_eq!(runs, (0..50).collect::<Vec<_>>());
}

#[tokio::test]
async fn a_hello_with_another_protocol_version_is_refused() {
    let transport = MemoryTransport::new();
    let _listener = transport
        .listen(Arc::new(Controller::default()))
        .await
        .unwrap();
    let mut hello = Hello::new("w", vec![]);
    hello.protocol_version = 99;
    let error = transport.connect(hello, Arc::new(Idle)).await.unwrap_err();
    assert_eq!(error.kind(), weld_pipeline::ErrorKind::Permanent);
    assert!(error.to_string().contains("99"), "{error}");
}

#[tokio::test]
async fn connecting_with_nobody_listening_is_transient() {
    let error = MemoryTransport::new()
        .connect(Hello::new("w", vec![]), Arc::new(Idle))
        .await
        .unwrap_err();
    assert!(error.is_transient());
}

#[tokio::test]
async fn a_refused_delivery_carries_its_kind_to_the_runner() {
    let transport = MemoryTransport::new();
    struct Refuses;
    #[async_trait]
    impl Handler for Refuses {
        async fn request(&self, _from: &Hello, _request: Request) -> Response {
            Response::refused(&Error::Invalid("batch too large".into()))
        }
        async fn event(&self, _from: &Hello, _event: Event) {}
    }
    let _listener = transport.listen(Arc::new(Refuses)).await.unwrap();
    let peer = transport
        .connect(Hello::new("w", vec![]), Arc::new(Idle))
        .await
        .unwrap();
    let sink = PeerSink { peer };
    let batch = Batch::new(stream(), weld_pipeline::RunId(1), 0).with_last(true);
    let error = sink.commit(&batch).await.unwrap_err();
    assert_eq!(error.kind(), weld_pipeline::ErrorKind::Permanent);
}

#[tokio::test]
async fn a_panicking_request_handler_is_answered_as_a_bug_and_the_connection_stays_up() {
    struct PanicsOnStop;
    #[async_trait]
    impl Handler for PanicsOnStop {
        async fn request(&self, _from: &Hello, request: Request) -> Response {
            match request {
                Request::Stop { .. } => panic!("handler bug"),
                _ => Response::Started,
            }
        }
        async fn event(&self, _from: &Hello, _event: Event) {}
    }
    let transport = MemoryTransport::new();
    let _listener = transport.listen(Arc::new(PanicsOnStop)).await.unwrap();
    let peer = transport
        .connect(Hello::new("w", vec![]), Arc::new(Idle))
        .await
        .unwrap();
    let response = peer
        .request(Request::Stop { stream: stream() })
        .await
        .unwrap();
    assert!(matches!(
        response,
        Response::Refused {
            kind: weld_pipeline::ErrorKind::Bug,
            ..
        }
    ));
    let start = weld_pipeline::Start {
        stream: stream(),
        config: serde_json::from_str(r#"{"source":{"kind":"generator"},"interval_secs":60}"#)
            .unwrap(),
        checkpoint: Checkpoint::start(),
        epoch: 0,
        lease: 0,
    };
    assert_eq!(
        peer.request(Request::Start(start)).await.unwrap(),
        Response::Started
    );
}

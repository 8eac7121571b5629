//! The HTTP transport's handshake, limits and its own bad input, over real sockets on 127.0.0.1
//! (what every transport must survive is in `bad_input.rs`, from the shared suite).

mod support;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use support::quick_config;
use weld_pipeline::testing::{still_flowing, Answering};
use weld_pipeline::transport::Secret;
use weld_pipeline::{
    ErrorKind, Event, Handler, Hello, Listener, Peer, Request, Response, StreamName, Transport,
};
use weld_pipeline_http::transport::{HttpAcceptor, HttpConfig, HttpPeer, HttpTransport};

const DEADLINE: Duration = Duration::from_secs(20);

async fn controller(config: HttpConfig) -> HttpAcceptor {
    HttpTransport::with_config("127.0.0.1:0", config)
        .listen(Arc::new(Answering::default()))
        .await
        .unwrap()
}

async fn worker(
    listener: &mut HttpAcceptor,
    config: HttpConfig,
    id: &str,
) -> Result<(HttpPeer, HttpPeer), weld_pipeline::Error> {
    let peer = HttpTransport::with_config(listener.local_addr().to_string(), config)
        .connect(Hello::new(id, vec![]), Arc::new(Answering::default()))
        .await?;
    let accepted = tokio::time::timeout(DEADLINE, listener.accept())
        .await
        .unwrap()
        .unwrap();
    Ok((peer, accepted))
}

#[tokio::test]
async fn both_directions_carry_requests_and_answers() {
    let mut listener = controller(quick_config()).await;
    let (peer, accepted) = worker(&mut listener, quick_config(), "w").await.unwrap();
    still_flowing(&peer, DEADLINE).await;
    // The controller's request reaches the worker through its poll, and its reply comes back.
    still_flowing(&accepted, DEADLINE).await;
}

#[tokio::test]
async fn an_oversized_body_is_refused_and_the_server_stays_up() {
    let small = HttpConfig {
        max_body_bytes: 4096,
        ..quick_config()
    };
    let mut listener = controller(small.clone()).await;
    let (good, _a) = worker(&mut listener, quick_config(), "good").await.unwrap();
    let (big, _b) = worker(&mut listener, quick_config(), "big").await.unwrap();
    let batch =
        weld_pipeline::Batch::new(StreamName::new("s0").unwrap(), weld_pipeline::RunId(1), 0)
            .with_cursor(weld_pipeline::Checkpoint::from_bytes(vec![b'x'; 10_000]))
            .with_last(true);
    let error = big.request(Request::Deliver(batch)).await.unwrap_err();
    assert_eq!(error.kind(), ErrorKind::Permanent, "{error}");
    assert!(error.to_string().contains("413"), "{error}");
    still_flowing(&good, DEADLINE).await;
}

#[tokio::test]
async fn many_requests_are_in_flight_at_once() {
    let mut listener = controller(quick_config()).await;
    let (peer, _a) = worker(&mut listener, quick_config(), "w").await.unwrap();
    let started = std::time::Instant::now();
    // Sixteen requests that each take 300 ms: in flight together, not one after another.
    let requests = (0..16).map(|_| {
        let peer = peer.clone();
        async move {
            let stream = StreamName::new("s300").unwrap();
            let answer = peer.request(Request::Stop { stream }).await.unwrap();
            assert!(matches!(answer, Response::Refused { message, .. } if message == "s300"));
        }
    });
    tokio::time::timeout(DEADLINE, futures::future::join_all(requests))
        .await
        .unwrap();
    assert!(
        started.elapsed() < Duration::from_millis(300 * 16),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn a_worker_that_stops_polling_is_noticed_gone() {
    let mut listener = controller(quick_config()).await;
    let (peer, accepted) = worker(&mut listener, quick_config(), "w").await.unwrap();
    peer.close();
    tokio::time::timeout(DEADLINE, accepted.closed())
        .await
        .expect("the controller notices");
    assert!(accepted
        .request(Request::Stop {
            stream: StreamName::new("s0").unwrap()
        })
        .await
        .is_err());
}

/// Records the outbox depths it is told, one event at a time, slowly, and the most it ever
/// handled at once.
#[derive(Default)]
struct SlowEvents {
    running: std::sync::atomic::AtomicUsize,
    most: std::sync::atomic::AtomicUsize,
    seen: std::sync::Mutex<Vec<u64>>,
}

#[async_trait]
impl Handler for SlowEvents {
    async fn request(&self, _from: &Hello, _request: Request) -> Response {
        Response::Started
    }
    async fn event(&self, _from: &Hello, event: Event) {
        use std::sync::atomic::Ordering::SeqCst;
        let now = self.running.fetch_add(1, SeqCst) + 1;
        self.most.fetch_max(now, SeqCst);
        tokio::time::sleep(Duration::from_millis(5)).await;
        if let Event::OutboxDepth { batches, .. } = event {
            self.seen.lock().unwrap().push(batches);
        }
        self.running.fetch_sub(1, SeqCst);
    }
}

#[tokio::test]
async fn events_reach_the_handler_one_at_a_time_in_the_order_sent() {
    let handler = Arc::new(SlowEvents::default());
    let mut listener = HttpTransport::with_config("127.0.0.1:0", quick_config())
        .listen(handler.clone())
        .await
        .unwrap();
    let (peer, _accepted) = worker(&mut listener, quick_config(), "w").await.unwrap();
    // In order from one sender, and eight more senders at once: each post answered before the
    // next is sent, and the handler never runs two events together.
    for batches in 0..20 {
        peer.notify(Event::OutboxDepth { batches, bytes: 0 })
            .await
            .unwrap();
    }
    let concurrent = (100..108).map(|batches| {
        let peer = peer.clone();
        async move { peer.notify(Event::OutboxDepth { batches, bytes: 0 }).await }
    });
    for sent in futures::future::join_all(concurrent).await {
        sent.unwrap();
    }
    let deadline = tokio::time::Instant::now() + DEADLINE;
    while handler.seen.lock().unwrap().len() < 28 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "every event arrives"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let seen = handler.seen.lock().unwrap().clone();
    assert_eq!(
        seen[..20],
        (0..20).collect::<Vec<_>>()[..],
        "in the order sent"
    );
    assert_eq!(
        handler.most.load(std::sync::atomic::Ordering::SeqCst),
        1,
        "one at a time"
    );
}

/// Sends a request's head claiming a 16 MiB body, and no body: the answer must come at once.
async fn answer_to_a_head(listener: &HttpAcceptor, path: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut socket = tokio::net::TcpStream::connect(listener.local_addr())
        .await
        .unwrap();
    let head = format!(
        "POST {path} HTTP/1.1\r\nhost: controller\r\ncontent-type: application/octet-stream\r\ncontent-length: 16777216\r\n\r\n"
    );
    socket.write_all(head.as_bytes()).await.unwrap();
    let mut answer = vec![0u8; 1024];
    let read = tokio::time::timeout(Duration::from_secs(5), socket.read(&mut answer))
        .await
        .expect("an answer before any body was sent")
        .unwrap();
    String::from_utf8_lossy(&answer[..read]).into_owned()
}

#[tokio::test]
async fn a_hello_past_4_kib_is_refused_before_it_is_read() {
    let listener = controller(quick_config()).await;
    let answer = answer_to_a_head(&listener, "/v1/hello").await;
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
}

#[tokio::test]
async fn a_session_route_without_a_session_is_refused_before_its_body_is_read() {
    let listener = controller(quick_config()).await;
    for path in ["/v1/request", "/v1/event", "/v1/reply"] {
        let answer = answer_to_a_head(&listener, path).await;
        assert!(answer.starts_with("HTTP/1.1 401"), "{path}: {answer}");
    }
}

/// Posts valid hellos as fast as the controller answers them, over one keep-alive connection,
/// never answering a challenge, until `stop`; how many it posted.
async fn hello_flood(addr: std::net::SocketAddr, stop: tokio_util::sync::CancellationToken) -> u64 {
    let mut body = bytes::BytesMut::new();
    weld_pipeline::encoding::encode_message(
        &weld_pipeline::Message::Hello(Hello::new("flood", vec![])),
        &mut body,
    );
    let body = body.freeze();
    let http = reqwest::Client::new();
    let mut posted = 0;
    while !stop.is_cancelled() {
        let sent = http
            .post(format!("http://{addr}/v1/hello"))
            .body(body.clone())
            .send()
            .await;
        if let Ok(answer) = sent {
            let _ = answer.bytes().await;
        }
        posted += 1;
    }
    posted
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_with_the_secret_gets_in_during_a_flood_of_unanswered_hellos() {
    let config = HttpConfig {
        secret: Some(Secret::new("right")),
        // No challenge of the flood expires while the worker tries: only making room can let
        // it in.
        session_timeout: DEADLINE * 3,
        ..quick_config()
    };
    let mut listener = controller(config.clone()).await;
    let addr = listener.local_addr();
    let stop = tokio_util::sync::CancellationToken::new();
    let floods: Vec<_> = (0..4)
        .map(|_| tokio::spawn(hello_flood(addr, stop.clone())))
        .collect();
    // Long enough for the flood to take every challenge place many times over.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let started = tokio::time::Instant::now();
    let transport = HttpTransport::with_config(addr.to_string(), config);
    // As the worker runtime does: dial again after a transient refusal.
    let joined = tokio::time::timeout(DEADLINE, async {
        loop {
            match transport
                .connect(Hello::new("real", vec![]), Arc::new(Answering::default()))
                .await
            {
                Ok(peer) => return peer,
                Err(error) => {
                    assert_eq!(error.kind(), ErrorKind::Transient, "{error}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
    })
    .await;
    let waited = started.elapsed();
    stop.cancel();
    let mut posted = 0;
    for flood in floods {
        posted += flood.await.unwrap();
    }
    let flooded_for = waited + Duration::from_millis(500);
    eprintln!(
        "a worker waited {waited:?} (got in: {}) during a flood of {posted} hellos in {flooded_for:?} ({:.0}/s)",
        joined.is_ok(),
        posted as f64 / flooded_for.as_secs_f64()
    );
    let peer = joined.expect("the worker got in during the flood");
    let accepted = tokio::time::timeout(DEADLINE, async {
        loop {
            let accepted = listener.accept().await.unwrap();
            if accepted.hello().worker_id == "real" {
                return accepted;
            }
        }
    })
    .await
    .unwrap();
    still_flowing(&peer, DEADLINE).await;
    still_flowing(&accepted, DEADLINE).await;
}

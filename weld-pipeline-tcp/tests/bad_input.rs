//! Bad input never takes the server down: each kind closes its own connection with a logged
//! reason, and a worker connected beside it keeps flowing. Real sockets on 127.0.0.1. What every
//! transport must survive runs from the shared suite (`weld_pipeline::transport_bad_input!`);
//! the cases below it are the TCP framing's own.

mod support;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use proptest::prelude::*;
use support::{quick_config, DEADLINE};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use weld_pipeline::testing::bad_input::{read_until_closed, Garbage, Settings, Wire};
use weld_pipeline::testing::{still_flowing, Answering};
use weld_pipeline::{ErrorKind, Hello, Listener, Peer, Request, Response, StreamName, Transport};
use weld_pipeline_tcp::{Secret, TcpAcceptor, TcpConfig, TcpPeer, TcpTransport};

async fn controller(config: TcpConfig) -> (TcpTransport, TcpAcceptor) {
    let transport = TcpTransport::with_config("127.0.0.1:0", config);
    let listener = transport
        .listen(Arc::new(Answering::default()))
        .await
        .unwrap();
    (transport, listener)
}

async fn worker(
    listener: &mut TcpAcceptor,
    config: TcpConfig,
    id: &str,
) -> Result<(TcpPeer, TcpPeer), weld_pipeline::Error> {
    let transport = TcpTransport::with_config(listener.local_addr().to_string(), config);
    let peer = transport
        .connect(Hello::new(id, vec![]), Arc::new(Answering::default()))
        .await?;
    let accepted = tokio::time::timeout(DEADLINE, listener.accept())
        .await
        .unwrap()
        .unwrap();
    Ok((peer, accepted))
}

/// Sends raw bytes on a fresh connection and returns what the server wrote back before closing.
async fn raw(listener: &TcpAcceptor, bytes: &[u8]) -> Vec<u8> {
    let mut socket = TcpStream::connect(listener.local_addr()).await.unwrap();
    let _ = socket.write_all(bytes).await;
    read_until_closed(&mut socket).await
}

/// A frame's bytes: length, version, type, correlation, body.
fn frame(kind: u8, correlation: u64, body: &[u8]) -> Vec<u8> {
    let mut out = ((10 + body.len()) as u32).to_be_bytes().to_vec();
    out.push(1);
    out.push(kind);
    out.extend_from_slice(&correlation.to_be_bytes());
    out.extend_from_slice(body);
    out
}

/// The `refused` frame's code in what a server wrote, if any (other frames, pings, skipped).
fn refusal_code(bytes: &[u8]) -> Option<u8> {
    let mut rest = bytes;
    while rest.len() >= 14 {
        let len = u32::from_be_bytes([rest[0], rest[1], rest[2], rest[3]]) as usize;
        if rest[5] == 5 {
            return Some(rest[14.min(rest.len() - 1)]);
        }
        rest = rest.get(4 + len..)?;
    }
    None
}

/// A hello written out by hand: encoding version 1, tag 4, worker id "w", this build's protocol
/// version, no sources.
fn minimal_hello() -> Vec<u8> {
    let [high, low] = weld_pipeline::PROTOCOL_VERSION.to_be_bytes();
    vec![1, 4, 0, 1, b'w', high, low, 0, 0]
}

/// The TCP transport under the bad-input suite every transport passes.
struct TcpWire;

impl Wire for TcpWire {
    type Transport = TcpTransport;

    fn transport(&self, addr: &str, settings: &Settings) -> TcpTransport {
        let quick = quick_config();
        TcpTransport::with_config(
            addr,
            TcpConfig {
                secret: settings.secret.clone(),
                max_frame_bytes: settings.max_message_bytes.unwrap_or(quick.max_frame_bytes),
                ..quick
            },
        )
    }

    fn local_addr(transport: &TcpTransport) -> Option<SocketAddr> {
        transport.local_addr()
    }

    fn garbage(&self) -> Vec<Garbage> {
        // A length header announcing 1 GiB: refused on the header, nothing more read.
        let mut huge = (1u32 << 30).to_be_bytes().to_vec();
        huge.extend_from_slice(&[0u8; 64]);
        vec![
            Garbage {
                what: "bytes that are no frame",
                bytes: b"\x00\x00\x00\x0e\xde\xad\xbe\xef garbage!!".to_vec(),
                refused: |answer| refusal_code(answer).is_some(),
            },
            Garbage {
                what: "an HTTP request",
                bytes: b"GET /streams HTTP/1.1\r\nHost: localhost\r\n\r\n".to_vec(),
                refused: |answer| refusal_code(answer) == Some(1),
            },
            Garbage {
                what: "an unknown frame type",
                bytes: frame(77, 0, b""),
                refused: |answer| refusal_code(answer) == Some(1),
            },
            Garbage {
                what: "a well-formed stop request as the first frame, before the handshake",
                bytes: frame(6, 1, &[1, 2, 1, b'a']),
                refused: |answer| refusal_code(answer) == Some(1),
            },
            Garbage {
                what: "a frame over the limit (a protocol refusal, then the close)",
                bytes: huge,
                refused: |answer| refusal_code(answer) == Some(1),
            },
        ]
    }
}

weld_pipeline::transport_bad_input!(TcpWire);

/// A raw client through the handshake (no secret): returns its socket after the welcome.
async fn raw_worker(listener: &TcpAcceptor) -> TcpStream {
    use tokio::io::AsyncReadExt;
    let mut socket = TcpStream::connect(listener.local_addr()).await.unwrap();
    socket
        .write_all(&frame(1, 0, &minimal_hello()))
        .await
        .unwrap();
    let mut welcome = [0u8; 14];
    tokio::time::timeout(DEADLINE, socket.read_exact(&mut welcome))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(welcome[5], 4, "a welcome");
    socket
}

#[tokio::test]
async fn an_oversized_frame_after_the_handshake_closes_that_connection_only() {
    let config = TcpConfig {
        max_frame_bytes: 4096,
        ..quick_config()
    };
    let (_t, mut listener) = controller(config.clone()).await;
    let (good, _a) = worker(&mut listener, config.clone(), "good").await.unwrap();
    let mut socket = raw_worker(&listener).await;
    let _ = socket.write_all(&frame(6, 1, &vec![0u8; 5000])).await;
    // Closed at once, on the length header. The refusal may be lost to the reset that closing
    // with 5,000 unread bytes causes (after the handshake the connection does not linger), so
    // it is checked only when it came.
    let answer = read_until_closed(&mut socket).await;
    assert!(
        refusal_code(&answer).is_none_or(|code| code == 1),
        "refused on its length header"
    );
    still_flowing(&good, DEADLINE).await;
}

#[tokio::test]
async fn a_frame_that_lies_about_its_length_is_dropped_at_the_handshake_timeout() {
    let (_t, mut listener) = controller(quick_config()).await;
    let (good, _a) = worker(&mut listener, quick_config(), "good").await.unwrap();
    let mut lie = 1000u32.to_be_bytes().to_vec();
    lie.extend_from_slice(&[1, 1, 0, 0, 0, 0, 0, 0, 0, 0]);
    let answer = raw(&listener, &lie).await;
    assert!(
        String::from_utf8_lossy(&answer).contains("handshake timed out"),
        "{answer:?}"
    );
    still_flowing(&good, DEADLINE).await;
}

#[tokio::test]
async fn a_truncated_frame_then_a_close_is_harmless() {
    let (_t, mut listener) = controller(quick_config()).await;
    let (good, _a) = worker(&mut listener, quick_config(), "good").await.unwrap();
    let hello = frame(1, 0, b"\x01\x04\x00");
    let mut socket = TcpStream::connect(listener.local_addr()).await.unwrap();
    socket.write_all(&hello[..hello.len() - 2]).await.unwrap();
    drop(socket);
    still_flowing(&good, DEADLINE).await;
}

#[tokio::test]
async fn a_slowloris_sending_one_byte_at_a_time_is_dropped() {
    let (_t, mut listener) = controller(quick_config()).await;
    let (good, _a) = worker(&mut listener, quick_config(), "good").await.unwrap();
    let mut socket = TcpStream::connect(listener.local_addr()).await.unwrap();
    let hello = frame(1, 0, &minimal_hello());
    let dribble = async {
        for byte in hello {
            if socket.write_all(&[byte]).await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    };
    tokio::time::timeout(DEADLINE, dribble).await.unwrap();
    // Dropped at the handshake timeout, long before its hello was complete: no welcome.
    let answer = read_until_closed(&mut socket).await;
    assert!(
        String::from_utf8_lossy(&answer).contains("handshake timed out"),
        "{answer:?}"
    );
    still_flowing(&good, DEADLINE).await;
}

#[tokio::test]
async fn a_hello_that_never_answers_the_challenge_is_dropped_at_the_handshake_timeout() {
    let server = TcpConfig {
        secret: Some(Secret::new("right")),
        ..quick_config()
    };
    let (_t, mut listener) = controller(server.clone()).await;
    let hello = frame(1, 0, &minimal_hello());
    let answer = raw(&listener, &hello).await;
    assert_eq!(answer[5], 2, "a challenge came, then the close");
    let (good, _a) = worker(&mut listener, server, "good").await.unwrap();
    still_flowing(&good, DEADLINE).await;
}

#[tokio::test]
async fn a_frame_of_another_encoding_version_is_refused() {
    let (_t, mut listener) = controller(quick_config()).await;
    let mut foreign = frame(1, 0, b"");
    foreign[4] = 9;
    assert_eq!(refusal_code(&raw(&listener, &foreign).await), Some(2));
    let (good, _a) = worker(&mut listener, quick_config(), "good").await.unwrap();
    still_flowing(&good, DEADLINE).await;
}

#[tokio::test]
async fn a_dead_peer_is_detected_by_heartbeat() {
    let (_t, mut listener) = controller(quick_config()).await;
    // A client that completes the handshake by hand and then says nothing, ever.
    let mut socket = TcpStream::connect(listener.local_addr()).await.unwrap();
    socket
        .write_all(&frame(1, 0, &minimal_hello()))
        .await
        .unwrap();
    let accepted = tokio::time::timeout(DEADLINE, listener.accept())
        .await
        .unwrap()
        .unwrap();
    let started = std::time::Instant::now();
    tokio::time::timeout(DEADLINE, accepted.closed())
        .await
        .expect("the silent peer is dropped");
    // Within a few heartbeat timeouts (400 ms), not at the test's deadline.
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    drop(socket);
}

#[tokio::test]
async fn an_idle_healthy_connection_is_kept_alive_by_heartbeats() {
    let (_t, mut listener) = controller(quick_config()).await;
    let (peer, accepted) = worker(&mut listener, quick_config(), "idle").await.unwrap();
    // Five heartbeat timeouts without any request: the pings alone keep both sides up.
    tokio::time::sleep(quick_config().heartbeat_timeout * 5).await;
    assert!(
        tokio::time::timeout(Duration::ZERO, accepted.closed())
            .await
            .is_err(),
        "the controller dropped a live worker"
    );
    still_flowing(&peer, DEADLINE).await;
}

/// Holds every request until all 32 have arrived, then answers them last-asked first.
#[derive(Default)]
struct Reversing {
    arrived: std::sync::atomic::AtomicUsize,
    next: tokio::sync::Mutex<usize>,
    turn: tokio::sync::Notify,
}

#[async_trait::async_trait]
impl weld_pipeline::Handler for Reversing {
    async fn request(&self, _from: &Hello, request: Request) -> Response {
        let Request::Stop { stream } = request else {
            unreachable!()
        };
        let n: usize = stream.as_str()[1..].parse().unwrap();
        if self
            .arrived
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst)
            + 1
            == 32
        {
            *self.next.lock().await = 31;
            self.turn.notify_waiters();
        }
        loop {
            let turn = self.turn.notified();
            if *self.next.lock().await == n
                && self.arrived.load(std::sync::atomic::Ordering::SeqCst) == 32
            {
                break;
            }
            turn.await;
        }
        let mut next = self.next.lock().await;
        *next = next.wrapping_sub(1);
        self.turn.notify_waiters();
        Response::Refused {
            kind: ErrorKind::Permanent,
            message: stream.to_string(),
        }
    }

    async fn event(&self, _from: &Hello, _event: weld_pipeline::Event) {}
}

#[tokio::test]
async fn many_requests_in_flight_get_out_of_order_responses_matched_to_their_requests() {
    let transport = TcpTransport::with_config("127.0.0.1:0", quick_config());
    let mut listener = transport
        .listen(Arc::new(Reversing::default()))
        .await
        .unwrap();
    let (peer, _a) = worker(&mut listener, quick_config(), "w").await.unwrap();
    // Sent 0 to 31 on one connection; answered 31 down to 0, each to its own request.
    let requests = (0..32).map(|n| {
        let peer = peer.clone();
        async move {
            let stream = StreamName::new(format!("s{n}")).unwrap();
            let response = peer
                .request(Request::Stop {
                    stream: stream.clone(),
                })
                .await
                .unwrap();
            assert!(
                matches!(response, Response::Refused { message, .. } if message == stream.as_str())
            );
        }
    });
    tokio::time::timeout(DEADLINE, futures::future::join_all(requests))
        .await
        .unwrap();
}

#[tokio::test]
async fn a_hundred_concurrent_connections_all_flow() {
    let (_t, listener) = controller(TcpConfig::default()).await;
    let addr = listener.local_addr().to_string();
    let mut listener = listener;
    let accepting = tokio::spawn(async move {
        let mut peers = Vec::new();
        for _ in 0..100 {
            peers.push(listener.accept().await.unwrap());
        }
        peers
    });
    let workers = (0..100).map(|i| {
        let addr = addr.clone();
        async move {
            let transport = TcpTransport::new(addr);
            let peer = transport
                .connect(
                    Hello::new(format!("w{i}"), vec![]),
                    Arc::new(Answering::default()),
                )
                .await
                .unwrap();
            still_flowing(&peer, DEADLINE).await;
            peer
        }
    });
    let peers = tokio::time::timeout(DEADLINE, futures::future::join_all(workers))
        .await
        .unwrap();
    let accepted = tokio::time::timeout(DEADLINE, accepting)
        .await
        .unwrap()
        .unwrap();
    assert_eq!((peers.len(), accepted.len()), (100, 100));
}

#[tokio::test]
async fn connections_past_the_limit_are_refused_as_busy() {
    let config = TcpConfig {
        max_connections: 2,
        ..quick_config()
    };
    let (_t, mut listener) = controller(config.clone()).await;
    let (a, _pa) = worker(&mut listener, config.clone(), "a").await.unwrap();
    let (_b, _pb) = worker(&mut listener, config.clone(), "b").await.unwrap();
    let transport = TcpTransport::with_config(listener.local_addr().to_string(), config);
    let error = transport
        .connect(Hello::new("c", vec![]), Arc::new(Answering::default()))
        .await
        .unwrap_err();
    assert_eq!(
        error.kind(),
        ErrorKind::Transient,
        "busy: come back later ({error})"
    );
    assert!(
        error.to_string().contains("too many connections"),
        "{error}"
    );
    still_flowing(&a, DEADLINE).await;
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// Arbitrary bytes thrown at a live server never take it down.
    #[test]
    fn arbitrary_bytes_never_take_the_server_down(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        runtime.block_on(async {
            let (_t, mut listener) = controller(quick_config()).await;
            let mut socket = TcpStream::connect(listener.local_addr()).await.unwrap();
            let _ = socket.write_all(&bytes).await;
            drop(socket);
            let (good, _a) = worker(&mut listener, quick_config(), "good").await.unwrap();
            still_flowing(&good, DEADLINE).await;
        });
    }
}

#[tokio::test]
async fn silent_sockets_filling_every_handshake_place_do_not_keep_a_worker_out() {
    // The default handshake timeout (5 s): what a silent socket would hold a place for.
    let config = TcpConfig::default();
    let (transport, mut listener) = controller(config.clone()).await;
    let addr = listener.local_addr();
    let mut silent = Vec::new();
    for _ in 0..300 {
        silent.push(TcpStream::connect(addr).await.unwrap());
    }
    // Every place is taken by a socket that will never speak; a real worker still gets in in
    // about its own handshake time, not after theirs runs out.
    let started = tokio::time::Instant::now();
    let dialer = TcpTransport::with_config(transport.local_addr().unwrap().to_string(), config);
    let peer = tokio::time::timeout(
        Duration::from_secs(3),
        dialer.connect(Hello::new("w", vec![]), Arc::new(Answering::default())),
    )
    .await
    .expect("the worker got in before the silent sockets' handshakes timed out")
    .unwrap();
    let _accepted = tokio::time::timeout(DEADLINE, listener.accept())
        .await
        .unwrap()
        .unwrap();
    assert!(started.elapsed() < Duration::from_secs(3));
    eprintln!(
        "a worker got in past 300 silent sockets in {:?}",
        started.elapsed()
    );
    assert_eq!(peer.hello().worker_id, "w");
    drop(silent);
}

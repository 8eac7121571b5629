//! Bad input never takes the server down: each kind closes its own connection with a logged
//! reason, and a worker connected beside it keeps flowing. Real sockets on 127.0.0.1.

mod support;

use std::sync::Arc;
use std::time::Duration;

use proptest::prelude::*;
use support::{quick_config, read_until_closed, Answering, DEADLINE};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
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

/// Asserts a connection still answers.
async fn still_flowing(peer: &TcpPeer) {
    let stream = StreamName::new("s0").unwrap();
    let answer = tokio::time::timeout(DEADLINE, peer.request(Request::Stop { stream }))
        .await
        .unwrap();
    assert!(matches!(answer, Ok(Response::Refused { .. })), "{answer:?}");
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

/// The `refused` frame's code in what a server wrote, if any.
fn refusal_code(bytes: &[u8]) -> Option<u8> {
    (bytes.len() >= 15 && bytes[5] == 5).then(|| bytes[14])
}

#[tokio::test]
async fn oversized_frame_is_refused_before_it_is_read() {
    let config = TcpConfig {
        max_frame_bytes: 4096,
        ..quick_config()
    };
    let (_t, mut listener) = controller(config.clone()).await;
    let (good, _accepted) = worker(&mut listener, config.clone(), "good").await.unwrap();
    // A length header announcing 1 GiB: refused on the header, nothing more read.
    let mut bytes = (1u32 << 30).to_be_bytes().to_vec();
    bytes.extend_from_slice(&[0u8; 64]);
    let answer = raw(&listener, &bytes).await;
    assert_eq!(
        refusal_code(&answer),
        Some(1),
        "a protocol refusal, then the close"
    );
    still_flowing(&good).await;
}

#[tokio::test]
async fn an_oversized_delivery_after_the_handshake_closes_that_connection_only() {
    let config = TcpConfig {
        max_frame_bytes: 4096,
        ..quick_config()
    };
    let (_t, mut listener) = controller(config.clone()).await;
    let (good, _a) = worker(&mut listener, config.clone(), "good").await.unwrap();
    let (big, accepted) = worker(&mut listener, config.clone(), "big").await.unwrap();
    let huge = "x".repeat(10_000);
    let stream = StreamName::new("s0").unwrap();
    let batch = weld_pipeline::Batch {
        stream,
        run_id: weld_pipeline::RunId(1),
        seq: 0,
        last: true,
        cursor: weld_pipeline::Checkpoint::from_bytes(huge.into_bytes()),
        records: vec![],
    };
    let error = big.request(Request::Deliver(batch)).await.unwrap_err();
    assert_eq!(
        error.kind(),
        ErrorKind::Transient,
        "a closed connection: {error}"
    );
    tokio::time::timeout(DEADLINE, accepted.closed())
        .await
        .unwrap();
    still_flowing(&good).await;
}

#[tokio::test]
async fn garbage_bytes_are_refused() {
    let (_t, mut listener) = controller(quick_config()).await;
    let (good, _a) = worker(&mut listener, quick_config(), "good").await.unwrap();
    let answer = raw(&listener, b"\x00\x00\x00\x0e\xde\xad\xbe\xef garbage!!").await;
    assert!(refusal_code(&answer).is_some());
    still_flowing(&good).await;
}

#[tokio::test]
async fn an_http_request_is_refused() {
    let (_t, mut listener) = controller(quick_config()).await;
    let (good, _a) = worker(&mut listener, quick_config(), "good").await.unwrap();
    let answer = raw(
        &listener,
        b"GET /streams HTTP/1.1\r\nHost: localhost\r\n\r\n",
    )
    .await;
    assert_eq!(refusal_code(&answer), Some(1));
    still_flowing(&good).await;
}

#[tokio::test]
async fn a_frame_that_lies_about_its_length_is_dropped_at_the_handshake_timeout() {
    let (_t, mut listener) = controller(quick_config()).await;
    let (good, _a) = worker(&mut listener, quick_config(), "good").await.unwrap();
    let mut lie = 1000u32.to_be_bytes().to_vec();
    lie.extend_from_slice(&[1, 1, 0, 0, 0, 0, 0, 0, 0, 0]);
    let started = std::time::Instant::now();
    raw(&listener, &lie).await;
    assert!(started.elapsed() < DEADLINE);
    still_flowing(&good).await;
}

#[tokio::test]
async fn a_truncated_frame_then_a_close_is_harmless() {
    let (_t, mut listener) = controller(quick_config()).await;
    let (good, _a) = worker(&mut listener, quick_config(), "good").await.unwrap();
    let hello = frame(1, 0, b"\x01\x04\x00");
    let mut socket = TcpStream::connect(listener.local_addr()).await.unwrap();
    socket.write_all(&hello[..hello.len() - 2]).await.unwrap();
    drop(socket);
    still_flowing(&good).await;
}

#[tokio::test]
async fn an_unknown_frame_type_is_refused() {
    let (_t, mut listener) = controller(quick_config()).await;
    let (good, _a) = worker(&mut listener, quick_config(), "good").await.unwrap();
    let answer = raw(&listener, &frame(77, 0, b"")).await;
    assert_eq!(refusal_code(&answer), Some(1));
    still_flowing(&good).await;
}

#[tokio::test]
async fn a_command_before_the_handshake_is_refused() {
    let (_t, mut listener) = controller(quick_config()).await;
    let (good, _a) = worker(&mut listener, quick_config(), "good").await.unwrap();
    // A well-formed Stop request, but as the first frame.
    let stop = frame(6, 1, &[1, 2, 1, b'a']);
    let answer = raw(&listener, &stop).await;
    assert_eq!(refusal_code(&answer), Some(1));
    still_flowing(&good).await;
}

#[tokio::test]
async fn a_slowloris_sending_one_byte_at_a_time_is_dropped() {
    let (_t, mut listener) = controller(quick_config()).await;
    let (good, _a) = worker(&mut listener, quick_config(), "good").await.unwrap();
    let mut socket = TcpStream::connect(listener.local_addr()).await.unwrap();
    let hello = frame(1, 0, &[1, 4, 0, 1, b'w', 0, 1, 0, 0]);
    let dribble = async {
        for byte in hello {
            if socket.write_all(&[byte]).await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    };
    tokio::time::timeout(DEADLINE, dribble).await.unwrap();
    read_until_closed(&mut socket).await;
    still_flowing(&good).await;
}

#[tokio::test]
async fn wrong_secret_is_refused_and_never_sent() {
    let server = TcpConfig {
        secret: Some(Secret::new("right")),
        ..quick_config()
    };
    let (_t, mut listener) = controller(server.clone()).await;
    let (good, _a) = worker(&mut listener, server.clone(), "good").await.unwrap();
    let wrong = TcpConfig {
        secret: Some(Secret::new("wrong")),
        ..quick_config()
    };
    let transport = TcpTransport::with_config(listener.local_addr().to_string(), wrong);
    let error = transport
        .connect(
            Hello::new("intruder", vec![]),
            Arc::new(Answering::default()),
        )
        .await
        .unwrap_err();
    assert_eq!(error.kind(), ErrorKind::Permanent);
    assert!(error.to_string().contains("authentication"), "{error}");
    assert!(!format!("{:?}", Secret::new("right")).contains("right"));
    still_flowing(&good).await;
}

#[tokio::test]
async fn a_missing_secret_is_refused() {
    let server = TcpConfig {
        secret: Some(Secret::new("right")),
        ..quick_config()
    };
    let (_t, mut listener) = controller(server.clone()).await;
    let transport = TcpTransport::with_config(listener.local_addr().to_string(), quick_config());
    let error = transport
        .connect(Hello::new("w", vec![]), Arc::new(Answering::default()))
        .await
        .unwrap_err();
    assert_eq!(error.kind(), ErrorKind::Permanent);
    // And one that sends no answer at all is dropped at the handshake timeout.
    let hello = frame(1, 0, &[1, 4, 0, 1, b'w', 0, 1, 0, 0]);
    let answer = raw(&listener, &hello).await;
    assert_eq!(answer[5], 2, "a challenge came, then the close");
    let (good, _a) = worker(&mut listener, server, "good").await.unwrap();
    still_flowing(&good).await;
}

#[tokio::test]
async fn an_unknown_protocol_version_is_refused() {
    let (_t, mut listener) = controller(quick_config()).await;
    let transport = TcpTransport::with_config(listener.local_addr().to_string(), quick_config());
    let mut hello = Hello::new("w", vec![]);
    hello.protocol_version = 99;
    let error = transport
        .connect(hello, Arc::new(Answering::default()))
        .await
        .unwrap_err();
    assert_eq!(error.kind(), ErrorKind::Permanent);
    assert!(error.to_string().contains("99"), "{error}");
    // A frame of another version is refused as such too.
    let mut foreign = frame(1, 0, b"");
    foreign[4] = 9;
    assert_eq!(refusal_code(&raw(&listener, &foreign).await), Some(2));
    let (good, _a) = worker(&mut listener, quick_config(), "good").await.unwrap();
    still_flowing(&good).await;
}

#[tokio::test]
async fn a_dead_peer_is_detected_by_heartbeat() {
    let (_t, mut listener) = controller(quick_config()).await;
    // A client that completes the handshake by hand and then says nothing, ever.
    let mut socket = TcpStream::connect(listener.local_addr()).await.unwrap();
    socket
        .write_all(&frame(1, 0, &[1, 4, 0, 1, b'w', 0, 1, 0, 0]))
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
async fn many_requests_in_flight_get_out_of_order_responses() {
    let (_t, mut listener) = controller(quick_config()).await;
    let (peer, _a) = worker(&mut listener, quick_config(), "w").await.unwrap();
    let order = Arc::new(std::sync::Mutex::new(Vec::new()));
    let requests = (0..32u64).map(|n| {
        let (peer, order) = (peer.clone(), order.clone());
        async move {
            // The first asked answers last: 5 ms per place.
            let stream = StreamName::new(format!("s{}", 5 * (32 - n))).unwrap();
            let response = peer
                .request(Request::Stop {
                    stream: stream.clone(),
                })
                .await
                .unwrap();
            assert!(
                matches!(response, Response::Refused { message, .. } if message == stream.as_str())
            );
            order.lock().unwrap().push(n);
        }
    });
    tokio::time::timeout(DEADLINE, futures::future::join_all(requests))
        .await
        .unwrap();
    let order = order.lock().unwrap().clone();
    assert_eq!(order.len(), 32);
    assert_ne!(
        order,
        (0..32).collect::<Vec<_>>(),
        "responses came back out of order"
    );
    assert_eq!(order[0], 31);
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
            still_flowing(&peer).await;
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
    still_flowing(&a).await;
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
            still_flowing(&good).await;
        });
    }
}

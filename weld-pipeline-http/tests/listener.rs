//! The HTTP listener's limits, over real sockets on 127.0.0.1: a slow head, an idle keep-alive
//! connection, a body shorter than its length, an endless trickle of chunks, one connection
//! past the cap. Each is cut within its limit, and the listener goes on serving.

use std::time::Duration;

use axum::body::Bytes;
use axum::routing::{get, post};
use axum::Router;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;
use weld_pipeline_http::listener::{self, Limits};

/// Long enough to tell a cut connection from a held one on a loaded machine.
const DEADLINE: Duration = Duration::from_secs(10);

struct Served {
    addr: std::net::SocketAddr,
    shutdown: CancellationToken,
}

impl Drop for Served {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

async fn serve(limits: Limits) -> Served {
    let router = Router::new().route("/", get(|| async { "ok" })).route(
        "/echo",
        post(|body: Bytes| async move { body.len().to_string() }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let shutdown = CancellationToken::new();
    tokio::spawn(listener::serve(listener, router, limits, shutdown.clone()));
    Served { addr, shutdown }
}

fn quick() -> Limits {
    Limits {
        max_connections: 8,
        header_timeout: Duration::from_millis(300),
        body_timeout: Duration::from_millis(300),
        request_timeout: Duration::from_secs(1),
        ..Limits::default()
    }
}

/// Reads until the server closes the connection; what it sent. Panics past the deadline.
async fn until_closed(socket: &mut TcpStream) -> String {
    let mut answer = Vec::new();
    tokio::time::timeout(DEADLINE, async {
        let mut buffer = [0u8; 4096];
        loop {
            match socket.read(&mut buffer).await {
                Ok(0) | Err(_) => return,
                Ok(n) => answer.extend_from_slice(&buffer[..n]),
            }
        }
    })
    .await
    .expect("the server closed the connection in time");
    String::from_utf8_lossy(&answer).into_owned()
}

async fn still_serving(served: &Served) {
    let mut socket = TcpStream::connect(served.addr).await.unwrap();
    socket
        .write_all(b"GET / HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
        .await
        .unwrap();
    let answer = until_closed(&mut socket).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
}

#[tokio::test]
async fn a_slow_head_is_cut_at_the_header_timeout() {
    let served = serve(quick()).await;
    let mut socket = TcpStream::connect(served.addr).await.unwrap();
    socket.write_all(b"GET / HTTP/1.1\r\n").await.unwrap();
    let started = tokio::time::Instant::now();
    // A header line every 100 ms, for as long as the server takes it.
    let trickle = async {
        for i in 0.. {
            tokio::time::sleep(Duration::from_millis(100)).await;
            if socket
                .write_all(format!("x-slow-{i}: 1\r\n").as_bytes())
                .await
                .is_err()
            {
                return;
            }
            if started.elapsed() > DEADLINE {
                panic!("the slow head was held for {:?}", started.elapsed());
            }
        }
    };
    tokio::time::timeout(DEADLINE, trickle)
        .await
        .expect("the server cut the slow head");
    still_serving(&served).await;
}

#[tokio::test]
async fn an_idle_keep_alive_connection_is_closed() {
    let served = serve(quick()).await;
    let mut socket = TcpStream::connect(served.addr).await.unwrap();
    socket
        .write_all(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n")
        .await
        .unwrap();
    let answer = until_closed(&mut socket).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
}

#[tokio::test]
async fn a_body_shorter_than_its_length_is_cut_at_the_body_timeout() {
    let served = serve(quick()).await;
    let mut socket = TcpStream::connect(served.addr).await.unwrap();
    socket
        .write_all(b"POST /echo HTTP/1.1\r\nhost: x\r\ncontent-length: 100\r\n\r\nonly ten b")
        .await
        .unwrap();
    let answer = until_closed(&mut socket).await;
    assert!(
        answer.is_empty() || answer.starts_with("HTTP/1.1 4"),
        "{answer}"
    );
    still_serving(&served).await;
}

#[tokio::test]
async fn an_endless_trickle_of_chunks_is_cut_at_the_request_timeout() {
    let served = serve(quick()).await;
    let mut socket = TcpStream::connect(served.addr).await.unwrap();
    socket
        .write_all(b"POST /echo HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked\r\n\r\n")
        .await
        .unwrap();
    let (mut read, mut write) = socket.into_split();
    let trickle = tokio::spawn(async move {
        // One byte every 100 ms: inside the body timeout, forever.
        while write.write_all(b"1\r\nx\r\n").await.is_ok() {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    });
    let mut answer = vec![0u8; 256];
    let n = tokio::time::timeout(DEADLINE, read.read(&mut answer))
        .await
        .expect("the server answered the endless body")
        .unwrap();
    let answer = String::from_utf8_lossy(&answer[..n]).into_owned();
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains(r#""code":"request_timeout""#), "{answer}");
    trickle.abort();
    still_serving(&served).await;
}

#[tokio::test]
async fn a_connection_past_the_cap_is_closed_at_once_and_the_others_are_served() {
    let served = serve(Limits {
        max_connections: 2,
        header_timeout: Duration::from_secs(5),
        ..Limits::default()
    })
    .await;
    let mut held = Vec::new();
    for _ in 0..2 {
        let mut socket = TcpStream::connect(served.addr).await.unwrap();
        // A complete request: the connection is surely accepted and counted.
        socket
            .write_all(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n")
            .await
            .unwrap();
        let mut buffer = [0u8; 256];
        let n = socket.read(&mut buffer).await.unwrap();
        assert!(buffer[..n].starts_with(b"HTTP/1.1 200"));
        held.push(socket);
    }
    let mut third = TcpStream::connect(served.addr).await.unwrap();
    let _ = third.write_all(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n").await;
    let answer = until_closed(&mut third).await;
    assert!(
        answer.is_empty(),
        "past the cap, nothing is served: {answer}"
    );
    drop(held);
    // The slots are given back once those connections close.
    let deadline = tokio::time::Instant::now() + DEADLINE;
    loop {
        let mut socket = TcpStream::connect(served.addr).await.unwrap();
        socket
            .write_all(b"GET / HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
            .await
            .unwrap();
        if until_closed(&mut socket).await.starts_with("HTTP/1.1 200") {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the slots came back"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The JSON body of an answer, with its status line.
fn json_answer(answer: &str) -> (&str, serde_json::Value) {
    let (head, body) = answer.split_once("\r\n\r\n").expect("a head and a body");
    let status = head.lines().next().unwrap_or_default();
    assert!(
        head.to_ascii_lowercase()
            .contains("content-type: application/json"),
        "{head}"
    );
    (status, serde_json::from_str(body).expect("a JSON body"))
}

#[tokio::test]
async fn what_hyper_refuses_itself_is_answered_in_the_apis_error_shape() {
    let served = serve(quick()).await;
    let header = format!("x-big: {}\r\n", "a".repeat(20 * 1024));
    for (request, status, code) in [
        (
            "GET / HTTP/1.1\r\nhost: x\r\nbad header\r\n\r\n".to_owned(),
            "HTTP/1.1 400",
            "malformed_request",
        ),
        (
            "GET\x01 / HTTP/1.1\r\n\r\n".to_owned(),
            "HTTP/1.1 400",
            "malformed_request",
        ),
        (
            format!("GET / HTTP/1.1\r\nhost: x\r\n{header}\r\n"),
            "HTTP/1.1 431",
            "headers_too_large",
        ),
    ] {
        let mut socket = TcpStream::connect(served.addr).await.unwrap();
        let _ = socket.write_all(request.as_bytes()).await;
        let answer = until_closed(&mut socket).await;
        let (line, body) = json_answer(&answer);
        assert!(line.starts_with(status), "{answer}");
        assert_eq!(body["error"]["code"], code, "{answer}");
        assert!(body["error"]["message"].is_string(), "{answer}");
    }
    still_serving(&served).await;
}

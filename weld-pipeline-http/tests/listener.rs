//! The HTTP listener's limits, over real sockets on 127.0.0.1: a slow head, an idle keep-alive
//! connection, a body shorter than its length, an endless trickle of chunks, one connection
//! past a cap of busy ones, one client holding idle sockets past the cap, idle connections at
//! the cap. Each is cut within its limit, and the listener goes on serving.

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
    let router = Router::new()
        .route("/", get(|| async { "ok" }))
        .route("/health", get(|| async { "ok" }))
        .route(
            "/whoami",
            get(
                |axum::extract::ConnectInfo(peer): axum::extract::ConnectInfo<
                    std::net::SocketAddr,
                >| async move { peer.ip().to_string() },
            ),
        )
        // A request that stays in progress: its connection is busy, never cut to make room.
        .route("/hold", get(std::future::pending::<&'static str>))
        .route(
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
async fn a_connection_past_a_cap_of_busy_connections_is_closed_at_once_and_the_others_are_served() {
    let served = serve(Limits {
        max_connections: 2,
        max_per_client: 2,
        header_timeout: Duration::from_secs(5),
        ..Limits::default()
    })
    .await;
    let mut held = Vec::new();
    for _ in 0..2 {
        let mut socket = TcpStream::connect(served.addr).await.unwrap();
        // A request that stays in progress: the connection is busy, it keeps its place.
        socket
            .write_all(b"GET /hold HTTP/1.1\r\nhost: x\r\n\r\n")
            .await
            .unwrap();
        held.push(socket);
    }
    // Both requests surely reached their handler: a place past them is refused.
    let deadline = tokio::time::Instant::now() + DEADLINE;
    loop {
        let mut third = TcpStream::connect(served.addr).await.unwrap();
        let _ = third
            .write_all(b"GET / HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
            .await;
        if until_closed(&mut third).await.is_empty() {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "past a cap of busy connections, nothing is served"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    drop(held);
    // The places are given back once those connections close.
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
            "the places came back"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A connection from `from` (any 127.0.0.0/8 address reaches loopback on Linux).
async fn connect_from(from: [u8; 4], to: std::net::SocketAddr) -> std::io::Result<TcpStream> {
    let socket = tokio::net::TcpSocket::new_v4()?;
    socket.bind((std::net::Ipv4Addr::from(from), 0).into())?;
    socket.connect(to).await
}

/// `GET /health` on a new connection from 127.0.0.1; whether it answered 200.
async fn health(served: &Served) -> bool {
    let Ok(mut socket) = TcpStream::connect(served.addr).await else {
        return false;
    };
    if socket
        .write_all(b"GET /health HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
        .await
        .is_err()
    {
        return false;
    }
    until_closed(&mut socket).await.starts_with("HTTP/1.1 200")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_client_holding_idle_sockets_past_the_cap_leaves_room_for_another() {
    let cap = 64;
    let served = serve(Limits {
        max_connections: cap,
        max_per_client: cap / 4,
        // Nothing is cut by the idle timeout during the test: only the places' rules hold.
        header_timeout: Duration::from_secs(120),
        ..Limits::default()
    })
    .await;
    // The attacker, from 127.0.0.2, dials idle sockets up to and past the cap, and keeps
    // dialing while the honest client asks.
    let stop = CancellationToken::new();
    let attacker = {
        let (stop, addr) = (stop.clone(), served.addr);
        tokio::spawn(async move {
            let mut idle = Vec::new();
            let mut dialed = 0;
            while !stop.is_cancelled() {
                if let Ok(socket) = connect_from([127, 0, 0, 2], addr).await {
                    idle.push(socket);
                    dialed += 1;
                }
                if dialed >= 3 * cap {
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
            }
            dialed
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    let asks = 20;
    let answered = tokio::time::timeout(DEADLINE, async {
        let mut answered = 0;
        for _ in 0..asks {
            if health(&served).await {
                answered += 1;
            }
        }
        answered
    })
    .await
    .expect("every /health was answered or refused in time");
    stop.cancel();
    let dialed = attacker.await.unwrap();
    eprintln!("/health answered {answered} of {asks} while one client dialed {dialed} idle sockets at a cap of {cap}");
    assert_eq!(answered, asks, "the honest client is served every time");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_connections_are_closed_sooner_as_the_places_fill() {
    let cap = 16;
    let served = serve(Limits {
        max_connections: cap,
        max_per_client: cap,
        header_timeout: Duration::from_secs(120),
        ..Limits::default()
    })
    .await;
    let mut idle = Vec::new();
    for _ in 0..cap {
        idle.push(TcpStream::connect(served.addr).await.unwrap());
    }
    // At the cap, an idle connection is kept about a second, not the header timeout (120 s):
    // the oldest are closed until the places are no longer near the cap.
    let closed = tokio::time::timeout(DEADLINE, async {
        loop {
            let mut closed = 0;
            for socket in &mut idle {
                let mut byte = [0u8; 1];
                match tokio::time::timeout(Duration::from_millis(10), socket.read(&mut byte)).await
                {
                    Ok(Ok(0)) | Ok(Err(_)) => closed += 1,
                    Ok(Ok(_)) => panic!("an idle connection got an answer"),
                    Err(_) => {}
                }
            }
            if closed > 0 {
                return closed;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await
    .expect("idle connections at the cap were closed long before the header timeout");
    eprintln!("{closed} of {cap} idle connections at the cap closed within the deadline");
    still_serving(&served).await;
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_request_knows_its_client_address() {
    let served = serve(quick()).await;
    for from in [[127, 0, 0, 1], [127, 0, 0, 2]] {
        let mut socket = connect_from(from, served.addr).await.unwrap();
        socket
            .write_all(b"GET /whoami HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
            .await
            .unwrap();
        let answer = until_closed(&mut socket).await;
        let address = std::net::Ipv4Addr::from(from).to_string();
        assert!(
            answer.starts_with("HTTP/1.1 200") && answer.ends_with(&address),
            "{answer}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trusted_proxy_forwards_its_clients_addresses_and_others_cannot_forge_one() {
    let served = serve(Limits {
        trusted_proxies: vec![std::net::IpAddr::from([127, 0, 0, 3])],
        ..quick()
    })
    .await;
    let whoami = |from: [u8; 4], forwarded: &'static str| {
        let addr = served.addr;
        async move {
            let mut socket = connect_from(from, addr).await.unwrap();
            let request = format!(
                "GET /whoami HTTP/1.1\r\nhost: x\r\nx-forwarded-for: {forwarded}\r\nconnection: close\r\n\r\n"
            );
            socket.write_all(request.as_bytes()).await.unwrap();
            let answer = until_closed(&mut socket).await;
            answer.rsplit("\r\n").next().unwrap_or_default().to_owned()
        }
    };
    // Through the proxy: the client it appended, not what the client wrote before it.
    assert_eq!(
        whoami([127, 0, 0, 3], "10.9.9.9, 192.0.2.7").await,
        "192.0.2.7"
    );
    // From anyone else the header proves nothing.
    assert_eq!(whoami([127, 0, 0, 4], "192.0.2.7").await, "127.0.0.4");
    // A proxy that forwards nothing parseable is its own client.
    assert_eq!(whoami([127, 0, 0, 3], "garbage").await, "127.0.0.3");
}

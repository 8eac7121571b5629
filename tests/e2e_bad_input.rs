//! End to end, bad input: every 4xx of the API with its status and error body, garbage on the
//! transport port, and a worker with the wrong secret. None of it costs uptime or data.

mod support;

use std::io::{ErrorKind, Read, Write};
use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::json;
use support::*;

const API_TOKEN: &str = "e2e-api-token-of-16";

/// Asserts the stream does not exist (a refused request created nothing).
async fn assert_absent(api: &Api, name: &str) {
    let (status, body) = api.get(&format!("/streams/{name}")).await;
    assert_error(
        status,
        &body,
        404,
        &format!("stream {name} after a refused request"),
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_json_is_400_and_creates_nothing() {
    let dir = temp_dir();
    let data_streams = start_data_streams(DataStreamsOpts::new(dir.path())).await;
    let api = data_streams.api();

    let bodies: [&[u8]; 4] = [
        b"{\"source\":",
        b"not json at all",
        b"{\"interval_secs\": 5,}",
        b"\xff\xfe\x00garbage",
    ];
    for body in bodies {
        let request = api
            .request(Method::POST, "/streams/malformed/start")
            .header("content-type", "application/json")
            .body(body.to_vec());
        let (status, answer) = send(request).await;
        assert_error(
            status,
            &answer,
            400,
            &format!("start with {:?}", String::from_utf8_lossy(body)),
        );
    }
    assert_absent(&api, "malformed").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_or_wrong_token_is_401_then_429_and_health_needs_none() {
    let dir = temp_dir();
    let data_streams = start_data_streams(DataStreamsOpts {
        api_token: Some(API_TOKEN.into()),
        ..DataStreamsOpts::new(dir.path())
    })
    .await;
    let authorized = data_streams.api();
    let anonymous = Api::new(&data_streams.api_url, None);
    let wrong = Api::new(&data_streams.api_url, Some("not-the-token"));

    // A missing token is no guess: never throttled. Wrong ones are: the first five are
    // answered 401, then the client is shut out (429, Retry-After) before its token is looked at.
    let mut wrong_tokens = 0;
    let mut retry_after = None;
    for (who, api) in [("no token", &anonymous), ("a wrong token", &wrong)] {
        for (method, path) in [
            (Method::GET, "/streams"),
            (Method::POST, "/streams/guarded/start"),
            (Method::GET, "/streams/guarded"),
            (Method::POST, "/streams/guarded/stop"),
            (Method::GET, "/streams/guarded/records"),
            (Method::GET, "/streams/guarded/runs"),
            (Method::DELETE, "/streams/guarded"),
            (Method::GET, "/metrics"),
            (Method::GET, "/openapi.json"),
        ] {
            let context = format!("{method} {path} with {who}");
            if who == "no token" {
                let (status, body) = send(api.request(method, path)).await;
                assert_error(status, &body, 401, &context);
                continue;
            }
            wrong_tokens += 1;
            let response = api.request(method, path).send().await.unwrap();
            let wait = response.headers().get("retry-after").cloned();
            let status = response.status();
            let body: serde_json::Value = response.json().await.unwrap();
            // Past the fifth, a slow machine may let a delay (1 s, then 2 s, 4 s...) pass
            // between two requests: a 401 then is right too, and doubles the next delay.
            if wrong_tokens <= 5 || status == StatusCode::UNAUTHORIZED {
                assert_error(status, &body, 401, &context);
            } else {
                assert_error(status, &body, 429, &context);
                assert_eq!(body["error"]["code"], "too_many_wrong_tokens", "{context}");
                retry_after = wait.map(|w| w.to_str().unwrap().parse::<u64>().unwrap());
            }
        }
    }
    let retry_after = retry_after.expect("a wrong token past the fifth was answered 429");
    assert!((1..=60).contains(&retry_after), "{retry_after}");
    // The right token waits out the delay like any other from that client, and then passes.
    let deadline = std::time::Instant::now() + Duration::from_secs(70);
    loop {
        let response = authorized
            .request(Method::GET, "/streams")
            .send()
            .await
            .unwrap();
        if response.status() != StatusCode::TOO_MANY_REQUESTS {
            assert_eq!(response.status(), StatusCode::OK);
            break;
        }
        assert!(std::time::Instant::now() < deadline, "still shut out");
        let wait = response.headers()["retry-after"]
            .to_str()
            .unwrap()
            .parse()
            .unwrap();
        tokio::time::sleep(Duration::from_secs(wait)).await;
    }
    // Another scheme than Bearer is no token either.
    let request = anonymous
        .request(Method::GET, "/streams")
        .header("authorization", format!("Basic {API_TOKEN}"));
    let (status, body) = send(request).await;
    assert_error(status, &body, 401, "a Basic authorization");

    let (status, body) = anonymous.get("/health").await;
    assert_eq!(status, StatusCode::OK, "/health needs no token: {body}");
    assert_eq!(body["status"], "ok", "{body}");

    // The right token passes, and the refused start created nothing.
    assert!(authorized.list_streams().await.is_empty());
    assert_absent(&authorized, "guarded").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_stream_is_404_on_every_route() {
    let dir = temp_dir();
    let data_streams = start_data_streams(DataStreamsOpts::new(dir.path())).await;
    let api = data_streams.api();

    for (method, path) in [
        (Method::GET, "/streams/nope"),
        (Method::POST, "/streams/nope/stop"),
        (Method::POST, "/streams/nope/resync"),
        (Method::GET, "/streams/nope/records"),
        (Method::GET, "/streams/nope/runs"),
        (Method::DELETE, "/streams/nope"),
    ] {
        let context = format!("{method} {path}");
        let (status, body) = send(api.request(method, path)).await;
        assert_error(status, &body, 404, &context);
    }
    assert!(
        api.list_streams().await.is_empty(),
        "a stop, resync or delete created nothing"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn body_over_64_kib_is_413_and_creates_nothing() {
    let dir = temp_dir();
    let data_streams = start_data_streams(DataStreamsOpts::new(dir.path())).await;
    let api = data_streams.api();

    // Valid JSON, only too big: the size alone is refused.
    let body = json!({
        "source": {"kind": "hubspot", "object": "contacts", "properties": ["x".repeat(80 * 1024)]},
        "interval_secs": 300,
    });
    let (status, answer) = send(api.request(Method::POST, "/streams/big/start").json(&body)).await;
    assert_error(status, &answer, 413, "a start body of 80 KiB");
    assert_absent(&api, "big").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_names_intervals_and_limits_are_422_and_create_nothing() {
    let dir = temp_dir();
    let data_streams = start_data_streams(DataStreamsOpts::new(dir.path())).await;
    let api = data_streams.api();

    // Names: `^[a-z0-9][a-z0-9_-]{0,62}$`.
    let too_long = "a".repeat(64);
    for name in [
        "Bad_Name",
        too_long.as_str(),
        "-leading-dash",
        "dotted.name",
    ] {
        let request = api
            .request(Method::POST, &format!("/streams/{name}/start"))
            .json(&contacts_stream(300));
        let (status, body) = send(request).await;
        assert_error(status, &body, 422, &format!("start {name:?}"));
    }
    // Intervals: 1..=86400.
    for interval_secs in [0, 86_401] {
        let request = api
            .request(Method::POST, "/streams/interval/start")
            .json(&contacts_stream(interval_secs));
        let (status, body) = send(request).await;
        assert_error(
            status,
            &body,
            422,
            &format!("interval_secs {interval_secs}"),
        );
    }
    assert!(
        api.list_streams().await.is_empty(),
        "a refused start created a stream"
    );

    // The edges are accepted: a 63-character name, intervals of 1 and 86400 s.
    let longest = "a".repeat(63);
    api.start_stream(&longest, contacts_stream(1)).await;
    api.start_stream("existing", contacts_stream(86_400)).await;

    // Limits: 1..=1000.
    for limit in [0, 1_001] {
        let (status, body) = api
            .get(&format!("/streams/existing/records?limit={limit}"))
            .await;
        assert_error(status, &body, 422, &format!("records with limit={limit}"));
    }
    for limit in [1, 1_000] {
        let (status, body) = api
            .get(&format!("/streams/existing/records?limit={limit}"))
            .await;
        assert_eq!(status, StatusCode::OK, "limit={limit}: {body}");
        assert!(body["records"].is_array(), "{body}");
    }
}

/// Writes `bytes` to a fresh connection to `addr` and waits for the other side to close it.
fn write_and_wait_for_close(addr: &str, bytes: &[u8]) -> Result<(), String> {
    let mut stream =
        std::net::TcpStream::connect(addr).map_err(|e| format!("cannot connect: {e}"))?;
    stream
        .set_read_timeout(Some(Duration::from_secs(20)))
        .map_err(|e| e.to_string())?;
    // The controller may close before reading it all: a failed write is fine.
    let _ = stream.write_all(bytes);
    let mut answer = Vec::new();
    match stream.read_to_end(&mut answer) {
        Ok(_) => Ok(()),
        Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => Err(format!(
            "the connection was still open after 20 s ({} bytes answered)",
            answer.len()
        )),
        // Reset: closed as well.
        Err(_) => Ok(()),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_on_the_transport_port_is_refused_and_everything_keeps_flowing() {
    let cluster = Cluster::start(2_000, "tcp").await;
    cluster.api.start_stream(STREAM, contacts_stream(300)).await;

    let garbage: [&'static [u8]; 4] = [
        b"\x13\x37 this is not a frame \xff\xfe\xfd",
        b"GET / HTTP/1.1\r\nHost: weld\r\n\r\n",
        // A length far over what an unauthenticated peer may send.
        &[0x7f, 0xff, 0xff, 0xff, 1, 1],
        // A well-sized frame of an unknown type, before any hello.
        &[0, 0, 0, 10, 1, 99, 0, 0, 0, 0, 0, 0, 0, 0],
    ];
    let probes = garbage.into_iter().map(|bytes| {
        let addr = cluster.data_streams.transport_addr.clone();
        tokio::task::spawn_blocking(move || write_and_wait_for_close(&addr, bytes))
    });
    for (i, outcome) in futures::future::join_all(probes)
        .await
        .into_iter()
        .enumerate()
    {
        outcome
            .expect("the probe's thread")
            .unwrap_or_else(|e| panic!("garbage #{i} on the transport port: {e}"));
    }

    // Still up, the worker still connected, the stream still flowing.
    let health = cluster.api.health().await;
    assert_eq!(health["status"], "ok", "{health}");
    assert_eq!(
        cluster.api.workers().await,
        1,
        "the good worker stays connected"
    );
    wait_synced(&cluster.api, STREAM, &cluster.fake.contacts().await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn worker_with_a_wrong_secret_is_refused_while_the_right_one_syncs() {
    let fake = start_fake(2_000, &[]).await;
    let (data_streams_dir, wrong_dir, right_dir) = (temp_dir(), temp_dir(), temp_dir());
    let data_streams = start_data_streams(DataStreamsOpts::new(data_streams_dir.path())).await;
    let api = data_streams.api();
    api.start_stream(STREAM, contacts_stream(300)).await;

    let _wrong = start_worker(WorkerOpts {
        id: "wrong-secret".into(),
        shared_secret: Some("not-the-shared-secret".into()),
        ..WorkerOpts::new(&data_streams.transport_addr, &fake.url, wrong_dir.path())
    })
    .await;
    // Long enough for a few attempts to dial (its backoff stays under 5 s): none gets in, and
    // the stream is not given to it.
    let until = tokio::time::Instant::now() + Duration::from_secs(6);
    while tokio::time::Instant::now() < until {
        assert_eq!(
            api.workers().await,
            0,
            "a worker with a wrong secret got in"
        );
        let status = api.status(STREAM).await;
        assert_eq!(status["state"], "pending", "{status}");
        tokio::time::sleep(POLL).await;
    }

    let _right = start_worker(WorkerOpts {
        id: "right-secret".into(),
        ..WorkerOpts::new(&data_streams.transport_addr, &fake.url, right_dir.path())
    })
    .await;
    api.wait_workers(1).await;
    wait_synced(&api, STREAM, &fake.contacts().await).await;
    assert_eq!(api.status(STREAM).await["worker"], "right-secret");
    assert_eq!(api.workers().await, 1, "the wrong worker never counts");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_service_refuses_to_start_on_a_token_or_secret_under_16_bytes() {
    let dir = temp_dir();
    let data_dir = dir.path().to_string_lossy().into_owned();
    for (binary, variable) in [
        ("data-streams", "WELD_API_TOKEN"),
        ("data-streams", "WELD_SHARED_SECRET"),
        ("worker", "WELD_SHARED_SECRET"),
    ] {
        let env = [
            ("WELD_DATA_DIR", data_dir.clone()),
            ("WELD_HTTP_ADDR", "127.0.0.1:0".to_owned()),
            ("WELD_TRANSPORT_ADDR", "127.0.0.1:0".to_owned()),
            ("WELD_CONTROLLER_ADDR", "127.0.0.1:9".to_owned()),
            (variable, "ci-token".to_owned()),
        ];
        let mut process = Process::spawn(binary, &env);
        let status = process.wait_exit(Duration::from_secs(30)).await;
        let logs = process.logs();
        assert_eq!(
            status.code(),
            Some(2),
            "{binary} with a short {variable}: {logs}"
        );
        assert!(
            logs.contains(variable) && logs.contains("has 8 bytes, and must have at least 16"),
            "{binary} says why it refused: {logs}"
        );
        assert!(
            !logs.contains("ci-token"),
            "{binary} never prints it: {logs}"
        );
    }
}

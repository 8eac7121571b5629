//! End to end, the listeners under attack, against the real binaries: a flood of oversized
//! hellos on the HTTP transport, thousands of idle connections on the API, silent sockets
//! holding the TCP transport's handshake slots. Each time the service's memory (from
//! `/proc/<pid>/status`) and its log stay bounded, and a real worker still gets in and syncs.

mod support;

use std::time::{Duration, Instant};

use reqwest::StatusCode;
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// The most log lines 10 s of any attack may add: a failure is told once, then summarised.
const MAX_LINES_PER_10_S: usize = 30;

/// Asserts the lines logged in 10 s of an attack are few, and says how many.
async fn assert_quiet_for_10_s(process: &Process, attack: &str) {
    let logged = process.lines_logged_during(Duration::from_secs(10)).await;
    eprintln!(
        "{} logged {} lines in 10 s of {attack}",
        process.name(),
        logged.len()
    );
    assert!(
        logged.len() <= MAX_LINES_PER_10_S,
        "{attack}: {} log lines in 10 s:\n{}",
        logged.len(),
        logged.join("\n")
    );
}

/// The test process's own descriptor limit, raised (as root can) so that it can hold
/// `wanted` sockets; what it ends at.
fn open_files_for(wanted: u64) -> u64 {
    let soft = || -> u64 {
        std::fs::read_to_string("/proc/self/limits")
            .ok()
            .and_then(|limits| {
                let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
                line.split_whitespace().nth(3)?.parse().ok()
            })
            .unwrap_or(1024)
    };
    if soft() < wanted {
        let _ = std::process::Command::new("prlimit")
            .arg(format!("--pid={}", std::process::id()))
            .arg(format!("--nofile={wanted}:{wanted}"))
            .status();
    }
    soft()
}

/// A contacts stream of `fake` through `data_streams` by a new worker over `transport`, synced
/// exactly; how long the worker took to connect.
async fn a_worker_gets_in_and_syncs(
    fake: &Fake,
    data_streams: &DataStreams,
    transport: &str,
    dir: &std::path::Path,
) -> (Worker, Duration) {
    let started = Instant::now();
    let worker = start_worker(WorkerOpts {
        transport: transport.into(),
        ..WorkerOpts::new(&data_streams.transport_addr, &fake.url, dir)
    })
    .await;
    let api = data_streams.api();
    api.wait_workers(1).await;
    let connected = started.elapsed();
    api.start_stream(STREAM, contacts_stream(300)).await;
    wait_synced(&api, STREAM, &fake.contacts().await).await;
    (worker, connected)
}

/// One hello of `size` bytes to the HTTP transport, declared (`content-length`) or chunked,
/// sent as fast as the service takes it; the status line of its answer, if any came.
async fn oversized_hello(addr: String, size: usize, chunked: bool) -> Option<String> {
    let mut socket = TcpStream::connect(&addr).await.ok()?;
    let framing = if chunked {
        "transfer-encoding: chunked".to_owned()
    } else {
        format!("content-length: {size}")
    };
    let head = format!(
        "POST /v1/hello HTTP/1.1\r\nhost: x\r\ncontent-type: application/octet-stream\r\n{framing}\r\n\r\n"
    );
    socket.write_all(head.as_bytes()).await.ok()?;
    let chunk = vec![b'h'; 64 * 1024];
    let (mut read, mut write) = socket.into_split();
    let sending = tokio::spawn(async move {
        for _ in 0..size / chunk.len() {
            let sent = if chunked {
                let mut framed = format!("{:x}\r\n", chunk.len()).into_bytes();
                framed.extend_from_slice(&chunk);
                framed.extend_from_slice(b"\r\n");
                write.write_all(&framed).await
            } else {
                write.write_all(&chunk).await
            };
            if sent.is_err() {
                return;
            }
        }
    });
    let mut answer = vec![0u8; 512];
    let n = tokio::time::timeout(Duration::from_secs(30), read.read(&mut answer))
        .await
        .ok()?
        .ok()?;
    sending.abort();
    let answer = String::from_utf8_lossy(&answer[..n]).into_owned();
    answer.lines().next().map(str::to_owned)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_16_mib_hellos_leaves_the_http_transport_small_and_a_worker_gets_in() {
    let dirs = [temp_dir(), temp_dir()];
    let fake = start_fake(500, &[]).await;
    let data_streams = start_data_streams(DataStreamsOpts {
        transport: "http".into(),
        ..DataStreamsOpts::new(dirs[0].path())
    })
    .await;
    let before = data_streams.process.memory_kib("VmRSS");

    // 120 hellos of 16 MiB at once, half declared, half chunked: before a session, a body past
    // 4 KiB is refused, whatever its framing.
    let flood: Vec<_> = (0..120)
        .map(|i| {
            tokio::spawn(oversized_hello(
                data_streams.transport_addr.clone(),
                16 * 1024 * 1024,
                i % 2 == 1,
            ))
        })
        .collect();
    let quiet = assert_quiet_for_10_s(&data_streams.process, "a hello flood");
    let (answers, ()) = tokio::join!(futures::future::join_all(flood), quiet);
    let answers: Vec<Option<String>> = answers.into_iter().map(Result::unwrap).collect();
    let refused = answers
        .iter()
        .filter(|a| a.as_deref().is_some_and(|a| a.starts_with("HTTP/1.1 413")))
        .count();
    let peak = data_streams.process.memory_kib("VmHWM");
    eprintln!(
        "120 hellos of 16 MiB: {refused} answered 413 (the rest cut off), data-streams RSS {} \
         MiB before, peak {} MiB",
        before / 1024,
        peak / 1024
    );
    assert!(refused > 0, "{answers:?}");
    assert!(
        answers
            .iter()
            .flatten()
            .all(|a| a.starts_with("HTTP/1.1 413")),
        "every hello answered is refused as too large: {answers:?}"
    );
    assert!(
        peak < before + 64 * 1024,
        "the flood took data-streams from {before} KiB to a peak of {peak} KiB"
    );

    let (mut worker, connected) =
        a_worker_gets_in_and_syncs(&fake, &data_streams, "http", dirs[1].path()).await;
    eprintln!("after the flood, a worker connected in {connected:?}");
    worker.process.kill9();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thousands_of_idle_api_connections_are_capped_cut_and_cost_little() {
    let dirs = [temp_dir(), temp_dir()];
    let fake = start_fake(500, &[]).await;
    let data_streams = start_data_streams(DataStreamsOpts {
        // Room for more connections than the cap (1,024) and the store: the cap is what holds.
        max_open_files: Some(4096),
        ..DataStreamsOpts::new(dirs[0].path())
    })
    .await;
    let api = data_streams.api();
    let attackers = open_files_for(2_600).saturating_sub(100).min(2_500);
    let before = data_streams.process.memory_kib("VmRSS");
    let addr = data_streams
        .api_url
        .trim_start_matches("http://")
        .to_owned();
    let mut idle = Vec::new();
    for _ in 0..attackers {
        if let Ok(socket) = TcpStream::connect(&addr).await {
            idle.push(socket);
        }
    }
    assert_quiet_for_10_s(&data_streams.process, "idle connections").await;
    let peak = data_streams.process.memory_kib("VmHWM");
    eprintln!(
        "{} idle connections on the API: data-streams RSS {} MiB before, peak {} MiB",
        idle.len(),
        before / 1024,
        peak / 1024
    );
    assert!(
        peak < before + 48 * 1024,
        "{} idle connections took data-streams from {before} KiB to a peak of {peak} KiB",
        idle.len()
    );

    // One address holds at most its share (a quarter of the places), its oldest idle
    // connections closed to make room: a client is served, and a worker syncs, though the
    // attacker still holds its ends.
    wait_until("the API to serve again", CONVERGE_WITHIN, || async {
        api.get("/health").await.0 == StatusCode::OK
    })
    .await;
    let logs = data_streams.process.logs();
    assert!(
        logs.matches("closed to make room (a client").count() == 1,
        "making room is told once: {logs}"
    );
    let (mut worker, _) =
        a_worker_gets_in_and_syncs(&fake, &data_streams, "tcp", dirs[1].path()).await;
    drop(idle);
    worker.process.kill9();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_sockets_on_the_tcp_transport_keep_no_worker_out_and_log_a_summary() {
    let dirs = [temp_dir(), temp_dir()];
    let fake = start_fake(500, &[]).await;
    let data_streams = start_data_streams(DataStreamsOpts::new(dirs[0].path())).await;
    let mut silent = Vec::new();
    for _ in 0..300 {
        if let Ok(socket) = TcpStream::connect(&data_streams.transport_addr).await {
            silent.push(socket);
        }
    }
    let quiet = assert_quiet_for_10_s(&data_streams.process, "300 silent sockets");
    let joined = a_worker_gets_in_and_syncs(&fake, &data_streams, "tcp", dirs[1].path());
    let ((mut worker, connected), ()) = tokio::join!(joined, quiet);
    eprintln!("past 300 silent sockets, a worker connected in {connected:?}");
    drop(silent);
    worker.process.kill9();
}

/// A connection from `from` (any 127.0.0.0/8 address reaches loopback on Linux): an attacker
/// apart from the test's honest clients on 127.0.0.1.
async fn connect_from(from: [u8; 4], to: &str) -> std::io::Result<TcpStream> {
    let to: std::net::SocketAddr = to.parse().expect("a socket address");
    let socket = tokio::net::TcpSocket::new_v4()?;
    socket.bind((std::net::Ipv4Addr::from(from), 0).into())?;
    socket.connect(to).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_api_connections_past_the_descriptor_limit_leave_the_store_its_descriptors() {
    const LIMIT: u64 = 256;
    let dirs = [temp_dir(), temp_dir()];
    let fake = start_fake(2_000, &[]).await;
    let data_streams = start_data_streams(DataStreamsOpts {
        // Soft and hard alike: nothing to raise, the caps must fit under it.
        max_open_files: Some(LIMIT),
        ..DataStreamsOpts::new(dirs[0].path())
    })
    .await;
    let attackers = open_files_for(LIMIT * 4).saturating_sub(100).min(LIMIT * 3);
    let addr = data_streams
        .api_url
        .trim_start_matches("http://")
        .to_owned();
    // From 127.0.0.2: idle sockets past the descriptor limit, held, and dialed again as they
    // are closed, for as long as the worker delivers.
    let stop = tokio_util::sync::CancellationToken::new();
    let flood = {
        let stop = stop.clone();
        tokio::spawn(async move {
            let mut idle = std::collections::VecDeque::new();
            let mut dialed = 0u64;
            while !stop.is_cancelled() {
                if let Ok(Ok(socket)) = tokio::time::timeout(
                    Duration::from_secs(1),
                    connect_from([127, 0, 0, 2], &addr),
                )
                .await
                {
                    idle.push_back(socket);
                    dialed += 1;
                }
                if idle.len() as u64 >= attackers {
                    idle.pop_front();
                    tokio::time::sleep(Duration::from_millis(2)).await;
                }
            }
            dialed
        })
    };
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (mut worker, connected) =
        a_worker_gets_in_and_syncs(&fake, &data_streams, "tcp", dirs[1].path()).await;
    let api = data_streams.api();
    assert_eq!(api.get("/health").await.0, StatusCode::OK);
    stop.cancel();
    let dialed = flood.await.unwrap();
    let logs = data_streams.process.logs();
    let sizes = logs
        .lines()
        .find(|line| line.contains("descriptors: each listener"))
        .unwrap_or("no sizes logged");
    eprintln!(
        "at a limit of {LIMIT}, {dialed} idle API connections dialed while a worker connected \
         in {connected:?} and synced 2,000 contacts; {sizes}"
    );
    assert!(dialed > LIMIT, "the flood went past the limit: {dialed}");
    assert!(
        !logs.contains("storage failed") && !logs.contains("Too many open files"),
        "the store never ran out of descriptors: {logs}"
    );
    worker.process.kill9();
}

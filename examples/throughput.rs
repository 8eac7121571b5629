//! The whole pipeline, measured in one run: a generator source on a worker, its outbox, a
//! real transport (TCP or HTTP on 127.0.0.1, or in memory), the controller, and a durable
//! commit in a real store (sled files in a temporary directory, or PostgreSQL), each batch
//! acked; then, in the same run, the raw baselines of the same records: a length-delimited
//! socket moving the same bytes the same way, and the raw store write (sled `apply_batch` +
//! `flush` + `fdatasync`, or PostgreSQL's multi-row `INSERT ... ON CONFLICT`, one transaction
//! per batch, as many in flight).
//!
//! ```text
//! cargo run --release --example throughput -- --transport tcp --store sled --records 1000000
//! ```
//!
//! With `--processes`, data-streams and the worker run as the release binaries beside this one,
//! each its own process (`cargo build --release --examples` first), the stream started and
//! watched through the HTTP API, and `peak_rss_mib` gives each process's `VmHWM`. With
//! `--read-latency` as well, it then pages through the stored records while a second stream is
//! ingested, and `reads` gives the pages' latency (`p50_ms`, `p99_ms`, `max_ms`). With
//! `--source hubspot-fake` as well, the records are `--records` contacts of the `fake-hubspot`
//! binary (a third process, its own peak RSS reported apart: its data set is not the
//! pipeline's), every property read, no rate limit on either side; the raw baselines then
//! write records of the stored contacts' mean size.
//!
//! Progress goes to stderr; the last line on stdout is one JSON object: `records_per_s`,
//! `mb_per_s`, `ack_p50_us`, `ack_p99_us` (send to ack of each batch, on the worker),
//! `peak_rss_mib` (this process: everything runs in it, measured before the baselines),
//! `raw_socket_records_per_s`, `raw_store_records_per_s`, `ratio_to_raw_socket`,
//! `ratio_to_raw_store`. For sled, the raw store is `apply_batch` + `flush` + `fdatasync` (as
//! durable as the store's commit); `raw_store_flush_only_records_per_s` and its ratio are
//! without the `fdatasync`, sled's own `flush` only. With `--store
//! postgres` and no `--database-url`, a throw-away cluster is started from Debian's binaries
//! (`apt-get install postgresql`).

mod common;
#[path = "throughput/processes.rs"]
mod processes;
#[path = "../benches/support/raw.rs"]
mod raw;

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use clap::{Parser, ValueEnum};
use metrics_util::debugging::{DebugValue, DebuggingRecorder};
use serde_json::json;
use tokio_util::sync::CancellationToken;
use weld_pipeline::encoding::encode_message;
use weld_pipeline::runtime::{Controller, Worker, WorkerConfig};
use weld_pipeline::source::{Generator, GeneratorSources, Sources};
use weld_pipeline::store::{RunState, Storage, StreamStore};
use weld_pipeline::transport::MemoryTransport;
use weld_pipeline::{
    Batch, Checkpoint, Message, Peer, Request, RunId, StreamConfig, StreamName, Timestamp,
    Transport,
};
use weld_pipeline_postgres::{testing::TestCluster, PostgresConfig, PostgresStore};

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum TransportKind {
    Tcp,
    Http,
    Memory,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum SourceKind {
    Generator,
    HubspotFake,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum StoreKind {
    Sled,
    Postgres,
}

/// Measures the pipeline and its raw baselines in one run.
#[derive(Parser, Debug)]
#[command(version, about)]
struct Args {
    /// How the worker reaches the controller.
    #[arg(long, value_enum, default_value = "tcp")]
    transport: TransportKind,
    /// Where the controller commits.
    #[arg(long, value_enum, default_value = "sled")]
    store: StoreKind,
    /// Where the records come from: the generator, or (with `--processes`) `--records`
    /// contacts of the `fake-hubspot` binary, every property read, nothing paced.
    #[arg(long, value_enum, default_value = "generator")]
    source: SourceKind,
    /// With `--source hubspot-fake`: the custom properties the fake defines (a real portal has
    /// hundreds), each set on about a quarter of the records.
    #[arg(long, default_value_t = 300)]
    custom_properties: usize,
    /// Records to sync.
    #[arg(long, default_value_t = 100_000)]
    records: u64,
    /// Records per batch (the generator's page size).
    #[arg(long, default_value_t = 100)]
    batch: u64,
    /// Deliveries in flight (the worker's) and raw writes in flight.
    #[arg(long, default_value_t = 16)]
    in_flight: usize,
    /// The size of each record's JSON.
    #[arg(long, default_value_t = 1024)]
    record_bytes: usize,
    /// Runs data-streams and a worker as the release binaries beside this one (build them with
    /// `cargo build --release --examples`), and reports the peak RSS of each. The worker keeps
    /// its own number of deliveries in flight (16), and its ack latencies stay in it.
    #[arg(long)]
    processes: bool,
    /// With `--processes`: once the stream is stored, pages through it (`GET
    /// /streams/throughput/records?limit=1000`, one request at a time) while a second stream of
    /// as many records is ingested, and reports the pages' latency (`reads`).
    #[arg(long, requires = "processes")]
    read_latency: bool,
    /// The PostgreSQL database for `--store postgres`; a throw-away cluster when unset.
    #[arg(long, env = "WELD_DATABASE_URL", hide_env_values = true)]
    database_url: Option<String>,
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = Args::parse();
    if args.source == SourceKind::HubspotFake && !args.processes {
        return Err("--source hubspot-fake runs through the binaries: add --processes".into());
    }
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    recorder.install()?;
    let dir = tempfile::tempdir()?;
    let mut generator = Generator::contacts(args.records).record_bytes(args.record_bytes);
    let mut bytes_per_record = generator.record(1).data.as_bytes().len();

    // The store, and for PostgreSQL the database (its cluster kept alive to the end).
    let mut cluster = None;
    let url = match (args.store, &args.database_url) {
        (StoreKind::Sled, _) => None,
        (StoreKind::Postgres, Some(url)) => Some(url.clone()),
        (StoreKind::Postgres, None) => {
            let started = TestCluster::start().ok_or("PostgreSQL is not installed")?;
            started.create_database("throughput").await;
            let url = started.url("throughput");
            cluster = Some(started);
            Some(url)
        }
    };

    eprintln!(
        "pipeline: {} records of {bytes_per_record} B in batches of {}, {} in flight, {:?} into {:?}{}",
        args.records,
        args.batch,
        args.in_flight,
        args.transport,
        args.store,
        if args.processes { ", as processes" } else { "" }
    );
    let mut measured = json!({});
    let elapsed = if args.processes {
        let (elapsed, processes) = processes::run(&args, dir.path(), url.as_deref()).await?;
        measured = processes;
        if let Some(bytes) = measured["record_bytes"].as_u64() {
            // The fake's contacts: the raw baselines write records of their mean size.
            generator = Generator::contacts(args.records).record_bytes(bytes as usize);
            bytes_per_record = generator.record(1).data.as_bytes().len();
        }
        elapsed
    } else {
        match args.transport {
            TransportKind::Tcp => {
                let server = weld_pipeline_tcp::TcpTransport::new("127.0.0.1:0");
                run(
                    &args,
                    &dir,
                    controller(url.as_deref(), &dir).await?,
                    server,
                    |server| {
                        let addr = server.local_addr().expect("listening");
                        weld_pipeline_tcp::TcpTransport::new(addr.to_string())
                    },
                )
                .await?
            }
            TransportKind::Http => {
                let server = weld_pipeline_http::transport::HttpTransport::new("127.0.0.1:0");
                run(
                    &args,
                    &dir,
                    controller(url.as_deref(), &dir).await?,
                    server,
                    |server| {
                        let addr = server.local_addr().expect("listening");
                        weld_pipeline_http::transport::HttpTransport::new(addr.to_string())
                    },
                )
                .await?
            }
            TransportKind::Memory => {
                run(
                    &args,
                    &dir,
                    controller(url.as_deref(), &dir).await?,
                    MemoryTransport::new(),
                    Clone::clone,
                )
                .await?
            }
        }
    };
    let mut acks = delivery_us(&snapshotter);
    acks.sort_by(f64::total_cmp);
    let quantile = |q: f64| -> f64 {
        acks.get(((acks.len() as f64 - 1.0) * q).round() as usize)
            .copied()
            .unwrap_or(0.0)
    };
    let records_per_s = args.records as f64 / elapsed.as_secs_f64();
    let peak_rss_mib = if args.processes {
        measured["peak_rss_mib"].take()
    } else {
        json!(peak_rss_mib("self"))
    };

    // The raw baselines, in the same run.
    let batches = args.records.div_ceil(args.batch);
    let sample = batch_of(&generator, 0, args.batch, args.records);
    let mut frame = BytesMut::new();
    encode_message(&Message::Request(Request::Deliver(sample)), &mut frame);
    let frame: Bytes = frame.freeze();
    eprintln!("raw socket: {batches} frames of {} B", frame.len());
    let socket = raw::RawSocket::connect().await;
    let socket_elapsed = socket.send_all(&frame, batches, args.in_flight).await;
    let raw_socket_records_per_s = args.records as f64 / socket_elapsed.as_secs_f64();
    eprintln!("raw store: the same records");
    let store_elapsed = match &url {
        None => raw_sled(&generator, &args, dir.path().join("raw"), true).await,
        Some(url) => raw_postgres(&generator, &args, url).await?,
    };
    let raw_store_records_per_s = args.records as f64 / store_elapsed.as_secs_f64();
    let flush_only = match &url {
        None => {
            let elapsed = raw_sled(&generator, &args, dir.path().join("raw-flush"), false).await;
            Some(args.records as f64 / elapsed.as_secs_f64())
        }
        Some(_) => None,
    };
    drop(cluster);

    println!(
        "{}",
        json!({
            "source": format!("{:?}", args.source).to_lowercase(),
            "transport": format!("{:?}", args.transport).to_lowercase(),
            "store": format!("{:?}", args.store).to_lowercase(),
            "records": args.records,
            "batch": args.batch,
            "in_flight": args.in_flight,
            "record_bytes": bytes_per_record,
            "seconds": elapsed.as_secs_f64(),
            "records_per_s": records_per_s.round(),
            "mb_per_s": (records_per_s * bytes_per_record as f64 / 1e6 * 10.0).round() / 10.0,
            "processes": args.processes,
            "reads": measured["reads"].take(),
            "ack_p50_us": (!acks.is_empty()).then(|| quantile(0.5).round()),
            "ack_p99_us": (!acks.is_empty()).then(|| quantile(0.99).round()),
            "peak_rss_mib": peak_rss_mib,
            "raw_socket_records_per_s": raw_socket_records_per_s.round(),
            "raw_store_records_per_s": raw_store_records_per_s.round(),
            "ratio_to_raw_socket": (records_per_s / raw_socket_records_per_s * 100.0).round() / 100.0,
            "ratio_to_raw_store": (records_per_s / raw_store_records_per_s * 100.0).round() / 100.0,
            "raw_store_flush_only_records_per_s": flush_only.map(f64::round),
            "ratio_to_raw_store_flush_only": flush_only.map(|raw| (records_per_s / raw * 100.0).round() / 100.0),
        })
    );
    Ok(())
}

/// The controller, on sled files in `dir` or on the PostgreSQL database at `url`.
async fn controller<P: Peer>(
    url: Option<&str>,
    dir: &tempfile::TempDir,
) -> Result<Arc<Controller<P>>, weld_pipeline::Error> {
    let kinds = common::source_kinds(common::connector_kinds());
    Ok(match url {
        None => Controller::new(Storage::sled(dir.path().join("controller"))?, kinds),
        Some(url) => {
            let store: Arc<dyn StreamStore> =
                Arc::new(PostgresStore::open(&PostgresConfig::new(url)).await?);
            Controller::new(store, kinds)
        }
    })
}

/// Serves `controller` on `server`, connects a worker through the transport `client` makes
/// from the listening one, starts a generator stream of `args.records` records, and times
/// it from the start to the commit of its last batch (the run reported succeeded with every
/// record counted).
async fn run<T: Transport>(
    args: &Args,
    dir: &tempfile::TempDir,
    controller: Arc<Controller<T::Peer>>,
    server: T,
    client: impl FnOnce(&T) -> T,
) -> Result<Duration, Box<dyn std::error::Error>> {
    let shutdown = CancellationToken::new();
    let listener = server.listen(controller.clone()).await?;
    tokio::spawn(controller.clone().serve(listener, shutdown.clone()));
    let config = WorkerConfig {
        in_flight: args.in_flight,
        ..WorkerConfig::new("throughput", dir.path().join("outbox"))
    };
    let sources = Sources::new().with(Arc::new(GeneratorSources));
    let worker = Worker::open(config, client(&server), sources)?;
    tokio::spawn(worker.run(shutdown.clone()));
    let deadline = Instant::now() + Duration::from_secs(30);
    while controller.workers() == 0 {
        if Instant::now() > deadline {
            return Err("the worker did not connect within 30 s".into());
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }

    let stream = StreamName::new("throughput")?;
    let config: StreamConfig = serde_json::from_value(json!({
        "source": {"kind": "generator", "records": args.records, "page_size": args.batch,
                   "record_bytes": args.record_bytes},
        "interval_secs": 86_400,
    }))?;
    let started = Instant::now();
    let wall = Timestamp::now();
    controller.start_stream(&stream, config).await?;
    let timeout = Duration::from_secs(3_600);
    let finished = loop {
        let status = controller
            .status(&stream)
            .await?
            .ok_or("the stream vanished")?;
        let finished = status
            .last_run
            .as_ref()
            .filter(|run| run.state == RunState::Succeeded)
            .and_then(|run| run.finished_at);
        if let (Some(finished), true) = (finished, status.counts.live >= args.records) {
            break finished;
        }
        if started.elapsed() > timeout {
            return Err(format!("not synced within {timeout:?}: {:?}", status.counts).into());
        }
        tokio::time::sleep(STATUS_POLL).await;
    };
    let elapsed = run_time(wall, finished, started.elapsed());
    shutdown.cancel();
    eprintln!(
        "pipeline: {:.2} s, {:.0} records/s",
        elapsed.as_secs_f64(),
        args.records as f64 / elapsed.as_secs_f64()
    );
    Ok(elapsed)
}

/// How often the pipeline's status is asked while it runs. A status reads the stream's run and
/// counts from the store, which on PostgreSQL sums the run's ledger rows (about 4 ms of the
/// database's time at a million records): asked every few milliseconds, as it once was, it took
/// an eighth of the machine from the pipeline it measured. The run's time is not rounded up to
/// it: it is read from the run's own `finished_at`.
const STATUS_POLL: Duration = Duration::from_millis(50);

/// A run's time, from just before it was started (`wall`, this machine's clock) to the
/// `finished` its service recorded (milliseconds, the same clock), never more than what was
/// seen waiting for it (`waited`).
fn run_time(wall: Timestamp, finished: Timestamp, waited: Duration) -> Duration {
    let millis = finished.as_millis().saturating_sub(wall.as_millis()).max(1);
    Duration::from_millis(u64::try_from(millis).unwrap_or(1)).min(waited)
}

/// Every delivery's time to its answer, in microseconds, from the worker's histogram.
fn delivery_us(snapshotter: &metrics_util::debugging::Snapshotter) -> Vec<f64> {
    snapshotter
        .snapshot()
        .into_vec()
        .into_iter()
        .filter(|(key, ..)| key.key().name() == "weld_delivery_seconds")
        .flat_map(|(.., value)| match value {
            DebugValue::Histogram(values) => values.into_iter().map(|v| v.0 * 1e6).collect(),
            _ => Vec::new(),
        })
        .collect()
}

/// Batch `seq` of the run: records `seq * size + 1 ..`, up to `records`.
fn batch_of(generator: &Generator, seq: u64, size: u64, records: u64) -> Batch {
    let first = seq * size + 1;
    let last = (first + size - 1).min(records);
    Batch::new(StreamName::new("throughput").expect("valid"), RunId(1), seq)
        .with_records((first..=last).map(|i| generator.record(i)).collect())
        .with_cursor(Checkpoint::from_bytes(last.to_string()))
        .with_last(last == records)
}

/// Raw sled of the same records, batch by batch: `apply_batch`, `flush`, and `fdatasync` when
/// `durable`.
async fn raw_sled(
    generator: &Generator,
    args: &Args,
    dir: std::path::PathBuf,
    durable: bool,
) -> Duration {
    let (generator, records, size) = (generator.clone(), args.records, args.batch);
    tokio::task::spawn_blocking(move || {
        std::fs::create_dir_all(&dir).expect("the raw directory");
        let sled = raw::RawSled::open(&dir, durable);
        // Only the writes are timed: the records are made before each.
        let mut elapsed = Duration::ZERO;
        for seq in 0..records.div_ceil(size) {
            let batch = batch_of(&generator, seq, size, records);
            let started = Instant::now();
            sled.write(&batch);
            elapsed += started.elapsed();
        }
        elapsed
    })
    .await
    .expect("the raw sled writer")
}

/// Raw PostgreSQL of the same records: one multi-row upsert per batch in its own transaction,
/// `in_flight` connections at once.
async fn raw_postgres(
    generator: &Generator,
    args: &Args,
    url: &str,
) -> Result<Duration, Box<dyn std::error::Error>> {
    let mut clients = Vec::new();
    for _ in 0..args.in_flight {
        let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls).await?;
        tokio::spawn(connection);
        clients.push(client);
    }
    clients[0].batch_execute(raw::POSTGRES_TABLE).await?;
    let batches = args.records.div_ceil(args.batch);
    // Only the writes are timed: each round's records (one batch per connection) are made
    // before it.
    let mut elapsed = Duration::ZERO;
    let mut seq = 0;
    while seq < batches {
        let round: Vec<Batch> = (seq..batches.min(seq + clients.len() as u64))
            .map(|s| batch_of(generator, s, args.batch, args.records))
            .collect();
        seq += round.len() as u64;
        let started = Instant::now();
        futures::future::join_all(
            round
                .iter()
                .zip(&clients)
                .map(|(batch, client)| raw::postgres_upsert(client, batch)),
        )
        .await;
        elapsed += started.elapsed();
    }
    Ok(elapsed)
}

/// The peak resident set (`VmHWM`) of process `pid` (`self`: this one), in MiB.
fn peak_rss_mib(pid: &str) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kib| kib.parse::<f64>().ok())
        })
        .map_or(0.0, |kib| (kib / 1024.0 * 10.0).round() / 10.0)
}

//! Read latency of the PostgreSQL store: a page of 1,000 records (`StreamStore::records`, what
//! `GET /streams/{name}/records?limit=1000` runs) with 1,000,000 records stored, on a
//! throw-away cluster, idle and while another stream ingests.
//!
//! It loads the records through the store itself (commits of 1,000 records of 512 bytes, eight
//! in flight), then reads 400 pages from tokens spread over the whole key range, and prints one
//! JSON line: p50 and p99 of a page idle and under ingestion, and the load's records/s. A
//! percentile needs the whole sample, which criterion does not report: hence its own harness.
//!
//! `cargo bench --bench postgres_pages` (several minutes; RECORDS=100000 for a quicker look).
//! Without PostgreSQL installed it says so and measures nothing.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use weld_pipeline::source::Generator;
use weld_pipeline::store::{encode_token, Archived, StreamStore};
use weld_pipeline::{Batch, Checkpoint, RunId, Sink, StreamName};
use weld_pipeline_postgres::{testing, PostgresConfig, PostgresStore};

const PAGE: usize = 1_000;
const PER_BATCH: u64 = 1_000;
const IN_FLIGHT: usize = 8;
const PAGES: usize = 400;

fn batch(stream: &StreamName, seq: u64, generator: &Generator) -> Batch {
    Batch::new(stream.clone(), RunId(1), seq)
        .with_records(
            (seq * PER_BATCH + 1..=seq * PER_BATCH + PER_BATCH)
                .map(|i| generator.record(i))
                .collect(),
        )
        .with_cursor(Checkpoint::from_bytes(seq.to_string()))
}

/// Commits `batches` batches of `stream`, `IN_FLIGHT` at once, until done or `stop` is set.
async fn load(store: &PostgresStore, stream: &StreamName, batches: u64, stop: &AtomicBool) {
    let generator = Generator::contacts(u64::MAX / 2).record_bytes(512);
    let mut seq = 0;
    while seq < batches && !stop.load(Ordering::Relaxed) {
        let round: Vec<Batch> = (seq..(seq + IN_FLIGHT as u64).min(batches))
            .map(|s| batch(stream, s, &generator))
            .collect();
        seq += round.len() as u64;
        for result in futures::future::join_all(round.iter().map(|b| store.commit(b))).await {
            result.expect("a commit");
        }
    }
}

/// p50 and p99 of `PAGES` page reads of `stream`, from ids spread over `1..=records`.
async fn pages(store: &PostgresStore, stream: &StreamName, records: u64) -> (f64, f64) {
    let mut times = Vec::with_capacity(PAGES);
    for i in 0..PAGES as u64 {
        let after = (i * 7_919 % records.saturating_sub(PAGE as u64).max(1)).to_string();
        let token = encode_token(&after);
        let started = Instant::now();
        let page = store
            .records(stream, Some(&token), PAGE, Archived::Live)
            .await
            .expect("a page");
        times.push(started.elapsed());
        assert!(!page.records.is_empty());
    }
    times.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1_000.0;
    (ms(times[PAGES / 2]), ms(times[PAGES * 99 / 100]))
}

fn main() {
    let Some(cluster) = testing::shared() else {
        return;
    };
    let records: u64 = std::env::var("RECORDS")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(1_000_000);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        cluster.create_database("pages").await;
        let store = PostgresStore::open(&PostgresConfig::new(cluster.url("pages")))
            .await
            .expect("store");
        let stream = StreamName::new("contacts").expect("valid");
        let never = AtomicBool::new(false);
        let started = Instant::now();
        load(&store, &stream, records / PER_BATCH, &never).await;
        let load_per_s = records as f64 / started.elapsed().as_secs_f64();
        assert_eq!(store.counts(&stream).await.expect("counts").live, records);

        let (idle_p50, idle_p99) = pages(&store, &stream, records).await;

        // The same reads while another stream ingests as fast as the store takes it.
        let stop = Arc::new(AtomicBool::new(false));
        let ingest = {
            let (store, stop) = (store.clone(), stop.clone());
            tokio::spawn(async move {
                let other = StreamName::new("companies").expect("valid");
                load(&store, &other, u64::MAX, &stop).await;
            })
        };
        tokio::time::sleep(Duration::from_secs(1)).await;
        let (busy_p50, busy_p99) = pages(&store, &stream, records).await;
        stop.store(true, Ordering::Relaxed);
        ingest.await.expect("the ingest");

        println!(
            "{}",
            serde_json::json!({
                "records": records,
                "page": PAGE,
                "load_records_per_s": load_per_s.round(),
                "idle_page_p50_ms": idle_p50,
                "idle_page_p99_ms": idle_p99,
                "ingesting_page_p50_ms": busy_p50,
                "ingesting_page_p99_ms": busy_p99,
            })
        );
    });
}

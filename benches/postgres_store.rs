//! The PostgreSQL store's commit against a raw multi-row `INSERT ... ON CONFLICT` of the same
//! rows, in the same run, on a throw-away cluster (`fsync` on): batches of 100 x 1 KiB records,
//! eight commits in flight.
//!
//! - `raw_insert_on_conflict_8_in_flight`: per batch, one transaction holding one `INSERT ...
//!   SELECT FROM unnest(...) ON CONFLICT (id) DO UPDATE` of its rows into a table of the same
//!   columns as the store's (`properties` jsonb and `data` json among them), eight at once on eight
//!   connections;
//! - `store_commit_8_in_flight`: `PostgresStore::commit` of eight batches of one run at once
//!   (records, ledger, run, checkpoint and counts in one transaction each);
//! - `raw_copy_then_upsert_8_in_flight`: the bulk path the other way, per batch one
//!   transaction: binary `COPY` of its rows into a temporary table, then one `INSERT ... SELECT
//!   ... ON CONFLICT` from it (what the store would do with `COPY`).
//!
//! They run in that order, each after an untimed `CHECKPOINT`, so that none pays for the WAL
//! and dirty pages the one before it left (the store once ran right after the `COPY` bench and
//! measured 0.74-0.77x raw for that reason alone, 0.89-0.91x on its own).
//!
//! `cargo bench --bench postgres_store`; without PostgreSQL installed it says so and measures
//! nothing.

// criterion's macros generate undocumented items.
#![allow(missing_docs)]

use std::time::{Duration, Instant};

#[path = "support/raw.rs"]
mod raw;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use weld_pipeline::source::Generator;
use weld_pipeline::{Batch, Checkpoint, RunId, Sink, StreamName};
use weld_pipeline_postgres::{testing, PostgresConfig, PostgresStore};

const IN_FLIGHT: u64 = 8;

fn batch(seq: u64, generator: &Generator) -> Batch {
    Batch::new(StreamName::new("contacts").expect("valid"), RunId(1), seq)
        .with_records(
            (seq * 100 + 1..=seq * 100 + 100)
                .map(|i| generator.record(i))
                .collect(),
        )
        .with_cursor(Checkpoint::from_bytes(seq.to_string()))
}

fn postgres(c: &mut Criterion) {
    let Some(cluster) = testing::shared() else {
        return;
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let generator = Generator::contacts(u64::MAX / 2).record_bytes(1024);
    let url = runtime.block_on(async {
        cluster.create_database("bench").await;
        cluster.url("bench")
    });
    let store = runtime
        .block_on(PostgresStore::open(&PostgresConfig::new(&url)))
        .expect("store");
    let connections: Vec<tokio_postgres::Client> = runtime.block_on(async {
        let mut clients = Vec::new();
        for _ in 0..IN_FLIGHT {
            let (client, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
                .await
                .expect("connect");
            tokio::spawn(connection);
            clients.push(client);
        }
        clients[0]
            .batch_execute(raw::POSTGRES_TABLE)
            .await
            .expect("raw table");
        clients[0]
            .batch_execute("CREATE TABLE raw_copy (LIKE raw INCLUDING ALL)")
            .await
            .expect("raw copy table");
        for client in &clients {
            client
                .batch_execute(
                    "CREATE TEMPORARY TABLE staging (id text, ms bigint, archived boolean,
                         data text) ON COMMIT DELETE ROWS",
                )
                .await
                .expect("staging table");
        }
        clients
    });

    let mut group = c.benchmark_group("postgres_commit_100x1KiB");
    group.throughput(Throughput::Elements(100 * IN_FLIGHT));
    group.sample_size(20);
    group.measurement_time(Duration::from_secs(10));

    // Each starts from a settled database: what one writes (its WAL to checkpoint, its dirty
    // pages) must not be paid by the next. Untimed.
    let settle = || {
        runtime
            .block_on(connections[0].batch_execute("CHECKPOINT"))
            .expect("checkpoint");
    };
    settle();
    let mut next = 0u64;
    group.bench_function("raw_insert_on_conflict_8_in_flight", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let batches: Vec<Batch> = (next..next + IN_FLIGHT)
                    .map(|seq| batch(seq, &generator))
                    .collect();
                next += IN_FLIGHT;
                let started = Instant::now();
                runtime.block_on(futures::future::join_all(
                    batches
                        .iter()
                        .zip(&connections)
                        .map(|(batch, client)| raw::postgres_upsert(client, batch)),
                ));
                total += started.elapsed();
            }
            total
        })
    });

    settle();
    let mut seq = 0u64;
    group.bench_function("store_commit_8_in_flight", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let batches: Vec<Batch> = (seq..seq + IN_FLIGHT)
                    .map(|s| batch(s, &generator))
                    .collect();
                seq += IN_FLIGHT;
                let started = Instant::now();
                runtime.block_on(futures::future::join_all(
                    batches.iter().map(|batch| store.commit(batch)),
                ));
                total += started.elapsed();
            }
            total
        })
    });
    settle();
    let mut copied = 0u64;
    group.bench_function("raw_copy_then_upsert_8_in_flight", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let batches: Vec<Batch> = (copied..copied + IN_FLIGHT)
                    .map(|seq| batch(seq, &generator))
                    .collect();
                copied += IN_FLIGHT;
                let started = Instant::now();
                runtime.block_on(futures::future::join_all(
                    batches
                        .iter()
                        .zip(&connections)
                        .map(|(batch, client)| raw_copy(client, batch)),
                ));
                total += started.elapsed();
            }
            total
        })
    });

    group.finish();
}

/// One transaction: the batch's rows copied in binary into the connection's staging table,
/// then upserted from it in one statement.
async fn raw_copy(client: &tokio_postgres::Client, batch: &Batch) {
    use tokio_postgres::binary_copy::BinaryCopyInWriter;
    use tokio_postgres::types::Type;

    client.batch_execute("BEGIN").await.expect("begin");
    let sink = client
        .copy_in("COPY staging (id, ms, archived, data) FROM STDIN (FORMAT binary)")
        .await
        .expect("copy in");
    let writer = BinaryCopyInWriter::new(sink, &[Type::TEXT, Type::INT8, Type::BOOL, Type::TEXT]);
    futures::pin_mut!(writer);
    for record in &batch.records {
        let data = std::str::from_utf8(record.data.as_bytes()).expect("UTF-8");
        writer
            .as_mut()
            .write(&[
                &record.id.as_str(),
                &record.updated_at.as_millis(),
                &record.archived,
                &data,
            ])
            .await
            .expect("row");
    }
    writer.finish().await.expect("copied");
    client
        .execute(
            "INSERT INTO raw_copy (id, updated_at, created_at, archived, properties, data, run_id,
                 synced_at)
             SELECT id, to_timestamp(0) + ms * interval '1 millisecond',
                    to_timestamp(0) + ms * interval '1 millisecond', archived,
                    data::jsonb -> 'properties', data::json, 1, now()
             FROM staging
             ON CONFLICT (id) DO UPDATE SET updated_at = EXCLUDED.updated_at,
                 created_at = EXCLUDED.created_at, archived = EXCLUDED.archived,
                 properties = EXCLUDED.properties, data = EXCLUDED.data,
                 run_id = EXCLUDED.run_id, synced_at = EXCLUDED.synced_at
             WHERE raw_copy.updated_at <= EXCLUDED.updated_at",
            &[],
        )
        .await
        .expect("upsert");
    client.batch_execute("COMMIT").await.expect("commit");
}

criterion_group!(benches, postgres);
criterion_main!(benches);

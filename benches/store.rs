//! The store's durable commit against raw sled in the same run: batches of 100 x 1 KiB records.
//!
//! - `raw_sled_apply_batch_flush`: sled `apply_batch` of the records, then `flush` (what
//!   the end-to-end throughput bar is measured against; no `fdatasync`);
//! - `store_commit_sequential`: `SledStore::commit` one batch at a time (records, ledger, checkpoint,
//!   counts, run, then flush + `fdatasync`);
//! - `store_commit_8_in_flight`: eight commits at once, sharing their syncs (group commit).
//!
//! `cargo bench --bench store`

// criterion's macros generate undocumented items.
#![allow(missing_docs)]

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use weld_pipeline::source::Generator;
use weld_pipeline::store::{SledStore, SledStoreConfig};
use weld_pipeline::{Batch, Checkpoint, RunId, Sink, StreamName};

fn batches(count: u64) -> Vec<Batch> {
    let generator = Generator::contacts(count * 100).record_bytes(1024);
    (0..count)
        .map(|seq| {
            Batch::new(StreamName::new("contacts").expect("valid"), RunId(1), seq)
                .with_records(
                    (seq * 100 + 1..=seq * 100 + 100)
                        .map(|i| generator.record(i))
                        .collect(),
                )
                .with_cursor(Checkpoint::from_bytes(seq.to_string()))
        })
        .collect()
}

fn store(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let pool = batches(200);
    let mut group = c.benchmark_group("commit_100x1KiB");
    group.throughput(Throughput::Elements(100));
    group.sample_size(30);

    let raw_dir = tempfile::tempdir().expect("tempdir");
    let raw = sled::Config::new()
        .path(raw_dir.path())
        .cache_capacity(32 << 20)
        .open()
        .expect("sled");
    let mut n = 0usize;
    group.bench_function("raw_sled_apply_batch_flush", |b| {
        b.iter(|| {
            let batch = &pool[n % pool.len()];
            n += 1;
            let mut write = sled::Batch::default();
            for record in &batch.records {
                write.insert(record.id.as_bytes(), record.data.as_bytes());
            }
            raw.apply_batch(write).expect("apply");
            raw.flush().expect("flush");
        })
    });

    let dir = tempfile::tempdir().expect("tempdir");
    let store = SledStore::open(&SledStoreConfig::new(dir.path())).expect("store");
    let mut seq = 0u64;
    group.bench_function("store_commit_sequential", |b| {
        b.to_async(&runtime).iter(|| {
            let mut batch = pool[(seq % 200) as usize].clone();
            batch.seq = seq;
            seq += 1;
            let store = store.clone();
            async move { store.commit(&batch).await.expect("commit") }
        })
    });

    group.throughput(Throughput::Elements(800));
    group.bench_function("store_commit_8_in_flight", |b| {
        b.to_async(&runtime).iter(|| {
            let commits: Vec<_> = (0..8)
                .map(|_| {
                    let mut batch = pool[(seq % 200) as usize].clone();
                    batch.seq = seq;
                    seq += 1;
                    let store = store.clone();
                    async move { store.commit(&batch).await.expect("commit") }
                })
                .collect();
            futures::future::join_all(commits)
        })
    });
    group.finish();
}

criterion_group!(benches, store);
criterion_main!(benches);

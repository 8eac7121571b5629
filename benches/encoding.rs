//! The batch encoding's hot path: encode and decode a batch of 100 x 1 KiB contact records,
//! beside what it replaces, parsing every record's JSON, in the same run.
//!
//! `cargo bench --bench encoding`

// criterion's macros generate undocumented items.
#![allow(missing_docs)]

use std::hint::black_box;

use bytes::BytesMut;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use weld_pipeline::encoding::{decode_batch, encode_batch};
use weld_pipeline::source::Generator;
use weld_pipeline::{Batch, Checkpoint, RunId, StreamName};

fn batch() -> Batch {
    let generator = Generator::contacts(100).record_bytes(1024);
    Batch::new(
        StreamName::new("contacts").expect("valid name"),
        RunId(1),
        0,
    )
    .with_records((1..=100).map(|i| generator.record(i)).collect())
    .with_cursor(Checkpoint::from_bytes("100"))
}

fn encoding(c: &mut Criterion) {
    let batch = batch();
    let mut encoded = BytesMut::new();
    encode_batch(&batch, &mut encoded);
    let encoded = encoded.freeze();

    let mut group = c.benchmark_group("batch_100x1KiB");
    group.throughput(Throughput::Elements(100));
    group.bench_function("encode", |b| {
        let mut out = BytesMut::with_capacity(encoded.len());
        b.iter(|| {
            out.clear();
            encode_batch(black_box(&batch), &mut out);
        })
    });
    group.bench_function("decode", |b| {
        b.iter(|| decode_batch(black_box(encoded.clone())).expect("decodes"))
    });
    // The path the encoding avoids: parsing each record's JSON on the receiving side.
    group.bench_function("decode_and_parse_every_record", |b| {
        b.iter(|| {
            let batch = decode_batch(black_box(encoded.clone())).expect("decodes");
            for record in &batch.records {
                black_box(
                    serde_json::from_slice::<serde_json::Value>(record.data.as_bytes())
                        .expect("json"),
                );
            }
        })
    });
    group.finish();
}

criterion_group!(benches, encoding);
criterion_main!(benches);

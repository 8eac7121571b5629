//! The HTTP transport moving batches of 100 x 1 KiB records, each acked, 16 in flight (over a
//! pool of keep-alive connections).
//!
//! `cargo bench --bench http_batch_roundtrip`

// criterion's macros generate undocumented items.
#![allow(missing_docs)]

mod support;

use std::sync::Arc;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use support::{batch, deliver_all, AckAtOnce};
use weld_pipeline::{Hello, Listener, Transport};
use weld_pipeline_http::transport::HttpTransport;

const BATCHES: u64 = 64;
const IN_FLIGHT: usize = 16;

fn http(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let batch = batch();
    let (peer, _kept) = runtime.block_on(async {
        let controller = HttpTransport::new("127.0.0.1:0");
        let mut listener = controller
            .listen(Arc::new(AckAtOnce))
            .await
            .expect("listen");
        let worker = HttpTransport::new(listener.local_addr().to_string());
        let peer = worker
            .connect(Hello::new("bench", vec![]), Arc::new(AckAtOnce))
            .await
            .expect("connect");
        let accepted = listener.accept().await.expect("accept");
        (peer, (listener, accepted))
    });
    let mut group = c.benchmark_group("http_batch_roundtrip_100x1KiB_16_in_flight");
    group.throughput(Throughput::Elements(BATCHES * 100));
    group.sample_size(20);
    group.bench_function("transport", |b| {
        b.to_async(&runtime)
            .iter(|| deliver_all(peer.clone(), batch.clone(), BATCHES, IN_FLIGHT))
    });
    group.finish();
}

criterion_group!(benches, http);
criterion_main!(benches);

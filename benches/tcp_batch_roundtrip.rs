//! The TCP transport moving batches of 100 x 1 KiB records, each acked, 16 in flight, beside a
//! raw length-delimited socket moving the same bytes the same way, in the same run.
//!
//! - `transport`: `Peer::request(Deliver(batch))` answered by a handler that acks at once (no
//!   storage: this measures the transport). Each batch is encoded, framed, sent, decoded into
//!   records (their JSON sliced, not parsed), answered with an ack frame and matched to its
//!   request by correlation id.
//! - `raw_length_delimited`: the same encoded batch bytes as length-delimited frames over a
//!   tokio socket, each answered by a 10-byte frame, 16 outstanding: the floor of what any
//!   framed protocol on this machine can do.
//!
//! `cargo bench --bench tcp_batch_roundtrip`

// criterion's macros generate undocumented items.
#![allow(missing_docs)]

#[path = "support/raw.rs"]
mod raw;
mod support;

use std::sync::Arc;

use bytes::BytesMut;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use support::{batch, deliver_all, AckAtOnce};
use weld_pipeline::encoding::encode_message;
use weld_pipeline::{Hello, Listener, Message, Request, Transport};
use weld_pipeline_tcp::{TcpConfig, TcpTransport};

/// The allocator the reference services run on, for the transport and the raw socket alike.
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

const BATCHES: u64 = 64;
const IN_FLIGHT: usize = 16;

fn tcp(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let batch = batch();
    let mut group = c.benchmark_group("tcp_batch_roundtrip_100x1KiB_16_in_flight");
    group.throughput(Throughput::Elements(BATCHES * 100));
    group.sample_size(20);

    let (peer, _listener) = runtime.block_on(async {
        let controller = TcpTransport::with_config("127.0.0.1:0", TcpConfig::default());
        let mut listener = controller
            .listen(Arc::new(AckAtOnce))
            .await
            .expect("listen");
        let worker = TcpTransport::new(listener.local_addr().to_string());
        let peer = worker
            .connect(Hello::new("bench", vec![]), Arc::new(AckAtOnce))
            .await
            .expect("connect");
        let _accepted = listener.accept().await.expect("accept");
        (peer, (listener, _accepted))
    });
    group.bench_function("transport", |b| {
        b.to_async(&runtime)
            .iter(|| deliver_all(peer.clone(), batch.clone(), BATCHES, IN_FLIGHT))
    });

    let mut encoded = BytesMut::new();
    encode_message(
        &Message::Request(Request::Deliver(batch.clone())),
        &mut encoded,
    );
    let encoded = encoded.freeze();
    let raw = runtime.block_on(raw::RawSocket::connect());
    group.bench_function("raw_length_delimited", |b| {
        b.to_async(&runtime)
            .iter(|| raw.send_all(&encoded, BATCHES, IN_FLIGHT))
    });
    group.finish();
}

criterion_group!(benches, tcp);
criterion_main!(benches);

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

mod support;

use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use futures::{SinkExt, StreamExt};
use support::{batch, deliver_all, AckAtOnce};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio_util::codec::{Framed, LengthDelimitedCodec};
use weld_pipeline::encoding::encode_message;
use weld_pipeline::{Hello, Listener, Message, Request, Transport};
use weld_pipeline_tcp::{TcpConfig, TcpTransport};

const BATCHES: u64 = 64;
const IN_FLIGHT: usize = 16;

fn codec() -> LengthDelimitedCodec {
    LengthDelimitedCodec::builder()
        .max_frame_length(16 << 20)
        .new_codec()
}

async fn raw_server() -> std::net::SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        while let Ok((socket, _)) = listener.accept().await {
            socket.set_nodelay(true).expect("nodelay");
            tokio::spawn(async move {
                let mut framed = Framed::new(socket, codec());
                let ack = Bytes::from_static(&[0u8; 10]);
                while let Some(Ok(_frame)) = framed.next().await {
                    if framed.send(ack.clone()).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    addr
}

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
    let framed = runtime.block_on(async {
        let addr = raw_server().await;
        let socket = TcpStream::connect(addr).await.expect("connect");
        socket.set_nodelay(true).expect("nodelay");
        Framed::new(socket, codec())
    });
    let (sink, stream) = framed.split();
    let sink = Arc::new(tokio::sync::Mutex::new(sink));
    let stream = Arc::new(tokio::sync::Mutex::new(stream));
    group.bench_function("raw_length_delimited", |b| {
        b.to_async(&runtime).iter(|| {
            let (sink, stream, encoded) = (sink.clone(), stream.clone(), encoded.clone());
            async move {
                let window = Arc::new(Semaphore::new(IN_FLIGHT));
                let sending = {
                    let window = window.clone();
                    async move {
                        let mut sink = sink.lock().await;
                        for _ in 0..BATCHES {
                            window.acquire().await.expect("open").forget();
                            sink.send(encoded.clone()).await.expect("send");
                        }
                    }
                };
                let receiving = async move {
                    let mut stream = stream.lock().await;
                    for _ in 0..BATCHES {
                        stream.next().await.expect("ack").expect("frame");
                        window.add_permits(1);
                    }
                };
                futures::join!(sending, receiving);
            }
        })
    });
    group.finish();
}

criterion_group!(benches, tcp);
criterion_main!(benches);

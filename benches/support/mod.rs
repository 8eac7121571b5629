//! What the transport benches share: a handler that acks at once, and a batch of 100 x 1 KiB
//! contacts.

use async_trait::async_trait;
use futures::StreamExt;
use weld_pipeline::source::Generator;
use weld_pipeline::{
    Batch, Checkpoint, Commit, Event, Handler, Hello, Peer, Request, Response, RunId, StreamName,
};

/// Acks every delivery at once: the benches measure the transport, not a store.
pub(crate) struct AckAtOnce;

#[async_trait]
impl Handler for AckAtOnce {
    async fn request(&self, _from: &Hello, request: Request) -> Response {
        match request {
            Request::Deliver(batch) => Response::Ack {
                batch: batch.id(),
                commit: Commit::Stored {
                    records: batch.records.len() as u64,
                },
            },
            _ => Response::Started,
        }
    }
    async fn event(&self, _from: &Hello, _event: Event) {}
}

/// 100 contacts of about 1 KiB.
pub(crate) fn batch() -> Batch {
    let generator = Generator::contacts(100).record_bytes(1024);
    Batch::new(StreamName::new("contacts").expect("valid"), RunId(1), 0)
        .with_records((1..=100).map(|i| generator.record(i)).collect())
        .with_cursor(Checkpoint::from_bytes("100"))
}

/// Delivers `count` copies of `batch` (numbered) through `peer`, `in_flight` at a time, each
/// waiting for its ack.
pub(crate) async fn deliver_all<P: Peer>(peer: P, batch: Batch, count: u64, in_flight: usize) {
    futures::stream::iter(0..count)
        .map(|seq| {
            let peer = peer.clone();
            let batch = Batch {
                seq,
                epoch: 0,
                lease: 0,
                repaired: 0,
                ..batch.clone()
            };
            async move { peer.request(Request::Deliver(batch)).await.expect("ack") }
        })
        .buffer_unordered(in_flight)
        .for_each(|_| async {})
        .await
}

//! The outbox's tests: order, restarts, pieces, writes when due, backpressure, healing.

use std::time::Duration;

use bytes::BytesMut;
use tokio_util::sync::CancellationToken;

use super::pieces::{join_pieces, Stored};
use super::*;
use crate::checkpoint::Checkpoint;
use crate::encoding::{decode_batch, encode_batch};
use crate::record::{Json, Record, Timestamp};
use crate::stream::{RunId, StreamName};

fn batch(stream: &str, seq: u64, payload: usize) -> Batch {
    Batch::new(StreamName::new(stream).unwrap(), RunId(1), seq)
        .with_records(vec![Record::new(
            seq.to_string(),
            Timestamp::EPOCH,
            Json::from_serialize(&"x".repeat(payload)).unwrap(),
        )])
        .with_cursor(Checkpoint::from_bytes(format!("{seq}")))
}

#[tokio::test]
async fn a_batch_larger_than_a_piece_is_stored_in_pieces_read_whole_and_removed_whole() {
    let dir = tempfile::tempdir().unwrap();
    let config = OutboxConfig::new(dir.path());
    let big = batch("a", 1, 5 * PIECE_BYTES / 2);
    let stream = StreamName::new("a").unwrap();
    {
        let outbox = Outbox::open(&config).unwrap();
        outbox.push(&batch("a", 0, 10)).await.unwrap();
        let key = outbox.push(&big).await.unwrap();
        outbox.push(&batch("a", 2, 10)).await.unwrap();
        outbox.flush().unwrap();
        // Three pieces under the big one's key, between its neighbours.
        assert_eq!(outbox.tree().unwrap().len(), 1 + 3 + 1);
        let entries = outbox.entries(key, 2).unwrap();
        assert_eq!(entries[0].batch, big);
        assert_eq!(entries[1].batch.seq, 2);
        outbox.flush().unwrap();
    }
    let outbox = Outbox::open(&config).unwrap();
    let mut encoded = BytesMut::new();
    encode_batch(&big, &mut encoded);
    assert!(
        outbox.bytes() > encoded.len() as u64,
        "counted whole after a restart"
    );
    assert_eq!(outbox.len(), 3);
    outbox.remove(1).unwrap();
    assert_eq!(outbox.tree().unwrap().len(), 2, "every piece removed");
    assert_eq!(waiting(&outbox), [0, 2]);
    outbox.remove(0).unwrap();
    outbox.remove(2).unwrap();
    assert_eq!(outbox.bytes(), 0);
    assert!(!outbox.holds(&stream));
}

#[tokio::test]
async fn outbox_keeps_order_and_survives_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let config = OutboxConfig::new(dir.path());
    {
        let outbox = Outbox::open(&config).unwrap();
        for seq in 0..5 {
            outbox.push(&batch("a", seq, 10)).await.unwrap();
        }
        outbox.remove(0).unwrap();
        assert_eq!(outbox.written(), 0, "nothing waited a second yet");
        // Dropped without a flush: a clean exit writes what waits.
    }
    let outbox = Outbox::open(&config).unwrap();
    assert_eq!(waiting(&outbox), [1, 2, 3, 4]);
    assert_eq!(
        outbox.position(&StreamName::new("a").unwrap(), 0, 0),
        Some(Checkpoint::from_bytes("4"))
    );
    // New entries go after the old ones.
    let key = outbox.push(&batch("a", 5, 10)).await.unwrap();
    assert_eq!(key, 5);
}

/// What the outbox's tree holds, joined: keys and sequence numbers.
/// The seqs of the batches the outbox holds, in order.
fn waiting(outbox: &Outbox) -> Vec<u64> {
    outbox
        .entries(0, 100)
        .unwrap()
        .iter()
        .map(|e| e.batch.seq)
        .collect()
}

fn on_disk(outbox: &Outbox) -> Vec<(u64, u64)> {
    join_pieces(outbox.tree().unwrap().iter())
        .unwrap()
        .into_iter()
        .map(|Stored { key, value }| (key, decode_batch(value).unwrap().seq))
        .collect()
}

#[tokio::test(start_paused = true)]
async fn only_batches_waiting_longer_than_write_after_reach_the_disk() {
    let dir = tempfile::tempdir().unwrap();
    let outbox = Outbox::open(&OutboxConfig::new(dir.path())).unwrap();
    let acked = outbox.push(&batch("a", 0, 10)).await.unwrap();
    let waits = outbox.push(&batch("a", 1, 10)).await.unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    outbox.remove(acked).unwrap();
    let later = outbox.push(&batch("a", 2, 10)).await.unwrap();
    assert!(on_disk(&outbox).is_empty(), "nothing waited a second yet");

    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(
        on_disk(&outbox),
        [(waits, 1)],
        "the one that waited is written"
    );
    assert_eq!(outbox.written(), 1);
    outbox.remove(later).unwrap();
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(
        on_disk(&outbox),
        [(waits, 1)],
        "the acknowledged one never is"
    );

    // A written batch's ack removes it from the disk too.
    outbox.remove(waits).unwrap();
    assert!(on_disk(&outbox).is_empty());
    assert!(outbox.is_empty());
}

#[tokio::test]
async fn write_after_zero_writes_each_batch_as_it_is_pushed() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = OutboxConfig::new(dir.path());
    config.write_after = Duration::ZERO;
    let outbox = Outbox::open(&config).unwrap();
    let key = outbox.push(&batch("a", 7, 10)).await.unwrap();
    assert_eq!(on_disk(&outbox), [(key, 7)]);
    assert_eq!(outbox.written(), 1);
}

/// Polls `done` every 10 ms until it holds, for 30 s at most.
async fn eventually(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while !done() {
        assert!(std::time::Instant::now() < deadline, "never: {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn a_failed_outbox_stalls_pushes_delivers_from_memory_and_heals_by_writing_memory_anew() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = OutboxConfig::new(dir.path());
    config.write_after = Duration::from_millis(50);
    let outbox = Outbox::open(&config).unwrap();
    let acked = outbox.push(&batch("a", 0, 10)).await.unwrap();
    let waits = outbox.push(&batch("a", 1, 10)).await.unwrap();
    outbox.flush().unwrap();
    assert_eq!(on_disk(&outbox).len(), 2);

    outbox.failed(sled::Error::Io(std::io::Error::other("the disk went away")));
    // Acks and deliveries go on from memory; the removal reaches the disk once it heals.
    outbox.remove(acked).unwrap();
    assert_eq!(outbox.entries(0, 10).unwrap().len(), 1);
    let pushed = push_in_background(&outbox, batch("a", 2, 10));
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(!pushed.is_finished(), "a failed outbox took a push");
    assert_eq!(outbox.blocked_pushes(), 1);

    // It reopens by itself (after 1 s), writes what waits anew, and takes the push.
    let newest = tokio::time::timeout(Duration::from_secs(30), pushed)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    eventually("what waits is on disk again", || {
        on_disk(&outbox) == [(waits, 1), (newest, 2)]
    })
    .await;
    assert_eq!(outbox.written(), 2);
}

/// Pushes `batch` on a task of its own, which waits while the outbox is full or stalled.
fn push_in_background(
    outbox: &Outbox,
    batch: Batch,
) -> tokio::task::JoinHandle<Result<u64, Error>> {
    let outbox = outbox.clone();
    tokio::spawn(async move { outbox.push(&batch).await })
}

/// An outbox in `dir` with room for `batches` batches of 1,000 bytes of payload.
fn holding(dir: &std::path::Path, batches: u64) -> Outbox {
    let mut out = BytesMut::new();
    encode_batch(&batch("a", 0, 1_000), &mut out);
    let mut config = OutboxConfig::new(dir);
    config.max_bytes = out.len() as u64 * batches;
    Outbox::open(&config).unwrap()
}

#[tokio::test(start_paused = true)]
async fn a_full_outbox_pauses_the_writer_until_an_ack_frees_room() {
    let dir = tempfile::tempdir().unwrap();
    let outbox = holding(dir.path(), 3);
    for seq in 0..3 {
        outbox.push(&batch("a", seq, 1_000)).await.unwrap();
    }
    let blocked = push_in_background(&outbox, batch("a", 3, 1_000));
    tokio::time::sleep(Duration::from_secs(60)).await;
    assert!(!blocked.is_finished(), "a full outbox took another batch");
    assert_eq!(outbox.len(), 3);
    // What waits (a controller away) is on disk, and still delivered from memory.
    assert_eq!(on_disk(&outbox).len(), 3);
    assert_eq!(waiting(&outbox), [0, 1, 2]);
    outbox.remove(0).unwrap();
    let key = tokio::time::timeout(Duration::from_secs(5), blocked)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(key, 3);
    assert_eq!(outbox.len(), 3);
    assert_eq!(
        on_disk(&outbox).len(),
        2,
        "the acknowledged one left the disk; the one just pushed is not due yet"
    );
}

#[tokio::test(start_paused = true)]
async fn a_cancelled_run_writes_nothing_whether_it_was_about_to_write_or_waiting_for_room() {
    let dir = tempfile::tempdir().unwrap();
    let outbox = holding(dir.path(), 1);
    let cancel = CancellationToken::new();
    outbox
        .push_unless_cancelled(&batch("a", 0, 1_000), &cancel)
        .await
        .unwrap();
    let waiting = {
        let (outbox, cancel) = (outbox.clone(), cancel.clone());
        tokio::spawn(async move {
            outbox
                .push_unless_cancelled(&batch("a", 1, 1_000), &cancel)
                .await
        })
    };
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert!(!waiting.is_finished(), "a full outbox took another batch");
    cancel.cancel();
    let waited = tokio::time::timeout(Duration::from_secs(5), waiting)
        .await
        .unwrap()
        .unwrap();
    assert!(matches!(waited, Err(Error::Cancelled)), "{waited:?}");
    assert_eq!(
        outbox.blocked_pushes(),
        0,
        "a cancelled wait is not counted"
    );
    // Room again, and the token already cancelled: still nothing is written.
    outbox.remove(0).unwrap();
    let pushed = outbox
        .push_unless_cancelled(&batch("a", 2, 1_000), &cancel)
        .await;
    assert!(matches!(pushed, Err(Error::Cancelled)), "{pushed:?}");
    assert_eq!(outbox.len(), 0);
    assert_eq!(
        outbox.position(&StreamName::new("a").unwrap(), 0, 0),
        Some(Checkpoint::from_bytes("0"))
    );
}

#[tokio::test]
async fn an_oversized_batch_is_taken_by_an_empty_outbox() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = OutboxConfig::new(dir.path());
    config.max_bytes = 10;
    let outbox = Outbox::open(&config).unwrap();
    outbox.push(&batch("a", 0, 1_000)).await.unwrap();
    assert_eq!(outbox.len(), 1);
}

#[tokio::test]
async fn drained_waits_for_the_last_entry_of_its_stream_only() {
    let dir = tempfile::tempdir().unwrap();
    let outbox = Outbox::open(&OutboxConfig::new(dir.path())).unwrap();
    let a = outbox.push(&batch("a", 0, 10)).await.unwrap();
    outbox.push(&batch("b", 0, 10)).await.unwrap();
    let waiting = {
        let outbox = outbox.clone();
        tokio::spawn(async move { outbox.drained(&StreamName::new("a").unwrap()).await })
    };
    tokio::task::yield_now().await;
    assert!(!waiting.is_finished());
    outbox.remove(a).unwrap();
    tokio::time::timeout(Duration::from_secs(5), waiting)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(outbox.len(), 1);
    assert_eq!(
        outbox
            .discard_stream(&StreamName::new("b").unwrap())
            .unwrap(),
        1
    );
    assert!(outbox.is_empty());
}

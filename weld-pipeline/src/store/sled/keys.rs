//! The store's key layout: one sled tree, one prefix per kind of entry.
//!
//! ```text
//! r <stream> 00 <id len: u32> <id>      record: updated_at:i64 flags:u8 (bit 0 archived) data...
//! b <stream> 00 <run_id: u64> <seq: u64> batch identity: records:u64 cursor...
//! c <stream>                            checkpoint bytes
//! e <stream>                            epoch: u64 (absent: 0), raised by a resync and a delete
//! n <stream>                            counts: live:u64 archived:u64
//! u <stream> 00 <run_id: u64>           run: JSON
//! p                                     the probe: the time it last ran (i64 ms)
//! ```
//!
//! A batch's ledger entry holds the records it wrote and the cursor it reached: a batch that
//! closes a gap moves the checkpoint on to the cursors of the batches that arrived before it.
//!
//! Integers are big-endian, so keys sort numerically. A record's key carries its id's length
//! before the id: numeric ids (HubSpot's) then sort in numeric order, and any id sorts
//! deterministically. A stream name never contains a 00 byte, so `<stream> 00` is an exact
//! prefix.

use bytes::Bytes;

use crate::error::Error;
use crate::record::{Json, Record, Timestamp};
use crate::store::Counts;
use crate::stream::{RunId, StreamName};

pub(super) const RECORD: u8 = b'r';
pub(super) const BATCH: u8 = b'b';
pub(super) const CHECKPOINT: u8 = b'c';
pub(super) const EPOCH: u8 = b'e';
pub(super) const COUNTS: u8 = b'n';
pub(super) const RUN: u8 = b'u';
/// The probe's single key: written and synced to learn whether the store can commit.
pub(super) const PROBE: &[u8] = b"p";

/// `<kind> <stream> 00`: the prefix of every entry of a kind for one stream.
pub(super) fn stream_prefix(kind: u8, stream: &StreamName) -> Vec<u8> {
    let mut key = Vec::with_capacity(stream.as_str().len() + 2);
    key.push(kind);
    key.extend_from_slice(stream.as_str().as_bytes());
    key.push(0);
    key
}

/// `<kind> <stream>`: the key of a stream's single entry of a kind.
pub(super) fn stream_key(kind: u8, stream: &StreamName) -> Vec<u8> {
    let mut key = stream_prefix(kind, stream);
    key.pop();
    key
}

pub(super) fn record_key(stream: &StreamName, id: &str) -> Vec<u8> {
    let mut key = stream_prefix(RECORD, stream);
    key.extend_from_slice(&(id.len() as u32).to_be_bytes());
    key.extend_from_slice(id.as_bytes());
    key
}

pub(super) fn batch_key(stream: &StreamName, run_id: RunId, seq: u64) -> Vec<u8> {
    let mut key = stream_prefix(BATCH, stream);
    key.extend_from_slice(&run_id.0.to_be_bytes());
    key.extend_from_slice(&seq.to_be_bytes());
    key
}

pub(super) fn run_key(stream: &StreamName, run_id: RunId) -> Vec<u8> {
    let mut key = stream_prefix(RUN, stream);
    key.extend_from_slice(&run_id.0.to_be_bytes());
    key
}

/// The id inside a record key, given the stream's record prefix length.
pub(super) fn id_of_record_key(key: &[u8], prefix_len: usize) -> Result<String, Error> {
    let id = key
        .get(prefix_len + 4..)
        .ok_or_else(|| Error::Bug("a record key is shorter than its prefix".into()))?;
    String::from_utf8(id.to_vec()).map_err(|_| Error::Bug("a stored record id is not UTF-8".into()))
}

/// The head of a stored record: what a commit compares without touching the data.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct RecordHead {
    pub(super) updated_at: Timestamp,
    pub(super) archived: bool,
}

const HEAD_LEN: usize = 9;

pub(super) fn encode_record(record: &Record) -> Vec<u8> {
    let mut value = Vec::with_capacity(HEAD_LEN + record.data.len());
    value.extend_from_slice(&record.updated_at.as_millis().to_be_bytes());
    value.push(u8::from(record.archived));
    value.extend_from_slice(record.data.as_bytes());
    value
}

pub(super) fn decode_head(value: &[u8]) -> Result<RecordHead, Error> {
    if value.len() < HEAD_LEN {
        return Err(Error::Bug(
            "a stored record is shorter than its head".into(),
        ));
    }
    let mut millis = [0u8; 8];
    millis.copy_from_slice(&value[..8]);
    Ok(RecordHead {
        updated_at: Timestamp::from_millis(i64::from_be_bytes(millis)),
        archived: value[8] & 1 == 1,
    })
}

pub(super) fn decode_record(id: String, value: sled::IVec) -> Result<Record, Error> {
    let head = decode_head(&value)?;
    // The data was checked when it entered the pipeline; the store keeps it as it came, and
    // hands out sled's own copy of it rather than another.
    let data = Json::from_checked_bytes(Bytes::from_owner(value).slice(HEAD_LEN..));
    Ok(Record {
        id,
        updated_at: head.updated_at,
        archived: head.archived,
        amend: false,
        purge: false,
        data,
    })
}

pub(super) fn encode_counts(counts: Counts) -> [u8; 16] {
    let mut value = [0u8; 16];
    value[..8].copy_from_slice(&counts.live.to_be_bytes());
    value[8..].copy_from_slice(&counts.archived.to_be_bytes());
    value
}

pub(super) fn decode_counts(value: &[u8]) -> Counts {
    let read = |range: std::ops::Range<usize>| {
        value
            .get(range)
            .and_then(|b| <[u8; 8]>::try_from(b).ok())
            .map_or(0, u64::from_be_bytes)
    };
    Counts {
        live: read(0..8),
        archived: read(8..16),
    }
}

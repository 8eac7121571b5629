//! The one binary encoding of messages and batches, shared by every transport and store.
//!
//! A batch is a compact envelope around its records' JSON bytes: the JSON is copied in once and,
//! on decode, sliced out of the received buffer without a copy and without being parsed
//! (parsing every record would cap a transport near 300k records/s on this project's
//! machines). Control
//! messages are rare and small and use the same primitives.
//!
//! All integers are big-endian. `str8`/`str16` are UTF-8 text after a `u8`/`u16` length;
//! `bytes32` is raw bytes after a `u32` length.
//!
//! ```text
//! message  := version:u8 (=1) tag:u8 body
//!
//!  tag  message               body
//!    4  Hello                 worker_id:str16 protocol_version:u16 count:u16 source:str16{count}
//!    1  Request::Start        stream:str8 config:bytes32 (JSON) checkpoint:bytes32 epoch:u64
//!                             lease:u64
//!    2  Request::Stop         stream:str8
//!    3  Request::Deliver      batch
//!    5  Request::Inventory    stream:str8 after:str16 (empty: from the start) limit:u32
//!    6  Request::Describe     stream:str8 count:u32 field{count}
//!                             field := kind:u8 (0 text, 1 number, 2 boolean, 3 date,
//!                             4 datetime, 5 list) name:str16
//!   16  Response::Started     -
//!   17  Response::Stopped     -
//!   18  Response::Ack         stream:str8 run_id:u64 seq:u64 commit:u8 (0 stored, 1 replayed) records:u64
//!   19  Response::Refused     kind:u8 (0 transient, 1 permanent, 2 bug) message:str16
//!   20  Response::Inventory   count:u32 held{count} next:str16 (empty: the last page)
//!                             held := id:str16 updated_at:i64 flags:u8 (bit 0: archived)
//!   21  Response::Described   -
//!   32  Event::RunStarted     stream:str8 run_id:u64 at:i64 (ms since epoch)
//!   33  Event::RunFinished    stream:str8 run_id:u64 outcome:u8 (0 ok, 1 failed, 2 cancelled)
//!                             kind:u8 error:str16 batches:u64 records:u64 duration_ms:u64
//!                             fetch_errors:u64
//!   34  Event::OutboxDepth    batches:u64 bytes:u64
//!
//! batch    := stream:str8 run_id:u64 seq:u64 flags:u8 (bit 0: last, bit 1: epoch follows,
//!             bit 2: repaired follows, bit 3: lease follows) [epoch:u64] [repaired:u64]
//!             [lease:u64] cursor:bytes32 count:u32 record{count}
//! record   := id:bytes32 (UTF-8) updated_at:i64 flags:u8 (bit 0: archived, bit 1: amend, bit 2: purge)
//!             data:bytes32
//! ```
//!
//! A batch of epoch 0 is written without its epoch, one of lease 0 without its lease (so
//! batches kept in outboxes by builds from before epochs or leases still decode). A batch of one
//! record `{"a":1}` with id `"7"`, stream `s`, run 1,
//! seq 0, epoch 0, last, empty cursor, as a `Deliver` request:
//!
//! ```text
//! 01 03                      version 1, tag Deliver
//! 01 73                      stream "s"
//! 00 00 00 00 00 00 00 01    run_id 1
//! 00 00 00 00 00 00 00 00    seq 0
//! 01                         last
//! 00 00 00 00                cursor: empty
//! 00 00 00 01                one record
//! 00 00 00 01 37             id "7"
//! 00 00 00 00 00 00 00 00    updated_at 0
//! 00                         live
//! 00 00 00 07 7b 22 61 22 3a 31 7d   data {"a":1}
//! ```
//!
//! Decoding never trusts a length: each is checked against the bytes that remain before anything
//! is allocated or sliced, so a lying length is a [`DecodeError::Truncated`], never a panic or a
//! large allocation. Frame-size limits belong to the transports, which refuse an oversized frame
//! before reading it.

use bytes::{Buf, BufMut, Bytes, BytesMut};

use crate::batch::{Batch, BatchId};
use crate::checkpoint::Checkpoint;
use crate::error::{DecodeError, ErrorKind};
use crate::message::{
    Commit, Event, Hello, Message, Request, Response, RunFinished, RunOutcome, Start,
};
use crate::record::{Json, Record, Timestamp};
use crate::source::{Field, FieldKind, Held, HeldPage, Schema};
use crate::stream::{RunId, StreamName};

/// The encoding version written first in every message.
pub const ENCODING_VERSION: u8 = 1;

mod tag {
    pub(super) const START: u8 = 1;
    pub(super) const HELLO: u8 = 4;
    pub(super) const STOP: u8 = 2;
    pub(super) const DELIVER: u8 = 3;
    pub(super) const INVENTORY: u8 = 5;
    pub(super) const DESCRIBE: u8 = 6;
    pub(super) const STARTED: u8 = 16;
    pub(super) const STOPPED: u8 = 17;
    pub(super) const ACK: u8 = 18;
    pub(super) const REFUSED: u8 = 19;
    pub(super) const HELD: u8 = 20;
    pub(super) const DESCRIBED: u8 = 21;
    pub(super) const RUN_STARTED: u8 = 32;
    pub(super) const RUN_FINISHED: u8 = 33;
    pub(super) const OUTBOX_DEPTH: u8 = 34;
}

/// Appends the encoding of a message to `out`.
///
/// # Panics
///
/// When a single field is longer than 4 GiB, or a hello lists more than 65,535 sources: far past
/// every transport's frame limit, so a bug upstream.
pub fn encode_message(message: &Message, out: &mut BytesMut) {
    out.put_u8(ENCODING_VERSION);
    match message {
        Message::Hello(hello) => {
            out.put_u8(tag::HELLO);
            put_hello(out, hello);
        }
        Message::Request(Request::Start(start)) => {
            out.put_u8(tag::START);
            put_start(out, start);
        }
        Message::Request(Request::Stop { stream }) => {
            out.put_u8(tag::STOP);
            put_str8(out, stream.as_str());
        }
        Message::Request(Request::Deliver(batch)) => {
            out.put_u8(tag::DELIVER);
            encode_batch(batch, out);
        }
        Message::Request(Request::Inventory {
            stream,
            after,
            limit,
        }) => {
            out.put_u8(tag::INVENTORY);
            put_str8(out, stream.as_str());
            put_str16(out, after.as_deref().unwrap_or(""));
            out.put_u32(*limit);
        }
        Message::Request(Request::Describe { stream, schema }) => {
            out.put_u8(tag::DESCRIBE);
            put_str8(out, stream.as_str());
            put_schema(out, schema);
        }
        Message::Response(Response::Described) => out.put_u8(tag::DESCRIBED),
        Message::Response(Response::Inventory(page)) => {
            out.put_u8(tag::HELD);
            put_held_page(out, page);
        }
        Message::Response(Response::Started) => out.put_u8(tag::STARTED),
        Message::Response(Response::Stopped) => out.put_u8(tag::STOPPED),
        Message::Response(Response::Ack { batch, commit }) => {
            out.put_u8(tag::ACK);
            put_batch_id(out, batch);
            let (outcome, records) = match commit {
                Commit::Stored { records } => (0, *records),
                Commit::Replayed => (1, 0),
            };
            out.put_u8(outcome);
            out.put_u64(records);
        }
        Message::Response(Response::Refused { kind, message }) => {
            out.put_u8(tag::REFUSED);
            out.put_u8(kind_to_u8(*kind));
            put_str16(out, message);
        }
        Message::Event(Event::RunStarted { stream, run_id, at }) => {
            out.put_u8(tag::RUN_STARTED);
            put_str8(out, stream.as_str());
            out.put_u64(run_id.0);
            out.put_i64(at.as_millis());
        }
        Message::Event(Event::RunFinished(finished)) => {
            out.put_u8(tag::RUN_FINISHED);
            put_run_finished(out, finished);
        }
        Message::Event(Event::OutboxDepth { batches, bytes }) => {
            out.put_u8(tag::OUTBOX_DEPTH);
            out.put_u64(*batches);
            out.put_u64(*bytes);
        }
    }
}

fn put_hello(out: &mut BytesMut, hello: &Hello) {
    put_str16(out, &hello.worker_id);
    out.put_u16(hello.protocol_version);
    out.put_u16(u16::try_from(hello.sources.len()).expect("more than 65535 sources"));
    for source in &hello.sources {
        put_str16(out, source);
    }
}

fn put_start(out: &mut BytesMut, start: &Start) {
    put_str8(out, start.stream.as_str());
    // A config always serializes: it holds only strings, numbers and JSON values.
    let config = serde_json::to_vec(&start.config).unwrap_or_default();
    put_bytes32(out, &config);
    put_bytes32(out, start.checkpoint.as_bytes());
    out.put_u64(start.epoch);
    out.put_u64(start.lease);
}

fn put_schema(out: &mut BytesMut, schema: &Schema) {
    out.put_u32(len_u32(schema.fields.len()));
    for field in &schema.fields {
        out.put_u8(field.kind.code());
        put_str16(out, &field.name);
    }
}

fn put_held_page(out: &mut BytesMut, page: &HeldPage) {
    out.put_u32(len_u32(page.records.len()));
    for held in &page.records {
        put_str16(out, &held.id);
        out.put_i64(held.updated_at.as_millis());
        out.put_u8(u8::from(held.archived));
    }
    put_str16(out, page.next.as_deref().unwrap_or(""));
}

fn put_run_finished(out: &mut BytesMut, finished: &RunFinished) {
    put_str8(out, finished.stream.as_str());
    out.put_u64(finished.run_id.0);
    let (outcome, kind, error) = match &finished.outcome {
        RunOutcome::Succeeded => (0, ErrorKind::Permanent, ""),
        RunOutcome::Failed { kind, error } => (1, *kind, error.as_str()),
        RunOutcome::Cancelled => (2, ErrorKind::Permanent, ""),
    };
    out.put_u8(outcome);
    out.put_u8(kind_to_u8(kind));
    put_str16(out, error);
    out.put_u64(finished.batches);
    out.put_u64(finished.records);
    out.put_u64(finished.duration_ms);
    out.put_u64(finished.fetch_errors);
}

/// Decodes one whole message; record data is sliced out of `input` without a copy.
///
/// # Errors
///
/// A [`DecodeError`] saying which field was missing or wrong. Never panics, whatever the bytes.
pub fn decode_message(mut input: Bytes) -> Result<Message, DecodeError> {
    let input = &mut input;
    let version = get_u8(input, "version")?;
    if version != ENCODING_VERSION {
        return Err(DecodeError::UnsupportedVersion(version));
    }
    let message = match get_u8(input, "tag")? {
        tag::HELLO => Message::Hello(get_hello(input)?),
        tag::START => Message::Request(Request::Start(get_start(input)?)),
        tag::STOP => Message::Request(Request::Stop {
            stream: get_stream(input)?,
        }),
        tag::DELIVER => Message::Request(Request::Deliver(decode_batch_from(input)?)),
        tag::INVENTORY => {
            let stream = get_stream(input)?;
            let after = get_str16(input, "after")?;
            Message::Request(Request::Inventory {
                stream,
                after: (!after.is_empty()).then_some(after),
                limit: get_u32(input, "limit")?,
            })
        }
        tag::DESCRIBE => Message::Request(Request::Describe {
            stream: get_stream(input)?,
            schema: get_schema(input)?,
        }),
        tag::DESCRIBED => Message::Response(Response::Described),
        tag::HELD => Message::Response(Response::Inventory(get_held_page(input)?)),
        tag::STARTED => Message::Response(Response::Started),
        tag::STOPPED => Message::Response(Response::Stopped),
        tag::ACK => Message::Response(get_ack(input)?),
        tag::REFUSED => Message::Response(Response::Refused {
            kind: get_kind(input)?,
            message: get_str16(input, "message")?,
        }),
        tag::RUN_STARTED => Message::Event(Event::RunStarted {
            stream: get_stream(input)?,
            run_id: RunId(get_u64(input, "run_id")?),
            at: Timestamp::from_millis(get_i64(input, "at")?),
        }),
        tag::RUN_FINISHED => Message::Event(Event::RunFinished(get_run_finished(input)?)),
        tag::OUTBOX_DEPTH => Message::Event(Event::OutboxDepth {
            batches: get_u64(input, "batches")?,
            bytes: get_u64(input, "bytes")?,
        }),
        other => return Err(DecodeError::UnknownTag(other)),
    };
    if input.has_remaining() {
        return Err(DecodeError::Trailing(input.remaining()));
    }
    Ok(message)
}

fn get_hello(input: &mut Bytes) -> Result<Hello, DecodeError> {
    let worker_id = get_str16(input, "worker_id")?;
    let protocol_version = get_u16(input, "protocol_version")?;
    let count = get_u16(input, "sources")?;
    let mut sources = Vec::new();
    for _ in 0..count {
        sources.push(get_str16(input, "source")?);
    }
    Ok(Hello {
        worker_id,
        protocol_version,
        sources,
    })
}

fn get_start(input: &mut Bytes) -> Result<Start, DecodeError> {
    let stream = get_stream(input)?;
    let config = get_bytes32(input, "config")?;
    let config = serde_json::from_slice(&config).map_err(|e| DecodeError::Invalid {
        field: "config",
        reason: e.to_string(),
    })?;
    let checkpoint = Checkpoint::from_bytes(get_bytes32(input, "checkpoint")?);
    Ok(Start {
        stream,
        config,
        checkpoint,
        epoch: get_u64(input, "epoch")?,
        lease: get_u64(input, "lease")?,
    })
}

/// Refuses a count of `min_each`-byte items that the rest of the input cannot hold: a lie that
/// would otherwise reserve memory for nothing.
fn check_count(
    input: &Bytes,
    field: &'static str,
    count: usize,
    min_each: usize,
) -> Result<(), DecodeError> {
    if count.saturating_mul(min_each) > input.remaining() {
        return Err(DecodeError::Truncated {
            field,
            needed: count.saturating_mul(min_each) - input.remaining(),
        });
    }
    Ok(())
}

fn get_schema(input: &mut Bytes) -> Result<Schema, DecodeError> {
    let count = get_u32(input, "count")? as usize;
    // Each takes at least 3 bytes: a kind and a name's length.
    check_count(input, "fields", count, 1 + 2)?;
    let mut fields = Vec::with_capacity(count);
    for _ in 0..count {
        let code = get_u8(input, "field kind")?;
        let kind = FieldKind::from_code(code)
            .ok_or_else(|| invalid("field kind", format!("unknown kind {code}")))?;
        fields.push(Field {
            name: get_str16(input, "field name")?,
            kind,
        });
    }
    Ok(Schema { fields })
}

fn get_held_page(input: &mut Bytes) -> Result<HeldPage, DecodeError> {
    let count = get_u32(input, "count")? as usize;
    // Each takes at least 11 bytes: an id's length, a time and the flags.
    check_count(input, "held", count, 2 + 8 + 1)?;
    let mut records = Vec::with_capacity(count);
    for _ in 0..count {
        records.push(Held {
            id: get_str16(input, "held id")?,
            updated_at: Timestamp::from_millis(get_i64(input, "updated_at")?),
            archived: get_u8(input, "held flags")? & 1 == 1,
        });
    }
    let next = get_str16(input, "next")?;
    Ok(HeldPage {
        records,
        next: (!next.is_empty()).then_some(next),
    })
}

fn get_ack(input: &mut Bytes) -> Result<Response, DecodeError> {
    let batch = get_batch_id(input)?;
    let outcome = get_u8(input, "commit")?;
    let records = get_u64(input, "records")?;
    let commit = match outcome {
        0 => Commit::Stored { records },
        1 => Commit::Replayed,
        other => return Err(invalid("commit", format!("unknown outcome {other}"))),
    };
    Ok(Response::Ack { batch, commit })
}

fn get_run_finished(input: &mut Bytes) -> Result<RunFinished, DecodeError> {
    let stream = get_stream(input)?;
    let run_id = RunId(get_u64(input, "run_id")?);
    let outcome = get_u8(input, "outcome")?;
    let kind = get_kind(input)?;
    let error = get_str16(input, "error")?;
    let outcome = match outcome {
        0 => RunOutcome::Succeeded,
        1 => RunOutcome::Failed { kind, error },
        2 => RunOutcome::Cancelled,
        other => return Err(invalid("outcome", format!("unknown outcome {other}"))),
    };
    Ok(RunFinished {
        stream,
        run_id,
        outcome,
        batches: get_u64(input, "batches")?,
        records: get_u64(input, "records")?,
        duration_ms: get_u64(input, "duration_ms")?,
        fetch_errors: get_u64(input, "fetch_errors")?,
    })
}

/// Appends the encoding of a batch (without a message header) to `out`: for stores and outboxes
/// that keep batches rather than messages.
///
/// # Panics
///
/// When a record's id or data, or the cursor, is longer than 4 GiB (a bug upstream).
pub fn encode_batch(batch: &Batch, out: &mut BytesMut) {
    out.reserve(batch.encoded_len());
    put_str8(out, batch.stream.as_str());
    out.put_u64(batch.run_id.0);
    out.put_u64(batch.seq);
    let (has_epoch, has_repaired, has_lease) =
        (batch.epoch != 0, batch.repaired != 0, batch.lease != 0);
    out.put_u8(
        u8::from(batch.last)
            | (u8::from(has_epoch) << 1)
            | (u8::from(has_repaired) << 2)
            | (u8::from(has_lease) << 3),
    );
    if has_epoch {
        out.put_u64(batch.epoch);
    }
    if has_repaired {
        out.put_u64(batch.repaired);
    }
    if has_lease {
        out.put_u64(batch.lease);
    }
    put_bytes32(out, batch.cursor.as_bytes());
    out.put_u32(len_u32(batch.records.len()));
    for record in &batch.records {
        put_bytes32(out, record.id.as_bytes());
        out.put_i64(record.updated_at.as_millis());
        out.put_u8(
            u8::from(record.archived)
                | (u8::from(record.amend) << 1)
                | (u8::from(record.purge) << 2),
        );
        put_bytes32(out, record.data.as_bytes());
    }
}

/// Decodes a batch written by [`encode_batch`]; record data is sliced out of `input`.
///
/// # Errors
///
/// A [`DecodeError`] saying which field was missing or wrong.
pub fn decode_batch(mut input: Bytes) -> Result<Batch, DecodeError> {
    let batch = decode_batch_from(&mut input)?;
    if input.has_remaining() {
        return Err(DecodeError::Trailing(input.remaining()));
    }
    Ok(batch)
}

/// The stream of an encoded batch (as [`encode_batch`] writes it), read from its first field
/// without decoding the rest: for an outbox that needs to know whose batch it removes.
///
/// # Errors
///
/// A [`DecodeError`] when the bytes do not begin with a valid stream name.
pub fn batch_stream(encoded: &[u8]) -> Result<StreamName, DecodeError> {
    let len = usize::from(*encoded.first().ok_or(DecodeError::Truncated {
        field: "stream",
        needed: 1,
    })?);
    let name = encoded
        .get(1..1 + len)
        .ok_or_else(|| DecodeError::Truncated {
            field: "stream",
            needed: (1 + len).saturating_sub(encoded.len()),
        })?;
    let name = std::str::from_utf8(name).map_err(|e| invalid("stream", e.to_string()))?;
    StreamName::new(name).map_err(|e| invalid("stream", e.to_string()))
}

fn decode_batch_from(input: &mut Bytes) -> Result<Batch, DecodeError> {
    let stream = get_stream(input)?;
    let run_id = RunId(get_u64(input, "run_id")?);
    let seq = get_u64(input, "seq")?;
    let flags = get_u8(input, "flags")?;
    let last = flags & 1 == 1;
    let epoch = if flags & 2 == 2 {
        get_u64(input, "epoch")?
    } else {
        0
    };
    let repaired = if flags & 4 == 4 {
        get_u64(input, "repaired")?
    } else {
        0
    };
    let lease = if flags & 8 == 8 {
        get_u64(input, "lease")?
    } else {
        0
    };
    let cursor = Checkpoint::from_bytes(get_bytes32(input, "cursor")?);
    let count = get_u32(input, "count")? as usize;
    // Each record takes at least 17 bytes: an id's length, a time, the flags, a body's length.
    check_count(input, "records", count, 4 + 8 + 1 + 4)?;
    let mut records = Vec::with_capacity(count);
    for _ in 0..count {
        let id = get_text(get_bytes32(input, "record id")?, "record id")?;
        let updated_at = Timestamp::from_millis(get_i64(input, "updated_at")?);
        let flags = get_u8(input, "record flags")?;
        let (archived, amend, purge) = (flags & 1 == 1, flags & 2 == 2, flags & 4 == 4);
        let data = Json::from_checked_bytes(get_bytes32(input, "record data")?);
        records.push(Record {
            id,
            updated_at,
            archived,
            amend,
            purge,
            data,
        });
    }
    Ok(Batch::new(stream, run_id, seq)
        .with_records(records)
        .with_cursor(cursor)
        .with_epoch(epoch)
        .with_lease(lease)
        .with_repaired(repaired)
        .with_last(last))
}

fn put_batch_id(out: &mut BytesMut, id: &BatchId) {
    put_str8(out, id.stream.as_str());
    out.put_u64(id.run_id.0);
    out.put_u64(id.seq);
}

fn get_batch_id(input: &mut Bytes) -> Result<BatchId, DecodeError> {
    Ok(BatchId {
        stream: get_stream(input)?,
        run_id: RunId(get_u64(input, "run_id")?),
        seq: get_u64(input, "seq")?,
    })
}

fn len_u32(len: usize) -> u32 {
    // Frames are limited far below 4 GiB by every transport; a longer field is a bug upstream.
    u32::try_from(len).expect("field longer than 4 GiB")
}

fn put_str8(out: &mut BytesMut, text: &str) {
    // Stream names are at most 63 bytes by construction.
    out.put_u8(u8::try_from(text.len()).expect("stream name longer than 255 bytes"));
    out.put_slice(text.as_bytes());
}

fn put_str16(out: &mut BytesMut, text: &str) {
    // Longer text (an error message) is cut at a character boundary rather than refused.
    let mut end = text.len().min(usize::from(u16::MAX));
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    out.put_u16(end as u16);
    out.put_slice(&text.as_bytes()[..end]);
}

fn put_bytes32(out: &mut BytesMut, bytes: &[u8]) {
    out.put_u32(len_u32(bytes.len()));
    out.put_slice(bytes);
}

fn need(input: &Bytes, len: usize, field: &'static str) -> Result<(), DecodeError> {
    if input.remaining() < len {
        Err(DecodeError::Truncated {
            field,
            needed: len - input.remaining(),
        })
    } else {
        Ok(())
    }
}

fn invalid(field: &'static str, reason: String) -> DecodeError {
    DecodeError::Invalid { field, reason }
}

fn get_u8(input: &mut Bytes, field: &'static str) -> Result<u8, DecodeError> {
    need(input, 1, field)?;
    Ok(input.get_u8())
}

fn get_u16(input: &mut Bytes, field: &'static str) -> Result<u16, DecodeError> {
    need(input, 2, field)?;
    Ok(input.get_u16())
}

fn get_u32(input: &mut Bytes, field: &'static str) -> Result<u32, DecodeError> {
    need(input, 4, field)?;
    Ok(input.get_u32())
}

fn get_u64(input: &mut Bytes, field: &'static str) -> Result<u64, DecodeError> {
    need(input, 8, field)?;
    Ok(input.get_u64())
}

fn get_i64(input: &mut Bytes, field: &'static str) -> Result<i64, DecodeError> {
    need(input, 8, field)?;
    Ok(input.get_i64())
}

fn get_slice(input: &mut Bytes, len: usize, field: &'static str) -> Result<Bytes, DecodeError> {
    need(input, len, field)?;
    Ok(input.split_to(len))
}

fn get_bytes32(input: &mut Bytes, field: &'static str) -> Result<Bytes, DecodeError> {
    let len = get_u32(input, field)? as usize;
    get_slice(input, len, field)
}

fn get_text(bytes: Bytes, field: &'static str) -> Result<String, DecodeError> {
    String::from_utf8(bytes.to_vec()).map_err(|_| invalid(field, "not UTF-8".into()))
}

fn get_str16(input: &mut Bytes, field: &'static str) -> Result<String, DecodeError> {
    need(input, 2, field)?;
    let len = usize::from(input.get_u16());
    get_text(get_slice(input, len, field)?, field)
}

fn get_stream(input: &mut Bytes) -> Result<StreamName, DecodeError> {
    let len = usize::from(get_u8(input, "stream")?);
    let name = get_text(get_slice(input, len, "stream")?, "stream")?;
    StreamName::new(name).map_err(|e| invalid("stream", e.to_string()))
}

fn kind_to_u8(kind: ErrorKind) -> u8 {
    match kind {
        ErrorKind::Transient => 0,
        ErrorKind::Permanent => 1,
        ErrorKind::Bug => 2,
    }
}

fn get_kind(input: &mut Bytes) -> Result<ErrorKind, DecodeError> {
    match get_u8(input, "kind")? {
        0 => Ok(ErrorKind::Transient),
        1 => Ok(ErrorKind::Permanent),
        2 => Ok(ErrorKind::Bug),
        other => Err(invalid("kind", format!("unknown error kind {other}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_stream_of_an_encoded_batch_is_read_without_the_rest() {
        let batch = Batch::new(StreamName::new("contacts").unwrap(), RunId(1), 0)
            .with_cursor(Checkpoint::from_bytes("c"))
            .with_last(true);
        let mut out = BytesMut::new();
        encode_batch(&batch, &mut out);
        assert_eq!(batch_stream(&out).unwrap(), batch.stream);
        assert!(batch_stream(&out[..4]).is_err(), "truncated");
        assert!(batch_stream(&[]).is_err(), "empty");
        assert!(
            batch_stream(&[3, b'A', b'!', b' ']).is_err(),
            "not a stream name"
        );
    }
    use crate::message::{SourceSpec, StreamConfig};
    use proptest::prelude::*;

    fn stream_name() -> impl Strategy<Value = StreamName> {
        "[a-z0-9][a-z0-9_-]{0,62}".prop_map(|s| StreamName::new(s).unwrap())
    }

    fn record() -> impl Strategy<Value = Record> {
        (
            "[0-9]{1,12}",
            any::<i64>(),
            any::<bool>(),
            proptest::collection::vec(any::<u8>(), 0..300),
            any::<bool>(),
            any::<bool>(),
        )
            .prop_map(|(id, at, archived, data, amend, purge)| Record {
                id,
                updated_at: Timestamp::from_millis(at),
                archived,
                amend,
                purge,
                // The envelope carries bytes; whether they are JSON is checked at the source.
                data: Json::from_checked_bytes(data.into()),
            })
    }

    fn batch() -> impl Strategy<Value = Batch> {
        (
            stream_name(),
            any::<u64>(),
            any::<u64>(),
            any::<bool>(),
            proptest::collection::vec(any::<u8>(), 0..64),
            proptest::collection::vec(record(), 0..20),
            prop_oneof![Just(0u64), any::<u64>()],
            prop_oneof![Just(0u64), any::<u64>()],
        )
            .prop_map(
                // Every field written out: a field added to Batch must be added here, so that
                // its encoding is round-tripped too.
                |(stream, run, seq, last, cursor, records, epoch, repaired)| Batch {
                    stream,
                    run_id: RunId(run),
                    seq,
                    epoch,
                    // Both kinds: without a lease, and under one.
                    lease: epoch % 3,
                    repaired,
                    last,
                    cursor: Checkpoint::from_bytes(cursor),
                    records,
                },
            )
    }

    fn kind() -> impl Strategy<Value = ErrorKind> {
        prop_oneof![
            Just(ErrorKind::Transient),
            Just(ErrorKind::Permanent),
            Just(ErrorKind::Bug)
        ]
    }

    fn message() -> impl Strategy<Value = Message> {
        prop_oneof![
            batch().prop_map(|b| Message::Request(Request::Deliver(b))),
            (
                stream_name(),
                any::<u64>(),
                proptest::collection::vec(any::<u8>(), 0..32),
                any::<u64>(),
            )
                .prop_map(|(stream, interval, checkpoint, epoch)| {
                    Message::Request(Request::Start(Start {
                        stream,
                        config: StreamConfig {
                            source: SourceSpec {
                                kind: "hubspot".into(),
                                params: serde_json::Map::new(),
                            },
                            interval_secs: interval,
                            transforms: vec![],
                        },
                        checkpoint: Checkpoint::from_bytes(checkpoint),
                        epoch,
                        lease: epoch.rotate_left(7),
                    }))
                }),
            stream_name().prop_map(|stream| Message::Request(Request::Stop { stream })),
            (
                stream_name(),
                proptest::option::of("[0-9a-z]{1,20}"),
                any::<u32>()
            )
                .prop_map(|(stream, after, limit)| Message::Request(
                    Request::Inventory {
                        stream,
                        after,
                        limit
                    }
                )),
            (
                stream_name(),
                proptest::collection::vec(("[a-z_0-9]{1,30}", 0u8..6), 0..20),
            )
                .prop_map(|(stream, fields)| Message::Request(Request::Describe {
                    stream,
                    schema: Schema {
                        fields: fields
                            .into_iter()
                            .map(|(name, code)| Field {
                                name,
                                kind: FieldKind::from_code(code).expect("a known code"),
                            })
                            .collect(),
                    },
                })),
            Just(Message::Response(Response::Described)),
            (
                proptest::collection::vec(("[0-9]{1,12}", any::<i64>(), any::<bool>()), 0..20),
                proptest::option::of("[0-9a-z]{1,20}"),
            )
                .prop_map(|(held, next)| {
                    Message::Response(Response::Inventory(HeldPage {
                        records: held
                            .into_iter()
                            .map(|(id, at, archived)| Held {
                                id,
                                updated_at: Timestamp::from_millis(at),
                                archived,
                            })
                            .collect(),
                        next,
                    }))
                }),
            (
                ".{0,40}",
                any::<u16>(),
                proptest::collection::vec("[a-z]{1,10}", 0..4)
            )
                .prop_map(|(worker_id, protocol_version, sources)| Message::Hello(
                    Hello {
                        worker_id,
                        protocol_version,
                        sources,
                    }
                )),
            Just(Message::Response(Response::Started)),
            Just(Message::Response(Response::Stopped)),
            (
                stream_name(),
                any::<u64>(),
                any::<u64>(),
                proptest::option::of(any::<u64>())
            )
                .prop_map(|(stream, run, seq, stored)| Message::Response(
                    Response::Ack {
                        batch: BatchId {
                            stream,
                            run_id: RunId(run),
                            seq
                        },
                        commit: stored
                            .map_or(Commit::Replayed, |records| Commit::Stored { records }),
                    }
                )),
            (kind(), ".{0,100}")
                .prop_map(|(kind, message)| Message::Response(Response::Refused { kind, message })),
            (stream_name(), any::<u64>(), any::<i64>()).prop_map(|(stream, run, at)| {
                Message::Event(Event::RunStarted {
                    stream,
                    run_id: RunId(run),
                    at: Timestamp::from_millis(at),
                })
            }),
            (
                stream_name(),
                any::<u64>(),
                0..3u8,
                kind(),
                ".{0,50}",
                any::<u64>(),
                any::<u64>(),
                any::<(u64, u64)>()
            )
                .prop_map(
                    |(
                        stream,
                        run,
                        outcome,
                        kind,
                        error,
                        batches,
                        records,
                        (duration_ms, fetch_errors),
                    )| {
                        let outcome = match outcome {
                            0 => RunOutcome::Succeeded,
                            1 => RunOutcome::Failed { kind, error },
                            _ => RunOutcome::Cancelled,
                        };
                        Message::Event(Event::RunFinished(RunFinished {
                            stream,
                            run_id: RunId(run),
                            outcome,
                            batches,
                            records,
                            duration_ms,
                            fetch_errors,
                        }))
                    }
                ),
            (any::<u64>(), any::<u64>())
                .prop_map(|(batches, bytes)| Message::Event(Event::OutboxDepth { batches, bytes })),
        ]
    }

    fn encoded(message: &Message) -> Bytes {
        let mut out = BytesMut::new();
        encode_message(message, &mut out);
        out.freeze()
    }

    proptest! {
        #[test]
        fn batch_encoding_round_trips(batch in batch()) {
            let mut out = BytesMut::new();
            encode_batch(&batch, &mut out);
            prop_assert_eq!(decode_batch(out.freeze()).unwrap(), batch);
        }

        /// `encoded_len` bounds the encoding: a buffer sized by it is never grown (growing a
        /// 100 KiB batch's buffer near its end copied it all again).
        #[test]
        fn encoded_len_bounds_the_encoding(batch in batch()) {
            let mut out = BytesMut::new();
            encode_batch(&batch, &mut out);
            prop_assert!(out.len() <= batch.encoded_len(), "{} > {}", out.len(), batch.encoded_len());
            let with_flags = Batch { epoch: 1, lease: 1, repaired: 1, ..batch };
            let mut out = BytesMut::new();
            encode_batch(&with_flags, &mut out);
            prop_assert_eq!(out.len(), with_flags.encoded_len());
        }

        #[test]
        fn message_encoding_round_trips(message in message()) {
            prop_assert_eq!(decode_message(encoded(&message)).unwrap(), message);
        }

        #[test]
        fn every_strict_prefix_of_a_message_is_refused(message in message()) {
            let bytes = encoded(&message);
            for len in 0..bytes.len() {
                prop_assert!(decode_message(bytes.slice(..len)).is_err());
            }
        }

        #[test]
        fn arbitrary_bytes_never_panic_the_decoder(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = decode_message(Bytes::from(bytes.clone()));
            let _ = decode_batch(Bytes::from(bytes));
        }
    }

    #[test]
    fn the_documented_frame_decodes() {
        let bytes: &[u8] = &[
            0x01, 0x03, 0x01, b's', 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0x01, 0, 0, 0,
            0, 0, 0, 0, 1, 0, 0, 0, 1, b'7', 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 7, b'{', b'"',
            b'a', b'"', b':', b'1', b'}',
        ];
        let Message::Request(Request::Deliver(batch)) =
            decode_message(Bytes::from_static(bytes)).unwrap()
        else {
            panic!("not a delivery");
        };
        assert_eq!(batch.stream.as_str(), "s");
        assert_eq!(batch.run_id, RunId(1));
        assert!(batch.last);
        assert_eq!(batch.records[0].id, "7");
        assert_eq!(batch.records[0].data.as_bytes(), br#"{"a":1}"#);
    }

    #[test]
    fn an_epoch_follows_the_flags_only_when_it_is_not_0() {
        let mut batch = Batch::new(StreamName::new("s").unwrap(), RunId(1), 0).with_last(true);
        let mut without = BytesMut::new();
        encode_batch(&batch, &mut without);
        batch.epoch = 7;
        let mut with = BytesMut::new();
        encode_batch(&batch, &mut with);
        // stream (2) run_id (8) seq (8), then the flags.
        assert_eq!(without[18], 0b01);
        assert_eq!(with[18], 0b11);
        assert_eq!(&with[19..27], &7u64.to_be_bytes());
        assert_eq!(with.len(), without.len() + 8);
        assert_eq!(decode_batch(with.freeze()).unwrap().epoch, 7);
        assert_eq!(decode_batch(without.freeze()).unwrap().epoch, 0);
    }

    #[test]
    fn a_lease_follows_the_epoch_and_repaired_only_when_it_is_not_0() {
        let mut batch = Batch::new(StreamName::new("s").unwrap(), RunId(1), 0)
            .with_epoch(7)
            .with_repaired(2);
        let mut without = BytesMut::new();
        encode_batch(&batch, &mut without);
        batch.lease = 3;
        let mut with = BytesMut::new();
        encode_batch(&batch, &mut with);
        assert_eq!(without[18], 0b0110);
        assert_eq!(with[18], 0b1110);
        // The flags, the epoch (8), repaired (8), then the lease.
        assert_eq!(&with[35..43], &3u64.to_be_bytes());
        assert_eq!(with.len(), without.len() + 8);
        assert_eq!(decode_batch(with.freeze()).unwrap(), batch);
        assert_eq!(decode_batch(without.freeze()).unwrap().lease, 0);
    }

    #[test]
    fn a_purge_sets_bit_2_of_its_records_flags_and_decodes_as_one() {
        let purge = Record::purge("12", Timestamp::from_millis(9));
        let batch =
            Batch::new(StreamName::new("s").unwrap(), RunId(1), 0).with_records(vec![purge]);
        let mut out = BytesMut::new();
        encode_batch(&batch, &mut out);
        // The record ends the frame: its flags, then data `{}` after its 4-byte length.
        let flags = out[out.len() - 2 - 4 - 1];
        assert_eq!(flags, 0b101, "archived and purge");
        let decoded = decode_batch(out.freeze()).unwrap();
        assert!(decoded.records[0].purge && !decoded.records[0].amend);
        assert_eq!(decoded, batch);
    }

    #[test]
    fn a_record_count_larger_than_the_input_is_refused_before_allocating() {
        let mut out = BytesMut::new();
        encode_batch(
            &Batch::new(StreamName::new("s").unwrap(), RunId(1), 0),
            &mut out,
        );
        let len = out.len();
        out[len - 4..].copy_from_slice(&u32::MAX.to_be_bytes());
        assert!(matches!(
            decode_batch(out.freeze()),
            Err(DecodeError::Truncated {
                field: "records",
                ..
            })
        ));
    }

    #[test]
    fn decoded_record_data_shares_the_input_buffer() {
        let batch =
            Batch::new(StreamName::new("s").unwrap(), RunId(1), 0).with_records(vec![Record::new(
                "1",
                Timestamp::EPOCH,
                Json::parse(&b"{\"x\":1}"[..]).unwrap(),
            )]);
        let mut out = BytesMut::new();
        encode_batch(&batch, &mut out);
        let input = out.freeze();
        let range = input.as_ptr_range();
        let decoded = decode_batch(input.clone()).unwrap();
        let data = decoded.records[0].data.as_bytes().as_ptr();
        assert!(range.contains(&data), "record data was copied");
    }

    #[test]
    fn unknown_versions_and_tags_are_named() {
        assert_eq!(
            decode_message(Bytes::from_static(&[9, 1])),
            Err(DecodeError::UnsupportedVersion(9))
        );
        assert_eq!(
            decode_message(Bytes::from_static(&[1, 99])),
            Err(DecodeError::UnknownTag(99))
        );
        assert_eq!(
            decode_message(Bytes::from_static(&[1, 16, 0])),
            Err(DecodeError::Trailing(1))
        );
    }
}

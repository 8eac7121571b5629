//! The outbox on disk: its sled tree, and each entry in pieces of at most [`PIECE_BYTES`]
//! (see "Large batches" in the module docs).
//!
//! ```text
//! key (big-endian)               value
//! entry key (8 bytes)            the first PIECE_BYTES of the encoded batch
//! entry key ++ piece (12 bytes)  the piece's bytes, for pieces 1, 2, ...: they sort between
//!                                the entry's first piece and the next entry
//! ```

use std::path::Path;

use bytes::{Bytes, BytesMut};

use crate::error::{Error, ErrorKind};

/// The most bytes of a batch stored under one key: well under sled's blob threshold.
pub const PIECE_BYTES: usize = 64 * 1024;

/// A piece's key: the entry's, then (past the first) the piece's number.
fn piece_key(key: u64, piece: u32) -> Vec<u8> {
    let mut bytes = key.to_be_bytes().to_vec();
    if piece > 0 {
        bytes.extend_from_slice(&piece.to_be_bytes());
    }
    bytes
}

/// The keys of an entry of `len` bytes' pieces.
fn piece_keys(key: u64, len: usize) -> impl Iterator<Item = Vec<u8>> {
    let pieces = len.div_ceil(PIECE_BYTES).max(1);
    (0..u32::try_from(pieces).unwrap_or(u32::MAX)).map(move |piece| piece_key(key, piece))
}

/// An entry read from its pieces: its key, and its bytes, whole.
pub(super) struct Stored {
    pub(super) key: u64,
    pub(super) value: Bytes,
}

/// The entries of `pieces` (a tree's items in key order), each joined from its pieces. An entry
/// of one piece is sled's own buffer, not copied.
pub(super) fn join_pieces(
    pieces: impl Iterator<Item = sled::Result<(sled::IVec, sled::IVec)>>,
) -> Result<Vec<Stored>, Error> {
    let mut entries: Vec<(u64, Vec<sled::IVec>)> = Vec::new();
    for piece in pieces {
        let (key, value) = piece.map_err(storage_error)?;
        match key.len() {
            8 => entries.push((key_of(&key)?, vec![value])),
            12 => match entries.last_mut() {
                Some((at, values)) if key_of(&key[..8])? == *at => values.push(value),
                // A piece whose entry's first piece is missing: not an entry.
                _ => continue,
            },
            _ => return Err(Error::Bug("an outbox key is neither 8 nor 12 bytes".into())),
        }
    }
    Ok(entries
        .into_iter()
        .map(|(key, mut values)| {
            let value = if values.len() == 1 {
                Bytes::from_owner(values.pop().expect("one piece"))
            } else {
                let mut whole = BytesMut::with_capacity(values.iter().map(|v| v.len()).sum());
                for value in &values {
                    whole.extend_from_slice(value);
                }
                whole.freeze()
            };
            Stored { key, value }
        })
        .collect())
}

/// Writes `entries` (key and encoded bytes) in one atomic sled batch, each in its pieces.
pub(super) fn write_pieces<'a>(
    tree: &sled::Tree,
    entries: impl Iterator<Item = (u64, &'a Bytes)>,
) -> sled::Result<()> {
    fail::fail_point!("outbox::in_the_middle_of_a_write");
    let mut pieces = sled::Batch::default();
    for (key, value) in entries {
        for (piece, bytes) in value.chunks(PIECE_BYTES).enumerate() {
            let piece = u32::try_from(piece).unwrap_or(u32::MAX);
            pieces.insert(piece_key(key, piece), bytes);
        }
    }
    tree.apply_batch(pieces)
}

/// Removes the entry under `key`, of `len` bytes, every piece in one atomic sled batch.
pub(super) fn remove_pieces(tree: &sled::Tree, key: u64, len: usize) -> sled::Result<()> {
    let mut gone = sled::Batch::default();
    for piece in piece_keys(key, len) {
        gone.remove(piece);
    }
    tree.apply_batch(gone)
}

/// Removes every key of `tree` in one atomic batch: sled's `clear` removes them one at a time,
/// and a crash in the middle could leave newer entries without the older ones, and a position
/// past a batch that is gone.
pub(super) fn remove_all(tree: &sled::Tree) -> Result<(), Error> {
    let mut every = sled::Batch::default();
    for key in tree.iter().keys() {
        every.remove(key.map_err(storage_error)?);
    }
    tree.apply_batch(every).map_err(storage_error)
}

/// Opens the outbox's database in `path` and its tree.
pub(super) fn open_tree(path: &Path, cache_bytes: u64) -> Result<(sled::Tree, sled::Db), Error> {
    let db = crate::store::open_db(path, cache_bytes, Some(500), "outbox")?;
    let tree = db.open_tree("outbox").map_err(storage_error)?;
    Ok((tree, db))
}

/// A sled error, classified: an I/O error may pass, anything else is a bug.
pub(super) fn storage_error(error: sled::Error) -> Error {
    match error {
        sled::Error::Io(io) => Error::new(ErrorKind::Transient, io),
        other => Error::new(ErrorKind::Bug, format!("sled: {other}")),
    }
}

fn key_of(key: &[u8]) -> Result<u64, Error> {
    <[u8; 8]>::try_from(key)
        .map(u64::from_be_bytes)
        .map_err(|_| Error::Bug("an outbox key is not 8 bytes".into()))
}

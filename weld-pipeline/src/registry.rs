//! The controller's registry of streams: each stream's configuration and desired state.

use serde::{Deserialize, Serialize};

use crate::error::{Error, ErrorKind};
use crate::message::StreamConfig;
use crate::record::Timestamp;
use crate::stream::StreamName;

/// Whether a stream should run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Desired {
    /// Run it every interval, on whichever worker can.
    Running,
    /// Leave it stopped; its data stays.
    Stopped,
}

/// The latest error a stream's runs reported.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LastError {
    /// When it was reported.
    pub at: Timestamp,
    /// What it said.
    pub message: String,
}

/// A stream as the registry keeps it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StreamEntry {
    /// The stream.
    pub name: StreamName,
    /// Its configuration: a change applies from the next run.
    pub config: StreamConfig,
    /// Whether it should run.
    pub desired: Desired,
    /// The latest error its runs reported, if any.
    pub last_error: Option<LastError>,
}

/// The registry: one sled tree in the controller's database, written with the store's syncs.
#[derive(Clone, Debug)]
pub struct Registry {
    tree: sled::Tree,
}

fn storage_error(error: sled::Error) -> Error {
    match error {
        sled::Error::Io(io) => Error::new(ErrorKind::Transient, io),
        other => Error::new(ErrorKind::Bug, format!("sled: {other}")),
    }
}

fn decode(value: &[u8]) -> Result<StreamEntry, Error> {
    serde_json::from_slice(value)
        .map_err(|e| Error::Bug(format!("a registry entry does not decode: {e}")))
}

impl Registry {
    /// The registry in `db`.
    ///
    /// # Errors
    ///
    /// When its tree cannot be opened.
    pub fn open(db: &sled::Db) -> Result<Self, Error> {
        Ok(Registry {
            tree: db.open_tree("registry").map_err(storage_error)?,
        })
    }

    /// A stream's entry.
    ///
    /// # Errors
    ///
    /// When the registry cannot be read.
    pub fn get(&self, name: &StreamName) -> Result<Option<StreamEntry>, Error> {
        self.tree
            .get(name.as_str())
            .map_err(storage_error)?
            .map(|v| decode(&v))
            .transpose()
    }

    /// Writes a stream's entry (make it durable with the store's sync).
    ///
    /// # Errors
    ///
    /// When the registry cannot be written.
    pub fn put(&self, entry: &StreamEntry) -> Result<(), Error> {
        let value = serde_json::to_vec(entry)
            .map_err(|e| Error::Bug(format!("a registry entry does not encode: {e}")))?;
        self.tree
            .insert(entry.name.as_str(), value)
            .map_err(storage_error)?;
        Ok(())
    }

    /// Removes a stream's entry.
    ///
    /// # Errors
    ///
    /// When the registry cannot be written.
    pub fn remove(&self, name: &StreamName) -> Result<(), Error> {
        self.tree.remove(name.as_str()).map_err(storage_error)?;
        Ok(())
    }

    /// Every stream, by name.
    ///
    /// # Errors
    ///
    /// When the registry cannot be read.
    pub fn all(&self) -> Result<Vec<StreamEntry>, Error> {
        self.tree
            .iter()
            .values()
            .map(|v| decode(&v.map_err(storage_error)?))
            .collect()
    }
}

//! The stream registry: one JSON entry per stream name, in the `registry` tree of the store's
//! database, made durable by the store's group sync.

use super::{storage_error, SledStore};
use crate::error::Error;
use crate::store::StreamEntry;
use crate::stream::StreamName;

fn decode(value: &[u8]) -> Result<StreamEntry, Error> {
    serde_json::from_slice(value)
        .map_err(|e| Error::Bug(format!("a registry entry does not decode: {e}")))
}

impl SledStore {
    /// A stream's registry entry.
    ///
    /// # Errors
    ///
    /// When the registry cannot be read.
    pub fn entry(&self, name: &StreamName) -> Result<Option<StreamEntry>, Error> {
        self.registry
            .get(name.as_str())
            .map_err(storage_error)?
            .map(|v| decode(&v))
            .transpose()
    }

    /// Writes a stream's registry entry, not yet durable ([`SledStore::sync`] makes it so).
    ///
    /// # Errors
    ///
    /// When the registry cannot be written.
    pub fn put_entry(&self, entry: &StreamEntry) -> Result<(), Error> {
        let value = serde_json::to_vec(entry)
            .map_err(|e| Error::Bug(format!("a registry entry does not encode: {e}")))?;
        self.registry
            .insert(entry.name.as_str(), value)
            .map_err(storage_error)?;
        Ok(())
    }

    /// Every stream's registry entry, by name.
    ///
    /// # Errors
    ///
    /// When the registry cannot be read.
    pub fn entries(&self) -> Result<Vec<StreamEntry>, Error> {
        self.registry
            .iter()
            .values()
            .map(|v| decode(&v.map_err(storage_error)?))
            .collect()
    }
}

//! Every store is what a source may ask of its stream's storage: an [`Inventory`] (what it
//! holds) and a [`Catalog`] (where the source describes its fields). The store knows the
//! source's traits, not the reverse: so these impls live here, beside [`StreamStore`], and a
//! source never depends on storage.

use std::sync::Arc;

use async_trait::async_trait;

use super::StreamStore;
use crate::error::Error;
use crate::source::{Catalog, HeldPage, Inventory, Schema, MAX_HELD_PER_PAGE};
use crate::stream::StreamName;

#[async_trait]
impl<S: StreamStore + ?Sized + 'static> Inventory for S {
    async fn held(
        &self,
        stream: &StreamName,
        after: Option<&str>,
        limit: usize,
    ) -> Result<HeldPage, Error> {
        StreamStore::held(self, stream, after, limit.min(MAX_HELD_PER_PAGE)).await
    }
}

#[async_trait]
impl Inventory for Arc<dyn StreamStore> {
    async fn held(
        &self,
        stream: &StreamName,
        after: Option<&str>,
        limit: usize,
    ) -> Result<HeldPage, Error> {
        (**self).held(stream, after, limit).await
    }
}

#[async_trait]
impl<S: StreamStore + ?Sized + 'static> Catalog for S {
    async fn describe(&self, stream: &StreamName, schema: &Schema) -> Result<(), Error> {
        StreamStore::describe(self, stream, schema).await
    }
}

#[async_trait]
impl Catalog for Arc<dyn StreamStore> {
    async fn describe(&self, stream: &StreamName, schema: &Schema) -> Result<(), Error> {
        (**self).describe(stream, schema).await
    }
}

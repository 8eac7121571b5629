//! What a stream's store holds, as a source may ask it: each record's id, version and archived
//! flag, in the store's key order, without its document. A source reconciles with it: it
//! compares what the store holds with what the source holds, and sends what is missing, stale,
//! or gone (the HubSpot source's sweep does).
//!
//! The runtime hands a source its stream's inventory in [`RunContext::inventory`]: on a worker,
//! the controller's store, asked over the transport ([`Request::Inventory`](crate::Request));
//! in one process, the store itself (every [`StreamStore`](crate::store::StreamStore) is one, and so is a
//! [`MemorySink`](crate::MemorySink)).

use async_trait::async_trait;

use crate::error::Error;
use crate::record::Timestamp;
use crate::stream::StreamName;

#[cfg(doc)]
use super::RunContext;

/// One record as a store holds it, without its document.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Held {
    /// Its id.
    pub id: String,
    /// Its version.
    pub updated_at: Timestamp,
    /// Whether it is archived.
    pub archived: bool,
}

/// A page of an inventory.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct HeldPage {
    /// The records, in the store's key order (for numeric ids, numeric order).
    pub records: Vec<Held>,
    /// The token of the next page, `None` at the end.
    pub next: Option<String>,
}

/// The most records one inventory page holds.
pub const MAX_HELD_PER_PAGE: usize = 10_000;

/// What a stream's store holds, page by page, in key order.
#[async_trait]
pub trait Inventory: Send + Sync + std::fmt::Debug + 'static {
    /// At most `limit` (up to [`MAX_HELD_PER_PAGE`]) records of `stream` after `after` (a
    /// previous page's `next`), live and archived. A page may hold fewer and still have a next.
    ///
    /// # Errors
    ///
    /// When the store cannot be read or reached (transient), or the token is not its own.
    async fn held(
        &self,
        stream: &StreamName,
        after: Option<&str>,
        limit: usize,
    ) -> Result<HeldPage, Error>;
}

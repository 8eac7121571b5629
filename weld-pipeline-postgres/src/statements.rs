//! The statement cache: the hot statements (a commit's, the delivery's registry read, a records
//! page, a lease's check) prepared once per pooled connection and kept, so PostgreSQL does not
//! parse and plan them again for every batch.
//!
//! The cache lives in each connection (deadpool's), bounded by [`CACHED_STATEMENTS`]. It sits
//! below everything that runs a statement (the store, the leases' fence), so each takes it from
//! here and none from another.

use deadpool_postgres::{GenericClient, StatementCache};

/// How many statements one connection keeps prepared: each records table has a few of its own,
/// so a house of many streams would grow the cache without end; past this it starts over.
const CACHED_STATEMENTS: usize = 200;

/// `sql`, prepared once per connection and kept in its cache (bounded by
/// [`CACHED_STATEMENTS`]): the hot statements skip a round trip and the server's parsing and
/// planning on every call after the first.
pub(crate) async fn prepared(
    client: &impl Cached,
    sql: &str,
) -> Result<tokio_postgres::Statement, tokio_postgres::Error> {
    let cache = client.cache();
    if cache.size() >= CACHED_STATEMENTS {
        cache.clear();
    }
    client.prepare_cached(sql).await
}

/// A pooled connection, or a transaction on one, with its connection's statement cache.
pub(crate) trait Cached: GenericClient {
    /// The statement cache of the connection.
    fn cache(&self) -> &StatementCache;
}

impl Cached for deadpool_postgres::Client {
    fn cache(&self) -> &StatementCache {
        &self.statement_cache
    }
}

impl Cached for deadpool_postgres::Transaction<'_> {
    fn cache(&self) -> &StatementCache {
        &self.statement_cache
    }
}

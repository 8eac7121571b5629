//! How to reach the database.

use std::path::PathBuf;
use std::time::Duration;

/// How a [`PostgresStore`](crate::PostgresStore) connects.
#[derive(Clone, Debug)]
pub struct PostgresConfig {
    /// `postgres://user[:password]@host[:port]/database` (the value of `WELD_DATABASE_URL`).
    /// With `?sslmode=require` the store connects over TLS only and verifies the server's
    /// certificate (against Mozilla's roots and [`ca_file`](Self::ca_file)); otherwise it
    /// connects without TLS.
    pub url: String,
    /// A PEM file of certificate authorities to trust besides Mozilla's roots, for a server
    /// whose certificate a private CA signed (a cloud provider's, or your own). Default none.
    pub ca_file: Option<PathBuf>,
    /// The most connections the pool holds. Default 16.
    pub pool_size: usize,
    /// How many of them commits never take: record pages, status reads and lease renewals
    /// always find one, however many batches are being committed at once (a worker keeps 16
    /// in flight). Commits take at most `pool_size - read_connections` (at least one).
    /// Default 8: on a 2-core database, 8 commits at once store as much as 12 do, and a
    /// records page, sharing the server's cores with fewer of them, comes back sooner (p99
    /// during a 1M-record ingestion 50-56 ms with 6 commits at once, 70 ms with 12).
    pub read_connections: usize,
    /// Every statement's limit: a query past it is cancelled by the server and fails
    /// transiently. Default 30 s.
    pub statement_timeout: Duration,
    /// How long a checkout waits for a connection (or a new one to open). Default 10 s.
    pub connect_timeout: Duration,
}

impl PostgresConfig {
    /// The database at `url`, with the defaults above.
    pub fn new(url: impl Into<String>) -> Self {
        PostgresConfig {
            url: url.into(),
            ca_file: None,
            pool_size: 16,
            read_connections: 8,
            statement_timeout: Duration::from_secs(30),
            connect_timeout: Duration::from_secs(10),
        }
    }
}

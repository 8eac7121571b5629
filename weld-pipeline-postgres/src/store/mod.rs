//! The store: [`StreamStore`] and [`Sink`] on PostgreSQL.
//!
//! [`PostgresStore`] and its trait implementations are here; each does its work in the room
//! named for it:
//!
//! | module | what it is |
//! |---|---|
//! | `streams` | the registry's rows in `weld.streams` and each stream's records table |
//! | `view` | a stream's typed view, made from the schema its source describes |
//! | `pages` | keyset pages of a records table: records, and the reconciliation's inventory |
//! | `commit` | the write path: one transaction per batch |
//! | `plan` | what a batch's versions do against the stored ones: the rows to write, the counts moved |
//! | `rows` | records as the parallel arrays of a multi-row upsert |
//! | `params` | a statement's parameters, bound by name |
//! | `links` | the association link table a commit keeps |
//! | `runs` | the run history in `weld.runs` |
//! | `ledger` | what the ledger `weld.batches` adds up to: counts, the checkpoint, its summing and folding |
//! | `millis` | a stored `timestamptz` read as Unix milliseconds |
//!
//! The pool and its statement cache are below the store ([`crate::connection`],
//! [`crate::statements`]), as is the fence a replica's commits pass ([`crate::fence`]).

mod commit;
mod ledger;
mod links;
mod millis;
mod pages;
mod params;
mod plan;
mod rows;
mod runs;
mod streams;
mod view;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use weld_pipeline::source::HeldPage;
use weld_pipeline::store::{
    Archived, Counts, RecordPage, Resume, RunRecord, StreamEntry, StreamStore,
};
use weld_pipeline::{
    Batch, Checkpoint, Commit, Error, RunId, RunOutcome, Sink, StreamName, Timestamp,
};

use crate::config::PostgresConfig;
use crate::connection::Connections;
use crate::error::database;
use crate::fence::Fence;
use crate::registry::{self, RegistryChanges};

/// The store of a controller, on PostgreSQL. Cheap to clone; clones share the pool.
#[derive(Clone)]
pub struct PostgresStore {
    connections: Connections,
    /// Commits in progress, at most the pool's size less its read connections: what is left is
    /// for everything else.
    commits: Arc<tokio::sync::Semaphore>,
    /// Each stream's records table, as `weld.streams` names it, once known.
    tables: Arc<Mutex<HashMap<StreamName, Arc<str>>>>,
    /// Per stream, whether its association link table exists, once known.
    links: Arc<Mutex<HashMap<StreamName, bool>>>,
    /// Per stream, a hash of the schema its typed view was last made from by this process.
    views: Arc<Mutex<HashMap<StreamName, u64>>>,
    /// The leases a replica's commits must hold ([`PostgresStore::fenced_by`]).
    fence: Option<Fence>,
}

impl std::fmt::Debug for PostgresStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresStore")
            .field("pool", &self.connections.status())
            .finish_non_exhaustive()
    }
}

impl PostgresStore {
    /// Connects to the database at `config.url` and migrates its schema.
    ///
    /// # Errors
    ///
    /// [`Error::Invalid`] for a URL that does not parse; a transient error when the database
    /// cannot be reached (retry with backoff).
    pub async fn open(config: &PostgresConfig) -> Result<Self, Error> {
        let store = Self::new(config)?;
        drop(store.client().await?);
        Ok(store)
    }

    /// The store of the database at `config.url`, without connecting: its first operation
    /// connects and migrates the schema, and every operation fails transiently while the
    /// database cannot be reached. A service can so start, and say why it cannot store, while
    /// the database is away (wrap it in [`Healing`](weld_pipeline::store::Healing)).
    ///
    /// # Errors
    ///
    /// [`Error::Invalid`] for a URL that does not parse.
    pub fn new(config: &PostgresConfig) -> Result<Self, Error> {
        let commits = config
            .pool_size
            .saturating_sub(config.read_connections)
            .max(1);
        Ok(PostgresStore {
            connections: Connections::new(config)?,
            commits: Arc::new(tokio::sync::Semaphore::new(commits)),
            tables: Arc::default(),
            links: Arc::default(),
            views: Arc::default(),
            fence: None,
        })
    }

    /// Listens for the registry changes of every replica on this database (this one's too), on
    /// a connection of its own, made again with backoff (0.5 s doubling to 30 s) when lost.
    pub fn watch_registry(&self) -> RegistryChanges {
        registry::watch(self.connections.dial().clone())
    }

    /// This store, its commits checked by `fence`.
    pub(crate) fn with_fence(&self, fence: Fence) -> PostgresStore {
        PostgresStore {
            fence: Some(fence),
            ..self.clone()
        }
    }

    /// A connection, the schema migrated.
    pub(crate) async fn client(&self) -> Result<deadpool_postgres::Client, Error> {
        self.connections.client().await
    }
}

/// `value` as a `bigint` column takes it.
fn id_i64(value: u64) -> Result<i64, Error> {
    i64::try_from(value).map_err(|_| Error::Bug(format!("{value} does not fit a bigint")))
}

#[async_trait]
impl Sink for PostgresStore {
    async fn commit(&self, batch: &Batch) -> Result<Commit, Error> {
        self.commit_batch(batch).await
    }

    async fn checkpoint(&self, stream: &StreamName) -> Result<Checkpoint, Error> {
        Ok(self.resume_point(stream).await?.checkpoint)
    }
}

#[async_trait]
impl StreamStore for PostgresStore {
    async fn stream(&self, name: &StreamName) -> Result<Option<StreamEntry>, Error> {
        self.entry(name).await
    }

    async fn streams(&self) -> Result<Vec<StreamEntry>, Error> {
        self.entries().await
    }

    async fn put_stream(&self, entry: &StreamEntry) -> Result<(), Error> {
        self.register(entry).await
    }

    async fn delete_stream(&self, name: &StreamName) -> Result<(), Error> {
        self.drop_stream(name).await
    }

    async fn describe(
        &self,
        stream: &StreamName,
        schema: &weld_pipeline::source::Schema,
    ) -> Result<(), Error> {
        self.typed_view(stream, schema).await
    }

    async fn resume(&self, stream: &StreamName) -> Result<Resume, Error> {
        self.resume_point(stream).await
    }

    async fn resync(&self, stream: &StreamName) -> Result<u64, Error> {
        self.raise_epoch(stream).await
    }

    async fn counts(&self, stream: &StreamName) -> Result<Counts, Error> {
        self.ledger_counts(stream).await
    }

    async fn records(
        &self,
        stream: &StreamName,
        after: Option<&str>,
        limit: usize,
        archived: Archived,
    ) -> Result<RecordPage, Error> {
        self.page(stream, after, limit, archived, false).await
    }

    async fn existing_records(
        &self,
        stream: &StreamName,
        after: Option<&str>,
        limit: usize,
        archived: Archived,
    ) -> Result<Option<RecordPage>, Error> {
        self.existing_page(stream, after, limit, archived).await
    }

    /// Ids, versions and archived flags only, in key order: the reconciliation's inventory
    /// reads no document.
    async fn held(
        &self,
        stream: &StreamName,
        after: Option<&str>,
        limit: usize,
    ) -> Result<HeldPage, Error> {
        self.inventory(stream, after, limit).await
    }

    async fn runs(&self, stream: &StreamName, limit: usize) -> Result<Vec<RunRecord>, Error> {
        self.run_history(stream, limit).await
    }

    async fn start_run(
        &self,
        stream: &StreamName,
        run_id: RunId,
        at: Timestamp,
    ) -> Result<(), Error> {
        self.record_start(stream, run_id, at).await
    }

    async fn finish_run(
        &self,
        stream: &StreamName,
        run_id: RunId,
        outcome: &RunOutcome,
    ) -> Result<(), Error> {
        self.record_finish(stream, run_id, outcome).await
    }

    /// Every commit is durable when it returns: nothing to wait for.
    async fn sync(&self) -> Result<(), Error> {
        Ok(())
    }

    async fn probe(&self) -> Result<(), Error> {
        self.client()
            .await?
            .execute(
                "INSERT INTO weld.probe (id, at) VALUES (1, now())
                 ON CONFLICT (id) DO UPDATE SET at = EXCLUDED.at",
                &[],
            )
            .await
            .map_err(database)?;
        Ok(())
    }
}

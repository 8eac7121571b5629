//! A store that heals itself: when storage fails (a full disk, a failed sync, no file
//! descriptors left, a database gone), [`Healing`] stops acknowledging, says so, reopens the
//! store with backoff until a probe write and sync succeed, and resumes, without a restart.
//!
//! ```text
//! healthy --a write fails transiently--> failed(since, why): writes refused (transient), reads
//!    ^                                     served by the store while it can read, /health 503
//!    |                                        |
//!    +---- probe write + sync succeed <-- reopen after 1 s, 2 s, 4 s ... 30 s, 30 s ...
//! ```
//!
//! Why reopen rather than retry: after a failed `fdatasync` the kernel may have dropped the pages
//! it could not write, and a later sync that succeeds would not bring them back ("fsyncgate").
//! So nothing is acknowledged after a failure until the store has been opened again from what is
//! on disk, and a probe has written and synced through the new handle. What was acknowledged
//! before the failure was synced, so the reopened store has it; what was written and not
//! acknowledged may or may not be there, and its sender delivers it again (a replay if it is).
//!
//! Logs tell a failure once: one line when it begins, one when it heals (with how long and how
//! many attempts), and at most one summary every 30 s in between. The gauge
//! `weld_store_healthy` reads 1 or 0.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;

use super::{
    Archived, Counts, RecordPage, Resume, RunRecord, StoreHealth, StreamEntry, StreamStore,
};
use crate::batch::Batch;
use crate::checkpoint::Checkpoint;
use crate::error::{Error, ErrorKind};
use crate::heal::{Failing, HealBackoff, Lines};
use crate::message::{Commit, RunOutcome};
use crate::record::Timestamp;
use crate::sink::Sink;
use crate::stream::{RunId, StreamName};

/// Opens (and reopens) the store a [`Healing`] wraps. It may block (sled's open waits for the
/// previous handle's file lock): it is called off the runtime's threads.
pub trait OpenStore: Send + Sync + 'static {
    /// Opens the store.
    ///
    /// # Errors
    ///
    /// When it cannot be opened now; the healer tries again later.
    fn open(&self) -> Result<Arc<dyn StreamStore>, Error>;

    /// Whether the cause of a failure looks gone, checked without the store (for a store on
    /// disk: whether a file can be written and synced beside it). The healer drops the failed
    /// handle and reopens only then, so the failed handle keeps serving reads for as long as the
    /// cause lasts. The default says yes.
    ///
    /// # Errors
    ///
    /// Why reopening would fail now.
    fn ready(&self) -> Result<(), Error> {
        Ok(())
    }
}

impl<F> OpenStore for F
where
    F: Fn() -> Result<Arc<dyn StreamStore>, Error> + Send + Sync + 'static,
{
    fn open(&self) -> Result<Arc<dyn StreamStore>, Error> {
        self()
    }
}

/// A [`StreamStore`] that reopens the store it wraps when storage fails, and refuses writes
/// (transiently) until it has. Cheap to clone; clones share the store and its state.
#[derive(Clone)]
pub struct Healing {
    inner: Arc<Inner>,
}

struct Inner {
    opener: Arc<dyn OpenStore>,
    /// The store; `None` only after a reopen found nothing to open. A reopen holds the lock
    /// while it drops the old handle and opens the new one, so a read waits for it (a few
    /// milliseconds) instead of failing.
    store: tokio::sync::RwLock<Option<Arc<dyn StreamStore>>>,
    failing: Failing,
    backoff: HealBackoff,
}

/// What the healer says: a failure that lasts is also summarised every 30 s.
const LINES: Lines = Lines {
    healed: "storage healed: acknowledging again",
    still_failing: "storage still failing",
    summary: true,
};

impl std::fmt::Debug for Healing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Healing")
            .field("health", &self.health())
            .finish_non_exhaustive()
    }
}

impl Healing {
    /// Opens the store with `opener`, which it calls again to heal.
    ///
    /// # Errors
    ///
    /// When the first open fails: a store that cannot be opened at start is a configuration
    /// error to report, not a failure to wait out.
    pub fn open(opener: impl OpenStore) -> Result<Self, Error> {
        let store = opener.open()?;
        metrics::gauge!("weld_store_healthy").set(1.0);
        Ok(Healing {
            inner: Arc::new(Inner {
                opener: Arc::new(opener),
                store: tokio::sync::RwLock::new(Some(store)),
                failing: Failing::default(),
                backoff: HealBackoff::default(),
            }),
        })
    }

    /// The same, trying to heal first after `first`, doubling up to `max` (tests heal in
    /// milliseconds).
    ///
    /// # Panics
    ///
    /// When called on a clone (the settings are fixed once the store is shared).
    #[must_use]
    pub fn with_backoff(mut self, first: Duration, max: Duration) -> Self {
        let inner = Arc::get_mut(&mut self.inner).expect("with_backoff before the store is shared");
        inner.backoff = HealBackoff {
            first,
            max: max.max(first),
        };
        self
    }

    async fn current(&self) -> Result<Arc<dyn StreamStore>, Error> {
        let store = self.inner.store.read().await.clone();
        store.ok_or_else(|| self.unavailable())
    }

    fn unavailable(&self) -> Error {
        let reason = self
            .inner
            .failing
            .failure()
            .map_or_else(|| "reopening".to_string(), |f| f.reason);
        Error::Unavailable(format!("storage is failing, healing by itself: {reason}"))
    }

    /// The store, for a write: refused while the store is failed.
    async fn writable(&self) -> Result<Arc<dyn StreamStore>, Error> {
        if self.inner.failing.is_failing() {
            return Err(self.unavailable());
        }
        self.current().await
    }

    /// Takes a write's outcome: a transient failure fails the store (a replica's commit refused
    /// for want of its lease is no failure of the store's).
    fn observe<T>(&self, result: Result<T, Error>) -> Result<T, Error> {
        if let Err(error) = &result {
            if error.kind() == ErrorKind::Transient && !matches!(error, Error::NotLeased(_)) {
                self.fail(error.to_string());
            }
        }
        result
    }

    /// Enters the failed state, once, and starts healing.
    fn fail(&self, reason: String) {
        if !self.inner.failing.begin(reason.clone()) {
            return;
        }
        metrics::gauge!("weld_store_healthy").set(0.0);
        tracing::error!(error = %reason, "storage failed: acknowledging nothing until it is reopened; healing by itself");
        let healer = self.clone();
        tokio::spawn(async move { healer.heal().await });
    }

    /// Reopens the store until a probe write and sync succeed through the new handle.
    async fn heal(self) {
        let healed = || metrics::gauge!("weld_store_healthy").set(1.0);
        let inner = &self.inner;
        inner
            .failing
            .heal(inner.backoff, LINES, || self.reopen(), healed)
            .await;
    }

    /// One attempt: when the cause looks gone, drop the failed handle (its file lock goes with
    /// it), open anew, probe.
    async fn reopen(&self) -> Result<(), Error> {
        let opener = self.inner.opener.clone();
        tokio::task::spawn_blocking(move || opener.ready())
            .await
            .map_err(|e| Error::from_join("checking the storage", e))??;
        let store = {
            let mut current = self.inner.store.write().await;
            drop(current.take());
            let opener = self.inner.opener.clone();
            let opened = tokio::task::spawn_blocking(move || opener.open())
                .await
                .map_err(|e| Error::from_join("reopening the store", e))??;
            // Reads are served by the new handle from here, probe or not.
            *current = Some(opened.clone());
            opened
        };
        store.probe().await
    }
}

#[async_trait]
impl Sink for Healing {
    async fn commit(&self, batch: &Batch) -> Result<Commit, Error> {
        let store = self.writable().await?;
        let committed = store.commit(batch).await;
        self.observe(committed)
    }

    async fn checkpoint(&self, stream: &StreamName) -> Result<Checkpoint, Error> {
        self.current().await?.checkpoint(stream).await
    }
}

#[async_trait]
impl StreamStore for Healing {
    // A read that fails transiently is a failure of the store as much as a write (a database
    // gone answers neither): it is told once and healed from the same way.
    async fn stream(&self, name: &StreamName) -> Result<Option<StreamEntry>, Error> {
        let read = self.current().await?.stream(name).await;
        self.observe(read)
    }

    async fn streams(&self) -> Result<Vec<StreamEntry>, Error> {
        let read = self.current().await?.streams().await;
        self.observe(read)
    }

    async fn put_stream(&self, entry: &StreamEntry) -> Result<(), Error> {
        let store = self.writable().await?;
        let put = store.put_stream(entry).await;
        self.observe(put)
    }

    async fn delete_stream(&self, name: &StreamName) -> Result<(), Error> {
        let store = self.writable().await?;
        let deleted = store.delete_stream(name).await;
        self.observe(deleted)
    }

    async fn resume(&self, stream: &StreamName) -> Result<Resume, Error> {
        let read = self.current().await?.resume(stream).await;
        self.observe(read)
    }

    async fn resync(&self, stream: &StreamName) -> Result<u64, Error> {
        let store = self.writable().await?;
        let resynced = store.resync(stream).await;
        self.observe(resynced)
    }

    async fn counts(&self, stream: &StreamName) -> Result<Counts, Error> {
        let read = self.current().await?.counts(stream).await;
        self.observe(read)
    }

    async fn records(
        &self,
        stream: &StreamName,
        after: Option<&str>,
        limit: usize,
        archived: Archived,
    ) -> Result<RecordPage, Error> {
        let read = self
            .current()
            .await?
            .records(stream, after, limit, archived)
            .await;
        self.observe(read)
    }

    async fn existing_records(
        &self,
        stream: &StreamName,
        after: Option<&str>,
        limit: usize,
        archived: Archived,
    ) -> Result<Option<RecordPage>, Error> {
        let read = self
            .current()
            .await?
            .existing_records(stream, after, limit, archived)
            .await;
        self.observe(read)
    }

    async fn held(
        &self,
        stream: &StreamName,
        after: Option<&str>,
        limit: usize,
    ) -> Result<crate::source::HeldPage, Error> {
        let read = self.current().await?.held(stream, after, limit).await;
        self.observe(read)
    }

    async fn describe(
        &self,
        stream: &StreamName,
        schema: &crate::source::Schema,
    ) -> Result<(), Error> {
        let told = self.current().await?.describe(stream, schema).await;
        self.observe(told)
    }

    async fn runs(&self, stream: &StreamName, limit: usize) -> Result<Vec<RunRecord>, Error> {
        let read = self.current().await?.runs(stream, limit).await;
        self.observe(read)
    }

    async fn start_run(
        &self,
        stream: &StreamName,
        run_id: RunId,
        at: Timestamp,
    ) -> Result<(), Error> {
        let store = self.writable().await?;
        let started = store.start_run(stream, run_id, at).await;
        self.observe(started)
    }

    async fn finish_run(
        &self,
        stream: &StreamName,
        run_id: RunId,
        outcome: &RunOutcome,
    ) -> Result<(), Error> {
        let store = self.writable().await?;
        let finished = store.finish_run(stream, run_id, outcome).await;
        self.observe(finished)
    }

    async fn sync(&self) -> Result<(), Error> {
        let store = self.writable().await?;
        let synced = store.sync().await;
        self.observe(synced)
    }

    async fn probe(&self) -> Result<(), Error> {
        let store = self.writable().await?;
        let probed = store.probe().await;
        self.observe(probed)
    }

    fn health(&self) -> StoreHealth {
        match self.inner.failing.failure() {
            None => StoreHealth::Ok,
            Some(failure) => StoreHealth::Failed {
                since: failure.since,
                reason: failure.reason,
            },
        }
    }
}

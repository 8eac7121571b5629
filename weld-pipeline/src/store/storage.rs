//! The front door to storage: what a [`Controller`](crate::runtime::Controller) keeps its streams
//! in, built with one call for each store the project ships.
//!
//! | storage | the call | for |
//! |---|---|---|
//! | sled, in a directory | [`Storage::sled`] (feature `sled`) | one data-streams, embedded: the default |
//! | PostgreSQL, with leases | `weld_pipeline_postgres::PostgresStore::replica` | any number of replicas sharing one database |
//! | any [`StreamStore`] of yours | [`Storage::from`] an `Arc` of it, or [`Storage::replica`] with its [`Leasing`] | your own store |
//!
//! Each shipped call wraps its store in [`Healing`](super::Healing), so a store that fails (a
//! full disk, a lost database, no descriptors left) is reopened by itself until it commits again.
//!
//! ```
//! # fn main() -> Result<(), weld_pipeline::Error> {
//! use weld_pipeline::runtime::Controller;
//! use weld_pipeline::source::{GeneratorSources, SourceKinds};
//! use weld_pipeline::store::Storage;
//! use weld_pipeline::transport::MemoryPeer;
//! use std::sync::Arc;
//!
//! let dir = tempfile::tempdir().unwrap();
//! let kinds = SourceKinds::new().with(Arc::new(GeneratorSources));
//! let controller = Controller::<MemoryPeer>::new(Storage::sled(dir.path())?, kinds);
//! assert!(controller.replica().is_none());
//! # Ok(())
//! # }
//! ```

use std::sync::Arc;

use super::StreamStore;
use crate::lease::Leasing;

/// Where a controller keeps its streams: a [`StreamStore`], and, when the controller is one
/// replica of several sharing that store, the [`Leasing`] that decides which replica runs each
/// stream.
#[derive(Clone, Debug)]
pub struct Storage {
    store: Arc<dyn StreamStore>,
    leases: Option<Arc<dyn Leasing>>,
}

impl Storage {
    /// A store that one controller has to itself.
    pub fn alone(store: Arc<dyn StreamStore>) -> Self {
        Storage {
            store,
            leases: None,
        }
    }

    /// A store shared by several controller replicas: this one runs only the streams whose lease
    /// it holds in `leases`. The store should fence its commits with the same leases, so that a
    /// replica that lost a lease cannot commit for its stream.
    pub fn replica(store: Arc<dyn StreamStore>, leases: Arc<dyn Leasing>) -> Self {
        Storage {
            store,
            leases: Some(leases),
        }
    }

    /// The embedded default: a sled database in `dir` (created if missing) with the default
    /// cache, reopened by itself after a failure.
    ///
    /// # Errors
    ///
    /// When the database cannot be opened.
    #[cfg(feature = "sled")]
    pub fn sled(dir: impl Into<std::path::PathBuf>) -> Result<Self, crate::Error> {
        Self::sled_with(super::SledStoreConfig::new(dir))
    }

    /// A sled database as `config` says (its directory and page cache), reopened by itself after
    /// a failure.
    ///
    /// # Errors
    ///
    /// When the database cannot be opened.
    #[cfg(feature = "sled")]
    pub fn sled_with(config: super::SledStoreConfig) -> Result<Self, crate::Error> {
        Ok(Self::alone(Arc::new(super::Healing::open(config)?)))
    }

    /// The store.
    pub fn store(&self) -> &Arc<dyn StreamStore> {
        &self.store
    }

    /// The leases, when the store is shared by replicas.
    pub fn leases(&self) -> Option<&Arc<dyn Leasing>> {
        self.leases.as_ref()
    }

    /// The store and the leases, apart.
    pub fn into_parts(self) -> (Arc<dyn StreamStore>, Option<Arc<dyn Leasing>>) {
        (self.store, self.leases)
    }
}

impl From<Arc<dyn StreamStore>> for Storage {
    fn from(store: Arc<dyn StreamStore>) -> Self {
        Storage::alone(store)
    }
}

impl<S: StreamStore> From<Arc<S>> for Storage {
    fn from(store: Arc<S>) -> Self {
        Storage::alone(store)
    }
}

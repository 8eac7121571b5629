//! The one call that makes a PostgreSQL database a controller's storage, with its leases.

use std::sync::Arc;
use std::time::Duration;

use weld_pipeline::store::{Healing, Storage, StreamStore};
use weld_pipeline::Error;

use crate::config::PostgresConfig;
use crate::store::PostgresStore;

impl PostgresStore {
    /// The database at `config.url` as the storage of the controller replica `replica` (its id
    /// among the data-streams sharing the database: a restarted replica with the same id takes
    /// its leases back at once), whose leases last `lease_ttl` unless renewed.
    ///
    /// Any number of replicas may share the database: each runs the streams it leases, and its
    /// commits are fenced by those leases. Nothing connects yet: while the database is away
    /// the service starts, says so once, answers `/health` 503, and heals by itself once it is
    /// back (the pool reconnects; [`Healing`] acknowledges nothing until a probe commits again).
    ///
    /// # Errors
    ///
    /// [`Error::Invalid`] for a URL that does not parse, or a CA file that cannot be read.
    pub fn replica(
        config: &PostgresConfig,
        replica: impl Into<String>,
        lease_ttl: Duration,
    ) -> Result<Storage, Error> {
        let store = PostgresStore::new(config)?;
        let leases = Arc::new(store.leases(replica, lease_ttl));
        let store: Arc<dyn StreamStore> = Arc::new(store.fenced_by(&leases));
        let healing = Healing::open(move || Ok(store.clone()))?;
        Ok(Storage::replica(Arc::new(healing), leases))
    }
}

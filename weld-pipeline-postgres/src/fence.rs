//! The fence: what a replica holds, as its last claim or renewal said, and the check every
//! commit of a fenced store makes in its own transaction before it writes.
//!
//! Shared by a replica's [`Leases`](crate::Leases), which fill it, and the store its commits go
//! through, which reads it; it sits below both so that neither takes it from the other.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use weld_pipeline::sync::Locked;

use weld_pipeline::{Error, StreamName};

use crate::error::database;
use crate::statements::prepared;

/// What a replica holds: per stream, the epoch of its lease. Cheap to clone; clones share it.
#[derive(Clone, Debug)]
pub(crate) struct Fence {
    replica: Arc<str>,
    held: Arc<Mutex<HashMap<StreamName, u64>>>,
    refused: Arc<AtomicU64>,
}

impl Fence {
    /// The fence of replica `replica`, holding nothing yet.
    pub(crate) fn new(replica: String) -> Self {
        Fence {
            replica: replica.into(),
            held: Arc::default(),
            refused: Arc::default(),
        }
    }

    /// The replica whose leases these are.
    pub(crate) fn replica(&self) -> &str {
        &self.replica
    }

    /// The epoch of `stream`'s lease, if the replica holds it.
    pub(crate) fn epoch_of(&self, stream: &StreamName) -> Option<u64> {
        self.held.locked().get(stream).copied()
    }

    /// What the replica holds, locked for a change.
    pub(crate) fn held(&self) -> MutexGuard<'_, HashMap<StreamName, u64>> {
        self.held.locked()
    }

    /// How many commits this fence refused.
    pub(crate) fn refused(&self) -> u64 {
        self.refused.load(Ordering::Relaxed)
    }

    /// Refuses a commit of `stream` unless this replica holds its lease, unexpired, at the
    /// epoch `lease` the batch was made under (or, for a batch that names none, the epoch the
    /// replica believes): checked in the commit's transaction `tx`, under a key-share lock of
    /// the lease, so the lease cannot be claimed or released before the commit ends.
    pub(crate) async fn check(
        &self,
        tx: &deadpool_postgres::Transaction<'_>,
        stream: &StreamName,
        lease: u64,
    ) -> Result<(), Error> {
        let epoch = match lease {
            0 => self.epoch_of(stream),
            lease => Some(lease),
        };
        let held = match epoch {
            Some(epoch) => {
                let statement = prepared(tx, HOLDS).await.map_err(database)?;
                holds(&**tx, &statement, &self.replica, stream, epoch).await?
            }
            None => false,
        };
        if held {
            return Ok(());
        }
        self.refused.fetch_add(1, Ordering::Relaxed);
        tracing::warn!(replica = %self.replica, %stream, "commit refused: the stream's lease is not this replica's");
        Err(Error::NotLeased(format!(
            "replica {} does not hold the lease of stream {stream}: the commit is refused",
            self.replica
        )))
    }
}

/// Whether `replica` holds `stream`'s lease at `epoch`, unexpired; the row key-share-locked until
/// the transaction ends: no claim or release, each of which locks the row `FOR UPDATE` first,
/// can move it meanwhile, and the holder's renewals, plain updates of a non-key column, do not
/// wait for it (under `FOR SHARE` a renewal waited behind an ingesting stream's commits: 0.8 s
/// on average, 2.6 s at worst, at a million records).
pub(crate) const HOLDS: &str = "SELECT 1 FROM weld.leases
     WHERE stream = $1 AND owner = $2 AND epoch = $3 AND expires_at > now()
     FOR KEY SHARE";

/// Runs [`HOLDS`] (`query`: its text or its prepared statement) for `replica`'s lease of
/// `stream` at `epoch`.
pub(crate) async fn holds<Q>(
    client: &impl tokio_postgres::GenericClient,
    query: &Q,
    replica: &str,
    stream: &StreamName,
    epoch: u64,
) -> Result<bool, Error>
where
    Q: tokio_postgres::ToStatement + Sync + Send + ?Sized,
{
    let epoch = i64::try_from(epoch).unwrap_or(i64::MAX);
    let row = client
        .query_opt(query, &[&stream.as_str(), &replica, &epoch])
        .await
        .map_err(database)?;
    Ok(row.is_some())
}

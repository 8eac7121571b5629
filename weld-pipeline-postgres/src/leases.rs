//! Leases: which of several data-streams replicas on one database runs each stream.
//!
//! A lease is a row of `weld.leases`: its owner (a replica's id), its expiry and an epoch. A
//! replica [claims](Leases::claim) streams whose lease is free or has lapsed, with `SELECT ...
//! FOR UPDATE SKIP LOCKED` (replicas claiming at once never wait for each other, and never take
//! the same stream), [renews](Leases::renew) what it holds every few seconds, and
//! [releases](Leases::release) it on a clean shutdown. A replica that dies or freezes stops
//! renewing: its leases lapse after their time-to-live and another replica claims them. Every
//! fresh claim grows the epoch, so a frozen replica that wakes holding an old epoch can be told
//! apart from the new holder ([`Leases::holds`], checked under `FOR KEY SHARE`: a claim, which
//! locks the row `FOR UPDATE`, cannot slip in until the checking transaction ends, and neither
//! can a release, which locks it so too, so a released stream has no commit of its old holder
//! under way; the holder's renewals and choice of worker, plain updates of non-key columns,
//! never wait for it). Times are the database's own clock (`now()`): the replicas' clocks never
//! have to agree.

use std::collections::HashMap;
use std::time::Duration;

use async_trait::async_trait;
use futures::stream::BoxStream;
use futures::StreamExt;
use weld_pipeline::lease::{Holder, Lease, Leasing, RegistryChange, Replica};
use weld_pipeline::{Error, StreamName};

use crate::error::database;
use crate::fence::{holds, Fence, HOLDS};
use crate::store::PostgresStore;

/// One replica's leases on a database. Cheap to clone; clones share what they hold.
#[derive(Clone, Debug)]
pub struct Leases {
    store: PostgresStore,
    ttl: Duration,
    fence: Fence,
}

impl PostgresStore {
    /// The leases of replica `replica` on this database, each lasting `ttl` from its last claim
    /// or renewal.
    pub fn leases(&self, replica: impl Into<String>, ttl: Duration) -> Leases {
        Leases {
            store: self.clone(),
            ttl,
            fence: Fence::new(replica.into()),
        }
    }

    /// This store, with every commit fenced by `leases`: a batch of a stream whose lease the
    /// replica does not hold (at the batch's lease epoch, or that of its last claim or renewal
    /// for a batch that names none; unexpired; checked in the commit's own transaction) is
    /// refused with [`Error::NotLeased`] (transient), and nothing of it is written. A replica
    /// that was frozen past its lease and wakes can so commit nothing, nor move a checkpoint;
    /// the batch, never acknowledged, is fetched again by the lease's holder from the committed
    /// checkpoint. The refusal is not a storage failure: a store that heals by itself lets it
    /// pass.
    pub fn fenced_by(&self, leases: &Leases) -> PostgresStore {
        self.with_fence(leases.fence.clone())
    }
}

fn lease(stream: String, epoch: i64) -> Result<Lease, Error> {
    Ok(Lease {
        stream: StreamName::new(&stream)
            .map_err(|e| Error::Bug(format!("a lease of a stream that cannot be: {e}")))?,
        epoch: u64::try_from(epoch).unwrap_or(0),
    })
}

impl Leases {
    /// This replica's id.
    pub fn replica(&self) -> &str {
        self.fence.replica()
    }

    /// The leases held, as the last claim or renewal said.
    pub fn held(&self) -> Vec<Lease> {
        let held = self.fence.held();
        let mut leases: Vec<Lease> = held
            .iter()
            .map(|(stream, epoch)| Lease {
                stream: stream.clone(),
                epoch: *epoch,
            })
            .collect();
        leases.sort_by(|a, b| a.stream.cmp(&b.stream));
        leases
    }

    /// Commits refused by the fence of a store [`fenced_by`](PostgresStore::fenced_by) these
    /// leases.
    pub fn refused_commits(&self) -> u64 {
        self.fence.refused()
    }

    fn ttl_ms(&self) -> i64 {
        i64::try_from(self.ttl.as_millis()).unwrap_or(i64::MAX)
    }

    /// Claims at most `limit` of `wanted` whose lease is free or has lapsed, and renews those
    /// of them this replica holds already; returns every one of `wanted` it holds afterwards.
    /// A lease claimed afresh gets the next epoch; one renewed keeps its own.
    ///
    /// # Errors
    ///
    /// When the database cannot be reached (transient).
    pub async fn claim(&self, wanted: &[StreamName], limit: usize) -> Result<Vec<Lease>, Error> {
        let names: Vec<&str> = wanted.iter().map(StreamName::as_str).collect();
        let client = self.store.client().await?;
        client
            .execute(
                "INSERT INTO weld.leases (stream) SELECT unnest($1::text[])
                 ON CONFLICT (stream) DO NOTHING",
                &[&names],
            )
            .await
            .map_err(database)?;
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let rows = client
            .query(
                "WITH taken AS (
                     SELECT stream FROM weld.leases
                     WHERE stream = ANY($1) AND (owner IS NULL OR expires_at <= now())
                     ORDER BY stream LIMIT $3
                     FOR UPDATE SKIP LOCKED
                 ), claimed AS (
                     UPDATE weld.leases l
                     SET owner = $2, epoch = l.epoch + 1, worker = NULL,
                         expires_at = now() + $4 * interval '1 millisecond'
                     FROM taken WHERE l.stream = taken.stream
                     RETURNING l.stream, l.epoch
                 ), renewed AS (
                     UPDATE weld.leases
                     SET expires_at = now() + $4 * interval '1 millisecond'
                     WHERE stream = ANY($1) AND owner = $2 AND expires_at > now()
                     RETURNING stream, epoch
                 )
                 SELECT stream, epoch FROM claimed
                 UNION ALL SELECT stream, epoch FROM renewed
                 ORDER BY stream",
                &[&names, &self.replica(), &limit, &(self.ttl_ms() as f64)],
            )
            .await
            .map_err(database)?;
        let leases: Vec<Lease> = rows
            .into_iter()
            .map(|row| lease(row.get(0), row.get(1)))
            .collect::<Result<_, _>>()?;
        let mut held = self.fence.held();
        for stream in wanted {
            held.remove(stream);
        }
        held.extend(leases.iter().map(|l| (l.stream.clone(), l.epoch)));
        Ok(leases)
    }

    /// Extends every lease this replica still holds by its time-to-live; returns them. A lease
    /// that lapsed is not renewed (another replica may hold it now): it must be claimed again,
    /// at a new epoch.
    ///
    /// # Errors
    ///
    /// When the database cannot be reached (transient): the leases lapse unless a renewal
    /// succeeds in time.
    pub async fn renew(&self) -> Result<Vec<Lease>, Error> {
        // What was held when the renewal left: a claim that completes while it is on its way is
        // not undone by its answer, which may not include it.
        let before = self.fence.held().clone();
        let rows = self
            .store
            .client()
            .await?
            .query(
                "UPDATE weld.leases SET expires_at = now() + $2 * interval '1 millisecond'
                 WHERE owner = $1 AND expires_at > now()
                 RETURNING stream, epoch",
                &[&self.replica(), &(self.ttl_ms() as f64)],
            )
            .await
            .map_err(database)?;
        let mut leases: Vec<Lease> = rows
            .into_iter()
            .map(|row| lease(row.get(0), row.get(1)))
            .collect::<Result<_, _>>()?;
        leases.sort_by(|a, b| a.stream.cmp(&b.stream));
        let mut held = self.fence.held();
        let renewed: HashMap<&StreamName, u64> =
            leases.iter().map(|l| (&l.stream, l.epoch)).collect();
        held.retain(|stream, epoch| {
            // Kept: renewed, or claimed (afresh) since the renewal left.
            renewed.contains_key(stream) || before.get(stream) != Some(epoch)
        });
        for lease in &leases {
            held.insert(lease.stream.clone(), lease.epoch);
        }
        drop(held);
        Ok(leases)
    }

    /// Gives up every lease this replica holds (a clean shutdown): others may claim them at
    /// once. Returns how many it gave up.
    ///
    /// # Errors
    ///
    /// When the database cannot be reached: the leases then lapse by themselves.
    pub async fn release_all(&self) -> Result<u64, Error> {
        self.fence.held().clear();
        let client = self.store.client().await?;
        client
            .execute(
                "DELETE FROM weld.replicas WHERE id = $1",
                &[&self.replica()],
            )
            .await
            .map_err(database)?;
        client
            .execute(RELEASE_ALL, &[&self.replica()])
            .await
            .map_err(database)
    }

    /// Whether this replica holds `stream`'s lease at `epoch`, unexpired. Run inside a
    /// transaction that writes on the lease's behalf, it key-share-locks the lease row: until
    /// that transaction ends, no claim or release can move the lease (renewals go on).
    ///
    /// # Errors
    ///
    /// When the database cannot be reached.
    pub async fn holds(
        &self,
        client: &impl tokio_postgres::GenericClient,
        stream: &StreamName,
        epoch: u64,
    ) -> Result<bool, Error> {
        holds(client, HOLDS, self.replica(), stream, epoch).await
    }

    /// Who holds `stream`'s lease now, if anyone does and it has not lapsed.
    ///
    /// # Errors
    ///
    /// When the database cannot be reached.
    pub async fn holder(&self, stream: &StreamName) -> Result<Option<Holder>, Error> {
        let row = self
            .store
            .client()
            .await?
            .query_opt(
                "SELECT owner, epoch, worker FROM weld.leases
                 WHERE stream = $1 AND owner IS NOT NULL AND expires_at > now()",
                &[&stream.as_str()],
            )
            .await
            .map_err(database)?;
        Ok(row.map(|row| holder(&row)))
    }

    /// Says this replica is alive with `workers` workers, for a time-to-live; returns every
    /// replica alive, by id.
    ///
    /// # Errors
    ///
    /// When the database cannot be reached.
    pub async fn heartbeat(&self, workers: usize) -> Result<Vec<Replica>, Error> {
        let workers = i32::try_from(workers).unwrap_or(i32::MAX);
        let rows = self
            .store
            .client()
            .await?
            .query(
                "WITH beat AS (
                     INSERT INTO weld.replicas (id, workers, expires_at)
                     VALUES ($1, $2, now() + $3 * interval '1 millisecond')
                     ON CONFLICT (id) DO UPDATE
                     SET workers = EXCLUDED.workers, expires_at = EXCLUDED.expires_at
                 )
                 SELECT id, workers FROM weld.replicas WHERE id <> $1 AND expires_at > now()
                 UNION ALL SELECT $1::text, $2::integer
                 ORDER BY 1",
                &[&self.replica(), &workers, &(self.ttl_ms() as f64)],
            )
            .await
            .map_err(database)?;
        Ok(rows
            .into_iter()
            .map(|row| Replica {
                id: row.get(0),
                workers: usize::try_from(row.get::<_, i32>(1)).unwrap_or(0),
            })
            .collect())
    }

    /// Every stream's live holder, by stream.
    ///
    /// # Errors
    ///
    /// When the database cannot be reached.
    pub async fn holders(&self) -> Result<HashMap<StreamName, Holder>, Error> {
        let rows = self
            .store
            .client()
            .await?
            .query(
                "SELECT owner, epoch, worker, stream FROM weld.leases
                 WHERE owner IS NOT NULL AND expires_at > now()",
                &[],
            )
            .await
            .map_err(database)?;
        let mut holders = HashMap::with_capacity(rows.len());
        for row in rows {
            if let Ok(stream) = StreamName::new(row.get::<_, &str>(3)) {
                holders.insert(stream, holder(&row));
            }
        }
        Ok(holders)
    }

    /// Records the worker this replica runs `stream` on, while it holds the lease.
    ///
    /// # Errors
    ///
    /// When the database cannot be reached.
    pub async fn run_on(&self, stream: &StreamName, worker: Option<&str>) -> Result<(), Error> {
        self.store
            .client()
            .await?
            .execute(
                "UPDATE weld.leases SET worker = $3
                 WHERE stream = $1 AND owner = $2 AND expires_at > now()",
                &[&stream.as_str(), &self.replica(), &worker],
            )
            .await
            .map_err(database)?;
        Ok(())
    }

    /// Gives up `stream`'s lease if this replica holds it: another replica may claim it at once.
    ///
    /// # Errors
    ///
    /// When the database cannot be reached: the lease then lapses by itself.
    pub async fn release(&self, stream: &StreamName) -> Result<(), Error> {
        self.fence.held().remove(stream);
        self.store
            .client()
            .await?
            .execute(RELEASE, &[&stream.as_str(), &self.replica()])
            .await
            .map_err(database)?;
        Ok(())
    }
}

fn holder(row: &tokio_postgres::Row) -> Holder {
    Holder {
        owner: row.get(0),
        epoch: u64::try_from(row.get::<_, i64>(1)).unwrap_or(0),
        worker: row.get(2),
    }
}

#[async_trait]
impl Leasing for Leases {
    fn replica(&self) -> &str {
        Leases::replica(self)
    }

    fn ttl(&self) -> Duration {
        self.ttl
    }

    fn epoch_of(&self, stream: &StreamName) -> Option<u64> {
        self.fence.epoch_of(stream)
    }

    fn refused_commits(&self) -> u64 {
        Leases::refused_commits(self)
    }

    async fn claim(&self, wanted: &[StreamName], limit: usize) -> Result<Vec<Lease>, Error> {
        Leases::claim(self, wanted, limit).await
    }

    async fn renew(&self) -> Result<Vec<Lease>, Error> {
        Leases::renew(self).await
    }

    async fn run_on(&self, stream: &StreamName, worker: Option<&str>) -> Result<(), Error> {
        Leases::run_on(self, stream, worker).await
    }

    async fn release(&self, stream: &StreamName) -> Result<(), Error> {
        Leases::release(self, stream).await
    }

    async fn release_all(&self) -> Result<u64, Error> {
        Leases::release_all(self).await
    }

    async fn heartbeat(&self, workers: usize) -> Result<Vec<Replica>, Error> {
        Leases::heartbeat(self, workers).await
    }

    async fn holders(&self) -> Result<HashMap<StreamName, Holder>, Error> {
        Leases::holders(self).await
    }

    async fn holder(&self, stream: &StreamName) -> Result<Option<Holder>, Error> {
        Leases::holder(self, stream).await
    }

    fn watch(&self) -> BoxStream<'static, RegistryChange> {
        futures::stream::unfold(self.store.watch_registry(), |mut changes| async move {
            let change = changes.next().await?;
            Some((change, changes))
        })
        .fuse()
        .boxed()
    }
}

/// Gives up `$1`'s lease if `$2` holds it. The row is locked `FOR UPDATE` first: a release waits
/// for the holder's commits under way (their [`HOLDS`] lock), so that once it returns none of them
/// can still land (a stream stopped, a clean shutdown). The update alone changes no key column
/// and would not wait.
const RELEASE: &str = "WITH mine AS (
         SELECT stream FROM weld.leases WHERE stream = $1 AND owner = $2 FOR UPDATE
     )
     UPDATE weld.leases l SET owner = NULL, expires_at = NULL, worker = NULL
     FROM mine WHERE l.stream = mine.stream";

/// Gives up every lease `$1` holds, waiting for its commits under way as [`RELEASE`] does.
const RELEASE_ALL: &str = "WITH mine AS (
         SELECT stream FROM weld.leases WHERE owner = $1 ORDER BY stream FOR UPDATE
     )
     UPDATE weld.leases l SET owner = NULL, expires_at = NULL, worker = NULL
     FROM mine WHERE l.stream = mine.stream";

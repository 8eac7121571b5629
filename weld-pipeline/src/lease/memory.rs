//! Leases in memory, for several controllers in one process (feature `testing`): the same
//! semantics as the PostgreSQL leases (`weld-pipeline-postgres`), with tokio's clock for time,
//! so that a test on a paused clock drives expiry.
//!
//! ```text
//! LeaseTable (what weld.leases and weld.replicas are in PostgreSQL), shared
//!   |-- table.leases("a", ttl) -> MemoryLeases of replica a
//!   |-- table.leases("b", ttl) -> MemoryLeases of replica b
//!   '-- table.announce(change) -> every replica's watch() (NOTIFY in PostgreSQL)
//! ```
//!
//! | rule | as in PostgreSQL |
//! |---|---|
//! | a claim takes free or lapsed leases, at most `limit`, in stream order, each at the next epoch, and renews those it holds | `claim`'s `FOR UPDATE SKIP LOCKED` |
//! | a renewal extends what is held and unexpired; a lapsed lease is not renewed | `renew` |
//! | a lease not renewed within its time-to-live lapses; another may claim it, at a higher epoch | `expires_at <= now()` |
//! | [`MemoryLeases::check`] refuses a commit under an epoch the replica does not hold | the store's fence |
//! | a heartbeat lasts a time-to-live; `release_all` ends it | `weld.replicas` |
//! | changes announced reach every watch; one that lagged hears [`RegistryChange::Reconnected`] | `LISTEN` / `NOTIFY` |
//!
//! Behind the feature `testing`: production shares leases through a database, never through
//! one process's memory, so this is a seam for tests, not a path of its own.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use async_trait::async_trait;
use futures::stream::BoxStream;
use futures::StreamExt;
use tokio::sync::broadcast;
use tokio::time::Instant;

use super::{Holder, Lease, Leasing, RegistryChange, Replica};
use crate::error::Error;
use crate::stream::StreamName;
use crate::sync::Locked;

/// How many announcements a watch may fall behind before it hears
/// [`RegistryChange::Reconnected`] instead of them.
const CHANGES_BUFFERED: usize = 256;

/// The leases and heartbeats several [`MemoryLeases`] share: what the shared database is to
/// replicas in several processes. Cheap to clone; clones share it.
#[derive(Clone, Debug)]
pub struct LeaseTable {
    rows: Arc<Mutex<Rows>>,
    changes: broadcast::Sender<RegistryChange>,
}

#[derive(Debug, Default)]
struct Rows {
    leases: HashMap<StreamName, Row>,
    /// Per replica: its workers and when its heartbeat lapses.
    replicas: HashMap<String, (usize, Instant)>,
}

/// One stream's lease.
#[derive(Debug, Default)]
struct Row {
    owner: Option<String>,
    epoch: u64,
    expires_at: Option<Instant>,
    worker: Option<String>,
}

impl Row {
    /// Whether `replica` holds it now.
    fn held_by(&self, replica: &str, now: Instant) -> bool {
        self.owner.as_deref() == Some(replica) && self.live(now)
    }

    /// Whether someone holds it now.
    fn live(&self, now: Instant) -> bool {
        self.owner.is_some() && self.expires_at.is_some_and(|at| at > now)
    }

    fn holder(&self) -> Option<Holder> {
        Some(Holder {
            owner: self.owner.clone()?,
            epoch: self.epoch,
            worker: self.worker.clone(),
        })
    }

    fn free(&mut self) {
        self.owner = None;
        self.expires_at = None;
        self.worker = None;
    }
}

impl Default for LeaseTable {
    fn default() -> Self {
        LeaseTable {
            rows: Arc::default(),
            changes: broadcast::Sender::new(CHANGES_BUFFERED),
        }
    }
}

impl LeaseTable {
    /// An empty table: no lease held, no replica alive.
    pub fn new() -> Self {
        Self::default()
    }

    /// The leases of replica `replica` on this table, each lasting `ttl` from its last claim or
    /// renewal.
    pub fn leases(&self, replica: impl Into<String>, ttl: Duration) -> MemoryLeases {
        MemoryLeases {
            table: self.clone(),
            replica: replica.into().into(),
            ttl,
            held: Arc::default(),
            refused: Arc::default(),
            cut_off: Arc::default(),
        }
    }

    /// Announces a registry change to every replica's [`watch`](Leasing::watch), as a write
    /// of the registry does through PostgreSQL's `NOTIFY`.
    pub fn announce(&self, change: RegistryChange) {
        // Nobody watching: nobody to tell.
        let _ = self.changes.send(change);
    }

    fn rows(&self) -> MutexGuard<'_, Rows> {
        self.rows.locked()
    }
}

/// One replica's leases on a [`LeaseTable`] (see the module docs). Cheap to clone; clones
/// share what they hold.
#[derive(Clone, Debug)]
pub struct MemoryLeases {
    table: LeaseTable,
    replica: Arc<str>,
    ttl: Duration,
    /// What the last claim or renewal said this replica holds, by stream: its epoch.
    held: Arc<Mutex<HashMap<StreamName, u64>>>,
    refused: Arc<AtomicU64>,
    /// Whether this replica is cut off from the table, as from a database out of reach.
    cut_off: Arc<AtomicBool>,
}

impl MemoryLeases {
    /// Whether this replica holds `stream`'s lease at `epoch`, unexpired, as the table says now.
    pub fn holds(&self, stream: &StreamName, epoch: u64) -> bool {
        let now = Instant::now();
        self.table
            .rows()
            .leases
            .get(stream)
            .is_some_and(|row| row.epoch == epoch && row.held_by(&self.replica, now))
    }

    /// The fence of a commit of `stream` made under lease epoch `lease` (0: the epoch this
    /// replica believes it holds), as a store fenced by leases checks it.
    ///
    /// # Errors
    ///
    /// [`Error::NotLeased`] (counted in [`Leasing::refused_commits`]) unless this replica holds
    /// the lease, unexpired, at that epoch.
    pub fn check(&self, stream: &StreamName, lease: u64) -> Result<(), Error> {
        let epoch = match lease {
            0 => self.epoch_of(stream),
            lease => Some(lease),
        };
        if epoch.is_some_and(|epoch| self.holds(stream, epoch)) {
            return Ok(());
        }
        self.refused.fetch_add(1, Ordering::Relaxed);
        Err(Error::NotLeased(format!(
            "replica {} does not hold the lease of stream {stream}: the commit is refused",
            self.replica
        )))
    }

    /// Cuts this replica off from the table (`true`), or lets it reach it again: while cut
    /// off, every method that reaches the table fails transiently, as with a database out of
    /// reach, and what the replica believes it holds stays as its last claim or renewal said.
    pub fn cut_off(&self, cut: bool) {
        self.cut_off.store(cut, Ordering::Relaxed);
    }

    fn held(&self) -> MutexGuard<'_, HashMap<StreamName, u64>> {
        self.held.locked()
    }

    /// The table, unless this replica is cut off from it.
    fn rows(&self) -> Result<MutexGuard<'_, Rows>, Error> {
        if self.cut_off.load(Ordering::Relaxed) {
            return Err(Error::Unavailable(format!(
                "replica {} is cut off from its leases",
                self.replica
            )));
        }
        Ok(self.table.rows())
    }
}

/// `leases` in stream order, as PostgreSQL returns them.
fn sorted(mut leases: Vec<Lease>) -> Vec<Lease> {
    leases.sort_by(|a, b| a.stream.cmp(&b.stream));
    leases
}

#[async_trait]
impl Leasing for MemoryLeases {
    fn replica(&self) -> &str {
        &self.replica
    }

    fn ttl(&self) -> Duration {
        self.ttl
    }

    fn epoch_of(&self, stream: &StreamName) -> Option<u64> {
        self.held().get(stream).copied()
    }

    fn refused_commits(&self) -> u64 {
        self.refused.load(Ordering::Relaxed)
    }

    async fn claim(&self, wanted: &[StreamName], limit: usize) -> Result<Vec<Lease>, Error> {
        let now = Instant::now();
        let mut rows = self.rows()?;
        let mut free: Vec<&StreamName> = wanted
            .iter()
            .filter(|stream| rows.leases.get(*stream).is_none_or(|row| !row.live(now)))
            .collect();
        free.sort();
        free.dedup();
        free.truncate(limit);
        let mut leases = Vec::new();
        for stream in wanted {
            let row = rows.leases.entry(stream.clone()).or_default();
            if row.held_by(&self.replica, now) {
                row.expires_at = Some(now + self.ttl);
            } else if free.contains(&stream) {
                row.owner = Some(self.replica.to_string());
                row.epoch += 1;
                row.worker = None;
                row.expires_at = Some(now + self.ttl);
            } else {
                continue;
            }
            if !leases.iter().any(|l: &Lease| l.stream == *stream) {
                leases.push(Lease {
                    stream: stream.clone(),
                    epoch: row.epoch,
                });
            }
        }
        drop(rows);
        let mut held = self.held();
        for stream in wanted {
            held.remove(stream);
        }
        held.extend(leases.iter().map(|l| (l.stream.clone(), l.epoch)));
        Ok(sorted(leases))
    }

    async fn renew(&self) -> Result<Vec<Lease>, Error> {
        let now = Instant::now();
        let mut leases = Vec::new();
        for (stream, row) in &mut self.rows()?.leases {
            if row.held_by(&self.replica, now) {
                row.expires_at = Some(now + self.ttl);
                leases.push(Lease {
                    stream: stream.clone(),
                    epoch: row.epoch,
                });
            }
        }
        let mut held = self.held();
        held.clear();
        held.extend(leases.iter().map(|l| (l.stream.clone(), l.epoch)));
        Ok(sorted(leases))
    }

    async fn run_on(&self, stream: &StreamName, worker: Option<&str>) -> Result<(), Error> {
        let now = Instant::now();
        if let Some(row) = self.rows()?.leases.get_mut(stream) {
            if row.held_by(&self.replica, now) {
                row.worker = worker.map(str::to_owned);
            }
        }
        Ok(())
    }

    async fn release(&self, stream: &StreamName) -> Result<(), Error> {
        self.held().remove(stream);
        if let Some(row) = self.rows()?.leases.get_mut(stream) {
            if row.owner.as_deref() == Some(&*self.replica) {
                row.free();
            }
        }
        Ok(())
    }

    async fn release_all(&self) -> Result<u64, Error> {
        self.held().clear();
        let mut rows = self.rows()?;
        rows.replicas.remove(&*self.replica);
        let mut released = 0;
        for row in rows.leases.values_mut() {
            if row.owner.as_deref() == Some(&*self.replica) {
                row.free();
                released += 1;
            }
        }
        Ok(released)
    }

    async fn heartbeat(&self, workers: usize) -> Result<Vec<Replica>, Error> {
        let now = Instant::now();
        let mut rows = self.rows()?;
        rows.replicas
            .insert(self.replica.to_string(), (workers, now + self.ttl));
        let mut alive: Vec<Replica> = rows
            .replicas
            .iter()
            .filter(|(_, (_, until))| *until > now)
            .map(|(id, (workers, _))| Replica {
                id: id.clone(),
                workers: *workers,
            })
            .collect();
        alive.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(alive)
    }

    async fn holders(&self) -> Result<HashMap<StreamName, Holder>, Error> {
        let now = Instant::now();
        let rows = self.rows()?;
        Ok(rows
            .leases
            .iter()
            .filter(|(_, row)| row.live(now))
            .filter_map(|(stream, row)| Some((stream.clone(), row.holder()?)))
            .collect())
    }

    async fn holder(&self, stream: &StreamName) -> Result<Option<Holder>, Error> {
        let now = Instant::now();
        let rows = self.rows()?;
        Ok(rows
            .leases
            .get(stream)
            .filter(|row| row.live(now))
            .and_then(Row::holder))
    }

    fn watch(&self) -> BoxStream<'static, RegistryChange> {
        futures::stream::unfold(self.table.changes.subscribe(), |mut changes| async move {
            let change = match changes.recv().await {
                Ok(change) => change,
                // Announcements were missed: read everything, as after a reconnection.
                Err(broadcast::error::RecvError::Lagged(_)) => RegistryChange::Reconnected,
                Err(broadcast::error::RecvError::Closed) => return None,
            };
            Some((change, changes))
        })
        .boxed()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TTL: Duration = Duration::from_secs(10);

    fn stream(name: &str) -> StreamName {
        StreamName::new(name).unwrap()
    }

    #[tokio::test(start_paused = true)]
    async fn a_lease_is_held_by_one_replica_until_it_lapses_then_claimed_at_the_next_epoch() {
        let table = LeaseTable::new();
        let (a, b) = (table.leases("a", TTL), table.leases("b", TTL));
        let s = stream("s");
        let claimed = a.claim(std::slice::from_ref(&s), 10).await.unwrap();
        assert_eq!(
            claimed,
            [Lease {
                stream: s.clone(),
                epoch: 1
            }]
        );
        assert!(
            b.claim(std::slice::from_ref(&s), 10)
                .await
                .unwrap()
                .is_empty(),
            "held by a"
        );
        assert_eq!(b.holder(&s).await.unwrap().unwrap().owner, "a");

        tokio::time::sleep(TTL / 2).await;
        assert_eq!(a.renew().await.unwrap().len(), 1);
        tokio::time::sleep(TTL / 2).await;
        assert!(
            b.claim(std::slice::from_ref(&s), 10)
                .await
                .unwrap()
                .is_empty(),
            "renewed"
        );

        tokio::time::sleep(TTL).await;
        assert_eq!(b.holder(&s).await.unwrap(), None, "lapsed");
        let taken = b.claim(std::slice::from_ref(&s), 10).await.unwrap();
        assert_eq!(
            taken,
            [Lease {
                stream: s.clone(),
                epoch: 2
            }]
        );
        assert!(
            a.renew().await.unwrap().is_empty(),
            "a lapsed lease is not renewed"
        );
        assert_eq!(a.epoch_of(&s), None);
        assert!(matches!(a.check(&s, 1), Err(Error::NotLeased(_))));
        assert_eq!(a.refused_commits(), 1);
        assert!(b.check(&s, 2).is_ok());
        assert!(b.check(&s, 1).is_err(), "an older epoch holds nothing");
    }

    #[tokio::test(start_paused = true)]
    async fn a_claim_takes_at_most_its_limit_in_stream_order_and_a_release_frees_at_once() {
        let table = LeaseTable::new();
        let (a, b) = (table.leases("a", TTL), table.leases("b", TTL));
        let wanted = [stream("z"), stream("x"), stream("y")];
        let claimed = a.claim(&wanted, 2).await.unwrap();
        let names: Vec<&str> = claimed.iter().map(|l| l.stream.as_str()).collect();
        assert_eq!(names, ["x", "y"]);
        a.run_on(&stream("x"), Some("worker-1")).await.unwrap();
        assert_eq!(
            b.holder(&stream("x"))
                .await
                .unwrap()
                .unwrap()
                .worker
                .as_deref(),
            Some("worker-1")
        );
        a.release(&stream("x")).await.unwrap();
        assert!(!a.is_held(&stream("x")));
        assert_eq!(b.claim(&[stream("x")], 1).await.unwrap()[0].epoch, 2);
        assert_eq!(a.release_all().await.unwrap(), 1);
        assert_eq!(b.holders().await.unwrap().len(), 1, "only b's is left");
    }

    #[tokio::test(start_paused = true)]
    async fn heartbeats_say_who_is_alive_for_a_time_to_live() {
        let table = LeaseTable::new();
        let (a, b) = (table.leases("a", TTL), table.leases("b", TTL));
        a.heartbeat(2).await.unwrap();
        let alive = b.heartbeat(1).await.unwrap();
        assert_eq!(
            alive,
            [
                Replica {
                    id: "a".into(),
                    workers: 2
                },
                Replica {
                    id: "b".into(),
                    workers: 1
                }
            ]
        );
        tokio::time::sleep(TTL).await;
        assert_eq!(b.heartbeat(1).await.unwrap().len(), 1, "a's lapsed");
        b.release_all().await.unwrap();
        assert_eq!(a.heartbeat(2).await.unwrap().len(), 1, "b's ended");
    }

    #[tokio::test]
    async fn an_announced_change_reaches_every_watch() {
        let table = LeaseTable::new();
        let (a, b) = (table.leases("a", TTL), table.leases("b", TTL));
        let (mut seen_a, mut seen_b) = (a.watch(), b.watch());
        table.announce(RegistryChange::Stream(stream("s")));
        for seen in [&mut seen_a, &mut seen_b] {
            let change = tokio::time::timeout(Duration::from_secs(5), seen.next()).await;
            assert_eq!(change.unwrap(), Some(RegistryChange::Stream(stream("s"))));
        }
    }
}

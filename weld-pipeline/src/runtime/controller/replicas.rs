//! Replicas: several controllers on one shared store, each running the streams whose lease it
//! holds (see [`crate::lease`]).
//!
//! Every [lease period](lease_every) a replica renews what it holds, stops on its workers the
//! streams whose lease it lost (it was frozen, or cut off from the database, past the lease's
//! time-to-live), claims the running streams nobody holds that one of its own workers can run,
//! and gives up the leases of streams it no longer runs (stopped, or no worker of its own left
//! for them), so another replica can take them at once. Registry changes announced by any
//! replica reach the one running the stream between ticks: it starts, stops or restarts the
//! stream on its worker as the registry now says. A lost announcement only waits for the next
//! tick.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::{Controller, COMMAND_TIMEOUT};
use crate::lease::{Holder, Leasing, RegistryChange};
use crate::store::{Desired, StreamEntry};
use crate::stream::StreamName;
use crate::sync::Locked;
use crate::transport::Peer;

/// How often a replica renews its leases and looks for streams to claim: a fifth of the
/// lease's time-to-live, so four renewals in a row may fail (a database failover, a long
/// pause) before a lease lapses.
pub(super) fn lease_every(leases: &dyn Leasing) -> Duration {
    (leases.ttl() / 5).max(Duration::from_millis(100))
}

/// How often a replica asks whether a stopped stream's lease is free yet, while a stop waits
/// for the replica running it.
const HOLDER_POLL: Duration = Duration::from_millis(100);

/// What a replica keeps from one lease period to the next, besides its leases (which the
/// controller's other rooms read too: an assignment takes its lease epoch, a commit is fenced
/// by it, a status names its holder). Empty, and never read, on a controller without leases.
#[derive(Debug, Default)]
pub(super) struct ReplicaState {
    /// Whether lease renewals fail now (said once, not at every tick).
    renewals_failing: AtomicBool,
    /// Streams whose lease was lost, while their worker here is being told to stop.
    stopping: Mutex<HashSet<StreamName>>,
    /// Streams that waited for a replica at the last lease period: nobody took them since, so
    /// this replica takes them whatever its share.
    overdue: Mutex<HashSet<StreamName>>,
    /// The replicas alive at the last heartbeat, with their workers.
    alive: Mutex<Vec<crate::lease::Replica>>,
    /// Streams whose lease this replica held at the last period with no worker of its own
    /// running them: given up if that is still so at the next.
    idle: Mutex<HashSet<StreamName>>,
    /// Whether a pass claiming and assigning waiting streams runs now (one at a time).
    assigning: AtomicBool,
}

impl<P: Peer> Controller<P> {
    /// One lease period: renew, stop what was lost, claim and assign what waits, give up what
    /// runs nowhere here.
    pub(super) async fn keep_leases(self: &Arc<Self>, leases: &Arc<dyn Leasing>) {
        let held = self.renew(leases.as_ref()).await;
        self.stop_lost(leases.as_ref());
        metrics::gauge!("weld_leases_held").set(self.lock().assigned().len() as f64);
        metrics::counter!("weld_lease_commits_refused_total").absolute(leases.refused_commits());
        // Claiming and starting wait on workers (a Start, a Stop at a page boundary): on a task
        // of their own, one pass at a time, so that renewals never wait for a worker.
        if self.replica.assigning.swap(true, Ordering::AcqRel) {
            return;
        }
        let (controller, leases) = (self.clone(), leases.clone());
        tokio::spawn(async move {
            controller.assign_waiting(true).await;
            if let Some(held) = held {
                controller.give_up_idle(&leases, held).await;
            }
            controller.replica.assigning.store(false, Ordering::Release);
        });
    }

    /// Says this replica is alive, with its workers, and renews its leases: those it still
    /// holds, `None` when the renewal failed (said once while it fails).
    async fn renew(&self, leases: &dyn Leasing) -> Option<Vec<crate::lease::Lease>> {
        if let Ok(replicas) = leases.heartbeat(self.workers()).await {
            metrics::gauge!("weld_replicas_alive").set(replicas.len() as f64);
            *self.replica.alive.locked() = replicas;
        }
        let failing = &self.replica.renewals_failing;
        match leases.renew().await {
            Ok(held) => {
                if failing.swap(false, Ordering::Relaxed) {
                    tracing::info!(replica = leases.replica(), "lease renewals succeed again");
                }
                Some(held)
            }
            Err(error) => {
                // Said once: the database's failure is the store's to tell, and its leases
                // lapse by themselves if it lasts.
                if !failing.swap(true, Ordering::Relaxed) {
                    tracing::warn!(replica = leases.replica(), %error, "cannot renew the leases; they lapse unless a renewal succeeds in time");
                }
                None
            }
        }
    }

    /// Stops on their worker here the streams whose lease was lost: no longer held, or held
    /// anew at another epoch than its worker runs it under (it lapsed and was claimed again).
    /// The next period starts them afresh.
    fn stop_lost(self: &Arc<Self>, leases: &dyn Leasing) {
        let lost: Vec<StreamName> = self
            .lock()
            .assigned()
            .into_iter()
            .filter(|stream| {
                let under = self.started_as(stream).map(|s| s.lease);
                under.is_some() && leases.epoch_of(stream) != under
            })
            .collect();
        for stream in lost {
            // Told once: the stop waits for the worker's page boundary, over several periods.
            if !self.replica.stopping.locked().insert(stream.clone()) {
                continue;
            }
            tracing::warn!(replica = leases.replica(), %stream, "lease lost: another replica runs the stream now; stopping it here");
            metrics::counter!("weld_leases_lost_total").increment(1);
            let controller = self.clone();
            tokio::spawn(async move {
                controller.stop_on_worker(&stream).await;
                controller.replica.stopping.locked().remove(&stream);
            });
        }
    }

    /// Gives up the leases of `held` that no worker here has run for a whole period (stopped,
    /// or no worker of this replica's left for them), so another replica may take them at once.
    /// A period's grace: a lease claimed a moment ago is not given up before its Start is sent.
    async fn give_up_idle(&self, leases: &Arc<dyn Leasing>, held: Vec<crate::lease::Lease>) {
        let idle: HashSet<StreamName> = held
            .into_iter()
            .map(|lease| lease.stream)
            // A stream held back after refused batches keeps its lease here for the hold:
            // given up, another replica would run it at once.
            .filter(|stream| {
                let assignments = self.lock();
                assignments.worker_of(stream).is_none() && assignments.hold_of(stream).is_none()
            })
            .collect();
        let before = std::mem::replace(&mut *self.replica.idle.locked(), idle.clone());
        for stream in idle.intersection(&before) {
            if !leases.is_held(stream) {
                continue;
            }
            tracing::debug!(replica = leases.replica(), %stream, "giving up the lease of a stream no worker here runs");
            give_up(leases.as_ref(), stream).await;
        }
    }

    /// This replica's share of `waiting` (streams that should run, on no worker here), among
    /// every stream of the registry (`entries`): those no other replica holds, and how many of
    /// them to claim now. A replica takes at most its fair share (the running streams in
    /// proportion to its workers among those of every replica alive at the last heartbeat), so
    /// the streams spread over all the workers whichever replica they were started through; at
    /// a lease period's `tick`, a stream that waited a whole period already is taken whatever
    /// the share: no other replica wanted it.
    pub(super) async fn share<'a>(
        &self,
        entries: &'a [StreamEntry],
        waiting: Vec<&'a StreamEntry>,
        tick: bool,
    ) -> (Vec<&'a StreamEntry>, usize) {
        let Some(leases) = &self.leases else {
            return (waiting, usize::MAX);
        };
        let Ok(holders) = leases.holders().await else {
            return (Vec::new(), 0);
        };
        let me = leases.replica();
        let waiting: Vec<&StreamEntry> = waiting
            .into_iter()
            .filter(|e| holders.get(&e.name).is_none_or(|h| h.owner == me))
            .collect();
        let late = tick && {
            let mut overdue = self.replica.overdue.locked();
            let late = waiting.iter().any(|e| overdue.contains(&e.name));
            *overdue = waiting.iter().map(|e| e.name.clone()).collect();
            late
        };
        if late {
            return (waiting, usize::MAX);
        }
        let running = entries
            .iter()
            .filter(|e| e.desired == Desired::Running)
            .count();
        let here = self.workers();
        let elsewhere: usize = self
            .replica
            .alive
            .locked()
            .iter()
            .filter(|r| r.id != me)
            .map(|r| r.workers)
            .sum();
        let mine = holders.values().filter(|h| h.owner == me).count();
        let share = match here + elsewhere {
            0 => 0,
            all => (running * here).div_ceil(all).saturating_sub(mine),
        };
        (waiting, share)
    }

    /// Runs one stream that should run here, if this replica can and it is its share: a start,
    /// a resync or a change heard from another replica. One already running here is given its
    /// Start again (a changed configuration).
    pub(super) async fn take(&self, entry: &StreamEntry) {
        let command = self.command_lock(&entry.name);
        let _deciding = command.lock().await;
        self.take_now(entry).await;
    }

    /// [`Controller::take`], its stream's command lock held by the caller.
    async fn take_now(&self, entry: &StreamEntry) {
        let limit = if self.leases.is_some() && self.lock().worker_of(&entry.name).is_none() {
            match self.store.streams().await {
                Ok(entries) => self.share(&entries, vec![entry], false).await.1,
                Err(_) => 0,
            }
        } else {
            1
        };
        if let Some(entry) = self.claim(vec![entry], limit.min(1)).await.pop() {
            self.assign_now(entry).await;
        }
    }

    /// Claims at most `limit` of `entries` (streams that should run, on no worker here) that a
    /// worker of this replica can run; returns those it holds. Without leases, all of them.
    pub(super) async fn claim<'a>(
        &self,
        entries: Vec<&'a StreamEntry>,
        limit: usize,
    ) -> Vec<&'a StreamEntry> {
        let Some(leases) = &self.leases else {
            return entries;
        };
        let runnable: Vec<&StreamEntry> = {
            let assignments = self.lock();
            entries
                .into_iter()
                .filter(|e| assignments.can_run(&e.config.source.kind))
                .collect()
        };
        if runnable.is_empty() {
            return runnable;
        }
        let wanted: Vec<StreamName> = runnable.iter().map(|e| e.name.clone()).collect();
        if let Err(error) = leases.claim(&wanted, limit).await {
            tracing::debug!(%error, "cannot claim leases now");
            return Vec::new();
        }
        runnable
            .into_iter()
            .filter(|e| leases.is_held(&e.name))
            .collect()
    }

    /// Brings one stream in line with what the registry says of it now, on this replica: a
    /// stream stopped or deleted leaves its worker here (and the lease is given up); one started
    /// is claimed if a worker here can run it; one this replica runs whose configuration or
    /// epoch (a resync) changed is started again.
    ///
    /// Its decision and what it sends hold the stream's command lock: a Start or a Stop sent
    /// meanwhile from here cannot cross it. A registry that cannot be read now is read again a
    /// few periods later: a change it missed would otherwise wait for the next one.
    pub(super) async fn reconcile(self: &Arc<Self>, name: &StreamName) {
        const ATTEMPTS: u32 = 3;
        for attempt in 1..=ATTEMPTS {
            let command = self.command_lock(name);
            let _deciding = command.lock().await;
            match self.store.stream(name).await {
                Ok(entry) => return self.reconcile_now(name, entry).await,
                Err(error) if attempt == ATTEMPTS => {
                    tracing::warn!(stream = %name, %error, "cannot read a stream another replica changed; its change waits for the next one");
                }
                Err(error) => {
                    tracing::debug!(stream = %name, %error, "cannot read a changed stream now; reading it again");
                }
            }
            drop(_deciding);
            let wait = self
                .leases
                .as_deref()
                .map_or(Duration::from_secs(1), lease_every);
            tokio::time::sleep(wait).await;
        }
    }

    /// [`Controller::reconcile`] of the entry read, its stream's command lock held.
    async fn reconcile_now(&self, name: &StreamName, entry: Option<StreamEntry>) {
        let here = self.lock().worker_of(name).is_some();
        match entry {
            Some(entry) if entry.desired == Desired::Running => {
                if !here {
                    self.take_now(&entry).await;
                    return;
                }
                let Ok(resume) = self.store.resume(name).await else {
                    return;
                };
                let started = self.started_as(name);
                match started {
                    Some(started) if started.epoch != resume.epoch => {
                        tracing::info!(stream = %name, epoch = resume.epoch, "resynced on another replica: starting it again here");
                        self.stop_now(name).await;
                        self.assign_now(&entry).await;
                    }
                    Some(started) if started.config != entry.config => {
                        self.assign_now(&entry).await;
                    }
                    _ => {}
                }
            }
            _ => {
                if here {
                    self.stop_now(name).await;
                }
                if let Some(leases) = &self.leases {
                    give_up(leases.as_ref(), name).await;
                }
            }
        }
    }

    /// Takes one registry change heard from the replicas.
    pub(super) fn changed(self: &Arc<Self>, change: RegistryChange) {
        let controller = self.clone();
        match change {
            RegistryChange::Stream(name) => {
                tokio::spawn(async move { controller.reconcile(&name).await });
            }
            RegistryChange::Reconnected => {
                tokio::spawn(async move {
                    let Ok(entries) = controller.store.streams().await else {
                        return;
                    };
                    for entry in entries {
                        controller.reconcile(&entry.name).await;
                    }
                });
            }
        }
    }

    /// After a stop written here, waits until no replica holds the stream's lease: the one
    /// running it heard of the stop, stopped it on its worker and gave the lease up (or died, and
    /// the lease lapsed). Bounded by a worker's answer to a stop plus the lease's time-to-live.
    pub(super) async fn wait_released(&self, name: &StreamName) {
        let Some(leases) = &self.leases else {
            return;
        };
        give_up(leases.as_ref(), name).await;
        let deadline = tokio::time::Instant::now() + COMMAND_TIMEOUT + leases.ttl();
        loop {
            let holder = match leases.holder(name).await {
                Ok(None) => return,
                Ok(Some(holder)) => Some(holder.owner),
                Err(_) => None,
            };
            if tokio::time::Instant::now() >= deadline {
                tracing::warn!(stream = %name, replica = holder, "the replica running a stopped stream did not give it up in time");
                return;
            }
            tokio::time::sleep(HOLDER_POLL).await;
        }
    }

    /// Where a stream runs: its worker and the replica holding its lease. This replica's own
    /// assignment first; another replica's as the shared store says.
    pub(super) fn placement(
        &self,
        name: &StreamName,
        holder: Option<&Holder>,
    ) -> (Option<String>, Option<String>) {
        let local = self.lock().worker_of(name).cloned();
        match (&self.leases, local) {
            (None, local) => (local, None),
            (Some(leases), Some(worker)) => (Some(worker), Some(leases.replica().to_owned())),
            (Some(_), None) => match holder {
                Some(holder) => (holder.worker.clone(), Some(holder.owner.clone())),
                None => (None, None),
            },
        }
    }
}

/// Gives up `stream`'s lease if this replica holds it; a failure only leaves it to lapse.
async fn give_up(leases: &dyn Leasing, stream: &StreamName) {
    if leases.is_held(stream) {
        if let Err(error) = leases.release(stream).await {
            tracing::debug!(%error, "a lease was not given up; it lapses by itself");
        }
    }
}

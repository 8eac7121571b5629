//! A stream's lifecycle through the controller: started (or changed), stopped, resynced,
//! deleted, and the error its runs last reported.

use super::{command, Controller, StreamStatus};
use crate::error::Error;
use crate::message::{Request, StreamConfig};
use crate::record::Timestamp;
use crate::store::{Desired, LastError, StreamEntry};
use crate::stream::StreamName;
use crate::sync::Locked;
use crate::transport::Peer;

impl<P: Peer> Controller<P> {
    pub(super) async fn record_error(&self, stream: &StreamName, message: String) {
        let lock = self.entry_lock(stream);
        let _writing = lock.lock().await;
        if let Ok(Some(mut entry)) = self.store.stream(stream).await {
            entry.last_error = Some(LastError {
                at: Timestamp::now(),
                message,
            });
            if let Err(error) = self.store.put_stream(&entry).await {
                tracing::error!(stream = %stream, error = %error, "cannot record a stream's error");
            }
        }
    }

    /// Clears a stream's recorded error: a run of it completed since.
    pub(super) async fn clear_error(&self, stream: &StreamName) {
        let lock = self.entry_lock(stream);
        let _writing = lock.lock().await;
        if let Ok(Some(mut entry)) = self.store.stream(stream).await {
            if entry.last_error.take().is_some() {
                if let Err(error) = self.store.put_stream(&entry).await {
                    tracing::error!(stream = %stream, error = %error, "cannot clear a stream's error");
                }
            }
        }
    }

    /// Creates or updates a stream and runs it: at once if a worker can take it, else it waits
    /// in state pending. Idempotent; a changed configuration applies from the next run. The
    /// source is checked against the registered kinds and stored with its defaults written in.
    ///
    /// # Errors
    ///
    /// [`Error::Invalid`] for a source of an unknown kind or with parameters its kind does not
    /// take; otherwise when the registry cannot be written.
    pub async fn start_stream(
        &self,
        name: &StreamName,
        mut config: StreamConfig,
    ) -> Result<StreamStatus, Error> {
        config.source = self.sources.check(&config.source)?;
        let lock = self.entry_lock(name);
        let writing = lock.lock().await;
        let previous = self.store.stream(name).await?;
        let entry = StreamEntry {
            name: name.clone(),
            config,
            desired: Desired::Running,
            last_error: previous.as_ref().and_then(|e| e.last_error.clone()),
        };
        let changed = previous.as_ref() != Some(&entry);
        // Started by hand: a hold after refused batches ends (the user may have fixed the cause).
        self.lock().forget_hold(name);
        if changed {
            self.store.put_stream(&entry).await?;
        }
        drop(writing);
        // A stream already assigned gets the new configuration through a repeated Start. A
        // replica runs it only once it holds its lease; else the one that does hears of it.
        if changed || self.lock().worker_of(name).is_none() {
            self.take(&entry).await;
        }
        self.status(name)
            .await?
            .ok_or_else(|| Error::Bug("a started stream has no status".into()))
    }

    /// Stops a stream: its worker stops at the next page boundary, and this returns once it
    /// has, so no source request starts after it returns. Idempotent. `None` for a stream that
    /// does not exist.
    ///
    /// # Errors
    ///
    /// When the registry cannot be written.
    pub async fn stop_stream(&self, name: &StreamName) -> Result<Option<StreamStatus>, Error> {
        let lock = self.entry_lock(name);
        let writing = lock.lock().await;
        let Some(mut entry) = self.store.stream(name).await? else {
            return Ok(None);
        };
        if entry.desired != Desired::Stopped {
            entry.desired = Desired::Stopped;
            self.store.put_stream(&entry).await?;
        }
        drop(writing);
        self.stop_on_worker(name).await;
        // Another replica may run it: the stop is acknowledged once it no longer does.
        self.wait_released(name).await;
        self.status(name).await
    }

    pub(super) async fn stop_on_worker(&self, name: &StreamName) {
        let command = self.command_lock(name);
        let _sending = command.lock().await;
        self.stop_now(name).await;
    }

    /// [`Controller::stop_on_worker`], its stream's command lock held by the caller.
    pub(super) async fn stop_now(&self, name: &StreamName) {
        let assigned = self.lock().peer_of(name);
        if let Some((worker_id, peer)) = assigned {
            let stop = Request::Stop {
                stream: name.clone(),
            };
            match command(&peer, stop, "stop").await {
                Ok(_) => tracing::info!(stream = %name, worker_id, "stream stopped"),
                // A worker that is gone runs nothing; one that comes back is not given it.
                Err(error) => {
                    tracing::warn!(stream = %name, worker_id, error = %error, "stop not confirmed")
                }
            }
            self.lock().unassign(name, &worker_id);
            self.started.locked().remove(name);
        }
    }

    /// Makes a stream's next run read its whole source again, from the start: a full sync, after
    /// which it goes on incrementally. Nothing stored is dropped first; records are upserted.
    /// A run in flight is stopped at its page boundary first, and the batches it left in the
    /// worker's outbox commit their records but cannot move the checkpoint back (the resync
    /// raises the stream's epoch). A stopped stream stays stopped and resyncs when it starts.
    /// `None` for a stream that does not exist.
    ///
    /// # Errors
    ///
    /// When the store cannot be written.
    pub async fn resync_stream(&self, name: &StreamName) -> Result<Option<StreamStatus>, Error> {
        let Some(entry) = self.store.stream(name).await? else {
            return Ok(None);
        };
        self.stop_on_worker(name).await;
        let epoch = self.store.resync(name).await?;
        tracing::info!(stream = %name, epoch, "resync: the next run reads the whole source again");
        if entry.desired == Desired::Running && self.lock().worker_of(name).is_none() {
            self.take(&entry).await;
        }
        self.status(name).await
    }

    /// Stops a stream and deletes its configuration and data. Returns whether it existed.
    ///
    /// # Errors
    ///
    /// When the registry or store cannot be written.
    pub async fn delete_stream(&self, name: &StreamName) -> Result<bool, Error> {
        if self.stop_stream(name).await?.is_none() {
            return Ok(false);
        }
        let lifecycle = self.lifecycle(name);
        let _deleting = lifecycle.write().await;
        self.store.delete_stream(name).await?;
        Ok(true)
    }
}

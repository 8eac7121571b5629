//! The outbox's writes to disk: the task that writes what has waited
//! [`OutboxConfig::write_after`](super::OutboxConfig::write_after), the flush of a clean
//! shutdown, and the write of what waits when the outbox is dropped.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Weak};
use std::time::Duration;

use tokio::sync::watch;
use tokio::time::Instant;

use super::queue::State;
use super::{Inner, Outbox};
use crate::error::Error;

impl Outbox {
    /// Writes the entries not on disk yet that are due by `due` (all when `None`), if the disk
    /// has room for them.
    pub(super) fn write_unwritten(
        &self,
        tree: &sled::Tree,
        state: &mut State,
        due: Option<(Instant, Duration)>,
    ) -> Result<(), Error> {
        let (end, bytes) = state.unwritten(due);
        // Asked also with nothing to write, so that a full disk found with room again says so.
        if !self.room_for(bytes) {
            return Err(Error::Unavailable(format!(
                "the outbox's disk has no room for {bytes} bytes"
            )));
        }
        if end > state.written_below {
            state.write_until(tree, end).map_err(|e| self.failed(e))?;
        }
        Ok(())
    }

    /// Writes what has waited [`OutboxConfig::write_after`](super::OutboxConfig::write_after);
    /// says when to look again.
    fn write_due(&self) -> Option<Instant> {
        let after = self.inner.config.write_after;
        if !self.failing() {
            if let Ok(tree) = self.tree() {
                let mut state = self.lock();
                // Its failure is told once, by the room check or the failed write.
                let _ = self.write_unwritten(&tree, &mut state, Some((Instant::now(), after)));
            }
        }
        if self.stalled() {
            // A full disk or a failed database is looked at again each second.
            return Some(Instant::now() + Duration::from_secs(1));
        }
        self.lock().next_due(after)
    }

    /// Starts the task that writes what waited too long, once, from a push (on its runtime).
    /// With `write_after` zero it writes what a push could not (a full disk, a failure), once
    /// the outbox can write again.
    pub(super) fn start_writer(&self) {
        if self.inner.writer.swap(true, Ordering::Relaxed) {
            return;
        }
        let running = WriterRunning(Arc::downgrade(&self.inner));
        let versions = self.inner.version.subscribe();
        tokio::spawn(write_when_due(running, versions));
    }

    /// Writes every batch waiting to disk, then sled's buffers (no `fdatasync`, see the module
    /// docs): a worker's clean shutdown loses no refetch.
    ///
    /// # Errors
    ///
    /// When the outbox cannot write (its disk is full, or it is healing from a failure): the
    /// batches not written are fetched again after a restart.
    pub fn flush(&self) -> Result<(), Error> {
        let tree = self.tree()?;
        {
            let mut state = self.lock();
            if state.unwritten(None).0 > state.written_below && self.failing() {
                return Err(Error::Unavailable(
                    "the outbox cannot write now: batches waiting only in memory are fetched again after a restart".into(),
                ));
            }
            self.write_unwritten(&tree, &mut state, None)?;
        }
        tree.flush().map(drop).map_err(|e| self.failed(e))
    }
}

impl Drop for Inner {
    /// Writes what waits in memory, so that a dropped outbox (a clean exit) keeps it all.
    fn drop(&mut self) {
        let failing = self.failing.is_failing();
        let state = self.state.get_mut().unwrap_or_else(|e| e.into_inner());
        let (end, bytes) = state.unwritten(None);
        if end == state.written_below {
            return;
        }
        let handle = self.handle.get_mut().unwrap_or_else(|e| e.into_inner());
        let Some((tree, _)) = handle.as_ref() else {
            return;
        };
        let written = if failing {
            Err("it is healing from a failure".to_owned())
        } else if crate::store::short_of_room(&self.config.path, bytes).is_some() {
            Err("its disk is full".to_owned())
        } else {
            state.write_until(tree, end).map_err(|e| e.to_string())
        };
        if let Err(why) = written {
            tracing::warn!(
                why,
                "the outbox was dropped with batches it could not write: they are fetched again"
            );
        }
    }
}

/// The task writing batches that waited too long: it sleeps until the oldest batch not on disk
/// is due, or until a push when none waits, and ends with the outbox.
async fn write_when_due(running: WriterRunning, mut versions: watch::Receiver<u64>) {
    loop {
        versions.borrow_and_update();
        let next = match running.0.upgrade() {
            Some(inner) => Outbox { inner }.write_due(),
            None => return,
        };
        match next {
            // Not sooner than 10 ms: entries pushed a moment apart are written together.
            Some(at) => {
                tokio::time::sleep_until(at.max(Instant::now() + Duration::from_millis(10))).await
            }
            None => {
                if versions.changed().await.is_err() {
                    return;
                }
            }
        }
    }
}

/// Marks the writer gone when its task ends, or is dropped with its runtime (also before it
/// first ran): the next push starts another.
struct WriterRunning(Weak<Inner>);

impl Drop for WriterRunning {
    fn drop(&mut self) {
        if let Some(inner) = self.0.upgrade() {
            inner.writer.store(false, Ordering::Relaxed);
        }
    }
}

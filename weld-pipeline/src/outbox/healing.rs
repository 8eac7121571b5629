//! The outbox when its disk fails: a full disk makes pushes wait for room, and a write that
//! fails fails the outbox once and reopens its database in place, with backoff, until it
//! writes again (see "A failing disk" in the module docs).

use std::sync::atomic::Ordering;

use super::pieces::{open_tree, remove_all, storage_error};
use super::Outbox;
use crate::error::Error;
use crate::heal::{HealBackoff, Lines};

/// What the healer says: one line when the outbox writes again (the failure itself is said
/// where it begins, [`Outbox::failed`]); no summary while it lasts.
const LINES: Lines = Lines {
    healed: "the outbox writes again",
    still_failing: "the outbox still cannot write",
    summary: false,
};

impl Outbox {
    /// Whether the disk has room for `len` more bytes and the margin. An error reading the
    /// free space says yes: the write then tells.
    pub(super) fn room_for(&self, len: u64) -> bool {
        let room = crate::store::short_of_room(&self.inner.config.path, len).is_none();
        let was_full = self.inner.disk_full.swap(!room, Ordering::Relaxed);
        match (was_full, room) {
            (false, false) => tracing::error!(
                path = %self.inner.config.path.display(),
                "the outbox cannot write: its disk is full; sources wait until there is room"
            ),
            (true, true) => {
                tracing::info!("the outbox writes again: its disk has room");
                self.inner.version.send_modify(|v| *v += 1);
            }
            _ => {}
        }
        room
    }

    /// Whether the outbox failed, and heals.
    pub(super) fn failing(&self) -> bool {
        self.inner.failing.is_failing()
    }

    /// Whether pushes wait: the outbox cannot write what waits.
    pub(super) fn stalled(&self) -> bool {
        self.inner.disk_full.load(Ordering::Relaxed) || self.failing()
    }

    /// Takes a sled error: it fails the outbox, once, and starts its healing (an I/O error, or
    /// one sled does not say more of: reopening the database is the cure for both, and a write
    /// retried in place would fail alike).
    pub(super) fn failed(&self, error: sled::Error) -> Error {
        let error = storage_error(error);
        if self.inner.failing.begin(error.to_string()) {
            tracing::error!(error = %error, "the outbox cannot write: sources wait; reopening it by itself");
            if let Ok(runtime) = tokio::runtime::Handle::try_current() {
                runtime.spawn(self.clone().heal());
            }
        }
        error
    }

    /// Reopens the database until it opens and a file can be written beside it, then lets
    /// writes and pushes go on.
    async fn heal(self) {
        let attempt = || {
            let outbox = self.clone();
            async move {
                tokio::task::spawn_blocking(move || outbox.reopen())
                    .await
                    .unwrap_or_else(|e| Err(Error::from_join("reopening the outbox", e)))
            }
        };
        let healed = || self.inner.version.send_modify(|v| *v += 1);
        let failing = &self.inner.failing;
        failing
            .heal(HealBackoff::default(), LINES, attempt, healed)
            .await;
    }

    /// One attempt: a file written beside the database, the old handle dropped (its file lock
    /// with it), the database opened again and emptied: what waits is in memory, and is
    /// written to it anew.
    fn reopen(&self) -> Result<(), Error> {
        let config = &self.inner.config;
        crate::store::can_write_beside(&config.path)?;
        let mut handle = self.inner.handle.write().unwrap_or_else(|e| e.into_inner());
        drop(handle.take());
        let (tree, db) = open_tree(&config.path, config.cache_bytes)?;
        // A write or removal just before the failure may or may not be there: memory says
        // what waits.
        remove_all(&tree)?;
        self.lock().forget_written();
        *handle = Some((tree, db));
        Ok(())
    }
}

//! The database on its disk: opening it (waiting for a previous holder's lock), the room a write
//! must leave free, and whether a failed database could write again.

use std::path::Path;
use std::sync::Arc;

use super::{SledStore, SledStoreConfig};
use crate::error::{Error, ErrorKind};
use crate::store::StreamStore;

/// The sled store's opener, for [`Healing`](crate::store::Healing).
impl crate::store::OpenStore for SledStoreConfig {
    fn open(&self) -> Result<Arc<dyn StreamStore>, Error> {
        Ok(Arc::new(SledStore::open(self)?))
    }

    /// Writes and syncs 1 MiB beside the database, then removes it: a full disk or an exhausted
    /// descriptor table fails here, without touching the store.
    fn ready(&self) -> Result<(), Error> {
        if let Some(free) = short_of_room(&self.path, DISK_MARGIN) {
            return Err(Error::new(
                ErrorKind::Transient,
                format!("No space left on device: {free} bytes free beside the store"),
            ));
        }
        can_write_beside(&self.path)
    }
}

/// The room a write to a sled database leaves free on its disk, beyond twice its size (its log
/// entry, and a later rewrite of its segment). sled must not meet a full disk: after a write
/// that failed with ENOSPC, dropping the database waits forever for that write to become stable
/// (sled 0.34), so a failed database could not be reopened in place. The store refuses a commit,
/// and the outbox holds a push, that would leave less.
pub const DISK_MARGIN: u64 = 1024 * 1024;

/// The free bytes on `dir`'s disk when fewer than a write of `len` bytes needs
/// (`2 * len + DISK_MARGIN`); `None` when there is room, or when the free space cannot be read
/// (the write then tells).
pub(crate) fn short_of_room(dir: &Path, len: u64) -> Option<u64> {
    let free = fs2::available_space(dir).ok()?;
    (free < len.saturating_mul(2).saturating_add(DISK_MARGIN)).then_some(free)
}

/// Writes and syncs 1 MiB in `dir`, then removes it: whether a database there could write again
/// after a failure (a full disk or an exhausted descriptor table fails here), checked without
/// touching the database. The store's and the outbox's healing both ask it before reopening.
///
/// # Errors
///
/// Transient: why the write failed.
pub(crate) fn can_write_beside(dir: &Path) -> Result<(), Error> {
    use std::io::Write;
    let path = dir.join(".weld-ready-check");
    let written = (|| {
        let mut file = std::fs::File::create(&path)?;
        file.write_all(&vec![0u8; 1024 * 1024])?;
        file.sync_all()
    })();
    let _ = std::fs::remove_file(&path);
    written.map_err(|e| Error::new(ErrorKind::Transient, e))
}

/// How long opening a database waits for a previous holder to let go of its lock.
const LOCK_WAIT: std::time::Duration = std::time::Duration::from_secs(10);

/// Opens a sled database, waiting up to [`LOCK_WAIT`] for its lock.
///
/// sled releases a database's file lock from its background threads once they finish after the
/// last handle is dropped, so a process restarted at once (or a test reopening a store) can find
/// it still held for a moment. That wait is bounded; a lock held longer is another process
/// using the database, which is refused.
pub(crate) fn open_db(
    path: &Path,
    cache_bytes: u64,
    flush_every_ms: Option<u64>,
    what: &str,
) -> Result<sled::Db, Error> {
    let deadline = std::time::Instant::now() + LOCK_WAIT;
    loop {
        match sled::Config::new()
            .path(path)
            .cache_capacity(cache_bytes)
            .flush_every_ms(flush_every_ms)
            .open()
        {
            Ok(db) => return Ok(db),
            // sled reports a held lock as an `Other` I/O error naming it.
            Err(sled::Error::Io(io))
                if io.to_string().contains("could not acquire lock")
                    && std::time::Instant::now() < deadline =>
            {
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
            Err(e) => {
                return Err(Error::new(
                    ErrorKind::Permanent,
                    format!("cannot open the {what} in {}: {e}", path.display()),
                ))
            }
        }
    }
}

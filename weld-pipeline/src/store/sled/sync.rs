//! Group commit: one flush and one `fdatasync` shared by every commit waiting for it.

use crate::sync::Locked;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use tokio::sync::watch;

use crate::error::{Error, ErrorKind};

/// Makes sled's writes durable, many commits per sync.
///
/// A commit calls [`GroupSync::sync`] after its write. If no sync round is running, it starts
/// one; otherwise it waits for the next round to start and finish. A round takes the number of
/// the latest request when it starts, flushes sled (which writes its log with `sync_file_range`)
/// and then calls `fdatasync` on sled's log file and on any blob files; every request up to that
/// number is then durable. While one round runs, new requests gather for the next: under load a
/// sync costs one round for all of them.
#[derive(Debug)]
pub(super) struct GroupSync {
    files: Arc<Files>,
    shared: Arc<Shared>,
}

/// What a round syncs. A round holds it only while it syncs: a store whose last user drops it
/// right after its commit returns must release sled's lock, or it cannot be reopened.
#[derive(Debug)]
struct Files {
    db: sled::Db,
    log: File,
    blobs: PathBuf,
}

#[derive(Debug)]
struct Shared {
    state: Mutex<State>,
    rounds: watch::Sender<Round>,
}

#[derive(Debug, Default)]
struct State {
    requested: u64,
    running: bool,
    rounds: u64,
    /// The first failed sync. After it the store acknowledges nothing more until it is
    /// reopened: once `fdatasync` has failed, the kernel may have dropped the dirty pages it
    /// could not write, and a later successful sync would not bring them back ("fsyncgate").
    failed: Option<String>,
}

/// The last finished round: requests up to `covered` are durable if it succeeded.
#[derive(Clone, Debug, Default)]
struct Round {
    covered: u64,
    error: Option<String>,
}

impl GroupSync {
    pub(super) fn new(db: sled::Db, dir: &Path) -> Result<Self, Error> {
        // sled writes its `conf` file when it opens a database and never syncs it: after a power
        // loss it can be empty, and sled warns of a corrupt configuration. Sync it here.
        if let Ok(conf) = File::open(dir.join("conf")) {
            conf.sync_all()
                .map_err(|e| Error::new(ErrorKind::Transient, e))?;
        }
        // A new database's files are entries in their directory: sync the directory (and its
        // parent, which may have just gained it) so a power loss cannot take the files away.
        sync_dir(dir)?;
        if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
            sync_dir(parent)?;
        }
        let log = File::open(dir.join("db")).map_err(|e| {
            Error::new(
                ErrorKind::Permanent,
                format!("cannot open sled's log file for syncing: {e}"),
            )
        })?;
        Ok(GroupSync {
            files: Arc::new(Files {
                db,
                log,
                blobs: dir.join("blobs"),
            }),
            shared: Arc::new(Shared {
                state: Mutex::new(State::default()),
                rounds: watch::Sender::new(Round::default()),
            }),
        })
    }

    /// Returns once everything written before the call is durable.
    ///
    /// # Errors
    ///
    /// Transient, when the flush or the sync failed: the write may or may not survive a crash,
    /// so it must not be acknowledged.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: a round in progress finishes on its own task.
    pub(super) async fn sync(&self) -> Result<(), Error> {
        let mut rounds = self.shared.rounds.subscribe();
        let ticket = {
            let mut state = self.shared.state.locked();
            state.requested += 1;
            state.requested
        };
        loop {
            if let Some(failed) = &self.shared.state.locked().failed {
                return Err(Error::Unavailable(format!(
                    "the store stopped acknowledging after a failed sync ({failed}); restart it"
                )));
            }
            {
                let round = rounds.borrow_and_update();
                if round.covered >= ticket {
                    return match &round.error {
                        None => Ok(()),
                        Some(error) => {
                            Err(Error::Unavailable(format!("store sync failed: {error}")))
                        }
                    };
                }
            }
            self.lead_if_idle();
            if rounds.changed().await.is_err() {
                return Err(Error::Bug("the store's sync state is gone".into()));
            }
        }
    }

    /// Syncs requested so far (one per commit, replays included).
    pub(super) fn requests(&self) -> u64 {
        self.shared.state.locked().requested
    }

    /// Sync rounds started so far.
    pub(super) fn rounds(&self) -> u64 {
        self.shared.state.locked().rounds
    }

    /// Starts a round on its own task unless one is running.
    fn lead_if_idle(&self) {
        let covered = {
            let mut state = self.shared.state.locked();
            if state.running {
                return;
            }
            state.running = true;
            state.rounds += 1;
            state.requested
        };
        let files = self.files.clone();
        let shared = self.shared.clone();
        tokio::task::spawn_blocking(move || {
            let result =
                std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| files.flush_and_sync()));
            drop(files);
            let error = match result {
                Ok(result) => result.err(),
                Err(_) => Some("the sync panicked".to_string()),
            };
            if let Some(error) = &error {
                tracing::error!(error = %error, "store sync failed; nothing more is acknowledged until the store is reopened");
            }
            let mut state = shared.state.locked();
            if state.failed.is_none() {
                state.failed.clone_from(&error);
            }
            // Published under the lock, before the next round can start: rounds are seen in order.
            state.running = false;
            shared.rounds.send_replace(Round { covered, error });
        });
    }
}

impl Files {
    fn flush_and_sync(&self) -> Result<(), String> {
        self.db.flush().map_err(|e| format!("sled flush: {e}"))?;
        fail::fail_point!("store::between_flush_and_fdatasync", |_| Err(
            "failpoint: crashed between flush and fdatasync".to_string()
        ));
        self.log
            .sync_data()
            .map_err(|e| format!("fdatasync of sled's log: {e}"))?;
        self.sync_blobs()
            .map_err(|e| format!("fsync of sled's blobs: {e}"))
    }

    /// sled writes items larger than a quarter of a segment to files of their own, and does not
    /// sync them. The store gives them the same barrier as the log.
    fn sync_blobs(&self) -> std::io::Result<()> {
        let entries = match std::fs::read_dir(&self.blobs) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(e),
        };
        let mut paths = Vec::new();
        for entry in entries {
            paths.push(entry?.path());
        }
        if sync_files(&paths)? > 0 {
            File::open(&self.blobs)?.sync_all()?;
        }
        Ok(())
    }
}

/// `fdatasync` of each file of `paths`; returns how many were synced. A file gone by the time it
/// is opened is skipped: sled removes a blob once a newer version of its item replaces it, and
/// a removed file holds nothing to make durable. That is not a failed sync.
fn sync_files(paths: &[PathBuf]) -> std::io::Result<usize> {
    let mut synced = 0;
    for path in paths {
        match File::open(path) {
            Ok(file) => file.sync_data()?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e),
        }
        synced += 1;
    }
    Ok(synced)
}

fn sync_dir(dir: &Path) -> Result<(), Error> {
    File::open(dir).and_then(|d| d.sync_all()).map_err(|e| {
        Error::new(
            ErrorKind::Transient,
            format!("cannot sync directory {}: {e}", dir.display()),
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_blob_removed_before_its_sync_is_skipped_not_a_failure() {
        let dir = tempfile::tempdir().unwrap();
        let kept = dir.path().join("kept");
        std::fs::write(&kept, b"blob").unwrap();
        let removed = dir.path().join("removed");
        assert_eq!(sync_files(&[removed.clone(), kept.clone()]).unwrap(), 1);
        // Any other error still fails the sync.
        let not_a_file = dir.path().join("kept").join("below");
        assert!(sync_files(&[not_a_file]).is_err());
    }
}

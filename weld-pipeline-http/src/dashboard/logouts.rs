//! Sessions ended by a logout: a cookie copied before its logout is refused from then on,
//! also after a restart.
//!
//! A session cookie proves itself (see [`session`](super::session)), so without a record of the
//! logouts a copy would stay good for the rest of its 12 hours. Each logout records the
//! session's nonce with the time the session would have expired, and the guard refuses a cookie
//! whose nonce is recorded. A record is dropped once its session has expired anyway, so the list
//! holds at most the logouts of the last 12 hours, bounded by [`MAX_ENDED`].
//!
//! Where it is kept: the store's trait has no place for it, and a list only in memory would
//! give every copied cookie back its remaining hours at the next restart, which is exactly when
//! an operator who logged out does not look. So [`Logouts::open`] keeps it in a file, one
//! `<nonce> <expires ms>` line per logout, appended and synced (`fdatasync`) before the logout
//! is answered, rewritten without the expired lines when it opens and whenever it holds more
//! than twice as many lines as live records. The data-streams service keeps it in its data
//! directory; replicas sharing a database each keep their own (a logout ends the session on the
//! replica that answered it).

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use weld_pipeline::sync::Locked;

use weld_pipeline::{Error, Timestamp};

/// Logouts remembered at once: one is about 80 bytes. Only a holder of the token can log out, so
/// this bounds a script that logs in and out in a loop, not an attacker; past it, the record of
/// the session closest to its end anyway goes first.
pub const MAX_ENDED: usize = 10_000;

/// The sessions ended by a logout; a cheap clone shares them.
#[derive(Clone, Debug, Default)]
pub struct Logouts {
    inner: Arc<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    /// Where they are kept; none: in memory only.
    file: Option<PathBuf>,
    /// Nonce to the time (ms) its session would have expired.
    ended: Mutex<HashMap<String, i64>>,
    /// Lines in the file; held while writing it, so appends and rewrites do not interleave.
    lines: Mutex<usize>,
}

impl Logouts {
    /// Logouts kept in memory only: a restart forgets them (and with them, that a copied cookie
    /// was logged out). For tests and embedders with no place to write.
    pub fn in_memory() -> Self {
        Logouts::default()
    }

    /// Logouts kept in the file at `path`, created when missing; those of sessions expired by
    /// now are dropped from it.
    ///
    /// # Errors
    ///
    /// [`Error::Unavailable`] when the file cannot be read or rewritten.
    pub fn open(path: impl Into<PathBuf>) -> Result<Self, Error> {
        let path = path.into();
        let text = match std::fs::read_to_string(&path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
            Err(e) => return Err(unavailable(&path, &e)),
        };
        let now = Timestamp::now().as_millis();
        let mut ended = HashMap::new();
        // A line cut short by a crash during its append, or anything else that is not a record,
        // is skipped: it ended no session that its logout's answer confirmed.
        for line in text.lines() {
            if let Some((nonce, expires)) = line.split_once(' ') {
                if let (true, Ok(expires)) = (valid_nonce(nonce), expires.parse::<i64>()) {
                    if expires > now {
                        ended.insert(nonce.to_owned(), expires);
                    }
                }
            }
        }
        trim(&mut ended);
        let lines = rewrite(&path, &ended)?;
        Ok(Logouts {
            inner: Arc::new(Inner {
                file: Some(path),
                ended: Mutex::new(ended),
                lines: Mutex::new(lines),
            }),
        })
    }

    /// Whether the session of `nonce` was logged out.
    pub(super) fn has_ended(&self, nonce: &str) -> bool {
        self.ended().contains_key(nonce)
    }

    /// Ends the session of `nonce`, which would expire at `expires`: at once in memory, then in
    /// the file, synced, before this returns.
    ///
    /// # Errors
    ///
    /// [`Error::Unavailable`] when the file cannot be written: the session is ended all the same
    /// until the service restarts.
    pub(super) async fn end(&self, nonce: &str, expires: Timestamp) -> Result<(), Error> {
        if !valid_nonce(nonce) {
            return Ok(());
        }
        let live = {
            let mut ended = self.ended();
            ended.insert(nonce.to_owned(), expires.as_millis());
            trim(&mut ended);
            ended.len()
        };
        let Some(path) = self.inner.file.clone() else {
            return Ok(());
        };
        let inner = self.inner.clone();
        let line = format!("{nonce} {}\n", expires.as_millis());
        tokio::task::spawn_blocking(move || {
            let mut lines = inner.lines.locked();
            if *lines + 1 > 2 * live + 64 {
                let snapshot = inner.ended.locked().clone();
                *lines = rewrite(&path, &snapshot)?;
                return Ok(());
            }
            let mut file = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&path)
                .map_err(|e| unavailable(&path, &e))?;
            file.write_all(line.as_bytes())
                .and_then(|()| file.sync_data())
                .map_err(|e| unavailable(&path, &e))?;
            *lines += 1;
            Ok(())
        })
        .await
        .map_err(|e| Error::from_join("the logout's write", e))?
    }

    fn ended(&self) -> std::sync::MutexGuard<'_, HashMap<String, i64>> {
        self.inner.ended.locked()
    }
}

/// Whether `nonce` can be one of [`Session`](super::session::Session)'s: hex, of a sane length.
/// A cookie's nonce is checked by its MAC before it gets here; this keeps the file's lines whole.
fn valid_nonce(nonce: &str) -> bool {
    (1..=64).contains(&nonce.len()) && nonce.bytes().all(|b| b.is_ascii_hexdigit())
}

/// Drops the records of sessions expired by now, and keeps `ended` within [`MAX_ENDED`]: the
/// records of sessions closest to their end go first. A scan per logout: logouts are rare.
fn trim(ended: &mut HashMap<String, i64>) {
    let now = Timestamp::now().as_millis();
    ended.retain(|_, expires| *expires > now);
    while ended.len() > MAX_ENDED {
        let Some(first) = ended
            .iter()
            .min_by_key(|(_, expires)| **expires)
            .map(|(nonce, _)| nonce.clone())
        else {
            break;
        };
        ended.remove(&first);
    }
}

/// Replaces the file at `path` with the records of `ended` not expired yet: written beside it,
/// synced, renamed over it, and the directory synced, so a crash leaves the old list or the new.
/// Returns the number of lines written.
fn rewrite(path: &Path, ended: &HashMap<String, i64>) -> Result<usize, Error> {
    let now = Timestamp::now().as_millis();
    let mut text = String::new();
    let mut lines = 0;
    for (nonce, expires) in ended.iter().filter(|(_, e)| **e > now) {
        text.push_str(&format!("{nonce} {expires}\n"));
        lines += 1;
    }
    let fresh = path.with_extension("new");
    let written = std::fs::File::create(&fresh).and_then(|mut file| {
        file.write_all(text.as_bytes())?;
        file.sync_all()
    });
    written
        .and_then(|()| std::fs::rename(&fresh, path))
        .map_err(|e| unavailable(path, &e))?;
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::File::open(dir)
            .and_then(|dir| dir.sync_all())
            .map_err(|e| unavailable(dir, &e))?;
    }
    Ok(lines)
}

fn unavailable(path: &Path, error: &std::io::Error) -> Error {
    Error::Unavailable(format!(
        "the dashboard's logouts at {}: {error}",
        path.display()
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn in_an_hour() -> Timestamp {
        Timestamp::from_millis(Timestamp::now().as_millis() + 3_600_000)
    }

    #[tokio::test]
    async fn a_logout_survives_reopening_and_an_expired_one_is_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("logouts");
        let logouts = Logouts::open(&path).unwrap();
        logouts.end("00aa", in_an_hour()).await.unwrap();
        logouts
            .end(
                "00bb",
                Timestamp::from_millis(Timestamp::now().as_millis() - 1),
            )
            .await
            .unwrap();
        assert!(logouts.has_ended("00aa"));
        drop(logouts);
        // A half-written last line, as a crash during an append leaves it.
        let mut file = std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap();
        file.write_all(b"00cc 17").unwrap();
        let reopened = Logouts::open(&path).unwrap();
        assert!(reopened.has_ended("00aa"));
        assert!(!reopened.has_ended("00bb"));
        assert_eq!(std::fs::read_to_string(&path).unwrap().lines().count(), 1);
    }

    #[tokio::test]
    async fn the_file_is_rewritten_before_it_grows_past_twice_its_records() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("logouts");
        let logouts = Logouts::open(&path).unwrap();
        let past = Timestamp::from_millis(Timestamp::now().as_millis() - 1);
        for n in 0..1_000u32 {
            logouts.end(&format!("{n:x}"), past).await.unwrap();
        }
        let lines = std::fs::read_to_string(&path).unwrap().lines().count();
        assert!(lines <= 2 * 1_000 + 64, "{lines}");
        assert!(
            lines < 200,
            "expired records are dropped by a rewrite: {lines}"
        );
    }

    #[test]
    fn the_list_holds_at_most_its_bound_dropping_the_closest_to_expiry() {
        let mut ended = HashMap::new();
        let base = in_an_hour().as_millis();
        for n in 0..=MAX_ENDED as i64 {
            ended.insert(format!("{n:x}"), base + n);
        }
        trim(&mut ended);
        assert_eq!(ended.len(), MAX_ENDED);
        assert!(!ended.contains_key("0"));
    }
}

//! Healing by trying again, written once: a failure that is told once when it begins and once
//! when it ends ([`Failing`]), and the loop that tries to end it with backoff
//! ([`Failing::heal`]).
//!
//! The controller's store ([`Healing`](crate::store::Healing)) and the worker's outbox both
//! heal this way: storage that failed is reopened, not written again in place, and the attempts
//! go on by themselves until one succeeds, without a restart.
//!
//! ```text
//! healthy --begin(why): told once--> failing --attempt after 1 s, 2 s, 4 s ... 30 s, 30 s ...
//!    ^                                                   |
//!    +------------ an attempt succeeds: told once <------+
//! ```
//!
//! A failure that lasts costs one attempt every 30 s and, for those that ask for it, one
//! summary line every 30 s; every attempt in between is said at debug only.

use std::future::Future;
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use crate::error::Error;
use crate::record::Timestamp;
use crate::sync::Locked;

/// A failure that lasts is summarised at most once per this long (when [`Lines::summary`]).
const SUMMARY_EVERY: Duration = Duration::from_secs(30);

/// When a healer tries: its first attempt `first` after the failure, each later one twice as
/// long after the one before, never more than `max` apart.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct HealBackoff {
    /// The wait before the first attempt.
    pub(crate) first: Duration,
    /// The longest wait between two attempts.
    pub(crate) max: Duration,
}

impl Default for HealBackoff {
    /// 1 s doubling to 30 s: a cause that goes quickly (space freed, a descriptor closed) is
    /// healed from within a second or two, and one that lasts costs an attempt per 30 s.
    fn default() -> Self {
        HealBackoff {
            first: Duration::from_secs(1),
            max: Duration::from_secs(30),
        }
    }
}

impl HealBackoff {
    /// The wait after `wait`.
    fn after(self, wait: Duration) -> Duration {
        wait.saturating_mul(2).min(self.max)
    }
}

/// A failure, while it lasts: since when, and why (the latest attempt's error, once one was
/// made).
#[derive(Clone, Debug)]
pub(crate) struct Failure {
    /// When it began.
    pub(crate) since: Timestamp,
    /// Why it lasts.
    pub(crate) reason: String,
}

/// What a healer says of its attempts: the messages of its log lines.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Lines {
    /// Said once, at info, when an attempt succeeds, with the attempts and how long it took.
    pub(crate) healed: &'static str,
    /// Said at debug after each attempt that failed.
    pub(crate) still_failing: &'static str,
    /// Whether a failure that lasts is also said at warn, with `still_failing`, at most once
    /// every 30 s.
    pub(crate) summary: bool,
}

/// Whether something is failing, and why: a failure begins once and ends once, whoever saw it.
#[derive(Debug, Default)]
pub(crate) struct Failing(Mutex<Option<Failure>>);

impl Failing {
    fn lock(&self) -> MutexGuard<'_, Option<Failure>> {
        self.0.locked()
    }

    /// Begins a failure for `reason`, unless one lasts already: `true` when this call began
    /// it, and its caller is the one to say so and start the healer.
    pub(crate) fn begin(&self, reason: String) -> bool {
        let mut failure = self.lock();
        if failure.is_some() {
            return false;
        }
        *failure = Some(Failure {
            since: Timestamp::now(),
            reason,
        });
        true
    }

    /// Whether a failure lasts.
    pub(crate) fn is_failing(&self) -> bool {
        self.lock().is_some()
    }

    /// The failure, while it lasts.
    pub(crate) fn failure(&self) -> Option<Failure> {
        self.lock().clone()
    }

    /// Heals: after each wait of `backoff`, runs `attempt` until one succeeds. The error of
    /// each that fails becomes the failure's reason; the one that succeeds ends the failure,
    /// then `healed` runs (what waited for it may go on) and it is said.
    ///
    /// # Cancel safety
    ///
    /// Dropped, it leaves the failure as it was: nothing heals it any more.
    pub(crate) async fn heal<A, F>(
        &self,
        backoff: HealBackoff,
        lines: Lines,
        mut attempt: A,
        healed: impl FnOnce(),
    ) where
        A: FnMut() -> F,
        F: Future<Output = Result<(), Error>>,
    {
        let started = Instant::now();
        let mut last_summary = Instant::now();
        let mut wait = backoff.first;
        let mut attempts: u64 = 0;
        loop {
            tokio::time::sleep(wait).await;
            wait = backoff.after(wait);
            attempts += 1;
            match attempt().await {
                Ok(()) => {
                    *self.lock() = None;
                    healed();
                    tracing::info!(attempts, after = ?started.elapsed(), "{}", lines.healed);
                    return;
                }
                Err(error) => {
                    tracing::debug!(attempts, error = %error, "{}", lines.still_failing);
                    if let Some(failure) = self.lock().as_mut() {
                        failure.reason = error.to_string();
                    }
                    if lines.summary && last_summary.elapsed() >= SUMMARY_EVERY {
                        last_summary = Instant::now();
                        tracing::warn!(attempts, since = ?started.elapsed(), error = %error, "{}", lines.still_failing);
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU32, Ordering};

    use super::*;

    #[test]
    fn a_failure_begins_once_whoever_sees_it() {
        let failing = Failing::default();
        assert!(failing.begin("the disk is full".into()));
        assert!(!failing.begin("and again".into()), "told once");
        assert_eq!(failing.failure().unwrap().reason, "the disk is full");
    }

    #[tokio::test(start_paused = true)]
    async fn healing_tries_after_1_s_doubling_to_30_s_and_ends_the_failure_once() {
        let failing = Failing::default();
        failing.begin("the disk is full".into());
        let start = tokio::time::Instant::now();
        let tries = Mutex::new(Vec::new());
        let healed = AtomicU32::new(0);
        let lines = Lines {
            healed: "healed",
            still_failing: "still failing",
            summary: true,
        };
        failing
            .heal(
                HealBackoff::default(),
                lines,
                || {
                    let mut tries = tries.locked();
                    tries.push(start.elapsed().as_secs());
                    let done = tries.len() == 8;
                    async move {
                        match done {
                            true => Ok(()),
                            false => Err(Error::Unavailable("no room yet".into())),
                        }
                    }
                },
                || {
                    healed.fetch_add(1, Ordering::Relaxed);
                },
            )
            .await;
        assert_eq!(*tries.locked(), [1, 3, 7, 15, 31, 61, 91, 121]);
        assert_eq!(healed.load(Ordering::Relaxed), 1);
        assert!(!failing.is_failing());
    }
}

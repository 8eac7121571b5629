//! The run history, kept with the data it describes.

use serde::{Deserialize, Serialize};

use crate::record::Timestamp;
use crate::sink::RunProgress;
use crate::stream::RunId;

/// Where a run stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RunState {
    /// Batches are arriving; the last has not.
    Running,
    /// Its last batch is committed: the run is a complete version of the stream.
    Succeeded,
    /// It ended on an error, recorded in `error`.
    Failed,
    /// A stop ended it at a page boundary.
    Cancelled,
}

/// One run of a stream, as the history shows it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunRecord {
    /// The run's id (time-ordered: a newer run has a larger id).
    pub id: RunId,
    /// Where it stands.
    pub state: RunState,
    /// When it started (its first report or batch, wall clock).
    pub started_at: Timestamp,
    /// When it ended.
    pub finished_at: Option<Timestamp>,
    /// Records committed: every record of its batches, whole versions, amendments and purges
    /// alike, whether or not it changed what was stored (an older version changes nothing).
    pub records: u64,
    /// Batches committed.
    pub batches: u64,
    /// Records of those batches that repaired the store (a source's reconciliation found them
    /// missing, stale, or gone for good at the source).
    #[serde(default)]
    pub repaired: u64,
    /// Of those, purges ([`Record::purge`](crate::Record::purge)) that removed a record: the
    /// number of records this run deleted from the store for good. A purge of a record the
    /// store did not hold removes nothing and counts in `records` only.
    #[serde(default)]
    pub purged: u64,
    /// Why it failed.
    pub error: Option<String>,
    /// How far its batches are committed without a gap: what moves the checkpoint.
    #[serde(flatten)]
    pub progress: RunProgress,
}

impl RunRecord {
    /// Takes a worker's report of how the run ended, at `now`; whether it changed anything. A
    /// run already succeeded stays so, and a reported success changes nothing: success is
    /// decided by the commit of the last batch.
    pub fn finish(&mut self, outcome: &crate::message::RunOutcome, now: Timestamp) -> bool {
        use crate::message::RunOutcome;
        if self.state == RunState::Succeeded {
            return false;
        }
        match outcome {
            RunOutcome::Succeeded => return false,
            RunOutcome::Failed { error, .. } => {
                self.state = RunState::Failed;
                self.error = Some(error.clone());
            }
            RunOutcome::Cancelled => self.state = RunState::Cancelled,
        }
        self.finished_at = Some(now);
        true
    }

    /// Marks a run still running as failed because a newer run of its stream started at `at`;
    /// whether it was running.
    pub fn abandon(&mut self, at: Timestamp) -> bool {
        if self.state != RunState::Running {
            return false;
        }
        self.state = RunState::Failed;
        self.finished_at = Some(at);
        self.error = Some("abandoned: a newer run of the stream started".into());
        true
    }

    /// A run that started at `at` and has committed nothing yet.
    pub fn started(id: RunId, at: Timestamp) -> Self {
        RunRecord {
            id,
            state: RunState::Running,
            started_at: at,
            finished_at: None,
            records: 0,
            batches: 0,
            repaired: 0,
            purged: 0,
            error: None,
            progress: RunProgress::default(),
        }
    }
}

//! The run history, kept with the data it describes.

use serde::{Deserialize, Serialize};

use crate::record::Timestamp;
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
    /// Records committed.
    pub records: u64,
    /// Batches committed.
    pub batches: u64,
    /// Records of those batches that repaired the store (a source's reconciliation found them
    /// missing, stale, or gone for good at the source).
    #[serde(default)]
    pub repaired: u64,
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
            error: None,
            progress: RunProgress::default(),
        }
    }
}

/// How far a run's batches are committed without a gap, and where its last batch is: the rule
/// that moves a stream's checkpoint (see [`StreamStore`](super::StreamStore)'s contract), in one
/// place for every store.
///
/// ```
/// use weld_pipeline::store::RunProgress;
///
/// let mut run = RunProgress::default();
/// let mut committed = std::collections::BTreeMap::new();
/// // Batch 1 arrives before batch 0: the checkpoint must not move yet.
/// assert_eq!(run.commit(1, true, "c1", |seq| Ok(committed.get(&seq).copied()))?, None);
/// committed.insert(1, "c1");
/// // Batch 0 closes the gap: the checkpoint moves past both, and the run is complete.
/// assert_eq!(run.commit(0, false, "c0", |seq| Ok(committed.get(&seq).copied()))?, Some("c1"));
/// assert!(run.is_complete());
/// # Ok::<_, weld_pipeline::Error>(())
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunProgress {
    /// The highest `seq` up to which every batch of the run is committed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub contiguous: Option<u64>,
    /// The `seq` of the run's last batch, once it has been committed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_seq: Option<u64>,
}

impl RunProgress {
    /// Takes batch `seq` (its `last` flag and `cursor`) as committed now, and returns the
    /// checkpoint the stream moves to, or `None` while a batch before it is missing.
    /// `committed(s)` answers the cursor of batch `s` of this run if it was committed earlier (out
    /// of order), so that a batch closing a gap carries the checkpoint past those after it.
    ///
    /// # Errors
    ///
    /// What `committed` returns.
    pub fn commit<C>(
        &mut self,
        seq: u64,
        last: bool,
        cursor: C,
        mut committed: impl FnMut(u64) -> Result<Option<C>, crate::Error>,
    ) -> Result<Option<C>, crate::Error> {
        if last {
            self.last_seq = Some(seq);
        }
        let follows = match self.contiguous {
            None => seq == 0,
            Some(high) => seq == high + 1,
        };
        if !follows {
            return Ok(None);
        }
        let (mut high, mut cursor) = (seq, cursor);
        while let Some(next) = committed(high + 1)? {
            high += 1;
            cursor = next;
        }
        self.contiguous = Some(high);
        Ok(Some(cursor))
    }

    /// Whether the last batch and every batch before it are committed.
    pub fn is_complete(&self) -> bool {
        self.last_seq.is_some() && self.contiguous == self.last_seq
    }
}

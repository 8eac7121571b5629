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
    /// The run.
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
    /// Why it failed.
    pub error: Option<String>,
    /// The highest `seq` up to which every batch of the run is committed: the checkpoint follows
    /// it, never a batch committed after a gap.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) contiguous: Option<u64>,
    /// The `seq` of the run's last batch, once it has arrived.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) last_seq: Option<u64>,
}

impl RunRecord {
    pub(super) fn started(id: RunId, at: Timestamp) -> Self {
        RunRecord {
            id,
            state: RunState::Running,
            started_at: at,
            finished_at: None,
            records: 0,
            batches: 0,
            error: None,
            contiguous: None,
            last_seq: None,
        }
    }
}

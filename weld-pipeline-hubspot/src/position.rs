//! The source's checkpoint: where a sync stands, as a state machine of phases.
//!
//! ```text
//! Full{last_id} --search pages, by id--> FullArchived{after} --list pages--> Done{until}
//! Done{until} --new run--> Window{from, until, last_id} --search pages, re-anchored by id-->
//!   WindowArchived{from, until, after} --archived list pages--> Done{until}
//! Done{until} --sweep due--> Sweep{Archived{after} -> Live{last_id} -> Missing} --> Done{until}
//! ```
//!
//! Every phase carries the fingerprint of the property set its records were read with
//! (`properties`, which covers the association types too); a run that finds another set starts
//! over at `Full` (see the `properties` module). The incremental phases carry when the last full
//! read began (`full_at`): a stream with associations or a calculated property starts over at
//! `Full` once that is older than its refresh interval. They also carry when the last sweep
//! began (`swept_at`): a full read that compared every id with the store ends with its own
//! start there (it did a sweep's work), one that could not (resumed by a process that did not
//! follow it from the start) with 0, so the next run sweeps. The full read's comparison is
//! memory only: `Full` and `FullArchived` keep their format. `FullLive`, a full sync through
//! the list endpoint, is what checkpoints from before discovery hold: it is read, and restarted
//! as `Full`.

use serde::{Deserialize, Serialize};
use weld_pipeline::{BoxError, Checkpoint};

/// Where a sync stands: the source's checkpoint.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "phase", rename_all = "snake_case")]
pub enum Position {
    /// Full sync, live records, by search sorted by id, after `last_id`.
    Full {
        /// The last id read.
        last_id: u64,
        /// When the full sync started (ms).
        started_at: i64,
        /// The fingerprint of the property set.
        properties: u64,
    },
    /// A full sync through the list endpoint, as checkpoints from before property discovery
    /// hold it: restarted as [`Position::Full`].
    FullLive {
        /// The list's paging token.
        after: Option<String>,
        /// When the full sync started (ms).
        started_at: i64,
    },
    /// Full sync, archived records, from `after`.
    FullArchived {
        /// The list's paging token.
        after: Option<String>,
        /// When the full sync started (ms).
        started_at: i64,
        /// The fingerprint of the property set (0 in checkpoints from before discovery).
        #[serde(default)]
        properties: u64,
    },
    /// Incremental: records modified in `[from, until]`, after id `last_id`.
    Window {
        /// Start of the window (ms).
        from: i64,
        /// End of the window (ms).
        until: i64,
        /// The last id committed in this window.
        last_id: u64,
        /// The fingerprint of the property set.
        #[serde(default)]
        properties: u64,
        /// When the last full read of every record started (ms; 0 in checkpoints from before
        /// associations): the refresh (associations, calculated properties) counts from it.
        #[serde(default)]
        full_at: i64,
        /// When the last reconciliation sweep started (ms; 0 for never).
        #[serde(default)]
        swept_at: i64,
    },
    /// Incremental: records archived in `[from, until)`, listing from `after`.
    WindowArchived {
        /// Start of the window (ms).
        from: i64,
        /// End of the window (ms).
        until: i64,
        /// The list's paging token.
        after: Option<String>,
        /// The fingerprint of the property set.
        #[serde(default)]
        properties: u64,
        /// When the last full read started (ms).
        #[serde(default)]
        full_at: i64,
        /// When the last reconciliation sweep started (ms; 0 for never).
        #[serde(default)]
        swept_at: i64,
    },
    /// A reconciliation sweep: HubSpot's ids and modification times compared with what the
    /// store holds, what is missing or stale read again, what vanished archived. Then
    /// `Done{until}` again.
    Sweep {
        /// The `until` of the `Done` it started from.
        until: i64,
        /// When the sweep started (ms): it identifies the sweep.
        started_at: i64,
        /// Where it stands.
        stage: SweepStage,
        /// The fingerprint of the property set.
        properties: u64,
        /// When the last full read started (ms).
        full_at: i64,
    },
    /// Reference data (owners, pipelines), read whole on every run: the live ones from
    /// `after`, then the archived ones.
    Reference {
        /// Whether the archived ones are being read.
        archived: bool,
        /// The paging token.
        after: Option<String>,
    },
    /// Everything changed up to `until` (ms) is synced; the next run's window starts there.
    /// After a full read, `swept_at` is its start when it compared every id with the store,
    /// and 0 when it could not (the next run then sweeps).
    Done {
        /// The end of the last window.
        until: i64,
        /// The fingerprint of the property set.
        #[serde(default)]
        properties: u64,
        /// When the last full read started (ms).
        #[serde(default)]
        full_at: i64,
        /// When the last reconciliation sweep started (ms; 0 for never).
        #[serde(default)]
        swept_at: i64,
    },
}

impl Position {
    /// The fingerprint of the property set this position's records were read with; 0 when it
    /// is from before properties were discovered.
    pub fn properties(&self) -> u64 {
        match self {
            Position::FullLive { .. } | Position::Reference { .. } => 0,
            Position::Full { properties, .. }
            | Position::Sweep { properties, .. }
            | Position::FullArchived { properties, .. }
            | Position::Window { properties, .. }
            | Position::WindowArchived { properties, .. }
            | Position::Done { properties, .. } => *properties,
        }
    }
}

/// Where a sweep stands.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "stage", rename_all = "snake_case")]
pub enum SweepStage {
    /// Listing HubSpot's archived ids, from `after`.
    Archived {
        /// The list's paging token.
        after: Option<String>,
    },
    /// Comparing the live ids after `last_id` with the store's.
    Live {
        /// The last id compared.
        last_id: u64,
    },
    /// Reading the archived records the store lacks.
    Missing,
}

/// The position a checkpoint holds; `None` at the start of a first sync.
pub(super) fn position(cursor: &Checkpoint) -> Result<Option<Position>, BoxError> {
    cursor.position().map_err(|e| Box::new(e) as BoxError)
}

/// The checkpoint of a position.
pub(super) fn checkpoint(position: &Position) -> Result<Checkpoint, BoxError> {
    Checkpoint::from_position(position).map_err(|e| Box::new(e) as BoxError)
}

//! A stream as the registry keeps it: its configuration and whether it should run.

use serde::{Deserialize, Serialize};

use crate::message::StreamConfig;
use crate::record::Timestamp;
use crate::stream::StreamName;

/// Whether a stream should run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Desired {
    /// Run it every interval, on whichever worker can.
    Running,
    /// Leave it stopped; its data stays.
    Stopped,
}

/// The latest error a stream's runs reported, as its status shows it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LastError {
    /// When the controller heard of it (wall clock).
    pub at: Timestamp,
    /// The error as the worker or the controller phrased it.
    pub message: String,
}

/// A stream as the registry keeps it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StreamEntry {
    /// The stream's name: its key in the registry and in every other table of the store.
    pub name: StreamName,
    /// Its configuration: a change applies from the next run.
    pub config: StreamConfig,
    /// Whether it should run.
    pub desired: Desired,
    /// The latest error its runs reported, if any; kept across restarts and stops.
    pub last_error: Option<LastError>,
}

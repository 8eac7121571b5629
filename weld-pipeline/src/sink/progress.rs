//! The contiguity rule of the [`Sink`](super::Sink) contract, in one place for every sink and
//! store: a stream's checkpoint moves only past batches of a run committed without a gap, so a
//! batch that arrives before its predecessor never carries the checkpoint over the missing one.

use serde::{Deserialize, Serialize};

/// How far a run's batches are committed without a gap, and where its last batch is: the rule
/// that moves a stream's checkpoint (see [`Sink`](super::Sink)'s contract), in one place for
/// every sink and store.
///
/// ```
/// use weld_pipeline::sink::RunProgress;
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
        mut committed: impl FnMut(u64) -> Result<Option<C>, crate::error::Error>,
    ) -> Result<Option<C>, crate::error::Error> {
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

//! The store's inventory of a stream, read ahead in id order beside a pass over HubSpot's live
//! ids: what the reconciliation sweep and the full read compare each page with.
//!
//! Both passes visit HubSpot's live ids in ascending order, a page at a time, and want what the
//! store holds over the same id range. The inventory comes in pages of up to
//! [`MAX_HELD_PER_PAGE`], in the store's key order, which for HubSpot's numeric ids is numeric:
//! [`HeldAhead::through`] reads as many pages as the range needs and keeps the rest for the next
//! range, so memory holds one inventory page, not the stream.

use std::collections::VecDeque;

use weld_pipeline::source::{Held, Inventory, MAX_HELD_PER_PAGE};
use weld_pipeline::{BoxError, StreamName};

/// The store's inventory read ahead, after the last id taken.
#[derive(Debug, Default)]
pub(super) struct HeldAhead {
    held: VecDeque<(u64, Held)>,
    next: Option<String>,
    done: bool,
}

impl HeldAhead {
    /// Takes every record with an id up to `upper` (all that remain for `None`), reading ahead
    /// page by page. Ids that are not HubSpot's (not numbers) are skipped.
    ///
    /// A failed read leaves what was taken before untouched and only adds to what is read
    /// ahead: the same call again takes the same records.
    pub(super) async fn through(
        &mut self,
        inventory: &dyn Inventory,
        stream: &StreamName,
        upper: Option<u64>,
    ) -> Result<Vec<(u64, Held)>, BoxError> {
        let covered = |ahead: &Self| match (upper, ahead.held.back()) {
            (Some(upper), Some((last, _))) => *last > upper,
            _ => false,
        };
        while !self.done && !covered(self) {
            let page = inventory
                .held(stream, self.next.as_deref(), MAX_HELD_PER_PAGE)
                .await?;
            self.held.extend(
                page.records
                    .into_iter()
                    .filter_map(|h| Some((h.id.parse::<u64>().ok()?, h))),
            );
            self.done = page.next.is_none();
            self.next = page.next;
        }
        let mut taken = Vec::new();
        while let Some((id, _)) = self.held.front() {
            if upper.is_some_and(|upper| *id > upper) {
                break;
            }
            taken.extend(self.held.pop_front());
        }
        Ok(taken)
    }
}

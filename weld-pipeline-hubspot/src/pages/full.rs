//! The full read: every live record through search, sorted by id and re-anchored after the
//! last id read (`Full`), then every archived record through the archived listing
//! (`FullArchived`). Its end is a checkpoint at the time it started, less the settle delay.
//!
//! # A full read mirrors exactly
//!
//! A user who presses "Resync" expects the store to equal HubSpot when the run finishes,
//! records HubSpot deleted for good included, not a day later at the next sweep. The live pass
//! already visits every live id in id order, so with the store's inventory
//! ([`RunContext::inventory`](weld_pipeline::RunContext)) each page is compared, as the sweep
//! compares, with what the store holds over the same id range (read ahead: the `inventory`
//! module). The inventory is the store's: the comparison adds HubSpot calls only for what it
//! finds missing.
//!
//! - An id held in the store that the live pages skipped is a candidate; the archived pass
//!   strikes out every id it lists (it sends those as archived anyway).
//! - On the last archived page, what remains is asked for by id (archived, then live: two
//!   calls per 100, only when some remain), since a record archived or restored while the read
//!   went on may show in no listing; what HubSpot has is sent as it has it, and what it has
//!   nothing of is gone for good: held live, it is archived with
//!   `"deleted_permanently": true`, or removed when the stream's
//!   [`HubSpotObject::on_permanent_delete`] is `purge`, as the sweep does (counted in
//!   [`Page::repaired`]).
//! - A record merged away is no candidate: its survivor, read on a live page, names it in
//!   `hs_merged_object_ids`, and that page sends its `merged_into` amendment.
//! - Held archived and listed nowhere (the recycle bin emptied, a GDPR delete of an archived
//!   record): removed with `purge`, provided the property set reads `hs_merged_object_ids`
//!   (else a merged-away record could not be told from it); left as it is with `archive`,
//!   already archived (marking it would be repeated at every full read: the inventory cannot
//!   tell a record already marked).
//!
//! The comparison's state is memory only (the checkpoints keep their format). A page that
//! finds it lost or out of step (a worker restarted mid-read, resuming from a checkpoint past
//! what this process compared) does not guess: the read goes on as before and ends with
//! `swept_at` 0, so the next run is a reconciliation sweep. A page read again from an earlier
//! checkpoint of the same read is fine: the ranges it covers were compared once. Without an
//! inventory, nothing is compared and nothing is repaired.

use std::collections::{BTreeMap, HashSet};

use tokio::sync::Mutex;
use weld_pipeline::source::{Page, PageRequest};
use weld_pipeline::{BoxError, Record, Timestamp};

use super::inventory::HeldAhead;
use super::reader::{page, Reader};
use super::sweep::plan::gone_for_good;
use crate::parse::Listed;
use crate::position::{checkpoint, Position};
use crate::properties::PropertySet;
#[cfg(doc)]
use crate::HubSpotObject;
use crate::OnPermanentDelete;

/// A full read's comparison with the store, in memory from page to page.
#[derive(Debug)]
pub(crate) struct State {
    /// When the read started (ms): it identifies the read.
    started_at: i64,
    /// Whether this process saw the read from its start: otherwise nothing is concluded.
    in_step: bool,
    /// The store's inventory read ahead, after the last id compared.
    held: HeldAhead,
    /// The highest id compared; `u64::MAX` once the live pass is done.
    through: u64,
    /// Ids held live that no live page listed, with the version stored.
    vanished: BTreeMap<u64, Timestamp>,
    /// Ids held archived that no live page listed, with the version stored.
    vanished_archived: BTreeMap<u64, Timestamp>,
    /// Ids a live survivor names as merged into it.
    merged: HashSet<u64>,
    /// The paging tokens of the archived pages this process will have seen to.
    archived_after: HashSet<String>,
}

impl State {
    fn new(started_at: i64, in_step: bool) -> Self {
        State {
            started_at,
            in_step,
            held: HeldAhead::default(),
            through: 0,
            vanished: BTreeMap::new(),
            vanished_archived: BTreeMap::new(),
            merged: HashSet::new(),
            archived_after: HashSet::new(),
        }
    }

    fn live_done(&self) -> bool {
        self.through == u64::MAX
    }
}

/// The state of the read started at `started_at` for the page at `at`: the one kept, when it
/// followed the read up to `at` (or is already out of step for it); a fresh one at the read's
/// first page; otherwise one out of step, from which nothing is concluded.
fn state_for<'a>(full: &'a mut Option<State>, started_at: i64, at: &Position) -> &'a mut State {
    let followed = |state: &State| match at {
        Position::Full { last_id, .. } => *last_id <= state.through,
        Position::FullArchived { after, .. } => {
            state.live_done()
                && after
                    .as_ref()
                    .is_none_or(|after| state.archived_after.contains(after))
        }
        _ => false,
    };
    let first = matches!(at, Position::Full { last_id: 0, .. });
    let keep = full.as_ref().is_some_and(|state| {
        state.started_at == started_at
            && if state.in_step {
                followed(state)
            } else {
                !first
            }
    });
    if !keep {
        if !first {
            tracing::info!(
                "a full read resumed where this process did not follow it: nothing is concluded from comparing it with the store, and the next run sweeps"
            );
        }
        *full = None;
    }
    full.get_or_insert_with(|| State::new(started_at, first))
}

impl Reader {
    /// One page of the live pass, after id `last_id`, of a full read started at `started_at`,
    /// compared with the store's inventory when there is one.
    pub(super) async fn full_page(
        &self,
        full: &Mutex<Option<State>>,
        at: Position,
        set: &PropertySet,
        request: &PageRequest,
    ) -> Result<Page, BoxError> {
        let Position::Full {
            last_id,
            started_at,
            properties,
        } = at
        else {
            return Err(not_full());
        };
        let archived = self.archived_first_calls(set).await?;
        let (listed, last) = self.search(vec![], last_id, set, archived).await?;
        if let Some(inventory) = &request.inventory {
            let mut full = full.lock().await;
            let state = state_for(&mut full, started_at, &at);
            if state.in_step {
                let held = state
                    .held
                    .through(&**inventory, &request.stream, last)
                    .await?;
                compare_live(state, &listed, held);
                state.through = last.unwrap_or(u64::MAX);
            }
        }
        let next = match last {
            Some(last_id) => Position::Full {
                last_id,
                started_at,
                properties,
            },
            None => Position::FullArchived {
                after: None,
                started_at,
                properties,
            },
        };
        page(listed.records, &next)
    }

    /// One page of the archived pass, from `after`, of a full read started at `started_at`; on
    /// the last, what the comparison found gone for good.
    pub(super) async fn full_archived_page(
        &self,
        full: &Mutex<Option<State>>,
        at: Position,
        set: &PropertySet,
        request: &PageRequest,
    ) -> Result<Page, BoxError> {
        let Position::FullArchived {
            after,
            started_at,
            properties,
        } = at.clone()
        else {
            return Err(not_full());
        };
        let listed = self.archived_page(after, set, None).await?;
        let mut done = Position::Done {
            until: self.settle(started_at),
            properties,
            full_at: started_at,
            // A full read repairs all but what vanished: the next sweep is a day on.
            swept_at: started_at,
        };
        let Some(_) = &request.inventory else {
            let next = match listed.next {
                Some(after) => Position::FullArchived {
                    after: Some(after),
                    started_at,
                    properties,
                },
                None => done,
            };
            return page(listed.records, &next);
        };
        let mut full = full.lock().await;
        let state = state_for(&mut full, started_at, &at);
        for (record, _) in &listed.records {
            if let Ok(id) = record.id.parse::<u64>() {
                state.vanished.remove(&id);
                state.vanished_archived.remove(&id);
            }
        }
        if let Some(after) = listed.next {
            state.archived_after.insert(after.clone());
            let next = Position::FullArchived {
                after: Some(after),
                started_at,
                properties,
            };
            return page(listed.records, &next);
        }
        let mut records: Vec<Record> = listed.records.into_iter().map(|(r, _)| r).collect();
        let gone = if state.in_step {
            let merges_seen = set.names().iter().any(|n| n == "hs_merged_object_ids");
            self.gone(state, merges_seen, set).await?
        } else {
            // Not followed from its start: the next run is a sweep.
            if let Position::Done { swept_at, .. } = &mut done {
                *swept_at = 0;
            }
            Vec::new()
        };
        *full = None;
        let repaired = gone.len() as u64;
        records.extend(gone);
        Ok(Page {
            records,
            last: true,
            cursor: checkpoint(&done)?,
            repaired,
        })
    }

    /// What the comparison found gone for good, at the end of a read followed from its start:
    /// the candidates HubSpot has nothing of when asked by id (see
    /// [`Reader::confirm_gone`]), and the records it does have of them, as read.
    async fn gone(
        &self,
        state: &State,
        merges_seen: bool,
        set: &PropertySet,
    ) -> Result<Vec<Record>, BoxError> {
        let on_delete = self.object.on_permanent_delete;
        let purge_archived = on_delete == OnPermanentDelete::Purge && merges_seen;
        let candidates: BTreeMap<u64, Timestamp> = state
            .vanished
            .iter()
            .chain(state.vanished_archived.iter().filter(|_| purge_archived))
            .filter(|(id, _)| !state.merged.contains(id))
            .map(|(id, at)| (*id, *at))
            .collect();
        let ids: Vec<u64> = candidates.keys().copied().collect();
        let (mut found, gone) = self.confirm_gone(&ids, set).await?;
        let now = Timestamp::now();
        tracing::info!(
            object = %self.object.object_type,
            deleted = gone.len(),
            found_by_id = found.iter().filter(|r| !r.amend).count(),
            on_permanent_delete = ?on_delete,
            "full read compared with the store"
        );
        found.extend(
            gone.iter()
                .map(|id| gone_for_good(*id, candidates[id], now, on_delete)),
        );
        Ok(found)
    }
}

/// Compares one live page (`listed`, and the survivors' merges) with what the store holds over
/// its id range (`held`): the ids held and not listed are candidates.
fn compare_live(state: &mut State, listed: &Listed, held: Vec<(u64, weld_pipeline::source::Held)>) {
    // The page's records, less the merge amendments the search added after them.
    let live: HashSet<u64> = listed
        .records
        .iter()
        .filter(|(record, _)| !record.amend)
        .filter_map(|(record, _)| record.id.parse().ok())
        .collect();
    for (id, held) in held {
        if live.contains(&id) {
            continue;
        }
        if held.archived {
            state.vanished_archived.insert(id, held.updated_at);
        } else {
            state.vanished.insert(id, held.updated_at);
        }
    }
    state.merged.extend(
        listed
            .merges
            .iter()
            .filter_map(|m| m.id.parse::<u64>().ok()),
    );
}

fn not_full() -> BoxError {
    Box::new(weld_pipeline::Error::Bug(
        "a page of another phase read as a full read's".into(),
    ))
}

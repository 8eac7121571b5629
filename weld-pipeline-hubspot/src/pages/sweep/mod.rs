//! The reconciliation sweep: what makes "the store equals the source" hold over months, not
//! only over a test.
//!
//! Incremental windows see what changed at HubSpot; they cannot see what the store lost (a
//! disk that lied about a sync, batches whose resent successors moved the checkpoint past
//! them), nor records HubSpot deleted for good (a GDPR delete, the recycle bin emptied after 90
//! days): those vanish from every listing. So once per [`HubSpotObject::sweep_every`] (a day by
//! default) a run is a sweep, cheap because it reads ids and modification times only:
//!
//! 1. **Archived ids**: `GET /crm/v3/objects/{type}?archived=true&properties=hs_object_id`, 100
//!    a page, kept in memory (ids only).
//! 2. **Live ids**: search sorted by `hs_object_id`, re-anchored after the last id like a full
//!    sync, asking for `hs_object_id` and the change-tracking property only, 200 a page. Each
//!    page is compared with the store's inventory over the same id range (read ahead in pages
//!    of up to 10,000, in the store's key order, which for HubSpot's numeric ids is numeric):
//!    - live at HubSpot, missing from the store, older there, or archived there: read again
//!      (batch read by id with every property, 100 a call, links included);
//!    - archived at HubSpot, live in the store: archived (an amendment: the stored document
//!      stays, `archived` and `archivedAt` written over it);
//!    - in neither listing, live in the store, and not found when asked for by id (archived
//!      or live: the listings are not one snapshot, and a record archived or restored between
//!      them shows in neither): gone for good, archived with
//!      `"deleted_permanently": true` (an amendment: nothing stored is dropped), or removed
//!      ([`Record::purge`](weld_pipeline::Record::purge)) when the stream's
//!      [`HubSpotObject::on_permanent_delete`] says `purge`;
//!    - in neither listing, archived in the store: left as it is. The inventory cannot tell a
//!      record merged away (archived with `merged_into`) from one whose archived copy HubSpot
//!      then deleted for good: only a full read, which sees every survivor's
//!      `hs_merged_object_ids`, can (see the `full` module).
//! 3. **What no listing showed, asked for by id**, 100 a call, archived then live: what HubSpot
//!    has is sent as it has it, the rest is gone for good (above). Then **archived records the
//!    store lacks**: batch read with `archived=true`.
//!
//! Every record a sweep sends counts as repaired ([`Page::repaired`](weld_pipeline::source::Page)):
//! the run history shows how many, and `weld_records_repaired_total{stream}` counts them. A
//! sweep needs the store's inventory ([`RunContext::inventory`](weld_pipeline::RunContext)):
//! without one it is skipped. Its memory holds HubSpot's archived ids and one inventory page;
//! a sweep interrupted (a worker restart) starts over at its next page.

pub(super) mod plan;

use std::collections::{BTreeMap, HashSet};

use serde_json::json;
use tokio::sync::Mutex;
use tower::ServiceExt;
use weld_pipeline::source::{Inventory, Page, PageRequest};
use weld_pipeline::{BoxError, Error, Record, StreamName, Timestamp};

use super::inventory::HeldAhead;
use super::reader::Reader;
use crate::calls::search_after;
use crate::client::Call;
use crate::parse::{parse, Listed};
use crate::position::{checkpoint, Position, SweepStage};
use crate::properties::PropertySet;
#[cfg(doc)]
use crate::HubSpotObject;
use plan::{compare, gone_for_good};

/// The most archived records the store lacks that one page reads.
const MISSING_PER_PAGE: usize = 1_000;

/// What a sweep's position says of it.
#[derive(Clone, Copy, Debug)]
pub(super) struct Sweep {
    /// The `until` of the `Done` it started from, and returns to.
    pub(super) until: i64,
    /// When it started (ms).
    pub(super) started_at: i64,
    /// The fingerprint of the property set.
    pub(super) properties: u64,
    /// When the last full read started (ms).
    pub(super) full_at: i64,
}

/// What a sweep learnt so far, in memory.
#[derive(Debug)]
pub(crate) struct State {
    started_at: i64,
    /// HubSpot's archived ids, with their archive times.
    archived: BTreeMap<u64, Option<i64>>,
    /// Those found in the store.
    seen_archived: HashSet<u64>,
    /// Ids held live that neither listing showed, with the version stored: asked for by id
    /// once the live pass is done.
    unlisted: BTreeMap<u64, Timestamp>,
    /// The store's inventory read ahead, after the last id compared.
    held: HeldAhead,
    repaired: Repaired,
}

/// What a sweep repaired, for its closing log line.
#[derive(Clone, Copy, Debug, Default)]
struct Repaired {
    read_again: u64,
    archived: u64,
    deleted: u64,
}

/// The store a sweep compares with: its inventory of the stream.
#[derive(Clone, Copy)]
struct Store<'a> {
    inventory: &'a dyn Inventory,
    stream: &'a StreamName,
}

impl State {
    fn new(started_at: i64) -> Self {
        State {
            started_at,
            archived: BTreeMap::new(),
            seen_archived: HashSet::new(),
            unlisted: BTreeMap::new(),
            held: HeldAhead::default(),
            repaired: Repaired::default(),
        }
    }
}

impl Reader {
    /// One page of a sweep, its state kept in `sweeping` from page to page.
    pub(super) async fn sweep_page(
        &self,
        sweeping: &Mutex<Option<State>>,
        sweep: Sweep,
        stage: SweepStage,
        set: &PropertySet,
        request: &PageRequest,
    ) -> Result<Page, BoxError> {
        let inventory = request.inventory.clone().ok_or_else(|| {
            Box::new(Error::Bug("a sweep without a store to compare with".into())) as BoxError
        })?;
        let mut sweeping = sweeping.lock().await;
        // A sweep whose state was lost (a worker restarted) starts over.
        let stage = match &*sweeping {
            Some(state) if state.started_at == sweep.started_at => stage,
            _ => {
                *sweeping = Some(State::new(sweep.started_at));
                SweepStage::Archived { after: None }
            }
        };
        let state = sweeping
            .as_mut()
            .ok_or_else(|| Box::new(Error::Bug("no sweep state".into())) as BoxError)?;
        let (records, next) = match stage {
            SweepStage::Archived { after } => {
                (Vec::new(), Some(self.sweep_archived(state, after).await?))
            }
            SweepStage::Live { last_id } => {
                let store = Store {
                    inventory: &*inventory,
                    stream: &request.stream,
                };
                self.sweep_live(state, store, last_id, set).await?
            }
            SweepStage::Missing => self.sweep_missing(state, set).await?,
        };
        let next = match next {
            Some(stage) => Position::Sweep {
                until: sweep.until,
                started_at: sweep.started_at,
                stage,
                properties: sweep.properties,
                full_at: sweep.full_at,
            },
            None => {
                let Repaired {
                    read_again,
                    archived,
                    deleted,
                } = state.repaired;
                tracing::info!(
                    object = %self.object.object_type,
                    read_again,
                    archived,
                    deleted,
                    "reconciliation sweep done"
                );
                *sweeping = None;
                Position::Done {
                    until: sweep.until,
                    properties: sweep.properties,
                    full_at: sweep.full_at,
                    swept_at: sweep.started_at,
                }
            }
        };
        Ok(Page {
            repaired: records.len() as u64,
            records,
            last: matches!(next, Position::Done { .. }),
            cursor: checkpoint(&next)?,
        })
    }

    /// Stage 1: a page of HubSpot's archived ids, kept; the stage after it.
    async fn sweep_archived(
        &self,
        state: &mut State,
        after: Option<String>,
    ) -> Result<SweepStage, BoxError> {
        let listed = self.archived_ids(after).await?;
        state.archived.extend(
            listed
                .records
                .iter()
                .filter_map(|(r, at)| Some((r.id.parse().ok()?, *at))),
        );
        Ok(match listed.next {
            Some(after) => SweepStage::Archived { after: Some(after) },
            None => SweepStage::Live { last_id: 0 },
        })
    }

    /// Stage 2: a page of HubSpot's live ids after `last_id` compared with what the store
    /// holds in their range; the records to repair, and the stage after it.
    async fn sweep_live(
        &self,
        state: &mut State,
        store: Store<'_>,
        last_id: u64,
        set: &PropertySet,
    ) -> Result<(Vec<Record>, Option<SweepStage>), BoxError> {
        let (live, more) = self.live_ids(last_id).await?;
        // The range compared: up to this page's last id, or to the end on the last page.
        let upper = if more {
            live.keys().last().copied()
        } else {
            None
        };
        let held = state
            .held
            .through(store.inventory, store.stream, upper)
            .await?;
        let plan = compare(&live, held, &state.archived, &mut state.seen_archived);
        state.repaired.archived += plan.archive.len() as u64;
        state.repaired.read_again += plan.read_again.len() as u64;
        // What neither listing showed is asked for by id at the end, all at once.
        state.unlisted.extend(plan.deleted.iter().copied());
        let mut records = self.read_by_id(false, &plan.read_again, set).await?;
        records.extend(plan.archive_amendments());
        let next = match upper {
            Some(last_id) => SweepStage::Live { last_id },
            None => SweepStage::Missing,
        };
        Ok((records, Some(next)))
    }

    /// Stage 3: a page of the archived records the store lacks; the records, and the stage
    /// after it (none once they are all read).
    async fn sweep_missing(
        &self,
        state: &mut State,
        set: &PropertySet,
    ) -> Result<(Vec<Record>, Option<SweepStage>), BoxError> {
        if !state.unlisted.is_empty() {
            return self.sweep_unlisted(state, set).await;
        }
        let missing: Vec<u64> = state
            .archived
            .keys()
            .filter(|id| !state.seen_archived.contains(id))
            .take(MISSING_PER_PAGE)
            .copied()
            .collect();
        state.seen_archived.extend(&missing);
        state.repaired.read_again += missing.len() as u64;
        let records = self.read_by_id(true, &missing, set).await?;
        let next = (missing.len() == MISSING_PER_PAGE).then_some(SweepStage::Missing);
        Ok((records, next))
    }

    /// Stage 3, first: a page of the ids no listing showed, asked for by id ([`Reader::confirm_gone`]):
    /// what HubSpot has of them, as it has it, and what it has nothing of, gone for good.
    async fn sweep_unlisted(
        &self,
        state: &mut State,
        set: &PropertySet,
    ) -> Result<(Vec<Record>, Option<SweepStage>), BoxError> {
        let page: Vec<(u64, Timestamp)> = state
            .unlisted
            .iter()
            .take(MISSING_PER_PAGE)
            .map(|(id, at)| (*id, *at))
            .collect();
        let ids: Vec<u64> = page.iter().map(|(id, _)| *id).collect();
        let (mut records, gone) = self.confirm_gone(&ids, set).await?;
        for id in &ids {
            state.unlisted.remove(id);
        }
        state.repaired.read_again += records.iter().filter(|r| !r.amend).count() as u64;
        state.repaired.deleted += gone.len() as u64;
        let now = Timestamp::now();
        let on_delete = self.object.on_permanent_delete;
        records.extend(
            page.iter()
                .filter(|(id, _)| gone.contains(id))
                .map(|(id, held_at)| gone_for_good(*id, *held_at, now, on_delete)),
        );
        Ok((records, Some(SweepStage::Missing)))
    }

    /// A page of HubSpot's archived ids (with their archive times).
    async fn archived_ids(&self, after: Option<String>) -> Result<Listed, BoxError> {
        let call = self.archived_ids_call(after).await?;
        parse(&self.calls.list.clone().oneshot(call).await?)
    }

    /// A page of HubSpot's live ids after `last_id` with their modification times, and whether
    /// more follow.
    async fn live_ids(&self, last_id: u64) -> Result<(BTreeMap<u64, Timestamp>, bool), BoxError> {
        let properties = json!(["hs_object_id", self.object.modified_property()]);
        let body = search_after(vec![], last_id, properties, self.account.search_limit);
        let call = Call::Search {
            object_type: self.object_type().await?,
            body,
        };
        let listed = parse(&self.calls.search.clone().oneshot(call).await?)?;
        let live = listed
            .records
            .iter()
            .filter_map(|(r, _)| Some((r.id.parse().ok()?, r.updated_at)))
            .collect();
        Ok((live, listed.next.is_some()))
    }
}

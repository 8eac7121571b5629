//! What every phase reads with: the object and its account, the call stacks, the calls read
//! ahead, and the object type as URLs name it; and the reads that are the same in every phase
//! (the object's property definitions, records by id, calls sent ahead).

use std::sync::{Arc, Mutex};

use serde_json::json;
use tower::ServiceExt;
use weld_pipeline::source::Page;
use weld_pipeline::sync::Locked;
use weld_pipeline::{BoxError, Record};

use super::object_type::{custom_object_id, object_type_in_urls};
use crate::associations;
use crate::calls::Calls;
use crate::client::Call;
use crate::lookahead::{beside, Ahead, Lookahead};
use crate::parse::parse;
use crate::position::{checkpoint, Position};
use crate::properties::{parse_definitions, Defined, PropertySet};
use crate::{HubSpotAccount, HubSpotObject};

/// The most ids one batch read takes (HubSpot's limit).
const BATCH_READ: usize = 100;

/// The reading side of a fetcher, shared by its clones (pages of a stream come one at a time).
#[derive(Clone)]
pub(super) struct Reader {
    pub(super) account: Arc<HubSpotAccount>,
    pub(super) object: Arc<HubSpotObject>,
    pub(super) calls: Calls,
    /// The next page's calls, sent while the current page was finished (see `lookahead`).
    pub(super) lookahead: Arc<Lookahead>,
    /// The object type as URLs name it: the configured one, or a custom object's
    /// `objectTypeId` found by its name.
    resolved: Arc<Mutex<Option<Arc<str>>>>,
}

impl Reader {
    /// A reader of `object` in `account` through `calls`.
    pub(super) fn new(account: Arc<HubSpotAccount>, object: HubSpotObject, calls: Calls) -> Self {
        Reader {
            account,
            object: Arc::new(object),
            calls,
            lookahead: Arc::default(),
            resolved: Arc::default(),
        }
    }

    /// `now` less the settle delay: the latest modification time the search index is trusted
    /// to show.
    pub(super) fn settle(&self, now: i64) -> i64 {
        now - self.account.settle_delay.as_millis() as i64
    }

    /// The object type as URLs name it (see [`object_type_in_urls`]), resolved once.
    pub(super) async fn object_type(&self) -> Result<Arc<str>, BoxError> {
        if let Some(resolved) = self.resolved.locked().clone() {
            return Ok(resolved);
        }
        let configured = self.object.object_type.as_str();
        let resolved: Arc<str> = if object_type_in_urls(configured) {
            configured.into()
        } else {
            let body = self.calls.meta.clone().oneshot(Call::Schemas).await?;
            custom_object_id(&body, configured)?.into()
        };
        *self.resolved.locked() = Some(resolved.clone());
        Ok(resolved)
    }

    /// Every property the account defines for the object, with its type, and which are
    /// calculated.
    pub(super) async fn definitions(&self) -> Result<Defined, BoxError> {
        let object_type = self.object_type().await?;
        let body = self
            .calls
            .meta
            .clone()
            .oneshot(Call::Properties {
                object_type: object_type.clone(),
            })
            .await?;
        parse_definitions(&body, &object_type, self.account.max_properties)
    }

    /// Starts `calls` ahead of the page that will make them, each going out as its budget
    /// allows.
    pub(super) async fn send_ahead(&self, calls: Vec<Call>) -> Vec<Ahead> {
        let mut ahead = self.ahead(calls);
        beside(&mut ahead, std::future::ready(())).await;
        ahead
    }

    /// `calls` to send ahead of the page that will make them, not sent yet; one already sent
    /// ahead is carried on.
    pub(super) fn ahead(&self, calls: Vec<Call>) -> Vec<Ahead> {
        calls
            .into_iter()
            .map(|call| {
                self.lookahead.take(&call).unwrap_or_else(|| {
                    let service = match call {
                        Call::Search { .. } => &self.calls.search,
                        _ => &self.calls.list,
                    };
                    Ahead::start(service, call)
                })
            })
            .collect()
    }

    /// Reads the links of `records` to every type the stream asks for, and writes them into
    /// each (see `associations`); nothing when it asks for none.
    pub(super) async fn attach_links(
        &self,
        object_type: &Arc<str>,
        records: &mut [(Record, Option<i64>)],
    ) -> Result<(), BoxError> {
        if self.object.associations.is_empty() {
            return Ok(());
        }
        let ids: Vec<String> = records.iter().map(|(r, _)| r.id.clone()).collect();
        let links = associations::read(
            &self.calls.links,
            object_type,
            &self.object.associations,
            &ids,
        )
        .await?;
        associations::attach(records.iter_mut().map(|(r, _)| r), &links);
        Ok(())
    }

    /// Records by id, with every property of `set` (and their links, and the amendments of the
    /// records merged into them), 100 a call.
    pub(super) async fn read_by_id(
        &self,
        archived: bool,
        ids: &[u64],
        set: &PropertySet,
    ) -> Result<Vec<Record>, BoxError> {
        let object_type = self.object_type().await?;
        let mut records = Vec::with_capacity(ids.len());
        for chunk in ids.chunks(BATCH_READ) {
            let inputs: Vec<_> = chunk
                .iter()
                .map(|id| json!({"id": id.to_string()}))
                .collect();
            let call = Call::BatchRead {
                object_type: object_type.clone(),
                archived,
                body: json!({"properties": set.names(), "inputs": inputs}),
            };
            let mut listed = parse(&self.calls.list.clone().oneshot(call).await?)?;
            if !archived {
                self.attach_links(&object_type, &mut listed.records).await?;
            }
            records.extend(listed.records.into_iter().map(|(r, _)| r));
            records.extend(listed.merges.iter().map(|m| m.amendment()));
        }
        Ok(records)
    }

    /// Of `ids`, which no listing of a pass showed, what HubSpot has now: the records it has,
    /// archived or live, read by id (each is sent as read), and the ids it has nothing of,
    /// gone for good. A pass's listings are not one snapshot: a record archived after the
    /// archived listing went by and before the live one reached it (or restored in between)
    /// shows in neither, and only asking for it by id tells it from a deletion. At most two
    /// calls per 100 ids, made only when a pass found some (HubSpot deletes little).
    pub(super) async fn confirm_gone(
        &self,
        ids: &[u64],
        set: &PropertySet,
    ) -> Result<(Vec<Record>, Vec<u64>), BoxError> {
        if ids.is_empty() {
            return Ok((Vec::new(), Vec::new()));
        }
        let mut found = self.read_by_id(true, ids, set).await?;
        let unfound = |found: &[Record], ids: &[u64]| -> Vec<u64> {
            let have: std::collections::HashSet<&str> = found
                .iter()
                .filter(|r| !r.amend)
                .map(|r| r.id.as_str())
                .collect();
            ids.iter()
                .copied()
                .filter(|id| !have.contains(id.to_string().as_str()))
                .collect()
        };
        let not_archived = unfound(&found, ids);
        found.extend(self.read_by_id(false, &not_archived, set).await?);
        let gone = unfound(&found, &not_archived);
        Ok((found, gone))
    }
}

/// The page of `records` (each with its archive time), its cursor at `next`: the last once
/// `next` is `Done`.
pub(super) fn page(records: Vec<(Record, Option<i64>)>, next: &Position) -> Result<Page, BoxError> {
    Ok(Page {
        records: records.into_iter().map(|(record, _)| record).collect(),
        last: matches!(next, Position::Done { .. }),
        cursor: checkpoint(next)?,
        repaired: 0,
    })
}

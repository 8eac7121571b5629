//! One page of the sweep's comparison: HubSpot's ids and modification times against the
//! store's inventory of the same range, and the amendments it makes of what is gone; and what a
//! record found deleted for good becomes, which the full read sends too.

use std::collections::{BTreeMap, HashSet};

use serde_json::json;
use weld_pipeline::source::Held;
use weld_pipeline::{Json, Record, Timestamp};

use crate::OnPermanentDelete;

/// What one page of the comparison found.
#[derive(Debug, Default, PartialEq, Eq)]
pub(super) struct Plan {
    /// Ids to read again: missing from the store, stale there, or archived there but live.
    pub(super) read_again: Vec<u64>,
    /// Ids live in the store but archived at HubSpot, with the version stored and when HubSpot
    /// archived them.
    pub(super) archive: Vec<(u64, Timestamp, Option<i64>)>,
    /// Ids live in the store that neither of HubSpot's listings showed, with the stored
    /// version: gone for good, unless HubSpot has them when asked by id.
    pub(super) deleted: Vec<(u64, Timestamp)>,
}

/// Compares HubSpot's live ids of one range (with their modification times) with what the store
/// holds in that range. `archived` is HubSpot's archived ids; those found are added to `seen`.
pub(super) fn compare(
    live: &BTreeMap<u64, Timestamp>,
    held: impl IntoIterator<Item = (u64, Held)>,
    archived: &BTreeMap<u64, Option<i64>>,
    seen: &mut HashSet<u64>,
) -> Plan {
    let mut plan = Plan::default();
    let mut found = HashSet::new();
    for (id, held) in held {
        found.insert(id);
        match (live.get(&id), archived.get(&id)) {
            (Some(at), _) => {
                if held.archived || held.updated_at < *at {
                    plan.read_again.push(id);
                }
            }
            (None, Some(archived_at)) => {
                seen.insert(id);
                if !held.archived {
                    plan.archive.push((id, held.updated_at, *archived_at));
                }
            }
            (None, None) => {
                if !held.archived {
                    plan.deleted.push((id, held.updated_at));
                }
            }
        }
    }
    plan.read_again
        .extend(live.keys().filter(|id| !found.contains(id)));
    plan.read_again.sort_unstable();
    plan
}

/// An amendment archiving record `id`: `members` written over what is stored of it.
pub(super) fn amendment(id: u64, at: Timestamp, members: serde_json::Value) -> Record {
    Record {
        id: id.to_string(),
        updated_at: at,
        archived: true,
        amend: true,
        purge: false,
        // A JSON value always serializes.
        data: Json::from_checked_bytes(serde_json::to_vec(&members).unwrap_or_default().into()),
    }
}

/// What record `id`, stored at version `held_at` and found deleted for good at `now`, becomes:
/// archived with `"deleted_permanently": true` (an amendment stamped no earlier than the
/// version stored: a store never lets an older version win), or removed, as `on_delete` says.
pub(in crate::pages) fn gone_for_good(
    id: u64,
    held_at: Timestamp,
    now: Timestamp,
    on_delete: OnPermanentDelete,
) -> Record {
    let at = now.max(held_at);
    match on_delete {
        OnPermanentDelete::Archive => amendment(
            id,
            at,
            json!({"archived": true, "deleted_permanently": true}),
        ),
        OnPermanentDelete::Purge => Record::purge(id.to_string(), at),
    }
}

impl Plan {
    /// The amendments of the archived.
    ///
    /// An archived record's amendment is stamped with the version stored: an equal time
    /// replaces, so it applies, and the record's time stays HubSpot's `updatedAt` (archiving
    /// does not move it), which the archived listing's version of the record, read later with
    /// the same time, replaces whole. Stamped later (its `archivedAt`, or now), it would outrank
    /// that version for good, and the store would keep a time HubSpot never gave the record.
    pub(super) fn archive_amendments(&self) -> Vec<Record> {
        self.archive
            .iter()
            .map(|(id, held_at, archived_at)| {
                let archived_at = archived_at.map(|ms| Timestamp::from_millis(ms).to_string());
                amendment(
                    *id,
                    *held_at,
                    json!({"archived": true, "archivedAt": archived_at}),
                )
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn held(id: u64, at: i64, archived: bool) -> (u64, Held) {
        (
            id,
            Held {
                id: id.to_string(),
                updated_at: Timestamp::from_millis(at),
                archived,
            },
        )
    }

    #[test]
    fn an_archived_records_amendment_keeps_the_stored_version_so_hubspots_own_replaces_it() {
        let plan = Plan {
            read_again: vec![],
            archive: vec![(7, Timestamp::from_millis(10), Some(50))],
            deleted: vec![(8, Timestamp::from_millis(20))],
        };
        let records = plan.archive_amendments();
        let archived = &records[0];
        assert_eq!(
            (archived.id.as_str(), archived.updated_at),
            ("7", Timestamp::from_millis(10))
        );
        assert!(archived.archived && archived.amend);
        let members: serde_json::Value = archived.data.decode().unwrap();
        assert_eq!(
            members["archivedAt"],
            Timestamp::from_millis(50).to_string()
        );
        // HubSpot's archived record, listed later with its unchanged `updatedAt`, replaces it.
        let listed = Record {
            archived: true,
            ..Record::new(
                "7",
                Timestamp::from_millis(10),
                Json::parse(b"{}".to_vec()).unwrap(),
            )
        };
        let stored = Some((archived.updated_at, archived.archived));
        assert!(weld_pipeline::store::upsert_counts(stored, &listed).is_some());
        // Nothing of a deleted one is left to replace it: stamped now, or the version stored.
        let gone = gone_for_good(
            8,
            Timestamp::from_millis(20),
            Timestamp::from_millis(99),
            OnPermanentDelete::Archive,
        );
        assert_eq!(gone.updated_at, Timestamp::from_millis(99));
    }

    #[test]
    fn the_comparison_reads_again_what_is_missing_or_stale_and_archives_what_is_gone() {
        let live = BTreeMap::from([
            (1, Timestamp::from_millis(10)),
            (2, Timestamp::from_millis(20)),
            (3, Timestamp::from_millis(30)),
            (4, Timestamp::from_millis(40)),
        ]);
        let archived = BTreeMap::from([(5, Some(55)), (6, None), (9, Some(99))]);
        let mut seen = HashSet::new();
        let plan = compare(
            &live,
            [
                held(1, 10, false), // the same: nothing to do
                held(2, 15, false), // stale
                held(3, 30, true),  // archived here, live there
                // 4 missing
                held(5, 50, false), // archived there
                held(6, 60, true),  // archived on both sides
                held(7, 70, false), // gone for good
                held(8, 80, true),  // gone, already archived here
            ],
            &archived,
            &mut seen,
        );
        assert_eq!(plan.read_again, vec![2, 3, 4]);
        assert_eq!(
            plan.archive,
            vec![(5, Timestamp::from_millis(50), Some(55))]
        );
        assert_eq!(plan.deleted, vec![(7, Timestamp::from_millis(70))]);
        assert_eq!(seen, HashSet::from([5, 6]));
    }
}

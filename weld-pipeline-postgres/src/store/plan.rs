//! What a batch writes against the stored versions of its records: for each id, the version
//! that wins (if any) or its row's deletion (a purge), and how the live and archived counts
//! move, decided in Rust from the heads the commit read and locked.

use std::collections::{BTreeMap, HashMap};

use weld_pipeline::store::upsert_counts;
use weld_pipeline::{Json, Record, Timestamp};

/// What a batch wrote: records, and how the live and archived counts moved.
#[derive(Debug, Default, Clone, Copy)]
pub(super) struct Moved {
    pub(super) written: u64,
    pub(super) live: i64,
    pub(super) archived: i64,
    /// Records a purge removed (stored, or written earlier in the batch).
    pub(super) purged: u64,
}

impl Moved {
    /// Adds what `other` moved.
    pub(super) fn add(&mut self, other: &Moved) {
        self.written += other.written;
        self.live += other.live;
        self.archived += other.archived;
        self.purged += other.purged;
    }

    /// Takes back what `other` moved.
    pub(super) fn take(&mut self, other: &Moved) {
        self.written -= other.written;
        self.live -= other.live;
        self.archived -= other.archived;
        self.purged -= other.purged;
    }
}

/// The stored head of a record (and its document, when an amendment needs it).
#[derive(Clone)]
pub(super) struct Stored {
    pub(super) updated_at: Timestamp,
    pub(super) archived: bool,
    pub(super) data: Option<Json>,
}

/// A batch's records by id, each id's versions in batch order.
pub(super) struct Versions<'a> {
    pub(super) by_id: BTreeMap<&'a str, Vec<&'a Record>>,
    /// Whether any version amends its stored record (the heads are then read with documents).
    pub(super) amends: bool,
}

impl<'a> Versions<'a> {
    pub(super) fn of(records: &'a [Record]) -> Self {
        let mut by_id: BTreeMap<&str, Vec<&Record>> = BTreeMap::new();
        for record in records {
            by_id.entry(record.id.as_str()).or_default().push(record);
        }
        Versions {
            by_id,
            amends: records.iter().any(|r| r.amend),
        }
    }

    /// The batch's ids, in order.
    pub(super) fn ids(&self) -> Vec<&'a str> {
        self.by_id.keys().copied().collect()
    }
}

/// What the records of one id in a batch do against the stored version.
pub(super) struct Decision {
    /// The version to write, if one wins.
    pub(super) version: Option<Record>,
    /// How the counts move.
    pub(super) moved: Moved,
    /// Whether a purge comes after every version written: the stored row, if any, is deleted.
    pub(super) gone: bool,
}

/// What the records of one id in a batch (in batch order) do against the stored one: the
/// version to write, if any wins, whether the row goes (a purge, whatever the version it
/// removes: see `Record::purge`), and how the counts move. A version after a purge is written
/// as a new record.
pub(super) fn decide(stored: Option<Stored>, versions: &[&Record]) -> Decision {
    let mut moved = Moved::default();
    let mut head = stored;
    let mut written: Option<Record> = None;
    let mut gone = false;
    for record in versions {
        if record.purge {
            if let Some(removed) = head.take() {
                if removed.archived {
                    moved.archived -= 1;
                } else {
                    moved.live -= 1;
                }
                moved.purged += 1;
            }
            written = None;
            gone = true;
            continue;
        }
        let held = head.as_ref().map(|h| (h.updated_at, h.archived));
        let Some((live, archived)) = upsert_counts(held, record) else {
            continue;
        };
        moved.live += live;
        moved.archived += archived;
        let version = match (&head, record.amend) {
            (
                Some(Stored {
                    updated_at,
                    archived,
                    data: Some(data),
                }),
                true,
            ) => Record {
                id: record.id.clone(),
                updated_at: *updated_at,
                archived: *archived,
                amend: false,
                purge: false,
                data: data.clone(),
            }
            .amended_by(record),
            _ => Record {
                amend: false,
                purge: false,
                ..(*record).clone()
            },
        };
        head = Some(Stored {
            updated_at: version.updated_at,
            archived: version.archived,
            data: Some(version.data.clone()),
        });
        moved.written += 1;
        written = Some(version);
        gone = false;
    }
    Decision {
        version: written,
        moved,
        gone,
    }
}

/// What a batch writes against the stored versions: the rows to update (they exist, locked),
/// the rows to insert, the rows to delete (they exist, locked), and how the counts move, in
/// all and per id.
pub(super) struct Plan<'a> {
    pub(super) updates: Vec<Record>,
    pub(super) inserts: Vec<Record>,
    pub(super) deletes: Vec<&'a str>,
    pub(super) moved: Moved,
    pub(super) moves: HashMap<&'a str, Moved>,
}

impl<'a> Plan<'a> {
    pub(super) fn of(versions: &Versions<'a>, stored: &HashMap<String, Stored>) -> Self {
        let mut plan = Plan {
            updates: Vec::new(),
            inserts: Vec::new(),
            deletes: Vec::new(),
            moved: Moved::default(),
            moves: HashMap::new(),
        };
        for (id, versions) in &versions.by_id {
            let head = stored.get(*id).cloned();
            let exists = head.is_some();
            let decision = decide(head, versions);
            match decision.version {
                Some(version) if exists => plan.updates.push(version),
                Some(version) => plan.inserts.push(version),
                None if decision.gone && exists => plan.deletes.push(*id),
                // Nothing wins, or a purge of a record not stored (perhaps written earlier in
                // the batch): nothing to write, and no tombstone.
                None => {}
            }
            plan.moved.add(&decision.moved);
            plan.moves.insert(*id, decision.moved);
        }
        plan
    }

    /// The ids of every record the plan writes.
    pub(super) fn written(&self) -> Vec<&str> {
        self.updates
            .iter()
            .chain(&self.inserts)
            .map(|r| r.id.as_str())
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn version(id: &str, at: i64) -> Record {
        Record::new(
            id,
            Timestamp::from_millis(at),
            Json::parse(b"{}".to_vec()).unwrap(),
        )
    }

    fn stored(at: i64, archived: bool) -> Stored {
        Stored {
            updated_at: Timestamp::from_millis(at),
            archived,
            data: None,
        }
    }

    /// Per id, in batch order: a purge deletes a stored row of any version; after a version in
    /// the batch it removes that version (no insert, no row); a version after it is written
    /// anew; of an id not stored it plans nothing.
    #[test]
    fn a_purge_plans_the_rows_deletion_and_a_later_version_its_rewrite() {
        let purge = |id: &str| Record::purge(id, Timestamp::from_millis(1));
        let records = vec![
            purge("1"),
            version("2", 5),
            purge("2"),
            purge("3"),
            version("3", 2),
            purge("4"),
            version("5", 5),
            purge("5"),
        ];
        let versions = Versions::of(&records);
        let held = HashMap::from([
            ("1".to_string(), stored(99, true)),
            ("3".to_string(), stored(99, false)),
            ("5".to_string(), stored(1, false)),
        ]);
        let plan = Plan::of(&versions, &held);
        assert_eq!(plan.deletes, ["1", "5"]);
        assert!(plan.inserts.is_empty(), "{:?}", plan.inserts);
        let updated: Vec<(&str, i64)> = plan
            .updates
            .iter()
            .map(|r| (r.id.as_str(), r.updated_at.as_millis()))
            .collect();
        assert_eq!(
            updated,
            [("3", 2)],
            "written anew, older than the row it replaces"
        );
        assert!(!plan.updates[0].purge);
        // Purged: 1, 2 (written then removed), 3 (then written anew) and 5. Counts: 1 leaves
        // the archived, 5 the live; 2 and 3 come and go.
        let moved = plan.moved;
        assert_eq!((moved.purged, moved.live, moved.archived), (4, -1, -1));
        assert_eq!(moved.written, 3, "the versions of 2, 3 and 5");
    }
}

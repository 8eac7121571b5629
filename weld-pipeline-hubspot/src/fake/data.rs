//! The fake's data set: generated, seeded, with spread-out and deliberately tied modification
//! times.

use std::collections::BTreeMap;

use serde::Serialize;

use super::definitions::Definition;
use super::wire::iso;

/// One CRM object as the fake keeps it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Object {
    pub(crate) id: u64,
    pub(crate) properties: BTreeMap<String, Option<String>>,
    pub(crate) created_at: i64,
    pub(crate) updated_at: i64,
    pub(crate) archived_at: Option<i64>,
}

/// All objects of one type.
#[derive(Debug)]
pub(crate) struct ObjectSet {
    pub(crate) records: BTreeMap<u64, Object>,
    pub(crate) next_id: u64,
    /// The change-tracking property: `lastmodifieddate` for contacts, `hs_lastmodifieddate`
    /// for the others.
    pub(crate) modified_property: &'static str,
    pub(crate) defaults: &'static [&'static str],
    /// Its type: `contacts`, `tickets`, a custom object's id, ...
    pub(crate) object_type: String,
    /// Every property name the type knows (others are left out of answers).
    pub(crate) known: Vec<String>,
    /// Their definitions, as the properties endpoint lists them.
    pub(crate) definitions: Vec<Definition>,
    /// Custom properties `custom_property_000..`, each with values on about a quarter of the
    /// records.
    pub(crate) custom: usize,
    /// The live records' ids in order, for counting a search's matches past an id without
    /// walking them; made when first needed, dropped by every change (`admin::mutate`).
    pub(crate) live_index: Option<Vec<u64>>,
}

const CONTACT_DEFAULTS: &[&str] = &[
    "createdate",
    "email",
    "firstname",
    "hs_object_id",
    "lastmodifieddate",
    "lastname",
];
const COMPANY_DEFAULTS: &[&str] = &[
    "createdate",
    "domain",
    "hs_lastmodifieddate",
    "hs_object_id",
    "name",
];
const DEAL_DEFAULTS: &[&str] = &[
    "amount",
    "closedate",
    "createdate",
    "dealname",
    "dealstage",
    "hs_lastmodifieddate",
    "hs_object_id",
    "pipeline",
];

/// The `objectTypeId` of the custom object the fake's portal defines (its names are
/// `properties::CUSTOM_OBJECT_NAMES`).
pub(crate) const CUSTOM_OBJECT_TYPE_ID: &str = "2-1234567";

/// The CRM object types the fake serves beside contacts, companies and deals, each with the
/// properties a list without `properties` returns (and that it generates values for). Change
/// tracking is `hs_lastmodifieddate` for all of them.
pub(crate) const OTHER_TYPES: &[(&str, &[&str])] = &[
    (
        "tickets",
        &[
            "content",
            "createdate",
            "hs_lastmodifieddate",
            "hs_object_id",
            "hs_pipeline",
            "hs_pipeline_stage",
            "hs_ticket_priority",
            "subject",
        ],
    ),
    (
        "products",
        &[
            "createdate",
            "description",
            "hs_lastmodifieddate",
            "hs_object_id",
            "hs_sku",
            "name",
            "price",
        ],
    ),
    (
        "line_items",
        &[
            "createdate",
            "hs_lastmodifieddate",
            "hs_object_id",
            "hs_product_id",
            "name",
            "price",
            "quantity",
        ],
    ),
    (
        "quotes",
        &[
            "createdate",
            "hs_expiration_date",
            "hs_lastmodifieddate",
            "hs_object_id",
            "hs_status",
            "hs_title",
        ],
    ),
    (
        "calls",
        &[
            "createdate",
            "hs_call_duration",
            "hs_call_title",
            "hs_lastmodifieddate",
            "hs_object_id",
            "hs_timestamp",
        ],
    ),
    (
        "emails",
        &[
            "createdate",
            "hs_email_subject",
            "hs_email_text",
            "hs_lastmodifieddate",
            "hs_object_id",
            "hs_timestamp",
        ],
    ),
    (
        "meetings",
        &[
            "createdate",
            "hs_lastmodifieddate",
            "hs_meeting_start_time",
            "hs_meeting_title",
            "hs_object_id",
            "hs_timestamp",
        ],
    ),
    (
        "notes",
        &[
            "createdate",
            "hs_lastmodifieddate",
            "hs_note_body",
            "hs_object_id",
            "hs_timestamp",
        ],
    ),
    (
        "tasks",
        &[
            "createdate",
            "hs_lastmodifieddate",
            "hs_object_id",
            "hs_task_status",
            "hs_task_subject",
            "hs_timestamp",
        ],
    ),
    (
        CUSTOM_OBJECT_TYPE_ID,
        &[
            "createdate",
            "hs_lastmodifieddate",
            "hs_object_id",
            "make",
            "model",
            "year",
        ],
    ),
];

/// A value for property `name` of record `id` of a type the fake knows no story for: a
/// number, a time or a text, as the name suggests.
fn generic_value(name: &str, id: u64, at: i64) -> Option<String> {
    Some(match name {
        "price" | "quantity" | "hs_call_duration" | "year" | "hs_product_id" => {
            (id * 37 % 5_000 + 1).to_string()
        }
        "hs_timestamp" | "hs_meeting_start_time" | "hs_expiration_date" => iso(at),
        "hs_status" | "hs_task_status" => {
            ["DRAFT", "APPROVED", "NOT_STARTED"][id as usize % 3].to_string()
        }
        _ => format!("{name} {id}"),
    })
}

const FIRST: [&str; 10] = [
    "Lorelai", "Rory", "Luke", "Sookie", "Paris", "Jess", "Emily", "Richard", "Lane", "Kirk",
];
const LAST: [&str; 8] = [
    "Gilmore",
    "Danes",
    "St. James",
    "Geller",
    "Mariano",
    "Hayden",
    "Kim",
    "Gleason",
];

impl ObjectSet {
    /// The properties a list or search asked for (`asked`, comma-separated), or the type's
    /// defaults when it named none.
    pub(crate) fn properties_or_defaults(&self, asked: Option<&str>) -> Vec<String> {
        match asked {
            Some(list) if !list.is_empty() => list.split(',').map(str::to_string).collect(),
            _ => self.defaults.iter().map(|s| s.to_string()).collect(),
        }
    }

    /// Of the properties `asked`, those the type knows, in order: an answer leaves the others
    /// out, as HubSpot does.
    pub(crate) fn known_of(&self, asked: Vec<String>) -> Vec<String> {
        let known: std::collections::HashSet<&str> =
            self.known.iter().map(String::as_str).collect();
        asked
            .into_iter()
            .filter(|name| known.contains(name.as_str()))
            .collect()
    }

    /// How many live records have an id past `floor`.
    pub(crate) fn live_after(&mut self, floor: u64) -> usize {
        let records = &self.records;
        let index = self.live_index.get_or_insert_with(|| {
            records
                .values()
                .filter(|o| o.archived_at.is_none())
                .map(|o| o.id)
                .collect()
        });
        index.len() - index.partition_point(|&id| id <= floor)
    }

    /// An empty set of `object_type`, whose portal defines `custom` custom properties
    /// (created at `now`).
    pub(crate) fn new(object_type: &str, custom: usize, now: i64) -> Self {
        let (modified_property, defaults) = match object_type {
            "contacts" => ("lastmodifieddate", CONTACT_DEFAULTS),
            "companies" => ("hs_lastmodifieddate", COMPANY_DEFAULTS),
            "deals" => ("hs_lastmodifieddate", DEAL_DEFAULTS),
            other => (
                "hs_lastmodifieddate",
                OTHER_TYPES
                    .iter()
                    .find(|(name, _)| *name == other)
                    .map_or(DEAL_DEFAULTS, |(_, defaults)| *defaults),
            ),
        };
        // `hs_merged_object_ids` names the records merged into one (`;`-separated), as on
        // HubSpot's types that merge.
        let more: &[&str] = match object_type {
            "contacts" => &[
                "phone",
                "company",
                "website",
                "lifecyclestage",
                "city",
                "hs_merged_object_ids",
            ],
            "companies" | "deals" | "tickets" => &["hs_merged_object_ids"],
            _ => &[],
        };
        let mut definitions: Vec<Definition> = defaults
            .iter()
            .chain(more)
            .map(|name| Definition::standard(name, now - 400 * 86_400_000))
            .collect();
        definitions.extend((0..custom).map(|i| Definition::custom(i, now - 200 * 86_400_000)));
        ObjectSet {
            records: BTreeMap::new(),
            next_id: 1,
            modified_property,
            defaults,
            known: definitions.iter().map(|d| d.name.clone()).collect(),
            definitions,
            custom,
            object_type: object_type.to_string(),
            live_index: None,
        }
    }

    /// Defines a custom string property and gives every live record a value for it, without
    /// touching their modification times (as a property filled by an import or a workflow
    /// that does not count as an edit).
    pub(crate) fn add_property(&mut self, name: &str, now: i64) {
        if !self.known.iter().any(|k| k == name) {
            self.known.push(name.to_string());
            self.definitions.push(Definition::added(name, now));
        }
        for object in self.records.values_mut() {
            if object.archived_at.is_none() {
                object
                    .properties
                    .insert(name.to_string(), Some(format!("{name} of {}", object.id)));
            }
        }
    }

    /// Adds an object with generated properties.
    pub(crate) fn create(
        &mut self,
        rng: &mut fastrand::Rng,
        created_at: i64,
        updated_at: i64,
    ) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        let first = FIRST[rng.usize(..FIRST.len())];
        let last = LAST[rng.usize(..LAST.len())];
        let mut properties = BTreeMap::new();
        let mut set = |name: &str, value: Option<String>| {
            properties.insert(name.to_string(), value);
        };
        set("createdate", Some(iso(created_at)));
        set("hs_object_id", Some(id.to_string()));
        set(self.modified_property, Some(iso(updated_at)));
        match self.object_type.as_str() {
            "contacts" => {
                set(
                    "email",
                    Some(format!("{}.{id}@example.com", first.to_lowercase())),
                );
                set("firstname", Some(first.to_string()));
                set("lastname", Some(last.to_string()));
                // Known but empty on some records: HubSpot answers null.
                set(
                    "phone",
                    (id % 3 != 0).then(|| format!("+1-555-{:04}", id % 10_000)),
                );
                set(
                    "city",
                    Some(["Stars Hollow", "Hartford", "New Haven"][rng.usize(..3)].to_string()),
                );
                set(
                    "lifecyclestage",
                    Some(["lead", "customer", "subscriber"][rng.usize(..3)].to_string()),
                );
            }
            "companies" => {
                set("name", Some(format!("{last} & Co {id}")));
                set(
                    "domain",
                    Some(format!(
                        "{}{id}.example.com",
                        last.to_lowercase().replace([' ', '.'], "")
                    )),
                );
            }
            "deals" => {
                set("dealname", Some(format!("Deal {id} with {last}")));
                set("amount", Some((rng.u32(100..100_000)).to_string()));
                set("dealstage", Some("appointmentscheduled".to_string()));
                set("pipeline", Some("default".to_string()));
                set("closedate", None);
            }
            _ => {
                for name in self.defaults {
                    if !matches!(*name, "createdate" | "hs_object_id" | "hs_lastmodifieddate") {
                        set(name, generic_value(name, id, created_at));
                    }
                }
            }
        }
        for index in 0..self.custom {
            if let Some(value) = Definition::custom_value(index, id) {
                properties.insert(format!("custom_property_{index:03}"), Some(value));
            }
        }
        self.records.insert(
            id,
            Object {
                id,
                properties,
                created_at,
                updated_at,
                archived_at: None,
            },
        );
        id
    }

    /// The ids of the live (not archived) objects, in random order.
    pub(crate) fn live_shuffled(&self, rng: &mut fastrand::Rng) -> Vec<u64> {
        let mut live: Vec<u64> = self
            .records
            .values()
            .filter(|o| o.archived_at.is_none())
            .map(|o| o.id)
            .collect();
        rng.shuffle(&mut live);
        live
    }

    /// Sets an object's modification time (and its change-tracking property).
    pub(crate) fn touch(&mut self, id: u64, at: i64) {
        let modified = self.modified_property;
        if let Some(object) = self.records.get_mut(&id) {
            object.updated_at = at;
            object
                .properties
                .insert(modified.to_string(), Some(iso(at)));
        }
    }
}

/// Generates `count` objects: modification times spread over the last 30 days, every group of
/// five sharing one, and one big group of `big_tie` sharing a single timestamp (more than a page
/// of search results: the case connectors get wrong).
pub(crate) fn generate(
    object_type: &str,
    count: usize,
    big_tie: usize,
    custom: usize,
    rng: &mut fastrand::Rng,
    now: i64,
) -> ObjectSet {
    let mut set = ObjectSet::new(object_type, custom, now);
    let start = now - 30 * 86_400_000;
    let span = (now - 3_600_000 - start).max(1);
    let big_tie_at = start + span / 2;
    for i in 0..count {
        let created_at = start + rng.i64(0..span / 2);
        let updated_at = if i < big_tie {
            big_tie_at
        } else {
            // Groups of five share a timestamp.
            let group = (i / 5) as i64;
            start + (group * 7_919 * 1_000) % span
        };
        set.create(rng, created_at.min(updated_at), updated_at);
    }
    set
}

/// An object as the list and search endpoints return it, with the asked-for properties.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Answer<'a> {
    pub(crate) id: String,
    pub(crate) properties: BTreeMap<&'a str, &'a Option<String>>,
    pub(crate) created_at: String,
    pub(crate) updated_at: String,
    pub(crate) archived: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) archived_at: Option<String>,
    /// The record in HubSpot's app: on dated answers only (`Served::record_url`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) url: Option<String>,
}

impl Object {
    /// The object with the named properties: unknown names left out, known but empty ones null.
    /// The record as HubSpot answers it, with `properties` (each one the type knows: see
    /// [`ObjectSet::known_of`]), `null` where it has no value.
    pub(crate) fn answer<'a>(&'a self, properties: &'a [String]) -> Answer<'a> {
        const NULL: Option<String> = None;
        let out = properties
            .iter()
            .map(|name| (name.as_str(), self.properties.get(name).unwrap_or(&NULL)))
            .collect();
        Answer {
            id: self.id.to_string(),
            properties: out,
            created_at: iso(self.created_at),
            updated_at: iso(self.updated_at),
            archived: self.archived_at.is_some(),
            archived_at: self.archived_at.map(iso),
            url: None,
        }
    }
}

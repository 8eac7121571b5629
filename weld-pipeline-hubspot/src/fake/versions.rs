//! The two families of paths the fake serves, one implementation behind both: HubSpot's legacy
//! ones (`/crm/v3/...`, and `/crm/v4/...` for associations) and its dated ones
//! (`/crm/objects/2026-03/...`). HubSpot moved its CRM API to date-based versions on
//! 2026-03-30; v4 loses support on 2027-03-30 and v1-v3 in September 2027.
//!
//! The fake keeps this table of its own: the source has one too, and the two share no code on
//! purpose, so that a wrong path on either side shows up as a 404 in a test instead of being
//! copied into both. A new dated version is one more entry in [`DATED`].
//!
//! Where the families differ in what they answer, the difference sits next to the answer and
//! asks [`Served`] which family it is in: dated records carry `url`, dated links carry
//! `toObjectId` as text (v4: a number), dated error bodies carry `links` (see
//! `admission::error`). Everything else is the same answer on both.

/// The dated versions the fake serves, oldest first.
pub(crate) const DATED: &[&str] = &["2026-03", "2026-09"];

/// The portal the fake plays: the number in its custom object's id (`2-1234567`), and in the
/// `url` of every dated record.
const PORTAL: u64 = 1_234_567;

/// HubSpot's `objectTypeId` of each standard type the fake serves, which every path takes in
/// place of the name (HubSpot's own SDK sends deals as `0-3`). From HubSpot's object APIs guide
/// (developers.hubspot.com/docs/guides/crm/using-object-apis, "Object type IDs").
pub(crate) const TYPE_IDS: &[(&str, &str)] = &[
    ("0-1", "contacts"),
    ("0-2", "companies"),
    ("0-3", "deals"),
    ("0-5", "tickets"),
    ("0-7", "products"),
    ("0-8", "line_items"),
    ("0-14", "quotes"),
    ("0-27", "tasks"),
    ("0-46", "notes"),
    ("0-47", "meetings"),
    ("0-48", "calls"),
    ("0-49", "emails"),
];

/// Which family of paths a request came in by: each route carries it as an extension.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Served {
    /// `/crm/v3/...` and `/crm/v4/...`: HubSpot's paths before dated versions.
    Legacy,
    /// `/crm/objects/{version}/...` and its siblings.
    Dated(&'static str),
}

/// Every route template of one family, as axum takes them.
pub(crate) struct Routes {
    /// List (GET) of an object type.
    pub(crate) objects: String,
    /// One record (GET).
    pub(crate) record: String,
    /// Search (POST).
    pub(crate) search: String,
    /// Batch read of records (POST).
    pub(crate) batch_read: String,
    /// One record's links to a type (GET).
    pub(crate) record_links: String,
    /// Property definitions (GET).
    pub(crate) properties: String,
    /// Custom object schemas (GET), where HubSpot's own clients read them.
    pub(crate) schemas: String,
    /// Owners (GET).
    pub(crate) owners: String,
    /// Pipelines of an object type (GET).
    pub(crate) pipelines: String,
    /// Batch read of links between two types (POST).
    pub(crate) links_batch: String,
    /// The link types (labels) between two types (GET).
    pub(crate) labels: String,
}

impl Served {
    /// Every family the fake serves.
    pub(crate) fn all() -> impl Iterator<Item = Served> {
        std::iter::once(Served::Legacy).chain(DATED.iter().map(|v| Served::Dated(v)))
    }

    /// The family's route templates.
    pub(crate) fn routes(self) -> Routes {
        match self {
            Served::Legacy => Routes {
                objects: "/crm/v3/objects/{object}".into(),
                record: "/crm/v3/objects/{object}/{id}".into(),
                search: "/crm/v3/objects/{object}/search".into(),
                batch_read: "/crm/v3/objects/{object}/batch/read".into(),
                record_links: "/crm/v4/objects/{object}/{id}/associations/{to}".into(),
                properties: "/crm/v3/properties/{object}".into(),
                schemas: "/crm-object-schemas/v3/schemas".into(),
                owners: "/crm/v3/owners".into(),
                pipelines: "/crm/v3/pipelines/{object}".into(),
                links_batch: "/crm/v4/associations/{from}/{to}/batch/read".into(),
                labels: "/crm/associations/v4/{from}/{to}/labels".into(),
            },
            Served::Dated(v) => Routes {
                objects: format!("/crm/objects/{v}/{{object}}"),
                record: format!("/crm/objects/{v}/{{object}}/{{id}}"),
                search: format!("/crm/objects/{v}/{{object}}/search"),
                batch_read: format!("/crm/objects/{v}/{{object}}/batch/read"),
                record_links: format!("/crm/objects/{v}/{{object}}/{{id}}/associations/{{to}}"),
                properties: format!("/crm/properties/{v}/{{object}}"),
                schemas: format!("/crm-object-schemas/{v}/schemas"),
                owners: format!("/crm/owners/{v}"),
                pipelines: format!("/crm/pipelines/{v}/{{object}}"),
                links_batch: format!("/crm/associations/{v}/{{from}}/{{to}}/batch/read"),
                labels: format!("/crm/associations/{v}/{{from}}/{{to}}/labels"),
            },
        }
    }

    /// Whether this is a dated family.
    pub(crate) fn is_dated(self) -> bool {
        matches!(self, Served::Dated(_))
    }

    /// A `paging.next.link` as HubSpot writes it: the family's path to `template` filled with
    /// `object`, on api.hubapi.com.
    pub(crate) fn link(template: &str, object: &str, after: &str) -> String {
        let path = template.replace("{object}", object);
        format!("https://api.hubapi.com{path}?after={after}")
    }

    /// A record's `url` in HubSpot's app, which dated answers carry and legacy ones do not.
    pub(crate) fn record_url(self, object_type: &str, id: u64) -> Option<String> {
        self.is_dated().then(|| {
            format!(
                "https://app.hubspot.com/contacts/{PORTAL}/record/{}/{id}",
                type_id(object_type)
            )
        })
    }
}

/// The `objectTypeId` of a canonical type name (a custom object's key already is one).
fn type_id(object_type: &str) -> &str {
    TYPE_IDS
        .iter()
        .find(|(_, name)| *name == object_type)
        .map_or(object_type, |(id, _)| id)
}

/// The type name behind a standard `objectTypeId`, if `object` is one.
pub(crate) fn type_name(object: &str) -> Option<&'static str> {
    TYPE_IDS
        .iter()
        .find(|(id, _)| *id == object)
        .map(|(_, name)| *name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn type_ids_go_both_ways() {
        for (id, name) in TYPE_IDS {
            assert_eq!(type_name(id), Some(*name));
            assert_eq!(type_id(name), *id);
        }
        assert_eq!(type_id("2-1234567"), "2-1234567");
    }

    #[test]
    fn only_dated_records_carry_a_url() {
        assert_eq!(Served::Legacy.record_url("deals", 7), None);
        assert_eq!(
            Served::Dated("2026-03").record_url("deals", 7).as_deref(),
            Some("https://app.hubspot.com/contacts/1234567/record/0-3/7")
        );
    }
}

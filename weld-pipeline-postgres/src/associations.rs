//! A stream's association link table, `<table>_associations`: one row per link a record
//! carries in `data.associations` (`{"<toType>":[{"id","types":[{"category","typeId","label"}]}]}`,
//! the shape the HubSpot source writes), for joins in SQL.
//!
//! | column | holds |
//! |---|---|
//! | `from_id` | the record's id |
//! | `to_type` | the type linked to (`companies`) |
//! | `to_id` | the linked record's id |
//! | `category` | `HUBSPOT_DEFINED`, `USER_DEFINED`, ... (`''` when the link has no type) |
//! | `type_id` | the association type's id (0 when absent) |
//! | `label` | its label, if any |
//!
//! The primary key is `(from_id, to_type, to_id, category, type_id)`, and an index on
//! `(to_type, to_id)` serves the other direction. The table is made when the first record with
//! associations is committed. It is derived from the records table in the commit's own
//! transaction: the links of every record a batch writes are replaced by those of the stored
//! document, so the table always equals the documents (an amendment keeps a record's links,
//! as it keeps its document's other members). Rows are deleted here, unlike records: a link
//! removed at the source is gone from the record's document too. A purged record's links go
//! with its row, in the same transaction.

use weld_pipeline::Error;

use crate::tables;

/// The link table beside `table`.
///
/// # Errors
///
/// As [`tables::beside`].
pub(crate) fn table_of(table: &str) -> Result<String, Error> {
    tables::beside(table, "_associations")
}

/// The statements, in order, that create the link table `links` (quoted) if it is missing.
pub(crate) fn create(links: &str) -> [String; 2] {
    let index = format!("weld_links_{:016x}", tables::fnv(links));
    [
        format!(
            r#"CREATE TABLE IF NOT EXISTS {links} (
    from_id text COLLATE "C" NOT NULL,
    to_type text COLLATE "C" NOT NULL,
    to_id text COLLATE "C" NOT NULL,
    category text NOT NULL,
    type_id integer NOT NULL,
    label text,
    PRIMARY KEY (from_id, to_type, to_id, category, type_id)
)"#
        ),
        format!("CREATE INDEX IF NOT EXISTS {index} ON {links} (to_type, to_id)"),
    ]
}

/// The statement removing the links of the records whose ids are in `$1`.
pub(crate) fn clear_sql(links: &str) -> String {
    format!("DELETE FROM {links} WHERE from_id = ANY($1::text[])")
}

/// The statement writing the links of the stored records whose ids are in `$1`, read from
/// their documents, each read once as `jsonb` (whichever of `json` and `jsonb` its table keeps
/// it in). A member of the wrong shape contributes no link rather than an error.
pub(crate) fn fill_sql(links: &str, table: &str) -> String {
    format!(
        r#"INSERT INTO {links} (from_id, to_type, to_id, category, type_id, label)
SELECT t.id, a.key, l ->> 'id', coalesce(ty ->> 'category', ''),
       coalesce(CASE WHEN ty ->> 'typeId' ~ '^-?[0-9]{{1,9}}$' THEN (ty ->> 'typeId')::integer END, 0),
       ty ->> 'label'
FROM {table} t
CROSS JOIN LATERAL (SELECT t.data::jsonb -> 'associations' AS links) d
CROSS JOIN LATERAL jsonb_each(CASE WHEN jsonb_typeof(d.links) = 'object'
                                   THEN d.links ELSE '{{}}'::jsonb END) a
CROSS JOIN LATERAL jsonb_array_elements(CASE WHEN jsonb_typeof(a.value) = 'array'
                                             THEN a.value ELSE '[]'::jsonb END) l
LEFT JOIN LATERAL jsonb_array_elements(CASE WHEN jsonb_typeof(l -> 'types') = 'array'
                                            THEN l -> 'types' ELSE '[]'::jsonb END) ty ON true
WHERE t.id = ANY($1::text[]) AND l ->> 'id' IS NOT NULL
ON CONFLICT DO NOTHING"#
    )
}

/// Whether a record's document carries associations: a top-level `associations` object.
pub(crate) fn carried_by(document: &[u8]) -> bool {
    #[derive(serde::Deserialize)]
    struct Linked {
        #[serde(default)]
        associations: Option<serde::de::IgnoredAny>,
    }
    // Most documents do not name it at all: no parse for those.
    const NAME: &[u8] = b"\"associations\"";
    memchr::memmem::find(document, NAME).is_some()
        && serde_json::from_slice::<Linked>(document).is_ok_and(|l| l.associations.is_some())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_top_level_associations_member_counts() {
        assert!(carried_by(br#"{"id":"1","associations":{"companies":[]}}"#));
        assert!(!carried_by(
            br#"{"id":"1","properties":{"note":"associations"}}"#
        ));
        assert!(!carried_by(
            br#"{"id":"1","properties":{"associations":"x"}}"#
        ));
        assert!(!carried_by(br#"{"id":"1"}"#));
    }
}

//! A stream's records table: its name and its definition.

use weld_pipeline::StreamName;

/// The schema of tables of streams committed to before they were registered.
const UNREGISTERED: &str = "weld_records";

/// The records table of `stream` reading a source of `kind` (`None` when unknown), quoted:
/// `"hubspot"."contacts"`. A kind that is not a plain lower-case identifier gets
/// `weld_records`. Stream names are checked (`^[a-z0-9][a-z0-9_-]{0,62}$`), so quoting makes
/// every one a valid identifier.
pub(crate) fn records_table(stream: &StreamName, kind: Option<&str>) -> String {
    let schema = kind
        .filter(|k| {
            !k.is_empty()
                && k.len() <= 63
                && k.starts_with(|c: char| c.is_ascii_lowercase())
                && k.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
                && *k != "weld"
        })
        .unwrap_or(UNREGISTERED);
    format!("\"{schema}\".\"{}\"", stream.as_str())
}

/// The schema part of a quoted table name made by [`records_table`].
fn schema_of(table: &str) -> &str {
    table.split('.').next().unwrap_or(table)
}

/// The relation beside a records table, named after it with `suffix` (`"hubspot"."contacts"`,
/// `_typed`: `"hubspot"."contacts_typed"`). A name past PostgreSQL's 63 bytes keeps the head of
/// the table's name and a hash of all of it, so it never collides with the table itself.
pub(crate) fn beside(table: &str, suffix: &str) -> String {
    let name = table.rsplit('.').next().unwrap_or(table).trim_matches('"');
    let name = if name.len() + suffix.len() <= 63 {
        format!("{name}{suffix}")
    } else {
        // Stream names are ASCII: any byte index is a character boundary.
        let head = &name[..63 - suffix.len() - 17];
        format!("{head}_{:016x}{suffix}", fnv(table))
    };
    format!("{}.\"{name}\"", schema_of(table))
}

/// The statements that create `table` if it is missing: its schema, the table, and the index
/// that orders its rows as every store orders records (ids by length, then bytes: numeric ids
/// numerically). The index's name is derived from the table's by a hash, so two long stream
/// names never collide on PostgreSQL's 63-byte limit.
pub(crate) fn create(table: &str) -> String {
    let index = format!("weld_key_{:016x}", fnv(table));
    format!(
        r#"CREATE SCHEMA IF NOT EXISTS {schema};
CREATE TABLE IF NOT EXISTS {table} (
    id text COLLATE "C" PRIMARY KEY,
    updated_at timestamptz NOT NULL,
    created_at timestamptz,
    archived boolean NOT NULL,
    archived_at timestamptz,
    properties jsonb,
    data json NOT NULL,
    _weld_run_id bigint NOT NULL,
    _weld_synced_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS {index} ON {table} (octet_length(id), id);"#,
        schema = schema_of(table),
    )
}

/// 64-bit FNV-1a of `text`: names derived from a table's, stable across processes.
pub(crate) fn fnv(text: &str) -> u64 {
    text.bytes().fold(0xcbf2_9ce4_8422_2325, |hash, byte| {
        (hash ^ u64::from(byte)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_table_is_named_after_its_stream_in_its_kinds_schema() {
        let stream = StreamName::new("contacts-2").unwrap();
        assert_eq!(
            records_table(&stream, Some("hubspot")),
            r#""hubspot"."contacts-2""#
        );
        for odd in [None, Some("Hub Spot"), Some("weld"), Some("9x"), Some("")] {
            assert_eq!(
                records_table(&stream, odd),
                r#""weld_records"."contacts-2""#
            );
        }
        assert!(create(r#""hubspot"."contacts-2""#)
            .contains(r#"CREATE SCHEMA IF NOT EXISTS "hubspot";"#));
    }

    #[test]
    fn a_relation_beside_a_table_is_named_after_it_within_63_bytes() {
        assert_eq!(
            beside(r#""hubspot"."contacts""#, "_typed"),
            r#""hubspot"."contacts_typed""#
        );
        let long = "a".repeat(63);
        let table = format!(r#""hubspot"."{long}""#);
        let typed = beside(&table, "_typed");
        let name = typed.trim_start_matches(r#""hubspot"."#).trim_matches('"');
        assert_eq!(name.len(), 63);
        assert!(name.ends_with("_typed") && name.starts_with("aaaa"));
        assert_ne!(
            typed,
            beside(&format!(r#""hubspot"."{}b""#, &long[1..]), "_typed")
        );
    }
}

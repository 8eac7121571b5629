//! A stream's records table: its name and its definition.

use weld_pipeline::{Error, StreamName};

use crate::sql;

/// The schema of tables of streams committed to before they were registered.
const UNREGISTERED: &str = "weld_records";

/// The records table of `stream` reading a source of `kind` (`None` when unknown), quoted:
/// `"hubspot"."contacts"`. A kind that is not a plain lower-case identifier gets
/// `weld_records`. Stream names are checked (`^[a-z0-9][a-z0-9_-]{0,62}$`), so quoting makes
/// every one a valid identifier.
///
/// # Errors
///
/// None in practice: a checked stream name holds no NUL.
pub(crate) fn records_table(stream: &StreamName, kind: Option<&str>) -> Result<String, Error> {
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
    qualified(schema, stream.as_str())
}

/// `schema.name`, each quoted.
fn qualified(schema: &str, name: &str) -> Result<String, Error> {
    Ok(format!(
        "{}.{}",
        sql::identifier(schema)?,
        sql::identifier(name)?
    ))
}

/// The schema and the name of a table named as [`records_table`] names one (`"hubspot"."x"`),
/// read back; a name stored unquoted by hand (`hubspot.x`) is split at its dot.
fn parts(table: &str) -> (String, String) {
    let quoted = sql::unquote(table).and_then(|(schema, rest)| {
        let (name, rest) = sql::unquote(rest.strip_prefix('.')?)?;
        rest.is_empty().then_some((schema, name))
    });
    quoted.unwrap_or_else(|| match table.split_once('.') {
        Some((schema, name)) => (schema.to_string(), name.to_string()),
        None => ("public".to_string(), table.to_string()),
    })
}

/// The relation beside a records table, named after it with `suffix` (`"hubspot"."contacts"`,
/// `_typed`: `"hubspot"."contacts_typed"`). A name past PostgreSQL's 63 bytes keeps the head of
/// the table's name and a hash of all of it, so it never collides with the table itself.
///
/// # Errors
///
/// When the table's name read back holds a NUL (a `weld.streams` row edited by hand).
pub(crate) fn beside(table: &str, suffix: &str) -> Result<String, Error> {
    let (schema, name) = parts(table);
    let name = if name.len() + suffix.len() <= 63 {
        format!("{name}{suffix}")
    } else {
        let mut end = 63 - suffix.len() - 17;
        while !name.is_char_boundary(end) {
            end -= 1;
        }
        format!("{}_{:016x}{suffix}", &name[..end], fnv(table))
    };
    qualified(&schema, &name)
}

/// The statements, in order, that create `table` if it is missing: its schema, the table, and
/// the index that orders its rows as every store orders records (ids by length, then bytes:
/// numeric ids numerically). The index's name is derived from the table's by a hash, so two
/// long stream names never collide on PostgreSQL's 63-byte limit.
///
/// # Errors
///
/// When the table's name read back holds a NUL (a `weld.streams` row edited by hand).
pub(crate) fn create(table: &str) -> Result<[String; 3], Error> {
    let index = format!("weld_key_{:016x}", fnv(table));
    let (schema, _) = parts(table);
    Ok([
        format!("CREATE SCHEMA IF NOT EXISTS {}", sql::identifier(&schema)?),
        format!(
            r#"CREATE TABLE IF NOT EXISTS {table} (
    id text COLLATE "C" PRIMARY KEY,
    updated_at timestamptz NOT NULL,
    created_at timestamptz,
    archived boolean NOT NULL,
    archived_at timestamptz,
    properties jsonb,
    data json NOT NULL,
    _weld_run_id bigint NOT NULL,
    _weld_synced_at timestamptz NOT NULL DEFAULT now()
)"#
        ),
        format!("CREATE INDEX IF NOT EXISTS {index} ON {table} (octet_length(id), id)"),
    ])
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
            records_table(&stream, Some("hubspot")).unwrap(),
            r#""hubspot"."contacts-2""#
        );
        for odd in [None, Some("Hub Spot"), Some("weld"), Some("9x"), Some("")] {
            assert_eq!(
                records_table(&stream, odd).unwrap(),
                r#""weld_records"."contacts-2""#
            );
        }
        assert_eq!(
            create(r#""hubspot"."contacts-2""#).unwrap()[0],
            r#"CREATE SCHEMA IF NOT EXISTS "hubspot""#
        );
    }

    #[test]
    fn a_relation_beside_a_table_is_named_after_it_within_63_bytes() {
        assert_eq!(
            beside(r#""hubspot"."contacts""#, "_typed").unwrap(),
            r#""hubspot"."contacts_typed""#
        );
        let long = "a".repeat(63);
        let table = format!(r#""hubspot"."{long}""#);
        let typed = beside(&table, "_typed").unwrap();
        let name = typed.trim_start_matches(r#""hubspot"."#).trim_matches('"');
        assert_eq!(name.len(), 63);
        assert!(name.ends_with("_typed") && name.starts_with("aaaa"));
        assert_ne!(
            typed,
            beside(&format!(r#""hubspot"."{}b""#, &long[1..]), "_typed").unwrap()
        );
        // A name with quotes and dots, read back from its quoted form and quoted again.
        assert_eq!(
            beside(r#""we""ird"."a.b""c""#, "_typed").unwrap(),
            r#""we""ird"."a.b""c_typed""#
        );
    }
}
